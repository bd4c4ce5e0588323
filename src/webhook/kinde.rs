//! Kinde: `POST` with `Content-Type: application/jwt`, the body a JWT signed
//! with the environment's ordinary JWKS keys, with no `iss`, `aud` or `exp`
//! and the claims `type`, `event_id`, `source`, `timestamp` (RFC 3339, any
//! offset, microseconds) and `data`. The signature is checked with the
//! issuer's own key cache (and its unknown-kid rules). Because every access
//! token of that environment verifies under the same keys, the delivery must
//! have the webhook's shape and none of an access token's claims. The
//! `webhook-id` header is outside the signature: replays are recognised by
//! the signed `event_id`.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{DeliveryError, Verified, Window};
use crate::issuer::Issuer;
use crate::keys::HMAC_ALGORITHMS;
use crate::verify::{Parsed, TokenError, VerifyFailure, signed_claims};

/// Claims only an access (or ID) token carries.
const ACCESS_TOKEN_CLAIMS: [&str; 4] = ["aud", "exp", "scp", "azp"];

pub async fn verify(issuer: &Arc<Issuer>, body: &[u8], window: Window) -> Result<Verified, DeliveryError> {
    // Kinde's body is the compact JWT; a trailing newline is tolerated.
    let token = std::str::from_utf8(body).map_err(|_| DeliveryError::Malformed("the body is not a JWT"))?;
    let token = token.trim_end_matches(['\r', '\n', ' ', '\t']);
    let parsed = Parsed::new(token).map_err(|err| match err {
        TokenError::AlgNone => DeliveryError::BadSignature,
        _ => DeliveryError::Malformed("the body is not a JWT"),
    })?;
    // A shared-secret algorithm is never Kinde's, whatever the issuer allows:
    // refused here, before any key is looked up or fetched.
    if HMAC_ALGORITHMS.contains(&parsed.alg) {
        return Err(DeliveryError::BadSignature);
    }
    let claims = signed_claims(token, &parsed, issuer).await.map_err(|failure| match failure {
        VerifyFailure::KeysUnavailable(_) => DeliveryError::KeysUnavailable,
        VerifyFailure::Invalid(_) => DeliveryError::BadSignature,
    })?;
    shape(claims, window)
}

/// The webhook's shape, then its age.
fn shape(claims: Map<String, Value>, window: Window) -> Result<Verified, DeliveryError> {
    if ACCESS_TOKEN_CLAIMS.iter().any(|claim| claims.contains_key(*claim)) {
        return Err(DeliveryError::AccessToken);
    }
    let text = |name: &str| claims.get(name).and_then(Value::as_str).filter(|value| !value.is_empty());
    let event_type = text("type").ok_or(DeliveryError::Malformed("no event type"))?.to_string();
    let id = text("event_id").filter(|id| id.starts_with("event_"));
    let id = id.ok_or(DeliveryError::Malformed("no event_id"))?.to_string();
    let timestamp = text("timestamp").ok_or(DeliveryError::Malformed("no timestamp"))?;
    let at = chrono::DateTime::parse_from_rfc3339(timestamp)
        .map_err(|_| DeliveryError::Malformed("the timestamp is not RFC 3339"))?
        .timestamp();
    if !claims.get("data").is_some_and(Value::is_object) {
        return Err(DeliveryError::Malformed("no data object"));
    }
    let signed_at = window.check(at)?;
    Ok(Verified { id, event_type, payload: Value::Object(claims), signed_at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Answer, ScriptedFetcher, es256, issuer, runtime};
    use serde_json::json;

    /// Kinde's own fixture payload (from its decoder's tests), dated 2024-05-01T07:41:45Z.
    fn fixture() -> Value {
        json!({"data":{"user":{"email":"daniel@kinde.com","first_name":"Daniel","id":"kp_65b2","is_password_reset_requested":false,
          "is_suspended":false,"last_name":"Rivers","organizations":[{"code":"org_590d7f1a86a","permissions":null,"roles":null}],
          "phone":null,"username":"daniel"}},
          "event_id":"event_018f331a3178f7fef284b95fe6770384","source":"admin",
          "timestamp":"2024-05-01T17:41:45.592145+10:00","type":"user.updated"})
    }
    const FIXTURE_AT: u64 = 1_714_549_305;

    async fn kinde() -> (Arc<Issuer>, crate::dev::SigningKey, Arc<ScriptedFetcher>) {
        let key = es256("4c:fa:9e");
        let fetcher = ScriptedFetcher::new([Answer::keys(&[&key])]);
        let runtime = runtime(fetcher.clone());
        let issuer = issuer(
            "{ issuer: 'https://acme.kinde.com', jwks_uri: 'https://acme.kinde.com/.well-known/jwks' }",
            &runtime,
        );
        (issuer, key, fetcher)
    }

    fn window(now: u64) -> Window {
        Window { max_age: 172_800, now }
    }

    #[tokio::test]
    async fn a_signed_delivery_with_an_offset_and_microseconds_verifies() {
        let (issuer, key, _) = kinde().await;
        issuer.keys.refresh().await.unwrap();
        let body = format!("{}\n", key.sign(&fixture()));
        let verified = verify(&issuer, body.as_bytes(), window(FIXTURE_AT + 60)).await.unwrap();
        assert_eq!(verified.id, "event_018f331a3178f7fef284b95fe6770384");
        assert_eq!(verified.event_type, "user.updated");
        assert_eq!(verified.signed_at, FIXTURE_AT);
        assert_eq!(verified.payload["data"]["user"]["id"], "kp_65b2");
        assert_eq!(verify(&issuer, body.as_bytes(), window(FIXTURE_AT + 172_801)).await, Err(DeliveryError::Stale));
        assert_eq!(verify(&issuer, body.as_bytes(), window(FIXTURE_AT - 301)).await, Err(DeliveryError::Future));
    }

    #[tokio::test]
    async fn an_access_token_signed_by_the_same_keys_is_refused() {
        let (issuer, key, _) = kinde().await;
        issuer.keys.refresh().await.unwrap();
        for claim in ACCESS_TOKEN_CLAIMS {
            let mut token = fixture();
            token[claim] = json!("x");
            let body = key.sign(&token);
            assert_eq!(
                verify(&issuer, body.as_bytes(), window(FIXTURE_AT)).await,
                Err(DeliveryError::AccessToken),
                "{claim}"
            );
        }
        let access = json!({"iss": "https://acme.kinde.com", "sub": "kp_1", "aud": [], "exp": FIXTURE_AT + 60, "scp": ["openid"]});
        let body = key.sign(&access);
        assert_eq!(verify(&issuer, body.as_bytes(), window(FIXTURE_AT)).await, Err(DeliveryError::AccessToken));
    }

    #[tokio::test]
    async fn payload_shapes_that_are_not_kinde_webhooks_are_refused() {
        let (issuer, key, _) = kinde().await;
        issuer.keys.refresh().await.unwrap();
        let cases = [
            ("type", json!(null), DeliveryError::Malformed("no event type")),
            ("event_id", json!("msg_1"), DeliveryError::Malformed("no event_id")),
            ("timestamp", json!("yesterday"), DeliveryError::Malformed("the timestamp is not RFC 3339")),
            ("data", json!("x"), DeliveryError::Malformed("no data object")),
        ];
        for (claim, value, expected) in cases {
            let mut payload = fixture();
            payload[claim] = value;
            assert_eq!(verify(&issuer, key.sign(&payload).as_bytes(), window(FIXTURE_AT)).await, Err(expected));
        }
        let mut utc = fixture();
        utc["timestamp"] = json!("2024-05-01T07:41:45Z");
        assert_eq!(verify(&issuer, key.sign(&utc).as_bytes(), window(FIXTURE_AT)).await.unwrap().signed_at, FIXTURE_AT);
    }

    #[tokio::test]
    async fn hs256_and_none_are_refused_before_any_key_fetch() {
        let (issuer, key, fetcher) = kinde().await;
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &fixture(),
            &jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert_eq!(verify(&issuer, hs.as_bytes(), window(FIXTURE_AT)).await, Err(DeliveryError::BadSignature));
        let signed = key.sign(&fixture());
        let payload = signed.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIn0.{payload}.");
        assert_eq!(verify(&issuer, none.as_bytes(), window(FIXTURE_AT)).await, Err(DeliveryError::BadSignature));
        assert_eq!(fetcher.calls(), 0, "no key was fetched");
        // A forged signature is refused once the keys are there.
        issuer.keys.refresh().await.unwrap();
        let forged = format!("{}.{}", &signed[..signed.rfind('.').unwrap()], "AAAA");
        assert_eq!(verify(&issuer, forged.as_bytes(), window(FIXTURE_AT)).await, Err(DeliveryError::BadSignature));
    }
}
