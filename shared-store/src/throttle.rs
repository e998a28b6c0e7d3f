//! Sign-in throttling, as pure rules over a counter: how long a name or a client address
//! must wait before its next sign-in attempt, and when it is locked out.
//!
//! Every attempt counts as a failure when it starts (so parallel guesses all see each
//! other); a successful sign-in forgets the name's counter and takes its own attempt off
//! the address's (so only failures count there: many owners behind one NAT all sign in). After `free_failures` failures
//! each further attempt waits twice as long as the one before (1 s, 2 s, 4 s…, at most
//! `max_delay_secs`); at `lockout_after` failures the subject is locked for `lockout_secs`,
//! and every failure after that locks it again. A counter untouched for `forget_after_secs`
//! starts over. The store keeps the counters ([`crate::Store::begin_sign_in`]); this
//! module only decides.

use std::net::{IpAddr, Ipv6Addr};

use serde::Deserialize;

/// The rules for one kind of subject (a name, or a client address).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Failures allowed without any wait.
    pub free_failures: u32,
    /// The longest wait between two attempts before the lockout, in seconds.
    pub max_delay_secs: u64,
    /// Failures after which the subject is locked out.
    pub lockout_after: u32,
    /// How long a lockout lasts, in seconds.
    pub lockout_secs: u64,
    /// A counter with no failure for this long is forgotten, in seconds.
    pub forget_after_secs: u64,
}

/// The sign-in rules: per name (known or not, so both behave alike) and per client address
/// (IPv4 address, or IPv6 /64).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SignInPolicy {
    /// Per name typed on the form.
    pub per_name: Rule,
    /// Per client address.
    pub per_address: Rule,
}

impl Default for SignInPolicy {
    fn default() -> Self {
        Self {
            per_name: Rule {
                free_failures: 5,
                max_delay_secs: 60,
                lockout_after: 20,
                lockout_secs: 15 * 60,
                forget_after_secs: 24 * 3600,
            },
            per_address: Rule {
                free_failures: 20,
                max_delay_secs: 60,
                lockout_after: 100,
                lockout_secs: 3600,
                forget_after_secs: 24 * 3600,
            },
        }
    }
}

impl SignInPolicy {
    /// What is wrong with these rules, if anything.
    pub fn check(&self) -> Result<(), String> {
        for (name, rule) in [
            ("per_name", self.per_name),
            ("per_address", self.per_address),
        ] {
            if rule.lockout_after == 0 || rule.lockout_after <= rule.free_failures {
                return Err(format!(
                    "sign_in.{name}.lockout_after must be more than free_failures ({} <= {})",
                    rule.lockout_after, rule.free_failures
                ));
            }
            if rule.lockout_secs == 0 || rule.max_delay_secs == 0 {
                return Err(format!(
                    "sign_in.{name}: lockout_secs and max_delay_secs must be at least 1"
                ));
            }
        }
        Ok(())
    }
}

/// The counter of one subject, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    /// Attempts that did not (yet) succeed.
    pub failures: u32,
    /// When the last one started (seconds since 1970).
    pub last_failure: u64,
    /// Locked until this time (0: not locked).
    pub locked_until: u64,
}

/// Why an attempt may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Too soon after the last failure: retry in this many seconds.
    Delay(u64),
    /// Locked out for this many more seconds.
    Locked(u64),
}

impl Wait {
    /// Seconds until the next attempt may start.
    pub fn secs(self) -> u64 {
        match self {
            Self::Delay(s) | Self::Locked(s) => s,
        }
    }
}

impl Rule {
    /// Whether an attempt may start at `now`, given the counter.
    pub fn wait(&self, counter: Counter, now: u64) -> Option<Wait> {
        if counter.locked_until > now {
            return Some(Wait::Locked(counter.locked_until - now));
        }
        let counter = self.current(counter, now);
        if counter.failures < self.free_failures {
            return None;
        }
        let doublings = (counter.failures - self.free_failures).min(32);
        let delay = (1u64 << doublings).min(self.max_delay_secs);
        let next = counter.last_failure.saturating_add(delay);
        (next > now).then(|| Wait::Delay(next - now))
    }

    /// The counter once an attempt starts at `now` (the caller has checked
    /// [`Rule::wait`]), and whether this attempt locks the subject if it fails.
    pub fn start(&self, counter: Counter, now: u64) -> (Counter, bool) {
        let mut counter = self.current(counter, now);
        counter.failures = counter.failures.saturating_add(1);
        counter.last_failure = now;
        let locks = counter.failures >= self.lockout_after;
        if locks {
            counter.locked_until = now.saturating_add(self.lockout_secs);
        }
        (counter, locks)
    }

    /// The counter with stale state forgotten.
    fn current(&self, counter: Counter, now: u64) -> Counter {
        if counter.last_failure.saturating_add(self.forget_after_secs) <= now {
            Counter::default()
        } else {
            counter
        }
    }
}

/// The group a client address counts in, for the sign-in throttle and the connection caps:
/// an IPv4 address (also when IPv4-mapped), or the /64 of an IPv6 one (one host usually holds
/// a whole /64).
pub fn client_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

/// The throttle subject of a client address: `addr:` and its [`client_group`] (`/64` after
/// an IPv6 one).
pub fn address_subject(ip: IpAddr) -> String {
    match client_group(ip) {
        IpAddr::V4(v4) => format!("addr:{v4}"),
        IpAddr::V6(v6) => format!("addr:{v6}/64"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Rule {
        SignInPolicy::default().per_name
    }

    /// Tries an attempt at each of `times`, starting it whenever the rule allows; returns
    /// what the rule said before each (`None`: it started).
    fn replay(rule: Rule, times: &[u64]) -> Vec<Option<Wait>> {
        let mut counter = Counter::default();
        times
            .iter()
            .map(|&now| {
                let wait = rule.wait(counter, now);
                if wait.is_none() {
                    counter = rule.start(counter, now).0;
                }
                wait
            })
            .collect()
    }

    #[test]
    fn five_free_then_doubling_delays_then_a_lockout() {
        let r = rule();
        // Five attempts in the same second are free; the sixth must wait 1 s.
        let got = replay(r, &[1000, 1000, 1000, 1000, 1000, 1000]);
        assert_eq!(got[..5], [None; 5]);
        assert_eq!(got[5], Some(Wait::Delay(1)));
        // Waiting exactly as long as asked: 1, 2, 4, 8, 16, 32, 60, 60… seconds.
        let mut counter = Counter::default();
        let mut now = 1000;
        let mut delays = Vec::new();
        for _ in 0..5 {
            counter = r.start(counter, now).0;
        }
        loop {
            match r.wait(counter, now) {
                None => {
                    let (next, locks) = r.start(counter, now);
                    counter = next;
                    if locks {
                        break;
                    }
                }
                Some(Wait::Delay(d)) => {
                    delays.push(d);
                    now += d;
                }
                Some(Wait::Locked(_)) => unreachable!("locked before the 20th failure"),
            }
        }
        assert_eq!(
            delays,
            [1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60, 60, 60, 60, 60]
        );
        assert_eq!(counter.failures, 20);
        assert_eq!(r.wait(counter, now), Some(Wait::Locked(900)));
        assert_eq!(r.wait(counter, now + 899), Some(Wait::Locked(1)));
        // After the lockout one more failure locks again at once.
        let (again, locks) = r.start(counter, now + 900);
        assert!(locks);
        assert_eq!(r.wait(again, now + 900), Some(Wait::Locked(900)));
    }

    #[test]
    fn a_quiet_day_forgets_the_counter() {
        let r = rule();
        let mut counter = Counter::default();
        for _ in 0..10 {
            counter = r.start(counter, 1000).0;
        }
        assert_eq!(r.wait(counter, 1001), Some(Wait::Delay(31)));
        assert_eq!(r.wait(counter, 1000 + 86_400), None);
        assert_eq!(r.start(counter, 1000 + 86_400).0.failures, 1);
    }

    #[test]
    fn policies_that_never_lock_are_refused() {
        let mut p = SignInPolicy::default();
        p.per_address.lockout_after = 20;
        assert_eq!(
            p.check().unwrap_err(),
            "sign_in.per_address.lockout_after must be more than free_failures (20 <= 20)"
        );
    }

    #[test]
    fn clients_are_grouped_by_ipv4_address_and_ipv6_64() {
        let cases = [
            ("127.0.0.2", "127.0.0.2", "addr:127.0.0.2"),
            ("::ffff:192.0.2.7", "192.0.2.7", "addr:192.0.2.7"),
            (
                "2001:db8:1:2:3:4:5:6",
                "2001:db8:1:2::",
                "addr:2001:db8:1:2::/64",
            ),
            (
                "2001:db8:1:2:ffff:ffff:ffff:ffff",
                "2001:db8:1:2::",
                "addr:2001:db8:1:2::/64",
            ),
            (
                "2001:db8:1:3::1",
                "2001:db8:1:3::",
                "addr:2001:db8:1:3::/64",
            ),
            ("::1", "::", "addr:::/64"),
        ];
        for (ip, group, subject) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(client_group(ip).to_string(), group, "{ip}");
            assert_eq!(address_subject(ip), subject, "{ip}");
        }
    }
}
