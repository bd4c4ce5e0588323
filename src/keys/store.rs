//! The live key set of one issuer and the two ways it changes: a background
//! refresher paced by the IdP's cache headers, and an on-demand refetch when a
//! token names an unknown `kid`. That refetch is single-flight (every waiting
//! Check shares the one fetch in flight) and happens at most once per interval
//! counted from the end of the last fetch, so a flood of random kids cannot
//! turn portcullis into a load generator against the IdP. A Check waits for it
//! only `unknown_kid_wait_ms`: a slow IdP never holds a Check past Envoy's
//! timeout, where `failure_mode_allow` could let it through.
//! A failed fetch never discards the last good keys, but keys are only
//! trusted for `refresh.max_stale_seconds` after the last successful fetch:
//! past it the issuer's tokens, cached ones included, get 503 and readiness
//! drops until a fetch succeeds. Failed background fetches are retried with
//! jittered exponential backoff ([`super::backoff`]).
//!
//! Refresh timing is tokio's time; the rate limit and staleness read the
//! runtime's [`Clock`], so tests drive both without waiting.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::backoff::{Backoff, Jitter};
use super::fetch::{FetchError, Fetcher};
use super::jwks::SkippedKey;
use super::{KeyFetcher, KeySet, KeySource, redact_url};
use crate::config::{Placeholder, RefreshConfig};
use crate::metrics::Metrics;
use crate::token::Clock;

/// What operators see about an issuer's keys.
#[derive(Debug, Clone, Default)]
pub struct KeyStatus {
    pub key_ids: Vec<String>,
    pub last_refresh: Option<SystemTime>,
    pub last_error: Option<String>,
    pub jwks_uri: Option<String>,
    pub fetches: u64,
    pub errors: u64,
    /// JWKS entries of the installed set that were not loaded, with why.
    pub skipped: Vec<SkippedKey>,
    /// Past `refresh.max_stale_seconds` since the last successful fetch.
    pub stale: bool,
}

/// Why an issuer's tokens cannot be verified now: a 503, not the client's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysUnavailable {
    /// No fetch has succeeded since start (or since the key source changed).
    #[error("keys of issuer {0} are not available yet")]
    NotLoaded(Arc<str>),
    /// The last successful fetch is older than `refresh.max_stale_seconds`.
    #[error("keys of issuer {issuer} are stale (last fetched {age_seconds} s ago)")]
    Stale { issuer: Arc<str>, age_seconds: u64 },
    /// The issuer's shared secret was not read (a policy compiled without secrets).
    #[error("the decision needs the secret of issuer {issuer}: {secret}, not read without secrets")]
    SecretNotRead { issuer: Arc<str>, secret: Placeholder },
}

impl KeysUnavailable {
    pub fn issuer(&self) -> &Arc<str> {
        match self {
            KeysUnavailable::NotLoaded(issuer)
            | KeysUnavailable::Stale { issuer, .. }
            | KeysUnavailable::SecretNotRead { issuer, .. } => issuer,
        }
    }
}

/// The on-demand fetch shared by every Check that waits for it, and when the
/// last fetch of any kind ended (the unknown-kid rate limit counts from there).
#[derive(Default)]
struct Refetch {
    in_flight: Option<watch::Receiver<bool>>,
    /// Seconds on the runtime's clock.
    last_finished: Option<u64>,
}

/// Where keys come from, what tells readiness they changed, the clock, the
/// jitter of retries and the process-wide metrics; shared by every issuer of a
/// policy and handed on to the policies after it.
#[derive(Clone)]
pub struct KeyRuntime {
    pub fetcher: Arc<dyn KeyFetcher>,
    pub changed: watch::Sender<u64>,
    pub clock: Clock,
    pub jitter: Jitter,
    pub metrics: Arc<Metrics>,
    /// The revocation set and the shared state: they outlive every policy too.
    pub shared: Arc<crate::state::Shared>,
}

impl Default for KeyRuntime {
    fn default() -> Self {
        KeyRuntime {
            fetcher: Arc::new(Fetcher::new()),
            changed: watch::channel(0).0,
            clock: Clock::system(),
            jitter: Jitter::random(),
            metrics: Arc::default(),
            shared: Arc::default(),
        }
    }
}

pub struct IssuerKeys {
    pub name: Arc<str>,
    /// The issuer URL (discovery base); `None` for issuers that check no `iss`.
    pub issuer: Option<String>,
    source: KeySource,
    refresh: RefreshConfig,
    runtime: KeyRuntime,
    current: RwLock<Option<Arc<KeySet>>>,
    /// When fetched keys were last installed, in seconds on the runtime's
    /// clock (0: never); staleness counts from here.
    fetched_at: AtomicU64,
    /// Whether the stale state was already logged (reset by a successful fetch).
    stale_logged: AtomicBool,
    status: Mutex<KeyStatus>,
    refetch: Mutex<Refetch>,
    refresher: Mutex<Option<JoinHandle<()>>>,
}

impl IssuerKeys {
    /// Keys of `source`; `initial` is the already parsed set of a static source
    /// (a shared secret or a PEM key), installed at once.
    pub fn new(
        name: &str,
        issuer: Option<&str>,
        source: KeySource,
        refresh: RefreshConfig,
        runtime: KeyRuntime,
        initial: Option<KeySet>,
    ) -> Arc<Self> {
        let keys = Arc::new(IssuerKeys {
            name: Arc::from(name),
            issuer: issuer.map(str::to_string),
            source,
            refresh,
            runtime,
            current: RwLock::new(None),
            fetched_at: AtomicU64::new(0),
            stale_logged: AtomicBool::new(false),
            status: Mutex::new(KeyStatus::default()),
            refetch: Mutex::new(Refetch::default()),
            refresher: Mutex::new(None),
        });
        if let Some(set) = initial {
            keys.install(set, None);
        }
        keys
    }

    /// Whether these keys come from exactly this source and issuer with these
    /// timings: a reload keeps such keys (no refetch, no readiness flap).
    pub fn serves(&self, issuer: Option<&str>, source: &KeySource, refresh: &RefreshConfig) -> bool {
        self.issuer.as_deref() == issuer && &self.source == source && &self.refresh == refresh
    }

    /// The keys as of now, stale or not; `None` until the first successful fetch.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current.read().expect("key lock poisoned").clone()
    }

    /// The keys a token may be verified with now: loaded, and fetched within
    /// `refresh.max_stale_seconds`. Static keys (a secret, a PEM key) never go stale.
    pub fn usable(&self) -> Result<Arc<KeySet>, KeysUnavailable> {
        self.usable_at(self.runtime.clock.now())
    }

    /// [`Self::usable`] at `now` (the runtime clock's reading, taken once per
    /// Check by callers that need it for more than this).
    pub fn usable_at(&self, now: u64) -> Result<Arc<KeySet>, KeysUnavailable> {
        if let KeySource::Unresolved(secret) = &self.source {
            return Err(KeysUnavailable::SecretNotRead { issuer: Arc::clone(&self.name), secret: secret.clone() });
        }
        let keys = self.current().ok_or_else(|| KeysUnavailable::NotLoaded(Arc::clone(&self.name)))?;
        match self.stale_age(now) {
            None => Ok(keys),
            Some(age_seconds) => {
                if !self.stale_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        issuer = %self.name,
                        age_s = age_seconds,
                        max_stale_s = self.refresh.max_stale(),
                        "keys are stale: tokens of this issuer get 503 until a fetch succeeds"
                    );
                }
                Err(KeysUnavailable::Stale { issuer: Arc::clone(&self.name), age_seconds })
            }
        }
    }

    /// Seconds since the last successful fetch, when that is past the staleness budget.
    fn stale_age(&self, now: u64) -> Option<u64> {
        self.remote()?;
        let fetched_at = self.fetched_at.load(Ordering::Acquire);
        let age = now.saturating_sub(fetched_at);
        (fetched_at != 0 && age > self.refresh.max_stale()).then_some(age)
    }

    pub fn status(&self) -> KeyStatus {
        let mut status = self.status.lock().expect("status lock poisoned").clone();
        status.stale = self.stale_age(self.runtime.clock.now()).is_some();
        status
    }

    fn remote(&self) -> Option<&Option<String>> {
        match &self.source {
            KeySource::Jwks(uri) => Some(uri),
            _ => None,
        }
    }

    /// Fetches now, ignoring rate limits (startup, background timer, admin).
    /// Returns how long the new keys stay fresh.
    pub async fn refresh(&self) -> Result<Duration, FetchError> {
        self.refresh_for(None).await
    }

    /// [`IssuerKeys::refresh`] in its own trace span. When a Check asked for
    /// it, the exported span is that Check's child (`cause`, its trace
    /// context); locally it has no parent, so a fetch that outlives the Check's
    /// wait does not hold the Check's span open.
    async fn refresh_for(&self, cause: Option<opentelemetry::Context>) -> Result<Duration, FetchError> {
        let span = tracing::info_span!(target: "portcullis::trace", parent: None, "jwks fetch", issuer = %self.name, result = Empty);
        if let Some(cause) = cause {
            let _ = span.set_parent(cause);
        }
        let result = self.refresh_keys().instrument(span.clone()).await;
        span.record("result", result.as_ref().map_or_else(FetchError::kind, |_| "ok"));
        result
    }

    async fn refresh_keys(&self) -> Result<Duration, FetchError> {
        let Some(jwks_uri) = self.remote() else {
            return Ok(Duration::from_secs(self.refresh.max_seconds));
        };
        let issuer = self.issuer.as_deref().unwrap_or_default();
        let fetched = self.runtime.fetcher.fetch(issuer, jwks_uri.as_deref(), &self.refresh).await;
        self.refetch.lock().expect("refetch lock poisoned").last_finished = Some(self.runtime.clock.now());
        let result = fetched.as_ref().map_or_else(FetchError::kind, |_| "ok");
        self.runtime.metrics.record_fetch(&self.name, result);
        match fetched {
            Ok(fetched) => {
                for skipped in &fetched.keys.skipped {
                    tracing::warn!(issuer = %self.name, key = %skipped, "skipped JWKS entry");
                }
                tracing::info!(issuer = %self.name, keys = ?fetched.keys.ids(), ttl_s = fetched.ttl.as_secs(), "keys refreshed");
                self.install(fetched.keys, Some(fetched.jwks_uri));
                Ok(fetched.ttl)
            }
            Err(err) => {
                tracing::warn!(issuer = %self.name, error = %err, kept_keys = self.current().is_some(), "key refresh failed");
                let mut status = self.status.lock().expect("status lock poisoned");
                status.last_error = Some(err.to_string());
                status.fetches += 1;
                status.errors += 1;
                Err(err)
            }
        }
    }

    fn install(&self, keys: KeySet, jwks_uri: Option<String>) {
        {
            let mut status = self.status.lock().expect("status lock poisoned");
            status.key_ids = keys.ids();
            status.skipped = keys.skipped.clone();
            status.last_refresh = Some(SystemTime::now());
            status.last_error = None;
            status.fetches += u64::from(jwks_uri.is_some());
            status.jwks_uri = jwks_uri.as_deref().map(redact_url);
        }
        // Fresh before the new keys are visible: a reader never sees them stale.
        self.fetched_at.store(self.runtime.clock.now(), Ordering::Release);
        *self.current.write().expect("key lock poisoned") = Some(Arc::new(keys));
        if self.stale_logged.swap(false, Ordering::Relaxed) {
            tracing::info!(issuer = %self.name, "keys are fresh again");
        }
        self.runtime.changed.send_modify(|generation| *generation += 1);
    }

    /// A token named `kid`, which the current set lacks: join the refetch in
    /// flight, or start one if the rate limit allows, and wait for it at most
    /// `unknown_kid_wait_ms`. The fetch runs in its own task, so it completes
    /// (and serves later requests) whether or not anyone still waits.
    /// Returns whether `kid` is known afterwards.
    pub async fn refetch_for_kid(self: &Arc<Self>, kid: &str) -> bool {
        if self.remote().is_none() {
            return false;
        }
        let Some((mut finished, started)) = self.start_or_join_refetch() else {
            self.runtime.metrics.record_unknown_kid(&self.name, "rate_limited");
            self.runtime.metrics.record_fetch(&self.name, "rate_limited");
            return self.knows(kid);
        };
        self.runtime.metrics.record_unknown_kid(&self.name, if started { "performed" } else { "joined" });
        let wait = Duration::from_millis(self.refresh.unknown_kid_wait_ms);
        let _ = tokio::time::timeout(wait, finished.wait_for(|done| *done)).await;
        self.knows(kid)
    }

    /// No usable keys (none yet, or stale): ask for a fetch without making the
    /// Check wait. Shares the unknown-kid refetch and its rate limit.
    pub fn nudge(self: &Arc<Self>) {
        if self.remote().is_some() {
            let _ = self.start_or_join_refetch();
        }
    }

    /// The receiver of the on-demand fetch in flight, and whether it was
    /// started now (because none was and the rate limit allows); `None` when rate-limited.
    fn start_or_join_refetch(self: &Arc<Self>) -> Option<(watch::Receiver<bool>, bool)> {
        let mut state = self.refetch.lock().expect("refetch lock poisoned");
        if let Some(in_flight) = &state.in_flight {
            return Some((in_flight.clone(), false));
        }
        let now = self.runtime.clock.now();
        if state.last_finished.is_some_and(|at| now.saturating_sub(at) < self.refresh.unknown_kid_interval_seconds) {
            return None;
        }
        let (done, finished) = watch::channel(false);
        state.in_flight = Some(finished.clone());
        let this = Arc::clone(self);
        let current = tracing::Span::current();
        let cause = (!current.is_disabled()).then(|| current.context());
        tokio::spawn(async move {
            let _ = this.refresh_for(cause).await;
            this.refetch.lock().expect("refetch lock poisoned").in_flight = None;
            done.send_replace(true);
        });
        Some((finished, true))
    }

    fn knows(&self, kid: &str) -> bool {
        self.current().is_some_and(|keys| keys.by_kid(kid).is_some())
    }

    /// How long after a successful fetch the next one starts: the IdP's TTL
    /// (already clamped to the refresh bounds), but at most half the staleness
    /// budget, so one failed refresh never makes the keys stale.
    fn next_refresh(&self, ttl: Duration) -> Duration {
        ttl.min(Duration::from_millis(self.refresh.max_stale().saturating_mul(500)))
    }

    /// Starts keeping the keys fresh (once; later calls do nothing). The first
    /// fetch happens at once; failures retry with jittered exponential backoff
    /// while the last good keys stay. The task ends when the last policy using
    /// these keys is gone.
    pub fn start_refresher(self: &Arc<Self>) {
        if self.remote().is_none() {
            return;
        }
        let mut slot = self.refresher.lock().expect("refresher lock poisoned");
        if slot.is_some() {
            return;
        }
        let weak = Arc::downgrade(self);
        let mut backoff = Backoff::new(&self.refresh);
        *slot = Some(tokio::spawn(async move {
            loop {
                let Some(keys) = weak.upgrade() else { return };
                let wait = match keys.refresh().await {
                    Ok(ttl) => {
                        backoff.reset();
                        keys.next_refresh(ttl)
                    }
                    Err(_) => backoff.after_failure(&keys.runtime.jitter),
                };
                drop(keys);
                tokio::time::sleep(wait).await;
            }
        }));
    }
}

impl Drop for IssuerKeys {
    fn drop(&mut self) {
        if let Some(task) = self.refresher.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Answer, ScriptedFetcher, es256, runtime};

    fn keys(fetcher: &Arc<ScriptedFetcher>, refresh: &str) -> (Arc<IssuerKeys>, KeyRuntime) {
        keys_with(fetcher, refresh, Jitter::fixed(1.0))
    }

    fn keys_with(fetcher: &Arc<ScriptedFetcher>, refresh: &str, jitter: Jitter) -> (Arc<IssuerKeys>, KeyRuntime) {
        let runtime = KeyRuntime { jitter, ..runtime(fetcher.clone()) };
        let refresh: RefreshConfig =
            crate::config::value_de::from_value(&serde_saphyr::from_str(refresh).unwrap()).unwrap();
        let source = KeySource::Jwks(Some("https://idp.test/jwks".into()));
        (IssuerKeys::new("idp", Some("https://idp.test"), source, refresh, runtime.clone(), None), runtime)
    }

    fn ids(keys: &IssuerKeys) -> Vec<String> {
        keys.current().map(|set| set.ids()).unwrap_or_default()
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_last_good_keys_and_says_why() {
        let fetcher = ScriptedFetcher::new([Answer::keys(&[&es256("a")]), Answer::status(503)]);
        let (keys, _) = keys(&fetcher, "{}");
        keys.refresh().await.unwrap();
        assert!(keys.refresh().await.is_err());
        assert_eq!(ids(&keys), ["a"]);
        let status = keys.status();
        assert_eq!((status.fetches, status.errors), (2, 1));
        assert!(status.last_error.unwrap().contains("503"));
    }

    #[tokio::test]
    async fn an_empty_jwks_is_kept_or_revoked_as_configured() {
        let fetcher = ScriptedFetcher::new([Answer::keys(&[&es256("a")]), Answer::keys(&[])]);
        let (kept, _) = keys(&fetcher, "{}");
        kept.refresh().await.unwrap();
        assert!(kept.refresh().await.is_err());
        assert_eq!(ids(&kept), ["a"]);
        fetcher.answer([Answer::keys(&[&es256("a")]), Answer::keys(&[])]);
        let (revoked, _) = keys(&fetcher, "{ empty_jwks: revoke }");
        revoked.refresh().await.unwrap();
        revoked.refresh().await.unwrap();
        assert!(revoked.current().is_some_and(|set| set.iter().next().is_none()));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_unknown_kids_share_one_fetch_and_the_limit_counts_from_its_end() {
        let fresh = es256("fresh");
        let fetcher = ScriptedFetcher::new([Answer::keys(&[&es256("a")])]);
        let (keys, runtime) = keys(&fetcher, "{ unknown_kid_interval_seconds: 30 }");
        keys.refresh().await.unwrap();
        runtime.clock.advance(31);
        fetcher.answer([Answer::keys(&[&fresh]).after(Duration::from_secs(5))]);
        let waiting: Vec<_> = (0..20)
            .map(|_| {
                let keys = Arc::clone(&keys);
                tokio::spawn(async move { keys.refetch_for_kid("fresh").await })
            })
            .collect();
        for waiter in waiting {
            assert!(!waiter.await.unwrap(), "each waited 100 ms, less than the fetch");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(fetcher.calls(), 2, "one shared refetch");
        assert_eq!(ids(&keys), ["fresh"]);
        // The limit counts from the end of that fetch: 29 s later, no new fetch.
        runtime.clock.advance(29);
        assert!(!keys.refetch_for_kid("other").await);
        assert_eq!(fetcher.calls(), 2);
        runtime.clock.advance(1);
        fetcher.answer([Answer::keys(&[&fresh])]);
        keys.refetch_for_kid("other").await;
        assert_eq!(fetcher.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_refresher_follows_the_ttl_and_backs_off_after_failures() {
        let fetcher = ScriptedFetcher::new([Answer::keys(&[&es256("a")]), Answer::status(500)]);
        let (keys, _) = keys(&fetcher, "{ default_seconds: 600 }");
        keys.start_refresher();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!((fetcher.calls(), ids(&keys)), (1, vec!["a".to_string()]));
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(fetcher.calls(), 2, "the next fetch after the TTL");
        // Failures retry after 1 s, 2 s, 4 s ... (the test runtime's jitter keeps the whole base).
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(fetcher.calls(), 3);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(fetcher.calls(), 4);
        assert_eq!(ids(&keys), ["a"], "the last good keys stay");
    }

    /// Runs the refresher of an issuer whose IdP fails `failures` times and
    /// then answers, and returns the gaps between its fetches.
    async fn retry_gaps(refresh: &str, jitter: Jitter, failures: usize) -> Vec<f64> {
        let mut script = vec![Answer::status(503); failures];
        script.push(Answer::keys(&[&es256("a")]));
        let fetcher = ScriptedFetcher::new(script);
        let (keys, _) = keys_with(&fetcher, refresh, jitter);
        keys.start_refresher();
        tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
        assert_eq!(ids(&keys), ["a"], "recovered by itself");
        fetcher.gaps()
    }

    #[tokio::test(start_paused = true)]
    async fn failed_refreshes_back_off_exponentially_with_jitter_up_to_the_cap() {
        // The whole base (jitter 1): 1 s doubling, capped at five minutes with the default refresh maximum.
        let gaps = retry_gaps("{}", Jitter::fixed(1.0), 12).await;
        assert_eq!(gaps[..12], [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0, 300.0]);
        // A lower refresh maximum is the cap.
        let gaps = retry_gaps("{ min_seconds: 1, max_seconds: 10 }", Jitter::fixed(1.0), 6).await;
        assert_eq!(gaps[..6], [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]);
        // Jitter spreads each wait over [base / 2, base]: replicas with other
        // random draws retry at other moments.
        let gaps = retry_gaps("{}", Jitter::fixed(0.0), 4).await;
        assert_eq!(gaps[..4], [0.5, 1.0, 2.0, 4.0]);
        let draws = std::sync::Mutex::new([0.5, 0.25, 1.0].into_iter().cycle());
        let scripted = Jitter::from_fn(move || draws.lock().unwrap().next().unwrap());
        let gaps = retry_gaps("{}", scripted, 4).await;
        assert_eq!(gaps[..4], [0.75, 1.25, 4.0, 6.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_success_the_schedule_starts_again_at_one_second() {
        let a = es256("a");
        let fetcher = ScriptedFetcher::new([
            Answer::status(503),
            Answer::status(503),
            Answer::status(503),
            Answer::keys(&[&a]),
            Answer::status(503),
            Answer::status(503),
            Answer::keys(&[&a]),
        ]);
        let (keys, _) = keys(&fetcher, "{ default_seconds: 600 }");
        keys.start_refresher();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        // 1 s, 2 s, 4 s, then keys (next fetch after the TTL), then 1 s, 2 s again.
        assert_eq!(fetcher.gaps()[..6], [1.0, 2.0, 4.0, 600.0, 1.0, 2.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_comes_at_least_twice_per_staleness_budget() {
        // The IdP asks for a day (max_seconds allows it); keys go stale after
        // 25 h, so the refresher comes back after 12.5 h, not 24 h.
        let fetcher = ScriptedFetcher::new([Answer::keys(&[&es256("a")])]);
        let (keys, _) = keys(
            &fetcher,
            "{ min_seconds: 86400, max_seconds: 86400, max_stale_seconds: 90000, default_seconds: 86400 }",
        );
        keys.start_refresher();
        tokio::time::sleep(Duration::from_secs(2 * 86400)).await;
        assert_eq!(fetcher.gaps()[..2], [45000.0, 45000.0]);
    }

    #[tokio::test]
    async fn keys_past_max_stale_seconds_are_unusable_until_a_fetch_succeeds() {
        let fetcher = ScriptedFetcher::new([Answer::keys(&[&es256("a")])]);
        let (keys, runtime) = keys(&fetcher, "{ max_stale_seconds: 86400 }");
        assert_eq!(keys.usable().unwrap_err(), KeysUnavailable::NotLoaded("idp".into()));
        keys.refresh().await.unwrap();
        fetcher.answer([Answer::status(503)]);
        runtime.clock.advance(86400);
        assert!(keys.usable().is_ok(), "exactly max_stale_seconds old: still usable");
        assert!(!keys.status().stale);
        assert!(keys.refresh().await.is_err());
        runtime.clock.advance(1);
        let stale = keys.usable().unwrap_err();
        assert_eq!(stale, KeysUnavailable::Stale { issuer: "idp".into(), age_seconds: 86401 });
        assert_eq!(stale.to_string(), "keys of issuer idp are stale (last fetched 86401 s ago)");
        let status = keys.status();
        assert!(status.stale && status.last_error.is_some());
        assert_eq!(status.key_ids, ["a"], "the keys are kept, only not trusted");
        fetcher.answer([Answer::keys(&[&es256("a")])]);
        keys.refresh().await.unwrap();
        assert!(keys.usable().is_ok() && !keys.status().stale);
    }

    #[tokio::test]
    async fn static_keys_never_go_stale() {
        let runtime = runtime(ScriptedFetcher::new([]));
        let refresh = RefreshConfig { max_stale_seconds: Some(86400), ..RefreshConfig::default() };
        let source = KeySource::Secret(b"a-shared-secret-of-at-least-32-bytes".to_vec());
        let initial = source.static_keys().unwrap();
        let keys = IssuerKeys::new("hs", None, source, refresh, runtime.clone(), initial);
        runtime.clock.advance(10 * 86400);
        assert!(keys.usable().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_without_keys_nudges_one_background_fetch() {
        let fetcher = ScriptedFetcher::new([Answer::status(503)]);
        let (keys, _) = keys(&fetcher, "{}");
        keys.nudge();
        keys.nudge();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(fetcher.calls(), 1);
    }
}
