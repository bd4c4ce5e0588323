//! A JWKS document turned into keys that can verify signatures.
//!
//! Each key carries the algorithms its type permits (intersected with the JWK's
//! `alg`), so a token can only ever be checked with a key of the matching family:
//! `alg: HS256` against an RSA key is refused before any crypto runs.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

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
    pub skipped: Vec<String>,
}

impl KeySet {
    pub fn from_keys(keys: Vec<VerificationKey>, skipped: Vec<String>) -> Self {
        let keys: Vec<Arc<VerificationKey>> = keys.into_iter().map(Arc::new).collect();
        let by_kid = keys.iter().filter_map(|key| key.kid.clone().map(|kid| (kid, key.clone()))).collect();
        KeySet { keys, by_kid, skipped }
    }

    /// A shared-secret issuer's single key.
    pub fn from_secret(secret: &[u8]) -> Self {
        let key = VerificationKey {
            id: "secret".into(),
            kid: None,
            kind: KeyKind::Hmac,
            algorithms: KeyKind::Hmac.algorithms().to_vec(),
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

    /// Parses a JWKS body. Unusable entries (encryption keys, unknown curves)
    /// are skipped rather than failing the set: one odd key must not lock users out.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let doc: Value = serde_json::from_slice(body).map_err(|err| format!("JWKS is not JSON: {err}"))?;
        let entries = doc.get("keys").and_then(Value::as_array).ok_or("JWKS has no \"keys\" array")?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match parse_key(entry, index) {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(why),
            }
        }
        if keys.is_empty() {
            return Err(format!("JWKS holds no usable signing key ({})", skipped.join("; ")));
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

fn parse_key(entry: &Value, index: usize) -> Result<VerificationKey, String> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|err| format!("key {index}: {err}"))?;
    let kid = jwk.common.key_id.clone();
    let label = kid.clone().unwrap_or_else(|| format!("#{index}"));
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err(format!("key {label}: use=enc"));
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => KeyKind::EcP256,
            EllipticCurve::P384 => KeyKind::EcP384,
            _ => return Err(format!("key {label}: unsupported curve")),
        },
        AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => KeyKind::Ed25519,
        AlgorithmParameters::OctetKeyPair(_) => {
            return Err(format!("key {label}: unsupported OKP curve"));
        }
        // Symmetric keys never come from a public JWKS: accepting one would let
        // whoever reads the JWKS mint tokens.
        AlgorithmParameters::OctetKey(_) => {
            return Err(format!("key {label}: symmetric key in a JWKS"));
        }
        _ => return Err(format!("key {label}: unsupported key type")),
    };
    let mut algorithms = kind.algorithms().to_vec();
    if let Some(declared) = jwk.common.key_algorithm {
        algorithms.retain(|alg| same_algorithm(*alg, declared));
        if algorithms.is_empty() {
            return Err(format!("key {label}: alg {declared:?} does not fit its key type"));
        }
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|err| format!("key {label}: {err}"))?;
    let id = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|err| format!("key {label}: cannot compute its thumbprint: {err}"))?;
    Ok(VerificationKey { id, kid, kind, algorithms, key })
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
        let set = KeySet::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(set.ids(), vec!["ec".to_string()]);
        assert_eq!(set.skipped.len(), 2);
        assert!(set.by_kid("ec").unwrap().accepts(Algorithm::ES256));
        assert!(!set.by_kid("ec").unwrap().accepts(Algorithm::HS256));
    }

    #[test]
    fn rejects_documents_without_keys() {
        assert!(KeySet::parse(b"{}").is_err());
        assert!(KeySet::parse(b"not json").is_err());
        assert!(KeySet::parse(br#"{"keys":[]}"#).is_err());
    }
}
