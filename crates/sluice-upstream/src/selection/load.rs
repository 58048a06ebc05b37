//! Algorithms that look at the backends: weighted random, least outstanding requests, and
//! peak-EWMA latency (Finagle/Linkerd). The last two use the *power of two choices*: draw
//! two distinct usable backends at random (weighted) and take the less loaded, which is
//! O(1) per pick, needs no lock, and avoids the herd that "always the least loaded" causes
//! when many workers pick at once from slightly stale counts.

use std::sync::Arc;

use super::{Pick, Selector};
use crate::Backend;

/// Weighted random: backend i with probability weight_i / Σ weights.
#[derive(Debug)]
pub struct WeightedRandom {
    /// Running sums of the weights.
    cumulative: Vec<u64>,
}

impl WeightedRandom {
    /// Over backends with these weights.
    pub fn new(weights: &[u32]) -> Self {
        let mut sum = 0u64;
        let cumulative = weights
            .iter()
            .map(|&w| {
                sum += u64::from(w.max(1));
                sum
            })
            .collect();
        Self { cumulative }
    }

    /// One weighted draw (usable or not).
    fn draw(&self) -> Option<usize> {
        let total = *self.cumulative.last()?;
        let r = fastrand::u64(0..total);
        Some(self.cumulative.partition_point(|&c| c <= r))
    }

    /// A weighted draw among usable backends: a few tries, then the first usable one after
    /// a random start (so that a mostly-down group still spreads its load).
    pub(crate) fn draw_usable(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        for _ in 0..8 {
            let i = self.draw()?;
            if usable(i) {
                return Some(i);
            }
        }
        let n = self.cumulative.len();
        super::first_usable(n, fastrand::usize(0..n), usable)
    }

    /// Two distinct usable backends (or one, when only one is usable).
    fn two(&self, usable: &dyn Fn(usize) -> bool) -> Option<(usize, Option<usize>)> {
        let a = self.draw_usable(usable)?;
        for _ in 0..8 {
            let b = self.draw_usable(usable)?;
            if b != a {
                return Some((a, Some(b)));
            }
        }
        let n = self.cumulative.len();
        Some((a, super::first_usable(n, (a + 1) % n, &|i| i != a && usable(i))))
    }
}

impl Selector for WeightedRandom {
    fn select(&self, _pick: Pick, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.draw_usable(usable)
    }
}

/// The power of two choices: two random (weighted) usable backends, and the one with the
/// lower `cost` wins. Least requests and peak-EWMA differ only in the cost.
pub struct TwoChoices {
    backends: Vec<Arc<Backend>>,
    random: WeightedRandom,
    cost: fn(&Backend) -> f64,
}

impl std::fmt::Debug for TwoChoices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwoChoices").field("backends", &self.backends.len()).finish_non_exhaustive()
    }
}

impl TwoChoices {
    fn new(backends: Vec<Arc<Backend>>, cost: fn(&Backend) -> f64) -> Self {
        let random = WeightedRandom::new(&backends.iter().map(|b| b.weight()).collect::<Vec<_>>());
        Self { backends, random, cost }
    }

    /// Least outstanding requests per unit of weight.
    pub fn least_requests(backends: Vec<Arc<Backend>>) -> Self {
        Self::new(backends, |b| b.stats().in_flight() as f64 / f64::from(b.weight()))
    }

    /// Peak-EWMA latency × (outstanding requests + 1) / weight.
    pub fn peak_ewma(backends: Vec<Arc<Backend>>) -> Self {
        Self::new(backends, |b| {
            let stats = b.stats();
            stats.latency_ewma_us() * (stats.in_flight() as f64 + 1.0) / f64::from(b.weight())
        })
    }
}

impl Selector for TwoChoices {
    fn select(&self, _pick: Pick, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let (a, b) = self.random.two(usable)?;
        let cost = |i: usize| (self.cost)(&self.backends[i]);
        Some(match b {
            Some(b) if cost(b) < cost(a) => b,
            _ => a,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::selection::counts;
    use crate::BackendSettings;

    fn backends(weights: &[u32]) -> Vec<Arc<Backend>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16));
                Arc::new(Backend::new(format!("s{i}"), addr, w, BackendSettings::default()))
            })
            .collect()
    }

    #[test]
    fn random_follows_the_weights() {
        let c = counts(&WeightedRandom::new(&[3, 1]), 2, 40_000, &|_| true);
        let share = c[0] as f64 / 40_000.0;
        assert!((0.72..0.78).contains(&share), "{c:?}");
        let c = counts(&WeightedRandom::new(&[3, 1]), 2, 1_000, &|i| i == 1);
        assert_eq!(c, [0, 1_000]);
        assert_eq!(WeightedRandom::new(&[1, 1]).select(Pick::default(), &|_| false), None);
    }

    #[test]
    fn least_requests_prefers_the_idle_backend() {
        let b = backends(&[1, 1, 1]);
        for _ in 0..50 {
            b[0].stats().request_started();
            b[1].stats().request_started();
        }
        let c = counts(&TwoChoices::least_requests(b.clone()), 3, 3_000, &|_| true);
        // Backend 2 wins every comparison it is in: 2 of the 3 possible pairs.
        assert!(c[2] > 1_800, "{c:?}");
        // Weight matters: twice the weight, twice the acceptable load.
        let b = backends(&[2, 1]);
        for _ in 0..10 {
            b[0].stats().request_started();
        }
        for _ in 0..6 {
            b[1].stats().request_started();
        }
        let c = counts(&TwoChoices::least_requests(b), 2, 1_000, &|_| true);
        assert_eq!(c, [1_000, 0], "10/2 < 6/1");
    }

    #[test]
    fn peak_ewma_avoids_the_slow_backend() {
        let b = backends(&[1, 1]);
        b[0].stats().observe_latency(Duration::from_millis(200));
        b[1].stats().observe_latency(Duration::from_millis(2));
        let c = counts(&TwoChoices::peak_ewma(b), 2, 1_000, &|_| true);
        assert_eq!(c, [0, 1_000]);
    }
}
