//! [`Cluster`]: one throwaway PostgreSQL server in a temporary folder.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::bin_dir::BinDir;
use crate::watchdog::Watchdog;

/// The user `initdb` creates; every URL connects as it, without a password.
const USER: &str = "guard";

/// The database [`Cluster::start`] creates and [`Cluster::url`] points at.
const DATABASE: &str = "test";

/// How many free ports [`Cluster::start`] tries when another process takes the one it picked
/// between the check and the server's bind.
const PORT_ATTEMPTS: usize = 3;

/// The longest Unix socket path Linux accepts (`sun_path` holds 108 bytes with the final NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A PostgreSQL server of its own on 127.0.0.1, in a temporary folder.
///
/// The folder holds the data (`data/`), the server's log (`server.log`: the first place to
/// look when a test fails) and the Unix socket. Authentication is `trust` for the user
/// `guard`: fine on loopback for tests, never for a deployment. The server runs with
/// PostgreSQL's default settings (`fsync` on), so timings measured against it mean something.
///
/// Dropping the cluster stops the server (`pg_ctl -m immediate stop`, bounded) and removes the
/// folder before `drop` returns; if the process ends without dropping it (an abort, a kill, or
/// the [`shared()`](crate::shared()) cluster at exit), the watchdog does the same moments later.
#[derive(Debug)]
pub struct Cluster {
    // Held only for its drop, which stops the server and removes the folder. Declared first
    // so it is dropped first; `dir`'s own drop then finds nothing left.
    _watchdog: Watchdog,
    bin: BinDir,
    port: u16,
    url: String,
    dir: TempDir,
}

impl Cluster {
    /// Makes and starts a new cluster with one empty database, `test`, the one [`url`] names.
    ///
    /// Takes about 1 s: `initdb`, then `pg_ctl -w start` on a free port of 127.0.0.1 (up to
    /// three ports are tried if another process takes the first between the check and the
    /// bind), then `CREATE DATABASE`. As root, the folder is given to the `postgres` user and
    /// the server programs run through `runuser -u postgres --`, since PostgreSQL refuses to
    /// run as root.
    ///
    /// # Errors
    /// Exactly `PostgreSQL is missing: run scripts/setup-postgres (scripts/test does)` when no
    /// `/usr/lib/postgresql/*/bin/initdb` exists; otherwise a sentence naming the step that
    /// failed, with the end of that step's output or of the server's log.
    ///
    /// [`url`]: Cluster::url
    pub fn start() -> Result<Cluster, String> {
        let bin = BinDir::find()?;
        let dir = tempfile::Builder::new()
            .prefix("testkit-postgres-")
            .tempdir()
            .map_err(|e| format!("could not make a temporary folder for PostgreSQL: {e}"))?;
        check_folder(dir.path())?;
        let runuser = if owned_by_root(dir.path())? {
            give_to_postgres(dir.path())?;
            Some(find_runuser()?)
        } else {
            None
        };
        let mut watchdog = Watchdog::spawn(&bin, dir.path(), runuser.as_deref())?;
        if !watchdog.init()? {
            return Err(format!(
                "initdb failed:\n{}",
                tail(&dir.path().join("initdb.out"), 0)
            ));
        }
        let port = start_server(&mut watchdog, dir.path())?;
        let cluster = Cluster {
            _watchdog: watchdog,
            bin,
            port,
            url: url(port, DATABASE),
            dir,
        };
        cluster.psql("postgres", &format!("CREATE DATABASE {DATABASE}"))?;
        Ok(cluster)
    }

    /// `postgres://guard@127.0.0.1:PORT/test`: the database [`start`](Cluster::start) made.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's folder: `data/`, `server.log` and the Unix socket `.s.PGSQL.PORT`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates an empty database `name` and returns its URL,
    /// `postgres://guard@127.0.0.1:PORT/NAME`. Tests that share a cluster take one database
    /// each, so they can run in parallel.
    ///
    /// # Errors
    /// When `name` is not 1 to 63 characters of `a-z`, `0-9` and `_`, starting with a letter or
    /// `_` (names that need no quoting in SQL); when the database exists already; when `psql`
    /// fails.
    pub fn new_database(&self, name: &str) -> Result<String, String> {
        check_database_name(name)?;
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(url(self.port, name))
    }

    /// Runs `sql` in `database` with the server version's `psql` (no `~/.psqlrc`, stop at the
    /// first error, rows as unaligned `|`-separated lines, no headers) and returns its output
    /// without the final newline. For tests that look at a database from outside the code
    /// under test.
    ///
    /// # Errors
    /// When `psql` cannot run or exits with an error; the message holds its standard error.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let target = format!("{}?connect_timeout=10", url(self.port, database));
        let output = Command::new(self.bin.program("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(&target)
            .arg("-c")
            .arg(sql)
            .output()
            .map_err(|e| format!("could not run {}: {e}", self.bin.program("psql").display()))?;
        if !output.status.success() {
            return Err(format!(
                "psql {target} -c {sql:?} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            ));
        }
        let mut stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if stdout.ends_with('\n') {
            stdout.pop();
        }
        Ok(stdout)
    }
}

/// `postgres://guard@127.0.0.1:PORT/DATABASE`.
fn url(port: u16, database: &str) -> String {
    format!("postgres://{USER}@127.0.0.1:{port}/{database}")
}

/// Starts the server on a free port, trying another port when the bind fails.
fn start_server(watchdog: &mut Watchdog, dir: &Path) -> Result<u16, String> {
    let log = dir.join("server.log");
    for attempt in 1..=PORT_ATTEMPTS {
        let port = free_port()?;
        let log_before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        if watchdog.start(port)? {
            return Ok(port);
        }
        let log_tail = tail(&log, log_before);
        if !log_tail.contains("could not bind") || attempt == PORT_ATTEMPTS {
            return Err(format!(
                "pg_ctl start on port {port} failed:\n{}\nserver.log:\n{log_tail}",
                tail(&dir.join("pg_ctl.out"), 0)
            ));
        }
    }
    unreachable!("the last attempt returns")
}

/// A port of 127.0.0.1 that nothing listens on now (the kernel's pick for port 0).
fn free_port() -> Result<u16, String> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("could not find a free port on 127.0.0.1: {e}"))
}

/// The last 20 lines of `path` after byte `from`, or a note that it cannot be read.
fn tail(path: &Path, from: u64) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = usize::try_from(from).unwrap_or(0).min(bytes.len());
            let text = String::from_utf8_lossy(&bytes[start..]);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// The folder's path goes into the server's command line (through `pg_ctl`'s shell) and its
/// socket path into a `sockaddr_un`: refuse paths that either would break.
fn check_folder(dir: &Path) -> Result<(), String> {
    let text = dir.to_str().unwrap_or("");
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
    if !plain {
        return Err(format!(
            "the temporary folder {} has characters the server's command line cannot carry; set TMPDIR to a plain path such as /tmp",
            dir.display()
        ));
    }
    let socket = format!("{text}/.s.PGSQL.65535");
    if socket.len() > MAX_SOCKET_PATH {
        return Err(format!(
            "the temporary folder {text} is too long for a Unix socket path ({} bytes, at most {MAX_SOCKET_PATH}); set TMPDIR to a shorter path such as /tmp",
            socket.len()
        ));
    }
    Ok(())
}

/// Whether the process runs as root, read from the owner of a folder it just made (std has no
/// safe `geteuid`, and the workspace forbids `unsafe`).
fn owned_by_root(dir: &Path) -> Result<bool, String> {
    std::fs::metadata(dir)
        .map(|m| m.uid() == 0)
        .map_err(|e| format!("could not read {}: {e}", dir.display()))
}

/// `chown postgres DIR`: as root, the server programs run as `postgres` and write there.
fn give_to_postgres(dir: &Path) -> Result<(), String> {
    let output = Command::new("chown")
        .arg("postgres:")
        .arg(dir)
        .output()
        .map_err(|e| format!("could not run chown: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "chown postgres: {} failed (as root, the server runs as the postgres user that Debian's package creates): {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim_end()
        ));
    }
    Ok(())
}

/// util-linux's `runuser`, which root uses to run the server as `postgres`.
fn find_runuser() -> Result<PathBuf, String> {
    ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .ok_or_else(|| {
            "running as root, PostgreSQL must run as the postgres user, and runuser (util-linux) is missing".to_owned()
        })
}

/// Names [`Cluster::new_database`] accepts: ones that need no quoting in SQL.
fn check_database_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(format!(
            "database name {name:?}: use 1 to 63 characters of a-z, 0-9 and _, starting with a letter or _"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names() {
        let long = "a".repeat(63);
        let too_long = "a".repeat(64);
        for (name, ok) in [
            ("items", true),
            ("_x", true),
            ("t1_store", true),
            (long.as_str(), true),
            ("", false),
            ("Items", false),
            ("1items", false),
            ("a-b", false),
            ("a b", false),
            ("a;drop", false),
            ("é", false),
            (too_long.as_str(), false),
        ] {
            assert_eq!(check_database_name(name).is_ok(), ok, "{name:?}");
        }
        assert_eq!(
            check_database_name("a-b").unwrap_err(),
            "database name \"a-b\": use 1 to 63 characters of a-z, 0-9 and _, starting with a letter or _"
        );
    }

    #[test]
    fn folders() {
        assert!(check_folder(Path::new("/tmp/testkit-postgres-AbC.12_x")).is_ok());
        assert!(check_folder(Path::new("/tmp/it's")).is_err());
        assert!(check_folder(Path::new("/tmp/a b")).is_err());
        assert!(check_folder(Path::new("/tmp/$HOME")).is_err());
        let long = format!("/{}", "d".repeat(MAX_SOCKET_PATH - 16));
        assert!(check_folder(Path::new(&long)).is_ok(), "{}", long.len());
        let too_long = format!("/{}", "d".repeat(MAX_SOCKET_PATH - 15));
        assert!(check_folder(Path::new(&too_long)).is_err());
    }

    #[test]
    fn tail_keeps_the_last_lines_after_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        assert_eq!(tail(&path, 0).lines().next(), Some("line 11"));
        let from = text.find("line 29").unwrap() as u64;
        assert_eq!(tail(&path, from), "line 29\nline 30");
        assert!(tail(&dir.path().join("none"), 0).starts_with('('));
    }
}
