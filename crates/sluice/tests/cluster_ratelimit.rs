//! Cluster-wide rate limits on a real Redis (`redis-server` on a free loopback port):
//! two Sluice processes share one limit exactly, concurrent load never exceeds it, a flood
//! from a limited client does not reach Redis, and when Redis goes away each instance does
//! what its `on-redis-error` says (counted in its metrics), then recovers on its own; a
//! Redis that hangs with its connections open is given up and reconnected the same way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;

fn config(port: u16, admin: u16, redis: &str, limit: &str) -> String {
    format!(
        r#"
server {{
    access-log "off"
    admin "127.0.0.1:{admin}"
    redis "{redis}" timeout="200ms" prefix="test:"
}}
listener "127.0.0.1:{port}"
site "*" {{
    route "/" {{
        respond 200 "ok"
        rate-limit {{
{limit}
        }}
    }}
}}
"#
    )
}

struct Instance {
    addr: SocketAddr,
    admin: SocketAddr,
    _child: KillOnDrop,
    _dir: std::path::PathBuf,
}

async fn instance(redis: &str, limit: &str) -> Instance {
    let (port, admin) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("sluice-cluster-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sluice.kdl");
    std::fs::write(&path, config(port, admin, redis, limit)).unwrap();
    let p = path.to_str().unwrap().to_owned();
    let (child, _log) = tokio::task::spawn_blocking(move || spawn_until_started(&["run", "-c", &p])).await.unwrap();
    Instance {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        admin: SocketAddr::from(([127, 0, 0, 1], admin)),
        _child: child,
        _dir: dir,
    }
}

async fn status(addr: SocketAddr, client: &str) -> StatusCode {
    send(addr, "GET", "/", &[("x-client", client)]).await.0
}

const SHARED: &str = r#"rate "1/m"
burst 5
key "header:x-client"
name "shared"
store "redis""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_limit_exactly() {
    let redis = RedisServer::start();
    let a = instance(&redis.address(), SHARED).await;
    let b = instance(&redis.address(), SHARED).await;
    let mut allowed = [0usize; 2];
    for i in 0..20 {
        let which = i % 2;
        let target = if which == 0 { a.addr } else { b.addr };
        if status(target, "alice").await == StatusCode::OK {
            allowed[which] += 1;
        }
    }
    assert_eq!(allowed[0] + allowed[1], 6, "burst 5 + 1 across both instances: {allowed:?}");
    assert!(allowed[0] > 0 && allowed[1] > 0, "{allowed:?}");
    // Another client has its own limit, in both instances.
    assert_eq!(status(a.addr, "bob").await, StatusCode::OK);
    assert_eq!(status(b.addr, "bob").await, StatusCode::OK);
    // The refused answers carry the limit's fields.
    let (s, h, _) = send(b.addr, "GET", "/", &[("x-client", "alice")]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(h["ratelimit-limit"], "6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_load_on_both_instances_never_exceeds_the_limit() {
    let redis = RedisServer::start();
    let limit = r#"rate "1/m"
burst 99
key "header:x-client"
name "busy"
store "redis""#;
    let a = instance(&redis.address(), limit).await;
    let b = instance(&redis.address(), limit).await;
    let ok = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let target = if i % 2 == 0 { a.addr } else { b.addr };
        let ok = ok.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = h1_client(target).await;
            for _ in 0..25 {
                let req = Request::get("/").header("host", "x").header("x-client", "hot").body(full("")).unwrap();
                let resp = c.send_request(req).await.unwrap();
                if resp.status() == StatusCode::OK {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                resp.into_body().collect().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ok = ok.load(Ordering::Relaxed);
    let fallbacks = metric(a.admin, "sluice_ratelimit_redis_fallbacks_total{limit=\"busy\"}").await
        + metric(b.admin, "sluice_ratelimit_redis_fallbacks_total{limit=\"busy\"}").await;
    eprintln!("fallbacks {fallbacks}");
    // Never more than Redis granted; a few leased slots may go unused at the very end.
    assert!(ok <= 100, "{ok} allowed, the limit is 100");
    assert!(ok >= 80, "{ok} allowed: too many slots were wasted");
    // Leases batch the Redis work: far fewer lease calls than requests.
    let leases = metric(a.admin, "sluice_ratelimit_redis_leases_total{limit=\"busy\"}").await
        + metric(b.admin, "sluice_ratelimit_redis_leases_total{limit=\"busy\"}").await;
    eprintln!("allowed {ok} of 400, {leases} lease calls");
    assert!(leases < 400, "{leases} lease calls for 400 requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_client_is_refused_locally_without_asking_redis() {
    let redis = RedisServer::start();
    let a = instance(&redis.address(), SHARED).await;
    for _ in 0..6 {
        assert_eq!(status(a.addr, "flooder").await, StatusCode::OK);
    }
    assert_eq!(status(a.addr, "flooder").await, StatusCode::TOO_MANY_REQUESTS);
    let before = metric(a.admin, "sluice_ratelimit_redis_leases_total{limit=\"shared\"}").await;
    for _ in 0..50 {
        assert_eq!(status(a.addr, "flooder").await, StatusCode::TOO_MANY_REQUESTS);
    }
    let after = metric(a.admin, "sluice_ratelimit_redis_leases_total{limit=\"shared\"}").await;
    assert_eq!(before, after, "the refusal was cached until the time Redis named");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_instance_fails_open_or_closed_as_configured_then_recovers() {
    let port = free_port();
    let redis = RedisServer::start_on(port);
    let address = redis.address();
    let open = instance(&address, &format!("{SHARED}\non-redis-error \"allow\"")).await;
    let closed = instance(&address, &format!("{SHARED}\non-redis-error \"deny\"")).await;
    let local = instance(&address, &format!("{SHARED}\non-redis-error \"local\"")).await;
    assert_eq!(status(open.addr, "c1").await, StatusCode::OK);
    assert_eq!(metric(open.admin, "sluice_redis_up").await, 1);

    redis.stop();
    until_async(|| async { metric(open.admin, "sluice_redis_up").await == 0 }).await;
    for _ in 0..10 {
        assert_eq!(status(open.addr, "new-client").await, StatusCode::OK, "fail open");
        assert_eq!(status(closed.addr, "new-client").await, StatusCode::TOO_MANY_REQUESTS, "fail closed");
    }
    // Local fallback: the limit still holds, per instance.
    let mut ok = 0;
    for _ in 0..10 {
        if status(local.addr, "new-client").await == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 6, "burst 5 + 1, counted in this instance alone");
    assert!(metric(open.admin, "sluice_ratelimit_redis_fallbacks_total{limit=\"shared\"}").await >= 10);
    assert!(metric(closed.admin, "sluice_ratelimit_redis_fallbacks_total{limit=\"shared\"}").await >= 10);

    // Redis comes back on the same address: the instances reconnect by themselves.
    let _redis = RedisServer::start_on(port);
    until_async(|| async { metric(closed.admin, "sluice_redis_up").await == 1 }).await;
    assert_eq!(status(closed.addr, "after").await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_hangs_is_treated_as_down_then_reconnected() {
    let redis = RedisServer::start();
    let open = instance(&redis.address(), &format!("{SHARED}\non-redis-error \"allow\"")).await;
    assert_eq!(status(open.addr, "before").await, StatusCode::OK);
    assert_eq!(metric(open.admin, "sluice_redis_up").await, 1);

    // Frozen, the server keeps its connections open and answers nothing. Requests fall
    // back (open) after the timeout, and the connection is given up: from then on calls
    // fail at once instead of each waiting for its timeout.
    redis.freeze();
    let (addr, admin) = (open.addr, open.admin);
    let mut clients = 0;
    until_async(|| {
        clients += 1;
        let client = format!("frozen-{clients}");
        async move {
            assert_eq!(status(addr, &client).await, StatusCode::OK, "fail open");
            metric(admin, "sluice_redis_up").await == 0
        }
    })
    .await;
    let fallbacks = metric(open.admin, "sluice_ratelimit_redis_fallbacks_total{limit=\"shared\"}").await;
    let tasks: Vec<_> =
        (0..50).map(|i| tokio::spawn(async move { status(addr, &format!("burst-{i}")).await })).collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let after = metric(open.admin, "sluice_ratelimit_redis_fallbacks_total{limit=\"shared\"}").await;
    assert!(after >= fallbacks + 50, "{fallbacks} -> {after}");

    // Thawed, it is reconnected and the shared limit applies again.
    redis.thaw();
    until_async(|| async { metric(open.admin, "sluice_redis_up").await == 1 }).await;
    // Refusals can only come from Redis here (the fallback allows): at least the burst
    // passes, and the rest is refused unless a reply was slow (then allowed, failing open).
    let leases = metric(open.admin, "sluice_ratelimit_redis_leases_total{limit=\"shared\"}").await;
    let mut ok = 0;
    for _ in 0..20 {
        if status(open.addr, "after").await == StatusCode::OK {
            ok += 1;
        }
    }
    assert!((6..20).contains(&ok), "{ok} of 20 allowed: burst 5 + 1 once Redis answers again");
    assert!(metric(open.admin, "sluice_ratelimit_redis_leases_total{limit=\"shared\"}").await > leases);
}

/// Waits (at most 10 s) until the async condition holds.
async fn until_async<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if cond().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("condition not reached in 10 s");
}

#[tokio::test]
async fn redis_options_are_checked() {
    let no_server = "listener \"127.0.0.1:0\"\nsite \"*\" { route \"/\" { respond 200\n rate-limit { rate \"1/s\"; store \"redis\"; } } }";
    let err = sluice_config::parse("t.kdl", no_server).unwrap_err().render(false);
    assert!(err.contains("needs a Redis server") && err.contains("t.kdl:"), "{err}");
    let bad = "server { redis \"localhost\" }\nlistener \"127.0.0.1:0\"";
    let err = sluice_config::parse("t.kdl", bad).unwrap_err().render(false);
    assert!(err.contains("invalid Redis address"), "{err}");
    let bad = "server { redis \"127.0.0.1:6379\" }\nlistener \"127.0.0.1:0\"\nsite \"*\" { route \"/\" { respond 200\n rate-limit { rate \"1/s\"; store \"redis\"; on-redis-error \"maybe\"; } } }";
    let err = sluice_config::parse("t.kdl", bad).unwrap_err().render(false);
    assert!(err.contains("unknown on-redis-error `maybe`"), "{err}");
    let bad = "server { redis \"127.0.0.1:6379\" timeout=\"2m\" }\nlistener \"127.0.0.1:0\"";
    let err = sluice_config::parse("t.kdl", bad).unwrap_err().render(false);
    assert!(err.contains("the Redis `timeout` is at most 60s") && err.contains("t.kdl:1:"), "{err}");
}
