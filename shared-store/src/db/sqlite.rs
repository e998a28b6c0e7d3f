//! The SQLite side of [`super::Database`].

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};

use super::{Row, Tx, Value};
use crate::StoreError;
use crate::backend::BackendError;

/// How long a writer waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 64;

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Self::Null => ValueRef::Null,
            Self::Int(i) => ValueRef::Integer(*i),
            Self::Text(s) => ValueRef::Text(s.as_bytes()),
            Self::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn value(v: ValueRef<'_>) -> Result<Value, BackendError> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Text(t) => Value::Text(
            std::str::from_utf8(t)
                .map_err(|e| BackendError::other(format!("a text column is not UTF-8: {e}")))?
                .to_owned(),
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        ValueRef::Real(r) => {
            return Err(BackendError::other(format!(
                "a column holds the real number {r}; the store reads no real numbers"
            )));
        }
    })
}

/// A connection to the shared SQLite file as every program of the project opens it: the
/// file created with mode 0600 if missing, WAL, `synchronous = NORMAL`, foreign keys on, and
/// a busy timeout so two processes can write to it in turn.
pub(crate) fn connect(path: &Path) -> Result<Connection, StoreError> {
    create_private(path)?;
    let conn = Connection::open(path).map_err(BackendError::from)?;
    let setup = || -> rusqlite::Result<()> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(())
    };
    setup().map_err(BackendError::from)?;
    Ok(conn)
}

/// Creates `path` with mode 0600 if it does not exist (SQLite gives its `-wal` and `-shm`
/// files the same mode).
///
/// An existing file is never opened here: closing any descriptor of a file drops every POSIX
/// lock the process holds on it, including the locks of SQLite connections this process
/// already has on it. A process that holds no lock lets another process's `sqlite3` shell
/// believe it is the last user and delete the `-wal` file under it.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Open {
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub(super) fn transaction<T, E: From<BackendError>>(
    conn: &mut Connection,
    behavior: TransactionBehavior,
    f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let tx = conn
        .transaction_with_behavior(behavior)
        .map_err(BackendError::from)?;
    let out = f(&Tx::sqlite(&tx))?;
    tx.commit().map_err(BackendError::from)?;
    Ok(out)
}

/// Runs `f` in a savepoint of the open transaction: released when `f` succeeds, rolled back
/// to when it fails.
pub(super) fn savepoint<T, E: From<BackendError>>(
    conn: &mut Connection,
    f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let sp = conn.savepoint().map_err(BackendError::from)?;
    let out = f(&Tx::sqlite(&sp))?;
    sp.commit().map_err(BackendError::from)?;
    Ok(out)
}

pub(super) fn execute(conn: &Connection, sql: &str, args: &[Value]) -> Result<usize, BackendError> {
    let mut stmt = conn.prepare_cached(sql)?;
    Ok(stmt.execute(rusqlite::params_from_iter(args))?)
}

pub(super) fn query(
    conn: &Connection,
    sql: &str,
    args: &[Value],
) -> Result<Vec<Row>, BackendError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let values = (0..columns)
            .map(|i| value(row.get_ref(i)?))
            .collect::<Result<_, BackendError>>()?;
        out.push(Row(values));
    }
    Ok(out)
}
