//! # authz-server
//!
//! The service provider's side of OAuth 1.0a (RFC 5849 §2): it registers consumer
//! applications, lets an owner (an account of the service, e.g. `alice`) grant a consumer
//! access to her nodes through an authorize page, and issues the access tokens that
//! consumers present over XMPP (XEP-0235) to the pubsub guard.
//!
//! - [`store`]: the token store (a SQLite file or a PostgreSQL database), also opened by the
//!   guard (from the `shared-store` crate); it implements the credential lookup and nonce
//!   store traits of `oauth-xmpp`, and keeps the change log the guard follows.
//! - [`password`]: owners' passwords, hashed with Argon2id before they reach the store.
//! - [`web`]: the HTTP endpoints (request token, authorize, access token) and the owner's
//!   pages, every signed request checked by `oauth-xmpp`'s verifier; [`web::run`] serves
//!   them within timeouts and connection caps, and drains on shutdown.
//! - [`throttle`]: the sign-in throttling rules (growing delays, then a lockout), from
//!   `shared-store`, which keeps their counters.
//! - [`admin`]: the admin CLI's audit commands (the ledger, a grant's account).
//! - [`config`]: settings from a TOML file, the environment and the command line.
//! - [`metrics`]: what it counts for Prometheus, served by the `telemetry` crate when the
//!   config names a `metrics_listen` address.
//! - [`logging`]: the services' log setup (from `shared-store`; the guard uses it too).

pub mod admin;
pub mod config;
pub mod metrics;
pub mod password;
pub mod provision;
pub mod web;

pub use shared_store::authz as store;
pub use shared_store::{logging, random, throttle};
pub use store::{Store, StoreError};
