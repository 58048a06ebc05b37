//! Local rate limiting (nginx's `limit_req`): GCRA per key, with a burst, answering `429`
//! with `Retry-After` and `RateLimit-*` fields, or delaying requests up to a bound.
//!
//! The algorithm and its bounded key memory are [`sluice_core::gcra`]; this module adds
//! what is HTTP about it: the key of a request (client address, headers, cookies, the
//! route) and the answer. With `store "redis"`, [`cluster`] keeps the state in Redis,
//! shared by every instance ([`redis`] is the client).

pub mod cluster;
pub mod redis;

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use sluice_core::gcra::Gcra;
use sluice_core::Body;

pub use sluice_core::gcra::Decision;

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
    gcra: Gcra,
    key: Vec<KeyPart>,
    hasher: std::collections::hash_map::RandomState,
    cluster: Option<cluster::ClusterLimit>,
    /// How long a refusal is held before it is sent (zero: at once).
    pub tarpit: Duration,
    /// Requests allowed at once, delayed, and refused (for metrics).
    pub counts: [std::sync::atomic::AtomicU64; 3],
}

impl RateLimit {
    /// `per_second` requests per second on average, `burst` more at once, keyed by `key`
    /// (empty: the client IP); `delay`: excess requests wait up to this long instead of
    /// being refused; at most `max_keys` keys are remembered.
    pub fn new(name: String, per_second: f64, burst: u32, key: Vec<KeyPart>, delay: Duration, max_keys: usize) -> Self {
        Self {
            name,
            gcra: Gcra::new(per_second, burst, delay, max_keys),
            key: if key.is_empty() { vec![KeyPart::ClientIp] } else { key },
            hasher: std::collections::hash_map::RandomState::new(),
            cluster: None,
            tarpit: Duration::ZERO,
            counts: Default::default(),
        }
    }

    /// Holds each refusal for `tarpit` before it is sent: a client that retries at once
    /// on the same connection (ignoring `Retry-After`) is slowed to one request per
    /// tarpit per connection (per stream on HTTP/2), so a flood costs little CPU while
    /// it waits. The wait holds the request's memory (a few KiB) and its connection.
    pub fn with_tarpit(mut self, tarpit: Duration) -> Self {
        self.tarpit = tarpit;
        self
    }

    /// How long to hold this refusal: between half the tarpit and all of it, at random,
    /// so that a flood's connections do not all come back at the same moment.
    pub fn tarpit_hold(&self) -> Duration {
        self.tarpit.mul_f64(0.5 + 0.5 * fastrand::f64())
    }

    /// Keeps the limit's state in Redis (shared by every instance using `redis` and the
    /// same `name`), with `fallback` while Redis cannot answer.
    pub fn with_redis(
        mut self,
        redis: Arc<redis::Redis>,
        name: &str,
        fallback: cluster::Fallback,
        max_keys: usize,
    ) -> Self {
        self.cluster = Some(cluster::ClusterLimit::new(redis, name, &self.gcra, fallback, max_keys));
        self
    }

    /// The Redis side, for a cluster-wide limit.
    pub fn cluster(&self) -> Option<&cluster::ClusterLimit> {
        self.cluster.as_ref()
    }

    /// Checks (and counts) one request: locally, or through Redis for a cluster-wide limit.
    pub async fn decide(&self, client: IpAddr, headers: &HeaderMap, route: usize) -> Decision {
        let key = self.key_of(client, headers, route);
        let decision = match &self.cluster {
            None => self.gcra.check(key),
            Some(cluster) => cluster.check(key, self.stable_key_of(client, headers, route)).await,
        };
        let slot = match decision {
            Decision::Allow { .. } => 0,
            Decision::Delay(_) => 1,
            Decision::Reject(_) => 2,
        };
        self.counts[slot].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        decision
    }

    /// The algorithm's state (rate, burst, keys).
    pub fn gcra(&self) -> &Gcra {
        &self.gcra
    }

    /// The key hash of a request (keyed per process: not predictable from outside).
    pub fn key_of(&self, client: IpAddr, headers: &HeaderMap, route: usize) -> u64 {
        let mut h = self.hasher.build_hasher();
        self.feed(client, headers, route, &mut |bytes| h.write(bytes));
        h.finish()
    }

    /// The same key hashed the same way in every process (FNV-1a, 128 bits), for the
    /// Redis keys instances share.
    pub fn stable_key_of(&self, client: IpAddr, headers: &HeaderMap, route: usize) -> u128 {
        const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
        const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
        let mut h = OFFSET;
        self.feed(client, headers, route, &mut |bytes| {
            for &b in bytes {
                h = (h ^ u128::from(b)).wrapping_mul(PRIME);
            }
        });
        h
    }

    /// Feeds the key's parts to `write`, each tagged so that parts cannot run together.
    fn feed(&self, client: IpAddr, headers: &HeaderMap, route: usize, write: &mut dyn FnMut(&[u8])) {
        for part in &self.key {
            match part {
                KeyPart::ClientIp => match client {
                    IpAddr::V4(v4) => {
                        write(&[0]);
                        write(&v4.octets());
                    }
                    IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                        Some(v4) => {
                            write(&[0]);
                            write(&v4.octets());
                        }
                        None => {
                            write(&[6]);
                            write(&v6.octets()[..8]);
                        }
                    },
                },
                KeyPart::Header(name) => {
                    write(&[1]);
                    for v in headers.get_all(name) {
                        write(&(v.len() as u64).to_le_bytes());
                        write(v.as_bytes());
                    }
                }
                KeyPart::Cookie(name) => {
                    write(&[2]);
                    if let Some(v) = crate::affinity::cookie_in(headers, name) {
                        write(&(v.len() as u64).to_le_bytes());
                        write(v);
                    }
                }
                KeyPart::Route => {
                    write(&[3]);
                    write(&(route as u64).to_le_bytes());
                }
            }
        }
    }

    /// Checks (and counts) one request of `key` now.
    pub fn check(&self, key: u64) -> Decision {
        self.gcra.check(key)
    }

    /// Keys remembered now (for tests and metrics).
    pub fn keys(&self) -> usize {
        match &self.cluster {
            Some(c) => c.keys(),
            None => self.gcra.keys(),
        }
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
        let burst = self.gcra.burst();
        let window = (self.gcra.interval().saturating_mul(burst.saturating_add(1)).as_secs()).max(1);
        h.insert("ratelimit-limit", HeaderValue::from(burst + 1));
        h.insert("ratelimit-remaining", HeaderValue::from(remaining));
        h.insert("ratelimit-reset", HeaderValue::from(reset_seconds));
        if let Ok(v) = HeaderValue::try_from(format!("{};w={window}", burst + 1)) {
            h.insert("ratelimit-policy", v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
