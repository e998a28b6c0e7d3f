//! `guard.toml`: where the guard connects, which store it opens, and its limits and node
//! templates. Every setting has a default except the component secret.

use std::path::{Path, PathBuf};
use std::time::Duration;

use oauth_xmpp::Secret;
use serde::Deserialize;

use crate::storage::Access;
use shared_store::db::Location;

/// Every setting of the guard.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The component's JID, as the XMPP server's config names it (`pubsub.localhost`).
    pub component: String,
    /// The shared secret of the component handshake (XEP-0114). Also read from the
    /// `GUARD_SECRET` environment variable, which wins.
    #[serde(deserialize_with = "secret")]
    pub secret: Option<Secret>,
    /// The XMPP server's component port (`host:port`).
    pub server: String,
    /// The database shared with the authorization server: the path of a SQLite file, or a
    /// PostgreSQL URL (`postgres://user@host:port/database`), which several guards can share.
    pub database: Location,
    /// This guard's name in a fleet of guards sharing one database (`guard-1`…): each follows
    /// the authorization server's change log with a cursor of its own. Empty (the default)
    /// for a single guard.
    pub instance: String,
    /// The timestamp window of `<oauth/>` signatures, in seconds either way.
    pub window_secs: u64,
    /// Whether consumers may sign with PLAINTEXT.
    pub allow_plaintext: bool,
    /// Whether signatures over the bare `from` JID (older clients) are accepted.
    pub accept_bare_jid_signatures: bool,
    /// The largest stanza accepted from the server, in bytes; larger ones are refused with
    /// `policy-violation`.
    pub max_stanza_bytes: usize,
    /// The deepest element nesting accepted in a stanza (the stanza element is depth 1);
    /// deeper ones are refused with `policy-violation`.
    pub max_depth: usize,
    /// After this many idle seconds the guard sends a whitespace keepalive.
    pub keepalive_secs: u64,
    /// The longest wait between two reconnection attempts, in seconds (backoff doubles from
    /// half a second up to this).
    pub reconnect_max_secs: u64,
    /// Where to serve Prometheus metrics (`GET /metrics`, e.g. `"127.0.0.1:9464"`); none
    /// by default. Also read from the `GUARD_METRICS_LISTEN` environment variable, which
    /// wins. Loopback or a private interface: the metrics are not authenticated.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Nodes created on first publish (see [`Template`]).
    #[serde(rename = "template")]
    pub templates: Vec<Template>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            component: "pubsub.localhost".into(),
            secret: None,
            server: "127.0.0.1:5347".into(),
            database: Location::Sqlite(PathBuf::from("authz.sqlite")),
            instance: String::new(),
            window_secs: oauth_xmpp::replay::DEFAULT_WINDOW_SECS,
            allow_plaintext: true,
            accept_bare_jid_signatures: true,
            max_stanza_bytes: crate::stream::DEFAULT_MAX_STANZA_BYTES,
            max_depth: crate::stream::DEFAULT_MAX_DEPTH,
            keepalive_secs: 60,
            reconnect_max_secs: 30,
            metrics_listen: None,
            templates: Vec::new(),
        }
    }
}

/// A rule that creates a node the first time an allowed publisher publishes to a name
/// matching `pattern`. `{owner}` in the pattern matches one path segment and becomes the
/// node's owner: with `pattern = "/location/{owner}"`, a publish to `/location/alice`
/// creates a node owned by `alice`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The node name pattern, with at most one `{owner}`.
    pub pattern: String,
    /// `oauth` (the default: subscribers need a token the owner granted) or `open`.
    #[serde(default)]
    pub access: Access,
    /// Bare JIDs allowed to publish (and so to create) such nodes.
    pub publishers: Vec<String>,
    /// How many items the node keeps.
    #[serde(default = "default_max_items")]
    pub max_items: u32,
    /// How long the node keeps an item, in seconds; written `"30d"`, `"12h"`, `"90m"`,
    /// `"45s"`, `"2w"` or `"none"` (kept as long as `max_items` allows).
    #[serde(default = "default_max_age", deserialize_with = "age")]
    pub max_age: u64,
    /// Whether a new subscriber gets the last item published: `"on_sub"` or `"never"`.
    /// Nodes with an `{owner}` default to `on_sub`, others to `never`.
    pub send_last_published_item: Option<SendLast>,
}

/// When a node sends its last item to a subscriber (`pubsub#send_last_published_item`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SendLast {
    /// When it subscribes.
    OnSub,
    /// Never.
    Never,
}

pub use shared_store::guard::{DEFAULT_MAX_AGE_SECS, DEFAULT_MAX_ITEMS};

fn default_max_items() -> u32 {
    DEFAULT_MAX_ITEMS
}

fn default_max_age() -> u64 {
    DEFAULT_MAX_AGE_SECS
}

fn age<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    parse_age(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// Reads a retention age: a whole number with a unit (`s`, `m`, `h`, `d`, `w`; seconds
/// without one), or `none` (no age limit, 0).
pub fn parse_age(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text == "none" {
        return Ok(0);
    }
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let multiplier = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => 0,
    };
    let value = digits.parse::<u64>().ok().filter(|_| multiplier > 0);
    value
        .and_then(|v| v.checked_mul(multiplier))
        .ok_or_else(|| {
            format!(
                "{text:?} is not an age: write a whole number with s, m, h, d or w (like \"30d\"), or \"none\""
            )
        })
}

/// Writes an age as [`parse_age`] reads it, in the largest unit that divides it.
pub fn format_age(secs: u64) -> String {
    if secs == 0 {
        return "none".into();
    }
    [("w", 7 * 86_400), ("d", 86_400), ("h", 3_600), ("m", 60)]
        .iter()
        .find(|(_, unit)| secs.is_multiple_of(*unit))
        .map_or_else(
            || format!("{secs}s"),
            |(name, unit)| format!("{}{name}", secs / unit),
        )
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(Secret::new))
}

impl Template {
    /// Whether nodes made from it send their last item to a new subscriber.
    pub fn send_last(&self) -> bool {
        match self.send_last_published_item {
            Some(send) => send == SendLast::OnSub,
            None => self.pattern.contains("{owner}"),
        }
    }

    /// The first of `templates` matching `node`, with the owner it gives.
    pub fn first_match<'a>(
        templates: &'a [Template],
        node: &str,
    ) -> Option<(&'a Template, String)> {
        templates
            .iter()
            .find_map(|t| t.matches(node).map(|owner| (t, owner)))
    }

    /// The owner this template gives `node`, or `None` when `node` does not match.
    /// A pattern without `{owner}` matches only itself and gives an empty owner.
    pub fn matches(&self, node: &str) -> Option<String> {
        match self.pattern.split_once("{owner}") {
            None => (self.pattern == node).then(String::new),
            Some((prefix, suffix)) => {
                let owner = node.strip_prefix(prefix)?.strip_suffix(suffix)?;
                // A node no scope could express is never created (profile N7).
                let valid = !owner.is_empty()
                    && !owner.contains('/')
                    && crate::storage::check_node_name(node).is_ok();
                valid.then(|| owner.to_owned())
            }
        }
    }
}

pub use shared_store::config::ConfigError;

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        shared_store::config::load_checked(path, Self::check)
    }

    /// Checks the values that a TOML type cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.component.is_empty() || self.component.contains(['@', '/', ' ']) {
            return Err(format!(
                "component = {:?} is not a domain JID (like pubsub.localhost)",
                self.component
            ));
        }
        if self.max_stanza_bytes < 1024 {
            return Err("max_stanza_bytes must be at least 1024".into());
        }
        if !(8..=1024).contains(&self.max_depth) {
            return Err("max_depth must be between 8 and 1024".into());
        }
        if self.keepalive_secs == 0 || self.reconnect_max_secs == 0 {
            return Err("keepalive_secs and reconnect_max_secs must be at least 1".into());
        }
        if self.instance.len() > 64
            || !self
                .instance
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(format!(
                "instance = {:?}: an instance name is up to 64 of a-z A-Z 0-9 - _ .",
                self.instance
            ));
        }
        for t in &self.templates {
            if t.pattern.matches("{owner}").count() > 1 {
                return Err(format!(
                    "template {:?} has more than one {{owner}}",
                    t.pattern
                ));
            }
            if let Err(e) = crate::storage::check_node_name(&t.pattern.replace("{owner}", "x")) {
                return Err(format!("template {:?}: {e}", t.pattern));
            }
            if t.access == Access::OAuth && !t.pattern.contains("{owner}") {
                return Err(format!(
                    "template {:?} is protected (access = \"oauth\") but has no {{owner}}",
                    t.pattern
                ));
            }
            if let Some((p, e)) = t
                .publishers
                .iter()
                .find_map(|p| crate::jid::normalize(p).err().map(|e| (p, e)))
            {
                return Err(format!(
                    "template {:?}: publisher {p:?} is not a JID: {e}",
                    t.pattern
                ));
            }
            if t.publishers.is_empty() {
                return Err(format!("template {:?} names no publishers", t.pattern));
            }
            if t.max_items == 0 {
                return Err(format!(
                    "template {:?}: max_items must be at least 1",
                    t.pattern
                ));
            }
        }
        Ok(())
    }

    /// The stanza limits of the stream.
    pub fn limits(&self) -> crate::stream::Limits {
        crate::stream::Limits {
            max_stanza_bytes: self.max_stanza_bytes,
            max_depth: self.max_depth,
        }
    }

    /// The keepalive interval.
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_secs)
    }

    /// The longest backoff between reconnection attempts.
    pub fn reconnect_max(&self) -> Duration {
        Duration::from_secs(self.reconnect_max_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(pattern: &str) -> Template {
        Template {
            pattern: pattern.into(),
            access: Access::OAuth,
            publishers: vec!["loc@localhost".into()],
            max_items: 1,
            max_age: DEFAULT_MAX_AGE_SECS,
            send_last_published_item: None,
        }
    }

    #[test]
    fn ages_read_and_write() {
        assert_eq!(parse_age("30d"), Ok(30 * 86_400));
        assert_eq!(parse_age("2w"), Ok(14 * 86_400));
        assert_eq!(parse_age("90m"), Ok(5_400));
        assert_eq!(parse_age("45"), Ok(45));
        assert_eq!(parse_age("none"), Ok(0));
        assert_eq!(
            parse_age("3 days").unwrap_err(),
            "\"3 days\" is not an age: write a whole number with s, m, h, d or w (like \"30d\"), or \"none\""
        );
        assert!(parse_age("99999999999999999999w").is_err());
        assert!(parse_age("d").is_err());
        assert_eq!(format_age(30 * 86_400), "30d");
        assert_eq!(format_age(14 * 86_400), "2w");
        assert_eq!(format_age(5_400), "90m");
        assert_eq!(format_age(61), "61s");
        assert_eq!(format_age(0), "none");
    }

    #[test]
    fn template_matching() {
        let t = template("/location/{owner}");
        assert_eq!(t.matches("/location/alice").as_deref(), Some("alice"));
        assert_eq!(t.matches("/location/"), None);
        assert_eq!(t.matches("/location/a/b"), None);
        assert_eq!(t.matches("/photos/alice"), None);
        // Names no scope can express are not matched.
        assert_eq!(t.matches("/location/a b"), None);
        assert_eq!(t.matches("/location/a\u{2003}b"), None);
        let t = template("/photos/{owner}/all");
        assert_eq!(t.matches("/photos/bob/all").as_deref(), Some("bob"));
        assert_eq!(t.matches("/photos/bob/some"), None);
        let t = template("/news");
        assert_eq!(t.matches("/news").as_deref(), Some(""));
    }

    #[test]
    fn parses_a_full_file_and_keeps_the_secret_out_of_debug() {
        let config: Config = toml::from_str(
            r#"
            component = "pubsub.example.org"
            secret = "s3cret-value"
            server = "10.0.0.1:5347"
            database = "/var/lib/guard/authz.sqlite"
            window_secs = 120
            max_stanza_bytes = 8192
            metrics_listen = "127.0.0.1:9464"

            [[template]]
            pattern = "/location/{owner}"
            publishers = ["location@example.org"]
            max_items = 5
            max_age = "7d"

            [[template]]
            pattern = "/news"
            access = "open"
            publishers = ["news@example.org"]
            "#,
        )
        .unwrap();
        config.check().unwrap();
        assert_eq!(config.templates.len(), 2);
        assert_eq!(
            config.metrics_listen,
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        assert_eq!(Config::default().metrics_listen, None);
        assert_eq!(config.templates[0].max_age, 7 * 86_400);
        assert!(config.templates[0].send_last());
        assert_eq!(config.templates[1].access, Access::Open);
        assert_eq!(config.templates[1].max_items, DEFAULT_MAX_ITEMS);
        assert_eq!(config.templates[1].max_age, DEFAULT_MAX_AGE_SECS);
        assert!(!config.templates[1].send_last());
        let err = toml::from_str::<Config>(
            "[[template]]\npattern = \"/n\"\npublishers = [\"a@b\"]\nmax_age = \"soon\"",
        )
        .unwrap_err();
        assert!(err.message().contains("\"soon\" is not an age"), "{err}");
        assert_eq!(config.keepalive_secs, 60);
        assert!(!format!("{config:?}").contains("s3cret-value"));
    }

    #[test]
    fn a_fleet_member_on_postgres() {
        let config: Config = toml::from_str(
            r#"
            secret = "s"
            database = "postgres://guard:db-pass@10.0.0.2:5432/fleet"
            instance = "guard-2"
            "#,
        )
        .unwrap();
        config.check().unwrap();
        assert_eq!(
            config.database,
            Location::Postgres("postgres://guard:db-pass@10.0.0.2:5432/fleet".into())
        );
        assert_eq!(config.instance, "guard-2");
        assert!(!format!("{config:?}").contains("db-pass"));
        let bad = Config {
            instance: "guard 2".into(),
            ..Config::default()
        };
        assert_eq!(
            bad.check().unwrap_err(),
            "instance = \"guard 2\": an instance name is up to 64 of a-z A-Z 0-9 - _ ."
        );
    }

    #[test]
    fn refuses_inconsistent_values() {
        let mut config = Config {
            templates: vec![template("/news")],
            ..Config::default()
        };
        assert_eq!(
            config.check().unwrap_err(),
            "template \"/news\" is protected (access = \"oauth\") but has no {owner}"
        );
        config.templates.clear();
        config.component = "guard@localhost".into();
        assert!(config.check().unwrap_err().contains("is not a domain JID"));
        let err = toml::from_str::<Config>("colour = 1").unwrap_err();
        assert!(err.message().contains("unknown field `colour`"), "{err}");
    }
}
