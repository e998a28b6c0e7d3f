//! Signature methods: HMAC-SHA1 (RFC 5849 §3.4.2) and PLAINTEXT (RFC 5849 §3.4.4), to
//! sign and to check in constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::encode::{percent_decode_str, percent_encode_into};
use crate::params::{Form, SignatureMethod};
use crate::secret::Secret;

type HmacSha1 = hmac::Hmac<Sha1>;

/// The signing key of both methods: `enc(consumer secret) "&" enc(token secret)`; the `&`
/// is there even when a secret is empty. The returned string is zeroed when dropped.
pub fn signing_key(consumer_secret: &Secret, token_secret: &Secret) -> Zeroizing<String> {
    let mut key = Zeroizing::new(String::with_capacity(
        3 * (consumer_secret.expose().len() + token_secret.expose().len()) + 1,
    ));
    percent_encode_into(&mut key, consumer_secret.expose());
    key.push('&');
    percent_encode_into(&mut key, token_secret.expose());
    key
}

/// Signs `base_string` with `method`: base64 of HMAC-SHA1 over it, or for PLAINTEXT the
/// key itself.
///
/// ```
/// use oauth_xmpp::{Secret, SignatureMethod, signature::sign};
/// let (cs, ts) = (Secret::new("cs"), Secret::new("ts"));
/// assert_eq!(sign(SignatureMethod::HmacSha1, "bs", &cs, &ts).as_str(), "VZVjXceV7JgPq/dOTnNmEfO0Fv8=");
/// assert_eq!(sign(SignatureMethod::Plaintext, "bs", &cs, &ts).as_str(), "cs&ts");
/// ```
pub fn sign(
    method: SignatureMethod,
    base_string: &str,
    consumer_secret: &Secret,
    token_secret: &Secret,
) -> Zeroizing<String> {
    let key = signing_key(consumer_secret, token_secret);
    match method {
        SignatureMethod::HmacSha1 => Zeroizing::new(BASE64.encode(hmac_sha1(&key, base_string))),
        SignatureMethod::Plaintext => key,
    }
}

/// Raw HMAC-SHA1 of `message` under `key`.
pub fn hmac_sha1(key: &str, message: &str) -> [u8; 20] {
    let mut mac = keyed(key);
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().into()
}

fn keyed(key: &str) -> HmacSha1 {
    // HMAC accepts keys of any length; this cannot fail.
    <HmacSha1 as KeyInit>::new_from_slice(key.as_bytes()).unwrap_or_else(|_| unreachable!())
}

/// Checks `presented` against each of `base_strings` in turn (for HMAC-SHA1) and returns
/// the index of the first that matches. Comparisons are constant-time. For PLAINTEXT the
/// base strings are not used: the result is `Some(0)` when the key matches.
///
/// In the stanza form a value holding `%` is also tried percent-decoded (old clients
/// escaped it; profile, "oauth_signature"); over HTTP the transport already decoded it once.
pub fn check(
    method: SignatureMethod,
    base_strings: &[&str],
    presented: &str,
    form: Form,
    consumer_secret: &Secret,
    token_secret: &Secret,
) -> Option<usize> {
    let checker = Checker::new(method, presented, form, consumer_secret, token_secret);
    match method {
        SignatureMethod::Plaintext => checker.matches("").then_some(0),
        SignatureMethod::HmacSha1 => base_strings.iter().position(|base| checker.matches(base)),
    }
}

/// A presented signature, prepared once to be checked against one or more base strings
/// (the verifier tries the full-JID base string first and builds the bare-JID one only
/// when that fails).
pub struct Checker {
    inner: Prepared,
}

enum Prepared {
    /// PLAINTEXT: whether the key matched, decided at once.
    Plaintext(bool),
    /// HMAC-SHA1: the keyed MAC and the presented digest (`None` when it is not 20 bytes
    /// of base64, which never matches).
    Hmac(HmacSha1, Option<[u8; 20]>),
}

impl Checker {
    /// Prepares `presented` for `method` with the two secrets; see [`check`] for the rules.
    pub fn new(
        method: SignatureMethod,
        presented: &str,
        form: Form,
        consumer_secret: &Secret,
        token_secret: &Secret,
    ) -> Self {
        let key = signing_key(consumer_secret, token_secret);
        let decoded = match form {
            Form::Stanza if presented.contains('%') => {
                percent_decode_str(presented, "oauth_signature").ok()
            }
            _ => None,
        };
        let inner = match method {
            SignatureMethod::Plaintext => {
                let raw: bool = key.as_bytes().ct_eq(presented.as_bytes()).into();
                let alt: bool = decoded
                    .as_deref()
                    .is_some_and(|d| key.as_bytes().ct_eq(d.as_bytes()).into());
                Prepared::Plaintext(raw || alt)
            }
            SignatureMethod::HmacSha1 => {
                let presented = decoded.as_deref().unwrap_or(presented).trim();
                // Room for more than 20 bytes, so that a longer value is not a match (a
                // value too long even for the buffer is a decode error).
                let mut buffer = [0u8; 64];
                let digest = BASE64
                    .decode_slice(presented, &mut buffer)
                    .ok()
                    .filter(|&n| n == 20)
                    .and_then(|_| buffer[..20].try_into().ok());
                Prepared::Hmac(keyed(&key), digest)
            }
        };
        Self { inner }
    }

    /// Whether the presented signature is the one of `base_string` (for PLAINTEXT, whether
    /// it is the key; `base_string` is not used). Constant-time in the digest.
    pub fn matches(&self, base_string: &str) -> bool {
        match &self.inner {
            Prepared::Plaintext(matched) => *matched,
            Prepared::Hmac(_, None) => false,
            Prepared::Hmac(mac, Some(digest)) => {
                let mut mac = mac.clone();
                mac.update(base_string.as_bytes());
                mac.verify_slice(digest).is_ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Secret {
        Secret::new(v)
    }

    #[test]
    fn key_encodes_both_secrets() {
        assert_eq!(signing_key(&s("a b"), &s("c&d")).as_str(), "a%20b&c%26d");
        assert_eq!(signing_key(&s(""), &s("")).as_str(), "&");
    }

    #[test]
    fn hmac_check_finds_matching_candidate() {
        let sig = sign(SignatureMethod::HmacSha1, "two", &s("c"), &s("t"));
        let found = check(
            SignatureMethod::HmacSha1,
            &["one", "two"],
            &sig,
            Form::Stanza,
            &s("c"),
            &s("t"),
        );
        assert_eq!(found, Some(1));
    }

    #[test]
    fn hmac_percent_escaped_signature_is_accepted_in_stanzas_only() {
        let sig = sign(SignatureMethod::HmacSha1, "bs", &s("cs"), &s("ts"));
        let escaped = crate::encode::percent_encode(&sig);
        assert!(escaped.contains('%'));
        let check_as = |t| {
            check(
                SignatureMethod::HmacSha1,
                &["bs"],
                &escaped,
                t,
                &s("cs"),
                &s("ts"),
            )
        };
        assert_eq!(check_as(Form::Stanza), Some(0));
        assert_eq!(check_as(Form::Http), None);
    }

    #[test]
    fn plaintext_with_encoded_secrets_matches_raw_and_escaped() {
        let key = signing_key(&s("a b"), &s(""));
        assert_eq!(key.as_str(), "a%20b&");
        let escaped = crate::encode::percent_encode(&key);
        for presented in [key.as_str(), escaped.as_str()] {
            assert_eq!(
                check(
                    SignatureMethod::Plaintext,
                    &[],
                    presented,
                    Form::Stanza,
                    &s("a b"),
                    &s("")
                ),
                Some(0),
                "{presented}"
            );
        }
        assert_eq!(
            check(
                SignatureMethod::Plaintext,
                &[],
                "a b&",
                Form::Stanza,
                &s("a b"),
                &s("")
            ),
            None
        );
    }

    #[test]
    fn garbage_signature_is_no_match() {
        let right = sign(SignatureMethod::HmacSha1, "bs", &s("c"), &s("t"));
        // The right digest followed by more bytes, short and far too long for the buffer.
        let longer = BASE64.encode([BASE64.decode(right.as_str()).unwrap(), vec![0; 4]].concat());
        let huge = BASE64.encode([0u8; 300]);
        for presented in ["not base64!", "", longer.as_str(), huge.as_str()] {
            let found = check(
                SignatureMethod::HmacSha1,
                &["bs"],
                presented,
                Form::Http,
                &s("c"),
                &s("t"),
            );
            assert_eq!(found, None, "{presented}");
        }
        let found = check(
            SignatureMethod::HmacSha1,
            &["bs"],
            &right,
            Form::Http,
            &s("c"),
            &s("t"),
        );
        assert_eq!(found, Some(0));
    }
}
