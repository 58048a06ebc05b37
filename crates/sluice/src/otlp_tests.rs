use std::sync::atomic::AtomicUsize;

use http::StatusCode;
use tokio::net::TcpListener;

use super::*;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn span(traceparent: Option<&'static str>) -> SpanRecord {
    let header = traceparent.map(HeaderValue::from_static);
    SpanRecord {
        trace: TraceContext::from_header(header.as_ref()),
        start_unix_nanos: 1_700_000_000_123_456_789,
        end_unix_nanos: 1_700_000_000_223_456_789,
        method: Method::GET,
        scheme: "http",
        path: Some(PathAndQuery::from_static("/api/users?id=7")),
        host: Some("shop.example".to_owned()),
        client: "192.0.2.7:50000".parse().unwrap(),
        version: Version::HTTP_11,
        status: Some(200),
        upstream: Some("10.0.0.1:8080".parse().unwrap()),
        retries: 1,
        error_kind: None,
        error_message: None,
    }
}

fn json(spans: &[SpanRecord]) -> String {
    let body = encode(&request_head("sluice"), spans);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(well_formed(&text), "not JSON: {text}");
    text
}

fn settings(endpoint: String) -> TracingSettings {
    TracingSettings { endpoint, ..TracingSettings::new("") }
}

#[test]
fn ids_and_times_are_hex_and_decimal_strings() {
    let span = span(Some(TRACEPARENT));
    let own = span.trace.span_id().to_owned();
    let text = json(&[span]);
    for field in [
        r#"{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","#,
        &format!(r#""spanId":"{own}","#),
        r#""parentSpanId":"00f067aa0ba902b7","#,
        r#""name":"GET","kind":2,"#,
        r#""startTimeUnixNano":"1700000000123456789","endTimeUnixNano":"1700000000223456789""#,
    ] {
        assert!(text.contains(field), "{field} missing in {text}");
    }
}

#[test]
fn a_trace_started_here_has_no_parent() {
    let span = span(None);
    let (trace, own) = (span.trace.trace_id().to_owned(), span.trace.span_id().to_owned());
    let text = json(&[span]);
    assert!(text.contains(&format!(r#"{{"traceId":"{trace}","spanId":"{own}","name":"GET""#)), "{text}");
    assert!(!text.contains("parentSpanId"), "{text}");
}

#[test]
fn the_request_names_the_service_and_the_scope() {
    let text = json(&[span(None), span(None)]);
    assert!(text.starts_with(
        r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"sluice"}}]},"scopeSpans":[{"scope":{"name":"sluice","version":""#
    ));
    assert!(text.ends_with("}]}]}]}"), "{text}");
    assert_eq!(text.matches(r#"{"traceId":"#).count(), 2);
    assert!(well_formed(std::str::from_utf8(&encode(&request_head("x"), &[])).unwrap()));
}

#[test]
fn attributes_follow_the_http_conventions() {
    let text = json(&[span(None)]);
    for attribute in [
        r#"{"key":"http.request.method","value":{"stringValue":"GET"}}"#,
        r#"{"key":"url.scheme","value":{"stringValue":"http"}}"#,
        r#"{"key":"url.path","value":{"stringValue":"/api/users"}}"#,
        r#"{"key":"server.address","value":{"stringValue":"shop.example"}}"#,
        r#"{"key":"client.address","value":{"stringValue":"192.0.2.7"}}"#,
        r#"{"key":"network.protocol.version","value":{"stringValue":"1.1"}}"#,
        r#"{"key":"http.response.status_code","value":{"intValue":"200"}}"#,
        r#"{"key":"sluice.upstream","value":{"stringValue":"10.0.0.1:8080"}}"#,
        r#"{"key":"sluice.retries","value":{"intValue":"1"}}"#,
    ] {
        assert!(text.contains(attribute), "{attribute} missing in {text}");
    }
    assert!(!text.contains("id=7"), "the query string may hold secrets: {text}");
    assert!(!text.contains("error.type") && !text.contains("\"status\""), "{text}");
}

#[test]
fn strings_are_escaped() {
    let mut span = span(None);
    span.host = Some("a\"b\\c".to_owned());
    span.status = None;
    span.error_kind = Some("upstream_reset");
    span.error_message = Some("origin said \"no\"\nand left".to_owned());
    let body = encode(&request_head("edge \"proxy\"\t1"), &[span]);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(well_formed(&text), "{text}");
    assert!(text.contains(r#"{"stringValue":"edge \"proxy\"\t1"}"#), "{text}");
    assert!(text.contains(r#"{"stringValue":"a\"b\\c"}"#), "{text}");
    assert!(text.contains(r#""status":{"code":2,"message":"origin said \"no\"\nand left"}"#), "{text}");
}

#[test]
fn the_status_is_error_for_5xx_and_failures_but_not_for_client_errors() {
    let with = |status: Option<u16>, error: Option<&'static str>| {
        let mut span = span(None);
        span.status = status;
        span.error_kind = error;
        span.error_message = error.map(str::to_owned);
        span
    };
    assert!(with(Some(502), Some("connect_refused")).is_error());
    assert!(with(Some(500), None).is_error(), "an origin's 500 too");
    assert!(with(None, Some("client_gone")).is_error());
    assert!(with(Some(200), Some("upstream_reset")).is_error(), "the body broke after the head");
    assert!(!with(Some(404), Some("no_route")).is_error());
    assert!(!with(Some(200), None).is_error());
    assert!(!with(None, None).is_error());
    let text = json(&[with(Some(404), Some("no_route"))]);
    assert!(text.contains(r#"{"key":"error.type","value":{"stringValue":"no_route"}}"#), "{text}");
    assert!(!text.contains("\"status\""), "{text}");
    let text = json(&[with(Some(503), None)]);
    assert!(text.contains(r#"],"status":{"code":2}}"#), "{text}");
}

#[test]
fn times_are_nanoseconds_since_the_epoch() {
    assert_eq!(unix_nanos(UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789)), 1_700_000_000_123_456_789);
    assert_eq!(unix_nanos(UNIX_EPOCH - Duration::from_secs(1)), 0);
}

#[test]
fn protocol_versions() {
    assert_eq!(protocol_version(Version::HTTP_10), "1.0");
    assert_eq!(protocol_version(Version::HTTP_11), "1.1");
    assert_eq!(protocol_version(Version::HTTP_2), "2");
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let settings = TracingSettings { queue: 2, ..settings("http://127.0.0.1:4318/v1/traces".into()) };
    let (exporter, _task) = Exporter::start(&settings).unwrap();
    for _ in 0..5 {
        exporter.record(span(None));
    }
    assert_eq!(exporter.dropped(), 3);
    assert_eq!(exporter.exported(), 0);
}

#[test]
fn only_plain_http_endpoints_are_accepted() {
    assert!(Exporter::start(&settings("https://127.0.0.1:4318/v1/traces".into())).is_err());
    assert!(Exporter::start(&settings("http://127.0.0.1/v1/traces".into())).is_err());
    let target = Target::parse("http://[::1]:4318/v1/traces?tenant=a").unwrap();
    assert_eq!((target.host.as_str(), target.port), ("::1", 4318));
    assert_eq!(target.authority, "[::1]:4318");
    assert_eq!(target.path, "/v1/traces?tenant=a");
}

/// What the collector received in one request.
#[derive(Debug)]
struct Post {
    path: String,
    content_type: String,
    body: String,
}

/// An in-process OTLP/HTTP collector answering every POST with `status`.
struct Collector {
    addr: SocketAddr,
    posts: mpsc::UnboundedReceiver<Post>,
    connections: Arc<AtomicUsize>,
}

impl Collector {
    async fn start(status: StatusCode) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, posts) = mpsc::unbounded_channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let content_type =
                            req.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let body = String::from_utf8(body.to_vec()).unwrap();
                        let _ = tx.send(Post { path, content_type: content_type.unwrap_or_default(), body });
                        let mut answer = http::Response::new(Full::new(Bytes::from_static(b"{}")));
                        *answer.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(answer)
                    }
                });
                tokio::spawn(async move {
                    let io = TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Collector { addr, posts, connections }
    }

    fn settings(&self) -> TracingSettings {
        settings(format!("http://{}/v1/traces", self.addr))
    }

    async fn next(&mut self) -> Post {
        tokio::time::timeout(Duration::from_secs(10), self.posts.recv()).await.unwrap().unwrap()
    }
}

#[tokio::test]
async fn queued_spans_go_out_in_batches_when_shutting_down() {
    let mut collector = Collector::start(StatusCode::OK).await;
    let settings = TracingSettings { batch_size: 2, flush_interval: Duration::from_secs(3600), ..collector.settings() };
    let (exporter, task) = Exporter::start(&settings).unwrap();
    for _ in 0..5 {
        exporter.record(span(Some(TRACEPARENT)));
    }
    let (trigger, shutdown) = sluice_core::shutdown::channel();
    trigger.trigger();
    task.run(shutdown).await;
    let mut counts = Vec::new();
    for _ in 0..3 {
        let post = collector.next().await;
        assert_eq!(post.path, "/v1/traces");
        assert_eq!(post.content_type, "application/json");
        assert!(well_formed(&post.body), "{}", post.body);
        counts.push(post.body.matches(r#"{"traceId":"#).count());
    }
    assert_eq!(counts, [2, 2, 1]);
    assert_eq!(exporter.exported(), 5);
    assert_eq!(collector.connections.load(Ordering::SeqCst), 1, "one kept-alive connection");
    exporter.record(span(None));
    assert_eq!(exporter.dropped(), 1, "nothing is accepted once the task stopped");
}

#[tokio::test]
async fn the_flush_interval_sends_a_partial_batch() {
    let mut collector = Collector::start(StatusCode::OK).await;
    let settings = TracingSettings { flush_interval: Duration::from_millis(20), ..collector.settings() };
    let (exporter, task) = Exporter::start(&settings).unwrap();
    let (trigger, shutdown) = sluice_core::shutdown::channel();
    let running = tokio::spawn(task.run(shutdown));
    exporter.record(span(None));
    let post = collector.next().await;
    assert_eq!(post.body.matches(r#"{"traceId":"#).count(), 1);
    exporter.record(span(None));
    collector.next().await;
    trigger.trigger();
    running.await.unwrap();
    assert_eq!(exporter.exported(), 2);
}

#[tokio::test]
async fn a_refused_batch_is_counted_as_failed_and_ends_the_final_flush() {
    let mut collector = Collector::start(StatusCode::SERVICE_UNAVAILABLE).await;
    let (exporter, task) = Exporter::start(&TracingSettings { batch_size: 1, ..collector.settings() }).unwrap();
    for _ in 0..3 {
        exporter.record(span(None));
    }
    let (trigger, shutdown) = sluice_core::shutdown::channel();
    trigger.trigger();
    task.run(shutdown).await;
    collector.next().await;
    assert!(collector.posts.try_recv().is_err(), "no retry after the collector refused");
    assert_eq!((exporter.exported(), exporter.failed()), (0, 3));
}

#[test]
fn the_json_checker_rejects_broken_json() {
    assert!(well_formed(r#"{"a":[1,-2.5e3,"x\"y",true,null,{}],"b":{"c":"\u00e9"}}"#));
    for broken in [r#"{"a":}"#, r#"{"a":1,}"#, r#"["a" "b"]"#, "{\"a\":\"\n\"}", r#"{"a":"\q"}"#, r#"{"a":1}}"#] {
        assert!(!well_formed(broken), "{broken}");
    }
}

/// Whether `text` is exactly one well-formed JSON value (a small checker, so that no JSON
/// crate is needed for tests).
fn well_formed(text: &str) -> bool {
    let mut json = Json { s: text.as_bytes(), i: 0 };
    let ok = json.value();
    json.skip_space();
    ok && json.i == json.s.len()
}

struct Json<'a> {
    s: &'a [u8],
    i: usize,
}

impl Json<'_> {
    fn skip_space(&mut self) {
        while self.s.get(self.i).is_some_and(|b| b" \t\r\n".contains(b)) {
            self.i += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.skip_space();
        let found = self.s.get(self.i) == Some(&byte);
        if found {
            self.i += 1;
        }
        found
    }

    fn value(&mut self) -> bool {
        self.skip_space();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                self.sequence(b'}', |json| {
                    json.skip_space();
                    json.string() && json.eat(b':') && json.value()
                })
            }
            Some(b'[') => {
                self.i += 1;
                self.sequence(b']', Self::value)
            }
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                while self.s.get(self.i).is_some_and(|&b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
                    self.i += 1;
                }
                std::str::from_utf8(&self.s[start..self.i]).is_ok_and(|n| n.parse::<f64>().is_ok())
            }
            _ => ["true", "false", "null"].iter().any(|word| {
                let found = self.s[self.i..].starts_with(word.as_bytes());
                if found {
                    self.i += word.len();
                }
                found
            }),
        }
    }

    /// Items separated by commas up to `close` (the opening bracket is consumed).
    fn sequence(&mut self, close: u8, mut item: impl FnMut(&mut Self) -> bool) -> bool {
        if self.eat(close) {
            return true;
        }
        loop {
            if !item(self) {
                return false;
            }
            if self.eat(close) {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn string(&mut self) -> bool {
        if self.s.get(self.i) != Some(&b'"') {
            return false;
        }
        self.i += 1;
        while let Some(&b) = self.s.get(self.i) {
            self.i += 1;
            match b {
                b'"' => return true,
                b'\\' => match self.s.get(self.i) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                    Some(b'u') => {
                        let hex = self.s.get(self.i + 1..self.i + 5);
                        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                            return false;
                        }
                        self.i += 5;
                    }
                    _ => return false,
                },
                0..=0x1f => return false,
                _ => {}
            }
        }
        false
    }
}
