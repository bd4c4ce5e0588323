//! Hasura's JWT test matrix, ported to the real Check API: the sessions,
//! errors and upstream header sets portcullis gives must be the ones Hasura's
//! own JWT mode would derive (hasura/graphql-engine server/tests-py/test_jwt.py).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

const ADMIN_SECRET: &str = "admin-secret-for-tests";
const NS: &str = "https://hasura.io/jwt/claims";

/// The request headers Envoy would set and remove upstream.
fn upstream(response: &CheckResponse) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let ok = assert_allowed(response);
    let mut set = BTreeMap::new();
    for option in &ok.headers {
        assert_eq!(option.append_action, HeaderAppendAction::OverwriteIfExistsOrAdd as i32);
        #[allow(deprecated)]
        let append = &option.append;
        assert!(append.is_none(), "append must stay unset");
        let header = option.header.as_ref().unwrap();
        assert_eq!(header.key, header.key.to_ascii_lowercase());
        assert!(set.insert(header.key.clone(), header.value.clone()).is_none(), "one entry per header");
    }
    let removed: BTreeSet<String> = ok.headers_to_remove.iter().cloned().collect();
    assert!(set.keys().all(|name| !removed.contains(name)), "never remove a header that is set");
    (set, removed)
}

fn session(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut set: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    set.insert("x-hasura-admin-secret".into(), ADMIN_SECRET.into());
    set
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|name| name.to_string()).collect()
}

/// (HTTP status, Hasura code, message) of a deny.
fn hasura_deny(response: &CheckResponse) -> (i32, String, String) {
    assert_ne!(status_code(response), 0, "expected a deny: {response:#?}");
    let Some(envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse::DeniedResponse(denied)) =
        &response.http_response
    else {
        panic!("no denied_response: {response:#?}");
    };
    let body: Value = serde_json::from_str(&denied.body).unwrap();
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["path"], "$");
    (
        denied.status.as_ref().unwrap().code,
        error["extensions"]["code"].as_str().unwrap().to_string(),
        error["message"].as_str().unwrap().to_string(),
    )
}

fn claims_with(issuer: &DevIssuer, lifetime: i64, hasura: Value) -> Value {
    let mut claims = issuer.claims("user-1", "hasura", lifetime);
    claims[NS] = hasura;
    claims
}

fn standard_claims() -> Value {
    json!({
        "x-hasura-allowed-roles": ["user", "editor"],
        "x-hasura-default-role": "user",
        "x-hasura-user-id": "user-1",
        "X-Hasura-Org-Id": "org-9"
    })
}

/// Where the token travels, as the Hasura secret's `header` and as request headers.
#[derive(Clone, Copy, Debug)]
enum Location {
    Authorization,
    Cookie,
    Custom,
}

impl Location {
    fn secret_header(self) -> Value {
        match self {
            Location::Authorization => json!({"type": "Authorization"}),
            Location::Cookie => json!({"type": "Cookie", "name": "hasura_jwt"}),
            Location::Custom => json!({"type": "CustomHeader", "name": "X-Hasura-Jwt"}),
        }
    }

    fn headers(self, token: &str) -> Vec<(String, String)> {
        match self {
            Location::Authorization => vec![("authorization".into(), format!("Bearer {token}"))],
            Location::Cookie => vec![("cookie".into(), format!("theme=dark; hasura_jwt={token}"))],
            Location::Custom => vec![("x-hasura-jwt".into(), token.to_string())],
        }
    }

    /// What the upstream loses besides client x-hasura-* headers (forward_token: false).
    fn removed(self) -> Vec<&'static str> {
        match self {
            Location::Authorization => vec!["authorization"],
            Location::Cookie => vec![],
            // The token header itself starts with x-hasura-, so it goes either way.
            Location::Custom => vec!["x-hasura-jwt"],
        }
    }
}

fn graphql(headers: &[(String, String)]) -> CheckRequest {
    let borrowed: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    request("POST", "/v1/graphql", &borrowed)
}

fn with(mut headers: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    headers
}

/// A server whose only issuer is imported from a Hasura JWT secret.
async fn hasura_server(secret: Value, backend_extra: &str) -> portcullis::server::Running {
    let config = format!(
        "{LISTEN_ANY}issuers:\n  idp:\n    hasura_jwt_secret: {secret}\nbackends:\n  hasura:\n    type: hasura\n    admin_secret: {ADMIN_SECRET}\n{backend_extra}routes:\n  - match: {{ prefix: /v1/graphql }}\n    backend: hasura\n  - match: {{ prefix: /v1/metadata }}\n    backend: hasura\n  - name: graphql-as-http\n    match: {{ prefix: /v2/graphql }}\n    backend: hasura\n    error_status: http\n"
    );
    start_ready(&config).await
}

#[tokio::test]
async fn basic_matrix_for_every_key_type_and_token_location() {
    let rsa = SigningKey::generate(Algorithm::RS256, "rsa");
    let ec = SigningKey::generate(Algorithm::ES256, "ec");
    let ed = SigningKey::generate(Algorithm::EdDSA, "ed");
    let issuer = DevIssuer::start(&[&rsa, &ec, &ed]).await.unwrap();
    let stranger = SigningKey::generate(Algorithm::RS256, "rsa");
    for location in [Location::Authorization, Location::Cookie, Location::Custom] {
        let secret = json!({"jwk_url": issuer.jwks_uri(), "header": location.secret_header()});
        let running = hasura_server(secret, "").await;
        let mut client = common::client(&running).await;
        for key in [&rsa, &ec, &ed] {
            let case = format!("{location:?}/{:?}", key.alg);
            let sign = |hasura: Value| key.sign(&claims_with(&issuer, 300, hasura));

            // Allowed with the default role: the exact Hasura session, nothing else.
            let token = sign(standard_claims());
            let (set, removed) = upstream(&check(&mut client, graphql(&location.headers(&token))).await);
            assert_eq!(
                set,
                session(&[("x-hasura-role", "user"), ("x-hasura-user-id", "user-1"), ("x-hasura-org-id", "org-9")]),
                "{case}"
            );
            assert_eq!(removed, names(&location.removed()), "{case}");

            // Requested role inside allowed roles.
            let editor = with(location.headers(&token), &[("x-hasura-role", "editor")]);
            let (set, removed) = upstream(&check(&mut client, graphql(&editor)).await);
            assert_eq!(set["x-hasura-role"], "editor", "{case}");
            // The client's x-hasura-role is overwritten (set), so it is not also removed.
            assert_eq!(removed, names(&location.removed()), "{case}");

            let denied = |headers: Vec<(String, String)>| graphql(&headers);
            let role_admin = with(location.headers(&token), &[("x-hasura-role", "admin")]);
            assert_eq!(
                hasura_deny(&check(&mut client, denied(role_admin)).await),
                (200, "access-denied".into(), "Your requested role is not in allowed roles".into()),
                "{case}"
            );
            let no_allowed = sign(json!({"x-hasura-default-role": "user", "x-hasura-user-id": "1"}));
            assert_eq!(
                hasura_deny(&check(&mut client, denied(location.headers(&no_allowed))).await),
                (200, "jwt-missing-role-claims".into(), "JWT claim does not contain x-hasura-allowed-roles".into()),
                "{case}"
            );
            let bad_allowed = sign(json!({"x-hasura-allowed-roles": "user", "x-hasura-default-role": "user"}));
            assert_eq!(
                hasura_deny(&check(&mut client, denied(location.headers(&bad_allowed))).await),
                (
                    200,
                    "jwt-invalid-claims".into(),
                    "invalid x-hasura-allowed-roles; should be a list of roles: parsing [] failed, expected Array, but encountered String".into()
                ),
                "{case}"
            );
            let no_default = sign(json!({"x-hasura-allowed-roles": ["user"]}));
            assert_eq!(
                hasura_deny(&check(&mut client, denied(location.headers(&no_default))).await),
                (200, "jwt-missing-role-claims".into(), "JWT claim does not contain x-hasura-default-role".into()),
                "{case}"
            );
            let expired = key.sign(&claims_with(&issuer, -3600, standard_claims()));
            assert_eq!(
                hasura_deny(&check(&mut client, denied(location.headers(&expired))).await),
                (200, "invalid-jwt".into(), "Could not verify JWT: JWTExpired".into()),
                "{case}"
            );
            let forged = stranger.sign(&claims_with(&issuer, 300, standard_claims()));
            assert_eq!(
                hasura_deny(&check(&mut client, denied(location.headers(&forged))).await),
                (200, "invalid-jwt".into(), "Could not verify JWT: JWSError JWSInvalidSignature".into()),
                "{case}"
            );
        }
    }
}

#[tokio::test]
async fn error_status_http_and_graphql() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = hasura_server(json!({"jwk_url": issuer.jwks_uri()}), "").await;
    let mut client = common::client(&running).await;
    let expired = key.sign(&claims_with(&issuer, -3600, standard_claims()));
    let bearer_value = bearer(&expired);
    let auth = [("authorization", bearer_value.as_str())];
    // Not a /graphql path: HTTP statuses, with an RFC 6750 challenge on 401.
    let response = check(&mut client, request("POST", "/v1/metadata", &auth)).await;
    assert_eq!(hasura_deny(&response), (401, "invalid-jwt".into(), "Could not verify JWT: JWTExpired".into()));
    let denied = assert_denied(&response, 401);
    assert!(header(denied, "www-authenticate").unwrap().starts_with("Bearer error=\"invalid_token\""));
    // error_status: http on a /graphql path.
    let response = check(&mut client, request("POST", "/v2/graphql", &auth)).await;
    assert_eq!(hasura_deny(&response).0, 401);
    let valid = key.sign(&claims_with(&issuer, 300, standard_claims()));
    let valid_bearer = bearer(&valid);
    let admin = [("authorization", valid_bearer.as_str()), ("x-hasura-role", "admin")];
    assert_eq!(hasura_deny(&check(&mut client, request("POST", "/v2/graphql", &admin)).await).0, 403);
    // Missing token, no unauthorized role.
    let response = check(&mut client, request("POST", "/v1/graphql", &[])).await;
    assert_eq!(
        hasura_deny(&response),
        (200, "invalid-headers".into(), "Missing 'Authorization' or 'Cookie' header in JWT authentication mode".into())
    );
    assert_eq!(status_code(&response), 16, "still a deny for Envoy");
}

#[tokio::test]
async fn stringified_claims_and_namespace_paths() {
    let key = SigningKey::generate(Algorithm::ES256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = hasura_server(json!({"jwk_url": issuer.jwks_uri(), "claims_format": "stringified_json"}), "").await;
    let mut client = common::client(&running).await;
    let mut claims = issuer.claims("u", "hasura", 300);
    claims[NS] = json!(standard_claims().to_string());
    let (set, _) = upstream(&check_hasura(&mut client, &key.sign(&claims)).await);
    assert_eq!(set["x-hasura-user-id"], "user-1");
    claims[NS] = standard_claims();
    assert_eq!(
        hasura_deny(&check_hasura(&mut client, &key.sign(&claims)).await).2,
        "expecting a string when claims_format is stringified_json"
    );

    let running =
        hasura_server(json!({"jwk_url": issuer.jwks_uri(), "claims_namespace_path": "$.hasura['claims']"}), "").await;
    let mut client = common::client(&running).await;
    let mut claims = issuer.claims("u", "hasura", 300);
    claims["hasura"] = json!({"claims": standard_claims()});
    let (set, _) = upstream(&check_hasura(&mut client, &key.sign(&claims)).await);
    assert_eq!(set["x-hasura-org-id"], "org-9");
    let plain = key.sign(&claims_with(&issuer, 300, standard_claims()));
    assert_eq!(
        hasura_deny(&check_hasura(&mut client, &plain).await).2,
        "claims not found at claims_namespace_path: '$.hasura['claims']'"
    );

    // A custom namespace key.
    let running = hasura_server(json!({"jwk_url": issuer.jwks_uri(), "claims_namespace": "hasura_claims"}), "").await;
    let mut client = common::client(&running).await;
    assert_eq!(hasura_deny(&check_hasura(&mut client, &plain).await).2, "claims key: 'hasura_claims' not found");
}

async fn check_hasura(
    client: &mut envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<
        tonic::transport::Channel,
    >,
    token: &str,
) -> CheckResponse {
    check(client, graphql(&Location::Authorization.headers(token))).await
}

#[tokio::test]
async fn audience_and_issuer_checks() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let secret = json!({"jwk_url": issuer.jwks_uri(), "audience": ["aud-1", "aud-2"], "issuer": issuer.issuer()});
    let running = hasura_server(secret, "").await;
    let mut client = common::client(&running).await;
    let token_for = |aud: Value, iss: &str| {
        let mut claims = claims_with(&issuer, 300, standard_claims());
        claims["aud"] = aud;
        claims["iss"] = json!(iss);
        key.sign(&claims)
    };
    upstream(&check_hasura(&mut client, &token_for(json!("aud-2"), issuer.issuer())).await);
    upstream(&check_hasura(&mut client, &token_for(json!(["x", "aud-1"]), issuer.issuer())).await);
    assert_eq!(
        hasura_deny(&check_hasura(&mut client, &token_for(json!("aud-3"), issuer.issuer())).await).2,
        "Could not verify JWT: JWTNotInAudience"
    );
    assert_eq!(
        hasura_deny(&check_hasura(&mut client, &token_for(json!("aud-1"), "https://other.example.com")).await).2,
        "Could not verify JWT: JWTNotInIssuer"
    );

    // Neither configured: any aud and any iss pass, as in Hasura.
    let running = hasura_server(json!({"jwk_url": issuer.jwks_uri()}), "").await;
    let mut client = common::client(&running).await;
    upstream(&check_hasura(&mut client, &token_for(json!("anything"), "https://anyone.example.com")).await);
}

#[tokio::test]
async fn allowed_skew_applies_to_exp() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let recently_expired = key.sign(&claims_with(&issuer, -20, standard_claims()));
    // Hasura's default skew is 0.
    let running = hasura_server(json!({"jwk_url": issuer.jwks_uri()}), "").await;
    let mut client = common::client(&running).await;
    assert_eq!(hasura_deny(&check_hasura(&mut client, &recently_expired).await).2, "Could not verify JWT: JWTExpired");
    let running = hasura_server(json!({"jwk_url": issuer.jwks_uri(), "allowed_skew": 60}), "").await;
    let mut client = common::client(&running).await;
    upstream(&check_hasura(&mut client, &recently_expired).await);
}

#[tokio::test]
async fn claims_map_with_defaults_and_literals() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let secret = json!({
        "jwk_url": issuer.jwks_uri(),
        "claims_map": {
            "x-hasura-allowed-roles": {"path": "$.roles[*].key"},
            "x-hasura-default-role": {"path": "$.default_role", "default": "user"},
            "x-hasura-user-id": {"path": "$.sub"},
            "x-hasura-org-code": {"path": "$.org_code", "default": "none"},
            "x-hasura-tenant": "acme"
        }
    });
    let running = hasura_server(secret, "").await;
    let mut client = common::client(&running).await;
    let mut claims = issuer.claims("kp_123", "hasura", 300);
    claims["roles"] =
        json!([{"id": "r1", "key": "user", "name": "User"}, {"id": "r2", "key": "manager", "name": "Manager"}]);
    claims["org_code"] = json!("org_abc");
    let (set, _) = upstream(&check_hasura(&mut client, &key.sign(&claims)).await);
    assert_eq!(
        set,
        session(&[
            ("x-hasura-role", "user"),
            ("x-hasura-user-id", "kp_123"),
            ("x-hasura-org-code", "org_abc"),
            ("x-hasura-tenant", "acme")
        ])
    );
    // Defaults fill what is missing; the requested role still has to be allowed.
    claims.as_object_mut().unwrap().remove("org_code");
    claims["default_role"] = json!("manager");
    let token = key.sign(&claims);
    let value = bearer(&token);
    let (set, _) = upstream(&check(&mut client, request("POST", "/v1/graphql", &[("authorization", &value)])).await);
    assert_eq!((set["x-hasura-role"].as_str(), set["x-hasura-org-code"].as_str()), ("manager", "none"));
    // Without roles and no default: Hasura's missing-role error.
    let bare = key.sign(&issuer.claims("kp_123", "hasura", 300));
    assert_eq!(
        hasura_deny(&check_hasura(&mut client, &bare).await),
        (200, "jwt-missing-role-claims".into(), "JWT claim does not contain x-hasura-allowed-roles".into())
    );
    // Found but of the wrong type: Hasura's invalid-claims error.
    let mut wrong = issuer.claims("kp_123", "hasura", 300);
    wrong["roles"] = json!([{"key": 5}]);
    assert_eq!(hasura_deny(&check_hasura(&mut client, &key.sign(&wrong)).await).1, "jwt-invalid-claims");
}

#[tokio::test]
async fn claims_map_missing_path_without_default() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let secret = json!({
        "jwk_url": issuer.jwks_uri(),
        "claims_map": {
            "x-hasura-allowed-roles": {"path": "$.roles"},
            "x-hasura-default-role": {"path": "$.role"},
            "x-hasura-org-id": {"path": "$.org_id"}
        }
    });
    let running = hasura_server(secret, "").await;
    let mut client = common::client(&running).await;
    let mut claims = issuer.claims("user_1", "hasura", 300);
    claims["roles"] = json!(["member"]);
    assert_eq!(
        hasura_deny(&check_hasura(&mut client, &key.sign(&claims)).await),
        (200, "jwt-missing-role-claims".into(), "JWT claim does not contain x-hasura-default-role".into())
    );
    claims["role"] = json!("member");
    assert_eq!(
        hasura_deny(&check_hasura(&mut client, &key.sign(&claims)).await),
        (200, "jwt-invalid-claims".into(), "JWT claim from claims_map, x-hasura-org-id not found".into())
    );
    claims["org_id"] = json!("org_1");
    let (set, _) = upstream(&check_hasura(&mut client, &key.sign(&claims)).await);
    assert_eq!(set, session(&[("x-hasura-role", "member"), ("x-hasura-org-id", "org_1")]));
}

#[tokio::test]
async fn unauthorized_role_and_spoofed_headers() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = hasura_server(json!({"jwk_url": issuer.jwks_uri()}), "    unauthorized_role: anonymous\n").await;
    let mut client = common::client(&running).await;
    let spoofed = [
        ("x-hasura-admin-secret", "guessed"),
        ("X-Hasura-Access-Key", "guessed"),
        ("x-hasura-user-id", "someone-else"),
        ("x-hasura-use-backend-only-permissions", "true"),
        ("x-hasura-role", "admin"),
    ];
    // No token: the unauthorized role and nothing the client said.
    let (set, removed) = upstream(&check(&mut client, request("POST", "/v1/graphql", &spoofed)).await);
    assert_eq!(set, session(&[("x-hasura-role", "anonymous")]));
    assert_eq!(removed, names(&["x-hasura-access-key", "x-hasura-use-backend-only-permissions", "x-hasura-user-id"]));

    // With a token: the token's session, every spoofed header gone or overwritten.
    let token = key.sign(&claims_with(&issuer, 300, standard_claims()));
    let mut headers = Location::Authorization.headers(&token);
    headers.extend(spoofed.iter().filter(|(k, _)| *k != "x-hasura-role").map(|(k, v)| (k.to_string(), v.to_string())));
    let (set, removed) = upstream(&check(&mut client, graphql(&headers)).await);
    assert_eq!(
        set,
        session(&[("x-hasura-role", "user"), ("x-hasura-user-id", "user-1"), ("x-hasura-org-id", "org-9")])
    );
    assert_eq!(removed, names(&["authorization", "x-hasura-access-key", "x-hasura-use-backend-only-permissions"]));

    // A present but invalid token never falls back to the unauthorized role.
    let expired = key.sign(&claims_with(&issuer, -3600, standard_claims()));
    assert_eq!(hasura_deny(&check_hasura(&mut client, &expired).await).1, "invalid-jwt");
}

#[tokio::test]
async fn websocket_upgrades_never_get_the_admin_secret() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let token = key.sign(&claims_with(&issuer, 300, standard_claims()));
    let expired = key.sign(&claims_with(&issuer, -3600, standard_claims()));
    let upgrade = [("upgrade", "websocket"), ("connection", "Upgrade"), ("x-hasura-role", "admin")];
    let with_token = with(Location::Authorization.headers(&token), &upgrade);
    let without_token = with(vec![], &upgrade);
    let no_secret = |response: &CheckResponse| {
        let (set, removed) = upstream(response);
        assert!(set.is_empty(), "no admin secret, no session headers on an upgrade: {set:?}");
        assert_eq!(removed, names(&["x-hasura-role"]));
    };

    // Default (verify): a valid token passes, without the admin secret; no token is a 401
    // like any request on this route; a bad token is refused.
    let running = hasura_server(json!({"jwk_url": issuer.jwks_uri()}), "").await;
    let mut client = common::client(&running).await;
    no_secret(&check(&mut client, graphql(&with_token)).await);
    assert_eq!(hasura_deny(&check(&mut client, graphql(&without_token)).await).1, "invalid-headers");
    let bad = with(Location::Authorization.headers(&expired), &upgrade);
    assert_eq!(hasura_deny(&check(&mut client, graphql(&bad)).await).1, "invalid-jwt");

    // With an unauthorized role, token-less upgrades pass as they would as requests.
    let running = hasura_server(json!({"jwk_url": issuer.jwks_uri()}), "    unauthorized_role: anonymous\n").await;
    let mut client = common::client(&running).await;
    no_secret(&check(&mut client, graphql(&without_token)).await);

    // passthrough: token-less upgrades pass (token in connection_init; Hasura verifies it).
    let running = hasura_server(json!({"jwk_url": issuer.jwks_uri()}), "    websocket: passthrough\n").await;
    let mut client = common::client(&running).await;
    no_secret(&check(&mut client, graphql(&without_token)).await);
    assert_eq!(hasura_deny(&check(&mut client, graphql(&bad)).await).1, "invalid-jwt");

    // deny: every upgrade refused.
    let running = hasura_server(json!({"jwk_url": issuer.jwks_uri()}), "    websocket: deny\n").await;
    let mut client = common::client(&running).await;
    let (status, code, _) = hasura_deny(&check(&mut client, graphql(&with_token)).await);
    assert_eq!((status, code.as_str()), (200, "access-denied"));
}

#[tokio::test]
async fn a_claim_cannot_smuggle_headers_or_requests() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let secret = json!({
        "jwk_url": issuer.jwks_uri(),
        "claims_map": {
            "x-hasura-allowed-roles": ["user"],
            "x-hasura-default-role": "user",
            "x-hasura-user-name": {"path": "$.name"}
        }
    });
    let running = hasura_server(secret, "").await;
    let mut client = common::client(&running).await;
    let mut claims = issuer.claims("u", "x", 300);
    claims["name"] = json!("x\r\nx-hasura-role: admin\r\n\r\nGET /smuggled HTTP/1.1");
    let (_, code, message) = hasura_deny(&check_hasura(&mut client, &key.sign(&claims)).await);
    assert_eq!(code, "jwt-invalid-claims", "{message}");
    claims["name"] = json!("Ada Lovelace");
    let (set, _) = upstream(&check_hasura(&mut client, &key.sign(&claims)).await);
    assert_eq!(set["x-hasura-user-name"], "Ada Lovelace");
}

#[tokio::test]
async fn forward_token_keeps_authorization() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = hasura_server(json!({"jwk_url": issuer.jwks_uri()}), "    forward_token: true\n").await;
    let mut client = common::client(&running).await;
    let token = key.sign(&claims_with(&issuer, 300, standard_claims()));
    let (_, removed) = upstream(&check_hasura(&mut client, &token).await);
    assert!(removed.is_empty(), "{removed:?}");
}

#[tokio::test]
async fn a_pasted_secret_string_via_env_and_static_keys() {
    let rsa = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&rsa]).await.unwrap();
    // A Kinde-style seed value, exactly as it sits in HASURA_GRAPHQL_JWT_SECRET.
    let seed = format!(r#"{{"jwk_url":"{}","audience":"hasura"}}"#, issuer.jwks_uri());
    // SAFETY: a variable name no other test reads.
    unsafe { std::env::set_var("PORTCULLIS_TEST_HASURA_SECRET", &seed) };
    let config = format!(
        "{LISTEN_ANY}issuers:\n  kinde:\n    hasura_jwt_secret: ${{PORTCULLIS_TEST_HASURA_SECRET}}\nbackends:\n  hasura: {{ type: hasura, admin_secret: {ADMIN_SECRET} }}\nroutes:\n  - match: {{ prefix: /v1/graphql }}\n    backend: hasura\n"
    );
    let running = start_ready(&config).await;
    let mut client = common::client(&running).await;
    upstream(&check_hasura(&mut client, &rsa.sign(&claims_with(&issuer, 300, standard_claims()))).await);
    let mut wrong_aud = claims_with(&issuer, 300, standard_claims());
    wrong_aud["aud"] = json!("other");
    assert_eq!(
        hasura_deny(&check_hasura(&mut client, &rsa.sign(&wrong_aud)).await).2,
        "Could not verify JWT: JWTNotInAudience"
    );

    // type + key: a PEM public key, and an HS256 secret.
    let ed = SigningKey::generate(Algorithm::EdDSA, "ed");
    let pem_secret = json!({"type": "Ed25519", "key": ed.public_pem.clone().unwrap()});
    let running = hasura_server(pem_secret, "").await;
    let mut client = common::client(&running).await;
    upstream(&check_hasura(&mut client, &ed.sign(&claims_with(&issuer, 300, standard_claims()))).await);
    assert_eq!(
        hasura_deny(&check_hasura(&mut client, &rsa.sign(&claims_with(&issuer, 300, standard_claims()))).await).2,
        "Could not verify JWT: JWSError JWSInvalidSignature"
    );
    let shared = "a-hasura-hs256-secret-of-at-least-32-chars";
    let running = hasura_server(json!({"type": "HS256", "key": shared}), "").await;
    let mut client = common::client(&running).await;
    let hs = SigningKey::hmac(Algorithm::HS256, "hs", shared.as_bytes());
    upstream(&check_hasura(&mut client, &hs.sign(&claims_with(&issuer, 300, standard_claims()))).await);
}

#[tokio::test]
async fn native_backend_claims_settings_for_plain_issuers() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let config = format!(
        "{LISTEN_ANY}issuers:\n  idp: {{ issuer: \"{}\", jwks_uri: \"{}\" }}\nbackends:\n  hasura:\n    type: hasura\n    admin_secret: {ADMIN_SECRET}\n    claims_namespace_path: $.app.hasura\nroutes:\n  - match: {{ prefix: /v1/graphql }}\n    backend: hasura\n",
        issuer.issuer(),
        issuer.jwks_uri()
    );
    let running = start_ready(&config).await;
    let mut client = common::client(&running).await;
    let mut claims = issuer.claims("u", "x", 300);
    claims["app"] = json!({"hasura": standard_claims()});
    let (set, _) = upstream(&check_hasura(&mut client, &key.sign(&claims)).await);
    assert_eq!(set["x-hasura-role"], "user");
}

#[test]
fn hasura_config_errors_name_their_path() {
    let bad = "issuers:\n  idp:\n    issuer: https://x.example.com\n    hasura_jwt_secret: { key: abc, jwk_url: https://x.example.com/jwks, type: HS256 }\n  two:\n    hasura_jwt_secret: '{\"jwk_url\": \"https://y.example.com/jwks\", \"claims_map\": {\"x-hasura-default-role\": \"u\"}}'\nbackends:\n  hasura: { type: hasura, admin_secret: s, claims_namespace: a, claims_namespace_path: $.b }\nroutes:\n  - match: { prefix: /v1/graphql }\n    backend: hasura\n    error_status: sometimes\n";
    let err = portcullis::policy::parse_str(bad, "t").unwrap_err().to_string();
    for expected in [
        "issuers.idp.issuer: comes from hasura_jwt_secret here",
        "issuers.idp.hasura_jwt_secret.jwk_url: key, jwk_url both cannot be present",
        "issuers.two.hasura_jwt_secret.claims_map: x-hasura-allowed-roles is expected but not found",
        "backends.hasura.claims_namespace_path: claims_namespace and claims_namespace_path both cannot be set",
        "routes[0].error_status: unknown value, expected one of: graphql, http",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in {err}");
    }
}
