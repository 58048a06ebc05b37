//! Span export over OTLP/HTTP with the JSON encoding, for distributed tracing.
//!
//! Every finished request of a sampled trace becomes one `SERVER` span: the proxy's span in
//! the W3C trace ([`sluice_proxy::trace`]), whose id the origin was sent as its parent. The
//! request path only copies a few fields into a [`SpanRecord`] and puts it on a bounded
//! queue: [`Exporter::record`] never blocks, and when the queue is full the span is dropped
//! and counted. One background task, [`ExportTask::run`], batches the spans, encodes them
//! and POSTs them to the collector over a kept-alive HTTP/1.1 connection. A failed export
//! is logged (at most every 30 s) and its batch dropped: tracing must never slow down or
//! break the traffic it observes.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{header, HeaderValue, Method, Request, Uri, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use sluice_config::TracingSettings;
use sluice_core::shutdown::Shutdown;
use sluice_filters::access_log::push_json_str;
use sluice_proxy::trace::TraceContext;
use sluice_proxy::{Error, Session};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Time allowed for one export: connecting, sending and reading the answer.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest time between two warnings about failed exports.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// Most of a collector's answer that is read (it is only looked at on failure).
const MAX_ANSWER: usize = 64 * 1024;
/// The JSON after the last span: closes `spans`, `scopeSpans` and `resourceSpans`.
const REQUEST_TAIL: &str = "]}]}]}";

/// One finished request as the proxy's span: owned and small, built on the request path
/// without formatting anything (encoding happens in the export task).
#[derive(Debug, Clone)]
pub struct SpanRecord {
    trace: TraceContext,
    start_unix_nanos: u64,
    end_unix_nanos: u64,
    method: Method,
    scheme: &'static str,
    path: Option<PathAndQuery>,
    host: Option<String>,
    client: SocketAddr,
    version: Version,
    status: Option<u16>,
    upstream: Option<SocketAddr>,
    retries: u32,
    error_kind: Option<&'static str>,
    error_message: Option<String>,
}

impl SpanRecord {
    /// The span of a request that just finished (call it from the logging phase), or
    /// `None` when its trace is not sampled. The span started when the request head was
    /// received and ends now.
    pub fn from_session(session: &Session, error: Option<&Error>) -> Option<Self> {
        let trace = *session.trace();
        if !trace.sampled() {
            return None;
        }
        let end = SystemTime::now();
        let start = end.checked_sub(session.elapsed()).unwrap_or(end);
        Some(Self {
            trace,
            start_unix_nanos: unix_nanos(start),
            end_unix_nanos: unix_nanos(end),
            method: session.req.method.clone(),
            scheme: session.scheme(),
            // Shares the request's bytes: no copy of the path.
            path: session.req.uri.path_and_query().cloned(),
            host: session.host().map(str::to_owned),
            client: session.client_addr(),
            version: session.req.version,
            status: session.status().map(|s| s.as_u16()),
            upstream: session.upstream_addr(),
            retries: session.retries(),
            error_kind: error.map(|e| e.kind().as_str()),
            error_message: error.map(ToString::to_string),
        })
    }

    /// Whether the span's status is ERROR: a 5xx, or a failure that is not the client's
    /// (OpenTelemetry's HTTP conventions leave 4xx unset on server spans).
    fn is_error(&self) -> bool {
        match (self.status, self.error_kind) {
            (Some(status), _) if status >= 500 => true,
            (Some(status), Some(_)) if (400..500).contains(&status) => false,
            (_, error) => error.is_some(),
        }
    }
}

/// What the exporter and its task count, for metrics.
#[derive(Debug, Default)]
struct Counters {
    exported: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// The request path's side of span export: [`record`](Self::record) queues a span and
/// returns at once.
#[derive(Debug)]
pub struct Exporter {
    tx: mpsc::Sender<SpanRecord>,
    counters: Arc<Counters>,
}

impl Exporter {
    /// An exporter for `settings`, and the task that sends what it records. Nothing is
    /// sent until the task runs: spawn [`ExportTask::run`] once, on any runtime.
    ///
    /// Fails only on an endpoint the configuration would have rejected.
    pub fn start(settings: &TracingSettings) -> anyhow::Result<(Arc<Exporter>, ExportTask)> {
        let target = Target::parse(&settings.endpoint)?;
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let counters = Arc::new(Counters::default());
        let exporter = Arc::new(Exporter { tx, counters: counters.clone() });
        let task = ExportTask {
            rx,
            counters,
            target,
            batch_size: settings.batch_size.max(1),
            flush_interval: settings.flush_interval,
            head: request_head(&settings.service_name),
            conn: None,
            last_warning: None,
        };
        Ok((exporter, task))
    }

    /// Queues a finished span. Never blocks and does no I/O: when the queue is full (the
    /// collector is slow or down) or the task has stopped, the span is dropped and counted.
    pub fn record(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Spans the collector accepted.
    pub fn exported(&self) -> u64 {
        self.counters.exported.load(Ordering::Relaxed)
    }

    /// Spans lost because their export failed (no connection, an error status, a timeout).
    pub fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }

    /// Spans dropped before export because the queue was full or the task had stopped.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }
}

/// The background side of span export: batches, encodes and sends the spans an
/// [`Exporter`] records.
#[derive(Debug)]
pub struct ExportTask {
    rx: mpsc::Receiver<SpanRecord>,
    counters: Arc<Counters>,
    target: Target,
    batch_size: usize,
    flush_interval: Duration,
    /// The JSON of a request before its spans (resource and scope), made once.
    head: String,
    /// The connection to the collector, kept while it is alive.
    conn: Option<SendRequest<Full<Bytes>>>,
    last_warning: Option<Instant>,
}

impl ExportTask {
    /// Sends spans until `shutdown` is triggered, then sends what is already queued and
    /// returns; spans recorded after that are dropped and counted.
    ///
    /// A batch goes out when it holds `batch-size` spans or when its first span has waited
    /// `flush-interval`. The task holds `shutdown` until its last export is done, so a drain
    /// waiting on that shutdown also waits for the final flush (at most 10 s per batch; once
    /// an export of the final flush fails, the rest is counted as failed without trying).
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut stopping = false;
        while !stopping {
            tokio::select! {
                biased;
                _ = shutdown.triggered() => break,
                first = self.rx.recv() => match first {
                    Some(span) => batch.push(span),
                    None => break,
                },
            }
            let flush_at = Instant::now() + self.flush_interval;
            while batch.len() < self.batch_size {
                let room = self.batch_size - batch.len();
                tokio::select! {
                    biased;
                    _ = shutdown.triggered() => {
                        stopping = true;
                        break;
                    }
                    _ = tokio::time::sleep_until(flush_at) => break,
                    received = self.rx.recv_many(&mut batch, room) => {
                        if received == 0 {
                            stopping = true;
                            break;
                        }
                    }
                }
            }
            self.export(&mut batch).await;
        }
        // Stopping: no more spans are accepted; what is queued goes out in full batches.
        self.rx.close();
        while self.rx.recv_many(&mut batch, self.batch_size).await > 0 {
            if !self.export(&mut batch).await {
                // The collector is unreachable: do not hold up the exit batch after batch.
                let mut rest = 0;
                while self.rx.try_recv().is_ok() {
                    rest += 1;
                }
                self.counters.failed.fetch_add(rest, Ordering::Relaxed);
                break;
            }
        }
        drop(shutdown);
    }

    /// Sends one batch (emptying it) and counts the outcome; false if it failed.
    async fn export(&mut self, batch: &mut Vec<SpanRecord>) -> bool {
        if batch.is_empty() {
            return true;
        }
        let count = batch.len() as u64;
        let body = encode(&self.head, batch);
        batch.clear();
        let outcome = match tokio::time::timeout(EXPORT_TIMEOUT, self.send(body)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {} s", EXPORT_TIMEOUT.as_secs())),
        };
        match outcome {
            Ok(()) => {
                self.counters.exported.fetch_add(count, Ordering::Relaxed);
                true
            }
            Err(why) => {
                // A connection in an unknown state is not reused.
                self.conn = None;
                let failed = self.counters.failed.fetch_add(count, Ordering::Relaxed) + count;
                let now = Instant::now();
                if self.last_warning.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
                    self.last_warning = Some(now);
                    tracing::warn!(
                        endpoint = %self.target.endpoint,
                        error = %why,
                        spans = count,
                        failed_total = failed,
                        "OTLP span export failed; the batch is dropped (this warning repeats at most every 30 s)"
                    );
                }
                false
            }
        }
    }

    /// POSTs one encoded batch, connecting first if there is no live connection.
    async fn send(&mut self, body: Bytes) -> Result<(), String> {
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            self.conn = Some(self.target.connect().await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no connection to the collector".to_owned());
        };
        conn.ready().await.map_err(|e| format!("the connection to the collector failed: {e}"))?;
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.target.path.clone();
        req.headers_mut().insert(header::HOST, self.target.authority.clone());
        req.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let response = conn.send_request(req).await.map_err(|e| format!("sending to the collector failed: {e}"))?;
        let status = response.status();
        // Read the answer to its end so that the connection can carry the next batch.
        let answer = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the collector's answer failed: {e}"))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]);
            return Err(format!("the collector answered {status}: {}", text.trim()));
        }
        Ok(())
    }
}

/// Where export requests go, taken apart once.
#[derive(Debug)]
struct Target {
    /// The URL as configured, for logs.
    endpoint: String,
    /// Host to connect to (IPv6 without brackets).
    host: String,
    port: u16,
    /// The `Host` header.
    authority: HeaderValue,
    /// The request target (origin form: path and query).
    path: Uri,
}

impl Target {
    fn parse(endpoint: &str) -> anyhow::Result<Self> {
        let uri: Uri = endpoint.parse().with_context(|| format!("invalid OTLP endpoint `{endpoint}`"))?;
        if uri.scheme_str() != Some("http") {
            anyhow::bail!("OTLP endpoint `{endpoint}`: only plain http is supported");
        }
        let authority = uri.authority().with_context(|| format!("OTLP endpoint `{endpoint}` has no host"))?;
        let port = authority
            .port_u16()
            .filter(|&port| port != 0)
            .with_context(|| format!("OTLP endpoint `{endpoint}` has no port"))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let header = HeaderValue::from_str(authority.as_str())
            .with_context(|| format!("OTLP endpoint `{endpoint}`: invalid host"))?;
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
        let path = Uri::from_parts(parts).with_context(|| format!("OTLP endpoint `{endpoint}`: invalid path"))?;
        Ok(Self { endpoint: endpoint.to_owned(), host, port, authority: header, path })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect to the collector: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with the collector failed: {e}"))?;
        // Drives the connection; ends when the collector closes it or the sender is dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The JSON of an `ExportTraceServiceRequest` up to its spans: one resource (the service)
/// with one instrumentation scope (Sluice).
fn request_head(service_name: &str) -> String {
    let mut head =
        String::from(r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"#);
    push_json_str(&mut head, service_name);
    head.push_str(r#"}}]},"scopeSpans":[{"scope":{"name":"sluice","version":""#);
    head.push_str(env!("CARGO_PKG_VERSION"));
    head.push_str(r#""},"spans":["#);
    head
}

/// A whole export request (OTLP's protobuf JSON mapping: ids in hex, 64-bit integers as
/// decimal strings).
fn encode(head: &str, spans: &[SpanRecord]) -> Bytes {
    let mut out = String::with_capacity(head.len() + REQUEST_TAIL.len() + spans.len() * 800);
    out.push_str(head);
    for (i, span) in spans.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_span(&mut out, span);
    }
    out.push_str(REQUEST_TAIL);
    Bytes::from(out)
}

/// One span object, named after the method as OpenTelemetry's HTTP conventions do when
/// no route template is known.
fn push_span(out: &mut String, span: &SpanRecord) {
    let trace = &span.trace;
    let _ = write!(out, r#"{{"traceId":"{}","spanId":"{}""#, trace.trace_id(), trace.span_id());
    if let Some(parent) = trace.parent_span_id() {
        let _ = write!(out, r#","parentSpanId":"{parent}""#);
    }
    out.push_str(r#","name":"#);
    push_json_str(out, span.method.as_str());
    let _ = write!(
        out,
        r#","kind":2,"startTimeUnixNano":"{}","endTimeUnixNano":"{}","attributes":["#,
        span.start_unix_nanos, span.end_unix_nanos
    );
    let mut attributes = Attributes { out: &mut *out, first: true };
    attributes.string("http.request.method", span.method.as_str());
    attributes.string("url.scheme", span.scheme);
    attributes.string("url.path", span.path.as_ref().map_or("/", |p| p.path()));
    if let Some(host) = &span.host {
        attributes.string("server.address", host);
    }
    attributes.plain("client.address", span.client.ip());
    attributes.string("network.protocol.version", protocol_version(span.version));
    if let Some(status) = span.status {
        attributes.int("http.response.status_code", u64::from(status));
    }
    if let Some(upstream) = span.upstream {
        attributes.plain("sluice.upstream", upstream);
    }
    attributes.int("sluice.retries", u64::from(span.retries));
    if let Some(kind) = span.error_kind {
        attributes.string("error.type", kind);
    }
    out.push(']');
    if span.is_error() {
        out.push_str(r#","status":{"code":2"#);
        if let Some(message) = &span.error_message {
            out.push_str(r#","message":"#);
            push_json_str(out, message);
        }
        out.push('}');
    }
    out.push('}');
}

/// Writes OTLP `KeyValue` objects, comma-separated.
struct Attributes<'a> {
    out: &'a mut String,
    first: bool,
}

impl Attributes<'_> {
    fn key(&mut self, key: &'static str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        let _ = write!(self.out, r#"{{"key":"{key}","value":{{"#);
    }

    fn string(&mut self, key: &'static str, value: &str) {
        self.key(key);
        self.out.push_str(r#""stringValue":"#);
        push_json_str(self.out, value);
        self.out.push_str("}}");
    }

    /// A string attribute whose text never needs escaping (addresses).
    fn plain(&mut self, key: &'static str, value: impl std::fmt::Display) {
        self.key(key);
        let _ = write!(self.out, r#""stringValue":"{value}"}}}}"#);
    }

    fn int(&mut self, key: &'static str, value: u64) {
        self.key(key);
        let _ = write!(self.out, r#""intValue":"{value}"}}}}"#);
    }
}

fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

#[cfg(test)]
#[path = "otlp_tests.rs"]
mod tests;
