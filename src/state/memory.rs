//! `state: memory`: first-seen ids and revocations in this process only. Right
//! for one replica; with several, each would accept a replay the others saw
//! and enforce only its own revocations (use `state: { redis: ... }`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{BoxFuture, StateError, Store};
use crate::metrics::Metrics;
use crate::revocation::{Change, Revocations};
use crate::token::Clock;

/// Past this many remembered ids, expired ones are dropped before the next is added.
const PURGE_AT: usize = 10_000;

pub struct MemoryStore {
    revocations: Arc<Revocations>,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// Event key -> when it may be forgotten (seconds on `clock`).
    seen: Mutex<HashMap<String, u64>>,
}

impl MemoryStore {
    pub fn new(revocations: Arc<Revocations>, clock: Clock, metrics: Arc<Metrics>) -> Self {
        MemoryStore { revocations, clock, metrics, seen: Mutex::default() }
    }

    fn apply(&self, change: &Change) {
        self.revocations.apply(change);
        self.metrics.record_revocation_applied(change);
    }

    fn record(&self, key: &str, ttl: Duration) -> bool {
        let now = self.clock.now();
        let mut seen = self.seen.lock().expect("seen lock poisoned");
        if seen.len() >= PURGE_AT {
            seen.retain(|_, until| *until > now);
        }
        match seen.get(key) {
            Some(until) if *until > now => false,
            _ => {
                seen.insert(key.to_string(), now.saturating_add(ttl.as_secs().max(1)));
                true
            }
        }
    }
}

impl Store for MemoryStore {
    fn record_event<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
        changes: &'a [Change],
    ) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            let first = self.record(key, ttl);
            if first && !changes.is_empty() {
                changes.iter().for_each(|change| self.apply(change));
                self.revocations.purge_expired(self.clock.now());
            }
            Ok(first)
        })
    }

    fn publish<'a>(&'a self, change: &'a Change) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            self.apply(change);
            self.revocations.purge_expired(self.clock.now());
            Ok(())
        })
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_id_is_first_seen_once_until_it_expires() {
        let clock = Clock::fixed(1_000);
        let store = MemoryStore::new(Arc::new(Revocations::local()), clock.clone(), Arc::default());
        let ttl = Duration::from_secs(60);
        let revoke = [Change::RevokeToken { issuer: "idp".into(), jti: "j".into(), expires: 5_000 }];
        assert!(store.record_event("a", ttl, &revoke).await.unwrap());
        assert_eq!(store.revocations.len(), 1);
        store.revocations.apply(&Change::UnrevokeToken { issuer: "idp".into(), jti: "j".into() });
        assert!(!store.record_event("a", ttl, &revoke).await.unwrap());
        assert!(store.revocations.is_empty(), "a replay applies nothing");
        assert!(store.record_event("b", ttl, &[]).await.unwrap());
        clock.advance(61);
        assert!(store.record_event("a", ttl, &[]).await.unwrap(), "forgotten after its ttl");
    }
}
