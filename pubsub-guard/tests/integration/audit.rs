//! What the guard writes to the audit ledger: each refused subscribe, items or archive
//! request (who asked, which node, the owner's, the consumer named, why), and what each
//! grant delivered; and an admin's ending of subscriptions, which reaches the subscriber.

use std::sync::Arc;

use shared_store::Store;
use shared_store::authz::RevokeBy;
use shared_store::authz::ledger::{Entry, LedgerFilter, Verdict};
use shared_store::db::Database;

use crate::service::{APP, EVE, LOC, World, error, iq, is_none_event, pubsub, world};
use pubsub_guard::service::Service;
use pubsub_guard::storage::{DbStorage, Storage};

fn entries(w: &World) -> Vec<Entry> {
    w.store.ledger(&LedgerFilter::default(), 0, 100).unwrap()
}

/// A refusal's entry: (actor, node, owner, consumer named, detail).
type Refused = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// The ledger's refusals, oldest first.
fn refusals(w: &World) -> Vec<Refused> {
    entries(w)
        .into_iter()
        .filter(|e| e.kind == "refused")
        .map(|e| (e.actor, e.node, e.owner, e.consumer_key, e.detail))
        .collect()
}

/// "(condition (app)): text" as the entry spells the refusal in `reply`.
fn why(reply: &minidom::Element) -> String {
    let (_, condition, app, text) = error(reply);
    match app {
        Some(app) => format!("{condition} ({app}): {text}"),
        None => format!("{condition}: {text}"),
    }
}

#[test]
fn refused_requests_are_in_the_ledger_with_who_which_node_and_why() {
    let mut w = world();
    // Unsigned, from someone who holds nothing.
    let unsigned = w.reply(pubsub(
        EVE,
        "set",
        "<subscribe node='/location/alice' jid='eve@localhost'/>",
    ));
    let items = w.reply(pubsub(EVE, "get", "<items node='/location/alice'/>"));
    // Signed by the world's consumer, replayed.
    let signed = w.signed_subscribe("/location/alice");
    assert_eq!(w.reply(signed.clone()).attr("type"), Some("result"));
    let replayed = w.reply(signed);
    let archive = w.reply(iq(
        EVE,
        "set",
        "<query xmlns='urn:xmpp:mam:2' node='/location/bob'/>",
    ));
    // Not audited: a refused publish, and a disco query.
    let publish = w.reply(pubsub(
        EVE,
        "set",
        "<publish node='/location/alice'><item><p xmlns='urn:p'/></item></publish>",
    ));
    assert_eq!(publish.attr("type"), Some("error"));
    let key = Some(w.key.clone());
    let alice = Some("alice".to_owned());
    let node = Some("/location/alice".to_owned());
    assert_eq!(
        refusals(&w),
        vec![
            (
                EVE.to_owned(),
                node.clone(),
                alice.clone(),
                None,
                format!("subscribe refused: {}", why(&unsigned))
            ),
            (
                EVE.to_owned(),
                node.clone(),
                alice.clone(),
                None,
                format!("items request refused: {}", why(&items))
            ),
            (
                APP.to_owned(),
                node,
                alice.clone(),
                key,
                format!("subscribe refused: {}", why(&replayed))
            ),
            (
                // A missing node a template would give bob: bob's.
                EVE.to_owned(),
                Some("/location/bob".to_owned()),
                Some("bob".to_owned()),
                None,
                format!("archive query refused: {}", why(&archive))
            ),
        ]
    );
    // The replay's reason, spelled out once: the entry says what the requester was told.
    assert!(
        refusals(&w)[2]
            .4
            .starts_with("subscribe refused: not-authorized (invalid-nonce): nonce "),
        "{}",
        refusals(&w)[2].4
    );
    assert!(matches!(
        w.store.verify_ledger(None).unwrap(),
        Verdict::Intact { entries: 5, .. }
    ));
}

/// Deliveries count per grant and node: notifications (the last item sent on subscribing
/// too), and items read by items requests; the revocation's entry records them.
#[test]
fn deliveries_are_counted_per_grant_and_recorded_when_it_ends() {
    let mut w = world();
    w.subscribe_app();
    for _ in 0..3 {
        assert_eq!(w.handle(crate::service::publish_to_alice()).len(), 2);
    }
    let list = w.reply(pubsub(APP, "get", "<items node='/location/alice'/>"));
    let held = list
        .get_child("pubsub", crate::service::PUBSUB)
        .unwrap()
        .get_child("items", crate::service::PUBSUB)
        .unwrap()
        .children()
        .count();
    assert_eq!(held, 2, "max_items is 2");
    let delivered = w.store.deliveries(w.token_id).unwrap();
    assert_eq!(
        delivered
            .iter()
            .map(|d| (d.node.as_str(), d.pushed, d.fetched))
            .collect::<Vec<_>>(),
        vec![("/location/alice", 3, 2)]
    );
    // Publishers read without a grant: nothing counted.
    let _ = w.reply(pubsub(LOC, "get", "<items node='/location/alice'/>"));
    assert_eq!(w.store.deliveries(w.token_id).unwrap(), delivered);
    w.store
        .revoke_tokens(&RevokeBy::Id(w.token_id), shared_store::authz::now())
        .unwrap();
    let revoked = entries(&w).pop().unwrap();
    assert_eq!(
        (revoked.kind.as_str(), revoked.actor.as_str()),
        ("revoked", "admin")
    );
    let last = shared_store::datetime::format(delivered[0].last_ms / 1000);
    assert_eq!(
        revoked.detail,
        format!("delivered /location/alice: 3 pushed, 2 fetched, last at {last}")
    );
}

/// Under a group commit, the counts are committed with the group.
#[test]
fn deliveries_under_a_group_commit_are_counted_once() {
    let mut w = world();
    let db = Arc::new(Database::open(&w.db).unwrap());
    let store = Arc::new(Store::on(Arc::clone(&db)).unwrap());
    w.service =
        Service::new(&w.config, Box::new(DbStorage::on(db).unwrap()), store).with_group_commits();
    w.subscribe_app();
    let group = [
        crate::service::publish_to_alice(),
        crate::service::publish_to_alice(),
    ]
    .map(|e| pubsub_guard::stanza::Stanza::from_element(&e));
    let mut out = Vec::new();
    w.service.handle_group(&group, &mut |e| out.push(e));
    assert_eq!(out.len(), 4);
    let delivered = w.store.deliveries(w.token_id).unwrap();
    assert_eq!((delivered[0].pushed, delivered[0].fetched), (2, 0));
}

#[test]
fn an_admin_s_ending_of_subscriptions_reaches_the_subscriber() {
    let mut w = world();
    w.subscribe_app();
    w.service.follow_changes();
    let now = shared_store::authz::now();
    // Another owner's: nothing ends.
    w.store
        .end_subscriptions(None, None, Some("bob"), 0, now)
        .unwrap();
    assert!(w.service.follow_changes().is_empty());
    assert_eq!(w.storage.subscriptions(None).unwrap().len(), 1);
    w.store
        .end_subscriptions(Some("/location/alice"), Some(&w.key.clone()), None, 1, now)
        .unwrap();
    let out = w.service.follow_changes();
    assert_eq!(
        out.len(),
        1,
        "{:?}",
        out.iter().map(String::from).collect::<Vec<_>>()
    );
    assert!(is_none_event(&out[0]), "{}", String::from(&out[0]));
    assert!(w.storage.subscriptions(None).unwrap().is_empty());
    // The grant lives on: the application may subscribe again.
    w.subscribe_app();
    assert!(w.service.follow_changes().is_empty());
}
