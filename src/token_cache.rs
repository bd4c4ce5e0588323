//! Verified tokens, remembered until they expire, so a busy client costs one
//! signature check per token rather than one per request.
//!
//! Keyed by the SHA-256 of the token and the issuer that verified it (a collision would need a SHA-256 break,
//! unlike a fast hash an attacker could aim at). A hit is re-checked against the
//! live key set, so a token signed by a key that has left the JWKS stops
//! working at once, and against the route's issuers and the clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;

use crate::keys::KeySet;
use crate::verify::VerifiedToken;

pub type TokenDigest = [u8; 32];

/// A token as verified by one issuer (its position in the policy): the same
/// token can mean different things to two issuers (Hasura claims, Supabase provider).
pub type CacheKey = (TokenDigest, usize);

pub fn digest(token: &str) -> TokenDigest {
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    hash.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// A short, non-reversible label for logs: never log the token itself.
pub fn fingerprint(digest: &TokenDigest) -> String {
    digest[..6].iter().map(|byte| format!("{byte:02x}")).collect()
}

pub struct TokenCache {
    cache: Option<Cache<CacheKey, Arc<VerifiedToken>>>,
    capacity: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Counters for the admin API.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheStats {
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
    pub capacity: u64,
}

struct UntilExpiry;

impl moka::Expiry<CacheKey, Arc<VerifiedToken>> for UntilExpiry {
    fn expire_after_create(&self, _: &CacheKey, token: &Arc<VerifiedToken>, _: std::time::Instant) -> Option<Duration> {
        // Plain seconds arithmetic, capped: an absurd exp (2^63 and up) overflows
        // neither a SystemTime here nor an Instant inside the cache.
        const LONGEST: u64 = 365 * 24 * 3600;
        Some(Duration::from_secs(token.exp.saturating_sub(crate::verify::now_seconds()).min(LONGEST)))
    }
}

impl TokenCache {
    /// `capacity` 0 disables caching.
    pub fn new(capacity: u64) -> Self {
        let cache = (capacity > 0).then(|| Cache::builder().max_capacity(capacity).expire_after(UntilExpiry).build());
        TokenCache { cache, capacity, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    pub fn get(&self, key: &CacheKey) -> Option<Arc<VerifiedToken>> {
        let found = self.cache.as_ref()?.get(key);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Drops `issuer`'s entries whose signing key is no longer in `keys`
    /// (after a refresh removed keys). Lookups re-check too; this frees the memory.
    pub fn purge_removed_keys(&self, issuer: &str, keys: &KeySet) {
        let Some(cache) = &self.cache else { return };
        let gone: Vec<CacheKey> = cache
            .iter()
            .filter(|(_, token)| &*token.issuer == issuer && !keys.contains_id(&token.key_id))
            .map(|(key, _)| *key)
            .collect();
        for key in &gone {
            cache.invalidate(key);
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.entry_count(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            capacity: self.capacity,
        }
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

    /// Exact count (settles moka's pending bookkeeping first; for status, not the hot path).
    pub fn entry_count(&self) -> u64 {
        self.cache.as_ref().map_or(0, |cache| {
            cache.run_pending_tasks();
            cache.entry_count()
        })
    }
}
