//! On-the-fly response compression: `gzip`, `br` (brotli) and `zstd`, chosen from the
//! request's `Accept-Encoding`, and optional decompression for clients that do not accept
//! the coding the origin sent.
//!
//! [`CompressPolicy::start`] looks at a response head once, in the `response_filter`
//! phase: it decides, edits the head and returns a [`Coder`], which then turns each body
//! chunk into the bytes to send, in `response_body_filter`. No body is ever held whole:
//! each chunk in gives that chunk's compressed bytes out (flushed, so a streamed response
//! keeps streaming, at a cost of a few bytes per chunk), and the last call finishes the
//! stream.
//!
//! Left alone: `HEAD` bodies (there are none; the head is edited exactly as for `GET`, so
//! both agree), 1xx, 204, 206 and 304 responses, anything with `Content-Range` or
//! `Trailer`, requests with `Range` (even if the origin answers 200, like nginx),
//! `Cache-Control: no-transform` on the request or the response, a response that already
//! has a `Content-Encoding` (never compressed twice), types outside the list, and bodies
//! whose `Content-Length` is under the minimum.
//!
//! A compressed response gets `Content-Encoding`, loses `Content-Length` (it is sent
//! chunked, or in HTTP/2 frames) and `Accept-Ranges` (ranges of the compressed bytes are not
//! offered), and its strong `ETag` becomes weak (`W/"..."`): the compressed bytes differ
//! from the origin's, and a strong validator promises identical bytes. Every response whose
//! form depends on `Accept-Encoding`, compressed or not for this client, carries
//! `Vary: Accept-Encoding`, so shared caches keep the variants apart.
//!
//! Compressed variants are produced per response, as it streams through: Sluice has no
//! cache yet, so nothing is stored and nothing is compressed ahead of time. That is why the
//! default levels are fast ones (gzip 5, brotli 4, zstd 3): they give most of the size
//! reduction of the high levels for a fraction of the CPU time, and that time is paid on
//! every response (`benches/compress.rs` measures each coding at three levels).

use std::fmt;
use std::io::{self, Write};

use bytes::Bytes;
use flate2::write::{GzDecoder, GzEncoder};
use http::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_RANGE, CONTENT_TYPE, ETAG, RANGE, TRAILER, VARY,
};
use http::{response, Method, StatusCode};

/// Types compressed by default: text and the text-like formats of the web. Images, video,
/// archives and fonts in WOFF/WOFF2 are already compressed and are left out.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/html",
    "text/css",
    "text/plain",
    "text/xml",
    "text/javascript",
    "application/javascript",
    "application/json",
    "application/xml",
    "application/wasm",
    "image/svg+xml",
    "application/manifest+json",
    "font/ttf",
    "font/otf",
];

/// Bodies shorter than this (by `Content-Length`) are sent as they are by default: the
/// coding's framing would eat most of the gain.
pub const DEFAULT_MIN_SIZE: u64 = 256;

/// Most bytes one input chunk may decode to. A decoder refuses to produce more (the body
/// fails), so a small compressed chunk cannot expand into unbounded memory (a
/// decompression bomb). Real content stays far below: a 64 KiB chunk at 100:1 is 6.4 MiB.
pub const MAX_DECODED_PER_CHUNK: usize = 16 << 20;

/// Brotli's window: 1 MiB (`lgwin` 20), the memory a compressing response holds on to.
const BROTLI_LGWIN: u32 = 20;
/// Size of the brotli writers' internal output buffer.
const BROTLI_BUFFER: usize = 8 * 1024;
/// zstd frames with a window over 8 MiB are refused when decoding, as RFC 9659 allows for
/// the `zstd` content coding.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// Headers that describe the content's bytes and are wrong once the coding changes.
const DIGESTS: &[&str] = &["content-md5", "content-digest", "repr-digest"];

/// A content coding Sluice produces and decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    /// `gzip` (RFC 1952); `x-gzip` is read as the same coding.
    Gzip,
    /// `br`: brotli (RFC 7932).
    Brotli,
    /// `zstd`: Zstandard (RFC 8878, RFC 9659).
    Zstd,
}

impl Coding {
    /// The default server preference, used to break ties between codings a client accepts
    /// equally: zstd (fastest), then brotli, then gzip.
    pub const DEFAULT_ORDER: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

    /// The `Content-Encoding` token: `gzip`, `br` or `zstd`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }

    /// The coding a token names (any case; `x-gzip` is gzip), if Sluice knows it.
    pub fn from_token(token: &str) -> Option<Coding> {
        let token = token.trim();
        if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
            Some(Coding::Gzip)
        } else if token.eq_ignore_ascii_case("br") {
            Some(Coding::Brotli)
        } else if token.eq_ignore_ascii_case("zstd") {
            Some(Coding::Zstd)
        } else {
            None
        }
    }

    fn index(self) -> usize {
        match self {
            Coding::Gzip => 0,
            Coding::Brotli => 1,
            Coding::Zstd => 2,
        }
    }
}

impl fmt::Display for Coding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// Compression level of each coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    /// gzip, 1 (fastest) to 9 (smallest); default 5.
    pub gzip: u32,
    /// brotli quality, 0 to 11; default 4.
    pub brotli: u32,
    /// zstd, 1 to 19; default 3.
    pub zstd: u32,
}

impl Default for Levels {
    fn default() -> Self {
        Self { gzip: 5, brotli: 4, zstd: 3 }
    }
}

impl Levels {
    /// The level for `coding`, brought into its valid range. zstd stops at 19: levels
    /// 20 to 22 use windows over the 8 MiB that RFC 9659 allows for HTTP.
    pub fn of(&self, coding: Coding) -> u32 {
        match coding {
            Coding::Gzip => self.gzip.clamp(1, 9),
            Coding::Brotli => self.brotli.min(11),
            Coding::Zstd => self.zstd.clamp(1, 19),
        }
    }
}

/// A `types` entry: `text/html` (exact), `text/*` (any subtype) or `*/*` (anything).
#[derive(Debug, Clone, PartialEq, Eq)]
enum TypePattern {
    Exact(String),
    /// The type with its slash, like `text/`.
    Prefix(String),
    Any,
}

impl TypePattern {
    fn parse(text: &str) -> TypePattern {
        let text = text.trim().to_ascii_lowercase();
        if text == "*/*" || text == "*" {
            return TypePattern::Any;
        }
        match text.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('/') => TypePattern::Prefix(prefix.to_owned()),
            _ => TypePattern::Exact(text),
        }
    }

    /// `essence` is the media type without parameters, in any case.
    fn matches(&self, essence: &str) -> bool {
        match self {
            TypePattern::Exact(t) => essence.eq_ignore_ascii_case(t),
            TypePattern::Prefix(p) => essence.get(..p.len()).is_some_and(|head| head.eq_ignore_ascii_case(p)),
            TypePattern::Any => true,
        }
    }
}

/// When and how responses are compressed: one per `compress` block of the config.
#[derive(Debug, Clone)]
pub struct CompressPolicy {
    codings: Vec<Coding>,
    levels: Levels,
    min_size: u64,
    types: Vec<TypePattern>,
    decompress: bool,
}

impl Default for CompressPolicy {
    fn default() -> Self {
        Self::new(
            Coding::DEFAULT_ORDER.to_vec(),
            Levels::default(),
            DEFAULT_MIN_SIZE,
            DEFAULT_TYPES.iter().map(|t| (*t).to_owned()).collect(),
            false,
        )
    }
}

impl CompressPolicy {
    /// A policy. `codings` are the ones offered, in the server's order of preference
    /// (ties between codings a client accepts equally go to the first); `types` are media
    /// types (`text/html`) or whole types (`text/*`), in any case; `decompress` decodes a
    /// gzip, brotli or zstd response for a client that does not accept its coding.
    pub fn new(codings: Vec<Coding>, levels: Levels, min_size: u64, types: Vec<String>, decompress: bool) -> Self {
        let mut offered: Vec<Coding> = Vec::with_capacity(codings.len());
        for coding in codings {
            if !offered.contains(&coding) {
                offered.push(coding);
            }
        }
        let types = types.iter().map(|t| TypePattern::parse(t)).collect();
        Self { codings: offered, levels, min_size, types, decompress }
    }

    /// The codings offered, in order of preference.
    pub fn codings(&self) -> &[Coding] {
        &self.codings
    }

    /// Decides for one response and edits its head; returns the coder its body must go
    /// through, or `None` to send the body as it is.
    ///
    /// For `HEAD` the head is edited exactly as for `GET` (so the two agree), but `None`
    /// is returned: there is no body. `request_headers` are the client's (its
    /// `Accept-Encoding`, `Range` and `Cache-Control`).
    pub fn start(&self, method: &Method, request_headers: &HeaderMap, response: &mut response::Parts) -> Option<Coder> {
        let status = response.status;
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::PARTIAL_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return None;
        }
        let headers = &mut response.headers;
        // Trailers: the engine passes a trailers frame through without a last body-filter
        // call, so a coding could not be finished in front of one.
        if headers.contains_key(CONTENT_RANGE)
            || headers.contains_key(TRAILER)
            || no_transform(request_headers)
            || no_transform(headers)
        {
            return None;
        }
        let head_only = *method == Method::HEAD;
        match origin_coding(headers) {
            OriginCoding::Identity => self.compress(request_headers, headers, head_only),
            OriginCoding::Known(coding) => self.decode(request_headers, headers, coding, head_only),
            OriginCoding::Other => None,
        }
    }

    fn compress(&self, request: &HeaderMap, headers: &mut HeaderMap, head_only: bool) -> Option<Coder> {
        if self.codings.is_empty() || !self.compressible(headers) {
            return None;
        }
        if content_length(headers).is_some_and(|len| len == 0 || len < self.min_size) {
            return None;
        }
        if request.contains_key(RANGE) {
            return None;
        }
        // From here the outcome depends on Accept-Encoding, whatever this client gets.
        vary_on_accept_encoding(headers);
        let coding = negotiate(request, &self.codings)?;
        let coder = if head_only {
            None
        } else {
            match Coder::encoder(coding, self.levels.of(coding)) {
                Ok(coder) => Some(coder),
                Err(e) => {
                    tracing::warn!(%coding, error = %e, "cannot start compressing; the response is sent as it is");
                    return None;
                }
            }
        };
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
        content_changed(headers);
        coder
    }

    fn decode(&self, request: &HeaderMap, headers: &mut HeaderMap, coding: Coding, head_only: bool) -> Option<Coder> {
        if !self.decompress {
            return None;
        }
        // Some clients get the origin's coding and others identity: caches must know.
        vary_on_accept_encoding(headers);
        if accepts(request, coding) {
            return None;
        }
        let coder = if head_only {
            None
        } else {
            match Coder::decoder(coding) {
                Ok(coder) => Some(coder),
                Err(e) => {
                    tracing::warn!(%coding, error = %e, "cannot start decompressing; the response is sent as it is");
                    return None;
                }
            }
        };
        headers.remove(CONTENT_ENCODING);
        content_changed(headers);
        coder
    }

    fn compressible(&self, headers: &HeaderMap) -> bool {
        let Some(content_type) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let essence = content_type.split_once(';').map_or(content_type, |(essence, _)| essence).trim();
        self.types.iter().any(|t| t.matches(essence))
    }
}

/// The coding `Accept-Encoding` prefers among `offered` (the server's order breaks ties),
/// or `None` for identity (RFC 9110, section 12.5.3).
///
/// q-values are honoured (`q=0` means "not acceptable"), `*` stands for every coding not
/// named, tokens are compared in any case and `x-gzip` is gzip. A client that rates
/// `identity` (by name or through `*`) above every coding it accepts gets identity. A
/// request without `Accept-Encoding` gets identity too: the RFC would allow any coding, but
/// clients that send nothing are mostly the ones that cannot decode (scripts, curl without
/// `--compressed`), and every common server and CDN treats them so.
pub fn negotiate(request_headers: &HeaderMap, offered: &[Coding]) -> Option<Coding> {
    let accepted = Accepted::parse(request_headers)?;
    let mut best: Option<(Coding, u16)> = None;
    for &coding in offered {
        let q = accepted.q(coding);
        if q > 0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some((coding, q));
        }
    }
    let (coding, q) = best?;
    if accepted.identity.or(accepted.any).is_some_and(|identity| identity > q) {
        return None;
    }
    Some(coding)
}

/// The q-value `Accept-Encoding` gives `coding`, in thousandths (0: not acceptable, or no
/// `Accept-Encoding` at all); `*` covers the codings not named.
pub fn q_value(request_headers: &HeaderMap, coding: Coding) -> u16 {
    Accepted::parse(request_headers).map_or(0, |accepted| accepted.q(coding))
}

/// Whether the client accepts `coding` (q above 0); a request without `Accept-Encoding`
/// accepts none, as in [`negotiate`].
fn accepts(request_headers: &HeaderMap, coding: Coding) -> bool {
    Accepted::parse(request_headers).is_some_and(|accepted| accepted.q(coding) > 0)
}

/// What `Accept-Encoding` says, with q-values in thousandths (q=0.5 is 500).
#[derive(Debug, Default)]
struct Accepted {
    /// By [`Coding::index`].
    codings: [Option<u16>; 3],
    any: Option<u16>,
    identity: Option<u16>,
}

impl Accepted {
    /// `None` when the request has no `Accept-Encoding` at all (an empty one accepts only
    /// identity). Malformed elements are skipped; a coding named twice keeps its best q.
    fn parse(headers: &HeaderMap) -> Option<Accepted> {
        if !headers.contains_key(ACCEPT_ENCODING) {
            return None;
        }
        let mut accepted = Accepted::default();
        for value in headers.get_all(ACCEPT_ENCODING) {
            let Ok(value) = value.to_str() else {
                continue;
            };
            for element in value.split(',') {
                let mut parts = element.split(';');
                let token = parts.next().unwrap_or_default().trim();
                if token.is_empty() {
                    continue;
                }
                let Some(q) = weight(parts) else {
                    continue;
                };
                let slot = if token == "*" {
                    &mut accepted.any
                } else if token.eq_ignore_ascii_case("identity") {
                    &mut accepted.identity
                } else if let Some(coding) = Coding::from_token(token) {
                    &mut accepted.codings[coding.index()]
                } else {
                    continue;
                };
                *slot = Some(slot.map_or(q, |old| old.max(q)));
            }
        }
        Some(accepted)
    }

    /// The q-value of `coding`: its own, else that of `*`, else 0.
    fn q(&self, coding: Coding) -> u16 {
        self.codings[coding.index()].or(self.any).unwrap_or(0)
    }
}

/// The `q` parameter of one element (1 when absent); `None` when it is malformed.
fn weight<'a>(params: impl Iterator<Item = &'a str>) -> Option<u16> {
    let mut q = 1000;
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("q") {
            q = qvalue(value.trim())?;
        }
    }
    Some(q)
}

/// `0`, `0.5`, `0.125`, `1` or `1.000` in thousandths; anything else is `None`.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths = 0u16;
    let mut scale = 100u16;
    for digit in fraction.bytes() {
        thousandths += u16::from(digit - b'0') * scale;
        scale /= 10;
    }
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The `Content-Encoding` a response already has.
enum OriginCoding {
    /// None, or only `identity`.
    Identity,
    /// One coding Sluice can decode.
    Known(Coding),
    /// Anything else (`deflate`, several codings ...): passed through untouched.
    Other,
}

fn origin_coding(headers: &HeaderMap) -> OriginCoding {
    let mut found = None;
    for value in headers.get_all(CONTENT_ENCODING) {
        let Ok(value) = value.to_str() else {
            return OriginCoding::Other;
        };
        for token in value.split(',').map(str::trim) {
            if token.is_empty() || token.eq_ignore_ascii_case("identity") {
                continue;
            }
            match (found, Coding::from_token(token)) {
                (None, Some(coding)) => found = Some(coding),
                _ => return OriginCoding::Other,
            }
        }
    }
    found.map_or(OriginCoding::Identity, OriginCoding::Known)
}

/// Whether `Cache-Control` (of a request or a response) has `no-transform`.
fn no_transform(headers: &HeaderMap) -> bool {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-transform"))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Adds `Vary: Accept-Encoding` unless `Vary` already covers it (`*` or the name).
fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    let covered = headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|name| name == "*" || name.eq_ignore_ascii_case("accept-encoding"));
    if !covered {
        headers.append(VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// The head edits for a body whose bytes are about to change: no length, no ranges, no
/// digests, and a weak validator.
fn content_changed(headers: &mut HeaderMap) {
    headers.remove(CONTENT_LENGTH);
    headers.remove(ACCEPT_RANGES);
    for name in DIGESTS {
        headers.remove(*name);
    }
    let weak = headers.get(ETAG).filter(|etag| etag.as_bytes().first() == Some(&b'"')).and_then(|etag| {
        let mut value = Vec::with_capacity(etag.len() + 2);
        value.extend_from_slice(b"W/");
        value.extend_from_slice(etag.as_bytes());
        HeaderValue::from_bytes(&value).ok()
    });
    if let Some(weak) = weak {
        headers.insert(ETAG, weak);
    }
}

/// Turns a body into its compressed (or decompressed) form, chunk by chunk.
pub struct Coder {
    state: State,
    coding: Coding,
    decoding: bool,
    /// Whether any input arrived: a decoder given an empty body has nothing to check.
    fed: bool,
}

/// Boxed: the codecs' states differ in size by kilobytes (brotli's are large).
enum State {
    Gzip(Box<GzEncoder<Vec<u8>>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(Box<zstd::stream::write::Encoder<'static, Vec<u8>>>),
    Gunzip(Box<GzDecoder<Capped>>),
    Unbrotli(Box<brotli::DecompressorWriter<Capped>>),
    Unzstd(Box<zstd::stream::write::Decoder<'static, Capped>>),
    /// Finished, or failed: later calls produce nothing.
    Done,
}

impl fmt::Debug for Coder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coder")
            .field("coding", &self.coding)
            .field("decoding", &self.decoding)
            .field("done", &matches!(self.state, State::Done))
            .finish()
    }
}

impl Coder {
    /// A compressor at `level` (brought into the coding's range, see [`Levels::of`]).
    pub fn encoder(coding: Coding, level: u32) -> io::Result<Coder> {
        let levels = Levels { gzip: level, brotli: level, zstd: level };
        let level = levels.of(coding);
        let state = match coding {
            Coding::Gzip => State::Gzip(Box::new(GzEncoder::new(Vec::new(), flate2::Compression::new(level)))),
            Coding::Brotli => {
                State::Brotli(Box::new(brotli::CompressorWriter::new(Vec::new(), BROTLI_BUFFER, level, BROTLI_LGWIN)))
            }
            Coding::Zstd => {
                // 1..=19 after `Levels::of`: always fits.
                let level = i32::try_from(level).unwrap_or(3);
                State::Zstd(Box::new(zstd::stream::write::Encoder::new(Vec::new(), level)?))
            }
        };
        Ok(Coder { state, coding, decoding: false, fed: false })
    }

    /// A decompressor. Each input chunk may decode to at most [`MAX_DECODED_PER_CHUNK`]
    /// bytes, and zstd frames may not ask for a window over 8 MiB.
    pub fn decoder(coding: Coding) -> io::Result<Coder> {
        let state = match coding {
            Coding::Gzip => State::Gunzip(Box::new(GzDecoder::new(Capped::default()))),
            Coding::Brotli => {
                State::Unbrotli(Box::new(brotli::DecompressorWriter::new(Capped::default(), BROTLI_BUFFER)))
            }
            Coding::Zstd => {
                let mut decoder = zstd::stream::write::Decoder::new(Capped::default())?;
                decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
                State::Unzstd(Box::new(decoder))
            }
        };
        Ok(Coder { state, coding, decoding: true, fed: false })
    }

    /// The coding produced (or, for a decoder, removed).
    pub fn coding(&self) -> Coding {
        self.coding
    }

    /// True for a decompressor.
    pub fn is_decoder(&self) -> bool {
        self.decoding
    }

    /// Takes the next body chunk (if any) and returns the bytes to send now: `None` when
    /// there is nothing yet. With `end_of_stream` the stream is finished and the rest is
    /// returned; later calls return `None`.
    ///
    /// An error (corrupt input to a decoder, a decompression bomb) ends the coder: the
    /// response cannot be completed and should fail.
    pub fn process(&mut self, chunk: Option<Bytes>, end_of_stream: bool) -> io::Result<Option<Bytes>> {
        let input = chunk.as_deref().unwrap_or_default();
        match self.step(input, end_of_stream) {
            Ok(out) if out.is_empty() => Ok(None),
            Ok(out) => Ok(Some(Bytes::from(out))),
            Err(e) => {
                self.state = State::Done;
                Err(e)
            }
        }
    }

    fn step(&mut self, input: &[u8], end: bool) -> io::Result<Vec<u8>> {
        if !input.is_empty() {
            self.fed = true;
            // The last chunk needs no flush: finishing covers it.
            let flush = !end;
            match &mut self.state {
                State::Gzip(w) => feed(w, input, flush)?,
                State::Brotli(w) => feed(w, input, flush)?,
                State::Zstd(w) => feed(w, input, flush)?,
                State::Gunzip(w) => {
                    feed(w, input, false)?;
                    if flush {
                        drain_gzip(w)?;
                    }
                }
                State::Unbrotli(w) => feed(w, input, flush)?,
                State::Unzstd(w) => feed(w, input, flush)?,
                State::Done => return Ok(Vec::new()),
            }
        }
        if end {
            let state = std::mem::replace(&mut self.state, State::Done);
            return finish(state, self.fed);
        }
        Ok(self.take_output())
    }

    /// What the codec has written so far.
    fn take_output(&mut self) -> Vec<u8> {
        match &mut self.state {
            State::Gzip(w) => std::mem::take(w.get_mut()),
            State::Brotli(w) => std::mem::take(w.get_mut()),
            State::Zstd(w) => std::mem::take(w.get_mut()),
            State::Gunzip(w) => std::mem::take(&mut w.get_mut().0),
            State::Unbrotli(w) => std::mem::take(&mut w.get_mut().0),
            State::Unzstd(w) => std::mem::take(&mut w.get_mut().0),
            State::Done => Vec::new(),
        }
    }
}

/// Writes a chunk into a codec, then flushes it unless told not to, so the bytes it
/// produced reach its output now instead of waiting for more input.
fn feed(writer: &mut impl Write, input: &[u8], flush: bool) -> io::Result<()> {
    writer.write_all(input)?;
    if flush {
        writer.flush()?;
    }
    Ok(())
}

/// Hands over everything a gzip decoder has decoded so far. Its `flush` is not used:
/// flate2 unwraps an inflate error there, and corrupt input from an origin must fail the
/// response, not panic.
fn drain_gzip(decoder: &mut GzDecoder<Capped>) -> io::Result<()> {
    loop {
        let before = decoder.get_ref().0.len();
        // An empty write passes on what the previous one decoded, then decodes what is left.
        let consumed = decoder.write(&[])?;
        if consumed == 0 && decoder.get_ref().0.len() == before {
            return Ok(());
        }
    }
}

/// Ends the stream: the encoders write their last block and trailer; the decoders check
/// that the input was complete. Returns what was not taken yet.
fn finish(state: State, fed: bool) -> io::Result<Vec<u8>> {
    match state {
        State::Gzip(w) => w.finish(),
        State::Brotli(w) => Ok(w.into_inner()),
        State::Zstd(w) => w.finish(),
        State::Gunzip(_) | State::Unbrotli(_) | State::Unzstd(_) if !fed => Ok(Vec::new()),
        State::Gunzip(w) => w.finish().map(|out| out.0),
        State::Unbrotli(w) => w.into_inner().map(|out| out.0).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "the brotli body from the origin is truncated or corrupt")
        }),
        State::Unzstd(mut w) => {
            w.flush()?;
            Ok(w.into_inner().0)
        }
        State::Done => Ok(Vec::new()),
    }
}

/// A decoder's output buffer: refuses to hold more than [`MAX_DECODED_PER_CHUNK`] bytes
/// (it is emptied after every chunk).
#[derive(Debug, Default)]
struct Capped(Vec<u8>);

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.0.len() + data.len() > MAX_DECODED_PER_CHUNK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a chunk of the origin's body decodes to more than {} MiB (a decompression bomb?)",
                    MAX_DECODED_PER_CHUNK >> 20
                ),
            ));
        }
        self.0.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[path = "compress_tests.rs"]
mod tests;
