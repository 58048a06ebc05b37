//! The one place where errors become HTTP responses.

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use sluice_core::Body;
use sluice_error::{Error, ErrorKind};

/// The status a failure maps to.
///
/// | kind | status |
/// |---|---|
/// | invalid request | 400 |
/// | request head too large | 431 |
/// | no route | 404 |
/// | connect refused / failed, upstream TLS failure, upstream reset or protocol error | 502 |
/// | no upstream server available, or a circuit breaker refused | 503 |
/// | connect, first-byte or read timeout | 504 |
/// | client gone | 499 (logged only; nothing can be sent) |
/// | anything else | 500 |
pub fn status_for(error: &Error) -> StatusCode {
    match error.kind() {
        ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorKind::RequestHeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ErrorKind::NoRoute => StatusCode::NOT_FOUND,
        ErrorKind::ConnectRefused
        | ErrorKind::ConnectFailed
        | ErrorKind::UpstreamTls
        | ErrorKind::UpstreamReset
        | ErrorKind::UpstreamProtocol => StatusCode::BAD_GATEWAY,
        ErrorKind::NoUpstream | ErrorKind::UpstreamOverloaded => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::ConnectTimeout | ErrorKind::UpstreamFirstByteTimeout | ErrorKind::UpstreamReadTimeout => {
            StatusCode::GATEWAY_TIMEOUT
        }
        ErrorKind::ClientGone | ErrorKind::ClientTimeout => {
            StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
        }
        ErrorKind::Custom(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A short plain-text response for `error`: `502 Bad Gateway\n` and so on.
pub fn error_response(error: &Error) -> Response<Body> {
    let status = status_for(error);
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!("{} {}\n", status.as_u16(), reason);
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_the_documented_statuses() {
        assert_eq!(status_for(&Error::new(ErrorKind::ConnectRefused)), StatusCode::BAD_GATEWAY);
        assert_eq!(status_for(&Error::new(ErrorKind::UpstreamFirstByteTimeout)), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(status_for(&Error::new(ErrorKind::NoRoute)), StatusCode::NOT_FOUND);
        assert_eq!(status_for(&Error::new(ErrorKind::InvalidRequest)), StatusCode::BAD_REQUEST);
        assert_eq!(status_for(&Error::new(ErrorKind::Custom(429))).as_u16(), 429);
    }
}
