//! Short-circuit filters: a fixed response, or a redirect.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, LOCATION};
use http::{Response, StatusCode};
use sluice_core::Body;
use sluice_proxy::{Error, ErrorKind, Flow, Result, Session};

use crate::RequestFilter;

/// Answers with a fixed status, body and headers.
#[derive(Debug, Clone)]
pub struct Respond {
    status: StatusCode,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Respond {
    /// A fixed response; a non-empty body without a `Content-Type` is sent as plain text.
    pub fn new(status: StatusCode, body: Bytes, headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        Self { status, body, headers }
    }

    /// Builds the response.
    pub fn response(&self) -> Response<Body> {
        let mut response = Response::new(Body::full(self.body.clone()));
        *response.status_mut() = self.status;
        let h = response.headers_mut();
        for (name, value) in &self.headers {
            h.append(name.clone(), value.clone());
        }
        if !self.body.is_empty() && !h.contains_key(CONTENT_TYPE) {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        }
        response
    }
}

impl RequestFilter for Respond {
    fn on_request(&self, _session: &mut Session) -> Result<Flow> {
        Ok(Flow::Respond(self.response()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Scheme,
    Host,
    Path,
    Query,
    Uri,
}

/// Redirects to a location built from a template: `{scheme}`, `{host}`, `{path}`,
/// `{query}` (with its `?`, or empty) and `{uri}` (path and query) are substituted.
#[derive(Debug, Clone)]
pub struct Redirect {
    status: StatusCode,
    parts: Vec<Part>,
}

impl Redirect {
    /// A redirect; fails on an unknown `{placeholder}`.
    pub fn new(status: StatusCode, template: &str) -> std::result::Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("unclosed `{{` in redirect location `{template}`"));
            };
            let name = &rest[open + 1..open + close];
            parts.push(match name {
                "scheme" => Part::Scheme,
                "host" => Part::Host,
                "path" => Part::Path,
                "query" => Part::Query,
                "uri" => Part::Uri,
                other => {
                    return Err(format!("unknown placeholder `{{{other}}}` (known: scheme, host, path, query, uri)"))
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self { status, parts })
    }

    /// The location for a request.
    pub fn location(&self, session: &Session) -> String {
        let mut out = String::with_capacity(64);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Scheme => out.push_str(session.scheme()),
                Part::Host => out.push_str(session.host().unwrap_or("")),
                Part::Path => out.push_str(session.path()),
                Part::Query => {
                    if let Some(q) = session.req.uri.query() {
                        out.push('?');
                        out.push_str(q);
                    }
                }
                Part::Uri => out.push_str(session.req.uri.path_and_query().map_or("/", |p| p.as_str())),
            }
        }
        out
    }
}

impl RequestFilter for Redirect {
    fn on_request(&self, session: &mut Session) -> Result<Flow> {
        let location = self.location(session);
        let value = HeaderValue::try_from(location)
            .map_err(|e| Error::because(ErrorKind::InvalidRequest, "building the redirect location", e))?;
        let mut response = Response::new(Body::empty());
        *response.status_mut() = self.status;
        response.headers_mut().insert(LOCATION, value);
        Ok(Flow::Respond(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_placeholders_are_rejected() {
        assert!(Redirect::new(StatusCode::FOUND, "https://{hots}/").is_err());
        assert!(Redirect::new(StatusCode::FOUND, "https://{host").is_err());
        assert!(Redirect::new(StatusCode::FOUND, "https://{host}{uri}").is_ok());
    }
}
