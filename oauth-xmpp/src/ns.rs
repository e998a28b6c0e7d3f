//! XML namespaces used by this crate.

/// XEP-0235 v0.7 protocol namespace: the `<oauth/>` element and the disco feature.
pub const OAUTH: &str = "urn:xmpp:oauth:0";
/// XEP-0235 v0.7 application error conditions.
pub const OAUTH_ERRORS: &str = "urn:xmpp:oauth:0:errors";
/// XEP-0235 v0.4–0.6 namespace, accepted on input as an alias of [`OAUTH`].
pub const OAUTH_TMP: &str = "urn:xmpp:tmp:oauth";
/// The informal 2008 namespace ("Quick OAuth Notes"), accepted on input as an alias of [`OAUTH`].
pub const OAUTH_2008: &str = "urn:xmpp:oauth";
/// Every namespace accepted for `<oauth/>` on input, the current one first.
pub const OAUTH_ALIASES: [&str; 3] = [OAUTH, OAUTH_TMP, OAUTH_2008];
/// RFC 6120 stanza error conditions.
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// The client namespace, assumed for stanzas that carry no `xmlns`.
pub const JABBER_CLIENT: &str = "jabber:client";
