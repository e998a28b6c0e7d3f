//! The running component: one connection at a time to the server's component port, a
//! worker thread that owns the [`Service`], and reconnection with backoff.
//!
//! ```text
//!   server ──► StreamReader ──► worker thread (Service, SQLite) ──► queue ──► StreamWriter ──► server
//!                                   ▲ every 200 ms: the change log (revocations)
//! ```
//!
//! The worker runs on its own thread because the service's storage calls block. Stanzas the
//! worker produces while the connection is down wait in the queue (bounded; the oldest are
//! kept) and go out after the reconnect. Subscriptions and items live in the database, so a
//! reconnect or a restart resumes where the guard stopped.

use std::future::Future;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use minidom::Element;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::refusal::Refusal;
use crate::service::Service;
use crate::storage::{SqliteStorage, StorageError};
use crate::stream::{self, StreamError, StreamEvent};

/// How often the worker reads the change log.
pub const CHANGE_POLL: Duration = Duration::from_millis(200);
/// How many outgoing stanzas wait while the connection is down.
pub const QUEUE_CAPACITY: usize = 10_000;
/// The first reconnection delay; it doubles up to `reconnect_max_secs`.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Why the component stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config has no component secret.
    #[error("no component secret: set `secret` in the config or GUARD_SECRET")]
    NoSecret,
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] authz_server::StoreError),
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
}

/// What the worker thread receives.
enum Work {
    Stanza(Box<Element>),
    Refuse(Box<(stream::StanzaHead, Refusal)>),
}

/// Runs the guard until `shutdown` completes (or the server refuses the component).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let secret = config.secret.clone().ok_or(RunError::NoSecret)?;
    let store = Arc::new(authz_server::Store::open(&config.database)?);
    let storage = SqliteStorage::open(&config.database)?;
    let service = Service::new(&config, Box::new(storage), store);

    let (work_tx, work_rx) = std_mpsc::channel::<Work>();
    let (out_tx, mut out_rx) = mpsc::channel::<Element>(QUEUE_CAPACITY);
    let worker = std::thread::Builder::new()
        .name("pubsub-guard-service".into())
        .spawn(move || worker(service, work_rx, out_tx))
        .map_err(|_| RunError::Worker)?;

    tokio::pin!(shutdown);
    let mut backoff = FIRST_BACKOFF;
    let result = loop {
        let attempt = stream::connect(
            &config.server,
            &config.component,
            &secret,
            config.max_stanza_bytes,
        );
        let connected = tokio::select! {
            () = &mut shutdown => break Ok(()),
            c = attempt => c,
        };
        match connected {
            Ok((reader, writer)) => {
                info!(
                    server = config.server,
                    component = config.component,
                    "connected"
                );
                backoff = FIRST_BACKOFF;
                let served = serve(
                    &config,
                    reader,
                    writer,
                    &work_tx,
                    &mut out_rx,
                    &mut shutdown,
                )
                .await;
                match served {
                    Ok(()) => break Ok(()),
                    Err(e) => warn!("disconnected: {e}"),
                }
                if worker.is_finished() {
                    break Err(RunError::Worker);
                }
            }
            Err(e) if e.is_refusal() => {
                error!(
                    component = config.component,
                    "the server refused the component: {e}"
                );
                break Err(RunError::Refused {
                    component: config.component.clone(),
                    source: e,
                });
            }
            Err(e) => warn!(
                server = config.server,
                "cannot connect: {e}; retrying in {backoff:?}"
            ),
        }
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            () = sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(config.reconnect_max());
    };
    drop(work_tx);
    // The worker ends when its queue closes; it holds no lock across stanzas.
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    info!("stopped");
    result
}

/// Serves one connection until it fails (`Err`) or `shutdown` completes (`Ok`).
async fn serve(
    config: &Config,
    mut reader: stream::StreamReader,
    mut writer: stream::StreamWriter,
    work: &std_mpsc::Sender<Work>,
    outgoing: &mut mpsc::Receiver<Element>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<(), StreamError> {
    let keepalive = config.keepalive();
    let mut last_write = Instant::now();
    loop {
        let idle = sleep(keepalive.saturating_sub(last_write.elapsed()));
        tokio::select! {
            () = &mut *shutdown => {
                let _ = writer.close().await;
                return Ok(());
            }
            event = reader.next() => {
                let work_item = match event? {
                    StreamEvent::Stanza(e) if e.name() == "error" && e.ns() == crate::ns::STREAMS => {
                        return Err(StreamError::from_stream_error(&e));
                    }
                    StreamEvent::Stanza(e) => Work::Stanza(Box::new(e)),
                    StreamEvent::Oversized { head, bytes } => {
                        Work::Refuse(Box::new((head, Refusal::too_large(bytes, config.max_stanza_bytes))))
                    }
                    StreamEvent::Malformed { head, reason } => {
                        Work::Refuse(Box::new((head, Refusal::bad_request(None, format!("the stanza is malformed: {reason}")))))
                    }
                    StreamEvent::Closed => return Err(StreamError::Closed),
                    StreamEvent::Header { .. } => continue,
                };
                if work.send(work_item).is_err() {
                    return Err(StreamError::Io(std::io::Error::other("the service worker stopped")));
                }
            }
            stanza = outgoing.recv() => {
                let Some(stanza) = stanza else {
                    return Err(StreamError::Io(std::io::Error::other("the service worker stopped")));
                };
                writer.send(&stanza).await?;
                last_write = Instant::now();
            }
            () = idle => {
                debug!("keepalive");
                writer.keepalive().await?;
                last_write = Instant::now();
            }
        }
    }
}

/// The worker thread: handles stanzas in arrival order and follows the change log.
fn worker(mut service: Service, work: std_mpsc::Receiver<Work>, out: mpsc::Sender<Element>) {
    let send = |stanzas: Vec<Element>| {
        for stanza in stanzas {
            if let Err(mpsc::error::TrySendError::Full(stanza)) = out.try_send(stanza) {
                warn!(
                    to = stanza.attr("to"),
                    "the outgoing queue is full ({QUEUE_CAPACITY}); dropped a stanza"
                );
            }
        }
    };
    let mut next_poll = std::time::Instant::now();
    loop {
        let wait = next_poll.saturating_duration_since(std::time::Instant::now());
        match work.recv_timeout(wait) {
            Ok(Work::Stanza(stanza)) => send(service.handle(&stanza)),
            Ok(Work::Refuse(refused)) => send(
                service
                    .refuse_head(&refused.0, &refused.1)
                    .into_iter()
                    .collect(),
            ),
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if std::time::Instant::now() >= next_poll {
            send(service.follow_changes());
            next_poll = std::time::Instant::now() + CHANGE_POLL;
        }
    }
}
