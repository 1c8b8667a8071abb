//! One sharded map for the gateway's per-key tables: the access-token cache, the rate limiters'
//! buckets and the long-polling session pins.
//!
//! Every request touches one or more of these, from every worker thread, under different keys.
//! Splitting a table into [`SHARDS`] independently locked maps makes two requests contend only
//! when their keys land in the same shard. The shard is picked with a keyed hash: the keys
//! (tokens, user ids, addresses, session ids) are chosen by clients, and a fixed hash would let
//! them pile every key into one shard.
//!
//! `dashmap` was considered: what the tables do under one lock (read an entry and drop it if it
//! has expired, empty a shard that is full) needs its raw shard API, which is most of what this
//! module is.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, MutexGuard};

/// How many locks a table is split into: a few times the cores of a typical gateway pod.
pub const SHARDS: usize = 16;

/// A `HashMap` split into [`SHARDS`] locked shards.
#[derive(Debug)]
pub struct ShardedMap<K, V> {
    shards: Box<[Mutex<HashMap<K, V>>]>,
    hasher: RandomState,
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The locked shard that holds `key` (whether or not it is there). Hold it only for the
    /// few operations of one request: every other key of the shard waits meanwhile.
    pub fn shard<Q>(&self, key: &Q) -> MutexGuard<'_, HashMap<K, V>>
    where
        K: Borrow<Q>,
        Q: Hash + ?Sized,
    {
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        lock(&self.shards[index])
    }

    /// Keeps only the entries for which `keep` says so, one shard at a time.
    pub fn retain(&self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for shard in self.shards.iter() {
            lock(shard).retain(|key, value| keep(key, value));
        }
    }

    /// Entries in all shards (a snapshot: the shards are counted one after another).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    /// Whether every shard is empty.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|shard| lock(shard).is_empty())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The tables hold plain values replaced whole; a request that panicked while holding a shard
    // cannot have left one half-written, so the shard is still usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_always_found_in_the_same_shard_whatever_form_it_is_looked_up_in() {
        let map = ShardedMap::<String, u32>::new();
        for i in 0..100 {
            map.shard(&i.to_string()).insert(i.to_string(), i);
        }
        assert_eq!(map.len(), 100);
        for i in 0..100 {
            let key = i.to_string();
            assert_eq!(map.shard(key.as_str()).get(key.as_str()), Some(&i));
        }
    }

    #[test]
    fn retain_visits_every_shard() {
        let map = ShardedMap::<u32, u32>::new();
        for i in 0..100 {
            map.shard(&i).insert(i, i);
        }
        map.retain(|_, value| *value % 2 == 0);
        assert_eq!(map.len(), 50);
        map.retain(|_, _| false);
        assert!(map.is_empty());
    }
}
