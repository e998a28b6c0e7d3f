//! OAuth over HTTP (RFC 5849): parameter sources (§3.4.1.3.1, §3.5), the `Authorization:
//! OAuth` header, and the request as the verifier sees it.

use crate::encode::{DecodeError, parse_form, percent_decode_str, percent_encode_into};
use crate::error::StructureError;
use crate::params::{Collector, Form, OAuthParams, normalize};
use crate::uri;

/// An HTTP request as the verifier needs it. The server fills it from what it received.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// The request method (`GET`, `POST`…), any case.
    pub method: &'a str,
    /// The absolute request URI as the client addressed it (scheme, `Host`, path, query):
    /// `http://127.0.0.1:8080/oauth/request_token?x=1`.
    pub uri: &'a str,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The `Content-Type` header, if any. The body is read only when it is
    /// `application/x-www-form-urlencoded`.
    pub content_type: Option<&'a str>,
    /// The request body.
    pub body: &'a [u8],
}

/// All the parameters of an HTTP request, decoded (RFC 5849 §3.4.1.3.1), split into the
/// protocol parameters and the rest.
#[derive(Debug, Clone)]
pub struct CollectedRequest {
    /// Every decoded `(name, value)` pair of the query, the `Authorization` header (without
    /// `realm`) and a form body, in that order, duplicates kept.
    pub all: Vec<(String, String)>,
    /// The protocol parameters, after the structure checks.
    pub params: OAuthParams,
}

impl CollectedRequest {
    /// The normalized parameters: every collected pair except `oauth_signature`.
    pub fn normalized_parameters(&self) -> String {
        normalize(
            self.all
                .iter()
                .filter(|(name, _)| name != "oauth_signature")
                .map(|(n, v)| (n.as_str(), v.as_str())),
        )
    }
}

impl HttpRequest<'_> {
    /// Whether the body is a single-part form (RFC 5849 §3.4.1.3.1).
    fn has_form_body(&self) -> bool {
        self.content_type.is_some_and(|ct| {
            ct.split(';').next().is_some_and(|media| {
                media
                    .trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        })
    }

    /// Collects every parameter (query, `Authorization` header without `realm`, form body)
    /// and checks the protocol parameters' structure.
    pub fn collect(&self) -> Result<CollectedRequest, StructureError> {
        let mut all = match uri::query(self.uri) {
            Some(q) => parse_form(q)?,
            None => Vec::new(),
        };
        if let Some(header) = self.authorization.and_then(oauth_header_params) {
            all.extend(parse_authorization(header)?);
        }
        if self.has_form_body() {
            let body = std::str::from_utf8(self.body).map_err(|_| DecodeError {
                what: "the form body",
            })?;
            all.extend(parse_form(body)?);
        }
        let mut collector = Collector::new(Form::Http);
        for (name, value) in all.iter().filter(|(n, _)| n.starts_with("oauth_")) {
            collector.add(name, value.clone())?;
        }
        let params = collector.finish(true)?;
        Ok(CollectedRequest { all, params })
    }

    /// The signature base string of this request (RFC 5849 §3.4.1.1).
    pub fn base_string(&self, collected: &CollectedRequest) -> Result<String, StructureError> {
        let base_uri = uri::base_string_uri(self.uri)?;
        Ok(crate::base_string::http_from_parts(
            self.method,
            &base_uri,
            &collected.normalized_parameters(),
        ))
    }
}

/// The part after `OAuth ` when `header` uses the OAuth scheme (case-insensitive).
fn oauth_header_params(header: &str) -> Option<&str> {
    let header = header.trim_start();
    let scheme = header.get(..5)?;
    let rest = &header[5..];
    (scheme.eq_ignore_ascii_case("oauth") && (rest.is_empty() || rest.starts_with([' ', '\t'])))
        .then_some(rest)
}

/// Parses the parameters of an `Authorization: OAuth` header (RFC 5849 §3.5.1):
/// `name="value"` pairs separated by commas, names and values percent-encoded. `realm` is
/// left out (§3.4.1.3.1).
pub fn parse_authorization(params: &str) -> Result<Vec<(String, String)>, StructureError> {
    let malformed = StructureError::MalformedAuthorizationHeader;
    let mut out = Vec::new();
    let mut rest = params.trim_start_matches([' ', '\t', ',']);
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or(malformed("a parameter has no '='"))?;
        let name = name.trim();
        if name.is_empty() || name.contains([',', '"', ' ']) {
            return Err(malformed(
                "a parameter name is empty or holds a comma, quote or space",
            ));
        }
        let after = after.trim_start();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            quoted
                .split_once('"')
                .ok_or(malformed("a quoted value is not closed"))?
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim_end(), &after[end..])
        };
        let after = after.trim_start_matches([' ', '\t']);
        if !after.is_empty() && !after.starts_with(',') {
            return Err(malformed("parameters must be separated by commas"));
        }
        rest = after.trim_start_matches([' ', '\t', ',']);
        // Names are percent-encoded too: `r%65alm` is `realm`.
        let name = percent_decode_str(name, "an Authorization header parameter name")?;
        if name != "realm" {
            out.push((
                name,
                percent_decode_str(value, "an Authorization header parameter value")?,
            ));
        }
    }
    Ok(out)
}

/// Writes an `Authorization: OAuth` header value (RFC 5849 §3.5.1) for `params` (the
/// signature included), with an optional `realm`.
pub fn authorization_header<'a>(
    realm: Option<&str>,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut out = String::from("OAuth ");
    let mut first = true;
    let mut item = |out: &mut String, name: &str, value: &str| {
        if !first {
            out.push_str(", ");
        }
        first = false;
        percent_encode_into(out, name);
        out.push_str("=\"");
        percent_encode_into(out, value);
        out.push('"');
    };
    if let Some(realm) = realm {
        item(&mut out, "realm", realm);
    }
    for (name, value) in params {
        item(&mut out, name, value);
    }
    out
}

/// Writes `pairs` as an `application/x-www-form-urlencoded` text, names and values encoded
/// as RFC 5849 §3.6 (a space is `%20`).
pub fn form_encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode_into(&mut out, name);
        out.push('=');
        percent_encode_into(&mut out, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_scheme_is_case_insensitive_and_realm_dropped() {
        let params = oauth_header_params("oAuTh realm=\"x\", oauth_nonce=\"a%20b\"").unwrap();
        assert_eq!(
            parse_authorization(params).unwrap(),
            vec![("oauth_nonce".to_owned(), "a b".to_owned())]
        );
    }

    /// Found by the `http_params` fuzz target: the name was compared before decoding.
    #[test]
    fn a_percent_encoded_realm_is_dropped_too() {
        assert_eq!(
            parse_authorization("r%65alm=\"x\", oauth_nonce=\"n\"").unwrap(),
            vec![("oauth_nonce".to_owned(), "n".to_owned())]
        );
    }

    #[test]
    fn other_schemes_are_not_oauth() {
        assert_eq!(oauth_header_params("Basic abc"), None);
        assert_eq!(oauth_header_params("OAuthx a=\"b\""), None);
    }

    #[test]
    fn unquoted_values_are_tolerated() {
        assert_eq!(
            parse_authorization("a=1, b=\"2\",c=3").unwrap(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("c".into(), "3".into())
            ]
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in ["a", "a=\"1", "=\"1\"", "a=\"1\" b=\"2\""] {
            assert!(
                matches!(
                    parse_authorization(bad),
                    Err(StructureError::MalformedAuthorizationHeader(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn header_round_trips() {
        let header = authorization_header(Some("R"), [("oauth_callback", "http://x/?a=1&b")]);
        assert_eq!(
            header,
            "OAuth realm=\"R\", oauth_callback=\"http%3A%2F%2Fx%2F%3Fa%3D1%26b\""
        );
        let params = oauth_header_params(&header).unwrap();
        assert_eq!(
            parse_authorization(params).unwrap(),
            vec![("oauth_callback".to_owned(), "http://x/?a=1&b".to_owned())]
        );
    }
}
