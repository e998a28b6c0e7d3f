//! XML namespaces the guard reads and writes.

/// XEP-0114: the stream namespace of an external component.
pub const COMPONENT: &str = "jabber:component:accept";
/// RFC 6120: the stream element (`<stream:stream/>`, `<stream:error/>`).
pub const STREAMS: &str = "http://etherx.jabber.org/streams";
/// RFC 6120: stream error conditions.
pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// RFC 6120: stanza error conditions.
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// XEP-0030: service discovery, information.
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0030: service discovery, items.
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// XEP-0060: the entity use cases.
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0060: the owner use cases (not offered here: nodes are managed by the admin CLI).
pub const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
/// XEP-0060: event notifications.
pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// XEP-0060: application error conditions.
pub const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// XEP-0199: ping.
pub const PING: &str = "urn:xmpp:ping";
/// XEP-0235: the OAuth element and disco feature.
pub const OAUTH: &str = oauth_xmpp::ns::OAUTH;
/// XEP-0059: result set management (ignored beside pubsub actions).
pub const RSM: &str = "http://jabber.org/protocol/rsm";
/// XEP-0313: message archive management (a node's archive, XEP-0442).
pub const MAM: &str = "urn:xmpp:mam:2";
/// XEP-0359: the stanza id a notification carries (its archive id).
pub const SID: &str = "urn:xmpp:sid:0";
/// XEP-0297: a forwarded stanza (each archive result).
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0203: when a stanza was first sent.
pub const DELAY: &str = "urn:xmpp:delay";
/// XEP-0004: data forms (the archive query's fields).
pub const DATA_FORMS: &str = "jabber:x:data";
/// RFC 6120: the client namespace, of a stanza forwarded inside another.
pub const CLIENT: &str = "jabber:client";
/// This service's application condition for a resume point older than what a node still
/// holds: `<gap after first last count oldest/>` (profile N12).
pub const GAP: &str = "urn:xmpp:pubsub-guard:gap:0";
