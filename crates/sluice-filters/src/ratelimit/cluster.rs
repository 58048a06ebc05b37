//! Cluster-wide rate limits: the GCRA state of each key lives in Redis, shared by every
//! Sluice instance that uses the same Redis and limit name, and instances take it in
//! *leases* so that Redis is not asked on every request.
//!
//! A lease is a batch of consecutive GCRA slots granted atomically by one script run (on
//! Redis's clock, `TIME`): the script advances the key's theoretical arrival time by as
//! many slots as are free right now (at most the number asked for) and answers where the
//! first slot starts. The instance then hands those slots out locally, each at its own
//! time, exactly as GCRA would have: a request never gets a slot Redis did not grant, so
//! the instances together never exceed the limit. The costs of that rule:
//!
//! - A slot leased and not used within a second is dropped, which makes the limit
//!   slightly stricter, never looser. Lease sizes adapt per key: they start at 1 and
//!   double while the key uses them up quickly (at most a quarter of the burst, and 64),
//!   and halve when slots go unused, so a quiet key asks for one slot at a time (exact)
//!   and a busy one asks Redis once per dozens of requests.
//! - Requests of one key that arrive while its lease is being fetched wait for that one
//!   fetch (no thundering herd on Redis).
//! - When Redis refuses (no free slot), the key is refused locally until the time Redis
//!   named, without asking again: a flood from a limited client costs Redis nothing.
//!
//! When Redis cannot be reached (or answers later than its timeout), the limit does what
//! `on-redis-error` says: allow, deny, or fall back to a limit local to this instance.
//! Each such request is counted, and the condition is logged at most every 30 seconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use sluice_core::gcra::{Decision, Gcra};
use tokio::sync::Notify;

use super::redis::{Redis, RedisError, Value};

const SHARDS: usize = 16;
const LEASE_TTL: Duration = Duration::from_secs(1);

/// What a Redis-backed limit does while Redis is unreachable.
#[derive(Debug)]
pub enum Fallback {
    /// Let requests through.
    Allow,
    /// Refuse them.
    Deny,
    /// Apply this local limit.
    Local(Gcra),
}

/// Counters of a cluster-wide limit.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Lease requests sent to Redis.
    pub leases: AtomicU64,
    /// Requests decided by `on-redis-error` because Redis could not answer.
    pub fallbacks: AtomicU64,
}

#[derive(Debug)]
struct KeyState {
    /// When the next leased slot starts (ns on this limit's clock; may be in the past).
    next_ready: i64,
    remaining: u32,
    expires: u64,
    blocked_until: u64,
    lease_size: u32,
    lease_started: u64,
    /// Until when the key uses the fallback after a failed fetch (requests that waited
    /// for that fetch do not each ask Redis again and wait their own timeout).
    failed_until: u64,
    fetching: Option<Arc<Notify>>,
}

impl Default for KeyState {
    fn default() -> Self {
        Self {
            next_ready: 0,
            remaining: 0,
            expires: 0,
            blocked_until: 0,
            lease_size: 1,
            lease_started: 0,
            failed_until: 0,
            fetching: None,
        }
    }
}

/// The Redis side of one limit.
#[derive(Debug)]
pub struct ClusterLimit {
    redis: Arc<Redis>,
    key_prefix: Vec<u8>,
    interval_ns: u64,
    tolerance_ns: u64,
    delay_ns: u64,
    max_lease: u32,
    max_per_shard: usize,
    fallback: Fallback,
    shards: Vec<Mutex<HashMap<u64, KeyState>>>,
    epoch: Instant,
    last_warning: Mutex<Option<Instant>>,
    /// Counters.
    pub stats: ClusterStats,
}

/// Clears a key's fetch marker and wakes its waiters even if the fetching request is
/// cancelled midway (a client that went away must not leave the key stuck).
struct Fetching<'a> {
    limit: &'a ClusterLimit,
    key: u64,
    notify: Arc<Notify>,
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        let mut shard = self.limit.shard(self.key);
        if let Some(state) = shard.get_mut(&self.key) {
            if state.fetching.as_ref().is_some_and(|n| Arc::ptr_eq(n, &self.notify)) {
                state.fetching = None;
            }
        }
        drop(shard);
        self.notify.notify_waiters();
    }
}

impl ClusterLimit {
    /// The limit `name` (its Redis keys are `<prefix>rl:<name>:<key>`) with the rate of
    /// `local` (whose state is used only as the `Local` fallback).
    pub fn new(redis: Arc<Redis>, name: &str, gcra: &Gcra, fallback: Fallback, max_keys: usize) -> Self {
        let mut key_prefix = Vec::new();
        key_prefix.extend_from_slice(redis.settings().prefix.as_bytes());
        key_prefix.extend_from_slice(b"rl:");
        key_prefix.extend_from_slice(name.as_bytes());
        key_prefix.push(b':');
        let interval_ns = u64::try_from(gcra.interval().as_nanos()).unwrap_or(u64::MAX).max(1000);
        Self {
            redis,
            key_prefix,
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(gcra.burst())),
            delay_ns: u64::try_from(gcra.delay().as_nanos()).unwrap_or(u64::MAX),
            max_lease: ((gcra.burst() + 1) / 4).clamp(1, 64),
            max_per_shard: (max_keys / SHARDS).max(16),
            fallback,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            epoch: Instant::now(),
            last_warning: Mutex::new(None),
            stats: ClusterStats::default(),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, KeyState>> {
        self.shards[(key as usize) % SHARDS].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides one request of the key whose local hash is `key` and whose stable
    /// (cross-instance) hash is `stable`.
    pub async fn check(&self, key: u64, stable: u128) -> Decision {
        loop {
            let now = self.now_ns();
            let (notify, fetch) = {
                let mut shard = self.shard(key);
                if !shard.contains_key(&key) && shard.len() >= self.max_per_shard {
                    // Bounded: forget some key that is not being fetched.
                    if let Some(old) = shard.iter().find(|(_, s)| s.fetching.is_none()).map(|(k, _)| *k) {
                        shard.remove(&old);
                    }
                }
                let state = shard.entry(key).or_default();
                if now < state.blocked_until {
                    return Decision::Reject(Duration::from_nanos(state.blocked_until - now));
                }
                if now < state.failed_until {
                    drop(shard);
                    return self.fall_back(key, &RedisError::Down);
                }
                if state.remaining > 0 && now < state.expires {
                    let ready = state.next_ready;
                    state.remaining -= 1;
                    state.next_ready =
                        state.next_ready.saturating_add(i64::try_from(self.interval_ns).unwrap_or(i64::MAX));
                    if state.remaining == 0
                        && now - state.lease_started < u64::try_from(LEASE_TTL.as_nanos() / 2).unwrap_or(0)
                    {
                        state.lease_size = (state.lease_size * 2).min(self.max_lease);
                    }
                    let now_i = i64::try_from(now).unwrap_or(i64::MAX);
                    return if ready <= now_i {
                        Decision::Allow { remaining: state.remaining }
                    } else {
                        Decision::Delay(Duration::from_nanos(u64::try_from(ready - now_i).unwrap_or(0)))
                    };
                }
                if state.remaining > 0 {
                    // Slots went unused for a whole lease: ask for fewer next time.
                    state.remaining = 0;
                    state.lease_size = (state.lease_size / 2).max(1);
                }
                match &state.fetching {
                    Some(n) => (n.clone(), None),
                    None => {
                        let n = Arc::new(Notify::new());
                        state.fetching = Some(n.clone());
                        (n, Some(state.lease_size))
                    }
                }
            };
            match fetch {
                None => {
                    // Another request of this key is fetching: wait for its lease.
                    let notified = notify.notified();
                    let still = self
                        .shard(key)
                        .get(&key)
                        .is_some_and(|s| s.fetching.as_ref().is_some_and(|n| Arc::ptr_eq(n, &notify)));
                    if still {
                        let _ = tokio::time::timeout(self.redis.settings().timeout.saturating_mul(2), notified).await;
                    }
                }
                Some(wanted) => {
                    let guard = Fetching { limit: self, key, notify };
                    if let Err(e) = self.fetch(key, stable, wanted).await {
                        let retry = u64::try_from(self.redis.settings().timeout.as_nanos()).unwrap_or(u64::MAX);
                        if let Some(state) = self.shard(key).get_mut(&key) {
                            state.failed_until = self.now_ns().saturating_add(retry);
                        }
                        drop(guard);
                        return self.fall_back(key, &e);
                    }
                    drop(guard);
                }
            }
        }
    }

    async fn fetch(&self, key: u64, stable: u128, wanted: u32) -> Result<(), RedisError> {
        let mut redis_key = BytesMut::with_capacity(self.key_prefix.len() + 32);
        redis_key.put_slice(&self.key_prefix);
        let mut hex = [0u8; 32];
        for (i, b) in hex.iter_mut().enumerate() {
            *b = b"0123456789abcdef"[((stable >> (124 - 4 * i)) & 0xf) as usize];
        }
        redis_key.put_slice(&hex);
        self.stats.leases.fetch_add(1, Ordering::Relaxed);
        let args = [u64::from(wanted), self.interval_ns / 1000, self.tolerance_ns / 1000, self.delay_ns / 1000];
        let reply = self.redis.lease(&redis_key, args).await?;
        let now = self.now_ns();
        let (granted, tat_us, redis_now_us) = match reply {
            Value::Array(Some(items)) => match items.as_slice() {
                [Value::Integer(g), Value::Integer(t), Value::Integer(n)] => (*g, *t, *n),
                _ => return Err(RedisError::Reply("unexpected lease answer".into())),
            },
            _ => return Err(RedisError::Reply("unexpected lease answer".into())),
        };
        // Redis time (µs) -> this limit's clock (ns).
        let offset = i128::from(now) - i128::from(redis_now_us) * 1000;
        let local = |redis_us: i128| -> i64 { i64::try_from(redis_us * 1000 + offset).unwrap_or(i64::MAX) };
        let tolerance_us = i128::from(self.tolerance_ns / 1000);
        let mut shard = self.shard(key);
        let state = shard.entry(key).or_default();
        if granted > 0 {
            state.remaining = u32::try_from(granted).unwrap_or(u32::MAX);
            state.next_ready = local(i128::from(tat_us) - tolerance_us);
            state.expires = now + u64::try_from(LEASE_TTL.as_nanos()).unwrap_or(u64::MAX);
            state.lease_started = now;
        } else {
            let free_at = local(i128::from(tat_us) - tolerance_us - i128::from(self.delay_ns / 1000));
            state.blocked_until = u64::try_from(free_at).unwrap_or(0).max(now + 1_000_000);
        }
        Ok(())
    }

    fn fall_back(&self, key: u64, error: &RedisError) -> Decision {
        self.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_warning.lock() {
            if last.is_none_or(|at| at.elapsed() > Duration::from_secs(30)) {
                *last = Some(Instant::now());
                let action = match &self.fallback {
                    Fallback::Allow => "allowing requests",
                    Fallback::Deny => "refusing requests",
                    Fallback::Local(_) => "limiting in this instance only",
                };
                tracing::warn!(error = %error, "cluster-wide rate limit cannot reach Redis: {action} (on-redis-error)");
            }
        }
        match &self.fallback {
            Fallback::Allow => Decision::Allow { remaining: 0 },
            Fallback::Deny => Decision::Reject(Duration::from_secs(1)),
            Fallback::Local(gcra) => gcra.check(key),
        }
    }

    /// Keys remembered now.
    pub fn keys(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |m| m.len())).sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ratelimit::redis::tests::unreachable;

    #[tokio::test]
    async fn after_a_failed_fetch_a_key_falls_back_without_asking_again_until_the_timeout() {
        // Nothing listens on the discard port: every call fails.
        let redis = Redis::start(unreachable(Duration::from_secs(30)));
        redis.wait_connected(Duration::from_secs(5)).await;
        let gcra = Gcra::new(1.0, 0, Duration::ZERO, 100);
        let limit = ClusterLimit::new(redis.clone(), "t", &gcra, Fallback::Allow, 100);
        for _ in 0..5 {
            assert!(matches!(limit.check(7, 7).await, Decision::Allow { .. }), "fails open");
        }
        assert_eq!(limit.stats.fallbacks.load(Ordering::Relaxed), 5);
        assert_eq!(limit.stats.leases.load(Ordering::Relaxed), 1, "one fetch, then the fallback");
        assert_eq!(redis.stats.errors.load(Ordering::Relaxed), 1);
        // Another key asks for itself.
        let _ = limit.check(8, 8).await;
        assert_eq!(limit.stats.leases.load(Ordering::Relaxed), 2);
    }
}
