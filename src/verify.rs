//! Is this token genuine, current and meant for this issuer? (SPEC section 4)
//!
//! [`Parsed`] reads the unverified header and payload just far enough to pick
//! the issuer (by `iss`) and the key (by `kid`, or by type when there is none).
//! [`verify`] then checks the signature with a key whose type fits the header's
//! `alg` (so `alg: none` cannot be expressed and HS* never meets a public key),
//! and the claims against the issuer's rules and an injected [`Clock`].
//! Remembering verifications is the pipeline's business, not this module's.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, TokenData, Validation};
use serde_json::{Map, Value};

use crate::escape::escape;
use crate::issuer::Issuer;
use crate::keys::{KeySet, VerificationKey};
use crate::token::{Clock, VerifiedToken};

/// A token without `kid` is tried against at most this many keys of its type.
pub const MAX_KIDLESS_CANDIDATES: usize = 10;

/// Why a token is not acceptable (a 401 `invalid_token`). Client-controlled
/// text inside (`alg`, `kid`, `iss`) is escaped where it is captured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(Malformed),
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
    MissingClaim(&'static str),
    #[error("the token's {0} claim is malformed")]
    InvalidClaim(&'static str),
}

/// Which part of a token could not be read, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("header is not base64url")]
    HeaderNotBase64,
    #[error("header is not a JSON object")]
    HeaderNotJson,
    #[error("header has no alg")]
    NoAlg,
    #[error("payload is not base64url")]
    PayloadNotBase64,
    #[error("payload is not a JSON object")]
    PayloadNotJson,
    #[error("signature is not base64url")]
    SignatureNotBase64,
    #[error("the token cannot be decoded")]
    Undecodable,
}

impl Malformed {
    /// Whether the claims (payload) are what could not be read.
    pub fn in_payload(self) -> bool {
        matches!(self, Malformed::PayloadNotBase64 | Malformed::PayloadNotJson)
    }

    pub fn is_encoding(self) -> bool {
        matches!(self, Malformed::HeaderNotBase64 | Malformed::PayloadNotBase64 | Malformed::SignatureNotBase64)
    }
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

type JsonObject = Map<String, Value>;

/// What the unverified header and payload say, enough to pick issuer and key.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub iss: Option<String>,
}

impl Parsed {
    pub fn new(token: &str) -> Result<Self, TokenError> {
        let parts: Vec<&str> = token.split('.').collect();
        let [header, payload, _signature] = parts[..] else {
            return Err(TokenError::WrongPartCount(parts.len()));
        };
        let header = decode_part(header, Malformed::HeaderNotBase64, Malformed::HeaderNotJson)?;
        let payload = decode_part(payload, Malformed::PayloadNotBase64, Malformed::PayloadNotJson)?;
        if header.contains_key("crit") {
            return Err(TokenError::CriticalHeader);
        }
        Ok(Parsed {
            alg: parse_alg(&header)?,
            kid: header.get("kid").and_then(Value::as_str).map(str::to_string),
            iss: payload.get("iss").and_then(Value::as_str).map(str::to_string),
        })
    }

    /// Whether `issuer` is the one this token claims to come from. An issuer
    /// without `issuer` (a Hasura import) accepts any iss, as Hasura does.
    pub fn names(&self, issuer: &Issuer) -> bool {
        issuer.issuer.as_deref().is_none_or(|expected| Some(expected) == self.iss.as_deref())
    }

    /// The 401 for a token no candidate issuer claims.
    pub fn untrusted(&self) -> TokenError {
        match &self.iss {
            Some(iss) => TokenError::UntrustedIssuer(escape(iss)),
            None => TokenError::MissingIssuer,
        }
    }
}

fn decode_part(part: &str, not_base64: Malformed, not_json: Malformed) -> Result<JsonObject, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed(not_base64))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::Malformed(not_json)),
    }
}

fn parse_alg(header: &JsonObject) -> Result<Algorithm, TokenError> {
    let name = header.get("alg").and_then(Value::as_str).ok_or(TokenError::Malformed(Malformed::NoAlg))?;
    if name.eq_ignore_ascii_case("none") {
        return Err(TokenError::AlgNone);
    }
    name.parse().map_err(|_| TokenError::DisallowedAlgorithm(escape(name)))
}

/// Verifies `token` (already [`Parsed`]) for `issuer` as of `clock`. May wait,
/// at most the issuer's `unknown_kid_wait_ms`, for a refetch of its keys.
pub async fn verify(
    token: &str,
    parsed: &Parsed,
    issuer: &Arc<Issuer>,
    clock: &Clock,
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
        match check_signature(token, key, validation)
            .and_then(|claims| check_claims(&claims, issuer, clock.now()).map(|()| claims))
        {
            Ok(claims) => {
                let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or_default();
                return Ok(VerifiedToken { issuer: issuer.id, key_id: key.id.clone(), exp, claims });
            }
            // Without a kid several keys may fit; only a bad signature means "try the next".
            Err(TokenError::BadSignature) => {}
            Err(other) => last_error = other,
        }
    }
    Err(last_error.into())
}

/// Whether a remembered verification by `issuer` still holds: its key is still
/// published and the token has not expired since.
pub fn still_valid(verified: &VerifiedToken, issuer: &Issuer, clock: &Clock) -> bool {
    let key_present = issuer.keys.current().is_some_and(|keys| keys.contains_id(&verified.key_id));
    key_present && verified.exp.saturating_add(issuer.leeway_seconds) >= clock.now()
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

/// The signature (and that `alg` fits the key); claims are checked afterwards.
fn check_signature(token: &str, key: &VerificationKey, validation: &Validation) -> Result<JsonObject, TokenError> {
    let data: TokenData<JsonObject> =
        jsonwebtoken::decode(token, &key.key, validation).map_err(|err| token_error(err.kind()))?;
    Ok(data.claims)
}

/// The registered claims, in the order jsonwebtoken would check them (so the
/// first failure reported is the same), with times read from the injected clock.
fn check_claims(claims: &JsonObject, issuer: &Issuer, now: u64) -> Result<(), TokenError> {
    let leeway = issuer.leeway_seconds;
    let exp = claims.get("exp").and_then(Value::as_u64).ok_or(TokenError::MissingClaim("exp"))?;
    let iss = claims.get("iss").and_then(strings);
    let aud = claims.get("aud").and_then(strings);
    if issuer.issuer.is_some() && iss.is_none() {
        return Err(TokenError::MissingClaim("iss"));
    }
    if issuer.audiences.is_some() && aud.is_none() {
        return Err(TokenError::MissingClaim("aud"));
    }
    if exp.saturating_add(leeway) < now {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_u64().ok_or(TokenError::InvalidClaim("nbf"))?;
        if nbf > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
    }
    if let (Some(expected), Some(iss)) = (&issuer.issuer, &iss)
        && iss.iter().any(|value| value != expected)
    {
        return Err(TokenError::WrongIssuer);
    }
    if let (Some(accepted), Some(aud)) = (&issuer.audiences, &aud)
        && !aud.iter().any(|value| accepted.iter().any(|ok| ok == value))
    {
        return Err(TokenError::WrongAudience);
    }
    check_issued_at(claims, leeway, now)
}

/// A claim that is a string or a list of strings (`iss`, `aud`); `None` otherwise.
fn strings(value: &Value) -> Option<Vec<&str>> {
    match value {
        Value::String(one) => Some(vec![one.as_str()]),
        Value::Array(many) => many.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

/// A token from the future means a broken or hostile clock.
fn check_issued_at(claims: &JsonObject, leeway: u64, now: u64) -> Result<(), TokenError> {
    match claims.get("iat") {
        None => Ok(()),
        Some(iat) => {
            let iat = iat.as_f64().ok_or(TokenError::InvalidClaim("iat"))?;
            if iat > now.saturating_add(leeway) as f64 { Err(TokenError::IssuedInFuture) } else { Ok(()) }
        }
    }
}

fn token_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
            TokenError::DisallowedAlgorithm("(header)".into())
        }
        ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => TokenError::BadSignature,
        // Header and payload were decoded before; the signature is what is left.
        ErrorKind::Base64(_) => TokenError::Malformed(Malformed::SignatureNotBase64),
        _ => TokenError::Malformed(Malformed::Undecodable),
    }
}
