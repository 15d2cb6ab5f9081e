//! Retries with exponential backoff and full jitter.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::stats::Stats;
use crate::{Error, Result};

/// How failed requests are retried: up to `max_attempts` attempts in all, waiting a random time
/// between zero and `min(max_delay, base_delay × 2^(n-1))` after the `n`th failure ("full
/// jitter"). Only transient failures are retried (see [`Error::is_transient`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in all, the first included; at least 1 (1 = no retries). Default 5.
    pub max_attempts: u32,
    /// The backoff cap after the first failure. Default 50 ms.
    pub base_delay: Duration,
    /// The largest backoff cap. Default 5 s.
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryConfig {
    /// No retries: every failure is returned at once.
    #[must_use]
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    #[must_use]
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets [`base_delay`](Self::base_delay).
    #[must_use]
    pub fn with_base_delay(mut self, base_delay: Duration) -> Self {
        self.base_delay = base_delay;
        self
    }

    /// Sets [`max_delay`](Self::max_delay).
    #[must_use]
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    pub(crate) fn validate(&self, owner: &'static str) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::InvalidConfig {
                field: owner,
                reason: "retry.max_attempts must be at least 1".into(),
            });
        }
        if self.base_delay > self.max_delay {
            return Err(Error::InvalidConfig {
                field: owner,
                reason: format!(
                    "retry.base_delay ({:?}) is larger than retry.max_delay ({:?})",
                    self.base_delay, self.max_delay
                ),
            });
        }
        Ok(())
    }

    /// The wait after failed attempt `attempt` (from 1), given a uniform random `u64`.
    pub(crate) fn backoff(&self, attempt: u32, random: u64) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let cap = self
            .base_delay
            .checked_mul(1u32 << exp.min(31))
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        if cap_nanos == 0 {
            return Duration::ZERO;
        }
        // Full jitter: uniform in [0, cap]. The modulo bias is irrelevant at these ranges.
        Duration::from_nanos(random % cap_nanos.saturating_add(1))
    }
}

/// A lock-free source of pseudo-random numbers for jitter and sampling (splitmix64 over an
/// atomic counter). Not for anything that needs unpredictability.
#[derive(Debug)]
pub(crate) struct Rng(AtomicU64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    /// Seeded from the clock and an address, for jitter that differs between processes.
    pub(crate) fn from_entropy() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let local = 0u8;
        Self::new(now ^ (std::ptr::from_ref(&local) as usize as u64).rotate_left(32))
    }

    pub(crate) fn next_u64(&self) -> u64 {
        splitmix64(self.0.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed))
    }

    /// A uniform float in [0, 1).
    #[cfg(any(test, feature = "faults"))]
    pub(crate) fn next_f64(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs `attempt(n)` for n = 1, 2, … until it succeeds, fails for good, or `config.max_attempts`
/// attempts have failed, sleeping (tokio time, so paused-clock tests stay deterministic) between
/// attempts. Every retry is counted in `stats`.
pub(crate) async fn with_retries<T, F, Fut>(
    config: &RetryConfig,
    rng: &Rng,
    stats: &Stats,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempts = Attempts::new(config, rng, stats);
    loop {
        match attempt(attempts.number()).await {
            Ok(value) => return Ok(value),
            Err(error) => attempts.retry_after(error).await?,
        }
    }
}

/// The attempts of one operation, for loops that [`with_retries`] cannot express (an attempt
/// that borrows something mutably across its `.await`s).
pub(crate) struct Attempts<'a> {
    config: &'a RetryConfig,
    rng: &'a Rng,
    stats: &'a Stats,
    n: u32,
}

impl<'a> Attempts<'a> {
    pub(crate) fn new(config: &'a RetryConfig, rng: &'a Rng, stats: &'a Stats) -> Self {
        Self {
            config,
            rng,
            stats,
            n: 1,
        }
    }

    /// The number of the attempt under way, from 1.
    pub(crate) fn number(&self) -> u32 {
        self.n
    }

    /// After attempt [`number`](Self::number) failed with `error`: waits the backoff and
    /// returns `Ok` when another attempt is due (it is counted as a retry), or returns the
    /// error when it is final or the attempts are spent.
    pub(crate) async fn retry_after(&mut self, error: Error) -> Result<()> {
        if self.n < self.config.max_attempts && error.is_transient() {
            let delay = self.config.backoff(self.n, self.rng.next_u64());
            tracing::debug!(attempt = self.n, ?delay, %error, "retrying after a transient error");
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            self.n += 1;
            Ok(())
        } else {
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let config = RetryConfig::default()
            .with_base_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_millis(100));
        // The largest possible wait is the cap itself.
        let max = |attempt| config.backoff(attempt, u64::MAX - 1);
        let caps: Vec<_> = (1..=6).map(|a| config.backoff(a, u64::MAX)).collect();
        for (attempt, cap) in (1..=6).zip(&caps) {
            assert!(
                *cap <= Duration::from_millis(10 << (attempt - 1)).min(Duration::from_millis(100))
            );
        }
        assert!(max(40) <= Duration::from_millis(100));
        assert_eq!(config.backoff(1, 0), Duration::ZERO);
        let zero = RetryConfig::default().with_base_delay(Duration::ZERO);
        assert_eq!(zero.backoff(3, 12345), Duration::ZERO);
    }

    #[test]
    fn jitter_spreads_over_the_range() {
        let config = RetryConfig::default()
            .with_base_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_millis(100));
        let rng = Rng::new(7);
        let waits: Vec<_> = (0..200)
            .map(|_| config.backoff(1, rng.next_u64()))
            .collect();
        assert!(waits.iter().any(|w| *w < Duration::from_millis(25)));
        assert!(waits.iter().any(|w| *w > Duration::from_millis(75)));
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(100)));
    }

    #[test]
    fn invalid_configs_are_rejected() {
        assert!(
            RetryConfig::default()
                .with_max_attempts(0)
                .validate("x")
                .is_err()
        );
        assert!(
            RetryConfig::default()
                .with_base_delay(Duration::from_secs(2))
                .with_max_delay(Duration::from_secs(1))
                .validate("x")
                .is_err()
        );
        assert!(RetryConfig::default().validate("x").is_ok());
    }
}
