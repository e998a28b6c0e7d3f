//! The sign-in counters of [`crate::throttle`], kept in the store so that they hold across
//! restarts and across every replica on the database.

use super::{Result, Store, check_owner_name};
use crate::args;
use crate::db::Tx;
use crate::throttle::{Counter, Rule, SignInPolicy, Wait};

/// Which counter refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottledBy {
    /// The name typed on the form (known or not).
    Name,
    /// The client's address.
    Address,
}

/// An attempt that may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Which counter.
    pub by: ThrottledBy,
    /// How long to wait.
    pub wait: Wait,
}

/// An attempt that started: pass it to [`Store::sign_in_failed`] if the password was
/// wrong, or to [`Store::create_session`] (through its name) if it was right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// Whether this attempt, if it fails, locks the name out.
    pub locks_name: bool,
}

/// At most once a minute, counters that are forgotten anyway are deleted.
const PURGE_EVERY_SECS: u64 = 60;

fn counter_in(tx: &Tx<'_>, subject: &str) -> Result<Counter> {
    Ok(tx
        .query_opt(
            "SELECT failures, last_failure, locked_until FROM sign_in_throttle
             WHERE subject = ?1",
            args![subject],
            |r| {
                Ok(Counter {
                    failures: u32::try_from(r.get::<i64>(0)?).unwrap_or(u32::MAX),
                    last_failure: r.get(1)?,
                    locked_until: r.get(2)?,
                })
            },
        )?
        .unwrap_or_default())
}

fn save_in(tx: &Tx<'_>, subject: &str, c: Counter) -> Result<()> {
    tx.execute(
        "INSERT INTO sign_in_throttle (subject, failures, last_failure, locked_until)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(subject) DO UPDATE SET failures = excluded.failures,
           last_failure = excluded.last_failure, locked_until = excluded.locked_until",
        args![subject, c.failures, c.last_failure, c.locked_until],
    )?;
    Ok(())
}

/// The counter subject of a name typed on the form; `None` for what cannot be an owner's
/// name (those are throttled by address only).
pub(crate) fn name_subject(name: &str) -> Option<String> {
    check_owner_name(name).ok().map(|()| format!("name:{name}"))
}

impl Store {
    /// Starts a sign-in attempt for `name` from the client whose throttle subject is
    /// `address` (see [`crate::throttle::address_subject`]): refused while either counter
    /// asks to wait, otherwise counted as a failure at once (so parallel guesses see each
    /// other) in one transaction. Unknown and known names are counted alike.
    pub fn begin_sign_in(
        &self,
        policy: &SignInPolicy,
        name: &str,
        address: &str,
        now: u64,
    ) -> Result<Result<Attempt, Throttled>> {
        let name = name_subject(name);
        self.write(|tx| {
            self.purge_throttle(tx, policy, now)?;
            let by_address = counter_in(tx, address)?;
            let by_name = match &name {
                Some(subject) => Some(counter_in(tx, subject)?),
                None => None,
            };
            let refuse = |rule: &Rule, counter, by| {
                rule.wait(counter, now).map(|wait| Throttled { by, wait })
            };
            let refused = by_name
                .and_then(|c| refuse(&policy.per_name, c, ThrottledBy::Name))
                .or_else(|| refuse(&policy.per_address, by_address, ThrottledBy::Address));
            if let Some(refused) = refused {
                return Ok(Err(refused));
            }
            save_in(tx, address, policy.per_address.start(by_address, now).0)?;
            let mut locks_name = false;
            if let (Some(subject), Some(counter)) = (&name, by_name) {
                let (counter, locks) = policy.per_name.start(counter, now);
                save_in(tx, subject, counter)?;
                locks_name = locks;
            }
            Ok(Ok(Attempt { locks_name }))
        })
    }

    /// The password of an attempt was wrong: if `name` is an owner, she is told at her next
    /// sign-in (how many failed, when the last was, how many locked her name).
    ///
    /// Known and unknown names write alike (the name's counter gets the failure's time),
    /// so that the commit does not tell them apart by its cost.
    pub fn sign_in_failed(&self, name: &str, attempt: Attempt, now: u64) -> Result<()> {
        self.write(|tx| {
            if let Some(subject) = name_subject(name) {
                // Not MAX(last_failure, ?2): PostgreSQL spells the two-argument MAX GREATEST.
                tx.execute(
                    "UPDATE sign_in_throttle
                     SET last_failure = CASE WHEN last_failure > ?2 THEN last_failure ELSE ?2 END
                     WHERE subject = ?1",
                    args![subject, now],
                )?;
            }
            tx.execute(
                "UPDATE owners SET failed_sign_ins = failed_sign_ins + 1,
                        last_failed_sign_in = ?2, lockouts = lockouts + ?3
                 WHERE name = ?1",
                args![name, now, attempt.locks_name],
            )?;
            Ok(())
        })
    }

    /// Deletes counters that [`Rule::wait`] would forget anyway, at most once a minute.
    fn purge_throttle(&self, tx: &Tx<'_>, policy: &SignInPolicy, now: u64) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let last = self.throttle_purged_at.load(Relaxed);
        if last.saturating_add(PURGE_EVERY_SECS) > now
            || self
                .throttle_purged_at
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_err()
        {
            return Ok(());
        }
        for (prefix, rule) in [("name:%", policy.per_name), ("addr:%", policy.per_address)] {
            tx.execute(
                "DELETE FROM sign_in_throttle WHERE subject LIKE ?1
                   AND last_failure <= ?2 AND locked_until <= ?3",
                args![prefix, now.saturating_sub(rule.forget_after_secs), now],
            )?;
        }
        Ok(())
    }
}
