//! Active health checks: a task per backend (not per worker thread) that probes it on an
//! interval with jitter, by HTTP (path, expected status range, optional body substring,
//! Host header) or by TCP connect, and flips the backend's verdict after a number of
//! results in a row ([`Thresholds`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluice_core::shutdown::Shutdown;
use sluice_core::Body;

use crate::backend::UpstreamProtocol;
use crate::health::now_ms;
use crate::Backend;

/// How a backend is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A TCP (and TLS, for TLS groups) connection is enough.
    Tcp,
    /// `GET path` must answer a status in `status` (and contain `body`, if set).
    Http {
        /// Request path.
        path: String,
        /// Accepted statuses, inclusive.
        status: (u16, u16),
        /// A substring the body must contain (the first 64 KiB are read).
        body: Option<String>,
        /// Host header; the server's address when unset.
        host: Option<String>,
    },
}

/// Active check settings of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSettings {
    /// What a check does.
    pub probe: Probe,
    /// Time between checks.
    pub interval: Duration,
    /// Time allowed for one check.
    pub timeout: Duration,
    /// Up to this much random delay is added to each interval (spreads checks out).
    pub jitter: Duration,
    /// Passes in a row that make an unhealthy backend healthy.
    pub healthy_threshold: u32,
    /// Failures in a row that make a healthy backend unhealthy.
    pub unhealthy_threshold: u32,
}

/// Turns a stream of check results into verdict changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    healthy: u32,
    unhealthy: u32,
    passes: u32,
    failures: u32,
}

impl Thresholds {
    /// Thresholds of at least 1.
    pub fn new(healthy: u32, unhealthy: u32) -> Self {
        Self { healthy: healthy.max(1), unhealthy: unhealthy.max(1), passes: 0, failures: 0 }
    }

    /// Counts one result; returns the new verdict when it changes from `current`.
    pub fn record(&mut self, passed: bool, current: bool) -> Option<bool> {
        if passed {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
            (!current && self.passes >= self.healthy).then_some(true)
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
            (current && self.failures >= self.unhealthy).then_some(false)
        }
    }
}

/// Checks `backend` until shutdown, updating its verdict.
pub async fn run(backend: Arc<Backend>, settings: Arc<CheckSettings>, group: String, shutdown: Shutdown) {
    let weak = Arc::downgrade(&backend);
    drop(backend);
    run_weak(weak, settings, group, shutdown).await;
}

/// Like [`run`], and stops once nothing else holds the backend (it left its group and its
/// last request finished).
pub async fn run_weak(
    backend: std::sync::Weak<Backend>,
    settings: Arc<CheckSettings>,
    group: String,
    mut shutdown: Shutdown,
) {
    let mut thresholds = Thresholds::new(settings.healthy_threshold, settings.unhealthy_threshold);
    loop {
        let Some(backend) = backend.upgrade() else { return };
        let result = tokio::select! {
            r = tokio::time::timeout(settings.timeout, probe(&backend, &settings.probe)) => match r {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", settings.timeout)),
            },
            _ = shutdown.triggered() => return,
        };
        let passed = result.is_ok();
        backend.health().record_check(passed, now_ms());
        if let Some(healthy) = thresholds.record(passed, backend.health().checked_ok()) {
            backend.health().set_checked(healthy);
            match &result {
                Ok(()) => {
                    tracing::info!(upstream = %group, backend = %backend.name(), "backend is healthy again (active check)")
                }
                Err(why) => {
                    tracing::warn!(upstream = %group, backend = %backend.name(), reason = %why, "backend is unhealthy (active check)")
                }
            }
        } else if let Err(why) = &result {
            tracing::debug!(upstream = %group, backend = %backend.name(), reason = %why, "health check failed");
        }
        // Not held while waiting: a backend that left its group can go away meanwhile.
        drop(backend);
        let jitter = if settings.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_millis(fastrand::u64(0..=u64::try_from(settings.jitter.as_millis()).unwrap_or(0)))
        };
        tokio::select! {
            _ = tokio::time::sleep(settings.interval + jitter) => {}
            _ = shutdown.triggered() => return,
        }
    }
}

/// One check; the error says why it failed.
async fn probe(backend: &Backend, probe: &Probe) -> Result<(), String> {
    let Probe::Http { path, status, body, host } = probe else {
        return backend.connect_stream(true, None).await.map(drop).map_err(|e| e.to_string());
    };
    let host = host.clone().unwrap_or_else(|| backend.name().to_owned());
    let request = Request::get(path.as_str())
        .header(http::header::HOST, host.as_str())
        .header(http::header::USER_AGENT, "sluice-health-check")
        .body(Body::empty())
        .map_err(|e| format!("bad check request: {e}"))?;
    let h2 = matches!(backend.settings().protocol, UpstreamProtocol::H2c | UpstreamProtocol::H2);
    let stream = backend.connect_stream(!h2, None).await.map_err(|e| e.to_string())?;
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        tokio::spawn(conn);
        let mut request = request;
        *request.uri_mut() =
            format!("{}://{host}{path}", if backend.settings().tls.is_some() { "https" } else { "http" })
                .parse()
                .map_err(|e| format!("check URL: {e}"))?;
        sender.send_request(request).await
    } else {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        sender.send_request(request).await
    }
    .map_err(|e| format!("request: {e}"))?;
    let code = response.status();
    if code < StatusCode::from_u16(status.0).unwrap_or(StatusCode::OK)
        || code > StatusCode::from_u16(status.1).unwrap_or(StatusCode::OK)
    {
        return Err(format!("status {} is outside {}-{}", code.as_u16(), status.0, status.1));
    }
    if let Some(needle) = body {
        let limited = http_body_util::Limited::new(response.into_body(), 64 * 1024);
        let bytes: Bytes = match limited.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Err(format!("reading the body: {e}")),
        };
        if !bytes.windows(needle.len().max(1)).any(|w| w == needle.as_bytes()) {
            return Err(format!("the body does not contain {needle:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackendSettings;

    // Paused clock: five intervals of 5 s pass at once. A connect to a closed port fails
    // whether the refusal or the (auto-advanced) connect timeout comes first.
    #[tokio::test(start_paused = true)]
    async fn a_dead_server_turns_unhealthy_after_the_threshold() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let backend = Arc::new(Backend::new(closed.to_string(), closed, 1, BackendSettings::default()));
        let settings = Arc::new(CheckSettings {
            probe: Probe::Tcp,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            jitter: Duration::ZERO,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        });
        let (trigger, shutdown) = sluice_core::shutdown::channel();
        let task = tokio::spawn(run(backend.clone(), settings, "g".into(), shutdown));
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(backend.health().checked_ok(), "two failures are not enough");
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(!backend.health().checked_ok());
        trigger.trigger();
        task.await.unwrap();
    }

    #[test]
    fn verdicts_flip_after_enough_results_in_a_row() {
        let mut t = Thresholds::new(2, 3);
        assert_eq!(t.record(false, true), None);
        assert_eq!(t.record(false, true), None);
        assert_eq!(t.record(true, true), None, "a pass resets the failures");
        assert_eq!(t.record(false, true), None);
        assert_eq!(t.record(false, true), None);
        assert_eq!(t.record(false, true), Some(false));
        assert_eq!(t.record(true, false), None);
        assert_eq!(t.record(true, false), Some(true));
        assert_eq!(t.record(true, true), None, "no change reported while it stays healthy");
    }
}
