//! The HTTP/1 request framing guard and the downstream read timeouts.
//!
//! hyper's parser is lenient where RFC 9112 allows a recipient to be: it accepts a bare LF
//! as a line terminator, a `Content-Length` next to `Transfer-Encoding` (the length is
//! ignored), and repeated identical `Content-Length` headers. A proxy must not be lenient
//! there: a front end and a back end that frame one message differently is how requests
//! are smuggled. [`ServerIo`] sits between the socket and hyper, follows the request
//! framing byte by byte (heads, `Content-Length` bodies, chunked bodies) and, when a head
//! is ambiguous, makes hyper reject it: it corrupts the head's final line feed, so hyper's
//! parser fails and answers `400 Bad Request` before any handler (or origin) sees the
//! request, and closes the connection.
//!
//! The same wrapper enforces the header-read timeout (slowloris: a head must arrive in
//! full within the limit once it started, and the first one within the limit of the
//! connection opening) and the keep-alive idle timeout (no request in flight and nothing
//! received), by ending the stream, which makes hyper close the connection.
//!
//! For HTTP/2 and after an upgrade the wrapper is a pass-through, which also replays the
//! bytes read to detect the protocol.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::deadline::Deadline;

use crate::ConnectionInfo;

/// Limits and timeouts of the guard.
#[derive(Debug, Clone, Copy)]
pub struct GuardConfig {
    /// Longest request head accepted; past it, scanning stops and hyper answers 431.
    pub max_header_size: usize,
    /// Time to receive a complete head once it started (and the first head of a connection).
    pub header_read_timeout: Duration,
    /// Time a connection may stay idle between requests.
    pub keepalive_timeout: Duration,
    /// After this much idle time between requests, the HTTP/1 session state (hyper's read
    /// and write buffers) is released and the connection waits with only its socket;
    /// `None` keeps it for the whole keep-alive period.
    pub idle_release: Option<Duration>,
    /// With more open connections than this on the listener, an idle HTTP/1 session is
    /// released as soon as its response is done: memory then follows requests in flight,
    /// not open connections (nginx's behaviour with many idle keep-alive clients).
    pub release_above: usize,
    /// Longest time a write to the client may stay blocked (the client does not read:
    /// slow-read attacks); the connection is then closed. nginx's `send_timeout`.
    pub send_timeout: Duration,
    /// Most header fields in an HTTP/1 request head; more get 431 (hyper's limit).
    pub max_headers: usize,
    /// Whether header names with an underscore are forwarded (nginx's
    /// `underscores_in_headers`); by default they are dropped.
    pub underscores_in_headers: bool,
}

impl Default for GuardConfig {
    /// The listener defaults of the configuration reference.
    fn default() -> Self {
        Self {
            max_header_size: 64 * 1024,
            header_read_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(75),
            idle_release: Some(Duration::from_secs(1)),
            release_above: 256,
            send_timeout: Duration::from_secs(60),
            max_headers: 100,
            underscores_in_headers: false,
        }
    }
}

/// Why a request head was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A line ended with LF alone.
    BareLf,
    /// A CR not followed by LF.
    BareCr,
    /// A header line starting with whitespace (obsolete line folding).
    ObsFold,
    /// Whitespace between a header name and the colon.
    SpaceBeforeColon,
    /// `Content-Length` and `Transfer-Encoding` together.
    ContentLengthWithTransferEncoding,
    /// More than one `Content-Length` header, or a list of values.
    RepeatedContentLength,
    /// A `Content-Length` that is not a plain decimal number.
    InvalidContentLength,
    /// A request target with a fragment (`#`), which RFC 9112 §3.2 has no room for: the
    /// URI parser would drop it silently and forward another target than the one sent.
    FragmentInTarget,
}

impl Violation {
    /// A short description for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Violation::BareLf => "bare LF line terminator",
            Violation::BareCr => "bare CR in head",
            Violation::ObsFold => "obsolete line folding",
            Violation::SpaceBeforeColon => "whitespace before header colon",
            Violation::ContentLengthWithTransferEncoding => "Content-Length with Transfer-Encoding",
            Violation::RepeatedContentLength => "repeated Content-Length",
            Violation::InvalidContentLength => "invalid Content-Length",
            Violation::FragmentInTarget => "fragment in request target",
        }
    }
}

/// What follows a valid head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    Opaque,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { value: u64, digits: u32 },
    Ext { value: u64 },
    SizeLf { value: u64 },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for (or inside) a request head.
    Head,
    /// Skipping a body of known length.
    Length(u64),
    /// Following a chunked body.
    Chunked(Chunk),
    /// Not following framing any more (HTTP/2, upgrade, or a problem hyper will report).
    Passthrough,
    /// A violation was found; the stream reads as ended.
    Poisoned,
}

/// Outcome of scanning freshly read bytes.
enum Scan {
    Ok,
    /// Keep only this many bytes of the read and end the stream after them.
    Poison {
        keep: usize,
    },
}

#[derive(Debug)]
struct Scanner {
    state: State,
    /// A head that spans several reads (empty when a head fits in one read).
    head: Vec<u8>,
    max_head: usize,
    heads_seen: u64,
    head_started: Option<Instant>,
}

impl Scanner {
    fn new(max_head: usize) -> Self {
        Self { state: State::Head, head: Vec::new(), max_head, heads_seen: 0, head_started: None }
    }

    fn scan(&mut self, buf: &mut [u8]) -> Scan {
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                State::Passthrough | State::Poisoned => return Scan::Ok,
                State::Head => {
                    if self.head.is_empty() {
                        // Empty lines before a request line are ignored (RFC 9112 section 2.2).
                        while i < buf.len() && (buf[i] == b'\r' || buf[i] == b'\n') {
                            i += 1;
                        }
                        if i == buf.len() {
                            return Scan::Ok;
                        }
                        if self.head_started.is_none() {
                            self.head_started = Some(Instant::now());
                        }
                        match find_head_end(&buf[i..], 0) {
                            Some(len) => {
                                let end = i + len;
                                match self.head_done(&buf[i..end]) {
                                    Ok(()) => i = end,
                                    Err(v) => return self.poison(buf, end, v),
                                }
                            }
                            None => {
                                if buf.len() - i > self.max_head {
                                    self.state = State::Passthrough;
                                    return Scan::Ok;
                                }
                                self.head.extend_from_slice(&buf[i..]);
                                return Scan::Ok;
                            }
                        }
                    } else {
                        let old = self.head.len();
                        let take = (buf.len() - i).min(self.max_head.saturating_sub(old) + 4);
                        self.head.extend_from_slice(&buf[i..i + take]);
                        match find_head_end(&self.head, old.saturating_sub(3)) {
                            Some(len) => {
                                let end = i + (len - old);
                                let head = std::mem::take(&mut self.head);
                                let result = self.head_done(&head[..len]);
                                self.head = head;
                                self.head.clear();
                                match result {
                                    Ok(()) => i = end,
                                    Err(v) => return self.poison(buf, end, v),
                                }
                            }
                            None => {
                                if self.head.len() > self.max_head {
                                    self.head = Vec::new();
                                    self.state = State::Passthrough;
                                }
                                return Scan::Ok;
                            }
                        }
                    }
                }
                State::Length(remaining) => {
                    let n = remaining.min((buf.len() - i) as u64);
                    i += n as usize;
                    self.state = if remaining == n { State::Head } else { State::Length(remaining - n) };
                }
                State::Chunked(chunk) => {
                    if let Chunk::Data(remaining) = chunk {
                        let n = remaining.min((buf.len() - i) as u64);
                        i += n as usize;
                        self.state =
                            State::Chunked(if remaining == n { Chunk::DataCr } else { Chunk::Data(remaining - n) });
                    } else {
                        self.state = step_chunk(chunk, buf[i]);
                        i += 1;
                    }
                }
            }
        }
        Scan::Ok
    }

    fn head_done(&mut self, head: &[u8]) -> Result<(), Violation> {
        self.heads_seen += 1;
        self.head_started = None;
        let framing = validate_head(head)?;
        self.state = match framing {
            Framing::None | Framing::Length(0) => State::Head,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size { value: 0, digits: 0 }),
            Framing::Opaque => State::Passthrough,
        };
        Ok(())
    }

    fn poison(&mut self, buf: &mut [u8], end: usize, violation: Violation) -> Scan {
        tracing::debug!(violation = violation.as_str(), "rejecting request head");
        // The head's last byte is its final LF; hyper's parser fails on a NUL there.
        buf[end - 1] = 0;
        self.state = State::Poisoned;
        self.head = Vec::new();
        Scan::Poison { keep: end }
    }
}

/// What the guard made of a byte stream (see [`screen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Screened {
    /// Request heads that passed.
    pub heads: u64,
    /// Where the stream was cut because a head was rejected (just after that head).
    pub rejected_at: Option<usize>,
    /// Whether the guard stopped following the framing (an upgrade, a head over the limit,
    /// a chunk size it cannot read): the rest is left to hyper.
    pub passed_through: bool,
}

/// Runs the framing guard over `data` as if it arrived in reads of `read_size` bytes.
/// The verdict must not depend on how the bytes were split into reads: fuzz targets and
/// tests check exactly that.
pub fn screen(data: &[u8], max_header_size: usize, read_size: usize) -> Screened {
    let mut scanner = Scanner::new(max_header_size);
    let mut offset = 0;
    let mut rejected_at = None;
    for chunk in data.chunks(read_size.max(1)) {
        let mut buf = chunk.to_vec();
        if let Scan::Poison { keep } = scanner.scan(&mut buf) {
            rejected_at = Some(offset + keep);
            break;
        }
        offset += chunk.len();
    }
    Screened { heads: scanner.heads_seen, rejected_at, passed_through: scanner.state == State::Passthrough }
}

/// Finds the end of a head (just past its empty line), searching LFs from `from`.
fn find_head_end(data: &[u8], from: usize) -> Option<usize> {
    for p in memchr::memchr_iter(b'\n', data.get(from..)?) {
        let p = from + p;
        match data.get(p + 1) {
            Some(b'\n') => return Some(p + 2),
            Some(b'\r') if data.get(p + 2) == Some(&b'\n') => return Some(p + 3),
            Some(b'\r') if data.get(p + 2).is_none() => return None,
            None => return None,
            _ => {}
        }
    }
    None
}

/// Checks what hyper's parser lets through, and says how the body is framed.
fn validate_head(head: &[u8]) -> Result<Framing, Violation> {
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut opaque = false;
    let mut first = true;
    for line in head.split(|&b| b == b'\n') {
        let Some(line) = line.strip_suffix(b"\r") else {
            if line.is_empty() {
                // The terminator after the final LF; a bare LF before it is caught below.
                continue;
            }
            return Err(Violation::BareLf);
        };
        if line.contains(&b'\r') {
            return Err(Violation::BareCr);
        }
        if line.is_empty() {
            continue;
        }
        if first {
            first = false;
            if line.starts_with(b"CONNECT ") {
                opaque = true;
            }
            let mut words = line.split(|&b| b == b' ');
            if words.nth(1).is_some_and(|target| target.contains(&b'#')) {
                return Err(Violation::FragmentInTarget);
            }
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(Violation::ObsFold);
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = &line[..colon];
        if name.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(Violation::SpaceBeforeColon);
        }
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            if content_length.is_some() {
                return Err(Violation::RepeatedContentLength);
            }
            if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
                return Err(if value.contains(&b',') {
                    Violation::RepeatedContentLength
                } else {
                    Violation::InvalidContentLength
                });
            }
            content_length = Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            opaque = true;
        }
    }
    // The final line must be an empty CRLF line, not a bare LF.
    if head.len() >= 2 && head[head.len() - 2] != b'\r' {
        return Err(Violation::BareLf);
    }
    if transfer_encoding && content_length.is_some() {
        return Err(Violation::ContentLengthWithTransferEncoding);
    }
    Ok(if opaque {
        Framing::Opaque
    } else if transfer_encoding {
        Framing::Chunked
    } else {
        content_length.map_or(Framing::None, Framing::Length)
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// One byte of chunked framing outside chunk data. Anything unexpected stops the guard:
/// hyper's own decoder rejects it and closes the connection.
fn step_chunk(chunk: Chunk, b: u8) -> State {
    let next = match chunk {
        Chunk::Size { value, digits } => match b {
            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' if digits < 16 => {
                let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                Chunk::Size { value: value * 16 + d, digits: digits + 1 }
            }
            // Extensions (and whitespace before them) run to the CR.
            b';' | b' ' | b'\t' if digits > 0 => Chunk::Ext { value },
            b'\r' if digits > 0 => Chunk::SizeLf { value },
            _ => return State::Passthrough,
        },
        Chunk::Ext { value } => match b {
            b'\r' => Chunk::SizeLf { value },
            b'\n' => return State::Passthrough,
            _ => Chunk::Ext { value },
        },
        Chunk::SizeLf { value } => match b {
            b'\n' if value == 0 => Chunk::TrailerStart,
            b'\n' => Chunk::Data(value),
            _ => return State::Passthrough,
        },
        Chunk::Data(_) => return State::Passthrough,
        Chunk::DataCr => match b {
            b'\r' => Chunk::DataLf,
            _ => return State::Passthrough,
        },
        Chunk::DataLf => match b {
            b'\n' => Chunk::Size { value: 0, digits: 0 },
            _ => return State::Passthrough,
        },
        Chunk::TrailerStart => match b {
            b'\r' => Chunk::EndLf,
            b'\n' => return State::Passthrough,
            _ => Chunk::TrailerLine,
        },
        Chunk::TrailerLine => match b {
            b'\r' => Chunk::TrailerLf,
            b'\n' => return State::Passthrough,
            _ => Chunk::TrailerLine,
        },
        Chunk::TrailerLf => match b {
            b'\n' => Chunk::TrailerStart,
            _ => return State::Passthrough,
        },
        Chunk::EndLf => match b {
            b'\n' => return State::Head,
            _ => return State::Passthrough,
        },
    };
    State::Chunked(next)
}

/// Which deadline the timer is armed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arm {
    None,
    /// Waiting for the first head, or inside a head (by head count).
    Head(u64),
    /// Idle between requests (by head count and finished-request count).
    Idle(u64, u64),
    /// A response in progress: re-check for idleness later.
    Busy(u64, u64),
}

pin_project! {
    /// The stream hyper reads from and writes to on the server side: replays pre-read
    /// bytes, guards HTTP/1 framing, and applies the header-read and keep-alive timeouts.
    pub struct ServerIo<IO> {
        #[pin]
        io: IO,
        prefix: Bytes,
        scanner: Option<Box<Scanner>>,
        conn: Arc<ConnectionInfo>,
        config: GuardConfig,
        opened: Instant,
        deadline: Deadline,
        idle_since: Instant,
        armed: Arm,
        ended: bool,
        released: bool,
        load: Option<Arc<AtomicUsize>>,
        shutdown_on_close: bool,
        poisoned: bool,
        written_since_poison: bool,
        // Armed while a write is blocked (see `GuardConfig::send_timeout`); boxed and made
        // on first use, so connections whose writes never block pay one pointer.
        write_stall: Option<Box<Deadline>>,
        write_blocked: bool,
    }
}

impl<IO> ServerIo<IO> {
    /// Guards an HTTP/1 connection; `prefix` holds bytes already read from `io`.
    pub fn http1(io: IO, prefix: Bytes, conn: Arc<ConnectionInfo>, config: GuardConfig) -> Self {
        Self::new(io, prefix, Some(Box::new(Scanner::new(config.max_header_size))), conn, config)
    }

    /// A pass-through (HTTP/2) that only replays `prefix`.
    pub fn passthrough(io: IO, prefix: Bytes, conn: Arc<ConnectionInfo>, config: GuardConfig) -> Self {
        Self::new(io, prefix, None, conn, config)
    }

    fn new(
        io: IO,
        prefix: Bytes,
        scanner: Option<Box<Scanner>>,
        conn: Arc<ConnectionInfo>,
        config: GuardConfig,
    ) -> Self {
        Self {
            io,
            prefix,
            scanner,
            conn,
            config,
            opened: Instant::now(),
            deadline: Deadline::default(),
            idle_since: Instant::now(),
            armed: Arm::None,
            ended: false,
            released: false,
            load: None,
            shutdown_on_close: true,
            poisoned: false,
            written_since_poison: false,
            write_stall: None,
            write_blocked: false,
        }
    }

    /// Lets the guard see how many connections the listener has open (see
    /// [`GuardConfig::release_above`]).
    pub fn with_load(mut self, open: Arc<AtomicUsize>) -> Self {
        self.load = Some(open);
        self
    }

    /// Whether ending the connection calls the stream's shutdown (needed for TLS'
    /// `close_notify`; plain TCP sends its FIN on close anyway).
    pub fn shutdown_on_close(mut self, yes: bool) -> Self {
        self.shutdown_on_close = yes;
        self
    }

    /// Whether a head was rejected and no response followed it (hyper gave up on the
    /// poisoned head as incomplete): the caller should answer 400 itself.
    pub fn owes_bad_request(&self) -> bool {
        self.poisoned && !self.written_since_poison
    }

    /// The connection this stream belongs to.
    pub fn connection(&self) -> &Arc<ConnectionInfo> {
        &self.conn
    }

    /// The limits in force.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// Whether the stream was ended to release an idle session (see
    /// [`GuardConfig::idle_release`]) rather than because the client went away.
    pub fn released(&self) -> bool {
        self.released
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead> AsyncRead for ServerIo<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // An advanced-to-empty `Bytes` still holds its buffer: drop it.
                *this.prefix = Bytes::new();
            }
        } else {
            match this.io.poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let Some(scanner) = this.scanner.as_deref() else {
                        return Poll::Pending;
                    };
                    loop {
                        let heads = scanner.heads_seen;
                        let finished = this.conn.finished();
                        let busy = heads > finished || this.conn.in_flight() > 0;
                        let crowded =
                            this.load.as_ref().is_some_and(|l| l.load(Ordering::Relaxed) > this.config.release_above)
                                && this.config.idle_release.is_some();
                        let (arm, deadline) = match (scanner.state, scanner.head_started) {
                            (State::Head, Some(started)) => {
                                (Arm::Head(heads), started + this.config.header_read_timeout)
                            }
                            (State::Head, None) if heads == 0 => {
                                (Arm::Head(0), *this.opened + this.config.header_read_timeout)
                            }
                            (State::Head, None) if !busy => {
                                if crowded {
                                    // Many connections: memory follows requests, not connections.
                                    *this.idle_since = Instant::now();
                                    *this.ended = true;
                                    *this.released = true;
                                    return Poll::Ready(Ok(()));
                                }
                                let arm = Arm::Idle(heads, finished);
                                if *this.armed != arm {
                                    *this.idle_since = Instant::now();
                                }
                                let wait = match this.config.idle_release {
                                    Some(r) if r < this.config.keepalive_timeout => r,
                                    _ => this.config.keepalive_timeout,
                                };
                                (arm, *this.idle_since + wait)
                            }
                            (State::Head, None) => {
                                // A response is still on its way, and hyper may not read again
                                // once it is done: look again then (crowded: as soon as it
                                // finishes; otherwise at the next idle-release tick).
                                if crowded {
                                    this.conn.idle_waker.register(cx.waker());
                                    if heads <= this.conn.finished() && this.conn.in_flight() == 0 {
                                        continue;
                                    }
                                    *this.armed = Arm::None;
                                    return Poll::Pending;
                                }
                                let check = this
                                    .config
                                    .idle_release
                                    .unwrap_or(this.config.keepalive_timeout)
                                    .min(this.config.keepalive_timeout);
                                (Arm::Busy(heads, finished), Instant::now() + check)
                            }
                            _ => {
                                *this.armed = Arm::None;
                                return Poll::Pending;
                            }
                        };
                        // A lazily re-armed deadline: keep-alive traffic costs no timer-wheel
                        // update per request, only one per timeout period.
                        if *this.armed != arm {
                            *this.armed = arm;
                            this.deadline.set(deadline);
                        }
                        ready!(this.deadline.poll_expired(cx));
                        if matches!(arm, Arm::Busy(..)) {
                            *this.armed = Arm::None;
                            continue;
                        }
                        *this.ended = true;
                        if matches!(arm, Arm::Idle(..))
                            && Instant::now() < *this.idle_since + this.config.keepalive_timeout
                        {
                            // Not a timeout: end hyper's session to free its buffers; the
                            // server keeps the socket and starts a new session on new bytes.
                            *this.released = true;
                        } else {
                            tracing::debug!(client = %this.conn.client_addr, idle = matches!(arm, Arm::Idle(..)),
                                "closing connection: read timeout");
                        }
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
        let read = buf.filled().len() - before;
        if read == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(scanner) = this.scanner {
            *this.armed = Arm::None;
            if let Scan::Poison { keep } = scanner.scan(&mut buf.filled_mut()[before..]) {
                buf.set_filled(before + keep);
                *this.ended = true;
                *this.poisoned = true;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite> AsyncWrite for ServerIo<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        *this.written_since_poison |= *this.poisoned;
        let polled = this.io.as_mut().poll_write(cx, buf);
        stall(polled, this.write_stall, this.write_blocked, this.config.send_timeout, &this.conn.client_addr, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        *this.written_since_poison |= *this.poisoned;
        let polled = this.io.as_mut().poll_write_vectored(cx, bufs);
        stall(polled, this.write_stall, this.write_blocked, this.config.send_timeout, &this.conn.client_addr, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        let polled = this.io.as_mut().poll_flush(cx);
        stall(polled, this.write_stall, this.write_blocked, this.config.send_timeout, &this.conn.client_addr, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // An upgraded connection (a WebSocket tunnel) is shut down for real, also on plain
        // TCP: the tunnel passes the origin's half-close on with it, and the socket is not
        // dropped until the client's side is done too.
        let tunnel = self.scanner.as_ref().is_some_and(|s| s.state == State::Passthrough);
        if self.released || (!self.shutdown_on_close && !tunnel) {
            // Released: the session ended to free memory, the connection stays open.
            // Plain TCP: dropping the socket closes it with a FIN after pending data.
            return Poll::Ready(Ok(()));
        }
        self.project().io.poll_shutdown(cx)
    }
}

/// The send timeout: a write that stays blocked (the client stopped reading) for longer
/// than `limit` fails, which ends the connection. The clock starts when a write first
/// blocks and stops at the next write that makes progress.
fn stall<T>(
    polled: Poll<io::Result<T>>,
    deadline: &mut Option<Box<Deadline>>,
    blocked: &mut bool,
    limit: Duration,
    client: &std::net::SocketAddr,
    cx: &mut Context<'_>,
) -> Poll<io::Result<T>> {
    if polled.is_ready() {
        *blocked = false;
        return polled;
    }
    let deadline = deadline.get_or_insert_with(Default::default);
    if !*blocked {
        *blocked = true;
        deadline.set(Instant::now() + limit);
    }
    match deadline.poll_expired(cx) {
        Poll::Ready(()) => {
            tracing::debug!(%client, "closing connection: the client did not read for the send timeout");
            Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "send timeout: the client stopped reading")))
        }
        Poll::Pending => Poll::Pending,
    }
}

impl<IO: AsyncRead + Unpin> ServerIo<IO> {
    /// After a released session: waits (at most the rest of the keep-alive period) for the
    /// client's next bytes and keeps them for the next session. False when the client
    /// closed, the keep-alive period ended, or reading failed.
    pub async fn wait_for_request(&mut self) -> bool {
        self.ended = false;
        self.released = false;
        self.armed = Arm::None;
        self.deadline.set(self.idle_since + self.config.keepalive_timeout);
        // One byte, and the connection's own timer: an idle connection holds no buffer
        // and no extra timer while it waits.
        let mut byte = [0u8; 1];
        let got = std::future::poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut byte);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => return Poll::Ready(buf.filled().len() == 1),
                Poll::Ready(Err(_)) => return Poll::Ready(false),
                Poll::Pending => {}
            }
            self.deadline.poll_expired(cx).map(|()| false)
        })
        .await;
        if got {
            self.prefix = Bytes::copy_from_slice(&byte);
        }
        got
    }

    /// Consumes the wrapper, giving back the stream.
    pub fn into_inner(self) -> IO {
        self.io
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
