//! `metrics_listen`: the guard's counters move with real traffic over the component stream,
//! as a Prometheus server scrapes them.

use std::time::{Duration, Instant};

use shared_store::authz::RevokeBy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::service::{EVE, LOC, pubsub, world};
use crate::{Peer, WAIT, config};

/// Scrapes `addr`; the body, after checking the head.
async fn scrape(addr: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    body.to_owned()
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    telemetry::scrape::sample(text, name, labels)
}

/// Scrapes until `name{labels}` is `want` (the gauges the worker refreshes every 15 s), at
/// most 20 s; the last scrape.
async fn scrape_until(addr: &str, name: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(addr).await;
        if value(&text, name, &[]) == Some(want) {
            return text;
        }
        assert!(Instant::now() < deadline, "{name} is not {want}:\n{text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A free loopback port, as `host:port`.
fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A sample's name, its labels, and the value it must have.
type Expected = (&'static str, &'static [(&'static str, &'static str)], f64);

#[tokio::test]
async fn counters_follow_subscribes_refusals_deliveries_and_revocations() {
    let w = world();
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = free_port();
    let mut config = config(
        &server.local_addr().unwrap().to_string(),
        std::path::Path::new("unused"),
    );
    config.database = w.db.clone();
    config.templates = w.config.templates.clone();
    config.metrics_listen = Some(metrics);
    let metrics = metrics.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(pubsub_guard::component::run(config, async {
        let _ = stopped.await;
    }));
    let mut peer = Peer::accept(&server, true).await;

    // A signed subscribe, one without a token, a publish.
    let send = |e: minidom::Element| String::from(&e);
    peer.send(&send(w.signed_subscribe("/location/alice")))
        .await;
    assert_eq!(peer.next_stanza().await.attr("type"), Some("result"));
    let unsigned = pubsub(
        EVE,
        "set",
        "<subscribe node='/location/alice' jid='eve@localhost'/>",
    );
    peer.send(&send(unsigned)).await;
    let refused = peer.next_stanza().await;
    assert_eq!(refused.attr("type"), Some("error"));
    // The worker counts nodes and subscriptions every 15 s: wait for the subscription.
    let text = scrape_until(&metrics, "guard_subscriptions", 1.0).await;
    assert_eq!(value(&text, "guard_nodes", &[]), Some(2.0));
    let publish = pubsub(
        LOC,
        "set",
        "<publish node='/location/alice'><item><p xmlns='urn:p'>x</p></item></publish>",
    );
    peer.send(&send(publish)).await;
    let event = peer.next_stanza().await;
    assert_eq!(event.attr("to"), Some("app@localhost"));
    assert_eq!(peer.next_stanza().await.attr("type"), Some("result"));

    // The owner revokes the token: the subscriber is told its subscription ended.
    w.store
        .revoke_tokens(&RevokeBy::Id(w.token_id), shared_store::authz::now())
        .unwrap();
    let none = peer.next_stanza().await;
    let subscription = none
        .get_child("event", "http://jabber.org/protocol/pubsub#event")
        .and_then(|e| e.get_child("subscription", "http://jabber.org/protocol/pubsub#event"))
        .unwrap();
    assert_eq!(subscription.attr("subscription"), Some("none"));

    let text = scrape(&metrics).await;
    let expected: &[Expected] = &[
        ("guard_connected", &[], 1.0),
        ("guard_reconnects_total", &[], 0.0),
        ("guard_connect_failures_total", &[], 0.0),
        ("guard_stanzas_received_total", &[("kind", "iq-set")], 3.0),
        ("guard_stanzas_sent_total", &[("kind", "result")], 2.0),
        ("guard_stanzas_sent_total", &[("kind", "error")], 1.0),
        ("guard_stanzas_sent_total", &[("kind", "notification")], 1.0),
        (
            "guard_stanzas_sent_total",
            &[("kind", "subscription-none")],
            1.0,
        ),
        (
            "guard_refusals_total",
            &[("condition", "not-authorized"), ("app", "token-required")],
            1.0,
        ),
        ("guard_deliveries_total", &[], 1.0),
        ("guard_revocation_latency_seconds_count", &[], 1.0),
        ("guard_subscriptions", &[], 1.0),
        ("guard_inbound_queue_depth", &[], 0.0),
    ];
    for (name, labels, want) in expected {
        assert_eq!(
            value(&text, name, labels),
            Some(*want),
            "{name}{labels:?} in\n{text}"
        );
    }
    assert_eq!(text.matches("guard_refusals_total{").count(), 1, "{text}");
    // The revocation took less than 8.192 s (one bucket's bound; it is a poll away).
    assert_eq!(
        value(
            &text,
            "guard_revocation_latency_seconds_bucket",
            &[("le", "8.192")]
        ),
        Some(1.0)
    );
    let writes = value(
        &text,
        "guard_store_latency_seconds_count",
        &[("operation", "write")],
    )
    .unwrap();
    assert!(writes >= 2.0, "{writes}");

    // The server drops the connection: the guard reconnects, and says so.
    drop(peer);
    let _peer = Peer::accept(&server, true).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(&metrics).await;
        let seen = (
            value(&text, "guard_reconnects_total", &[]),
            value(&text, "guard_connected", &[]),
        );
        if seen == (Some(1.0), Some(1.0)) {
            break;
        }
        assert!(Instant::now() < deadline, "{seen:?}\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Stopped: the metrics listener is closed too.
    assert!(tokio::net::TcpStream::connect(&metrics).await.is_err());
}

#[tokio::test]
async fn a_metrics_address_in_use_stops_the_start() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config("127.0.0.1:1", &dir.path().join("authz.sqlite"));
    config.metrics_listen = Some(addr);
    let err = pubsub_guard::component::run(config, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot listen for metrics on {addr}: ")),
        "{err}"
    );
}
