//! The store as `oauth-xmpp` sees it: the credential lookup and the nonce store of the
//! verifier, shared by the authorization server and the guard.

use super::{Store, TemporaryState};
use crate::args;
use oauth_xmpp::replay::{NonceKey, NonceOutcome, NonceStore};
use oauth_xmpp::{ConsumerRecord, CredentialStore, Scope, Secret, TokenKind, TokenRecord};

fn store_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> oauth_xmpp::StoreError {
    oauth_xmpp::StoreError::new(e)
}

impl CredentialStore for Store {
    fn consumer(
        &self,
        consumer_key: &str,
    ) -> Result<Option<ConsumerRecord>, oauth_xmpp::StoreError> {
        self.read_each(|tx| {
            Ok(tx.query_opt(
                "SELECT secret, revoked_at IS NOT NULL FROM consumers WHERE key = ?1",
                args![consumer_key],
                |r| {
                    Ok(ConsumerRecord {
                        secret: Secret::new(r.get::<String>(0)?),
                        revoked: r.get(1)?,
                    })
                },
            )?)
        })
        .map_err(store_error)
    }

    /// An access token, else temporary credentials, read on one snapshot.
    fn token(&self, token: &str) -> Result<Option<TokenRecord>, oauth_xmpp::StoreError> {
        self.read_each(|tx| {
            let access = tx.query_opt(
                "SELECT secret, consumer_key, owner, scope, expires_at, revoked_at IS NOT NULL
                 FROM access_tokens WHERE token = ?1",
                args![token],
                |r| {
                    Ok(TokenRecord {
                        secret: Secret::new(r.get::<String>(0)?),
                        consumer_key: r.get(1)?,
                        kind: TokenKind::Access,
                        owner: Some(r.get(2)?),
                        scope: Scope::parse(&r.get::<String>(3)?),
                        expires_at: r.get(4)?,
                        revoked: r.get(5)?,
                        used: false,
                    })
                },
            )?;
            if access.is_some() {
                return Ok(access);
            }
            Ok(tx.query_opt(
                "SELECT secret, consumer_key, owner, scope, expires_at, state
                 FROM temporary_tokens WHERE token = ?1",
                args![token],
                |r| {
                    let state = TemporaryState::parse(&r.get::<String>(5)?);
                    Ok(TokenRecord {
                        secret: Secret::new(r.get::<String>(0)?),
                        consumer_key: r.get(1)?,
                        kind: TokenKind::Temporary,
                        owner: r.get(2)?,
                        scope: Scope::parse(&r.get::<String>(3)?),
                        expires_at: Some(r.get(4)?),
                        revoked: state == TemporaryState::Denied,
                        used: state == TemporaryState::Used,
                    })
                },
            )?)
        })
        .map_err(store_error)
    }
}

impl NonceStore for Store {
    /// One statement, atomic across processes and outside the writers' turns
    /// ([`crate::db::Database::atomic`]): insert the key, or take it over if its earlier
    /// record has expired; a row changed means the nonce is fresh.
    fn check_and_record(
        &self,
        key: &NonceKey<'_>,
        expires_at: u64,
        now: u64,
    ) -> Result<NonceOutcome, oauth_xmpp::StoreError> {
        let mut canonical = String::new();
        key.write_canonical(&mut canonical);
        // Keep the table bounded by traffic × window: drop what expired, once a second.
        let last = self
            .nonces_purged_at
            .fetch_max(now, std::sync::atomic::Ordering::Relaxed);
        let changed = self
            .db
            .atomic(|tx| {
                let changed = tx.execute(
                    "INSERT INTO nonces (key, expires_at) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET expires_at = excluded.expires_at
                     WHERE nonces.expires_at < ?3",
                    args![&canonical, expires_at, now],
                )?;
                if last < now {
                    tx.execute("DELETE FROM nonces WHERE expires_at < ?1", args![now])?;
                }
                Ok::<_, crate::backend::BackendError>(changed)
            })
            .map_err(store_error)?;
        Ok(if changed == 1 {
            NonceOutcome::Fresh
        } else {
            NonceOutcome::Replayed
        })
    }
}
