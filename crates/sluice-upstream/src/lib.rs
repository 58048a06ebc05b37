//! The upstream side of Sluice: where requests go.
//!
//! - [`Backend`]: one origin server (address, weight, protocol, timeouts) with its share
//!   of the keep-alive pool. The pool is a plain mutex-guarded LIFO stack per backend,
//!   shared by every worker thread: any thread reuses any idle connection, which is what
//!   keeps the origin's connection count low under load.
//! - [`UpstreamConn`]: a checked-out connection. HTTP/1.1 connections are driven *inline*
//!   by the task that uses them (no separate connection task, no cross-task wake-ups per
//!   request) and go back to the pool when the response body ends. HTTP/2 (h2c, or h2
//!   over TLS) connections are shared and multiplexed. TLS connections ([`TlsConnector`],
//!   one per group so sessions resume) are pooled exactly like plain ones.
//! - [`UpstreamBody`]: a response body streamed from an origin, enforcing the idle-read
//!   timeout and returning the connection to the pool at its end.
//! - [`Upstream`]: a named group of backends and its load-balancing algorithm;
//! - [`health`]: passive health checking (outlier ejection) and the all-down policy;
//! - [`health_check`]: active health checks (HTTP or TCP), one task per backend;
//! - [`discovery`]: DNS names re-resolved on their TTL, the group updated;
//! - [`limits`]: circuit breaking (connections, waiting requests, requests in flight);
//! - [`selection`]: the algorithms (round-robin, smooth weighted round-robin, random,
//!   least outstanding requests, peak-EWMA, Ketama, Maglev), all behind one trait.

mod backend;
mod body;
mod connect;
pub mod discovery;
mod group;
pub mod health;
pub mod health_check;
pub mod limits;
pub mod selection;
mod tls;

pub use backend::{
    Backend, BackendSettings, BackendStats, PoolSettings, RequestTimeouts, Timeouts, UpstreamConn, UpstreamProtocol,
};
pub use body::UpstreamBody;
pub use group::{Policies, Upstream};
pub use tls::{Stream, TlsConnector, UpstreamTlsSettings};
