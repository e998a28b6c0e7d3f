//! [`shared()`]: one cluster per test process.

use std::sync::OnceLock;

use crate::Cluster;

/// The shared cluster, or why it could not start (kept, so every test reports the same cause).
static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The test process's shared cluster, started by the first call (about 1 s; concurrent first
/// calls wait for it) and reused by every later one.
///
/// Take a database of your own in it with [`Cluster::new_database`], with a name no other test
/// of the same binary uses, and tests can run in parallel. Statics are never dropped, so the
/// cluster outlives every test; when the process ends, however it ends, the watchdog stops the
/// server and removes its folder, within about a second (see the crate documentation).
///
/// # Panics
/// When the cluster cannot start, with [`Cluster::start`]'s message, in every test that calls
/// this.
pub fn shared() -> &'static Cluster {
    match SHARED.get_or_init(Cluster::start) {
        Ok(cluster) => cluster,
        Err(e) => panic!("{e}"),
    }
}

/// The environment variable that makes [`optional_shared`] fail instead of skipping when
/// PostgreSQL is not installed (the project's test command sets it).
pub const REQUIRE: &str = "REQUIRE_POSTGRES";

/// [`shared()`], or `None` when PostgreSQL is not installed and [`REQUIRE`] is not set, so
/// that a plain `cargo test` on a machine without it runs the SQLite half of a suite (and
/// says on standard error that the PostgreSQL half was skipped).
///
/// # Panics
/// When PostgreSQL is installed but the cluster cannot start, or when it is missing and
/// [`REQUIRE`] is set.
pub fn optional_shared() -> Option<&'static Cluster> {
    let missing = crate::bin_dir::BinDir::find().is_err();
    if missing && std::env::var_os(REQUIRE).is_none() {
        eprintln!(
            "PostgreSQL is not installed: its half of this test is skipped ({REQUIRE}=1 makes this an error)"
        );
        return None;
    }
    Some(shared())
}
