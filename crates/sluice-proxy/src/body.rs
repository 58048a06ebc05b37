//! The response body sent downstream: runs the body filter, counts bytes, and calls the
//! logging phase exactly once, when the body ends, fails, or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use sluice_core::{Body, BoxError};
use sluice_error::{Error, ErrorKind};
use sluice_upstream::UpstreamBody;

use crate::{Proxy, Session};

enum Inner {
    Upstream(UpstreamBody),
    Local(Body),
}

/// What the body needs to finish the request: the proxy, the session and the context.
pub(crate) struct Finish<P: Proxy> {
    pub(crate) proxy: Arc<P>,
    pub(crate) session: Session,
    pub(crate) ctx: P::Ctx,
    pub(crate) error: Option<Box<Error>>,
}

/// A response body on its way to the client.
pub struct ProxyBody<P: Proxy> {
    inner: Inner,
    finish: Option<Box<Finish<P>>>,
    /// The upstream body failed: the error is held back for one turn (see `poll_frame`).
    failed: Option<String>,
    /// The body ended early with trailers of its own (a failed gRPC call).
    ended: bool,
}

impl<P: Proxy> ProxyBody<P> {
    pub(crate) fn upstream(body: UpstreamBody, finish: Box<Finish<P>>) -> Self {
        Self { inner: Inner::Upstream(body), finish: Some(finish), failed: None, ended: false }
    }

    /// An empty body with nothing to log (the engine's fallback that cannot happen).
    pub(crate) fn empty() -> Self {
        Self { inner: Inner::Local(Body::empty()), finish: None, failed: None, ended: false }
    }

    pub(crate) fn local(body: Body, finish: Box<Finish<P>>) -> Self {
        Self { inner: Inner::Local(body), finish: Some(finish), failed: None, ended: false }
    }

    fn log(&mut self, error: Option<Box<Error>>) {
        if let Some(mut f) = self.finish.take() {
            let error = error.or(f.error.take());
            f.proxy.logging(&f.session, error.as_deref(), &mut f.ctx);
        }
    }
}

impl<P: Proxy> http_body::Body for ProxyBody<P> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(msg) = this.failed.take() {
            return Poll::Ready(Some(Err(msg.into())));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let polled = match &mut this.inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
            Inner::Local(b) => Pin::new(b).poll_frame(cx),
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                let end = this.is_end_stream();
                let frame = match frame.into_data() {
                    Ok(data) => {
                        let Some(f) = this.finish.as_deref_mut() else {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        };
                        let mut chunk = Some(data);
                        if let Err(e) = f.proxy.response_body_filter(&mut f.session, &mut chunk, end, &mut f.ctx) {
                            let msg = e.to_string();
                            this.log(Some(e));
                            return Poll::Ready(Some(Err(msg.into())));
                        }
                        let chunk = chunk.unwrap_or_default();
                        f.session.bytes_out += chunk.len() as u64;
                        Frame::data(chunk)
                    }
                    Err(frame) => frame,
                };
                if end {
                    this.log(None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                if let Some(f) = this.finish.as_deref_mut() {
                    let mut chunk = None;
                    if let Err(e) = f.proxy.response_body_filter(&mut f.session, &mut chunk, true, &mut f.ctx) {
                        let msg = e.to_string();
                        this.log(Some(e));
                        return Poll::Ready(Some(Err(msg.into())));
                    }
                    if let Some(data) = chunk.filter(|c| !c.is_empty()) {
                        f.session.bytes_out += data.len() as u64;
                        this.log(None);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                this.log(None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                let error = match e.downcast::<Error>() {
                    Ok(e) => e,
                    Err(e) => Error::because(ErrorKind::UpstreamReset, "streaming the response body", e),
                };
                let msg = error.to_string();
                let kind = error.kind();
                if let Some(trailers) = this.finish.as_deref().and_then(|f| grpc_failure(&f.session, kind, &msg)) {
                    // A gRPC call whose origin went away mid-stream ends with the status a
                    // client talking to the origin directly would see (UNAVAILABLE), not a
                    // stream reset that gRPC reads as INTERNAL.
                    this.log(Some(error));
                    this.ended = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                this.log(Some(error));
                // hyper drops its write buffer when a body fails: the head and the bytes
                // that did arrive would be lost and the client would see an empty reply.
                // Pending once lets the connection flush them first (hyper flushes while
                // a body is pending); the error follows on the next poll, which closes
                // the connection early, so the client sees a truncated response.
                this.failed = Some(msg);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.ended {
            return true;
        }
        // A rewritten body may still produce bytes at the end (a finished compression
        // stream, a cached body replacing an empty one): poll until the filter saw the end.
        if self.finish.as_ref().is_some_and(|f| f.session.body_rewritten) {
            return false;
        }
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Local(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.finish.as_ref().is_some_and(|f| f.session.body_rewritten) {
            return SizeHint::default();
        }
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Local(b) => b.size_hint(),
        }
    }
}

/// The trailers that end a gRPC call over HTTP/2 whose upstream body failed: `grpc-status`
/// 14 (UNAVAILABLE) when the origin went away or timed out, 13 (INTERNAL) when it sent
/// something the proxy refused (trailers over `max-header-size`); `None` for anything
/// that is not gRPC over HTTP/2.
fn grpc_failure(session: &Session, kind: ErrorKind, why: &str) -> Option<http::HeaderMap> {
    if !crate::grpc::is_grpc(&session.req.headers) || session.req.version != http::Version::HTTP_2 {
        return None;
    }
    let mut trailers = http::HeaderMap::with_capacity(2);
    let (status, what) = match kind {
        ErrorKind::UpstreamProtocol => ("13", "upstream response refused"),
        _ => ("14", "upstream went away"),
    };
    trailers.insert("grpc-status", http::HeaderValue::from_static(status));
    let message: String = format!("{what}: {why}")
        .chars()
        .map(|c| if (c.is_ascii_graphic() && c != '%') || c == ' ' { c } else { '?' })
        .take(200)
        .collect();
    if let Ok(v) = http::HeaderValue::try_from(message) {
        trailers.insert("grpc-message", v);
    }
    Some(trailers)
}

impl<P: Proxy> Drop for ProxyBody<P> {
    fn drop(&mut self) {
        let Some(f) = self.finish.as_deref() else {
            return;
        };
        // Bodies hyper never reads (HEAD, 204, 304) or that ended with their last frame
        // complete normally; anything else means the client went away mid-response.
        let bodiless = f.session.req.method == Method::HEAD
            || f.session
                .status
                .is_some_and(|s| s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED || s.is_informational());
        let error = if bodiless || self.is_end_stream() {
            None
        } else {
            Some(Error::explain(ErrorKind::ClientGone, "client closed the connection before the response was sent"))
        };
        self.log(error);
    }
}
