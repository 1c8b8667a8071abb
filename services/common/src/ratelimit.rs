//! The token bucket behind every rate limit (the gateway's per user and per IP, signaling's per
//! socket).
//!
//! A bucket holds up to `burst` tokens and refills continuously at its rate; an action takes one
//! token or is refused with the time until the next one (what `Retry-After` says). The state is
//! two numbers and the clock is passed in, so callers keep buckets wherever suits them (a
//! sharded map, a socket's state) and tests need no sleeps. `governor` was considered: its
//! keyed limiter brings its own concurrent map and clock abstraction, and neither a
//! per-socket limit nor the gateway's sweep of idle keys needs more than this.

use std::time::{Duration, Instant};

/// How fast a bucket refills and how much it holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    per_second: f64,
    burst: f64,
}

impl Rate {
    /// `tokens` a second (at least one), holding at most `burst` (at least one).
    pub fn per_second(tokens: u32, burst: u32) -> Self {
        Self::new(f64::from(tokens.max(1)), burst)
    }

    /// `tokens` a minute (at least one), holding at most `burst` (at least one).
    pub fn per_minute(tokens: u32, burst: u32) -> Self {
        Self::new(f64::from(tokens.max(1)) / 60.0, burst)
    }

    fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst.max(1)),
        }
    }
}

/// One bucket. A new one is full.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    rate: Rate,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: Rate, now: Instant) -> Self {
        Self {
            rate,
            tokens: rate.burst,
            last: now,
        }
    }

    /// Takes one token at `now`, or says how long until there is one.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.tokens = self.tokens_at(now);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.rate.per_second,
            ))
        }
    }

    /// Takes one token at `now` if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.take(now).is_ok()
    }

    /// Whether the bucket has refilled completely by `now`: it is then no different from a new
    /// one, and whoever keeps buckets per key may forget it.
    pub fn is_full_at(&self, now: Instant) -> bool {
        self.tokens_at(now) >= self.rate.burst
    }

    fn tokens_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * self.rate.per_second).min(self.rate.burst)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_sustained_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(Rate::per_second(10, 3), start);
        assert!(bucket.try_take(start));
        assert!(bucket.try_take(start));
        assert!(bucket.try_take(start));
        assert!(!bucket.try_take(start));
        assert!(bucket.try_take(start + Duration::from_millis(100)));
        assert!(!bucket.try_take(start + Duration::from_millis(100)));
    }

    #[test]
    fn tokens_never_exceed_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(Rate::per_second(100, 2), start);
        let later = start + Duration::from_secs(60);
        assert!(bucket.try_take(later));
        assert!(bucket.try_take(later));
        assert!(!bucket.try_take(later));
    }

    #[test]
    fn a_refusal_says_how_long_until_the_next_token() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(Rate::per_minute(60, 1), start);
        bucket.take(start).unwrap();
        let wait = bucket.take(start).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        let wait = bucket.take(start + Duration::from_millis(250)).unwrap_err();
        assert!((wait.as_secs_f64() - 0.75).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn a_bucket_is_full_again_once_it_has_refilled() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(Rate::per_second(1, 2), start);
        assert!(bucket.is_full_at(start));
        bucket.take(start).unwrap();
        assert!(!bucket.is_full_at(start + Duration::from_millis(500)));
        assert!(bucket.is_full_at(start + Duration::from_secs(1)));
    }

    #[test]
    fn a_zero_rate_still_refills_instead_of_waiting_forever() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(Rate::per_minute(0, 0), start);
        bucket.take(start).unwrap();
        let wait = bucket.take(start).unwrap_err();
        assert!(wait <= Duration::from_secs(60), "{wait:?}");
    }
}
