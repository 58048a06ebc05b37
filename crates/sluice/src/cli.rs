//! The command line: `sluice run`, `sluice check`, `sluice proxy`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use clap::{Parser, Subcommand};
use sluice_config::{
    AccessLogConfig, Config, HostPattern, ListenerConfig, LogFormat, LogTarget, PathMatch, ProxyAction, RouteAction,
    RouteConfig, SiteConfig, UpstreamConfig, UpstreamProtocol, UpstreamServer,
};

use crate::Server;

const EXAMPLES: &str = "\
Examples:
  sluice run -c examples/quickstart.kdl     serve a configuration
  sluice check -c /etc/sluice/sluice.kdl    validate a configuration and exit
  sluice proxy --listen 127.0.0.1:8080 --to http://127.0.0.1:3000 --to http://127.0.0.1:3001
                                            a reverse proxy without a configuration file
  sluice proxy --listen 0.0.0.0:8443 --cert cert.pem --key key.pem --to http://127.0.0.1:3000
                                            the same over HTTPS (HTTP/2 and HTTP/1.1 by ALPN)

Signals: SIGTERM/SIGINT drain and exit; SIGHUP reloads the configuration file (with
`sluice proxy`: the TLS certificate files); SIGUSR2 upgrades the binary: a new process
started from the same path takes over the listening sockets, then this one drains;
SIGUSR1 logs every upstream server's state (health, ejection, load, latency).

Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug or RUST_LOG=sluice_core=debug,info).
Docs: docs/config.md (configuration), docs/architecture.md (how a request flows).";

/// Sluice: a reverse proxy and load balancer configured by one KDL file.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Internal (binary upgrade): take the listening sockets from the process at this
    /// hand-off socket instead of binding them. The running process passes it when it
    /// starts its successor on SIGUSR2.
    #[arg(long, global = true, value_name = "SOCKET", hide = true)]
    upgrade_from: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server with a configuration file.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "sluice.kdl")]
        config: PathBuf,
        /// Validate the file, print the effective configuration (every default filled in)
        /// and exit instead of serving.
        #[arg(long)]
        test: bool,
    },
    /// Validate a configuration file: exit 0 when valid, 1 with diagnostics when not.
    Check {
        /// Configuration file.
        #[arg(short, long, default_value = "sluice.kdl")]
        config: PathBuf,
    },
    /// A one-line reverse proxy: listen on an address and balance across origins.
    Proxy {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// Origin URL: http://host:port (HTTP/1.1), h2c://host:port (HTTP/2 cleartext) or
        /// https://host:port (HTTP/1.1 over TLS, verified against the system's CAs). Repeatable.
        #[arg(long = "to", value_name = "URL", required = true)]
        to: Vec<String>,
        /// Serve HTTPS with this PEM certificate chain (needs --key).
        #[arg(long, value_name = "FILE", requires = "key")]
        cert: Option<PathBuf>,
        /// The PEM private key of --cert.
        #[arg(long, value_name = "FILE", requires = "cert")]
        key: Option<PathBuf>,
        /// Serve the admin API (health, upstream state, Prometheus metrics) on this address.
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
        /// Access log: off, stdout, stderr or a file path.
        #[arg(long, default_value = "stdout")]
        access_log: String,
        /// Worker threads (default: one per available core).
        #[arg(long)]
        threads: Option<usize>,
        /// Runtime layout: multi-thread (work-stealing) or per-core (one runtime per thread).
        #[arg(long, default_value = "multi-thread", value_parser = ["multi-thread", "per-core"])]
        runtime: String,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let upgrade_from = cli.upgrade_from;
    match cli.command {
        Command::Check { config } => match load(&config) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                println!("{}: configuration is valid", config.display());
                ExitCode::SUCCESS
            }
            Err(report) => {
                eprintln!("{report}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config, test: true } => match load(&config) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                println!("# effective configuration of {}\n{c:#?}", config.display());
                ExitCode::SUCCESS
            }
            Err(report) => {
                eprintln!("{report}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config, test: false } => match load(&config) {
            Ok(c) => exit(serve(c, Some(config), upgrade_from)),
            Err(report) => {
                eprintln!("{report}");
                ExitCode::FAILURE
            }
        },
        Command::Proxy { listen, to, access_log, threads, runtime, cert, key, admin } => {
            match one_liner(listen, &to, &access_log) {
                Ok(mut c) => {
                    c.server.admin = admin.map(|address| sluice_config::AdminConfig { address, token: None });
                    if let (Some(certificate), Some(key)) = (cert, key) {
                        c.listeners[0].tls = Some(sluice_config::ListenerTls {
                            certificate: Some(sluice_config::CertificatePair { certificate, key }),
                            ..Default::default()
                        });
                    }
                    c.server.worker_threads = threads;
                    if runtime == "per-core" {
                        c.server.runtime = sluice_config::RuntimeKind::PerCore;
                    }
                    exit(serve(c, None, upgrade_from))
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads and validates a configuration; the error is the rendered report.
pub fn load(path: &Path) -> Result<Config, String> {
    sluice_config::load(path).map_err(|e| e.render(std::io::stderr().is_terminal()))
}

fn init_tracing() {
    use tracing_subscriber::prelude::*;
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let _ = tracing_subscriber::registry().with(fmt).with(filter).try_init();
}

/// Runs `config` until SIGTERM or SIGINT (or a binary upgrade), then drains. `source` is
/// the file it came from: SIGHUP reloads it. With `upgrade_from`, the listening sockets
/// come from the running process at that hand-off socket.
pub fn serve(config: Config, source: Option<PathBuf>, upgrade_from: Option<PathBuf>) -> anyhow::Result<()> {
    // Taken now: once a new version is installed, this path names the new binary.
    let relaunch = crate::upgrade::Relaunch::current().context("finding this binary's path")?;
    // With per-core runtimes the main runtime only handles signals and the pool sweeper.
    let mut builder = match config.server.runtime {
        sluice_config::RuntimeKind::MultiThread => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(crate::server::worker_threads(&config));
            b
        }
        sluice_config::RuntimeKind::PerCore => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = builder.enable_all().thread_name("sluice-worker").build().context("starting the runtime")?;
    let result = runtime.block_on(async {
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let mut signals = Signals::install()?;
        let (handoff, inherited) = match &upgrade_from {
            Some(path) => {
                let (handoff, inherited) = crate::upgrade::Handoff::receive(path)?;
                tracing::info!(
                    sockets = inherited.sockets.values().map(Vec::len).sum::<usize>(),
                    "took over the listening sockets of the running process"
                );
                (Some(handoff), inherited)
            }
            None => (None, Default::default()),
        };
        let server = Server::start_with(&config, source, inherited).await?;
        tracing::info!(version = env!("CARGO_PKG_VERSION"), pid = std::process::id(), "sluice started");
        sd_notify(&format!("READY=1\nMAINPID={}", std::process::id()));
        if let Some(handoff) = handoff {
            // The old process stops accepting once it reads this.
            handoff.ready().context("telling the old process that this one is serving")?;
        }
        let upgraded = signals.wait(&server, &relaunch).await;
        if !upgraded {
            sd_notify("STOPPING=1");
        }
        server.shutdown().await;
        anyhow::Ok(())
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Tells systemd (`Type=notify`) about the service's state, when it asks
/// (`NOTIFY_SOCKET`); does nothing otherwise.
fn sd_notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else { return };
    let target = target.to_string_lossy().into_owned();
    let sent = match target.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
        }
        #[cfg(not(target_os = "linux"))]
        Some(_) => return,
        None => socket.send_to(state.as_bytes(), &target),
    };
    if let Err(e) = sent {
        tracing::warn!(socket = %target, error = %e, "cannot notify systemd");
    }
}

/// The signals the server reacts to, installed before it says it is ready: a signal sent
/// right after "sluice started" (or systemd's READY=1) must not hit the default action.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
            usr1: signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?,
            usr2: signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?,
        })
    }

    /// Waits for SIGTERM or SIGINT; meanwhile reloads the configuration on SIGHUP and logs
    /// the upstream servers' state on SIGUSR1, and on SIGUSR2 hands the sockets to a new
    /// process. Returns true when it returns because a new process took over.
    async fn wait(&mut self, server: &Server, relaunch: &crate::upgrade::Relaunch) -> bool {
        loop {
            tokio::select! {
                _ = self.term.recv() => { tracing::info!("SIGTERM received"); return false }
                _ = self.int.recv() => { tracing::info!("SIGINT received"); return false }
                _ = self.usr2.recv() => {
                    tracing::info!("SIGUSR2 received: binary upgrade");
                    match crate::upgrade::hand_over(server.control(), relaunch).await {
                        Ok(pid) => {
                            tracing::info!(new_pid = pid, "binary upgrade: the new process is serving; draining this one");
                            return true;
                        }
                        Err(e) => tracing::error!("binary upgrade failed, this process keeps serving: {e:#}"),
                    }
                }
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP received: reloading the configuration");
                    match server.reload().await {
                        Ok(_) => {}
                        // `sluice proxy`: no file, but its certificate files can be re-read.
                        Err(crate::server::ReloadError::NoFile) => {
                            tracing::info!("SIGHUP received: reloading TLS certificates");
                            server.reload_certificates();
                        }
                        // Logged by the reload, with the file's diagnostics.
                        Err(_) => {}
                    }
                }
                _ = self.usr1.recv() => server.log_status(),
            }
        }
    }
}

/// The configuration `sluice proxy` runs: one listener, one upstream group, one route.
pub fn one_liner(listen: SocketAddr, to: &[String], access_log: &str) -> anyhow::Result<Config> {
    let mut protocol = None;
    let mut servers = Vec::new();
    for url in to {
        let (proto, rest) = match url.split_once("://") {
            Some(("http", rest)) => (UpstreamProtocol::Http1, rest),
            Some(("h2c", rest)) => (UpstreamProtocol::H2c, rest),
            Some(("https", rest)) => (UpstreamProtocol::Http1, rest),
            Some((scheme, _)) => {
                bail!("--to {url}: unsupported scheme `{scheme}` (use http://, https:// or h2c://)")
            }
            None => (UpstreamProtocol::Http1, url.as_str()),
        };
        let https = url.starts_with("https://");
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') {
            bail!("--to {url}: paths are not supported, give only scheme://host:port");
        }
        let address = match authority.rsplit_once(':') {
            Some((_, port)) if port.parse::<u16>().is_ok() => authority.to_string(),
            _ if https => format!("{authority}:443"),
            _ => format!("{authority}:80"),
        };
        if protocol.is_some_and(|p| p != (proto, https)) {
            bail!("--to {url}: all origins must use the same scheme");
        }
        protocol = Some((proto, https));
        servers.push(UpstreamServer { address, weight: 1, srv: false });
    }
    let mut upstream = UpstreamConfig::new("origins", servers);
    let (proto, https) = protocol.ok_or_else(|| anyhow!("at least one --to is required"))?;
    upstream.protocol = proto;
    if https {
        upstream.tls = Some(sluice_config::UpstreamTls { verify: true, ..Default::default() });
    }
    let target = match access_log {
        "off" => LogTarget::Off,
        "stdout" => LogTarget::Stdout,
        "stderr" => LogTarget::Stderr,
        path => LogTarget::File(path.into()),
    };
    let mut config = Config::default();
    config.server.access_log = AccessLogConfig { target, format: LogFormat::Json };
    config.listeners.push(ListenerConfig::new(listen));
    config.upstreams.push(upstream);
    config.sites.push(SiteConfig {
        hosts: vec![HostPattern::Any],
        listeners: Vec::new(),
        request_headers: Default::default(),
        response_headers: Default::default(),
        routes: vec![RouteConfig {
            path: PathMatch::Prefix("/".into()),
            methods: Vec::new(),
            action: RouteAction::Proxy(ProxyAction::to("origins")),
            request_headers: Default::default(),
            response_headers: Default::default(),
            compress: None,
            cache: None,
            rate_limit: None,
            policy: Default::default(),
        }],
        certificate: None,
        client_auth: None,
        https_redirect: None,
        compress: None,
        cache: None,
        rate_limit: None,
        policy: Default::default(),
    });
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_liner_parses_urls() {
        let c = one_liner("127.0.0.1:0".parse().unwrap(), &["http://a:81".into(), "b".into()], "off").unwrap();
        assert_eq!(c.upstreams[0].servers[0].address, "a:81");
        assert_eq!(c.upstreams[0].servers[1].address, "b:80");
        assert!(one_liner("127.0.0.1:0".parse().unwrap(), &["ftp://a".into()], "off").is_err());
        assert!(one_liner("127.0.0.1:0".parse().unwrap(), &["http://a:1".into(), "h2c://b:2".into()], "off").is_err());
    }
}
