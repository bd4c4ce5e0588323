//! Verified tokens, remembered until they expire, so a busy client costs one
//! signature check per token rather than one per request.
//!
//! The cache knows only tokens: an entry is keyed by the token's digest and the
//! issuer that verified it (the same token can mean different things to two
//! issuers). Whether a remembered verification still holds (key still
//! published, not expired since) is the verifier's call, made on every hit.

use std::sync::Arc;
use std::time::Duration;

use moka::notification::RemovalCause;
use moka::sync::Cache;

use crate::metrics::CacheCounters;
use crate::token::{Clock, RuleAdditions, TokenDigest, VerifiedToken};

/// A token as verified by one issuer (its position in the policy).
pub type CacheKey = (TokenDigest, usize);

pub struct TokenCache {
    cache: Option<Cache<CacheKey, Arc<VerifiedToken>>>,
    budget: CacheBudget,
    /// Process-wide (shared with /metrics), so they survive reloads.
    counters: CacheCounters,
}

/// How much a cache may hold: `entries` entries and about `bytes` bytes
/// (`cache.tokens`, `cache.max_bytes`), whichever binds first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheBudget {
    pub entries: u64,
    pub bytes: u64,
}

/// What the cache itself spends per entry besides the value (its key, hash
/// table slot, eviction and expiry bookkeeping): measured at about 250 bytes.
const ENTRY_OVERHEAD: u64 = 256;

impl CacheBudget {
    /// Whether anything may be cached at all.
    pub fn is_enabled(&self) -> bool {
        self.entries > 0 && self.bytes > 0
    }

    /// moka caps the sum of one weight per entry. Weighing every entry at
    /// least `bytes / entries` (rounded up) caps the count at `entries` and
    /// the estimated bytes at `bytes` at once.
    pub fn weight(&self, estimated_bytes: usize) -> u32 {
        let floor = self.bytes.div_ceil(self.entries.max(1));
        let weight = (estimated_bytes as u64).saturating_add(ENTRY_OVERHEAD).max(floor);
        u32::try_from(weight).unwrap_or(u32::MAX)
    }

    /// A moka builder with this budget's weigher and capacity.
    pub fn builder<K, V>(self, estimate: fn(&V) -> usize) -> moka::sync::CacheBuilder<K, V, Cache<K, V>>
    where
        K: Eq + std::hash::Hash + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        Cache::builder().max_capacity(self.bytes).weigher(move |_, value| self.weight(estimate(value)))
    }
}

/// A figure of `cache` (none: 0) once moka's pending bookkeeping is settled:
/// exact, for status and metrics, not for the hot path.
pub fn settled<K, V>(cache: Option<&Cache<K, V>>, figure: fn(&Cache<K, V>) -> u64) -> u64
where
    K: Eq + std::hash::Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    cache.map_or(0, |cache| {
        cache.run_pending_tasks();
        figure(cache)
    })
}

/// Counters for the admin API and metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheStats {
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
    pub capacity: u64,
}

/// Entries leave memory when their token expires (by the policy's clock).
struct UntilExpiry {
    clock: Clock,
}

impl moka::Expiry<CacheKey, Arc<VerifiedToken>> for UntilExpiry {
    fn expire_after_create(&self, _: &CacheKey, token: &Arc<VerifiedToken>, _: std::time::Instant) -> Option<Duration> {
        // Plain seconds arithmetic, capped: an absurd exp (2^63 and up) overflows
        // neither a SystemTime here nor an Instant inside the cache.
        const LONGEST: u64 = 365 * 24 * 3600;
        Some(Duration::from_secs(token.exp.saturating_sub(self.clock.now()).min(LONGEST)))
    }
}

impl TokenCache {
    /// A budget of 0 entries or 0 bytes disables caching. `additions`: what
    /// the policy's CEL rules may add to a cached token (its claims converted
    /// for CEL, remembered outcomes), which its weight allows for from the start.
    pub fn new(budget: CacheBudget, additions: RuleAdditions, clock: Clock, counters: CacheCounters) -> Self {
        let evictions = counters.evictions.clone();
        let weigh: fn(&Arc<VerifiedToken>) -> usize = match additions {
            RuleAdditions::None => |token| token.footprint(RuleAdditions::None),
            RuleAdditions::CelView => |token| token.footprint(RuleAdditions::CelView),
            RuleAdditions::CelViewAndMemo => |token| token.footprint(RuleAdditions::CelViewAndMemo),
        };
        let cache = budget.is_enabled().then(|| {
            budget
                .builder(weigh)
                .expire_after(UntilExpiry { clock })
                .eviction_listener(move |_, _, cause| {
                    if cause == RemovalCause::Size {
                        evictions.inc();
                    }
                })
                .build()
        });
        TokenCache { cache, budget, counters }
    }

    pub fn get(&self, key: &CacheKey) -> Option<Arc<VerifiedToken>> {
        let found = self.cache.as_ref()?.get(key);
        let counter = if found.is_some() { &self.counters.hits } else { &self.counters.misses };
        counter.inc();
        found
    }

    pub fn insert(&self, key: CacheKey, token: Arc<VerifiedToken>) {
        if let Some(cache) = &self.cache {
            cache.insert(key, token);
        }
    }

    pub fn remove(&self, key: &CacheKey) {
        if let Some(cache) = &self.cache {
            cache.invalidate(key);
        }
    }

    /// Drops the entries of `issuer` whose signing key `still_published` says
    /// is gone (after a refresh removed keys). Lookups re-check too; this frees the memory.
    pub fn purge(&self, issuer: usize, still_published: impl Fn(&str) -> bool) {
        let Some(cache) = &self.cache else { return };
        let gone: Vec<CacheKey> = cache
            .iter()
            .filter(|(_, token)| token.issuer == issuer && !still_published(&token.key_id))
            .map(|(key, _)| *key)
            .collect();
        for key in &gone {
            cache.invalidate(key);
        }
    }

    pub fn capacity(&self) -> u64 {
        self.budget.entries
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.entry_count(),
            hits: self.counters.hits.get(),
            misses: self.counters.misses.get(),
            capacity: self.budget.entries,
        }
    }

    /// Estimated bytes held, as weighed against `cache.max_bytes`.
    pub fn weighted_bytes(&self) -> u64 {
        settled(self.cache.as_ref(), Cache::weighted_size)
    }

    /// Exact count.
    pub fn entry_count(&self) -> u64 {
        settled(self.cache.as_ref(), Cache::entry_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(entries: u64) -> CacheBudget {
        CacheBudget { entries, bytes: 1 << 30 }
    }

    fn token(issuer: usize, key_id: &str, exp: u64) -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken::new(issuer, key_id.into(), exp, Default::default()))
    }

    #[test]
    fn entries_are_per_issuer_and_counted() {
        let cache = TokenCache::new(entries(10), RuleAdditions::None, Clock::fixed(1_000), CacheCounters::default());
        let digest = crate::token::digest("t");
        cache.insert((digest, 0), token(0, "k", 2_000));
        assert!(cache.get(&(digest, 0)).is_some());
        assert!(cache.get(&(digest, 1)).is_none(), "another issuer's verification is not shared");
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.hits, stats.misses), (1, 1, 1));
    }

    #[test]
    fn purge_drops_tokens_of_removed_keys_for_that_issuer_only() {
        let cache = TokenCache::new(entries(10), RuleAdditions::None, Clock::fixed(1_000), CacheCounters::default());
        let (a, b) = (crate::token::digest("a"), crate::token::digest("b"));
        cache.insert((a, 0), token(0, "old", 2_000));
        cache.insert((b, 0), token(0, "new", 2_000));
        cache.insert((a, 1), token(1, "old", 2_000));
        cache.purge(0, |id| id == "new");
        assert!(cache.get(&(a, 0)).is_none());
        assert!(cache.get(&(b, 0)).is_some());
        assert!(cache.get(&(a, 1)).is_some());
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let cache = TokenCache::new(entries(0), RuleAdditions::None, Clock::system(), CacheCounters::default());
        let key = (crate::token::digest("t"), 0);
        cache.insert(key, token(0, "k", u64::MAX));
        assert!(cache.get(&key).is_none());
        assert_eq!(cache.entry_count(), 0);
    }

    #[test]
    fn an_entry_lives_until_its_token_expires_by_the_clock() {
        let clock = Clock::fixed(1_000);
        let cache = TokenCache::new(entries(10), RuleAdditions::None, clock, CacheCounters::default());
        let key = (crate::token::digest("t"), 0);
        cache.insert(key, token(0, "k", 1_000));
        assert!(cache.get(&key).is_none(), "expiring now: not kept");
        cache.insert(key, token(0, "k", u64::MAX));
        assert!(cache.get(&key).is_some(), "an absurd exp is capped, not an overflow");
    }

    fn claims_of(bytes: usize) -> serde_json::Map<String, serde_json::Value> {
        serde_json::json!({ "sub": "x".repeat(bytes) }).as_object().cloned().expect("an object")
    }

    #[test]
    fn the_byte_budget_bounds_large_tokens_and_the_entry_budget_small_ones() {
        let budget = CacheBudget { entries: 1_000, bytes: 100_000 };
        let cache = TokenCache::new(budget, RuleAdditions::None, Clock::fixed(1_000), CacheCounters::default());
        for n in 0..200 {
            let large = VerifiedToken::new(0, "k".into(), 2_000, claims_of(4_000));
            cache.insert((crate::token::digest(&n.to_string()), 0), Arc::new(large));
        }
        let count = cache.entry_count();
        assert!(count > 0 && count <= 100_000 / 4_000, "about 4 KiB each within 100 KB: {count}");

        let cache = TokenCache::new(entries(10), RuleAdditions::None, Clock::fixed(1_000), CacheCounters::default());
        for n in 0..200 {
            cache.insert((crate::token::digest(&n.to_string()), 0), token(0, "k", 2_000));
        }
        assert!(cache.entry_count() <= 10, "{}", cache.entry_count());
    }

    #[test]
    fn every_entry_weighs_at_least_its_share_of_the_bytes() {
        let budget = CacheBudget { entries: 100, bytes: 1_000_000 };
        assert_eq!(budget.weight(0), 10_000);
        assert_eq!(budget.weight(50_000), 50_000 + ENTRY_OVERHEAD as u32);
        assert_eq!(CacheBudget { entries: 3, bytes: 10 }.weight(0), ENTRY_OVERHEAD as u32);
        assert_eq!(budget.weight(usize::MAX), u32::MAX);
        assert!(
            !CacheBudget { entries: 0, bytes: 1 }.is_enabled() && !CacheBudget { entries: 1, bytes: 0 }.is_enabled()
        );
    }
}
