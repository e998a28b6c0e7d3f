//! Settings: a TOML file, overridden by environment variables, overridden by the command
//! line (the environment and command line are read by clap in `main.rs`).

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use shared_store::db::Location;

use crate::web::ConnectionLimits;

/// Every setting of the server, with its default.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the store lives: the path of a SQLite file, or a `postgres://` (or
    /// `postgresql://`) URL for a PostgreSQL database.
    pub database: Location,
    /// Where `serve` listens. Loopback by default: put a TLS-terminating proxy in front.
    pub listen: SocketAddr,
    /// The URL consumers use to reach the server (scheme, host, port, no path), when it
    /// differs from what the `Host` header says (behind a proxy). Signatures are checked
    /// against it.
    pub public_url: Option<String>,
    /// The `realm` of `WWW-Authenticate` answers.
    pub realm: String,
    /// The timestamp window, in seconds either way.
    pub window_secs: u64,
    /// How long temporary credentials live, in seconds.
    pub temporary_lifetime_secs: u64,
    /// How long an owner stays signed in on the web pages, in seconds.
    pub session_lifetime_secs: u64,
    /// Whether consumers may sign with PLAINTEXT (only sensible over TLS).
    pub allow_plaintext: bool,
    /// Behind a reverse proxy: the header it sets to the client's address (its last entry
    /// is used, e.g. `X-Forwarded-For`). Without it the connection's peer is the client.
    /// Set it only when every request comes through that proxy: clients can send it too.
    pub client_address_header: Option<String>,
    /// Sign-in throttling (`[sign_in.per_name]` and `[sign_in.per_address]` tables).
    pub sign_in: crate::throttle::SignInPolicy,
    /// The HTTP connections: timeouts, caps and the shutdown drain (the `[http]` table).
    pub http: ConnectionLimits,
    /// Where to serve Prometheus metrics (`GET /metrics`, e.g. `"127.0.0.1:9464"`); none
    /// by default. Loopback or a private interface: the metrics are not authenticated.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: Location::parse("authz.sqlite"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            realm: "authz-server".into(),
            window_secs: oauth_xmpp::replay::DEFAULT_WINDOW_SECS,
            temporary_lifetime_secs: 600,
            session_lifetime_secs: 3600,
            allow_plaintext: true,
            client_address_header: None,
            sign_in: crate::throttle::SignInPolicy::default(),
            http: ConnectionLimits::default(),
            metrics_listen: None,
        }
    }
}

pub use shared_store::config::{ConfigError, load_checked};

impl Config {
    /// Reads and checks a TOML file; settings it leaves out keep their defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_checked(path, Self::check)
    }

    /// What is inconsistent in these settings, if anything (values a TOML type cannot
    /// check).
    pub fn check(&self) -> Result<(), String> {
        self.http.check()?;
        self.sign_in.check()?;
        // Port 0 (a free port, picked at bind) is not a clash.
        if self.metrics_listen == Some(self.listen) && self.listen.port() != 0 {
            return Err(format!(
                "metrics_listen and listen are the same address ({})",
                self.listen
            ));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "public_url must start with http:// or https:// (got {url:?})"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_file_keeps_defaults_and_unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authz.toml");
        std::fs::write(
            &path,
            "database = \"/var/lib/authz/authz.sqlite\"\nwindow_secs = 120\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(
            config.database,
            Location::Sqlite("/var/lib/authz/authz.sqlite".into())
        );
        assert_eq!(config.window_secs, 120);
        assert_eq!(config.listen, Config::default().listen);
        assert_eq!(config.metrics_listen, None);
        std::fs::write(&path, "metrics_listen = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(
            Config::load(&path).unwrap().metrics_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        std::fs::write(&path, "metrics_listen = \"localhost\"\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("invalid socket address"), "{err}");
        std::fs::write(&path, "metrics_listen = \"127.0.0.1:8080\"\n").unwrap();
        assert_eq!(
            Config::load(&path).unwrap_err().to_string(),
            format!(
                "the config file {} is not usable: metrics_listen and listen are the same address (127.0.0.1:8080)",
                path.display()
            )
        );
        std::fs::write(&path, "database = \"postgres://authz@db.example/authz\"\n").unwrap();
        assert_eq!(
            Config::load(&path).unwrap().database,
            Location::Postgres("postgres://authz@db.example/authz".into())
        );
        std::fs::write(&path, "databse = \"x\"\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `databse`"), "{err}");
    }
}
