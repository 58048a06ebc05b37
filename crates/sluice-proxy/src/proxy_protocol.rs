//! The PROXY protocol header sent to origins of groups with `proxy-protocol`: it names
//! the client of a request, so that the origin sees the client's address (not Sluice's).

use sluice_core::proxy_protocol::{tlv, Header, Ssl, Tlv, Version};
use sluice_core::HttpProtocol;

use crate::Session;

/// The encoded header for `session`'s client: its address (after `real-ip`, when that
/// names one) and the address it connected to; in version 2 also the records an origin
/// behind a TLS-terminating proxy needs: [`tlv::AUTHORITY`] (SNI), [`tlv::ALPN`] and
/// [`tlv::SSL`] (version, cipher, client certificate CN). Records of a PROXY header the
/// client connection itself started with are passed on where Sluice has none of its own.
pub fn header_for(session: &Session, version: Version) -> Vec<u8> {
    let conn = session.connection();
    let incoming = conn.proxy_header.as_deref();
    let destination =
        incoming.filter(|h| h.source().is_some()).and_then(|h| h.addresses).map_or(conn.local_addr, |a| a.destination);
    let mut header = Header::proxied(version, session.client_addr(), destination);
    if version == Version::V1 {
        return header.encode();
    }
    if let Some(tls) = &conn.tls {
        if let Some(name) = &tls.server_name {
            header.push_tlv(tlv::AUTHORITY, name.as_bytes());
        }
        let alpn: &[u8] = match conn.protocol {
            HttpProtocol::Http2 => b"h2",
            HttpProtocol::Http1 => b"http/1.1",
        };
        header.push_tlv(tlv::ALPN, alpn);
        let mut ssl = Ssl { client: tlv::CLIENT_SSL, verify: 0, tlvs: Vec::with_capacity(3) };
        ssl.tlvs.push(Tlv { kind: tlv::SSL_VERSION, value: tls.version.as_bytes().to_vec() });
        ssl.tlvs.push(Tlv { kind: tlv::SSL_CIPHER, value: tls.cipher.as_bytes().to_vec() });
        if let Some(cert) = &tls.client_certificate {
            ssl.client |= tlv::CLIENT_CERT_CONN | tlv::CLIENT_CERT_SESS;
            if let Some(cn) = common_name(&cert.subject) {
                ssl.tlvs.push(Tlv { kind: tlv::SSL_CN, value: cn.as_bytes().to_vec() });
            }
        }
        header.push_tlv(tlv::SSL, ssl.encode());
    }
    if let Some(incoming) = incoming {
        for t in &incoming.tlvs {
            let passed_on = !matches!(t.kind, tlv::CRC32C | tlv::NOOP);
            if passed_on && header.tlv(t.kind).is_none() {
                header.tlvs.push(t.clone());
            }
        }
    }
    header.encode()
}

/// The `CN=` part of a distinguished name written `CN=alice, O=Example`.
fn common_name(subject: &str) -> Option<&str> {
    subject.split(',').map(str::trim).find_map(|part| part.strip_prefix("CN="))
}

#[cfg(test)]
mod tests {
    #[test]
    fn common_name_of_a_subject() {
        assert_eq!(super::common_name("CN=alice, O=Example"), Some("alice"));
        assert_eq!(super::common_name("O=Example,CN=bob"), Some("bob"));
        assert_eq!(super::common_name("O=Example"), None);
    }
}
