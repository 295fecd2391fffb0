//! The re-check cadence and deadlines, as pure functions of the policy, the domain
//! id and the attempt number, so re-check times follow from the events (docs/interface.md §3).

use crate::event::{Event, EventData};
use crate::ids::DomainId;
use chrono::{DateTime, Duration, Utc};

/// The timing knobs (docs/interface.md §1 plus drift monitoring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub recheck_initial: Duration,
    pub recheck_max: Duration,
    pub verification_deadline: Duration,
    pub monitor_interval: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            recheck_initial: Duration::seconds(300),
            recheck_max: Duration::seconds(3600),
            verification_deadline: Duration::seconds(604_800),
            monitor_interval: Duration::seconds(86_400),
        }
    }
}

/// A stable 64-bit mix of the domain id and the attempt (FNV-1a then splitmix).
fn mix(domain: DomainId, attempt: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in domain
        .0
        .as_bytes()
        .iter()
        .chain(attempt.to_le_bytes().iter())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h
}

/// The delay before re-check number `attempt` (0 = the first after an owner's
/// command): `initial × 2^attempt`, capped at the maximum, with ±10 % jitter derived
/// from the domain id and attempt, so many domains registered at once spread out,
/// and a replay computes the same times.
pub fn recheck_delay(policy: &Policy, domain: DomainId, attempt: u32) -> Duration {
    let initial_ms = policy.recheck_initial.num_milliseconds().max(1);
    let max_ms = policy.recheck_max.num_milliseconds().max(initial_ms);
    let base = initial_ms
        .saturating_mul(1i64 << attempt.min(30))
        .min(max_ms);
    // jitter in [-10 %, +10 %)
    let unit = (mix(domain, attempt) % 2001) as i64 - 1000; // -1000..=1000
    let jitter = base / 10 * unit / 1000;
    Duration::milliseconds((base + jitter).max(1))
}

/// The next automatic check: after the cadence's delay, but never after the deadline
/// (so the deadline is noticed on time).
pub fn next_check(
    policy: &Policy,
    domain: DomainId,
    attempt: u32,
    now: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let at = now + recheck_delay(policy, domain, attempt);
    match deadline {
        Some(d) if d < at => d.max(now),
        _ => at,
    }
}

/// What an event does to the domain's timer in the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerChange {
    Set(DateTime<Utc>),
    Clear,
    Keep,
}

/// The scheduler's view of an event: timers derive from the log alone.
pub fn timer_change(event: &Event) -> TimerChange {
    let set_or_clear = |t: &Option<DateTime<Utc>>| match t {
        Some(t) => TimerChange::Set(*t),
        None => TimerChange::Clear,
    };
    match &event.data {
        // A domain waiting for the provider still has a deadline.
        EventData::DomainRegistered { deadline_at, .. } => TimerChange::Set(*deadline_at),
        EventData::WindowReopened { deadline_at }
        | EventData::ProviderDomainVanished { deadline_at, .. } => TimerChange::Set(*deadline_at),
        EventData::DomainProvisioned {
            next_check_at,
            cleanup_required,
            ..
        } => {
            if *cleanup_required {
                TimerChange::Clear
            } else {
                set_or_clear(next_check_at)
            }
        }
        EventData::DnsChecked { next_check_at, .. } => set_or_clear(next_check_at),
        EventData::ProviderPolled { next_check_at, .. } => set_or_clear(next_check_at),
        EventData::ProvisioningFailed { .. }
        | EventData::VerificationFailed { .. }
        | EventData::DomainDeleted { .. }
        | EventData::DomainReleased { .. } => TimerChange::Clear,
        EventData::CheckRequested { .. }
        | EventData::PreflightChecked { .. }
        | EventData::ProviderCleanedUp {} => TimerChange::Keep,
    }
}

/// Times in events are kept to the microsecond, the precision Postgres stores, so a
/// row rebuilt from the log equals the row projected live, to the last digit.
pub fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn the_delay_doubles_up_to_the_maximum_with_bounded_jitter() {
        let p = Policy::default();
        let d = DomainId(Uuid::from_u128(7));
        let secs = |a| recheck_delay(&p, d, a).num_milliseconds() as f64 / 1000.0;
        assert!((270.0..=330.0).contains(&secs(0)), "{}", secs(0));
        assert!((540.0..=660.0).contains(&secs(1)), "{}", secs(1));
        assert!((3240.0..=3960.0).contains(&secs(5)), "{}", secs(5));
        assert!(
            (3240.0..=3960.0).contains(&secs(40)),
            "capped: {}",
            secs(40)
        );
    }

    #[test]
    fn jitter_is_deterministic_and_spreads_domains() {
        let p = Policy::default();
        let a = recheck_delay(&p, DomainId(Uuid::from_u128(1)), 2);
        assert_eq!(a, recheck_delay(&p, DomainId(Uuid::from_u128(1)), 2));
        let distinct: std::collections::HashSet<i64> = (0..50u128)
            .map(|i| recheck_delay(&p, DomainId(Uuid::from_u128(i)), 2).num_milliseconds())
            .collect();
        assert!(distinct.len() > 40);
    }

    #[test]
    fn the_next_check_never_passes_the_deadline() {
        let p = Policy::default();
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let deadline = now + Duration::seconds(10);
        assert_eq!(
            next_check(&p, DomainId(Uuid::nil()), 3, now, Some(deadline)),
            deadline
        );
    }
}
