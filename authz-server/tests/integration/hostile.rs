//! The server against a hostile web: password guessing, open redirects, login CSRF, a
//! consumer asking for another callback, duplicated headers, a lost exchange answer, and
//! the headers every page carries.

use std::path::Path;
use std::time::{Duration, Instant};

use oauth_xmpp::SignatureMethod;

use crate::{
    Answer, CALLBACK, FORM, Server, cli, csrf_in, http, login_form, set_cookie, setup, sign_in,
    signer, try_sign_in,
};

/// Writes a config file next to the database; returns its path.
fn config(db: &Path, text: &str) -> String {
    let path = db.with_file_name("authz.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Small numbers so that the test runs in seconds: 3 free failures per name, 1 s delays,
/// locked at 5 for 3 s; addresses 4 free, locked at 8.
const FAST_THROTTLE: &str = "
[sign_in.per_name]
free_failures = 3
max_delay_secs = 1
lockout_after = 5
lockout_secs = 3
forget_after_secs = 3600
[sign_in.per_address]
free_failures = 4
max_delay_secs = 1
lockout_after = 8
lockout_secs = 60
forget_after_secs = 3600
";

/// The same, with a per-address rule that never gets in the way.
fn names_only() -> String {
    FAST_THROTTLE
        .replace("free_failures = 4", "free_failures = 1000")
        .replace("lockout_after = 8", "lockout_after = 2000")
}

fn error_text(a: &Answer) -> String {
    a.body
        .split("<p class=\"error\" id=\"error\">")
        .nth(1)
        .map(|rest| rest.split("</p>").next().unwrap().to_owned())
        .unwrap_or_default()
}

fn request_token(server: &Server, url: &str, key: &str, secret: &str, callback: &str) -> Answer {
    let auth = signer(key, secret, None, SignatureMethod::HmacSha1)
        .sign_http("POST", url, &[], &[("oauth_callback", callback)])
        .unwrap();
    http(
        &server.addr,
        "POST",
        "/oauth/request_token",
        &[("Authorization", &auth)],
        "",
    )
}

#[test]
fn guessing_a_password_is_slowed_then_locked_and_the_owner_is_told() {
    let s = setup();
    let cfg = config(&s.db, &names_only());
    let server = Server::start(&s.db, &["--config", &cfg]);
    // A known and an unknown name, attempt for attempt: the same answers.
    for name in ["alice", "nobody"] {
        let statuses: Vec<u16> = (0..4)
            .map(|_| try_sign_in(&server, name, "wrong password", "/apps").status)
            .collect();
        assert_eq!(statuses, [401, 401, 401, 429], "{name}");
        let a = try_sign_in(&server, name, "wrong password", "/apps");
        assert_eq!(
            (a.status, a.header("Retry-After")),
            (429, Some("1")),
            "{name}"
        );
        assert_eq!(
            error_text(&a),
            "Too many failed sign-ins for this name: wait 1 second before trying again."
        );
    }
    std::thread::sleep(Duration::from_millis(1100));
    for name in ["alice", "nobody"] {
        assert_eq!(
            try_sign_in(&server, name, "wrong password", "/apps").status,
            401
        );
    }
    std::thread::sleep(Duration::from_millis(1100));
    for name in ["alice", "nobody"] {
        // The fifth failure locks the name, and says so.
        let a = try_sign_in(&server, name, "wrong password", "/apps");
        assert_eq!(a.status, 401);
        assert_eq!(
            error_text(&a),
            "That name and password do not match. Signing in for this name is now locked for 3 seconds."
        );
    }
    // Locked: even the right password is not checked.
    let a = try_sign_in(&server, "alice", "correct horse", "/apps");
    assert_eq!(a.status, 429);
    assert!(
        error_text(&a).starts_with("Signing in for this name is locked for "),
        "{}",
        error_text(&a)
    );
    assert_eq!(set_cookie(&a, "authz_session"), None);
    std::thread::sleep(Duration::from_millis(3100));
    // After the lockout she signs in, and is told what happened meanwhile.
    let cookie = sign_in(&server, "/apps");
    let page = http(&server.addr, "GET", "/apps", &[("Cookie", &cookie)], "");
    let notice = page
        .body
        .split("<p class=\"notice\" id=\"failed-sign-ins\">")
        .nth(1)
        .unwrap()
        .split("</p>")
        .next()
        .unwrap();
    assert!(
        notice.starts_with(
            "Since you last signed in, 5 sign-ins with your name failed (the last on "
        ),
        "{notice}"
    );
    assert!(notice.contains("Signing in was locked 1 time."), "{notice}");
    // Told once: the next sign-in starts from nothing.
    let cookie = sign_in(&server, "/apps");
    let page = http(&server.addr, "GET", "/apps", &[("Cookie", &cookie)], "");
    assert!(!page.body.contains("failed-sign-ins"), "{}", page.body);
}

#[test]
fn guessing_from_one_address_is_slowed_whatever_the_names() {
    let s = setup();
    // Four free failures per address, and the fifth locks it for ten minutes.
    let rules = FAST_THROTTLE
        .replace("lockout_after = 8", "lockout_after = 5")
        .replace("lockout_secs = 60", "lockout_secs = 600");
    let cfg = config(
        &s.db,
        &format!("client_address_header = \"X-Forwarded-For\"\n{rules}"),
    );
    let server = Server::start(&s.db, &["--config", &cfg]);
    let attempt = |name: &str, from: &str| {
        let (token, cookie) = login_form(&server);
        http(
            &server.addr,
            "POST",
            "/login",
            &[FORM, ("Cookie", &cookie), ("X-Forwarded-For", from)],
            &format!("login={token}&name={name}&password=guess&next=%2Fapps"),
        )
    };
    // A new name each time: only the address counter grows.
    let statuses: Vec<u16> = (0..5)
        .map(|i| attempt(&format!("user{i}"), "198.51.100.7, 203.0.113.9").status)
        .collect();
    assert_eq!(statuses, [401, 401, 401, 401, 429]);
    assert_eq!(
        error_text(&attempt("user5", "203.0.113.9")),
        "Too many failed sign-ins from your address: wait 1 second before trying again."
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(attempt("user6", "203.0.113.9").status, 401);
    let a = attempt("alice", "203.0.113.9");
    assert_eq!(
        error_text(&a),
        "Signing in from your address is locked for 10 minutes after too many failed attempts."
    );
    // Another address (the proxy's last entry is the client) is not held back.
    assert_eq!(attempt("user10", "203.0.113.10").status, 401);
    assert_eq!(
        try_sign_in(&server, "alice", "correct horse", "/apps").status,
        303
    );
}

#[test]
fn known_and_unknown_names_take_the_same_time() {
    let s = setup();
    let cfg = config(
        &s.db,
        &FAST_THROTTLE
            .replace("free_failures = 3", "free_failures = 500")
            .replace("lockout_after = 5", "lockout_after = 600")
            .replace("free_failures = 4", "free_failures = 500")
            .replace("lockout_after = 8", "lockout_after = 600"),
    );
    let _heavy = crate::heavy();
    let server = Server::start(&s.db, &["--config", &cfg]);
    let time = |name: &str| {
        let started = Instant::now();
        assert_eq!(
            try_sign_in(&server, name, "wrong password", "/apps").status,
            401
        );
        started.elapsed().as_secs_f64()
    };
    // In pairs, alternating which goes first, so both see the same load; the median of
    // the pairs' ratios.
    let mut ratios: Vec<f64> = (0..21)
        .map(|i| {
            let (k, u) = if i % 2 == 0 {
                let k = time("alice");
                (k, time("nobody"))
            } else {
                let u = time("nobody");
                (time("alice"), u)
            };
            u / k
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios[10];
    // Without the dummy hash an unknown name answers in about 1 ms against tens (a ratio
    // near 0.03).
    assert!(
        (0.5..2.0).contains(&median),
        "unknown/known ratios {ratios:?}"
    );
}

#[test]
fn next_goes_only_to_a_path_on_this_server_and_the_form_needs_its_token() {
    let s = setup();
    let server = Server::start(&s.db, &[]);
    for (next, want) in [
        ("/\t/evil.example", "/apps"),
        ("/\\evil.example", "/apps"),
        ("/.//evil.example", "/apps"),
        ("https://evil.example/", "/apps"),
        (
            "/oauth/authorize?oauth_token=abc",
            "/oauth/authorize?oauth_token=abc",
        ),
    ] {
        let a = try_sign_in(&server, "alice", "correct horse", next);
        assert_eq!(
            (a.status, a.header("Location")),
            (303, Some(want)),
            "{next:?}"
        );
    }
    // The form carries the judged value too.
    let page = http(
        &server.addr,
        "GET",
        "/login?next=%2F%09%2Fevil.example",
        &[],
        "",
    );
    assert!(
        page.body.contains("name=\"next\" value=\"/apps\""),
        "{}",
        page.body
    );
    // Login CSRF: a form posted from elsewhere has neither the cookie nor its token.
    let forged = http(
        &server.addr,
        "POST",
        "/login",
        &[FORM],
        "name=alice&password=correct%20horse&next=%2Fapps",
    );
    assert_eq!(forged.status, 403);
    assert_eq!(set_cookie(&forged, "authz_session"), None);
    assert_eq!(
        error_text(&forged),
        "This sign-in form did not come from this site, or your browser refused its cookie: sign in again below."
    );
    // A token from another browser does not match this one's cookie.
    let (token, _) = login_form(&server);
    let (_, cookie) = login_form(&server);
    let mixed = http(
        &server.addr,
        "POST",
        "/login",
        &[FORM, ("Cookie", &cookie)],
        &format!("login={token}&name=alice&password=correct%20horse&next=%2Fapps"),
    );
    assert_eq!(mixed.status, 403);
}

#[test]
fn only_the_registered_callback_is_used() {
    let s = setup();
    let server = Server::start(&s.db, &[]);
    let url = format!("{}/oauth/request_token", server.base);
    let refused = |a: &Answer| {
        (
            a.status,
            a.get("oauth_problem"),
            a.get("oauth_problem_advice"),
        )
    };
    let not_it = format!(
        "oauth_callback must be this application's registered callback {CALLBACK} (extra query parameters allowed)"
    );
    let a = request_token(
        &server,
        &url,
        &s.key,
        &s.secret,
        "https://evil.example/steal",
    );
    assert_eq!(
        refused(&a),
        (400, "parameter_rejected".into(), not_it.clone())
    );
    let a = request_token(&server, &url, &s.key, &s.secret, "oob");
    assert_eq!(refused(&a), (400, "parameter_rejected".into(), not_it));
    let a = request_token(
        &server,
        &url,
        &s.key,
        &s.secret,
        &format!("{CALLBACK}\r\nX: y"),
    );
    assert_eq!(
        refused(&a),
        (
            400,
            "parameter_rejected".into(),
            "oauth_callback holds a control character or a space".into()
        )
    );
    let a = request_token(
        &server,
        &url,
        &s.key,
        &s.secret,
        &format!("{CALLBACK}?state=42"),
    );
    assert_eq!(a.status, 200, "{a:?}");
    // Registered without a callback: oob only.
    let a = request_token(&server, &url, &s.oob_key, &s.oob_secret, CALLBACK);
    assert_eq!(
        refused(&a),
        (
            400,
            "parameter_rejected".into(),
            "this application is registered without a callback: oauth_callback must be oob".into()
        )
    );
    let a = request_token(&server, &url, &s.oob_key, &s.oob_secret, "oob");
    assert_eq!(a.status, 200, "{a:?}");
    // Registration refuses what could not be a callback.
    let (ok, _, err) = cli(
        &s.db,
        &[
            "consumer",
            "add",
            "--name",
            "Evil",
            "--callback",
            "https://x.example/\r\nSet-Cookie: a=b",
        ],
        "",
    );
    assert!(!ok);
    assert_eq!(
        err,
        "authz-server: the callback \"https://x.example/\\r\\nSet-Cookie: a=b\" is refused: holds a control character or a space\n"
    );
    let (ok, _, err) = cli(
        &s.db,
        &[
            "consumer",
            "add",
            "--name",
            "App",
            "--callback",
            "myapp://done",
        ],
        "",
    );
    assert!(!ok);
    assert_eq!(
        err,
        "authz-server: the callback \"myapp://done\" is refused: must be an absolute http or https URL with no user info and no fragment\n"
    );
}

#[test]
fn a_duplicated_authorization_header_is_refused() {
    let s = setup();
    let server = Server::start(&s.db, &[]);
    let url = format!("{}/oauth/request_token", server.base);
    let auth = signer(&s.key, &s.secret, None, SignatureMethod::HmacSha1)
        .sign_http("POST", &url, &[], &[("oauth_callback", CALLBACK)])
        .unwrap();
    let other = signer(&s.key, "not the secret", None, SignatureMethod::HmacSha1)
        .sign_http("POST", &url, &[], &[("oauth_callback", CALLBACK)])
        .unwrap();
    let a = http(
        &server.addr,
        "POST",
        "/oauth/request_token",
        &[("Authorization", &auth), ("Authorization", &other)],
        "",
    );
    assert_eq!(
        (
            a.status,
            a.get("oauth_problem").as_str(),
            a.get("oauth_problem_advice").as_str()
        ),
        (
            400,
            "parameter_rejected",
            "the Authorization header is given more than once"
        )
    );
}

#[test]
fn a_lost_exchange_answer_is_collected_by_a_retry_even_after_a_crash() {
    let s = setup();
    // A fixed public URL: the restarted server listens on another port.
    let public = "http://auth.test";
    let server = Server::start(&s.db, &["--public-url", public]);
    let a = request_token(
        &server,
        &format!("{public}/oauth/request_token"),
        &s.key,
        &s.secret,
        CALLBACK,
    );
    assert_eq!(a.status, 200, "{a:?}");
    let temp = (a.get("oauth_token"), a.get("oauth_token_secret"));
    let next = format!("/oauth/authorize?oauth_token={}", temp.0);
    let cookie = sign_in(&server, &next);
    let page = http(&server.addr, "GET", &next, &[("Cookie", &cookie)], "");
    let approved = http(
        &server.addr,
        "POST",
        "/oauth/authorize",
        &[("Cookie", &cookie), FORM],
        &format!(
            "oauth_token={}&csrf={}&scope=*&decision=approve",
            temp.0,
            csrf_in(&page.body)
        ),
    );
    let location = approved.header("Location").unwrap();
    let verifier = location.split("oauth_verifier=").nth(1).unwrap().to_owned();
    let url = format!("{public}/oauth/access_token");
    // Each call signs anew (a fresh nonce and timestamp).
    let sign = || {
        signer(
            &s.key,
            &s.secret,
            Some((&temp.0, &temp.1)),
            SignatureMethod::HmacSha1,
        )
        .sign_http("POST", &url, &[], &[("oauth_verifier", &verifier)])
        .unwrap()
    };
    let post = |server: &Server, auth: &str| {
        http(
            &server.addr,
            "POST",
            "/oauth/access_token",
            &[("Authorization", auth)],
            "",
        )
    };
    let auth = sign();
    let exchange = |server: &Server| post(server, &auth);
    let first = exchange(&server);
    assert_eq!(first.status, 200, "{first:?}");
    // The answer is lost and the server is killed (SIGKILL) before anyone retries.
    drop(server);
    let server = Server::start(&s.db, &["--public-url", public]);
    // The same request, byte for byte (same nonce): the same token back.
    let retry = exchange(&server);
    assert_eq!(retry.status, 200, "{retry:?}");
    assert_eq!(
        (retry.get("oauth_token"), retry.get("oauth_token_secret")),
        (first.get("oauth_token"), first.get("oauth_token_secret"))
    );
    // A new signed request with the verifier gets it too; one token, not two.
    let a = post(&server, &sign());
    assert_eq!(a.get("oauth_token"), first.get("oauth_token"));
    let (_, list, _) = cli(&s.db, &["token", "list"], "");
    assert_eq!(list.lines().count(), 1, "{list}");
    let (ok, _, _) = cli(&s.db, &["token", "revoke", "--owner", "alice"], "");
    assert!(ok);
    // Revoked meanwhile: the retry no longer gets it.
    let a = exchange(&server);
    assert_eq!(
        (a.status, a.get("oauth_problem").as_str()),
        (401, "token_used")
    );
}

#[test]
fn pages_carry_the_security_headers_and_https_makes_cookies_secure() {
    let s = setup();
    let server = Server::start(&s.db, &[]);
    for path in ["/login", "/apps", "/oauth/authorize", "/style.css"] {
        let a = http(&server.addr, "GET", path, &[], "");
        assert_eq!(
            (
                a.header("Content-Security-Policy"),
                a.header("X-Content-Type-Options"),
                a.header("X-Frame-Options"),
                a.header("Referrer-Policy"),
            ),
            (
                Some(
                    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
                ),
                Some("nosniff"),
                Some("DENY"),
                Some("no-referrer"),
            ),
            "{path}"
        );
    }
    // The authorize page may post to where its answer redirects: the callback's origin.
    let url = format!("{}/oauth/request_token", server.base);
    let a = request_token(&server, &url, &s.key, &s.secret, CALLBACK);
    let next = format!("/oauth/authorize?oauth_token={}", a.get("oauth_token"));
    let cookie = sign_in(&server, &next);
    let page = http(&server.addr, "GET", &next, &[("Cookie", &cookie)], "");
    assert!(
        page.header("Content-Security-Policy")
            .unwrap()
            .contains("form-action 'self' http://127.0.0.1:9;"),
        "{page:?}"
    );
    // Plain HTTP (a local test): no Secure.
    let login = try_sign_in(&server, "alice", "correct horse", "/apps");
    let raw = login
        .headers
        .iter()
        .find(|(n, v)| n.eq_ignore_ascii_case("Set-Cookie") && v.starts_with("authz_session="))
        .unwrap()
        .1
        .clone();
    assert!(
        raw.ends_with("; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600"),
        "{raw}"
    );
    drop(server);

    let server = Server::start(&s.db, &["--public-url", "https://auth.example.org"]);
    let page = http(&server.addr, "GET", "/login", &[], "");
    let login_cookie = page
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Set-Cookie"))
        .unwrap()
        .1
        .clone();
    assert!(
        login_cookie.starts_with("__Host-authz_login="),
        "{login_cookie}"
    );
    assert!(login_cookie.ends_with("; Secure"), "{login_cookie}");
    let login = try_sign_in(&server, "alice", "correct horse", "/apps");
    assert_eq!(login.status, 303, "{login:?}");
    let session = login
        .headers
        .iter()
        .find(|(n, v)| {
            n.eq_ignore_ascii_case("Set-Cookie") && v.starts_with("__Host-authz_session=")
        })
        .unwrap()
        .1
        .clone();
    assert!(
        session.ends_with("; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600; Secure"),
        "{session}"
    );
}
