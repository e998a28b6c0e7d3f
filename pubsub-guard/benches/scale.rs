//! The guard's service as subscriptions pile up, to a million: signed subscribes per second
//! and the process's memory at 10,000, 100,000 and 1,000,000 live subscriptions, in the two
//! shapes a deployment has.
//!
//! - **One node, N subscribers** (a popular node): N JIDs each subscribe to `/location/alice`
//!   with the consumer's token; then one publish notifies all N, and the token is revoked,
//!   which ends all N.
//! - **One consumer, N nodes** (the seed's aggregator): N owners, each with a node and a grant
//!   of her own to one consumer, provisioned by the bulk import; then that consumer's one JID
//!   subscribes to every node, each subscribe signed with that node's token.
//!
//! ```sh
//! cargo bench -p pubsub-guard --bench scale -- [--subscriptions N] [--quick] [--one-by-one]
//! ```
//!
//! The stanzas go straight to `Service::handle_group` (no XMPP server), 64 under one commit
//! as a busy guard takes them from its queue (`--one-by-one`: a commit each), on SQLite with
//! the programs' settings, so the figures are the guard's and its store's alone. They are signed
//! a thousand at a time ahead of the clock. A rate is over the last 5,000 subscribes before
//! each mark, in wall time and in CPU time per subscribe (steadier on a busy machine); "flat" is the rate at the last mark over the rate at the first. Memory
//! is this process's resident set (`VmRSS`) and its peak (`VmHWM`) from `/proc/self/status`:
//! the service, both store connections with their SQLite page caches, the pages of the
//! database the process touched, and the bench's own thousand stanzas.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use minidom::Element;
use oauth_xmpp::Secret;
use oauth_xmpp::replay::SystemClock;
use oauth_xmpp::sign::{Credentials, Signer};
use pubsub_guard::config::Config;
use pubsub_guard::service::Service;
use pubsub_guard::stanza::Stanza;
use pubsub_guard::storage::DbStorage;
use shared_store::Store;
use shared_store::db::Location;
use shared_store::provision::{
    ConsumerRecord, GrantRecord, NodeRecord, OwnerRecord, Provisioning, Record,
};

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// Stanzas signed ahead of the clock at a time.
const CHUNK: usize = 1000;
/// Chunks in the window each rate is measured over (before each mark).
const WINDOW: usize = 5;
const CONSUMER: &str = "bench-consumer";
const CONSUMER_SECRET: &str = "bench-consumer-secret-0123456789";

/// Stanzas handled under one commit, as a guard whose queue is full groups them; 1 with
/// `--one-by-one`.
static GROUP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(64);

fn args() -> usize {
    let mut n = 1_000_000;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--subscriptions" => {
                n = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--subscriptions takes a number");
            }
            "--quick" => n = 10_000,
            "--one-by-one" => GROUP.store(1, std::sync::atomic::Ordering::Relaxed),
            // What `cargo bench` passes to every bench binary.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    n.max(CHUNK)
}

/// CPU seconds this process has used (user and system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; the
    // kernel counts them in 100ths of a second (USER_HZ).
    (ticks(11) + ticks(12)) / 100.0
}

/// (VmRSS, VmHWM) of this process, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The database's size in MiB (the file and its write-ahead log).
fn db_size(path: &std::path::Path) -> f64 {
    let size = |p: std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let wal = path.with_extension("sqlite-wal");
    (size(path.to_path_buf()) + size(wal)) as f64 / (1024.0 * 1024.0)
}

fn subscribe(from: &str, node: &str, signer: &Signer<SystemClock, fn() -> String>) -> Element {
    let bare = from.split('/').next().unwrap();
    let mut stanza: Element = format!(
        "<iq xmlns='jabber:component:accept' type='set' id='q' from='{from}' to='pubsub.localhost'><pubsub xmlns='{PUBSUB}'><subscribe node='{node}' jid='{bare}'/></pubsub></iq>"
    )
    .parse()
    .unwrap();
    let oauth = signer.sign_stanza("iq", from, "pubsub.localhost");
    stanza
        .get_child_mut("pubsub", PUBSUB)
        .unwrap()
        .append_child(oauth);
    stanza
}

fn nonce() -> String {
    shared_store::random::token(12).unwrap()
}

fn signer(token: &str, secret: &str) -> Signer<SystemClock, fn() -> String> {
    Signer::new(
        Credentials {
            consumer_key: CONSUMER.into(),
            consumer_secret: Secret::new(CONSUMER_SECRET),
            token: Some(token.into()),
            token_secret: Secret::new(secret),
        },
        SystemClock,
        nonce as fn() -> String,
    )
}

/// One row of the report.
struct Mark {
    subscriptions: usize,
    rate: f64,
    /// CPU time per subscribe, in microseconds.
    cpu_us: f64,
    rss: f64,
    peak: f64,
    db: f64,
}

fn marks_for(n: usize) -> Vec<usize> {
    let mut marks: Vec<usize> = [10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&m| m <= n)
        .collect();
    if marks.last() != Some(&n) {
        marks.push(n);
    }
    marks
}

/// Feeds the subscribes `make(i)` for i in 0..n to `service` a chunk at a time; a mark at each
/// of `marks`.
fn subscribe_all(
    service: &mut Service,
    n: usize,
    db: &std::path::Path,
    make: impl Fn(usize) -> Element,
) -> Vec<Mark> {
    let marks = marks_for(n);
    let mut out = Vec::new();
    let mut done = 0;
    // (wall seconds, CPU seconds, subscribes) of the window's chunks.
    let mut window: std::collections::VecDeque<(f64, f64, usize)> = Default::default();
    while done < n {
        // In the compact form the guard's stream reader gives.
        let chunk: Vec<Stanza> = (done..(done + CHUNK).min(n))
            .map(|i| Stanza::from_element(&make(i)))
            .collect();
        let cpu = cpu_seconds();
        let started = Instant::now();
        for group in chunk.chunks(GROUP.load(std::sync::atomic::Ordering::Relaxed)) {
            let mut replies = 0;
            service.handle_group(group, &mut |reply| {
                replies += 1;
                assert_eq!(
                    reply.attr("type"),
                    Some("result"),
                    "{}",
                    String::from(&reply)
                );
            });
            assert_eq!(replies, group.len(), "a reply to each");
        }
        window.push_back((
            started.elapsed().as_secs_f64(),
            cpu_seconds() - cpu,
            chunk.len(),
        ));
        if window.len() > WINDOW {
            window.pop_front();
        }
        done += chunk.len();
        if marks.contains(&done) {
            let wall: f64 = window.iter().map(|w| w.0).sum();
            let cpu: f64 = window.iter().map(|w| w.1).sum();
            let count: usize = window.iter().map(|w| w.2).sum();
            let (rss, peak) = memory();
            let mark = Mark {
                subscriptions: done,
                rate: count as f64 / wall,
                cpu_us: cpu * 1e6 / count as f64,
                rss,
                peak,
                db: db_size(db),
            };
            println!(
                "  {done:>9} subscriptions: {:>7.0} subscribes/s, {:.0} µs of CPU each, RSS {rss:.0} MiB (peak {peak:.0}), database {:.0} MiB",
                mark.rate, mark.cpu_us, mark.db
            );
            out.push(mark);
        }
    }
    out
}

fn report(title: &str, marks: &[Mark]) {
    println!("\n{title}");
    println!(
        "| live subscriptions | subscribes/s | ratio | CPU µs each | RSS (MiB) | peak RSS | database (MiB) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let first = marks[0].rate;
    for m in marks {
        println!(
            "| {} | {:.0} | {:.2}× | {:.0} | {:.0} | {:.0} | {:.0} |",
            m.subscriptions,
            m.rate,
            m.rate / first,
            m.cpu_us,
            m.rss,
            m.peak,
            m.db
        );
    }
}

/// The records of one consumer and `n` owners with a node and a grant each (token `t{i}`).
fn records(n: usize, from: usize) -> Vec<(u64, Record)> {
    let mut out = Vec::new();
    if from == 0 {
        out.push(Record::Consumer(ConsumerRecord {
            key: CONSUMER.into(),
            secret: Secret::new(CONSUMER_SECRET),
            name: "Bench".into(),
            jid: None,
            callback: None,
        }));
    }
    for i in from..(from + 10_000).min(n) {
        out.push(Record::Owner(OwnerRecord {
            name: format!("u{i}"),
            password_hash: Some(Secret::new("$argon2id$v=19$bench")),
            password: None,
        }));
        out.push(Record::Node(NodeRecord {
            name: format!("/photos/u{i}"),
            owner: Some(format!("u{i}")),
            access: pubsub_guard::storage::Access::OAuth,
            publishers: vec!["site@localhost".into()],
            max_items: None,
            max_age_secs: None,
            send_last_published_item: None,
        }));
        out.push(Record::Grant(GrantRecord {
            token: format!("t{i}"),
            secret: Secret::new(format!("token-secret-{i:012}")),
            consumer: CONSUMER.into(),
            owner: format!("u{i}"),
            scope: format!("/photos/u{i}"),
            expires_at: None,
        }));
    }
    (1..).zip(out).collect()
}

/// The service as the guard builds it: the token store and the guard's tables on one
/// connection.
fn service(location: &Location) -> (Service, Arc<Store>) {
    let db = Arc::new(shared_store::db::Database::open(location).unwrap());
    let store = Arc::new(Store::on(Arc::clone(&db)).unwrap());
    let storage = DbStorage::on(db).unwrap();
    (
        Service::new(&Config::default(), Box::new(storage), store.clone()).with_group_commits(),
        store,
    )
}

fn main() {
    let n = args();
    let dir = tempfile::tempdir().unwrap();
    println!("the guard's service at up to {n} live subscriptions (SQLite)");

    // One node, N subscribers.
    let path = dir.path().join("one-node.sqlite");
    let location = Location::Sqlite(path.clone());
    let now = shared_store::authz::now();
    let provisioning = Provisioning::open(location.clone()).unwrap();
    provisioning.import(&records(1, 0), now).unwrap();
    drop(provisioning);
    let (mut one_node, store) = service(&location);
    let signer_one = signer("t0", &format!("token-secret-{:012}", 0));
    println!("\none node, {n} subscribers:");
    let marks = subscribe_all(&mut one_node, n, &path, |i| {
        subscribe(&format!("app{i}@localhost/r"), "/photos/u0", &signer_one)
    });
    let publish: Element = format!(
        "<iq xmlns='jabber:component:accept' type='set' id='p' from='site@localhost/r' to='pubsub.localhost'><pubsub xmlns='{PUBSUB}'><publish node='/photos/u0'><item id='one'><entry xmlns='http://www.w3.org/2005/Atom'><title>one</title></entry></item></publish></pubsub></iq>"
    )
    .parse()
    .unwrap();
    let started = Instant::now();
    let mut sent = 0usize;
    one_node.handle_into(&publish, &mut |_| sent += 1);
    let took = started.elapsed().as_secs_f64();
    let (rss, peak) = memory();
    assert_eq!(
        sent,
        n + 1,
        "a notification to each subscriber, and the result"
    );
    println!(
        "  one publish to {n} subscribers: {took:.2} s ({:.0} notifications/s), RSS {rss:.0} MiB (peak {peak:.0})",
        n as f64 / took
    );
    // The token behind every one of them is revoked: each is told, a page at a time.
    let mut drained = 0usize;
    one_node.follow_changes_into(&mut |_| drained += 1);
    store
        .revoke_tokens(
            &shared_store::authz::RevokeBy::Token("t0".into()),
            shared_store::authz::now(),
        )
        .unwrap();
    let started = Instant::now();
    let mut told = 0usize;
    one_node.follow_changes_into(&mut |_| told += 1);
    let took = started.elapsed().as_secs_f64();
    let (rss, peak) = memory();
    assert_eq!(told, n, "a subscription='none' to each subscriber");
    println!(
        "  the token revoked: {n} subscriptions ended in {took:.2} s, RSS {rss:.0} MiB (peak {peak:.0})"
    );
    report(&format!("one node, up to {n} subscribers"), &marks);
    drop(one_node);

    // One consumer, N nodes.
    let path = dir.path().join("many-nodes.sqlite");
    let location = Location::Sqlite(path.clone());
    let provisioning = Provisioning::open(location.clone()).unwrap();
    let started = Instant::now();
    for from in (0..n).step_by(10_000) {
        provisioning.import(&records(n, from), now).unwrap();
    }
    println!(
        "\none consumer, {n} nodes: {n} owners, nodes and grants imported in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(provisioning);
    let (mut many, _store) = service(&location);
    let marks = subscribe_all(&mut many, n, &path, |i| {
        let signer = signer(&format!("t{i}"), &format!("token-secret-{i:012}"));
        subscribe("aggregator@localhost/r", &format!("/photos/u{i}"), &signer)
    });
    report(&format!("one consumer, up to {n} nodes"), &marks);
}
