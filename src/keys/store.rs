//! The live key set of one issuer and the two ways it changes: a background
//! refresher paced by the IdP's cache headers, and an on-demand refetch when a
//! token names an unknown `kid` (single-flight, at most once per interval, so a
//! flood of random kids cannot turn portcullis into a load generator against the IdP).
//! A failed fetch never discards the last good keys.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::KeySet;
use super::fetch::{FetchError, Fetcher};
use crate::config::RefreshConfig;

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS URL, or `None` for OIDC discovery from the issuer URL.
    Jwks(Option<String>),
    /// An HS* shared secret.
    Secret(Vec<u8>),
    /// One public key given as PEM (validated by the config loader).
    PublicKey { kind: super::KeyKind, pem: String },
}

/// What operators see about an issuer's keys.
#[derive(Debug, Clone, Default)]
pub struct KeyStatus {
    pub key_ids: Vec<String>,
    pub last_refresh: Option<SystemTime>,
    pub last_error: Option<String>,
    pub jwks_uri: Option<String>,
    pub fetches: u64,
    pub errors: u64,
}

const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

pub struct IssuerKeys {
    pub name: String,
    /// The issuer URL (discovery base); `None` for issuers that check no `iss`.
    pub issuer: Option<String>,
    source: KeySource,
    refresh: RefreshConfig,
    fetcher: Fetcher,
    current: RwLock<Option<Arc<KeySet>>>,
    status: Mutex<KeyStatus>,
    last_attempt: Mutex<Option<Instant>>,
    refetch: tokio::sync::Mutex<()>,
    changed: watch::Sender<u64>,
    refresher: Mutex<Option<JoinHandle<()>>>,
}

impl IssuerKeys {
    pub fn new(
        name: &str,
        issuer: Option<&str>,
        source: KeySource,
        refresh: RefreshConfig,
        fetcher: Fetcher,
        changed: watch::Sender<u64>,
    ) -> Arc<Self> {
        let keys = Arc::new(IssuerKeys {
            name: name.to_string(),
            issuer: issuer.map(str::to_string),
            source,
            refresh,
            fetcher,
            current: RwLock::new(None),
            status: Mutex::new(KeyStatus::default()),
            last_attempt: Mutex::new(None),
            refetch: tokio::sync::Mutex::new(()),
            changed,
            refresher: Mutex::new(None),
        });
        match &keys.source {
            KeySource::Secret(secret) => keys.install(KeySet::from_secret(secret), None),
            KeySource::PublicKey { kind, pem } => match KeySet::from_public_pem(*kind, pem) {
                Ok(set) => keys.install(set, None),
                Err(err) => keys.status.lock().expect("status lock poisoned").last_error = Some(err),
            },
            KeySource::Jwks(_) => {}
        }
        keys
    }

    /// Whether these keys come from exactly this source and issuer with these
    /// timings: a reload keeps such keys (no refetch, no readiness flap).
    pub fn serves(&self, issuer: Option<&str>, source: &KeySource, refresh: &RefreshConfig) -> bool {
        self.issuer.as_deref() == issuer && &self.source == source && &self.refresh == refresh
    }

    /// The keys as of now; `None` until the first successful fetch.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current.read().expect("key lock poisoned").clone()
    }

    pub fn status(&self) -> KeyStatus {
        self.status.lock().expect("status lock poisoned").clone()
    }

    fn fetches_remote(&self) -> bool {
        matches!(self.source, KeySource::Jwks(_))
    }

    /// Fetches now, ignoring rate limits (startup, background timer, admin).
    /// Returns how long the new keys stay fresh.
    pub async fn refresh(&self) -> Result<Duration, FetchError> {
        let KeySource::Jwks(jwks_uri) = &self.source else {
            return Ok(self.refresh.max_duration());
        };
        *self.last_attempt.lock().expect("attempt lock poisoned") = Some(Instant::now());
        match self.fetcher.fetch(self.issuer.as_deref().unwrap_or_default(), jwks_uri.as_deref(), &self.refresh).await {
            Ok(fetched) => {
                for why in &fetched.keys.skipped {
                    tracing::warn!(issuer = %self.name, "skipped JWKS entry: {why}");
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
            status.last_refresh = Some(SystemTime::now());
            status.last_error = None;
            status.fetches += u64::from(jwks_uri.is_some());
            status.jwks_uri = jwks_uri;
        }
        *self.current.write().expect("key lock poisoned") = Some(Arc::new(keys));
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// A token named `kid`, which the current set lacks: refetch once if the
    /// rate limit allows, sharing one fetch among concurrent callers.
    /// Returns whether `kid` is known afterwards.
    pub async fn refetch_for_kid(self: &Arc<Self>, kid: &str) -> bool {
        if !self.fetches_remote() {
            return false;
        }
        let _single_flight = self.refetch.lock().await;
        if self.knows(kid) {
            return true;
        }
        if !self.rate_limit_allows() {
            return false;
        }
        // Run the fetch in its own task so it completes (and benefits later
        // requests) even if this Check is cancelled by Envoy's timeout.
        let this = Arc::clone(self);
        let _ = tokio::spawn(async move { this.refresh().await }).await;
        self.knows(kid)
    }

    /// No keys at all yet: ask for a fetch without making the Check wait.
    pub fn nudge(self: &Arc<Self>) {
        if !self.fetches_remote() || !self.rate_limit_allows() {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let Ok(_single_flight) = this.refetch.try_lock() else {
                return;
            };
            if this.current().is_none() && this.rate_limit_allows() {
                let _ = this.refresh().await;
            }
        });
    }

    fn knows(&self, kid: &str) -> bool {
        self.current().is_some_and(|keys| keys.by_kid(kid).is_some())
    }

    fn rate_limit_allows(&self) -> bool {
        let interval = Duration::from_secs(self.refresh.unknown_kid_interval_seconds);
        match *self.last_attempt.lock().expect("attempt lock poisoned") {
            Some(at) => at.elapsed() >= interval,
            None => true,
        }
    }

    /// Starts keeping the keys fresh (once; later calls do nothing). The first
    /// fetch happens at once; failures retry with backoff while the last good
    /// keys stay. The task ends when the last policy using these keys is gone.
    pub fn start_refresher(self: &Arc<Self>) {
        if !self.fetches_remote() {
            return;
        }
        let mut slot = self.refresher.lock().expect("refresher lock poisoned");
        if slot.is_some() {
            return;
        }
        let weak = Arc::downgrade(self);
        *slot = Some(tokio::spawn(async move {
            let mut retry = FIRST_RETRY;
            loop {
                let Some(keys) = weak.upgrade() else { return };
                let wait = match keys.refresh().await {
                    Ok(ttl) => {
                        retry = FIRST_RETRY;
                        ttl
                    }
                    Err(_) => {
                        let wait = retry;
                        retry = (retry * 2).min(MAX_RETRY);
                        wait
                    }
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

impl RefreshConfig {
    fn max_duration(&self) -> Duration {
        Duration::from_secs(self.max_seconds)
    }
}
