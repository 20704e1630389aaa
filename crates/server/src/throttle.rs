//! Abuse limits on accounts: failed logins slow down per account and per
//! client address with growing delays, and registrations are limited per
//! client address. Kept in memory per node (a cluster node counts what it
//! sees), bounded in size.
//!
//! The account key is the canonical username whether or not it exists, so
//! the throttle answers alike for unknown and real accounts (no user
//! enumeration, like the password check itself).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::AuthConfig;

/// Most keys each table tracks; past it, entries whose delay has passed
/// and that were quiet for a while are dropped first.
const MAX_TRACKED: usize = 100_000;
/// An entry quiet this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Failed logins of one key.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    locked_until: Instant,
    last: Instant,
}

/// Registrations from one address: a token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Too many failed logins for this account.
    Account,
    /// Too many failed logins from this address.
    Address,
    /// Too many registrations from this address.
    Registration,
}

impl Scope {
    /// Its metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Account => "account",
            Scope::Address => "address",
            Scope::Registration => "registration",
        }
    }
}

/// A refusal: which limit, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The limit hit.
    pub scope: Scope,
    /// How long until a try may succeed.
    pub retry_after: Duration,
}

/// The login and registration limits of this node.
pub struct Throttle {
    accounts: Mutex<HashMap<String, Failures>>,
    addresses: Mutex<HashMap<IpAddr, Failures>>,
    registrations: Mutex<HashMap<IpAddr, Bucket>>,
    config: AuthConfig,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drops quiet entries once a table is full.
fn prune<K>(map: &mut HashMap<K, Failures>, now: Instant) {
    if map.len() >= MAX_TRACKED {
        map.retain(|_, f| f.locked_until > now || now.duration_since(f.last) < FORGET_AFTER);
    }
}

impl Throttle {
    /// Limits from the auth settings.
    pub fn new(config: AuthConfig) -> Throttle {
        Throttle {
            accounts: Mutex::default(),
            addresses: Mutex::default(),
            registrations: Mutex::default(),
            config,
        }
    }

    /// The delay after `count` failures when the first `free` cost nothing:
    /// 1 s, 2 s, 4 s, … up to `login_max_delay_s`.
    fn delay(&self, count: u32, free: u32) -> Duration {
        if count < free {
            return Duration::ZERO;
        }
        let exp = (count - free).min(20);
        let secs = (1u64 << exp).min(self.config.login_max_delay_s.max(1));
        Duration::from_secs(secs)
    }

    /// Whether a login for `account` from `addr` may be tried now.
    pub fn check_login(&self, account: &str, addr: IpAddr, now: Instant) -> Result<(), Refused> {
        if let Some(f) = lock(&self.accounts).get(account) {
            if f.locked_until > now {
                return Err(Refused {
                    scope: Scope::Account,
                    retry_after: f.locked_until - now,
                });
            }
        }
        if let Some(f) = lock(&self.addresses).get(&addr) {
            if f.locked_until > now {
                return Err(Refused {
                    scope: Scope::Address,
                    retry_after: f.locked_until - now,
                });
            }
        }
        Ok(())
    }

    /// Counts a failed login.
    pub fn login_failed(&self, account: &str, addr: IpAddr, now: Instant) {
        let bump = |f: &mut Failures, free: u32| {
            if now.duration_since(f.last) > FORGET_AFTER {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last = now;
            f.locked_until = now + self.delay(f.count, free);
        };
        let fresh = Failures {
            count: 0,
            locked_until: now,
            last: now,
        };
        {
            let mut accounts = lock(&self.accounts);
            prune(&mut accounts, now);
            bump(
                accounts.entry(account.to_owned()).or_insert(fresh),
                self.config.login_free_failures,
            );
        }
        let mut addresses = lock(&self.addresses);
        prune(&mut addresses, now);
        bump(
            addresses.entry(addr).or_insert(fresh),
            self.config.address_free_failures,
        );
    }

    /// A successful login clears the account's failures (not the
    /// address's: one right password does not excuse a spray).
    pub fn login_succeeded(&self, account: &str) {
        lock(&self.accounts).remove(account);
    }

    /// Takes a registration from `addr`'s allowance, or says when the next
    /// one will be allowed.
    pub fn register(&self, addr: IpAddr, now: Instant) -> Result<(), Refused> {
        let per_hour = f64::from(self.config.registrations_per_hour.max(1));
        let rate = per_hour / 3600.0;
        let mut buckets = lock(&self.registrations);
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, b| now.duration_since(b.at) < FORGET_AFTER);
        }
        let b = buckets.entry(addr).or_insert(Bucket {
            tokens: per_hour,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(per_hour);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        Err(Refused {
            scope: Scope::Registration,
            retry_after: Duration::from_secs_f64(((1.0 - b.tokens) / rate).ceil()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(AuthConfig {
            login_free_failures: 3,
            address_free_failures: 10,
            login_max_delay_s: 60,
            registrations_per_hour: 2,
            ..AuthConfig::default()
        })
    }

    #[test]
    fn failed_logins_lock_the_account_with_growing_delays() {
        let t = throttle();
        let addr: IpAddr = [10, 0, 0, 1].into();
        let now = Instant::now();
        for _ in 0..2 {
            t.login_failed("ann", addr, now);
            assert!(t.check_login("ann", addr, now).is_ok());
        }
        t.login_failed("ann", addr, now);
        let r = t.check_login("ann", addr, now).expect_err("locked");
        assert_eq!(
            (r.scope, r.retry_after),
            (Scope::Account, Duration::from_secs(1))
        );
        t.login_failed("ann", addr, now);
        let r = t.check_login("ann", addr, now).expect_err("locked");
        assert_eq!(r.retry_after, Duration::from_secs(2));
        // Another account from the same address is not locked out.
        assert!(t.check_login("bob", addr, now).is_ok());
        // After the delay it may try again; success clears it.
        let later = now + Duration::from_secs(3);
        assert!(t.check_login("ann", addr, later).is_ok());
        t.login_succeeded("ann");
        t.login_failed("ann", addr, later);
        assert!(t.check_login("ann", addr, later).is_ok());
    }

    #[test]
    fn delays_are_capped() {
        let t = throttle();
        assert_eq!(t.delay(100, 3), Duration::from_secs(60));
    }

    #[test]
    fn a_spray_over_many_accounts_locks_the_address() {
        let t = throttle();
        let addr: IpAddr = [10, 0, 0, 2].into();
        let now = Instant::now();
        for i in 0..10 {
            t.login_failed(&format!("user{i}"), addr, now);
        }
        let r = t
            .check_login("fresh", addr, now)
            .expect_err("address locked");
        assert_eq!(r.scope, Scope::Address);
        let other: IpAddr = [10, 0, 0, 3].into();
        assert!(t.check_login("fresh", other, now).is_ok());
    }

    #[test]
    fn registrations_refill_over_time() {
        let t = throttle();
        let addr: IpAddr = [10, 0, 0, 4].into();
        let now = Instant::now();
        assert!(t.register(addr, now).is_ok());
        assert!(t.register(addr, now).is_ok());
        let r = t.register(addr, now).expect_err("limited");
        assert_eq!(r.scope, Scope::Registration);
        assert_eq!(r.retry_after, Duration::from_secs(1800));
        assert!(t.register(addr, now + Duration::from_secs(1800)).is_ok());
        assert!(t.register([10, 0, 0, 5].into(), now).is_ok());
    }
}
