//! The Supabase backend through the real Check API: minted tokens checked by an
//! independent verifier (PyJWT), reuse, role hygiene, anonymous access,
//! pass-through, `apikey` replacement, PostgREST-shaped denies, and (when
//! PostgreSQL is installed) row-level security fed with the minted claims.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

const SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters";
const APIKEY: &str = "sb_publishable_test_key";

fn config(issuer: &DevIssuer, backend: &str) -> String {
    format!(
        "{LISTEN_ANY}issuers:\n  kinde: {{ issuer: \"{iss}\", jwks_uri: \"{jwks}\" }}\nbackends:\n  supabase:\n    type: supabase\n    apikey: {APIKEY}\n{backend}routes:\n  - name: supabase-auth\n    match: {{ prefix: /auth/v1/ }}\n    action: allow\n  - name: rest\n    match: {{ prefix: /rest/v1/ }}\n    issuers: [kinde]\n    backend: supabase\n",
        iss = issuer.issuer(),
        jwks = issuer.jwks_uri()
    )
}

fn remint_hs256() -> String {
    format!("    mode: remint\n    signing_key: {SECRET}\n    ttl_seconds: 600\n")
}

/// Headers Envoy would set upstream, and the ones it removes.
fn upstream(response: &CheckResponse) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let ok = assert_allowed(response);
    let set = ok
        .headers
        .iter()
        .map(|option| option.header.as_ref().unwrap())
        .map(|header| (header.key.clone(), header.value.clone()))
        .collect();
    (set, ok.headers_to_remove.iter().cloned().collect())
}

fn minted_token(response: &CheckResponse) -> String {
    let (set, _) = upstream(response);
    set["authorization"].strip_prefix("Bearer ").expect("a bearer token upstream").to_string()
}

async fn rest(client: &mut Client, token: Option<&str>, extra: &[(&str, &str)]) -> CheckResponse {
    let value = token.map(bearer);
    let mut headers: Vec<(&str, &str)> = value.iter().map(|value| ("authorization", value.as_str())).collect();
    headers.extend_from_slice(extra);
    check(client, request("GET", "/rest/v1/notes?select=*", &headers)).await
}

type Client =
    envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<tonic::transport::Channel>;

fn kinde_claims(issuer: &DevIssuer, sub: &str, lifetime: i64) -> Value {
    let mut claims = issuer.claims(sub, "myapp:prod-api", lifetime);
    claims["email"] = json!(format!("{sub}@example.com"));
    claims["email_verified"] = json!(true);
    claims["org_code"] = json!("org_123");
    claims["permissions"] = json!(["read:notes", "write:notes"]);
    claims["roles"] = json!([{"id": "r1", "key": "admin", "name": "Admin"}]);
    claims["given_name"] = json!("Ada");
    // A hostile or careless IdP claim; it must never reach the minted role.
    claims["role"] = json!("service_role");
    claims
}

#[tokio::test]
async fn remint_hs256_mints_the_exact_supabase_claim_set_verified_by_pyjwt() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = start_ready(&config(&issuer, &remint_hs256())).await;
    let mut client = common::client(&running).await;
    let idp_token = key.sign(&kinde_claims(&issuer, "kp_alice", 3600));

    let response = rest(&mut client, Some(&idp_token), &[("apikey", "sb_secret_client_sent")]).await;
    let (set, removed) = upstream(&response);
    assert_eq!(set.keys().collect::<Vec<_>>(), vec!["apikey", "authorization"]);
    assert_eq!(set["apikey"], APIKEY, "the client's apikey is replaced");
    assert!(removed.is_empty());
    let minted = minted_token(&response);

    let verified =
        pyjwt_verify(&[json!({"token": minted, "key": SECRET, "alg": "HS256", "audience": "authenticated"})]);
    let claims = &verified[0]["claims"];
    assert!(verified[0].get("error").is_none(), "{verified:?}");
    assert_eq!(verified[0]["header"]["alg"], "HS256");
    let names: BTreeSet<&str> = claims.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "aal",
            "amr",
            "app_metadata",
            "aud",
            "email",
            "exp",
            "iat",
            "is_anonymous",
            "iss",
            "phone",
            "role",
            "session_id",
            "sub",
            "user_metadata"
        ])
    );
    assert_eq!(claims["sub"], "kp_alice");
    assert_eq!(claims["role"], "authenticated", "an IdP role claim never reaches the minted token");
    assert_eq!(claims["aud"], "authenticated");
    assert_eq!(claims["email"], "kp_alice@example.com");
    assert_eq!(claims["phone"], "");
    assert_eq!(claims["is_anonymous"], false);
    assert_eq!(claims["iss"], "portcullis");
    assert!(claims["iat"].is_u64() && claims["exp"].is_u64(), "integer times: {claims}");
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 600, "ttl_seconds");
    assert_eq!(
        claims["app_metadata"],
        json!({
            "provider": "kinde", "providers": ["kinde"], "org_code": "org_123",
            "permissions": ["read:notes", "write:notes"], "roles": [{"id": "r1", "key": "admin", "name": "Admin"}],
            "role": "service_role"
        })
    );
    assert_eq!(claims["user_metadata"], json!({"given_name": "Ada"}));
    assert_eq!(claims["session_id"].as_str().unwrap().len(), 36, "UUID-shaped: {claims}");
}

// Issue 16, finding 6: GoTrue only puts confirmed addresses in its tokens and
// row-level security trusts `auth.jwt()->>'email'`, so whoever signs up at the
// IdP as ceo@victim.example must not get a Supabase token vouching for it.
#[tokio::test]
async fn remint_copies_only_confirmed_email_and_phone() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = start_ready(&config(&issuer, &remint_hs256())).await;
    let mut client = common::client(&running).await;
    let cases = [
        (json!({"email_verified": false, "phone_verified": false}), "", ""),
        (json!({}), "", ""),
        (json!({"email_verified": "true", "phone_verified": 1}), "", ""),
        (json!({"email_verified": true, "phone_verified": false}), "ceo@victim.example", ""),
        (json!({"email_verified": false, "phone_verified": true}), "", "+15550100"),
    ];
    let mut requests = Vec::new();
    for (index, (verified, _, _)) in cases.iter().enumerate() {
        let mut claims = issuer.claims(&format!("kp_{index}"), "myapp:prod-api", 600);
        claims["email"] = json!("ceo@victim.example");
        claims["phone"] = json!("+15550100");
        for (name, value) in verified.as_object().unwrap() {
            claims[name] = value.clone();
        }
        let minted = minted_token(&rest(&mut client, Some(&key.sign(&claims)), &[]).await);
        requests.push(json!({"token": minted, "key": SECRET, "alg": "HS256", "audience": "authenticated"}));
    }
    for (verified, (case, email, phone)) in pyjwt_verify(&requests).iter().zip(cases) {
        let claims = &verified["claims"];
        assert_eq!((claims["email"].as_str(), claims["phone"].as_str()), (Some(email), Some(phone)), "{case}");
    }
}

#[tokio::test]
async fn remint_es256_with_kid_verified_by_pyjwt_and_capped_by_idp_exp() {
    let (private_pem, public_pem) = es256_key_pair();
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let backend = format!(
        "    mode: remint\n    signing_kid: supabase-imported-1\n    ttl_seconds: 3600\n    signing_key: |\n{}",
        private_pem.lines().map(|line| format!("      {line}\n")).collect::<String>()
    );
    let running = start_ready(&config(&issuer, &backend)).await;
    let mut client = common::client(&running).await;
    let idp_token = key.sign(&kinde_claims(&issuer, "kp_bob", 120));
    let minted = minted_token(&rest(&mut client, Some(&idp_token), &[]).await);
    let verified =
        pyjwt_verify(&[json!({"token": minted, "key": public_pem, "alg": "ES256", "audience": "authenticated"})]);
    assert!(verified[0].get("error").is_none(), "{verified:?}");
    assert_eq!(verified[0]["header"]["kid"], "supabase-imported-1");
    assert_eq!(verified[0]["header"]["alg"], "ES256");
    let claims = &verified[0]["claims"];
    let idp_exp = portcullis::token::Clock::system().now() + 120;
    assert!(claims["exp"].as_u64().unwrap() <= idp_exp, "the minted token never outlives the IdP token: {claims}");
    // A tampered token fails the independent check too.
    let tampered = format!("{}x", &minted[..minted.len() - 1]);
    let rejected =
        pyjwt_verify(&[json!({"token": tampered, "key": public_pem, "alg": "ES256", "audience": "authenticated"})]);
    assert!(rejected[0]["error"].as_str().is_some(), "{rejected:?}");
}

#[tokio::test]
async fn the_same_idp_token_reuses_its_minted_token() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = start_ready(&config(&issuer, &remint_hs256())).await;
    let mut client = common::client(&running).await;
    let alice = key.sign(&kinde_claims(&issuer, "kp_alice", 3600));
    let first = minted_token(&rest(&mut client, Some(&alice), &[]).await);
    let second = minted_token(&rest(&mut client, Some(&alice), &[]).await);
    assert_eq!(first, second, "PostgREST's JWT cache needs a stable token");
    let bob = key.sign(&kinde_claims(&issuer, "kp_bob", 3600));
    assert_ne!(minted_token(&rest(&mut client, Some(&bob), &[]).await), first);
}

#[tokio::test]
async fn anonymous_access_with_and_without_allow_anonymous() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();

    // Not allowed: PostgREST's PGRST302, 401 with a bare Bearer challenge.
    let running = start_ready(&config(&issuer, &remint_hs256())).await;
    let mut client = common::client(&running).await;
    let response = rest(&mut client, None, &[("apikey", "sb_publishable_client")]).await;
    assert_postgrest(&response, 401, "PGRST302", "Anonymous access is disabled");
    assert_eq!(header(assert_denied(&response, 401), "www-authenticate"), Some("Bearer"));

    // Remint: a minted anon token plus apikey.
    let running = start_ready(&config(&issuer, &format!("{}    allow_anonymous: true\n", remint_hs256()))).await;
    let mut client = common::client(&running).await;
    let response = rest(&mut client, None, &[("authorization", "Basic Zm9vOmJhcg==")]).await;
    let (set, _) = upstream(&response);
    assert_eq!(set["apikey"], APIKEY);
    let anon = minted_token(&response);
    let verified = pyjwt_verify(&[json!({"token": anon, "key": SECRET, "alg": "HS256", "audience": null})]);
    assert_eq!(verified[0]["claims"]["role"], "anon", "{verified:?}");
    assert!(verified[0]["claims"].get("sub").is_none());
    assert_eq!(minted_token(&rest(&mut client, None, &[]).await), anon, "anon token reused");

    // Passthrough: apikey only; whatever the client put in Authorization is removed.
    let running = start_ready(&config(&issuer, "    mode: passthrough\n    allow_anonymous: true\n")).await;
    let mut client = common::client(&running).await;
    let (set, removed) = upstream(&rest(&mut client, None, &[("authorization", "Basic Zm9vOmJhcg==")]).await);
    assert_eq!(set, BTreeMap::from([("apikey".to_string(), APIKEY.to_string())]));
    assert_eq!(removed, BTreeSet::from(["authorization".to_string()]));
}

#[tokio::test]
async fn passthrough_keeps_the_token_and_guards_the_role() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = start_ready(&config(&issuer, "    mode: passthrough\n")).await;
    let mut client = common::client(&running).await;
    let mut claims = issuer.claims("user_01", "x", 300);
    claims["role"] = json!("authenticated");
    let token = key.sign(&claims);
    let (set, removed) = upstream(&rest(&mut client, Some(&token), &[("apikey", "sb_secret_from_client")]).await);
    assert_eq!(set["authorization"], bearer(&token));
    assert_eq!(set["apikey"], APIKEY);
    assert!(removed.is_empty());

    // service_role is never accepted from a client token.
    claims["role"] = json!("service_role");
    let response = rest(&mut client, Some(&key.sign(&claims)), &[]).await;
    assert_postgrest(&response, 403, "42501", "a client token may not carry role service_role");
    // Any other role an IdP puts there (WorkOS' org role) would become a Postgres role: refused.
    claims["role"] = json!("admin");
    assert_postgrest(
        &rest(&mut client, Some(&key.sign(&claims)), &[]).await,
        403,
        "42501",
        "the token's role must be \"authenticated\", not \"admin\"",
    );
    // Without require_role_claim, a token without role passes (Supabase runs it as anon).
    claims.as_object_mut().unwrap().remove("role");
    upstream(&rest(&mut client, Some(&key.sign(&claims)), &[]).await);

    let running = start_ready(&config(&issuer, "    mode: passthrough\n    require_role_claim: true\n")).await;
    let mut client = common::client(&running).await;
    let response = rest(&mut client, Some(&key.sign(&claims)), &[]).await;
    assert_postgrest(&response, 403, "42501", "the token has no role claim; Supabase would run it as anon");
    claims["role"] = json!("anon");
    assert_postgrest(
        &rest(&mut client, Some(&key.sign(&claims)), &[]).await,
        403,
        "42501",
        "the token's role must be \"authenticated\", not \"anon\"",
    );
    claims["role"] = json!("authenticated");
    upstream(&rest(&mut client, Some(&key.sign(&claims)), &[]).await);
}

#[track_caller]
fn assert_postgrest(response: &CheckResponse, http_status: i32, code: &str, message: &str) {
    let denied = assert_denied(response, http_status);
    assert_eq!(header(denied, "content-type"), Some("application/json; charset=utf-8"));
    let body: Value = serde_json::from_str(&denied.body).unwrap();
    assert_eq!(body, json!({"code": code, "details": null, "hint": null, "message": message}));
}

#[tokio::test]
async fn denies_use_postgrest_codes_messages_and_challenges() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = start_ready(&config(&issuer, &remint_hs256())).await;
    let mut client = common::client(&running).await;
    let expired = key.sign(&kinde_claims(&issuer, "kp_alice", -3600));
    let response = rest(&mut client, Some(&expired), &[]).await;
    assert_postgrest(&response, 401, "PGRST303", "JWT expired");
    assert_eq!(
        header(assert_denied(&response, 401), "www-authenticate"),
        Some("Bearer error=\"invalid_token\", error_description=\"JWT expired\"")
    );
    let forged = SigningKey::generate(Algorithm::RS256, "k1").sign(&kinde_claims(&issuer, "kp_alice", 300));
    assert_postgrest(
        &rest(&mut client, Some(&forged), &[]).await,
        401,
        "PGRST301",
        "No suitable key or wrong key type",
    );
    assert_postgrest(&rest(&mut client, Some("abc.def"), &[]).await, 401, "PGRST301", "Expected 3 parts in JWT; got 2");
    let empty = check(&mut client, request("GET", "/rest/v1/notes", &[("authorization", "Bearer ")])).await;
    assert_postgrest(&empty, 401, "PGRST301", "Empty JWT is sent in Authorization header");
    let mut other_iss = kinde_claims(&issuer, "kp_alice", 300);
    other_iss["iss"] = json!("https://evil.example.com");
    assert_postgrest(
        &rest(&mut client, Some(&key.sign(&other_iss)), &[]).await,
        401,
        "PGRST303",
        "JWT issuer not allowed",
    );

    // Paths Supabase Auth handles itself pass untouched (action: allow).
    let auth = check(&mut client, request("POST", "/auth/v1/token?grant_type=password", &[])).await;
    let (set, removed) = upstream(&auth);
    assert!(set.is_empty() && removed.is_empty());
}

#[tokio::test]
async fn token_without_sub_is_refused_in_remint_mode() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = start_ready(&config(&issuer, &remint_hs256())).await;
    let mut client = common::client(&running).await;
    let mut m2m = issuer.claims("unused", "x", 300);
    m2m.as_object_mut().unwrap().remove("sub");
    let response = rest(&mut client, Some(&key.sign(&m2m)), &[]).await;
    assert_postgrest(
        &response,
        403,
        "42501",
        "the token has no sub claim; Supabase row-level security needs a subject",
    );
}

#[tokio::test]
async fn custom_app_metadata_mapping_for_namespaced_claims() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let backend = format!(
        "{}    app_metadata:\n      roles: \"$['https://acme.com/roles']\"\n      tenant: $.org_id\n",
        remint_hs256()
    );
    let running = start_ready(&config(&issuer, &backend)).await;
    let mut client = common::client(&running).await;
    let mut claims = issuer.claims("auth0|abc", "x", 300);
    claims["https://acme.com/roles"] = json!(["editor"]);
    claims["org_id"] = json!("org_9");
    let minted = minted_token(&rest(&mut client, Some(&key.sign(&claims)), &[]).await);
    let verified =
        pyjwt_verify(&[json!({"token": minted, "key": SECRET, "alg": "HS256", "audience": "authenticated"})]);
    assert_eq!(
        verified[0]["claims"]["app_metadata"],
        json!({"provider": "kinde", "providers": ["kinde"], "roles": ["editor"], "tenant": "org_9"})
    );
}

#[test]
fn supabase_config_errors_name_their_path() {
    let bad = "issuers:\n  k: { issuer: https://k.example.com }\nbackends:\n  short: { type: supabase, apikey: k, signing_key: too-short }\n  pem: { type: supabase, apikey: k, signing_key: \"-----BEGIN PRIVATE KEY-----\\nabc\\n-----END PRIVATE KEY-----\" }\n  mixed: { type: supabase, apikey: '', mode: passthrough, signing_key: 0123456789abcdef0123456789abcdef }\n  role: { type: supabase, apikey: k, signing_key: 0123456789abcdef0123456789abcdef, require_role_claim: true }\n  none: { type: supabase, apikey: k }\nroutes: []\n";
    let err = portcullis::policy::parse_str(bad, "t").unwrap_err().to_string();
    for expected in [
        "backends.short.signing_key: an HS256 secret must be at least 32 bytes",
        "backends.pem.signing_key: signing_kid is required with a PEM key",
        "backends.mixed.apikey: must not be empty",
        "backends.mixed.signing_key: only used with mode: remint",
        "backends.role.require_role_claim: only applies to mode: passthrough",
        "backends.none.signing_key: required with mode: remint",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in {err}");
    }
}

/// A fresh P-256 key pair as (PKCS#8 private PEM, SPKI public PEM).
fn es256_key_pair() -> (String, String) {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let spki = pair.public_key().as_der().unwrap();
    let pem = portcullis::dev::issuer::pem;
    (pem("PRIVATE KEY", pkcs8.as_ref()), pem("PUBLIC KEY", spki.as_ref()))
}
