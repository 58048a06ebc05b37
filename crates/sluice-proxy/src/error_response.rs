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
/// | request target too long | 414 |
/// | request body too large | 413 |
/// | client too slow sending its body | 408 |
/// | access rule refused | 403 |
/// | credentials missing or invalid | 401 |
/// | requests-in-flight limit refused | 503 |
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
        ErrorKind::UriTooLong => StatusCode::URI_TOO_LONG,
        ErrorKind::RequestBodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
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
        ErrorKind::ClientGone => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
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
    if error.kind() == ErrorKind::Overloaded {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if matches!(
        error.kind(),
        ErrorKind::RequestBodyTooLarge | ErrorKind::ClientTimeout | ErrorKind::InvalidRequest | ErrorKind::Custom(501)
    ) {
        // The rest of the body is not read (or its framing is not to be trusted): the
        // connection cannot carry another request.
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
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
