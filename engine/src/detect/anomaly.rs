//! A streaming anomaly detector for one series, and the episodes its scores make.
//!
//! ```text
//! reading (t, x) ─▶ Novelty (novelty.rs): is this value, or this move, new for the series? ─┐
//!                ─▶ Daily profile (if `daily`): is it normal for this hour of the day?      ├─▶ score = max
//!                ─▶ Level: expected value, band, how sudden, how noisy ─▶ kind ─────────────┘
//! score ─▶ Episode: starts at the threshold `sensitivity` sets; a sudden start waits one
//!          reading to tell a spike (it came back) from a level shift (it stayed)
//! ```
//!
//! The novelty score carries the detection (it is what NAB scores, see docs/benchmarks.md);
//! the level statistics explain it (expected value, band, kind); the daily profile adds
//! what novelty cannot see: a value normal for the day but wrong for the hour.

use super::novelty::Novelty;

/// How the detector is set: the same for every key of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Readings a key learns from before any is judged.
    pub learn: u32,
    /// 0 (only the most blatant) to 1 (anything unusual): where an episode starts.
    pub sensitivity: f64,
    /// Keep an hour-of-day profile and judge readings against their hour.
    pub daily: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params { learn: DEFAULT_LEARN, sensitivity: DEFAULT_SENSITIVITY, daily: false }
    }
}

/// Readings learnt from before judging, by default.
pub const DEFAULT_LEARN: u32 = 100;
/// The default sensitivity.
pub const DEFAULT_SENSITIVITY: f64 = 0.5;
/// The episode threshold at the default sensitivity: the threshold NAB's optimiser found
/// best for the standard profile (docs/benchmarks.md).
pub const DEFAULT_THRESHOLD: f64 = 0.3;

impl Params {
    /// The score at which an episode starts: [`DEFAULT_THRESHOLD`] at sensitivity 0.5,
    /// rising to 1 (only the most certain) at 0 and falling to 0.1 at 1, linearly on each side.
    pub fn threshold(&self) -> f64 {
        let s = self.sensitivity.clamp(0.0, 1.0);
        if s < 0.5 {
            1.0 - (1.0 - DEFAULT_THRESHOLD) * s * 2.0
        } else {
            DEFAULT_THRESHOLD - (DEFAULT_THRESHOLD - 0.1) * (s - 0.5) * 2.0
        }
    }
}

/// What kind of departure a score is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A reading far above what was expected, back to normal after.
    Spike,
    /// A reading far below, back to normal after.
    Dip,
    /// A sudden move that stayed.
    LevelShift,
    /// The value crept out of its range, reading by reading.
    Drift,
    /// Normal for the day, wrong for the hour.
    Seasonal,
    /// The readings jump about far more than they used to.
    Noise,
}

impl Kind {
    /// As rules and events spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Spike => "spike",
            Kind::Dip => "dip",
            Kind::LevelShift => "level_shift",
            Kind::Drift => "drift",
            Kind::Seasonal => "seasonal",
            Kind::Noise => "noise",
        }
    }
}

/// The verdict on one reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    /// 0 (normal) to 1 (certainly not); 0 while learning.
    pub score: f64,
    /// What the detector expected.
    pub expected: f64,
    /// The band of normal readings around `expected`.
    pub low: f64,
    /// See `low`.
    pub high: f64,
    /// What the score is about, as far as this reading tells.
    pub kind: Kind,
    /// A jump from the previous reading far beyond the usual: a spike, a dip, or the first
    /// reading of a level shift.
    pub sudden: bool,
    /// Still learning: the score means nothing yet.
    pub learning: bool,
    /// Inside the band and inside the range of up to 800 readings ago: calm, for ending an
    /// episode.
    pub settled: bool,
    /// Worth an episode if the score is high enough: not just a new extreme by a hair (under
    /// 5% of the range). Such records keep NAB's score up (its labelled anomalies are often
    /// subtle; without them 65.7 becomes 61.2), but on a steady sensor they are the noise's
    /// tail, so they are scored and not alarmed. A drift is a run of such records, measured
    /// against the range of up to 800 readings ago, so it soon gets past the hair.
    pub notable: bool,
}

/// Robust spread (mean absolute deviation) to standard deviation, for normal noise.
const MAD_TO_SD: f64 = 1.2533;
/// The band is expected ± this many standard deviations.
const BAND_SD: f64 = 3.0;
/// A move this many usual moves is sudden.
const SUDDEN: f64 = 6.0;
/// Recent moves this many times the usual ones are noise.
const NOISY: f64 = 3.0;
const HAIR: f64 = 0.05;
/// Readings the slow statistics average over, once they have that many.
const SLOW: f64 = 500.0;
/// Readings the fast spread averages over.
const FAST: f64 = 10.0;

/// The level statistics that explain a score.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Level {
    /// Slow mean of the readings.
    mean: f64,
    /// Slow mean absolute deviation from `mean`.
    dev: f64,
    /// Slow mean absolute move between consecutive readings.
    moves: f64,
    /// Fast mean absolute move.
    fast_moves: f64,
    /// The previous reading.
    last: f64,
}

impl Level {
    fn learn(&mut self, n: u64, x: f64) {
        if n == 1 {
            *self = Level { mean: x, last: x, ..Level::default() };
            return;
        }
        let a = 1.0 / (n as f64).min(SLOW);
        let step = (x - self.last).abs();
        // Large deviations count at most 4 spreads, so one outlier does not blow the band.
        let dev = (x - self.mean).abs();
        let cap = |v: f64, s: f64| if s > 0.0 { v.min(4.0 * s) } else { v };
        self.mean += a * (x - self.mean);
        self.dev += a * (cap(dev, self.dev) - self.dev);
        self.moves += a * (cap(step, self.moves) - self.moves);
        self.fast_moves += (1.0 / FAST) * (step - self.fast_moves);
        self.last = x;
    }
}

/// An hour-of-day profile: per hour (UTC), the mean and spread of the readings, each hour
/// learning from about its last [`DAILY_MEMORY`] days whatever the reading rate.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Daily {
    /// Per hour: mean, mean absolute deviation (f32: ample for a profile, half the bytes).
    hours: Vec<(f32, f32)>,
    /// Per hour: days that taught it (up to [`DAILY_MEMORY`]) and the latest of them (days
    /// since the epoch).
    days: Vec<(u16, u32)>,
    /// Mean time between readings (ms), for how many readings an hour holds.
    interval: f64,
    /// The previous reading's time.
    last_t: i64,
}

/// An hour is judged once this many days taught it.
const DAILY_LEARN: u16 = 2;
/// Each hour's statistics average over about this many days.
const DAILY_MEMORY: u16 = 30;
/// A reading this many standard deviations off its hour's mean scores 1.
const DAILY_FULL: f64 = 8.0;
const HOUR_MS: f64 = 3_600_000.0;

impl Daily {
    fn new(t: i64) -> Daily {
        Daily { hours: vec![(0.0, 0.0); 24], days: vec![(0, 0); 24], interval: HOUR_MS, last_t: t }
    }

    fn hour(t: i64) -> usize {
        usize::try_from(t.rem_euclid(86_400_000) / 3_600_000).unwrap_or(0).min(23)
    }

    /// The hour's mean and standard deviation, once learnt (the spread at least `floor`).
    fn expected(&self, t: i64, floor: f64) -> Option<(f64, f64)> {
        let h = Daily::hour(t);
        let (mean, dev) = *self.hours.get(h)?;
        (self.days.get(h)?.0 >= DAILY_LEARN).then(|| (f64::from(mean), (f64::from(dev) * MAD_TO_SD).max(floor)))
    }

    fn learn(&mut self, t: i64, x: f64) {
        let dt = t - self.last_t;
        if dt > 0 {
            self.interval += 0.05 * ((dt as f64).min(HOUR_MS) - self.interval);
            self.last_t = t;
        }
        let h = Daily::hour(t);
        let day = u32::try_from(t.div_euclid(86_400_000)).unwrap_or(0);
        let (Some((mean, dev)), Some((days, last))) = (self.hours.get_mut(h), self.days.get_mut(h)) else { return };
        if *days == 0 {
            (*mean, *dev, *days, *last) = (x as f32, 0.0, 1, day);
            return;
        }
        if day != *last {
            (*days, *last) = ((*days + 1).min(DAILY_MEMORY), day);
        }
        // A day's weight, spread over the readings an hour holds.
        let per_hour = (HOUR_MS / self.interval.max(1.0)).max(1.0) as f32;
        let a = 1.0 / (f32::from(*days) * per_hour);
        let d = x as f32 - *mean;
        let cap = if *dev > 0.0 && *days >= DAILY_LEARN { 4.0 * *dev } else { f32::INFINITY };
        *mean += a * d.clamp(-cap, cap);
        *dev += a * (d.abs().min(cap) - *dev);
    }
}

/// One series' detector state.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Detector {
    /// Readings seen.
    n: u64,
    novelty: Novelty,
    level: Level,
    /// Present when the rule asks for `daily`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    daily: Option<Daily>,
}

impl Detector {
    /// Judges `x`, read at `t`, then learns from it; `baseline` is the mean and standard
    /// deviation expected at this time from elsewhere (the same hour of past days or weeks,
    /// from the rule's `past`), which takes the daily profile's place.
    pub fn step(&mut self, p: &Params, t: i64, x: f64, baseline: Option<(f64, f64)>) -> Judgement {
        self.n += 1;
        let learning = self.n <= u64::from(p.learn);
        let beyond = self.novelty.beyond(x);
        let hair = beyond > 0.0 && beyond < HAIR;
        let novelty = self.novelty.step(x);
        let lv = self.level;
        let sd = (lv.dev * MAD_TO_SD).max(f64::MIN_POSITIVE);
        let sudden = self.n > 2 && (x - lv.last).abs() > SUDDEN * lv.moves.max(f64::MIN_POSITIVE);
        let noisy = self.n > FAST as u64 && lv.fast_moves > NOISY * lv.moves.max(f64::MIN_POSITIVE);
        let (mut expected, mut spread) = (lv.mean, sd);
        let mut seasonal = 0.0;
        match (&mut self.daily, p.daily) {
            (Some(d), true) => {
                if let Some((mean, hour_sd)) = d.expected(t, 0.25 * sd) {
                    (expected, spread) = (mean, hour_sd);
                    seasonal = ((x - mean).abs() / hour_sd / DAILY_FULL).min(1.0);
                }
                d.learn(t, x);
            }
            (None, true) => {
                let mut d = Daily::new(t);
                d.learn(t, x);
                self.daily = Some(d);
            }
            (_, false) => self.daily = None,
        }
        if let Some((mean, base_sd)) = baseline {
            let base_sd = base_sd.max(0.25 * sd);
            (expected, spread) = (mean, base_sd);
            seasonal = ((x - mean).abs() / base_sd / DAILY_FULL).min(1.0);
        }
        let in_band = (x - lv.mean).abs() <= BAND_SD * sd;
        let kind = if seasonal > novelty && in_band && beyond == 0.0 {
            Kind::Seasonal
        } else if noisy {
            Kind::Noise
        } else if !sudden && (beyond >= HAIR || (x - lv.mean).abs() > BAND_SD * sd) {
            Kind::Drift
        } else if x >= expected {
            Kind::Spike
        } else {
            Kind::Dip
        };
        self.level.learn(self.n, x);
        Judgement {
            score: if learning { 0.0 } else { novelty.max(seasonal) },
            expected,
            low: expected - BAND_SD * spread,
            high: expected + BAND_SD * spread,
            kind,
            sudden,
            learning,
            notable: !hair || seasonal >= novelty,
            settled: beyond < HAIR && x >= expected - BAND_SD * spread && x <= expected + BAND_SD * spread,
        }
    }
}

/// Turns scores into episodes: one start when the score reaches the threshold, one end when
/// the readings have stayed in the band, scoring under half the threshold, for
/// [`CALM_READINGS`] readings. A sudden start is decided
/// by the next three readings: all out of the band on the same side, a level shift; moving
/// about far more than the opening jump (a spike moves back once), noise; else a spike or a
/// dip.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Episode {
    /// When the open episode began, if one is open.
    pub since: Option<i64>,
    /// Readings under the calm level in a row.
    quiet: u32,
    /// A sudden start waiting for the next readings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<Pending>,
}

/// The reading that opened an episode with a jump, kept for three more readings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    /// The opening reading's score.
    pub score: f64,
    /// What was expected then.
    pub expected: f64,
    /// The band then.
    pub low: f64,
    /// See `low`.
    pub high: f64,
    /// The opening reading.
    pub observed: f64,
    /// Its time.
    pub at: i64,
    /// Readings seen since.
    #[serde(default)]
    followed: u8,
    /// Every reading since stayed out of the band, on the opening reading's side.
    #[serde(default)]
    stayed: bool,
    /// How far the readings since moved, in all (the sum of their steps).
    #[serde(default)]
    moved: f64,
    /// The latest reading.
    #[serde(default)]
    last: f64,
}

/// Readings after a sudden start that decide its kind.
const FOLLOW: u8 = 3;
/// Readings after a sudden start that move this many times the opening jump are noise.
const RESTLESS: f64 = 1.5;

/// Readings under half the threshold that end an episode.
pub const CALM_READINGS: u32 = 5;

/// What [`Episode::update`] saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// Nothing to report.
    None,
    /// An episode began: report it (the opening reading's verdict, its value, the kind).
    Started(Pending, Kind),
    /// The open episode ended with this reading.
    Ended,
}

impl Episode {
    /// Folds in the verdict on reading `x` at `t`.
    pub fn update(&mut self, j: &Judgement, x: f64, threshold: f64, t: i64) -> Change {
        if let Some(mut p) = self.pending.take() {
            let up = p.observed >= p.expected;
            let out = if up { x > p.high } else { x < p.low };
            p.stayed = out && (p.followed == 0 || p.stayed);
            p.followed += 1;
            p.moved += (x - p.last).abs();
            p.last = x;
            if p.followed < FOLLOW {
                self.pending = Some(p);
                return Change::None;
            }
            let kind = if p.stayed {
                Kind::LevelShift
            } else if p.moved > RESTLESS * (p.observed - p.expected).abs() {
                Kind::Noise
            } else if up {
                Kind::Spike
            } else {
                Kind::Dip
            };
            return Change::Started(p, kind);
        }
        match self.since {
            None if j.score >= threshold && j.notable => {
                *self = Episode { since: Some(t), quiet: 0, pending: None };
                let p = Pending {
                    score: j.score,
                    expected: j.expected,
                    low: j.low,
                    high: j.high,
                    observed: x,
                    at: t,
                    followed: 0,
                    stayed: false,
                    moved: 0.0,
                    last: x,
                };
                if j.sudden && matches!(j.kind, Kind::Spike | Kind::Dip) {
                    self.pending = Some(p);
                    Change::None
                } else {
                    Change::Started(p, j.kind)
                }
            }
            None => Change::None,
            Some(_) if j.score < threshold / 2.0 && j.settled => {
                self.quiet += 1;
                if self.quiet >= CALM_READINGS {
                    *self = Episode::default();
                    Change::Ended
                } else {
                    Change::None
                }
            }
            Some(_) => {
                self.quiet = 0;
                Change::None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::novelty::tests::noise;

    const MIN: i64 = 60_000;

    /// A day-long wave, 20 ± 2 with ±0.3 of noise, a reading a minute from midnight UTC.
    fn normal(i: i64, seed: &mut u64) -> f64 {
        20.0 + 2.0 * (i as f64 * std::f64::consts::TAU / 1_440.0).sin() + 0.3 * noise(seed)
    }

    /// Episodes started in readings `0..until` of `signal` (given the normal value, the
    /// reading's index and some noise).
    fn episodes(p: &Params, until: i64, signal: impl Fn(f64, i64, f64) -> f64) -> Vec<(Pending, Kind)> {
        let (mut d, mut e, mut seed) = (Detector::default(), Episode::default(), 11);
        let mut out = Vec::new();
        for i in 0..until {
            let x = signal(normal(i, &mut seed), i, noise(&mut seed));
            let j = d.step(p, i * MIN, x, None);
            if j.learning {
                continue;
            }
            if let Change::Started(p, k) = e.update(&j, x, p.threshold(), i * MIN) {
                out.push((p, k));
            }
        }
        out
    }

    /// Four days of learning, then a disturbance from reading 5 760 on.
    const AT: i64 = 5_760;

    fn params() -> Params {
        Params { learn: 1_440, ..Params::default() }
    }

    fn only(found: &[(Pending, Kind)]) -> (Pending, Kind) {
        assert_eq!(found.len(), 1, "one episode: {found:#?}");
        found[0]
    }

    #[test]
    fn a_clean_signal_raises_nothing() {
        let found = episodes(&params(), 4 * AT, |x, _, _| x);
        assert!(found.is_empty(), "{found:#?}");
        let daily = Params { daily: true, ..params() };
        assert!(episodes(&daily, 4 * AT, |x, _, _| x).is_empty());
    }

    #[test]
    fn a_spike_and_a_dip_are_told_from_a_level_shift_by_the_next_readings() {
        let (p, k) = only(&episodes(&params(), AT + 600, |x, i, _| if i == AT { x + 8.0 } else { x }));
        assert_eq!((k, p.at), (Kind::Spike, AT * MIN), "{p:?}");
        assert!(p.observed > p.high && p.expected > 18.0 && p.expected < 22.0, "{p:?}");
        let (p, k) = only(&episodes(&params(), AT + 600, |x, i, _| if i == AT { x - 8.0 } else { x }));
        assert_eq!((k, p.at), (Kind::Dip, AT * MIN), "{p:?}");
        let (p, k) = only(&episodes(&params(), AT + 600, |x, i, _| if i >= AT { x + 8.0 } else { x }));
        assert_eq!((k, p.at), (Kind::LevelShift, AT * MIN), "{p:?}");
    }

    #[test]
    fn a_drift_is_caught_when_it_leaves_the_range() {
        // 0.01 degrees a minute (0.6 an hour): out of the band within half a day.
        let found = episodes(&params(), AT + 1_440, |x, i, _| x + 0.01 * (i - AT).max(0) as f64);
        let (p, k) = found.first().copied().unwrap_or_else(|| panic!("no episode"));
        assert_eq!(k, Kind::Drift, "{found:#?}");
        assert!(p.at > AT * MIN && p.at < (AT + 720) * MIN, "{p:?}");
    }

    #[test]
    fn a_noise_burst_is_noise() {
        let found = episodes(&params(), AT + 600, |x, i, n| if (AT..AT + 60).contains(&i) { x + 3.0 * n } else { x });
        let (p, k) = found[0];
        assert_eq!(k, Kind::Noise, "{found:#?}");
        assert!(p.at >= AT * MIN && p.at < (AT + 10) * MIN, "{p:?}");
    }

    #[test]
    fn a_broken_daily_pattern_needs_the_daily_profile() {
        // From AT on the wave runs half a day late: every value is in range, at the wrong hour.
        let late = |_: f64, i: i64, n: f64| {
            let j = if i >= AT { i - 720 } else { i };
            20.0 + 2.0 * (j as f64 * std::f64::consts::TAU / 1_440.0).sin() + 0.3 * n
        };
        assert!(episodes(&params(), AT + 1_440, late).is_empty(), "without the profile it passes unseen");
        let found = episodes(&Params { daily: true, ..params() }, AT + 1_440, late);
        let (p, k) = found[0];
        assert_eq!(k, Kind::Seasonal, "{found:#?}");
        assert!(p.at < (AT + 180) * MIN, "{p:?}");
    }

    #[test]
    fn nothing_is_judged_while_learning_and_an_episode_ends_after_calm() {
        let p = params();
        let mut d = Detector::default();
        for i in 0..1_440 {
            assert!(d.step(&p, i * MIN, if i == 1_000 { 99.0 } else { 20.0 + (i % 7) as f64 * 0.1 }, None).learning);
        }
        assert!(!d.step(&p, 1_440 * MIN, 20.0, None).learning);
        let mut e = Episode::default();
        let hot = Judgement {
            score: 1.0,
            expected: 20.0,
            low: 19.0,
            high: 21.0,
            kind: Kind::Drift,
            sudden: false,
            learning: false,
            notable: true,
            settled: true,
        };
        let calm = Judgement { score: 0.0, ..hot };
        let out = Judgement { settled: false, ..calm };
        assert!(matches!(e.update(&hot, 25.0, 0.3, 0), Change::Started(_, Kind::Drift)));
        for t in 1..CALM_READINGS as i64 {
            assert_eq!(e.update(&calm, 20.0, 0.3, t), Change::None);
            assert_eq!(e.update(&hot, 25.0, 0.3, t), Change::None, "still the same episode");
        }
        for t in 0..CALM_READINGS as i64 - 1 {
            assert_eq!(e.update(&calm, 20.0, 0.3, 100 + t), Change::None);
            assert_eq!(e.update(&out, 30.0, 0.3, 100 + t), Change::None, "out of the band is not calm");
        }
        for t in 0..CALM_READINGS as i64 - 1 {
            assert_eq!(e.update(&calm, 20.0, 0.3, 150 + t), Change::None);
        }
        assert_eq!(e.update(&calm, 20.0, 0.3, 200), Change::Ended);
        assert!(matches!(e.update(&hot, 25.0, 0.3, 300), Change::Started(..)), "a new episode");
    }

    #[test]
    fn the_sensitivity_moves_the_threshold_and_the_state_stays_under_2_kb() {
        let at = |s| Params { sensitivity: s, ..Params::default() }.threshold();
        assert_eq!(at(0.5), DEFAULT_THRESHOLD);
        assert!(at(0.0) == 1.0 && at(1.0) < at(0.7) && at(0.7) < at(0.5) && at(0.2) > at(0.5));
        // With the daily profile, after a week of readings: the saved form and the memory.
        let p = Params { daily: true, ..params() };
        let (mut d, mut e, mut seed) = (Detector::default(), Episode::default(), 3);
        for i in 0..7 * 1_440 {
            let x = normal(i, &mut seed);
            let j = d.step(&p, i * MIN, x, None);
            e.update(&j, x, p.threshold(), i * MIN);
        }
        let saved = serde_json::to_vec(&(&d, &e)).expect("serialises").len();
        let heap = 24 * (std::mem::size_of::<(f32, f32)>() + std::mem::size_of::<(u16, u32)>());
        let memory = std::mem::size_of::<Detector>() + std::mem::size_of::<Episode>() + heap;
        assert!(saved <= 2_048 && memory <= 2_048, "saved {saved} B, in memory {memory} B");
    }
}
