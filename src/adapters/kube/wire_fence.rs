//! The leader's fence on the wire: the connections that carry the API writes
//! check the [`LeaderGuard`] before every write of bytes to the socket.
//!
//! The request-level [`super::fence::Fence`] judges a write before it is handed
//! to the HTTP client, and gives up waiting for it at the deadline. But once
//! handed over, the request belongs to the connection's own task, which writes it
//! whenever it next runs. A replica frozen (SIGSTOP, a starved node) at that
//! moment wakes up past its deadline with that task ready to go, and the write
//! reached the apiserver after another replica had taken the Lease. Here the
//! connection itself refuses: a write to the socket after the deadline fails,
//! which fails the request and closes the connection, so nothing of it is sent.
//! What is left is the instant between this check and the system call.

use super::fence::LeaderGuard;
use futures::future::BoxFuture;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A connector whose connections stop writing once `guard` refuses writes.
#[derive(Clone)]
pub struct FencedConnector<C> {
    inner: C,
    guard: LeaderGuard,
}

impl<C> FencedConnector<C> {
    pub fn new(inner: C, guard: LeaderGuard) -> FencedConnector<C> {
        FencedConnector { inner, guard }
    }
}

impl<C> tower::Service<http::Uri> for FencedConnector<C>
where
    C: tower::Service<http::Uri>,
    C::Future: Send + 'static,
{
    type Response = FencedIo<C::Response>;
    type Error = C::Error;
    type Future = BoxFuture<'static, Result<FencedIo<C::Response>, C::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let guard = self.guard.clone();
        Box::pin(async move {
            let inner = connecting.await?;
            Ok(FencedIo { inner, guard })
        })
    }
}

/// A connection that writes only while its guard allows writes; reads pass.
pub struct FencedIo<T> {
    inner: T,
    guard: LeaderGuard,
}

impl<T> FencedIo<T> {
    fn refused(&self) -> Option<io::Error> {
        self.guard.check("kube").err().map(io::Error::other)
    }
}

impl<T: Read + Unpin> Read for FencedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for FencedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.refused() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.refused() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: Connection> Connection for FencedIo<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::kube::fence::Fence;
    use futures::task::AtomicWaker;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tower::Service as _;

    /// A connection whose writes wait while the valve is shut: the socket not
    /// taking bytes, or the process frozen with the request in the connection's
    /// hands.
    struct Valve {
        open: AtomicBool,
        waker: AtomicWaker,
    }

    impl Valve {
        fn open(&self) {
            self.open.store(true, Ordering::SeqCst);
            self.waker.wake();
        }
    }

    struct Valved {
        inner: TokioIo<TcpStream>,
        valve: Arc<Valve>,
    }

    impl Read for Valved {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: ReadBufCursor<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl Write for Valved {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.valve.waker.register(cx.waker());
            if !self.valve.open.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    impl Connection for Valved {
        fn connected(&self) -> Connected {
            Connected::new()
        }
    }

    /// A server that records what one connection sent, answers 200 once it has
    /// the headers, and hands over the bytes when the connection ends.
    async fn server() -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/apis/x", listener.local_addr().unwrap());
        let got = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut got = vec![];
            let mut buf = [0u8; 4096];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return got;
                }
            }
        });
        (url, got)
    }

    /// Sends a PATCH through the fenced client's stack (the request-level fence
    /// over a fenced connection) whose socket takes no bytes until `hold` has
    /// passed; returns whether it was answered and what the server received.
    async fn patch_held(guard: &LeaderGuard, hold: Duration) -> (bool, Vec<u8>) {
        let (url, got) = server().await;
        let valve = Arc::new(Valve {
            open: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        let connect = {
            let valve = valve.clone();
            tower::service_fn(move |uri: http::Uri| {
                let valve = valve.clone();
                async move {
                    let addr = uri.authority().unwrap().as_str().to_string();
                    let inner = TokioIo::new(TcpStream::connect(addr).await?);
                    Ok::<_, io::Error>(Valved { inner, valve })
                }
            })
        };
        let client = hyper_util::client::legacy::Builder::new(TokioExecutor::new())
            .build::<_, String>(FencedConnector::new(connect, guard.clone()));
        let mut fenced = Fence::new(client.clone(), client, guard.clone());
        let request = http::Request::patch(url)
            .body(r#"{"status":{}}"#.to_string())
            .unwrap();
        let answer = tokio::spawn(fenced.call(request));
        tokio::time::sleep(hold).await;
        valve.open();
        let answered = tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("the request ends")
            .unwrap()
            .is_ok();
        let received = tokio::time::timeout(Duration::from_secs(10), got)
            .await
            .expect("the connection ends")
            .unwrap();
        (answered, received)
    }

    /// The request was in the connection's hands, unsent, when the deadline
    /// passed: not a byte of it may reach the server afterwards.
    #[tokio::test]
    async fn a_request_the_connection_held_past_the_deadline_is_not_sent() {
        let guard = LeaderGuard::elected();
        guard.extend(Instant::now() + Duration::from_millis(200));
        let (answered, received) = patch_held(&guard, Duration::from_millis(400)).await;
        assert!(!answered, "the request was answered");
        assert!(
            received.is_empty(),
            "the server received {:?} after the deadline",
            String::from_utf8_lossy(&received)
        );
    }

    /// The same connection held up while the lease stays valid: the request goes
    /// out whole once the socket takes bytes.
    #[tokio::test]
    async fn a_request_held_up_while_leading_is_sent() {
        let guard = LeaderGuard::elected();
        guard.extend(Instant::now() + Duration::from_secs(600));
        let (answered, received) = patch_held(&guard, Duration::from_millis(100)).await;
        assert!(answered, "the request failed");
        assert!(
            received.starts_with(b"PATCH /apis/x HTTP/1.1\r\n"),
            "the server received {:?}",
            String::from_utf8_lossy(&received)
        );
    }
}
