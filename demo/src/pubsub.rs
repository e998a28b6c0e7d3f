//! The XEP-0060 requests a consumer and a publisher send, the XEP-0235 signature on a
//! subscribe, and readers for what comes back.

use minidom::Element;
use oauth_xmpp::NonceSource;
use oauth_xmpp::replay::Clock;
use oauth_xmpp::sign::Signer;
use pubsub_guard::ns;

use crate::xmpp::{CLIENT, name};

/// The pubsub namespace.
pub const PUBSUB: &str = ns::PUBSUB;
/// The event namespace.
pub const EVENT: &str = ns::PUBSUB_EVENT;

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

/// Adds a signed `<oauth/>` to the `<pubsub/>` of `request` (XEP-0235 §4), signed over
/// `from` (the sender's full JID, as the server will stamp it) and the request's `to`.
pub fn sign<C: Clock, N: NonceSource>(request: &mut Element, from: &str, signer: &Signer<C, N>) {
    let to = request.attr("to").unwrap_or_default().to_owned();
    let oauth = signer.sign_stanza(request.name(), from, &to);
    if let Some(pubsub) = request.get_child_mut("pubsub", PUBSUB) {
        pubsub.append_child(oauth);
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
