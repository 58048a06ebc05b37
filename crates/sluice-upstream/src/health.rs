//! Which backends may receive requests: passive outlier detection (ejection after
//! consecutive failures, consecutive 5xx, or a failure rate over a window), the verdict of
//! active health checks, and what to do when nothing is left.
//!
//! Every backend keeps its state in atomics ([`Health`]); the group's [`OutlierPolicy`] is
//! applied where outcomes are recorded ([`crate::Backend::record`]), which happens on the
//! request path without locks. Times are milliseconds on one process-wide monotonic clock
//! ([`now_ms`]), passed in explicitly so the rules are testable without waiting.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Milliseconds since the first call, on a monotonic clock.
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What happened to one request sent to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response that is not a 5xx.
    Success,
    /// A 5xx response.
    ServerError,
    /// Connecting failed, timed out, or the connection broke before a response.
    Failure,
}

/// Passive health checking settings of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Eject after this many consecutive failures (0: never).
    pub consecutive_failures: u32,
    /// Eject after this many consecutive 5xx responses (0: never).
    pub consecutive_5xx: u32,
    /// Eject when more than this percentage of requests in a window failed (0: never).
    pub failure_rate_percent: u32,
    /// The failure-rate window.
    pub failure_rate_window: Duration,
    /// Fewest requests in a window before its failure rate counts.
    pub failure_rate_min_requests: u32,
    /// First ejection time; the n-th consecutive ejection lasts n times as long.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// At most this percentage of the group is ejected at once (at least one server
    /// always stays in).
    pub max_ejected_percent: u32,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            consecutive_5xx: 0,
            failure_rate_percent: 0,
            failure_rate_window: Duration::from_secs(10),
            failure_rate_min_requests: 20,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// One backend's health.
#[derive(Debug)]
pub struct Health {
    /// The active checks' verdict (true when there are no checks).
    checked_ok: AtomicBool,
    /// Ejected until this time (`now_ms`); 0 when not ejected.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    consecutive_failures: AtomicU32,
    consecutive_5xx: AtomicU32,
    window_start: AtomicU64,
    window_requests: AtomicU32,
    window_failures: AtomicU32,
    /// When the last active check ran (`now_ms`), 0 if never, and whether it passed.
    last_check_ms: AtomicU64,
    last_check_ok: AtomicBool,
    /// When active checks last declared the backend healthy again (`now_ms`), 0 if never.
    recovered_at: AtomicU64,
    ejections_total: AtomicU64,
    checks_total: AtomicU64,
    check_failures_total: AtomicU64,
    /// Taken out by an operator (admin API) until undrained.
    drained: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            checked_ok: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            window_start: AtomicU64::new(0),
            window_requests: AtomicU32::new(0),
            window_failures: AtomicU32::new(0),
            last_check_ms: AtomicU64::new(0),
            last_check_ok: AtomicBool::new(false),
            recovered_at: AtomicU64::new(0),
            ejections_total: AtomicU64::new(0),
            checks_total: AtomicU64::new(0),
            check_failures_total: AtomicU64::new(0),
            drained: AtomicBool::new(false),
        }
    }
}

impl Health {
    /// Whether requests may go to the backend at `now`.
    pub fn available(&self, now: u64) -> bool {
        self.checked_ok.load(Ordering::Relaxed)
            && !self.drained.load(Ordering::Relaxed)
            && self.ejected_until.load(Ordering::Relaxed) <= now
    }

    /// Whether an operator drained the backend: it gets no new requests (requests in flight
    /// finish) until undrained.
    pub fn drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Drains the backend (`true`) or puts it back (`false`).
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::Relaxed);
    }

    /// Whether the backend is ejected at `now`.
    pub fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// How many times in a row the backend was ejected.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// The active checks' verdict.
    pub fn checked_ok(&self) -> bool {
        self.checked_ok.load(Ordering::Relaxed)
    }

    /// Notes one active check's result.
    pub fn record_check(&self, passed: bool, now: u64) {
        self.checks_total.fetch_add(1, Ordering::Relaxed);
        if !passed {
            self.check_failures_total.fetch_add(1, Ordering::Relaxed);
        }
        self.last_check_ms.store(now.max(1), Ordering::Relaxed);
        self.last_check_ok.store(passed, Ordering::Relaxed);
    }

    /// Ejections since start.
    pub fn ejections_total(&self) -> u64 {
        self.ejections_total.load(Ordering::Relaxed)
    }

    /// Active checks run since start.
    pub fn checks_total(&self) -> u64 {
        self.checks_total.load(Ordering::Relaxed)
    }

    /// Active checks failed since start.
    pub fn check_failures_total(&self) -> u64 {
        self.check_failures_total.load(Ordering::Relaxed)
    }

    /// The last active check: when (`now_ms`) and whether it passed; `None` if none ran.
    pub fn last_check(&self) -> Option<(u64, bool)> {
        let at = self.last_check_ms.load(Ordering::Relaxed);
        (at != 0).then(|| (at, self.last_check_ok.load(Ordering::Relaxed)))
    }

    /// Sets the active checks' verdict; returns whether it changed.
    pub fn set_checked(&self, ok: bool) -> bool {
        let changed = self.checked_ok.swap(ok, Ordering::Relaxed) != ok;
        if changed && ok {
            self.recovered_at.store(now_ms().max(1), Ordering::Relaxed);
        }
        changed
    }

    /// Slow start: the share of its normal traffic a backend should get at `now`, rising
    /// linearly from 5 % to 100 % over `window` after it came back (its ejection ended,
    /// or active checks declared it healthy again). 1 outside that window.
    pub fn ramp(&self, now: u64, window: Duration) -> f64 {
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let back = self.recovered_at.load(Ordering::Relaxed).max(self.ejected_until.load(Ordering::Relaxed));
        if window == 0 || back == 0 || now >= back.saturating_add(window) {
            return 1.0;
        }
        (now.saturating_sub(back) as f64 / window as f64).max(0.05)
    }

    /// Whether recording `outcome` needs the time: not for the common case of a success on
    /// a backend that was never ejected, in a group without a failure-rate rule.
    pub fn needs_clock(&self, outcome: Outcome, policy: &OutlierPolicy) -> bool {
        outcome != Outcome::Success
            || policy.failure_rate_percent > 0
            || self.ejected_until.load(Ordering::Relaxed) != 0
    }

    /// Records a success that [`Health::needs_clock`] said needs no time: resets the
    /// streaks (without writing when they are already zero).
    pub fn record_success_fast(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
            self.consecutive_5xx.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the backend may be used, reading the clock only when it matters: for a
    /// backend that was ejected or came back recently. `now` is read at most once per pick.
    pub fn available_lazy(&self, now: &dyn Fn() -> u64) -> bool {
        if !self.checked_ok.load(Ordering::Relaxed) || self.drained.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || until <= now()
    }

    /// Whether slow start may apply (the backend came back at some point).
    pub fn ever_came_back(&self) -> bool {
        self.recovered_at.load(Ordering::Relaxed) != 0 || self.ejected_until.load(Ordering::Relaxed) != 0
    }

    /// Counts one outcome; returns true when the policy says to eject (the caller checks
    /// the group's cap and then calls [`Health::eject`]).
    pub fn record(&self, outcome: Outcome, policy: &OutlierPolicy, now: u64) -> bool {
        let window = u64::try_from(policy.failure_rate_window.as_millis()).unwrap_or(u64::MAX).max(1);
        let start = self.window_start.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= window {
            self.window_start.store(now, Ordering::Relaxed);
            self.window_requests.store(0, Ordering::Relaxed);
            self.window_failures.store(0, Ordering::Relaxed);
        }
        let requests = self.window_requests.fetch_add(1, Ordering::Relaxed) + 1;
        match outcome {
            Outcome::Success => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                self.consecutive_5xx.store(0, Ordering::Relaxed);
                // A backend that stayed in for as long as its last ejection is forgiven.
                let until = self.ejected_until.load(Ordering::Relaxed);
                let last = self.ejection_time(policy, self.ejections());
                if until != 0 && now > until.saturating_add(last) {
                    self.ejections.store(0, Ordering::Relaxed);
                    self.ejected_until.store(0, Ordering::Relaxed);
                }
                false
            }
            Outcome::ServerError | Outcome::Failure => {
                let failures = self.window_failures.fetch_add(1, Ordering::Relaxed) + 1;
                let (in_a_row, limit) = if outcome == Outcome::Failure {
                    (self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1, policy.consecutive_failures)
                } else {
                    (self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1, policy.consecutive_5xx)
                };
                let by_streak = limit > 0 && in_a_row >= limit;
                let by_rate = policy.failure_rate_percent > 0
                    && requests >= policy.failure_rate_min_requests
                    && u64::from(failures) * 100 > u64::from(requests) * u64::from(policy.failure_rate_percent);
                (by_streak || by_rate) && !self.ejected(now)
            }
        }
    }

    fn ejection_time(&self, policy: &OutlierPolicy, ejections: u32) -> u64 {
        let base = u64::try_from(policy.base_ejection.as_millis()).unwrap_or(u64::MAX);
        let max = u64::try_from(policy.max_ejection.as_millis()).unwrap_or(u64::MAX);
        base.saturating_mul(u64::from(ejections.max(1))).min(max)
    }

    /// Ejects the backend from `now`; returns how long for.
    pub fn eject(&self, policy: &OutlierPolicy, now: u64) -> Duration {
        self.ejections_total.fetch_add(1, Ordering::Relaxed);
        let n = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let ms = self.ejection_time(policy, n);
        self.ejected_until.store(now.saturating_add(ms), Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.window_start.store(now, Ordering::Relaxed);
        self.window_requests.store(0, Ordering::Relaxed);
        self.window_failures.store(0, Ordering::Relaxed);
        Duration::from_millis(ms)
    }
}

/// What a group does when no backend is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenAllDown {
    /// Send to the backends anyway, as if they were all healthy (the default: a wrong
    /// verdict should not turn into a full outage).
    #[default]
    FailOpen,
    /// Answer 503 at once.
    Refuse,
}

/// The group-wide part: the policy and the cap on ejections.
#[derive(Debug)]
pub struct GroupHealth {
    /// Passive checking settings.
    pub policy: OutlierPolicy,
    /// Behaviour when no backend is available.
    pub when_all_down: WhenAllDown,
    /// Slow start window (zero: none).
    pub slow_start: Duration,
    /// The group's backends' health, for the ejection cap.
    pub(crate) members: std::sync::RwLock<Vec<Arc<Health>>>,
    /// The group's name, for logs.
    pub(crate) name: String,
}

impl GroupHealth {
    /// Whether one more backend may be ejected at `now` without passing the cap.
    pub fn may_eject(&self, now: u64) -> bool {
        let Ok(members) = self.members.read() else { return false };
        let n = members.len();
        let ejected = members.iter().filter(|h| h.ejected(now)).count();
        let cap = (n * self.policy.max_ejected_percent as usize / 100).min(n.saturating_sub(1));
        ejected < cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy { consecutive_5xx: 3, ..OutlierPolicy::default() }
    }

    #[test]
    fn consecutive_failures_eject_and_ejections_grow() {
        let h = Health::default();
        let p = policy();
        for i in 1..5 {
            assert!(!h.record(Outcome::Failure, &p, 1_000 + i), "not yet at {i}");
        }
        assert!(h.record(Outcome::Failure, &p, 1_010));
        assert_eq!(h.eject(&p, 1_010), Duration::from_secs(10));
        assert!(!h.available(5_000) && h.available(11_010));
        for i in 0..5 {
            if h.record(Outcome::Failure, &p, 12_000 + i) {
                assert_eq!(h.eject(&p, 12_000 + i), Duration::from_secs(20), "second ejection lasts twice as long");
            }
        }
        assert!(h.ejected(20_000));
    }

    #[test]
    fn a_success_resets_the_streak_and_long_health_forgives_ejections() {
        let h = Health::default();
        let p = policy();
        for _ in 0..4 {
            h.record(Outcome::Failure, &p, 0);
        }
        h.record(Outcome::Success, &p, 1);
        assert!(!h.record(Outcome::Failure, &p, 2), "the streak started over");
        h.eject(&p, 100);
        assert_eq!(h.ejections(), 1);
        h.record(Outcome::Success, &p, 100 + 25_000);
        assert_eq!(h.ejections(), 0);
    }

    #[test]
    fn consecutive_5xx_and_failure_rate_eject() {
        let h = Health::default();
        let p = policy();
        assert!(!h.record(Outcome::ServerError, &p, 0));
        assert!(!h.record(Outcome::ServerError, &p, 0));
        assert!(h.record(Outcome::ServerError, &p, 0));

        let h = Health::default();
        let p = OutlierPolicy { consecutive_failures: 0, failure_rate_percent: 30, ..OutlierPolicy::default() };
        let mut ejected = false;
        for i in 0..40u64 {
            let outcome = if i % 2 == 0 { Outcome::Failure } else { Outcome::Success };
            ejected |= h.record(outcome, &p, i);
        }
        assert!(ejected, "50 % failures over 20+ requests is above 30 %");
    }

    #[test]
    fn slow_start_ramps_up_after_an_ejection() {
        let h = Health::default();
        let p = OutlierPolicy::default();
        let window = Duration::from_secs(100);
        assert_eq!(h.ramp(500, window), 1.0, "never ejected: full share");
        h.eject(&p, 1_000); // back at 11_000
        assert_eq!(h.ramp(5_000, window), 0.05, "the ramp starts when the ejection ends");
        assert_eq!(h.ramp(11_000, window), 0.05);
        assert!((h.ramp(61_000, window) - 0.5).abs() < 1e-9);
        assert_eq!(h.ramp(111_000, window), 1.0);
        assert_eq!(h.ramp(61_000, Duration::ZERO), 1.0, "no slow start configured");
    }

    #[test]
    fn the_cap_keeps_part_of_the_group_in() {
        let members: Vec<Arc<Health>> = (0..4).map(|_| Arc::new(Health::default())).collect();
        let group = GroupHealth {
            policy: OutlierPolicy::default(),
            when_all_down: WhenAllDown::FailOpen,
            slow_start: Duration::ZERO,
            members: std::sync::RwLock::new(members.clone()),
            name: "g".into(),
        };
        assert!(group.may_eject(0));
        members[0].eject(&group.policy, 0);
        assert!(group.may_eject(0));
        members[1].eject(&group.policy, 0);
        assert!(!group.may_eject(0), "50 % of 4 is 2");
        let one = GroupHealth { members: std::sync::RwLock::new(members[..1].to_vec()), ..group };
        assert!(!one.may_eject(100_000), "a single server is never ejected");
    }
}
