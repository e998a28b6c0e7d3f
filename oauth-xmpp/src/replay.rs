//! Replay protection: the clock, the timestamp window and the nonce store (RFC 5849 §3.3).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
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

impl NonceKey<'_> {
    /// Appends one string that identifies the key unambiguously, for stores that keep a
    /// single column or map key: each text part is prefixed with its length in bytes, so no
    /// value (not even one holding separators) can be confused with another.
    ///
    /// ```
    /// let key = oauth_xmpp::replay::NonceKey { consumer_key: "ck", token: "", timestamp: 7, nonce: "n:1" };
    /// let mut out = String::new();
    /// key.write_canonical(&mut out);
    /// assert_eq!(out, "2:ck0:7:3:n:1");
    /// ```
    pub fn write_canonical(&self, out: &mut String) {
        for part in [self.consumer_key, self.token] {
            push_decimal(out, part.len() as u64);
            out.push(':');
            out.push_str(part);
        }
        push_decimal(out, self.timestamp);
        out.push(':');
        push_decimal(out, self.nonce.len() as u64);
        out.push(':');
        out.push_str(self.nonce);
    }
}

/// Appends `n` in decimal (without the formatting machinery: this is on the hot path).
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if let Ok(text) = std::str::from_utf8(&digits[at..]) {
        out.push_str(text);
    }
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

#[derive(Debug, Default)]
struct Entries {
    /// Recorded keys (in [`NonceKey::write_canonical`] form) and when each expires. An
    /// entry whose expiry has passed counts as absent.
    live: HashMap<Arc<str>, u64>,
    /// The same keys in the order they were recorded. Purging pops from the front while
    /// the front has expired; an expired key behind a live one waits (it is already
    /// treated as absent), so memory stays bounded by traffic × (window + skew).
    order: VecDeque<(u64, Arc<str>)>,
    /// Reused buffer for the canonical form of the key being checked.
    scratch: String,
}

impl Entries {
    fn purge(&mut self, now: u64) {
        while let Some((expires_at, _)) = self.order.front() {
            if *expires_at >= now {
                break;
            }
            if let Some((expires_at, key)) = self.order.pop_front() {
                // Only if it was not recorded again (after expiring) with a later expiry.
                if self.live.get(&key) == Some(&expires_at) {
                    self.live.remove(&key);
                }
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
            entries: Mutex::new(Entries {
                live: HashMap::with_capacity(capacity.min(16)),
                order: VecDeque::with_capacity(capacity.min(16)),
                scratch: String::with_capacity(128),
            }),
            capacity,
        }
    }

    /// How many nonces are recorded now (expired ones included until the next call).
    pub fn len(&self) -> usize {
        self.lock().live.len()
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
        let mut guard = self.lock();
        let entries = &mut *guard;
        entries.purge(now);
        entries.scratch.clear();
        key.write_canonical(&mut entries.scratch);
        match entries.live.get(entries.scratch.as_str()) {
            Some(&expiry) if expiry >= now => return Ok(NonceOutcome::Replayed),
            // Recorded once, expired, not yet purged: forget it and record it again below
            // (its stale queue entry is skipped by the purge).
            Some(_) => {
                entries.live.remove(entries.scratch.as_str());
            }
            None => {}
        }
        if entries.live.len() >= self.capacity {
            return Ok(NonceOutcome::Full);
        }
        let owned: Arc<str> = Arc::from(entries.scratch.as_str());
        entries.order.push_back((expires_at, Arc::clone(&owned)));
        entries.live.insert(owned, expires_at);
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
    fn an_expired_entry_behind_a_live_one_counts_as_absent() {
        let store = MemoryNonceStore::default();
        store.check_and_record(&key("long"), 2000, 1000).unwrap();
        store.check_and_record(&key("short"), 1300, 1000).unwrap();
        // At 1400 "short" has expired but sits behind "long" in the queue.
        assert_eq!(
            store.check_and_record(&key("short"), 1700, 1400).unwrap(),
            NonceOutcome::Fresh
        );
        assert_eq!(
            store.check_and_record(&key("short"), 1700, 1500).unwrap(),
            NonceOutcome::Replayed
        );
        // Once "long" expires, the purge drops both, the stale queue entry harmlessly.
        store.check_and_record(&key("x"), 3000, 2001).unwrap();
        assert_eq!(store.len(), 1);
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
