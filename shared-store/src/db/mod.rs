//! One way to talk to either engine: SQLite (the embedded default, one file) or PostgreSQL
//! (several processes, several machines). The store's SQL is written once, in the dialect both
//! understand, with `?1`-style parameters; [`Tx`] runs it on whichever engine the
//! [`Location`] names, rewriting the parameters to `$1` for PostgreSQL.
//!
//! Transactions behave the same on both:
//!
//! - [`Database::write`] runs its closure as the only writer of the whole database: SQLite's
//!   `BEGIN IMMEDIATE`, and on PostgreSQL a transaction that first takes one advisory lock
//!   every writer takes ([`WRITE_LOCK`]). Writers are serialized across processes, so a
//!   read-modify-write inside one is never interleaved with another, and numbers handed out
//!   in a write (change-log positions, item numbers) are committed in the order they were
//!   given, which is what a reader following them by position relies on.
//! - [`Database::read`] sees one snapshot: a deferred SQLite transaction, a PostgreSQL
//!   `REPEATABLE READ READ ONLY` one.
//! - [`Database::atomic`] runs statements that are each atomic by themselves (the nonce
//!   check's insert-or-take-over, single lookups) outside any transaction: each commits, or
//!   reads its own snapshot, alone, without waiting for the writers' lock.
//!
//! An [`Observer`] given with [`Database::with_observer`] is told how long each of these
//! calls took (and each commit of a group), which is how both programs measure their store
//! latency.

mod location;
pub(crate) mod migrations;
pub(crate) mod pg;
pub(crate) mod sqlite;
mod value;

use std::sync::{Mutex, MutexGuard};

pub use location::Location;
pub use pg::Listener;
pub use value::{FromValue, Row, Value};

use crate::backend::{BackendError, BackendErrorKind};

/// The PostgreSQL advisory lock every writer takes (a 64-bit key: "sharedst" in ASCII).
pub const WRITE_LOCK: i64 = 0x7368_6172_6564_7374;

/// The PostgreSQL advisory lock the expiry sweepers of a fleet take, so one of them sweeps
/// at a time ("sweepers" in ASCII).
pub const SWEEP_LOCK: i64 = 0x7377_6565_7065_7273;

/// Which engine a database runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// One SQLite file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

/// Which kind of call an [`Observer`] is told the duration of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// [`Database::read`].
    Read,
    /// [`Database::write`] (a savepoint within a group).
    Write,
    /// [`Database::atomic`].
    Atomic,
    /// [`Database::end_group`]: the commit of a group.
    GroupCommit,
}

impl Operation {
    /// Its name as a metric label: `read`, `write`, `atomic`, `group-commit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Atomic => "atomic",
            Self::GroupCommit => "group-commit",
        }
    }
}

/// Told how long each store call took, from the call to its return (waiting for the
/// connection included). It runs on the caller's thread, so it must be quick (a histogram's
/// `observe`).
pub type Observer = std::sync::Arc<dyn Fn(Operation, std::time::Duration) + Send + Sync>;

/// An open database: one connection, used by one call at a time.
pub struct Database {
    conn: Conn,
    location: Location,
    /// Whether a group commit is open ([`Database::begin_group`]).
    grouped: std::sync::atomic::AtomicBool,
    /// Told the duration of each call, if any.
    observer: Option<Observer>,
}

enum Conn {
    Sqlite(Mutex<rusqlite::Connection>),
    // Boxed: a PostgreSQL connection is several times the size of a SQLite one.
    Postgres(Mutex<Box<pg::Conn>>),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Builds the argument list of a statement: `args![name, 3_i64, None::<String>]`.
#[macro_export]
#[doc(hidden)]
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::db::Value::from($v)),*] as &[$crate::db::Value]
    };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a transaction half-done (both engines roll
    // back an unfinished transaction when it is dropped), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Database {
    /// Opens the database at `location`: a SQLite file (created with mode 0600 if missing,
    /// in WAL mode with a busy timeout) or a PostgreSQL server, connected at once so that a
    /// wrong URL or a server that is down is reported now.
    pub fn open(location: &Location) -> Result<Self, crate::StoreError> {
        let conn = match location {
            Location::Sqlite(path) => Conn::Sqlite(Mutex::new(sqlite::connect(path)?)),
            Location::Postgres(url) => Conn::Postgres(Mutex::new(Box::new(pg::Conn::open(url)?))),
        };
        Ok(Self {
            conn,
            location: location.clone(),
            grouped: std::sync::atomic::AtomicBool::new(false),
            observer: None,
        })
    }

    /// The same database telling `observer` how long each [`Database::read`],
    /// [`Database::write`], [`Database::atomic`] and [`Database::end_group`] took.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Runs `f`, telling the observer (if any) how long it took as `operation`.
    fn timed<T>(&self, operation: Operation, f: impl FnOnce() -> T) -> T {
        let Some(observer) = &self.observer else {
            return f();
        };
        let start = std::time::Instant::now();
        let out = f();
        observer(operation, start.elapsed());
        out
    }

    /// Where it is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Which engine it runs on.
    pub fn engine(&self) -> Engine {
        match self.conn {
            Conn::Sqlite(_) => Engine::Sqlite,
            Conn::Postgres(_) => Engine::Postgres,
        }
    }

    /// Runs `f` as the only writer of the database, in one transaction committed when `f`
    /// succeeds and rolled back when it fails.
    pub fn write<T, E: From<BackendError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.timed(Operation::Write, || match &self.conn {
            Conn::Sqlite(c) if self.in_group() => sqlite::savepoint(&mut lock(c), f),
            Conn::Sqlite(c) => {
                sqlite::transaction(&mut lock(c), rusqlite::TransactionBehavior::Immediate, f)
            }
            Conn::Postgres(c) => lock(c).transaction(pg::Mode::Write, f),
        })
    }

    fn in_group(&self) -> bool {
        self.grouped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Begins a group commit on SQLite: until [`Database::end_group`], every
    /// [`Database::write`] on this connection is a savepoint of one transaction (a failed one
    /// rolls back alone), reads run in that transaction, and nothing is committed, so that
    /// many requests pay for one commit. `false` (nothing begun) on PostgreSQL. Only for a
    /// connection that every store of the process shares: another connection's write would
    /// wait for this transaction.
    pub fn begin_group(&self) -> Result<bool, BackendError> {
        match &self.conn {
            Conn::Sqlite(c) => {
                let c = lock(c);
                c.execute_batch("BEGIN IMMEDIATE")?;
                self.grouped
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(true)
            }
            Conn::Postgres(_) => Ok(false),
        }
    }

    /// Commits the group begun by [`Database::begin_group`]. When that fails, the whole
    /// group is rolled back: none of its writes happened.
    pub fn end_group(&self) -> Result<(), BackendError> {
        self.timed(Operation::GroupCommit, || self.commit_group())
    }

    fn commit_group(&self) -> Result<(), BackendError> {
        match &self.conn {
            Conn::Sqlite(c) => {
                let c = lock(c);
                self.grouped
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                c.execute_batch("COMMIT").map_err(|e| {
                    // A failed COMMIT may leave the transaction open: end it.
                    let _ = c.execute_batch("ROLLBACK");
                    e.into()
                })
            }
            Conn::Postgres(_) => Ok(()),
        }
    }

    /// Runs `f` on one snapshot of the database.
    pub fn read<T, E: From<BackendError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.timed(Operation::Read, || match &self.conn {
            // In a group, reads see the group's transaction.
            Conn::Sqlite(c) if self.in_group() => f(&Tx::sqlite(&lock(c))),
            Conn::Sqlite(c) => {
                sqlite::transaction(&mut lock(c), rusqlite::TransactionBehavior::Deferred, f)
            }
            Conn::Postgres(c) => lock(c).transaction(pg::Mode::Read, f),
        })
    }

    /// Runs `f`, whose statements are each atomic by themselves, outside any transaction:
    /// each statement is its own (on both engines), and none waits for the writers' lock.
    pub fn atomic<T, E: From<BackendError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.timed(Operation::Atomic, || match &self.conn {
            Conn::Sqlite(c) => f(&Tx::sqlite(&lock(c))),
            Conn::Postgres(c) => lock(c).transaction(pg::Mode::Atomic, f),
        })
    }

    /// Runs `f` while this process holds the fleet's sweeper lock; `None` without running it
    /// when another process holds it. SQLite has one file and its writers take turns, so
    /// there `f` always runs.
    pub fn as_sweeper<T, E: From<BackendError>>(
        &self,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<Option<T>, E> {
        match &self.conn {
            Conn::Sqlite(_) => f().map(Some),
            Conn::Postgres(c) => {
                if !lock(c).try_session_lock(SWEEP_LOCK)? {
                    return Ok(None);
                }
                let out = f();
                lock(c).session_unlock(SWEEP_LOCK)?;
                out.map(Some)
            }
        }
    }
}

#[cfg(test)]
impl Database {
    /// Runs `f` on the SQLite connection itself (tests that change its limits).
    pub(crate) fn with_sqlite<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, BackendError> {
        match &self.conn {
            Conn::Sqlite(c) => Ok(f(&lock(c))?),
            Conn::Postgres(_) => Err(BackendError::other("not a SQLite database")),
        }
    }
}

/// A transaction (or, from [`Database::atomic`], a connection) that statements run in.
pub struct Tx<'a> {
    inner: TxInner<'a>,
}

enum TxInner<'a> {
    Sqlite(&'a rusqlite::Connection),
    Postgres(std::cell::RefCell<pg::Tx<'a>>),
}

impl<'a> Tx<'a> {
    fn sqlite(conn: &'a rusqlite::Connection) -> Self {
        Self {
            inner: TxInner::Sqlite(conn),
        }
    }

    /// Which engine it runs on (for the few statements the two spell differently).
    pub fn engine(&self) -> Engine {
        match self.inner {
            TxInner::Sqlite(_) => Engine::Sqlite,
            TxInner::Postgres(_) => Engine::Postgres,
        }
    }

    /// Runs one statement; returns how many rows it changed.
    pub fn execute(&self, sql: &str, args: &[Value]) -> Result<usize, BackendError> {
        match &self.inner {
            TxInner::Sqlite(c) => sqlite::execute(c, sql, args),
            TxInner::Postgres(t) => t.borrow_mut().execute(sql, args),
        }
    }

    /// Runs a query and maps each row with `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        args: &[Value],
        f: impl FnMut(&Row) -> Result<T, BackendError>,
    ) -> Result<Vec<T>, BackendError> {
        let rows = match &self.inner {
            TxInner::Sqlite(c) => sqlite::query(c, sql, args)?,
            TxInner::Postgres(t) => t.borrow_mut().query(sql, args)?,
        };
        rows.iter().map(f).collect()
    }

    /// Runs a query and maps its first row with `f`, if there is one.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        args: &[Value],
        f: impl FnOnce(&Row) -> Result<T, BackendError>,
    ) -> Result<Option<T>, BackendError> {
        let rows = match &self.inner {
            TxInner::Sqlite(c) => sqlite::query(c, sql, args)?,
            TxInner::Postgres(t) => t.borrow_mut().query(sql, args)?,
        };
        rows.first().map(f).transpose()
    }

    /// Runs a query that returns a row, and maps it with `f`.
    pub fn query_one<T>(
        &self,
        sql: &str,
        args: &[Value],
        f: impl FnOnce(&Row) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        self.query_opt(sql, args, f)?.ok_or_else(|| BackendError {
            kind: BackendErrorKind::Other,
            message: format!("the query returned no row: {sql}"),
        })
    }

    /// Runs several `;`-separated statements without parameters (migrations).
    pub fn batch(&self, sql: &str) -> Result<(), BackendError> {
        match &self.inner {
            TxInner::Sqlite(c) => Ok(c.execute_batch(sql)?),
            TxInner::Postgres(t) => t.borrow_mut().batch(sql),
        }
    }

    /// Whether the database has a table of this name.
    pub fn table_exists(&self, name: &str) -> Result<bool, BackendError> {
        let sql = match self.engine() {
            Engine::Sqlite => "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            Engine::Postgres => "SELECT 1 WHERE to_regclass(CAST(?1 AS TEXT)) IS NOT NULL",
        };
        Ok(self.query_opt(sql, args![name], |_| Ok(()))?.is_some())
    }
}

#[cfg(test)]
pub(crate) mod tests;
