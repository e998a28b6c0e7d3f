//! The errors of this crate, and the one place that maps each to the wire: an XEP-0235
//! stanza error and an HTTP answer (RFC 5849 §3.2 with the Problem Reporting extension).

use std::fmt;

use minidom::Element;
use minidom::rxml::{Namespace, NcName};

use crate::encode::DecodeError;
use crate::ns;
use crate::params::SignatureMethod;
use crate::uri::UriError;

/// A request whose OAuth parameters are not well-formed (check 1 of the profile). Each maps
/// to `bad-request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StructureError {
    /// The element is not `<oauth/>` in `urn:xmpp:oauth:0` or an alias ("not mine").
    #[error("the element is not <oauth xmlns='urn:xmpp:oauth:0'/>")]
    NotOAuth,
    /// A parameter (or the `<oauth/>` element) appears twice.
    #[error("the parameter {0} appears more than once")]
    DuplicatedParameter(String),
    /// A required parameter is absent.
    #[error("the required parameter {0} is missing")]
    MissingParameter(&'static str),
    /// An unknown `oauth_*` parameter, one not allowed in this form, a child in another
    /// namespace, or a child with children of its own.
    #[error("the parameter {0} is not supported")]
    UnsupportedParameter(String),
    /// `oauth_version` other than `1.0`.
    #[error("oauth_version {0:?} is not supported; only 1.0 is")]
    UnsupportedVersion(String),
    /// An unknown signature method.
    #[error("the signature method {0:?} is not supported; use HMAC-SHA1 or PLAINTEXT")]
    UnsupportedSignatureMethod(String),
    /// PLAINTEXT is switched off in this deployment.
    #[error("the signature method PLAINTEXT is switched off on this server; use HMAC-SHA1")]
    PlaintextDisabled,
    /// `oauth_timestamp` is not a positive whole number of seconds.
    #[error("oauth_timestamp {0:?} is not a positive whole number of seconds since 1970")]
    InvalidTimestamp(String),
    /// A parameter value longer than [`crate::params::MAX_PARAMETER_LEN`].
    #[error("the parameter {0} is longer than {max} bytes", max = crate::params::MAX_PARAMETER_LEN)]
    ParameterTooLong(&'static str),
    /// Text other than white space directly inside `<oauth/>`.
    #[error("<oauth/> holds text outside its parameter elements")]
    UnexpectedText,
    /// The stanza lacks the `from` or `to` address the base string needs.
    #[error("the stanza has no '{0}' address to sign")]
    MissingAddress(&'static str),
    /// The `Authorization: OAuth` header cannot be parsed.
    #[error("the Authorization header is malformed: {0}")]
    MalformedAuthorizationHeader(&'static str),
    /// A parameter does not decode to UTF-8.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The request URI cannot give a base string URI.
    #[error(transparent)]
    Uri(#[from] UriError),
}

/// A failure of the credential or nonce store behind the traits (a database error, say).
/// Its message is for logs: the wire only says the store failed.
#[derive(Debug, thiserror::Error)]
#[error("credential store: {0}")]
pub struct StoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl StoreError {
    /// Wraps any error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

/// Why a request was refused, in the profile's order of checks.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A protected node was addressed without `<oauth/>`.
    #[error(
        "this node is protected: the request must carry an <oauth xmlns='urn:xmpp:oauth:0'/> element with an access token"
    )]
    TokenRequired,
    /// Check 1: the parameters are not well-formed.
    #[error(transparent)]
    Structure(#[from] StructureError),
    /// Check 2: the consumer key is not known.
    #[error("consumer key {0:?} is not known here")]
    UnknownConsumer(String),
    /// Check 2: the consumer was revoked.
    #[error("consumer key {0:?} has been revoked")]
    ConsumerRevoked(String),
    /// Check 3: the token is not known.
    #[error("the token is not known here")]
    UnknownToken,
    /// Check 3: the token was revoked.
    #[error("the token has been revoked")]
    TokenRevoked,
    /// Check 3: temporary credentials were already exchanged for an access token.
    #[error("the temporary token was already exchanged for an access token")]
    TokenUsed,
    /// Check 3: the token expired at this time (seconds since 1970).
    #[error("the token expired at {0} (seconds since 1970)")]
    TokenExpired(u64),
    /// Check 3: the token is of the wrong kind for this request.
    #[error("the token is {found}, but this request needs {expected}")]
    WrongTokenKind {
        /// What the request needed.
        expected: &'static str,
        /// What the token is.
        found: &'static str,
    },
    /// Check 3: the token was issued to another consumer.
    #[error("the token was issued to another consumer")]
    TokenOfOtherConsumer,
    /// Check 4: the timestamp is outside the window.
    #[error("{}", timestamp_text(*.timestamp, *.now, *.window))]
    TimestampOutOfWindow {
        /// The request's timestamp.
        timestamp: u64,
        /// The server's clock.
        now: u64,
        /// The window, in seconds either way.
        window: u64,
    },
    /// Check 5: the signature does not verify.
    #[error("the {method} signature does not match: {}", signature_hint(*.method, *.bare_jid_tried))]
    InvalidSignature {
        /// The method named in the request.
        method: SignatureMethod,
        /// Whether the bare-JID base string was tried too.
        bare_jid_tried: bool,
    },
    /// Check 6: the nonce was already used with this consumer, token and timestamp.
    #[error("nonce {0:?} was already used with this consumer, token and timestamp")]
    NonceUsed(String),
    /// Check 6: the nonce store is full; the request is refused rather than risk a replay.
    #[error("too many requests in the replay window; try again later")]
    NonceStoreFull,
    /// Check 7: the token does not cover this node.
    #[error("{0}")]
    OutOfScope(String),
    /// A store behind the traits failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

fn timestamp_text(timestamp: u64, now: u64, window: u64) -> String {
    let (diff, side) = if timestamp < now {
        (now - timestamp, "behind")
    } else {
        (timestamp - now, "ahead of")
    };
    let mut text = format!(
        "timestamp {timestamp} is {diff} s {side} this server's clock; the window is ±{window} s"
    );
    if timestamp > now.saturating_mul(100) && now > 0 {
        text.push_str("; it looks like milliseconds: send seconds since 1970");
    }
    text
}

fn signature_hint(method: SignatureMethod, bare_jid_tried: bool) -> &'static str {
    match (method, bare_jid_tried) {
        (SignatureMethod::Plaintext, _) => {
            "it must be the encoded consumer secret, '&', and the encoded token secret"
        }
        (SignatureMethod::HmacSha1, true) => {
            "checked over qname&enc(from&to)&enc(parameters) with the full and the bare from JID, keyed with the consumer and token secrets"
        }
        (SignatureMethod::HmacSha1, false) => {
            "checked over the signature base string, keyed with the consumer and token secrets"
        }
    }
}

/// The `type` of a stanza error (RFC 6120 §8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// Retry after changing the data sent.
    Modify,
    /// Retry after providing credentials.
    Auth,
    /// Do not retry.
    Cancel,
    /// Retry after waiting.
    Wait,
}

impl ErrorType {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Modify => "modify",
            Self::Auth => "auth",
            Self::Cancel => "cancel",
            Self::Wait => "wait",
        }
    }
}

/// A stanza error as XEP-0235 wants it: generic condition, type, application condition in
/// `urn:xmpp:oauth:0:errors`, and an English text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    /// The error `type`.
    pub error_type: ErrorType,
    /// The RFC 6120 defined condition (`bad-request`, `not-authorized`…).
    pub condition: &'static str,
    /// The XEP-0235 application condition, if any (`invalid-signature`…).
    pub app_condition: Option<&'static str>,
    /// What failed, in plain English; never a secret.
    pub text: String,
}

impl StanzaError {
    /// The `<error/>` element, in `namespace` (the stanza's: `jabber:client` or
    /// `jabber:component:accept`). Children: condition, text, application condition.
    pub fn to_element(&self, namespace: &str) -> Element {
        error_element(
            namespace,
            self.error_type,
            self.condition,
            &self.text,
            self.app_condition
                .map(|app| Element::bare(app, ns::OAUTH_ERRORS)),
        )
    }
}

/// An RFC 6120 §8.3 `<error/>` element in `namespace` (the stanza's): `type`, the defined
/// `condition`, `<text xml:lang='en'>`, then the application condition `app` if any. Every
/// stanza error this workspace writes is built here.
pub fn error_element(
    namespace: &str,
    error_type: ErrorType,
    condition: &str,
    text: &str,
    app: Option<Element>,
) -> Element {
    let mut text_element = Element::builder("text", ns::STANZAS).append(text).build();
    text_element.set_attr(Namespace::XML, ncname("lang"), "en");
    let mut error = Element::builder("error", namespace)
        .attr(ncname("type"), error_type.as_str())
        .append(Element::bare(condition, ns::STANZAS))
        .append(text_element)
        .build();
    if let Some(app) = app {
        error.append_child(app);
    }
    error
}

/// An XML name known to be valid.
fn ncname(name: &'static str) -> NcName {
    NcName::try_from(name).expect("a valid XML name")
}

/// An HTTP answer for a refused request (RFC 5849 §3.2; Problem Reporting extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProblem {
    /// 400, 401, 403, 500 or 503.
    pub status: u16,
    /// The `WWW-Authenticate` header value: `OAuth realm="…", oauth_problem="…"` and the
    /// extension's extra parameters.
    pub www_authenticate: String,
    /// The `oauth_problem` value, when the extension has one for this failure.
    pub problem: Option<&'static str>,
    /// A form-encoded body: the same parameters and `oauth_problem_advice` (plain words).
    pub body: String,
}

impl fmt::Display for HttpProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

impl VerifyError {
    /// The XEP-0235 stanza error for this failure.
    pub fn stanza_error(&self) -> StanzaError {
        use StructureError as S;
        let (error_type, condition, app_condition) = match self {
            Self::TokenRequired => (ErrorType::Auth, "not-authorized", Some("token-required")),
            Self::Structure(s) => {
                let app = match s {
                    S::DuplicatedParameter(_) => Some("duplicated-parameter"),
                    S::MissingParameter(_) => Some("missing-parameter"),
                    S::UnsupportedParameter(_)
                    | S::UnsupportedVersion(_)
                    | S::InvalidTimestamp(_)
                    | S::ParameterTooLong(_)
                    | S::UnexpectedText
                    | S::NotOAuth => Some("unsupported-parameter"),
                    S::UnsupportedSignatureMethod(_) | S::PlaintextDisabled => {
                        Some("unsupported-signature-method")
                    }
                    S::MissingAddress(_)
                    | S::MalformedAuthorizationHeader(_)
                    | S::Decode(_)
                    | S::Uri(_) => None,
                };
                (ErrorType::Modify, "bad-request", app)
            }
            Self::UnknownConsumer(_) | Self::ConsumerRevoked(_) => (
                ErrorType::Auth,
                "not-authorized",
                Some("invalid-consumer-key"),
            ),
            Self::UnknownToken
            | Self::TokenRevoked
            | Self::TokenUsed
            | Self::TokenExpired(_)
            | Self::WrongTokenKind { .. }
            | Self::TokenOfOtherConsumer => {
                (ErrorType::Auth, "not-authorized", Some("invalid-token"))
            }
            Self::TimestampOutOfWindow { .. } | Self::NonceUsed(_) => {
                (ErrorType::Auth, "not-authorized", Some("invalid-nonce"))
            }
            Self::InvalidSignature { .. } => {
                (ErrorType::Auth, "not-authorized", Some("invalid-signature"))
            }
            Self::OutOfScope(_) => (ErrorType::Auth, "forbidden", None),
            Self::NonceStoreFull => (ErrorType::Wait, "resource-constraint", None),
            Self::Store(_) => (ErrorType::Wait, "internal-server-error", None),
        };
        StanzaError {
            error_type,
            condition,
            app_condition,
            text: self.public_text(),
        }
    }

    /// The text shown to the client: the error's message, except for store failures, whose
    /// details stay in the logs.
    fn public_text(&self) -> String {
        match self {
            Self::Store(_) => "the credential store failed; try again later".to_owned(),
            other => other.to_string(),
        }
    }

    /// The HTTP answer for this failure, with `realm` in `WWW-Authenticate`.
    pub fn http_problem(&self, realm: &str) -> HttpProblem {
        use StructureError as S;
        let mut extra: Vec<(&str, String)> = Vec::new();
        let (status, problem) = match self {
            Self::TokenRequired => {
                extra.push(("oauth_parameters_absent", "oauth_token".into()));
                (401, Some("parameter_absent"))
            }
            Self::Structure(s) => match s {
                S::MissingParameter(name) => {
                    extra.push(("oauth_parameters_absent", (*name).into()));
                    (400, Some("parameter_absent"))
                }
                S::DuplicatedParameter(name) | S::UnsupportedParameter(name) => {
                    extra.push(("oauth_parameters_rejected", name.clone()));
                    (400, Some("parameter_rejected"))
                }
                S::InvalidTimestamp(_) => {
                    extra.push(("oauth_parameters_rejected", "oauth_timestamp".into()));
                    (400, Some("parameter_rejected"))
                }
                S::ParameterTooLong(name) => {
                    extra.push(("oauth_parameters_rejected", (*name).into()));
                    (400, Some("parameter_rejected"))
                }
                S::UnsupportedVersion(_) => {
                    extra.push(("oauth_acceptable_versions", "1.0-1.0".into()));
                    (400, Some("version_rejected"))
                }
                S::UnsupportedSignatureMethod(_) | S::PlaintextDisabled => {
                    (400, Some("signature_method_rejected"))
                }
                S::NotOAuth
                | S::UnexpectedText
                | S::MissingAddress(_)
                | S::MalformedAuthorizationHeader(_)
                | S::Decode(_)
                | S::Uri(_) => (400, Some("parameter_rejected")),
            },
            Self::UnknownConsumer(_) => (401, Some("consumer_key_unknown")),
            Self::ConsumerRevoked(_) => (401, Some("consumer_key_rejected")),
            Self::UnknownToken | Self::WrongTokenKind { .. } | Self::TokenOfOtherConsumer => {
                (401, Some("token_rejected"))
            }
            Self::TokenRevoked => (401, Some("token_revoked")),
            Self::TokenUsed => (401, Some("token_used")),
            Self::TokenExpired(_) => (401, Some("token_expired")),
            Self::TimestampOutOfWindow { now, window, .. } => {
                extra.push((
                    "oauth_acceptable_timestamps",
                    format!(
                        "{}-{}",
                        now.saturating_sub(*window),
                        now.saturating_add(*window)
                    ),
                ));
                (401, Some("timestamp_refused"))
            }
            Self::NonceUsed(_) => (401, Some("nonce_used")),
            Self::InvalidSignature { .. } => (401, Some("signature_invalid")),
            Self::OutOfScope(_) => (403, Some("permission_denied")),
            Self::NonceStoreFull => (503, Some("consumer_key_refused")),
            Self::Store(_) => (500, None),
        };
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(problem) = problem {
            params.push(("oauth_problem", problem.to_owned()));
        }
        params.extend(extra);
        params.push(("oauth_problem_advice", self.public_text()));
        let pairs = || params.iter().map(|(n, v)| (*n, v.as_str()));
        let www_authenticate = crate::http::authorization_header(Some(realm), pairs());
        let body = crate::http::form_encode(pairs());
        HttpProblem {
            status,
            www_authenticate,
            problem,
            body,
        }
    }
}
