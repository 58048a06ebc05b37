//! The one body type Sluice hands to hyper, on both sides.
//!
//! A [`Body`] is empty, a fixed buffer, a stream from another hyper connection (the
//! zero-copy case: frames are passed on as the same `Bytes`), or any boxed body (for
//! filters that transform content). It can carry [`BodyStats`], shared with the request
//! path, which counts the bytes that went through and records whether hyper has started
//! reading it (a request whose body was never read can safely be retried).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;

use crate::BoxError;

/// Byte counter and "touched" flag shared between a body and whoever sent it.
#[derive(Debug, Default)]
pub struct BodyStats {
    bytes: AtomicU64,
    polled: AtomicBool,
    finished: AtomicBool,
    errored: AtomicBool,
}

impl BodyStats {
    /// Data bytes that went through so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the body has been read at all.
    pub fn polled(&self) -> bool {
        self.polled.load(Ordering::Relaxed)
    }

    /// Whether reading the body failed (e.g. the client sent invalid chunked framing).
    pub fn errored(&self) -> bool {
        self.errored.load(Ordering::Relaxed)
    }

    /// Whether the body reached its end.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    /// A stream from a hyper connection, with a first frame already read from it.
    Incoming(Incoming, Option<Frame<Bytes>>),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

/// A request or response body.
pub struct Body {
    kind: Kind,
    stats: Option<Arc<BodyStats>>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Full(_) => "full",
            Kind::Incoming(..) => "incoming",
            Kind::Boxed(_) => "boxed",
        };
        f.debug_struct("Body").field("kind", &kind).finish()
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl Body {
    /// No body.
    pub fn empty() -> Self {
        Self { kind: Kind::Empty, stats: None }
    }

    /// A fixed body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Self::empty();
        }
        Self { kind: Kind::Full(Some(bytes)), stats: None }
    }

    /// A body streamed from a hyper connection.
    pub fn incoming(incoming: Incoming) -> Self {
        Self { kind: Kind::Incoming(incoming, None), stats: None }
    }

    /// A body streamed from a hyper connection whose first frame was already read.
    pub fn incoming_after(first: Frame<Bytes>, rest: Incoming) -> Self {
        Self { kind: Kind::Incoming(rest, Some(first)), stats: None }
    }

    /// Any other body.
    pub fn boxed<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        Self { kind: Kind::Boxed(body.map_err(Into::into).boxed_unsync()), stats: None }
    }

    /// Attaches shared statistics.
    pub fn with_stats(mut self, stats: Arc<BodyStats>) -> Self {
        self.stats = Some(stats);
        self
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(stats) = &this.stats {
            stats.polled.store(true, Ordering::Relaxed);
        }
        let polled = match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Incoming(_, first @ Some(_)) => Poll::Ready(first.take().map(Ok)),
            Kind::Incoming(body, None) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Kind::Boxed(body) => Pin::new(body).poll_frame(cx),
        };
        if let Some(stats) = &this.stats {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                }
                Poll::Ready(None) => stats.finished.store(true, Ordering::Relaxed),
                Poll::Ready(Some(Err(_))) => stats.errored.store(true, Ordering::Relaxed),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Incoming(b, first) => first.is_none() && b.is_end_stream(),
            Kind::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Incoming(b, first) => {
                let pending = first.as_ref().and_then(|f| f.data_ref()).map_or(0, |d| d.len() as u64);
                let mut hint = b.size_hint();
                match hint.exact() {
                    Some(n) => hint.set_exact(n + pending),
                    None => hint.set_lower(hint.lower() + pending),
                }
                hint
            }
            Kind::Boxed(b) => b.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn full_body_counts_bytes_and_finishes() {
        let stats = Arc::new(BodyStats::default());
        let body = Body::full("hello").with_stats(stats.clone());
        assert_eq!(body.size_hint().exact(), Some(5));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");
        assert_eq!(stats.bytes(), 5);
        assert!(stats.polled());
        assert!(stats.finished());
    }
}
