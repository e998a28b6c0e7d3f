//! Replay protection: the clock, the timestamp window and the nonce store (RFC 5849 §3.3).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::StoreError;

/// The default timestamp window: ±300 s.
pub const DEFAULT_WINDOW_SECS: u64 = 300;

/// A source of the current time, in seconds since 1970. Injected so tests pin the spec's
/// timestamps.
pub trait Clock {
    /// Seconds since 1970-01-01T00:00:00Z.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock that always says the same time (tests, the CLI's `--now`).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn now(&self) -> u64 {
        self.0
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> u64 {
        (**self).now()
    }
}

/// What makes a nonce unique (RFC 5849 §3.3): consumer key, token, timestamp and nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NonceKey<'a> {
    /// `oauth_consumer_key`.
    pub consumer_key: &'a str,
    /// `oauth_token`, empty when there is none.
    pub token: &'a str,
    /// `oauth_timestamp`.
    pub timestamp: u64,
    /// `oauth_nonce`.
    pub nonce: &'a str,
}

/// The answer of [`NonceStore::check_and_record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceOutcome {
    /// Not seen before; now recorded.
    Fresh,
    /// Seen before: a replay.
    Replayed,
    /// The store is at capacity and cannot record it; the request must be refused.
    Full,
}

/// Remembers nonces for as long as their timestamp is inside the window.
pub trait NonceStore {
    /// Atomically: if `key` was recorded and has not expired, `Replayed`; otherwise record
    /// it until `expires_at` (seconds since 1970) and answer `Fresh`. `now` lets the store
    /// drop expired entries. The verifier calls this only after the signature is valid.
    fn check_and_record(
        &self,
        key: &NonceKey<'_>,
        expires_at: u64,
        now: u64,
    ) -> Result<NonceOutcome, StoreError>;
}

impl<N: NonceStore + ?Sized> NonceStore for &N {
    fn check_and_record(
        &self,
        key: &NonceKey<'_>,
        expires_at: u64,
        now: u64,
    ) -> Result<NonceOutcome, StoreError> {
        (**self).check_and_record(key, expires_at, now)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct OwnedKey {
    consumer_key: Box<str>,
    token: Box<str>,
    timestamp: u64,
    nonce: Box<str>,
}

impl From<&NonceKey<'_>> for OwnedKey {
    fn from(k: &NonceKey<'_>) -> Self {
        Self {
            consumer_key: k.consumer_key.into(),
            token: k.token.into(),
            timestamp: k.timestamp,
            nonce: k.nonce.into(),
        }
    }
}

#[derive(Debug, Default)]
struct Entries {
    expiry: HashMap<OwnedKey, u64>,
    by_expiry: BTreeSet<(u64, OwnedKey)>,
}

impl Entries {
    fn purge(&mut self, now: u64) {
        while let Some(first) = self.by_expiry.first() {
            if first.0 >= now {
                break;
            }
            if let Some((_, key)) = self.by_expiry.pop_first() {
                self.expiry.remove(&key);
            }
        }
    }
}

/// A bounded in-memory [`NonceStore`] for one process. Entries expire with the window, so
/// its size follows traffic × window; past `capacity` live entries it answers
/// [`NonceOutcome::Full`] (refusing is safe, forgetting would allow replays).
#[derive(Debug)]
pub struct MemoryNonceStore {
    entries: Mutex<Entries>,
    capacity: usize,
}

impl MemoryNonceStore {
    /// The default capacity: one million live nonces.
    pub const DEFAULT_CAPACITY: usize = 1_000_000;

    /// A store that holds at most `capacity` live nonces.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            capacity,
        }
    }

    /// How many nonces are recorded now (expired ones included until the next call).
    pub fn len(&self) -> usize {
        self.lock().expiry.len()
    }

    /// Whether no nonce is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters more than refusing service; keep going with the data.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for MemoryNonceStore {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl NonceStore for MemoryNonceStore {
    fn check_and_record(
        &self,
        key: &NonceKey<'_>,
        expires_at: u64,
        now: u64,
    ) -> Result<NonceOutcome, StoreError> {
        let mut entries = self.lock();
        entries.purge(now);
        let owned = OwnedKey::from(key);
        if entries.expiry.contains_key(&owned) {
            return Ok(NonceOutcome::Replayed);
        }
        if entries.expiry.len() >= self.capacity {
            return Ok(NonceOutcome::Full);
        }
        entries.by_expiry.insert((expires_at, owned.clone()));
        entries.expiry.insert(owned, expires_at);
        Ok(NonceOutcome::Fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(nonce: &str) -> NonceKey<'_> {
        NonceKey {
            consumer_key: "c",
            token: "t",
            timestamp: 1000,
            nonce,
        }
    }

    #[test]
    fn second_use_is_a_replay() {
        let store = MemoryNonceStore::default();
        assert_eq!(
            store.check_and_record(&key("a"), 1300, 1000).unwrap(),
            NonceOutcome::Fresh
        );
        assert_eq!(
            store.check_and_record(&key("a"), 1300, 1100).unwrap(),
            NonceOutcome::Replayed
        );
        assert_eq!(
            store.check_and_record(&key("b"), 1300, 1100).unwrap(),
            NonceOutcome::Fresh
        );
    }

    #[test]
    fn entries_expire_with_the_window() {
        let store = MemoryNonceStore::default();
        store.check_and_record(&key("a"), 1300, 1000).unwrap();
        store.check_and_record(&key("b"), 1301, 1301).unwrap();
        assert_eq!(
            store.len(),
            1,
            "the entry that expired at 1300 is gone at 1301"
        );
    }

    #[test]
    fn full_store_refuses_instead_of_forgetting() {
        let store = MemoryNonceStore::new(2);
        store.check_and_record(&key("a"), 1300, 1000).unwrap();
        store.check_and_record(&key("b"), 1300, 1000).unwrap();
        assert_eq!(
            store.check_and_record(&key("c"), 1300, 1000).unwrap(),
            NonceOutcome::Full
        );
        assert_eq!(
            store.check_and_record(&key("a"), 1300, 1000).unwrap(),
            NonceOutcome::Replayed
        );
        assert_eq!(
            store.check_and_record(&key("c"), 1400, 1301).unwrap(),
            NonceOutcome::Fresh
        );
    }

    #[test]
    fn the_same_nonce_with_another_token_is_fresh() {
        let store = MemoryNonceStore::default();
        store.check_and_record(&key("a"), 1300, 1000).unwrap();
        let other = NonceKey {
            token: "u",
            ..key("a")
        };
        assert_eq!(
            store.check_and_record(&other, 1300, 1000).unwrap(),
            NonceOutcome::Fresh
        );
    }
}
