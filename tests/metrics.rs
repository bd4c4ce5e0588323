//! `GET /metrics` on the HTTP port: decisions by route, result and reason,
//! latency, token cache and key state, in Prometheus' text format.

mod common;

use common::*;
use jsonwebtoken::Algorithm;

#[tokio::test]
async fn metrics_count_decisions_by_reason_and_show_key_state() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let config = format!(
        "{LISTEN_ANY}issuers:\n  idp: {{ issuer: \"{}\", jwks_uri: \"{}\" }}\nroutes:\n  - name: api\n    match: {{ prefix: /api/ }}\n",
        issuer.issuer(),
        issuer.jwks_uri()
    );
    let running = start_ready(&config).await;
    let mut client = client(&running).await;
    let valid = key.sign(&issuer.claims("u", "x", 60));
    assert_allowed(&check_token(&mut client, "/api/a", &valid).await);
    assert_allowed(&check_token(&mut client, "/api/a", &valid).await);
    assert_denied(&check_token(&mut client, "/api/a", &key.sign(&issuer.claims("u", "x", -3600))).await, 401);
    assert_denied(&check(&mut client, request("GET", "/api/a", &[])).await, 401);
    assert_denied(&check(&mut client, request("GET", "/elsewhere", &[])).await, 403);

    let (status, body) = http_get(&format!("http://{}/metrics", running.http_addr)).await;
    assert_eq!(status, 200);
    for line in [
        "portcullis_checks_total{route=\"api\",result=\"allow\",reason=\"ok\"} 2",
        "portcullis_checks_total{route=\"api\",result=\"deny\",reason=\"expired\"} 1",
        "portcullis_checks_total{route=\"api\",result=\"deny\",reason=\"missing_token\"} 1",
        "portcullis_checks_total{route=\"\",result=\"deny\",reason=\"no_route\"} 1",
        "portcullis_check_duration_seconds_count 5",
        "portcullis_check_duration_seconds_bucket{le=\"+Inf\"} 5",
        "portcullis_token_cache_hits_total 1",
        "portcullis_token_cache_entries 1",
        "portcullis_issuer_keys{issuer=\"idp\"} 1",
        "portcullis_issuer_key_fetches_total{issuer=\"idp\"} 1",
        "portcullis_issuer_key_fetch_errors_total{issuer=\"idp\"} 0",
        "portcullis_ready 1",
        "portcullis_policy_generation 1",
        "# TYPE portcullis_checks_total counter",
        "# TYPE portcullis_check_duration_seconds histogram",
    ] {
        assert!(body.lines().any(|candidate| candidate == line), "missing {line:?} in:\n{body}");
    }
    assert!(!body.contains(&valid), "tokens never appear in metrics");
    assert_eq!(http_get(&format!("http://{}/healthz", running.http_addr)).await, (200, "ok\n".to_string()));
}
