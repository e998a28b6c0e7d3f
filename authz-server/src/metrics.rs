//! What the server counts, for Prometheus (`metrics_listen` in the config): sign-ins by
//! outcome, access tokens issued, revocations from the owner's page, the token flow's
//! refusals by `oauth_problem`, HTTP requests by route and status class, open connections
//! and the store's latency. Every name starts with `authz_`; every label value is a
//! `&'static str` of this code, so the number of series is bounded whatever the traffic.

use std::sync::Arc;

use telemetry::LatencyFamily;
use telemetry::prometheus_client::metrics::counter::Counter;
use telemetry::prometheus_client::metrics::family::Family;
use telemetry::prometheus_client::metrics::gauge::Gauge;
use telemetry::prometheus_client::registry::Registry;

/// Two labels.
type Labels = [(&'static str, &'static str); 2];

/// How a sign-in (`POST /login`) ended: the `outcome` label of `authz_sign_ins_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    /// Signed in (`ok`).
    Ok,
    /// The name and password do not match (`wrong_password`).
    WrongPassword,
    /// Refused for now: too many recent failures, wait (`throttled`).
    Throttled,
    /// Refused: the name or the address is locked out (`locked`).
    Locked,
    /// The form's token did not match its cookie (`bad_form`).
    BadForm,
    /// Every password-hashing slot was taken; told to retry (`busy`).
    Busy,
}

impl SignIn {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::WrongPassword => "wrong_password",
            Self::Throttled => "throttled",
            Self::Locked => "locked",
            Self::BadForm => "bad_form",
            Self::Busy => "busy",
        }
    }
}

/// The server's metrics: handles, cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    sign_ins: Family<[(&'static str, &'static str); 1], Counter>,
    /// Access tokens handed out by `POST /oauth/access_token` (`authz_grants_total`; a
    /// retried exchange that gets the same token again counts again).
    pub grants: Counter,
    /// Tokens revoked by their owner on the applications page
    /// (`authz_owner_revocations_total`).
    pub owner_revocations: Counter,
    oauth_refusals: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    /// HTTP connections open (`authz_http_connections`).
    pub connections: Gauge,
    store_latency: LatencyFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            sign_ins: Family::default(),
            grants: Counter::default(),
            owner_revocations: Counter::default(),
            oauth_refusals: Family::default(),
            requests: Family::default(),
            connections: Gauge::default(),
            store_latency: telemetry::latency_family(),
        }
    }
}

impl Metrics {
    /// Adds every metric to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register(
            "authz_sign_ins",
            "Sign-ins on the owner's pages, by outcome",
            self.sign_ins.clone(),
        );
        r.register(
            "authz_grants",
            "Access tokens issued by the token exchange",
            self.grants.clone(),
        );
        r.register(
            "authz_owner_revocations",
            "Tokens revoked by their owner on the applications page",
            self.owner_revocations.clone(),
        );
        r.register(
            "authz_oauth_refusals",
            "Refused request-token and access-token calls, by endpoint and oauth_problem",
            self.oauth_refusals.clone(),
        );
        r.register(
            "authz_http_requests",
            "HTTP requests answered, by route and status class",
            self.requests.clone(),
        );
        r.register(
            "authz_http_connections",
            "HTTP connections open",
            self.connections.clone(),
        );
        r.register(
            "authz_store_latency_seconds",
            "Duration of store calls, by operation",
            self.store_latency.clone(),
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

    /// A sign-in ended with `outcome`.
    pub fn sign_in(&self, outcome: SignIn) {
        self.sign_ins
            .get_or_create(&[("outcome", outcome.as_str())])
            .inc();
    }

    /// A request on `route` (a route of the router, or `unmatched`) was answered `status`;
    /// `problem` is the `oauth_problem` of a refused token-flow call.
    pub fn answered(&self, route: &'static str, status: u16, problem: Option<&'static str>) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .get_or_create(&[("route", route), ("status", class)])
            .inc();
        let endpoint = match route {
            "/oauth/request_token" => "request_token",
            "/oauth/access_token" => "access_token",
            _ => return,
        };
        if let Some(problem) = problem {
            self.oauth_refusals
                .get_or_create(&[("endpoint", endpoint), ("problem", problem)])
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_registry() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.sign_in(SignIn::WrongPassword);
        metrics.answered("/oauth/access_token", 401, Some("token_used"));
        metrics.answered("/login", 303, None);
        // Only the token flow's refusals are counted by problem.
        metrics.answered("/login", 400, Some("parameter_absent"));
        let mut text = String::new();
        telemetry::prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let sample = |name, labels: &[(&str, &str)]| telemetry::scrape::sample(&text, name, labels);
        assert_eq!(
            sample("authz_sign_ins_total", &[("outcome", "wrong_password")]),
            Some(1.0)
        );
        assert_eq!(
            sample(
                "authz_oauth_refusals_total",
                &[("endpoint", "access_token"), ("problem", "token_used")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                "authz_http_requests_total",
                &[("route", "/login"), ("status", "3xx")]
            ),
            Some(1.0)
        );
        assert!(!text.contains("parameter_absent"), "{text}");
    }
}
