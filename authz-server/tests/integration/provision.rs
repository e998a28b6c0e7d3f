//! `authz-server import` and `export` through the built binary.

use std::fmt::Write as _;

use super::cli;

/// The JSON lines of one consumer and `n` owners, each with a node and a grant; owner 1
/// has a plain password, the others `hash`.
fn day(n: usize, hash: &str) -> String {
    let mut text = String::from(
        r#"{"kind":"consumer","key":"agg","secret":"consumer-secret-0123","name":"Aggregator","jid":"aggregator@localhost"}"#,
    );
    text.push('\n');
    for i in 1..=n {
        let password = if i == 1 {
            r#""password":"correct horse""#.to_owned()
        } else {
            format!(r#""password_hash":"{hash}""#)
        };
        writeln!(text, r#"{{"kind":"owner","name":"u{i}",{password}}}"#).unwrap();
        writeln!(
            text,
            r#"{{"kind":"node","name":"/photos/u{i}","owner":"u{i}","publishers":["site@localhost"]}}"#
        )
        .unwrap();
        // A blank line now and then.
        text.push('\n');
        writeln!(
            text,
            r#"{{"kind":"grant","token":"t{i}","secret":"token-secret-{i:08}","consumer":"agg","owner":"u{i}","scope":"/photos/u{i}"}}"#
        )
        .unwrap();
    }
    text
}

/// One Argon2id hash, made by the binary itself (`owner add` into a scratch database).
fn argon2_hash(dir: &std::path::Path) -> String {
    let scratch = dir.join("scratch.sqlite");
    assert!(cli(&scratch, &["owner", "add", "x"], "scratch password\n").0);
    let (ok, out, _) = cli(&scratch, &["export"], "");
    assert!(ok);
    let line = out
        .lines()
        .find(|l| l.contains(r#""kind":"owner""#))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["password_hash"].as_str().unwrap().to_owned()
}

#[test]
fn an_import_stopped_by_a_bad_line_goes_on_when_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("authz.sqlite");
    let hash = argon2_hash(dir.path());
    let good = day(30, &hash);
    // Line 63 (owner 16's node) names an owner that does not exist.
    let mut lines: Vec<&str> = good.lines().collect();
    let bad_node =
        r#"{"kind":"node","name":"/photos/u16","owner":"nobody","publishers":["site@localhost"]}"#;
    assert!(lines[62].contains("/photos/u16"));
    lines[62] = bad_node;
    let broken = lines.join("\n") + "\n";
    let file = dir.path().join("day.jsonl");
    std::fs::write(&file, &broken).unwrap();

    let (ok, out, err) = cli(
        &db,
        &["import", "--batch", "25", file.to_str().unwrap()],
        "",
    );
    assert!(!ok, "{out}");
    assert_eq!(
        err.trim_end(),
        "authz-server: line 63: the node /photos/u16 names the owner nobody, who does not exist (owners come first); \
         the lines before line 34 are imported; once this is fixed, the same import goes on from there (what is there already is skipped)"
    );
    // The batch before it is in: its 25 records (lines 1–33) are the consumer and owners
    // 1–8 with their nodes and grants.
    let (_, owners, _) = cli(&db, &["owner", "list"], "");
    assert_eq!(owners.lines().count(), 8, "{owners}");

    // Fixed, the same file from the start: what is there is skipped.
    std::fs::write(&file, &good).unwrap();
    let (ok, out, err) = cli(
        &db,
        &["import", "--batch", "25", file.to_str().unwrap()],
        "",
    );
    assert!(ok, "{err}");
    let summary = out.trim_end();
    assert!(summary.starts_with("imported 121 lines in "), "{summary}");
    assert!(
        summary.ends_with(
            ": consumers 0 written, 1 unchanged; owners 22 written, 8 unchanged; \
             nodes 22 written, 8 unchanged; grants 22 written, 8 unchanged"
        ),
        "{summary}"
    );
    let (_, tokens, _) = cli(&db, &["token", "list", "--owner", "u30"], "");
    assert!(
        tokens.contains("\tt30\towner=u30\tconsumer=agg\tscope=/photos/u30\tlive"),
        "{tokens}"
    );
    // The plain password was hashed, and a third run (the plain password again) changes
    // nothing: the stored hash is hers.
    let (ok, out, _) = cli(&db, &["import", "-"], &good);
    assert!(ok);
    assert!(
        out.trim_end().ends_with(
            ": consumers 0 written, 1 unchanged; owners 0 written, 30 unchanged; \
         nodes 0 written, 30 unchanged; grants 0 written, 30 unchanged"
        ),
        "{out}"
    );
}

#[test]
fn an_export_is_private_and_imports_elsewhere_to_the_same_export() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("authz.sqlite");
    let hash = argon2_hash(dir.path());
    assert!(cli(&db, &["import"], &day(5, &hash)).0);
    let file = dir.path().join("export.jsonl");
    let (ok, _, err) = cli(&db, &["export", "--output", file.to_str().unwrap()], "");
    assert!(ok, "{err}");
    assert_eq!(
        err.trim_end(),
        "exported 1 consumers, 5 owners, 5 nodes, 5 grants"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // An existing file is not overwritten.
    let (ok, _, err) = cli(&db, &["export", "--output", file.to_str().unwrap()], "");
    assert!(!ok);
    assert!(
        err.starts_with(&format!("authz-server: cannot create {}: ", file.display())),
        "{err}"
    );

    let exported = std::fs::read_to_string(&file).unwrap();
    assert_eq!(exported.lines().count(), 16);
    let copy = dir.path().join("copy.sqlite");
    let (ok, _, err) = cli(&copy, &["import", file.to_str().unwrap()], "");
    assert!(ok, "{err}");
    let (ok, again, _) = cli(&copy, &["export"], "");
    assert!(ok);
    assert_eq!(again, exported);
}

#[test]
fn bad_lines_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("authz.sqlite");
    let refused = |input: &str| {
        let (ok, _, err) = cli(&db, &["import"], input);
        assert!(!ok);
        err.trim_end().to_owned()
    };
    assert_eq!(
        refused("\n{\"kind\":\"owner\",\"nmae\":\"u1\"}\n"),
        "authz-server: line 2: unknown field `nmae`, expected one of `name`, `password_hash`, `password`; nothing was imported"
    );
    assert_eq!(
        refused("{\"kind\":\"user\"}\n"),
        "authz-server: line 1: unknown variant `user`, expected one of `consumer`, `owner`, `node`, `grant` (column 14); nothing was imported"
    );
    assert_eq!(
        refused("{\"kind\":\"owner\",\"name\":\"u1\",\"password_hash\":\"plain\"}\n"),
        "authz-server: line 1: the owner u1: the password_hash is not a PHC string (password hash string missing field); nothing was imported"
    );
    let long = format!(
        "{{\"kind\":\"owner\",\"name\":\"{}\"}}\n",
        "a".repeat(1 << 20)
    );
    assert_eq!(
        refused(&long),
        "authz-server: line 1: longer than 1048576 bytes; nothing was imported"
    );
    assert_eq!(
        refused("{\"kind\":\"owner\",\"name\":\"u1\",\"password\":\"short\"}\n"),
        "authz-server: line 1: the owner u1: the password must be at least 8 characters; nothing was imported"
    );
}
