//! How a sensor's value evolves: the [`Signal`] models and their running state.
//!
//! A signal is sampled at a device's virtual reading times with the device's own random
//! stream, so its values depend only on the seed, the device and the time, never on the
//! other devices or on how the caller slices time.

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
    /// Always the same value.
    Constant(f32),
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
    /// Checks the parameters: finite numbers, non-negative noise and step, `min <= start <= max`,
    /// non-zero periods, at least one level.
    pub fn validate(&self) -> Result<(), SignalError> {
        let bad = |reason: &str| Err(SignalError(reason.to_owned()));
        match self {
            Signal::Constant(v) if !v.is_finite() => bad("constant value must be finite"),
            Signal::Constant(_) => Ok(()),
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
    Constant(f32),
    Sine {
        base: f64,
        amplitude: f64,
        period_s: f64,
        noise: f32,
        /// Per-device phase, so a fleet does not move in lockstep.
        phase: f64,
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
    /// The state of `signal` on a new device; draws the sine phase from `rng`.
    pub(crate) fn new(signal: &Signal, rng: &mut ChaCha8Rng) -> Self {
        match signal {
            &Signal::Constant(v) => SignalState::Constant(v),
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
        match self {
            SignalState::Constant(v) => *v,
            SignalState::Sine { base, amplitude, period_s, noise, phase } => {
                let angle = std::f64::consts::TAU * at.as_secs_f64() / *period_s + *phase;
                round2((*base + *amplitude * angle.sin()) as f32 + jitter(*noise, rng))
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
}

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
        let mut state = SignalState::new(&signal, &mut rng);
        let at = |s| Duration::from_secs(s);
        let seen: Vec<f32> = [0, 9, 10, 25, 30, 41].iter().map(|&s| state.sample(at(s), &mut rng)).collect();
        assert_eq!(seen, [20.0, 20.0, 25.0, 30.0, 20.0, 25.0]);
    }

    #[test]
    fn signal_validation() {
        assert!(Signal::default().validate().is_ok());
        assert!(Signal::Constant(f32::NAN).validate().is_err());
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
}
