//! The HTTP cache (RFC 9111, shared cache) on top of `sluice-cache`'s storage.
//!
//! One [`HttpCache`] per process holds the store, the `Vary` names seen per URL (bounded)
//! and the fills in progress (request coalescing). Every entry carries a hidden tag for
//! its URL, so purging a URL (all its `Vary` variants and compressed forms) is a tag purge
//! and needs no table that could grow without bound. A [`CacheRule`] (a site's or route's `cache` block) says how keys are made and which
//! lifetimes to use. Per request, [`CacheRule::lookup`] answers from the cache or says
//! what to do upstream; a [`Fill`] collects a storable response's body as it streams to
//! the client and stores it at the end.

pub mod key;
pub mod policy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use sluice_cache::{Entry, Store, StoredHead};
use sluice_core::Body;
use tokio::sync::watch;

use self::key::KeySettings;
use self::policy::{Directives, Overrides};
use crate::files::range::{self, Ranges};

/// URLs whose `Vary` names are remembered (see [`HttpCache::set_vary`]).
const MAX_VARY_URLS: usize = 1 << 18;

/// The hidden tag every entry of a URL carries, for purges by URL (a control character
/// keeps it apart from the tags origins send).
fn url_tag(primary: &str) -> String {
    format!("\u{1}url:{primary}")
}

/// The process-wide cache: storage plus the bookkeeping of keys and fills.
#[derive(Debug)]
pub struct HttpCache {
    store: Arc<Store>,
    /// Primary key → the `Vary` names of its last stored response.
    vary: Mutex<HashMap<String, Vec<String>>>,
    /// Full key → a fill in progress; waiters are told when it ends.
    fills: Mutex<HashMap<String, watch::Receiver<bool>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl HttpCache {
    /// A cache over `store`.
    pub fn new(store: Store) -> Self {
        Self { store: Arc::new(store), vary: Mutex::new(HashMap::new()), fills: Mutex::new(HashMap::new()) }
    }

    /// The storage.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Removes every variant stored for a URL's primary key (`scheme://host/path?query`),
    /// and its compressed forms: they all carry the URL's hidden tag.
    pub async fn purge_key(&self, primary: &str) -> usize {
        self.purge_tag(url_tag(primary)).await
    }

    /// Removes every entry tagged `tag` (`Surrogate-Key` / `Cache-Tag`).
    pub async fn purge_tag(&self, tag: String) -> usize {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.purge_tag(&tag).unwrap_or(0)).await.unwrap_or(0)
    }

    /// Remembers the `Vary` names of a URL. The table is bounded: past its size it starts
    /// over, which only costs misses for varying responses until their names are seen again.
    fn set_vary(&self, primary: &str, names: Vec<String>) {
        let mut vary = lock(&self.vary);
        if vary.len() >= MAX_VARY_URLS && !vary.contains_key(primary) {
            vary.clear();
        }
        vary.insert(primary.to_owned(), names);
    }

    fn full_key(&self, primary: &str, request: &HeaderMap) -> String {
        let names = lock(&self.vary).get(primary).cloned().unwrap_or_default();
        let mut full = String::with_capacity(primary.len() + 32);
        full.push_str(primary);
        full.push('\n');
        full.push_str(&key::secondary(&names, request));
        full
    }

    async fn get(&self, full: &str) -> Option<Arc<Entry>> {
        if let Some(e) = self.store.get_memory(full) {
            return Some(e);
        }
        self.store.disk()?;
        let (store, key) = (self.store.clone(), full.to_owned());
        tokio::task::spawn_blocking(move || store.get_disk(&key).ok().flatten()).await.ok().flatten()
    }
}

/// A fresh stored response being served whole: what its compressed forms are keyed by.
#[derive(Debug, Clone)]
pub struct Hit {
    cache: Arc<HttpCache>,
    key: String,
    /// When the entry was stored: a compressed form made from another version is ignored.
    stamp: SystemTime,
    tags: Vec<String>,
}

impl Hit {
    fn variant_key(&self, coding: &str) -> String {
        format!("{}\ncoding={coding}", self.key)
    }

    /// The body compressed with `coding` (a content-coding token), if it was made for this
    /// version of the entry. Memory only: never blocks.
    pub fn compressed(&self, coding: &str) -> Option<Bytes> {
        let entry = self.cache.store.get_memory(&self.variant_key(coding))?;
        (entry.stored_at == self.stamp).then(|| entry.body.clone())
    }

    /// Keeps the body compressed with `coding`, so the next client asking for that coding
    /// gets it without compressing again. In memory only (it can be made again); purged
    /// with the entry (same key family, same tags).
    pub fn store_compressed(&self, coding: &str, body: Bytes) {
        let key = self.variant_key(coding);
        let mut entry = Entry::new(key.clone(), StoredHead::new(200), body).with_tags(self.tags.clone());
        entry.stored_at = self.stamp;
        self.cache.store.memory().insert(sluice_cache::CacheKey::of(&key), Arc::new(entry));
    }

    /// The largest body the cache keeps.
    pub fn max_object(&self) -> u64 {
        self.cache.store.max_object()
    }
}

/// A site's or route's caching rules.
#[derive(Debug, Clone)]
pub struct CacheRule {
    /// The process's cache.
    pub cache: Arc<HttpCache>,
    /// How keys are made.
    pub key: KeySettings,
    /// Lifetimes and what may be stored beyond RFC 9111's defaults.
    pub overrides: Overrides,
    /// How long a request waits for another one fetching the same object.
    pub lock_timeout: Duration,
    /// Response headers whose values tag the entry for purges.
    pub tag_headers: Vec<HeaderName>,
    /// Targeted cache-control fields (RFC 9213) in order of precedence: the first one a
    /// response carries replaces its `Cache-Control` for this cache.
    pub targeted: Vec<HeaderName>,
}

impl CacheRule {
    /// The directives this cache follows for a response: its first targeted field
    /// (`CDN-Cache-Control`, or a configured one like `Sluice-Cache-Control`), else its
    /// `Cache-Control` (RFC 9213 §2.2).
    pub fn response_directives(&self, headers: &HeaderMap) -> Directives {
        for name in &self.targeted {
            if headers.contains_key(name) {
                return Directives::parse_field(headers, name);
            }
        }
        Directives::parse(headers)
    }

    /// Removes the targeted fields meant for this cache alone from a response going
    /// downstream. `CDN-Cache-Control` is kept: it is meant for every CDN on the way.
    pub fn strip_own_targeted(&self, headers: &mut HeaderMap) {
        for name in &self.targeted {
            if name != "cdn-cache-control" {
                headers.remove(name);
            }
        }
    }
}

/// What the cache decided for a request.
#[derive(Debug)]
pub enum Lookup {
    /// Answer with this (a hit, a stale hit, a 304 from the cache, a 206 slice), and, for
    /// a whole stored body, which entry it is (its compressed forms are kept next to it).
    Respond(Box<Response<Body>>, Option<Hit>),
    /// Answer with the stale copy (`stale-while-revalidate`) and revalidate it in the
    /// background: the caller fetches from the origin and hands the answer to the `Refresh`.
    RespondAndRefresh(Box<Response<Body>>, Box<Refresh>),
    /// Go upstream; `state` goes with the request.
    Forward(Box<Pending>),
}

/// A background revalidation for `stale-while-revalidate`: the client already has the
/// stale copy; whatever the origin answers is stored as a miss or a `304` would be. Other
/// requests keep getting the stale copy until it is done.
#[derive(Debug)]
pub struct Refresh {
    rule: CacheRule,
    primary: String,
    entry: Arc<Entry>,
    /// The client's request headers (for `Vary`, and forwarded).
    request: HeaderMap,
    _guard: FillGuard,
}

impl Refresh {
    /// The request headers to send upstream: the client's, minus its own validators and
    /// `Range`, plus the stored validators.
    pub fn request_headers(&self) -> HeaderMap {
        let mut h = self.request.clone();
        for name in
            [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::IF_MATCH, header::IF_RANGE, header::RANGE]
        {
            h.remove(name);
        }
        if let Some((_, stored)) = self.entry.head.to_http() {
            if let Some(etag) = stored.get(header::ETAG) {
                h.insert(header::IF_NONE_MATCH, etag.clone());
            }
            if let Some(modified) = stored.get(header::LAST_MODIFIED) {
                h.insert(header::IF_MODIFIED_SINCE, modified.clone());
            }
        }
        h
    }

    /// The largest body to read.
    pub fn max_object(&self) -> u64 {
        self.rule.cache.store.max_object()
    }

    /// Stores the origin's answer: a `304` refreshes the entry, a storable response
    /// replaces it; anything else leaves the stale copy (and the next request tries again).
    pub fn complete(self, status: StatusCode, headers: &HeaderMap, body: Bytes) {
        let now = SystemTime::now();
        let cache = self.rule.cache.clone();
        if status == StatusCode::NOT_MODIFIED {
            store_entry(&cache, &self.primary, refresh(&self.entry, headers, now));
            return;
        }
        let request_directives = Directives::parse(&self.request);
        let directives = self.rule.response_directives(headers);
        let verdict = policy::storable(
            &Method::GET,
            &self.request,
            &request_directives,
            status,
            headers,
            &directives,
            &self.rule.overrides,
        );
        if verdict.is_err() {
            return;
        }
        let mut stored = headers.clone();
        stored.remove("x-request-id");
        stored.remove("cache-status");
        stored.remove(header::CONNECTION);
        stored.remove(header::TRANSFER_ENCODING);
        let vary = key::vary_names(headers);
        let full = format!("{}\n{}", self.primary, key::secondary(&vary, &self.request));
        cache.set_vary(&self.primary, vary);
        let entry = Entry::new(full, StoredHead::from_http(status, &stored), body)
            .with_tags(tags(headers, &self.rule.tag_headers));
        store_entry(&cache, &self.primary, entry);
    }
}

/// A request going upstream with the cache involved.
#[derive(Debug)]
pub struct Pending {
    primary: String,
    full: String,
    /// The stale entry being revalidated (conditional request upstream).
    stale: Option<Arc<Entry>>,
    /// This request fetches for others waiting on the same key: held until it ends, when
    /// dropping it wakes them.
    _fill_guard: Option<FillGuard>,
    /// `Cache-Status` to send.
    status: String,
    request_directives: Directives,
    head_request: bool,
    rule: CacheRule,
    /// Set when the response is being stored.
    fill: Option<Fill>,
    /// A cached body to send instead of the upstream's (revalidated or stale-if-error).
    replacement: Option<Bytes>,
}

/// Removes a fill from the table and wakes its waiters when the filling request ends.
#[derive(Debug)]
struct FillGuard {
    cache: Arc<HttpCache>,
    key: String,
    done: watch::Sender<bool>,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        lock(&self.cache.fills).remove(&self.key);
        self.done.send_replace(true);
    }
}

/// A response being stored while it streams to the client.
#[derive(Debug)]
struct Fill {
    /// The full key it is stored under (with the response's own `Vary` names).
    key: String,
    head: StoredHead,
    body: BytesMut,
    max: u64,
    tags: Vec<String>,
    vary: Vec<String>,
}

fn status_line(value: &str) -> HeaderValue {
    HeaderValue::try_from(value).unwrap_or(HeaderValue::from_static("sluice"))
}

impl CacheRule {
    /// Looks the request up. `scheme` and `host` come from the session.
    pub async fn lookup(
        &self,
        method: &Method,
        uri: &http::Uri,
        scheme: &str,
        host: &str,
        headers: &HeaderMap,
    ) -> Lookup {
        let request_directives = Directives::parse(headers);
        let primary = key::primary(&self.key, scheme, host, uri.path(), uri.query(), headers);
        let head_request = method == Method::HEAD;
        let forward = |status: &str, full: String, stale, fill_guard, directives| {
            Lookup::Forward(Box::new(Pending {
                primary: primary.clone(),
                full,
                stale,
                _fill_guard: fill_guard,
                status: format!("sluice; {status}"),
                request_directives: directives,
                head_request,
                rule: self.clone(),
                fill: None,
                replacement: None,
            }))
        };
        if method != Method::GET && method != Method::HEAD {
            return forward("fwd=method", String::new(), None, None, request_directives);
        }
        let cache = &self.cache;
        let full = cache.full_key(&primary, headers);
        let mut waited = false;
        loop {
            if let Some(entry) = cache.get(&full).await {
                let now = SystemTime::now();
                let (status, stored) = match entry.head.to_http() {
                    Some(h) => h,
                    None => break,
                };
                let directives = self.response_directives(&stored);
                let age = policy::current_age(&stored, entry.stored_at, entry.stored_at, now);
                let lifetime =
                    policy::freshness_lifetime(status, &stored, &directives, &self.overrides, entry.stored_at);
                let min_fresh = Duration::from_secs(request_directives.min_fresh.unwrap_or(0));
                let client_max_age = request_directives.max_age.map(Duration::from_secs);
                let fresh = age + min_fresh < lifetime && client_max_age.is_none_or(|m| age <= m);
                let must_revalidate = request_directives.no_cache || directives.no_cache;
                if fresh && !must_revalidate {
                    let ttl = lifetime.saturating_sub(age).as_secs();
                    let cache_status = format!("sluice; hit; ttl={ttl}{}", if waited { "; collapsed" } else { "" });
                    let response = respond(&entry, status, stored, age, headers, head_request, &cache_status);
                    let whole = response.status() == StatusCode::OK && !head_request;
                    let hit = whole.then(|| Hit {
                        cache: self.cache.clone(),
                        key: entry.key.clone(),
                        stamp: entry.stored_at,
                        tags: entry.tags.clone(),
                    });
                    return Lookup::Respond(Box::new(response), hit);
                }
                let staleness = age.saturating_sub(lifetime);
                let may_serve_stale =
                    !directives.must_revalidate && !directives.proxy_revalidate && !directives.no_cache;
                // stale-while-revalidate: while one request revalidates, the others get the
                // stale copy instead of waiting (the refreshing request itself goes upstream).
                let swr = directives.stale_while_revalidate.map(Duration::from_secs);
                if may_serve_stale && swr.is_some_and(|w| staleness <= w) {
                    let status_text = "sluice; hit; fwd=stale; detail=stale-while-revalidate";
                    let response = Box::new(respond(&entry, status, stored, age, headers, head_request, status_text));
                    // The first one starts a background revalidation; the others just get
                    // the stale copy while it runs.
                    return match self.claim(&full) {
                        Some(guard) => Lookup::RespondAndRefresh(
                            response,
                            Box::new(Refresh {
                                rule: self.clone(),
                                primary: primary.clone(),
                                entry,
                                request: headers.clone(),
                                _guard: guard,
                            }),
                        ),
                        None => Lookup::Respond(response, None),
                    };
                }
                if request_directives.only_if_cached {
                    return Lookup::Respond(Box::new(gateway_timeout()), None);
                }
                // Revalidate (or refetch) this one.
                let guard = self.claim(&full);
                return forward("fwd=stale", full, Some(entry), guard, request_directives);
            }
            if request_directives.only_if_cached {
                return Lookup::Respond(Box::new(gateway_timeout()), None);
            }
            // A miss: fetch, unless another request already is (coalescing): then wait for it.
            let waiting = lock(&cache.fills).get(&full).cloned();
            match waiting {
                Some(mut done) if !waited && !head_request => {
                    waited = true;
                    let _ = tokio::time::timeout(self.lock_timeout, done.wait_for(|d| *d)).await;
                    continue;
                }
                _ => {}
            }
            break;
        }
        let guard = if head_request { None } else { self.claim(&full) };
        forward(if waited { "fwd=miss; collapsed" } else { "fwd=miss" }, full, None, guard, request_directives)
    }

    /// Registers this request as the one fetching `full`, unless one already is.
    fn claim(&self, full: &str) -> Option<FillGuard> {
        let mut fills = lock(&self.cache.fills);
        if fills.contains_key(full) {
            return None;
        }
        let (tx, rx) = watch::channel(false);
        fills.insert(full.to_owned(), rx);
        Some(FillGuard { cache: self.cache.clone(), key: full.to_owned(), done: tx })
    }
}

fn gateway_timeout() -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    r.headers_mut().insert("cache-status", HeaderValue::from_static("sluice; fwd=miss; detail=only-if-cached"));
    r
}

/// The response for a cached entry: `Age`, `Cache-Status`, and the client's conditional
/// and `Range` headers honoured.
fn respond(
    entry: &Entry,
    status: StatusCode,
    headers: HeaderMap,
    age: Duration,
    request: &HeaderMap,
    head: bool,
    cache_status: &str,
) -> Response<Body> {
    let (parts, bytes) = respond_parts(entry, status, headers, age, request, cache_status);
    let body = if head || bytes.is_empty() { Body::empty() } else { Body::full(bytes) };
    Response::from_parts(parts, body)
}

/// The head of the answer for a cached entry, and the exact body bytes it announces.
fn respond_parts(
    entry: &Entry,
    status: StatusCode,
    mut headers: HeaderMap,
    age: Duration,
    request: &HeaderMap,
    cache_status: &str,
) -> (http::response::Parts, Bytes) {
    headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
    headers.insert("cache-status", status_line(cache_status));
    let (mut parts, ()) = Response::new(()).into_parts();
    // The client's own validators, against the stored response's (RFC 9111 §4.3.2).
    if status == StatusCode::OK && not_modified(request, &headers) {
        parts.status = StatusCode::NOT_MODIFIED;
        headers.remove(header::CONTENT_LENGTH);
        parts.headers = headers;
        return (parts, Bytes::new());
    }
    let len = entry.body.len() as u64;
    let ranges = match request.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if status == StatusCode::OK => {
            let validators_ok = request.get(header::IF_RANGE).and_then(|v| v.to_str().ok()).is_none_or(|v| {
                let etag = headers.get(header::ETAG).and_then(|e| e.to_str().ok()).unwrap_or("");
                let modified = headers.get(header::LAST_MODIFIED).and_then(|e| e.to_str().ok()).unwrap_or("");
                range::if_range_matches(v, etag, modified)
            });
            if validators_ok {
                range::parse(r, len)
            } else {
                Ranges::Full
            }
        }
        _ => Ranges::Full,
    };
    let bytes = match ranges {
        Ranges::Some(r) if r.len() == 1 => {
            let (start, end) = r[0];
            parts.status = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::try_from(format!("bytes {start}-{end}/{len}")) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            entry.body.slice(usize::try_from(start).unwrap_or(0)..usize::try_from(end + 1).unwrap_or(0))
        }
        Ranges::Some(r) => {
            // Several ranges: multipart/byteranges, each part with the stored type.
            parts.status = StatusCode::PARTIAL_CONTENT;
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_owned();
            let (bytes, multipart) = crate::files::multipart_from_memory(&entry.body, &r, &content_type, &entry.key);
            if let Ok(v) = HeaderValue::try_from(multipart) {
                headers.insert(header::CONTENT_TYPE, v);
            }
            bytes
        }
        Ranges::Unsatisfiable => {
            parts.status = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(v) = HeaderValue::try_from(format!("bytes */{len}")) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            Bytes::new()
        }
        Ranges::Full => {
            parts.status = status;
            entry.body.clone()
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    parts.headers = headers;
    (parts, bytes)
}

/// Whether the client's `If-None-Match` / `If-Modified-Since` match the stored response.
fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let text = |h: &HeaderMap, n: HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(list) = text(request, header::IF_NONE_MATCH) {
        let Some(etag) = text(stored, header::ETAG) else { return false };
        let opaque = etag.trim_start_matches("W/");
        return list.split(',').map(str::trim).any(|c| c == "*" || c.trim_start_matches("W/") == opaque);
    }
    match (text(request, header::IF_MODIFIED_SINCE), text(stored, header::LAST_MODIFIED)) {
        (Some(since), Some(modified)) => {
            match (httpdate::parse_http_date(since.trim()), httpdate::parse_http_date(modified.trim())) {
                (Ok(since), Ok(modified)) => modified <= since,
                _ => false,
            }
        }
        _ => false,
    }
}

impl Pending {
    /// The `Cache-Status` value so far.
    pub fn cache_status(&self) -> &str {
        &self.status
    }

    /// Whether this request bypasses the cache (a method the cache does not serve).
    pub fn bypass(&self) -> bool {
        self.full.is_empty()
    }

    /// Adds the stale entry's validators to the upstream request (revalidation), and never
    /// forwards a `Range` for a request that would fill the cache.
    pub fn upstream_request(&self, headers: &mut HeaderMap) {
        if self.bypass() {
            return;
        }
        if let Some(entry) = &self.stale {
            if let Some((_, stored)) = entry.head.to_http() {
                headers.remove(header::IF_NONE_MATCH);
                headers.remove(header::IF_MODIFIED_SINCE);
                if let Some(etag) = stored.get(header::ETAG) {
                    headers.insert(header::IF_NONE_MATCH, etag.clone());
                }
                if let Some(modified) = stored.get(header::LAST_MODIFIED) {
                    headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
                }
            }
        }
    }

    /// Looks at the upstream response head (before any header edit): stores it, refreshes
    /// the stale entry with a `304`, or serves the stale entry for a `5xx` within
    /// `stale-if-error`. May replace the head; then the body must be replaced by
    /// [`body`](Self::body) (see [`replaces_body`](Self::replaces_body)).
    pub fn upstream_response(&mut self, method: &Method, request: &HeaderMap, response: &mut http::response::Parts) {
        if self.bypass() {
            // An unsafe method that succeeded makes what is stored for its URL stale
            // (RFC 9111 §4.4): drop it.
            let unsafe_method = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE);
            if unsafe_method && (response.status.is_success() || response.status.is_redirection()) {
                let (cache, primary) = (self.rule.cache.clone(), self.primary.clone());
                tokio::spawn(async move {
                    cache.purge_key(&primary).await;
                });
            }
            response.headers.insert("cache-status", status_line(&self.status));
            return;
        }
        let now = SystemTime::now();
        if let Some(entry) = self.stale.clone() {
            if response.status == StatusCode::NOT_MODIFIED {
                let refreshed = refresh(&entry, &response.headers, now);
                self.store_now(refreshed.clone());
                self.status.push_str("; fwd-status=304");
                self.replace(&refreshed, request, response);
                return;
            }
            if response.status.is_server_error() && self.stale_if_error(&entry, now) {
                self.status =
                    format!("sluice; hit; fwd=stale; fwd-status={}; detail=stale-if-error", response.status.as_u16());
                self.replace(&entry, request, response);
                return;
            }
        }
        let directives = self.rule.response_directives(&response.headers);
        let verdict = policy::storable(
            method,
            request,
            &self.request_directives,
            response.status,
            &response.headers,
            &directives,
            &self.rule.overrides,
        );
        match verdict {
            Ok(()) if !self.head_request => {
                let too_big = response
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|n| n > self.rule.cache.store.max_object());
                if too_big {
                    self.status.push_str("; detail=too-large");
                } else {
                    let vary = key::vary_names(&response.headers);
                    let full = format!("{}\n{}", self.primary, key::secondary(&vary, request));
                    // Per-request headers are not part of the stored response.
                    let mut stored = response.headers.clone();
                    stored.remove("x-request-id");
                    stored.remove("cache-status");
                    self.fill = Some(Fill {
                        key: full,
                        head: StoredHead::from_http(response.status, &stored),
                        body: BytesMut::new(),
                        max: self.rule.cache.store.max_object(),
                        tags: tags(&response.headers, &self.rule.tag_headers),
                        vary,
                    });
                    self.status.push_str("; stored");
                    // A body that cannot or does not come (204, `Content-Length: 0`) is
                    // never polled, so its end never reaches `body`: store it now.
                    let empty = response.status == StatusCode::NO_CONTENT
                        || response.headers.get(header::CONTENT_LENGTH).is_some_and(|v| v == "0");
                    if empty {
                        self.body(&mut None, true);
                    }
                }
            }
            Ok(()) => {}
            Err(why) => {
                self.status.push_str("; detail=");
                self.status.push_str(why);
            }
        }
        self.status.push_str(&format!("; fwd-status={}", response.status.as_u16()));
        response.headers.insert("cache-status", status_line(&self.status));
    }

    /// For an error before any response (connect failure, timeout): the stale entry, if
    /// `stale-if-error` allows it.
    pub fn error_response(&self, request: &HeaderMap) -> Option<Response<Body>> {
        let entry = self.stale.as_ref()?;
        let now = SystemTime::now();
        if !self.stale_if_error(entry, now) {
            return None;
        }
        let (status, stored) = entry.head.to_http()?;
        let age = policy::current_age(&stored, entry.stored_at, entry.stored_at, now);
        let text = "sluice; hit; fwd=stale; detail=stale-if-error";
        Some(respond(entry, status, stored, age, request, self.head_request, text))
    }

    fn stale_if_error(&self, entry: &Entry, now: SystemTime) -> bool {
        let Some((status, stored)) = entry.head.to_http() else { return false };
        let directives = self.rule.response_directives(&stored);
        let window = directives.stale_if_error.or(self.request_directives.stale_if_error);
        let Some(window) = window else { return false };
        if directives.must_revalidate || directives.proxy_revalidate {
            return false;
        }
        let age = policy::current_age(&stored, entry.stored_at, entry.stored_at, now);
        let lifetime = policy::freshness_lifetime(status, &stored, &directives, &self.rule.overrides, entry.stored_at);
        age.saturating_sub(lifetime) <= Duration::from_secs(window)
    }

    /// Turns the response head into the cached entry's, and remembers its body.
    fn replace(&mut self, entry: &Entry, request: &HeaderMap, response: &mut http::response::Parts) {
        let Some((status, stored)) = entry.head.to_http() else { return };
        let (parts, bytes) = respond_parts(entry, status, stored, Duration::ZERO, request, &self.status);
        let request_id = response.headers.remove("x-request-id");
        response.status = parts.status;
        response.headers = parts.headers;
        if let Some(id) = request_id {
            response.headers.insert("x-request-id", id);
        }
        self.replacement = Some(if self.head_request { Bytes::new() } else { bytes });
    }

    /// Whether the response body is replaced by a cached one.
    pub fn replaces_body(&self) -> bool {
        self.replacement.is_some()
    }

    /// Sees each body chunk: keeps a copy for the cache (up to the object limit), or swaps
    /// in the cached body. Stores the entry at the end.
    pub fn body(&mut self, chunk: &mut Option<Bytes>, end_of_stream: bool) {
        if let Some(replacement) = &mut self.replacement {
            *chunk = if end_of_stream { Some(std::mem::take(replacement)) } else { None };
            return;
        }
        if let Some(fill) = &mut self.fill {
            if let Some(data) = chunk.as_ref() {
                if (fill.body.len() + data.len()) as u64 > fill.max {
                    self.fill = None;
                    return;
                }
                fill.body.extend_from_slice(data);
            }
        }
        if end_of_stream {
            if let Some(fill) = self.fill.take() {
                let entry = Entry::new(fill.key, fill.head, fill.body.freeze()).with_tags(fill.tags);
                let cache = &self.rule.cache;
                cache.set_vary(&self.primary, fill.vary);
                self.store_now(entry);
            }
        }
    }

    fn store_now(&self, entry: Entry) {
        store_entry(&self.rule.cache, &self.primary, entry);
    }
}

/// Stores an entry: in memory now (waiting requests look there as soon as the filling one
/// ends), on disk from the blocking pool; remembered as a variant of its URL for purges.
fn store_entry(cache: &Arc<HttpCache>, primary: &str, mut entry: Entry) {
    let tag = url_tag(primary);
    if !entry.tags.contains(&tag) {
        entry.tags.push(tag);
    }
    let entry = Arc::new(entry);
    cache.store.memory().insert(sluice_cache::CacheKey::of(&entry.key), entry.clone());
    if cache.store.disk().is_some() {
        let cache = cache.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(disk) = cache.store.disk() {
                if let Err(e) = disk.insert(&entry) {
                    tracing::warn!(error = %e, "cannot write a cache entry to disk");
                }
            }
        });
    }
}

/// The stored entry updated by a `304` (RFC 9111 §4.3.4): its headers replaced by those
/// the `304` carries (except the framing ones), and its age restarted.
fn refresh(entry: &Entry, not_modified: &HeaderMap, now: SystemTime) -> Entry {
    let Some((status, mut headers)) = entry.head.to_http() else {
        return Entry::new(entry.key.clone(), entry.head.clone(), entry.body.clone()).with_tags(entry.tags.clone());
    };
    for name in not_modified.keys() {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == "cache-status"
            || name == "x-request-id"
        {
            continue;
        }
        headers.remove(name);
        for v in not_modified.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    let mut fresh = Entry::new(entry.key.clone(), StoredHead::from_http(status, &headers), entry.body.clone())
        .with_tags(entry.tags.clone());
    fresh.stored_at = now;
    fresh
}

/// Tags from the tag headers: space- or comma-separated.
fn tags(headers: &HeaderMap, names: &[HeaderName]) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        for v in headers.get_all(name) {
            let Ok(v) = v.to_str() else { continue };
            out.extend(v.split([' ', ',']).map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}
