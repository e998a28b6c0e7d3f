//! The OAuth protocol parameters of one request (RFC 5849 §3.1), their structure rules, and
//! parameter normalization (RFC 5849 §3.4.1.3.2).

use std::fmt;

use crate::encode::percent_encode;
use crate::error::StructureError;

/// Longest value accepted for any protocol parameter, in bytes. Longer values are refused
/// with [`StructureError::ParameterTooLong`], so that nonces and keys kept for replay
/// protection stay small.
pub const MAX_PARAMETER_LEN: usize = 1024;

/// A signature method (RFC 5849 §3.4). RSA-SHA1 is not supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureMethod {
    /// `HMAC-SHA1` (RFC 5849 §3.4.2).
    HmacSha1,
    /// `PLAINTEXT` (RFC 5849 §3.4.4): the signature is the key itself.
    Plaintext,
}

impl SignatureMethod {
    /// The method's name on the wire (`HMAC-SHA1`, `PLAINTEXT`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha1 => "HMAC-SHA1",
            Self::Plaintext => "PLAINTEXT",
        }
    }

    /// Parses a method name. Names are case-sensitive (RFC 5849 §3.1); anything else,
    /// including the 2008 value `PLAINTEXT+HMAC-SHA1`, is
    /// [`StructureError::UnsupportedSignatureMethod`].
    pub fn parse(name: &str) -> Result<Self, StructureError> {
        match name {
            "HMAC-SHA1" => Ok(Self::HmacSha1),
            "PLAINTEXT" => Ok(Self::Plaintext),
            other => Err(StructureError::UnsupportedSignatureMethod(clip(other))),
        }
    }
}

impl fmt::Display for SignatureMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the parameters came from: the two forms allow different parameter sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// An XEP-0235 `<oauth/>` element: the six required children and `oauth_version`.
    Stanza,
    /// An RFC 5849 HTTP request: also `oauth_callback` and `oauth_verifier`, and
    /// `oauth_token` is optional (temporary credential requests carry none).
    Http,
}

/// The protocol parameters of one signed request, after the structure checks of the
/// project profile. Values are as sent (for XMPP: trimmed of XML white space).
///
/// `Debug` hides the signature: a PLAINTEXT signature is the secrets themselves.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthParams {
    /// `oauth_consumer_key`.
    pub consumer_key: String,
    /// `oauth_token`; always present in a stanza.
    pub token: Option<String>,
    /// `oauth_signature_method`.
    pub signature_method: SignatureMethod,
    /// `oauth_signature`, exactly as sent (percent-escaped values are decoded only when
    /// checked; see the profile).
    pub signature: String,
    /// `oauth_timestamp`, the digits as sent.
    pub timestamp: String,
    /// `oauth_nonce`.
    pub nonce: String,
    /// Whether `oauth_version` (always `1.0`) was sent.
    pub version: bool,
    /// `oauth_callback` (HTTP only).
    pub callback: Option<String>,
    /// `oauth_verifier` (HTTP only).
    pub verifier: Option<String>,
}

impl fmt::Debug for OAuthParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthParams")
            .field("consumer_key", &self.consumer_key)
            .field("token", &self.token)
            .field("signature_method", &self.signature_method)
            .field("signature", &"***")
            .field("timestamp", &self.timestamp)
            .field("nonce", &self.nonce)
            .field("version", &self.version)
            .field("callback", &self.callback)
            .field("verifier", &self.verifier.as_ref().map(|_| "***"))
            .finish()
    }
}

impl OAuthParams {
    /// The timestamp as seconds since 1970. The structure checks made sure it parses.
    pub fn timestamp_secs(&self) -> u64 {
        parse_timestamp(&self.timestamp).unwrap_or(0)
    }

    /// The parameters that enter the signature base string: every `oauth_*` parameter that
    /// was sent, except `oauth_signature` (RFC 5849 §3.4.1.3.1), as `(name, value)`.
    pub fn signed_pairs(&self) -> Vec<(&'static str, &str)> {
        self.signed_pairs_iter().collect()
    }

    /// [`OAuthParams::signed_pairs`] without allocating. Names are distinct and come in
    /// alphabetical order, which is the normalized order (RFC 5849 §3.4.1.3.2).
    pub(crate) fn signed_pairs_iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("oauth_callback", self.callback.as_deref()),
            ("oauth_consumer_key", Some(self.consumer_key.as_str())),
            ("oauth_nonce", Some(self.nonce.as_str())),
            (
                "oauth_signature_method",
                Some(self.signature_method.as_str()),
            ),
            ("oauth_timestamp", Some(self.timestamp.as_str())),
            ("oauth_token", self.token.as_deref()),
            ("oauth_verifier", self.verifier.as_deref()),
            ("oauth_version", self.version.then_some("1.0")),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
    }

    /// Appends `enc(normalized parameters)` to `out` (the last part of both base strings),
    /// in one pass: the pairs are already in normalized order and their names need no
    /// encoding.
    pub(crate) fn write_normalized_encoded(&self, out: &mut String) {
        for (i, (name, value)) in self.signed_pairs_iter().enumerate() {
            if i > 0 {
                out.push_str("%26");
            }
            out.push_str(name);
            out.push_str("%3D");
            crate::encode::percent_encode_twice_into(out, value);
        }
    }
}

/// The protocol parameter names, one slot each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Name {
    ConsumerKey,
    Token,
    SignatureMethod,
    Signature,
    Timestamp,
    Nonce,
    Version,
    Callback,
    Verifier,
}

impl Name {
    #[cfg(test)]
    const ALL: [Name; 9] = [
        Name::ConsumerKey,
        Name::Token,
        Name::SignatureMethod,
        Name::Signature,
        Name::Timestamp,
        Name::Nonce,
        Name::Version,
        Name::Callback,
        Name::Verifier,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Name::ConsumerKey => "oauth_consumer_key",
            Name::Token => "oauth_token",
            Name::SignatureMethod => "oauth_signature_method",
            Name::Signature => "oauth_signature",
            Name::Timestamp => "oauth_timestamp",
            Name::Nonce => "oauth_nonce",
            Name::Version => "oauth_version",
            Name::Callback => "oauth_callback",
            Name::Verifier => "oauth_verifier",
        }
    }

    /// The name `name` stands for, if it is a protocol parameter.
    fn parse(name: &str) -> Option<Self> {
        Some(match name.strip_prefix("oauth_")? {
            "consumer_key" => Name::ConsumerKey,
            "token" => Name::Token,
            "signature_method" => Name::SignatureMethod,
            "signature" => Name::Signature,
            "timestamp" => Name::Timestamp,
            "nonce" => Name::Nonce,
            "version" => Name::Version,
            "callback" => Name::Callback,
            "verifier" => Name::Verifier,
            _ => return None,
        })
    }

    fn allowed_in(self, form: Form) -> bool {
        form == Form::Http || !matches!(self, Name::Callback | Name::Verifier)
    }
}

/// Collects protocol parameters one by one and applies the structure rules of the profile:
/// duplicated, unsupported, missing, version, method, timestamp, length.
pub(crate) struct Collector {
    form: Form,
    slots: [Option<String>; 9],
}

impl Collector {
    pub(crate) fn new(form: Form) -> Self {
        Self {
            form,
            slots: Default::default(),
        }
    }

    /// Adds one `oauth_*` parameter. Unknown names and names not allowed in this form are
    /// unsupported; a second occurrence is duplicated.
    pub(crate) fn add(&mut self, name: &str, value: String) -> Result<(), StructureError> {
        let Some(parsed) = Name::parse(name).filter(|n| n.allowed_in(self.form)) else {
            return Err(StructureError::UnsupportedParameter(clip(name)));
        };
        let slot = parsed as usize;
        if self.slots[slot].is_some() {
            return Err(StructureError::DuplicatedParameter(clip(name)));
        }
        if value.len() > MAX_PARAMETER_LEN {
            return Err(StructureError::ParameterTooLong(parsed.as_str()));
        }
        self.slots[slot] = Some(value);
        Ok(())
    }

    fn take(&mut self, name: Name) -> Option<String> {
        self.slots[name as usize].take()
    }

    fn require(&mut self, name: Name) -> Result<String, StructureError> {
        self.take(name)
            .ok_or(StructureError::MissingParameter(name.as_str()))
    }

    /// Checks that the required parameters are there and well-formed.
    ///
    /// `signature_required` is false only for a signer filling in a signature.
    pub(crate) fn finish(
        mut self,
        signature_required: bool,
    ) -> Result<OAuthParams, StructureError> {
        let consumer_key = self.require(Name::ConsumerKey)?;
        let token = match self.form {
            Form::Stanza => Some(self.require(Name::Token)?),
            Form::Http => self.take(Name::Token),
        };
        let method = self.require(Name::SignatureMethod)?;
        let signature = if signature_required {
            self.require(Name::Signature)?
        } else {
            self.take(Name::Signature).unwrap_or_default()
        };
        let timestamp = self.require(Name::Timestamp)?;
        let nonce = self.require(Name::Nonce)?;
        let version = match self.take(Name::Version) {
            None => false,
            Some(v) if v == "1.0" => true,
            Some(v) => return Err(StructureError::UnsupportedVersion(clip(&v))),
        };
        let signature_method = SignatureMethod::parse(&method)?;
        if parse_timestamp(&timestamp).is_none() {
            return Err(StructureError::InvalidTimestamp(clip(&timestamp)));
        }
        Ok(OAuthParams {
            consumer_key,
            token,
            signature_method,
            signature,
            timestamp,
            nonce,
            version,
            callback: self.take(Name::Callback),
            verifier: self.take(Name::Verifier),
        })
    }
}

/// RFC 5849 §3.3: a positive whole number of seconds, ASCII digits only.
pub(crate) fn parse_timestamp(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u64>().ok().filter(|&t| t > 0)
}

/// Shortens attacker-supplied text before it goes into an error message.
pub(crate) fn clip(value: &str) -> String {
    const MAX: usize = 64;
    if value.len() <= MAX {
        return value.to_owned();
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

/// RFC 5849 §3.4.1.3.2: encodes every name and value (§3.6), sorts the pairs by encoded
/// name and then encoded value in byte order, joins each pair with `=` and the pairs with
/// `&`.
///
/// ```
/// use oauth_xmpp::params::normalize;
/// assert_eq!(normalize([("a", "x!y"), ("a", "x y")]), "a=x%20y&a=x%21y");
/// assert_eq!(normalize([("x!y", "a"), ("x", "a")]), "x=a&x%21y=a");
/// ```
pub fn normalize<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(name, value)| (percent_encode(name), percent_encode(value)))
        .collect();
    encoded.sort_unstable();
    let len = encoded.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
    let mut out = String::with_capacity(len);
    for (i, (name, value)) in encoded.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(form: Form, pairs: &[(&str, &str)]) -> Result<OAuthParams, StructureError> {
        let mut c = Collector::new(form);
        for (n, v) in pairs {
            c.add(n, (*v).to_owned())?;
        }
        c.finish(true)
    }

    const STANZA: [(&str, &str); 6] = [
        ("oauth_consumer_key", "k"),
        ("oauth_nonce", "n"),
        ("oauth_signature", "s"),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", "1218137833"),
        ("oauth_token", "t"),
    ];

    #[test]
    fn names_parse_back_and_index_their_slot() {
        for (i, name) in Name::ALL.into_iter().enumerate() {
            assert_eq!(Name::parse(name.as_str()), Some(name));
            assert_eq!(name as usize, i);
        }
        assert_eq!(Name::parse("oauth_"), None);
        assert_eq!(Name::parse("consumer_key"), None);
    }

    #[test]
    fn one_pass_encoding_matches_normalize_then_encode() {
        let mut params = collect(Form::Http, &STANZA).unwrap();
        params.callback = Some("http://a.example/cb?x=1&y=%20".into());
        params.verifier = Some("v v".into());
        params.version = true;
        params.nonce = "é+~".into();
        let mut out = String::new();
        params.write_normalized_encoded(&mut out);
        assert_eq!(out, percent_encode(&normalize(params.signed_pairs())));
    }

    #[test]
    fn normalize_sorts_pairs_not_joined_strings() {
        // "a2=x" must not come before "a=x" although '2' < '='.
        assert_eq!(normalize([("a2", "x"), ("a", "x")]), "a=x&a2=x");
    }

    #[test]
    fn stanza_form_refuses_callback() {
        let mut pairs = STANZA.to_vec();
        pairs.push(("oauth_callback", "oob"));
        assert_eq!(
            collect(Form::Stanza, &pairs).unwrap_err(),
            StructureError::UnsupportedParameter("oauth_callback".into())
        );
    }

    #[test]
    fn http_form_allows_missing_token() {
        let pairs: Vec<_> = STANZA
            .iter()
            .copied()
            .filter(|(n, _)| *n != "oauth_token")
            .collect();
        assert_eq!(collect(Form::Http, &pairs).unwrap().token, None);
        assert_eq!(
            collect(Form::Stanza, &pairs).unwrap_err(),
            StructureError::MissingParameter("oauth_token")
        );
    }

    #[test]
    fn timestamp_must_be_positive_digits() {
        for bad in [
            "",
            "0",
            "-5",
            "12.5",
            " 12",
            "1e9",
            "99999999999999999999999",
        ] {
            let mut pairs = STANZA.to_vec();
            pairs[4] = ("oauth_timestamp", bad);
            assert_eq!(
                collect(Form::Stanza, &pairs).unwrap_err(),
                StructureError::InvalidTimestamp(bad.into()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn overlong_value_is_refused() {
        let long = "n".repeat(MAX_PARAMETER_LEN + 1);
        let mut pairs = STANZA.to_vec();
        pairs[1] = ("oauth_nonce", &long);
        assert_eq!(
            collect(Form::Stanza, &pairs).unwrap_err(),
            StructureError::ParameterTooLong("oauth_nonce")
        );
    }

    #[test]
    fn debug_hides_signature_and_verifier() {
        let mut p = collect(Form::Stanza, &STANZA).unwrap();
        p.signature = "consumersecret&tokensecret".into();
        p.verifier = Some("v3rifier".into());
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("consumersecret") && !shown.contains("v3rifier"),
            "{shown}"
        );
    }

    #[test]
    fn clip_respects_char_boundaries() {
        let s = "é".repeat(40);
        assert!(clip(&s).ends_with('…'));
    }
}
