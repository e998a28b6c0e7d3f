use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;

use oauth_xmpp::replay::{NonceKey, NonceOutcome, NonceStore};
use oauth_xmpp::{CredentialStore, Scope, TokenKind};

use super::*;
use crate::db::Engine;
use crate::db::tests::each_engine;

/// A new store on each engine (see [`each_engine`]; `name` is unique among the tests), with
/// where it is, to open it again.
fn stores(name: &str) -> Vec<(tempfile::TempDir, Location, Store)> {
    each_engine(name)
        .into_iter()
        .map(|(dir, location)| {
            let store = Store::open(&location).unwrap();
            (dir, location, store)
        })
        .collect()
}

/// How many migrations this program knows for the store's engine.
fn known(store: &Store) -> i64 {
    match store.db.engine() {
        Engine::Sqlite => schema::MIGRATIONS.len() as i64,
        Engine::Postgres => schema::POSTGRES.len() as i64,
    }
}

/// A stored password hash (the authorization server makes real ones with Argon2id).
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaA";

fn seeded(store: &Store) -> String {
    store.add_owner("alice", HASH, 100).unwrap();
    store.add_consumer("FindMeNow", None, None, 100).unwrap().0
}

#[test]
fn file_is_private_and_migrations_run_once() {
    for (_dir, location, store) in stores("authz_migrations") {
        assert_eq!(store.schema_version().unwrap(), known(&store), "{location}");
        drop(store);
        let again = Store::open(&location).unwrap();
        assert_eq!(again.schema_version().unwrap(), known(&again), "{location}");
        #[cfg(unix)]
        if let Some(path) = location.path() {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}

/// Processes that start at once on a new database take turns to migrate it: each finds it
/// either empty or complete.
#[test]
fn stores_opened_at_once_migrate_in_turn() {
    for (_dir, location) in each_engine("authz_open_at_once") {
        let barrier = Arc::new(Barrier::new(3));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (location, barrier) = (location.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    let store = Store::open(&location).unwrap();
                    store.schema_version().unwrap() == known(&store)
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap(), "{location}");
        }
    }
}

#[test]
fn a_newer_schema_is_refused() {
    for (_dir, location, store) in stores("authz_too_new") {
        let known = known(&store);
        drop(store);
        let db = Database::open(&location).unwrap();
        db.write(|tx| match tx.engine() {
            Engine::Sqlite => tx.batch("PRAGMA user_version = 99"),
            Engine::Postgres => tx
                .execute(
                    "UPDATE schema_versions SET version = 99 WHERE part = 'authz'",
                    &[],
                )
                .map(drop),
        })
        .unwrap();
        let err = Store::open(&location).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("the database is at schema version 99; this program knows up to {known}"),
            "{location}"
        );
    }
}

#[test]
fn owners_keep_the_hash_they_are_given_and_names_are_unique() {
    for (_dir, location, store) in stores("authz_owners") {
        seeded(&store);
        assert_eq!(store.password_hash("alice").unwrap().as_deref(), Some(HASH));
        assert_eq!(store.password_hash("bob").unwrap(), None);
        assert!(matches!(
            store.add_owner("alice", HASH, 1),
            Err(StoreError::Exists(_))
        ));
        assert!(matches!(
            store.add_owner("al ice", HASH, 1),
            Err(StoreError::Refused(_))
        ));
        assert!(matches!(
            store.add_owner("bob", "", 1),
            Err(StoreError::Password(_))
        ));
        // Names sort byte by byte on both engines (PostgreSQL's "C" collation), whatever
        // the server's locale.
        store.add_owner("Bob", HASH, 1).unwrap();
        let names: Vec<String> = store
            .owners()
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["Bob", "alice"], "{location}");
    }
}

#[test]
fn the_flow_issues_one_access_token_per_verifier() {
    for (_dir, _location, store) in stores("authz_flow") {
        let consumer = seeded(&store);
        let (temp, _secret) = store
            .create_temporary(
                &consumer,
                "oob",
                &Scope::parse("/location/alice /photos/alice/"),
                600,
                1000,
            )
            .unwrap();
        assert_eq!(
            store.token(&temp).unwrap().unwrap().kind,
            TokenKind::Temporary
        );
        // Narrowing is allowed, widening is not.
        assert!(matches!(
            store.approve(&temp, "alice", &Scope::parse("*"), 1001),
            Err(StoreError::Refused(_))
        ));
        let verifier = store
            .approve(&temp, "alice", &Scope::parse("/location/alice"), 1001)
            .unwrap();
        assert!(matches!(
            store.exchange(&temp, "wrong", "n0", 300, 1002),
            Err(StoreError::Exchange(ExchangeRefused::WrongVerifier))
        ));
        assert_eq!(store.exchange_retry(&temp, 300, 1002).unwrap(), None);
        let grant = store.exchange(&temp, &verifier, "n1", 300, 1002).unwrap();
        assert_eq!(
            (grant.owner.as_str(), grant.scope.to_string().as_str()),
            ("alice", "/location/alice")
        );
        // Within the retry window the same verifier gets the same token back (profile P6),
        // and the nonce of the first exchange is known for a byte-for-byte retry.
        assert_eq!(
            store.exchange_retry(&temp, 300, 1302).unwrap().as_deref(),
            Some("n1")
        );
        let again = store.exchange(&temp, &verifier, "n2", 300, 1302).unwrap();
        assert_eq!(
            (again.id, again.token.as_str(), again.secret.expose()),
            (grant.id, grant.token.as_str(), grant.secret.expose())
        );
        assert!(matches!(
            store.exchange(&temp, "wrong", "n3", 300, 1003),
            Err(StoreError::Exchange(ExchangeRefused::Used))
        ));
        assert_eq!(store.exchange_retry(&temp, 300, 1303).unwrap(), None);
        let err = store
            .exchange(&temp, &verifier, "n4", 300, 1303)
            .unwrap_err();
        assert!(matches!(err, StoreError::Exchange(ExchangeRefused::Used)));
        assert_eq!(
            err.to_string(),
            "the temporary token was already exchanged for an access token"
        );
        let record = store.token(&temp).unwrap().unwrap();
        assert!(
            record.used && !record.revoked,
            "used temporary credentials are marked used"
        );
        let record = store.token(&grant.token).unwrap().unwrap();
        assert_eq!(
            (record.kind, record.owner.as_deref()),
            (TokenKind::Access, Some("alice"))
        );
    }
}

#[test]
fn expired_temporary_credentials_cannot_be_approved() {
    for (_dir, _location, store) in stores("authz_expired_temporary") {
        let consumer = seeded(&store);
        let (temp, _) = store
            .create_temporary(&consumer, "oob", &Scope::all(), 600, 1000)
            .unwrap();
        let err = store
            .approve(&temp, "alice", &Scope::all(), 1600)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "this request has expired: ask the application to start again"
        );
    }
}

#[test]
fn revocations_and_expiries_are_logged_once_in_order() {
    for (_dir, _location, store) in stores("authz_log_order") {
        let consumer = seeded(&store);
        let a = store
            .grant(
                "alice",
                &consumer,
                &Scope::parse("/location/alice"),
                None,
                10,
            )
            .unwrap();
        let b = store
            .grant(
                "alice",
                &consumer,
                &Scope::parse("/photos/alice/"),
                Some(50),
                10,
            )
            .unwrap();
        assert_eq!(store.revoke_tokens(&RevokeBy::Id(a.id), 20).unwrap(), 1);
        assert_eq!(
            store.revoke_tokens(&RevokeBy::Id(a.id), 21).unwrap(),
            0,
            "already revoked"
        );
        assert_eq!(store.log_expiries(60).unwrap(), 1);
        assert_eq!(store.log_expiries(61).unwrap(), 0);
        let kinds: Vec<(ChangeKind, Option<i64>)> = store
            .changes_since(0, 100)
            .unwrap()
            .into_iter()
            .map(|c| (c.kind, c.token_id))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (ChangeKind::Granted, Some(a.id)),
                (ChangeKind::Granted, Some(b.id)),
                (ChangeKind::TokenRevoked, Some(a.id)),
                (ChangeKind::TokenExpired, Some(b.id)),
            ]
        );
        let last = store.last_change().unwrap();
        assert!(store.changes_since(last, 10).unwrap().is_empty());
    }
}

#[test]
fn revoking_a_consumer_revokes_its_tokens() {
    for (_dir, _location, store) in stores("authz_revoke_consumer") {
        let consumer = seeded(&store);
        store
            .grant("alice", &consumer, &Scope::all(), None, 10)
            .unwrap();
        assert_eq!(store.revoke_consumer(&consumer, 20).unwrap(), 1);
        assert!(
            store
                .consumer(&consumer)
                .unwrap()
                .unwrap()
                .revoked_at
                .is_some()
        );
        let kinds: Vec<ChangeKind> = store
            .changes_since(1, 10)
            .unwrap()
            .into_iter()
            .map(|c| c.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![ChangeKind::ConsumerRevoked, ChangeKind::TokenRevoked]
        );
        assert!(matches!(
            store.grant("alice", &consumer, &Scope::all(), None, 30),
            Err(StoreError::Refused(_))
        ));
    }
}

#[test]
fn nonces_are_shared_between_two_connections_on_one_database() {
    for (_dir, location, store) in stores("authz_nonces") {
        let other = Store::open(&location).unwrap();
        let key = NonceKey {
            consumer_key: "c",
            token: "t",
            timestamp: 1000,
            nonce: "n",
        };
        assert_eq!(
            store.check_and_record(&key, 1300, 1000).unwrap(),
            NonceOutcome::Fresh
        );
        assert_eq!(
            other.check_and_record(&key, 1300, 1001).unwrap(),
            NonceOutcome::Replayed
        );
        drop(store);
        let reopened = Store::open(&location).unwrap();
        assert_eq!(
            reopened.check_and_record(&key, 1300, 1002).unwrap(),
            NonceOutcome::Replayed,
            "a restart does not forget"
        );
        assert_eq!(
            reopened.check_and_record(&key, 1700, 1400).unwrap(),
            NonceOutcome::Fresh,
            "expired"
        );
        // Expired nonces are deleted (once a second), so the table stays bounded.
        let other_key = NonceKey { nonce: "m", ..key };
        assert_eq!(
            reopened.check_and_record(&other_key, 2300, 2000).unwrap(),
            NonceOutcome::Fresh
        );
        let rows: i64 = reopened
            .read(|tx| Ok(tx.query_one("SELECT COUNT(*) FROM nonces", &[], |r| r.get(0))?))
            .unwrap();
        assert_eq!(rows, 1, "{location}");
    }
}

/// Two processes (two stores, each with its own connection) check the same nonces at the
/// same moment: each is fresh to exactly one of them.
#[test]
fn a_nonce_raced_by_two_stores_is_fresh_once() {
    const NONCES: usize = 50;
    for (_dir, location, store) in stores("authz_nonce_race") {
        let stores = [Arc::new(store), Arc::new(Store::open(&location).unwrap())];
        let barrier = Arc::new(Barrier::new(stores.len()));
        let threads: Vec<_> = stores
            .iter()
            .map(|store| {
                let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let mut fresh = Vec::new();
                    for i in 0..NONCES {
                        let nonce = format!("n{i}");
                        let key = NonceKey {
                            consumer_key: "c",
                            token: "t",
                            timestamp: 1000,
                            nonce: &nonce,
                        };
                        barrier.wait();
                        if store.check_and_record(&key, 1300, 1000).unwrap() == NonceOutcome::Fresh
                        {
                            fresh.push(i);
                        }
                    }
                    fresh
                })
            })
            .collect();
        let mut fresh: Vec<usize> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        fresh.sort_unstable();
        assert_eq!(fresh, (0..NONCES).collect::<Vec<_>>(), "{location}");
    }
}

/// On PostgreSQL, a change logged wakes a follower at once; SQLite offers no listener (the
/// guard polls).
#[test]
fn a_logged_change_wakes_the_watcher() {
    for (_dir, _location, store) in stores("authz_watch") {
        let consumer = seeded(&store);
        let grant = store
            .grant("alice", &consumer, &Scope::all(), None, 10)
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let listener = store
            .watch_changes(Box::new(move || {
                let _ = tx.send(());
            }))
            .unwrap();
        let Some(listener) = listener else {
            assert_eq!(store.db.engine(), Engine::Sqlite);
            continue;
        };
        assert!(rx.try_recv().is_err(), "nothing was logged since");
        store.revoke_tokens(&RevokeBy::Id(grant.id), 20).unwrap();
        rx.recv_timeout(Duration::from_secs(1))
            .expect("the revocation wakes the watcher within a second");
        drop(listener);
        store.revoke_consumer(&consumer, 30).unwrap();
        assert!(
            rx.recv_timeout(Duration::from_millis(700)).is_err(),
            "a dropped listener wakes no one"
        );
    }
}

#[test]
fn sessions_expire() {
    for (_dir, _location, store) in stores("authz_sessions") {
        seeded(&store);
        let s = store.create_session("alice", 60, 100).unwrap();
        assert_eq!(store.session(&s.id, 159).unwrap().unwrap().owner, "alice");
        assert_eq!(store.session(&s.id, 160).unwrap(), None);
    }
}

#[test]
fn sign_in_counters_throttle_names_and_addresses_and_the_owner_is_told() {
    use crate::throttle::{SignInPolicy, Wait};
    for (_dir, location, store) in stores("authz_sign_in") {
        seeded(&store);
        let policy = SignInPolicy::default();
        let begin =
            |name: &str, addr: &str, now| store.begin_sign_in(&policy, name, addr, now).unwrap();
        // Five attempts at once for alice (from five addresses), then the sixth waits.
        for i in 0..5 {
            let attempt = begin("alice", &format!("addr:192.0.2.{i}"), 1000).unwrap();
            store.sign_in_failed("alice", attempt, 1000).unwrap();
        }
        assert_eq!(
            begin("alice", "addr:192.0.2.9", 1000),
            Err(Throttled {
                by: ThrottledBy::Name,
                wait: Wait::Delay(1)
            })
        );
        // The unknown name `bob` is counted just the same.
        for _ in 0..5 {
            begin("bob", "addr:198.51.100.1", 1000).unwrap();
        }
        assert_eq!(
            begin("bob", "addr:198.51.100.2", 1000),
            Err(Throttled {
                by: ThrottledBy::Name,
                wait: Wait::Delay(1)
            })
        );
        // The address that tried bob five times has fifteen free failures left.
        for i in 0..15 {
            begin(&format!("u{i}"), "addr:198.51.100.1", 1000).unwrap();
        }
        assert_eq!(
            begin("u99", "addr:198.51.100.1", 1000),
            Err(Throttled {
                by: ThrottledBy::Address,
                wait: Wait::Delay(1)
            })
        );
        // Right passwords do not count against an address: 30 owners behind one NAT.
        for i in 0..30 {
            let name = format!("owner{i}");
            store.add_owner(&name, HASH, 1000).unwrap();
            begin(&name, "addr:192.0.2.200", 1000).unwrap();
            store
                .finish_sign_in(&name, "addr:192.0.2.200", 60, 1000)
                .unwrap();
        }
        // Names that cannot be owners are throttled by address only.
        assert!(begin(&"x".repeat(65), "addr:192.0.2.50", 1000).is_ok());
        // Alice signs in: her counter is forgotten, and the session tells her.
        let session = store.create_session("alice", 60, 1001).unwrap();
        assert_eq!(
            session.failed_before,
            FailedSignIns {
                count: 5,
                last_at: Some(1000),
                lockouts: 0
            }
        );
        assert_eq!(
            store
                .session(&session.id, 1002)
                .unwrap()
                .unwrap()
                .failed_before
                .count,
            5
        );
        assert!(begin("alice", "addr:192.0.2.9", 1001).is_ok());
        let next = store.create_session("alice", 60, 1002).unwrap();
        assert_eq!(next.failed_before, FailedSignIns::default());
        // The counters survive reopening the store (and are shared by every replica on it).
        let reopened = Store::open(&location).unwrap();
        assert_eq!(
            reopened
                .begin_sign_in(&policy, "bob", "addr:203.0.113.1", 1000)
                .unwrap(),
            Err(Throttled {
                by: ThrottledBy::Name,
                wait: Wait::Delay(1)
            })
        );
    }
}

/// The POSIX locks this process holds on `path`'s inode, from `/proc/locks`.
#[cfg(target_os = "linux")]
fn locks_held_on(path: &std::path::Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    let pid = std::process::id().to_string();
    // Lines look like `1: POSIX  ADVISORY  READ 1234 fd:01:5678 1073741826 1073741826`
    // (major:minor:inode, in hex for the device and decimal for the inode).
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(owner), Some(file)) = (fields.get(4), fields.get(5)) else {
                return false;
            };
            *owner == pid && file.rsplit(':').next() == Some(meta.ino().to_string().as_str())
        })
        .count()
}

/// Opening the file a second time in the same process (as the guard does for its own
/// tables) must not drop the locks of the first connection: closing any descriptor of a file
/// drops every POSIX lock the process holds on it, and a process holding no lock lets an
/// outside `sqlite3` delete the `-wal` under it (issue 10, case 1).
#[cfg(target_os = "linux")]
#[test]
fn a_second_connection_keeps_the_locks_of_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authz.sqlite");
    let store = Store::open(&path).unwrap();
    seeded(&store);
    let before = locks_held_on(&path);
    assert!(
        before >= 1,
        "an open WAL connection holds a lock on its file"
    );
    let second = Database::open(&Location::from(&path)).unwrap();
    drop(second);
    assert_eq!(locks_held_on(&path), before);
    // The store still sees what another process would write: its lock is intact.
    assert_eq!(store.schema_version().unwrap(), known(&store));
}
