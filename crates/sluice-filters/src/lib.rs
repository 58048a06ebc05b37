//! Built-in filters of the `sluice` server, on the same API framework users get.
//!
//! - [`router`]: sites matched by host and routes matched by path and method;
//! - [`affinity`]: the request's key for consistent-hashing load balancing;
//! - [`headers`]: request and response header `set` / `add` / `remove`;
//! - [`respond`]: fixed responses and redirects (short-circuit filters);
//! - [`tls`]: HTTPS redirects and client certificate headers;
//! - [`access`]: address rules, Basic auth, JWT and forward-auth;
//! - [`real_ip`]: the client's address behind trusted proxies;
//! - [`limits`]: requests in flight per route;
//! - [`access_log`]: one line per request (JSON or text), written off the request path;
//! - [`compress`]: on-the-fly gzip, brotli and zstd compression of responses (and
//!   decompression for clients that cannot decode what the origin sent).
//!
//! Request-side filters implement [`RequestFilter`], response-side ones
//! [`ResponseFilter`]; a route is a chain of each, run by the server's `Proxy`
//! implementation in its `request_filter` and `response_filter` phases.

pub mod access;
pub mod access_log;
pub mod affinity;
pub mod cache;
pub mod compress;
pub mod files;
pub mod headers;
pub mod limits;
pub mod normalize;
pub mod ratelimit;
pub mod real_ip;
pub mod respond;
pub mod router;
pub mod tls;

use http::response;
use sluice_proxy::{Flow, Result, Session};

/// A filter run in the `request_filter` phase: may change the request or answer it.
pub trait RequestFilter: Send + Sync + std::fmt::Debug {
    /// Runs the filter.
    fn on_request(&self, session: &mut Session) -> Result<Flow>;
}

/// A filter run in the `response_filter` phase: may change the response head.
pub trait ResponseFilter: Send + Sync + std::fmt::Debug {
    /// Runs the filter.
    fn on_response(&self, session: &Session, response: &mut response::Parts) -> Result<()>;
}
