//! The client's real address behind trusted proxies (nginx's `set_real_ip_from` with
//! `real_ip_recursive on`, Envoy's trusted `x-forwarded-for` hops).
//!
//! When the peer is a trusted proxy, the forwarding header is read from the right: each
//! hop a trusted proxy appended is skipped, and the first address that is not trusted is
//! the client. Entries a client wrote itself sit to the left of the first untrusted one
//! and are never believed. When the peer is not trusted, the header is not believed at
//! all, and it is removed from the request so that origins behind Sluice see only a
//! chain Sluice vouches for (the client's address is appended to it as always).
//!
//! Anything that does not parse ends the walk: the client is then the last address
//! believed (the peer when nothing was). That covers a `Forwarded` element that breaks
//! RFC 7239's grammar (a parameter twice, spaces around `=`, an unterminated quote), as
//! parsers disagree on such elements and a client could pick the reading it likes. A
//! single-address header that appears twice is not believed at all: a proxy that appends
//! rather than replaces leaves the client's own copy beside its own.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, HeaderName};
use sluice_core::cidr::CidrSet;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Which header carries the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
    /// A header with one address (`X-Real-IP`, `CF-Connecting-IP`).
    Single(HeaderName),
}

/// The real-address rule of a listener.
#[derive(Debug)]
pub struct RealIp {
    trusted: CidrSet,
    header: Header,
}

impl RealIp {
    /// Believes `header` when it comes from an address in `trusted`.
    pub fn new(trusted: CidrSet, header: Header) -> Self {
        Self { trusted, header }
    }

    /// The client's address for a request from `peer` with `headers`; removes the
    /// forwarding headers a peer that is not trusted sent.
    pub fn resolve(&self, peer: IpAddr, headers: &mut HeaderMap) -> IpAddr {
        if !self.trusted.contains(peer) {
            headers.remove(&X_FORWARDED_FOR);
            headers.remove(&FORWARDED);
            if let Header::Single(h) = &self.header {
                headers.remove(h);
            }
            return peer;
        }
        let mut client = peer;
        match &self.header {
            Header::XForwardedFor => {
                // The last header line holds the nearest hops: walk the lines backwards too.
                let values: Vec<_> = headers.get_all(&X_FORWARDED_FOR).iter().collect();
                for value in values.into_iter().rev() {
                    let Ok(text) = value.to_str() else { return client };
                    for hop in text.rsplit(',') {
                        match parse_address(hop.trim()) {
                            Some(ip) => {
                                client = ip;
                                if !self.trusted.contains(ip) {
                                    return ip;
                                }
                            }
                            // Garbage in a hop: stop believing here.
                            None => return client,
                        }
                    }
                }
            }
            Header::Forwarded => {
                let values: Vec<_> = headers.get_all(&FORWARDED).iter().collect();
                for value in values.into_iter().rev() {
                    let Ok(text) = value.to_str() else { return client };
                    // An unterminated quote would swallow the elements a proxy appended
                    // after the client's: the whole field is garbage.
                    let Some(elements) = split_quoted(text, ',') else { return client };
                    for element in elements.into_iter().rev() {
                        let Some(ip) = forwarded_for(element) else { return client };
                        client = ip;
                        if !self.trusted.contains(ip) {
                            return ip;
                        }
                    }
                }
            }
            Header::Single(name) => {
                let mut fields = headers.get_all(name).iter();
                // Two fields: which one the trusted proxy wrote cannot be told, so neither.
                if let (Some(value), None) = (fields.next(), fields.next()) {
                    if let Some(ip) = value.to_str().ok().and_then(|t| parse_address(t.trim())) {
                        client = ip;
                    }
                }
            }
        }
        client
    }
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:1234`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:443`.
fn parse_address(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    text.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// Splits at `sep` outside quoted strings (where `\` escapes the next character);
/// `None` when a quoted string is not terminated.
fn split_quoted(text: &str, sep: char) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    parts.push(&text[start..]);
    Some(parts)
}

/// The `for=` address of one `Forwarded` element; `None` for `unknown`, obfuscated
/// identifiers (`_hidden`), no `for=` at all, or an element that is not
/// `token=value *(";" token=value)` with each parameter at most once (RFC 7239
/// section 4): nothing to believe past that hop.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let mut seen: Vec<&str> = Vec::new();
    let mut address = None;
    for pair in split_quoted(element, ';')? {
        // Whitespace around `;` and `,` is tolerated, as most parsers do; inside a
        // pair there is none in the grammar.
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=')?;
        if key.is_empty() || !key.bytes().all(is_tchar) || value.is_empty() || value.starts_with([' ', '\t']) {
            return None;
        }
        // Parameter names are case-insensitive.
        if seen.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            return None;
        }
        seen.push(key);
        let value = match value.strip_prefix('"') {
            Some(rest) => unquote(rest.strip_suffix('"')?)?,
            None => value.to_owned(),
        };
        if key.eq_ignore_ascii_case("for") {
            address = parse_address(&value);
        }
    }
    address
}

/// The content of a quoted string (between its quotes): `None` when a quote in it is not
/// escaped.
fn unquote(inner: &str) -> Option<String> {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// A character of an RFC 9110 token.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rule(header: Header) -> RealIp {
        let trusted = ["10.0.0.0/8", "2001:db8:ffff::/48"].iter().map(|c| c.parse().unwrap()).collect();
        RealIp::new(trusted, header)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn x_forwarded_for_is_read_from_the_right_skipping_trusted_hops() {
        let r = rule(Header::XForwardedFor);
        let mut h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("198.51.100.7"), "the spoofed 6.6.6.6 is ignored");
        let mut h = headers(&[("x-forwarded-for", "198.51.100.7"), ("x-forwarded-for", "10.1.1.1, 10.2.2.2")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("198.51.100.7"), "across header lines");
        let mut h = headers(&[("x-forwarded-for", "[2001:db8::7]:5555, 192.0.2.9:80")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("192.0.2.9"));
        let mut h = headers(&[("x-forwarded-for", "10.9.9.9")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("10.9.9.9"), "all trusted: the leftmost");
        let mut h = headers(&[("x-forwarded-for", "198.51.100.7, garbage, 10.1.1.1")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("10.1.1.1"), "stops at garbage");
    }

    #[test]
    fn an_untrusted_peer_is_the_client_and_its_headers_are_removed() {
        let r = rule(Header::XForwardedFor);
        let mut h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]);
        assert_eq!(r.resolve(ip("203.0.113.5"), &mut h), ip("203.0.113.5"));
        assert!(h.is_empty());
    }

    #[test]
    fn forwarded_elements_with_quotes_ports_and_obfuscation() {
        let r = rule(Header::Forwarded);
        let mut h = headers(&[("forwarded", r#"for=6.6.6.6, for="[2001:db8::1]:4711";proto=https, for=10.3.3.3"#)]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("2001:db8::1"));
        let mut h = headers(&[("forwarded", "for=_hidden, for=10.3.3.3")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("10.3.3.3"), "an obfuscated hop ends the walk");
        let mut h = headers(&[("forwarded", r#"by=10.0.0.1;for="198.51.100.2;x""#)]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("10.0.0.2"), "invalid address: not believed");
    }

    #[test]
    fn a_forwarded_element_with_a_parameter_twice_is_not_believed() {
        let r = rule(Header::Forwarded);
        for value in [
            "for=198.51.100.2;for=6.6.6.6",
            "for=198.51.100.2;FOR=6.6.6.6",
            "for=198.51.100.2;For=198.51.100.2",
            "proto=http;for=198.51.100.2;proto=https",
        ] {
            let mut h = headers(&[("forwarded", value)]);
            assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("10.0.0.2"), "{value}");
        }
        let mut h = headers(&[("forwarded", "for=6.6.6.6;for=7.7.7.7, for=10.3.3.3")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("10.3.3.3"), "the walk ends at the bad element");
        let mut h = headers(&[("forwarded", "for=198.51.100.2;proto=https;by=10.0.0.1;host=example.com")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("198.51.100.2"), "distinct parameters are fine");
    }

    #[test]
    fn a_forwarded_element_with_spaces_around_equals_is_not_believed() {
        let r = rule(Header::Forwarded);
        for value in ["for = 198.51.100.2", "for =198.51.100.2", "for= 198.51.100.2", "proto=https;for =198.51.100.2"] {
            let mut h = headers(&[("forwarded", value)]);
            assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("10.0.0.2"), "{value}");
        }
        for value in ["for", "for=", "=198.51.100.2", "f(r)=198.51.100.2;for=198.51.100.3"] {
            let mut h = headers(&[("forwarded", value)]);
            assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("10.0.0.2"), "{value}");
        }
        let mut h = headers(&[("forwarded", "for=198.51.100.2 ; proto=https , for=10.3.3.3")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("198.51.100.2"), "spaces around separators are tolerated");
    }

    #[test]
    fn an_unterminated_quote_does_not_swallow_the_elements_appended_after_it() {
        let r = rule(Header::Forwarded);
        // The client sent `for=6.6.6.6;x="`; its proxy appended `, for=198.51.100.2`.
        let mut h = headers(&[("forwarded", r#"for=6.6.6.6;x=", for=198.51.100.2"#)]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("10.0.0.2"));
        let mut h = headers(&[("forwarded", r#"for=6.6.6.6;x="\", for=198.51.100.2"#)]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("10.0.0.2"), "an escaped quote does not end the string");
        let mut h = headers(&[("forwarded", r#"for=6.6.6.6, for="198.51.100.2";x="a\"b,c;d""#)]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("198.51.100.2"), "escapes inside quotes are understood");
    }

    #[test]
    fn a_single_address_header_sent_twice_is_not_believed() {
        let r = rule(Header::Single(HeaderName::from_static("x-real-ip")));
        let mut h = headers(&[("x-real-ip", "6.6.6.6"), ("x-real-ip", "198.51.100.3")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("10.0.0.2"));
        let mut h = headers(&[("x-real-ip", "198.51.100.3"), ("x-real-ip", "198.51.100.3")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("10.0.0.2"), "even when both agree");
    }

    #[test]
    fn a_single_address_header() {
        let r = rule(Header::Single(HeaderName::from_static("x-real-ip")));
        let mut h = headers(&[("x-real-ip", " 198.51.100.3 ")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("198.51.100.3"));
        let mut h = headers(&[("x-real-ip", "nope")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("10.0.0.2"));
    }
}
