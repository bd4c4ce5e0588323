//! When to try again after a failed background fetch: exponential backoff from
//! one second, doubling up to a cap, each wait spread by random jitter. A
//! thousand replicas that lost the IdP at the same moment then come back to it
//! spread over time instead of in lockstep, and no replica hammers an IdP that
//! is down. The random source is injected so tests can fix it.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::config::RefreshConfig;

/// The first retry is about this long after the first failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Retries never wait longer than this (or `refresh.max_seconds`, when shorter):
/// once the IdP is back, keys return within minutes, not after a day-long backoff.
pub const MAX_RETRY: Duration = Duration::from_secs(300);

/// A source of fractions in `[0, 1]`: random in the service, scripted in tests.
#[derive(Clone)]
pub struct Jitter(Arc<dyn Fn() -> f64 + Send + Sync>);

impl std::fmt::Debug for Jitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Jitter")
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Jitter::random()
    }
}

impl Jitter {
    /// Random fractions from the thread's RNG (seeded from the OS, so every
    /// replica draws its own sequence). Spreading retries needs
    /// unpredictability between replicas, not secrecy; this RNG gives both.
    pub fn random() -> Self {
        Jitter(Arc::new(|| rand::rng().random::<f64>()))
    }

    /// Always the same fraction (tests).
    pub fn fixed(fraction: f64) -> Self {
        Jitter(Arc::new(move || fraction))
    }

    /// Any source of fractions (tests script a sequence).
    pub fn from_fn(source: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        Jitter(Arc::new(source))
    }

    fn fraction(&self) -> f64 {
        let fraction = (self.0)();
        if fraction.is_finite() { fraction.clamp(0.0, 1.0) } else { 1.0 }
    }

    /// `base` spread over `[base / 2, base]` ("equal jitter"): never more than
    /// `base`, never less than half of it.
    pub fn spread(&self, base: Duration) -> Duration {
        let half = base / 2;
        half + half.mul_f64(self.fraction())
    }
}

/// The retry schedule of one issuer's background refresher.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(refresh: &RefreshConfig) -> Self {
        let cap = MAX_RETRY.min(Duration::from_secs(refresh.max_seconds)).max(FIRST_RETRY);
        Backoff { next: FIRST_RETRY, cap }
    }

    /// The wait before the next attempt after a failure: 1 s, 2 s, 4 s ... up
    /// to the cap, each spread by `jitter`.
    pub fn after_failure(&mut self, jitter: &Jitter) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(self.cap);
        jitter.spread(base)
    }

    /// A fetch succeeded: the next failure starts the schedule again.
    pub fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }

    /// The longest wait this schedule reaches.
    pub fn cap(&self) -> Duration {
        self.cap
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use super::*;

    fn refresh(max_seconds: u64) -> RefreshConfig {
        RefreshConfig { min_seconds: 1, max_seconds, ..RefreshConfig::default() }
    }

    fn schedule(backoff: &mut Backoff, jitter: &Jitter, failures: usize) -> Vec<f64> {
        (0..failures).map(|_| backoff.after_failure(jitter).as_secs_f64()).collect()
    }

    #[test]
    fn doubles_from_one_second_up_to_the_cap() {
        // Fraction 1: the whole base, so the schedule itself shows.
        let mut backoff = Backoff::new(&RefreshConfig::default());
        let waits = schedule(&mut backoff, &Jitter::fixed(1.0), 12);
        assert_eq!(waits, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0, 300.0]);
        // A refresh maximum below five minutes is the cap.
        let mut short = Backoff::new(&refresh(10));
        assert_eq!(short.cap(), Duration::from_secs(10));
        assert_eq!(schedule(&mut short, &Jitter::fixed(1.0), 6), [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]);
    }

    #[test]
    fn jitter_spreads_each_wait_over_its_upper_half() {
        let mut backoff = Backoff::new(&RefreshConfig::default());
        assert_eq!(schedule(&mut backoff, &Jitter::fixed(0.0), 4), [0.5, 1.0, 2.0, 4.0]);
        let script = Mutex::new(vec![0.5, 0.25, 1.0, 7.0, f64::NAN, -1.0].into_iter());
        let jitter = Jitter::from_fn(move || script.lock().unwrap().next().unwrap());
        let mut backoff = Backoff::new(&RefreshConfig::default());
        // 1 s * 0.75, 2 s * 0.625, 4 s * 1, out-of-range fractions clamped (NaN: the whole base).
        assert_eq!(schedule(&mut backoff, &jitter, 6), [0.75, 1.25, 4.0, 8.0, 16.0, 16.0]);
    }

    #[test]
    fn a_success_starts_the_schedule_again() {
        let mut backoff = Backoff::new(&RefreshConfig::default());
        schedule(&mut backoff, &Jitter::fixed(1.0), 5);
        backoff.reset();
        assert_eq!(schedule(&mut backoff, &Jitter::fixed(1.0), 2), [1.0, 2.0]);
    }

    #[test]
    fn random_jitter_differs_between_draws_and_stays_in_range() {
        let jitter = Jitter::random();
        let base = Duration::from_secs(64);
        let waits: Vec<Duration> = (0..1000).map(|_| jitter.spread(base)).collect();
        assert!(waits.iter().all(|wait| (base / 2..=base).contains(wait)));
        // 1000 replicas retrying after the same failure do not pick the same moment.
        let distinct: HashSet<_> = waits.iter().map(|wait| wait.as_millis()).collect();
        assert!(distinct.len() > 900, "{} distinct waits", distinct.len());
        // Two sources do not repeat each other's draws.
        let (one, other) = (Jitter::random(), Jitter::random());
        let first: Vec<u128> = (0..8).map(|_| one.spread(base).as_nanos()).collect();
        let second: Vec<u128> = (0..8).map(|_| other.spread(base).as_nanos()).collect();
        assert_ne!(first, second);
    }
}
