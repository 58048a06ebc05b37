//! The phase trait: the hooks of the request path.
//!
//! A [`Proxy`] implementation is the whole behaviour of a proxy built on Sluice. The
//! engine calls its phases in a straight line (see `docs/architecture.md` for the
//! chart); every method but [`Proxy::upstream_peer`] has a default that does nothing,
//! so an implementation overrides only what it needs.
//!
//! Phases are `async` where a filter may need I/O (an auth service, Redis, a cache
//! lookup) and plain functions where they run per body chunk or after the fact. Async
//! phases return `impl Future + Send` so implementations can be written as `async fn` and
//! are monomorphised: no boxing per call.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{request, response, Response};
use sluice_core::Body;
use sluice_error::{Error, Result};
use sluice_upstream::Backend;

use crate::Session;

/// What to do after [`Proxy::request_filter`].
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // returned once per request, never stored
pub enum Flow {
    /// Go on: pick an upstream and forward the request.
    Continue,
    /// Answer now with this response (respond, redirect, a cache hit, a rate limit ...).
    /// It still passes through [`Proxy::response_filter`].
    Respond(Response<Body>),
}

/// The hooks of the request path. `Ctx` is per-request state shared by all phases.
pub trait Proxy: Send + Sync + 'static {
    /// Per-request state, created by [`Proxy::new_ctx`] and handed to every phase.
    type Ctx: Send + 'static;

    /// Creates the per-request state.
    fn new_ctx(&self) -> Self::Ctx;

    /// First phase, once the request head is in: inspect or change the request, or
    /// answer it directly with [`Flow::Respond`].
    fn request_filter(&self, session: &mut Session, ctx: &mut Self::Ctx) -> impl Future<Output = Result<Flow>> + Send {
        let _ = (session, ctx);
        async { Ok(Flow::Continue) }
    }

    /// Chooses the server to forward to. Called again for a retry, after a connect
    /// failure: [`Session::retries`] counts them and [`Session::failed_peer`] says which
    /// server just failed, so the implementation can pick another one.
    fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::Ctx,
    ) -> impl Future<Output = Result<Arc<Backend>>> + Send;

    /// The retry policy for this request, asked once after [`Proxy::request_filter`].
    /// `None` (the default) keeps the engine's minimal policy: one retry after a failed
    /// connect, or after a pooled connection turned out to be closed.
    fn retry_policy(&self, _session: &Session, _ctx: &Self::Ctx) -> Option<std::sync::Arc<crate::retry::RetryPolicy>> {
        None
    }

    /// Changes the request about to be sent upstream (already cleaned of hop-by-hop
    /// headers and carrying the forwarding headers): rewrite the path, set headers ...
    fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut request::Parts,
        ctx: &mut Self::Ctx,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (session, upstream_request, ctx);
        async { Ok(()) }
    }

    /// Changes the response head received from upstream, before [`Proxy::response_filter`].
    fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut response::Parts,
        ctx: &mut Self::Ctx,
    ) -> Result<()> {
        let _ = (session, upstream_response, ctx);
        Ok(())
    }

    /// Changes any response head about to go downstream: proxied or answered by
    /// [`Flow::Respond`] (not error pages, which come from [`Proxy::error_response`]).
    fn response_filter(
        &self,
        session: &mut Session,
        response: &mut response::Parts,
        ctx: &mut Self::Ctx,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (session, response, ctx);
        async { Ok(()) }
    }

    /// Sees (and may replace or drop) each chunk of the response body on its way
    /// downstream. `end_of_stream` is true for the last call. A filter that changes the
    /// body length must remove `Content-Length` in [`Proxy::response_filter`].
    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::Ctx,
    ) -> Result<()> {
        let _ = (session, body, end_of_stream, ctx);
        Ok(())
    }

    /// Builds the response for a failure before a response head was sent. The default is
    /// [`crate::error_response`], the one place errors become statuses.
    fn error_response(&self, session: &Session, error: &Error, ctx: &mut Self::Ctx) -> Response<Body> {
        let _ = (session, ctx);
        crate::error_response(error)
    }

    /// Last phase, exactly once per request, after the response has been sent (or the
    /// request failed or the client went away). `error` says why it did not complete.
    fn logging(&self, session: &Session, error: Option<&Error>, ctx: &mut Self::Ctx) {
        let _ = (session, error, ctx);
    }
}
