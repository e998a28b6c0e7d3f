//! [`Storage`] on the SQLite file shared with the authorization server.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::schema::MIGRATIONS;
use super::{
    Access, ArchiveFrom, ArchivePage, ArchiveQuery, History, Item, Node, Page, PageFrom, Published,
    Result, Storage, StorageError, Subscription, Visibility,
};

/// The guard's state in the shared SQLite file.
pub struct SqliteStorage {
    conn: Mutex<Connection>,
    /// Whether the authorization server's change log was seen in the file (it never goes
    /// away once there, so publishes stop looking for it).
    change_log: AtomicBool,
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

/// The version after which items record their change-log position (migration 4).
const CHANGE_POSITIONS: i64 = 4;

impl SqliteStorage {
    /// Opens the guard's tables in the shared file at `path` (created private if missing, see
    /// [`crate::authz::connect`]), migrating them.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let conn = crate::authz::connect(path.as_ref())?;
        let storage = Self {
            conn: Mutex::new(conn),
            change_log: AtomicBool::new(false),
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
                let reached = i as i64 + 1;
                if reached == CHANGE_POSITIONS && has_change_log(tx)? {
                    // Items stored before the change-log positions: the position of the
                    // last change logged by the second they were published.
                    tx.execute(
                        "UPDATE guard_items SET change_seq =
                           (SELECT COALESCE(MAX(seq), 0) FROM changes
                            WHERE at <= guard_items.published_at)",
                        [],
                    )?;
                }
                set_state(tx, "schema_version", reached)?;
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

/// Whether the authorization server's change log is in the file (it is whenever the
/// authorization server has opened it; the guard's own tests may run without it).
fn has_change_log(conn: &Connection) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'changes'")?
        .query_row([], |_| Ok(()))
        .optional()?
        .is_some())
}

impl SqliteStorage {
    /// The position of the newest change-log entry, read in the publishing transaction: a
    /// grant or revocation committed before it has a position at most this, one committed
    /// after it a larger one. 0 while the file has no change log.
    fn change_position(&self, conn: &Connection) -> Result<i64> {
        if !self.change_log.load(Ordering::Relaxed) {
            if !has_change_log(conn)? {
                return Ok(0);
            }
            self.change_log.store(true, Ordering::Relaxed);
        }
        Ok(conn
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM changes")?
            .query_row([], |r| r.get(0))?)
    }
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

const ITEM_COLUMNS: &str = "id, payload, publisher, published_at, pos, seq";

fn item_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Item> {
    Ok(Item {
        id: r.get(0)?,
        payload: r.get(1)?,
        publisher: r.get(2)?,
        published_at: to_u64(r.get(3)?),
        pos: to_u64(r.get(4)?),
        seq: r.get(5)?,
    })
}

fn load_node(conn: &Connection, name: &str) -> Result<Option<Node>> {
    let row = conn
        .query_row(
            "SELECT name, owner, access, max_items, created_at, max_age_secs, send_last
             FROM guard_nodes WHERE name = ?1",
            [name],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, bool>(6)?,
                ))
            },
        )
        .optional()?;
    let Some((name, owner, access, max_items, created_at, max_age, send_last)) = row else {
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
        max_age_secs: to_u64(max_age),
        send_last_published_item: send_last,
        created_at: to_u64(created_at),
    }))
}

fn load_history(conn: &Connection, node: &str) -> Result<Option<History>> {
    Ok(load_retention(conn, node)?.map(|(history, _)| history))
}

/// A node's history and its retention (`max_items`, `max_age_secs`), in one read.
fn load_retention(conn: &Connection, node: &str) -> Result<Option<(History, (u64, i64))>> {
    Ok(conn
        .prepare_cached(
            "SELECT last_pos, held, trimmed_through, trimmed_at, created_seq,
                    max_items, max_age_secs
             FROM guard_nodes WHERE name = ?1",
        )?
        .query_row([node], |r| {
            let history = History {
                last_pos: to_u64(r.get(0)?),
                held: to_u64(r.get(1)?),
                trimmed_through: to_u64(r.get(2)?),
                trimmed_at: to_u64(r.get(3)?),
                created_seq: r.get(4)?,
            };
            Ok((history, (to_u64(r.get(5)?), r.get(6)?)))
        })
        .optional()?)
}

/// Deletes the items of `node` that `which` selects (an SQL condition on `guard_items`, with
/// `?1` the node) and books them as dropped by retention. Returns their ids, oldest first.
fn drop_items(
    tx: &Transaction<'_>,
    node: &str,
    which: &str,
    bind: i64,
    history: &mut History,
) -> Result<Vec<String>> {
    let mut dropped: Vec<(u64, u64, String)> = tx
        .prepare_cached(&format!(
            "DELETE FROM guard_items WHERE node = ?1 AND {which} RETURNING pos, published_at, id"
        ))?
        .query_map(params![node, bind], |r| {
            Ok((to_u64(r.get(0)?), to_u64(r.get(1)?), r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    dropped.sort_unstable_by_key(|d| d.0);
    history.held = history.held.saturating_sub(dropped.len() as u64);
    if let Some((pos, at, _)) = dropped.last()
        && *pos > history.trimmed_through
    {
        history.trimmed_through = *pos;
        history.trimmed_at = *at;
    }
    Ok(dropped.into_iter().map(|d| d.2).collect())
}

fn save_history(tx: &Transaction<'_>, node: &str, h: &History) -> Result<()> {
    tx.prepare_cached(
        "UPDATE guard_nodes SET last_pos = ?2, held = ?3, trimmed_through = ?4, trimmed_at = ?5
         WHERE name = ?1",
    )?
    .execute(params![
        node,
        to_i64(h.last_pos),
        to_i64(h.held),
        to_i64(h.trimmed_through),
        to_i64(h.trimmed_at)
    ])?;
    Ok(())
}

/// The SQL condition on `guard_items` that `visible` allows. Only numbers are written into
/// it.
fn visibility_sql(visible: &Visibility) -> String {
    match visible {
        Visibility::All => "1".into(),
        Visibility::Spans(spans) if spans.is_empty() => "0".into(),
        Visibility::Spans(spans) => {
            let spans: Vec<String> = spans
                .iter()
                .map(|s| {
                    let mut c = format!("(change_seq >= {}", s.from_seq);
                    if let Some(until) = s.until_seq {
                        c.push_str(&format!(" AND change_seq < {until}"));
                    }
                    if let Some(until) = s.until_time {
                        c.push_str(&format!(" AND published_at < {}", to_i64(until)));
                    }
                    c.push(')');
                    c
                })
                .collect();
            format!("({})", spans.join(" OR "))
        }
    }
}

/// Reads pages of one node's items that match an SQL condition, in one transaction.
struct Pager<'t> {
    tx: &'t Transaction<'t>,
    node: &'t str,
    /// An SQL condition on `guard_items` (only numbers in it).
    cond: String,
}

impl Pager<'_> {
    fn count(&self, below: Option<u64>) -> Result<u32> {
        let below = below.map_or(String::new(), |p| format!(" AND pos < {}", to_i64(p)));
        let n: i64 = self.tx.query_row(
            &format!(
                "SELECT COUNT(*) FROM guard_items WHERE node = ?1 AND {}{below}",
                self.cond
            ),
            [self.node],
            |r| r.get(0),
        )?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// At most `max` items after `after` (skipping `offset` of them), oldest first, and
    /// whether more follow.
    fn forward(&self, after: Option<u64>, offset: u32, max: u32) -> Result<(Vec<Item>, bool)> {
        let after = after.map_or(String::new(), |p| format!(" AND pos > {}", to_i64(p)));
        let mut rows: Vec<Item> = self
            .tx
            .prepare(&format!(
                "SELECT {ITEM_COLUMNS} FROM guard_items WHERE node = ?1 AND {}{after}
                 ORDER BY pos LIMIT ?2 OFFSET ?3",
                self.cond
            ))?
            .query_map(
                params![self.node, i64::from(max) + 1, i64::from(offset)],
                item_row,
            )?
            .collect::<rusqlite::Result<_>>()?;
        let more = rows.len() > max as usize;
        rows.truncate(max as usize);
        Ok((rows, more))
    }

    /// At most `max` items before `before`, oldest first, and whether older ones exist.
    fn backward(&self, before: Option<u64>, max: u32) -> Result<(Vec<Item>, bool)> {
        let before = before.map_or(String::new(), |p| format!(" AND pos < {}", to_i64(p)));
        let mut rows: Vec<Item> = self
            .tx
            .prepare(&format!(
                "SELECT {ITEM_COLUMNS} FROM guard_items WHERE node = ?1 AND {}{before}
                 ORDER BY pos DESC LIMIT ?2",
                self.cond
            ))?
            .query_map(params![self.node, i64::from(max) + 1], item_row)?
            .collect::<rusqlite::Result<_>>()?;
        let more = rows.len() > max as usize;
        rows.truncate(max as usize);
        rows.reverse();
        Ok((rows, more))
    }

    /// The position of the item `id`, if it matches the condition.
    fn pos_of(&self, id: &str) -> Result<Option<u64>> {
        Ok(self
            .tx
            .query_row(
                &format!(
                    "SELECT pos FROM guard_items WHERE node = ?1 AND id = ?2 AND {}",
                    self.cond
                ),
                params![self.node, id],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(to_u64))
    }
}

impl Storage for SqliteStorage {
    fn create_node(&self, node: &Node) -> Result<()> {
        self.write(|tx| {
            let inserted = tx.execute(
                "INSERT INTO guard_nodes
                     (name, owner, access, max_items, created_at, max_age_secs, send_last,
                      created_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,
                     (SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence
                      WHERE name = 'guard_items'))
                 ON CONFLICT (name) DO NOTHING",
                params![
                    node.name,
                    node.owner,
                    node.access.as_str(),
                    node.max_items,
                    to_i64(node.created_at),
                    to_i64(node.max_age_secs),
                    node.send_last_published_item
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
                    xmpp_component::jid::bare(&s.jid)
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
                    params![node, xmpp_component::jid::bare(jid)],
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

    fn publish(&self, node: &str, item: &Item) -> Result<Published> {
        self.write(|tx| {
            let (mut history, (max_items, max_age)) =
                load_retention(tx, node)?.ok_or_else(|| StorageError::NoNode(node.to_owned()))?;
            let replaced = tx
                .prepare_cached("DELETE FROM guard_items WHERE node = ?1 AND id = ?2")?
                .execute(params![node, item.id])?;
            history.held = history.held.saturating_sub(replaced as u64);
            let pos = history.last_pos + 1;
            let seq: i64 = tx
                .prepare_cached(
                    "INSERT INTO guard_items
                         (node, id, payload, publisher, published_at, pos, change_seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING seq",
                )?
                .query_row(
                    params![
                        node,
                        item.id,
                        item.payload,
                        item.publisher,
                        to_i64(item.published_at),
                        to_i64(pos),
                        self.change_position(tx)?
                    ],
                    |r| r.get(0),
                )?;
            history.last_pos = pos;
            history.held += 1;
            let mut dropped = Vec::new();
            if max_age > 0 {
                let cutoff = to_i64(item.published_at).saturating_sub(max_age);
                dropped = drop_items(tx, node, "published_at < ?2", cutoff, &mut history)?;
            }
            let max_items = max_items.max(1);
            if history.held > max_items {
                let excess = to_i64(history.held - max_items);
                dropped.extend(drop_items(
                    tx,
                    node,
                    "pos IN (SELECT pos FROM guard_items WHERE node = ?1 ORDER BY pos LIMIT ?2)",
                    excess,
                    &mut history,
                )?);
            }
            save_history(tx, node, &history)?;
            Ok(Published { pos, seq, dropped })
        })
    }

    fn retract(&self, node: &str, id: &str) -> Result<bool> {
        self.write(|tx| {
            let deleted = tx.execute(
                "DELETE FROM guard_items WHERE node = ?1 AND id = ?2",
                params![node, id],
            )? > 0;
            if deleted {
                tx.execute(
                    "UPDATE guard_nodes SET held = max(held - 1, 0) WHERE name = ?1",
                    [node],
                )?;
            }
            Ok(deleted)
        })
    }

    fn items_by_id(&self, node: &str, ids: &[&str], visible: &Visibility) -> Result<Vec<Item>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {ITEM_COLUMNS} FROM guard_items WHERE node = ?1 AND id = ?2 AND {}",
            visibility_sql(visible)
        ))?;
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(item) = stmt.query_row(params![node, id], item_row).optional()? {
                items.push(item);
            }
        }
        Ok(items)
    }

    fn items_page(
        &self,
        node: &str,
        from: &PageFrom,
        max: u32,
        visible: &Visibility,
    ) -> Result<Option<Page>> {
        // One read transaction: the count, the offset and the page agree even while
        // another connection publishes.
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let pager = Pager {
            tx: &tx,
            node,
            cond: visibility_sql(visible),
        };
        let count = match visible {
            Visibility::All => {
                load_history(&tx, node)?.map_or(0, |h| u32::try_from(h.held).unwrap_or(u32::MAX))
            }
            Visibility::Spans(_) => pager.count(None)?,
        };
        let (first, items) = match from {
            PageFrom::Start => (0, pager.forward(None, 0, max)?.0),
            PageFrom::Index(i) => (*i, pager.forward(None, *i, max)?.0),
            PageFrom::After(id) => {
                let Some(pos) = pager.pos_of(id)? else {
                    return Ok(None);
                };
                (
                    pager.count(Some(pos))? + 1,
                    pager.forward(Some(pos), 0, max)?.0,
                )
            }
            PageFrom::Before(id) => {
                let Some(pos) = pager.pos_of(id)? else {
                    return Ok(None);
                };
                let rows = pager.backward(Some(pos), max)?.0;
                (pager.count(Some(pos))? - rows.len() as u32, rows)
            }
            PageFrom::End => {
                let rows = pager.backward(None, max)?.0;
                (count.saturating_sub(rows.len() as u32), rows)
            }
        };
        Ok(Some(Page {
            items,
            count,
            first_index: first,
        }))
    }

    fn archive_page(
        &self,
        node: &str,
        query: &ArchiveQuery,
        from: ArchiveFrom,
        max: u32,
        visible: &Visibility,
    ) -> Result<ArchivePage> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut cond = visibility_sql(visible);
        if let Some(p) = query.after_pos {
            cond.push_str(&format!(" AND pos > {}", to_i64(p)));
        }
        if let Some(p) = query.before_pos {
            cond.push_str(&format!(" AND pos < {}", to_i64(p)));
        }
        if let Some(t) = query.start {
            cond.push_str(&format!(" AND published_at >= {}", to_i64(t)));
        }
        if let Some(t) = query.end {
            cond.push_str(&format!(" AND published_at <= {}", to_i64(t)));
        }
        let pager = Pager {
            tx: &tx,
            node,
            cond,
        };
        let count = pager.count(None)?;
        let (items, more) = match from {
            ArchiveFrom::After(after) => pager.forward(after, 0, max)?,
            ArchiveFrom::Index(i) => pager.forward(None, i, max)?,
            ArchiveFrom::Before(before) => pager.backward(before, max)?,
        };
        let first_index = match items.first() {
            Some(item) => pager.count(Some(item.pos))?,
            None => count,
        };
        Ok(ArchivePage {
            items,
            count,
            first_index,
            complete: !more,
        })
    }

    fn history(&self, node: &str) -> Result<Option<History>> {
        load_history(&self.lock(), node)
    }

    fn expire_items(&self, now: u64, limit: usize) -> Result<usize> {
        self.write(|tx| {
            let due: Vec<(String, i64)> = tx
                .prepare_cached(
                    "SELECT n.name, n.max_age_secs FROM guard_nodes n
                     WHERE n.max_age_secs > 0 AND EXISTS
                       (SELECT 1 FROM guard_items i
                        WHERE i.node = n.name AND i.published_at < ?1 - n.max_age_secs)",
                )?
                .query_map([to_i64(now)], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut expired = 0;
            for (node, max_age) in due {
                if expired >= limit {
                    break;
                }
                let mut history = load_history(tx, &node)?.unwrap_or_default();
                let cutoff = to_i64(now).saturating_sub(max_age);
                let budget = limit - expired;
                let dropped = drop_items(
                    tx,
                    &node,
                    &format!(
                        "pos IN (SELECT pos FROM guard_items WHERE node = ?1 AND published_at < ?2
                                 ORDER BY pos LIMIT {budget})"
                    ),
                    cutoff,
                    &mut history,
                )?;
                expired += dropped.len();
                save_history(tx, &node, &history)?;
            }
            Ok(expired)
        })
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
        s.items_page(node, &PageFrom::End, max, &Visibility::All)
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
            max_age_secs: 0,
            send_last_published_item: true,
            created_at: 1,
        }
    }

    fn item(id: &str) -> Item {
        Item {
            id: id.into(),
            payload: format!("<p xmlns='urn:test'>{id}</p>"),
            publisher: "loc@localhost".into(),
            published_at: 5,
            pos: 0,
            seq: 0,
        }
    }

    fn ids(items: &[Item]) -> Vec<&str> {
        items.iter().map(|i| i.id.as_str()).collect()
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
        let n = "/location/alice";
        let a = s.publish(n, &item("a")).unwrap();
        assert_eq!((a.pos, a.dropped.len()), (1, 0));
        assert!(s.publish(n, &item("b")).unwrap().dropped.is_empty());
        let c = s.publish(n, &item("c")).unwrap();
        assert_eq!((c.pos, c.dropped), (3, vec!["a".to_owned()]));
        // Republishing an id moves it to the newest place (a new position), dropping nothing.
        let b = s.publish(n, &item("b")).unwrap();
        assert_eq!((b.pos, b.dropped.len()), (4, 0));
        assert!(b.seq > c.seq);
        assert_eq!(ids(&newest(&s, n, 500)), ["c", "b"]);
        assert_eq!(ids(&newest(&s, n, 1)), ["b"]);
        assert_eq!(
            ids(&s
                .items_by_id(n, &["b", "zz", "c"], &Visibility::All)
                .unwrap()),
            ["b", "c"]
        );
        assert_eq!(
            s.history(n).unwrap().unwrap(),
            History {
                last_pos: 4,
                held: 2,
                trimmed_through: 1,
                trimmed_at: 5,
                created_seq: 0
            }
        );
        assert!(s.retract(n, "b").unwrap());
        assert!(!s.retract(n, "b").unwrap());
        assert_eq!(ids(&newest(&s, n, 500)), ["c"]);
        assert_eq!(s.history(n).unwrap().unwrap().held, 1);
        // A retraction is not a loss to report.
        assert_eq!(s.history(n).unwrap().unwrap().trimmed_through, 1);
    }

    #[test]
    fn retention_by_age_on_publish_and_by_the_sweeper() {
        let (_dir, s) = open();
        let n = "/location/alice";
        s.create_node(&Node {
            max_items: 100,
            max_age_secs: 60,
            ..node(n)
        })
        .unwrap();
        s.create_node(&Node {
            max_items: 100,
            max_age_secs: 0,
            ..node("/keep")
        })
        .unwrap();
        for (id, at) in [("t0", 1_000), ("t10", 1_010), ("t50", 1_050)] {
            let item = Item {
                published_at: at,
                ..item(id)
            };
            s.publish(n, &item).unwrap();
            s.publish("/keep", &item).unwrap();
        }
        // Publishing at 1,065 drops what is older than 60 s: t0.
        let late = s
            .publish(
                n,
                &Item {
                    published_at: 1_065,
                    ..item("t65")
                },
            )
            .unwrap();
        assert_eq!(late.dropped, ["t0"]);
        // The sweeper drops t10 at 1,071 (older than 1,011), and nothing of /keep.
        assert_eq!(s.expire_items(1_071, 100).unwrap(), 1);
        assert_eq!(s.expire_items(1_071, 100).unwrap(), 0);
        assert_eq!(ids(&newest(&s, n, 10)), ["t50", "t65"]);
        assert_eq!(ids(&newest(&s, "/keep", 10)), ["t0", "t10", "t50"]);
        let h = s.history(n).unwrap().unwrap();
        assert_eq!((h.held, h.trimmed_through, h.trimmed_at), (2, 2, 1_010));
        // A batch limit is kept, and the rest goes in the next call.
        assert_eq!(s.expire_items(10_000, 1).unwrap(), 1);
        assert_eq!(s.expire_items(10_000, 5).unwrap(), 1);
        assert_eq!(s.history(n).unwrap().unwrap().held, 0);
    }

    #[test]
    fn archive_pages_by_position_time_and_grant() {
        let (_dir, s) = open();
        let n = "/location/alice";
        s.create_node(&Node {
            max_items: 100,
            ..node(n)
        })
        .unwrap();
        for i in 1..=10u64 {
            let item = Item {
                published_at: 100 + i,
                ..item(&format!("i{i}"))
            };
            s.publish(n, &item).unwrap();
        }
        let all = ArchiveQuery::default();
        let page = |q: &ArchiveQuery, from, max| {
            s.archive_page(n, q, from, max, &Visibility::All).unwrap()
        };
        let p = page(&all, ArchiveFrom::After(None), 4);
        assert_eq!(ids(&p.items), ["i1", "i2", "i3", "i4"]);
        assert_eq!((p.count, p.first_index, p.complete), (10, 0, false));
        let p = page(&all, ArchiveFrom::After(Some(8)), 4);
        assert_eq!(ids(&p.items), ["i9", "i10"]);
        assert_eq!((p.first_index, p.complete), (8, true));
        let p = page(&all, ArchiveFrom::Before(None), 3);
        assert_eq!(ids(&p.items), ["i8", "i9", "i10"]);
        assert_eq!((p.first_index, p.complete), (7, false));
        let p = page(&all, ArchiveFrom::Before(Some(3)), 5);
        assert_eq!(ids(&p.items), ["i1", "i2"]);
        assert!(p.complete);
        let p = page(&all, ArchiveFrom::Index(9), 5);
        assert_eq!((ids(&p.items), p.first_index), (vec!["i10"], 9));
        // after-id and a time window narrow the query (and its count).
        let q = ArchiveQuery {
            after_pos: Some(2),
            start: Some(104),
            end: Some(108),
            ..ArchiveQuery::default()
        };
        let p = page(&q, ArchiveFrom::After(None), 100);
        assert_eq!(ids(&p.items), ["i4", "i5", "i6", "i7", "i8"]);
        assert_eq!((p.count, p.first_index, p.complete), (5, 0, true));
        let empty = page(&q, ArchiveFrom::After(Some(8)), 100);
        assert_eq!(
            (empty.items.len(), empty.count, empty.complete),
            (0, 5, true)
        );
        // Visibility by change-log spans: none of these items was published with a grant
        // (no change log), so a consumer's spans from 1 on see nothing, and from 0 all.
        let spans = |from_seq| {
            Visibility::Spans(vec![super::super::Span {
                from_seq,
                until_seq: None,
                until_time: Some(106),
            }])
        };
        let p = s
            .archive_page(n, &all, ArchiveFrom::After(None), 100, &spans(0))
            .unwrap();
        assert_eq!(ids(&p.items), ["i1", "i2", "i3", "i4", "i5"]);
        let p = s
            .archive_page(n, &all, ArchiveFrom::After(None), 100, &spans(1))
            .unwrap();
        assert_eq!(p.count, 0);
        let hidden = s
            .items_page(n, &PageFrom::After("i2".into()), 10, &spans(1))
            .unwrap();
        assert_eq!(hidden, None);
    }

    #[test]
    fn items_record_the_change_log_position_of_their_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = crate::authz::Store::open(&path).unwrap();
        let s = SqliteStorage::open(&path).unwrap();
        s.create_node(&node("/location/alice")).unwrap();
        store.add_owner("alice", "$argon2id$test", 1).unwrap();
        let (key, _) = store.add_consumer("App", None, None, 1).unwrap();
        s.publish("/location/alice", &item("before")).unwrap();
        store
            .grant("alice", &key, &oauth_xmpp::Scope::all(), None, 2)
            .unwrap();
        s.publish("/location/alice", &item("during")).unwrap();
        store
            .revoke_tokens(&crate::authz::RevokeBy::Owner("alice".into()), 3)
            .unwrap();
        s.publish("/location/alice", &item("after")).unwrap();
        let spans = store.grant_spans(&key, "alice").unwrap();
        assert_eq!(spans.len(), 1);
        let visible = Visibility::Spans(vec![super::super::Span {
            from_seq: spans[0].granted_seq,
            until_seq: spans[0].ended_seq,
            until_time: None,
        }]);
        let page = s
            .items_page("/location/alice", &PageFrom::Start, 10, &visible)
            .unwrap()
            .unwrap();
        assert_eq!(ids(&page.items), ["during"]);
        assert_eq!(page.count, 1);
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
            s.publish("/location/alice", &item("a")).unwrap();
            s.subscribe(&subscription("app@localhost", "t1")).unwrap();
            s.set_change_cursor(42).unwrap();
        }
        let s = SqliteStorage::open(&path).unwrap();
        assert_eq!(s.change_cursor().unwrap(), 42);
        let kept = newest(&s, "/location/alice", 500);
        assert_eq!((ids(&kept), kept[0].pos), (vec!["a"], 1));
        assert_eq!(s.subscriptions(None).unwrap().len(), 1);
        // The authorization server opens the same file beside them.
        crate::authz::Store::open(&path).unwrap();
    }

    #[test]
    fn a_full_database_is_told_apart_and_keeps_what_it_had() {
        let (_dir, s) = open();
        s.create_node(&Node {
            max_items: 100_000,
            ..node("/location/alice")
        })
        .unwrap();
        s.publish("/location/alice", &item("kept")).unwrap();
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
                s.publish("/location/alice", &item).err()
            })
            .expect("the database filled up");
        assert!(err.is_full(), "{err}");
        let ids: Vec<String> = s
            .items_page("/location/alice", &PageFrom::End, 1_000, &Visibility::All)
            .unwrap()
            .unwrap()
            .items
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids.first().map(String::as_str), Some("kept"));
    }

    #[test]
    fn version_3_items_get_positions_and_change_log_places() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        crate::authz::Store::open(&path).unwrap();
        {
            let conn = crate::authz::connect(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE guard_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 INSERT INTO guard_state VALUES ('schema_version', 3);",
            )
            .unwrap();
            for sql in &MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(
                "INSERT INTO guard_nodes VALUES ('/a', 'alice', 'oauth', 10, 1);
                 INSERT INTO guard_nodes VALUES ('/b', NULL, 'open', 10, 1);
                 INSERT INTO guard_items (node, id, payload, publisher, published_at)
                     VALUES ('/a', 'a1', '<p xmlns=''urn:t''/>', 'l@h', 100);
                 INSERT INTO guard_items (node, id, payload, publisher, published_at)
                     VALUES ('/b', 'b1', '<p xmlns=''urn:t''/>', 'l@h', 100);
                 INSERT INTO guard_items (node, id, payload, publisher, published_at)
                     VALUES ('/a', 'a2', '<p xmlns=''urn:t''/>', 'l@h', 300);
                 INSERT INTO changes (at, kind) VALUES (200, 'granted');",
            )
            .unwrap();
        }
        let s = SqliteStorage::open(&path).unwrap();
        let a = newest(&s, "/a", 10);
        assert_eq!(
            a.iter().map(|i| (i.id.as_str(), i.pos)).collect::<Vec<_>>(),
            [("a1", 1), ("a2", 2)]
        );
        assert_eq!(newest(&s, "/b", 10)[0].pos, 1);
        let h = s.history("/a").unwrap().unwrap();
        assert_eq!((h.last_pos, h.held, h.trimmed_through), (2, 2, 0));
        assert!(s.node("/a").unwrap().unwrap().send_last_published_item);
        assert!(!s.node("/b").unwrap().unwrap().send_last_published_item);
        // a1 came before the change at 200, a2 after it.
        let after_grant = Visibility::Spans(vec![super::super::Span {
            from_seq: 1,
            until_seq: None,
            until_time: None,
        }]);
        let page = s
            .items_page("/a", &PageFrom::Start, 10, &after_grant)
            .unwrap()
            .unwrap();
        assert_eq!(ids(&page.items), ["a2"]);
        // The next publish continues the positions.
        assert_eq!(s.publish("/a", &item("a3")).unwrap().pos, 3);
    }

    #[test]
    fn version_1_subscriptions_fold_into_one_per_bare_jid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let conn = crate::authz::connect(&path).unwrap();
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
