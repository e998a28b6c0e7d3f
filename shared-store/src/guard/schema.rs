//! The guard's tables in the shared database. They carry a `guard_` prefix and their own
//! version number, so they migrate independently of the authorization server's tables: on
//! SQLite in `guard_state` (which `DbStorage::open` creates first; the authorization server
//! uses `PRAGMA user_version`), on PostgreSQL in the `guard` row of `schema_versions`.

/// Each SQLite migration, in order; the version after running migration `i` is `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    "CREATE TABLE guard_nodes (
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
    );",
    // One subscription per (node, bare JID): `bare` is the key, `jid` the address that
    // notifications go to (the subscribed JID as normalized at the edge). Older rows are
    // folded to lower case, and the newest of each bare JID is kept.
    "CREATE TABLE guard_subscriptions_v2 (
        node TEXT NOT NULL REFERENCES guard_nodes(name) ON DELETE CASCADE,
        bare TEXT NOT NULL,
        jid TEXT NOT NULL,
        subid TEXT NOT NULL,
        token TEXT,
        consumer_key TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (node, bare)
    );
    INSERT OR REPLACE INTO guard_subscriptions_v2
        (node, bare, jid, subid, token, consumer_key, created_at)
        SELECT node,
               lower(CASE WHEN instr(jid, '/') > 0 THEN substr(jid, 1, instr(jid, '/') - 1)
                     ELSE jid END),
               lower(jid), subid, token, consumer_key, created_at
        FROM guard_subscriptions ORDER BY created_at;
    DROP TABLE guard_subscriptions;
    ALTER TABLE guard_subscriptions_v2 RENAME TO guard_subscriptions;
    CREATE INDEX guard_subscriptions_token ON guard_subscriptions(token);
    UPDATE OR IGNORE guard_publishers SET jid = lower(jid);
    DELETE FROM guard_publishers WHERE jid <> lower(jid);",
    // Items are read a page at a time, in publish order (XEP-0059).
    "CREATE INDEX guard_items_node_seq ON guard_items(node, seq);",
    // Catch-up (issue 12): each item takes the node's next position (its archive id is
    // `{pos}-{seq}`) and records the authorization server's change-log position at its
    // commit (which grants cover it, profile N11); nodes keep their retention by age, whether
    // a new subscriber gets the last item, how many items they hold, and the newest position
    // retention dropped (the gap signal, N12). Positions of older items follow their
    // publish order; their change-log positions are filled in by `DbStorage::migrate`.
    "ALTER TABLE guard_nodes ADD COLUMN max_age_secs INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE guard_nodes ADD COLUMN send_last INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE guard_nodes ADD COLUMN last_pos INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE guard_nodes ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE guard_nodes ADD COLUMN trimmed_through INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE guard_nodes ADD COLUMN trimmed_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE guard_nodes ADD COLUMN created_seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE guard_items ADD COLUMN pos INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE guard_items ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
    UPDATE guard_items SET pos = (SELECT COUNT(*) FROM guard_items o
                                  WHERE o.node = guard_items.node AND o.seq <= guard_items.seq);
    UPDATE guard_nodes SET
        held = (SELECT COUNT(*) FROM guard_items i WHERE i.node = guard_nodes.name),
        last_pos = (SELECT COALESCE(MAX(pos), 0) FROM guard_items i WHERE i.node = guard_nodes.name),
        send_last = (owner IS NOT NULL);
    DROP INDEX guard_items_node_seq;
    -- Covering: counts, offsets and grant checks of a page read the index alone, never the
    -- payloads.
    CREATE INDEX guard_items_history ON guard_items(node, pos, change_seq, published_at);
    CREATE INDEX guard_items_node_time ON guard_items(node, published_at);",
    // At scale (issue 15): a sender's own subscriptions and the nodes it publishes to are
    // found by its bare JID, without reading every row.
    BY_BARE_JID,
];

/// The indexes that find a sender's subscriptions and publishing rights by its bare JID (the
/// last migration on both engines).
const BY_BARE_JID: &str = "CREATE INDEX guard_subscriptions_bare ON guard_subscriptions(bare);
    CREATE INDEX guard_publishers_jid ON guard_publishers(jid);";

/// Each PostgreSQL migration, in order (versioned in `schema_versions`, part `guard`). The
/// first is the whole schema SQLite reached in its four: every integer a `BIGINT`, text that
/// is ordered or compared in byte order (`COLLATE "C"`, as SQLite compares), item numbers
/// from a sequence that never gives a number twice.
pub(super) const POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS guard_state (
        key TEXT COLLATE \"C\" PRIMARY KEY,
        value BIGINT NOT NULL
    );
    CREATE TABLE guard_nodes (
        name TEXT COLLATE \"C\" PRIMARY KEY,
        owner TEXT COLLATE \"C\",
        access TEXT NOT NULL,
        max_items BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        max_age_secs BIGINT NOT NULL DEFAULT 0,
        send_last BIGINT NOT NULL DEFAULT 0,
        last_pos BIGINT NOT NULL DEFAULT 0,
        held BIGINT NOT NULL DEFAULT 0,
        trimmed_through BIGINT NOT NULL DEFAULT 0,
        trimmed_at BIGINT NOT NULL DEFAULT 0,
        created_seq BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE guard_publishers (
        node TEXT COLLATE \"C\" NOT NULL REFERENCES guard_nodes(name) ON DELETE CASCADE,
        jid TEXT COLLATE \"C\" NOT NULL,
        PRIMARY KEY (node, jid)
    );
    CREATE TABLE guard_subscriptions (
        node TEXT COLLATE \"C\" NOT NULL REFERENCES guard_nodes(name) ON DELETE CASCADE,
        bare TEXT COLLATE \"C\" NOT NULL,
        jid TEXT COLLATE \"C\" NOT NULL,
        subid TEXT NOT NULL,
        token TEXT COLLATE \"C\",
        consumer_key TEXT,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (node, bare)
    );
    CREATE INDEX guard_subscriptions_token ON guard_subscriptions(token);
    CREATE SEQUENCE guard_item_numbers;
    CREATE TABLE guard_items (
        seq BIGINT PRIMARY KEY DEFAULT nextval('guard_item_numbers'),
        node TEXT COLLATE \"C\" NOT NULL REFERENCES guard_nodes(name) ON DELETE CASCADE,
        id TEXT COLLATE \"C\" NOT NULL,
        payload TEXT NOT NULL,
        publisher TEXT NOT NULL,
        published_at BIGINT NOT NULL,
        pos BIGINT NOT NULL,
        change_seq BIGINT NOT NULL DEFAULT 0,
        UNIQUE (node, id)
    );
    ALTER SEQUENCE guard_item_numbers OWNED BY guard_items.seq;
    CREATE INDEX guard_items_history ON guard_items(node, pos, change_seq, published_at);
    CREATE INDEX guard_items_node_time ON guard_items(node, published_at);",
    BY_BARE_JID,
];
