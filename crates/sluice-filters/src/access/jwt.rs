//! JWT validation (RFC 7519) of bearer tokens: signature (HS256/384/512, RS256/384/512,
//! PS256, ES256/384, EdDSA) with keys from JWKS documents (a file or a URL, refreshed
//! periodically), PEM public keys or HMAC secrets; `exp` (required), `nbf`, `iss` and
//! `aud` checks with a leeway; selected claims copied into request headers.
//!
//! A configured issuer or audience is a required claim: a token without it is refused.
//! The registered claims are checked again on the verified JSON, because `jsonwebtoken`
//! skips a claim it cannot parse (a string `nbf`, a numeric `aud`) instead of refusing
//! the token. A token whose header has `crit` is refused: no extension is understood
//! here (RFC 7515 section 4.1.11). A request with two tokens (two Authorization fields,
//! two cookies of the name) is refused rather than one of them picked.
//!
//! The algorithm of a token must be one the rule accepts *and* match its key's type, so
//! the classic confusions (`alg: none`, an RSA public key used as an HMAC secret) cannot
//! happen. The claim headers are always removed from the client's request first, so a
//! client cannot set them itself.
//!
//! Verified tokens are remembered (a keyed hash of the token, up to 10,000, forgotten when
//! the keys change): a client reusing its token pays for the signature check once, later
//! requests only for the time checks.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use http::header::{HeaderMap, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sluice_core::Body;
use sluice_proxy::Session;

const REMEMBERED_MAX: usize = 10_000;
/// A token is tried against at most this many keys (a token without `kid`).
const MAX_TRIES: usize = 4;

/// Where a rule's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A JWKS file, re-read every `refresh`.
    JwksFile(PathBuf, Duration),
    /// A JWKS URL, fetched every `refresh`.
    JwksUrl(String, Duration),
    /// An HMAC secret.
    Secret(Vec<u8>),
    /// A PEM public key file (RSA, EC or Ed25519).
    PublicKey(PathBuf),
}

/// Where the token is.
#[derive(Debug, Clone)]
pub enum Token {
    /// `Bearer <token>` in this header.
    Bearer(HeaderName),
    /// This cookie's value.
    Cookie(String),
}

/// A rule's settings.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// Key sources.
    pub keys: Vec<KeySource>,
    /// Accepted algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Required issuer.
    pub issuer: Option<String>,
    /// Accepted audiences (empty: not checked).
    pub audience: Vec<String>,
    /// Allowed clock skew.
    pub leeway: Duration,
    /// Where the token is.
    pub token: Token,
    /// Claim name and the header it is copied to.
    pub claim_headers: Vec<(String, HeaderName)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

fn family_of(alg: Algorithm) -> Family {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
        Algorithm::EdDSA => Family::Ed,
        _ => Family::Rsa,
    }
}

struct Key {
    id: Option<String>,
    family: Family,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("id", &self.id).field("family", &self.family).finish()
    }
}

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// What a verified token grants: its time window and its claim headers.
#[derive(Debug, Clone)]
struct Granted {
    exp: u64,
    nbf: u64,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// One `jwt` rule.
#[derive(Debug)]
pub struct JwtAuth {
    settings: JwtSettings,
    /// Keys from the static sources (secrets, PEM files), loaded once.
    fixed: Vec<Arc<Key>>,
    /// All keys now: the fixed ones plus the latest JWKS documents.
    keys: ArcSwap<Vec<Arc<Key>>>,
    /// The latest keys of each JWKS source (by index in `settings.keys`).
    fetched: Mutex<HashMap<usize, Vec<Arc<Key>>>>,
    validation: Validation,
    remembered: Mutex<HashMap<u64, Granted>>,
    hasher: std::collections::hash_map::RandomState,
}

impl JwtAuth {
    /// Loads the keys (a JWKS URL is fetched once here; if that fails the rule starts
    /// without its keys, refusing tokens, and [`refresh`](Self::refresh) keeps trying).
    pub async fn new(settings: JwtSettings) -> Result<Self, KeyError> {
        let mut fixed = Vec::new();
        for source in &settings.keys {
            match source {
                KeySource::Secret(s) => {
                    fixed.push(Arc::new(Key { id: None, family: Family::Hmac, key: DecodingKey::from_secret(s) }))
                }
                KeySource::PublicKey(path) => fixed.push(Arc::new(pem_key(path)?)),
                _ => {}
            }
        }
        let mut validation = Validation::new(settings.algorithms.first().copied().unwrap_or(Algorithm::RS256));
        validation.algorithms.clone_from(&settings.algorithms);
        validation.leeway = settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation.validate_exp = true;
        // Configured claims are required claims; `accepted_claims` checks them again.
        let mut required = vec!["exp"];
        if settings.issuer.is_some() {
            required.push("iss");
        }
        if !settings.audience.is_empty() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        match &settings.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        if settings.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&settings.audience);
        }
        let auth = Self {
            keys: ArcSwap::from_pointee(fixed.clone()),
            fixed,
            fetched: Mutex::new(HashMap::new()),
            validation,
            remembered: Mutex::new(HashMap::new()),
            hasher: Default::default(),
            settings,
        };
        for (i, source) in auth.settings.keys.iter().enumerate() {
            match source {
                KeySource::JwksFile(path, _) => {
                    // A file that is broken at startup is a configuration error.
                    let text =
                        std::fs::read(path).map_err(|e| KeyError(format!("cannot read {}: {e}", path.display())))?;
                    auth.install(i, parse_jwks(&text).map_err(|e| KeyError(format!("{}: {e}", path.display())))?);
                }
                KeySource::JwksUrl(url, _) => match tokio::time::timeout(Duration::from_secs(5), fetch(url)).await {
                    Ok(Ok(body)) => match parse_jwks(&body) {
                        Ok(keys) => auth.install(i, keys),
                        Err(e) => {
                            tracing::warn!(%url, error = %e, "JWKS document unusable; retrying in the background")
                        }
                    },
                    Ok(Err(e)) => tracing::warn!(%url, error = %e, "cannot fetch JWKS; retrying in the background"),
                    Err(_) => tracing::warn!(%url, "fetching JWKS timed out; retrying in the background"),
                },
                _ => {}
            }
        }
        Ok(auth)
    }

    /// Keys known now (for tests and status).
    pub fn key_count(&self) -> usize {
        self.keys.load().len()
    }

    fn install(&self, source: usize, keys: Vec<Arc<Key>>) {
        let mut fetched = self.fetched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fetched.insert(source, keys);
        let mut all = self.fixed.clone();
        let mut sources: Vec<_> = fetched.iter().collect();
        sources.sort_by_key(|(i, _)| **i);
        for (_, keys) in sources {
            all.extend(keys.iter().cloned());
        }
        self.keys.store(Arc::new(all));
        if let Ok(mut r) = self.remembered.lock() {
            r.clear();
        }
    }

    /// Re-reads the JWKS sources on their schedules, forever (spawn it; drop it to stop).
    /// A source that fails keeps its last keys and is tried again sooner.
    pub async fn refresh(self: Arc<Self>) {
        let sources: Vec<(usize, KeySource)> = self
            .settings
            .keys
            .iter()
            .cloned()
            .enumerate()
            .filter(|(_, s)| matches!(s, KeySource::JwksFile(..) | KeySource::JwksUrl(..)))
            .collect();
        if sources.is_empty() {
            return;
        }
        let mut due: Vec<tokio::time::Instant> = sources
            .iter()
            .map(|(i, s)| {
                let loaded = self.fetched.lock().is_ok_and(|f| f.contains_key(i));
                let every = refresh_of(s);
                tokio::time::Instant::now() + if loaded { every } else { every.min(Duration::from_secs(10)) }
            })
            .collect();
        loop {
            let Some((slot, &at)) = due.iter().enumerate().min_by_key(|(_, at)| **at) else { return };
            tokio::time::sleep_until(at).await;
            let (index, source) = &sources[slot];
            let result = match source {
                KeySource::JwksFile(path, _) => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display())),
                KeySource::JwksUrl(url, _) => match tokio::time::timeout(Duration::from_secs(10), fetch(url)).await {
                    Ok(r) => r.map(|b| b.to_vec()),
                    Err(_) => Err(format!("{url}: timed out")),
                },
                _ => Err(String::new()),
            };
            let every = refresh_of(source);
            match result.and_then(|body| parse_jwks(&body)) {
                Ok(keys) => {
                    tracing::debug!(keys = keys.len(), "JWKS refreshed");
                    self.install(*index, keys);
                    due[slot] = tokio::time::Instant::now() + every;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS refresh failed; keeping the last keys");
                    due[slot] = tokio::time::Instant::now() + every.min(Duration::from_secs(30));
                }
            }
        }
    }

    /// `None` when the request carries a valid token (its claim headers are then set);
    /// otherwise the 401 answer.
    pub fn check(&self, session: &mut Session) -> Option<Response<Body>> {
        let now = jsonwebtoken::get_current_timestamp();
        match self.authorize(&mut session.req.headers, now) {
            Ok(()) => None,
            Err(why) => {
                if let Some(why) = why {
                    tracing::debug!(client = %session.client_addr(), why, "JWT refused");
                }
                Some(challenge(why))
            }
        }
    }

    /// Removes the claim headers the client sent, then checks the token in `headers` at
    /// `now` (seconds since the epoch) and sets the claim headers from it. `Err(None)`:
    /// there is no token; `Err(Some(why))`: the token is refused.
    fn authorize(&self, headers: &mut HeaderMap, now: u64) -> Result<(), Option<&'static str>> {
        for (_, header) in &self.settings.claim_headers {
            headers.remove(header);
        }
        let token = self.token_of(headers).map_err(Some)?.ok_or(None)?;
        let key = {
            let mut h = self.hasher.build_hasher();
            h.write(token.as_bytes());
            h.finish()
        };
        let remembered = self.remembered.lock().ok().and_then(|r| r.get(&key).cloned());
        let granted = match remembered {
            Some(g) => g,
            None => {
                let g = self.verify(&token).map_err(Some)?;
                if let Ok(mut r) = self.remembered.lock() {
                    if r.len() >= REMEMBERED_MAX {
                        r.clear();
                    }
                    r.insert(key, g.clone());
                }
                g
            }
        };
        // The window is checked here for fresh and remembered tokens alike, on the times
        // `grant` rounded towards refusal (jsonwebtoken rounds fractional times to nearest).
        let leeway = self.validation.leeway;
        if now >= granted.exp.saturating_add(leeway) {
            return Err(Some("the token is expired"));
        }
        if now.saturating_add(leeway) < granted.nbf {
            return Err(Some("the token is not valid yet"));
        }
        for (name, value) in granted.headers {
            headers.insert(name, value);
        }
        Ok(())
    }

    /// The token of the request: `Ok(None)` when there is none, `Err` when there are two.
    fn token_of(&self, headers: &HeaderMap) -> Result<Option<String>, &'static str> {
        // Two tokens are refused, not one picked: a proxy in front may have looked at the
        // other one.
        const TWO: &str = "the request carries more than one token";
        match &self.settings.token {
            Token::Bearer(header) => {
                let mut fields = headers.get_all(header).iter();
                let Some(value) = fields.next() else { return Ok(None) };
                if fields.next().is_some() {
                    return Err(TWO);
                }
                let Some(value) = value.to_str().ok().map(str::trim) else { return Ok(None) };
                let Some((scheme, token)) = value.split_once(' ') else { return Ok(None) };
                Ok(scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned()))
            }
            Token::Cookie(name) => {
                let mut found = crate::affinity::cookies_named(headers, name);
                let Some(value) = found.next() else { return Ok(None) };
                if found.next().is_some() {
                    return Err(TWO);
                }
                Ok(std::str::from_utf8(value).ok().map(str::to_owned))
            }
        }
    }

    /// Checks a token's signature and claims.
    fn verify(&self, token: &str) -> Result<Granted, &'static str> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "the token is malformed")?;
        // jsonwebtoken's `Header` drops the parameters it does not know, `crit` among them.
        if protected_header(token)?.contains_key("crit") {
            return Err("the token has critical header parameters (crit) that are not understood");
        }
        if !self.settings.algorithms.contains(&header.alg) {
            return Err("the token's algorithm is not accepted");
        }
        let family = family_of(header.alg);
        let keys = self.keys.load();
        let candidates = keys
            .iter()
            .filter(|k| k.family == family)
            .filter(|k| header.kid.is_none() || k.id.is_none() || k.id == header.kid)
            .take(MAX_TRIES);
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let mut last = "no key can verify the token";
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation) {
                Ok(data) => return self.grant(&data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature => "the signature is invalid",
                        K::ExpiredSignature => return Err("the token is expired"),
                        K::ImmatureSignature => return Err("the token is not valid yet"),
                        K::InvalidIssuer => return Err("the token's issuer is not accepted"),
                        K::InvalidAudience => return Err("the token's audience is not accepted"),
                        K::MissingRequiredClaim(claim) => {
                            return Err(match claim.as_str() {
                                "iss" => "the token has no issuer (iss)",
                                "aud" => "the token has no audience (aud)",
                                _ => "the token has no expiry (exp)",
                            })
                        }
                        _ => "the token is invalid",
                    };
                }
            }
        }
        Err(last)
    }

    /// What verified claims grant, once the registered claims pass `accepted_claims`.
    fn grant(&self, claims: &serde_json::Value) -> Result<Granted, &'static str> {
        let (exp, nbf) = self.accepted_claims(claims)?;
        let headers = self
            .settings
            .claim_headers
            .iter()
            .filter_map(|(claim, header)| {
                let text = match claims.get(claim)? {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(items) => items
                        .iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => other.to_string(),
                };
                Some((header.clone(), HeaderValue::try_from(text).ok()?))
            })
            .collect();
        Ok(Granted { exp, nbf, headers })
    }

    /// Checks the registered claims of verified claims and returns `(exp, nbf)`.
    ///
    /// jsonwebtoken already checked them, but it treats a claim it cannot parse as absent
    /// (a string `nbf` is not checked at all) and takes an array for `iss`, so the rules
    /// of RFC 7519 section 4.1 are applied here to the JSON itself.
    fn accepted_claims(&self, claims: &serde_json::Value) -> Result<(u64, u64), &'static str> {
        use serde_json::Value;
        let claims = claims.as_object().ok_or("the token's claims are not a JSON object")?;
        let exp = match claims.get("exp") {
            None => return Err("the token has no expiry (exp)"),
            Some(v) => numeric_date(v, Round::Down).ok_or("the token's expiry (exp) is not a number")?,
        };
        let nbf = match claims.get("nbf") {
            None => 0,
            Some(v) => numeric_date(v, Round::Up).ok_or("the token's start (nbf) is not a number")?,
        };
        if let Some(issuer) = &self.settings.issuer {
            match claims.get("iss") {
                None => return Err("the token has no issuer (iss)"),
                Some(Value::String(iss)) if iss == issuer => {}
                Some(Value::String(_)) => return Err("the token's issuer is not accepted"),
                Some(_) => return Err("the token's issuer (iss) is not a string"),
            }
        }
        if !self.settings.audience.is_empty() {
            const NOT_STRINGS: &str = "the token's audience (aud) is not a string or an array of strings";
            let accepted = |aud: &String| self.settings.audience.contains(aud);
            let matched = match claims.get("aud") {
                None => return Err("the token has no audience (aud)"),
                Some(Value::String(aud)) => accepted(aud),
                Some(Value::Array(items)) => {
                    let mut matched = false;
                    for item in items {
                        let Value::String(aud) = item else { return Err(NOT_STRINGS) };
                        matched |= accepted(aud);
                    }
                    matched
                }
                Some(_) => return Err(NOT_STRINGS),
            };
            if !matched {
                return Err("the token's audience is not accepted");
            }
        }
        Ok((exp, nbf))
    }
}

/// Which way a fractional time is rounded: towards refusing the token.
#[derive(Debug, Clone, Copy)]
enum Round {
    /// For `exp`: the token ends no later than it says.
    Down,
    /// For `nbf`: the token starts no earlier than it says.
    Up,
}

/// A NumericDate (RFC 7519 section 2): seconds since the epoch, maybe fractional; `None`
/// when the value is not a JSON number. A time before 1970 is 0.
fn numeric_date(value: &serde_json::Value, round: Round) -> Option<u64> {
    let serde_json::Value::Number(n) = value else { return None };
    if let Some(seconds) = n.as_u64() {
        return Some(seconds);
    }
    let seconds = n.as_f64()?;
    let seconds = match round {
        Round::Down => seconds.floor(),
        Round::Up => seconds.ceil(),
    };
    // `as` saturates: negative times become 0, times past u64::MAX become u64::MAX.
    Some(seconds as u64)
}

/// The JOSE header of a compact token as JSON.
fn protected_header(token: &str) -> Result<serde_json::Map<String, serde_json::Value>, &'static str> {
    const MALFORMED: &str = "the token is malformed";
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(MALFORMED);
    };
    // The same alphabet and padding rule as jsonwebtoken, so both read the same bytes.
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).map_err(|_| MALFORMED)?;
    match serde_json::from_slice(&json) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(MALFORMED),
    }
}

fn refresh_of(source: &KeySource) -> Duration {
    match source {
        KeySource::JwksFile(_, every) | KeySource::JwksUrl(_, every) => *every,
        _ => Duration::from_secs(3600),
    }
}

fn challenge(error: Option<&str>) -> Response<Body> {
    let mut r = super::plain(StatusCode::UNAUTHORIZED, "401 Unauthorized\n");
    let value = match error {
        // RFC 6750 section 3.1: no error code when the request had no token.
        None => HeaderValue::from_static("Bearer"),
        Some(why) => HeaderValue::try_from(format!("Bearer error=\"invalid_token\", error_description=\"{why}\""))
            .unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\"")),
    };
    r.headers_mut().insert(WWW_AUTHENTICATE, value);
    r
}

/// The keys of a JWKS document; keys of unknown types are skipped, not fatal.
fn parse_jwks(text: &[u8]) -> Result<Vec<Arc<Key>>, String> {
    let doc: serde_json::Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = doc.get("keys").and_then(serde_json::Value::as_array).ok_or("no `keys` array")?;
    let mut keys = Vec::new();
    for item in list {
        let Ok(jwk) = serde_json::from_value::<Jwk>(item.clone()) else {
            tracing::debug!("skipping a JWKS key of an unsupported type");
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)) {
            continue;
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(_) => Family::Ec,
            AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
            AlgorithmParameters::OctetKey(_) => Family::Hmac,
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => keys.push(Arc::new(Key { id: jwk.common.key_id.clone(), family, key })),
            Err(e) => tracing::debug!(error = %e, "skipping an unusable JWKS key"),
        }
    }
    Ok(keys)
}

/// A PEM public key: RSA, EC or Ed25519.
fn pem_key(path: &std::path::Path) -> Result<Key, KeyError> {
    let pem = std::fs::read(path).map_err(|e| KeyError(format!("cannot read {}: {e}", path.display())))?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok(Key { id: None, family: Family::Rsa, key });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok(Key { id: None, family: Family::Ec, key });
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok(Key { id: None, family: Family::Ed, key });
    }
    Err(KeyError(format!("{}: not an RSA, EC or Ed25519 public key in PEM form", path.display())))
}

/// GETs a URL (http or https, system roots), at most 1 MiB.
async fn fetch(url: &str) -> Result<bytes::Bytes, String> {
    use http_body_util::BodyExt as _;
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or_else(|| format!("{url}: no host"))?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addr = tokio::net::lookup_host((host.trim_start_matches('[').trim_end_matches(']'), port))
        .await
        .map_err(|e| format!("{url}: cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: {host} has no address"))?;
    let tls = if https {
        let settings = sluice_upstream::UpstreamTlsSettings {
            server_name: Some(host.clone()),
            ca: None,
            verify: true,
            client_certificate: None,
        };
        Some(Arc::new(sluice_upstream::TlsConnector::new(&settings, &[b"http/1.1"]).map_err(|e| e.to_string())?))
    } else {
        None
    };
    let settings = sluice_upstream::BackendSettings { tls, ..Default::default() };
    let backend = Arc::new(sluice_upstream::Backend::new(host.clone(), addr, 1, settings));
    let conn = backend.checkout().await.map_err(|e| format!("{url}: {e}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = http::Request::new(Body::empty());
    *request.uri_mut() = path.parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let authority = uri.authority().map_or(host.as_str(), |a| a.as_str());
    request.headers_mut().insert(http::header::HOST, HeaderValue::try_from(authority).map_err(|e| e.to_string())?);
    request.headers_mut().insert(http::header::ACCEPT, HeaderValue::from_static("application/json"));
    let response = conn.send(request, true).await.map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: status {}", response.status()));
    }
    let body = http_body_util::Limited::new(response.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(body.to_bytes())
}

/// An algorithm by its JOSE name.
pub fn algorithm(name: &str) -> Option<Algorithm> {
    name.parse().ok()
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
