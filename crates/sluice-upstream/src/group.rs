//! Upstream groups: named sets of backends with weighted round-robin selection.
//!
//! The order is nginx's smooth weighted round-robin (weights 5,1,1 give a a b a c a a),
//! precomputed once into a schedule so that a pick is one atomic increment, shared by all
//! worker threads. The load-balancing issue replaces this with algorithms behind a trait.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::Backend;

/// Longest precomputed schedule; larger weight sums are scaled down proportionally.
const MAX_SCHEDULE: u64 = 4096;

/// A named group of backends.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    backends: Vec<Arc<Backend>>,
    schedule: Vec<u32>,
    next: AtomicUsize,
}

impl Upstream {
    /// A group of `backends`.
    pub fn new(name: impl Into<String>, backends: Vec<Arc<Backend>>) -> Self {
        let schedule = smooth_wrr_schedule(&backends.iter().map(|b| b.weight()).collect::<Vec<_>>());
        Self { name: name.into(), backends, schedule, next: AtomicUsize::new(0) }
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The group's backends.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// Picks the next backend in weighted round-robin order, skipping `avoid` (a backend
    /// that just failed) unless it is the only one. `None` only for an empty group.
    pub fn select(&self, avoid: Option<&Arc<Backend>>) -> Option<&Arc<Backend>> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        for _ in 0..len.min(64) {
            let slot = self.next.fetch_add(1, Ordering::Relaxed) % len;
            let b = &self.backends[self.schedule[slot] as usize];
            if self.backends.len() > 1 && avoid.is_some_and(|a| Arc::ptr_eq(a, b)) {
                continue;
            }
            return Some(b);
        }
        self.backends.iter().find(|b| !avoid.is_some_and(|a| Arc::ptr_eq(a, b))).or(self.backends.first())
    }
}

/// nginx's smooth weighted round-robin, unrolled into one full cycle.
fn smooth_wrr_schedule(weights: &[u32]) -> Vec<u32> {
    let total: u64 = weights.iter().map(|&w| u64::from(w.max(1))).sum();
    let scale = |w: u32| -> i64 {
        let w = u64::from(w.max(1));
        if total <= MAX_SCHEDULE {
            w as i64
        } else {
            ((w * MAX_SCHEDULE) / total).max(1) as i64
        }
    };
    let effective: Vec<i64> = weights.iter().map(|&w| scale(w)).collect();
    let sum: i64 = effective.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(sum as usize);
    for _ in 0..sum {
        let mut best = 0;
        for i in 0..current.len() {
            current[i] += effective[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= sum;
        schedule.push(best as u32);
    }
    schedule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_weighted_order_matches_nginx() {
        let s = smooth_wrr_schedule(&[5, 1, 1]);
        let names: String = s.iter().map(|&i| (b'a' + i as u8) as char).collect();
        assert_eq!(names, "aabacaa");
    }

    #[test]
    fn equal_weights_alternate() {
        assert_eq!(smooth_wrr_schedule(&[1, 1]), vec![0, 1]);
    }

    #[test]
    fn huge_weights_are_scaled_but_keep_every_server() {
        let s = smooth_wrr_schedule(&[1_000_000, 1]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 1);
        assert!(s.contains(&1));
    }
}
