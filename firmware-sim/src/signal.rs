//! How a sensor's value evolves: the [`Signal`] models and their running state.
//!
//! A signal is sampled at a device's virtual reading times with the device's own random
//! stream, so its values depend only on the seed, the device and the time, never on the
//! other devices or on how the caller slices time.
//!
//! Every model but `daily` runs on virtual time (from t=0). `daily` runs on the wall clock
//! the simulation stands for (`start_ms` + virtual time, UTC), so a recording's hours of
//! day, and its weekends, are where its `ts` says they are.

use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Why a [`Signal`]'s parameters are unusable: the reason, as a sentence fragment
/// (`sine noise must not be negative`); the scenario adds the key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signal: {0}")]
pub struct SignalError(pub String);

/// How a device's sensor value evolves.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// Always the same value, plus uniform noise in `[-noise, noise]` (a battery's voltage:
    /// `value = 3.9, noise = 0.005`).
    Constant {
        /// The level.
        value: f32,
        /// Half-width of the uniform noise added to each reading (0 for none).
        noise: f32,
    },
    /// `base + amplitude · sin(2π·t/period + phase) + noise`, where each device gets its own
    /// random phase and the noise is uniform in `[-noise, noise]`.
    Sine {
        /// Centre of the wave.
        base: f32,
        /// Peak deviation from `base`.
        amplitude: f32,
        /// One full wave; must be non-zero.
        period: Duration,
        /// Half-width of the uniform noise added to each reading (0 for none).
        noise: f32,
    },
    /// A daily cycle on the wall clock (UTC):
    /// `base + amplitude · f · cos(2π·(h - peak_hour)/24) + noise`, where `h` is the hour of
    /// day of the reading's `ts` as a fraction (`(ts_ms mod 86 400 000) / 3 600 000`), `f` is
    /// `weekend_factor` on Saturdays and Sundays and 1 on other days, and the noise is
    /// uniform in `[-noise, noise]`. Highest (`base + amplitude`) at `peak_hour`, lowest 12
    /// hours away: with `peak_hour = 15`, warm afternoons and cold nights around 03:00. Every
    /// device follows the same clock (no per-device phase).
    Daily {
        /// Centre of the day's swing (its mean over a day).
        base: f32,
        /// Peak deviation from `base` on a weekday; not negative.
        amplitude: f32,
        /// Hour of day (UTC, fractional) of the peak, in `[0, 24)`.
        peak_hour: f32,
        /// `amplitude` is multiplied by this on Saturdays and Sundays (UTC); 1 for none, 0
        /// for a flat weekend; not negative.
        weekend_factor: f32,
        /// Half-width of the uniform noise added to each reading (0 for none).
        noise: f32,
    },
    /// Starts at `start` and moves by a uniform step in `[-step, step]` each reading,
    /// clamped to `[min, max]`.
    RandomWalk {
        /// First value.
        start: f32,
        /// Largest move between two readings.
        step: f32,
        /// Lower clamp.
        min: f32,
        /// Upper clamp.
        max: f32,
    },
    /// A staircase: `levels[0]` for `every`, then `levels[1]`, ..., cycling, plus uniform
    /// noise in `[-noise, noise]`.
    Steps {
        /// The levels, in order; at least one.
        levels: Vec<f32>,
        /// How long each level lasts; must be non-zero.
        every: Duration,
        /// Half-width of the uniform noise added to each reading (0 for none).
        noise: f32,
    },
}

impl Default for Signal {
    /// Indoor temperature: 22 °C ± 3 over ten minutes, with a little noise.
    fn default() -> Self {
        Signal::Sine { base: 22.0, amplitude: 3.0, period: Duration::from_secs(600), noise: 0.2 }
    }
}

impl Signal {
    /// Checks the parameters: finite numbers, non-negative noise, step and daily amplitude,
    /// `min <= start <= max`, non-zero periods, at least one level, a peak hour in `[0, 24)`.
    pub fn validate(&self) -> Result<(), SignalError> {
        let bad = |reason: &str| Err(SignalError(reason.to_owned()));
        match self {
            &Signal::Constant { value, noise } => {
                if !value.is_finite() || !noise.is_finite() {
                    bad("constant value and noise must be finite")
                } else if noise < 0.0 {
                    bad("constant noise must not be negative")
                } else {
                    Ok(())
                }
            }
            &Signal::Sine { base, amplitude, period, noise } => {
                if ![base, amplitude, noise].iter().all(|v| v.is_finite()) {
                    bad("sine parameters must be finite")
                } else if noise < 0.0 {
                    bad("sine noise must not be negative")
                } else if period.is_zero() {
                    bad("sine period must be longer than zero")
                } else {
                    Ok(())
                }
            }
            &Signal::Daily { base, amplitude, peak_hour, weekend_factor, noise } => {
                if ![base, amplitude, peak_hour, weekend_factor, noise].iter().all(|v| v.is_finite()) {
                    bad("daily parameters must be finite")
                } else if amplitude < 0.0 {
                    bad("daily amplitude must not be negative")
                } else if !(0.0..24.0).contains(&peak_hour) {
                    bad("daily peak_hour must be in [0, 24)")
                } else if weekend_factor < 0.0 {
                    bad("daily weekend_factor must not be negative")
                } else if noise < 0.0 {
                    bad("daily noise must not be negative")
                } else {
                    Ok(())
                }
            }
            &Signal::RandomWalk { start, step, min, max } => {
                if ![start, step, min, max].iter().all(|v| v.is_finite()) {
                    bad("random-walk parameters must be finite")
                } else if step < 0.0 {
                    bad("random-walk step must not be negative")
                } else if !(min <= start && start <= max) {
                    bad("random walk needs min <= start <= max")
                } else {
                    Ok(())
                }
            }
            Signal::Steps { levels, every, noise } => {
                if levels.is_empty() {
                    bad("steps need at least one level")
                } else if !levels.iter().chain([noise]).all(|v| v.is_finite()) {
                    bad("step levels and noise must be finite")
                } else if *noise < 0.0 {
                    bad("steps noise must not be negative")
                } else if every.is_zero() {
                    bad("steps `every` must be longer than zero")
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// The running state of a [`Signal`] on one device channel.
#[derive(Debug, Clone)]
pub(crate) enum SignalState {
    Constant {
        value: f32,
        noise: f32,
    },
    Sine {
        base: f64,
        amplitude: f64,
        period_s: f64,
        noise: f32,
        /// Per-device phase, so a fleet does not move in lockstep.
        phase: f64,
    },
    Daily {
        base: f64,
        amplitude: f64,
        peak_hour: f64,
        weekend_factor: f64,
        noise: f32,
        /// Wall-clock epoch ms at virtual t=0: the hour of day is the wall clock's.
        start_ms: u64,
    },
    RandomWalk {
        value: f32,
        step: f32,
        min: f32,
        max: f32,
    },
    Steps {
        levels: Vec<f32>,
        every: Duration,
        noise: f32,
    },
}

impl SignalState {
    /// The state of `signal` on a new device whose virtual t=0 is `start_ms` on the wall
    /// clock; draws the sine phase from `rng`.
    pub(crate) fn new(signal: &Signal, rng: &mut ChaCha8Rng, start_ms: u64) -> Self {
        match signal {
            &Signal::Constant { value, noise } => SignalState::Constant { value, noise },
            &Signal::Daily { base, amplitude, peak_hour, weekend_factor, noise } => SignalState::Daily {
                base: f64::from(base),
                amplitude: f64::from(amplitude),
                peak_hour: f64::from(peak_hour),
                weekend_factor: f64::from(weekend_factor),
                noise,
                start_ms,
            },
            &Signal::Sine { base, amplitude, period, noise } => SignalState::Sine {
                base: f64::from(base),
                amplitude: f64::from(amplitude),
                period_s: period.as_secs_f64(),
                noise,
                phase: rng.random_range(0.0..std::f64::consts::TAU),
            },
            &Signal::RandomWalk { start, step, min, max } => SignalState::RandomWalk { value: start, step, min, max },
            Signal::Steps { levels, every, noise } => {
                SignalState::Steps { levels: levels.clone(), every: *every, noise: *noise }
            }
        }
    }

    /// The value read at virtual time `at`. Generated values are rounded to 0.01, like a
    /// sensor's resolution, so JSON payloads stay short.
    pub(crate) fn sample(&mut self, at: Duration, rng: &mut ChaCha8Rng) -> f32 {
        let periodic = self.periodic(at, Duration::ZERO).unwrap_or(0.0);
        match self {
            // No noise draws nothing: a plain constant leaves the random stream as it was.
            SignalState::Constant { value, noise } => round2(*value + jitter(*noise, rng)),
            SignalState::Sine { base, noise, .. } | SignalState::Daily { base, noise, .. } => {
                round2((*base + periodic) as f32 + jitter(*noise, rng))
            }
            SignalState::RandomWalk { value, step, min, max } => {
                if *step > 0.0 {
                    *value = (*value + rng.random_range(-*step..=*step)).clamp(*min, *max);
                }
                round2(*value)
            }
            SignalState::Steps { levels, every, noise } => {
                let step = at.as_nanos() / every.as_nanos().max(1);
                let index = usize::try_from(step % levels.len().max(1) as u128).unwrap_or(0);
                let level = levels.get(index).copied().unwrap_or(0.0);
                round2(level + jitter(*noise, rng))
            }
        }
    }

    /// The noiseless level at virtual time `at`: what the signal reads there without its
    /// noise (a random walk: where it stands now).
    pub(crate) fn level(&self, at: Duration) -> f32 {
        match self {
            SignalState::Constant { value, .. } => *value,
            SignalState::Sine { base, .. } | SignalState::Daily { base, .. } => {
                (*base + self.periodic(at, Duration::ZERO).unwrap_or(0.0)) as f32
            }
            SignalState::RandomWalk { value, .. } => *value,
            SignalState::Steps { levels, every, .. } => {
                let step = at.as_nanos() / every.as_nanos().max(1);
                let index = usize::try_from(step % levels.len().max(1) as u128).unwrap_or(0);
                levels.get(index).copied().unwrap_or(0.0)
            }
        }
    }

    /// The periodic part (the value minus `base`, without noise) the signal had `earlier`
    /// before virtual time `at`; `None` for a model without one (constant, random walk,
    /// steps). Times before t=0 continue the wave backwards.
    pub(crate) fn periodic(&self, at: Duration, earlier: Duration) -> Option<f64> {
        match *self {
            SignalState::Sine { amplitude, period_s, phase, .. } => {
                let t = at.as_secs_f64() - earlier.as_secs_f64();
                Some(amplitude * (std::f64::consts::TAU * t / period_s + phase).sin())
            }
            SignalState::Daily { amplitude, peak_hour, weekend_factor, start_ms, .. } => {
                // Whole ms on the wall clock (i128: no overflow, and before 1970 still works).
                let ts = i128::from(start_ms) + i128::try_from(at.as_millis()).unwrap_or(i128::MAX / 4)
                    - i128::try_from(earlier.as_millis()).unwrap_or(0);
                let day = ts.div_euclid(DAY_MS);
                let hour = ts.rem_euclid(DAY_MS) as f64 / HOUR_MS as f64;
                // 1970-01-01 was a Thursday: day 0 is weekday 3 (Monday = 0).
                let weekend = (day + 3).rem_euclid(7) >= 5;
                let factor = if weekend { weekend_factor } else { 1.0 };
                let angle = std::f64::consts::TAU * (hour - peak_hour) / 24.0;
                Some(amplitude * factor * angle.cos())
            }
            _ => None,
        }
    }

    /// Half of the periodic part's period (12 h for `daily`), `None` without one: a
    /// `pattern_break` shows the wave from this long before.
    pub(crate) fn half_period(&self) -> Option<Duration> {
        match *self {
            SignalState::Sine { period_s, .. } => Duration::try_from_secs_f64(period_s / 2.0).ok(),
            SignalState::Daily { .. } => Some(Duration::from_millis(DAY_MS as u64 / 2)),
            _ => None,
        }
    }
}

/// One day and one hour in ms, for the `daily` model's wall clock.
const DAY_MS: i128 = 86_400_000;
const HOUR_MS: i128 = 3_600_000;

/// Uniform noise in `[-noise, noise]`; draws nothing when `noise` is 0.
fn jitter(noise: f32, rng: &mut ChaCha8Rng) -> f32 {
    if noise > 0.0 { rng.random_range(-noise..=noise) } else { 0.0 }
}

fn round2(v: f32) -> f32 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn steps_cycle_through_levels() {
        let signal = Signal::Steps { levels: vec![20.0, 25.0, 30.0], every: Duration::from_secs(10), noise: 0.0 };
        assert!(signal.validate().is_ok());
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut state = SignalState::new(&signal, &mut rng, 0);
        let at = |s| Duration::from_secs(s);
        let seen: Vec<f32> = [0, 9, 10, 25, 30, 41].iter().map(|&s| state.sample(at(s), &mut rng)).collect();
        assert_eq!(seen, [20.0, 20.0, 25.0, 30.0, 20.0, 25.0]);
    }

    #[test]
    fn signal_validation() {
        assert!(Signal::default().validate().is_ok());
        assert!(Signal::Constant { value: f32::NAN, noise: 0.0 }.validate().is_err());
        assert!(Signal::Constant { value: 3.9, noise: -0.1 }.validate().is_err());
        assert!(Signal::Constant { value: 3.9, noise: 0.005 }.validate().is_ok());
        let walk = |start, step, min, max| Signal::RandomWalk { start, step, min, max };
        assert!(walk(0.0, 1.0, -1.0, 1.0).validate().is_ok());
        assert!(walk(2.0, 1.0, -1.0, 1.0).validate().is_err());
        assert!(walk(0.0, -1.0, -1.0, 1.0).validate().is_err());
        let sine = |period, noise| Signal::Sine { base: 0.0, amplitude: 1.0, period, noise };
        assert!(sine(Duration::ZERO, 0.0).validate().is_err());
        assert!(sine(Duration::from_secs(1), -0.1).validate().is_err());
        assert!(sine(Duration::from_secs(1), 0.0).validate().is_ok());
    }

    #[test]
    fn steps_validation() {
        let steps = |levels: Vec<f32>, every, noise| Signal::Steps { levels, every, noise };
        assert!(steps(vec![], Duration::from_secs(1), 0.0).validate().is_err());
        assert!(steps(vec![1.0], Duration::ZERO, 0.0).validate().is_err());
        assert!(steps(vec![1.0], Duration::from_secs(1), -1.0).validate().is_err());
        assert!(steps(vec![f32::NAN], Duration::from_secs(1), 0.0).validate().is_err());
    }

    /// 2024-11-21T00:00:00Z, a Thursday.
    const THURSDAY_MIDNIGHT_MS: u64 = 1_732_147_200_000;

    fn daily(weekend_factor: f32, noise: f32) -> Signal {
        Signal::Daily { base: 20.0, amplitude: 4.0, peak_hour: 15.0, weekend_factor, noise }
    }

    #[test]
    fn daily_follows_the_wall_clock_hour() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // Virtual t=0 is 06:00 UTC: the hour of day is the wall clock's, not virtual time's.
        let start_ms = THURSDAY_MIDNIGHT_MS + 6 * 3_600_000;
        let mut state = SignalState::new(&daily(1.0, 0.0), &mut rng, start_ms);
        let at_hour = |h: u64| Duration::from_secs((h - 6) * 3600);
        assert_eq!(state.sample(at_hour(15), &mut rng), 24.0, "peak at 15:00");
        assert_eq!(state.sample(at_hour(27), &mut rng), 16.0, "trough at 03:00 the next day");
        assert_eq!(state.sample(at_hour(9), &mut rng), 20.0, "base half-way, at 09:00");
        assert_eq!(state.sample(at_hour(21), &mut rng), 20.0, "and at 21:00");
        assert_eq!(state.level(at_hour(39)), 24.0, "the next day's peak");
        assert_eq!(state.half_period(), Some(Duration::from_secs(12 * 3600)));
        // Twelve hours earlier, 15:00 looks like 03:00.
        let shifted = state.periodic(at_hour(15), Duration::from_secs(12 * 3600)).expect("periodic");
        assert!((shifted + 4.0).abs() < 1e-9, "{shifted}");
    }

    #[test]
    fn daily_weekends_and_noise() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut state = SignalState::new(&daily(0.5, 0.0), &mut rng, THURSDAY_MIDNIGHT_MS);
        let day = |d: u64, h: u64| Duration::from_secs(d * 86_400 + h * 3600);
        // Thursday and Friday full swing, Saturday and Sunday half, Monday full again.
        let peaks: Vec<f32> = (0..5).map(|d| state.sample(day(d, 15), &mut rng)).collect();
        assert_eq!(peaks, [24.0, 24.0, 22.0, 22.0, 24.0]);
        let mut noisy = SignalState::new(&daily(1.0, 0.5), &mut rng, THURSDAY_MIDNIGHT_MS);
        let values: Vec<f32> = (0..200).map(|i| noisy.sample(day(0, 15) + Duration::from_secs(i), &mut rng)).collect();
        assert!(values.iter().all(|v| (23.5..=24.5).contains(v)), "{values:?}");
        assert!(values.iter().any(|&v| v != values[0]), "noise varies");
    }

    #[test]
    fn daily_validation() {
        let d = |amplitude, peak_hour, weekend_factor, noise| Signal::Daily {
            base: 20.0,
            amplitude,
            peak_hour,
            weekend_factor,
            noise,
        };
        assert!(d(4.0, 15.0, 1.0, 0.3).validate().is_ok());
        assert!(d(4.0, 0.0, 0.0, 0.0).validate().is_ok());
        assert!(d(-1.0, 15.0, 1.0, 0.3).validate().is_err());
        assert!(d(4.0, 24.0, 1.0, 0.3).validate().is_err());
        assert!(d(4.0, -1.0, 1.0, 0.3).validate().is_err());
        assert!(d(4.0, 15.0, -0.5, 0.3).validate().is_err());
        assert!(d(4.0, 15.0, 1.0, -0.3).validate().is_err());
        assert!(d(f32::INFINITY, 15.0, 1.0, 0.3).validate().is_err());
    }

    #[test]
    fn constant_noise_stays_near_the_value_and_no_noise_draws_nothing() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut battery = SignalState::new(&Signal::Constant { value: 3.9, noise: 0.01 }, &mut rng, 0);
        let values: Vec<f32> = (0..100).map(|s| battery.sample(Duration::from_secs(s), &mut rng)).collect();
        assert!(values.iter().all(|v| (3.89..=3.91).contains(v)), "{values:?}");
        assert_eq!(battery.level(Duration::ZERO), 3.9);
        let mut plain = SignalState::new(&Signal::Constant { value: 1.0, noise: 0.0 }, &mut rng, 0);
        let before = rng.clone();
        assert_eq!(plain.sample(Duration::ZERO, &mut rng), 1.0);
        assert_eq!(rng, before, "a plain constant draws nothing");
    }
}
