//! Property tests: the element round-trips, and the parsers never panic.

use oauth_xmpp::minidom::Element;
use oauth_xmpp::{HttpRequest, OAuthParams, SignatureMethod, StanzaRequest};
use proptest::prelude::*;

/// Text that XML can carry and that survives trimming: no control characters, no
/// leading or trailing white space.
fn xml_text() -> impl Strategy<Value = String> {
    "[^\u{0}-\u{1f}\u{7f}\u{fffe}\u{ffff}]{0,40}".prop_map(|s| s.trim_matches([' ']).to_owned())
}

fn non_empty_text() -> impl Strategy<Value = String> {
    xml_text().prop_filter("non-empty", |s| !s.is_empty())
}

prop_compose! {
    fn params()(
        consumer_key in non_empty_text(),
        token in non_empty_text(),
        hmac in any::<bool>(),
        signature in xml_text(),
        timestamp in 1u64..u64::MAX,
        nonce in non_empty_text(),
        version in any::<bool>(),
    ) -> OAuthParams {
        OAuthParams {
            consumer_key,
            token: Some(token),
            signature_method: if hmac { SignatureMethod::HmacSha1 } else { SignatureMethod::Plaintext },
            signature,
            timestamp: timestamp.to_string(),
            nonce,
            version,
            callback: None,
            verifier: None,
        }
    }
}

proptest! {
    #[test]
    fn element_round_trips(params in params()) {
        let element = params.to_element();
        prop_assert_eq!(&OAuthParams::from_element(&element).unwrap(), &params);
        let text = String::from(&element);
        let reparsed: Element = text.parse().unwrap();
        prop_assert_eq!(String::from(&OAuthParams::from_element(&reparsed).unwrap().to_element()), text);
    }

    #[test]
    fn stanza_parser_never_panics(text in "\\PC{0,300}") {
        if let Ok(element) = text.parse::<Element>() {
            let _ = StanzaRequest::from_stanza(&element);
            let _ = OAuthParams::from_element(&element);
        }
    }

    #[test]
    fn oauth_children_never_panic(children in proptest::collection::vec(("oauth_[a-z_]{0,20}", "\\PC{0,20}"), 0..10)) {
        let mut xml = String::from("<iq xmlns='jabber:client' from='a@b/c' to='d'><oauth xmlns='urn:xmpp:oauth:0'>");
        for (name, value) in &children {
            let value = value.replace('&', "&amp;").replace('<', "&lt;");
            xml.push_str(&format!("<{name}>{value}</{name}>"));
        }
        xml.push_str("</oauth></iq>");
        if let Ok(element) = xml.parse::<Element>() {
            let _ = StanzaRequest::from_stanza(&element);
        }
    }

    #[test]
    fn http_collection_never_panics(
        uri in "\\PC{0,80}",
        header in "\\PC{0,120}",
        body in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let request = HttpRequest {
            method: "POST",
            uri: &uri,
            authorization: Some(&header),
            content_type: Some("application/x-www-form-urlencoded"),
            body: &body,
        };
        if let Ok(collected) = request.collect() {
            let _ = request.base_string(&collected);
        }
        let _ = oauth_xmpp::uri::base_string_uri(&uri);
        let _ = oauth_xmpp::http::parse_authorization(&header);
    }
}
