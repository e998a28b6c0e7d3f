//! The admin CLI's audit commands through the built binary: `audit verify` and `audit
//! show`, and `token ledger`.

use shared_store::db::{Database, Location};

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
