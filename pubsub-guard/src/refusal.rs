//! Why the service refused a request, and the one place that turns a refusal into the
//! `<error/>` element of the reply (RFC 6120 §8.3, XEP-0060 §7–§8, XEP-0235 §8).

use minidom::Element;
use minidom::rxml::{Namespace, NcName};
use oauth_xmpp::{ErrorType, VerifyError};

use crate::ns;

/// A refused request: the defined condition, its type, an application condition and a plain
/// English text (always present; never a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The error `type`.
    pub error_type: ErrorType,
    /// The RFC 6120 condition (`bad-request`, `item-not-found`, …).
    pub condition: &'static str,
    /// The application condition: its namespace, name and `feature` attribute, if any.
    pub app: Option<(&'static str, &'static str, Option<&'static str>)>,
    /// What went wrong.
    pub text: String,
    /// An application condition of this service's own (such as a resume point's
    /// `<gap/>`), sent in place of `app`.
    pub detail: Option<Box<Element>>,
}

impl Refusal {
    fn new(error_type: ErrorType, condition: &'static str, text: impl Into<String>) -> Self {
        Self {
            error_type,
            condition,
            app: None,
            text: text.into(),
            detail: None,
        }
    }

    /// The same refusal with `detail` as its application condition.
    pub fn with_detail(mut self, detail: Element) -> Self {
        self.app = None;
        self.detail = Some(Box::new(detail));
        self
    }

    fn with_pubsub(mut self, name: &'static str) -> Self {
        self.app = Some((ns::PUBSUB_ERRORS, name, None));
        self
    }

    /// `bad-request` with a pubsub application condition (`nodeid-required`, `invalid-jid`,
    /// `item-required`, `payload-required`, `invalid-payload`), or none.
    pub fn bad_request(app: Option<&'static str>, text: impl Into<String>) -> Self {
        let refusal = Self::new(ErrorType::Modify, "bad-request", text);
        match app {
            Some(app) => refusal.with_pubsub(app),
            None => refusal,
        }
    }

    /// `jid-malformed`: an address that is not a JID.
    pub fn jid_malformed(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Modify, "jid-malformed", text)
    }

    /// `item-not-found`: no such node (or item).
    pub fn item_not_found(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Cancel, "item-not-found", text)
    }

    /// `forbidden`: the requester may not do this.
    pub fn forbidden(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Auth, "forbidden", text)
    }

    /// `unexpected-request` with `<not-subscribed/>`.
    pub fn not_subscribed(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Cancel, "unexpected-request", text).with_pubsub("not-subscribed")
    }

    /// `feature-not-implemented` with `<unsupported feature='…'/>` (XEP-0060 §7–§8).
    pub fn unsupported(feature: &'static str) -> Self {
        let mut refusal = Self::new(
            ErrorType::Cancel,
            "feature-not-implemented",
            format!("this service does not implement the pubsub feature {feature:?}"),
        );
        refusal.app = Some((ns::PUBSUB_ERRORS, "unsupported", Some(feature)));
        refusal
    }

    /// `service-unavailable`: a request this service does not handle.
    pub fn service_unavailable(text: impl Into<String>) -> Self {
        Self::new(ErrorType::Cancel, "service-unavailable", text)
    }

    /// `policy-violation`: the stanza is larger than the configured limit.
    pub fn too_large(bytes: usize, limit: usize) -> Self {
        Self::new(
            ErrorType::Modify,
            "policy-violation",
            format!("the stanza has {bytes} bytes; this service's limit is {limit}"),
        )
    }

    /// `policy-violation`: the stanza is nested deeper than the configured limit.
    pub fn too_deep(limit: usize) -> Self {
        Self::new(
            ErrorType::Modify,
            "policy-violation",
            format!(
                "the stanza nests elements more than {limit} deep; this service's limit is {limit}"
            ),
        )
    }

    /// `resource-constraint`, type `wait`: the storage is full, nothing was stored.
    pub fn storage_full() -> Self {
        Self::new(
            ErrorType::Wait,
            "resource-constraint",
            "the service's storage is full; nothing was stored; try again later",
        )
    }

    /// `internal-server-error`: storage failed; the details are in the logs.
    pub fn internal() -> Self {
        Self::new(
            ErrorType::Wait,
            "internal-server-error",
            "the service could not complete the request; try again later",
        )
    }

    /// The XEP-0235 refusal for a verification failure, as the profile's table R says.
    pub fn oauth(error: &VerifyError) -> Self {
        let e = error.stanza_error();
        Self {
            error_type: e.error_type,
            condition: e.condition,
            app: e
                .app_condition
                .map(|app| (oauth_xmpp::ns::OAUTH_ERRORS, app, None)),
            text: e.text,
            detail: None,
        }
    }

    /// The `<error/>` element, in `namespace` (the stanza's).
    pub fn to_element(&self, namespace: &str) -> Element {
        let app = self.app.map(|(app_ns, app, feature)| {
            let mut app = Element::bare(app, app_ns);
            if let Some(feature) = feature {
                app.set_attr(Namespace::NONE, name("feature"), feature);
            }
            app
        });
        let app = app.or_else(|| self.detail.as_deref().cloned());
        oauth_xmpp::error_element(namespace, self.error_type, self.condition, &self.text, app)
    }
}

/// An attribute name known to be valid.
pub(crate) fn name(name: &'static str) -> NcName {
    NcName::try_from(name).expect("a valid XML name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_condition_text_and_app_condition() {
        let e = Refusal::unsupported("create-nodes").to_element(ns::COMPONENT);
        assert_eq!(
            String::from(&e),
            "<error xmlns='jabber:component:accept' type='cancel'>\
             <feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>this service does not implement the pubsub feature \"create-nodes\"</text>\
             <unsupported xmlns='http://jabber.org/protocol/pubsub#errors' feature='create-nodes'/></error>"
        );
        let e = Refusal::oauth(&VerifyError::TokenRequired);
        assert_eq!(e.condition, "not-authorized");
        assert_eq!(
            e.app,
            Some((oauth_xmpp::ns::OAUTH_ERRORS, "token-required", None))
        );
    }
}
