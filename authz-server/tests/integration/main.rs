//! Integration tests of `authz-server`: the built binary, over loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod audit;
mod connections;
mod flow;
mod hostile;
mod interop;
mod metrics;
mod provision;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_authz-server");

/// Tests that load the machine (the slowloris tests hold 1,100 connections each) or that
/// compare timings run one at a time.
pub(crate) fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A signer for these credentials whose nonces never repeat in this test process.
pub(crate) fn signer(
    key: &str,
    secret: &str,
    token: Option<(&str, &str)>,
    method: oauth_xmpp::SignatureMethod,
) -> oauth_xmpp::sign::Signer<oauth_xmpp::replay::SystemClock, impl Fn() -> String> {
    let credentials = oauth_xmpp::sign::Credentials {
        consumer_key: key.into(),
        consumer_secret: oauth_xmpp::Secret::new(secret),
        token: token.map(|(t, _)| t.to_owned()),
        token_secret: oauth_xmpp::Secret::new(token.map_or("", |(_, s)| s)),
    };
    // Unique in this test process; each test has its own database.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nonce = || {
        format!(
            "nonce-{}",
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    };
    oauth_xmpp::sign::Signer::new(credentials, oauth_xmpp::replay::SystemClock, nonce)
        .with_method(method)
}

/// Runs a CLI command on `db`; returns (exit success, stdout, stderr).
pub(crate) fn cli(db: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .arg("--database")
        .arg(db)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A running server, killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
    pub(crate) addr: String,
    /// Where its metrics are served (`host:port`), when started with `--metrics-listen`.
    pub(crate) metrics: Option<String>,
    /// Where its standard error goes.
    stderr: tempfile::NamedTempFile,
}

impl Server {
    pub(crate) fn start(db: &Path, extra: &[&str]) -> Self {
        Self::start_with(Command::new(BIN), db, extra)
    }

    /// Like `start`, through `command` (e.g. a shell that lowers a limit, then runs `BIN`).
    pub(crate) fn start_with(mut command: Command, db: &Path, extra: &[&str]) -> Self {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = command
            .arg("--database")
            .arg(db)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("AUTHZ_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .expect(&line)
            .to_owned();
        let addr = base.trim_start_matches("http://").to_owned();
        let metrics = extra.contains(&"--metrics-listen").then(|| {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            line.trim()
                .strip_prefix("metrics on http://")
                .and_then(|l| l.strip_suffix("/metrics"))
                .expect(&line)
                .to_owned()
        });
        Self {
            child,
            base,
            addr,
            metrics,
            stderr,
        }
    }

    /// Stops it with SIGTERM (waiting at most 10 s); its exit status and standard error.
    pub(crate) fn stop(mut self) -> (std::process::ExitStatus, String) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running 10 s after SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        (status, std::fs::read_to_string(self.stderr.path()).unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn form(&self) -> Vec<(String, String)> {
        self.body
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    oauth_xmpp::encode::form_decode(v, "test").unwrap(),
                )
            })
            .collect()
    }

    pub(crate) fn get(&self, name: &str) -> String {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .unwrap_or_default()
    }
}

/// One HTTP/1.1 request over a fresh connection (bounded by timeouts).
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        request.push_str(&format!("{n}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    parse_answer(head, body)
}

/// An answer from its head (without the blank line that ends it) and its body.
pub(crate) fn parse_answer(head: &str, body: &str) -> Answer {
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub(crate) fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("authz.sqlite");
    (dir, db)
}

pub(crate) const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// The callback `FindMeNow` is registered with.
pub(crate) const CALLBACK: &str = "http://127.0.0.1:9/cb";

/// A database (a SQLite file, or a PostgreSQL URL) with the owner `alice` (password `correct horse`), the consumer `FindMeNow`
/// registered with the callback [`CALLBACK`], and `Kiosk`, registered without one (`oob`).
pub(crate) struct Setup {
    _dir: tempfile::TempDir,
    pub(crate) db: PathBuf,
    pub(crate) key: String,
    pub(crate) secret: String,
    pub(crate) oob_key: String,
    pub(crate) oob_secret: String,
}

/// Registers a consumer; returns its key and secret.
pub(crate) fn add_consumer(db: &Path, args: &[&str]) -> (String, String) {
    let (ok, out, err) = cli(db, &[&["consumer", "add"], args].concat(), "");
    assert!(ok, "{err}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .to_owned()
    };
    (field("consumer_key="), field("consumer_secret="))
}

pub(crate) fn setup() -> Setup {
    let (dir, db) = temp_db();
    setup_in(dir, db)
}

/// [`setup`] on a new database of the shared PostgreSQL test cluster (`name` unique among
/// the tests), or `None` when PostgreSQL is not installed (see
/// [`testkit_postgres::optional_shared`]). `db` is its URL.
pub(crate) fn setup_postgres(name: &str) -> Option<Setup> {
    let url = testkit_postgres::optional_shared()?
        .new_database(name)
        .unwrap();
    Some(setup_in(tempfile::tempdir().unwrap(), PathBuf::from(url)))
}

fn setup_in(dir: tempfile::TempDir, db: PathBuf) -> Setup {
    let (ok, _, err) = cli(&db, &["owner", "add", "alice"], "correct horse\n");
    assert!(ok, "{err}");
    let (key, secret) = add_consumer(&db, &["--name", "FindMeNow", "--callback", CALLBACK]);
    let (oob_key, oob_secret) = add_consumer(&db, &["--name", "Kiosk"]);
    Setup {
        key,
        secret,
        oob_key,
        oob_secret,
        _dir: dir,
        db,
    }
}

/// The `name=value` of the first `Set-Cookie` of `answer` whose name ends with `suffix`.
pub(crate) fn set_cookie(answer: &Answer, suffix: &str) -> Option<String> {
    answer
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Set-Cookie"))
        .map(|(_, v)| v.split(';').next().unwrap().to_owned())
        .find(|kv| kv.split('=').next().unwrap().ends_with(suffix))
}

/// The sign-in form's token and its cookie (`name=value`), from `GET /login`.
pub(crate) fn login_form(server: &Server) -> (String, String) {
    let page = http(&server.addr, "GET", "/login", &[], "");
    assert_eq!(page.status, 200, "{page:?}");
    let token = page
        .body
        .split("name=\"login\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    (token, set_cookie(&page, "authz_login").unwrap())
}

/// Posts the sign-in form as `name` with `password` from a browser that loaded it.
pub(crate) fn try_sign_in(server: &Server, name: &str, password: &str, next: &str) -> Answer {
    let (token, cookie) = login_form(server);
    let enc = oauth_xmpp::encode::percent_encode;
    http(
        &server.addr,
        "POST",
        "/login",
        &[FORM, ("Cookie", &cookie)],
        &format!(
            "login={token}&name={}&password={}&next={}",
            enc(name),
            enc(password),
            enc(next)
        ),
    )
}

/// Signs in as alice, asking to go to `next`; returns the session cookie (`name=value`).
pub(crate) fn sign_in(server: &Server, next: &str) -> String {
    let login = try_sign_in(server, "alice", "correct horse", next);
    assert_eq!(login.status, 303, "{login:?}");
    assert_eq!(login.header("Location"), Some(next));
    set_cookie(&login, "authz_session").unwrap()
}

/// The CSRF token of the first form of a page.
pub(crate) fn csrf_in(body: &str) -> String {
    body.split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}
