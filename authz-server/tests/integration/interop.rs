//! Independent peers: requests-oauthlib's `OAuth1Session` does the three-legged flow, and
//! headless Chromium drives the authorize page. Both need what `scripts/test` sets up (the
//! `.venv`, and Chromium with chromedriver).

use std::path::PathBuf;
use std::process::Command;

use crate::{Server, cli, setup};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn python() -> PathBuf {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-venv (scripts/test does)",
        python.display()
    );
    python
}

fn run(args: &[&str]) -> serde_json::Value {
    let out = Command::new(python()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn requests_oauthlib_completes_the_three_legged_flow_hmac_and_plaintext() {
    let s = setup();
    let (db, key, secret) = (&s.db, &s.key, &s.secret);
    let server = Server::start(db, &[]);
    let script = repo().join("authz-server/tests/py/three_legged.py");
    for method in ["HMAC-SHA1", "PLAINTEXT"] {
        // `--name=value`: keys and secrets may start with `-`.
        let result = run(&[
            script.to_str().unwrap(),
            &format!("--base={}", server.base),
            &format!("--consumer-key={key}"),
            &format!("--consumer-secret={secret}"),
            "--owner=alice",
            "--password=correct horse",
            &format!("--method={method}"),
            "--scope=/location/alice /photos/alice/",
            &format!("--callback={}", crate::CALLBACK),
        ]);
        let token = result["access_token"].as_str().unwrap();
        let (_, list, _) = cli(db, &["token", "list"], "");
        assert!(
            list.contains(&format!(
                "{token}\towner=alice\tconsumer={key}\tscope=/location/alice /photos/alice/\tlive"
            )),
            "{method}: {list}"
        );
    }
}

#[test]
fn headless_chromium_signs_in_approves_and_revokes_and_is_not_redirected_away() {
    assert!(
        std::path::Path::new("/usr/bin/chromedriver").exists(),
        "chromedriver is missing: run scripts/setup-chromium (scripts/test does)"
    );
    let s = setup();
    let server = Server::start(&s.db, &[]);
    // The request token, signed by our own signer.
    let url = format!("{}/oauth/request_token", server.base);
    let signer = crate::signer(
        &s.key,
        &s.secret,
        None,
        oauth_xmpp::SignatureMethod::HmacSha1,
    );
    let auth = signer
        .sign_http("POST", &url, &[], &[("oauth_callback", crate::CALLBACK)])
        .unwrap();
    let a = crate::http(
        &server.addr,
        "POST",
        "/oauth/request_token",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(a.status, 200, "{a:?}");
    let token = a.get("oauth_token");
    let shot = repo().join("target/authorize-page.png");
    let result = run(&[
        repo()
            .join("authz-server/tests/py/browser_authorize.py")
            .to_str()
            .unwrap(),
        "--authorize-url",
        &format!("{}/oauth/authorize?oauth_token={token}", server.base),
        "--owner",
        "alice",
        "--password",
        "correct horse",
        "--screenshot",
        shot.to_str().unwrap(),
        "--expect-callback",
        crate::CALLBACK,
    ]);
    assert_eq!(result["oauth_token"], token.as_str());
    assert_eq!(result["oauth_verifier"].as_str().unwrap().len(), 22);
    // The crafted `next=/<TAB>/evil.example` stayed here, and the revoke went through.
    assert_eq!(
        result["after_crafted_sign_in"].as_str().unwrap(),
        format!("{}/apps", server.base)
    );
    // The consumer collects its token; the owner revokes it on her page, in the browser.
    let access_url = format!("{}/oauth/access_token", server.base);
    let temp_secret = a.get("oauth_token_secret");
    let exchange = crate::signer(
        &s.key,
        &s.secret,
        Some((&token, &temp_secret)),
        oauth_xmpp::SignatureMethod::HmacSha1,
    )
    .sign_http(
        "POST",
        &access_url,
        &[],
        &[("oauth_verifier", result["oauth_verifier"].as_str().unwrap())],
    )
    .unwrap();
    let access = crate::http(
        &server.addr,
        "POST",
        "/oauth/access_token",
        &[("Authorization", &exchange)],
        "",
    );
    assert_eq!(access.status, 200, "{access:?}");
    let revoked = run(&[
        repo()
            .join("authz-server/tests/py/browser_authorize.py")
            .to_str()
            .unwrap(),
        "--revoke",
        &server.base,
        "--owner",
        "alice",
        "--password",
        "correct horse",
    ]);
    assert_eq!(revoked["revoked"], true);
    let (_, list, _) = cli(&s.db, &["token", "list"], "");
    assert!(list.trim_end().ends_with("\trevoked"), "{list}");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1000,
        "screenshot saved for review at {}",
        shot.display()
    );
}
