//! Runs the example binary against a tiny origin: `/admin` is blocked by the custom
//! filter, everything else is proxied and tagged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

fn request(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn blocks_admin_and_tags_responses() {
    // A one-shot-per-connection origin on a thread.
    let origin = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin_addr = origin.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in origin.incoming() {
            let mut s = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\norigin");
        }
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_custom-proxy"))
        .args(["127.0.0.1:0", &origin_addr.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap().to_string();

    let blocked = request(&addr, "/admin/users");
    assert!(blocked.starts_with("HTTP/1.1 403"), "{blocked}");
    assert!(blocked.contains("x-custom-proxy: 1"), "{blocked}");
    let passed = request(&addr, "/public");
    assert!(passed.starts_with("HTTP/1.1 200"), "{passed}");
    assert!(passed.ends_with("origin"), "{passed}");
    assert!(passed.contains("x-custom-proxy: 1"), "{passed}");
    child.kill().unwrap();
    let _ = child.wait();
}
