//! Connection limits of a listener: open connections per client address, and new
//! connections per second for the whole listener and per client address.
//!
//! A client address means an IPv4 address, or an IPv6 /64 prefix (one subscriber is
//! given a whole /64, so counting single IPv6 addresses would let one client open
//! billions of "clients"). With the PROXY protocol, it is the address the header names.
//!
//! Refusals close the connection before anything is read or written (like HAProxy's
//! `tcp-request connection reject`): under a flood that is the cheapest answer, and a
//! client that is over a connection limit is not owed an HTTP response.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::gcra::{Decision, Gcra};

const SHARDS: usize = 16;

/// The configured limits (all optional).
#[derive(Debug, Clone, Default)]
pub struct ConnectionLimits {
    /// Most connections open at once from one client address.
    pub per_ip: Option<u32>,
    /// New connections per second (and burst) for the whole listener: above it, accepting
    /// pauses and the kernel's backlog holds new clients.
    pub rate: Option<Arc<Gcra>>,
    /// New connections per second (and burst) from one client address: above it, the
    /// connection is closed.
    pub rate_per_ip: Option<Arc<Gcra>>,
}

impl ConnectionLimits {
    /// A listener-wide rate: `per_second` with `burst`; accepting waits for the next slot.
    pub fn listener_rate(per_second: f64, burst: u32) -> Arc<Gcra> {
        // A delay far beyond any wait: every connection over the rate gets a slot to wait for.
        Arc::new(Gcra::new(per_second, burst, Duration::from_secs(86_400), 16))
    }

    /// A per-address rate: `per_second` with `burst`, remembering at most `max_keys`
    /// addresses.
    pub fn address_rate(per_second: f64, burst: u32, max_keys: usize) -> Arc<Gcra> {
        Arc::new(Gcra::new(per_second, burst, Duration::ZERO, max_keys))
    }

    /// Whether any per-address limit is set (then the address must be known first).
    pub fn per_address(&self) -> bool {
        self.per_ip.is_some() || self.rate_per_ip.is_some()
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many connections open from the address.
    PerIp,
    /// Too many new connections per second from the address.
    RatePerIp,
}

/// The key of a client address: IPv4 (also when mapped into IPv6), or an IPv6 /64.
pub fn address_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => (u128::from(v6) >> 64) | (1 << 127),
        },
    }
}

/// Open connections by client address, shared by every accept loop of a listener (and
/// kept across reloads). Holds only addresses with a connection open, so its size is
/// bounded by the listener's `max-connections`.
#[derive(Debug)]
pub struct OpenByAddress {
    shards: Vec<Mutex<HashMap<u128, u32>>>,
    hasher: std::collections::hash_map::RandomState,
    /// Connections refused because an address had too many open.
    pub refused_open: AtomicU64,
    /// Connections refused because an address opened too many per second.
    pub refused_rate: AtomicU64,
}

impl Default for OpenByAddress {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            refused_open: AtomicU64::new(0),
            refused_rate: AtomicU64::new(0),
        }
    }
}

impl OpenByAddress {
    fn shard(&self, key: u128) -> &Mutex<HashMap<u128, u32>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Admits a new connection from `ip` under `limits`, or says why not. The returned
    /// guard counts the connection as open until it is dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limits: &ConnectionLimits) -> Result<Option<OpenGuard>, Refusal> {
        let key = address_key(ip);
        if let Some(rate) = &limits.rate_per_ip {
            if matches!(rate.check(self.hasher.hash_one(key)), Decision::Reject(_)) {
                self.refused_rate.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::RatePerIp);
            }
        }
        let Some(max) = limits.per_ip else { return Ok(None) };
        let mut shard = self.shard(key).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = shard.entry(key).or_insert(0);
        if *open >= max {
            self.refused_open.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::PerIp);
        }
        *open += 1;
        Ok(Some(OpenGuard { table: self.clone(), key }))
    }

    /// Connections open now from `ip`'s address (for tests).
    pub fn open(&self, ip: IpAddr) -> u32 {
        let key = address_key(ip);
        self.shard(key).lock().map_or(0, |s| s.get(&key).copied().unwrap_or(0))
    }

    /// Addresses with a connection open (for tests and metrics).
    pub fn addresses(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |m| m.len())).sum()
    }
}

/// Counts one connection as open until dropped.
#[derive(Debug)]
pub struct OpenGuard {
    table: Arc<OpenByAddress>,
    key: u128,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut shard = self.table.shard(self.key).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(open) = shard.get_mut(&self.key) {
            *open -= 1;
            if *open == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn open_connections_are_counted_per_address_and_released() {
        let table = Arc::new(OpenByAddress::default());
        let limits = ConnectionLimits { per_ip: Some(2), ..Default::default() };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = table.admit(a, &limits).unwrap();
        let _second = table.admit(a, &limits).unwrap();
        assert_eq!(table.admit(a, &limits).unwrap_err(), Refusal::PerIp);
        assert!(table.admit("192.0.2.2".parse().unwrap(), &limits).is_ok(), "another address");
        drop(first);
        assert!(table.admit(a, &limits).is_ok(), "a slot came back");
        assert_eq!(table.refused_open.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn ipv6_addresses_count_by_64_prefix() {
        let table = Arc::new(OpenByAddress::default());
        let limits = ConnectionLimits { per_ip: Some(1), ..Default::default() };
        let _a = table.admit("2001:db8:1:2::1".parse().unwrap(), &limits).unwrap();
        assert!(table.admit("2001:db8:1:2::ffff".parse().unwrap(), &limits).is_err());
        assert!(table.admit("2001:db8:1:3::1".parse().unwrap(), &limits).is_ok());
        assert_eq!(address_key("::ffff:10.0.0.1".parse().unwrap()), address_key("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn the_table_forgets_addresses_without_connections() {
        let table = Arc::new(OpenByAddress::default());
        let limits = ConnectionLimits { per_ip: Some(10), ..Default::default() };
        let guards: Vec<_> =
            (0..1000u32).map(|i| table.admit(IpAddr::from(i.to_be_bytes()), &limits).unwrap()).collect();
        assert_eq!(table.addresses(), 1000);
        drop(guards);
        assert_eq!(table.addresses(), 0);
    }

    #[test]
    fn new_connections_per_second_per_address() {
        let table = Arc::new(OpenByAddress::default());
        let limits =
            ConnectionLimits { rate_per_ip: Some(ConnectionLimits::address_rate(1.0, 2, 100)), ..Default::default() };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(table.admit(a, &limits).is_ok());
        }
        assert_eq!(table.admit(a, &limits).unwrap_err(), Refusal::RatePerIp);
        assert!(table.admit("192.0.2.9".parse().unwrap(), &limits).is_ok());
    }
}
