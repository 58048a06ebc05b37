//! Shared test harness: in-process origins, the proxy started from KDL text, and clients
//! (hyper HTTP/1.1, hyper h2c, raw TCP).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub mod h2raw;

pub type OriginBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;
pub type Handler =
    Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<OriginBody>> + Send>> + Send + Sync>;

/// A body from bytes.
pub fn full(b: impl Into<Bytes>) -> OriginBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A body made of given frames (data and trailers).
pub fn frames(frames: Vec<hyper::body::Frame<Bytes>>) -> OriginBody {
    struct Frames(std::collections::VecDeque<hyper::body::Frame<Bytes>>);
    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = Box<dyn std::error::Error + Send + Sync>;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(Ok))
        }
    }
    Frames(frames.into()).boxed()
}

/// A body whose frames come from a channel (ends when the sender is dropped).
pub fn channel_body(rx: tokio::sync::mpsc::Receiver<hyper::body::Frame<Bytes>>) -> OriginBody {
    struct Channel(tokio::sync::mpsc::Receiver<hyper::body::Frame<Bytes>>);
    impl http_body::Body for Channel {
        type Data = Bytes;
        type Error = Box<dyn std::error::Error + Send + Sync>;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|f| f.map(Ok))
        }
    }
    Channel(rx).boxed()
}

/// A body of `len` bytes generated in 64 KiB chunks as it is read (never held in memory).
pub fn generated(len: u64) -> OriginBody {
    struct Gen {
        left: u64,
        chunk: Bytes,
    }
    impl http_body::Body for Gen {
        type Data = Bytes;
        type Error = Box<dyn std::error::Error + Send + Sync>;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            if self.left == 0 {
                return std::task::Poll::Ready(None);
            }
            let n = self.left.min(self.chunk.len() as u64) as usize;
            self.left -= n as u64;
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(self.chunk.slice(..n)))))
        }
        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(self.left)
        }
    }
    Gen { left: len, chunk: Bytes::from(vec![b'x'; 64 * 1024]) }.boxed()
}

/// Reads a body to its end, counting bytes without keeping them.
pub async fn drain(mut body: hyper::body::Incoming) -> u64 {
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            n += data.len() as u64;
        }
    }
    n
}

/// This process's resident set size in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// What an origin saw.
#[derive(Default)]
pub struct OriginLog {
    pub connections: AtomicUsize,
    pub requests: AtomicUsize,
    pub heads: Mutex<Vec<http::request::Parts>>,
}

/// An in-process origin server (HTTP/1.1, or h2c when `h2` is true).
pub struct Origin {
    pub addr: SocketAddr,
    pub log: Arc<OriginLog>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    /// An origin answering every request with `handler`.
    pub async fn start(h2: bool, handler: Handler) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(OriginLog::default());
        let log2 = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                log2.connections.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let log3 = log2.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let log4 = log3.clone();
                        async move {
                            log4.requests.fetch_add(1, Ordering::SeqCst);
                            let (parts, body) = req.into_parts();
                            log4.heads.lock().unwrap().push(clone_parts(&parts));
                            Ok::<_, Infallible>(handler(Request::from_parts(parts, body)).await)
                        }
                    });
                    let io = TokioIo::new(stream);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await;
                    } else {
                        let _ =
                            hyper::server::conn::http1::Builder::new().serve_connection(io, svc).with_upgrades().await;
                    }
                });
            }
        });
        Origin { addr, log, task }
    }

    /// An HTTP/1.1 origin that answers `200 <name>`.
    pub async fn named(name: &'static str) -> Origin {
        Origin::start(false, Arc::new(move |_req| Box::pin(async move { Response::new(full(name)) }))).await
    }

    pub fn requests(&self) -> usize {
        self.log.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.log.connections.load(Ordering::SeqCst)
    }

    pub fn last_head(&self) -> http::request::Parts {
        clone_parts(self.log.heads.lock().unwrap().last().expect("origin saw no request"))
    }
}

fn clone_parts(p: &http::request::Parts) -> http::request::Parts {
    let mut b = Request::builder().method(p.method.clone()).uri(p.uri.clone()).version(p.version);
    *b.headers_mut().unwrap() = p.headers.clone();
    b.body(()).unwrap().into_parts().0
}

/// A running proxy built from KDL text; `{origin}` / `{origin2}`... are substituted by the caller.
pub struct Proxy {
    pub server: Option<sluice::Server>,
    pub addrs: Vec<SocketAddr>,
}

impl Proxy {
    pub async fn start(kdl: &str) -> Proxy {
        let config = match sluice_config::parse("test.kdl", kdl) {
            Ok(c) => c,
            Err(e) => panic!("{}", e.render(false)),
        };
        let server = sluice::Server::start(&config).await.unwrap();
        let addrs = server.local_addrs().to_vec();
        Proxy { server: Some(server), addrs }
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The admin listener's address (the config must have `admin`).
    pub fn admin(&self) -> SocketAddr {
        self.server.as_ref().unwrap().admin_addr().unwrap()
    }

    pub async fn shutdown(mut self) -> bool {
        self.server.take().unwrap().shutdown().await
    }
}

/// The value of the first `/metrics` line of the admin listener at `admin` that starts
/// with `line_start` (a series with its labels); panics with the whole text if none does.
pub async fn metric(admin: SocketAddr, line_start: &str) -> u64 {
    let text = admin_text(admin, "/metrics").await;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{line_start}` in\n{text}"))
}

/// GET `path` from the admin API at `admin` (Host `localhost`: without a token it answers
/// only to its own address or a loopback name); the body as text.
pub async fn admin_text(admin: SocketAddr, path: &str) -> String {
    let mut c = h1_client(admin).await;
    let req = Request::get(path).header("host", "localhost").body(full("")).unwrap();
    let resp = c.send_request(req).await.unwrap();
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// A simple config: one listener, one upstream of `origins`, everything proxied.
pub fn simple_config(origins: &[SocketAddr], extra_upstream: &str) -> String {
    let servers: String = origins.iter().map(|a| format!("    server \"{a}\"\n")).collect();
    format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0"
upstream "origins" {{
{servers}{extra_upstream}
}}
site "*" {{
    route "/" {{ proxy "origins" }}
}}
"#
    )
}

/// An HTTP/1.1 client connection.
pub async fn h1_client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<OriginBody> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
}

/// An h2c (prior knowledge) client connection.
pub async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<OriginBody> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// GET `path` on a new HTTP/1.1 connection; returns status, headers and body.
pub async fn get(addr: SocketAddr, path: &str) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let mut c = h1_client(addr).await;
    let req = Request::get(path).header("host", "example.test").body(full("")).unwrap();
    let resp = c.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

/// `method path` with `headers` on a new HTTP/1.1 connection (Host `example.test`);
/// returns status, headers and the whole body.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::StatusCode, http::HeaderMap, Vec<u8>) {
    let mut c = h1_client(addr).await;
    let mut req = Request::builder().method(method).uri(path).header("host", "example.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = c.send_request(req.body(full("")).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
}

/// Sends raw bytes on a new TCP connection and reads until the server closes it.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The `sluice` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// A child process that is killed (and reaped) when dropped, so a test that fails midway
/// leaves no server running behind it. Dereferences to the `Child`.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Starts the binary and waits until it logged that it started; returns the child (killed
/// when dropped) and its remaining log lines.
pub fn spawn_until_started(args: &[&str]) -> (KillOnDrop, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = KillOnDrop(
        std::process::Command::new(BIN)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("sluice did not start");
        if line.contains("sluice started") {
            return (child, rx);
        }
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits (at most 10 s, checking every 20 ms) until `cond` holds.
pub async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A `redis-server` of the test's own on a free loopback port (no persistence), stopped
/// when dropped. When the machine has no `redis-server`, it is installed with apt-get
/// (Debian's package), as the README says; a test fails with the reason if that fails.
pub struct RedisServer {
    pub port: u16,
    process: KillOnDrop,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> RedisServer {
        let binary = redis_binary();
        let process = KillOnDrop(
            std::process::Command::new(binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("starting redis-server"),
        );
        for _ in 0..500 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(1)));
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                    return RedisServer { port, process };
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {port}");
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Freezes it (SIGSTOP): a Redis that hangs with its connections open.
    pub fn freeze(&self) {
        let status = std::process::Command::new("kill").args(["-STOP", &self.process.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -STOP redis-server");
    }

    /// Resumes it after [`freeze`](Self::freeze) (SIGCONT).
    pub fn thaw(&self) {
        let status = std::process::Command::new("kill").args(["-CONT", &self.process.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -CONT redis-server");
    }

    /// Stops it (a crash, for the failure tests).
    pub fn stop(mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn redis_binary() -> &'static str {
    static FOUND: std::sync::OnceLock<Result<&'static str, String>> = std::sync::OnceLock::new();
    let found = FOUND.get_or_init(|| {
        for candidate in ["redis-server", "/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
            if std::process::Command::new(candidate).arg("--version").output().is_ok_and(|o| o.status.success()) {
                return Ok(candidate);
            }
        }
        // Not installed: install Debian's package (the README's test command relies on this),
        // as root or through passwordless sudo, refreshing the package lists if needed.
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let run = |args: &[&str]| {
            let (program, rest): (&str, Vec<&str>) =
                if root { ("apt-get", args.to_vec()) } else { ("sudo", [&["-n", "apt-get"], args].concat()) };
            std::process::Command::new(program).args(rest).env("DEBIAN_FRONTEND", "noninteractive").output()
        };
        let install = ["install", "-y", "-q", "redis-server"];
        let mut outcome = run(&install);
        if !outcome.as_ref().is_ok_and(|o| o.status.success()) {
            let _ = run(&["update", "-q"]);
            outcome = run(&install);
        }
        match outcome {
            Ok(o) if o.status.success() => Ok("/usr/bin/redis-server"),
            Ok(o) => Err(format!(
                "redis-server is not installed and `apt-get install -y redis-server` failed ({}): install it and rerun",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!(
                "redis-server is not installed and apt-get cannot run ({e}): install Redis (`apt-get install redis-server`) and rerun"
            )),
        }
    });
    match found {
        Ok(path) => path,
        Err(why) => panic!("{why}"),
    }
}
