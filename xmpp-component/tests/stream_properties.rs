//! Properties of the stream reader: however the bytes are split, the same events come out;
//! and no input makes it panic.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use proptest::prelude::*;
use xmpp_component::stream::{Limits, StreamEvent, StreamParser};

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
    xmlns:stream='http://etherx.jabber.org/streams' id='p-1'>";

/// A few stanzas of the shapes the guard sees, with whitespace keepalives between them.
fn stanzas() -> impl Strategy<Value = String> {
    let stanza = prop_oneof![
        "[a-z0-9]{1,8}".prop_map(|id| format!(
            "<iq type='get' id='{id}' from='a@localhost/r' to='pubsub.localhost'>\
             <query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        )),
        "[a-zA-Z0-9 &<>\"']{0,40}".prop_map(|text| format!(
            "<message from='b@localhost' to='pubsub.localhost'><body>{}</body></message>",
            text.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        )),
        Just("<presence from='c@localhost/x' to='pubsub.localhost' xml:lang='en'/>".to_owned()),
        Just(format!("<big>{}</big>", "y".repeat(3000))),
    ];
    proptest::collection::vec((stanza, "[ \t\n]{0,3}"), 0..6)
        .prop_map(|v| v.into_iter().map(|(s, ws)| format!("{ws}{s}")).collect())
}

fn events(parts: &[&[u8]]) -> Vec<StreamEvent> {
    let mut parser = StreamParser::new(2048);
    let mut out = Vec::new();
    for part in parts {
        parser.feed(part, &mut out).unwrap();
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn splitting_the_bytes_never_changes_the_events(body in stanzas(), cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        let text = format!("{HEADER}{body}");
        let bytes = text.as_bytes();
        let whole = events(&[bytes]);
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut parts = Vec::new();
        let mut last = 0;
        for p in points {
            parts.push(&bytes[last..p]);
            last = p;
        }
        parts.push(&bytes[last..]);
        prop_assert_eq!(events(&parts), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(prefix in any::<bool>(), garbage in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut parser = StreamParser::new(256);
        let mut out = Vec::new();
        if prefix {
            parser.feed(HEADER.as_bytes(), &mut out).unwrap();
        }
        // An error is fine (not well-formed ends the stream); a panic is not.
        let _ = parser.feed(&garbage, &mut out);
    }

    #[test]
    fn xml_shaped_noise_never_panics(noise in "(<[a-z:]{0,4}( [a-z:]{1,4}='[a-z<&]{0,3}')?/?>|</[a-z:]{0,4}>|[a-z&;]{0,3}){0,30}") {
        let mut parser = StreamParser::new(256);
        let mut out = Vec::new();
        parser.feed(HEADER.as_bytes(), &mut out).unwrap();
        let _ = parser.feed(noise.as_bytes(), &mut out);
    }

    /// Long names and values and deep nesting, at any split: each stanza gives exactly one
    /// event, the one its size and depth call for, and the stream goes on to the next.
    #[test]
    fn long_tokens_and_deep_nesting_are_refused_one_stanza_at_a_time(
        shapes in proptest::collection::vec((0usize..3000, 0usize..40, any::<bool>()), 1..5),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let limits = Limits { max_stanza_bytes: 1024, max_depth: 16 };
        let mut body = String::new();
        let mut expected = Vec::new();
        for (i, (len, depth, in_name)) in shapes.iter().enumerate() {
            let long = "v".repeat(*len);
            let (attr, name) = if *in_name { (String::new(), format!("x{long}")) } else { (format!(" note='{long}'"), "x".to_owned()) };
            let stanza = format!(
                "<message id='m{i}' from='a@localhost/r' to='pubsub.localhost'{attr}><{name}>{}{}</{name}></message>",
                "<d>".repeat(*depth),
                "</d>".repeat(*depth),
            );
            expected.push(if stanza.len() > limits.max_stanza_bytes {
                format!("oversized m{i} {}", stanza.len())
            } else if depth + 2 > limits.max_depth {
                format!("deep m{i}")
            } else {
                format!("stanza m{i}")
            });
            body.push_str(&stanza);
        }
        body.push_str("<presence id='last' from='a@localhost/r' to='pubsub.localhost'/>");
        expected.push("stanza last".to_owned());
        let text = format!("{HEADER}{body}");
        let bytes = text.as_bytes();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut parser = StreamParser::with_limits(limits);
        let mut out = Vec::new();
        let mut last = 0;
        for p in points.into_iter().chain([bytes.len()]) {
            parser.feed(&bytes[last..p], &mut out).unwrap();
            last = p;
        }
        let seen: Vec<String> = out.iter().skip(1).map(|e| match e {
            StreamEvent::Stanza(s) => format!("stanza {}", s.attr("id").unwrap_or("?")),
            StreamEvent::Oversized { head, bytes } => format!("oversized {} {bytes}", head.id.as_deref().unwrap_or("?")),
            StreamEvent::TooDeep { head, .. } => format!("deep {}", head.id.as_deref().unwrap_or("?")),
            other => format!("{other:?}"),
        }).collect();
        prop_assert_eq!(seen, expected);
    }
}
