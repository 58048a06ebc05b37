//! gRPC over the proxy: telling a call from other requests, and the call's deadline from
//! `grpc-timeout`, which may replace the upstream group's response timeouts for the call
//! (as Envoy does with `grpc_timeout_header_max`), so a slow server stream or a quiet bidi
//! stream is not cut before the client's own deadline. The engine uses the first to end a
//! failed call with a gRPC status (`body.rs`).

use std::time::Duration;

use http::HeaderMap;

/// Whether the request is a gRPC call (`content-type: application/grpc`, `+proto`, ...).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"))
}

/// The call's `grpc-timeout` (`TimeoutValue TimeoutUnit`: at most 8 digits, then one of
/// `H M S m u n`); `None` when absent or malformed (the gRPC spec's rules).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", value.parse().unwrap());
        h
    }

    #[test]
    fn timeouts_follow_the_grpc_wire_format() {
        assert_eq!(timeout(&with("10S")), Some(Duration::from_secs(10)));
        assert_eq!(timeout(&with("2H")), Some(Duration::from_secs(7200)));
        assert_eq!(timeout(&with("1500m")), Some(Duration::from_millis(1500)));
        assert_eq!(timeout(&with("99999999n")), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "10", "10s", "123456789S", "-1S", "1.5S"] {
            let h = if bad.is_empty() { HeaderMap::new() } else { with(bad) };
            assert_eq!(timeout(&h), None, "{bad:?}");
        }
    }
}
