//! The PROXY protocol over real sockets: listeners that read v1 and v2 headers (from
//! trusted peers only, within a timeout, before TLS too), the address they name used for
//! X-Forwarded-For, access rules and per-address limits; and upstream groups that send v1
//! or v2 headers (with ALPN, authority and TLS records) to an origin that parses them with
//! the same parser, one upstream connection per client connection, LOCAL for health checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pki;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sluice_core::proxy_protocol::{self as pp, tlv, Command, Header, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An origin that answers with the X-Forwarded-For it was sent.
async fn xff_origin() -> Origin {
    Origin::start(
        false,
        Arc::new(|req: Request<Incoming>| {
            let xff = req.headers().get("x-forwarded-for").map(|v| v.to_str().unwrap().to_owned());
            Box::pin(async move { Response::new(full(xff.unwrap_or_default())) })
        }),
    )
    .await
}

fn config(origin: SocketAddr, listener: &str, site: &str) -> String {
    format!(
        r#"
server {{
    access-log "off"
    admin "127.0.0.1:0"
}}
listener "127.0.0.1:0" name="edge" {{
{listener}
}}
upstream "origin" {{ server "{origin}" }}
site "*" {{
    route "/" {{ proxy "origin" }}
{site}
}}
"#
    )
}

const REQUEST: &[u8] = b"GET /who HTTP/1.1\r\nhost: example.test\r\nconnection: close\r\n\r\n";

/// Sends `header` then a request on a new connection; the whole answer ("" if closed).
async fn with_header(at: SocketAddr, header: &[u8], path: &str) -> String {
    let mut s = TcpStream::connect(at).await.unwrap();
    let request = String::from_utf8_lossy(REQUEST).replace("/who", path);
    s.write_all(&[header, request.as_bytes()].concat()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn body(answer: &str) -> &str {
    answer.split("\r\n\r\n").nth(1).unwrap_or("")
}

async fn metric(proxy: &Proxy, series: &str) -> String {
    let admin = proxy.server.as_ref().unwrap().admin_addr().unwrap();
    let text = admin_text(admin, "/metrics").await;
    text.lines().find(|l| l.starts_with(series)).map(|l| l.rsplit(' ').next().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_reads_v1_and_v2_headers_from_trusted_peers() {
    let origin = xff_origin().await;
    let proxy = Proxy::start(&config(
        origin.addr,
        r#"    proxy-protocol {
        trusted "127.0.0.0/8"
        timeout "2s"
    }"#,
        r#"    route "/partners" {
        proxy "origin"
        allow "203.0.113.0/24"
        deny "all"
    }"#,
    ))
    .await;
    let at = proxy.addr();

    let v1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 55123 443\r\n";
    let answer = with_header(at, v1, "/who").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(body(&answer), "203.0.113.7");

    let v1_ipv6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 55123 443\r\n";
    assert_eq!(body(&with_header(at, v1_ipv6, "/who").await), "2001:db8::7");

    let mut v2 = Header::proxied(Version::V2, addr("[2001:db8:1::9]:4000"), addr("[2001:db8::1]:443"));
    v2.push_tlv(tlv::AUTHORITY, b"example.test".to_vec());
    v2.push_tlv(tlv::CRC32C, vec![0; 4]);
    assert_eq!(body(&with_header(at, &v2.encode(), "/who").await), "2001:db8:1::9");

    // A header split over two packets is waited for.
    let v2 = Header::proxied(Version::V2, addr("198.51.100.3:1"), addr("192.0.2.1:80")).encode();
    let mut s = TcpStream::connect(at).await.unwrap();
    s.write_all(&v2[..7]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(&[&v2[7..], REQUEST].concat()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert_eq!(body(&out), "198.51.100.3");

    // LOCAL (a load balancer's health check) and UNKNOWN: the peer's own address.
    assert_eq!(body(&with_header(at, &Header::local(Version::V2).encode(), "/who").await), "127.0.0.1");
    assert_eq!(body(&with_header(at, b"PROXY UNKNOWN\r\n", "/who").await), "127.0.0.1");

    // Access rules see the address the header names.
    assert!(with_header(at, v1, "/partners").await.starts_with("HTTP/1.1 200"));
    let local = with_header(at, &Header::local(Version::V1).encode(), "/partners").await;
    assert!(local.starts_with("HTTP/1.1 403"), "{local}");
    assert_eq!(
        metric(&proxy, "sluice_connections_refused_total{listener=\"edge\",reason=\"proxy_protocol\"}").await,
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_closes_untrusted_missing_invalid_and_late_headers() {
    let origin = xff_origin().await;
    let listener = r#"    proxy-protocol {
        trusted "127.0.0.1"
        timeout "300ms"
    }"#;
    let proxy = Proxy::start(&config(origin.addr, listener, "")).await;
    let at = proxy.addr();
    // No header, a broken one, a v2 header with a bad checksum: closed without a word.
    assert_eq!(with_header(at, b"", "/who").await, "");
    assert_eq!(with_header(at, b"PROXY TCP4 203.0.113.7 192.0.2.1 55123\r\n", "/who").await, "");
    assert_eq!(with_header(at, b"PROXY TCP4 203.0.113.7 192.0.2.1 +1 2\r\n", "/who").await, "");
    let mut v2 = Header::proxied(Version::V2, addr("203.0.113.7:1"), addr("192.0.2.1:2"));
    v2.push_tlv(tlv::CRC32C, vec![0; 4]);
    let mut bad = v2.encode();
    bad[16] ^= 0xff;
    assert_eq!(with_header(at, &bad, "/who").await, "");
    // Too slow: cut off at the timeout.
    let mut s = TcpStream::connect(at).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.").await.unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.expect("not closed");
    let waited = started.elapsed();
    assert!(out.is_empty() && waited >= Duration::from_millis(250), "{waited:?} {out:?}");
    assert_eq!(origin.requests(), 0);
    assert_eq!(
        metric(&proxy, "sluice_connections_refused_total{listener=\"edge\",reason=\"proxy_protocol\"}").await,
        "5"
    );
    proxy.shutdown().await;

    // A peer outside `trusted` is refused even with a valid header.
    let untrusted = r#"    proxy-protocol { trusted "192.0.2.0/24"; }"#;
    let proxy = Proxy::start(&config(origin.addr, untrusted, "")).await;
    let valid = b"PROXY TCP4 203.0.113.7 192.0.2.1 55123 443\r\n";
    assert_eq!(with_header(proxy.addr(), valid, "/who").await, "");
    assert_eq!(origin.requests(), 0);

    // Configuration mistakes are caught at load time.
    let no_trusted = config(origin.addr, "    proxy-protocol { timeout \"1s\"; }", "");
    let e = sluice_config::parse("t.kdl", &no_trusted).unwrap_err().render(false);
    assert!(e.contains("`proxy-protocol` needs the addresses of the load balancers"), "{e}");
    let h2 = format!(
        "upstream \"u\" {{\n    server \"{}\"\n    protocol \"h2c\"\n    proxy-protocol \"v2\"\n}}\n",
        origin.addr
    );
    let e = sluice_config::parse("t.kdl", &(config(origin.addr, "", "") + &h2)).unwrap_err().render(false);
    assert!(e.contains("t.kdl:") && e.contains("an HTTP/2 connection carries many clients"), "{e}");
    let v3 = format!("upstream \"u\" {{\n    server \"{}\"\n    proxy-protocol \"v3\"\n}}\n", origin.addr);
    let e = sluice_config::parse("t.kdl", &(config(origin.addr, "", "") + &v3)).unwrap_err().render(false);
    assert!(e.contains("t.kdl:16:20") && e.contains("valid values: v1, v2"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_limits_apply_to_the_address_the_header_names() {
    let origin = xff_origin().await;
    let listener = r#"    max-connections-per-ip 1
    proxy-protocol { trusted "127.0.0.0/8"; }"#;
    let proxy = Proxy::start(&config(origin.addr, listener, "")).await;
    let at = proxy.addr();
    // One open connection from 203.0.113.7 (through the load balancer at 127.0.0.1)...
    let mut first = TcpStream::connect(at).await.unwrap();
    first.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 1000 80\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so a second from it is refused, while another client behind the same balancer is served.
    assert_eq!(with_header(at, b"PROXY TCP4 203.0.113.7 192.0.2.1 1001 80\r\n", "/who").await, "");
    assert_eq!(body(&with_header(at, b"PROXY TCP4 203.0.113.8 192.0.2.1 1002 80\r\n", "/who").await), "203.0.113.8");
    first.write_all(REQUEST).await.unwrap();
    let mut out = String::new();
    first.read_to_string(&mut out).await.unwrap();
    assert_eq!(body(&out), "203.0.113.7");
    assert_eq!(metric(&proxy, "sluice_connections_refused_total{listener=\"edge\",reason=\"per_ip\"}").await, "1");
}

/// Paths requested on one connection.
type Paths = Arc<Mutex<Vec<String>>>;

/// What a PROXY-protocol origin saw: each connection's header and the paths requested on it.
#[derive(Default)]
struct Seen {
    connections: Mutex<Vec<(Header, Paths)>>,
}

impl Seen {
    fn proxied(&self) -> Vec<(Header, Vec<String>)> {
        let all = self.connections.lock().unwrap();
        all.iter()
            .filter(|(h, _)| h.command == Command::Proxy && h.addresses.is_some())
            .map(|(h, paths)| (h.clone(), paths.lock().unwrap().clone()))
            .collect()
    }

    fn local(&self) -> usize {
        self.connections.lock().unwrap().iter().filter(|(h, _)| h.source().is_none()).count()
    }
}

/// An HTTP/1.1 origin behind the PROXY protocol: every connection must start with a header.
async fn pp_origin() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(header) = pp::read_header(&mut stream, Duration::from_secs(2)).await else { return };
                let paths = Paths::default();
                log.connections.lock().unwrap().push((header, paths.clone()));
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    paths.lock().unwrap().push(req.uri().path().to_owned());
                    async { Ok::<_, Infallible>(Response::new(full("ok"))) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (at, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_get_v1_and_v2_headers_with_tls_records_per_client_connection() {
    let pki = pki::Pki::new("pp");
    let cert = pki.server("site", &["site.test"]);
    let (v2_origin, v2_seen) = pp_origin().await;
    let (v1_origin, v1_seen) = pp_origin().await;
    let kdl = format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0" {{
    proxy-protocol {{ trusted "127.0.0.1"; }}
    tls {{ certificate "{}" key="{}" }}
}}
upstream "v2" {{
    server "{v2_origin}"
    proxy-protocol "v2"
    health-check {{
        http "/health"
        interval "100ms"
    }}
}}
upstream "v1" {{
    server "{v1_origin}"
    proxy-protocol "v1"
}}
site "*" {{
    route "/v1" {{ proxy "v1" }}
    route "/" {{ proxy "v2" }}
}}
"#,
        cert.cert.display(),
        cert.key.display()
    );
    let proxy = Proxy::start(&kdl).await;
    let client_tls = pki.client_config(&["http/1.1"], None);

    // A client behind a load balancer that sent v2 with a unique id; then TLS to Sluice.
    let connect = |source: &'static str, id: &'static [u8]| {
        let client_tls = client_tls.clone();
        let at = proxy.addr();
        async move {
            let mut tcp = TcpStream::connect(at).await.unwrap();
            let mut header = Header::proxied(Version::V2, addr(source), addr("192.0.2.1:443"));
            header.push_tlv(tlv::UNIQUE_ID, id.to_vec());
            tcp.write_all(&header.encode()).await.unwrap();
            let tls =
                tokio_rustls::TlsConnector::from(client_tls).connect(pki::server_name("site.test"), tcp).await.unwrap();
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            sender
        }
    };
    async fn fetch(c: &mut hyper::client::conn::http1::SendRequest<OriginBody>, path: &str) -> StatusCode {
        c.ready().await.unwrap();
        let req = Request::get(path).header("host", "site.test").body(full("")).unwrap();
        let resp = c.send_request(req).await.unwrap();
        let status = resp.status();
        resp.into_body().collect().await.unwrap();
        status
    }
    let mut alice = connect("203.0.113.10:5000", b"lb-1").await;
    let mut bob = connect("203.0.113.20:6000", b"lb-2").await;
    assert_eq!(fetch(&mut alice, "/a1").await, StatusCode::OK);
    assert_eq!(fetch(&mut bob, "/b1").await, StatusCode::OK);
    assert_eq!(fetch(&mut alice, "/a2").await, StatusCode::OK);
    assert_eq!(fetch(&mut bob, "/b2").await, StatusCode::OK);
    assert_eq!(fetch(&mut alice, "/v1/a3").await, StatusCode::OK);

    // One upstream connection per client connection, each reused for that client only.
    let mut proxied = v2_seen.proxied();
    proxied.sort_by_key(|(h, _)| h.source());
    assert_eq!(proxied.len(), 2, "{proxied:?}");
    let (a, a_paths) = &proxied[0];
    assert_eq!(a.source(), Some(addr("203.0.113.10:5000")));
    assert_eq!(a.addresses.unwrap().destination, addr("192.0.2.1:443"));
    assert_eq!(a_paths, &["/a1", "/a2"]);
    assert_eq!(proxied[1].0.source(), Some(addr("203.0.113.20:6000")));
    assert_eq!(proxied[1].1, ["/b1", "/b2"]);
    // What Sluice's TLS termination saw, and the balancer's record passed on.
    assert_eq!(a.authority(), Some("site.test"));
    assert_eq!(a.alpn(), Some(&b"http/1.1"[..]));
    let ssl = a.ssl().unwrap();
    assert_eq!((ssl.client & tlv::CLIENT_SSL, ssl.verify), (tlv::CLIENT_SSL, 0));
    assert_eq!(ssl.get(tlv::SSL_VERSION), Some(&b"TLSv1.3"[..]));
    assert!(ssl.get(tlv::SSL_CIPHER).is_some_and(|c| c.starts_with(b"TLS13_")), "{ssl:?}");
    assert_eq!(a.tlv(tlv::UNIQUE_ID), Some(&b"lb-1"[..]));
    assert_eq!(proxied[1].0.tlv(tlv::UNIQUE_ID), Some(&b"lb-2"[..]));

    // The v1 group: the text form, addresses only.
    let v1 = v1_seen.proxied();
    assert_eq!(v1.len(), 1);
    assert_eq!((v1[0].0.version, v1[0].0.source()), (Version::V1, Some(addr("203.0.113.10:5000"))));
    assert!(v1[0].0.tlvs.is_empty());

    // Health checks are Sluice's own connections: LOCAL.
    until("a LOCAL health check", || v2_seen.local() > 0).await;
}
