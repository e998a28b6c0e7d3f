//! `pubsub-bench`: throughput of pubsub services behind the same XMPP server, measured in
//! the same run so that they can be compared. `scripts/bench-fanout` (driver
//! `scripts/bench_guard.py`) starts Prosody (or ejabberd), the guard, `null-pubsub` and
//! Prosody's own pubsub, then runs this once per size.
//!
//! Each `--target LABEL=SERVICE,NODE[,sign][,create]` is a service under test: `sign` puts a
//! signed `<oauth/>` (XEP-0235) in its subscribes, `create` has the publisher create its
//! nodes first (an existing node is fine). Two modes:
//!
//! - `deliveries`: K subscribers (`sub1@localhost` … `subK@localhost`, one connection each)
//!   subscribe to NODE of every target; then, target after target, the publisher sends M
//!   publishes back to back (all in flight) and the clock runs from the first publish to the
//!   last delivery. One warm-up round, then `--runs` rounds, the targets taking turns in each.
//!   Every delivery is counted: each item once per subscriber, duplicates and losses apart.
//! - `subscribes`: S sender connections (`sub1` … `subS`, resource `subs`) subscribe N
//!   distinct JIDs to a fresh node (`NODE-ROUND`): JID j is `sub(1 + j mod S)@localhost/sR-j`,
//!   a resource of its sender's account (both the guard and Prosody let an account subscribe
//!   its own resources), at most `--window` subscribes unanswered. The clock runs from the
//!   first subscribe to the last reply. A warm-up of `--warmup` subscribes to `NODE-w`, then
//!   `--runs` rounds.
//!
//! With `--cpu NAME=PID`, the CPU time of each such process (and of this one, and of the
//! whole machine) is read from `/proc` at the start and end of every measured run: the
//! summary gives the cores each kept busy during a target's runs.
//!
//! A run ends when everything is in, or after `--idle-secs` without a delivery or a reply
//! (what is missing then is lost), or at `--run-secs` (`limited`: a subscribes run then
//! stops sending, its rate counts the replies until then, and what it sent still gets its
//! reply before the next run starts; a deliveries run counts what is missing as lost). A
//! target whose run ended early is skipped in the later rounds. Output: one `run:` line per
//! run, then one `summary:` line per target, `key=value` pairs for scripts. The exit status
//! is 0 when nothing was lost (every delivery, every publish and every subscribe sent
//! answered with a result), 2 when something was, 1 when the setup failed.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use demo::bench::{CpuTicks, close_all, login, login_all, subscribe_each};
use demo::flow::Grant;
use demo::pubsub;
use demo::xmpp::{CLIENT, Client, name};
use minidom::Element;
use oauth_xmpp::Secret;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Measure deliveries/s or subscribes/s of pubsub services behind one XMPP server.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The XMPP server's client port.
    #[arg(long)]
    xmpp: String,
    /// The password of every account.
    #[arg(long, env = "BENCH_PASSWORD", hide_env_values = true)]
    password: String,
    /// The publisher account (it also creates the nodes of `create` targets).
    #[arg(long, default_value = "publisher@localhost")]
    publisher: String,
    /// A service under test: `LABEL=SERVICE,NODE[,sign][,create]` (repeat for several).
    #[arg(long = "target", required = true, value_parser = parse_target)]
    targets: Vec<Target>,
    /// A process whose CPU time is measured during each run: `NAME=PID` (repeatable).
    #[arg(long = "cpu", value_parser = parse_process)]
    processes: Vec<(String, u32)>,
    /// Clock ticks per second of `/proc`'s CPU times (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clock_ticks: u64,
    /// Measured rounds (after one warm-up).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Logins at once, at most.
    #[arg(long, default_value_t = 50)]
    logins: usize,
    /// A run gives up after this long without a delivery or a reply.
    #[arg(long, default_value_t = 15)]
    idle_secs: u64,
    /// A run gives up after this long in all.
    #[arg(long, default_value_t = 300)]
    run_secs: u64,
    #[command(flatten)]
    grant: Grant,
    /// What to measure.
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Publish-to-delivery throughput with K subscribers per node.
    Deliveries {
        /// Subscribers per node (`sub1@localhost` … `subK@localhost`).
        #[arg(long)]
        subscribers: usize,
        /// Publishes per run.
        #[arg(long)]
        items: usize,
    },
    /// Subscribe IQs per second, N distinct subscribers on one fresh node per run.
    Subscribes {
        /// Subscriptions per run (distinct JIDs on one node).
        #[arg(long)]
        subscribers: usize,
        /// Connections that send them (`sub1@localhost` … `subS@localhost`).
        #[arg(long, default_value_t = 50)]
        senders: usize,
        /// Subscribes sent and not yet answered, at most.
        #[arg(long, default_value_t = 200)]
        window: usize,
        /// Subscribes of the warm-up round.
        #[arg(long, default_value_t = 100)]
        warmup: usize,
    },
}

/// A service under test.
#[derive(Debug, Clone)]
struct Target {
    label: String,
    service: String,
    node: String,
    /// Subscribes carry a signed `<oauth/>`.
    sign: bool,
    /// The publisher creates the nodes first.
    create: bool,
}

fn parse_target(text: &str) -> Result<Target, String> {
    let (label, rest) = text
        .split_once('=')
        .ok_or("expected LABEL=SERVICE,NODE[,sign][,create]")?;
    let mut parts = rest.split(',');
    let (Some(service), Some(node)) = (parts.next(), parts.next()) else {
        return Err("expected LABEL=SERVICE,NODE[,sign][,create]".into());
    };
    let mut target = Target {
        label: label.to_owned(),
        service: service.to_owned(),
        node: node.to_owned(),
        sign: false,
        create: false,
    };
    for flag in parts {
        match flag {
            "sign" => target.sign = true,
            "create" => target.create = true,
            other => return Err(format!("unknown flag {other:?} (sign, create)")),
        }
    }
    if target.label.is_empty() || target.service.is_empty() || target.node.is_empty() {
        return Err("LABEL, SERVICE and NODE must not be empty".into());
    }
    Ok(target)
}

fn parse_process(text: &str) -> Result<(String, u32), String> {
    let (name, pid) = text.split_once('=').ok_or("expected NAME=PID")?;
    let pid = pid.parse().map_err(|e| format!("{pid:?}: {e}"))?;
    Ok((name.to_owned(), pid))
}

/// How long a setup step (a subscribe before the runs, a node creation) may take.
const SETUP_WAIT: Duration = Duration::from_secs(60);
/// How often a run looks whether it is over.
const POLL: Duration = Duration::from_millis(5);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = match &args.mode {
        Mode::Deliveries { subscribers, items } => deliveries(&args, *subscribers, *items).await,
        Mode::Subscribes {
            subscribers,
            senders,
            window,
            warmup,
        } => {
            let size = Subscribes {
                subscribers: *subscribers,
                senders: (*senders).clamp(1, (*subscribers).max(1)),
                window: *window,
                warmup: *warmup,
            };
            subscribes(&args, &size).await
        }
    };
    match outcome {
        Ok(summaries) => {
            let mut whole = true;
            for summary in &summaries {
                println!("summary: {}", summary.line());
                whole &= summary.whole();
            }
            if whole {
                ExitCode::SUCCESS
            } else {
                eprintln!("pubsub-bench: something was lost (see the summary lines)");
                ExitCode::from(2)
            }
        }
        Err(message) => {
            eprintln!("pubsub-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What a target did over all its rounds.
#[derive(Debug, Default)]
struct Summary {
    /// `key=value` pairs that describe the case (mode, target, sizes).
    case: Vec<(&'static str, String)>,
    /// Per measured run: the rate (deliveries or replies per second) and the seconds.
    runs: Vec<(f64, f64)>,
    /// Deliveries (or replies) expected and received, over every round with the warm-up.
    expected: usize,
    received: usize,
    duplicates: usize,
    strays: usize,
    /// Requests (publishes or subscribes) answered with a result, an error, or not at all.
    results: usize,
    errors: BTreeMap<String, usize>,
    unanswered: usize,
    /// A run ended with nothing coming for `--idle-secs`: what was missing is lost.
    stalled: bool,
    /// A run reached `--run-secs` first (the service is slower than the limit); the
    /// subscribes not yet sent then were not sent.
    limited: bool,
    unsent: usize,
    /// Per process: CPU ticks over the measured runs, as core-seconds, and the wall time.
    cpu: BTreeMap<String, f64>,
    wall: f64,
}

impl Summary {
    /// An empty summary per target, for the case `mode` with these sizes.
    fn per_target(args: &Args, mode: &str, sizes: &[(&'static str, String)]) -> Vec<Self> {
        args.targets
            .iter()
            .map(|t| Self {
                case: [("mode", mode.to_owned()), ("target", t.label.clone())]
                    .into_iter()
                    .chain(sizes.iter().cloned())
                    .collect(),
                ..Self::default()
            })
            .collect()
    }

    fn whole(&self) -> bool {
        self.received == self.expected
            && self.duplicates == 0
            && self.errors.is_empty()
            && self.unanswered == 0
            && !self.stalled
    }

    fn count(&mut self, reply: Reply) {
        match reply {
            Reply::Result => self.results += 1,
            Reply::Error(condition) => *self.errors.entry(condition).or_default() += 1,
            Reply::Unanswered => self.unanswered += 1,
        }
    }

    /// Records how a run ended; a measured run (not the warm-up, round 0) also gives its
    /// rate and seconds, and the cores each process kept busy over its `wall` time.
    fn end_run(
        &mut self,
        round: usize,
        ending: Ending,
        rate_and_seconds: (f64, f64),
        busy: &[(String, f64)],
        wall: Duration,
    ) {
        self.stalled |= ending == Ending::Stalled;
        self.limited |= ending == Ending::Limit;
        if round == 0 {
            return;
        }
        self.runs.push(rate_and_seconds);
        for (process, share) in busy {
            *self.cpu.entry(process.clone()).or_default() += share * wall.as_secs_f64();
        }
        self.wall += wall.as_secs_f64();
    }

    fn line(&self) -> String {
        let mut rates: Vec<f64> = self.runs.iter().map(|r| r.0).collect();
        rates.sort_by(f64::total_cmp);
        let median = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
        let mut seconds: Vec<f64> = self.runs.iter().map(|r| r.1).collect();
        seconds.sort_by(f64::total_cmp);
        let mut pairs: Vec<String> = self.case.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.extend([
            format!("runs={}", self.runs.len()),
            format!("rate={median:.1}"),
            format!(
                "rates={}",
                self.runs
                    .iter()
                    .map(|r| format!("{:.1}", r.0))
                    .collect::<Vec<_>>()
                    .join("/")
            ),
            format!(
                "median_seconds={:.3}",
                seconds.get(seconds.len() / 2).copied().unwrap_or(0.0)
            ),
            format!("expected={}", self.expected),
            format!("received={}", self.received),
            format!("lost={}", self.expected.saturating_sub(self.received)),
            format!("duplicates={}", self.duplicates),
            format!("strays={}", self.strays),
            format!("results={}", self.results),
            format!("errors={}", self.errors.values().sum::<usize>()),
            format!(
                "error_conditions={}",
                if self.errors.is_empty() {
                    "none".to_owned()
                } else {
                    self.errors
                        .iter()
                        .map(|(c, n)| format!("{c}:{n}"))
                        .collect::<Vec<_>>()
                        .join(",")
                }
            ),
            format!("unanswered={}", self.unanswered),
            format!("unsent={}", self.unsent),
            format!("stalled={}", self.stalled),
            format!("limited={}", self.limited),
        ]);
        for (process, seconds) in &self.cpu {
            pairs.push(format!(
                "cpu_{process}={:.3}",
                seconds / self.wall.max(1e-9)
            ));
        }
        pairs.join(" ")
    }
}

/// What came back for one request.
enum Reply {
    Result,
    Error(String),
    Unanswered,
}

/// Sends `request` and reads its reply.
async fn exchange(client: &Client, request: Element, wait: Duration) -> Reply {
    match client.iq(request, wait).await {
        Ok(reply) => match pubsub::error_of(&reply) {
            None => Reply::Result,
            Some(e) => Reply::Error(match e.app {
                Some(app) => format!("{}/{app}", e.condition),
                None => e.condition,
            }),
        },
        Err(_) => Reply::Unanswered,
    }
}

/// The subscribe of `jid` to the target's `node`, sent by `client` (signed if the target
/// wants it).
fn subscribe_request(
    args: &Args,
    target: &Target,
    node: &str,
    client: &Client,
    jid: &str,
) -> Element {
    let mut request = pubsub::subscribe(&target.service, node, jid);
    if target.sign {
        let (app, token) = (args.grant.app(), args.grant.token());
        pubsub::sign(&mut request, client.jid(), &app.signer(Some(&token)));
    }
    request
}

/// Creates `node` on the target's service through `publisher`; an existing node is fine.
async fn create_node(publisher: &Client, target: &Target, node: &str) -> Result<(), String> {
    let create = Element::builder("iq", CLIENT)
        .attr(name("type"), "set")
        .attr(name("to"), target.service.as_str())
        .append(
            Element::builder("pubsub", pubsub::PUBSUB)
                .append(Element::builder("create", pubsub::PUBSUB).attr(name("node"), node)),
        )
        .build();
    let reply = publisher
        .iq(create, SETUP_WAIT)
        .await
        .map_err(|e| format!("{}: cannot create {node}: {e}", target.label))?;
    match pubsub::error_of(&reply) {
        Some(e) if e.condition != "conflict" => Err(format!(
            "{}: cannot create {node}: {} {}",
            target.label, e.condition, e.text
        )),
        _ => Ok(()),
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Everything came in.
    Done,
    /// Nothing came for `--idle-secs`.
    Stalled,
    /// `--run-secs` passed first.
    Limit,
}

impl Ending {
    fn note(self) -> &'static str {
        match self {
            Self::Done => "",
            Self::Stalled => " STALLED",
            Self::Limit => " TIME-LIMIT",
        }
    }
}

/// When a run started and when it last made progress (a delivery, a reply).
struct RunClock {
    started: Instant,
    /// Nanoseconds from `started` to the last progress (a delivery, a reply).
    last: AtomicU64,
}

impl RunClock {
    fn start() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    /// Records progress now.
    fn tick(&self) {
        let ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.fetch_max(ns, Ordering::Relaxed);
    }

    /// From the start to the last progress.
    fn until_last(&self) -> Duration {
        Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    /// Waits until `done()`, or until nothing came for `--idle-secs`, or `--run-secs`.
    async fn wait(&self, args: &Args, done: impl FnMut() -> bool) -> Ending {
        self.wait_within(
            Duration::from_secs(args.idle_secs),
            Duration::from_secs(args.run_secs),
            done,
        )
        .await
    }

    /// Waits until `done()`, or until nothing came for `idle`, or `limit` after the start.
    async fn wait_within(
        &self,
        idle: Duration,
        limit: Duration,
        mut done: impl FnMut() -> bool,
    ) -> Ending {
        loop {
            if done() {
                return Ending::Done;
            }
            let now = self.started.elapsed();
            if now.saturating_sub(self.until_last()) >= idle {
                return Ending::Stalled;
            }
            if now >= limit {
                return Ending::Limit;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Reads the CPU counters at the start of a run; `finish` gives the cores busy.
struct CpuWindow<'a> {
    args: &'a Args,
    before: CpuTicks,
    started: Instant,
}

impl<'a> CpuWindow<'a> {
    fn open(args: &'a Args) -> Self {
        Self {
            args,
            before: CpuTicks::now(&args.processes),
            started: Instant::now(),
        }
    }

    fn finish(self) -> (Vec<(String, f64)>, Duration) {
        let after = CpuTicks::now(&self.args.processes);
        let wall = self.started.elapsed();
        (
            after.busy_since(&self.before, wall, self.args.clock_ticks, "bench"),
            wall,
        )
    }
}

fn describe_cpu(busy: &[(String, f64)]) -> String {
    busy.iter()
        .map(|(p, s)| format!("{p}:{s:.2}"))
        .collect::<Vec<_>>()
        .join(",")
}

// ------------------------------------------------------------------------ deliveries

/// The deliveries counted in one run of one target.
#[derive(Default)]
struct Tally {
    received: AtomicUsize,
    duplicates: AtomicUsize,
    strays: AtomicUsize,
}

/// Counts what `client` receives from `service` with item ids `PREFIXi` (i < items) until
/// `stop` fires, then what already arrived.
async fn count_deliveries(
    mut client: Client,
    service: String,
    prefix: String,
    items: usize,
    tally: Arc<Tally>,
    clock: Arc<RunClock>,
    mut stop: watch::Receiver<bool>,
) -> Client {
    let mut seen = vec![false; items];
    let mut count = |message: Element| {
        if message.attr("from") != Some(service.as_str()) {
            tally.strays.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some((_, list)) = pubsub::event_items(&message) else {
            tally.strays.fetch_add(1, Ordering::Relaxed);
            return;
        };
        for (id, _) in list {
            let number = id
                .strip_prefix(prefix.as_str())
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n < items);
            match number {
                Some(n) if seen[n] => {
                    tally.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                Some(n) => {
                    seen[n] = true;
                    tally.received.fetch_add(1, Ordering::Relaxed);
                    clock.tick();
                }
                None => {
                    tally.strays.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    loop {
        tokio::select! {
            message = client.next_message(Duration::from_secs(3600)) => match message {
                Some(message) => count(message),
                None if client.is_closed() => break,
                None => {}
            },
            _ = stop.changed() => break,
        }
    }
    while let Ok(Some(message)) = client.try_message() {
        count(message);
    }
    client
}

async fn deliveries(args: &Args, subscribers: usize, items: usize) -> Result<Vec<Summary>, String> {
    let password = Secret::new(args.password.clone());
    let publisher = Arc::new(login(&args.xmpp, &args.publisher, &password, "bench").await?);
    for target in args.targets.iter().filter(|t| t.create) {
        create_node(&publisher, target, &target.node).await?;
    }
    let jids: Vec<String> = (1..=subscribers)
        .map(|i| format!("sub{i}@localhost"))
        .collect();
    let setup = Instant::now();
    let clients = login_all(&args.xmpp, &jids, &password, "bench", args.logins).await?;
    // Each subscriber subscribes to every target, `logins` subscribers at a time.
    let permits = Arc::new(Semaphore::new(args.logins.max(1)));
    let mut subscribing = JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        let requests: Vec<(String, Element)> = args
            .targets
            .iter()
            .map(|t| {
                let request = subscribe_request(args, t, &t.node, &client, client.jid());
                (t.label.clone(), request)
            })
            .collect();
        let permits = Arc::clone(&permits);
        subscribing.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            subscribe_each(&client, requests, SETUP_WAIT).await?;
            Ok::<_, String>((i, client))
        });
    }
    let mut clients: Vec<(usize, Client)> = Vec::with_capacity(subscribers);
    while let Some(done) = subscribing.join_next().await {
        clients.push(done.map_err(|e| e.to_string())??);
    }
    clients.sort_by_key(|(i, _)| *i);
    let mut clients: Vec<Client> = clients.into_iter().map(|(_, c)| c).collect();
    println!(
        "pubsub-bench deliveries: {subscribers} subscribers logged in and subscribed to {} targets \
         in {:.1} s; {items} publishes per run ({} deliveries), a warm-up then {} rounds",
        args.targets.len(),
        setup.elapsed().as_secs_f64(),
        items * subscribers,
        args.runs
    );

    let mut summaries = Summary::per_target(
        args,
        "deliveries",
        &[
            ("subscribers", subscribers.to_string()),
            ("items", items.to_string()),
        ],
    );
    for round in 0..=args.runs {
        for (t, target) in args.targets.iter().enumerate() {
            if summaries[t].stalled || summaries[t].limited {
                continue;
            }
            clients = delivery_run(
                args,
                &publisher,
                target,
                clients,
                items,
                round,
                t,
                &mut summaries[t],
            )
            .await;
        }
    }
    let publisher = Arc::try_unwrap(publisher).ok();
    close_all(clients.into_iter().chain(publisher), SETUP_WAIT).await;
    Ok(summaries)
}

/// One round of one target: publishes `items` items back to back and counts the deliveries
/// until all are in (or the run is given up). Round 0 is the warm-up: counted, not timed.
#[allow(clippy::too_many_arguments)]
async fn delivery_run(
    args: &Args,
    publisher: &Arc<Client>,
    target: &Target,
    clients: Vec<Client>,
    items: usize,
    round: usize,
    t: usize,
    summary: &mut Summary,
) -> Vec<Client> {
    let prefix = format!("t{t}r{round}-");
    let expected = items * clients.len();
    let tally = Arc::new(Tally::default());
    let (stop, stopped) = watch::channel(false);
    let cpu = CpuWindow::open(args);
    let clock = RunClock::start();
    let counters: Vec<_> = clients
        .into_iter()
        .map(|client| {
            tokio::spawn(count_deliveries(
                client,
                target.service.clone(),
                prefix.clone(),
                items,
                Arc::clone(&tally),
                Arc::clone(&clock),
                stopped.clone(),
            ))
        })
        .collect();
    let wait = Duration::from_secs(args.run_secs);
    let mut publishes = JoinSet::new();
    for i in 0..items {
        let request = pubsub::publish(
            &target.service,
            &target.node,
            Some(&format!("{prefix}{i}")),
            pubsub::location_entry(&format!("round {round} item {i}"), "37.7955 -122.3937"),
        );
        let (publisher, clock) = (Arc::clone(publisher), Arc::clone(&clock));
        publishes.spawn(async move {
            let reply = exchange(&publisher, request, wait).await;
            clock.tick();
            reply
        });
    }
    let mut answered = 0;
    let ending = clock
        .wait(args, || {
            while let Some(done) = publishes.try_join_next() {
                answered += 1;
                summary.count(done.unwrap_or(Reply::Unanswered));
            }
            tally.received.load(Ordering::Relaxed) >= expected && answered == items
        })
        .await;
    let (busy, wall) = cpu.finish();
    let _ = stop.send(true);
    let mut clients = Vec::with_capacity(counters.len());
    for counter in counters {
        if let Ok(client) = counter.await {
            clients.push(client);
        }
    }
    // Publishes still unanswered when the run was given up.
    publishes.abort_all();
    while let Some(done) = publishes.join_next().await {
        summary.count(done.unwrap_or(Reply::Unanswered));
    }
    let received = tally.received.load(Ordering::Relaxed);
    let seconds = clock.until_last().as_secs_f64();
    let rate = received as f64 / seconds.max(1e-9);
    summary.expected += expected;
    summary.received += received;
    summary.duplicates += tally.duplicates.load(Ordering::Relaxed);
    summary.strays += tally.strays.load(Ordering::Relaxed);
    summary.end_run(round, ending, (rate, seconds), &busy, wall);
    println!(
        "run: mode=deliveries target={} subscribers={} round={}{} deliveries={received}/{expected} \
         seconds={seconds:.3} rate={rate:.0} cpu={}{}",
        target.label,
        clients.len(),
        round,
        if round == 0 { "(warm-up)" } else { "" },
        describe_cpu(&busy),
        ending.note()
    );
    clients
}

// ------------------------------------------------------------------------ subscribes

/// The size of a subscribes case.
struct Subscribes {
    subscribers: usize,
    senders: usize,
    window: usize,
    warmup: usize,
}

async fn subscribes(args: &Args, size: &Subscribes) -> Result<Vec<Summary>, String> {
    let password = Secret::new(args.password.clone());
    let publisher = login(&args.xmpp, &args.publisher, &password, "bench").await?;
    let jids: Vec<String> = (1..=size.senders)
        .map(|i| format!("sub{i}@localhost"))
        .collect();
    let senders: Vec<Arc<Client>> = login_all(&args.xmpp, &jids, &password, "subs", args.logins)
        .await?
        .into_iter()
        .map(Arc::new)
        .collect();
    println!(
        "pubsub-bench subscribes: {} subscriptions per run from {} connections, {} in flight; \
         a warm-up of {} then {} rounds",
        size.subscribers, size.senders, size.window, size.warmup, args.runs
    );
    let mut summaries = Summary::per_target(
        args,
        "subscribes",
        &[
            ("subscribers", size.subscribers.to_string()),
            ("senders", size.senders.to_string()),
            ("window", size.window.to_string()),
        ],
    );
    for round in 0..=args.runs {
        for (t, target) in args.targets.iter().enumerate() {
            if summaries[t].stalled || summaries[t].limited {
                continue;
            }
            let node = if round == 0 {
                format!("{}-w", target.node)
            } else {
                format!("{}-{round}", target.node)
            };
            if target.create {
                create_node(&publisher, target, &node).await?;
            }
            let count = if round == 0 {
                size.warmup.min(size.subscribers)
            } else {
                size.subscribers
            };
            subscribe_run(
                args,
                &senders,
                target,
                &node,
                count,
                size.window,
                round,
                &mut summaries[t],
            )
            .await;
        }
    }
    for sender in senders {
        if let Ok(client) = Arc::try_unwrap(sender) {
            client.close().await;
        }
    }
    publisher.close().await;
    Ok(summaries)
}

/// One round of one target: `count` subscribes of distinct JIDs to `node`, at most `window`
/// unanswered.
#[allow(clippy::too_many_arguments)]
async fn subscribe_run(
    args: &Args,
    senders: &[Arc<Client>],
    target: &Target,
    node: &str,
    count: usize,
    window: usize,
    round: usize,
    summary: &mut Summary,
) {
    // Built (and signed) before the clock starts: what is timed is the service's answer.
    let requests: Vec<(Arc<Client>, Element)> = (0..count)
        .map(|j| {
            let sender = &senders[j % senders.len()];
            let jid = format!("{}/s{round}-{j}", sender.bare());
            let request = subscribe_request(args, target, node, sender, &jid);
            (Arc::clone(sender), request)
        })
        .collect();
    let permits = Arc::new(Semaphore::new(window.max(1)));
    let replies = Arc::new(AtomicUsize::new(0));
    let wait = Duration::from_secs(args.run_secs);
    let cpu = CpuWindow::open(args);
    let clock = RunClock::start();
    let mut tasks = JoinSet::new();
    let mut sent = 0;
    let mut ending = Ending::Done;
    for (sender, request) in requests {
        // Waits for a free slot, but not past the end of the run.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("never closed"),
            given_up = clock.wait(args, || false) => {
                ending = given_up;
                break;
            }
        };
        let (clock, replies) = (Arc::clone(&clock), Arc::clone(&replies));
        tasks.spawn(async move {
            let reply = exchange(&sender, request, wait).await;
            drop(permit);
            if !matches!(reply, Reply::Unanswered) {
                replies.fetch_add(1, Ordering::Relaxed);
                clock.tick();
            }
            reply
        });
        sent += 1;
    }
    if ending == Ending::Done {
        ending = clock
            .wait(args, || replies.load(Ordering::Relaxed) >= count)
            .await;
    }
    let (busy, wall) = cpu.finish();
    // The rate counts what came back within the run.
    let answered = replies.load(Ordering::Relaxed);
    let seconds = clock.until_last().as_secs_f64();
    let rate = answered as f64 / seconds.max(1e-9);
    if ending == Ending::Limit {
        // What was sent still gets its reply (or counts as lost), and the service is done
        // with it before the next run starts.
        let _ = clock
            .wait_within(Duration::from_secs(args.idle_secs), Duration::MAX, || {
                replies.load(Ordering::Relaxed) >= sent
            })
            .await;
    }
    tasks.abort_all();
    while let Some(done) = tasks.join_next().await {
        summary.count(done.unwrap_or(Reply::Unanswered));
    }
    summary.unsent += count - sent;
    summary.expected += sent;
    summary.received += replies.load(Ordering::Relaxed);
    summary.end_run(round, ending, (rate, seconds), &busy, wall);
    println!(
        "run: mode=subscribes target={} node={node} round={round}{} replies={answered}/{count} \
         seconds={seconds:.3} rate={rate:.0} cpu={}{}",
        target.label,
        if round == 0 { "(warm-up)" } else { "" },
        describe_cpu(&busy),
        ending.note()
    );
}
