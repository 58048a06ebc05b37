//! The disk tier's file format: one file per entry.
//!
//! ```text
//! magic      8 bytes  "SLUICEC\0"
//! version    u32      1
//! head_len   u32      length of the head section
//! head       key       str
//!            status    u16
//!            stored_at u64 seconds + u32 nanoseconds since the Unix epoch
//!            headers   u32 count, then (name str, value bytes) each
//!            tags      u32 count, then str each
//! body_len   u64
//! body       body_len bytes
//! checksum   u64      over the head section and the body
//! ```
//!
//! Integers are little-endian; `str` and `bytes` are a u32 length then the bytes. The
//! head section comes first so that opening the tier reads only the heads. The checksum
//! catches a file that a crash left with the right length but missing data (no `fsync`
//! is done: a cache may lose entries on power loss but must not serve damaged ones).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::entry::{Entry, StoredHead};
use crate::key::fmix64;

const MAGIC: [u8; 8] = *b"SLUICEC\0";
const VERSION: u32 = 1;
/// Magic, version and head length.
const PREFIX: usize = 16;
/// The body length field.
const BODY_LEN: usize = 8;
/// The checksum.
const TRAILER: usize = 8;

/// An encoded entry, but for its body (written from the entry as it is, not copied).
pub(crate) struct Encoded {
    /// Everything before the body.
    pub(crate) prefix: Vec<u8>,
    /// The checksum.
    pub(crate) trailer: [u8; TRAILER],
}

impl Encoded {
    /// The file's length with a body of `body_len` bytes.
    pub(crate) fn file_len(&self, body_len: usize) -> u64 {
        (self.prefix.len() + body_len + TRAILER) as u64
    }
}

/// What opening the tier needs from a file.
#[derive(Debug)]
pub(crate) struct Meta {
    /// The full key string.
    pub(crate) key: String,
    /// Purge tags.
    pub(crate) tags: Vec<String>,
    /// The file's length.
    pub(crate) size: u64,
}

/// Encodes `entry`; fails only for a field longer than 4 GiB.
pub(crate) fn encode(entry: &Entry) -> io::Result<Encoded> {
    let mut head = Vec::with_capacity(64 + entry.key.len() + entry.head.size());
    put_bytes(&mut head, entry.key.as_bytes())?;
    head.extend_from_slice(&entry.head.status.to_le_bytes());
    // A time before the epoch (a badly set clock) is stored as the epoch.
    let since = entry.stored_at.duration_since(UNIX_EPOCH).unwrap_or_default();
    head.extend_from_slice(&since.as_secs().to_le_bytes());
    head.extend_from_slice(&since.subsec_nanos().to_le_bytes());
    put_len(&mut head, entry.head.headers.len())?;
    for (name, value) in &entry.head.headers {
        put_bytes(&mut head, name.as_bytes())?;
        put_bytes(&mut head, value)?;
    }
    put_len(&mut head, entry.tags.len())?;
    for tag in &entry.tags {
        put_bytes(&mut head, tag.as_bytes())?;
    }

    let mut prefix = Vec::with_capacity(PREFIX + head.len() + BODY_LEN);
    prefix.extend_from_slice(&MAGIC);
    prefix.extend_from_slice(&VERSION.to_le_bytes());
    put_len(&mut prefix, head.len())?;
    prefix.extend_from_slice(&head);
    prefix.extend_from_slice(&(entry.body.len() as u64).to_le_bytes());
    Ok(Encoded { prefix, trailer: checksum(&head, &entry.body).to_le_bytes() })
}

/// Decodes a whole file, checking its length and checksum. The body shares `file`'s
/// buffer.
pub(crate) fn decode(file: Bytes) -> io::Result<Entry> {
    let head_len = head_len(&file)?;
    let body_start = PREFIX
        .checked_add(head_len)
        .and_then(|n| n.checked_add(BODY_LEN))
        .filter(|&n| n + TRAILER <= file.len())
        .ok_or_else(|| corrupt("truncated"))?;
    let body_len = read_u64(&file[body_start - BODY_LEN..body_start]);
    let body_end = file.len() - TRAILER;
    if body_len != (body_end - body_start) as u64 {
        return Err(corrupt("the length does not match the body length"));
    }
    let head = &file[PREFIX..PREFIX + head_len];
    if checksum(head, &file[body_start..body_end]) != read_u64(&file[body_end..]) {
        return Err(corrupt("checksum mismatch"));
    }
    let head = decode_head(head)?;
    Ok(Entry {
        key: head.key,
        head: StoredHead { status: head.status, headers: head.headers },
        body: file.slice(body_start..body_end),
        tags: head.tags,
        stored_at: head.stored_at,
    })
}

/// Reads the head section of the file at `path` (not the body) and checks the file's
/// length. Damage past the head is found by [`decode`] when the entry is read.
pub(crate) fn read_meta(path: &Path) -> io::Result<Meta> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut prefix = [0u8; PREFIX];
    file.read_exact(&mut prefix)?;
    let head_len = head_len(&prefix)?;
    // Checked against the file's length before allocating for it.
    let fixed = (PREFIX + BODY_LEN + TRAILER) as u64;
    if fixed + head_len as u64 > size {
        return Err(corrupt("truncated"));
    }
    let mut rest = vec![0u8; head_len + BODY_LEN];
    file.read_exact(&mut rest)?;
    let head = decode_head(&rest[..head_len])?;
    let body_len = read_u64(&rest[head_len..]);
    if (fixed + head_len as u64).checked_add(body_len) != Some(size) {
        return Err(corrupt("the length does not match the body length"));
    }
    Ok(Meta { key: head.key, tags: head.tags, size })
}

/// An error for a damaged file.
fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("damaged cache file: {what}"))
}

/// Whether an error from [`decode`] or [`read_meta`] means the file is damaged (rather than
/// unreadable for another reason, such as permissions).
pub(crate) fn is_damage(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof)
}

/// Checks the magic and version; returns the head section's length.
fn head_len(file: &[u8]) -> io::Result<usize> {
    if file.len() < PREFIX || file[..8] != MAGIC {
        return Err(corrupt("not a cache file"));
    }
    let version = read_u32(&file[8..12]);
    if version != VERSION {
        return Err(corrupt("unknown version"));
    }
    Ok(read_u32(&file[12..16]) as usize)
}

struct Head {
    key: String,
    status: u16,
    stored_at: SystemTime,
    headers: Vec<(String, Vec<u8>)>,
    tags: Vec<String>,
}

fn decode_head(buf: &[u8]) -> io::Result<Head> {
    let mut r = Reader { buf };
    let key = r.string()?;
    let status = r.u16()?;
    let secs = r.u64()?;
    let nanos = r.u32()?;
    if nanos >= 1_000_000_000 {
        return Err(corrupt("bad time"));
    }
    let stored_at = UNIX_EPOCH.checked_add(Duration::new(secs, nanos)).ok_or_else(|| corrupt("bad time"))?;
    // Counts are not trusted for allocation: each item needs at least 4 bytes.
    let count = r.u32()? as usize;
    let mut headers = Vec::with_capacity(count.min(r.buf.len() / 8));
    for _ in 0..count {
        let name = r.string()?;
        let value = r.bytes()?.to_vec();
        headers.push((name, value));
    }
    let count = r.u32()? as usize;
    let mut tags = Vec::with_capacity(count.min(r.buf.len() / 4));
    for _ in 0..count {
        tags.push(r.string()?);
    }
    if !r.buf.is_empty() {
        return Err(corrupt("trailing bytes in the head"));
    }
    Ok(Head { key, status, stored_at, headers, tags })
}

/// Reads fields off the front of a buffer.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(corrupt("truncated head"));
        }
        let (first, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(first)
    }

    fn u16(&mut self) -> io::Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> io::Result<u32> {
        self.take(4).map(read_u32)
    }

    fn u64(&mut self) -> io::Result<u64> {
        self.take(8).map(read_u64)
    }

    fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn string(&mut self) -> io::Result<String> {
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| corrupt("not UTF-8"))
    }
}

/// A little-endian u32 from the first four bytes of `b` (at least four long).
fn read_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// A little-endian u64 from the first eight bytes of `b` (at least eight long).
fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn put_len(out: &mut Vec<u8>, len: usize) -> io::Result<()> {
    let len = u32::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a field over 4 GiB"))?;
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> io::Result<()> {
    put_len(out, bytes.len())?;
    out.extend_from_slice(bytes);
    Ok(())
}

/// The file checksum: a fast 64-bit hash of the head section and the body, eight bytes at
/// a time. It detects damage (zeroed or cut data), not tampering.
fn checksum(head: &[u8], body: &[u8]) -> u64 {
    fmix64(digest(digest(0x736c_7569_6365_2e31, head), body))
}

fn digest(mut h: u64, data: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    h ^= (data.len() as u64).wrapping_mul(K);
    let mut words = data.chunks_exact(8);
    for word in &mut words {
        h = (h ^ read_u64(word)).wrapping_mul(K).rotate_left(31);
    }
    let rest = words.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    (h ^ u64::from_le_bytes(last)).wrapping_mul(K).rotate_left(31)
}
