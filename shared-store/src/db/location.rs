//! Where the store lives: a SQLite file or a PostgreSQL URL.

use std::path::{Path, PathBuf};

/// Where the store lives, as the `database` setting (or `--database`) names it: a URL that
/// starts with `postgres://` or `postgresql://` is a PostgreSQL database; anything else is
/// the path of a SQLite file.
///
/// Its `Debug` and `Display` hide a password in the URL.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://user[:password]@host[:port]/database`).
    Postgres(String),
}

impl Location {
    /// Reads a `database` setting.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Self::Postgres(s.to_owned())
        } else {
            Self::Sqlite(PathBuf::from(s))
        }
    }

    /// The SQLite file, if it is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Sqlite(p) => Some(p),
            Self::Postgres(_) => None,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            Self::Postgres(url) => f.write_str(&redacted(url)),
        }
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Location({self})")
    }
}

/// `url` with the password of its user part (`user:password@`) and any `password=` query
/// parameter replaced by `***`.
fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Self {
        Self::Sqlite(p.to_path_buf())
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Self {
        Self::Sqlite(p)
    }
}

impl From<&PathBuf> for Location {
    fn from(p: &PathBuf) -> Self {
        Self::Sqlite(p.clone())
    }
}

impl From<&Location> for Location {
    fn from(l: &Location) -> Self {
        l.clone()
    }
}

impl std::str::FromStr for Location {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::parse(s))
    }
}

impl<'de> serde::Deserialize<'de> for Location {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_and_paths() {
        assert_eq!(
            Location::parse("postgres://guard@127.0.0.1:5433/fleet"),
            Location::Postgres("postgres://guard@127.0.0.1:5433/fleet".into())
        );
        assert_eq!(
            Location::parse("/var/lib/guard/authz.sqlite"),
            Location::Sqlite("/var/lib/guard/authz.sqlite".into())
        );
        assert_eq!(
            Location::parse("postgres.sqlite").path(),
            Some(Path::new("postgres.sqlite"))
        );
    }

    #[test]
    fn passwords_never_show() {
        let l = Location::parse(
            "postgresql://guard:s3cret@db.example:5432/fleet?password=x2&sslmode=disable",
        );
        assert_eq!(
            l.to_string(),
            "postgresql://guard:***@db.example:5432/fleet?password=***&sslmode=disable"
        );
        assert_eq!(
            format!("{l:?}"),
            "Location(postgresql://guard:***@db.example:5432/fleet?password=***&sslmode=disable)"
        );
        assert!(!format!("{l:?}").contains("s3cret"));
        assert_eq!(
            Location::parse("postgres://guard@127.0.0.1/fleet").to_string(),
            "postgres://guard@127.0.0.1/fleet"
        );
    }
}
