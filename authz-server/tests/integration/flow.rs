//! The token flow over loopback against the built server, and its error paths.

use oauth_xmpp::SignatureMethod;

use crate::{
    Answer, CALLBACK, FORM, Server, Setup, cli, csrf_in, http, setup, setup_postgres, sign_in,
    signer,
};

pub(crate) fn request_token(server: &Server, s: &Setup, scope: &str) -> (String, String) {
    let url = format!("{}/oauth/request_token", server.base);
    let auth = signer(&s.key, &s.secret, None, SignatureMethod::HmacSha1)
        .sign_http(
            "POST",
            &url,
            &[("scope", scope)],
            &[("oauth_callback", CALLBACK)],
        )
        .unwrap();
    let body = format!("scope={}", oauth_xmpp::encode::percent_encode(scope));
    let a = http(
        &server.addr,
        "POST",
        "/oauth/request_token",
        &[("Authorization", &auth), FORM],
        &body,
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.get("oauth_callback_confirmed"), "true");
    (a.get("oauth_token"), a.get("oauth_token_secret"))
}

/// Signs in as alice and answers the authorize page; returns the redirect.
pub(crate) fn answer(server: &Server, token: &str, decision: &str) -> Answer {
    let next = format!("/oauth/authorize?oauth_token={token}");
    let cookie = sign_in(server, &next);
    let page = http(&server.addr, "GET", &next, &[("Cookie", &cookie)], "");
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("Authorize <span class=\"app\">FindMeNow</span>?"),
        "{}",
        page.body
    );
    let csrf = csrf_in(&page.body);
    http(
        &server.addr,
        "POST",
        "/oauth/authorize",
        &[("Cookie", &cookie), FORM],
        &format!("oauth_token={token}&csrf={csrf}&scope=%2Flocation%2Falice&decision={decision}"),
    )
}

pub(crate) fn access_token(
    server: &Server,
    s: &Setup,
    temp: (&str, &str),
    verifier: &str,
) -> Answer {
    let url = format!("{}/oauth/access_token", server.base);
    let auth = signer(&s.key, &s.secret, Some(temp), SignatureMethod::HmacSha1)
        .sign_http("POST", &url, &[], &[("oauth_verifier", verifier)])
        .unwrap();
    http(
        &server.addr,
        "POST",
        "/oauth/access_token",
        &[("Authorization", &auth)],
        "",
    )
}

pub(crate) fn verifier_of(location: &str) -> String {
    location
        .split("oauth_verifier=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn whole_flow_then_reuse_then_revoke_shows_in_the_change_log() {
    whole_flow(&setup());
}

/// The same on PostgreSQL (`--database postgres://…`).
#[test]
fn whole_flow_on_postgres() {
    if let Some(s) = setup_postgres("authz_server_flow") {
        whole_flow(&s);
    }
}

fn whole_flow(s: &Setup) {
    // A 2 s window: also how long the exchange may be retried (profile P6).
    let server = Server::start(&s.db, &["--window", "2"]);
    let (token, secret) = request_token(&server, s, "/location/alice /photos/alice/");
    let approved = answer(&server, &token, "approve");
    assert_eq!(approved.status, 303);
    let location = approved.header("Location").unwrap().to_owned();
    assert!(
        location.starts_with(&format!(
            "http://127.0.0.1:9/cb?oauth_token={token}&oauth_verifier="
        )),
        "{location}"
    );
    let verifier = verifier_of(&location);
    let access = access_token(&server, s, (&token, &secret), &verifier);
    assert_eq!(access.status, 200, "{access:?}");
    assert_eq!(access.get("oauth_token").len(), 22);
    assert_eq!(access.get("oauth_token_secret").len(), 43);

    // Retried inside the window: the same token, not a second one.
    let retry = access_token(&server, s, (&token, &secret), &verifier);
    assert_eq!(
        (retry.status, retry.get("oauth_token")),
        (200, access.get("oauth_token"))
    );
    // Past the window (whole seconds: at most 3 s later).
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let again = access_token(&server, s, (&token, &secret), &verifier);
    assert_eq!(
        (again.status, again.get("oauth_problem").as_str()),
        (401, "token_used")
    );
    assert!(
        again
            .header("WWW-Authenticate")
            .unwrap()
            .starts_with("OAuth realm=\"authz-server\"")
    );

    let (ok, list, _) = cli(&s.db, &["token", "list", "--owner", "alice"], "");
    assert!(ok);
    let line = list.lines().next().unwrap();
    assert_eq!(
        line,
        format!(
            "1\t{}\towner=alice\tconsumer={}\tscope=/location/alice\tlive",
            access.get("oauth_token"),
            s.key
        )
    );
    let id = line.split('\t').next().unwrap();
    let (ok, _, err) = cli(&s.db, &["token", "revoke", "--id", id], "");
    assert!(ok, "{err}");
    let (_, changes, _) = cli(&s.db, &["changes"], "");
    let kinds: Vec<&str> = changes
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    assert_eq!(kinds, ["granted", "token-revoked"], "{changes}");
}

#[test]
fn error_paths_have_their_status_and_problem() {
    let s = setup();
    let server = Server::start(&s.db, &["--temporary-lifetime", "4"]);
    let url = format!("{}/oauth/request_token", server.base);
    let post = |auth: &str| {
        http(
            &server.addr,
            "POST",
            "/oauth/request_token",
            &[("Authorization", auth)],
            "",
        )
    };
    let extra = [("oauth_callback", CALLBACK)];

    // Bad signature.
    let auth = signer(&s.key, "wrong", None, SignatureMethod::HmacSha1)
        .sign_http("POST", &url, &[], &extra)
        .unwrap();
    let a = post(&auth);
    assert_eq!(
        (a.status, a.get("oauth_problem").as_str()),
        (401, "signature_invalid"),
        "{a:?}"
    );
    // Unknown consumer.
    let auth = signer("nobody", &s.secret, None, SignatureMethod::HmacSha1)
        .sign_http("POST", &url, &[], &extra)
        .unwrap();
    let a = post(&auth);
    assert_eq!(
        (a.status, a.get("oauth_problem").as_str()),
        (401, "consumer_key_unknown")
    );
    // Replayed nonce: the same signed request twice.
    let auth = signer(&s.key, &s.secret, None, SignatureMethod::HmacSha1)
        .sign_http("POST", &url, &[], &extra)
        .unwrap();
    assert_eq!(post(&auth).status, 200);
    let a = post(&auth);
    assert_eq!(
        (a.status, a.get("oauth_problem").as_str()),
        (401, "nonce_used")
    );
    // No callback.
    let auth = signer(&s.key, &s.secret, None, SignatureMethod::HmacSha1)
        .sign_http("POST", &url, &[], &[])
        .unwrap();
    let a = post(&auth);
    assert_eq!(
        (a.status, a.get("oauth_problem").as_str()),
        (400, "parameter_absent")
    );
    // PLAINTEXT works too.
    let auth = signer(&s.key, &s.secret, None, SignatureMethod::Plaintext)
        .sign_http("POST", &url, &[], &extra)
        .unwrap();
    assert_eq!(post(&auth).status, 200);

    // Wrong verifier, then a denied (revoked) temporary token.
    let (token, secret) = request_token(&server, &s, "/location/alice");
    let approved = answer(&server, &token, "approve");
    let a = access_token(&server, &s, (&token, &secret), "not-the-verifier");
    assert_eq!(
        (a.status, a.get("oauth_problem").as_str()),
        (401, "verifier_invalid")
    );
    assert_eq!(
        access_token(
            &server,
            &s,
            (&token, &secret),
            &verifier_of(approved.header("Location").unwrap())
        )
        .status,
        200
    );
    let (token, secret) = request_token(&server, &s, "/location/alice");
    let denied = answer(&server, &token, "deny");
    assert_eq!(
        denied.header("Location").unwrap(),
        format!("http://127.0.0.1:9/cb?oauth_token={token}&oauth_problem=permission_denied")
    );
    let a = access_token(&server, &s, (&token, &secret), "x");
    assert_eq!(
        (a.status, a.get("oauth_problem").as_str()),
        (401, "token_revoked")
    );

    // Expired temporary credentials (the server was started with a 4 s lifetime, counted in
    // whole seconds: expired at most 5 s later).
    let (token, secret) = request_token(&server, &s, "/location/alice");
    std::thread::sleep(std::time::Duration::from_millis(5100));
    let a = access_token(&server, &s, (&token, &secret), "x");
    assert_eq!(
        (a.status, a.get("oauth_problem").as_str()),
        (401, "token_expired")
    );

    // A revoked consumer.
    let (ok, _, _) = cli(&s.db, &["consumer", "revoke", &s.key], "");
    assert!(ok);
    let auth = signer(&s.key, &s.secret, None, SignatureMethod::HmacSha1)
        .sign_http("POST", &url, &[], &extra)
        .unwrap();
    let a = post(&auth);
    assert_eq!(
        (a.status, a.get("oauth_problem").as_str()),
        (401, "consumer_key_rejected")
    );
}

/// `token grant` of alice's `/location/alice` to the consumer; returns the CLI's output.
fn grant(s: &Setup) -> String {
    let args = [
        "token",
        "grant",
        "--owner",
        "alice",
        "--consumer",
        &s.key,
        "--scope",
        "/location/alice",
    ];
    let (ok, out, err) = cli(&s.db, &args, "");
    assert!(ok, "{err}");
    out
}

#[test]
fn the_store_survives_a_restart() {
    survives_a_restart(&setup());
    if let Some(s) = setup_postgres("authz_server_restart") {
        survives_a_restart(&s);
    }
}

fn survives_a_restart(s: &Setup) {
    let out = grant(s);
    // A clean stop: SIGTERM, exit 0, and nothing on standard error (on PostgreSQL, the last
    // handle to the store is dropped on the async runtime).
    let (status, stderr) = Server::start(&s.db, &[]).stop();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "");
    let _again = Server::start(&s.db, &[]);
    let (_, list, _) = cli(&s.db, &["token", "list"], "");
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("oauth_token="))
        .unwrap();
    assert!(list.contains(token) && list.contains("\tlive"), "{list}");
}

#[test]
fn cli_errors_are_one_line_and_non_zero() {
    let s = setup();
    let (ok, _, err) = cli(&s.db, &["consumer", "revoke", "nope"], "");
    assert!(!ok);
    assert_eq!(err, "authz-server: no consumer with key nope\n");
    let (ok, _, err) = cli(&s.db, &["owner", "add", "alice"], "another password\n");
    assert!(!ok);
    assert_eq!(err, "authz-server: the owner alice exists already\n");
}

#[test]
fn revoking_on_the_owners_page_appears_in_the_change_log_at_once() {
    let s = setup();
    let out = grant(&s);
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("id="))
        .unwrap()
        .to_owned();
    let server = Server::start(&s.db, &[]);
    let cookie = sign_in(&server, "/apps");
    let page = http(&server.addr, "GET", "/apps", &[("Cookie", &cookie)], "");
    assert!(
        page.body.contains(&format!("id=\"revoke-{id}\"")),
        "{}",
        page.body
    );
    let csrf = csrf_in(&page.body);
    // A form without the session's CSRF token is refused.
    let forged = http(
        &server.addr,
        "POST",
        "/apps/revoke",
        &[("Cookie", &cookie), FORM],
        &format!("csrf=x&id={id}"),
    );
    assert_eq!(forged.status, 403);
    let done = http(
        &server.addr,
        "POST",
        "/apps/revoke",
        &[("Cookie", &cookie), FORM],
        &format!("csrf={csrf}&id={id}"),
    );
    let back = format!("/apps?revoked={id}");
    assert_eq!(
        (done.status, done.header("Location")),
        (303, Some(back.as_str()))
    );
    let (_, changes, _) = cli(&s.db, &["changes"], "");
    let last = changes.lines().last().unwrap();
    assert!(
        last.starts_with("2\ttoken-revoked\t") && last.contains("\talice\t"),
        "{changes}"
    );
    let page = http(&server.addr, "GET", "/apps", &[("Cookie", &cookie)], "");
    assert!(
        page.body
            .contains("You have not authorized any application.")
    );
}

#[test]
fn behind_a_proxy_signatures_are_checked_against_the_public_url() {
    let s = setup();
    let server = Server::start(&s.db, &["--public-url", "https://auth.example.org"]);
    let send = |signed_url: &str| {
        let auth = signer(&s.key, &s.secret, None, SignatureMethod::HmacSha1)
            .sign_http("POST", signed_url, &[], &[("oauth_callback", CALLBACK)])
            .unwrap();
        http(
            &server.addr,
            "POST",
            "/oauth/request_token",
            &[("Authorization", &auth), FORM],
            "",
        )
    };
    // The consumer signs the URL it used: the proxy's (the default port 443 drops out).
    let a = send("https://auth.example.org:443/oauth/request_token");
    assert_eq!(a.status, 200, "{a:?}");
    // A signature over the loopback address the proxy forwards to does not verify.
    let a = send(&format!("{}/oauth/request_token", server.base));
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.get("oauth_problem"), "signature_invalid");
}
