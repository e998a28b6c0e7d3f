//! The guard's service on SQLite against PostgreSQL, in one run on this machine: signed
//! subscribes per second (each checks the signature, records the nonce, reads the token and
//! stores the subscription) and publishes per second (each stores the item at the node's next
//! position, applies retention and notifies one subscriber). No XMPP server: stanzas go
//! straight to `Service::handle`, so the figures are the guard's and its store's alone.
//!
//! ```sh
//! cargo bench -p pubsub-guard --bench engines -- [--subscribes N] [--publishes M] [--runs R]
//! ```
//!
//! PostgreSQL is a throwaway cluster on loopback (testkit-postgres, default settings, so
//! every commit waits for its WAL to reach the disk), and again with `synchronous_commit =
//! off` (set in the URL); SQLite is a file in a temporary folder (WAL, `synchronous =
//! NORMAL`, the programs' settings: a commit does not wait for the disk either). Medians of R runs, each on a fresh
//! database; the ratio is PostgreSQL's rate over SQLite's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use minidom::Element;
use oauth_xmpp::Scope;
use oauth_xmpp::replay::SystemClock;
use oauth_xmpp::sign::{Credentials, Signer};
use pubsub_guard::config::Config;
use pubsub_guard::service::Service;
use pubsub_guard::storage::{Access, DbStorage, Node, Storage};
use shared_store::Store;
use shared_store::db::Location;

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";

const SQLITE: &str = "SQLite";
const POSTGRES: &str = "PostgreSQL";
/// PostgreSQL with `synchronous_commit = off`: a commit returns before its WAL reaches the
/// disk, so a crash of the machine can lose the last few hundred milliseconds of commits (a
/// crash of the guard loses nothing). That is close to SQLite's `synchronous = NORMAL` in WAL
/// mode, which the programs use.
const POSTGRES_ASYNC: &str = "PostgreSQL, synchronous_commit = off";

struct Args {
    subscribes: usize,
    publishes: usize,
    runs: usize,
}

fn args() -> Args {
    let mut args = Args {
        subscribes: 2000,
        publishes: 2000,
        runs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match flag.as_str() {
            "--subscribes" => args.subscribes = value("--subscribes"),
            "--publishes" => args.publishes = value("--publishes"),
            "--runs" => args.runs = value("--runs").max(1),
            // What `cargo bench` passes to every bench binary.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn iq(from: &str, payload: &str) -> Element {
    format!(
        "<iq xmlns='jabber:component:accept' type='set' id='q' from='{from}' to='pubsub.localhost'><pubsub xmlns='{PUBSUB}'>{payload}</pubsub></iq>"
    )
    .parse()
    .expect("a valid stanza")
}

/// One run on a fresh database at `location`: (subscribes/s, publishes/s).
fn run(location: &Location, args: &Args) -> (f64, f64) {
    let store = Arc::new(Store::open(location).expect("the store opens"));
    let now = shared_store::authz::now();
    let (key, secret) = store.add_consumer("Bench", None, None, now).unwrap();
    store.add_owner("alice", "$argon2id$bench", now).unwrap();
    let grant = store
        .grant("alice", &key, &Scope::parse("/location/alice"), None, now)
        .unwrap();
    let storage = DbStorage::open(location).unwrap();
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
                max_items: 100,
                max_age_secs: 0,
                send_last_published_item: false,
                created_at: now,
            })
            .unwrap();
    }
    let mut service = Service::new(&Config::default(), Box::new(storage), store.clone());
    let signer = Signer::new(
        Credentials {
            consumer_key: key,
            consumer_secret: secret,
            token: Some(grant.token.clone()),
            token_secret: grant.secret.clone(),
        },
        SystemClock,
        || shared_store::random::token(16).unwrap(),
    );
    // Signed ahead of time: the clock runs over the guard's work only.
    let subscribes: Vec<Element> = (0..args.subscribes)
        .map(|i| {
            let from = format!("app{i}@localhost/r");
            let mut stanza = iq(
                &from,
                &format!("<subscribe node='/location/alice' jid='app{i}@localhost'/>"),
            );
            let oauth = signer.sign_stanza("iq", &from, "pubsub.localhost");
            stanza
                .get_child_mut("pubsub", PUBSUB)
                .unwrap()
                .append_child(oauth);
            stanza
        })
        .collect();
    let started = Instant::now();
    for stanza in &subscribes {
        let out = service.handle(stanza);
        assert_eq!(
            out[0].attr("type"),
            Some("result"),
            "{}",
            String::from(&out[0])
        );
    }
    let subscribe_rate = args.subscribes as f64 / started.elapsed().as_secs_f64();

    let one = iq(
        "reader@localhost/r",
        "<subscribe node='/news' jid='reader@localhost'/>",
    );
    assert_eq!(service.handle(&one)[0].attr("type"), Some("result"));
    let publishes: Vec<Element> = (0..args.publishes)
        .map(|i| {
            iq(
                "loc@localhost/r",
                &format!(
                    "<publish node='/news'><item id='i{i}'><entry xmlns='http://www.w3.org/2005/Atom'><title>{i}</title></entry></item></publish>"
                ),
            )
        })
        .collect();
    let started = Instant::now();
    for stanza in &publishes {
        let out = service.handle(stanza);
        assert_eq!(out.len(), 2, "a notification and the result");
    }
    let publish_rate = args.publishes as f64 / started.elapsed().as_secs_f64();
    (subscribe_rate, publish_rate)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = args();
    let cluster = testkit_postgres::Cluster::start().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for engine in [SQLITE, POSTGRES, POSTGRES_ASYNC] {
        let (mut subs, mut pubs) = (Vec::new(), Vec::new());
        for r in 0..args.runs {
            let location = match engine {
                SQLITE => Location::Sqlite(dir.path().join(format!("run{r}.sqlite"))),
                POSTGRES => Location::Postgres(cluster.new_database(&format!("run{r}")).unwrap()),
                _ => Location::Postgres(format!(
                    "{}?options=-c%20synchronous_commit%3Doff",
                    cluster.new_database(&format!("async{r}")).unwrap()
                )),
            };
            let (s, p) = run(&location, &args);
            println!(
                "{engine} run {}: {s:.0} subscribes/s, {p:.0} publishes/s",
                r + 1
            );
            subs.push(s);
            pubs.push(p);
        }
        results.push((engine, median(subs), median(pubs)));
    }
    let (_, base_s, base_p) = results[0];
    println!(
        "\nmedians of {} runs ({} signed subscribes, {} publishes to 1 subscriber):",
        args.runs, args.subscribes, args.publishes
    );
    println!("| engine | subscribes/s | ratio | publishes/s | ratio |");
    println!("|---|---:|---:|---:|---:|");
    for (engine, s, p) in &results {
        println!(
            "| {engine} | {s:.0} | {:.2}× | {p:.0} | {:.2}× |",
            s / base_s,
            p / base_p
        );
    }
}
