//! JWKS lifecycle against a real loopback issuer: discovery, caching, rotation,
//! the unknown-kid rate limit. Outages and other IdP faults: tests/idp_faults.rs.

mod common;

use std::sync::Arc;

use common::*;
use jsonwebtoken::Algorithm;

const AUD: &str = "api";

/// One issuer with a short unknown-kid interval so rotation is observable quickly.
fn config_with_interval(issuer: &DevIssuer, interval_seconds: u64) -> String {
    format!(
        "{LISTEN_ANY}issuers:\n  idp:\n    issuer: {}\n    jwks_uri: {}\n    audiences: [{AUD}]\n    refresh: {{ unknown_kid_interval_seconds: {interval_seconds} }}\nroutes:\n  - match: {{ prefix: / }}\n",
        issuer.issuer(),
        issuer.jwks_uri()
    )
}

#[tokio::test]
async fn discovery_finds_the_jwks_when_no_uri_is_given() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let config =
        format!("{LISTEN_ANY}issuers:\n  idp:\n    issuer: {}\nroutes:\n  - match: {{ prefix: / }}\n", issuer.issuer());
    let running = start_ready(&config).await;
    assert!(issuer.discovery_fetches() >= 1);
    let mut client = client(&running).await;
    assert_allowed(&check_token(&mut client, "/", &key.sign(&issuer.claims("u", "x", 60))).await);
}

#[tokio::test]
async fn jwks_is_fetched_once_for_many_checks() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = start_ready(&config_for(&issuer, AUD)).await;
    let mut client = client(&running).await;
    for user in 0..50 {
        let token = key.sign(&issuer.claims(&format!("user-{user}"), AUD, 60));
        for _ in 0..4 {
            assert_allowed(&check_token(&mut client, "/", &token).await);
        }
    }
    assert_eq!(issuer.jwks_fetches(), 1, "200 checks, one JWKS download");
    assert_eq!(running.authorizer.policy().cache.entry_count(), 50);
}

#[tokio::test]
async fn rotation_is_picked_up_and_removed_keys_stop_verifying_cached_tokens() {
    let old = SigningKey::generate(Algorithm::RS256, "old");
    let new = SigningKey::generate(Algorithm::ES256, "new");
    let issuer = DevIssuer::start(&[&old]).await.unwrap();
    let clock = clock_now();
    let running = start_with_clock(&config_with_interval(&issuer, 1), clock.clone()).await;
    wait_until("server ready", || running.readiness.is_ready()).await;
    let mut client = client(&running).await;
    let old_token = old.sign(&issuer.claims("u", AUD, 300));
    assert_allowed(&check_token(&mut client, "/", &old_token).await); // now cached

    issuer.set_keys(&[&new]);
    clock.advance(2); // past the unknown-kid interval
    let new_token = new.sign(&issuer.claims("u", AUD, 300));
    assert_allowed(&check_token(&mut client, "/", &new_token).await);
    assert_eq!(issuer.jwks_fetches(), 2, "one refetch for the new kid");

    // The old key left the JWKS: its cached token must not survive.
    assert_invalid_token(&check_token(&mut client, "/", &old_token).await, "no key with kid \"old\"");
}

#[tokio::test]
async fn a_flood_of_random_kids_causes_a_bounded_number_of_fetches() {
    let key = SigningKey::generate(Algorithm::RS256, "real");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let clock = clock_now();
    let running = start_with_clock(&config_with_interval(&issuer, 2), clock.clone()).await;
    wait_until("server ready", || running.readiness.is_ready()).await;
    clock.advance(3); // past the unknown-kid interval
    let before = issuer.jwks_fetches();
    let client = client(&running).await;
    let mut tasks = Vec::new();
    for attempt in 0..200 {
        let mut client = client.clone();
        let token =
            SigningKey::generate(Algorithm::ES256, &format!("random-{attempt}")).sign(&issuer.claims("u", AUD, 60));
        tasks.push(tokio::spawn(async move { check_token(&mut client, "/", &token).await }));
    }
    for task in tasks {
        assert_invalid_token(&task.await.unwrap(), "no key with kid");
    }
    let refetches = issuer.jwks_fetches() - before;
    assert!((1..=2).contains(&refetches), "200 unknown kids caused {refetches} refetches");
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_keys() {
    let key = SigningKey::generate(Algorithm::EdDSA, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = start_ready(&config_for(&issuer, AUD)).await;
    let keys = Arc::clone(&running.authorizer.policy().issuer("idp").unwrap().keys);
    issuer.set_up(false);
    assert!(keys.refresh().await.is_err());
    issuer.set_jwks_document(serde_json::json!({"keys": "not a list"}));
    issuer.set_up(true);
    assert!(keys.refresh().await.is_err(), "a malformed JWKS is a failed refresh");
    let status = keys.status();
    assert_eq!(status.key_ids, vec!["k1".to_string()]);
    assert!(status.last_error.unwrap().contains("keys"));
    let mut client = client(&running).await;
    assert_allowed(&check_token(&mut client, "/", &key.sign(&issuer.claims("u", AUD, 60))).await);
    assert!(running.readiness.is_ready());
}

#[tokio::test]
async fn cache_control_paces_background_refresh() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    issuer.set_cache_control(Some("public, max-age=1"));
    // min_seconds 1 lets the IdP's 1 s max-age through the clamp.
    let config = format!(
        "{LISTEN_ANY}issuers:\n  idp:\n    issuer: {}\n    jwks_uri: {}\n    refresh: {{ min_seconds: 1 }}\nroutes:\n  - match: {{ prefix: / }}\n",
        issuer.issuer(),
        issuer.jwks_uri()
    );
    let _running = start_ready(&config).await;
    wait_until("a background refresh after max-age", || issuer.jwks_fetches() >= 3).await;
}

#[tokio::test]
async fn a_replaced_kidless_key_does_not_keep_its_cached_tokens_alive() {
    let a = SigningKey::generate(Algorithm::RS256, "unused-a");
    let b = SigningKey::generate(Algorithm::RS256, "unused-b");
    let without_kid = |key: &SigningKey| {
        let mut jwk = serde_json::to_value(&key.jwk).unwrap();
        jwk.as_object_mut().unwrap().remove("kid");
        serde_json::json!({ "keys": [jwk] })
    };
    let issuer = DevIssuer::start(&[]).await.unwrap();
    issuer.set_jwks_document(without_kid(&a));
    let running = start_ready(&config_for(&issuer, AUD)).await;
    let mut client = client(&running).await;
    let mut no_kid = jsonwebtoken::Header::new(Algorithm::RS256);
    no_kid.kid = None;
    let token = a.sign_with_header(&no_kid, &issuer.claims("u", AUD, 300));
    assert_allowed(&check_token(&mut client, "/", &token).await); // cached now

    // Same position in the JWKS, same (absent) kid, different key.
    issuer.set_jwks_document(without_kid(&b));
    let keys = Arc::clone(&running.authorizer.policy().issuer("idp").unwrap().keys);
    keys.refresh().await.unwrap();
    assert_invalid_token(&check_token(&mut client, "/", &token).await, "signature is invalid");
}
