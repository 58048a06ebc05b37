use super::*;

fn scan_all(chunks: &[&[u8]]) -> (Vec<u8>, Scanner) {
    let mut scanner = Scanner::new(64 * 1024);
    let mut out = Vec::new();
    for chunk in chunks {
        let mut buf = chunk.to_vec();
        match scanner.scan(&mut buf) {
            Scan::Ok => out.extend_from_slice(&buf),
            Scan::Poison { keep } => {
                out.extend_from_slice(&buf[..keep]);
                break;
            }
        }
    }
    (out, scanner)
}

fn poisoned(chunks: &[&[u8]]) -> bool {
    scan_all(chunks).1.state == State::Poisoned
}

#[test]
fn plain_requests_pass_untouched() {
    let req: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n";
    let (out, scanner) = scan_all(&[req]);
    assert_eq!(out, req);
    assert_eq!(scanner.state, State::Head);
    assert_eq!(scanner.heads_seen, 3);
}

#[test]
fn heads_split_anywhere_are_followed() {
    let req: &[u8] = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    for split in 1..req.len() {
        let (out, scanner) = scan_all(&[&req[..split], &req[split..]]);
        assert_eq!(out, req, "split at {split}");
        assert_eq!(scanner.state, State::Head, "split at {split}");
        assert_eq!(scanner.heads_seen, 2, "split at {split}");
    }
}

#[test]
fn ambiguous_framing_is_poisoned() {
    assert!(poisoned(&[b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"]));
    assert!(poisoned(&[b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"]));
    assert!(poisoned(&[b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n"]));
    assert!(poisoned(&[b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n"]));
    assert!(poisoned(&[b"GET / HTTP/1.1\nHost: a\r\n\r\n"]));
    assert!(poisoned(&[b"GET / HTTP/1.1\r\nHost: a\n\n"]));
    assert!(poisoned(&[b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"]));
    assert!(poisoned(&[b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"]));
    assert!(poisoned(&[b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"]));
}

#[test]
fn poison_corrupts_the_final_line_feed_and_drops_what_follows() {
    let req: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nxGET / HTTP/1.1\r\n\r\n";
    let (out, _) = scan_all(&[req]);
    let head_len = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(out.len(), head_len);
    assert_eq!(out[head_len - 1], 0);
}

#[test]
fn upgrade_and_connect_stop_the_guard() {
    let (_, s) = scan_all(&[b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nrandom\nbytes"]);
    assert_eq!(s.state, State::Passthrough);
    let (_, s) = scan_all(&[b"CONNECT a:443 HTTP/1.1\r\n\r\n"]);
    assert_eq!(s.state, State::Passthrough);
}

#[test]
fn invalid_chunk_framing_is_left_to_hyper() {
    let (_, s) = scan_all(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]);
    assert_eq!(s.state, State::Passthrough);
}

#[test]
fn oversized_heads_are_left_to_hyper() {
    let mut scanner = Scanner::new(100);
    let mut big = b"GET / HTTP/1.1\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'a', 200));
    assert!(matches!(scanner.scan(&mut big), Scan::Ok));
    assert_eq!(scanner.state, State::Passthrough);
}

#[test]
fn poison_works_when_the_head_is_split() {
    let req: &[u8] = b"GET / HTTP/1.1\r\nHost : a\r\n\r\n";
    for split in 1..req.len() {
        let (out, scanner) = scan_all(&[&req[..split], &req[split..]]);
        assert_eq!(scanner.state, State::Poisoned, "split at {split}");
        assert_eq!(out.len(), req.len(), "split at {split}");
        assert_eq!(out[req.len() - 1], 0, "split at {split}");
    }
}
