//! What one step measured, when a step counts as sustained, and the ramp that finds the
//! highest sustained rate. Pure: no I/O, no clock.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::procs::Rule;

/// Who is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Contender {
    /// A subscriber on the sensors' own topics that only counts: what the broker can
    /// deliver, the ceiling for anyone downstream of it.
    Bare,
    /// A client that republishes every reading unchanged and does nothing else: the broker's
    /// limit for one message in, one out, which is the shape of every contender's work.
    Relay,
    Edgewatch,
    /// Edgewatch with `state.durable = false`: what durability costs (for reference; not a
    /// configuration issue 9's targets are about).
    EdgewatchMemory,
    NodeRed,
}

impl Contender {
    /// The harness's own clients (the limits), as opposed to the contenders measured
    /// against them: they run no rule.
    pub fn is_baseline(self) -> bool {
        matches!(self, Contender::Bare | Contender::Relay)
    }

    pub fn name(self) -> &'static str {
        match self {
            Contender::Bare => "bare subscriber",
            Contender::Relay => "bare relay",
            Contender::Edgewatch => "Edgewatch",
            Contender::EdgewatchMemory => "Edgewatch, state in memory",
            Contender::NodeRed => "Node-RED",
        }
    }
}

/// A contender running one rule: a row of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Setup {
    pub contender: Contender,
    pub rule: Rule,
}

impl Setup {
    pub fn label(self) -> String {
        match self.contender {
            Contender::Bare => "bare subscriber (broker limit)".to_owned(),
            Contender::Relay => "bare relay (broker limit, one in, one out)".to_owned(),
            c => format!("{}, {}", c.name(), self.rule.name()),
        }
    }
}

/// Latency percentiles, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// What one fixed-rate step measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// Offered messages per second (readings and heartbeats).
    pub rate: f64,
    pub devices: usize,
    /// Wall time the load ran.
    pub seconds: f64,
    /// Messages published.
    pub published: u64,
    /// Outputs that should arrive (one per reading; per message for the bare subscriber).
    pub expected: u64,
    /// Distinct outputs that did.
    pub answered: u64,
    pub duplicates: u64,
    /// From the last publish to the last expected output, ms; `None` if some never came.
    pub drain_ms: Option<f64>,
    pub latency: Latency,
    /// The contender's CPU over the step (publish start to drain end), % of one core.
    pub cpu_pct: Option<f64>,
    /// The contender's CPU time per message published, µs.
    pub cpu_us_per_msg: Option<f64>,
    /// Mosquitto's CPU over the step, % of one core.
    pub broker_cpu_pct: Option<f64>,
    /// The contender's peak resident memory (VmHWM) at the end of the step, KiB.
    pub peak_rss_kib: Option<u64>,
    /// How late the load generator was against the schedule, p99, µs.
    pub lag_p99_us: u64,
    /// Why the step could not run to its end.
    pub error: Option<String>,
}

/// Thresholds that decide whether a step was sustained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criteria {
    /// The last expected output must arrive within this of the last publish.
    pub drain: Duration,
    /// The load generator must have kept to the schedule (p99 lateness) within this.
    pub lag: Duration,
}

impl Step {
    /// Expected outputs that never arrived.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.answered)
    }

    /// Sustained: the step ran, the rate was really offered, nothing was lost, and the
    /// backlog at the end drained within `c.drain` (so the contender kept up with the
    /// rate, give or take `c.drain / step length`).
    pub fn sustained(&self, c: &Criteria) -> bool {
        self.error.is_none()
            && self.expected > 0
            && self.lost() == 0
            && self.lag_p99_us as f64 <= c.lag.as_secs_f64() * 1e6
            && self.drain_ms.is_some_and(|d| d <= c.drain.as_secs_f64() * 1e3)
    }

    /// Why a step was not sustained, in a few words.
    pub fn verdict(&self, c: &Criteria) -> String {
        if let Some(e) = &self.error {
            return format!("error: {e}");
        }
        if self.sustained(c) {
            return "sustained".into();
        }
        let mut why = Vec::new();
        if self.lost() > 0 {
            why.push(format!("{} of {} outputs missing when the harness stopped waiting", self.lost(), self.expected));
        } else if self.drain_ms.is_some_and(|d| d > c.drain.as_secs_f64() * 1e3) {
            why.push(format!("fell behind: drained {:.1} s after the load", self.drain_ms.unwrap_or(0.0) / 1e3));
        }
        if self.lag_p99_us as f64 > c.lag.as_secs_f64() * 1e6 {
            why.push(format!("load generator {} ms late (p99)", self.lag_p99_us / 1000));
        }
        if why.is_empty() {
            why.push("no output expected".into());
        }
        why.join("; ")
    }
}

/// Missed-heartbeat detection: what one heartbeat run measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detection {
    pub devices: usize,
    /// Devices whose heartbeats stopped.
    pub silenced: usize,
    /// Of those, reported missing.
    pub detected: usize,
    /// Reported before their deadline (by the harness's reckoning: last heartbeat published
    /// + timeout; the contender counts from when it received it, a little later).
    pub early: usize,
    /// Report time minus deadline, µs, for those reported at or after it.
    pub delay: Latency,
    /// Reports for devices that never stopped, or repeated reports.
    pub false_reports: u64,
    pub timeout: Duration,
    /// Time between a device's heartbeats.
    pub every: Duration,
    /// Time between a device's readings (load the heartbeat rule ignores).
    pub reading_every: Duration,
    pub rate: f64,
    pub cpu_pct: Option<f64>,
    pub peak_rss_kib: Option<u64>,
    pub error: Option<String>,
}

/// Fills `d`'s counts and delays from the "missing" reports per device (arrival times), which
/// devices were silenced, the send time of each device's last heartbeat (0: none) and the
/// timeout. A silenced device is detected by its first report that arrived after its last
/// heartbeat was sent; any other report (for a device still alive, before its last
/// heartbeat, or a repeat) is false.
pub fn judge_heartbeats(
    reports: &[Vec<u64>],
    silenced: &[bool],
    last_heartbeat: &[u64],
    timeout_us: u64,
    d: &mut Detection,
) {
    let mut delays = crate::consumer::new_histogram();
    let (mut n, mut detected, mut early, mut false_reports) = (0, 0, 0, 0u64);
    for (i, times) in reports.iter().enumerate() {
        let last = last_heartbeat.get(i).copied().unwrap_or(0);
        if !silenced.get(i).copied().unwrap_or(false) || last == 0 {
            false_reports += times.len() as u64;
            continue;
        }
        n += 1;
        match times.iter().position(|&t| t >= last) {
            Some(k) => {
                detected += 1;
                false_reports += (times.len() - 1) as u64;
                let due = last + timeout_us;
                if times[k] < due {
                    early += 1;
                } else {
                    delays.saturating_record((times[k] - due).max(1));
                }
            }
            None => false_reports += times.len() as u64,
        }
    }
    d.silenced = n;
    d.detected = detected;
    d.early = early;
    d.false_reports = false_reports;
    d.delay = Latency::of(&delays);
}

/// The rates a ramp may try, ascending.
pub const GRID: &[f64] = &[
    1_000.0, 2_000.0, 5_000.0, 10_000.0, 20_000.0, 30_000.0, 50_000.0, 70_000.0, 100_000.0, 140_000.0, 200_000.0,
    280_000.0,
];

/// Finds the highest sustained rate: walks a grid upwards until a step fails (running the
/// rates the report needs anyway), then bisects between the best pass and the first failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Ramp {
    grid: Vec<f64>,
    /// Rates always run (the fixed rates of the report).
    required: Vec<f64>,
    done: Vec<(f64, bool)>,
    refinements: usize,
    max_refinements: usize,
}

impl Ramp {
    pub fn new(grid: &[f64], required: &[f64], max_refinements: usize) -> Ramp {
        Ramp { grid: grid.to_vec(), required: required.to_vec(), done: Vec::new(), refinements: 0, max_refinements }
    }

    /// Records a step's outcome.
    pub fn record(&mut self, rate: f64, sustained: bool) {
        if !self.grid.contains(&rate) && !self.required.contains(&rate) {
            self.refinements += 1;
        }
        self.done.push((rate, sustained));
    }

    fn ran(&self, rate: f64) -> bool {
        self.done.iter().any(|(r, _)| *r == rate)
    }

    fn first_failure(&self) -> Option<f64> {
        self.done.iter().filter(|(_, ok)| !ok).map(|(r, _)| *r).min_by(f64::total_cmp)
    }

    /// The rate to run next, if any.
    pub fn next(&self) -> Option<f64> {
        let fail = self.first_failure();
        let grid_next = self
            .grid
            .iter()
            .chain(self.required.iter())
            .copied()
            .filter(|r| !self.ran(*r))
            .filter(|r| self.required.contains(r) || fail.is_none_or(|f| *r < f))
            .min_by(f64::total_cmp);
        if grid_next.is_some() {
            return grid_next;
        }
        let (pass, fail) = (self.max_sustained()?, fail?);
        if self.refinements >= self.max_refinements || fail / pass <= 1.15 {
            return None;
        }
        let mid = ((pass + fail) / 2.0 / 1000.0).round() * 1000.0;
        (mid > pass && mid < fail && !self.ran(mid)).then_some(mid)
    }

    /// The highest sustained rate below the lowest failing one.
    pub fn max_sustained(&self) -> Option<f64> {
        let fail = self.first_failure();
        self.done.iter().filter(|(r, ok)| *ok && fail.is_none_or(|f| *r < f)).map(|(r, _)| *r).max_by(f64::total_cmp)
    }

    /// Whether the ramp stopped below its top rate (so its maximum is a real bound).
    pub fn bounded(&self) -> bool {
        self.first_failure().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn criteria() -> Criteria {
        Criteria { drain: Duration::from_millis(500), lag: Duration::from_millis(50) }
    }

    fn good() -> Step {
        Step { rate: 10_000.0, expected: 100, answered: 100, drain_ms: Some(3.0), lag_p99_us: 200, ..Step::default() }
    }

    #[test]
    fn a_step_is_sustained_only_with_nothing_lost_and_a_short_drain() {
        let c = criteria();
        assert!(good().sustained(&c));
        assert_eq!(good().verdict(&c), "sustained");
        let lost = Step { answered: 99, drain_ms: None, ..good() };
        assert!(!lost.sustained(&c));
        assert_eq!(lost.lost(), 1);
        assert!(lost.verdict(&c).contains("1 of 100 outputs missing"));
        let slow = Step { drain_ms: Some(1500.0), ..good() };
        assert!(!slow.sustained(&c));
        assert!(slow.verdict(&c).contains("fell behind"));
        let late_load = Step { lag_p99_us: 80_000, ..good() };
        assert!(!late_load.sustained(&c));
        assert!(late_load.verdict(&c).contains("load generator 80 ms late"));
        let broken = Step { error: Some("agent exited".into()), ..good() };
        assert!(!broken.sustained(&c));
        let nothing = Step { expected: 0, answered: 0, ..good() };
        assert!(!nothing.sustained(&c));
    }

    #[test]
    fn heartbeat_reports_are_judged_against_each_devices_deadline() {
        let timeout = 5_000;
        // Device 0: silenced, last heartbeat at 1000, reported at 6_003 (3 µs late).
        // Device 1: silenced, a glitch report at 500 before its last heartbeat at 900, then
        //           reported early at 5_800, then again at 9_000.
        // Device 2: silenced but never reported.  Device 3: alive, reported once (false).
        // Device 4: silenced but never sent a heartbeat: not counted.
        let reports = vec![vec![6_003], vec![500, 5_800, 9_000], vec![], vec![7_000], vec![8_000]];
        let silenced = [true, true, true, false, true];
        let last = [1_000, 900, 1_200, 1_100, 0];
        let mut d = Detection::default();
        judge_heartbeats(&reports, &silenced, &last, timeout, &mut d);
        assert_eq!((d.silenced, d.detected, d.early), (3, 2, 1));
        assert_eq!(d.false_reports, 1 + 1 + 1 + 1, "glitch, repeat, the alive device, the uncounted one");
        assert_eq!(d.delay.count, 1);
        assert!((3..=4).contains(&d.delay.max), "{:?}", d.delay);
    }

    #[test]
    fn duplicates_do_not_hide_losses() {
        // 100 expected, 99 distinct arrived plus 5 duplicates: still one lost.
        let s = Step { answered: 99, duplicates: 5, ..good() };
        assert_eq!(s.lost(), 1);
        assert!(!s.sustained(&criteria()));
    }

    #[test]
    fn latency_percentiles_come_from_the_histogram() {
        let mut h = crate::consumer::new_histogram();
        for v in 1..=1000u64 {
            h.record(v).expect("in range");
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 1000);
        assert!((495..=505).contains(&l.p50), "{l:?}");
        assert!((985..=995).contains(&l.p99), "{l:?}");
        assert!(l.p999 >= 998 && l.max >= 1000 && l.max <= 1001, "{l:?}");
        assert_eq!(Latency::of(&crate::consumer::new_histogram()), Latency::default());
    }

    /// Runs a ramp against a contender that sustains up to `capacity`.
    fn ramp_against(capacity: f64, required: &[f64]) -> (Vec<f64>, Option<f64>) {
        let mut ramp = Ramp::new(GRID, required, 2);
        let mut ran = Vec::new();
        while let Some(rate) = ramp.next() {
            assert!(!ran.contains(&rate), "{rate} run twice");
            ran.push(rate);
            ramp.record(rate, rate <= capacity);
            assert!(ran.len() < 30, "ramp does not end: {ran:?}");
        }
        (ran, ramp.max_sustained())
    }

    #[test]
    fn ramp_climbs_until_failure_then_bisects() {
        let (ran, max) = ramp_against(42_000.0, &[1_000.0, 10_000.0, 50_000.0]);
        // 1k..30k pass, 50k fails; 40k passes, 45k fails.
        assert_eq!(ran, vec![1e3, 2e3, 5e3, 1e4, 2e4, 3e4, 5e4, 4e4, 4.5e4]);
        assert_eq!(max, Some(40_000.0));
    }

    #[test]
    fn ramp_still_runs_the_required_rates_after_a_failure() {
        let (ran, max) = ramp_against(3_000.0, &[1_000.0, 10_000.0, 50_000.0]);
        // 5k fails; 10k and 50k still run (the report needs them); then 4k fails, 3k passes.
        assert_eq!(ran, vec![1e3, 2e3, 5e3, 1e4, 5e4, 4e3, 3e3]);
        assert_eq!(max, Some(3_000.0));
    }

    #[test]
    fn ramp_that_never_fails_reports_the_top_and_is_unbounded() {
        let mut ramp = Ramp::new(&[1e3, 2e3], &[1e3], 2);
        while let Some(r) = ramp.next() {
            ramp.record(r, true);
        }
        assert_eq!(ramp.max_sustained(), Some(2e3));
        assert!(!ramp.bounded());
    }

    #[test]
    fn a_pass_above_a_failure_does_not_count() {
        let mut ramp = Ramp::new(&[1e3, 2e3, 5e3], &[1e3, 5e3], 0);
        ramp.record(1e3, true);
        ramp.record(2e3, false);
        ramp.record(5e3, true);
        assert_eq!(ramp.max_sustained(), Some(1e3));
        assert_eq!(ramp.next(), None);
    }
}
