//! Over `limits.concurrent_checks`: an immediate deny with HTTP 503 in the
//! CheckResponse (which Envoy enforces whatever `failure_mode_allow` says),
//! never a gRPC error and never a wrong decision.

mod common;

use std::time::Duration;

use common::*;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use jsonwebtoken::Algorithm;

fn config(issuer: &DevIssuer, limit: usize) -> String {
    format!(
        "{LISTEN_ANY}limits: {{ concurrent_checks: {limit} }}\nissuers:\n  idp:\n    issuer: \"{}\"\n    jwks_uri: \"{}\"\n    refresh: {{ unknown_kid_wait_ms: 1000 }}\nroutes:\n  - name: api\n    match: {{ prefix: / }}\n",
        issuer.issuer(),
        issuer.jwks_uri()
    )
}

fn is_overloaded(response: &CheckResponse) -> bool {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => {
            denied.status.as_ref().is_some_and(|status| status.code == 503)
                && denied.body.contains("too many requests in progress")
        }
        _ => false,
    }
}

#[tokio::test]
async fn over_the_limit_every_check_gets_an_immediate_503_and_under_it_decisions_resume() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let clock = clock_now();
    let running = start_with_clock(&config(&issuer, 2), clock.clone()).await;
    wait_until("server ready", || running.readiness.is_ready()).await;
    let gate = std::sync::Arc::clone(&running.authorizer.gate);
    // Two Checks held in progress: their unknown kid waits (up to 1 s) for a
    // key fetch the IdP stalls; the rate limit has passed since the first fetch.
    clock.advance(60);
    issuer.set_jwks_delay(Duration::from_secs(30));
    let stranger = SigningKey::generate(Algorithm::RS256, "stranger");
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut client = client(&running).await;
        let token = stranger.sign(&issuer.claims("u", "x", 60));
        holders.push(tokio::spawn(async move { check_token(&mut client, "/held", &token).await }));
    }
    wait_until("two checks in progress", || gate.in_flight() == 2).await;

    let mut client = client(&running).await;
    let valid = key.sign(&issuer.claims("alice", "x", 600));
    let expired = key.sign(&issuer.claims("bob", "x", -3600));
    for _ in 0..10 {
        for response in [
            check_token(&mut client, "/api", &valid).await,
            check_token(&mut client, "/api", &expired).await,
            check(&mut client, request("GET", "/api", &[])).await,
        ] {
            assert!(is_overloaded(&response), "over the limit, every answer is the overload 503: {response:?}");
        }
    }
    for holder in holders {
        assert_denied(&holder.await.unwrap(), 401);
    }
    wait_until("the held checks are answered", || gate.in_flight() == 0).await;
    assert_allowed(&check_token(&mut client, "/api", &valid).await);
    assert_denied(&check_token(&mut client, "/api", &expired).await, 401);
    let metrics = running.authorizer.metrics().render(None, Default::default()).1;
    let shed =
        "portcullis_checks_total{route=\"-\",decision=\"deny\",reason=\"overloaded\",face=\"ext_authz_grpc\"} 30";
    assert!(metrics.lines().any(|line| line == shed), "{shed} in:\n{metrics}");
}

#[tokio::test]
async fn a_burst_far_above_the_limit_gets_answers_and_no_wrong_decision() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = start_ready(&config(&issuer, 4)).await;
    let valid = key.sign(&issuer.claims("alice", "x", 600));
    let forged = SigningKey::generate(Algorithm::RS256, "k1").sign(&issuer.claims("mallory", "x", 600));
    let expired = key.sign(&issuer.claims("bob", "x", -3600));
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(client(&running).await);
    }
    let mut burst = Vec::new();
    for round in 0..100 {
        for (index, client) in clients.iter().enumerate() {
            let mut client = client.clone();
            let (token, should_allow) = match (round + index) % 3 {
                0 => (valid.clone(), true),
                1 => (forged.clone(), false),
                _ => (expired.clone(), false),
            };
            burst.push(tokio::spawn(async move {
                let response = client.check(request("GET", "/api", &[("authorization", &bearer(&token))])).await;
                (response.map(tonic::Response::into_inner), should_allow)
            }));
        }
    }
    let (mut allowed, mut denied, mut shed) = (0, 0, 0);
    for answer in burst {
        let (response, should_allow) = answer.await.unwrap();
        let response = response.expect("never a gRPC error");
        if is_overloaded(&response) {
            shed += 1;
        } else if should_allow {
            assert_allowed(&response);
            allowed += 1;
        } else {
            assert_denied(&response, 401);
            denied += 1;
        }
    }
    assert_eq!(allowed + denied + shed, 800);
    assert!(allowed + denied >= 1, "the first Checks are admitted and decided");
    assert_eq!(running.authorizer.gate.in_flight(), 0, "every ticket was returned");
}

#[test]
fn concurrent_checks_must_be_positive() {
    let err = portcullis::policy::parse_str("limits: { concurrent_checks: 0 }\nroutes: []\n", "t").unwrap_err();
    assert!(err.to_string().contains("limits.concurrent_checks: must be greater than 0"), "{err}");
}
