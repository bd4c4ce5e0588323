//! The adversarial review's findings about CEL rules (`require.when`), each
//! through the real server with real signed tokens, and through a real Envoy
//! where a request could reach the upstream: a query parameter sent twice, the
//! per-token memo of rule outcomes outside the cache's byte bound, an
//! expression deep enough to overflow a worker's stack, and problems quoting an
//! interpolated secret.

mod common;

use common::envoy::{Envoy, EnvoyOptions, Upstream, raw_request};
use common::*;
use jsonwebtoken::Algorithm;
use portcullis::rules::cel::MAX_DEPTH;
use portcullis::server::Running;
use serde_json::{Value, json};

const AUD: &str = "api";

struct Idp {
    key: SigningKey,
    issuer: DevIssuer,
}

impl Idp {
    async fn start() -> Idp {
        let key = SigningKey::generate(Algorithm::ES256, "k1");
        let issuer = DevIssuer::start(&[&key]).await.unwrap();
        Idp { key, issuer }
    }

    /// The config with `routes` (YAML lines under `routes:`), and `extra` top-level YAML.
    fn config(&self, extra: &str, routes: &str) -> String {
        format!(
            "{LISTEN_ANY}{extra}issuers:\n  idp: {{ issuer: \"{}\", jwks_uri: \"{}\", audiences: [{AUD}] }}\nroutes:\n{routes}",
            self.issuer.issuer(),
            self.issuer.jwks_uri()
        )
    }

    /// A token of organisation `org` for subject `sub`.
    fn token(&self, sub: &str, org: &str) -> String {
        let mut claims = self.issuer.claims(sub, AUD, 300);
        claims["org"] = json!(org);
        self.key.sign(&claims)
    }
}

fn deny_body(response: &envoy_types::pb::envoy::service::auth::v3::CheckResponse, status: i32) -> Value {
    serde_json::from_str(&assert_denied(response, status).body).expect("JSON deny body")
}

/// One Prometheus sample without labels, e.g. `portcullis_token_cache_bytes`.
async fn metric(running: &Running, name: &str) -> u64 {
    let (_, text) = http_get(&format!("http://{}/metrics", running.http_addr)).await;
    let line = text.lines().find(|line| line.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{text}"));
    line.rsplit(' ').next().and_then(|value| value.parse::<f64>().ok()).expect("a number") as u64
}

/// Resident memory of this process (the server runs in it), in bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).expect("kB") * 1024
}

const TENANT_ROUTES: &str = r#"  - name: tenant
    match: { prefix: /t/ }
    require: { when: 'request.query.tenant == claims.org' }
  - name: rollout
    match: { prefix: /dry/ }
    mode: dry_run
    require: { when: 'request.query.tenant == claims.org' }
  - name: no-query
    match: { prefix: /n/ }
    require: { when: 'claims.org == "acme"' }
"#;

// Finding 1: Django, PHP and Rails read the last `tenant`, the rule read the first.
#[tokio::test]
async fn a_repeated_query_parameter_is_refused_where_a_rule_reads_the_query() {
    let idp = Idp::start().await;
    let running = start_ready(&idp.config("", TENANT_ROUTES)).await;
    let mut client = client(&running).await;
    let token = bearer(&idp.token("u1", "acme"));
    let get = |path: &str| request("GET", path, &[("authorization", &token)]);

    assert_allowed(&check(&mut client, get("/t/x?tenant=acme")).await);
    assert_eq!(deny_body(&check(&mut client, get("/t/x?tenant=globex")).await, 403)["error"], "insufficient_scope");
    for ambiguous in [
        "/t/x?tenant=acme&tenant=globex",
        "/t/x?ten%61nt=acme&tenant=globex",
        "/t/x?tenant=acme&tenant[]=globex",
        "/t/x?tenant=acme;tenant=globex",
        "/t/x?tenant=acme&=globex",
        "/t/x?tenant=acme&x=%zz",
    ] {
        let body = deny_body(&check(&mut client, get(ambiguous)).await, 400);
        assert_eq!(body["error"], "invalid_request", "{ambiguous}: {body}");
        assert!(body["error_description"].as_str().unwrap().contains("query string"), "{body}");
    }
    // Routes whose rule does not read the query do not care.
    assert_allowed(&check(&mut client, get("/n/x?tenant=acme&tenant=globex")).await);
    // A dry run enforces nothing: allowed, and counted as a rule that did not hold.
    assert_allowed(&check(&mut client, get("/dry/x?tenant=acme&tenant=globex")).await);
    let (_, metrics) = http_get(&format!("http://{}/metrics", running.http_addr)).await;
    assert!(metrics.contains("portcullis_dry_run_denies_total{route=\"rollout\",requirement=\"when\"} 1"), "{metrics}");
}

#[tokio::test]
async fn repeated_query_parameters_cannot_dodge_a_rule_through_envoy() {
    let idp = Idp::start().await;
    let portcullis = start_ready(&idp.config("", TENANT_ROUTES)).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start(portcullis.authz_addr, &upstream, &EnvoyOptions::default()).await;
    let token = bearer(&idp.token("u1", "acme"));
    let send = |target: &str| raw_request("GET", target, &[("Host", "api.example.com"), ("Authorization", &token)], "");

    for ambiguous in [
        "/t/x?tenant=acme&tenant=globex",
        "/t/x?ten%61nt=acme&tenant=globex",
        "/t/x?tenant=acme&tenant%5B%5D=globex",
        "/t/x?tenant=acme;tenant=globex",
    ] {
        let reply = envoy.raw(&send(ambiguous)).await;
        assert_eq!(reply.status, 400, "{ambiguous}: {reply:?}");
        assert_eq!(reply.json()["error"], "invalid_request", "{ambiguous}");
    }
    assert_eq!(envoy.raw(&send("/t/x?tenant=globex")).await.status, 403);
    assert_eq!(upstream.count(), 0, "the upstream must receive nothing: {:?}", upstream.requests());
    let reply = envoy.raw(&send("/t/x?tenant=acme")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(upstream.last().path, "/t/x?tenant=acme");
}

// Finding 4: the memo kept every request path (16 per token) outside the
// cache's weight: 60 tokens x 16 requests of 45 KiB added 43 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_rule_outcomes_are_weighed_and_never_hold_request_paths() {
    const TOKENS: usize = 60;
    const MAX_BYTES: u64 = 1024 * 1024;
    let idp = Idp::start().await;
    // Denied requests fill the memo as well as allowed ones.
    let routes = "  - match: { prefix: / }\n    require: { when: 'request.path.startsWith(\"/allowed/\")' }\n";
    let config = idp.config(&format!("cache: {{ max_bytes: {MAX_BYTES} }}\n"), routes);
    let portcullis = start_ready(&config).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start(portcullis.authz_addr, &upstream, &EnvoyOptions::default()).await;
    let tokens: Vec<String> = (0..TOKENS).map(|n| bearer(&idp.token(&format!("user-{n}"), "acme"))).collect();
    let long_path = |n: usize| format!("/denied/{n:02}/{}", "p".repeat(45 * 1024));
    // Warm up every buffer on the way (Envoy client, gRPC, decoding) before measuring.
    for token in tokens.iter().take(2) {
        assert_eq!(envoy.get(&long_path(99), &[("authorization", token)]).await.status, 403);
    }
    let before = resident_bytes();
    for token in &tokens {
        for n in 0..16 {
            let reply = envoy.get(&long_path(n), &[("authorization", token)]).await;
            assert_eq!(reply.status, 403, "{reply:?}");
        }
    }
    let grown = resident_bytes().saturating_sub(before);
    assert_eq!(upstream.count(), 0);

    let entries = metric(&portcullis, "portcullis_token_cache_entries").await;
    let weighed = metric(&portcullis, "portcullis_token_cache_bytes").await;
    assert_eq!(entries, TOKENS as u64, "every token stays cached within max_bytes");
    assert!(weighed <= MAX_BYTES, "{weighed}");
    let memo = portcullis::token::MEMO_BYTES as u64;
    assert!(weighed >= entries * memo, "each token's weight counts its full memo ({memo} bytes): {weighed}");
    // 960 paths of 45 KiB are 43 MiB: none of them may stay behind.
    assert!(grown < 12 * 1024 * 1024, "resident memory grew {grown} bytes (cache bound {MAX_BYTES})");
}

/// `1+1+...+1>0`: a tree `terms` + 1 levels deep, in 2 characters per term.
fn sum(terms: usize) -> String {
    format!("{}>0", vec!["1"; terms].join("+"))
}

// Finding 7: 1300 terms passed validation and a live reload, then the first
// matching Check overflowed a worker's stack and aborted the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expression_too_deep_to_evaluate_is_refused_at_reload_and_the_old_policy_serves() {
    let idp = Idp::start().await;
    let rule = |when: &str| idp.config("", &format!("  - match: {{ prefix: / }}\n    require: {{ when: '{when}' }}\n"));
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    // The deepest expression accepted evaluates on a worker.
    std::fs::write(file.path(), rule(&sum(MAX_DEPTH - 1))).unwrap();
    let policy = portcullis::policy::load_file(file.path()).unwrap();
    let options =
        portcullis::server::ServeOptions { config_path: Some(file.path().to_path_buf()), ..Default::default() };
    let running = portcullis::server::start(policy, options, std::future::pending()).await.unwrap();
    wait_until("ready", || running.readiness.is_ready()).await;
    let mut client = client(&running).await;
    let token = bearer(&idp.token("u1", "acme"));
    let get = || request("GET", "/x", &[("authorization", &token)]);
    assert_allowed(&check(&mut client, get()).await);

    for terms in [MAX_DEPTH, 1300] {
        std::fs::write(file.path(), rule(&sum(terms))).unwrap();
        let err = running.reloader.reload().await.unwrap_err().to_string();
        assert!(err.contains(&format!("routes[0].require.when: nested deeper than {MAX_DEPTH} levels")), "{err}");
        assert_allowed(&check(&mut client, get()).await);
    }
    assert_eq!(running.authorizer.policy().generation, 1, "the old policy still serves");
}

// Finding 8: a `${file:...}` secret misplaced in a `when` was quoted back by
// the reload error (and check-config, and the log).
#[tokio::test]
async fn a_reload_error_never_quotes_an_interpolated_secret_in_a_rule() {
    let idp = Idp::start().await;
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "sk_live_f1le5ecret\n").unwrap();
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), idp.config("", "  - match: { prefix: / }\n")).unwrap();
    let policy = portcullis::policy::load_file(file.path()).unwrap();
    let options =
        portcullis::server::ServeOptions { config_path: Some(file.path().to_path_buf()), ..Default::default() };
    let running = portcullis::server::start(policy, options, std::future::pending()).await.unwrap();
    let secret_ref = format!("${{file:{}}}", secret.path().display());
    for when in [
        format!("claims.key == {secret_ref}"),
        format!("claims.key == {secret_ref}#"),
        format!("claims.key == \"{secret_ref}"),
        format!("claims.key == 1 {secret_ref}"),
    ] {
        let routes = format!("  - match: {{ prefix: / }}\n    require: {{ when: '{when}' }}\n");
        std::fs::write(file.path(), idp.config("", &routes)).unwrap();
        let err = running.reloader.reload().await.unwrap_err().to_string();
        assert!(err.contains("routes[0].require.when: "), "{err}");
        assert!(!err.contains("5ecret"), "{when}: {err}");
    }
}
