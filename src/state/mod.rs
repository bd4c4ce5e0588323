//! Shared state behind one small interface: "have I seen this event id?" and
//! "publish this revocation". [`memory`] keeps both in this process (one
//! replica, nothing to run); [`redis`] keeps them in Redis, so a replay reaching
//! another replica is recognised and a revocation reaches every replica. Either
//! way each replica holds the revocation set in memory ([`Revocations`]), so a
//! Check never waits for the store; only webhook deliveries and admin calls do.

pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::{OnStale, Problem, StateConfig, StateName};
use crate::revocation::{Change, Revocations};
use crate::token::Clock;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the store could not answer: the caller answers 503, never a 2xx for an
/// event that was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the shared state did not answer within {0} ms")]
    Timeout(u64),
    #[error("the shared state is unavailable: {0}")]
    Unavailable(String),
}

/// Where first-seen ids and revocations are kept.
pub trait Store: Send + Sync {
    /// Records event `key` for `ttl` and, only if it was not recorded before,
    /// `changes`, in one step: `true` for the first delivery of an event (whose
    /// changes every replica then applies), `false` for a replay (nothing
    /// applied). Exactly one of any number of concurrent calls is first.
    fn record_event<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
        changes: &'a [Change],
    ) -> BoxFuture<'a, Result<bool, StateError>>;
    /// Records `change` so every replica applies it (this one at once).
    fn publish<'a>(&'a self, change: &'a Change) -> BoxFuture<'a, Result<(), StateError>>;
    /// Which store it is, for logs and readiness.
    fn kind(&self) -> &'static str;
}

/// The compiled `state` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSettings {
    Memory,
    Redis(redis::RedisSettings),
}

impl StateSettings {
    pub fn max_stale_seconds(&self) -> u64 {
        match self {
            StateSettings::Memory => 0,
            StateSettings::Redis(settings) => settings.max_stale_seconds,
        }
    }

    pub fn on_stale(&self) -> OnStale {
        match self {
            StateSettings::Memory => OnStale::Deny,
            StateSettings::Redis(settings) => settings.on_stale,
        }
    }
}

/// Compiles `state`; problems are relative to the section.
pub fn compile(config: &StateConfig) -> Result<StateSettings, Vec<Problem>> {
    match config {
        StateConfig::Named(StateName::Memory) => Ok(StateSettings::Memory),
        StateConfig::Redis(redis) => redis::RedisSettings::compile(redis).map(StateSettings::Redis),
    }
}

/// What outlives every policy: the revocation set of this process and the
/// store, connected once when the service starts (a reload that changes
/// `state` warns that it needs a restart).
pub struct Shared {
    pub revocations: Arc<Revocations>,
    store: OnceLock<Arc<dyn Store>>,
    /// The settings the store was connected with.
    connected: OnceLock<StateSettings>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("revocations", &self.revocations.len()).finish_non_exhaustive()
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared { revocations: Arc::new(Revocations::local()), store: OnceLock::new(), connected: OnceLock::new() }
    }
}

impl Shared {
    /// The store; a process-local one until [`Shared::connect`] (tests, `token verify`).
    pub fn store(&self, clock: &Clock, metrics: &Arc<crate::metrics::Metrics>) -> Arc<dyn Store> {
        Arc::clone(self.store.get_or_init(|| {
            let revocations = Arc::clone(&self.revocations);
            Arc::new(memory::MemoryStore::new(revocations, clock.clone(), Arc::clone(metrics))) as Arc<dyn Store>
        }))
    }

    /// Connects the store `settings` describe (once; later calls keep the first).
    /// A Redis store starts its reader task; until it has read the set the
    /// service is not ready.
    pub fn connect(&self, settings: &StateSettings, clock: &Clock, metrics: &Arc<crate::metrics::Metrics>) {
        if self.connected.set(settings.clone()).is_err() {
            return;
        }
        match settings {
            StateSettings::Memory => {
                self.store(clock, metrics);
            }
            StateSettings::Redis(redis) => {
                self.revocations.set_staleness(redis.max_stale_seconds, redis.on_stale);
                self.revocations.mark_unsynced();
                let store = redis::RedisStore::start(
                    redis.clone(),
                    Arc::clone(&self.revocations),
                    clock.clone(),
                    Arc::clone(metrics),
                );
                let _ = self.store.set(Arc::new(store));
            }
        }
    }

    /// The settings the running store was connected with, if any.
    pub fn connected(&self) -> Option<&StateSettings> {
        self.connected.get()
    }

    /// Ready unless a shared store has never been read or its set went stale with `on_stale: deny`.
    pub fn is_ready(&self, now: u64) -> bool {
        self.revocations.freshness(now) == crate::revocation::Freshness::Current
            || self.revocations.ever_synced() && self.connected().is_some_and(|s| s.on_stale() == OnStale::Allow)
    }
}
