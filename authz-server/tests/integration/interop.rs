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
    // What the guard would write as the application uses the grant: deliveries to one node,
    // and a refused request naming it.
    let store =
        shared_store::Store::open(shared_store::db::Location::Sqlite(s.db.clone())).unwrap();
    let access_token = access.get("oauth_token");
    store
        .add_deliveries(&[shared_store::authz::ledger::Delivered {
            token: access_token.clone(),
            node: "/location/alice".into(),
            pushed: 4,
            fetched: 1,
        }])
        .unwrap();
    let mut refused = shared_store::authz::ledger::NewEntry::new(
        shared_store::authz::ledger::EntryKind::Refused,
        "eve@localhost/r",
        "subscribe refused: not-authorized (invalid-signature): the HMAC-SHA1 signature does not match",
    );
    refused.owner = Some("alice".into());
    refused.consumer_key = Some(s.key.clone());
    refused.node = Some("/photos/alice/2026".into());
    store.record(refused).unwrap();
    let token_id = store
        .access_tokens(Some("alice"), None)
        .unwrap()
        .into_iter()
        .find(|t| t.token == access_token)
        .unwrap()
        .id;
    let last_ms = store.deliveries(token_id).unwrap()[0].last_ms;
    let when = shared_store::datetime::format(last_ms / 1000)
        .replacen('T', " ", 1)
        .replace('Z', " UTC");
    let apps_shot = repo().join("target/apps-page.png");
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
        "--screenshot",
        apps_shot.to_str().unwrap(),
    ]);
    assert_eq!(revoked["revoked"], true);
    assert_eq!(
        revoked["received"],
        format!("last received something on {when} (5 items in all)").as_str()
    );
    assert_eq!(
        revoked["refusals"],
        "1 request naming it was refused on your nodes:"
    );
    assert_eq!(
        revoked["notice"],
        format!(
            "You revoked FindMeNow. Its last delivery under this grant was on {when} (5 items \
             in all)."
        )
        .as_str()
    );
    assert!(
        std::fs::metadata(&apps_shot).unwrap().len() > 1000,
        "screenshot saved for review at {}",
        apps_shot.display()
    );
    let (_, list, _) = cli(&s.db, &["token", "list"], "");
    assert!(list.trim_end().ends_with("\trevoked"), "{list}");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1000,
        "screenshot saved for review at {}",
        shot.display()
    );
}
