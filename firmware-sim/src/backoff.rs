//! Reconnection delays: exponential, capped, with jitter.
//!
//! rumqttc's `poll()` retries at once after an error, so without this a dead broker is a
//! hot loop. Jitter keeps a fleet of gateways from reconnecting in lockstep after an outage
//! ("equal jitter": half the delay fixed, half random, so the delay still grows).
//!
//! A broker that accepts a connection and then drops it (a session it cannot restore, a
//! message it chokes on, a proxy in between) must not reset the delay: it only resets once
//! a connection has stayed up for [`STABLE_AFTER`]. Time is passed in, so tests run in
//! virtual time.
//!
//! The one backoff of the workspace: the agent's connections (`edgewatch::mqtt`), the
//! demo's watcher and the simulator's devices (`link.rs`) all use it, so a simulated device
//! reconnects as the agent does. It lives here, not in `edgewatch-wire`, although firmware
//! reconnects too: the wire crate holds one idea, the frame format, and stays `no_std`
//! with no dependency but postcard and heapless; this backoff needs a clock (`Instant`) and
//! a random source (jitter), which a firmware's network stack provides in its own way.
//! firmware-sim is the lowest crate with `std` that the agent already depends on, and this
//! module depends on nothing else of it.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::time::{Duration, Instant};

/// How long a connection must stay up before the delay starts again from the minimum.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Delays between reconnection attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// Attempts since the last stable connection; the delay doubles with each.
    attempt: u32,
    rng: SmallRng,
    /// When the current connection came up, if it is up.
    up_since: Option<Instant>,
}

impl Backoff {
    /// Delays from `min` doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff::with_seed(min, max, rand::random())
    }

    /// The same, with a fixed seed, for tests.
    pub fn with_seed(min: Duration, max: Duration, seed: u64) -> Self {
        Backoff { min, max: max.max(min), attempt: 0, rng: SmallRng::seed_from_u64(seed), up_since: None }
    }

    /// A connection came up at `now`.
    pub fn connected(&mut self, now: Instant) {
        self.up_since = Some(now);
    }

    /// A connection, or an attempt at one, failed at `now`: the delay before the next
    /// attempt. Only a connection that stayed up for [`STABLE_AFTER`] starts it again from
    /// the minimum.
    pub fn failed(&mut self, now: Instant) -> Duration {
        if let Some(since) = self.up_since.take() {
            if now.saturating_duration_since(since) >= STABLE_AFTER {
                self.reset();
            }
        }
        self.next_delay()
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        let cap = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = cap / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        let extra = if jitter_ms == 0 { 0 } else { self.rng.random_range(0..=jitter_ms) };
        half + Duration::from_millis(extra)
    }

    /// A connection succeeded: start again from `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        let mut b = Backoff::with_seed(min, max, 7);
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let cap = (min * 2u32.pow(i as u32)).min(max);
            assert!(*d >= cap / 2 && *d <= cap, "attempt {i}: {d:?} not in [{:?}, {cap:?}]", cap / 2);
        }
        assert!(delays[11] >= max / 2, "reaches the cap");
        b.reset();
        assert!(b.next_delay() <= min);
    }

    /// Issue 14: a broker that accepts and then drops each connection got a reconnect every
    /// ~100 ms, because each CONNACK reset the delay.
    #[test]
    fn a_connection_that_drops_at_once_does_not_reset_the_delay() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(30);
        let mut b = Backoff::with_seed(min, max, 3);
        let mut now = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..10 {
            b.connected(now);
            now += Duration::from_millis(50);
            let d = b.failed(now);
            delays.push(d);
            now += d;
        }
        for (i, d) in delays.iter().enumerate() {
            let cap = (min * 2u32.pow(i as u32)).min(max);
            assert!(*d >= cap / 2, "attempt {i}: {d:?} is below {:?}: the delay was reset", cap / 2);
        }
        assert!(delays[9] >= max / 2, "reaches the cap: {delays:?}");
        // Up for longer than STABLE_AFTER: the next failure starts again from the minimum.
        b.connected(now);
        now += STABLE_AFTER;
        assert!(b.failed(now) <= min);
    }

    #[test]
    fn jitter_differs_between_gateways() {
        let d = |seed| {
            let mut b = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(60), seed);
            (0..6).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_ne!(d(1), d(2));
    }
}
