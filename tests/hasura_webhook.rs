//! Hasura's auth webhook face (`auth_hooks:`), called as Hasura calls it: GET
//! with the client's headers, POST with `{"headers", "request"}`. The sessions
//! are those of the gRPC face's Hasura matrix (tests/hasura.rs); every refusal
//! is a 401; the answer is cacheable at most until the token's `exp`.

mod common;

use std::collections::BTreeMap;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

const NS: &str = "https://hasura.io/jwt/claims";
const LISTEN: &str = "listen: { authz: 127.0.0.1:0, admin: 127.0.0.1:0, http: 127.0.0.1:0, http_authz: 127.0.0.1:0 }\n";

#[derive(Clone, Copy, Debug)]
enum Mode {
    Get,
    Post,
}

const MODES: [Mode; 2] = [Mode::Get, Mode::Post];

/// What Hasura gets back: status, `Cache-Control`, and the body as a JSON value.
struct Answer {
    status: u16,
    cache_control: Option<String>,
    body: Value,
}

impl Answer {
    /// The session variables of a 200, without the body's `Cache-Control`.
    fn session(&self) -> BTreeMap<String, String> {
        assert_eq!(self.status, 200, "expected a session: {}", self.body);
        let object = self.body.as_object().expect("a JSON object");
        object
            .iter()
            .filter(|(name, _)| *name != "Cache-Control")
            .map(|(name, value)| (name.clone(), value.as_str().expect("string session values").to_string()))
            .collect()
    }
}

fn session(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
}

/// Calls the hook as Hasura does in `mode` for a client that sent `headers`.
async fn call(running: &portcullis::server::Running, mode: Mode, headers: &[(&str, &str)]) -> Answer {
    let url = format!("http://{}/hasura/webhook", running.http_authz_addr.expect("http_authz listener"));
    let client = reqwest::Client::new();
    let request = match mode {
        // GET: the client's headers (less those Hasura drops) plus Hasura's own.
        Mode::Get => {
            let mut request = client.get(&url).header("user-agent", "hasura-graphql-engine/v2.48.0");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request
        }
        // POST: every client header, and the GraphQL request.
        Mode::Post => {
            let headers: serde_json::Map<String, Value> =
                headers.iter().map(|(name, value)| (name.to_string(), json!(value))).collect();
            let body = json!({
                "headers": headers,
                "request": {"query": "query { users { id } }", "variables": {}, "operationName": null}
            });
            client.post(&url).header("content-type", "application/json").body(body.to_string())
        }
    };
    let response = request.send().await.expect("webhook answers");
    let status = response.status().as_u16();
    let cache_control = response.headers().get("cache-control").map(|value| value.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, cache_control, body }
}

fn standard_claims() -> Value {
    json!({
        "x-hasura-allowed-roles": ["user", "editor"],
        "x-hasura-default-role": "user",
        "x-hasura-user-id": "user-1",
        "X-Hasura-Org-Id": "org-9"
    })
}

/// Claims with the Hasura namespace and an `exp` of `now + lifetime` on `clock`.
fn claims_at(issuer: &DevIssuer, clock: &Clock, lifetime: i64, hasura: Value) -> Value {
    let mut claims = issuer.claims("user-1", "hasura", 0);
    let now = clock.now() as i64;
    claims["iat"] = json!(now);
    claims["exp"] = json!(now + lifetime);
    claims[NS] = hasura;
    claims
}

/// A server whose issuer `kinde` is imported from a Hasura JWT secret, with one hook.
async fn hook_server(secret: Value, backend_extra: &str, clock: Clock) -> portcullis::server::Running {
    let config = format!(
        "{LISTEN}issuers:\n  kinde:\n    hasura_jwt_secret: {secret}\nbackends:\n  hasura:\n    type: hasura\n    admin_secret: never-sent\n{backend_extra}routes:\n  - action: deny\nauth_hooks:\n  - {{ path: /hasura/webhook, backend: hasura, issuers: [kinde] }}\n"
    );
    let running = start_with_clock(&config, clock).await;
    wait_until("server ready", || running.readiness.is_ready()).await;
    running
}

#[tokio::test]
async fn sessions_roles_and_refusals_in_both_modes() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let stranger = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let clock = clock_now();
    let running = hook_server(json!({"jwk_url": issuer.jwks_uri()}), "", clock.clone()).await;
    let token = key.sign(&claims_at(&issuer, &clock, 300, standard_claims()));
    let auth = bearer(&token);
    for mode in MODES {
        let answer = call(&running, mode, &[("authorization", &auth)]).await;
        assert_eq!(
            answer.session(),
            session(&[("X-Hasura-Role", "user"), ("X-Hasura-User-Id", "user-1"), ("X-Hasura-Org-Id", "org-9")]),
            "{mode:?}: the exact session, never the admin secret"
        );
        // Cached at most until exp, no leeway: the fixed clock makes it exact.
        assert_eq!(answer.cache_control.as_deref(), Some("max-age=300"), "{mode:?}");
        assert_eq!(answer.body["Cache-Control"], "max-age=300", "{mode:?}");

        // Role selection with the client's x-hasura-role.
        let editor = call(&running, mode, &[("authorization", &auth), ("x-hasura-role", "editor")]).await;
        assert_eq!(editor.session()["X-Hasura-Role"], "editor", "{mode:?}");

        // Every refusal is a 401, never cached: a role not allowed, no token,
        // an expired token, a forged one, a spoofed session.
        let expired = key.sign(&claims_at(&issuer, &clock, -1, standard_claims()));
        let forged = stranger.sign(&claims_at(&issuer, &clock, 300, standard_claims()));
        let (expired, forged) = (bearer(&expired), bearer(&forged));
        let refusals: [&[(&str, &str)]; 5] = [
            &[("authorization", &auth), ("x-hasura-role", "admin")],
            &[],
            &[("authorization", &expired)],
            &[("authorization", &forged)],
            &[("x-hasura-role", "admin"), ("x-hasura-user-id", "someone"), ("x-hasura-admin-secret", "guess")],
        ];
        for (case, headers) in refusals.iter().enumerate() {
            let answer = call(&running, mode, headers).await;
            assert_eq!(answer.status, 401, "{mode:?} case {case}: {}", answer.body);
            assert_eq!(answer.cache_control.as_deref(), Some("no-store"), "{mode:?} case {case}");
            assert!(!answer.body.to_string().contains(&token), "never echoes a token");
        }
    }
    // Counted under the webhook's face.
    let text = running.authorizer.metrics().render(None, Default::default()).1;
    assert!(
        text.lines()
            .any(|line| line.starts_with("portcullis_checks_total") && line.contains("face=\"hasura_webhook\"")),
        "{text}"
    );
}

#[tokio::test]
async fn a_token_that_expires_now_is_never_cached() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let clock = clock_now();
    // A skew lets a token at its exp through; the answer is still not cached.
    let running = hook_server(json!({"jwk_url": issuer.jwks_uri(), "allowed_skew": 60}), "", clock.clone()).await;
    for lifetime in [0, -30] {
        let token = key.sign(&claims_at(&issuer, &clock, lifetime, standard_claims()));
        for mode in MODES {
            let answer = call(&running, mode, &[("authorization", &bearer(&token))]).await;
            assert_eq!(answer.session()["X-Hasura-Role"], "user");
            assert_eq!(answer.cache_control.as_deref(), Some("no-store"), "{mode:?} {lifetime}");
            assert!(answer.body.get("Cache-Control").is_none());
        }
    }
}

#[tokio::test]
async fn stringified_claims_namespace_path_and_claims_map() {
    let key = SigningKey::generate(Algorithm::ES256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let clock = clock_now();
    let expected = session(&[("X-Hasura-Role", "user"), ("X-Hasura-User-Id", "user-1"), ("X-Hasura-Org-Id", "org-9")]);

    let secret = json!({"jwk_url": issuer.jwks_uri(), "claims_format": "stringified_json"});
    let running = hook_server(secret, "", clock.clone()).await;
    let stringified = key.sign(&claims_at(&issuer, &clock, 300, json!(standard_claims().to_string())));
    let plain = key.sign(&claims_at(&issuer, &clock, 300, standard_claims()));
    for mode in MODES {
        assert_eq!(call(&running, mode, &[("authorization", &bearer(&stringified))]).await.session(), expected);
        assert_eq!(call(&running, mode, &[("authorization", &bearer(&plain))]).await.status, 401);
    }

    let secret = json!({"jwk_url": issuer.jwks_uri(), "claims_namespace_path": "$.hasura['claims']"});
    let running = hook_server(secret, "", clock.clone()).await;
    let mut claims = claims_at(&issuer, &clock, 300, Value::Null);
    claims.as_object_mut().unwrap().remove(NS);
    claims["hasura"] = json!({"claims": standard_claims()});
    let nested = key.sign(&claims);
    for mode in MODES {
        assert_eq!(call(&running, mode, &[("authorization", &bearer(&nested))]).await.session(), expected);
        assert_eq!(call(&running, mode, &[("authorization", &bearer(&plain))]).await.status, 401);
    }

    let secret = json!({"jwk_url": issuer.jwks_uri(), "claims_namespace": "hasura_claims"});
    let running = hook_server(secret, "", clock.clone()).await;
    let mut claims = claims_at(&issuer, &clock, 300, Value::Null);
    claims.as_object_mut().unwrap().remove(NS);
    claims["hasura_claims"] = standard_claims();
    let custom = key.sign(&claims);
    for mode in MODES {
        assert_eq!(call(&running, mode, &[("authorization", &bearer(&custom))]).await.session(), expected);
    }

    // Kinde-shaped roles through claims_map.
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
    let running = hook_server(secret, "", clock.clone()).await;
    let mut claims = claims_at(&issuer, &clock, 300, Value::Null);
    claims.as_object_mut().unwrap().remove(NS);
    claims["sub"] = json!("kp_123");
    claims["roles"] = json!([{"id": "r1", "key": "user"}, {"id": "r2", "key": "manager"}]);
    claims["org_code"] = json!("org_abc");
    let kinde = bearer(&key.sign(&claims));
    for mode in MODES {
        assert_eq!(
            call(&running, mode, &[("authorization", &kinde)]).await.session(),
            session(&[
                ("X-Hasura-Role", "user"),
                ("X-Hasura-User-Id", "kp_123"),
                ("X-Hasura-Org-Code", "org_abc"),
                ("X-Hasura-Tenant", "acme")
            ])
        );
        let manager = call(&running, mode, &[("authorization", &kinde), ("x-hasura-role", "manager")]).await;
        assert_eq!(manager.session()["X-Hasura-Role"], "manager");
        let admin = call(&running, mode, &[("authorization", &kinde), ("x-hasura-role", "admin")]).await;
        assert_eq!(admin.status, 401);
    }
}

#[tokio::test]
async fn unauthorized_role_for_requests_without_a_token_only() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let clock = clock_now();
    let running =
        hook_server(json!({"jwk_url": issuer.jwks_uri()}), "    unauthorized_role: anonymous\n", clock.clone()).await;
    let spoofed = [("x-hasura-role", "admin"), ("x-hasura-user-id", "someone-else")];
    let expired = bearer(&key.sign(&claims_at(&issuer, &clock, -3600, standard_claims())));
    for mode in MODES {
        // No token: the unauthorized role and nothing the client said; not cacheable by exp.
        let anonymous = call(&running, mode, &spoofed).await;
        assert_eq!(anonymous.session(), session(&[("X-Hasura-Role", "anonymous")]), "{mode:?}");
        assert_eq!(anonymous.cache_control.as_deref(), Some("no-store"));
        // A present but invalid token never falls back to the unauthorized role.
        assert_eq!(call(&running, mode, &[("authorization", &expired)]).await.status, 401, "{mode:?}");
    }
}

#[tokio::test]
async fn websocket_init_headers_get_the_session_and_bad_calls_are_refused() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let clock = clock_now();
    let running = hook_server(json!({"jwk_url": issuer.jwks_uri()}), "", clock.clone()).await;
    let auth = bearer(&key.sign(&claims_at(&issuer, &clock, 300, standard_claims())));
    // At connection_init Hasura passes the upgrade headers too (POST carries them as data).
    let upgrade = [("authorization", auth.as_str()), ("upgrade", "websocket"), ("connection", "Upgrade")];
    let answer = call(&running, Mode::Post, &upgrade).await;
    assert_eq!(answer.session()["X-Hasura-Role"], "user");

    let url = format!("http://{}/hasura/webhook", running.http_authz_addr.unwrap());
    let client = reqwest::Client::new();
    for body in [
        json!({"request": {}}),
        json!({"headers": {"authorization": 5}}),
        json!({"headers": {"Authorization": auth, "authorization": auth}}),
        json!("headers"),
    ] {
        let response =
            client.post(&url).header("content-type", "application/json").body(body.to_string()).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{body}");
    }
    let other = format!("http://{}/hasura/other", running.http_authz_addr.unwrap());
    assert_eq!(client.get(&other).send().await.unwrap().status().as_u16(), 404);
    assert_eq!(client.put(&url).send().await.unwrap().status().as_u16(), 405);
}

#[test]
fn hook_config_errors_name_their_path() {
    let config = format!(
        "{LISTEN}issuers:\n  kinde:\n    issuer: https://kinde.example.com\n    audiences: any\nbackends:\n  hasura:\n    type: hasura\n    admin_secret: s\n  supa:\n    type: supabase\n    mode: remint\n    signing_key: 0123456789abcdef0123456789abcdef0123\n    apikey: k\nroutes:\n  - action: deny\nauth_hooks:\n  - {{ path: /webhook, backend: hasura }}\n  - {{ path: /hasura/a, backend: supa }}\n  - {{ path: /hasura/b, backend: nope, issuers: [other] }}\n  - {{ path: /hasura/b, backend: hasura, extra: 1 }}\n"
    );
    let err = portcullis::policy::compile_text(&config, "test", &Default::default(), None).unwrap_err().to_string();
    assert!(err.contains("must name a backend of type hasura"), "{err}");
    for path in [
        "auth_hooks[0].path",
        "auth_hooks[1].backend",
        "auth_hooks[2].backend",
        "auth_hooks[2].issuers[0]",
        "auth_hooks[3].extra",
    ] {
        assert!(err.contains(path), "{path} in {err}");
    }
}

/// The shipped example, with its Kinde JWKS pointed at a loopback issuer and ephemeral ports.
#[tokio::test]
async fn the_shipped_example_answers_hasura() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let clock = clock_now();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hasura-webhook/portcullis.yaml"))
        .unwrap()
        .replace("https://acme.kinde.com/.well-known/jwks.json", &issuer.jwks_uri())
        .replace("${HASURA_GRAPHQL_ADMIN_SECRET}", "example-admin-secret");
    let (_, rest) = text.split_once("issuers:\n").expect("an issuers section");
    let config = format!("{LISTEN}issuers:\n{rest}");
    let running = start_with_clock(&config, clock.clone()).await;
    wait_until("server ready", || running.readiness.is_ready()).await;
    let token = bearer(&key.sign(&claims_at(&issuer, &clock, 120, standard_claims())));
    for mode in MODES {
        let answer = call(&running, mode, &[("authorization", &token)]).await;
        assert_eq!(answer.session()["X-Hasura-User-Id"], "user-1");
        assert_eq!(answer.cache_control.as_deref(), Some("max-age=120"));
        assert_eq!(call(&running, mode, &[]).await.session(), session(&[("X-Hasura-Role", "anonymous")]));
    }
}
