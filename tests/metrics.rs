//! `GET /metrics` after real traffic: every metric family of the documented
//! table, with its labels and values, read back by Python prometheus-client's
//! parsers (Prometheus text 0.0.4, and OpenMetrics when the scraper asks).

mod common;

use std::collections::BTreeMap;
use std::io::Write;

use common::*;
use jsonwebtoken::Algorithm;
use portcullis::policy::Runtime;
use portcullis::proto::admin::v1::admin_client::AdminClient;
use portcullis::proto::admin::v1::{GetStatusRequest, RefreshKeysRequest, ReloadPolicyRequest};
use portcullis::server::{Running, ServeOptions};
use serde_json::Value;

const SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters";
const ADMIN_TOKEN: &str = "admin-token-0123456789";

const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn config(issuer: &DevIssuer) -> String {
    format!(
        "{LISTEN_ANY}admin: {{ token: {ADMIN_TOKEN} }}\ncache: {{ tokens: 1 }}\nissuers:\n  idp: {{ issuer: \"{iss}\", jwks_uri: \"{jwks}\",\n         refresh: {{ unknown_kid_wait_ms: 1000 }} }}\n\
         backends:\n  db:\n    type: supabase\n    apikey: anon-key\n    mode: remint\n    signing_key: {SECRET}\n\
         webhooks:\n  - {{ name: hooks, match: {{ path: /webhooks/hooks }}, kind: standard_webhooks, secrets: [\"{WEBHOOK_SECRET}\"] }}\n\
         revocation:\n  on_event: [{{ webhook: hooks, type: user.deleted, revoke_subject: $.data.id, issuer: idp }}]\n\
         routes:\n  - name: api\n    match: {{ prefix: /api/ }}\n  - name: rest\n    match: {{ prefix: /rest/v1/ }}\n    backend: db\n\
         \x20 - name: rollout\n    match: {{ prefix: /rollout/ }}\n    mode: dry_run\n    require: {{ permissions: [orders:admin] }}\n",
        iss = issuer.issuer(),
        jwks = issuer.jwks_uri()
    )
}

/// Starts from a config file (so `ReloadPolicy` has one to re-read) on a fixed
/// clock: the unknown-kid rate limit then depends on no wall time.
async fn start_from(path: &std::path::Path, clock: &Clock) -> Running {
    let runtime = Runtime { clock: clock.clone(), ..Runtime::default() };
    let policy = portcullis::policy::load_file_with(path, &runtime, None).unwrap_or_else(|err| panic!("{err}"));
    let options = ServeOptions { config_path: Some(path.to_path_buf()), ..Default::default() };
    let running = portcullis::server::start(policy, options, std::future::pending()).await.expect("server starts");
    wait_until("server ready", || running.readiness.is_ready()).await;
    running
}

fn admin_request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {ADMIN_TOKEN}").parse().unwrap());
    request
}

/// Checks that exercise every Check, cache, key and mint metric.
async fn traffic(running: &Running, clock: &Clock, issuer: &DevIssuer, key: &SigningKey) {
    let mut client = client(running).await;
    let alice = key.sign(&issuer.claims("alice", "x", 600));
    assert_allowed(&check_token(&mut client, "/api/a", &alice).await); // miss, verified
    assert_allowed(&check_token(&mut client, "/api/a", &alice).await); // hit
    let bob = key.sign(&issuer.claims("bob", "x", 600));
    assert_allowed(&check_token(&mut client, "/api/a", &bob).await); // miss; the cache holds one token
    assert_denied(&check_token(&mut client, "/api/a", &key.sign(&issuer.claims("u", "x", -3600))).await, 401);
    assert_denied(&check(&mut client, request("GET", "/api/a", &[])).await, 401);
    assert_denied(&check(&mut client, request("GET", "/elsewhere", &[])).await, 403);
    // Unknown kids: once the rate limit has passed since the first fetch, the
    // first refetches; the second (same clock second) is rate-limited.
    clock.advance(60);
    let stranger = SigningKey::generate(Algorithm::RS256, "not-published");
    assert_denied(&check_token(&mut client, "/api/a", &stranger.sign(&issuer.claims("u", "x", 60))).await, 401);
    let other = SigningKey::generate(Algorithm::RS256, "also-not-published");
    assert_denied(&check_token(&mut client, "/api/a", &other.sign(&issuer.claims("u", "x", 60))).await, 401);
    // Supabase: minted once, then reused for the same token.
    assert_allowed(&check_token(&mut client, "/rest/v1/items", &alice).await);
    assert_allowed(&check_token(&mut client, "/rest/v1/items", &alice).await);
    assert_allowed(&check_token(&mut client, "/rollout/x", &alice).await); // dry run: would deny
    // A webhook delivery (consumed: 204) and its replay (200, a duplicate).
    let delivery = standard_webhook(
        "/webhooks/hooks",
        WEBHOOK_SECRET,
        "msg_1",
        clock.now(),
        "{\"type\":\"user.deleted\",\"data\":{\"id\":\"bob\"}}",
    );
    assert_denied(&check(&mut client, delivery.clone()).await, 204);
    assert_denied(&check(&mut client, delivery).await, 200);
}

/// Admin calls (with and without the token) and two reloads, one of a broken file.
async fn admin_calls(running: &Running, config_file: &std::path::Path) {
    let mut admin = AdminClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", running.admin_addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    admin.get_status(admin_request(GetStatusRequest {})).await.unwrap();
    admin.get_status(GetStatusRequest {}).await.unwrap_err(); // no token
    let unknown = admin.refresh_keys(admin_request(RefreshKeysRequest { issuer: "nobody".into() })).await;
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);
    admin.reload_policy(admin_request(ReloadPolicyRequest {})).await.unwrap();
    let good = std::fs::read_to_string(config_file).unwrap();
    std::fs::write(config_file, good.replace("routes:", "routes: 7\nbroken:")).unwrap();
    admin.reload_policy(admin_request(ReloadPolicyRequest {})).await.unwrap_err();
    std::fs::write(config_file, good).unwrap();
}

/// Metric families as Python prometheus-client parses them: name -> samples of (labels, value).
type Families = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;

fn parse_with_python(body: &str, openmetrics: bool) -> (Families, BTreeMap<String, String>) {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
text = sys.stdin.read()
parse = openmetrics_families if sys.argv[1] == "openmetrics" else text_string_to_metric_families
samples, types = {}, {}
for family in parse(text):
    types[family.name] = family.type
    for sample in family.samples:
        samples.setdefault(sample.name, []).append([sample.labels, sample.value])
print(json.dumps({"samples": samples, "types": types}))
"#;
    let python = tools::Python::with("import prometheus_client.openmetrics.parser", "prometheus-client");
    let mut child = python
        .command()
        .args(["-c", SCRIPT, if openmetrics { "openmetrics" } else { "text" }])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the parser rejects the exposition: {}", String::from_utf8_lossy(&output.stderr));
    let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let families = serde_json::from_value(parsed["samples"].clone()).unwrap();
    let types = serde_json::from_value(parsed["types"].clone()).unwrap();
    (families, types)
}

fn value(families: &Families, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    families.get(name)?.iter().find(|(have, _)| *have == wanted).map(|(_, value)| *value)
}

async fn scrape(running: &Running, accept: Option<&str>) -> (String, String) {
    let mut request = reqwest::Client::new().get(format!("http://{}/metrics", running.http_addr));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    (content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn every_documented_metric_is_exposed_and_parses_as_prometheus_text_and_openmetrics() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("portcullis.yaml");
    std::fs::write(&config_file, config(&issuer)).unwrap();
    let clock = clock_now();
    let running = start_from(&config_file, &clock).await;
    traffic(&running, &clock, &issuer, &key).await;
    let (_, before_reload) = scrape(&running, None).await;
    let cached = "portcullis_token_cache_entries 1";
    assert!(before_reload.lines().any(|line| line == cached), "{cached} in:\n{before_reload}");
    admin_calls(&running, &config_file).await;

    let (content_type, text) = scrape(&running, None).await;
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let (families, types) = parse_with_python(&text, false);
    let expect = |name: &str, labels: &[(&str, &str)], expected: f64| {
        let found = value(&families, name, labels);
        assert_eq!(found, Some(expected), "{name}{labels:?} in:\n{text}");
    };
    expect(
        "portcullis_checks_total",
        &[("route", "api"), ("decision", "allow"), ("reason", "ok"), ("face", "ext_authz_grpc")],
        3.0,
    );
    expect(
        "portcullis_checks_total",
        &[("route", "api"), ("decision", "deny"), ("reason", "expired"), ("face", "ext_authz_grpc")],
        1.0,
    );
    expect(
        "portcullis_checks_total",
        &[("route", "api"), ("decision", "deny"), ("reason", "missing_token"), ("face", "ext_authz_grpc")],
        1.0,
    );
    expect(
        "portcullis_checks_total",
        &[("route", "api"), ("decision", "deny"), ("reason", "unknown_kid"), ("face", "ext_authz_grpc")],
        2.0,
    );
    expect(
        "portcullis_checks_total",
        &[("route", "-"), ("decision", "deny"), ("reason", "no_route"), ("face", "ext_authz_grpc")],
        1.0,
    );
    expect(
        "portcullis_checks_total",
        &[("route", "rest"), ("decision", "allow"), ("reason", "ok"), ("face", "ext_authz_grpc")],
        2.0,
    );
    expect("portcullis_check_duration_seconds_count", &[("face", "ext_authz_grpc")], 13.0);
    expect("portcullis_check_duration_seconds_bucket", &[("face", "ext_authz_grpc"), ("le", "+Inf")], 13.0);
    let lowest = families["portcullis_check_duration_seconds_bucket"].iter().map(|(labels, _)| &labels["le"]);
    let bounds: Vec<f64> = lowest.filter_map(|le| le.parse().ok()).filter(|bound: &f64| bound.is_finite()).collect();
    assert!(bounds[0] <= 5e-6 && *bounds.last().unwrap() >= 0.1, "buckets 5 µs .. 100 ms: {bounds:?}");
    expect("portcullis_dry_run_denies_total", &[("route", "rollout"), ("requirement", "permissions")], 1.0);
    // Nine checks looked a token up; which of alice and bob the one-entry cache keeps is the cache's call.
    let hits = value(&families, "portcullis_token_cache_hits_total", &[]).unwrap();
    let misses = value(&families, "portcullis_token_cache_misses_total", &[]).unwrap();
    assert!(hits >= 1.0 && hits + misses == 9.0, "hits {hits}, misses {misses}");
    assert!(value(&families, "portcullis_token_cache_evictions_total", &[]).unwrap() >= 1.0, "capacity 1, two tokens");
    // The reloaded policy starts with its own (empty) cache; the counters carry on.
    assert_eq!(value(&families, "portcullis_token_cache_entries", &[]), Some(0.0));
    expect("portcullis_jwks_fetches_total", &[("issuer", "idp"), ("result", "ok")], 2.0);
    expect("portcullis_jwks_fetches_total", &[("issuer", "idp"), ("result", "rate_limited")], 1.0);
    expect("portcullis_unknown_kid_refetches_total", &[("issuer", "idp"), ("outcome", "performed")], 1.0);
    expect("portcullis_unknown_kid_refetches_total", &[("issuer", "idp"), ("outcome", "rate_limited")], 1.0);
    expect("portcullis_supabase_minted_tokens_total", &[("backend", "db"), ("kind", "fresh")], 1.0);
    expect("portcullis_supabase_minted_tokens_total", &[("backend", "db"), ("kind", "reused")], 1.0);
    expect("portcullis_policy_reloads_total", &[("result", "ok")], 1.0);
    expect("portcullis_policy_reloads_total", &[("result", "error")], 1.0);
    expect("portcullis_policy_generation", &[], 2.0);
    expect("portcullis_admin_calls_total", &[("method", "GetStatus"), ("result", "ok")], 1.0);
    expect("portcullis_admin_calls_total", &[("method", "any"), ("result", "unauthenticated")], 1.0);
    expect("portcullis_admin_calls_total", &[("method", "RefreshKeys"), ("result", "not_found")], 1.0);
    expect("portcullis_admin_calls_total", &[("method", "ReloadPolicy"), ("result", "ok")], 1.0);
    expect("portcullis_admin_calls_total", &[("method", "ReloadPolicy"), ("result", "invalid_argument")], 1.0);
    expect("portcullis_issuer_keys", &[("issuer", "idp")], 1.0);
    let refreshed = value(&families, "portcullis_issuer_last_refresh_timestamp_seconds", &[("issuer", "idp")]).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - refreshed).abs() < 600.0, "a Unix time: {refreshed}");
    assert!(value(&families, "portcullis_issuer_key_age_seconds", &[("issuer", "idp")]).unwrap() < 600.0);
    expect("portcullis_ready", &[], 1.0);
    expect("portcullis_tracing_spans_dropped_total", &[], 0.0);
    expect("portcullis_decision_log_dropped_total", &[], 0.0);
    expect("portcullis_decision_log_queued_bytes", &[], 0.0);
    expect("portcullis_deny_log_lines_suppressed_total", &[], 0.0);
    expect("portcullis_unfinished_request_bytes", &[], 0.0);
    expect("portcullis_unfinished_requests_cut_total", &[("reason", "arrival_timeout")], 0.0);
    expect("portcullis_unfinished_requests_cut_total", &[("reason", "connection_budget")], 0.0);
    expect("portcullis_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    expect("portcullis_webhooks_total", &[("webhook", "hooks"), ("result", "verified")], 1.0);
    expect("portcullis_webhooks_total", &[("webhook", "hooks"), ("result", "duplicate")], 1.0);
    expect("portcullis_revocations_applied_total", &[("op", "revoke_subject")], 1.0);
    expect("portcullis_revocation_entries", &[], 1.0);
    expect("portcullis_revocation_staleness_seconds", &[], 0.0);
    expect("portcullis_state_errors_total", &[], 0.0);
    for (family, kind) in [
        ("portcullis_checks", "counter"),
        ("portcullis_check_duration_seconds", "histogram"),
        ("portcullis_issuer_key_age_seconds", "gauge"),
    ] {
        assert_eq!(types.get(family).map(String::as_str), Some(kind), "{family}");
    }
    let alice = key.sign(&issuer.claims("alice", "x", 600));
    for secret in [alice.as_str(), SECRET, ADMIN_TOKEN] {
        assert!(!text.contains(secret), "no token or secret in metrics");
    }

    let (content_type, openmetrics) =
        scrape(&running, Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")).await;
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"), "{content_type}");
    assert!(openmetrics.ends_with("# EOF\n"));
    let (families, _) = parse_with_python(&openmetrics, true);
    assert_eq!(
        value(
            &families,
            "portcullis_checks_total",
            &[("route", "api"), ("decision", "allow"), ("reason", "ok"), ("face", "ext_authz_grpc")]
        ),
        Some(3.0)
    );
    assert_eq!(value(&families, "portcullis_issuer_keys", &[("issuer", "idp")]), Some(1.0));
}

#[tokio::test]
async fn static_keys_report_no_key_age_and_labels_come_only_from_the_config() {
    let config = format!(
        "{LISTEN_ANY}issuers:\n  local: {{ issuer: https://local.test, secret: {SECRET} }}\nroutes:\n  - name: api\n    match: {{ prefix: / }}\n"
    );
    let running = start_ready(&config).await;
    let mut client = client(&running).await;
    for path in ["/a", "/b?x=1", "/c/../d", "/%00"] {
        check(&mut client, request("GET", path, &[("authorization", "Bearer not-a-token")])).await;
    }
    let (_, text) = scrape(&running, None).await;
    let (families, _) = parse_with_python(&text, false);
    assert_eq!(value(&families, "portcullis_issuer_keys", &[("issuer", "local")]), Some(1.0));
    assert!(!families.contains_key("portcullis_issuer_key_age_seconds"), "a shared secret does not age:\n{text}");
    let routes: std::collections::BTreeSet<&str> =
        families["portcullis_checks_total"].iter().map(|(labels, _)| labels["route"].as_str()).collect();
    assert!(routes.iter().all(|route| ["api", "-"].contains(route)), "request paths never become labels: {routes:?}");
}

/// A reload with nothing to re-read (an instance started without a file) is not a
/// refused config: `result="no_config_file"`, never the `error` that alerts page on.
#[tokio::test]
async fn a_reload_without_a_config_file_is_not_counted_as_an_error() {
    let key = SigningKey::generate(jsonwebtoken::Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = start(&config_for(&issuer, "api")).await;
    let refused = running.reloader.reload().await.unwrap_err();
    assert!(matches!(refused, portcullis::reload::ReloadError::NoConfigFile), "{refused}");
    assert_eq!(metric(&running, "portcullis_policy_reloads_total", "{result=\"no_config_file\"}"), 1.0);
    assert_eq!(metric(&running, "portcullis_policy_reloads_total", "{result=\"error\"}"), 0.0);
}
