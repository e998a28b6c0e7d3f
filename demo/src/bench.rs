//! What the load clients share (`pubsub-bench`, `pubsub-burst`, `day-bench`): logging many
//! accounts in at once, with retries, subscribing, closing them all, counting what came back
//! for a batch of requests ([`Replies`]), and the CPU time processes used, read from Linux's
//! `/proc`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use oauth_xmpp::Secret;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::xmpp::Client;

/// What came back for one request.
#[derive(Debug)]
pub enum Outcome {
    /// The expected result.
    Result,
    /// An error (or a result that is not the expected one), described.
    Error(String),
    /// Nothing in time, or the connection went away.
    Unanswered,
}

/// The outcomes of a batch of requests.
#[derive(Debug, Default)]
pub struct Replies {
    /// Expected results.
    pub results: usize,
    /// Errors, by what they said.
    pub errors: BTreeMap<String, usize>,
    /// Requests nothing came back for.
    pub unanswered: usize,
    /// Requests not sent before the deadline.
    pub unsent: usize,
}

impl Replies {
    /// Counts one outcome.
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Result => self.results += 1,
            Outcome::Error(what) => *self.errors.entry(what).or_default() += 1,
            Outcome::Unanswered => self.unanswered += 1,
        }
    }

    /// How many errors in all.
    pub fn error_count(&self) -> usize {
        self.errors.values().sum()
    }

    /// The errors, e.g. `3 item-not-found, 1 forbidden`, or `none`.
    pub fn describe_errors(&self) -> String {
        if self.errors.is_empty() {
            return "none".into();
        }
        self.errors
            .iter()
            .map(|(what, n)| format!("{n} {what}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Login attempts per account (a login can time out while many others hash their passwords).
pub const LOGIN_ATTEMPTS: usize = 3;

/// Logs in as `jid` with `resource`, retrying a failed login a few times.
pub async fn login(
    server: &str,
    jid: &str,
    password: &Secret,
    resource: &str,
) -> Result<Client, String> {
    let mut last = String::new();
    for _ in 0..LOGIN_ATTEMPTS {
        match Client::connect(server, jid, password, resource).await {
            Ok(client) => return Ok(client),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("{jid}: cannot log in: {last}"))
}

/// Logs in every JID of `jids` with `resource`, at most `at_once` at a time; the clients
/// come back in the order of `jids`.
pub async fn login_all(
    server: &str,
    jids: &[String],
    password: &Secret,
    resource: &str,
    at_once: usize,
) -> Result<Vec<Client>, String> {
    let permits = Arc::new(Semaphore::new(at_once.max(1)));
    let mut logins = JoinSet::new();
    for (i, jid) in jids.iter().enumerate() {
        let (permits, server, jid, password, resource) = (
            Arc::clone(&permits),
            server.to_owned(),
            jid.clone(),
            password.clone(),
            resource.to_owned(),
        );
        logins.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            login(&server, &jid, &password, &resource)
                .await
                .map(|client| (i, client))
        });
    }
    let mut clients: Vec<Option<Client>> = jids.iter().map(|_| None).collect();
    while let Some(done) = logins.join_next().await {
        let (i, client) = done.map_err(|e| e.to_string())??;
        clients[i] = Some(client);
    }
    Ok(clients.into_iter().flatten().collect())
}

/// Sends each `(label, subscribe)` of `requests` through `client`, one after the other;
/// the first that fails or is refused ends it with a line that names the label.
pub async fn subscribe_each<L: std::fmt::Display>(
    client: &Client,
    requests: impl IntoIterator<Item = (L, Element)>,
    wait: Duration,
) -> Result<(), String> {
    for (label, request) in requests {
        let reply = client
            .iq(request, wait)
            .await
            .map_err(|e| format!("{}: subscribe to {label}: {e}", client.jid()))?;
        if let Some(e) = crate::pubsub::error_of(&reply) {
            return Err(format!(
                "{}: {label} refused the subscribe: {} {}",
                client.jid(),
                e.condition,
                e.text
            ));
        }
    }
    Ok(())
}

/// Closes every client's stream, all at once, waiting at most `wait` in all.
pub async fn close_all(clients: impl IntoIterator<Item = Client>, wait: Duration) {
    let mut closing = JoinSet::new();
    for client in clients {
        closing.spawn(client.close());
    }
    let _ =
        tokio::time::timeout(wait, async { while closing.join_next().await.is_some() {} }).await;
}

/// CPU time read from `/proc`, in clock ticks (`USER_HZ`): of named processes (user +
/// system time of all their threads, `/proc/PID/stat`), of this process, and of the whole
/// machine (every CPU's non-idle time, `/proc/stat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuTicks {
    /// Per named process: its ticks, or `None` when it could not be read (gone).
    pub processes: Vec<(String, Option<u64>)>,
    /// This process.
    pub this: Option<u64>,
    /// The whole machine, busy (not idle, not waiting for I/O).
    pub machine: Option<u64>,
}

impl CpuTicks {
    /// Reads the counters now, for the processes `(name, pid)`.
    pub fn now(processes: &[(String, u32)]) -> Self {
        Self {
            processes: processes
                .iter()
                .map(|(name, pid)| (name.clone(), process_ticks(&format!("/proc/{pid}/stat"))))
                .collect(),
            this: process_ticks("/proc/self/stat"),
            machine: machine_ticks(),
        }
    }

    /// What each counter went up by since `earlier`, as cores kept busy over `wall`
    /// (1.0 = one core all the time), with `ticks_per_second` (`USER_HZ`, 100 on Linux's
    /// usual ports). Named processes first, then `this` and `machine`; a counter that could
    /// not be read at either end is left out.
    pub fn busy_since(
        &self,
        earlier: &CpuTicks,
        wall: Duration,
        ticks_per_second: u64,
        this: &str,
    ) -> Vec<(String, f64)> {
        let seconds = wall.as_secs_f64().max(1e-9) * ticks_per_second.max(1) as f64;
        let share =
            |now: Option<u64>, then: Option<u64>| Some(now?.saturating_sub(then?) as f64 / seconds);
        let mut busy: Vec<(String, f64)> = self
            .processes
            .iter()
            .zip(&earlier.processes)
            .filter_map(|((name, now), (_, then))| Some((name.clone(), share(*now, *then)?)))
            .collect();
        busy.extend(share(self.this, earlier.this).map(|s| (this.to_owned(), s)));
        busy.extend(share(self.machine, earlier.machine).map(|s| ("machine".to_owned(), s)));
        busy
    }
}

/// utime + stime of a `/proc/PID/stat` file (fields 14 and 15; the command name, field 2,
/// may hold spaces and parentheses, so fields are counted after its last `)`).
fn process_ticks(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_process_ticks(&text)
}

fn parse_process_ticks(text: &str) -> Option<u64> {
    let (_, after) = text.rsplit_once(')')?;
    let mut fields = after.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// The machine's busy ticks: the first line of `/proc/stat` (`cpu user nice system idle
/// iowait irq softirq steal …`) without idle and iowait.
fn machine_ticks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_ticks(&text)
}

fn parse_machine_ticks(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let idle = values.get(3)? + values.get(4)?;
    Some(values.iter().sum::<u64>() - idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ticks_are_utime_plus_stime_after_the_command_name() {
        let cases = [
            (
                "a plain name",
                "4242 (prosody) S 1 4242 4242 0 -1 4194560 5000 0 0 0 150 25 0 0 20 0 1 0",
                Some(175),
            ),
            (
                "a name with spaces and a parenthesis",
                "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0",
                Some(7),
            ),
            ("cut short", "7 (x) R 1 7 7 0 -1 0 0 0 0 0 3", None),
            ("not a number", "7 (x) R 1 7 7 0 -1 0 0 0 0 0 a 4", None),
        ];
        for (name, text, expected) in cases {
            assert_eq!(parse_process_ticks(text), expected, "{name}");
        }
    }

    #[test]
    fn machine_ticks_leave_out_idle_and_iowait() {
        let text = "cpu  100 5 20 1000 50 1 2 3 0 0\ncpu0 50 2 10 500 25 0 1 1 0 0\n";
        assert_eq!(parse_machine_ticks(text), Some(100 + 5 + 20 + 1 + 2 + 3));
        assert_eq!(parse_machine_ticks("intr 1 2 3\n"), None);
    }

    #[test]
    fn busy_is_ticks_over_wall_time() {
        let named = |ticks: Option<u64>| vec![("guard".to_owned(), ticks)];
        let before = CpuTicks {
            processes: named(Some(100)),
            this: Some(10),
            machine: Some(1000),
        };
        let after = CpuTicks {
            processes: named(Some(150)),
            this: None,
            machine: Some(1300),
        };
        let busy = after.busy_since(&before, Duration::from_secs(2), 100, "bench");
        assert_eq!(
            busy,
            vec![("guard".to_owned(), 0.25), ("machine".to_owned(), 1.5)]
        );
    }
}
