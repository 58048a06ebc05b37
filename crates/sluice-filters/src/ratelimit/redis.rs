//! A small Redis client for cluster-wide rate limits: one pipelined connection per
//! process, RESP2, and only what the limits need (`AUTH`, `SELECT`, `SCRIPT LOAD`,
//! `EVALSHA`/`EVAL`).
//!
//! Why not the `redis` crate: the limits send one command shape, and what matters is the
//! behaviour around it, which is easier to own than to configure: every command queued
//! while the previous batch is on the wire goes out in the next single write (pipelining
//! across all requests of the process, with no added wait), a command never waits longer
//! than the configured timeout, and while Redis is unreachable calls fail at once (no
//! request queues behind a dead server) while one task reconnects with backoff.
//!
//! A Redis that stops answering without closing its connection (stopped, swapping, a
//! network path that drops packets) is treated like one that went away: when the oldest
//! command on the connection has waited twice the timeout, or a write cannot complete in
//! that time, the connection is closed and calls fail at once until a new one is up.
//! Commands wait in a bounded queue, and a command whose caller gave up (timed out) is
//! not sent.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Where and how to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `host:port`.
    pub address: String,
    /// Longest wait for an answer.
    pub timeout: Duration,
    /// Prefix of every key.
    pub prefix: String,
    /// `AUTH` user (Redis 6 ACLs).
    pub username: Option<String>,
    /// `AUTH` password.
    pub password: Option<String>,
    /// `SELECT` database.
    pub database: u32,
}

/// A RESP value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`.
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nabc` (`None`: the null bulk string).
    Bulk(Option<Bytes>),
    /// `*2 ...` (`None`: the null array).
    Array(Option<Vec<Value>>),
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// Not connected (connecting, or backing off after a failure).
    #[error("Redis is unreachable")]
    Down,
    /// No answer within the timeout.
    #[error("Redis did not answer in time")]
    Timeout,
    /// The connection failed while the command was on it.
    #[error("the Redis connection failed: {0}")]
    Connection(String),
    /// Redis answered with an error.
    #[error("Redis: {0}")]
    Reply(String),
    /// Too many commands are waiting to be sent.
    #[error("too many commands are waiting for Redis")]
    Busy,
}

/// Commands waiting to be written, at most (a flood of new keys against a slow Redis
/// must not grow memory without bound).
const MAX_QUEUED: usize = 16 * 1024;

struct Command {
    bytes: Bytes,
    reply: oneshot::Sender<Result<Value, RedisError>>,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct RedisStats {
    /// Commands answered.
    pub calls: AtomicU64,
    /// Commands that failed (unreachable, timeout, connection lost, error reply).
    pub errors: AtomicU64,
    /// Writes to the socket (each carries every command queued at the time).
    pub writes: AtomicU64,
    /// Connections made.
    pub connects: AtomicU64,
}

/// A shared client. Cheap to clone through `Arc`.
#[derive(Debug)]
pub struct Redis {
    settings: RedisSettings,
    tx: mpsc::Sender<Command>,
    up: Arc<AtomicBool>,
    attempted: Arc<(AtomicBool, tokio::sync::Notify)>,
    script_sha: Arc<std::sync::Mutex<Option<String>>>,
    /// Counters.
    pub stats: Arc<RedisStats>,
}

/// The GCRA lease script: grants up to `ARGV[1]` requests of a key at once, on Redis's own
/// clock, and answers `{granted, tat_before_us, now_us}`. See `cluster.rs` for the algorithm.
pub const LEASE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wanted = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local delay = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local room = math.floor((now + tolerance + delay - tat) / interval) + 1
if room < 0 then room = 0 end
local granted = math.min(wanted, room)
if granted > 0 then
  local after = tat + granted * interval
  redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', math.ceil((after - now) / 1000) + 1000)
end
return {granted, tat, now}
";

impl Redis {
    /// A client for `settings`; the connection task starts on the current runtime and
    /// connects at once (and again after failures).
    pub fn start(settings: RedisSettings) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(MAX_QUEUED);
        let up = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RedisStats::default());
        let script_sha = Arc::new(std::sync::Mutex::new(None));
        let attempted = Arc::new((AtomicBool::new(false), tokio::sync::Notify::new()));
        let redis = Arc::new(Self {
            settings: settings.clone(),
            tx,
            up: up.clone(),
            attempted: attempted.clone(),
            script_sha: script_sha.clone(),
            stats: stats.clone(),
        });
        tokio::spawn(run(settings, rx, up, stats, script_sha, attempted));
        redis
    }

    /// Waits (at most `limit`) until the first connection attempt is over, so that a
    /// server starting next to a healthy Redis does not answer its first requests with
    /// the `on-redis-error` fallback. True when connected.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let (done, notify) = &*self.attempted;
        let notified = notify.notified();
        if !done.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(limit, notified).await;
        }
        self.is_up()
    }

    /// The settings.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Whether the connection is up now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Sends one command (already RESP-encoded) and waits for its answer.
    pub async fn call(&self, bytes: Bytes) -> Result<Value, RedisError> {
        if !self.is_up() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return Err(RedisError::Down);
        }
        let (reply, answer) = oneshot::channel();
        if let Err(e) = self.tx.try_send(Command { bytes, reply }) {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => RedisError::Busy,
                mpsc::error::TrySendError::Closed(_) => RedisError::Down,
            });
        }
        let result = match tokio::time::timeout(self.settings.timeout, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RedisError::Connection("closed".into())),
            Err(_) => Err(RedisError::Timeout),
        };
        let result = match result {
            Ok(Value::Error(e)) => Err(RedisError::Reply(e)),
            other => other,
        };
        let counter = if result.is_ok() { &self.stats.calls } else { &self.stats.errors };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// Runs the lease script for `key` (by its SHA once loaded; by its text when Redis
    /// forgot it, after a restart).
    pub async fn lease(&self, key: &[u8], args: [u64; 4]) -> Result<Value, RedisError> {
        let sha = self.script_sha.lock().ok().and_then(|s| s.clone());
        let mut nums: [itoa::Buffer; 4] = Default::default();
        let [a, b, c, d] = &mut nums;
        let argv = [
            a.format(args[0]).as_bytes(),
            b.format(args[1]).as_bytes(),
            c.format(args[2]).as_bytes(),
            d.format(args[3]).as_bytes(),
        ];
        if let Some(sha) = sha {
            let parts: [&[u8]; 8] = [b"EVALSHA", sha.as_bytes(), b"1", key, argv[0], argv[1], argv[2], argv[3]];
            match self.call(encode(&parts)).await {
                Err(RedisError::Reply(e)) if e.starts_with("NOSCRIPT") => {}
                other => return other,
            }
        }
        let parts: [&[u8]; 8] = [b"EVAL", LEASE_SCRIPT.as_bytes(), b"1", key, argv[0], argv[1], argv[2], argv[3]];
        self.call(encode(&parts)).await
    }
}

/// RESP encoding of a command.
pub fn encode(parts: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::with_capacity(16 + parts.iter().map(|p| p.len() + 16).sum::<usize>());
    let mut n = itoa::Buffer::new();
    out.put_u8(b'*');
    out.put_slice(n.format(parts.len()).as_bytes());
    out.put_slice(b"\r\n");
    for p in parts {
        out.put_u8(b'$');
        out.put_slice(n.format(p.len()).as_bytes());
        out.put_slice(b"\r\n");
        out.put_slice(p);
        out.put_slice(b"\r\n");
    }
    out.freeze()
}

/// Why bytes from Redis are not RESP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reply from Redis: {0}")]
pub struct ProtocolError(&'static str);

const MAX_BULK: usize = 16 << 20;
const MAX_DEPTH: usize = 8;

/// Parses one value from the front of `buf`: `Ok(None)` when more bytes are needed, else
/// the value and the bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
    parse_at(buf, 0)
}

fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let end = memchr_crlf(buf)?;
    Some((&buf[..end], end + 2))
}

fn memchr_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn number(text: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).ok_or(ProtocolError("bad number"))
}

fn parse_at(buf: &[u8], depth: usize) -> Result<Option<(Value, usize)>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("nested too deep"));
    }
    let Some(&kind) = buf.first() else { return Ok(None) };
    let Some((text, used)) = line(&buf[1..]) else {
        if buf.len() > 64 * 1024 {
            return Err(ProtocolError("line too long"));
        }
        return Ok(None);
    };
    let used = used + 1;
    let utf8 = |t: &[u8]| String::from_utf8_lossy(t).into_owned();
    match kind {
        b'+' => Ok(Some((Value::Simple(utf8(text)), used))),
        b'-' => Ok(Some((Value::Error(utf8(text)), used))),
        b':' => Ok(Some((Value::Integer(number(text)?), used))),
        b'$' => {
            let len = number(text)?;
            if len < 0 {
                return Ok(Some((Value::Bulk(None), used)));
            }
            let len = usize::try_from(len).map_err(|_| ProtocolError("bad length"))?;
            if len > MAX_BULK {
                return Err(ProtocolError("bulk string too large"));
            }
            if buf.len() < used + len + 2 {
                return Ok(None);
            }
            if &buf[used + len..used + len + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string not terminated"));
            }
            Ok(Some((Value::Bulk(Some(Bytes::copy_from_slice(&buf[used..used + len]))), used + len + 2)))
        }
        b'*' => {
            let count = number(text)?;
            if count < 0 {
                return Ok(Some((Value::Array(None), used)));
            }
            let count = usize::try_from(count).map_err(|_| ProtocolError("bad length"))?;
            if count > 1 << 20 {
                return Err(ProtocolError("array too large"));
            }
            let mut items = Vec::with_capacity(count.min(64));
            let mut at = used;
            for _ in 0..count {
                match parse_at(&buf[at..], depth + 1)? {
                    Some((v, n)) => {
                        items.push(v);
                        at += n;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(Some(items)), at)))
        }
        _ => Err(ProtocolError("unknown type byte")),
    }
}

/// The connection task: connects, serves commands, reconnects with backoff.
async fn run(
    settings: RedisSettings,
    mut rx: mpsc::Receiver<Command>,
    up: Arc<AtomicBool>,
    stats: Arc<RedisStats>,
    script_sha: Arc<std::sync::Mutex<Option<String>>>,
    attempted: Arc<(AtomicBool, tokio::sync::Notify)>,
) {
    let first_done = || {
        if !attempted.0.swap(true, Ordering::AcqRel) {
            attempted.1.notify_waiters();
        }
    };
    let mut backoff = Duration::from_millis(100);
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        match connect(&settings).await {
            Ok((stream, sha)) => {
                if let Ok(mut s) = script_sha.lock() {
                    *s = Some(sha);
                }
                stats.connects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(redis = %settings.address, "connected to Redis");
                up.store(true, Ordering::Relaxed);
                first_done();
                backoff = Duration::from_millis(100);
                let why = serve(stream, &mut rx, &stats, settings.timeout.saturating_mul(2)).await;
                up.store(false, Ordering::Relaxed);
                match why {
                    None => return, // every client is gone
                    Some(e) => {
                        tracing::warn!(redis = %settings.address, error = %e, "Redis connection lost; reconnecting")
                    }
                }
            }
            Err(e) => {
                first_done();
                // Logged at most every 30 s while Redis stays down.
                if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(30)) {
                    tracing::warn!(redis = %settings.address, error = %e, "cannot connect to Redis; cluster-wide rate limits use their on-redis-error setting");
                    last_warning = Some(tokio::time::Instant::now());
                }
            }
        }
        // Commands sent while down fail at once (callers check `up` first; these raced).
        while let Ok(c) = rx.try_recv() {
            let _ = c.reply.send(Err(RedisError::Down));
        }
        if rx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One request-response on a fresh connection (during setup).
async fn roundtrip(stream: &mut TcpStream, parts: &[&[u8]], buf: &mut BytesMut) -> Result<Value, String> {
    stream.write_all(&encode(parts)).await.map_err(|e| e.to_string())?;
    loop {
        if let Some((v, n)) = parse(buf).map_err(|e| e.to_string())? {
            buf.advance(n);
            return match v {
                Value::Error(e) => Err(e),
                v => Ok(v),
            };
        }
        if stream.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed".into());
        }
    }
}

async fn connect(settings: &RedisSettings) -> Result<(TcpStream, String), String> {
    let connecting = async {
        let mut stream = TcpStream::connect(&settings.address).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let mut buf = BytesMut::with_capacity(4096);
        if let Some(password) = &settings.password {
            match &settings.username {
                Some(user) => roundtrip(&mut stream, &[b"AUTH", user.as_bytes(), password.as_bytes()], &mut buf).await,
                None => roundtrip(&mut stream, &[b"AUTH", password.as_bytes()], &mut buf).await,
            }
            .map_err(|e| format!("AUTH: {e}"))?;
        }
        if settings.database != 0 {
            let db = settings.database.to_string();
            roundtrip(&mut stream, &[b"SELECT", db.as_bytes()], &mut buf).await.map_err(|e| format!("SELECT: {e}"))?;
        }
        let sha = match roundtrip(&mut stream, &[b"SCRIPT", b"LOAD", LEASE_SCRIPT.as_bytes()], &mut buf).await {
            Ok(Value::Bulk(Some(b))) => String::from_utf8_lossy(&b).into_owned(),
            Ok(other) => return Err(format!("SCRIPT LOAD answered {other:?}")),
            Err(e) => return Err(format!("SCRIPT LOAD: {e}")),
        };
        Ok((stream, sha))
    };
    match tokio::time::timeout(settings.timeout.max(Duration::from_secs(1)), connecting).await {
        Ok(r) => r,
        Err(_) => Err("timed out".into()),
    }
}

/// Serves commands on a connection until it fails (`Some(error)`) or every sender is
/// gone (`None`). Commands that arrive together go out in one write. The connection is
/// given up when its oldest command has waited `stall` without an answer, or a write
/// takes longer than that.
async fn serve(
    stream: TcpStream,
    rx: &mut mpsc::Receiver<Command>,
    stats: &RedisStats,
    stall: Duration,
) -> Option<String> {
    type Waiting = VecDeque<(oneshot::Sender<Result<Value, RedisError>>, tokio::time::Instant)>;
    let (mut reader, mut writer) = stream.into_split();
    let mut waiting: Waiting = VecDeque::new();
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut input = BytesMut::with_capacity(16 * 1024);
    let fail_all = |waiting: &mut Waiting, why: &str| {
        for (w, _) in waiting.drain(..) {
            let _ = w.send(Err(RedisError::Connection(why.to_owned())));
        }
    };
    let stalled = tokio::time::sleep(stall);
    tokio::pin!(stalled);
    loop {
        let oldest = waiting.front().map(|(_, sent)| *sent + stall);
        if let Some(at) = oldest {
            if stalled.deadline() != at {
                stalled.as_mut().reset(at);
            }
        }
        tokio::select! {
            // Biased, answers first: a reply already on the socket always settles its
            // command before the stall timer is looked at.
            biased;
            read = reader.read_buf(&mut input) => {
                match read {
                    Ok(0) => {
                        fail_all(&mut waiting, "closed by Redis");
                        return Some("closed by Redis".into());
                    }
                    Err(e) => {
                        fail_all(&mut waiting, "read failed");
                        return Some(e.to_string());
                    }
                    Ok(_) => loop {
                        match parse(&input) {
                            Ok(Some((value, n))) => {
                                input.advance(n);
                                match waiting.pop_front() {
                                    Some((w, _)) => {
                                        let _ = w.send(Ok(value));
                                    }
                                    None => {
                                        return Some("an answer nobody asked for".into());
                                    }
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                fail_all(&mut waiting, "protocol error");
                                return Some(e.to_string());
                            }
                        }
                    },
                }
            }
            () = &mut stalled, if oldest.is_some() => {
                fail_all(&mut waiting, "no answer");
                return Some(format!("no answer in {stall:?}"));
            }
            command = rx.recv() => {
                let first = command?;
                out.clear();
                let batch_start = waiting.len();
                let mut batch = std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok()));
                let queued = tokio::time::Instant::now();
                // Everything else already queued goes in the same write; a command whose
                // caller has given up is dropped.
                while out.len() < 256 * 1024 {
                    let Some(c) = batch.next() else { break };
                    if c.reply.is_closed() {
                        continue;
                    }
                    out.put_slice(&c.bytes);
                    waiting.push_back((c.reply, queued));
                }
                if out.is_empty() {
                    continue;
                }
                stats.writes.fetch_add(1, Ordering::Relaxed);
                match tokio::time::timeout(stall, writer.write_all(&out)).await {
                    Ok(Ok(())) => {
                        // Redis has `stall` to answer from when the bytes are out.
                        let written = tokio::time::Instant::now();
                        for (_, sent) in waiting.iter_mut().skip(batch_start) {
                            *sent = written;
                        }
                    }
                    Ok(Err(e)) => {
                        fail_all(&mut waiting, "write failed");
                        return Some(e.to_string());
                    }
                    Err(_) => {
                        fail_all(&mut waiting, "write stalled");
                        return Some(format!("a write did not complete in {stall:?}"));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn commands_are_encoded_as_resp_arrays() {
        assert_eq!(&encode(&[b"GET", b"k"])[..], b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn replies_parse_incrementally() {
        let reply = b"*3\r\n:2\r\n:1700000000000000\r\n$2\r\nhi\r\n";
        for cut in 0..reply.len() {
            assert_eq!(parse(&reply[..cut]).unwrap(), None, "{cut}");
        }
        let (v, n) = parse(reply).unwrap().unwrap();
        assert_eq!(n, reply.len());
        assert_eq!(
            v,
            Value::Array(Some(vec![
                Value::Integer(2),
                Value::Integer(1_700_000_000_000_000),
                Value::Bulk(Some(Bytes::from_static(b"hi")))
            ]))
        );
        assert_eq!(parse(b"-NOSCRIPT x\r\n").unwrap().unwrap().0, Value::Error("NOSCRIPT x".into()));
        assert_eq!(parse(b"$-1\r\n").unwrap().unwrap().0, Value::Bulk(None));
        assert!(parse(b"?x\r\n").is_err());
        assert!(parse(b"$3\r\nabcd\r\n").is_err());
        assert!(parse(b":nan\r\n").is_err());
    }

    /// Settings for a Redis nobody runs (the discard port), with `timeout`.
    pub(crate) fn unreachable(timeout: Duration) -> RedisSettings {
        RedisSettings {
            address: "127.0.0.1:9".into(),
            timeout,
            prefix: String::new(),
            username: None,
            password: None,
            database: 0,
        }
    }

    /// A loopback server that reads what it is sent and never answers; what it read.
    async fn silent_server() -> (TcpStream, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
            got
        });
        (TcpStream::connect(addr).await.unwrap(), server)
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_given_up_after_the_stall() {
        let (stream, _server) = silent_server().await;
        let (tx, mut rx) = mpsc::channel(8);
        let (reply, answer) = oneshot::channel();
        tx.send(Command { bytes: encode(&[b"PING"]), reply }).await.unwrap();
        let stats = RedisStats::default();
        let why =
            tokio::time::timeout(Duration::from_secs(5), serve(stream, &mut rx, &stats, Duration::from_millis(100)))
                .await
                .expect("serve gave up on its own");
        assert!(why.unwrap().contains("no answer"));
        assert!(matches!(answer.await.unwrap(), Err(RedisError::Connection(_))));
    }

    #[tokio::test]
    async fn commands_whose_caller_gave_up_are_not_sent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let live = encode(&[b"GET", b"live"]);
        let expected = live.clone();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = vec![0u8; expected.len()];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(b"+OK\r\n").await.unwrap();
            got
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let (gone, answer_gone) = oneshot::channel();
        drop(answer_gone);
        tx.send(Command { bytes: encode(&[b"GET", b"abandoned"]), reply: gone }).await.unwrap();
        let (reply, answer) = oneshot::channel();
        tx.send(Command { bytes: live.clone(), reply }).await.unwrap();
        let stats = RedisStats::default();
        let serving = tokio::spawn(async move { serve(stream, &mut rx, &stats, Duration::from_secs(5)).await });
        assert_eq!(answer.await.unwrap(), Ok(Value::Simple("OK".into())));
        assert_eq!(server.await.unwrap(), live.to_vec(), "only the live command was written");
        drop(tx);
        serving.abort();
    }

    #[tokio::test]
    async fn a_full_queue_fails_at_once_instead_of_growing() {
        let (tx, _rx) = mpsc::channel(MAX_QUEUED);
        let redis = Redis {
            settings: unreachable(Duration::from_millis(50)),
            tx,
            up: Arc::new(AtomicBool::new(true)),
            attempted: Arc::new((AtomicBool::new(true), tokio::sync::Notify::new())),
            script_sha: Arc::new(std::sync::Mutex::new(None)),
            stats: Arc::new(RedisStats::default()),
        };
        // Nothing drains this queue: the first MAX_QUEUED calls wait (and time out), the
        // next is refused at once.
        for _ in 0..MAX_QUEUED {
            let (reply, _answer) = oneshot::channel();
            redis.tx.try_send(Command { bytes: Bytes::new(), reply }).unwrap();
        }
        assert_eq!(redis.call(encode(&[b"PING"])).await, Err(RedisError::Busy));
    }

    #[test]
    fn hostile_replies_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut bytes = Vec::new();
            let len = (state % 40) as usize;
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(b"*$:+-\r\n0123-9ab"[(state % 15) as usize]);
            }
            let _ = parse(&bytes);
        }
        // Deep nesting is refused rather than recursed into.
        let deep = "*1\r\n".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
