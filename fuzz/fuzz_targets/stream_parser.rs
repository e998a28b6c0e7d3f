//! Fuzz target: the XEP-0114 stream reader, `xmpp_component::stream::StreamParser`.
//!
//! Property: the reader does not depend on how the bytes arrive. Fed in one piece or in
//! pieces cut at fuzzer-chosen points, the same bytes give exactly the same events and the
//! same outcome (the same error text, or none). On every input, the header comes first and
//! nothing comes after `Closed`.
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
use xmpp_component::stream::{StreamEvent, StreamParser};

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
    let mut parser = StreamParser::new(limit);
    let mut events = Vec::new();
    for piece in pieces {
        if let Err(e) = parser.feed(piece, &mut events) {
            return Outcome {
                events,
                error: Some(e.to_string()),
            };
        }
    }
    Outcome {
        events,
        error: None,
    }
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
