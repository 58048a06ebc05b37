//! Cache keys: the primary key of a request (scheme, host, path and query, as configured)
//! and the secondary key its `Vary` headers select (RFC 9111 §4.1).

use http::header::{HeaderMap, HeaderName};

/// How the primary key is made from a request.
#[derive(Debug, Clone, Default)]
pub struct KeySettings {
    /// Leave the query string out of the key.
    pub ignore_query: bool,
    /// Sort the query's parameters (so `?a=1&b=2` and `?b=2&a=1` share an entry).
    pub sort_query: bool,
    /// Query parameters left out of the key (tracking parameters like `utm_source`).
    pub ignore_params: Vec<String>,
    /// Request headers added to the key (lower-case names).
    pub headers: Vec<HeaderName>,
    /// Cookies added to the key (by name).
    pub cookies: Vec<String>,
}

/// The primary key: `scheme://host/path?query` plus the configured headers and cookies.
/// Only `GET` (and `HEAD`, which is answered from `GET`) is cached, so the method is not in it.
pub fn primary(
    settings: &KeySettings,
    scheme: &str,
    host: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> String {
    let mut key = String::with_capacity(scheme.len() + host.len() + path.len() + 16);
    key.push_str(scheme);
    key.push_str("://");
    key.push_str(&host.to_ascii_lowercase());
    key.push_str(path);
    if let Some(q) = query.filter(|q| !q.is_empty() && !settings.ignore_query) {
        let mut params: Vec<&str> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let name = p.split('=').next().unwrap_or("");
                !settings.ignore_params.iter().any(|i| i == name)
            })
            .collect();
        if settings.sort_query {
            params.sort_unstable();
        }
        if !params.is_empty() {
            key.push('?');
            key.push_str(&params.join("&"));
        }
    }
    for name in &settings.headers {
        key.push_str("\nh:");
        key.push_str(name.as_str());
        key.push('=');
        for v in headers.get_all(name) {
            key.push_str(&String::from_utf8_lossy(v.as_bytes()));
            key.push(',');
        }
    }
    for cookie in &settings.cookies {
        key.push_str("\nc:");
        key.push_str(cookie);
        key.push('=');
        if let Some(v) = crate::affinity::cookie_in(headers, cookie).and_then(|v| std::str::from_utf8(v).ok()) {
            key.push_str(v);
        }
    }
    key
}

/// The `Vary` field names of a response, lower-cased, sorted and deduplicated; `None`
/// when there are none.
pub fn vary_names(response: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = response
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The secondary key: the request's values of the `Vary` headers, normalized (RFC 9111
/// §4.1: whitespace around commas and case of the names do not matter).
pub fn secondary(names: &[String], request: &HeaderMap) -> String {
    let mut out = String::new();
    for name in names {
        out.push_str(name);
        out.push(':');
        let mut first = true;
        for v in request.get_all(name.as_str()) {
            for part in String::from_utf8_lossy(v.as_bytes()).split(',') {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(part.trim());
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn primary_keys() {
        let h = HeaderMap::new();
        let s = KeySettings::default();
        assert_eq!(primary(&s, "https", "Example.COM", "/a", Some("b=2&a=1"), &h), "https://example.com/a?b=2&a=1");
        let sorted = KeySettings { sort_query: true, ignore_params: vec!["utm_source".into()], ..Default::default() };
        assert_eq!(primary(&sorted, "http", "h", "/a", Some("b=2&utm_source=x&a=1"), &h), "http://h/a?a=1&b=2");
        let ignore = KeySettings { ignore_query: true, ..Default::default() };
        assert_eq!(primary(&ignore, "http", "h", "/a", Some("x=1"), &h), "http://h/a");
        let mut req = HeaderMap::new();
        req.insert("x-tenant", HeaderValue::from_static("t1"));
        req.insert("cookie", HeaderValue::from_static("lang=de; sid=secret"));
        let with = KeySettings {
            headers: vec![HeaderName::from_static("x-tenant")],
            cookies: vec!["lang".into()],
            ..Default::default()
        };
        assert_eq!(primary(&with, "http", "h", "/", None, &req), "http://h/\nh:x-tenant=t1,\nc:lang=de");
    }

    #[test]
    fn vary_keys_normalize_names_and_values() {
        let mut resp = HeaderMap::new();
        resp.append("vary", HeaderValue::from_static("Accept-Encoding, accept-language"));
        resp.append("vary", HeaderValue::from_static("ACCEPT-ENCODING"));
        let names = vary_names(&resp);
        assert_eq!(names, ["accept-encoding", "accept-language"]);
        let mut a = HeaderMap::new();
        a.insert("accept-encoding", HeaderValue::from_static("gzip,br"));
        let mut b = HeaderMap::new();
        b.insert("accept-encoding", HeaderValue::from_static("gzip, br"));
        assert_eq!(secondary(&names, &a), secondary(&names, &b));
        let mut c = HeaderMap::new();
        c.insert("accept-encoding", HeaderValue::from_static("identity"));
        assert_ne!(secondary(&names, &a), secondary(&names, &c));
    }
}
