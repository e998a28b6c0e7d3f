//! `consumer`: the reference consumer. Logs in to the XMPP server, subscribes to a
//! protected node with a signed `<oauth/>` (XEP-0235), and prints every item pushed to it,
//! one line of XML per item, until it has `--count` items, the subscription ends (the owner
//! revoked the token) or Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use demo::flow::Grant;
use demo::pubsub;
use demo::xmpp::{Account, xml};

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
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("consumer: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let (app, token) = (args.grant.app(), args.grant.token());
    let mut client = args
        .account
        .connect(&args.resource)
        .await
        .map_err(|e| e.to_string())?;
    let mut request = pubsub::subscribe(&args.account.service, &args.node, client.bare());
    pubsub::sign(&mut request, client.jid(), &app.signer(Some(&token)));
    let reply = client
        .iq(request, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(error) = pubsub::error_of(&reply) {
        return Err(format!(
            "subscribe refused: {} {}: {}",
            error.condition,
            error.app.unwrap_or_default(),
            error.text
        ));
    }
    eprintln!("consumer: subscribed to {} as {}", args.node, client.jid());
    let mut received = 0;
    loop {
        let message = tokio::select! {
            m = client.next_message(Duration::from_secs(3600)) => m,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(message) = message else { continue };
        if let Some((node, state)) = pubsub::subscription_of(&message)
            && state == "none"
        {
            eprintln!("consumer: the subscription to {node} ended (access revoked or expired)");
            break;
        }
        if let Some((_, items)) = pubsub::event_items(&message) {
            for (_, payload) in items {
                println!("{}", payload.as_ref().map(xml).unwrap_or_default());
                received += 1;
            }
            if args.count.is_some_and(|n| received >= n) {
                break;
            }
        }
    }
    client.close().await;
    Ok(())
}
