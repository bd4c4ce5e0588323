//! Regression tests for the adversarial review's findings, one test per
//! finding, each through the real Check API (or the real binary, or the real
//! Admin API) with real signed tokens and a real loopback issuer. Findings that
//! involve Envoy are also proven through a real Envoy in tests/envoy_hardening.rs.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

const AUD: &str = "api";

fn body(response: &CheckResponse, status: i32) -> Value {
    serde_json::from_str(&assert_denied(response, status).body).expect("JSON deny body")
}

fn with_host(mut request: CheckRequest, host: &str) -> CheckRequest {
    let http = request.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    http.host = host.into();
    http.headers.insert(":authority".into(), host.into());
    request
}

/// Headers Envoy would set upstream.
fn set_headers(response: &CheckResponse) -> BTreeMap<String, String> {
    let ok = assert_allowed(response);
    ok.headers.iter().filter_map(|option| option.header.as_ref()).map(|h| (h.key.clone(), h.value.clone())).collect()
}

fn issuer_block(issuer: &DevIssuer, extra: &str) -> String {
    format!(
        "{LISTEN_ANY}issuers:\n  idp:\n    issuer: {}\n    jwks_uri: {}\n    audiences: [{AUD}]\n{extra}",
        issuer.issuer(),
        issuer.jwks_uri()
    )
}

// 1. A slow IdP must not hold a Check: the unknown-kid refetch is waited for
// only `unknown_kid_wait_ms`, then the Check answers 401 and the fetch finishes
// in the background for the requests after it.
#[tokio::test]
async fn a_slow_idp_never_holds_a_check_past_the_unknown_kid_wait() {
    let old = SigningKey::generate(Algorithm::RS256, "old");
    let new = SigningKey::generate(Algorithm::ES256, "new");
    let issuer = DevIssuer::start(&[&old]).await.unwrap();
    let config =
        issuer_block(&issuer, "    refresh: { unknown_kid_interval_seconds: 0 }\nroutes:\n  - match: { prefix: / }\n");
    let running = start_ready(&config).await;
    let mut client = client(&running).await;
    let before = issuer.jwks_fetches();

    // A legitimate rotation, published by an IdP that takes 3 s to answer.
    issuer.set_keys(&[&old, &new]);
    issuer.set_jwks_delay(Duration::from_secs(3));
    let token = new.sign(&issuer.claims("u", AUD, 300));
    assert_invalid_token(&check_token(&mut client, "/", &token).await, "no key with kid \"new\"");

    // The fetch the first Check started completes in the background; later
    // Checks join it instead of starting their own, then find the key.
    let mut answer = check_token(&mut client, "/", &token).await;
    for _ in 0..300 {
        if status_code(&answer) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        answer = check_token(&mut client, "/", &token).await;
    }
    assert_allowed(&answer);
    assert_eq!(issuer.jwks_fetches() - before, 1, "one shared refetch");
}

// 2. Header stripping is linear, and a request beyond the limits is a 431
// before any per-header work (no token needed on a route with unauthorized_role).
#[tokio::test]
async fn thousands_of_client_headers_are_a_431_not_a_stalled_worker() {
    let config = format!(
        "{LISTEN_ANY}issuers: {{}}\nbackends:\n  hasura: {{ type: hasura, admin_secret: s3cret-admin-secret, unauthorized_role: anonymous }}\nroutes:\n  - match: {{ prefix: /v1/graphql }}\n    backend: hasura\n    issuers: []\n"
    );
    // An authenticating route needs an issuer; use one that is never asked.
    let config = config
        .replace(
            "issuers: {}\n",
            "issuers:\n  idp: { issuer: https://idp.example.com, jwks_uri: https://idp.example.com/jwks }\n",
        )
        .replace("    issuers: []\n", "");
    let running = start(&config).await;
    let mut client = client(&running).await;

    // 5000 headers: a CheckRequest of about 150 KiB, within the message limit.
    let names: Vec<String> = (0..32_000).map(|index| format!("x-hasura-spoof-{index}")).collect();
    let headers: Vec<(&str, &str)> = names[..5000].iter().map(|name| (name.as_str(), "1")).collect();
    let flood = check(&mut client, request("POST", "/v1/graphql", &headers)).await;
    let denied = assert_denied(&flood, 431);
    assert!(denied.body.contains("limits.max_headers"), "{}", denied.body);
    // 32000 (850 KiB) is more than any header limits need: refused unread, by its length.
    let headers: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "1")).collect();
    let unread = client.check(request("POST", "/v1/graphql", &headers)).await.unwrap_err();
    assert_eq!(unread.code(), tonic::Code::OutOfRange, "{unread:?}");

    // Within the limits every spoofed header is removed, each exactly once.
    let headers: Vec<(&str, &str)> = names[..150].iter().map(|name| (name.as_str(), "1")).collect();
    let allowed = check(&mut client, request("POST", "/v1/graphql", &headers)).await;
    let ok = assert_allowed(&allowed);
    assert_eq!(ok.headers_to_remove.len(), 150);

    let big = "v".repeat(100 * 1024);
    let too_big = check(&mut client, request("POST", "/v1/graphql", &[("x-big", &big)])).await;
    assert!(assert_denied(&too_big, 431).body.contains("limits.max_header_bytes"));
}

// 3. An :authority that is not host[:port] is refused, never routed elsewhere.
#[tokio::test]
async fn malformed_authorities_are_refused_not_routed() {
    let config = format!(
        "{LISTEN_ANY}issuers: {{}}\nroutes:\n  - name: admin-host\n    match: {{ hosts: [admin.example.com] }}\n    action: deny\n  - name: rest\n    match: {{ prefix: / }}\n    action: allow\n"
    );
    let running = start(&config).await;
    let mut client = client(&running).await;
    for authority in
        ["admin.example.com:abc", "admin.example.com:443:443", "user@admin.example.com", "admin.example.com:"]
    {
        let response = check(&mut client, with_host(request("GET", "/", &[]), authority)).await;
        assert_eq!(body(&response, 400)["error"], "invalid_request", "{authority}");
    }
    for authority in ["admin.example.com:443", "ADMIN.example.com.", "admin.example.com"] {
        let response = check(&mut client, with_host(request("GET", "/", &[]), authority)).await;
        assert_eq!(body(&response, 403)["error_description"], "this route denies every request", "{authority}");
    }
    assert_allowed(&check(&mut client, with_host(request("GET", "/", &[]), "www.example.com:8443")).await);
}

// 4. The cookie portcullis verifies must be the one the upstream reads: a
// token cookie sent twice (in one header or in two) is refused.
#[tokio::test]
async fn a_repeated_token_cookie_is_refused() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let config = issuer_block(&issuer, "    token_from: { cookie: session }\nroutes:\n  - match: { prefix: / }\n");
    let running = start_ready(&config).await;
    let mut client = client(&running).await;
    let valid = key.sign(&issuer.claims("u", AUD, 300));
    let forged = SigningKey::generate(Algorithm::RS256, "k").sign(&issuer.claims("admin", AUD, 300));
    for cookie in [
        format!("session={valid}; session={forged}"),
        format!("other=x,session={valid}; session={forged}"),
        format!("session={forged},session={valid}"),
    ] {
        let response = check(&mut client, request("GET", "/", &[("cookie", &cookie)])).await;
        let denied = assert_denied(&response, 400);
        let challenge = header(denied, "www-authenticate").unwrap();
        assert!(challenge.starts_with("Bearer error=\"invalid_request\""), "{challenge}");
    }
    let single = format!("theme=dark; session={valid}");
    assert_allowed(&check(&mut client, request("GET", "/", &[("cookie", &single)])).await);
}

// 5. When a route reads several locations, two different tokens are refused:
// verifying one and forwarding the other would let the upstream read a forgery.
#[tokio::test]
async fn different_tokens_in_two_locations_are_refused() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let config = format!(
        "{LISTEN_ANY}issuers:\n  bearer: {{ issuer: \"{iss}\", jwks_uri: \"{jwks}\" }}\n  cookie: {{ issuer: \"{iss}\", jwks_uri: \"{jwks}\", token_from: {{ cookie: session }} }}\nroutes:\n  - match: {{ prefix: / }}\n",
        iss = issuer.issuer(),
        jwks = issuer.jwks_uri()
    );
    let running = start_ready(&config).await;
    let mut client = client(&running).await;
    let valid = key.sign(&issuer.claims("u", AUD, 300));
    let forged = SigningKey::generate(Algorithm::RS256, "k").sign(&issuer.claims("admin", AUD, 300));

    let cookie = format!("session={forged}");
    let mixed =
        check(&mut client, request("GET", "/", &[("authorization", &bearer(&valid)), ("cookie", &cookie)])).await;
    assert_eq!(body(&mixed, 400)["error"], "invalid_request");
    // A repeated Authorization header (joined with "," by Envoy) is refused too.
    let joined = format!("Bearer {valid},Bearer {forged}");
    assert_denied(&check(&mut client, request("GET", "/", &[("authorization", &joined)])).await, 400);
    // The same token in both places is one token.
    let same = format!("session={valid}");
    assert_allowed(
        &check(&mut client, request("GET", "/", &[("authorization", &bearer(&valid)), ("cookie", &same)])).await,
    );
}

// 6. Percent-encoded reserved characters match the same routes as their
// decoded form, and config patterns are read the same way.
#[tokio::test]
async fn percent_encoded_reserved_characters_cannot_skip_deny_routes() {
    let config = format!(
        "{LISTEN_ANY}issuers: {{}}\nroutes:\n  - {{ name: batch, match: {{ path: /odata/$batch }}, action: deny }}\n  - {{ name: purge, match: {{ prefix: '/v1/items:purge' }}, action: deny }}\n  - {{ name: encoded-pattern, match: {{ prefix: /files/%24secret }}, action: deny }}\n  - {{ name: rest, match: {{ prefix: / }}, action: allow }}\n"
    );
    let running = start(&config).await;
    let mut client = client(&running).await;
    for path in ["/odata/%24batch", "/v1/items%3Apurge", "/v1/items%3apurge/all", "/files/$secret/x"] {
        let response = check(&mut client, request("POST", path, &[])).await;
        assert_eq!(body(&response, 403)["error_description"], "this route denies every request", "{path}");
    }
    // Matching stays exact and case-sensitive on the decoded form.
    assert_allowed(&check(&mut client, request("POST", "/odata/%24Batch", &[])).await);
}

// 7. `;` path parameters: routing uses the path without them (as Tomcat,
// Jetty and Spring serve it), and a route must opt in to receive them.
#[tokio::test]
async fn path_parameters_cannot_skip_deny_routes() {
    let config = format!(
        "{LISTEN_ANY}issuers: {{}}\nroutes:\n  - {{ name: internal, match: {{ prefix: /internal/ }}, action: deny }}\n  - {{ name: servlet, match: {{ prefix: /app/ }}, action: allow, allow_path_parameters: true }}\n  - {{ name: rest, match: {{ prefix: / }}, action: allow }}\n"
    );
    let running = start(&config).await;
    let mut client = client(&running).await;
    // Routed as /internal/y: the deny route is the one that answers.
    let denied = check(&mut client, request("GET", "/internal;x/y", &[])).await;
    assert_eq!(body(&denied, 400)["error"], "invalid_request");
    let route = &denied.dynamic_metadata.as_ref().unwrap().fields["route"];
    assert_eq!(route.kind, Some(envoy_types::pb::google::protobuf::value::Kind::StringValue("internal".into())));
    let refused = check(&mut client, request("GET", "/public;jsessionid=1/x", &[])).await;
    assert_eq!(body(&refused, 400)["error"], "invalid_request");
    assert_allowed(&check(&mut client, request("GET", "/app;jsessionid=1/page", &[])).await);
    assert_allowed(&check(&mut client, request("GET", "/public/x", &[])).await);
}

fn fake_rsa_jwk(kid: &str, modulus_bytes: usize, exponent: &[u8]) -> Value {
    let mut modulus = vec![0xC5u8; modulus_bytes];
    modulus[modulus_bytes - 1] |= 1;
    json!({"kty": "RSA", "kid": kid, "n": URL_SAFE_NO_PAD.encode(&modulus), "e": URL_SAFE_NO_PAD.encode(exponent)})
}

// 8. A hostile JWKS: too many keys refuse the document; oversized moduli and
// odd exponents are skipped (and reported), the good key keeps working.
#[tokio::test]
async fn a_hostile_jwks_cannot_make_kidless_tokens_expensive() {
    let key = SigningKey::generate(Algorithm::RS256, "good");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let mut keys: Vec<Value> = (0..4).map(|i| fake_rsa_jwk(&format!("huge-{i}"), 1024, &[1, 0, 1])).collect();
    keys.push(fake_rsa_jwk("odd-exponent", 256, &[1, 0, 0, 0, 1]));
    keys.push(serde_json::to_value(&key.jwk).unwrap());
    issuer.set_jwks_document(json!({ "keys": keys }));
    let running = start_ready(&issuer_block(&issuer, "routes:\n  - match: { prefix: / }\n")).await;
    let policy = running.authorizer.policy();
    let status = policy.issuers[0].keys.status();
    assert_eq!(status.key_ids, vec!["good".to_string()]);
    let mut client = client(&running).await;
    let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
    header.kid = None;
    assert_allowed(&check_token(&mut client, "/", &key.sign_with_header(&header, &issuer.claims("u", AUD, 60))).await);

    // More keys than any IdP publishes: the document is refused, the last good keys stay.
    let flood: Vec<Value> = (0..101).map(|i| fake_rsa_jwk(&format!("k{i}"), 256, &[1, 0, 1])).collect();
    issuer.set_jwks_document(json!({ "keys": flood }));
    let refreshed = policy.issuers[0].keys.refresh().await;
    assert!(refreshed.unwrap_err().to_string().contains("at most 100"));
    assert_eq!(policy.issuers[0].keys.status().key_ids, vec!["good".to_string()]);
}

// 9. Concurrent unknown kids share one fetch, and the rate limit counts from
// the end of that fetch, so a slow IdP is not asked once per waiting request.
#[tokio::test]
async fn concurrent_unknown_kids_share_one_fetch() {
    let key = SigningKey::generate(Algorithm::RS256, "real");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let config =
        issuer_block(&issuer, "    refresh: { unknown_kid_interval_seconds: 0 }\nroutes:\n  - match: { prefix: / }\n");
    let running = start_ready(&config).await;
    issuer.set_jwks_delay(Duration::from_secs(3));
    let before = issuer.jwks_fetches();
    let client = client(&running).await;
    let mut tasks = Vec::new();
    for attempt in 0..6 {
        let mut client = client.clone();
        let token =
            SigningKey::generate(Algorithm::ES256, &format!("random-{attempt}")).sign(&issuer.claims("u", AUD, 60));
        tasks.push(tokio::spawn(async move { check_token(&mut client, "/", &token).await }));
    }
    for task in tasks {
        assert_invalid_token(&task.await.unwrap(), "no key with kid");
    }
    assert_eq!(issuer.jwks_fetches() - before, 1, "six waiting Checks, one fetch");
}

// 10. Every redirect hop must be https (or loopback http): a plain-http hop
// could be a man in the middle serving his own keys.
#[tokio::test]
async fn redirects_through_plain_http_are_refused() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // 0.0.0.0 reaches this machine but is not a loopback address: it stands for
    // any plain-http host in between.
    let target = issuer.jwks_uri();
    let app = axum::Router::new()
        .route(
            "/jwks",
            axum::routing::get(move || async move {
                axum::response::Redirect::temporary(&format!("http://0.0.0.0:{port}/hop"))
            }),
        )
        .route("/hop", axum::routing::get(move || async move { axum::response::Redirect::temporary(&target) }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = format!(
        "{LISTEN_ANY}issuers:\n  idp: {{ issuer: \"{}\", jwks_uri: \"http://127.0.0.1:{port}/jwks\" }}\nroutes:\n  - match: {{ prefix: / }}\n",
        issuer.issuer()
    );
    let running = start(&config).await;
    let keys = &running.authorizer.policy().issuers[0].keys;
    let refreshed = keys.refresh().await;
    let error = refreshed.expect_err("an insecure hop is refused").to_string();
    assert!(error.contains("neither https nor loopback"), "{error}");
    assert!(keys.current().is_none());
    let mut client = client(&running).await;
    assert_denied(&check_token(&mut client, "/", &key.sign(&issuer.claims("u", "x", 60))).await, 503);
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

// 11. A cache hit gives the answer a fresh check would: on a route listing
// [b, a], b vouches for the token even after an a-only route cached it.
#[tokio::test]
async fn a_cached_token_gets_the_issuer_a_fresh_check_would_pick() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let config = format!(
        "{LISTEN_ANY}issuers:\n  a: {{ issuer: \"{iss}\", jwks_uri: \"{jwks}\" }}\n  b: {{ issuer: \"{iss}\", jwks_uri: \"{jwks}\" }}\nbackends:\n  supabase: {{ type: supabase, signing_key: super-secret-jwt-token-with-at-least-32-characters, apikey: k }}\nroutes:\n  - {{ match: {{ prefix: /a/ }}, issuers: [a], backend: supabase }}\n  - {{ match: {{ prefix: /ba/ }}, issuers: [b, a], backend: supabase }}\n",
        iss = issuer.issuer(),
        jwks = issuer.jwks_uri()
    );
    let running = start_ready(&config).await;
    let mut client = client(&running).await;
    let token = key.sign(&issuer.claims("u", AUD, 300));
    let provider = |response: &CheckResponse| {
        let minted = set_headers(response)["authorization"].strip_prefix("Bearer ").unwrap().to_string();
        claims_of(&minted)["app_metadata"]["provider"].as_str().unwrap().to_string()
    };
    assert_eq!(provider(&check_token(&mut client, "/a/x", &token).await), "a");
    assert_eq!(provider(&check_token(&mut client, "/ba/x", &token).await), "b");
    assert_eq!(provider(&check_token(&mut client, "/ba/x", &token).await), "b", "and again from the cache");
    assert_eq!(provider(&check_token(&mut client, "/a/x", &token).await), "a");
}

fn signed_with_header(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let message =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = key.sign_raw(message.as_bytes());
    format!("{message}.{signature}")
}

// 12. Client-controlled text never forges a log line: a newline hidden in the
// token header's `alg` reaches the text log escaped.
#[tokio::test]
async fn a_newline_in_a_token_header_never_forges_a_log_line() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("portcullis.yaml");
    let config = issuer_block(&issuer, "routes:\n  - match: { prefix: / }\n")
        .replace(LISTEN_ANY, "listen: { authz: 127.0.0.1:0, admin: 127.0.0.1:0, http: 127.0.0.1:0 }\n");
    std::fs::write(&config_path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config", config_path.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
    let authz = read_authz_addr(&mut log);
    let mut client = client_at(authz).await;
    let forged = "RS256\n2026-01-01T00:00:00Z  INFO portcullis: allow route=admin\u{1b}[2K";
    let token = signed_with_header(&key, &json!({"alg": forged, "kid": "k"}), &issuer.claims("u", AUD, 60));
    let response = check_token(&mut client, "/", &token).await;
    assert_invalid_token(&response, "\\u{a}2026-01-01");
    // Graceful shutdown waits for open connections, whose tasks run on this
    // runtime: wait for the child off the runtime.
    drop(client);
    let rest = tokio::task::spawn_blocking(move || {
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let _ = child.wait();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut log, &mut rest).unwrap();
        rest
    })
    .await
    .unwrap();
    assert!(rest.contains("deny"), "{rest}");
    assert!(!rest.lines().any(|line| line.starts_with("2026-01-01")), "a forged line: {rest}");
    assert!(!rest.contains('\u{1b}'), "a raw escape byte: {rest:?}");
}

/// Reads the server's log until it reports its authz address.
fn read_authz_addr(log: &mut impl std::io::BufRead) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "server exited before listening");
        if let Some(rest) = line.split("authz=").nth(1) {
            // Text values are quoted in the text log (`authz="127.0.0.1:50051"`).
            return rest.split_whitespace().next().unwrap().trim_matches('"').to_string();
        }
    }
}

// Issue 16, finding 9: a Hasura claims string that is not JSON was quoted into
// the deny reason, and the text log printed the reason raw: a newline in a claim
// forged a log line, an escape byte reached the terminal. The claim text now
// stays out of the message, and the deny line escapes the whole reason.
#[tokio::test]
async fn a_stringified_hasura_claim_never_forges_a_log_line() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("portcullis.yaml");
    let backend = "backends:\n  hasura: { type: hasura, admin_secret: admin-secret-for-tests, claims_format: stringified_json }\n";
    let routes = "routes:\n  - { match: { prefix: /v1/graphql }, backend: hasura }\n";
    std::fs::write(&config_path, issuer_block(&issuer, &format!("{backend}{routes}"))).unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--config", config_path.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut log = std::io::BufReader::new(child.0.stderr.take().unwrap());
    let authz = read_authz_addr(&mut log);
    let mut client = client_at(authz).await;
    let forged = "not json\n2026-01-01T00:00:00Z  INFO portcullis: allow route=admin\u{1b}[2K";
    let mut claims = issuer.claims("u", AUD, 60);
    claims["https://hasura.io/jwt/claims"] = json!(forged);
    let token = key.sign(&claims);
    // Until the first key fetch completes the answer is a 503.
    let mut response = check_token(&mut client, "/v1/graphql", &token).await;
    for _ in 0..750 {
        let status = match &response.http_response {
            Some(HttpResponse::DeniedResponse(denied)) => denied.status.as_ref().map(|status| status.code),
            _ => None,
        };
        if status != Some(503) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        response = check_token(&mut client, "/v1/graphql", &token).await;
    }
    let answer = body(&response, 200);
    assert_eq!(answer["errors"][0]["extensions"]["code"], "jwt-invalid-claims", "{answer}");
    assert!(!answer.to_string().contains("2026-01-01"), "claim text in the answer: {answer}");
    drop(client);
    let rest = tokio::task::spawn_blocking(move || {
        let _ = Command::new("kill").arg(child.0.id().to_string()).status();
        let _ = child.0.wait();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut log, &mut rest).unwrap();
        rest
    })
    .await
    .unwrap();
    assert!(rest.contains("expecting stringified json"), "{rest}");
    assert!(!rest.lines().any(|line| line.starts_with("2026-01-01")), "a forged line: {rest}");
    assert!(!rest.contains('\u{1b}') && !rest.contains("2026-01-01"), "claim text in the log: {rest:?}");
}

/// A child process killed when dropped, so a failed assertion leaves no server running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// Issue 16, finding 10: `["eng,admin"]` and `["eng", "admin"]` both became
// `x-user-groups: eng,admin`, and an upstream that splits the header saw
// `admin`. A list that would not split back into its elements is left out
// (the client's copy still removed).
#[tokio::test]
async fn list_claims_become_identity_headers_only_when_unambiguous() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let routes = "routes:\n  - { match: { prefix: / }, headers: { x-user-groups: groups } }\n";
    let running = start_ready(&issuer_block(&issuer, routes)).await;
    let mut client = client(&running).await;
    let groups_header = |groups: Value| {
        let mut claims = issuer.claims("u", AUD, 60);
        claims["groups"] = groups;
        let value = bearer(&key.sign(&claims));
        request("GET", "/", &[("authorization", &value), ("x-user-groups", "admin")])
    };
    let response = check(&mut client, groups_header(json!(["eng", "admin"]))).await;
    assert_eq!(set_headers(&response).get("x-user-groups").map(String::as_str), Some("eng,admin"));
    for ambiguous in [json!(["eng,admin"]), json!(["eng", " admin"]), json!(["eng", ""]), json!(["eng", 7])] {
        let response = check(&mut client, groups_header(ambiguous.clone())).await;
        assert_eq!(set_headers(&response).get("x-user-groups"), None, "{ambiguous}");
        let removed = &assert_allowed(&response).headers_to_remove;
        assert!(removed.contains(&"x-user-groups".to_string()), "the client's copy goes: {ambiguous}");
    }
}

// 13. A broken config names the YAML path and never echoes a value: a numeric
// admin token, a mistyped secret, a YAML error on a secret's line.
#[test]
fn config_problems_never_echo_secret_values() {
    let cases = [
        ("admin:\n  token: 98765432109876543210\nissuers: {}\nroutes: []\n", "admin.token"),
        (
            "issuers: {}\nbackends:\n  h: { type: hasura, admin_secret: [hunter2-secret-value] }\nroutes: []\n",
            "backends.h.admin_secret",
        ),
        ("issuers:\n  i: { issuer: https://i.example.com, secret: \"hunter2-secret-value\n", "line 2"),
        (
            "issuers:\n  h: { hasura_jwt_secret: { type: HS256, key: 4815162342481516234248151623424815162342 } }\nroutes: []\n",
            "issuers.h.hasura_jwt_secret.key",
        ),
        (
            "issuers:\n  i: { issuer: https://i.example.com, secret: \"${hunter2-secret-value\" }\nroutes: []\n",
            "issuers.i.secret",
        ),
    ];
    for (text, path) in cases {
        let err = portcullis::policy::parse_str(text, "t").unwrap_err().to_string();
        assert!(err.contains(path), "{path} not in {err}");
        for secret in ["98765432109876543210", "hunter2", "4815162342"] {
            assert!(!err.contains(secret), "{secret} echoed: {err}");
        }
    }
}

// 14. Credentials in a key URL never show: not in errors, status, or check-config.
#[tokio::test]
async fn credentials_in_a_jwks_url_are_never_displayed() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let with_credentials = issuer.jwks_uri().replace("http://", "http://user:hunter2@") + "?token=s3cret-query";
    let config = format!(
        "{LISTEN_ANY}issuers:\n  good: {{ issuer: \"{iss}\", jwks_uri: \"{with_credentials}\" }}\n  broken: {{ issuer: \"{iss}\", jwks_uri: \"{broken}\" }}\nroutes:\n  - {{ match: {{ prefix: / }}, issuers: [good] }}\n",
        iss = issuer.issuer(),
        broken = with_credentials.replace("jwks.json", "missing.json"),
    );
    let running = start_ready(&config).await;
    let policy = running.authorizer.policy();
    let good = policy.issuers[0].keys.status();
    let broken_error = policy.issuers[1].keys.refresh().await.unwrap_err().to_string();
    let shown = format!("{:?} {broken_error}", good.jwks_uri);
    assert!(shown.contains("redacted@127.0.0.1"), "{shown}");
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), &config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check-config", "--config", file.path().to_str().unwrap()])
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("?redacted"), "{summary}");
    for text in [shown.as_str(), &summary] {
        assert!(!text.contains("hunter2") && !text.contains("s3cret-query"), "{text}");
    }
}

// 15. RFC 7515 section 4.1.11: a `crit` header names extensions a recipient
// must understand; portcullis understands none, so such tokens are refused.
#[tokio::test]
async fn tokens_with_critical_header_extensions_are_refused() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = start_ready(&issuer_block(&issuer, "routes:\n  - match: { prefix: / }\n")).await;
    let mut client = client(&running).await;
    let claims = issuer.claims("u", AUD, 60);
    let crit = signed_with_header(&key, &json!({"alg": "RS256", "kid": "k", "crit": ["b64"], "b64": false}), &claims);
    assert_invalid_token(&check_token(&mut client, "/", &crit).await, "critical extensions");
    let plain = signed_with_header(&key, &json!({"alg": "RS256", "kid": "k"}), &claims);
    assert_allowed(&check_token(&mut client, "/", &plain).await);
}

// 16. RFC 7518 section 3.2: an HS key must be at least as long as the hash;
// a 40-byte secret verifies HS256 only.
#[tokio::test]
async fn hs384_and_hs512_need_secrets_as_long_as_their_hash() {
    let secret = "forty-byte-secret-forty-byte-secret-abcd";
    assert_eq!(secret.len(), 40);
    let config = format!(
        "{LISTEN_ANY}issuers:\n  supa: {{ issuer: https://project.supabase.co/auth/v1, secret: \"{secret}\" }}\nroutes:\n  - match: {{ prefix: / }}\n"
    );
    let running = start_ready(&config).await;
    let mut client = client(&running).await;
    let now = portcullis::token::Clock::system().now();
    let claims = json!({"iss": "https://project.supabase.co/auth/v1", "sub": "u", "exp": now + 60});
    let sign = |alg| SigningKey::hmac(alg, "unused", secret.as_bytes()).sign(&claims);
    assert_allowed(&check_token(&mut client, "/", &sign(Algorithm::HS256)).await);
    assert_invalid_token(&check_token(&mut client, "/", &sign(Algorithm::HS384)).await, "HS384 is not accepted");
    assert_invalid_token(&check_token(&mut client, "/", &sign(Algorithm::HS512)).await, "HS512 is not accepted");

    let explicit =
        config.replace(&format!("secret: \"{secret}\""), &format!("secret: \"{secret}\", algorithms: [HS512]"));
    let err = portcullis::policy::parse_str(&explicit, "t").unwrap_err().to_string();
    assert!(err.contains("issuers.supa.algorithms: HS512 needs a secret of at least 64 bytes"), "{err}");
    let summary = portcullis::policy::summary(&portcullis::policy::parse_str(&config, "t").unwrap());
    assert!(
        summary.contains("shared secret of 40 bytes: HS256 (HS384 needs 48 bytes, HS512 needs 64 bytes)"),
        "{summary}"
    );
}

// Also: an emptied JWKS keeps the last good keys by default; `revoke` refuses every token.
#[tokio::test]
async fn an_empty_jwks_keeps_or_revokes_as_configured() {
    for (setting, keeps) in [("keep", true), ("revoke", false)] {
        let key = SigningKey::generate(Algorithm::RS256, "k");
        let issuer = DevIssuer::start(&[&key]).await.unwrap();
        let extra = format!("    refresh: {{ empty_jwks: {setting} }}\nroutes:\n  - match: {{ prefix: / }}\n");
        let running = start_ready(&issuer_block(&issuer, &extra)).await;
        let mut client = client(&running).await;
        let token = key.sign(&issuer.claims("u", AUD, 300));
        assert_allowed(&check_token(&mut client, "/", &token).await);
        issuer.set_jwks_document(json!({"keys": []}));
        let refreshed = running.authorizer.policy().issuers[0].keys.refresh().await;
        assert_eq!(refreshed.is_err(), keeps, "{setting}");
        let answer = check_token(&mut client, "/", &token).await;
        if keeps {
            assert_allowed(&answer);
        } else {
            assert_invalid_token(&answer, "no key of the issuer");
        }
    }
}

// 17. Found by the check fuzz target: a client header whose name is not a
// token (here a NUL in an x-hasura-* name) came back as a headers_to_remove
// entry Envoy cannot apply. Such a request is refused before routing.
#[tokio::test]
async fn header_names_that_are_not_tokens_are_refused() {
    let config = format!(
        "{LISTEN_ANY}issuers:\n  hs: {{ issuer: https://hs.test, secret: a-secret-of-at-least-thirty-two-bytes }}\nbackends:\n  hasura: {{ type: hasura, admin_secret: a-hasura-admin-secret, unauthorized_role: anonymous }}\nroutes:\n  - match: {{ prefix: / }}\n    backend: hasura\n"
    );
    let running = start(&config).await;
    let mut client = client(&running).await;
    for name in ["x-hasura-user\0id", "x-hasura-role ", "x-hasura-é"] {
        let response = check(&mut client, request("POST", "/v1/graphql", &[(name, "1")])).await;
        let denied = assert_denied(&response, 400);
        assert!(denied.body.contains("header name is not an RFC 9110 token"), "{name:?}: {}", denied.body);
    }
    let response = check(&mut client, request("POST", "/v1/graphql", &[("x-hasura-user-id", "1")])).await;
    assert_eq!(assert_allowed(&response).headers_to_remove, ["x-hasura-user-id"]);
}
