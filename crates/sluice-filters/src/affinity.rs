//! The affinity key of a request, for the consistent-hashing load balancers: the same key
//! goes to the same server (see `sluice_upstream::selection::hashing`).

use http::HeaderName;
use sluice_proxy::Session;
use sluice_upstream::selection::{hash_key, Pick};

/// What part of the request is the affinity key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AffinityKey {
    /// The client's IP address.
    ClientIp,
    /// A header's value (the first one).
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// The path, without the query.
    Path,
    /// A query parameter's value, as sent (not percent-decoded).
    Query(String),
}

impl AffinityKey {
    /// The pick for `session`; a request without the key gets `Pick { key: None }`, which
    /// the hashing algorithms spread at random.
    pub fn pick(&self, session: &Session) -> Pick {
        let key = match self {
            AffinityKey::ClientIp => match session.client_addr().ip() {
                std::net::IpAddr::V4(ip) => Some(hash_key(&ip.octets())),
                std::net::IpAddr::V6(ip) => Some(hash_key(&ip.octets())),
            },
            AffinityKey::Header(name) => session.req.headers.get(name).map(|v| hash_key(v.as_bytes())),
            AffinityKey::Cookie(name) => cookie(session, name).map(hash_key),
            AffinityKey::Path => Some(hash_key(session.req.uri.path().as_bytes())),
            AffinityKey::Query(name) => session.req.uri.query().and_then(|q| query_param(q, name)).map(hash_key),
        };
        Pick { key }
    }
}

/// The value of the request's cookie `name`, if it sent one.
pub fn cookie<'s>(session: &'s Session, name: &str) -> Option<&'s [u8]> {
    cookie_in(&session.req.headers, name)
}

/// The value of cookie `name` in a request's `Cookie` fields.
pub fn cookie_in<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h [u8]> {
    cookies_named(headers, name).next()
}

/// The values of every cookie called `name`, in all `Cookie` fields (HTTP/2 may send one
/// field per cookie), in order: for callers that must notice a cookie sent twice.
pub fn cookies_named<'h, 'n>(
    headers: &'h http::HeaderMap,
    name: &'n str,
) -> impl Iterator<Item = &'h [u8]> + use<'h, 'n> {
    headers.get_all(http::header::COOKIE).iter().flat_map(|v| v.as_bytes().split(|&b| b == b';')).filter_map(
        move |pair| {
            let pair = pair.trim_ascii();
            let (k, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
            (k == name.as_bytes()).then(|| &value[1..])
        },
    )
}

fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q [u8]> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_found_by_name() {
        assert_eq!(query_param("a=1&user=bob&b", "user"), Some(&b"bob"[..]));
        assert_eq!(query_param("a=1&b", "b"), Some(&b""[..]));
        assert_eq!(query_param("username=x", "user"), None);
    }
}
