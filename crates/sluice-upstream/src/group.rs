//! Upstream groups: named sets of backends and the algorithm that picks one per request
//! (see [`crate::selection`]).

use std::sync::Arc;

use crate::selection::{self, Algorithm, Pick, Selector};
use crate::Backend;

/// A named group of backends.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    backends: Vec<Arc<Backend>>,
    algorithm: Algorithm,
    selector: Box<dyn Selector>,
}

impl Upstream {
    /// A group of `backends` balanced with nginx's smooth weighted round-robin.
    pub fn new(name: impl Into<String>, backends: Vec<Arc<Backend>>) -> Self {
        Self::with_algorithm(name, backends, Algorithm::WeightedRoundRobin)
    }

    /// A group of `backends` balanced with `algorithm`.
    pub fn with_algorithm(name: impl Into<String>, backends: Vec<Arc<Backend>>, algorithm: Algorithm) -> Self {
        let selector = selection::build(algorithm, &backends);
        Self { name: name.into(), backends, algorithm, selector }
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The group's backends.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// The load-balancing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Picks a backend for a request, skipping `avoid` (a backend that just failed) unless
    /// it is the only one. `None` only for an empty group.
    pub fn select(&self, pick: Pick, avoid: Option<&Arc<Backend>>) -> Option<&Arc<Backend>> {
        let avoid = avoid.filter(|_| self.backends.len() > 1);
        let usable = |i: usize| !avoid.is_some_and(|a| Arc::ptr_eq(a, &self.backends[i]));
        let i = self.selector.select(pick, &usable)?;
        self.backends.get(i)
    }
}
