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
        return Ok(Vouched { token: hit, issuer: first });
    }
    let parsed = Parsed::new(token)?;
    let mut first_failure = None;
    for &issuer in candidates.iter().filter(|issuer| parsed.names(issuer)) {
        let looked_up = first.is_some_and(|first| Arc::ptr_eq(first, issuer));
        if !looked_up && let Some(hit) = lookup(cache, clock, digest, issuer) {
            return Ok(Vouched { token: hit, issuer });
        }
        match verify(token, &parsed, issuer, clock).await {
            Ok(verified) => {
                let verified = Arc::new(verified);
                cache.insert((*digest, issuer.id), Arc::clone(&verified));
                return Ok(Vouched { token: verified, issuer });
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
