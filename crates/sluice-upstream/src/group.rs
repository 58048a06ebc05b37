//! Upstream groups: named sets of backends and the algorithm that picks one per request
//! (see [`crate::selection`]).

use std::sync::{Arc, RwLock};

use crate::health::{now_ms, GroupHealth, OutlierPolicy, WhenAllDown};
use crate::limits::{GroupLimits, Limits};
use crate::selection::{self, Algorithm, Pick, Selector};
use crate::Backend;

/// How a group treats its backends, besides the algorithm.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policies {
    /// Passive health checking.
    pub outlier: OutlierPolicy,
    /// What to do when no backend is available.
    pub when_all_down: WhenAllDown,
    /// Circuit breakers.
    pub limits: Limits,
    /// Slow start window (zero: none).
    pub slow_start: std::time::Duration,
}

/// The backends of a group at one moment, with what selection needs about them. Replaced
/// as a whole when the membership changes (DNS), so a pick never sees half a change.
#[derive(Debug)]
struct Members {
    backends: Vec<Arc<Backend>>,
    selector: Box<dyn Selector>,
    /// Each backend's sticky-session token: a fixed hash of its key, in hex.
    tokens: Vec<String>,
}

impl Members {
    fn new(backends: Vec<Arc<Backend>>, algorithm: Algorithm) -> Self {
        let selector = selection::build(algorithm, &backends);
        let tokens = backends.iter().map(|b| format!("{:016x}", selection::hash_key(b.key().as_bytes()))).collect();
        Self { backends, selector, tokens }
    }
}

/// A named group of backends.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    algorithm: Algorithm,
    members: RwLock<Arc<Members>>,
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
        Self::with_policies(name, backends, algorithm, Policies::default())
    }

    /// A group with its load-balancing algorithm and policies.
    pub fn with_policies(
        name: impl Into<String>,
        backends: Vec<Arc<Backend>>,
        algorithm: Algorithm,
        policies: Policies,
    ) -> Self {
        let Policies { outlier: policy, when_all_down, limits, slow_start } = policies;
        let name = name.into();
        let health = Arc::new(GroupHealth {
            policy,
            when_all_down,
            slow_start,
            members: RwLock::new(backends.iter().map(|b| b.health_arc()).collect()),
            name: name.clone(),
        });
        let limits = Arc::new(GroupLimits::new(&name, limits));
        for b in &backends {
            b.join_group(health.clone(), limits.clone());
        }
        let members = RwLock::new(Arc::new(Members::new(backends, algorithm)));
        Self { name, algorithm, members, health, limits }
    }

    fn members(&self) -> Arc<Members> {
        match self.members.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the group's backends (service discovery). Backends kept from the current
    /// set keep their pools and health; requests in flight on removed ones finish, and their
    /// pooled connections close when the last request lets go of them.
    pub fn set_backends(&self, backends: Vec<Arc<Backend>>) {
        for b in &backends {
            b.join_group(self.health.clone(), self.limits.clone());
        }
        if let Ok(mut m) = self.health.members.write() {
            *m = backends.iter().map(|b| b.health_arc()).collect();
        }
        let members = Arc::new(Members::new(backends, self.algorithm));
        if let Ok(mut current) = self.members.write() {
            *current = members;
        }
    }

    /// The backend a sticky-session token names, if it is available and not `avoid`.
    pub fn sticky(&self, token: &[u8], avoid: Option<&Arc<Backend>>) -> Option<Arc<Backend>> {
        let m = self.members();
        let i = m.tokens.iter().position(|t| t.as_bytes() == token)?;
        let b = &m.backends[i];
        let usable = b.health().available(now_ms()) && !avoid.is_some_and(|a| Arc::ptr_eq(a, b));
        usable.then(|| b.clone())
    }

    /// The sticky-session token of a backend of this group.
    pub fn token_of(&self, backend: &Arc<Backend>) -> Option<String> {
        let m = self.members();
        m.backends.iter().position(|b| Arc::ptr_eq(b, backend)).map(|i| m.tokens[i].clone())
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

    /// The group's current backends.
    pub fn backends(&self) -> Vec<Arc<Backend>> {
        self.members().backends.clone()
    }

    /// The load-balancing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Picks an available backend for a request, skipping `avoid` (a backend that just
    /// failed) unless it is the only one. When no backend is available the group fails open
    /// (picks among all) or returns `None`, as configured; `None` also for an empty group.
    pub fn select(&self, pick: Pick, avoid: Option<&Arc<Backend>>) -> Option<Arc<Backend>> {
        let m = self.members();
        let backends = &m.backends;
        let avoid = avoid.filter(|_| backends.len() > 1);
        let allowed = |i: usize| !avoid.is_some_and(|a| Arc::ptr_eq(a, &backends[i]));
        // The clock is read only if some backend was ejected or is ramping up, once.
        let clock = std::cell::Cell::new(None);
        let now = || match clock.get() {
            Some(t) => t,
            None => {
                let t = now_ms();
                clock.set(Some(t));
                t
            }
        };
        let slow_start = self.health.slow_start;
        let available = |i: usize| {
            let health = backends[i].health();
            if !allowed(i) || !health.available_lazy(&now) {
                return false;
            }
            // Slow start: a backend that just came back is offered with a probability that
            // grows over the window, whatever the algorithm.
            slow_start.is_zero() || !health.ever_came_back() || {
                let share = health.ramp(now(), slow_start);
                share >= 1.0 || fastrand::f64() < share
            }
        };
        let i = match m.selector.select(pick, &available) {
            Some(i) => i,
            None => match self.health.when_all_down {
                WhenAllDown::FailOpen => m.selector.select(pick, &allowed)?,
                WhenAllDown::Refuse => return None,
            },
        };
        backends.get(i).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackendSettings;

    fn backends(n: usize) -> Vec<Arc<Backend>> {
        (0..n)
            .map(|i| {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16));
                Arc::new(Backend::new(format!("s{i}"), addr, 1, BackendSettings::default()))
            })
            .collect()
    }

    #[test]
    fn a_backend_that_comes_back_starts_slowly() {
        let b = backends(2);
        let policies = Policies { slow_start: std::time::Duration::from_secs(3600), ..Policies::default() };
        let group = Upstream::with_policies("g", b.clone(), Algorithm::RoundRobin, policies);
        b[0].health().set_checked(false);
        b[0].health().set_checked(true);
        let picks = (0..2_000).filter(|_| Arc::ptr_eq(&group.select(Pick::default(), None).unwrap(), &b[0])).count();
        // 5 % of its half of the turns: about 50.
        assert!((10..200).contains(&picks), "{picks}");
    }

    #[test]
    fn unavailable_backends_are_skipped_and_all_down_fails_open_or_refuses() {
        let b = backends(2);
        let group = Upstream::with_algorithm("g", b.clone(), Algorithm::RoundRobin);
        b[0].health().set_checked(false);
        assert!((0..10).all(|_| Arc::ptr_eq(&group.select(Pick::default(), None).unwrap(), &b[1])));
        b[1].health().set_checked(false);
        assert!(group.select(Pick::default(), None).is_some(), "fail open by default");
        let refusing = Upstream::with_policies(
            "r",
            b.clone(),
            Algorithm::RoundRobin,
            Policies { when_all_down: WhenAllDown::Refuse, ..Policies::default() },
        );
        assert!(refusing.select(Pick::default(), None).is_none());
    }
}
