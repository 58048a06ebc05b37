//! The validated security and traffic-policy settings (issue 7): connection limits, HTTP/2
//! limits, the PROXY protocol and real client addresses on listeners; access control,
//! body size and concurrency limits on sites and routes. `docs/security.md` explains them.

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use sluice_core::cidr::Cidr;

/// A rate: events per second and how many more may come at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Events per second on average.
    pub per_second: f64,
    /// Events allowed at once beyond the rate.
    pub burst: u32,
}

/// Connection limits of a listener.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionLimitsConfig {
    /// Most open connections from one client address (IPv6: per /64).
    pub per_ip: Option<u32>,
    /// New connections per second for the listener (accepting pauses above it).
    pub rate: Option<Rate>,
    /// New connections per second from one client address (closed above it).
    pub rate_per_ip: Option<Rate>,
}

/// HTTP/2 limits of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Limits {
    /// Streams open at once per connection.
    pub max_concurrent_streams: u32,
    /// Streams reset by the client before being served, at once (Rapid Reset).
    pub max_pending_resets: usize,
    /// Streams the server reset because of client errors, per connection (MadeYouReset).
    pub max_local_resets: usize,
    /// Streams the client cancelled after they started, per connection per 10 s (0: off).
    pub max_client_resets: u32,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Self { max_concurrent_streams: 128, max_pending_resets: 20, max_local_resets: 200, max_client_resets: 1000 }
    }
}

/// `proxy-protocol { trusted ...; timeout ... }`: connections start with a PROXY protocol
/// header (v1 or v2) naming the real client.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyProtocolConfig {
    /// Peers allowed to send it; other peers are refused. Empty: any peer.
    pub trusted: Vec<Cidr>,
    /// Time to receive the header.
    pub timeout: Duration,
}

/// Which request header names the client behind trusted proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealIpHeader {
    /// `X-Forwarded-For` (the default).
    XForwardedFor,
    /// RFC 7239 `Forwarded` (`for=`).
    Forwarded,
    /// Another header holding one address (`X-Real-IP`, `CF-Connecting-IP`).
    Other(HeaderName),
}

/// `real-ip { trusted ...; header ... }`: the client address of requests that come
/// through trusted proxies.
#[derive(Debug, Clone, PartialEq)]
pub struct RealIpConfig {
    /// Proxies whose forwarding header is believed.
    pub trusted: Vec<Cidr>,
    /// The header they set.
    pub header: RealIpHeader,
}

/// One `allow`/`deny` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRule {
    /// Allow (true) or deny.
    pub allow: bool,
    /// The blocks it covers.
    pub blocks: Vec<Cidr>,
    /// It covers every address (`all`).
    pub all: bool,
}

/// `basic-auth "file" realm="..."`.
#[derive(Debug, Clone, PartialEq)]
pub struct BasicAuthConfig {
    /// False: `basic-auth #false` (turns the site's off for a route).
    pub enabled: bool,
    /// The password file (`user:hash` lines, bcrypt or argon2 hashes).
    pub file: PathBuf,
    /// The realm shown by browsers.
    pub realm: String,
}

/// Where the JWT is taken from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (or another header holding `Bearer <token>`).
    Bearer(HeaderName),
    /// A cookie's value.
    Cookie(String),
}

/// Keys that verify JWT signatures.
#[derive(Debug, Clone, PartialEq)]
pub enum JwtKey {
    /// A JWKS document in a file (re-read every `refresh`).
    JwksFile {
        /// The file.
        path: PathBuf,
        /// How often it is re-read.
        refresh: Duration,
    },
    /// A JWKS document fetched from a URL every `refresh`.
    JwksUrl {
        /// `http://` or `https://` URL.
        url: String,
        /// How often it is fetched.
        refresh: Duration,
    },
    /// An HMAC secret (HS256, HS384, HS512), from the config or a file.
    Secret(Vec<u8>),
    /// A PEM public key (RSA or EC P-256) in a file.
    PublicKey(PathBuf),
}

/// `jwt { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtConfig {
    /// False: `jwt #false`.
    pub enabled: bool,
    /// Keys.
    pub keys: Vec<JwtKey>,
    /// Accepted algorithms (`RS256`, `ES256`, `HS256`...).
    pub algorithms: Vec<String>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Accepted `aud` values (one must match); empty: not checked.
    pub audience: Vec<String>,
    /// Clock skew allowed for `exp` and `nbf`.
    pub leeway: Duration,
    /// Where the token is.
    pub token: TokenSource,
    /// Claims copied to request headers: claim name, header.
    pub claim_headers: Vec<(String, HeaderName)>,
}

/// `forward-auth "upstream" path="/verify" { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardAuthConfig {
    /// False: `forward-auth #false`.
    pub enabled: bool,
    /// The upstream group of the authentication service.
    pub upstream: String,
    /// The path asked there.
    pub path: String,
    /// Time for the answer.
    pub timeout: Duration,
    /// Client headers sent to it; empty: all of them.
    pub request_headers: Vec<HeaderName>,
    /// Headers of its answer copied into the request sent upstream.
    pub response_headers: Vec<HeaderName>,
}

/// The policy part of a site or route. For a route, `None` fields take the site's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyConfig {
    /// `allow`/`deny` rules in order (a route's rules replace the site's).
    pub access: Option<Vec<AccessRule>>,
    /// HTTP Basic authentication.
    pub basic_auth: Option<BasicAuthConfig>,
    /// JWT validation.
    pub jwt: Option<JwtConfig>,
    /// Authentication by an external service.
    pub forward_auth: Option<ForwardAuthConfig>,
    /// Largest request body (413 above it); `Some(None)` lifts a site's limit on a route.
    pub max_body_size: Option<Option<u64>>,
    /// Most requests in flight at once (503 above it); on a site, shared by its routes.
    pub max_in_flight: Option<Option<u32>>,
}
