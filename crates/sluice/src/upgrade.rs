//! Zero-downtime binary upgrade: the running process hands its listening sockets to a new
//! process over a Unix socket (`SCM_RIGHTS`), the new one starts serving on them, and only
//! then does the old one stop accepting and drain. The kernel's accept queues never close,
//! so no connection is refused or lost in between.
//!
//! On SIGUSR2 the running process:
//! 1. binds a Unix socket in a private directory (`$TMPDIR/sluice-upgrade-<pid>-<n>/`, mode
//!    0700), and will only talk to the process it starts (checked with `SO_PEERCRED`);
//! 2. starts its binary again (the file at the path it was started from: the new version
//!    once it is installed there) with the same arguments plus `--upgrade-from <socket>`;
//! 3. sends it every listening socket (the proxy's and the admin one) with their addresses;
//! 4. waits for the new process to say `ready` (it has loaded its configuration, taken the
//!    sockets, bound any new address and written the pid file);
//! 5. drains like on SIGTERM and exits.
//!
//! If the new process fails at any point (bad configuration, crash, no answer within 60 s)
//! the old one logs why and keeps serving: nothing changed. See docs/operations.md.

use std::ffi::OsString;
use std::io::{BufRead as _, IoSlice, IoSliceMut, Write as _};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};

use crate::server::{Control, Inherited};

/// The first line of the hand-off message (its version).
const HELLO: &str = "sluice-upgrade-1";
/// The most sockets one hand-off carries (the kernel's `SCM_MAX_FD` is 253).
const MAX_SOCKETS: usize = 200;
/// How long the new process has to connect, and then to be ready.
const TIMEOUT: Duration = Duration::from_secs(60);

/// How to start this binary again: the path it was started from and its arguments
/// (without a previous `--upgrade-from`). Taken at startup, before the file is replaced.
#[derive(Debug, Clone)]
pub struct Relaunch {
    exe: PathBuf,
    args: Vec<OsString>,
}

impl Relaunch {
    /// This process's binary and arguments.
    pub fn current() -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut args = Vec::new();
        let mut skip = false;
        for a in std::env::args_os().skip(1) {
            if skip {
                skip = false;
                continue;
            }
            if a == "--upgrade-from" {
                skip = true;
                continue;
            }
            if a.to_str().is_some_and(|s| s.starts_with("--upgrade-from=")) {
                continue;
            }
            args.push(a);
        }
        Ok(Self { exe, args })
    }
}

/// Removes the hand-off directory (and its socket) when the hand-off is over.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The old process's side: starts the new process and hands it the sockets. Returns the
/// new process's pid once it is serving; the caller then drains and exits. On error,
/// nothing changed (the new process, if it started, is stopped).
pub async fn hand_over(control: &Control, relaunch: &Relaunch) -> anyhow::Result<u32> {
    // No reload while the sockets change hands.
    let _no_reload = control.lock_reloads().await;
    // A private directory (0700): only this user can reach the socket, and the peer's pid is
    // checked as well, since whoever connects receives the listening sockets.
    let dir = std::env::temp_dir().join(format!(
        "sluice-upgrade-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
    ));
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating the hand-off directory {}", dir.display()))?;
    }
    let _cleanup = Cleanup(dir.clone());
    let path = dir.join("handoff.sock");
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding the hand-off socket {}", path.display()))?;
    tracing::info!(binary = %relaunch.exe.display(), "binary upgrade: starting the new process");
    let child = std::process::Command::new(&relaunch.exe)
        .args(&relaunch.args)
        .arg("--upgrade-from")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", relaunch.exe.display()))?;
    let pid = child.id();
    let (child, result) = handshake(control, &listener, child).await;
    if let Err(e) = result {
        // Whatever it did, it must not keep serving next to us.
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
        return Err(e);
    }
    Ok(pid)
}

/// Waits for the new process to connect, sends the sockets, and waits for `ready`.
/// Gives the child back (when it still has it) for the caller to stop on failure.
async fn handshake(
    control: &Control,
    listener: &tokio::net::UnixListener,
    mut child: std::process::Child,
) -> (Option<std::process::Child>, anyhow::Result<()>) {
    let deadline = Instant::now() + TIMEOUT;
    let stream = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let peer = rustix::net::sockopt::socket_peercred(&stream).map(|c| c.pid.as_raw_pid());
                    if peer.as_ref().is_ok_and(|&p| u32::try_from(p).is_ok_and(|p| p == child.id())) {
                        break stream;
                    }
                    tracing::warn!(peer = ?peer, "binary upgrade: a process other than the new one connected to the hand-off socket; refused");
                }
                Err(e) => return (Some(child), Err(anyhow!(e).context("accepting the new process"))),
            },
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        return (None, Err(anyhow!("the new process exited ({status}) before taking the sockets")));
                    }
                    Ok(None) if Instant::now() > deadline => {
                        return (Some(child), Err(anyhow!("the new process did not connect within {TIMEOUT:?}")));
                    }
                    Ok(None) => {}
                    Err(e) => return (Some(child), Err(e.into())),
                }
            }
        }
    };
    let sockets = match control.sockets_for_handoff() {
        Ok(s) => s,
        Err(e) => return (Some(child), Err(anyhow!(e).context("duplicating the listening sockets"))),
    };
    let count = sockets.len();
    let pid = child.id();
    // Blocking I/O on a private socket, off the runtime (which may be single-threaded).
    let waited = tokio::task::spawn_blocking(move || {
        let result = (|| {
            let stream = stream.into_std()?;
            stream.set_nonblocking(false)?;
            send(&stream, &sockets)?;
            drop(sockets);
            tracing::info!(pid, sockets = count, "binary upgrade: sockets handed over, waiting for the new process");
            wait_ready(stream, &mut child, deadline)
        })();
        (child, result)
    })
    .await;
    match waited {
        Ok((child, result)) => (Some(child), result),
        Err(e) => (None, Err(anyhow!(e).context("the hand-off task failed"))),
    }
}

/// Reads the new process's `ready` line, watching that it is still alive.
fn wait_ready(stream: UnixStream, child: &mut std::process::Child, deadline: Instant) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut reader = std::io::BufReader::new(stream);
    let mut line = String::new();
    loop {
        match reader.read_line(&mut line) {
            Ok(0) => bail!("the new process closed the hand-off without being ready (see its log above)"),
            Ok(_) if line.trim() == "ready" => return Ok(()),
            Ok(_) => bail!("unexpected hand-off message `{}`", line.trim()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if let Some(status) = child.try_wait()? {
                    bail!("the new process exited ({status}) before it was ready");
                }
                if Instant::now() > deadline {
                    bail!("the new process was not ready within {TIMEOUT:?}");
                }
            }
            Err(e) => return Err(anyhow!(e).context("reading from the new process")),
        }
    }
}

/// Sends the sockets and their addresses in one message.
fn send(stream: &UnixStream, sockets: &[(SocketAddr, std::net::TcpListener)]) -> anyhow::Result<()> {
    if sockets.len() > MAX_SOCKETS {
        bail!("{} listening sockets: more than one hand-off can carry ({MAX_SOCKETS})", sockets.len());
    }
    let mut text = format!("{HELLO}\n");
    for (addr, _) in sockets {
        text.push_str(&format!("{addr}\n"));
    }
    let fds: Vec<_> = sockets.iter().map(|(_, s)| s.as_fd()).collect();
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        bail!("the ancillary buffer is too small for {} sockets", fds.len());
    }
    let sent = sendmsg(stream, &[IoSlice::new(text.as_bytes())], &mut control, SendFlags::empty())
        .context("sending the sockets")?;
    if sent != text.len() {
        bail!("the hand-off message was cut short ({sent} of {} bytes)", text.len());
    }
    Ok(())
}

/// The new process's side of a hand-off: connected to the old process, holding what it
/// sent. Say [`ready`](Self::ready) once serving.
#[derive(Debug)]
pub struct Handoff {
    stream: UnixStream,
}

impl Handoff {
    /// Connects to the old process's hand-off socket and receives its listening sockets.
    pub fn receive(path: &Path) -> anyhow::Result<(Self, Inherited)> {
        let stream = UnixStream::connect(path)
            .with_context(|| format!("connecting to the running process at {}", path.display()))?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = recvmsg(&stream, &mut [IoSliceMut::new(&mut buf)], &mut control, RecvFlags::CMSG_CLOEXEC)
            .context("receiving the sockets")?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        let text = std::str::from_utf8(&buf[..received.bytes]).context("the hand-off message is not text")?;
        let mut lines = text.lines();
        if lines.next() != Some(HELLO) {
            bail!("the running process speaks another hand-off protocol (is it an older sluice?)");
        }
        let addrs: Vec<SocketAddr> = lines
            .map(|l| l.parse().with_context(|| format!("bad address `{l}` in the hand-off")))
            .collect::<Result<_, _>>()?;
        if addrs.len() != fds.len() {
            bail!("the hand-off named {} sockets but carried {}", addrs.len(), fds.len());
        }
        let mut inherited = Inherited::default();
        for (addr, fd) in addrs.into_iter().zip(fds) {
            let socket = std::net::TcpListener::from(fd);
            socket.set_nonblocking(true)?;
            inherited.sockets.entry(addr).or_default().push(socket);
        }
        Ok((Self { stream }, inherited))
    }

    /// Tells the old process that this one is serving: it stops accepting and drains.
    pub fn ready(mut self) -> std::io::Result<()> {
        self.stream.write_all(b"ready\n")?;
        self.stream.flush()
    }
}
