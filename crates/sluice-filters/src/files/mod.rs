//! Static files: the `files` route action serves a directory, like nginx's `root`,
//! `index`, `try_files` and `autoindex`.
//!
//! - Paths are percent-decoded and normalized; any `..` (however encoded), NUL or invalid
//!   encoding is refused with `400`, and a symlink that leads outside the root with `403`
//!   (unless `follow-symlinks`). Only regular files and directories are served.
//! - A directory asked for without its trailing `/` is redirected (`301`); with it, the
//!   first `index` file is served, else a listing (`listing #true`), else `403`.
//! - Validators: a strong `ETag` (modification time and size) and `Last-Modified`;
//!   `If-None-Match`/`If-Modified-Since` give `304`, `If-Match`/`If-Unmodified-Since` give
//!   `412`.
//! - `Range`: single ranges (`206`), several (`multipart/byteranges`, overlapping and
//!   adjacent ones coalesced), `If-Range`, and `416` when nothing is satisfiable.
//! - Precompressed siblings (`app.js.br`, `.zst`, `.gz`) are served to clients that accept
//!   them (`precompressed #true`), with `Vary: Accept-Encoding`.
//! - Small bodies are read at once; large ones are streamed from the blocking pool.

mod body;
mod listing;
pub mod mime;
pub mod path;
pub mod range;

use std::fs::{File, Metadata};
use std::hash::{BuildHasher as _, Hasher as _};
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use sluice_core::Body;

use self::body::Part;
use self::path::{Normalized, Refused};
use self::range::Ranges;

/// How a `files` route serves its directory.
#[derive(Debug, Clone)]
pub struct FilesSettings {
    /// The directory served.
    pub root: PathBuf,
    /// Index files tried, in order, for a directory.
    pub index: Vec<String>,
    /// `try_files`: candidates with `$uri`, the last one a fallback path or `=CODE`.
    pub try_files: Vec<String>,
    /// Serve an HTML listing for a directory without an index file.
    pub listing: bool,
    /// Serve `.br`/`.zst`/`.gz` siblings to clients that accept them.
    pub precompressed: bool,
    /// Follow symlinks that lead outside the root.
    pub follow_symlinks: bool,
    /// Remove this prefix (the route's) from the path first (nginx's `alias`).
    pub strip_prefix: Option<String>,
}

/// A directory being served.
#[derive(Debug)]
pub struct StaticFiles {
    /// The root, canonical (symlinks resolved), for the escape check.
    root: PathBuf,
    /// The root, open: files are opened relative to it.
    root_fd: std::os::fd::OwnedFd,
    /// Whether `openat2` works here (Linux 5.6+); else every lookup takes the slow path.
    openat2: std::sync::atomic::AtomicBool,
    settings: FilesSettings,
    /// Contents of small files recently sent, checked against each request's `fstat`.
    contents: std::sync::Mutex<ContentCache>,
}

/// Bytes of small files, by inode, valid while the file's modification time and size are
/// the same: a hit costs no `read` and no copy (the response shares the bytes).
#[derive(Debug, Default)]
struct ContentCache {
    files: std::collections::HashMap<(u64, u64), (u128, Bytes)>,
    order: std::collections::VecDeque<(u64, u64)>,
    bytes: u64,
}

/// Files up to this size are kept in memory once read.
const CONTENT_MAX_FILE: u64 = 1 << 20;
/// Memory kept for file contents, per `files` route (oldest first out).
const CONTENT_BUDGET: u64 = 32 << 20;

/// What a path names under the root (paths relative to the root).
enum Found {
    /// A regular file, open, with its metadata.
    File(File, Metadata, PathBuf),
    Dir(PathBuf),
    Missing,
    Forbidden,
}

/// Precompressed siblings, in the server's order of preference.
const SIBLINGS: [(&str, &str); 3] = [("br", ".br"), ("zstd", ".zst"), ("gzip", ".gz")];

impl StaticFiles {
    /// Serves `settings.root`, which must be a directory.
    pub fn new(settings: FilesSettings) -> io::Result<Self> {
        let root = std::fs::canonicalize(&settings.root)?;
        if !root.is_dir() {
            return Err(io::Error::other(format!("{} is not a directory", root.display())));
        }
        let root_fd = std::fs::File::open(&root)?.into();
        Ok(Self {
            root,
            root_fd,
            openat2: std::sync::atomic::AtomicBool::new(true),
            settings,
            contents: std::sync::Mutex::new(ContentCache::default()),
        })
    }

    /// Answers a request for a file.
    pub fn serve(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are allowed here\n");
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let mut path = uri.path();
        if let Some(prefix) = &self.settings.strip_prefix {
            if let Some(rest) = path.strip_prefix(prefix.trim_end_matches('/')) {
                path = rest;
            }
        }
        let normalized = match path::normalize(path) {
            Ok(n) => n,
            Err(Refused::Traversal) => return text(StatusCode::BAD_REQUEST, "the path leaves the served directory\n"),
            Err(Refused::Malformed) => return text(StatusCode::BAD_REQUEST, "the path is not a valid file name\n"),
        };
        let request = Request { method, uri, headers };
        if self.settings.try_files.is_empty() {
            return self.serve_path(&normalized, &request, true);
        }
        self.try_files(&normalized, &request)
    }

    /// `try_files`: the first candidate that exists, else the last entry.
    fn try_files(&self, normalized: &Normalized, request: &Request<'_>) -> Response<Body> {
        let uri = normalized.uri();
        let Some((last, candidates)) = self.settings.try_files.split_last() else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        for candidate in candidates {
            let expanded = candidate.replace("$uri", &uri);
            let Ok(candidate) = path::normalize(&expanded) else { continue };
            match (self.find(&candidate.relative()), candidate.trailing_slash) {
                (Found::File(file, meta, path), false) => return self.serve_file(file, meta, &path, request),
                (Found::Dir(dir), true) => return self.serve_dir(&dir, &candidate, request),
                _ => {}
            }
        }
        if let Some(code) = last.strip_prefix('=') {
            let status = code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok());
            return text(status.unwrap_or(StatusCode::NOT_FOUND), "");
        }
        match path::normalize(&last.replace("$uri", &uri)) {
            Ok(fallback) => self.serve_path(&fallback, request, false),
            Err(_) => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// Serves what `normalized` names; `redirect_dirs`: a directory without its trailing
    /// slash is redirected (a request path), or served (a `try_files` fallback).
    fn serve_path(&self, normalized: &Normalized, request: &Request<'_>, redirect_dirs: bool) -> Response<Body> {
        match self.find(&normalized.relative()) {
            Found::File(..) if normalized.trailing_slash => text(StatusCode::NOT_FOUND, "not found\n"),
            Found::File(file, meta, path) => self.serve_file(file, meta, &path, request),
            Found::Dir(_) if redirect_dirs && !normalized.trailing_slash => {
                // The path as the client wrote it, plus `/` (and the query).
                let mut location = request.uri.path().to_owned();
                location.push('/');
                if let Some(q) = request.uri.query() {
                    location.push('?');
                    location.push_str(q);
                }
                let mut r = text(StatusCode::MOVED_PERMANENTLY, "");
                if let Ok(v) = HeaderValue::try_from(location) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r
            }
            Found::Dir(dir) => self.serve_dir(&dir, normalized, request),
            Found::Missing => text(StatusCode::NOT_FOUND, "not found\n"),
            Found::Forbidden => text(StatusCode::FORBIDDEN, "forbidden\n"),
        }
    }

    /// A directory: its first index file, else its listing, else 403.
    fn serve_dir(&self, dir: &Path, normalized: &Normalized, request: &Request<'_>) -> Response<Body> {
        for index in &self.settings.index {
            if let Found::File(file, meta, path) = self.find(&dir.join(index)) {
                return self.serve_file(file, meta, &path, request);
            }
        }
        if !self.settings.listing {
            return text(StatusCode::FORBIDDEN, "directory listing is off\n");
        }
        match listing::render(&self.root.join(dir), &normalized.uri(), self.settings.follow_symlinks) {
            Ok(html) => {
                let mut r = if request.method == Method::HEAD {
                    Response::new(Body::empty())
                } else {
                    Response::new(Body::full(html.clone()))
                };
                let h = r.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(html.len()));
                r
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list a directory");
                text(StatusCode::FORBIDDEN, "forbidden\n")
            }
        }
    }

    /// Looks `relative` up under the root, and opens it if it is a regular file.
    fn find(&self, relative: &Path) -> Found {
        match self.find_fast(relative) {
            Some(found) => found,
            None => self.find_slow(relative),
        }
    }

    /// One `openat2` relative to the root that refuses any symlink or `..` on the way:
    /// one short path walk instead of a `stat`, a `realpath` (a `readlink` per component
    /// from `/`) and an `open`. `None`: a symlink is on the way (or `openat2` is missing),
    /// and the slow path decides.
    fn find_fast(&self, relative: &Path) -> Option<Found> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        use rustix::io::Errno;
        use std::sync::atomic::Ordering;
        if !self.openat2.load(Ordering::Relaxed) {
            return None;
        }
        let path = if relative.as_os_str().is_empty() { Path::new(".") } else { relative };
        // NONBLOCK: opening a FIFO must not wait for a writer (it is refused below anyway).
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(&self.root_fd, path, flags, Mode::empty(), resolve) {
            Ok(fd) => {
                let file = File::from(fd);
                let meta = file.metadata().ok()?;
                Some(classify(file, meta, relative))
            }
            Err(Errno::NOENT | Errno::NOTDIR | Errno::NAMETOOLONG) => Some(Found::Missing),
            Err(Errno::ACCESS | Errno::PERM) => Some(Found::Forbidden),
            Err(Errno::NOSYS) => {
                self.openat2.store(false, Ordering::Relaxed);
                None
            }
            // ELOOP (a symlink), EXDEV, EAGAIN ...
            Err(_) => None,
        }
    }

    /// Resolves every symlink (`realpath`): the result must still be under the root unless
    /// `follow-symlinks`.
    fn find_slow(&self, relative: &Path) -> Found {
        let full = self.root.join(relative);
        if !self.settings.follow_symlinks {
            match std::fs::canonicalize(&full) {
                Ok(real) if real.starts_with(&self.root) => {}
                Ok(_) => return Found::Forbidden,
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Found::Forbidden,
                Err(_) => return Found::Missing,
            }
        }
        use std::os::unix::fs::OpenOptionsExt as _;
        let opened =
            std::fs::OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32).open(&full);
        match opened.and_then(|file| file.metadata().map(|meta| (file, meta))) {
            Ok((file, meta)) => classify(file, meta, relative),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Found::Forbidden,
            Err(_) => Found::Missing,
        }
    }

    /// The precompressed sibling of `path` to send, if the client accepts one that exists.
    fn sibling(&self, path: &Path, headers: &HeaderMap) -> Option<(&'static str, File, Metadata)> {
        let mut choices: Vec<(f32, usize)> = SIBLINGS
            .iter()
            .enumerate()
            .map(|(i, (coding, _))| (accepted_q(headers, coding), i))
            .filter(|(q, _)| *q > 0.0)
            .collect();
        // Highest q first; the server's order breaks ties (stable sort).
        choices.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, i) in choices {
            let (coding, suffix) = SIBLINGS[i];
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            if let Found::File(file, meta, _) = self.find(Path::new(&name)) {
                return Some((coding, file, meta));
            }
        }
        None
    }

    /// Sends a regular file (or its precompressed sibling), honouring the validators and
    /// `Range`.
    fn serve_file(&self, file: File, meta: Metadata, path: &Path, request: &Request<'_>) -> Response<Body> {
        let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        let content_type = mime::content_type(&name);
        let (coding, file, meta) = match self.settings.precompressed.then(|| self.sibling(path, request.headers)) {
            Some(Some((coding, f, m))) => (Some(coding), f, m),
            _ => (None, file, meta),
        };
        let len = meta.len();
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let mtime = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        let etag = format!("\"{:x}-{:x}\"", mtime.as_nanos(), len);
        let last_modified = httpdate::fmt_http_date(modified);
        let headers = request.headers;

        // Validators (RFC 9110 §13.2.2 order): If-Match, If-Unmodified-Since, If-None-Match,
        // If-Modified-Since.
        if let Some(v) = header_str(headers, &header::IF_MATCH) {
            if !etag_list_matches(v, &etag, false) {
                return self.head_only(StatusCode::PRECONDITION_FAILED, &etag, &last_modified);
            }
        } else if let Some(date) = header_str(headers, &header::IF_UNMODIFIED_SINCE).and_then(parse_date) {
            if mtime.as_secs() > date {
                return self.head_only(StatusCode::PRECONDITION_FAILED, &etag, &last_modified);
            }
        }
        if let Some(v) = header_str(headers, &header::IF_NONE_MATCH) {
            if etag_list_matches(v, &etag, true) {
                return self.head_only(StatusCode::NOT_MODIFIED, &etag, &last_modified);
            }
        } else if let Some(date) = header_str(headers, &header::IF_MODIFIED_SINCE).and_then(parse_date) {
            if mtime.as_secs() <= date {
                return self.head_only(StatusCode::NOT_MODIFIED, &etag, &last_modified);
            }
        }

        let ranges = match header_str(headers, &header::RANGE) {
            Some(r)
                if header_str(headers, &header::IF_RANGE)
                    .is_none_or(|v| range::if_range_matches(v, &etag, &last_modified)) =>
            {
                range::parse(r, len)
            }
            _ => Ranges::Full,
        };
        let (status, parts, multipart_type) = match ranges {
            Ranges::Unsatisfiable => {
                let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "");
                if let Ok(v) = HeaderValue::try_from(format!("bytes */{len}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return r;
            }
            Ranges::Full => (StatusCode::OK, vec![Part::File { offset: 0, len }], None),
            Ranges::Some(ranges) if ranges.len() == 1 => {
                let (start, end) = ranges[0];
                (StatusCode::PARTIAL_CONTENT, vec![Part::File { offset: start, len: end - start + 1 }], None)
            }
            Ranges::Some(ranges) => {
                let (parts, multipart) = multipart_parts(&ranges, content_type, len, &etag);
                (StatusCode::PARTIAL_CONTENT, parts, Some(multipart))
            }
        };
        let body_len = body::total(&parts);
        let body = if request.method == Method::HEAD {
            Body::empty()
        } else {
            let cached = self.contents_of(&file, &meta);
            let built = match cached {
                Some(data) => Ok(body::from_memory(&data, &parts)),
                None => body::body(file, parts.clone()),
            };
            match built {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read a file");
                    return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n");
                }
            }
        };
        let mut r = Response::new(body);
        *r.status_mut() = status;
        let h = r.headers_mut();
        match multipart_type {
            Some(t) => {
                if let Ok(v) = HeaderValue::try_from(t) {
                    h.insert(header::CONTENT_TYPE, v);
                }
            }
            None => {
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                if status == StatusCode::PARTIAL_CONTENT {
                    if let Some(Part::File { offset, len: n }) = parts.first() {
                        let range = format!("bytes {}-{}/{len}", offset, offset + n - 1);
                        if let Ok(v) = HeaderValue::try_from(range) {
                            h.insert(header::CONTENT_RANGE, v);
                        }
                    }
                }
            }
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        self.validators(h, &etag, &last_modified);
        if let Some(coding) = coding {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
        }
        r
    }

    /// The whole contents of a small file: from memory when its inode, modification time
    /// and size are unchanged, else read now (and kept).
    fn contents_of(&self, file: &File, meta: &Metadata) -> Option<Bytes> {
        use std::os::unix::fs::MetadataExt as _;
        let len = meta.len();
        if len > CONTENT_MAX_FILE {
            return None;
        }
        let key = (meta.dev(), meta.ino());
        let stamp = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?.as_nanos();
        {
            let cache = self.contents.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, data)) = cache.files.get(&key) {
                if *at == stamp && data.len() as u64 == len {
                    return Some(data.clone());
                }
            }
        }
        let mut buf = Vec::with_capacity(usize::try_from(len).ok()?);
        std::io::Read::read_to_end(&mut std::io::Read::take(file, len + 1), &mut buf).ok()?;
        if buf.len() as u64 != len {
            return None; // changed while it was read: serve it from the file this once
        }
        let data = Bytes::from(buf);
        let mut cache = self.contents.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, old)) = cache.files.insert(key, (stamp, data.clone())) {
            cache.bytes -= old.len() as u64;
        } else {
            cache.order.push_back(key);
        }
        cache.bytes += len;
        while cache.bytes > CONTENT_BUDGET {
            let Some(oldest) = cache.order.pop_front() else { break };
            if let Some((_, gone)) = cache.files.remove(&oldest) {
                cache.bytes -= gone.len() as u64;
            }
        }
        Some(data)
    }

    /// A `304` or `412`: no body, the validators (and `Vary`).
    fn head_only(&self, status: StatusCode, etag: &str, last_modified: &str) -> Response<Body> {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = status;
        self.validators(r.headers_mut(), etag, last_modified);
        r
    }

    fn validators(&self, h: &mut HeaderMap, etag: &str, last_modified: &str) {
        if let Ok(v) = HeaderValue::try_from(etag) {
            h.insert(header::ETAG, v);
        }
        if let Ok(v) = HeaderValue::try_from(last_modified) {
            h.insert(header::LAST_MODIFIED, v);
        }
        if self.settings.precompressed {
            h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
    }
}

/// The parts of the request a file answer looks at.
struct Request<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
}

/// Sorts an open path into file, directory or refused (anything else: sockets, FIFOs,
/// devices).
fn classify(file: File, meta: Metadata, relative: &Path) -> Found {
    if meta.is_file() {
        Found::File(file, meta, relative.to_path_buf())
    } else if meta.is_dir() {
        Found::Dir(relative.to_path_buf())
    } else {
        Found::Forbidden
    }
}

/// A short plain-text answer.
fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    if !body.is_empty() {
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    r
}

fn header_str<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// An HTTP date as seconds since the epoch.
fn parse_date(v: &str) -> Option<u64> {
    httpdate::parse_http_date(v.trim()).ok()?.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Whether an `If-Match`/`If-None-Match` list matches `etag` (`*` matches any). `weak`:
/// the weak comparison (If-None-Match), which ignores `W/`; else the strong one.
fn etag_list_matches(list: &str, etag: &str, weak: bool) -> bool {
    list.split(',').map(str::trim).any(|candidate| {
        if candidate == "*" {
            return true;
        }
        match candidate.strip_prefix("W/") {
            Some(opaque) => weak && opaque == etag,
            None => candidate == etag,
        }
    })
}

/// The q-value `Accept-Encoding` gives `coding` (a token like `br`; 0 when not
/// acceptable); `*` covers the codings not named. The parsing is compression's.
pub fn accepted_q(headers: &HeaderMap, coding: &str) -> f32 {
    crate::compress::Coding::from_token(coding)
        .map_or(0.0, |c| f32::from(crate::compress::q_value(headers, c)) / 1000.0)
}

/// The parts of a `multipart/byteranges` body for `ranges` of a representation of `len`
/// bytes, and its content type (with the boundary).
fn multipart_parts(ranges: &[(u64, u64)], content_type: &str, len: u64, etag: &str) -> (Vec<Part>, String) {
    let boundary = boundary(etag);
    let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
    for &(start, end) in ranges {
        parts.push(Part::Bytes(Bytes::from(format!(
            "\r\n--{boundary}\r\ncontent-type: {content_type}\r\ncontent-range: bytes {start}-{end}/{len}\r\n\r\n"
        ))));
        parts.push(Part::File { offset: start, len: end - start + 1 });
    }
    parts.push(Part::Bytes(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    (parts, format!("multipart/byteranges; boundary={boundary}"))
}

/// A `multipart/byteranges` body of several `ranges` of `data` (already in memory, like a
/// cached object), and its content type.
pub fn multipart_from_memory(data: &Bytes, ranges: &[(u64, u64)], content_type: &str, tag: &str) -> (Bytes, String) {
    let (parts, multipart) = multipart_parts(ranges, content_type, data.len() as u64, tag);
    (Bytes::from(body::concat(data, &parts)), multipart)
}

/// A multipart boundary that the file's bytes are unlikely to contain.
fn boundary(etag: &str) -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(etag.as_bytes());
    format!("sluice-{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_comparisons() {
        assert!(etag_list_matches("\"a\"", "\"a\"", false));
        assert!(etag_list_matches("\"b\", \"a\"", "\"a\"", true));
        assert!(etag_list_matches("*", "\"a\"", false));
        assert!(etag_list_matches("W/\"a\"", "\"a\"", true));
        assert!(!etag_list_matches("W/\"a\"", "\"a\"", false), "If-Match uses the strong comparison");
        assert!(!etag_list_matches("\"b\"", "\"a\"", true));
    }

    #[test]
    fn accept_encoding_q_values() {
        let mut h = HeaderMap::new();
        h.append(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip;q=0.5, br"));
        h.append(header::ACCEPT_ENCODING, HeaderValue::from_static("zstd;q=0"));
        assert_eq!(accepted_q(&h, "br"), 1.0);
        assert_eq!(accepted_q(&h, "gzip"), 0.5);
        assert_eq!(accepted_q(&h, "zstd"), 0.0);
        let mut star = HeaderMap::new();
        star.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("*;q=0.3, x-gzip"));
        assert_eq!(accepted_q(&star, "gzip"), 1.0);
        assert_eq!(accepted_q(&star, "br"), 0.3);
        assert_eq!(accepted_q(&HeaderMap::new(), "br"), 0.0);
    }
}
