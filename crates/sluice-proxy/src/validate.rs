//! Request validation: what the proxy refuses to forward, checked on every request before
//! any filter (or routing) sees it.
//!
//! The framing of HTTP/1 heads is screened byte by byte before hyper parses them
//! (`sluice_core::guard`); what is left for here are the rules on the parsed head that
//! hold for every protocol, where the proxy must be stricter than a lenient parser because
//! an origin behind it may read the same message differently:
//!
//! - the request target's form (RFC 9112 §3.2): `*` only for `OPTIONS`, the authority form
//!   only for `CONNECT`, an absolute form only for `http`/`https` and without userinfo;
//! - `Host` (RFC 9112 §3.2, RFC 9113 §8.3.1): exactly one in HTTP/1.1, none missing,
//!   syntactically `uri-host [ ":" port ]`; the absolute form's authority replaces it, and
//!   an HTTP/2 `host` that names another authority than `:authority` is refused. The host
//!   is lower-cased, so routing, cache keys and the origin all see one spelling;
//! - `Transfer-Encoding` (RFC 9112 §6.1): one field, whose list ends in `chunked` exactly
//!   once; codings the proxy does not implement get `501`;
//! - HTTP/2 field values with leading or trailing whitespace (RFC 9113 §8.2.1; the `h2`
//!   crate checks the other §8.2 rules: lower-case names, no connection-specific fields,
//!   `te: trailers` only, pseudo-header order and set);
//! - more than one `Authorization` or `Proxy-Authorization` field (singletons: an origin
//!   must never act on credentials the proxy did not check);
//! - header names with an underscore are dropped unless the listener allows them (CGI and
//!   WSGI origins read `X_User_Id` as `x-user-id`, the twin of an identity header the
//!   proxy sets), as nginx does with `underscores_in_headers off`.
//!
//! Every refusal is an `InvalidRequest` (400) or `Custom(501)`, and the response closes
//! the connection (the error path adds `connection: close`): the rest of the message can
//! no longer be trusted to be framed the way the client meant.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Uri, Version};
use sluice_core::HttpProtocol;
use sluice_error::{Error, ErrorKind, Result};

use crate::Session;

/// Checks (and normalizes) the downstream request head; see the module docs.
pub(crate) fn request(session: &mut Session) -> Result<()> {
    let protocol = session.protocol();
    let allow_underscores = session.connection().underscores_in_headers;
    head(&mut session.req, protocol, allow_underscores)
}

/// Checks (and normalizes) a request head received over `protocol`; `allow_underscores`
/// keeps header names with `_`. What [`Session`]s go through before any filter; public
/// for fuzzing and for proxies built on the engine's parts.
pub fn head(req: &mut http::request::Parts, protocol: HttpProtocol, allow_underscores: bool) -> Result<()> {
    target_form(&req.method, &req.uri)?;
    match protocol {
        HttpProtocol::Http1 => host_http1(req)?,
        HttpProtocol::Http2 => host_http2(req)?,
    }
    transfer_encoding(&req.headers, req.version)?;
    singleton(&req.headers, &header::AUTHORIZATION)?;
    singleton(&req.headers, &header::PROXY_AUTHORIZATION)?;
    if protocol == HttpProtocol::Http2 {
        http2_field_values(&req.headers)?;
    }
    if !allow_underscores {
        drop_underscored(&mut req.headers);
    }
    Ok(())
}

fn invalid(why: impl Into<String>) -> Box<Error> {
    Error::explain(ErrorKind::InvalidRequest, why.into())
}

/// RFC 9112 §3.2: origin form for everything but `OPTIONS *` and `CONNECT host:port`.
fn target_form(method: &Method, uri: &Uri) -> Result<()> {
    if uri.scheme().is_none() && uri.authority().is_some() && *method != Method::CONNECT {
        return Err(invalid("authority-form request target without CONNECT"));
    }
    if uri.path() == "*" && uri.authority().is_none() && *method != Method::OPTIONS {
        return Err(invalid("asterisk-form request target without OPTIONS"));
    }
    if let Some(scheme) = uri.scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(invalid(format!("request target with scheme {scheme:?}")));
        }
    }
    if let Some(authority) = uri.authority() {
        if authority.as_str().contains('@') {
            // RFC 9110 §4.2.4: userinfo in an http(s) URI is an error.
            return Err(invalid("request target with userinfo"));
        }
        if !valid_authority(authority.as_str().as_bytes()) {
            return Err(invalid(format!("invalid authority {:?} in the request target", authority.as_str())));
        }
    }
    Ok(())
}

/// HTTP/1: exactly one valid Host in HTTP/1.1 (at most one in HTTP/1.0); the authority of
/// an absolute-form target replaces it (RFC 9112 §3.2.2).
fn host_http1(req: &mut http::request::Parts) -> Result<()> {
    let value = {
        let mut hosts = req.headers.get_all(header::HOST).iter();
        let first = hosts.next();
        if hosts.next().is_some() {
            return Err(invalid("more than one Host field"));
        }
        match (req.uri.authority(), first) {
            (_, None) if req.version == Version::HTTP_11 => return Err(invalid("HTTP/1.1 request without Host")),
            // The target's authority decides; the Host field is ignored, and replaced so
            // that the origin and everything in between see one authority. (HTTP/1.0 may
            // omit Host.)
            (Some(authority), _) => host_to_set(authority.as_str().as_bytes(), true)?,
            (None, Some(host)) => host_to_set(checked_host(host)?, false)?,
            (None, None) => None,
        }
    };
    if let Some(value) = value {
        req.headers.insert(header::HOST, value);
    }
    Ok(())
}

/// HTTP/2: `:authority` (or, without it, one `host` field) must name the authority; a
/// `host` that names another one makes the request malformed (RFC 9113 §8.3.1).
fn host_http2(req: &mut http::request::Parts) -> Result<()> {
    let value = {
        let mut hosts = req.headers.get_all(header::HOST).iter();
        let first = hosts.next();
        if hosts.next().is_some() {
            return Err(invalid("more than one host field"));
        }
        let name = match (req.uri.authority(), first) {
            (Some(authority), Some(host)) if !authority.as_str().as_bytes().eq_ignore_ascii_case(host.as_bytes()) => {
                return Err(invalid(format!(
                    "host {:?} differs from :authority {:?}",
                    String::from_utf8_lossy(host.as_bytes()),
                    authority.as_str()
                )));
            }
            // The same authority: the Host field is what must end up lower-cased.
            (Some(_), Some(host)) => host.as_bytes(),
            (Some(authority), None) => authority.as_str().as_bytes(),
            (None, Some(host)) => checked_host(host)?,
            (None, None) => return Err(invalid("HTTP/2 request without :authority or host")),
        };
        host_to_set(name, false)?
    };
    if let Some(value) = value {
        req.headers.insert(header::HOST, value);
    }
    Ok(())
}

/// A Host field's bytes, if they are a valid authority.
fn checked_host(host: &HeaderValue) -> Result<&[u8]> {
    if valid_authority(host.as_bytes()) {
        Ok(host.as_bytes())
    } else {
        Err(invalid(format!("invalid Host {:?}", String::from_utf8_lossy(host.as_bytes()))))
    }
}

/// The Host value to set so that routing, cache keys and the origin see the authority
/// `name` in one spelling: lower-cased, when `replace` or when it has upper case; `None`
/// when the Host field already says it.
fn host_to_set(name: &[u8], replace: bool) -> Result<Option<HeaderValue>> {
    if replace || name.iter().any(u8::is_ascii_uppercase) {
        lower(name).map(Some)
    } else {
        Ok(None)
    }
}

fn lower(bytes: &[u8]) -> Result<HeaderValue> {
    HeaderValue::from_bytes(&bytes.to_ascii_lowercase()).map_err(|_| invalid("invalid Host"))
}

/// Whether `value` is `uri-host [ ":" port ]` (RFC 9110 §7.2 with RFC 3986 §3.2.2): an
/// IPv6 literal in brackets, or a non-empty reg-name (which covers IPv4 addresses), and a
/// port of 1 to 5 digits up to 65535. IPvFuture literals and an empty port are refused.
pub fn valid_authority(value: &[u8]) -> bool {
    let (host_ok, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(end) = memchr::memchr(b']', rest) else { return false };
        let literal = std::str::from_utf8(&rest[..end]).ok();
        let ok = literal.is_some_and(|l| l.parse::<std::net::Ipv6Addr>().is_ok());
        match &rest[end + 1..] {
            [] => (ok, None),
            [b':', port @ ..] => (ok, Some(port)),
            _ => return false,
        }
    } else {
        let (host, port) = match memchr::memrchr(b':', value) {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        };
        (!host.is_empty() && reg_name(host), port)
    };
    host_ok
        && port.is_none_or(|p| {
            !p.is_empty()
                && p.len() <= 5
                && p.iter().all(u8::is_ascii_digit)
                && p.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65535
        })
}

/// `reg-name = *( unreserved / pct-encoded / sub-delims )` (RFC 3986 §3.2.2).
fn reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        match host[i] {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {}
            b'%' if host.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && host.get(i + 2).is_some_and(u8::is_ascii_hexdigit) =>
            {
                i += 2;
            }
            _ => return false,
        }
        i += 1;
    }
    true
}

/// RFC 9112 §6.1 and §7: one `Transfer-Encoding` field whose list ends with `chunked`,
/// applied once. Anything malformed is 400; a well-formed list with a coding the proxy
/// does not implement (`gzip, chunked`) is 501, as §6.1 allows. HTTP/1.0 messages with
/// Transfer-Encoding never get here (hyper refuses them with 400).
fn transfer_encoding(headers: &HeaderMap, version: Version) -> Result<()> {
    let mut fields = headers.get_all(header::TRANSFER_ENCODING).iter();
    let Some(value) = fields.next() else { return Ok(()) };
    if fields.next().is_some() {
        return Err(invalid("more than one Transfer-Encoding field"));
    }
    if version != Version::HTTP_11 {
        return Err(invalid("Transfer-Encoding outside HTTP/1.1"));
    }
    let mut codings = value.as_bytes().split(|b| *b == b',').map(trim_ows).peekable();
    let mut unimplemented = None;
    while let Some(coding) = codings.next() {
        let last = codings.peek().is_none();
        let name = coding.split(|b| *b == b';').next().map(trim_ows).unwrap_or_default();
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Err(invalid(format!("invalid Transfer-Encoding {:?}", String::from_utf8_lossy(value.as_bytes()))));
        }
        let chunked = name.eq_ignore_ascii_case(b"chunked");
        if chunked && (!last || coding.len() != name.len()) {
            return Err(invalid("chunked applied more than once, not last, or with parameters"));
        }
        if last && !chunked {
            return Err(invalid("Transfer-Encoding does not end in chunked"));
        }
        if !chunked && unimplemented.is_none() {
            unimplemented = Some(String::from_utf8_lossy(name).into_owned());
        }
    }
    if let Some(coding) = unimplemented {
        return Err(Error::explain(
            ErrorKind::Custom(501),
            format!("transfer coding {coding:?} is not implemented (only chunked is)"),
        ));
    }
    Ok(())
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn singleton(headers: &HeaderMap, name: &header::HeaderName) -> Result<()> {
    let mut values = headers.get_all(name).iter();
    if values.next().is_some() && values.next().is_some() {
        return Err(invalid(format!("more than one {name} field")));
    }
    Ok(())
}

/// RFC 9113 §8.2.1: a field value must not start or end with whitespace. (`h2` has already
/// refused NUL, CR, LF and other control bytes, and names that are not lower case.)
fn http2_field_values(headers: &HeaderMap) -> Result<()> {
    for (name, value) in headers {
        let v = value.as_bytes();
        if matches!(v.first(), Some(b' ' | b'\t')) || matches!(v.last(), Some(b' ' | b'\t')) {
            return Err(invalid(format!("HTTP/2 field {name} with leading or trailing whitespace")));
        }
    }
    Ok(())
}

/// Drops fields whose names contain `_` (see the module docs).
fn drop_underscored(headers: &mut HeaderMap) {
    if !headers.keys().any(|n| n.as_str().contains('_')) {
        return;
    }
    let names: Vec<header::HeaderName> = headers.keys().filter(|n| n.as_str().contains('_')).cloned().collect();
    for name in names {
        tracing::debug!(header = %name, "dropping a header whose name has an underscore");
        headers.remove(&name);
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
