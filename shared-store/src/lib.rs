//! # shared-store
//!
//! What the authorization server and the pubsub guard share, so that the guard needs neither
//! the web server nor the password hashing to reach the store:
//!
//! - [`authz`]: owners, consumers, tokens, sessions, sign-in counters and the change log, in
//!   SQLite or PostgreSQL; [`Store`] implements `oauth-xmpp`'s credential lookup and nonce
//!   store.
//! - [`guard`]: the guard's nodes, subscriptions and items behind the [`guard::Storage`]
//!   trait, in the same file.
//! - [`provision`]: bulk import and export of consumers, owners, nodes and grants.
//! - [`throttle`]: the sign-in throttling rules the counters apply.
//! - [`config`], [`logging`], [`random`], [`datetime`]: settings files, log setup, random
//!   tokens, dates.
//! - [`db`]: the connection layer both stores run on, over SQLite or PostgreSQL.
//! - [`backend`]: database failures in words that do not depend on the engine.

pub mod authz;
pub mod backend;
pub mod config;
pub mod datetime;
pub mod db;
pub mod guard;
pub mod logging;
pub mod provision;
pub mod random;
pub mod throttle;

pub use authz::{Authorizations, Store, StoreError};
