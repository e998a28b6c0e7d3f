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
