//! `pubsub-guard`: the OAuth-gated pubsub component and its admin CLI.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use oauth_xmpp::Secret;
use pubsub_guard::Config;
use pubsub_guard::config::{DEFAULT_MAX_AGE_SECS, DEFAULT_MAX_ITEMS};
use pubsub_guard::storage::{Access, DbStorage, Node, Storage, SubscriptionFilter};
use shared_store::db::Location;

/// The pubsub service for protected per-user nodes: an XMPP external component (XEP-0114)
/// that lets a consumer subscribe only with an OAuth token the node's owner granted
/// (XEP-0235), and ends the subscription when the token is revoked.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// The TOML config file (component, secret, server, database, instance, window_secs,
    /// allow_plaintext, accept_bare_jid_signatures, max_stanza_bytes, max_depth, keepalive_secs,
    /// reconnect_max_secs, metrics_listen, [[template]]).
    #[arg(long, env = "GUARD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The database shared with authz-server: a SQLite file or a `postgres://` URL (overrides
    /// the config's `database`) [default: authz.sqlite].
    #[arg(long, env = "GUARD_DATABASE", global = true)]
    database: Option<Location>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect to the XMPP server and serve until interrupted (SIGINT or SIGTERM).
    /// The component secret comes from the config or GUARD_SECRET; Prometheus metrics are
    /// served on the config's metrics_listen (or GUARD_METRICS_LISTEN), if any.
    Run,
    /// Nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Subscriptions.
    #[command(subcommand)]
    Subscription(SubscriptionCommand),
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Create a node: protected by OAuth (the default, needs --owner) or open.
    Create {
        /// The node name, e.g. /location/alice.
        name: String,
        /// The owner (an authz-server account) whose grants open it.
        #[arg(long)]
        owner: Option<String>,
        /// Anyone may subscribe; no token needed.
        #[arg(long)]
        open: bool,
        /// A bare JID allowed to publish (repeat for several).
        #[arg(long = "publisher", required = true)]
        publishers: Vec<String>,
        /// How many items it keeps.
        #[arg(long, default_value_t = DEFAULT_MAX_ITEMS)]
        max_items: u32,
        /// How long it keeps an item: 30d, 12h, 90m, 45s, 2w, or none [default: 30d].
        #[arg(long, value_parser = pubsub_guard::config::parse_age)]
        max_age: Option<u64>,
        /// Whether a new subscriber gets the last item: on_sub or never [default: on_sub
        /// for a node with an owner, never for an open one].
        #[arg(long, value_parser = ["on_sub", "never"])]
        send_last_published_item: Option<String>,
    },
    /// List the nodes: `name<TAB>access<TAB>owner<TAB>max_items<TAB>max_age<TAB>publishers`.
    List,
    /// Delete a node with its items and subscriptions (subscribers are not notified).
    Delete {
        /// The node name.
        name: String,
    },
}

/// Which subscriptions (every filter given must match).
#[derive(Debug, clap::Args)]
struct SubscriptionFilterArgs {
    /// Subscriptions to this node.
    #[arg(long)]
    node: Option<String>,
    /// Subscriptions made with this consumer's tokens.
    #[arg(long)]
    consumer: Option<String>,
    /// Subscriptions to this owner's nodes.
    #[arg(long)]
    owner: Option<String>,
}

impl SubscriptionFilterArgs {
    fn filter(self) -> SubscriptionFilter {
        SubscriptionFilter {
            node: self.node,
            consumer_key: self.consumer,
            owner: self.owner,
        }
    }
}

#[derive(Debug, Subcommand)]
enum SubscriptionCommand {
    /// List subscriptions, by node and JID:
    /// `node<TAB>jid<TAB>subid<TAB>consumer<TAB>created_at`.
    List(SubscriptionFilterArgs),
    /// End subscriptions (at least one filter): the running guard that holds them ends them
    /// and sends each subscriber `subscription='none'` (through the change log, so any guard
    /// of a fleet does), and the audit ledger records it. The grants stay: an application may
    /// subscribe again (revoke its token to stop that).
    End(SubscriptionFilterArgs),
}

/// How many subscriptions `subscription list` reads at a time.
const LIST_PAGE: usize = 1000;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("pubsub-guard: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(db) = cli.database {
        config.database = db;
    }
    let secret_in_file = config.secret.is_some();
    if let Ok(secret) = std::env::var("GUARD_SECRET") {
        config.secret = Some(Secret::new(secret));
    }
    if let Ok(addr) = std::env::var("GUARD_METRICS_LISTEN") {
        config.metrics_listen = Some(addr.parse().map_err(|e| {
            format!(
                "GUARD_METRICS_LISTEN={addr:?} is not a socket address (like 127.0.0.1:9464): {e}"
            )
        })?);
    }
    let storage = || DbStorage::open(&config.database).map_err(|e| e.to_string());
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| {
        // A closed stdout (e.g. `| head`) is not an error worth reporting.
        let _ = writeln!(out, "{line}");
    };
    match cli.command {
        Command::Run => {
            let exposed = cli
                .config
                .as_deref()
                .filter(|_| secret_in_file)
                .and_then(readable_by_others);
            serve(config, exposed)
        }
        Command::Node(NodeCommand::Create {
            name,
            owner,
            open,
            publishers,
            max_items,
            max_age,
            send_last_published_item,
        }) => {
            let access = if open { Access::Open } else { Access::OAuth };
            if access == Access::OAuth && owner.is_none() {
                return Err("a protected node needs --owner (or pass --open)".into());
            }
            if max_items == 0 {
                return Err("--max-items must be at least 1".into());
            }
            let publishers = publishers
                .iter()
                .map(|p| {
                    pubsub_guard::jid::normalize(p)
                        .map(|j| pubsub_guard::jid::bare(&j).to_owned())
                        .map_err(|e| format!("--publisher {p:?} is not a JID: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            pubsub_guard::storage::check_node_name(&name)?;
            let node = Node {
                name,
                access,
                publishers,
                max_items,
                max_age_secs: max_age.unwrap_or(DEFAULT_MAX_AGE_SECS),
                send_last_published_item: send_last_published_item
                    .map_or(owner.is_some(), |s| s == "on_sub"),
                owner,
                created_at: shared_store::authz::now(),
            };
            storage()?.create_node(&node).map_err(|e| e.to_string())?;
            say(format!("created {} ({})", node.name, node.access.as_str()));
            Ok(())
        }
        Command::Node(NodeCommand::List) => {
            for n in storage()?.nodes().map_err(|e| e.to_string())? {
                say(format!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    n.name,
                    n.access.as_str(),
                    n.owner.as_deref().unwrap_or("-"),
                    n.max_items,
                    pubsub_guard::config::format_age(n.max_age_secs),
                    n.publishers.join(",")
                ));
            }
            Ok(())
        }
        Command::Node(NodeCommand::Delete { name }) => {
            match storage()?.delete_node(&name).map_err(|e| e.to_string())? {
                Some(subscriptions) => {
                    say(format!(
                        "deleted {name} ({} subscriptions removed)",
                        subscriptions.len()
                    ));
                    Ok(())
                }
                None => Err(format!("there is no node {name:?}")),
            }
        }
        Command::Subscription(SubscriptionCommand::List(args)) => {
            let (storage, filter) = (storage()?, args.filter());
            let mut after = None;
            loop {
                let page = storage
                    .matching_subscriptions(&filter, after.as_ref(), LIST_PAGE)
                    .map_err(|e| e.to_string())?;
                for s in &page {
                    say(format!(
                        "{}\t{}\t{}\t{}\t{}",
                        s.node,
                        s.jid,
                        s.subid,
                        s.consumer_key.as_deref().unwrap_or("-"),
                        s.created_at
                    ));
                }
                if page.len() < LIST_PAGE {
                    return Ok(());
                }
                after = page.into_iter().next_back();
            }
        }
        Command::Subscription(SubscriptionCommand::End(args)) => {
            let filter = args.filter();
            if filter.is_empty() {
                return Err("say whose: --node, --consumer and/or --owner".into());
            }
            let count = storage()?
                .count_matching(&filter)
                .map_err(|e| e.to_string())?;
            if count == 0 {
                return Err("no subscription matched".into());
            }
            let store = shared_store::Store::open(&config.database).map_err(|e| e.to_string())?;
            let seq = store
                .end_subscriptions(
                    filter.node.as_deref(),
                    filter.consumer_key.as_deref(),
                    filter.owner.as_deref(),
                    usize::try_from(count).unwrap_or(usize::MAX),
                    shared_store::authz::now(),
                )
                .map_err(|e| e.to_string())?;
            say(format!(
                "{count} subscription(s) to end (change {seq}): the running guard ends them and tells each subscriber"
            ));
            Ok(())
        }
    }
}

/// The file, if others than its owner may read it (it holds the component secret).
fn readable_by_others(path: &std::path::Path) -> Option<PathBuf> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (mode & 0o044 != 0).then(|| path.to_path_buf())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

fn serve(config: Config, exposed_secret: Option<PathBuf>) -> Result<(), String> {
    shared_store::logging::init("GUARD_LOG");
    if let Some(path) = exposed_secret {
        tracing::warn!(
            config = %path.display(),
            "the config file holds the component secret and others can read it: chmod 600 it, or pass the secret in GUARD_SECRET"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let shutdown = async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
        };
        pubsub_guard::component::run(config, shutdown)
            .await
            .map_err(|e| e.to_string())
    })
}
