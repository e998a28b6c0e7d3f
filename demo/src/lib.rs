//! # demo
//!
//! Reference clients for people writing consumers and publishers of the guard's nodes, and
//! the story the quick start plays. They speak plain XMPP on loopback (no TLS: the quick
//! start's Prosody allows unencrypted logins on 127.0.0.1 only) and sign with `oauth-xmpp`.
//!
//! - [`bench`](mod@bench): what the load clients share: many logins at once, CPU time from
//!   `/proc`.
//! - [`xmpp`]: a small XMPP client (RFC 6120 login with SASL PLAIN, resource binding,
//!   IQs with replies, incoming messages) on the guard's own stream reader.
//! - [`http`]: a small HTTP/1.1 client for the authorization server's endpoints.
//! - [`flow`]: the consumer's side of the OAuth 1.0a flow (request token, authorize URL,
//!   access token), and the owner's side as the authorize page's form would do it.
//! - [`pubsub`]: the XEP-0060 requests the clients send, with the XEP-0235 signature, and
//!   the archive queries (XEP-0313 on a node) a consumer resumes with.
//! - [`resume`]: what a consumer keeps to resume: the archive id of the last item it
//!   printed, per node, in a file, and the ids printed lately.
//!
//! Binaries: `consumer` (subscribe with a token and print events; with `--state`, first
//! what was published while it was away, and again after each reconnection), `publisher` (publish one
//! item), `quickstart-story` (the four steps `./quickstart` plays), `pubsub-bench` (deliveries/s
//! and subscribes/s of the guard, Prosody's own pubsub and `null-pubsub`, driven by
//! `scripts/bench-fanout`), `null-pubsub` (a component that answers at once and fans out
//! from a template: the XMPP server's routing limit),
//! `pubsub-burst` (a fan-out burst and an IQ burst that count every delivery and reply,
//! driven by `scripts/burst_guard.py` and `scripts/bench-burst`), and `day-bench` (the seed's
//! day: a signed subscribe per owner's node, then the active owners' items, every delivery
//! checked, driven by `scripts/bench_day.py` and `scripts/bench-day`).

pub mod bench;
pub mod flow;
pub mod http;
pub mod pubsub;
pub mod resume;
pub mod xmpp;

/// A fresh nonce: 128 bits from the OS, hex-encoded.
pub fn nonce() -> String {
    let mut bytes = [0u8; 16];
    // The OS generator does not fail on supported platforms; a failure would be fatal anyway.
    getrandom::fill(&mut bytes).expect("the OS random generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
