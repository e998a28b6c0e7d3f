//! The running component: one connection at a time to the server's component port, a
//! worker thread that owns the [`Service`], and reconnection with backoff.
//!
//! ```text
//!   server ──► reader ──► inbound queue ──► worker thread (Service, SQLite) ──► outbound queue ──► writer ──► server
//!                                               ▲ every 200 ms: the change log (revocations)
//! ```
//!
//! Both queues are bounded and nothing is ever dropped from them: when the server reads
//! slowly, the writer waits, the outbound queue fills, the worker waits to hand over its next
//! stanza, the inbound queue fills, and the reader stops reading the socket, so the server
//! holds what it has not yet delivered. Memory stays bounded by the two queues (see
//! [`INBOUND_CAPACITY`] and [`OUTBOUND_CAPACITY`]), whatever the burst.
//!
//! The reader gives each stanza in its compact form ([`crate::stanza::Stanza`], read from the
//! bytes by the stream's quick path), and the worker hands it to
//! [`Service::handle_stanza`] as it is: no minidom tree is made of a request.
//!
//! The worker runs on its own thread because the service's storage calls block. Stanzas the
//! worker produces while the connection is down wait in the outbound queue and go out after
//! the reconnect; a batch whose write failed is written again on the next connection.
//! Subscriptions and items live in the database, so a reconnect or a restart resumes where
//! the guard stopped.
//!
//! With `metrics_listen` in the config, [`run`] also serves the [`Metrics`] on that address
//! (`GET /metrics`, see the `telemetry` crate) until it stops.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use minidom::Element;
use tokio::sync::{mpsc, watch};
use tokio::time::sleep;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::refusal::Refusal;
use crate::service::Service;
use crate::stanza::Stanza;
use crate::storage::{DbStorage, StorageError};
use crate::stream::{self, StreamError, StreamEvent};

/// How often the worker reads the change log.
pub const CHANGE_POLL: Duration = Duration::from_millis(200);
/// How often, at most, the worker counts the nodes and subscriptions for the metrics.
pub const TOTALS_EVERY: Duration = Duration::from_secs(15);
/// How many received stanzas wait for the worker. Each is at most `max_stanza_bytes`, so
/// with the defaults the queue holds at most 4 MiB.
pub const INBOUND_CAPACITY: usize = 64;
/// How many stanzas wait for the writer. A notification is at most the published payload
/// (itself within `max_stanza_bytes`) and a few hundred bytes of envelope.
pub const OUTBOUND_CAPACITY: usize = 1024;
/// The most bytes the writer gathers into one socket write.
pub const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// How long a shutdown waits for the worker to finish what it received and for the writer
/// to send what the worker produced.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The first reconnection delay; it doubles up to `reconnect_max_secs`.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// How long a shutdown waits, after closing the stream, for the server to close its side.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Why the component stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config has no component secret.
    #[error("no component secret: set `secret` in the config or GUARD_SECRET")]
    NoSecret,
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] shared_store::StoreError),
    /// The guard's tables could not be opened.
    #[error("cannot open the guard's tables: {0}")]
    Storage(#[from] StorageError),
    /// The server refused the component (a wrong secret): retrying cannot help.
    #[error("the XMPP server refused the component {component}: {source}")]
    Refused {
        /// The component JID.
        component: String,
        /// The server's stream error.
        source: StreamError,
    },
    /// The worker thread died.
    #[error("the service worker stopped unexpectedly")]
    Worker,
    /// The metrics address could not be listened on.
    #[error(transparent)]
    Metrics(#[from] telemetry::BindError),
}

/// What the worker thread receives.
enum Work {
    /// A stanza as the reader gave it: compact, read by the service without a minidom tree.
    Stanza(Stanza),
    Refuse(Box<(stream::StanzaHead, Refusal)>),
    /// Wakes an idle worker to read the change log.
    Tick,
}

/// Runs the guard until `shutdown` completes (or the server refuses the component).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let secret = config.secret.clone().ok_or(RunError::NoSecret)?;
    let metrics = Metrics::default();
    let (metrics_stop, metrics_server) = match config.metrics_listen {
        Some(addr) => {
            let listener = telemetry::bind(addr).await?;
            info!(addr = %listener.local_addr().unwrap_or(addr), "serving metrics");
            let mut registry = telemetry::Registry::default();
            metrics.register(&mut registry);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let served = telemetry::serve(listener, Arc::new(registry), async {
                let _ = stopped.await;
            });
            (Some(stop), Some(tokio::spawn(served)))
        }
        None => (None, None),
    };
    let (work_tx, work_rx) = mpsc::channel::<Work>(INBOUND_CAPACITY);
    let (out_tx, mut out_rx) = mpsc::channel::<Element>(OUTBOUND_CAPACITY);
    let outbound = out_tx.downgrade();
    // The store's connections block (PostgreSQL's client runs a runtime of its own), so they
    // are opened, used and closed on the worker thread, never on this runtime.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), RunError>>();
    let worker = std::thread::Builder::new()
        .name("pubsub-guard-service".into())
        .spawn({
            // A weak sender: the listener must not keep the worker's queue open (the worker
            // stops when the queue closes).
            let (config, wake, metrics) = (config.clone(), work_tx.downgrade(), metrics.clone());
            move || match open_service(&config, wake, &metrics) {
                Ok((service, _listener)) => {
                    let _ = ready_tx.send(Ok(()));
                    let counting = config.metrics_listen.is_some();
                    worker(service, work_rx, out_tx, &metrics, counting);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .map_err(|_| RunError::Worker)?;
    ready_rx.await.map_err(|_| RunError::Worker)??;
    let ticker = tokio::spawn({
        let (work, metrics) = (work_tx.clone(), metrics.clone());
        async move {
            let mut every = tokio::time::interval(CHANGE_POLL);
            loop {
                every.tick().await;
                metrics.inbound_queue.set(queued(&work));
                // Upgraded only for this look, so the writer still sees the queue close.
                if let Some(out) = outbound.upgrade() {
                    metrics.outbound_queue.set(queued(&out));
                }
                // A full queue means the worker is busy; it reads the change log between
                // stanzas anyway.
                if let Err(mpsc::error::TrySendError::Closed(_)) = work.try_send(Work::Tick) {
                    return;
                }
            }
        }
    });

    tokio::pin!(shutdown);
    let limits = config.limits();
    let mut unsent = Unsent::default();
    let mut held = None;
    let mut backoff = FIRST_BACKOFF;
    let mut connection = None;
    let mut connected_before = false;
    let result = loop {
        let attempt = stream::connect_compact(&config.server, &config.component, &secret, limits);
        let connected = tokio::select! {
            () = &mut shutdown => break Ok(()),
            c = attempt => c,
        };
        match connected {
            Ok((mut reader, mut writer)) => {
                info!(
                    server = config.server,
                    component = config.component,
                    "connected"
                );
                backoff = FIRST_BACKOFF;
                metrics.connected.set(1);
                if connected_before {
                    metrics.reconnects.inc();
                }
                connected_before = true;
                let served = serve(
                    &config,
                    &metrics,
                    &mut reader,
                    &mut writer,
                    &work_tx,
                    &mut out_rx,
                    &mut unsent,
                    &mut held,
                    &mut shutdown,
                )
                .await;
                metrics.connected.set(0);
                match served {
                    Served::Shutdown { clean } => {
                        connection = clean.then_some((reader, writer));
                        break Ok(());
                    }
                    Served::Failed(e) => warn!("disconnected: {e}"),
                }
                if worker.is_finished() {
                    break Err(RunError::Worker);
                }
            }
            Err(e) if e.is_refusal() => {
                metrics.connect_failures.inc();
                error!(
                    component = config.component,
                    "the server refused the component: {e}"
                );
                break Err(RunError::Refused {
                    component: config.component.clone(),
                    source: e,
                });
            }
            Err(e) => {
                metrics.connect_failures.inc();
                warn!(
                    server = config.server,
                    "cannot connect: {e}; retrying in {backoff:?}"
                );
            }
        }
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            () = sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(config.reconnect_max());
    };
    // The worker ends when its queue closes, after the stanzas already received. A stanza
    // the reader still held goes to the worker while the writer drains, so that neither
    // waits on the other.
    ticker.abort();
    let feed = async move {
        if let Some(item) = held.take() {
            let _ = work_tx.send(item).await;
        }
        drop(work_tx);
    };
    match connection {
        Some((mut reader, mut writer)) => {
            let drain = async {
                while unsent.fill(&mut out_rx).await {
                    unsent.write(&mut writer).await?;
                }
                writer.close().await?;
                // What the server sent after the guard stopped reading is dropped, so that
                // the socket closes with a FIN the server reads after everything written,
                // not a reset that could discard the end of it.
                let _ = tokio::time::timeout(CLOSE_WAIT, reader.discard_until_closed()).await;
                Ok::<(), StreamError>(())
            };
            let drained =
                tokio::time::timeout(DRAIN_TIMEOUT, async { tokio::join!(feed, drain).1 }).await;
            match drained {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!("could not send everything before stopping: {e}"),
                Err(_) => warn!("stopped before everything was sent ({DRAIN_TIMEOUT:?})"),
            }
        }
        None => {
            // Nothing can be sent: the worker must not wait for the writer.
            out_rx.close();
            if tokio::time::timeout(DRAIN_TIMEOUT, feed).await.is_err() {
                warn!("stopped with the worker still busy ({DRAIN_TIMEOUT:?})");
            }
        }
    }
    // Dropping the queue unblocks a worker still waiting to hand over a stanza.
    drop(out_rx);
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    drop(metrics_stop);
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    info!("stopped");
    result
}

/// How many items wait in the queue `sender` feeds.
fn queued<T>(sender: &mpsc::Sender<T>) -> i64 {
    i64::try_from(sender.max_capacity() - sender.capacity()).unwrap_or(i64::MAX)
}

/// Opens the store and the guard's tables and makes the service. On PostgreSQL the store
/// tells of each change (LISTEN/NOTIFY) and the worker reads the change log then; on SQLite it
/// reads it every [`CHANGE_POLL`]. The listener, if any, must live as long as the service.
fn open_service(
    config: &Config,
    wake: mpsc::WeakSender<Work>,
    metrics: &Metrics,
) -> Result<(Service, Option<shared_store::db::Listener>), RunError> {
    // One connection for the token store and the guard's tables: on SQLite, two connections
    // of one process that both write empty each other's page cache at every transaction
    // (measured: 31 preads a subscribe, and a third more CPU for the scale bench).
    let mut db = shared_store::db::Database::open(&config.database)?;
    if config.metrics_listen.is_some() {
        db = db.with_observer(metrics.store_observer());
    }
    let db = Arc::new(db);
    let store = Arc::new(shared_store::Store::on(Arc::clone(&db))?);
    let storage = DbStorage::on(db)?.for_instance(&config.instance);
    let mut service = Service::new(config, Box::new(storage), Arc::clone(&store) as _)
        .with_group_commits()
        .with_metrics(metrics.clone());
    let news = Arc::new(AtomicBool::new(true));
    let listener = {
        let news = Arc::clone(&news);
        shared_store::Authorizations::watch_changes(
            &*store,
            Box::new(move || {
                news.store(true, Ordering::Relaxed);
                // A full queue means the worker is busy; it looks at the flag between stanzas.
                if let Some(work) = wake.upgrade() {
                    let _ = work.try_send(Work::Tick);
                }
            }),
        )?
    };
    if listener.is_some() {
        info!("following the change log by the database's notices");
        service.use_change_notices(news);
    }
    Ok((service, listener))
}

/// Stanzas taken from the outbound queue, serialized, not yet written. They outlive a
/// connection: a batch whose write failed goes out first on the next one.
#[derive(Default)]
struct Unsent {
    bytes: Vec<u8>,
}

impl Unsent {
    /// Waits for at least one stanza unless some are already waiting, then takes what else is
    /// queued, up to [`WRITE_BATCH_BYTES`]. `false` when the queue is closed and nothing waits.
    async fn fill(&mut self, outgoing: &mut mpsc::Receiver<Element>) -> bool {
        if self.bytes.is_empty() {
            match outgoing.recv().await {
                Some(stanza) => self.push(&stanza),
                None => return false,
            }
        }
        while self.bytes.len() < WRITE_BATCH_BYTES {
            match outgoing.try_recv() {
                Ok(stanza) => self.push(&stanza),
                Err(_) => break,
            }
        }
        true
    }

    fn push(&mut self, stanza: &Element) {
        if let Err(e) = stanza.write_to(&mut self.bytes) {
            // Every element the service builds serializes; this is a bug, not input.
            error!("cannot serialize a stanza: {e}");
        }
    }

    /// Writes the batch; it is kept when the write fails (or is cancelled).
    async fn write(&mut self, writer: &mut stream::StreamWriter) -> Result<(), StreamError> {
        writer.send_raw(&self.bytes).await?;
        self.bytes.clear();
        Ok(())
    }
}

/// How a connection ended.
enum Served {
    /// `shutdown` completed; `clean` when no write was cut short, so the stream can still
    /// take what is left to send.
    Shutdown {
        /// Whether the stream is still usable.
        clean: bool,
    },
    /// The connection failed.
    Failed(StreamError),
}

/// Serves one connection until it fails or `shutdown` completes. The reader and the writer
/// run side by side; each stops at its next safe point when the other fails or on shutdown.
/// A received stanza the reader could not yet queue is kept in `held`.
#[allow(clippy::too_many_arguments)]
async fn serve(
    config: &Config,
    metrics: &Metrics,
    reader: &mut stream::StreamReader<Stanza>,
    writer: &mut stream::StreamWriter,
    work: &mpsc::Sender<Work>,
    outgoing: &mut mpsc::Receiver<Element>,
    unsent: &mut Unsent,
    held: &mut Option<Work>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Served {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let worker_gone = || StreamError::Io(std::io::Error::other("the service worker stopped"));
    let read = async {
        let result: Result<(), StreamError> = async {
            loop {
                let item = match held.take() {
                    Some(item) => item,
                    None => tokio::select! {
                        event = reader.next() => match to_work(config, metrics, event?)? {
                            Some(item) => item,
                            None => continue,
                        },
                        () = stopped(stop_rx.clone()) => return Ok(()),
                    },
                };
                // Waits while the worker is behind: the socket is not read meanwhile.
                tokio::select! {
                    permit = work.reserve() => permit.map_err(|_| worker_gone())?.send(item),
                    () = stopped(stop_rx.clone()) => {
                        *held = Some(item);
                        return Ok(());
                    }
                }
            }
        }
        .await;
        let _ = stop_tx.send(true);
        result
    };
    let write = async {
        let keepalive = config.keepalive();
        let result: Result<(), StreamError> = async {
            loop {
                tokio::select! {
                    () = stopped(stop_rx.clone()) => return Ok(()),
                    filled = unsent.fill(outgoing) => {
                        if !filled {
                            return Err(worker_gone());
                        }
                    }
                    () = sleep(keepalive) => {
                        debug!("keepalive");
                        writer.keepalive().await?;
                        continue;
                    }
                }
                // A stop (shutdown, or the reader failed) lets the write in progress finish,
                // within the drain's time: a batch cut in the middle of a stanza would leave
                // the stream unusable, and on shutdown what was answered would be dropped.
                let write = unsent.write(writer);
                tokio::pin!(write);
                tokio::select! {
                    written = &mut write => written?,
                    () = stopped(stop_rx.clone()) => {
                        return match tokio::time::timeout(DRAIN_TIMEOUT, &mut write).await {
                            Ok(written) => written,
                            Err(_) => Err(StreamError::Io(std::io::Error::other(
                                "stopped in the middle of a write",
                            ))),
                        };
                    }
                }
            }
        }
        .await;
        let _ = stop_tx.send(true);
        result
    };
    let watch_shutdown = async {
        tokio::select! {
            () = shutdown.as_mut() => {
                let _ = stop_tx.send(true);
                true
            }
            () = stopped(stop_rx.clone()) => false,
        }
    };
    let (read, write, shut) = tokio::join!(read, write, watch_shutdown);
    if shut {
        return Served::Shutdown {
            clean: write.is_ok(),
        };
    }
    match read.and(write) {
        Err(e) => Served::Failed(e),
        Ok(()) => Served::Failed(StreamError::Closed),
    }
}

/// What the worker must do with an event of the stream; `None` for events it does not see.
fn to_work(
    config: &Config,
    metrics: &Metrics,
    event: StreamEvent<Stanza>,
) -> Result<Option<Work>, StreamError> {
    Ok(Some(match event {
        StreamEvent::Stanza(s) if s.root().is("error", crate::ns::STREAMS) => {
            return Err(StreamError::from_stream_error(&s.to_element()));
        }
        StreamEvent::Stanza(s) => {
            metrics.received(&s);
            Work::Stanza(s)
        }
        StreamEvent::Oversized { head, bytes } => {
            metrics.received_kind("oversized");
            Work::Refuse(Box::new((
                head,
                Refusal::too_large(bytes, config.max_stanza_bytes),
            )))
        }
        StreamEvent::TooDeep { head, limit } => {
            metrics.received_kind("too-deep");
            Work::Refuse(Box::new((head, Refusal::too_deep(limit))))
        }
        StreamEvent::Malformed { head, reason } => {
            metrics.received_kind("malformed");
            Work::Refuse(Box::new((
                head,
                Refusal::bad_request(None, format!("the stanza is malformed: {reason}")),
            )))
        }
        StreamEvent::Closed => return Err(StreamError::Closed),
        StreamEvent::Header { .. } => return Ok(None),
    }))
}

/// The most stanzas handled under one commit: those already waiting in the queue, so a quiet
/// guard answers each at once and a busy one commits less often.
const GROUP_MAX: usize = 64;

/// The worker thread: handles stanzas in arrival order and follows the change log. It waits
/// (blocks) whenever the outbound queue is full, and stops when either queue closes. With
/// `counting` (metrics are served), it counts the stanzas it sends, and the nodes and
/// subscriptions every [`TOTALS_EVERY`].
fn worker(
    mut service: Service,
    mut work: mpsc::Receiver<Work>,
    out: mpsc::Sender<Element>,
    metrics: &Metrics,
    counting: bool,
) {
    let mut open = true;
    let mut send = |stanza: Element| {
        if open {
            // Each stanza sent is looked into (what kind it is): only when someone scrapes.
            if counting {
                metrics.sent(&stanza);
            }
            if out.blocking_send(stanza).is_err() {
                open = false;
            }
        }
    };
    let mut next_poll = std::time::Instant::now();
    let mut next_count = std::time::Instant::now();
    // A work item taken from the queue after a group of stanzas, handled next.
    let mut next: Option<Work> = None;
    while let Some(item) = next.take().or_else(|| work.blocking_recv()) {
        match item {
            Work::Stanza(stanza) => {
                // The stanzas waiting behind it are handled with it, under one commit.
                let mut group = vec![stanza];
                while group.len() < GROUP_MAX {
                    match work.try_recv() {
                        Ok(Work::Stanza(more)) => group.push(more),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                service.handle_group(&group, &mut send);
            }
            Work::Refuse(refused) => {
                if let Some(reply) = service.refuse_head(&refused.0, &refused.1) {
                    send(reply);
                }
            }
            Work::Tick => {}
        }
        if std::time::Instant::now() >= next_poll {
            service.follow_changes_into(&mut send);
            next_poll = std::time::Instant::now() + CHANGE_POLL;
        }
        if counting && std::time::Instant::now() >= next_count {
            match service.totals() {
                Ok(totals) => {
                    metrics.nodes.set(gauge(totals.nodes));
                    metrics.subscriptions.set(gauge(totals.subscriptions));
                }
                Err(e) => warn!("cannot count the nodes and subscriptions: {e}"),
            }
            next_count = std::time::Instant::now() + TOTALS_EVERY;
        }
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
