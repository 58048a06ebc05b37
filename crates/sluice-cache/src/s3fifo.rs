//! S3-FIFO over byte weights: the admission and eviction policy of both tiers.
//!
//! New objects enter the small queue. While the small queue holds at least its share of the
//! budget (10 %), eviction takes from it: its oldest object moves to the main queue if it
//! was read since it entered (its counter cleared), and otherwise leaves the cache with its
//! key remembered in the ghost queue. A key found in the ghost queue when it is inserted
//! again goes straight to the main queue. Otherwise eviction takes from the main queue: its
//! oldest object goes back to the tail with one read fewer if it was read, and leaves
//! otherwise. A read only bumps a counter capped at 3, through `&self`, so readers can
//! share a lock.
//!
//! The queues hold `(key, seq)` pairs and are cleaned lazily: an object removed, replaced
//! or moved leaves its old pair behind, recognised by a sequence number that no longer
//! matches the object's and skipped when it reaches the head. When the queues hold about
//! twice as many pairs as there are objects they are compacted, which keeps every
//! operation O(1) amortised.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};

use crate::CacheKey;

/// Reads counted per object; more tell nothing more about its future.
const MAX_FREQ: u8 = 3;
/// The small queue's share of the budget, in percent (the paper's value).
const SMALL_PERCENT: u64 = 10;
/// Fewest ghost keys remembered, for caches holding only a few objects.
const GHOST_MIN: usize = 64;
/// Stale queue pairs tolerated beyond the number of objects before compacting.
const SLACK: usize = 64;

/// The queue an object is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    /// Where new objects enter.
    Small,
    /// Where objects read at least once (or asked for again soon after leaving) live.
    Main,
}

#[derive(Debug)]
struct Node<V> {
    value: V,
    weight: u64,
    /// Reads since the object entered its queue or was last passed over, capped.
    freq: AtomicU8,
    queue: Queue,
    /// The sequence number of the object's live pair in its queue.
    seq: u64,
}

/// One S3-FIFO cache of values `V` under a byte budget. Not synchronised: a tier wraps it
/// in a lock.
#[derive(Debug)]
pub(crate) struct S3Fifo<V> {
    nodes: HashMap<CacheKey, Node<V>>,
    small: VecDeque<(CacheKey, u64)>,
    main: VecDeque<(CacheKey, u64)>,
    /// Ghost keys in the order they were remembered; stale pairs are skipped as above.
    ghost: VecDeque<(CacheKey, u64)>,
    ghost_keys: HashMap<CacheKey, u64>,
    small_bytes: u64,
    main_bytes: u64,
    main_len: usize,
    budget: u64,
    small_target: u64,
    seq: u64,
}

impl<V> S3Fifo<V> {
    /// An empty cache holding at most `budget` bytes.
    pub(crate) fn new(budget: u64) -> Self {
        Self {
            nodes: HashMap::new(),
            small: VecDeque::new(),
            main: VecDeque::new(),
            ghost: VecDeque::new(),
            ghost_keys: HashMap::new(),
            small_bytes: 0,
            main_bytes: 0,
            main_len: 0,
            budget,
            small_target: budget / 100 * SMALL_PERCENT + budget % 100 * SMALL_PERCENT / 100,
            seq: 0,
        }
    }

    /// The value under `key`, counting a read.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<&V> {
        let node = self.nodes.get(key)?;
        // Load and store rather than a compare-and-swap loop: two racing readers may count
        // one read, which is all the precision the policy needs.
        let freq = node.freq.load(Ordering::Relaxed);
        if freq < MAX_FREQ {
            node.freq.store(freq + 1, Ordering::Relaxed);
        }
        Some(&node.value)
    }

    /// The value under `key`, without counting a read.
    pub(crate) fn peek(&self, key: &CacheKey) -> Option<&V> {
        self.nodes.get(key).map(|node| &node.value)
    }

    /// Inserts `key`, or replaces it (the old value is returned; the object keeps its queue
    /// and read count). Objects evicted to make room are appended to `evicted`. A weight over
    /// the whole budget is refused and the value given back.
    pub(crate) fn insert(
        &mut self,
        key: CacheKey,
        value: V,
        weight: u64,
        evicted: &mut Vec<(CacheKey, V)>,
    ) -> Result<Option<V>, V> {
        self.insert_into(key, value, weight, None, evicted)
    }

    /// Like [`S3Fifo::insert`] but into the main queue: for objects reloaded at start,
    /// which had earned their place before. Loaded in order oldest first, the oldest are
    /// evicted first.
    pub(crate) fn load(
        &mut self,
        key: CacheKey,
        value: V,
        weight: u64,
        evicted: &mut Vec<(CacheKey, V)>,
    ) -> Result<Option<V>, V> {
        self.insert_into(key, value, weight, Some(Queue::Main), evicted)
    }

    fn insert_into(
        &mut self,
        key: CacheKey,
        value: V,
        weight: u64,
        queue: Option<Queue>,
        evicted: &mut Vec<(CacheKey, V)>,
    ) -> Result<Option<V>, V> {
        if weight > self.budget {
            return Err(value);
        }
        let old = self.detach(&key);
        let (queue, freq) = match (&old, queue) {
            (Some(node), _) => (node.queue, node.freq.load(Ordering::Relaxed)),
            (None, Some(queue)) => (queue, 0),
            (None, None) => match self.ghost_keys.remove(&key) {
                Some(_) => (Queue::Main, 0),
                None => (Queue::Small, 0),
            },
        };
        // Emptying both queues always makes room, since `weight <= budget`.
        while self.small_bytes + self.main_bytes + weight > self.budget {
            match self.evict_one() {
                Some(out) => evicted.push(out),
                None => break,
            }
        }
        self.seq += 1;
        let seq = self.seq;
        match queue {
            Queue::Small => {
                self.small.push_back((key, seq));
                self.small_bytes += weight;
            }
            Queue::Main => {
                self.main.push_back((key, seq));
                self.main_bytes += weight;
                self.main_len += 1;
            }
        }
        self.nodes.insert(key, Node { value, weight, freq: AtomicU8::new(freq), queue, seq });
        self.maybe_compact();
        Ok(old.map(|node| node.value))
    }

    /// Removes `key` (it does not become a ghost: it was purged, not pushed out).
    pub(crate) fn remove(&mut self, key: &CacheKey) -> Option<V> {
        let node = self.detach(key)?;
        self.maybe_compact();
        Some(node.value)
    }

    /// Number of objects.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.small_bytes + self.main_bytes
    }

    /// Takes `key`'s node out of the map and its weight out of its queue's total; its pair
    /// in the queue goes stale.
    fn detach(&mut self, key: &CacheKey) -> Option<Node<V>> {
        let node = self.nodes.remove(key)?;
        match node.queue {
            Queue::Small => self.small_bytes -= node.weight,
            Queue::Main => {
                self.main_bytes -= node.weight;
                self.main_len -= 1;
            }
        }
        Some(node)
    }

    /// Evicts one object; `None` only when the cache is empty.
    fn evict_one(&mut self) -> Option<(CacheKey, V)> {
        if self.small_bytes >= self.small_target || self.main_len == 0 {
            if let Some(out) = self.evict_small() {
                return Some(out);
            }
        }
        self.evict_main()
    }

    /// Moves the small queue's read objects to the main queue until one that was not read
    /// comes up; that one leaves and becomes a ghost. `None` if the small queue ran empty.
    fn evict_small(&mut self) -> Option<(CacheKey, V)> {
        while let Some((key, seq)) = self.small.pop_front() {
            let Some(node) = self.nodes.get_mut(&key) else { continue };
            if node.seq != seq {
                continue;
            }
            let weight = node.weight;
            self.small_bytes -= weight;
            if *node.freq.get_mut() > 0 {
                *node.freq.get_mut() = 0;
                self.seq += 1;
                node.seq = self.seq;
                node.queue = Queue::Main;
                self.main.push_back((key, self.seq));
                self.main_bytes += weight;
                self.main_len += 1;
            } else {
                let Some(node) = self.nodes.remove(&key) else { continue };
                self.remember(key);
                return Some((key, node.value));
            }
        }
        None
    }

    /// Gives the main queue's read objects another round (one read fewer) until one that was
    /// not read comes up; that one leaves. `None` if the main queue is empty.
    fn evict_main(&mut self) -> Option<(CacheKey, V)> {
        while let Some((key, seq)) = self.main.pop_front() {
            let Some(node) = self.nodes.get_mut(&key) else { continue };
            if node.seq != seq {
                continue;
            }
            let freq = node.freq.get_mut();
            if *freq > 0 {
                *freq -= 1;
                self.seq += 1;
                node.seq = self.seq;
                self.main.push_back((key, self.seq));
            } else {
                self.main_bytes -= node.weight;
                self.main_len -= 1;
                let Some(node) = self.nodes.remove(&key) else { continue };
                return Some((key, node.value));
            }
        }
        None
    }

    /// Remembers a key pushed out of the small queue. The ghost queue holds about as many
    /// keys as the cache holds objects (the paper sizes it like the main queue).
    fn remember(&mut self, key: CacheKey) {
        self.seq += 1;
        self.ghost.push_back((key, self.seq));
        self.ghost_keys.insert(key, self.seq);
        let cap = self.nodes.len().max(GHOST_MIN);
        while self.ghost_keys.len() > cap {
            let Some((old, seq)) = self.ghost.pop_front() else { break };
            if self.ghost_keys.get(&old) == Some(&seq) {
                self.ghost_keys.remove(&old);
            }
        }
        if self.ghost.len() > 2 * self.ghost_keys.len() + SLACK {
            let live = &self.ghost_keys;
            self.ghost.retain(|(key, seq)| live.get(key) == Some(seq));
        }
    }

    /// Drops stale pairs once they are as many as the live ones.
    fn maybe_compact(&mut self) {
        if self.small.len() + self.main.len() > 2 * self.nodes.len() + SLACK {
            let nodes = &self.nodes;
            self.small.retain(|(key, seq)| nodes.get(key).is_some_and(|node| node.seq == *seq));
            self.main.retain(|(key, seq)| nodes.get(key).is_some_and(|node| node.seq == *seq));
        }
    }
}

#[cfg(test)]
impl<V> S3Fifo<V> {
    /// The queue `key` is in.
    pub(crate) fn queue_of(&self, key: &CacheKey) -> Option<Queue> {
        self.nodes.get(key).map(|node| node.queue)
    }

    /// Whether `key` is remembered as a ghost.
    pub(crate) fn is_ghost(&self, key: &CacheKey) -> bool {
        self.ghost_keys.contains_key(key)
    }

    /// Number of queue pairs, live and stale.
    pub(crate) fn pairs(&self) -> usize {
        self.small.len() + self.main.len()
    }

    /// Checks the bookkeeping against the objects: byte totals, counts, and exactly one live
    /// pair per object, in the right queue.
    pub(crate) fn check(&self) {
        let mut small = 0;
        let mut main = 0;
        let mut main_len = 0;
        for node in self.nodes.values() {
            match node.queue {
                Queue::Small => small += node.weight,
                Queue::Main => {
                    main += node.weight;
                    main_len += 1;
                }
            }
        }
        assert_eq!((small, main, main_len), (self.small_bytes, self.main_bytes, self.main_len));
        assert!(self.bytes() <= self.budget, "{} over the budget {}", self.bytes(), self.budget);
        let live = |queue: &VecDeque<(CacheKey, u64)>, which: Queue| {
            queue
                .iter()
                .filter(|(key, seq)| self.nodes.get(key).is_some_and(|node| node.seq == *seq && node.queue == which))
                .count()
        };
        assert_eq!(live(&self.small, Queue::Small) + live(&self.main, Queue::Main), self.nodes.len());
    }
}

#[cfg(test)]
#[path = "s3fifo_tests.rs"]
mod tests;
