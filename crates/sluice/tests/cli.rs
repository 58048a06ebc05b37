//! The `sluice` binary as a user runs it: check, run, proxy, signals, exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command};

use common::*;

fn repo_file(path: &str) -> String {
    format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}-{}", std::process::id(), fastrand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[test]
fn check_accepts_the_examples() {
    for file in ["examples/quickstart.kdl", "examples/sluice.kdl"] {
        let out = Command::new(BIN).args(["check", "-c", &repo_file(file)]).output().unwrap();
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid"));
    }
}

#[test]
fn check_reports_every_problem_with_its_location_and_exits_1() {
    let path = temp_file(
        "bad.kdl",
        "listener \"127.0.0.1:0\"\nupstream \"u\" {\n    server \"127.0.0.1:1\" wieght=2\n}\nsite \"*\" {\n    route \"/\" { proxy \"nope\" }\n}\n",
    );
    let out = Command::new(BIN).args(["check", "-c", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.kdl:3:"), "{err}");
    assert!(err.contains("wieght"), "{err}");
    assert!(err.contains("weight"), "the valid names are listed: {err}");
    assert!(err.contains("bad.kdl:6:"), "{err}");
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn run_refuses_an_invalid_config_before_starting() {
    let path = temp_file("bad.kdl", "listener \"not an address\"\n");
    let out = Command::new(BIN).args(["run", "-c", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.kdl:1:10"), "{err}");
    assert!(!err.contains("listening"), "{err}");
}

#[test]
fn run_without_a_file_names_the_default_path() {
    let dir = temp_file("empty", "").parent().unwrap().to_path_buf();
    let out = Command::new(BIN).arg("run").current_dir(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sluice.kdl"));
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sluice "));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Examples:") && help.contains("sluice proxy --listen"), "{help}");
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_one_liner_serves_and_exits_0_on_sigterm() {
    let a = Origin::named("one").await;
    let b = Origin::named("two").await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (ua, ub) = (format!("http://{}", a.addr), format!("{}", b.addr));
    let (mut child, _log) = tokio::task::spawn_blocking(move || {
        spawn_until_started(&["proxy", "--listen", &listen, "--to", &ua, "--to", &ub, "--access-log", "off"])
    })
    .await
    .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let (status, _, body) = get(addr, "/").await;
        assert_eq!(status, 200);
        bodies.push(body);
    }
    bodies.sort();
    assert_eq!(bodies, ["one", "two"]);
    sigterm(&child);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (arrived_tx, mut arrived_rx) = tokio::sync::mpsc::unbounded_channel();
    let origin = Origin::start(
        false,
        std::sync::Arc::new(move |_req| {
            let mut release = release_rx.clone();
            let arrived = arrived_tx.clone();
            Box::pin(async move {
                let _ = arrived.send(());
                let _ = release.wait_for(|r| *r).await;
                http::Response::new(full("finished"))
            })
        }),
    )
    .await;
    let port = free_port();
    let config = temp_file(
        "graceful.kdl",
        &format!(
            "server {{ access-log \"off\"\n shutdown-grace \"30s\" }}\nlistener \"127.0.0.1:{port}\"\nupstream \"o\" {{ server \"{}\" }}\nsite \"*\" {{ route \"/\" {{ proxy \"o\" }} }}\n",
            origin.addr
        ),
    );
    let (mut child, log) =
        tokio::task::spawn_blocking(move || spawn_until_started(&["run", "-c", config.to_str().unwrap()]))
            .await
            .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let in_flight = tokio::spawn(async move { get(addr, "/slow").await });
    arrived_rx.recv().await.unwrap();
    sigterm(&child);
    // Wait until the process has stopped accepting before releasing the request.
    let log = tokio::task::spawn_blocking(move || loop {
        let line = log.recv_timeout(std::time::Duration::from_secs(20)).expect("no shutdown log");
        if line.contains("stopped accepting") {
            return log;
        }
    })
    .await
    .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no new connections during the drain");
    release_tx.send(true).unwrap();
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status.as_u16(), body.as_ref()), (200, &b"finished"[..]));
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0));
    drop(log);
}

#[test]
fn run_test_prints_the_effective_config_and_exits() {
    let path = temp_file("effective.kdl", "listener \"127.0.0.1:0\"\nsite \"*\" { route \"/\" { respond 200 } }\n");
    let out = Command::new(BIN).args(["run", "--test", "-c", path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // Defaults are filled in: the listener's limits, the access log, timeouts.
    assert!(text.contains("max_connections: 10000") && text.contains("keepalive_timeout: 75s"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pid_file_and_systemd_notifications_follow_the_process() {
    let dir = temp_file("x", "").parent().unwrap().to_path_buf();
    let notify = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    socket.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let pid_path = dir.join("sluice.pid");
    let config = temp_file(
        "pid.kdl",
        &format!(
            "server {{\n    access-log \"off\"\n    pid-file \"{}\"\n}}\nlistener \"127.0.0.1:0\"\nsite \"*\" {{ route \"/\" {{ respond 200 }} }}\n",
            pid_path.display()
        ),
    );
    let mut child = Command::new(BIN)
        .args(["run", "-c", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).unwrap_or_else(|e| {
        panic!("{e}; sluice said: {}", std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default())
    });
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.starts_with("READY=1\nMAINPID="), "{ready}");
    assert_eq!(std::fs::read_to_string(&pid_path).unwrap().trim(), child.id().to_string());
    sigterm(&child);
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap().success());
    assert!(!pid_path.exists(), "the pid file is removed at exit");
}

/// The ids on a `/proc/<pid>/task/<tid>/status` line (`Uid:` or `Gid:`): real, effective,
/// saved, filesystem.
fn ids(status: &str, key: &str) -> Vec<u32> {
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line[key.len()..].split_whitespace().map(|v| v.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_is_dropped_on_every_thread_after_binding() {
    if !std::fs::read_to_string("/proc/self/status").unwrap().lines().any(|l| l.starts_with("Uid:\t0\t")) {
        eprintln!("SKIPPED: needs root (CI runs as root)");
        return;
    }
    let origin = Origin::named("origin").await;
    let config = temp_file(
        "user.kdl",
        &format!(
            "server {{\n    access-log \"off\"\n    worker-threads 2\n    user \"nobody\"\n    group \"nogroup\"\n}}\nlistener \"127.0.0.1:0\"\nupstream \"o\" {{ server \"{}\" }}\nsite \"*\" {{ route \"/\" {{ proxy \"o\" }} }}\n",
            origin.addr
        ),
    );
    let path = config.to_str().unwrap().to_owned();
    let (mut child, log) =
        tokio::task::spawn_blocking(move || spawn_until_started(&["run", "-c", &path])).await.unwrap();
    let nobody = 65534;
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap().collect();
    assert!(tasks.len() > 2, "the runtime's threads exist");
    for task in tasks {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        assert_eq!(ids(&status, "Uid:"), vec![nobody; 4], "{status}");
        assert_eq!(ids(&status, "Gid:"), vec![nobody; 4], "{status}");
        let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
        assert!(!groups.split_whitespace().any(|g| g == "0"), "no root group left: {groups}");
    }
    sigterm(&child);
    assert!(tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap().success());
    drop(log);

    // A user that does not exist: a clear error, before serving.
    let bad = temp_file(
        "baduser.kdl",
        "server { user \"no-such-user-here\" }\nlistener \"127.0.0.1:0\"\nsite \"*\" { route \"/\" { respond 200 } }\n",
    );
    let out = Command::new(BIN).args(["run", "-c", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("there is no user `no-such-user-here`"), "{stderr}");
}
