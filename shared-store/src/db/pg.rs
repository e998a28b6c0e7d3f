//! The PostgreSQL side of [`super::Database`], and the listener of its notifications.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, IsolationLevel, NoTls, Statement};

use super::{Row, TxInner, Value, WRITE_LOCK};
use crate::backend::{BackendError, BackendErrorKind};

/// How many prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 128;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl From<postgres::Error> for BackendError {
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        let kind = match e.code() {
            Some(c) if *c == SqlState::DISK_FULL => BackendErrorKind::Full,
            Some(c)
                if *c == SqlState::LOCK_NOT_AVAILABLE
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::QUERY_CANCELED
                    || *c == SqlState::TOO_MANY_CONNECTIONS =>
            {
                BackendErrorKind::Busy
            }
            _ => BackendErrorKind::Other,
        };
        let message = match e.as_db_error() {
            Some(db) => match db.detail() {
                Some(detail) => format!("PostgreSQL: {} ({detail})", db.message()),
                None => format!("PostgreSQL: {}", db.message()),
            },
            None => format!("PostgreSQL: {e}"),
        };
        Self { kind, message }
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Self::Null => Ok(IsNull::Yes),
            Self::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => Err(format!("an integer cannot be bound to a parameter of type {ty}").into()),
            },
            Self::Text(s) => s.as_str().to_sql(ty, out),
            Self::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(match *ty {
            Type::INT8 => Self::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Self::Int(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT2 => Self::Int(i64::from(i16::from_sql(ty, raw)?)),
            Type::BOOL => Self::Int(i64::from(bool::from_sql(ty, raw)?)),
            Type::BYTEA => Self::Blob(<Vec<u8>>::from_sql(ty, raw)?),
            _ if <&str as FromSql>::accepts(ty) => Self::Text(<&str>::from_sql(ty, raw)?.into()),
            _ => return Err(format!("the store reads no column of type {ty}").into()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Self::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// `sql` with SQLite's `?1` parameters as PostgreSQL's `$1` (a bare `?` takes the next
/// number). Quoted text and quoted names are copied as they are.
pub(super) fn translate(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote = None;
    let mut next = 1_u32;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (None, '?') => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    out.push_str(&next.to_string());
                    next += 1;
                } else {
                    next = digits.parse::<u32>().map_or(next, |n| n + 1);
                    out.push_str(&digits);
                }
            }
            (None, c) => out.push(c),
        }
    }
    out
}

fn connect(url: &str) -> Result<Client, BackendError> {
    let mut config = postgres::Config::from_str(url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("shared-store");
    }
    Ok(config.connect(NoTls)?)
}

/// How a transaction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// As the only writer ([`WRITE_LOCK`]).
    Write,
    /// On one snapshot, reading only.
    Read,
    /// Statements atomic by themselves, without the writers' lock.
    Atomic,
}

/// One connection, made again when it was lost, with its prepared statements.
pub(super) struct Conn {
    url: String,
    client: Option<Client>,
    cache: HashMap<String, Statement>,
}

impl Conn {
    pub(super) fn open(url: &str) -> Result<Self, BackendError> {
        let mut conn = Self {
            url: url.to_owned(),
            client: None,
            cache: HashMap::new(),
        };
        conn.parts()?;
        Ok(conn)
    }

    /// The client (connected again if the connection was lost) and its statements.
    fn parts(&mut self) -> Result<(&mut Client, &mut HashMap<String, Statement>), BackendError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.cache.clear();
            self.client = None;
            self.client = Some(connect(&self.url)?);
        }
        match self.client.as_mut() {
            Some(client) => Ok((client, &mut self.cache)),
            None => Err(BackendError::other("not connected to PostgreSQL")),
        }
    }

    pub(super) fn transaction<T, E: From<BackendError>>(
        &mut self,
        mode: Mode,
        f: impl FnOnce(&super::Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let (client, cache) = self.parts()?;
        let session = match mode {
            // Each statement commits by itself: no transaction to start and end.
            Mode::Atomic => Session::Auto(client),
            Mode::Write => Session::Tx(
                client
                    .build_transaction()
                    .isolation_level(IsolationLevel::ReadCommitted)
                    .start()
                    .map_err(BackendError::from)?,
            ),
            Mode::Read => Session::Tx(
                client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .map_err(BackendError::from)?,
            ),
        };
        let t = super::Tx {
            inner: TxInner::Postgres(RefCell::new(Tx { session, cache })),
        };
        if mode == Mode::Write {
            t.execute(
                "SELECT pg_advisory_xact_lock(?1)",
                &[Value::Int(WRITE_LOCK)],
            )?;
        }
        let out = f(&t)?;
        if let TxInner::Postgres(cell) = t.inner
            && let Session::Tx(tx) = cell.into_inner().session
        {
            tx.commit().map_err(BackendError::from)?;
        }
        Ok(out)
    }

    /// Takes the session-level advisory lock `key` if it is free.
    pub(super) fn try_session_lock(&mut self, key: i64) -> Result<bool, BackendError> {
        let (client, _) = self.parts()?;
        Ok(client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])?
            .try_get(0)?)
    }

    /// Releases the session-level advisory lock `key`.
    pub(super) fn session_unlock(&mut self, key: i64) -> Result<(), BackendError> {
        let (client, _) = self.parts()?;
        client.execute("SELECT pg_advisory_unlock($1)", &[&key])?;
        Ok(())
    }
}

impl Drop for Conn {
    /// Closes the connection on a thread of its own: the client closes by blocking on a
    /// runtime of its own, which panics on a thread that drives an async runtime (where the
    /// last handle to a store may well be dropped).
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let closing = std::thread::Builder::new()
                .name("postgres-close".into())
                .spawn(move || drop(client));
            if let Ok(thread) = closing {
                let _ = thread.join();
            }
        }
    }
}

/// A PostgreSQL transaction (or the connection itself, each statement committing alone) with
/// the connection's statements.
pub(super) struct Tx<'a> {
    session: Session<'a>,
    cache: &'a mut HashMap<String, Statement>,
}

enum Session<'a> {
    Tx(postgres::Transaction<'a>),
    Auto(&'a mut Client),
}

/// Runs `$e` with `$c` bound to the transaction or the client, whichever the session holds.
macro_rules! on {
    ($session:expr, $c:ident => $e:expr) => {
        match $session {
            Session::Tx($c) => $e,
            Session::Auto($c) => $e,
        }
    };
}

impl Tx<'_> {
    fn statement(&mut self, sql: &str) -> Result<Statement, BackendError> {
        if let Some(s) = self.cache.get(sql) {
            return Ok(s.clone());
        }
        let statement = on!(&mut self.session, c => c.prepare(&translate(sql)))?;
        if self.cache.len() >= STATEMENT_CACHE {
            self.cache.clear();
        }
        self.cache.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    pub(super) fn execute(&mut self, sql: &str, args: &[Value]) -> Result<usize, BackendError> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as _).collect();
        let n = on!(&mut self.session, c => c.execute(&statement, &params))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub(super) fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, BackendError> {
        let statement = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as _).collect();
        on!(&mut self.session, c => c.query(&statement, &params))?
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| row.try_get::<_, Value>(i).map_err(BackendError::from))
                    .collect::<Result<_, _>>()
                    .map(Row)
            })
            .collect()
    }

    pub(super) fn batch(&mut self, sql: &str) -> Result<(), BackendError> {
        Ok(on!(&mut self.session, c => c.batch_execute(sql))?)
    }
}

/// A thread that listens on a PostgreSQL channel and calls a function for each notification
/// (and once after each connection, for what was sent while it was not listening). Dropping
/// it stops the thread within half a second.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How often the listener looks at its stop flag while no notification comes.
const LISTEN_TICK: Duration = Duration::from_millis(500);

/// Listens on `channel` of the database at `url`, calling `wake` for each notification. The
/// first connection is made before this returns (so a wrong URL is an error here); a lost
/// connection is made again with a backoff of up to 5 s, and `wake` is called once it is
/// back.
pub(crate) fn listen(
    url: &str,
    channel: &'static str,
    wake: Box<dyn Fn() + Send>,
) -> Result<Listener, BackendError> {
    let subscribe = move |url: &str| -> Result<Client, BackendError> {
        let mut client = connect(url)?;
        client.batch_execute(&format!("LISTEN {channel}"))?;
        Ok(client)
    };
    let mut client = Some(subscribe(url)?);
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let url = url.to_owned();
    let thread = std::thread::Builder::new()
        .name(format!("listen-{channel}"))
        .spawn(move || {
            let mut backoff = Duration::from_millis(250);
            while !stopping.load(Ordering::Relaxed) {
                let Some(c) = client.as_mut() else {
                    std::thread::sleep(backoff.min(LISTEN_TICK));
                    match subscribe(&url) {
                        Ok(c) => {
                            tracing::info!(channel, "listening again");
                            client = Some(c);
                            backoff = Duration::from_millis(250);
                            wake();
                        }
                        Err(e) => {
                            tracing::warn!(channel, "cannot listen: {e}");
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                    continue;
                };
                let mut woke = false;
                let mut failed = None;
                {
                    let mut notifications = c.notifications();
                    let mut iter = notifications.timeout_iter(LISTEN_TICK);
                    loop {
                        match postgres::fallible_iterator::FallibleIterator::next(&mut iter) {
                            Ok(Some(_)) => woke = true,
                            Ok(None) => break,
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                        if woke {
                            break;
                        }
                    }
                }
                if woke {
                    wake();
                }
                if let Some(e) = failed {
                    tracing::warn!(channel, "the listening connection failed: {e}");
                    client = None;
                }
            }
        })
        .map_err(|e| BackendError::other(format!("cannot start the listener thread: {e}")))?;
    Ok(Listener {
        stop,
        thread: Some(thread),
    })
}
