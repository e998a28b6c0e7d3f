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
];
