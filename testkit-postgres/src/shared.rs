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
