//! Fuzz target: the XEP-0235 `<oauth/>` element parser, `OAuthParams::from_element`, and
//! the stanza reader around it, `StanzaRequest::from_stanza`.
//!
//! Properties:
//! - no panic on any XML; whatever parses writes back (`to_element`) to an element that
//!   parses to the same parameters, both as a tree and after a trip through its text. A
//!   signed element is also a valid unsigned one (`from_unsigned_element`), with the same
//!   parameters;
//! - the guard's path and the tree path agree: the input, sent as a stanza on a component
//!   stream, is read by the stream reader's quick path into a compact `Stanza` (what the
//!   guard verifies) and by its general path into a minidom `Element` (rxml's parser and
//!   minidom's tree builder, as before the quick path); both give the same
//!   `StanzaRequest::from_stanza`, the same `OAuthParams::from_element` (the same error when
//!   refused), and the same verdict of the verifier (with the XEP-0235 example's
//!   credentials, at its timestamp).
//!
//! Input: UTF-8 XML, either an `<oauth xmlns='urn:xmpp:oauth:0'/>` element or a whole
//! stanza holding one. Anything that is not UTF-8 or not an element is skipped by the first
//! property; the second takes what the stream reader takes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oauth_xmpp::element::ElementView;
use oauth_xmpp::minidom::Element;
use oauth_xmpp::{
    FixedClock, MemoryCredentials, MemoryNonceStore, OAuthParams, Scope, StanzaRequest, Verifier,
};
use xmpp_component::stanza::Stanza;
use xmpp_component::stream::{Form, Limits, StreamEvent, StreamParser};

/// A server's stream header (XEP-0114 §3).
const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
    xmlns:stream='http://etherx.jabber.org/streams' from='pubsub.localhost' id='abc-1'>";

/// The first stanza the stream reader gives for `text`, in the form `S`.
fn first_stanza<S: Form>(parser: StreamParser<S>, text: &str) -> Option<S> {
    let mut parser = parser;
    let mut events = Vec::new();
    let _ = parser.feed(format!("{HEADER}{text}").as_bytes(), &mut events);
    events.into_iter().find_map(|e| match e {
        StreamEvent::Stanza(s) => Some(s),
        _ => None,
    })
}

/// The verifier's verdict on `stanza`, with the XEP-0235 example's credentials at its
/// timestamp and a fresh nonce store: what the proof says, or the error.
fn verdict<'a>(stanza: impl ElementView<'a>) -> Result<String, String> {
    let mut store = MemoryCredentials::default();
    store.add_consumer("0685bd9184jfhq22", "consumersecret");
    store.add_access_token(
        "ad180jjd733klru7",
        "tokensecret",
        "0685bd9184jfhq22",
        "world-traveler",
        Scope::parse("bard_geoloc"),
    );
    let nonces = MemoryNonceStore::default();
    Verifier::new(&store, &nonces, FixedClock(1_218_137_833))
        .verify_stanza(stanza)
        .map(|v| format!("{} {:?} {:?}", v.consumer_key(), v.signed_over(), v.owner()))
        .map_err(|e| e.to_string())
}

/// The guard's path (the quick path's compact stanza) and the tree path (the general path's
/// element) read `text` the same way.
fn paths_agree(text: &str) {
    let limits = Limits::default();
    let compact = first_stanza(StreamParser::<Stanza>::compact(limits), text);
    let tree = first_stanza(StreamParser::with_limits(limits).without_quick_path(), text);
    let (Some(compact), Some(tree)) = (compact, tree) else {
        return;
    };
    let (view, element) = (compact.root(), &tree);
    assert_eq!(
        StanzaRequest::from_stanza(view),
        StanzaRequest::from_stanza(element),
        "{text}"
    );
    assert_eq!(
        OAuthParams::from_element(view),
        OAuthParams::from_element(element),
        "{text}"
    );
    assert_eq!(verdict(view), verdict(element), "{text}");
}

/// Writes `params` as an element, and checks that both the element and its text parse back
/// to `params`.
fn assert_round_trips(params: &OAuthParams) {
    let written = params.to_element();
    assert_eq!(OAuthParams::from_element(&written).as_ref(), Ok(params));
    let text = String::from(&written);
    let reparsed: Element = text
        .parse()
        .unwrap_or_else(|e| panic!("the written element does not parse: {e}: {text}"));
    assert_eq!(
        OAuthParams::from_element(&reparsed).as_ref(),
        Ok(params),
        "{text}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    paths_agree(text);
    let Ok(element) = text.parse::<Element>() else {
        return;
    };

    let signed = OAuthParams::from_element(&element);
    let unsigned = OAuthParams::from_unsigned_element(&element);
    if let Ok(params) = &signed {
        assert_eq!(unsigned.as_ref(), Ok(params));
        assert_round_trips(params);
    }
    if let Ok(params) = &unsigned {
        assert_round_trips(params);
    }

    if let Ok(Some(request)) = StanzaRequest::from_stanza(&element) {
        assert_round_trips(&request.params);
        let _ = request.base_string();
        let _ = request.bare_jid_base_string();
    }
});
