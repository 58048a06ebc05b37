//! Access control for sites and routes, checked in order after routing: client address
//! rules ([`ip`]), HTTP Basic authentication ([`basic`]), JWT validation ([`jwt`]) and
//! authentication by an external service ([`forward`]). A request must pass every check
//! that is configured (nginx's `satisfy all`).
//!
//! A refusal is a response (403 from an address rule, 401 with `WWW-Authenticate` from
//! the authentication checks, or the external service's own answer), so it still goes
//! through the response filters and the access log like any other local response.

pub mod basic;
pub mod forward;
pub mod ip;
pub mod jwt;

use std::sync::Arc;

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use sluice_core::Body;
use sluice_proxy::{Result, Session};

/// The checks of one route.
#[derive(Debug, Default, Clone)]
pub struct Access {
    /// `allow`/`deny` rules.
    pub ip: Option<Arc<ip::IpRules>>,
    /// `basic-auth`.
    pub basic: Option<Arc<basic::BasicAuth>>,
    /// `jwt`.
    pub jwt: Option<Arc<jwt::JwtAuth>>,
    /// `forward-auth`.
    pub forward: Option<Arc<forward::ForwardAuth>>,
}

impl Access {
    /// Whether nothing is checked.
    pub fn is_empty(&self) -> bool {
        self.ip.is_none() && self.basic.is_none() && self.jwt.is_none() && self.forward.is_none()
    }

    /// Runs the checks; `Some(response)` refuses the request with it.
    pub async fn check(&self, session: &mut Session) -> Result<Option<Response<Body>>> {
        if let Some(rules) = &self.ip {
            if !rules.allows(session.client_addr().ip()) {
                tracing::debug!(client = %session.client_addr(), "refused by an address rule");
                return Ok(Some(plain(StatusCode::FORBIDDEN, "403 Forbidden\n")));
            }
        }
        if let Some(basic) = &self.basic {
            if let Some(refusal) = basic.check(session).await {
                return Ok(Some(refusal));
            }
        }
        if let Some(jwt) = &self.jwt {
            if let Some(refusal) = jwt.check(session) {
                return Ok(Some(refusal));
            }
        }
        if let Some(forward) = &self.forward {
            if let Some(refusal) = forward.check(session).await? {
                return Ok(Some(refusal));
            }
        }
        Ok(None)
    }
}

/// A short plain-text answer that is never cached.
pub(crate) fn plain(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
