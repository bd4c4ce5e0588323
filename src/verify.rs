//! Is this token genuine, current and meant for us? (SPEC section 4)
//!
//! The issuer is chosen by the token's own `iss` among the route's issuers, the
//! key by `kid` (or by type when there is none), and only a key whose type fits
//! the header's `alg` is ever used: `alg: none` cannot be expressed and HS* never
//! meets a public key.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, TokenData, Validation};
use serde_json::{Map, Value};

use crate::escape::escape;
use crate::issuer::Issuer;
use crate::keys::{KeySet, VerificationKey};
use crate::token_cache::{TokenCache, TokenDigest};

/// A token without `kid` is tried against at most this many keys of its type.
pub const MAX_KIDLESS_CANDIDATES: usize = 10;

/// Claims of a token that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// Name of the issuer (config key) that verified it.
    pub issuer: Arc<str>,
    /// Id of the key that verified it; the cache entry dies with the key.
    pub key_id: String,
    pub exp: u64,
    pub claims: Map<String, Value>,
}

impl VerifiedToken {
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

/// Why a token is not acceptable (a 401 `invalid_token`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("the token is not a well-formed JWT: expected 3 parts, got {0}")]
    WrongPartCount(usize),
    #[error("alg none is never accepted")]
    AlgNone,
    #[error("algorithm {0} is not accepted for this issuer")]
    DisallowedAlgorithm(String),
    /// RFC 7515 section 4.1.11: extensions a recipient does not understand must be refused.
    #[error("the token header lists critical extensions (crit), which are not supported")]
    CriticalHeader,
    #[error("tokens from issuer {0:?} are not accepted here")]
    UntrustedIssuer(String),
    #[error("the token has no iss claim")]
    MissingIssuer,
    #[error("no key with kid {0:?} in the issuer's JWKS")]
    UnknownKid(String),
    #[error("key {kid:?} cannot verify {alg} signatures")]
    KeyAlgorithmMismatch { kid: String, alg: String },
    #[error("no key of the issuer can verify {0} signatures")]
    NoKeyForAlgorithm(String),
    #[error("the signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token was issued in the future (iat)")]
    IssuedInFuture,
    #[error("the token's audience is not accepted")]
    WrongAudience,
    #[error("the token's issuer does not match")]
    WrongIssuer,
    #[error("the token lacks the required claim {0}")]
    MissingClaim(String),
    #[error("the token's {0} claim is malformed")]
    InvalidClaim(String),
}

impl TokenError {
    /// A short label for metrics (`reason` of portcullis_checks_total).
    pub fn kind(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) | TokenError::WrongPartCount(_) | TokenError::CriticalHeader => "malformed",
            TokenError::AlgNone | TokenError::DisallowedAlgorithm(_) => "algorithm_not_allowed",
            TokenError::UntrustedIssuer(_) | TokenError::MissingIssuer | TokenError::WrongIssuer => "wrong_issuer",
            TokenError::UnknownKid(_) => "unknown_kid",
            TokenError::KeyAlgorithmMismatch { .. } | TokenError::NoKeyForAlgorithm(_) => "no_matching_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::MissingClaim(_) | TokenError::InvalidClaim(_) => "bad_claims",
        }
    }
}

/// The outcome of verification when it is not a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyFailure {
    Invalid(TokenError),
    /// The issuer has no keys yet (IdP unreachable since start): a 503, not the client's fault.
    KeysUnavailable(Arc<str>),
}

impl From<TokenError> for VerifyFailure {
    fn from(err: TokenError) -> Self {
        VerifyFailure::Invalid(err)
    }
}

pub fn now_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

/// Verifies `token` for the first of `candidates` (in route order) that
/// accepts it, consulting and filling `cache`. A cache hit gives the answer a
/// fresh check would: entries are per issuer, and earlier issuers come first.
pub async fn verify(
    token: &str,
    digest: &TokenDigest,
    candidates: &[&Arc<Issuer>],
    cache: &TokenCache,
) -> Result<Arc<VerifiedToken>, VerifyFailure> {
    // The common case: the route's first issuer verified this token before.
    let first = candidates.first().copied();
    if let Some(hit) = first.and_then(|first| cached(cache, digest, first)) {
        return Ok(hit);
    }
    let parsed = Parsed::new(token)?;
    // An issuer without `issuer` (a Hasura import) accepts any iss, as Hasura does.
    let matching: Vec<&Arc<Issuer>> = candidates
        .iter()
        .copied()
        .filter(|issuer| issuer.issuer.as_deref().is_none_or(|expected| Some(expected) == parsed.iss.as_deref()))
        .collect();
    if matching.is_empty() {
        return Err(match &parsed.iss {
            Some(iss) => TokenError::UntrustedIssuer(escape(iss)),
            None => TokenError::MissingIssuer,
        }
        .into());
    }
    let mut first_failure = None;
    for issuer in matching {
        let looked_up = first.is_some_and(|first| Arc::ptr_eq(first, issuer));
        if !looked_up && let Some(hit) = cached(cache, digest, issuer) {
            return Ok(hit);
        }
        match verify_with_issuer(token, &parsed, issuer).await {
            Ok(verified) => {
                let verified = Arc::new(verified);
                cache.insert((*digest, issuer.id), Arc::clone(&verified));
                return Ok(verified);
            }
            Err(failure) => {
                first_failure.get_or_insert(failure);
            }
        }
    }
    Err(first_failure.expect("at least one matching issuer"))
}

/// `issuer`'s cached verification of the token, if it still holds: the key is
/// still in the live set and the token has not expired since.
fn cached(cache: &TokenCache, digest: &TokenDigest, issuer: &Issuer) -> Option<Arc<VerifiedToken>> {
    let key = (*digest, issuer.id);
    let hit = cache.get(&key)?;
    let key_present = issuer.keys.current().is_some_and(|keys| keys.contains_id(&hit.key_id));
    if key_present && hit.exp.saturating_add(issuer.leeway_seconds) >= now_seconds() {
        return Some(hit);
    }
    cache.remove(&key);
    None
}

/// What the unverified header and payload say, enough to pick issuer and key.
struct Parsed {
    alg: Algorithm,
    kid: Option<String>,
    iss: Option<String>,
}

impl Parsed {
    fn new(token: &str) -> Result<Self, TokenError> {
        let (header, payload) = split(token)?;
        if header.contains_key("crit") {
            return Err(TokenError::CriticalHeader);
        }
        Ok(Parsed {
            alg: parse_alg(&header)?,
            kid: header.get("kid").and_then(Value::as_str).map(str::to_string),
            iss: payload.get("iss").and_then(Value::as_str).map(str::to_string),
        })
    }
}

type JsonObject = Map<String, Value>;

/// Decodes header and payload JSON (unverified) to route the token.
fn split(token: &str) -> Result<(JsonObject, JsonObject), TokenError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, _signature] = parts[..] else {
        return Err(TokenError::WrongPartCount(parts.len()));
    };
    Ok((decode_part(header, "header")?, decode_part(payload, "payload")?))
}

fn decode_part(part: &str, what: &str) -> Result<JsonObject, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed(format!("{what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::Malformed(format!("{what} is not a JSON object"))),
    }
}

fn parse_alg(header: &Map<String, Value>) -> Result<Algorithm, TokenError> {
    let name =
        header.get("alg").and_then(Value::as_str).ok_or_else(|| TokenError::Malformed("header has no alg".into()))?;
    if name.eq_ignore_ascii_case("none") {
        return Err(TokenError::AlgNone);
    }
    name.parse().map_err(|_| TokenError::DisallowedAlgorithm(escape(name)))
}

async fn verify_with_issuer(
    token: &str,
    parsed: &Parsed,
    issuer: &Arc<Issuer>,
) -> Result<VerifiedToken, VerifyFailure> {
    let alg = parsed.alg;
    let Some(validation) = issuer.validation(alg) else {
        return Err(TokenError::DisallowedAlgorithm(format!("{alg:?}")).into());
    };
    let Some(mut keys) = issuer.keys.current() else {
        issuer.keys.nudge();
        return Err(VerifyFailure::KeysUnavailable(Arc::clone(&issuer.name)));
    };
    // Keys without any kid (a shared secret, a PEM key, a kid-less JWKS) cannot be
    // selected by kid: the token's kid is then ignored, as Hasura ignores it.
    let kid = parsed.kid.as_deref().filter(|_| keys.has_kids());
    if let Some(kid) = kid
        && keys.by_kid(kid).is_none()
        && issuer.keys.refetch_for_kid(kid).await
    {
        keys = issuer.keys.current().expect("keys present after a successful refetch");
    }
    let candidates = select_keys(&keys, alg, kid)?;
    let mut last_error = TokenError::BadSignature;
    for key in candidates {
        match check_signature_and_claims(token, key, validation, issuer.leeway_seconds) {
            Ok(claims) => {
                let exp = claims.get("exp").and_then(seconds).unwrap_or_default();
                return Ok(VerifiedToken { issuer: Arc::clone(&issuer.name), key_id: key.id.clone(), exp, claims });
            }
            // Without a kid several keys may fit; only a bad signature means "try the next".
            Err(TokenError::BadSignature) => {}
            Err(other) => last_error = other,
        }
    }
    Err(last_error.into())
}

fn select_keys<'k>(
    keys: &'k KeySet,
    alg: Algorithm,
    kid: Option<&str>,
) -> Result<Vec<&'k VerificationKey>, TokenError> {
    let alg_name = || format!("{alg:?}");
    match kid {
        Some(kid) => {
            let key = keys.by_kid(kid).ok_or_else(|| TokenError::UnknownKid(escape(kid)))?;
            if !key.accepts(alg) {
                return Err(TokenError::KeyAlgorithmMismatch { kid: escape(kid), alg: alg_name() });
            }
            Ok(vec![key.as_ref()])
        }
        None => {
            // Each candidate costs a signature check: a hostile JWKS must not make
            // a garbage kid-less token expensive.
            let fitting: Vec<_> = keys
                .iter()
                .filter(|key| key.accepts(alg))
                .map(|key| key.as_ref())
                .take(MAX_KIDLESS_CANDIDATES)
                .collect();
            if fitting.is_empty() {
                return Err(TokenError::NoKeyForAlgorithm(alg_name()));
            }
            Ok(fitting)
        }
    }
}

fn check_signature_and_claims(
    token: &str,
    key: &VerificationKey,
    validation: &Validation,
    leeway: u64,
) -> Result<Map<String, Value>, TokenError> {
    let data: TokenData<Map<String, Value>> =
        jsonwebtoken::decode(token, &key.key, validation).map_err(|err| token_error(err.kind()))?;
    check_issued_at(&data.claims, leeway)?;
    Ok(data.claims)
}

/// A NumericDate, integer or fractional (RFC 7519 section 2).
fn seconds(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_f64().filter(|secs| *secs >= 0.0).map(|secs| secs as u64))
}

/// jsonwebtoken does not check `iat`; a token from the future means a broken or hostile clock.
fn check_issued_at(claims: &Map<String, Value>, leeway: u64) -> Result<(), TokenError> {
    match claims.get("iat") {
        None => Ok(()),
        Some(iat) => {
            let iat = iat.as_f64().ok_or_else(|| TokenError::InvalidClaim("iat".into()))?;
            if iat > now_seconds().saturating_add(leeway) as f64 { Err(TokenError::IssuedInFuture) } else { Ok(()) }
        }
    }
}

fn token_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim.clone()),
        ErrorKind::InvalidClaimFormat(claim) => TokenError::InvalidClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
            TokenError::DisallowedAlgorithm("(header)".into())
        }
        ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => TokenError::BadSignature,
        other => TokenError::Malformed(format!("{other:?}")),
    }
}
