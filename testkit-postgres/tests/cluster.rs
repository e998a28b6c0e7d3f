//! Real clusters: SQL through `psql`, databases side by side, and no server, watchdog or
//! folder left once a cluster is dropped or its process ends (normally, by a panic, by SIGKILL).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use testkit_postgres::{Cluster, shared};

/// Set in the child process of [`the_shared_cluster_is_stopped_when_its_process_ends`] to
/// how that process should end.
const CHILD_MODE: &str = "TESTKIT_POSTGRES_CHILD";

/// Starts the child's line with its cluster's folder, port and postmaster pid.
const MARKER: &str = "shared cluster: ";

/// The postmaster's pid, the first line of `data/postmaster.pid`.
fn postmaster_pid(dir: &Path) -> u32 {
    let text = std::fs::read_to_string(dir.join("data").join("postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// Whether `pid` is a running process (a zombie waiting to be reaped does not count).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) state ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Running processes other than this one whose command line mentions `dir`: the postmaster
/// (`postgres -D DIR/data ...`) and the watchdog (`sh -c ... DIR ...`).
fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.to_str().unwrap().as_bytes();
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && running(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// What is left of a cluster: `None` when nothing, else a description.
fn leftovers(dir: &Path, port: u16, pid: u32) -> Option<String> {
    let mut left = Vec::new();
    if running(pid) {
        left.push(format!("postmaster {pid} running"));
    }
    let processes = processes_mentioning(dir);
    if !processes.is_empty() {
        left.push(format!("processes {processes:?} mention {}", dir.display()));
    }
    if !port_free(port) {
        left.push(format!("port {port} taken"));
    }
    if dir.exists() {
        left.push(format!("{} exists", dir.display()));
    }
    (!left.is_empty()).then(|| left.join("; "))
}

/// Waits up to 15 s for a cluster to be gone; returns how long it took.
fn wait_until_gone(dir: &Path, port: u16, pid: u32) -> Duration {
    let begin = Instant::now();
    loop {
        match leftovers(dir, port, pid) {
            None => return begin.elapsed(),
            Some(left) if begin.elapsed() > Duration::from_secs(15) => {
                panic!("after 15 s: {left}")
            }
            Some(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// `psql URL -c SQL` with the `psql` on PATH, as any outside client would connect.
fn outside_psql(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args(["-X", "-A", "-t", "-c", sql, url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .trim_end()
        .to_owned()
}

#[test]
fn a_cluster_serves_sql_and_leaves_nothing_when_dropped() {
    let begin = Instant::now();
    let cluster = Cluster::start().unwrap();
    let started = begin.elapsed();
    let port = cluster.port();
    let dir = cluster.dir().to_path_buf();
    assert_eq!(
        cluster.url(),
        format!("postgres://guard@127.0.0.1:{port}/test")
    );
    assert_eq!(outside_psql(cluster.url(), "select 1"), "1");
    assert_eq!(outside_psql(cluster.url(), "select current_user"), "guard");

    let second = cluster.new_database("second").unwrap();
    assert_eq!(second, format!("postgres://guard@127.0.0.1:{port}/second"));
    assert_eq!(outside_psql(&second, "select current_database()"), "second");
    assert_eq!(
        cluster.psql("second", "select 1, 'a' union all select 2, 'b'"),
        Ok("1|a\n2|b".to_owned())
    );
    let error = cluster.psql("second", "select nothing").unwrap_err();
    assert!(
        error.contains("column \"nothing\" does not exist"),
        "{error}"
    );

    // Only loopback, and the socket in the folder.
    assert_eq!(
        outside_psql(cluster.url(), "show listen_addresses"),
        "127.0.0.1"
    );
    assert!(dir.join(format!(".s.PGSQL.{port}")).exists());

    let pid = postmaster_pid(&dir);
    assert!(running(pid));
    let begin = Instant::now();
    drop(cluster);
    let stopped = begin.elapsed();
    // Drop waits: everything is gone already, no polling needed.
    assert_eq!(leftovers(&dir, port, pid), None);
    eprintln!("start {started:?}, drop {stopped:?}");
}

/// The (port, postmaster pid) the first of the two tests below saw.
static SHARED_SEEN: Mutex<Option<(u16, u32)>> = Mutex::new(None);

/// Both tests must see the same server, whichever runs first.
fn check_shared(database: &str) {
    let cluster = shared();
    assert!(std::ptr::eq(cluster, shared()));
    let seen = (cluster.port(), postmaster_pid(cluster.dir()));
    let first = *SHARED_SEEN.lock().unwrap().get_or_insert(seen);
    assert_eq!(seen, first);
    let url = cluster.new_database(database).unwrap();
    assert_eq!(outside_psql(&url, "select current_database()"), database);
}

#[test]
fn the_shared_cluster_is_started_once_a() {
    check_shared("shared_a");
}

#[test]
fn the_shared_cluster_is_started_once_b() {
    check_shared("shared_b");
}

#[test]
fn databases_are_created_in_parallel() {
    let cluster = shared();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let name = format!("parallel_{i}");
                let url = cluster.new_database(&name).unwrap();
                assert_eq!(outside_psql(&url, "select current_database()"), name);
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn a_database_name_is_taken_once() {
    let cluster = shared();
    cluster.new_database("taken").unwrap();
    let error = cluster.new_database("taken").unwrap_err();
    assert!(
        error.contains("database \"taken\" already exists"),
        "{error}"
    );
    let error = cluster.new_database("Taken").unwrap_err();
    assert_eq!(
        error,
        "database name \"Taken\": use 1 to 63 characters of a-z, 0-9 and _, starting with a letter or _"
    );
}

/// Runs this test binary again with only [`child_process`], which starts the shared cluster,
/// prints where it is and ends as `mode` says; then checks that the watchdog stopped the
/// server and removed the folder.
fn shared_cluster_of_a_process_that(mode: &str) -> Duration {
    let logs = tempfile::tempdir().unwrap();
    let stderr_path: PathBuf = logs.path().join("stderr");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MODE, mode)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // libtest writes "test child_process ... " on the same line, before the child's output.
    let line = (&mut stdout)
        .lines()
        .map(Result::unwrap)
        .find_map(|line| Some(line.split_once(MARKER)?.1.to_owned()))
        .unwrap_or_else(|| panic!("{}", std::fs::read_to_string(&stderr_path).unwrap()));
    // Keep reading: a child whose stdout is closed fails its next println! (EPIPE).
    let drain = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let fields: Vec<&str> = line.split(' ').collect();
    let (dir, port, pid) = (
        PathBuf::from(fields[0]),
        fields[1].parse().unwrap(),
        fields[2].parse().unwrap(),
    );
    assert!(running(pid));
    if mode == "is_killed" {
        child.kill().unwrap();
    }
    let status = child.wait().unwrap();
    drain.join().unwrap().unwrap();
    match mode {
        "returns" => assert!(status.success(), "{status}"),
        "panics" => assert_eq!(status.code(), Some(101)),
        _ => assert_eq!(status.code(), None, "{status}"), // ended by a signal
    }
    let took = wait_until_gone(&dir, port, pid);
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(!stderr.contains("testkit-postgres:"), "{stderr}");
    took
}

#[test]
fn the_shared_cluster_is_stopped_when_its_process_ends() {
    for mode in ["returns", "panics", "is_killed"] {
        let took = shared_cluster_of_a_process_that(mode);
        eprintln!("the process {mode}: cluster gone {took:?} after it ended");
    }
}

/// Not a test of its own: the child process of
/// [`the_shared_cluster_is_stopped_when_its_process_ends`]; without [`CHILD_MODE`] it does
/// nothing.
#[test]
fn child_process() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let cluster = shared();
    let pid = postmaster_pid(cluster.dir());
    println!(
        "{MARKER}{} {} {pid}",
        cluster.dir().display(),
        cluster.port()
    );
    match mode.as_str() {
        "returns" => {}
        "panics" => panic!("the child process panics, as asked"),
        _ => std::thread::sleep(Duration::from_secs(60)), // until killed
    }
}
