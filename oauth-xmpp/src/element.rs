//! The XEP-0235 `<oauth xmlns='urn:xmpp:oauth:0'/>` element: parse (with the profile's
//! structure rules) and write, and finding it in a stanza.
//!
//! The rules read the element through [`ElementView`], so that they are written once for
//! every tree that holds a stanza: minidom's [`Element`], and the compact stanzas that
//! `xmpp-component`'s stream reader builds straight from the bytes (the guard's path). The
//! same element gives the same parameters, or the same error, whichever tree holds it.

use minidom::Element;

use crate::error::StructureError;
use crate::ns;
use crate::params::{Collector, Form, OAuthParams, clip};

/// XML white space (XML 1.0 §2.3 `S`), trimmed from parameter text.
fn trim_xml(text: &str) -> &str {
    text.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

/// What the element rules read of an XML element: its name and namespace, its attributes,
/// its child elements and its text nodes. Implemented for `&Element` (minidom) here, and for
/// the compact stanza trees of `xmpp-component`; the rules of this module, the
/// [`crate::Verifier`] and the guard read every tree through it.
///
/// A view is a cheap handle (`Copy`) borrowed for `'a`, the life of the tree.
pub trait ElementView<'a>: Copy {
    /// The element's local name (without a prefix).
    fn name(self) -> &'a str;
    /// Whether the element is in `namespace`.
    fn has_ns(self, namespace: &str) -> bool;
    /// The value of the attribute `name` (in no namespace), references resolved.
    fn attr(self, name: &str) -> Option<&'a str>;
    /// The child elements, in document order.
    fn children(self) -> impl Iterator<Item = Self> + 'a;
    /// The text nodes directly inside the element, in document order, references resolved.
    fn texts(self) -> impl Iterator<Item = &'a str> + 'a;
}

impl<'a> ElementView<'a> for &'a Element {
    fn name(self) -> &'a str {
        Element::name(self)
    }

    fn has_ns(self, namespace: &str) -> bool {
        Element::has_ns(self, namespace)
    }

    fn attr(self, name: &str) -> Option<&'a str> {
        // `Element::attr` ties the name's borrow to the element's.
        self.attrs()
            .get(&minidom::rxml::Namespace::NONE, name)
            .map(String::as_str)
    }

    fn children(self) -> impl Iterator<Item = Self> + 'a {
        Element::children(self)
    }

    fn texts(self) -> impl Iterator<Item = &'a str> + 'a {
        Element::texts(self)
    }
}

/// Whether `element` is an `<oauth/>` in the current namespace or one of its aliases.
pub fn is_oauth<'a>(element: impl ElementView<'a>) -> bool {
    element.name() == "oauth" && ns::OAUTH_ALIASES.iter().any(|n| element.has_ns(n))
}

impl OAuthParams {
    /// Parses an `<oauth/>` element with every structure rule of the profile: namespace
    /// aliases, trimmed text, duplicated / missing / unsupported parameters, `oauth_version`
    /// 1.0, known signature method, timestamp digits.
    ///
    /// ```
    /// let xml = "<oauth xmlns='urn:xmpp:oauth:0'><oauth_consumer_key>k</oauth_consumer_key>\
    ///   <oauth_nonce>n</oauth_nonce><oauth_signature>s</oauth_signature>\
    ///   <oauth_signature_method>PLAINTEXT</oauth_signature_method>\
    ///   <oauth_timestamp>1218137833</oauth_timestamp><oauth_token>t</oauth_token></oauth>";
    /// let params = oauth_xmpp::OAuthParams::from_element(&xml.parse().unwrap()).unwrap();
    /// assert_eq!(params.nonce, "n");
    /// ```
    ///
    /// Any tree reads the same way ([`ElementView`]): `&Element` as here, or a compact
    /// stanza's element.
    pub fn from_element<'a>(element: impl ElementView<'a>) -> Result<Self, StructureError> {
        Self::parse_element(element, true)
    }

    /// Like [`OAuthParams::from_element`], but `oauth_signature` may be missing or empty:
    /// for a signer that fills it in.
    pub fn from_unsigned_element<'a>(
        element: impl ElementView<'a>,
    ) -> Result<Self, StructureError> {
        Self::parse_element(element, false)
    }

    fn parse_element<'a>(
        element: impl ElementView<'a>,
        signature_required: bool,
    ) -> Result<Self, StructureError> {
        // The namespace it is in (compared without allocating: `Element::ns` clones).
        let namespace = match ns::OAUTH_ALIASES.iter().find(|n| element.has_ns(n)) {
            Some(namespace) if element.name() == "oauth" => *namespace,
            _ => return Err(StructureError::NotOAuth),
        };
        if element.texts().any(|t| !trim_xml(t).is_empty()) {
            return Err(StructureError::UnexpectedText);
        }
        let mut collector = Collector::new(Form::Stanza);
        for child in element.children() {
            if !child.has_ns(namespace) || child.children().next().is_some() {
                return Err(StructureError::UnsupportedParameter(clip(child.name())));
            }
            let mut texts = child.texts();
            let value = match (texts.next(), texts.next()) {
                (None, _) => String::new(),
                (Some(only), None) => trim_xml(only).to_owned(),
                (Some(first), Some(second)) => {
                    let mut all = [first, second].concat();
                    all.extend(texts);
                    trim_xml(&all).to_owned()
                }
            };
            collector.add(child.name(), value)?;
        }
        collector.finish(signature_required)
    }

    /// Writes the element in `urn:xmpp:oauth:0`, children in alphabetical order, the
    /// signature raw (not escaped). [`OAuthParams::from_element`] of the result gives back
    /// the same value.
    pub fn to_element(&self) -> Element {
        let mut children: Vec<(&str, &str)> = self.signed_pairs();
        children.push(("oauth_signature", self.signature.as_str()));
        children.sort_unstable();
        let mut oauth = Element::builder("oauth", ns::OAUTH).build();
        for (name, value) in children {
            oauth.append_child(Element::builder(name, ns::OAUTH).append(value).build());
        }
        oauth
    }
}

/// Finds the `<oauth/>` element of a stanza: a child of the stanza (message, presence) or
/// of one of its children (e.g. `<pubsub/>` in an IQ, XEP-0235 §"Access Request Format").
///
/// `Ok(None)` when there is none; two of them are a [`StructureError::DuplicatedParameter`].
pub fn find_oauth<'a, V: ElementView<'a>>(stanza: V) -> Result<Option<V>, StructureError> {
    let mut found = None;
    let candidates = stanza
        .children()
        .flat_map(|child| std::iter::once(child).chain(child.children()));
    for element in candidates.filter(|e| is_oauth(*e)) {
        if found.replace(element).is_some() {
            return Err(StructureError::DuplicatedParameter("oauth".into()));
        }
    }
    Ok(found)
}

/// The `<oauth/>` element [`find_oauth`] finds, mutably.
pub(crate) fn find_oauth_mut(stanza: &mut Element) -> Option<&mut Element> {
    let (outer, inner) = stanza.children().enumerate().find_map(|(i, child)| {
        if is_oauth(child) {
            Some((i, None))
        } else {
            child.children().position(is_oauth).map(|j| (i, Some(j)))
        }
    })?;
    let child = stanza.children_mut().nth(outer)?;
    match inner {
        None => Some(child),
        Some(j) => child.children_mut().nth(j),
    }
}

/// What the stanza form of the base string needs from a stanza: its name, its addresses and
/// the parameters of its `<oauth/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaRequest {
    /// The stanza's element name (`iq`, `message`, `presence`).
    pub qname: String,
    /// The `from` address as the receiver sees it (the sender's full JID).
    pub from: String,
    /// The `to` address.
    pub to: String,
    /// The parameters of its `<oauth/>` element.
    pub params: OAuthParams,
}

impl StanzaRequest {
    /// Reads a stanza, from any tree ([`ElementView`]). `Ok(None)` when it carries no
    /// `<oauth/>` (for a protected node that is [`crate::VerifyError::TokenRequired`]).
    pub fn from_stanza<'a>(stanza: impl ElementView<'a>) -> Result<Option<Self>, StructureError> {
        Self::read(stanza, true)
    }

    /// Like [`StanzaRequest::from_stanza`], but the signature may be missing or empty.
    pub fn from_unsigned_stanza<'a>(
        stanza: impl ElementView<'a>,
    ) -> Result<Option<Self>, StructureError> {
        Self::read(stanza, false)
    }

    fn read<'a>(
        stanza: impl ElementView<'a>,
        signature_required: bool,
    ) -> Result<Option<Self>, StructureError> {
        let Some(oauth) = find_oauth(stanza)? else {
            return Ok(None);
        };
        let params = OAuthParams::parse_element(oauth, signature_required)?;
        let address = |name: &'static str| {
            stanza
                .attr(name)
                .map(str::to_owned)
                .ok_or(StructureError::MissingAddress(name))
        };
        Ok(Some(Self {
            qname: stanza.name().to_owned(),
            from: address("from")?,
            to: address("to")?,
            params,
        }))
    }

    /// The normalized parameters (RFC 5849 §3.4.1.3.2) of the `<oauth/>` element.
    pub fn normalized_parameters(&self) -> String {
        crate::params::normalize(self.params.signed_pairs())
    }

    /// The signature base string with the full `from` JID (XEP-0235).
    pub fn base_string(&self) -> String {
        crate::base_string::stanza_for(&self.qname, &self.from, &self.to, &self.params)
    }

    /// The signature base string with the bare `from` JID (Fire Eagle-era clients).
    pub fn bare_jid_base_string(&self) -> String {
        let bare = crate::base_string::bare_jid(&self.from);
        crate::base_string::stanza_for(&self.qname, bare, &self.to, &self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_is_xml_whitespace_only() {
        assert_eq!(trim_xml("\n\t a\u{a0} \r\n"), "a\u{a0}");
    }
}
