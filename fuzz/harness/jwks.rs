//! Target `jwks`: a JWKS document as an IdP (or anyone on its path) could
//! serve it, parsed by `keys::KeySet::parse`, and each usable key then asked to
//! verify fixed RS256, ES256 and EdDSA tokens, so that odd key material meets
//! the signature code the way a Check would bring it there.
//!
//! Invariants: a set holds 1..=100 keys (an empty `keys` array is an error
//! unless `empty_jwks: revoke` says it means "no keys"); every key accepts at
//! least one algorithm and only algorithms of its own family; a key with a
//! `kid` is found by it; skipped entries print as single printable lines
//! (their kid and reason are logged and shown by `admin status`).

use std::sync::LazyLock;

use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use portcullis::config::EmptyJwks;
use portcullis::keys::{JwksError, KeyKind, KeySet};
use serde_json::{Value, json};

use super::fixtures::{self, NOW};

/// The most keys a JWKS may hold (portcullis' `keys::jwks::MAX_KEYS`).
const MAX_KEYS: usize = 100;
/// Verification work per input is bounded like a Check's (a kid-less token tries at most 10 keys).
const MAX_KEYS_TRIED: usize = 10;

/// One token per public-key family, signed by the fixed private keys.
static TOKENS: LazyLock<Vec<(Algorithm, String)>> = LazyLock::new(|| {
    let claims = json!({"iss": "https://jwks.fuzz.test", "sub": "user-1", "exp": NOW + 600});
    let sign = |alg: Algorithm, key: EncodingKey| {
        let mut header = Header::new(alg);
        header.kid = Some("fuzz".into());
        (alg, jsonwebtoken::encode(&header, &claims, &key).expect("signing with a fixture key"))
    };
    vec![
        sign(Algorithm::RS256, EncodingKey::from_rsa_pem(fixtures::RSA_PRIVATE_PEM.as_bytes()).expect("RSA key")),
        sign(Algorithm::ES256, EncodingKey::from_ec_pem(fixtures::EC_PRIVATE_PEM.as_bytes()).expect("EC key")),
        sign(Algorithm::EdDSA, EncodingKey::from_ed_pem(fixtures::ED_PRIVATE_PEM.as_bytes()).expect("Ed25519 key")),
    ]
});

pub fn run(data: &[u8]) {
    match KeySet::parse(data, EmptyJwks::Keep) {
        Ok(set) => check_set(&set),
        Err(JwksError::Empty) => {
            let revoked = KeySet::parse(data, EmptyJwks::Revoke).expect("an empty JWKS revokes when told to");
            assert_eq!(revoked.iter().count(), 0);
        }
        Err(err) => {
            assert!(KeySet::parse(data, EmptyJwks::Revoke).is_err(), "only emptiness depends on empty_jwks");
            let _ = err.to_string();
        }
    }
}

fn family(kind: KeyKind) -> &'static [Algorithm] {
    use Algorithm::*;
    match kind {
        KeyKind::Rsa => &[RS256, RS384, RS512, PS256, PS384, PS512],
        KeyKind::EcP256 => &[ES256],
        KeyKind::EcP384 => &[ES384],
        KeyKind::Ed25519 => &[EdDSA],
        KeyKind::Hmac => panic!("a JWKS never yields a shared secret"),
    }
}

fn check_set(set: &KeySet) {
    let count = set.iter().count();
    assert!((1..=MAX_KEYS).contains(&count), "{count} keys");
    assert_eq!(set.ids().len(), count);
    assert_eq!(set.has_kids(), set.iter().any(|key| key.kid.is_some()));
    for skipped in &set.skipped {
        let line = skipped.to_string();
        assert!(!line.chars().any(char::is_control), "an unescaped skip reason: {line:?}");
    }
    for key in set.iter() {
        assert!(!key.algorithms.is_empty(), "key {:?} accepts nothing", key.kid);
        assert!(key.algorithms.iter().all(|alg| family(key.kind).contains(alg)), "{key:?}: {:?}", key.algorithms);
        assert!(set.contains_id(&key.id));
        if let Some(kid) = &key.kid {
            assert_eq!(set.by_kid(kid).and_then(|found| found.kid.as_deref()), Some(kid.as_str()));
        }
    }
    for key in set.iter().take(MAX_KEYS_TRIED) {
        for (alg, token) in TOKENS.iter().filter(|(alg, _)| key.accepts(*alg)) {
            let mut validation = Validation::new(*alg);
            validation.validate_exp = false;
            validation.required_spec_claims.clear();
            let _ = jsonwebtoken::decode::<Value>(token, &key.key, &validation);
        }
    }
}
