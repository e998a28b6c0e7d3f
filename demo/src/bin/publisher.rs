//! `publisher`: the reference publisher. Logs in, publishes one item to a node and prints
//! the item id the service assigned (or kept).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use demo::pubsub;
use demo::xmpp::Account;
use minidom::Element;

/// Publish one item to a pubsub node.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    account: Account,
    /// The node.
    #[arg(long)]
    node: String,
    /// The item id (the service makes one when absent).
    #[arg(long)]
    id: Option<String>,
    /// The payload: one XML element with its namespace, e.g.
    /// `<entry xmlns='http://www.w3.org/2005/Atom'><title>hi</title></entry>`.
    #[arg(long)]
    payload: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(id) => {
            println!("{id}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("publisher: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<String, String> {
    let payload: Element = args
        .payload
        .parse()
        .map_err(|e| format!("the payload is not one XML element with a namespace: {e}"))?;
    let client = args
        .account
        .connect("publisher")
        .await
        .map_err(|e| e.to_string())?;
    let request = pubsub::publish(
        &args.account.service,
        &args.node,
        args.id.as_deref(),
        payload,
    );
    let reply = client
        .iq(request, Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    client.close().await;
    if let Some(error) = pubsub::error_of(&reply) {
        return Err(format!(
            "publish refused: {}: {}",
            error.condition, error.text
        ));
    }
    pubsub::published_id(&reply).ok_or_else(|| "the service returned no item id".to_owned())
}
