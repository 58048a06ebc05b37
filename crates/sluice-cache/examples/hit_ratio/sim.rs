//! A deterministic request trace and the two caches compared on it: the memory tier
//! (S3-FIFO) and a plain LRU with the same byte budget and the same object weights.
//! Shared by the `hit_ratio` example and the test that S3-FIFO beats LRU under a scan.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use sluice_cache::{CacheKey, Entry, MemoryTier, StoredHead};

/// Bodies are slices of this, so a large simulated cache costs little real memory.
static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

/// A trace: Zipf-distributed requests over `keys` objects, with a scan of `scan` objects
/// asked for once each, spread evenly over the middle third of the requests.
#[derive(Debug, Clone, Copy)]
pub struct TraceSpec {
    /// Objects in the Zipf part (ids `0..keys`, id 0 the most popular).
    pub keys: u64,
    /// Zipf requests.
    pub requests: usize,
    /// Objects in the scan (ids `keys..keys + scan`).
    pub scan: u64,
    /// The Zipf exponent.
    pub zipf_s: f64,
    /// The random seed.
    pub seed: u64,
}

/// The object ids requested, in order.
pub fn trace(spec: &TraceSpec) -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(spec.seed);
    let cdf = zipf_cdf(spec.keys, spec.zipf_s);
    let last = cdf.len().saturating_sub(1);
    let third = spec.requests / 3;
    let mut out = Vec::with_capacity(spec.requests + spec.scan as usize);
    let mut scanned = 0;
    for i in 0..spec.requests {
        let u = rng.f64();
        out.push(cdf.partition_point(|&c| c < u).min(last) as u64);
        if (third..2 * third).contains(&i) {
            let due = (i - third + 1) as u64 * spec.scan / third as u64;
            while scanned < due {
                out.push(spec.keys + scanned);
                scanned += 1;
            }
        }
    }
    out
}

/// The cumulative Zipf distribution over ranks `1..=n`: P(rank k) is proportional to
/// 1 / k^s.
fn zipf_cdf(n: u64, s: f64) -> Vec<f64> {
    let mut cdf = Vec::with_capacity(n as usize);
    let mut sum = 0.0;
    for k in 1..=n {
        sum += 1.0 / (k as f64).powf(s);
        cdf.push(sum);
    }
    for c in &mut cdf {
        *c /= sum;
    }
    cdf
}

/// Body sizes of the objects.
#[derive(Debug, Clone, Copy)]
pub enum Sizes {
    /// Every body has this many bytes.
    Fixed(usize),
    /// Log-uniform between the bounds (many small objects, a few large), fixed per object.
    Variable {
        /// Smallest body.
        min: usize,
        /// Largest body (at most 64 KiB).
        max: usize,
    },
}

impl Sizes {
    /// The body size of object `id`.
    pub fn of(self, id: u64) -> usize {
        let size = match self {
            Sizes::Fixed(n) => n,
            Sizes::Variable { min, max } => {
                let u = fastrand::Rng::with_seed(id ^ 0x5eed_5eed).f64();
                (min as f64 * (max as f64 / min.max(1) as f64).powf(u)) as usize
            }
        };
        size.min(ZEROS.len())
    }
}

impl fmt::Display for Sizes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sizes::Fixed(n) => write!(f, "{n} B"),
            Sizes::Variable { min, max } => write!(f, "{min}-{max} B"),
        }
    }
}

/// The full key string of object `id`.
pub fn key_of(id: u64) -> String {
    format!("GET https://example.com/objects/{id}")
}

/// The cached response for object `id`.
pub fn entry(id: u64, sizes: Sizes) -> Entry {
    Entry {
        key: key_of(id),
        head: StoredHead::new(200),
        body: Bytes::from_static(&ZEROS[..sizes.of(id)]),
        tags: Vec::new(),
        stored_at: SystemTime::UNIX_EPOCH,
    }
}

/// Total weight of the trace's Zipf objects: cache sizes are a share of it.
pub fn key_space_bytes(keys: u64, sizes: Sizes) -> u64 {
    (0..keys).map(|id| entry(id, sizes).weight()).sum()
}

/// A cache under test.
pub trait Cache {
    /// Serves a request for object `id`, storing it on a miss; true on a hit.
    fn access(&mut self, id: u64, sizes: Sizes) -> bool;
}

/// The memory tier.
pub struct S3Fifo {
    tier: MemoryTier,
}

impl S3Fifo {
    /// A memory tier of `budget` bytes over `shards` shards, with no object size limit
    /// beyond a shard's budget.
    pub fn new(budget: u64, shards: usize) -> Self {
        Self { tier: MemoryTier::with_shards(budget, budget, shards) }
    }
}

impl Cache for S3Fifo {
    fn access(&mut self, id: u64, sizes: Sizes) -> bool {
        let key = CacheKey::of(&key_of(id));
        if self.tier.get(&key).is_some() {
            return true;
        }
        self.tier.insert(key, Arc::new(entry(id, sizes)));
        false
    }
}

/// Least recently used, by bytes: the baseline.
pub struct Lru {
    budget: u64,
    used: u64,
    clock: u64,
    /// Object id to (last use, weight).
    items: HashMap<u64, (u64, u64)>,
    /// Last use to object id, oldest first.
    order: BTreeMap<u64, u64>,
}

impl Lru {
    /// An empty LRU cache of `budget` bytes.
    pub fn new(budget: u64) -> Self {
        Self { budget, used: 0, clock: 0, items: HashMap::new(), order: BTreeMap::new() }
    }
}

impl Cache for Lru {
    fn access(&mut self, id: u64, sizes: Sizes) -> bool {
        self.clock += 1;
        if let Some((last_use, _)) = self.items.get_mut(&id) {
            let previous = *last_use;
            *last_use = self.clock;
            self.order.remove(&previous);
            self.order.insert(self.clock, id);
            return true;
        }
        // The same weight the memory tier counts.
        let weight = entry(id, sizes).weight();
        if weight > self.budget {
            return false;
        }
        while self.used + weight > self.budget {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some((_, w)) = self.items.remove(&oldest) {
                self.used -= w;
            }
        }
        self.items.insert(id, (self.clock, weight));
        self.order.insert(self.clock, id);
        self.used += weight;
        false
    }
}

/// The share of `trace`'s requests that `cache` served from what it held.
pub fn hit_ratio(cache: &mut dyn Cache, trace: &[u64], sizes: Sizes) -> f64 {
    let mut hits = 0usize;
    for &id in trace {
        if cache.access(id, sizes) {
            hits += 1;
        }
    }
    hits as f64 / trace.len().max(1) as f64
}
