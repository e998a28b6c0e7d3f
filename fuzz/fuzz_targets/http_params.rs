//! Fuzz target: the HTTP parameter sources of RFC 5849: form and query texts (`parse_form`,
//! §3.4.1.3.1), percent-encoding (§3.6), the `Authorization: OAuth` header
//! (`parse_authorization`, §3.5.1) and the collection of a whole request's parameters
//! (`HttpRequest::collect`, what the verifier runs first).
//!
//! Properties, no panic aside:
//! - percent-encoding is decoded back to the same text, by both decoders, and encodes to
//!   unreserved characters and upper-case `%XX` only; encoding twice in one pass is
//!   encoding twice;
//! - a form that parses, written back with `form_encode`, parses to the same pairs;
//! - header parameters that parse, written back with `authorization_header` (with and
//!   without a realm), parse to the same pairs;
//! - a request whose parameters collect gives the same parameters and the same base string
//!   when all of them travel in the form body instead.
//!
//! Input: the whole input is the text for the first three (when it is UTF-8), and it is also
//! read as a request, one field per line: `method`, `uri`, `authorization`, `content type`
//! (an empty line for none), then the body as raw bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oauth_xmpp::HttpRequest;
use oauth_xmpp::encode::{
    form_decode, parse_form, percent_decode_str, percent_encode, percent_encode_twice_into,
};
use oauth_xmpp::http::{authorization_header, form_encode, parse_authorization};

const FORM: &str = "application/x-www-form-urlencoded";

fn pairs_of(pairs: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
}

fn check_percent_encoding(text: &str) {
    let encoded = percent_encode(text);
    let mut bytes = encoded.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let pair = [bytes.next(), bytes.next()];
            assert!(
                pair.iter()
                    .all(|h| h.is_some_and(|h| matches!(h, b'0'..=b'9' | b'A'..=b'F'))),
                "{encoded}"
            );
        } else {
            assert!(
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'),
                "{encoded}"
            );
        }
    }
    assert_eq!(percent_decode_str(&encoded, "fuzz").as_deref(), Ok(text));
    assert_eq!(form_decode(&encoded, "fuzz").as_deref(), Ok(text));
    let mut twice = String::new();
    percent_encode_twice_into(&mut twice, text);
    assert_eq!(twice, percent_encode(&encoded));
}

fn check_form(text: &str) {
    let Ok(pairs) = parse_form(text) else {
        return;
    };
    let written = form_encode(pairs_of(&pairs));
    assert_eq!(parse_form(&written), Ok(pairs), "{written}");
}

fn check_authorization(text: &str) {
    let Ok(pairs) = parse_authorization(text) else {
        return;
    };
    for realm in [None, Some("Example")] {
        let header = authorization_header(realm, pairs_of(&pairs));
        let params = header
            .strip_prefix("OAuth ")
            .unwrap_or_else(|| panic!("not an OAuth header: {header}"));
        assert_eq!(parse_authorization(params).as_ref(), Ok(&pairs), "{header}");
    }
}

/// The fields of a request, one per line, the body last and raw.
fn request_of(data: &[u8]) -> Option<HttpRequest<'_>> {
    let mut fields = data.splitn(5, |&b| b == b'\n');
    let mut line = || std::str::from_utf8(fields.next().unwrap_or_default()).ok();
    let method = line()?;
    let uri = line()?;
    let authorization = Some(line()?).filter(|h| !h.is_empty());
    let content_type = Some(line()?).filter(|c| !c.is_empty());
    Some(HttpRequest {
        method,
        uri,
        authorization,
        content_type,
        body: fields.next().unwrap_or_default(),
    })
}

fn check_request(request: &HttpRequest<'_>) {
    let Ok(collected) = request.collect() else {
        return;
    };
    let _ = collected.normalized_parameters();
    let base_string = request.base_string(&collected);

    // Everything moved to the form body: the query off the URI, no header.
    let end = request.uri.find(['?', '#']).unwrap_or(request.uri.len());
    let body = form_encode(pairs_of(&collected.all));
    let moved = HttpRequest {
        method: request.method,
        uri: &request.uri[..end],
        authorization: None,
        content_type: Some(FORM),
        body: body.as_bytes(),
    };
    let again = moved
        .collect()
        .unwrap_or_else(|e| panic!("the same parameters in the body: {e}: {body}"));
    assert_eq!(again.all, collected.all, "{body}");
    assert_eq!(again.params, collected.params, "{body}");
    assert_eq!(moved.base_string(&again), base_string, "{body}");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_percent_encoding(text);
        check_form(text);
        check_authorization(text);
    }
    if let Some(request) = request_of(data) {
        check_request(&request);
    }
});
