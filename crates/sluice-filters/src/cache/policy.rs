//! RFC 9111 rules for a shared cache: `Cache-Control` directives, whether a response may
//! be stored, its freshness lifetime (explicit, heuristic, or the configured default) and
//! its current age.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

/// The directives of one message's `Cache-Control` fields (RFC 9111 §5.2). Unknown
/// directives are ignored; a directive given twice keeps its first value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// `max-age=N` (seconds).
    pub max_age: Option<u64>,
    /// `s-maxage=N` (seconds; shared caches only).
    pub s_maxage: Option<u64>,
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (with or without field names: treated as a whole).
    pub no_cache: bool,
    /// `private` (with or without field names: treated as a whole).
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `no-transform`.
    pub no_transform: bool,
    /// `stale-while-revalidate=N` (RFC 5861).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error=N` (RFC 5861).
    pub stale_if_error: Option<u64>,
    /// `only-if-cached` (requests).
    pub only_if_cached: bool,
    /// `max-stale` (requests): `Some(None)` accepts any staleness.
    pub max_stale: Option<Option<u64>>,
    /// `min-fresh=N` (requests).
    pub min_fresh: Option<u64>,
}

impl Directives {
    /// Parses every `Cache-Control` field of `headers`.
    pub fn parse(headers: &HeaderMap) -> Self {
        Self::parse_field(headers, &header::CACHE_CONTROL)
    }

    /// Parses every field `name` of `headers` as cache directives (`Cache-Control`, or a
    /// targeted field like `CDN-Cache-Control`, whose dictionary syntax of RFC 9213 reads
    /// the same for the directives a cache uses).
    pub fn parse_field(headers: &HeaderMap, name: &header::HeaderName) -> Self {
        let mut d = Directives::default();
        for value in headers.get_all(name) {
            let Ok(value) = value.to_str() else { continue };
            for item in split_items(value) {
                let (name, arg) = match item.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (item.trim(), None),
                };
                let seconds = || arg.and_then(|a| a.parse::<u64>().ok());
                let name = name.to_ascii_lowercase();
                match name.as_str() {
                    "max-age" => d.max_age = d.max_age.or_else(|| seconds().or(Some(0))),
                    "s-maxage" => d.s_maxage = d.s_maxage.or_else(|| seconds().or(Some(0))),
                    "no-store" => d.no_store = true,
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    "must-revalidate" => d.must_revalidate = true,
                    "proxy-revalidate" => d.proxy_revalidate = true,
                    "no-transform" => d.no_transform = true,
                    "stale-while-revalidate" => d.stale_while_revalidate = d.stale_while_revalidate.or_else(seconds),
                    "stale-if-error" => d.stale_if_error = d.stale_if_error.or_else(seconds),
                    "only-if-cached" => d.only_if_cached = true,
                    "max-stale" => d.max_stale = d.max_stale.or(Some(seconds())),
                    "min-fresh" => d.min_fresh = d.min_fresh.or_else(seconds),
                    _ => {}
                }
            }
        }
        d
    }
}

/// Splits a `Cache-Control` value on commas outside quoted strings.
fn split_items(value: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, b) in value.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                items.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&value[start..]);
    items.into_iter().map(str::trim).filter(|s| !s.is_empty()).collect()
}

/// Statuses a cache may store and reuse with a heuristic lifetime (RFC 9110 §15.1).
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// What may override RFC 9111's defaults, per site or route.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Lifetime for responses without explicit freshness, by status (`default-ttl`).
    pub default_ttl: Vec<(u16, Duration)>,
    /// Lifetime that replaces the origin's, by status (`override-ttl`), for origins that
    /// send nothing useful.
    pub override_ttl: Vec<(u16, Duration)>,
    /// Store responses with `Set-Cookie` (the cookie is stored and replayed to everyone).
    pub store_set_cookie: bool,
    /// Store `private` responses and responses to requests with `Authorization`.
    pub store_private: bool,
    /// Upper bound of a heuristic lifetime (10 % of the time since `Last-Modified`).
    pub heuristic_max: Duration,
}

fn ttl_for(table: &[(u16, Duration)], status: StatusCode) -> Option<Duration> {
    table.iter().find(|(s, _)| *s == status.as_u16()).map(|(_, d)| *d)
}

/// Why a response is not stored (for `Cache-Status: ...; detail=`).
pub type NotStored = &'static str;

/// Whether the response to a `GET` may be stored (RFC 9111 §3), with these overrides.
pub fn storable(
    method: &Method,
    request: &HeaderMap,
    request_directives: &Directives,
    status: StatusCode,
    response: &HeaderMap,
    directives: &Directives,
    overrides: &Overrides,
) -> Result<(), NotStored> {
    if method != Method::GET {
        return Err("method");
    }
    if !(200..=599).contains(&status.as_u16()) || status == StatusCode::PARTIAL_CONTENT {
        return Err("status");
    }
    if status == StatusCode::NOT_MODIFIED {
        return Err("status");
    }
    if request_directives.no_store || directives.no_store {
        return Err("no-store");
    }
    if directives.private && !overrides.store_private {
        return Err("private");
    }
    if request.contains_key(header::AUTHORIZATION)
        && !overrides.store_private
        && !(directives.public || directives.s_maxage.is_some() || directives.must_revalidate)
    {
        return Err("authorization");
    }
    age_value(response)?;
    if response.contains_key(header::SET_COOKIE) && !overrides.store_set_cookie {
        return Err("set-cookie");
    }
    if response.get_all(header::VARY).iter().any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|f| f.trim() == "*"))) {
        return Err("vary-star");
    }
    let explicit = directives.max_age.is_some()
        || directives.s_maxage.is_some()
        || response.contains_key(header::EXPIRES)
        || directives.public;
    let configured =
        ttl_for(&overrides.default_ttl, status).is_some() || ttl_for(&overrides.override_ttl, status).is_some();
    if !(explicit || configured || heuristically_cacheable(status)) {
        return Err("status");
    }
    Ok(())
}

fn date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| httpdate::parse_http_date(v.trim()).ok())
}

/// How long a stored response stays fresh (RFC 9111 §4.2.1): `override-ttl`, else
/// `s-maxage`, `max-age`, `Expires` minus `Date`, else the configured `default-ttl`, else a
/// heuristic (10 % of `Date` minus `Last-Modified`, capped) for statuses that allow one.
/// `response_time` stands in for a missing `Date`.
pub fn freshness_lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    directives: &Directives,
    overrides: &Overrides,
    response_time: SystemTime,
) -> Duration {
    if let Some(ttl) = ttl_for(&overrides.override_ttl, status) {
        return ttl;
    }
    if let Some(s) = directives.s_maxage.or(directives.max_age) {
        return Duration::from_secs(s);
    }
    let date_value = date(headers, header::DATE).unwrap_or(response_time);
    if let Some(v) = headers.get(header::EXPIRES) {
        // An invalid Expires (like "0") means already expired.
        return match v.to_str().ok().and_then(|v| httpdate::parse_http_date(v.trim()).ok()) {
            Some(expires) => expires.duration_since(date_value).unwrap_or_default(),
            None => Duration::ZERO,
        };
    }
    if let Some(ttl) = ttl_for(&overrides.default_ttl, status) {
        return ttl;
    }
    if heuristically_cacheable(status) {
        if let Some(modified) = date(headers, header::LAST_MODIFIED) {
            let since = date_value.duration_since(modified).unwrap_or_default();
            return (since / 10).min(overrides.heuristic_max);
        }
    }
    Duration::ZERO
}

/// The `Age` a response carries (zero without one). A list-valued `Age` counts by its first
/// member (RFC 9111 §5.1: `Age: 7200, 0` is 7200 s, not 0); anything but a number is
/// invalid, and such a response is not stored. Values past 2^31 count as 2^31.
pub fn age_value(headers: &HeaderMap) -> Result<Duration, NotStored> {
    let Some(field) = headers.get(header::AGE) else { return Ok(Duration::ZERO) };
    let first = field.as_bytes().split(|b| *b == b',').next().unwrap_or_default();
    let first = first.trim_ascii();
    if first.is_empty() || !first.iter().all(u8::is_ascii_digit) {
        return Err("age");
    }
    let seconds = first.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')));
    Ok(Duration::from_secs(seconds.unwrap_or(u64::MAX).min(1 << 31)))
}

/// The age of a stored response now (RFC 9111 §4.2.3), from its `Age` and `Date` and when
/// the request was sent and the response received.
pub fn current_age(
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
    now: SystemTime,
) -> Duration {
    let age_value = age_value(headers).unwrap_or(Duration::ZERO);
    let date_value = date(headers, header::DATE).unwrap_or(response_time);
    let apparent_age = response_time.duration_since(date_value).unwrap_or_default();
    let response_delay = response_time.duration_since(request_time).unwrap_or_default();
    let corrected_age_value = age_value + response_delay;
    let corrected_initial_age = apparent_age.max(corrected_age_value);
    let resident_time = now.duration_since(response_time).unwrap_or_default();
    corrected_initial_age + resident_time
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
