//! Response bodies streamed from an origin.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use sluice_core::deadline::Deadline;
use sluice_core::BoxError;
use sluice_error::{Error, ErrorKind};
use tokio::time::Instant;

use crate::backend::Outstanding;
use crate::backend::H1;
use crate::Backend;

/// An HTTP/1 connection being driven by the body that reads from it.
pub(crate) struct H1Driver {
    pub(crate) h1: Box<H1>,
    pub(crate) backend: Arc<Backend>,
}

/// A response body from an origin.
///
/// For HTTP/1 it drives the connection it comes from (reading the socket happens while
/// this body is polled, on the task that sends the bytes downstream), and returns the
/// connection to its backend's pool once the body has ended cleanly. Dropping it early
/// closes the connection. A pause longer than the read-idle timeout ends the body with an
/// `UpstreamReadTimeout` error.
pub struct UpstreamBody {
    incoming: Incoming,
    driver: Option<H1Driver>,
    /// `None`: no limit (a long-lived stream).
    read_idle: Option<Duration>,
    /// For bodies without a driver (HTTP/2); HTTP/1 uses its connection's deadline.
    deadline: Deadline,
    addr: SocketAddr,
    done: bool,
    /// Counts the request as outstanding on its backend until the body ends.
    outstanding: Option<Outstanding>,
    /// Record a success for passive health checking when the body completes.
    success_at_end: bool,
    /// Largest trailer block accepted (`BackendSettings::max_header_size`).
    max_trailers: usize,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").field("addr", &self.addr).field("done", &self.done).finish()
    }
}

impl UpstreamBody {
    pub(crate) fn new(
        incoming: Incoming,
        driver: Option<H1Driver>,
        read_idle: Option<Duration>,
        addr: SocketAddr,
        outstanding: Option<Outstanding>,
        max_trailers: usize,
    ) -> Self {
        let mut body = Self {
            incoming,
            driver,
            read_idle,
            deadline: Deadline::default(),
            addr,
            done: false,
            outstanding,
            success_at_end: false,
            max_trailers,
        };
        if body.incoming.is_end_stream() {
            body.finish(None);
        }
        body
    }

    /// The origin's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn deadline_mut(&mut self) -> &mut Deadline {
        match self.driver.as_mut() {
            Some(d) => &mut d.h1.deadline,
            None => &mut self.deadline,
        }
    }

    /// Records a success for the backend once the body is complete (the caller handles
    /// bodies that are already complete).
    pub(crate) fn record_success_at_end(&mut self) {
        self.success_at_end = true;
    }

    /// A body cut short by the origin (reset or read timeout) counts as a failure of its
    /// backend for passive health checking, like one before the response head.
    fn body_failed(&mut self) {
        if let Some(outstanding) = self.outstanding.take() {
            outstanding.backend().record(crate::health::Outcome::Failure);
        }
    }

    fn finish(&mut self, cx: Option<&mut Context<'_>>) {
        self.done = true;
        if let Some(o) = self.outstanding.take() {
            if std::mem::take(&mut self.success_at_end) {
                o.backend().record(crate::health::Outcome::Success);
            }
        }
        let Some(mut d) = self.driver.take() else {
            return;
        };
        d.h1.deadline.clear();
        // One more turn lets the connection settle into "idle, ready for the next request".
        let ready = match cx {
            Some(cx) => d.h1.ready_now(cx),
            None => d.h1.sender.is_ready(),
        };
        if ready {
            d.backend.put_idle(d.h1);
        } else if !d.h1.sender.is_closed() {
            // Not ready yet (e.g. the request body is still being written): let it finish on
            // its own task and pool it afterwards.
            tokio::spawn(async move {
                let H1Driver { mut h1, backend } = d;
                let settled =
                    tokio::time::timeout(Duration::from_secs(1), std::future::poll_fn(|cx| h1.poll_settled(cx))).await;
                if settled == Ok(true) {
                    backend.put_idle(h1);
                }
            });
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(d) = this.driver.as_mut() {
            if Pin::new(&mut d.h1.conn).poll(cx).is_ready() {
                this.driver = None;
            }
        }
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.deadline_mut().clear();
                if let Some(size) = frame.trailers_ref().map(crate::backend::header_list_size) {
                    if size > this.max_trailers {
                        // Failed visibly: passing a block the HTTP/2 client may have cut
                        // would end a gRPC call "OK" without the fields that followed.
                        this.driver = None;
                        this.done = true;
                        this.body_failed();
                        let error = crate::backend::oversized(this.addr, this.max_trailers, "trailers", size);
                        return Poll::Ready(Some(Err(error)));
                    }
                }
                if this.incoming.is_end_stream() {
                    this.finish(Some(cx));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finish(Some(cx));
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.driver = None;
                this.done = true;
                this.body_failed();
                let kind = if e.is_timeout() { ErrorKind::UpstreamReadTimeout } else { ErrorKind::UpstreamReset };
                Poll::Ready(Some(Err(Error::because(kind, format!("reading the response body from {}", this.addr), e))))
            }
            Poll::Pending => {
                let Some(read_idle) = this.read_idle else { return Poll::Pending };
                let deadline = this.deadline_mut();
                if deadline.get().is_none() {
                    deadline.set(Instant::now() + read_idle);
                }
                if deadline.poll_expired(cx).is_ready() {
                    this.driver = None;
                    this.done = true;
                    this.body_failed();
                    return Poll::Ready(Some(Err(Error::explain(
                        ErrorKind::UpstreamReadTimeout,
                        format!("{} sent nothing for {read_idle:?}", this.addr),
                    ))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            return SizeHint::with_exact(0);
        }
        self.incoming.size_hint()
    }
}
