//! portcullis behind a real Envoy (the version pinned in tests/tools.txt):
//! client -> Envoy -> ext_authz -> recording upstream. Every flow asserts what
//! the client got and exactly what the upstream received, or that it received
//! nothing.

mod common;

use common::envoy::*;
use common::*;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest as CheckedHttp;
use jsonwebtoken::Algorithm;
use portcullis::server::Running;
use serde_json::{Value, json};

#[tokio::test]
async fn the_harness_records_requests_in_wire_order_and_tunnels_websockets() {
    let tap = AuthzTap::allow_all().await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start(tap.addr, &upstream, &EnvoyOptions::default()).await;

    // reqwest groups a repeated name (http::HeaderMap); the raw client keeps wire order.
    let reply = envoy.send("POST", "/echo?x=1", &[("x-b", "2"), ("x-b", "3")], Some("hello")).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, UPSTREAM_BODY));
    assert_eq!(reply.header("x-upstream"), Some("yes"));
    let got = upstream.last();
    assert_eq!((got.method.as_str(), got.path.as_str(), got.body.as_slice()), ("POST", "/echo?x=1", &b"hello"[..]));
    assert_eq!(got.all("x-b"), ["2", "3"]);

    let request =
        raw_request("PUT", "/raw", &[("Host", "h.example.com"), ("x-b", "2"), ("x-a", "1"), ("X-B", "3")], "hi");
    assert_eq!(envoy.raw(&request).await.status, 200);
    let got = upstream.last();
    assert_eq!((got.method.as_str(), got.body.as_slice()), ("PUT", &b"hi"[..]));
    let order: Vec<(&str, &str)> =
        got.headers.iter().filter(|(name, _)| name.starts_with("x-")).map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(&order[..3], [("x-b", "2"), ("x-a", "1"), ("x-b", "3")], "duplicates and order kept: {got:?}");
    assert_eq!(tap.count(), 2);

    let (reply, mut tunnel) = envoy.websocket("/ws", &[]).await;
    assert_eq!(reply.status, 101, "{reply:?}");
    assert_eq!(tunnel.echo(b"ping").await, b"ping");
    assert_eq!(upstream.last().header("upgrade"), Some("websocket"));
    assert_eq!(upstream.count(), 3);
    upstream.clear();
    assert_eq!(upstream.count(), 0);
}

// ---------------------------------------------------------------------------
// Shared pieces of the flows.

const ADMIN_SECRET: &str = "hasura-admin-secret-for-envoy-tests";
const SUPABASE_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters";
const APIKEY: &str = "sb_publishable_envoy_tests";
const HASURA_NS: &str = "https://hasura.io/jwt/claims";

/// portcullis in-process, a recording upstream, and Envoy in front.
struct Stack {
    portcullis: Running,
    upstream: Upstream,
    envoy: Envoy,
}

impl Stack {
    async fn start(config: &str) -> Stack {
        let portcullis = start_ready(config).await;
        let upstream = Upstream::start().await;
        let envoy = Envoy::start(portcullis.authz_addr, &upstream, &EnvoyOptions::default()).await;
        Stack { portcullis, upstream, envoy }
    }

    /// Asserts the upstream received nothing since the last `clear`.
    #[track_caller]
    fn upstream_untouched(&self) {
        assert_eq!(self.upstream.count(), 0, "the upstream must receive nothing: {:?}", self.upstream.requests());
    }
}

/// Headers Envoy adds to every forwarded request (checked, then set aside).
const ENVOY_ADDED: [&str; 3] = ["x-forwarded-proto", "x-request-id", "x-envoy-expected-rq-timeout-ms"];
/// Transport headers of the client's request (set aside).
const TRANSPORT: [&str; 3] = ["host", "accept", "content-length"];

/// Everything the upstream received except Envoy's own and transport headers:
/// (lower-cased name, value) pairs, sorted, duplicates kept.
#[track_caller]
fn app_headers(got: &Recorded) -> Vec<(String, String)> {
    for name in ENVOY_ADDED {
        assert_eq!(got.all(name).len(), 1, "Envoy adds {name} once: {got:?}");
    }
    let mut headers: Vec<(String, String)> = got
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .filter(|(name, _)| !ENVOY_ADDED.contains(&name.as_str()) && !TRANSPORT.contains(&name.as_str()))
        .collect();
    headers.sort();
    headers
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    pairs.sort();
    pairs
}

#[track_caller]
fn assert_passed(reply: &Reply) {
    assert_eq!((reply.status, reply.body.as_str()), (200, UPSTREAM_BODY), "{reply:?}");
}

/// A Hasura deny as the client sees it: (HTTP status, code, message).
#[track_caller]
fn hasura_error(reply: &Reply) -> (u16, String, String) {
    assert_eq!(reply.header("content-type"), Some("application/json"), "{reply:?}");
    let body = reply.json();
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["path"], "$", "{body}");
    let text = |value: &Value| value.as_str().unwrap_or_else(|| panic!("{body}")).to_string();
    (reply.status, text(&error["extensions"]["code"]), text(&error["message"]))
}

/// A PostgREST deny: status, content type and the exact body.
#[track_caller]
fn assert_postgrest(reply: &Reply, status: u16, code: &str, message: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(reply.json(), json!({"code": code, "details": null, "hint": null, "message": message}));
}

/// Kinde access token claims: `aud` as a list, `azp`, `scp`, `org_code`,
/// `permissions`, and `roles` as objects; `kp_` subjects.
fn kinde_claims(issuer: &DevIssuer, sub: &str, audience: &str, lifetime: i64) -> Value {
    let mut claims = issuer.claims(sub, audience, lifetime);
    claims["aud"] = json!([audience]);
    claims["azp"] = json!("4c7d8b2a9e1f4e7c8d6a5b3c2d1e0f9a");
    claims["jti"] = json!("7f3c1a9e-5b2d-4c8e-9a1f-3e6d8b7c5a4e");
    claims["scp"] = json!(["openid", "profile", "email", "offline"]);
    claims["org_code"] = json!("org_7d3e1f2a9b4");
    claims["permissions"] = json!(["read:notes", "write:notes"]);
    claims["roles"] = json!([
        {"id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "key": "user", "name": "User"},
        {"id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", "key": "editor", "name": "Editor"}
    ]);
    claims
}

/// What the Kinde workflow of examples/hasura-kinde adds.
fn kinde_workflow_claims(sub: &str) -> Value {
    json!({"x-hasura-default-role": "user", "x-hasura-allowed-roles": ["user"], "x-hasura-user-id": sub})
}

// ---------------------------------------------------------------------------
// Kinde -> Hasura, claims from a Kinde workflow (examples/hasura-kinde).

fn hasura_kinde_config(kinde: &DevIssuer) -> String {
    format!(
        r#"{LISTEN_ANY}issuers:
  kinde:
    hasura_jwt_secret: '{{"jwk_url":"{jwks}","audience":"hasura"}}'
backends:
  hasura:
    type: hasura
    admin_secret: {ADMIN_SECRET}
    unauthorized_role: anonymous
routes:
  - name: hasura-healthz
    match: {{ path: /healthz }}
    action: allow
  - name: graphql
    match: {{ prefix: /v1/graphql }}
    issuers: [kinde]
    backend: hasura
  - name: hasura-rest
    match: {{ prefix: /api/rest/ }}
    issuers: [kinde]
    backend: hasura
"#,
        jwks = kinde.jwks_uri()
    )
}

#[tokio::test]
async fn kinde_to_hasura_with_workflow_claims() {
    let key = SigningKey::generate(Algorithm::RS256, "kinde-1");
    let kinde = DevIssuer::start(&[&key]).await.unwrap();
    let stack = Stack::start(&hasura_kinde_config(&kinde)).await;
    let (envoy, upstream) = (&stack.envoy, &stack.upstream);
    let mut claims = kinde_claims(&kinde, "kp_5a8e2c1d", "hasura", 300);
    claims[HASURA_NS] = kinde_workflow_claims("kp_5a8e2c1d");
    let token = key.sign(&claims);
    let auth = bearer(&token);
    let query = r#"{"query":"{ notes { id } }"}"#;

    // Allowed: Hasura gets the session and the admin secret, not the token.
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    assert_passed(&envoy.send("POST", "/v1/graphql", &headers, Some(query)).await);
    let got = upstream.last();
    assert_eq!(
        (got.method.as_str(), got.path.as_str(), got.body.as_slice()),
        ("POST", "/v1/graphql", query.as_bytes())
    );
    assert_eq!(
        app_headers(&got),
        pairs(&[
            ("content-type", "application/json"),
            ("x-hasura-admin-secret", ADMIN_SECRET),
            ("x-hasura-role", "user"),
            ("x-hasura-user-id", "kp_5a8e2c1d"),
        ])
    );

    // No token: the unauthorized role and nothing else.
    upstream.clear();
    assert_passed(&envoy.send("POST", "/v1/graphql", &[], Some(query)).await);
    assert_eq!(
        app_headers(&upstream.last()),
        pairs(&[("x-hasura-admin-secret", ADMIN_SECRET), ("x-hasura-role", "anonymous")])
    );

    // Denies reach the client as Hasura would answer; the upstream sees nothing.
    upstream.clear();
    let admin_role = [("authorization", auth.as_str()), ("x-hasura-role", "admin")];
    assert_eq!(
        hasura_error(&envoy.send("POST", "/v1/graphql", &admin_role, Some(query)).await),
        (200, "access-denied".into(), "Your requested role is not in allowed roles".into())
    );
    let expired = key.sign(&{
        let mut claims = claims.clone();
        claims["exp"] = json!(portcullis::token::Clock::system().now() - 3600);
        claims
    });
    let expired = bearer(&expired);
    let reply = envoy.send("POST", "/v1/graphql", &[("authorization", &expired)], Some(query)).await;
    assert_eq!(hasura_error(&reply), (200, "invalid-jwt".into(), "Could not verify JWT: JWTExpired".into()));
    assert_eq!(reply.header("www-authenticate"), None, "GraphQL errors carry no challenge");
    // RESTified endpoints answer with HTTP statuses and an RFC 6750 challenge.
    let reply = envoy.get("/api/rest/notes", &[("authorization", &expired)]).await;
    assert_eq!(hasura_error(&reply), (401, "invalid-jwt".into(), "Could not verify JWT: JWTExpired".into()));
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token", error_description="the token has expired""#)
    );
    stack.upstream_untouched();
}

// ---------------------------------------------------------------------------
// Kinde -> Hasura through claims_map, and WorkOS on a second host
// (examples/hasura-claims-map): no Hasura claims in the tokens.

/// WorkOS AuthKit access token claims: `user_` subject, `sid`, `org_id`, the
/// organisation `role` and `roles`, `permissions`, no `aud`.
fn workos_claims(issuer: &str, sub: &str, lifetime: i64) -> Value {
    let now = portcullis::token::Clock::system().now() as i64;
    json!({
        "iss": issuer, "sub": sub, "iat": now, "exp": now + lifetime,
        "sid": "session_01J9Z3Q8K2M4N6P8R0T2V4X6Z8", "jti": "01J9Z3Q8K2M4N6P8R0T2V4X6Z9",
        "org_id": "org_01J9Z3Q8K2M4N6P8R0T2V4X6ZA", "role": "member", "roles": ["member"],
        "permissions": ["notes:read"]
    })
}

/// The `iss` of a WorkOS AuthKit client, on a loopback issuer.
fn workos_iss(workos: &DevIssuer) -> String {
    format!("{}/user_management/client_01J9Z3Q8K2M4N6P8R0T2V4X6ZB", workos.issuer())
}

#[tokio::test]
async fn kinde_and_workos_to_hasura_with_claims_map() {
    let kinde_key = SigningKey::generate(Algorithm::RS256, "kinde-1");
    let workos_key = SigningKey::generate(Algorithm::RS256, "workos-1");
    let kinde = DevIssuer::start(&[&kinde_key]).await.unwrap();
    let workos = DevIssuer::start(&[&workos_key]).await.unwrap();
    let config = format!(
        r#"{LISTEN_ANY}issuers:
  kinde:
    hasura_jwt_secret:
      jwk_url: {kinde_jwks}
      audience: hasura
      issuer: {kinde_iss}
      claims_map:
        x-hasura-allowed-roles: {{ path: "$.roles[*].key", default: ["user"] }}
        x-hasura-default-role: {{ path: "$.default_role", default: user }}
        x-hasura-user-id: {{ path: "$.sub" }}
        x-hasura-org-code: {{ path: "$.org_code", default: "" }}
  workos:
    issuer: {workos_iss}
    jwks_uri: {workos_jwks}
backends:
  hasura-kinde:
    type: hasura
    admin_secret: {ADMIN_SECRET}
  hasura-workos:
    type: hasura
    admin_secret: {ADMIN_SECRET}
    claims_map:
      x-hasura-allowed-roles: {{ path: "$.roles", default: ["member"] }}
      x-hasura-default-role: {{ path: "$.role", default: member }}
      x-hasura-user-id: {{ path: "$.sub" }}
      x-hasura-org-id: {{ path: "$.org_id", default: "" }}
routes:
  - match: {{ prefix: /v1/graphql, hosts: [kinde.graphql.acme.com] }}
    issuers: [kinde]
    backend: hasura-kinde
  - match: {{ prefix: /v1/graphql, hosts: [workos.graphql.acme.com] }}
    issuers: [workos]
    backend: hasura-workos
"#,
        kinde_jwks = kinde.jwks_uri(),
        kinde_iss = kinde.issuer(),
        workos_iss = workos_iss(&workos),
        workos_jwks = workos.jwks_uri(),
    );
    let stack = Stack::start(&config).await;
    let (envoy, upstream) = (&stack.envoy, &stack.upstream);
    let kinde_token = bearer(&kinde_key.sign(&kinde_claims(&kinde, "kp_0c9d8e7f", "hasura", 300)));
    let workos_token = bearer(&workos_key.sign(&workos_claims(&workos_iss(&workos), "user_01J9Z3Q8K2", 300)));
    let kinde_host = ("host", "kinde.graphql.acme.com");
    let workos_host = ("host", "workos.graphql.acme.com");

    // Roles from Kinde's role objects; the default role from the map's default.
    assert_passed(&envoy.get("/v1/graphql", &[kinde_host, ("authorization", &kinde_token)]).await);
    let got = upstream.last();
    assert_eq!(got.header("host"), Some("kinde.graphql.acme.com"));
    assert_eq!(
        app_headers(&got),
        pairs(&[
            ("x-hasura-admin-secret", ADMIN_SECRET),
            ("x-hasura-org-code", "org_7d3e1f2a9b4"),
            ("x-hasura-role", "user"),
            ("x-hasura-user-id", "kp_0c9d8e7f"),
        ])
    );
    // A requested role inside $.roles[*].key.
    let editor = [kinde_host, ("authorization", &kinde_token), ("x-hasura-role", "editor")];
    assert_passed(&envoy.get("/v1/graphql", &editor).await);
    assert_eq!(upstream.last().all("x-hasura-role"), ["editor"]);

    // WorkOS on its host: the backend's claims_map.
    assert_passed(&envoy.get("/v1/graphql", &[workos_host, ("authorization", &workos_token)]).await);
    assert_eq!(
        app_headers(&upstream.last()),
        pairs(&[
            ("x-hasura-admin-secret", ADMIN_SECRET),
            ("x-hasura-org-id", "org_01J9Z3Q8K2M4N6P8R0T2V4X6ZA"),
            ("x-hasura-role", "member"),
            ("x-hasura-user-id", "user_01J9Z3Q8K2"),
        ])
    );

    // A WorkOS token on the Kinde host, and an unknown host: refused before the upstream.
    upstream.clear();
    let reply = envoy.get("/v1/graphql", &[kinde_host, ("authorization", &workos_token)]).await;
    let (status, code, _) = hasura_error(&reply);
    assert_eq!((status, code.as_str()), (200, "invalid-jwt"), "{reply:?}");
    let reply = envoy.get("/v1/graphql", &[("host", "graphql.acme.com"), ("authorization", &kinde_token)]).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json()["error"], "forbidden", "no route: the plain JSON deny");
    stack.upstream_untouched();
}

// ---------------------------------------------------------------------------
// Auth0 -> Hasura (examples/hasura-auth0): namespaced claims from an Auth0
// Action, `iss` with its trailing slash, the API identifier as audience.

#[tokio::test]
async fn auth0_to_hasura_with_namespaced_claims_and_audience() {
    let key = SigningKey::generate(Algorithm::RS256, "auth0-1");
    let auth0 = DevIssuer::start(&[&key]).await.unwrap();
    let iss = format!("{}/", auth0.issuer());
    let config = format!(
        r#"{LISTEN_ANY}issuers:
  auth0:
    issuer: "{iss}"
    jwks_uri: {jwks}
    audiences: [https://graphql.acme.com]
    algorithms: [RS256]
backends:
  hasura:
    type: hasura
    admin_secret: {ADMIN_SECRET}
routes:
  - match: {{ prefix: /v1/graphql }}
    backend: hasura
"#,
        jwks = auth0.jwks_uri()
    );
    let stack = Stack::start(&config).await;
    let (envoy, upstream) = (&stack.envoy, &stack.upstream);
    let now = portcullis::token::Clock::system().now() as i64;
    let sub = "auth0|6651f0c2a8b3e4d5f6a7b8c9";
    let mut claims = json!({
        "iss": iss, "sub": sub, "aud": ["https://graphql.acme.com", format!("{iss}userinfo")],
        "iat": now, "exp": now + 300, "azp": "Xk3c9PqR7sT1uV5wY8zA2bC4dE6fG0hJ", "scope": "openid profile email",
        HASURA_NS: {"x-hasura-default-role": "user", "x-hasura-allowed-roles": ["user", "editor"], "x-hasura-user-id": sub}
    });
    let token = bearer(&key.sign(&claims));

    assert_passed(&envoy.send("POST", "/v1/graphql", &[("authorization", &token)], Some("{}")).await);
    assert_eq!(
        app_headers(&upstream.last()),
        pairs(&[("x-hasura-admin-secret", ADMIN_SECRET), ("x-hasura-role", "user"), ("x-hasura-user-id", sub)])
    );
    let editor = [("authorization", token.as_str()), ("x-hasura-role", "editor")];
    assert_passed(&envoy.send("POST", "/v1/graphql", &editor, Some("{}")).await);
    assert_eq!(upstream.last().all("x-hasura-role"), ["editor"]);

    upstream.clear();
    claims["aud"] = json!("https://other-api.acme.com");
    let wrong_audience = bearer(&key.sign(&claims));
    let reply = envoy.send("POST", "/v1/graphql", &[("authorization", &wrong_audience)], Some("{}")).await;
    assert_eq!(hasura_error(&reply), (200, "invalid-jwt".into(), "Could not verify JWT: JWTNotInAudience".into()));
    stack.upstream_untouched();
}

// ---------------------------------------------------------------------------
// Supabase (examples/supabase-kinde and examples/supabase-workos).

fn supabase_routes(issuer: &str) -> String {
    format!(
        r#"routes:
  - name: supabase-auth
    match: {{ prefix: /auth/v1/ }}
    action: allow
  - name: data
    match: {{ prefix: /rest/v1/ }}
    issuers: [{issuer}]
    backend: supabase
"#
    )
}

#[tokio::test]
async fn kinde_to_supabase_remint_verified_by_pyjwt() {
    let key = SigningKey::generate(Algorithm::RS256, "kinde-1");
    let kinde = DevIssuer::start(&[&key]).await.unwrap();
    // No jwks_uri: OIDC discovery, as in the example.
    let config = format!(
        r#"{LISTEN_ANY}issuers:
  kinde:
    issuer: {iss}
    audiences: [supabase]
backends:
  supabase:
    type: supabase
    mode: remint
    signing_key: {SUPABASE_SECRET}
    apikey: {APIKEY}
    ttl_seconds: 300
    allow_anonymous: true
{routes}"#,
        iss = kinde.issuer(),
        routes = supabase_routes("kinde")
    );
    let stack = Stack::start(&config).await;
    let (envoy, upstream) = (&stack.envoy, &stack.upstream);
    let mut claims = kinde_claims(&kinde, "kp_5a8e2c1d", "supabase", 3600);
    claims["email"] = json!("ada@example.com");
    claims["email_verified"] = json!(true);
    let kinde_token = bearer(&key.sign(&claims));

    // The upstream gets a Supabase token in place of Kinde's, and our apikey.
    let headers = [("authorization", kinde_token.as_str()), ("apikey", "sb_secret_the_client_made_up")];
    assert_passed(&envoy.get("/rest/v1/notes?select=*", &headers).await);
    let got = upstream.last();
    assert_eq!(got.path, "/rest/v1/notes?select=*");
    let minted = got.header("authorization").and_then(|value| value.strip_prefix("Bearer ")).expect("a bearer token");
    let minted = minted.to_string();
    assert_ne!(format!("Bearer {minted}"), kinde_token);
    assert_eq!(app_headers(&got), pairs(&[("apikey", APIKEY), ("authorization", &format!("Bearer {minted}"))]));

    // No token: a minted anon token.
    assert_passed(&envoy.get("/rest/v1/notes", &[]).await);
    let got = upstream.last();
    let anon = got.header("authorization").and_then(|value| value.strip_prefix("Bearer ")).expect("anon token");
    assert_eq!(got.all("apikey"), [APIKEY]);

    // PyJWT checks all three at once (one interpreter start).
    let verified = pyjwt_verify(&[
        json!({"token": minted, "key": SUPABASE_SECRET, "alg": "HS256", "audience": "authenticated"}),
        json!({"token": minted, "key": "a-different-secret-of-at-least-32-bytes!", "alg": "HS256", "audience": "authenticated"}),
        json!({"token": anon, "key": SUPABASE_SECRET, "alg": "HS256", "audience": null}),
    ]);
    let minted_claims = &verified[0]["claims"];
    assert!(verified[0].get("error").is_none(), "{verified:?}");
    assert_eq!(
        (minted_claims["sub"].as_str(), minted_claims["role"].as_str()),
        (Some("kp_5a8e2c1d"), Some("authenticated"))
    );
    assert_eq!(
        (minted_claims["aud"].as_str(), minted_claims["email"].as_str()),
        (Some("authenticated"), Some("ada@example.com"))
    );
    assert_eq!(minted_claims["app_metadata"]["provider"], "kinde");
    assert_eq!(minted_claims["app_metadata"]["org_code"], "org_7d3e1f2a9b4");
    assert!(verified[1]["error"].as_str().is_some_and(|error| error.contains("Signature")), "{verified:?}");
    assert_eq!(verified[2]["claims"]["role"], "anon", "{verified:?}");

    // Supabase Auth verifies its own sessions: passed untouched, the client's apikey included.
    let login = [("apikey", "sb_publishable_from_the_app"), ("content-type", "application/json")];
    assert_passed(&envoy.send("POST", "/auth/v1/token?grant_type=password", &login, Some("{}")).await);
    assert_eq!(app_headers(&upstream.last()), pairs(&login));

    // An expired Kinde token: PostgREST's answer, with the challenge.
    upstream.clear();
    claims["exp"] = json!(portcullis::token::Clock::system().now() - 60);
    let expired = bearer(&key.sign(&claims));
    let reply = envoy.get("/rest/v1/notes", &[("authorization", &expired)]).await;
    assert_postgrest(&reply, 401, "PGRST303", "JWT expired");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token", error_description="JWT expired""#)
    );
    stack.upstream_untouched();
}

#[tokio::test]
async fn workos_to_supabase_passthrough_keeps_the_token() {
    let key = SigningKey::generate(Algorithm::RS256, "workos-1");
    let workos = DevIssuer::start(&[&key]).await.unwrap();
    let config = format!(
        r#"{LISTEN_ANY}issuers:
  workos:
    issuer: {iss}
    jwks_uri: {jwks}
    algorithms: [RS256]
backends:
  supabase:
    type: supabase
    mode: passthrough
    apikey: {APIKEY}
    require_role_claim: true
{routes}"#,
        iss = workos_iss(&workos),
        jwks = workos.jwks_uri(),
        routes = supabase_routes("workos")
    );
    let stack = Stack::start(&config).await;
    let (envoy, upstream) = (&stack.envoy, &stack.upstream);
    // The JWT template of the example: role authenticated, the org role moved aside.
    let mut claims = workos_claims(&workos_iss(&workos), "user_01J9Z3Q8K2", 300);
    claims["user_role"] = claims["role"].take();
    claims["role"] = json!("authenticated");
    let token = bearer(&key.sign(&claims));

    assert_passed(&envoy.get("/rest/v1/notes", &[("authorization", &token), ("apikey", "sb_secret_guess")]).await);
    assert_eq!(app_headers(&upstream.last()), pairs(&[("apikey", APIKEY), ("authorization", &token)]));

    // Without the template, WorkOS' own role would become a Postgres role: refused.
    upstream.clear();
    claims["role"] = json!("admin");
    let org_role = bearer(&key.sign(&claims));
    let reply = envoy.get("/rest/v1/notes", &[("authorization", &org_role)]).await;
    assert_postgrest(&reply, 403, "42501", "the token's role must be \"authenticated\", not \"admin\"");
    let reply = envoy.get("/rest/v1/notes", &[]).await;
    assert_postgrest(&reply, 401, "PGRST302", "Anonymous access is disabled");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    stack.upstream_untouched();
}

// ---------------------------------------------------------------------------
// Spoofed headers and deny bodies.

/// Hasura on /v1/graphql and Supabase (remint) on /rest/v1/, one Kinde issuer.
fn hasura_and_supabase_config(kinde: &DevIssuer) -> String {
    format!(
        r#"{LISTEN_ANY}issuers:
  kinde: {{ issuer: "{iss}", jwks_uri: "{jwks}" }}
backends:
  hasura: {{ type: hasura, admin_secret: {ADMIN_SECRET}, unauthorized_role: anonymous }}
  supabase: {{ type: supabase, signing_key: {SUPABASE_SECRET}, apikey: {APIKEY}, allow_anonymous: true }}
routes:
  - match: {{ prefix: /v1/graphql }}
    backend: hasura
  - match: {{ prefix: /rest/v1/ }}
    backend: supabase
"#,
        iss = kinde.issuer(),
        jwks = kinde.jwks_uri()
    )
}

/// Client headers that claim Hasura privileges, in several spellings, some twice.
const SPOOFED_HASURA: [(&str, &str); 8] = [
    ("X-Hasura-Admin-Secret", "guessed"),
    ("x-hasura-admin-secret", "guessed-again"),
    ("X-HASURA-ROLE", "admin"),
    ("X-Hasura-User-Id", "someone-else"),
    ("x-hasura-user-id", "someone-else-again"),
    ("X-Hasura-Org-Code", "org_victim"),
    ("X-Hasura-Use-Backend-Only-Permissions", "true"),
    ("X-Hasura-Access-Key", "legacy-guess"),
];

#[tokio::test]
async fn spoofed_hasura_headers_and_apikeys_never_reach_the_upstream() {
    let key = SigningKey::generate(Algorithm::RS256, "kinde-1");
    let kinde = DevIssuer::start(&[&key]).await.unwrap();
    let stack = Stack::start(&hasura_and_supabase_config(&kinde)).await;
    let (envoy, upstream) = (&stack.envoy, &stack.upstream);
    let mut claims = kinde_claims(&kinde, "kp_5a8e2c1d", "hasura", 300);
    claims[HASURA_NS] = json!({
        "x-hasura-default-role": "user", "x-hasura-allowed-roles": ["user", "admin"],
        "x-hasura-user-id": "kp_5a8e2c1d", "x-hasura-org-code": "org_7d3e1f2a9b4"
    });
    let token = bearer(&key.sign(&claims));
    let with_host = |extra: &[(&'static str, &'static str)]| {
        let mut headers = vec![("Host", "graphql.acme.com")];
        headers.extend_from_slice(extra);
        headers
    };

    // Raw HTTP/1.1, so repeated lines and odd spellings reach Envoy as written.
    let mut headers = with_host(&SPOOFED_HASURA);
    headers.push(("Authorization", &token));
    assert_passed(&envoy.raw(&raw_request("POST", "/v1/graphql", &headers, "{}")).await);
    // The requested role is the token's to allow (admin is in this token's
    // allowed roles); every other value is the token's or the config's.
    assert_eq!(
        app_headers(&upstream.last()),
        pairs(&[
            ("x-hasura-admin-secret", ADMIN_SECRET),
            ("x-hasura-org-code", "org_7d3e1f2a9b4"),
            ("x-hasura-role", "admin"),
            ("x-hasura-user-id", "kp_5a8e2c1d"),
        ])
    );

    // Without a token: the unauthorized role, nothing the client said.
    assert_passed(&envoy.raw(&raw_request("POST", "/v1/graphql", &with_host(&SPOOFED_HASURA), "{}")).await);
    assert_eq!(
        app_headers(&upstream.last()),
        pairs(&[("x-hasura-admin-secret", ADMIN_SECRET), ("x-hasura-role", "anonymous")])
    );

    // Supabase: every client apikey line is replaced by exactly ours.
    let spoofed = with_host(&[("apikey", "sb_secret_one"), ("ApiKey", "sb_secret_two"), ("x-hasura-role", "admin")]);
    assert_passed(&envoy.raw(&raw_request("GET", "/rest/v1/notes", &spoofed, "")).await);
    let got = upstream.last();
    assert_eq!(got.all("apikey"), [APIKEY]);
    assert_eq!(got.all("x-hasura-role"), ["admin"], "not a Hasura route: x-hasura-* is not portcullis' business");

    // Envoy joins repeated Authorization lines into one value ("Bearer a,Bearer b"):
    // a repeated token header is a 400 invalid_request, never the first or second alone.
    upstream.clear();
    let mut twice = with_host(&[("Authorization", "Bearer not-a-token")]);
    twice.push(("Authorization", &token));
    let reply = envoy.raw(&raw_request("GET", "/rest/v1/notes", &twice, "")).await;
    assert_eq!((reply.status, &reply.json()["code"]), (400, &json!("PGRST301")), "{reply:?}");
    stack.upstream_untouched();
}

/// Identity headers declared on some routes only, and routes of every other
/// kind of allow: no token (`action: allow`), anonymous (Hasura's
/// unauthorized role), and a dry run whose requirement fails.
fn identity_config(kinde: &DevIssuer) -> String {
    format!(
        r#"{LISTEN_ANY}issuers:
  kinde: {{ issuer: "{iss}", jwks_uri: "{jwks}", audiences: [api] }}
backends:
  hasura: {{ type: hasura, admin_secret: {ADMIN_SECRET}, unauthorized_role: anonymous }}
routes:
  - name: health
    match: {{ path: /healthz }}
    action: allow
  - name: orders
    match: {{ prefix: /api/orders/ }}
    headers: {{ x-user-id: sub, x-email: email }}
  - name: api
    match: {{ prefix: /api/ }}
    headers: {{ x-user-id: sub }}
  - name: graphql
    match: {{ prefix: /v1/graphql }}
    backend: hasura
  - name: dry
    match: {{ prefix: /dry/ }}
    require: {{ permissions: [admin:all] }}
    mode: dry_run
"#,
        iss = kinde.issuer(),
        jwks = kinde.jwks_uri()
    )
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream_on_any_route() {
    let key = SigningKey::generate(Algorithm::ES256, "kinde-1");
    let kinde = DevIssuer::start(&[&key]).await.unwrap();
    let stack = Stack::start(&identity_config(&kinde)).await;
    let (envoy, upstream) = (&stack.envoy, &stack.upstream);
    let mut claims = kinde_claims(&kinde, "kp_5a8e2c1d", "api", 300);
    claims["email"] = json!("alice@acme.com");
    let token = bearer(&key.sign(&claims));
    let send = |method, path, token| spoofed_identity(envoy, method, path, token);
    // The route that sets both: the token's values, nothing of the client's.
    assert_passed(&send("GET", "/api/orders/1", Some(&token)).await);
    let got = upstream.last();
    assert_eq!((got.all("x-user-id"), got.all("x-email")), (vec!["kp_5a8e2c1d"], vec!["alice@acme.com"]));
    // A route that sets only x-user-id: the client's x-email is removed all the same.
    assert_passed(&send("GET", "/api/other", Some(&token)).await);
    assert_eq!(app_headers(&upstream.last()), pairs(&[("authorization", &token), ("x-user-id", "kp_5a8e2c1d")]));
    // action: allow, with no identity headers of its own.
    assert_passed(&send("GET", "/healthz", None).await);
    assert_eq!(app_headers(&upstream.last()), pairs(&[]));
    // Anonymous (Hasura's unauthorized role) and a dry run that would deny.
    assert_passed(&send("POST", "/v1/graphql", None).await);
    assert_eq!(
        app_headers(&upstream.last()),
        pairs(&[("x-hasura-admin-secret", ADMIN_SECRET), ("x-hasura-role", "anonymous")])
    );
    assert_passed(&send("GET", "/dry/x", Some(&token)).await);
    assert_eq!(app_headers(&upstream.last()), pairs(&[("authorization", &token)]));
    let received = upstream.requests();
    assert_eq!(received.len(), 5);
    for got in received {
        assert!(
            got.all("x-email").iter().chain(&got.all("x-user-id")).all(|value| !value.starts_with("spoof")),
            "{got:?}"
        );
    }
}

/// A request carrying the client's own identity headers, in several spellings;
/// raw HTTP/1.1, so they reach Envoy as written.
async fn spoofed_identity(envoy: &Envoy, method: &str, path: &str, token: Option<&str>) -> Reply {
    let mut headers =
        vec![("Host", "api.acme.com"), ("X-Email", "spoof@x"), ("x-user-id", "spoof"), ("X-User-Id", "spoof-2")];
    headers.extend(token.map(|token| ("Authorization", token)));
    envoy.raw(&raw_request(method, path, &headers, "")).await
}

/// The plain routes of examples/basic, for the generic deny bodies.
fn basic_config(kinde: &DevIssuer) -> String {
    format!(
        r#"{LISTEN_ANY}issuers:
  kinde: {{ issuer: "{iss}", jwks_uri: "{jwks}", audiences: [api] }}
routes:
  - name: health
    match: {{ path: /healthz }}
    action: allow
  - name: internal
    match: {{ prefix: /internal/ }}
    action: deny
  - name: api
    match: {{ prefix: /, hosts: [api.acme.com] }}
    issuers: [kinde]
"#,
        iss = kinde.issuer(),
        jwks = kinde.jwks_uri()
    )
}

#[tokio::test]
async fn plain_routes_pass_the_token_and_denies_arrive_intact() {
    let key = SigningKey::generate(Algorithm::ES256, "kinde-1");
    let kinde = DevIssuer::start(&[&key]).await.unwrap();
    let stack = Stack::start(&basic_config(&kinde)).await;
    let (envoy, upstream) = (&stack.envoy, &stack.upstream);
    let token = bearer(&key.sign(&kinde_claims(&kinde, "kp_5a8e2c1d", "api", 300)));
    let api = ("host", "api.acme.com");

    assert_passed(&envoy.get("/orders", &[api, ("authorization", &token)]).await);
    assert_eq!(app_headers(&upstream.last()), pairs(&[("authorization", &token)]));
    assert_passed(&envoy.get("/healthz", &[]).await);

    upstream.clear();
    let reply = envoy.get("/orders", &[api]).await;
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.header("www-authenticate"), Some(r#"Bearer realm="portcullis""#));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json()["error"], "unauthorized");
    let reply = envoy.get("/internal/metrics", &[api, ("authorization", &token)]).await;
    assert_eq!((reply.status, reply.header("www-authenticate")), (403, None), "{reply:?}");
    assert_eq!(reply.json()["error"], "forbidden");
    let reply = envoy.get("/orders", &[("host", "other.acme.com"), ("authorization", &token)]).await;
    assert_eq!((reply.status, &reply.json()["error"]), (403, &json!("forbidden")), "no route");
    // Raw: reqwest would resolve the dot-segment itself.
    let dotted = [("Host", "api.acme.com"), ("Authorization", token.as_str())];
    let reply = envoy.raw(&raw_request("GET", "/a/../internal/x", &dotted, "")).await;
    assert_eq!((reply.status, &reply.json()["error"]), (400, &json!("invalid_request")), "{reply:?}");
    stack.upstream_untouched();
}

#[tokio::test]
async fn an_issuer_without_keys_is_a_503_from_portcullis() {
    let key = SigningKey::generate(Algorithm::RS256, "kinde-1");
    let kinde = DevIssuer::start(&[&key]).await.unwrap();
    kinde.set_up(false);
    // Not start_ready: the issuer never gets keys.
    let portcullis = start(&basic_config(&kinde)).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start(portcullis.authz_addr, &upstream, &EnvoyOptions::default()).await;
    let token = bearer(&key.sign(&kinde_claims(&kinde, "kp_5a8e2c1d", "api", 300)));
    let reply = envoy.get("/orders", &[("host", "api.acme.com"), ("authorization", &token)]).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.json()["error"], "temporarily_unavailable");
    assert_eq!(upstream.count(), 0);
}

// ---------------------------------------------------------------------------
// Fail closed: portcullis unreachable or hanging means deny (status_on_error).

const EXT_AUTHZ_ERRORS: &str = "http.ingress.ext_authz.error";

#[tokio::test]
async fn portcullis_stopped_means_403_and_nothing_upstream() {
    let key = SigningKey::generate(Algorithm::RS256, "kinde-1");
    let kinde = DevIssuer::start(&[&key]).await.unwrap();
    let Stack { portcullis, upstream, envoy } = Stack::start(&hasura_and_supabase_config(&kinde)).await;
    let token = bearer(&key.sign(&kinde_claims(&kinde, "kp_5a8e2c1d", "api", 300)));
    let request = [("authorization", token.as_str()), ("x-hasura-admin-secret", "guessed")];
    assert_passed(&envoy.get("/v1/graphql", &[]).await);
    let authz = portcullis.authz_addr;
    portcullis.stop().await.expect("portcullis stops");
    upstream.clear();

    let reply = envoy.get("/v1/graphql", &request).await;
    assert_eq!((reply.status, reply.body.as_str()), (403, ""), "status_on_error, no body: {reply:?}");
    assert_eq!(upstream.count(), 0);
    assert!(envoy.stat(EXT_AUTHZ_ERRORS).await >= 1, "an ext_authz error, not a deny");

    // The same outage with failure_mode_allow: the client's own headers go through.
    let open = EnvoyOptions { failure_mode_allow: true, ..EnvoyOptions::default() };
    let lenient = Envoy::start(authz, &upstream, &open).await;
    assert_passed(&lenient.get("/v1/graphql", &request).await);
    assert_eq!(upstream.last().all("x-hasura-admin-secret"), ["guessed"], "why failure_mode_allow must stay false");
}

/// `portcullis serve` as a child process (so it can be frozen with SIGSTOP);
/// killed on drop, stopped or not.
struct ServeProcess {
    process: std::process::Child,
    authz: std::net::SocketAddr,
    _config: tempfile::NamedTempFile,
}

impl ServeProcess {
    async fn serve(config: &str) -> ServeProcess {
        use std::io::BufRead;
        let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::io::Write::write_all(&mut file, config.as_bytes()).unwrap();
        let mut process = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["--log-format", "json", "serve", "--config"])
            .arg(file.path())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn portcullis serve");
        let stderr = process.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        // Keeps draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && event["message"] == "portcullis listening"
                {
                    let addr = |name: &str| event[name].as_str().unwrap_or_default().to_string();
                    let _ = tx.send((addr("authz"), addr("http")));
                }
            }
        });
        let (authz, http) = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the listening log line");
        let child = ServeProcess { process, authz: authz.parse().expect("authz address"), _config: file };
        let ready_url = format!("http://{http}/readyz");
        for _ in 0..750 {
            if http_get(&ready_url).await.0 == 200 {
                return child;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("portcullis serve never became ready");
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill").args([signal, &self.process.id().to_string()]).status();
        assert!(status.is_ok_and(|status| status.success()), "kill {signal}");
    }

    /// SIGSTOP, then waits until every thread is stopped: kill(1) returns once the
    /// signal is queued, and a thread still running could answer one more Check.
    async fn freeze(&self) {
        self.signal("-STOP");
        let tasks = format!("/proc/{}/task", self.process.id());
        let stopped = || {
            let Ok(entries) = std::fs::read_dir(&tasks) else { return false };
            entries.flatten().all(|task| {
                // Field 3 of /proc/PID/task/TID/stat is the state; `T` is stopped.
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
            })
        };
        wait_until("portcullis to stop", stopped).await;
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[tokio::test]
async fn portcullis_frozen_means_403_after_the_timeout_and_nothing_upstream() {
    let key = SigningKey::generate(Algorithm::RS256, "kinde-1");
    let kinde = DevIssuer::start(&[&key]).await.unwrap();
    let portcullis = ServeProcess::serve(&basic_config(&kinde)).await;
    let upstream = Upstream::start().await;
    // Short enough to keep the test quick, long enough that a loaded 2-core CI
    // machine never times out a running portcullis.
    let options = EnvoyOptions { timeout: std::time::Duration::from_secs(1), ..EnvoyOptions::default() };
    let envoy = Envoy::start(portcullis.authz, &upstream, &options).await;
    let token = bearer(&key.sign(&kinde_claims(&kinde, "kp_5a8e2c1d", "api", 300)));
    let request = [("host", "api.acme.com"), ("authorization", token.as_str())];
    assert_passed(&envoy.get("/orders", &request).await);
    upstream.clear();

    portcullis.freeze().await;
    let reply = envoy.get("/orders", &request).await;
    portcullis.signal("-CONT");
    assert_eq!((reply.status, reply.body.as_str()), (403, ""), "{reply:?}");
    assert_eq!(upstream.count(), 0);
    assert!(envoy.stat(EXT_AUTHZ_ERRORS).await >= 1, "a timeout is an ext_authz error");

    // Resumed, it answers again.
    assert_passed(&envoy.get("/orders", &request).await);
}

// ---------------------------------------------------------------------------
// Websocket upgrades on a Hasura route (subscriptions).

#[tokio::test]
async fn websocket_upgrades_reach_hasura_without_the_admin_secret_or_client_session() {
    let key = SigningKey::generate(Algorithm::RS256, "kinde-1");
    let kinde = DevIssuer::start(&[&key]).await.unwrap();
    let stack = Stack::start(&hasura_kinde_config(&kinde)).await;
    let (envoy, upstream) = (&stack.envoy, &stack.upstream);
    let mut claims = kinde_claims(&kinde, "kp_5a8e2c1d", "hasura", 300);
    claims[HASURA_NS] = kinde_workflow_claims("kp_5a8e2c1d");
    let token = bearer(&key.sign(&claims));
    let mut headers = SPOOFED_HASURA.to_vec();
    headers.push(("Authorization", &token));

    let (reply, mut tunnel) = envoy.websocket("/v1/graphql", &headers).await;
    assert_eq!(reply.status, 101, "{reply:?}");
    assert_eq!(tunnel.echo(b"{\"type\":\"connection_init\"}").await, b"{\"type\":\"connection_init\"}");
    // The token stays: Hasura authenticates the connection itself.
    let got = upstream.last();
    assert_eq!(
        app_headers(&got),
        pairs(&[
            ("authorization", &token),
            ("connection", "Upgrade"),
            ("sec-websocket-key", got.header("sec-websocket-key").unwrap_or_default()),
            ("sec-websocket-protocol", "graphql-transport-ws"),
            ("sec-websocket-version", "13"),
            ("upgrade", "websocket"),
        ])
    );

    // Token-less upgrades pass too here (unauthorized_role is set), just as bare.
    let (reply, _tunnel) = envoy.websocket("/v1/graphql", &SPOOFED_HASURA).await;
    assert_eq!(reply.status, 101, "{reply:?}");
    assert!(upstream.last().names().iter().all(|name| !name.starts_with("x-hasura-")), "{:?}", upstream.last());

    // A bad token is refused before the upstream, as Hasura would refuse it.
    upstream.clear();
    claims["exp"] = json!(portcullis::token::Clock::system().now() - 60);
    let expired = bearer(&key.sign(&claims));
    let (reply, _) = envoy.websocket("/v1/graphql", &[("Authorization", &expired)]).await;
    assert_eq!(hasura_error(&reply), (200, "invalid-jwt".into(), "Could not verify JWT: JWTExpired".into()));
    stack.upstream_untouched();
}

// ---------------------------------------------------------------------------
// What Envoy 1.40 hands portcullis for odd requests (through the tap). These
// pin Envoy's behaviour, so an Envoy upgrade that changes it fails here first.

/// The `http` part of the last CheckRequest the tap saw.
fn last_checked(tap: &AuthzTap) -> CheckedHttp {
    tap.last().attributes.and_then(|attributes| attributes.request).and_then(|request| request.http).expect("http")
}

/// `header_map` (encode_raw_headers) as (key, raw value) pairs, for one name.
fn raw_values(http: &CheckedHttp, name: &str) -> Vec<(String, String)> {
    let headers = http.header_map.as_ref().map(|map| map.headers.as_slice()).unwrap_or_default();
    headers
        .iter()
        .filter(|header| header.key == name)
        .map(|header| (header.value.clone(), String::from_utf8_lossy(&header.raw_value).into_owned()))
        .collect()
}

/// A tap that allows everything, a recording upstream, and Envoy.
async fn tapped(options: &EnvoyOptions) -> (AuthzTap, Upstream, Envoy) {
    let tap = AuthzTap::allow_all().await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start(tap.addr, &upstream, options).await;
    (tap, upstream, envoy)
}

#[tokio::test]
async fn repeated_cookie_lines_reach_portcullis_comma_joined_or_raw() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let idp = DevIssuer::start(&[&key]).await.unwrap();
    let config = format!(
        "{LISTEN_ANY}issuers:\n  idp: {{ issuer: \"{}\", jwks_uri: \"{}\", token_from: {{ cookie: session }} }}\nroutes:\n  - match: {{ prefix: / }}\n",
        idp.issuer(),
        idp.jwks_uri()
    );
    let portcullis = start_ready(&config).await;
    let token = key.sign(&idp.claims("u", "api", 300));
    let session = format!("session={token}");
    let request = raw_request("GET", "/", &[("Host", "api.example.com"), ("Cookie", "a=1"), ("Cookie", &session)], "");
    for encode_raw_headers in [false, true] {
        let tap = AuthzTap::forwarding_to(portcullis.authz_addr).await;
        let upstream = Upstream::start().await;
        let envoy = Envoy::start(tap.addr, &upstream, &EnvoyOptions { encode_raw_headers, ..Default::default() }).await;
        assert_passed(&envoy.raw(&request).await);
        let http = last_checked(&tap);
        if encode_raw_headers {
            // One entry per line, raw_value only.
            let empty = String::new();
            assert_eq!(raw_values(&http, "cookie"), [(empty.clone(), "a=1".into()), (empty, session.clone())]);
            assert!(http.headers.is_empty(), "{http:?}");
        } else {
            // Joined with a bare ",", not "; ".
            assert_eq!(http.headers.get("cookie"), Some(&format!("a=1,{session}")));
            assert!(http.header_map.is_none());
        }
        // The upstream gets both lines as sent either way.
        assert_eq!(upstream.last().all("cookie"), ["a=1", session.as_str()]);
    }
}

#[tokio::test]
async fn odd_host_values_reach_portcullis_verbatim_as_authority() {
    let (tap, upstream, envoy) = tapped(&EnvoyOptions::default()).await;
    for host in ["admin.example.com:abc", "admin.example.com:443:443", "user@admin.example.com", "admin.example.com:"] {
        assert_passed(&envoy.raw(&raw_request("GET", "/h", &[("Host", host)], "")).await);
        let http = last_checked(&tap);
        assert_eq!((http.host.as_str(), http.headers.get(":authority")), (host, Some(&host.to_string())));
        assert_eq!(upstream.last().all("host"), [host], "forwarded as sent");
    }
    // Two Host lines (RFC 9112 says 400): Envoy joins them with a comma.
    let twice = [("Host", "admin.example.com"), ("Host", "api.example.com")];
    assert_passed(&envoy.raw(&raw_request("GET", "/h", &twice, "")).await);
    assert_eq!(last_checked(&tap).host, "admin.example.com,api.example.com");
    assert_eq!(upstream.last().all("host"), ["admin.example.com,api.example.com"]);
    // An absolute-form target wins over Host.
    let absolute = raw_request("GET", "http://admin.example.com/abs", &[("Host", "api.example.com")], "");
    assert_passed(&envoy.raw(&absolute).await);
    assert_eq!(
        (last_checked(&tap).host.as_str(), upstream.last().header("host")),
        ("admin.example.com", Some("admin.example.com"))
    );
}

const ODD_PATHS: [&str; 8] =
    ["/odata/%24batch", "/internal;x/y", "/a/../b", "//x", "/a/%2e%2e/b", "/%61dmin", "/a\\b", "/a%2fb"];

#[tokio::test]
async fn paths_reach_portcullis_as_sent_unless_envoy_normalizes_them() {
    let (tap, upstream, envoy) = tapped(&EnvoyOptions::default()).await;
    for path in ODD_PATHS {
        assert_passed(&envoy.raw(&raw_request("GET", path, &[("Host", "api.example.com")], "")).await);
        let http = last_checked(&tap);
        assert_eq!((http.path.as_str(), http.headers.get(":path")), (path, Some(&path.to_string())));
        assert_eq!(upstream.last().path, path);
    }
    // A fragment or `*` never gets that far.
    for target in ["/a#frag", "*"] {
        let before = tap.count();
        assert_eq!(envoy.raw(&raw_request("GET", target, &[("Host", "api.example.com")], "")).await.status, 400);
        assert_eq!(tap.count(), before, "{target}");
    }

    // normalize_path + merge_slashes: portcullis and the upstream see the same
    // resolved path; reserved escapes (%24, %2F) and `;` stay as sent.
    let normalized = EnvoyOptions { normalize_path: true, merge_slashes: true, ..Default::default() };
    let (tap, upstream, envoy) = tapped(&normalized).await;
    let expected = ["/odata/%24batch", "/internal;x/y", "/b", "/x", "/b", "/admin", "/a/b", "/a%2fb"];
    for (path, expected) in ODD_PATHS.into_iter().zip(expected) {
        assert_passed(&envoy.raw(&raw_request("GET", path, &[("Host", "api.example.com")], "")).await);
        assert_eq!((last_checked(&tap).path.as_str(), upstream.last().path.as_str()), (expected, expected), "{path}");
    }
}

#[tokio::test]
async fn envoy_joins_repeated_authorization_and_strips_non_upgrade_upgrade_headers() {
    let (tap, upstream, envoy) = tapped(&EnvoyOptions::default()).await;
    let twice = [("Host", "api.example.com"), ("Authorization", "Bearer a"), ("Authorization", "Bearer b")];
    assert_passed(&envoy.raw(&raw_request("GET", "/", &twice, "")).await);
    // authorization is one of Envoy's inline headers: joined for portcullis and upstream alike.
    assert_eq!(last_checked(&tap).headers.get("authorization"), Some(&"Bearer a,Bearer b".to_string()));
    assert_eq!(upstream.last().all("authorization"), ["Bearer a,Bearer b"]);
    // Upgrade without `Connection: upgrade` is not an upgrade: both headers are dropped.
    let lone = [("Host", "api.example.com"), ("Upgrade", "websocket")];
    assert_passed(&envoy.raw(&raw_request("POST", "/", &lone, "{}")).await);
    assert_eq!(last_checked(&tap).headers.get("upgrade"), None);
    assert_eq!(upstream.last().header("upgrade"), None);
}

// ---------------------------------------------------------------------------
// Health checks and Envoy's panic threshold, for a single portcullis replica.

#[tokio::test]
async fn a_single_unhealthy_replica_still_gets_checks_unless_panic_mode_is_off() {
    use portcullis::proto::admin::v1::RefreshKeysRequest;
    use portcullis::proto::admin::v1::admin_client::AdminClient;

    let key = SigningKey::generate(Algorithm::RS256, "kinde-1");
    let kinde = DevIssuer::start(&[&key]).await.unwrap();
    kinde.set_up(false);
    // No keys yet: gRPC health says NOT_SERVING, so Envoy marks the one host unhealthy.
    let portcullis = start(&basic_config(&kinde)).await;
    let upstream = Upstream::start().await;
    let checked = EnvoyOptions { health_check: true, ..Default::default() };
    let panics = Envoy::start(portcullis.authz_addr, &upstream, &checked).await;
    let strict = EnvoyOptions { healthy_panic_threshold: Some(0), ..checked };
    let no_panic = Envoy::start(portcullis.authz_addr, &upstream, &strict).await;
    for envoy in [&panics, &no_panic] {
        envoy.wait_for_portcullis_health("/failed_active_hc").await;
    }
    let token = bearer(&key.sign(&kinde_claims(&kinde, "kp_5a8e2c1d", "api", 300)));
    let request = [("host", "api.acme.com"), ("authorization", token.as_str())];

    // Default threshold (50%): 0 of 1 healthy is panic, so Envoy asks portcullis
    // anyway, which answers with its own 503 while it has no keys.
    let reply = panics.get("/orders", &request).await;
    assert_eq!((reply.status, &reply.json()["error"]), (503, &json!("temporarily_unavailable")), "{reply:?}");
    assert_passed(&panics.get("/healthz", &[]).await);
    // Panic mode off: no healthy host, so the check fails and status_on_error
    // answers every request, the ones that need no token included.
    for path in ["/orders", "/healthz"] {
        let reply = no_panic.get(path, &request).await;
        assert_eq!((reply.status, reply.body.as_str()), (403, ""), "{path}: {reply:?}");
    }
    assert!(no_panic.stat(EXT_AUTHZ_ERRORS).await >= 2);

    // Keys arrive: healthy again, and both pass.
    kinde.set_up(true);
    // Fetch now rather than after the retry backoff (loopback admin needs no token here).
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", portcullis.admin_addr)).unwrap();
    let mut admin = AdminClient::new(channel.connect().await.expect("admin connects"));
    admin.refresh_keys(RefreshKeysRequest { issuer: String::new() }).await.expect("refresh keys");
    wait_until("portcullis ready", || portcullis.readiness.is_ready()).await;
    for envoy in [&panics, &no_panic] {
        envoy.wait_for_portcullis_health("healthy").await;
        assert_passed(&envoy.get("/orders", &request).await);
    }
    assert_eq!(upstream.count(), 3, "/healthz once, then /orders through each Envoy");
}

// ---------------------------------------------------------------------------
// The examples' bootstraps are complete and valid for this Envoy.

#[test]
fn every_example_envoy_yaml_is_a_valid_bootstrap() {
    let envoy = tools::envoy();
    let mut checked = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let config = entry.unwrap().path().join("envoy.yaml");
        if !config.exists() {
            continue;
        }
        // Validate mode parses and checks the whole bootstrap; it binds and resolves nothing.
        let output = std::process::Command::new(&envoy)
            .args(["--mode", "validate", "--disable-hot-restart", "-l", "warning", "-c"])
            .arg(&config)
            .output()
            .expect("run envoy --mode validate");
        let text = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success() && text.contains("OK"), "{}: {text}", config.display());
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} example bootstraps found");
}

// ---------------------------------------------------------------------------
// Every example runs as written: its own envoy.yaml and portcullis.yaml, with
// only what cannot be the same on a test machine changed (ports to ephemeral
// ones, the hosted IdPs' URLs to a loopback issuer, `${...}` secrets given).
// A token goes in; the upstream headers come out.

/// An example folder running: portcullis from its portcullis.yaml, Envoy from
/// its envoy.yaml, and a recording upstream where its backend would be.
struct Example {
    _portcullis: Running,
    upstream: Upstream,
    envoy: Envoy,
}

/// `text` with each `(from, to)` replaced, in order; every `from` must be there,
/// so an example that changes shape fails here instead of silently running differently.
#[track_caller]
fn substitute(file: &str, text: &str, replacements: &[(&str, String)]) -> String {
    let mut text = text.to_string();
    for (from, to) in replacements {
        assert!(text.contains(from), "{file} no longer contains {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// Starts `examples/{dir}`: `idps` maps each hosted IdP URL in its portcullis.yaml
/// to a loopback issuer, `secrets` gives its `${NAME}` values, and the upstream
/// takes the place of the backend at 127.0.0.1:`backend_port`.
async fn run_example(dir: &str, backend_port: u16, idps: &[(&str, String)], secrets: &[(&str, &str)]) -> Example {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(dir);
    let read = |name: &str| std::fs::read_to_string(folder.join(name)).expect("read the example");
    let config_file = format!("examples/{dir}/portcullis.yaml");
    let mut replacements: Vec<(&str, String)> = ["127.0.0.1:50051", "127.0.0.1:9090", "127.0.0.1:50052"]
        .into_iter()
        .map(|address| (address, "127.0.0.1:0".to_string()))
        .collect();
    replacements.extend(idps.iter().cloned());
    let placeholders: Vec<String> = secrets.iter().map(|(name, _)| format!("${{{name}}}")).collect();
    replacements.extend(placeholders.iter().zip(secrets).map(|(from, (_, value))| (from.as_str(), value.to_string())));
    let config = substitute(&config_file, &read("portcullis.yaml"), &replacements);
    let policy = portcullis::policy::compile_text(&config, &config_file, &Default::default(), None)
        .unwrap_or_else(|err| panic!("{err}"));
    let portcullis =
        portcullis::server::start(policy, Default::default(), std::future::pending()).await.expect("portcullis starts");
    wait_until("portcullis ready", || portcullis.readiness.is_ready()).await;

    let upstream = Upstream::start().await;
    let bootstrap = substitute(
        &format!("examples/{dir}/envoy.yaml"),
        &read("envoy.yaml"),
        &[
            ("port_value: 10000 }", "port_value: 0 }".into()),
            ("port_value: 9901 }", "port_value: 0 }".into()),
            ("port_value: 50051 }", format!("port_value: {} }}", portcullis.authz_addr.port())),
            (&format!("port_value: {backend_port} }}"), format!("port_value: {} }}", upstream.addr.port())),
        ],
    );
    let envoy = Envoy::start_with(&bootstrap).await;
    envoy.wait_for_portcullis_health("healthy").await;
    Example { _portcullis: portcullis, upstream, envoy }
}

#[tokio::test]
async fn the_basic_example_runs_as_written() {
    let auth0_key = SigningKey::generate(Algorithm::RS256, "auth0-1");
    let kinde_key = SigningKey::generate(Algorithm::RS256, "kinde-1");
    // Auth0's iss ends in a slash; discovery stays at the root.
    let auth0 = DevIssuer::start_at(&[&auth0_key], "/").await.unwrap();
    let kinde = DevIssuer::start(&[&kinde_key]).await.unwrap();
    let idps = [
        ("https://acme.eu.auth0.com", auth0.base().to_string()),
        ("https://acme.kinde.com", kinde.issuer().to_string()),
    ];
    let example = run_example("basic", 8080, &idps, &[]).await;
    let (envoy, upstream) = (&example.envoy, &example.upstream);

    let kinde_token = bearer(&kinde_key.sign(&kinde_claims(&kinde, "kp_5a8e2c1d", "api", 300)));
    let reply = envoy.get("/admin/users", &[("authorization", &kinde_token), ("x-user-id", "spoof")]).await;
    assert_passed(&reply);
    assert_eq!(upstream.last().header("authorization"), Some(kinde_token.as_str()), "the token passes");
    let auth0_token = bearer(&auth0_key.sign(&auth0.claims("auth0|6651f0c2", "https://api.acme.com", 300)));
    assert_passed(&envoy.get("/orders", &[("host", "api.acme.com"), ("authorization", &auth0_token)]).await);
    assert_eq!(upstream.last().path, "/orders");

    // Denies, and the safe settings: nothing reaches the upstream.
    upstream.clear();
    assert_eq!(envoy.get("/admin/users", &[]).await.status, 401);
    assert_eq!(envoy.get("/internal/x", &[("authorization", &kinde_token)]).await.status, 403);
    let escaped =
        raw_request("GET", "/admin%2Fusers", &[("Host", "api.acme.com"), ("Authorization", &kinde_token)], "");
    assert_eq!(envoy.raw(&escaped).await.status, 400, "path_with_escaped_slashes_action: REJECT_REQUEST");
    assert_eq!(upstream.count(), 0, "{:?}", upstream.requests());
    assert_passed(&envoy.get("/healthz", &[]).await);
}

#[tokio::test]
async fn the_hasura_auth0_example_runs_as_written() {
    let key = SigningKey::generate(Algorithm::RS256, "auth0-1");
    let auth0 = DevIssuer::start_at(&[&key], "/").await.unwrap();
    let idps = [("https://acme.eu.auth0.com", auth0.base().to_string())];
    let example = run_example("hasura-auth0", 8080, &idps, &[("HASURA_GRAPHQL_ADMIN_SECRET", ADMIN_SECRET)]).await;
    let sub = "auth0|6651f0c2a8b3e4d5f6a7b8c9";
    let mut claims = auth0.claims(sub, "https://graphql.acme.com", 300);
    claims[HASURA_NS] =
        json!({"x-hasura-default-role": "user", "x-hasura-allowed-roles": ["user"], "x-hasura-user-id": sub});
    let token = bearer(&key.sign(&claims));
    let headers = [("authorization", token.as_str()), ("x-hasura-role", "user"), ("x-hasura-admin-secret", "guess")];
    assert_passed(&example.envoy.send("POST", "/v1/graphql", &headers, Some("{}")).await);
    let got = example.upstream.last();
    assert_eq!(got.all("x-hasura-admin-secret"), [ADMIN_SECRET]);
    assert_eq!((got.header("x-hasura-role"), got.header("x-hasura-user-id")), (Some("user"), Some(sub)));
    assert_eq!(got.header("authorization"), None, "Hasura gets the session, not the token");
}

#[tokio::test]
async fn the_hasura_kinde_example_runs_as_written() {
    let key = SigningKey::generate(Algorithm::RS256, "kinde-1");
    let kinde = DevIssuer::start(&[&key]).await.unwrap();
    let idps = [("https://acme.kinde.com", kinde.issuer().to_string())];
    let example = run_example("hasura-kinde", 8080, &idps, &[("HASURA_GRAPHQL_ADMIN_SECRET", ADMIN_SECRET)]).await;
    let mut claims = kinde_claims(&kinde, "kp_5a8e2c1d", "hasura", 300);
    claims[HASURA_NS] = kinde_workflow_claims("kp_5a8e2c1d");
    let token = bearer(&key.sign(&claims));
    assert_passed(&example.envoy.send("POST", "/v1/graphql", &[("authorization", &token)], Some("{}")).await);
    let got = example.upstream.last();
    assert_eq!(
        (got.header("x-hasura-admin-secret"), got.header("x-hasura-role"), got.header("x-hasura-user-id")),
        (Some(ADMIN_SECRET), Some("user"), Some("kp_5a8e2c1d"))
    );
    // Token-less: the example's unauthorized_role.
    assert_passed(&example.envoy.send("POST", "/v1/graphql", &[], Some("{}")).await);
    assert_eq!(example.upstream.last().header("x-hasura-role"), Some("anonymous"));
}

#[tokio::test]
async fn the_hasura_claims_map_example_runs_as_written() {
    let kinde_key = SigningKey::generate(Algorithm::RS256, "kinde-1");
    let workos_key = SigningKey::generate(Algorithm::RS256, "workos-1");
    let kinde = DevIssuer::start(&[&kinde_key]).await.unwrap();
    let workos = DevIssuer::start(&[&workos_key]).await.unwrap();
    let idps = [
        ("https://acme.kinde.com", kinde.issuer().to_string()),
        ("https://api.workos.com/sso/jwks/client_01EXAMPLE", workos.jwks_uri()),
        ("https://api.workos.com", workos.issuer().to_string()),
    ];
    let example = run_example("hasura-claims-map", 8080, &idps, &[("HASURA_GRAPHQL_ADMIN_SECRET", ADMIN_SECRET)]).await;
    let (envoy, upstream) = (&example.envoy, &example.upstream);
    let kinde_token = bearer(&kinde_key.sign(&kinde_claims(&kinde, "kp_0c9d8e7f", "hasura", 300)));
    let kinde_host = ("host", "kinde.graphql.acme.com");
    assert_passed(&envoy.send("POST", "/v1/graphql", &[kinde_host, ("authorization", &kinde_token)], Some("{}")).await);
    let got = upstream.last();
    assert_eq!((got.header("x-hasura-role"), got.header("x-hasura-user-id")), (Some("user"), Some("kp_0c9d8e7f")));
    assert_eq!(got.header("x-hasura-org-code"), Some("org_7d3e1f2a9b4"));

    let workos_token = bearer(&workos_key.sign(&workos_claims(workos.issuer(), "user_01J9Z3Q8K2", 300)));
    let workos_host = ("host", "workos.graphql.acme.com");
    assert_passed(
        &envoy.send("POST", "/v1/graphql", &[workos_host, ("authorization", &workos_token)], Some("{}")).await,
    );
    let got = upstream.last();
    assert_eq!(
        (got.header("x-hasura-role"), got.header("x-hasura-user-id")),
        (Some("member"), Some("user_01J9Z3Q8K2"))
    );
    assert_eq!(got.header("x-hasura-admin-secret"), Some(ADMIN_SECRET));
}

#[tokio::test]
async fn the_supabase_kinde_example_runs_as_written() {
    let key = SigningKey::generate(Algorithm::RS256, "kinde-1");
    let kinde = DevIssuer::start(&[&key]).await.unwrap();
    let idps = [("https://acme.kinde.com", kinde.issuer().to_string())];
    let secrets = [("SUPABASE_JWT_SECRET", SUPABASE_SECRET), ("SUPABASE_PUBLISHABLE_KEY", APIKEY)];
    let example = run_example("supabase-kinde", 8000, &idps, &secrets).await;
    let token = bearer(&key.sign(&kinde_claims(&kinde, "kp_5a8e2c1d", "supabase", 300)));
    assert_passed(
        &example.envoy.get("/rest/v1/notes?select=*", &[("authorization", &token), ("apikey", "guess")]).await,
    );
    let got = example.upstream.last();
    assert_eq!(got.all("apikey"), [APIKEY]);
    let minted = got.header("authorization").and_then(|value| value.strip_prefix("Bearer ")).expect("a minted token");
    let claims =
        jsonwebtoken::decode::<Value>(minted, &jsonwebtoken::DecodingKey::from_secret(SUPABASE_SECRET.as_bytes()), &{
            let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
            validation.set_audience(&["authenticated"]);
            validation
        })
        .expect("the minted token verifies with the project's secret")
        .claims;
    assert_eq!((claims["sub"].as_str(), claims["role"].as_str()), (Some("kp_5a8e2c1d"), Some("authenticated")));
}

#[tokio::test]
async fn the_supabase_workos_example_runs_as_written() {
    let key = SigningKey::generate(Algorithm::RS256, "workos-1");
    let workos = DevIssuer::start(&[&key]).await.unwrap();
    let idps = [
        ("https://api.workos.com/sso/jwks/client_01EXAMPLE", workos.jwks_uri()),
        ("https://api.workos.com", workos.issuer().to_string()),
    ];
    let example = run_example("supabase-workos", 8000, &idps, &[("SUPABASE_PUBLISHABLE_KEY", APIKEY)]).await;
    let iss = format!("{}/user_management/client_01EXAMPLE", workos.issuer());
    let mut claims = workos_claims(&iss, "user_01J9Z3Q8K2", 300);
    claims["role"] = json!("authenticated");
    let token = bearer(&key.sign(&claims));
    assert_passed(&example.envoy.get("/rest/v1/notes", &[("authorization", &token)]).await);
    let got = example.upstream.last();
    assert_eq!((got.header("authorization"), got.header("apikey")), (Some(token.as_str()), Some(APIKEY)));
}
