//! `pubsub-burst`: the burst load test of issue 10 ("bursts drop stanzas"). It counts what a
//! service loses under a burst; it does not time anything. `scripts/bench-burst` (driver
//! `scripts/burst_guard.py`) starts Prosody and the guard, then runs both modes.
//!
//! - `fanout`: N subscribers (`sub1@localhost` … `subN@localhost`, one connection each, at
//!   most `--logins` logging in at once) subscribe to the guard's protected node with a signed
//!   `<oauth/>` (one consumer, one token, a fresh nonce per subscribe) and to a node of
//!   Prosody's own pubsub (the baseline, created by the publisher). The publisher then sends
//!   M publishes of a ~2 KB Atom entry to the guard, at most K in flight (the next goes out
//!   when a result or an error comes back, or when the wait for one is given up), waits for
//!   the notifications, and does the same on the baseline. Printed per service: publish
//!   results, errors and unanswered publishes; deliveries expected, received (each item once
//!   per subscriber), lost and duplicated; deliveries per subscriber.
//! - `iqs`: one client sends Q IQs (disco#info, or ping) to the guard with distinct ids,
//!   back to back (or at most `--window` unanswered), and counts the replies by type.
//!
//! Every wait is bounded: a wait is given up when nothing has progressed (no reply, no
//! delivery) for `--idle-secs`, and everything stops at `--deadline-secs`. The exit status is
//! 0, or 1 when the setup failed (a login, a subscribe), or, with `--assert`, 2 when the
//! guard lost, duplicated or refused anything (a lost delivery, an unanswered or refused
//! publish, an IQ without a reply). The baseline's figures are printed, never asserted.
//!
//! The last lines are one `summary:` line per service and mode, `key=value` pairs for scripts.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use demo::bench::{Outcome, Replies, close_all, login, subscribe_each};
use demo::flow::Grant;
use demo::pubsub;
use demo::xmpp::{CLIENT, Client, name, xml};
use minidom::Element;
use oauth_xmpp::Secret;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use xmpp_component::ns;

/// Count what the guard loses under a burst of publishes or of IQs.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The XMPP server's client port.
    #[arg(long)]
    xmpp: String,
    /// The guard's component JID.
    #[arg(long, default_value = "pubsub.localhost")]
    guard: String,
    /// The password of every account.
    #[arg(long, env = "BURST_PASSWORD", hide_env_values = true)]
    password: String,
    /// Give a wait up after this long without progress (no reply, no delivery).
    #[arg(long, global = true, default_value_t = 10)]
    idle_secs: u64,
    /// Stop everything after this long.
    #[arg(long, global = true, default_value_t = 600)]
    deadline_secs: u64,
    /// Exit with status 2 if the guard lost anything.
    #[arg(long, global = true)]
    assert: bool,
    /// What to send.
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// M publishes to one node with N subscribers, K in flight.
    Fanout(Fanout),
    /// Q IQs back to back from one client.
    Iqs(Iqs),
}

#[derive(Debug, clap::Args)]
struct Fanout {
    /// The guard's (protected) node; the token must cover it.
    #[arg(long, default_value = "/location/bench")]
    node: String,
    /// The baseline pubsub service (Prosody's mod_pubsub).
    #[arg(long, default_value = "native-pubsub.localhost")]
    baseline: String,
    /// Only the guard, no baseline.
    #[arg(long)]
    no_baseline: bool,
    /// The publisher account; it publishes to both services.
    #[arg(long, default_value = "publisher@localhost")]
    publisher: String,
    /// Subscriber accounts are `sub1@localhost` … `subN@localhost`.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Publishes per service.
    #[arg(long, default_value_t = 100)]
    publishes: usize,
    /// Publishes sent and not yet answered, at most.
    #[arg(long, default_value_t = 50)]
    in_flight: usize,
    /// The size of each Atom entry, in bytes of XML.
    #[arg(long, default_value_t = 2048)]
    item_bytes: usize,
    /// Logins (and subscribes) at once, at most.
    #[arg(long, default_value_t = 50)]
    logins: usize,
    #[command(flatten)]
    grant: Grant,
}

#[derive(Debug, clap::Args)]
struct Iqs {
    /// The account that sends the IQs.
    #[arg(long, default_value = "publisher@localhost")]
    jid: String,
    /// How many IQs.
    #[arg(long, default_value_t = 200_000)]
    iqs: usize,
    /// IQs sent and not yet answered, at most; 0: no limit (all back to back).
    #[arg(long, default_value_t = 0)]
    window: usize,
    /// Which IQ.
    #[arg(long, value_enum, default_value_t = IqKind::Disco)]
    kind: IqKind,
}

/// The IQ the `iqs` mode sends.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum IqKind {
    /// A disco#info get on the service.
    Disco,
    /// A ping (XEP-0199).
    Ping,
}

/// How long a setup step (a subscribe, the baseline's node) may take.
const SETUP_WAIT: Duration = Duration::from_secs(30);
/// How often the watchdog looks at the progress.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// The prefix of the published item ids; the item's number follows.
const ITEM_PREFIX: &str = "burst-";
/// The baseline's node.
const BASELINE_NODE: &str = "burst";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let progress = Progress::new(
        Duration::from_secs(args.idle_secs),
        Duration::from_secs(args.deadline_secs),
    );
    let watchdog = tokio::spawn(Arc::clone(&progress).watch());
    let outcome = match &args.mode {
        Mode::Fanout(fanout) => run_fanout(&args, fanout, &progress).await,
        Mode::Iqs(iqs) => run_iqs(&args, iqs, &progress).await,
    };
    watchdog.abort();
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) if args.assert => {
            eprintln!("pubsub-burst: the guard lost stanzas (see above)");
            ExitCode::from(2)
        }
        Ok(false) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("pubsub-burst: {message}");
            ExitCode::FAILURE
        }
    }
}

/// When the run last made progress, and a signal that fires when it stopped making any.
struct Progress {
    started: Instant,
    deadline: Instant,
    idle: Duration,
    /// Milliseconds from `started` to the last progress.
    last: AtomicU64,
    /// Counts the stalls: no progress for `idle`, or the deadline passed.
    stalls: watch::Sender<u64>,
}

impl Progress {
    fn new(idle: Duration, limit: Duration) -> Arc<Self> {
        let started = Instant::now();
        Arc::new(Self {
            started,
            deadline: started + limit,
            idle,
            last: AtomicU64::new(0),
            stalls: watch::Sender::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Something progressed.
    fn tick(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Completes at the next stall after this call.
    fn stalled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stalls = self.stalls.subscribe();
        async move {
            let _ = stalls.changed().await;
        }
    }

    /// How long until the deadline.
    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Signals a stall after each `idle` without progress, and every tick after the deadline.
    async fn watch(self: Arc<Self>) {
        let idle = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let quiet = self
                .now_ms()
                .saturating_sub(self.last.load(Ordering::Relaxed));
            if quiet >= idle || Instant::now() >= self.deadline {
                self.stalls.send_modify(|n| *n += 1);
                self.tick();
            }
        }
    }

    /// Waits until `done()` holds, or until the next stall; returns `done()`.
    async fn wait_until(&self, done: impl Fn() -> bool) -> bool {
        let stalled = self.stalled();
        tokio::pin!(stalled);
        while !done() {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                () = &mut stalled => return done(),
            }
        }
        true
    }
}

/// Sends `request` and waits for its reply, until the next stall.
async fn exchange(client: &Client, request: Element, progress: &Progress) -> Outcome {
    let stalled = progress.stalled();
    tokio::select! {
        reply = client.iq(request, progress.left()) => match reply {
            Ok(reply) => {
                progress.tick();
                match pubsub::error_of(&reply) {
                    None => Outcome::Result,
                    Some(e) => Outcome::Error(match e.app {
                        Some(app) => format!("{}/{app}", e.condition),
                        None => e.condition,
                    }),
                }
            }
            Err(_) => Outcome::Unanswered,
        },
        () = stalled => Outcome::Unanswered,
    }
}

/// Sends `count` requests through `client`, at most `window` unanswered, and gathers the
/// outcomes. Gives up sending at the deadline.
async fn pipeline(
    client: &Arc<Client>,
    count: usize,
    window: usize,
    progress: &Arc<Progress>,
    request: impl Fn(usize) -> Element,
) -> Replies {
    let permits = Arc::new(Semaphore::new(window.max(1)));
    let mut tasks = JoinSet::new();
    let mut replies = Replies::default();
    for i in 0..count {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
            () = tokio::time::sleep(progress.left()) => {
                replies.unsent = count - i;
                break;
            }
        };
        let (client, progress, request) = (Arc::clone(client), Arc::clone(progress), request(i));
        tasks.spawn(async move {
            let outcome = exchange(&client, request, &progress).await;
            drop(permit);
            outcome
        });
        // Keep the finished ones from piling up.
        while let Some(done) = tasks.try_join_next() {
            replies.add(done.unwrap_or(Outcome::Unanswered));
        }
    }
    while let Some(done) = tasks.join_next().await {
        replies.add(done.unwrap_or(Outcome::Unanswered));
    }
    replies
}

/// The item published as number `i`: an Atom entry with a GeoRSS point, padded with a
/// summary to about `bytes` bytes of XML.
fn entry(i: usize, bytes: usize) -> Element {
    let mut entry = pubsub::location_entry(&format!("burst item {i}"), "37.7955 -122.3937");
    let bare = xml(&entry).len() + "<summary></summary>".len();
    let summary = Element::builder("summary", entry.ns())
        .append("x".repeat(bytes.saturating_sub(bare)))
        .build();
    entry.append_child(summary);
    entry
}

/// The services of the fanout mode, by index: the guard, then the baseline.
const GUARD: usize = 0;
const BASELINE: usize = 1;

/// The deliveries counted so far, per service.
#[derive(Debug, Default)]
struct Tally {
    received: [AtomicUsize; 2],
    duplicates: [AtomicUsize; 2],
    /// Items whose id is none of ours, from either service.
    strays: [AtomicUsize; 2],
}

/// What one subscriber's counting task gives back.
struct Counted {
    client: Client,
    /// Distinct items received, per service.
    received: [usize; 2],
}

/// Counts the notifications `client` receives until `stop` changes.
async fn count_deliveries(
    mut client: Client,
    services: [String; 2],
    items: usize,
    tally: Arc<Tally>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> Counted {
    let mut seen = [vec![false; items], vec![false; items]];
    let mut received = [0; 2];
    let mut count = |message: Element| {
        let Some(s) = services
            .iter()
            .position(|service| message.attr("from") == Some(service.as_str()))
        else {
            return;
        };
        let Some((_, list)) = pubsub::event_items(&message) else {
            return;
        };
        for (id, _) in list {
            let number = id
                .strip_prefix(ITEM_PREFIX)
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n < items);
            match number {
                Some(n) if seen[s][n] => {
                    tally.duplicates[s].fetch_add(1, Ordering::Relaxed);
                }
                Some(n) => {
                    seen[s][n] = true;
                    received[s] += 1;
                    tally.received[s].fetch_add(1, Ordering::Relaxed);
                    progress.tick();
                }
                None => {
                    tally.strays[s].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    loop {
        tokio::select! {
            message = client.next_message(progress.left()) => match message {
                Some(message) => count(message),
                None => break,
            },
            _ = stop.changed() => break,
        }
    }
    // What already arrived still counts.
    while let Some(message) = client.next_message(Duration::ZERO).await {
        count(message);
    }
    Counted { client, received }
}

async fn run_fanout(
    args: &Args,
    fanout: &Fanout,
    progress: &Arc<Progress>,
) -> Result<bool, String> {
    let password = Secret::new(args.password.clone());
    let started = Instant::now();
    let publisher = Arc::new(login(&args.xmpp, &fanout.publisher, &password, "burst").await?);
    let with_baseline = !fanout.no_baseline;
    if with_baseline {
        let create = Element::builder("iq", CLIENT)
            .attr(name("type"), "set")
            .attr(name("to"), fanout.baseline.as_str())
            .append(Element::builder("pubsub", pubsub::PUBSUB).append(
                Element::builder("create", pubsub::PUBSUB).attr(name("node"), BASELINE_NODE),
            ))
            .build();
        let reply = publisher
            .iq(create, SETUP_WAIT)
            .await
            .map_err(|e| format!("cannot create the baseline node: {e}"))?;
        match pubsub::error_of(&reply) {
            Some(e) if e.condition != "conflict" => {
                return Err(format!(
                    "cannot create the baseline node: {} {}",
                    e.condition, e.text
                ));
            }
            _ => {}
        }
    }

    // Log in and subscribe, `logins` at a time.
    let (app, token) = (fanout.grant.app(), fanout.grant.token());
    let permits = Arc::new(Semaphore::new(fanout.logins.max(1)));
    let mut setups = JoinSet::new();
    for i in 1..=fanout.subscribers {
        let permits = Arc::clone(&permits);
        let (server, password, app, token) = (
            args.xmpp.clone(),
            password.clone(),
            app.clone(),
            token.clone(),
        );
        let (guard, node, baseline) = (
            args.guard.clone(),
            fanout.node.clone(),
            with_baseline.then(|| fanout.baseline.clone()),
        );
        let progress = Arc::clone(progress);
        setups.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            let client = login(&server, &format!("sub{i}@localhost"), &password, "burst").await?;
            let mut signed = pubsub::subscribe(&guard, &node, client.jid());
            pubsub::sign(&mut signed, client.jid(), &app.signer(Some(&token)));
            let mut requests = vec![("pubsub-guard", signed)];
            if let Some(baseline) = &baseline {
                let unsigned = pubsub::subscribe(baseline, BASELINE_NODE, client.jid());
                requests.push(("the baseline", unsigned));
            }
            subscribe_each(&client, requests, SETUP_WAIT).await?;
            progress.tick();
            Ok::<_, String>(client)
        });
    }
    let mut subscribers = Vec::with_capacity(fanout.subscribers);
    while let Some(done) = setups.join_next().await {
        subscribers.push(done.map_err(|e| e.to_string())??);
    }
    let setup_secs = started.elapsed().as_secs_f64();

    let items = fanout.publishes;
    let sample = xml(&entry(items, fanout.item_bytes)).len();
    println!(
        "pubsub-burst fanout: {} subscribers logged in and subscribed in {setup_secs:.1} s; \
         {items} publishes of {sample} bytes each, {} in flight; {} deliveries expected per service",
        fanout.subscribers,
        fanout.in_flight,
        items * fanout.subscribers
    );

    let tally = Arc::new(Tally::default());
    let (stop, stopped) = watch::channel(false);
    let services = [args.guard.clone(), fanout.baseline.clone()];
    let counters: Vec<_> = subscribers
        .into_iter()
        .map(|client| {
            tokio::spawn(count_deliveries(
                client,
                services.clone(),
                items,
                Arc::clone(&tally),
                Arc::clone(progress),
                stopped.clone(),
            ))
        })
        .collect();

    let mut targets = vec![(
        GUARD,
        "pubsub-guard",
        args.guard.as_str(),
        fanout.node.as_str(),
    )];
    if with_baseline {
        targets.push((
            BASELINE,
            "Prosody mod_pubsub",
            fanout.baseline.as_str(),
            BASELINE_NODE,
        ));
    }
    let expected = items * fanout.subscribers;
    let mut phases = Vec::new();
    for &(s, label, service, node) in &targets {
        progress.tick();
        let phase_started = Instant::now();
        let replies = pipeline(&publisher, items, fanout.in_flight, progress, |i| {
            let mut request = pubsub::publish(
                service,
                node,
                Some(&format!("{ITEM_PREFIX}{i}")),
                entry(i, fanout.item_bytes),
            );
            request.set_attr(
                minidom::rxml::Namespace::NONE,
                name("id"),
                format!("publish-{s}-{i}"),
            );
            request
        })
        .await;
        progress
            .wait_until(|| tally.received[s].load(Ordering::Relaxed) >= expected)
            .await;
        phases.push((s, label, replies, phase_started.elapsed().as_secs_f64()));
    }

    let _ = stop.send(true);
    let mut per_subscriber: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    let mut clients = Vec::new();
    for counter in counters {
        let counted = counter.await.map_err(|e| e.to_string())?;
        for (s, n) in counted.received.into_iter().enumerate() {
            per_subscriber[s].push(n);
        }
        clients.push(counted.client);
    }

    let mut guard_ok = true;
    let mut summaries = Vec::new();
    for (s, label, replies, seconds) in phases {
        let received = tally.received[s].load(Ordering::Relaxed);
        let duplicates = tally.duplicates[s].load(Ordering::Relaxed);
        let strays = tally.strays[s].load(Ordering::Relaxed);
        let lost = expected.saturating_sub(received);
        let counts = &mut per_subscriber[s];
        counts.sort_unstable();
        let complete = counts.iter().filter(|&&n| n == items).count();
        println!(
            "{label}: publishes {items}: {} results, {} errors ({}), {} unanswered, {} unsent; \
             deliveries expected {expected}, received {received}, lost {lost}, duplicates {duplicates}, \
             strays {strays}; per subscriber min {} median {} max {}, {complete} of {} complete; {seconds:.1} s",
            replies.results,
            replies.error_count(),
            replies.describe_errors(),
            replies.unanswered,
            replies.unsent,
            counts.first().copied().unwrap_or(0),
            counts.get(counts.len() / 2).copied().unwrap_or(0),
            counts.last().copied().unwrap_or(0),
            counts.len(),
        );
        summaries.push(format!(
            "summary: mode=fanout service={} subscribers={} publishes={items} in_flight={} \
             expected={expected} received={received} lost={lost} duplicates={duplicates} \
             results={} errors={} unanswered={} unsent={} complete_subscribers={complete} seconds={seconds:.1}",
            if s == GUARD { "guard" } else { "baseline" },
            fanout.subscribers,
            fanout.in_flight,
            replies.results,
            replies.error_count(),
            replies.unanswered,
            replies.unsent,
        ));
        if s == GUARD {
            guard_ok = lost == 0
                && duplicates == 0
                && replies.results == items
                && replies.unanswered == 0
                && replies.unsent == 0;
        }
    }
    for summary in summaries {
        println!("{summary}");
    }

    let publisher = Arc::try_unwrap(publisher).ok();
    close_all(clients.into_iter().chain(publisher), SETUP_WAIT).await;
    Ok(guard_ok)
}

async fn run_iqs(args: &Args, iqs: &Iqs, progress: &Arc<Progress>) -> Result<bool, String> {
    let password = Secret::new(args.password.clone());
    let client = Arc::new(login(&args.xmpp, &iqs.jid, &password, "iqs").await?);
    let window = if iqs.window == 0 { iqs.iqs } else { iqs.window };
    let (namespace, child) = match iqs.kind {
        IqKind::Disco => (ns::DISCO_INFO, "query"),
        IqKind::Ping => (ns::PING, "ping"),
    };
    progress.tick();
    let started = Instant::now();
    let replies = pipeline(&client, iqs.iqs, window, progress, |i| {
        Element::builder("iq", CLIENT)
            .attr(name("type"), "get")
            .attr(name("to"), args.guard.as_str())
            .attr(name("id"), format!("iq-{i}"))
            .append(Element::builder(child, namespace))
            .build()
    })
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let replied = replies.results + replies.error_count();
    let missing = iqs.iqs - replied;
    println!(
        "pubsub-guard: {} {:?} IQs, window {window}: {replied} replies ({} results, {} errors: {}), \
         {missing} without a reply ({} unanswered, {} unsent); {seconds:.1} s",
        iqs.iqs,
        iqs.kind,
        replies.results,
        replies.error_count(),
        replies.describe_errors(),
        replies.unanswered,
        replies.unsent,
    );
    println!(
        "summary: mode=iqs service=guard iqs={} window={window} replies={replied} results={} \
         errors={} missing={missing} seconds={seconds:.1}",
        iqs.iqs,
        replies.results,
        replies.error_count(),
    );
    if let Ok(client) = Arc::try_unwrap(client) {
        client.close().await;
    }
    Ok(missing == 0)
}
