//! A small XMPP client (RFC 6120) for loopback demos and tests: plaintext TCP, SASL PLAIN,
//! resource binding, initial presence; then IQs with their replies and a queue of incoming
//! messages. It reads the stream with the guard's [`StreamReader`].
//!
//! Not for the open network: it does no TLS, so the server must allow unencrypted logins
//! (Prosody: `c2s_require_encryption = false`, `allow_unencrypted_plain_auth = true`), which
//! is only sane on 127.0.0.1.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use minidom::Element;
use minidom::rxml::{Namespace, NcName};
use oauth_xmpp::Secret;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use xmpp_component::stream::{StreamError, StreamEvent, StreamReader};

/// The client namespace.
pub const CLIENT: &str = "jabber:client";
const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const STREAMS: &str = "http://etherx.jabber.org/streams";
/// The largest stanza the client accepts.
const MAX_STANZA: usize = 1 << 20;
/// How long the login may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the client failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The stream failed (not well-formed, closed, a stream error).
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The server refused the login.
    #[error("the server refused the login of {jid}: {condition}")]
    Auth {
        /// Who tried.
        jid: String,
        /// The SASL failure condition.
        condition: String,
    },
    /// The server answered something this client does not expect.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection is gone.
    #[error("the connection is closed")]
    Closed,
    /// The connection ended by itself: the server closed the stream, sent a stream error,
    /// or the socket failed.
    #[error("the connection was lost: {reason}")]
    Lost {
        /// What happened, in words.
        reason: String,
        /// The condition of the server's stream error, if it sent one (`system-shutdown`;
        /// `conflict` when another session bound the same resource).
        condition: Option<String>,
    },
}

/// An XML name known to be valid.
pub fn name(name: &'static str) -> NcName {
    NcName::try_from(name).expect("a valid XML name")
}

/// Serializes a stanza to one line of XML.
pub fn xml(element: &Element) -> String {
    String::from(element)
}

/// Why the read loop ended, once it has: in words, and the condition of the server's
/// stream error if there was one.
type EndOfStream = Arc<Mutex<Option<(String, Option<String>)>>>;

/// How many stanzas a [`Client`] has sent and received: every top-level element after the
/// stream headers (the SASL and binding exchanges included, the stream headers and the
/// closing tag not), for load tests that report the traffic they caused.
#[derive(Debug, Default)]
pub struct StanzaCounts {
    sent: AtomicU64,
    received: AtomicU64,
}

impl StanzaCounts {
    /// Stanzas written so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stanzas read so far (whether or not anyone took them from the client).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn wrote(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// A logged-in XMPP client.
pub struct Client {
    jid: String,
    counts: Arc<StanzaCounts>,
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Element>>>>,
    messages: mpsc::UnboundedReceiver<Element>,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
    ended: EndOfStream,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("jid", &self.jid)
            .finish_non_exhaustive()
    }
}

/// Reads the stream's stanzas (the guard's reader, with a client's view of failures), and
/// counts them.
struct Events(StreamReader, Arc<StanzaCounts>);

impl Events {
    fn new(half: OwnedReadHalf, counts: Arc<StanzaCounts>) -> Self {
        Self(StreamReader::new(half, MAX_STANZA), counts)
    }

    async fn stanza(&mut self) -> Result<Element, ClientError> {
        loop {
            let event = self.0.next().await;
            if matches!(event, Ok(StreamEvent::Stanza(_))) {
                self.1.received.fetch_add(1, Ordering::Relaxed);
            }
            match event {
                Err(StreamError::Closed) | Ok(StreamEvent::Closed) => {
                    return Err(ClientError::Closed);
                }
                Err(e) => return Err(e.into()),
                Ok(StreamEvent::Stanza(e)) if e.is("error", STREAMS) => {
                    return Err(StreamError::from_stream_error(&e).into());
                }
                Ok(StreamEvent::Stanza(e)) => return Ok(e),
                Ok(StreamEvent::Header { .. }) => {}
                Ok(
                    StreamEvent::Oversized { .. }
                    | StreamEvent::TooDeep { .. }
                    | StreamEvent::Malformed { .. },
                ) => {
                    return Err(ClientError::Protocol("an unreadable stanza".into()));
                }
            }
        }
    }
}

fn header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{CLIENT}' xmlns:stream='{STREAMS}' \
         to='{domain}' version='1.0'>"
    )
}

impl Client {
    /// Connects to `server` (`host:port`), logs in as `jid` (bare: `user@domain`) with SASL
    /// PLAIN, binds `resource`, and sends initial presence (pubsub notifications to a bare
    /// JID reach only online resources).
    pub async fn connect(
        server: &str,
        jid: &str,
        password: &Secret,
        resource: &str,
    ) -> Result<Self, ClientError> {
        tokio::time::timeout(LOGIN_TIMEOUT, Self::login(server, jid, password, resource))
            .await
            .map_err(|_| ClientError::Timeout(LOGIN_TIMEOUT))?
    }

    async fn login(
        server: &str,
        jid: &str,
        password: &Secret,
        resource: &str,
    ) -> Result<Self, ClientError> {
        let (user, domain) = jid
            .split_once('@')
            .ok_or_else(|| ClientError::Protocol(format!("{jid:?} is not user@domain")))?;
        let socket = TcpStream::connect(server).await?;
        socket.set_nodelay(true)?;
        let (read, mut write) = socket.into_split();
        let counts = Arc::new(StanzaCounts::default());
        let mut events = Events::new(read, Arc::clone(&counts));

        write.write_all(header(domain).as_bytes()).await?;
        let features = events.stanza().await?;
        let offers_plain = features
            .get_child("mechanisms", SASL)
            .is_some_and(|m| m.children().any(|c| c.text() == "PLAIN"));
        if !offers_plain {
            return Err(ClientError::Protocol(format!(
                "the server does not offer SASL PLAIN without TLS: {}",
                xml(&features)
            )));
        }
        let credentials = format!("\0{user}\0{}", password.expose());
        let auth = format!(
            "<auth xmlns='{SASL}' mechanism='PLAIN'>{}</auth>",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        );
        write.write_all(auth.as_bytes()).await?;
        counts.wrote();
        let answer = events.stanza().await?;
        if !answer.is("success", SASL) {
            let condition = answer
                .children()
                .next()
                .map_or_else(|| xml(&answer), |c| c.name().to_owned());
            return Err(ClientError::Auth {
                jid: jid.to_owned(),
                condition,
            });
        }

        events.0.restart();
        write.write_all(header(domain).as_bytes()).await?;
        let _features = events.stanza().await?;
        let bind = format!(
            "<iq type='set' id='bind-1' xmlns='{CLIENT}'><bind xmlns='{BIND}'>\
             <resource>{resource}</resource></bind></iq>"
        );
        write.write_all(bind.as_bytes()).await?;
        counts.wrote();
        let bound = events.stanza().await?;
        let full_jid = bound
            .get_child("bind", BIND)
            .and_then(|b| b.get_child("jid", BIND))
            .map(Element::text)
            .ok_or_else(|| ClientError::Protocol(format!("binding failed: {}", xml(&bound))))?;
        write.write_all(b"<presence/>").await?;
        counts.wrote();

        let pending: Arc<Mutex<HashMap<String, oneshot::Sender<Element>>>> = Arc::default();
        let (messages_tx, messages) = mpsc::unbounded_channel();
        let writer = Arc::new(tokio::sync::Mutex::new(write));
        let ended = Arc::default();
        let reader = tokio::spawn(read_loop(
            events,
            Arc::clone(&counts),
            Arc::clone(&writer),
            Arc::clone(&pending),
            messages_tx,
            Arc::clone(&ended),
        ));
        Ok(Self {
            jid: full_jid,
            counts,
            writer,
            pending,
            messages,
            next_id: AtomicU64::new(1),
            reader,
            ended,
        })
    }

    /// The full JID the server bound (`user@domain/resource`): the `from` the server stamps,
    /// and so the `from` to sign.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// The bare JID.
    pub fn bare(&self) -> &str {
        xmpp_component::jid::bare(&self.jid)
    }

    /// Sends a stanza.
    pub async fn send(&self, stanza: &Element) -> Result<(), ClientError> {
        let bytes = xml(stanza);
        self.writer.lock().await.write_all(bytes.as_bytes()).await?;
        self.counts.wrote();
        Ok(())
    }

    /// How many stanzas this client has sent and received; the handle keeps counting after
    /// the client is moved into a task.
    pub fn counts(&self) -> Arc<StanzaCounts> {
        Arc::clone(&self.counts)
    }

    /// Sends an IQ (giving it an id if it has none) and waits for its result or error.
    pub async fn iq(&self, mut iq: Element, wait: Duration) -> Result<Element, ClientError> {
        let id = match iq.attr("id") {
            Some(id) => id.to_owned(),
            None => {
                let id = format!("q{}", self.next_id.fetch_add(1, Ordering::Relaxed));
                iq.set_attr(Namespace::NONE, name("id"), id.as_str());
                id
            }
        };
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(id.clone(), tx);
        self.send(&iq).await?;
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                self.lock_pending().remove(&id);
                Err(ClientError::Timeout(wait))
            }
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Element>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next incoming message, or `None` after `wait` (or when the connection is gone).
    pub async fn next_message(&mut self, wait: Duration) -> Option<Element> {
        self.wait_message(wait).await.ok().flatten()
    }

    /// The next incoming message, `Ok(None)` when none came within `wait`, or
    /// [`ClientError::Lost`] once the connection has ended and every message that came
    /// before the end has been taken.
    pub async fn wait_message(&mut self, wait: Duration) -> Result<Option<Element>, ClientError> {
        match tokio::time::timeout(wait, self.messages.recv()).await {
            Ok(Some(message)) => Ok(Some(message)),
            Ok(None) => Err(self.lost()),
            Err(_) => Ok(None),
        }
    }

    /// A message that has already arrived, without waiting: `Ok(None)` when there is none
    /// yet, [`ClientError::Lost`] as [`Client::wait_message`] says.
    pub fn try_message(&mut self) -> Result<Option<Element>, ClientError> {
        match self.messages.try_recv() {
            Ok(message) => Ok(Some(message)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(self.lost()),
        }
    }

    /// Whether the connection has ended (messages that came before the end may still be
    /// waiting to be taken).
    pub fn is_closed(&self) -> bool {
        self.reader.is_finished() || self.messages.is_closed()
    }

    fn lost(&self) -> ClientError {
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (reason, condition) =
            ended.unwrap_or_else(|| ("the connection is closed".into(), None));
        ClientError::Lost { reason, condition }
    }

    /// Closes the stream.
    pub async fn close(self) {
        let mut writer = self.writer.lock().await;
        if writer
            .write_all(b"<presence type='unavailable'/></stream:stream>")
            .await
            .is_ok()
        {
            self.counts.wrote();
        }
        let _ = writer.shutdown().await;
        drop(writer);
        self.reader.abort();
    }
}

/// Routes incoming stanzas: IQ replies to their waiters, messages to the queue; answers
/// the server's own IQs (ping with a result, anything else with `service-unavailable`).
async fn read_loop(
    mut events: Events,
    counts: Arc<StanzaCounts>,
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Element>>>>,
    messages: mpsc::UnboundedSender<Element>,
    ended: EndOfStream,
) {
    let reason = loop {
        let stanza = match events.stanza().await {
            Ok(stanza) => stanza,
            Err(ClientError::Closed) => break ("the server closed the stream".to_owned(), None),
            Err(ClientError::Stream(StreamError::Server { condition, text })) => {
                let e = StreamError::Server {
                    condition: condition.clone(),
                    text,
                };
                break (e.to_string(), Some(condition));
            }
            Err(e) => break (e.to_string(), None),
        };
        match (stanza.name(), stanza.attr("type")) {
            ("iq", Some("result" | "error")) => {
                let waiter = stanza
                    .attr("id")
                    .and_then(|id| pending.lock().unwrap_or_else(|e| e.into_inner()).remove(id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(stanza);
                }
            }
            ("message", _) => {
                let _ = messages.send(stanza);
            }
            ("iq", Some(kind @ ("get" | "set"))) => {
                let is_ping = kind == "get" && stanza.has_child("ping", "urn:xmpp:ping");
                let answer = iq_answer(&stanza, is_ping);
                if writer
                    .lock()
                    .await
                    .write_all(answer.as_bytes())
                    .await
                    .is_ok()
                {
                    counts.wrote();
                }
            }
            _ => {}
        }
    };
    // Recorded before the queue's sender is dropped, so a reader of the closed queue sees it.
    *ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    // Dropping the waiters tells them the connection is gone.
    pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// The answer to an IQ request from someone else: a result for a ping, else
/// `service-unavailable` (RFC 6120 §8.4: never leave an IQ unanswered).
fn iq_answer(request: &Element, is_ping: bool) -> String {
    let mut reply = Element::builder("iq", CLIENT)
        .attr(name("type"), if is_ping { "result" } else { "error" })
        .build();
    if let Some(id) = request.attr("id") {
        reply.set_attr(Namespace::NONE, name("id"), id);
    }
    if let Some(from) = request.attr("from") {
        reply.set_attr(Namespace::NONE, name("to"), from);
    }
    if !is_ping {
        reply.append_child(oauth_xmpp::error_element(
            CLIENT,
            oauth_xmpp::ErrorType::Cancel,
            "service-unavailable",
            "this client offers no services",
            None,
        ));
    }
    xml(&reply)
}

/// The command-line options every demo client shares: where to log in, as whom, and which
/// pubsub service to talk to.
#[derive(Debug, Clone, clap::Args)]
pub struct Account {
    /// The XMPP server's client port.
    #[arg(long, default_value = "127.0.0.1:5222")]
    pub server: String,
    /// The XMPP account (bare JID).
    #[arg(long)]
    pub jid: String,
    /// Its password.
    #[arg(long, env = "XMPP_PASSWORD", hide_env_values = true)]
    pub password: String,
    /// The pubsub service (the guard's component JID).
    #[arg(long, default_value = "pubsub.localhost")]
    pub service: String,
}

impl Account {
    /// Logs in with `resource`.
    pub async fn connect(&self, resource: &str) -> Result<Client, ClientError> {
        Client::connect(
            &self.server,
            &self.jid,
            &Secret::new(self.password.clone()),
            resource,
        )
        .await
    }
}
