//! # pubsub-guard
//!
//! An XMPP external component (XEP-0114) that is the publish-subscribe service (XEP-0060)
//! for private, per-user nodes such as `/location/alice`. Every subscribe to a protected node
//! must carry an `<oauth xmlns='urn:xmpp:oauth:0'/>` element (XEP-0235) signed with an access
//! token that the node's owner granted on the authorization server; the guard verifies it
//! with `oauth-xmpp` against the shared SQLite store. It follows the store's change log, so a
//! revoked or expired token ends its subscriptions within a second.
//!
//! - [`stream`], [`stanza`], [`ns`], [`jid`]: the component stream, the compact stanzas it
//!   gives, namespaces and JIDs, from the `xmpp-component` crate.
//! - [`service`]: the pubsub service and the OAuth gate; sans-IO (stanzas in, stanzas out).
//! - [`storage`]: nodes, subscriptions and items, behind the [`storage::Storage`] trait
//!   (from the `shared-store` crate).
//! - [`component`]: the running component (worker thread, keepalive, reconnect).
//! - [`config`]: the settings file, `guard.toml`.
//! - [`metrics`]: what it counts for Prometheus, served by the `telemetry` crate when the
//!   config names a `metrics_listen` address.
//!
//! What it does not do: node creation over XMPP, node configuration forms, affiliations,
//! collections, or presence-based delivery. Nodes are created by the admin CLI and by
//! templates in the config.

pub mod archive;
mod audit;
pub mod component;
pub mod config;
pub mod metrics;
pub mod refusal;
pub mod service;

pub use shared_store::datetime;
pub use shared_store::guard as storage;
pub use xmpp_component::{jid, ns, stanza, stream};

pub use config::Config;
pub use service::Service;
