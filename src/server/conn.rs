//! Connection handling: our own accept loop over hyper's HTTP/1 connections, because
//! `axum::serve` has no header-read timeout, no idle timeout and no connection cap, so a client
//! that opens connections and sends nothing (or half a header) holds them, and their memory,
//! for as long as it likes.
//!
//! - At most `max_connections` are open at once. Past the cap a new connection is accepted and
//!   closed at once (the client sees the connection close before any answer), so the kernel's
//!   backlog never fills with connections nobody will serve and clients fail fast.
//! - A request header must arrive in full within `header_read_timeout` of its first byte (for the
//!   first request, of the connection's accept), or the connection is closed.
//! - A connection with no request in progress and no bytes moving for `keep_alive_timeout` is
//!   closed. A request being handled is bounded by the request timeout instead.
//! - On shutdown the listener closes, idle connections close, and those with a request in
//!   progress finish it and then close; [`serve`] returns once every connection has.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

/// How long connections may stay open without doing their part, and how many may be open.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_connections: u32,
}

/// Accepts connections on `listener` and serves `app` on each until `stop` turns true; then
/// stops accepting, lets every connection finish its request in progress, and returns once all
/// are closed (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let mut refused: u64 = 0;
    let mut stopping = pin!(stopped(stop.clone()));
    loop {
        let stream = tokio::select! {
            biased;
            _ = &mut stopping => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    accept_failed(&err).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Dropping the stream closes it: at the cap, refusing is cheaper than queueing.
            if refused == 0 {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection cap reached; refusing new connections until some close"
                );
            }
            refused += 1;
            continue;
        };
        if refused > 0 {
            tracing::info!(
                refused,
                "below the connection cap again; accepting connections"
            );
            refused = 0;
        }
        // Answers are small and written whole: Nagle's algorithm would only delay them.
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            app.clone(),
            limits,
            stop.clone(),
            slot,
        ));
    }
    drop(listener);
    // Every open connection holds a slot until it closes.
    let _ = slots.acquire_many(limits.max_connections).await;
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Connection-level errors (the peer gave up before we accepted) are the peer's business;
/// anything else, such as running out of file descriptors, gets a pause so that the loop does
/// not spin while the condition lasts.
async fn accept_failed(err: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    ) {
        return;
    }
    tracing::error!(error = %err, "accept failed (out of file descriptors? raise `ulimit -n` above --max-connections); pausing 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let service = Counted {
        app,
        activity: activity.clone(),
    };
    let mut conn = pin!(http1::Builder::new()
        .keep_alive(true)
        // Our own timers below cover the header, and the idle time hyper's would include.
        .header_read_timeout(None)
        .serve_connection(io, service));
    let mut draining = false;
    loop {
        let changed = activity.changed.notified();
        let deadline = activity.deadline(&limits);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            _ = changed => {}
            _ = sleep_until(deadline) => {
                if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    // No request is in progress: dropping the connection loses nothing.
                    tracing::debug!("closing a connection: header-read or keep-alive timeout");
                    return;
                }
            }
            _ = stop.wait_for(|s| *s), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

const NONE: u64 = u64::MAX;

/// What one connection is doing, as its reads, writes and requests report it. Times are
/// milliseconds since the connection was accepted.
struct Activity {
    accepted: Instant,
    /// Last byte read or written.
    last_io_ms: AtomicU64,
    /// First byte of a request header not yet complete ([`NONE`] when none).
    header_started_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Woken whenever the deadline may have moved earlier or appeared.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            accepted: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            // The first request's header is due from the accept on, as with nginx.
            header_started_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.accepted + Duration::from_millis(ms)
    }

    fn on_read(&self) {
        let now = self.now_ms();
        self.last_io_ms.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self
                .header_started_ms
                .compare_exchange(NONE, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn on_write(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn begin_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        // The header is complete: hyper calls the service only then.
        self.header_started_ms.store(NONE, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// When the connection is due to be closed; `None` while a request is in progress.
    fn deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let idle = self.at(self.last_io_ms.load(Ordering::Relaxed)) + limits.keep_alive_timeout;
        match self.header_started_ms.load(Ordering::Relaxed) {
            NONE => Some(idle),
            started => Some(idle.min(self.at(started) + limits.header_read_timeout)),
        }
    }
}

/// A request in progress; its end starts the keep-alive clock.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_io_ms.store(a.now_ms(), Ordering::Relaxed);
        a.header_started_ms.store(NONE, Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
        a.changed.notify_one();
    }
}

/// The router as hyper's service, counting requests in progress.
#[derive(Clone)]
struct Counted {
    app: Router,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for Counted {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin_request();
        let call = self.app.clone().oneshot(req.map(axum::body::Body::new));
        Box::pin(async move {
            let response = call.await;
            drop(in_flight);
            response
        })
    }
}

/// A TCP stream that reports its reads and writes to the connection's [`Activity`].
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        result
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnLimits = ConnLimits {
        header_read_timeout: Duration::from_secs(10),
        keep_alive_timeout: Duration::from_secs(75),
        max_connections: 1,
    };

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_connection_state() {
        let a = Arc::new(Activity::new());
        // Fresh: the first header is due from the accept.
        assert_eq!(
            a.deadline(&LIMITS),
            Some(a.accepted + LIMITS.header_read_timeout)
        );
        let request = a.begin_request();
        assert_eq!(
            a.deadline(&LIMITS),
            None,
            "no deadline while a request runs"
        );
        // A read during the request (its body) starts no header clock.
        a.on_read();
        tokio::time::advance(Duration::from_secs(3)).await;
        drop(request);
        let idle_from = Instant::now();
        assert_eq!(
            a.deadline(&LIMITS),
            Some(idle_from + LIMITS.keep_alive_timeout)
        );
        // The next header's first byte starts the header clock.
        tokio::time::advance(Duration::from_secs(20)).await;
        a.on_read();
        let header_from = Instant::now();
        assert_eq!(
            a.deadline(&LIMITS),
            Some(header_from + LIMITS.header_read_timeout)
        );
        // More header bytes do not move it.
        tokio::time::advance(Duration::from_secs(5)).await;
        a.on_read();
        assert_eq!(
            a.deadline(&LIMITS),
            Some(header_from + LIMITS.header_read_timeout)
        );
    }
}
