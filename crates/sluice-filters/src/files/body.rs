//! Response bodies made of file byte ranges and literal parts (multipart boundaries).
//! Small bodies are read at once; large ones are streamed in 64 KiB reads on the blocking
//! pool, so a file larger than memory, or a slow disk, never holds a runtime thread.

use std::fs::File;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use sluice_core::Body;

/// Bodies up to this size are read in the request's task (page-cache reads take
/// microseconds; a hop to the blocking pool would cost more than the read).
pub const READ_AT_ONCE: u64 = 64 * 1024;
/// One streamed read.
const CHUNK: u64 = 64 * 1024;

/// A piece of a body.
#[derive(Debug, Clone)]
pub enum Part {
    /// Literal bytes (a multipart boundary and part headers).
    Bytes(Bytes),
    /// `len` bytes of the file from `offset`.
    File {
        /// Where to start.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Part::Bytes(b) => b.len() as u64,
            Part::File { len, .. } => *len,
        }
    }
}

/// The total length of `parts`.
pub fn total(parts: &[Part]) -> u64 {
    parts.iter().map(Part::len).sum()
}

/// A body for `parts` of `file`: read now when small, streamed otherwise.
pub fn body(file: File, parts: Vec<Part>) -> std::io::Result<Body> {
    if total(&parts) <= READ_AT_ONCE {
        let mut out = Vec::with_capacity(usize::try_from(total(&parts)).unwrap_or(0));
        for part in &parts {
            match part {
                Part::Bytes(b) => out.extend_from_slice(b),
                Part::File { offset, len } => read_into(&file, *offset, *len, &mut out)?,
            }
        }
        return Ok(Body::full(out));
    }
    let remaining = total(&parts);
    Ok(Body::boxed(FileBody { file: Arc::new(file), parts: parts.into(), reading: None, remaining }))
}

/// A body for `parts` of a file whose whole contents are in memory: the file parts share
/// its bytes.
pub fn from_memory(data: &Bytes, parts: &[Part]) -> Body {
    if let [Part::File { offset, len }] = parts {
        return Body::full(data.slice(range_in(data, *offset, *len)));
    }
    Body::full(concat(data, parts))
}

/// `parts` of `data` (and their literal parts) in one buffer.
pub fn concat(data: &Bytes, parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::try_from(total(parts)).unwrap_or(0));
    for part in parts {
        match part {
            Part::Bytes(b) => out.extend_from_slice(b),
            Part::File { offset, len } => out.extend_from_slice(&data[range_in(data, *offset, *len)]),
        }
    }
    out
}

/// `len` bytes from `offset`, clamped to `data`.
fn range_in(data: &Bytes, offset: u64, len: u64) -> std::ops::Range<usize> {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
    let end = usize::try_from(offset.saturating_add(len)).unwrap_or(usize::MAX).min(data.len());
    start..end
}

/// Appends `len` bytes of `file` from `offset` to `out`, without zero-filling the room
/// first (`read_to_end` reads into spare capacity).
fn read_into(mut file: &File, offset: u64, len: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::{Read as _, Seek as _};
    file.seek(std::io::SeekFrom::Start(offset))?;
    let before = out.len();
    file.take(len).read_to_end(out)?;
    if (out.len() - before) as u64 != len {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while it was read"));
    }
    Ok(())
}

/// A streamed body: literal parts are sent as they are, file parts in chunks read on the
/// blocking pool.
struct FileBody {
    file: Arc<File>,
    parts: std::collections::VecDeque<Part>,
    reading: Option<tokio::task::JoinHandle<std::io::Result<Bytes>>>,
    /// Bytes not sent yet (for `size_hint`).
    remaining: u64,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if let Some(reading) = this.reading.as_mut() {
            let done = match Pin::new(reading).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(done) => done,
            };
            this.reading = None;
            return Poll::Ready(Some(match done {
                Ok(Ok(chunk)) => {
                    this.remaining = this.remaining.saturating_sub(chunk.len() as u64);
                    Ok(Frame::data(chunk))
                }
                Ok(Err(e)) => Err(e),
                Err(e) => Err(std::io::Error::other(e)),
            }));
        }
        match this.parts.pop_front() {
            None => Poll::Ready(None),
            Some(Part::Bytes(b)) => {
                this.remaining = this.remaining.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Some(Part::File { offset, len }) => {
                let n = len.min(CHUNK);
                if len > n {
                    this.parts.push_front(Part::File { offset: offset + n, len: len - n });
                }
                let file = this.file.clone();
                this.reading = Some(tokio::task::spawn_blocking(move || {
                    let mut buf = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
                    read_into(&file, offset, n, &mut buf)?;
                    Ok(Bytes::from(buf))
                }));
                // Poll the read now (it registers the waker).
                Pin::new(this).poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reading.is_none() && self.parts.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}
