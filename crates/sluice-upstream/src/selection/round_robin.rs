//! Round-robin, plain and nginx's smooth weighted variant.
//!
//! Both are one atomic increment per pick, shared by every worker thread. The weighted
//! order (weights 5,1,1 give a a b a c a a, not a a a a a b c) is precomputed once into a
//! schedule.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{first_usable, Pick, Selector};

/// Longest precomputed schedule; larger weight sums are scaled down proportionally.
const MAX_SCHEDULE: u64 = 4096;

/// Each backend in turn, weights ignored.
#[derive(Debug)]
pub struct RoundRobin {
    n: usize,
    next: AtomicUsize,
}

impl RoundRobin {
    /// Over `n` backends.
    pub fn new(n: usize) -> Self {
        Self { n, next: AtomicUsize::new(0) }
    }
}

impl Selector for RoundRobin {
    fn select(&self, _pick: Pick, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % self.n;
        first_usable(self.n, start, usable)
    }
}

/// nginx's smooth weighted round-robin.
#[derive(Debug)]
pub struct SmoothWeighted {
    n: usize,
    schedule: Vec<u32>,
    next: AtomicUsize,
}

impl SmoothWeighted {
    /// Over backends with these weights.
    pub fn new(weights: &[u32]) -> Self {
        Self { n: weights.len(), schedule: schedule(weights), next: AtomicUsize::new(0) }
    }
}

impl Selector for SmoothWeighted {
    fn select(&self, _pick: Pick, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        // Skipping unusable backends along the schedule keeps the others' proportions.
        for _ in 0..len.min(64) {
            let slot = self.next.fetch_add(1, Ordering::Relaxed) % len;
            let b = self.schedule[slot] as usize;
            if usable(b) {
                return Some(b);
            }
        }
        first_usable(self.n, 0, usable)
    }
}

/// nginx's smooth weighted round-robin, unrolled into one full cycle.
pub(crate) fn schedule(weights: &[u32]) -> Vec<u32> {
    let total: u64 = weights.iter().map(|&w| u64::from(w.max(1))).sum();
    let scale = |w: u32| -> i64 {
        let w = u64::from(w.max(1));
        let scaled = if total <= MAX_SCHEDULE { w } else { ((w * MAX_SCHEDULE) / total).max(1) };
        i64::try_from(scaled).unwrap_or(i64::MAX)
    };
    let effective: Vec<i64> = weights.iter().map(|&w| scale(w)).collect();
    let sum: i64 = effective.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(usize::try_from(sum).unwrap_or(0));
    for _ in 0..sum {
        let mut best = 0;
        for i in 0..current.len() {
            current[i] += effective[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= sum;
        out.push(u32::try_from(best).unwrap_or(0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(s: &dyn Selector, picks: usize, usable: &dyn Fn(usize) -> bool) -> String {
        (0..picks).map(|_| (b'a' + s.select(Pick::default(), usable).unwrap() as u8) as char).collect()
    }

    #[test]
    fn smooth_weighted_order_matches_nginx() {
        let s = SmoothWeighted::new(&[5, 1, 1]);
        assert_eq!(order(&s, 14, &|_| true), "aabacaaaabacaa");
    }

    #[test]
    fn plain_round_robin_ignores_weights() {
        let s = RoundRobin::new(3);
        assert_eq!(order(&s, 6, &|_| true), "abcabc");
    }

    #[test]
    fn unusable_backends_are_skipped_and_others_keep_their_order() {
        let s = SmoothWeighted::new(&[5, 1, 1]);
        assert_eq!(order(&s, 12, &|i| i != 1), "aaacaaaaacaa");
        let rr = RoundRobin::new(3);
        // The turn of an unusable backend goes to the next usable one.
        assert_eq!(order(&rr, 4, &|i| i != 0), "bbcb");
        assert_eq!(rr.select(Pick::default(), &|_| false), None);
    }

    #[test]
    fn huge_weights_are_scaled_but_keep_every_server() {
        let s = schedule(&[1_000_000, 1]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 1);
        assert!(s.contains(&1));
    }
}
