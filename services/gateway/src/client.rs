//! HTTP/1.1 connections to one upstream instance, kept alive and reused.
//!
//! Built on hyper's connection-level client instead of hyper-util's pooled `Client`: that one
//! hashes a pool key and spawns a task per request just to put the connection back in its pool,
//! which on a proxy's hot path cost a measurable share of throughput. Here each instance has its
//! own idle list; a connection goes back on it the moment the response body has been read to the
//! end ([`PooledBody`]), and is dropped instead if the body was abandoned or failed.
//!
//! Idle connections are reused newest first (their buffers are warm) and forgotten after
//! [`IDLE_TIMEOUT`], before an upstream that closes idle connections would; a request that
//! a pooled connection could not take (it closed while idle) moves on to the next one or to a
//! new connection, so an upstream restart costs no request.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::uri::Authority;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Idle connections older than this are closed rather than reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per instance; more are closed when they become idle.
const MAX_IDLE: usize = 1024;

type Sender = SendRequest<Full<Bytes>>;

/// Why a request could not be sent or answered.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made.
    Connect(io::Error),
    /// No connection within the connect timeout.
    ConnectTimeout,
    /// The connection failed after the request was handed to it.
    Transport(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(err) => write!(f, "connect: {err}"),
            Self::ConnectTimeout => f.write_str("connect timed out"),
            Self::Transport(err) => {
                write!(f, "{err}")?;
                let mut source = std::error::Error::source(err);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
        }
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// The connections to one instance.
pub struct Connections {
    authority: Authority,
    host: HeaderValue,
    connect_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Connections {
    /// Connections to `authority` (`host:port`).
    pub fn new(authority: Authority, connect_timeout: Duration) -> Self {
        let host = HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("upstream"));
        Self {
            authority,
            host,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // Only plain pushes and pops happen under the lock; a panic elsewhere cannot leave the
        // list inconsistent.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `request` (origin-form URI) and returns the response, whose body puts the
    /// connection back when read to the end. The `Host` header is set to the instance.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<PooledBody>, SendError> {
        request.headers_mut().insert(HOST, self.host.clone());
        while let Some(mut sender) = self.pop_idle() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.wrap(response, sender)),
                Err(mut err) => match err.take_message() {
                    // Not sent: the connection closed while idle. Try the next one.
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Transport(err.into_error())),
                },
            }
        }
        // Boxed: connecting (resolving, the connect timeout) is rare, and its state would
        // otherwise make every request's future larger.
        let mut sender = Box::pin(self.connect()).await?;
        match sender.send_request(request).await {
            Ok(response) => Ok(self.wrap(response, sender)),
            Err(err) => Err(SendError::Transport(err)),
        }
    }

    fn wrap(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: Sender,
    ) -> Response<PooledBody> {
        // An upgraded connection belongs to the WebSocket now, never to the pool.
        let reusable = response.status() != StatusCode::SWITCHING_PROTOCOLS;
        response.map(|body| PooledBody::new(body, reusable.then(|| (sender, self.clone()))))
    }

    fn pop_idle(&self) -> Option<Sender> {
        let mut idle = self.idle();
        while let Some(connection) = idle.pop() {
            if connection.since.elapsed() < IDLE_TIMEOUT && !connection.sender.is_closed() {
                return Some(connection.sender);
            }
        }
        None
    }

    fn put(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes idle connections past [`IDLE_TIMEOUT`] (the list is used newest first, so old
    /// ones at the bottom would otherwise linger while traffic flows).
    pub fn prune(&self) {
        let mut idle = self.idle();
        idle.retain(|c| c.since.elapsed() < IDLE_TIMEOUT && !c.sender.is_closed());
    }

    /// Idle connections now.
    pub fn idle_count(&self) -> usize {
        self.idle().len()
    }

    async fn connect(&self) -> Result<Sender, SendError> {
        let stream = match tokio::time::timeout(self.connect_timeout, self.tcp_connect()).await {
            Err(_) => return Err(SendError::ConnectTimeout),
            Ok(Err(err)) => return Err(SendError::Connect(err)),
            Ok(Ok(stream)) => stream,
        };
        // Requests and responses are small and latency-bound: Nagle would hold them back.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Transport)?;
        let authority = self.authority.clone();
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(%authority, error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    async fn tcp_connect(&self) -> io::Result<TcpStream> {
        let port = self.authority.port_u16().unwrap_or(80);
        let host = self
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return TcpStream::connect((ip, port)).await;
        }
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} did not resolve"));
        for addr in tokio::net::lookup_host((host, port)).await? {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(err) => last = err,
            }
        }
        Err(last)
    }
}

/// An upstream response body that returns its connection to the pool once read to the end.
pub struct PooledBody {
    inner: Incoming,
    release: Option<(Sender, Arc<Connections>)>,
}

impl PooledBody {
    fn new(inner: Incoming, release: Option<(Sender, Arc<Connections>)>) -> Self {
        let mut body = Self { inner, release };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some((sender, connections)) = self.release.take() {
            connections.put(sender);
        }
    }
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("pooled", &self.release.is_some())
            .finish()
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            // hyper stops polling a body whose length is complete, so the last frame is the
            // moment to let go of the connection.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            // A broken connection is not worth keeping.
            Poll::Ready(Some(Err(_))) => this.release = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A raw HTTP/1.1 server answering `ok` to each request; with `close_after_each`, it
    /// closes the connection after answering (while keeping it alive per the headers).
    async fn server(close_after_each: bool) -> (Authority, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(ok).await.is_err() || close_after_each {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (authority, accepted)
    }

    fn get() -> Request<Full<Bytes>> {
        Request::builder()
            .uri("/x")
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    async fn read(response: Response<PooledBody>) -> Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_response_body_is_read() {
        let (authority, accepted) = server(false).await;
        let connections = Arc::new(Connections::new(authority, Duration::from_secs(1)));
        for _ in 0..5 {
            let response = connections.send(get()).await.unwrap();
            assert_eq!(read(response).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(connections.idle_count(), 1);
    }

    #[tokio::test]
    async fn an_abandoned_body_does_not_return_its_connection() {
        let (authority, accepted) = server(false).await;
        let connections = Arc::new(Connections::new(authority, Duration::from_secs(1)));
        drop(connections.send(get()).await.unwrap());
        assert_eq!(connections.idle_count(), 0);
        assert_eq!(read(connections.send(get()).await.unwrap()).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(connections.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_skipped() {
        let (authority, accepted) = server(true).await;
        let connections = Arc::new(Connections::new(authority, Duration::from_secs(1)));
        assert_eq!(read(connections.send(get()).await.unwrap()).await, "ok");
        // Wait until the connection task has seen the close.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            connections.prune();
            if connections.idle_count() == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "close not noticed");
            tokio::task::yield_now().await;
        }
        assert_eq!(read(connections.send(get()).await.unwrap()).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        drop(listener);
        let connections = Arc::new(Connections::new(authority, Duration::from_secs(1)));
        assert!(matches!(
            connections.send(get()).await,
            Err(SendError::Connect(_))
        ));
    }
}
