//! Deterministic, jittered waiting times for callers that retry provider calls.
//!
//! Deterministic so that tests (and replays) see the same delays for the same seed;
//! jittered so that many domains failing together do not retry in lock step.

use std::time::Duration;

/// SplitMix64: a tiny, well-mixed hash of the seed; enough for jitter, no RNG state.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fraction in `[0, 1]` drawn from the seed.
fn unit(seed: u64) -> f64 {
    (mix(seed) >> 11) as f64 / ((1u64 << 53) - 1) as f64
}

/// Exponential backoff with "equal jitter": the ceiling is `base * 2^attempt`, capped at
/// `max`; the result lies in `[ceiling / 2, ceiling]`, chosen by `seed` and `attempt`.
///
/// `attempt` counts from 0 (the first retry). The same arguments always give the same
/// delay; never more than `max`.
pub fn jittered_backoff(attempt: u32, base: Duration, max: Duration, seed: u64) -> Duration {
    let factor = 2f64.powi(attempt.min(62) as i32);
    let ceiling = base.as_secs_f64() * factor;
    let ceiling = ceiling.min(max.as_secs_f64());
    let half = ceiling / 2.0;
    let jitter = half * unit(seed ^ u64::from(attempt).wrapping_mul(0xA24B_AED4_963E_E407));
    Duration::from_secs_f64(half + jitter).min(max)
}

/// A provider's `retry-after` plus a little jitter: never less than `d`, at most
/// `d + d/4 + 100 ms`, chosen by `seed`. Waiting at least `d` honours the provider; the
/// spread keeps callers that were all told the same `d` from returning at once.
pub fn retry_after_with_jitter(d: Duration, seed: u64) -> Duration {
    let spread = d / 4 + Duration::from_millis(100);
    d + spread.mul_f64(unit(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn backoff_is_deterministic_for_a_seed() {
        for attempt in 0..10 {
            assert_eq!(
                jittered_backoff(attempt, BASE, MAX, 42),
                jittered_backoff(attempt, BASE, MAX, 42)
            );
        }
    }

    #[test]
    fn backoff_grows_exponentially_within_half_to_full_ceiling() {
        for attempt in 0..8u32 {
            let ceiling = BASE * 2u32.pow(attempt);
            for seed in 0..50 {
                let d = jittered_backoff(attempt, BASE, MAX, seed);
                assert!(d >= ceiling / 2 && d <= ceiling, "{attempt} {seed} {d:?}");
            }
        }
    }

    #[test]
    fn backoff_never_exceeds_max_even_for_huge_attempts() {
        for attempt in [20, 63, 64, 1000, u32::MAX] {
            let d = jittered_backoff(attempt, BASE, MAX, 7);
            assert!(d <= MAX && d >= MAX / 2, "{attempt} {d:?}");
        }
    }

    #[test]
    fn backoff_differs_between_seeds() {
        let delays: std::collections::HashSet<_> =
            (0..20).map(|s| jittered_backoff(5, BASE, MAX, s)).collect();
        assert!(delays.len() > 10);
    }

    #[test]
    fn retry_after_jitter_never_waits_less_than_asked() {
        let d = Duration::from_secs(2);
        for seed in 0..100 {
            let j = retry_after_with_jitter(d, seed);
            assert!(
                j >= d && j <= d + d / 4 + Duration::from_millis(100),
                "{j:?}"
            );
        }
        assert_eq!(retry_after_with_jitter(d, 9), retry_after_with_jitter(d, 9));
    }
}
