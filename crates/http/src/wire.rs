//! The connection under the router: what happens to bytes the handlers never see.
//!
//! - **Unread bodies are drained.** A request refused before its body was read (413 for
//!   a declared length over the limit, 401, 415, 429, ...) used to drop the body, and
//!   hyper then closed the connection with the client still sending: the kernel answers
//!   unread data with a reset, and a client that sends its whole body before reading
//!   (most libraries, browsers on slow links) got `connection reset` instead of the
//!   error. [`drain_unread`] keeps reading such a body in the background, bounded by
//!   [`DRAIN_BYTES`] and [`DRAIN_TIME`], so the answer is read and the connection kept.
//! - **hyper's own refusals speak the error shape.** A request hyper cannot parse (a bad
//!   request line or header, bad framing, a URL or header section over its limits) is
//!   answered by hyper itself with an empty `400`, `414` or `431`. [`Guarded`] recognises
//!   exactly that response on its way out and writes it again with the one error body.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{StatusCode, header};
use futures_util::StreamExt;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::ApiError;

/// At most this much of a refused request's body is read and thrown away.
pub const DRAIN_BYTES: u64 = 16 * 1024 * 1024;
/// For at most this long.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Wraps a request's body so that, dropped unread, the rest is drained (bounded).
/// Bodies that are already complete, and requests waiting for `100 Continue` (the client
/// has not sent the body and will not unless asked), are left as they are.
pub(crate) fn drain_unread(req: Request) -> Request {
    use axum::body::HttpBody;
    let expects = req.headers().contains_key(header::EXPECT);
    if expects || req.body().is_end_stream() {
        return req;
    }
    req.map(|body| {
        Body::new(DrainOnDrop {
            inner: Some(body),
            done: false,
        })
    })
}

struct DrainOnDrop {
    inner: Option<Body>,
    done: bool,
}

impl http_body::Body for DrainOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(inner).poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            // The end, or an error: nothing left worth draining.
            self.done = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        use axum::body::HttpBody;
        let Some(body) = self.inner.take() else {
            return;
        };
        if self.done || body.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut data = body.into_data_stream();
            let mut seen = 0u64;
            let read = async {
                while let Some(Ok(chunk)) = data.next().await {
                    seen += chunk.len() as u64;
                    if seen > DRAIN_BYTES {
                        break;
                    }
                }
            };
            // Past either bound the body is dropped and hyper closes the connection.
            let _ = tokio::time::timeout(DRAIN_TIME, read).await;
        });
    }
}

/// The server's listener: accepted connections are [`Guarded`], with `TCP_NODELAY`.
pub struct Connections(TcpListener);

impl Connections {
    /// Serves the connections of `listener`.
    pub fn new(listener: TcpListener) -> Self {
        Self(listener)
    }
}

impl axum::serve::Listener for Connections {
    type Io = Guarded<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.0).await;
        let _ = stream.set_nodelay(true);
        (
            Guarded {
                inner: stream,
                pending: None,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection whose writes are watched for hyper's automatic error responses.
pub struct Guarded<T> {
    inner: T,
    /// A replacement being written: the bytes and how many are written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T: AsyncWrite + Unpin> Guarded<T> {
    /// Writes what is left of a replacement.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = self.pending.as_mut() {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` over when it is hyper's automatic error response.
    fn replaces(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<Poll<io::Result<usize>>> {
        let replacement = automatic_error(buf)?;
        self.pending = Some((replacement, 0));
        Some(match self.poll_pending(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // The rest goes out on the next write or flush.
            _ => Poll::Ready(Ok(buf.len())),
        })
    }
}

/// The error-shaped response replacing `buf`, when `buf` is exactly the head hyper
/// writes for a request it could not parse: `400`, `414` or `431`, no body, and no header
/// but the ones hyper adds itself (responses of the router always carry a content type
/// and a request id, so they never match).
fn automatic_error(buf: &[u8]) -> Option<Vec<u8>> {
    if !buf.starts_with(b"HTTP/1.1 4") && !buf.starts_with(b"HTTP/1.0 4") {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut head = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = head.parse(buf).ok()? else {
        return None;
    };
    if len != buf.len() {
        return None;
    }
    let own = head.headers.iter().all(|h| {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "content-length" => h.value == b"0",
            "date" | "connection" => true,
            _ => false,
        }
    });
    if !own {
        return None;
    }
    let (status, message) = match head.code? {
        400 => (
            StatusCode::BAD_REQUEST,
            "the request is not valid HTTP/1.1: its request line, a header or its framing could not be parsed",
        ),
        414 => (
            StatusCode::URI_TOO_LONG,
            "the URL is longer than this server accepts",
        ),
        431 => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request's headers are too large or too many (at most 100)",
        ),
        _ => return None,
    };
    let id = uuid::Uuid::now_v7().to_string();
    let body = crate::error::render(&ApiError::new(status, "BAD_REQUEST", message), &id);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {id}\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(done) = self.replaces(cx, buf) {
            return done;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next())
            && let Some(done) = self.replaces(cx, only)
        {
            return done;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::automatic_error;

    #[test]
    fn only_hypers_bare_refusals_are_rewritten() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 23:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(automatic_error(hyper).expect("rewritten")).expect("utf-8");
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        assert!(out.contains("\"code\":\"BAD_REQUEST\""), "{out}");
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert!(automatic_error(ours).is_none());
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}";
        assert!(automatic_error(with_body).is_none());
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(automatic_error(ok).is_none());
    }
}
