//! `pubsub-bench`: publish-to-delivery throughput of a pubsub service, against a baseline in
//! the same run. `scripts/bench-guard` starts Prosody (with its built-in pubsub as the
//! baseline) and the guard, then runs this.
//!
//! For each service: N subscribers log in and subscribe to one node (to the guard with a
//! signed `<oauth/>`, to the baseline without), a publisher sends M items back to back
//! (pipelined, without waiting for each result), and the clock runs until every subscriber
//! has every item. Warm-up first, then `--runs` alternating runs; the median is reported,
//! and the ratio of the guard's throughput to the baseline's.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use demo::flow::Grant;
use demo::pubsub;
use demo::xmpp::{CLIENT, Client, name};
use minidom::Element;
use oauth_xmpp::Secret;

/// Measure publish-to-delivery throughput of the guard against Prosody's own pubsub.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The XMPP server's client port.
    #[arg(long)]
    xmpp: String,
    /// The guard's component JID.
    #[arg(long, default_value = "pubsub.localhost")]
    guard: String,
    /// The guard's (protected) node.
    #[arg(long, default_value = "/location/bench")]
    guard_node: String,
    /// The baseline pubsub service (Prosody's mod_pubsub).
    #[arg(long, default_value = "native-pubsub.localhost")]
    baseline: String,
    /// The publisher account; it publishes to both services.
    #[arg(long, default_value = "publisher@localhost")]
    publisher: String,
    /// Subscriber accounts are `sub1@localhost` … `subN@localhost`.
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// The password of every account.
    #[arg(long, env = "BENCH_PASSWORD", hide_env_values = true)]
    password: String,
    /// Items per run.
    #[arg(long, default_value_t = 1000)]
    items: usize,
    /// Measured runs per service (after one warm-up each).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[command(flatten)]
    grant: Grant,
}

const WAIT: Duration = Duration::from_secs(10);
/// The longest a run may take before it counts as lost deliveries.
const RUN_LIMIT: Duration = Duration::from_secs(120);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("pubsub-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

/// One service under test.
struct Target {
    label: &'static str,
    service: String,
    node: String,
    subscribers: Vec<Client>,
}

async fn run(args: &Args) -> Result<(), String> {
    let password = Secret::new(args.password.clone());
    let login = |jid: String, resource: &'static str| {
        let password = password.clone();
        async move {
            Client::connect(&args.xmpp, &jid, &password, resource)
                .await
                .map_err(|e| format!("{jid}: {e}"))
        }
    };
    let publisher = login(args.publisher.clone(), "bench").await?;

    // The baseline's node: created by the publisher (Prosody's default access model is open).
    let baseline_node = "bench";
    let create =
        Element::builder("iq", CLIENT)
            .attr(name("type"), "set")
            .attr(name("to"), args.baseline.as_str())
            .append(Element::builder("pubsub", pubsub::PUBSUB).append(
                Element::builder("create", pubsub::PUBSUB).attr(name("node"), baseline_node),
            ))
            .build();
    let reply = publisher
        .iq(create, WAIT)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(e) = pubsub::error_of(&reply) {
        return Err(format!(
            "cannot create the baseline node: {} {}",
            e.condition, e.text
        ));
    }

    let (app, token) = (args.grant.app(), args.grant.token());
    let mut targets = Vec::new();
    for (label, service, node, signed) in [
        (
            "pubsub-guard",
            args.guard.as_str(),
            args.guard_node.as_str(),
            true,
        ),
        (
            "Prosody mod_pubsub",
            args.baseline.as_str(),
            baseline_node,
            false,
        ),
    ] {
        let mut subscribers = Vec::new();
        for i in 1..=args.subscribers {
            let client = login(
                format!("sub{i}@localhost"),
                if signed { "guard" } else { "native" },
            )
            .await?;
            let mut request = pubsub::subscribe(service, node, client.jid());
            if signed {
                pubsub::sign(&mut request, client.jid(), &app.signer(Some(&token)));
            }
            let reply = client.iq(request, WAIT).await.map_err(|e| e.to_string())?;
            if let Some(e) = pubsub::error_of(&reply) {
                return Err(format!(
                    "{label}: subscribe refused: {} {}",
                    e.condition, e.text
                ));
            }
            subscribers.push(client);
        }
        targets.push(Target {
            label,
            service: service.to_owned(),
            node: node.to_owned(),
            subscribers,
        });
    }

    println!(
        "pubsub-bench: {} items per run, {} subscribers each ({} deliveries), {} measured runs per service after a warm-up",
        args.items,
        args.subscribers,
        args.items * args.subscribers,
        args.runs
    );
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for round in 0..=args.runs {
        for (t, target) in targets.iter_mut().enumerate() {
            let elapsed = one_run(&publisher, target, args.items, round).await?;
            if round > 0 {
                seconds[t].push(elapsed.as_secs_f64());
            }
        }
    }
    let mut rates = Vec::new();
    for (target, runs) in targets.iter().zip(&mut seconds) {
        runs.sort_by(f64::total_cmp);
        let median = runs[runs.len() / 2];
        let rate = args.items as f64 / median;
        println!(
            "{:<20} median {:>7.3} s  {:>8.0} items/s  {:>9.0} deliveries/s  (runs: {})",
            target.label,
            median,
            rate,
            rate * args.subscribers as f64,
            runs.iter()
                .map(|s| format!("{s:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        rates.push(rate);
    }
    println!(
        "ratio: pubsub-guard delivers at {:.2}x the throughput of Prosody's mod_pubsub on this machine",
        rates[0] / rates[1]
    );
    for target in targets {
        for client in target.subscribers {
            client.close().await;
        }
    }
    publisher.close().await;
    Ok(())
}

/// Publishes `items` items to the target and waits until every subscriber has them all.
async fn one_run(
    publisher: &Client,
    target: &mut Target,
    items: usize,
    round: usize,
) -> Result<Duration, String> {
    let payload =
        |i: usize| pubsub::location_entry(&format!("run {round} item {i}"), "37.7955 -122.3937");
    let started = Instant::now();
    let counting: Vec<_> = std::mem::take(&mut target.subscribers)
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut got = 0;
                let deadline = Instant::now() + RUN_LIMIT;
                while got < items {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match client.next_message(left).await {
                        Some(m) => {
                            got += pubsub::event_items(&m).map_or(0, |(_, list)| list.len());
                        }
                        None => break,
                    }
                }
                (client, got)
            })
        })
        .collect();
    for i in 0..items {
        let mut request = pubsub::publish(&target.service, &target.node, None, payload(i));
        request.set_attr(
            minidom::rxml::Namespace::NONE,
            name("id"),
            format!("b{round}-{i}"),
        );
        publisher.send(&request).await.map_err(|e| e.to_string())?;
    }
    let mut missing = 0;
    for task in counting {
        let (client, got) = task.await.map_err(|e| e.to_string())?;
        missing += items.saturating_sub(got);
        target.subscribers.push(client);
    }
    let elapsed = started.elapsed();
    if missing > 0 {
        return Err(format!(
            "{}: {missing} deliveries missing after {RUN_LIMIT:?}",
            target.label
        ));
    }
    Ok(elapsed)
}
