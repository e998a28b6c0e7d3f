//! The pubsub service without a network: stanzas in, stanzas out, on a real store in a temp
//! folder. The end-to-end test (tests/e2e/guard.py) covers the main paths through Prosody;
//! this one covers every XEP-0060 error condition and the revocation paths exactly.

use std::sync::Arc;

use minidom::Element;
use oauth_xmpp::replay::SystemClock;
use oauth_xmpp::sign::{Credentials, Signer};
use oauth_xmpp::{Scope, Secret};
use pubsub_guard::config::{Config, Template};
use pubsub_guard::refusal::Refusal;
use pubsub_guard::service::Service;
use pubsub_guard::storage::{Access, DbStorage, Node, Storage};
use pubsub_guard::stream::StanzaHead;
use shared_store::Store;
use shared_store::authz::RevokeBy;
use shared_store::db::Location;

pub(crate) const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub(crate) const RSM: &str = "http://jabber.org/protocol/rsm";
pub(crate) const APP: &str = "app@localhost/r";
pub(crate) const LOC: &str = "loc@localhost/r";
pub(crate) const EVE: &str = "eve@localhost/r";

pub(crate) struct World {
    pub(crate) _dir: tempfile::TempDir,
    /// The database: a SQLite file, or with `GUARD_TEST_DATABASE=postgres` a database of its
    /// own in the test process's PostgreSQL cluster (see [`test_database`]).
    pub(crate) db: Location,
    pub(crate) config: Config,
    pub(crate) service: Service,
    pub(crate) storage: DbStorage,
    pub(crate) store: Arc<Store>,
    pub(crate) key: String,
    pub(crate) secret: String,
    pub(crate) token: (String, String),
    pub(crate) token_id: i64,
}

/// The environment variable that runs the service suite on PostgreSQL (`postgres`) instead of
/// SQLite (unset, or `sqlite`); the project's test command runs it both ways.
pub(crate) const ENGINE_VAR: &str = "GUARD_TEST_DATABASE";

/// Whether this run of the suite is on PostgreSQL.
pub(crate) fn on_postgres() -> bool {
    match std::env::var(ENGINE_VAR).as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("{ENGINE_VAR}={other}: use postgres or sqlite"),
    }
}

/// A fresh database for one test: a file in `dir`, or a new database in the shared
/// PostgreSQL cluster.
pub(crate) fn test_database(dir: &std::path::Path) -> Location {
    if !on_postgres() {
        return Location::Sqlite(dir.join("authz.sqlite"));
    }
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let url = testkit_postgres::shared()
        .new_database(&format!("world_{n}"))
        .unwrap();
    Location::Postgres(url)
}

pub(crate) fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let db = test_database(dir.path());
    let store = Arc::new(Store::open(&db).unwrap());
    let now = shared_store::authz::now();
    let (key, secret) = store.add_consumer("FindMeNow", None, None, now).unwrap();
    store.add_owner("alice", "$argon2id$test", now).unwrap();
    let grant = store
        .grant("alice", &key, &Scope::parse("/location/alice"), None, now)
        .unwrap();
    let config = Config {
        templates: vec![Template {
            pattern: "/location/{owner}".into(),
            access: Access::OAuth,
            publishers: vec!["loc@localhost".into()],
            max_items: 2,
            max_age: 0,
            send_last_published_item: None,
        }],
        ..Config::default()
    };
    let storage = DbStorage::open(&db).unwrap();
    for (name, owner, access) in [
        ("/location/alice", Some("alice"), Access::OAuth),
        ("/news", None, Access::Open),
    ] {
        storage
            .create_node(&Node {
                name: name.into(),
                owner: owner.map(str::to_owned),
                access,
                publishers: vec!["loc@localhost".into()],
                max_items: 2,
                max_age_secs: 0,
                send_last_published_item: false,
                created_at: now,
            })
            .unwrap();
    }
    let service = Service::new(
        &config,
        Box::new(DbStorage::open(&db).unwrap()),
        store.clone(),
    );
    World {
        _dir: dir,
        db,
        config,
        service,
        storage,
        store,
        key,
        secret: secret.expose().to_owned(),
        token: (grant.token.clone(), grant.secret.expose().to_owned()),
        token_id: grant.id,
    }
}

pub(crate) fn iq(from: &str, kind: &str, payload: &str) -> Element {
    format!(
        "<iq xmlns='jabber:component:accept' type='{kind}' id='q' from='{from}' to='pubsub.localhost'>{payload}</iq>"
    )
    .parse()
    .unwrap()
}

pub(crate) fn pubsub(from: &str, kind: &str, action: &str) -> Element {
    iq(
        from,
        kind,
        &format!("<pubsub xmlns='{PUBSUB}'>{action}</pubsub>"),
    )
}

impl World {
    /// A subscribe from APP to `node`, signed with the world's token.
    pub(crate) fn signed_subscribe(&self, node: &str) -> Element {
        self.signed_subscribe_as(APP, node, "app@localhost")
    }

    /// A subscribe from `from` for `jid`, signed with the world's token over `from`.
    pub(crate) fn signed_subscribe_as(&self, from: &str, node: &str, jid: &str) -> Element {
        let mut stanza = pubsub(
            from,
            "set",
            &format!("<subscribe node='{node}' jid='{jid}'/>"),
        );
        let signer = Signer::new(
            Credentials {
                consumer_key: self.key.clone(),
                consumer_secret: Secret::new(self.secret.clone()),
                token: Some(self.token.0.clone()),
                token_secret: Secret::new(self.token.1.clone()),
            },
            SystemClock,
            || shared_store::random::token(16).unwrap(),
        );
        let oauth = signer.sign_stanza("iq", from, "pubsub.localhost");
        stanza
            .get_child_mut("pubsub", PUBSUB)
            .unwrap()
            .append_child(oauth);
        stanza
    }

    /// APP subscribes to /location/alice with the world's token, and is subscribed.
    pub(crate) fn subscribe_app(&mut self) {
        let subscribe = self.signed_subscribe("/location/alice");
        assert_eq!(self.reply(subscribe).attr("type"), Some("result"));
    }

    pub(crate) fn handle(&mut self, stanza: Element) -> Vec<Element> {
        self.service.handle(&stanza)
    }

    /// The single reply; panics on more or fewer stanzas.
    pub(crate) fn reply(&mut self, stanza: Element) -> Element {
        let mut out = self.handle(stanza);
        assert_eq!(
            out.len(),
            1,
            "{:?}",
            out.iter().map(String::from).collect::<Vec<_>>()
        );
        out.remove(0)
    }
}

/// (type, condition, app condition, text) of an error reply.
pub(crate) fn error(reply: &Element) -> (String, String, Option<String>, String) {
    assert_eq!(reply.attr("type"), Some("error"), "{}", String::from(reply));
    let e = reply.get_child("error", "jabber:component:accept").unwrap();
    let mut condition = String::new();
    let mut app = None;
    let mut text = String::new();
    for c in e.children() {
        match (c.ns().as_str(), c.name()) {
            ("urn:ietf:params:xml:ns:xmpp-stanzas", "text") => text = c.text(),
            ("urn:ietf:params:xml:ns:xmpp-stanzas", n) => condition = n.to_owned(),
            (_, n) => app = Some(n.to_owned()),
        }
    }
    (e.attr("type").unwrap().to_owned(), condition, app, text)
}

pub(crate) fn expect(reply: &Element, kind: &str, condition: &str, app: Option<&str>, text: &str) {
    assert_eq!(
        error(reply),
        (
            kind.to_owned(),
            condition.to_owned(),
            app.map(str::to_owned),
            text.to_owned()
        )
    );
}

/// (sender, IQ type, payload, error type, condition, app condition, text).
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
);

#[test]
fn every_refusal_has_its_condition_and_text() {
    let mut w = world();
    // One row per case: (sender, type, payload, error type, condition, app condition, text).
    let cases: &[Case] = &[
        (
            LOC,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish/></pubsub>",
            "modify",
            "bad-request",
            Some("nodeid-required"),
            "the request names no node",
        ),
        (
            LOC,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='/news'/></pubsub>",
            "modify",
            "bad-request",
            Some("item-required"),
            "the publish carries no <item/>",
        ),
        (
            LOC,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='/news'><item><a xmlns='urn:a'/></item><item><a xmlns='urn:a'/></item></publish></pubsub>",
            "modify",
            "bad-request",
            Some("invalid-payload"),
            "a publish carries exactly one <item/>",
        ),
        (
            LOC,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='/news'><item/></publish></pubsub>",
            "modify",
            "bad-request",
            Some("payload-required"),
            "the item carries no payload; nodes here keep their items",
        ),
        (
            LOC,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='/news'><item><a xmlns='urn:a'/><b xmlns='urn:b'/></item></publish></pubsub>",
            "modify",
            "bad-request",
            Some("invalid-payload"),
            "an item carries exactly one payload element",
        ),
        (
            LOC,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='/nowhere'><item><a xmlns='urn:a'/></item></publish></pubsub>",
            "auth",
            "forbidden",
            None,
            "loc@localhost may not publish to \"/nowhere\"",
        ),
        (
            EVE,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='/news'><item><a xmlns='urn:a'/></item></publish></pubsub>",
            "auth",
            "forbidden",
            None,
            "eve@localhost may not publish to \"/news\"",
        ),
        (
            EVE,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='/location/eve'><item><a xmlns='urn:a'/></item></publish></pubsub>",
            "auth",
            "forbidden",
            None,
            "eve@localhost may not publish to \"/location/eve\"",
        ),
        (
            LOC,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='/news'/></pubsub>",
            "modify",
            "bad-request",
            Some("item-required"),
            "the retract names no item id",
        ),
        (
            LOC,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='/news'><item id='zz'/></retract></pubsub>",
            "cancel",
            "item-not-found",
            None,
            "node \"/news\" has no item \"zz\"",
        ),
        (
            EVE,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='/news'><item id='zz'/></retract></pubsub>",
            "auth",
            "forbidden",
            None,
            "eve@localhost may not retract items of \"/news\"",
        ),
        (
            EVE,
            "get",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='/news' max_items='ten'/></pubsub>",
            "modify",
            "bad-request",
            None,
            "max_items=\"ten\" is not a number",
        ),
        (
            EVE,
            "get",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='/news' jid='eve@localhost'/></pubsub>",
            "modify",
            "bad-request",
            None,
            "<subscribe/> must be sent in an IQ set",
        ),
        (
            EVE,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='/news'/></pubsub>",
            "modify",
            "bad-request",
            None,
            "<items/> must be sent in an IQ get",
        ),
        (
            EVE,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe jid='eve@localhost'/></pubsub>",
            "modify",
            "bad-request",
            Some("nodeid-required"),
            "the request names no node",
        ),
        (
            EVE,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='/nowhere' jid='eve@localhost'/></pubsub>",
            "auth",
            "not-authorized",
            Some("token-required"),
            "this node is protected: the request must carry an <oauth xmlns='urn:xmpp:oauth:0'/> element with an access token",
        ),
        (
            EVE,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><unsubscribe node='/news' jid='app@localhost'/></pubsub>",
            "auth",
            "forbidden",
            None,
            "eve@localhost may not unsubscribe \"app@localhost\"",
        ),
        (
            EVE,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='/news' jid='eve@localhost'/><unsubscribe node='/news' jid='eve@localhost'/></pubsub>",
            "modify",
            "bad-request",
            None,
            "<pubsub/> must carry exactly one action element",
        ),
        (
            EVE,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><purge node='/news'/></pubsub>",
            "modify",
            "bad-request",
            None,
            "<purge/> is not a pubsub action",
        ),
        (
            EVE,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='/news'/></pubsub>",
            "cancel",
            "feature-not-implemented",
            Some("unsupported"),
            "this service does not implement the pubsub feature \"config-node\"",
        ),
        (
            EVE,
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='/news'/></pubsub>",
            "cancel",
            "feature-not-implemented",
            Some("unsupported"),
            "this service does not implement the pubsub feature \"delete-nodes\"",
        ),
        (
            EVE,
            "get",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><affiliations/></pubsub>",
            "cancel",
            "feature-not-implemented",
            Some("unsupported"),
            "this service does not implement the pubsub feature \"retrieve-affiliations\"",
        ),
        (
            EVE,
            "get",
            "<query xmlns='http://jabber.org/protocol/disco#info' node='/nowhere'/>",
            "cancel",
            "item-not-found",
            None,
            "there is no node \"/nowhere\"",
        ),
        (
            EVE,
            "get",
            "<query xmlns='jabber:iq:last'/>",
            "cancel",
            "service-unavailable",
            None,
            "this service does not handle <query xmlns='jabber:iq:last'/> in an IQ get",
        ),
        (
            EVE,
            "get",
            "<a xmlns='urn:a'/><b xmlns='urn:b'/>",
            "modify",
            "bad-request",
            None,
            "an IQ get or set must carry exactly one payload element",
        ),
    ];
    for (from, kind, payload, etype, condition, app, text) in cases {
        let reply = w.reply(iq(from, kind, payload));
        assert_eq!(reply.attr("id"), Some("q"));
        assert_eq!(reply.attr("to"), Some(*from));
        assert_eq!(reply.attr("from"), Some("pubsub.localhost"));
        expect(&reply, etype, condition, *app, text);
    }
    // Nothing was created by the refused template publish.
    assert_eq!(w.storage.node("/location/eve").unwrap(), None);
    // An IQ to an address with a local part in the component's domain.
    let stanza: Element =
        "<iq xmlns='jabber:component:accept' type='get' id='q' from='eve@localhost/r' \
         to='someone@pubsub.localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
            .parse()
            .unwrap();
    let reply = w.reply(stanza);
    assert_eq!(reply.attr("from"), Some("someone@pubsub.localhost"));
    expect(
        &reply,
        "cancel",
        "service-unavailable",
        None,
        "there is no entity someone@pubsub.localhost here",
    );
    // Results and errors sent to the service get no answer.
    assert!(w.handle(iq(EVE, "result", "")).is_empty());
    assert!(w.handle(iq(EVE, "error", "")).is_empty());
}

#[test]
fn templates_create_nodes_and_items_keep_max_items() {
    let mut w = world();
    let publish = |id: &str| {
        pubsub(
            LOC,
            "set",
            &format!(
                "<publish node='/location/bob'><item id='{id}'><p xmlns='urn:p'>{id}</p></item></publish>"
            ),
        )
    };
    for id in ["a", "b", "c"] {
        let reply = w.reply(publish(id));
        assert_eq!(reply.attr("type"), Some("result"));
    }
    let node = w.storage.node("/location/bob").unwrap().unwrap();
    assert_eq!(
        (node.owner.as_deref(), node.access, node.max_items),
        (Some("bob"), Access::OAuth, 2)
    );
    // The publisher reads its own protected node; max_items and ids select.
    let reply = w.reply(pubsub(LOC, "get", "<items node='/location/bob'/>"));
    let ids: Vec<_> = reply
        .get_child("pubsub", PUBSUB)
        .unwrap()
        .get_child("items", PUBSUB)
        .unwrap()
        .children()
        .map(|i| i.attr("id").unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["b", "c"]);
    let reply = w.reply(pubsub(
        LOC,
        "get",
        "<items node='/location/bob'><item id='c'/><item id='a'/></items>",
    ));
    assert_eq!(
        String::from(reply.get_child("pubsub", PUBSUB).unwrap()),
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='/location/bob'><item id='c'><p xmlns='urn:p'>c</p></item></items></pubsub>"
    );
    // Others need a token.
    let reply = w.reply(pubsub(EVE, "get", "<items node='/location/bob'/>"));
    assert_eq!(error(&reply).2.as_deref(), Some("token-required"));
}

#[test]
fn disco_lists_only_the_nodes_the_asker_may_know() {
    let mut w = world();
    let listed = |w: &mut World, from: &str| -> Vec<String> {
        let reply = w.reply(iq(
            from,
            "get",
            "<query xmlns='http://jabber.org/protocol/disco#items'/>",
        ));
        reply
            .get_child("query", "http://jabber.org/protocol/disco#items")
            .unwrap()
            .children()
            .map(|i| i.attr("node").unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed(&mut w, EVE), ["/news"]);
    assert_eq!(listed(&mut w, LOC), ["/location/alice", "/news"]);
    w.subscribe_app();
    assert_eq!(listed(&mut w, APP), ["/location/alice", "/news"]);
    let reply = w.reply(iq(
        EVE,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    ));
    let query = reply
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    let identity = query.children().next().unwrap();
    assert_eq!(
        (identity.attr("category"), identity.attr("type")),
        (Some("pubsub"), Some("service"))
    );
    assert!(
        query
            .children()
            .any(|f| f.attr("var") == Some("urn:xmpp:oauth:0"))
    );
    // Ping answers.
    assert_eq!(
        w.reply(iq(EVE, "get", "<ping xmlns='urn:xmpp:ping'/>"))
            .attr("type"),
        Some("result")
    );
}

pub(crate) fn is_none_event(stanza: &Element) -> bool {
    stanza
        .get_child("event", "http://jabber.org/protocol/pubsub#event")
        .and_then(|e| e.get_child("subscription", "http://jabber.org/protocol/pubsub#event"))
        .is_some_and(|s| {
            s.attr("subscription") == Some("none") && s.attr("jid") == Some("app@localhost")
        })
}

pub(crate) fn publish_to_alice() -> Element {
    pubsub(
        LOC,
        "set",
        "<publish node='/location/alice'><item><p xmlns='urn:p'>x</p></item></publish>",
    )
}

#[test]
fn the_change_log_ends_subscriptions_once() {
    let mut w = world();
    w.subscribe_app();
    // Delivered while the token lives: the event first, then the publisher's result (a
    // publish is acknowledged only once its notifications are handed over).
    let out = w.handle(publish_to_alice());
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].attr("to"), Some("app@localhost"));
    assert_eq!(out[0].attr("from"), Some("pubsub.localhost"));
    assert_eq!(out[1].attr("to"), Some("loc@localhost/r"));
    assert_eq!(out[1].attr("type"), Some("result"));
    // Catch up with the log (the grant), then revoke.
    w.service.follow_changes();
    w.store
        .revoke_tokens(&RevokeBy::Id(w.token_id), shared_store::authz::now())
        .unwrap();
    let out = w.service.follow_changes();
    assert_eq!(out.len(), 1);
    assert!(is_none_event(&out[0]), "{}", String::from(&out[0]));
    assert!(w.storage.subscriptions(None).unwrap().is_empty());
    // Read once: the next poll has nothing to do.
    assert!(w.service.follow_changes().is_empty());
    assert_eq!(w.handle(publish_to_alice()).len(), 1);
}

/// With the store's notices (PostgreSQL), the change log is read when a notice came, not on
/// every call.
#[test]
fn with_change_notices_the_log_is_read_when_told() {
    let mut w = world();
    w.subscribe_app();
    let news = Arc::new(std::sync::atomic::AtomicBool::new(false));
    w.service.use_change_notices(Arc::clone(&news));
    // Read once right away.
    assert!(w.service.follow_changes().is_empty());
    assert!(!news.load(std::sync::atomic::Ordering::Relaxed));
    w.store
        .revoke_tokens(&RevokeBy::Id(w.token_id), shared_store::authz::now())
        .unwrap();
    // No notice yet: the log is not read.
    assert!(w.service.follow_changes().is_empty());
    assert_eq!(w.storage.subscriptions(None).unwrap().len(), 1);
    news.store(true, std::sync::atomic::Ordering::Relaxed);
    let out = w.service.follow_changes();
    assert_eq!(out.len(), 1);
    assert!(is_none_event(&out[0]), "{}", String::from(&out[0]));
    assert!(w.storage.subscriptions(None).unwrap().is_empty());
}

/// Two guards of a fleet on one database each follow the change log with their own cursor;
/// the subscription of a revoked token ends once, in whichever reads the log first.
#[test]
fn two_guards_of_a_fleet_end_a_revoked_subscription_once() {
    let mut w = world();
    w.subscribe_app();
    let guard = |instance: &str| {
        Service::new(
            &w.config,
            Box::new(DbStorage::open(&w.db).unwrap().for_instance(instance)),
            w.store.clone(),
        )
    };
    let (mut a, mut b) = (guard("a"), guard("b"));
    assert!(a.follow_changes().is_empty());
    assert!(b.follow_changes().is_empty());
    w.store
        .revoke_tokens(&RevokeBy::Id(w.token_id), shared_store::authz::now())
        .unwrap();
    let from_b = b.follow_changes();
    let from_a = a.follow_changes();
    assert_eq!((from_a.len(), from_b.len()), (0, 1));
    assert!(is_none_event(&from_b[0]));
    assert!(w.storage.subscriptions(None).unwrap().is_empty());
    let last = w.store.last_change().unwrap();
    for instance in ["a", "b"] {
        let s = DbStorage::open(&w.db).unwrap().for_instance(instance);
        assert_eq!(s.change_cursor().unwrap(), last, "{instance}");
    }
}

/// On PostgreSQL the store announces each change: a revocation sets the guard's flag
/// within a second (the guard's worker then reads the log). SQLite has no notices (the guard
/// polls).
#[test]
fn on_postgres_a_revocation_is_announced_within_a_second() {
    let mut w = world();
    if !crate::service::on_postgres() {
        let none = shared_store::Authorizations::watch_changes(&*w.store, Box::new(|| {}));
        assert!(none.unwrap().is_none());
        return;
    }
    w.subscribe_app();
    let news = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let listener = {
        let news = Arc::clone(&news);
        shared_store::Authorizations::watch_changes(
            &*w.store,
            Box::new(move || {
                news.store(true, std::sync::atomic::Ordering::Relaxed);
                let _ = tx.send(());
            }),
        )
        .unwrap()
    };
    assert!(listener.is_some(), "PostgreSQL tells of changes");
    w.service.use_change_notices(Arc::clone(&news));
    assert!(w.service.follow_changes().is_empty());
    while rx.try_recv().is_ok() {}
    let revoked = std::time::Instant::now();
    w.store
        .revoke_tokens(&RevokeBy::Id(w.token_id), shared_store::authz::now())
        .unwrap();
    rx.recv_timeout(std::time::Duration::from_secs(1))
        .expect("a notice within 1 s");
    let out = w.service.follow_changes();
    assert_eq!(out.len(), 1, "after {:?}", revoked.elapsed());
    assert!(is_none_event(&out[0]));
}

#[test]
fn delivery_checks_the_token_even_before_the_log_is_read() {
    let mut w = world();
    w.subscribe_app();
    w.store
        .revoke_tokens(&RevokeBy::Id(w.token_id), shared_store::authz::now())
        .unwrap();
    // No follow_changes: the publish itself finds the token dead, ends the subscription
    // and delivers nothing.
    let out = w.handle(publish_to_alice());
    assert_eq!(
        out.len(),
        2,
        "{:?}",
        out.iter().map(String::from).collect::<Vec<_>>()
    );
    assert!(is_none_event(&out[0]));
    assert_eq!(out[1].attr("type"), Some("result"));
    assert!(w.storage.subscriptions(None).unwrap().is_empty());
}

#[test]
fn after_a_restart_the_first_poll_catches_up_with_the_log() {
    let mut w = world();
    w.subscribe_app();
    let open = pubsub(APP, "set", "<subscribe node='/news' jid='app@localhost'/>");
    assert_eq!(w.reply(open).attr("type"), Some("result"));
    assert!(w.service.follow_changes().is_empty());
    // Where it stopped reading is stored.
    assert_eq!(
        w.storage.change_cursor().unwrap(),
        w.store.last_change().unwrap()
    );
    // The guard stops; meanwhile the consumer is revoked.
    w.store
        .revoke_consumer(&w.key, shared_store::authz::now())
        .unwrap();
    let mut restarted = Service::new(
        &w.config,
        Box::new(DbStorage::open(&w.db).unwrap()),
        w.store.clone(),
    );
    let out = restarted.follow_changes();
    assert_eq!(out.len(), 1);
    assert!(is_none_event(&out[0]));
    // The open node's subscription needs no token and stays.
    let left = w.storage.subscriptions(None).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].node, "/news");
}

#[test]
fn refused_heads_are_answered_when_the_kind_allows() {
    let w = world();
    let head = |name: &str, kind: Option<&str>| StanzaHead {
        name: name.into(),
        id: Some("big".into()),
        from: Some(EVE.into()),
        to: Some("pubsub.localhost".into()),
        kind: kind.map(str::to_owned),
    };
    let refusal = Refusal::too_large(70000, 65536);
    let reply = w
        .service
        .refuse_head(&head("message", None), &refusal)
        .unwrap();
    assert_eq!(reply.name(), "message");
    expect(
        &reply,
        "modify",
        "policy-violation",
        None,
        "the stanza has 70000 bytes; this service's limit is 65536",
    );
    assert!(
        w.service
            .refuse_head(&head("presence", None), &refusal)
            .is_none()
    );
    assert!(
        w.service
            .refuse_head(&head("message", Some("error")), &refusal)
            .is_none()
    );
    assert!(
        w.service
            .refuse_head(&head("iq", Some("result")), &refusal)
            .is_none()
    );
    let mut anonymous = head("iq", Some("get"));
    anonymous.from = None;
    assert!(w.service.refuse_head(&anonymous, &refusal).is_none());
}

/// Profile N6: to an asker who may not know it, a protected node that exists answers every
/// request exactly as one that does not.
#[test]
fn protected_nodes_answer_the_same_whether_or_not_they_exist() {
    let mut w = world();
    w.storage
        .create_node(&Node {
            name: "/location/bob".into(),
            owner: Some("bob".into()),
            access: Access::OAuth,
            publishers: vec!["loc@localhost".into()],
            max_items: 2,
            max_age_secs: 0,
            send_last_published_item: false,
            created_at: 1,
        })
        .unwrap();
    let requests = [
        (
            "get",
            "<query xmlns='http://jabber.org/protocol/disco#info' node='{}'/>",
        ),
        (
            "get",
            "<query xmlns='http://jabber.org/protocol/disco#items' node='{}'/>",
        ),
        (
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='{}' jid='eve@localhost'/></pubsub>",
        ),
        (
            "get",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{}'/></pubsub>",
        ),
        (
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><unsubscribe node='{}' jid='eve@localhost'/></pubsub>",
        ),
        (
            "get",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><subscriptions node='{}'/></pubsub>",
        ),
        (
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{}'><item><a xmlns='urn:a'/></item></publish></pubsub>",
        ),
        (
            "set",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='{}'><item id='i'/></retract></pubsub>",
        ),
    ];
    let answer = |w: &mut World, kind: &str, payload: &str, node: &str| {
        let reply = w.reply(iq(EVE, kind, &payload.replace("{}", node)));
        String::from(&reply).replace(node, "NODE")
    };
    for (kind, payload) in requests {
        let existing = answer(&mut w, kind, payload, "/location/bob");
        let missing = answer(&mut w, kind, payload, "/location/zed");
        assert_eq!(existing, missing, "{payload}");
    }
    // A valid token from another owner: the same refusal for bob's node and a missing one.
    let existing = w.reply(w.signed_subscribe("/location/bob"));
    let missing = w.reply(w.signed_subscribe("/location/zed"));
    let text = |reply: &Element, node: &str| {
        let (kind, condition, app, text) = error(reply);
        (kind, condition, app, text.replace(node, "NODE"))
    };
    assert_eq!(
        text(&existing, "/location/bob"),
        (
            "auth".to_owned(),
            "forbidden".to_owned(),
            None,
            "node \"NODE\" is not covered by this token".to_owned()
        )
    );
    assert_eq!(
        text(&missing, "/location/zed"),
        text(&existing, "/location/bob")
    );
    // The owner's own application may learn that a node of hers is missing.
    expect(
        &w.reply(w.signed_subscribe("/location/alice/none")),
        "auth",
        "forbidden",
        None,
        "node \"/location/alice/none\" is not covered by this token",
    );
}

/// Issue 10, case 5: JIDs are normalized at the edge, one subscription per (node, bare JID).
#[test]
fn one_subscription_per_bare_jid_whatever_its_case_or_resource() {
    let mut w = world();
    let first = w.reply(w.signed_subscribe_as(
        "FINDMENOW@LOCALHOST/x",
        "/location/alice",
        "FINDMENOW@LOCALHOST/x",
    ));
    // Another consumer account would not have the bare JID; the world's token is the
    // consumer's, so the test uses its own JID in two spellings.
    assert_eq!(
        first.attr("type"),
        Some("result"),
        "{}",
        String::from(&first)
    );
    let second = w.reply(w.signed_subscribe_as(
        "findmenow@localhost/y",
        "/location/alice",
        "findmenow@localhost",
    ));
    assert_eq!(second.attr("type"), Some("result"));
    let subid = |reply: &Element| {
        reply
            .get_child("pubsub", PUBSUB)
            .and_then(|p| p.get_child("subscription", PUBSUB))
            .and_then(|s| s.attr("subid"))
            .map(str::to_owned)
    };
    assert_eq!(subid(&first), subid(&second));
    let stored = w.storage.subscriptions(Some("/location/alice")).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].jid, "findmenow@localhost");
    let out = w.handle(publish_to_alice());
    let events: Vec<_> = out.iter().filter(|e| e.name() == "message").collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].attr("to"), Some("findmenow@localhost"));
    // An address that is not a JID is refused with its reason.
    expect(
        &w.reply(pubsub(
            APP,
            "set",
            "<subscribe node='/news' jid='app@@localhost'/>",
        )),
        "modify",
        "bad-request",
        Some("invalid-jid"),
        "the subscribed JID \"app@@localhost\" is not a valid JID: second @ found before parsing the resource",
    );
}

/// The ids of an items answer and its RSM `<set/>` as `first@index last count`.
pub(crate) fn page_of(reply: &Element) -> (Vec<String>, String) {
    assert_eq!(
        reply.attr("type"),
        Some("result"),
        "{}",
        String::from(reply)
    );
    let pubsub = reply.get_child("pubsub", PUBSUB).unwrap();
    let ids = pubsub
        .get_child("items", PUBSUB)
        .unwrap()
        .children()
        .filter_map(|i| i.attr("id").map(str::to_owned))
        .collect();
    let set = pubsub
        .get_child("set", RSM)
        .map_or("no set".to_owned(), |set| {
            let text = |n: &str| set.get_child(n, RSM).map(Element::text);
            let first = set
                .get_child("first", RSM)
                .map(|f| format!("{}@{}", f.text(), f.attr("index").unwrap_or("?")));
            format!(
                "{} {} {}",
                first.unwrap_or("-".into()),
                text("last").unwrap_or("-".into()),
                text("count").unwrap_or("-".into())
            )
        });
    (ids, set)
}

/// Profile N10: items in pages (XEP-0059), in publish order, each answer with its first
/// item's index, its last item and the count; stable while publishes go on.
#[test]
fn items_come_in_pages_in_publish_order_and_paging_survives_publishes() {
    let mut w = world();
    w.storage
        .create_node(&Node {
            name: "/feed".into(),
            owner: None,
            access: Access::Open,
            publishers: vec!["loc@localhost".into()],
            max_items: 100,
            max_age_secs: 0,
            send_last_published_item: false,
            created_at: 0,
        })
        .unwrap();
    let publish = |w: &mut World, id: &str| {
        let out = w.handle(pubsub(
            LOC,
            "set",
            &format!("<publish node='/feed'><item id='{id}'><a xmlns='urn:a'/></item></publish>"),
        ));
        assert_eq!(out.last().and_then(|r| r.attr("type")), Some("result"));
    };
    for i in 0..7 {
        publish(&mut w, &format!("p{i}"));
    }
    let get = |w: &mut World, set: &str| {
        page_of(&w.reply(pubsub(
            EVE,
            "get",
            &format!("<items node='/feed'/><set xmlns='{RSM}'>{set}</set>"),
        )))
    };
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cases: &[(&str, &[&str], &str)] = &[
        ("<max>3</max>", &["p0", "p1", "p2"], "p0@0 p2 7"),
        (
            "<max>3</max><after>p2</after>",
            &["p3", "p4", "p5"],
            "p3@3 p5 7",
        ),
        ("<max>3</max><after>p5</after>", &["p6"], "p6@6 p6 7"),
        ("<max>3</max><after>p6</after>", &[], "- - 7"),
        ("<max>2</max><before/>", &["p5", "p6"], "p5@5 p6 7"),
        (
            "<max>2</max><before>p5</before>",
            &["p3", "p4"],
            "p3@3 p4 7",
        ),
        ("<max>2</max><before>p1</before>", &["p0"], "p0@0 p0 7"),
        ("<max>2</max><index>4</index>", &["p4", "p5"], "p4@4 p5 7"),
        ("<max>0</max>", &[], "- - 7"),
        ("", &["p0", "p1", "p2", "p3", "p4", "p5", "p6"], "p0@0 p6 7"),
    ];
    for (set, want, summary) in cases {
        assert_eq!(get(&mut w, set), (ids(want), summary.to_string()), "{set}");
    }
    // A consumer pages forward while publishes go on: nothing lost, nothing twice.
    let mut seen = Vec::new();
    let mut after = String::new();
    for round in 0..10 {
        let set = if after.is_empty() {
            "<max>2</max>".to_owned()
        } else {
            format!("<max>2</max><after>{after}</after>")
        };
        let (page, _) = get(&mut w, &set);
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap().clone();
        seen.extend(page);
        if round < 3 {
            publish(&mut w, &format!("q{round}"));
        }
    }
    let all: Vec<String> = (0..7)
        .map(|i| format!("p{i}"))
        .chain((0..3).map(|i| format!("q{i}")))
        .collect();
    assert_eq!(seen, all);
    // Without a <set/> nothing changes for small nodes: every item, no set.
    let plain = w.reply(pubsub(EVE, "get", "<items node='/feed' max_items='2'/>"));
    assert_eq!(page_of(&plain), (ids(&["q1", "q2"]), "no set".to_owned()));
}

#[test]
fn bad_result_set_requests_are_refused_with_their_reason() {
    let mut w = world();
    let published = w.handle(pubsub(
        LOC,
        "set",
        "<publish node='/news'><item id='one'><a xmlns='urn:a'/></item></publish>",
    ));
    assert_eq!(
        published.last().and_then(|r| r.attr("type")),
        Some("result")
    );
    let cases = [
        (
            "<after>gone</after>",
            "item-not-found",
            "cancel",
            "the item \"gone\" is not in the node \"/news\" (retracted, or no longer held); page from the oldest item held by asking without <after/>",
        ),
        (
            "<before>gone</before>",
            "item-not-found",
            "cancel",
            "the item \"gone\" is not in the node \"/news\" (retracted, or no longer held); page from the oldest item held by asking without <after/>",
        ),
        (
            "<max>ten</max>",
            "bad-request",
            "modify",
            "RSM <max/> must be a whole number (got \"ten\")",
        ),
        (
            "<index>-1</index>",
            "bad-request",
            "modify",
            "RSM <index/> must be a whole number (got \"-1\")",
        ),
        (
            "<after/>",
            "bad-request",
            "modify",
            "RSM <after/> needs an item id",
        ),
        (
            "<after>one</after><index>0</index>",
            "bad-request",
            "modify",
            "RSM: give at most one of <after/>, <before/> and <index/>",
        ),
    ];
    for (set, condition, kind, text) in cases {
        let reply = w.reply(pubsub(
            EVE,
            "get",
            &format!("<items node='/news'/><set xmlns='{RSM}'>{set}</set>"),
        ));
        expect(&reply, kind, condition, None, text);
    }
}

#[test]
fn a_page_stays_under_the_byte_bound_and_an_unbounded_request_says_it_was_cut() {
    let mut w = world();
    w.storage
        .create_node(&Node {
            name: "/big".into(),
            owner: None,
            access: Access::Open,
            publishers: vec!["loc@localhost".into()],
            max_items: 1000,
            max_age_secs: 0,
            send_last_published_item: false,
            created_at: 0,
        })
        .unwrap();
    let big = "x".repeat(100 * 1024);
    for i in 0..3 {
        let out = w.handle(pubsub(
            LOC,
            "set",
            &format!(
                "<publish node='/big'><item id='b{i}'><a xmlns='urn:a'>{big}</a></item></publish>"
            ),
        ));
        assert_eq!(out.last().and_then(|r| r.attr("type")), Some("result"));
    }
    // 100 KiB each: one per page under the 192 KiB bound, the page says where it stands.
    let reply = w.reply(pubsub(
        EVE,
        "get",
        &format!("<items node='/big'/><set xmlns='{RSM}'><max>3</max></set>"),
    ));
    assert_eq!(
        page_of(&reply),
        (vec!["b0".to_owned()], "b0@0 b0 3".to_owned())
    );
    let reply = w.reply(pubsub(
        EVE,
        "get",
        &format!("<items node='/big'/><set xmlns='{RSM}'><before/></set>"),
    ));
    assert_eq!(
        page_of(&reply),
        (vec!["b2".to_owned()], "b2@2 b2 3".to_owned())
    );
    // No <set/>, no max_items: the newest that fit, and a <set/> saying it is not all.
    let reply = w.reply(pubsub(EVE, "get", "<items node='/big'/>"));
    assert_eq!(
        page_of(&reply),
        (vec!["b2".to_owned()], "b2@2 b2 3".to_owned())
    );
}

/// Issue 10, case 7: the subscription options request is `feature-not-implemented`
/// (XEP-0060 §6.3.2), and an RSM `<set/>` beside another action is ignored (XEP-0059 §4).
#[test]
fn options_are_not_implemented_and_rsm_beside_other_actions_is_ignored() {
    let mut w = world();
    let published = w.handle(pubsub(
        LOC,
        "set",
        &format!("<publish node='/news'><item id='one'><a xmlns='urn:a'/></item></publish><set xmlns='{RSM}'><max>1</max></set>"),
    ));
    assert_eq!(
        published.last().and_then(|r| r.attr("type")),
        Some("result")
    );
    for kind in ["get", "set"] {
        expect(
            &w.reply(pubsub(
                EVE,
                kind,
                "<options node='/news' jid='eve@localhost'/>",
            )),
            "cancel",
            "feature-not-implemented",
            Some("unsupported"),
            "this service does not implement the pubsub feature \"subscription-options\"",
        );
    }
}

#[test]
fn a_node_with_thousands_of_subscribers_notifies_each_once_and_finds_one_by_its_jid() {
    // More subscribers than one page of the fan-out (1,000), and more than one page of
    // each sender's subscription lookups would read if they read the whole node.
    let mut w = world();
    let subscribers = 1_234;
    for i in 0..subscribers {
        let jid = format!("app{i}@localhost");
        let subscribe = w.signed_subscribe_as(&format!("{jid}/r"), "/location/alice", &jid);
        assert_eq!(w.reply(subscribe).attr("type"), Some("result"), "{jid}");
    }
    let out = w.handle(pubsub(
        LOC,
        "set",
        "<publish node='/location/alice'><item id='one'><p xmlns='urn:test'/></item></publish>",
    ));
    assert_eq!(out.last().and_then(|r| r.attr("type")), Some("result"));
    let mut to: Vec<&str> = out[..out.len() - 1]
        .iter()
        .map(|m| {
            assert_eq!(m.name(), "message");
            m.attr("to").unwrap()
        })
        .collect();
    assert_eq!(to.len(), subscribers);
    to.sort_unstable();
    to.dedup();
    assert_eq!(to.len(), subscribers, "each subscriber once");

    // One subscriber asks for its subscriptions: its own, found by its JID.
    let reply = w.reply(pubsub("app77@localhost/r", "get", "<subscriptions/>"));
    let list = reply
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("subscriptions", PUBSUB))
        .unwrap();
    let jids: Vec<_> = list.children().map(|s| s.attr("jid").unwrap()).collect();
    assert_eq!(jids, ["app77@localhost"]);

    // The token behind them all is revoked: each subscriber is told once, a page at a time.
    w.service.follow_changes();
    w.store
        .revoke_tokens(&RevokeBy::Id(w.token_id), shared_store::authz::now())
        .unwrap();
    let out = w.service.follow_changes();
    let ended = |m: &Element| {
        m.get_child("event", "http://jabber.org/protocol/pubsub#event")
            .and_then(|e| e.get_child("subscription", "http://jabber.org/protocol/pubsub#event"))
            .is_some_and(|s| {
                s.attr("subscription") == Some("none") && s.attr("jid") == m.attr("to")
            })
    };
    if let Some(other) = out.iter().find(|m| !ended(m)) {
        panic!(
            "not a subscription='none' to its subscriber: {}",
            String::from(other)
        );
    }
    let mut told: Vec<&str> = out.iter().map(|m| m.attr("to").unwrap()).collect();
    told.sort_unstable();
    told.dedup();
    assert_eq!((out.len(), told.len()), (subscribers, subscribers));
    assert!(w.storage.subscriptions(None).unwrap().is_empty());
}

#[test]
fn requests_committed_together_answer_as_one_by_one() {
    let mut w = world();
    // As the guard runs it: the token store and the storage on one connection.
    let db = Arc::new(shared_store::db::Database::open(&w.db).unwrap());
    let store = Arc::new(Store::on(Arc::clone(&db)).unwrap());
    w.service =
        Service::new(&w.config, Box::new(DbStorage::on(db).unwrap()), store).with_group_commits();
    let subscribe = w.signed_subscribe("/location/alice");
    let publish = |from: &str| {
        pubsub(
            from,
            "set",
            "<publish node='/location/alice'><item id='one'><p xmlns='urn:test'/></item></publish>",
        )
    };
    // A subscribe, its replay, a publish, and a publish from someone who may not.
    let group = [subscribe.clone(), subscribe, publish(LOC), publish(EVE)]
        .map(|e| pubsub_guard::stanza::Stanza::from_element(&e));
    let mut out = Vec::new();
    w.service.handle_group(&group, &mut |e| out.push(e));
    let shown: Vec<String> = out.iter().map(String::from).collect();
    assert_eq!(out.len(), 5, "{shown:?}");
    assert_eq!(out[0].attr("type"), Some("result"), "{}", shown[0]);
    let (kind, condition, _, _) = error(&out[1]);
    assert_eq!(
        (kind.as_str(), condition.as_str()),
        ("auth", "not-authorized"),
        "{}",
        shown[1]
    );
    assert_eq!(out[2].name(), "message");
    assert_eq!(out[2].attr("to"), Some("app@localhost"));
    assert_eq!(out[3].attr("to"), Some(LOC));
    assert_eq!(out[3].attr("type"), Some("result"));
    let (kind, condition, _, _) = error(&out[4]);
    assert_eq!(
        (kind.as_str(), condition.as_str()),
        ("auth", "forbidden"),
        "{}",
        shown[4]
    );
    // Committed: another connection sees the subscription and the item.
    assert_eq!(
        w.storage
            .subscriptions(Some("/location/alice"))
            .unwrap()
            .len(),
        1
    );
    let items = w
        .storage
        .items_by_id(
            "/location/alice",
            &["one"],
            &pubsub_guard::storage::Visibility::All,
        )
        .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].publisher, "loc@localhost");
}

#[test]
fn a_payload_declaring_the_xml_prefix_is_refused_not_a_crash() {
    // minidom reads such a declaration but panics when it writes it: the guard must refuse
    // the publish rather than die in serializing it.
    let mut w = world();
    w.subscribe_app();
    let reply = w.reply(pubsub(
        LOC,
        "set",
        "<publish node='/location/alice'><item id='x'><p xmlns='urn:test' xmlns:xml='http://www.w3.org/XML/1998/namespace'/></item></publish>",
    ));
    expect(
        &reply,
        "modify",
        "bad-request",
        Some("invalid-payload"),
        "the payload declares the prefix xml, which is bound without declaring it",
    );
    // And the service goes on.
    let out = w.handle(pubsub(
        LOC,
        "set",
        "<publish node='/location/alice'><item id='y'><p xmlns='urn:test'/></item></publish>",
    ));
    assert_eq!(out.last().and_then(|r| r.attr("type")), Some("result"));
}
