//! Minting Supabase-shaped tokens: GoTrue's claim set, integer times, signed
//! with the project's key (HS256 secret, or an imported ES256/RS256 key with its
//! `kid`). The same IdP token keeps getting the same minted token until shortly
//! before it expires, so PostgREST's own JWT cache stays effective.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use moka::sync::Cache;
use serde_json::{Map, Value, json};

use crate::footprint;
use crate::metrics::MintCounters;
use crate::token::{Clock, TokenDigest};
use crate::token_cache::{self, CacheBudget, CacheKey};

/// A key that signs minted tokens.
#[derive(Clone)]
pub struct Signer {
    algorithm: Algorithm,
    key: EncodingKey,
    kid: Option<String>,
}

/// HS* secrets shorter than this are refused (PostgREST v13+ refuses them too).
pub const MIN_SECRET_BYTES: usize = 32;

impl Signer {
    /// `signing_key` is a PEM private key (ES256 P-256 or RS256) or an HS256 secret.
    pub fn new(signing_key: &str, kid: Option<&str>) -> Result<Self, String> {
        let trimmed = signing_key.trim();
        let (algorithm, key) = if trimmed.starts_with("-----BEGIN") {
            if kid.is_none() {
                return Err("signing_kid is required with a PEM key (the kid Supabase knows the key by)".into());
            }
            match EncodingKey::from_ec_pem(trimmed.as_bytes()) {
                Ok(key) => (Algorithm::ES256, key),
                Err(_) => EncodingKey::from_rsa_pem(trimmed.as_bytes())
                    .map(|key| (Algorithm::RS256, key))
                    .map_err(|err| format!("not an ES256 (P-256) or RS256 private key in PEM: {err}"))?,
            }
        } else {
            if signing_key.len() < MIN_SECRET_BYTES {
                return Err(format!("an HS256 secret must be at least {MIN_SECRET_BYTES} bytes"));
            }
            (Algorithm::HS256, EncodingKey::from_secret(signing_key.as_bytes()))
        };
        let signer = Signer { algorithm, key, kid: kid.map(str::to_string) };
        // Sign once now, so a P-384 key or a broken PEM fails at config time, not per request.
        signer.sign(&json!({"probe": true})).map_err(|err| format!("cannot sign with this key: {err}"))?;
        Ok(signer)
    }

    pub fn sign(&self, claims: &Value) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(self.algorithm);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key)
    }
}

/// A minted token and when it stops being valid.
#[derive(Debug, Clone)]
pub struct Minted {
    pub token: String,
    pub exp: u64,
}

impl Minted {
    fn footprint(minted: &Arc<Minted>) -> usize {
        footprint::allocation(std::mem::size_of::<Minted>() + 16) + footprint::string(&minted.token)
    }
}

/// Minted tokens by IdP token and the issuer that verified it (the minted
/// `app_metadata.provider` names it); entries leave shortly before they expire.
pub struct MintCache {
    by_token: Option<Cache<CacheKey, Arc<Minted>>>,
    anonymous: Mutex<Option<Arc<Minted>>>,
    margin: u64,
    clock: Clock,
    counters: MintCounters,
}

struct UntilRefresh {
    margin: u64,
    clock: Clock,
}

impl moka::Expiry<CacheKey, Arc<Minted>> for UntilRefresh {
    fn expire_after_create(&self, _: &CacheKey, minted: &Arc<Minted>, _: std::time::Instant) -> Option<Duration> {
        Some(Duration::from_secs(minted.exp.saturating_sub(self.margin).saturating_sub(self.clock.now())))
    }
}

impl MintCache {
    /// An empty budget disables reuse (every request mints); `margin` is how
    /// long before `exp` a minted token is replaced.
    pub fn new(budget: CacheBudget, margin: u64, clock: Clock, counters: MintCounters) -> Self {
        let expiry = UntilRefresh { margin, clock: clock.clone() };
        let by_token = budget.is_enabled().then(|| budget.builder(Minted::footprint).expire_after(expiry).build());
        MintCache { by_token, anonymous: Mutex::new(None), margin, clock, counters }
    }

    /// Estimated bytes held, as weighed against `cache.max_bytes`.
    pub fn weighted_bytes(&self) -> u64 {
        token_cache::settled(self.by_token.as_ref(), Cache::weighted_size)
    }

    /// Mints (counted, in its own trace span) or returns `None` when `mint` fails.
    fn mint(&self, mint: impl FnOnce() -> Option<Minted>) -> Option<Arc<Minted>> {
        let minted = tracing::info_span!(target: "portcullis::trace", "supabase mint").in_scope(mint)?;
        self.counters.fresh.inc();
        Some(Arc::new(minted))
    }

    fn reuse(&self, minted: &Arc<Minted>) -> Arc<Minted> {
        self.counters.reused.inc();
        Arc::clone(minted)
    }

    fn fresh(&self, minted: &Minted) -> bool {
        minted.exp > self.clock.now() + self.margin
    }

    pub fn for_token(&self, key: CacheKey, mint: impl FnOnce() -> Option<Minted>) -> Option<Arc<Minted>> {
        let Some(cache) = &self.by_token else {
            return self.mint(mint);
        };
        if let Some(hit) = cache.get(&key).filter(|hit| self.fresh(hit)) {
            return Some(self.reuse(&hit));
        }
        let minted = self.mint(mint)?;
        cache.insert(key, Arc::clone(&minted));
        Some(minted)
    }

    pub fn anonymous(&self, mint: impl FnOnce() -> Option<Minted>) -> Option<Arc<Minted>> {
        let mut slot = self.anonymous.lock().expect("anonymous token lock poisoned");
        if let Some(hit) = slot.as_ref().filter(|hit| self.fresh(hit)) {
            return Some(self.reuse(hit));
        }
        let minted = self.mint(mint)?;
        *slot = Some(Arc::clone(&minted));
        Some(minted)
    }
}

/// GoTrue's access-token claim set for a user (`role` and `aud` are always
/// `authenticated`; nothing from the IdP can change them).
pub struct UserClaims<'a> {
    pub issuer: &'a str,
    pub sub: &'a str,
    pub email: &'a str,
    pub phone: &'a str,
    pub session_id: String,
    pub app_metadata: Map<String, Value>,
    pub user_metadata: Map<String, Value>,
    pub iat: u64,
    pub exp: u64,
}

impl UserClaims<'_> {
    pub fn to_json(&self) -> Value {
        json!({
            "iss": self.issuer,
            "sub": self.sub,
            "aud": "authenticated",
            "role": "authenticated",
            "iat": self.iat,
            "exp": self.exp,
            "email": self.email,
            "phone": self.phone,
            "app_metadata": self.app_metadata,
            "user_metadata": self.user_metadata,
            "session_id": self.session_id,
            "is_anonymous": false,
            "aal": "aal1",
            "amr": [{"method": "oauth", "timestamp": self.iat}],
        })
    }
}

/// The claims of an anonymous (role `anon`) token, like Supabase's anon key.
pub fn anonymous_claims(issuer: &str, iat: u64, exp: u64) -> Value {
    json!({"iss": issuer, "role": "anon", "iat": iat, "exp": exp})
}

/// A stable UUID-shaped session id derived from the IdP token's digest, for
/// tokens that carry no `sid`/`jti` of their own.
pub fn session_id_from(digest: &TokenDigest) -> String {
    let hex: String = digest[..16].iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}
