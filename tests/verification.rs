//! Token verification through the real Check API: a real loopback issuer,
//! real signed tokens, the server in-process, a tonic client from envoy-types.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, Header};
use serde_json::json;

const AUD: &str = "api";

struct Setup {
    issuer: DevIssuer,
    rsa: SigningKey,
    ec: SigningKey,
    ed: SigningKey,
    running: portcullis::server::Running,
}

async fn setup() -> Setup {
    let rsa = SigningKey::generate(Algorithm::RS256, "rsa-1");
    let ec = SigningKey::generate(Algorithm::ES256, "ec-1");
    let ed = SigningKey::generate(Algorithm::EdDSA, "ed-1");
    let issuer = DevIssuer::start(&[&rsa, &ec, &ed]).await.unwrap();
    let running = start_ready(&config_for(&issuer, AUD)).await;
    Setup { issuer, rsa, ec, ed, running }
}

#[tokio::test]
async fn valid_rs256_es256_and_eddsa_tokens_are_allowed_with_metadata() {
    let s = setup().await;
    let mut client = client(&s.running).await;
    for key in [&s.rsa, &s.ec, &s.ed] {
        let token = key.sign(&s.issuer.claims("user-1", AUD, 300));
        let response = check_token(&mut client, "/things", &token).await;
        assert_allowed(&response);
        let metadata = response.dynamic_metadata.as_ref().expect("metadata on allow");
        let text = |name: &str| match metadata.fields.get(name).and_then(|value| value.kind.as_ref()) {
            Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(text)) => text.clone(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(text("iss"), s.issuer.issuer(), "{:?}", key.alg);
        assert_eq!(text("sub"), "user-1");
        assert_eq!(text("route"), "routes[0]");
    }
}

#[tokio::test]
async fn audience_list_is_any_of_and_scheme_is_case_insensitive() {
    let s = setup().await;
    let mut client = client(&s.running).await;
    let mut claims = s.issuer.claims("user-1", AUD, 300);
    claims["aud"] = json!(["other", AUD]);
    let token = s.rsa.sign(&claims);
    let value = format!("bEaReR {token}");
    assert_allowed(&check(&mut client, request("GET", "/", &[("authorization", &value)])).await);
}

#[tokio::test]
async fn missing_token_is_401_with_a_realm_challenge() {
    let s = setup().await;
    let mut client = client(&s.running).await;
    for headers in [vec![], vec![("authorization", "Basic dXNlcjpwYXNz")]] {
        let response = check(&mut client, request("GET", "/", &headers)).await;
        let denied = assert_denied(&response, 401);
        assert_eq!(header(denied, "www-authenticate"), Some("Bearer realm=\"portcullis\""));
        assert_eq!(header(denied, "content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(status_code(&response), 16, "UNAUTHENTICATED");
    }
}

#[tokio::test]
async fn invalid_tokens_are_401_invalid_token_with_a_reason() {
    let s = setup().await;
    let mut client = client(&s.running).await;
    let claims = |lifetime| s.issuer.claims("user-1", AUD, lifetime);
    let now = portcullis::token::Clock::system().now() as i64;

    let expired = s.rsa.sign(&claims(-3600));
    let mut not_yet = claims(3600);
    not_yet["nbf"] = json!(now + 1800);
    let mut future_iat = claims(3600);
    future_iat["iat"] = json!(now + 1800);
    let mut wrong_iss = claims(300);
    wrong_iss["iss"] = json!("https://evil.example.com");
    let wrong_aud = s.rsa.sign(&s.issuer.claims("user-1", "someone-else", 300));
    let mut no_exp = claims(300);
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut no_aud = claims(300);
    no_aud.as_object_mut().unwrap().remove("aud");

    // Signed by a key the issuer never published, under a published kid.
    let impostor = SigningKey::generate(Algorithm::RS256, "rsa-1");
    let bad_signature = impostor.sign(&claims(300));
    let valid = s.rsa.sign(&claims(300));
    let (head, rest) = valid.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let tampered_payload = format!(
        "{head}.{}.{signature}",
        base64_url(
            &serde_json::to_vec(&json!({"iss": s.issuer.issuer(), "sub": "admin", "aud": AUD, "exp": now + 300}))
                .unwrap()
        )
    );
    let unknown_kid = SigningKey::generate(Algorithm::RS256, "never-published").sign(&claims(300));
    let alg_none = common::idp::unsigned_token(&json!({"alg": "none", "typ": "JWT"}), &claims(300));
    let alg_none_upper = common::idp::unsigned_token(&json!({"alg": "NONE", "kid": "rsa-1"}), &claims(300));

    // The classic confusion attack: HMAC keyed with the RSA public key, naming the RSA kid.
    let public_jwk = serde_json::to_vec(&s.rsa.jwk).unwrap();
    let hs_with_public_key = SigningKey::hmac(Algorithm::HS256, "rsa-1", &public_jwk).sign(&claims(300));
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = None;
    let hs_no_kid = SigningKey::hmac(Algorithm::HS256, "x", &public_jwk).sign_with_header(&hs_header, &claims(300));

    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", expired, "expired"),
        ("not yet valid", s.rsa.sign(&not_yet), "not valid yet"),
        ("issued in the future", s.rsa.sign(&future_iat), "issued in the future"),
        ("wrong iss", s.rsa.sign(&wrong_iss), "not accepted here"),
        ("wrong aud", wrong_aud, "audience"),
        ("no exp", s.rsa.sign(&no_exp), "required claim exp"),
        ("no aud while audiences are configured", s.rsa.sign(&no_aud), "required claim aud"),
        ("bad signature", bad_signature, "signature is invalid"),
        ("tampered payload", tampered_payload, "signature is invalid"),
        ("unknown kid", unknown_kid, "no key with kid"),
        ("alg none", alg_none, "alg none"),
        ("alg NONE", alg_none_upper, "alg none"),
        ("HS256 keyed with the RSA public key", hs_with_public_key, "HS256 is not accepted"),
        ("HS256 without kid", hs_no_kid, "HS256 is not accepted"),
        ("garbage", "not-a-jwt".into(), "expected 3 parts, got 1"),
        ("two parts", "abc.def".into(), "expected 3 parts, got 2"),
        ("bad base64", "!!!.???.###".into(), "base64url"),
        ("JSON array header", format!("{}.{}.sig", base64_url(b"[1]"), base64_url(b"{}")), "JSON object"),
        ("oversized", format!("{}.{}.sig", "a".repeat(20_000), "b"), "larger than"),
    ];
    for (name, token, fragment) in cases {
        let response = check_token(&mut client, "/", &token).await;
        assert_eq!(status_code(&response), 16, "{name}");
        assert_invalid_token(&response, fragment);
    }
}

#[tokio::test]
async fn empty_bearer_is_invalid_not_missing() {
    let s = setup().await;
    let mut client = client(&s.running).await;
    let response = check(&mut client, request("GET", "/", &[("authorization", "Bearer ")])).await;
    assert_invalid_token(&response, "empty");
}

#[tokio::test]
async fn absurd_but_signed_expiry_does_not_crash_the_check() {
    let s = setup().await;
    let mut client = client(&s.running).await;
    let mut claims = s.issuer.claims("user-1", AUD, 300);
    claims["exp"] = json!(9_223_372_036_854_775_808u64);
    let token = s.rsa.sign(&claims);
    assert_allowed(&check_token(&mut client, "/", &token).await);
    assert_allowed(&check_token(&mut client, "/", &token).await); // from the cache
}

#[test]
fn leeway_is_bounded_in_config() {
    let text = "issuers:\n  a: { issuer: https://a.example.com, leeway_seconds: 1000000 }\n  h: { hasura_jwt_secret: { jwk_url: https://h.example.com/jwks, allowed_skew: 1e30 } }\nroutes: []\n";
    let err = portcullis::policy::parse_str(text, "t").unwrap_err().to_string();
    assert!(err.contains("issuers.a.leeway_seconds: at most 86400 seconds"), "{err}");
    assert!(err.contains("issuers.h.hasura_jwt_secret.allowed_skew: at most 86400 seconds"), "{err}");
}

#[tokio::test]
async fn leeway_tolerates_small_clock_skew() {
    let s = setup().await;
    let mut client = client(&s.running).await;
    // Expired 10 s ago: inside the default 30 s leeway.
    let token = s.rsa.sign(&s.issuer.claims("user-1", AUD, -10));
    assert_allowed(&check_token(&mut client, "/", &token).await);
}

#[tokio::test]
async fn shared_secret_issuer_verifies_hs256() {
    let secret = "a-very-long-shared-secret-of-32-bytes-or-more!";
    let config = format!(
        "{LISTEN_ANY}issuers:\n  supa:\n    issuer: https://project.supabase.co/auth/v1\n    secret: \"{secret}\"\nroutes:\n  - match: {{ prefix: / }}\n"
    );
    let running = start_ready(&config).await;
    let mut client = client(&running).await;
    let key = SigningKey::hmac(Algorithm::HS256, "unused", secret.as_bytes());
    let now = portcullis::token::Clock::system().now();
    let claims =
        json!({"iss": "https://project.supabase.co/auth/v1", "sub": "u", "exp": now + 60, "role": "authenticated"});
    let mut no_kid = Header::new(Algorithm::HS256);
    no_kid.kid = None;
    assert_allowed(&check_token(&mut client, "/", &key.sign_with_header(&no_kid, &claims)).await);
    let wrong = SigningKey::hmac(Algorithm::HS256, "unused", b"another-secret-that-is-long-enough-too!!");
    assert_invalid_token(&check_token(&mut client, "/", &wrong.sign_with_header(&no_kid, &claims)).await, "signature");
    // A public-key algorithm can never be verified with a shared secret.
    let rsa = SigningKey::generate(Algorithm::RS256, "r");
    assert_invalid_token(&check_token(&mut client, "/", &rsa.sign(&claims)).await, "RS256 is not accepted");
}

#[tokio::test]
async fn tokens_from_a_custom_header_and_a_cookie() {
    let key = SigningKey::generate(Algorithm::ES256, "ec");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let config = format!(
        "{LISTEN_ANY}issuers:\n  hdr:\n    issuer: {iss}\n    jwks_uri: {jwks}\n    token_from: {{ header: X-Auth-Token, prefix: \"JWT \" }}\n  jar:\n    issuer: {iss}\n    jwks_uri: {jwks}\n    token_from: {{ cookie: session }}\nroutes:\n  - match: {{ prefix: /header }}\n    issuers: [hdr]\n  - match: {{ prefix: /cookie }}\n    issuers: [jar]\n",
        iss = issuer.issuer(),
        jwks = issuer.jwks_uri()
    );
    let running = start_ready(&config).await;
    let mut client = client(&running).await;
    let token = key.sign(&issuer.claims("u", "any", 60));
    let in_header = format!("JWT {token}");
    assert_allowed(&check(&mut client, request("GET", "/header", &[("x-auth-token", &in_header)])).await);
    // The header route ignores Authorization; the cookie route ignores headers.
    let bearer_value = bearer(&token);
    assert_denied(&check(&mut client, request("GET", "/header", &[("authorization", &bearer_value)])).await, 401);
    let cookie = format!("theme=dark; session={token}");
    assert_allowed(&check(&mut client, request("GET", "/cookie", &[("cookie", &cookie)])).await);
    assert_denied(&check(&mut client, request("GET", "/cookie", &[("x-auth-token", &in_header)])).await, 401);
}

#[tokio::test]
async fn raw_header_map_is_read_like_headers() {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let s = setup().await;
    let mut client = client(&s.running).await;
    let token = s.rsa.sign(&s.issuer.claims("user-1", AUD, 300));
    let mut raw = request("GET", "/", &[]);
    let http = raw.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    http.headers.clear();
    let entry = |key: &str, value: &str| HeaderValue {
        key: key.into(),
        raw_value: value.as_bytes().to_vec(),
        ..Default::default()
    };
    http.header_map = Some(HeaderMap { headers: vec![entry(":path", "/"), entry("authorization", &bearer(&token))] });
    assert_allowed(&check(&mut client, raw).await);
}

#[tokio::test]
async fn an_empty_check_request_is_denied_not_an_error() {
    let s = setup().await;
    let mut client = client(&s.running).await;
    // No path at all matches no route: deny by default.
    let response = check(&mut client, envoy_types::pb::envoy::service::auth::v3::CheckRequest::default()).await;
    assert_denied(&response, 403);
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
