//! `--metrics-listen`: the counters move with real traffic, as a Prometheus server scrapes
//! them.

use oauth_xmpp::SignatureMethod;

use crate::flow::{access_token, answer, request_token, verifier_of};
use crate::{FORM, Server, csrf_in, http, setup, sign_in, signer, try_sign_in};

/// Scrapes the server's metrics; the answer's body, after checking its head.
fn scrape(server: &Server) -> String {
    let a = http(
        server.metrics.as_deref().unwrap(),
        "GET",
        "/metrics",
        &[],
        "",
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.header("Content-Type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    a.body
}

/// A sample's name, its labels, and the value it must have.
type Expected = (&'static str, &'static [(&'static str, &'static str)], f64);

#[test]
fn counters_follow_sign_ins_grants_refusals_and_revocations() {
    let s = setup();
    let server = Server::start(&s.db, &["--metrics-listen", "127.0.0.1:0"]);
    let metrics = server.metrics.clone().unwrap();
    let before = scrape(&server);
    let value = |text: &str, name: &str, labels: &[(&str, &str)]| {
        telemetry::scrape::sample(text, name, labels)
    };
    assert_eq!(value(&before, "authz_grants_total", &[]), Some(0.0));

    // One wrong password, then the flow (one right sign-in), one exchange.
    let wrong = try_sign_in(&server, "alice", "wrong horse", "/apps");
    assert_eq!(wrong.status, 401);
    let (token, secret) = request_token(&server, &s, "/location/alice");
    let approved = answer(&server, &token, "approve");
    let verifier = verifier_of(approved.header("Location").unwrap());
    let access = access_token(&server, &s, (&token, &secret), &verifier);
    assert_eq!(access.status, 200, "{access:?}");
    // A refused exchange (a token the server never issued) and a refused request token (a
    // wrong consumer secret).
    let refused = access_token(&server, &s, ("no-such-token", "x"), "v");
    assert_eq!(
        (refused.status, refused.get("oauth_problem").as_str()),
        (401, "token_rejected")
    );
    let url = format!("{}/oauth/request_token", server.base);
    let auth = signer(&s.key, "not-the-secret", None, SignatureMethod::HmacSha1)
        .sign_http("POST", &url, &[], &[("oauth_callback", crate::CALLBACK)])
        .unwrap();
    let bad = http(
        &server.addr,
        "POST",
        "/oauth/request_token",
        &[("Authorization", &auth), FORM],
        "",
    );
    assert_eq!(bad.get("oauth_problem"), "signature_invalid");
    // The owner revokes it on her page (a second right sign-in).
    let cookie = sign_in(&server, "/apps");
    let page = http(&server.addr, "GET", "/apps", &[("Cookie", &cookie)], "");
    let id = page
        .body
        .split("id=\"revoke-")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let csrf = csrf_in(&page.body);
    let done = http(
        &server.addr,
        "POST",
        "/apps/revoke",
        &[("Cookie", &cookie), FORM],
        &format!("csrf={csrf}&id={id}"),
    );
    assert_eq!(done.status, 303);

    let text = scrape(&server);
    let expected: &[Expected] = &[
        (
            "authz_sign_ins_total",
            &[("outcome", "wrong_password")],
            1.0,
        ),
        ("authz_sign_ins_total", &[("outcome", "ok")], 2.0),
        ("authz_grants_total", &[], 1.0),
        ("authz_owner_revocations_total", &[], 1.0),
        (
            "authz_oauth_refusals_total",
            &[("endpoint", "access_token"), ("problem", "token_rejected")],
            1.0,
        ),
        (
            "authz_oauth_refusals_total",
            &[
                ("endpoint", "request_token"),
                ("problem", "signature_invalid"),
            ],
            1.0,
        ),
        (
            "authz_http_requests_total",
            &[("route", "/oauth/access_token"), ("status", "2xx")],
            1.0,
        ),
        (
            "authz_http_requests_total",
            &[("route", "/oauth/access_token"), ("status", "4xx")],
            1.0,
        ),
        (
            "authz_http_requests_total",
            &[("route", "/oauth/request_token"), ("status", "2xx")],
            1.0,
        ),
        (
            "authz_http_requests_total",
            &[("route", "/login"), ("status", "4xx")],
            1.0,
        ),
        (
            "authz_http_requests_total",
            &[("route", "/apps/revoke"), ("status", "3xx")],
            1.0,
        ),
    ];
    for (name, labels, want) in expected {
        assert_eq!(
            value(&text, name, labels),
            Some(*want),
            "{name}{labels:?} in\n{text}"
        );
    }
    // No sign-in was throttled, and no other problem was counted.
    assert_eq!(
        value(&text, "authz_sign_ins_total", &[("outcome", "throttled")]),
        None
    );
    assert_eq!(
        text.matches("authz_oauth_refusals_total{").count(),
        2,
        "{text}"
    );
    // Every store call was timed: the exchange and the revocation are writes.
    let writes = value(
        &text,
        "authz_store_latency_seconds_count",
        &[("operation", "write")],
    )
    .unwrap();
    assert!(writes >= 4.0, "{writes}");
    // The connections were closed (each request asked to): the gauge comes back to 0.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let open = value(&scrape(&server), "authz_http_connections", &[]);
        if open == Some(0.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{open:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Anything but GET /metrics is refused by the metrics listener.
    assert_eq!(http(&metrics, "GET", "/", &[], "").status, 404);
    assert_eq!(http(&metrics, "POST", "/metrics", &[], "").status, 405);
    let (status, _) = server.stop();
    assert!(status.success());
}

#[test]
fn a_metrics_address_in_use_is_a_clear_error_at_startup() {
    let s = setup();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = std::process::Command::new(crate::BIN)
        .arg("--database")
        .arg(&s.db)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            &addr,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(&format!(
            "authz-server: cannot listen for metrics on {addr}: "
        )),
        "{err}"
    );
}
