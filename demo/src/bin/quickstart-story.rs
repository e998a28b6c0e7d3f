//! `quickstart-story`: the four steps `./quickstart` plays against a running Prosody,
//! authz-server and pubsub-guard, printed in plain words with the HTTP lines and stanzas
//! that matter. Exits 0 when every step did what it should, 1 at the first that did not.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use demo::flow::{App, OwnerSession};
use demo::pubsub;
use demo::xmpp::{Client, xml};
use minidom::Element;
use oauth_xmpp::Secret;

/// Play the story: a consumer gets a token, subscribes, receives a push, and is cut off
/// when the owner revokes it.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The authorization server's URL.
    #[arg(long)]
    authz_url: String,
    /// The XMPP server's client port.
    #[arg(long)]
    xmpp: String,
    /// The guard's component JID.
    #[arg(long, default_value = "pubsub.localhost")]
    service: String,
    /// The owner.
    #[arg(long, default_value = "alice")]
    owner: String,
    /// The owner's password on the authorization server.
    #[arg(long, env = "STORY_OWNER_PASSWORD", hide_env_values = true)]
    owner_password: String,
    /// The consumer application's name on the authorization server.
    #[arg(long, default_value = "FindMeNow")]
    app_name: String,
    /// Its consumer key.
    #[arg(long, allow_hyphen_values = true)]
    consumer_key: String,
    /// Its consumer secret.
    #[arg(long, env = "STORY_CONSUMER_SECRET", hide_env_values = true)]
    consumer_secret: String,
    /// Its XMPP account.
    #[arg(long, default_value = "findmenow@localhost")]
    consumer_jid: String,
    /// That account's password.
    #[arg(long, env = "STORY_CONSUMER_PASSWORD", hide_env_values = true)]
    consumer_password: String,
    /// The location service's XMPP account (the publisher).
    #[arg(long, default_value = "location@localhost")]
    publisher_jid: String,
    /// Its password.
    #[arg(long, env = "STORY_PUBLISHER_PASSWORD", hide_env_values = true)]
    publisher_password: String,
    /// An account with no token, to show the refusal.
    #[arg(long, default_value = "nosy@localhost")]
    outsider_jid: String,
    /// Its password.
    #[arg(long, env = "STORY_OUTSIDER_PASSWORD", hide_env_values = true)]
    outsider_password: String,
}

const NODE: &str = "/location/alice";
const SCOPE: &str = "/location/alice /photos/alice";
const WAIT: Duration = Duration::from_secs(10);

fn say(text: &str) {
    println!("{text}");
}

fn sent(stanza: &Element) {
    println!("    -> {}", xml(stanza));
}

fn received(stanza: &Element) {
    println!("    <- {}", xml(stanza));
}

/// Logs in as `jid`.
async fn connect(args: &Args, jid: &str, password: &str, resource: &str) -> Result<Client, String> {
    Client::connect(&args.xmpp, jid, &Secret::new(password.to_owned()), resource)
        .await
        .map_err(|e| format!("{jid} cannot log in: {e}"))
}

/// Sends an IQ, printing it and its reply.
async fn exchange(client: &Client, request: Element) -> Result<Element, String> {
    sent(&request);
    let reply = client.iq(request, WAIT).await.map_err(|e| e.to_string())?;
    received(&reply);
    Ok(reply)
}

fn ok(text: &str) {
    println!("  OK  {text}");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match play(&args).await {
        Ok(()) => {
            say("\nThe story played: 4 of 4 steps succeeded.");
            ExitCode::SUCCESS
        }
        Err(message) => {
            println!("  FAILED  {message}");
            ExitCode::FAILURE
        }
    }
}

async fn play(args: &Args) -> Result<(), String> {
    let app = App {
        authz_url: args.authz_url.clone(),
        consumer_key: args.consumer_key.clone(),
        consumer_secret: Secret::new(args.consumer_secret.clone()),
    };
    let owner_password = Secret::new(args.owner_password.clone());

    say(&format!(
        "\nStep 1. {} asks {} for her location, with OAuth 1.0a over HTTP",
        args.app_name, args.owner
    ));
    say(&format!(
        "    -> POST {}/oauth/request_token  (signed HMAC-SHA1; scope={SCOPE}, oauth_callback=oob)",
        args.authz_url
    ));
    let temporary = app.request_token(SCOPE).await.map_err(|e| e.to_string())?;
    say("    <- 200 oauth_token=…&oauth_token_secret=…&oauth_callback_confirmed=true");
    let url = app.authorize_url(&temporary);
    say(&format!(
        "  {} sends {} to the authorize page (open it in a browser to do this by hand):\n    {url}",
        args.app_name, args.owner
    ));
    let session = OwnerSession::sign_in(&args.authz_url, &args.owner, &owner_password)
        .await
        .map_err(|e| e.to_string())?;
    let verifier = session.approve(&url).await.map_err(|e| e.to_string())?;
    say(&format!(
        "  {} signs in and presses Approve; the page shows the verifier {verifier}",
        args.owner
    ));
    say(&format!(
        "    -> POST {}/oauth/access_token  (signed with the temporary credentials, oauth_verifier={verifier})",
        args.authz_url
    ));
    let access = app
        .access_token(&temporary, &verifier)
        .await
        .map_err(|e| e.to_string())?;
    say("    <- 200 oauth_token=…&oauth_token_secret=…");
    ok(&format!(
        "{} holds an access token for {SCOPE}",
        args.app_name
    ));

    say(&format!(
        "\nStep 2. {} subscribes to {NODE} over XMPP, with a signed <oauth/>",
        args.app_name
    ));
    let mut consumer = connect(args, &args.consumer_jid, &args.consumer_password, "app").await?;
    let mut subscribe = pubsub::subscribe(&args.service, NODE, consumer.bare());
    pubsub::sign(&mut subscribe, consumer.jid(), &app.signer(Some(&access)));
    let reply = exchange(&consumer, subscribe).await?;
    match pubsub::subscription_of(&reply) {
        Some((node, state)) if node == NODE && state == "subscribed" => {
            ok(&format!("{} is subscribed to {NODE}", consumer.bare()));
        }
        _ => return Err(format!("the subscribe was not accepted: {}", xml(&reply))),
    }
    say(&format!(
        "  {} holds no token and tries the same without <oauth/>:",
        args.outsider_jid
    ));
    let outsider = connect(args, &args.outsider_jid, &args.outsider_password, "nosy").await?;
    let attempt = pubsub::subscribe(&args.service, NODE, outsider.bare());
    let reply = exchange(&outsider, attempt).await?;
    match pubsub::error_of(&reply) {
        Some(e)
            if e.condition == "not-authorized" && e.app.as_deref() == Some("token-required") =>
        {
            ok(&format!(
                "{} is refused: not-authorized, token-required",
                outsider.bare()
            ));
        }
        _ => {
            return Err(format!(
                "the outsider was not refused with token-required: {}",
                xml(&reply)
            ));
        }
    }
    outsider.close().await;

    say(&format!(
        "\nStep 3. The location service publishes {}'s new location; no one polls",
        args.owner
    ));
    let publisher = connect(
        args,
        &args.publisher_jid,
        &args.publisher_password,
        "service",
    )
    .await?;
    let publish = pubsub::publish(
        &args.service,
        NODE,
        None,
        pubsub::location_entry("alice is at the Ferry Building", "37.7955 -122.3937"),
    );
    let started = Instant::now();
    let reply = exchange(&publisher, publish).await?;
    let id = pubsub::published_id(&reply)
        .ok_or_else(|| format!("the publish was refused: {}", xml(&reply)))?;
    let event = wait_for_items(&mut consumer, WAIT)
        .await
        .ok_or_else(|| format!("{} received nothing", args.app_name))?;
    let elapsed = started.elapsed();
    received(&event);
    match pubsub::event_items(&event) {
        Some((node, items)) if node == NODE && items.iter().any(|(i, _)| *i == id) => {
            ok(&format!(
                "{} received item {id} {} ms after the publish",
                args.app_name,
                elapsed.as_millis()
            ));
        }
        _ => return Err(format!("unexpected event: {}", xml(&event))),
    }

    say(&format!(
        "\nStep 4. {} revokes {} on her applications page",
        args.owner, args.app_name
    ));
    let started = Instant::now();
    let revoked = session
        .revoke_app(&args.app_name)
        .await
        .map_err(|e| e.to_string())?;
    let (revoked, notice) = revoked;
    if revoked == 0 {
        return Err(format!("{} had no grant to revoke", args.app_name));
    }
    say(&format!(
        "    -> POST {}/apps/revoke (as {}, from the page's Revoke button) <- 303",
        args.authz_url, args.owner
    ));
    match notice {
        Some(notice) => say(&format!("  the page says: {notice}")),
        None => return Err("the applications page said nothing about the revocation".into()),
    }
    let ended = loop {
        let Some(message) = consumer.next_message(WAIT).await else {
            return Err("no notice that the subscription ended".into());
        };
        if pubsub::subscription_of(&message).is_some_and(|(n, s)| n == NODE && s == "none") {
            break message;
        }
    };
    received(&ended);
    ok(&format!(
        "{} is told its subscription ended, {} ms after the revocation",
        args.app_name,
        started.elapsed().as_millis()
    ));
    let publish = pubsub::publish(
        &args.service,
        NODE,
        None,
        pubsub::location_entry("alice is at home", "37.7793 -122.4192"),
    );
    let reply = exchange(&publisher, publish).await?;
    pubsub::published_id(&reply)
        .ok_or_else(|| format!("the publish was refused: {}", xml(&reply)))?;
    if let Some(leak) = wait_for_items(&mut consumer, Duration::from_secs(2)).await {
        return Err(format!(
            "an item reached the revoked consumer: {}",
            xml(&leak)
        ));
    }
    ok(&format!(
        "the next update did not reach {} (nothing within 2 s)",
        args.app_name
    ));
    publisher.close().await;
    consumer.close().await;
    Ok(())
}

/// The next message carrying items, skipping others, or `None` after `wait`.
async fn wait_for_items(client: &mut Client, wait: Duration) -> Option<Element> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let message = client.next_message(left).await?;
        if pubsub::event_items(&message).is_some() {
            return Some(message);
        }
    }
}
