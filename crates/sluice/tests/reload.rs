//! Configuration reload over real sockets: routes, upstreams and certificates change for
//! new requests (also on open keep-alive connections); requests in flight finish on the
//! old configuration; pools and health state carry over for unchanged servers; an invalid
//! file changes nothing; listeners are added and removed; `POST /reload` and SIGHUP on the
//! real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pki;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use http::Request;
use http_body_util::BodyExt;

fn parse(kdl: &str) -> sluice_config::Config {
    match sluice_config::parse("test.kdl", kdl) {
        Ok(c) => c,
        Err(e) => panic!("{}", e.render(false)),
    }
}

/// One listener (`listen`), upstream `origins` of `servers`, and `routes` in the `*` site.
fn config(listen: &str, servers: &[SocketAddr], routes: &str) -> String {
    let servers: String = servers.iter().map(|a| format!("    server \"{a}\"\n")).collect();
    format!(
        "server {{ access-log \"off\" }}\nlistener \"{listen}\"\nupstream \"origins\" {{\n{servers}}}\nsite \"*\" {{\n{routes}\n}}\n"
    )
}

async fn send(
    c: &mut hyper::client::conn::http1::SendRequest<OriginBody>,
    path: &str,
) -> (u16, http::HeaderMap, String) {
    c.ready().await.unwrap();
    let resp = c.send_request(Request::get(path).header("host", "a.test").body(full("")).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status.as_u16(), parts.headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_routes_and_upstreams_for_new_requests_on_open_connections() {
    let (a, b) = (Origin::named("origin-a").await, Origin::named("origin-b").await);
    let before =
        config("127.0.0.1:0", &[a.addr], "route \"/v\" { respond 200 \"one\" }\nroute \"/\" { proxy \"origins\" }");
    let proxy = Proxy::start(&before).await;
    let server = proxy.server.as_ref().unwrap();
    let mut open = h1_client(proxy.addr()).await;
    assert_eq!(send(&mut open, "/v").await.2, "one");
    assert_eq!(send(&mut open, "/").await.2, "origin-a");

    // The same listener (same configured address); new routes and a new server.
    let after = config(
        "127.0.0.1:0",
        &[b.addr],
        "route \"/v\" { respond 200 \"two\" }\nroute \"/new\" { respond 201 \"new\" }\nroute \"/\" { proxy \"origins\" }",
    );
    let done = server.reload_config(&parse(&after)).await.unwrap();
    assert_eq!(done.version, 2);
    assert!(done.added.is_empty() && done.removed.is_empty());
    assert_eq!(server.local_addrs(), vec![proxy.addr()], "the listener kept its socket");

    // The keep-alive connection opened before the reload sees the new configuration.
    assert_eq!(send(&mut open, "/v").await.2, "two");
    assert_eq!(send(&mut open, "/new").await.0, 201);
    assert_eq!(send(&mut open, "/").await.2, "origin-b");
    assert_eq!(get(proxy.addr(), "/").await.2, "origin-b");
    assert!(proxy.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_servers_keep_their_pool_and_health_across_a_reload() {
    let (a, b) = (Origin::named("a").await, Origin::named("b").await);
    let routes = "route \"/\" { proxy \"origins\" }";
    let proxy = Proxy::start(&config("127.0.0.1:0", &[a.addr, b.addr], routes)).await;
    let server = proxy.server.as_ref().unwrap();
    for _ in 0..4 {
        get(proxy.addr(), "/").await;
    }
    let old = server.upstreams()[0].backends();
    let pooled = a.connections() + b.connections();
    // Health state an operator set: server a is drained.
    old[0].health().set_drained(true);

    // Same group settings; server b is replaced by c.
    let c = Origin::named("c").await;
    server.reload_config(&parse(&config("127.0.0.1:0", &[a.addr, c.addr], routes))).await.unwrap();
    let new = server.upstreams()[0].backends();
    assert!(Arc::ptr_eq(&old[0], &new[0]), "server a is the same backend (pool, health, ejection state)");
    assert!(!Arc::ptr_eq(&old[1], &new[1]));
    assert!(new[0].health().drained(), "its drained state carried over");
    for _ in 0..4 {
        assert_eq!(get(proxy.addr(), "/").await.2, "c", "a stays drained: c serves everything");
    }
    new[0].health().set_drained(false);
    for _ in 0..4 {
        get(proxy.addr(), "/").await;
    }
    assert_eq!(a.connections() + b.connections(), pooled, "server a reused its pooled connection");

    // A changed connection setting (the pool) rebuilds the group's servers.
    let changed = config("127.0.0.1:0", &[a.addr, c.addr], routes)
        .replace("upstream \"origins\" {\n", "upstream \"origins\" {\n    pool max-idle=4\n");
    server.reload_config(&parse(&changed)).await.unwrap();
    assert!(!Arc::ptr_eq(&new[0], &server.upstreams()[0].backends()[0]));
    assert!(proxy.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_finish_on_the_configuration_they_started_with() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (arrived_tx, mut arrived_rx) = tokio::sync::mpsc::unbounded_channel();
    let slow = Origin::start(
        false,
        Arc::new(move |_req| {
            let mut release = release_rx.clone();
            let arrived = arrived_tx.clone();
            Box::pin(async move {
                let _ = arrived.send(());
                let _ = release.wait_for(|r| *r).await;
                http::Response::new(full("slow answer"))
            })
        }),
    )
    .await;
    let other = Origin::named("other").await;
    let proxy = Proxy::start(&config("127.0.0.1:0", &[slow.addr], "route \"/\" { proxy \"origins\" }")).await;
    let addr = proxy.addr();
    let in_flight = tokio::spawn(async move { get(addr, "/").await });
    arrived_rx.recv().await.unwrap();
    let server = proxy.server.as_ref().unwrap();
    server
        .reload_config(&parse(&config("127.0.0.1:0", &[other.addr], "route \"/\" { proxy \"origins\" }")))
        .await
        .unwrap();
    assert_eq!(get(addr, "/").await.2, "other");
    release_tx.send(true).unwrap();
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status.as_u16(), body.as_ref()), (200, &b"slow answer"[..]));
    assert!(proxy.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_changes_nothing_and_says_where() {
    let origin = Origin::named("origin").await;
    let dir = pki::temp_dir("reload-invalid");
    let path = dir.join("sluice.kdl");
    let good = config("127.0.0.1:0", &[origin.addr], "route \"/v\" { respond 200 \"one\" }");
    std::fs::write(&path, &good).unwrap();
    let server = sluice::Server::start_with(&parse(&good), Some(path.clone()), Default::default()).await.unwrap();
    let addr = server.local_addrs()[0];

    // A typo on line 6: an unknown upstream.
    let bad = good.replace("respond 200 \"one\"", "proxy \"nowhere\"");
    std::fs::write(&path, &bad).unwrap();
    let err = server.reload().await.unwrap_err().to_string();
    assert!(err.contains("sluice.kdl:7:"), "file:line:col in the error: {err}");
    assert!(err.contains("nowhere"), "{err}");
    assert_eq!(get(addr, "/v").await.2, "one", "the running configuration is untouched");
    assert_eq!(server.control().current().version, 1);
    assert_eq!(server.control().reload_counts(), (0, 1));

    // Valid, but a new listener cannot be bound: nothing changes either.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unbindable = format!("{}listener \"{}\"\n", good.replace("\"one\"", "\"two\""), taken.local_addr().unwrap());
    std::fs::write(&path, &unbindable).unwrap();
    let err = server.reload().await.unwrap_err().to_string();
    assert!(err.contains("cannot listen on"), "{err}");
    assert_eq!(get(addr, "/v").await.2, "one");
    assert_eq!(server.local_addrs(), vec![addr]);

    std::fs::write(&path, good.replace("\"one\"", "\"three\"")).unwrap();
    assert_eq!(server.reload().await.unwrap().version, 2);
    assert_eq!(get(addr, "/v").await.2, "three");
    assert_eq!(server.control().reload_counts(), (1, 2));
    assert!(server.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_and_removed_by_a_reload() {
    add_and_remove_listeners("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_and_removed_by_a_reload_with_per_core_runtimes() {
    // Every listener is one SO_REUSEPORT socket per core, each on its core's runtime.
    add_and_remove_listeners("runtime \"per-core\"\nworker-threads 2\n").await;
}

async fn add_and_remove_listeners(server_settings: &str) {
    let origin = Origin::named("origin").await;
    let (first, second) = (free_port(), free_port());
    let one = format!("127.0.0.1:{first}");
    let routes = "route \"/\" { proxy \"origins\" }";
    let config = |listen: &str, servers: &[SocketAddr], routes: &str| {
        config(listen, servers, routes).replace("server { ", &format!("server {{ {server_settings}"))
    };
    let proxy = Proxy::start(&config(&one, &[origin.addr], routes)).await;
    let server = proxy.server.as_ref().unwrap();
    let first_addr: SocketAddr = one.parse().unwrap();
    let second_addr: SocketAddr = format!("127.0.0.1:{second}").parse().unwrap();
    assert!(tokio::net::TcpStream::connect(second_addr).await.is_err());

    // Add a second listener.
    let both = format!("{}listener \"{second_addr}\"\n", config(&one, &[origin.addr], routes));
    let done = server.reload_config(&parse(&both)).await.unwrap();
    assert_eq!(done.added, vec![second_addr]);
    assert_eq!(get(second_addr, "/").await.2, "origin");
    assert_eq!(server.local_addrs(), vec![first_addr, second_addr]);

    // A keep-alive connection on the first listener, then remove that listener.
    let mut open = h1_client(first_addr).await;
    assert_eq!(send(&mut open, "/").await.2, "origin");
    let only_second = config(&second_addr.to_string(), &[origin.addr], routes);
    let done = server.reload_config(&parse(&only_second)).await.unwrap();
    assert_eq!(done.removed, vec![first_addr]);
    assert_eq!(server.local_addrs(), vec![second_addr]);
    // It stops accepting at once...
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(first_addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(refused, "the removed listener still accepts");
    // ...and its open connection is drained: the next request is answered and says close.
    let (status, headers, _) = send(&mut open, "/").await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("connection").unwrap(), "close");
    assert_eq!(get(second_addr, "/").await.2, "origin");
    assert!(proxy.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_certificates() {
    let pki = pki::Pki::new("reload-cert");
    let (old, new) = (pki.server("old", &["a.test"]), pki.server("new", &["a.test"]));
    let tls_config = |cert: &pki::Issued| {
        format!(
            "server {{ access-log \"off\" }}\nlistener \"127.0.0.1:0\" {{ tls }}\nsite \"a.test\" {{\n certificate \"{}\" key=\"{}\"\n route \"/\" {{ respond 200 \"hi\" }}\n}}\n",
            cert.cert.display(),
            cert.key.display()
        )
    };
    let proxy = Proxy::start(&tls_config(&old)).await;
    let served = || async {
        let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(pki.client_config(&["http/1.1"], None))
            .connect(pki::server_name("a.test"), tcp)
            .await
            .unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    assert_eq!(served().await, old.der.to_vec());
    proxy.server.as_ref().unwrap().reload_config(&parse(&tls_config(&new))).await.unwrap();
    assert_eq!(served().await, new.der.to_vec());
    assert!(proxy.shutdown().await);
}

fn post(addr: SocketAddr, path: &str) -> impl std::future::Future<Output = (u16, String)> {
    let path = path.to_owned();
    async move {
        let mut c = h1_client(addr).await;
        let req = Request::post(path).header("host", "localhost").body(full("")).unwrap();
        let resp = c.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        (status, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_through_the_admin_api_and_on_sighup() {
    let origin = Origin::named("origin").await;
    let (port, admin_port) = (free_port(), free_port());
    let dir = pki::temp_dir("reload-bin");
    let path = dir.join("sluice.kdl");
    let file = |body: &str| {
        format!(
            "server {{\n access-log \"off\"\n admin \"127.0.0.1:{admin_port}\"\n}}\nlistener \"127.0.0.1:{port}\"\nupstream \"origins\" {{ server \"{}\" }}\nsite \"*\" {{\n route \"/v\" {{ respond 200 \"{body}\" }}\n route \"/\" {{ proxy \"origins\" }}\n}}\n",
            origin.addr
        )
    };
    std::fs::write(&path, file("one")).unwrap();
    let p = path.to_str().unwrap().to_owned();
    let (mut child, log) = tokio::task::spawn_blocking(move || spawn_until_started(&["run", "-c", &p])).await.unwrap();
    let (addr, admin): (SocketAddr, SocketAddr) =
        (format!("127.0.0.1:{port}").parse().unwrap(), format!("127.0.0.1:{admin_port}").parse().unwrap());
    assert_eq!(get(addr, "/v").await.2, "one");

    std::fs::write(&path, file("two")).unwrap();
    let (status, body) = post(admin, "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"reloaded\":true") && body.contains("\"version\":2"), "{body}");
    assert_eq!(get(addr, "/v").await.2, "two");

    // Invalid: 400, the diagnostics with file:line:col, nothing changed.
    std::fs::write(&path, file("three").replace("respond 200", "respond 999")).unwrap();
    let (status, body) = post(admin, "/reload").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("sluice.kdl:8:"), "{body}");
    assert_eq!(get(addr, "/v").await.2, "two");
    assert_eq!(post(admin, "/config").await.0, 405, "GET only");

    // SIGHUP.
    std::fs::write(&path, file("four")).unwrap();
    std::process::Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    let log = tokio::task::spawn_blocking(move || loop {
        let line = log.recv_timeout(std::time::Duration::from_secs(20)).expect("no reload logged");
        if line.contains("configuration reloaded") && line.contains("version=3") {
            return log;
        }
    })
    .await
    .unwrap();
    assert_eq!(get(addr, "/v").await.2, "four");
    let mut c = h1_client(admin).await;
    let resp =
        c.send_request(Request::get("/config").header("host", "localhost").body(full("")).unwrap()).await.unwrap();
    let config = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    assert!(config.contains("\"version\":3") && config.contains("\"succeeded\":2,\"failed\":1"), "{config}");
    let mut c = h1_client(admin).await;
    let resp =
        c.send_request(Request::get("/metrics").header("host", "localhost").body(full("")).unwrap()).await.unwrap();
    let metrics = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    assert!(metrics.contains("sluice_config_reloads_total{result=\"success\"} 2"), "{metrics}");
    assert!(metrics.contains("sluice_config_reloads_total{result=\"failure\"} 1"), "{metrics}");
    // Per-route counters survive reloads (same labels, same series): 4 requests to /v.
    assert!(
        metrics.contains("sluice_requests_total{site=\"*\",route=\"/v\",upstream=\"-\",status=\"2xx\"} 4\n"),
        "{metrics}"
    );

    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap().success());
    drop(log);
}
