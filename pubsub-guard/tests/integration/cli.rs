//! The admin CLI, run as a built binary: exact output and exact errors.

use std::path::Path;
use std::process::Command;

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn guard(db: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_pubsub-guard"))
        .arg("--database")
        .arg(db)
        .args(args)
        .env_remove("GUARD_CONFIG")
        .env_remove("GUARD_SECRET")
        .output()
        .unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[test]
fn nodes_are_created_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("authz.sqlite");
    let out = guard(
        &db,
        &[
            "node",
            "create",
            "/location/alice",
            "--owner",
            "alice",
            "--publisher",
            "location@localhost/res",
            "--max-items",
            "3",
            "--max-age",
            "2w",
        ],
    );
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, "created /location/alice (oauth)\n");
    let out = guard(
        &db,
        &[
            "node",
            "create",
            "/news",
            "--open",
            "--publisher",
            "news@localhost",
        ],
    );
    assert_eq!(out.stdout, "created /news (open)\n");
    let out = guard(&db, &["node", "list"]);
    assert_eq!(
        out.stdout,
        "/location/alice\toauth\talice\t3\t2w\tlocation@localhost\n/news\topen\t-\t10000\t30d\tnews@localhost\n"
    );
    // The store file is private, like the authorization server's.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let out = guard(&db, &["subscription", "list"]);
    assert!(out.ok);
    assert_eq!(out.stdout, "");
    let out = guard(&db, &["node", "delete", "/news"]);
    assert_eq!(out.stdout, "deleted /news (0 subscriptions removed)\n");
    let out = guard(&db, &["node", "delete", "/news"]);
    assert!(!out.ok);
    assert_eq!(out.stderr, "pubsub-guard: there is no node \"/news\"\n");
}

#[test]
fn refuses_bad_node_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("authz.sqlite");
    let out = guard(
        &db,
        &[
            "node",
            "create",
            "/location/alice",
            "--publisher",
            "l@localhost",
        ],
    );
    assert!(!out.ok);
    assert_eq!(
        out.stderr,
        "pubsub-guard: a protected node needs --owner (or pass --open)\n"
    );
    let out = guard(
        &db,
        &[
            "node",
            "create",
            "/n",
            "--open",
            "--publisher",
            "l@localhost",
            "--max-items",
            "0",
        ],
    );
    assert_eq!(out.stderr, "pubsub-guard: --max-items must be at least 1\n");
    let out = guard(
        &db,
        &[
            "node",
            "create",
            "/n",
            "--open",
            "--publisher",
            "l@localhost",
            "--max-age",
            "a week",
        ],
    );
    assert!(
        out.stderr.contains(
            "\"a week\" is not an age: write a whole number with s, m, h, d or w (like \"30d\"), or \"none\""
        ),
        "{}",
        out.stderr
    );
    guard(
        &db,
        &[
            "node",
            "create",
            "/n",
            "--open",
            "--publisher",
            "l@localhost",
        ],
    );
    let out = guard(
        &db,
        &[
            "node",
            "create",
            "/n",
            "--open",
            "--publisher",
            "l@localhost",
        ],
    );
    assert_eq!(out.stderr, "pubsub-guard: the node /n already exists\n");
    // Profile N7: a name no token scope can express is refused at creation.
    let cases = [
        (
            "/a b",
            "pubsub-guard: the node name \"/a b\" holds white space or a control character, which no token scope (a space-separated list of node names) can express\n",
        ),
        (
            "*",
            "pubsub-guard: \"*\" is the scope entry that covers every node; it cannot name one\n",
        ),
    ];
    for (name, message) in cases {
        let out = guard(
            &db,
            &[
                "node",
                "create",
                name,
                "--open",
                "--publisher",
                "l@localhost",
            ],
        );
        assert!(!out.ok);
        assert_eq!(out.stderr, message);
    }
    let out = guard(
        &db,
        &["node", "create", "/m", "--open", "--publisher", "a@b@c"],
    );
    assert_eq!(
        out.stderr,
        "pubsub-guard: --publisher \"a@b@c\" is not a JID: second @ found before parsing the resource\n"
    );
    // Publishers are stored normalized.
    assert!(
        guard(
            &db,
            &[
                "node",
                "create",
                "/m",
                "--open",
                "--publisher",
                "News@LocalHost/desk"
            ]
        )
        .ok
    );
    let list = guard(&db, &["node", "list"]);
    assert!(
        list.stdout
            .contains("/m\topen\t-\t10000\t30d\tnews@localhost\n"),
        "{}",
        list.stdout
    );
}

#[test]
fn run_needs_a_secret_and_a_readable_config() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("authz.sqlite");
    let out = guard(&db, &["run"]);
    assert!(!out.ok);
    assert!(
        out.stderr.ends_with(
            "pubsub-guard: no component secret: set `secret` in the config or GUARD_SECRET\n"
        ),
        "{}",
        out.stderr
    );
    let config = dir.path().join("guard.toml");
    std::fs::write(&config, "component = \"pubsub.localhost\"\nsecrt = \"x\"\n").unwrap();
    let out = guard(&db, &["--config", config.to_str().unwrap(), "run"]);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("is not valid: TOML parse error at line 2")
            && out.stderr.contains("unknown field `secrt`"),
        "{}",
        out.stderr
    );
    let out = guard(&db, &["--help"]);
    assert!(out.ok);
    for command in ["run", "node", "subscription"] {
        assert!(out.stdout.contains(command), "{}", out.stdout);
    }
}

/// Subscriptions as the guard stores them: two owners' nodes, two consumers.
fn subscribed(db: &Path) {
    use pubsub_guard::storage::{Access, DbStorage, Node, Storage, Subscription};
    let storage = DbStorage::open(db).unwrap();
    for owner in ["alice", "bob"] {
        storage
            .create_node(&Node {
                name: format!("/location/{owner}"),
                owner: Some(owner.into()),
                access: Access::OAuth,
                publishers: vec!["loc@localhost".into()],
                max_items: 10,
                max_age_secs: 0,
                send_last_published_item: false,
                created_at: 1_800_000_000,
            })
            .unwrap();
    }
    for (node, jid, consumer) in [
        ("/location/alice", "app@localhost/r", "k1"),
        ("/location/alice", "other@localhost", "k2"),
        ("/location/bob", "app@localhost/r", "k1"),
    ] {
        storage
            .subscribe(&Subscription {
                node: node.into(),
                jid: jid.into(),
                subid: format!("s-{consumer}"),
                token: Some(format!("t-{consumer}")),
                consumer_key: Some(consumer.into()),
                created_at: 1_800_000_000,
            })
            .unwrap();
    }
}

#[test]
fn subscriptions_are_listed_and_ended_per_node_consumer_and_owner() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("authz.sqlite");
    subscribed(&db);
    let list = |args: &[&str]| {
        let mut all = vec!["subscription", "list"];
        all.extend_from_slice(args);
        let out = guard(&db, &all);
        assert!(out.ok, "{}", out.stderr);
        out.stdout
    };
    assert_eq!(
        list(&[]),
        "/location/alice\tapp@localhost/r\ts-k1\tk1\t1800000000\n\
         /location/alice\tother@localhost\ts-k2\tk2\t1800000000\n\
         /location/bob\tapp@localhost/r\ts-k1\tk1\t1800000000\n"
    );
    assert_eq!(list(&["--owner", "bob"]).lines().count(), 1);
    assert_eq!(list(&["--consumer", "k1"]).lines().count(), 2);
    assert_eq!(
        list(&["--consumer", "k1", "--owner", "alice"]),
        "/location/alice\tapp@localhost/r\ts-k1\tk1\t1800000000\n"
    );
    assert_eq!(list(&["--node", "/location/nobody"]), "");
    let out = guard(&db, &["subscription", "end"]);
    assert!(!out.ok);
    assert_eq!(
        out.stderr,
        "pubsub-guard: say whose: --node, --consumer and/or --owner\n"
    );
    let out = guard(&db, &["subscription", "end", "--owner", "carol"]);
    assert!(!out.ok);
    assert_eq!(out.stderr, "pubsub-guard: no subscription matched\n");
    let out = guard(&db, &["subscription", "end", "--consumer", "k1"]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "2 subscription(s) to end (change 1): the running guard ends them and tells each \
         subscriber\n"
    );
    // The change the running guard follows, and the ledger's entry.
    let store = shared_store::Store::open(&db).unwrap();
    let change = store.changes_since(0, 10).unwrap().remove(0);
    assert_eq!(
        (
            change.kind.as_str(),
            change.consumer_key.as_deref(),
            change.node
        ),
        ("subscriptions-ended", Some("k1"), None)
    );
    let entries = store
        .ledger(&shared_store::authz::ledger::LedgerFilter::default(), 0, 10)
        .unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.kind.as_str(), e.actor.as_str(), e.detail.as_str()))
            .collect::<Vec<_>>(),
        vec![("subscriptions-ended", "admin", "2 subscriptions to end")]
    );
}
