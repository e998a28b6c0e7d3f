//! The schema, as an ordered list of migrations for each engine: [`MIGRATIONS`] for SQLite,
//! where `PRAGMA user_version` holds how many have run, and [`POSTGRES`] for PostgreSQL,
//! where the `authz` row of `schema_versions` does. `Store::open` runs the rest in its one
//! writer's transaction, so two processes starting at once take turns.

use crate::db::{Engine, Tx, migrations};

use super::{Result, StoreError};

/// The PostgreSQL channel the change log's trigger notifies (see [`POSTGRES`]).
pub(crate) const CHANGES_CHANNEL: &str = "authz_changes";

/// The part of the store whose version the `schema_versions` row holds on PostgreSQL (the
/// guard's tables are the part `guard`).
const PART: &str = "authz";

/// Every SQLite migration, oldest first. Never edit one that has shipped: append a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE owners (
        name          TEXT PRIMARY KEY NOT NULL,
        password_hash TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE consumers (
        key        TEXT PRIMARY KEY NOT NULL,
        secret     TEXT NOT NULL,
        name       TEXT NOT NULL,
        jid        TEXT,
        callback   TEXT,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    ) STRICT;
    CREATE TABLE temporary_tokens (
        token        TEXT PRIMARY KEY NOT NULL,
        secret       TEXT NOT NULL,
        consumer_key TEXT NOT NULL REFERENCES consumers(key),
        callback     TEXT NOT NULL,
        scope        TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        -- 'pending', then 'approved' (owner, verifier, scope set) or 'denied', then 'used'
        state        TEXT NOT NULL DEFAULT 'pending',
        owner        TEXT,
        verifier     TEXT
    ) STRICT;
    CREATE TABLE access_tokens (
        id           INTEGER PRIMARY KEY,
        token        TEXT NOT NULL UNIQUE,
        secret       TEXT NOT NULL,
        consumer_key TEXT NOT NULL REFERENCES consumers(key),
        owner        TEXT NOT NULL,
        scope        TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER,
        revoked_at   INTEGER,
        expiry_logged INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE INDEX access_tokens_owner ON access_tokens(owner);
    CREATE INDEX access_tokens_consumer ON access_tokens(consumer_key);
    CREATE TABLE nonces (
        key        TEXT PRIMARY KEY NOT NULL,
        expires_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX nonces_expiry ON nonces(expires_at);
    CREATE TABLE sessions (
        id         TEXT PRIMARY KEY NOT NULL,
        owner      TEXT NOT NULL,
        csrf       TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE changes (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        at           INTEGER NOT NULL,
        kind         TEXT NOT NULL,
        token_id     INTEGER,
        token        TEXT,
        consumer_key TEXT,
        owner        TEXT
    ) STRICT;",
    // 2: sign-in throttling and the owner's notice of failed sign-ins; a retry-safe
    // access-token exchange (profile P6).
    "CREATE TABLE sign_in_throttle (
        -- 'name:alice' or 'addr:192.0.2.1' (IPv6: the /64)
        subject      TEXT PRIMARY KEY NOT NULL,
        failures     INTEGER NOT NULL,
        last_failure INTEGER NOT NULL,
        locked_until INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    -- failed sign-ins since the owner's last sign-in, shown to her at the next one
    ALTER TABLE owners ADD COLUMN failed_sign_ins INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE owners ADD COLUMN last_failed_sign_in INTEGER;
    ALTER TABLE owners ADD COLUMN lockouts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN failed_sign_ins INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN last_failed_sign_in INTEGER;
    ALTER TABLE sessions ADD COLUMN lockouts INTEGER NOT NULL DEFAULT 0;
    -- the exchange that used the temporary token: when, its nonce, the access token it gave
    ALTER TABLE temporary_tokens ADD COLUMN exchanged_at INTEGER;
    ALTER TABLE temporary_tokens ADD COLUMN exchange_nonce TEXT;
    ALTER TABLE temporary_tokens ADD COLUMN access_token_id INTEGER;",
    // 3: the guard reads each token's span of the change log (what it may replay).
    "CREATE INDEX changes_token ON changes(token_id);",
    BY_OWNER_AND_CONSUMER,
    // 5: what an operator and an owner can see (issue 14).
    AUDIT_SQLITE,
];

/// The audit ledger (append-only: triggers refuse updates and deletes, and each entry's
/// `hash` chains it to the one before, see `ledger`), each grant's deliveries per node,
/// and in the change log the millisecond of each change (the guard measures how long a
/// revocation took to reach the subscribers) and the node of an admin's ending of
/// subscriptions. The owner's page reads an application's latest refusals through
/// `audit_ledger_owner` without sorting them (a client refused all day makes many).
const AUDIT_SQLITE: &str = "CREATE TABLE audit_ledger (
        seq          INTEGER PRIMARY KEY,
        at_ms        INTEGER NOT NULL,
        kind         TEXT NOT NULL,
        actor        TEXT NOT NULL,
        owner        TEXT,
        consumer_key TEXT,
        token_id     INTEGER,
        node         TEXT,
        detail       TEXT NOT NULL,
        hash         TEXT NOT NULL
    ) STRICT;
    CREATE INDEX audit_ledger_token ON audit_ledger(token_id);
    CREATE INDEX audit_ledger_owner ON audit_ledger(owner, consumer_key, kind, seq);
    CREATE TRIGGER audit_ledger_no_update BEFORE UPDATE ON audit_ledger
        BEGIN SELECT RAISE(ABORT, 'the audit ledger is append-only'); END;
    CREATE TRIGGER audit_ledger_no_delete BEFORE DELETE ON audit_ledger
        BEGIN SELECT RAISE(ABORT, 'the audit ledger is append-only'); END;
    CREATE TABLE audit_deliveries (
        token_id INTEGER NOT NULL,
        node     TEXT NOT NULL,
        pushed   INTEGER NOT NULL DEFAULT 0,
        fetched  INTEGER NOT NULL DEFAULT 0,
        first_ms INTEGER NOT NULL,
        last_ms  INTEGER NOT NULL,
        PRIMARY KEY (token_id, node)
    ) STRICT;
    ALTER TABLE changes ADD COLUMN at_ms INTEGER;
    ALTER TABLE changes ADD COLUMN node TEXT;";

/// [`AUDIT_SQLITE`] on PostgreSQL.
const AUDIT_POSTGRES: &str = r#"CREATE TABLE audit_ledger (
        seq          BIGINT PRIMARY KEY,
        at_ms        BIGINT NOT NULL,
        kind         TEXT COLLATE "C" NOT NULL,
        actor        TEXT COLLATE "C" NOT NULL,
        owner        TEXT COLLATE "C",
        consumer_key TEXT COLLATE "C",
        token_id     BIGINT,
        node         TEXT COLLATE "C",
        detail       TEXT NOT NULL,
        hash         TEXT NOT NULL
    );
    CREATE INDEX audit_ledger_token ON audit_ledger(token_id);
    CREATE INDEX audit_ledger_owner ON audit_ledger(owner, consumer_key, kind, seq);
    CREATE FUNCTION audit_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the audit ledger is append-only';
    END
    $$;
    CREATE TRIGGER audit_ledger_no_change BEFORE UPDATE OR DELETE ON audit_ledger
        FOR EACH ROW EXECUTE FUNCTION audit_ledger_append_only();
    CREATE TRIGGER audit_ledger_no_truncate BEFORE TRUNCATE ON audit_ledger
        FOR EACH STATEMENT EXECUTE FUNCTION audit_ledger_append_only();
    CREATE TABLE audit_deliveries (
        token_id BIGINT NOT NULL,
        node     TEXT COLLATE "C" NOT NULL,
        pushed   BIGINT NOT NULL DEFAULT 0,
        fetched  BIGINT NOT NULL DEFAULT 0,
        first_ms BIGINT NOT NULL,
        last_ms  BIGINT NOT NULL,
        PRIMARY KEY (token_id, node)
    );
    ALTER TABLE changes ADD COLUMN at_ms BIGINT;
    ALTER TABLE changes ADD COLUMN node TEXT COLLATE "C";"#;

/// A consumer's tokens from one owner, found without reading the consumer's others (with
/// only the two single-column indexes, SQLite read every token of a consumer holding grants
/// from 10,000 owners for each subscribe); it serves the lookups by owner alone too.
const BY_OWNER_AND_CONSUMER: &str =
    "CREATE INDEX access_tokens_owner_consumer ON access_tokens(owner, consumer_key);
    DROP INDEX access_tokens_owner;";

/// Every PostgreSQL migration, oldest first. Never edit one that has shipped: append a new
/// one. The first is the whole of [`MIGRATIONS`] at the time: every integer a `BIGINT`, the
/// log's positions and the access tokens' ids handed out by identity columns, and the text
/// that is compared or ordered (names, keys, tokens) in the "C" collation, so that it sorts
/// byte by byte as in SQLite whatever the server's locale.
pub(crate) const POSTGRES: &[&str] = &[
    // 1: the schema of SQLite migrations 1 to 3, and the change log's notification.
    r#"CREATE TABLE owners (
        name                TEXT COLLATE "C" PRIMARY KEY,
        password_hash       TEXT NOT NULL,
        created_at          BIGINT NOT NULL,
        -- failed sign-ins since the owner's last sign-in, shown to her at the next one
        failed_sign_ins     BIGINT NOT NULL DEFAULT 0,
        last_failed_sign_in BIGINT,
        lockouts            BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE consumers (
        key        TEXT COLLATE "C" PRIMARY KEY,
        secret     TEXT NOT NULL,
        name       TEXT NOT NULL,
        jid        TEXT,
        callback   TEXT,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE TABLE temporary_tokens (
        token           TEXT COLLATE "C" PRIMARY KEY,
        secret          TEXT NOT NULL,
        consumer_key    TEXT COLLATE "C" NOT NULL REFERENCES consumers(key),
        callback        TEXT NOT NULL,
        scope           TEXT NOT NULL,
        created_at      BIGINT NOT NULL,
        expires_at      BIGINT NOT NULL,
        -- 'pending', then 'approved' (owner, verifier, scope set) or 'denied', then 'used'
        state           TEXT COLLATE "C" NOT NULL DEFAULT 'pending',
        owner           TEXT COLLATE "C",
        verifier        TEXT,
        -- the exchange that used the token: when, its nonce, the access token it gave
        exchanged_at    BIGINT,
        exchange_nonce  TEXT COLLATE "C",
        access_token_id BIGINT
    );
    CREATE TABLE access_tokens (
        id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        token         TEXT COLLATE "C" NOT NULL UNIQUE,
        secret        TEXT NOT NULL,
        consumer_key  TEXT COLLATE "C" NOT NULL REFERENCES consumers(key),
        owner         TEXT COLLATE "C" NOT NULL,
        scope         TEXT NOT NULL,
        created_at    BIGINT NOT NULL,
        expires_at    BIGINT,
        revoked_at    BIGINT,
        expiry_logged BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX access_tokens_owner ON access_tokens(owner);
    CREATE INDEX access_tokens_consumer ON access_tokens(consumer_key);
    CREATE TABLE nonces (
        key        TEXT COLLATE "C" PRIMARY KEY,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX nonces_expiry ON nonces(expires_at);
    CREATE TABLE sessions (
        id                  TEXT COLLATE "C" PRIMARY KEY,
        owner               TEXT COLLATE "C" NOT NULL,
        csrf                TEXT NOT NULL,
        expires_at          BIGINT NOT NULL,
        failed_sign_ins     BIGINT NOT NULL DEFAULT 0,
        last_failed_sign_in BIGINT,
        lockouts            BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE changes (
        seq          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        at           BIGINT NOT NULL,
        kind         TEXT COLLATE "C" NOT NULL,
        token_id     BIGINT,
        token        TEXT COLLATE "C",
        consumer_key TEXT COLLATE "C",
        owner        TEXT COLLATE "C"
    );
    CREATE INDEX changes_token ON changes(token_id);
    CREATE TABLE sign_in_throttle (
        -- 'name:alice' or 'addr:192.0.2.1' (IPv6: the /64)
        subject      TEXT COLLATE "C" PRIMARY KEY,
        failures     BIGINT NOT NULL,
        last_failure BIGINT NOT NULL,
        locked_until BIGINT NOT NULL DEFAULT 0
    );
    -- Followers of the log (the guard) wake up when a statement appends to it; the
    -- notification is sent when the transaction commits.
    CREATE FUNCTION authz_changes_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('authz_changes', '');
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER changes_notify AFTER INSERT ON changes
        FOR EACH STATEMENT EXECUTE FUNCTION authz_changes_notify();"#,
    BY_OWNER_AND_CONSUMER,
    AUDIT_POSTGRES,
];

/// The migrations of the engine `tx` runs on.
fn migrations(tx: &Tx<'_>) -> &'static [&'static str] {
    match tx.engine() {
        Engine::Sqlite => MIGRATIONS,
        Engine::Postgres => POSTGRES,
    }
}

/// The schema version of the database: how many of its engine's migrations have run.
pub(crate) fn version(tx: &Tx<'_>) -> Result<i64> {
    Ok(match tx.engine() {
        Engine::Sqlite => tx.query_one("PRAGMA user_version", &[], |r| r.get(0))?,
        Engine::Postgres => migrations::postgres_version(tx, PART)?,
    })
}

/// Runs the migrations the database lacks (`tx` is the only writer's transaction);
/// [`StoreError::TooNew`] if it has more than this program knows.
pub(crate) fn migrate(tx: &Tx<'_>) -> Result<()> {
    let too_new = |found, known| StoreError::TooNew { found, known };
    migrations::run(tx, migrations(tx), version(tx)?, too_new, |tx, reached| {
        match tx.engine() {
            // A pragma takes no parameter.
            Engine::Sqlite => tx.batch(&format!("PRAGMA user_version = {reached}"))?,
            Engine::Postgres => migrations::set_postgres_version(tx, PART, reached)?,
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trigger's channel is the one `watch_changes` listens on.
    #[test]
    fn the_trigger_notifies_the_channel_listened_on() {
        assert!(POSTGRES[0].contains(&format!("pg_notify('{CHANGES_CHANNEL}', '')")));
    }
}
