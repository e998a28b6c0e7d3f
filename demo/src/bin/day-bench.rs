//! `day-bench`: the seed's day through the guard, counted. `scripts/bench-day` (driver
//! `scripts/bench_day.py`) starts Prosody and the guard, provisions the owners, their nodes
//! and the consumer's grants with `authz-server import`, then runs this.
//!
//! The plan file has one line per owner, `node<TAB>token<TAB>token secret<TAB>items`: the
//! owner's protected node, the access token she granted the consumer for it, and how many
//! items she publishes today (0 for an owner who is not active).
//!
//! 1. The consumer (`--consumer`, one account) logs in over `--consumer-connections`
//!    connections and sends one subscribe per node, each with a `<oauth/>` signed with that
//!    node's own token, at most `--subscribe-window` unanswered. Node *i* is subscribed by
//!    connection *i* mod *C* with that connection's full JID, so its notifications come
//!    there.
//! 2. The photo site (`--site`, one account, the nodes' publisher) publishes each active
//!    owner's items over `--site-connections` connections, at most `--publish-window`
//!    unanswered: item `i0` of every active owner, then item `i1` of every owner with more
//!    than one, and so on. Each item is an Atom entry of about `--item-bytes` bytes with a
//!    GeoRSS point that depends on the owner and the item.
//! 3. Every notification is checked: its node and item id must be one that was published,
//!    its point the one published, and each (node, item id) must arrive exactly once.
//!
//! Every wait is bounded: an IQ waits `--reply-secs` for its answer, the deliveries are
//! given up after `--idle-secs` without a new one, and the whole run after
//! `--deadline-secs`. Lines `phase: NAME` mark where the phases start and end (the driver
//! reads the processes' CPU time there), and the last line is `summary:` with `key=value`
//! pairs. The exit status is 0 when everything arrived once and every request succeeded; 2
//! when something was lost, duplicated, altered or refused; 1 when the setup failed (the
//! plan, a login).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use demo::bench::{Outcome, Replies, login};
use demo::flow::{App, TokenPair};
use demo::pubsub;
use demo::xmpp::{Client, StanzaCounts, name, xml};
use minidom::Element;
use oauth_xmpp::Secret;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Play one day of the photo site through the guard and count every delivery.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The XMPP server's client port.
    #[arg(long)]
    xmpp: String,
    /// The guard's component JID.
    #[arg(long, default_value = "pubsub.localhost")]
    guard: String,
    /// The consumer application's account: it subscribes and receives.
    #[arg(long, default_value = "aggregator@localhost")]
    consumer: String,
    /// The photo site's account: the nodes' publisher.
    #[arg(long, default_value = "site@localhost")]
    site: String,
    /// The password of both accounts.
    #[arg(long, env = "DAY_PASSWORD", hide_env_values = true)]
    password: String,
    /// The consumer key.
    #[arg(long, allow_hyphen_values = true)]
    consumer_key: String,
    /// The consumer secret.
    #[arg(long, env = "CONSUMER_SECRET", hide_env_values = true)]
    consumer_secret: String,
    /// The plan: `node<TAB>token<TAB>token secret<TAB>items` per owner.
    #[arg(long)]
    plan: std::path::PathBuf,
    /// Connections of the consumer (its nodes are shared among them).
    #[arg(long, default_value_t = 4)]
    consumer_connections: usize,
    /// Connections of the site (its publishes are shared among them).
    #[arg(long, default_value_t = 4)]
    site_connections: usize,
    /// Subscribes sent and not yet answered, at most.
    #[arg(long, default_value_t = 512)]
    subscribe_window: usize,
    /// Publishes sent and not yet answered, at most.
    #[arg(long, default_value_t = 512)]
    publish_window: usize,
    /// The size of each Atom entry, in bytes of XML.
    #[arg(long, default_value_t = 2048)]
    item_bytes: usize,
    /// How long an IQ waits for its answer.
    #[arg(long, default_value_t = 60)]
    reply_secs: u64,
    /// Give the deliveries up after this long without a new one.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Stop everything after this long.
    #[arg(long, default_value_t = 900)]
    deadline_secs: u64,
}

/// How often the wait for the deliveries looks at the count.
const POLL: Duration = Duration::from_millis(10);
/// How long closing the connections may take.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// Atom and GeoRSS.
const ATOM: &str = "http://www.w3.org/2005/Atom";
const GEORSS: &str = "http://www.georss.org/georss";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let deadline = Duration::from_secs(args.deadline_secs);
    match tokio::time::timeout(deadline, run(&args)).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => {
            eprintln!(
                "day-bench: deliveries were lost, duplicated or altered, or requests failed (see above)"
            );
            ExitCode::from(2)
        }
        Ok(Err(message)) => {
            eprintln!("day-bench: {message}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("day-bench: the run did not finish within {deadline:?}");
            ExitCode::FAILURE
        }
    }
}

/// One owner of the plan.
struct Owner {
    node: String,
    token: TokenPair,
    items: usize,
}

fn read_plan(path: &std::path::Path) -> Result<Vec<Owner>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the plan {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(n, line)| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [node, token, secret, items] = fields[..] else {
                return Err(format!("plan line {}: not 4 fields", n + 1));
            };
            Ok(Owner {
                node: node.to_owned(),
                token: TokenPair {
                    token: token.to_owned(),
                    secret: Secret::new(secret.to_owned()),
                },
                items: items
                    .parse()
                    .map_err(|e| format!("plan line {}: items: {e}", n + 1))?,
            })
        })
        .collect()
}

/// The owner's name: the last segment of her node.
fn owner_name(node: &str) -> &str {
    node.rsplit('/').next().unwrap_or(node)
}

/// The id of an owner's item number `r`.
fn item_id(r: usize) -> String {
    format!("i{r}")
}

/// Where owner number `owner` was when she published item `r`: a GeoRSS point, the same
/// each time it is computed.
fn point(owner: usize, r: usize) -> String {
    let spread = |n: usize, range: usize| (n % range) as f64 / 10_000.0;
    let mix = owner
        .wrapping_mul(7919)
        .wrapping_add(r.wrapping_mul(104_729));
    let lat = -60.0 + spread(mix, 1_200_000);
    let lon = -180.0 + spread(mix.wrapping_mul(31).wrapping_add(owner), 3_600_000);
    format!("{lat:.4} {lon:.4}")
}

/// The photo site's Atom entry for owner number `owner`'s item `r`, with its GeoRSS point,
/// padded with a summary to about `bytes` bytes of XML.
fn photo_entry(owner: usize, node: &str, r: usize, bytes: usize) -> Element {
    let who = owner_name(node);
    let mut entry = pubsub::location_entry(&format!("Photo {r} by {who}"), &point(owner, r));
    let text = |element: &str, value: String| Element::builder(element, ATOM).append(value).build();
    entry.append_child(text("id", format!("tag:photos.example,2008:{who}/{r}")));
    entry.append_child(text(
        "updated",
        format!("2008-08-07T{:02}:{:02}:00Z", 8 + r / 60, r % 60),
    ));
    entry.append_child(
        Element::builder("author", ATOM)
            .append(Element::builder("name", ATOM).append(who))
            .build(),
    );
    entry.append_child(
        Element::builder("link", ATOM)
            .attr(name("rel"), "alternate")
            .attr(name("href"), format!("http://photos.example/{who}/{r}"))
            .build(),
    );
    let bare = xml(&entry).len() + "<summary></summary>".len();
    let filler = "A photo taken on the way, shared with the people who follow it. ";
    let summary: String = filler
        .chars()
        .cycle()
        .take(bytes.saturating_sub(bare))
        .collect();
    entry.append_child(text("summary", summary));
    entry
}

/// Reads a reply: `check` says whether a result is the expected one.
fn outcome(
    reply: Result<Element, demo::xmpp::ClientError>,
    check: impl Fn(&Element) -> bool,
) -> Outcome {
    match reply {
        Ok(reply) => match pubsub::error_of(&reply) {
            Some(e) => Outcome::Error(match e.app {
                Some(app) => format!("{}/{app}", e.condition),
                None => e.condition,
            }),
            None if check(&reply) => Outcome::Result,
            None => Outcome::Error(format!("unexpected result {}", xml(&reply))),
        },
        Err(_) => Outcome::Unanswered,
    }
}

/// Sends `requests` over `clients` (request `j` over client `j` mod their number), at most
/// `window` unanswered, and gathers the outcomes.
async fn pipeline<I>(clients: &[Arc<Client>], window: usize, wait: Duration, requests: I) -> Replies
where
    I: IntoIterator<Item = (usize, Element, Box<dyn Fn(&Element) -> bool + Send>)>,
{
    let permits = Arc::new(Semaphore::new(window.max(1)));
    let mut tasks = JoinSet::new();
    let mut replies = Replies::default();
    for (j, request, check) in requests {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let client = Arc::clone(&clients[j % clients.len()]);
        tasks.spawn(async move {
            let reply = client.iq(request, wait).await;
            drop(permit);
            outcome(reply, check)
        });
        while let Some(done) = tasks.try_join_next() {
            replies.add(done.unwrap_or(Outcome::Unanswered));
        }
    }
    while let Some(done) = tasks.join_next().await {
        replies.add(done.unwrap_or(Outcome::Unanswered));
    }
    replies
}

/// Every delivery the consumer's connections counted.
struct Deliveries {
    /// The guard's JID: notifications come from it.
    guard: String,
    /// Owner number by node.
    owners: HashMap<String, usize>,
    /// Where each owner's items start in `counts`; one more entry than owners.
    offsets: Vec<usize>,
    /// How many times each (owner, item) arrived.
    counts: Vec<AtomicU32>,
    /// (Owner, item) pairs that arrived at least once.
    distinct: AtomicUsize,
    /// Arrivals of a pair that had arrived already.
    duplicates: AtomicUsize,
    /// Items of no node or item id that was published.
    strays: AtomicUsize,
    /// Items whose payload is not the entry that was published.
    altered: AtomicUsize,
    /// Messages that carry no item.
    other: AtomicUsize,
    /// When publishing started.
    started: Instant,
    /// Microseconds from `started` to the newest first arrival.
    last_us: AtomicU64,
}

impl Deliveries {
    fn new(guard: &str, plan: &[Owner], started: Instant) -> Self {
        let mut offsets = Vec::with_capacity(plan.len() + 1);
        let mut total = 0;
        for owner in plan {
            offsets.push(total);
            total += owner.items;
        }
        offsets.push(total);
        Self {
            guard: guard.to_owned(),
            owners: plan
                .iter()
                .enumerate()
                .map(|(i, o)| (o.node.clone(), i))
                .collect(),
            offsets,
            counts: (0..total).map(|_| AtomicU32::new(0)).collect(),
            distinct: AtomicUsize::new(0),
            duplicates: AtomicUsize::new(0),
            strays: AtomicUsize::new(0),
            altered: AtomicUsize::new(0),
            other: AtomicUsize::new(0),
            started,
            last_us: AtomicU64::new(0),
        }
    }

    fn expected(&self) -> usize {
        self.counts.len()
    }

    /// Counts one message.
    fn count(&self, message: &Element) {
        let events = (message.attr("from") == Some(self.guard.as_str()))
            .then(|| pubsub::event_items(message))
            .flatten();
        let Some((node, items)) = events.filter(|(_, items)| !items.is_empty()) else {
            self.other.fetch_add(1, Ordering::Relaxed);
            return;
        };
        for (id, payload) in items {
            let slot = self.owners.get(&node).and_then(|&owner| {
                let r: usize = id.strip_prefix('i')?.parse().ok()?;
                let first = self.offsets[owner];
                (first + r < self.offsets[owner + 1]).then_some((owner, r, first + r))
            });
            let Some((owner, r, slot)) = slot else {
                self.strays.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let published = payload
                .as_ref()
                .filter(|p| p.is("entry", ATOM))
                .and_then(|p| p.get_child("point", GEORSS))
                .is_some_and(|p| p.text() == point(owner, r));
            if !published {
                self.altered.fetch_add(1, Ordering::Relaxed);
            }
            if self.counts[slot].fetch_add(1, Ordering::Relaxed) == 0 {
                self.distinct.fetch_add(1, Ordering::Relaxed);
                let us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.last_us.fetch_max(us, Ordering::Relaxed);
            } else {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn lost(&self) -> usize {
        self.counts
            .iter()
            .filter(|c| c.load(Ordering::Relaxed) == 0)
            .count()
    }
}

/// Counts the messages `client` receives until `stop` changes, then what already arrived.
async fn receive(
    mut client: Client,
    deliveries: Arc<Deliveries>,
    mut stop: watch::Receiver<bool>,
) -> Client {
    loop {
        tokio::select! {
            message = client.wait_message(Duration::from_secs(3600)) => match message {
                Ok(Some(message)) => deliveries.count(&message),
                Ok(None) => {}
                Err(_) => break,
            },
            _ = stop.changed() => break,
        }
    }
    while let Ok(Some(message)) = client.try_message() {
        deliveries.count(&message);
    }
    client
}

/// Stanzas sent and received so far by the clients behind `counts`.
fn traffic(counts: &[Arc<StanzaCounts>]) -> (u64, u64) {
    counts
        .iter()
        .fold((0, 0), |(s, r), c| (s + c.sent(), r + c.received()))
}

fn phase(name: &str) {
    println!("phase: {name}");
}

async fn run(args: &Args) -> Result<bool, String> {
    let plan = read_plan(&args.plan)?;
    if plan.is_empty() {
        return Err("the plan is empty".into());
    }
    let password = Secret::new(args.password.clone());
    let wait = Duration::from_secs(args.reply_secs);
    let app = App {
        authz_url: String::new(),
        consumer_key: args.consumer_key.clone(),
        consumer_secret: Secret::new(args.consumer_secret.clone()),
    };

    let mut consumers = Vec::new();
    for c in 0..args.consumer_connections.max(1) {
        consumers.push(Arc::new(
            login(&args.xmpp, &args.consumer, &password, &format!("day-{c}")).await?,
        ));
    }
    let mut sites = Vec::new();
    for s in 0..args.site_connections.max(1) {
        sites.push(Arc::new(
            login(&args.xmpp, &args.site, &password, &format!("site-{s}")).await?,
        ));
    }
    let counts: Vec<_> = consumers.iter().chain(&sites).map(|c| c.counts()).collect();
    let at_login = traffic(&counts);

    // 1. One signed subscribe per node.
    phase("subscribe-start");
    let started = Instant::now();
    let subscribes = plan.iter().enumerate().map(|(i, owner)| {
        let client = &consumers[i % consumers.len()];
        let mut request = pubsub::subscribe(&args.guard, &owner.node, client.jid());
        pubsub::sign(&mut request, client.jid(), &app.signer(Some(&owner.token)));
        let node = owner.node.clone();
        let check: Box<dyn Fn(&Element) -> bool + Send> = Box::new(move |reply| {
            pubsub::subscription_of(reply)
                .is_some_and(|(n, state)| n == node && state == "subscribed")
        });
        (i, request, check)
    });
    let subscribed = pipeline(&consumers, args.subscribe_window, wait, subscribes).await;
    let subscribe_secs = started.elapsed().as_secs_f64();
    phase("subscribe-end");
    let after_subscribes = traffic(&counts);
    println!(
        "day-bench: {} subscribes in {subscribe_secs:.2} s ({:.0}/s), window {}: {} subscribed, \
         {} errors ({}), {} unanswered",
        plan.len(),
        plan.len() as f64 / subscribe_secs,
        args.subscribe_window,
        subscribed.results,
        subscribed.error_count(),
        subscribed.describe_errors(),
        subscribed.unanswered,
    );

    // 2. The site publishes; the consumer's connections count what arrives.
    let mut receivers = Vec::new();
    for client in consumers {
        receivers
            .push(Arc::try_unwrap(client).map_err(|_| "a subscribe is still running".to_owned())?);
    }
    let published_at = Instant::now();
    let deliveries = Arc::new(Deliveries::new(&args.guard, &plan, published_at));
    let (stop, stopped) = watch::channel(false);
    let receiving: Vec<_> = receivers
        .into_iter()
        .map(|client| tokio::spawn(receive(client, Arc::clone(&deliveries), stopped.clone())))
        .collect();
    let rounds = plan.iter().map(|o| o.items).max().unwrap_or(0);
    let schedule: Vec<(usize, usize)> = (0..rounds)
        .flat_map(|r| {
            plan.iter()
                .enumerate()
                .filter(move |(_, o)| o.items > r)
                .map(move |(i, _)| (i, r))
        })
        .collect();
    let publishes = schedule.len();
    let sample = xml(&photo_entry(0, &plan[0].node, 0, args.item_bytes)).len();
    phase("publish-start");
    let requests = schedule.iter().enumerate().map(|(j, &(owner, r))| {
        let node = &plan[owner].node;
        let id = item_id(r);
        let request = pubsub::publish(
            &args.guard,
            node,
            Some(&id),
            photo_entry(owner, node, r, args.item_bytes),
        );
        let check: Box<dyn Fn(&Element) -> bool + Send> =
            Box::new(move |reply| pubsub::published_id(reply).is_none_or(|given| given == id));
        (j, request, check)
    });
    let published = pipeline(&sites, args.publish_window, wait, requests).await;
    let results_secs = published_at.elapsed().as_secs_f64();

    // Wait for the deliveries: all of them, or until none came for `idle_secs`.
    let idle = Duration::from_secs(args.idle_secs);
    let mut last_count = deliveries.distinct.load(Ordering::Relaxed);
    let mut last_progress = Instant::now();
    while deliveries.distinct.load(Ordering::Relaxed) < deliveries.expected() {
        tokio::time::sleep(POLL).await;
        let now = deliveries.distinct.load(Ordering::Relaxed);
        if now != last_count {
            (last_count, last_progress) = (now, Instant::now());
        } else if last_progress.elapsed() >= idle {
            break;
        }
    }
    let deliver_secs = deliveries.last_us.load(Ordering::Relaxed) as f64 / 1e6;
    phase("publish-end");
    let _ = stop.send(true);
    let mut clients: Vec<Client> = Vec::new();
    for task in receiving {
        clients.push(task.await.map_err(|e| e.to_string())?);
    }
    let after_publishes = traffic(&counts);

    let expected = deliveries.expected();
    let received = deliveries.distinct.load(Ordering::Relaxed);
    let lost = deliveries.lost();
    let duplicates = deliveries.duplicates.load(Ordering::Relaxed);
    let strays = deliveries.strays.load(Ordering::Relaxed);
    let altered = deliveries.altered.load(Ordering::Relaxed);
    let other = deliveries.other.load(Ordering::Relaxed);
    println!(
        "day-bench: {publishes} publishes of {sample} bytes over {} connections, window {}: \
         {} results, {} errors ({}), {} unanswered; all answered after {results_secs:.2} s",
        sites.len(),
        args.publish_window,
        published.results,
        published.error_count(),
        published.describe_errors(),
        published.unanswered,
    );
    println!(
        "day-bench: deliveries expected {expected}, received {received}, lost {lost}, \
         duplicates {duplicates}, strays {strays}, altered {altered}, other messages {other}; \
         last delivery {deliver_secs:.2} s after the first publish ({:.0} deliveries/s)",
        received as f64 / deliver_secs.max(1e-9),
    );

    for site in sites {
        if let Ok(site) = Arc::try_unwrap(site) {
            clients.push(site);
        }
    }
    let mut closing = JoinSet::new();
    for client in clients {
        closing.spawn(client.close());
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while closing.join_next().await.is_some() {}
    })
    .await;
    let total = traffic(&counts);

    let ok = subscribed.results == plan.len()
        && published.results == publishes
        && lost == 0
        && duplicates == 0
        && strays == 0
        && altered == 0;
    println!(
        "summary: owners={} active={} publishes={publishes} item_bytes={sample} \
         consumer_connections={} site_connections={} subscribe_window={} publish_window={} \
         subscribes={} subscribed={} subscribe_errors={} subscribe_unanswered={} \
         subscribe_secs={subscribe_secs:.3} publish_results={} publish_errors={} \
         publish_unanswered={} results_secs={results_secs:.3} deliver_secs={deliver_secs:.3} \
         expected={expected} received={received} lost={lost} duplicates={duplicates} \
         strays={strays} altered={altered} other_messages={other} \
         login_sent={} login_received={} subscribe_sent={} subscribe_received={} \
         publish_sent={} publish_received={} close_sent={} close_received={} \
         sent={} received_stanzas={} ok={ok}",
        plan.len(),
        plan.iter().filter(|o| o.items > 0).count(),
        args.consumer_connections.max(1),
        args.site_connections.max(1),
        args.subscribe_window,
        args.publish_window,
        plan.len(),
        subscribed.results,
        subscribed.error_count(),
        subscribed.unanswered,
        published.results,
        published.error_count(),
        published.unanswered,
        at_login.0,
        at_login.1,
        after_subscribes.0 - at_login.0,
        after_subscribes.1 - at_login.1,
        after_publishes.0 - after_subscribes.0,
        after_publishes.1 - after_subscribes.1,
        total.0 - after_publishes.0,
        total.1 - after_publishes.1,
        total.0,
        total.1,
    );
    Ok(ok)
}
