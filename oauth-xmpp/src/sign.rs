//! The consumer side: sign a stanza or an HTTP request.

use minidom::Element;

use crate::element::find_oauth_mut;
use crate::error::StructureError;
use crate::http::authorization_header;
use crate::params::{OAuthParams, SignatureMethod};
use crate::replay::Clock;
use crate::secret::Secret;
use crate::signature::sign;
use crate::uri::UriError;

/// A source of nonces for the signer (for example 128 random bits from the OS, hex-encoded).
pub trait NonceSource {
    /// A new nonce: unique for every request with the same credentials and timestamp.
    fn nonce(&self) -> String;
}

impl<F: Fn() -> String> NonceSource for F {
    fn nonce(&self) -> String {
        self()
    }
}

/// A consumer's credentials, with the token it presents.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The consumer key.
    pub consumer_key: String,
    /// The consumer secret.
    pub consumer_secret: Secret,
    /// The token, if any.
    pub token: Option<String>,
    /// The token secret (empty without a token).
    pub token_secret: Secret,
}

/// Signs requests for a consumer.
#[derive(Debug, Clone)]
pub struct Signer<C, N> {
    credentials: Credentials,
    method: SignatureMethod,
    send_version: bool,
    clock: C,
    nonces: N,
}

impl<C: Clock, N: NonceSource> Signer<C, N> {
    /// A signer using HMAC-SHA1 that sends `oauth_version=1.0`.
    pub fn new(credentials: Credentials, clock: C, nonces: N) -> Self {
        Self {
            credentials,
            method: SignatureMethod::HmacSha1,
            send_version: true,
            clock,
            nonces,
        }
    }

    /// Uses `method` instead of HMAC-SHA1.
    pub fn with_method(mut self, method: SignatureMethod) -> Self {
        self.method = method;
        self
    }

    /// Whether to send `oauth_version=1.0` (it is optional).
    pub fn with_version(mut self, send_version: bool) -> Self {
        self.send_version = send_version;
        self
    }

    fn fresh_params(&self) -> OAuthParams {
        OAuthParams {
            consumer_key: self.credentials.consumer_key.clone(),
            token: self.credentials.token.clone(),
            signature_method: self.method,
            signature: String::new(),
            timestamp: self.clock.now().to_string(),
            nonce: self.nonces.nonce(),
            version: self.send_version,
            callback: None,
            verifier: None,
        }
    }

    /// The signed `<oauth/>` element for a stanza named `qname` (`iq`…) that the receiver
    /// will see with addresses `from` (your full JID, as the server stamps it) and `to`.
    pub fn sign_stanza(&self, qname: &str, from: &str, to: &str) -> Element {
        let mut params = self.fresh_params();
        sign_stanza_params(
            &mut params,
            qname,
            from,
            to,
            &self.credentials.consumer_secret,
            &self.credentials.token_secret,
        );
        params.to_element()
    }

    /// The `Authorization: OAuth` header value for an HTTP request. `uri` is absolute
    /// (its query is signed too); `form` holds the decoded parameters of a form body;
    /// `extra` holds `oauth_callback` / `oauth_verifier` when the flow needs them.
    pub fn sign_http(
        &self,
        method: &str,
        uri: &str,
        form: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Result<String, StructureError> {
        let mut params = self.fresh_params();
        for (name, value) in extra {
            match *name {
                "oauth_callback" => params.callback = Some((*value).to_owned()),
                "oauth_verifier" => params.verifier = Some((*value).to_owned()),
                other => return Err(StructureError::UnsupportedParameter(other.to_owned())),
            }
        }
        let signature = http_signature(
            method,
            uri,
            form,
            &params,
            &self.credentials.consumer_secret,
            &self.credentials.token_secret,
        )?;
        let mut pairs = params.signed_pairs();
        pairs.push(("oauth_signature", signature.as_str()));
        Ok(authorization_header(None, pairs))
    }
}

/// Fills in `params.signature` for a stanza (XEP-0235 base string with the full `from`).
///
/// The base string comes from [`crate::base_string::stanza_for`], the function the
/// verifier checks against: signer and verifier share one base-string path.
pub fn sign_stanza_params(
    params: &mut OAuthParams,
    qname: &str,
    from: &str,
    to: &str,
    consumer_secret: &Secret,
    token_secret: &Secret,
) {
    let base = crate::base_string::stanza_for(qname, from, to, params);
    params.signature = sign(
        params.signature_method,
        &base,
        consumer_secret,
        token_secret,
    )
    .to_string();
}

/// Signs a stanza in place: its `<oauth/>` element (which may lack `oauth_signature`) gets
/// the signature for the method it names, over the stanza's own `from` and `to`.
/// Returns the base string that was signed.
pub fn sign_stanza_in_place(
    stanza: &mut Element,
    consumer_secret: &Secret,
    token_secret: &Secret,
) -> Result<String, StructureError> {
    let request = crate::element::StanzaRequest::from_unsigned_stanza(&*stanza)?
        .ok_or(StructureError::MissingParameter("oauth"))?;
    let mut params = request.params.clone();
    sign_stanza_params(
        &mut params,
        &request.qname,
        &request.from,
        &request.to,
        consumer_secret,
        token_secret,
    );
    if let Some(oauth) = find_oauth_mut(stanza) {
        *oauth = params.to_element();
    }
    Ok(request.base_string())
}

/// The signature of an HTTP request (RFC 5849 §3.4): the query of `uri`, the `form`
/// parameters and the protocol parameters (without the signature) are signed.
pub fn http_signature(
    method: &str,
    uri: &str,
    form: &[(&str, &str)],
    params: &OAuthParams,
    consumer_secret: &Secret,
    token_secret: &Secret,
) -> Result<String, StructureError> {
    let base = http_base_string(method, uri, form, params)?;
    Ok(sign(
        params.signature_method,
        &base,
        consumer_secret,
        token_secret,
    )
    .to_string())
}

/// The base string of an HTTP request with `uri`'s query, `form` and the protocol
/// parameters (what [`http_signature`] signs).
pub fn http_base_string(
    method: &str,
    uri: &str,
    form: &[(&str, &str)],
    params: &OAuthParams,
) -> Result<String, StructureError> {
    let query = match crate::uri::query(uri) {
        Some(q) => crate::encode::parse_form(q)?,
        None => Vec::new(),
    };
    let all = query
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .chain(form.iter().copied())
        .chain(params.signed_pairs());
    crate::base_string::http(method, uri, all).map_err(|e: UriError| e.into())
}
