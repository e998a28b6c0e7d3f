//! # authz-server
//!
//! The service provider's side of OAuth 1.0a (RFC 5849 §2): it registers consumer
//! applications, lets an owner (an account of the service, e.g. `alice`) grant a consumer
//! access to her nodes through an authorize page, and issues the access tokens that
//! consumers present over XMPP (XEP-0235) to the pubsub guard.
//!
//! - [`store`]: the SQLite token store, also opened by the guard; it implements the
//!   credential lookup and nonce store traits of `oauth-xmpp`, and keeps the change log
//!   the guard follows.
//! - [`web`]: the HTTP endpoints (request token, authorize, access token) and the owner's
//!   pages, every signed request checked by `oauth-xmpp`'s verifier; [`web::run`] serves
//!   them within timeouts and connection caps, and drains on shutdown.
//! - [`throttle`]: the sign-in throttling rules (growing delays, then a lockout).
//! - [`config`]: settings from a TOML file, the environment and the command line.
//! - [`logging`]: the services' log setup (also used by the pubsub guard).

pub mod config;
pub mod logging;
pub mod random;
pub mod store;
pub mod throttle;
pub mod web;

pub use store::{Store, StoreError};
