//! The watchdog: a small `sh` process that owns one cluster's server from `initdb` to the end.
//!
//! It reads commands on its standard input, one a line (`init`, `start PORT`), runs them, and
//! answers `ok` or `fail` on its standard output; the programs' own output goes to files in
//! the cluster's folder. When its standard input ends it stops the server (`pg_ctl -m
//! immediate stop`, then SIGKILL to the postmaster) and removes the folder.
//!
//! Immediate, not fast: a fast stop ends with a checkpoint that syncs every file written since
//! the last one, about 1 s for each database created (300 files of the template, at ~4 ms a
//! sync here), so a shared cluster with one database per test would take tens of seconds to
//! stop. An immediate stop skips the checkpoint and takes 0.1 s whatever was written; the data
//! it would have made durable is deleted a moment later anyway.
//!
//! Its standard input ends when the [`Watchdog`] is dropped, and also when the test process
//! ends in any other way: the kernel closes the pipe at a normal exit (where statics are not
//! dropped), after a panic, at `abort` and at SIGKILL alike. That is the whole guarantee, and
//! why the server programs run under the watchdog and not under the test process:
//! - the watchdog handles one line at a time, so an end of input that comes during `initdb` or
//!   `pg_ctl start` is acted on when that command is done, never halfway through;
//! - it runs in a process group of its own, so Ctrl-C and signals sent to the test's process
//!   group do not reach it (it also ignores SIGHUP, SIGINT and SIGPIPE);
//! - the test process's end of the pipe is close-on-exec (std opens pipes that way), so no
//!   other program the tests start keeps it open.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bin_dir::BinDir;

/// The script, shared with `tests/e2e/postgres.py`. Arguments: `$0` its name in messages,
/// `$1` the PostgreSQL bin folder, `$2` the cluster folder, `$3` the `runuser` program and
/// `$4` the user to run the server as (both empty when not root).
const SCRIPT: &str = include_str!("watchdog.sh");

/// The longest [`Watchdog`]'s drop waits for the server to stop: the script's own bounds
/// (10 s for the immediate stop) plus a margin.
const STOP_WAIT: Duration = Duration::from_secs(20);

/// A running watchdog script (see the module documentation).
#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Child,
    /// The write end of its standard input; `None` once closed.
    commands: Option<ChildStdin>,
    answers: BufReader<ChildStdout>,
}

impl Watchdog {
    /// Starts the watchdog for the cluster in `dir`. `runuser` is set when the test process is
    /// root: the server programs then run as the `postgres` user, which owns `dir`.
    pub(crate) fn spawn(bin: &BinDir, dir: &Path, runuser: Option<&Path>) -> Result<Self, String> {
        let (runuser, owner) = match runuser {
            Some(runuser) => (runuser.as_os_str(), "postgres"),
            None => (OsStr::new(""), ""),
        };
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("testkit-postgres-watchdog")
            .arg(bin.path())
            .arg(dir)
            .arg(runuser)
            .arg(owner)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("could not start /bin/sh for the PostgreSQL watchdog: {e}"))?;
        let (Some(commands), Some(answers)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the PostgreSQL watchdog has no pipes".to_owned());
        };
        Ok(Watchdog {
            child,
            commands: Some(commands),
            answers: BufReader::new(answers),
        })
    }

    /// Runs `initdb`; `Ok(false)` when it failed (its output is in `initdb.out`).
    pub(crate) fn init(&mut self) -> Result<bool, String> {
        self.ask("init")
    }

    /// Runs `pg_ctl start` on `port`; `Ok(false)` when the server did not start (see
    /// `pg_ctl.out` and `server.log`).
    pub(crate) fn start(&mut self, port: u16) -> Result<bool, String> {
        self.ask(&format!("start {port}"))
    }

    /// Sends one command and reads the answer.
    fn ask(&mut self, command: &str) -> Result<bool, String> {
        let lost = |e: std::io::Error| format!("lost the PostgreSQL watchdog: {e}");
        let commands = self
            .commands
            .as_mut()
            .ok_or_else(|| "the PostgreSQL watchdog is closed".to_owned())?;
        writeln!(commands, "{command}").map_err(lost)?;
        commands.flush().map_err(lost)?;
        let mut answer = String::new();
        self.answers.read_line(&mut answer).map_err(lost)?;
        match answer.trim_end() {
            "ok" => Ok(true),
            "fail" => Ok(false),
            "" => Err("the PostgreSQL watchdog ended".to_owned()),
            other => Err(format!("the PostgreSQL watchdog answered {other:?}")),
        }
    }
}

impl Drop for Watchdog {
    /// Closes the watchdog's input, which makes it stop the server and remove the folder, and
    /// waits for it to finish, at most [`STOP_WAIT`].
    fn drop(&mut self) {
        drop(self.commands.take());
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => {
                    eprintln!(
                        "testkit-postgres: the watchdog (pid {}) is still stopping the server after {STOP_WAIT:?}; leaving it to finish",
                        self.child.id()
                    );
                    return;
                }
                Err(e) => {
                    eprintln!("testkit-postgres: could not wait for the watchdog: {e}");
                    return;
                }
            }
        }
    }
}
