//! The validated internal configuration: plain data the engine is built from.
//!
//! Nothing here knows about KDL. Every value has already been checked (addresses parse,
//! names resolve, limits are in range), so the binary can build the engine without
//! re-validating. Defaults live in the `Default` impls and are documented in
//! `docs/config.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};

mod security;
pub use security::*;

/// A whole, validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Process-wide settings (`server { ... }`).
    pub server: ServerSettings,
    /// Listening sockets, in file order.
    pub listeners: Vec<ListenerConfig>,
    /// Upstream groups, in file order.
    pub upstreams: Vec<UpstreamConfig>,
    /// Sites (virtual hosts), in file order.
    pub sites: Vec<SiteConfig>,
    /// Things that are allowed but probably wrong (an expired certificate, TLS
    /// verification turned off), as `file:line:col: message` lines.
    pub warnings: Vec<String>,
}

/// Process-wide settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Worker threads of the runtime; `None` means one per available core.
    pub worker_threads: Option<usize>,
    /// How worker threads are organised.
    pub runtime: RuntimeKind,
    /// How long in-flight requests may run after SIGTERM/SIGINT before the process exits.
    pub shutdown_grace: Duration,
    /// Where and how the access log is written.
    pub access_log: AccessLogConfig,
    /// The name server upstream host names are resolved with; `None`: the system's.
    pub dns_server: Option<SocketAddr>,
    /// The admin API's listener; `None`: no admin API.
    pub admin: Option<AdminConfig>,
    /// File the process id is written to once serving (removed at exit).
    pub pid_file: Option<PathBuf>,
    /// Span export for distributed tracing; `None`: spans are not exported (the W3C
    /// `traceparent` is still propagated and the access log still has the trace id).
    pub tracing: Option<TracingSettings>,
    /// User to run as once the listeners are bound (the process must start as root).
    pub user: Option<String>,
    /// Group to run as (default: the user's primary group).
    pub group: Option<String>,
    /// The Redis server of cluster-wide rate limits.
    pub redis: Option<RedisConfig>,
    /// The HTTP cache's storage (`server { cache { ... } }`); a default one is made when a
    /// site or route caches without it.
    pub cache: Option<CacheStoreConfig>,
}

/// The HTTP cache's storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStoreConfig {
    /// Memory tier budget in bytes.
    pub memory: u64,
    /// Largest object stored; bigger responses bypass the cache.
    pub max_object: u64,
    /// Disk tier: directory and byte budget.
    pub disk: Option<(std::path::PathBuf, u64)>,
}

impl Default for CacheStoreConfig {
    fn default() -> Self {
        Self { memory: 64 << 20, max_object: 8 << 20, disk: None }
    }
}

/// A rate limit (`rate-limit { ... }`).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// False for `rate-limit #false`.
    pub enabled: bool,
    /// Average requests per second.
    pub per_second: f64,
    /// Requests allowed at once beyond the rate.
    pub burst: u32,
    /// Key parts: `client-ip`, `route`, `header:NAME`, `cookie:NAME`.
    pub key: Vec<String>,
    /// Excess requests wait up to this long instead of being refused (zero: refused).
    pub delay: std::time::Duration,
    /// Keys remembered at most.
    pub max_keys: usize,
    /// A refused request's answer is held up to this long (zero: sent at once), which
    /// slows a client that retries at once on the same connection.
    pub tarpit: std::time::Duration,
    /// Where the counts live: this process, or Redis (shared by every instance).
    pub store: RateLimitStore,
    /// What a Redis-backed limit does while Redis cannot be reached.
    pub on_redis_error: RedisFallback,
    /// The limit's name in Redis (instances sharing a limit use the same name); `None`:
    /// the site's host and the route's path.
    pub name: Option<String>,
}

/// Where a rate limit keeps its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateLimitStore {
    /// In this process.
    #[default]
    Local,
    /// In Redis (`server { redis ... }`), shared by every Sluice instance using it.
    Redis,
}

/// A Redis-backed limit's behaviour while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisFallback {
    /// Let requests through (fail open).
    #[default]
    Allow,
    /// Refuse them with 429 (fail closed).
    Deny,
    /// Apply the limit in this process only until Redis is back.
    Local,
}

/// `server { redis "host:port" ... }`: the Redis server cluster-wide limits use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `host:port`.
    pub address: String,
    /// Time for an answer (then the limit's `on-redis-error` applies).
    pub timeout: Duration,
    /// Prefix of every key.
    pub prefix: String,
    /// `AUTH` user name (Redis 6 ACLs), with `password`.
    pub username: Option<String>,
    /// `AUTH` password.
    pub password: Option<String>,
    /// `SELECT` database.
    pub database: u32,
}

/// A site's or route's caching rules (`cache { ... }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRuleConfig {
    /// False for `cache #false` (a route turning its site's cache off).
    pub enabled: bool,
    /// Lifetime of responses without explicit freshness, by status.
    pub default_ttl: Vec<(u16, std::time::Duration)>,
    /// Lifetime that replaces the origin's, by status.
    pub override_ttl: Vec<(u16, std::time::Duration)>,
    /// Leave the query out of the key.
    pub ignore_query: bool,
    /// Sort the query parameters in the key.
    pub sort_query: bool,
    /// Query parameters left out of the key.
    pub ignore_params: Vec<String>,
    /// Request headers added to the key (lower-case).
    pub key_headers: Vec<String>,
    /// Cookies added to the key.
    pub key_cookies: Vec<String>,
    /// Store responses that set cookies.
    pub store_set_cookie: bool,
    /// Store `private` responses and answers to requests with `Authorization`.
    pub store_private: bool,
    /// How long a request waits for another fetching the same object.
    pub lock_timeout: std::time::Duration,
    /// Upper bound of heuristic freshness.
    pub heuristic_max: std::time::Duration,
    /// Response headers whose values tag the entry (for purges), lower-case.
    pub tag_headers: Vec<String>,
    /// Targeted cache-control fields (RFC 9213) this cache obeys, first present wins over
    /// `Cache-Control`; lower-case. Default: `cdn-cache-control`.
    pub targeted_cache_control: Vec<String>,
}

/// The admin API (`server { admin "127.0.0.1:9901" token="..." }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address to listen on.
    pub address: SocketAddr,
    /// Bearer token required on every request, if set.
    pub token: Option<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            worker_threads: None,
            runtime: RuntimeKind::MultiThread,
            shutdown_grace: Duration::from_secs(30),
            access_log: AccessLogConfig::default(),
            dns_server: None,
            admin: None,
            pid_file: None,
            tracing: None,
            user: None,
            group: None,
            redis: None,
            cache: None,
        }
    }
}

/// Span export over OTLP (`server { tracing { otlp "http://..."; ... } }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingSettings {
    /// The collector's OTLP/HTTP traces URL, like `http://127.0.0.1:4318/v1/traces`
    /// (checked: plain `http://`, a host, a port and a path).
    pub endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Most spans sent in one export request.
    pub batch_size: usize,
    /// Longest time a finished span waits before it is sent.
    pub flush_interval: Duration,
    /// Spans waiting to be sent; more are dropped (and counted) rather than slowing requests.
    pub queue: usize,
}

impl TracingSettings {
    /// Settings for `endpoint` with every other value at its default.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            service_name: "sluice".to_owned(),
            batch_size: 512,
            flush_interval: Duration::from_secs(1),
            queue: 8192,
        }
    }
}

/// How worker threads are organised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// One work-stealing runtime: any thread runs any connection.
    MultiThread,
    /// One single-threaded runtime per worker thread, each accepting on its own
    /// `SO_REUSEPORT` socket; a connection stays on the thread that accepted it.
    PerCore,
}

/// Access log destination and format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// Destination.
    pub target: LogTarget,
    /// Line format.
    pub format: LogFormat,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self { target: LogTarget::Stdout, format: LogFormat::Json }
    }
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// No access log.
    Off,
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Appended to a file (created if missing).
    File(PathBuf),
}

/// Access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// nginx-style "combined"-like text line with upstream and timing fields appended.
    Text,
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Name sites use to refer to this listener (defaults to the address as written).
    pub name: String,
    /// Socket address to bind.
    pub address: SocketAddr,
    /// Maximum simultaneously open client connections; accepting pauses at the limit.
    pub max_connections: usize,
    /// Maximum size of a request head (request line + headers) in bytes; larger gets 431.
    pub max_header_size: usize,
    /// Time allowed to receive a complete request head once its first byte arrived.
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection is kept open between requests.
    pub keepalive_timeout: Duration,
    /// Whether HTTP/2 with prior knowledge (h2c) is accepted beside HTTP/1.1 (plain text only).
    pub h2c: bool,
    /// TLS termination; `None` serves plain text.
    pub tls: Option<ListenerTls>,
    /// Most header fields in an HTTP/1 request (431 above it).
    pub max_headers: usize,
    /// Forward header names with an underscore (dropped by default).
    pub underscores_in_headers: bool,
    /// What to do with `%2F`, `%5C` and `\` in request paths.
    pub escaped_slashes: EscapedSlashes,
    /// Match route paths without regard to ASCII case (for origins that do the same).
    pub case_insensitive_paths: bool,
    /// Longest request target (path and query) in bytes (414 above it).
    pub max_uri_length: usize,
    /// Longest a write to the client may stay blocked (slow readers are cut off).
    pub send_timeout: Duration,
    /// Longest pause while receiving a request body (slow senders get 408).
    pub body_read_timeout: Duration,
    /// Connection limits per client address and connection rates.
    pub connections: ConnectionLimitsConfig,
    /// HTTP/2 limits.
    pub http2: Http2Limits,
    /// Accept the PROXY protocol (v1 and v2) from trusted load balancers.
    pub proxy_protocol: Option<ProxyProtocolConfig>,
    /// Client addresses from a forwarding header set by trusted proxies.
    pub real_ip: Option<RealIpConfig>,
}

/// What a listener does with escaped slashes and backslashes in paths (see
/// `sluice_filters::normalize::EscapedSlashes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// 400.
    #[default]
    Reject,
    /// Decoded to `/` before routing.
    Decode,
    /// Forwarded as sent.
    Keep,
}

impl ListenerConfig {
    /// A listener with default limits, named after its address.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            name: address.to_string(),
            address,
            max_connections: 10_000,
            max_header_size: 64 * 1024,
            header_read_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(75),
            h2c: true,
            tls: None,
            max_headers: 100,
            underscores_in_headers: false,
            escaped_slashes: EscapedSlashes::Reject,
            case_insensitive_paths: false,
            max_uri_length: 8 * 1024,
            send_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(60),
            connections: ConnectionLimitsConfig::default(),
            http2: Http2Limits::default(),
            proxy_protocol: None,
            real_ip: None,
        }
    }
}

/// TLS settings of a listener (`listener ... { tls { ... } }`).
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    /// The default certificate: for clients without SNI, and for names no site claims.
    /// When absent, the certificate of the listener's `*` site, else of its first site
    /// with a certificate, is the default.
    pub certificate: Option<CertificatePair>,
    /// Lowest accepted protocol version.
    pub min_version: TlsVersion,
    /// Offer HTTP/2 by ALPN (`h2`), beside `http/1.1`.
    pub http2: bool,
    /// What a handshake without SNI gets.
    pub without_sni: SniFallback,
    /// What a handshake naming no configured site gets.
    pub unknown_sni: SniFallback,
    /// Issue stateless session tickets (resumption without server state).
    pub session_tickets: bool,
    /// Size of the server-side session cache (0 disables it).
    pub session_cache: usize,
    /// Time allowed for the whole handshake.
    pub handshake_timeout: Duration,
    /// Client certificate policy for every site on the listener (a site may set its own).
    pub client_auth: Option<ClientAuthConfig>,
}

impl Default for ListenerTls {
    fn default() -> Self {
        Self {
            certificate: None,
            min_version: TlsVersion::Tls12,
            http2: true,
            without_sni: SniFallback::Default,
            unknown_sni: SniFallback::Default,
            session_tickets: true,
            session_cache: 10_000,
            handshake_timeout: Duration::from_secs(10),
            client_auth: None,
        }
    }
}

/// Lowest TLS version a listener accepts (1.0 and 1.1 are never offered), and what a TLS
/// listener does with a handshake it has no site certificate for: the server's own types.
pub use sluice_core::tls::server::{SniFallback, TlsVersion};

/// A certificate chain file and its private key file (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePair {
    /// Certificate chain, leaf first.
    pub certificate: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA or Ed25519).
    pub key: PathBuf,
}

/// Client certificate (mTLS) policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthConfig {
    /// Refuse handshakes without a valid client certificate (else a certificate is optional,
    /// but one that is sent must be valid).
    pub required: bool,
    /// CA bundle client certificates must chain to (PEM).
    pub ca: PathBuf,
    /// Request header that carries the verified subject to the origin (always overwritten).
    pub subject_header: Option<HeaderName>,
    /// Request header that carries the verified subjectAltNames to the origin (always overwritten).
    pub san_header: Option<HeaderName>,
}

/// Redirecting plain-text requests to HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpsRedirect {
    /// 301, 302, 307 or 308.
    pub status: StatusCode,
    /// Port in the new URL; `None` leaves it out (443).
    pub port: Option<u16>,
}

/// A named group of origin servers.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Group name, referenced by `proxy` route actions.
    pub name: String,
    /// Servers in file order (at least one).
    pub servers: Vec<UpstreamServer>,
    /// Protocol spoken to the servers.
    pub protocol: UpstreamProtocol,
    /// Keep-alive connection pool settings.
    pub pool: PoolConfig,
    /// Timeouts towards the servers.
    pub timeouts: UpstreamTimeouts,
    /// TLS towards the servers; `None` speaks plain text.
    pub tls: Option<UpstreamTls>,
    /// How a server is chosen for each request.
    pub balance: Balance,
    /// Passive health checking.
    pub outlier: OutlierDetection,
    /// What happens when no server is available.
    pub when_all_down: WhenAllDown,
    /// Active health checks; `None` runs none.
    pub health_check: Option<HealthCheck>,
    /// Circuit breakers.
    pub limits: UpstreamLimits,
    /// A server that comes back ramps up to its full share over this long (zero: at once).
    pub slow_start: Duration,
    /// Retry policy; `None`: one retry after a failed connect only.
    pub retry: Option<RetryConfig>,
    /// Sticky sessions: the name of the cookie that pins a client to a server.
    pub sticky_cookie: Option<String>,
    /// Connections to the servers start with a PROXY protocol header naming the client.
    pub proxy_protocol: Option<ProxyProtocolVersion>,
    /// Largest response head, and largest trailer block, accepted from the servers.
    pub max_header_size: u64,
}

impl ProxyAction {
    /// The default `grpc-timeout-max`.
    pub const GRPC_TIMEOUT_MAX: std::time::Duration = std::time::Duration::from_secs(300);

    /// Proxies to `upstream` with every other setting at its default.
    pub fn to(upstream: impl Into<String>) -> Self {
        Self {
            upstream: upstream.into(),
            strip_prefix: false,
            rewrite_prefix: None,
            host: None,
            retry_non_idempotent: false,
            streaming: false,
            grpc_timeout_max: Self::GRPC_TIMEOUT_MAX,
        }
    }
}

/// Which PROXY protocol version to send to an upstream group (`proxy-protocol "v2"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocolVersion {
    /// The text form: addresses only.
    V1,
    /// The binary form, with TLVs (ALPN, authority, TLS details).
    V2,
}

/// How failed attempts are retried (`retry ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Retry when the connection broke or the per-try timeout passed before a response.
    pub reset: bool,
    /// Retry responses with these statuses.
    pub statuses: Vec<u16>,
    /// Also retry non-idempotent methods (requests without a body only).
    pub non_idempotent: bool,
    /// Time allowed for one attempt's response head; `None`: `timeouts first-byte`.
    pub per_try_timeout: Option<Duration>,
    /// No retry starts this long after the first attempt; `None`: none.
    pub deadline: Option<Duration>,
    /// First backoff (doubles each retry, full jitter).
    pub backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Retries at most this percentage of requests (0: no budget).
    pub budget_percent: u32,
    /// ... but always at least this many retries per second.
    pub min_retries_per_second: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 1,
            reset: true,
            statuses: Vec::new(),
            non_idempotent: false,
            per_try_timeout: None,
            deadline: None,
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(250),
            budget_percent: 20,
            min_retries_per_second: 3,
        }
    }
}

/// Circuit-breaker limits of an upstream group (`limits ...`); `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamLimits {
    /// Open connections to the group's servers.
    pub max_connections: Option<usize>,
    /// Requests waiting for a connection at `max_connections`.
    pub max_pending: usize,
    /// Requests in flight to the group.
    pub max_in_flight: Option<usize>,
}

impl Default for UpstreamLimits {
    fn default() -> Self {
        Self { max_connections: None, max_pending: 1024, max_in_flight: None }
    }
}

/// Active health checks of an upstream group (`health-check { ... }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What a check does.
    pub probe: HealthProbe,
    /// Time between checks of one server.
    pub interval: Duration,
    /// Time allowed for one check.
    pub timeout: Duration,
    /// Random extra delay, up to this, added to each interval.
    pub jitter: Duration,
    /// Passes in a row that bring an unhealthy server back.
    pub healthy_threshold: u32,
    /// Failures in a row that take a healthy server out.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            probe: HealthProbe::Tcp,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            jitter: Duration::from_millis(500),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// What an active health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthProbe {
    /// Connect (and TLS handshake for TLS groups).
    Tcp,
    /// `GET path`, expecting a status in `status_min..=status_max` and optionally a body
    /// substring.
    Http {
        /// Request path.
        path: String,
        /// Lowest accepted status.
        status_min: u16,
        /// Highest accepted status.
        status_max: u16,
        /// Substring the body must contain.
        body: Option<String>,
        /// Host header (default: the server's address).
        host: Option<String>,
    },
}

/// Passive health checking of an upstream group (`outlier-detection ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Eject after this many consecutive connect failures, resets or timeouts (0: never).
    pub consecutive_failures: u32,
    /// Eject after this many consecutive 5xx responses (0: never).
    pub consecutive_5xx: u32,
    /// Eject when more than this percentage of a window's requests failed (0: never).
    pub failure_rate_percent: u32,
    /// The failure-rate window.
    pub window: Duration,
    /// Fewest requests in a window before its failure rate counts.
    pub min_requests: u32,
    /// First ejection time; repeated ejections last longer (n × base).
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// Most of the group ejected at once, in percent (one server always stays).
    pub max_ejected_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            consecutive_5xx: 0,
            failure_rate_percent: 0,
            window: Duration::from_secs(10),
            min_requests: 20,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// What a group does when none of its servers is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenAllDown {
    /// Use every server as if healthy.
    #[default]
    FailOpen,
    /// Answer 503.
    Refuse,
}

/// Load balancing of an upstream group (`balance "..." hash="..."`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// The algorithm.
    pub algorithm: BalanceAlgorithm,
    /// The affinity key of the consistent-hashing algorithms (client IP by default).
    pub hash: HashKey,
}

impl Default for Balance {
    fn default() -> Self {
        Self { algorithm: BalanceAlgorithm::WeightedRoundRobin, hash: HashKey::ClientIp }
    }
}

/// Load-balancing algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceAlgorithm {
    /// `round-robin`: each server in turn, weights ignored.
    RoundRobin,
    /// `weighted-round-robin`: nginx's smooth weighted round-robin (the default).
    WeightedRoundRobin,
    /// `random`: weighted random.
    Random,
    /// `least-requests`: fewest outstanding requests per weight, of two random servers.
    LeastRequests,
    /// `peak-ewma`: lowest latency × load, of two random servers.
    PeakEwma,
    /// `ketama`: consistent hashing on a ring.
    Ketama,
    /// `maglev`: consistent hashing with a Maglev table.
    Maglev,
}

/// What a consistent-hashing algorithm hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// The request path (without the query).
    Path,
    /// A query parameter's value.
    Query(String),
}

/// TLS towards an upstream group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// SNI and verification name; `None` uses the host part of each server's address.
    pub server_name: Option<String>,
    /// CA bundle to verify the servers with; `None` uses the system's trusted roots.
    pub ca: Option<PathBuf>,
    /// Verify the servers' certificates (turning this off is reported as a warning).
    pub verify: bool,
    /// Client certificate presented to the servers.
    pub client_certificate: Option<CertificatePair>,
}

impl UpstreamConfig {
    /// A group with default settings.
    pub fn new(name: impl Into<String>, servers: Vec<UpstreamServer>) -> Self {
        Self {
            name: name.into(),
            servers,
            protocol: UpstreamProtocol::Http1,
            pool: PoolConfig::default(),
            timeouts: UpstreamTimeouts::default(),
            tls: None,
            balance: Balance::default(),
            outlier: OutlierDetection::default(),
            when_all_down: WhenAllDown::default(),
            health_check: None,
            limits: UpstreamLimits::default(),
            slow_start: Duration::ZERO,
            retry: None,
            sticky_cookie: None,
            proxy_protocol: None,
            max_header_size: 64 * 1024,
        }
    }
}

/// One origin server of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    /// `host:port` as written (host may be a name, resolved at startup).
    pub address: String,
    /// Relative weight (>= 1).
    pub weight: u32,
    /// `address` is an SRV name (`_service._proto.name`): the servers, ports and weights
    /// come from its SRV records.
    pub srv: bool,
}

/// Protocol spoken to an upstream group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (multiplexed).
    H2c,
    /// HTTP/2 over TLS, chosen by ALPN (multiplexed).
    H2,
}

/// Keep-alive pool settings of an upstream group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Maximum idle connections kept per server.
    pub max_idle_per_server: usize,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self { max_idle_per_server: 128, idle_timeout: Duration::from_secs(60) }
    }
}

/// Timeouts towards an upstream group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// TCP connect.
    pub connect: Duration,
    /// From the request being sent until the response head arrives.
    pub first_byte: Duration,
    /// Longest gap between two reads of the response body.
    pub read_idle: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            read_idle: Duration::from_secs(60),
        }
    }
}

/// A virtual host: requests whose Host matches one of `hosts` on one of `listeners`.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    /// Host patterns (at least one).
    pub hosts: Vec<HostPattern>,
    /// Names of the listeners serving this site; empty means all listeners.
    pub listeners: Vec<String>,
    /// Request header edits applied to every request of the site (before the route's).
    pub request_headers: HeaderEdits,
    /// Response header edits applied to every response of the site (after the route's).
    pub response_headers: HeaderEdits,
    /// Routes; the longest matching path wins.
    pub routes: Vec<RouteConfig>,
    /// The site's certificate on TLS listeners.
    pub certificate: Option<CertificatePair>,
    /// Client certificate policy (overrides the listener's).
    pub client_auth: Option<ClientAuthConfig>,
    /// Redirect plain-text requests to HTTPS.
    pub https_redirect: Option<HttpsRedirect>,
    /// Response compression for the site's routes (a route's own `compress` wins);
    /// `None`: off.
    pub compress: Option<CompressConfig>,
    /// HTTP caching rules (the route's replace its site's).
    pub cache: Option<CacheRuleConfig>,
    /// Rate limit (the route's replaces its site's).
    pub rate_limit: Option<RateLimitConfig>,
    /// Access control, body size and concurrency limits for the site's routes.
    pub policy: PolicyConfig,
}

/// How a site matches the request's host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exact name, lower-cased, without port.
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (stored as `.example.com`).
    Wildcard(String),
    /// `*`: the default site of its listeners.
    Any,
}

/// Ordered header edits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderEdits {
    /// Edits applied in order.
    pub edits: Vec<HeaderEdit>,
}

impl HeaderEdits {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }
}

/// One header edit.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderEdit {
    /// Replace every value of the header with this one.
    Set(HeaderName, HeaderValue),
    /// Append a value, keeping existing ones.
    Add(HeaderName, HeaderValue),
    /// Remove the header.
    Remove(HeaderName),
}

/// One route of a site.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Path match.
    pub path: PathMatch,
    /// Methods this route answers; empty means any method.
    pub methods: Vec<Method>,
    /// What to do with a matching request.
    pub action: RouteAction,
    /// Request header edits for this route (after the site's).
    pub request_headers: HeaderEdits,
    /// Response header edits for this route (before the site's).
    pub response_headers: HeaderEdits,
    /// Response compression for this route, replacing the site's (`enabled: false` turns
    /// it off); `None`: the site's.
    pub compress: Option<CompressConfig>,
    /// HTTP caching rules (the route's replace its site's).
    pub cache: Option<CacheRuleConfig>,
    /// Rate limit (the route's replaces its site's).
    pub rate_limit: Option<RateLimitConfig>,
    /// Access control, body size and concurrency limits (`None` fields: the site's).
    pub policy: PolicyConfig,
}

/// On-the-fly response compression (`compress { ... }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressConfig {
    /// False for `compress #false`: no compression (a route turning its site's off).
    pub enabled: bool,
    /// Codings offered, in the server's order of preference (ties between codings a
    /// client accepts equally go to the first).
    pub codings: Vec<ContentCoding>,
    /// gzip level, 1 to 9.
    pub gzip_level: u32,
    /// brotli quality, 0 to 11.
    pub brotli_level: u32,
    /// zstd level, 1 to 19 (higher levels need windows over the 8 MiB RFC 9659 allows).
    pub zstd_level: u32,
    /// Bodies whose `Content-Length` is below this are not compressed.
    pub min_size: u64,
    /// Media types compressed: `text/html` (exact) or `text/*` (any subtype), lower-cased.
    pub types: Vec<String>,
    /// Decode a gzip, brotli or zstd response for a client that does not accept its coding.
    pub decompress: bool,
}

impl CompressConfig {
    /// Types compressed by default (the same list as `sluice_filters::compress::DEFAULT_TYPES`).
    pub const DEFAULT_TYPES: &'static [&'static str] = &[
        "text/html",
        "text/css",
        "text/plain",
        "text/xml",
        "text/javascript",
        "application/javascript",
        "application/json",
        "application/xml",
        "application/wasm",
        "image/svg+xml",
        "application/manifest+json",
        "font/ttf",
        "font/otf",
    ];

    /// `compress #false`.
    pub fn disabled() -> Self {
        Self { enabled: false, ..Self::default() }
    }
}

impl Default for CompressConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            codings: vec![ContentCoding::Zstd, ContentCoding::Brotli, ContentCoding::Gzip],
            gzip_level: 5,
            brotli_level: 4,
            zstd_level: 3,
            min_size: 256,
            types: Self::DEFAULT_TYPES.iter().map(|t| (*t).to_owned()).collect(),
            decompress: false,
        }
    }
}

/// A content coding of `compress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCoding {
    /// `"gzip"`.
    Gzip,
    /// `"br"` (brotli).
    Brotli,
    /// `"zstd"` (Zstandard).
    Zstd,
}

/// Path matching rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path equals this string.
    Exact(String),
    /// Segment-aware prefix: `/api` matches `/api` and `/api/...` but not `/apix`;
    /// a prefix ending in `/` matches everything below it.
    Prefix(String),
}

/// What a route does.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    /// Forward to an upstream group.
    Proxy(ProxyAction),
    /// Answer directly.
    Respond {
        /// Status code.
        status: StatusCode,
        /// Body (may be empty).
        body: Bytes,
        /// Extra response headers.
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// Redirect the client.
    Redirect {
        /// A 3xx status (301, 302, 303, 307, 308).
        status: StatusCode,
        /// Location template; `{scheme}`, `{host}`, `{path}`, `{query}` and `{uri}` are substituted.
        location: String,
    },
    /// Serve files from a directory.
    Files(FilesAction),
}

/// Options of a `files` route action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesAction {
    /// The directory served (resolved from the config file's directory; checked to exist).
    pub root: std::path::PathBuf,
    /// Remove the route's prefix from the path before looking it up (nginx `alias`).
    pub strip_prefix: bool,
    /// Index files of a directory, tried in order.
    pub index: Vec<String>,
    /// `try-files` candidates (`$uri` is the request path), the last one a fallback path
    /// or `=CODE`; empty: the path itself.
    pub try_files: Vec<String>,
    /// List directories without an index file.
    pub listing: bool,
    /// Serve `.br`, `.zst` and `.gz` siblings to clients that accept them.
    pub precompressed: bool,
    /// Follow symlinks that lead outside the root.
    pub follow_symlinks: bool,
}

/// Forwarding options of a `proxy` route action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAction {
    /// Name of the upstream group (validated to exist).
    pub upstream: String,
    /// Remove the route's matched prefix from the path before forwarding.
    pub strip_prefix: bool,
    /// Replace the route's matched prefix with this string before forwarding.
    pub rewrite_prefix: Option<String>,
    /// Host header sent upstream instead of the client's.
    pub host: Option<String>,
    /// This route's requests with non-idempotent methods (and no body) may be retried under
    /// the upstream's `retry` policy.
    pub retry_non_idempotent: bool,
    /// Long-lived streams (gRPC streaming, server-sent events): the upstream group's
    /// `first-byte` and `read-idle` timeouts do not apply (the client ends the call).
    pub streaming: bool,
    /// A gRPC request's `grpc-timeout` replaces the group's `first-byte` and `read-idle`
    /// timeouts, up to this long.
    pub grpc_timeout_max: std::time::Duration,
}
