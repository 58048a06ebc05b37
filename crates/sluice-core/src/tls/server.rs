//! TLS termination: choosing a site's certificate by SNI, client certificates, session
//! resumption, and reloading certificates without dropping connections.
//!
//! The acceptor reads the ClientHello first ([`tokio_rustls::LazyConfigAcceptor`]) and
//! then picks a whole rustls `ServerConfig` for the name the client asked for. A config per
//! site (rather than one config with a certificate resolver) is what lets each site have its
//! own client-certificate policy. All configs of a listener share one ticket key and one
//! session cache, so resumption works across them (rustls refuses to resume a session under
//! a different SNI name).
//!
//! The current table of configs sits behind a lock that a handshake holds only to clone an
//! `Arc`; [`TlsAcceptor::reload`] builds a new table from the files and swaps it in, so
//! open connections keep the config they were accepted with.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, ServerSessionMemoryCache, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{ProtocolVersion, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use super::certs::{load_ca_bundle, load_certificate, CertificateInfo, LoadedCertificate, TlsFileError};
use crate::server::ProtocolHint;

/// Lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// What to do with a handshake whose server name selects no site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SniFallback {
    /// Answer with the listener's default certificate.
    Default,
    /// Refuse the handshake: the connection is closed before any certificate is sent.
    Refuse,
}

/// Server names a certificate entry answers for, as site host patterns are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniName {
    /// One exact name (lower case).
    Exact(String),
    /// Every name ending in this suffix (`.example.com` for `*.example.com`).
    Suffix(String),
    /// The catch-all site `*`: used as the default certificate.
    Any,
}

/// Client certificate policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// Whether a handshake without a client certificate fails (else it proceeds without one).
    pub required: bool,
    /// PEM bundle of the CAs client certificates must chain to.
    pub ca: PathBuf,
}

/// One certificate with the names it serves (a site, or the listener's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsEntry {
    /// A label for logs (the site's first host, or "default").
    pub label: String,
    /// Names this entry answers for.
    pub names: Vec<SniName>,
    /// PEM certificate chain file.
    pub certificate: PathBuf,
    /// PEM private key file.
    pub key: PathBuf,
    /// Client certificate policy, if any.
    pub client_auth: Option<ClientAuth>,
}

/// Everything a TLS listener is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsSettings {
    /// Lowest protocol version.
    pub min_version: TlsVersion,
    /// Offer `h2` in ALPN (else only `http/1.1`).
    pub http2: bool,
    /// Handshakes without SNI.
    pub without_sni: SniFallback,
    /// Handshakes whose SNI matches no entry.
    pub unknown_sni: SniFallback,
    /// Issue stateless session tickets.
    pub session_tickets: bool,
    /// Sessions kept in the server-side cache (0: no cache).
    pub session_cache: usize,
    /// Certificate entries; [`ServerTlsSettings::default_entry`] says which one is the default.
    pub entries: Vec<TlsEntry>,
    /// Index of the default entry in `entries`.
    pub default_entry: usize,
    /// Time allowed for the whole handshake.
    pub handshake_timeout: Duration,
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client did not finish in time.
    #[error("TLS handshake timed out")]
    Timeout,
    /// The client sent no SNI, or an unknown one, and the listener refuses those.
    #[error("no certificate for server name {0:?}")]
    UnknownName(Option<String>),
    /// The TLS layer failed (bad ClientHello, no common cipher, bad client certificate ...).
    #[error("TLS handshake failed: {0}")]
    Tls(#[from] std::io::Error),
}

/// A verified client certificate.
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    /// Subject distinguished name (`CN=alice, O=Example`).
    pub subject: String,
    /// subjectAltName DNS names, e-mail addresses and URIs, comma-separated.
    pub sans: String,
    /// The CA bundle it was verified against.
    pub ca: Arc<PathBuf>,
}

/// What a completed handshake established; kept in [`crate::ConnectionInfo::tls`].
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// The server name the client sent (SNI).
    pub server_name: Option<Box<str>>,
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The cipher suite's IANA name.
    pub cipher: &'static str,
    /// Whether the session was resumed (abbreviated handshake).
    pub resumed: bool,
    /// The client's verified certificate, if it sent one.
    pub client_certificate: Option<ClientCertificate>,
}

/// A completed TLS handshake.
pub struct Handshaken<IO> {
    /// The encrypted stream.
    pub stream: TlsStream<IO>,
    /// The protocol ALPN chose.
    pub hint: ProtocolHint,
    /// What was negotiated.
    pub info: TlsInfo,
}

struct Entry {
    spec: TlsEntry,
    config: Arc<ServerConfig>,
    client_ca: Option<Arc<PathBuf>>,
    info: CertificateInfo,
}

/// Resumption state shared by the configs of one table: ticket keys and session cache.
#[derive(Clone)]
struct Resumption {
    ticketer: Option<Arc<dyn rustls::server::ProducesTickets>>,
    cache: Arc<dyn rustls::server::StoresServerSessions>,
}

impl Resumption {
    fn new(settings: &ServerTlsSettings) -> Result<Self, EntryError> {
        let ticketer = if settings.session_tickets {
            Some(rustls::crypto::ring::Ticketer::new().map_err(|e| EntryError {
                label: "session tickets".into(),
                error: TlsFileError::BadKey { path: PathBuf::new(), detail: e.to_string() },
            })?)
        } else {
            None
        };
        let cache: Arc<dyn rustls::server::StoresServerSessions> = if settings.session_cache > 0 {
            ServerSessionMemoryCache::new(settings.session_cache)
        } else {
            Arc::new(NoServerSessionStorage {})
        };
        Ok(Self { ticketer, cache })
    }
}

#[derive(Default)]
struct Table {
    entries: Vec<Entry>,
    exact: HashMap<String, usize>,
    /// (suffix, entry), longest suffix first.
    suffixes: Vec<(String, usize)>,
    default: usize,
}

impl Table {
    fn find(&self, name: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(name) {
            return Some(i);
        }
        self.suffixes
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map(|(_, i)| *i)
    }
}

/// Terminates TLS for one listener.
pub struct TlsAcceptor {
    settings: ServerTlsSettings,
    table: RwLock<Arc<Table>>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor").field("entries", &self.settings.entries.len()).finish_non_exhaustive()
    }
}

/// A certificate entry that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{label}: {error}")]
pub struct EntryError {
    /// The entry's label.
    pub label: String,
    /// Why.
    pub error: TlsFileError,
}

impl TlsAcceptor {
    /// Loads every certificate, key and CA bundle; fails on the first unusable file.
    pub fn new(settings: ServerTlsSettings) -> Result<Self, EntryError> {
        let resumption = Resumption::new(&settings)?;
        let mut entries = Vec::with_capacity(settings.entries.len());
        for spec in &settings.entries {
            entries.push(build_entry(&settings, spec, &resumption)?);
        }
        for e in &entries {
            warn_about_validity(&e.spec.label, &e.spec.certificate, &e.info);
        }
        let table = index(&settings, entries);
        Ok(Self { settings, table: RwLock::new(Arc::new(table)) })
    }

    /// Re-reads every certificate, key and CA bundle. Entries whose files are broken keep
    /// their previous configuration; their errors are returned (and logged). New
    /// handshakes use the new table; established connections are not touched.
    ///
    /// New session-ticket keys and an empty session cache come with the reload (as with
    /// nginx): a session made with a replaced certificate, perhaps a compromised one,
    /// cannot be resumed afterwards.
    pub fn reload(&self) -> Vec<EntryError> {
        let old = self.current();
        let mut errors = Vec::new();
        let resumption = match Resumption::new(&self.settings) {
            Ok(r) => r,
            Err(e) => return vec![e],
        };
        let mut entries = Vec::with_capacity(self.settings.entries.len());
        for (i, spec) in self.settings.entries.iter().enumerate() {
            match build_entry(&self.settings, spec, &resumption) {
                Ok(entry) => {
                    warn_about_validity(&spec.label, &spec.certificate, &entry.info);
                    entries.push(entry);
                }
                Err(e) => {
                    tracing::error!(site = %spec.label, error = %e.error, "certificate reload failed; keeping the previous certificate");
                    let previous = &old.entries[i];
                    entries.push(Entry {
                        spec: previous.spec.clone(),
                        config: previous.config.clone(),
                        client_ca: previous.client_ca.clone(),
                        info: previous.info.clone(),
                    });
                    errors.push(e);
                }
            }
        }
        let table = Arc::new(index(&self.settings, entries));
        if let Ok(mut current) = self.table.write() {
            *current = table;
        }
        errors
    }

    /// Time allowed for a whole handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.settings.handshake_timeout
    }

    /// The certificate details of every entry, in configuration order (for inspection).
    pub fn certificates(&self) -> Vec<(String, CertificateInfo)> {
        self.current().entries.iter().map(|e| (e.spec.label.clone(), e.info.clone())).collect()
    }

    fn current(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Performs the handshake on a new connection.
    pub async fn accept<IO>(&self, io: IO) -> Result<Handshaken<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(self.settings.handshake_timeout, self.handshake(io)).await {
            Ok(result) => result,
            Err(_) => Err(HandshakeError::Timeout),
        }
    }

    async fn handshake<IO>(&self, io: IO) -> Result<Handshaken<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        let table = self.current();
        let hello = start.client_hello();
        let server_name = hello.server_name().map(|n| n.to_ascii_lowercase());
        let chosen = match &server_name {
            None => match self.settings.without_sni {
                SniFallback::Default => Some(table.default),
                SniFallback::Refuse => None,
            },
            Some(name) => table.find(name).or(match self.settings.unknown_sni {
                SniFallback::Default => Some(table.default),
                SniFallback::Refuse => None,
            }),
        };
        let Some(entry) = chosen.and_then(|i| table.entries.get(i)) else {
            // Dropping the stream closes the connection; rustls has not answered yet, so the
            // client sees a reset handshake.
            return Err(HandshakeError::UnknownName(server_name));
        };
        let stream = start.into_stream(entry.config.clone()).await?;
        let (_, conn) = stream.get_ref();
        let hint = match conn.alpn_protocol() {
            Some(b"h2") => ProtocolHint::Http2,
            _ => ProtocolHint::Http1,
        };
        let client_certificate = match (conn.peer_certificates(), &entry.client_ca) {
            (Some([leaf, ..]), Some(ca)) => CertificateInfo::parse(leaf).ok().map(|info| ClientCertificate {
                subject: info.subject,
                sans: client_sans(leaf),
                ca: ca.clone(),
            }),
            _ => None,
        };
        let info = TlsInfo {
            server_name: server_name.map(String::into_boxed_str),
            version: match conn.protocol_version() {
                Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "unknown",
            },
            cipher: conn.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).unwrap_or("unknown"),
            resumed: matches!(conn.handshake_kind(), Some(rustls::HandshakeKind::Resumed)),
            client_certificate,
        };
        Ok(Handshaken { stream, hint, info })
    }
}

fn build_entry(settings: &ServerTlsSettings, spec: &TlsEntry, resumption: &Resumption) -> Result<Entry, EntryError> {
    let err = |error| EntryError { label: spec.label.clone(), error };
    let LoadedCertificate { key, info } = load_certificate(&spec.certificate, &spec.key).map_err(err)?;
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(super::provider())
        .with_protocol_versions(versions)
        .map_err(|e| err(TlsFileError::BadKey { path: spec.key.clone(), detail: e.to_string() }))?;
    let (builder, client_ca) = match &spec.client_auth {
        None => (builder.with_no_client_auth(), None),
        Some(auth) => {
            let roots = load_ca_bundle(&auth.ca).map_err(err)?;
            let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), super::provider());
            if !auth.required {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|e| {
                err(TlsFileError::BadCertificate { path: auth.ca.clone(), index: 1, detail: e.to_string() })
            })?;
            (builder.with_client_cert_verifier(verifier), Some(Arc::new(auth.ca.clone())))
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(Fixed(key)));
    config.alpn_protocols =
        if settings.http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    config.session_storage = resumption.cache.clone();
    if let Some(ticketer) = &resumption.ticketer {
        config.ticketer = ticketer.clone();
    }
    // No 0-RTT: early data can be replayed, and proxied requests are not all idempotent.
    config.max_early_data_size = 0;
    Ok(Entry { spec: spec.clone(), config: Arc::new(config), client_ca, info })
}

fn index(settings: &ServerTlsSettings, entries: Vec<Entry>) -> Table {
    let mut exact = HashMap::new();
    let mut suffixes = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        for name in &e.spec.names {
            match name {
                SniName::Exact(n) => {
                    exact.entry(n.clone()).or_insert(i);
                }
                SniName::Suffix(s) => suffixes.push((s.clone(), i)),
                SniName::Any => {}
            }
        }
    }
    suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
    Table { entries, exact, suffixes, default: settings.default_entry }
}

/// The subjectAltName entries of a client certificate worth forwarding, comma-separated
/// with their kinds (`DNS:a.example, email:alice@example.com, URI:spiffe://...`).
fn client_sans(der: &[u8]) -> String {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return String::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return String::new();
    };
    let mut out = String::new();
    for name in &san.value.general_names {
        let (kind, value) = match name {
            GeneralName::DNSName(v) => ("DNS", *v),
            GeneralName::RFC822Name(v) => ("email", *v),
            GeneralName::URI(v) => ("URI", *v),
            _ => continue,
        };
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(kind);
        out.push(':');
        out.push_str(value);
    }
    out
}

fn warn_about_validity(label: &str, path: &std::path::Path, info: &CertificateInfo) {
    if info.is_expired() {
        tracing::warn!(
            site = %label,
            certificate = %path.display(),
            not_after = %info.not_after_text(),
            "CERTIFICATE EXPIRED: clients will refuse this certificate"
        );
    } else if info.is_not_yet_valid() {
        tracing::warn!(site = %label, certificate = %path.display(), "certificate is not valid yet");
    }
}

/// Always answers with one certificate (the entry's); SNI was resolved before.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
