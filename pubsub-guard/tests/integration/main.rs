//! The component loop against an in-process fake XMPP server on loopback: the handshake,
//! stanzas split across packets, whitespace keepalives both ways, garbage on the socket,
//! oversized stanzas, a refused secret, and reconnection.
//!
//! The fake server speaks the server side of XEP-0114 with raw bytes; it reads what the
//! guard sends with the guard's own `StreamParser` (which the unit tests check separately).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::Duration;

use minidom::Element;
use oauth_xmpp::Secret;
use pubsub_guard::Config;
use pubsub_guard::component::{self, RunError};
use pubsub_guard::stream::{StreamEvent, StreamParser, handshake_digest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

mod audit;
mod catchup;
mod cli;
mod metrics;
mod service;

const SECRET: &str = "fake-server-secret";
const WAIT: Duration = Duration::from_secs(10);

fn config(server: &str, db: &Path) -> Config {
    Config {
        component: "pubsub.localhost".into(),
        secret: Some(Secret::new(SECRET)),
        server: server.into(),
        database: db.into(),
        max_stanza_bytes: 2048,
        keepalive_secs: 1,
        reconnect_max_secs: 1,
        ..Config::default()
    }
}

/// One accepted component connection, seen from the server.
struct Peer {
    socket: TcpStream,
    parser: StreamParser,
    pending: Vec<StreamEvent>,
    /// Raw bytes received after the handshake (to see keepalives).
    raw: Vec<u8>,
}

impl Peer {
    /// Accepts a connection and runs the server side of the handshake; `accept` decides
    /// whether the secret is accepted.
    async fn accept(listener: &TcpListener, accept: bool) -> Peer {
        let (socket, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        let mut peer = Peer {
            socket,
            parser: StreamParser::new(1 << 20),
            pending: Vec::new(),
            raw: Vec::new(),
        };
        match peer.next().await {
            StreamEvent::Header { .. } => {}
            other => panic!("expected the component's header, got {other:?}"),
        }
        peer.send(
            "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
             xmlns='jabber:component:accept' from='pubsub.localhost' id='fake-42'>",
        )
        .await;
        let handshake = match peer.next().await {
            StreamEvent::Stanza(e) => e,
            other => panic!("expected the handshake, got {other:?}"),
        };
        assert_eq!(handshake.name(), "handshake");
        let expected = handshake_digest("fake-42", &Secret::new(SECRET));
        if accept {
            assert_eq!(handshake.text(), expected);
            peer.send("<handshake/>").await;
        } else {
            peer.send(
                "<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
                 </stream:error></stream:stream>",
            )
            .await;
        }
        peer.raw.clear();
        peer
    }

    async fn send(&mut self, text: &str) {
        self.socket.write_all(text.as_bytes()).await.unwrap();
    }

    /// Sends `text` in pieces of `size` bytes, each flushed on its own.
    async fn send_split(&mut self, text: &str, size: usize) {
        for piece in text.as_bytes().chunks(size) {
            self.socket.write_all(piece).await.unwrap();
            self.socket.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn next(&mut self) -> StreamEvent {
        loop {
            if !self.pending.is_empty() {
                return self.pending.remove(0);
            }
            let mut buf = [0u8; 4096];
            let n = timeout(WAIT, self.socket.read(&mut buf))
                .await
                .expect("the guard sent nothing in time")
                .unwrap();
            assert!(n > 0, "the guard closed the connection");
            self.raw.extend_from_slice(&buf[..n]);
            self.parser.feed(&buf[..n], &mut self.pending).unwrap();
        }
    }

    async fn next_stanza(&mut self) -> Element {
        match self.next().await {
            StreamEvent::Stanza(e) => e,
            other => panic!("expected a stanza, got {other:?}"),
        }
    }
}

fn disco(id: &str) -> String {
    format!(
        "<iq type='get' id='{id}' from='alice@localhost/phone' to='pubsub.localhost' xml:lang='en'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    )
}

struct Running {
    listener: TcpListener,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), RunError>>,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    start_with(|_, _| {}).await
}

/// Starts the guard with the test config changed by `change`, which may also prepare the
/// database (its path is given) before the guard opens it.
async fn start_with(change: impl FnOnce(&mut Config, &Path)) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("authz.sqlite");
    let mut config = config(&addr, &db);
    change(&mut config, &db);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(component::run(config, async {
        let _ = stopped.await;
    }));
    Running {
        listener,
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

impl Running {
    async fn stop(mut self) -> Result<(), RunError> {
        let _ = self.stop.take().unwrap().send(());
        timeout(WAIT, self.task).await.unwrap().unwrap()
    }
}

#[tokio::test]
async fn answers_stanzas_split_across_packets_with_keepalives_between() {
    let running = start().await;
    let mut peer = Peer::accept(&running.listener, true).await;
    // Byte by byte, with whitespace keepalives before, between and after.
    let text = format!("  \n{}\t \n{}  ", disco("d1"), disco("d2"));
    peer.send_split(&text, 7).await;
    for id in ["d1", "d2"] {
        let reply = peer.next_stanza().await;
        assert_eq!(reply.name(), "iq");
        assert_eq!(reply.attr("type"), Some("result"));
        assert_eq!(reply.attr("id"), Some(id));
        assert_eq!(reply.attr("from"), Some("pubsub.localhost"));
        assert_eq!(reply.attr("to"), Some("alice@localhost/phone"));
        let query = reply
            .get_child("query", "http://jabber.org/protocol/disco#info")
            .unwrap();
        assert!(
            query
                .children()
                .any(|f| f.attr("var") == Some("urn:xmpp:oauth:0"))
        );
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn sends_a_whitespace_keepalive_when_idle() {
    let running = start().await;
    let mut peer = Peer::accept(&running.listener, true).await;
    let mut buf = [0u8; 64];
    let n = timeout(Duration::from_secs(5), peer.socket.read(&mut buf))
        .await
        .expect("no keepalive within 5 s (keepalive_secs = 1)")
        .unwrap();
    assert_eq!(&buf[..n], b" ");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn refuses_oversized_and_malformed_stanzas_and_goes_on() {
    let running = start().await;
    let mut peer = Peer::accept(&running.listener, true).await;
    let big = format!(
        "<iq type='set' id='big' from='alice@localhost/phone' to='pubsub.localhost'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='/n'><item>\
         <p xmlns='urn:t'>{}</p></item></publish></pubsub></iq>",
        "x".repeat(5000)
    );
    peer.send_split(&big, 1000).await;
    let reply = peer.next_stanza().await;
    assert_eq!(reply.attr("type"), Some("error"));
    assert_eq!(reply.attr("id"), Some("big"));
    let error = reply.get_child("error", "jabber:component:accept").unwrap();
    assert_eq!(error.attr("type"), Some("modify"));
    assert!(error.has_child("policy-violation", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    let text = error
        .get_child("text", "urn:ietf:params:xml:ns:xmpp-stanzas")
        .unwrap()
        .text();
    assert!(text.ends_with("this service's limit is 2048"), "{text}");

    // An undeclared prefix: well-formed bytes, not a tree.
    peer.send(
        "<iq type='get' id='bad' from='alice@localhost/phone' to='pubsub.localhost'><x:y/></iq>",
    )
    .await;
    let reply = peer.next_stanza().await;
    assert_eq!(reply.attr("id"), Some("bad"));
    let error = reply.get_child("error", "jabber:component:accept").unwrap();
    assert!(error.has_child("bad-request", "urn:ietf:params:xml:ns:xmpp-stanzas"));

    // An IQ with no payload, and one with two.
    peer.send("<iq type='get' id='empty' from='alice@localhost/phone' to='pubsub.localhost'/>")
        .await;
    let reply = peer.next_stanza().await;
    assert_eq!(reply.attr("id"), Some("empty"));
    assert_eq!(reply.attr("type"), Some("error"));

    // Still serving.
    peer.send(&disco("after")).await;
    let reply = peer.next_stanza().await;
    assert_eq!(reply.attr("id"), Some("after"));
    assert_eq!(reply.attr("type"), Some("result"));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn reconnects_after_garbage_and_after_the_server_drops_it() {
    let running = start().await;
    let mut peer = Peer::accept(&running.listener, true).await;
    peer.send("<<<this is not xml>>>").await;
    // The guard drops the broken stream and comes back.
    let mut peer = Peer::accept(&running.listener, true).await;
    peer.send(&disco("again")).await;
    assert_eq!(peer.next_stanza().await.attr("id"), Some("again"));
    // The server closes the socket: the guard reconnects again.
    drop(peer);
    let mut peer = Peer::accept(&running.listener, true).await;
    peer.send(&disco("third")).await;
    assert_eq!(peer.next_stanza().await.attr("id"), Some("third"));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_refused_secret_stops_the_guard_with_a_clear_error() {
    let running = start().await;
    let _peer = Peer::accept(&running.listener, false).await;
    let result = timeout(WAIT, running.task).await.unwrap().unwrap();
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the XMPP server refused the component pubsub.localhost: stream error from the server: not-authorized"
    );
}

/// The text of an error reply's `<text/>`, checking its id, type and condition.
fn error_text(reply: &Element, id: &str, kind: &str, condition: &str) -> String {
    assert_eq!(reply.attr("id"), Some(id), "{}", String::from(reply));
    assert_eq!(reply.attr("type"), Some("error"), "{}", String::from(reply));
    let error = reply.get_child("error", "jabber:component:accept").unwrap();
    assert_eq!(error.attr("type"), Some(kind));
    assert!(
        error.has_child(condition, "urn:ietf:params:xml:ns:xmpp-stanzas"),
        "{}",
        String::from(reply)
    );
    error
        .get_child("text", "urn:ietf:params:xml:ns:xmpp-stanzas")
        .unwrap()
        .text()
}

/// Issue 10, cases 2 and 3: one long attribute or one deep stanza from any user is refused on
/// its own; the stream, and the stanzas read together with it, are kept.
#[tokio::test]
async fn long_tokens_and_deep_nesting_are_refused_per_stanza_and_the_stream_stays() {
    let running = start_with(|c, _| c.max_stanza_bytes = 64 * 1024).await;
    let mut peer = Peer::accept(&running.listener, true).await;
    let node = |id: &str, len: usize| {
        format!(
            "<iq type='get' id='{id}' from='alice@localhost/phone' to='pubsub.localhost'>\
             <query xmlns='http://jabber.org/protocol/disco#info' node='/{}'/></iq>",
            "n".repeat(len)
        )
    };
    // A 9,000-byte attribute (over the XML parser's default token limit, well within the
    // stanza limit), then a 100,000-byte one (over the stanza limit), then a publish nested
    // 4,600 deep, each followed in the same write by an ordinary request.
    let deep = format!(
        "<iq type='set' id='deep' from='alice@localhost/phone' to='pubsub.localhost'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='/news'><item>\
         {}{}</item></publish></pubsub></iq>",
        "<a>".repeat(4600),
        "</a>".repeat(4600)
    );
    let burst = format!(
        "{}{}{}{}{}{}",
        node("long", 9000),
        disco("after-long"),
        node("huge", 100_000),
        disco("after-huge"),
        deep,
        disco("after-deep")
    );
    peer.send_split(&burst, 16 * 1024).await;
    let long = peer.next_stanza().await;
    assert_eq!(long.attr("id"), Some("long"));
    assert_eq!(peer.next_stanza().await.attr("id"), Some("after-long"));
    let huge = peer.next_stanza().await;
    assert_eq!(
        error_text(&huge, "huge", "modify", "policy-violation"),
        format!(
            "the stanza has {} bytes; this service's limit is 65536",
            node("huge", 100_000).len()
        )
    );
    assert_eq!(peer.next_stanza().await.attr("id"), Some("after-huge"));
    let deep = peer.next_stanza().await;
    assert_eq!(
        error_text(&deep, "deep", "modify", "policy-violation"),
        "the stanza nests elements more than 64 deep; this service's limit is 64"
    );
    let after = peer.next_stanza().await;
    assert_eq!(after.attr("id"), Some("after-deep"));
    assert_eq!(after.attr("type"), Some("result"));
    running.stop().await.unwrap();
}

/// Issue 10, case 4: a burst never drops a stanza. The server reads nothing while 5
/// publishes fan out to 6,000 subscribers each (30,000 notifications, more than the guard's
/// queues and the socket buffers hold); then it reads, and gets every notification, and each
/// publish result after that publish's notifications.
#[tokio::test]
async fn a_burst_to_many_subscribers_delivers_everything_in_order_when_the_server_reads_slowly() {
    const SUBSCRIBERS: usize = 6000;
    const PUBLISHES: usize = 5;
    let running = start_with(|c, db| {
        c.max_stanza_bytes = 64 * 1024;
        use pubsub_guard::storage::Storage;
        let storage = pubsub_guard::storage::DbStorage::open(db).unwrap();
        storage
            .create_node(&pubsub_guard::storage::Node {
                name: "/news".into(),
                owner: None,
                access: pubsub_guard::storage::Access::Open,
                publishers: vec!["news@localhost".into()],
                max_items: 10,
                max_age_secs: 0,
                send_last_published_item: false,
                created_at: 1,
            })
            .unwrap();
        for i in 0..SUBSCRIBERS {
            storage
                .subscribe(&pubsub_guard::storage::Subscription {
                    node: "/news".into(),
                    jid: format!("reader{i}@localhost"),
                    subid: format!("s{i}"),
                    token: None,
                    consumer_key: None,
                    created_at: 1,
                })
                .unwrap();
        }
    })
    .await;
    let mut peer = Peer::accept(&running.listener, true).await;
    let mut burst = String::new();
    for p in 0..PUBLISHES {
        burst.push_str(&format!(
            "<iq type='set' id='pub{p}' from='news@localhost/desk' to='pubsub.localhost'>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='/news'>\
             <item id='item{p}'><entry xmlns='http://www.w3.org/2005/Atom'><title>{}</title>\
             </entry></item></publish></pubsub></iq>",
            "t".repeat(200)
        ));
    }
    peer.send(&burst).await;
    // The server is busy elsewhere for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut events = vec![0usize; PUBLISHES];
    for (p, count) in events.iter_mut().enumerate() {
        loop {
            let stanza = timeout(Duration::from_secs(60), peer.next_stanza())
                .await
                .expect("the guard stopped sending");
            if stanza.name() == "iq" {
                assert_eq!(stanza.attr("id"), Some(format!("pub{p}").as_str()));
                assert_eq!(stanza.attr("type"), Some("result"));
                break;
            }
            let item = stanza
                .get_child("event", "http://jabber.org/protocol/pubsub#event")
                .and_then(|e| e.get_child("items", "http://jabber.org/protocol/pubsub#event"))
                .and_then(|i| i.get_child("item", "http://jabber.org/protocol/pubsub#event"))
                .and_then(|i| i.attr("id"))
                .expect("a notification");
            assert_eq!(item, format!("item{p}"));
            *count += 1;
        }
    }
    assert_eq!(events, vec![SUBSCRIBERS; PUBLISHES]);
    running.stop().await.unwrap();
}

/// On shutdown the guard stops reading, answers every stanza it had read (in order, none
/// skipped), and closes the stream politely.
#[tokio::test]
async fn shutdown_answers_what_was_read_then_closes_the_stream() {
    let running = start().await;
    let mut peer = Peer::accept(&running.listener, true).await;
    let burst: String = (0..500).map(|i| disco(&format!("d{i}"))).collect();
    peer.send(&burst).await;
    // The first reply shows the guard is reading; then it is told to stop.
    assert_eq!(peer.next_stanza().await.attr("id"), Some("d0"));
    let Running { stop, task, .. } = running;
    let _ = stop.unwrap().send(());
    let mut answered = 1;
    loop {
        match peer.next().await {
            StreamEvent::Stanza(reply) => {
                assert_eq!(reply.attr("id"), Some(format!("d{answered}").as_str()));
                assert_eq!(reply.attr("type"), Some("result"));
                answered += 1;
            }
            StreamEvent::Closed => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(answered <= 500);
    timeout(WAIT, task).await.unwrap().unwrap().unwrap();
}

/// The guard on PostgreSQL: it starts (its store's blocking client kept off the async
/// runtime, where it would panic), serves, follows the change log (a revocation reaches the
/// subscriber as `subscription='none'` within a second), and stops (the change listener does
/// not keep the worker alive).
#[tokio::test]
async fn on_postgres_the_guard_serves_follows_notices_and_stops() {
    use pubsub_guard::storage::{Access, DbStorage, Node, Storage, Subscription};
    use shared_store::Store;
    use shared_store::authz::RevokeBy;
    use shared_store::db::Location;
    let Some(cluster) = testkit_postgres::optional_shared() else {
        return;
    };
    let location = Location::Postgres(cluster.new_database("component_notices").unwrap());
    // The clients block: they are made, used and dropped off the runtime.
    let token_id = tokio::task::spawn_blocking({
        let location = location.clone();
        move || {
            let store = Store::open(&location).unwrap();
            store.add_owner("alice", "$argon2id$test", 1).unwrap();
            let (key, _) = store.add_consumer("App", None, None, 1).unwrap();
            let grant = store
                .grant("alice", &key, &oauth_xmpp::Scope::all(), None, 1)
                .unwrap();
            let storage = DbStorage::open(&location).unwrap();
            storage
                .create_node(&Node {
                    name: "/location/alice".into(),
                    owner: Some("alice".into()),
                    access: Access::OAuth,
                    publishers: vec!["loc@localhost".into()],
                    max_items: 10,
                    max_age_secs: 0,
                    send_last_published_item: false,
                    created_at: 1,
                })
                .unwrap();
            storage
                .subscribe(&Subscription {
                    node: "/location/alice".into(),
                    jid: "app@localhost".into(),
                    subid: "s1".into(),
                    token: Some(grant.token.clone()),
                    consumer_key: Some(key),
                    created_at: 1,
                })
                .unwrap();
            grant.id
        }
    })
    .await
    .unwrap();
    let running = start_with({
        let location = location.clone();
        move |c, _| {
            c.database = location;
            c.instance = "guard-a".into();
        }
    })
    .await;
    let mut peer = Peer::accept(&running.listener, true).await;
    peer.send(&disco("d1")).await;
    assert_eq!(peer.next_stanza().await.attr("type"), Some("result"));
    let revoked = tokio::task::spawn_blocking(move || {
        let store = Store::open(&location).unwrap();
        // The guard's first read of the log (at start) has passed once disco was answered.
        store.revoke_tokens(&RevokeBy::Id(token_id), 2).unwrap();
        std::time::Instant::now()
    })
    .await
    .unwrap();
    let notice = timeout(Duration::from_secs(1), peer.next_stanza())
        .await
        .expect("subscription='none' within 1 s");
    let subscription = notice
        .get_child("event", "http://jabber.org/protocol/pubsub#event")
        .and_then(|e| e.get_child("subscription", "http://jabber.org/protocol/pubsub#event"))
        .unwrap_or_else(|| panic!("{}", String::from(&notice)));
    assert_eq!(notice.attr("to"), Some("app@localhost"));
    assert_eq!(subscription.attr("subscription"), Some("none"));
    assert!(revoked.elapsed() < Duration::from_secs(1));
    running.stop().await.unwrap();
}
