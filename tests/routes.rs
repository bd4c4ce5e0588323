//! Route selection through the real Check API: first match wins, actions,
//! per-route issuer sets, and deny-by-default.

mod common;

use common::*;
use jsonwebtoken::Algorithm;

struct TwoIssuers {
    a: DevIssuer,
    b: DevIssuer,
    key_a: SigningKey,
    key_b: SigningKey,
    running: portcullis::server::Running,
}

async fn two_issuers() -> TwoIssuers {
    let key_a = SigningKey::generate(Algorithm::RS256, "a");
    let key_b = SigningKey::generate(Algorithm::ES256, "b");
    let a = DevIssuer::start(&[&key_a]).await.unwrap();
    let b = DevIssuer::start(&[&key_b]).await.unwrap();
    let config = format!(
        r#"{LISTEN_ANY}issuers:
  a: {{ issuer: "{a_iss}", jwks_uri: "{a_jwks}" }}
  b: {{ issuer: "{b_iss}", jwks_uri: "{b_jwks}" }}
routes:
  - name: health
    match: {{ path: /healthz }}
    action: allow
  - name: internal
    match: {{ prefix: /internal/ }}
    action: deny
  - name: only-a
    match: {{ prefix: /a/ }}
    issuers: [a]
  - name: only-b-writes
    match: {{ prefix: /b/, methods: [POST, PUT] }}
    issuers: [b]
  - name: admin-host
    match: {{ prefix: /, hosts: [admin.example.com] }}
    issuers: [a]
  - name: both
    match: {{ prefix: /both/ }}
"#,
        a_iss = a.issuer(),
        a_jwks = a.jwks_uri(),
        b_iss = b.issuer(),
        b_jwks = b.jwks_uri()
    );
    let running = start_ready(&config).await;
    TwoIssuers { a, b, key_a, key_b, running }
}

fn route_of(response: &envoy_types::pb::envoy::service::auth::v3::CheckResponse) -> String {
    let metadata = response.dynamic_metadata.as_ref().expect("metadata");
    match metadata.fields.get("route").and_then(|value| value.kind.as_ref()) {
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(name)) => name.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn route_issuer_sets_are_isolated_even_for_cached_tokens() {
    let t = two_issuers().await;
    let mut client = client(&t.running).await;
    let token_a = t.key_a.sign(&t.a.claims("alice", "x", 60));
    let token_b = t.key_b.sign(&t.b.claims("bob", "x", 60));

    assert_eq!(route_of(assert_allowed_ok(&check_token(&mut client, "/a/items", &token_a).await)), "only-a");
    // token_a is now cached; it must still be refused where only b is accepted.
    let post_b = |token: &str| request("POST", "/b/items", &[("authorization", &bearer(token))]);
    assert_invalid_token(&check(&mut client, post_b(&token_a)).await, "not accepted here");
    assert_allowed(&check(&mut client, post_b(&token_b)).await);
    assert_invalid_token(&check_token(&mut client, "/a/items", &token_b).await, "not accepted here");

    assert_allowed(&check_token(&mut client, "/both/x", &token_a).await);
    assert_allowed(&check_token(&mut client, "/both/x", &token_b).await);
}

fn assert_allowed_ok(
    response: &envoy_types::pb::envoy::service::auth::v3::CheckResponse,
) -> &envoy_types::pb::envoy::service::auth::v3::CheckResponse {
    assert_allowed(response);
    response
}

#[tokio::test]
async fn actions_methods_hosts_and_default_deny() {
    let t = two_issuers().await;
    let mut client = client(&t.running).await;
    let token_b = t.key_b.sign(&t.b.claims("bob", "x", 60));

    // allow needs no token; the query string is not part of the path match.
    let ok = check(&mut client, request("GET", "/healthz?verbose=1", &[])).await;
    assert_eq!(route_of(assert_allowed_ok(&ok)), "health");
    assert_denied(&check(&mut client, request("GET", "/healthz/deep", &[])).await, 403);

    // deny refuses even a valid token.
    let denied = check_token(&mut client, "/internal/metrics", &token_b).await;
    let body: serde_json::Value = serde_json::from_str(&assert_denied(&denied, 403).body).unwrap();
    assert_eq!(body["error"], "forbidden");
    assert_eq!(status_code(&denied), 7, "PERMISSION_DENIED");

    // GET /b/ matches no route (only-b-writes wants POST/PUT): 403, not 401.
    let get_b = check_token(&mut client, "/b/items", &token_b).await;
    let body: serde_json::Value = serde_json::from_str(&assert_denied(&get_b, 403).body).unwrap();
    assert_eq!(body["error_description"], "no route matches this request");

    // The host route only applies to admin.example.com.
    let mut admin = request("GET", "/anything", &[("authorization", &bearer(&token_b))]);
    let http = admin.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    http.host = "ADMIN.example.com:443".into();
    assert_invalid_token(&check(&mut client, admin).await, "not accepted here");
    assert_denied(&check_token(&mut client, "/anything", &token_b).await, 403);
}

#[tokio::test]
async fn percent_encoded_paths_match_the_route_the_backend_will_see() {
    let t = two_issuers().await;
    let mut client = client(&t.running).await;
    // /%69nternal/ is /internal/ to every backend: it must hit the deny route, not fall through.
    let token_b = t.key_b.sign(&t.b.claims("bob", "x", 60));
    let denied = check_token(&mut client, "/%69nternal/metrics", &token_b).await;
    let body: serde_json::Value = serde_json::from_str(&assert_denied(&denied, 403).body).unwrap();
    assert_eq!(body["error_description"], "this route denies every request");
    let ok = check(&mut client, request("GET", "/%68ealthz", &[])).await;
    assert_eq!(route_of(assert_allowed_ok(&ok)), "health");
}

#[tokio::test]
async fn ambiguous_paths_cannot_borrow_a_permissive_route() {
    let t = two_issuers().await;
    let mut client = client(&t.running).await;
    // Each would match the allow-only /healthz or slip past /internal/ if taken literally.
    for path in [
        "/healthz/../internal/x",
        "/both/..%2Finternal/x",
        "/internal/%2e%2e/healthz",
        "//internal/x",
        "/healthz\\..\\a",
        "/healthz/..;/internal/x",
    ] {
        let response = check(&mut client, request("GET", path, &[])).await;
        let body: serde_json::Value = serde_json::from_str(&assert_denied(&response, 400).body).unwrap();
        assert_eq!(body["error"], "invalid_request", "{path}");
    }
}

#[test]
fn backends_only_on_authenticating_routes() {
    let text = "issuers: {}\nbackends:\n  h: { type: hasura, admin_secret: s3cret-admin-secret }\nroutes:\n  - match: { prefix: /v1/graphql }\n    action: allow\n    backend: h\n";
    let err = portcullis::policy::parse_str(text, "t").unwrap_err().to_string();
    assert!(err.contains("routes[0].backend: only used with action: authenticate"), "{err}");
}
