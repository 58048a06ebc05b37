//! Access control and traffic limits over real sockets: `allow`/`deny` lists (inline and
//! from a file of thousands of blocks), real client addresses behind trusted proxies,
//! Basic auth with bcrypt and argon2 files, JWT (RS256 from a JWKS file, ES256 from a
//! PEM key, HS256, a JWKS URL that rotates), forward-auth, requests in flight per route,
//! and connection limits per client address and per listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pki;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::*;
use http::{Request, Response, StatusCode};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn kdl(origin: SocketAddr, listener: &str, site: &str, extra: &str) -> String {
    format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0" {{
{listener}
}}
upstream "origin" {{ server "{origin}" }}
{extra}
site "*" {{
{site}
    route "/" {{ proxy "origin" }}
}}
"#
    )
}

/// GET `path` with `headers`; status, response headers and body.
async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, http::HeaderMap, String) {
    let (s, h, b) = send(addr, "GET", path, headers).await;
    (s, h, String::from_utf8_lossy(&b).into_owned())
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_and_deny_rules_apply_in_order_and_from_a_file() {
    let origin = Origin::named("ok").await;
    let dir = pki::temp_dir("acl");
    // 5,000 blocks of someone else's, then loopback: the lookup is a trie walk either way.
    let mut list = String::from("# blocklist\n");
    for i in 0..5000u32 {
        list.push_str(&format!("10.{}.{}.0/24 # entry {i}\n", (i >> 8) & 255, i & 255));
    }
    list.push_str("127.0.0.0/8\n");
    std::fs::write(dir.join("blocked.txt"), list).unwrap();
    let config = format!(
        r#"
server {{ access-log "off" }}
listener "127.0.0.1:0"
upstream "origin" {{ server "{}" }}
site "*" {{
    allow "127.0.0.1" "::1"
    deny "all"
    route "/blocked" {{
        proxy "origin"
        deny file="{}"
    }}
    route "/private" {{
        proxy "origin"
        allow "192.0.2.0/24"
        deny "all"
    }}
    route "/" {{ proxy "origin" }}
}}
"#,
        origin.addr,
        dir.join("blocked.txt").display()
    );
    let proxy = Proxy::start(&config).await;
    assert_eq!(get_with(proxy.addr(), "/", &[]).await.0, StatusCode::OK, "allowed by the site's first rule");
    let (status, _, body) = get_with(proxy.addr(), "/blocked/x", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        get_with(proxy.addr(), "/private", &[]).await.0,
        StatusCode::FORBIDDEN,
        "the route's rules replace the site's"
    );
    assert_eq!(origin.requests(), 1);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_client_behind_a_trusted_proxy_is_used_for_rules_limits_and_logs() {
    let origin = Origin::named("ok").await;
    let site = r#"
    allow "198.51.100.0/24"
    deny "all"
    rate-limit { rate "1/m"; }
"#;
    let listener = r#"real-ip { trusted "127.0.0.1" "10.0.0.0/8"; }"#;
    let proxy = Proxy::start(&kdl(origin.addr, listener, site, "")).await;
    let addr = proxy.addr();
    // Read from the right: 10.1.1.1 is a trusted hop, 198.51.100.7 the client, 6.6.6.6 a lie.
    let (status, _, _) = get_with(addr, "/", &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(origin.last_head().headers["x-forwarded-for"], "6.6.6.6, 198.51.100.7, 10.1.1.1, 127.0.0.1");
    // The rate limit is per real client: another client has its own.
    assert_eq!(get_with(addr, "/", &[("x-forwarded-for", "198.51.100.7")]).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get_with(addr, "/", &[("x-forwarded-for", "198.51.100.8")]).await.0, StatusCode::OK);
    // Without the header the client is the peer, 127.0.0.1: not allowed.
    assert_eq!(get_with(addr, "/", &[]).await.0, StatusCode::FORBIDDEN);
    proxy.shutdown().await;

    // A peer that is not trusted: its forwarding headers are not believed, and not passed on.
    let proxy = Proxy::start(&kdl(origin.addr, r#"real-ip { trusted "10.0.0.0/8"; }"#, "", "")).await;
    let (status, _, _) =
        get_with(proxy.addr(), "/", &[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]).await;
    assert_eq!(status, StatusCode::OK);
    let head = origin.last_head();
    assert_eq!(head.headers["x-forwarded-for"], "127.0.0.1");
    assert!(!head.headers.contains_key("forwarded"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_bcrypt_and_argon2_files() {
    use argon2::PasswordHasher as _;
    let origin = Origin::named("ok").await;
    let dir = pki::temp_dir("basic");
    let file = dir.join("htpasswd");
    let bcrypt_hash = bcrypt::hash("alice-pw", 4).unwrap();
    let argon_hash =
        argon2::Argon2::default().hash_password_with_salt(b"bob-pw", b"sixteen byte salt").unwrap().to_string();
    std::fs::write(&file, format!("# users\nalice:{bcrypt_hash}\nbob:{argon_hash}\n")).unwrap();
    let site = format!("basic-auth \"{}\" realm=\"Staff only\"", file.display());
    let proxy = Proxy::start(&kdl(origin.addr, "", &site, "")).await;
    let addr = proxy.addr();

    let (status, h, _) = get_with(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(h["www-authenticate"], "Basic realm=\"Staff only\", charset=\"UTF-8\"");
    assert_eq!(get_with(addr, "/", &[("authorization", &basic("alice", "alice-pw"))]).await.0, StatusCode::OK);
    assert_eq!(
        get_with(addr, "/", &[("authorization", &basic("alice", "alice-pw"))]).await.0,
        StatusCode::OK,
        "remembered"
    );
    assert_eq!(get_with(addr, "/", &[("authorization", &basic("bob", "bob-pw"))]).await.0, StatusCode::OK, "argon2");
    assert_eq!(get_with(addr, "/", &[("authorization", &basic("alice", "wrong"))]).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get_with(addr, "/", &[("authorization", &basic("mallory", "x"))]).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get_with(addr, "/", &[("authorization", "Basic !!!")]).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(origin.requests(), 3);

    // A user added to the file works without a reload (the file is watched).
    let carol = bcrypt::hash("carol-pw", 4).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // a newer modification time
    std::fs::write(&file, format!("alice:{bcrypt_hash}\ncarol:{carol}\n")).unwrap();
    let mut ok = false;
    for _ in 0..50 {
        if get_with(addr, "/", &[("authorization", &basic("carol", "carol-pw"))]).await.0 == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "carol was added");
    proxy.shutdown().await;

    // Weak hashes are refused when the configuration is checked, with the file's line.
    std::fs::write(&file, "alice:$apr1$abc$def\n").unwrap();
    let err = sluice_config::parse("t.kdl", &kdl(origin.addr, "", &site, "")).unwrap_err().render(false);
    assert!(err.contains("htpasswd:1") && err.contains("$apr1$"), "{err}");
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn rsa_token(claims: serde_json::Value) -> String {
    let key = EncodingKey::from_rsa_pem(&std::fs::read(fixture("test-only-rsa-2048.key")).unwrap()).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    encode(&header, &claims, &key).unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_from_a_jwks_file_checks_signature_time_issuer_and_audience_and_forwards_claims() {
    let origin = Origin::named("ok").await;
    let site = format!(
        r#"
    jwt {{
        jwks "{}"
        issuer "https://id.test/"
        audience "api"
        leeway "5s"
        claim-header "sub" "x-user"
        claim-header "roles" "x-roles"
    }}"#,
        fixture("test-only-rsa-2048.jwks.json").display()
    );
    let proxy = Proxy::start(&kdl(origin.addr, "", &site, "")).await;
    let addr = proxy.addr();
    let good = serde_json::json!({"sub": "alice", "roles": ["admin", "dev"], "iss": "https://id.test/", "aud": "api", "exp": now() + 600});

    let token = rsa_token(good.clone());
    let (status, _, _) = get_with(addr, "/", &[("authorization", &bearer(&token)), ("x-user", "mallory")]).await;
    assert_eq!(status, StatusCode::OK);
    let head = origin.last_head();
    assert_eq!(head.headers["x-user"], "alice", "the claim replaced the client's header");
    assert_eq!(head.headers["x-roles"], "admin, dev");
    // Again: answered from the verified-token memory, same result.
    assert_eq!(get_with(addr, "/", &[("authorization", &bearer(&token))]).await.0, StatusCode::OK);

    let (status, h, _) = get_with(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(h["www-authenticate"], "Bearer", "no token: no error code (RFC 6750)");

    let mut expired = good.clone();
    expired["exp"] = (now() - 60).into();
    let mut early = good.clone();
    early["nbf"] = (now() + 600).into();
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = "https://evil.test/".into();
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = "other".into();
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    for (claims, why) in [
        (expired, "expired"),
        (early, "not valid yet"),
        (wrong_iss, "issuer"),
        (wrong_aud, "audience"),
        (no_exp, "no expiry"),
    ] {
        let (status, h, _) = get_with(addr, "/", &[("authorization", &bearer(&rsa_token(claims)))]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}");
        let challenge = h["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("invalid_token") && challenge.contains(why), "{challenge}");
    }
    // Tampered payload, `alg: none`, and HS256 "signed" with the public key (alg confusion).
    let parts: Vec<&str> = token.split('.').collect();
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(
            &serde_json::json!({"sub": "root", "iss": "https://id.test/", "aud": "api", "exp": now() + 600}),
        )
        .unwrap(),
    );
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let none = format!("{none_header}.{forged_payload}.");
    let public_pem = std::fs::read(fixture("test-only-rsa-2048.pub.pem")).unwrap();
    let confused = encode(&Header::new(Algorithm::HS256), &good, &EncodingKey::from_secret(&public_pem)).unwrap();
    for bad in [tampered, none, confused, "garbage".to_owned()] {
        assert_eq!(get_with(addr, "/", &[("authorization", &bearer(&bad))]).await.0, StatusCode::UNAUTHORIZED, "{bad}");
    }
    assert_eq!(origin.requests(), 2);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_with_an_ec_pem_key_an_hmac_secret_and_a_cookie() {
    let origin = Origin::named("ok").await;
    let dir = pki::temp_dir("jwt-ec");
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(dir.join("ec.pem"), pair.public_key_pem()).unwrap();
    let secret = "an hmac secret of more than thirty-two bytes";
    let site = format!(
        r#"
    route "/ec" {{
        proxy "origin"
        jwt {{ public-key "{}"; claim-header "sub" "x-user"; }}
    }}
    route "/hs" {{
        proxy "origin"
        jwt {{ secret "{secret}"; token "cookie:session"; }}
    }}"#,
        dir.join("ec.pem").display()
    );
    let proxy = Proxy::start(&kdl(origin.addr, "", &site, "")).await;
    let claims = serde_json::json!({"sub": "erin", "exp": now() + 600});
    let ec = encode(&Header::new(Algorithm::ES256), &claims, &EncodingKey::from_ec_der(&pair.serialize_der())).unwrap();
    assert_eq!(get_with(proxy.addr(), "/ec", &[("authorization", &bearer(&ec))]).await.0, StatusCode::OK);
    assert_eq!(origin.last_head().headers["x-user"], "erin");
    let hs = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap();
    let cookie = format!("theme=dark; session={hs}");
    assert_eq!(get_with(proxy.addr(), "/hs", &[("cookie", &cookie)]).await.0, StatusCode::OK);
    assert_eq!(
        get_with(proxy.addr(), "/hs", &[("authorization", &bearer(&hs))]).await.0,
        StatusCode::UNAUTHORIZED,
        "not in the cookie"
    );
    // An ES256 token on the HMAC route: the algorithm is not one its key can verify.
    assert_eq!(
        get_with(proxy.addr(), "/hs", &[("cookie", &format!("session={ec}"))]).await.0,
        StatusCode::UNAUTHORIZED
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_is_fetched_and_refreshed_when_the_keys_rotate() {
    let origin = Origin::named("ok").await;
    let rsa_jwks = std::fs::read_to_string(fixture("test-only-rsa-2048.jwks.json")).unwrap();
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let ec_jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec-1", "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}]}).to_string();
    let served = Arc::new(Mutex::new(rsa_jwks));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (s2, f2) = (served.clone(), fetches.clone());
    let idp = Origin::start(
        false,
        Arc::new(move |_req| {
            f2.fetch_add(1, Ordering::SeqCst);
            let body = s2.lock().unwrap().clone();
            Box::pin(async move { Response::new(full(body)) })
        }),
    )
    .await;
    let site = format!("jwt {{ jwks-url \"http://{}/.well-known/jwks.json\" refresh=\"300ms\"; }}", idp.addr);
    let proxy = Proxy::start(&kdl(origin.addr, "", &site, "")).await;
    assert!(fetches.load(Ordering::SeqCst) >= 1, "fetched at startup");
    let claims = serde_json::json!({"sub": "x", "exp": now() + 600});
    let rsa = rsa_token(claims.clone());
    let mut ec_header = Header::new(Algorithm::ES256);
    ec_header.kid = Some("ec-1".into());
    let ec = encode(&ec_header, &claims, &EncodingKey::from_ec_der(&pair.serialize_der())).unwrap();
    assert_eq!(get_with(proxy.addr(), "/", &[("authorization", &bearer(&rsa))]).await.0, StatusCode::OK);
    assert_eq!(get_with(proxy.addr(), "/", &[("authorization", &bearer(&ec))]).await.0, StatusCode::UNAUTHORIZED);
    // The identity provider rotates to the EC key.
    *served.lock().unwrap() = ec_jwks;
    let mut rotated = false;
    for _ in 0..100 {
        if get_with(proxy.addr(), "/", &[("authorization", &bearer(&ec))]).await.0 == StatusCode::OK {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated, "the new key was picked up");
    assert_eq!(
        get_with(proxy.addr(), "/", &[("authorization", &bearer(&rsa))]).await.0,
        StatusCode::UNAUTHORIZED,
        "the old key is gone"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_passes_refuses_and_copies_headers() {
    let origin = Origin::named("ok").await;
    let seen = Arc::new(Mutex::new(Vec::<http::request::Parts>::new()));
    let seen2 = seen.clone();
    let auth = Origin::start(
        false,
        Arc::new(move |req: Request<hyper::body::Incoming>| {
            let (parts, _) = req.into_parts();
            let token = parts.headers.get("x-token").map(|v| v.to_str().unwrap().to_owned());
            seen2.lock().unwrap().push(parts);
            Box::pin(async move {
                match token.as_deref() {
                    Some("good") => {
                        Response::builder().header("x-user", "alice").header("x-other", "no").body(full("")).unwrap()
                    }
                    Some("login") => {
                        Response::builder().status(302).header("location", "/login").body(full("")).unwrap()
                    }
                    _ => Response::builder()
                        .status(401)
                        .header("www-authenticate", "Bearer")
                        .header("content-type", "text/plain")
                        .body(full("who are you?"))
                        .unwrap(),
                }
            })
        }),
    )
    .await;
    let extra = format!("upstream \"auth\" {{ server \"{}\" }}", auth.addr);
    let site = "forward-auth \"auth\" path=\"/verify\" { response-headers \"x-user\"; }";
    let proxy = Proxy::start(&kdl(origin.addr, "", site, &extra)).await;
    let addr = proxy.addr();

    let (status, _, _) = get_with(addr, "/app?q=1", &[("x-token", "good"), ("x-user", "mallory")]).await;
    assert_eq!(status, StatusCode::OK);
    let head = origin.last_head();
    assert_eq!(head.headers.get_all("x-user").iter().collect::<Vec<_>>(), ["alice"]);
    assert!(!head.headers.contains_key("x-other"), "only the configured headers are copied");
    {
        let asked = seen.lock().unwrap();
        let asked = asked.last().unwrap();
        assert_eq!(asked.uri.path(), "/verify");
        assert_eq!(asked.headers["x-forwarded-method"], "GET");
        assert_eq!(asked.headers["x-forwarded-uri"], "/app?q=1");
        assert_eq!(asked.headers["x-token"], "good");
    }
    let (status, h, body) = get_with(addr, "/", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::UNAUTHORIZED, "who are you?"));
    assert_eq!(h["www-authenticate"], "Bearer");
    let (status, h, _) = get_with(addr, "/", &[("x-token", "login")]).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(h["location"], "/login");
    assert_eq!(origin.requests(), 1);
    proxy.shutdown().await;

    // The authentication service is down: fail closed.
    let dead = free_port();
    let extra = format!("upstream \"auth\" {{ server \"127.0.0.1:{dead}\" }}");
    let proxy = Proxy::start(&kdl(origin.addr, "", site, &extra)).await;
    assert_eq!(get_with(proxy.addr(), "/", &[("x-token", "good")]).await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(origin.requests(), 1);
    proxy.shutdown().await;
}

/// An origin whose answers wait until the returned gate has a permit (`add_permits`).
async fn gated_origin() -> (Origin, Arc<tokio::sync::Semaphore>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g2 = gate.clone();
    let origin = Origin::start(
        false,
        Arc::new(move |_req| {
            let gate = g2.clone();
            Box::pin(async move {
                drop(gate.acquire().await.unwrap());
                Response::new(full("done"))
            })
        }),
    )
    .await;
    (origin, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_refuses_with_503_beyond_the_limit() {
    let (origin, gate) = gated_origin().await;
    let proxy = Proxy::start(&kdl(origin.addr, "", "max-in-flight 2", "")).await;
    let addr = proxy.addr();
    let slow: Vec<_> = (0..2).map(|_| tokio::spawn(async move { get_with(addr, "/", &[]).await.0 })).collect();
    until("two requests are at the origin", || origin.requests() == 2).await;
    let (status, h, _) = get_with(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h["retry-after"], "1");
    gate.add_permits(10);
    for s in slow {
        assert_eq!(s.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(get_with(addr, "/", &[]).await.0, StatusCode::OK, "slots were given back");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_has_its_own_in_flight_cap_inside_the_sites() {
    let (origin, gate) = gated_origin().await;
    let site = r#"
    max-in-flight 10
    route "/reports" {
        proxy "origin"
        max-in-flight 1
    }
"#;
    let proxy = Proxy::start(&kdl(origin.addr, "", site, "")).await;
    let addr = proxy.addr();
    let slow = tokio::spawn(async move { get_with(addr, "/reports", &[]).await.0 });
    until("one report is at the origin", || origin.requests() == 1).await;
    // (Bounded: with the cap broken, the request would wait at the origin for the gate.)
    let second = tokio::time::timeout(Duration::from_secs(10), get_with(addr, "/reports", &[])).await;
    assert_eq!(second.expect("refused at once, not sent to the origin").0, StatusCode::SERVICE_UNAVAILABLE);
    // The rest of the site has its own slots.
    let other = tokio::spawn(async move { get_with(addr, "/", &[]).await.0 });
    until("the other request is at the origin", || origin.requests() == 2).await;
    gate.add_permits(10);
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    assert_eq!(other.await.unwrap(), StatusCode::OK);
    assert_eq!(get_with(addr, "/reports", &[]).await.0, StatusCode::OK, "the slot was given back");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarded_header_or_a_one_address_header_names_the_client() {
    let origin = Origin::named("ok").await;
    let site = r#"
    allow "198.51.100.0/24" "2001:db8::/32"
    deny "all"
"#;
    let listener = r#"real-ip { trusted "127.0.0.1" "10.0.0.0/8"; header "forwarded"; }"#;
    let proxy = Proxy::start(&kdl(origin.addr, listener, site, "")).await;
    let addr = proxy.addr();
    let via = |v: &'static str| [("forwarded", v)];
    // RFC 7239, read from the right: the trusted hop 10.1.1.1 is skipped, 6.6.6.6 is a lie.
    let chain = "for=6.6.6.6, for=198.51.100.7;proto=https, for=10.1.1.1";
    assert_eq!(get_with(addr, "/", &via(chain)).await.0, StatusCode::OK);
    assert_eq!(get_with(addr, "/", &via("for=\"[2001:db8::1]:4711\"")).await.0, StatusCode::OK, "IPv6 with a port");
    assert_eq!(get_with(addr, "/", &via("for=192.0.2.1")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(get_with(addr, "/", &via("for=198.51.100.7, for=6.6.6.6")).await.0, StatusCode::FORBIDDEN);
    // `X-Forwarded-For` is not what this listener reads.
    assert_eq!(get_with(addr, "/", &[("x-forwarded-for", "198.51.100.7")]).await.0, StatusCode::FORBIDDEN);
    proxy.shutdown().await;

    let listener = r#"real-ip { trusted "127.0.0.1"; header "x-real-ip"; }"#;
    let proxy = Proxy::start(&kdl(origin.addr, listener, site, "")).await;
    assert_eq!(get_with(proxy.addr(), "/", &[("x-real-ip", "198.51.100.9")]).await.0, StatusCode::OK);
    assert_eq!(get_with(proxy.addr(), "/", &[("x-real-ip", "192.0.2.9")]).await.0, StatusCode::FORBIDDEN);
    proxy.shutdown().await;
}

/// Whether the server closed a fresh connection at once (a refusal) rather than serving it.
async fn refused(addr: SocketAddr) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    !out.starts_with(b"HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_client_address_are_limited() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&kdl(origin.addr, "max-connections-per-ip 2", "", "")).await;
    let addr = proxy.addr();
    let a = TcpStream::connect(addr).await.unwrap();
    let b = TcpStream::connect(addr).await.unwrap();
    let stats = proxy.server.as_ref().unwrap().control().current().listeners[0].stats.clone();
    until("both are open", || stats.open.load(Ordering::Relaxed) == 2).await;
    assert!(refused(addr).await, "a third connection from the same address");
    assert_eq!(stats.by_address.refused_open.load(Ordering::Relaxed), 1);
    drop(a);
    until("a slot is free", || stats.by_address.open("127.0.0.1".parse().unwrap()) == 1).await;
    assert!(!refused(addr).await, "served once a connection closed");
    drop(b);
    proxy.shutdown().await;

    let proxy = Proxy::start(&kdl(origin.addr, "connection-rate-per-ip \"1/m\" burst=2", "", "")).await;
    for _ in 0..3 {
        assert!(!refused(proxy.addr()).await);
    }
    assert!(refused(proxy.addr()).await, "the fourth new connection within the minute");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_connection_rate_paces_accepting_instead_of_refusing() {
    let origin = Origin::named("ok").await;
    let proxy = Proxy::start(&kdl(origin.addr, "connection-rate \"10/s\" burst=1", "", "")).await;
    let started = std::time::Instant::now();
    for _ in 0..6 {
        assert!(!refused(proxy.addr()).await, "paced, never refused");
    }
    // 2 at once (the burst), then one per 100 ms.
    assert!(started.elapsed() >= Duration::from_millis(350), "{:?}", started.elapsed());
    proxy.shutdown().await;
}
