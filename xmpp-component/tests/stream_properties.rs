//! Properties of the stream reader: however the bytes are split, the same events come out;
//! the quick path gives exactly what the general path gives (events, and errors with their
//! text), in both stanza forms; and no input makes it panic.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use proptest::prelude::*;
use xmpp_component::stanza::Stanza;
use xmpp_component::stream::{Form, Limits, StreamEvent, StreamParser};

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

/// Names, attributes, values and texts of every kind the quick path takes or declines.
fn tricky_stanzas() -> impl Strategy<Value = String> {
    // Mostly what streams carry, now and then what the quick path must leave to the general
    // path or what is not XML at all.
    let name = prop_oneof![
        12 => prop_oneof![Just("a"), Just("body"), Just("x1.y-z_"), Just("p:x"), Just("stream:error")],
        1 => prop_oneof![Just("q:x"), Just("xml:a"), Just("a:b:c"), Just("é"), Just("1a"), Just("a:")],
    ];
    let value = prop_oneof![
        12 => prop_oneof![
            Just("plain"), Just("a&amp;b"), Just("&lt;&gt;&quot;&apos;"), Just("&#65;&#x1F600;"),
            Just("é"), Just(">"), Just(""), Just("urn:p"),
        ],
        1 => prop_oneof![
            Just("&#0;"), Just("&#xD800;"), Just("&#1114111;"), Just("&#X41;"), Just("&bogus;"),
            Just("a&b"), Just("t\tab"), Just("l\nf"), Just("c\rr"), Just("\u{ffff}"), Just("<"),
        ],
    ];
    let attr = prop_oneof![
        6 => (name.clone(), value.clone()).prop_map(|(n, v)| format!(" {n}='{v}'")),
        2 => value.clone().prop_map(|v| format!(" id=\"{v}\"")),
        2 => value.clone().prop_map(|v| format!(" xmlns='{v}'")),
        4 => value.clone().prop_map(|v| format!(" xmlns:p='{v}'")),
        2 => Just(" xml:lang='en'".to_owned()),
        2 => Just("  b = 'z' ".to_owned()),
        1 => prop_oneof![
            Just(" xmlns:xml='http://www.w3.org/XML/1998/namespace'".to_owned()),
            Just(" xmlns:q='http://www.w3.org/XML/1998/namespace'".to_owned()),
            Just(" p:a='1'".to_owned()),
            Just(" c='1' c='2'".to_owned()),
            Just(" c='1'd='2'".to_owned()),
            Just("\r\nc='1'".to_owned()),
        ],
    ];
    let text = prop_oneof![
        12 => prop_oneof![
            Just("x"), Just(" \n\t"), Just("a]b]]"), Just("&amp;&#233;"), Just("日本"), Just(">"),
        ],
        1 => prop_oneof![
            Just("]]>"), Just("&nbsp;"), Just("<![CDATA[c]]>"), Just("<!-- c -->"), Just("<?pi x?>"),
            Just("\r\n"), Just("\u{1}"), Just("\u{fffe}"), Just("a&b"),
        ],
    ];
    let leaf = (name.clone(), proptest::collection::vec(attr.clone(), 0..3))
        .prop_map(|(n, attrs)| format!("<{n}{}/>", attrs.concat()));
    let tree = leaf.prop_recursive(4, 24, 4, move |inner| {
        (
            name.clone(),
            proptest::collection::vec(attr.clone(), 0..3),
            proptest::collection::vec(
                prop_oneof![inner, text.clone().prop_map(str::to_owned)],
                0..4,
            ),
            prop_oneof![8 => Just(None), 1 => Just(Some("zz")), 1 => Just(Some("a "))],
        )
            .prop_map(|(n, attrs, children, end)| {
                let end = end.map_or_else(|| n.to_owned(), str::to_owned);
                format!("<{n}{}>{}</{end}>", attrs.concat(), children.concat())
            })
    });
    proptest::collection::vec((tree, "[ \n]{0,2}"), 1..4)
        .prop_map(|v| v.into_iter().map(|(s, ws)| format!("{ws}{s}")).collect())
}

/// What a parser gives for `parts` fed in order: each event (a stanza with its written
/// text, so that prefix declarations are compared too), and the error's text if any.
type Outcome = (Vec<(StreamEvent, Option<String>)>, Option<String>);

fn outcome<S: Form>(mut parser: StreamParser<S>, parts: &[&[u8]]) -> Outcome {
    let mut out = Vec::new();
    let mut error = None;
    for part in parts {
        if let Err(e) = parser.feed(part, &mut out) {
            error = Some(e.to_string());
            break;
        }
    }
    let events = out
        .into_iter()
        .map(|e| {
            let e = match e {
                StreamEvent::Stanza(s) => StreamEvent::Stanza(s.to_element()),
                StreamEvent::Header { id } => StreamEvent::Header { id },
                StreamEvent::Oversized { head, bytes } => StreamEvent::Oversized { head, bytes },
                StreamEvent::TooDeep { head, limit } => StreamEvent::TooDeep { head, limit },
                StreamEvent::Malformed { head, reason } => StreamEvent::Malformed { head, reason },
                StreamEvent::Closed => StreamEvent::Closed,
            };
            let text = match &e {
                // minidom panics writing an element that declares the `xml` prefix.
                StreamEvent::Stanza(element) => Some(
                    std::panic::catch_unwind(|| String::from(element))
                        .unwrap_or_else(|_| "unwritable".to_owned()),
                ),
                _ => None,
            };
            (e, text)
        })
        .collect();
    (events, error)
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

    /// The quick path is the general path, only quicker: for any stanzas, cut anywhere, both
    /// give the same events and the same error, and the compact form is the same tree.
    #[test]
    fn the_quick_path_gives_what_the_general_path_gives(
        body in tricky_stanzas(),
        cuts in proptest::collection::vec(any::<usize>(), 0..4),
        small in any::<bool>(),
    ) {
        let limits = Limits { max_stanza_bytes: if small { 96 } else { 4096 }, max_depth: 4 };
        let text = format!("{HEADER}{body}</stream:stream>");
        let bytes = text.as_bytes();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut parts = Vec::new();
        let mut last = 0;
        for p in points {
            parts.push(&bytes[last..p]);
            last = p;
        }
        parts.push(&bytes[last..]);
        let general = outcome(StreamParser::with_limits(limits).without_quick_path(), &[bytes]);
        prop_assert_eq!(&outcome(StreamParser::with_limits(limits), &[bytes]), &general);
        prop_assert_eq!(&outcome(StreamParser::with_limits(limits), &parts), &general);
        prop_assert_eq!(&outcome(StreamParser::<Stanza>::compact(limits), &[bytes]), &general);
        prop_assert_eq!(&outcome(StreamParser::<Stanza>::compact(limits), &parts), &general);
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
