//! The HTTP connections: accepting them, serving each with hyper's HTTP/1.1, and keeping slow
//! or hostile clients from starving the others.
//!
//! - **Deadlines.** A request head must be complete within `header_read_timeout_secs` of its
//!   first byte (of the accept, for a connection's first request); a keep-alive connection
//!   waiting for its next request is closed after `idle_timeout_secs`; a request body must
//!   arrive within `body_read_timeout_secs` of the end of its head, or the answer is
//!   `408 Request Timeout` and the connection closes. A connection past its head or idle
//!   deadline is closed without an answer.
//! - **Caps.** At most `max_connections` are open, and at most `max_connections_per_address`
//!   from one client address (IPv6 addresses grouped by /64). Over the per-address cap a new
//!   connection is closed at once. At the global cap, the oldest connection with no request
//!   in progress (still reading its head, or idle between requests) is closed to make room;
//!   only when every open connection has a request in progress is the new one closed.
//! - **Memory.** A connection buffers at most 64 KiB; a request head over 32 KiB is answered
//!   `431 Request Header Fields Too Large`; bodies are bounded by the router (64 KiB).
//! - **Client address.** Handlers get it with `axum::extract::ConnectInfo<SocketAddr>`.
//! - **Shutdown.** When `shutdown` completes the listener is closed (new connections are
//!   refused), connections with no request in progress are closed, and the others finish
//!   the request they are on (without keep-alive), for at most `drain_secs`.
//!
//! hyper's own `header_read_timeout` is left off. In hyper 1.12 its clock starts when the
//! connection starts *waiting* for a head (`Conn::poll_read_head`, first call in
//! `Reading::Init`), not at the head's first byte, and a finished response re-arms it at once
//! (`State::idle` sets `notify_read`): the keep-alive wait and the head share one clock of one
//! length. So each connection task here keeps its own deadline, from what the socket wrapper
//! ([`Watched`]) and the service wrapper ([`Tracking`]) tell it.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use telemetry::prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

use super::{AppState, router};

/// The largest value a `*_secs` limit may have (one day): beyond that it is a typo, and
/// deadlines stay far from `Instant` overflow.
const MAX_SECS: u64 = 86_400;

/// The read buffer of a connection: 64 KiB, so that 512 connections hold at most 32 MiB
/// (hyper's default is about 400 KB each).
const MAX_BUFFER: usize = 64 * 1024;

/// The largest request head; a longer one is answered `431 Request Header Fields Too Large`.
const MAX_HEAD: usize = 32 * 1024;

/// How long the accept loop waits after an accept error that is not one connection's
/// (out of file descriptors, `EMFILE`/`ENFILE`, or of memory) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Limits on the HTTP connections: the `[http]` table of the config file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionLimits {
    /// Seconds a request head may take to arrive, counted from its first byte (from the
    /// accept, for a connection's first request).
    pub header_read_timeout_secs: u64,
    /// Seconds a request body may take to arrive, counted from the end of its head; a late
    /// body is answered `408 Request Timeout`.
    pub body_read_timeout_secs: u64,
    /// Seconds a keep-alive connection may wait for its next request.
    pub idle_timeout_secs: u64,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one client address at most (for IPv6, from one /64).
    pub max_connections_per_address: usize,
    /// Seconds a shutdown waits for the requests in progress; 0 closes them at once.
    pub drain_secs: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 10,
            idle_timeout_secs: 30,
            // Under the common limit of 1,024 file descriptors, with room for the SQLite
            // files, the listener and the log.
            max_connections: 512,
            max_connections_per_address: 64,
            drain_secs: 10,
        }
    }
}

impl ConnectionLimits {
    /// Checks the values that a TOML type cannot: no zero cap or timeout, no timeout over a
    /// day.
    pub fn check(&self) -> Result<(), String> {
        let counts = [
            ("max_connections", self.max_connections),
            (
                "max_connections_per_address",
                self.max_connections_per_address,
            ),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(format!("[http] {name} must be at least 1"));
        }
        let timeouts = [
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("body_read_timeout_secs", self.body_read_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, s)| !(1..=MAX_SECS).contains(s)) {
            return Err(format!("[http] {name} must be between 1 and {MAX_SECS}"));
        }
        if self.drain_secs > MAX_SECS {
            return Err(format!("[http] drain_secs must be at most {MAX_SECS}"));
        }
        Ok(())
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            header: Duration::from_secs(self.header_read_timeout_secs),
            body: Duration::from_secs(self.body_read_timeout_secs),
            idle: Duration::from_secs(self.idle_timeout_secs),
        }
    }
}

/// Serves the application on `listener` until `shutdown` completes, then drains (see the
/// module documentation), with the limits of `state.config.http`.
///
/// Accept errors do not end it: one connection's (aborted, reset) are skipped, others (out
/// of file descriptors) are logged and retried after 100 ms.
pub async fn run(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()>) {
    let limits = state.config.http.clone();
    let open = state.metrics.connections.clone();
    serve_router(listener, router(state), &limits, open, shutdown).await;
}

/// [`run`] with any router (the tests give their own); `open` counts the open connections.
async fn serve_router(
    listener: TcpListener,
    app: Router,
    limits: &ConnectionLimits,
    open: Gauge,
    shutdown: impl Future<Output = ()>,
) {
    let timeouts = limits.timeouts();
    let registry = Arc::new(Mutex::new(Registry::new(limits)));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = tasks.join_next() => {
                if done.is_err_and(|e| e.is_panic()) {
                    tracing::error!("a connection task panicked");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let admitted = lock(&registry).admit(peer.ip(), Instant::now());
                    match admitted {
                        Ok(conn) => {
                            open.inc();
                            let registered = Registered {
                                registry: Arc::clone(&registry),
                                id: conn.id,
                                open: open.clone(),
                            };
                            let app = app.clone();
                            tasks.spawn(async move {
                                let _registered = registered;
                                serve_connection(stream, peer, conn, app, timeouts).await;
                            });
                        }
                        // Dropping the stream closes it.
                        Err(refusal) => tracing::debug!(%peer, "connection refused: {refusal}"),
                    }
                }
                Err(e) if concerns_one_connection(&e) => {
                    tracing::debug!(error = %e, "a connection failed before it was accepted");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting connections failed; retrying in 100 ms");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                        () = &mut shutdown => break,
                    }
                }
            },
        }
    }
    drop(listener);
    let open = lock(&registry).drain();
    tracing::info!(
        open,
        "shutting down: no new connections, finishing requests in progress"
    );
    let drain = Duration::from_secs(limits.drain_secs);
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, all_done).await.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "drain bound of {} s reached; closing the connections still busy",
            limits.drain_secs
        );
        tasks.shutdown().await;
    }
    tracing::info!("stopped serving");
}

/// Accept errors that concern only the connection being accepted, not the listener.
fn concerns_one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// The connection's deadlines, as durations.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    body: Duration,
    idle: Duration,
}

/// Serves one connection until it ends, times out, is evicted, or is drained.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    conn: Arc<Conn>,
    app: Router,
    timeouts: Timeouts,
) {
    let io = TokioIo::new(Watched {
        stream,
        conn: Arc::clone(&conn),
    });
    let service = Tracking {
        app: TowerToHyperService::new(app),
        conn: Arc::clone(&conn),
        peer,
        body_timeout: timeouts.body,
    };
    let http = http1::Builder::new()
        .header_read_timeout(None)
        .max_buf_size(MAX_BUFFER)
        .max_header_size(MAX_HEAD)
        .serve_connection(io, service);
    tokio::pin!(http);
    let mut graceful = false;
    loop {
        let deadline = conn.deadline(&timeouts);
        tokio::select! {
            // The connection first, so bytes already arrived count before a drain decides.
            biased;
            done = http.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = conn.wake.notified() => {
                if conn.evicted.load(Ordering::Acquire) {
                    tracing::debug!(%peer, "connection closed to make room for a new one");
                    return;
                }
                if conn.draining.load(Ordering::Acquire) && !graceful {
                    if !conn.is_busy() {
                        return;
                    }
                    // Finish this request, then close.
                    http.as_mut().graceful_shutdown();
                    graceful = true;
                }
            }
            () = sleep_until(deadline) => {
                if conn.deadline(&timeouts).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(%peer, "connection timed out waiting for a request");
                    return;
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or for ever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One open connection, as its task, its service, its socket and the registry see it.
#[derive(Debug)]
struct Conn {
    /// In order of acceptance: the smallest is the oldest.
    id: u64,
    /// The client's address as the per-address cap counts it ([`crate::throttle::client_group`]).
    client: IpAddr,
    activity: Mutex<Activity>,
    /// Wakes the connection's task to look again at its activity and flags.
    wake: Notify,
    /// Closed to make room for a new connection.
    evicted: AtomicBool,
    /// The server is shutting down.
    draining: AtomicBool,
}

/// What a connection is doing, for its deadline and for eviction.
#[derive(Debug)]
struct Activity {
    /// Requests whose head has arrived and whose answer is not yet written.
    in_progress: usize,
    /// When the connection last had no request in progress.
    idle_since: Instant,
    /// When the head being read started: its first byte, or the accept for the first one.
    head_since: Option<Instant>,
}

impl Conn {
    fn new(id: u64, client: IpAddr, now: Instant) -> Self {
        Self {
            id,
            client,
            activity: Mutex::new(Activity {
                in_progress: 0,
                idle_since: now,
                head_since: Some(now),
            }),
            wake: Notify::new(),
            evicted: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }

    fn activity(&self) -> MutexGuard<'_, Activity> {
        lock(&self.activity)
    }

    /// Whether a request is in progress (such a connection is never evicted).
    fn is_busy(&self) -> bool {
        self.activity().in_progress > 0
    }

    /// When the connection times out: none while a request is in progress.
    fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        let a = self.activity();
        if a.in_progress > 0 {
            return None;
        }
        Some(match a.head_since {
            Some(start) => start + timeouts.header,
            None => a.idle_since + timeouts.idle,
        })
    }

    /// Bytes came in: between requests, they start the next head's clock.
    fn bytes_arrived(&self) {
        let mut a = self.activity();
        if a.in_progress == 0 && a.head_since.is_none() {
            a.head_since = Some(Instant::now());
            drop(a);
            self.wake.notify_one();
        }
    }

    /// A head has arrived: a request is in progress until the returned guard is dropped.
    fn start_request(self: &Arc<Self>) -> InProgress {
        let mut a = self.activity();
        a.in_progress += 1;
        a.head_since = None;
        drop(a);
        self.wake.notify_one();
        InProgress(Arc::clone(self))
    }

    fn flag(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// A request in progress on its connection; dropped when its answer has been written (or
/// abandoned).
#[derive(Debug)]
struct InProgress(Arc<Conn>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let mut a = self.0.activity();
        a.in_progress = a.in_progress.saturating_sub(1);
        if a.in_progress == 0 {
            a.idle_since = Instant::now();
            a.head_since = None;
        }
        drop(a);
        self.0.wake.notify_one();
    }
}

/// The open connections, oldest first, and how many each client address has.
#[derive(Debug)]
struct Registry {
    max: usize,
    max_per_client: usize,
    next_id: u64,
    open: BTreeMap<u64, Arc<Conn>>,
    per_client: HashMap<IpAddr, usize>,
}

/// Why a new connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Its address has `max_connections_per_address` open.
    AddressFull,
    /// `max_connections` are open, each with a request in progress.
    AllBusy,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::AddressFull => "this address has as many connections open as it may",
            Self::AllBusy => "every connection is busy with a request",
        })
    }
}

impl Registry {
    fn new(limits: &ConnectionLimits) -> Self {
        Self {
            max: limits.max_connections,
            max_per_client: limits.max_connections_per_address,
            next_id: 0,
            open: BTreeMap::new(),
            per_client: HashMap::new(),
        }
    }

    /// Admits a connection from `peer`, evicting the oldest one with no request in progress
    /// when the server is full.
    fn admit(&mut self, peer: IpAddr, now: Instant) -> Result<Arc<Conn>, Refusal> {
        let client = crate::throttle::client_group(peer);
        if self.per_client.get(&client).copied().unwrap_or(0) >= self.max_per_client {
            return Err(Refusal::AddressFull);
        }
        if self.open.len() >= self.max {
            // A request may start on the victim between this look and its task closing it;
            // that client sees the connection close as if it had been idle, and retries.
            let victim = self
                .open
                .values()
                .find(|c| !c.is_busy())
                .cloned()
                .ok_or(Refusal::AllBusy)?;
            self.release(victim.id);
            victim.flag(&victim.evicted);
        }
        let conn = Arc::new(Conn::new(self.next_id, client, now));
        self.next_id += 1;
        self.open.insert(conn.id, Arc::clone(&conn));
        *self.per_client.entry(client).or_default() += 1;
        Ok(conn)
    }

    /// Forgets connection `id` (closed, or evicted); nothing if it is already gone.
    fn release(&mut self, id: u64) {
        let Some(conn) = self.open.remove(&id) else {
            return;
        };
        if let Some(n) = self.per_client.get_mut(&conn.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&conn.client);
            }
        }
    }

    /// Tells every open connection the server is shutting down; returns how many there are.
    fn drain(&self) -> usize {
        for conn in self.open.values() {
            conn.flag(&conn.draining);
        }
        self.open.len()
    }
}

/// A connection's place in the registry, given up when its task ends (or is aborted).
#[derive(Debug)]
struct Registered {
    registry: Arc<Mutex<Registry>>,
    id: u64,
    /// The open connections' gauge, which this one leaves.
    open: Gauge,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.registry).release(self.id);
        self.open.dec();
    }
}

/// Poisoning cannot leave these maps and counters half-changed: use them as they are.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The socket, telling its connection when bytes arrive.
#[derive(Debug)]
struct Watched {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.bytes_arrived();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The application as hyper calls it: each request counted in progress on its connection
/// until its answer is written, given the client's address (`ConnectInfo`), and its body
/// bounded in time.
#[derive(Debug)]
struct Tracking {
    app: TowerToHyperService<Router>,
    conn: Arc<Conn>,
    peer: SocketAddr,
    body_timeout: Duration,
}

impl Service<Request<Incoming>> for Tracking {
    type Response = Response<Answer>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_progress = self.conn.start_request();
        let late = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + self.body_timeout;
        let mut request = request.map(|body| TimedBody {
            body,
            deadline,
            timer: None,
            late: Arc::clone(&late),
        });
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let answer = self.app.call(request);
        let body_timeout = self.body_timeout;
        Box::pin(async move {
            let Ok(mut response) = answer.await;
            if late.load(Ordering::Acquire) {
                // The handler saw a body error; say what it was.
                response = body_too_late(body_timeout);
            }
            Ok(response.map(|body| Answer {
                body,
                _in_progress: in_progress,
            }))
        })
    }
}

/// `408 Request Timeout`, closing the connection (the rest of the body is not read).
fn body_too_late(timeout: Duration) -> axum::response::Response {
    (
        StatusCode::REQUEST_TIMEOUT,
        [(header::CONNECTION, "close")],
        format!(
            "the request body did not arrive within {} s\n",
            timeout.as_secs()
        ),
    )
        .into_response()
}

/// A request body that fails once its deadline passes before it has all arrived.
#[derive(Debug)]
struct TimedBody {
    body: Incoming,
    deadline: Instant,
    /// Made when the body is first waited for (most requests never wait).
    timer: Option<Pin<Box<Sleep>>>,
    /// Set when the deadline passed, for [`Tracking`] to answer 408.
    late: Arc<AtomicBool>,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.late.store(true, Ordering::Release);
        let late = io::Error::new(io::ErrorKind::TimedOut, "the request body came too late");
        Poll::Ready(Some(Err(late.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that keeps its request in progress until hyper has written it all.
#[derive(Debug)]
struct Answer {
    body: axum::body::Body,
    _in_progress: InProgress,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::routing::get;

    #[test]
    fn limits_check_refuses_zero_caps_and_timeouts() {
        assert_eq!(ConnectionLimits::default().check(), Ok(()));
        let zero_drain = ConnectionLimits {
            drain_secs: 0,
            ..ConnectionLimits::default()
        };
        assert_eq!(zero_drain.check(), Ok(()));
        type Edit = fn(&mut ConnectionLimits);
        let cases: [(Edit, &str); 7] = [
            (
                |l| l.max_connections = 0,
                "[http] max_connections must be at least 1",
            ),
            (
                |l| l.max_connections_per_address = 0,
                "[http] max_connections_per_address must be at least 1",
            ),
            (
                |l| l.header_read_timeout_secs = 0,
                "[http] header_read_timeout_secs must be between 1 and 86400",
            ),
            (
                |l| l.body_read_timeout_secs = 0,
                "[http] body_read_timeout_secs must be between 1 and 86400",
            ),
            (
                |l| l.idle_timeout_secs = 0,
                "[http] idle_timeout_secs must be between 1 and 86400",
            ),
            (
                |l| l.idle_timeout_secs = 86_401,
                "[http] idle_timeout_secs must be between 1 and 86400",
            ),
            (
                |l| l.drain_secs = 86_401,
                "[http] drain_secs must be at most 86400",
            ),
        ];
        for (edit, message) in cases {
            let mut limits = ConnectionLimits::default();
            edit(&mut limits);
            assert_eq!(limits.check(), Err(message.to_owned()));
        }
    }

    #[test]
    fn the_http_table_is_read_and_checked_by_config_load() {
        use crate::config::Config;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authz.toml");
        std::fs::write(
            &path,
            "[http]\nmax_connections = 100\nheader_read_timeout_secs = 5\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(
            config.http,
            ConnectionLimits {
                max_connections: 100,
                header_read_timeout_secs: 5,
                ..ConnectionLimits::default()
            }
        );
        std::fs::write(&path, "[http]\nmax_connections_per_address = 0\n").unwrap();
        assert_eq!(
            Config::load(&path).unwrap_err().to_string(),
            format!(
                "the config file {} is not usable: [http] max_connections_per_address must be at least 1",
                path.display()
            )
        );
        std::fs::write(&path, "[http]\nmax_conections = 10\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `max_conections`"), "{err}");
    }

    fn registry(max: usize, max_per_client: usize) -> Registry {
        Registry::new(&ConnectionLimits {
            max_connections: max,
            max_connections_per_address: max_per_client,
            ..ConnectionLimits::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn over_the_per_address_cap_only_that_address_is_refused() {
        let mut r = registry(10, 2);
        let now = Instant::now();
        let first = r.admit(ip("127.0.0.2"), now).unwrap();
        r.admit(ip("127.0.0.2"), now).unwrap();
        assert_eq!(
            r.admit(ip("127.0.0.2"), now).unwrap_err(),
            Refusal::AddressFull
        );
        r.admit(ip("127.0.0.3"), now).unwrap();
        // One /64 is one client.
        r.admit(ip("2001:db8::1"), now).unwrap();
        r.admit(ip("2001:db8::2:1"), now).unwrap();
        assert_eq!(
            r.admit(ip("2001:db8::ffff:1"), now).unwrap_err(),
            Refusal::AddressFull
        );
        r.admit(ip("2001:db8:0:1::1"), now).unwrap();
        // A closed connection gives its place back.
        r.release(first.id);
        r.admit(ip("127.0.0.2"), now).unwrap();
        assert_eq!(r.open.len(), 6);
        assert_eq!(r.per_client[&ip("127.0.0.2")], 2);
    }

    #[test]
    fn at_the_cap_the_oldest_connection_without_a_request_makes_room() {
        let mut r = registry(3, 10);
        let now = Instant::now();
        let a = r.admit(ip("127.0.0.2"), now).unwrap();
        let b = r.admit(ip("127.0.0.3"), now).unwrap();
        let c = r.admit(ip("127.0.0.3"), now).unwrap();
        let busy = a.start_request();
        let d = r.admit(ip("127.0.0.4"), now).unwrap();
        assert!(b.evicted.load(Ordering::Acquire));
        assert!(!a.evicted.load(Ordering::Acquire));
        assert!(!c.evicted.load(Ordering::Acquire));
        assert_eq!(
            r.open.keys().copied().collect::<Vec<_>>(),
            [a.id, c.id, d.id]
        );
        assert_eq!(r.per_client[&ip("127.0.0.3")], 1);
        // The evicted connection's task releasing it later changes nothing.
        r.release(b.id);
        assert_eq!(r.open.len(), 3);
        // Once a's request is done it is the oldest idle one.
        drop(busy);
        r.admit(ip("127.0.0.5"), now).unwrap();
        assert!(a.evicted.load(Ordering::Acquire));
        assert_eq!(r.open.keys().copied().collect::<Vec<_>>(), [c.id, d.id, 4]);
    }

    #[test]
    fn at_the_cap_with_every_connection_busy_the_new_one_is_refused() {
        let mut r = registry(2, 10);
        let now = Instant::now();
        let a = r.admit(ip("127.0.0.2"), now).unwrap();
        let b = r.admit(ip("127.0.0.3"), now).unwrap();
        let _busy = (a.start_request(), b.start_request());
        assert_eq!(r.admit(ip("127.0.0.4"), now).unwrap_err(), Refusal::AllBusy);
        assert!(!a.evicted.load(Ordering::Acquire) && !b.evicted.load(Ordering::Acquire));
        assert_eq!(r.open.len(), 2);
    }

    #[test]
    fn deadlines_follow_the_connection_activity() {
        let timeouts = ConnectionLimits::default().timeouts();
        let accepted = Instant::now();
        let conn = Arc::new(Conn::new(0, ip("127.0.0.2"), accepted));
        // First head: from the accept.
        assert_eq!(conn.deadline(&timeouts), Some(accepted + timeouts.header));
        let request = conn.start_request();
        assert_eq!(conn.deadline(&timeouts), None);
        // Bytes of a body do not start a head.
        conn.bytes_arrived();
        assert_eq!(conn.deadline(&timeouts), None);
        drop(request);
        let idle_since = conn.activity().idle_since;
        assert_eq!(conn.deadline(&timeouts), Some(idle_since + timeouts.idle));
        conn.bytes_arrived();
        let head_since = conn.activity().head_since.unwrap();
        assert!(head_since >= idle_since);
        assert_eq!(conn.deadline(&timeouts), Some(head_since + timeouts.header));
        // More bytes of the same head do not move its deadline.
        conn.bytes_arrived();
        assert_eq!(conn.activity().head_since, Some(head_since));
    }

    #[tokio::test]
    async fn handlers_get_the_client_address_with_connect_info() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let limits = ConnectionLimits::default();
            serve_router(listener, app, &limits, Gauge::default(), shutdown).await;
        });
        // From another loopback address than the server's, so the answer cannot be its own.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        // So the bound port does not block a wildcard listener on it meanwhile.
        socket.set_reuseaddr(true).unwrap();
        socket.bind("127.0.0.5:0".parse().unwrap()).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let me = stream.local_addr().unwrap();
        let mut request = &b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..];
        while !request.is_empty() {
            stream.writable().await.unwrap();
            match stream.try_write(request) {
                Ok(n) => request = &request[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let mut raw = Vec::new();
        let mut buf = [0; 4096];
        loop {
            stream.readable().await.unwrap();
            match stream.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(body, me.to_string());
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }
}
