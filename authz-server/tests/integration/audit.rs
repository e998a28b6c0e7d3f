//! The admin CLI's audit commands through the built binary: `audit verify` and `audit
//! show`, `token ledger`, and `subscription list` and `end`.

use shared_store::db::{Database, Location};
use shared_store::guard::{Access, DbStorage, Node, Storage, Subscription};

use super::cli;

/// Runs a CLI command that must succeed; its standard output.
fn ok(db: &std::path::Path, args: &[&str]) -> String {
    let (success, out, err) = cli(db, args, "");
    assert!(success, "{args:?}: {err}");
    out
}

/// A consumer and an owner, a grant by the CLI, then its revocation: (consumer key, token
/// id).
fn granted_and_revoked(db: &std::path::Path) -> (String, String) {
    assert!(cli(db, &["owner", "add", "alice"], "a password\n").0);
    let out = ok(db, &["consumer", "add", "--name", "FindMeNow"]);
    let key = out
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("consumer_key=")
        .to_owned();
    let out = ok(
        db,
        &[
            "token",
            "grant",
            "--owner",
            "alice",
            "--consumer",
            &key,
            "--scope",
            "/location/alice",
        ],
    );
    let id = out
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("id=")
        .to_owned();
    ok(db, &["token", "revoke", "--id", &id]);
    (key, id)
}

/// Runs `sql` on the database with the ledger's triggers dropped, as someone with write
/// access to the file could.
fn tamper(db: &std::path::Path, sql: &str) {
    let database = Database::open(&Location::Sqlite(db.to_owned())).unwrap();
    database
        .write(|tx| {
            tx.batch("DROP TRIGGER audit_ledger_no_update; DROP TRIGGER audit_ledger_no_delete;")?;
            tx.batch(sql)
        })
        .unwrap();
}

#[test]
fn verify_prints_the_head_and_names_the_entry_that_was_changed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("authz.sqlite");
    let (key, id) = granted_and_revoked(&db);
    let out = ok(&db, &["audit", "verify"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "the ledger's 2 entries chain");
    let head = lines[1].strip_prefix("head: ").unwrap().to_owned();
    assert!(head.starts_with("2:") && head.len() == 66, "{head}");
    assert!(ok(&db, &["audit", "verify", "--head", &head]).starts_with("the ledger's 2"));
    // Entries, filtered.
    let shown = ok(&db, &["audit", "show", "--token", &id]);
    let fields: Vec<Vec<&str>> = shown.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(fields.len(), 2, "{shown}");
    assert_eq!(
        fields[0][2..],
        [
            "granted",
            "admin",
            "alice",
            key.as_str(),
            id.as_str(),
            "-",
            "scope: /location/alice"
        ]
    );
    assert_eq!(
        fields[1][2..],
        [
            "revoked",
            "admin",
            "alice",
            key.as_str(),
            id.as_str(),
            "-",
            "nothing was delivered under it"
        ]
    );
    assert_eq!(
        ok(&db, &["audit", "show", "--kind", "revoked"])
            .lines()
            .count(),
        1
    );
    assert_eq!(
        ok(&db, &["audit", "show", "--since", "1"]).lines().count(),
        1
    );
    let (success, _, err) = cli(&db, &["audit", "show", "--kind", "stolen"], "");
    assert!(!success);
    assert!(
        err.contains("--kind \"stolen\": one of granted, narrowed"),
        "{err}"
    );
    let (success, _, err) = cli(&db, &["audit", "verify", "--head", "2:xyz"], "");
    assert!(!success);
    assert_eq!(
        err,
        "authz-server: --head \"2:xyz\": give the entry and its hash as SEQ:HASH\n"
    );
    // A changed scope in the grant's entry.
    tamper(
        &db,
        "UPDATE audit_ledger SET detail = 'scope: *' WHERE seq = 1",
    );
    let (success, out, err) = cli(&db, &["audit", "verify"], "");
    assert!(!success, "{out}");
    assert_eq!(
        err,
        "authz-server: the ledger is broken at entry 1: entry 1 does not match its hash: it \
         was changed, or an entry before it was\n"
    );
}

#[test]
fn a_cut_tail_shows_against_the_head_kept_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("authz.sqlite");
    granted_and_revoked(&db);
    let out = ok(&db, &["audit", "verify"]);
    let head = out
        .lines()
        .nth(1)
        .unwrap()
        .strip_prefix("head: ")
        .unwrap()
        .to_owned();
    tamper(&db, "DELETE FROM audit_ledger WHERE seq = 2");
    // Without the head, the shorter ledger still chains.
    assert!(ok(&db, &["audit", "verify"]).starts_with("the ledger's 1 entries chain"));
    let (success, _, err) = cli(&db, &["audit", "verify", "--head", &head], "");
    assert!(!success);
    assert_eq!(
        err,
        "authz-server: the ledger is broken at entry 2: entry 2, whose hash was recorded, is \
         gone: the ledger has 1 entries\n"
    );
}

/// Subscriptions as the guard stores them: two owners' nodes, two consumers.
fn subscribed(db: &std::path::Path) -> DbStorage {
    let storage = DbStorage::open(Location::Sqlite(db.to_owned())).unwrap();
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
                subid: "s".into(),
                token: Some(format!("t-{consumer}")),
                consumer_key: Some(consumer.into()),
                created_at: 1_800_000_000,
            })
            .unwrap();
    }
    storage
}

#[test]
fn subscriptions_are_listed_and_ended_per_node_consumer_and_owner() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("authz.sqlite");
    let _storage = subscribed(&db);
    let list = |args: &[&str]| {
        let mut all = vec!["subscription", "list"];
        all.extend_from_slice(args);
        ok(&db, &all)
    };
    assert_eq!(
        list(&[]),
        "/location/alice\tapp@localhost/r\tk1\t2027-01-15T08:00:00Z\n\
         /location/alice\tother@localhost\tk2\t2027-01-15T08:00:00Z\n\
         /location/bob\tapp@localhost/r\tk1\t2027-01-15T08:00:00Z\n"
    );
    assert_eq!(list(&["--owner", "bob"]).lines().count(), 1);
    assert_eq!(list(&["--consumer", "k1"]).lines().count(), 2);
    assert_eq!(
        list(&["--consumer", "k1", "--owner", "alice"])
            .lines()
            .count(),
        1
    );
    assert_eq!(list(&["--node", "/location/nobody"]), "");
    let (success, _, err) = cli(&db, &["subscription", "end"], "");
    assert!(!success);
    assert_eq!(
        err,
        "authz-server: say whose: --node, --consumer and/or --owner\n"
    );
    let (success, _, err) = cli(&db, &["subscription", "end", "--owner", "carol"], "");
    assert!(!success);
    assert_eq!(err, "authz-server: no subscription matched\n");
    let out = ok(&db, &["subscription", "end", "--consumer", "k1"]);
    assert_eq!(
        out,
        "2 subscription(s) to end (change 1): the guard ends them and tells each subscriber\n"
    );
    // The change for the guard, and the ledger's entry.
    let changes = ok(&db, &["changes"]);
    assert!(
        changes.starts_with("1\tsubscriptions-ended\t-\tk1\t-\t"),
        "{changes}"
    );
    let shown = ok(&db, &["audit", "show", "--kind", "subscriptions-ended"]);
    let fields: Vec<&str> = shown.trim_end().split('\t').collect();
    assert_eq!(
        fields[2..],
        [
            "subscriptions-ended",
            "admin",
            "-",
            "k1",
            "-",
            "-",
            "2 subscriptions to end"
        ]
    );
}

#[test]
fn a_grant_s_ledger_shows_its_state_deliveries_and_entries() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("authz.sqlite");
    let (_key, id) = granted_and_revoked(&db);
    let out = ok(&db, &["token", "ledger", &id]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("grant {id}: alice to FindMeNow ({_key})"));
    assert_eq!(lines[1], "scope: /location/alice");
    assert!(lines[3].starts_with("state: revoked at "), "{out}");
    assert_eq!(lines[4], "deliveries: none");
    assert_eq!(lines.len(), 7, "{out}");
    let (success, _, err) = cli(&db, &["token", "ledger", "999"], "");
    assert!(!success);
    assert_eq!(err, "authz-server: no access token with id 999\n");
}
