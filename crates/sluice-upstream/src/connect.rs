//! Opening connections to origins, with errors sorted into Sluice's kinds.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use sluice_error::{Error, ErrorKind, Result};
use tokio::net::TcpStream;

/// Connects with a timeout; refused, timed out and other failures are distinct kinds
/// (all retryable: nothing reached the origin).
pub(crate) async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => {
            let kind = match e.kind() {
                io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
                io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
                _ => ErrorKind::ConnectFailed,
            };
            Err(Error::because(kind, format!("connecting to {addr}"), e))
        }
        Err(_) => {
            Err(Error::explain(ErrorKind::ConnectTimeout, format!("connecting to {addr}: no answer in {timeout:?}")))
        }
    }
}
