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
use crate::keys::{KeySet, KeysUnavailable, VerificationKey};
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
    /// The issuer has no usable keys (none fetched yet, or stale): a 503, not the client's fault.
    KeysUnavailable(KeysUnavailable),
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
    let mut keys = issuer.keys.usable().map_err(|unavailable| {
        issuer.keys.nudge();
        VerifyFailure::KeysUnavailable(unavailable)
    })?;
    // Keys without any kid (a shared secret, a PEM key, a kid-less JWKS) cannot be
    // selected by kid: the token's kid is then ignored, as Hasura ignores it.
    let kid = parsed.kid.as_deref().filter(|_| keys.has_kids());
    if let Some(kid) = kid
        && keys.by_kid(kid).is_none()
        && issuer.keys.refetch_for_kid(kid).await
    {
        keys = issuer.keys.usable().map_err(VerifyFailure::KeysUnavailable)?;
    }
    let candidates = select_keys(&keys, alg, kid)?;
    let mut last_error = TokenError::BadSignature;
    for key in candidates {
        match check_signature(token, key, validation)
            .and_then(|claims| check_claims(&claims, issuer, clock.now()).map(|()| claims))
        {
            Ok(claims) => {
                let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or_default();
                return Ok(VerifiedToken::new(issuer.id, key.id.clone(), exp, claims));
            }
            // Without a kid several keys may fit; only a bad signature means "try the next".
            Err(TokenError::BadSignature) => {}
            Err(other) => last_error = other,
        }
    }
    Err(last_error.into())
}

/// The claims of `token` once its signature verifies with one of `issuer`'s
/// keys (chosen and refetched as for [`verify`]), checking no claim: for
/// documents that are signed like tokens but are not access tokens (a Kinde
/// webhook has no `iss`, `aud` or `exp`); the caller checks their shape.
pub async fn signed_claims(token: &str, parsed: &Parsed, issuer: &Arc<Issuer>) -> Result<JsonObject, VerifyFailure> {
    let alg = parsed.alg;
    let Some(validation) = issuer.validation(alg) else {
        return Err(TokenError::DisallowedAlgorithm(format!("{alg:?}")).into());
    };
    let mut keys = issuer.keys.usable().map_err(|unavailable| {
        issuer.keys.nudge();
        VerifyFailure::KeysUnavailable(unavailable)
    })?;
    let kid = parsed.kid.as_deref().filter(|_| keys.has_kids());
    if let Some(kid) = kid
        && keys.by_kid(kid).is_none()
        && issuer.keys.refetch_for_kid(kid).await
    {
        keys = issuer.keys.usable().map_err(VerifyFailure::KeysUnavailable)?;
    }
    let mut last_error = TokenError::BadSignature;
    for key in select_keys(&keys, alg, kid)? {
        match check_signature(token, key, validation) {
            Ok(claims) => return Ok(claims),
            Err(TokenError::BadSignature) => {}
            Err(other) => last_error = other,
        }
    }
    Err(last_error.into())
}

/// Whether a remembered verification by `issuer` still holds: its key is still
/// published, the keys are not stale, and the token has not expired since.
pub fn still_valid(verified: &VerifiedToken, issuer: &Issuer, clock: &Clock) -> bool {
    let now = clock.now();
    let key_present = issuer.keys.usable_at(now).is_ok_and(|keys| keys.contains_id(&verified.key_id));
    key_present && verified.exp.saturating_add(issuer.leeway_seconds) >= now
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::Engine;
    use jsonwebtoken::Header;
    use serde_json::json;

    use super::*;
    use crate::testing::{Answer, NOW, ScriptedFetcher, claims, es256, issuer, runtime};

    const ISS: &str = "https://idp.test";
    const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";

    fn part(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    async fn check(token: &str, issuer: &Arc<Issuer>, clock: &Clock) -> Result<VerifiedToken, VerifyFailure> {
        let parsed = Parsed::new(token)?;
        verify(token, &parsed, issuer, clock).await
    }

    fn invalid(result: Result<VerifiedToken, VerifyFailure>) -> TokenError {
        match result {
            Err(VerifyFailure::Invalid(err)) => err,
            other => panic!("expected an invalid token, got {other:?}"),
        }
    }

    #[test]
    fn unreadable_tokens_say_which_part_is_broken() {
        let header = part(&json!({"alg": "ES256"}));
        let payload = part(&json!({"iss": ISS}));
        let cases = [
            ("abc".to_string(), TokenError::WrongPartCount(1)),
            (format!("!!.{payload}.sig"), TokenError::Malformed(Malformed::HeaderNotBase64)),
            (format!("{}.{payload}.sig", part(&json!([1]))), TokenError::Malformed(Malformed::HeaderNotJson)),
            (format!("{}.{payload}.sig", part(&json!({"typ": "JWT"}))), TokenError::Malformed(Malformed::NoAlg)),
            (format!("{header}.!!.sig"), TokenError::Malformed(Malformed::PayloadNotBase64)),
            (format!("{header}.{}.sig", part(&json!("x"))), TokenError::Malformed(Malformed::PayloadNotJson)),
            (format!("{}.{payload}.", part(&json!({"alg": "none"}))), TokenError::AlgNone),
            (
                format!("{}.{payload}.s", part(&json!({"alg": "RS256\n"}))),
                TokenError::DisallowedAlgorithm("RS256\\u{a}".into()),
            ),
            (format!("{}.{payload}.s", part(&json!({"alg": "ES256", "crit": ["b64"]}))), TokenError::CriticalHeader),
        ];
        for (token, expected) in cases {
            assert_eq!(Parsed::new(&token).unwrap_err(), expected, "{token}");
        }
        assert!(Malformed::PayloadNotJson.in_payload() && !Malformed::HeaderNotJson.in_payload());
        assert!(Malformed::SignatureNotBase64.is_encoding() && !Malformed::NoAlg.is_encoding());
    }

    #[tokio::test]
    async fn claims_are_checked_against_the_injected_clock() {
        let runtime = runtime(ScriptedFetcher::new([]));
        let idp = issuer(
            &format!("{{ issuer: '{ISS}', secret: '{SECRET}', audiences: [api], leeway_seconds: 10 }}"),
            &runtime,
        );
        let key = crate::dev::SigningKey::hmac(Algorithm::HS256, "unused", SECRET.as_bytes());
        let mut no_kid = Header::new(Algorithm::HS256);
        no_kid.kid = None;
        let sign = |claims: &Value| key.sign_with_header(&no_kid, claims);
        let clock = Clock::fixed(NOW);
        let verified = check(&sign(&claims(ISS, "api", 60)), &idp, &clock).await.unwrap();
        assert_eq!((verified.issuer, verified.exp), (0, NOW + 60));

        let with = |change: Value| {
            let mut claims = claims(ISS, "api", 60);
            for (key, value) in change.as_object().unwrap() {
                if value.is_null() {
                    claims.as_object_mut().unwrap().remove(key);
                } else {
                    claims[key] = value.clone();
                }
            }
            sign(&claims)
        };
        let cases = [
            (with(json!({"exp": NOW - 11})), TokenError::Expired),
            (with(json!({"nbf": NOW + 11})), TokenError::NotYetValid),
            (with(json!({"nbf": "soon"})), TokenError::InvalidClaim("nbf")),
            (with(json!({"iat": NOW + 11})), TokenError::IssuedInFuture),
            (with(json!({"iat": "then"})), TokenError::InvalidClaim("iat")),
            (with(json!({"aud": "other"})), TokenError::WrongAudience),
            (with(json!({"aud": []})), TokenError::WrongAudience),
            (with(json!({"iss": "https://elsewhere.test"})), TokenError::WrongIssuer),
            (with(json!({"exp": null})), TokenError::MissingClaim("exp")),
            (with(json!({"exp": "later"})), TokenError::MissingClaim("exp")),
            (with(json!({"aud": null})), TokenError::MissingClaim("aud")),
            (with(json!({"iss": null})), TokenError::MissingClaim("iss")),
        ];
        for (token, expected) in cases {
            assert_eq!(invalid(check(&token, &idp, &clock).await), expected);
        }
        // Within the leeway, and as the clock moves past it.
        let token = with(json!({"exp": NOW - 5}));
        assert!(check(&token, &idp, &clock).await.is_ok());
        clock.advance(6);
        assert_eq!(invalid(check(&token, &idp, &clock).await), TokenError::Expired);
        // HS384 needs a 48-byte secret; this one has 38.
        let hs384 =
            crate::dev::SigningKey::hmac(Algorithm::HS384, "unused", SECRET.as_bytes()).sign(&claims(ISS, "api", 60));
        assert_eq!(
            invalid(check(&hs384, &idp, &Clock::fixed(NOW)).await),
            TokenError::DisallowedAlgorithm("HS384".into())
        );
    }

    #[tokio::test]
    async fn keys_are_chosen_by_kid_and_type() {
        let (a, b) = (es256("a"), es256("b"));
        let eddsa = crate::dev::SigningKey::generate(Algorithm::EdDSA, "ed");
        let fetcher = ScriptedFetcher::new([Answer::keys(&[&a, &b])]);
        let runtime = runtime(fetcher.clone());
        let idp = issuer(
            &format!(
                "{{ issuer: '{ISS}', jwks_uri: 'https://idp.test/jwks', refresh: {{ unknown_kid_interval_seconds: 0 }} }}"
            ),
            &runtime,
        );
        let clock = Clock::fixed(NOW);
        assert_eq!(
            check(&a.sign(&claims(ISS, "x", 60)), &idp, &clock).await.unwrap_err(),
            VerifyFailure::KeysUnavailable(KeysUnavailable::NotLoaded("idp".into()))
        );
        idp.keys.refresh().await.unwrap();

        let verified = check(&b.sign(&claims(ISS, "x", 60)), &idp, &clock).await.unwrap();
        assert_eq!(verified.key_id, idp.keys.current().unwrap().by_kid("b").unwrap().id);
        // A kid names a key of another type, or no key (after one refetch), or none at all.
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("a".into());
        let mismatch = eddsa.sign_with_header(&header, &claims(ISS, "x", 60));
        assert_eq!(
            invalid(check(&mismatch, &idp, &clock).await),
            TokenError::KeyAlgorithmMismatch { kid: "a".into(), alg: "EdDSA".into() }
        );
        let unknown = es256("gone").sign(&claims(ISS, "x", 60));
        assert_eq!(invalid(check(&unknown, &idp, &clock).await), TokenError::UnknownKid("gone".into()));
        assert_eq!(fetcher.calls(), 2, "one refetch for the unknown kid");
        header.kid = None;
        let no_fitting_key = eddsa.sign_with_header(&header, &claims(ISS, "x", 60));
        assert_eq!(invalid(check(&no_fitting_key, &idp, &clock).await), TokenError::NoKeyForAlgorithm("EdDSA".into()));
        // A token signed by another key with a known kid, or a tampered signature.
        let forged = es256("a").sign(&claims(ISS, "x", 60));
        assert_eq!(invalid(check(&forged, &idp, &clock).await), TokenError::BadSignature);
        let genuine = a.sign(&claims(ISS, "x", 60));
        let tampered = format!("{}!!", &genuine[..genuine.len() - 2]);
        assert_eq!(invalid(check(&tampered, &idp, &clock).await), TokenError::Malformed(Malformed::SignatureNotBase64));
        // Without a kid, every key of the type is tried.
        let mut kidless = Header::new(Algorithm::ES256);
        kidless.kid = None;
        assert!(check(&b.sign_with_header(&kidless, &claims(ISS, "x", 60)), &idp, &clock).await.is_ok());
    }

    #[tokio::test]
    async fn a_remembered_verification_holds_until_its_key_leaves_or_it_expires() {
        let key = es256("k");
        let fetcher = ScriptedFetcher::new([Answer::keys(&[&key])]);
        let runtime = runtime(fetcher.clone());
        let idp =
            issuer(&format!("{{ issuer: '{ISS}', jwks_uri: 'https://idp.test/jwks', leeway_seconds: 0 }}"), &runtime);
        idp.keys.refresh().await.unwrap();
        let clock = Clock::fixed(NOW);
        let verified = check(&key.sign(&claims(ISS, "x", 60)), &idp, &clock).await.unwrap();
        assert!(still_valid(&verified, &idp, &clock));
        clock.advance(61);
        assert!(!still_valid(&verified, &idp, &clock));
        let clock = Clock::fixed(NOW);
        fetcher.answer([Answer::keys(&[&es256("other")])]);
        idp.keys.refresh().await.unwrap();
        assert!(!still_valid(&verified, &idp, &clock));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_refetch_is_waited_for_only_unknown_kid_wait_ms() {
        let (old, new) = (es256("old"), es256("new"));
        let fetcher = ScriptedFetcher::new([Answer::keys(&[&old])]);
        let runtime = runtime(fetcher.clone());
        let idp = issuer(
            &format!(
                "{{ issuer: '{ISS}', jwks_uri: 'https://idp.test/jwks', refresh: {{ unknown_kid_interval_seconds: 0 }} }}"
            ),
            &runtime,
        );
        idp.keys.refresh().await.unwrap();
        fetcher.answer([Answer::keys(&[&old, &new]).after(Duration::from_secs(30))]);
        let clock = Clock::fixed(NOW);
        let token = new.sign(&claims(ISS, "x", 600));
        let started = tokio::time::Instant::now();
        assert_eq!(invalid(check(&token, &idp, &clock).await), TokenError::UnknownKid("new".into()));
        assert_eq!(started.elapsed(), Duration::from_millis(100), "the default unknown_kid_wait_ms");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(check(&token, &idp, &clock).await.is_ok(), "the fetch finished in the background");
        assert_eq!(fetcher.calls(), 2);
    }
}
