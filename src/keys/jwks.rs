//! A JWKS document turned into keys that can verify signatures.
//!
//! Each key carries the algorithms its type permits (intersected with the JWK's
//! `alg`), so a token can only ever be checked with a key of the matching family:
//! `alg: HS256` against an RSA key is refused before any crypto runs.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::config::EmptyJwks;
use crate::escape::escape;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
    Hmac,
}

impl KeyKind {
    fn algorithms(self) -> &'static [Algorithm] {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => &[RS256, RS384, RS512, PS256, PS384, PS512],
            KeyKind::EcP256 => &[ES256],
            KeyKind::EcP384 => &[ES384],
            KeyKind::Ed25519 => &[EdDSA],
            KeyKind::Hmac => &[HS256, HS384, HS512],
        }
    }
}

pub struct VerificationKey {
    /// Identity of the key material: the RFC 7638 SHA-256 thumbprint for JWKS
    /// keys (so a replaced key never passes for its predecessor, whatever its
    /// `kid` or position), or a fixed name for a configured secret or PEM key.
    pub id: String,
    pub kid: Option<String>,
    pub kind: KeyKind,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl VerificationKey {
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey").field("id", &self.id).field("kind", &self.kind).finish()
    }
}

/// The keys of one issuer at one moment; replaced whole, never edited.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Arc<VerificationKey>>,
    by_kid: HashMap<String, Arc<VerificationKey>>,
    /// JWKS entries that were skipped, with why (shown by status and logs).
    pub skipped: Vec<SkippedKey>,
}

/// A JWKS entry that was not loaded, and why; the other keys of the set are used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// The entry's `kid` (escaped: it is IdP-controlled text), if it has one.
    pub kid: Option<String>,
    /// Its position in the JWKS `keys` array.
    pub index: usize,
    pub reason: SkipReason,
}

impl std::fmt::Display for SkippedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kid {
            Some(kid) => write!(f, "key {kid}: {}", self.reason),
            None => write!(f, "key #{}: {}", self.index, self.reason),
        }
    }
}

/// Why a JWKS entry cannot verify signatures. Text from the document inside is escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    #[error("not a JWK this service understands ({0})")]
    NotAJwk(String),
    #[error("use=enc (an encryption key)")]
    Encryption,
    #[error("unsupported curve")]
    UnsupportedCurve,
    /// Symmetric keys never come from a public JWKS: accepting one would let
    /// whoever reads the JWKS mint tokens.
    #[error("symmetric key in a JWKS")]
    Symmetric,
    #[error("unsupported key type")]
    UnsupportedKeyType,
    #[error("alg {0} does not fit its key type")]
    AlgorithmMismatch(String),
    #[error("RSA modulus is not base64url")]
    RsaModulusEncoding,
    #[error("RSA modulus of {0} bits (accepted: {min} to {max})", min = RSA_BITS.start(), max = RSA_BITS.end())]
    RsaModulusSize(usize),
    #[error("RSA exponent other than 65537")]
    RsaExponent,
    #[error("unusable key material ({0})")]
    KeyMaterial(String),
}

impl KeySet {
    pub fn from_keys(keys: Vec<VerificationKey>, skipped: Vec<SkippedKey>) -> Self {
        let keys: Vec<Arc<VerificationKey>> = keys.into_iter().map(Arc::new).collect();
        let by_kid = keys.iter().filter_map(|key| key.kid.clone().map(|kid| (kid, key.clone()))).collect();
        KeySet { keys, by_kid, skipped }
    }

    /// A shared-secret issuer's single key, for the HS algorithms it is long enough for.
    pub fn from_secret(secret: &[u8]) -> Self {
        let key = VerificationKey {
            id: "secret".into(),
            kid: None,
            kind: KeyKind::Hmac,
            algorithms: super::hmac_algorithms_for(secret.len()),
            key: DecodingKey::from_secret(secret),
        };
        Self::from_keys(vec![key], Vec::new())
    }

    /// A single public key from PEM (SPKI, PKCS#1 or an X.509 certificate).
    pub fn from_public_pem(kind: KeyKind, pem: &str) -> Result<Self, String> {
        let bytes = pem.as_bytes();
        let key = match kind {
            KeyKind::Rsa => DecodingKey::from_rsa_pem(bytes),
            KeyKind::EcP256 | KeyKind::EcP384 => DecodingKey::from_ec_pem(bytes),
            KeyKind::Ed25519 => DecodingKey::from_ed_pem(bytes),
            KeyKind::Hmac => return Err("an HMAC secret is not a PEM key".into()),
        }
        .map_err(|err| err.to_string())?;
        let key = VerificationKey { id: "pem".into(), kid: None, kind, algorithms: kind.algorithms().to_vec(), key };
        Ok(Self::from_keys(vec![key], Vec::new()))
    }

    /// Parses a JWKS body. Unusable entries (encryption keys, unknown curves,
    /// oversized RSA keys) are skipped rather than failing the set: one odd key
    /// must not lock users out. An empty `keys` array is a set of no keys only
    /// when `empty` says so; otherwise it is an error (and the last good keys stay).
    pub fn parse(body: &[u8], empty: EmptyJwks) -> Result<Self, JwksError> {
        let doc: Value = serde_json::from_slice(body).map_err(|_| JwksError::NotJson)?;
        let entries = doc.get("keys").and_then(Value::as_array).ok_or(JwksError::NoKeysArray)?;
        if entries.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys(entries.len()));
        }
        if entries.is_empty() {
            return match empty {
                EmptyJwks::Revoke => Ok(Self::default()),
                EmptyJwks::Keep => Err(JwksError::Empty),
            };
        }
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match parse_key(entry) {
                Ok(key) => keys.push(key),
                Err(reason) => {
                    let kid = entry.get("kid").and_then(Value::as_str).map(escape);
                    skipped.push(SkippedKey { kid, index, reason });
                }
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey(skipped));
        }
        Ok(Self::from_keys(keys, skipped))
    }

    pub fn by_kid(&self, kid: &str) -> Option<&Arc<VerificationKey>> {
        self.by_kid.get(kid)
    }

    /// Whether any key carries a `kid` (otherwise tokens' kids select nothing).
    pub fn has_kids(&self) -> bool {
        !self.by_kid.is_empty()
    }

    pub fn contains_id(&self, id: &str) -> bool {
        self.keys.iter().any(|key| key.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<VerificationKey>> {
        self.keys.iter()
    }

    /// Key names for status output: the `kid`, or the start of the thumbprint.
    pub fn ids(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|key| key.kid.clone().unwrap_or_else(|| format!("#{}", key.id.chars().take(12).collect::<String>())))
            .collect()
    }
}

/// Why a JWKS document gives no key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the JWKS is not JSON")]
    NotJson,
    #[error("the JWKS has no \"keys\" array")]
    NoKeysArray,
    #[error("the JWKS holds {0} keys; at most {MAX_KEYS} are accepted")]
    TooManyKeys(usize),
    #[error("the JWKS is empty (refresh.empty_jwks: keep keeps the last good keys)")]
    Empty,
    #[error("the JWKS holds no usable signing key ({})", join(.0))]
    NoUsableKey(Vec<SkippedKey>),
}

fn join(skipped: &[SkippedKey]) -> String {
    skipped.iter().map(SkippedKey::to_string).collect::<Vec<_>>().join("; ")
}

/// More keys than any IdP publishes; each one is parsed and may be tried.
pub const MAX_KEYS: usize = 100;
/// RSA moduli outside this range are skipped: below is weak, above only makes
/// every signature check (and a flood of garbage tokens) expensive.
pub const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;
/// The only RSA public exponent accepted (F4; every IdP uses it).
const RSA_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];

fn parse_key(entry: &Value) -> Result<VerificationKey, SkipReason> {
    let jwk: Jwk =
        serde_json::from_value(entry.clone()).map_err(|err| SkipReason::NotAJwk(escape(&err.to_string())))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err(SkipReason::Encryption);
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(params) => {
            check_rsa(&params.n, &params.e)?;
            KeyKind::Rsa
        }
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => KeyKind::EcP256,
            EllipticCurve::P384 => KeyKind::EcP384,
            _ => return Err(SkipReason::UnsupportedCurve),
        },
        AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => KeyKind::Ed25519,
        AlgorithmParameters::OctetKeyPair(_) => return Err(SkipReason::UnsupportedCurve),
        AlgorithmParameters::OctetKey(_) => return Err(SkipReason::Symmetric),
        _ => return Err(SkipReason::UnsupportedKeyType),
    };
    let mut algorithms = kind.algorithms().to_vec();
    if let Some(declared) = jwk.common.key_algorithm {
        algorithms.retain(|alg| same_algorithm(*alg, declared));
        if algorithms.is_empty() {
            return Err(SkipReason::AlgorithmMismatch(format!("{declared:?}")));
        }
    }
    let kid = jwk.common.key_id.clone();
    let key = DecodingKey::from_jwk(&jwk).map_err(|err| SkipReason::KeyMaterial(escape(&err.to_string())))?;
    let id = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|err| SkipReason::KeyMaterial(format!("no thumbprint: {}", escape(&err.to_string()))))?;
    Ok(VerificationKey { id, kid, kind, algorithms, key })
}

/// Modulus size and exponent of an RSA JWK (base64url big-endian integers).
fn check_rsa(modulus: &str, exponent: &str) -> Result<(), SkipReason> {
    let integer = |text: &str| -> Option<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()?;
        let first = bytes.iter().position(|byte| *byte != 0).unwrap_or(bytes.len());
        Some(bytes[first..].to_vec())
    };
    let n = integer(modulus).ok_or(SkipReason::RsaModulusEncoding)?;
    let bits = n.first().map_or(0, |top| (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize));
    if !RSA_BITS.contains(&bits) {
        return Err(SkipReason::RsaModulusSize(bits));
    }
    if integer(exponent).as_deref() != Some(&RSA_EXPONENT[..]) {
        return Err(SkipReason::RsaExponent);
    }
    Ok(())
}

fn same_algorithm(alg: Algorithm, declared: KeyAlgorithm) -> bool {
    format!("{alg:?}") == format!("{declared:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_unusable_keys_and_keeps_the_rest() {
        let body = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            {"kty": "EC", "crv": "P-256", "kid": "ec", "use": "sig",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]});
        let set = KeySet::parse(body.to_string().as_bytes(), EmptyJwks::Keep).unwrap();
        assert_eq!(set.ids(), vec!["ec".to_string()]);
        let skipped: Vec<_> = set.skipped.iter().map(|skip| (skip.kid.as_deref(), skip.index, &skip.reason)).collect();
        assert_eq!(skipped, [(Some("sym"), 0, &SkipReason::Symmetric), (Some("enc"), 2, &SkipReason::Encryption)]);
        assert_eq!(set.skipped[0].to_string(), "key sym: symmetric key in a JWKS");
        assert!(set.by_kid("ec").unwrap().accepts(Algorithm::ES256));
        assert!(!set.by_kid("ec").unwrap().accepts(Algorithm::HS256));
    }

    #[test]
    fn rejects_documents_without_keys() {
        assert_eq!(KeySet::parse(b"{}", EmptyJwks::Keep).unwrap_err(), JwksError::NoKeysArray);
        assert_eq!(KeySet::parse(b"not json", EmptyJwks::Keep).unwrap_err(), JwksError::NotJson);
        assert_eq!(KeySet::parse(br#"{"keys":[]}"#, EmptyJwks::Keep).unwrap_err(), JwksError::Empty);
        let revoked = KeySet::parse(br#"{"keys":[]}"#, EmptyJwks::Revoke).unwrap();
        assert_eq!(revoked.iter().count(), 0);
    }

    fn rsa_jwk(kid: &str, modulus_bytes: usize, exponent: &[u8]) -> Value {
        let mut modulus = vec![0xC5; modulus_bytes];
        modulus[modulus_bytes - 1] |= 1;
        serde_json::json!({"kty": "RSA", "kid": kid, "n": URL_SAFE_NO_PAD.encode(&modulus), "e": URL_SAFE_NO_PAD.encode(exponent)})
    }

    #[test]
    fn hostile_key_sets_are_bounded() {
        let keys: Vec<Value> = (0..=MAX_KEYS).map(|i| rsa_jwk(&format!("k{i}"), 256, &RSA_EXPONENT)).collect();
        let body = serde_json::json!({ "keys": keys }).to_string();
        assert_eq!(KeySet::parse(body.as_bytes(), EmptyJwks::Keep).unwrap_err(), JwksError::TooManyKeys(MAX_KEYS + 1));
        let body = serde_json::json!({"keys": [
            rsa_jwk("huge", 1024, &RSA_EXPONENT),
            rsa_jwk("odd-exponent", 256, &[0x01, 0x00, 0x00, 0x00, 0x01]),
            rsa_jwk("small", 128, &RSA_EXPONENT),
            rsa_jwk("ok", 256, &RSA_EXPONENT),
            rsa_jwk("ok-4096", 512, &RSA_EXPONENT),
        ]})
        .to_string();
        let set = KeySet::parse(body.as_bytes(), EmptyJwks::Keep).unwrap();
        assert_eq!(set.ids(), vec!["ok".to_string(), "ok-4096".to_string()]);
        let reasons: Vec<_> = set.skipped.iter().map(|skip| skip.reason.clone()).collect();
        assert_eq!(
            reasons,
            [SkipReason::RsaModulusSize(8192), SkipReason::RsaExponent, SkipReason::RsaModulusSize(1024)]
        );
        assert_eq!(set.skipped[0].to_string(), "key huge: RSA modulus of 8192 bits (accepted: 2048 to 4096)");
    }
}
