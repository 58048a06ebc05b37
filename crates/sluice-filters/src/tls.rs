//! Site filters that depend on the connection's TLS state: redirecting plain-text
//! requests to HTTPS, and passing a verified client certificate to the origin.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{Response, StatusCode};
use sluice_core::Body;
use sluice_proxy::{Error, ErrorKind, Flow, Result, Session};

use crate::RequestFilter;

/// Answers plain-text requests with a redirect to the same URL over HTTPS.
#[derive(Debug, Clone)]
pub struct HttpsRedirect {
    status: StatusCode,
    port: Option<u16>,
}

impl HttpsRedirect {
    /// `status` is a 3xx code; `port` is written into the URL when given (else 443 is implied).
    pub fn new(status: StatusCode, port: Option<u16>) -> Self {
        Self { status, port }
    }
}

impl RequestFilter for HttpsRedirect {
    fn on_request(&self, session: &mut Session) -> Result<Flow> {
        if session.connection().tls.is_some() {
            return Ok(Flow::Continue);
        }
        let Some(host) = session.host() else {
            return Err(Error::explain(ErrorKind::InvalidRequest, "cannot redirect to HTTPS: the request has no host"));
        };
        let uri = session.req.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut location = String::with_capacity(8 + host.len() + 6 + uri.len());
        location.push_str("https://");
        location.push_str(host);
        if let Some(port) = self.port.filter(|p| *p != 443) {
            location.push(':');
            location.push_str(itoa::Buffer::new().format(port));
        }
        location.push_str(uri);
        let location = HeaderValue::try_from(location)
            .map_err(|e| Error::because(ErrorKind::InvalidRequest, "building the HTTPS redirect", e))?;
        let mut response = Response::new(Body::empty());
        *response.status_mut() = self.status;
        response.headers_mut().insert(LOCATION, location);
        response.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        Ok(Flow::Respond(response))
    }
}

/// Passes the verified client certificate's subject and subjectAltNames to the origin in
/// headers the client cannot forge (they are removed from every request first), and
/// refuses requests that reach a site requiring a certificate on a connection without one
/// (421: the connection was set up for another site, e.g. by SNI).
#[derive(Debug, Clone)]
pub struct ClientCertHeaders {
    required: bool,
    ca: Arc<PathBuf>,
    subject: Option<HeaderName>,
    san: Option<HeaderName>,
}

impl ClientCertHeaders {
    /// `ca` is the bundle the site verifies against: a certificate verified against another
    /// bundle (another site's policy) does not count.
    pub fn new(required: bool, ca: PathBuf, subject: Option<HeaderName>, san: Option<HeaderName>) -> Self {
        Self { required, ca: Arc::new(ca), subject, san }
    }
}

impl RequestFilter for ClientCertHeaders {
    fn on_request(&self, session: &mut Session) -> Result<Flow> {
        for name in [&self.subject, &self.san].into_iter().flatten() {
            session.req.headers.remove(name);
        }
        let conn = session.connection().clone();
        let cert = conn.tls.as_ref().and_then(|tls| tls.client_certificate.as_ref()).filter(|c| c.ca == self.ca);
        let Some(cert) = cert else {
            if self.required {
                let mut response = Response::new(Body::full(Bytes::from_static(
                    b"this site requires a client certificate; connect to it by its own name (SNI)\n",
                )));
                *response.status_mut() = StatusCode::MISDIRECTED_REQUEST;
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
                return Ok(Flow::Respond(response));
            }
            return Ok(Flow::Continue);
        };
        if let Some(name) = &self.subject {
            if let Ok(v) = HeaderValue::from_bytes(cert.subject.as_bytes()) {
                session.req.headers.insert(name.clone(), v);
            }
        }
        if let Some(name) = &self.san {
            if let Ok(v) = HeaderValue::from_bytes(cert.sans.as_bytes()) {
                session.req.headers.insert(name.clone(), v);
            }
        }
        Ok(Flow::Continue)
    }
}
