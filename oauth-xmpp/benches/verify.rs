//! The verify benchmark on the XEP-0235 v0.7 example subscribe IQ.
//!
//! - `verify_parsed`: the verify step (checks 2–6 of the profile: credential lookup,
//!   timestamp, base string, HMAC-SHA1, constant-time compare, nonce recorded into a fresh
//!   in-memory store) on an already parsed `<oauth/>` element ([`StanzaRequest`]);
//! - `verify_element`: the same from the stanza's XML tree, so with check 1 (finding and
//!   reading `<oauth/>` with the element rules);
//! - `parse_and_verify`: the same, starting from the stanza's bytes;
//! - `raw_hmac_sha1`: one HMAC-SHA1 over the same base-string bytes, the floor.
//!
//! `parse_and_verify` parses with minidom's own parser. The guard does not: its stream
//! reader reads each whole stanza straight into a compact tree, which the verifier reads
//! through `ElementView`; `cargo bench -p pubsub-guard --bench subscribe` measures that path
//! beside this one.
//!
//! The Python baseline (oauthlib) is `scripts/bench_oauthlib.py`; `scripts/bench` runs both
//! in one go and prints the ratios.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use minidom::Element;
use oauth_xmpp::{FixedClock, MemoryCredentials, MemoryNonceStore, Scope, StanzaRequest, Verifier};

const STANZA: &str = "<iq xmlns='jabber:client' from='travelbot@findmenow.tld/bot' id='sub1' \
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

const BASE_STRING: &str = "iq&travelbot%40findmenow.tld%2Fbot%26feeds.worldgps.tld&\
    oauth_consumer_key%3D0685bd9184jfhq22%26oauth_nonce%3D4572616e48616d6d65724c61686176\
    %26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1218137833\
    %26oauth_token%3Dad180jjd733klru7%26oauth_version%3D1.0";

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

/// How many distinct requests one nonce store sees before it is replaced.
const BATCH: usize = 4096;

/// The example stanza with nonce number `i` (same length as the example's) and the signature
/// that goes with it.
fn variant(i: usize) -> String {
    let nonce = format!("{i:030x}");
    let with_nonce = STANZA.replace("4572616e48616d6d65724c61686176", &nonce);
    let element: Element = with_nonce.parse().unwrap();
    let request = StanzaRequest::from_stanza(&element).unwrap().unwrap();
    let signature = oauth_xmpp::signature::sign(
        oauth_xmpp::SignatureMethod::HmacSha1,
        &request.base_string(),
        &"consumersecret".into(),
        &"tokensecret".into(),
    );
    with_nonce.replace("9PQkM4YKgaM067wqrDGshXOwDW0=", &signature)
}

/// Runs `check(store, i)` `iters` times over request indices `0..BATCH`, with a fresh nonce
/// store per batch, and returns the time spent in `check` only.
fn timed_batches(iters: u64, mut check: impl FnMut(&MemoryNonceStore, usize)) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let nonces = MemoryNonceStore::default();
        let n = left.min(BATCH as u64);
        let start = Instant::now();
        for i in 0..n as usize {
            check(&nonces, i);
        }
        total += start.elapsed();
        left -= n;
        drop(nonces);
    }
    total
}

fn bench(c: &mut Criterion) {
    let store = credentials();
    let clock = FixedClock(1_218_137_833);
    let stanza: Element = STANZA.parse().unwrap();

    // Sanity: every benchmarked path must succeed, or the figures mean nothing.
    let nonces = MemoryNonceStore::default();
    Verifier::new(&store, &nonces, clock)
        .verify_stanza(&stanza)
        .unwrap();
    let expected = oauth_xmpp::signature::hmac_sha1("consumersecret&tokensecret", BASE_STRING);
    assert_eq!(
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, expected),
        "9PQkM4YKgaM067wqrDGshXOwDW0="
    );

    // One distinct request per check (the example with its nonce varied and re-signed), so
    // that every check is fresh; the nonce store is warm, as in a running service, and is
    // replaced (outside the timing) every BATCH checks.
    let texts: Vec<String> = (0..BATCH).map(variant).collect();
    let elements: Vec<Element> = texts.iter().map(|t| t.parse().unwrap()).collect();
    let requests: Vec<StanzaRequest> = elements
        .iter()
        .map(|e| StanzaRequest::from_stanza(e).unwrap().unwrap())
        .collect();

    let mut group = c.benchmark_group("xep0235_example");
    group.bench_function("verify_parsed", |b| {
        b.iter_custom(|iters| {
            timed_batches(iters, |nonces, i| {
                Verifier::new(&store, nonces, clock)
                    .verify_stanza_request(black_box(&requests[i]))
                    .unwrap();
            })
        })
    });
    group.bench_function("verify_element", |b| {
        b.iter_custom(|iters| {
            timed_batches(iters, |nonces, i| {
                Verifier::new(&store, nonces, clock)
                    .verify_stanza(black_box(&elements[i]))
                    .unwrap();
            })
        })
    });
    group.bench_function("parse_and_verify", |b| {
        b.iter_custom(|iters| {
            timed_batches(iters, |nonces, i| {
                let parsed: Element = black_box(&texts[i]).parse().unwrap();
                Verifier::new(&store, nonces, clock)
                    .verify_stanza(&parsed)
                    .unwrap();
            })
        })
    });
    group.bench_function("raw_hmac_sha1", |b| {
        b.iter(|| {
            oauth_xmpp::signature::hmac_sha1(
                black_box("consumersecret&tokensecret"),
                black_box(BASE_STRING),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
