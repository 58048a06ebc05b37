//! A raw HTTP/2 (prior-knowledge h2c) client for hostile-input tests.
//!
//! A well-behaved client library such as hyper cannot send the frame sequences behind
//! HTTP/2 Rapid Reset (CVE-2023-44487), CONTINUATION floods (the CVE-2024-27316 class) or
//! "MadeYouReset" (CVE-2025-8671), so the tests that check the proxy's defences write frames
//! byte for byte with [`RawH2`]. Writers only append to a buffer, so a test can queue
//! thousands of frames and send them in one go with [`RawH2::flush`]; the outcome is then
//! judged from frame types and error codes with [`RawH2::read_until_goaway_or_close`].
//!
//! Header blocks use only HPACK "literal without indexing, new name" fields (see
//! [`request_block`]), so nothing here keeps HPACK dynamic-table state. Responses are never
//! HPACK-decoded.
//!
//! Do not use this under tokio's paused clock: while the runtime waits on real sockets the
//! paused clock jumps straight to the deadline and every read looks like a timeout.
//!
//! ```ignore
//! let mut h2 = RawH2::connect(proxy.addr()).await?;
//! let block = request_block("GET", "/", "sluice.test", &[]);
//! for _ in 0..1_000 {
//!     let id = h2.next_stream_id();
//!     h2.headers(id, &block, true, true)?;
//!     h2.rst_stream(id, code::CANCEL)?;
//! }
//! let _ = h2.flush().await; // an error only means the server has already hung up
//! let outcome = h2.read_until_goaway_or_close(Duration::from_secs(5)).await;
//! assert!(outcome.goaway == Some(code::ENHANCE_YOUR_CALM) || outcome.closed, "{outcome:?}");
//! ```
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client connection preface (RFC 9113 section 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes in a frame header: 3 length, 1 type, 1 flags, 4 stream id.
pub const FRAME_HEADER_LEN: usize = 9;

/// The largest payload the 24-bit length field can describe.
pub const MAX_FRAME_PAYLOAD: usize = (1 << 24) - 1;

/// Frame types (RFC 9113 section 6).
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY.
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE.
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags. Which ones mean something depends on the frame type.
pub mod flag {
    /// END_STREAM on DATA and HEADERS.
    pub const END_STREAM: u8 = 0x1;
    /// ACK on SETTINGS and PING (same bit as END_STREAM).
    pub const ACK: u8 = 0x1;
    /// END_HEADERS on HEADERS, PUSH_PROMISE and CONTINUATION.
    pub const END_HEADERS: u8 = 0x4;
    /// PADDED on DATA, HEADERS and PUSH_PROMISE.
    pub const PADDED: u8 = 0x8;
    /// PRIORITY on HEADERS.
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes carried by RST_STREAM and GOAWAY (RFC 9113 section 7).
pub mod code {
    /// NO_ERROR.
    pub const NO_ERROR: u32 = 0x0;
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 0x1;
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: u32 = 0x2;
    /// FLOW_CONTROL_ERROR.
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    /// SETTINGS_TIMEOUT.
    pub const SETTINGS_TIMEOUT: u32 = 0x4;
    /// STREAM_CLOSED.
    pub const STREAM_CLOSED: u32 = 0x5;
    /// FRAME_SIZE_ERROR.
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 0x7;
    /// CANCEL.
    pub const CANCEL: u32 = 0x8;
    /// COMPRESSION_ERROR.
    pub const COMPRESSION_ERROR: u32 = 0x9;
    /// CONNECT_ERROR.
    pub const CONNECT_ERROR: u32 = 0xa;
    /// ENHANCE_YOUR_CALM.
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
    /// INADEQUATE_SECURITY.
    pub const INADEQUATE_SECURITY: u32 = 0xc;
    /// HTTP_1_1_REQUIRED.
    pub const HTTP_1_1_REQUIRED: u32 = 0xd;

    /// The RFC name of an error code, for assertion messages.
    pub fn name(code: u32) -> &'static str {
        match code {
            NO_ERROR => "NO_ERROR",
            PROTOCOL_ERROR => "PROTOCOL_ERROR",
            INTERNAL_ERROR => "INTERNAL_ERROR",
            FLOW_CONTROL_ERROR => "FLOW_CONTROL_ERROR",
            SETTINGS_TIMEOUT => "SETTINGS_TIMEOUT",
            STREAM_CLOSED => "STREAM_CLOSED",
            FRAME_SIZE_ERROR => "FRAME_SIZE_ERROR",
            REFUSED_STREAM => "REFUSED_STREAM",
            CANCEL => "CANCEL",
            COMPRESSION_ERROR => "COMPRESSION_ERROR",
            CONNECT_ERROR => "CONNECT_ERROR",
            ENHANCE_YOUR_CALM => "ENHANCE_YOUR_CALM",
            INADEQUATE_SECURITY => "INADEQUATE_SECURITY",
            HTTP_1_1_REQUIRED => "HTTP_1_1_REQUIRED",
            _ => "unknown",
        }
    }
}

/// SETTINGS parameter identifiers (RFC 9113 section 6.5.2).
pub mod setting {
    /// SETTINGS_HEADER_TABLE_SIZE.
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// SETTINGS_ENABLE_PUSH.
    pub const ENABLE_PUSH: u16 = 0x2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_FRAME_SIZE.
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// How much to ask the socket for per read.
const READ_CHUNK: usize = 16 * 1024;

/// While flushing we also read, so a server that answers every frame cannot fill its send
/// buffer and stop reading ours (a deadlock). Past this much unparsed input we stop reading
/// during a flush rather than grow without bound.
const READ_BUF_CAP: usize = 16 * 1024 * 1024;

/// One frame received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Frame type, one of [`kind`].
    pub kind: u8,
    /// Flags, see [`flag`].
    pub flags: u8,
    /// Stream identifier with the reserved bit cleared.
    pub stream_id: u32,
    /// The payload, padding included.
    pub payload: Bytes,
}

impl Frame {
    /// Whether all of the flag bits in `bits` are set.
    pub fn has_flag(&self, bits: u8) -> bool {
        self.flags & bits == bits
    }

    /// Whether this is a SETTINGS or PING acknowledgement.
    pub fn is_ack(&self) -> bool {
        matches!(self.kind, kind::SETTINGS | kind::PING) && self.has_flag(flag::ACK)
    }

    /// Whether this is a HEADERS frame (a response head or trailers).
    pub fn is_headers(&self) -> bool {
        self.kind == kind::HEADERS
    }

    /// Whether this is a DATA frame.
    pub fn is_data(&self) -> bool {
        self.kind == kind::DATA
    }

    /// Whether this is a GOAWAY frame.
    pub fn is_goaway(&self) -> bool {
        self.kind == kind::GOAWAY
    }

    /// The error code of a GOAWAY frame; `None` for other frames or a short payload.
    pub fn goaway_code(&self) -> Option<u32> {
        if self.is_goaway() {
            be_u32(&self.payload, 4)
        } else {
            None
        }
    }

    /// The last stream id a GOAWAY frame says the server processed.
    pub fn goaway_last_stream(&self) -> Option<u32> {
        if self.is_goaway() {
            be_u32(&self.payload, 0).map(|id| id & 0x7fff_ffff)
        } else {
            None
        }
    }

    /// Whether this is a RST_STREAM frame.
    pub fn is_rst(&self) -> bool {
        self.kind == kind::RST_STREAM
    }

    /// The error code of a RST_STREAM frame; `None` for other frames or a short payload.
    pub fn rst_code(&self) -> Option<u32> {
        if self.is_rst() {
            be_u32(&self.payload, 0)
        } else {
            None
        }
    }

    /// The opaque data of a PING frame; `None` for other frames or a payload not 8 bytes long.
    pub fn ping_payload(&self) -> Option<[u8; 8]> {
        if self.kind == kind::PING {
            <[u8; 8]>::try_from(&self.payload[..]).ok()
        } else {
            None
        }
    }
}

/// What the server did in response to what a test sent, as seen by
/// [`RawH2::read_until_goaway_or_close`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The error code of the GOAWAY that ended the read, if one did.
    pub goaway: Option<u32>,
    /// The last stream id that GOAWAY named.
    pub goaway_last_stream: Option<u32>,
    /// The connection ended (EOF, reset, or another read error) before any GOAWAY.
    pub closed: bool,
    /// The read error that ended the connection, if it did not end with a clean EOF.
    pub close_error: Option<io::ErrorKind>,
    /// The time limit passed with the connection still open and no GOAWAY.
    pub timed_out: bool,
    /// HEADERS frames received (response heads, and trailers if any).
    pub responses: usize,
    /// RST_STREAM frames received.
    pub resets_received: usize,
    /// RST_STREAM frames received, counted by error code.
    pub reset_codes: BTreeMap<u32, usize>,
    /// DATA payload bytes received, padding included.
    pub data_bytes: usize,
}

/// A prior-knowledge h2c connection driven frame by frame.
///
/// Frame writers append to an internal buffer and fail only when the payload cannot be
/// described by the 24-bit length field; nothing reaches the server until
/// [`flush`](Self::flush). Stream ids and other fields are written exactly as given,
/// reserved bits included, so tests can send what a correct client never would.
pub struct RawH2 {
    stream: TcpStream,
    read_buf: BytesMut,
    write_buf: Vec<u8>,
    /// How much of `write_buf` has reached the socket; kept here so a flush cut short by a
    /// timeout resumes where it stopped instead of resending.
    write_pos: usize,
    next_stream: u32,
    read_eof: bool,
    /// A read error met while flushing, handed to the next [`RawH2::read_frame`].
    read_error: Option<io::Error>,
}

impl RawH2 {
    /// Connects, then sends the client preface and an empty SETTINGS frame. Waits for nothing
    /// from the server.
    pub async fn connect(addr: SocketAddr) -> io::Result<RawH2> {
        Self::connect_with_settings(addr, &[]).await
    }

    /// Connects, then sends the client preface and a SETTINGS frame carrying `settings`
    /// (identifier, value) pairs, e.g. `(setting::INITIAL_WINDOW_SIZE, 0)`. Waits for nothing
    /// from the server.
    pub async fn connect_with_settings(addr: SocketAddr, settings: &[(u16, u32)]) -> io::Result<RawH2> {
        let stream = TcpStream::connect(addr).await?;
        // Floods are many tiny frames; do not let Nagle hold them back.
        stream.set_nodelay(true)?;
        let mut h2 = RawH2 {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: Vec::new(),
            write_pos: 0,
            next_stream: 1,
            read_eof: false,
            read_error: None,
        };
        h2.raw_bytes(PREFACE);
        h2.settings(settings)?;
        h2.flush().await?;
        Ok(h2)
    }

    /// The next client stream id: 1, 3, 5, ...
    pub fn next_stream_id(&mut self) -> u32 {
        let id = self.next_stream;
        self.next_stream = self.next_stream.wrapping_add(2);
        id
    }

    /// Bytes queued and not yet written to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.write_buf.len() - self.write_pos
    }

    /// Queues arbitrary bytes, e.g. a truncated frame or a wrong preface.
    pub fn raw_bytes(&mut self, bytes: &[u8]) {
        self.write_buf.extend_from_slice(bytes);
    }

    /// Queues one frame with any type, flags, stream id and payload.
    pub fn raw_frame(&mut self, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> io::Result<()> {
        encode_frame(kind, flags, stream_id, payload, &mut self.write_buf)
    }

    /// Queues a SETTINGS frame with the given (identifier, value) pairs.
    pub fn settings(&mut self, settings: &[(u16, u32)]) -> io::Result<()> {
        let mut payload = Vec::with_capacity(settings.len() * 6);
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        self.raw_frame(kind::SETTINGS, 0, 0, &payload)
    }

    /// Queues a SETTINGS acknowledgement.
    pub fn settings_ack(&mut self) -> io::Result<()> {
        self.raw_frame(kind::SETTINGS, flag::ACK, 0, &[])
    }

    /// Queues a HEADERS frame carrying `block` (see [`request_block`]).
    pub fn headers(&mut self, stream_id: u32, block: &[u8], end_stream: bool, end_headers: bool) -> io::Result<()> {
        let mut flags = 0;
        if end_stream {
            flags |= flag::END_STREAM;
        }
        if end_headers {
            flags |= flag::END_HEADERS;
        }
        self.raw_frame(kind::HEADERS, flags, stream_id, block)
    }

    /// Queues a CONTINUATION frame carrying more of a header block.
    pub fn continuation(&mut self, stream_id: u32, block: &[u8], end_headers: bool) -> io::Result<()> {
        let flags = if end_headers { flag::END_HEADERS } else { 0 };
        self.raw_frame(kind::CONTINUATION, flags, stream_id, block)
    }

    /// Queues an unpadded DATA frame.
    pub fn data(&mut self, stream_id: u32, payload: &[u8], end_stream: bool) -> io::Result<()> {
        let flags = if end_stream { flag::END_STREAM } else { 0 };
        self.raw_frame(kind::DATA, flags, stream_id, payload)
    }

    /// Queues a PRIORITY frame. `depends_on` is written as given; its top bit is the
    /// exclusive flag.
    pub fn priority(&mut self, stream_id: u32, depends_on: u32, weight: u8) -> io::Result<()> {
        let mut payload = [0; 5];
        payload[..4].copy_from_slice(&depends_on.to_be_bytes());
        payload[4] = weight;
        self.raw_frame(kind::PRIORITY, 0, stream_id, &payload)
    }

    /// Queues a RST_STREAM frame.
    pub fn rst_stream(&mut self, stream_id: u32, error_code: u32) -> io::Result<()> {
        self.raw_frame(kind::RST_STREAM, 0, stream_id, &error_code.to_be_bytes())
    }

    /// Queues a WINDOW_UPDATE frame; stream 0 is the connection window. An increment of 0 is
    /// written as is (a stream error the server must answer with RST_STREAM).
    pub fn window_update(&mut self, stream_id: u32, increment: u32) -> io::Result<()> {
        self.raw_frame(kind::WINDOW_UPDATE, 0, stream_id, &increment.to_be_bytes())
    }

    /// Queues a PING frame.
    pub fn ping(&mut self, payload: [u8; 8]) -> io::Result<()> {
        self.raw_frame(kind::PING, 0, 0, &payload)
    }

    /// Queues a PING acknowledgement echoing `payload`.
    pub fn ping_ack(&mut self, payload: [u8; 8]) -> io::Result<()> {
        self.raw_frame(kind::PING, flag::ACK, 0, &payload)
    }

    /// Queues a GOAWAY frame without debug data.
    pub fn goaway(&mut self, last_stream: u32, code: u32) -> io::Result<()> {
        let mut payload = [0; 8];
        payload[..4].copy_from_slice(&last_stream.to_be_bytes());
        payload[4..].copy_from_slice(&code.to_be_bytes());
        self.raw_frame(kind::GOAWAY, 0, 0, &payload)
    }

    /// Writes everything queued. Frames the server sends meanwhile are kept for
    /// [`read_frame`](Self::read_frame), so a server answering each frame cannot stall us.
    ///
    /// An error usually means the server has closed the connection (see [`is_peer_closed`]);
    /// the queue is dropped then, and reads still return what arrived before the close.
    pub async fn flush(&mut self) -> io::Result<()> {
        let result = self.write_queued().await;
        if result.is_err() {
            self.write_buf.clear();
            self.write_pos = 0;
        }
        result
    }

    /// Like [`flush`](Self::flush), but a server that has closed the connection is not an
    /// error: `Ok(true)` when everything was written, `Ok(false)` when the server hung up first.
    pub async fn flush_or_closed(&mut self) -> io::Result<bool> {
        match self.flush().await {
            Ok(()) => Ok(true),
            Err(err) if is_peer_closed(&err) => Ok(false),
            Err(err) => Err(err),
        }
    }

    async fn write_queued(&mut self) -> io::Result<()> {
        let (mut reader, mut writer) = self.stream.split();
        while self.write_pos < self.write_buf.len() {
            let can_read = !self.read_eof && self.read_error.is_none() && self.read_buf.len() < READ_BUF_CAP;
            if can_read {
                self.read_buf.reserve(READ_CHUNK);
            }
            // Both operations are cancel-safe: the branch that loses has done nothing.
            tokio::select! {
                written = writer.write(&self.write_buf[self.write_pos..]) => match written? {
                    0 => return Err(io::ErrorKind::WriteZero.into()),
                    n => self.write_pos += n,
                },
                read = reader.read_buf(&mut self.read_buf), if can_read => match read {
                    Ok(0) => self.read_eof = true,
                    Ok(_) => {}
                    Err(err) => self.read_error = Some(err),
                },
            }
        }
        self.write_buf.clear();
        self.write_pos = 0;
        Ok(())
    }

    /// Reads the next frame from the server. `Ok(None)` on a clean EOF between frames;
    /// `UnexpectedEof` if the connection ends inside a frame. Cancel-safe.
    pub async fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = parse_frame(&mut self.read_buf) {
                return Ok(Some(frame));
            }
            if let Some(err) = self.read_error.take() {
                self.read_eof = true;
                return Err(err);
            }
            if self.read_eof {
                return if self.read_buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a frame"))
                };
            }
            self.read_buf.reserve(READ_CHUNK);
            match self.stream.read_buf(&mut self.read_buf).await {
                Ok(0) => self.read_eof = true,
                Ok(_) => {}
                Err(err) => {
                    self.read_eof = true;
                    return Err(err);
                }
            }
        }
    }

    /// Flushes anything queued, then reads frames until a GOAWAY arrives, the connection
    /// ends, or `limit` passes, and reports what was seen.
    ///
    /// Server SETTINGS are acknowledged and PINGs answered on the way, so a server that
    /// insists on them does not end the connection for that reason. Received DATA is not
    /// credited back with WINDOW_UPDATE, so a large response stalls at the window.
    pub async fn read_until_goaway_or_close(&mut self, limit: Duration) -> Outcome {
        let deadline = tokio::time::Instant::now() + limit;
        let mut outcome = Outcome::default();
        loop {
            if self.queued_bytes() > 0 {
                // A failed write means the server has gone; the read below says how.
                if tokio::time::timeout_at(deadline, self.flush()).await.is_err() {
                    outcome.timed_out = true;
                    return outcome;
                }
            }
            let frame = match tokio::time::timeout_at(deadline, self.read_frame()).await {
                Err(_elapsed) => {
                    outcome.timed_out = true;
                    return outcome;
                }
                Ok(Ok(Some(frame))) => frame,
                Ok(Ok(None)) => {
                    outcome.closed = true;
                    return outcome;
                }
                Ok(Err(err)) => {
                    outcome.closed = true;
                    outcome.close_error = Some(err.kind());
                    return outcome;
                }
            };
            match frame.kind {
                kind::GOAWAY => {
                    outcome.goaway = frame.goaway_code();
                    outcome.goaway_last_stream = frame.goaway_last_stream();
                    return outcome;
                }
                kind::HEADERS => outcome.responses += 1,
                kind::DATA => outcome.data_bytes += frame.payload.len(),
                kind::RST_STREAM => {
                    outcome.resets_received += 1;
                    if let Some(code) = frame.rst_code() {
                        *outcome.reset_codes.entry(code).or_default() += 1;
                    }
                }
                kind::SETTINGS if !frame.is_ack() => {
                    let _ = self.settings_ack();
                }
                kind::PING if !frame.is_ack() => {
                    if let Some(payload) = frame.ping_payload() {
                        let _ = self.ping_ack(payload);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Whether an I/O error means the server has closed or reset the connection.
pub fn is_peer_closed(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::WriteZero
    )
}

/// Appends one complete frame to `out`. Fails only if `payload` is longer than the 24-bit
/// length field allows. The stream id is written as given, reserved bit included.
pub fn encode_frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let len = payload.len();
    if len > MAX_FRAME_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame payload of {len} bytes does not fit the 24-bit length field"),
        ));
    }
    out.reserve(FRAME_HEADER_LEN + len);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Takes one complete frame off the front of `buf`, if it holds one.
fn parse_frame(buf: &mut BytesMut) -> Option<Frame> {
    if buf.len() < FRAME_HEADER_LEN {
        return None;
    }
    let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
    if buf.len() < FRAME_HEADER_LEN + len {
        return None;
    }
    let header = buf.split_to(FRAME_HEADER_LEN);
    let payload = buf.split_to(len).freeze();
    Some(Frame {
        kind: header[3],
        flags: header[4],
        stream_id: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff,
        payload,
    })
}

/// The big-endian `u32` at `at`, if `bytes` is long enough.
fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(word))
}

/// A request header block: `:method`, `:scheme` (`http`), `:path`, `:authority`, then
/// `extra`, all as HPACK literals without indexing (see [`hpack_literal`]). Names and values
/// are not checked or lower-cased, so tests can also build malformed requests.
pub fn request_block(method: &str, path: &str, authority: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    hpack_literal(":method", method, &mut out);
    hpack_literal(":scheme", "http", &mut out);
    hpack_literal(":path", path, &mut out);
    hpack_literal(":authority", authority, &mut out);
    for (name, value) in extra {
        hpack_literal(name, value, &mut out);
    }
    out
}

/// Appends one header field as an HPACK "literal header field without indexing, new name"
/// (RFC 7541 section 6.2.2), with both strings raw (no Huffman). It leaves the decoder's
/// dynamic table untouched, so blocks can be sent in any order or repeated.
pub fn hpack_literal(name: &str, value: &str, out: &mut Vec<u8>) {
    out.push(0x00);
    hpack_string(name.as_bytes(), out);
    hpack_string(value.as_bytes(), out);
}

/// Appends an HPACK string literal without Huffman coding (RFC 7541 section 5.2).
pub fn hpack_string(bytes: &[u8], out: &mut Vec<u8>) {
    hpack_int(bytes.len(), 7, 0x00, out);
    out.extend_from_slice(bytes);
}

/// Appends an HPACK integer (RFC 7541 section 5.1) with an N-bit prefix, `prefix_bits` in
/// 1..=8. `high_bits` supplies the bits of the first byte above the prefix (e.g. `0x80` for
/// a Huffman-flagged string length); bits overlapping the prefix are ignored.
pub fn hpack_int(value: usize, prefix_bits: u8, high_bits: u8, out: &mut Vec<u8>) {
    let prefix_bits = prefix_bits.clamp(1, 8);
    let max_prefix = (1usize << prefix_bits) - 1;
    let high = high_bits & !(max_prefix as u8);
    if value < max_prefix {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int7(value: usize) -> Vec<u8> {
        let mut out = Vec::new();
        hpack_int(value, 7, 0x00, &mut out);
        out
    }

    #[test]
    fn hpack_lengths_switch_to_continuation_bytes_at_127() {
        assert_eq!(int7(126), [0x7e_u8]);
        assert_eq!(int7(127), [0x7f_u8, 0x00]);
        assert_eq!(int7(300), [0x7f_u8, 0xad, 0x01]);

        let mut block = Vec::new();
        hpack_literal("x", &"a".repeat(300), &mut block);
        assert_eq!(block[..6], [0x00_u8, 0x01, b'x', 0x7f, 0xad, 0x01]);
        assert_eq!(block.len(), 6 + 300);
    }

    #[test]
    fn rst_stream_frame_bytes_round_trip() {
        let mut out = Vec::new();
        encode_frame(kind::RST_STREAM, 0, 3, &code::CANCEL.to_be_bytes(), &mut out).unwrap();
        assert_eq!(out, [0_u8, 0, 4, 3, 0, 0, 0, 0, 3, 0, 0, 0, 8]);

        let mut buf = BytesMut::from(&out[..]);
        let frame = parse_frame(&mut buf).unwrap();
        assert_eq!((frame.stream_id, frame.rst_code()), (3, Some(code::CANCEL)));
        assert!(buf.is_empty());
    }
}
