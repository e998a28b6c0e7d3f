//! `consumer`: the reference consumer. Logs in to the XMPP server, subscribes to a
//! protected node with a signed `<oauth/>` (XEP-0235), and prints every item pushed to it,
//! one line of XML per item, until it has `--count` items, the subscription ends (the owner
//! revoked the token) or Ctrl-C (or SIGTERM).
//!
//! With `--state FILE` it also resumes: it keeps, per node, the archive id of the last item
//! it printed (the XEP-0359 stanza id the service puts on each notification), and on each
//! connection, once subscribed, it reads the node's archive after that id (XEP-0313 on the
//! node, XEP-0442) page by page and prints what it missed before going on with live items.
//! Live items that arrive meanwhile wait until the archive is read; an archive id printed
//! once is not printed again, so each item comes out once and in order. When the node
//! dropped items before they could be read (its retention), the service says so with a
//! `<gap/>`; the consumer reports it and reads the node from its oldest item.
//!
//! When the connection drops it logs in again by itself, 0.5 s after the drop, then waiting
//! twice as long after each failed attempt up to 10 s, `--reconnect-attempts` times in a row
//! at most (30 by default: about four and a half minutes).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use demo::flow::Grant;
use demo::pubsub::{self, ArchiveQuery, ArchivedItem};
use demo::resume::{RecentIds, ResumeState};
use demo::xmpp::{Account, Client, ClientError, xml};
use minidom::Element;

/// Subscribe to a protected pubsub node with an OAuth access token and print its items.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    account: Account,
    /// The resource to bind.
    #[arg(long, default_value = "consumer")]
    resource: String,
    /// The node.
    #[arg(long)]
    node: String,
    #[command(flatten)]
    grant: Grant,
    /// Stop after this many items.
    #[arg(long)]
    count: Option<usize>,
    /// Keep, per node, the archive id of the last item printed in this file (created
    /// readable by its owner only), and on each connection print first what was published
    /// since. Without it, only the items pushed while connected are printed.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Items per page when reading the node's archive.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..))]
    page_size: u32,
    /// How many times in a row to try to log in again after the connection drops (0: exit
    /// instead). The first connection is not retried.
    #[arg(long, default_value_t = 30)]
    reconnect_attempts: u32,
    /// Sign each archive query with the access token too, instead of relying on the
    /// subscription alone to pass the guard's gate.
    #[arg(long)]
    sign_queries: bool,
}

/// How long the subscribe and each archive page may take.
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// The wait before the first attempt to reconnect, doubled after each failure...
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// ...up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How many times one catch-up reads the archive again from the start (after a gap or an
/// unknown id) before it gives up and goes on with live items.
const MAX_RESTARTS: u32 = 3;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut consumer = match Consumer::new(&args) {
        Ok(consumer) => consumer,
        Err(message) => {
            eprintln!("consumer: {message}");
            return ExitCode::FAILURE;
        }
    };
    let mut connection = None;
    let outcome = tokio::select! {
        outcome = consumer.run(&mut connection) => outcome,
        () = stop_signal() => Ok(()),
    };
    if let Some(client) = connection.take() {
        client.close().await;
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("consumer: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// How a connection ended.
enum Ended {
    /// `--count` items were printed, or the subscription ended: stop.
    Done,
    /// The connection failed or dropped, for this reason: log in again.
    Lost(String),
}

/// What the consumer keeps across connections.
struct Consumer<'a> {
    args: &'a Args,
    state: Option<ResumeState>,
    printed_ids: RecentIds,
    printed: usize,
}

impl<'a> Consumer<'a> {
    fn new(args: &'a Args) -> Result<Self, String> {
        let state = match &args.state {
            Some(path) => Some(ResumeState::load(path).map_err(|e| e.to_string())?),
            None => None,
        };
        let mut printed_ids = RecentIds::new(RecentIds::DEFAULT_CAPACITY);
        // The service may send the last item again after a subscribe.
        if let Some(id) = state.as_ref().and_then(|s| s.position(&args.node)) {
            printed_ids.insert(id);
        }
        Ok(Self {
            args,
            state,
            printed_ids,
            printed: 0,
        })
    }

    /// Connects, and connects again after each drop, until done. The current client is kept
    /// in `connection`, so that the caller can close it when it stops this future.
    async fn run(&mut self, connection: &mut Option<Client>) -> Result<(), String> {
        let mut failures = 0;
        let mut backoff = FIRST_BACKOFF;
        let mut first = true;
        loop {
            let ended = match self.connect().await {
                Ok(client) => {
                    failures = 0;
                    backoff = FIRST_BACKOFF;
                    let client = connection.insert(client);
                    self.session(client).await?
                }
                Err(Retry::Never(message)) => return Err(message),
                Err(Retry::Later(message)) if first => return Err(message),
                Err(Retry::Later(message)) => Ended::Lost(message),
            };
            first = false;
            let reason = match ended {
                Ended::Done => return Ok(()),
                Ended::Lost(reason) => reason,
            };
            if let Some(client) = connection.take() {
                client.close().await;
            }
            failures += 1;
            if failures > self.args.reconnect_attempts {
                return Err(format!(
                    "{reason}; gave up after {} attempts to reconnect",
                    self.args.reconnect_attempts
                ));
            }
            eprintln!(
                "consumer: {reason}; reconnecting in {:.1} s (attempt {failures} of {})",
                backoff.as_secs_f64(),
                self.args.reconnect_attempts
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Logs in and subscribes.
    async fn connect(&self) -> Result<Client, Retry> {
        let args = self.args;
        let client = args
            .account
            .connect(&args.resource)
            .await
            .map_err(|e| match e {
                ClientError::Auth { .. } => Retry::Never(e.to_string()),
                e => Retry::Later(e.to_string()),
            })?;
        let mut request = pubsub::subscribe(&args.account.service, &args.node, client.bare());
        self.sign(&mut request, &client);
        let reply = client
            .iq(request, ANSWER_WAIT)
            .await
            .map_err(|e| Retry::Later(e.to_string()))?;
        if let Some(error) = pubsub::error_of(&reply) {
            let message = format!(
                "subscribe refused: {} {}: {}",
                error.condition,
                error.app.unwrap_or_default(),
                error.text
            );
            // A refusal of the token or the request stays; the service being away does not.
            return Err(match error.kind.as_str() {
                "auth" | "modify" => Retry::Never(message),
                _ => Retry::Later(message),
            });
        }
        eprintln!("consumer: subscribed to {} as {}", args.node, client.jid());
        Ok(client)
    }

    fn sign(&self, request: &mut Element, client: &Client) {
        let (app, token) = (self.args.grant.app(), self.args.grant.token());
        pubsub::sign(request, client.jid(), &app.signer(Some(&token)));
    }

    /// One connection: what was missed (with `--state`), then live items.
    async fn session(&mut self, client: &mut Client) -> Result<Ended, String> {
        let mut held = Vec::new();
        let after = self
            .state
            .as_ref()
            .map(|s| s.position(&self.args.node).map(str::to_owned));
        match after {
            None => {}
            Some(None) => eprintln!(
                "consumer: no earlier position for {}; printing from now on",
                self.args.node
            ),
            Some(Some(after)) => {
                if let Some(ended) = self.catch_up(client, &after, &mut held).await? {
                    return Ok(ended);
                }
            }
        }
        for message in held {
            if let Some(ended) = self.live(&message)? {
                return Ok(ended);
            }
        }
        loop {
            match client.wait_message(Duration::from_secs(3600)).await {
                Ok(Some(message)) => {
                    if let Some(ended) = self.live(&message)? {
                        return Ok(ended);
                    }
                }
                Ok(None) => {}
                Err(e) => return lost(e),
            }
        }
    }

    /// Prints the items of the node's archive after `after`, page by page, and keeps the
    /// other messages that arrive meanwhile in `held`, in order. `Some` when the consumer
    /// is done or the connection dropped.
    async fn catch_up(
        &mut self,
        client: &mut Client,
        after: &str,
        held: &mut Vec<Element>,
    ) -> Result<Option<Ended>, String> {
        let (service, node) = (&self.args.account.service, &self.args.node);
        let mut after_id = Some(after.to_owned());
        let mut page_after: Option<String> = None;
        let (mut recovered, mut pages, mut restarts) = (0, 0, 0);
        let mut queryid = new_queryid();
        loop {
            let query = ArchiveQuery {
                node,
                queryid: &queryid,
                after_id: after_id.as_deref(),
                page_after: page_after.as_deref(),
                max: Some(self.args.page_size),
            };
            let mut request = pubsub::archive_query(service, &query);
            if self.args.sign_queries {
                self.sign(&mut request, client);
            }
            let reply = match client.iq(request, ANSWER_WAIT).await {
                Ok(reply) => reply,
                Err(e) => return lost(e).map(Some),
            };
            // The service sends a page's results before its answer: they are all here.
            let mut page = Vec::new();
            loop {
                match client.try_message() {
                    Ok(Some(message)) => match self.result_of(&message, &queryid) {
                        Some(item) => page.push(item),
                        None => held.push(message),
                    },
                    Ok(None) => break,
                    Err(e) => return lost(e).map(Some),
                }
            }
            if pubsub::error_of(&reply).is_some() {
                if restarts == MAX_RESTARTS || (after_id.is_none() && page_after.is_none()) {
                    eprintln!(
                        "consumer: the archive of {node} cannot be read: {}; printing from now on",
                        describe_error(&reply)
                    );
                    return Ok(None);
                }
                match pubsub::gap_of(&reply) {
                    Some(gap) => eprintln!(
                        "consumer: gap: {} items (positions {} to {}) were dropped by the \
                         node's retention before they could be recovered; resuming from the \
                         oldest item held",
                        gap.count, gap.first, gap.last
                    ),
                    None => eprintln!(
                        "consumer: the archive query after {} was refused: {}; reading the \
                         archive from the start (items printed before may come again)",
                        page_after
                            .as_deref()
                            .or(after_id.as_deref())
                            .unwrap_or_default(),
                        describe_error(&reply)
                    ),
                }
                restarts += 1;
                after_id = None;
                page_after = None;
                queryid = new_queryid();
                continue;
            }
            pages += 1;
            let mut last = None;
            for item in &page {
                last = Some(item.archive_id.as_str());
                if self.print(Some(&item.archive_id), &[item.payload.as_ref()]) {
                    recovered += 1;
                }
                if self.count_reached() {
                    break;
                }
            }
            if let Some(last) = last {
                self.save(last)?;
            }
            let fin = pubsub::fin_of(&reply);
            let ended_meanwhile = held.iter().any(|m| self.ends_subscription(m));
            let next = fin.and_then(|f| if f.complete { None } else { f.last });
            match next {
                Some(next) if !page.is_empty() && !self.count_reached() && !ended_meanwhile => {
                    page_after = Some(next);
                }
                _ => break,
            }
        }
        if recovered == 0 {
            eprintln!("consumer: nothing to recover after {after}");
        } else {
            eprintln!("consumer: recovered {recovered} items in {pages} pages after {after}");
        }
        Ok(self.count_reached().then_some(Ended::Done))
    }

    /// The item of an archive result from the service for this node and query.
    fn result_of(&self, message: &Element, queryid: &str) -> Option<ArchivedItem> {
        if message.attr("from") != Some(self.args.account.service.as_str()) {
            return None;
        }
        pubsub::archive_result(message)
            .filter(|item| item.queryid == queryid && item.node == self.args.node)
    }

    /// Handles a message outside a catch-up: prints the items of a notification from the
    /// service for this node (unless printed already), stops when the subscription ends.
    fn live(&mut self, message: &Element) -> Result<Option<Ended>, String> {
        let service = self.args.account.service.as_str();
        if message.attr("from") != Some(service) {
            return Ok(None);
        }
        if self.ends_subscription(message) {
            eprintln!(
                "consumer: the subscription to {} ended (access revoked or expired)",
                self.args.node
            );
            return Ok(Some(Ended::Done));
        }
        let Some((node, items)) = pubsub::event_items(message) else {
            return Ok(None);
        };
        if node != self.args.node {
            return Ok(None);
        }
        let id = pubsub::archive_id(message, service);
        let payloads: Vec<_> = items.iter().map(|(_, p)| p.as_ref()).collect();
        if self.print(id.as_deref(), &payloads)
            && let Some(id) = &id
        {
            self.save(id)?;
        }
        Ok(self.count_reached().then_some(Ended::Done))
    }

    fn ends_subscription(&self, message: &Element) -> bool {
        message.attr("from") == Some(self.args.account.service.as_str())
            && pubsub::subscription_of(message)
                .is_some_and(|(node, state)| node == self.args.node && state == "none")
    }

    /// Prints the payloads of one archived or notified item, one line of XML each, unless
    /// its archive id was printed already. Returns whether it printed them.
    fn print(&mut self, archive_id: Option<&str>, payloads: &[Option<&Element>]) -> bool {
        if let Some(id) = archive_id
            && !self.printed_ids.insert(id)
        {
            return false;
        }
        for payload in payloads {
            if self.count_reached() {
                break;
            }
            println!("{}", payload.map(xml).unwrap_or_default());
            self.printed += 1;
        }
        true
    }

    fn count_reached(&self) -> bool {
        self.args.count.is_some_and(|n| self.printed >= n)
    }

    /// Records `id` as the last item printed, with `--state`.
    fn save(&mut self, id: &str) -> Result<(), String> {
        match &mut self.state {
            Some(state) => state
                .set(&self.args.node, id)
                .map_err(|e| format!("cannot keep the position: {e}")),
            None => Ok(()),
        }
    }
}

/// Whether a failed login or subscribe is worth trying again.
enum Retry {
    /// No: the server refused the account, or the service the token or the request.
    Never(String),
    /// Yes: the server or the service may be back in a moment.
    Later(String),
}

/// A lost connection: log in again, unless another session took over the resource (its
/// stream error `conflict`), which logging in again would only take back.
fn lost(e: ClientError) -> Result<Ended, String> {
    match &e {
        ClientError::Lost {
            condition: Some(condition),
            ..
        } if condition == "conflict" => Err(format!(
            "{e}: another session logged in with the same resource; not reconnecting \
             (give each consumer its own --resource)"
        )),
        _ => Ok(Ended::Lost(e.to_string())),
    }
}

fn new_queryid() -> String {
    demo::nonce()[..12].to_owned()
}

fn describe_error(reply: &Element) -> String {
    match pubsub::error_of(reply) {
        Some(e) => format!(
            "{} {}{}",
            e.condition,
            e.app.map(|a| format!("{a} ")).unwrap_or_default(),
            if e.text.is_empty() {
                String::new()
            } else {
                format!("({})", e.text)
            }
        )
        .trim()
        .to_owned(),
        None => xml(reply),
    }
}
