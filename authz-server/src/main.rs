//! `authz-server`: the OAuth 1.0a service provider and its admin CLI.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use authz_server::config::Config;
use authz_server::store::{self, RevokeBy, Store};
use authz_server::web::{self, AppState};
use clap::{Args, Parser, Subcommand};
use oauth_xmpp::{Scope, Secret};
use shared_store::db::Location;

/// The OAuth 1.0a authorization server: consumer keys, the token flow, the owner's
/// authorize page, and the token store the pubsub guard reads.
///
/// Settings come from the config file (`--config`), then the environment, then the command
/// line, each overriding the one before.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// A TOML config file (keys: database, listen, public_url, realm, window_secs,
    /// temporary_lifetime_secs, session_lifetime_secs, allow_plaintext, metrics_listen; and
    /// an [http] table:
    /// header_read_timeout_secs, body_read_timeout_secs, idle_timeout_secs, max_connections,
    /// max_connections_per_address, drain_secs).
    #[arg(long, env = "AUTHZ_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The store: a SQLite file, or a postgres:// URL [default: authz.sqlite].
    #[arg(long, env = "AUTHZ_DATABASE", global = true)]
    database: Option<Location>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP endpoints and the owner's pages.
    ///
    /// Connection limits (timeouts, caps per server and per client address, the drain on
    /// shutdown) are set in the config file's `[http]` table. SIGINT or SIGTERM stops it:
    /// no new connections, requests in progress finish (at most `drain_secs`), exit 0.
    Serve(ServeArgs),
    /// Owners: the accounts that grant access to their nodes.
    #[command(subcommand)]
    Owner(OwnerCommand),
    /// Consumers: the applications that ask for access.
    #[command(subcommand)]
    Consumer(ConsumerCommand),
    /// Access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Import consumers, owners, the guard's nodes and grants from JSON lines, one
    /// transaction per batch; idempotent, so a stopped import run again goes on.
    ///
    /// One record a line: {"kind":"consumer","key","secret","name"[,"jid","callback"]},
    /// {"kind":"owner","name","password_hash" (an Argon2 PHC string) or "password"},
    /// {"kind":"node","name","owner","publishers":[…][,"access","max_items","max_age_secs",
    /// "send_last_published_item"]}, {"kind":"grant","token","secret","consumer","owner",
    /// "scope"[,"expires_at"]}. What a record names must come before it (or be there). A
    /// record whose key exists with the same content is skipped; with other content it is
    /// refused. Progress goes to standard error, the summary to standard output.
    Import {
        /// Records per transaction.
        #[arg(long, default_value_t = authz_server::provision::DEFAULT_BATCH)]
        batch: usize,
        /// The JSON-lines file [default: standard input].
        file: Option<PathBuf>,
    },
    /// Export what `import` takes (consumers not revoked, owners, nodes, live grants), as
    /// JSON lines with their secrets and password hashes.
    Export {
        /// Write to this new file, created readable by its owner only [default: standard
        /// output].
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// The audit ledger: check its chain, read its entries.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print the change log (grants, revocations, expiries) the guard follows:
    /// `seq<TAB>kind<TAB>token id<TAB>consumer<TAB>owner<TAB>at`.
    Changes {
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: i64,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]; port 0 picks a free one (the line
    /// `listening on http://…` on standard output says which).
    #[arg(long, env = "AUTHZ_LISTEN")]
    listen: Option<SocketAddr>,
    /// Serve Prometheus metrics (`GET /metrics`) on this address [default: none]; port 0
    /// picks a free one (the line `metrics on http://…/metrics` on standard output says
    /// which).
    #[arg(long, env = "AUTHZ_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// The URL consumers use to reach this server (when behind a proxy), e.g.
    /// `https://auth.example.com`.
    #[arg(long, env = "AUTHZ_PUBLIC_URL")]
    public_url: Option<String>,
    /// Timestamp window in seconds either way [default: 300].
    #[arg(long, env = "AUTHZ_WINDOW")]
    window: Option<u64>,
    /// Lifetime of temporary credentials in seconds [default: 600].
    #[arg(long, env = "AUTHZ_TEMPORARY_LIFETIME")]
    temporary_lifetime: Option<u64>,
    /// Refuse PLAINTEXT signatures.
    #[arg(long)]
    no_plaintext: bool,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Read the whole ledger and check that each entry chains to the one before; prints the
    /// head (`SEQ:HASH`) to keep elsewhere. Exits 1 naming the first broken entry.
    Verify {
        /// A head printed by an earlier verify (`SEQ:HASH`): the entry there must still
        /// have that hash (a ledger rewritten up to it, hashes and all, does not).
        #[arg(long)]
        head: Option<String>,
    },
    /// Print entries, oldest first:
    /// `seq<TAB>time<TAB>kind<TAB>actor<TAB>owner<TAB>consumer<TAB>token id<TAB>node<TAB>detail`.
    Show {
        /// Only this access token's (by id).
        #[arg(long)]
        token: Option<i64>,
        /// Only this owner's.
        #[arg(long)]
        owner: Option<String>,
        /// Only this consumer's.
        #[arg(long)]
        consumer: Option<String>,
        /// Only this kind: granted, narrowed, denied, revoked, expired, consumer-revoked,
        /// subscriptions-ended, refused.
        #[arg(long)]
        kind: Option<String>,
        /// Only entries after this one.
        #[arg(long, default_value_t = 0)]
        since: i64,
    },
}

#[derive(Debug, Subcommand)]
enum OwnerCommand {
    /// Add an owner; the password is read from the first line of standard input.
    Add {
        /// Account name (a-z A-Z 0-9 - _ .).
        name: String,
    },
    /// List owners.
    List,
    /// Remove an owner, revoking every token she granted.
    Remove {
        /// Account name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConsumerCommand {
    /// Register an application; prints its key and secret (the secret is shown only now).
    Add {
        /// The name owners see on the authorize page.
        #[arg(long)]
        name: String,
        /// Its XMPP address.
        #[arg(long)]
        jid: Option<String>,
        /// Its callback URL.
        #[arg(long)]
        callback: Option<String>,
    },
    /// List applications.
    List,
    /// Show one application.
    Show {
        /// Consumer key.
        key: String,
    },
    /// Revoke an application and every token it holds.
    Revoke {
        /// Consumer key.
        key: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// List access tokens.
    List {
        /// Only this owner's.
        #[arg(long)]
        owner: Option<String>,
        /// Only this consumer's.
        #[arg(long)]
        consumer: Option<String>,
    },
    /// Revoke access tokens: one by id, or all of an owner or of a consumer.
    Revoke {
        /// The token's id (from `token list`).
        #[arg(long, conflicts_with_all = ["owner", "consumer"])]
        id: Option<i64>,
        /// Every token of this owner.
        #[arg(long, conflicts_with = "consumer")]
        owner: Option<String>,
        /// Every token of this consumer.
        #[arg(long)]
        consumer: Option<String>,
    },
    /// Show one grant's account: its scope and state, what it delivered to each node, and
    /// its ledger entries.
    Ledger {
        /// The token's id (from `token list`).
        id: i64,
    },
    /// Issue an access token without the web flow (service-to-service setups); prints the
    /// token and its secret.
    Grant {
        /// The owner granting access.
        #[arg(long)]
        owner: String,
        /// The consumer key.
        #[arg(long)]
        consumer: String,
        /// Nodes: space-separated names, prefixes ending in `/`, or `*`.
        #[arg(long)]
        scope: String,
        /// Expire after this many seconds.
        #[arg(long)]
        expires_in: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("authz-server: {message}");
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
    let open = |config: &Config| Store::open(&config.database).map_err(|e| e.to_string());
    let now = store::now();
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| {
        // A closed stdout (e.g. `| head`) is not an error worth reporting.
        let _ = writeln!(out, "{line}");
    };
    match cli.command {
        Command::Serve(args) => {
            if let Some(listen) = args.listen {
                config.listen = listen;
            }
            if args.metrics_listen.is_some() {
                config.metrics_listen = args.metrics_listen;
            }
            if args.public_url.is_some() {
                config.public_url = args.public_url;
            }
            if let Some(w) = args.window {
                config.window_secs = w;
            }
            if let Some(t) = args.temporary_lifetime {
                config.temporary_lifetime_secs = t;
            }
            if args.no_plaintext {
                config.allow_plaintext = false;
            }
            serve(config)
        }
        Command::Owner(cmd) => {
            let store = open(&config)?;
            match cmd {
                OwnerCommand::Add { name } => {
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line).map_err(|e| {
                        format!("cannot read the password from standard input: {e}")
                    })?;
                    let password = Secret::new(line.trim_end_matches(['\r', '\n']));
                    authz_server::password::add_owner(&store, &name, &password, now)
                        .map_err(|e| e.to_string())?;
                    say(format!("owner {name} added"));
                }
                OwnerCommand::List => {
                    for o in store.owners().map_err(|e| e.to_string())? {
                        say(format!(
                            "{}\tlive tokens: {}\tcreated: {}",
                            o.name, o.live_tokens, o.created_at
                        ));
                    }
                }
                OwnerCommand::Remove { name } => {
                    let n = store.remove_owner(&name, now).map_err(|e| e.to_string())?;
                    say(format!("owner {name} removed; {n} token(s) revoked"));
                }
            }
            Ok(())
        }
        Command::Consumer(cmd) => {
            let store = open(&config)?;
            match cmd {
                ConsumerCommand::Add {
                    name,
                    jid,
                    callback,
                } => {
                    if let Some(callback) = &callback {
                        authz_server::web::check_consumer_callback(callback)?;
                    }
                    let (key, secret) = store
                        .add_consumer(&name, jid.as_deref(), callback.as_deref(), now)
                        .map_err(|e| e.to_string())?;
                    say(format!("consumer_key={key}"));
                    say(format!("consumer_secret={}", secret.expose()));
                }
                ConsumerCommand::List => {
                    for c in store.consumers().map_err(|e| e.to_string())? {
                        let status = if c.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        };
                        say(format!("{}\t{}\t{status}", c.key, c.name));
                    }
                }
                ConsumerCommand::Show { key } => {
                    let c = store
                        .consumer(&key)
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("no consumer with key {key}"))?;
                    say(format!("key: {}", c.key));
                    say(format!("name: {}", c.name));
                    say(format!("jid: {}", c.jid.as_deref().unwrap_or("-")));
                    say(format!(
                        "callback: {}",
                        c.callback.as_deref().unwrap_or("-")
                    ));
                    say(format!("created: {}", c.created_at));
                    say(format!(
                        "revoked: {}",
                        c.revoked_at.map_or("no".to_owned(), |at| at.to_string())
                    ));
                }
                ConsumerCommand::Revoke { key } => {
                    let n = store
                        .revoke_consumer(&key, now)
                        .map_err(|e| e.to_string())?;
                    say(format!("consumer {key} revoked; {n} token(s) revoked"));
                }
            }
            Ok(())
        }
        Command::Import { batch, file } => {
            let input: Box<dyn BufRead> = match file.as_deref() {
                None => Box::new(std::io::stdin().lock()),
                Some(path) if path.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
                Some(path) => Box::new(std::io::BufReader::new(
                    std::fs::File::open(path)
                        .map_err(|e| format!("cannot open {}: {e}", path.display()))?,
                )),
            };
            let mut shown = std::time::Instant::now();
            let done = authz_server::provision::import(&config.database, input, batch, now, |p| {
                if shown.elapsed() >= std::time::Duration::from_secs(1) {
                    shown = std::time::Instant::now();
                    eprintln!(
                        "import: {} lines, {} written, {} unchanged, {:.1} s",
                        p.lines,
                        p.tally.written(),
                        p.tally.records() - p.tally.written(),
                        p.elapsed.as_secs_f64()
                    );
                }
            })?;
            say(format!(
                "imported {} lines in {:.1} s: {}",
                done.lines,
                done.elapsed.as_secs_f64(),
                authz_server::provision::describe(&done.tally)
            ));
            Ok(())
        }
        Command::Export { output } => {
            let counts = match &output {
                None => authz_server::provision::export(
                    &config.database,
                    std::io::BufWriter::new(std::io::stdout().lock()),
                    now,
                )?,
                Some(path) => {
                    let file = private_new_file(path)?;
                    authz_server::provision::export(
                        &config.database,
                        std::io::BufWriter::new(file),
                        now,
                    )?
                }
            };
            eprintln!(
                "exported {} consumers, {} owners, {} nodes, {} grants",
                counts[0], counts[1], counts[2], counts[3]
            );
            Ok(())
        }
        Command::Audit(cmd) => {
            let store = open(&config)?;
            match cmd {
                AuditCommand::Verify { head } => {
                    let head = head
                        .as_deref()
                        .map(authz_server::admin::parse_head)
                        .transpose()?;
                    authz_server::admin::verify(&store, head, &mut say)
                }
                AuditCommand::Show {
                    token,
                    owner,
                    consumer,
                    kind,
                    since,
                } => {
                    let filter = shared_store::authz::ledger::LedgerFilter {
                        token_id: token,
                        owner,
                        consumer_key: consumer,
                        kind: kind
                            .as_deref()
                            .map(authz_server::admin::parse_kind)
                            .transpose()?,
                    };
                    authz_server::admin::show(&store, &filter, since, &mut say)
                }
            }
        }
        Command::Changes { since } => {
            let store = open(&config)?;
            for c in store
                .changes_since(since, usize::MAX >> 1)
                .map_err(|e| e.to_string())?
            {
                say(format!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    c.seq,
                    c.kind.as_str(),
                    c.token_id.map_or("-".to_owned(), |i| i.to_string()),
                    c.consumer_key.as_deref().unwrap_or("-"),
                    c.owner.as_deref().unwrap_or("-"),
                    c.at
                ));
            }
            Ok(())
        }
        Command::Token(cmd) => {
            let store = open(&config)?;
            match cmd {
                TokenCommand::List { owner, consumer } => {
                    for t in store
                        .access_tokens(owner.as_deref(), consumer.as_deref())
                        .map_err(|e| e.to_string())?
                    {
                        let status = match (t.revoked_at, t.expires_at) {
                            (Some(_), _) => "revoked",
                            (None, Some(at)) if at <= now => "expired",
                            _ => "live",
                        };
                        say(format!(
                            "{}\t{}\towner={}\tconsumer={}\tscope={}\t{status}",
                            t.id, t.token, t.owner, t.consumer_key, t.scope
                        ));
                    }
                }
                TokenCommand::Revoke {
                    id,
                    owner,
                    consumer,
                } => {
                    let by = match (id, owner, consumer) {
                        (Some(id), _, _) => RevokeBy::Id(id),
                        (_, Some(owner), _) => RevokeBy::Owner(owner),
                        (_, _, Some(consumer)) => RevokeBy::Consumer(consumer),
                        _ => return Err("say which: --id, --owner or --consumer".into()),
                    };
                    let n = store.revoke_tokens(&by, now).map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Err("no live token matched".into());
                    }
                    say(format!("{n} token(s) revoked"));
                }
                TokenCommand::Ledger { id } => {
                    authz_server::admin::grant_ledger(&store, id, now, &mut say)?;
                }
                TokenCommand::Grant {
                    owner,
                    consumer,
                    scope,
                    expires_in,
                } => {
                    let grant = store
                        .grant(
                            &owner,
                            &consumer,
                            &Scope::parse(&scope),
                            expires_in.map(|s| now.saturating_add(s)),
                            now,
                        )
                        .map_err(|e| e.to_string())?;
                    say(format!("id={}", grant.id));
                    say(format!("oauth_token={}", grant.token));
                    say(format!("oauth_token_secret={}", grant.secret.expose()));
                }
            }
            Ok(())
        }
    }
}

/// Creates `path`, which must not exist, readable and writable by its owner only.
fn private_new_file(path: &std::path::Path) -> Result<std::fs::File, String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// `serve`: the HTTP endpoints on `config.listen`, within `config.http` (timeouts,
/// connection caps), until SIGINT or SIGTERM; then it stops accepting, lets the requests in
/// progress finish for at most `http.drain_secs`, and returns.
fn serve(config: Config) -> Result<(), String> {
    config.check()?;
    authz_server::logging::init("AUTHZ_LOG");
    let metrics = authz_server::metrics::Metrics::default();
    let mut db = shared_store::db::Database::open(&config.database).map_err(|e| e.to_string())?;
    if config.metrics_listen.is_some() {
        db = db.with_observer(metrics.store_observer());
    }
    let store = Arc::new(Store::on(Arc::new(db)).map_err(|e| e.to_string())?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let metrics_listener = match config.metrics_listen {
            Some(at) => Some(telemetry::bind(at).await.map_err(|e| e.to_string())?),
            None => None,
        };
        println!("listening on http://{addr}");
        tracing::info!(%addr, database = %config.database, "serving");
        let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_server = match metrics_listener {
            Some(listener) => {
                let at = listener.local_addr().map_err(|e| e.to_string())?;
                let _ = writeln!(std::io::stdout(), "metrics on http://{at}/metrics");
                tracing::info!(addr = %at, "serving metrics");
                let mut registry = telemetry::Registry::default();
                metrics.register(&mut registry);
                let stopped = async {
                    let _ = metrics_stopped.await;
                };
                Some(tokio::spawn(telemetry::serve(
                    listener,
                    Arc::new(registry),
                    stopped,
                )))
            }
            None => None,
        };
        let _ = std::io::stdout().flush();
        // Log token expiries into the change log once a second, for the guard.
        let sweeper = Arc::clone(&store);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let store = Arc::clone(&sweeper);
                let swept =
                    tokio::task::spawn_blocking(move || store.log_expiries(store::now())).await;
                if let Ok(Err(e)) = swept {
                    tracing::warn!(error = %e, "logging expiries failed");
                }
            }
        });
        let state = AppState::new(store, config).with_metrics(metrics);
        web::run(listener, state, shutdown).await;
        drop(metrics_stop);
        if let Some(server) = metrics_server {
            let _ = server.await;
        }
        Ok(())
    })
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed now, before the
/// server says it listens, so an early SIGTERM also drains instead of killing.
fn shutdown_signal() -> Result<impl Future<Output = ()>, String> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let watch = |kind, name| signal(kind).map_err(|e| format!("cannot watch for {name}: {e}"));
        let mut interrupt = watch(SignalKind::interrupt(), "SIGINT")?;
        let mut terminate = watch(SignalKind::terminate(), "SIGTERM")?;
        Ok(async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::info!("{name}: shutting down");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
