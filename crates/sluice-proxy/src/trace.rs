//! W3C Trace Context (`traceparent`, `tracestate`): every request belongs to a trace. A
//! valid `traceparent` from the client is continued; otherwise a new trace starts (sampled).
//! The proxy is one hop of the trace: it has a span of its own (a span id made once per
//! request), the origin gets the same trace id with that span as its parent, and the
//! access log records the trace id.

use http::HeaderValue;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The trace a request belongs to, and the proxy's span in it.
#[derive(Debug, Clone, Copy)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    trace_id: [u8; 32],
    /// The proxy's own span (16 lowercase hex digits, not all zero).
    span_id: [u8; 16],
    /// The client's span (16 lowercase hex digits) when its trace is continued.
    parent_span_id: Option<[u8; 16]>,
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
        Self { trace_id, span_id: new_span_id(), parent_span_id: None, flags: *b"01", continued: false }
    }

    /// The trace id (32 lowercase hex digits).
    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).unwrap_or("")
    }

    /// The proxy's span id for this request (16 lowercase hex digits): the parent id the
    /// origin is sent.
    pub fn span_id(&self) -> &str {
        std::str::from_utf8(&self.span_id).unwrap_or("")
    }

    /// The client's span id (16 lowercase hex digits) when its trace is continued; `None`
    /// when the trace started here.
    pub fn parent_span_id(&self) -> Option<&str> {
        self.parent_span_id.as_ref().and_then(|id| std::str::from_utf8(id).ok())
    }

    /// Whether the trace is sampled (bit 0 of the trace flags): only sampled traces are
    /// recorded by tracing systems.
    pub fn sampled(&self) -> bool {
        let low = match self.flags[1] {
            b @ b'0'..=b'9' => b - b'0',
            b @ b'a'..=b'f' => b - b'a' + 10,
            _ => 0,
        };
        low & 1 == 1
    }

    /// Whether the client's trace is continued (its `tracestate` may be forwarded).
    pub fn continued(&self) -> bool {
        self.continued
    }

    /// The `traceparent` for the origin: the same trace and flags, with the proxy's span as
    /// the parent. Every attempt of a request (retries included) carries the same one.
    pub fn upstream_header(&self) -> HeaderValue {
        let mut out = [0u8; 55];
        out[..3].copy_from_slice(b"00-");
        out[3..35].copy_from_slice(&self.trace_id);
        out[35] = b'-';
        out[36..52].copy_from_slice(&self.span_id);
        out[52] = b'-';
        out[53..55].copy_from_slice(&self.flags);
        HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static(""))
    }
}

/// A new random span id: 16 hex digits, never all zero.
fn new_span_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    hex_into(&mut id, u128::from(fastrand::u64(1..)));
    id
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
    let mut parent_span_id = [0u8; 16];
    parent_span_id.copy_from_slice(parent);
    Some(TraceContext {
        trace_id,
        span_id: new_span_id(),
        parent_span_id: Some(parent_span_id),
        flags: [flags[0], flags[1]],
        continued: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn continued(traceparent: &'static str) -> TraceContext {
        TraceContext::from_header(Some(&HeaderValue::from_static(traceparent)))
    }

    fn is_span_id(id: &str) -> bool {
        id.len() == 16 && id.bytes().all(|b| HEX.contains(&b)) && id.bytes().any(|b| b != b'0')
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_the_proxy_as_the_new_parent() {
        let t = continued("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(t.continued());
        assert!(t.sampled());
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_span_id(), Some("00f067aa0ba902b7"));
        assert!(is_span_id(t.span_id()), "{}", t.span_id());
        assert_ne!(t.span_id(), "00f067aa0ba902b7", "the proxy is a new hop");
        let up = t.upstream_header();
        let up = up.to_str().unwrap();
        assert_eq!(up, format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", t.span_id()));
        assert!(parse(up.as_bytes()).is_some());
    }

    #[test]
    fn the_upstream_parent_is_the_same_on_every_attempt() {
        let t = continued("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(t.upstream_header(), t.upstream_header());
        let fresh = TraceContext::from_header(None);
        assert_eq!(fresh.upstream_header(), fresh.upstream_header());
    }

    #[test]
    fn each_request_gets_its_own_span() {
        let a = continued("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let b = continued("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_ne!(a.span_id(), b.span_id());
        assert_eq!(a.trace_id(), b.trace_id());
    }

    #[test]
    fn a_new_trace_has_a_span_and_no_parent() {
        let t = TraceContext::from_header(None);
        assert!(!t.continued());
        assert!(t.sampled(), "traces started here are sampled");
        assert_eq!(t.parent_span_id(), None);
        assert!(is_span_id(t.span_id()), "{}", t.span_id());
        let up = t.upstream_header();
        assert_eq!(&up.to_str().unwrap()[36..52], t.span_id());
    }

    #[test]
    fn sampled_is_bit_zero_of_the_flags() {
        let cases = [("00", false), ("01", true), ("02", false), ("03", true), ("0a", false), ("ff", true)];
        for (flags, sampled) in cases {
            let header = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}");
            let t = TraceContext::from_header(Some(&HeaderValue::from_str(&header).unwrap()));
            assert!(t.continued(), "{header}");
            assert_eq!(t.sampled(), sampled, "{flags}");
            assert!(t.upstream_header().to_str().unwrap().ends_with(flags), "flags are passed on");
        }
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
            assert_eq!(t.parent_span_id(), None, "{bad}");
            assert_eq!(t.trace_id().len(), 32);
            assert!(parse(t.upstream_header().as_bytes()).is_some());
        }
        // A future version may carry more fields.
        let future = HeaderValue::from_static("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever");
        assert!(TraceContext::from_header(Some(&future)).continued());
    }
}
