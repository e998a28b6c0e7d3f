//! Benchmark: the latency of a cheap page while 16 clients sign in.
//!
//! Password hashing (Argon2id, tens of milliseconds of CPU) and SQLite calls must not run on
//! the async runtime's worker threads, or a burst of sign-ins stalls every other page. This
//! binary measures that from outside, over loopback, with raw HTTP/1.1:
//!
//! 1. it creates a temporary database with the owners `load0` … `load15` (password
//!    `correct horse`) and starts `authz-server serve` on it;
//! 2. it times `GET /` (a redirect that touches no store), one fresh connection per request,
//!    from connect to the whole answer read: first with the server idle, then while 16
//!    threads sign in over and over (each as its own owner, always with the right password,
//!    which no throttle counts: the server runs with its default settings);
//! 3. it prints median, p90 and p99 of both, the loaded/idle ratios, the sign-ins per second
//!    the 16 loops achieved while sampling, and every sign-in not answered 303.
//!
//! ```text
//! cargo bench -p authz-server --bench sign_in_load [-- --quick | --runs K | --samples N | --server PATH]
//! ```
//!
//! `--server PATH` measures another build (an older commit's binary, for a "before" figure);
//! a server without `GET /login` (and so without the sign-in form token) is signed in to
//! without it. Without `--bench` (that is, under `cargo test --benches`) it makes one short
//! run, as a smoke test, and ignores the test harness's arguments.
//!
//! Every socket has 10 s timeouts and the loops stop when sampling ends (also on a panic), so
//! a run always ends by itself; the server is killed when it does.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How many clients sign in at once.
const LOOPS: usize = 16;
/// Every owner's password.
const PASSWORD: &str = "correct horse";
/// Connect, read and write timeout of every socket.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between two samples of the cheap page.
const PAUSE: Duration = Duration::from_millis(5);
/// How long the sign-in loops run before sampling starts.
const WARM_UP: Duration = Duration::from_secs(1);

const USAGE: &str = "usage: sign_in_load [--server PATH] [--samples N] [--runs K] [--quick]";

fn main() -> ExitCode {
    match options().and_then(|options| bench(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sign_in_load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What to measure, from the command line.
struct Options {
    server: PathBuf,
    samples: usize,
    runs: usize,
}

fn options() -> Result<Options, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test` does not, and may pass its own flags.
    let benching = args.iter().any(|a| a == "--bench");
    let (mut server, mut samples, mut runs, mut quick) = (None, None, None, false);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--server" => server = Some(PathBuf::from(args.next().ok_or(USAGE)?)),
            "--samples" => samples = Some(count(args.next())?),
            "--runs" => runs = Some(count(args.next())?),
            "--quick" => quick = true,
            "--bench" => {}
            _ if !benching => {}
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let (default_runs, default_samples) = match (benching, quick) {
        (false, _) => (1, 20),
        (true, true) => (1, 100),
        (true, false) => (3, 400),
    };
    Ok(Options {
        server: server.unwrap_or_else(|| env!("CARGO_BIN_EXE_authz-server").into()),
        samples: samples.unwrap_or(default_samples),
        runs: runs.unwrap_or(default_runs),
    })
}

fn count(arg: Option<String>) -> Result<usize, String> {
    arg.and_then(|a| a.parse().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("a count must be a positive number\n{USAGE}"))
}

fn bench(options: &Options) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temporary dir: {e}"))?;
    let db = dir.path().join("authz.sqlite");
    let names: Vec<String> = (0..LOOPS).map(|n| format!("load{n}")).collect();
    for name in &names {
        add_owner(&options.server, &db, name)?;
    }
    let server = Server::start(&options.server, &db)?;
    let form = match http(server.addr, "GET", "/login", &[], "") {
        Ok(page) => page.status == 200,
        Err(e) => return Err(format!("GET /login: {e}")),
    };
    println!(
        "server {} (sign-in form token: {})",
        options.server.display(),
        if form {
            "yes"
        } else {
            "no, GET /login is not 200"
        }
    );
    println!(
        "{LOOPS} sign-in loops, one owner each (load0..load{}); GET / x {} per phase, \
         {} ms apart; {} run(s)",
        LOOPS - 1,
        options.samples,
        PAUSE.as_millis(),
        options.runs
    );
    println!();
    println!(
        "{:>6} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>7} {:>7} | {:>10} {:>7}",
        "run",
        "idle p50",
        "p90",
        "p99",
        "load p50",
        "p90",
        "p99",
        "x p50",
        "x p90",
        "sign-in/s",
        "non-303"
    );
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for run in 1..=options.runs {
        let idle = sample(server.addr, options.samples);
        let (loaded, signed_in, refused) = under_load(server.addr, &names, form, options.samples);
        let row = Row {
            idle: Percentiles::of(&idle.times)?,
            loaded: Percentiles::of(&loaded.times)?,
            sign_ins_per_s: signed_in,
            non_303: refused.values().sum(),
        };
        println!("{}", row.line(&run.to_string()));
        for (what, other) in [
            ("idle GET / not 303", &idle.other),
            ("loaded GET / not 303", &loaded.other),
            ("sign-ins not 303", &refused),
        ] {
            if !other.is_empty() {
                notes.push(format!("run {run}: {what}: {}", tally(other)));
            }
        }
        rows.push(row);
    }
    if rows.len() > 1 {
        println!("{}", Row::median(&rows).line("median"));
    }
    println!();
    println!("times in ms, connect to whole answer; x = loaded / idle;");
    println!("sign-in/s: 303s per second while sampling; non-303: whole loaded phase");
    for note in notes {
        println!("{note}");
    }
    drop(server);
    Ok(())
}

/// `authz-server --database DB owner add NAME`, password on standard input.
fn add_owner(bin: &Path, db: &Path, name: &str) -> Result<(), String> {
    let mut child = Command::new(bin)
        .arg("--database")
        .arg(db)
        .args(["owner", "add", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .map_err(|e| format!("owner add {name}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("owner add {name}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "owner add {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A running `authz-server serve`, killed when dropped (also on a panic).
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(bin: &Path, db: &Path) -> Result<Self, String> {
        let mut child = Command::new(bin)
            .arg("--database")
            .arg(db)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("AUTHZ_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let stdout = child.stdout.take();
        // From here on, an early return kills the child.
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let mut line = String::new();
        if let Some(stdout) = stdout {
            BufReader::new(stdout)
                .read_line(&mut line)
                .map_err(|e| format!("reading the server's first line: {e}"))?;
        }
        server.addr = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| format!("the server said {line:?}, not `listening on http://ADDR`"))?;
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer: status, head (status line and headers) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    /// The `name=value` of the `Set-Cookie` that sets `name`.
    fn cookie(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case("Set-Cookie"))
            .filter_map(|(_, v)| v.trim().split(';').next())
            .find(|kv| kv.split_once('=').is_some_and(|(n, _)| n == name))
    }

    /// The value of the hidden input `name` of the page.
    fn input(&self, name: &str) -> Option<&str> {
        self.body
            .split(&format!("name=\"{name}\" value=\""))
            .nth(1)?
            .split('"')
            .next()
    }
}

/// One HTTP/1.1 request over a fresh connection, bounded by timeouts.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> io::Result<Answer> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        request.push_str(&format!("{n}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw);
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(malformed)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(malformed)?;
    Ok(Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// Signs in as `name`: loads the form (if the server has one), posts it. Returns the status
/// of the post, or a description of what went wrong before it.
fn sign_in(addr: SocketAddr, name: &str, form: bool) -> Result<u16, String> {
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    let mut body = String::new();
    let page;
    if form {
        page = http(addr, "GET", "/login", &[], "").map_err(|e| format!("GET /login {e}"))?;
        match (page.status, page.input("login"), page.cookie("authz_login")) {
            (200, Some(token), Some(cookie)) => {
                headers.push(("Cookie", cookie));
                body = format!("login={token}&");
            }
            (200, _, _) => return Err("GET /login without token or cookie".into()),
            (status, _, _) => return Err(format!("GET /login {status}")),
        }
    }
    body.push_str(&format!(
        "name={name}&password=correct%20horse&next=%2Fapps"
    ));
    let answer =
        http(addr, "POST", "/login", &headers, &body).map_err(|e| format!("POST /login {e}"))?;
    Ok(answer.status)
}

/// Latencies of the cheap page, and what it answered when not 303.
struct Sample {
    times: Vec<Duration>,
    other: BTreeMap<String, u64>,
}

/// `samples` sequential `GET /`, [`PAUSE`] apart.
fn sample(addr: SocketAddr, samples: usize) -> Sample {
    let mut result = Sample {
        times: Vec::with_capacity(samples),
        other: BTreeMap::new(),
    };
    for _ in 0..samples {
        let start = Instant::now();
        let answer = http(addr, "GET", "/", &[], "");
        let took = start.elapsed();
        match answer {
            Ok(a) if a.status == 303 => result.times.push(took),
            Ok(a) => *result.other.entry(a.status.to_string()).or_default() += 1,
            Err(e) => *result.other.entry(e.kind().to_string()).or_default() += 1,
        }
        thread::sleep(PAUSE);
    }
    result
}

/// Samples the cheap page while [`LOOPS`] threads sign in. Returns the sample, the
/// sign-ins (303) per second while sampling, and the sign-ins that went otherwise.
fn under_load(
    addr: SocketAddr,
    names: &[String],
    form: bool,
    samples: usize,
) -> (Sample, f64, BTreeMap<String, u64>) {
    let stop = AtomicBool::new(false);
    let signed_in = AtomicU64::new(0);
    let refused = Mutex::new(BTreeMap::<String, u64>::new());
    let (sample, rate) = thread::scope(|s| {
        // Dropped when this closure returns or unwinds, before the scope joins the loops.
        let _stop = StopOnDrop(&stop);
        for name in names {
            let (stop, signed_in, refused) = (&stop, &signed_in, &refused);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match sign_in(addr, name, form) {
                        Ok(303) => {
                            signed_in.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            let what = other.map_or_else(|e| e, |status| status.to_string());
                            let mut refused = refused.lock().unwrap_or_else(|e| e.into_inner());
                            *refused.entry(what).or_default() += 1;
                        }
                    }
                }
            });
        }
        thread::sleep(WARM_UP);
        let before = signed_in.load(Ordering::Relaxed);
        let start = Instant::now();
        let sample = sample(addr, samples);
        let done = signed_in.load(Ordering::Relaxed) - before;
        (sample, done as f64 / start.elapsed().as_secs_f64())
    });
    let refused = refused.into_inner().unwrap_or_else(|e| e.into_inner());
    (sample, rate, refused)
}

/// Tells the sign-in loops to stop when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `503 x 2, GET /login 500 x 1`.
fn tally(other: &BTreeMap<String, u64>) -> String {
    other
        .iter()
        .map(|(what, n)| format!("{what} x {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Median, p90 and p99 (nearest rank), in milliseconds.
#[derive(Clone, Copy)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
}

impl Percentiles {
    fn of(times: &[Duration]) -> Result<Self, String> {
        let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
        if ms.is_empty() {
            return Err("no GET / was answered 303".into());
        }
        ms.sort_by(f64::total_cmp);
        Ok(Self {
            p50: rank(&ms, 0.50),
            p90: rank(&ms, 0.90),
            p99: rank(&ms, 0.99),
        })
    }
}

/// The nearest-rank `q` quantile of sorted, non-empty `values`.
fn rank(values: &[f64], q: f64) -> f64 {
    let index = (q * values.len() as f64).ceil() as usize;
    values[index.clamp(1, values.len()) - 1]
}

/// One line of the table.
struct Row {
    idle: Percentiles,
    loaded: Percentiles,
    sign_ins_per_s: f64,
    non_303: u64,
}

impl Row {
    /// Each column's median across `rows` (non-empty).
    fn median(rows: &[Row]) -> Row {
        let column = |f: &dyn Fn(&Row) -> f64| {
            let mut values: Vec<f64> = rows.iter().map(f).collect();
            values.sort_by(f64::total_cmp);
            rank(&values, 0.5)
        };
        Row {
            idle: Percentiles {
                p50: column(&|r| r.idle.p50),
                p90: column(&|r| r.idle.p90),
                p99: column(&|r| r.idle.p99),
            },
            loaded: Percentiles {
                p50: column(&|r| r.loaded.p50),
                p90: column(&|r| r.loaded.p90),
                p99: column(&|r| r.loaded.p99),
            },
            sign_ins_per_s: column(&|r| r.sign_ins_per_s),
            non_303: column(&|r| r.non_303 as f64) as u64,
        }
    }

    fn line(&self, label: &str) -> String {
        format!(
            "{label:>6} | {:>8.2} {:>8.2} {:>8.2} | {:>8.2} {:>8.2} {:>8.2} | {:>7.1} {:>7.1} | {:>10.1} {:>7}",
            self.idle.p50,
            self.idle.p90,
            self.idle.p99,
            self.loaded.p50,
            self.loaded.p90,
            self.loaded.p99,
            self.loaded.p50 / self.idle.p50,
            self.loaded.p90 / self.idle.p90,
            self.sign_ins_per_s,
            self.non_303,
        )
    }
}
