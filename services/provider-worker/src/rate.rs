//! One rate limit for every provider call (a reservation-based token bucket), which
//! a 429 pauses as a whole.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

pub struct RateLimiter {
    interval: Option<Duration>,
    next: Mutex<Instant>,
}

impl RateLimiter {
    /// `per_second: None` = unlimited.
    pub fn new(per_second: Option<f64>) -> Self {
        RateLimiter {
            interval: per_second
                .filter(|r| *r > 0.0)
                .map(|r| Duration::from_secs_f64(1.0 / r)),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this call's slot. Returns at once when the slot is now: even an
    /// elapsed `sleep_until` waits for the timer wheel's next tick (about 1 ms).
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().expect("rate limiter");
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval.unwrap_or(Duration::ZERO);
            slot
        };
        if slot > Instant::now() {
            tokio::time::sleep_until(slot).await;
        }
    }

    /// No call starts before `wait` from now.
    pub fn pause(&self, wait: Duration) {
        let mut next = self.next.lock().expect("rate limiter");
        *next = (*next).max(Instant::now() + wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_by_the_rate() {
        let limiter = RateLimiter::new(Some(4.0));
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_call() {
        let limiter = RateLimiter::new(None);
        limiter.pause(Duration::from_secs(3));
        let start = Instant::now();
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
}
