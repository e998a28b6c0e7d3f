//! The token store: owners, consumers, temporary credentials, access tokens, the nonces of
//! the replay check, owner sessions and an append-only change log, in one SQLite file (WAL,
//! `busy_timeout`, mode 0600) or one PostgreSQL database (see [`crate::db::Location`]).
//!
//! The authorization server writes it; the pubsub guard opens the same database, looks up
//! credentials through [`oauth_xmpp::CredentialStore`], records nonces through
//! [`oauth_xmpp::replay::NonceStore`] and follows [`Store::changes_since`]. Every write runs
//! as the database's only writer ([`crate::db::Database::write`]) and every read on one
//! snapshot, so several processes on one database are safe.

pub mod ledger;
mod model;
mod oauth;
mod schema;
mod signin;

use std::path::PathBuf;

use oauth_xmpp::{Scope, Secret};

pub use model::{
    AccessToken, Change, ChangeKind, Consumer, FailedSignIns, Grant, GrantSpan, Owner, RevokeBy,
    Session, TemporaryState, TemporaryToken,
};
pub use signin::{Attempt, Throttled, ThrottledBy};

use crate::args;
use crate::backend::BackendError;
use crate::db::{Database, Listener, Location, Row, Tx, Value};
use crate::random;
use ledger::{EntryKind, NewEntry};

/// What can go wrong with the store, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, a lock held past the busy timeout, a lost connection,
    /// corruption…).
    #[error("database: {0}")]
    Backend(#[from] crate::backend::BackendError),
    /// Creating or opening the SQLite file failed.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database was written by a newer version of this program.
    #[error("the database is at schema version {found}; this program knows up to {known}")]
    TooNew {
        /// The database's version.
        found: i64,
        /// This program's newest.
        known: i64,
    },
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Something to create exists already.
    #[error("{0}")]
    Exists(String),
    /// A request the current state does not allow (e.g. a used temporary token).
    #[error("{0}")]
    Refused(String),
    /// Temporary credentials that cannot be exchanged for an access token.
    #[error(transparent)]
    Exchange(#[from] ExchangeRefused),
    /// The OS random generator failed.
    #[error("the OS random generator failed: {0}")]
    Random(String),
    /// Hashing a password failed.
    #[error("password hashing failed: {0}")]
    Password(String),
}

/// Why temporary credentials cannot be exchanged for an access token (RFC 5849 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeRefused {
    /// The owner has not answered yet.
    #[error("the owner has not approved the temporary token yet")]
    NotApproved,
    /// The owner denied access.
    #[error("the owner denied access")]
    Denied,
    /// They were exchanged already: one use only.
    #[error("the temporary token was already exchanged for an access token")]
    Used,
    /// They expired.
    #[error("the temporary token has expired")]
    Expired,
    /// The verifier is not the one the owner was given.
    #[error("oauth_verifier does not match")]
    WrongVerifier,
}

impl ExchangeRefused {
    /// The `oauth_problem` of the Problem Reporting extension (`verifier_invalid` is ours:
    /// the extension has none for a wrong verifier).
    pub fn oauth_problem(self) -> &'static str {
        match self {
            Self::NotApproved => "permission_unknown",
            Self::Denied => "permission_denied",
            Self::Used => "token_used",
            Self::Expired => "token_expired",
            Self::WrongVerifier => "verifier_invalid",
        }
    }
}

/// A `Result` of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An open store. Cheap to share behind an `Arc`; calls are serialized on one connection.
pub struct Store {
    db: std::sync::Arc<Database>,
    /// The second in which expired nonces were last deleted (at most once a second).
    nonces_purged_at: std::sync::atomic::AtomicU64,
    /// When stale sign-in counters were last deleted.
    throttle_purged_at: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", self.db.location())
            .finish()
    }
}

/// Seconds since 1970, from the system clock.
pub fn now() -> u64 {
    oauth_xmpp::replay::Clock::now(&oauth_xmpp::replay::SystemClock)
}

/// Milliseconds since 1970, from the system clock (the change log's and the ledger's times:
/// the guard measures latencies against them, so they are never a test's pinned clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens the store at `location` (a SQLite file is created, mode 0600, if missing) and
    /// runs the pending migrations, as the only writer (two processes starting at once take
    /// turns).
    pub fn open(location: impl Into<Location>) -> Result<Self> {
        Self::on(std::sync::Arc::new(Database::open(&location.into())?))
    }

    /// The store on the connection `db`, which the caller may share with the guard's
    /// [`crate::guard::DbStorage::on`]: one connection for both keeps SQLite's page cache
    /// warm (two connections of one process to one file, each writing, empty each other's
    /// caches at every transaction). Runs the pending migrations.
    pub fn on(db: std::sync::Arc<Database>) -> Result<Self> {
        let store = Self {
            db,
            nonces_purged_at: std::sync::atomic::AtomicU64::new(0),
            throttle_purged_at: std::sync::atomic::AtomicU64::new(0),
        };
        store.write(schema::migrate)?;
        Ok(store)
    }

    /// Where it is.
    pub fn location(&self) -> &Location {
        self.db.location()
    }

    /// The database it is in.
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// Runs `f` as the only writer of the database, in one transaction (committed when `f`
    /// succeeds).
    fn write<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.db.write(f)
    }

    /// Runs `f` on one snapshot of the database.
    fn read<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.db.read(f)
    }

    /// Runs `f`, whose statements need no common snapshot, each on its own (no transaction to
    /// begin and end: the lookups on every request's path).
    fn read_each<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.db.atomic(f)
    }

    /// The schema version of the database: SQLite's `PRAGMA user_version`, or on PostgreSQL
    /// the `authz` row of `schema_versions` (each engine has its own list of migrations).
    pub fn schema_version(&self) -> Result<i64> {
        self.read(schema::version)
    }

    // ----- owners -----

    /// Adds an owner whose password hashes to `password_hash` (a PHC string; the
    /// authorization server makes it with Argon2id).
    pub fn add_owner(&self, name: &str, password_hash: &str, now: u64) -> Result<()> {
        check_owner_name(name)?;
        if password_hash.is_empty() {
            return Err(StoreError::Password("the password hash is empty".into()));
        }
        self.write(|tx| {
            let inserted = tx.execute(
                "INSERT INTO owners (name, password_hash, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO NOTHING",
                args![name, password_hash, now],
            )?;
            if inserted == 0 {
                return Err(StoreError::Exists(format!(
                    "the owner {name} exists already"
                )));
            }
            Ok(())
        })
    }

    /// The password hash of an owner (`None`: no such owner).
    pub fn password_hash(&self, name: &str) -> Result<Option<String>> {
        self.read(|tx| {
            Ok(tx.query_opt(
                "SELECT password_hash FROM owners WHERE name = ?1",
                args![name],
                |r| r.get(0),
            )?)
        })
    }

    /// Every owner, by name.
    pub fn owners(&self) -> Result<Vec<Owner>> {
        self.read(|tx| {
            Ok(tx.query_map(
                "SELECT o.name, o.created_at,
                        (SELECT COUNT(*) FROM access_tokens t
                          WHERE t.owner = o.name AND t.revoked_at IS NULL)
                 FROM owners o ORDER BY o.name",
                &[],
                |r| {
                    Ok(Owner {
                        name: r.get(0)?,
                        created_at: r.get(1)?,
                        live_tokens: r.get(2)?,
                    })
                },
            )?)
        })
    }

    /// Removes an owner: revokes her tokens (logged), ends her sessions, deletes her.
    /// Returns how many tokens were revoked.
    pub fn remove_owner(&self, name: &str, now: u64) -> Result<usize> {
        self.write(|tx| {
            let revoked = revoke_in(tx, &RevokeBy::Owner(name.to_owned()), now)?;
            tx.execute("DELETE FROM sessions WHERE owner = ?1", args![name])?;
            tx.execute(
                "UPDATE temporary_tokens SET state = 'denied' WHERE owner = ?1 AND state = 'approved'",
                args![name],
            )?;
            if tx.execute("DELETE FROM owners WHERE name = ?1", args![name])? == 0 {
                return Err(StoreError::NotFound(format!("no owner named {name}")));
            }
            Ok(revoked)
        })
    }

    // ----- consumers -----

    /// Registers a consumer application. Returns its key and secret (shown once).
    ///
    /// `callback` is where owners are sent back after answering; its requests must use that
    /// one (profile C1). Without one, the application can only use `oob`. The caller checks
    /// it first (the authorization server's `web::targets::check_callback_url`: an absolute
    /// http(s) URL with no user info, fragment or control character).
    pub fn add_consumer(
        &self,
        name: &str,
        jid: Option<&str>,
        callback: Option<&str>,
        now: u64,
    ) -> Result<(String, Secret)> {
        if name.trim().is_empty() {
            return Err(StoreError::Refused(
                "a consumer needs a name (shown to owners)".into(),
            ));
        }
        let key = random::token(16)?;
        let secret = Secret::new(random::token(32)?);
        self.write(|tx| {
            tx.execute(
                "INSERT INTO consumers (key, secret, name, jid, callback, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                args![&key, secret.expose(), name.trim(), jid, callback, now],
            )?;
            Ok(())
        })?;
        Ok((key, secret))
    }

    /// Every consumer, oldest first.
    pub fn consumers(&self) -> Result<Vec<Consumer>> {
        self.read(|tx| {
            Ok(tx.query_map(
                &format!("{CONSUMER_SELECT} ORDER BY created_at, key"),
                &[],
                consumer_row,
            )?)
        })
    }

    /// One consumer.
    pub fn consumer(&self, key: &str) -> Result<Option<Consumer>> {
        self.read(|tx| {
            Ok(tx.query_opt(
                &format!("{CONSUMER_SELECT} WHERE key = ?1"),
                args![key],
                consumer_row,
            )?)
        })
    }

    /// Revokes a consumer and every access token issued to it (all logged). Returns how
    /// many tokens were revoked.
    pub fn revoke_consumer(&self, key: &str, now: u64) -> Result<usize> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE consumers SET revoked_at = ?2 WHERE key = ?1 AND revoked_at IS NULL",
                args![key, now],
            )?;
            if changed == 0 {
                let exists = tx
                    .query_opt("SELECT 1 FROM consumers WHERE key = ?1", args![key], |_| {
                        Ok(())
                    })?
                    .is_some();
                return Err(if exists {
                    StoreError::Refused(format!("the consumer {key} is already revoked"))
                } else {
                    StoreError::NotFound(format!("no consumer with key {key}"))
                });
            }
            log(tx, now, ChangeKind::ConsumerRevoked, None, key)?;
            let mut entry = NewEntry::new(
                EntryKind::ConsumerRevoked,
                "admin",
                "the application was revoked, and every token it holds",
            );
            entry.consumer_key = Some(key.to_owned());
            ledger::append(tx, entry)?;
            revoke_in(tx, &RevokeBy::Consumer(key.to_owned()), now)
        })
    }

    // ----- temporary credentials -----

    /// Issues temporary credentials (RFC 5849 §2.1) for `consumer_key`, good for
    /// `lifetime` seconds.
    pub fn create_temporary(
        &self,
        consumer_key: &str,
        callback: &str,
        scope: &Scope,
        lifetime: u64,
        now: u64,
    ) -> Result<(String, Secret)> {
        let token = random::token(16)?;
        let secret = Secret::new(random::token(32)?);
        self.write(|tx| {
            tx.execute(
                "INSERT INTO temporary_tokens
                   (token, secret, consumer_key, callback, scope, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                args![
                    &token,
                    secret.expose(),
                    consumer_key,
                    callback,
                    scope.to_string(),
                    now,
                    now.saturating_add(lifetime)
                ],
            )?;
            // Old temporary credentials are of no use to anyone: keep the table small.
            tx.execute(
                "DELETE FROM temporary_tokens WHERE expires_at < ?1",
                args![now.saturating_sub(86_400)],
            )?;
            Ok(())
        })?;
        Ok((token, secret))
    }

    /// Temporary credentials with their consumer's name.
    pub fn temporary(&self, token: &str) -> Result<Option<TemporaryToken>> {
        self.read(|tx| {
            Ok(tx.query_opt(
                "SELECT t.token, t.consumer_key, c.name, t.callback, t.scope, t.state,
                        t.expires_at, t.owner
                 FROM temporary_tokens t JOIN consumers c ON c.key = t.consumer_key
                 WHERE t.token = ?1",
                args![token],
                |r| {
                    Ok(TemporaryToken {
                        token: r.get(0)?,
                        consumer_key: r.get(1)?,
                        consumer_name: r.get(2)?,
                        callback: r.get(3)?,
                        scope: Scope::parse(&r.get::<String>(4)?),
                        state: TemporaryState::parse(&r.get::<String>(5)?),
                        expires_at: r.get(6)?,
                        owner: r.get(7)?,
                    })
                },
            )?)
        })
    }

    /// The owner approves pending temporary credentials for `scope` (which must be inside
    /// the requested one). Returns the verifier.
    pub fn approve(&self, token: &str, owner: &str, scope: &Scope, now: u64) -> Result<String> {
        let verifier = random::token(16)?;
        self.write(|tx| {
            let (state, requested, expires_at) = pending_in(tx, token)?;
            check_pending(&state, expires_at, now)?;
            if !Scope::parse(&requested).covers(scope) {
                return Err(StoreError::Refused(format!(
                    "the scope \"{scope}\" is wider than the requested \"{requested}\""
                )));
            }
            if scope.entries().is_empty() {
                return Err(StoreError::Refused("the scope is empty".into()));
            }
            tx.execute(
                "UPDATE temporary_tokens SET state = 'approved', owner = ?2, scope = ?3,
                        verifier = ?4 WHERE token = ?1",
                args![token, owner, scope.to_string(), &verifier],
            )?;
            if Scope::parse(&requested) != *scope {
                let detail = format!("asked for: {requested}; granted: {scope}");
                answer_entry(tx, EntryKind::Narrowed, token, owner, detail)?;
            }
            Ok(())
        })?;
        Ok(verifier)
    }

    /// The owner `owner` denies pending temporary credentials.
    pub fn deny(&self, token: &str, owner: &str, now: u64) -> Result<()> {
        self.write(|tx| {
            let (state, requested, expires_at) = pending_in(tx, token)?;
            check_pending(&state, expires_at, now)?;
            tx.execute(
                "UPDATE temporary_tokens SET state = 'denied' WHERE token = ?1",
                args![token],
            )?;
            let detail = format!("asked for: {requested}");
            answer_entry(tx, EntryKind::Denied, token, owner, detail)?;
            Ok(())
        })
    }

    /// Exchanges approved temporary credentials and their verifier for an access token
    /// (RFC 5849 §2.3), once. The caller has verified the request's signature; `nonce` is
    /// its nonce key ([`oauth_xmpp::replay::NonceKey::write_canonical`]).
    ///
    /// The exchange is safe to retry (profile P6): for `retry_secs` after it, a signed
    /// request with the same verifier gets the same access token back, as long as it is
    /// live, so an answer lost to a crash or a broken connection is not a grant the
    /// consumer can never collect.
    pub fn exchange(
        &self,
        token: &str,
        verifier: &str,
        nonce: &str,
        retry_secs: u64,
        now: u64,
    ) -> Result<Grant> {
        self.write(|tx| {
            let row = tx.query_opt(
                "SELECT state, consumer_key, scope, owner, verifier, expires_at,
                        exchanged_at, access_token_id
                 FROM temporary_tokens WHERE token = ?1",
                args![token],
                |r| {
                    Ok(TemporaryRow {
                        state: r.get(0)?,
                        consumer_key: r.get(1)?,
                        scope: r.get(2)?,
                        owner: r.get(3)?,
                        verifier: r.get(4)?,
                        expires_at: r.get(5)?,
                        exchanged_at: r.get(6)?,
                        access_token_id: r.get(7)?,
                    })
                },
            )?;
            let Some(row) = row else {
                return Err(StoreError::NotFound("unknown temporary token".into()));
            };
            // `approve` sets both with the state; their absence means it never ran.
            let same_verifier = row.verifier.as_deref().is_some_and(|expected| {
                subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), verifier.as_bytes()).into()
            });
            match TemporaryState::parse(&row.state) {
                TemporaryState::Approved => {}
                TemporaryState::Used => {
                    let in_window = row
                        .exchanged_at
                        .is_some_and(|at| now <= at.saturating_add(retry_secs));
                    return match row.access_token_id {
                        Some(id) if in_window && same_verifier => {
                            live_grant_in(tx, id, now)?.ok_or(ExchangeRefused::Used.into())
                        }
                        _ => Err(ExchangeRefused::Used.into()),
                    };
                }
                TemporaryState::Denied => return Err(ExchangeRefused::Denied.into()),
                TemporaryState::Pending => return Err(ExchangeRefused::NotApproved.into()),
            }
            if row.expires_at <= now {
                return Err(ExchangeRefused::Expired.into());
            }
            let Some(owner) = row.owner else {
                return Err(ExchangeRefused::NotApproved.into());
            };
            if !same_verifier {
                return Err(ExchangeRefused::WrongVerifier.into());
            }
            let grant = insert_grant(
                tx,
                "owner",
                &row.consumer_key,
                &owner,
                Scope::parse(&row.scope),
                None,
                now,
            )?;
            tx.execute(
                "UPDATE temporary_tokens SET state = 'used', exchanged_at = ?2,
                        exchange_nonce = ?3, access_token_id = ?4
                 WHERE token = ?1",
                args![token, now, nonce, grant.id],
            )?;
            Ok(grant)
        })
    }

    /// For temporary credentials exchanged less than `retry_secs` ago: the nonce key of
    /// that exchange (a byte-for-byte retry of it carries the same one). `None` otherwise.
    pub fn exchange_retry(&self, token: &str, retry_secs: u64, now: u64) -> Result<Option<String>> {
        let row: Option<(Option<u64>, Option<String>)> = self.read(|tx| {
            Ok(tx.query_opt(
                "SELECT exchanged_at, exchange_nonce FROM temporary_tokens
                 WHERE token = ?1 AND state = 'used'",
                args![token],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })?;
        Ok(match row {
            Some((Some(at), Some(nonce))) if now <= at.saturating_add(retry_secs) => Some(nonce),
            _ => None,
        })
    }

    // ----- access tokens -----

    /// Issues an access token without the web flow (service-to-service setups).
    pub fn grant(
        &self,
        owner: &str,
        consumer_key: &str,
        scope: &Scope,
        expires_at: Option<u64>,
        now: u64,
    ) -> Result<Grant> {
        if scope.entries().is_empty() {
            return Err(StoreError::Refused("the scope is empty".into()));
        }
        self.write(|tx| {
            let owner_exists = tx
                .query_opt("SELECT 1 FROM owners WHERE name = ?1", args![owner], |_| {
                    Ok(())
                })?
                .is_some();
            if !owner_exists {
                return Err(StoreError::NotFound(format!("no owner named {owner}")));
            }
            let revoked: Option<Option<i64>> = tx.query_opt(
                "SELECT revoked_at FROM consumers WHERE key = ?1",
                args![consumer_key],
                |r| r.get(0),
            )?;
            match revoked {
                None => {
                    return Err(StoreError::NotFound(format!(
                        "no consumer with key {consumer_key}"
                    )));
                }
                Some(Some(_)) => {
                    return Err(StoreError::Refused(format!(
                        "the consumer {consumer_key} is revoked"
                    )));
                }
                Some(None) => {}
            }
            insert_grant(
                tx,
                "admin",
                consumer_key,
                owner,
                scope.clone(),
                expires_at,
                now,
            )
        })
    }

    /// Access tokens, optionally only an owner's and/or a consumer's, oldest first.
    pub fn access_tokens(
        &self,
        owner: Option<&str>,
        consumer_key: Option<&str>,
    ) -> Result<Vec<AccessToken>> {
        self.read(|tx| {
            // PostgreSQL cannot tell the type of a parameter that is only tested for NULL.
            Ok(tx.query_map(
                &format!(
                    "{ACCESS_TOKEN_SELECT}
                     WHERE (CAST(?1 AS TEXT) IS NULL OR t.owner = ?1)
                       AND (CAST(?2 AS TEXT) IS NULL OR t.consumer_key = ?2)
                     ORDER BY t.id"
                ),
                args![owner, consumer_key],
                access_token_row,
            )?)
        })
    }

    /// The access token `id`, if there is one (revoked or expired ones too).
    pub fn access_token(&self, id: i64) -> Result<Option<AccessToken>> {
        self.read_each(|tx| {
            Ok(tx.query_opt(
                &format!("{ACCESS_TOKEN_SELECT} WHERE t.id = ?1"),
                args![id],
                access_token_row,
            )?)
        })
    }

    /// Revokes live access tokens (logged, one change each). Returns how many.
    pub fn revoke_tokens(&self, by: &RevokeBy, now: u64) -> Result<usize> {
        self.write(|tx| revoke_in(tx, by, now))
    }

    /// Appends an `expired` change for every access token whose expiry has passed and was
    /// not logged yet. Either process may call it; each expiry is logged once.
    pub fn log_expiries(&self, now: u64) -> Result<usize> {
        self.write(|tx| {
            end_tokens(
                tx,
                "expires_at IS NOT NULL AND expires_at <= ?1 AND expiry_logged = 0 \
                 AND revoked_at IS NULL",
                vec![Value::from(now)],
                ("expiry_logged", 1),
                (ChangeKind::TokenExpired, "clock"),
                now,
            )
        })
    }

    // ----- the change log -----

    /// Changes after `seq`, oldest first, at most `limit`.
    pub fn changes_since(&self, seq: i64, limit: usize) -> Result<Vec<Change>> {
        self.read_each(|tx| {
            Ok(tx.query_map(
                "SELECT seq, at, kind, token_id, token, consumer_key, owner, at_ms, node
                 FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                args![seq, limit],
                |r| {
                    Ok(Change {
                        seq: r.get(0)?,
                        at: r.get(1)?,
                        kind: ChangeKind::parse(&r.get::<String>(2)?),
                        token_id: r.get(3)?,
                        token: r.get(4)?,
                        consumer_key: r.get(5)?,
                        owner: r.get(6)?,
                        at_ms: r.get(7)?,
                        node: r.get(8)?,
                    })
                },
            )?)
        })
    }

    /// The newest sequence number (0 when the log is empty).
    pub fn last_change(&self) -> Result<i64> {
        self.read(|tx| {
            Ok(
                tx.query_one("SELECT COALESCE(MAX(seq), 0) FROM changes", &[], |r| {
                    r.get(0)
                })?,
            )
        })
    }

    /// The spans of the change log in which `consumer_key` held an access token from
    /// `owner`, one per token, oldest first: from the token's `granted` entry to the entry
    /// that ended it (revoked or expired), if any. The guard replays a node's items to a
    /// consumer only from the spans whose scope permits the node.
    pub fn grant_spans(&self, consumer_key: &str, owner: &str) -> Result<Vec<GrantSpan>> {
        let rows = self.read_each(|tx| {
            Ok(tx.query_map(
                "SELECT t.scope, t.expires_at,
                        (SELECT MIN(c.seq) FROM changes c
                         WHERE c.token_id = t.id AND c.kind = 'granted'),
                        (SELECT MIN(c.seq) FROM changes c
                         WHERE c.token_id = t.id AND c.kind IN ('token-revoked', 'token-expired'))
                 FROM access_tokens t
                 WHERE t.consumer_key = ?1 AND t.owner = ?2
                 ORDER BY t.id",
                args![consumer_key, owner],
                |r| {
                    Ok((
                        r.get::<String>(0)?,
                        r.get::<Option<u64>>(1)?,
                        r.get::<Option<i64>>(2)?,
                        r.get::<Option<i64>>(3)?,
                    ))
                },
            )?)
        })?;
        let mut spans = Vec::new();
        for (scope, expires_at, granted, ended) in rows {
            // A token without its `granted` entry cannot be placed in the log: it opens no
            // span (nothing is replayed that cannot be shown to be covered).
            let Some(granted) = granted else { continue };
            spans.push(GrantSpan {
                scope: Scope::parse(&scope),
                granted_seq: granted,
                ended_seq: ended,
                expires_at,
            });
        }
        Ok(spans)
    }

    // ----- the audit ledger -----

    /// Asks the guard to end the subscriptions that match every filter given (at least one):
    /// of `node`, made by `consumer_key`'s tokens, to `owner`'s nodes. Logs a
    /// [`ChangeKind::SubscriptionsEnded`] change, which the guard holding them follows (it
    /// ends them and tells each subscriber), and the ledger's entry by `admin`, with
    /// `count`, how many the admin was shown. Returns the change's position.
    pub fn end_subscriptions(
        &self,
        node: Option<&str>,
        consumer_key: Option<&str>,
        owner: Option<&str>,
        count: usize,
        now: u64,
    ) -> Result<i64> {
        if node.is_none() && consumer_key.is_none() && owner.is_none() {
            return Err(StoreError::Refused(
                "name a node, a consumer or an owner whose subscriptions end".into(),
            ));
        }
        self.write(|tx| {
            let seq: i64 = tx.query_one(
                "INSERT INTO changes (at, kind, consumer_key, owner, node, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING seq",
                args![
                    now,
                    ChangeKind::SubscriptionsEnded.as_str(),
                    consumer_key,
                    owner,
                    node,
                    now_ms()
                ],
                |r| r.get(0),
            )?;
            let mut entry = NewEntry::new(
                EntryKind::SubscriptionsEnded,
                "admin",
                format!("{count} subscriptions to end"),
            );
            entry.node = node.map(str::to_owned);
            entry.consumer_key = consumer_key.map(str::to_owned);
            entry.owner = owner.map(str::to_owned);
            ledger::append(tx, entry)?;
            Ok(seq)
        })
    }

    /// Appends `entry` to the audit ledger (in a transaction of its own).
    pub fn record(&self, entry: NewEntry) -> Result<i64> {
        self.write(|tx| ledger::append(tx, entry))
    }

    /// The ledger's entries that `filter` selects after position `after`, oldest first, at
    /// most `limit`.
    pub fn ledger(
        &self,
        filter: &ledger::LedgerFilter,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ledger::Entry>> {
        self.read(|tx| {
            Ok(tx.query_map(
                &format!(
                    "SELECT {} FROM audit_ledger
                     WHERE seq > ?1
                       AND (CAST(?2 AS BIGINT) IS NULL OR token_id = ?2)
                       AND (CAST(?3 AS TEXT) IS NULL OR owner = ?3)
                       AND (CAST(?4 AS TEXT) IS NULL OR consumer_key = ?4)
                       AND (CAST(?5 AS TEXT) IS NULL OR kind = ?5)
                     ORDER BY seq LIMIT ?6",
                    ledger::ENTRY_COLUMNS
                ),
                args![
                    after,
                    filter.token_id,
                    filter.owner.as_deref(),
                    filter.consumer_key.as_deref(),
                    filter.kind.map(ledger::EntryKind::as_str),
                    limit
                ],
                ledger::entry_row,
            )?)
        })
    }

    /// The newest `limit` entries of `kind` about `owner`'s grants to `consumer_key`,
    /// newest first (the owner's page shows an application's latest refusals).
    pub fn latest_entries(
        &self,
        owner: &str,
        consumer_key: &str,
        kind: ledger::EntryKind,
        limit: usize,
    ) -> Result<Vec<ledger::Entry>> {
        self.read(|tx| {
            Ok(tx.query_map(
                &format!(
                    "SELECT {} FROM audit_ledger
                     WHERE owner = ?1 AND consumer_key = ?2 AND kind = ?3
                     ORDER BY seq DESC LIMIT ?4",
                    ledger::ENTRY_COLUMNS
                ),
                args![owner, consumer_key, kind.as_str(), limit],
                ledger::entry_row,
            )?)
        })
    }

    /// How many entries of `kind` there are about `owner`'s grants to `consumer_key`.
    pub fn count_entries(
        &self,
        owner: &str,
        consumer_key: &str,
        kind: ledger::EntryKind,
    ) -> Result<u64> {
        self.read_each(|tx| {
            Ok(tx.query_one(
                "SELECT COUNT(*) FROM audit_ledger
                 WHERE owner = ?1 AND consumer_key = ?2 AND kind = ?3",
                args![owner, consumer_key, kind.as_str()],
                |r| r.get(0),
            )?)
        })
    }

    /// Reads the whole ledger on one snapshot and checks its chain; with `head` (a position
    /// and the hash an earlier verification reported for it), also that the entry there
    /// still has that hash.
    pub fn verify_ledger(&self, head: Option<(i64, &str)>) -> Result<ledger::Verdict> {
        self.read(|tx| ledger::verify(tx, head))
    }

    /// What the access token `token_id` delivered, by node.
    pub fn deliveries(&self, token_id: i64) -> Result<Vec<ledger::Deliveries>> {
        self.read_each(|tx| ledger::deliveries_of(tx, token_id))
    }

    /// Adds what the guard sent to the deliveries (in the writer's transaction; in a group
    /// commit, the group's).
    pub fn add_deliveries(&self, batch: &[ledger::Delivered]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write(|tx| ledger::add_deliveries(tx, batch, now_ms()))
    }

    // ----- owner sessions (the web pages) -----

    /// Starts a signed-in session for `owner`, good for `lifetime` seconds, after a right
    /// password: her name's sign-in counter is forgotten, and the failed sign-ins since her
    /// previous sign-in move into the session (to be shown to her) and are reset.
    pub fn create_session(&self, owner: &str, lifetime: u64, now: u64) -> Result<Session> {
        self.signed_in(owner, None, lifetime, now)
    }

    /// [`Store::create_session`] after an attempt from the client `address` started with
    /// [`Store::begin_sign_in`] succeeded: the attempt no longer counts against the address
    /// (only failures do, so many owners behind one NAT can all sign in).
    pub fn finish_sign_in(
        &self,
        owner: &str,
        address: &str,
        lifetime: u64,
        now: u64,
    ) -> Result<Session> {
        self.signed_in(owner, Some(address), lifetime, now)
    }

    fn signed_in(
        &self,
        owner: &str,
        address: Option<&str>,
        lifetime: u64,
        now: u64,
    ) -> Result<Session> {
        let id = random::token(32)?;
        let csrf = random::token(16)?;
        self.write(|tx| {
            tx.execute("DELETE FROM sessions WHERE expires_at <= ?1", args![now])?;
            if let Some(address) = address {
                // Not MAX(failures - 1, 0): PostgreSQL spells the two-argument MAX GREATEST.
                tx.execute(
                    "UPDATE sign_in_throttle
                     SET failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END
                     WHERE subject = ?1",
                    args![address],
                )?;
            }
            if let Some(subject) = signin::name_subject(owner) {
                tx.execute(
                    "DELETE FROM sign_in_throttle WHERE subject = ?1",
                    args![subject],
                )?;
            }
            let failed_before = tx
                .query_opt(
                    "SELECT failed_sign_ins, last_failed_sign_in, lockouts FROM owners
                     WHERE name = ?1",
                    args![owner],
                    |r| failed_sign_ins(r, 0),
                )?
                .unwrap_or_default();
            tx.execute(
                "UPDATE owners SET failed_sign_ins = 0, last_failed_sign_in = NULL, lockouts = 0
                 WHERE name = ?1",
                args![owner],
            )?;
            tx.execute(
                "INSERT INTO sessions (id, owner, csrf, expires_at, failed_sign_ins,
                                       last_failed_sign_in, lockouts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                args![
                    &id,
                    owner,
                    &csrf,
                    now.saturating_add(lifetime),
                    failed_before.count,
                    failed_before.last_at,
                    failed_before.lockouts
                ],
            )?;
            Ok(Session {
                id,
                owner: owner.to_owned(),
                csrf,
                failed_before,
            })
        })
    }

    /// The live session with this id.
    pub fn session(&self, id: &str, now: u64) -> Result<Option<Session>> {
        self.read(|tx| {
            Ok(tx.query_opt(
                "SELECT id, owner, csrf, failed_sign_ins, last_failed_sign_in, lockouts
                 FROM sessions WHERE id = ?1 AND expires_at > ?2",
                args![id, now],
                |r| {
                    Ok(Session {
                        id: r.get(0)?,
                        owner: r.get(1)?,
                        csrf: r.get(2)?,
                        failed_before: failed_sign_ins(r, 3)?,
                    })
                },
            )?)
        })
    }

    /// Ends a session.
    pub fn delete_session(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM sessions WHERE id = ?1", args![id])?;
            Ok(())
        })
    }
}

/// The three failed-sign-in columns (count, last time, lockouts) from column `at` on, as the
/// owners and sessions tables both hold them.
fn failed_sign_ins(r: &Row, at: usize) -> Result<FailedSignIns, BackendError> {
    Ok(FailedSignIns {
        count: r.get(at)?,
        last_at: r.get(at + 1)?,
        lockouts: r.get(at + 2)?,
    })
}

/// What an exchange reads of temporary credentials.
struct TemporaryRow {
    state: String,
    consumer_key: String,
    scope: String,
    owner: Option<String>,
    verifier: Option<String>,
    expires_at: u64,
    exchanged_at: Option<u64>,
    access_token_id: Option<i64>,
}

/// The access token `id` as a grant, if it is neither revoked nor expired at `now`.
fn live_grant_in(tx: &Tx<'_>, id: i64, now: u64) -> Result<Option<Grant>> {
    Ok(tx.query_opt(
        "SELECT token, secret, consumer_key, owner, scope FROM access_tokens
         WHERE id = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
        args![id, now],
        |r| {
            Ok(Grant {
                id,
                token: r.get(0)?,
                secret: Secret::new(r.get::<String>(1)?),
                consumer_key: r.get(2)?,
                owner: r.get(3)?,
                scope: Scope::parse(&r.get::<String>(4)?),
            })
        },
    )?)
}

/// The columns [`access_token_row`] reads, with the consumer's name.
const ACCESS_TOKEN_SELECT: &str =
    "SELECT t.id, t.token, t.consumer_key, c.name, t.owner, t.scope, t.created_at,
            t.expires_at, t.revoked_at
     FROM access_tokens t JOIN consumers c ON c.key = t.consumer_key";

fn access_token_row(r: &Row) -> Result<AccessToken, BackendError> {
    Ok(AccessToken {
        id: r.get(0)?,
        token: r.get(1)?,
        consumer_key: r.get(2)?,
        consumer_name: r.get(3)?,
        owner: r.get(4)?,
        scope: Scope::parse(&r.get::<String>(5)?),
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        revoked_at: r.get(8)?,
    })
}

const CONSUMER_SELECT: &str =
    "SELECT key, name, jid, callback, created_at, revoked_at FROM consumers";

fn consumer_row(r: &Row) -> Result<Consumer, BackendError> {
    Ok(Consumer {
        key: r.get(0)?,
        name: r.get(1)?,
        jid: r.get(2)?,
        callback: r.get(3)?,
        created_at: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

/// The ledger's entry for the owner's answer to the temporary credentials `token`.
fn answer_entry(
    tx: &Tx<'_>,
    kind: EntryKind,
    token: &str,
    owner: &str,
    detail: String,
) -> Result<()> {
    let consumer_key: String = tx.query_one(
        "SELECT consumer_key FROM temporary_tokens WHERE token = ?1",
        args![token],
        |r| r.get(0),
    )?;
    let mut entry = NewEntry::new(kind, "owner", detail);
    entry.owner = Some(owner.to_owned());
    entry.consumer_key = Some(consumer_key);
    ledger::append(tx, entry)?;
    Ok(())
}

fn pending_in(tx: &Tx<'_>, token: &str) -> Result<(String, String, u64)> {
    tx.query_opt(
        "SELECT state, scope, expires_at FROM temporary_tokens WHERE token = ?1",
        args![token],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?
    .ok_or_else(|| StoreError::NotFound("unknown temporary token".into()))
}

fn check_pending(state: &str, expires_at: u64, now: u64) -> Result<()> {
    if TemporaryState::parse(state) != TemporaryState::Pending {
        return Err(StoreError::Refused(
            "this request was already answered".into(),
        ));
    }
    if expires_at <= now {
        return Err(StoreError::Refused(
            "this request has expired: ask the application to start again".into(),
        ));
    }
    Ok(())
}

/// Issues an access token (from the OS random generator) and logs the grant.
fn insert_grant(
    tx: &Tx<'_>,
    actor: &str,
    consumer_key: &str,
    owner: &str,
    scope: Scope,
    expires_at: Option<u64>,
    now: u64,
) -> Result<Grant> {
    let token = random::token(16)?;
    let secret = Secret::new(random::token(32)?);
    let id = insert_token(
        tx,
        actor,
        &token,
        &secret,
        consumer_key,
        owner,
        &scope,
        expires_at,
        now,
    )?;
    Ok(Grant {
        id,
        token,
        secret,
        consumer_key: consumer_key.to_owned(),
        owner: owner.to_owned(),
        scope,
    })
}

/// Writes the access token `token` and logs it as granted; returns its id. The caller has
/// checked the owner and the consumer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_token(
    tx: &Tx<'_>,
    actor: &str,
    token: &str,
    secret: &Secret,
    consumer_key: &str,
    owner: &str,
    scope: &Scope,
    expires_at: Option<u64>,
    now: u64,
) -> Result<i64> {
    let id: i64 = tx.query_one(
        "INSERT INTO access_tokens (token, secret, consumer_key, owner, scope, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         RETURNING id",
        args![
            token,
            secret.expose(),
            consumer_key,
            owner,
            scope.to_string(),
            now,
            expires_at
        ],
        |r| r.get(0),
    )?;
    let row = TokenRow { id, token, owner };
    log(tx, now, ChangeKind::Granted, Some(row), consumer_key)?;
    let mut entry = NewEntry::new(EntryKind::Granted, actor, format!("scope: {scope}"));
    entry.owner = Some(owner.to_owned());
    entry.consumer_key = Some(consumer_key.to_owned());
    entry.token_id = Some(id);
    ledger::append(tx, entry)?;
    Ok(id)
}

/// Who revokes, as the ledger says: the owner from her page, or an admin.
fn revoker(by: &RevokeBy) -> &'static str {
    match by {
        RevokeBy::OwnerAndId(..) => "owner",
        _ => "admin",
    }
}

fn revoke_in(tx: &Tx<'_>, by: &RevokeBy, now: u64) -> Result<usize> {
    let (clause, values): (&str, Vec<Value>) = match by {
        RevokeBy::Id(id) => ("id = ?1", vec![(*id).into()]),
        RevokeBy::Token(token) => ("token = ?1", vec![token.into()]),
        RevokeBy::Owner(owner) => ("owner = ?1", vec![owner.into()]),
        RevokeBy::Consumer(key) => ("consumer_key = ?1", vec![key.into()]),
        RevokeBy::OwnerAndId(owner, id) => {
            ("owner = ?1 AND id = ?2", vec![owner.into(), (*id).into()])
        }
    };
    end_tokens(
        tx,
        &format!("revoked_at IS NULL AND {clause}"),
        values,
        ("revoked_at", to_i64(now)),
        (ChangeKind::TokenRevoked, revoker(by)),
        now,
    )
}

/// For every access token matching `filter` (with `values`): sets `column` to its value,
/// logs a `kind` change, and writes the ledger's entry for it by `actor`, with what was
/// delivered under it. Returns how many.
fn end_tokens(
    tx: &Tx<'_>,
    filter: &str,
    values: Vec<Value>,
    (column, value): (&str, i64),
    (kind, actor): (ChangeKind, &str),
    now: u64,
) -> Result<usize> {
    let rows: Vec<(i64, String, String, String)> = tx.query_map(
        &format!("SELECT id, token, consumer_key, owner FROM access_tokens WHERE {filter}"),
        &values,
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let update = format!("UPDATE access_tokens SET {column} = ?2 WHERE id = ?1");
    for (id, token, consumer_key, owner) in &rows {
        tx.execute(&update, args![*id, value])?;
        let row = TokenRow {
            id: *id,
            token,
            owner,
        };
        log(tx, now, kind, Some(row), consumer_key)?;
        let ended = match kind {
            ChangeKind::TokenExpired => EntryKind::Expired,
            _ => EntryKind::Revoked,
        };
        let delivered = ledger::deliveries_of(tx, *id)?;
        let mut entry = NewEntry::new(ended, actor, ledger::deliveries_summary(&delivered));
        entry.owner = Some(owner.clone());
        entry.consumer_key = Some(consumer_key.clone());
        entry.token_id = Some(*id);
        ledger::append(tx, entry)?;
    }
    Ok(rows.len())
}

/// The token side of a change-log entry.
struct TokenRow<'a> {
    id: i64,
    token: &'a str,
    owner: &'a str,
}

/// Appends one entry to the change log (on PostgreSQL its trigger notifies
/// [`Authorizations::watch_changes`] listeners when the transaction commits).
fn log(
    tx: &Tx<'_>,
    now: u64,
    kind: ChangeKind,
    token: Option<TokenRow<'_>>,
    consumer_key: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO changes (at, kind, token_id, token, consumer_key, owner, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![
            now,
            kind.as_str(),
            token.as_ref().map(|t| t.id),
            token.as_ref().map(|t| t.token),
            consumer_key,
            token.as_ref().map(|t| t.owner),
            now_ms()
        ],
    )?;
    Ok(())
}

/// Owner names: what an account name of the service may be (they appear in node names
/// such as `/location/alice`).
pub(crate) fn check_owner_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Refused(format!(
            "owner names are 1 to 64 of a-z A-Z 0-9 - _ . (got {name:?})"
        )))
    }
}

/// The authorization server's side as the guard reads it: credentials and nonces (through
/// `oauth-xmpp`'s traits), the change log it follows, the expiries it logs when it runs
/// alone, and each token's span of the log (what it may replay). [`Store`] is the one on
/// SQLite or PostgreSQL; the guard's service holds any.
pub trait Authorizations:
    oauth_xmpp::CredentialStore + oauth_xmpp::replay::NonceStore + Send + Sync
{
    /// Changes after `seq`, oldest first, at most `limit` ([`Store::changes_since`]).
    fn changes_since(&self, seq: i64, limit: usize) -> Result<Vec<Change>>;
    /// Logs the expiries that passed by `now` ([`Store::log_expiries`]).
    fn log_expiries(&self, now: u64) -> Result<usize>;
    /// The spans of `consumer_key`'s tokens from `owner` ([`Store::grant_spans`]).
    fn grant_spans(&self, consumer_key: &str, owner: &str) -> Result<Vec<GrantSpan>>;
    /// Calls `wake` from another thread soon after a change is logged, so the caller can
    /// read [`Authorizations::changes_since`] at once instead of at its next poll (and once
    /// after a lost connection is back, for what it may have missed). Dropping the returned
    /// [`Listener`] stops it. `None` when the store cannot tell (SQLite): keep polling.
    fn watch_changes(&self, wake: Box<dyn Fn() + Send>) -> Result<Option<Listener>>;
    /// Appends an entry to the audit ledger ([`Store::record`]): the guard's refusals.
    fn record(&self, entry: NewEntry) -> Result<()>;
    /// Adds to each grant's deliveries ([`Store::add_deliveries`]).
    fn add_deliveries(&self, batch: &[ledger::Delivered]) -> Result<()>;
}

impl Authorizations for Store {
    fn changes_since(&self, seq: i64, limit: usize) -> Result<Vec<Change>> {
        Store::changes_since(self, seq, limit)
    }

    fn log_expiries(&self, now: u64) -> Result<usize> {
        Store::log_expiries(self, now)
    }

    fn grant_spans(&self, consumer_key: &str, owner: &str) -> Result<Vec<GrantSpan>> {
        Store::grant_spans(self, consumer_key, owner)
    }

    fn record(&self, entry: NewEntry) -> Result<()> {
        Store::record(self, entry).map(drop)
    }

    fn add_deliveries(&self, batch: &[ledger::Delivered]) -> Result<()> {
        Store::add_deliveries(self, batch)
    }

    /// On PostgreSQL, a listener on the channel `authz_changes`, which the change log's
    /// trigger notifies once per statement that appends to it.
    fn watch_changes(&self, wake: Box<dyn Fn() + Send>) -> Result<Option<Listener>> {
        match self.location() {
            Location::Sqlite(_) => Ok(None),
            Location::Postgres(url) => Ok(Some(crate::db::pg::listen(
                url,
                schema::CHANGES_CHANNEL,
                wake,
            )?)),
        }
    }
}

#[cfg(test)]
mod tests;
