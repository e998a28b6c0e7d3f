//! A node's archive (XEP-0313 on a pubsub node, as XEP-0442 describes): reading the query,
//! and writing its results, its `<fin/>`, its form and a node's metadata. Pure functions; the
//! service decides who may read what.

use minidom::Element;

use crate::ns;
use crate::refusal::{Refusal, name};
use crate::stanza::ElementRef;
use crate::storage::{ArchivePage, Item, Node, PageFrom};
use crate::{config, datetime};

/// The page size of an archive query that gives no `<max/>`.
pub const DEFAULT_PAGE: u32 = 100;

/// The largest page of an archive query (a larger `<max/>` gets this many).
pub const MAX_PAGE: u32 = 500;

/// An archive query, read (ids not yet resolved to positions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The node whose archive is queried.
    pub node: String,
    /// The client's `queryid`, echoed in each result.
    pub queryid: Option<String>,
    /// `start`: items published at or after (seconds since 1970).
    pub start: Option<u64>,
    /// `end`: items published at or before.
    pub end: Option<u64>,
    /// `after-id`: only items after this archive id.
    pub after_id: Option<String>,
    /// `before-id`: only items before this archive id.
    pub before_id: Option<String>,
    /// The page (RSM), by archive ids.
    pub page: PageFrom,
    /// The page size.
    pub max: u32,
}

/// Reads `<query xmlns='urn:xmpp:mam:2' node queryid>` with its optional form and RSM set.
pub fn read(query: ElementRef<'_>) -> Result<Request, Refusal> {
    let node = query
        .attr("node")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            Refusal::bad_request(
                Some("nodeid-required"),
                "an archive query to this service names a node (XEP-0442): <query node='…'/>",
            )
        })?
        .to_owned();
    let mut request = Request {
        node,
        queryid: query.attr("queryid").map(str::to_owned),
        start: None,
        end: None,
        after_id: None,
        before_id: None,
        page: PageFrom::Start,
        max: DEFAULT_PAGE,
    };
    if let Some(form) = query.get_child("x", ns::DATA_FORMS) {
        read_form(form, &mut request)?;
    }
    if let Some(set) = query.get_child("set", ns::RSM) {
        (request.page, request.max) =
            crate::service::rsm_request(set, "archive id", DEFAULT_PAGE, MAX_PAGE)?;
    }
    Ok(request)
}

fn read_form(form: ElementRef<'_>, request: &mut Request) -> Result<(), Refusal> {
    if form.attr("type") != Some("submit") {
        return Err(Refusal::bad_request(
            None,
            "the archive query's form must be of type 'submit'",
        ));
    }
    for field in form.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
        let var = field.attr("var").unwrap_or("");
        let values: Vec<String> = field
            .children()
            .filter(|c| c.is("value", ns::DATA_FORMS))
            .map(|v| v.text())
            .collect();
        let value = match values.as_slice() {
            [] => continue,
            [one] => one.trim().to_owned(),
            _ => {
                return Err(Refusal::bad_request(
                    None,
                    format!("the archive query's field {var:?} has more than one value"),
                ));
            }
        };
        let time = |value: &str| {
            datetime::parse(value).map_err(|e| {
                Refusal::bad_request(None, format!("the archive query's field {var:?}: {e}"))
            })
        };
        match var {
            "FORM_TYPE" if value == ns::MAM => {}
            "FORM_TYPE" => {
                return Err(Refusal::bad_request(
                    None,
                    format!(
                        "the archive query's FORM_TYPE is {value:?}; this service reads {:?}",
                        ns::MAM
                    ),
                ));
            }
            "start" => request.start = Some(time(&value)?),
            "end" => request.end = Some(time(&value)?),
            "after-id" => request.after_id = Some(value),
            "before-id" => request.before_id = Some(value),
            "with" => {
                return Err(Refusal::bad_request(
                    None,
                    "a node's archive has no 'with' field: every item of a node comes from \
                     the service",
                ));
            }
            other => {
                return Err(Refusal::bad_request(
                    None,
                    format!(
                        "the archive query's field {other:?} is not supported here (fields: \
                         start, end, after-id, before-id)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `<delay xmlns='urn:xmpp:delay' from stamp/>` for an item published at `at`.
pub fn delay(service: &str, at: u64) -> Element {
    Element::builder("delay", ns::DELAY)
        .attr(name("from"), service)
        .attr(name("stamp"), datetime::format(at))
        .build()
}

/// `<stanza-id xmlns='urn:xmpp:sid:0' by id/>`: the archive id of a notification.
pub fn stanza_id(service: &str, item: &Item) -> Element {
    Element::builder("stanza-id", ns::SID)
        .attr(name("by"), service)
        .attr(name("id"), item.archive_id())
        .build()
}

/// `<items xmlns='…pubsub#event' node>` around `content` (an `<item/>` or a `<retract/>`):
/// what every notification of the node carries.
pub fn event_items(node: &str, content: Element) -> Element {
    Element::builder("items", ns::PUBSUB_EVENT)
        .attr(name("node"), node)
        .append(content)
        .build()
}

/// One archive result for `to`: the notification of `item` (whose `<item/>` in the event
/// namespace is `entry`), forwarded with its delay.
pub fn result(
    service: &str,
    to: &str,
    id: String,
    queryid: Option<&str>,
    node: &str,
    item: &Item,
    entry: Element,
) -> Element {
    let event = Element::builder("event", ns::PUBSUB_EVENT)
        .append(event_items(node, entry))
        .build();
    let forwarded = Element::builder("forwarded", ns::FORWARD)
        .append(delay(service, item.published_at))
        .append(
            Element::builder("message", ns::CLIENT)
                .attr(name("from"), service)
                .attr(name("type"), "headline")
                .append(event),
        )
        .build();
    let mut result = Element::builder("result", ns::MAM)
        .attr(name("id"), item.archive_id())
        .append(forwarded)
        .build();
    if let Some(queryid) = queryid {
        result.set_attr(minidom::rxml::Namespace::NONE, name("queryid"), queryid);
    }
    Element::builder("message", ns::COMPONENT)
        .attr(name("from"), service)
        .attr(name("to"), to)
        .attr(name("id"), id)
        .append(result)
        .build()
}

/// The `<fin/>` of a page: `complete='true'` when it reaches the end of the query in its
/// direction, and its RSM set.
pub fn fin(page: &ArchivePage) -> Element {
    let mut fin = Element::builder("fin", ns::MAM).build();
    if page.complete {
        fin.set_attr(minidom::rxml::Namespace::NONE, name("complete"), "true");
    }
    let mut set = Element::builder("set", ns::RSM).build();
    if let (Some(first), Some(last)) = (page.items.first(), page.items.last()) {
        set.append_child(
            Element::builder("first", ns::RSM)
                .attr(name("index"), page.first_index.to_string())
                .append(first.archive_id())
                .build(),
        );
        set.append_child(
            Element::builder("last", ns::RSM)
                .append(last.archive_id())
                .build(),
        );
    }
    set.append_child(
        Element::builder("count", ns::RSM)
            .append(page.count.to_string())
            .build(),
    );
    fin.append_child(set);
    fin
}

fn field(var: &str, kind: &str, value: Option<&str>) -> Element {
    let mut field = Element::builder("field", ns::DATA_FORMS)
        .attr(name("var"), var)
        .attr(name("type"), kind)
        .build();
    if let Some(value) = value {
        field.append_child(
            Element::builder("value", ns::DATA_FORMS)
                .append(value)
                .build(),
        );
    }
    field
}

/// The query form (XEP-0313 §4.1.5): the fields this archive reads.
pub fn form() -> Element {
    let x = Element::builder("x", ns::DATA_FORMS)
        .attr(name("type"), "form")
        .append(field("FORM_TYPE", "hidden", Some(ns::MAM)))
        .append(field("start", "text-single", None))
        .append(field("end", "text-single", None))
        .append(field("after-id", "text-single", None))
        .append(field("before-id", "text-single", None))
        .build();
    Element::builder("query", ns::MAM).append(x).build()
}

/// A node's metadata form for disco#info (XEP-0060 §5.4): its retention and whether a new
/// subscriber gets the last item.
pub fn node_metadata(node: &Node) -> Element {
    let send_last = if node.send_last_published_item {
        "on_sub"
    } else {
        "never"
    };
    let mut x = Element::builder("x", ns::DATA_FORMS)
        .attr(name("type"), "result")
        .append(field(
            "FORM_TYPE",
            "hidden",
            Some("http://jabber.org/protocol/pubsub#meta-data"),
        ))
        .append(field("pubsub#type", "text-single", Some("leaf")))
        .append(field("pubsub#persist_items", "boolean", Some("1")))
        .append(field(
            "pubsub#max_items",
            "text-single",
            Some(&node.max_items.to_string()),
        ))
        .append(field(
            "pubsub#send_last_published_item",
            "list-single",
            Some(send_last),
        ))
        .build();
    if node.max_age_secs > 0 {
        x.append_child(field(
            "pubsub#item_expire",
            "text-single",
            Some(&node.max_age_secs.to_string()),
        ));
    }
    x
}

/// How a node's retention reads in a refusal: "at most 10000 items, for at most 30d".
pub fn retention_words(node: &Node) -> String {
    match node.max_age_secs {
        0 => format!("at most {} items", node.max_items),
        age => format!(
            "at most {} items, for at most {}",
            node.max_items,
            config::format_age(age)
        ),
    }
}
