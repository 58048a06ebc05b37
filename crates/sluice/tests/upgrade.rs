//! Binary upgrade between two real processes: SIGUSR2 starts a new `sluice` that takes the
//! listening sockets over a Unix socket, the old one drains and exits, and clients running
//! the whole time (new connections, keep-alive and HTTP/2) see no failed request. A new
//! process that cannot start leaves the old one serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pki;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::Request;
use http_body_util::BodyExt;

/// Kills whatever process the pid file names when the test ends, passed or not: the
/// process an upgrade starts is not the test's child, so nothing else would stop it.
struct KillOnDrop(std::path::PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = pid_in(&self.0) {
            kill(pid, "-KILL");
        }
    }
}

fn kill(pid: u32, sig: &str) {
    std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap();
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

async fn wait_gone(pid: u32) {
    for _ in 0..1000 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("process {pid} did not exit");
}

/// Counts requests and failures of clients running until `stop`.
#[derive(Default)]
struct Load {
    ok: AtomicUsize,
    failed: AtomicUsize,
    stop: AtomicBool,
}

impl Load {
    fn record(&self, result: Result<u16, String>) {
        match result {
            Ok(200) => self.ok.fetch_add(1, Ordering::Relaxed),
            other => {
                eprintln!("failed request: {other:?}");
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// What a client library does with a request that was never sent (hyper's "canceled": the
/// connection closed, after a `connection: close` response, before the request was
/// written): send it again on a new connection. Everything else is a failure.
const NOT_SENT: &str = "not sent";

async fn one_request(c: &mut hyper::client::conn::http1::SendRequest<OriginBody>) -> Result<u16, String> {
    let resp = c
        .send_request(Request::get("/").header("host", "a.test").body(full("")).unwrap())
        .await
        .map_err(|e| if e.is_canceled() { NOT_SENT.to_owned() } else { e.to_string() })?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(status)
}

/// Keep-alive HTTP/1.1: reconnects when the server ends the connection after a response
/// (`connection: close`), which is not a failure.
async fn keep_alive_client(addr: SocketAddr, load: Arc<Load>) {
    let mut c = h1_client(addr).await;
    while !load.stop.load(Ordering::Relaxed) {
        if c.ready().await.is_err() {
            c = h1_client(addr).await;
        }
        match one_request(&mut c).await {
            Err(e) if e == NOT_SENT => c = h1_client(addr).await,
            result => load.record(result),
        }
    }
}

/// A new connection per request.
async fn new_connection_client(addr: SocketAddr, load: Arc<Load>) {
    while !load.stop.load(Ordering::Relaxed) {
        let result = match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await {
                Ok((mut c, conn)) => {
                    tokio::spawn(conn);
                    one_request(&mut c).await
                }
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(format!("connect: {e}")),
        };
        load.record(result);
    }
}

/// HTTP/2 (h2c): on GOAWAY, opens a new connection.
async fn h2_client_loop(addr: SocketAddr, load: Arc<Load>) {
    let mut c = h2_client(addr).await;
    while !load.stop.load(Ordering::Relaxed) {
        if c.ready().await.is_err() {
            c = h2_client(addr).await;
        }
        let result = match c.send_request(Request::get("http://a.test/").body(full("")).unwrap()).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                resp.into_body().collect().await.map(|_| status).map_err(|e| e.to_string())
            }
            // Refused before processing (GOAWAY raced the request): a client retries these.
            Err(e) if e.is_canceled() || e.to_string().contains("refused") => {
                c = h2_client(addr).await;
                continue;
            }
            Err(e) => Err(e.to_string()),
        };
        load.record(result);
    }
}

fn config(port: u16, admin: u16, pid_file: &std::path::Path, origin: SocketAddr, body: &str) -> String {
    format!(
        "server {{\n access-log \"off\"\n shutdown-grace \"5s\"\n admin \"127.0.0.1:{admin}\"\n pid-file \"{}\"\n}}\nlistener \"127.0.0.1:{port}\" {{ h2c #true }}\nupstream \"origins\" {{ server \"{origin}\" }}\nsite \"*\" {{\n route \"/v\" {{ respond 200 \"{body}\" }}\n route \"/\" {{ proxy \"origins\" }}\n}}\n",
        pid_file.display()
    )
}

fn pid_in(path: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_hands_the_sockets_to_a_new_process_without_failing_a_request() {
    let origin = Origin::named("origin").await;
    let (port, admin_port) = (free_port(), free_port());
    let dir = pki::temp_dir("upgrade");
    let (path, pid_file) = (dir.join("sluice.kdl"), dir.join("sluice.pid"));
    std::fs::write(&path, config(port, admin_port, &pid_file, origin.addr, "old")).unwrap();
    let p = path.to_str().unwrap().to_owned();
    let (mut old, log) = tokio::task::spawn_blocking(move || spawn_until_started(&["run", "-c", &p])).await.unwrap();
    let _cleanup = KillOnDrop(pid_file.clone());
    let old_pid = old.id();
    assert_eq!(pid_in(&pid_file), Some(old_pid));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    assert_eq!(get(addr, "/v").await.2, "old");

    let load = Arc::new(Load::default());
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(tokio::spawn(keep_alive_client(addr, load.clone())));
    }
    clients.push(tokio::spawn(new_connection_client(addr, load.clone())));
    clients.push(tokio::spawn(h2_client_loop(addr, load.clone())));
    until("requests flow", || load.ok.load(Ordering::Relaxed) > 50).await;

    // The new process reads the (changed) file: the upgrade is visible.
    std::fs::write(&path, config(port, admin_port, &pid_file, origin.addr, "new")).unwrap();
    kill(old_pid, "-USR2");
    let status = tokio::task::spawn_blocking(move || old.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0), "the old process drained and exited cleanly");
    let new_pid = pid_in(&pid_file).expect("the new process wrote the pid file");
    assert_ne!(new_pid, old_pid);
    assert!(alive(new_pid));
    let before = load.ok.load(Ordering::Relaxed);
    until("requests flow to the new process", || load.ok.load(Ordering::Relaxed) > before + 50).await;
    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(load.failed.load(Ordering::Relaxed), 0, "no request failed during the upgrade");
    assert_eq!(get(addr, "/v").await.2, "new");
    let mut c = h1_client(admin).await;
    let resp = c.send_request(Request::get("/live").header("host", "localhost").body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200, "the admin socket was handed over too");

    let lines: Vec<String> = log.try_iter().collect();
    assert!(lines.iter().any(|l| l.contains("took over the listening sockets")), "{lines:#?}");
    kill(new_pid, "-TERM");
    wait_gone(new_pid).await;
    assert!(!pid_file.exists(), "the new process removed its pid file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_that_cannot_start_leaves_the_old_one_serving() {
    let origin = Origin::named("origin").await;
    let (port, admin_port) = (free_port(), free_port());
    let dir = pki::temp_dir("upgrade-fail");
    let (path, pid_file) = (dir.join("sluice.kdl"), dir.join("sluice.pid"));
    std::fs::write(&path, config(port, admin_port, &pid_file, origin.addr, "old")).unwrap();
    let p = path.to_str().unwrap().to_owned();
    let (mut old, log) = tokio::task::spawn_blocking(move || spawn_until_started(&["run", "-c", &p])).await.unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    std::fs::write(&path, "listener \"127.0.0.1:1\" {\n").unwrap();
    kill(old.id(), "-USR2");
    let log = tokio::task::spawn_blocking(move || loop {
        let line = log.recv_timeout(Duration::from_secs(20)).expect("no failure logged");
        if line.contains("binary upgrade failed") {
            return log;
        }
    })
    .await
    .unwrap();
    assert_eq!(get(addr, "/v").await.2, "old");
    assert_eq!(pid_in(&pid_file), Some(old.id()));
    kill(old.id(), "-TERM");
    assert!(tokio::task::spawn_blocking(move || old.wait()).await.unwrap().unwrap().success());
    drop(log);
}
