//! The XEP-0060 requests a consumer and a publisher send, the XEP-0235 signature on a
//! subscribe or an archive query, and readers for what comes back: event notifications with
//! their XEP-0359 archive ids, and a node's archive read with XEP-0313 as XEP-0442 describes
//! (results, `<fin/>`, and the guard's `<gap/>` when items were dropped before they could
//! be read).

use minidom::Element;
use oauth_xmpp::NonceSource;
use oauth_xmpp::replay::Clock;
use oauth_xmpp::sign::Signer;
use xmpp_component::ns;

use crate::xmpp::{CLIENT, name};

/// The pubsub namespace.
pub const PUBSUB: &str = ns::PUBSUB;
/// The event namespace.
pub const EVENT: &str = ns::PUBSUB_EVENT;
/// XEP-0313: message archive management, version 2.
pub const MAM: &str = ns::MAM;
/// XEP-0359: unique and stable stanza ids.
pub const SID: &str = ns::SID;
/// XEP-0297: stanza forwarding.
pub const FORWARD: &str = ns::FORWARD;
/// XEP-0004: data forms.
pub const DATA: &str = ns::DATA_FORMS;
/// XEP-0059: result set management.
pub const RSM: &str = ns::RSM;
/// The guard's application condition for an archive query whose start was dropped.
pub const GAP: &str = ns::GAP;

fn iq(kind: &str, service: &str, pubsub: Element) -> Element {
    Element::builder("iq", CLIENT)
        .attr(name("type"), kind)
        .attr(name("to"), service)
        .append(pubsub)
        .build()
}

/// `<subscribe node jid/>` to `service`, unsigned.
pub fn subscribe(service: &str, node: &str, jid: &str) -> Element {
    let action = Element::builder("subscribe", PUBSUB)
        .attr(name("node"), node)
        .attr(name("jid"), jid)
        .build();
    iq(
        "set",
        service,
        Element::builder("pubsub", PUBSUB).append(action).build(),
    )
}

/// Adds a signed `<oauth/>` to the payload of the IQ `request` (XEP-0235 §4): inside its
/// `<pubsub/>` for a pubsub request, inside its `<query/>` for an archive query. Signed over
/// `from` (the sender's full JID, as the server will stamp it) and the request's `to`.
pub fn sign<C: Clock, N: NonceSource>(request: &mut Element, from: &str, signer: &Signer<C, N>) {
    let to = request.attr("to").unwrap_or_default().to_owned();
    let oauth = signer.sign_stanza(request.name(), from, &to);
    let payload = match request.get_child("pubsub", PUBSUB) {
        Some(_) => request.get_child_mut("pubsub", PUBSUB),
        None => request.get_child_mut("query", MAM),
    };
    if let Some(payload) = payload {
        payload.append_child(oauth);
    }
}

/// `<publish node><item [id]>payload</item></publish>`.
pub fn publish(service: &str, node: &str, id: Option<&str>, payload: Element) -> Element {
    let mut item = Element::builder("item", PUBSUB).append(payload).build();
    if let Some(id) = id {
        item.set_attr(minidom::rxml::Namespace::NONE, name("id"), id);
    }
    let action = Element::builder("publish", PUBSUB)
        .attr(name("node"), node)
        .append(item)
        .build();
    iq(
        "set",
        service,
        Element::builder("pubsub", PUBSUB).append(action).build(),
    )
}

/// An Atom entry with a GeoRSS point: what the seed's location service publishes.
pub fn location_entry(title: &str, point: &str) -> Element {
    Element::builder("entry", "http://www.w3.org/2005/Atom")
        .append(Element::builder("title", "http://www.w3.org/2005/Atom").append(title))
        .append(Element::builder("point", "http://www.georss.org/georss").append(point))
        .build()
}

/// A stanza error, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// The error type (RFC 6120 §8.3.2: `auth`, `cancel`, `modify`, `wait`…).
    pub kind: String,
    /// The defined condition (`not-authorized`…).
    pub condition: String,
    /// The application condition's name, if any (`token-required`…).
    pub app: Option<String>,
    /// The text.
    pub text: String,
}

/// The error of an error reply, or `None` for a result.
pub fn error_of(reply: &Element) -> Option<ErrorReply> {
    if reply.attr("type") != Some("error") {
        return None;
    }
    let error = reply.children().find(|c| c.name() == "error")?;
    let mut read = ErrorReply {
        kind: error.attr("type").unwrap_or_default().to_owned(),
        condition: String::new(),
        app: None,
        text: String::new(),
    };
    for child in error.children() {
        match (child.ns().as_str(), child.name()) {
            (ns::STANZAS, "text") => read.text = child.text(),
            (ns::STANZAS, condition) => read.condition = condition.to_owned(),
            (_, app) => read.app = Some(app.to_owned()),
        }
    }
    Some(read)
}

/// The subscription state a subscribe result or a subscription event carries
/// (`subscribed`, `none`…), with its node.
pub fn subscription_of(stanza: &Element) -> Option<(String, String)> {
    let sub = stanza
        .get_child("pubsub", PUBSUB)
        .and_then(|p| p.get_child("subscription", PUBSUB))
        .or_else(|| {
            stanza
                .get_child("event", EVENT)
                .and_then(|e| e.get_child("subscription", EVENT))
        })?;
    Some((
        sub.attr("node")?.to_owned(),
        sub.attr("subscription")?.to_owned(),
    ))
}

/// An item of an event notification: its id and its payload, if any.
pub type EventItem = (String, Option<Element>);

/// The items of an event notification: the node and each item.
pub fn event_items(message: &Element) -> Option<(String, Vec<EventItem>)> {
    let items = message
        .get_child("event", EVENT)?
        .get_child("items", EVENT)?;
    let list = items
        .children()
        .filter(|c| c.is("item", EVENT))
        .map(|item| {
            (
                item.attr("id").unwrap_or_default().to_owned(),
                item.children().next().cloned(),
            )
        })
        .collect();
    Some((items.attr("node")?.to_owned(), list))
}

/// The id the service gave a published item.
pub fn published_id(reply: &Element) -> Option<String> {
    reply
        .get_child("pubsub", PUBSUB)?
        .get_child("publish", PUBSUB)?
        .get_child("item", PUBSUB)?
        .attr("id")
        .map(str::to_owned)
}

/// The archive id a service gave the item of a notification: the XEP-0359
/// `<stanza-id by id/>` the service itself stamped (`by` is `service`), or `None` (a
/// retract or a subscription notice, or a service that keeps no archive).
pub fn archive_id(message: &Element, service: &str) -> Option<String> {
    message
        .children()
        .filter(|c| c.is("stanza-id", SID))
        .find(|c| c.attr("by") == Some(service))
        .and_then(|c| c.attr("id"))
        .map(str::to_owned)
}

/// One page of a query of a node's archive (XEP-0313 §4, on a pubsub node as XEP-0442
/// describes): which items, and which page of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveQuery<'a> {
    /// The node whose archive is read.
    pub node: &'a str,
    /// The `queryid` each result will carry, to tell them from other messages.
    pub queryid: &'a str,
    /// Only the items after this archive id (the form's `after-id` field); all the items
    /// the node holds when `None`.
    pub after_id: Option<&'a str>,
    /// The page after this archive id within the query (XEP-0059 `<after/>`, the `<last/>`
    /// of the previous page); the first page when `None`.
    pub page_after: Option<&'a str>,
    /// The most results in the page (XEP-0059 `<max/>`); the service's own limit when
    /// `None`.
    pub max: Option<u32>,
}

fn field(var: &str, value: &str) -> Element {
    Element::builder("field", DATA)
        .attr(name("var"), var)
        .append(Element::builder("value", DATA).append(value))
        .build()
}

/// The IQ set to `service` that asks for one page of a node's archive.
pub fn archive_query(service: &str, query: &ArchiveQuery<'_>) -> Element {
    let mut form_type = field("FORM_TYPE", MAM);
    form_type.set_attr(minidom::rxml::Namespace::NONE, name("type"), "hidden");
    let mut form = Element::builder("x", DATA)
        .attr(name("type"), "submit")
        .append(form_type)
        .build();
    if let Some(after_id) = query.after_id {
        form.append_child(field("after-id", after_id));
    }
    let mut body = Element::builder("query", MAM)
        .attr(name("queryid"), query.queryid)
        .attr(name("node"), query.node)
        .append(form)
        .build();
    if query.max.is_some() || query.page_after.is_some() {
        let mut set = Element::builder("set", RSM).build();
        if let Some(max) = query.max {
            set.append_child(Element::builder("max", RSM).append(max.to_string()).build());
        }
        if let Some(after) = query.page_after {
            set.append_child(Element::builder("after", RSM).append(after).build());
        }
        body.append_child(set);
    }
    iq("set", service, body)
}

/// An item read from a node's archive: one `<result/>` message of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedItem {
    /// The `queryid` of the query it answers.
    pub queryid: String,
    /// Its archive id.
    pub archive_id: String,
    /// The node of the forwarded notification.
    pub node: String,
    /// The item's id.
    pub item_id: String,
    /// Its payload, if any.
    pub payload: Option<Element>,
}

/// The archived item a `<result xmlns='urn:xmpp:mam:2'/>` message carries: the first item
/// of the event notification it forwards (XEP-0297), or `None` for any other message.
pub fn archive_result(message: &Element) -> Option<ArchivedItem> {
    let result = message.get_child("result", MAM)?;
    let forwarded = result
        .get_child("forwarded", FORWARD)?
        .get_child("message", CLIENT)?;
    let (node, mut items) = event_items(forwarded)?;
    if items.is_empty() {
        return None;
    }
    let (item_id, payload) = items.swap_remove(0);
    Some(ArchivedItem {
        queryid: result.attr("queryid").unwrap_or_default().to_owned(),
        archive_id: result.attr("id")?.to_owned(),
        node,
        item_id,
        payload,
    })
}

/// The end of a page of an archive query: its `<fin/>`, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fin {
    /// Whether this page is the last (`complete='true'`).
    pub complete: bool,
    /// The archive id of the page's first result (XEP-0059 `<first/>`), absent when empty.
    pub first: Option<String>,
    /// The archive id of its last result (`<last/>`): where the next page starts.
    pub last: Option<String>,
    /// How many items the whole query matches (`<count/>`), if the service says.
    pub count: Option<u64>,
}

/// The `<fin/>` of an archive query's result IQ, or `None` for another reply.
pub fn fin_of(reply: &Element) -> Option<Fin> {
    if reply.attr("type") != Some("result") {
        return None;
    }
    let fin = reply.get_child("fin", MAM)?;
    let set = fin.get_child("set", RSM);
    let text = |child: &str| set.and_then(|s| s.get_child(child, RSM)).map(Element::text);
    Some(Fin {
        complete: matches!(fin.attr("complete"), Some("true" | "1")),
        first: text("first"),
        last: text("last"),
        count: text("count").and_then(|c| c.trim().parse().ok()),
    })
}

/// The guard's account of items a node dropped (by its retention) after the position an
/// archive query asked to start from, before they could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The position the query asked to start after.
    pub after: String,
    /// The first position lost.
    pub first: String,
    /// The last position lost.
    pub last: String,
    /// How many items were lost.
    pub count: u64,
    /// The archive id of the oldest item the node still holds; absent when it holds none.
    pub oldest: Option<String>,
}

/// The `<gap xmlns='urn:xmpp:pubsub-guard:gap:0'/>` of an error reply, or `None` for any
/// other reply (a result, another error, a gap without its required attributes).
pub fn gap_of(reply: &Element) -> Option<Gap> {
    if reply.attr("type") != Some("error") {
        return None;
    }
    let gap = reply
        .children()
        .find(|c| c.name() == "error")?
        .get_child("gap", GAP)?;
    let attr = |n: &str| gap.attr(n).map(str::to_owned);
    Some(Gap {
        after: attr("after")?,
        first: attr("first")?,
        last: attr("last")?,
        count: gap.attr("count")?.parse().ok()?,
        oldest: attr("oldest"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a stanza written as a client's stream would carry it.
    fn stanza(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    const NOTIFICATION: &str = "<message xmlns='jabber:client' from='pubsub.localhost' \
        to='findmenow@localhost/consumer' type='headline' id='n1'>\
        <event xmlns='http://jabber.org/protocol/pubsub#event'><items node='/location/alice'>\
        <item id='ITEMID'><n xmlns='urn:example'>PAYLOAD</n></item></items></event>\
        <stanza-id xmlns='urn:xmpp:sid:0' by='pubsub.localhost' id='17-4242'/></message>";

    #[test]
    fn the_archive_id_of_a_notification_is_the_services_stanza_id() {
        let message = stanza(NOTIFICATION);
        assert_eq!(
            archive_id(&message, "pubsub.localhost").as_deref(),
            Some("17-4242")
        );
        // Stamped by someone else: not the service's archive id.
        assert_eq!(archive_id(&message, "localhost"), None);
        let (node, items) = event_items(&message).unwrap();
        assert_eq!(node, "/location/alice");
        assert_eq!(items[0].0, "ITEMID");
        // The last item sent after a subscribe carries a delay too, and the same id.
        let delayed = stanza(&NOTIFICATION.replace(
            "</event>",
            "</event><delay xmlns='urn:xmpp:delay' stamp='2026-12-02T05:00:00Z'/>",
        ));
        assert_eq!(
            archive_id(&delayed, "pubsub.localhost").as_deref(),
            Some("17-4242")
        );
    }

    #[test]
    fn retracts_and_subscription_notices_carry_no_archive_id() {
        let cases = [
            (
                "retract",
                "<message xmlns='jabber:client' from='pubsub.localhost'>\
                 <event xmlns='http://jabber.org/protocol/pubsub#event'>\
                 <items node='/location/alice'><retract id='ITEMID'/></items></event></message>",
            ),
            (
                "subscription",
                "<message xmlns='jabber:client' from='pubsub.localhost'>\
                 <event xmlns='http://jabber.org/protocol/pubsub#event'>\
                 <subscription node='/location/alice' jid='findmenow@localhost' \
                 subscription='none'/></event></message>",
            ),
            (
                "another namespace",
                "<message xmlns='jabber:client' from='pubsub.localhost'>\
                 <stanza-id xmlns='urn:xmpp:sid:1' by='pubsub.localhost' id='1'/></message>",
            ),
        ];
        for (name, xml) in cases {
            assert_eq!(archive_id(&stanza(xml), "pubsub.localhost"), None, "{name}");
        }
    }

    #[test]
    fn an_archive_query_is_the_specs_example() {
        let cases = [
            (
                "after an id, the first page",
                ArchiveQuery {
                    node: "/location/alice",
                    queryid: "QID",
                    after_id: Some("17-4242"),
                    page_after: None,
                    max: Some(250),
                },
                "<field var='after-id'><value>17-4242</value></field></x>\
                 <set xmlns='http://jabber.org/protocol/rsm'><max>250</max></set>",
            ),
            (
                "after an id, the next page",
                ArchiveQuery {
                    node: "/location/alice",
                    queryid: "QID",
                    after_id: Some("17-4242"),
                    page_after: Some("17-4492"),
                    max: Some(250),
                },
                "<field var='after-id'><value>17-4242</value></field></x>\
                 <set xmlns='http://jabber.org/protocol/rsm'><max>250</max>\
                 <after>17-4492</after></set>",
            ),
            (
                "from the start, no page size",
                ArchiveQuery {
                    node: "/location/alice",
                    queryid: "QID",
                    after_id: None,
                    page_after: None,
                    max: None,
                },
                "</x>",
            ),
        ];
        for (name, query, tail) in cases {
            let expected = stanza(&format!(
                "<iq xmlns='jabber:client' type='set' to='pubsub.localhost'>\
                 <query xmlns='urn:xmpp:mam:2' queryid='QID' node='/location/alice'>\
                 <x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
                 {tail}</query></iq>"
            ));
            assert_eq!(
                archive_query("pubsub.localhost", &query),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn a_signed_archive_query_carries_oauth_inside_its_query() {
        use oauth_xmpp::{Credentials, FixedClock, Secret};
        let signer = Signer::new(
            Credentials {
                consumer_key: "0685bd9184jfhq22".into(),
                consumer_secret: Secret::new("consumersecret".to_owned()),
                token: Some("ad180jjd733klru7".into()),
                token_secret: Secret::new("tokensecret".to_owned()),
            },
            FixedClock(1_218_137_833),
            || "4572616e48616d6d65724c61686176".to_owned(),
        );
        let query = ArchiveQuery {
            node: "/location/alice",
            queryid: "QID",
            after_id: None,
            page_after: None,
            max: None,
        };
        let mut request = archive_query("pubsub.localhost", &query);
        sign(&mut request, "findmenow@localhost/consumer", &signer);
        let body = request.get_child("query", MAM).unwrap();
        let oauth = body.get_child("oauth", oauth_xmpp::ns::OAUTH).unwrap();
        assert_eq!(
            oauth
                .get_child("oauth_token", oauth_xmpp::ns::OAUTH)
                .map(Element::text),
            Some("ad180jjd733klru7".to_owned())
        );
        assert!(oauth.has_child("oauth_signature", oauth_xmpp::ns::OAUTH));
        // The subscribe still carries it inside <pubsub/>.
        let mut subscribe = subscribe("pubsub.localhost", "/location/alice", "findmenow@localhost");
        sign(&mut subscribe, "findmenow@localhost/consumer", &signer);
        assert!(
            subscribe
                .get_child("pubsub", PUBSUB)
                .unwrap()
                .has_child("oauth", oauth_xmpp::ns::OAUTH)
        );
    }

    const RESULT: &str = "<message xmlns='jabber:client' to='findmenow@localhost/consumer' \
        from='pubsub.localhost'><result xmlns='urn:xmpp:mam:2' queryid='QID' id='17-4243'>\
        <forwarded xmlns='urn:xmpp:forward:0'>\
        <delay xmlns='urn:xmpp:delay' stamp='2026-12-02T05:00:00Z'/>\
        <message xmlns='jabber:client' from='pubsub.localhost' type='headline'>\
        <event xmlns='http://jabber.org/protocol/pubsub#event'><items node='/location/alice'>\
        <item id='ITEMID'><n xmlns='urn:example'>PAYLOAD</n></item></items></event>\
        </message></forwarded></result></message>";

    #[test]
    fn an_archive_result_gives_its_item() {
        let read = archive_result(&stanza(RESULT)).unwrap();
        assert_eq!(
            read,
            ArchivedItem {
                queryid: "QID".into(),
                archive_id: "17-4243".into(),
                node: "/location/alice".into(),
                item_id: "ITEMID".into(),
                payload: Some(stanza("<n xmlns='urn:example'>PAYLOAD</n>")),
            }
        );
        // A live notification is not a result.
        assert_eq!(archive_result(&stanza(NOTIFICATION)), None);
        // A result without its archive id, or forwarding no item, is not read.
        for broken in [
            RESULT.replace(" id='17-4243'", ""),
            RESULT.replace(
                "<item id='ITEMID'><n xmlns='urn:example'>PAYLOAD</n></item>",
                "",
            ),
            RESULT.replace("urn:xmpp:forward:0", "urn:xmpp:forward:1"),
        ] {
            assert_eq!(archive_result(&stanza(&broken)), None, "{broken}");
        }
    }

    #[test]
    fn fin_tells_the_last_page_and_where_the_next_starts() {
        let fin = |attrs: &str, set: &str| {
            stanza(&format!(
                "<iq xmlns='jabber:client' type='result' id='q1'>\
                 <fin xmlns='urn:xmpp:mam:2'{attrs}>\
                 <set xmlns='http://jabber.org/protocol/rsm'>{set}</set></fin></iq>"
            ))
        };
        let page = "<first index='0'>17-4243</first><last>17-4492</last><count>1000</count>";
        let cases = [
            (
                "the last page",
                fin(" complete='true'", page),
                Fin {
                    complete: true,
                    first: Some("17-4243".into()),
                    last: Some("17-4492".into()),
                    count: Some(1000),
                },
            ),
            (
                "a page with more after it",
                fin("", page),
                Fin {
                    complete: false,
                    first: Some("17-4243".into()),
                    last: Some("17-4492".into()),
                    count: Some(1000),
                },
            ),
            (
                "complete='false'",
                fin(" complete='false'", page),
                Fin {
                    complete: false,
                    first: Some("17-4243".into()),
                    last: Some("17-4492".into()),
                    count: Some(1000),
                },
            ),
            (
                "an empty page",
                fin(" complete='true'", "<count>0</count>"),
                Fin {
                    complete: true,
                    first: None,
                    last: None,
                    count: Some(0),
                },
            ),
        ];
        for (name, reply, expected) in cases {
            assert_eq!(fin_of(&reply), Some(expected), "{name}");
        }
        assert_eq!(
            fin_of(&stanza("<iq xmlns='jabber:client' type='result' id='q1'/>")),
            None
        );
    }

    const GAP_REPLY: &str = "<iq xmlns='jabber:client' type='error' id='q1' \
        from='pubsub.localhost'><error type='cancel'>\
        <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
        <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>7 items were dropped</text>\
        <gap xmlns='urn:xmpp:pubsub-guard:gap:0' after='17-4242' first='4243' last='4249' \
        count='7' oldest='17-4250'/></error></iq>";

    #[test]
    fn a_gap_names_what_was_lost_and_where_the_node_starts() {
        let reply = stanza(GAP_REPLY);
        assert_eq!(
            gap_of(&reply),
            Some(Gap {
                after: "17-4242".into(),
                first: "4243".into(),
                last: "4249".into(),
                count: 7,
                oldest: Some("17-4250".into()),
            })
        );
        // The stanza error reads as before, with its type.
        assert_eq!(
            error_of(&reply),
            Some(ErrorReply {
                kind: "cancel".into(),
                condition: "item-not-found".into(),
                app: Some("gap".into()),
                text: "7 items were dropped".into(),
            })
        );
        // A node that holds nothing has no oldest item.
        let empty = stanza(&GAP_REPLY.replace(" oldest='17-4250'", ""));
        assert_eq!(gap_of(&empty).unwrap().oldest, None);
    }

    #[test]
    fn other_errors_are_no_gap() {
        let cases = [
            (
                "an unknown id",
                GAP_REPLY.replace(
                    "<gap xmlns='urn:xmpp:pubsub-guard:gap:0' after='17-4242' first='4243' \
                     last='4249' count='7' oldest='17-4250'/>",
                    "",
                ),
            ),
            (
                "a count that is no number",
                GAP_REPLY.replace("count='7'", "count='seven'"),
            ),
            ("no after", GAP_REPLY.replace(" after='17-4242'", "")),
            ("another namespace", GAP_REPLY.replace("gap:0", "gap:1")),
            (
                "a result",
                GAP_REPLY.replace("type='error'", "type='result'"),
            ),
        ];
        for (name, xml) in cases {
            assert_eq!(gap_of(&stanza(&xml)), None, "{name}");
        }
    }
}
