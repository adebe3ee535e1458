//! Exponential backoff with jitter, shared by every loop that retries.

use rand::Rng;
use std::time::Duration;

/// Delay before attempt `n` (1-based): base·2^(n-1), capped, then "equal jitter" (half fixed, half
/// random) so many failing loops do not retry in lockstep.
pub fn delay(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(cap);
    let half = capped / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

/// How long a loop sleeps until `next_ms` (epoch ms) falls due: at least 10 ms, at most `idle`,
/// and `idle` when nothing is scheduled.
pub fn until(next_ms: Option<i64>, idle: Duration) -> Duration {
    match next_ms {
        Some(ms) => {
            let now = chrono::Utc::now().timestamp_millis();
            Duration::from_millis((ms - now).clamp(10, idle.as_millis() as i64) as u64)
        }
        None => idle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_stays_under_the_cap() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        for n in 1..40 {
            let d = delay(n, base, cap);
            assert!(d <= cap, "attempt {n}: {d:?}");
        }
        assert!(delay(1, base, cap) <= Duration::from_secs(1));
        assert!(delay(10, base, cap) >= Duration::from_secs(30));
    }
}
