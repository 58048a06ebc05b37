//! W3C Trace Context (`traceparent`, `tracestate`): every request belongs to a trace. A
//! valid `traceparent` from the client is continued; otherwise a new trace starts (sampled).
//! The proxy is one hop of the trace: the origin gets the same trace id with a new parent
//! id (the proxy's span), and the access log records the trace id.

use http::HeaderValue;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The trace a request belongs to.
#[derive(Debug, Clone, Copy)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    trace_id: [u8; 32],
    /// 2 hex digits (`01`: sampled).
    flags: [u8; 2],
    /// Whether the client sent a valid `traceparent` (else its `tracestate` is dropped).
    continued: bool,
}

impl TraceContext {
    /// Continues the client's trace, or starts one.
    pub fn from_header(traceparent: Option<&HeaderValue>) -> Self {
        traceparent.and_then(|v| parse(v.as_bytes())).unwrap_or_else(Self::new_trace)
    }

    fn new_trace() -> Self {
        let mut trace_id = [0u8; 32];
        hex_into(&mut trace_id, fastrand::u128(1..));
        Self { trace_id, flags: *b"01", continued: false }
    }

    /// The trace id (32 lowercase hex digits).
    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).unwrap_or("")
    }

    /// Whether the client's trace is continued (its `tracestate` may be forwarded).
    pub fn continued(&self) -> bool {
        self.continued
    }

    /// The `traceparent` for the origin: the same trace, a new parent id (this hop).
    pub fn upstream_header(&self) -> HeaderValue {
        let mut out = [0u8; 55];
        out[..3].copy_from_slice(b"00-");
        out[3..35].copy_from_slice(&self.trace_id);
        out[35] = b'-';
        hex_into(&mut out[36..52], u128::from(fastrand::u64(1..)));
        out[52] = b'-';
        out[53..55].copy_from_slice(&self.flags);
        HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static(""))
    }
}

/// Writes the low `out.len()` hex digits of `n`.
fn hex_into(out: &mut [u8], n: u128) {
    let len = out.len();
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((n >> ((len - 1 - i) * 4)) & 0xf) as usize];
    }
}

/// `version-traceid-parentid-flags`, as the W3C spec reads it: lowercase hex, no all-zero
/// ids, version `ff` invalid; future versions may append fields after the flags.
fn parse(v: &[u8]) -> Option<TraceContext> {
    if v.len() < 55 || (v.len() > 55 && (v[..2] == *b"00" || v[55] != b'-')) {
        return None;
    }
    let hex = |s: &[u8]| s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    let zero = |s: &[u8]| s.iter().all(|&b| b == b'0');
    let (version, trace, parent, flags) = (&v[..2], &v[3..35], &v[36..52], &v[53..55]);
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    if !hex(version) || version == b"ff" || !hex(trace) || zero(trace) || !hex(parent) || zero(parent) || !hex(flags) {
        return None;
    }
    let mut trace_id = [0u8; 32];
    trace_id.copy_from_slice(trace);
    Some(TraceContext { trace_id, flags: [flags[0], flags[1]], continued: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_parent() {
        let header = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let t = TraceContext::from_header(Some(&header));
        assert!(t.continued());
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let up = t.upstream_header();
        let up = up.to_str().unwrap();
        assert!(up.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && up.ends_with("-01"), "{up}");
        assert_ne!(&up[36..52], "00f067aa0ba902b7", "the proxy is a new hop");
        assert!(parse(up.as_bytes()).is_some());
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            let t = TraceContext::from_header(Some(&HeaderValue::from_static(bad)));
            assert!(!t.continued(), "{bad}");
            assert_eq!(t.trace_id().len(), 32);
            assert!(parse(t.upstream_header().as_bytes()).is_some());
        }
        // A future version may carry more fields.
        let future = HeaderValue::from_static("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever");
        assert!(TraceContext::from_header(Some(&future)).continued());
    }
}
