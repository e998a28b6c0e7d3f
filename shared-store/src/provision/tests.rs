use oauth_xmpp::{CredentialStore, TokenKind};

use super::*;
use crate::authz::RevokeBy;
use crate::db::tests::each_engine;
use crate::guard::Storage;

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaA";
const CONSUMER_SECRET: &str = "consumer-secret-0123456789";

fn consumer(key: &str) -> Record {
    Record::Consumer(ConsumerRecord {
        key: key.into(),
        secret: Secret::new(CONSUMER_SECRET),
        name: "Aggregator".into(),
        jid: Some("aggregator@localhost".into()),
        callback: None,
    })
}

fn owner(name: &str) -> Record {
    Record::Owner(OwnerRecord {
        name: name.into(),
        password_hash: Some(Secret::new(HASH)),
        password: None,
    })
}

fn node(name: &str, owner: &str) -> Record {
    Record::Node(NodeRecord {
        name: name.into(),
        owner: Some(owner.into()),
        access: Access::OAuth,
        publishers: vec!["Site@Localhost/feeder".into()],
        max_items: None,
        max_age_secs: None,
        send_last_published_item: None,
    })
}

fn grant(token: &str, owner: &str, scope: &str) -> Record {
    Record::Grant(GrantRecord {
        token: token.into(),
        secret: Secret::new(format!("{token}-secret-0123456789")),
        consumer: "agg".into(),
        owner: owner.into(),
        scope: scope.into(),
        expires_at: None,
    })
}

/// The records of `n` owners, each with a node and a grant to the consumer `agg`, numbered
/// as lines from 1.
fn day(n: usize) -> Vec<(u64, Record)> {
    let mut records = vec![consumer("agg")];
    for i in 1..=n {
        records.push(owner(&format!("u{i}")));
        records.push(node(&format!("/photos/u{i}"), &format!("u{i}")));
        records.push(grant(
            &format!("t{i}"),
            &format!("u{i}"),
            &format!("/photos/u{i}"),
        ));
    }
    (1..).zip(records).collect()
}

/// Every field of a record, secrets included, to compare exports.
fn text(record: &Record) -> String {
    match record {
        Record::Consumer(c) => format!(
            "consumer {} {} {} {:?} {:?}",
            c.key,
            c.secret.expose(),
            c.name,
            c.jid,
            c.callback
        ),
        Record::Owner(o) => format!(
            "owner {} {:?}",
            o.name,
            o.password_hash.as_ref().map(Secret::expose)
        ),
        Record::Node(n) => format!(
            "node {} {:?} {} {:?} {:?} {:?} {:?}",
            n.name,
            n.owner,
            n.access.as_str(),
            n.publishers,
            n.max_items,
            n.max_age_secs,
            n.send_last_published_item
        ),
        Record::Grant(g) => format!(
            "grant {} {} {} {} {} {:?}",
            g.token,
            g.secret.expose(),
            g.consumer,
            g.owner,
            g.scope,
            g.expires_at
        ),
    }
}

#[test]
fn an_import_provisions_everything_and_again_changes_nothing() {
    for (_dir, location) in each_engine("provision_import") {
        let p = Provisioning::open(location.clone()).unwrap();
        let records = day(3);
        let tally = p.import(&records, 1000).unwrap();
        assert_eq!(tally.new, [1, 3, 3, 3], "{location}");
        assert_eq!(tally.unchanged, [0; 4]);

        // The credentials work as the guard looks them up.
        let store = p.store();
        let token = CredentialStore::token(store, "t2").unwrap().unwrap();
        assert_eq!(token.secret.expose(), "t2-secret-0123456789");
        assert_eq!(token.kind, TokenKind::Access);
        assert_eq!(token.consumer_key, "agg");
        assert_eq!(token.owner.as_deref(), Some("u2"));
        assert_eq!(token.scope, Scope::parse("/photos/u2"));
        assert_eq!(
            CredentialStore::consumer(store, "agg")
                .unwrap()
                .unwrap()
                .secret
                .expose(),
            CONSUMER_SECRET
        );
        assert_eq!(store.password_hash("u3").unwrap().as_deref(), Some(HASH));
        // The node, with the defaults of `node create` and its publisher normalized to a
        // bare JID.
        let guard = DbStorage::open(location.clone()).unwrap();
        let n = guard.node("/photos/u1").unwrap().unwrap();
        assert_eq!(n.owner.as_deref(), Some("u1"));
        assert_eq!(n.access, Access::OAuth);
        assert_eq!(n.publishers, vec!["site@localhost".to_owned()]);
        assert_eq!(n.max_items, guard::DEFAULT_MAX_ITEMS);
        assert_eq!(n.max_age_secs, guard::DEFAULT_MAX_AGE_SECS);
        assert!(n.send_last_published_item);
        // Each grant is in the change log, for a running guard.
        let changes = store.changes_since(0, 100).unwrap();
        assert_eq!(changes.len(), 3);
        assert!(changes.iter().all(|c| c.kind.as_str() == "granted"));

        // The same file again (a rerun, or a resumed one): nothing written.
        let again = p.import(&records, 2000).unwrap();
        assert_eq!(again.new, [0; 4]);
        assert_eq!(again.unchanged, [1, 3, 3, 3]);
        assert_eq!(store.changes_since(0, 100).unwrap().len(), 3);
    }
}

#[test]
fn a_refused_record_leaves_its_whole_batch_out() {
    for (_dir, location) in each_engine("provision_refused") {
        let p = Provisioning::open(location.clone()).unwrap();
        p.import(&day(1), 1000).unwrap();
        let Record::Grant(mut other) = grant("t1", "u1", "/photos/u1") else {
            unreachable!()
        };
        other.secret = Secret::new("another-secret-0123456789");
        let batch = vec![
            (10, owner("u2")),
            (11, node("/photos/u2", "u2")),
            (12, Record::Grant(other)),
        ];
        let err = p.import(&batch, 1000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 12: the token t1 exists with another secret"
        );
        // Lines 10 and 11 went with it.
        assert_eq!(p.store().password_hash("u2").unwrap(), None);
        let guard = DbStorage::open(location.clone()).unwrap();
        assert_eq!(guard.node("/photos/u2").unwrap(), None);
    }
}

#[test]
fn what_a_record_names_must_exist_and_conflicts_say_what_differs() {
    for (_dir, location) in each_engine("provision_order") {
        let p = Provisioning::open(location.clone()).unwrap();
        let refused = |batch: Vec<(u64, Record)>| p.import(&batch, 5).unwrap_err().to_string();
        assert_eq!(
            refused(vec![(1, grant("t1", "u1", "/photos/u1"))]),
            "line 1: the grant t1 names the owner u1, who does not exist (owners come first)"
        );
        assert_eq!(
            refused(vec![(1, owner("u1")), (2, grant("t1", "u1", "/photos/u1"))]),
            "line 2: the grant t1 names the consumer agg, which does not exist (consumers come first)"
        );
        assert_eq!(
            refused(vec![(3, node("/photos/u9", "u9"))]),
            "line 3: the node /photos/u9 names the owner u9, who does not exist (owners come first)"
        );
        p.import(&day(1), 5).unwrap();
        let Record::Node(mut n) = node("/photos/u1", "u1") else {
            unreachable!()
        };
        n.max_items = Some(20);
        n.publishers = vec!["other@localhost".into()];
        assert_eq!(
            refused(vec![(4, Record::Node(n))]),
            "line 4: the node /photos/u1 exists with another publishers, max_items"
        );
        let Record::Owner(mut o) = owner("u1") else {
            unreachable!()
        };
        o.password_hash = Some(Secret::new("$argon2id$v=19$other"));
        assert_eq!(
            refused(vec![(5, Record::Owner(o))]),
            "line 5: the owner u1 exists with another password"
        );
        let Record::Consumer(mut c) = consumer("agg") else {
            unreachable!()
        };
        c.name = "Renamed".into();
        assert_eq!(
            refused(vec![(6, Record::Consumer(c))]),
            "line 6: the consumer agg exists with another name"
        );
        // Checks of the values themselves.
        let Record::Grant(mut g) = grant("t 2", "u1", "/photos/u1") else {
            unreachable!()
        };
        assert_eq!(
            refused(vec![(7, Record::Grant(g))]),
            "line 7: the token must be 1 to 256 printable ASCII characters without spaces"
        );
        let Record::Grant(g2) = grant("t2", "u1", "/photos/u1") else {
            unreachable!()
        };
        g = g2;
        g.secret = Secret::new("short");
        assert_eq!(
            refused(vec![(8, Record::Grant(g))]),
            "line 8: the token secret has 5 bytes; it must have 16 to 1024 (make one from the OS random generator)"
        );
        let plain = Record::Owner(OwnerRecord {
            name: "u5".into(),
            password_hash: None,
            password: Some(Secret::new("correct horse")),
        });
        assert_eq!(
            refused(vec![(9, plain)]),
            "line 9: the owner u5 has a plain password: hash it first"
        );
        let Record::Node(mut open) = node("/open/feed", "u1") else {
            unreachable!()
        };
        open.owner = None;
        assert_eq!(
            refused(vec![(10, Record::Node(open))]),
            "line 10: the node /open/feed is protected (access oauth) and needs an owner"
        );
    }
}

#[test]
fn a_revoked_token_is_not_brought_back_nor_exported() {
    for (_dir, location) in each_engine("provision_revoked") {
        let p = Provisioning::open(location.clone()).unwrap();
        p.import(&day(2), 1000).unwrap();
        p.store()
            .revoke_tokens(&RevokeBy::Token("t1".into()), 1001)
            .unwrap();
        assert_eq!(
            p.import(&day(2), 1002).unwrap_err().to_string(),
            "line 4: the token t1 exists and is revoked; a revoked token is not brought back"
        );
        let exported: Vec<String> = p.export(1003).unwrap().iter().map(text).collect();
        assert!(exported.iter().any(|r| r.starts_with("grant t2 ")));
        assert!(!exported.iter().any(|r| r.starts_with("grant t1 ")));
    }
}

#[test]
fn an_export_imported_elsewhere_exports_the_same() {
    for (_dir, location) in each_engine("provision_export") {
        let p = Provisioning::open(location.clone()).unwrap();
        p.import(&day(3), 1000).unwrap();
        // An open node without an owner, and a grant that expires later.
        let open = Record::Node(NodeRecord {
            name: "/open/news".into(),
            owner: None,
            access: Access::Open,
            publishers: vec!["site@localhost".into()],
            max_items: Some(5),
            max_age_secs: Some(0),
            send_last_published_item: Some(false),
        });
        let Record::Grant(mut later) = grant("t9", "u1", "/photos/") else {
            unreachable!()
        };
        later.expires_at = Some(5000);
        p.import(&[(1, open), (2, Record::Grant(later))], 1000)
            .unwrap();
        let first = p.export(1000).unwrap();
        assert_eq!(first.len(), 1 + 3 + 4 + 4);

        let dir = tempfile::tempdir().unwrap();
        let copy = Provisioning::open(dir.path().join("copy.sqlite")).unwrap();
        let numbered: Vec<(u64, Record)> = (1..).zip(first).collect();
        let tally = copy.import(&numbered, 2000).unwrap();
        assert_eq!(tally.new, [1, 3, 4, 4]);
        let second: Vec<String> = copy.export(2000).unwrap().iter().map(text).collect();
        let first: Vec<String> = numbered.iter().map(|(_, r)| text(r)).collect();
        assert_eq!(second, first);
        // An expired grant is not exported.
        assert_eq!(copy.export(5000).unwrap().len(), 1 + 3 + 4 + 3);
    }
}

#[test]
fn records_keep_secrets_out_of_debug() {
    let shown = format!(
        "{:?} {:?}",
        consumer("agg"),
        grant("t1", "u1", "/photos/u1")
    );
    assert!(!shown.contains(CONSUMER_SECRET), "{shown}");
    assert!(!shown.contains("t1-secret"), "{shown}");
    assert!(!format!("{:?}", owner("u1")).contains("argon2id"));
}
