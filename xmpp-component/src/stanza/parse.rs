//! The quick path of the stream reader: one whole stanza, read from its bytes into a
//! [`Stanza`] in one pass, with no XML parser events and no minidom tree in between.
//!
//! It takes only what it can check completely and cheaply, and *declines* everything else,
//! leaving it to the reader's general path (rxml's parser, which checks every byte, and
//! minidom's tree builder). What it takes, it checks as those two would: the result is the
//! tree they build of the same bytes, and a stanza they would refuse (not well-formed, an
//! undeclared prefix, over a limit) is declined, so that they refuse it with their own error.
//! Declining costs nothing but the bytes looked at.
//!
//! Taken: a stanza complete within the bytes given and within the size and depth limits;
//! element and attribute names of ASCII letters, digits, `-`, `.`, `_`, with at most one `:`
//! (a prefix), both parts starting with a letter or `_`; attributes in no namespace, `xml:*`
//! attributes, and namespace declarations (`xmlns`, `xmlns:p`) with a non-empty value other
//! than the XML namespace; white space of spaces, tabs and line feeds; text and attribute
//! values of any XML character (UTF-8) with the five predefined entity references and
//! character references of up to six digits.
//!
//! Declined, among others: carriage returns (XML folds them), tabs and line feeds inside
//! attribute values (XML turns them into spaces), `]]>` in text, comments, CDATA sections,
//! processing instructions, names that are not ASCII, duplicated attributes, other prefixed
//! attributes, the prefixes `xml` and `xmlns` declared, and any byte that is not allowed
//! where it stands.
//!
//! Cost, measured with callgrind on the XEP-0235 example subscribe (606 bytes, 11 elements):
//! about 12,500 instructions (about 20 a byte: a table lookup per byte of names, text and
//! values), where rxml's parser alone takes about 68,000 and minidom's tree builder about
//! 70,000 more. Three allocations per stanza, each of its exact size (the string, the nodes,
//! the attributes); the scratch space is kept from one stanza to the next.

use std::collections::BTreeMap;

use super::{Attr, AttrKind, ElementNode, Node, Span, Stanza};

/// The XML namespace (`xml:lang`…), bound to the prefix `xml` without a declaration.
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Spans at or above this offset point into the resolved values that follow the stanza's
/// own bytes; fixed up at the end (only when a value held a reference).
const EXTRA: usize = usize::MAX / 2;

/// The limits a stanza must keep to be taken.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// The most bytes, from its `<` to its last `>`.
    pub(crate) max_bytes: usize,
    /// The deepest nesting (the stanza element is depth 1).
    pub(crate) max_depth: usize,
}

/// Byte classes of text and attribute values.
const PLAIN: u8 = 0;
const LT: u8 = 1;
const AMP: u8 = 2;
const BRACKET: u8 = 3;
const HIGH: u8 = 4;
const QUOTE: u8 = 5;
const REFUSED: u8 = 6;

/// Text: `<`, `&`, `]` (for `]]>`), bytes of non-ASCII characters (for U+FFFE and U+FFFF),
/// and control characters and CR, which are declined.
const TEXT: [u8; 256] = {
    let mut t = [PLAIN; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            b'\t' | b'\n' => PLAIN,
            0..=0x1f => REFUSED,
            b'<' => LT,
            b'&' => AMP,
            b']' => BRACKET,
            0x80..=0xff => HIGH,
            _ => PLAIN,
        };
        b += 1;
    }
    t
};

/// Attribute values: the quotes, `&`, bytes of non-ASCII characters, and what is declined
/// (`<`, every control character: XML turns tabs and line feeds into spaces).
const VALUE: [u8; 256] = {
    let mut t = [PLAIN; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            0..=0x1f | b'<' => REFUSED,
            b'&' => AMP,
            b'\'' | b'"' => QUOTE,
            0x80..=0xff => HIGH,
            _ => PLAIN,
        };
        b += 1;
    }
    t
};

/// Bytes of a name after its first: [`NAME_CHAR`], [`COLON`], or neither (0).
const NAME: [u8; 256] = {
    let mut t = [0; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => NAME_CHAR,
            b':' => COLON,
            _ => 0,
        };
        b += 1;
    }
    t
};
const NAME_CHAR: u8 = 1;
const COLON: u8 = 2;

fn name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n')
}

/// Whether `c` may appear in XML 1.0 (what a character reference may expand to).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{fffd}' | '\u{10000}'..)
}

/// A name as it was written, in offsets of the stanza's bytes, with where its `:` is.
#[derive(Debug, Clone, Copy)]
struct QName {
    start: usize,
    colon: Option<usize>,
    end: usize,
}

impl QName {
    fn prefix(self) -> Option<(usize, usize)> {
        self.colon.map(|c| (self.start, c))
    }

    fn local(self) -> (usize, usize) {
        (self.colon.map_or(self.start, |c| c + 1), self.end)
    }
}

/// An element whose end tag is still to come.
struct Open {
    node: usize,
    qname: QName,
    /// The length of the scope before the element's declarations.
    scope: usize,
}

/// A namespace declaration of the stanza in scope.
struct Declared {
    /// The prefix as written (offsets of the stanza's bytes), `None` for the default
    /// namespace.
    prefix: Option<(usize, usize)>,
    namespace: Span,
}

/// An attribute of the start tag being read.
struct Raw {
    qname: QName,
    kind: RawKind,
    value: Span,
}

/// What an attribute of a start tag is, by its name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RawKind {
    /// In no namespace.
    Plain,
    /// `xml:…`, in the XML namespace.
    Xml,
    /// `xmlns` (`None`) or `xmlns:p`: a namespace declaration.
    Declares(Option<(usize, usize)>),
}

/// A namespace the stream root declared, which every stanza inherits.
struct Inherited {
    /// Where its prefix is in the prelude; `None` for the default namespace.
    prefix: Option<Span>,
    namespace: Span,
    /// Whether it is the `stream` prefix (inherited only by `<stream:…>` stanzas, as the
    /// general path does).
    stream: bool,
}

/// What every stanza of a stream inherits from the stream root.
struct Prelude {
    /// The inherited prefixes and namespaces and the XML namespace, side by side: every
    /// stanza's string starts with it.
    text: String,
    inherited: Vec<Inherited>,
    xml: Span,
}

/// Scratch space kept from one stanza to the next, so that a stanza allocates only what it
/// keeps (its string, its nodes and its attributes, each of its exact size).
#[derive(Default)]
struct Scratch {
    open: Vec<Open>,
    scope: Vec<Declared>,
    raw: Vec<Raw>,
    nodes: Vec<Node>,
    attrs: Vec<Attr>,
    /// Values with their references resolved, to follow the stanza's bytes.
    extra: Vec<u8>,
}

/// The quick parser of one stream.
pub(crate) struct QuickParser {
    prelude: Prelude,
    scratch: Scratch,
}

impl QuickParser {
    /// The parser for stanzas of a stream whose root declared `root` (prefix → namespace).
    pub(crate) fn new(root: &BTreeMap<Option<String>, String>) -> Self {
        let mut text = String::new();
        let mut push = |s: &str| {
            let start = text.len();
            text.push_str(s);
            Span {
                start,
                end: text.len(),
            }
        };
        let inherited = root
            .iter()
            .map(|(prefix, namespace)| Inherited {
                prefix: prefix.as_deref().map(&mut push),
                namespace: push(namespace),
                stream: prefix.as_deref() == Some("stream"),
            })
            .collect();
        let xml = push(XML_NS);
        Self {
            prelude: Prelude {
                text,
                inherited,
                xml,
            },
            scratch: Scratch::default(),
        }
    }

    /// Reads the stanza that starts at `data[0]` (a `<`): the stanza and its length in
    /// bytes, or `None` when it declines (see the module documentation).
    pub(crate) fn parse(&mut self, data: &[u8], bounds: Bounds) -> Option<(Stanza, usize)> {
        let scratch = &mut self.scratch;
        scratch.open.clear();
        scratch.scope.clear();
        scratch.nodes.clear();
        scratch.attrs.clear();
        scratch.extra.clear();
        let window = data.get(..data.len().min(bounds.max_bytes))?;
        let mut run = Run {
            data: window,
            base: self.prelude.text.len(),
            pos: 0,
            with_stream: false,
            max_depth: bounds.max_depth,
            prelude: &self.prelude,
            scratch,
        };
        run.start_tag()?;
        while !run.scratch.open.is_empty() {
            if run.byte()? != b'<' {
                run.text()?;
            }
            match *run.data.get(run.pos + 1)? {
                b'/' => run.end_tag()?,
                b'!' | b'?' => return None,
                _ => run.start_tag()?,
            }
        }
        run.finish()
    }
}

/// One stanza being read.
struct Run<'p, 'd> {
    data: &'d [u8],
    /// Where the stanza's bytes start in its string (after the prelude).
    base: usize,
    pos: usize,
    /// Whether the stream's `stream` prefix is inherited.
    with_stream: bool,
    max_depth: usize,
    prelude: &'p Prelude,
    scratch: &'p mut Scratch,
}

impl<'p, 'd> Run<'p, 'd> {
    fn byte(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    /// The span of the stanza's bytes `start..end`.
    fn span(&self, (start, end): (usize, usize)) -> Span {
        Span {
            start: self.base + start,
            end: self.base + end,
        }
    }

    fn bytes(&self, (start, end): (usize, usize)) -> &'d [u8] {
        self.data.get(start..end).unwrap_or(&[])
    }

    /// The bytes a span points at: the prelude's, the stanza's or the resolved values'.
    fn span_bytes(&self, span: Span) -> &[u8] {
        let found = if span.start >= EXTRA {
            self.scratch.extra.get(span.start - EXTRA..span.end - EXTRA)
        } else if span.start >= self.base {
            self.data.get(span.start - self.base..span.end - self.base)
        } else {
            self.prelude.text.as_bytes().get(span.start..span.end)
        };
        found.unwrap_or(&[])
    }

    /// Skips white space; whether there was any.
    fn skip_space(&mut self) -> bool {
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        let n = rest.iter().position(|&b| !space(b)).unwrap_or(rest.len());
        self.pos += n;
        n > 0
    }

    /// A name at `pos`: ASCII, at most one `:`, both parts starting as NCNames do.
    fn name(&mut self) -> Option<QName> {
        let start = self.pos;
        let rest = self.data.get(start..)?;
        if !name_start(*rest.first()?) {
            return None;
        }
        // A name must be followed by something: at the end of the bytes the stanza is
        // incomplete.
        let mut len = 1 + rest[1..]
            .iter()
            .position(|&b| NAME[usize::from(b)] != NAME_CHAR)?;
        let mut colon = None;
        if rest[len] == b':' {
            colon = Some(start + len);
            if !name_start(*rest.get(len + 1)?) {
                return None;
            }
            len += 2 + rest[len + 2..]
                .iter()
                .position(|&b| NAME[usize::from(b)] != NAME_CHAR)?;
            if rest[len] == b':' {
                return None;
            }
        }
        self.pos = start + len;
        Some(QName {
            start,
            colon,
            end: self.pos,
        })
    }

    /// A start tag at `pos` (its `<`): the element's node, its attributes and declarations.
    fn start_tag(&mut self) -> Option<()> {
        let depth = self.scratch.open.len() + 1;
        if depth > self.max_depth {
            return None;
        }
        self.pos += 1;
        let qname = self.name()?;
        let mut raw = std::mem::take(&mut self.scratch.raw);
        raw.clear();
        let empty = loop {
            let spaced = self.skip_space();
            match self.byte()? {
                b'>' => {
                    self.pos += 1;
                    break false;
                }
                b'/' => {
                    if self.data.get(self.pos + 1) != Some(&b'>') {
                        return None;
                    }
                    self.pos += 2;
                    break true;
                }
                _ if spaced => {
                    let name = self.name()?;
                    let kind = self.attribute_kind(name)?;
                    self.skip_space();
                    if self.byte()? != b'=' {
                        return None;
                    }
                    self.pos += 1;
                    self.skip_space();
                    let value = self.value()?;
                    raw.push(Raw {
                        qname: name,
                        kind,
                        value,
                    });
                }
                _ => return None,
            }
        };
        if depth == 1 {
            self.with_stream = qname.prefix().map(|p| self.bytes(p)) == Some(b"stream");
        }
        let scope = self.element(qname, depth == 1, &raw);
        self.scratch.raw = raw;
        let scope = scope?;
        let node = self.scratch.nodes.len() - 1;
        if empty {
            // The declarations of an empty element end with it.
            self.scratch.scope.truncate(scope);
        } else {
            self.scratch.open.push(Open { node, qname, scope });
        }
        Some(())
    }

    /// What the attribute named `qname` is; `None` for a prefix other than `xml` and
    /// `xmlns` (whose namespace the general path resolves).
    fn attribute_kind(&self, qname: QName) -> Option<RawKind> {
        match qname.prefix() {
            None if self.bytes((qname.start, qname.end)) == b"xmlns" => {
                Some(RawKind::Declares(None))
            }
            None => Some(RawKind::Plain),
            Some(prefix) => match self.bytes(prefix) {
                b"xmlns" => Some(RawKind::Declares(Some(qname.local()))),
                b"xml" => Some(RawKind::Xml),
                _ => None,
            },
        }
    }

    /// Pushes the element of the start tag just read, with its attributes `raw`, and its
    /// declarations onto the scope; the length the scope had before. Declines what the
    /// general path would refuse or read otherwise.
    fn element(&mut self, qname: QName, root: bool, raw: &[Raw]) -> Option<usize> {
        let first_attr = self.scratch.attrs.len();
        // Duplicated attributes (as written) are the general path's to judge.
        for (i, a) in raw.iter().enumerate() {
            let name = self.bytes((a.qname.start, a.qname.end));
            if raw[..i]
                .iter()
                .any(|b| self.bytes((b.qname.start, b.qname.end)) == name)
            {
                return None;
            }
        }
        // Declarations first: they are in scope for the element's own name and attributes.
        let scope_start = self.scratch.scope.len();
        for a in raw {
            let RawKind::Declares(prefix) = a.kind else {
                continue;
            };
            let value = self.span_bytes(a.value);
            if value.is_empty() || value == XML_NS.as_bytes() {
                return None;
            }
            if let Some(p) = prefix
                && matches!(self.bytes(p), b"xml" | b"xmlns")
            {
                return None;
            }
            self.scratch.scope.push(Declared {
                prefix,
                namespace: a.value,
            });
            let name = prefix.map_or(Span::EMPTY, |p| self.span(p));
            self.scratch.attrs.push(Attr {
                kind: AttrKind::Declares,
                name,
                value: a.value,
            });
        }
        if root {
            // The root also lists what it inherits from the stream, as minidom's tree
            // builder does, unless it declares the same prefix itself.
            for i in 0..self.prelude.inherited.len() {
                let entry = &self.prelude.inherited[i];
                if entry.stream && !self.with_stream {
                    continue;
                }
                let prefix = entry.prefix.map(|p| self.span_bytes(p));
                let own = self.scratch.scope[scope_start..]
                    .iter()
                    .any(|d| d.prefix.map(|p| self.bytes(p)) == prefix);
                if !own {
                    self.scratch.attrs.push(Attr {
                        kind: AttrKind::Declares,
                        name: entry.prefix.unwrap_or(Span::EMPTY),
                        value: entry.namespace,
                    });
                }
            }
        }
        let ns = self.resolve(qname.prefix())?;
        for a in raw {
            let kind = match a.kind {
                RawKind::Declares(_) => continue,
                RawKind::Plain => AttrKind::Plain,
                RawKind::Xml => AttrKind::In(self.prelude.xml),
            };
            self.scratch.attrs.push(Attr {
                kind,
                name: self.span(a.qname.local()),
                value: a.value,
            });
        }
        self.scratch.nodes.push(Node::Element(ElementNode {
            name: self.span(qname.local()),
            ns,
            attrs: (first_attr, self.scratch.attrs.len()),
            end: self.scratch.nodes.len() + 1,
        }));
        Some(scope_start)
    }

    /// The namespace bound to `prefix` (`None`: the default namespace), innermost first,
    /// then what the stream root declared.
    fn resolve(&self, prefix: Option<(usize, usize)>) -> Option<Span> {
        let written = prefix.map(|p| self.bytes(p));
        if let Some(declared) = self
            .scratch
            .scope
            .iter()
            .rev()
            .find(|d| d.prefix.map(|p| self.bytes(p)) == written)
        {
            return Some(declared.namespace);
        }
        self.prelude
            .inherited
            .iter()
            .find(|i| {
                (!i.stream || self.with_stream) && i.prefix.map(|p| self.span_bytes(p)) == written
            })
            .map(|i| i.namespace)
    }

    /// An end tag at `pos` (its `<`): it must close the innermost open element, by the
    /// same name as written.
    fn end_tag(&mut self) -> Option<()> {
        let open = self.scratch.open.pop()?;
        let name = self.bytes((open.qname.start, open.qname.end));
        let at = self.pos + 2;
        if self.data.get(at..at + name.len())? != name {
            return None;
        }
        self.pos = at + name.len();
        // The name ends there: `>`, or white space then `>`.
        self.skip_space();
        if self.byte()? != b'>' {
            return None;
        }
        self.pos += 1;
        self.scratch.scope.truncate(open.scope);
        let after = self.scratch.nodes.len();
        if let Some(Node::Element(node)) = self.scratch.nodes.get_mut(open.node) {
            node.end = after;
        }
        Some(())
    }

    /// A non-ASCII byte at `pos`: U+FFFE and U+FFFF are not XML characters (the rest of
    /// UTF-8 is checked once, over the whole stanza, at the end).
    fn high(&self) -> Option<()> {
        if self.byte()? == 0xef {
            let next = self.data.get(self.pos + 1..self.pos + 3)?;
            if next[0] == 0xbf && matches!(next[1], 0xbe | 0xbf) {
                return None;
            }
        }
        Some(())
    }

    /// Text or an attribute value from `pos`, up to a byte of class `stop` (`<` for text,
    /// the quote for a value), classified by `classes`; its span, references resolved.
    fn run_of(&mut self, classes: &[u8; 256], quote: u8) -> Option<Span> {
        let start = self.pos;
        // Where the resolved value starts in `extra`, once a reference was seen.
        let mut resolved: Option<usize> = None;
        let mut piece = start;
        loop {
            let rest = self.data.get(self.pos..)?;
            let plain = rest
                .iter()
                .position(|&b| classes[usize::from(b)] != PLAIN)?;
            self.pos += plain;
            let b = rest[plain];
            match classes[usize::from(b)] {
                LT => break,
                QUOTE if b == quote => break,
                QUOTE => self.pos += 1,
                AMP => {
                    resolved.get_or_insert(self.scratch.extra.len());
                    let bytes = self.data.get(piece..self.pos)?;
                    self.scratch.extra.extend_from_slice(bytes);
                    self.reference()?;
                    piece = self.pos;
                }
                BRACKET => {
                    if self.data.get(self.pos + 1..self.pos + 3)? == b"]>" {
                        return None;
                    }
                    self.pos += 1;
                }
                HIGH => {
                    self.high()?;
                    self.pos += 1;
                }
                _ => return None,
            }
        }
        Some(match resolved {
            None => self.span((start, self.pos)),
            Some(first) => {
                let bytes = self.data.get(piece..self.pos)?;
                self.scratch.extra.extend_from_slice(bytes);
                Span {
                    start: EXTRA + first,
                    end: EXTRA + self.scratch.extra.len(),
                }
            }
        })
    }

    /// Text up to the next `<`, pushed as a text node unless empty.
    fn text(&mut self) -> Option<()> {
        let span = self.run_of(&TEXT, 0)?;
        if span.end > span.start {
            self.scratch.nodes.push(Node::Text(span));
        }
        Some(())
    }

    /// A quoted attribute value at `pos`; its span, references resolved.
    fn value(&mut self) -> Option<Span> {
        let quote = self.byte()?;
        if !matches!(quote, b'\'' | b'"') {
            return None;
        }
        self.pos += 1;
        let span = self.run_of(&VALUE, quote)?;
        self.pos += 1;
        Some(span)
    }

    /// A reference at `pos` (its `&`), resolved into the extra bytes.
    fn reference(&mut self) -> Option<()> {
        self.pos += 1;
        if self.byte()? == b'#' {
            self.pos += 1;
            let hex = self.byte()? == b'x';
            if hex {
                self.pos += 1;
            }
            let start = self.pos;
            while self.byte()?.is_ascii_hexdigit() {
                self.pos += 1;
            }
            let digits = self.data.get(start..self.pos)?;
            if digits.is_empty() || digits.len() > 6 || self.byte()? != b';' {
                return None;
            }
            if !hex && !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let digits = std::str::from_utf8(digits).ok()?;
            let code = u32::from_str_radix(digits, if hex { 16 } else { 10 }).ok()?;
            let c = char::from_u32(code).filter(|&c| xml_char(c))?;
            self.pos += 1;
            let mut buffer = [0u8; 4];
            self.scratch
                .extra
                .extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
            return Some(());
        }
        let start = self.pos;
        while self.byte()?.is_ascii_lowercase() {
            self.pos += 1;
        }
        let resolved = match self.data.get(start..self.pos)? {
            b"lt" => b'<',
            b"gt" => b'>',
            b"amp" => b'&',
            b"apos" => b'\'',
            b"quot" => b'"',
            _ => return None,
        };
        if self.byte()? != b';' {
            return None;
        }
        self.pos += 1;
        self.scratch.extra.push(resolved);
        Some(())
    }

    /// The stanza: the prelude, its own bytes, then the resolved values, in one string
    /// (checked as UTF-8 once), the spans of resolved values moved to point into it.
    fn finish(self) -> Option<(Stanza, usize)> {
        let len = self.pos;
        let prelude = self.prelude.text.as_bytes();
        let scratch = self.scratch;
        let mut bytes = Vec::with_capacity(prelude.len() + len + scratch.extra.len());
        bytes.extend_from_slice(prelude);
        bytes.extend_from_slice(self.data.get(..len)?);
        bytes.extend_from_slice(&scratch.extra);
        let text = String::from_utf8(bytes).ok()?;
        if !scratch.extra.is_empty() {
            let moved = self.base + len;
            let fix = |span: &mut Span| {
                if span.start >= EXTRA {
                    span.start = span.start - EXTRA + moved;
                    span.end = span.end - EXTRA + moved;
                }
            };
            for node in &mut scratch.nodes {
                match node {
                    Node::Element(node) => fix(&mut node.ns),
                    Node::Text(span) => fix(span),
                }
            }
            for attr in &mut scratch.attrs {
                fix(&mut attr.value);
            }
        }
        // Copies of their exact size: the scratch lists stay for the next stanza.
        let stanza = Stanza {
            text,
            nodes: scratch.nodes.clone(),
            attrs: scratch.attrs.clone(),
        };
        Some((stanza, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{StreamEvent, StreamParser};

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
        xmlns:stream='http://etherx.jabber.org/streams' id='q-1'>";

    fn root() -> BTreeMap<Option<String>, String> {
        BTreeMap::from([
            (None, "jabber:component:accept".to_owned()),
            (
                Some("stream".to_owned()),
                "http://etherx.jabber.org/streams".to_owned(),
            ),
        ])
    }

    const BOUNDS: Bounds = Bounds {
        max_bytes: 4096,
        max_depth: 8,
    };

    /// What the stream reader gives for `stanza` after the header, with or without the
    /// quick path: the events (each stanza with its text, so that prefix declarations are
    /// compared too) or the error.
    fn read(stanza: &str, quick: bool) -> Result<Vec<(StreamEvent, Option<String>)>, String> {
        let parser = StreamParser::with_limits(crate::stream::Limits {
            max_stanza_bytes: BOUNDS.max_bytes,
            max_depth: BOUNDS.max_depth,
        });
        let mut parser = if quick {
            parser
        } else {
            parser.without_quick_path()
        };
        let mut out = Vec::new();
        parser
            .feed(format!("{HEADER}{stanza}").as_bytes(), &mut out)
            .map_err(|e| e.to_string())?;
        Ok(out
            .into_iter()
            .map(|e| {
                let text = match &e {
                    StreamEvent::Stanza(element) => Some(written(element)),
                    _ => None,
                };
                (e, text)
            })
            .collect())
    }

    /// The element as minidom writes it. minidom panics writing an element that declares
    /// the `xml` prefix (which the general path lets through): that is told as such.
    fn written(element: &minidom::Element) -> String {
        std::panic::catch_unwind(|| String::from(element))
            .unwrap_or_else(|_| "minidom cannot write this element".to_owned())
    }

    /// One case per line: a name, the stanza, and whether the quick path takes it. Every
    /// case must read the same with and without the quick path.
    const CASES: &[(&str, &str, bool)] = &[
        (
            "xep0235_subscribe",
            "<iq from='a@b/c' id='s1' to='p.b' type='set'><pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe jid='a@b' node='n'/><oauth xmlns='urn:xmpp:oauth:0'><oauth_consumer_key>k</oauth_consumer_key><oauth_version>1.0</oauth_version></oauth></pubsub></iq>",
            true,
        ),
        ("empty_root", "<presence/>", true),
        ("empty_root_with_space", "<presence from='a@b' />", true),
        (
            "pretty_printed",
            "<message to='x'>\n\t<body>hi</body>\n</message>",
            true,
        ),
        (
            "entities_in_text_and_values",
            "<message id='a&amp;b&lt;&gt;&quot;&apos;'><body>x &amp; y &lt; z</body></message>",
            true,
        ),
        (
            "character_references",
            "<message id='&#65;&#x42;'><body>&#x1F600;&#233;&#13;</body></message>",
            true,
        ),
        (
            "non_ascii_text",
            "<message><body>é ü 日本 🎉</body></message>",
            true,
        ),
        (
            "brackets_and_gt_in_text",
            "<message><body>a]b]]c&gt;]]</body></message>",
            true,
        ),
        ("gt_in_values", "<message id='>' to=\"a'b\"/>", true),
        ("space_around_equals", "<message id = 'x'  to ='y'/>", true),
        (
            "end_tag_with_space",
            "<message><body>x</body ></message >",
            true,
        ),
        (
            "xml_lang",
            "<message xml:lang='en'><body xml:lang='fr'>b</body></message>",
            true,
        ),
        (
            "prefixed_element_declared_here",
            "<iq><p:x xmlns:p='urn:p'><p:y/></p:x></iq>",
            true,
        ),
        (
            "prefix_declared_on_the_root",
            "<iq xmlns:p='urn:p'><p:x/></iq>",
            true,
        ),
        (
            "default_namespace_changes",
            "<iq><a xmlns='urn:a'><b/><c xmlns='urn:c'/></a></iq>",
            true,
        ),
        (
            "root_redeclares_the_default",
            "<iq xmlns='jabber:client'><x/></iq>",
            true,
        ),
        (
            "stream_level_element",
            "<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
            true,
        ),
        (
            "namespace_with_a_reference",
            "<iq xmlns:p='urn:a&amp;b'><p:x/></iq>",
            true,
        ),
        (
            "at_the_depth_limit",
            "<a><b><c><d><e><f><g><h/></g></f></e></d></c></b></a>",
            true,
        ),
        (
            "over_the_depth_limit",
            "<a><b><c><d><e><f><g><h><i/></h></g></f></e></d></c></b></a>",
            false,
        ),
        (
            "cr_in_text",
            "<message><body>a\r\nb</body></message>",
            false,
        ),
        ("tab_in_value", "<message id='a\tb'/>", false),
        ("newline_in_value", "<message id='a\nb'/>", false),
        (
            "cdata_end_in_text",
            "<message><body>a]]>b</body></message>",
            false,
        ),
        (
            "cdata_section",
            "<message><body><![CDATA[x]]></body></message>",
            false,
        ),
        ("comment", "<message><!-- c --></message>", false),
        (
            "processing_instruction",
            "<message><?pi x?></message>",
            false,
        ),
        ("non_ascii_name", "<message><é/></message>", false),
        ("duplicated_attribute", "<message id='1' id='2'/>", false),
        (
            "duplicated_declaration",
            "<message xmlns:p='u' xmlns:p='v'/>",
            false,
        ),
        ("undeclared_prefix", "<iq><x:query/></iq>", false),
        (
            "stream_prefix_inside_a_stanza",
            "<iq><stream:x/></iq>",
            false,
        ),
        (
            "other_prefixed_attribute",
            "<iq xmlns:p='urn:p' p:a='1'/>",
            false,
        ),
        ("empty_prefix_declaration", "<iq xmlns:p=''/>", false),
        ("empty_default_declaration", "<iq><x xmlns=''/></iq>", false),
        (
            "xml_prefix_declared",
            "<iq xmlns:xml='http://www.w3.org/XML/1998/namespace'/>",
            false,
        ),
        ("xmlns_prefix_declared", "<iq xmlns:xmlns='urn:x'/>", false),
        (
            "xml_namespace_bound",
            "<iq xmlns:p='http://www.w3.org/XML/1998/namespace'/>",
            false,
        ),
        (
            "unknown_entity",
            "<message><body>&nbsp;</body></message>",
            false,
        ),
        (
            "unterminated_entity",
            "<message><body>&amp</body></message>",
            false,
        ),
        (
            "lone_ampersand",
            "<message><body>a & b</body></message>",
            false,
        ),
        (
            "character_reference_to_nul",
            "<message><body>&#0;</body></message>",
            false,
        ),
        (
            "character_reference_to_a_surrogate",
            "<message><body>&#xD800;</body></message>",
            false,
        ),
        (
            "character_reference_of_seven_digits",
            "<message><body>&#1114111;</body></message>",
            false,
        ),
        (
            "upper_case_x_reference",
            "<message><body>&#X41;</body></message>",
            false,
        ),
        (
            "u_ffff_in_text",
            "<message><body>\u{ffff}</body></message>",
            false,
        ),
        (
            "control_character_in_text",
            "<message><body>\u{1}</body></message>",
            false,
        ),
        (
            "mismatched_end_tag",
            "<message><body>x</bodx></message>",
            false,
        ),
        (
            "longer_end_tag",
            "<message><body>x</bodyx></message>",
            false,
        ),
        ("two_colons", "<a:b:c xmlns:a='u'/>", false),
        ("colon_at_the_end", "<a: xmlns:a='u'/>", false),
        (
            "name_starting_with_a_digit",
            "<message><1a/></message>",
            false,
        ),
        (
            "missing_space_between_attributes",
            "<message id='1'to='2'/>",
            false,
        ),
        ("slash_not_closing", "<message/ >", false),
        ("unquoted_value", "<message id=1/>", false),
        ("less_than_in_value", "<message id='<'/>", false),
        ("incomplete", "<message><body>x</body>", false),
    ];

    #[test]
    fn the_quick_path_takes_what_it_can_and_changes_nothing() {
        let root = root();
        for &(name, stanza, taken) in CASES {
            let mut quick = QuickParser::new(&root);
            let parsed = quick.parse(stanza.as_bytes(), BOUNDS);
            assert_eq!(parsed.is_some(), taken, "{name}: taken");
            let general = read(stanza, false);
            assert_eq!(read(stanza, true), general, "{name}: events");
            if let Some((compact, len)) = parsed {
                assert_eq!(len, stanza.len(), "{name}: length");
                let Ok(events) = &general else {
                    panic!("{name}: taken, but the general path refuses it: {general:?}")
                };
                let (StreamEvent::Stanza(element), Some(text)) = &events[1] else {
                    panic!("{name}: taken, but the general path gives {events:?}")
                };
                assert_eq!(&compact.to_element(), element, "{name}: element");
                assert_eq!(&written(&compact.to_element()), text, "{name}: text");
                assert_eq!(compact, Stanza::from_element(element), "{name}: compact");
            }
        }
    }

    #[test]
    fn a_stanza_is_taken_only_whole_and_within_the_limit() {
        let root = root();
        let stanza = "<message to='x'><body>hello</body></message>";
        let mut quick = QuickParser::new(&root);
        for cut in 0..stanza.len() {
            assert!(
                quick.parse(&stanza.as_bytes()[..cut], BOUNDS).is_none(),
                "{cut}"
            );
        }
        let followed = format!("{stanza}<presence/>");
        let (_, len) = quick.parse(followed.as_bytes(), BOUNDS).unwrap();
        assert_eq!(len, stanza.len());
        let exact = Bounds {
            max_bytes: stanza.len(),
            ..BOUNDS
        };
        assert!(quick.parse(stanza.as_bytes(), exact).is_some());
        let under = Bounds {
            max_bytes: stanza.len() - 1,
            ..BOUNDS
        };
        assert!(quick.parse(stanza.as_bytes(), under).is_none());
    }
}
