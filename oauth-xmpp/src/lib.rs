//! # oauth-xmpp
//!
//! Verify and sign OAuth 1.0 requests carried over XMPP as XEP-0235
//! `<oauth xmlns='urn:xmpp:oauth:0'/>` elements, and over HTTP as RFC 5849 requests, with
//! replay protection.
//!
//! What it does:
//! - parses and writes the `<oauth/>` element with the project profile's rules ([`element`]);
//! - builds signature base strings, the stanza form of XEP-0235 and the HTTP form of
//!   RFC 5849 §3.4.1 ([`base_string`], [`params`], [`uri`], [`http`]);
//! - signs and checks HMAC-SHA1 and PLAINTEXT in constant time ([`signature`]);
//! - checks the timestamp window and records nonces only after a valid signature
//!   ([`replay`]);
//! - runs the profile's checks in order and returns a [`Verified`] proof, or a
//!   [`VerifyError`] that maps to an XEP-0235 stanza error and to an HTTP answer ([`error`]);
//! - signs on the consumer side ([`sign`]).
//!
//! What it does not do: any I/O. The clock ([`Clock`]), the nonce store ([`NonceStore`]) and
//! the credential lookup ([`CredentialStore`]) come in through traits; in-memory versions are
//! included.
//!
//! ```
//! use oauth_xmpp::{FixedClock, MemoryCredentials, MemoryNonceStore, Scope, Verifier, VerifyError};
//!
//! // The subscribe request of XEP-0235 v0.7, §"Access Request Format".
//! let stanza: minidom::Element = r#"<iq xmlns='jabber:client' from='travelbot@findmenow.tld/bot'
//!     id='sub1' to='feeds.worldgps.tld' type='set'>
//!   <pubsub xmlns='http://jabber.org/protocol/pubsub'>
//!     <subscribe jid='travelbot@findmenow.tld' node='bard_geoloc'/>
//!     <oauth xmlns='urn:xmpp:oauth:0'>
//!       <oauth_consumer_key>0685bd9184jfhq22</oauth_consumer_key>
//!       <oauth_nonce>4572616e48616d6d65724c61686176</oauth_nonce>
//!       <oauth_signature>9PQkM4YKgaM067wqrDGshXOwDW0=</oauth_signature>
//!       <oauth_signature_method>HMAC-SHA1</oauth_signature_method>
//!       <oauth_timestamp>1218137833</oauth_timestamp>
//!       <oauth_token>ad180jjd733klru7</oauth_token>
//!       <oauth_version>1.0</oauth_version>
//!     </oauth>
//!   </pubsub>
//! </iq>"#.parse().unwrap();
//!
//! let mut store = MemoryCredentials::default();
//! store.add_consumer("0685bd9184jfhq22", "consumersecret");
//! store.add_access_token("ad180jjd733klru7", "tokensecret", "0685bd9184jfhq22",
//!     "world-traveler", Scope::parse("bard_geoloc"));
//! let nonces = MemoryNonceStore::default();
//! let verifier = Verifier::new(&store, &nonces, FixedClock(1218137833));
//!
//! let proof = verifier.verify_stanza(&stanza).unwrap();
//! assert_eq!(proof.owner(), Some("world-traveler"));
//! proof.authorize_node("bard_geoloc", "world-traveler").unwrap();
//!
//! // The same stanza again is a replay.
//! let replay = verifier.verify_stanza(&stanza).unwrap_err();
//! assert!(matches!(replay, VerifyError::NonceUsed(_)));
//! assert_eq!(replay.stanza_error().app_condition, Some("invalid-nonce"));
//! ```

pub mod base_string;
pub mod credentials;
pub mod element;
pub mod encode;
pub mod error;
pub mod http;
pub mod ns;
pub mod params;
pub mod replay;
pub mod secret;
pub mod sign;
pub mod signature;
pub mod uri;
pub mod verify;

pub use credentials::{
    ConsumerRecord, CredentialStore, MemoryCredentials, Scope, TokenKind, TokenRecord,
};
pub use element::StanzaRequest;
pub use error::{
    ErrorType, HttpProblem, StanzaError, StoreError, StructureError, VerifyError, error_element,
};
pub use http::HttpRequest;
pub use params::{OAuthParams, SignatureMethod};
pub use replay::{
    Clock, FixedClock, MemoryNonceStore, NonceKey, NonceOutcome, NonceStore, SystemClock,
};
pub use secret::Secret;
pub use sign::{Credentials, NonceSource, Signer};
pub use verify::{SignedOver, TokenUse, Verified, VerifiedToken, Verifier, VerifierConfig};

/// Re-exported so users build and read stanzas with the same minidom version.
pub use minidom;

/// The examples of the repository's README, compiled and run as doctests so that they stay
/// true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
