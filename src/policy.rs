//! Everything one version of the config decides: issuers with their keys,
//! routes, and the verified-token cache. A policy is immutable once built;
//! a reload builds a new one and swaps it whole.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use std::collections::BTreeMap;

use crate::backend::Backend;
use crate::backend::hasura::HasuraBackend;
use crate::backend::supabase::SupabaseBackend;
use crate::config::{Action, BackendConfig, Config, LimitsConfig, Problem};
use crate::issuer::Issuer;
use crate::keys::{Fetcher, IssuerKeys};
use crate::route::{Route, Router};
use crate::token_cache::TokenCache;

pub struct Policy {
    pub generation: u64,
    pub issuers: Vec<Arc<Issuer>>,
    pub router: Router,
    pub backends: BTreeMap<String, Backend>,
    pub cache: TokenCache,
    /// How much of each request is read (a larger one is a 431).
    pub limits: LimitsConfig,
}

impl Policy {
    /// Compiles a validated config. Keys are not fetched until [`Policy::start`].
    pub fn new(config: &Config, fetcher: &Fetcher, keys_changed: &watch::Sender<u64>, generation: u64) -> Self {
        Self::succeeding(None, config, fetcher, keys_changed, generation)
    }

    /// Like [`Policy::new`], keeping the live keys of `previous`'s issuers whose
    /// name and key source did not change.
    pub fn succeeding(
        previous: Option<&Policy>,
        config: &Config,
        fetcher: &Fetcher,
        keys_changed: &watch::Sender<u64>,
        generation: u64,
    ) -> Self {
        let issuers: Vec<Arc<Issuer>> = config
            .issuers
            .iter()
            .enumerate()
            .map(|(id, (name, issuer))| {
                let old = previous.and_then(|policy| policy.issuer(name)).map(Arc::as_ref);
                Arc::new(Issuer::new(id, name, issuer, fetcher, keys_changed, old))
            })
            .collect();
        let names: Vec<String> = config.issuers.iter().map(|(name, _)| name.clone()).collect();
        let routes =
            config.routes.iter().enumerate().map(|(index, route)| Route::compile(index, route, &names)).collect();
        let backends = config
            .backends
            .iter()
            .map(|(name, backend)| {
                let compiled = match backend {
                    BackendConfig::Hasura { config, claims } => {
                        Backend::Hasura(HasuraBackend::new(config, claims.clone()))
                    }
                    BackendConfig::Supabase(supabase) => {
                        Backend::Supabase(SupabaseBackend::new(supabase, config.cache.tokens))
                    }
                };
                (name.clone(), compiled)
            })
            .collect();
        Policy {
            generation,
            issuers,
            backends,
            router: Router::new(routes),
            cache: TokenCache::new(config.cache.tokens),
            limits: config.limits.clone(),
        }
    }

    /// Starts the background key refreshers (the first fetch happens at once).
    pub fn start(&self) {
        for issuer in &self.issuers {
            issuer.keys.start_refresher();
        }
    }

    /// Issuers that some authenticating route relies on.
    pub fn issuers_in_use(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.issuers.iter().enumerate().filter_map(|(index, issuer)| {
            let used = self
                .router
                .routes()
                .iter()
                .any(|route| route.action == Action::Authenticate && route.issuers.contains(&index));
            used.then_some(issuer)
        })
    }

    /// SERVING once every issuer in use has keys (SPEC section 8).
    pub fn is_ready(&self) -> bool {
        self.issuers_in_use().all(|issuer| issuer.keys.current().is_some())
    }

    /// The backend a route names (validated to exist).
    pub fn backend_of(&self, route: &Route) -> Option<&Backend> {
        route.backend.as_ref().and_then(|name| self.backends.get(name))
    }

    pub fn issuer(&self, name: &str) -> Option<&Arc<Issuer>> {
        self.issuers.iter().find(|issuer| &*issuer.name == name)
    }

    /// Fetches keys, concurrently and each within a bound, for issuers that have
    /// none and are not carried over from `previous` (whose issuers keep their
    /// state, keys or not). Every failure is a problem with its YAML path.
    pub async fn fetch_missing_keys(&self, previous: Option<&Policy>) -> Vec<Problem> {
        const BOUND: Duration = Duration::from_secs(10);
        let carried = |keys: &Arc<IssuerKeys>| {
            previous.is_some_and(|old| old.issuers.iter().any(|was| Arc::ptr_eq(&was.keys, keys)))
        };
        let pending: Vec<_> =
            self.issuers.iter().filter(|issuer| !carried(&issuer.keys) && issuer.keys.current().is_none()).collect();
        let tasks: Vec<_> = pending
            .iter()
            .map(|issuer| {
                let keys = Arc::clone(&issuer.keys);
                tokio::spawn(async move {
                    match tokio::time::timeout(BOUND, keys.refresh()).await {
                        Ok(Ok(_)) => None,
                        Ok(Err(err)) => Some(err.to_string()),
                        Err(_) => Some(format!("no answer within {}s", BOUND.as_secs())),
                    }
                })
            })
            .collect();
        let mut problems = Vec::new();
        for (issuer, task) in pending.iter().zip(tasks) {
            if let Some(why) = task.await.unwrap_or_else(|join| Some(join.to_string())) {
                problems.push(Problem {
                    path: format!("issuers.{}", issuer.name),
                    message: format!("first key fetch failed: {why}"),
                });
            }
        }
        problems
    }
}
