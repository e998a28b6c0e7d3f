//! [`DbStorage`]: the guard's tables in the database shared with the authorization server,
//! on SQLite or PostgreSQL.

use crate::args;
use crate::db::{Database, Engine, Location, Row, Tx, Value, migrations};

use super::schema::{MIGRATIONS, POSTGRES};
use super::{
    Access, ArchiveFrom, ArchivePage, ArchiveQuery, History, Item, Node, Page, PageFrom, Published,
    Result, Storage, StorageError, Subscription, SubscriptionFilter, Totals, Visibility,
};

/// The guard's state in the database it shares with the authorization server.
///
/// Several guards may share one database (a fleet): each keeps its own change-log cursor
/// (see [`DbStorage::for_instance`]); everything else is shared.
pub struct DbStorage {
    db: std::sync::Arc<Database>,
    /// The `guard_state` key of this guard's change-log cursor.
    cursor_key: String,
    /// Whether the authorization server's change log was seen in the database (it never goes
    /// away once there, so publishes stop looking for it).
    change_log: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for DbStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbStorage")
            .field("location", self.db.location())
            .field("cursor_key", &self.cursor_key)
            .finish_non_exhaustive()
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The version after which items record their change-log position (SQLite migration 4).
const CHANGE_POSITIONS: i64 = 4;

/// The part of the database whose version PostgreSQL's `schema_versions` keeps for the guard.
const PART: &str = "guard";

/// The `guard_state` key of the change-log cursor of a guard that has no instance name.
const CURSOR: &str = "change_cursor";

impl DbStorage {
    /// Opens the guard's tables in the database at `location` (a SQLite file, created
    /// private if missing, or a PostgreSQL URL), migrating them.
    pub fn open(location: impl Into<Location>) -> Result<Self> {
        Self::on(std::sync::Arc::new(Database::open(&location.into())?))
    }

    /// The guard's tables on the connection `db`, which may be the authorization store's
    /// ([`crate::Store::on`]), migrating them.
    pub fn on(db: std::sync::Arc<Database>) -> Result<Self> {
        let storage = Self {
            db,
            cursor_key: CURSOR.to_owned(),
            change_log: std::sync::atomic::AtomicBool::new(false),
        };
        storage.migrate()?;
        Ok(storage)
    }

    /// The same storage for the guard named `instance` in a fleet of guards sharing one
    /// database: it follows the change log with a cursor of its own
    /// (`change_cursor:{instance}`). An empty name is the guard of a single-guard
    /// deployment (`change_cursor`).
    pub fn for_instance(mut self, instance: &str) -> Self {
        self.cursor_key = if instance.is_empty() {
            CURSOR.to_owned()
        } else {
            format!("{CURSOR}:{instance}")
        };
        self
    }

    fn migrate(&self) -> Result<()> {
        let too_new = |found, known| {
            StorageError::Corrupt(format!(
                "the guard's tables are at version {found}, newer than this program ({known})"
            ))
        };
        self.db.write(|tx| match tx.engine() {
            Engine::Sqlite => {
                tx.batch(
                    "CREATE TABLE IF NOT EXISTS guard_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
                )?;
                let found = state(tx, "schema_version")?.unwrap_or(0);
                migrations::run(tx, MIGRATIONS, found, too_new, |tx, reached| {
                    if reached == CHANGE_POSITIONS && tx.table_exists("changes")? {
                        // Items stored before the change-log positions: the position of the
                        // last change logged by the second they were published.
                        tx.execute(
                            "UPDATE guard_items SET change_seq =
                               (SELECT COALESCE(MAX(seq), 0) FROM changes
                                WHERE at <= guard_items.published_at)",
                            &[],
                        )?;
                    }
                    set_state(tx, "schema_version", reached)
                })
            }
            Engine::Postgres => {
                let found = migrations::postgres_version(tx, PART)?;
                migrations::run(tx, POSTGRES, found, too_new, |tx, reached| {
                    Ok(migrations::set_postgres_version(tx, PART, reached)?)
                })
            }
        })
    }
}

fn state(tx: &Tx<'_>, key: &str) -> Result<Option<i64>> {
    Ok(tx.query_opt(
        "SELECT value FROM guard_state WHERE key = ?1",
        args![key],
        |r| r.get(0),
    )?)
}

fn set_state(tx: &Tx<'_>, key: &str, value: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO guard_state (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        args![key, value],
    )?;
    Ok(())
}

impl DbStorage {
    /// The subscriptions `filter` selects, by node then bare JID, after the subscription
    /// `after` (the last of the page before), at most `limit` (an admin's listing, a page at
    /// a time).
    pub fn matching_subscriptions(
        &self,
        filter: &SubscriptionFilter,
        after: Option<&Subscription>,
        limit: usize,
    ) -> Result<Vec<Subscription>> {
        let mut values = matching_args(filter);
        values.push(limit.into());
        let (after_node, after_bare) = after.map_or(("", ""), |s| {
            (s.node.as_str(), xmpp_component::jid::bare(&s.jid))
        });
        values.push(after_node.into());
        values.push(after_bare.into());
        self.db.read(|tx| {
            Ok(tx.query_map(
                &format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM guard_subscriptions
                     WHERE {MATCHING} AND (node > ?5 OR (node = ?5 AND bare > ?6))
                     ORDER BY node, bare LIMIT ?4"
                ),
                &values,
                subscription_row,
            )?)
        })
    }

    /// How many subscriptions `filter` selects.
    pub fn count_matching(&self, filter: &SubscriptionFilter) -> Result<u64> {
        self.db.read(|tx| {
            Ok(tx.query_one(
                &format!("SELECT COUNT(*) FROM guard_subscriptions WHERE {MATCHING}"),
                &matching_args(filter),
                |r| r.get(0),
            )?)
        })
    }

    /// The position of the newest change-log entry, read in the publishing transaction: a
    /// grant or revocation committed before it has a position at most this, one committed
    /// after it a larger one (writers take turns, so positions are committed in order). 0
    /// while the database has no change log.
    fn change_position(&self, tx: &Tx<'_>) -> Result<i64> {
        use std::sync::atomic::Ordering;
        if !self.change_log.load(Ordering::Relaxed) {
            if !tx.table_exists("changes")? {
                return Ok(0);
            }
            self.change_log.store(true, Ordering::Relaxed);
        }
        Ok(
            tx.query_one("SELECT COALESCE(MAX(seq), 0) FROM changes", &[], |r| {
                r.get(0)
            })?,
        )
    }
}

const SUBSCRIPTION_COLUMNS: &str = "node, jid, subid, token, consumer_key, created_at";

/// The subscriptions a [`SubscriptionFilter`] selects, with [`matching_args`] as `?1` to `?3`
/// (PostgreSQL cannot tell the type of a parameter that is only tested for NULL).
const MATCHING: &str = "(CAST(?1 AS TEXT) IS NULL OR node = ?1)
    AND (CAST(?2 AS TEXT) IS NULL OR consumer_key = ?2)
    AND (CAST(?3 AS TEXT) IS NULL
         OR node IN (SELECT name FROM guard_nodes WHERE owner = ?3))";

fn matching_args(filter: &SubscriptionFilter) -> Vec<Value> {
    vec![
        filter.node.as_deref().into(),
        filter.consumer_key.as_deref().into(),
        filter.owner.as_deref().into(),
    ]
}

fn subscription_row(r: &Row) -> Result<Subscription, crate::backend::BackendError> {
    Ok(Subscription {
        node: r.get(0)?,
        jid: r.get(1)?,
        subid: r.get(2)?,
        token: r.get(3)?,
        consumer_key: r.get(4)?,
        created_at: r.get(5)?,
    })
}

const ITEM_COLUMNS: &str = "id, payload, publisher, published_at, pos, seq";

fn item_row(r: &Row) -> Result<Item, crate::backend::BackendError> {
    Ok(Item {
        id: r.get(0)?,
        payload: r.get(1)?,
        publisher: r.get(2)?,
        published_at: r.get(3)?,
        pos: r.get(4)?,
        seq: r.get(5)?,
    })
}

/// Inserts `node` with its publishers; `false` when the name is taken (nothing written).
pub(crate) fn insert_node(tx: &Tx<'_>, node: &Node) -> Result<bool> {
    // The newest item number given so far (deleted items count: numbers are never
    // given twice).
    let last_number = match tx.engine() {
        Engine::Sqlite => {
            "(SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'guard_items')"
        }
        Engine::Postgres => {
            "(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM guard_item_numbers)"
        }
    };
    let inserted = tx.execute(
        &format!(
            "INSERT INTO guard_nodes
                 (name, owner, access, max_items, created_at, max_age_secs, send_last,
                  created_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, {last_number})
             ON CONFLICT (name) DO NOTHING"
        ),
        args![
            &node.name,
            node.owner.as_deref(),
            node.access.as_str(),
            node.max_items,
            node.created_at,
            node.max_age_secs,
            node.send_last_published_item
        ],
    )?;
    if inserted == 0 {
        return Ok(false);
    }
    for jid in &node.publishers {
        tx.execute(
            "INSERT INTO guard_publishers (node, jid) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
            args![&node.name, jid],
        )?;
    }
    Ok(true)
}

/// The node `name` with its publishers.
pub(crate) fn load_node(tx: &Tx<'_>, name: &str) -> Result<Option<Node>> {
    let row = tx.query_opt(
        "SELECT name, owner, access, max_items, created_at, max_age_secs, send_last
         FROM guard_nodes WHERE name = ?1",
        args![name],
        |r| {
            Ok((
                r.get::<String>(0)?,
                r.get::<Option<String>>(1)?,
                r.get::<String>(2)?,
                r.get::<u64>(3)?,
                r.get::<u64>(4)?,
                r.get::<u64>(5)?,
                r.get::<bool>(6)?,
            ))
        },
    )?;
    let Some((name, owner, access, max_items, created_at, max_age, send_last)) = row else {
        return Ok(None);
    };
    let access = Access::parse(&access)
        .ok_or_else(|| StorageError::Corrupt(format!("node {name}: unknown access {access:?}")))?;
    let publishers = tx.query_map(
        "SELECT jid FROM guard_publishers WHERE node = ?1 ORDER BY jid",
        args![&name],
        |r| r.get(0),
    )?;
    Ok(Some(Node {
        name,
        owner,
        access,
        publishers,
        max_items: u32::try_from(max_items).unwrap_or(u32::MAX),
        max_age_secs: max_age,
        send_last_published_item: send_last,
        created_at,
    }))
}

fn load_history(tx: &Tx<'_>, node: &str) -> Result<Option<History>> {
    Ok(load_retention(tx, node)?.map(|(history, _)| history))
}

/// A node's history and its retention (`max_items`, `max_age_secs`), in one read.
fn load_retention(tx: &Tx<'_>, node: &str) -> Result<Option<(History, (u64, i64))>> {
    Ok(tx.query_opt(
        "SELECT last_pos, held, trimmed_through, trimmed_at, created_seq,
                max_items, max_age_secs
         FROM guard_nodes WHERE name = ?1",
        args![node],
        |r| {
            let history = History {
                last_pos: r.get(0)?,
                held: r.get(1)?,
                trimmed_through: r.get(2)?,
                trimmed_at: r.get(3)?,
                created_seq: r.get(4)?,
            };
            Ok((history, (r.get(5)?, r.get(6)?)))
        },
    )?)
}

/// Deletes the items of `node` that `which` selects (an SQL condition on `guard_items`, with
/// `?1` the node and `?2` `bind`) and books them as dropped by retention. Returns their ids,
/// oldest first.
fn drop_items(
    tx: &Tx<'_>,
    node: &str,
    which: &str,
    bind: i64,
    history: &mut History,
) -> Result<Vec<String>> {
    let mut dropped: Vec<(u64, u64, String)> = tx.query_map(
        &format!(
            "DELETE FROM guard_items WHERE node = ?1 AND {which} RETURNING pos, published_at, id"
        ),
        args![node, bind],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
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

fn save_history(tx: &Tx<'_>, node: &str, h: &History) -> Result<()> {
    tx.execute(
        "UPDATE guard_nodes SET last_pos = ?2, held = ?3, trimmed_through = ?4, trimmed_at = ?5
         WHERE name = ?1",
        args![node, h.last_pos, h.held, h.trimmed_through, h.trimmed_at],
    )?;
    Ok(())
}

/// An SQL condition on `guard_items` with its parameters, written with bare `?` and
/// numbered where a statement places it ([`Cond::at`]): the statement's text is the same
/// whatever the numbers, so it is prepared once (numbers written into the text made each
/// grant's span a statement of its own, parsed again at every request).
#[derive(Clone)]
struct Cond {
    sql: String,
    values: Vec<Value>,
}

impl Cond {
    /// What `visible` allows.
    fn of(visible: &Visibility) -> Self {
        let mut cond = Self {
            sql: String::new(),
            values: Vec::new(),
        };
        match visible {
            Visibility::All => cond.sql.push_str("1 = 1"),
            Visibility::Spans(spans) if spans.is_empty() => cond.sql.push_str("1 = 0"),
            Visibility::Spans(spans) => {
                cond.sql.push('(');
                for (i, s) in spans.iter().enumerate() {
                    if i > 0 {
                        cond.sql.push_str(" OR ");
                    }
                    cond.sql.push_str("(change_seq >= ?");
                    cond.values.push(s.from_seq.into());
                    if let Some(until) = s.until_seq {
                        cond.sql.push_str(" AND change_seq < ?");
                        cond.values.push(until.into());
                    }
                    if let Some(until) = s.until_time {
                        cond.sql.push_str(" AND published_at < ?");
                        cond.values.push(to_i64(until).into());
                    }
                    cond.sql.push(')');
                }
                cond.sql.push(')');
            }
        }
        cond
    }

    /// The same, and `fragment` (one `?`) with `value`.
    fn and(mut self, fragment: &str, value: impl Into<Value>) -> Self {
        self.sql.push_str(fragment);
        self.values.push(value.into());
        self
    }

    /// Its text with the parameters numbered from `first`.
    fn at(&self, first: usize) -> String {
        let mut out = String::with_capacity(self.sql.len() + 4 * self.values.len());
        let mut n = first;
        for c in self.sql.chars() {
            if c == '?' {
                out.push_str(&format!("?{n}"));
                n += 1;
            } else {
                out.push(c);
            }
        }
        out
    }

    /// `leading` (the statement's own parameters, `?1`…), then the condition's.
    fn args(&self, leading: Vec<Value>) -> Vec<Value> {
        let mut all = leading;
        all.extend(self.values.iter().cloned());
        all
    }
}

/// Reads pages of one node's items that match a condition, in one transaction.
struct Pager<'a, 't> {
    tx: &'a Tx<'t>,
    node: &'a str,
    cond: Cond,
}

impl Pager<'_, '_> {
    fn count(&self, below: Option<u64>) -> Result<u32> {
        let cond = match below {
            Some(p) => self.cond.clone().and(" AND pos < ?", to_i64(p)),
            None => self.cond.clone(),
        };
        let n: u64 = self.tx.query_one(
            &format!(
                "SELECT COUNT(*) FROM guard_items WHERE node = ?1 AND {}",
                cond.at(2)
            ),
            &cond.args(vec![self.node.into()]),
            |r| r.get(0),
        )?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// At most `max` items after `after` (skipping `offset` of them), oldest first, and
    /// whether more follow.
    fn forward(&self, after: Option<u64>, offset: u32, max: u32) -> Result<(Vec<Item>, bool)> {
        let cond = match after {
            Some(p) => self.cond.clone().and(" AND pos > ?", to_i64(p)),
            None => self.cond.clone(),
        };
        let mut rows = self.tx.query_map(
            &format!(
                "SELECT {ITEM_COLUMNS} FROM guard_items WHERE node = ?1 AND {}
                 ORDER BY pos LIMIT ?2 OFFSET ?3",
                cond.at(4)
            ),
            &cond.args(vec![
                self.node.into(),
                (i64::from(max) + 1).into(),
                offset.into(),
            ]),
            item_row,
        )?;
        let more = rows.len() > max as usize;
        rows.truncate(max as usize);
        Ok((rows, more))
    }

    /// At most `max` items before `before`, oldest first, and whether older ones exist.
    fn backward(&self, before: Option<u64>, max: u32) -> Result<(Vec<Item>, bool)> {
        let cond = match before {
            Some(p) => self.cond.clone().and(" AND pos < ?", to_i64(p)),
            None => self.cond.clone(),
        };
        let mut rows = self.tx.query_map(
            &format!(
                "SELECT {ITEM_COLUMNS} FROM guard_items WHERE node = ?1 AND {}
                 ORDER BY pos DESC LIMIT ?2",
                cond.at(3)
            ),
            &cond.args(vec![self.node.into(), (i64::from(max) + 1).into()]),
            item_row,
        )?;
        let more = rows.len() > max as usize;
        rows.truncate(max as usize);
        rows.reverse();
        Ok((rows, more))
    }

    /// The position of the item `id`, if it matches the condition.
    fn pos_of(&self, id: &str) -> Result<Option<u64>> {
        Ok(self.tx.query_opt(
            &format!(
                "SELECT pos FROM guard_items WHERE node = ?1 AND id = ?2 AND {}",
                self.cond.at(3)
            ),
            &self.cond.args(vec![self.node.into(), id.into()]),
            |r| r.get(0),
        )?)
    }
}

impl Storage for DbStorage {
    fn begin_group(&self) -> Result<bool> {
        Ok(self.db.begin_group()?)
    }

    fn end_group(&self) -> Result<()> {
        Ok(self.db.end_group()?)
    }

    fn create_node(&self, node: &Node) -> Result<()> {
        self.db.write(|tx| {
            if insert_node(tx, node)? {
                Ok(())
            } else {
                Err(StorageError::NodeExists(node.name.clone()))
            }
        })
    }

    fn node(&self, name: &str) -> Result<Option<Node>> {
        self.db.read(|tx| load_node(tx, name))
    }

    fn nodes(&self) -> Result<Vec<Node>> {
        self.db.read(|tx| {
            let names: Vec<String> =
                tx.query_map("SELECT name FROM guard_nodes ORDER BY name", &[], |r| {
                    r.get(0)
                })?;
            names
                .iter()
                .filter_map(|name| load_node(tx, name).transpose())
                .collect()
        })
    }

    fn delete_node(&self, name: &str) -> Result<Option<Vec<Subscription>>> {
        self.db.write(|tx| {
            let subscriptions = select_subscriptions(tx, Some(name))?;
            let deleted = tx.execute("DELETE FROM guard_nodes WHERE name = ?1", args![name])?;
            Ok((deleted > 0).then_some(subscriptions))
        })
    }

    fn subscribe(&self, s: &Subscription) -> Result<Subscription> {
        self.db.write(|tx| {
            Ok(tx.query_one(
                &format!(
                    "INSERT INTO guard_subscriptions
                         (node, jid, subid, token, consumer_key, created_at, bare)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (node, bare) DO UPDATE SET jid = excluded.jid,
                         token = excluded.token, consumer_key = excluded.consumer_key,
                         created_at = excluded.created_at
                     RETURNING {SUBSCRIPTION_COLUMNS}"
                ),
                args![
                    &s.node,
                    &s.jid,
                    &s.subid,
                    s.token.as_deref(),
                    s.consumer_key.as_deref(),
                    s.created_at,
                    xmpp_component::jid::bare(&s.jid)
                ],
                subscription_row,
            )?)
        })
    }

    fn unsubscribe(&self, node: &str, jid: &str) -> Result<Option<Subscription>> {
        self.db.write(|tx| {
            Ok(tx.query_opt(
                &format!(
                    "DELETE FROM guard_subscriptions WHERE node = ?1 AND bare = ?2
                     RETURNING {SUBSCRIPTION_COLUMNS}"
                ),
                args![node, xmpp_component::jid::bare(jid)],
                subscription_row,
            )?)
        })
    }

    fn subscriptions(&self, node: Option<&str>) -> Result<Vec<Subscription>> {
        self.db.atomic(|tx| select_subscriptions(tx, node))
    }

    fn subscription(&self, node: &str, jid: &str) -> Result<Option<Subscription>> {
        self.db.atomic(|tx| {
            Ok(tx.query_opt(
                &format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM guard_subscriptions
                     WHERE node = ?1 AND bare = ?2"
                ),
                args![node, xmpp_component::jid::bare(jid)],
                subscription_row,
            )?)
        })
    }

    fn subscriptions_of(&self, jid: &str, node: Option<&str>) -> Result<Vec<Subscription>> {
        self.db.atomic(|tx| {
            // PostgreSQL cannot tell the type of a parameter that is only tested for NULL.
            Ok(tx.query_map(
                &format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM guard_subscriptions
                     WHERE bare = ?1 AND (CAST(?2 AS TEXT) IS NULL OR node = ?2)
                     ORDER BY created_at, node"
                ),
                args![xmpp_component::jid::bare(jid), node],
                subscription_row,
            )?)
        })
    }

    fn subscribers_page(
        &self,
        node: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Subscription>> {
        self.db.atomic(|tx| {
            Ok(tx.query_map(
                &format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM guard_subscriptions
                     WHERE node = ?1 AND bare > ?2 ORDER BY bare LIMIT ?3"
                ),
                args![node, after.unwrap_or(""), limit],
                subscription_row,
            )?)
        })
    }

    fn nodes_known_to(&self, jid: &str) -> Result<Vec<String>> {
        self.db.atomic(|tx| {
            Ok(tx.query_map(
                "SELECT name FROM guard_nodes WHERE access = 'open'
                 UNION SELECT node FROM guard_publishers WHERE jid = ?1
                 UNION SELECT node FROM guard_subscriptions WHERE bare = ?1
                 ORDER BY 1",
                args![xmpp_component::jid::bare(jid)],
                |r| r.get(0),
            )?)
        })
    }

    fn end_token(&self, token: &str, limit: usize) -> Result<Vec<Subscription>> {
        self.db.write(|tx| {
            Ok(tx.query_map(
                &format!(
                    "DELETE FROM guard_subscriptions WHERE (node, bare) IN
                         (SELECT node, bare FROM guard_subscriptions WHERE token = ?1 LIMIT ?2)
                     RETURNING {SUBSCRIPTION_COLUMNS}"
                ),
                args![token, limit],
                subscription_row,
            )?)
        })
    }

    fn end_matching(&self, filter: &SubscriptionFilter, limit: usize) -> Result<Vec<Subscription>> {
        self.db.write(|tx| {
            Ok(tx.query_map(
                &format!(
                    "DELETE FROM guard_subscriptions WHERE (node, bare) IN
                         (SELECT node, bare FROM guard_subscriptions WHERE {MATCHING} LIMIT ?4)
                     RETURNING {SUBSCRIPTION_COLUMNS}"
                ),
                &[matching_args(filter), vec![limit.into()]].concat(),
                subscription_row,
            )?)
        })
    }

    fn publish(&self, node: &str, item: &Item) -> Result<Published> {
        self.db.write(|tx| {
            let (mut history, (max_items, max_age)) =
                load_retention(tx, node)?.ok_or_else(|| StorageError::NoNode(node.to_owned()))?;
            let replaced = tx.execute(
                "DELETE FROM guard_items WHERE node = ?1 AND id = ?2",
                args![node, &item.id],
            )?;
            history.held = history.held.saturating_sub(replaced as u64);
            let pos = history.last_pos + 1;
            let seq: i64 = tx.query_one(
                "INSERT INTO guard_items
                     (node, id, payload, publisher, published_at, pos, change_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING seq",
                args![
                    node,
                    &item.id,
                    &item.payload,
                    &item.publisher,
                    item.published_at,
                    pos,
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
        self.db.write(|tx| {
            let deleted = tx.execute(
                "DELETE FROM guard_items WHERE node = ?1 AND id = ?2",
                args![node, id],
            )? > 0;
            if deleted {
                tx.execute(
                    "UPDATE guard_nodes SET held = CASE WHEN held > 0 THEN held - 1 ELSE 0 END
                     WHERE name = ?1",
                    args![node],
                )?;
            }
            Ok(deleted)
        })
    }

    fn items_by_id(&self, node: &str, ids: &[&str], visible: &Visibility) -> Result<Vec<Item>> {
        let cond = Cond::of(visible);
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM guard_items WHERE node = ?1 AND id = ?2 AND {}",
            cond.at(3)
        );
        self.db.read(|tx| {
            let mut items = Vec::with_capacity(ids.len());
            for id in ids {
                let values = cond.args(vec![node.into(), (*id).into()]);
                if let Some(item) = tx.query_opt(&sql, &values, item_row)? {
                    items.push(item);
                }
            }
            Ok(items)
        })
    }

    fn items_page(
        &self,
        node: &str,
        from: &PageFrom,
        max: u32,
        visible: &Visibility,
    ) -> Result<Option<Page>> {
        // One snapshot: the count, the offset and the page agree even while another
        // connection publishes.
        self.db.read(|tx| {
            let pager = Pager {
                tx,
                node,
                cond: Cond::of(visible),
            };
            let count = match visible {
                Visibility::All => {
                    load_history(tx, node)?.map_or(0, |h| u32::try_from(h.held).unwrap_or(u32::MAX))
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
        })
    }

    fn archive_page(
        &self,
        node: &str,
        query: &ArchiveQuery,
        from: ArchiveFrom,
        max: u32,
        visible: &Visibility,
    ) -> Result<ArchivePage> {
        let mut cond = Cond::of(visible);
        if let Some(p) = query.after_pos {
            cond = cond.and(" AND pos > ?", to_i64(p));
        }
        if let Some(p) = query.before_pos {
            cond = cond.and(" AND pos < ?", to_i64(p));
        }
        if let Some(t) = query.start {
            cond = cond.and(" AND published_at >= ?", to_i64(t));
        }
        if let Some(t) = query.end {
            cond = cond.and(" AND published_at <= ?", to_i64(t));
        }
        self.db.read(|tx| {
            let pager = Pager { tx, node, cond };
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
        })
    }

    fn history(&self, node: &str) -> Result<Option<History>> {
        self.db.atomic(|tx| load_history(tx, node))
    }

    /// In a fleet on PostgreSQL, one guard at a time sweeps: while another holds the
    /// sweepers' lock this drops nothing and returns 0.
    fn expire_items(&self, now: u64, limit: usize) -> Result<usize> {
        let swept = self.db.as_sweeper(|| {
            self.db.write(|tx| {
                let due: Vec<(String, i64)> = tx.query_map(
                    "SELECT n.name, n.max_age_secs FROM guard_nodes n
                     WHERE n.max_age_secs > 0 AND EXISTS
                       (SELECT 1 FROM guard_items i
                        WHERE i.node = n.name AND i.published_at < ?1 - n.max_age_secs)",
                    args![now],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
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
                Ok::<_, StorageError>(expired)
            })
        })?;
        Ok(swept.unwrap_or(0))
    }

    /// A guard that has no cursor yet (a new member of a fleet) starts from the oldest
    /// cursor of the others: every change after it is handled again, which is harmless (a
    /// subscription ends once), and none is skipped.
    fn change_cursor(&self) -> Result<i64> {
        self.db.read(|tx| {
            if let Some(seq) = state(tx, &self.cursor_key)? {
                return Ok(seq);
            }
            Ok(tx.query_one(
                "SELECT COALESCE(MIN(value), 0) FROM guard_state
                 WHERE key = ?1 OR key LIKE ?2",
                args![CURSOR, format!("{CURSOR}:%")],
                |r| r.get(0),
            )?)
        })
    }

    fn set_change_cursor(&self, seq: i64) -> Result<()> {
        self.db.atomic(|tx| set_state(tx, &self.cursor_key, seq))
    }

    fn totals(&self) -> Result<Totals> {
        self.db.read(|tx| {
            let count = |table: &str| -> Result<u64> {
                let n: i64 =
                    tx.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[], |r| r.get(0))?;
                Ok(u64::try_from(n).unwrap_or(0))
            };
            Ok(Totals {
                nodes: count("guard_nodes")?,
                subscriptions: count("guard_subscriptions")?,
            })
        })
    }
}

fn select_subscriptions(tx: &Tx<'_>, node: Option<&str>) -> Result<Vec<Subscription>> {
    let order = "ORDER BY created_at, node, jid";
    Ok(match node {
        Some(node) => tx.query_map(
            &format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM guard_subscriptions WHERE node = ?1 {order}"
            ),
            args![node],
            subscription_row,
        )?,
        None => tx.query_map(
            &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM guard_subscriptions {order}"),
            &[],
            subscription_row,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The newest `max` items of `node`, oldest first.
    fn newest(s: &DbStorage, node: &str, max: u32) -> Vec<Item> {
        s.items_page(node, &PageFrom::End, max, &Visibility::All)
            .unwrap()
            .unwrap()
            .items
    }

    /// Runs `test` on a fresh storage of each engine (`name`: unique among the tests).
    fn on_each_engine(name: &str, test: impl Fn(&DbStorage)) {
        for (_dir, location) in crate::db::tests::each_engine(name) {
            test(&DbStorage::open(&location).unwrap());
        }
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
        on_each_engine("guard_nodes_round_trip_and_names_are_unique", |s| {
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
        });
    }

    #[test]
    fn an_admins_filters_select_page_and_end_subscriptions() {
        on_each_engine("guard_admins_filters", |s| {
            s.create_node(&node("/location/alice")).unwrap();
            let mut bobs = node("/location/bob");
            bobs.owner = Some("bob".into());
            s.create_node(&bobs).unwrap();
            for (node, jid, consumer) in [
                ("/location/alice", "a@x/r", "k1"),
                ("/location/alice", "b@x/r", "k2"),
                ("/location/bob", "a@x/r", "k1"),
            ] {
                let mut sub = subscription(jid, "t");
                sub.node = node.into();
                sub.consumer_key = Some(consumer.into());
                s.subscribe(&sub).unwrap();
            }
            let filter = |node: Option<&str>, consumer: Option<&str>, owner: Option<&str>| {
                SubscriptionFilter {
                    node: node.map(str::to_owned),
                    consumer_key: consumer.map(str::to_owned),
                    owner: owner.map(str::to_owned),
                }
            };
            let listed = |f: &SubscriptionFilter| -> Vec<(String, String)> {
                // A page of one at a time: the paging goes on from the last one shown.
                let mut all = Vec::new();
                let mut after: Option<Subscription> = None;
                loop {
                    let page = s.matching_subscriptions(f, after.as_ref(), 1).unwrap();
                    let Some(last) = page.into_iter().next() else {
                        return all;
                    };
                    all.push((last.node.clone(), last.jid.clone()));
                    after = Some(last);
                }
            };
            let pair = |n: &str, j: &str| (n.to_owned(), j.to_owned());
            let everyone = filter(None, None, None);
            assert_eq!(
                listed(&everyone),
                [
                    pair("/location/alice", "a@x/r"),
                    pair("/location/alice", "b@x/r"),
                    pair("/location/bob", "a@x/r")
                ]
            );
            assert_eq!(s.count_matching(&everyone).unwrap(), 3);
            let bob = filter(None, None, Some("bob"));
            assert_eq!(listed(&bob), [pair("/location/bob", "a@x/r")]);
            let k1_at_alice = filter(None, Some("k1"), Some("alice"));
            assert_eq!(listed(&k1_at_alice), [pair("/location/alice", "a@x/r")]);
            assert_eq!(
                s.count_matching(&filter(Some("/nowhere"), None, None))
                    .unwrap(),
                0
            );
            // Ended a page at a time.
            let k1 = filter(None, Some("k1"), None);
            assert_eq!(s.end_matching(&k1, 1).unwrap().len(), 1);
            assert_eq!(s.end_matching(&k1, 1).unwrap().len(), 1);
            assert!(s.end_matching(&k1, 1).unwrap().is_empty());
            assert_eq!(listed(&everyone), [pair("/location/alice", "b@x/r")]);
        });
    }

    #[test]
    fn totals_count_nodes_and_subscriptions() {
        on_each_engine("guard_totals_count_nodes_and_subscriptions", |s| {
            assert_eq!(s.totals().unwrap(), Totals::default());
            s.create_node(&node("/location/alice")).unwrap();
            s.create_node(&node("/location/bob")).unwrap();
            s.subscribe(&subscription("a@x/r", "t1")).unwrap();
            s.subscribe(&subscription("b@x/r", "t1")).unwrap();
            // The same bare JID again replaces its subscription.
            s.subscribe(&subscription("b@x/other", "t2")).unwrap();
            assert_eq!(
                s.totals().unwrap(),
                Totals {
                    nodes: 2,
                    subscriptions: 2
                }
            );
            assert_eq!(s.end_token("t1", 10).unwrap().len(), 1);
            assert_eq!(s.totals().unwrap().subscriptions, 1);
        });
    }

    #[test]
    fn items_keep_the_newest_max_items() {
        on_each_engine("guard_items_keep_the_newest_max_items", |s| {
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
            assert_eq!(ids(&newest(s, n, 500)), ["c", "b"]);
            assert_eq!(ids(&newest(s, n, 1)), ["b"]);
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
            assert_eq!(ids(&newest(s, n, 500)), ["c"]);
            assert_eq!(s.history(n).unwrap().unwrap().held, 1);
            // A retraction is not a loss to report.
            assert_eq!(s.history(n).unwrap().unwrap().trimmed_through, 1);
        });
    }

    #[test]
    fn retention_by_age_on_publish_and_by_the_sweeper() {
        on_each_engine("guard_retention_by_age_on_publish_and_by_the_s", |s| {
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
            assert_eq!(ids(&newest(s, n, 10)), ["t50", "t65"]);
            assert_eq!(ids(&newest(s, "/keep", 10)), ["t0", "t10", "t50"]);
            let h = s.history(n).unwrap().unwrap();
            assert_eq!((h.held, h.trimmed_through, h.trimmed_at), (2, 2, 1_010));
            // A batch limit is kept, and the rest goes in the next call.
            assert_eq!(s.expire_items(10_000, 1).unwrap(), 1);
            assert_eq!(s.expire_items(10_000, 5).unwrap(), 1);
            assert_eq!(s.history(n).unwrap().unwrap().held, 0);
        });
    }

    #[test]
    fn archive_pages_by_position_time_and_grant() {
        on_each_engine("guard_archive_pages_by_position_time_and_grant", |s| {
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
        });
    }

    #[test]
    fn items_record_the_change_log_position_of_their_commit() {
        for (_dir, path) in crate::db::tests::each_engine("guard_change_positions") {
            let store = crate::authz::Store::open(&path).unwrap();
            let s = DbStorage::open(&path).unwrap();
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
    }

    #[test]
    fn a_senders_subscriptions_and_a_nodes_subscribers_are_found_by_bare_jid() {
        on_each_engine("guard_found_by_bare_jid", |s| {
            s.create_node(&node("/location/alice")).unwrap();
            s.create_node(&node("/location/bob")).unwrap();
            let mut open = node("/news");
            open.owner = None;
            open.access = Access::Open;
            s.create_node(&open).unwrap();
            // 2,500 subscribers of alice's node, in an order that is not their JIDs'.
            for i in (0..2500).rev() {
                s.subscribe(&subscription(&format!("app{i:04}@localhost/r"), "t1"))
                    .unwrap();
            }
            let mut bob = subscription("app0007@localhost", "t2");
            bob.node = "/location/bob".into();
            s.subscribe(&bob).unwrap();

            let one = s
                .subscription("/location/alice", "app0042@localhost/other")
                .unwrap()
                .unwrap();
            assert_eq!(one.jid, "app0042@localhost/r");
            assert_eq!(
                s.subscription("/location/alice", "nobody@localhost")
                    .unwrap(),
                None
            );

            let of: Vec<String> = s
                .subscriptions_of("app0007@localhost/x", None)
                .unwrap()
                .into_iter()
                .map(|s| s.node)
                .collect();
            assert_eq!(of, ["/location/alice", "/location/bob"]);
            assert_eq!(
                s.subscriptions_of("app0007@localhost", Some("/location/bob"))
                    .unwrap()
                    .len(),
                1
            );

            // Pages of 1,000 by bare JID: every subscriber once, in order.
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = s
                    .subscribers_page("/location/alice", after.as_deref(), 1000)
                    .unwrap();
                assert!(page.len() <= 1000);
                let Some(last) = page.last() else { break };
                after = Some(xmpp_component::jid::bare(&last.jid).to_owned());
                seen.extend(page.into_iter().map(|s| s.jid));
            }
            let expected: Vec<String> = (0..2500)
                .map(|i| format!("app{i:04}@localhost/r"))
                .collect();
            assert_eq!(seen, expected);

            // The nodes a JID may know of: open ones, subscribed ones, published ones.
            assert_eq!(
                s.nodes_known_to("app0007@localhost/x").unwrap(),
                ["/location/alice", "/location/bob", "/news"]
            );
            assert_eq!(
                s.nodes_known_to("loc@localhost").unwrap(),
                ["/location/alice", "/location/bob", "/news"]
            );
            assert_eq!(s.nodes_known_to("stranger@localhost").unwrap(), ["/news"]);
        });
    }

    #[test]
    fn subscriptions_end_with_their_token_and_their_node() {
        on_each_engine("guard_subscriptions_end_with_their_token_and_t", |s| {
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
            assert!(s.end_token("t1", 10).unwrap().is_empty());
            s.subscribe(&subscription("app3@localhost/r", "t2"))
                .unwrap();
            // A page at a time.
            assert_eq!(s.end_token("t2", 2).unwrap().len(), 2);
            assert_eq!(s.end_token("t2", 2).unwrap().len(), 1);
            assert!(s.end_token("t2", 2).unwrap().is_empty());
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
        });
    }

    #[test]
    fn state_survives_reopening() {
        for (_dir, path) in crate::db::tests::each_engine("guard_reopening") {
            {
                let s = DbStorage::open(&path).unwrap();
                s.create_node(&node("/location/alice")).unwrap();
                s.publish("/location/alice", &item("a")).unwrap();
                s.subscribe(&subscription("app@localhost", "t1")).unwrap();
                s.set_change_cursor(42).unwrap();
            }
            let s = DbStorage::open(&path).unwrap();
            assert_eq!(s.change_cursor().unwrap(), 42);
            let kept = newest(&s, "/location/alice", 500);
            assert_eq!((ids(&kept), kept[0].pos), (vec!["a"], 1));
            assert_eq!(s.subscriptions(None).unwrap().len(), 1);
            // The authorization server opens the same database beside them.
            crate::authz::Store::open(&path).unwrap();
        }
    }

    #[test]
    fn a_full_database_is_told_apart_and_keeps_what_it_had() {
        let dir = tempfile::tempdir().unwrap();
        let s = &DbStorage::open(dir.path().join("db.sqlite")).unwrap();
        {
            s.create_node(&Node {
                max_items: 100_000,
                ..node("/location/alice")
            })
            .unwrap();
            s.publish("/location/alice", &item("kept")).unwrap();
            // The database may not grow: SQLite answers as it does on a full disk.
            s.db.with_sqlite(|conn| {
                let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                conn.pragma_update(None, "max_page_count", pages)
            })
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
    }

    #[test]
    fn version_3_items_get_positions_and_change_log_places() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        crate::authz::Store::open(&path).unwrap();
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
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
        let s = DbStorage::open(&path).unwrap();
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
            let conn = rusqlite::Connection::open(&path).unwrap();
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
        let s = DbStorage::open(&path).unwrap();
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

    #[test]
    fn guards_of_a_fleet_keep_their_own_change_cursors() {
        for (_dir, location) in crate::db::tests::each_engine("guard_cursors") {
            let a = DbStorage::open(&location).unwrap().for_instance("a");
            let b = DbStorage::open(&location).unwrap().for_instance("b");
            assert_eq!(a.change_cursor().unwrap(), 0);
            a.set_change_cursor(5).unwrap();
            // A guard without a cursor starts from the oldest of the others'.
            assert_eq!(b.change_cursor().unwrap(), 5);
            b.set_change_cursor(9).unwrap();
            assert_eq!(a.change_cursor().unwrap(), 5);
            assert_eq!(b.change_cursor().unwrap(), 9);
            let c = DbStorage::open(&location).unwrap().for_instance("c");
            assert_eq!(c.change_cursor().unwrap(), 5);
            // The single guard's cursor is another one.
            let single = DbStorage::open(&location).unwrap();
            single.set_change_cursor(2).unwrap();
            assert_eq!(c.change_cursor().unwrap(), 2);
            assert_eq!(
                (a.change_cursor().unwrap(), single.change_cursor().unwrap()),
                (5, 2)
            );
        }
    }

    /// On PostgreSQL one guard of a fleet sweeps at a time: while another holds the
    /// sweepers' lock, a sweep drops nothing; once it is free, the sweep runs.
    #[test]
    fn one_sweeper_at_a_time_on_postgres() {
        let Some(cluster) = testkit_postgres::optional_shared() else {
            return;
        };
        let location = Location::Postgres(cluster.new_database("guard_one_sweeper").unwrap());
        let s = DbStorage::open(&location).unwrap();
        s.create_node(&Node {
            max_age_secs: 10,
            max_items: 100,
            ..node("/location/alice")
        })
        .unwrap();
        s.publish("/location/alice", &item("old")).unwrap();
        let other = Database::open(&location).unwrap();
        let held = other
            .as_sweeper(|| {
                assert_eq!(s.expire_items(100, 10).unwrap(), 0);
                Ok::<_, crate::backend::BackendError>(())
            })
            .unwrap();
        assert_eq!(held, Some(()));
        assert_eq!(s.expire_items(100, 10).unwrap(), 1);
        assert_eq!(newest(&s, "/location/alice", 10), []);
    }

    #[test]
    fn tables_of_a_newer_version_are_refused() {
        for (_dir, location) in crate::db::tests::each_engine("guard_too_new") {
            drop(DbStorage::open(&location).unwrap());
            let db = Database::open(&location).unwrap();
            let bump = match db.engine() {
                Engine::Sqlite => "UPDATE guard_state SET value = 99 WHERE key = 'schema_version'",
                Engine::Postgres => "UPDATE schema_versions SET version = 99 WHERE part = 'guard'",
            };
            assert_eq!(db.write(|tx| tx.execute(bump, &[])).unwrap(), 1);
            let known = match db.engine() {
                Engine::Sqlite => MIGRATIONS.len(),
                Engine::Postgres => POSTGRES.len(),
            };
            let err = DbStorage::open(&location).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "storage: the guard's tables are at version 99, newer than this program ({known})"
                ),
                "{location}"
            );
        }
    }
}
