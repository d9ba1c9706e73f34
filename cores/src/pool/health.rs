//! Health of an upstream, active and passive, as a state machine fed with
//! results and `now`.
//!
//! - **Active checks** (a connect, optionally a send/expect exchange, run
//!   every `interval`) move an upstream between Up and Down with
//!   hysteresis: `rise` consecutive successes to come up, `fall` consecutive
//!   failures to go down, as HAProxy's `rise`/`fall`, so one lost probe
//!   does not flap it.
//! - **Passive ejection**: `eject_after` consecutive failed connects by real
//!   traffic eject an Up upstream for `cooldown`, catching a dead upstream
//!   between checks. The ejection ends by time only; a check success does
//!   not lift it early (checks and traffic may disagree, and the cooldown is
//!   short).
//!
//! Each upstream is checked by exactly one shard ([`check_plan`]), so an
//! upstream is probed once per interval however many shards there are. That
//! shard broadcasts the [`Transition`]s it sees; the other shards
//! [`Health::apply`] them to their own copy. Passive ejections are seen by
//! the shard whose connects failed, and may be broadcast the same way.

use std::fmt;
use std::time::{Duration, Instant};

/// The longest cooldown accepted: far beyond any sensible value, and small
/// enough that `now + cooldown` never overflows an `Instant`.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(24 * 3600);

/// How an upstream's health is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time between two active checks of the upstream.
    pub interval: Duration,
    /// How long a check may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive successful checks that bring a Down upstream Up.
    pub rise: u32,
    /// Consecutive failed checks that take an Up upstream Down.
    pub fall: u32,
    /// Consecutive failed connects that eject an Up upstream; 0 disables ejection.
    pub eject_after: u32,
    /// How long an ejection lasts.
    pub cooldown: Duration,
    /// The state before any check has run.
    pub start: Start,
}

/// The state an upstream starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// Serve at once; a dead upstream is found by its first `fall` checks
    /// (or `eject_after` failed connects).
    #[default]
    Up,
    /// Serve only after `rise` successful checks.
    Down,
}

impl Default for HealthConfig {
    /// HAProxy's defaults for interval (2 s), rise (2) and fall (3); a 1 s
    /// check timeout; ejection after 5 failed connects for 10 s.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            eject_after: 5,
            cooldown: Duration::from_secs(10),
            start: Start::Up,
        }
    }
}

/// A [`HealthConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthConfigError {
    /// `interval` or `timeout` is zero.
    #[error("health check {what} must be above zero (e.g. 2s)")]
    Zero {
        /// `"interval"` or `"timeout"`.
        what: &'static str,
    },
    /// `timeout` longer than `interval`: checks of one upstream would overlap.
    #[error("health check timeout {timeout:?} exceeds the interval {interval:?} (lower the timeout)")]
    TimeoutAboveInterval {
        /// The timeout given.
        timeout: Duration,
        /// The interval given.
        interval: Duration,
    },
    /// `rise` or `fall` is zero.
    #[error("health check {what} must be at least 1")]
    Threshold {
        /// `"rise"` or `"fall"`.
        what: &'static str,
    },
    /// `cooldown` above [`MAX_COOLDOWN`].
    #[error("ejection cooldown {0:?} exceeds 24h (use a shorter one)")]
    Cooldown(Duration),
}

impl HealthConfig {
    /// Rejects settings under which checks or ejections cannot work. A
    /// zero interval is an error here: "checks off" is the caller's
    /// decision (run no checks), not a configuration of this machine.
    pub fn validate(&self) -> Result<(), HealthConfigError> {
        if self.interval.is_zero() {
            return Err(HealthConfigError::Zero { what: "interval" });
        }
        if self.timeout.is_zero() {
            return Err(HealthConfigError::Zero { what: "timeout" });
        }
        if self.timeout > self.interval {
            let (timeout, interval) = (self.timeout, self.interval);
            return Err(HealthConfigError::TimeoutAboveInterval { timeout, interval });
        }
        if self.rise == 0 {
            return Err(HealthConfigError::Threshold { what: "rise" });
        }
        if self.fall == 0 {
            return Err(HealthConfigError::Threshold { what: "fall" });
        }
        if self.cooldown > MAX_COOLDOWN {
            return Err(HealthConfigError::Cooldown(self.cooldown));
        }
        Ok(())
    }
}

/// What the balancer sees of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Checks pass (or have not failed enough); takes traffic.
    Up,
    /// Checks fail; takes no traffic until `rise` checks pass.
    Down,
    /// Checks pass but connects failed; takes no traffic until the cooldown ends.
    Ejected,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Up => "up",
            Status::Down => "down",
            Status::Ejected => "ejected",
        })
    }
}

/// Why a [`Transition`] happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// This many consecutive checks passed (`rise`).
    ChecksPassed(u32),
    /// This many consecutive checks failed (`fall`).
    ChecksFailed(u32),
    /// This many consecutive connects failed (`eject_after`); ejected until `until`.
    ConnectsFailed {
        /// Consecutive failures seen.
        count: u32,
        /// When the ejection ends.
        until: Instant,
    },
    /// The ejection's cooldown ended.
    CooldownOver,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ChecksPassed(n) => write!(f, "{n} consecutive checks passed"),
            Reason::ChecksFailed(n) => write!(f, "{n} consecutive checks failed"),
            Reason::ConnectsFailed { count, .. } => write!(f, "{count} consecutive connects failed"),
            Reason::CooldownOver => f.write_str("ejection cooldown over"),
        }
    }
}

/// A change of an upstream's [`Status`], to log and to broadcast to the
/// other shards (`Instant`s are comparable across threads of a process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The status before.
    pub from: Status,
    /// The status after.
    pub to: Status,
    /// What caused it.
    pub reason: Reason,
    /// When it happened.
    pub at: Instant,
}

/// `up -> down (3 consecutive checks failed)`.
impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {} ({})", self.from, self.to, self.reason)
    }
}

/// Running totals, for statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthCounters {
    /// Active checks recorded.
    pub checks: u64,
    /// Active checks that failed.
    pub check_failures: u64,
    /// Connects by traffic that failed.
    pub connect_failures: u64,
    /// Ejections started here.
    pub ejections: u64,
    /// Status changes, local or applied.
    pub transitions: u64,
}

/// One upstream's health as one shard sees it.
#[derive(Debug, Clone)]
pub struct Health {
    config: HealthConfig,
    /// The active-check state: Up or Down only (ejection is separate).
    up: bool,
    ejected_until: Option<Instant>,
    checks_passed: u32,
    checks_failed: u32,
    connects_failed: u32,
    counters: HealthCounters,
}

impl Health {
    /// A fresh upstream in `config.start`.
    pub fn new(config: HealthConfig) -> Self {
        Self {
            up: config.start == Start::Up,
            config,
            ejected_until: None,
            checks_passed: 0,
            checks_failed: 0,
            connects_failed: 0,
            counters: HealthCounters::default(),
        }
    }

    /// The status at `now`: Down wins over Ejected, and an ejection whose
    /// cooldown has passed no longer counts, whether or not [`Health::tick`]
    /// has run.
    pub fn status(&self, now: Instant) -> Status {
        if !self.up {
            Status::Down
        } else if self.ejected_until.is_some_and(|until| now < until) {
            Status::Ejected
        } else {
            Status::Up
        }
    }

    /// Whether the upstream may take new connections at `now`.
    pub fn is_eligible(&self, now: Instant) -> bool {
        self.status(now) == Status::Up
    }

    /// When the current ejection ends, for the caller's timer ([`Health::tick`]).
    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// The running totals.
    pub fn counters(&self) -> HealthCounters {
        self.counters
    }

    /// Records an active check's result.
    pub fn on_check(&mut self, ok: bool, now: Instant) -> Option<Transition> {
        let from = self.status(now);
        self.counters.checks += 1;
        let reason = if ok {
            self.checks_passed = self.checks_passed.saturating_add(1);
            self.checks_failed = 0;
            (!self.up && self.checks_passed >= self.config.rise)
                .then_some(Reason::ChecksPassed(self.checks_passed))
        } else {
            self.counters.check_failures += 1;
            self.checks_failed = self.checks_failed.saturating_add(1);
            self.checks_passed = 0;
            (self.up && self.checks_failed >= self.config.fall)
                .then_some(Reason::ChecksFailed(self.checks_failed))
        };
        let reason = reason?;
        self.up = ok;
        self.transition(from, reason, now)
    }

    /// Records the result of a connect by real traffic. Failures count only
    /// while the upstream is Up: connects still in flight when it went down
    /// or was ejected say nothing new, and must not trigger a fresh ejection
    /// the moment the cooldown ends.
    pub fn on_connect_result(&mut self, ok: bool, now: Instant) -> Option<Transition> {
        if ok {
            self.connects_failed = 0;
            return None;
        }
        self.counters.connect_failures += 1;
        if self.status(now) != Status::Up {
            return None;
        }
        self.connects_failed = self.connects_failed.saturating_add(1);
        let threshold = self.config.eject_after;
        if threshold == 0 || self.connects_failed < threshold {
            return None;
        }
        let count = std::mem::take(&mut self.connects_failed);
        // Bounded by validation; an unvalidated huge cooldown near the end of
        // `Instant`'s range ejects for no time rather than panicking.
        let until = now.checked_add(self.config.cooldown).unwrap_or(now);
        self.ejected_until = Some(until);
        self.counters.ejections += 1;
        self.transition(Status::Up, Reason::ConnectsFailed { count, until }, now)
    }

    /// Ends an ejection whose cooldown is over, reporting it (as happening
    /// at the end of the cooldown). Eligibility does not wait for this:
    /// call it from a timer at [`Health::ejected_until`] to learn about it.
    pub fn tick(&mut self, now: Instant) -> Option<Transition> {
        let until = self.ejected_until.filter(|&until| until <= now)?;
        self.ejected_until = None;
        // A Down upstream stays Down: nothing the balancer sees changed.
        if !self.up {
            return None;
        }
        self.counters.transitions += 1;
        Some(Transition { from: Status::Ejected, to: Status::Up, reason: Reason::CooldownOver, at: until })
    }

    /// Mirrors a transition seen by another shard. Up clears any ejection
    /// (the checker's verdict, or the cooldown's end, applies everywhere);
    /// Ejected takes the ejection's end from the reason when it carries one
    /// (a Down -> Ejected change only says the checks passed again); the
    /// local streaks restart since they no longer describe the state.
    pub fn apply(&mut self, transition: &Transition) {
        match transition.to {
            Status::Up => {
                self.up = true;
                self.ejected_until = None;
            }
            Status::Down => self.up = false,
            Status::Ejected => {
                self.up = true;
                if let Reason::ConnectsFailed { until, .. } = transition.reason {
                    self.ejected_until = Some(until);
                }
            }
        }
        self.checks_passed = 0;
        self.checks_failed = 0;
        self.connects_failed = 0;
        self.counters.transitions += 1;
    }

    /// Builds the transition from `from` to the status now, if they differ.
    fn transition(&mut self, from: Status, reason: Reason, now: Instant) -> Option<Transition> {
        let to = self.status(now);
        (to != from).then(|| {
            self.counters.transitions += 1;
            Transition { from, to, reason, at: now }
        })
    }
}

/// Which shard checks upstream `upstream`: `upstream % shards` (0 when
/// there are no shards), so every upstream is checked exactly once and the
/// checks spread evenly.
pub fn checking_shard(upstream: usize, shards: usize) -> usize {
    upstream.checked_rem(shards).unwrap_or(0)
}

/// For each shard, the upstreams it checks: `plan[s]` lists every `i` with
/// `i % shards == s`. Empty for zero shards.
pub fn check_plan(upstreams: usize, shards: usize) -> Vec<Vec<usize>> {
    let mut plan = vec![Vec::new(); shards];
    if shards > 0 {
        for i in 0..upstreams {
            plan[checking_shard(i, shards)].push(i);
        }
    }
    plan
}

/// When the upstream at `position` of `count` on one shard has its first
/// check, as an offset into the first interval: checks spread evenly over
/// the interval instead of all firing at once.
pub fn check_offset(position: usize, count: usize, interval: Duration) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    let nanos = interval.as_nanos() * (position % count) as u128 / count as u128;
    // Below `interval`, so it fits in a Duration.
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> HealthConfig {
        HealthConfig::default()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn defaults_are_valid_and_bad_configs_are_named() {
        assert_eq!(config().validate(), Ok(()));
        let bad = |f: fn(&mut HealthConfig)| {
            let mut c = config();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert_eq!(
            bad(|c| c.interval = Duration::ZERO),
            "health check interval must be above zero (e.g. 2s)"
        );
        assert_eq!(bad(|c| c.rise = 0), "health check rise must be at least 1");
        assert_eq!(bad(|c| c.fall = 0), "health check fall must be at least 1");
        assert!(bad(|c| c.timeout = secs(5)).contains("exceeds the interval"));
        assert!(bad(|c| c.cooldown = secs(90_000)).contains("exceeds 24h"));
    }

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_successes() {
        let t0 = Instant::now();
        let mut h = Health::new(config());
        assert!(h.is_eligible(t0));
        assert_eq!(h.on_check(false, t0), None);
        assert_eq!(h.on_check(false, t0), None);
        assert_eq!(h.on_check(true, t0), None, "a success breaks the failure streak");
        assert_eq!(h.on_check(false, t0), None);
        assert_eq!(h.on_check(false, t0), None);
        let down = h.on_check(false, t0).unwrap();
        assert_eq!((down.from, down.to, down.reason), (Status::Up, Status::Down, Reason::ChecksFailed(3)));
        assert_eq!(down.to_string(), "up -> down (3 consecutive checks failed)");
        assert!(!h.is_eligible(t0));
        assert_eq!(h.on_check(false, t0), None, "already down");
        assert_eq!(h.on_check(true, t0), None);
        let up = h.on_check(true, t0).unwrap();
        assert_eq!((up.from, up.to, up.reason), (Status::Down, Status::Up, Reason::ChecksPassed(2)));
        assert!(h.is_eligible(t0));
        let c = h.counters();
        assert_eq!((c.checks, c.check_failures, c.transitions), (9, 6, 2));
    }

    #[test]
    fn can_start_down() {
        let t0 = Instant::now();
        let mut h = Health::new(HealthConfig { start: Start::Down, ..config() });
        assert_eq!(h.status(t0), Status::Down);
        assert_eq!(h.on_check(true, t0), None);
        assert_eq!(h.on_check(true, t0).map(|t| t.to), Some(Status::Up));
    }

    #[test]
    fn consecutive_connect_failures_eject_until_the_cooldown_ends() {
        let t0 = Instant::now();
        let mut h = Health::new(config());
        for _ in 0..4 {
            assert_eq!(h.on_connect_result(false, t0), None);
        }
        assert_eq!(h.on_connect_result(true, t0), None, "a success resets the count");
        for _ in 0..4 {
            assert_eq!(h.on_connect_result(false, t0), None);
        }
        let t = h.on_connect_result(false, t0 + secs(1)).unwrap();
        let until = t0 + secs(11);
        assert_eq!(
            (t.from, t.to, t.reason),
            (Status::Up, Status::Ejected, Reason::ConnectsFailed { count: 5, until })
        );
        assert_eq!(h.ejected_until(), Some(until));
        assert!(!h.is_eligible(t0 + secs(10)));
        // Failures of connects still in flight neither extend nor re-eject.
        for _ in 0..10 {
            assert_eq!(h.on_connect_result(false, t0 + secs(5)), None);
        }
        assert_eq!(h.ejected_until(), Some(until));
        assert!(h.is_eligible(until), "expires by time alone");
        assert_eq!(h.tick(t0 + secs(10)), None, "not yet");
        let back = h.tick(t0 + secs(12)).unwrap();
        assert_eq!(
            (back.from, back.to, back.reason, back.at),
            (Status::Ejected, Status::Up, Reason::CooldownOver, until)
        );
        assert_eq!(h.tick(t0 + secs(13)), None);
        // A fresh streak is needed to eject again.
        assert_eq!(h.on_connect_result(false, t0 + secs(13)), None);
        let c = h.counters();
        assert_eq!((c.connect_failures, c.ejections, c.transitions), (20, 1, 2));
    }

    #[test]
    fn ejection_can_be_disabled() {
        let t0 = Instant::now();
        let mut h = Health::new(HealthConfig { eject_after: 0, ..config() });
        for _ in 0..100 {
            assert_eq!(h.on_connect_result(false, t0), None);
        }
        assert!(h.is_eligible(t0));
    }

    #[test]
    fn down_wins_over_ejected() {
        let t0 = Instant::now();
        let mut h = Health::new(HealthConfig { eject_after: 1, fall: 1, rise: 1, ..config() });
        assert_eq!(h.on_connect_result(false, t0).map(|t| t.to), Some(Status::Ejected));
        let t = h.on_check(false, t0).unwrap();
        assert_eq!((t.from, t.to), (Status::Ejected, Status::Down));
        let t = h.on_check(true, t0).unwrap();
        assert_eq!((t.from, t.to), (Status::Down, Status::Ejected), "back up, but still ejected");
        assert_eq!(h.on_check(false, t0).map(|t| t.to), Some(Status::Down));
        assert_eq!(h.tick(t0 + secs(60)), None, "the ejection ends silently while down");
        assert_eq!(h.on_check(true, t0 + secs(60)).map(|t| (t.from, t.to)), Some((Status::Down, Status::Up)));
    }

    #[test]
    fn transitions_apply_on_other_shards() {
        let t0 = Instant::now();
        let mut checker = Health::new(HealthConfig { fall: 1, eject_after: 1, ..config() });
        let mut mirror = Health::new(config());
        let down = checker.on_check(false, t0).unwrap();
        mirror.apply(&down);
        assert_eq!(mirror.status(t0), Status::Down);
        checker.on_check(true, t0);
        let up = checker.on_check(true, t0).unwrap();
        mirror.apply(&up);
        assert_eq!(mirror.status(t0), Status::Up);
        let ejected = checker.on_connect_result(false, t0).unwrap();
        mirror.apply(&ejected);
        assert_eq!(mirror.status(t0), Status::Ejected);
        assert_eq!(mirror.ejected_until(), checker.ejected_until());
        let back = checker.tick(t0 + secs(10)).unwrap();
        mirror.apply(&back);
        assert_eq!((mirror.status(t0), mirror.ejected_until()), (Status::Up, None));
        assert_eq!(mirror.counters().transitions, 4);
    }

    #[test]
    fn each_upstream_is_checked_by_exactly_one_shard() {
        assert_eq!(check_plan(5, 2), [vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(check_plan(2, 4), [vec![0], vec![1], vec![], vec![]]);
        assert!(check_plan(3, 0).is_empty());
        assert_eq!(checking_shard(7, 0), 0);
        for upstreams in 0..40 {
            for shards in 1..12 {
                let plan = check_plan(upstreams, shards);
                let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
                seen.sort();
                assert_eq!(seen, (0..upstreams).collect::<Vec<_>>());
                for (s, list) in plan.iter().enumerate() {
                    assert!(list.iter().all(|&i| checking_shard(i, shards) == s));
                    assert!(list.len().abs_diff(upstreams / shards) <= 1);
                }
            }
        }
    }

    #[test]
    fn check_offsets_spread_over_the_interval() {
        let offsets: Vec<Duration> = (0..4).map(|p| check_offset(p, 4, secs(2))).collect();
        assert_eq!(
            offsets,
            [Duration::ZERO, Duration::from_millis(500), secs(1), Duration::from_millis(1500)]
        );
        assert_eq!(check_offset(0, 0, secs(2)), Duration::ZERO);
    }

    /// One event for the state machine in the proptests.
    #[derive(Debug, Clone)]
    enum Event {
        Check(bool),
        Connect(bool),
        Tick,
    }

    fn event() -> impl Strategy<Value = (Event, u64)> {
        let e = prop_oneof![
            any::<bool>().prop_map(Event::Check),
            any::<bool>().prop_map(Event::Connect),
            Just(Event::Tick),
        ];
        (e, 0u64..3000)
    }

    proptest! {
        /// Whatever happens: never eligible while Down, never while an
        /// ejection runs, always once it has expired while Up; reported
        /// transitions chain (each starts where the last ended) and are
        /// counted.
        #[test]
        fn status_invariants(
            rise in 1u32..4,
            fall in 1u32..4,
            eject_after in 0u32..4,
            cooldown_ms in 0u64..5000,
            events in proptest::collection::vec(event(), 0..200),
        ) {
            let cfg = HealthConfig { rise, fall, eject_after, cooldown: Duration::from_millis(cooldown_ms), ..config() };
            let t0 = Instant::now();
            let mut h = Health::new(cfg);
            let mut now = t0;
            let mut last = Status::Up;
            let mut reported = 0;
            for (event, step_ms) in events {
                now += Duration::from_millis(step_ms);
                // Time alone may only end an ejection (reported later by `tick`).
                let before = h.status(now);
                if before != last {
                    prop_assert_eq!((last, before), (Status::Ejected, Status::Up));
                    prop_assert!(h.ejected_until().is_some_and(|u| u <= now));
                }
                let t = match event {
                    Event::Check(ok) => h.on_check(ok, now),
                    Event::Connect(ok) => h.on_connect_result(ok, now),
                    Event::Tick => h.tick(now),
                };
                match t {
                    Some(t) if t.reason == Reason::CooldownOver => {
                        prop_assert_eq!((t.from, t.to), (Status::Ejected, Status::Up));
                        prop_assert!(t.at <= now);
                        reported += 1;
                    }
                    Some(t) => {
                        prop_assert_eq!((t.from, t.to), (before, h.status(now)));
                        prop_assert_ne!(t.from, t.to);
                        reported += 1;
                    }
                    None => prop_assert_eq!(before, h.status(now), "a change must be reported"),
                }
                last = h.status(now);
                let status = h.status(now);
                prop_assert_eq!(h.is_eligible(now), status == Status::Up);
                if let Some(until) = h.ejected_until() {
                    prop_assert!(until <= now + cfg.cooldown);
                    if now >= until {
                        prop_assert_ne!(status, Status::Ejected, "ejection expires by time");
                    }
                }
            }
            prop_assert_eq!(h.counters().transitions, reported);
        }

    }
}
