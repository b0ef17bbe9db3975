//! What the per-call benches share (`mod common;` in each).

use std::time::Instant;

/// Nanoseconds per call of `f`, the best of five rounds of `n` calls.
pub fn ns_per(n: u32, mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}
