//! The connection layer on both engines.

use super::*;

/// A database of each engine (PostgreSQL when installed, see
/// [`testkit_postgres::optional_shared`]); `name` must be unique among the crate's tests.
pub(crate) fn each_engine(name: &str) -> Vec<(tempfile::TempDir, Location)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Location::Sqlite(dir.path().join("store.sqlite"));
    let mut out = vec![(dir, sqlite)];
    if let Some(cluster) = testkit_postgres::optional_shared() {
        let url = cluster.new_database(name).unwrap();
        out.push((tempfile::tempdir().unwrap(), Location::Postgres(url)));
    }
    out
}

fn table(db: &Database) {
    db.write(|tx| {
        tx.batch(
            "CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT NOT NULL, b BYTEA, maybe TEXT)"
                .replace(
                    "BYTEA",
                    if tx.engine() == Engine::Sqlite {
                        "BLOB"
                    } else {
                        "BYTEA"
                    },
                )
                .as_str(),
        )
    })
    .unwrap();
}

#[test]
fn values_round_trip_on_both_engines() {
    for (_dir, location) in each_engine("db_values") {
        let db = Database::open(&location).unwrap();
        table(&db);
        db.write(|tx| {
            assert_eq!(
                tx.execute(
                    "INSERT INTO t (k, n, b, maybe) VALUES (?1, ?2, ?3, ?4)",
                    args!["a'?1", i64::MIN, Value::Blob(vec![0, 255]), None::<String>],
                )?,
                1
            );
            tx.execute(
                "INSERT INTO t (k, n, maybe) VALUES (?1, ?2, ?3)",
                args!["b", u64::MAX, "text"],
            )
        })
        .unwrap();
        let rows = db
            .read(|tx| {
                tx.query_map("SELECT k, n, b, maybe, n > 0 FROM t ORDER BY k", &[], |r| {
                    Ok((
                        r.get::<String>(0)?,
                        r.get::<i64>(1)?,
                        r.get::<Option<Vec<u8>>>(2)?,
                        r.get::<Option<String>>(3)?,
                        r.get::<bool>(4)?,
                    ))
                })
            })
            .unwrap();
        assert_eq!(
            rows,
            [
                ("a'?1".into(), i64::MIN, Some(vec![0, 255]), None, false),
                ("b".into(), i64::MAX, None, Some("text".into()), true),
            ],
            "{location}"
        );
        let missing = db
            .read(|tx| {
                tx.query_opt("SELECT n FROM t WHERE k = ?1", args!["c"], |r| {
                    r.get::<i64>(0)
                })
            })
            .unwrap();
        assert_eq!(missing, None);
        let wrong = db
            .read(|tx| {
                tx.query_one("SELECT k FROM t WHERE k = ?1", args!["b"], |r| {
                    r.get::<i64>(0)
                })
            })
            .unwrap_err();
        assert_eq!(
            wrong.message,
            "column 0 holds Text(\"b\"), which is not a i64"
        );
        assert!(db.read(|tx| tx.table_exists("t")).unwrap());
        assert!(!db.read(|tx| tx.table_exists("nothing")).unwrap());
    }
}

#[test]
fn a_failed_write_leaves_nothing() {
    for (_dir, location) in each_engine("db_rollback") {
        let db = Database::open(&location).unwrap();
        table(&db);
        let failed: Result<(), BackendError> = db.write(|tx| {
            tx.execute("INSERT INTO t (k, n) VALUES (?1, ?2)", args!["x", 1_i64])?;
            Err(BackendError::other("the caller gave up"))
        });
        assert_eq!(failed.unwrap_err().message, "the caller gave up");
        let count = db
            .read(|tx| tx.query_one("SELECT COUNT(*) FROM t", &[], |r| r.get::<i64>(0)))
            .unwrap();
        assert_eq!(count, 0, "{location}");
    }
}

/// Writers in different connections read, then write what they read plus one: without
/// one writer at a time, increments are lost.
#[test]
fn writers_take_turns_across_connections() {
    for (_dir, location) in each_engine("db_turns") {
        let db = Database::open(&location).unwrap();
        table(&db);
        db.write(|tx| tx.execute("INSERT INTO t (k, n) VALUES ('c', 0)", &[]))
            .unwrap();
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let location = location.clone();
                std::thread::spawn(move || {
                    let db = Database::open(&location).unwrap();
                    for _ in 0..100 {
                        db.write(|tx| {
                            let n: i64 =
                                tx.query_one("SELECT n FROM t WHERE k = 'c'", &[], |r| r.get(0))?;
                            std::thread::yield_now();
                            tx.execute("UPDATE t SET n = ?1 WHERE k = 'c'", args![n + 1])
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = db
            .read(|tx| tx.query_one("SELECT n FROM t WHERE k = 'c'", &[], |r| r.get::<i64>(0)))
            .unwrap();
        assert_eq!(n, 300, "{location}");
    }
}

#[test]
fn parameters_become_numbered_dollars_outside_quotes() {
    assert_eq!(
        pg::translate("SELECT ?1, '?2', \"a?\" FROM t WHERE a = ?12 AND b = ? AND c = ?"),
        "SELECT $1, '?2', \"a?\" FROM t WHERE a = $12 AND b = $13 AND c = $14"
    );
    assert_eq!(pg::translate("VALUES (?, ?)"), "VALUES ($1, $2)");
}

/// The last handle to a store is often dropped on an async runtime's thread (a server's state
/// when it stops); closing the PostgreSQL client there must not panic.
#[test]
fn a_postgres_database_can_be_dropped_on_an_async_runtime() {
    let Some(cluster) = testkit_postgres::optional_shared() else {
        return;
    };
    let url = cluster.new_database("db_drop_async").unwrap();
    let db = Database::open(&Location::Postgres(url)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async move { drop(db) });
}

#[test]
fn the_observer_is_told_each_call_and_each_group_commit() {
    for (_dir, location) in each_engine("db_observer") {
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let observer: Observer = {
            let seen = std::sync::Arc::clone(&seen);
            std::sync::Arc::new(move |op, _took| lock(&seen).push(op))
        };
        let db = Database::open(&location).unwrap().with_observer(observer);
        table(&db);
        db.read(|tx| tx.query_opt("SELECT k FROM t", &[], |_| Ok(())))
            .unwrap();
        db.atomic(|tx| tx.execute("DELETE FROM t", &[])).unwrap();
        let grouped = db.begin_group().unwrap();
        db.write(|tx| tx.execute("DELETE FROM t", &[])).unwrap();
        db.end_group().unwrap();
        assert_eq!(grouped, db.engine() == Engine::Sqlite);
        let expected = vec![
            Operation::Write,
            Operation::Read,
            Operation::Atomic,
            Operation::Write,
            Operation::GroupCommit,
        ];
        assert_eq!(*lock(&seen), expected);
        assert_eq!(Operation::GroupCommit.as_str(), "group-commit");
    }
}
