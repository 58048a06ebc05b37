//! Span export over OTLP/HTTP, end to end: a proxied request becomes a span at an
//! in-process collector, in the client's trace and as the parent of the origin's span.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use http::{Request, Response};
use http_body_util::BodyExt;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

/// Export request bodies received by the collector, in order.
type Bodies = Arc<Mutex<Vec<String>>>;

/// An OTLP/HTTP collector: an origin that keeps every request body.
fn collector_handler(bodies: Bodies) -> Handler {
    Arc::new(move |req: Request<hyper::body::Incoming>| {
        let bodies = bodies.clone();
        Box::pin(async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            bodies.lock().unwrap().push(String::from_utf8(body.to_vec()).unwrap());
            Response::new(full("{}"))
        })
    })
}

/// Every span received so far, as the text of its JSON object.
fn spans(bodies: &Bodies) -> Vec<String> {
    let bodies = bodies.lock().unwrap();
    bodies.iter().flat_map(|b| b.split(r#"{"traceId":"#).skip(1).map(|s| format!(r#"{{"traceId":{s}"#))).collect()
}

/// The string value of `"key":"..."` in a span's text.
fn field<'a>(span: &'a str, key: &str) -> Option<&'a str> {
    let start = span.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = span[start..].find('"')?;
    Some(&span[start..start + len])
}

/// The exported span of a trace.
fn span_of(bodies: &Bodies, trace_id: &str) -> Option<String> {
    spans(bodies).into_iter().find(|s| field(s, "traceId") == Some(trace_id))
}

/// GET / with the given extra headers; returns the `traceparent` the origin received.
async fn traced_get(proxy: SocketAddr, origin: &Origin, headers: &[(&str, &str)]) -> String {
    let mut client = h1_client(proxy).await;
    let mut req = Request::get("/traced").header("host", "otlp.test");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = client.send_request(req.body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    origin.last_head().headers["traceparent"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_in_the_clients_trace_and_parent_the_origins_span() {
    let bodies = Bodies::default();
    let collector = Origin::start(false, collector_handler(bodies.clone())).await;
    let origin = Origin::named("traced").await;
    let server = format!(
        r#"server {{
    access-log "off"
    tracing {{
        otlp "http://{}/v1/traces"
        flush-interval "100ms"
    }}
}}"#,
        collector.addr
    );
    let config = simple_config(&[origin.addr], "").replace("server { access-log \"off\" }", &server);
    let proxy = Proxy::start(&config).await;

    // A client in a sampled trace: the proxy's span continues it.
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let upstream = traced_get(proxy.addr(), &origin, &[("traceparent", traceparent.as_str())]).await;
    assert!(upstream.starts_with(&format!("00-{TRACE_ID}-")) && upstream.ends_with("-01"), "{upstream}");
    until("the continued trace's span is exported", || span_of(&bodies, TRACE_ID).is_some()).await;
    let span = span_of(&bodies, TRACE_ID).unwrap();
    assert_eq!(field(&span, "parentSpanId"), Some(CLIENT_SPAN), "{span}");
    assert_eq!(field(&span, "spanId"), Some(&upstream[36..52]), "the origin's parent is the proxy's span: {span}");
    assert!(span.contains(r#""kind":2"#), "{span}");
    assert!(span.contains(r#"{"key":"url.path","value":{"stringValue":"/traced"}}"#), "{span}");
    assert!(span.contains(r#"{"key":"http.response.status_code","value":{"intValue":"200"}}"#), "{span}");
    assert!(span.contains(&format!(r#"{{"key":"sluice.upstream","value":{{"stringValue":"{}"}}}}"#, origin.addr)));
    let export = collector.last_head();
    assert_eq!(export.method, http::Method::POST);
    assert_eq!(export.uri.path(), "/v1/traces");
    assert_eq!(export.headers["content-type"], "application/json");
    assert!(bodies.lock().unwrap()[0].contains(r#"{"key":"service.name","value":{"stringValue":"sluice"}}"#));

    // No traceparent: a new trace starts here, and its span has no parent.
    let upstream = traced_get(proxy.addr(), &origin, &[]).await;
    let (trace_id, proxy_span) = (&upstream[3..35], &upstream[36..52]);
    assert_ne!(trace_id, TRACE_ID);
    until("the new trace's span is exported", || span_of(&bodies, trace_id).is_some()).await;
    let span = span_of(&bodies, trace_id).unwrap();
    assert_eq!(field(&span, "spanId"), Some(proxy_span), "{span}");
    assert_eq!(field(&span, "parentSpanId"), None, "{span}");

    // A trace the client did not sample is propagated but not exported: the sampled
    // request after it is, so it would have been queued (and sent) before.
    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    let upstream = traced_get(proxy.addr(), &origin, &[("traceparent", unsampled)]).await;
    assert!(upstream.ends_with("-00"), "{upstream}");
    let last = "00-33333333333333333333333333333333-4444444444444444-01";
    traced_get(proxy.addr(), &origin, &[("traceparent", last)]).await;
    until("the last span is exported", || span_of(&bodies, "33333333333333333333333333333333").is_some()).await;
    assert!(span_of(&bodies, "11111111111111111111111111111111").is_none());

    proxy.shutdown().await;
}
