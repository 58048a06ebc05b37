//! DNS service discovery against a real (tiny) DNS server on loopback: names resolve to
//! all their addresses, answers are re-read when their TTL runs out, the group follows, and
//! a failing resolver keeps the last good set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UdpSocket};

/// A DNS server answering A queries with `names[name]`, else `answers` (TTL 1 s), SRV
/// queries with `srv` (weight, port, target), or SERVFAIL while `failing`.
struct Dns {
    addr: SocketAddr,
    answers: Arc<Mutex<Vec<Ipv4Addr>>>,
    names: Arc<Mutex<std::collections::HashMap<String, Vec<Ipv4Addr>>>>,
    srv: Arc<Mutex<Vec<(u16, u16, String)>>>,
    failing: Arc<AtomicBool>,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn dns(initial: Vec<Ipv4Addr>) -> Dns {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let answers = Arc::new(Mutex::new(initial));
    let names = Arc::new(Mutex::new(std::collections::HashMap::new()));
    let srv = Arc::new(Mutex::new(Vec::<(u16, u16, String)>::new()));
    let failing = Arc::new(AtomicBool::new(false));
    let queries = Arc::new(AtomicUsize::new(0));
    let (a, f, q) = (answers.clone(), failing.clone(), queries.clone());
    let (names2, srv2) = (names.clone(), srv.clone());
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else { return };
            let query = &buf[..n];
            if n < 17 {
                continue;
            }
            // The question: labels up to a zero byte, then type and class.
            let mut i = 12;
            let mut labels = Vec::new();
            while i < n && query[i] != 0 {
                let len = query[i] as usize;
                labels.push(String::from_utf8_lossy(&query[(i + 1).min(n)..(i + 1 + len).min(n)]).to_lowercase());
                i += 1 + len;
            }
            let qname = labels.join(".");
            let q_end = i + 5;
            if q_end > n {
                continue;
            }
            let qtype = u16::from_be_bytes([query[i + 1], query[i + 2]]);
            q.fetch_add(1, Ordering::SeqCst);
            let ips = match qtype {
                1 => names2.lock().unwrap().get(&qname).cloned().unwrap_or_else(|| a.lock().unwrap().clone()),
                _ => Vec::new(),
            };
            let records = if qtype == 33 { srv2.lock().unwrap().clone() } else { Vec::new() };
            let fail = f.load(Ordering::SeqCst);
            let mut out = Vec::with_capacity(512);
            out.extend_from_slice(&query[..2]);
            out.extend_from_slice(if fail { &[0x81, 0x82] } else { &[0x81, 0x80] });
            out.extend_from_slice(&[0, 1]);
            let count = if fail { 0 } else { (ips.len() + records.len()) as u16 };
            out.extend_from_slice(&count.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(&query[12..q_end]);
            if !fail {
                for ip in ips {
                    out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4]);
                    out.extend_from_slice(&ip.octets());
                }
                for (weight, port, target) in records {
                    let mut name = Vec::new();
                    for label in target.split('.') {
                        name.push(label.len() as u8);
                        name.extend_from_slice(label.as_bytes());
                    }
                    name.push(0);
                    out.extend_from_slice(&[0xc0, 0x0c, 0, 33, 0, 1, 0, 0, 0, 1]);
                    out.extend_from_slice(&((6 + name.len()) as u16).to_be_bytes());
                    out.extend_from_slice(&[0, 0]);
                    out.extend_from_slice(&weight.to_be_bytes());
                    out.extend_from_slice(&port.to_be_bytes());
                    out.extend_from_slice(&name);
                }
            }
            let _ = socket.send_to(&out, from).await;
        }
    });
    Dns { addr, answers, names, srv, failing, queries, task }
}

/// An HTTP/1.1 origin on a given address answering `name`.
async fn origin_at(addr: SocketAddr, name: &'static str) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, Infallible>(http::Response::new(full(name)))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_re_resolved_and_the_group_follows_the_answers() {
    let one = Ipv4Addr::new(127, 0, 0, 1);
    let two = Ipv4Addr::new(127, 0, 0, 2);
    // The same port on two loopback addresses.
    let first = TcpListener::bind((one, 0)).await.unwrap();
    let port = first.local_addr().unwrap().port();
    drop(first);
    let _a = origin_at(SocketAddr::from((one, port)), "a").await;
    let _b = origin_at(SocketAddr::from((two, port)), "b").await;
    let dns = dns(vec![one]).await;
    let config = format!(
        "server {{\n    access-log \"off\"\n    dns-server \"{}\"\n}}\nlistener \"127.0.0.1:0\"\nupstream \"origins\" {{ server \"svc.test:{port}\" }}\nsite \"*\" {{ route \"/\" {{ proxy \"origins\" }} }}\n",
        dns.addr
    );
    let proxy = Proxy::start(&config).await;
    let group = proxy.server.as_ref().unwrap().upstreams()[0].clone();
    assert_eq!(get(proxy.addr(), "/").await.2, "a");

    // The name moves to the other address.
    *dns.answers.lock().unwrap() = vec![two];
    until("the group follows the new answer", || {
        group.backends().iter().map(|b| b.addr().ip()).eq([std::net::IpAddr::V4(two)])
    })
    .await;
    assert_eq!(get(proxy.addr(), "/").await.2, "b");

    // Two addresses: two backends, both used.
    *dns.answers.lock().unwrap() = vec![one, two];
    until("both addresses are members", || group.backends().len() == 2).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(get(proxy.addr(), "/").await.2);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // The resolver fails: the last good set stays.
    dns.failing.store(true, Ordering::SeqCst);
    let asked = dns.queries.load(Ordering::SeqCst);
    until("the failing server was asked again", || dns.queries.load(Ordering::SeqCst) > asked + 1).await;
    assert_eq!(group.backends().len(), 2);
    assert_eq!(get(proxy.addr(), "/").await.0, 200);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_at_startup_is_an_error() {
    let dns = dns(Vec::new()).await;
    dns.failing.store(true, Ordering::SeqCst);
    let config = format!(
        "server {{\n    access-log \"off\"\n    dns-server \"{}\"\n}}\nlistener \"127.0.0.1:0\"\nupstream \"origins\" {{ server \"nowhere.test:80\" }}\nsite \"*\" {{ route \"/\" {{ proxy \"origins\" }} }}\n",
        dns.addr
    );
    let parsed = sluice_config::parse("dns.kdl", &config).unwrap();
    let err = sluice::Server::start(&parsed).await.unwrap_err();
    assert!(format!("{err:#}").contains("cannot resolve server `nowhere.test:80`"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_fails_to_resolve_at_a_reload_keeps_its_last_addresses() {
    let origin = Origin::named("origin").await;
    let dns = dns(vec![Ipv4Addr::new(127, 0, 0, 1)]).await;
    let config = |body: &str| {
        format!(
            "server {{\n    access-log \"off\"\n    dns-server \"{}\"\n}}\nlistener \"127.0.0.1:0\"\nupstream \"origins\" {{ server \"svc.test:{}\" }}\nsite \"*\" {{\n route \"/v\" {{ respond 200 \"{body}\" }}\n route \"/\" {{ proxy \"origins\" }}\n}}\n",
            dns.addr,
            origin.addr.port()
        )
    };
    let proxy = Proxy::start(&config("one")).await;
    let server = proxy.server.as_ref().unwrap();
    assert_eq!(get(proxy.addr(), "/").await.2, "origin");
    let before = server.upstreams()[0].backends();

    dns.failing.store(true, Ordering::SeqCst);
    let parsed = sluice_config::parse("dns.kdl", &config("two")).unwrap();
    server.reload_config(&parsed).await.unwrap();
    assert_eq!(get(proxy.addr(), "/v").await.2, "two", "the reload applied");
    let after = server.upstreams()[0].backends();
    assert_eq!(after.len(), 1);
    assert!(Arc::ptr_eq(&before[0], &after[0]), "the last addresses (same backend) are kept");
    assert_eq!(get(proxy.addr(), "/").await.2, "origin");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_servers_ports_and_weights() {
    let one = Ipv4Addr::new(127, 0, 0, 1);
    let a_listener = TcpListener::bind((one, 0)).await.unwrap();
    let b_listener = TcpListener::bind((one, 0)).await.unwrap();
    let (pa, pb) = (a_listener.local_addr().unwrap().port(), b_listener.local_addr().unwrap().port());
    drop((a_listener, b_listener));
    let _a = origin_at(SocketAddr::from((one, pa)), "a").await;
    let _b = origin_at(SocketAddr::from((one, pb)), "b").await;
    let dns = dns(Vec::new()).await;
    dns.names.lock().unwrap().insert("a.svc.test".into(), vec![one]);
    dns.names.lock().unwrap().insert("b.svc.test".into(), vec![one]);
    *dns.srv.lock().unwrap() = vec![(3, pa, "a.svc.test".into()), (1, pb, "b.svc.test".into())];
    let config = format!(
        "server {{\n    access-log \"off\"\n    dns-server \"{}\"\n}}\nlistener \"127.0.0.1:0\"\nupstream \"origins\" {{ server \"_http._tcp.svc.test\" srv=#true }}\nsite \"*\" {{ route \"/\" {{ proxy \"origins\" }} }}\n",
        dns.addr
    );
    let proxy = Proxy::start(&config).await;
    let group = proxy.server.as_ref().unwrap().upstreams()[0].clone();
    let mut members: Vec<(String, u32)> = group.backends().iter().map(|b| (b.name().to_owned(), b.weight())).collect();
    members.sort();
    assert_eq!(members, [(format!("a.svc.test:{pa}"), 3), (format!("b.svc.test:{pb}"), 1)]);
    let mut bodies = String::new();
    for _ in 0..8 {
        bodies.push_str(std::str::from_utf8(&get(proxy.addr(), "/").await.2).unwrap());
    }
    assert_eq!(bodies.matches('a').count(), 6, "weights 3:1 from the SRV records: {bodies}");

    // The SRV answer drops a: the group follows.
    *dns.srv.lock().unwrap() = vec![(1, pb, "b.svc.test".into())];
    until("only b is left", || group.backends().len() == 1).await;
    assert_eq!(get(proxy.addr(), "/").await.2, "b");
    proxy.shutdown().await;
}

#[test]
fn srv_servers_are_names_without_ports_or_weights() {
    let base = |server: &str| {
        format!(
            "listener \"127.0.0.1:0\"\nupstream \"o\" {{ {server} }}\nsite \"*\" {{ route \"/\" {{ proxy \"o\" }} }}\n"
        )
    };
    let ok = sluice_config::parse("srv.kdl", &base("server \"_http._tcp.svc.test\" srv=#true")).unwrap();
    assert!(ok.upstreams[0].servers[0].srv);
    let err = sluice_config::parse("srv.kdl", &base("server \"_http._tcp.svc.test\" srv=#true weight=2"))
        .unwrap_err()
        .render(false);
    assert!(err.contains("takes its weights from its SRV records"), "{err}");
    let err = sluice_config::parse("srv.kdl", &base("server \"svc.test:80\" srv=#true")).unwrap_err().render(false);
    assert!(err.contains("invalid SRV name"), "{err}");
}
