//! The `files` route action over real sockets: index files and directory redirects,
//! listings, validators and 304/412, single and multiple ranges (coalesced, 416, If-Range),
//! precompressed siblings, try-files, HEAD, large streamed files, and every traversal
//! attempt (`..` encoded or not, symlinks out of the root) refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pki;

use std::path::{Path, PathBuf};

use common::*;
use http::StatusCode;

const APP_JS: &str = "console.log('hello from app.js');\n";

/// A directory tree to serve, and a secret outside it.
fn tree() -> (PathBuf, PathBuf) {
    let base = pki::temp_dir("files");
    let root = base.join("www");
    let outside = base.join("outside");
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::create_dir_all(root.join("empty/sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "top secret").unwrap();
    std::fs::write(root.join("index.html"), "<h1>home</h1>\n").unwrap();
    std::fs::write(root.join("docs/index.html"), "<h1>docs</h1>\n").unwrap();
    std::fs::write(root.join("app.js"), APP_JS).unwrap();
    std::fs::write(root.join("app.js.br"), "BROTLI BYTES").unwrap();
    std::fs::write(root.join("app.js.gz"), "GZIP BYTES").unwrap();
    std::fs::write(root.join("hello world.txt"), "spaced out").unwrap();
    std::fs::write(root.join("empty/a<b>.txt"), "x").unwrap();
    std::fs::write(root.join("empty/.hidden"), "x").unwrap();
    let big: Vec<u8> = (0..200 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
    std::os::unix::fs::symlink(root.join("app.js"), root.join("inside-link.js")).unwrap();
    (root, outside)
}

fn config(root: &Path) -> String {
    let r = root.display();
    format!(
        r#"server {{ access-log "off" }}
listener "127.0.0.1:0"
site "*" {{
    route "/" {{ files "{r}" {{ precompressed #true; }} }}
    route "/list" {{ files "{r}" strip-prefix=#true {{ listing #true; }} }}
    route "/spa" {{ files "{r}" strip-prefix=#true {{ try-files "$uri" "$uri/" "/index.html"; }} }}
    route "/strict" {{ files "{r}" strip-prefix=#true {{ try-files "$uri" "=404"; }} }}
    route "/follow" {{ files "{r}" strip-prefix=#true {{ follow-symlinks #true; }} }}
}}
"#
    )
}

async fn start() -> (Proxy, PathBuf) {
    let (root, _) = tree();
    (Proxy::start(&config(&root)).await, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_index_files_and_directory_redirects() {
    let (proxy, _) = start().await;
    let (status, h, body) = send(proxy.addr(), "GET", "/", &[]).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"<h1>home</h1>\n"[..]));
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["content-length"], "14");
    assert_eq!(h["accept-ranges"], "bytes");
    assert!(h["etag"].to_str().unwrap().starts_with('"'));
    assert!(h["last-modified"].to_str().unwrap().ends_with(" GMT"));

    let (status, h, _) = send(proxy.addr(), "GET", "/docs?x=1", &[]).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(h["location"], "/docs/?x=1");
    assert_eq!(send(proxy.addr(), "GET", "/docs/", &[]).await.2, b"<h1>docs</h1>\n");
    assert_eq!(send(proxy.addr(), "GET", "/hello%20world.txt", &[]).await.2, b"spaced out");
    assert_eq!(send(proxy.addr(), "GET", "/app.js/", &[]).await.0, StatusCode::NOT_FOUND, "a file is not a directory");
    assert_eq!(send(proxy.addr(), "GET", "/missing.txt", &[]).await.0, StatusCode::NOT_FOUND);
    assert_eq!(send(proxy.addr(), "GET", "/empty/", &[]).await.0, StatusCode::FORBIDDEN, "listing is off by default");

    let (status, h, _) = send(proxy.addr(), "POST", "/app.js", &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h["allow"], "GET, HEAD");

    let (status, h, body) = send(proxy.addr(), "HEAD", "/app.js", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["content-length"], APP_JS.len().to_string());
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    assert!(body.is_empty());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_escape_names_and_hide_dotfiles() {
    let (proxy, _) = start().await;
    let (status, h, body) = send(proxy.addr(), "GET", "/list/empty/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("href=\"a%3Cb%3E.txt\">a&lt;b&gt;.txt</a>"), "{html}");
    assert!(!html.contains("hidden"), "{html}");
    assert!(html.contains("href=\"sub/\">sub/</a>") && html.contains("href=\"../\""), "{html}");
    // An index file wins over the listing.
    assert_eq!(send(proxy.addr(), "GET", "/list/", &[]).await.2, b"<h1>home</h1>\n");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_in_any_spelling_is_refused() {
    let (proxy, _) = start().await;
    for path in [
        "/../outside/secret.txt",
        "/docs/../../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/%2E%2E/outside/secret.txt",
        "/.%2e/outside/secret.txt",
        "/docs/..%2f..%2foutside/secret.txt",
        "/docs%2f..%2f..%2foutside%2fsecret.txt",
        "/list/..%2F..%2Foutside/secret.txt",
        "/%00",
        "/%zz",
    ] {
        // Raw bytes: no client library gets to normalize the path first.
        let answer = raw(
            proxy.addr(),
            format!("GET {path} HTTP/1.1\r\nHost: files.test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        // Dot-segments are resolved before routing (never above the root: a 404 inside
        // it); what only a decoded `%2F` would make a `..` reaches the files action and is
        // refused (400). Either way nothing outside the root comes back.
        assert!(answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
        assert!(!answer.contains("top secret"), "{path}");
    }
    // A symlink out of the root: refused, unless following is allowed.
    let (status, _, body) = send(proxy.addr(), "GET", "/out/secret.txt", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!String::from_utf8_lossy(&body).contains("top secret"));
    assert_eq!(send(proxy.addr(), "GET", "/follow/out/secret.txt", &[]).await.2, b"top secret");
    // A symlink that stays inside is fine.
    assert_eq!(send(proxy.addr(), "GET", "/inside-link.js", &[]).await.2, APP_JS.as_bytes());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_give_304_and_412() {
    let (proxy, _) = start().await;
    let addr = proxy.addr();
    let (_, h, _) = send(addr, "GET", "/app.js", &[]).await;
    let etag = h["etag"].to_str().unwrap().to_owned();
    let modified = h["last-modified"].to_str().unwrap().to_owned();

    let (status, h, body) = send(addr, "GET", "/app.js", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(h["etag"], etag.as_str());
    assert!(body.is_empty());
    let weak = format!("\"other\", W/{etag}");
    assert_eq!(send(addr, "GET", "/app.js", &[("if-none-match", &weak)]).await.0, StatusCode::NOT_MODIFIED);
    assert_eq!(send(addr, "GET", "/app.js", &[("if-none-match", "\"other\"")]).await.0, StatusCode::OK);
    assert_eq!(send(addr, "GET", "/app.js", &[("if-modified-since", &modified)]).await.0, StatusCode::NOT_MODIFIED);
    let old = "Sat, 01 Jan 2000 00:00:00 GMT";
    assert_eq!(send(addr, "GET", "/app.js", &[("if-modified-since", old)]).await.0, StatusCode::OK);
    // If-None-Match wins over If-Modified-Since.
    let both = [("if-none-match", "\"other\""), ("if-modified-since", modified.as_str())];
    assert_eq!(send(addr, "GET", "/app.js", &both).await.0, StatusCode::OK);

    assert_eq!(send(addr, "GET", "/app.js", &[("if-match", "\"other\"")]).await.0, StatusCode::PRECONDITION_FAILED);
    assert_eq!(send(addr, "GET", "/app.js", &[("if-match", &etag)]).await.0, StatusCode::OK);
    assert_eq!(send(addr, "GET", "/app.js", &[("if-unmodified-since", old)]).await.0, StatusCode::PRECONDITION_FAILED);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_served_as_it_is_now() {
    // Small files are kept in memory once read: a change must still show at once.
    let (proxy, root) = start().await;
    let addr = proxy.addr();
    assert_eq!(send(addr, "GET", "/hello%20world.txt", &[]).await.2, b"spaced out");
    assert_eq!(send(addr, "GET", "/hello%20world.txt", &[]).await.2, b"spaced out");
    std::fs::write(root.join("hello world.txt"), "rewritten, longer").unwrap();
    let (_, h, body) = send(addr, "GET", "/hello%20world.txt", &[]).await;
    assert_eq!(body, b"rewritten, longer");
    assert_eq!(h["content-length"], "17");
    // Same size, new modification time (set explicitly: file system clocks are coarse).
    std::fs::write(root.join("hello world.txt"), "rewritten, LONGER").unwrap();
    std::fs::File::options()
        .write(true)
        .open(root.join("hello world.txt"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    assert_eq!(send(addr, "GET", "/hello%20world.txt", &[]).await.2, b"rewritten, LONGER");
    let (status, _, body) = send(addr, "GET", "/hello%20world.txt", &[("range", "bytes=11-16")]).await;
    assert_eq!((status, body.as_slice()), (StatusCode::PARTIAL_CONTENT, &b"LONGER"[..]));
    proxy.shutdown().await;
}

/// Splits a `multipart/byteranges` body into (content-range, bytes) parts.
fn multipart(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type.split("boundary=").nth(1).unwrap();
    let delimiter = format!("\r\n--{boundary}");
    let text = body.to_vec();
    let mut parts = Vec::new();
    let mut rest = &text[..];
    loop {
        let at = find(rest, delimiter.as_bytes()).unwrap();
        rest = &rest[at + delimiter.len()..];
        if rest.starts_with(b"--") {
            assert_eq!(&rest[..4], b"--\r\n");
            return parts;
        }
        let head_end = find(rest, b"\r\n\r\n").unwrap();
        let head = String::from_utf8(rest[..head_end].to_vec()).unwrap();
        let range = head.lines().find_map(|l| l.strip_prefix("content-range: ")).unwrap().to_owned();
        rest = &rest[head_end + 4..];
        let end = find(rest, delimiter.as_bytes()).unwrap();
        parts.push((range, rest[..end].to_vec()));
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_single_multiple_coalesced_and_unsatisfiable() {
    let (proxy, root) = start().await;
    let addr = proxy.addr();
    let big = std::fs::read(root.join("big.bin")).unwrap();
    let len = big.len();

    let (status, h, body) = send(addr, "GET", "/big.bin", &[("range", "bytes=0-9")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(h["content-range"], format!("bytes 0-9/{len}"));
    assert_eq!(h["content-length"], "10");
    assert_eq!(body, &big[..10]);
    let (_, h, body) = send(addr, "GET", "/big.bin", &[("range", "bytes=-100")]).await;
    assert_eq!(h["content-range"], format!("bytes {}-{}/{len}", len - 100, len - 1));
    assert_eq!(body, &big[len - 100..]);
    // Large enough to be streamed from the blocking pool.
    let (_, _, body) = send(addr, "GET", "/big.bin", &[("range", "bytes=1000-150999")]).await;
    assert_eq!(body, &big[1000..151_000]);

    let (status, h, body) = send(addr, "GET", "/big.bin", &[("range", &format!("bytes={len}-"))]).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h["content-range"], format!("bytes */{len}"));
    assert!(body.is_empty());

    // Overlapping ranges become one.
    let (status, h, body) = send(addr, "GET", "/big.bin", &[("range", "bytes=0-5,3-9")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(h["content-range"], format!("bytes 0-9/{len}"));
    assert_eq!(body, &big[..10]);

    // Several ranges: multipart/byteranges, in order, with exact lengths.
    let (status, h, body) = send(addr, "GET", "/big.bin", &[("range", "bytes=100-199, 0-9, -5")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    let content_type = h["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("multipart/byteranges; boundary="), "{content_type}");
    assert_eq!(h["content-length"], body.len().to_string());
    let parts = multipart(&content_type, &body);
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], (format!("bytes 0-9/{len}"), big[..10].to_vec()));
    assert_eq!(parts[1], (format!("bytes 100-199/{len}"), big[100..200].to_vec()));
    assert_eq!(parts[2], (format!("bytes {}-{}/{len}", len - 5, len - 1), big[len - 5..].to_vec()));

    // If-Range: a stale validator gets the whole file.
    let etag = send(addr, "HEAD", "/big.bin", &[]).await.1["etag"].to_str().unwrap().to_owned();
    let stale = [("range", "bytes=0-9"), ("if-range", "\"stale\"")];
    let (status, _, body) = send(addr, "GET", "/big.bin", &stale).await;
    assert_eq!((status, body.len()), (StatusCode::OK, len));
    let fresh = [("range", "bytes=0-9"), ("if-range", etag.as_str())];
    assert_eq!(send(addr, "GET", "/big.bin", &fresh).await.0, StatusCode::PARTIAL_CONTENT);
    // An invalid Range header is ignored.
    assert_eq!(send(addr, "GET", "/big.bin", &[("range", "bytes=9-0")]).await.0, StatusCode::OK);
    // The whole large file, streamed.
    assert_eq!(send(addr, "GET", "/big.bin", &[]).await.2, big);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precompressed_siblings_follow_accept_encoding() {
    let (proxy, _) = start().await;
    let addr = proxy.addr();
    let (_, h, body) = send(addr, "GET", "/app.js", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(body, b"BROTLI BYTES");
    assert_eq!(h["content-encoding"], "br");
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8", "the type of the original");
    assert_eq!(h["vary"], "accept-encoding");
    let br_etag = h["etag"].clone();
    let (_, h, body) = send(addr, "GET", "/app.js", &[("accept-encoding", "br;q=0.5, gzip")]).await;
    assert_eq!(body, b"GZIP BYTES");
    assert_eq!(h["content-encoding"], "gzip");
    assert_ne!(h["etag"], br_etag, "each representation has its own validator");
    let (_, h, body) = send(addr, "GET", "/app.js", &[("accept-encoding", "zstd")]).await;
    assert_eq!(body, APP_JS.as_bytes(), "no .zst sibling: identity");
    assert!(h.get("content-encoding").is_none());
    assert_eq!(h["vary"], "accept-encoding");
    let (_, h, body) = send(addr, "GET", "/app.js", &[]).await;
    assert_eq!(body, APP_JS.as_bytes());
    assert!(h.get("content-encoding").is_none());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_files_falls_back_for_single_page_apps() {
    let (proxy, _) = start().await;
    let addr = proxy.addr();
    assert_eq!(send(addr, "GET", "/spa/app.js", &[]).await.2, APP_JS.as_bytes());
    assert_eq!(send(addr, "GET", "/spa/docs/", &[]).await.2, b"<h1>docs</h1>\n");
    let (status, _, body) = send(addr, "GET", "/spa/some/client/route", &[]).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"<h1>home</h1>\n"[..]));
    assert_eq!(send(addr, "GET", "/strict/nothing", &[]).await.0, StatusCode::NOT_FOUND);
    assert_eq!(send(addr, "GET", "/strict/app.js", &[]).await.0, StatusCode::OK);
    // try-files does not open a way out either.
    for path in ["/spa/%2e%2e/outside/secret.txt", "/spa/..%2f..%2foutside/secret.txt"] {
        let answer = raw(addr, format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes()).await;
        assert!(!answer.starts_with("HTTP/1.1 200") && !answer.contains("top secret"), "{path}: {answer}");
    }
    proxy.shutdown().await;
}

#[test]
fn files_mistakes_are_config_errors() {
    let cases = [
        ("route \"/\" { files \"/nonexistent/dir\" }", "cannot open the directory"),
        ("route \"/\" { files \"/etc/hostname\" }", "is not a directory"),
        ("route \"/\" { files \"/tmp\" { try-files \"$uri\" } }", "needs 2 arguments"),
        ("route \"/\" { files \"/tmp\" { try-files \"=404\" \"$uri\" } }", "can only be the last entry"),
        ("route \"/\" { files \"/tmp\" { try-files \"$uri\" \"index.html\" } }", "invalid try-files entry"),
        ("route \"/\" { files \"/tmp\" { index \"../x.html\" } }", "invalid index file name"),
        ("route \"/\" { files \"/tmp\" { listng #true } }", "listing"),
    ];
    for (route, expected) in cases {
        let text = format!("listener \"127.0.0.1:0\"\nsite \"*\" {{\n    {route}\n}}\n");
        let err = sluice_config::parse("files.kdl", &text).unwrap_err().render(false);
        assert!(err.contains(expected) && err.contains("files.kdl:3:"), "{route}: {err}");
    }
}
