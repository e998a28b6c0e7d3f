//! The audit ledger: what happened to each grant, and what each application was refused, as
//! an append-only list of entries, each chained to the one before by a SHA-256 hash so that
//! changing, removing or inserting an entry shows.
//!
//! - **Entries** record every grant (and a narrowing of what was asked), every denial,
//!   revocation and expiry, every subscription an admin ended, and every refused subscribe,
//!   items or archive request the guard answered (who asked, which node, why). They are
//!   written in the transaction of what they record, so one is never without the other.
//!   They name tokens by their id, never by value, and carry no secret.
//! - **Deliveries** are counted per grant and node ([`Deliveries`]): the guard adds what it
//!   sent in the transaction that sent it. These counters change, so they are not entries;
//!   the entry that ends a grant (revoked, expired) records each node's final count and last
//!   delivery, in the chain.
//! - **The chain**: entry `n`'s `hash` is SHA-256 over entry `n - 1`'s hash and every field
//!   of entry `n` ([`entry_hash`]); the first entry follows [`GENESIS`]. The database refuses
//!   updates and deletes of the ledger (triggers), and [`crate::Store::verify_ledger`] reads
//!   the whole chain again: an edit made around the triggers is found at the entry it
//!   touched. Keep the head hash it reports somewhere else (a log, a ticket) and pass it
//!   back later: a ledger rewritten from some entry on, hashes and all, no longer matches it.
//!
//! Writers of the database take turns (see [`crate::db`]), so each entry's position and the
//! hash it follows are read and written by one writer at a time, on both engines.

use sha2::{Digest, Sha256};

use crate::args;
use crate::db::{Row, Tx};

use super::{Result, now_ms};
use crate::backend::BackendError;

/// The hash the first entry follows: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The longest `detail` (and `actor`) stored, in bytes; longer ones are cut at a character
/// boundary and end in `…` (a refusal's text can quote what the requester sent).
pub const MAX_DETAIL: usize = 1024;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// An access token was issued (its scope in `detail`).
    Granted,
    /// The owner approved less than the application asked for (both in `detail`).
    Narrowed,
    /// The owner denied an application's request.
    Denied,
    /// An access token was revoked (by whom in `actor`; its deliveries in `detail`).
    Revoked,
    /// An access token expired (its deliveries in `detail`).
    Expired,
    /// An application was revoked, and with it all its tokens (each its own `Revoked`).
    ConsumerRevoked,
    /// An admin ended subscriptions (the filter and how many in `detail`).
    SubscriptionsEnded,
    /// The guard refused a subscribe, items or archive request (the request and the
    /// condition in `detail`, the requester in `actor`).
    Refused,
}

impl EntryKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [Self; 8] = [
        Self::Granted,
        Self::Narrowed,
        Self::Denied,
        Self::Revoked,
        Self::Expired,
        Self::ConsumerRevoked,
        Self::SubscriptionsEnded,
        Self::Refused,
    ];

    /// The word stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::Narrowed => "narrowed",
            Self::Denied => "denied",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::ConsumerRevoked => "consumer-revoked",
            Self::SubscriptionsEnded => "subscriptions-ended",
            Self::Refused => "refused",
        }
    }
}

/// An entry to append ([`crate::Store::record`]): the ledger gives it its position, time and
/// hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// What it records.
    pub kind: EntryKind,
    /// Who did it: `owner`, `admin`, `import`, `clock` (an expiry), or a requester's JID.
    pub actor: String,
    /// The owner concerned.
    pub owner: Option<String>,
    /// The application concerned (for a refusal: the consumer key the request named, which
    /// the signature may not have proven).
    pub consumer_key: Option<String>,
    /// The access token concerned, by id.
    pub token_id: Option<i64>,
    /// The node concerned.
    pub node: Option<String>,
    /// What else there is to say, in words.
    pub detail: String,
}

impl NewEntry {
    /// An entry of `kind` by `actor`, concerning nothing yet (set the fields that apply).
    pub fn new(kind: EntryKind, actor: &str, detail: impl Into<String>) -> Self {
        Self {
            kind,
            actor: actor.to_owned(),
            owner: None,
            consumer_key: None,
            token_id: None,
            node: None,
            detail: detail.into(),
        }
    }
}

/// One entry of the ledger, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its position: 1, 2, 3… with no gap.
    pub seq: i64,
    /// When it was written, in milliseconds since 1970.
    pub at_ms: u64,
    /// What it records ([`EntryKind::as_str`]; a word this program does not know is kept
    /// as it is).
    pub kind: String,
    /// Who did it.
    pub actor: String,
    /// The owner concerned.
    pub owner: Option<String>,
    /// The application concerned.
    pub consumer_key: Option<String>,
    /// The access token concerned, by id.
    pub token_id: Option<i64>,
    /// The node concerned.
    pub node: Option<String>,
    /// What else there is to say.
    pub detail: String,
    /// SHA-256 (hex) of the previous entry's hash and this entry ([`entry_hash`]).
    pub hash: String,
}

/// SHA-256, in lower-case hex, of `previous` (the hash of the entry before, or [`GENESIS`])
/// and every field of `entry` but its hash, each length-prefixed (8 bytes, big-endian) and
/// an absent field written as the one byte `0xff` where a length would be, so that no two
/// different entries hash alike by moving bytes from one field to the next.
pub fn entry_hash(previous: &str, entry: &Entry) -> String {
    let mut h = Sha256::new();
    let mut field = |value: Option<&[u8]>| match value {
        Some(bytes) => {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        }
        None => h.update([0xff]),
    };
    let seq = entry.seq.to_string();
    let at = entry.at_ms.to_string();
    let token = entry.token_id.map(|t| t.to_string());
    field(Some(previous.as_bytes()));
    field(Some(seq.as_bytes()));
    field(Some(at.as_bytes()));
    field(Some(entry.kind.as_bytes()));
    field(Some(entry.actor.as_bytes()));
    field(entry.owner.as_deref().map(str::as_bytes));
    field(entry.consumer_key.as_deref().map(str::as_bytes));
    field(token.as_deref().map(str::as_bytes));
    field(entry.node.as_deref().map(str::as_bytes));
    field(Some(entry.detail.as_bytes()));
    let digest = h.finalize();
    let mut hex = String::with_capacity(64);
    for byte in digest.iter() {
        use std::fmt::Write as _;
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// `text` cut to at most [`MAX_DETAIL`] bytes, at a character boundary.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_DETAIL {
        return text.to_owned();
    }
    let mut end = MAX_DETAIL - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Appends `entry` in the writer's transaction `tx`; returns its position.
pub(crate) fn append(tx: &Tx<'_>, entry: NewEntry) -> Result<i64> {
    let last: Option<(i64, String)> = tx.query_opt(
        "SELECT seq, hash FROM audit_ledger ORDER BY seq DESC LIMIT 1",
        &[],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (seq, previous) = last.map_or((1, GENESIS.to_owned()), |(seq, hash)| (seq + 1, hash));
    let mut stored = Entry {
        seq,
        at_ms: now_ms(),
        kind: entry.kind.as_str().to_owned(),
        actor: bounded(&entry.actor),
        owner: entry.owner,
        consumer_key: entry.consumer_key.as_deref().map(bounded),
        token_id: entry.token_id,
        node: entry.node.as_deref().map(bounded),
        detail: bounded(&entry.detail),
        hash: String::new(),
    };
    stored.hash = entry_hash(&previous, &stored);
    tx.execute(
        "INSERT INTO audit_ledger
            (seq, at_ms, kind, actor, owner, consumer_key, token_id, node, detail, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        args![
            stored.seq,
            stored.at_ms,
            stored.kind.as_str(),
            stored.actor.as_str(),
            stored.owner.as_deref(),
            stored.consumer_key.as_deref(),
            stored.token_id,
            stored.node.as_deref(),
            stored.detail.as_str(),
            stored.hash.as_str()
        ],
    )?;
    Ok(seq)
}

/// The columns [`entry_row`] reads, in its order.
pub(crate) const ENTRY_COLUMNS: &str =
    "seq, at_ms, kind, actor, owner, consumer_key, token_id, node, detail, hash";

/// An entry from a row of [`ENTRY_COLUMNS`].
pub(crate) fn entry_row(r: &Row) -> std::result::Result<Entry, BackendError> {
    Ok(Entry {
        seq: r.get(0)?,
        at_ms: r.get(1)?,
        kind: r.get(2)?,
        actor: r.get(3)?,
        owner: r.get(4)?,
        consumer_key: r.get(5)?,
        token_id: r.get(6)?,
        node: r.get(7)?,
        detail: r.get(8)?,
        hash: r.get(9)?,
    })
}

/// Which entries to read ([`crate::Store::ledger`]); every filter that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerFilter {
    /// Only this access token's.
    pub token_id: Option<i64>,
    /// Only this owner's.
    pub owner: Option<String>,
    /// Only this application's.
    pub consumer_key: Option<String>,
    /// Only entries of this kind.
    pub kind: Option<EntryKind>,
}

/// What a grant delivered to one node: items pushed as notifications, and items fetched
/// (items requests, archive queries), with the first and last time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliveries {
    /// The access token, by id.
    pub token_id: i64,
    /// The node.
    pub node: String,
    /// Notifications sent under it.
    pub pushed: u64,
    /// Items sent in answer to its requests.
    pub fetched: u64,
    /// The first delivery, in milliseconds since 1970.
    pub first_ms: u64,
    /// The last delivery, in milliseconds since 1970.
    pub last_ms: u64,
}

impl Deliveries {
    /// Everything it delivered.
    pub fn items(&self) -> u64 {
        self.pushed + self.fetched
    }
}

/// Items the guard sent under one token to one node, to add to its [`Deliveries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The access token the subscription or request was made with (the guard knows it by
    /// value; it is stored by id).
    pub token: String,
    /// The node.
    pub node: String,
    /// Notifications.
    pub pushed: u64,
    /// Items in answers.
    pub fetched: u64,
}

/// Adds `batch` to the deliveries, at `at_ms`, in the writer's transaction `tx`. A token the
/// store does not know (deleted since) is skipped.
pub(crate) fn add_deliveries(tx: &Tx<'_>, batch: &[Delivered], at_ms: u64) -> Result<()> {
    for d in batch {
        tx.execute(
            "INSERT INTO audit_deliveries (token_id, node, pushed, fetched, first_ms, last_ms)
             SELECT id, ?2, ?3, ?4, ?5, ?5 FROM access_tokens WHERE token = ?1
             ON CONFLICT (token_id, node) DO UPDATE SET
                pushed = audit_deliveries.pushed + excluded.pushed,
                fetched = audit_deliveries.fetched + excluded.fetched,
                last_ms = excluded.last_ms",
            args![
                d.token.as_str(),
                d.node.as_str(),
                d.pushed,
                d.fetched,
                at_ms
            ],
        )?;
    }
    Ok(())
}

/// The deliveries of the access token `token_id`, by node.
pub(crate) fn deliveries_of(tx: &Tx<'_>, token_id: i64) -> Result<Vec<Deliveries>> {
    Ok(tx.query_map(
        "SELECT token_id, node, pushed, fetched, first_ms, last_ms FROM audit_deliveries
         WHERE token_id = ?1 ORDER BY node",
        args![token_id],
        |r| {
            Ok(Deliveries {
                token_id: r.get(0)?,
                node: r.get(1)?,
                pushed: r.get(2)?,
                fetched: r.get(3)?,
                first_ms: r.get(4)?,
                last_ms: r.get(5)?,
            })
        },
    )?)
}

/// The words an ending entry records of a token's deliveries: each node's count and last
/// time, or that there was none.
pub(crate) fn deliveries_summary(deliveries: &[Deliveries]) -> String {
    if deliveries.is_empty() {
        return "nothing was delivered under it".into();
    }
    let nodes: Vec<String> = deliveries
        .iter()
        .map(|d| {
            format!(
                "{}: {} pushed, {} fetched, last at {}",
                d.node,
                d.pushed,
                d.fetched,
                crate::datetime::format(d.last_ms / 1000)
            )
        })
        .collect();
    format!("delivered {}", nodes.join("; "))
}

/// What [`crate::Store::verify_ledger`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every entry follows the one before, and the head given (if any) is in the chain.
    Intact {
        /// How many entries there are.
        entries: i64,
        /// The last entry's hash (the head), or [`GENESIS`] for an empty ledger.
        head: String,
    },
    /// The chain is broken at entry `seq`.
    Broken {
        /// The first entry that does not follow the one before (or the position where one is
        /// missing).
        seq: i64,
        /// What is wrong, in words.
        problem: String,
    },
}

/// How many entries [`verify`] reads at a time.
const VERIFY_PAGE: usize = 10_000;

/// Reads the whole chain in `tx` (one snapshot) and checks each link; with `head` (a
/// position and the hash recorded for it earlier), also that the entry there still has it.
pub(crate) fn verify(tx: &Tx<'_>, head: Option<(i64, &str)>) -> Result<Verdict> {
    let mut previous = GENESIS.to_owned();
    let mut expected_seq = 1;
    let mut head_seen = false;
    loop {
        let page = tx.query_map(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM audit_ledger WHERE seq >= ?1 ORDER BY seq LIMIT ?2"
            ),
            args![expected_seq, VERIFY_PAGE],
            entry_row,
        )?;
        let full = page.len() == VERIFY_PAGE;
        for entry in page {
            if entry.seq != expected_seq {
                return Ok(Verdict::Broken {
                    seq: expected_seq,
                    problem: format!(
                        "entry {expected_seq} is missing (the next one is {})",
                        entry.seq
                    ),
                });
            }
            let hash = entry_hash(&previous, &entry);
            if hash != entry.hash {
                return Ok(Verdict::Broken {
                    seq: entry.seq,
                    problem: format!(
                        "entry {} does not match its hash: it was changed, or an entry before \
                         it was",
                        entry.seq
                    ),
                });
            }
            if let Some((seq, recorded)) = head
                && seq == entry.seq
            {
                if recorded != entry.hash {
                    return Ok(Verdict::Broken {
                        seq,
                        problem: format!(
                            "entry {seq} has the hash {}, not the {recorded} recorded for it: \
                             the ledger was rewritten from there or before",
                            entry.hash
                        ),
                    });
                }
                head_seen = true;
            }
            previous = entry.hash;
            expected_seq += 1;
        }
        if !full {
            break;
        }
    }
    if let Some((seq, _)) = head
        && !head_seen
    {
        return Ok(Verdict::Broken {
            seq,
            problem: format!(
                "entry {seq}, whose hash was recorded, is gone: the ledger has {} entries",
                expected_seq - 1
            ),
        });
    }
    Ok(Verdict::Intact {
        entries: expected_seq - 1,
        head: previous,
    })
}

#[cfg(test)]
mod tests;
