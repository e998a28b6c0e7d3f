//! A stanza as a compact tree: one string holding every name, namespace, attribute value and
//! text, and two flat lists (the nodes in document order, the attributes element by element)
//! that point into it. The stream reader builds one straight from the stanza's bytes
//! ([`crate::stream::StreamParser::compact`]), with three allocations whatever the stanza's
//! size, where a [`minidom::Element`] tree takes several per element.
//!
//! It is read through [`ElementRef`], a borrowed handle with the reading methods of
//! [`minidom::Element`] (`name`, `ns`, `attr`, `children`, `texts`, `get_child`, …), and
//! through `oauth-xmpp`'s [`ElementView`], so the `<oauth/>` element rules and the verifier
//! read it as they read an [`Element`]. [`Stanza::to_element`] gives the minidom tree that
//! minidom's own tree builder makes of the same bytes (prefix declarations included), and
//! [`Stanza::from_element`] goes the other way.

use std::collections::BTreeMap;
use std::fmt;

use minidom::rxml::{Namespace, NcName};
use minidom::{Element, Node as MiniNode};
use oauth_xmpp::element::ElementView;

mod parse;

pub(crate) use parse::{Bounds, QuickParser};

/// A byte range of [`Stanza::text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Span {
    pub(crate) const EMPTY: Span = Span { start: 0, end: 0 };
}

/// One node of the tree, in document order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Node {
    /// An element.
    Element(ElementNode),
    /// A text node, references resolved.
    Text(Span),
}

/// An element node; its subtree is the nodes that follow it, up to `end`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ElementNode {
    /// Its local name.
    pub(crate) name: Span,
    /// Its namespace.
    pub(crate) ns: Span,
    /// Its attributes and declarations: `Stanza::attrs[attrs.0..attrs.1]`.
    pub(crate) attrs: (usize, usize),
    /// The index of the first node after its subtree.
    pub(crate) end: usize,
}

/// What an entry of the attribute list is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttrKind {
    /// An attribute in no namespace.
    Plain,
    /// An attribute in this namespace (`xml:lang` is in the XML namespace).
    In(Span),
    /// A namespace declaration: `xmlns` when the name is empty, else `xmlns:name`.
    Declares,
}

/// One attribute or namespace declaration of an element.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attr {
    pub(crate) kind: AttrKind,
    pub(crate) name: Span,
    pub(crate) value: Span,
}

/// A stanza (or any XML element) as a compact, immutable tree. See the module documentation.
#[derive(Clone)]
pub struct Stanza {
    /// Every string of the tree, side by side.
    pub(crate) text: String,
    /// The nodes in document order; the first is the root element.
    pub(crate) nodes: Vec<Node>,
    /// The attributes and declarations of every element, element after element.
    pub(crate) attrs: Vec<Attr>,
}

impl Stanza {
    /// The root element (the stanza itself).
    pub fn root(&self) -> ElementRef<'_> {
        let node = match self.nodes.first() {
            Some(Node::Element(node)) => *node,
            // Every tree starts with its root element: not reached.
            _ => ElementNode {
                name: Span::EMPTY,
                ns: Span::EMPTY,
                attrs: (0, 0),
                end: 0,
            },
        };
        ElementRef {
            stanza: self,
            index: 0,
            node,
        }
    }

    /// The same tree as a minidom [`Element`]: exactly the element (names, namespaces,
    /// attributes, text nodes and prefix declarations) that minidom's tree builder makes of
    /// the stanza's bytes.
    pub fn to_element(&self) -> Element {
        self.root().to_element()
    }

    /// The compact form of `element` (every node, attribute and prefix declaration kept, so
    /// that [`Stanza::to_element`] gives `element` back).
    pub fn from_element(element: &Element) -> Self {
        let mut stanza = Stanza {
            text: String::new(),
            nodes: Vec::new(),
            attrs: Vec::new(),
        };
        stanza.push_element(element, None);
        stanza
    }

    fn push(&mut self, value: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(value);
        Span {
            start,
            end: self.text.len(),
        }
    }

    /// Appends `element` and its subtree; `parent_ns` is the span of the parent's namespace,
    /// shared when it is the same.
    fn push_element(&mut self, element: &Element, parent_ns: Option<Span>) {
        let index = self.nodes.len();
        let name = self.push(element.name());
        let ns = match parent_ns {
            Some(span) if element.has_ns(&self.text[span.start..span.end]) => span,
            _ => self.push(&element.ns()),
        };
        let first_attr = self.attrs.len();
        for ((namespace, attr), value) in element.attrs().iter() {
            let kind = if namespace.is_none() {
                AttrKind::Plain
            } else {
                AttrKind::In(self.push(namespace.as_str()))
            };
            let name = self.push(attr.as_str());
            let value = self.push(value);
            self.attrs.push(Attr { kind, name, value });
        }
        for (prefix, namespace) in element.prefixes.declared_prefixes() {
            let name = self.push(prefix.as_deref().unwrap_or(""));
            let value = self.push(namespace);
            self.attrs.push(Attr {
                kind: AttrKind::Declares,
                name,
                value,
            });
        }
        let attrs = (first_attr, self.attrs.len());
        self.nodes.push(Node::Element(ElementNode {
            name,
            ns,
            attrs,
            end: index + 1,
        }));
        for node in element.nodes() {
            match node {
                MiniNode::Element(child) => self.push_element(child, Some(ns)),
                MiniNode::Text(text) => {
                    let span = self.push(text);
                    self.nodes.push(Node::Text(span));
                }
            }
        }
        let end = self.nodes.len();
        if let Some(Node::Element(node)) = self.nodes.get_mut(index) {
            node.end = end;
        }
    }

    fn str(&self, span: Span) -> &str {
        self.text.get(span.start..span.end).unwrap_or("")
    }
}

impl From<&Element> for Stanza {
    fn from(element: &Element) -> Self {
        Self::from_element(element)
    }
}

impl PartialEq for Stanza {
    /// As minidom compares elements: names, namespaces, attributes and nodes, not the
    /// prefixes that declared the namespaces.
    fn eq(&self, other: &Self) -> bool {
        self.root() == other.root()
    }
}

impl fmt::Debug for Stanza {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stanza({})", String::from(&self.to_element()))
    }
}

/// An element of a [`Stanza`]: a borrowed handle (it is `Copy`) with the reading methods of
/// [`minidom::Element`].
#[derive(Clone, Copy)]
pub struct ElementRef<'a> {
    stanza: &'a Stanza,
    /// Its node's index.
    index: usize,
    /// Its node.
    node: ElementNode,
}

impl<'a> ElementRef<'a> {
    fn str(self, span: Span) -> &'a str {
        self.stanza.str(span)
    }

    fn attr_list(self) -> &'a [Attr] {
        let (start, end) = self.node.attrs;
        self.stanza.attrs.get(start..end).unwrap_or(&[])
    }

    /// The local name (without a prefix).
    pub fn name(self) -> &'a str {
        self.str(self.node.name)
    }

    /// The namespace.
    pub fn ns(self) -> &'a str {
        self.str(self.node.ns)
    }

    /// Whether the element is in `namespace`.
    pub fn has_ns(self, namespace: &str) -> bool {
        let span = self.node.ns;
        self.stanza.text.as_bytes().get(span.start..span.end) == Some(namespace.as_bytes())
    }

    /// Whether the element is `name` in `namespace`.
    pub fn is(self, name: &str, namespace: &str) -> bool {
        let span = self.node.name;
        self.stanza.text.as_bytes().get(span.start..span.end) == Some(name.as_bytes())
            && self.has_ns(namespace)
    }

    /// The attribute `name` in no namespace.
    pub fn attr(self, name: &str) -> Option<&'a str> {
        let text = self.stanza.text.as_bytes();
        self.attr_list()
            .iter()
            .find(|a| {
                a.kind == AttrKind::Plain
                    && text.get(a.name.start..a.name.end) == Some(name.as_bytes())
            })
            .map(|a| self.str(a.value))
    }

    /// The attributes, as `(namespace, name, value)`, the namespace empty for none; in no
    /// particular order.
    pub fn attrs(self) -> impl Iterator<Item = (&'a str, &'a str, &'a str)> + 'a {
        self.attr_list().iter().filter_map(move |a| match a.kind {
            AttrKind::Plain => Some(("", self.str(a.name), self.str(a.value))),
            AttrKind::In(ns) => Some((self.str(ns), self.str(a.name), self.str(a.value))),
            AttrKind::Declares => None,
        })
    }

    /// The nodes directly inside: the child elements and the text nodes, in order.
    fn nodes(self) -> impl Iterator<Item = Either<'a>> + 'a {
        let stanza = self.stanza;
        let end = self.node.end;
        let mut next = self.index + 1;
        std::iter::from_fn(move || {
            if next >= end {
                return None;
            }
            let at = next;
            match stanza.nodes.get(at)? {
                Node::Element(node) => {
                    next = node.end;
                    Some(Either::Element(ElementRef {
                        stanza,
                        index: at,
                        node: *node,
                    }))
                }
                Node::Text(span) => {
                    next += 1;
                    Some(Either::Text(stanza.str(*span)))
                }
            }
        })
    }

    /// The child elements, in order.
    pub fn children(self) -> impl Iterator<Item = ElementRef<'a>> + 'a {
        self.nodes().filter_map(|n| match n {
            Either::Element(e) => Some(e),
            Either::Text(_) => None,
        })
    }

    /// The text nodes directly inside, in order.
    pub fn texts(self) -> impl Iterator<Item = &'a str> + 'a {
        self.nodes().filter_map(|n| match n {
            Either::Text(t) => Some(t),
            Either::Element(_) => None,
        })
    }

    /// The text nodes directly inside, joined (as [`minidom::Element::text`]).
    pub fn text(self) -> String {
        self.texts().collect()
    }

    /// The first child element `name` in `namespace`.
    pub fn get_child(self, name: &str, namespace: &str) -> Option<ElementRef<'a>> {
        self.children().find(|c| c.is(name, namespace))
    }

    /// Whether a child element is `name` in `namespace`.
    pub fn has_child(self, name: &str, namespace: &str) -> bool {
        self.get_child(name, namespace).is_some()
    }

    /// This element and its subtree as a minidom [`Element`], as minidom's tree builder
    /// makes it (for the root, with the namespaces it inherits from the stream declared).
    pub fn to_element(self) -> Element {
        let mut element = Element::bare(self.name(), self.ns());
        let mut prefixes = BTreeMap::new();
        for attr in self.attr_list() {
            let (name, value) = (self.str(attr.name), self.str(attr.value));
            match attr.kind {
                AttrKind::Declares => {
                    let prefix = (!name.is_empty()).then(|| name.to_owned());
                    prefixes.insert(prefix, value.to_owned());
                }
                AttrKind::Plain | AttrKind::In(_) => {
                    let namespace = match attr.kind {
                        AttrKind::In(ns) => Namespace::from(self.str(ns).to_owned()),
                        _ => Namespace::NONE,
                    };
                    // Names were checked when the tree was made: every one is an NCName.
                    if let Ok(name) = NcName::try_from(name) {
                        element
                            .attrs_mut()
                            .insert(namespace, name, value.to_owned());
                    }
                }
            }
        }
        if !prefixes.is_empty() {
            element.prefixes = prefixes.into();
        }
        for node in self.nodes() {
            match node {
                Either::Element(child) => {
                    element.append_child(child.to_element());
                }
                Either::Text(text) => element.append_text_node(text),
            }
        }
        element
    }
}

/// A node directly inside an element.
enum Either<'a> {
    Element(ElementRef<'a>),
    Text(&'a str),
}

impl PartialEq for ElementRef<'_> {
    /// As minidom compares elements (prefix declarations aside).
    fn eq(&self, other: &Self) -> bool {
        fn sorted(e: ElementRef<'_>) -> Vec<(&str, &str, &str)> {
            let mut attrs: Vec<_> = e.attrs().collect();
            attrs.sort_unstable();
            attrs
        }
        self.name() == other.name()
            && self.ns() == other.ns()
            && sorted(*self) == sorted(*other)
            && self.nodes().count() == other.nodes().count()
            && self.nodes().zip(other.nodes()).all(|pair| match pair {
                (Either::Element(a), Either::Element(b)) => a == b,
                (Either::Text(a), Either::Text(b)) => a == b,
                _ => false,
            })
    }
}

impl fmt::Debug for ElementRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ElementRef({})", String::from(&self.to_element()))
    }
}

impl<'a> ElementView<'a> for ElementRef<'a> {
    fn name(self) -> &'a str {
        ElementRef::name(self)
    }

    fn has_ns(self, namespace: &str) -> bool {
        ElementRef::has_ns(self, namespace)
    }

    fn attr(self, name: &str) -> Option<&'a str> {
        ElementRef::attr(self, name)
    }

    fn children(self) -> impl Iterator<Item = Self> + 'a {
        ElementRef::children(self)
    }

    fn texts(self) -> impl Iterator<Item = &'a str> + 'a {
        ElementRef::texts(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "<iq xmlns='jabber:component:accept' xmlns:x='urn:x' type='set' \
        id='a&amp;b'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\n <subscribe \
        node='n' jid='j'/><x:y xml:lang='en'>t<![CDATA[&]]>u</x:y></pubsub>tail</iq>";

    #[test]
    fn an_element_goes_through_the_compact_form_and_back_unchanged() {
        let element: Element = EXAMPLE.parse().unwrap();
        let stanza = Stanza::from_element(&element);
        let back = stanza.to_element();
        assert_eq!(back, element);
        assert_eq!(String::from(&back), String::from(&element));
        assert_eq!(stanza, Stanza::from_element(&back));
    }

    #[test]
    fn reads_like_an_element() {
        let element: Element = EXAMPLE.parse().unwrap();
        let stanza = Stanza::from_element(&element);
        let iq = stanza.root();
        assert_eq!((iq.name(), iq.ns()), ("iq", "jabber:component:accept"));
        assert_eq!(iq.attr("id"), Some("a&b"));
        assert_eq!(iq.attr("nope"), None);
        assert_eq!(iq.text(), "tail");
        let pubsub = iq
            .get_child("pubsub", "http://jabber.org/protocol/pubsub")
            .unwrap();
        let names: Vec<&str> = pubsub.children().map(|c| c.name()).collect();
        assert_eq!(names, ["subscribe", "y"]);
        assert_eq!(pubsub.texts().collect::<Vec<_>>(), ["\n "]);
        let y = pubsub.get_child("y", "urn:x").unwrap();
        assert_eq!(y.texts().collect::<Vec<_>>(), ["t&u"]);
        assert_eq!(
            y.attrs().collect::<Vec<_>>(),
            [("http://www.w3.org/XML/1998/namespace", "lang", "en")]
        );
        assert!(pubsub.has_child("subscribe", "http://jabber.org/protocol/pubsub"));
        assert!(!pubsub.has_child("subscribe", "urn:x"));
        assert_eq!(
            pubsub.to_element(),
            *element
                .get_child("pubsub", "http://jabber.org/protocol/pubsub")
                .unwrap()
        );
    }

    /// The `<oauth/>` element rules of the profile (E1–E11) on the compact stanza the quick
    /// path reads and on the element the general path builds: the same parameters, or the
    /// same error, for each case (one per line: a name, the content of `<oauth/>` or of the
    /// whole `<pubsub/>`, the outcome).
    #[test]
    fn the_element_rules_read_a_compact_stanza_as_they_read_an_element() {
        use oauth_xmpp::{StanzaRequest, StructureError as E};

        let key = "<oauth_consumer_key>k</oauth_consumer_key>";
        let rest = "<oauth_nonce>n</oauth_nonce><oauth_signature>s</oauth_signature>\
            <oauth_signature_method>HMAC-SHA1</oauth_signature_method>\
            <oauth_timestamp>1218137833</oauth_timestamp><oauth_token>t</oauth_token>";
        let all = format!("{key}{rest}");
        let oauth = |ns: &str, children: &str| format!("<oauth xmlns='{ns}'>{children}</oauth>");
        let long = "a".repeat(1025);
        type Expected = Result<Option<&'static str>, E>;
        let cases: Vec<(&str, String, Expected)> = vec![
            ("e2_current", oauth("urn:xmpp:oauth:0", &all), Ok(Some("n"))),
            (
                "e2_tmp_alias",
                oauth("urn:xmpp:tmp:oauth", &all),
                Ok(Some("n")),
            ),
            (
                "e2_2008_alias",
                oauth("urn:xmpp:oauth", &all),
                Ok(Some("n")),
            ),
            ("e2_other_namespace", oauth("urn:other", &all), Ok(None)),
            (
                "e3_missing",
                oauth("urn:xmpp:oauth:0", rest),
                Err(E::MissingParameter("oauth_consumer_key")),
            ),
            (
                "e4_version",
                oauth(
                    "urn:xmpp:oauth:0",
                    &format!("{all}<oauth_version>2.0</oauth_version>"),
                ),
                Err(E::UnsupportedVersion("2.0".into())),
            ),
            (
                "e5_trimmed",
                oauth("urn:xmpp:oauth:0", &all.replace(">n<", ">\n\t n \n<")),
                Ok(Some("n")),
            ),
            (
                "e5_references",
                oauth("urn:xmpp:oauth:0", &all.replace(">n<", ">&#97;&amp;b<")),
                Ok(Some("a&b")),
            ),
            (
                "e6_duplicated",
                oauth("urn:xmpp:oauth:0", &format!("{all}{key}")),
                Err(E::DuplicatedParameter("oauth_consumer_key".into())),
            ),
            (
                "e6_two_elements",
                format!(
                    "{}{}",
                    oauth("urn:xmpp:oauth:0", &all),
                    oauth("urn:xmpp:oauth", &all)
                ),
                Err(E::DuplicatedParameter("oauth".into())),
            ),
            (
                "e7_unknown",
                oauth(
                    "urn:xmpp:oauth:0",
                    &format!("{all}<oauth_callback>oob</oauth_callback>"),
                ),
                Err(E::UnsupportedParameter("oauth_callback".into())),
            ),
            (
                "e7_other_namespace_child",
                oauth(
                    "urn:xmpp:oauth:0",
                    &format!(
                        "{rest}<x:oauth_consumer_key xmlns:x='urn:x'>k</x:oauth_consumer_key>"
                    ),
                ),
                Err(E::UnsupportedParameter("oauth_consumer_key".into())),
            ),
            (
                "e7_child_with_children",
                oauth(
                    "urn:xmpp:oauth:0",
                    &format!("{rest}<oauth_consumer_key><b/></oauth_consumer_key>"),
                ),
                Err(E::UnsupportedParameter("oauth_consumer_key".into())),
            ),
            (
                "e7_text",
                oauth("urn:xmpp:oauth:0", &format!("{all}stray")),
                Err(E::UnexpectedText),
            ),
            (
                "e7_timestamp",
                oauth("urn:xmpp:oauth:0", &all.replace("1218137833", "12.5")),
                Err(E::InvalidTimestamp("12.5".into())),
            ),
            (
                "e7_too_long",
                oauth(
                    "urn:xmpp:oauth:0",
                    &all.replace(">n<", &format!(">{long}<")),
                ),
                Err(E::ParameterTooLong("oauth_nonce")),
            ),
            (
                "e8_method",
                oauth(
                    "urn:xmpp:oauth:0",
                    &all.replace("HMAC-SHA1", "PLAINTEXT+HMAC-SHA1"),
                ),
                Err(E::UnsupportedSignatureMethod("PLAINTEXT+HMAC-SHA1".into())),
            ),
            ("e11_none", String::new(), Ok(None)),
        ];
        let root = BTreeMap::from([(None, "jabber:component:accept".to_owned())]);
        let bounds = Bounds {
            max_bytes: 65536,
            max_depth: 64,
        };
        for (name, content, expected) in cases {
            let text = format!(
                "<iq from='a@b/c' to='p.b' type='set' id='i'>\
                 <pubsub xmlns='http://jabber.org/protocol/pubsub'>{content}</pubsub></iq>"
            );
            let (compact, _) = QuickParser::new(&root)
                .parse(text.as_bytes(), bounds)
                .unwrap_or_else(|| panic!("{name}: the quick path declined it"));
            let element: Element = text
                .replacen("<iq ", "<iq xmlns='jabber:component:accept' ", 1)
                .parse()
                .unwrap();
            let read = StanzaRequest::from_stanza(compact.root());
            assert_eq!(read, StanzaRequest::from_stanza(&element), "{name}");
            let nonce = read.map(|r| r.map(|r| r.params.nonce));
            assert_eq!(
                nonce.as_ref().map(Option::as_deref),
                expected.as_ref().map(|n| *n),
                "{name}"
            );
        }
    }

    #[test]
    fn equality_is_minidoms() {
        let a = Stanza::from_element(&"<a xmlns='u' p='1' q='2'>x</a>".parse().unwrap());
        let b = Stanza::from_element(&"<p:a xmlns:p='u' q='2' p='1'>x</p:a>".parse().unwrap());
        let c = Stanza::from_element(&"<a xmlns='u' p='1' q='2'>y</a>".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
