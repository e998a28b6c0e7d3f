//! What the verifier needs to know about consumers and tokens, behind a trait so that any
//! store (SQLite, memory…) can answer.

use std::collections::HashMap;
use std::fmt;

use crate::error::StoreError;
use crate::secret::Secret;

/// A registered consumer (client) as the store knows it.
#[derive(Debug, Clone)]
pub struct ConsumerRecord {
    /// The consumer secret.
    pub secret: Secret,
    /// Whether the consumer was revoked.
    pub revoked: bool,
}

/// The two kinds of token of OAuth 1.0a (RFC 5849 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Temporary credentials (a "request token"): only good for the token request.
    Temporary,
    /// Token credentials (an "access token"): what a consumer presents over XMPP.
    Access,
}

impl TokenKind {
    /// In words, for error texts.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Temporary => "a temporary (request) token",
            Self::Access => "an access token",
        }
    }
}

/// The node names a token covers: exact names, or prefixes written with a trailing `/`
/// (`/photos/alice/` covers `/photos/alice/2024`), or `*` for every node of the owner.
/// Written as a space-separated list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    entries: Vec<String>,
}

impl Scope {
    /// Parses a space-separated list.
    ///
    /// ```
    /// let scope = oauth_xmpp::Scope::parse("/location/alice /photos/alice/");
    /// assert!(scope.permits("/location/alice"));
    /// assert!(!scope.permits("/location/alice2"));
    /// assert!(scope.permits("/photos/alice/2024"));
    /// assert!(!scope.permits("/photos/alice"));
    /// ```
    pub fn parse(text: &str) -> Self {
        Self {
            entries: text.split_whitespace().map(str::to_owned).collect(),
        }
    }

    /// A scope that covers every node of the owner.
    pub fn all() -> Self {
        Self::parse("*")
    }

    /// The entries.
    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// Whether `node` is inside this scope.
    pub fn permits(&self, node: &str) -> bool {
        self.entries.iter().any(|entry| {
            entry == "*"
                || entry == node
                || (entry.ends_with('/') && node.starts_with(entry.as_str()))
        })
    }

    /// Whether every node `other` permits is also permitted here (for narrowing a grant).
    pub fn covers(&self, other: &Scope) -> bool {
        other.entries.iter().all(|entry| {
            self.entries.iter().any(|mine| {
                mine == "*"
                    || mine == entry
                    || (mine.ends_with('/') && entry.starts_with(mine.as_str()) && entry != "*")
            })
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.entries.join(" "))
    }
}

/// A token as the store knows it.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// The token secret.
    pub secret: Secret,
    /// The consumer it was issued to.
    pub consumer_key: String,
    /// Temporary or access.
    pub kind: TokenKind,
    /// The owner who granted it (access tokens; a temporary token may have none yet).
    pub owner: Option<String>,
    /// The nodes it covers.
    pub scope: Scope,
    /// When it stops being valid (seconds since 1970), if ever.
    pub expires_at: Option<u64>,
    /// Whether it was revoked (or, for temporary credentials, denied by the owner).
    pub revoked: bool,
    /// Whether temporary credentials were already exchanged for an access token: they
    /// are good for one use (RFC 5849 §2.3).
    pub used: bool,
}

/// Looks up consumers and tokens for the verifier.
pub trait CredentialStore {
    /// The consumer with this key, if any.
    fn consumer(&self, consumer_key: &str) -> Result<Option<ConsumerRecord>, StoreError>;
    /// The token with this value, if any.
    fn token(&self, token: &str) -> Result<Option<TokenRecord>, StoreError>;
}

impl<S: CredentialStore + ?Sized> CredentialStore for &S {
    fn consumer(&self, consumer_key: &str) -> Result<Option<ConsumerRecord>, StoreError> {
        (**self).consumer(consumer_key)
    }
    fn token(&self, token: &str) -> Result<Option<TokenRecord>, StoreError> {
        (**self).token(token)
    }
}

/// A [`CredentialStore`] in memory: for tests, the CLI and small embedded uses.
#[derive(Debug, Default, Clone)]
pub struct MemoryCredentials {
    /// Consumers by key.
    pub consumers: HashMap<String, ConsumerRecord>,
    /// Tokens by value.
    pub tokens: HashMap<String, TokenRecord>,
}

impl MemoryCredentials {
    /// Adds a consumer.
    pub fn add_consumer(&mut self, key: impl Into<String>, secret: impl Into<Secret>) -> &mut Self {
        self.consumers.insert(
            key.into(),
            ConsumerRecord {
                secret: secret.into(),
                revoked: false,
            },
        );
        self
    }

    /// Adds an access token of `owner` for `consumer_key`, covering `scope`, without expiry.
    pub fn add_access_token(
        &mut self,
        token: impl Into<String>,
        secret: impl Into<Secret>,
        consumer_key: impl Into<String>,
        owner: impl Into<String>,
        scope: Scope,
    ) -> &mut Self {
        self.tokens.insert(
            token.into(),
            TokenRecord {
                secret: secret.into(),
                consumer_key: consumer_key.into(),
                kind: TokenKind::Access,
                owner: Some(owner.into()),
                scope,
                expires_at: None,
                revoked: false,
                used: false,
            },
        );
        self
    }
}

impl CredentialStore for MemoryCredentials {
    fn consumer(&self, consumer_key: &str) -> Result<Option<ConsumerRecord>, StoreError> {
        Ok(self.consumers.get(consumer_key).cloned())
    }
    fn token(&self, token: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.tokens.get(token).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_covers_everything_and_prefix_covers_below() {
        assert!(Scope::all().permits("/anything"));
        assert!(Scope::parse("/a/").covers(&Scope::parse("/a/b /a/c/")));
        assert!(!Scope::parse("/a/").covers(&Scope::parse("/b")));
        assert!(!Scope::parse("/a/").covers(&Scope::all()));
        assert!(Scope::all().covers(&Scope::parse("/x")));
    }

    #[test]
    fn empty_scope_permits_nothing() {
        assert!(!Scope::parse("").permits("/location/alice"));
    }
}
