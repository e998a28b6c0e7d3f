//! The records the store hands out.

use oauth_xmpp::{Scope, Secret};

/// An owner (an account of the service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The account name, e.g. `alice`.
    pub name: String,
    /// When she was added (seconds since 1970).
    pub created_at: u64,
    /// How many access tokens she granted that are not revoked.
    pub live_tokens: u64,
}

/// A registered consumer application (the secret stays in the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// `oauth_consumer_key`.
    pub key: String,
    /// The name shown to owners.
    pub name: String,
    /// Its XMPP address, if registered.
    pub jid: Option<String>,
    /// Its registered callback, if any.
    pub callback: Option<String>,
    /// When it was registered.
    pub created_at: u64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<u64>,
}

/// Where temporary credentials are in the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemporaryState {
    /// Issued, waiting for the owner.
    Pending,
    /// The owner approved; the verifier is out.
    Approved,
    /// The owner denied.
    Denied,
    /// Exchanged for an access token.
    Used,
}

impl TemporaryState {
    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "used" => Self::Used,
            _ => Self::Denied,
        }
    }
}

/// Temporary credentials as the authorize page needs them (the secret stays in the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporaryToken {
    /// The token.
    pub token: String,
    /// The consumer that asked.
    pub consumer_key: String,
    /// Its name, shown to the owner.
    pub consumer_name: String,
    /// Where to send the owner back (`oob`: show the verifier).
    pub callback: String,
    /// The nodes asked for (after approval: granted).
    pub scope: Scope,
    /// Where it is in the flow.
    pub state: TemporaryState,
    /// When it stops being usable.
    pub expires_at: u64,
    /// The owner who answered, once approved.
    pub owner: Option<String>,
}

/// A newly issued access token, with its secret (shown once).
#[derive(Debug)]
pub struct Grant {
    /// Its id in the store (for `token revoke --id`).
    pub id: i64,
    /// `oauth_token`.
    pub token: String,
    /// The token secret.
    pub secret: Secret,
    /// The consumer it is for.
    pub consumer_key: String,
    /// The owner who granted it.
    pub owner: String,
    /// The nodes it covers.
    pub scope: Scope,
}

/// An access token as listed (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// Its id in the store.
    pub id: i64,
    /// `oauth_token`.
    pub token: String,
    /// The consumer it was issued to.
    pub consumer_key: String,
    /// That consumer's name.
    pub consumer_name: String,
    /// The owner who granted it.
    pub owner: String,
    /// The nodes it covers.
    pub scope: Scope,
    /// When it was issued.
    pub created_at: u64,
    /// When it expires, if ever.
    pub expires_at: Option<u64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<u64>,
}

/// Which access tokens to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeBy {
    /// One token, by id.
    Id(i64),
    /// One token, by value.
    Token(String),
    /// Every token of an owner.
    Owner(String),
    /// Every token of a consumer.
    Consumer(String),
    /// One token by id, only if it is this owner's (the owner's own page).
    OwnerAndId(String, i64),
}

/// What a change-log entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// An access token was issued.
    Granted,
    /// An access token was revoked.
    TokenRevoked,
    /// An access token expired.
    TokenExpired,
    /// A consumer was revoked (its tokens get their own `TokenRevoked` entries).
    ConsumerRevoked,
    /// An admin ended the subscriptions of a node, a consumer and/or an owner (the entry's
    /// `node`, `consumer_key` and `owner`, each a filter when set): the guard that holds
    /// them ends them and tells each subscriber.
    SubscriptionsEnded,
}

impl ChangeKind {
    /// The word stored in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::TokenRevoked => "token-revoked",
            Self::TokenExpired => "token-expired",
            Self::ConsumerRevoked => "consumer-revoked",
            Self::SubscriptionsEnded => "subscriptions-ended",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "granted" => Self::Granted,
            "token-expired" => Self::TokenExpired,
            "consumer-revoked" => Self::ConsumerRevoked,
            "subscriptions-ended" => Self::SubscriptionsEnded,
            _ => Self::TokenRevoked,
        }
    }

    /// Whether subscriptions made with the token (or consumer) must end.
    pub fn ends_access(self) -> bool {
        !matches!(self, Self::Granted)
    }
}

/// One entry of the append-only change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Monotonic sequence number.
    pub seq: i64,
    /// When (seconds since 1970).
    pub at: u64,
    /// What happened.
    pub kind: ChangeKind,
    /// The access token's id, for token changes.
    pub token_id: Option<i64>,
    /// The access token, for token changes.
    pub token: Option<String>,
    /// The consumer concerned.
    pub consumer_key: Option<String>,
    /// The owner concerned, for token changes.
    pub owner: Option<String>,
    /// When it was logged, in milliseconds since 1970 (entries logged before schema 5 have
    /// none).
    pub at_ms: Option<u64>,
    /// The node concerned, for [`ChangeKind::SubscriptionsEnded`].
    pub node: Option<String>,
}

/// Where one access token lived in the change log ([`crate::Store::grant_spans`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSpan {
    /// The nodes the token covers.
    pub scope: Scope,
    /// The sequence number of its `granted` entry.
    pub granted_seq: i64,
    /// The sequence number of the entry that ended it (revoked or expired), if any.
    pub ended_seq: Option<i64>,
    /// When it expires (or expired), if ever: an expiry not yet logged still ends it.
    pub expires_at: Option<u64>,
}

/// A signed-in owner's session on the web pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The cookie value.
    pub id: String,
    /// Who is signed in.
    pub owner: String,
    /// The token every form of this session must carry.
    pub csrf: String,
    /// The failed sign-ins for this owner between her previous sign-in and this one.
    pub failed_before: FailedSignIns,
}

/// Failed sign-ins for one owner's name since she last signed in, told to her when she
/// next does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailedSignIns {
    /// How many attempts failed.
    pub count: u64,
    /// When the last one was (seconds since 1970).
    pub last_at: Option<u64>,
    /// How many of them locked the name out.
    pub lockouts: u64,
}
