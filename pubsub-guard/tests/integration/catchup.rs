//! Catch-up after a disconnect (issue 12, profile N11–N13), without a network: archive ids
//! on notifications, a node's archive in pages (XEP-0313 on a node, XEP-0442), the gap
//! signal past retention, replay only inside a consumer's grants, the last item on
//! subscribe, and retention by age on a clock the test moves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use minidom::Element;
use oauth_xmpp::Scope;
use oauth_xmpp::replay::{Clock, SystemClock};
use oauth_xmpp::sign::{Credentials, Signer};
use pubsub_guard::service::Service;
use pubsub_guard::storage::{Access, DbStorage, Node, Storage};
use shared_store::authz::RevokeBy;

use crate::service::{APP, EVE, LOC, RSM, World, error, expect, iq, pubsub, world};

const MAM: &str = "urn:xmpp:mam:2";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const SID: &str = "urn:xmpp:sid:0";
const FORWARD: &str = "urn:xmpp:forward:0";
const DELAY: &str = "urn:xmpp:delay";
const GAP: &str = "urn:xmpp:pubsub-guard:gap:0";

/// Publishes `id` to /location/alice; returns the stanzas (notifications, then the result).
fn publish(w: &mut World, id: &str) -> Vec<Element> {
    let out = w.handle(pubsub(
        LOC,
        "set",
        &format!(
            "<publish node='/location/alice'><item id='{id}'><p xmlns='urn:test'>{id}</p></item></publish>"
        ),
    ));
    assert_eq!(
        out.last().and_then(|r| r.attr("type")),
        Some("result"),
        "{:?}",
        out.iter().map(String::from).collect::<Vec<_>>()
    );
    out
}

/// The archive id (XEP-0359 stanza id) of an event notification.
fn stanza_id(message: &Element) -> String {
    let sid = message.get_child("stanza-id", SID).expect("a stanza id");
    assert_eq!(sid.attr("by"), Some("pubsub.localhost"));
    sid.attr("id").unwrap().to_owned()
}

/// Publishes `id` with APP subscribed, and returns the archive id of its notification.
fn publish_seen(w: &mut World, id: &str) -> String {
    let out = publish(w, id);
    assert_eq!(
        out.len(),
        2,
        "{:?}",
        out.iter().map(String::from).collect::<Vec<_>>()
    );
    stanza_id(&out[0])
}

/// An archive query from `from`: form fields, then the RSM set (both as XML).
fn query(from: &str, node: &str, fields: &str, set: &str) -> Element {
    let form = if fields.is_empty() {
        String::new()
    } else {
        format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>{fields}</x>"
        )
    };
    let set = if set.is_empty() {
        String::new()
    } else {
        format!("<set xmlns='{RSM}'>{set}</set>")
    };
    iq(
        from,
        "set",
        &format!("<query xmlns='{MAM}' queryid='f1' node='{node}'>{form}{set}</query>"),
    )
}

fn field(var: &str, value: &str) -> String {
    format!("<field var='{var}'><value>{value}</value></field>")
}

/// One archive page, read: the (item id, archive id) of each result, and the fin as
/// "complete first@index last count".
struct Results {
    items: Vec<(String, String)>,
    fin: String,
    last: Option<String>,
    complete: bool,
}

fn results(out: &[Element]) -> Results {
    let (reply, messages) = out.split_last().expect("a reply");
    assert_eq!(
        reply.attr("type"),
        Some("result"),
        "{}",
        String::from(reply)
    );
    let mut items = Vec::new();
    for m in messages {
        assert_eq!(m.attr("from"), Some("pubsub.localhost"));
        let result = m.get_child("result", MAM).expect("a result");
        assert_eq!(result.attr("queryid"), Some("f1"));
        let forwarded = result.get_child("forwarded", FORWARD).unwrap();
        let stamp = forwarded
            .get_child("delay", DELAY)
            .unwrap()
            .attr("stamp")
            .unwrap();
        assert!(pubsub_guard::datetime::parse(stamp).is_ok(), "{stamp}");
        let item = forwarded
            .get_child("message", "jabber:client")
            .unwrap()
            .get_child("event", EVENT)
            .unwrap()
            .get_child("items", EVENT)
            .unwrap()
            .get_child("item", EVENT)
            .unwrap();
        items.push((
            item.attr("id").unwrap().to_owned(),
            result.attr("id").unwrap().to_owned(),
        ));
    }
    let fin = reply.get_child("fin", MAM).expect("a fin");
    let set = fin.get_child("set", RSM).unwrap();
    let text = |n: &str| set.get_child(n, RSM).map(Element::text);
    let first = set
        .get_child("first", RSM)
        .map(|f| format!("{}@{}", f.text(), f.attr("index").unwrap_or("?")));
    let complete = fin.attr("complete") == Some("true");
    Results {
        fin: format!(
            "{} {} {} {}",
            complete,
            first.unwrap_or("-".into()),
            text("last").unwrap_or("-".into()),
            text("count").unwrap_or("-".into())
        ),
        last: text("last"),
        items,
        complete,
    }
}

fn item_ids(r: &Results) -> Vec<&str> {
    r.items.iter().map(|(id, _)| id.as_str()).collect()
}

/// Makes /location/alice keep `max_items`, and send its last item on subscribe.
fn renew_alice(w: &World, max_items: u32, send_last: bool) {
    w.storage.delete_node("/location/alice").unwrap();
    w.storage
        .create_node(&Node {
            name: "/location/alice".into(),
            owner: Some("alice".into()),
            access: Access::OAuth,
            publishers: vec!["loc@localhost".into()],
            max_items,
            max_age_secs: 0,
            send_last_published_item: send_last,
            created_at: 1,
        })
        .unwrap();
}

/// Renews /location/alice to keep `max_items`, subscribes APP, publishes `count` items
/// `{prefix}1`, `{prefix}2`…, and returns their archive ids as APP saw them.
fn renewed_and_seen(w: &mut World, max_items: u32, prefix: &str, count: usize) -> Vec<String> {
    renew_alice(w, max_items, false);
    w.subscribe_app();
    (1..=count)
        .map(|i| publish_seen(w, &format!("{prefix}{i}")))
        .collect()
}

/// Signs `stanza` over `from` with the world's current credentials, putting the `<oauth/>`
/// in its payload element.
fn signed(w: &World, stanza: Element, from: &str) -> Element {
    signed_on(w, stanza, from, SystemClock)
}

/// [`signed`], with the signature's timestamp read from `clock`.
fn signed_on(w: &World, mut stanza: Element, from: &str, clock: impl Clock) -> Element {
    let signer = Signer::new(
        Credentials {
            consumer_key: w.key.clone(),
            consumer_secret: oauth_xmpp::Secret::new(w.secret.clone()),
            token: Some(w.token.0.clone()),
            token_secret: oauth_xmpp::Secret::new(w.token.1.clone()),
        },
        clock,
        || shared_store::random::token(16).unwrap(),
    );
    let oauth = signer.sign_stanza("iq", from, "pubsub.localhost");
    stanza.children_mut().next().unwrap().append_child(oauth);
    stanza
}

/// Issue 12: every notification carries the item's archive id; the archive pages from any
/// of them, in publish order, with RSM counts and `complete` on the last page.
#[test]
fn notifications_carry_archive_ids_and_the_archive_pages_after_one() {
    let mut w = world();
    let ids = renewed_and_seen(&mut w, 100, "p", 6);
    assert_eq!(ids[0].split('-').next(), Some("1"));
    assert_eq!(ids[5].split('-').next(), Some("6"));
    // Resume after the second: 4 results in pages of 3, then 1.
    let out = w.handle(query(
        APP,
        "/location/alice",
        &field("after-id", &ids[1]),
        "<max>3</max>",
    ));
    let page = results(&out);
    assert_eq!(item_ids(&page), ["p3", "p4", "p5"]);
    assert_eq!(page.items[0].1, ids[2]);
    assert_eq!(page.fin, format!("false {}@0 {} 4", ids[2], ids[4]));
    let out = w.handle(query(
        APP,
        "/location/alice",
        &field("after-id", &ids[1]),
        &format!("<max>3</max><after>{}</after>", page.last.unwrap()),
    ));
    let page = results(&out);
    assert_eq!(item_ids(&page), ["p6"]);
    assert_eq!(page.fin, format!("true {}@3 {} 4", ids[5], ids[5]));
    // Nothing new after the newest: an empty, complete page.
    let out = w.handle(query(
        APP,
        "/location/alice",
        &field("after-id", &ids[5]),
        "",
    ));
    assert_eq!(results(&out).fin, "true - - 0");
    // The newest page (an empty <before/>), and the whole archive without a form.
    let out = w.handle(query(APP, "/location/alice", "", "<max>2</max><before/>"));
    let page = results(&out);
    assert_eq!((item_ids(&page), page.complete), (vec!["p5", "p6"], false));
    let out = w.handle(query(APP, "/location/alice", "", ""));
    assert_eq!(results(&out).items.len(), 6);
    // A retraction leaves a hole, not a gap.
    let retract = w.handle(pubsub(
        LOC,
        "set",
        "<retract node='/location/alice'><item id='p4'/></retract>",
    ));
    assert_eq!(retract.last().unwrap().attr("type"), Some("result"));
    let out = w.handle(query(
        APP,
        "/location/alice",
        &field("after-id", &ids[2]),
        "",
    ));
    assert_eq!(item_ids(&results(&out)), ["p5", "p6"]);
    // By time: everything was published this second.
    let later = pubsub_guard::datetime::format(SystemClock.now() + 3600);
    let out = w.handle(query(APP, "/location/alice", &field("start", &later), ""));
    assert_eq!(results(&out).fin, "true - - 0");
    let out = w.handle(query(
        APP,
        "/location/alice",
        &format!("{}{}", field("end", &later), field("after-id", &ids[3])),
        "",
    ));
    assert_eq!(item_ids(&results(&out)), ["p5", "p6"]);
}

/// Profile N12: a resume point older than what retention kept is refused with a `<gap/>`
/// that says how many items are gone, which positions, and where the node's history now
/// starts; resuming from a point retention did not pass works.
#[test]
fn a_resume_point_past_retention_reports_the_gap() {
    let mut w = world();
    let ids = renewed_and_seen(&mut w, 3, "p", 8);
    // Held: p6, p7, p8; dropped: positions 1 to 5.
    let reply = w.reply(query(
        APP,
        "/location/alice",
        &field("after-id", &ids[1]),
        "",
    ));
    let stamp = pubsub_guard::datetime::format(SystemClock.now());
    let (kind, condition, app, text) = error(&reply);
    assert_eq!(
        (kind.as_str(), condition.as_str()),
        ("cancel", "item-not-found")
    );
    assert_eq!(app.as_deref(), Some("gap"));
    assert_eq!(
        text,
        format!(
            "the node \"/location/alice\" no longer holds what followed {}: 3 items (positions 3 to 5, the last published {stamp}) were dropped by its retention (at most 3 items); the oldest item it holds is {}; query again without after-id to read from there",
            ids[1], ids[5]
        )
    );
    let gap = reply
        .get_child("error", "jabber:component:accept")
        .unwrap()
        .get_child("gap", GAP)
        .unwrap();
    let attrs: Vec<(&str, &str)> = ["after", "first", "last", "count", "oldest"]
        .iter()
        .map(|a| (*a, gap.attr(*a).unwrap()))
        .collect();
    assert_eq!(
        attrs,
        [
            ("after", ids[1].as_str()),
            ("first", "3"),
            ("last", "5"),
            ("count", "3"),
            ("oldest", ids[5].as_str())
        ]
    );
    // An RSM <after/> resume point is checked the same way.
    let reply = w.reply(query(
        APP,
        "/location/alice",
        "",
        &format!("<after>{}</after>", ids[0]),
    ));
    assert_eq!(error(&reply).2.as_deref(), Some("gap"));
    // The newest position dropped is no gap: what follows it is all held.
    let out = w.handle(query(
        APP,
        "/location/alice",
        &field("after-id", &ids[4]),
        "",
    ));
    assert_eq!(item_ids(&results(&out)), ["p6", "p7", "p8"]);
    // Ids the node never gave.
    for bad in ["9-1", "abc", "0-0", "-1", "3"] {
        expect(
            &w.reply(query(APP, "/location/alice", &field("after-id", bad), "")),
            "cancel",
            "item-not-found",
            None,
            &format!("the node \"/location/alice\" has no item with archive id {bad:?}"),
        );
    }
}

/// Profile N11: a consumer is replayed only what was published while one of its grants
/// covered the node: not before its first grant, not while it was revoked.
#[test]
fn replay_skips_what_was_published_outside_the_consumers_grants() {
    let mut w = world();
    renew_alice(&w, 100, false);
    // A second application, granted only after "early" was published.
    let now = SystemClock.now();
    publish(&mut w, "early");
    let (key, secret) = w.store.add_consumer("Later", None, None, now).unwrap();
    let grant = w
        .store
        .grant("alice", &key, &Scope::parse("/location/alice"), None, now)
        .unwrap();
    w.subscribe_app();
    publish(&mut w, "granted");
    // APP's token is revoked: "revoked" is published while it holds none.
    w.store
        .revoke_tokens(&RevokeBy::Id(w.token_id), now)
        .unwrap();
    w.service.follow_changes();
    publish(&mut w, "revoked");
    // The owner grants APP again; it subscribes with the new token.
    let again = w
        .store
        .grant(
            "alice",
            &w.key.clone(),
            &Scope::parse("/location/alice"),
            None,
            now,
        )
        .unwrap();
    w.token = (again.token.clone(), again.secret.expose().to_owned());
    w.subscribe_app();
    publish(&mut w, "regranted");
    // APP: its first grant's span and its second's, not the revoked stretch.
    let out = w.handle(query(APP, "/location/alice", "", ""));
    let page = results(&out);
    assert_eq!(item_ids(&page), ["early", "granted", "regranted"]);
    assert_eq!(page.fin.split(' ').next_back(), Some("3"));
    // The items request applies the same rule, with the same count.
    let (ids, set) = crate::service::page_of(&w.reply(pubsub(
        APP,
        "get",
        &format!("<items node='/location/alice'/><set xmlns='{RSM}'/>"),
    )));
    assert_eq!(ids, ["early", "granted", "regranted"]);
    assert!(set.ends_with(" 3"), "{set}");
    // The later application, by a signed query: only what followed its grant.
    w.key = key;
    w.secret = secret.expose().to_owned();
    w.token = (grant.token.clone(), grant.secret.expose().to_owned());
    let eve_query = signed(&w, query(EVE, "/location/alice", "", ""), EVE);
    let page = results(&w.handle(eve_query));
    assert_eq!(
        item_ids(&page),
        ["granted", "revoked", "regranted"],
        "the later app's grant covers everything after it"
    );
    // The publisher sees everything.
    let out = w.handle(query(LOC, "/location/alice", "", ""));
    assert_eq!(results(&out).items.len(), 4);
}

/// Issue 12: a query needs the same live token as a subscription: a live subscription, or a
/// signed request; after a revocation neither works.
#[test]
fn an_archive_query_passes_the_same_gate_as_a_subscription() {
    let mut w = world();
    renew_alice(&w, 100, false);
    publish(&mut w, "one");
    // Nobody subscribed, nothing signed: the gate's answer, for the node and for a missing one.
    for node in ["/location/alice", "/location/nobody"] {
        expect(
            &w.reply(query(EVE, node, "", "")),
            "auth",
            "not-authorized",
            Some("token-required"),
            "this node is protected: the request must carry an <oauth xmlns='urn:xmpp:oauth:0'/> element with an access token",
        );
    }
    // A signed query works without a subscription.
    let signed_query = signed(&w, query(APP, "/location/alice", "", ""), APP);
    assert_eq!(item_ids(&results(&w.handle(signed_query))), ["one"]);
    // Subscribed, unsigned works; once revoked, neither.
    w.subscribe_app();
    assert_eq!(
        item_ids(&results(&w.handle(query(APP, "/location/alice", "", "")))),
        ["one"]
    );
    w.store
        .revoke_tokens(&RevokeBy::Id(w.token_id), SystemClock.now())
        .unwrap();
    expect(
        &w.reply(query(APP, "/location/alice", "", "")),
        "auth",
        "not-authorized",
        Some("token-required"),
        "this node is protected: the request must carry an <oauth xmlns='urn:xmpp:oauth:0'/> element with an access token",
    );
    let signed_query = signed(&w, query(APP, "/location/alice", "", ""), APP);
    expect(
        &w.reply(signed_query),
        "auth",
        "not-authorized",
        Some("invalid-token"),
        "the token has been revoked",
    );
}

/// Issue 12: bad archive requests are refused with their reason, each alone.
#[test]
fn bad_archive_requests_are_refused_with_their_reason() {
    let mut w = world();
    w.subscribe_app();
    let node = "/location/alice";
    let cases: &[(Element, &str, Option<&str>, &str)] = &[
        (
            iq(APP, "set", &format!("<query xmlns='{MAM}'/>")),
            "bad-request",
            Some("nodeid-required"),
            "an archive query to this service names a node (XEP-0442): <query node='…'/>",
        ),
        (
            iq(
                APP,
                "set",
                &format!(
                    "<query xmlns='{MAM}' node='{node}'><x xmlns='jabber:x:data' type='form'/></query>"
                ),
            ),
            "bad-request",
            None,
            "the archive query's form must be of type 'submit'",
        ),
        (
            iq(
                APP,
                "set",
                &format!(
                    "<query xmlns='{MAM}' node='{node}'><x xmlns='jabber:x:data' type='submit'>{}</x></query>",
                    field("FORM_TYPE", "urn:xmpp:mam:1")
                ),
            ),
            "bad-request",
            None,
            "the archive query's FORM_TYPE is \"urn:xmpp:mam:1\"; this service reads \"urn:xmpp:mam:2\"",
        ),
        (
            query(APP, node, &field("with", "alice@localhost"), ""),
            "bad-request",
            None,
            "a node's archive has no 'with' field: every item of a node comes from the service",
        ),
        (
            query(APP, node, &field("ids", "1-1"), ""),
            "bad-request",
            None,
            "the archive query's field \"ids\" is not supported here (fields: start, end, after-id, before-id)",
        ),
        (
            query(APP, node, &field("start", "yesterday"), ""),
            "bad-request",
            None,
            "the archive query's field \"start\": \"yesterday\" is not an XEP-0082 date and time (like 2026-12-02T05:00:00Z)",
        ),
        (
            query(
                APP,
                node,
                "<field var='end'><value>2026-12-02T05:00:00Z</value><value>2026-12-03T05:00:00Z</value></field>",
                "",
            ),
            "bad-request",
            None,
            "the archive query's field \"end\" has more than one value",
        ),
        (
            query(APP, node, "", "<max>lots</max>"),
            "bad-request",
            None,
            "RSM <max/> must be a whole number (got \"lots\")",
        ),
        (
            query(APP, node, "", "<after/>"),
            "bad-request",
            None,
            "RSM <after/> needs an archive id",
        ),
        (
            query(APP, node, "", "<after>1-1</after><before/>"),
            "bad-request",
            None,
            "RSM: give at most one of <after/>, <before/> and <index/>",
        ),
        (
            query(APP, node, &field("before-id", "7-7"), ""),
            "item-not-found",
            None,
            "the node \"/location/alice\" has no item with archive id \"7-7\"",
        ),
    ];
    for (request, condition, app, text) in cases {
        let reply = w.reply(request.clone());
        let (_, got, got_app, got_text) = error(&reply);
        assert_eq!(
            (got.as_str(), got_app.as_deref(), got_text.as_str()),
            (*condition, *app, *text),
            "{}",
            String::from(request)
        );
    }
    // The form itself is offered to anyone (it tells nothing about a node).
    let reply = w.reply(iq(EVE, "get", &format!("<query xmlns='{MAM}'/>")));
    let vars: Vec<&str> = reply
        .get_child("query", MAM)
        .unwrap()
        .get_child("x", "jabber:x:data")
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    assert_eq!(vars, ["FORM_TYPE", "start", "end", "after-id", "before-id"]);
}

/// Issue 12: paging the archive while items keep coming loses and duplicates nothing.
#[test]
fn paging_while_publishing_loses_and_duplicates_nothing() {
    let mut w = world();
    renew_alice(&w, 1000, false);
    w.subscribe_app();
    let first = publish_seen(&mut w, "i0");
    for i in 1..20 {
        publish(&mut w, &format!("i{i}"));
    }
    let mut seen: Vec<String> = Vec::new();
    let mut after = first.clone();
    let mut next = 20;
    for _ in 0..100 {
        let out = w.handle(query(
            APP,
            "/location/alice",
            &field("after-id", &first),
            &format!("<max>3</max><after>{after}</after>"),
        ));
        let page = results(&out);
        seen.extend(item_ids(&page).into_iter().map(str::to_owned));
        if let Some(last) = &page.last {
            after = last.clone();
        }
        if page.complete {
            break;
        }
        // Two more published between pages, for a while.
        if next < 30 {
            for _ in 0..2 {
                publish(&mut w, &format!("i{next}"));
                next += 1;
            }
        }
    }
    let expected: Vec<String> = (1..next).map(|i| format!("i{i}")).collect();
    assert_eq!(seen, expected);
}

/// XEP-0060 §6.1.7: a node that sends its last item on subscribe does so right after the
/// result, with its archive id and when it was published; only an item the new grant
/// covers is sent.
#[test]
fn a_new_subscriber_gets_the_last_item_it_may_see() {
    let mut w = world();
    renew_alice(&w, 100, true);
    // Nothing published: only the result.
    w.subscribe_app();
    publish(&mut w, "one");
    let last = publish(&mut w, "two");
    let archive_id = stanza_id(&last[0]);
    let out = w.handle(w.signed_subscribe("/location/alice"));
    assert_eq!(
        out.len(),
        2,
        "{:?}",
        out.iter().map(String::from).collect::<Vec<_>>()
    );
    assert_eq!(out[0].attr("type"), Some("result"));
    let message = &out[1];
    assert_eq!(message.attr("to"), Some("app@localhost"));
    assert_eq!(stanza_id(message), archive_id);
    let item = message
        .get_child("event", EVENT)
        .unwrap()
        .get_child("items", EVENT)
        .unwrap()
        .get_child("item", EVENT)
        .unwrap();
    assert_eq!(item.attr("id"), Some("two"));
    assert!(message.get_child("delay", DELAY).is_some());
    // A consumer granted after the last item gets only the result.
    let now = SystemClock.now();
    let (key, secret) = w.store.add_consumer("Later", None, None, now).unwrap();
    let grant = w
        .store
        .grant("alice", &key, &Scope::parse("/location/alice"), None, now)
        .unwrap();
    w.key = key;
    w.secret = secret.expose().to_owned();
    w.token = (grant.token.clone(), grant.secret.expose().to_owned());
    let out = w.handle(w.signed_subscribe_as(EVE, "/location/alice", "eve@localhost"));
    assert_eq!(
        out.len(),
        1,
        "{:?}",
        out.iter().map(String::from).collect::<Vec<_>>()
    );
}

/// Issue 12: disco#info says what the guard does (archive, stanza ids, the last item,
/// subscription notifications) and a node's retention.
#[test]
fn disco_advertises_the_archive_and_a_nodes_retention() {
    let mut w = world();
    let reply = w.reply(iq(
        EVE,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info' node='/news'/>",
    ));
    let query = reply
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    let features: Vec<&str> = query
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var"))
        .collect();
    for wanted in [
        MAM,
        SID,
        "http://jabber.org/protocol/pubsub#last-published",
        "http://jabber.org/protocol/pubsub#subscription-notifications",
        "http://jabber.org/protocol/rsm",
    ] {
        assert!(features.contains(&wanted), "{wanted} in {features:?}");
    }
    let form = query.get_child("x", "jabber:x:data").unwrap();
    let fields: Vec<(String, String)> = form
        .children()
        .map(|f| {
            (
                f.attr("var").unwrap().to_owned(),
                f.get_child("value", "jabber:x:data").unwrap().text(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            ("FORM_TYPE", "http://jabber.org/protocol/pubsub#meta-data"),
            ("pubsub#type", "leaf"),
            ("pubsub#persist_items", "1"),
            ("pubsub#max_items", "2"),
            ("pubsub#send_last_published_item", "never"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
}

/// A clock the test moves.
#[derive(Clone, Default)]
struct TestClock(Arc<AtomicU64>);

impl Clock for TestClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Retention by age: publishing drops what is older than the node's `max_age`, and the
/// sweeper (run by the change-log poll once a minute) drops it when nobody publishes; a
/// consumer that last saw a dropped item is told of the gap.
#[test]
fn retention_by_age_on_publish_and_by_the_sweeper() {
    let w = world();
    w.storage
        .create_node(&Node {
            name: "/recent".into(),
            owner: None,
            access: Access::Open,
            publishers: vec!["loc@localhost".into()],
            max_items: 100,
            max_age_secs: 600,
            send_last_published_item: false,
            created_at: 1,
        })
        .unwrap();
    let clock = TestClock::default();
    clock.0.store(1_000_000, Ordering::SeqCst);
    let mut service = Service::new(
        &w.config,
        Box::new(DbStorage::open(&w.db).unwrap()),
        w.store.clone(),
    )
    .with_clock(clock.clone());
    let mut ids = Vec::new();
    for (i, at) in [(0, 1_000_000), (1, 1_000_100), (2, 1_000_500)] {
        clock.0.store(at, Ordering::SeqCst);
        let out = service.handle(&pubsub(
            LOC,
            "set",
            &format!(
                "<publish node='/recent'><item id='r{i}'><p xmlns='urn:test'/></item></publish>"
            ),
        ));
        assert_eq!(out.last().unwrap().attr("type"), Some("result"));
        ids.push(i);
    }
    let held = |service: &mut Service| -> Vec<String> {
        let reply = service.handle(&pubsub(EVE, "get", "<items node='/recent'/>"));
        crate::service::page_of(reply.last().unwrap()).0
    };
    assert_eq!(held(&mut service), ["r0", "r1", "r2"]);
    // 650 s after r0: the next publish drops it.
    clock.0.store(1_000_650, Ordering::SeqCst);
    service.handle(&pubsub(
        LOC,
        "set",
        "<publish node='/recent'><item id='r3'><p xmlns='urn:test'/></item></publish>",
    ));
    assert_eq!(held(&mut service), ["r1", "r2", "r3"]);
    // Nobody publishes; the sweeper drops r1 and r2 once they are past 600 s.
    clock.0.store(1_001_150, Ordering::SeqCst);
    service.follow_changes();
    assert_eq!(held(&mut service), ["r3"]);
    // A reader that last saw r0 (position 1) is told three items went.
    let reply = service.handle(&query(EVE, "/recent", &field("after-id", "1-1"), ""));
    let gap = reply[0]
        .get_child("error", "jabber:component:accept")
        .and_then(|e| e.get_child("gap", GAP))
        .expect("a gap");
    assert_eq!(
        (gap.attr("first"), gap.attr("last"), gap.attr("count")),
        (Some("2"), Some("3"), Some("2"))
    );
    assert!(
        error(&reply[0])
            .3
            .contains("(at most 100 items, for at most 10m)"),
        "{}",
        error(&reply[0]).3
    );
}

/// Issue 13: the service does no I/O of its own: on a clock the test moves and with ids it
/// is given, a token's expiry is checked at the moment the test chooses, by the signature
/// check and by the change log alike.
#[test]
fn expiry_follows_the_services_clock_and_ids_come_from_its_source() {
    let mut w = world();
    let clock = TestClock::default();
    let start = 2_000_000_000;
    clock.0.store(start, Ordering::SeqCst);
    let grant = w
        .store
        .grant(
            "alice",
            &w.key.clone(),
            &Scope::parse("/location/alice"),
            Some(start + 60),
            start,
        )
        .unwrap();
    w.token = (grant.token.clone(), grant.secret.expose().to_owned());
    let next = Arc::new(AtomicU64::new(0));
    let mut service = Service::new(
        &w.config,
        Box::new(DbStorage::open(&w.db).unwrap()),
        w.store.clone(),
    )
    .with_clock(clock.clone())
    .with_ids({
        let next = Arc::clone(&next);
        move || Ok(format!("id-{}", next.fetch_add(1, Ordering::SeqCst)))
    });
    let signed_at = |w: &World, at: u64| {
        let subscribe = pubsub(
            APP,
            "set",
            "<subscribe node='/location/alice' jid='app@localhost'/>",
        );
        signed_on(w, subscribe, APP, oauth_xmpp::replay::FixedClock(at))
    };
    // Within the token's life on the service's clock: subscribed, with the id it was given.
    let out = service.handle(&signed_at(&w, start + 10));
    let sub = out[0]
        .get_child("pubsub", crate::service::PUBSUB)
        .and_then(|p| p.get_child("subscription", crate::service::PUBSUB))
        .expect("subscribed");
    assert_eq!(sub.attr("subid"), Some("id-0"));
    // A minute later the token has expired: the next poll logs it and ends the subscription.
    clock.0.store(start + 61, Ordering::SeqCst);
    let ended = service.follow_changes();
    assert!(
        ended.iter().any(crate::service::is_none_event),
        "{:?}",
        ended.iter().map(String::from).collect::<Vec<_>>()
    );
    // And a subscribe signed then is refused as expired.
    let reply = service.handle(&signed_at(&w, start + 62));
    expect(
        &reply[0],
        "auth",
        "not-authorized",
        Some("invalid-token"),
        "the token expired at 2000000060 (seconds since 1970)",
    );
}

/// An archive id of a node that was deleted does not resume a new node of the same name,
/// even where the new one's positions have grown past it.
#[test]
fn an_archive_id_of_a_deleted_node_is_unknown_to_its_successor() {
    let mut w = world();
    let old = renewed_and_seen(&mut w, 100, "old", 2);
    let new = renewed_and_seen(&mut w, 100, "new", 3);
    assert_eq!(old[1].split('-').next(), new[1].split('-').next());
    expect(
        &w.reply(query(
            APP,
            "/location/alice",
            &field("after-id", &old[1]),
            "",
        )),
        "cancel",
        "item-not-found",
        None,
        &format!(
            "the node \"/location/alice\" has no item with archive id {:?}",
            old[1]
        ),
    );
    let out = w.handle(query(
        APP,
        "/location/alice",
        &field("after-id", &new[0]),
        "",
    ));
    assert_eq!(item_ids(&results(&out)), ["new2", "new3"]);
}
