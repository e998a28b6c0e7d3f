//! Logging for the project's services: `tracing` to standard error, filtered by an
//! environment variable (`info` when unset), colored only on a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, with the filter read from `env_var` (e.g. `AUTHZ_LOG`).
pub fn init(env_var: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env(env_var).unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
