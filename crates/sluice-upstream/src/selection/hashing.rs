//! Consistent hashing: the same affinity key (client IP, header, cookie, path ...) goes to
//! the same backend, and when a backend leaves the group only the keys it served move.
//!
//! - [`Ketama`]: the classic ring (libketama, nginx `hash ... consistent`): 160 points per
//!   unit of weight; a pick is a binary search. Removing one of n backends moves ~1/n keys.
//! - [`Maglev`]: Google's Maglev table (NSDI 2016): a prime-sized lookup table filled by
//!   per-backend permutations; a pick is one array read, and the load is spread more evenly
//!   than on a ring, at the price of slightly more keys moving on a change.
//!
//! When the key's backend is not usable (down, or the one that just failed), the next
//! point on the ring (Ketama) or a re-hashed slot (Maglev) is tried, so that keys of a
//! missing backend spread over the others instead of piling onto one neighbour (Maglev).

use super::{first_usable, hash_key, mix, Pick, Selector};

/// Ring points per unit of weight.
const POINTS_PER_WEIGHT: u64 = 160;
/// Weight beyond which a server gets no more ring points or table turns.
const MAX_WEIGHT: u32 = 100;

/// A Ketama ring.
#[derive(Debug)]
pub struct Ketama {
    /// (point, backend index), sorted by point.
    ring: Vec<(u64, u32)>,
    n: usize,
}

impl Ketama {
    /// A ring for `(name, weight)` backends; names (`host:port` as configured) place the
    /// points, so the same config gives the same ring everywhere.
    pub fn new(backends: &[(&str, u32)]) -> Self {
        let mut ring = Vec::new();
        for (i, (name, weight)) in backends.iter().enumerate() {
            let points = POINTS_PER_WEIGHT * u64::from((*weight).clamp(1, MAX_WEIGHT));
            for p in 0..points {
                let point = hash_key(format!("{name}-{p}").as_bytes());
                ring.push((point, u32::try_from(i).unwrap_or(u32::MAX)));
            }
        }
        ring.sort_unstable();
        Self { ring, n: backends.len() }
    }
}

impl Selector for Ketama {
    fn select(&self, pick: Pick, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let key = pick.key.unwrap_or_else(|| fastrand::u64(..));
        let start = self.ring.partition_point(|&(p, _)| p < key);
        let len = self.ring.len();
        for step in 0..len {
            let b = self.ring[(start + step) % len].1 as usize;
            if usable(b) {
                return Some(b);
            }
            // Walked past a few hundred points: probably most backends are down; finish
            // with a direct scan instead of the rest of the ring.
            if step > 4 * POINTS_PER_WEIGHT as usize {
                return first_usable(self.n, b, usable);
            }
        }
        None
    }
}

/// A Maglev lookup table.
#[derive(Debug)]
pub struct Maglev {
    table: Vec<u32>,
    n: usize,
}

/// Table sizes: primes, the smallest at least 100 × the number of backends is used.
const TABLE_SIZES: &[usize] = &[65_537, 655_373, 6_553_577];

impl Maglev {
    /// A table for `(name, weight)` backends.
    pub fn new(backends: &[(&str, u32)]) -> Self {
        let n = backends.len();
        if n == 0 {
            return Self { table: Vec::new(), n };
        }
        let m = TABLE_SIZES.iter().copied().find(|&m| m >= 100 * n).unwrap_or(TABLE_SIZES[TABLE_SIZES.len() - 1]);
        let m64 = m as u64;
        let perms: Vec<(u64, u64)> = backends
            .iter()
            .map(|(name, _)| {
                let h = hash_key(name.as_bytes());
                (h % m64, mix(h) % (m64 - 1) + 1)
            })
            .collect();
        let turns: Vec<u32> = backends.iter().map(|(_, w)| (*w).clamp(1, MAX_WEIGHT)).collect();
        let mut next = vec![0u64; n];
        let mut table = vec![u32::MAX; m];
        let mut filled = 0;
        'fill: loop {
            for i in 0..n {
                for _ in 0..turns[i] {
                    let (offset, skip) = perms[i];
                    let mut c = ((offset + next[i] * skip) % m64) as usize;
                    while table[c] != u32::MAX {
                        next[i] += 1;
                        c = ((offset + next[i] * skip) % m64) as usize;
                    }
                    table[c] = u32::try_from(i).unwrap_or(u32::MAX);
                    next[i] += 1;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Self { table, n }
    }
}

impl Selector for Maglev {
    fn select(&self, pick: Pick, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let mut key = pick.key.unwrap_or_else(|| fastrand::u64(..));
        let m = self.table.len() as u64;
        for _ in 0..16 {
            let b = self.table[(key % m) as usize] as usize;
            if usable(b) {
                return Some(b);
            }
            key = mix(key);
        }
        first_usable(self.n, (key % self.n as u64) as usize, usable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::counts;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:8080")).collect()
    }

    fn keyed(s: &dyn Selector, keys: usize) -> Vec<usize> {
        (0..keys)
            .map(|k| s.select(Pick { key: Some(hash_key(format!("client-{k}").as_bytes())) }, &|_| true).unwrap())
            .collect()
    }

    /// Builds with n and n-1 backends (the last removed) and returns the share of keys
    /// that moved, and the share of keys not on the removed backend that moved.
    type Build = dyn Fn(&[(&str, u32)]) -> Box<dyn Selector>;

    fn removal(build: &Build, n: usize) -> (f64, f64) {
        let all = names(n);
        let with: Vec<(&str, u32)> = all.iter().map(|s| (s.as_str(), 1)).collect();
        let before = keyed(build(&with).as_ref(), 20_000);
        let after = keyed(build(&with[..n - 1]).as_ref(), 20_000);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let needless = before.iter().zip(&after).filter(|(a, b)| **a != n - 1 && a != b).count();
        (moved as f64 / 20_000.0, needless as f64 / 20_000.0)
    }

    #[test]
    fn ketama_moves_about_one_nth_of_the_keys_when_a_backend_leaves() {
        let (moved, needless) = removal(&|b| Box::new(Ketama::new(b)), 10);
        assert!((0.06..0.14).contains(&moved), "moved {moved}");
        assert_eq!(needless, 0.0, "only the removed backend's keys move on a ring");
    }

    #[test]
    fn maglev_moves_about_one_nth_of_the_keys_when_a_backend_leaves() {
        let (moved, needless) = removal(&|b| Box::new(Maglev::new(b)), 10);
        assert!((0.08..0.16).contains(&moved), "moved {moved}");
        assert!(needless < 0.03, "few other keys move: {needless}");
    }

    #[test]
    fn hashing_spreads_keys_by_weight() {
        let n = names(3);
        let b = [(n[0].as_str(), 2), (n[1].as_str(), 1), (n[2].as_str(), 1)];
        for s in [Box::new(Ketama::new(&b)) as Box<dyn Selector>, Box::new(Maglev::new(&b))] {
            let c = counts(s.as_ref(), 3, 40_000, &|_| true);
            let share = c[0] as f64 / 40_000.0;
            assert!((0.42..0.58).contains(&share), "{s:?}: {c:?}");
        }
    }

    #[test]
    fn the_same_key_always_gets_the_same_backend_and_skips_unusable_ones() {
        let n = names(5);
        let b: Vec<(&str, u32)> = n.iter().map(|s| (s.as_str(), 1)).collect();
        for s in [Box::new(Ketama::new(&b)) as Box<dyn Selector>, Box::new(Maglev::new(&b))] {
            let pick = Pick { key: Some(hash_key(b"203.0.113.7")) };
            let first = s.select(pick, &|_| true).unwrap();
            assert!((0..100).all(|_| s.select(pick, &|_| true) == Some(first)));
            let other = s.select(pick, &|i| i != first).unwrap();
            assert_ne!(other, first);
            assert_eq!(s.select(pick, &|_| false), None);
        }
    }
}
