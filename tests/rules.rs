//! Authorization rules through the real Check API with real signed tokens:
//! every requirement kind, any_of, CEL over claims and the request, fail-closed
//! evaluation, dry runs, identity headers and exported claims, the Hasura and
//! Supabase deny shapes, `token verify`'s explanation, and atomic reloads.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::google::protobuf::value::Kind;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

const AUD: &str = "api";

struct Kinde {
    key: SigningKey,
    issuer: DevIssuer,
}

impl Kinde {
    async fn start() -> Kinde {
        let key = SigningKey::generate(Algorithm::ES256, "kinde-1");
        let issuer = DevIssuer::start(&[&key]).await.unwrap();
        Kinde { key, issuer }
    }

    fn issuers(&self) -> String {
        format!(
            "issuers:\n  kinde: {{ issuer: \"{}\", jwks_uri: \"{}\", audiences: [{AUD}] }}\n",
            self.issuer.issuer(),
            self.issuer.jwks_uri()
        )
    }

    /// A Kinde-shaped token: permissions, role objects, org code, plus `extra`.
    fn token(&self, extra: Value) -> String {
        let mut claims = self.issuer.claims("kp_123", AUD, 300);
        claims["permissions"] = json!(["orders:read", "orders:delete"]);
        claims["roles"] = json!([{"id": "r1", "key": "admin", "name": "Admin"}]);
        claims["org_code"] = json!("acme");
        claims["scope"] = json!("openid orders:write");
        claims["email"] = json!("ada@acme.test");
        for (key, value) in extra.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(key);
            } else {
                claims[key] = value.clone();
            }
        }
        self.key.sign(&claims)
    }
}

fn on(response: &CheckResponse) -> Value {
    let denied = assert_denied(response, 403);
    serde_json::from_str(&denied.body).unwrap()
}

fn upstream(response: &CheckResponse) -> (BTreeMap<String, String>, Vec<String>) {
    let ok = assert_allowed(response);
    let set = ok.headers.iter().filter_map(|option| option.header.as_ref()).map(|h| (h.key.clone(), h.value.clone()));
    (set.collect(), ok.headers_to_remove.clone())
}

async fn get(client: &mut Client, path: &str, host: &str, headers: &[(&str, &str)]) -> CheckResponse {
    let mut request = request("GET", path, headers);
    let http = request.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    http.host = host.into();
    check(client, request).await
}

type Client =
    envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<tonic::transport::Channel>;

#[tokio::test]
async fn each_requirement_kind_holds_or_is_a_403_naming_it() {
    let kinde = Kinde::start().await;
    let config = format!(
        r#"{LISTEN_ANY}{issuers}routes:
  - name: delete-order
    match: {{ prefix: /api/orders/, methods: [DELETE] }}
    require: {{ permissions: [orders:delete] }}
  - name: write
    match: {{ prefix: /api/write }}
    require: {{ scopes: [orders:write, orders:admin] }}
  - name: admin
    match: {{ prefix: /admin/ }}
    require: {{ roles: [admin], roles_claim: "$.roles[*].key" }}
  - name: acme-only
    match: {{ prefix: /acme/ }}
    require: {{ claims: {{ org_code: [acme, acme-eu] }} }}
  - name: tenant
    match: {{ prefix: /tenant/ }}
    require: {{ when: 'claims.org_code == request.host.split(".")[0] && request.query.view == "full" && request.headers["x-client"] == "web"' }}
"#,
        issuers = kinde.issuers()
    );
    let running = start_ready(&config).await;
    let mut client = client(&running).await;
    let bearer = |token: &str| format!("Bearer {token}");
    let token = kinde.token(json!({}));
    let auth = bearer(&token);
    let as_is = [("authorization", auth.as_str())];

    assert_allowed(&check(&mut client, request("DELETE", "/api/orders/7", &as_is)).await);
    let reader = bearer(&kinde.token(json!({"permissions": ["orders:read", "orders:delete-all"]})));
    let denied = check(&mut client, request("DELETE", "/api/orders/7", &[("authorization", &reader)])).await;
    assert_eq!(on(&denied), json!({"error": "insufficient_scope", "error_description": "permissions: orders:delete"}));
    let challenge = header(assert_denied(&denied, 403), "www-authenticate").unwrap();
    assert_eq!(challenge, "Bearer error=\"insufficient_scope\", error_description=\"permissions: orders:delete\"");

    // All of the listed scopes; the challenge names what the route requires.
    let denied = get(&mut client, "/api/write", "api.example.com", &as_is).await;
    assert_eq!(on(&denied)["error_description"], "scopes: orders:admin");
    let challenge = header(assert_denied(&denied, 403), "www-authenticate").unwrap();
    assert!(challenge.ends_with(", scope=\"orders:write orders:admin\""), "{challenge}");
    let both = bearer(&kinde.token(json!({"scope": "orders:admin orders:write"})));
    assert_allowed(&get(&mut client, "/api/write", "api.example.com", &[("authorization", &both)]).await);

    assert_allowed(&get(&mut client, "/admin/x", "api.example.com", &as_is).await);
    let user = bearer(&kinde.token(json!({"roles": [{"key": "user"}]})));
    assert_eq!(
        on(&get(&mut client, "/admin/x", "api.example.com", &[("authorization", &user)]).await)["error_description"],
        "roles: admin"
    );

    assert_allowed(&get(&mut client, "/acme/x", "api.example.com", &as_is).await);
    let other = bearer(&kinde.token(json!({"org_code": "ACME"})));
    let denied = get(&mut client, "/acme/x", "api.example.com", &[("authorization", &other)]).await;
    assert_eq!(on(&denied)["error_description"], "claims: org_code", "the path, never the value");

    // CEL over claims, host, query and headers.
    let web = [("authorization", auth.as_str()), ("x-client", "web")];
    assert_allowed(&get(&mut client, "/tenant/x?view=full", "acme.example.com:443", &web).await);
    let wrong_host = get(&mut client, "/tenant/x?view=full", "globex.example.com", &web).await;
    assert_eq!(on(&wrong_host)["error_description"], "when: the expression is false");
    assert_denied(&get(&mut client, "/tenant/x?view=summary", "acme.example.com", &web).await, 403);
    // A missing claim (or header) is an evaluation error: fail closed, with a clear reason.
    let no_org = bearer(&kinde.token(json!({"org_code": null})));
    let failed =
        get(&mut client, "/tenant/x?view=full", "acme.example.com", &[("authorization", &no_org), ("x-client", "web")])
            .await;
    assert_eq!(on(&failed)["error_description"], "when: the expression could not be evaluated");
    let no_header = get(&mut client, "/tenant/x?view=full", "acme.example.com", &as_is).await;
    assert_eq!(on(&no_header)["error_description"], "when: the expression could not be evaluated");
}

#[tokio::test]
async fn any_of_needs_one_item_while_plain_keys_need_all() {
    let kinde = Kinde::start().await;
    let config = format!(
        "{LISTEN_ANY}{}routes:\n  - name: either\n    match: {{ prefix: /either/ }}\n    require: {{ any_of: {{ permissions: [orders:admin], roles: [admin] }}, roles_claim: \"$.roles[*].key\" }}\n  - name: both\n    match: {{ prefix: /both/ }}\n    require: {{ permissions: [orders:admin, orders:read] }}\n",
        kinde.issuers()
    );
    let running = start_ready(&config).await;
    let mut client = client(&running).await;
    let token = format!("Bearer {}", kinde.token(json!({})));
    assert_allowed(&check(&mut client, request("GET", "/either/x", &[("authorization", &token)])).await);
    let denied = check(&mut client, request("GET", "/both/x", &[("authorization", &token)])).await;
    assert_eq!(on(&denied)["error_description"], "permissions: orders:admin");
    let nobody = format!("Bearer {}", kinde.token(json!({"roles": [], "permissions": []})));
    let denied = check(&mut client, request("GET", "/either/x", &[("authorization", &nobody)])).await;
    assert_eq!(on(&denied)["error_description"], "any_of: none of permissions orders:admin, roles admin");
}

#[tokio::test]
async fn dry_run_allows_logs_and_counts_a_would_be_deny() {
    let kinde = Kinde::start().await;
    let config = format!(
        "{LISTEN_ANY}{}routes:\n  - name: rollout\n    match: {{ prefix: / }}\n    mode: dry_run\n    require: {{ permissions: [orders:admin] }}\n",
        kinde.issuers()
    );
    let running = start_ready(&config).await;
    let mut client = client(&running).await;
    let token = format!("Bearer {}", kinde.token(json!({})));
    for _ in 0..3 {
        assert_allowed(&check(&mut client, request("GET", "/x", &[("authorization", &token)])).await);
    }
    let (_, metrics) = http_get(&format!("http://{}/metrics", running.http_addr)).await;
    assert!(
        metrics.contains("portcullis_dry_run_denies_total{route=\"rollout\",requirement=\"permissions\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn identity_headers_replace_client_copies_on_every_allow() {
    let kinde = Kinde::start().await;
    let config = format!(
        r#"{LISTEN_ANY}{issuers}backends:
  hasura: {{ type: hasura, admin_secret: s3cret-admin-secret, unauthorized_role: anonymous, claims_map: {{ x-hasura-allowed-roles: ["user"], x-hasura-default-role: "user" }} }}
defaults:
  headers: {{ x-user-id: sub }}
routes:
  - name: plain
    match: {{ prefix: /api/ }}
    headers: {{ x-user-id: sub, x-org: "$.org_code", x-email: email, x-perms: permissions, x-roles: roles }}
    metadata_claims: [org_code, permissions]
    forward_token: false
  - name: default-headers
    match: {{ prefix: /d/ }}
  - name: hasura
    match: {{ prefix: /v1/graphql }}
    backend: hasura
    headers: {{ x-user-id: sub }}
  - name: open
    match: {{ prefix: /open/ }}
    action: allow
    headers: {{ x-user-id: sub }}
"#,
        issuers = kinde.issuers()
    );
    let running = start_ready(&config).await;
    let mut client = client(&running).await;
    let token = format!("Bearer {}", kinde.token(json!({})));
    let spoofed =
        [("authorization", token.as_str()), ("x-user-id", "admin"), ("x-org", "globex"), ("x-roles", "admin")];

    let allowed = check(&mut client, request("GET", "/api/x", &spoofed)).await;
    let (set, removed) = upstream(&allowed);
    assert_eq!(set["x-user-id"], "kp_123");
    assert_eq!(set["x-org"], "acme");
    assert_eq!(set["x-email"], "ada@acme.test");
    assert_eq!(set["x-perms"], "orders:read,orders:delete");
    assert!(!set.contains_key("x-roles"), "a list of objects is no header value");
    assert!(removed.contains(&"x-roles".to_string()) && removed.contains(&"authorization".to_string()));
    let fields = &allowed.dynamic_metadata.as_ref().unwrap().fields;
    assert_eq!(fields["org_code"].kind, Some(Kind::StringValue("acme".into())));
    assert!(matches!(fields["permissions"].kind, Some(Kind::ListValue(_))));

    let (set, _) = upstream(&check(&mut client, request("GET", "/d/x", &spoofed)).await);
    assert_eq!(set["x-user-id"], "kp_123", "the defaults apply to routes without a backend");

    // Anonymous allow (Hasura's unauthorized role) and an allow route: the spoof is removed.
    let (set, removed) = upstream(&check(&mut client, request("POST", "/v1/graphql", &[("x-user-id", "admin")])).await);
    assert_eq!(set["x-hasura-role"], "anonymous");
    assert!(removed.contains(&"x-user-id".to_string()) && !set.contains_key("x-user-id"));
    let (set, removed) = upstream(&check(&mut client, request("GET", "/open/x", &[("x-user-id", "admin")])).await);
    // Every identity header of the policy goes, not only the route's own.
    assert!(set.is_empty());
    assert_eq!(removed, ["x-user-id", "x-email", "x-org", "x-perms", "x-roles"]);
}

#[tokio::test]
async fn hasura_and_supabase_routes_answer_in_their_own_shapes() {
    let kinde = Kinde::start().await;
    let config = format!(
        r#"{LISTEN_ANY}{issuers}backends:
  hasura: {{ type: hasura, admin_secret: s3cret-admin-secret, claims_map: {{ x-hasura-allowed-roles: ["user"], x-hasura-default-role: "user" }} }}
  supabase: {{ type: supabase, signing_key: super-secret-jwt-token-with-at-least-32-characters, apikey: k, allow_anonymous: true }}
routes:
  - {{ match: {{ prefix: /v1/graphql }}, backend: hasura, require: {{ permissions: [orders:admin] }} }}
  - {{ match: {{ prefix: /rest/v1/ }}, backend: supabase, require: {{ roles: [owner] }} }}
"#,
        issuers = kinde.issuers()
    );
    let running = start_ready(&config).await;
    let mut client = client(&running).await;
    let token = format!("Bearer {}", kinde.token(json!({})));
    let hasura = check(&mut client, request("POST", "/v1/graphql", &[("authorization", &token)])).await;
    let denied = assert_denied(&hasura, 200);
    let body: Value = serde_json::from_str(&denied.body).unwrap();
    assert_eq!(
        body,
        json!({"errors": [{"extensions": {"path": "$", "code": "access-denied"}, "message": "permissions: orders:admin"}]})
    );
    let supabase = check(&mut client, request("GET", "/rest/v1/notes", &[("authorization", &token)])).await;
    let denied = assert_denied(&supabase, 403);
    let body: Value = serde_json::from_str(&denied.body).unwrap();
    assert_eq!(body, json!({"code": "42501", "details": null, "hint": null, "message": "roles: owner"}));
    // A route with requirements needs a token: anonymous access does not meet them.
    let anonymous = check(&mut client, request("GET", "/rest/v1/notes", &[])).await;
    assert_denied(&anonymous, 401);
}

#[test]
fn bad_rules_are_config_errors_with_their_yaml_path() {
    let config = "issuers:\n  kinde: { issuer: https://kinde.test }\nroutes:\n  - match: { prefix: /a/ }\n    require:\n      when: 'claims.org == ('\n  - match: { prefix: /b/ }\n    require: { when: 'claimz.org == \"x\"', roles: [admin], roles_claim: '$..x' }\n  - match: { prefix: /c/ }\n    headers: { authorization: sub }\n    require: { claims: { '$.org': { nested: 1 } } }\n";
    let err = portcullis::policy::parse_str(config, "t").unwrap_err().to_string();
    for expected in [
        "routes[0].require.when: CEL syntax error at line",
        "routes[1].require.when: unknown variable at line 1, column 1",
        "routes[1].require.roles_claim: invalid JSON path",
        "routes[2].headers.authorization: not a header portcullis may set",
        "routes[2].require.claims.$.org: expected a value",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in {err}");
    }
}

#[tokio::test]
async fn a_reload_swaps_rules_whole_and_a_broken_rule_keeps_the_old_ones() {
    let kinde = Kinde::start().await;
    let rules = |require: &str| {
        format!("{LISTEN_ANY}{}routes:\n  - match: {{ prefix: / }}\n    require: {require}\n", kinde.issuers())
    };
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), rules("{ permissions: [orders:read] }")).unwrap();
    let policy = portcullis::policy::load_file(file.path()).unwrap();
    let options =
        portcullis::server::ServeOptions { config_path: Some(file.path().to_path_buf()), ..Default::default() };
    let running = portcullis::server::start(policy, options, std::future::pending()).await.unwrap();
    wait_until("ready", || running.readiness.is_ready()).await;
    let mut client = client(&running).await;
    let token = format!("Bearer {}", kinde.token(json!({})));
    assert_allowed(&check(&mut client, request("GET", "/x", &[("authorization", &token)])).await);

    std::fs::write(file.path(), rules("{ when: 'claims.org_code == ' }")).unwrap();
    let err = running.reloader.reload().await.unwrap_err().to_string();
    assert!(err.contains("routes[0].require.when: CEL syntax error"), "{err}");
    assert_allowed(&check(&mut client, request("GET", "/x", &[("authorization", &token)])).await);

    std::fs::write(file.path(), rules("{ permissions: [orders:admin] }")).unwrap();
    running.reloader.reload().await.unwrap();
    assert_denied(&check(&mut client, request("GET", "/x", &[("authorization", &token)])).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_verify_explains_each_requirement_and_identity_header() {
    let kinde = Kinde::start().await;
    let config = format!(
        "{}routes:\n  - match: {{ prefix: /api/orders/ }}\n    require:\n      permissions: [orders:delete, orders:admin]\n      scopes: [orders:write]\n      when: 'claims.org_code == \"acme\"'\n    headers: {{ x-user-id: sub, x-tenant: tenant }}\n",
        kinde.issuers()
    );
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), config).unwrap();
    let token = kinde.token(json!({}));
    let path = file.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([
                "token",
                "verify",
                "--config",
                path.to_str().unwrap(),
                "--path",
                "/api/orders/7",
                "--method",
                "DELETE",
                &token,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    for line in [
        "decision: DENY (HTTP 403)",
        "reason:   permissions: orders:admin",
        "requirements (enforce):",
        "  scopes: has orders:write",
        "  permissions: has orders:delete",
        "  permissions: missing orders:admin",
        "  when `claims.org_code == \"acme\"`: true",
        // A deny: what the token would give the upstream once allowed, said once.
        "identity headers (if allowed):",
        "  x-user-id: kp_123",
        "  x-tenant: (no usable claim tenant; the client's copy is removed)",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}
