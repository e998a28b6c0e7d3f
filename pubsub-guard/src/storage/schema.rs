//! The guard's tables in the shared SQLite file. They carry a `guard_` prefix and their own
//! version number (in `guard_state`, which `SqliteStorage::open` creates first), so they migrate independently of the authorization
//! server's tables (which use `PRAGMA user_version`).

/// Each migration, in order; the version after running migration `i` is `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &["CREATE TABLE guard_nodes (
        name TEXT PRIMARY KEY,
        owner TEXT,
        access TEXT NOT NULL,
        max_items INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE guard_publishers (
        node TEXT NOT NULL REFERENCES guard_nodes(name) ON DELETE CASCADE,
        jid TEXT NOT NULL,
        PRIMARY KEY (node, jid)
    );
    CREATE TABLE guard_subscriptions (
        node TEXT NOT NULL REFERENCES guard_nodes(name) ON DELETE CASCADE,
        jid TEXT NOT NULL,
        subid TEXT NOT NULL,
        token TEXT,
        consumer_key TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (node, jid)
    );
    CREATE INDEX guard_subscriptions_token ON guard_subscriptions(token);
    CREATE TABLE guard_items (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        node TEXT NOT NULL REFERENCES guard_nodes(name) ON DELETE CASCADE,
        id TEXT NOT NULL,
        payload TEXT NOT NULL,
        publisher TEXT NOT NULL,
        published_at INTEGER NOT NULL,
        UNIQUE (node, id)
    );"];
