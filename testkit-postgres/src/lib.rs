//! # testkit-postgres
//!
//! Throwaway PostgreSQL servers for tests, on 127.0.0.1, each in a temporary folder.
//!
//! What it does:
//! - [`Cluster::start`] makes a cluster (`initdb -A trust -U guard`), starts its server on a
//!   free port of 127.0.0.1 (`pg_ctl -w start`; no other address, the Unix socket inside the
//!   folder) and creates one database; dropping the [`Cluster`] stops the server and removes
//!   the folder;
//! - [`shared()`] gives one cluster per test process, in which each test takes a database of
//!   its own ([`Cluster::new_database`]) so tests run in parallel on one server;
//! - [`Cluster::psql`] runs SQL through `psql`, to look at a database from outside.
//!
//! What it does not do: install PostgreSQL (`scripts/setup-postgres` does, with Debian's
//! `postgresql` package; the programs are found under `/usr/lib/postgresql/*/bin`, highest
//! version first), speak the wire protocol (the code under test brings its own client), or
//! tune the server (it runs with the default settings). Unix only.
//!
//! ```
//! let cluster = testkit_postgres::Cluster::start()?;
//! let url = cluster.new_database("items")?;
//! assert_eq!(url, format!("postgres://guard@127.0.0.1:{}/items", cluster.port()));
//! assert_eq!(cluster.psql("items", "select 1 + 1")?, "2");
//! # Ok::<(), String>(())
//! ```
//!
//! # No server left behind
//!
//! A test binary's statics are never dropped, and a test process can end by a panic, an
//! abort or a kill, so cleaning up in `Drop` alone would leave servers running. Each cluster
//! therefore has a watchdog: a small `sh` process, in a process group of its own, that runs
//! the server programs and reads a pipe from the test process. The kernel closes that pipe
//! whenever the test process ends, however it ends; the watchdog then runs `pg_ctl -m
//! immediate stop` (SIGKILL to the postmaster if that fails within 10 s) and removes the
//! folder. Immediate rather than fast, because a fast stop's checkpoint syncs about 1 s of
//! files per database created, and the data is about to be deleted.
//!
//! Dropping a [`Cluster`] closes the pipe itself and waits for the watchdog, so the server is
//! gone when `drop` returns. For the [`shared()`] cluster the stop happens just after the
//! process exits (within a few tenths of a second), so a `ps` run the instant `cargo test`
//! returns may still see it shutting down.
//!
//! As root (PostgreSQL refuses to run as root), the folder is given to the `postgres` user and
//! the server programs run through `runuser -u postgres --`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod bin_dir;
mod cluster;
mod shared;
mod watchdog;

pub use cluster::Cluster;
pub use shared::{REQUIRE, optional_shared, shared};
