//! Upstream groups: named sets of backends and the algorithm that picks one per request
//! (see [`crate::selection`]).

use std::sync::Arc;

use crate::health::{now_ms, GroupHealth, OutlierPolicy, WhenAllDown};
use crate::limits::{GroupLimits, Limits};
use crate::selection::{self, Algorithm, Pick, Selector};
use crate::Backend;

/// A named group of backends.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    backends: Vec<Arc<Backend>>,
    algorithm: Algorithm,
    selector: Box<dyn Selector>,
    health: Arc<GroupHealth>,
    limits: Arc<GroupLimits>,
}

impl Upstream {
    /// A group of `backends` balanced with nginx's smooth weighted round-robin.
    pub fn new(name: impl Into<String>, backends: Vec<Arc<Backend>>) -> Self {
        Self::with_algorithm(name, backends, Algorithm::WeightedRoundRobin)
    }

    /// A group of `backends` balanced with `algorithm`, with the default passive checks
    /// and no limits.
    pub fn with_algorithm(name: impl Into<String>, backends: Vec<Arc<Backend>>, algorithm: Algorithm) -> Self {
        Self::with_policies(
            name,
            backends,
            algorithm,
            OutlierPolicy::default(),
            WhenAllDown::default(),
            Limits::default(),
        )
    }

    /// A group with its load-balancing algorithm, passive checking policy, behaviour when
    /// no backend is available, and circuit-breaker limits.
    pub fn with_policies(
        name: impl Into<String>,
        backends: Vec<Arc<Backend>>,
        algorithm: Algorithm,
        policy: OutlierPolicy,
        when_all_down: WhenAllDown,
        limits: Limits,
    ) -> Self {
        let name = name.into();
        let selector = selection::build(algorithm, &backends);
        let health = Arc::new(GroupHealth {
            policy,
            when_all_down,
            members: backends.iter().map(|b| b.health_arc()).collect(),
            name: name.clone(),
        });
        let limits = Arc::new(GroupLimits::new(&name, limits));
        for b in &backends {
            b.join_group(health.clone(), limits.clone());
        }
        Self { name, backends, algorithm, selector, health, limits }
    }

    /// Circuit-breaker limits and counters.
    pub fn limits(&self) -> &GroupLimits {
        &self.limits
    }

    /// Passive checking policy and the all-down behaviour.
    pub fn health(&self) -> &GroupHealth {
        &self.health
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

    /// Picks an available backend for a request, skipping `avoid` (a backend that just
    /// failed) unless it is the only one. When no backend is available the group fails open
    /// (picks among all) or returns `None`, as configured; `None` also for an empty group.
    pub fn select(&self, pick: Pick, avoid: Option<&Arc<Backend>>) -> Option<&Arc<Backend>> {
        let avoid = avoid.filter(|_| self.backends.len() > 1);
        let allowed = |i: usize| !avoid.is_some_and(|a| Arc::ptr_eq(a, &self.backends[i]));
        let now = now_ms();
        let available = |i: usize| allowed(i) && self.backends[i].health().available(now);
        let i = match self.selector.select(pick, &available) {
            Some(i) => i,
            None => match self.health.when_all_down {
                WhenAllDown::FailOpen => self.selector.select(pick, &allowed)?,
                WhenAllDown::Refuse => return None,
            },
        };
        self.backends.get(i)
    }
}
