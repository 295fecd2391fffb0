//! Rate limits on the routes that publish commands: a tenant can otherwise spend what
//! all tenants share. Every command the gateway publishes appends to a log that is
//! never purged, and a check ("I've added the records", "Check again") can queue a
//! provider call at interactive priority on the platform's one rate-limited provider
//! account. So a command costs a token from two buckets:
//!
//! * the **tenant's** bucket, for every command (register, dns-configured, refresh,
//!   delete): by default 30 a minute after a burst of 10. A person on the page adds a
//!   few domains and presses a few buttons in a sitting; 10 at once covers adding a
//!   handful of domains in a row, and one every 2 s after that is more than a person
//!   clicks, while a script looping on the API is held to 30 commands (30 events, at
//!   most 30 provider calls) a minute instead of as many as the handlers can take;
//! * the **domain's** bucket, keyed by (tenant, domain), for the checks only
//!   (dns-configured, refresh): by default one every 10 s after a burst of 2. The
//!   owner can say "records added" and press "Check again" right after; more often
//!   than every 10 s a check learns nothing new (DNS answers are cached for minutes),
//!   while each one appends a full `dns_checked` event and may call the provider.
//!
//! Over either limit the request is answered 429 with `Retry-After` (whole seconds,
//! at least 1) and nothing is published; a request refused before it would publish
//! (a bad body, an unknown domain) costs no token.
//!
//! The limiter is per gateway process: with several replicas behind a load balancer a
//! tenant may get up to that many times the limits. The gateway is the only public
//! entry to the commands (operators' `domainctl` and the services publish on NATS
//! directly, under their own accounts), so this bounds what a tenant can do.
//!
//! Pure: no IO, no clock; the caller passes the time. Memory is bounded: a bucket that
//! has refilled completely is the same as none and is forgotten, and past
//! [`MAX_BUCKETS`] keys the least recently used one is dropped (which can only make
//! the limiter more lenient for that key, never refuse anyone for it).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The most buckets one [`Limiter`] keeps (a bucket is a few dozen bytes).
pub const MAX_BUCKETS: usize = 100_000;

/// A token bucket's shape: `burst` tokens at most, one more every `every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

impl Rate {
    /// `per_minute` tokens a minute (at least 1), `burst` at once (at least 1).
    pub fn per_minute(per_minute: u32, burst: u32) -> Rate {
        Rate {
            burst: burst.max(1),
            every: Duration::from_secs(60) / per_minute.max(1),
        }
    }

    /// One token every `secs` seconds (at least 1), `burst` at once (at least 1).
    pub fn every_secs(secs: u64, burst: u32) -> Rate {
        Rate {
            burst: burst.max(1),
            every: Duration::from_secs(secs.max(1)),
        }
    }

    /// How long an empty bucket takes to fill: after that, a bucket is as good as new.
    fn fill_time(&self) -> Duration {
        self.every * self.burst
    }
}

/// The gateway's default limits (see the module's documentation for why).
pub const TENANT_COMMANDS_PER_MINUTE: u32 = 30;
pub const TENANT_COMMAND_BURST: u32 = 10;
pub const DOMAIN_CHECK_INTERVAL_SECS: u64 = 10;
pub const DOMAIN_CHECK_BURST: u32 = 2;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Tokens as of `at`, in units of `Rate::every` (kept as time to avoid floats):
    /// `credit` = how much refill time the bucket holds, at most `fill_time`.
    credit: Duration,
    at: Instant,
}

/// Token buckets by key.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: Rate,
    buckets: HashMap<K, Bucket>,
    max_buckets: usize,
    last_sweep: Option<Instant>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: Rate) -> Self {
        Self::with_capacity(rate, MAX_BUCKETS)
    }

    /// A limiter keeping at most `max_buckets` keys (at least 1).
    pub fn with_capacity(rate: Rate, max_buckets: usize) -> Self {
        Limiter {
            rate,
            buckets: HashMap::new(),
            max_buckets: max_buckets.max(1),
            last_sweep: None,
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The credit of `key`'s bucket at `now` (a full bucket when unknown).
    fn credit(&self, key: &K, now: Instant) -> Duration {
        let full = self.rate.fill_time();
        match self.buckets.get(key) {
            None => full,
            Some(b) => (b.credit + now.saturating_duration_since(b.at)).min(full),
        }
    }

    /// How long until `key` has a token at `now` (zero: it has one now). Changes nothing.
    pub fn wait(&self, key: &K, now: Instant) -> Duration {
        self.rate.every.saturating_sub(self.credit(key, now))
    }

    /// Takes a token from `key`'s bucket at `now` if it has one; else how long until it
    /// will.
    pub fn take(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        let wait = self.wait(key, now);
        if !wait.is_zero() {
            return Err(wait);
        }
        self.spend(key, now);
        Ok(())
    }

    /// Spends a token of `key` at `now` (the caller checked [`Limiter::wait`]).
    fn spend(&mut self, key: &K, now: Instant) {
        let credit = self.credit(key, now).saturating_sub(self.rate.every);
        self.sweep(now);
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_buckets {
            // Still full after forgetting the refilled ones: drop the least recently used.
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| k.clone())
            {
                self.buckets.remove(&oldest);
            }
        }
        self.buckets.insert(key.clone(), Bucket { credit, at: now });
    }

    /// Forgets the buckets that have refilled completely (as good as none), at most
    /// once per fill time (or whenever the limiter is full), so the cost stays
    /// amortised.
    fn sweep(&mut self, now: Instant) {
        let full = self.rate.fill_time();
        let due = self
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= full);
        if !due && self.buckets.len() < self.max_buckets {
            return;
        }
        self.last_sweep = Some(now);
        self.buckets
            .retain(|_, b| b.credit + now.saturating_duration_since(b.at) < full);
    }
}

/// The gateway's two limiters.
#[derive(Debug)]
pub struct Limits {
    tenants: Limiter<Uuid>,
    checks: Limiter<(Uuid, Uuid)>,
}

/// A refused command: try again after this many whole seconds (at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

impl RetryAfter {
    fn of(wait: Duration) -> RetryAfter {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        RetryAfter(secs.max(1))
    }
}

impl Limits {
    pub fn new(tenant: Rate, check: Rate) -> Self {
        Limits {
            tenants: Limiter::new(tenant),
            checks: Limiter::new(check),
        }
    }

    /// Admits a command of `tenant` at `now`; `check` names the domain when the
    /// command is a check. Takes a token from each bucket concerned, or from none:
    /// a command refused by the domain's bucket costs the tenant nothing.
    pub fn admit(
        &mut self,
        tenant: Uuid,
        check: Option<Uuid>,
        now: Instant,
    ) -> Result<(), RetryAfter> {
        let mut wait = self.tenants.wait(&tenant, now);
        if let Some(domain) = check {
            wait = wait.max(self.checks.wait(&(tenant, domain), now));
        }
        if !wait.is_zero() {
            return Err(RetryAfter::of(wait));
        }
        self.tenants.spend(&tenant, now);
        if let Some(domain) = check {
            self.checks.spend(&(tenant, domain), now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_full_bucket_admits_its_burst_then_refuses_until_a_token_refills() {
        // Given a bucket of 3, one more every 2 s
        let mut l = Limiter::new(Rate::every_secs(2, 3));
        let t0 = Instant::now();
        // When 3 are taken at once, then a 4th
        for _ in 0..3 {
            assert_eq!(l.take(&"a", t0), Ok(()));
        }
        // Then the 4th waits the full 2 s, and half a second later 1.5 s
        assert_eq!(l.take(&"a", t0), Err(secs(2)));
        assert_eq!(
            l.take(&"a", t0 + Duration::from_millis(500)),
            Err(Duration::from_millis(1500))
        );
        // And after 2 s one is admitted, and only one
        assert_eq!(l.take(&"a", t0 + secs(2)), Ok(()));
        assert!(l.take(&"a", t0 + secs(2)).is_err());
    }

    #[test]
    fn a_bucket_never_holds_more_than_its_burst() {
        // Given a bucket of 2 unused for an hour
        let mut l = Limiter::new(Rate::every_secs(1, 2));
        let t0 = Instant::now();
        assert_eq!(l.take(&1, t0), Ok(()));
        let later = t0 + secs(3600);
        // When taken from three times at once
        // Then only two are admitted
        assert_eq!(l.take(&1, later), Ok(()));
        assert_eq!(l.take(&1, later), Ok(()));
        assert_eq!(l.take(&1, later), Err(secs(1)));
    }

    #[test]
    fn keys_do_not_share_a_bucket() {
        // Given key a has spent its only token
        let mut l = Limiter::new(Rate::every_secs(60, 1));
        let t0 = Instant::now();
        assert_eq!(l.take(&"a", t0), Ok(()));
        assert!(l.take(&"a", t0).is_err());
        // When b asks
        // Then b is admitted
        assert_eq!(l.take(&"b", t0), Ok(()));
    }

    #[test]
    fn a_refilled_bucket_is_forgotten() {
        // Given two keys that each took a token
        let rate = Rate::every_secs(5, 2);
        let mut l = Limiter::new(rate);
        let t0 = Instant::now();
        l.take(&"a", t0).unwrap();
        l.take(&"b", t0).unwrap();
        assert_eq!(l.len(), 2);
        // When a third asks after both refilled completely
        l.take(&"c", t0 + rate.every * rate.burst).unwrap();
        // Then only the third is remembered
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn memory_is_bounded_by_dropping_the_least_recently_used() {
        // Given a limiter for 3 keys, holding 3 that have not refilled
        let mut l = Limiter::with_capacity(Rate::every_secs(3600, 1), 3);
        let t0 = Instant::now();
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            l.take(k, t0 + secs(i as u64)).unwrap();
        }
        // When a 4th key takes a token
        l.take(&"d", t0 + secs(10)).unwrap();
        // Then it holds 3 keys: the oldest (a) was forgotten (a full bucket again)
        assert_eq!(l.len(), 3);
        assert_eq!(l.take(&"a", t0 + secs(11)), Ok(()));
        assert!(l.take(&"c", t0 + secs(11)).is_err());
    }

    #[test]
    fn the_rates_read_as_configured() {
        assert_eq!(Rate::per_minute(30, 10).every, secs(2));
        assert_eq!(Rate::per_minute(0, 0), Rate::per_minute(1, 1));
        assert_eq!(Rate::every_secs(0, 0), Rate::every_secs(1, 1));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        assert_eq!(RetryAfter::of(Duration::from_millis(1)), RetryAfter(1));
        assert_eq!(RetryAfter::of(Duration::from_millis(1001)), RetryAfter(2));
        assert_eq!(RetryAfter::of(secs(5)), RetryAfter(5));
        assert_eq!(RetryAfter::of(Duration::ZERO), RetryAfter(1));
    }

    #[test]
    fn a_tenant_over_its_limit_is_refused_and_another_tenant_is_not() {
        // Given the default limits and a tenant that spent its burst
        let mut limits = Limits::new(
            Rate::per_minute(TENANT_COMMANDS_PER_MINUTE, TENANT_COMMAND_BURST),
            Rate::every_secs(DOMAIN_CHECK_INTERVAL_SECS, DOMAIN_CHECK_BURST),
        );
        let (t, other) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Instant::now();
        for _ in 0..TENANT_COMMAND_BURST {
            assert_eq!(limits.admit(t, None, now), Ok(()));
        }
        // When it sends one more, and another tenant sends one
        // Then the first waits for a token (2 s at 30 a minute), the other is admitted
        assert_eq!(limits.admit(t, None, now), Err(RetryAfter(2)));
        assert_eq!(limits.admit(other, None, now), Ok(()));
    }

    #[test]
    fn checks_of_one_domain_are_paced_and_a_refused_check_costs_the_tenant_nothing() {
        // Given a tenant with room for 3 commands and a domain checked twice
        let mut limits = Limits::new(Rate::every_secs(60, 3), Rate::every_secs(10, 2));
        let (t, d, e) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let now = Instant::now();
        assert_eq!(limits.admit(t, Some(d), now), Ok(()));
        assert_eq!(limits.admit(t, Some(d), now), Ok(()));
        // When the domain is checked a third time at once
        // Then it waits for the domain's next token (10 s)
        assert_eq!(limits.admit(t, Some(d), now), Err(RetryAfter(10)));
        // And the refusal took no tenant token: a check of another domain is admitted
        assert_eq!(limits.admit(t, Some(e), now), Ok(()));
        // And now the tenant's bucket is empty, for every command
        assert_eq!(limits.admit(t, None, now), Err(RetryAfter(60)));
        assert_eq!(
            limits.admit(t, Some(d), now + secs(10)),
            Err(RetryAfter(50))
        );
    }
}
