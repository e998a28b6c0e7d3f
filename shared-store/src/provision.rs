//! Bulk provisioning: consumers, owners, the guard's nodes and access tokens, imported in
//! batches and exported, as the records of the JSON-lines format of `authz-server import`
//! and `authz-server export`.
//!
//! [`Provisioning::import`] writes one batch in one transaction, as the database's only
//! writer: a batch is all in or all out. Each record is keyed (a consumer by its key, an owner
//! by name, a node by name, a grant by its token): a record whose key exists with the same
//! content is counted as unchanged and left alone, so importing a file again, or again after
//! it stopped halfway, writes only what is missing. A key that exists with other content is
//! a conflict, refused with the record's line; nothing is overwritten.
//!
//! Imported grants are logged in the change log like grants of the web flow, so a running
//! guard sees them.

use oauth_xmpp::{Scope, Secret};
use serde::{Deserialize, Serialize};

use crate::args;
use crate::authz::Store;
use crate::db::{Location, Tx};
use crate::guard::{self, Access, DbStorage, Node};

/// The longest consumer key or token, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// The shortest consumer or token secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;
/// The longest consumer or token secret, in bytes.
pub const MAX_SECRET_BYTES: usize = 1024;

/// One line of the JSON-lines format: `{"kind": "consumer" | "owner" | "node" | "grant", …}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// A consumer application.
    Consumer(ConsumerRecord),
    /// An owner.
    Owner(OwnerRecord),
    /// A node of the guard.
    Node(NodeRecord),
    /// An access token an owner granted a consumer.
    Grant(GrantRecord),
}

/// A consumer application: `{"kind":"consumer","key":…,"secret":…,"name":…}`, optionally
/// with `jid` and `callback`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerRecord {
    /// `oauth_consumer_key`.
    pub key: String,
    /// The consumer secret.
    #[serde(with = "secret_text")]
    pub secret: Secret,
    /// The name owners see.
    pub name: String,
    /// Its XMPP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jid: Option<String>,
    /// Its registered callback URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// An owner: `{"kind":"owner","name":…,"password_hash":…}` (the PHC string of an Argon2id
/// hash). The `authz-server import` command also takes `"password"` instead, and hashes it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerRecord {
    /// The account name (a-z A-Z 0-9 - _ ., at most 64).
    pub name: String,
    /// The password's hash, a PHC string.
    #[serde(
        default,
        with = "optional_secret_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub password_hash: Option<Secret>,
    /// The password itself (to be hashed before [`Provisioning::import`], which refuses it).
    #[serde(
        default,
        with = "optional_secret_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub password: Option<Secret>,
}

/// A node of the guard: `{"kind":"node","name":…,"owner":…,"publishers":[…]}`; optionally
/// `access` (`oauth`, the default, or `open`), `max_items`, `max_age_secs` (0: no age limit)
/// and `send_last_published_item`, with the defaults of `pubsub-guard node create`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    /// Its name.
    pub name: String,
    /// Its owner (required for a protected node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Who may subscribe: `oauth` or `open`.
    #[serde(default = "oauth", with = "access_text")]
    pub access: Access,
    /// Bare JIDs allowed to publish (at least one).
    pub publishers: Vec<String>,
    /// How many items it keeps [default: 10,000].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u32>,
    /// How long it keeps an item, in seconds; 0 for no limit [default: 30 days].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
    /// Whether a new subscriber gets the last item [default: when it has an owner].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_last_published_item: Option<bool>,
}

fn oauth() -> Access {
    Access::OAuth
}

/// An access token: `{"kind":"grant","token":…,"secret":…,"consumer":…,"owner":…,
/// "scope":…}`, optionally with `expires_at` (seconds since 1970).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRecord {
    /// `oauth_token`.
    pub token: String,
    /// The token secret.
    #[serde(with = "secret_text")]
    pub secret: Secret,
    /// The consumer key it was issued to.
    pub consumer: String,
    /// The owner who granted it.
    pub owner: String,
    /// The nodes it covers: space-separated names, prefixes ending in `/`, or `*`.
    pub scope: String,
    /// When it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// What an import did, per kind of record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records written: consumers, owners, nodes, grants.
    pub new: [u64; 4],
    /// Records that were there already, the same.
    pub unchanged: [u64; 4],
}

impl Tally {
    /// The kinds, in the order of the counts.
    pub const KINDS: [&'static str; 4] = ["consumers", "owners", "nodes", "grants"];

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Tally) {
        for i in 0..4 {
            self.new[i] += other.new[i];
            self.unchanged[i] += other.unchanged[i];
        }
    }

    /// Every record counted.
    pub fn records(&self) -> u64 {
        self.new.iter().chain(&self.unchanged).sum()
    }

    /// The records written.
    pub fn written(&self) -> u64 {
        self.new.iter().sum()
    }
}

/// Why an import or an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A record was refused; its batch was not written.
    #[error("line {line}: {message}")]
    Record {
        /// Its line in the input (from 1).
        line: u64,
        /// Why.
        message: String,
    },
    /// The authorization tables failed.
    #[error(transparent)]
    Store(#[from] crate::authz::StoreError),
    /// The guard's tables failed.
    #[error(transparent)]
    Storage(#[from] guard::StorageError),
    /// The database failed.
    #[error("database: {0}")]
    Backend(#[from] crate::backend::BackendError),
}

/// The result of provisioning calls.
pub type Result<T, E = ProvisionError> = std::result::Result<T, E>;

/// The authorization tables and the guard's, migrated, for bulk writes and reads.
#[derive(Debug)]
pub struct Provisioning {
    store: Store,
}

impl Provisioning {
    /// Opens the database at `location` and migrates both parts' tables.
    pub fn open(location: impl Into<Location>) -> Result<Self> {
        let location = location.into();
        drop(DbStorage::open(location.clone())?);
        Ok(Self {
            store: Store::open(location)?,
        })
    }

    /// The authorization tables.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Writes `batch` (each record with its line number) in one transaction: all of it, or
    /// none when a record is refused ([`ProvisionError::Record`]) or the database fails.
    pub fn import(&self, batch: &[(u64, Record)], now: u64) -> Result<Tally> {
        self.store.database().write(|tx| {
            let mut tally = Tally::default();
            for (line, record) in batch {
                let refuse = |message: String| ProvisionError::Record {
                    line: *line,
                    message,
                };
                let (kind, fresh) = match record {
                    Record::Consumer(c) => (0, import_consumer(tx, c, now, refuse)?),
                    Record::Owner(o) => (1, import_owner(tx, o, now, refuse)?),
                    Record::Node(n) => (2, import_node(tx, n, now, refuse)?),
                    Record::Grant(g) => (3, import_grant(tx, g, now, refuse)?),
                };
                if fresh {
                    tally.new[kind] += 1;
                } else {
                    tally.unchanged[kind] += 1;
                }
            }
            Ok(tally)
        })
    }

    /// Everything needed to provision another database the same way, read from one
    /// snapshot, in an order [`Provisioning::import`] accepts: the consumers that are not
    /// revoked, every owner, every node, and the tokens that are neither revoked nor expired
    /// at `now` (of consumers that are not revoked). Records hold secrets and password
    /// hashes: keep what is written of them private.
    pub fn export(&self, now: u64) -> Result<Vec<Record>> {
        self.store.database().read(|tx| {
            let mut out = Vec::new();
            out.extend(tx.query_map(
                "SELECT key, secret, name, jid, callback FROM consumers
                 WHERE revoked_at IS NULL ORDER BY key",
                args![],
                |r| {
                    Ok(Record::Consumer(ConsumerRecord {
                        key: r.get(0)?,
                        secret: Secret::new(r.get::<String>(1)?),
                        name: r.get(2)?,
                        jid: r.get(3)?,
                        callback: r.get(4)?,
                    }))
                },
            )?);
            out.extend(tx.query_map(
                "SELECT name, password_hash FROM owners ORDER BY name",
                args![],
                |r| {
                    Ok(Record::Owner(OwnerRecord {
                        name: r.get(0)?,
                        password_hash: Some(Secret::new(r.get::<String>(1)?)),
                        password: None,
                    }))
                },
            )?);
            let names: Vec<String> =
                tx.query_map("SELECT name FROM guard_nodes ORDER BY name", args![], |r| {
                    r.get(0)
                })?;
            for name in names {
                let Some(node) = guard::tables::load_node(tx, &name)? else {
                    continue;
                };
                out.push(Record::Node(NodeRecord {
                    name: node.name,
                    owner: node.owner,
                    access: node.access,
                    publishers: node.publishers,
                    max_items: Some(node.max_items),
                    max_age_secs: Some(node.max_age_secs),
                    send_last_published_item: Some(node.send_last_published_item),
                }));
            }
            out.extend(tx.query_map(
                "SELECT t.token, t.secret, t.consumer_key, t.owner, t.scope, t.expires_at
                 FROM access_tokens t JOIN consumers c ON c.key = t.consumer_key
                 WHERE t.revoked_at IS NULL AND c.revoked_at IS NULL
                   AND (t.expires_at IS NULL OR t.expires_at > ?1)
                 ORDER BY t.id",
                args![now],
                |r| {
                    Ok(Record::Grant(GrantRecord {
                        token: r.get(0)?,
                        secret: Secret::new(r.get::<String>(1)?),
                        consumer: r.get(2)?,
                        owner: r.get(3)?,
                        scope: r.get(4)?,
                        expires_at: r.get(5)?,
                    }))
                },
            )?);
            Ok(out)
        })
    }
}

/// Checks a consumer key or a token: 1 to [`MAX_KEY_BYTES`] printable ASCII characters
/// without spaces.
fn check_key(what: &str, key: &str) -> std::result::Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the {what} must be 1 to {MAX_KEY_BYTES} printable ASCII characters without spaces"
        ));
    }
    Ok(())
}

/// Checks a secret's length.
fn check_secret(what: &str, secret: &Secret) -> std::result::Result<(), String> {
    let n = secret.expose().len();
    if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&n) {
        return Err(format!(
            "the {what} has {n} bytes; it must have {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} (make one from the OS random generator)"
        ));
    }
    Ok(())
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
fn same_secret(a: &str, b: &Secret) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.expose().as_bytes()).into()
}

fn import_consumer(
    tx: &Tx<'_>,
    c: &ConsumerRecord,
    now: u64,
    refuse: impl Fn(String) -> ProvisionError,
) -> Result<bool> {
    check_key("consumer key", &c.key).map_err(&refuse)?;
    check_secret("consumer secret", &c.secret).map_err(&refuse)?;
    if c.name.trim().is_empty() {
        return Err(refuse("the consumer's name is empty".into()));
    }
    type Row = (String, String, Option<String>, Option<String>, Option<i64>);
    let found: Option<Row> = tx.query_opt(
        "SELECT secret, name, jid, callback, revoked_at FROM consumers WHERE key = ?1",
        args![&c.key],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )?;
    match found {
        None => {
            tx.execute(
                "INSERT INTO consumers (key, secret, name, jid, callback, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                args![
                    &c.key,
                    c.secret.expose(),
                    &c.name,
                    c.jid.as_deref(),
                    c.callback.as_deref(),
                    now
                ],
            )?;
            Ok(true)
        }
        Some((_, _, _, _, Some(_))) => Err(refuse(format!(
            "the consumer {} exists and is revoked; a revoked consumer is not brought back",
            c.key
        ))),
        Some((secret, name, jid, callback, None)) => {
            let mut differ = Vec::new();
            if !same_secret(&secret, &c.secret) {
                differ.push("secret");
            }
            if name != c.name {
                differ.push("name");
            }
            if jid != c.jid {
                differ.push("jid");
            }
            if callback != c.callback {
                differ.push("callback");
            }
            if differ.is_empty() {
                Ok(false)
            } else {
                Err(refuse(format!(
                    "the consumer {} exists with another {}",
                    c.key,
                    differ.join(", ")
                )))
            }
        }
    }
}

fn import_owner(
    tx: &Tx<'_>,
    o: &OwnerRecord,
    now: u64,
    refuse: impl Fn(String) -> ProvisionError,
) -> Result<bool> {
    crate::authz::check_owner_name(&o.name).map_err(|e| refuse(e.to_string()))?;
    if o.password.is_some() {
        return Err(refuse(format!(
            "the owner {} has a plain password: hash it first",
            o.name
        )));
    }
    let Some(hash) = o.password_hash.as_ref().filter(|h| !h.is_empty()) else {
        return Err(refuse(format!(
            "the owner {} has neither password_hash nor password",
            o.name
        )));
    };
    let found: Option<String> = tx.query_opt(
        "SELECT password_hash FROM owners WHERE name = ?1",
        args![&o.name],
        |r| r.get(0),
    )?;
    match found {
        None => {
            tx.execute(
                "INSERT INTO owners (name, password_hash, created_at) VALUES (?1, ?2, ?3)",
                args![&o.name, hash.expose(), now],
            )?;
            Ok(true)
        }
        Some(stored) if same_secret(&stored, hash) => Ok(false),
        Some(_) => Err(refuse(format!(
            "the owner {} exists with another password",
            o.name
        ))),
    }
}

fn owner_exists(tx: &Tx<'_>, name: &str) -> Result<bool> {
    Ok(tx
        .query_opt("SELECT 1 FROM owners WHERE name = ?1", args![name], |_| {
            Ok(())
        })?
        .is_some())
}

/// The node a record describes, checked as `pubsub-guard node create` checks its arguments.
fn node_of(n: &NodeRecord, now: u64) -> std::result::Result<Node, String> {
    guard::check_node_name(&n.name)?;
    if n.access == Access::OAuth && n.owner.is_none() {
        return Err(format!(
            "the node {} is protected (access oauth) and needs an owner",
            n.name
        ));
    }
    if n.publishers.is_empty() {
        return Err(format!("the node {} has no publisher", n.name));
    }
    let mut publishers = n
        .publishers
        .iter()
        .map(|p| {
            xmpp_component::jid::normalize(p)
                .map(|j| xmpp_component::jid::bare(&j).to_owned())
                .map_err(|e| format!("the publisher {p:?} is not a JID: {e}"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    publishers.sort();
    publishers.dedup();
    let max_items = n.max_items.unwrap_or(guard::DEFAULT_MAX_ITEMS);
    if max_items == 0 {
        return Err("max_items must be at least 1".into());
    }
    Ok(Node {
        name: n.name.clone(),
        owner: n.owner.clone(),
        access: n.access,
        publishers,
        max_items,
        max_age_secs: n.max_age_secs.unwrap_or(guard::DEFAULT_MAX_AGE_SECS),
        send_last_published_item: n.send_last_published_item.unwrap_or(n.owner.is_some()),
        created_at: now,
    })
}

fn import_node(
    tx: &Tx<'_>,
    n: &NodeRecord,
    now: u64,
    refuse: impl Fn(String) -> ProvisionError,
) -> Result<bool> {
    let node = node_of(n, now).map_err(&refuse)?;
    if let Some(owner) = &node.owner
        && !owner_exists(tx, owner)?
    {
        return Err(refuse(format!(
            "the node {} names the owner {owner}, who does not exist (owners come first)",
            node.name
        )));
    }
    match guard::tables::load_node(tx, &node.name)? {
        None => {
            guard::tables::insert_node(tx, &node)?;
            Ok(true)
        }
        Some(stored) => {
            let mut differ = Vec::new();
            if stored.owner != node.owner {
                differ.push("owner");
            }
            if stored.access != node.access {
                differ.push("access");
            }
            if stored.publishers != node.publishers {
                differ.push("publishers");
            }
            if stored.max_items != node.max_items {
                differ.push("max_items");
            }
            if stored.max_age_secs != node.max_age_secs {
                differ.push("max_age_secs");
            }
            if stored.send_last_published_item != node.send_last_published_item {
                differ.push("send_last_published_item");
            }
            if differ.is_empty() {
                Ok(false)
            } else {
                Err(refuse(format!(
                    "the node {} exists with another {}",
                    node.name,
                    differ.join(", ")
                )))
            }
        }
    }
}

fn import_grant(
    tx: &Tx<'_>,
    g: &GrantRecord,
    now: u64,
    refuse: impl Fn(String) -> ProvisionError,
) -> Result<bool> {
    check_key("token", &g.token).map_err(&refuse)?;
    check_secret("token secret", &g.secret).map_err(&refuse)?;
    let scope = Scope::parse(&g.scope);
    if scope.entries().is_empty() {
        return Err(refuse(format!("the grant {} has an empty scope", g.token)));
    }
    type Row = (String, String, String, String, Option<u64>, Option<i64>);
    let found: Option<Row> = tx.query_opt(
        "SELECT secret, consumer_key, owner, scope, expires_at, revoked_at
         FROM access_tokens WHERE token = ?1",
        args![&g.token],
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        },
    )?;
    if let Some((secret, consumer, owner, stored_scope, expires_at, revoked_at)) = found {
        if revoked_at.is_some() {
            return Err(refuse(format!(
                "the token {} exists and is revoked; a revoked token is not brought back",
                g.token
            )));
        }
        let mut differ = Vec::new();
        if !same_secret(&secret, &g.secret) {
            differ.push("secret");
        }
        if consumer != g.consumer {
            differ.push("consumer");
        }
        if owner != g.owner {
            differ.push("owner");
        }
        if Scope::parse(&stored_scope) != scope {
            differ.push("scope");
        }
        if expires_at != g.expires_at {
            differ.push("expires_at");
        }
        return if differ.is_empty() {
            Ok(false)
        } else {
            Err(refuse(format!(
                "the token {} exists with another {}",
                g.token,
                differ.join(", ")
            )))
        };
    }
    if !owner_exists(tx, &g.owner)? {
        return Err(refuse(format!(
            "the grant {} names the owner {}, who does not exist (owners come first)",
            g.token, g.owner
        )));
    }
    let revoked: Option<Option<i64>> = tx.query_opt(
        "SELECT revoked_at FROM consumers WHERE key = ?1",
        args![&g.consumer],
        |r| r.get(0),
    )?;
    match revoked {
        None => {
            return Err(refuse(format!(
                "the grant {} names the consumer {}, which does not exist (consumers come first)",
                g.token, g.consumer
            )));
        }
        Some(Some(_)) => {
            return Err(refuse(format!(
                "the grant {} names the consumer {}, which is revoked",
                g.token, g.consumer
            )));
        }
        Some(None) => {}
    }
    crate::authz::insert_token(
        tx,
        "import",
        &g.token,
        &g.secret,
        &g.consumer,
        &g.owner,
        &scope,
        g.expires_at,
        now,
    )?;
    Ok(true)
}

/// `Secret` fields as JSON strings.
mod secret_text {
    use oauth_xmpp::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(secret.expose())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// Optional `Secret` fields as JSON strings.
mod optional_secret_text {
    use oauth_xmpp::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        secret: &Option<Secret>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match secret {
            Some(secret) => s.serialize_str(secret.expose()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(Secret::new))
    }
}

/// [`Access`] as its stored word.
mod access_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::guard::Access;

    pub(super) fn serialize<S: Serializer>(access: &Access, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(access.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Access, D::Error> {
        let word = String::deserialize(d)?;
        Access::parse(&word).ok_or_else(|| {
            serde::de::Error::custom(format!("access is oauth or open, not {word:?}"))
        })
    }
}

#[cfg(test)]
mod tests;
