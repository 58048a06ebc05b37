//! Local rate limiting (nginx's `limit_req`): GCRA per key, with a burst, answering `429`
//! with `Retry-After` and `RateLimit-*` fields, or delaying requests up to a bound.
//!
//! GCRA (the generic cell rate algorithm) keeps one number per key: the theoretical
//! arrival time (TAT) of the next request at the configured rate. A request at `now` is
//! allowed while `TAT - now <= burst × interval`, and moves the TAT one interval further.
//! It is a token bucket without the bucket's two numbers and their refill arithmetic.
//!
//! Memory is bounded: keys are stored as 64-bit hashes in shards of at most `max_keys /
//! shards` entries. A full shard forgets its oldest keys first (FIFO, O(1) per new key);
//! a key that is active (its TAT still ahead: it is being limited) gets a second chance
//! and goes to the back, so a flood of new keys does not easily reset a busy key's limit.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use sluice_core::Body;

const SHARDS: usize = 16;

/// What a request's key is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The client's IP address; IPv6 addresses by their /64 prefix (one subscriber).
    ClientIp,
    /// A request header's value.
    Header(http::HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// The route (every client of the route shares the limit).
    Route,
}

/// One limit.
#[derive(Debug)]
pub struct RateLimit {
    /// Name for the `RateLimit-Policy` and logs.
    pub name: String,
    interval_ns: u64,
    tolerance_ns: u64,
    burst: u32,
    delay_ns: u64,
    key: Vec<KeyPart>,
    max_per_shard: usize,
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    epoch: std::time::Instant,
}

/// One shard: TAT by key hash, and the keys in the order they came.
#[derive(Debug, Default)]
struct Shard {
    tat: HashMap<u64, u64>,
    order: std::collections::VecDeque<u64>,
}

/// The verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go on; `remaining` more requests fit in the burst now.
    Allow {
        /// Requests that would still be allowed right now.
        remaining: u32,
    },
    /// Go on after waiting this long (the slot is reserved).
    Delay(Duration),
    /// Refuse; the client may try again after this long.
    Reject(Duration),
}

impl RateLimit {
    /// `per_second` requests per second on average, `burst` more at once, keyed by `key`
    /// (empty: the client IP); `delay`: excess requests wait up to this long instead of
    /// being refused; at most `max_keys` keys are remembered.
    pub fn new(name: String, per_second: f64, burst: u32, key: Vec<KeyPart>, delay: Duration, max_keys: usize) -> Self {
        let interval_ns = (1e9 / per_second.max(1e-9)).min(u64::MAX as f64) as u64;
        Self {
            name,
            interval_ns: interval_ns.max(1),
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst)),
            burst,
            delay_ns: u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX),
            key: if key.is_empty() { vec![KeyPart::ClientIp] } else { key },
            max_per_shard: (max_keys / SHARDS).max(16),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            epoch: std::time::Instant::now(),
        }
    }

    /// The key hash of a request.
    pub fn key_of(&self, client: IpAddr, headers: &HeaderMap, route: usize) -> u64 {
        let mut h = self.hasher.build_hasher();
        for part in &self.key {
            match part {
                KeyPart::ClientIp => match client {
                    IpAddr::V4(v4) => h.write(&v4.octets()),
                    IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                        Some(v4) => h.write(&v4.octets()),
                        None => h.write(&v6.octets()[..8]),
                    },
                },
                KeyPart::Header(name) => {
                    h.write_u8(1);
                    for v in headers.get_all(name) {
                        h.write(v.as_bytes());
                    }
                }
                KeyPart::Cookie(name) => {
                    h.write_u8(2);
                    if let Some(v) = crate::affinity::cookie_in(headers, name) {
                        h.write(v);
                    }
                }
                KeyPart::Route => h.write_usize(route),
            }
        }
        h.finish()
    }

    /// Nanoseconds since this limit was made (a monotonic clock).
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Checks (and counts) one request of `key` now.
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
        shard.tat.insert(key, tat + self.interval_ns);
        decision
    }

    /// Forgets the oldest key, giving a few active ones a second chance.
    fn evict_one(&self, shard: &mut Shard, now: u64) {
        for _ in 0..4 {
            let Some(oldest) = shard.order.pop_front() else { return };
            match shard.tat.get(&oldest) {
                Some(&t) if t > now + self.tolerance_ns => shard.order.push_back(oldest),
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

    /// The `429` answer.
    pub fn reject(&self, retry_after: Duration) -> Response<Body> {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let mut r = Response::new(Body::full("too many requests\n"));
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        let h = r.headers_mut();
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        self.fields(h, 0, seconds.max(1));
        r
    }

    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (draft-ietf-httpapi-
    /// ratelimit-headers) and `RateLimit-Policy`.
    pub fn fields(&self, h: &mut HeaderMap, remaining: u32, reset_seconds: u64) {
        let window = (self.interval_ns.saturating_mul(u64::from(self.burst) + 1) / 1_000_000_000).max(1);
        h.insert("ratelimit-limit", HeaderValue::from(self.burst + 1));
        h.insert("ratelimit-remaining", HeaderValue::from(remaining));
        h.insert("ratelimit-reset", HeaderValue::from(reset_seconds));
        if let Ok(v) = HeaderValue::try_from(format!("{};w={window}", self.burst + 1)) {
            h.insert("ratelimit-policy", v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn gcra_allows_the_burst_then_the_rate() {
        // 2/s (one every 500 ms), burst 3: 4 at once, then one per 500 ms.
        let l = RateLimit::new("t".into(), 2.0, 3, vec![], Duration::ZERO, 1000);
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
        let l = RateLimit::new("t".into(), 10.0, 0, vec![], Duration::from_millis(250), 1000);
        let now = SEC;
        assert_eq!(l.check_at(7, now), Decision::Allow { remaining: 0 });
        assert_eq!(l.check_at(7, now), Decision::Delay(Duration::from_millis(100)));
        assert_eq!(l.check_at(7, now), Decision::Delay(Duration::from_millis(200)));
        assert_eq!(l.check_at(7, now), Decision::Reject(Duration::from_millis(300)));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_distinct_keys() {
        let l = RateLimit::new("t".into(), 1.0, 5, vec![], Duration::ZERO, 10_000);
        for key in 0..1_000_000u64 {
            l.check_at(key.wrapping_mul(0x9e37_79b9_7f4a_7c15), SEC);
        }
        assert!(l.keys() <= 10_000, "{} keys", l.keys());
    }

    #[test]
    fn a_limited_key_survives_a_flood_of_new_keys() {
        let l = RateLimit::new("t".into(), 1.0, 0, vec![], Duration::ZERO, 1_600);
        let busy = 42u64;
        assert!(matches!(l.check_at(busy, SEC), Decision::Allow { .. }));
        // Keep it limited (its TAT far ahead) while 100k other keys arrive.
        for i in 0..100_000u64 {
            let _ = l.check_at(busy, SEC);
            l.check_at(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, SEC);
        }
        assert!(matches!(l.check_at(busy, SEC), Decision::Reject(_)), "still limited");
    }

    #[test]
    fn ipv6_clients_share_a_limit_per_64_prefix() {
        let l = RateLimit::new("t".into(), 1.0, 0, vec![KeyPart::ClientIp], Duration::ZERO, 100);
        let h = HeaderMap::new();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(l.key_of(a, &h, 0), l.key_of(b, &h, 0));
        assert_ne!(l.key_of(a, &h, 0), l.key_of(c, &h, 0));
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(l.key_of(v4, &h, 0), l.key_of(mapped, &h, 0));
    }
}
