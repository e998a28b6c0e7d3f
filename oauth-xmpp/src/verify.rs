//! The verifier: runs the profile's checks in order and returns a proof only it can build.

use crate::credentials::{ConsumerRecord, CredentialStore, Scope, TokenKind, TokenRecord};
use crate::element::{ElementView, StanzaRequest};
use crate::error::{StructureError, VerifyError};
use crate::http::{CollectedRequest, HttpRequest};
use crate::params::{Form, OAuthParams, SignatureMethod};
use crate::replay::{Clock, DEFAULT_WINDOW_SECS, NonceKey, NonceOutcome, NonceStore};
use crate::secret::Secret;
use crate::signature;

/// Check 2 of the profile: the consumer is known and not revoked.
fn check_consumer<S: CredentialStore>(
    credentials: &S,
    consumer_key: &str,
) -> Result<ConsumerRecord, VerifyError> {
    let consumer = credentials
        .consumer(consumer_key)?
        .ok_or_else(|| VerifyError::UnknownConsumer(crate::params::clip(consumer_key)))?;
    if consumer.revoked {
        return Err(VerifyError::ConsumerRevoked(crate::params::clip(
            consumer_key,
        )));
    }
    Ok(consumer)
}

/// The part of check 3 that does not depend on the request: the token is known, not
/// revoked, not already used, not expired at `now`.
fn check_token<S: CredentialStore>(
    credentials: &S,
    token: &str,
    now: u64,
) -> Result<TokenRecord, VerifyError> {
    let record = credentials.token(token)?.ok_or(VerifyError::UnknownToken)?;
    if record.revoked {
        return Err(VerifyError::TokenRevoked);
    }
    if record.used {
        return Err(VerifyError::TokenUsed);
    }
    if let Some(at) = record.expires_at.filter(|&at| at <= now) {
        return Err(VerifyError::TokenExpired(at));
    }
    Ok(record)
}

/// Whether access granted by `token` still holds at `now`: checks 2 and 3 of the profile
/// for a token already accepted once (known, not revoked, not used, not expired, and its
/// consumer known and not revoked). A subscription backed by the token is checked with this
/// before each delivery; the error says why access ended.
pub fn check_live_token<S: CredentialStore>(
    credentials: &S,
    token: &str,
    now: u64,
) -> Result<TokenRecord, VerifyError> {
    let record = check_token(credentials, token, now)?;
    check_consumer(credentials, &record.consumer_key)?;
    Ok(record)
}

/// Deployment settings of the verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierConfig {
    /// Timestamps more than this many seconds away from the clock are refused
    /// (default [`DEFAULT_WINDOW_SECS`], ±300 s).
    pub window_secs: u64,
    /// Also accept stanza signatures made over the bare `from` JID (default on).
    pub accept_bare_jid_signatures: bool,
    /// Accept the PLAINTEXT method (default on).
    pub allow_plaintext: bool,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            window_secs: DEFAULT_WINDOW_SECS,
            accept_bare_jid_signatures: true,
            allow_plaintext: true,
        }
    }
}

/// Which token an HTTP request must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// None: a temporary credential request (RFC 5849 §2.1), signed with the consumer's
    /// credentials only.
    None,
    /// Temporary credentials: the token request (RFC 5849 §2.3).
    Temporary,
    /// Token credentials: access to a protected resource.
    Access,
}

/// How the signature was made, as the verifier found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedOver {
    /// A stanza base string with the full `from` JID.
    FullJid,
    /// A stanza base string with the bare `from` JID (accepted by configuration).
    BareJid,
    /// An HTTP base string.
    Http,
}

/// The token of a verified request.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The token value.
    pub token: String,
    /// Temporary or access.
    pub kind: TokenKind,
    /// Its owner, if granted.
    pub owner: Option<String>,
    /// The nodes it covers.
    pub scope: Scope,
    /// Its expiry, if any.
    pub expires_at: Option<u64>,
}

/// Proof that a request passed checks 1–6 of the profile. Only [`Verifier`] can build one:
/// code that grants access takes this type, not raw parameters.
#[derive(Debug, Clone)]
pub struct Verified {
    consumer_key: String,
    token: Option<VerifiedToken>,
    signed_over: SignedOver,
    timestamp: u64,
    callback: Option<String>,
    verifier: Option<String>,
}

impl Verified {
    /// The consumer that signed the request.
    pub fn consumer_key(&self) -> &str {
        &self.consumer_key
    }

    /// The token the request carried, if any.
    pub fn token(&self) -> Option<&VerifiedToken> {
        self.token.as_ref()
    }

    /// The owner who granted the token, if any.
    pub fn owner(&self) -> Option<&str> {
        self.token.as_ref().and_then(|t| t.owner.as_deref())
    }

    /// What the signature was computed over.
    pub fn signed_over(&self) -> SignedOver {
        self.signed_over
    }

    /// The request's timestamp.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// `oauth_callback` of an HTTP request.
    pub fn callback(&self) -> Option<&str> {
        self.callback.as_deref()
    }

    /// `oauth_verifier` of an HTTP request.
    pub fn verifier(&self) -> Option<&str> {
        self.verifier.as_deref()
    }

    /// Check 7 of the profile: the token is an access token, its owner is `node_owner`, and
    /// `node` is inside its scope. Otherwise [`VerifyError::OutOfScope`] (`forbidden`).
    pub fn authorize_node(&self, node: &str, node_owner: &str) -> Result<(), VerifyError> {
        let Some(token) = self.token.as_ref().filter(|t| t.kind == TokenKind::Access) else {
            return Err(VerifyError::OutOfScope(format!(
                "the request carries no access token for node {node:?}"
            )));
        };
        if token.owner.as_deref() != Some(node_owner) {
            return Err(VerifyError::OutOfScope(format!(
                "node {node:?} belongs to {node_owner:?}, and the token was granted by {:?}",
                token.owner.as_deref().unwrap_or("nobody")
            )));
        }
        if !token.scope.permits(node) {
            return Err(VerifyError::OutOfScope(format!(
                "node {node:?} is outside the token's scope ({})",
                token.scope
            )));
        }
        Ok(())
    }
}

/// Verifies signed requests against a credential store, a nonce store and a clock.
/// Sans-IO: the three come in through traits.
#[derive(Debug, Clone)]
pub struct Verifier<S, N, C> {
    config: VerifierConfig,
    credentials: S,
    nonces: N,
    clock: C,
}

impl<S: CredentialStore, N: NonceStore, C: Clock> Verifier<S, N, C> {
    /// A verifier with the default settings.
    pub fn new(credentials: S, nonces: N, clock: C) -> Self {
        Self::with_config(VerifierConfig::default(), credentials, nonces, clock)
    }

    /// A verifier with `config`.
    pub fn with_config(config: VerifierConfig, credentials: S, nonces: N, clock: C) -> Self {
        Self {
            config,
            credentials,
            nonces,
            clock,
        }
    }

    /// The settings.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// The credential store.
    pub fn credentials(&self) -> &S {
        &self.credentials
    }

    /// Verifies a stanza: finds its `<oauth/>` (none is [`VerifyError::TokenRequired`]) and
    /// checks it as [`Verifier::verify_stanza_request`] does. The stanza is any tree
    /// ([`ElementView`]): a minidom `&Element`, or a compact stanza of the guard's reader.
    pub fn verify_stanza<'a>(&self, stanza: impl ElementView<'a>) -> Result<Verified, VerifyError> {
        match StanzaRequest::from_stanza(stanza)? {
            Some(request) => self.verify_stanza_request(&request),
            None => Err(VerifyError::TokenRequired),
        }
    }

    /// Verifies a parsed stanza request: checks 2–6 (the parse was check 1). The signature
    /// is tried over the full `from` JID, then the bare one if the settings allow.
    pub fn verify_stanza_request(&self, request: &StanzaRequest) -> Result<Verified, VerifyError> {
        let full = request.base_string();
        // The bare-JID base string is built only if the full one does not match.
        let bare = || request.bare_jid_base_string();
        let alternate = (self.config.accept_bare_jid_signatures
            && crate::base_string::bare_jid(&request.from) != request.from)
            .then_some(&bare as &dyn Fn() -> String);
        let (verified, index) = self.check(
            &request.params,
            TokenUse::Access,
            &full,
            alternate,
            Form::Stanza,
        )?;
        Ok(Verified {
            signed_over: if index == 0 {
                SignedOver::FullJid
            } else {
                SignedOver::BareJid
            },
            ..verified
        })
    }

    /// Verifies an HTTP request that must carry the token kind `token_use`.
    pub fn verify_http(
        &self,
        request: &HttpRequest<'_>,
        token_use: TokenUse,
    ) -> Result<Verified, VerifyError> {
        self.verify_collected(request, &request.collect()?, token_use)
    }

    /// [`Verifier::verify_http`] for a request whose parameters the caller has already
    /// collected (to read its own parameters, such as `scope`, without collecting twice).
    pub fn verify_collected(
        &self,
        request: &HttpRequest<'_>,
        collected: &CollectedRequest,
        token_use: TokenUse,
    ) -> Result<Verified, VerifyError> {
        let base = request.base_string(collected)?;
        self.check(&collected.params, token_use, &base, None, Form::Http)
            .map(|(verified, _)| verified)
    }

    /// Checks 2–6 of the profile, in order. The signature is tried over `base_string`, then
    /// over what `alternate` builds, if given. Returns the proof and the index of the base
    /// string that matched (0 or 1).
    fn check(
        &self,
        params: &OAuthParams,
        token_use: TokenUse,
        base_string: &str,
        alternate: Option<&dyn Fn() -> String>,
        form: Form,
    ) -> Result<(Verified, usize), VerifyError> {
        if params.signature_method == SignatureMethod::Plaintext && !self.config.allow_plaintext {
            return Err(StructureError::PlaintextDisabled.into());
        }
        // 2. The consumer.
        let consumer = check_consumer(&self.credentials, &params.consumer_key)?;
        let now = self.clock.now();
        // 3. The token.
        let token_value = params.token.as_deref().filter(|t| !t.is_empty());
        let (token, token_secret) = match (token_use, token_value) {
            (TokenUse::None, None) => (None, Secret::default()),
            (TokenUse::None, Some(_)) => {
                return Err(VerifyError::WrongTokenKind {
                    expected: "no token",
                    found: "a token",
                });
            }
            (_, None) => return Err(StructureError::MissingParameter("oauth_token").into()),
            (expected, Some(value)) => {
                let record = check_token(&self.credentials, value, now)?;
                let expected_kind = match expected {
                    TokenUse::Temporary => TokenKind::Temporary,
                    _ => TokenKind::Access,
                };
                if record.kind != expected_kind {
                    return Err(VerifyError::WrongTokenKind {
                        expected: expected_kind.describe(),
                        found: record.kind.describe(),
                    });
                }
                if record.consumer_key != params.consumer_key {
                    return Err(VerifyError::TokenOfOtherConsumer);
                }
                let TokenRecord {
                    secret,
                    kind,
                    owner,
                    scope,
                    expires_at,
                    ..
                } = record;
                let token = VerifiedToken {
                    token: value.to_owned(),
                    kind,
                    owner,
                    scope,
                    expires_at,
                };
                (Some(token), secret)
            }
        };
        // 4. The timestamp window.
        let timestamp = params.timestamp_secs();
        if timestamp.abs_diff(now) > self.config.window_secs {
            return Err(VerifyError::TimestampOutOfWindow {
                timestamp,
                now,
                window: self.config.window_secs,
            });
        }
        // 5. The signature.
        let checker = signature::Checker::new(
            params.signature_method,
            &params.signature,
            form,
            &consumer.secret,
            &token_secret,
        );
        let index = if checker.matches(base_string) {
            0
        } else if params.signature_method == SignatureMethod::HmacSha1
            && alternate.is_some_and(|build| checker.matches(&build()))
        {
            1
        } else {
            return Err(VerifyError::InvalidSignature {
                method: params.signature_method,
                bare_jid_tried: alternate.is_some(),
            });
        };
        // 6. The nonce, recorded only now that the signature is known to be good.
        let key = NonceKey {
            consumer_key: &params.consumer_key,
            token: token_value.unwrap_or(""),
            timestamp,
            nonce: &params.nonce,
        };
        let expires_at = timestamp.saturating_add(self.config.window_secs);
        match self.nonces.check_and_record(&key, expires_at, now)? {
            NonceOutcome::Fresh => {}
            NonceOutcome::Replayed => {
                return Err(VerifyError::NonceUsed(crate::params::clip(&params.nonce)));
            }
            NonceOutcome::Full => return Err(VerifyError::NonceStoreFull),
        }
        let verified = Verified {
            consumer_key: params.consumer_key.clone(),
            token,
            signed_over: SignedOver::Http,
            timestamp,
            callback: params.callback.clone(),
            verifier: params.verifier.clone(),
        };
        Ok((verified, index))
    }
}
