//! Fuzz target: the XEP-0114 stream reader, `xmpp_component::stream::StreamParser`.
//!
//! Properties:
//! - the reader does not depend on how the bytes arrive. Fed in one piece or in pieces cut
//!   at fuzzer-chosen points, the same bytes give exactly the same events and the same
//!   outcome (the same error text, or none);
//! - the quick path (a whole stanza read straight into a compact `Stanza`) changes nothing:
//!   the reader without it (rxml's parser and minidom's tree builder for every stanza) gives
//!   the same events and the same error text, and so does the compact form (each stanza made
//!   into a minidom element again), down to the written text of every stanza;
//! - on every input, the header comes first and nothing comes after `Closed`.
//!
//! Input: byte 0 chooses the shape of the run, byte 1 the stanza limit, then one byte per
//! piece length, then the stream bytes.
//! - byte 0, bit 0: put the server's stream header in front of the stream bytes, so that
//!   most runs reach stanza parsing;
//! - byte 0, bits 1–3: how many cuts (0 to 6); 7 feeds the stream one byte at a time;
//! - byte 1: the limit is `16 × (byte + 1)` bytes (16 to 4096), to reach oversized stanzas
//!   with short inputs;
//! - one byte per cut: the length of the next piece (0 feeds an empty piece); the rest of the
//!   stream is the last piece.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xmpp_component::stanza::Stanza;
use xmpp_component::stream::{Form, Limits, StreamEvent, StreamParser};

/// A server's stream header (XEP-0114 §3), as the guard's own tests use it.
const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
    xmlns:stream='http://etherx.jabber.org/streams' from='pubsub.localhost' id='abc-1'>";

/// What a run gave: the events, and the error's text if the stream failed.
#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<StreamEvent>,
    error: Option<String>,
}

/// Feeds `pieces` in order to a fresh parser, stopping at the first error as the component
/// does.
fn run<'a>(limit: usize, pieces: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    feed(StreamParser::new(limit), pieces)
}

/// Feeds `pieces` to `parser`, each stanza made into a minidom element.
fn feed<'a, S: Form>(
    mut parser: StreamParser<S>,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Outcome {
    let mut events = Vec::new();
    let mut error = None;
    for piece in pieces {
        if let Err(e) = parser.feed(piece, &mut events) {
            error = Some(e.to_string());
            break;
        }
    }
    let events = events
        .into_iter()
        .map(|e| match e {
            StreamEvent::Stanza(s) => StreamEvent::Stanza(s.to_element()),
            StreamEvent::Header { id } => StreamEvent::Header { id },
            StreamEvent::Oversized { head, bytes } => StreamEvent::Oversized { head, bytes },
            StreamEvent::TooDeep { head, limit } => StreamEvent::TooDeep { head, limit },
            StreamEvent::Malformed { head, reason } => StreamEvent::Malformed { head, reason },
            StreamEvent::Closed => StreamEvent::Closed,
        })
        .collect();
    Outcome { events, error }
}

/// The written text of every stanza of `outcome` (minidom cannot write an element that
/// declares the `xml` prefix, which XML allows: that is told as such). Element equality
/// leaves prefix declarations out; the text has them.
fn texts(outcome: &Outcome) -> Vec<String> {
    outcome
        .events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Stanza(element) => Some(
                std::panic::catch_unwind(|| String::from(element))
                    .unwrap_or_else(|_| "unwritable".to_owned()),
            ),
            _ => None,
        })
        .collect()
}

/// Cuts `stream` after each of `lengths` (clamped to what is left); the rest is the last
/// piece.
fn cut<'a>(stream: &'a [u8], lengths: &[u8]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::with_capacity(lengths.len() + 1);
    let mut rest = stream;
    for &length in lengths {
        let (piece, after) = rest.split_at(usize::from(length).min(rest.len()));
        pieces.push(piece);
        rest = after;
    }
    pieces.push(rest);
    pieces
}

fuzz_target!(|data: &[u8]| {
    let [shape, limit, data @ ..] = data else {
        return;
    };
    let limit = 16 * (usize::from(*limit) + 1);
    let cuts = usize::from((shape >> 1) & 0b111);
    let (lengths, body) = if cuts == 7 {
        (&[][..], data)
    } else {
        data.split_at(cuts.min(data.len()))
    };
    let stream = if shape & 1 == 1 {
        [HEADER, body].concat()
    } else {
        body.to_vec()
    };

    let whole = run(limit, [stream.as_slice()]);
    let limits = Limits {
        max_stanza_bytes: limit,
        ..Limits::default()
    };
    let general = feed(
        StreamParser::with_limits(limits).without_quick_path(),
        [stream.as_slice()],
    );
    assert_eq!(whole, general, "the quick path changed the events");
    assert_eq!(
        texts(&whole),
        texts(&general),
        "the quick path changed a stanza's text"
    );
    let compact = feed(StreamParser::<Stanza>::compact(limits), [stream.as_slice()]);
    assert_eq!(compact, general, "the compact form changed the events");
    assert_eq!(
        texts(&compact),
        texts(&general),
        "the compact form changed a stanza's text"
    );
    let pieces = if cuts == 7 {
        stream.chunks(1).collect()
    } else {
        cut(&stream, lengths)
    };
    let split = run(limit, pieces.iter().copied());
    let sizes: Vec<usize> = pieces.iter().map(|p| p.len()).collect();
    assert_eq!(whole, split, "pieces of {sizes:?} bytes");

    for (i, event) in whole.events.iter().enumerate() {
        match event {
            StreamEvent::Header { .. } => assert_eq!(i, 0, "a second header: {:?}", whole.events),
            StreamEvent::Closed => assert_eq!(
                i + 1,
                whole.events.len(),
                "events after Closed: {:?}",
                whole.events
            ),
            _ => assert!(i > 0, "a stanza before the header: {:?}", whole.events),
        }
    }
});
