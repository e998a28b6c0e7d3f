//! `null-pubsub`: the least work a pubsub component (XEP-0060) can do, as the yardstick of
//! `scripts/bench-fanout`. What it reaches through an XMPP server is that server's routing
//! limit for components: no component, the guard included, can deliver faster through it.
//!
//! It connects as an external component (XEP-0114, with the guard's `xmpp-component` stream)
//! and keeps every subscription in memory. A subscribe is answered at once (no signature
//! check, no access model: any `<oauth/>` in it is ignored); a publish gets its result, then
//! one notification per subscriber of the node, built by string concatenation from a
//! template serialized once per publish (no XML tree per notification). Nothing is stored:
//! no items, no archive, no last item on subscribe. With `--envelope guard` each notification
//! also carries what the guard's do (a message id, an XEP-0359 `<stanza-id/>`), so that the
//! server's cost of those bytes can be told from the cost of the guard's own work.
//!
//! It answers `subscribe`, `unsubscribe`, `create` and `publish` in `<pubsub/>`, disco#info
//! and ping; any other IQ get or set gets `service-unavailable`. Messages, presences and IQ
//! results are dropped. It logs `connected` on standard error once the handshake is done,
//! and on SIGTERM or Ctrl-C closes the stream and prints what it handled:
//! `null-pubsub: stopped: 3 nodes, 2000 subscriptions, 50 publishes, 50000 notifications`.
//! It does not reconnect: the connection's end ends it (exit status 1).

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;

use clap::Parser;
use minidom::Element;
use oauth_xmpp::Secret;
use tokio::sync::mpsc;
use xmpp_component::ns;
use xmpp_component::stream::{
    self, Limits, StanzaHead, StreamError, StreamEvent, StreamWriter, escape_attr,
};

/// A pubsub component that answers at once and fans out from a template: the routing limit
/// of the XMPP server it connects to.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The XMPP server's component port (`host:port`).
    #[arg(long)]
    server: String,
    /// The component JID (the server's `Component` entry).
    #[arg(long, default_value = "null-pubsub.localhost")]
    component: String,
    /// The component secret.
    #[arg(long, env = "NULL_SECRET", hide_env_values = true)]
    secret: String,
    /// What each notification carries besides the event.
    #[arg(long, value_enum, default_value_t = Envelope::Plain)]
    envelope: Envelope,
}

/// The envelope of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Envelope {
    /// `from`, `to` and `type` only: the least a notification needs.
    Plain,
    /// As the guard's: a 32-character message `id` and an XEP-0359 `<stanza-id by id/>`
    /// after the event (to tell the cost of the envelope from the cost of the guard's work).
    Guard,
}

/// The largest stanza read (a publish carries its payload).
const MAX_STANZA_BYTES: usize = 1 << 20;
/// The most bytes gathered before they go to the writer.
const BATCH_BYTES: usize = 64 * 1024;
/// Batches waiting for the writer, at most (memory stays within this many batches).
const WRITE_QUEUE: usize = 64;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let secret = Secret::new(args.secret.clone());
    let limits = Limits {
        max_stanza_bytes: MAX_STANZA_BYTES,
        ..Limits::default()
    };
    let (mut reader, writer) =
        match stream::connect(&args.server, &args.component, &secret, limits).await {
            Ok(halves) => halves,
            Err(e) => {
                eprintln!("null-pubsub: cannot connect to {}: {e}", args.server);
                return ExitCode::FAILURE;
            }
        };
    eprintln!(
        "null-pubsub: connected to {} as {}",
        args.server, args.component
    );
    let (batches, queue) = mpsc::channel(WRITE_QUEUE);
    let writing = tokio::spawn(write_batches(writer, queue));
    let mut service = Null::new(&args.component, args.envelope);
    let mut out = Vec::with_capacity(BATCH_BYTES);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let ended = loop {
        let event = tokio::select! {
            event = reader.next() => event,
            () = &mut stop => break None,
        };
        match event {
            Ok(StreamEvent::Stanza(e)) if e.is("error", ns::STREAMS) => {
                break Some(StreamError::from_stream_error(&e));
            }
            Ok(StreamEvent::Stanza(stanza)) => service.handle(&stanza, &mut out),
            Ok(
                StreamEvent::Oversized { head, .. }
                | StreamEvent::TooDeep { head, .. }
                | StreamEvent::Malformed { head, .. },
            ) => service.refuse(&head, "bad-request", &mut out),
            Ok(StreamEvent::Header { .. }) => {}
            Ok(StreamEvent::Closed) => break Some(StreamError::Closed),
            Err(e) => break Some(e),
        }
        // Send what this stanza produced once nothing more is waiting to be read, or once
        // the batch is large.
        if !out.is_empty()
            && (out.len() >= BATCH_BYTES || !reader.has_pending())
            && batches
                .send(std::mem::replace(&mut out, Vec::with_capacity(BATCH_BYTES)))
                .await
                .is_err()
        {
            break Some(StreamError::Io(std::io::Error::other("the writer stopped")));
        }
    };
    if !out.is_empty() {
        let _ = batches.send(out).await;
    }
    drop(batches);
    let written = writing.await;
    eprintln!("null-pubsub: stopped: {}", service.counts());
    match (ended, written) {
        (None, Ok(Ok(()))) => ExitCode::SUCCESS,
        (None, Ok(Err(e))) => {
            eprintln!("null-pubsub: {e}");
            ExitCode::FAILURE
        }
        (Some(e), _) => {
            eprintln!("null-pubsub: the connection ended: {e}");
            ExitCode::FAILURE
        }
        (None, Err(e)) => {
            eprintln!("null-pubsub: the writer failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Writes the batches in order until the queue closes, then closes the stream.
async fn write_batches(
    mut writer: StreamWriter,
    mut queue: mpsc::Receiver<Vec<u8>>,
) -> Result<(), StreamError> {
    while let Some(batch) = queue.recv().await {
        writer.send_raw(&batch).await?;
    }
    writer.close().await
}

/// The subscriptions, and what was handled.
struct Null {
    /// The component JID, escaped for an attribute.
    domain: String,
    /// Per node: the subscribed JIDs (escaped for an attribute), in subscription order.
    nodes: HashMap<String, Node>,
    publishes: u64,
    notifications: u64,
    /// Item ids handed out to publishes without one.
    next_item: u64,
    envelope: Envelope,
}

/// One node's subscribers.
#[derive(Default)]
struct Node {
    jids: Vec<String>,
    known: HashSet<String>,
}

impl Null {
    fn new(domain: &str, envelope: Envelope) -> Self {
        Self {
            domain: escape_attr(domain),
            nodes: HashMap::new(),
            publishes: 0,
            notifications: 0,
            next_item: 0,
            envelope,
        }
    }

    fn counts(&self) -> String {
        let subscriptions: usize = self.nodes.values().map(|n| n.jids.len()).sum();
        format!(
            "{} nodes, {subscriptions} subscriptions, {} publishes, {} notifications",
            self.nodes.len(),
            self.publishes,
            self.notifications
        )
    }

    /// Handles one stanza, appending what it sends to `out`.
    fn handle(&mut self, stanza: &Element, out: &mut Vec<u8>) {
        if stanza.name() != "iq" || !matches!(stanza.attr("type"), Some("get" | "set")) {
            return;
        }
        let kind = stanza.attr("type").unwrap_or_default();
        let pubsub = stanza.get_child("pubsub", ns::PUBSUB);
        let action = pubsub.and_then(|p| {
            p.children()
                .find(|c| c.ns() == ns::PUBSUB && c.name() != "options")
        });
        match (kind, action.map(Element::name)) {
            ("set", Some("subscribe")) => self.subscribe(stanza, action, out),
            ("set", Some("unsubscribe")) => {
                if let Some((node, jid)) = action.and_then(node_and_jid)
                    && let Some(n) = self.nodes.get_mut(node)
                {
                    let jid = escape_attr(jid);
                    if n.known.remove(&jid) {
                        n.jids.retain(|j| *j != jid);
                    }
                }
                self.result(stanza, "", out);
            }
            ("set", Some("create")) => self.result(stanza, "", out),
            ("set", Some("publish")) => self.publish(stanza, action, out),
            ("get", _) if stanza.has_child("ping", ns::PING) => self.result(stanza, "", out),
            ("get", _) if stanza.has_child("query", ns::DISCO_INFO) => {
                let info = format!(
                    "<query xmlns='{}'><identity category='pubsub' type='service' \
                     name='null pubsub'/><feature var='{}'/><feature var='{}'/></query>",
                    ns::DISCO_INFO,
                    ns::DISCO_INFO,
                    ns::PUBSUB
                );
                self.result(stanza, &info, out);
            }
            _ => self.refuse(&head_of(stanza), "service-unavailable", out),
        }
    }

    fn subscribe(&mut self, stanza: &Element, action: Option<&Element>, out: &mut Vec<u8>) {
        let Some((node, jid)) = action.and_then(node_and_jid) else {
            self.refuse(&head_of(stanza), "bad-request", out);
            return;
        };
        let escaped = escape_attr(jid);
        let entry = self.nodes.entry(node.to_owned()).or_default();
        if entry.known.insert(escaped.clone()) {
            entry.jids.push(escaped.clone());
        }
        let body = format!(
            "<pubsub xmlns='{}'><subscription node='{}' jid='{escaped}' \
             subscription='subscribed'/></pubsub>",
            ns::PUBSUB,
            escape_attr(node)
        );
        self.result(stanza, &body, out);
    }

    fn publish(&mut self, stanza: &Element, action: Option<&Element>, out: &mut Vec<u8>) {
        let Some(node) = action.and_then(|a| a.attr("node")) else {
            self.refuse(&head_of(stanza), "bad-request", out);
            return;
        };
        let item = action.and_then(|a| a.get_child("item", ns::PUBSUB));
        let id = match item.and_then(|i| i.attr("id")) {
            Some(id) => escape_attr(id),
            None => {
                self.next_item += 1;
                format!("null-{}", self.next_item)
            }
        };
        let payload = item
            .and_then(|i| i.children().next())
            .map(String::from)
            .unwrap_or_default();
        let node_attr = escape_attr(node);
        self.result(
            stanza,
            &format!(
                "<pubsub xmlns='{}'><publish node='{node_attr}'><item id='{id}'/></publish></pubsub>",
                ns::PUBSUB
            ),
            out,
        );
        self.publishes += 1;
        let Some(subscribers) = self.nodes.get(node) else {
            return;
        };
        // The template: everything but the recipient (and the message id), serialized once.
        let guard = self.envelope == Envelope::Guard;
        let head = format!(
            "<message from='{}' type='headline'{}",
            self.domain,
            if guard { " id='" } else { " to='" }
        );
        let stanza_id = if guard {
            format!(
                "<stanza-id xmlns='{}' by='{}' id='1-{}'/>",
                ns::SID,
                self.domain,
                self.publishes
            )
        } else {
            String::new()
        };
        let tail = format!(
            "'><event xmlns='{}'><items node='{node_attr}'><item id='{id}'>{payload}</item>\
             </items></event>{stanza_id}</message>",
            ns::PUBSUB_EVENT
        );
        out.reserve(subscribers.jids.len() * (head.len() + tail.len() + 96));
        for jid in &subscribers.jids {
            out.extend_from_slice(head.as_bytes());
            if guard {
                self.notifications += 1;
                out.extend_from_slice(format!("{:032x}' to='", self.notifications).as_bytes());
            }
            out.extend_from_slice(jid.as_bytes());
            out.extend_from_slice(tail.as_bytes());
        }
        if !guard {
            self.notifications += subscribers.jids.len() as u64;
        }
    }

    /// An IQ result to `request` with `body` as its payload.
    fn result(&self, request: &Element, body: &str, out: &mut Vec<u8>) {
        let head = head_of(request);
        self.reply(&head, "result", body, out);
    }

    /// An IQ error with `condition` (type `cancel`) to an IQ get or set; nothing to others.
    fn refuse(&self, head: &StanzaHead, condition: &str, out: &mut Vec<u8>) {
        if head.name != "iq" || !matches!(head.kind.as_deref(), Some("get" | "set")) {
            return;
        }
        let body = format!(
            "<error type='cancel'><{condition} xmlns='{}'/></error>",
            ns::STANZAS
        );
        self.reply(head, "error", &body, out);
    }

    fn reply(&self, head: &StanzaHead, kind: &str, body: &str, out: &mut Vec<u8>) {
        let to = escape_attr(head.from.as_deref().unwrap_or_default());
        let id = escape_attr(head.id.as_deref().unwrap_or_default());
        let reply = format!(
            "<iq type='{kind}' from='{}' to='{to}' id='{id}'>{body}</iq>",
            self.domain
        );
        out.extend_from_slice(reply.as_bytes());
    }
}

/// The `node` and `jid` of a `<subscribe/>` or `<unsubscribe/>`.
fn node_and_jid(action: &Element) -> Option<(&str, &str)> {
    Some((action.attr("node")?, action.attr("jid")?))
}

/// The attributes of a stanza that a reply needs.
fn head_of(stanza: &Element) -> StanzaHead {
    let attr = |n: &str| stanza.attr(n).map(str::to_owned);
    StanzaHead {
        name: stanza.name().to_owned(),
        id: attr("id"),
        from: attr("from"),
        to: attr("to"),
        kind: attr("type"),
    }
}
