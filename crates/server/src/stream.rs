//! The byte stream a handler gets: plain TCP or TLS, behind an idle timeout.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// A client connection, before or after TLS.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP: a STARTTLS protocol before the upgrade, or `admin`.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The rustls session, for protocol details such as the negotiated
    /// version, the SNI name or channel-binding data. `None` on plain TCP.
    pub fn tls_connection(&self) -> Option<&rustls::ServerConnection> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => Some(tls.get_ref().1),
        }
    }

    /// The underlying TCP socket.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How far away "never" is when a timeout is too large to add to now.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// A deadline armed when an operation starts waiting and disarmed when it
/// makes progress. The timer is created lazily, inside a poll, so that
/// constructing an [`IdleTimeout`] needs no runtime.
#[derive(Default)]
struct Deadline {
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Deadline {
    fn disarm(&mut self) {
        self.armed = false;
    }

    /// Arms the deadline if it is not armed yet and reports whether it has
    /// passed, registering `cx` to be woken when it does.
    fn poll_expired(&mut self, cx: &mut Context<'_>, timeout: Duration) -> bool {
        if !self.armed {
            let now = Instant::now();
            let at = now
                .checked_add(timeout)
                .or_else(|| now.checked_add(FAR_FUTURE))
                .unwrap_or(now);
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(at),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            self.armed = true;
        }
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }
}

/// A stream whose reads fail with [`io::ErrorKind::TimedOut`] when no byte
/// arrives for the timeout.
///
/// The clock runs only while a read is waiting: time a session spends
/// working between reads is not counted, and it restarts at every read that
/// returns. Writes pass data through unchanged, but a write (or flush or
/// shutdown) that makes no progress for the same timeout, because the
/// client stopped reading, also fails with `TimedOut`, so a client that
/// never reads cannot hold a session forever. Bytes written do not reset the
/// read clock.
pub struct IdleTimeout<S> {
    inner: S,
    timeout: Duration,
    read: Deadline,
    write: Deadline,
}

impl<S> IdleTimeout<S> {
    /// Wraps `inner` with the given timeout.
    pub fn new(inner: S, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            read: Deadline::default(),
            write: Deadline::default(),
        }
    }

    /// The current timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the timeout, for example for a protocol state that waits
    /// longer (IMAP IDLE). It applies from the next read or write that waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.read.disarm();
        self.write.disarm();
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream, mutably. Reading from it directly bypasses the
    /// timeout.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for IdleTimeout<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleTimeout")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("idle timeout: {what}"))
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.read.disarm();
                Poll::Ready(result)
            }
            Poll::Pending => {
                if this.read.poll_expired(cx, this.timeout) {
                    Poll::Ready(Err(timed_out("no data received")))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<S> IdleTimeout<S> {
    fn guard_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.write.disarm();
                Poll::Ready(result)
            }
            Poll::Pending => {
                if self.write.poll_expired(cx, self.timeout) {
                    Poll::Ready(Err(timed_out("client is not reading")))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.guard_write(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.guard_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.guard_write(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.guard_write(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn silent_reader_times_out() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = IdleTimeout::new(a, Duration::from_secs(5));
        b.write_all(b"hi").await.expect("write");
        let mut buf = [0u8; 8];
        let n = a.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"hi");
        let started = Instant::now();
        let err = a.read(&mut buf).await.expect_err("must time out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn work_between_reads_is_not_idle_time() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = IdleTimeout::new(a, Duration::from_secs(5));
        b.write_all(b"1").await.expect("write");
        let mut buf = [0u8; 1];
        a.read_exact(&mut buf).await.expect("read");
        // The session works for longer than the timeout, then reads again.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            a.read(&mut buf).await.map(|n| buf[..n].to_vec())
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        b.write_all(b"2").await.expect("write");
        let got = reader.await.expect("join").expect("read");
        assert_eq!(got, b"2");
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_write_times_out() {
        let (a, _b) = tokio::io::duplex(16);
        let mut a = IdleTimeout::new(a, Duration::from_secs(5));
        let err = a.write_all(&[0u8; 64]).await.expect_err("must time out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn eof_is_not_a_timeout() {
        let (a, b) = tokio::io::duplex(16);
        let mut a = IdleTimeout::new(a, Duration::from_secs(5));
        drop(b);
        let mut buf = [0u8; 8];
        assert_eq!(a.read(&mut buf).await.expect("eof"), 0);
    }
}
