//! Fuzz target: the XEP-0235 `<oauth/>` element parser, `OAuthParams::from_element`, and
//! the stanza reader around it, `StanzaRequest::from_stanza`.
//!
//! Property: no panic on any XML; whatever parses writes back (`to_element`) to an element
//! that parses to the same parameters, both as a tree and after a trip through its text.
//! A signed element is also a valid unsigned one (`from_unsigned_element`), with the same
//! parameters.
//!
//! Input: UTF-8 XML, either an `<oauth xmlns='urn:xmpp:oauth:0'/>` element or a whole
//! stanza holding one. Anything that is not UTF-8 or not an element is skipped.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oauth_xmpp::minidom::Element;
use oauth_xmpp::{OAuthParams, StanzaRequest};

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
