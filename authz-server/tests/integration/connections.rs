//! The connection layer against slow and hostile clients: the built server over loopback
//! (all of 127/8 is on `lo`, so clients bind other source addresses), where it matters with
//! the common limit of 1,024 file descriptors.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{Answer, BIN, FORM, Server, cli, http, parse_answer, setup, temp_db};

/// How many connections the slowloris tests open: more than the 1,024 descriptors the
/// server may have.
const ATTACK: usize = 1100;

/// A config file with this `[http]` table (in a directory to keep alive).
fn http_config(table: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authz.toml");
    std::fs::write(&path, format!("[http]\n{table}")).unwrap();
    (dir, path)
}

/// Starts the server with at most `limit` open files (a shell lowers the limit, then execs
/// the server, so the limit is checked on the server's own process).
fn start_with_open_files(db: &std::path::Path, limit: u32, extra: &[&str]) -> Server {
    let mut sh = Command::new("sh");
    sh.args([
        "-c",
        &format!(r#"ulimit -n {limit} && exec "$0" "$@""#),
        BIN,
    ]);
    let server = Server::start_with(sh, db, extra);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert_eq!(soft, limit.to_string());
    server
}

/// How many files the server has open.
fn open_files(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
        .unwrap()
        .count()
}

/// The CPU time the server has used, in clock ticks (`utime + stime`, proc(5)).
fn cpu_ticks(server: &Server) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.child.id())).unwrap();
    // The fields after the command name, which is in parentheses: state is field 3.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Clock ticks per second (`getconf CLK_TCK`).
fn ticks_per_second() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `GET /` over a fresh connection from 127.0.0.1, and how long the answer took.
fn timed_home(server: &Server) -> (Answer, Duration) {
    let start = Instant::now();
    let answer = http(&server.addr, "GET", "/", &[], "");
    (answer, start.elapsed())
}

/// Sends SIGTERM to the server.
fn terminate(server: &Server) {
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (at most `bound`) for the server to exit; returns its status and when it exited.
fn exit_within(server: &mut Server, bound: Duration) -> (ExitStatus, Instant) {
    let start = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return (status, Instant::now());
        }
        assert!(start.elapsed() < bound, "still running after {bound:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A keep-alive client that reads answers one by one.
struct Client {
    stream: TcpStream,
    unread: Vec<u8>,
}

impl Client {
    fn connect(server: &Server) -> Self {
        let stream = TcpStream::connect(&server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            stream,
            unread: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).unwrap();
    }

    /// `GET /` on this connection.
    fn get_home(&mut self) -> Answer {
        self.send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
        self.answer()
    }

    /// Reads more; `None` when the server closed the connection (end or reset).
    fn fill(&mut self) -> Option<()> {
        let mut buf = [0; 4096];
        match self.stream.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                self.unread.extend_from_slice(&buf[..n]);
                Some(())
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }

    /// The next answer: its head, and a body of its `Content-Length`.
    fn answer(&mut self) -> Answer {
        let end = loop {
            if let Some(at) = self.unread.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            self.fill()
                .expect("the server closed the connection before answering");
        };
        let head = String::from_utf8(self.unread[..end].to_vec()).unwrap();
        self.unread.drain(..end + 4);
        let mut answer = parse_answer(&head, "");
        let length: usize = answer
            .header("Content-Length")
            .map_or(0, |n| n.parse().unwrap());
        while self.unread.len() < length {
            self.fill()
                .expect("the server closed the connection inside a body");
        }
        answer.body = String::from_utf8(self.unread.drain(..length).collect()).unwrap();
        answer
    }

    /// Waits for the server to close the connection, with nothing more sent; returns when.
    fn closed(&mut self) -> Instant {
        while self.fill().is_some() {}
        let at = Instant::now();
        assert_eq!(
            String::from_utf8_lossy(&self.unread),
            "",
            "sent before closing"
        );
        at
    }
}

/// Slow clients: each connects from its source address, sends a request line, then one
/// header line a second, never ending its head. Each notes when the server is done with it
/// (closes, resets, or answers).
struct Slowloris {
    closed: Vec<Arc<AtomicBool>>,
    // Dropped last: closes every connection.
    _runtime: tokio::runtime::Runtime,
}

impl Slowloris {
    /// Opens `n` connections one after the other (so the server accepts them in this order),
    /// the `i`-th from `sources[i % sources.len()]`.
    fn open(server: &Server, sources: &[Ipv4Addr], n: usize) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let to: SocketAddr = server.addr.parse().unwrap();
        let closed: Vec<_> = (0..n).map(|_| Arc::new(AtomicBool::new(false))).collect();
        runtime.block_on(async {
            for (i, flag) in closed.iter().enumerate() {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                // Without it, these ports (and their TIME_WAIT after the test) block a
                // listener on the same port of the IPv6 wildcard, e.g. chromedriver's in
                // the interop test.
                socket.set_reuseaddr(true).unwrap();
                let from = sources[i % sources.len()];
                socket.bind(SocketAddr::from((from, 0))).unwrap();
                let stream = socket.connect(to).await.unwrap();
                tokio::spawn(trickle(stream, Arc::clone(flag)));
            }
        });
        Self {
            closed,
            _runtime: runtime,
        }
    }

    /// The connections the server is done with, by index, once there are `expected` (or
    /// after 5 s).
    fn closed_once(&self, expected: usize) -> Vec<usize> {
        let start = Instant::now();
        loop {
            let closed: Vec<usize> = (0..self.closed.len())
                .filter(|&i| self.closed[i].load(Ordering::Acquire))
                .collect();
            if closed.len() >= expected || start.elapsed() > Duration::from_secs(5) {
                return closed;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One slow client (see [`Slowloris`]).
async fn trickle(stream: tokio::net::TcpStream, closed: Arc<AtomicBool>) {
    let mut line: &[u8] = b"GET / HTTP/1.1\r\nHost: slow\r\n";
    let mut buf = [0; 512];
    loop {
        if write_all(&stream, line).await.is_err() {
            break;
        }
        line = b"X-Slow: 1\r\n";
        let tick = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(tick);
        let server_done = loop {
            tokio::select! {
                () = &mut tick => break false,
                ready = stream.readable() => match ready.and_then(|()| stream.try_read(&mut buf)) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    // The end, an answer, or an error: the server is done with it.
                    _ => break true,
                },
            }
        };
        if server_done {
            break;
        }
    }
    closed.store(true, Ordering::Release);
}

async fn write_all(stream: &tokio::net::TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[test]
fn slowloris_from_one_address_is_held_to_its_cap_and_others_get_through() {
    let _heavy = crate::heavy();
    let (_dir, db) = temp_db();
    let server = start_with_open_files(&db, 1024, &[]);
    let attack = Slowloris::open(&server, &[Ipv4Addr::new(127, 0, 0, 2)], ATTACK);
    let (home, took) = timed_home(&server);
    assert_eq!(home.status, 303, "{home:?}");
    assert_eq!(home.header("Location"), Some("/apps"));
    assert!(took < Duration::from_secs(2), "the answer took {took:?}");
    // The first 64 (max_connections_per_address) are kept, every later one closed at once.
    let closed = attack.closed_once(ATTACK - 64);
    assert_eq!(closed, (64..ATTACK).collect::<Vec<_>>());
}

#[test]
fn distributed_slowloris_makes_room_by_closing_its_oldest_connections() {
    let _heavy = crate::heavy();
    let (_dir, db) = temp_db();
    let server = start_with_open_files(&db, 1024, &[]);
    // 27 or 28 from each address: under the per-address cap of 64.
    let sources: Vec<_> = (1..=40).map(|i| Ipv4Addr::new(127, 0, 1, i)).collect();
    let attack = Slowloris::open(&server, &sources, ATTACK);
    let (home, took) = timed_home(&server);
    assert_eq!(home.status, 303, "{home:?}");
    assert_eq!(home.header("Location"), Some("/apps"));
    assert!(took < Duration::from_secs(2), "the answer took {took:?}");
    // At 512 (max_connections) each new connection closed the oldest one reading its head:
    // 588 of them while the attack connected, one more for the normal request.
    let closed = attack.closed_once(ATTACK - 512 + 1);
    assert_eq!(closed, (0..ATTACK - 512 + 1).collect::<Vec<_>>());
}

#[test]
fn out_of_file_descriptors_the_server_backs_off_then_recovers() {
    let _heavy = crate::heavy();
    let (_dir, db) = temp_db();
    // No caps to speak of: the descriptors run out first.
    let (_config_dir, config) =
        http_config("max_connections = 100000\nmax_connections_per_address = 100000\n");
    let server = start_with_open_files(&db, 256, &["--config", config.to_str().unwrap()]);
    let attack = Slowloris::open(&server, &[Ipv4Addr::new(127, 0, 0, 2)], 300);
    let start = Instant::now();
    while open_files(&server) < 256 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{} open",
            open_files(&server)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Accepting now fails (EMFILE) while connections wait: no spinning on it.
    let before = cpu_ticks(&server);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(&server) - before;
    assert!(
        used * 10 < ticks_per_second(),
        "{used} ticks of CPU in 1 s (of {} a second)",
        ticks_per_second()
    );
    assert_eq!(open_files(&server), 256);
    // The attack ends: its connections close, and the next request is served.
    drop(attack);
    let (home, took) = timed_home(&server);
    assert_eq!(home.status, 303, "{home:?}");
    assert!(took < Duration::from_secs(2), "the answer took {took:?}");
}

#[test]
fn a_head_sent_one_line_a_second_is_cut_at_the_header_read_timeout() {
    let (_dir, db) = temp_db();
    let (_config_dir, config) =
        http_config("header_read_timeout_secs = 2\nidle_timeout_secs = 3\n");
    let server = Server::start(&db, &["--config", config.to_str().unwrap()]);
    // Before the connection, so surely before the server's head clock (from the accept).
    let start = Instant::now();
    let mut client = Client::connect(&server);
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut line = "GET / HTTP/1.1\r\n";
    let mut buf = [0; 64];
    let closed = loop {
        // Writing after the server closed may fail; the read then says so.
        let _ = client.stream.write_all(line.as_bytes());
        line = "X-Slow: 1\r\n";
        match client.stream.read(&mut buf) {
            Ok(0) => break start.elapsed(),
            Ok(n) => panic!("answered: {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break start.elapsed(),
            Err(e) => panic!("{e}"),
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never closed");
    };
    assert!(
        closed >= Duration::from_secs(2) && closed < Duration::from_millis(3500),
        "closed after {closed:?}"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let (_dir, db) = temp_db();
    let (_config_dir, config) =
        http_config("header_read_timeout_secs = 2\nidle_timeout_secs = 3\n");
    let server = Server::start(&db, &["--config", config.to_str().unwrap()]);
    let mut client = Client::connect(&server);
    // Before the request, so surely before the server's idle clock starts.
    let asked = Instant::now();
    assert_eq!(client.get_home().status, 303);
    let after = client.closed() - asked;
    // The idle timeout (3 s), not the header read timeout (2 s).
    assert!(
        after >= Duration::from_secs(3) && after < Duration::from_millis(4500),
        "closed {after:?} after the request"
    );
}

#[test]
fn a_keep_alive_client_idle_longer_than_the_header_timeout_still_gets_answers() {
    let (_dir, db) = temp_db();
    let (_config_dir, config) =
        http_config("header_read_timeout_secs = 2\nidle_timeout_secs = 3\n");
    let server = Server::start(&db, &["--config", config.to_str().unwrap()]);
    let mut client = Client::connect(&server);
    let first = client.get_home();
    assert_eq!(first.status, 303);
    assert_eq!(first.header("Location"), Some("/apps"));
    // Past the header read timeout: its clock starts at a head's first byte, not while idle.
    std::thread::sleep(Duration::from_millis(2500));
    let second = client.get_home();
    assert_eq!(second.status, 303);
    assert_eq!(second.header("Location"), Some("/apps"));
    assert_eq!(client.get_home().status, 303);
}

#[test]
fn a_body_slower_than_the_body_read_timeout_is_answered_408() {
    let (_dir, db) = temp_db();
    let (_config_dir, config) = http_config("body_read_timeout_secs = 2\n");
    let server = Server::start(&db, &["--config", config.to_str().unwrap()]);
    let mut client = Client::connect(&server);
    let start = Instant::now();
    client.send(&format!(
        "POST /login HTTP/1.1\r\nHost: test\r\n{}: {}\r\nContent-Length: 60\r\n\r\nname=alice",
        FORM.0, FORM.1
    ));
    let answer = client.answer();
    let took = start.elapsed();
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.header("Connection"), Some("close"));
    assert_eq!(answer.body, "the request body did not arrive within 2 s\n");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(3500),
        "answered after {took:?}"
    );
    client.closed();
}

/// `POST /login` as alice (with the sign-in form's token and cookie), head only, asking to
/// be told when the server waits for the body (`100 Continue`: the request is then in
/// progress); returns the body to send.
fn login_head_then_wait(server: &Server, client: &mut Client) -> String {
    let (token, cookie) = crate::login_form(server);
    let body = format!("login={token}&name=alice&password=correct%20horse&next=%2Fapps");
    client.send(&format!(
        "POST /login HTTP/1.1\r\nHost: test\r\n{}: {}\r\nCookie: {cookie}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        FORM.0,
        FORM.1,
        body.len()
    ));
    assert_eq!(client.answer().status, 100);
    body
}

#[test]
fn sigterm_finishes_the_request_in_progress_refuses_new_ones_and_exits_0() {
    let s = setup();
    let (_config_dir, config) = http_config("drain_secs = 5\n");
    let mut server = Server::start(&s.db, &["--config", config.to_str().unwrap()]);
    let mut idle = Client::connect(&server);
    assert_eq!(idle.get_home().status, 303);
    let mut reading_head = Client::connect(&server);
    reading_head.send("GET / HTTP/1.1\r\nHost: test\r\n");
    let mut busy = Client::connect(&server);
    let body = login_head_then_wait(&server, &mut busy);

    let sigterm = Instant::now();
    terminate(&server);
    // Connections with no request in progress are closed at once.
    for client in [&mut idle, &mut reading_head] {
        let after = client.closed() - sigterm;
        assert!(after < Duration::from_secs(1), "closed after {after:?}");
    }
    // The listener is closed: a new connection is refused.
    let refused = loop {
        match TcpStream::connect(&server.addr) {
            Err(e) => break e,
            // Accepted by the kernel before the listener closed; try again.
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
        assert!(
            sigterm.elapsed() < Duration::from_secs(2),
            "still accepting"
        );
    };
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    // The request in progress gets its whole answer, then the connection closes.
    busy.send(&body);
    let answer = busy.answer();
    assert_eq!(answer.status, 303, "{answer:?}");
    assert_eq!(answer.header("Location"), Some("/apps"));
    let cookie = answer
        .headers
        .iter()
        .find(|(n, v)| n.eq_ignore_ascii_case("Set-Cookie") && v.starts_with("authz_session="))
        .map(|(_, v)| v.as_str())
        .unwrap();
    assert!(
        cookie.ends_with("; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600"),
        "{cookie}"
    );
    let answered = Instant::now();
    busy.closed();
    let (status, exited) = exit_within(&mut server, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    // Once nothing is in progress it does not wait for the drain bound.
    assert!(
        exited - answered < Duration::from_secs(1),
        "exited {:?} after the last answer",
        exited - answered
    );
}

#[test]
fn at_the_drain_bound_a_request_still_in_progress_is_cut_and_the_server_exits_0() {
    // No owner needed: the body never comes.
    let (_dir, db) = temp_db();
    let (_config_dir, config) = http_config("drain_secs = 2\nbody_read_timeout_secs = 30\n");
    let mut server = Server::start(&db, &["--config", config.to_str().unwrap()]);
    let mut stuck = Client::connect(&server);
    login_head_then_wait(&server, &mut stuck);
    // Before the signal, so surely before the server's drain clock starts.
    let sigterm = Instant::now();
    terminate(&server);
    let (status, exited) = exit_within(&mut server, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    let after = exited - sigterm;
    assert!(
        after >= Duration::from_secs(2) && after < Duration::from_millis(3500),
        "exited {after:?} after SIGTERM"
    );
    let closed = stuck.closed() - sigterm;
    assert!(
        closed < Duration::from_millis(3500),
        "closed after {closed:?}"
    );
}

#[test]
fn a_head_over_32_kib_is_answered_431_and_the_server_goes_on() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db, &[]);
    let mut client = Client::connect(&server);
    client.send(&format!(
        "GET / HTTP/1.1\r\nHost: test\r\nX-Long: {}\r\n\r\n",
        "a".repeat(33 * 1024)
    ));
    assert_eq!(client.answer().status, 431);
    client.closed();
    assert_eq!(Client::connect(&server).get_home().status, 303);
}

#[test]
fn a_zero_cap_in_the_config_file_stops_the_server_before_it_starts() {
    let (_dir, db) = temp_db();
    let (_config_dir, config) = http_config("max_connections = 0\n");
    let config = config.to_str().unwrap();
    let (ok, out, err) = cli(
        &db,
        &["--config", config, "serve", "--listen", "127.0.0.1:0"],
        "",
    );
    assert!(!ok);
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "authz-server: the config file {config} is not usable: [http] max_connections must be at least 1\n"
        )
    );
}
