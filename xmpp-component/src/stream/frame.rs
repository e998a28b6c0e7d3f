//! The stanza framer: a small lexer that runs over every byte of the stream after its header,
//! beside the XML parser, and knows at each byte where the current stanza began, how many
//! bytes and how deep it is, and the attributes of its start tag that a reply needs.
//!
//! It exists so that a stanza can be refused on its own: when a stanza grows over the size
//! limit, the XML parser is given none of its further bytes (no token can grow past the limit,
//! whatever the parser's own token limit), and the framer alone finds where the stanza ends,
//! so that the stream goes on with the next one. It does not check well-formedness: the XML
//! parser does that for every byte it is given.

use super::StanzaHead;

/// The longest attribute value of the stanza's start tag the framer keeps for the head (a
/// JID is at most 3071 bytes, RFC 7622 §3.1); longer values are left out of the head.
const MAX_HEAD_VALUE: usize = 3072;
/// The longest element or attribute name the framer keeps.
const MAX_HEAD_NAME: usize = 64;

/// Where the lexer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Character data (or white space between stanzas).
    Text,
    /// Just after `<`.
    Lt,
    /// In an element name of a start tag.
    StartName,
    /// In a start tag, between attributes.
    InTag,
    /// In an attribute name.
    AttrName,
    /// After an attribute name, before `=`.
    AfterAttrName,
    /// After `=`, before the opening quote.
    AttrEq,
    /// In an attribute value opened by this quote.
    AttrValue(u8),
    /// After `/` in a start tag.
    Slash,
    /// In an end tag.
    EndTag,
    /// After `<!`.
    Bang,
    /// In a CDATA section; the number of `]` just seen.
    Cdata(u8),
    /// In a comment; the number of `-` just seen.
    Comment(u8),
    /// In a processing instruction; whether `?` was just seen.
    Pi(bool),
    /// In a declaration other than CDATA or a comment (`<!DOCTYPE …>`).
    Declaration,
}

/// What [`Framer::scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scan {
    /// Every byte was taken and the stanza (if any) is within the limit.
    All,
    /// The byte at this offset would take the current stanza over the limit; the bytes before
    /// it were taken.
    Overflow(usize),
    /// A stanza ends just before offset `at`; `skipped` when it went over the limit and its
    /// bytes from the overflow on were taken by the framer alone.
    End {
        /// Where the next byte after the stanza is.
        at: usize,
        /// Whether the stanza was skipped.
        skipped: bool,
    },
}

/// The framer's state.
#[derive(Debug)]
pub(super) struct Framer {
    lex: Lex,
    /// Elements open inside the stream root (the stanza itself is 1).
    depth: usize,
    /// Whether the bytes are inside a stanza (from its `<` to its last `>`).
    in_stanza: bool,
    /// Bytes of the current stanza so far (0 between stanzas).
    bytes: usize,
    /// Bytes of the last stanza that ended.
    last_bytes: usize,
    limit: usize,
    /// Whether the current stanza is being skipped (it went over the limit).
    skipping: bool,
    head: StanzaHead,
    /// Whether the start tag being read is the stanza's own.
    in_head: bool,
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Framer {
    /// A framer for stanzas of at most `limit` bytes.
    pub(super) fn new(limit: usize) -> Self {
        Self {
            lex: Lex::Text,
            depth: 0,
            in_stanza: false,
            bytes: 0,
            last_bytes: 0,
            limit,
            skipping: false,
            head: StanzaHead::default(),
            in_head: false,
            name: Vec::new(),
            value: Vec::new(),
        }
    }

    /// The head of the current (or last) stanza.
    pub(super) fn take_head(&mut self) -> StanzaHead {
        std::mem::take(&mut self.head)
    }

    /// Whether the current stanza is being skipped.
    pub(super) fn skipping(&self) -> bool {
        self.skipping
    }

    /// The size in bytes of the last stanza that ended.
    pub(super) fn last_bytes(&self) -> usize {
        self.last_bytes
    }

    /// Takes bytes of `data`: all of them, or up to the end of the current stanza, or up to
    /// the byte that takes the current stanza over the limit (from then on the framer skips it
    /// alone, up to its end).
    pub(super) fn scan(&mut self, data: &[u8]) -> Scan {
        for (i, &b) in data.iter().enumerate() {
            if !self.in_stanza
                && self.depth == 0
                && self.lex == Lex::Lt
                && !matches!(b, b'/' | b'!' | b'?')
            {
                // The `<` before this byte opened a stanza.
                self.in_stanza = true;
                self.bytes = 1;
                self.head = StanzaHead::default();
                self.in_head = true;
            }
            if self.in_stanza {
                let bytes = self.bytes.saturating_add(1);
                if !self.skipping && bytes > self.limit {
                    // This byte and the rest of the stanza are the skipper's.
                    self.skipping = true;
                    return Scan::Overflow(i);
                }
                self.bytes = bytes;
            }
            self.step(b);
            if self.in_stanza && self.depth == 0 && self.lex == Lex::Text {
                // The stanza closed with this byte.
                self.in_stanza = false;
                self.last_bytes = self.bytes;
                self.bytes = 0;
                let skipped = std::mem::take(&mut self.skipping);
                return Scan::End { at: i + 1, skipped };
            }
        }
        Scan::All
    }

    /// Advances the lexer by one byte.
    fn step(&mut self, b: u8) {
        let space = matches!(b, b' ' | b'\t' | b'\r' | b'\n');
        self.lex = match self.lex {
            Lex::Text => {
                if b == b'<' {
                    Lex::Lt
                } else {
                    Lex::Text
                }
            }
            Lex::Lt => match b {
                b'/' => Lex::EndTag,
                b'!' => Lex::Bang,
                b'?' => Lex::Pi(false),
                _ => {
                    self.name.clear();
                    self.push_name(b);
                    Lex::StartName
                }
            },
            Lex::StartName => {
                if space {
                    self.name_done();
                    Lex::InTag
                } else if b == b'>' {
                    self.name_done();
                    self.open()
                } else if b == b'/' {
                    self.name_done();
                    Lex::Slash
                } else {
                    self.push_name(b);
                    Lex::StartName
                }
            }
            Lex::InTag => match b {
                b'>' => self.open(),
                b'/' => Lex::Slash,
                _ if space => Lex::InTag,
                _ => {
                    self.name.clear();
                    self.push_name(b);
                    Lex::AttrName
                }
            },
            Lex::AttrName => match b {
                b'=' => Lex::AttrEq,
                b'>' => self.open(),
                _ if space => Lex::AfterAttrName,
                _ => {
                    self.push_name(b);
                    Lex::AttrName
                }
            },
            Lex::AfterAttrName => match b {
                b'=' => Lex::AttrEq,
                b'>' => self.open(),
                _ => Lex::AfterAttrName,
            },
            Lex::AttrEq => match b {
                b'\'' | b'"' => {
                    self.value.clear();
                    Lex::AttrValue(b)
                }
                b'>' => self.open(),
                _ => Lex::AttrEq,
            },
            Lex::AttrValue(quote) => {
                if b == quote {
                    self.value_done();
                    Lex::InTag
                } else {
                    if self.in_head && self.value.len() <= MAX_HEAD_VALUE {
                        self.value.push(b);
                    }
                    Lex::AttrValue(quote)
                }
            }
            Lex::Slash => {
                if b == b'>' {
                    // An empty element: it opens and closes at once.
                    self.in_head = false;
                    Lex::Text
                } else {
                    Lex::InTag
                }
            }
            Lex::EndTag => {
                if b == b'>' {
                    self.depth = self.depth.saturating_sub(1);
                    Lex::Text
                } else {
                    Lex::EndTag
                }
            }
            Lex::Bang => match b {
                b'[' => Lex::Cdata(0),
                b'-' => Lex::Comment(0),
                b'>' => Lex::Text,
                _ => Lex::Declaration,
            },
            Lex::Cdata(n) => match b {
                b']' => Lex::Cdata(n.saturating_add(1)),
                b'>' if n >= 2 => Lex::Text,
                _ => Lex::Cdata(0),
            },
            Lex::Comment(n) => match b {
                b'-' => Lex::Comment(n.saturating_add(1)),
                b'>' if n >= 2 => Lex::Text,
                _ => Lex::Comment(0),
            },
            Lex::Pi(question) => match b {
                b'>' if question => Lex::Text,
                b'?' => Lex::Pi(true),
                _ => Lex::Pi(false),
            },
            Lex::Declaration => {
                if b == b'>' {
                    Lex::Text
                } else {
                    Lex::Declaration
                }
            }
        };
    }

    /// A start tag closed with `>`: one element deeper.
    fn open(&mut self) -> Lex {
        self.depth += 1;
        self.in_head = false;
        Lex::Text
    }

    fn push_name(&mut self, b: u8) {
        if self.in_head && self.name.len() <= MAX_HEAD_NAME {
            self.name.push(b);
        }
    }

    fn name_done(&mut self) {
        if self.in_head && self.head.name.is_empty() {
            self.head.name = String::from_utf8_lossy(&self.name).into_owned();
        }
    }

    fn value_done(&mut self) {
        if !self.in_head || self.value.len() > MAX_HEAD_VALUE {
            return;
        }
        let slot = match self.name.as_slice() {
            b"id" => &mut self.head.id,
            b"from" => &mut self.head.from,
            b"to" => &mut self.head.to,
            b"type" => &mut self.head.kind,
            _ => return,
        };
        *slot = unescape(&self.value);
    }
}

/// An attribute value with its references resolved (the five predefined entities and
/// character references), or `None` when it is not valid UTF-8 or holds an unknown reference.
fn unescape(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.find(';')?;
        let reference = &after[..semi];
        let c = match reference {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "apos" => '\'',
            "quot" => '"',
            _ => {
                let code = if let Some(hex) = reference.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    reference.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(code)?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(framer: &mut Framer, text: &str) -> Vec<Scan> {
        let mut data = text.as_bytes();
        let mut found = Vec::new();
        loop {
            let scan = framer.scan(data);
            found.push(scan);
            match scan {
                Scan::All => return found,
                Scan::Overflow(i) | Scan::End { at: i, .. } => data = &data[i..],
            }
        }
    }

    #[test]
    fn heads_come_from_the_stanza_start_tag_only() {
        let mut f = Framer::new(4096);
        let text = "<iq type=\"set\" id='a&amp;b' from='x@y/&#x72;' to='p.y'>\
                    <pubsub id='inner' from='nope'/></iq>";
        assert_eq!(
            scan_all(&mut f, text),
            [
                Scan::End {
                    at: text.len(),
                    skipped: false
                },
                Scan::All
            ]
        );
        let head = f.take_head();
        assert_eq!(head.name, "iq");
        assert_eq!(head.kind.as_deref(), Some("set"));
        assert_eq!(head.id.as_deref(), Some("a&b"));
        assert_eq!(head.from.as_deref(), Some("x@y/r"));
        assert_eq!(head.to.as_deref(), Some("p.y"));
        assert_eq!(f.last_bytes(), text.len());
    }

    #[test]
    fn an_oversized_stanza_is_skipped_to_its_end_whatever_its_tokens() {
        let mut f = Framer::new(100);
        let long = "v".repeat(500);
        let text = format!(
            "<message id='m1' from='a@b' node='{long}'><x a='>'><![CDATA[</message>]]></x></message><next/>"
        );
        let scans = scan_all(&mut f, &text);
        let end = text.find("<next/>").unwrap();
        assert_eq!(
            scans,
            [
                Scan::Overflow(100),
                Scan::End {
                    at: end - 100,
                    skipped: true
                },
                Scan::End {
                    at: 7,
                    skipped: false
                },
                Scan::All
            ]
        );
        assert_eq!(f.last_bytes(), "<next/>".len());
        let head = f.take_head();
        assert_eq!(head.name, "next");
        assert_eq!(head.id, None);
    }

    #[test]
    fn the_head_survives_a_long_attribute_after_it() {
        let mut f = Framer::new(64);
        let text = format!(
            "<iq id='i' from='a@b/c' to='p' type='get' x='{}'/>",
            "z".repeat(200)
        );
        let scans = scan_all(&mut f, &text);
        assert!(matches!(scans[0], Scan::Overflow(64)), "{scans:?}");
        assert!(
            matches!(scans[1], Scan::End { skipped: true, .. }),
            "{scans:?}"
        );
        let head = f.take_head();
        assert_eq!(head.from.as_deref(), Some("a@b/c"));
        assert_eq!(head.kind.as_deref(), Some("get"));
    }

    #[test]
    fn references_resolve_or_the_value_is_left_out() {
        assert_eq!(
            unescape(b"a&lt;&gt;&quot;&apos;&#65;").as_deref(),
            Some("a<>\"'A")
        );
        assert_eq!(unescape(b"&bogus;"), None);
        assert_eq!(unescape(b"&amp"), None);
        assert_eq!(unescape(b"\xff"), None);
    }
}
