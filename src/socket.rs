//! Sockets to Postgres that cannot hang forever.
//!
//! A route that drops packets, a NAT entry that expired or a load balancer
//! that fails over can leave a connection open on our side with nobody
//! answering: reads then wait forever and nothing is logged. Two defences:
//!
//! - TCP keepalives and `TCP_USER_TIMEOUT` on every TCP socket, so the
//!   kernel drops a connection whose peer stopped acknowledging;
//! - [`Watched`]: once a request was written, an answer must start within
//!   a bound (the statement timeout plus a margin, since the server cancels
//!   any statement that runs longer); otherwise the read fails and the
//!   driver closes the connection. This also catches a peer whose kernel
//!   still acknowledges (a proxy that stopped forwarding).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Any byte stream to the server.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// How the kernel watches an idle TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub retries: u32,
    /// How long written data may stay unacknowledged (Linux).
    pub user_timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            idle: Duration::from_secs(10),
            interval: Duration::from_secs(5),
            retries: 3,
            user_timeout: Duration::from_secs(30),
        }
    }
}

/// Connects over TCP within `timeout`, with Nagle off and keepalives on.
pub async fn connect_tcp(
    host: String,
    port: u16,
    timeout: Duration,
    keepalive: Keepalive,
) -> io::Result<TcpStream> {
    let addr = format!("{host}:{port}");
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {host}:{port} timed out after {timeout:?}"),
            ))
        }
    };
    stream.set_nodelay(true)?;
    let socket = SockRef::from(&stream);
    socket.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(keepalive.idle)
            .with_interval(keepalive.interval)
            .with_retries(keepalive.retries),
    )?;
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(keepalive.user_timeout))?;
    Ok(stream)
}

/// Connects to the server's Unix socket in `dir` within `timeout`.
#[cfg(unix)]
pub async fn connect_unix(
    dir: std::path::PathBuf,
    port: u16,
    timeout: Duration,
) -> io::Result<tokio::net::UnixStream> {
    let path = dir.join(format!(".s.PGSQL.{port}"));
    match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(&path)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "connecting to {} timed out after {timeout:?}",
                path.display()
            ),
        )),
    }
}

/// A stream on which every request must be answered within `stall`.
///
/// Writing arms a deadline unless one is armed; any byte read disarms it.
/// When it passes with nothing read, reads (and pending writes) fail with
/// `TimedOut`. An idle connection, with nothing written, is never failed.
pub struct Watched<S> {
    inner: S,
    stall: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, stall: Duration) -> Watched<S> {
        Watched {
            inner,
            stall,
            deadline: None,
        }
    }

    /// Starts the deadline unless it runs. It is polled at once, so the
    /// task is woken when it passes even if nothing else wakes it (the
    /// driver reads before it writes, so the read may never look again).
    fn arm(&mut self, cx: &mut Context<'_>) {
        if self.deadline.is_none() {
            let mut deadline = Box::pin(tokio::time::sleep(self.stall));
            let _ = deadline.as_mut().poll(cx);
            self.deadline = Some(deadline);
        }
    }

    /// `Ready(error)` once the armed deadline has passed.
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let passed = match self.deadline.as_mut() {
            Some(deadline) => deadline.as_mut().poll(cx).is_ready(),
            None => false,
        };
        if !passed {
            return Poll::Pending;
        }
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the database did not answer for {:?}; the connection is considered dead",
                self.stall
            ),
        ))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => self.expired(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.arm(cx);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                // A peer that stopped reading fills the send buffer.
                self.arm(cx);
                self.expired(cx).map(Err)
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => {
                self.arm(cx);
                self.expired(cx).map(Err)
            }
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_request_without_an_answer_fails_after_the_bound() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut watched = Watched::new(ours, Duration::from_millis(100));
        let mut buf = [0u8; 8];
        // Idle: nothing written, nothing expected; the read just waits.
        let idle = tokio::time::timeout(Duration::from_millis(300), watched.read(&mut buf)).await;
        assert!(idle.is_err(), "an idle connection is not failed");
        watched.write_all(b"ping").await.unwrap_or_default();
        let started = std::time::Instant::now();
        let error = watched.read(&mut buf).await.map(|_| ()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(90));
        // The peer stays open: only the bound ended the read.
        theirs.write_all(b"x").await.unwrap_or_default();
    }

    /// The driver polls the read before the write and is woken only by
    /// its wakers: the deadline must wake it by itself.
    #[tokio::test]
    async fn the_deadline_wakes_a_reader_that_looked_before_writing() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut watched = Watched::new(ours, Duration::from_millis(100));
        let mut buf = [0u8; 8];
        let result = tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| {
                let mut read = ReadBuf::new(&mut buf);
                if let Poll::Ready(result) = Pin::new(&mut watched).poll_read(cx, &mut read) {
                    return Poll::Ready(result);
                }
                let _ = Pin::new(&mut watched).poll_write(cx, b"ping");
                Poll::Pending
            }),
        )
        .await;
        let error = result.expect("woken by the deadline").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn an_answer_disarms_the_deadline() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut watched = Watched::new(ours, Duration::from_millis(100));
        watched.write_all(b"ping").await.unwrap_or_default();
        theirs.write_all(b"pong").await.unwrap_or_default();
        let mut buf = [0u8; 4];
        assert_eq!(watched.read(&mut buf).await.ok(), Some(4));
        let idle = tokio::time::timeout(Duration::from_millis(300), watched.read(&mut buf)).await;
        assert!(
            idle.is_err(),
            "after the answer the connection is idle, not dead"
        );
    }
}
