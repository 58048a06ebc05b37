//! The one error type of Sluice.
//!
//! Every library crate returns [`Result`]. An [`Error`] carries what the proxy must decide
//! on: what went wrong ([`ErrorKind`]), on which [`Side`] of the proxy, whether retrying
//! the request on another server is safe, a human context string, and the cause.
//! The mapping from an error to an HTTP response lives in exactly one place
//! (`sluice_proxy::error_response`).

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

/// A boxed error: keeps `Result<T>` one pointer wide on the hot path.
pub type Result<T, E = Box<Error>> = std::result::Result<T, E>;

/// A cause attached to an [`Error`].
pub type Cause = Box<dyn StdError + Send + Sync + 'static>;

/// Which side of the proxy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client connection (downstream).
    Downstream,
    /// The origin connection (upstream).
    Upstream,
    /// The proxy itself (configuration, a filter, a bug).
    Internal,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is malformed or violates framing rules.
    InvalidRequest,
    /// The request head is larger than allowed.
    RequestHeaderTooLarge,
    /// The request target (path and query) is longer than allowed.
    UriTooLong,
    /// The request body is larger than allowed.
    RequestBodyTooLarge,
    /// The request is refused by an access rule (address not allowed).
    Forbidden,
    /// The request lacks valid credentials.
    Unauthorized,
    /// A limit on requests in flight refused the request.
    Overloaded,
    /// No site or route matched the request.
    NoRoute,
    /// The client went away or reset the stream.
    ClientGone,
    /// The client was too slow.
    ClientTimeout,
    /// Connecting to the upstream server was refused.
    ConnectRefused,
    /// Connecting to the upstream server timed out.
    ConnectTimeout,
    /// Connecting to the upstream server failed otherwise.
    ConnectFailed,
    /// The TLS handshake with the upstream server failed: untrusted or mismatched
    /// certificate, no common protocol version or cipher, ALPN refused.
    UpstreamTls,
    /// The upstream server did not send a response head in time.
    UpstreamFirstByteTimeout,
    /// The upstream server paused too long while sending the body.
    UpstreamReadTimeout,
    /// The upstream connection closed or reset before the response was complete.
    UpstreamReset,
    /// The upstream server sent something that is not valid HTTP.
    UpstreamProtocol,
    /// No server is available in the selected upstream group.
    NoUpstream,
    /// A circuit breaker of the upstream group refused the request (too many connections,
    /// waiting requests or requests in flight).
    UpstreamOverloaded,
    /// An I/O error outside the categories above.
    Io,
    /// A configuration problem found at run time.
    Config,
    /// A bug or an unexpected internal state.
    Internal,
    /// A user-defined failure with its own HTTP status.
    Custom(u16),
}

impl ErrorKind {
    /// The side this kind of error normally belongs to.
    pub fn side(self) -> Side {
        use ErrorKind::*;
        match self {
            InvalidRequest
            | RequestHeaderTooLarge
            | UriTooLong
            | RequestBodyTooLarge
            | Forbidden
            | Unauthorized
            | ClientGone
            | ClientTimeout
            | NoRoute => Side::Downstream,
            Overloaded => Side::Internal,
            ConnectRefused
            | ConnectTimeout
            | ConnectFailed
            | UpstreamTls
            | UpstreamFirstByteTimeout
            | UpstreamReadTimeout
            | UpstreamReset
            | UpstreamProtocol
            | NoUpstream
            | UpstreamOverloaded => Side::Upstream,
            Io | Config | Internal | Custom(_) => Side::Internal,
        }
    }

    /// Whether a request that failed this way may be sent to another server: true only when
    /// nothing can have reached the origin (the connection was never established).
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::ConnectRefused | ErrorKind::ConnectTimeout | ErrorKind::ConnectFailed | ErrorKind::UpstreamTls
        )
    }

    /// A short stable name, used in logs.
    pub fn as_str(self) -> &'static str {
        use ErrorKind::*;
        match self {
            InvalidRequest => "invalid_request",
            RequestHeaderTooLarge => "request_header_too_large",
            UriTooLong => "uri_too_long",
            RequestBodyTooLarge => "request_body_too_large",
            Forbidden => "forbidden",
            Unauthorized => "unauthorized",
            Overloaded => "overloaded",
            NoRoute => "no_route",
            ClientGone => "client_gone",
            ClientTimeout => "client_timeout",
            ConnectRefused => "connect_refused",
            ConnectTimeout => "connect_timeout",
            ConnectFailed => "connect_failed",
            UpstreamTls => "upstream_tls",
            UpstreamFirstByteTimeout => "upstream_first_byte_timeout",
            UpstreamReadTimeout => "upstream_read_timeout",
            UpstreamReset => "upstream_reset",
            UpstreamProtocol => "upstream_protocol",
            NoUpstream => "no_upstream",
            UpstreamOverloaded => "upstream_overloaded",
            Io => "io",
            Config => "config",
            Internal => "internal",
            Custom(_) => "custom",
        }
    }
}

/// The error type of every Sluice library crate.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    side: Side,
    retryable: bool,
    context: Option<Cow<'static, str>>,
    cause: Option<Cause>,
}

impl Error {
    /// A new boxed error of `kind`, with the kind's default side and retryability.
    pub fn new(kind: ErrorKind) -> Box<Self> {
        Box::new(Self { kind, side: kind.side(), retryable: kind.retryable(), context: None, cause: None })
    }

    /// A new boxed error with context.
    pub fn explain(kind: ErrorKind, context: impl Into<Cow<'static, str>>) -> Box<Self> {
        let mut e = Self::new(kind);
        e.context = Some(context.into());
        e
    }

    /// A new boxed error with context and a cause.
    pub fn because(kind: ErrorKind, context: impl Into<Cow<'static, str>>, cause: impl Into<Cause>) -> Box<Self> {
        let mut e = Self::explain(kind, context);
        e.cause = Some(cause.into());
        e
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Which side failed.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Whether the request may be retried on another server.
    pub fn retryable(&self) -> bool {
        self.retryable
    }

    /// Human context, if any.
    pub fn context(&self) -> Option<&str> {
        self.context.as_deref()
    }

    /// Overrides retryability (e.g. a stale pooled connection is safe to retry).
    pub fn set_retryable(&mut self, retryable: bool) {
        self.retryable = retryable;
    }

    /// Overrides the side.
    pub fn set_side(&mut self, side: Side) {
        self.side = side;
    }

    /// Adds (or replaces) the context.
    pub fn with_context(mut self: Box<Self>, context: impl Into<Cow<'static, str>>) -> Box<Self> {
        self.context = Some(context.into());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        if let ErrorKind::Custom(code) = self.kind {
            write!(f, "({code})")?;
        }
        if let Some(ctx) = &self.context {
            write!(f, ": {ctx}")?;
        }
        if let Some(cause) = &self.cause {
            write!(f, ": {cause}")?;
            let mut source = cause.source();
            while let Some(s) = source {
                write!(f, ": {s}")?;
                source = s.source();
            }
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause.as_ref().map(|c| c.as_ref() as &(dyn StdError + 'static))
    }
}

/// Turns foreign errors into [`Error`]s with a kind and context:
/// `stream.read(..).or_err(ErrorKind::Io, "while reading the request")`.
pub trait OrErr<T> {
    /// Wraps the error with `kind` and `context`.
    fn or_err(self, kind: ErrorKind, context: &'static str) -> Result<T>;
}

impl<T, E: Into<Cause>> OrErr<T> for std::result::Result<T, E> {
    fn or_err(self, kind: ErrorKind, context: &'static str) -> Result<T> {
        self.map_err(|e| Error::because(kind, context, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_chains_context_and_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::because(ErrorKind::ConnectRefused, "connecting to 127.0.0.1:1", io);
        assert_eq!(e.to_string(), "connect_refused: connecting to 127.0.0.1:1: refused");
        assert!(e.retryable());
        assert_eq!(e.side(), Side::Upstream);
    }

    #[test]
    fn only_connect_failures_are_retryable_by_default() {
        assert!(!Error::new(ErrorKind::UpstreamReset).retryable());
        assert!(!Error::new(ErrorKind::UpstreamFirstByteTimeout).retryable());
        assert!(Error::new(ErrorKind::ConnectTimeout).retryable());
    }
}
