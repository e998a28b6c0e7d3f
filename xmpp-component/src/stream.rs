//! The XEP-0114 component stream: an incremental reader that turns bytes into stanzas, the
//! handshake, and the connection halves the component loop uses.
//!
//! [`StreamParser`] does no I/O: feed it bytes as they arrive, in pieces of any size, and it
//! returns the stream header, each complete stanza as a [`minidom::Element`] (or, from
//! [`StreamParser::compact`], as a compact [`Stanza`]), stanzas that were too large or
//! malformed (with their head, so the service can answer them), and the end of the stream.
//! Whitespace between stanzas (keepalives) is skipped. Only XML that is not well-formed ends
//! the stream, as RFC 6120 §4.9.3.8 requires (`not-well-formed`).
//!
//! Two paths read a stanza, with the same result:
//!
//! - the *quick path* takes a stanza that arrived whole (the usual case: a read holds every
//!   stanza but perhaps its last) and reads it in one pass straight into a [`Stanza`]. It
//!   takes only what it can check completely (the list is at the top of
//!   `stanza/parse.rs`), and declines the rest before any of it is used;
//! - the *general path* takes everything else: rxml's parser checks every byte as it
//!   arrives, the framer (`stream/frame.rs`) keeps the size and depth limits, and minidom's
//!   tree builder makes the element. A stanza cut across reads, or declined by the quick
//!   path, or refused (oversized, too deep, malformed, not well-formed) goes this way, so
//!   every refusal, error and its text is the general path's own.
//!
//! The quick path only starts at a stanza's `<` with nothing but white space since the end of
//! the previous stanza (where rxml's parser has no token pending), so leaving a whole stanza
//! out of what rxml sees keeps the rest of the stream exactly as well-formed as it was.
//! Measured with callgrind on the XEP-0235 example subscribe (606 bytes, 11 elements): the
//! general path takes about 138,000 instructions to read it into an element, half in rxml's
//! parser and half in minidom's tree builder; the quick path about 12,500 into a compact
//! stanza (`cargo bench -p pubsub-guard --bench subscribe` has the guard's figures).

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use minidom::Element;
use minidom::rxml::{self, Parse, RawEvent, RawParser};
use minidom::tree_builder::TreeBuilder;
use oauth_xmpp::Secret;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::ns;
use crate::stanza::{Bounds, QuickParser, Stanza};

/// How long the handshake may take before the attempt counts as failed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The attributes of a stanza's start tag that an error reply needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StanzaHead {
    /// The element name (`iq`, `message`, `presence`, …).
    pub name: String,
    /// `id`, if present.
    pub id: Option<String>,
    /// `from`, if present.
    pub from: Option<String>,
    /// `to`, if present.
    pub to: Option<String>,
    /// `type`, if present.
    pub kind: Option<String>,
}

/// How the reader hands over each stanza: as a minidom [`Element`] (the default, what
/// [`StreamParser::new`] gives) or as a compact [`Stanza`] ([`StreamParser::compact`], what
/// the guard reads). Both forms come from the same two paths (see the module documentation):
/// a stanza the quick path read becomes an [`Element`] through [`Stanza::to_element`], and
/// one the general path read becomes a [`Stanza`] through [`Stanza::from_element`].
pub trait Form: sealed::Sealed + Sized + fmt::Debug + Clone + PartialEq {
    /// A stanza the quick path read.
    fn from_stanza(stanza: Stanza) -> Self;
    /// A stanza the general path read.
    fn from_element(element: Element) -> Self;
    /// The stanza element's name.
    fn name(&self) -> &str;
    /// Whether the stanza element is `name` in `namespace`.
    fn is(&self, name: &str, namespace: &str) -> bool;
    /// The stanza as a minidom element.
    fn to_element(&self) -> Element;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for minidom::Element {}
    impl Sealed for crate::stanza::Stanza {}
}

impl Form for Element {
    fn from_stanza(stanza: Stanza) -> Self {
        stanza.to_element()
    }

    fn from_element(element: Element) -> Self {
        element
    }

    fn name(&self) -> &str {
        Element::name(self)
    }

    fn is(&self, name: &str, namespace: &str) -> bool {
        Element::is(self, name, namespace)
    }

    fn to_element(&self) -> Element {
        self.clone()
    }
}

impl Form for Stanza {
    fn from_stanza(stanza: Stanza) -> Self {
        stanza
    }

    fn from_element(element: Element) -> Self {
        Stanza::from_element(&element)
    }

    fn name(&self) -> &str {
        self.root().name()
    }

    fn is(&self, name: &str, namespace: &str) -> bool {
        self.root().is(name, namespace)
    }

    fn to_element(&self) -> Element {
        Stanza::to_element(self)
    }
}

/// What the reader found in the stream. `S` is the form of the stanzas ([`Form`]).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent<S = Element> {
    /// The server's `<stream:stream>` header, with its `id`.
    Header {
        /// The stream id (the handshake hashes it with the secret).
        id: String,
    },
    /// A complete stanza (or stream-level element such as `<stream:error/>`).
    Stanza(S),
    /// A stanza larger than the limit; its content was skipped.
    Oversized {
        /// Its start tag.
        head: StanzaHead,
        /// Its size in bytes.
        bytes: usize,
    },
    /// A stanza nested deeper than the limit; its content was skipped.
    TooDeep {
        /// Its start tag.
        head: StanzaHead,
        /// The nesting limit it went over.
        limit: usize,
    },
    /// A well-formed stanza that does not make a tree (an undeclared prefix, say).
    Malformed {
        /// Its start tag.
        head: StanzaHead,
        /// Why.
        reason: String,
    },
    /// The server closed the stream (`</stream:stream>`).
    Closed,
}

/// A failure of the stream itself; the connection is over and the component reconnects.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The socket failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not well-formed XML.
    #[error("the server sent XML that is not well-formed: {0}")]
    NotWellFormed(String),
    /// The stream root is not `<stream:stream>` in the right namespaces.
    #[error("the server did not open an XMPP stream: {0}")]
    BadHeader(String),
    /// The server closed the connection (EOF or `</stream:stream>`).
    #[error("the server closed the stream")]
    Closed,
    /// The server sent `<stream:error/>`.
    #[error("stream error from the server: {condition}{}", text.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Server {
        /// The defined condition (`not-authorized`, `conflict`, …).
        condition: String,
        /// Its text, if any.
        text: Option<String>,
    },
    /// The handshake did not finish in time.
    #[error("the server did not finish the handshake within {0:?}")]
    Timeout(Duration),
}

impl StreamError {
    /// Whether retrying cannot help: the server refused the component's secret.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Server { condition, .. } if condition == "not-authorized")
    }

    /// The error a `<stream:error/>` element stands for.
    pub fn from_stream_error(element: &Element) -> Self {
        let mut condition = None;
        let mut text = None;
        for child in element.children() {
            if child.ns() != ns::STREAM_ERRORS {
                continue;
            }
            if child.name() == "text" {
                text = Some(child.text());
            } else if condition.is_none() {
                condition = Some(child.name().to_owned());
            }
        }
        Self::Server {
            condition: condition.unwrap_or_else(|| "undefined-condition".into()),
            text,
        }
    }
}

mod frame;

use frame::{Framer, Scan};

/// The limits on what one stanza may be. A stanza over either is refused on its own
/// ([`StreamEvent::Oversized`], [`StreamEvent::TooDeep`]); the stream goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest stanza, in bytes. No name or attribute value can be longer, whatever the
    /// XML parser's own token limit: the parser never sees more of a stanza than this.
    pub max_stanza_bytes: usize,
    /// The deepest element nesting of a stanza (the stanza element itself is depth 1).
    pub max_depth: usize,
}

/// The default stanza size limit: 64 KiB.
pub const DEFAULT_MAX_STANZA_BYTES: usize = 64 * 1024;
/// The default nesting limit. A publish of an Atom entry is 7 deep
/// (`iq/pubsub/publish/item/entry/author/name`); 64 leaves room for rich payloads and bounds
/// every recursive walk of a stanza tree (building, cloning, writing, dropping).
pub const DEFAULT_MAX_DEPTH: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stanza_bytes: DEFAULT_MAX_STANZA_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// Where the parser is in the stream.
enum State {
    /// Before the root element's start tag is complete.
    Header {
        prefixes: BTreeMap<Option<String>, String>,
        id: Option<String>,
    },
    /// Between stanzas (depth 1).
    Open,
    /// Inside a stanza.
    Stanza(Box<Current>),
    /// After `</stream:stream>`.
    Done,
}

/// The stanza being read.
struct Current {
    /// The tree so far; `None` once it is being skipped.
    tree: Option<TreeBuilder>,
    /// Element depth inside the stanza (1 = the stanza element itself).
    depth: usize,
    /// Why it is skipped, if it is.
    skip: Option<Skip>,
}

enum Skip {
    TooDeep,
    Malformed(String),
}

/// Bytes in, [`StreamEvent`]s out, stanzas in the form `S` ([`Form`]). See the module
/// documentation.
pub struct StreamParser<S = Element> {
    parser: RawParser,
    state: State,
    /// The namespaces declared on the stream root, inherited by every stanza.
    root_prefixes: BTreeMap<Option<String>, String>,
    limits: Limits,
    framer: Framer,
    /// Whether the quick path is on.
    quick_path: bool,
    /// The quick path's parser, once the header declared what stanzas inherit.
    quick: Option<QuickParser>,
    /// Whether the stream is between stanzas with nothing but white space since the last
    /// one ended (or the header), so that the quick path may take the next stanza.
    clean: bool,
    form: PhantomData<fn() -> S>,
}

/// The XML parser, with a token limit no stanza within `limit` bytes can reach.
fn raw_parser(limit: usize) -> RawParser {
    <RawParser as rxml::WithOptions>::with_options(rxml::Options {
        max_token_length: limit.saturating_add(1),
        ..rxml::Options::default()
    })
}

impl StreamParser {
    /// A parser that refuses stanzas over `limit` bytes, with the default nesting limit.
    pub fn new(limit: usize) -> Self {
        Self::with_limits(Limits {
            max_stanza_bytes: limit,
            ..Limits::default()
        })
    }

    /// A parser with these limits.
    pub fn with_limits(limits: Limits) -> Self {
        Self::in_form(limits)
    }
}

impl StreamParser<Stanza> {
    /// A parser with these limits that gives each stanza as a compact [`Stanza`] (what the
    /// guard reads: a stanza the quick path took is never made into a minidom tree).
    pub fn compact(limits: Limits) -> Self {
        Self::in_form(limits)
    }
}

impl<S: Form> StreamParser<S> {
    /// A parser with these limits, for stanzas in the form `S`.
    pub fn in_form(limits: Limits) -> Self {
        Self {
            parser: raw_parser(limits.max_stanza_bytes),
            state: State::Header {
                prefixes: BTreeMap::new(),
                id: None,
            },
            root_prefixes: BTreeMap::new(),
            limits,
            framer: Framer::new(limits.max_stanza_bytes),
            quick_path: true,
            quick: None,
            clean: false,
            form: PhantomData,
        }
    }

    /// The same parser without the quick path: every stanza goes through rxml's parser and
    /// minidom's tree builder, as before the quick path existed. For differential tests
    /// (the fuzz target `stream_parser` checks that both give the same events and errors)
    /// and benchmarks.
    pub fn without_quick_path(mut self) -> Self {
        self.quick_path = false;
        self.quick = None;
        self
    }

    /// Parses all of `data`, appending what it completes to `out`. An error means the stream
    /// is unusable (not well-formed, or not an XMPP stream).
    pub fn feed(
        &mut self,
        mut data: &[u8],
        out: &mut Vec<StreamEvent<S>>,
    ) -> Result<(), StreamError> {
        while !data.is_empty() {
            match self.state {
                State::Done => return Ok(()),
                State::Header { .. } => {
                    // The header goes to the XML parser alone, one event at a time, so that
                    // the framer starts on the first byte after it.
                    if !self.parse_one(&mut data, out)? {
                        return Ok(());
                    }
                    continue;
                }
                State::Open if self.clean => {
                    data = self.quick_stanzas(data, out);
                    if data.is_empty() {
                        return Ok(());
                    }
                    // What the quick path did not take goes to the general path, from its
                    // first byte.
                    self.clean = false;
                }
                State::Open | State::Stanza(_) => {}
            }
            let skipping = self.framer.skipping();
            match self.framer.scan(data) {
                Scan::All => {
                    if !skipping {
                        self.parse(data, out)?;
                    }
                    return Ok(());
                }
                Scan::End { at, skipped: false } => {
                    self.parse(&data[..at], out)?;
                    data = &data[at..];
                    self.clean = true;
                }
                Scan::End { at, skipped: true } => {
                    data = &data[at..];
                    out.push(StreamEvent::Oversized {
                        head: self.framer.take_head(),
                        bytes: self.framer.last_bytes(),
                    });
                    self.clean = true;
                }
                Scan::Overflow(at) => {
                    // The parser gets nothing more of this stanza; a fresh one, inside the
                    // stream root, takes the stream up after it. The framer reads on past
                    // `</stream:stream>` (it does not know the stream ended): nothing after
                    // the end is a stanza, however long.
                    self.parse(&data[..at], out)?;
                    if matches!(self.state, State::Done) {
                        return Ok(());
                    }
                    data = &data[at..];
                    self.parser = raw_parser(self.limits.max_stanza_bytes);
                    let mut root: &[u8] = b"<stream:stream>";
                    loop {
                        match self.parser.parse(&mut root, false) {
                            Ok(Some(_)) => {}
                            Ok(None) | Err(rxml::error::EndOrError::NeedMoreData) => break,
                            Err(rxml::error::EndOrError::Error(e)) => {
                                return Err(StreamError::NotWellFormed(e.to_string()));
                            }
                        }
                    }
                    self.state = State::Open;
                }
            }
        }
        Ok(())
    }

    /// The quick path: takes the whole stanzas at the start of `data` (and the white space
    /// around them), and returns what it did not take, from the first byte it declined.
    /// Called only between stanzas with the stream clean (see the module documentation).
    fn quick_stanzas<'d>(&mut self, mut data: &'d [u8], out: &mut Vec<StreamEvent<S>>) -> &'d [u8] {
        let Some(quick) = &mut self.quick else {
            return data;
        };
        let bounds = Bounds {
            max_bytes: self.limits.max_stanza_bytes,
            max_depth: self.limits.max_depth,
        };
        loop {
            // White space between stanzas is what the framer and rxml's parser would skip.
            let blank = data
                .iter()
                .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                .unwrap_or(data.len());
            data = &data[blank..];
            let starts_stanza = data.first() == Some(&b'<')
                && data
                    .get(1)
                    .is_some_and(|b| !matches!(b, b'/' | b'!' | b'?'));
            if !starts_stanza {
                return data;
            }
            match quick.parse(data, bounds) {
                Some((stanza, len)) => {
                    out.push(StreamEvent::Stanza(S::from_stanza(stanza)));
                    data = &data[len..];
                }
                None => return data,
            }
        }
    }

    /// Gives all of `data` to the XML parser, up to the end of the stream: whatever follows
    /// `</stream:stream>` is ignored, however the bytes were cut.
    fn parse(&mut self, mut data: &[u8], out: &mut Vec<StreamEvent<S>>) -> Result<(), StreamError> {
        while !matches!(self.state, State::Done) && self.parse_one(&mut data, out)? {}
        Ok(())
    }

    /// Reads one event from `data`; `false` when `data` is used up (or the stream is over).
    fn parse_one(
        &mut self,
        data: &mut &[u8],
        out: &mut Vec<StreamEvent<S>>,
    ) -> Result<bool, StreamError> {
        match self.parser.parse(data, false) {
            Ok(Some(event)) => {
                self.event(event, out)?;
                Ok(true)
            }
            Ok(None) | Err(rxml::error::EndOrError::NeedMoreData) => Ok(false),
            Err(rxml::error::EndOrError::Error(e)) => {
                Err(StreamError::NotWellFormed(e.to_string()))
            }
        }
    }

    fn event(&mut self, event: RawEvent, out: &mut Vec<StreamEvent<S>>) -> Result<(), StreamError> {
        match &mut self.state {
            State::Header { prefixes, id } => match event {
                RawEvent::XmlDeclaration(..) => {}
                RawEvent::ElementHeadOpen(_, (prefix, name)) => {
                    let is_root = prefix.as_ref().map(|p| p.as_str()) == Some("stream")
                        && name.as_str() == "stream";
                    if !is_root {
                        return Err(StreamError::BadHeader(format!(
                            "the root element is <{}{name}>",
                            prefix.map(|p| format!("{p}:")).unwrap_or_default()
                        )));
                    }
                }
                RawEvent::Attribute(_, (prefix, name), value) => {
                    match (prefix.as_ref().map(|p| p.as_str()), name.as_str()) {
                        (None, "xmlns") => {
                            prefixes.insert(None, value);
                        }
                        (Some("xmlns"), p) => {
                            prefixes.insert(Some(p.to_owned()), value);
                        }
                        (None, "id") => *id = Some(value),
                        _ => {}
                    }
                }
                RawEvent::ElementHeadClose(_) => {
                    if prefixes.get(&Some("stream".to_owned())).map(String::as_str)
                        != Some(ns::STREAMS)
                    {
                        return Err(StreamError::BadHeader(
                            "the stream prefix is not bound to http://etherx.jabber.org/streams"
                                .into(),
                        ));
                    }
                    let id = id.take().unwrap_or_default();
                    self.root_prefixes = std::mem::take(prefixes);
                    if self.quick_path {
                        self.quick = Some(QuickParser::new(&self.root_prefixes));
                    }
                    self.state = State::Open;
                    self.clean = true;
                    out.push(StreamEvent::Header { id });
                }
                RawEvent::Text(..) | RawEvent::ElementFoot(_) => {
                    return Err(StreamError::BadHeader(
                        "unexpected content before the header".into(),
                    ));
                }
            },
            State::Open => match event {
                // Whitespace keepalives, or stray text at stream level: nothing to do.
                RawEvent::Text(..) | RawEvent::XmlDeclaration(..) => {}
                RawEvent::ElementFoot(_) => {
                    self.state = State::Done;
                    out.push(StreamEvent::Closed);
                }
                RawEvent::ElementHeadOpen(_, (ref prefix, _)) => {
                    // The stanza inherits the stream's namespaces; the `stream` prefix only
                    // when it is a stream-level element (`<stream:error/>`), so that stanzas
                    // do not carry a stray `xmlns:stream` when written out again.
                    let mut inherited = self.root_prefixes.clone();
                    if prefix.as_ref().map(|p| p.as_str()) != Some("stream") {
                        inherited.remove(&Some("stream".to_owned()));
                    }
                    let mut current = Box::new(Current {
                        tree: Some(TreeBuilder::new().with_prefixes_stack(vec![inherited.into()])),
                        depth: 1,
                        skip: None,
                    });
                    current.feed(event);
                    self.state = State::Stanza(current);
                }
                // The parser reports attributes only after a head opens.
                RawEvent::Attribute(..) | RawEvent::ElementHeadClose(_) => {}
            },
            State::Stanza(current) => {
                if let Some(done) = current.step(event, self.limits.max_depth) {
                    let head = self.framer.take_head();
                    out.push(match done {
                        Ok(element) => StreamEvent::Stanza(S::from_element(element)),
                        Err(Skip::TooDeep) => StreamEvent::TooDeep {
                            head,
                            limit: self.limits.max_depth,
                        },
                        Err(Skip::Malformed(reason)) => StreamEvent::Malformed { head, reason },
                    });
                    self.state = State::Open;
                }
            }
            State::Done => {}
        }
        Ok(())
    }
}

impl Current {
    /// Handles one event inside the stanza; returns the finished stanza (or why it was
    /// skipped) when it closes.
    fn step(&mut self, event: RawEvent, max_depth: usize) -> Option<Result<Element, Skip>> {
        match &event {
            RawEvent::ElementHeadOpen(..) => {
                self.depth += 1;
                if self.depth > max_depth && self.skip.is_none() {
                    self.skip = Some(Skip::TooDeep);
                }
            }
            RawEvent::ElementFoot(_) => self.depth -= 1,
            _ => {}
        }
        let closed = self.depth == 0;
        self.feed(event);
        if !closed {
            return None;
        }
        Some(match self.skip.take() {
            Some(skip) => Err(skip),
            None => self
                .tree
                .take()
                .and_then(|mut t| t.root.take())
                .ok_or_else(|| Skip::Malformed("the stanza did not form an element".into())),
        })
    }

    /// Passes the event to the tree builder unless the stanza is being skipped; starts
    /// skipping when it does not make a tree.
    fn feed(&mut self, event: RawEvent) {
        if self.skip.is_some() {
            self.tree = None;
            return;
        }
        if let Some(tree) = &mut self.tree
            && let Err(e) = tree.process_event(event)
        {
            self.skip = Some(Skip::Malformed(e.to_string()));
            self.tree = None;
        }
    }
}

/// The stream header a component sends (XEP-0114 §3).
pub fn header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' to='{}'>",
        ns::COMPONENT,
        ns::STREAMS,
        escape_attr(domain)
    )
}

/// The handshake value: lower-case hex SHA-1 of the stream id followed by the secret
/// (XEP-0114 §3).
pub fn handshake_digest(stream_id: &str, secret: &Secret) -> String {
    let mut sha = Sha1::new();
    sha.update(stream_id.as_bytes());
    sha.update(secret.expose().as_bytes());
    sha.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Escapes `value` for an attribute value in single or double quotes (`&`, `<`, `'`, `"`).
pub fn escape_attr(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// The reading half of a stream: socket bytes through a [`StreamParser`], stanzas in the
/// form `S` ([`Form`]). The component uses it (with compact stanzas, [`StreamReader::compact`]),
/// and so do the demo clients.
pub struct StreamReader<S = Element> {
    half: OwnedReadHalf,
    parser: StreamParser<S>,
    pending: std::collections::VecDeque<StreamEvent<S>>,
    buf: Box<[u8]>,
    limits: Limits,
}

impl StreamReader {
    /// A reader of `half` that refuses stanzas over `limit` bytes (and the default depth).
    pub fn new(half: OwnedReadHalf, limit: usize) -> Self {
        Self::with_limits(
            half,
            Limits {
                max_stanza_bytes: limit,
                ..Limits::default()
            },
        )
    }

    /// A reader of `half` with these limits.
    pub fn with_limits(half: OwnedReadHalf, limits: Limits) -> Self {
        Self::in_form(half, limits)
    }
}

impl StreamReader<Stanza> {
    /// A reader of `half` with these limits that gives each stanza as a compact [`Stanza`]
    /// ([`StreamParser::compact`]).
    pub fn compact(half: OwnedReadHalf, limits: Limits) -> Self {
        Self::in_form(half, limits)
    }
}

impl<S: Form> StreamReader<S> {
    /// A reader of `half` with these limits, for stanzas in the form `S`.
    pub fn in_form(half: OwnedReadHalf, limits: Limits) -> Self {
        Self {
            half,
            parser: StreamParser::in_form(limits),
            pending: Default::default(),
            buf: vec![0; 16 * 1024].into_boxed_slice(),
            limits,
        }
    }

    /// Reads a new stream on the same socket (a client does after SASL, RFC 6120 §6.4.6).
    pub fn restart(&mut self) {
        self.parser = StreamParser::in_form(self.limits);
        self.pending.clear();
    }

    /// The next event. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Result<StreamEvent<S>, StreamError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let n = self.half.read(&mut self.buf).await?;
            if n == 0 {
                return Err(StreamError::Closed);
            }
            let mut out = Vec::new();
            self.parser.feed(&self.buf[..n], &mut out)?;
            self.pending.extend(out);
        }
    }

    /// Whether events already read from the socket wait to be taken: the next
    /// [`StreamReader::next`] then returns without reading (a writer can hold its batch).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Reads and drops what the server still sends, until it closes its side (or the read
    /// fails). Call it after [`StreamWriter::close`] and bound it with a timeout: a socket
    /// closed with unread bytes in its buffer sends a reset, and the server may then lose the
    /// end of what was written to it.
    pub async fn discard_until_closed(&mut self) {
        self.pending.clear();
        while matches!(self.half.read(&mut self.buf).await, Ok(n) if n > 0) {}
    }
}

/// The writing half of an established component stream.
pub struct StreamWriter {
    half: OwnedWriteHalf,
}

impl StreamWriter {
    /// Writes bytes that are already serialized stanzas (the component batches them).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        self.half.write_all(bytes).await?;
        Ok(())
    }

    /// Writes a single space: a whitespace keepalive (RFC 6120 §4.6.1).
    pub async fn keepalive(&mut self) -> Result<(), StreamError> {
        self.half.write_all(b" ").await?;
        Ok(())
    }

    /// Closes the stream politely and shuts the socket's writing side.
    pub async fn close(&mut self) -> Result<(), StreamError> {
        self.half.write_all(b"</stream:stream>").await?;
        self.half.shutdown().await?;
        Ok(())
    }
}

/// Connects to the server's component port, opens the stream for `domain` and performs the
/// handshake. The server's refusal (`not-authorized` for a wrong secret, `conflict` when
/// another component holds the name) comes back as [`StreamError::Server`].
pub async fn connect(
    server: &str,
    domain: &str,
    secret: &Secret,
    limits: Limits,
) -> Result<(StreamReader, StreamWriter), StreamError> {
    connect_in_form(server, domain, secret, limits).await
}

/// [`connect`], with a reader that gives each stanza as a compact [`Stanza`] (the guard's).
pub async fn connect_compact(
    server: &str,
    domain: &str,
    secret: &Secret,
    limits: Limits,
) -> Result<(StreamReader<Stanza>, StreamWriter), StreamError> {
    connect_in_form(server, domain, secret, limits).await
}

/// [`connect`] for stanzas in the form `S`.
pub async fn connect_in_form<S: Form>(
    server: &str,
    domain: &str,
    secret: &Secret,
    limits: Limits,
) -> Result<(StreamReader<S>, StreamWriter), StreamError> {
    let attempt = async {
        let socket = TcpStream::connect(server).await?;
        socket.set_nodelay(true)?;
        let (read, write) = socket.into_split();
        let mut reader = StreamReader::<S>::in_form(read, limits);
        let mut writer = StreamWriter { half: write };
        writer.half.write_all(header(domain).as_bytes()).await?;
        let id = match reader.next().await? {
            StreamEvent::Header { id } => id,
            other => {
                return Err(StreamError::BadHeader(format!(
                    "expected the header, got {other:?}"
                )));
            }
        };
        let handshake = format!("<handshake>{}</handshake>", handshake_digest(&id, secret));
        writer.half.write_all(handshake.as_bytes()).await?;
        loop {
            match reader.next().await? {
                StreamEvent::Stanza(e) if e.name() == "handshake" => break,
                StreamEvent::Stanza(e) if e.is("error", ns::STREAMS) => {
                    return Err(StreamError::from_stream_error(&e.to_element()));
                }
                StreamEvent::Closed => return Err(StreamError::Closed),
                // Anything else before the handshake answer is ignored.
                _ => {}
            }
        }
        Ok((reader, writer))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt)
        .await
        .map_err(|_| StreamError::Timeout(HANDSHAKE_TIMEOUT))?
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
        xmlns:stream='http://etherx.jabber.org/streams' from='pubsub.localhost' id='abc-1'>";

    fn feed_all(parser: &mut StreamParser, parts: &[&[u8]]) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        for part in parts {
            parser.feed(part, &mut out).unwrap();
        }
        out
    }

    fn stanza(event: &StreamEvent) -> &Element {
        match event {
            StreamEvent::Stanza(e) => e,
            other => panic!("expected a stanza, got {other:?}"),
        }
    }

    #[test]
    fn reads_the_header_then_stanzas_split_at_every_byte() {
        let text = format!(
            "{HEADER}<iq type='get' id='1' from='a@localhost/r' to='pubsub.localhost'>\
             <query xmlns='http://jabber.org/protocol/disco#info'/></iq> \n\t \
             <message from='b@localhost' to='pubsub.localhost'><body>h&amp;i</body></message>\
             </stream:stream>"
        );
        let bytes = text.as_bytes();
        let parts: Vec<&[u8]> = bytes.chunks(1).collect();
        let events = feed_all(&mut StreamParser::new(4096), &parts);
        assert_eq!(events.len(), 4, "{events:?}");
        assert_eq!(events[0], StreamEvent::Header { id: "abc-1".into() });
        let iq = stanza(&events[1]);
        assert_eq!(iq.name(), "iq");
        assert_eq!(iq.ns(), ns::COMPONENT);
        assert_eq!(iq.attr("from"), Some("a@localhost/r"));
        assert!(iq.has_child("query", ns::DISCO_INFO));
        assert!(
            !String::from(iq).contains("xmlns:stream"),
            "{}",
            String::from(iq)
        );
        let message = stanza(&events[2]);
        assert_eq!(
            message.get_child("body", ns::COMPONENT).unwrap().text(),
            "h&i"
        );
        assert_eq!(events[3], StreamEvent::Closed);
    }

    #[test]
    fn oversized_stanzas_are_skipped_with_their_head_and_the_stream_goes_on() {
        let big = "x".repeat(5000);
        let text = format!(
            "{HEADER}<iq type='set' id='big' from='a@localhost/r' to='pubsub.localhost'>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item>\
             <p xmlns='urn:t'>{big}</p></item></publish></pubsub></iq>\
             <iq type='get' id='next' from='a@localhost/r' to='pubsub.localhost'/>"
        );
        let events = feed_all(
            &mut StreamParser::new(1024),
            &text.as_bytes().chunks(700).collect::<Vec<_>>(),
        );
        assert_eq!(events.len(), 3, "{events:?}");
        match &events[1] {
            StreamEvent::Oversized { head, bytes } => {
                assert_eq!(head.name, "iq");
                assert_eq!(head.id.as_deref(), Some("big"));
                assert_eq!(head.from.as_deref(), Some("a@localhost/r"));
                assert_eq!(head.kind.as_deref(), Some("set"));
                assert!(*bytes > 1024);
            }
            other => panic!("expected Oversized, got {other:?}"),
        }
        assert_eq!(stanza(&events[2]).attr("id"), Some("next"));
    }

    #[test]
    fn an_undeclared_prefix_is_a_malformed_stanza_not_the_end() {
        let text = format!(
            "{HEADER}<iq type='get' id='m' from='a@localhost/r'><x:query/></iq><presence from='a@localhost/r'/>"
        );
        let events = feed_all(&mut StreamParser::new(4096), &[text.as_bytes()]);
        assert!(
            matches!(&events[1], StreamEvent::Malformed { head, .. } if head.id.as_deref() == Some("m")),
            "{events:?}"
        );
        assert_eq!(stanza(&events[2]).name(), "presence");
    }

    /// Found by the `stream_parser` fuzz target, twice: bytes after the stream's end were an
    /// error only when they came in the same read as `</stream:stream>`; and a long element
    /// after it in the same read was taken for an oversized stanza of a stream that went on.
    #[test]
    fn whatever_follows_the_end_of_the_stream_is_ignored_however_it_is_cut() {
        let long = format!(
            "{HEADER}</stream:stream>s<stream:stream id='x'><x xmlns='urn:a'>{}</x></stream:stream>",
            "y".repeat(300)
        );
        let cases = [(format!("{HEADER}</stream:stream>s<"), 4096), (long, 64)];
        for (text, limit) in &cases {
            let bytes = text.as_bytes();
            for cut in 0..=bytes.len() {
                let mut parser = StreamParser::new(*limit);
                let mut out = Vec::new();
                parser.feed(&bytes[..cut], &mut out).unwrap();
                parser.feed(&bytes[cut..], &mut out).unwrap();
                assert_eq!(
                    out,
                    [
                        StreamEvent::Header { id: "abc-1".into() },
                        StreamEvent::Closed
                    ],
                    "limit {limit}, cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn garbage_is_a_stream_error() {
        let mut parser = StreamParser::new(4096);
        let mut out = Vec::new();
        parser.feed(HEADER.as_bytes(), &mut out).unwrap();
        let err = parser.feed(b"<iq><<>>", &mut out).unwrap_err();
        assert!(matches!(err, StreamError::NotWellFormed(_)), "{err:?}");
        let err = StreamParser::new(4096)
            .feed(b"<html><body>", &mut out)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the server did not open an XMPP stream: the root element is <html>"
        );
    }

    #[test]
    fn stream_errors_and_the_handshake_digest() {
        let text = format!(
            "{HEADER}<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>bad secret</text></stream:error>"
        );
        let events = feed_all(&mut StreamParser::new(4096), &[text.as_bytes()]);
        let err = StreamError::from_stream_error(stanza(&events[1]));
        assert!(err.is_refusal());
        assert_eq!(
            err.to_string(),
            "stream error from the server: not-authorized (bad secret)"
        );
        // XEP-0114 §3's example: stream id 3BF96D32; the XEP never names the secret, and
        // "test" reproduces its handshake value.
        assert_eq!(
            handshake_digest("3BF96D32", &Secret::new("test")),
            "aaee83c26aeeafcbabeabfcbcd50df997e0a2a1e"
        );
    }
}
