//! [`Storage`] on the SQLite file shared with the authorization server.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::schema::MIGRATIONS;
use super::{Access, Item, Node, Page, PageFrom, Result, Storage, StorageError, Subscription};

/// The guard's state in the shared SQLite file.
pub struct SqliteStorage {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStorage").finish_non_exhaustive()
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl SqliteStorage {
    /// Opens the guard's tables in the shared file at `path` (created private if missing, see
    /// [`authz_server::store::connect`]), migrating them.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let conn = authz_server::store::connect(path.as_ref())?;
        let storage = Self {
            conn: Mutex::new(conn),
        };
        storage.migrate()?;
        Ok(storage)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half-done (rusqlite rolls
        // back on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    fn migrate(&self) -> Result<()> {
        self.write(|tx| {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS guard_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
            )?;
            let version = state(tx, "schema_version")?;
            let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
            if version > known {
                return Err(StorageError::Corrupt(format!(
                    "the guard's tables are at version {version}, newer than this program ({known})"
                )));
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(to_u64(version) as usize) {
                tx.execute_batch(sql)?;
                set_state(tx, "schema_version", i as i64 + 1)?;
            }
            Ok(())
        })
    }
}

fn state(conn: &Connection, key: &str) -> Result<i64> {
    Ok(conn
        .query_row("SELECT value FROM guard_state WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or(0))
}

fn set_state(conn: &Connection, key: &str, value: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO guard_state (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

const SUBSCRIPTION_COLUMNS: &str = "node, jid, subid, token, consumer_key, created_at";

fn subscription_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Subscription> {
    Ok(Subscription {
        node: r.get(0)?,
        jid: r.get(1)?,
        subid: r.get(2)?,
        token: r.get(3)?,
        consumer_key: r.get(4)?,
        created_at: to_u64(r.get(5)?),
    })
}

fn item_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Item> {
    Ok(Item {
        id: r.get(0)?,
        payload: r.get(1)?,
        publisher: r.get(2)?,
        published_at: to_u64(r.get(3)?),
    })
}

fn load_node(conn: &Connection, name: &str) -> Result<Option<Node>> {
    let row = conn
        .query_row(
            "SELECT name, owner, access, max_items, created_at FROM guard_nodes WHERE name = ?1",
            [name],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            },
        )
        .optional()?;
    let Some((name, owner, access, max_items, created_at)) = row else {
        return Ok(None);
    };
    let access = Access::parse(&access)
        .ok_or_else(|| StorageError::Corrupt(format!("node {name}: unknown access {access:?}")))?;
    let mut stmt = conn.prepare("SELECT jid FROM guard_publishers WHERE node = ?1 ORDER BY jid")?;
    let publishers = stmt
        .query_map([&name], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(Node {
        name,
        owner,
        access,
        publishers,
        max_items: u32::try_from(max_items).unwrap_or(u32::MAX),
        created_at: to_u64(created_at),
    }))
}

impl Storage for SqliteStorage {
    fn create_node(&self, node: &Node) -> Result<()> {
        self.write(|tx| {
            let inserted = tx.execute(
                "INSERT INTO guard_nodes (name, owner, access, max_items, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO NOTHING",
                params![
                    node.name,
                    node.owner,
                    node.access.as_str(),
                    node.max_items,
                    to_i64(node.created_at)
                ],
            )?;
            if inserted == 0 {
                return Err(StorageError::NodeExists(node.name.clone()));
            }
            for jid in &node.publishers {
                tx.execute(
                    "INSERT OR IGNORE INTO guard_publishers (node, jid) VALUES (?1, ?2)",
                    params![node.name, jid],
                )?;
            }
            Ok(())
        })
    }

    fn node(&self, name: &str) -> Result<Option<Node>> {
        load_node(&self.lock(), name)
    }

    fn nodes(&self) -> Result<Vec<Node>> {
        let conn = self.lock();
        let names: Vec<String> = conn
            .prepare("SELECT name FROM guard_nodes ORDER BY name")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        names
            .iter()
            .filter_map(|name| load_node(&conn, name).transpose())
            .collect()
    }

    fn delete_node(&self, name: &str) -> Result<Option<Vec<Subscription>>> {
        self.write(|tx| {
            let subscriptions = select_subscriptions(tx, Some(name))?;
            let deleted = tx.execute("DELETE FROM guard_nodes WHERE name = ?1", [name])?;
            Ok((deleted > 0).then_some(subscriptions))
        })
    }

    fn subscribe(&self, s: &Subscription) -> Result<Subscription> {
        self.write(|tx| {
            Ok(tx.query_row(
                &format!(
                    "INSERT INTO guard_subscriptions
                         (node, jid, subid, token, consumer_key, created_at, bare)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (node, bare) DO UPDATE SET jid = excluded.jid,
                         token = excluded.token, consumer_key = excluded.consumer_key,
                         created_at = excluded.created_at
                     RETURNING {SUBSCRIPTION_COLUMNS}"
                ),
                params![
                    s.node,
                    s.jid,
                    s.subid,
                    s.token,
                    s.consumer_key,
                    to_i64(s.created_at),
                    crate::jid::bare(&s.jid)
                ],
                subscription_row,
            )?)
        })
    }

    fn unsubscribe(&self, node: &str, jid: &str) -> Result<Option<Subscription>> {
        self.write(|tx| {
            Ok(tx
                .query_row(
                    &format!(
                        "DELETE FROM guard_subscriptions WHERE node = ?1 AND bare = ?2
                         RETURNING {SUBSCRIPTION_COLUMNS}"
                    ),
                    params![node, crate::jid::bare(jid)],
                    subscription_row,
                )
                .optional()?)
        })
    }

    fn subscriptions(&self, node: Option<&str>) -> Result<Vec<Subscription>> {
        select_subscriptions(&self.lock(), node)
    }

    fn end_token(&self, token: &str) -> Result<Vec<Subscription>> {
        self.write(|tx| {
            let mut stmt = tx.prepare(&format!(
                "DELETE FROM guard_subscriptions WHERE token = ?1 RETURNING {SUBSCRIPTION_COLUMNS}"
            ))?;
            let ended = stmt
                .query_map([token], subscription_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(ended)
        })
    }

    fn publish(&self, node: &str, item: &Item, max_items: u32) -> Result<Vec<String>> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM guard_items WHERE node = ?1 AND id = ?2",
                params![node, item.id],
            )?;
            tx.execute(
                "INSERT INTO guard_items (node, id, payload, publisher, published_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    node,
                    item.id,
                    item.payload,
                    item.publisher,
                    to_i64(item.published_at)
                ],
            )?;
            let mut stmt = tx.prepare(
                "DELETE FROM guard_items WHERE node = ?1 AND seq NOT IN
                   (SELECT seq FROM guard_items WHERE node = ?1 ORDER BY seq DESC LIMIT ?2)
                 RETURNING id",
            )?;
            let dropped = stmt
                .query_map(params![node, max_items], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(dropped)
        })
    }

    fn retract(&self, node: &str, id: &str) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM guard_items WHERE node = ?1 AND id = ?2",
                params![node, id],
            )? > 0)
        })
    }

    fn items_by_id(&self, node: &str, ids: &[&str]) -> Result<Vec<Item>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, payload, publisher, published_at FROM guard_items
             WHERE node = ?1 AND id = ?2",
        )?;
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(item) = stmt.query_row(params![node, id], item_row).optional()? {
                items.push(item);
            }
        }
        Ok(items)
    }

    fn items_page(&self, node: &str, from: &PageFrom, max: u32) -> Result<Option<Page>> {
        // One read transaction: the count, the offset and the page agree even while
        // another connection publishes.
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let count: i64 = tx.query_row(
            "SELECT COUNT(*) FROM guard_items WHERE node = ?1",
            [node],
            |r| r.get(0),
        )?;
        let seq_of = |id: &str| -> rusqlite::Result<Option<i64>> {
            tx.query_row(
                "SELECT seq FROM guard_items WHERE node = ?1 AND id = ?2",
                params![node, id],
                |r| r.get(0),
            )
            .optional()
        };
        let rank = |seq: i64| -> rusqlite::Result<i64> {
            tx.query_row(
                "SELECT COUNT(*) FROM guard_items WHERE node = ?1 AND seq < ?2",
                params![node, seq],
                |r| r.get(0),
            )
        };
        let max = i64::from(max);
        // (the first offset, and the rows in publish order from there)
        let (first, rows): (i64, Vec<Item>) = match from {
            PageFrom::Start | PageFrom::Index(_) => {
                let offset = match from {
                    PageFrom::Index(i) => i64::from(*i),
                    _ => 0,
                };
                let mut stmt = tx.prepare(
                    "SELECT id, payload, publisher, published_at FROM guard_items
                     WHERE node = ?1 ORDER BY seq LIMIT ?2 OFFSET ?3",
                )?;
                let rows = stmt
                    .query_map(params![node, max, offset], item_row)?
                    .collect::<rusqlite::Result<_>>()?;
                (offset, rows)
            }
            PageFrom::After(id) => {
                let Some(seq) = seq_of(id)? else {
                    return Ok(None);
                };
                let mut stmt = tx.prepare(
                    "SELECT id, payload, publisher, published_at FROM guard_items
                     WHERE node = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )?;
                let rows = stmt
                    .query_map(params![node, seq, max], item_row)?
                    .collect::<rusqlite::Result<_>>()?;
                (rank(seq)? + 1, rows)
            }
            PageFrom::Before(_) | PageFrom::End => {
                let before = match from {
                    PageFrom::Before(id) => match seq_of(id)? {
                        Some(seq) => seq,
                        None => return Ok(None),
                    },
                    _ => i64::MAX,
                };
                let mut stmt = tx.prepare(
                    "SELECT id, payload, publisher, published_at FROM
                       (SELECT * FROM guard_items WHERE node = ?1 AND seq < ?2
                        ORDER BY seq DESC LIMIT ?3)
                     ORDER BY seq",
                )?;
                let rows: Vec<Item> = stmt
                    .query_map(params![node, before, max], item_row)?
                    .collect::<rusqlite::Result<_>>()?;
                let below = if before == i64::MAX {
                    count
                } else {
                    rank(before)?
                };
                (below - rows.len() as i64, rows)
            }
        };
        Ok(Some(Page {
            items: rows,
            count: u32::try_from(count).unwrap_or(u32::MAX),
            first_index: u32::try_from(first.max(0)).unwrap_or(u32::MAX),
        }))
    }

    fn change_cursor(&self) -> Result<i64> {
        state(&self.lock(), "change_cursor")
    }

    fn set_change_cursor(&self, seq: i64) -> Result<()> {
        set_state(&self.lock(), "change_cursor", seq)
    }
}

fn select_subscriptions(conn: &Connection, node: Option<&str>) -> Result<Vec<Subscription>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM guard_subscriptions
         WHERE ?1 IS NULL OR node = ?1 ORDER BY created_at, node, jid"
    ))?;
    let subscriptions = stmt
        .query_map([node], subscription_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(subscriptions)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The newest `max` items of `node`, oldest first.
    fn newest(s: &SqliteStorage, node: &str, max: u32) -> Vec<Item> {
        s.items_page(node, &PageFrom::End, max)
            .unwrap()
            .unwrap()
            .items
    }

    fn open() -> (tempfile::TempDir, SqliteStorage) {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(dir.path().join("db.sqlite")).unwrap();
        (dir, storage)
    }

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            owner: Some("alice".into()),
            access: Access::OAuth,
            publishers: vec!["loc@localhost".into()],
            max_items: 2,
            created_at: 1,
        }
    }

    fn item(id: &str) -> Item {
        Item {
            id: id.into(),
            payload: format!("<p xmlns='urn:test'>{id}</p>"),
            publisher: "loc@localhost".into(),
            published_at: 5,
        }
    }

    fn subscription(jid: &str, token: &str) -> Subscription {
        Subscription {
            node: "/location/alice".into(),
            jid: jid.into(),
            subid: format!("sub-{jid}"),
            token: Some(token.into()),
            consumer_key: Some("ck".into()),
            created_at: 3,
        }
    }

    #[test]
    fn nodes_round_trip_and_names_are_unique() {
        let (_dir, s) = open();
        s.create_node(&node("/location/alice")).unwrap();
        assert_eq!(
            s.node("/location/alice").unwrap(),
            Some(node("/location/alice"))
        );
        assert!(matches!(
            s.create_node(&node("/location/alice")),
            Err(StorageError::NodeExists(n)) if n == "/location/alice"
        ));
        assert_eq!(s.nodes().unwrap().len(), 1);
        assert_eq!(s.delete_node("/location/alice").unwrap(), Some(vec![]));
        assert_eq!(s.delete_node("/location/alice").unwrap(), None);
        assert_eq!(s.node("/location/alice").unwrap(), None);
    }

    #[test]
    fn items_keep_the_newest_max_items() {
        let (_dir, s) = open();
        s.create_node(&node("/location/alice")).unwrap();
        assert!(
            s.publish("/location/alice", &item("a"), 2)
                .unwrap()
                .is_empty()
        );
        assert!(
            s.publish("/location/alice", &item("b"), 2)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.publish("/location/alice", &item("c"), 2).unwrap(),
            vec!["a"]
        );
        // Republishing an id moves it to the newest place.
        assert_eq!(
            s.publish("/location/alice", &item("b"), 2).unwrap(),
            Vec::<String>::new()
        );
        let ids = |v: Vec<Item>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
        assert_eq!(ids(newest(&s, "/location/alice", 500)), ["c", "b"]);
        assert_eq!(ids(newest(&s, "/location/alice", 1)), ["b"]);
        assert_eq!(
            ids(s.items_by_id("/location/alice", &["b", "zz", "c"]).unwrap()),
            ["b", "c"]
        );
        assert!(s.retract("/location/alice", "b").unwrap());
        assert!(!s.retract("/location/alice", "b").unwrap());
        assert_eq!(ids(newest(&s, "/location/alice", 500)), ["c"]);
    }

    #[test]
    fn subscriptions_end_with_their_token_and_their_node() {
        let (_dir, s) = open();
        s.create_node(&node("/location/alice")).unwrap();
        let first = s.subscribe(&subscription("app@localhost", "t1")).unwrap();
        // Subscribing again keeps the subid and takes the new token.
        let mut again = subscription("app@localhost", "t2");
        again.subid = "other".into();
        let again = s.subscribe(&again).unwrap();
        assert_eq!(again.subid, first.subid);
        assert_eq!(again.token.as_deref(), Some("t2"));
        s.subscribe(&subscription("app2@localhost/r", "t2"))
            .unwrap();
        assert!(s.end_token("t1").unwrap().is_empty());
        let ended = s.end_token("t2").unwrap();
        assert_eq!(ended.len(), 2);
        assert!(s.subscriptions(None).unwrap().is_empty());
        s.subscribe(&subscription("app@localhost", "t3")).unwrap();
        assert_eq!(
            s.unsubscribe("/location/alice", "app@localhost")
                .unwrap()
                .unwrap()
                .jid,
            "app@localhost"
        );
        assert_eq!(
            s.unsubscribe("/location/alice", "app@localhost").unwrap(),
            None
        );
        s.subscribe(&subscription("app@localhost", "t3")).unwrap();
        assert_eq!(s.delete_node("/location/alice").unwrap().unwrap().len(), 1);
        assert!(s.subscriptions(None).unwrap().is_empty());
    }

    #[test]
    fn state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let s = SqliteStorage::open(&path).unwrap();
            s.create_node(&node("/location/alice")).unwrap();
            s.publish("/location/alice", &item("a"), 2).unwrap();
            s.subscribe(&subscription("app@localhost", "t1")).unwrap();
            s.set_change_cursor(42).unwrap();
        }
        let s = SqliteStorage::open(&path).unwrap();
        assert_eq!(s.change_cursor().unwrap(), 42);
        assert_eq!(newest(&s, "/location/alice", 500), vec![item("a")]);
        assert_eq!(s.subscriptions(None).unwrap().len(), 1);
        // The authorization server opens the same file beside them.
        authz_server::Store::open(&path).unwrap();
    }

    #[test]
    fn a_full_database_is_told_apart_and_keeps_what_it_had() {
        let (_dir, s) = open();
        s.create_node(&node("/location/alice")).unwrap();
        s.publish("/location/alice", &item("kept"), 100_000)
            .unwrap();
        // The database may not grow: SQLite answers as it does on a full disk.
        let pages: i64 = s
            .lock()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        s.lock()
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let big = Item {
            payload: format!("<p xmlns='urn:test'>{}</p>", "x".repeat(20_000)),
            ..item("big")
        };
        let err = (0..50)
            .find_map(|i| {
                let item = Item {
                    id: format!("big{i}"),
                    ..big.clone()
                };
                s.publish("/location/alice", &item, 100_000).err()
            })
            .expect("the database filled up");
        assert!(err.is_full(), "{err}");
        let ids: Vec<String> = s
            .items_page("/location/alice", &PageFrom::End, 1_000)
            .unwrap()
            .unwrap()
            .items
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids.first().map(String::as_str), Some("kept"));
    }

    #[test]
    fn version_1_subscriptions_fold_into_one_per_bare_jid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let conn = authz_server::store::connect(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE guard_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 INSERT INTO guard_state VALUES ('schema_version', 1);",
            )
            .unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "INSERT INTO guard_nodes VALUES ('/n', 'alice', 'oauth', 10, 1);
                 INSERT INTO guard_publishers VALUES ('/n', 'Loc@LocalHost');
                 INSERT INTO guard_publishers VALUES ('/n', 'loc@localhost');
                 INSERT INTO guard_subscriptions VALUES ('/n', 'FINDMENOW@LOCALHOST/x', 's1', 't1', 'ck', 5);
                 INSERT INTO guard_subscriptions VALUES ('/n', 'findmenow@localhost', 's2', 't2', 'ck', 6);
                 INSERT INTO guard_subscriptions VALUES ('/n', 'other@localhost/r', 's3', 't3', 'ck', 7);",
            )
            .unwrap();
        }
        let s = SqliteStorage::open(&path).unwrap();
        let subscriptions = s.subscriptions(Some("/n")).unwrap();
        let seen: Vec<(&str, &str)> = subscriptions
            .iter()
            .map(|s| (s.jid.as_str(), s.subid.as_str()))
            .collect();
        assert_eq!(
            seen,
            [("findmenow@localhost", "s2"), ("other@localhost/r", "s3")]
        );
        assert_eq!(s.node("/n").unwrap().unwrap().publishers, ["loc@localhost"]);
        // The new key holds: the same bare JID again replaces, keeping the subid.
        let again = s
            .subscribe(&Subscription {
                node: "/n".into(),
                jid: "other@localhost/phone".into(),
                subid: "new".into(),
                token: Some("t4".into()),
                consumer_key: Some("ck".into()),
                created_at: 8,
            })
            .unwrap();
        assert_eq!(
            (again.jid.as_str(), again.subid.as_str()),
            ("other@localhost/phone", "s3")
        );
        assert_eq!(s.subscriptions(Some("/n")).unwrap().len(), 2);
    }
}
