//! How the delivery of an action to a sink goes, as plain values with time as an argument:
//! what a receiver's answer means ([`classify`]), how long to wait before the next attempt
//! and when to give up ([`RetryPolicy`]), the per-sink rate limit ([`TokenBucket`]), and
//! the id a receiver deduplicates by ([`action_id`]).
//!
//! ```text
//! answer (status, Retry-After) ─▶ classify ─▶ Delivered | Retry { hint } | Failed
//!                                                  │
//!                     RetryPolicy::next(attempts, age, hint) ─▶ wait | give up (counted, reported)
//! a send ─▶ TokenBucket::take(now) ─▶ now | not before T
//! ```
//!
//! The sinks' queues and connections move data between these and the network.

use std::time::Duration;

/// What an HTTP receiver's answer means for an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: done.
    Delivered,
    /// 408, 429 or 5xx (or no answer at all): try again, not before `hint` if the receiver
    /// said when (`Retry-After`).
    Retry { hint: Option<Duration> },
    /// Any other status: trying again would get the same answer.
    Failed,
}

/// Longest `Retry-After` honoured: a receiver asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Classifies an answer: its status and `Retry-After` header (seconds, or an HTTP date,
/// read against `now`).
pub fn classify(status: u16, retry_after: Option<&str>, now: std::time::SystemTime) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Retry { hint: retry_after.and_then(|v| parse_retry_after(v, now)) },
        _ => Outcome::Failed,
    }
}

/// A `Retry-After` value (RFC 9110: delay-seconds or an HTTP-date), as a wait from `now`,
/// at most [`MAX_RETRY_AFTER`]; `None` if it is neither.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// When a sink tries an action again, and when it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first wait; each later one doubles, up to `max_wait`, with jitter (half to all of
    /// it, as the agent's reconnections).
    pub min_wait: Duration,
    pub max_wait: Duration,
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// An action older than this is not tried again.
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    /// A second doubling to five minutes, for up to a day or 50 attempts: a webhook receiver
    /// down for a night still gets the night's actions in the morning.
    fn default() -> Self {
        RetryPolicy {
            min_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(300),
            max_attempts: 50,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempts + 1` of an action that is `age` old, after an
    /// answer that asked for a retry (`hint`: its `Retry-After`); `None`: give up. `jitter`
    /// in 0..=1 picks the point in the upper half of the wait (the caller draws it).
    pub fn next(&self, attempts: u32, age: Duration, hint: Option<Duration>, jitter: f64) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let factor = 1u32.checked_shl(attempts.saturating_sub(1).min(30)).unwrap_or(u32::MAX);
        let cap = self.min_wait.saturating_mul(factor).min(self.max_wait);
        let wait = cap.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        // The receiver's word counts when it asks for longer than the backoff would wait.
        let wait = hint.map_or(wait, |h| wait.max(h));
        (age.saturating_add(wait) <= self.max_age).then_some(wait)
    }
}

/// A sink's rate limit: `burst` sends at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    burst: f64,
    per_second: f64,
    tokens: f64,
    /// When `tokens` was last brought up to date (ms).
    at: i64,
}

impl TokenBucket {
    /// Full at first.
    pub fn new(burst: u32, per_second: f64, now_ms: i64) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket { burst, per_second: per_second.max(1e-9), tokens: burst, at: now_ms }
    }

    /// Takes a token at `now_ms`: `Ok` to send now, or `Err(t)`: not before `t` (ms).
    pub fn take(&mut self, now_ms: i64) -> Result<(), i64> {
        if now_ms > self.at {
            self.tokens = (self.tokens + (now_ms - self.at) as f64 / 1000.0 * self.per_second).min(self.burst);
            self.at = now_ms;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait_ms = ((1.0 - self.tokens) / self.per_second * 1000.0).ceil() as i64;
        Err(self.at + wait_ms.max(1))
    }
}

/// The id of one send of an action, stable across retries and restarts: from the event's id,
/// the sink, and which send it is (`""` for the first, `"escalation-1"`, `"folded"` ...).
/// A receiver that deduplicates by it (the `Idempotency-Key` header) sees each send once.
pub fn action_id(event_id: &str, sink: &str, send: &str) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [event_id, sink, send] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    edgewatch_engine::CompositeId::uuid_v8(h.digest128()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn answers_are_delivered_retried_or_failed() {
        let now = at(1_780_000_000);
        assert_eq!(classify(200, None, now), Outcome::Delivered);
        assert_eq!(classify(204, Some("5"), now), Outcome::Delivered);
        for s in [408, 429, 500, 502, 503, 599] {
            assert_eq!(classify(s, None, now), Outcome::Retry { hint: None }, "{s}");
        }
        for s in [301, 400, 401, 403, 404, 410, 422] {
            assert_eq!(classify(s, Some("5"), now), Outcome::Failed, "{s}");
        }
        assert_eq!(classify(429, Some("120"), now), Outcome::Retry { hint: Some(Duration::from_secs(120)) });
        // An HTTP date, 90 s from now; one in the past means now; nonsense is ignored.
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(classify(503, Some(&date), now), Outcome::Retry { hint: Some(Duration::from_secs(90)) });
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn retries_back_off_honour_retry_after_and_stop_at_the_limits() {
        let p = RetryPolicy {
            min_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(60),
            max_attempts: 10,
            max_age: Duration::from_secs(600),
        };
        let waits: Vec<Duration> = (1..=8).map(|n| p.next(n, Duration::ZERO, None, 1.0).expect("retry")).collect();
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
        // Jitter keeps it in the upper half.
        assert_eq!(p.next(3, Duration::ZERO, None, 0.0), Some(Duration::from_secs(2)));
        // Retry-After wins when it asks for longer; not when it asks for less.
        assert_eq!(p.next(1, Duration::ZERO, Some(Duration::from_secs(30)), 1.0), Some(Duration::from_secs(30)));
        assert_eq!(p.next(6, Duration::ZERO, Some(Duration::from_secs(1)), 1.0), Some(Duration::from_secs(32)));
        // Given up: too many attempts, or it would be too old by then.
        assert_eq!(p.next(10, Duration::ZERO, None, 1.0), None);
        assert_eq!(p.next(5, Duration::from_secs(590), None, 1.0), None);
    }

    #[test]
    fn the_token_bucket_lets_a_burst_through_then_the_rate() {
        // 5 at once, then one every 2 s.
        let mut b = TokenBucket::new(5, 0.5, 0);
        let sent = (0..100).filter(|_| b.take(0).is_ok()).count();
        assert_eq!(sent, 5, "a burst of 100 detections gives 5 sends");
        assert_eq!(b.take(0), Err(2000));
        assert_eq!(b.take(1999), Err(2000));
        assert_eq!(b.take(2000), Ok(()));
        // A minute later: at most the burst again, not 30.
        let sent = (0..100).filter(|_| b.take(62_000).is_ok()).count();
        assert_eq!(sent, 5);
    }

    #[test]
    fn an_action_id_is_stable_and_distinct_per_sink_and_send() {
        let e = "0191e0c6-7a2b-8c3d-9e4f-a5b6c7d8e9f0";
        let first = action_id(e, "pager", "");
        assert_eq!(first, action_id(e, "pager", ""));
        assert_eq!(first.len(), 36);
        let others = [action_id(e, "chat", ""), action_id(e, "pager", "escalation-1"), action_id("other", "pager", "")];
        assert!(others.iter().all(|o| *o != first));
        // Parts are length-prefixed: moving a character between them is another id.
        assert_ne!(action_id("ab", "c", ""), action_id("a", "bc", ""));
    }
}
