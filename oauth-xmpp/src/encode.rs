//! RFC 5849 §3.6 percent-encoding, and the decoding the parameter sources need.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};

/// RFC 5849 §3.6: every byte except the unreserved `ALPHA DIGIT - . _ ~` is encoded.
const RFC5849: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `value` as RFC 5849 §3.6 requires: UTF-8 bytes, every byte outside
/// `ALPHA DIGIT - . _ ~` as `%XX` with upper-case hex. A space becomes `%20`, never `+`.
///
/// ```
/// assert_eq!(oauth_xmpp::encode::percent_encode("a b&c=~"), "a%20b%26c%3D~");
/// assert_eq!(oauth_xmpp::encode::percent_encode("\u{3001}"), "%E3%80%81");
/// ```
pub fn percent_encode(value: &str) -> String {
    utf8_percent_encode(value, RFC5849).to_string()
}

/// Appends the RFC 5849 §3.6 encoding of `value` to `out` (no allocation of its own).
pub fn percent_encode_into(out: &mut String, value: &str) {
    out.extend(utf8_percent_encode(value, RFC5849));
}

/// Why a percent-encoded or form-encoded text could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is not UTF-8 once percent-decoded")]
pub struct DecodeError {
    /// What was being decoded, in words (e.g. "query parameter name").
    pub what: &'static str,
}

/// Percent-decodes `value` (RFC 3986 §2.1). A `%` not followed by two hex digits stays as it
/// is. The decoded bytes must be UTF-8.
pub fn percent_decode_str(value: &str, what: &'static str) -> Result<String, DecodeError> {
    percent_decode(value.as_bytes())
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| DecodeError { what })
}

/// Decodes one name or value of an `application/x-www-form-urlencoded` text: `+` is a
/// space, then percent-decoding as [`percent_decode_str`].
pub fn form_decode(value: &str, what: &'static str) -> Result<String, DecodeError> {
    if value.contains('+') {
        percent_decode_str(&value.replace('+', " "), what)
    } else {
        percent_decode_str(value, what)
    }
}

/// Splits an `application/x-www-form-urlencoded` text (a URI query or a form body) into
/// decoded `(name, value)` pairs, in order, keeping duplicates and empty values
/// (RFC 5849 §3.4.1.3.1). `name` without `=` gives an empty value; empty segments
/// (`a=1&&b=2`) are skipped.
pub fn parse_form(text: &str) -> Result<Vec<(String, String)>, DecodeError> {
    text.split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
            Ok((
                form_decode(name, "a form parameter name")?,
                form_decode(value, "a form parameter value")?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_characters_stay() {
        assert_eq!(percent_encode("abcABC123-._~"), "abcABC123-._~");
    }

    #[test]
    fn everything_else_is_upper_case_hex() {
        assert_eq!(
            percent_encode("%+&=* \n!'()"),
            "%25%2B%26%3D%2A%20%0A%21%27%28%29"
        );
    }

    #[test]
    fn form_plus_is_space_and_percent_2b_is_plus() {
        assert_eq!(
            parse_form("a=x+y&b=%2B&c&&d=").unwrap(),
            vec![
                ("a".into(), "x y".into()),
                ("b".into(), "+".into()),
                ("c".into(), "".into()),
                ("d".into(), "".into()),
            ]
        );
    }

    #[test]
    fn invalid_utf8_after_decoding_is_an_error() {
        assert_eq!(
            parse_form("a=%FF").unwrap_err(),
            DecodeError {
                what: "a form parameter value"
            }
        );
    }

    #[test]
    fn stray_percent_is_kept() {
        assert_eq!(percent_decode_str("100%", "x").unwrap(), "100%");
    }
}
