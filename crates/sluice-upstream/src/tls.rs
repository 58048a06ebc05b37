//! TLS towards origins: one rustls client config per upstream group (so every connection
//! of the group shares its session cache and resumes), SNI per server, ALPN for the
//! group's protocol, and the stream type pooled connections run on.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sluice_core::tls::certs::{load_ca_bundle, load_certificate, system_roots};
use sluice_error::{Error, ErrorKind, Result};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How an upstream group speaks TLS.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTlsSettings {
    /// SNI and verification name for every server; `None` uses each server's host.
    pub server_name: Option<String>,
    /// CA bundle; `None` trusts the system's roots.
    pub ca: Option<PathBuf>,
    /// Verify the server's certificate chain and name.
    pub verify: bool,
    /// Client certificate chain and key files.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
}

/// A group's TLS client: config (with its session cache) and the SNI override. The config
/// can be rebuilt from its files ([`TlsConnector::reload`], on SIGHUP): new connections use
/// the new one, pooled connections carry on.
pub struct TlsConnector {
    configs: RwLock<Arc<Configs>>,
    settings: UpstreamTlsSettings,
    alpn: Vec<Vec<u8>>,
    server_name: Option<ServerName<'static>>,
}

struct Configs {
    main: tokio_rustls::TlsConnector,
    /// The same config offering only `http/1.1` (for upgrades on an HTTP/2 group);
    /// `None` when the main one already does.
    http1: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Builds the client config; `alpn` lists the protocols to offer, in preference order.
    pub fn new(settings: &UpstreamTlsSettings, alpn: &[&[u8]]) -> Result<Self> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let configs = build_configs(settings, &alpn)?;
        let server_name = match &settings.server_name {
            Some(n) => Some(server_name(n)?),
            None => None,
        };
        Ok(Self { configs: RwLock::new(Arc::new(configs)), settings: settings.clone(), alpn, server_name })
    }

    /// Re-reads the CA bundle and client certificate. On error the current config stays.
    pub fn reload(&self) -> Result<()> {
        let configs = Arc::new(build_configs(&self.settings, &self.alpn)?);
        if let Ok(mut current) = self.configs.write() {
            *current = configs;
        }
        Ok(())
    }

    fn current(&self) -> Arc<Configs> {
        match self.configs.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The name to send as SNI and verify for a server written as `host:port`.
    pub fn name_for(&self, address: &str) -> Result<ServerName<'static>> {
        if let Some(n) = &self.server_name {
            return Ok(n.clone());
        }
        let host = match address.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => address,
        };
        server_name(host)
    }

    /// Runs the handshake on a connected socket.
    pub(crate) async fn connect(&self, name: ServerName<'static>, tcp: TcpStream, http1: bool) -> Result<Stream> {
        let addr = tcp.peer_addr().ok();
        let describe = || match addr {
            Some(a) => format!("TLS handshake with {a} ({})", name.to_str()),
            None => format!("TLS handshake with {}", name.to_str()),
        };
        let configs = self.current();
        let connector = match (&configs.http1, http1) {
            (Some(h1), true) => h1,
            _ => &configs.main,
        };
        match connector.connect(name.clone(), tcp).await {
            Ok(tls) => Ok(Stream::Tls(Box::new(tls))),
            Err(e) => Err(Error::because(ErrorKind::UpstreamTls, describe(), e)),
        }
    }
}

fn build_configs(settings: &UpstreamTlsSettings, alpn: &[Vec<u8>]) -> Result<Configs> {
    let provider = sluice_core::tls::provider();
    let config_err = |what: String| Error::explain(ErrorKind::Config, what);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(format!("TLS versions: {e}")))?;
    let builder = if settings.verify {
        let roots = match &settings.ca {
            Some(path) => load_ca_bundle(path).map_err(|e| config_err(e.to_string()))?,
            None => system_roots().map_err(config_err)?,
        };
        builder.with_root_certificates(roots)
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    };
    let mut config = match &settings.client_certificate {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let loaded = load_certificate(cert, key).map_err(|e| config_err(e.to_string()))?;
            builder
                .with_client_auth_cert(loaded.key.cert.clone(), load_key(key)?)
                .map_err(|e| config_err(format!("client certificate: {e}")))?
        }
    };
    config.alpn_protocols = alpn.to_vec();
    let http1 = (alpn != [b"http/1.1".to_vec()]).then(|| {
        // A clone shares the session cache.
        let mut h1 = config.clone();
        h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(h1))
    });
    Ok(Configs { main: tokio_rustls::TlsConnector::from(Arc::new(config)), http1 })
}

fn load_key(path: &std::path::Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_file(path)
        .map_err(|e| Error::explain(ErrorKind::Config, format!("`{}`: {e}", path.display())))
}

fn server_name(name: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(name.to_owned())
        .map_err(|e| Error::explain(ErrorKind::Config, format!("`{name}` is not a valid TLS server name: {e}")))
}

/// Accepts any certificate (`verify #false`), but still checks that the server holds the
/// key of the certificate it sent, so the handshake itself is sound.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connection to an origin: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// Plain text.
    Plain(TcpStream),
    /// TLS (boxed: a rustls client connection is large, plain connections should not pay).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// The protocol ALPN chose, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => tls.get_ref().1.alpn_protocol(),
        }
    }

    /// Whether the TLS session was resumed (abbreviated handshake).
    pub fn resumed(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(tls) => matches!(tls.get_ref().1.handshake_kind(), Some(rustls::HandshakeKind::Resumed)),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
