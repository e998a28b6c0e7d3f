//! The schema, as an ordered list of migrations. `PRAGMA user_version` holds how many have
//! run; `Store::open` runs the rest in one transaction each.

/// Every migration, oldest first. Never edit one that has shipped: append a new one.
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
];
