//! The guard's path for one signed subscribe, from the stanza's bytes to the service's
//! answer, against the old way of reading and verifying it, in one run on this machine.
//!
//! ```sh
//! cargo bench -p pubsub-guard --bench subscribe
//! ```
//!
//! The stanza is XEP-0235 v0.7's example subscribe (606 bytes, to the node `bard_geoloc`),
//! with its nonce varied and re-signed so that every request is fresh; the nonce store is
//! warm and replaced (outside the timing) every 4,096 requests. Credentials and nonces are
//! in memory (`oauth_xmpp::MemoryCredentials`, `MemoryNonceStore`), so the figures are the
//! guard's own work, without its database.
//!
//! - `parse_and_verify` (the baseline, as `oauth-xmpp`'s `verify` bench has it): the bytes
//!   parsed into a minidom `Element`, then `Verifier::verify_stanza` (find `<oauth/>`, the
//!   element rules, the base string, HMAC-SHA1, the constant-time compare, the nonce
//!   recorded) to the `Verified` proof;
//! - `stream_and_verify`: the same verification, from the bytes as the guard receives them:
//!   one read's bytes into the guard's stream reader (`StreamParser::compact`, the parser
//!   `StreamReader` runs on every read: the quick path makes the compact `Stanza`), then
//!   `Verifier::verify_stanza` on the stanza, to the `Verified` proof;
//! - `guard_subscribe`: the guard's whole path short of the socket and its two queues: the
//!   bytes into the guard's stream reader, then `Service::handle_stanza` (what the worker
//!   thread runs): the IQ and pubsub checks, the subscribe `jid`, the node looked up, the
//!   gate (the verification above, then the token's owner and scope against the node), the
//!   grants replayed, the subscription stored, and the `subscribed` result built. Storage is
//!   a map in memory here (the guard's is SQLite or PostgreSQL: see the `engines` bench);
//! - `guard_subscribe_general_path`: the same with the stream reader's quick path off, so the
//!   stanza goes through rxml's parser and minidom's tree builder first, as before the quick
//!   path (then into the compact form the service reads).
//!
//! What the profile showed (callgrind, before the quick path): of the 18 µs of
//! `parse_and_verify`, rxml's lexer and parser took about 68,000 instructions for the 606
//! bytes, minidom's tree building about as many again (eleven elements, each with its own
//! name, namespace, attribute and prefix maps), and the verification about 19,000 (HMAC-SHA1
//! most of it). The quick path reads the bytes in one pass into one string and two flat
//! lists (about 12,500 instructions), and the verifier reads the `<oauth/>` straight from
//! them.
//!
//! Measured here (2 shared cores, load about 3; criterion's medians, one run):
//!
//! | path | time | ratio | instructions per request (callgrind) |
//! |---|---:|---:|---:|
//! | `parse_and_verify` (baseline) | 12.36 µs | 1.00 | 150,143 |
//! | `stream_and_verify` | 2.13 µs | 0.17 (5.8× faster) | 41,898 |
//! | `guard_subscribe` | 6.13 µs | 0.50 | 67,292 |
//! | `guard_subscribe_general_path` | 18.35 µs | 1.48 | 206,311 |
//!
//! Earlier runs on a busier machine gave 18.5 µs, 4.65 µs and 10.4 µs for the first three:
//! the times follow the load, the ratios and the counts do not. Callgrind runs HMAC-SHA1's
//! software implementation (valgrind's CPU has no SHA extensions; this machine's has, and
//! uses them natively), which is 11,200 of the instructions of every path. Of
//! `guard_subscribe`'s instructions, the stream reader takes 20%, the service up to its
//! decision (the IQ and pubsub checks, the two JIDs normalized, the node, the gate with the
//! verification) 56%, and what follows the decision (the replayed grants, the subscription
//! stored in memory, the `subscribed` result built with minidom) 24%: bytes to the decision
//! are about 4.7 µs of its 6.13.
//!
//! Counted with `SUBSCRIBE_BENCH_RUN=<path>:4096 valgrind --tool=callgrind <bench binary>`
//! less the same with `:0` (see `main`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use minidom::Element;
use oauth_xmpp::replay::{NonceKey, NonceOutcome, NonceStore};
use oauth_xmpp::{
    ConsumerRecord, CredentialStore, FixedClock, MemoryCredentials, MemoryNonceStore, Scope,
    StanzaRequest, StoreError, TokenRecord, Verifier,
};
use pubsub_guard::config::Config;
use pubsub_guard::service::Service;
use pubsub_guard::stanza::Stanza;
use pubsub_guard::storage::{
    Access, ArchiveFrom, ArchivePage, ArchiveQuery, History, Item, Node, Page, PageFrom, Published,
    Storage, StorageError, Subscription, Visibility,
};
use pubsub_guard::stream::{Limits, StreamEvent, StreamParser};
use shared_store::authz::{Change, GrantSpan};
use shared_store::db::Listener;

/// The stream header the server sends (XEP-0114), before the stanzas.
const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
    xmlns:stream='http://etherx.jabber.org/streams' from='feeds.worldgps.tld' id='s-1'>";

/// XEP-0235 v0.7's subscribe, as it arrives on the component stream (in the stream's
/// namespace).
const STANZA: &str = "<iq from='travelbot@findmenow.tld/bot' id='sub1' \
    to='feeds.worldgps.tld' type='set'>\
    <pubsub xmlns='http://jabber.org/protocol/pubsub'>\
    <subscribe jid='travelbot@findmenow.tld' node='bard_geoloc'/>\
    <oauth xmlns='urn:xmpp:oauth:0'>\
    <oauth_consumer_key>0685bd9184jfhq22</oauth_consumer_key>\
    <oauth_nonce>4572616e48616d6d65724c61686176</oauth_nonce>\
    <oauth_signature>9PQkM4YKgaM067wqrDGshXOwDW0=</oauth_signature>\
    <oauth_signature_method>HMAC-SHA1</oauth_signature_method>\
    <oauth_timestamp>1218137833</oauth_timestamp>\
    <oauth_token>ad180jjd733klru7</oauth_token>\
    <oauth_version>1.0</oauth_version>\
    </oauth></pubsub></iq>";

const NOW: u64 = 1_218_137_833;

/// How many distinct requests one nonce store sees before it is replaced.
const BATCH: usize = 4096;

fn credentials() -> MemoryCredentials {
    let mut store = MemoryCredentials::default();
    store.add_consumer("0685bd9184jfhq22", "consumersecret");
    store.add_access_token(
        "ad180jjd733klru7",
        "tokensecret",
        "0685bd9184jfhq22",
        "world-traveler",
        Scope::parse("bard_geoloc"),
    );
    store
}

/// The example with nonce number `i` (as long as the example's) and its signature, in the
/// stream's namespace.
fn variant(i: usize) -> String {
    let nonce = format!("{i:030x}");
    let text = STANZA.replace("4572616e48616d6d65724c61686176", &nonce);
    let element: Element = text
        .replacen("<iq ", "<iq xmlns='jabber:component:accept' ", 1)
        .parse()
        .unwrap();
    let request = StanzaRequest::from_stanza(&element).unwrap().unwrap();
    let signature = oauth_xmpp::signature::sign(
        oauth_xmpp::SignatureMethod::HmacSha1,
        &request.base_string(),
        &"consumersecret".into(),
        &"tokensecret".into(),
    );
    text.replace("9PQkM4YKgaM067wqrDGshXOwDW0=", &signature)
}

/// The token store in memory: the example's credentials and a nonce store.
struct Tokens {
    credentials: MemoryCredentials,
    nonces: MemoryNonceStore,
}

impl CredentialStore for Tokens {
    fn consumer(&self, consumer_key: &str) -> Result<Option<ConsumerRecord>, StoreError> {
        self.credentials.consumer(consumer_key)
    }

    fn token(&self, token: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.credentials.token(token)
    }
}

impl NonceStore for Tokens {
    fn check_and_record(
        &self,
        key: &NonceKey<'_>,
        expires_at: u64,
        now: u64,
    ) -> Result<NonceOutcome, StoreError> {
        self.nonces.check_and_record(key, expires_at, now)
    }
}

impl shared_store::Authorizations for Tokens {
    fn changes_since(&self, _seq: i64, _limit: usize) -> shared_store::authz::Result<Vec<Change>> {
        Ok(Vec::new())
    }

    fn log_expiries(&self, _now: u64) -> shared_store::authz::Result<usize> {
        Ok(0)
    }

    fn grant_spans(
        &self,
        _consumer_key: &str,
        _owner: &str,
    ) -> shared_store::authz::Result<Vec<GrantSpan>> {
        Ok(vec![GrantSpan {
            scope: Scope::parse("bard_geoloc"),
            granted_seq: 1,
            ended_seq: None,
            expires_at: None,
        }])
    }

    fn watch_changes(
        &self,
        _wake: Box<dyn Fn() + Send>,
    ) -> shared_store::authz::Result<Option<Listener>> {
        Ok(None)
    }

    fn record(
        &self,
        _entry: shared_store::authz::ledger::NewEntry,
    ) -> shared_store::authz::Result<()> {
        Ok(())
    }

    fn add_deliveries(
        &self,
        _batch: &[shared_store::authz::ledger::Delivered],
    ) -> shared_store::authz::Result<()> {
        Ok(())
    }
}

/// The guard's storage in memory: nodes and subscriptions, for what a subscribe asks of
/// it. The rest answers as an empty store (a subscribe never calls it).
#[derive(Default)]
struct Memory {
    nodes: Mutex<HashMap<String, Node>>,
    subscriptions: Mutex<HashMap<(String, String), Subscription>>,
}

impl Storage for Memory {
    fn totals(&self) -> Result<pubsub_guard::storage::Totals, StorageError> {
        Ok(pubsub_guard::storage::Totals {
            nodes: self.nodes.lock().unwrap().len() as u64,
            subscriptions: self.subscriptions.lock().unwrap().len() as u64,
        })
    }

    fn create_node(&self, node: &Node) -> Result<(), StorageError> {
        let mut nodes = self.nodes.lock().unwrap();
        if nodes.contains_key(&node.name) {
            return Err(StorageError::NodeExists(node.name.clone()));
        }
        nodes.insert(node.name.clone(), node.clone());
        Ok(())
    }

    fn node(&self, name: &str) -> Result<Option<Node>, StorageError> {
        Ok(self.nodes.lock().unwrap().get(name).cloned())
    }

    fn nodes(&self) -> Result<Vec<Node>, StorageError> {
        Ok(self.nodes.lock().unwrap().values().cloned().collect())
    }

    fn delete_node(&self, _name: &str) -> Result<Option<Vec<Subscription>>, StorageError> {
        Ok(None)
    }

    fn subscribe(&self, subscription: &Subscription) -> Result<Subscription, StorageError> {
        let bare = pubsub_guard::jid::bare(&subscription.jid).to_owned();
        let mut subscriptions = self.subscriptions.lock().unwrap();
        let stored = subscriptions
            .entry((subscription.node.clone(), bare))
            .and_modify(|s| {
                s.jid = subscription.jid.clone();
                s.token = subscription.token.clone();
                s.consumer_key = subscription.consumer_key.clone();
            })
            .or_insert_with(|| subscription.clone());
        Ok(stored.clone())
    }

    fn unsubscribe(&self, node: &str, jid: &str) -> Result<Option<Subscription>, StorageError> {
        let key = (node.to_owned(), pubsub_guard::jid::bare(jid).to_owned());
        Ok(self.subscriptions.lock().unwrap().remove(&key))
    }

    fn subscriptions(&self, node: Option<&str>) -> Result<Vec<Subscription>, StorageError> {
        let subscriptions = self.subscriptions.lock().unwrap();
        Ok(subscriptions
            .values()
            .filter(|s| node.is_none_or(|n| s.node == n))
            .cloned()
            .collect())
    }

    fn subscription(&self, node: &str, jid: &str) -> Result<Option<Subscription>, StorageError> {
        let key = (node.to_owned(), pubsub_guard::jid::bare(jid).to_owned());
        Ok(self.subscriptions.lock().unwrap().get(&key).cloned())
    }

    fn subscriptions_of(
        &self,
        jid: &str,
        node: Option<&str>,
    ) -> Result<Vec<Subscription>, StorageError> {
        let bare = pubsub_guard::jid::bare(jid);
        Ok(self
            .subscriptions(node)?
            .into_iter()
            .filter(|s| pubsub_guard::jid::bare(&s.jid) == bare)
            .collect())
    }

    fn subscribers_page(
        &self,
        _node: &str,
        _after: Option<&str>,
        _limit: usize,
    ) -> Result<Vec<Subscription>, StorageError> {
        Ok(Vec::new())
    }

    fn nodes_known_to(&self, _jid: &str) -> Result<Vec<String>, StorageError> {
        Ok(Vec::new())
    }

    fn begin_group(&self) -> Result<bool, StorageError> {
        Ok(false)
    }

    fn end_group(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn end_token(&self, _token: &str, _limit: usize) -> Result<Vec<Subscription>, StorageError> {
        Ok(Vec::new())
    }

    fn end_matching(
        &self,
        _filter: &pubsub_guard::storage::SubscriptionFilter,
        _limit: usize,
    ) -> Result<Vec<Subscription>, StorageError> {
        Ok(Vec::new())
    }

    fn publish(&self, _node: &str, _item: &Item) -> Result<Published, StorageError> {
        Ok(Published {
            pos: 0,
            seq: 0,
            dropped: Vec::new(),
        })
    }

    fn retract(&self, _node: &str, _id: &str) -> Result<bool, StorageError> {
        Ok(false)
    }

    fn items_by_id(
        &self,
        _node: &str,
        _ids: &[&str],
        _visible: &Visibility,
    ) -> Result<Vec<Item>, StorageError> {
        Ok(Vec::new())
    }

    fn items_page(
        &self,
        _node: &str,
        _from: &PageFrom,
        _max: u32,
        _visible: &Visibility,
    ) -> Result<Option<Page>, StorageError> {
        Ok(None)
    }

    fn archive_page(
        &self,
        _node: &str,
        _query: &ArchiveQuery,
        _from: ArchiveFrom,
        _max: u32,
        _visible: &Visibility,
    ) -> Result<ArchivePage, StorageError> {
        Ok(ArchivePage {
            items: Vec::new(),
            count: 0,
            first_index: 0,
            complete: true,
        })
    }

    fn history(&self, _node: &str) -> Result<Option<History>, StorageError> {
        Ok(None)
    }

    fn expire_items(&self, _now: u64, _limit: usize) -> Result<usize, StorageError> {
        Ok(0)
    }

    fn change_cursor(&self) -> Result<i64, StorageError> {
        Ok(0)
    }

    fn set_change_cursor(&self, _seq: i64) -> Result<(), StorageError> {
        Ok(())
    }
}

/// The guard's service for `feeds.worldgps.tld`, with the node `bard_geoloc` of
/// `world-traveler`, on `tokens`.
fn service(tokens: Arc<Tokens>) -> Service {
    let config = Config {
        component: "feeds.worldgps.tld".into(),
        ..Config::default()
    };
    let storage = Memory::default();
    storage
        .create_node(&Node {
            name: "bard_geoloc".into(),
            owner: Some("world-traveler".into()),
            access: Access::OAuth,
            publishers: Vec::new(),
            max_items: 100,
            max_age_secs: 0,
            send_last_published_item: false,
            created_at: NOW,
        })
        .unwrap();
    let ids = AtomicU64::new(0);
    Service::new(&config, Box::new(storage), tokens)
        .with_clock(FixedClock(NOW))
        .with_ids(move || Ok(ids.fetch_add(1, Ordering::Relaxed).to_string()))
}

fn tokens() -> Arc<Tokens> {
    Arc::new(Tokens {
        credentials: credentials(),
        nonces: MemoryNonceStore::default(),
    })
}

/// The guard's stream reader after the server's header.
fn reader(quick: bool) -> StreamParser<Stanza> {
    let parser = StreamParser::compact(Limits::default());
    let mut parser = if quick {
        parser
    } else {
        parser.without_quick_path()
    };
    let mut out = Vec::new();
    parser.feed(HEADER.as_bytes(), &mut out).unwrap();
    assert!(matches!(out[..], [StreamEvent::Header { .. }]));
    parser
}

/// One read's bytes through the reader: the stanza they hold.
fn read(parser: &mut StreamParser<Stanza>, bytes: &[u8]) -> Stanza {
    let mut out = Vec::new();
    parser.feed(bytes, &mut out).unwrap();
    match out.pop() {
        Some(StreamEvent::Stanza(stanza)) => stanza,
        other => panic!("expected a stanza, got {other:?}"),
    }
}

/// Runs `check(i)` `iters` times over request indices `0..BATCH`, calling `fresh` (outside
/// the timing) before each batch, and returns the time spent in `check` only.
fn timed_batches<T>(
    iters: u64,
    mut fresh: impl FnMut() -> T,
    mut check: impl FnMut(&mut T, usize),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let mut state = fresh();
        let n = left.min(BATCH as u64);
        let start = Instant::now();
        for i in 0..n as usize {
            check(&mut state, i);
        }
        total += start.elapsed();
        left -= n;
        drop(state);
    }
    total
}

/// Whether `reply` is the `subscribed` result.
fn subscribed(reply: &Element) -> bool {
    reply.attr("type") == Some("result")
        && reply
            .get_child("pubsub", pubsub_guard::ns::PUBSUB)
            .and_then(|p| p.get_child("subscription", pubsub_guard::ns::PUBSUB))
            .and_then(|s| s.attr("subscription"))
            == Some("subscribed")
}

/// The inputs of every path: the requests as the guard reads them and as minidom parses
/// them (with the namespace the stream would give), and the credentials.
struct Inputs {
    texts: Vec<String>,
    minidom_texts: Vec<String>,
    store: MemoryCredentials,
}

impl Inputs {
    fn new() -> Self {
        let texts: Vec<String> = (0..BATCH).map(variant).collect();
        let minidom_texts = texts
            .iter()
            .map(|t| t.replacen("<iq ", "<iq xmlns='jabber:client' ", 1))
            .collect();
        Self {
            texts,
            minidom_texts,
            store: credentials(),
        }
    }

    /// Runs the path `name` over `iters` requests; the time spent in the path.
    fn run(&self, name: &str, iters: u64) -> Duration {
        let (store, clock) = (&self.store, FixedClock(NOW));
        match name {
            "parse_and_verify" => timed_batches(iters, MemoryNonceStore::default, |nonces, i| {
                let parsed: Element = black_box(&self.minidom_texts[i]).parse().unwrap();
                Verifier::new(store, &*nonces, clock)
                    .verify_stanza(&parsed)
                    .unwrap();
            }),
            "stream_and_verify" => {
                let mut parser = reader(true);
                timed_batches(iters, MemoryNonceStore::default, |nonces, i| {
                    let stanza = read(&mut parser, black_box(self.texts[i].as_bytes()));
                    Verifier::new(store, &*nonces, clock)
                        .verify_stanza(stanza.root())
                        .unwrap();
                })
            }
            "guard_subscribe" | "guard_subscribe_general_path" => {
                let mut parser = reader(name == "guard_subscribe");
                timed_batches(
                    iters,
                    || service(tokens()),
                    |guard, i| {
                        let stanza = read(&mut parser, black_box(self.texts[i].as_bytes()));
                        let mut answered = false;
                        guard.handle_stanza(&stanza, &mut |reply| {
                            answered = true;
                            black_box(reply);
                        });
                        assert!(answered);
                    },
                )
            }
            other => panic!("no path {other}"),
        }
    }
}

/// The paths, in the order they are reported.
const PATHS: [&str; 4] = [
    "parse_and_verify",
    "stream_and_verify",
    "guard_subscribe",
    "guard_subscribe_general_path",
];

/// Checks that every path succeeds, or the figures mean nothing.
fn sanity(inputs: &Inputs) {
    let (store, clock) = (&inputs.store, FixedClock(NOW));
    let nonces = MemoryNonceStore::default();
    let element: Element = inputs.minidom_texts[0].parse().unwrap();
    Verifier::new(store, &nonces, clock)
        .verify_stanza(&element)
        .unwrap();
    let nonces = MemoryNonceStore::default();
    let stanza = read(&mut reader(true), inputs.texts[0].as_bytes());
    Verifier::new(store, &nonces, clock)
        .verify_stanza(stanza.root())
        .unwrap();
    for quick in [true, false] {
        let mut guard = service(tokens());
        let stanza = read(&mut reader(quick), inputs.texts[0].as_bytes());
        let mut replies = Vec::new();
        guard.handle_stanza(&stanza, &mut |e| replies.push(e));
        assert!(
            matches!(&replies[..], [reply] if subscribed(reply)),
            "{replies:?}"
        );
    }
}

fn bench(c: &mut Criterion) {
    let inputs = Inputs::new();
    sanity(&inputs);
    let mut group = c.benchmark_group("xep0235_subscribe");
    for name in PATHS {
        group.bench_function(name, |b| b.iter_custom(|iters| inputs.run(name, iters)));
    }
    group.finish();
}

criterion_group!(benches, bench);

/// `SUBSCRIBE_BENCH_RUN=<path>:<n>` runs one path `n` times and nothing else, for
/// `valgrind --tool=callgrind` (instruction counts do not depend on the machine's load):
/// the count with `n` = 10,000 less the count with `n` = 0, over 10,000, is the path's
/// instructions per request. Otherwise, criterion's benchmarks.
fn main() {
    if let Ok(spec) = std::env::var("SUBSCRIBE_BENCH_RUN") {
        let (name, n) = spec
            .split_once(':')
            .expect("SUBSCRIBE_BENCH_RUN=<path>:<n>");
        let inputs = Inputs::new();
        sanity(&inputs);
        let n: u64 = n.parse().expect("a number of requests");
        let spent = inputs.run(name, n);
        println!("{name}: {n} requests in {spent:?}");
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
