//! What the guard keeps: nodes, subscriptions, items, and how far it has read the
//! authorization server's change log.
//!
//! [`Storage`] is the seam: [`DbStorage`] keeps everything in the database the authorization
//! server uses, a SQLite file or a PostgreSQL database that several guards can share. Every
//! call is a committed transaction: once a call returns `Ok`, a crash or a restart does not
//! lose what it wrote.

mod schema;
pub(crate) mod tables;

pub use tables::DbStorage;

use serde::Deserialize;

/// The `max_items` of a node when nothing says otherwise: more than a week of a busy owner's
/// updates (one a minute for sixteen hours a day is 6,720 a week).
pub const DEFAULT_MAX_ITEMS: u32 = 10_000;

/// The `max_age` of a node when nothing says otherwise: 30 days, in seconds.
pub const DEFAULT_MAX_AGE_SECS: u64 = 30 * 86_400;

/// The longest node name, in bytes.
pub const MAX_NODE_NAME_BYTES: usize = 1023;

/// Checks that `name` can be a node name: 1 to [`MAX_NODE_NAME_BYTES`] bytes, no white space
/// and no control character (a token's scope is a space-separated list of node names, so no
/// scope could name such a node), and not `*` (the scope entry that covers every node).
pub fn check_node_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("the node name is empty".into());
    }
    if name.len() > MAX_NODE_NAME_BYTES {
        return Err(format!(
            "the node name has {} bytes; at most {MAX_NODE_NAME_BYTES} are allowed",
            name.len()
        ));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the node name {name:?} holds white space or a control character, which no token scope (a space-separated list of node names) can express"
        ));
    }
    if name == "*" {
        return Err("\"*\" is the scope entry that covers every node; it cannot name one".into());
    }
    Ok(())
}

/// Who may subscribe to a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Anyone may subscribe and read the items.
    Open,
    /// Subscribers need an access token that the node's owner granted (XEP-0235).
    #[default]
    #[serde(rename = "oauth")]
    OAuth,
}

impl Access {
    /// The word stored and shown (`open`, `oauth`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::OAuth => "oauth",
        }
    }

    /// The inverse of [`Access::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "oauth" => Some(Self::OAuth),
            _ => None,
        }
    }
}

/// A pubsub node (a leaf: it holds items).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its name, e.g. `/location/alice`.
    pub name: String,
    /// The owner (an account of the authorization server, e.g. `alice`); required for
    /// protected nodes, whose tokens must have been granted by this owner.
    pub owner: Option<String>,
    /// Who may subscribe.
    pub access: Access,
    /// Bare JIDs (normalized) allowed to publish and retract.
    pub publishers: Vec<String>,
    /// How many items it keeps; publishing more drops the oldest.
    pub max_items: u32,
    /// How long it keeps an item, in seconds (0: as long as `max_items` allows). Older items
    /// are dropped on the next publish and by the guard's sweeper.
    pub max_age_secs: u64,
    /// Whether a new subscriber is sent the last item published (XEP-0060 §6.1.7,
    /// `pubsub#send_last_published_item` = `on_sub`; otherwise `never`).
    pub send_last_published_item: bool,
    /// When it was created (seconds since 1970).
    pub created_at: u64,
}

impl Node {
    /// Whether `jid` (normalized, full or bare) may publish to it.
    pub fn is_publisher(&self, jid: &str) -> bool {
        self.publishers
            .iter()
            .any(|p| xmpp_component::jid::same_bare(p, jid))
    }
}

/// A subscription: `jid` receives the node's notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The node.
    pub node: String,
    /// The subscribed JID, normalized, bare or full as the subscribe request gave it:
    /// where notifications go. There is one subscription per (node, bare JID).
    pub jid: String,
    /// The subscription id given to the subscriber.
    pub subid: String,
    /// The access token that backs it (protected nodes only).
    pub token: Option<String>,
    /// The consumer the token was issued to (protected nodes only).
    pub consumer_key: Option<String>,
    /// When it was made (seconds since 1970).
    pub created_at: u64,
}

/// A published item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its id, unique within the node.
    pub id: String,
    /// The payload element, serialized.
    pub payload: String,
    /// The bare JID that published it.
    pub publisher: String,
    /// When (seconds since 1970).
    pub published_at: u64,
    /// Its place in the node's history: 1 for the first item ever published to the node, then
    /// one more for each publish (a republished id takes a new place). Set by the storage;
    /// 0 in an item not stored yet.
    pub pos: u64,
    /// Its number among every item the service stored, for an archive id unique in the whole
    /// service. Set by the storage; 0 in an item not stored yet.
    pub seq: i64,
}

impl Item {
    /// Its archive id (XEP-0313, and the XEP-0359 stanza id of its notification):
    /// `{pos}-{seq}`. A consumer keeps the last one it saw and resumes after it.
    pub fn archive_id(&self) -> String {
        format!("{}-{}", self.pos, self.seq)
    }

    /// The position and the service number an archive id names, if it has the form
    /// [`Item::archive_id`] writes.
    pub fn parse_archive_id(id: &str) -> Option<(u64, i64)> {
        let (pos, seq) = id.split_once('-')?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit());
        if !(digits(pos) && digits(seq)) {
            return None;
        }
        Some((pos.parse().ok()?, seq.parse().ok()?))
    }
}

/// What a publish stored and what it dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The item's place in the node's history ([`Item::pos`]).
    pub pos: u64,
    /// Its number in the service ([`Item::seq`]).
    pub seq: i64,
    /// The ids that retention dropped to make room (the oldest first).
    pub dropped: Vec<String>,
}

/// What a node's history holds, and what its retention dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct History {
    /// The position of the newest item ever published (0: none yet).
    pub last_pos: u64,
    /// How many items it holds.
    pub held: u64,
    /// The newest position that retention dropped (0: none). A consumer that last saw a
    /// position before it has missed items that are gone.
    pub trimmed_through: u64,
    /// When the item at `trimmed_through` had been published (seconds since 1970).
    pub trimmed_at: u64,
    /// The newest service number ([`Item::seq`]) given before the node was created: the
    /// node's own items all have larger ones, so an archive id of a node of the same name
    /// that was deleted is told apart.
    pub created_seq: i64,
}

/// A stretch of the authorization server's change log in which a consumer held a grant
/// covering a node: an item is replayed to it only if it was published inside one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The change-log position of the grant (items published from there on are covered).
    pub from_seq: i64,
    /// The change-log position of the revocation or expiry that ended it, if any.
    pub until_seq: Option<i64>,
    /// When the grant expires, if ever (an expiry not yet logged ends it too).
    pub until_time: Option<u64>,
}

/// Which of a node's items a request may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Every item: open nodes, publishers.
    All,
    /// Only the items published inside these spans (a consumer's grants, profile N11).
    Spans(Vec<Span>),
}

/// Which part of a node's archive a query covers (XEP-0313 §4.1, by position and time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveQuery {
    /// Only items after this position (`after-id`).
    pub after_pos: Option<u64>,
    /// Only items before this position (`before-id`).
    pub before_pos: Option<u64>,
    /// Only items published at or after this time (`start`).
    pub start: Option<u64>,
    /// Only items published at or before this time (`end`).
    pub end: Option<u64>,
}

/// Where a page of an archive query starts (its RSM `<set/>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFrom {
    /// The oldest items of the query, or those after a position (RSM `<after/>`).
    After(Option<u64>),
    /// The newest items of the query, or those before a position (RSM `<before/>`).
    Before(Option<u64>),
    /// From this offset in the query's results (RSM `<index/>`).
    Index(u32),
}

/// One page of an archive query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePage {
    /// At most the page size, oldest first.
    pub items: Vec<Item>,
    /// How many items the whole query matches.
    pub count: u32,
    /// The offset of the page's first item among them.
    pub first_index: u32,
    /// Whether the page reaches the end of the query in its direction (XEP-0313
    /// `complete`): nothing newer for a forward page, nothing older for a backward one.
    pub complete: bool,
}

/// Where a page of a node's items starts (XEP-0059 §2), in publish order (oldest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageFrom {
    /// The oldest items (no `<after/>`, `<before/>` or `<index/>`).
    Start,
    /// The items published after the item with this id (`<after>id</after>`).
    After(String),
    /// The items published before the item with this id (`<before>id</before>`).
    Before(String),
    /// The newest items (an empty `<before/>`).
    End,
    /// The items from this offset on (`<index>n</index>`, 0 the oldest).
    Index(u32),
}

/// How many nodes and subscriptions the storage holds ([`Storage::totals`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Nodes, open and protected.
    pub nodes: u64,
    /// Subscriptions, to any node.
    pub subscriptions: u64,
}

/// One page of a node's items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// At most the page size, oldest first.
    pub items: Vec<Item>,
    /// How many items the node holds in all.
    pub count: u32,
    /// The offset of the page's first item among them (0 the oldest).
    pub first_index: u32,
}

/// A storage failure. The message names the operation; the service answers the request
/// that needed it with `internal-server-error` and keeps running.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The node already exists.
    #[error("the node {0} already exists")]
    NodeExists(String),
    /// There is no such node (it was deleted meanwhile).
    #[error("there is no node {0}")]
    NoNode(String),
    /// The database failed.
    #[error("storage: {0}")]
    Database(#[from] crate::backend::BackendError),
    /// The database holds a value this version cannot read.
    #[error("storage: {0}")]
    Corrupt(String),
    /// Another error of the shared store (opening it, random ids).
    #[error(transparent)]
    Store(#[from] crate::authz::StoreError),
}

impl StorageError {
    /// Whether the disk (or the database's size limit) is full: nothing was written, and the
    /// same request can succeed once space returns.
    pub fn is_full(&self) -> bool {
        let backend = match self {
            Self::Database(e) | Self::Store(crate::authz::StoreError::Backend(e)) => e,
            _ => return false,
        };
        backend.kind == crate::backend::BackendErrorKind::Full
    }
}

/// The result of storage calls.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Which subscriptions an admin lists or ends: every filter that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionFilter {
    /// Only subscriptions to this node.
    pub node: Option<String>,
    /// Only subscriptions made with this consumer's tokens.
    pub consumer_key: Option<String>,
    /// Only subscriptions to this owner's nodes.
    pub owner: Option<String>,
}

impl SubscriptionFilter {
    /// Whether it selects every subscription (no filter set).
    pub fn is_empty(&self) -> bool {
        self.node.is_none() && self.consumer_key.is_none() && self.owner.is_none()
    }
}

/// Persistent state of the pubsub service.
pub trait Storage: Send {
    /// Creates a node; [`StorageError::NodeExists`] when the name is taken.
    fn create_node(&self, node: &Node) -> Result<()>;
    /// Begins a group commit ([`crate::db::Database::begin_group`]): the calls until
    /// [`Storage::end_group`] commit together, or not at all. `false` when the engine has
    /// none (nothing begun).
    fn begin_group(&self) -> Result<bool>;
    /// Commits the group; on an error, none of its writes happened.
    fn end_group(&self) -> Result<()>;
    /// One node.
    fn node(&self, name: &str) -> Result<Option<Node>>;
    /// Every node, by name.
    fn nodes(&self) -> Result<Vec<Node>>;
    /// Deletes a node with its items and subscriptions; returns the subscriptions it had.
    fn delete_node(&self, name: &str) -> Result<Option<Vec<Subscription>>>;

    /// Adds or replaces the subscription of (`node`, bare JID of `jid`). A replaced
    /// subscription keeps its subid and takes the new address and token; the returned value
    /// is what is now stored.
    fn subscribe(&self, subscription: &Subscription) -> Result<Subscription>;
    /// Removes the subscription of (`node`, bare JID of `jid`); returns it if there was one.
    fn unsubscribe(&self, node: &str, jid: &str) -> Result<Option<Subscription>>;
    /// Subscriptions, optionally only one node's; oldest first.
    fn subscriptions(&self, node: Option<&str>) -> Result<Vec<Subscription>>;
    /// The subscription of (`node`, the bare JID of `jid`), if there is one.
    fn subscription(&self, node: &str, jid: &str) -> Result<Option<Subscription>>;
    /// The subscriptions of the bare JID of `jid`, optionally only to one node; oldest
    /// first. Found by the JID, whatever the number of subscriptions.
    fn subscriptions_of(&self, jid: &str, node: Option<&str>) -> Result<Vec<Subscription>>;
    /// At most `limit` subscriptions of `node`, in the order of their bare JIDs, from the
    /// first bare JID after `after` (from the first of all with `None`): a node's
    /// subscribers a page at a time, in memory bounded by `limit`.
    fn subscribers_page(
        &self,
        node: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Subscription>>;
    /// The names of the nodes the bare JID of `jid` may know of, by name: the open ones,
    /// those it publishes to and those it is subscribed to.
    fn nodes_known_to(&self, jid: &str) -> Result<Vec<String>>;
    /// Removes at most `limit` of the subscriptions backed by `token`, returning them: call
    /// it again until fewer than `limit` come back (a token an application uses for a
    /// million JIDs ends a page at a time, in bounded memory).
    fn end_token(&self, token: &str, limit: usize) -> Result<Vec<Subscription>>;
    /// Removes at most `limit` of the subscriptions `filter` selects, returning them (an
    /// admin's ending of subscriptions; call again until fewer come back).
    fn end_matching(&self, filter: &SubscriptionFilter, limit: usize) -> Result<Vec<Subscription>>;

    /// Stores an item of an existing node (replacing one with the same id) at the node's
    /// next position, then applies the node's retention: drops the items older than its
    /// `max_age_secs` (counted from `item.published_at`) and the oldest beyond its
    /// `max_items`. The item records the authorization server's change-log position at the
    /// commit, which decides which grants cover it.
    fn publish(&self, node: &str, item: &Item) -> Result<Published>;
    /// Deletes an item; returns whether it was there.
    fn retract(&self, node: &str, id: &str) -> Result<bool>;
    /// The items with these ids, in the order given, skipping unknown ids and those outside
    /// `visible`.
    fn items_by_id(&self, node: &str, ids: &[&str], visible: &Visibility) -> Result<Vec<Item>>;
    /// A page of at most `max` of the items in `visible`, from `from`, in publish order,
    /// with their count and the page's offset (one snapshot). `None` when `from` names an
    /// item the node does not hold (or `visible` hides).
    fn items_page(
        &self,
        node: &str,
        from: &PageFrom,
        max: u32,
        visible: &Visibility,
    ) -> Result<Option<Page>>;
    /// A page of at most `max` items of an archive query, in publish order (one snapshot).
    fn archive_page(
        &self,
        node: &str,
        query: &ArchiveQuery,
        from: ArchiveFrom,
        max: u32,
        visible: &Visibility,
    ) -> Result<ArchivePage>;
    /// What the node's history holds (`None` for no such node).
    fn history(&self, node: &str) -> Result<Option<History>>;
    /// Drops items older than their node's `max_age_secs` at `now`, at most `limit` of them
    /// in one call; returns how many it dropped (the sweeper calls it until it returns less
    /// than `limit`).
    fn expire_items(&self, now: u64, limit: usize) -> Result<usize>;

    /// The last change-log sequence number handled (0 at first).
    fn change_cursor(&self) -> Result<i64>;
    /// Records the last change-log sequence number handled.
    fn set_change_cursor(&self, seq: i64) -> Result<()>;

    /// How many nodes and subscriptions there are (two `COUNT`s, one snapshot: call it
    /// seldom, a million subscriptions take tens of milliseconds to count).
    fn totals(&self) -> Result<Totals>;
}
