//! Target `token`: a bearer token as a client sends it, parsed and verified by
//! the real authentication step (`authenticate::vouch`) against a fixed key
//! set: an HS256 secret, and RSA, EC P-256 and Ed25519 PEM public keys.
//!
//! The first byte chooses how the rest is read. Even: the token text as is
//! (seeds are real signed tokens). Odd: `header JSON \n payload JSON`, encoded
//! and signed with the HS256 secret here, so the claim checks see validly
//! signed tokens of every shape and not only signature failures.
//!
//! Invariants: keys are static, so a token is never "keys unavailable"; a
//! refused token is a 401 `invalid_token` with a sendable challenge and a
//! JSON body; an accepted token really meets its issuer's rules (iss, aud,
//! exp, nbf, iat within the leeway, an algorithm the issuer allows).

use std::sync::{Arc, LazyLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use portcullis::authenticate::vouch;
use portcullis::backend::plain;
use portcullis::decision::{Decision, Denied, DenyReason};
use portcullis::dev::SigningKey;
use portcullis::face::ext_authz_grpc::check_response;
use portcullis::issuer::Issuer;
use portcullis::policy::Policy;
use portcullis::token::{Clock, digest};
use portcullis::verify::VerifyFailure;
use serde_json::{Value, json};

use super::fixtures::{self, Answer, HS_SECRET, NOW};

pub const HS_ISSUER: &str = "https://hs.fuzz.test";
pub const RSA_ISSUER: &str = "https://rsa.fuzz.test";
pub const EC_ISSUER: &str = "https://ec.fuzz.test";
pub const AUDIENCE: &str = "api";

/// Every issuer reads the Authorization header; the route accepts them all.
pub fn config() -> Value {
    json!({
        "cache": { "tokens": 0 },
        "issuers": {
            "hs": { "issuer": HS_ISSUER, "secret": HS_SECRET, "audiences": [AUDIENCE] },
            "rsa": { "hasura_jwt_secret": {
                "type": "RS256", "key": fixtures::RSA_PUBLIC_PEM, "issuer": RSA_ISSUER, "audience": [AUDIENCE, "hasura"]
            } },
            "ec": { "hasura_jwt_secret": { "type": "ES256", "key": fixtures::EC_PUBLIC_PEM, "issuer": EC_ISSUER, "allowed_skew": 5 } },
            // No issuer: any iss is accepted, as Hasura does.
            "ed": { "hasura_jwt_secret": { "type": "Ed25519", "key": fixtures::ED_PUBLIC_PEM } }
        },
        "routes": [ { "match": { "prefix": "/" } } ]
    })
}

static POLICY: LazyLock<Policy> = LazyLock::new(|| fixtures::policy(&config()));
static SIGNER: LazyLock<SigningKey> =
    LazyLock::new(|| SigningKey::hmac(Algorithm::HS256, "fuzz", HS_SECRET.as_bytes()));

pub fn run(data: &[u8]) {
    accepts(data);
}

/// Whether the token `data` stands for is accepted (after checking every invariant).
pub fn accepts(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else { return false };
    let token = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let text = String::from_utf8_lossy(rest);
        let (header, payload) = text.split_once('\n').unwrap_or((&text, "{}"));
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let signature = SIGNER.sign_raw(input.as_bytes());
        format!("{input}.{signature}")
    };
    verify(&token)
}

fn verify(token: &str) -> bool {
    let policy = &*POLICY;
    let clock = Clock::fixed(NOW);
    let candidates: Vec<&Arc<Issuer>> = policy.issuers.iter().collect();
    let outcome = fixtures::block_on(vouch(&policy.cache, &clock, token, &digest(token), &candidates));
    match outcome {
        Ok(vouched) => {
            accepted(token, &vouched.token.claims, vouched.issuer);
            true
        }
        Err(VerifyFailure::Invalid(err)) => {
            let reason = DenyReason::InvalidToken(err);
            assert_eq!(reason.http_status(), 401);
            let rendered = plain::render(&reason);
            let denied = Denied { reason, route: Some("fuzz".into()), rendered };
            match fixtures::check_response(&check_response(&Decision::Deny(denied))) {
                Answer::Denied { status: 401 } => false,
                other => panic!("an invalid token must be a 401, got {other:?}"),
            }
        }
        Err(VerifyFailure::KeysUnavailable(issuer)) => panic!("static keys of {issuer} are always available"),
    }
}

/// An accepted token meets every rule of the issuer that vouched for it.
fn accepted(token: &str, claims: &serde_json::Map<String, Value>, issuer: &Issuer) {
    let leeway = issuer.leeway_seconds;
    let header_part = token.split('.').next().expect("a JWT has a header");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_part).expect("base64url header")).expect("a JSON header");
    let alg: Algorithm = header["alg"].as_str().expect("alg").parse().expect("a known alg");
    assert!(issuer.algorithms.contains(&alg), "{alg:?} is not allowed for {}", issuer.name);
    assert!(header.get("crit").is_none(), "crit headers are refused");
    let exp = claims.get("exp").and_then(Value::as_u64).expect("exp is required");
    assert!(exp.saturating_add(leeway) >= NOW, "expired token accepted");
    for name in ["nbf", "iat"] {
        if let Some(value) = claims.get(name) {
            let at = value.as_f64().expect("a numeric time");
            assert!(at <= (NOW + leeway) as f64, "{name} in the future accepted");
        }
    }
    let strings = |value: &Value| -> Vec<String> {
        match value {
            Value::String(one) => vec![one.clone()],
            Value::Array(many) => many.iter().map(|item| item.as_str().expect("string items").to_string()).collect(),
            other => panic!("not a string or list: {other}"),
        }
    };
    if let Some(expected) = &issuer.issuer {
        let iss = strings(claims.get("iss").expect("iss is required"));
        assert!(!iss.is_empty() && iss.iter().all(|value| value == expected), "iss {iss:?} accepted by {expected}");
    }
    if let Some(audiences) = &issuer.audiences {
        let aud = strings(claims.get("aud").expect("aud is required"));
        assert!(aud.iter().any(|value| audiences.contains(value)), "aud {aud:?} accepted");
    }
}
