//! Running a part's migrations, and where PostgreSQL keeps each part's version: one row of
//! `schema_versions` per part (`authz`, `guard`). SQLite keeps them where each part always
//! has (see the callers).

use super::Tx;
use crate::args;
use crate::backend::BackendError;

/// The table of the parts' versions on PostgreSQL.
const VERSIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_versions (
    part    TEXT PRIMARY KEY,
    version BIGINT NOT NULL
)";

/// How many migrations of `part` have run on PostgreSQL (0 before the first).
pub(crate) fn postgres_version(tx: &Tx<'_>, part: &str) -> Result<i64, BackendError> {
    if !tx.table_exists("schema_versions")? {
        return Ok(0);
    }
    Ok(tx
        .query_opt(
            "SELECT version FROM schema_versions WHERE part = ?1",
            args![part],
            |r| r.get(0),
        )?
        .unwrap_or(0))
}

/// Records that `version` migrations of `part` have run on PostgreSQL.
pub(crate) fn set_postgres_version(
    tx: &Tx<'_>,
    part: &str,
    version: i64,
) -> Result<(), BackendError> {
    tx.batch(VERSIONS_TABLE)?;
    tx.execute(
        "INSERT INTO schema_versions (part, version) VALUES (?1, ?2)
         ON CONFLICT (part) DO UPDATE SET version = excluded.version",
        args![part, version],
    )?;
    Ok(())
}

/// Runs the migrations after the `found` first, calling `done` with the version reached after
/// each (to record it, and anything that goes with it); `too_new(found, known)` when the
/// database has run more than `migrations` holds.
pub(crate) fn run<E: From<BackendError>>(
    tx: &Tx<'_>,
    migrations: &[&str],
    found: i64,
    too_new: impl FnOnce(i64, i64) -> E,
    mut done: impl FnMut(&Tx<'_>, i64) -> Result<(), E>,
) -> Result<(), E> {
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    if found > known {
        return Err(too_new(found, known));
    }
    let skip = usize::try_from(found).unwrap_or(0);
    for (reached, sql) in (found + 1..).zip(&migrations[skip..]) {
        tx.batch(sql)?;
        done(tx, reached)?;
    }
    Ok(())
}
