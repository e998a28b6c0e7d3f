//! The token store: one SQLite file (WAL, `busy_timeout`, mode 0600) holding owners,
//! consumers, temporary credentials, access tokens, the nonces of the replay check, owner
//! sessions and an append-only change log.
//!
//! The authorization server writes it; the pubsub guard opens the same file, looks up
//! credentials through [`oauth_xmpp::CredentialStore`], records nonces through
//! [`oauth_xmpp::replay::NonceStore`] and follows [`Store::changes_since`]. Every write is one
//! `BEGIN IMMEDIATE` transaction, so two processes on the file are safe.

mod model;
mod oauth;
mod schema;
mod signin;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use oauth_xmpp::{Scope, Secret};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

pub use model::{
    AccessToken, Change, ChangeKind, Consumer, FailedSignIns, Grant, GrantSpan, Owner, RevokeBy,
    Session, TemporaryState, TemporaryToken,
};
pub use signin::{Attempt, Throttled, ThrottledBy};

use crate::random;

/// What can go wrong with the store, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, a locked file past the busy timeout, corruption…).
    #[error("database: {0}")]
    Backend(#[from] crate::backend::BackendError),
    /// Creating or opening the file failed.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was written by a newer version of this program.
    #[error("the database is at schema version {found}; this program knows up to {known}")]
    TooNew {
        /// The file's version.
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

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Backend(e.into())
    }
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

/// How long a writer waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An open store. Cheap to share behind an `Arc`; calls are serialized on one connection.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// The second in which expired nonces were last deleted (at most once a second).
    nonces_purged_at: std::sync::atomic::AtomicU64,
    /// When stale sign-in counters were last deleted.
    throttle_purged_at: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Seconds since 1970, from the system clock.
pub fn now() -> u64 {
    oauth_xmpp::replay::Clock::now(&oauth_xmpp::replay::SystemClock)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Opens (creating it, mode 0600, if missing) the store at `path` and runs the pending
    /// migrations.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let conn = connect(&path)?;
        let store = Self {
            conn: Mutex::new(conn),
            path,
            nonces_purged_at: std::sync::atomic::AtomicU64::new(0),
            throttle_purged_at: std::sync::atomic::AtomicU64::new(0),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The file it is on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction (committed when `f` succeeds).
    fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn migrate(&self) -> Result<()> {
        let known = schema::MIGRATIONS.len() as i64;
        self.write(|tx| {
            let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if found > known {
                return Err(StoreError::TooNew { found, known });
            }
            for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", i as i64 + 1)?;
            }
            Ok(())
        })
    }

    /// The schema version of the file.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    // ----- owners -----

    /// Adds an owner whose password hashes to `password_hash` (a PHC string; the
    /// authorization server makes it with Argon2id).
    pub fn add_owner(&self, name: &str, password_hash: &str, now: u64) -> Result<()> {
        validate_name(name)?;
        if password_hash.is_empty() {
            return Err(StoreError::Password("the password hash is empty".into()));
        }
        self.write(|tx| {
            let inserted = tx.execute(
                "INSERT INTO owners (name, password_hash, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO NOTHING",
                params![name, password_hash, to_i64(now)],
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
        Ok(self
            .lock()
            .query_row(
                "SELECT password_hash FROM owners WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Every owner, by name.
    pub fn owners(&self) -> Result<Vec<Owner>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT o.name, o.created_at,
                    (SELECT COUNT(*) FROM access_tokens t
                      WHERE t.owner = o.name AND t.revoked_at IS NULL)
             FROM owners o ORDER BY o.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Owner {
                name: r.get(0)?,
                created_at: to_u64(r.get(1)?),
                live_tokens: to_u64(r.get(2)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes an owner: revokes her tokens (logged), ends her sessions, deletes her.
    /// Returns how many tokens were revoked.
    pub fn remove_owner(&self, name: &str, now: u64) -> Result<usize> {
        self.write(|tx| {
            let revoked = revoke_in(tx, &RevokeBy::Owner(name.to_owned()), now)?;
            tx.execute("DELETE FROM sessions WHERE owner = ?1", [name])?;
            tx.execute(
                "UPDATE temporary_tokens SET state = 'denied' WHERE owner = ?1 AND state = 'approved'",
                [name],
            )?;
            if tx.execute("DELETE FROM owners WHERE name = ?1", [name])? == 0 {
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
                params![
                    key,
                    secret.expose(),
                    name.trim(),
                    jid,
                    callback,
                    to_i64(now)
                ],
            )?;
            Ok(())
        })?;
        Ok((key, secret))
    }

    /// Every consumer, oldest first.
    pub fn consumers(&self) -> Result<Vec<Consumer>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("{CONSUMER_SELECT} ORDER BY created_at, key"))?;
        let rows = stmt.query_map([], consumer_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One consumer.
    pub fn consumer(&self, key: &str) -> Result<Option<Consumer>> {
        Ok(self
            .lock()
            .query_row(
                &format!("{CONSUMER_SELECT} WHERE key = ?1"),
                [key],
                consumer_row,
            )
            .optional()?)
    }

    /// Revokes a consumer and every access token issued to it (all logged). Returns how
    /// many tokens were revoked.
    pub fn revoke_consumer(&self, key: &str, now: u64) -> Result<usize> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE consumers SET revoked_at = ?2 WHERE key = ?1 AND revoked_at IS NULL",
                params![key, to_i64(now)],
            )?;
            if changed == 0 {
                let exists: bool = tx
                    .query_row("SELECT 1 FROM consumers WHERE key = ?1", [key], |_| {
                        Ok(true)
                    })
                    .optional()?
                    .is_some();
                return Err(if exists {
                    StoreError::Refused(format!("the consumer {key} is already revoked"))
                } else {
                    StoreError::NotFound(format!("no consumer with key {key}"))
                });
            }
            log(tx, now, ChangeKind::ConsumerRevoked, None, key)?;
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
                params![
                    token,
                    secret.expose(),
                    consumer_key,
                    callback,
                    scope.to_string(),
                    to_i64(now),
                    to_i64(now.saturating_add(lifetime))
                ],
            )?;
            // Old temporary credentials are of no use to anyone: keep the table small.
            tx.execute(
                "DELETE FROM temporary_tokens WHERE expires_at < ?1",
                [to_i64(now.saturating_sub(86_400))],
            )?;
            Ok(())
        })?;
        Ok((token, secret))
    }

    /// Temporary credentials with their consumer's name.
    pub fn temporary(&self, token: &str) -> Result<Option<TemporaryToken>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT t.token, t.consumer_key, c.name, t.callback, t.scope, t.state,
                        t.expires_at, t.owner
                 FROM temporary_tokens t JOIN consumers c ON c.key = t.consumer_key
                 WHERE t.token = ?1",
                [token],
                |r| {
                    Ok(TemporaryToken {
                        token: r.get(0)?,
                        consumer_key: r.get(1)?,
                        consumer_name: r.get(2)?,
                        callback: r.get(3)?,
                        scope: Scope::parse(&r.get::<_, String>(4)?),
                        state: TemporaryState::parse(&r.get::<_, String>(5)?),
                        expires_at: to_u64(r.get(6)?),
                        owner: r.get(7)?,
                    })
                },
            )
            .optional()?)
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
                params![token, owner, scope.to_string(), verifier],
            )?;
            Ok(())
        })?;
        Ok(verifier)
    }

    /// The owner denies pending temporary credentials.
    pub fn deny(&self, token: &str, now: u64) -> Result<()> {
        self.write(|tx| {
            let (state, _, expires_at) = pending_in(tx, token)?;
            check_pending(&state, expires_at, now)?;
            tx.execute(
                "UPDATE temporary_tokens SET state = 'denied' WHERE token = ?1",
                [token],
            )?;
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
            let row: Option<TemporaryRow> = tx
                .query_row(
                    "SELECT state, consumer_key, scope, owner, verifier, expires_at,
                            exchanged_at, access_token_id
                     FROM temporary_tokens WHERE token = ?1",
                    [token],
                    |r| {
                        Ok(TemporaryRow {
                            state: r.get(0)?,
                            consumer_key: r.get(1)?,
                            scope: r.get(2)?,
                            owner: r.get(3)?,
                            verifier: r.get(4)?,
                            expires_at: r.get(5)?,
                            exchanged_at: r.get::<_, Option<i64>>(6)?.map(to_u64),
                            access_token_id: r.get(7)?,
                        })
                    },
                )
                .optional()?;
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
            if to_u64(row.expires_at) <= now {
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
                params![token, to_i64(now), nonce, grant.id],
            )?;
            Ok(grant)
        })
    }

    /// For temporary credentials exchanged less than `retry_secs` ago: the nonce key of
    /// that exchange (a byte-for-byte retry of it carries the same one). `None` otherwise.
    pub fn exchange_retry(&self, token: &str, retry_secs: u64, now: u64) -> Result<Option<String>> {
        let row: Option<(Option<i64>, Option<String>)> = self
            .lock()
            .query_row(
                "SELECT exchanged_at, exchange_nonce FROM temporary_tokens
                 WHERE token = ?1 AND state = 'used'",
                [token],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(match row {
            Some((Some(at), Some(nonce))) if now <= to_u64(at).saturating_add(retry_secs) => {
                Some(nonce)
            }
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
                .query_row("SELECT 1 FROM owners WHERE name = ?1", [owner], |_| Ok(()))
                .optional()?
                .is_some();
            if !owner_exists {
                return Err(StoreError::NotFound(format!("no owner named {owner}")));
            }
            let revoked: Option<Option<i64>> = tx
                .query_row(
                    "SELECT revoked_at FROM consumers WHERE key = ?1",
                    [consumer_key],
                    |r| r.get(0),
                )
                .optional()?;
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
            insert_grant(tx, consumer_key, owner, scope.clone(), expires_at, now)
        })
    }

    /// Access tokens, optionally only an owner's and/or a consumer's, oldest first.
    pub fn access_tokens(
        &self,
        owner: Option<&str>,
        consumer_key: Option<&str>,
    ) -> Result<Vec<AccessToken>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT t.id, t.token, t.consumer_key, c.name, t.owner, t.scope, t.created_at,
                    t.expires_at, t.revoked_at
             FROM access_tokens t JOIN consumers c ON c.key = t.consumer_key
             WHERE (?1 IS NULL OR t.owner = ?1) AND (?2 IS NULL OR t.consumer_key = ?2)
             ORDER BY t.id",
        )?;
        let rows = stmt.query_map(params![owner, consumer_key], |r| {
            Ok(AccessToken {
                id: r.get(0)?,
                token: r.get(1)?,
                consumer_key: r.get(2)?,
                consumer_name: r.get(3)?,
                owner: r.get(4)?,
                scope: Scope::parse(&r.get::<_, String>(5)?),
                created_at: to_u64(r.get(6)?),
                expires_at: r.get::<_, Option<i64>>(7)?.map(to_u64),
                revoked_at: r.get::<_, Option<i64>>(8)?.map(to_u64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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
                vec![to_i64(now).into()],
                ("expiry_logged", 1),
                ChangeKind::TokenExpired,
                now,
            )
        })
    }

    // ----- the change log -----

    /// Changes after `seq`, oldest first, at most `limit`.
    pub fn changes_since(&self, seq: i64, limit: usize) -> Result<Vec<Change>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT seq, at, kind, token_id, token, consumer_key, owner FROM changes
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![seq, to_i64(limit as u64)], |r| {
            Ok(Change {
                seq: r.get(0)?,
                at: to_u64(r.get(1)?),
                kind: ChangeKind::parse(&r.get::<_, String>(2)?),
                token_id: r.get(3)?,
                token: r.get(4)?,
                consumer_key: r.get(5)?,
                owner: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest sequence number (0 when the log is empty).
    pub fn last_change(&self) -> Result<i64> {
        Ok(self
            .lock()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| {
                r.get(0)
            })?)
    }

    /// The spans of the change log in which `consumer_key` held an access token from
    /// `owner`, one per token, oldest first: from the token's `granted` entry to the entry
    /// that ended it (revoked or expired), if any. The guard replays a node's items to a
    /// consumer only from the spans whose scope permits the node.
    pub fn grant_spans(&self, consumer_key: &str, owner: &str) -> Result<Vec<GrantSpan>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT t.scope, t.expires_at,
                    (SELECT MIN(c.seq) FROM changes c
                     WHERE c.token_id = t.id AND c.kind = 'granted'),
                    (SELECT MIN(c.seq) FROM changes c
                     WHERE c.token_id = t.id AND c.kind IN ('token-revoked', 'token-expired'))
             FROM access_tokens t
             WHERE t.consumer_key = ?1 AND t.owner = ?2
             ORDER BY t.id",
        )?;
        let rows = stmt.query_map(params![consumer_key, owner], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })?;
        let mut spans = Vec::new();
        for row in rows {
            let (scope, expires_at, granted, ended) = row?;
            // A token without its `granted` entry cannot be placed in the log: it opens no
            // span (nothing is replayed that cannot be shown to be covered).
            let Some(granted) = granted else { continue };
            spans.push(GrantSpan {
                scope: Scope::parse(&scope),
                granted_seq: granted,
                ended_seq: ended,
                expires_at: expires_at.map(to_u64),
            });
        }
        Ok(spans)
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
            tx.execute("DELETE FROM sessions WHERE expires_at <= ?1", [to_i64(now)])?;
            if let Some(address) = address {
                tx.execute(
                    "UPDATE sign_in_throttle SET failures = MAX(failures - 1, 0)
                     WHERE subject = ?1",
                    [address],
                )?;
            }
            if let Some(subject) = signin::name_subject(owner) {
                tx.execute("DELETE FROM sign_in_throttle WHERE subject = ?1", [subject])?;
            }
            let failed_before = tx
                .query_row(
                    "SELECT failed_sign_ins, last_failed_sign_in, lockouts FROM owners
                     WHERE name = ?1",
                    [owner],
                    |r| failed_sign_ins(r, 0),
                )
                .optional()?
                .unwrap_or_default();
            tx.execute(
                "UPDATE owners SET failed_sign_ins = 0, last_failed_sign_in = NULL, lockouts = 0
                 WHERE name = ?1",
                [owner],
            )?;
            tx.execute(
                "INSERT INTO sessions (id, owner, csrf, expires_at, failed_sign_ins,
                                       last_failed_sign_in, lockouts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    owner,
                    csrf,
                    to_i64(now.saturating_add(lifetime)),
                    to_i64(failed_before.count),
                    failed_before.last_at.map(to_i64),
                    to_i64(failed_before.lockouts)
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
        Ok(self
            .lock()
            .query_row(
                "SELECT id, owner, csrf, failed_sign_ins, last_failed_sign_in, lockouts
                 FROM sessions WHERE id = ?1 AND expires_at > ?2",
                params![id, to_i64(now)],
                |r| {
                    Ok(Session {
                        id: r.get(0)?,
                        owner: r.get(1)?,
                        csrf: r.get(2)?,
                        failed_before: failed_sign_ins(r, 3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Ends a session.
    pub fn delete_session(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM sessions WHERE id = ?1", [id])?;
            Ok(())
        })
    }
}

/// The three failed-sign-in columns (count, last time, lockouts) from column `at` on, as the
/// owners and sessions tables both hold them.
fn failed_sign_ins(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<FailedSignIns> {
    Ok(FailedSignIns {
        count: to_u64(r.get(at)?),
        last_at: r.get::<_, Option<i64>>(at + 1)?.map(to_u64),
        lockouts: to_u64(r.get(at + 2)?),
    })
}

/// What an exchange reads of temporary credentials.
struct TemporaryRow {
    state: String,
    consumer_key: String,
    scope: String,
    owner: Option<String>,
    verifier: Option<String>,
    expires_at: i64,
    exchanged_at: Option<u64>,
    access_token_id: Option<i64>,
}

/// The access token `id` as a grant, if it is neither revoked nor expired at `now`.
fn live_grant_in(tx: &rusqlite::Transaction<'_>, id: i64, now: u64) -> Result<Option<Grant>> {
    Ok(tx
        .query_row(
            "SELECT token, secret, consumer_key, owner, scope FROM access_tokens
             WHERE id = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
            params![id, to_i64(now)],
            |r| {
                Ok(Grant {
                    id,
                    token: r.get(0)?,
                    secret: Secret::new(r.get::<_, String>(1)?),
                    consumer_key: r.get(2)?,
                    owner: r.get(3)?,
                    scope: Scope::parse(&r.get::<_, String>(4)?),
                })
            },
        )
        .optional()?)
}

const CONSUMER_SELECT: &str =
    "SELECT key, name, jid, callback, created_at, revoked_at FROM consumers";

fn consumer_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Consumer> {
    Ok(Consumer {
        key: r.get(0)?,
        name: r.get(1)?,
        jid: r.get(2)?,
        callback: r.get(3)?,
        created_at: to_u64(r.get(4)?),
        revoked_at: r.get::<_, Option<i64>>(5)?.map(to_u64),
    })
}

fn pending_in(tx: &rusqlite::Transaction<'_>, token: &str) -> Result<(String, String, i64)> {
    tx.query_row(
        "SELECT state, scope, expires_at FROM temporary_tokens WHERE token = ?1",
        [token],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound("unknown temporary token".into()))
}

fn check_pending(state: &str, expires_at: i64, now: u64) -> Result<()> {
    if TemporaryState::parse(state) != TemporaryState::Pending {
        return Err(StoreError::Refused(
            "this request was already answered".into(),
        ));
    }
    if to_u64(expires_at) <= now {
        return Err(StoreError::Refused(
            "this request has expired: ask the application to start again".into(),
        ));
    }
    Ok(())
}

/// Issues an access token (from the OS random generator) and logs the grant.
fn insert_grant(
    tx: &rusqlite::Transaction<'_>,
    consumer_key: &str,
    owner: &str,
    scope: Scope,
    expires_at: Option<u64>,
    now: u64,
) -> Result<Grant> {
    let token = random::token(16)?;
    let secret = Secret::new(random::token(32)?);
    tx.execute(
        "INSERT INTO access_tokens (token, secret, consumer_key, owner, scope, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            token,
            secret.expose(),
            consumer_key,
            owner,
            scope.to_string(),
            to_i64(now),
            expires_at.map(to_i64)
        ],
    )?;
    let id = tx.last_insert_rowid();
    let row = TokenRow {
        id,
        token: &token,
        owner,
    };
    log(tx, now, ChangeKind::Granted, Some(row), consumer_key)?;
    Ok(Grant {
        id,
        token,
        secret,
        consumer_key: consumer_key.to_owned(),
        owner: owner.to_owned(),
        scope,
    })
}

fn revoke_in(tx: &rusqlite::Transaction<'_>, by: &RevokeBy, now: u64) -> Result<usize> {
    use rusqlite::types::Value;
    let (clause, values): (&str, Vec<Value>) = match by {
        RevokeBy::Id(id) => ("id = ?1", vec![(*id).into()]),
        RevokeBy::Token(token) => ("token = ?1", vec![token.clone().into()]),
        RevokeBy::Owner(owner) => ("owner = ?1", vec![owner.clone().into()]),
        RevokeBy::Consumer(key) => ("consumer_key = ?1", vec![key.clone().into()]),
        RevokeBy::OwnerAndId(owner, id) => (
            "owner = ?1 AND id = ?2",
            vec![owner.clone().into(), (*id).into()],
        ),
    };
    end_tokens(
        tx,
        &format!("revoked_at IS NULL AND {clause}"),
        values,
        ("revoked_at", to_i64(now)),
        ChangeKind::TokenRevoked,
        now,
    )
}

/// For every access token matching `filter` (with `values`): sets `column` to its value
/// and logs a `kind` change. Returns how many.
fn end_tokens(
    tx: &rusqlite::Transaction<'_>,
    filter: &str,
    values: Vec<rusqlite::types::Value>,
    (column, value): (&str, i64),
    kind: ChangeKind,
    now: u64,
) -> Result<usize> {
    let rows: Vec<(i64, String, String, String)> = {
        let mut stmt = tx.prepare(&format!(
            "SELECT id, token, consumer_key, owner FROM access_tokens WHERE {filter}"
        ))?;
        let mapped = stmt.query_map(rusqlite::params_from_iter(values), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        mapped.collect::<Result<_, _>>()?
    };
    let update = format!("UPDATE access_tokens SET {column} = ?2 WHERE id = ?1");
    for (id, token, consumer_key, owner) in &rows {
        tx.execute(&update, params![id, value])?;
        let row = TokenRow {
            id: *id,
            token,
            owner,
        };
        log(tx, now, kind, Some(row), consumer_key)?;
    }
    Ok(rows.len())
}

/// The token side of a change-log entry.
struct TokenRow<'a> {
    id: i64,
    token: &'a str,
    owner: &'a str,
}

/// Appends one entry to the change log.
fn log(
    tx: &rusqlite::Transaction<'_>,
    now: u64,
    kind: ChangeKind,
    token: Option<TokenRow<'_>>,
    consumer_key: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO changes (at, kind, token_id, token, consumer_key, owner)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            to_i64(now),
            kind.as_str(),
            token.as_ref().map(|t| t.id),
            token.as_ref().map(|t| t.token),
            consumer_key,
            token.as_ref().map(|t| t.owner)
        ],
    )?;
    Ok(())
}

/// Owner names: what an account name of the service may be (they appear in node names
/// such as `/location/alice`).
fn validate_name(name: &str) -> Result<()> {
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
/// alone, and each token's span of the log (what it may replay). [`Store`] is the SQLite
/// one; the guard's service holds any.
pub trait Authorizations:
    oauth_xmpp::CredentialStore + oauth_xmpp::replay::NonceStore + Send + Sync
{
    /// Changes after `seq`, oldest first, at most `limit` ([`Store::changes_since`]).
    fn changes_since(&self, seq: i64, limit: usize) -> Result<Vec<Change>>;
    /// Logs the expiries that passed by `now` ([`Store::log_expiries`]).
    fn log_expiries(&self, now: u64) -> Result<usize>;
    /// The spans of `consumer_key`'s tokens from `owner` ([`Store::grant_spans`]).
    fn grant_spans(&self, consumer_key: &str, owner: &str) -> Result<Vec<GrantSpan>>;
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
}

/// A connection to the shared SQLite file as every program of the project opens it: the
/// file created with mode 0600 if missing, WAL, `synchronous = NORMAL`, foreign keys on, and
/// a busy timeout so two processes can write to it in turn. The pubsub guard opens its own
/// tables with it.
pub fn connect(path: &Path) -> Result<Connection> {
    create_private(path)?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Creates `path` with mode 0600 if it does not exist (SQLite gives its `-wal` and `-shm`
/// files the same mode).
///
/// An existing file is never opened here: closing any descriptor of a file drops every POSIX
/// lock the process holds on it, including the locks of SQLite connections this process
/// already has on it. A process that holds no lock lets another process's `sqlite3` shell
/// believe it is the last user and delete the `-wal` file under it.
fn create_private(path: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Open {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests;
