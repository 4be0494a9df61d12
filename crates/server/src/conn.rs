//! Serving HTTP/1.1 connections by hand rather than with `axum::serve`, which has no timeouts: a
//! cap on open connections (503 beyond it), a header timeout (a request's head must arrive in
//! time: slowloris), an idle keep-alive timeout, a write-stall timeout (a client that stops
//! reading its response), and a shutdown that never waits past its deadline.
//!
//! Each connection has an [`Activity`] record, updated by its socket wrapper ([`Watched`]) and by
//! its requests ([`RequestGuard`]), and one watchdog in its task that closes it when the rule for
//! its current phase says so. The body timeout is the handlers' (see `routes`).

use crate::error::ApiError;
use crate::metrics::ConnMetrics;
use axum::body::{Body, Bytes};
use axum::http::Request;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

/// How long connections still writing a response get after the shutdown deadline to send their
/// last events (the engine cancels what runs at the deadline; the streams then say so).
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);
/// The kernel's send buffer of a connection (it doubles this). Autotuning would let a client that
/// stops reading park megabytes in the kernel before the write timeout can notice; token streams
/// need far less.
const SEND_BUFFER: usize = 64 << 10;
/// Connections over the cap that may be answered 503 at once; beyond that they are just closed.
const REJECTING_AT_ONCE: usize = 64;
/// How long a 503 answer may take, its write and the client's close together.
const REJECT_TIME: Duration = Duration::from_secs(1);

/// The transport limits of [`crate::ServerConfig`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
}

/// How often a drain looks whether every connection has closed.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// A connection accepted during a drain that has not sent a whole request head and body within
/// this is closed: a probe's arrives at once, and a half-open one must not hold the exit back.
const DRAIN_REQUEST_WINDOW: Duration = Duration::from_secs(1);

/// Accepts and serves connections until `stop` resolves to the shutdown deadline; then closes
/// connections between requests at once, lets the others finish their response until the
/// deadline (plus [`SHUTDOWN_GRACE`]) and returns once they have. Meanwhile new connections are
/// still answered, one request each: a readiness probe reads 503 from `/health`, a liveness probe
/// 200 from `/health/live`, a request 503 — rather than a refused connection.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Arc<ConnMetrics>,
    stop: impl Future<Output = std::time::Instant>,
) {
    let (shutdown_tx, shutdown_rx) = watch::channel(None::<Instant>);
    let mut acceptor = Acceptor {
        app,
        limits,
        metrics,
        open: Arc::new(Semaphore::new(limits.max_connections)),
        rejecting: Arc::new(Semaphore::new(REJECTING_AT_ONCE)),
        shutdown: shutdown_rx,
        last_warning: None,
    };
    let mut stop = pin!(stop);
    let deadline = loop {
        tokio::select! {
            deadline = &mut stop => break Instant::from_std(deadline),
            a = listener.accept() => acceptor.take(a, false).await,
        }
    };
    let _ = shutdown_tx.send(Some(deadline));
    // Connections accepted from now on start with the shutdown already seen.
    acceptor.shutdown.borrow_and_update();
    let mut poll = tokio::time::interval(DRAIN_POLL);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline + SHUTDOWN_GRACE) => return,
            _ = poll.tick() => {
                // Every connection task holds a permit: all of them back means all are closed.
                if acceptor.open.available_permits() == limits.max_connections {
                    return;
                }
            }
            a = listener.accept() => acceptor.take(a, true).await,
        }
    }
}

/// What accepting a connection needs.
struct Acceptor {
    app: Router,
    limits: Limits,
    metrics: Arc<ConnMetrics>,
    /// A permit per open connection, up to `--max-connections`.
    open: Arc<Semaphore>,
    rejecting: Arc<Semaphore>,
    shutdown: watch::Receiver<Option<Instant>>,
    last_warning: Option<Instant>,
}

impl Acceptor {
    /// Serves an accepted connection on its own task (one request only when `draining`), or
    /// answers 503 over the cap.
    async fn take(&mut self, accepted: std::io::Result<(TcpStream, SocketAddr)>, draining: bool) {
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => return accept_failed(&e, &mut self.last_warning).await,
        };
        let Ok(permit) = self.open.clone().try_acquire_owned() else {
            return reject(stream, &self.rejecting, &self.metrics);
        };
        let conn = Connection {
            app: self.app.clone(),
            limits: self.limits,
            metrics: self.metrics.clone(),
            activity: Arc::new(Activity::new()),
            shutdown: self.shutdown.clone(),
            one_request: draining,
        };
        tokio::spawn(async move {
            conn.serve(stream).await;
            drop(permit);
        });
    }
}

/// An accept error: a connection that failed before we took it is skipped; running out of file
/// descriptors (or memory) is waited out, warning at most every 5 s.
async fn accept_failed(e: &std::io::Error, last_warning: &mut Option<Instant>) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
        tracing::warn!(
            "cannot accept connections: {e} (is --max-connections above the open-file limit?)"
        );
        *last_warning = Some(Instant::now());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Answers a connection over the cap with a 503 in OpenAI's error shape and closes it; the
/// client's request is read and discarded first (for at most [`REJECT_TIME`]) so that closing
/// does not reset the connection before the client has read the answer.
fn reject(mut stream: TcpStream, rejecting: &Arc<Semaphore>, metrics: &ConnMetrics) {
    metrics.rejected.fetch_add(1, Relaxed);
    let Ok(permit) = rejecting.clone().try_acquire_owned() else {
        return;
    };
    let body = ApiError::unavailable("Too many open connections; retry later.")
        .with_code("too_many_connections")
        .body()
        .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REJECT_TIME, async {
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

/// Why a connection was closed by its watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// A request head that did not arrive in time (or nothing at all on a new connection).
    Header,
    /// A keep-alive connection with no request.
    Idle,
    /// A response the client stopped reading.
    WriteStall,
}

/// What a connection is doing, as its socket and its requests report it. Times are milliseconds
/// since the connection opened, plus one (0: none).
struct Activity {
    opened: Instant,
    /// Requests whose response is not completely handed to the socket yet.
    in_flight: AtomicUsize,
    /// The request in flight is still reading its body (until [`BodyProgress::received`]).
    awaiting_body: AtomicBool,
    /// Whether a request has completed (then the idle timeout applies between requests; before
    /// the first one, the header timeout does).
    served: AtomicBool,
    idle_since: AtomicU64,
    /// The first byte received while no request was in flight: a request head has begun.
    head_started: AtomicU64,
    /// When a write last found the socket full (0: the last write went through).
    write_blocked: AtomicU64,
    /// Wakes the watchdog when a rule may have moved earlier.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            awaiting_body: AtomicBool::new(false),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(1),
            head_started: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64 + 1
    }

    fn at(&self, t: u64) -> Instant {
        self.opened + Duration::from_millis(t - 1)
    }

    fn on_read(&self) {
        if self.in_flight.load(Relaxed) == 0 && self.head_started.load(Relaxed) == 0 {
            self.head_started.store(self.now(), Relaxed);
            self.changed.notify_one();
        }
    }

    fn on_write(&self, blocked: bool) {
        if !blocked {
            self.write_blocked.store(0, Relaxed);
        } else if self.write_blocked.load(Relaxed) == 0 {
            self.write_blocked.store(self.now(), Relaxed);
        }
    }

    /// No request in flight (or only one still reading its body) and nothing left to write:
    /// closing at shutdown loses no answer.
    fn is_quiet(&self) -> bool {
        let idle = self.in_flight.load(Relaxed) == 0 || self.awaiting_body.load(Relaxed);
        idle && self.write_blocked.load(Relaxed) == 0
    }

    /// The earliest time a rule can close the connection, and which rule; `None` when none
    /// applies (a request is in flight and writing is not blocked).
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Expiry)> {
        let blocked = self.write_blocked.load(Relaxed);
        let stall =
            (blocked != 0).then(|| (self.at(blocked) + limits.write_timeout, Expiry::WriteStall));
        if self.in_flight.load(Relaxed) > 0 {
            return stall;
        }
        let head = self.head_started.load(Relaxed);
        let phase = if head != 0 {
            (self.at(head) + limits.header_timeout, Expiry::Header)
        } else if self.served.load(Relaxed) {
            (
                self.at(self.idle_since.load(Relaxed)) + limits.idle_timeout,
                Expiry::Idle,
            )
        } else {
            (self.opened + limits.header_timeout, Expiry::Header)
        };
        Some(match stall {
            Some(s) if s.0 < phase.0 => s,
            _ => phase,
        })
    }
}

/// Counts a request in flight from its head until its response body is dropped (sent, or the
/// connection closed).
struct RequestGuard(Arc<Activity>);

impl RequestGuard {
    fn new(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Relaxed);
        activity.awaiting_body.store(true, Relaxed);
        activity.head_started.store(0, Relaxed);
        RequestGuard(activity)
    }
}

/// In a request's extensions: lets the handler say that the body has arrived. Until then, a
/// shutdown closes the connection at once instead of waiting for the request.
#[derive(Clone)]
pub(crate) struct BodyProgress(Arc<Activity>);

impl BodyProgress {
    pub fn received(&self) {
        self.0.awaiting_body.store(false, Relaxed);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        if a.in_flight.fetch_sub(1, Relaxed) == 1 {
            a.idle_since.store(a.now(), Relaxed);
            a.served.store(true, Relaxed);
            a.changed.notify_one();
        }
    }
}

/// A response body that holds its request's [`RequestGuard`].
struct Tracked {
    inner: Body,
    _request: RequestGuard,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, reporting reads and blocked writes to the connection's [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        r
    }
}

impl Watched {
    fn report<T>(&self, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match &r {
            Poll::Pending => self.activity.on_write(true),
            Poll::Ready(Ok(_)) => self.activity.on_write(false),
            Poll::Ready(Err(_)) => {}
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.report(r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.report(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// One accepted connection and what its task needs.
struct Connection {
    app: Router,
    limits: Limits,
    metrics: Arc<ConnMetrics>,
    activity: Arc<Activity>,
    shutdown: watch::Receiver<Option<Instant>>,
    /// Accepted during a drain: answer one request, then close.
    one_request: bool,
}

impl Connection {
    /// Serves the connection until it ends, its watchdog closes it, or shutdown does.
    async fn serve(mut self, stream: TcpStream) {
        let _open = OpenGuard::new(self.metrics.clone());
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: self.activity.clone(),
        });
        let app = self.app.clone();
        let activity = self.activity.clone();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let request = RequestGuard::new(activity.clone());
            req.extensions_mut().insert(BodyProgress(activity.clone()));
            let app = app.clone();
            async move {
                let Ok(response) = app.oneshot(req.map(Body::new)).await;
                // Whatever the handler read, it has answered.
                request.0.awaiting_body.store(false, Relaxed);
                Ok::<_, Infallible>(response.map(|inner| Tracked {
                    inner,
                    _request: request,
                }))
            }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.keep_alive(!self.one_request).header_read_timeout(None);
        let mut conn = pin!(http.serve_connection(io, service));
        let mut cut_at: Option<Instant> = None;
        let mut drain_cut = self
            .one_request
            .then(|| Instant::now() + DRAIN_REQUEST_WINDOW);
        loop {
            let rule = self.activity.deadline(&self.limits);
            // With no rule in force, look again after a write timeout anyway.
            let mut wake = rule.map_or(Instant::now() + self.limits.write_timeout, |r| r.0);
            for c in [cut_at, drain_cut].into_iter().flatten() {
                wake = wake.min(c);
            }
            tokio::select! {
                _ = conn.as_mut() => return,
                () = self.activity.changed.notified() => {}
                () = tokio::time::sleep_until(wake) => {
                    if cut_at.is_some_and(|c| Instant::now() >= c) {
                        return;
                    }
                    if drain_cut.is_some_and(|c| Instant::now() >= c) {
                        if self.activity.is_quiet() {
                            return;
                        }
                        // Its request is being answered: the usual rules from here on.
                        drain_cut = None;
                    }
                    // The rule may have changed while asleep (a request began): ask again.
                    let due = self.activity.deadline(&self.limits);
                    if let Some((_, why)) = due.filter(|r| Instant::now() >= r.0) {
                        tracing::debug!("closing a connection: {why:?} timeout");
                        self.metrics.timed_out.fetch_add(1, Relaxed);
                        return;
                    }
                }
                r = self.shutdown.changed(), if cut_at.is_none() => {
                    let deadline = match r {
                        Ok(()) => *self.shutdown.borrow(),
                        Err(_) => Some(Instant::now()),
                    };
                    if let Some(d) = deadline {
                        if self.activity.is_quiet() {
                            return;
                        }
                        conn.as_mut().graceful_shutdown();
                        cut_at = Some(d + SHUTDOWN_GRACE);
                    }
                }
            }
        }
    }
}

/// Keeps the open-connections gauge.
struct OpenGuard(Arc<ConnMetrics>);

impl OpenGuard {
    fn new(metrics: Arc<ConnMetrics>) -> Self {
        metrics.open.fetch_add(1, Relaxed);
        OpenGuard(metrics)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_connections: 4,
        }
    }

    #[test]
    fn each_phase_has_its_rule() {
        let a = Arc::new(Activity::new());
        let l = limits();
        let secs = |t: u64| a.opened + Duration::from_secs(t);
        // A new connection: its first request head is due within the header timeout.
        assert_eq!(a.deadline(&l), Some((secs(10), Expiry::Header)));
        a.on_read();
        let guard = RequestGuard::new(a.clone());
        // A request in flight: no rule until a write blocks; shutdown closes it at once while
        // its body has not arrived, and waits for it after.
        assert_eq!(a.deadline(&l), None);
        assert!(a.is_quiet());
        BodyProgress(a.clone()).received();
        assert!(!a.is_quiet());
        a.on_write(true);
        a.write_blocked.store(3001, Relaxed);
        assert_eq!(a.deadline(&l), Some((secs(33), Expiry::WriteStall)));
        a.on_write(false);
        assert_eq!(a.deadline(&l), None);
        drop(guard);
        // Between requests: the idle timeout, until a new head begins.
        a.idle_since.store(4001, Relaxed);
        assert_eq!(a.deadline(&l), Some((secs(64), Expiry::Idle)));
        a.on_read();
        a.head_started.store(5001, Relaxed);
        assert_eq!(a.deadline(&l), Some((secs(15), Expiry::Header)));
        assert!(a.is_quiet());
        // A blocked write closes sooner than the phase's rule when it is older.
        a.write_blocked.store(1, Relaxed);
        assert!(!a.is_quiet());
        assert_eq!(a.deadline(&l), Some((secs(15), Expiry::Header)));
        a.head_started.store(0, Relaxed);
        assert_eq!(a.deadline(&l), Some((secs(30), Expiry::WriteStall)));
    }
}
