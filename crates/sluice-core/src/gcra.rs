//! GCRA (the generic cell rate algorithm) over many keys, with bounded memory.
//!
//! GCRA keeps one number per key: the theoretical arrival time (TAT) of the next event at
//! the configured rate. An event at `now` is allowed while `TAT - now <= burst × interval`,
//! and moves the TAT one interval further. It is a token bucket without the bucket's two
//! numbers and their refill arithmetic, and the algorithm behind nginx's `limit_req`.
//!
//! Used for request rate limits (`sluice-filters`) and for new-connection rates on
//! listeners (per listener and per client address).
//!
//! Memory is bounded: keys are 64-bit hashes in shards of at most `max_keys / shards`
//! entries. A full shard forgets its oldest keys first (FIFO, O(1) per new key); a key
//! that is active (its TAT still ahead: it is being limited) gets a second chance and goes
//! to the back, so a flood of new keys does not easily reset a busy key's limit.
//! Forgetting a key only ever makes the limit more lenient for that key.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

/// The verdict for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go on; `remaining` more events fit in the burst now.
    Allow {
        /// Events that would still be allowed right now.
        remaining: u32,
    },
    /// Go on after waiting this long (the slot is reserved).
    Delay(Duration),
    /// Refuse; the next event of this key is allowed after this long.
    Reject(Duration),
}

/// A rate with a burst (and an optional delay bound) applied per key.
#[derive(Debug)]
pub struct Gcra {
    interval_ns: u64,
    tolerance_ns: u64,
    burst: u32,
    delay_ns: u64,
    max_per_shard: usize,
    shards: Vec<Mutex<Shard>>,
    epoch: Instant,
}

/// One shard: TAT by key hash, and the keys in the order they came.
#[derive(Debug, Default)]
struct Shard {
    tat: HashMap<u64, u64, BuildKey>,
    order: VecDeque<u64>,
}

/// Keys are already hashes: use them as they are.
#[derive(Debug, Default, Clone, Copy)]
struct BuildKey;

impl std::hash::BuildHasher for BuildKey {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

#[derive(Debug, Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Shards take the low bits; the table takes the high ones from here.
        self.0 = n.rotate_left(29);
    }
}

impl Gcra {
    /// `per_second` events per second on average, `burst` more at once; with a `delay`,
    /// events over the limit wait up to that long instead of being refused; at most
    /// `max_keys` keys are remembered.
    pub fn new(per_second: f64, burst: u32, delay: Duration, max_keys: usize) -> Self {
        let interval_ns = (1e9 / per_second.max(1e-9)).min(u64::MAX as f64) as u64;
        let interval_ns = interval_ns.max(1);
        Self {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst)),
            burst,
            delay_ns: u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX),
            max_per_shard: (max_keys / SHARDS).max(16),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            epoch: Instant::now(),
        }
    }

    /// The time between two events at the configured rate.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns)
    }

    /// Events allowed at once beyond the rate.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// How long an event over the limit may wait.
    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_ns)
    }

    /// Nanoseconds since this limit was made (a monotonic clock).
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Checks (and counts) one event of `key` now.
    pub fn check(&self, key: u64) -> Decision {
        self.check_at(key, self.now_ns())
    }

    /// [`check`](Self::check) at a given time (ns on this limit's clock).
    pub fn check_at(&self, key: u64, now: u64) -> Decision {
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let known = shard.tat.get(&key).copied();
        let tat = known.unwrap_or(now).max(now);
        let ahead = tat - now;
        let decision = if ahead <= self.tolerance_ns {
            let left = (self.tolerance_ns - ahead) / self.interval_ns;
            Decision::Allow { remaining: u32::try_from(left).unwrap_or(u32::MAX).min(self.burst) }
        } else if ahead <= self.tolerance_ns.saturating_add(self.delay_ns) {
            Decision::Delay(Duration::from_nanos(ahead - self.tolerance_ns))
        } else {
            return Decision::Reject(Duration::from_nanos(ahead - self.tolerance_ns));
        };
        if known.is_none() {
            if shard.tat.len() >= self.max_per_shard {
                self.evict_one(&mut shard, now);
            }
            shard.order.push_back(key);
        }
        shard.tat.insert(key, tat.saturating_add(self.interval_ns));
        decision
    }

    /// Forgets the oldest key, giving a few active ones a second chance.
    fn evict_one(&self, shard: &mut Shard, now: u64) {
        for _ in 0..4 {
            let Some(oldest) = shard.order.pop_front() else { return };
            match shard.tat.get(&oldest) {
                Some(&t) if t > now.saturating_add(self.tolerance_ns) => shard.order.push_back(oldest),
                _ => {
                    shard.tat.remove(&oldest);
                    return;
                }
            }
        }
        if let Some(oldest) = shard.order.pop_front() {
            shard.tat.remove(&oldest);
        }
    }

    /// Keys remembered now (for tests and metrics).
    pub fn keys(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |m| m.tat.len())).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn allows_the_burst_then_the_rate() {
        // 2/s (one every 500 ms), burst 3: 4 at once, then one per 500 ms.
        let l = Gcra::new(2.0, 3, Duration::ZERO, 1000);
        let now = 10 * SEC;
        assert_eq!(l.check_at(1, now), Decision::Allow { remaining: 3 });
        assert_eq!(l.check_at(1, now), Decision::Allow { remaining: 2 });
        assert_eq!(l.check_at(1, now), Decision::Allow { remaining: 1 });
        assert_eq!(l.check_at(1, now), Decision::Allow { remaining: 0 });
        assert_eq!(l.check_at(1, now), Decision::Reject(Duration::from_millis(500)));
        assert_eq!(l.check_at(1, now + SEC / 4), Decision::Reject(Duration::from_millis(250)));
        assert_eq!(l.check_at(1, now + SEC / 2), Decision::Allow { remaining: 0 });
        assert_eq!(l.check_at(2, now + SEC / 2), Decision::Allow { remaining: 3 }, "another key");
        // Idle for long: the full burst again.
        assert_eq!(l.check_at(1, now + 100 * SEC), Decision::Allow { remaining: 3 });
    }

    #[test]
    fn delay_mode_reserves_slots_up_to_the_bound() {
        // 10/s, no burst, delay up to 250 ms: 1 now, then 100, 200 ms waits, then refused.
        let l = Gcra::new(10.0, 0, Duration::from_millis(250), 1000);
        let now = SEC;
        assert_eq!(l.check_at(7, now), Decision::Allow { remaining: 0 });
        assert_eq!(l.check_at(7, now), Decision::Delay(Duration::from_millis(100)));
        assert_eq!(l.check_at(7, now), Decision::Delay(Duration::from_millis(200)));
        assert_eq!(l.check_at(7, now), Decision::Reject(Duration::from_millis(300)));
    }

    #[test]
    fn extreme_rates_and_bursts_saturate_instead_of_overflowing() {
        // One per ~31 years with the largest burst: the theoretical arrival time would
        // pass u64::MAX nanoseconds.
        let l = Gcra::new(1e-9, u32::MAX, Duration::from_secs(u64::MAX / 2_000_000_000), 100);
        for _ in 0..4 {
            let _ = l.check_at(1, u64::MAX - SEC);
        }
        let _ = l.check_at(1, u64::MAX);
        let fast = Gcra::new(f64::MAX, u32::MAX, Duration::ZERO, 100);
        assert!(matches!(fast.check_at(2, u64::MAX), Decision::Allow { .. }));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_distinct_keys() {
        let l = Gcra::new(1.0, 5, Duration::ZERO, 10_000);
        for key in 0..1_000_000u64 {
            l.check_at(key.wrapping_mul(0x9e37_79b9_7f4a_7c15), SEC);
        }
        assert!(l.keys() <= 10_000, "{} keys", l.keys());
    }

    #[test]
    fn a_limited_key_survives_a_flood_of_new_keys() {
        let l = Gcra::new(1.0, 0, Duration::ZERO, 1_600);
        let busy = 42u64;
        assert!(matches!(l.check_at(busy, SEC), Decision::Allow { .. }));
        // Keep it limited (its TAT far ahead) while 100k other keys arrive.
        for i in 0..100_000u64 {
            let _ = l.check_at(busy, SEC);
            l.check_at(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, SEC);
        }
        assert!(matches!(l.check_at(busy, SEC), Decision::Reject(_)), "still limited");
    }
}
