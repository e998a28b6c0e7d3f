//! What the guard counts, for Prometheus (`metrics_listen` in the config): the connection
//! to the XMPP server, the stanzas each way, refusals, deliveries, the queues, live
//! subscriptions and nodes, the store's latency, and how long a revocation takes to end
//! its subscriptions. Every name starts with `guard_`; every label value is a `&'static str`
//! of this code, so the number of series is bounded whatever the traffic.
//!
//! [`Metrics`] is a set of handles (cheap to clone, shared by the reader, the worker and the
//! writer); [`Metrics::register`] adds them to the registry the exporter serves.

use std::sync::Arc;

use minidom::Element;
use telemetry::LatencyFamily;
use telemetry::prometheus_client::metrics::counter::Counter;
use telemetry::prometheus_client::metrics::family::Family;
use telemetry::prometheus_client::metrics::gauge::Gauge;
use telemetry::prometheus_client::metrics::histogram::Histogram;
use telemetry::prometheus_client::registry::Registry;

use crate::ns;
use crate::refusal::Refusal;
use crate::stanza::Stanza;

/// One label.
type Label = [(&'static str, &'static str); 1];

/// The guard's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// 1 while the component stream is up, else 0 (`guard_connected`).
    pub connected: Gauge,
    /// Connections made after a lost one (`guard_reconnects_total`).
    pub reconnects: Counter,
    /// Connection attempts that failed (`guard_connect_failures_total`).
    pub connect_failures: Counter,
    /// Stanzas read from the server, by kind (`guard_stanzas_received_total{kind}`).
    received: Family<Label, Counter>,
    /// Stanzas handed to the writer, by kind (`guard_stanzas_sent_total{kind}`).
    sent: Family<Label, Counter>,
    /// Refusals, by condition (`guard_refusals_total{condition, app}`).
    refusals: Family<[(&'static str, &'static str); 2], Counter>,
    /// Notifications handed to the writer (`guard_deliveries_total`).
    pub deliveries: Counter,
    /// Live subscriptions, counted at most every 15 s (`guard_subscriptions`).
    pub subscriptions: Gauge,
    /// Nodes, counted at most every 15 s (`guard_nodes`).
    pub nodes: Gauge,
    /// Stanzas waiting for the worker (`guard_inbound_queue_depth`).
    pub inbound_queue: Gauge,
    /// Stanzas waiting for the writer (`guard_outbound_queue_depth`).
    pub outbound_queue: Gauge,
    /// Store calls' latency by operation (`guard_store_latency_seconds{operation}`).
    store_latency: LatencyFamily,
    /// From a change that ends access being logged to each subscription it ended
    /// (`guard_revocation_latency_seconds`).
    revocation_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connected: Gauge::default(),
            reconnects: Counter::default(),
            connect_failures: Counter::default(),
            received: Family::default(),
            sent: Family::default(),
            refusals: Family::default(),
            deliveries: Counter::default(),
            subscriptions: Gauge::default(),
            nodes: Gauge::default(),
            inbound_queue: Gauge::default(),
            outbound_queue: Gauge::default(),
            store_latency: telemetry::latency_family(),
            revocation_latency: telemetry::latency_histogram(),
        }
    }
}

impl Metrics {
    /// Adds every metric to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register(
            "guard_connected",
            "Whether the component stream to the XMPP server is up (1) or not (0)",
            self.connected.clone(),
        );
        r.register(
            "guard_reconnects",
            "Connections to the XMPP server made after a lost one",
            self.reconnects.clone(),
        );
        r.register(
            "guard_connect_failures",
            "Connection attempts to the XMPP server that failed",
            self.connect_failures.clone(),
        );
        r.register(
            "guard_stanzas_received",
            "Stanzas read from the XMPP server, by kind",
            self.received.clone(),
        );
        r.register(
            "guard_stanzas_sent",
            "Stanzas handed to the writer, by kind",
            self.sent.clone(),
        );
        r.register(
            "guard_refusals",
            "Requests refused, by RFC 6120 condition and application condition",
            self.refusals.clone(),
        );
        r.register(
            "guard_deliveries",
            "Pubsub notifications handed to the writer",
            self.deliveries.clone(),
        );
        r.register(
            "guard_subscriptions",
            "Subscriptions stored (counted at most every 15 s)",
            self.subscriptions.clone(),
        );
        r.register(
            "guard_nodes",
            "Nodes stored (counted at most every 15 s)",
            self.nodes.clone(),
        );
        r.register(
            "guard_inbound_queue_depth",
            "Stanzas waiting for the service worker",
            self.inbound_queue.clone(),
        );
        r.register(
            "guard_outbound_queue_depth",
            "Stanzas waiting for the writer",
            self.outbound_queue.clone(),
        );
        r.register(
            "guard_store_latency_seconds",
            "Duration of store calls, by operation",
            self.store_latency.clone(),
        );
        r.register(
            "guard_revocation_latency_seconds",
            "From a revocation or expiry being logged to a subscription it ends being told so",
            self.revocation_latency.clone(),
        );
    }

    /// The observer to give the store's database ([`shared_store::db::Database::with_observer`]).
    pub fn store_observer(&self) -> shared_store::db::Observer {
        let family = self.store_latency.clone();
        Arc::new(move |operation, took| {
            family
                .get_or_create(&[("operation", operation.as_str())])
                .observe(took.as_secs_f64());
        })
    }

    /// A stanza came from the server.
    pub fn received(&self, stanza: &Stanza) {
        let root = stanza.root();
        let kind = match (root.name(), root.attr("type")) {
            ("iq", Some("get")) => "iq-get",
            ("iq", Some("set")) => "iq-set",
            ("iq", Some("result")) => "iq-result",
            ("iq", Some("error")) => "iq-error",
            ("iq", _) => "iq-other",
            ("message", Some("error")) => "message-error",
            ("message", _) => "message",
            ("presence", _) => "presence",
            _ => "other",
        };
        self.received_kind(kind);
    }

    /// A stanza the reader refused whole: `oversized`, `too-deep` or `malformed`.
    pub fn received_kind(&self, kind: &'static str) {
        self.received.get_or_create(&[("kind", kind)]).inc();
    }

    /// A stanza is handed to the writer; a notification counts as a delivery too.
    pub fn sent(&self, stanza: &Element) {
        let kind = sent_kind(stanza);
        if kind == "notification" {
            self.deliveries.inc();
        }
        self.sent.get_or_create(&[("kind", kind)]).inc();
    }

    /// A request was refused.
    pub fn refused(&self, refusal: &Refusal) {
        let app = match (&refusal.app, &refusal.detail) {
            (Some((_, app, _)), _) => app,
            (None, Some(_)) => "detail",
            (None, None) => "none",
        };
        self.refusals
            .get_or_create(&[("condition", refusal.condition), ("app", app)])
            .inc();
    }

    /// A subscription was ended `secs` after the change that ended its access was logged.
    pub fn revocation_ended(&self, secs: f64) {
        self.revocation_latency.observe(secs);
    }
}

/// What a stanza the guard sends is: `result`, `error`, `notification` (an item or a
/// retraction), `subscription-none` (a subscription ended), `archive` (an archive query's
/// result) or `other`.
fn sent_kind(stanza: &Element) -> &'static str {
    let kind = stanza.attr("type");
    match stanza.name() {
        "iq" if kind == Some("result") => "result",
        "iq" | "message" if kind == Some("error") => "error",
        "message" => {
            if let Some(event) = stanza.get_child("event", ns::PUBSUB_EVENT) {
                if event.get_child("items", ns::PUBSUB_EVENT).is_some() {
                    return "notification";
                }
                if event
                    .get_child("subscription", ns::PUBSUB_EVENT)
                    .is_some_and(|s| s.attr("subscription") == Some("none"))
                {
                    return "subscription-none";
                }
            }
            if stanza.get_child("result", ns::MAM).is_some() {
                return "archive";
            }
            "other"
        }
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn sent_stanzas_are_classified() {
        let cases = [
            (
                "<iq xmlns='jabber:component:accept' type='result'/>",
                "result",
            ),
            (
                "<iq xmlns='jabber:component:accept' type='error'/>",
                "error",
            ),
            (
                "<message xmlns='jabber:component:accept' type='error'/>",
                "error",
            ),
            (
                "<message xmlns='jabber:component:accept'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n'><item id='1'/></items></event></message>",
                "notification",
            ),
            (
                "<message xmlns='jabber:component:accept'><event xmlns='http://jabber.org/protocol/pubsub#event'><subscription node='n' jid='a@b' subscription='none'/></event></message>",
                "subscription-none",
            ),
            (
                "<message xmlns='jabber:component:accept'><result xmlns='urn:xmpp:mam:2'/></message>",
                "archive",
            ),
            ("<message xmlns='jabber:component:accept'/>", "other"),
            ("<presence xmlns='jabber:component:accept'/>", "other"),
        ];
        for (xml, kind) in cases {
            assert_eq!(sent_kind(&parse(xml)), kind, "{xml}");
        }
    }

    #[test]
    fn counts_show_in_the_registry() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.refused(&Refusal::oauth(&oauth_xmpp::VerifyError::TokenRequired));
        metrics.refused(&Refusal::item_not_found("no"));
        metrics.sent(&parse(
            "<message xmlns='jabber:component:accept'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n'/></event></message>",
        ));
        metrics.received_kind("oversized");
        metrics.revocation_ended(0.3);
        let mut text = String::new();
        telemetry::prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let sample = |name, labels: &[(&str, &str)]| telemetry::scrape::sample(&text, name, labels);
        assert_eq!(
            sample(
                "guard_refusals_total",
                &[("condition", "not-authorized"), ("app", "token-required")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                "guard_refusals_total",
                &[("condition", "item-not-found"), ("app", "none")]
            ),
            Some(1.0)
        );
        assert_eq!(sample("guard_deliveries_total", &[]), Some(1.0));
        assert_eq!(
            sample("guard_stanzas_sent_total", &[("kind", "notification")]),
            Some(1.0)
        );
        assert_eq!(
            sample("guard_stanzas_received_total", &[("kind", "oversized")]),
            Some(1.0)
        );
        assert_eq!(
            sample("guard_revocation_latency_seconds_count", &[]),
            Some(1.0)
        );
        assert_eq!(sample("guard_connected", &[]), Some(0.0));
    }
}
