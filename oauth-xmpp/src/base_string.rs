//! Signature base strings: the HTTP form (RFC 5849 §3.4.1.1) and the stanza form of
//! XEP-0235 (v0.7 §"Signature Generation Algorithm", as the project profile reads it).

use crate::encode::percent_encode_into;
use crate::params::{OAuthParams, normalize};
use crate::uri::{UriError, base_string_uri};

/// RFC 5849 §3.4.1.1: `METHOD "&" enc(base string URI) "&" enc(normalized parameters)`.
///
/// `method` is upper-cased and encoded; `uri` is the absolute request URI (its query is
/// *not* read here: pass the query parameters in `params`); `params` are the decoded
/// parameters of every source, without `oauth_signature` and `realm`.
pub fn http<'a>(
    method: &str,
    uri: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<String, UriError> {
    let uri = base_string_uri(uri)?;
    Ok(http_from_parts(method, &uri, &normalize(params)))
}

/// RFC 5849 §3.4.1.1 from an already built base string URI and normalized parameters.
pub fn http_from_parts(method: &str, base_uri: &str, normalized: &str) -> String {
    let mut out = String::with_capacity(method.len() + base_uri.len() * 2 + normalized.len() * 2);
    percent_encode_into(&mut out, &method.to_ascii_uppercase());
    out.push('&');
    percent_encode_into(&mut out, base_uri);
    out.push('&');
    percent_encode_into(&mut out, normalized);
    out
}

/// XEP-0235: `qname "&" enc(from "&" to) "&" enc(normalized parameters)`.
///
/// `qname` is the stanza element's name in lower case (`iq`, `message`, `presence`);
/// `from` and `to` are the addresses as the receiver sees them, `from` first; `normalized`
/// is [`normalize`] over every `oauth_*` child except `oauth_signature`.
///
/// ```
/// let base = oauth_xmpp::base_string::stanza(
///     "iq", "travelbot@findmenow.tld/bot", "feeds.worldgps.tld", "oauth_consumer_key=0685bd9184jfhq22");
/// assert_eq!(base, "iq&travelbot%40findmenow.tld%2Fbot%26feeds.worldgps.tld&oauth_consumer_key%3D0685bd9184jfhq22");
/// ```
pub fn stanza(qname: &str, from: &str, to: &str, normalized: &str) -> String {
    let mut out = stanza_prefix(qname, from, to, 2 * normalized.len());
    percent_encode_into(&mut out, normalized);
    out
}

/// [`stanza`] for the parameters of an `<oauth/>` element, written in one pass (the
/// verifier's hot path).
pub fn stanza_for(qname: &str, from: &str, to: &str, params: &OAuthParams) -> String {
    let mut out = stanza_prefix(qname, from, to, 320);
    params.write_normalized_encoded(&mut out);
    out
}

/// `qname "&" enc(from "&" to) "&"`, with room for `rest` more bytes.
fn stanza_prefix(qname: &str, from: &str, to: &str, rest: usize) -> String {
    let mut out = String::with_capacity(qname.len() + 3 * (from.len() + to.len()) + rest + 8);
    out.extend(qname.chars().map(|c| c.to_ascii_lowercase()));
    out.push('&');
    percent_encode_into(&mut out, from);
    out.push_str("%26");
    percent_encode_into(&mut out, to);
    out.push('&');
    out
}

/// The bare form of a JID: everything before the first `/` (RFC 7622 §3.1).
pub fn bare_jid(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(bare, _)| bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qname_is_lower_cased_not_upper_cased() {
        assert!(stanza("IQ", "a", "b", "").starts_with("iq&"));
    }

    #[test]
    fn method_is_upper_cased_and_encoded() {
        assert_eq!(
            http_from_parts("get", "http://h/", "a=b"),
            "GET&http%3A%2F%2Fh%2F&a%3Db"
        );
        assert!(http_from_parts("x y", "http://h/", "").starts_with("X%20Y&"));
    }

    #[test]
    fn bare_jid_stops_at_first_slash() {
        assert_eq!(bare_jid("a@b/c/d"), "a@b");
        assert_eq!(bare_jid("a@b"), "a@b");
    }
}
