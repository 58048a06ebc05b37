//! TLS end to end with real handshakes: SNI certificate selection, ALPN, client
//! certificates, upstream TLS (verification, SNI, ALPN h2, pooling, client certificates),
//! session resumption on both sides, certificate reload under open connections, and the
//! HTTPS redirect. Certificates are generated per test (tests/pki).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pki;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{full, Origin, OriginLog, Proxy};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pki::{server_name, Alg, Pki};
use rustls::pki_types::CertificateDer;
use rustls::ClientConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

type Tls = TlsStream<TcpStream>;

async fn connect(addr: SocketAddr, config: Arc<ClientConfig>, sni: &str) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config).connect(server_name(sni), tcp).await
}

fn served(stream: &Tls) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn resumed(stream: &Tls) -> bool {
    matches!(stream.get_ref().1.handshake_kind(), Some(rustls::HandshakeKind::Resumed))
}

fn alpn(stream: &Tls) -> Option<String> {
    stream.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned())
}

/// Sends `req` on `stream`, speaking whatever ALPN chose.
async fn send(stream: Tls, req: Request<common::OriginBody>) -> hyper::Result<(StatusCode, http::HeaderMap, Bytes)> {
    let h2 = alpn(&stream).as_deref() == Some("h2");
    let resp = if h2 {
        let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        s.send_request(req).await?
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        s.send_request(req).await?
    };
    let (parts, body) = resp.into_parts();
    Ok((parts.status, parts.headers, body.collect().await?.to_bytes()))
}

fn get(host: &str, path: &str) -> Request<common::OriginBody> {
    Request::get(format!("https://{host}{path}")).header("host", host).body(full("")).unwrap()
}

/// A config with a TLS listener; `sites` is KDL for the sites.
fn tls_config(listener_tls: &str, origin: SocketAddr, sites: &str) -> String {
    format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0" name="tls" {{
    tls {{
{listener_tls}
    }}
}}
upstream "origins" {{ server "{origin}" }}
{sites}
"#
    )
}

fn cert_line(issued: &pki::Issued) -> String {
    format!("certificate \"{}\" key=\"{}\"", issued.cert.display(), issued.key.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_exact_wildcard_and_default_certificates() {
    let pki = Pki::new("sni");
    let a = pki.server("a", &["a.test"]);
    let b = pki.issue("b", &["b.test"], Alg::Ed25519, None, false);
    let rsa = pki.issue("rsa", &["rsa.test"], Alg::Rsa, None, false);
    let wild = pki.server("wild", &["*.wild.test"]);
    let default = pki.server("default", &["default.test"]);
    let origin = Origin::named("origin").await;
    let sites = format!(
        r#"
site "a.test" {{ {}
    route "/" {{ proxy "origins" }} }}
site "b.test" {{ {}
    route "/" {{ proxy "origins" }} }}
site "rsa.test" {{ {}
    route "/" {{ proxy "origins" }} }}
site "*.wild.test" {{ {}
    route "/" {{ proxy "origins" }} }}
site "*" {{ route "/" {{ proxy "origins" }} }}
"#,
        cert_line(&a),
        cert_line(&b),
        cert_line(&rsa),
        cert_line(&wild)
    );
    let proxy = Proxy::start(&tls_config(&cert_line(&default), origin.addr, &sites)).await;
    let client = pki.client_config(&["http/1.1"], None);

    for (sni, expected) in [("a.test", &a), ("b.test", &b), ("rsa.test", &rsa), ("x.wild.test", &wild)] {
        let stream = connect(proxy.addr(), client.clone(), sni).await.unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(served(&stream), expected.der, "certificate for SNI {sni}");
        assert_eq!(stream.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
        let (status, _, body) = send(stream, get(sni, "/")).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"origin"[..]));
    }

    // A name no site claims: the default certificate (which a verifying client rejects).
    assert!(connect(proxy.addr(), client.clone(), "unknown.test").await.is_err());
    let stream = connect(proxy.addr(), trusting_client(), "unknown.test").await.unwrap();
    assert_eq!(served(&stream), default.der);

    // No SNI at all: the default certificate.
    let mut no_sni = (*pki.client_config(&["http/1.1"], None)).clone();
    no_sni.enable_sni = false;
    let stream = connect(proxy.addr(), Arc::new(no_sni), "default.test").await.unwrap();
    assert_eq!(served(&stream), default.der);
    proxy.shutdown().await;
}

/// A client that accepts any certificate, to see what the proxy serves for names the
/// certificate does not cover.
fn trusting_client() -> Arc<ClientConfig> {
    #[derive(Debug)]
    struct Any;
    impl rustls::client::danger::ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
        }
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Any))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_listener_certificate_the_catch_all_site_is_the_default_and_unknown_names_can_be_refused() {
    let pki = Pki::new("refuse");
    let a = pki.server("a", &["a.test"]);
    let star = pki.server("star", &["star.test"]);
    let origin = Origin::named("origin").await;
    let sites = format!(
        r#"
site "a.test" {{ {}
    route "/" {{ proxy "origins" }} }}
site "*" {{ {}
    route "/" {{ proxy "origins" }} }}
"#,
        cert_line(&a),
        cert_line(&star)
    );
    let proxy = Proxy::start(&tls_config("", origin.addr, &sites)).await;
    let stream = connect(proxy.addr(), trusting_client(), "other.test").await.unwrap();
    assert_eq!(served(&stream), star.der, "the `*` site's certificate is the default");
    proxy.shutdown().await;

    let refusing = tls_config("without-sni \"refuse\"\n unknown-sni \"refuse\"", origin.addr, &sites);
    let proxy = Proxy::start(&refusing).await;
    assert!(connect(proxy.addr(), trusting_client(), "other.test").await.is_err(), "unknown SNI is refused");
    let mut no_sni = (*trusting_client()).clone();
    no_sni.enable_sni = false;
    assert!(connect(proxy.addr(), Arc::new(no_sni), "a.test").await.is_err(), "missing SNI is refused");
    let stream = connect(proxy.addr(), trusting_client(), "a.test").await.unwrap();
    assert_eq!(served(&stream), a.der, "known names still work");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_chooses_h2_or_http1_and_origin_sees_https() {
    let pki = Pki::new("alpn");
    let a = pki.server("a", &["a.test"]);
    let origin = Origin::named("origin").await;
    let sites = r#"site "*" { route "/" { proxy "origins" } }"#;
    let proxy = Proxy::start(&tls_config(&cert_line(&a), origin.addr, sites)).await;

    let h2 = connect(proxy.addr(), pki.client_config(&["h2", "http/1.1"], None), "a.test").await.unwrap();
    assert_eq!(alpn(&h2).as_deref(), Some("h2"));
    let (status, _, body) = send(h2, get("a.test", "/x")).await.unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"origin"[..]));
    let head = origin.last_head();
    assert_eq!(head.headers["x-forwarded-proto"], "https");

    let h1 = connect(proxy.addr(), pki.client_config(&["http/1.1"], None), "a.test").await.unwrap();
    assert_eq!(alpn(&h1).as_deref(), Some("http/1.1"));
    let (status, _, _) = send(h1, get("a.test", "/y")).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    // No ALPN at all: HTTP/1.1.
    let none = connect(proxy.addr(), pki.client_config(&[], None), "a.test").await.unwrap();
    assert_eq!(alpn(&none), None);
    let (status, _, _) = send(none, get("a.test", "/z")).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    // `http2 #false` only offers http/1.1.
    proxy.shutdown().await;
    let proxy = Proxy::start(&tls_config(&format!("{}\n http2 #false", cert_line(&a)), origin.addr, sites)).await;
    let h1 = connect(proxy.addr(), pki.client_config(&["h2", "http/1.1"], None), "a.test").await.unwrap();
    assert_eq!(alpn(&h1).as_deref(), Some("http/1.1"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_1_3_refuses_tls_1_2_clients() {
    let pki = Pki::new("versions");
    let a = pki.server("a", &["a.test"]);
    let origin = Origin::named("origin").await;
    let sites = r#"site "*" { route "/" { proxy "origins" } }"#;
    let tls12_only = {
        let mut c = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(pki.roots())
            .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    };
    let proxy = Proxy::start(&tls_config(&cert_line(&a), origin.addr, sites)).await;
    let s = connect(proxy.addr(), tls12_only.clone(), "a.test").await.unwrap();
    assert_eq!(s.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    proxy.shutdown().await;

    let proxy =
        Proxy::start(&tls_config(&format!("{}\n min-version \"1.3\"", cert_line(&a)), origin.addr, sites)).await;
    assert!(connect(proxy.addr(), tls12_only, "a.test").await.is_err());
    proxy.shutdown().await;
}

/// An origin that echoes the client-certificate headers it received.
async fn echo_origin() -> Origin {
    Origin::start(
        false,
        Arc::new(|req: Request<Incoming>| {
            Box::pin(async move {
                let h = |n: &str| req.headers().get(n).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
                Response::new(full(format!("subject={}|san={}", h("x-client-subject"), h("x-client-san"))))
            })
        }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_required_per_site_verified_and_forwarded() {
    let pki = Pki::new("mtls");
    let clients = Pki::new("mtls-clients");
    let strangers = Pki::new("mtls-strangers");
    let a = pki.server("a", &["secure.test", "open.test"]);
    let origin = echo_origin().await;
    let sites = format!(
        r#"
site "secure.test" {{
    {}
    client-auth "required" ca="{}" subject-header="X-Client-Subject" san-header="X-Client-SAN"
    route "/" {{ proxy "origins" }}
}}
site "open.test" {{
    client-auth "optional" ca="{}" subject-header="X-Client-Subject"
    route "/" {{ proxy "origins" }}
}}
"#,
        cert_line(&a),
        clients.ca_path.display(),
        clients.ca_path.display()
    );
    let proxy = Proxy::start(&tls_config(&cert_line(&a), origin.addr, &sites)).await;
    let alice = clients.client("alice");
    let mallory = strangers.client("mallory");

    // A certificate from the configured CA: accepted, subject and SAN forwarded; a forged
    // header from the client is replaced.
    let s = connect(proxy.addr(), pki.client_config(&["h2"], Some(&alice)), "secure.test").await.unwrap();
    let req = Request::get("https://secure.test/")
        .header("host", "secure.test")
        .header("x-client-subject", "CN=admin")
        .body(full(""))
        .unwrap();
    let (status, _, body) = send(s, req).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.starts_with("subject=CN=alice"), "{body}");
    assert!(body.contains("O=Sluice Tests"), "{body}");
    assert!(body.contains("san=DNS:alice, email:alice@example.test"), "{body}");

    // No certificate, or one from another CA: refused (TLS 1.3 reports it on first use).
    for (who, cert) in [("nobody", None), ("stranger", Some(&mallory))] {
        let result = match connect(proxy.addr(), pki.client_config(&["http/1.1"], cert), "secure.test").await {
            Ok(s) => send(s, get("secure.test", "/")).await.map(|r| r.0),
            Err(e) => {
                eprintln!("{who}: handshake refused: {e}");
                Ok(StatusCode::IM_A_TEAPOT)
            }
        };
        assert!(!matches!(result, Ok(StatusCode::OK)), "{who} must not get through: {result:?}");
    }

    // The optional site: no certificate is fine, and the client cannot inject the header.
    let s = connect(proxy.addr(), pki.client_config(&["http/1.1"], None), "open.test").await.unwrap();
    let req = Request::get("https://open.test/")
        .header("host", "open.test")
        .header("x-client-subject", "CN=admin")
        .body(full(""))
        .unwrap();
    let (status, _, body) = send(s, req).await.unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"subject=|san="[..]));

    // A connection set up for the optional site cannot be used for the required one.
    let s = connect(proxy.addr(), pki.client_config(&["http/1.1"], None), "open.test").await.unwrap();
    let (status, _, _) = send(s, get("secure.test", "/")).await.unwrap();
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    proxy.shutdown().await;
}

/// What a TLS origin saw of its handshakes.
#[derive(Default)]
struct Handshakes {
    resumed: Mutex<Vec<bool>>,
    sni: Mutex<Vec<Option<String>>>,
    client_cert: Mutex<Vec<bool>>,
}

struct TlsOrigin {
    addr: SocketAddr,
    log: Arc<OriginLog>,
    handshakes: Arc<Handshakes>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS origin with `cert`; speaks h2 when ALPN picks it; requires a client certificate
/// from `client_ca` when given; closes every connection after one response when `close`.
async fn tls_origin(cert: &pki::Issued, h2: bool, client_ca: Option<&Pki>, close: bool) -> TlsOrigin {
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.roots()),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .build()
            .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(vec![cert.der.clone()], key).unwrap();
    config.alpn_protocols = if h2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(OriginLog::default());
    let handshakes = Arc::new(Handshakes::default());
    let (log2, hs2) = (log.clone(), handshakes.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, log, hs) = (acceptor.clone(), log2.clone(), hs2.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                log.connections.fetch_add(1, Ordering::SeqCst);
                let conn = tls.get_ref().1;
                hs.resumed.lock().unwrap().push(matches!(conn.handshake_kind(), Some(rustls::HandshakeKind::Resumed)));
                hs.sni.lock().unwrap().push(conn.server_name().map(str::to_owned));
                hs.client_cert.lock().unwrap().push(conn.peer_certificates().is_some());
                let is_h2 = conn.alpn_protocol() == Some(b"h2");
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        log.requests.fetch_add(1, Ordering::SeqCst);
                        let version = format!("{:?}", req.version());
                        let mut resp = Response::new(full(format!("tls-origin {version}")));
                        if close && !is_h2 {
                            resp.headers_mut().insert("connection", "close".parse().unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let io = TokioIo::new(tls);
                if is_h2 {
                    let _ =
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, svc).await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                }
            });
        }
    });
    TlsOrigin { addr, log, handshakes, task }
}

fn upstream_tls_config(origin: SocketAddr, protocol: &str, tls: &str) -> String {
    format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0"
upstream "origins" {{
    server "{origin}"
    protocol "{protocol}"
    tls {{
{tls}
    }}
}}
site "*" {{ route "/" {{ proxy "origins" }} }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verifies_the_origin_and_pools_connections() {
    let pki = Pki::new("up");
    let other = Pki::new("up-other");
    let cert = pki.server("origin", &["origin.test"]);
    let origin = tls_origin(&cert, false, None, false).await;
    let ca = pki.ca_path.display();

    let proxy =
        Proxy::start(&upstream_tls_config(origin.addr, "http1", &format!("server-name \"origin.test\"\n ca \"{ca}\"")))
            .await;
    for _ in 0..5 {
        let (status, _, body) = common::get(proxy.addr(), "/").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"tls-origin HTTP/1.1"[..]));
    }
    assert_eq!(origin.log.connections.load(Ordering::SeqCst), 1, "one pooled TLS connection for five requests");
    assert_eq!(origin.handshakes.sni.lock().unwrap()[0].as_deref(), Some("origin.test"));
    proxy.shutdown().await;

    // Wrong name: refused with 502.
    let proxy =
        Proxy::start(&upstream_tls_config(origin.addr, "http1", &format!("server-name \"wrong.test\"\n ca \"{ca}\"")))
            .await;
    assert_eq!(common::get(proxy.addr(), "/").await.0, StatusCode::BAD_GATEWAY);
    proxy.shutdown().await;

    // Untrusted CA: refused with 502; also the system roots do not know the test CA.
    let other_ca = other.ca_path.display();
    for tls in [format!("server-name \"origin.test\"\n ca \"{other_ca}\""), "server-name \"origin.test\"".to_owned()] {
        let proxy = Proxy::start(&upstream_tls_config(origin.addr, "http1", &tls)).await;
        assert_eq!(common::get(proxy.addr(), "/").await.0, StatusCode::BAD_GATEWAY, "{tls}");
        proxy.shutdown().await;
    }

    // Verification explicitly off: accepted (and the config check warned about it).
    let text = upstream_tls_config(origin.addr, "http1", "server-name \"wrong.test\"\n verify #false");
    let parsed = sluice_config::parse("test.kdl", &text).unwrap();
    assert!(parsed.warnings.iter().any(|w| w.contains("verification is OFF")), "{:?}", parsed.warnings);
    let proxy = Proxy::start(&text).await;
    assert_eq!(common::get(proxy.addr(), "/").await.0, StatusCode::OK);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_h2_is_negotiated_by_alpn_and_client_certificates_are_presented() {
    let pki = Pki::new("up-h2");
    let clients = Pki::new("up-h2-clients");
    let cert = pki.server("origin", &["origin.test"]);
    let proxy_cert = clients.client("sluice-proxy");
    let origin = tls_origin(&cert, true, Some(&clients), false).await;
    let tls = format!(
        "server-name \"origin.test\"\n ca \"{}\"\n certificate \"{}\" key=\"{}\"",
        pki.ca_path.display(),
        proxy_cert.cert.display(),
        proxy_cert.key.display()
    );
    let proxy = Proxy::start(&upstream_tls_config(origin.addr, "h2", &tls)).await;
    for _ in 0..3 {
        let (status, _, body) = common::get(proxy.addr(), "/").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"tls-origin HTTP/2.0"[..]));
    }
    assert_eq!(origin.log.connections.load(Ordering::SeqCst), 1, "one multiplexed connection");
    assert_eq!(*origin.handshakes.client_cert.lock().unwrap(), [true]);
    proxy.shutdown().await;

    // An origin that only speaks HTTP/1.1 refuses ALPN h2: a clear 502, not a hang.
    let h1_origin = tls_origin(&cert, false, Some(&clients), false).await;
    let proxy = Proxy::start(&upstream_tls_config(h1_origin.addr, "h2", &tls)).await;
    assert_eq!(common::get(proxy.addr(), "/").await.0, StatusCode::BAD_GATEWAY);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_downstream_and_upstream() {
    let pki = Pki::new("resume");
    let a = pki.server("a", &["a.test"]);
    let origin_cert = pki.server("origin", &["origin.test"]);
    // The origin closes every connection, so the proxy must reconnect (and resume) each time.
    let origin = tls_origin(&origin_cert, false, None, true).await;
    let config = format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0" {{ tls {{ {} }} }}
upstream "origins" {{
    server "{}"
    tls {{
        server-name "origin.test"
        ca "{}"
    }}
}}
site "*" {{ route "/" {{ proxy "origins" }} }}
"#,
        cert_line(&a),
        origin.addr,
        pki.ca_path.display()
    );
    let proxy = Proxy::start(&config).await;

    // Downstream, TLS 1.3 (tickets) and TLS 1.2 (tickets or session cache).
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let mut c = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(pki.roots())
            .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = Arc::new(c);
        let first = connect(proxy.addr(), client.clone(), "a.test").await.unwrap();
        assert!(!resumed(&first));
        let (status, _, _) = send(first, get("a.test", "/")).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let second = connect(proxy.addr(), client.clone(), "a.test").await.unwrap();
        assert!(resumed(&second), "second handshake is abbreviated ({versions:?})");
        let (status, _, _) = send(second, get("a.test", "/")).await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }

    // Upstream: four requests, four connections (the origin closes each), and every
    // handshake after the first resumed.
    let upstream_handshakes = origin.handshakes.resumed.lock().unwrap().clone();
    assert_eq!(upstream_handshakes.len(), 4, "{upstream_handshakes:?}");
    assert!(!upstream_handshakes[0]);
    assert!(upstream_handshakes[1..].iter().all(|r| *r), "{upstream_handshakes:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_for_new_handshakes_while_open_connections_carry_on() {
    let pki = Pki::new("reload");
    let old = pki.server("site", &["a.test"]);
    let origin = Origin::named("origin").await;
    let sites = format!("site \"a.test\" {{ {}\n route \"/\" {{ proxy \"origins\" }} }}", cert_line(&old));
    let proxy = Proxy::start(&tls_config("", origin.addr, &sites)).await;
    let client = pki.client_config(&["http/1.1"], None);

    // An open keep-alive connection made with the old certificate.
    let stream = connect(proxy.addr(), client.clone(), "a.test").await.unwrap();
    assert_eq!(served(&stream), old.der);
    let (mut open, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    assert_eq!(open.send_request(get("a.test", "/")).await.unwrap().status(), StatusCode::OK);

    // Replace the files (same paths) and reload.
    let new = pki.server("site", &["a.test"]);
    assert_ne!(new.der, old.der);
    assert_eq!(proxy.server.as_ref().unwrap().reload_certificates(), 0);
    // The same client: its old session is not resumed (the reload changed the ticket keys).
    let fresh = connect(proxy.addr(), client.clone(), "a.test").await.unwrap();
    assert!(!resumed(&fresh));
    assert_eq!(served(&fresh), new.der, "new handshakes get the new certificate");
    open.ready().await.unwrap();
    assert_eq!(open.send_request(get("a.test", "/")).await.unwrap().status(), StatusCode::OK, "old connection lives");

    // A broken file: the reload reports it and the current certificate stays.
    std::fs::write(&new.key, "not a key").unwrap();
    assert_eq!(proxy.server.as_ref().unwrap().reload_certificates(), 1);
    let still = connect(proxy.addr(), client, "a.test").await.unwrap();
    assert_eq!(served(&still), new.der);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_redirects_to_https_with_one_option() {
    let pki = Pki::new("redirect");
    let a = pki.server("a", &["example.test"]);
    let origin = Origin::named("origin").await;
    // Two listeners: the TLS one first so its port is known to the redirect... the port
    // is not known before binding, so the redirect names a fixed port and the test checks it.
    let config = format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0" name="plain"
listener "127.0.0.1:0" name="tls" {{ tls {{ {} }} }}
upstream "origins" {{ server "{}" }}
site "example.test" {{
    https-redirect port=8443
    route "/" {{ proxy "origins" }}
}}
"#,
        cert_line(&a),
        origin.addr
    );
    let proxy = Proxy::start(&config).await;
    let (plain, tls) = (proxy.addrs[0], proxy.addrs[1]);
    let reply = common::raw(plain, b"GET /a/b?c=d HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 308"), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("location: https://example.test:8443/a/b?c=d\r\n"), "{reply}");
    assert_eq!(origin.requests(), 0);

    let s = connect(tls, pki.client_config(&["http/1.1"], None), "example.test").await.unwrap();
    let (status, _, body) = send(s, get("example.test", "/a")).await.unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"origin"[..]));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_wide_client_auth_applies_to_sites_without_their_own() {
    let pki = Pki::new("mtls-listener");
    let clients = Pki::new("mtls-listener-clients");
    let a = pki.server("a", &["a.test"]);
    let origin = echo_origin().await;
    let listener_tls = format!(
        "{}\n client-auth \"required\" ca=\"{}\" subject-header=\"X-Client-Subject\"",
        cert_line(&a),
        clients.ca_path.display()
    );
    let proxy =
        Proxy::start(&tls_config(&listener_tls, origin.addr, r#"site "*" { route "/" { proxy "origins" } }"#)).await;
    let bob = clients.client("bob");
    let s = connect(proxy.addr(), pki.client_config(&["http/1.1"], Some(&bob)), "a.test").await.unwrap();
    let (status, _, body) = send(s, get("a.test", "/")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).starts_with("subject=CN=bob"), "{body:?}");
    let refused = match connect(proxy.addr(), pki.client_config(&["http/1.1"], None), "a.test").await {
        Ok(s) => send(s, get("a.test", "/")).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "no certificate, no request");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sni_defaults_to_the_servers_host_name() {
    let pki = Pki::new("up-sni");
    let cert = pki.server("localhost", &["localhost"]);
    let origin = tls_origin(&cert, false, None, false).await;
    let server = format!("localhost:{}", origin.addr.port());
    let config = format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0"
upstream "origins" {{
    server "{server}"
    tls {{ ca "{}" }}
}}
site "*" {{ route "/" {{ proxy "origins" }} }}
"#,
        pki.ca_path.display()
    );
    let proxy = Proxy::start(&config).await;
    let (status, _, _) = common::get(proxy.addr(), "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(origin.handshakes.sni.lock().unwrap()[0].as_deref(), Some("localhost"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_records_tls_details() {
    let pki = Pki::new("tls-log");
    let a = pki.server("a", &["a.test"]);
    let origin = Origin::named("origin").await;
    let log = pki.dir.join("access.json");
    let config = tls_config(&cert_line(&a), origin.addr, r#"site "*" { route "/" { proxy "origins" } }"#)
        .replace("server { access-log \"off\" }", &format!("server {{ access-log \"{}\" }}", log.display()));
    let proxy = Proxy::start(&config).await;
    let s = connect(proxy.addr(), pki.client_config(&["h2"], None), "a.test").await.unwrap();
    assert_eq!(send(s, get("a.test", "/")).await.unwrap().0, StatusCode::OK);
    assert!(proxy.shutdown().await);
    let line = std::fs::read_to_string(&log).unwrap();
    assert!(
        line.contains(
            r#""tls":{"version":"TLSv1.3","cipher":"TLS13_AES_256_GCM_SHA384","resumed":false,"sni":"a.test"}"#
        ),
        "{line}"
    );
    assert!(line.contains(r#""protocol":"HTTP/2.0""#), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_handshake_that_never_comes() {
    let pki = Pki::new("tls-drain");
    let a = pki.server("a", &["a.test"]);
    let origin = Origin::named("origin").await;
    // Handshake timeout far longer than the shutdown is allowed to take.
    let listener_tls = format!("{}\n handshake-timeout \"1h\"", cert_line(&a));
    let proxy =
        Proxy::start(&tls_config(&listener_tls, origin.addr, r#"site "*" { route "/" { proxy "origins" } }"#)).await;
    let silent = TcpStream::connect(proxy.addr()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await; // let the proxy accept it
    let drained = tokio::time::timeout(std::time::Duration::from_secs(20), proxy.shutdown()).await;
    assert_eq!(drained.ok(), Some(true), "shutdown drained without waiting for the silent client");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_tls_port_gets_a_readable_400() {
    let pki = Pki::new("tls-plain");
    let a = pki.server("a", &["a.test"]);
    let origin = Origin::named("origin").await;
    let proxy =
        Proxy::start(&tls_config(&cert_line(&a), origin.addr, r#"site "*" { route "/" { proxy "origins" } }"#)).await;
    let reply = common::raw(proxy.addr(), b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
    assert!(reply.ends_with("\r\n\r\nThis port speaks HTTPS: use https:// instead of http://.\n"), "{reply}");
    assert_eq!(origin.requests(), 0);
    // TLS on the same port still works.
    let s = connect(proxy.addr(), pki.client_config(&["http/1.1"], None), "a.test").await.unwrap();
    assert_eq!(send(s, get("a.test", "/")).await.unwrap().0, StatusCode::OK);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_client_certificates_reload_too() {
    let pki = Pki::new("up-reload");
    let clients = Pki::new("up-reload-clients");
    let strangers = Pki::new("up-reload-strangers");
    let cert = pki.server("origin", &["origin.test"]);
    // Each response closes its connection: every request makes a new handshake.
    let origin = tls_origin(&cert, false, Some(&clients), true).await;
    let wrong = strangers.client("sluice-proxy");
    let tls = format!(
        "server-name \"origin.test\"\n ca \"{}\"\n certificate \"{}\" key=\"{}\"",
        pki.ca_path.display(),
        wrong.cert.display(),
        wrong.key.display()
    );
    let proxy = Proxy::start(&upstream_tls_config(origin.addr, "http1", &tls)).await;
    assert_eq!(common::get(proxy.addr(), "/").await.0, StatusCode::BAD_GATEWAY, "origin refuses the stranger");

    // Put a certificate the origin trusts at the same paths, and reload.
    let right = clients.client("sluice-proxy");
    std::fs::copy(&right.cert, &wrong.cert).unwrap();
    std::fs::copy(&right.key, &wrong.key).unwrap();
    assert_eq!(proxy.server.as_ref().unwrap().reload_certificates(), 0);
    assert_eq!(common::get(proxy.addr(), "/").await.0, StatusCode::OK);

    // A broken key: the reload reports it and the working certificate stays.
    std::fs::write(&wrong.key, "garbage").unwrap();
    assert_eq!(proxy.server.as_ref().unwrap().reload_certificates(), 1);
    assert_eq!(common::get(proxy.addr(), "/").await.0, StatusCode::OK);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_chains_with_intermediates_are_served() {
    let root = Pki::new("chain-root");
    let intermediate = root.intermediate("chain-intermediate");
    let leaf = intermediate.server("leaf", &["chain.test"]);
    assert_eq!(std::fs::read_to_string(&leaf.cert).unwrap().matches("BEGIN CERTIFICATE").count(), 2);
    let origin = Origin::named("origin").await;
    let proxy =
        Proxy::start(&tls_config(&cert_line(&leaf), origin.addr, r#"site "*" { route "/" { proxy "origins" } }"#))
            .await;
    // The client trusts only the root: the handshake works because the intermediate is sent.
    let s = connect(proxy.addr(), root.client_config(&["http/1.1"], None), "chain.test").await.unwrap();
    assert_eq!(s.get_ref().1.peer_certificates().unwrap().len(), 2);
    assert_eq!(send(s, get("chain.test", "/")).await.unwrap().0, StatusCode::OK);
    proxy.shutdown().await;
}
