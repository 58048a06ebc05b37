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
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;

use crate::BoxError;

/// Limits on a request body as it streams (nginx's `client_max_body_size` and
/// `client_body_timeout`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyLimits {
    /// Most bytes; more fail the body with [`BodyFailure::TooLarge`].
    pub max: Option<u64>,
    /// Longest wait for the next chunk; longer fails it with [`BodyFailure::Timeout`].
    pub idle: Option<Duration>,
}

/// Why a body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyFailure {
    /// It went past [`BodyLimits::max`].
    #[error("the request body is larger than the limit")]
    TooLarge,
    /// Nothing arrived for [`BodyLimits::idle`].
    #[error("the client stopped sending the request body (body read timeout)")]
    Timeout,
    /// The stream failed (bad framing, reset).
    #[error("reading the request body failed")]
    Invalid,
}

/// Byte counter and "touched" flag shared between a body and whoever sent it.
#[derive(Debug, Default)]
pub struct BodyStats {
    bytes: AtomicU64,
    polled: AtomicBool,
    finished: AtomicBool,
    errored: AtomicBool,
    failure: std::sync::atomic::AtomicU8,
    /// Woken when the body finished or failed (see [`BodyStats::poll_done`]).
    done: atomic_waker::AtomicWaker,
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

    /// Why reading the body failed, once it failed.
    pub fn failure(&self) -> Option<BodyFailure> {
        match self.failure.load(Ordering::Relaxed) {
            1 => Some(BodyFailure::TooLarge),
            2 => Some(BodyFailure::Timeout),
            3 => Some(BodyFailure::Invalid),
            _ => None,
        }
    }

    /// Ready once the body has been read to its end or failed: the upstream's first-byte
    /// timer starts then, not while a slow client is still uploading.
    pub fn poll_done(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.finished() || self.errored() {
            return Poll::Ready(());
        }
        self.done.register(cx.waker());
        if self.finished() || self.errored() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
        self.done.wake();
    }

    fn fail(&self, why: BodyFailure) {
        self.errored.store(true, Ordering::Relaxed);
        let code = match why {
            BodyFailure::TooLarge => 1,
            BodyFailure::Timeout => 2,
            BodyFailure::Invalid => 3,
        };
        let _ = self.failure.compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
        self.done.wake();
    }
}

/// The state of [`BodyLimits`] on a streaming body.
#[derive(Debug)]
struct Limiter {
    limits: BodyLimits,
    seen: u64,
    deadline: crate::deadline::Deadline,
    waiting: bool,
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
    limiter: Option<Box<Limiter>>,
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
        Self { kind: Kind::Empty, stats: None, limiter: None }
    }

    /// A fixed body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Self::empty();
        }
        Self { kind: Kind::Full(Some(bytes)), stats: None, limiter: None }
    }

    /// A body streamed from a hyper connection.
    pub fn incoming(incoming: Incoming) -> Self {
        Self { kind: Kind::Incoming(incoming, None), stats: None, limiter: None }
    }

    /// A body streamed from a hyper connection whose first frame was already read.
    pub fn incoming_after(first: Frame<Bytes>, rest: Incoming) -> Self {
        Self { kind: Kind::Incoming(rest, Some(first)), stats: None, limiter: None }
    }

    /// Any other body.
    pub fn boxed<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        Self { kind: Kind::Boxed(body.map_err(Into::into).boxed_unsync()), stats: None, limiter: None }
    }

    /// Attaches shared statistics.
    pub fn with_stats(mut self, stats: Arc<BodyStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// The shared statistics, if attached.
    pub fn stats(&self) -> Option<&Arc<BodyStats>> {
        self.stats.as_ref()
    }

    /// Enforces `limits` while the body streams (failures are recorded in the stats).
    pub fn with_limits(mut self, limits: BodyLimits) -> Self {
        if limits != BodyLimits::default() {
            self.limiter = Some(Box::new(Limiter { limits, seen: 0, deadline: Default::default(), waiting: false }));
        }
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
        let polled = match this.limiter.as_deref_mut() {
            Some(limiter) => limit(limiter, polled, cx),
            None => polled,
        };
        if let Some(stats) = &this.stats {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    // A body of known length is not polled again after its last frame.
                    if http_body::Body::is_end_stream(&*this) {
                        stats.finish();
                    }
                }
                Poll::Ready(None) => stats.finish(),
                Poll::Ready(Some(Err(e))) => {
                    stats.fail(e.downcast_ref::<BodyFailure>().copied().unwrap_or(BodyFailure::Invalid))
                }
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

/// Applies the size limit to a frame and the idle timeout to a wait.
fn limit(
    limiter: &mut Limiter,
    polled: Poll<Option<Result<Frame<Bytes>, BoxError>>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    match polled {
        Poll::Pending => {
            let Some(idle) = limiter.limits.idle else { return Poll::Pending };
            if !limiter.waiting {
                limiter.waiting = true;
                limiter.deadline.set(tokio::time::Instant::now() + idle);
            }
            match limiter.deadline.poll_expired(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyFailure::Timeout)))),
                Poll::Pending => Poll::Pending,
            }
        }
        Poll::Ready(Some(Ok(frame))) => {
            limiter.waiting = false;
            if let (Some(max), Some(data)) = (limiter.limits.max, frame.data_ref()) {
                limiter.seen += data.len() as u64;
                if limiter.seen > max {
                    return Poll::Ready(Some(Err(Box::new(BodyFailure::TooLarge))));
                }
            }
            Poll::Ready(Some(Ok(frame)))
        }
        other => {
            limiter.waiting = false;
            other
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

#[cfg(test)]
mod limit_tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_body_over_the_size_limit_fails_as_too_large() {
        let stats = Arc::new(BodyStats::default());
        let body =
            Body::full(vec![0u8; 100]).with_stats(stats.clone()).with_limits(BodyLimits { max: Some(99), idle: None });
        assert!(body.collect().await.is_err());
        assert_eq!(stats.failure(), Some(BodyFailure::TooLarge));
        let ok = Body::full(vec![0u8; 100]).with_limits(BodyLimits { max: Some(100), idle: None });
        assert_eq!(ok.collect().await.unwrap().to_bytes().len(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_fails_as_timed_out() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let stream = ReceiverBody(rx);
        let stats = Arc::new(BodyStats::default());
        let body = Body::boxed(stream)
            .with_stats(stats.clone())
            .with_limits(BodyLimits { max: None, idle: Some(Duration::from_secs(5)) });
        let sender = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).await;
            }
            // Then stall for longer than the limit, keeping the sender alive.
            tokio::time::sleep(Duration::from_secs(60)).await;
            tx.closed().await;
        });
        let started = tokio::time::Instant::now();
        assert!(body.collect().await.is_err());
        assert_eq!(stats.failure(), Some(BodyFailure::Timeout));
        assert_eq!(stats.bytes(), 3, "slow but steady chunks are fine");
        assert!(started.elapsed() >= Duration::from_secs(17));
        sender.abort();
    }

    struct ReceiverBody(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>);

    impl http_body::Body for ReceiverBody {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0.poll_recv(cx)
        }
    }
}
