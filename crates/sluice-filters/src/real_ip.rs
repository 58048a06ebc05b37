//! The client's real address behind trusted proxies (nginx's `set_real_ip_from` with
//! `real_ip_recursive on`, Envoy's trusted `x-forwarded-for` hops).
//!
//! When the peer is a trusted proxy, the forwarding header is read from the right: each
//! hop a trusted proxy appended is skipped, and the first address that is not trusted is
//! the client. Entries a client wrote itself sit to the left of the first untrusted one
//! and are never believed. When the peer is not trusted, the header is not believed at
//! all, and it is removed from the request so that origins behind Sluice see only a
//! chain Sluice vouches for (the client's address is appended to it as always).

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
                    for element in split_quoted(text, ',').into_iter().rev() {
                        let Some(ip) = forwarded_for(element) else { return client };
                        client = ip;
                        if !self.trusted.contains(ip) {
                            return ip;
                        }
                    }
                }
            }
            Header::Single(name) => {
                if let Some(ip) = headers.get(name).and_then(|v| v.to_str().ok()).and_then(|t| parse_address(t.trim()))
                {
                    client = ip;
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

/// Splits at `sep` outside double quotes.
fn split_quoted(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The `for=` address of one `Forwarded` element; `None` for `unknown`, obfuscated
/// identifiers (`_hidden`) or no `for=` at all (nothing to believe past that hop).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    split_quoted(element, ';').into_iter().find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let value = value.trim();
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        parse_address(value)
    })
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
    fn a_single_address_header() {
        let r = rule(Header::Single(HeaderName::from_static("x-real-ip")));
        let mut h = headers(&[("x-real-ip", " 198.51.100.3 ")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("198.51.100.3"));
        let mut h = headers(&[("x-real-ip", "nope")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &mut h), ip("10.0.0.2"));
    }
}
