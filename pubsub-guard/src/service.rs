//! The pubsub service (XEP-0060 subset) with the OAuth gate (XEP-0235, the profile's rules
//! O, R and N). Sans-IO: stanzas in, stanzas out, state in a [`Storage`] and the shared
//! token store. The component loop feeds it; tests call it directly.
//!
//! Implemented: disco#info / disco#items (XEP-0030), ping (XEP-0199), and the pubsub entity
//! use cases subscribe, unsubscribe, retrieve subscriptions, publish, retract and retrieve
//! items, with event notifications. Node management is the admin CLI's job (and the config's
//! templates), so the owner use cases answer `feature-not-implemented`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use minidom::Element;
use oauth_xmpp::replay::{Clock, SystemClock};
use oauth_xmpp::{Verified, Verifier, VerifierConfig, VerifyError};
use shared_store::Authorizations;
use shared_store::authz::{Change, ChangeKind};
use tracing::{debug, info, warn};

use crate::config::{Config, Template};
use crate::jid;
use crate::ns;
use crate::refusal::{Refusal, name};
use crate::stanza::{ElementRef, Stanza};
use crate::storage::{
    Access, ArchiveFrom, ArchiveQuery, Item, Node, Page, PageFrom, Span, Storage, StorageError,
    Subscription, SubscriptionFilter, Visibility,
};
use crate::stream::StanzaHead;
use crate::{archive, audit, datetime};

/// The pubsub features this service implements (disco#info, XEP-0060 §10).
pub const FEATURES: &[&str] = &[
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#retrieve-subscriptions",
    "http://jabber.org/protocol/pubsub#subscribe",
    "http://jabber.org/protocol/pubsub#subscription-notifications",
];

/// How often the sweeper drops items past their node's `max_age`, in seconds.
const SWEEP_EVERY_SECS: u64 = 60;

/// How many items one sweeper transaction drops at most.
const SWEEP_BATCH: usize = 5_000;

/// The most grants of one consumer from one owner that decide what is replayed to it (the
/// newest are kept).
pub const MAX_SPANS: usize = 64;

/// How many change-log entries one poll reads.
const CHANGES_PER_POLL: usize = 500;

/// The pubsub service behind the component.
pub struct Service {
    domain: String,
    storage: Box<dyn Storage>,
    store: Arc<dyn Authorizations>,
    verifier: VerifierConfig,
    templates: Vec<Template>,
    /// The second in which expiries were last logged. The authorization server logs them
    /// too; the guard does so as well so that expiries end subscriptions when it runs alone.
    expiries_logged_at: u64,
    /// The last change-log entry handled, once read from storage (the worker is its only
    /// writer, so it is read once).
    cursor: Option<i64>,
    /// The second of the last retention sweep.
    swept_at: u64,
    /// The clock (the system's, or a test's).
    clock: Box<dyn Clock + Send>,
    /// Where fresh ids come from (item ids, subids, message ids).
    ids: IdSource,
    /// Stanzas to send right after the reply to the current request (the last item sent
    /// to a new subscriber follows the subscribe's result).
    after_reply: Vec<Element>,
    /// Set by the store's change notices (PostgreSQL's LISTEN/NOTIFY) when the change log has
    /// news; `None` while the guard polls it instead.
    change_notices: Option<Arc<AtomicBool>>,
    /// Whether [`Service::handle_group`] may commit several requests at once.
    group_commits: bool,
    /// What was delivered under each grant since the last request ended (for the ledger).
    deliveries: audit::Deliveries,
    /// What it counts (refusals, revocation latency) for the metrics.
    metrics: crate::metrics::Metrics,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

type Outcome = Result<Option<Element>, Refusal>;

/// How many subscribers of a node a notification reads from storage at a time, and how many
/// subscriptions of a revoked token are ended at a time.
const SUBSCRIBERS_PAGE: usize = 1000;

/// How a requester may know a node without a signed request.
enum Known {
    /// Anyone may (an open node), or it publishes there: every item.
    Everything,
    /// It holds this live subscription.
    Subscriber(Subscription),
}

/// Where the service takes fresh ids from.
type IdSource = Box<dyn Fn() -> Result<String, String> + Send>;

/// Where the service hands each stanza it sends, in order.
pub type Sink<'a> = &'a mut dyn FnMut(Element);

impl Service {
    /// The service for the component `config.component`, on `storage` and the token `store`,
    /// with the system clock and ids from the OS random generator.
    pub fn new(config: &Config, storage: Box<dyn Storage>, store: Arc<dyn Authorizations>) -> Self {
        Self {
            domain: config.component.clone(),
            storage,
            store,
            verifier: VerifierConfig {
                window_secs: config.window_secs,
                accept_bare_jid_signatures: config.accept_bare_jid_signatures,
                allow_plaintext: config.allow_plaintext,
            },
            // Publishers are compared normalized (the config's check refused any that is
            // not a JID).
            templates: config
                .templates
                .iter()
                .map(|t| Template {
                    publishers: t
                        .publishers
                        .iter()
                        .map(|p| {
                            jid::normalize(p)
                                .map_or_else(|_| p.clone(), |p| jid::bare(&p).to_owned())
                        })
                        .collect(),
                    ..t.clone()
                })
                .collect(),
            expiries_logged_at: 0,
            cursor: None,
            swept_at: 0,
            clock: Box::new(SystemClock),
            ids: Box::new(|| shared_store::random::token(16).map_err(|e| e.to_string())),
            after_reply: Vec::new(),
            change_notices: None,
            group_commits: false,
            deliveries: audit::Deliveries::default(),
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// The same service counting into `metrics` (refusals, revocation latency).
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// How many nodes and subscriptions the storage holds (two counts: call it seldom).
    pub fn totals(&self) -> Result<crate::storage::Totals, StorageError> {
        self.storage.totals()
    }

    /// The same service committing the requests [`Service::handle_group`] is given together
    /// (on SQLite): only when the token store and the storage share one connection
    /// ([`shared_store::Store::on`], [`DbStorage`](crate::storage::DbStorage)`::on`), or the
    /// store's writes would wait for the group.
    pub fn with_group_commits(mut self) -> Self {
        self.group_commits = true;
        self
    }

    /// The same service reading `clock` instead of the system clock (tests move time).
    pub fn with_clock(mut self, clock: impl Clock + Send + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// The same service taking its ids from `ids` instead of the OS random generator.
    pub fn with_ids(mut self, ids: impl Fn() -> Result<String, String> + Send + 'static) -> Self {
        self.ids = Box::new(ids);
        self
    }

    fn now(&self) -> u64 {
        self.clock.now()
    }

    /// A fresh id (item ids, subids, message ids).
    fn new_id(&self) -> Result<String, Refusal> {
        (self.ids)().map_err(|e| {
            warn!("no fresh id: {e}");
            Refusal::internal()
        })
    }

    /// Handles one stanza from the server; returns the stanzas to send, in order (any
    /// notifications, then the reply). [`Service::handle_into`] hands them over one by one.
    pub fn handle(&mut self, stanza: &Element) -> Vec<Element> {
        let mut out = Vec::new();
        self.handle_into(stanza, &mut |e| out.push(e));
        out
    }

    /// Handles `stanzas` (requests that arrived together) as [`Service::handle_stanza`] would one
    /// by one, with the same replies in the same order, but with one commit for all of them
    /// when group commits are on: what they send is held until that commit, so nothing is
    /// acknowledged or delivered that is not stored. If the commit fails, none of their writes
    /// happened, and they are handled again one by one (each with its own outcome).
    pub fn handle_group(&mut self, stanzas: &[Stanza], out: Sink<'_>) {
        let grouped = stanzas.len() > 1
            && self.group_commits
            && match self.storage.begin_group() {
                Ok(begun) => begun,
                Err(e) => {
                    warn!("cannot begin a group commit ({e}); one by one");
                    false
                }
            };
        if !grouped {
            for stanza in stanzas {
                self.handle_stanza(stanza, out);
            }
            return;
        }
        let mut held = Vec::new();
        for stanza in stanzas {
            self.handle_one(stanza, &mut |e| held.push(e));
        }
        // Committed with the items they count (if the group fails, they are counted again
        // one by one).
        self.deliveries.flush(&*self.store);
        match self.storage.end_group() {
            Ok(()) => held.into_iter().for_each(out),
            Err(e) => {
                warn!(
                    "a group commit of {} requests failed ({e}); handling them one by one",
                    stanzas.len()
                );
                for stanza in stanzas {
                    self.handle_stanza(stanza, out);
                }
            }
        }
    }

    /// [`Service::handle_stanza`] for a stanza held as a minidom element (it is read through
    /// its compact form, [`Stanza::from_element`], as the stream reader gives it).
    pub fn handle_into(&mut self, stanza: &Element, out: Sink<'_>) {
        self.handle_stanza(&Stanza::from_element(stanza), out);
    }

    /// Handles one stanza from the server, as the stream reader gives it (a compact
    /// [`Stanza`]: what the service reads of a request, it reads there, and the `<oauth/>`
    /// of a subscribe is verified from it, with no minidom tree of the request made),
    /// giving each stanza to send to `out` as soon as it is made: first the notifications
    /// the request caused, then the reply. A publish is acknowledged only after the item is
    /// committed and its notifications were handed over, and however many subscribers a
    /// node has, no more than one stanza is held at a time.
    pub fn handle_stanza(&mut self, stanza: &Stanza, out: Sink<'_>) {
        self.handle_one(stanza, out);
        self.deliveries.flush(&*self.store);
    }

    /// [`Service::handle_stanza`], leaving what it delivered counted but not yet stored.
    fn handle_one(&mut self, stanza: &Stanza, out: Sink<'_>) {
        let stanza = stanza.root();
        match stanza.name() {
            "iq" => self.iq(stanza, out),
            "message" if stanza.attr("type") == Some("error") => {
                debug!(from = stanza.attr("from"), "a notification bounced");
            }
            "message" | "presence" => {
                debug!(kind = stanza.name(), from = stanza.attr("from"), "ignored");
            }
            other => warn!(element = other, "ignored an unknown top-level element"),
        }
    }

    /// Answers a stanza the reader refused (too large, or malformed), from its head alone.
    pub fn refuse_head(&self, head: &StanzaHead, refusal: &Refusal) -> Option<Element> {
        self.metrics.refused(refusal);
        let (Some(from), Some(to)) = (&head.from, &head.to) else {
            warn!(
                element = head.name,
                "refused a stanza without from/to: {}", refusal.text
            );
            return None;
        };
        info!(from = %from, element = head.name, "refused: {}", refusal.text);
        let answerable = match head.name.as_str() {
            "iq" => matches!(head.kind.as_deref(), Some("get" | "set")),
            "message" => head.kind.as_deref() != Some("error"),
            _ => false,
        };
        answerable.then(|| {
            let mut reply = self.reply(&head.name, head.id.as_deref(), from, to, "error");
            reply.append_child(refusal.to_element(ns::COMPONENT));
            reply
        })
    }

    /// An empty reply of type `kind` to the stanza `element` with `id` (sent by `from` to
    /// `to`).
    fn reply(&self, element: &str, id: Option<&str>, from: &str, to: &str, kind: &str) -> Element {
        let mut reply = Element::builder(element, ns::COMPONENT)
            .attr(name("type"), kind)
            .attr(name("from"), self.reply_from(to))
            .attr(name("to"), from)
            .build();
        if let Some(id) = id {
            reply.set_attr(minidom::rxml::Namespace::NONE, name("id"), id);
        }
        reply
    }

    /// The `from` of a reply to a stanza sent to `to`: `to` itself when it is in this
    /// component's domain, else the domain (a reply never leaves the domain).
    fn reply_from<'a>(&'a self, to: &'a str) -> &'a str {
        if jid::domain(to) == self.domain {
            to
        } else {
            &self.domain
        }
    }

    fn iq(&mut self, iq: ElementRef<'_>, out: Sink<'_>) {
        let kind = iq.attr("type").unwrap_or("");
        if !matches!(kind, "get" | "set") {
            if kind == "error" {
                let element = iq.to_element();
                // minidom cannot write what declares the prefix xml (see `writable`).
                let shown = if writable(&element) {
                    String::from(&element)
                } else {
                    "(not shown: it declares the prefix xml)".into()
                };
                debug!(from = iq.attr("from"), "an IQ error for us: {shown}");
            }
            return;
        }
        let id = iq.attr("id");
        let (Some(from), Some(to)) = (iq.attr("from"), iq.attr("to")) else {
            warn!("an IQ without from or to; nothing to answer");
            return;
        };
        // The sender, normalized once here; the signature check reads the stanza's own
        // `from`, as the consumer signed it.
        let sender = jid::normalize(from);
        let outcome = if jid::has_local(to) {
            Err(Refusal::service_unavailable(format!(
                "there is no entity {to} here"
            )))
        } else if let Err(e) = &sender {
            Err(Refusal::jid_malformed(format!(
                "the sender {from:?} is not a valid JID: {e}"
            )))
        } else {
            let sender = sender.as_deref().unwrap_or(from);
            let mut payloads = iq.children();
            match (payloads.next(), payloads.next()) {
                (Some(payload), None) => self.dispatch(kind, sender, iq, payload, out),
                _ => Err(Refusal::bad_request(
                    None,
                    "an IQ get or set must carry exactly one payload element",
                )),
            }
        };
        let reply = match outcome {
            Ok(payload) => {
                let mut reply = self.reply("iq", id, from, to, "result");
                if let Some(payload) = payload {
                    reply.append_child(payload);
                }
                Some(reply)
            }
            Err(refusal) => {
                self.record_refusal(iq, &refusal);
                let head = StanzaHead {
                    name: "iq".into(),
                    id: id.map(str::to_owned),
                    from: Some(from.to_owned()),
                    to: Some(to.to_owned()),
                    kind: Some(kind.into()),
                };
                self.refuse_head(&head, &refusal)
            }
        };
        // The reply goes after the notifications the request caused, and before what
        // follows it.
        if let Some(reply) = reply {
            out(reply);
        }
        for stanza in std::mem::take(&mut self.after_reply) {
            out(stanza);
        }
    }

    /// Writes `refusal` of `iq` to the ledger if it answered a subscribe, items request or
    /// archive query (who asked, which node, the owner's, the consumer the request named,
    /// and why).
    fn record_refusal(&self, iq: ElementRef<'_>, refusal: &Refusal) {
        let mut payloads = iq.children();
        let (Some(payload), None) = (payloads.next(), payloads.next()) else {
            return;
        };
        let Some((request, node)) = audit::audited_request(payload) else {
            return;
        };
        let owner = node.and_then(|name| match self.storage.node(name) {
            Ok(stored) => self.owner_of(name, stored.as_ref()),
            Err(_) => None,
        });
        let consumer = audit::named_consumer(payload);
        let from = iq.attr("from").unwrap_or("");
        let entry = audit::refusal_entry(from, request, node, owner, consumer, refusal);
        if let Err(e) = self.store.record(entry) {
            warn!(from, "cannot write a refusal to the ledger: {e}");
        }
    }

    fn dispatch(
        &mut self,
        kind: &str,
        from: &str,
        iq: ElementRef<'_>,
        payload: ElementRef<'_>,
        out: Sink<'_>,
    ) -> Outcome {
        match (kind, payload.ns(), payload.name()) {
            ("get", ns::DISCO_INFO, "query") => self.disco_info(from, payload.attr("node")),
            ("get", ns::DISCO_ITEMS, "query") => self.disco_items(from, payload.attr("node")),
            ("get", ns::PING, "ping") => Ok(None),
            ("set", ns::MAM, "query") => self.archive_query(from, iq, payload, out),
            ("get", ns::MAM, "query") => Ok(Some(archive::form())),
            (_, ns::PUBSUB, "pubsub") => self.pubsub(kind, from, iq, payload, out),
            (_, ns::PUBSUB_OWNER, "pubsub") => {
                let feature = match payload.children().next().map(|c| c.name()) {
                    Some("configure") => "config-node",
                    Some("default") => "retrieve-default",
                    Some("delete") => "delete-nodes",
                    Some("purge") => "purge-nodes",
                    Some("subscriptions") => "manage-subscriptions",
                    _ => "modify-affiliations",
                };
                Err(Refusal::unsupported(feature))
            }
            (_, namespace, element) => Err(Refusal::service_unavailable(format!(
                "this service does not handle <{element} xmlns='{namespace}'/> in an IQ {kind}"
            ))),
        }
    }

    // ----- XEP-0030 -----

    fn disco_info(&self, from: &str, node: Option<&str>) -> Outcome {
        let mut query = Element::builder("query", ns::DISCO_INFO).build();
        let identity = |kind: &str| {
            Element::builder("identity", ns::DISCO_INFO)
                .attr(name("category"), "pubsub")
                .attr(name("type"), kind)
                .build()
        };
        let known = match node {
            None => {
                let mut identity = identity("service");
                identity.set_attr(
                    minidom::rxml::Namespace::NONE,
                    name("name"),
                    "OAuth-guarded pubsub",
                );
                query.append_child(identity);
                None
            }
            Some(node) => {
                let known = self.known_node(node, from)?;
                query.set_attr(minidom::rxml::Namespace::NONE, name("node"), node);
                query.append_child(identity("leaf"));
                Some(known)
            }
        };
        let features = [
            ns::DISCO_INFO,
            ns::DISCO_ITEMS,
            ns::PUBSUB,
            ns::OAUTH,
            ns::PING,
            ns::RSM,
            ns::MAM,
            ns::SID,
        ];
        for feature in features.iter().chain(FEATURES) {
            query.append_child(
                Element::builder("feature", ns::DISCO_INFO)
                    .attr(name("var"), *feature)
                    .build(),
            );
        }
        if let Some(node) = known {
            query.append_child(archive::node_metadata(&node));
        }
        Ok(Some(query))
    }

    /// The nodes `from` may know of (XEP-0060 §5.2 lets a service list only those): the
    /// open nodes, and the protected nodes it publishes to or is subscribed to. Listing
    /// every protected node would tell anyone which accounts exist.
    fn disco_items(&self, from: &str, node: Option<&str>) -> Outcome {
        let mut query = Element::builder("query", ns::DISCO_ITEMS).build();
        match node {
            None => {
                for n in self.storage.nodes_known_to(from).map_err(storage_failed)? {
                    query.append_child(
                        Element::builder("item", ns::DISCO_ITEMS)
                            .attr(name("jid"), self.domain.as_str())
                            .attr(name("node"), n)
                            .build(),
                    );
                }
            }
            // Item ids of a node are listed through pubsub retrieval, under its access rules.
            Some(node) => {
                self.known_node(node, from)?;
                query.set_attr(minidom::rxml::Namespace::NONE, name("node"), node);
            }
        }
        Ok(Some(query))
    }

    // ----- XEP-0060 -----

    fn pubsub(
        &mut self,
        kind: &str,
        from: &str,
        iq: ElementRef<'_>,
        pubsub: ElementRef<'_>,
        out: Sink<'_>,
    ) -> Outcome {
        // The <oauth/> child is read by the verifier; the action is the other child.
        // <options/> and <publish-options/> may follow the action (XEP-0060 §6.3.7, §7.1.5).
        // An RSM <set/> pages an <items/> request (XEP-0059, profile N10) and is ignored
        // beside any other action (XEP-0059 §4).
        let mut actions = pubsub.children().filter(|c| {
            !oauth_xmpp::ns::OAUTH_ALIASES.contains(&c.ns())
                && !matches!(c.name(), "options" | "publish-options")
                && !c.is("set", ns::RSM)
        });
        let (first, second) = (actions.next(), actions.next());
        if first.is_none() && pubsub.has_child("options", ns::PUBSUB) {
            // A subscription options request or submission on its own (XEP-0060 §6.3.2,
            // §6.3.5): this service has no subscription options.
            return Err(Refusal::unsupported("subscription-options"));
        }
        let (Some(action), None) = (first, second) else {
            return Err(Refusal::bad_request(
                None,
                "<pubsub/> must carry exactly one action element",
            ));
        };
        if action.ns() != ns::PUBSUB {
            return Err(Refusal::bad_request(
                None,
                "the pubsub action is in the wrong namespace",
            ));
        }
        match (kind, action.name()) {
            ("set", "subscribe") => self.subscribe(from, iq, action),
            ("set", "unsubscribe") => self.unsubscribe(from, action),
            ("get", "subscriptions") => self.subscriptions(from, action),
            ("set", "publish") => self.publish(from, action, out),
            ("set", "retract") => self.retract(from, action, out),
            ("get", "items") => self.items(from, iq, action, pubsub.get_child("set", ns::RSM)),
            (_, "create") => Err(Refusal::unsupported("create-nodes")),
            (_, "configure") => Err(Refusal::unsupported("config-node")),
            (_, "options") => Err(Refusal::unsupported("subscription-options")),
            (_, "default") => Err(Refusal::unsupported("retrieve-default")),
            (_, "affiliations") => Err(Refusal::unsupported("retrieve-affiliations")),
            (_, "subscribe" | "unsubscribe" | "publish" | "retract") => Err(Refusal::bad_request(
                None,
                format!("<{}/> must be sent in an IQ set", action.name()),
            )),
            (_, "subscriptions" | "items") => Err(Refusal::bad_request(
                None,
                format!("<{}/> must be sent in an IQ get", action.name()),
            )),
            (_, other) => Err(Refusal::bad_request(
                None,
                format!("<{other}/> is not a pubsub action"),
            )),
        }
    }

    fn node_or_not_found(&self, node: &str) -> Result<Node, Refusal> {
        self.storage
            .node(node)
            .map_err(storage_failed)?
            .ok_or_else(|| Refusal::item_not_found(format!("there is no node {node:?}")))
    }

    /// A node `from` may learn exists: an open one, or one it publishes to or holds a live
    /// subscription to. Any other node, protected or missing, is `item-not-found` with the
    /// same text, so that nobody learns which owners have nodes (profile N6).
    fn known_node(&self, name: &str, from: &str) -> Result<Node, Refusal> {
        let hidden = || Refusal::item_not_found(format!("there is no node {name:?}"));
        let node = self
            .storage
            .node(name)
            .map_err(storage_failed)?
            .ok_or_else(hidden)?;
        if self.may_know(&node, from)? {
            Ok(node)
        } else {
            Err(hidden())
        }
    }

    /// Whether `from` may know `node` and read its items without a signed request (profile
    /// N3, N6): it is open, or `from` publishes to it or holds a live subscription to it.
    fn may_know(&self, node: &Node, from: &str) -> Result<bool, Refusal> {
        Ok(self.known_as(node, from)?.is_some())
    }

    /// How `from` may know `node` without a signed request: as anyone (an open node) or a
    /// publisher (`Known::Everything`), or as a subscriber whose token lives.
    fn known_as(&self, node: &Node, from: &str) -> Result<Option<Known>, Refusal> {
        if node.access == Access::Open || node.is_publisher(from) {
            return Ok(Some(Known::Everything));
        }
        Ok(self
            .live_subscription_of(node, from)?
            .map(Known::Subscriber))
    }

    /// Lets `from` read the items of the node `name` (profile N3, N11), and says which: every
    /// item of an open node, and for its publishers; for a consumer (one with a live
    /// subscription, or a signed request that passes the gate), the items published while
    /// one of its grants from the node's owner covered the node. A missing or hidden node goes
    /// through the gate (N6).
    /// The third value is the access token the reading is done under (the subscription's,
    /// or the signed request's), whose deliveries count what is read.
    fn reader(
        &self,
        iq: ElementRef<'_>,
        name: &str,
        from: &str,
    ) -> Result<(Node, Visibility, Option<String>), Refusal> {
        let stored = self.storage.node(name).map_err(storage_failed)?;
        if let Some(node) = &stored {
            match self.known_as(node, from)? {
                Some(Known::Everything) => return Ok((node.clone(), Visibility::All, None)),
                Some(Known::Subscriber(s)) => {
                    let visible = self.grants_of(node, s.consumer_key.as_deref())?;
                    return Ok((node.clone(), visible, s.token));
                }
                None => {}
            }
        }
        let (verified, node) = self.gate(iq, name, stored)?;
        let visible = self.grants_of(&node, Some(verified.consumer_key()))?;
        let token = verified.token().map(|t| t.token.clone());
        Ok((node, visible, token))
    }

    /// The items of `node` that `consumer` may be replayed (profile N11): those published
    /// inside the change-log spans of its grants from the node's owner whose scope permits
    /// the node (at most the newest [`MAX_SPANS`]).
    fn grants_of(&self, node: &Node, consumer: Option<&str>) -> Result<Visibility, Refusal> {
        let (Some(owner), Some(consumer)) = (node.owner.as_deref(), consumer) else {
            return Ok(Visibility::Spans(Vec::new()));
        };
        let grants = self.store.grant_spans(consumer, owner).map_err(|e| {
            warn!(node = node.name, consumer, "the token store failed: {e}");
            Refusal::internal()
        })?;
        let mut spans: Vec<Span> = grants
            .into_iter()
            .filter(|g| g.scope.permits(&node.name))
            .map(|g| Span {
                from_seq: g.granted_seq,
                until_seq: g.ended_seq,
                until_time: g.expires_at,
            })
            .collect();
        let excess = spans.len().saturating_sub(MAX_SPANS);
        spans.drain(..excess);
        Ok(Visibility::Spans(spans))
    }

    /// The `node` attribute, required.
    fn node_attr<'a>(action: ElementRef<'a>) -> Result<&'a str, Refusal> {
        action
            .attr("node")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                Refusal::bad_request(Some("nodeid-required"), "the request names no node")
            })
    }

    /// The owner of the node `name`: the stored `node`'s, or for a missing one the owner the
    /// first template matching the name would give it.
    fn owner_of(&self, name: &str, node: Option<&Node>) -> Option<String> {
        match node {
            Some(node) => node.owner.clone(),
            None => Template::first_match(&self.templates, name)
                .map(|(_, owner)| owner)
                .filter(|owner| !owner.is_empty()),
        }
    }

    /// Verifies the request's `<oauth/>` for the protected or missing node `name` (profile
    /// checks O1–O7). The answer depends on the name, the token and the templates, never on
    /// whether the node exists (profile N6): a token that its owner did not grant for `name`
    /// gets the same refusal either way, and only a token of the (would-be) owner that covers
    /// `name` learns that a missing node is missing.
    fn gate(
        &self,
        iq: ElementRef<'_>,
        name: &str,
        node: Option<Node>,
    ) -> Result<(Verified, Node), Refusal> {
        let verifier =
            Verifier::with_config(self.verifier, &*self.store, &*self.store, &*self.clock);
        let from = iq.attr("from").unwrap_or("");
        let verified = verifier.verify_stanza(iq).map_err(|e| {
            if let VerifyError::Store(cause) = &e {
                warn!(from, node = name, "the token store failed: {cause}");
            }
            Refusal::oauth(&e)
        })?;
        let owner = self.owner_of(name, node.as_ref());
        let owner = owner.filter(|owner| verified.owner() == Some(owner.as_str()));
        let Some(owner) = owner else {
            return Err(Refusal::oauth(&VerifyError::OutOfScope(format!(
                "node {name:?} is not covered by this token"
            ))));
        };
        verified
            .authorize_node(name, &owner)
            .map_err(|e| Refusal::oauth(&e))?;
        let node =
            node.ok_or_else(|| Refusal::item_not_found(format!("there is no node {name:?}")))?;
        Ok((verified, node))
    }

    fn subscribe(&mut self, from: &str, iq: ElementRef<'_>, action: ElementRef<'_>) -> Outcome {
        let node_name = Self::node_attr(action)?;
        let given = action.attr("jid").unwrap_or("");
        let jid = jid::normalize(given).map_err(|e| {
            Refusal::bad_request(
                Some("invalid-jid"),
                format!("the subscribed JID {given:?} is not a valid JID: {e}"),
            )
        })?;
        if !jid::same_bare(&jid, from) {
            return Err(Refusal::bad_request(
                Some("invalid-jid"),
                format!(
                    "the subscribed JID {given:?} must have the bare JID of the sender, {}",
                    jid::bare(from)
                ),
            ));
        }
        let jid = jid.as_str();
        let stored = self.storage.node(node_name).map_err(storage_failed)?;
        let (node, token, consumer_key) = match stored {
            Some(node) if node.access == Access::Open => (node, None, None),
            // Protected or missing: the same gate answers both.
            stored => {
                let (verified, node) = self.gate(iq, node_name, stored)?;
                let token = verified.token().map(|t| t.token.clone());
                (node, token, Some(verified.consumer_key().to_owned()))
            }
        };
        let visible = match node.access {
            Access::Open => Visibility::All,
            Access::OAuth => self.grants_of(&node, consumer_key.as_deref())?,
        };
        let subscription = self
            .storage
            .subscribe(&Subscription {
                node: node.name.clone(),
                jid: jid.to_owned(),
                subid: self.new_id()?,
                token,
                consumer_key,
                created_at: self.now(),
            })
            .map_err(storage_failed)?;
        info!(
            jid,
            node = node.name,
            consumer = subscription.consumer_key.as_deref().unwrap_or("-"),
            "subscribed"
        );
        if node.send_last_published_item {
            self.send_last_item(&node, &subscription, &visible);
        }
        let mut pubsub = Element::builder("pubsub", ns::PUBSUB).build();
        pubsub.append_child(subscription_element(
            ns::PUBSUB,
            &subscription,
            "subscribed",
        ));
        Ok(Some(pubsub))
    }

    /// Queues the node's last item that `visible` allows, for `to`, after the subscribe's
    /// result (XEP-0060 §6.1.7), with its archive id and when it was published.
    fn send_last_item(&mut self, node: &Node, subscription: &Subscription, visible: &Visibility) {
        let to = subscription.jid.as_str();
        let last = match self
            .storage
            .items_page(&node.name, &PageFrom::End, 1, visible)
        {
            Ok(page) => page.and_then(|p| p.items.into_iter().next()),
            Err(e) => {
                // The subscription stands; the item is in the archive.
                warn!(node = node.name, "cannot read the last item: {e}");
                return;
            }
        };
        let Some(item) = last else { return };
        let Ok(entry) = item_element(ns::PUBSUB_EVENT, &item) else {
            return;
        };
        let mut message = self.event_message(to, archive::event_items(&node.name, entry));
        message.append_child(archive::stanza_id(&self.domain, &item));
        message.append_child(archive::delay(&self.domain, item.published_at));
        self.after_reply.push(message);
        if let Some(token) = &subscription.token {
            self.deliveries.pushed(token, &node.name);
        }
    }

    fn unsubscribe(&mut self, from: &str, action: ElementRef<'_>) -> Outcome {
        let node_name = Self::node_attr(action)?;
        let given = action.attr("jid").unwrap_or("");
        let jid = match jid::normalize(given) {
            Ok(jid) if jid::same_bare(&jid, from) => jid,
            _ => {
                return Err(Refusal::forbidden(format!(
                    "{} may not unsubscribe {given:?}",
                    jid::bare(from)
                )));
            }
        };
        let jid = jid.as_str();
        // A missing node answers as a node the sender is not subscribed to (profile N6).
        match self
            .storage
            .unsubscribe(node_name, jid)
            .map_err(storage_failed)?
        {
            Some(_) => {
                info!(jid, node = node_name, "unsubscribed");
                Ok(None)
            }
            None => Err(Refusal::not_subscribed(format!(
                "{jid} is not subscribed to {node_name:?}"
            ))),
        }
    }

    fn subscriptions(&self, from: &str, action: ElementRef<'_>) -> Outcome {
        // A missing node lists nothing, as a node the sender is not subscribed to.
        let node = action.attr("node");
        let mut list = Element::builder("subscriptions", ns::PUBSUB).build();
        if let Some(node) = node {
            list.set_attr(minidom::rxml::Namespace::NONE, name("node"), node);
        }
        for s in self
            .storage
            .subscriptions_of(from, node)
            .map_err(storage_failed)?
        {
            list.append_child(subscription_element(ns::PUBSUB, &s, "subscribed"));
        }
        let mut pubsub = Element::builder("pubsub", ns::PUBSUB).build();
        pubsub.append_child(list);
        Ok(Some(pubsub))
    }

    /// The node a publisher addresses: an existing one, or one a template creates for it.
    fn node_for_publisher(&self, node_name: &str, from: &str) -> Result<Node, Refusal> {
        if let Some(node) = self.storage.node(node_name).map_err(storage_failed)? {
            if !node.is_publisher(from) {
                info!(from, node = node_name, "refused: not a publisher");
                return Err(Refusal::forbidden(format!(
                    "{} may not publish to {node_name:?}",
                    jid::bare(from)
                )));
            }
            return Ok(node);
        }
        let template = Template::first_match(&self.templates, node_name);
        let Some((template, owner)) = template else {
            // As for a node that exists: nobody learns which nodes do (profile N6).
            info!(from, node = node_name, "refused: no such node or template");
            return Err(Refusal::forbidden(format!(
                "{} may not publish to {node_name:?}",
                jid::bare(from)
            )));
        };
        let node = Node {
            name: node_name.to_owned(),
            owner: (!owner.is_empty()).then_some(owner),
            access: template.access,
            publishers: template.publishers.clone(),
            max_items: template.max_items,
            max_age_secs: template.max_age,
            send_last_published_item: template.send_last(),
            created_at: self.now(),
        };
        if !node.is_publisher(from) {
            info!(
                from,
                node = node_name,
                "refused: not a publisher of the template"
            );
            return Err(Refusal::forbidden(format!(
                "{} may not publish to {node_name:?}",
                jid::bare(from)
            )));
        }
        match self.storage.create_node(&node) {
            Ok(()) => {
                info!(
                    node = node_name,
                    template = template.pattern,
                    "created the node from a template"
                );
                Ok(node)
            }
            // Another guard on the same database created it first.
            Err(StorageError::NodeExists(_)) => self.node_or_not_found(node_name),
            Err(e) => Err(storage_failed(e)),
        }
    }

    fn publish(&mut self, from: &str, action: ElementRef<'_>, out: Sink<'_>) -> Outcome {
        let node_name = Self::node_attr(action)?;
        let mut items = action.children();
        let item = match (items.next(), items.next()) {
            (Some(item), None) if item.is("item", ns::PUBSUB) => item,
            (None, _) => {
                return Err(Refusal::bad_request(
                    Some("item-required"),
                    "the publish carries no <item/>",
                ));
            }
            _ => {
                return Err(Refusal::bad_request(
                    Some("invalid-payload"),
                    "a publish carries exactly one <item/>",
                ));
            }
        };
        let mut payloads = item.children();
        let payload = match (payloads.next(), payloads.next()) {
            (Some(payload), None) => payload,
            (None, _) => {
                return Err(Refusal::bad_request(
                    Some("payload-required"),
                    "the item carries no payload; nodes here keep their items",
                ));
            }
            _ => {
                return Err(Refusal::bad_request(
                    Some("invalid-payload"),
                    "an item carries exactly one payload element",
                ));
            }
        };
        let node = self.node_for_publisher(node_name, from)?;
        let payload = payload.to_element();
        if !writable(&payload) {
            return Err(Refusal::bad_request(
                Some("invalid-payload"),
                "the payload declares the prefix xml, which is bound without declaring it",
            ));
        }
        let id = match item.attr("id").filter(|id| !id.is_empty()) {
            Some(id) => id.to_owned(),
            None => self.new_id()?,
        };
        let mut stored = Item {
            id: id.clone(),
            payload: String::from(&payload),
            publisher: jid::bare(from).to_owned(),
            published_at: self.now(),
            pos: 0,
            seq: 0,
        };
        let published = self
            .storage
            .publish(&node.name, &stored)
            .map_err(storage_failed)?;
        (stored.pos, stored.seq) = (published.pos, published.seq);
        info!(
            from,
            node = node.name,
            item = id,
            archive_id = stored.archive_id(),
            dropped = published.dropped.len(),
            "published"
        );
        let mut event = Element::builder("item", ns::PUBSUB_EVENT)
            .attr(name("id"), id.as_str())
            .build();
        event.append_child(payload);
        self.notify(&node, event, Some(&stored), out);
        let reply = Element::builder("pubsub", ns::PUBSUB)
            .append(
                Element::builder("publish", ns::PUBSUB)
                    .attr(name("node"), node.name.as_str())
                    .append(Element::builder("item", ns::PUBSUB).attr(name("id"), id.as_str()))
                    .build(),
            )
            .build();
        Ok(Some(reply))
    }

    fn retract(&mut self, from: &str, action: ElementRef<'_>, out: Sink<'_>) -> Outcome {
        let node_name = Self::node_attr(action)?;
        let node = self
            .storage
            .node(node_name)
            .map_err(storage_failed)?
            .filter(|node| node.is_publisher(from))
            .ok_or_else(|| {
                Refusal::forbidden(format!(
                    "{} may not retract items of {node_name:?}",
                    jid::bare(from)
                ))
            })?;
        let id = action
            .get_child("item", ns::PUBSUB)
            .and_then(|i| i.attr("id"))
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                Refusal::bad_request(Some("item-required"), "the retract names no item id")
            })?;
        if !self
            .storage
            .retract(node_name, id)
            .map_err(storage_failed)?
        {
            return Err(Refusal::item_not_found(format!(
                "node {node_name:?} has no item {id:?}"
            )));
        }
        info!(from, node = node_name, item = id, "retracted");
        let retracted = Element::builder("retract", ns::PUBSUB_EVENT)
            .attr(name("id"), id)
            .build();
        self.notify(&node, retracted, None, out);
        Ok(None)
    }

    fn items(
        &mut self,
        from: &str,
        iq: ElementRef<'_>,
        action: ElementRef<'_>,
        rsm: Option<ElementRef<'_>>,
    ) -> Outcome {
        let node_name = Self::node_attr(action)?;
        let (_, visible, token) = self.reader(iq, node_name, from)?;
        let max = match action.attr("max_items") {
            None => None,
            Some(v) => Some(v.parse::<u32>().map_err(|_| {
                Refusal::bad_request(None, format!("max_items={v:?} is not a number"))
            })?),
        };
        let ids: Vec<&str> = action
            .children()
            .filter(|c| c.is("item", ns::PUBSUB))
            .filter_map(|c| c.attr("id"))
            .collect();
        let mut list = Element::builder("items", ns::PUBSUB)
            .attr(name("node"), node_name)
            .build();
        if !ids.is_empty() {
            let found = self
                .storage
                .items_by_id(node_name, &ids, &visible)
                .map_err(storage_failed)?;
            for item in &found {
                list.append_child(item_element(ns::PUBSUB, item)?);
            }
            if let Some(token) = &token {
                self.deliveries.fetched(token, node_name, found.len());
            }
            return Ok(Some(
                Element::builder("pubsub", ns::PUBSUB).append(list).build(),
            ));
        }
        // Profile N10: a result set when asked for one, and also when the node holds more
        // than one page and the request did not say how many (so nothing is cut silently).
        let (from_where, size, paged) = match (rsm, max) {
            (Some(set), _) => {
                let (from_where, size) =
                    rsm_request(set, "item id", MAX_PAGE_ITEMS, MAX_PAGE_ITEMS)?;
                (from_where, size, true)
            }
            (None, Some(max)) => (PageFrom::End, max.min(MAX_PAGE_ITEMS), false),
            (None, None) => (PageFrom::End, MAX_PAGE_ITEMS, false),
        };
        let Some(mut page) = self
            .storage
            .items_page(node_name, &from_where, size, &visible)
            .map_err(storage_failed)?
        else {
            let id = match &from_where {
                PageFrom::After(id) | PageFrom::Before(id) => id.as_str(),
                _ => "",
            };
            return Err(Refusal::item_not_found(format!(
                "the item {id:?} is not in the node {node_name:?} (retracted, or no longer \
                 held); page from the oldest item held by asking without <after/>"
            )));
        };
        fit_page(&mut page, &from_where);
        // Fewer than asked for (or than held, when nobody said how many): say so.
        let wanted = max.map_or(page.count, |m| m.min(page.count));
        let truncated = page.items.len() < wanted as usize;
        for item in &page.items {
            list.append_child(item_element(ns::PUBSUB, item)?);
        }
        if let Some(token) = &token {
            self.deliveries.fetched(token, node_name, page.items.len());
        }
        let mut pubsub = Element::builder("pubsub", ns::PUBSUB).append(list).build();
        if paged || truncated {
            pubsub.append_child(rsm_answer(&page));
        }
        Ok(Some(pubsub))
    }

    /// An archive query on a node (XEP-0313 with XEP-0442's `node`, profile N11, N12): the
    /// same gate as an items request, then each result as a message to the requester and the
    /// `<fin/>` in the reply. A resume point (`after-id`, or an RSM `<after/>`) older than
    /// what retention kept is refused with a `<gap/>` saying how many items are gone.
    fn archive_query(
        &mut self,
        from: &str,
        iq: ElementRef<'_>,
        query: ElementRef<'_>,
        out: Sink<'_>,
    ) -> Outcome {
        let request = archive::read(query)?;
        let node_name = request.node.as_str();
        let (node, visible, token) = self.reader(iq, node_name, from)?;
        let history = self
            .storage
            .history(node_name)
            .map_err(storage_failed)?
            .unwrap_or_default();
        let mut range = ArchiveQuery {
            start: request.start,
            end: request.end,
            ..ArchiveQuery::default()
        };
        if let Some(id) = &request.after_id {
            range.after_pos = Some(self.resume_point(&node, &history, id)?);
        }
        if let Some(id) = &request.before_id {
            range.before_pos = Some(self.archive_pos(&node, &history, id)?);
        }
        let start = match &request.page {
            PageFrom::Start => ArchiveFrom::After(None),
            PageFrom::After(id) => {
                ArchiveFrom::After(Some(self.resume_point(&node, &history, id)?))
            }
            PageFrom::End => ArchiveFrom::Before(None),
            PageFrom::Before(id) => {
                ArchiveFrom::Before(Some(self.archive_pos(&node, &history, id)?))
            }
            PageFrom::Index(i) => ArchiveFrom::Index(*i),
        };
        let page = self
            .storage
            .archive_page(node_name, &range, start, request.max, &visible)
            .map_err(storage_failed)?;
        // The requester's own address (full JID): results go where the query came from.
        let to = iq.attr("from").unwrap_or(from);
        for item in &page.items {
            out(archive::result(
                &self.domain,
                to,
                self.new_id()?,
                request.queryid.as_deref(),
                node_name,
                item,
                item_element(ns::PUBSUB_EVENT, item)?,
            ));
        }
        if let Some(token) = &token {
            self.deliveries.fetched(token, node_name, page.items.len());
        }
        debug!(
            from,
            node = node_name,
            results = page.items.len(),
            complete = page.complete,
            "archive page"
        );
        Ok(Some(archive::fin(&page)))
    }

    /// The position an archive id of `node` names: it must be one the node has given.
    fn archive_pos(
        &self,
        node: &Node,
        history: &crate::storage::History,
        id: &str,
    ) -> Result<u64, Refusal> {
        // Ids of a node of the same name that was deleted have no larger service number.
        Item::parse_archive_id(id)
            .filter(|(pos, seq)| (1..=history.last_pos).contains(pos) && *seq > history.created_seq)
            .map(|(pos, _)| pos)
            .ok_or_else(|| {
                Refusal::item_not_found(format!(
                    "the node {:?} has no item with archive id {id:?}",
                    node.name
                ))
            })
    }

    /// The position to resume after, from the archive id a consumer last saw; refused with a
    /// `<gap/>` when retention has dropped items published after it (profile N12).
    fn resume_point(
        &self,
        node: &Node,
        history: &crate::storage::History,
        id: &str,
    ) -> Result<u64, Refusal> {
        let pos = self.archive_pos(node, history, id)?;
        if pos >= history.trimmed_through {
            return Ok(pos);
        }
        let (first, last) = (pos + 1, history.trimmed_through);
        let count = last - pos;
        let oldest = self
            .storage
            .archive_page(
                &node.name,
                &ArchiveQuery::default(),
                ArchiveFrom::After(None),
                1,
                &Visibility::All,
            )
            .map_err(storage_failed)?
            .items
            .first()
            .map(Item::archive_id);
        let mut gap = Element::builder("gap", ns::GAP)
            .attr(name("after"), id)
            .attr(name("first"), first.to_string())
            .attr(name("last"), last.to_string())
            .attr(name("count"), count.to_string())
            .build();
        let held = match &oldest {
            Some(oldest) => {
                gap.set_attr(
                    minidom::rxml::Namespace::NONE,
                    name("oldest"),
                    oldest.as_str(),
                );
                format!("the oldest item it holds is {oldest}")
            }
            None => "it holds no item now".into(),
        };
        info!(
            node = node.name,
            after = id,
            count,
            "refused a resume point past retention"
        );
        Err(Refusal::item_not_found(format!(
            "the node {:?} no longer holds what followed {id}: {count} items (positions {first} \
             to {last}, the last published {}) were dropped by its retention ({}); {held}; \
             query again without after-id to read from there",
            node.name,
            datetime::format(history.trimmed_at),
            archive::retention_words(node),
        ))
        .with_detail(gap))
    }

    /// The subscription of `from` (bare) to `node`, if a live token backs it.
    fn live_subscription_of(
        &self,
        node: &Node,
        from: &str,
    ) -> Result<Option<Subscription>, Refusal> {
        let subscription = self
            .storage
            .subscription(&node.name, from)
            .map_err(storage_failed)?;
        Ok(subscription.filter(|s| self.token_is_live(s)))
    }

    /// Whether the token behind a subscription still grants access (profile N3, N4): known,
    /// not revoked, not expired, its consumer not revoked. Open-node subscriptions have none.
    fn token_is_live(&self, s: &Subscription) -> bool {
        let Some(token) = &s.token else {
            return true;
        };
        match oauth_xmpp::verify::check_live_token(&&*self.store, token, self.now()) {
            Ok(_) => true,
            Err(VerifyError::Store(e)) => {
                // Fail closed: nothing is delivered under a token that cannot be checked.
                warn!(node = s.node, jid = s.jid, "the token store failed: {e}");
                false
            }
            Err(_) => false,
        }
    }

    /// Sends `content` (an `<item/>` or `<retract/>` in the event namespace) to every
    /// subscriber of `node` whose access still holds; ends the subscriptions whose token died.
    /// A published `item` gives the notification its archive id (XEP-0359).
    fn notify(&mut self, node: &Node, content: Element, item: Option<&Item>, out: Sink<'_>) {
        let items = archive::event_items(&node.name, content);
        let stanza_id = item.map(|item| archive::stanza_id(&self.domain, item));
        // A page of subscribers at a time: memory does not grow with a node's subscribers.
        let mut after: Option<String> = None;
        loop {
            let page =
                match self
                    .storage
                    .subscribers_page(&node.name, after.as_deref(), SUBSCRIBERS_PAGE)
                {
                    Ok(page) => page,
                    Err(e) => {
                        warn!(node = node.name, "cannot read the subscribers: {e}");
                        return;
                    }
                };
            let full = page.len() == SUBSCRIBERS_PAGE;
            after = page.last().map(|s| jid::bare(&s.jid).to_owned());
            // Subscriptions often share a token (one application, several JIDs): check each
            // token once per page.
            let mut checked: std::collections::HashMap<String, bool> = Default::default();
            for s in page {
                let live = match &s.token {
                    Some(token) => match checked.get(token) {
                        Some(live) => *live,
                        None => {
                            let live = self.token_is_live(&s);
                            checked.insert(token.clone(), live);
                            if !live {
                                // The change log will say so too; ending it now means
                                // nothing slips through.
                                self.end_token(token, None, out);
                            }
                            live
                        }
                    },
                    None => true,
                };
                if live {
                    let mut message = self.event_message(&s.jid, items.clone());
                    if let Some(stanza_id) = &stanza_id {
                        message.append_child(stanza_id.clone());
                    }
                    out(message);
                    // An item counts as delivered under its grant (a retraction does not).
                    if let (Some(token), Some(_)) = (&s.token, item) {
                        self.deliveries.pushed(token, &node.name);
                    }
                }
            }
            if !full {
                return;
            }
        }
    }

    fn event_message(&self, to: &str, content: Element) -> Element {
        Element::builder("message", ns::COMPONENT)
            .attr(name("from"), self.domain.as_str())
            .attr(name("to"), to)
            .attr(name("type"), "headline")
            .attr(name("id"), self.new_id().unwrap_or_else(|_| "event".into()))
            .append(Element::builder("event", ns::PUBSUB_EVENT).append(content))
            .build()
    }

    /// Ends every subscription backed by `token` and tells each subscriber
    /// (`<subscription subscription='none'/>`, XEP-0060 §6.1.2 / profile N4). `logged_ms`:
    /// when the change log recorded the revocation or expiry, for the metrics' latency.
    fn end_token(&mut self, token: &str, logged_ms: Option<u64>, out: Sink<'_>) {
        let take = |storage: &dyn Storage| storage.end_token(token, SUBSCRIBERS_PAGE);
        self.end_pages("access revoked or expired", logged_ms, take, out);
    }

    /// Ends the subscriptions an admin ended ([`ChangeKind::SubscriptionsEnded`]: of the
    /// change's node, consumer and owner, each a filter when set) and tells each subscriber.
    fn end_matching(&mut self, change: &Change, out: Sink<'_>) {
        let filter = SubscriptionFilter {
            node: change.node.clone(),
            consumer_key: change.consumer_key.clone(),
            owner: change.owner.clone(),
        };
        if filter.is_empty() {
            // The store refuses to log one; never end every subscription on a bad entry.
            warn!(
                seq = change.seq,
                "an ending of subscriptions names nothing; ignored"
            );
            return;
        }
        let take = |storage: &dyn Storage| storage.end_matching(&filter, SUBSCRIBERS_PAGE);
        self.end_pages("ended by an admin", None, take, out);
    }

    /// Ends subscriptions a page at a time, as `take` removes them from storage (until a page
    /// is short), and tells each subscriber. `why` is for the log; with `logged_ms` (when the
    /// change that ended them was logged), the metrics observe each one's latency as its
    /// notice is handed over.
    fn end_pages(
        &mut self,
        why: &str,
        logged_ms: Option<u64>,
        take: impl Fn(&dyn Storage) -> Result<Vec<Subscription>, StorageError>,
        out: Sink<'_>,
    ) {
        loop {
            let ended = match take(&*self.storage) {
                Ok(ended) => ended,
                Err(e) => {
                    warn!("cannot end subscriptions ({why}): {e}");
                    return;
                }
            };
            let more = ended.len() == SUBSCRIBERS_PAGE;
            for s in ended {
                info!(
                    jid = s.jid,
                    node = s.node,
                    consumer = s.consumer_key.as_deref().unwrap_or("-"),
                    "subscription ended: {why}"
                );
                let none = subscription_element(ns::PUBSUB_EVENT, &s, "none");
                let message = self.event_message(&s.jid, none);
                if let Some(at_ms) = logged_ms {
                    let ms = shared_store::authz::now_ms().saturating_sub(at_ms);
                    self.metrics.revocation_ended(ms as f64 / 1e3);
                }
                out(message);
            }
            if !more {
                return;
            }
        }
    }

    /// Drops the items past their node's `max_age` (the sweeper; publishing does it for its
    /// own node too).
    fn sweep(&mut self, now: u64) {
        let mut dropped = 0;
        // Bounded: a backlog larger than this is finished by the next sweeps.
        for _ in 0..20 {
            match self.storage.expire_items(now, SWEEP_BATCH) {
                Ok(n) => {
                    dropped += n;
                    if n < SWEEP_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    warn!("cannot drop expired items: {e}");
                    break;
                }
            }
        }
        if dropped > 0 {
            info!(dropped, "dropped items past their node's max_age");
        }
    }

    /// From now on, [`Service::follow_changes_into`] reads the change log only when `news` is
    /// set (it clears it), instead of on every call: the store tells the guard of each change
    /// (see [`shared_store::Authorizations::watch_changes`]). It reads it once more right
    /// away.
    pub fn use_change_notices(&mut self, news: Arc<AtomicBool>) {
        news.store(true, Ordering::Relaxed);
        self.change_notices = Some(news);
    }

    /// Makes the next [`Service::follow_changes_into`] read the change log even without a
    /// new notice (after a failed read, or a full batch).
    fn read_changes_again(&self) {
        if let Some(news) = &self.change_notices {
            news.store(true, Ordering::Relaxed);
        }
    }

    /// Follows the authorization server's change log: ends the subscriptions of every token
    /// revoked or expired since the last call (profile N4). Call it a few times a second. The
    /// position is stored, so the first call after a restart catches up with what happened
    /// while the guard was down.
    pub fn follow_changes(&mut self) -> Vec<Element> {
        let mut out = Vec::new();
        self.follow_changes_into(&mut |e| out.push(e));
        out
    }

    /// [`Service::follow_changes`], giving each stanza to `out` as soon as it is made.
    pub fn follow_changes_into(&mut self, out: Sink<'_>) {
        let now = self.now();
        if now != self.expiries_logged_at {
            self.expiries_logged_at = now;
            if let Err(e) = self.store.log_expiries(now) {
                warn!("cannot log token expiries: {e}");
            }
        }
        if now >= self.swept_at + SWEEP_EVERY_SECS {
            self.swept_at = now;
            self.sweep(now);
        }
        if let Some(news) = &self.change_notices
            && !news.swap(false, Ordering::Relaxed)
        {
            return;
        }
        let cursor = match self.cursor {
            Some(c) => c,
            None => match self.storage.change_cursor() {
                Ok(c) => *self.cursor.insert(c),
                Err(e) => {
                    warn!("cannot read the change cursor: {e}");
                    self.read_changes_again();
                    return;
                }
            },
        };
        let changes = match self.store.changes_since(cursor, CHANGES_PER_POLL) {
            Ok(changes) => changes,
            Err(e) => {
                warn!("cannot read the change log: {e}");
                self.read_changes_again();
                return;
            }
        };
        let Some(last) = changes.last().map(|c| c.seq) else {
            return;
        };
        if changes.len() >= CHANGES_PER_POLL {
            // More may follow: read on at the next call.
            self.read_changes_again();
        }
        for change in changes.iter().filter(|c| c.kind.ends_access()) {
            if change.kind == ChangeKind::SubscriptionsEnded {
                self.end_matching(change, out);
            } else if let Some(token) = &change.token {
                self.end_token(token, change.at_ms, out);
            }
        }
        self.cursor = Some(last);
        if let Err(e) = self.storage.set_change_cursor(last) {
            warn!("cannot save the change cursor: {e}");
        }
    }
}

/// `<subscription node jid subid subscription/>` in `namespace`.
/// Whether minidom can write `element`: it reads a declaration of the reserved prefixes
/// `xml` and `xmlns` (XML Namespaces allows declaring `xml` with its own name) but panics when
/// it writes one, so a payload or an IQ that declares either is never written.
fn writable(element: &Element) -> bool {
    let reserved = element
        .prefixes
        .declared_prefixes()
        .keys()
        .any(|p| matches!(p.as_deref(), Some("xml" | "xmlns")));
    !reserved && element.children().all(writable)
}

fn subscription_element(namespace: &str, s: &Subscription, state: &str) -> Element {
    Element::builder("subscription", namespace)
        .attr(name("node"), s.node.as_str())
        .attr(name("jid"), s.jid.as_str())
        .attr(name("subid"), s.subid.as_str())
        .attr(name("subscription"), state)
        .build()
}

/// A stored item as `<item id>payload</item>` in `namespace`.
fn item_element(namespace: &str, item: &Item) -> Result<Element, Refusal> {
    let payload: Element = item.payload.parse().map_err(|e| {
        warn!(item = item.id, "a stored payload does not parse: {e}");
        Refusal::internal()
    })?;
    Ok(Element::builder("item", namespace)
        .attr(name("id"), item.id.as_str())
        .append(payload)
        .build())
}

/// The most items one page holds (a larger `<max/>` gets this many, as XEP-0059 §2.1
/// allows).
pub const MAX_PAGE_ITEMS: u32 = 500;

/// The most payload bytes one page holds, so that a page fits the stanza limits of XMPP
/// servers (Prosody 0.12's `c2s_stanza_size_limit` is 256 KiB); a page always holds at
/// least one item.
pub const MAX_PAGE_BYTES: usize = 192 * 1024;

/// Reads an RSM `<set/>` (XEP-0059 §2): where the page starts and how many items it holds
/// at most (`default` without `<max/>`, never more than `cap`). `ids` names what its
/// `<after/>` and `<before/>` hold ("item id", "archive id").
pub(crate) fn rsm_request(
    set: ElementRef<'_>,
    ids: &str,
    default: u32,
    cap: u32,
) -> Result<(PageFrom, u32), Refusal> {
    let number = |what: &str| -> Result<Option<u32>, Refusal> {
        match set.get_child(what, ns::RSM) {
            None => Ok(None),
            Some(e) => {
                let text = e.text();
                text.trim().parse::<u32>().map(Some).map_err(|_| {
                    Refusal::bad_request(
                        None,
                        format!("RSM <{what}/> must be a whole number (got {text:?})"),
                    )
                })
            }
        }
    };
    let max = number("max")?.unwrap_or(default).min(cap);
    let index = number("index")?;
    let after = set.get_child("after", ns::RSM).map(|e| e.text());
    let before = set.get_child("before", ns::RSM).map(|e| e.text());
    let from = match (after, before, index) {
        (None, None, None) => PageFrom::Start,
        (Some(id), None, None) if !id.is_empty() => PageFrom::After(id),
        (Some(_), None, None) => {
            return Err(Refusal::bad_request(
                None,
                format!("RSM <after/> needs an {ids}"),
            ));
        }
        (None, Some(id), None) if id.is_empty() => PageFrom::End,
        (None, Some(id), None) => PageFrom::Before(id),
        (None, None, Some(i)) => PageFrom::Index(i),
        _ => {
            return Err(Refusal::bad_request(
                None,
                "RSM: give at most one of <after/>, <before/> and <index/>",
            ));
        }
    };
    Ok((from, max))
}

/// Keeps a page within [`MAX_PAGE_BYTES`] of payload: a forward page loses its newest
/// items, a backward one (`<before/>`) its oldest, so it stays next to where it was asked.
fn fit_page(page: &mut Page, from: &PageFrom) {
    let backward = matches!(from, PageFrom::Before(_) | PageFrom::End);
    let n = page.items.len();
    let (mut kept, mut bytes) = (0, 0);
    while kept < n {
        let next = if backward { n - 1 - kept } else { kept };
        let size = page.items[next].payload.len();
        if kept > 0 && bytes + size > MAX_PAGE_BYTES {
            break;
        }
        bytes += size;
        kept += 1;
    }
    let dropped = n - kept;
    if backward {
        page.items.drain(..dropped);
        page.first_index += u32::try_from(dropped).unwrap_or(0);
    } else {
        page.items.truncate(kept);
    }
}

/// The RSM `<set/>` of an answer: `<first index='…'/>`, `<last/>` and `<count/>` (only the
/// count for an empty page, XEP-0059 §2.5).
fn rsm_answer(page: &Page) -> Element {
    let mut set = Element::builder("set", ns::RSM).build();
    if let (Some(first), Some(last)) = (page.items.first(), page.items.last()) {
        set.append_child(
            Element::builder("first", ns::RSM)
                .attr(name("index"), page.first_index.to_string())
                .append(first.id.as_str())
                .build(),
        );
        set.append_child(
            Element::builder("last", ns::RSM)
                .append(last.id.as_str())
                .build(),
        );
    }
    set.append_child(
        Element::builder("count", ns::RSM)
            .append(page.count.to_string())
            .build(),
    );
    set
}

fn storage_failed(e: StorageError) -> Refusal {
    if e.is_full() {
        warn!("storage is full: {e}");
        return Refusal::storage_full();
    }
    warn!("storage failed: {e}");
    Refusal::internal()
}
