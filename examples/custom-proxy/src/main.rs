//! A proxy built on the Sluice library crates, with a custom filter.
//!
//! ```text
//! cargo run -p custom-proxy -- 127.0.0.1:8080 127.0.0.1:3000
//! ```
//!
//! It forwards everything to the origin, except that `/admin` (and below) is refused with
//! 403 before any origin is contacted, and every response gets `x-custom-proxy: 1`. It
//! prints `listening on ADDR` once ready (so port 0 works) and drains on Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode};
use sluice_core::guard::GuardConfig;
use sluice_core::listener::{self, ListenerSettings};
use sluice_core::{shutdown, Body};
use sluice_proxy::{Backend, Error, ErrorKind, Flow, HttpProxy, Proxy, Result, Session};
use sluice_upstream::{BackendSettings, Upstream};

/// Our proxy: one upstream group and a path blocklist.
struct Gatekeeper {
    upstream: Upstream,
}

impl Proxy for Gatekeeper {
    /// Per-request state: nothing here.
    type Ctx = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<Flow> {
        let path = session.path();
        if path == "/admin" || path.starts_with("/admin/") {
            let mut response = Response::new(Body::full("forbidden by custom-proxy\n"));
            *response.status_mut() = StatusCode::FORBIDDEN;
            return Ok(Flow::Respond(response));
        }
        Ok(Flow::Continue)
    }

    async fn upstream_peer(&self, session: &mut Session, _ctx: &mut ()) -> Result<Arc<Backend>> {
        self.upstream
            .select(Default::default(), session.failed_peer())
            .ok_or_else(|| Error::explain(ErrorKind::NoUpstream, "no origin configured"))
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut http::response::Parts,
        _ctx: &mut (),
    ) -> Result<()> {
        response.headers.insert("x-custom-proxy", HeaderValue::from_static("1"));
        Ok(())
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || std::io::Error::other("usage: custom-proxy LISTEN_ADDR ORIGIN_ADDR");
    let listen: SocketAddr = args.next().ok_or_else(usage)?.parse().map_err(|_| usage())?;
    let origin: SocketAddr = args.next().ok_or_else(usage)?.parse().map_err(|_| usage())?;

    let backend = Arc::new(Backend::new(origin.to_string(), origin, 1, BackendSettings::default()));
    let proxy = Gatekeeper { upstream: Upstream::new("origin", vec![backend]) };
    let service = Arc::new(HttpProxy::new(proxy));

    let socket = listener::bind(listen)?;
    println!("listening on {}", socket.local_addr()?);
    let settings = Arc::new(ListenerSettings {
        max_connections: 1024,
        guard: GuardConfig { keepalive_timeout: std::time::Duration::from_secs(60), ..Default::default() },
        ..ListenerSettings::new(0, "custom")
    });
    let (trigger, watcher) = shutdown::channel();
    let server = tokio::spawn(listener::serve(socket, settings, service, watcher));
    tokio::signal::ctrl_c().await?;
    trigger.trigger();
    trigger.drained().await;
    server.await.map_err(std::io::Error::other)?
}
