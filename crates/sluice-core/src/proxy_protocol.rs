//! The PROXY protocol (HAProxy's specification, versions 1 and 2): a header a load balancer
//! writes at the start of a TCP connection to name the client it accepted.
//!
//! - [`parse`] reads a header from bytes (either version; v2 with its TLVs and CRC32C check);
//! - [`read_header`] reads one from an accepted socket within a timeout, consuming exactly
//!   the header's bytes (it peeks first), so what follows is the client's own stream;
//! - [`Header::encode`] writes one, for connections to origins that expect it.
//!
//! Version 1 is one text line (`PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n`, at most
//! 107 bytes); version 2 is binary: a 12-byte signature, version and command, family, a
//! length, the addresses, then type-length-value records (ALPN, authority, TLS details...).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The 12 bytes every version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest version 1 header, CRLF included.
pub const V1_MAX_LEN: usize = 107;

/// Which version of the protocol a header was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text form.
    V1,
    /// The binary form (with TLVs).
    V2,
}

/// What the sender says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The connection carries a proxied client's traffic.
    Proxy,
    /// The sender's own connection (a health check): use the real endpoints.
    Local,
}

/// The client's address and the address it connected to, as the sender saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
}

/// One type-length-value record of a version 2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv {
    /// The record type (see [`tlv`]).
    pub kind: u8,
    /// Its value.
    pub value: Vec<u8>,
}

/// Record types and flags of version 2 headers.
pub mod tlv {
    /// The application protocol the client negotiated (ALPN), like `h2`.
    pub const ALPN: u8 = 0x01;
    /// The host name the client asked for (TLS SNI), UTF-8.
    pub const AUTHORITY: u8 = 0x02;
    /// A CRC32C of the whole header, computed with this value zeroed.
    pub const CRC32C: u8 = 0x03;
    /// Padding, ignored.
    pub const NOOP: u8 = 0x04;
    /// An opaque connection identifier, at most 128 bytes.
    pub const UNIQUE_ID: u8 = 0x05;
    /// TLS details: a client flags byte, a 4-byte verify result, then sub-records.
    pub const SSL: u8 = 0x20;
    /// Sub-record of [`SSL`]: the TLS version, like `TLSv1.3`.
    pub const SSL_VERSION: u8 = 0x21;
    /// Sub-record of [`SSL`]: the client certificate's subject common name.
    pub const SSL_CN: u8 = 0x22;
    /// Sub-record of [`SSL`]: the cipher suite's name.
    pub const SSL_CIPHER: u8 = 0x23;
    /// Sub-record of [`SSL`]: the certificate's signature algorithm.
    pub const SSL_SIG_ALG: u8 = 0x24;
    /// Sub-record of [`SSL`]: the certificate's key algorithm.
    pub const SSL_KEY_ALG: u8 = 0x25;
    /// The network namespace, as text.
    pub const NETNS: u8 = 0x30;
    /// [`SSL`] client flag: the client connected over TLS.
    pub const CLIENT_SSL: u8 = 0x01;
    /// [`SSL`] client flag: the client sent a certificate on this connection.
    pub const CLIENT_CERT_CONN: u8 = 0x02;
    /// [`SSL`] client flag: the client sent a certificate on this TLS session.
    pub const CLIENT_CERT_SESS: u8 = 0x04;
}

/// The TLS details of a version 2 header's [`tlv::SSL`] record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssl {
    /// Flags ([`tlv::CLIENT_SSL`] and the others).
    pub client: u8,
    /// 0 when the client's certificate was verified (or none was required).
    pub verify: u32,
    /// Sub-records ([`tlv::SSL_VERSION`], [`tlv::SSL_CIPHER`], ...).
    pub tlvs: Vec<Tlv>,
}

impl Ssl {
    /// Encodes the record's value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.tlvs.iter().map(|t| 3 + t.value.len()).sum::<usize>());
        out.push(self.client);
        out.extend_from_slice(&self.verify.to_be_bytes());
        for t in &self.tlvs {
            push_tlv(&mut out, t.kind, &t.value);
        }
        out
    }

    /// The value of sub-record `kind`, if present.
    pub fn get(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs.iter().find(|t| t.kind == kind).map(|t| t.value.as_slice())
    }
}

/// A PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The version it was (or is to be) written in.
    pub version: Version,
    /// Proxied connection or the sender's own.
    pub command: Command,
    /// The proxied endpoints; `None` when the sender did not know them (v1 `UNKNOWN`, v2
    /// `UNSPEC` or Unix sockets) or for [`Command::Local`].
    pub addresses: Option<Addresses>,
    /// Version 2 records, in order (none in version 1).
    pub tlvs: Vec<Tlv>,
}

impl Header {
    /// A header for a proxied connection from `source` to `destination`.
    pub fn proxied(version: Version, source: SocketAddr, destination: SocketAddr) -> Self {
        Self { version, command: Command::Proxy, addresses: Some(Addresses { source, destination }), tlvs: Vec::new() }
    }

    /// The header of the sender's own connection (health checks): v1 `UNKNOWN`, v2 `LOCAL`.
    pub fn local(version: Version) -> Self {
        let command = match version {
            Version::V1 => Command::Proxy,
            Version::V2 => Command::Local,
        };
        Self { version, command, addresses: None, tlvs: Vec::new() }
    }

    /// The client's address, when the header names one.
    pub fn source(&self) -> Option<SocketAddr> {
        self.addresses.filter(|_| self.command == Command::Proxy).map(|a| a.source)
    }

    /// The value of the first record of type `kind`.
    pub fn tlv(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs.iter().find(|t| t.kind == kind).map(|t| t.value.as_slice())
    }

    /// The host name the client asked for ([`tlv::AUTHORITY`]).
    pub fn authority(&self) -> Option<&str> {
        self.tlv(tlv::AUTHORITY).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The negotiated application protocol ([`tlv::ALPN`]).
    pub fn alpn(&self) -> Option<&[u8]> {
        self.tlv(tlv::ALPN)
    }

    /// The TLS details ([`tlv::SSL`]), if present and well formed.
    pub fn ssl(&self) -> Option<Ssl> {
        let value = self.tlv(tlv::SSL)?;
        if value.len() < 5 {
            return None;
        }
        let verify = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
        let tlvs = parse_tlvs(&value[5..]).ok()?;
        Some(Ssl { client: value[0], verify, tlvs })
    }

    /// Adds a record (version 2 only; version 1 has none).
    pub fn push_tlv(&mut self, kind: u8, value: impl Into<Vec<u8>>) {
        self.tlvs.push(Tlv { kind, value: value.into() });
    }

    /// Encodes the header in its version. Addresses of two families are both written as
    /// IPv6 (IPv4-mapped). In version 2, a [`tlv::CRC32C`] record gets the right checksum,
    /// and records that would take the header past 65,535 bytes are left out.
    pub fn encode(&self) -> Vec<u8> {
        match self.version {
            Version::V1 => self.encode_v1(),
            Version::V2 => self.encode_v2(),
        }
    }

    fn encode_v1(&self) -> Vec<u8> {
        use std::io::Write as _;
        let Some(a) = self.addresses.filter(|_| self.command == Command::Proxy) else {
            return b"PROXY UNKNOWN\r\n".to_vec();
        };
        let mut out = Vec::with_capacity(V1_MAX_LEN);
        let (src, dst) = (a.source, a.destination);
        match same_family(src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let _ = write!(out, "PROXY TCP4 {s} {d} {} {}\r\n", src.port(), dst.port());
            }
            (s, d) => {
                let _ = write!(out, "PROXY TCP6 {s} {d} {} {}\r\n", src.port(), dst.port());
            }
        }
        out
    }

    fn encode_v2(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 36 + self.tlvs.iter().map(|t| 3 + t.value.len()).sum::<usize>());
        out.extend_from_slice(&V2_SIGNATURE);
        let command = match self.command {
            Command::Local => 0x20,
            Command::Proxy => 0x21,
        };
        out.push(command);
        out.extend_from_slice(&[0, 0, 0]); // family and length, written below
        match self.addresses {
            Some(a) => match same_family(a.source.ip(), a.destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out[13] = 0x11;
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                    out.extend_from_slice(&a.source.port().to_be_bytes());
                    out.extend_from_slice(&a.destination.port().to_be_bytes());
                }
                (s, d) => {
                    out[13] = 0x21;
                    out.extend_from_slice(&v6(s).octets());
                    out.extend_from_slice(&v6(d).octets());
                    out.extend_from_slice(&a.source.port().to_be_bytes());
                    out.extend_from_slice(&a.destination.port().to_be_bytes());
                }
            },
            None => out[13] = 0x00,
        }
        let mut crc_at = None;
        for t in &self.tlvs {
            if out.len() + 3 + t.value.len() > 16 + usize::from(u16::MAX) {
                continue;
            }
            // The first checksum record is the one checked (as in `parse`).
            if t.kind == tlv::CRC32C && t.value.len() == 4 && crc_at.is_none() {
                crc_at = Some(out.len() + 3);
            }
            push_tlv(&mut out, t.kind, &t.value);
        }
        let len = u16::try_from(out.len() - 16).unwrap_or(u16::MAX);
        out[14..16].copy_from_slice(&len.to_be_bytes());
        if let Some(at) = crc_at {
            out[at..at + 4].fill(0);
            let crc = crc32c(&out);
            out[at..at + 4].copy_from_slice(&crc.to_be_bytes());
        }
        out
    }
}

fn push_tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&value[..usize::from(len)]);
}

/// Both addresses in one family: IPv4 when both are (or map to) IPv4, else IPv6.
fn same_family(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    match (a.to_canonical(), b.to_canonical()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (IpAddr::V4(a), IpAddr::V4(b)),
        (a, b) => (IpAddr::V6(v6(a)), IpAddr::V6(v6(b))),
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Why bytes are not a valid PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The connection does not start with either version's signature.
    #[error("the connection does not start with a PROXY protocol header")]
    NotProxy,
    /// A version 1 line that breaks the specification.
    #[error("malformed PROXY protocol v1 header: {0}")]
    V1(&'static str),
    /// A version 2 header that breaks the specification.
    #[error("malformed PROXY protocol v2 header: {0}")]
    V2(&'static str),
    /// A version 2 header whose CRC32C record does not match.
    #[error("PROXY protocol v2 header fails its CRC32C check")]
    Checksum,
}

/// The result of [`parse`] on the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A header, and how many bytes it took.
    Complete(Header, usize),
    /// The bytes so far are a valid beginning: more are needed (in all, this many when
    /// known).
    Incomplete(Option<usize>),
}

/// Parses a header at the start of `buf` (either version).
pub fn parse(buf: &[u8]) -> Result<Parsed, ParseError> {
    match buf.first() {
        None => Ok(Parsed::Incomplete(None)),
        Some(b'\r') => parse_v2(buf),
        Some(b'P') => parse_v1(buf),
        Some(_) => Err(ParseError::NotProxy),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ParseError> {
    const PREFIX: &[u8] = b"PROXY ";
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        return Err(ParseError::NotProxy);
    }
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(end) = memchr::memchr(b'\n', window) else {
        if buf.len() >= V1_MAX_LEN {
            return Err(ParseError::V1("no line end within 107 bytes"));
        }
        return Ok(Parsed::Incomplete(None));
    };
    if end == 0 || window[end - 1] != b'\r' {
        return Err(ParseError::V1("the line does not end with CRLF"));
    }
    let line =
        std::str::from_utf8(&window[PREFIX.len().min(end - 1)..end - 1]).map_err(|_| ParseError::V1("not ASCII"))?;
    let mut fields = line.split(' ');
    let header = match fields.next() {
        // The rest of an UNKNOWN line is to be ignored.
        Some("UNKNOWN") => Header::local(Version::V1),
        Some(family @ ("TCP4" | "TCP6")) => {
            let mut next = || fields.next().ok_or(ParseError::V1("missing fields"));
            let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
            if fields.next().is_some() {
                return Err(ParseError::V1("extra fields"));
            }
            let (src, dst): (IpAddr, IpAddr) = if family == "TCP4" {
                (v1_ip::<Ipv4Addr>(src)?.into(), v1_ip::<Ipv4Addr>(dst)?.into())
            } else {
                (v1_ip::<Ipv6Addr>(src)?.into(), v1_ip::<Ipv6Addr>(dst)?.into())
            };
            let source = SocketAddr::new(src, v1_port(sport)?);
            let destination = SocketAddr::new(dst, v1_port(dport)?);
            Header::proxied(Version::V1, source, destination)
        }
        _ => return Err(ParseError::V1("the protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Parsed::Complete(header, end + 1))
}

fn v1_ip<T: std::str::FromStr>(text: &str) -> Result<T, ParseError> {
    text.parse().map_err(|_| ParseError::V1("bad address"))
}

fn v1_port(text: &str) -> Result<u16, ParseError> {
    // Digits only: Rust's integer parser would take a leading `+`.
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::V1("bad port"));
    }
    text.parse().map_err(|_| ParseError::V1("bad port"))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ParseError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(ParseError::NotProxy);
    }
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete(Some(16)));
    }
    let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if buf[12] >> 4 != 2 {
        return Err(ParseError::V2("version is not 2"));
    }
    let command = match buf[12] & 0x0f {
        0 => Command::Local,
        1 => Command::Proxy,
        _ => return Err(ParseError::V2("unknown command")),
    };
    let address_len = match buf[13] {
        0x00 => 0,
        0x11 => 12,
        0x21 => 36,
        0x31 => 216,
        0x12 | 0x22 | 0x32 => return Err(ParseError::V2("datagram addresses on a stream connection")),
        _ => return Err(ParseError::V2("unknown address family")),
    };
    if buf.len() < total {
        return Ok(Parsed::Incomplete(Some(total)));
    }
    let header = &buf[..total];
    if command == Command::Local {
        // The block is to be ignored: the connection is the sender's own.
        return Ok(Parsed::Complete(Header::local(Version::V2), total));
    }
    let block = &header[16..];
    if block.len() < address_len {
        return Err(ParseError::V2("the length is too short for the addresses"));
    }
    let a = &block[..address_len];
    let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
    let addresses = match buf[13] {
        0x11 => {
            let src = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let dst = Ipv4Addr::new(a[4], a[5], a[6], a[7]);
            Some(Addresses {
                source: SocketAddr::new(src.into(), port(8)),
                destination: SocketAddr::new(dst.into(), port(10)),
            })
        }
        0x21 => {
            let octets = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&a[at..at + 16]);
                Ipv6Addr::from(o)
            };
            Some(Addresses {
                source: SocketAddr::new(octets(0).into(), port(32)),
                destination: SocketAddr::new(octets(16).into(), port(34)),
            })
        }
        _ => None,
    };
    let tlvs = parse_tlvs(&block[address_len..])?;
    if let Some(at) = crc_position(&tlvs, header, 16 + address_len) {
        let expected = u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        let mut zeroed = header.to_vec();
        zeroed[at..at + 4].fill(0);
        if crc32c(&zeroed) != expected {
            return Err(ParseError::Checksum);
        }
    }
    Ok(Parsed::Complete(Header { version: Version::V2, command, addresses, tlvs }, total))
}

fn parse_tlvs(mut rest: &[u8]) -> Result<Vec<Tlv>, ParseError> {
    let mut tlvs = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 3 {
            return Err(ParseError::V2("a truncated TLV"));
        }
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        if rest.len() < 3 + len {
            return Err(ParseError::V2("a TLV longer than the header"));
        }
        tlvs.push(Tlv { kind: rest[0], value: rest[3..3 + len].to_vec() });
        rest = &rest[3 + len..];
    }
    Ok(tlvs)
}

/// Where the value of the CRC32C record sits in `header`, if there is one.
fn crc_position(tlvs: &[Tlv], header: &[u8], start: usize) -> Option<usize> {
    let mut at = start;
    for t in tlvs {
        if t.kind == tlv::CRC32C && t.value.len() == 4 && at + 7 <= header.len() {
            return Some(at + 3);
        }
        at += 3 + t.value.len();
    }
    None
}

/// CRC32C (Castagnoli), as version 2's checksum record uses.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0x82F6_3B78 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8);
    }
    !crc
}

/// Why [`read_header`] gave up on a connection.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No complete header within the timeout.
    #[error("no PROXY protocol header within {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection before a complete header.
    #[error("connection closed before a complete PROXY protocol header")]
    Closed,
    /// A socket error.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
    /// Not a valid header.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// Reads the PROXY protocol header a connection starts with, within `timeout`. The bytes
/// are peeked until a whole header is there, then exactly the header is consumed: what
/// follows stays in the socket for TLS or HTTP.
pub async fn read_header(stream: &mut TcpStream, timeout: Duration) -> Result<Header, ReadError> {
    match tokio::time::timeout(timeout, read_header_inner(stream)).await {
        Ok(r) => r,
        Err(_) => Err(ReadError::Timeout(timeout)),
    }
}

async fn read_header_inner(stream: &mut TcpStream) -> Result<Header, ReadError> {
    let mut buf = vec![0u8; 256];
    let mut seen = 0;
    let mut pause = Duration::from_millis(1);
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        match parse(&buf[..n])? {
            Parsed::Complete(header, len) => {
                stream.read_exact(&mut buf[..len]).await?;
                return Ok(header);
            }
            Parsed::Incomplete(Some(total)) if total > buf.len() => {
                buf.resize(total, 0);
                continue;
            }
            Parsed::Incomplete(_) => {}
        }
        // `peek` returns at once while any byte is waiting: pace the next look instead of
        // spinning (a header split across packets is rare; the timeout bounds the wait).
        if n == seen {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        seen = n;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn complete(bytes: &[u8]) -> (Header, usize) {
        match parse(bytes).unwrap() {
            Parsed::Complete(h, n) => (h, n),
            other => panic!("not complete: {other:?}"),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_lines() {
        let (h, n) = complete(b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\nGET / HTTP/1.1\r\n");
        assert_eq!(n, 45);
        assert_eq!(h.source(), Some(addr("192.0.2.1:56324")));
        assert_eq!(h.addresses.unwrap().destination, addr("198.51.100.7:443"));
        let (h, _) = complete(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n");
        assert_eq!(h.source(), Some(addr("[2001:db8::1]:1")));
        let (h, n) = complete(b"PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 1 2\r\nrest");
        assert_eq!((h.source(), n), (None, 43));
        assert_eq!(complete(b"PROXY UNKNOWN\r\n").1, 15);
    }

    #[test]
    fn v1_errors() {
        for (bad, why) in [
            (&b"PROXY TCP4 192.0.2.1 198.51.100.7 56324\r\n"[..], "missing fields"),
            (b"PROXY TCP4 192.0.2.1 198.51.100.7 1 2 3\r\n", "extra fields"),
            (b"PROXY TCP4 2001:db8::1 198.51.100.7 1 2\r\n", "bad address"),
            (b"PROXY TCP4 192.0.2.01 198.51.100.7 1 2\r\n", "bad address"),
            (b"PROXY TCP4 192.0.2.1 198.51.100.7 +1 2\r\n", "bad port"),
            (b"PROXY TCP4 192.0.2.1 198.51.100.7 65536 2\r\n", "bad port"),
            (b"PROXY TCP4  192.0.2.1 198.51.100.7 1 2\r\n", "extra fields"),
            (b"PROXY TCP4 192.0.2.1 198.51.100.7 1 2\n", "the line does not end with CRLF"),
            (b"PROXY UDP4 192.0.2.1 198.51.100.7 1 2\r\n", "the protocol is not TCP4, TCP6 or UNKNOWN"),
        ] {
            assert_eq!(parse(bad), Err(ParseError::V1(why)), "{:?}", String::from_utf8_lossy(bad));
        }
        let endless = [&b"PROXY TCP4 "[..], &[b'1'; 100]].concat();
        assert_eq!(parse(&endless), Err(ParseError::V1("no line end within 107 bytes")));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ParseError::NotProxy));
        assert_eq!(parse(b"PROXI"), Err(ParseError::NotProxy));
        assert_eq!(parse(b"PROX"), Ok(Parsed::Incomplete(None)));
        assert_eq!(parse(b"PROXY TCP4 192.0.2.1"), Ok(Parsed::Incomplete(None)));
    }

    #[test]
    fn v2_round_trips_with_tlvs_and_checksum() {
        let mut h = Header::proxied(Version::V2, addr("192.0.2.1:56324"), addr("198.51.100.7:443"));
        h.push_tlv(tlv::ALPN, b"h2".to_vec());
        h.push_tlv(tlv::AUTHORITY, b"example.com".to_vec());
        let ssl = Ssl {
            client: tlv::CLIENT_SSL,
            verify: 0,
            tlvs: vec![Tlv { kind: tlv::SSL_VERSION, value: b"TLSv1.3".to_vec() }],
        };
        h.push_tlv(tlv::SSL, ssl.encode());
        h.push_tlv(tlv::CRC32C, vec![0; 4]);
        let bytes = h.encode();
        let (back, n) = complete(&[&bytes[..], b"GET /"].concat());
        assert_eq!(n, bytes.len());
        assert_eq!(back.authority(), Some("example.com"));
        assert_eq!(back.alpn(), Some(&b"h2"[..]));
        assert_eq!(back.ssl().unwrap().get(tlv::SSL_VERSION), Some(&b"TLSv1.3"[..]));
        assert_eq!(back.tlv(tlv::CRC32C), Some(&bytes[bytes.len() - 4..]));
        assert_eq!(Header { tlvs: back.tlvs.clone(), ..h.clone() }, back);
        // A flipped bit anywhere fails the checksum.
        let mut broken = bytes.clone();
        broken[20] ^= 1;
        assert_eq!(parse(&broken), Err(ParseError::Checksum));
        // Cut short: incomplete, with the total length known.
        assert_eq!(parse(&bytes[..20]), Ok(Parsed::Incomplete(Some(bytes.len()))));
        assert_eq!(parse(&bytes[..5]), Ok(Parsed::Incomplete(Some(16))));
    }

    #[test]
    fn v2_families_and_commands() {
        let h = Header::proxied(Version::V2, addr("[2001:db8::1]:1"), addr("192.0.2.9:2"));
        let (back, _) = complete(&h.encode());
        // Mixed families are written as IPv6.
        assert_eq!(back.addresses.unwrap().destination, addr("[::ffff:192.0.2.9]:2"));
        let local = Header::local(Version::V2).encode();
        assert_eq!(local.len(), 16);
        let (back, _) = complete(&local);
        assert_eq!((back.command, back.source()), (Command::Local, None));
        // LOCAL ignores whatever the block holds.
        let mut with_block = local.clone();
        with_block[13] = 0x11;
        with_block[15] = 3;
        with_block.extend_from_slice(&[1, 2, 3]);
        assert_eq!(complete(&with_block).1, 19);
        let mut bad = local.clone();
        bad[12] = 0x31;
        assert_eq!(parse(&bad), Err(ParseError::V2("version is not 2")));
        bad[12] = 0x22;
        assert_eq!(parse(&bad), Err(ParseError::V2("unknown command")));
        let mut short = Header::proxied(Version::V2, addr("192.0.2.1:1"), addr("192.0.2.2:2")).encode();
        short[15] = 4;
        short.truncate(20);
        assert_eq!(parse(&short), Err(ParseError::V2("the length is too short for the addresses")));
        let mut dgram = Header::proxied(Version::V2, addr("192.0.2.1:1"), addr("192.0.2.2:2")).encode();
        dgram[13] = 0x12;
        assert!(matches!(parse(&dgram), Err(ParseError::V2(_))));
        let mut tlv_overrun = Header::proxied(Version::V2, addr("192.0.2.1:1"), addr("192.0.2.2:2")).encode();
        tlv_overrun.extend_from_slice(&[tlv::NOOP, 0, 9, 0]);
        tlv_overrun[15] += 4;
        assert_eq!(parse(&tlv_overrun), Err(ParseError::V2("a TLV longer than the header")));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQUIX\n"), Err(ParseError::NotProxy));
    }

    #[test]
    fn v1_encoding() {
        let h = Header::proxied(Version::V1, addr("192.0.2.1:56324"), addr("198.51.100.7:443"));
        assert_eq!(h.encode(), b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n");
        let mapped = Header::proxied(Version::V1, addr("[::ffff:192.0.2.1]:1"), addr("198.51.100.7:2"));
        assert_eq!(mapped.encode(), b"PROXY TCP4 192.0.2.1 198.51.100.7 1 2\r\n");
        let longest = Header::proxied(
            Version::V1,
            addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
            addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
        );
        assert_eq!(longest.encode().len(), 104);
        assert_eq!(complete(&longest.encode()).0, longest);
        assert_eq!(Header::local(Version::V1).encode(), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[tokio::test]
    async fn reads_exactly_the_header_even_when_split() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let header = Header::proxied(Version::V2, addr("192.0.2.1:5"), addr("192.0.2.2:6")).encode();
        let sent = header.clone();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(at).await.unwrap();
            s.write_all(&sent[..10]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
            s.write_all(&[&sent[10..], b"hello"].concat()).await.unwrap();
            s
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let h = read_header(&mut stream, Duration::from_secs(2)).await.unwrap();
        assert_eq!(h.source(), Some(addr("192.0.2.1:5")));
        let mut rest = [0u8; 5];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");
        let _keep = client.await.unwrap();

        // Silence: the timeout. Garbage: an error at once.
        let client = tokio::spawn(async move { TcpStream::connect(at).await.unwrap() });
        let (mut stream, _) = listener.accept().await.unwrap();
        let quiet = read_header(&mut stream, Duration::from_millis(50)).await;
        assert!(matches!(quiet, Err(ReadError::Timeout(_))), "{quiet:?}");
        drop(client.await.unwrap());
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(at).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            s
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let garbage = read_header(&mut stream, Duration::from_secs(2)).await;
        assert!(matches!(garbage, Err(ReadError::Parse(ParseError::NotProxy))), "{garbage:?}");
        drop(client.await.unwrap());
    }
}
