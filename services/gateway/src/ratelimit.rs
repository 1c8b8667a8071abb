//! Token-bucket rate limiting, keyed by user id or client IP.
//!
//! Each key has a [`TokenBucket`] of `burst` tokens that refills at `per_minute / 60` tokens a
//! second; a request takes one token or is refused with the time until the next token (the
//! `Retry-After`). Buckets live in a [`ShardedMap`] so that concurrent requests for different
//! keys rarely contend on a lock; a periodic [`RateLimiter::sweep`] drops buckets that have
//! refilled completely, which are indistinguishable from absent ones, so memory follows the
//! number of recently active keys rather than every key ever seen.

use std::borrow::Borrow;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::ratelimit::{Rate, TokenBucket};

use crate::shards::ShardedMap;

/// A keyed token-bucket limiter.
#[derive(Debug)]
pub struct RateLimiter<K> {
    buckets: ShardedMap<K, TokenBucket>,
    rate: Rate,
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// A limiter of `per_minute` requests a minute with bursts of `burst`; `None` when
    /// `per_minute` is 0 (the limit is off).
    pub fn new(per_minute: u32, burst: u32) -> Option<Self> {
        if per_minute == 0 {
            return None;
        }
        Some(Self {
            buckets: ShardedMap::new(),
            rate: Rate::per_minute(per_minute, burst),
        })
    }

    /// Takes a token for `key` now: `Err(retry_after)` when the bucket is empty.
    pub fn check<Q>(&self, key: &Q) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.check_at(key, Instant::now())
    }

    /// [`RateLimiter::check`] at a given instant (for tests).
    pub fn check_at<Q>(&self, key: &Q, now: Instant) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut shard = self.buckets.shard(key);
        // The key is copied only the first time it is seen.
        match shard.get_mut(key) {
            Some(bucket) => bucket.take(now),
            None => shard
                .entry(key.to_owned())
                .or_insert_with(|| TokenBucket::new(self.rate, now))
                .take(now),
        }
    }

    /// Drops buckets that are full again by `now`.
    pub fn sweep(&self, now: Instant) {
        self.buckets.retain(|_, bucket| !bucket.is_full_at(now));
    }

    /// Number of tracked keys.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Whole seconds for `Retry-After`, rounded up and at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

/// The rate-limit key of a client address: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64,
/// because one subscriber usually holds a whole /64 and could otherwise rotate addresses.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_full_bucket_allows_the_burst_then_refuses_with_the_wait_for_one_token() {
        let limiter = RateLimiter::<String>::new(60, 3).unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check_at("alice", t0).unwrap();
        }
        let wait = limiter.check_at("alice", t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        assert_eq!(retry_after_secs(wait), 1);
        // Other keys have their own bucket.
        limiter.check_at("bob", t0).unwrap();
    }

    #[test]
    fn tokens_refill_at_the_configured_rate_up_to_the_burst() {
        let limiter = RateLimiter::<String>::new(120, 2).unwrap(); // 2 tokens a second
        let t0 = Instant::now();
        limiter.check_at("k", t0).unwrap();
        limiter.check_at("k", t0).unwrap();
        assert!(limiter.check_at("k", t0).is_err());
        limiter
            .check_at("k", t0 + Duration::from_millis(500))
            .unwrap();
        assert!(
            limiter
                .check_at("k", t0 + Duration::from_millis(600))
                .is_err()
        );
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(3600);
        limiter.check_at("k", later).unwrap();
        limiter.check_at("k", later).unwrap();
        assert!(limiter.check_at("k", later).is_err());
    }

    #[test]
    fn a_zero_rate_switches_the_limit_off() {
        assert!(RateLimiter::<String>::new(0, 10).is_none());
    }

    #[test]
    fn sweeping_drops_only_refilled_buckets() {
        let limiter = RateLimiter::<String>::new(60, 1).unwrap();
        let t0 = Instant::now();
        limiter.check_at("old", t0).unwrap();
        limiter
            .check_at("new", t0 + Duration::from_millis(1500))
            .unwrap();
        limiter.sweep(t0 + Duration::from_millis(1600));
        assert_eq!(limiter.len(), 1);
        limiter.sweep(t0 + Duration::from_secs(10));
        assert!(limiter.is_empty());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(ip_key(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
    }
}
