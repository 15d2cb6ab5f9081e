//! Hedging policy: when to raise a second request, and how many may be raised.

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::Mutex;

use crate::{Error, Result};

/// When the [`Downloader`](crate::Downloader) raises a hedge: a second GET for an object whose
/// first GET has not finished after a delay.
///
/// The delay is the `percentile` of the last `window` times to first byte (from sending a GET
/// to its first body bytes), clamped to `[min_delay, max_delay]`, and there is none (no
/// hedging) until `min_samples` of them have been seen. Time to first byte, not the whole
/// transfer: a large object takes longer to arrive without being slow to answer, and with
/// whole-transfer samples the large objects of a mixed workload would be the ones hedged (and
/// downloaded twice). Each GET gets at most one hedge; whichever request brings its first byte
/// first wins, and the other is cancelled.
///
/// The budget is a token bucket: every GET adds `max_hedge_ratio` tokens, up to
/// `max_hedge_burst`, and a hedge takes one. So hedges stay at most `max_hedge_ratio` of the
/// GETs over any stretch of time, plus at most `max_hedge_burst`: credit does not pile up over a
/// quiet hour, and a burst of slow requests during an incident cannot hedge nearly all of them.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HedgeConfig {
    /// Whether to hedge at all. Default true.
    pub enabled: bool,
    /// The percentile of the times to first byte used as the delay, in (0, 1]. Default 0.95.
    pub percentile: f64,
    /// The shortest delay. Default 5 ms.
    pub min_delay: Duration,
    /// The longest delay. Default 2 s.
    pub max_delay: Duration,
    /// Latencies needed before the first hedge. Default 20.
    pub min_samples: usize,
    /// Hedges allowed per GET, in [0, 1]: the budget's refill per GET. Default 0.05.
    pub max_hedge_ratio: f64,
    /// The most hedges the budget can hold in reserve, at least 1 (whole hedges). Default 10.
    pub max_hedge_burst: f64,
    /// Recent times to first byte kept. Default 512.
    pub window: usize,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            percentile: 0.95,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(2),
            min_samples: 20,
            max_hedge_ratio: 0.05,
            max_hedge_burst: 10.0,
            window: 512,
        }
    }
}

impl HedgeConfig {
    /// Hedging off.
    #[must_use]
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Sets [`enabled`](Self::enabled).
    #[must_use]
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets [`percentile`](Self::percentile).
    #[must_use]
    pub fn with_percentile(mut self, percentile: f64) -> Self {
        self.percentile = percentile;
        self
    }

    /// Sets [`min_delay`](Self::min_delay).
    #[must_use]
    pub fn with_min_delay(mut self, min_delay: Duration) -> Self {
        self.min_delay = min_delay;
        self
    }

    /// Sets [`max_delay`](Self::max_delay).
    #[must_use]
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Sets [`min_samples`](Self::min_samples).
    #[must_use]
    pub fn with_min_samples(mut self, min_samples: usize) -> Self {
        self.min_samples = min_samples;
        self
    }

    /// Sets [`max_hedge_ratio`](Self::max_hedge_ratio).
    #[must_use]
    pub fn with_max_hedge_ratio(mut self, max_hedge_ratio: f64) -> Self {
        self.max_hedge_ratio = max_hedge_ratio;
        self
    }

    /// Sets [`max_hedge_burst`](Self::max_hedge_burst).
    #[must_use]
    pub fn with_max_hedge_burst(mut self, max_hedge_burst: f64) -> Self {
        self.max_hedge_burst = max_hedge_burst;
        self
    }

    /// Sets [`window`](Self::window).
    #[must_use]
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(Error::InvalidConfig { field, reason });
        if !(self.percentile > 0.0 && self.percentile <= 1.0) {
            return bad(
                "HedgeConfig::percentile",
                format!("{} is not in (0, 1]", self.percentile),
            );
        }
        if !(0.0..=1.0).contains(&self.max_hedge_ratio) {
            return bad(
                "HedgeConfig::max_hedge_ratio",
                format!("{} is not in [0, 1]", self.max_hedge_ratio),
            );
        }
        if !(self.max_hedge_burst >= 1.0 && self.max_hedge_burst.is_finite()) {
            return bad(
                "HedgeConfig::max_hedge_burst",
                format!("{} is not a number of at least 1", self.max_hedge_burst),
            );
        }
        if self.min_delay > self.max_delay {
            return bad(
                "HedgeConfig::min_delay",
                format!(
                    "{:?} is larger than max_delay ({:?})",
                    self.min_delay, self.max_delay
                ),
            );
        }
        if self.window == 0 || self.min_samples > self.window {
            return bad(
                "HedgeConfig::window",
                format!(
                    "{} must be at least 1 and at least min_samples ({})",
                    self.window, self.min_samples
                ),
            );
        }
        Ok(())
    }
}

/// The window of times to first byte and the budget.
#[derive(Debug)]
pub(crate) struct Hedger {
    config: HedgeConfig,
    /// Guards the window and the counts; held for bookkeeping only.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The most recent latencies, oldest first, at most `config.window`.
    latencies: VecDeque<Duration>,
    /// Hedges the budget allows now: `max_hedge_ratio` more per GET, at most
    /// `max_hedge_burst`; a hedge takes one.
    tokens: f64,
}

impl Hedger {
    pub(crate) fn new(config: HedgeConfig) -> Self {
        Self {
            state: Mutex::new(State {
                latencies: VecDeque::with_capacity(config.window.min(4096)),
                ..State::default()
            }),
            config,
        }
    }

    /// Counts a primary request and returns the hedge delay for it, or `None` when hedging is
    /// off or there are not enough samples yet.
    pub(crate) fn start(&self) -> Option<Duration> {
        let mut state = self.state.lock();
        state.tokens =
            (state.tokens + self.config.max_hedge_ratio).min(self.config.max_hedge_burst);
        if !self.config.enabled || state.latencies.len() < self.config.min_samples.max(1) {
            return None;
        }
        Some(self.delay_of(&state.latencies))
    }

    /// The current delay, for observation.
    pub(crate) fn current_delay(&self) -> Option<Duration> {
        let state = self.state.lock();
        (self.config.enabled && state.latencies.len() >= self.config.min_samples.max(1))
            .then(|| self.delay_of(&state.latencies))
    }

    fn delay_of(&self, latencies: &VecDeque<Duration>) -> Duration {
        let mut sorted: Vec<Duration> = latencies.iter().copied().collect();
        // The nearest-rank percentile: the smallest sample with at least `percentile` of the
        // samples at or below it.
        let rank = (self.config.percentile * sorted.len() as f64).ceil() as usize;
        let index = rank.clamp(1, sorted.len()) - 1;
        let (_, value, _) = sorted.select_nth_unstable(index);
        (*value).clamp(self.config.min_delay, self.config.max_delay)
    }

    /// Takes a hedge from the budget: true when the bucket holds a whole hedge.
    pub(crate) fn try_hedge(&self) -> bool {
        let mut state = self.state.lock();
        // A little slack for the sum of many small refills.
        let allowed = state.tokens >= 1.0 - 1e-9;
        if allowed {
            state.tokens = (state.tokens - 1.0).max(0.0);
        }
        allowed
    }

    pub(crate) fn record(&self, latency: Duration) {
        let mut state = self.state.lock();
        if state.latencies.len() == self.config.window {
            state.latencies.pop_front();
        }
        state.latencies.push_back(latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn no_delay_before_min_samples() {
        let h = Hedger::new(HedgeConfig::default().with_min_samples(3).with_window(10));
        assert_eq!(h.start(), None);
        h.record(ms(10));
        h.record(ms(10));
        assert_eq!(h.start(), None);
        h.record(ms(10));
        assert_eq!(h.start(), Some(ms(10)));
    }

    #[test]
    fn percentile_and_clamp() {
        let config = HedgeConfig::default()
            .with_min_samples(1)
            .with_window(100)
            .with_percentile(0.9)
            .with_min_delay(ms(1))
            .with_max_delay(ms(1000));
        let h = Hedger::new(config.clone());
        for i in 1..=100 {
            h.record(ms(i));
        }
        assert_eq!(h.current_delay(), Some(ms(90)));

        let clamped = Hedger::new(config.clone().with_max_delay(ms(50)));
        let floor = Hedger::new(config.with_min_delay(ms(500)).with_max_delay(ms(600)));
        for i in 1..=100 {
            clamped.record(ms(i));
            floor.record(ms(i));
        }
        assert_eq!(clamped.current_delay(), Some(ms(50)));
        assert_eq!(floor.current_delay(), Some(ms(500)));
    }

    #[test]
    fn window_forgets_old_samples() {
        let h = Hedger::new(
            HedgeConfig::default()
                .with_min_samples(1)
                .with_window(4)
                .with_percentile(1.0)
                .with_min_delay(Duration::ZERO),
        );
        h.record(ms(900));
        for _ in 0..4 {
            h.record(ms(10));
        }
        assert_eq!(h.current_delay(), Some(ms(10)));
    }

    #[test]
    fn budget_caps_hedges_as_a_share_of_requests() {
        let h = Hedger::new(HedgeConfig::default().with_max_hedge_ratio(0.1));
        let mut hedges = 0;
        for _ in 0..1000 {
            h.start();
            if h.try_hedge() {
                hedges += 1;
            }
        }
        assert_eq!(hedges, 100);
        let none = Hedger::new(HedgeConfig::default().with_max_hedge_ratio(0.0));
        none.start();
        assert!(!none.try_hedge());
    }

    /// Credit does not pile up: after a quiet stretch of 10 000 GETs that needed no hedge, a
    /// burst of 200 slow GETs gets at most the burst plus its own share, not one hedge each.
    #[test]
    fn budget_does_not_pile_up_over_a_quiet_stretch() {
        let h = Hedger::new(
            HedgeConfig::default()
                .with_max_hedge_ratio(0.05)
                .with_max_hedge_burst(10.0),
        );
        for _ in 0..10_000 {
            h.start();
        }
        let mut hedges = 0;
        for _ in 0..200 {
            h.start();
            if h.try_hedge() {
                hedges += 1;
            }
        }
        assert!(
            hedges <= 10 + 10,
            "{hedges} of 200 GETs hedged after a quiet stretch"
        );
        assert!(hedges >= 10, "the reserve was there: {hedges}");
    }

    #[test]
    fn bad_configs_are_rejected() {
        for config in [
            HedgeConfig::default().with_percentile(0.0),
            HedgeConfig::default().with_percentile(1.5),
            HedgeConfig::default().with_percentile(f64::NAN),
            HedgeConfig::default().with_max_hedge_ratio(-0.1),
            HedgeConfig::default().with_max_hedge_ratio(f64::NAN),
            HedgeConfig::default().with_max_hedge_burst(0.5),
            HedgeConfig::default().with_max_hedge_burst(f64::INFINITY),
            HedgeConfig::default()
                .with_min_delay(ms(10))
                .with_max_delay(ms(1)),
            HedgeConfig::default().with_window(0),
            HedgeConfig::default().with_window(5).with_min_samples(6),
        ] {
            assert!(config.validate().is_err(), "{config:?} was accepted");
        }
        assert!(HedgeConfig::default().validate().is_ok());
    }
}
