//! RFC 5849 §3.6 percent-encoding, and the decoding the parameter sources need.

use percent_encoding::percent_decode;

/// Percent-encodes `value` as RFC 5849 §3.6 requires: UTF-8 bytes, every byte outside
/// `ALPHA DIGIT - . _ ~` as `%XX` with upper-case hex. A space becomes `%20`, never `+`.
///
/// ```
/// assert_eq!(oauth_xmpp::encode::percent_encode("a b&c=~"), "a%20b%26c%3D~");
/// assert_eq!(oauth_xmpp::encode::percent_encode("\u{3001}"), "%E3%80%81");
/// ```
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + value.len() / 2);
    percent_encode_into(&mut out, value);
    out
}

/// Appends the RFC 5849 §3.6 encoding of `value` to `out` (no allocation of its own).
pub fn percent_encode_into(out: &mut String, value: &str) {
    encode_with(out, value, "%");
}

/// Appends `enc(enc(value))` to `out` in one pass: the base strings encode the normalized
/// parameters, whose values are already encoded. An unreserved byte stays; any other
/// becomes `%25XX` (the `%` of `%XX` encoded again).
pub fn percent_encode_twice_into(out: &mut String, value: &str) {
    encode_with(out, value, "%25");
}

/// Copies runs of unreserved bytes as they are and writes every other byte as `escape`
/// followed by its two upper-case hex digits.
fn encode_with(out: &mut String, value: &str, escape: &str) {
    out.reserve(value.len());
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if is_unreserved(b) {
            continue;
        }
        if start < i {
            // `start..i` holds only unreserved ASCII, so both ends are char boundaries.
            out.push_str(&value[start..i]);
        }
        out.push_str(escape);
        out.push_str(hex_pair(b));
        start = i + 1;
    }
    out.push_str(&value[start..]);
}

/// The two upper-case hex digits of `b`.
fn hex_pair(b: u8) -> &'static str {
    const TABLE: &str = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F\
        202122232425262728292A2B2C2D2E2F303132333435363738393A3B3C3D3E3F\
        404142434445464748494A4B4C4D4E4F505152535455565758595A5B5C5D5E5F\
        606162636465666768696A6B6C6D6E6F707172737475767778797A7B7C7D7E7F\
        808182838485868788898A8B8C8D8E8F909192939495969798999A9B9C9D9E9F\
        A0A1A2A3A4A5A6A7A8A9AAABACADAEAFB0B1B2B3B4B5B6B7B8B9BABBBCBDBEBF\
        C0C1C2C3C4C5C6C7C8C9CACBCCCDCECFD0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF\
        E0E1E2E3E4E5E6E7E8E9EAEBECEDEEEFF0F1F2F3F4F5F6F7F8F9FAFBFCFDFEFF";
    let at = 2 * usize::from(b);
    &TABLE[at..at + 2]
}

/// RFC 5849 §3.6 unreserved characters: `ALPHA / DIGIT / "-" / "." / "_" / "~"`.
fn is_unreserved(b: u8) -> bool {
    UNRESERVED[usize::from(b)]
}

/// [`is_unreserved`] as a table: one load per byte on the base strings' hot path.
static UNRESERVED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        b += 1;
    }
    table
};

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
    fn hex_pairs_are_upper_case_hex() {
        for b in 0..=255u8 {
            assert_eq!(hex_pair(b), format!("{b:02X}"));
        }
    }

    #[test]
    fn encoding_twice_in_one_pass_is_encoding_twice() {
        for value in ["", "abc", "a b&c=d%e+f", "é☃\u{1F600}~-._", "%%", "\u{0}\n"] {
            let mut once = String::new();
            percent_encode_twice_into(&mut once, value);
            assert_eq!(once, percent_encode(&percent_encode(value)), "{value:?}");
        }
    }

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
