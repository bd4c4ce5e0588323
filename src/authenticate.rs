//! Which issuer vouches for this token? Like the authenticator of Envoy's
//! jwt_authn filter: cache lookup -> verify -> insert, over the route's
//! candidate issuers in route order, so a remembered answer is always the one
//! a fresh check would give (the first issuer that accepts the token).

use std::sync::Arc;

use crate::issuer::Issuer;
use crate::token::{Clock, TokenDigest, VerifiedToken};
use crate::token_cache::TokenCache;
use crate::verify::{Parsed, VerifyFailure, still_valid, verify};

/// A verified token and the issuer that vouched for it.
pub struct Vouched<'p> {
    pub token: Arc<VerifiedToken>,
    pub issuer: &'p Arc<Issuer>,
    /// The verification was remembered, not done now.
    pub cache_hit: bool,
}

/// The first of `candidates` (in order) that accepts `token`.
pub async fn vouch<'p>(
    cache: &TokenCache,
    clock: &Clock,
    token: &str,
    digest: &TokenDigest,
    candidates: &[&'p Arc<Issuer>],
) -> Result<Vouched<'p>, VerifyFailure> {
    // The common case: the route's first issuer verified this token before.
    let first = candidates.first().copied();
    if let Some(first) = first
        && let Some(hit) = lookup(cache, clock, digest, first)
    {
        return Ok(Vouched { token: hit, issuer: first, cache_hit: true });
    }
    let parsed = Parsed::new(token)?;
    let mut first_failure = None;
    for &issuer in candidates.iter().filter(|issuer| parsed.names(issuer)) {
        let looked_up = first.is_some_and(|first| Arc::ptr_eq(first, issuer));
        if !looked_up && let Some(hit) = lookup(cache, clock, digest, issuer) {
            return Ok(Vouched { token: hit, issuer, cache_hit: true });
        }
        match verify(token, &parsed, issuer, clock).await {
            Ok(verified) => {
                let verified = Arc::new(verified);
                cache.insert((*digest, issuer.id), Arc::clone(&verified));
                return Ok(Vouched { token: verified, issuer, cache_hit: false });
            }
            Err(failure) => {
                first_failure.get_or_insert(failure);
            }
        }
    }
    Err(first_failure.unwrap_or_else(|| parsed.untrusted().into()))
}

/// `issuer`'s remembered verification of the token, if it still holds.
fn lookup(cache: &TokenCache, clock: &Clock, digest: &TokenDigest, issuer: &Issuer) -> Option<Arc<VerifiedToken>> {
    let key = (*digest, issuer.id);
    let hit = cache.get(&key)?;
    if still_valid(&hit, issuer, clock) {
        return Some(hit);
    }
    // Expired, or its key left the key set: verify from scratch.
    cache.remove(&key);
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyRuntime;
    use crate::testing::{Answer, NOW, ScriptedFetcher, claims, es256, issuer_with_id, runtime};
    use crate::token::digest;
    use crate::token_cache::CacheBudget;
    use crate::verify::TokenError;

    const ISS: &str = "https://idp.test";

    fn cache(runtime: &KeyRuntime) -> TokenCache {
        TokenCache::new(
            CacheBudget { entries: 100, bytes: 1 << 30 },
            Default::default(),
            runtime.clock.clone(),
            Default::default(),
        )
    }

    #[tokio::test]
    async fn lookup_then_verify_then_insert_in_route_order() {
        let key = es256("k");
        let fetcher = ScriptedFetcher::new([Answer::keys(&[&key])]);
        let runtime = runtime(fetcher);
        let jwks = format!("{{ issuer: '{ISS}', jwks_uri: 'https://idp.test/jwks' }}");
        let a = issuer_with_id(0, "a", &jwks, &runtime);
        let b = issuer_with_id(1, "b", &jwks, &runtime);
        let other = issuer_with_id(
            2,
            "other",
            "{ issuer: 'https://other.test', jwks_uri: 'https://other.test/jwks' }",
            &runtime,
        );
        for issuer in [&a, &b] {
            issuer.keys.refresh().await.unwrap();
        }
        let cache = cache(&runtime);
        let token = key.sign(&claims(ISS, "x", 60));
        let digest = digest(&token);

        // An a-only route verifies and remembers the token for a.
        let vouched = vouch(&cache, &runtime.clock, &token, &digest, &[&a]).await.unwrap();
        assert_eq!(vouched.issuer.id, 0);
        assert!(cache.get(&(digest, 0)).is_some() && cache.get(&(digest, 1)).is_none());
        // On a [b, a] route b comes first, whatever a remembered.
        let vouched = vouch(&cache, &runtime.clock, &token, &digest, &[&b, &a]).await.unwrap();
        assert_eq!(vouched.issuer.id, 1);
        // Issuers whose iss differs are skipped; none left is an untrusted issuer.
        let untrusted = vouch(&cache, &runtime.clock, &token, &digest, &[&other]).await.err().unwrap();
        assert_eq!(untrusted, VerifyFailure::Invalid(TokenError::UntrustedIssuer(ISS.into())));
        let vouched = vouch(&cache, &runtime.clock, &token, &digest, &[&other, &a]).await.unwrap();
        assert_eq!(vouched.issuer.id, 0);
    }

    #[tokio::test]
    async fn an_expired_remembered_token_is_verified_again_and_refused() {
        let key = es256("k");
        let runtime = runtime(ScriptedFetcher::new([Answer::keys(&[&key])]));
        let idp = issuer_with_id(
            0,
            "idp",
            &format!("{{ issuer: '{ISS}', jwks_uri: 'https://idp.test/jwks', leeway_seconds: 0 }}"),
            &runtime,
        );
        idp.keys.refresh().await.unwrap();
        let cache = cache(&runtime);
        let token = key.sign(&claims(ISS, "x", 60));
        let digest = digest(&token);
        assert!(vouch(&cache, &runtime.clock, &token, &digest, &[&idp]).await.is_ok());
        runtime.clock.advance(61);
        let expired = vouch(&cache, &runtime.clock, &token, &digest, &[&idp]).await.err().unwrap();
        assert_eq!(expired, VerifyFailure::Invalid(TokenError::Expired));
        assert_eq!(runtime.clock.now(), NOW + 61);
        assert!(cache.get(&(digest, 0)).is_none(), "the stale entry is gone");
    }
}
