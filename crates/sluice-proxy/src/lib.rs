//! The Sluice request path: the framework part of Sluice.
//!
//! Implement [`Proxy`] (only [`Proxy::upstream_peer`] is required), wrap it in
//! [`HttpProxy`], and serve it with `sluice_core::listener::serve`. The engine runs the
//! phases for each request:
//!
//! ```text
//! request_filter -> retry_policy -> upstream_peer -> (connect; retry on failure)
//!   -> upstream_request_filter -> [send; retry per policy] -> upstream_response_filter
//!   -> response_filter -> response_body_filter* -> logging
//! ```
//!
//! Failures at any point leave the line through [`Proxy::error_response`] (by default
//! [`error_response`], the one place errors become statuses) and still reach
//! [`Proxy::logging`]. Header hygiene (hop-by-hop removal, `X-Forwarded-*`, `Via`,
//! `X-Request-Id`, W3C `traceparent` via [`trace`]) is applied by the engine in [`forwarding`],
//! before the user's filters.

mod body;
mod engine;
mod error_response;
pub mod forwarding;
pub mod grpc;
mod phase;
pub mod proxy_protocol;
pub mod retry;
mod session;
pub mod trace;
pub mod validate;

pub use body::ProxyBody;
pub use engine::HttpProxy;
pub use error_response::{error_response, status_for};
pub use phase::{Flow, Proxy};
pub use session::Session;
pub use sluice_error::{Error, ErrorKind, Result};
pub use sluice_upstream::Backend;
