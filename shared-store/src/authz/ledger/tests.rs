use oauth_xmpp::Scope;

use super::*;
use crate::authz::{RevokeBy, Store, StoreError};
use crate::db::tests::each_engine;
use crate::db::{Engine, Location};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaA";

fn stores(name: &str) -> Vec<(tempfile::TempDir, Location, Store)> {
    each_engine(name)
        .into_iter()
        .map(|(dir, location)| {
            let store = Store::open(&location).unwrap();
            (dir, location, store)
        })
        .collect()
}

/// Every entry, oldest first.
fn all(store: &Store) -> Vec<Entry> {
    store.ledger(&LedgerFilter::default(), 0, 1000).unwrap()
}

/// A grant's whole life: asked for two nodes and narrowed to one, exchanged, delivered to,
/// revoked by the owner. One entry each, in order, chained, and no secret in any of them.
#[test]
fn a_grant_s_life_is_chained_in_order_without_secrets() {
    for (_dir, location, store) in stores("ledger_life") {
        store.add_owner("alice", HASH, 100).unwrap();
        let (consumer, consumer_secret) = store.add_consumer("FindMeNow", None, None, 100).unwrap();
        let (temp, temp_secret) = store
            .create_temporary(
                &consumer,
                "oob",
                &Scope::parse("/location/alice /photos/alice/"),
                600,
                1000,
            )
            .unwrap();
        let verifier = store
            .approve(&temp, "alice", &Scope::parse("/location/alice"), 1001)
            .unwrap();
        let grant = store.exchange(&temp, &verifier, "n1", 300, 1002).unwrap();
        store
            .add_deliveries(&[
                Delivered {
                    token: grant.token.clone(),
                    node: "/location/alice".into(),
                    pushed: 3,
                    fetched: 0,
                },
                Delivered {
                    token: "not-a-token".into(),
                    node: "/location/alice".into(),
                    pushed: 9,
                    fetched: 9,
                },
            ])
            .unwrap();
        store
            .add_deliveries(&[Delivered {
                token: grant.token.clone(),
                node: "/location/alice".into(),
                pushed: 1,
                fetched: 2,
            }])
            .unwrap();
        let delivered = store.deliveries(grant.id).unwrap();
        assert_eq!(
            delivered.len(),
            1,
            "{location}: an unknown token is skipped"
        );
        assert_eq!(
            (
                delivered[0].pushed,
                delivered[0].fetched,
                delivered[0].items()
            ),
            (4, 2, 6),
            "{location}"
        );
        let last = crate::datetime::format(delivered[0].last_ms / 1000);
        assert_eq!(
            store
                .revoke_tokens(&RevokeBy::OwnerAndId("alice".into(), grant.id), 1003)
                .unwrap(),
            1
        );
        let entries = all(&store);
        let summary: Vec<(i64, &str, &str, Option<i64>, &str)> = entries
            .iter()
            .map(|e| {
                (
                    e.seq,
                    e.kind.as_str(),
                    e.actor.as_str(),
                    e.token_id,
                    e.detail.as_str(),
                )
            })
            .collect();
        let revoked = format!("delivered /location/alice: 4 pushed, 2 fetched, last at {last}");
        assert_eq!(
            summary,
            vec![
                (
                    1,
                    "narrowed",
                    "owner",
                    None,
                    "asked for: /location/alice /photos/alice/; granted: /location/alice"
                ),
                (
                    2,
                    "granted",
                    "owner",
                    Some(grant.id),
                    "scope: /location/alice"
                ),
                (3, "revoked", "owner", Some(grant.id), revoked.as_str()),
            ],
            "{location}"
        );
        assert!(entries.iter().all(|e| e.owner.as_deref() == Some("alice")
            && e.consumer_key.as_deref() == Some(consumer.as_str())));
        let secrets = [
            consumer_secret.expose(),
            temp_secret.expose(),
            grant.secret.expose(),
            grant.token.as_str(),
            verifier.as_str(),
        ];
        for e in &entries {
            let text = format!("{e:?}");
            for secret in secrets {
                assert!(!text.contains(secret), "{location}: {text}");
            }
        }
        assert_eq!(
            store.verify_ledger(None).unwrap(),
            Verdict::Intact {
                entries: 3,
                head: entries[2].hash.clone()
            },
            "{location}"
        );
        // The filters select by token and by kind.
        let of_grant = LedgerFilter {
            token_id: Some(grant.id),
            ..LedgerFilter::default()
        };
        assert_eq!(store.ledger(&of_grant, 0, 10).unwrap().len(), 2);
        let revocations = LedgerFilter {
            kind: Some(EntryKind::Revoked),
            owner: Some("alice".into()),
            consumer_key: Some(consumer.clone()),
            ..LedgerFilter::default()
        };
        assert_eq!(store.ledger(&revocations, 0, 10).unwrap()[0].seq, 3);
        assert_eq!(store.ledger(&of_grant, 2, 10).unwrap()[0].seq, 3);
    }
}

/// The database itself refuses to change or delete an entry.
#[test]
fn the_ledger_refuses_updates_and_deletes() {
    for (_dir, location, store) in stores("ledger_append_only") {
        store
            .record(NewEntry::new(
                EntryKind::Refused,
                "mallory@evil.example",
                "x",
            ))
            .unwrap();
        for sql in [
            "UPDATE audit_ledger SET detail = 'nothing happened'",
            "DELETE FROM audit_ledger",
        ] {
            let err = store
                .database()
                .write(|tx| tx.execute(sql, &[]).map_err(StoreError::from))
                .unwrap_err();
            assert!(
                err.to_string().contains("the audit ledger is append-only"),
                "{location}: {err}"
            );
        }
        assert_eq!(all(&store).len(), 1);
    }
}

/// Runs `sql` with the ledger's triggers off, as someone with the database's own rights
/// would, to get around them.
fn around_the_triggers(store: &Store, sql: &str) {
    let (off, on) = match store.database().engine() {
        Engine::Sqlite => (
            "DROP TRIGGER IF EXISTS audit_ledger_no_update;
             DROP TRIGGER IF EXISTS audit_ledger_no_delete;",
            "",
        ),
        Engine::Postgres => (
            "ALTER TABLE audit_ledger DISABLE TRIGGER USER;",
            "ALTER TABLE audit_ledger ENABLE TRIGGER USER;",
        ),
    };
    store
        .database()
        .write(|tx| {
            tx.batch(off)?;
            tx.batch(sql)?;
            tx.batch(on).map_err(StoreError::from)
        })
        .unwrap();
}

fn three_entries(store: &Store) -> Vec<Entry> {
    for who in ["a@example.org", "b@example.org", "c@example.org"] {
        let mut entry = NewEntry::new(EntryKind::Refused, who, "subscribe refused: forbidden");
        entry.node = Some("/location/alice".into());
        store.record(entry).unwrap();
    }
    all(store)
}

#[test]
fn a_changed_entry_is_found_where_it_was_changed() {
    for (_dir, location, store) in stores("ledger_changed") {
        three_entries(&store);
        around_the_triggers(
            &store,
            "UPDATE audit_ledger SET actor = 'nobody@example.org' WHERE seq = 2",
        );
        assert_eq!(
            store.verify_ledger(None).unwrap(),
            Verdict::Broken {
                seq: 2,
                problem: "entry 2 does not match its hash: it was changed, or an entry before \
                          it was"
                    .into()
            },
            "{location}"
        );
    }
}

#[test]
fn a_removed_entry_is_found_missing() {
    for (_dir, location, store) in stores("ledger_removed") {
        three_entries(&store);
        around_the_triggers(&store, "DELETE FROM audit_ledger WHERE seq = 2");
        assert_eq!(
            store.verify_ledger(None).unwrap(),
            Verdict::Broken {
                seq: 2,
                problem: "entry 2 is missing (the next one is 3)".into()
            },
            "{location}"
        );
    }
}

/// A ledger rewritten from some entry on, each hash recomputed, chains again: only a head
/// recorded elsewhere shows it, and so does a cut tail.
#[test]
fn a_rewritten_or_cut_ledger_no_longer_matches_a_recorded_head() {
    for (_dir, location, store) in stores("ledger_rewritten") {
        let entries = three_entries(&store);
        let head = (3, entries[2].hash.clone());
        // Rewrite entry 2 and recompute 2 and 3, as a careful forger would.
        let mut forged = entries.clone();
        forged[1].actor = "nobody@example.org".into();
        forged[1].hash = entry_hash(&forged[0].hash, &forged[1]);
        forged[2].hash = entry_hash(&forged[1].hash, &forged[2]);
        around_the_triggers(
            &store,
            &format!(
                "UPDATE audit_ledger SET actor = 'nobody@example.org', hash = '{}' WHERE seq = 2;
                 UPDATE audit_ledger SET hash = '{}' WHERE seq = 3;",
                forged[1].hash, forged[2].hash
            ),
        );
        assert_eq!(
            store.verify_ledger(None).unwrap(),
            Verdict::Intact {
                entries: 3,
                head: forged[2].hash.clone()
            },
            "{location}: without a recorded head the forgery chains"
        );
        match store.verify_ledger(Some((head.0, &head.1))).unwrap() {
            Verdict::Broken { seq: 3, problem } => assert!(
                problem.ends_with("the ledger was rewritten from there or before"),
                "{location}: {problem}"
            ),
            other => panic!("{location}: {other:?}"),
        }
        around_the_triggers(&store, "DELETE FROM audit_ledger WHERE seq = 3");
        assert_eq!(
            store.verify_ledger(Some((head.0, &head.1))).unwrap(),
            Verdict::Broken {
                seq: 3,
                problem: "entry 3, whose hash was recorded, is gone: the ledger has 2 entries"
                    .into()
            },
            "{location}"
        );
    }
}

#[test]
fn hashes_depend_on_every_field_and_on_the_entry_before() {
    let entry = Entry {
        seq: 1,
        at_ms: 1_764_000_000_000,
        kind: "refused".into(),
        actor: "a@example.org".into(),
        owner: Some("alice".into()),
        consumer_key: None,
        token_id: None,
        node: Some("/location/alice".into()),
        detail: "d".into(),
        hash: String::new(),
    };
    let base = entry_hash(GENESIS, &entry);
    assert_eq!(base.len(), 64);
    assert_ne!(entry_hash(&base, &entry), base, "the entry before counts");
    let variants = [
        Entry {
            seq: 2,
            ..entry.clone()
        },
        Entry {
            at_ms: 1,
            ..entry.clone()
        },
        Entry {
            owner: None,
            ..entry.clone()
        },
        Entry {
            // The same bytes moved from one field to the next.
            owner: Some("alic".into()),
            consumer_key: Some("e".into()),
            ..entry.clone()
        },
        Entry {
            owner: Some(String::new()),
            ..entry.clone()
        },
        Entry {
            token_id: Some(0),
            ..entry.clone()
        },
        Entry {
            detail: "e".into(),
            ..entry.clone()
        },
    ];
    for variant in variants {
        assert_ne!(entry_hash(GENESIS, &variant), base, "{variant:?}");
    }
}

#[test]
fn long_details_are_cut_at_a_character_boundary() {
    let text = "é".repeat(MAX_DETAIL);
    let cut = bounded(&text);
    assert!(
        cut.len() <= MAX_DETAIL && cut.ends_with('…'),
        "{}",
        cut.len()
    );
    assert_eq!(bounded("short"), "short");
}

#[test]
fn ending_subscriptions_names_what_ends_and_is_logged_for_the_guard() {
    for (_dir, location, store) in stores("ledger_end_subscriptions") {
        assert!(matches!(
            store.end_subscriptions(None, None, None, 0, 10),
            Err(StoreError::Refused(_))
        ));
        let seq = store
            .end_subscriptions(Some("/location/alice"), None, Some("alice"), 2, 10)
            .unwrap();
        let change = store.changes_since(seq - 1, 10).unwrap().remove(0);
        assert_eq!(
            (
                change.kind,
                change.node.as_deref(),
                change.owner.as_deref(),
                change.consumer_key
            ),
            (
                crate::authz::ChangeKind::SubscriptionsEnded,
                Some("/location/alice"),
                Some("alice"),
                None
            ),
            "{location}"
        );
        assert!(change.at_ms.is_some());
        let entry = all(&store).remove(0);
        assert_eq!(
            (
                entry.kind.as_str(),
                entry.actor.as_str(),
                entry.detail.as_str()
            ),
            ("subscriptions-ended", "admin", "2 subscriptions to end")
        );
    }
}
