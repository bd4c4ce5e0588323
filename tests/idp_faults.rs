//! The IdP fault matrix: a real issuer on loopback misbehaves on command (down,
//! never answering, garbage, oversized, redirecting forever, an untrusted
//! certificate, odd keys, removed keys, no-cache), and each test asserts the
//! secure behaviour through the real Check API, GetStatus, health and
//! /metrics: deny by default, fail closed, answer within a bound, keep the
//! last good keys. docs/reliability.md lists the matrix.

mod common;

use std::future::Future;
use std::time::Duration;

use common::idp::Fault;
use common::*;
use jsonwebtoken::Algorithm;
use portcullis::proto::admin::v1::admin_client::AdminClient;
use portcullis::proto::admin::v1::{GetStatusRequest, GetStatusResponse, IssuerStatus, RefreshKeysRequest};
use portcullis::server::Running;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const AUD: &str = "api";
/// Tokens outlive every clock move of these tests.
const LIFETIME: i64 = 7 * 86_400;

/// Issuer `idp` at `issuer` with `refresh` settings, one route for everything.
fn config(issuer: &DevIssuer, refresh: &str) -> String {
    format!(
        "{LISTEN_ANY}issuers:\n  idp:\n    issuer: {}\n    jwks_uri: {}\n    audiences: [{AUD}]\n    refresh: {refresh}\nroutes:\n  - match: {{ prefix: / }}\n",
        issuer.issuer(),
        issuer.jwks_uri()
    )
}

fn token(key: &SigningKey, issuer: &DevIssuer, sub: &str) -> String {
    key.sign(&issuer.claims(sub, AUD, LIFETIME))
}

/// A Check that must come back whatever the IdP does. The guard is far above
/// any bound of the product: it only turns a hang into a failure.
async fn check_now(running: &Running, token: &str) -> envoy_types::pb::envoy::service::auth::v3::CheckResponse {
    bounded("a Check", async {
        let mut client = client(running).await;
        check_token(&mut client, "/", token).await
    })
    .await
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future).await.unwrap_or_else(|_| panic!("{what} waited for the IdP"))
}

/// The 503 a token of an issuer without usable keys gets, with its description.
#[track_caller]
fn assert_unavailable(response: &envoy_types::pb::envoy::service::auth::v3::CheckResponse, fragment: &str) {
    let denied = assert_denied(response, 503);
    let body: serde_json::Value = serde_json::from_str(&denied.body).expect("JSON body");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains(fragment), "expected {fragment:?} in {description:?}");
}

async fn admin(running: &Running) -> AdminClient<tonic::transport::Channel> {
    AdminClient::connect(format!("http://{}", running.admin_addr)).await.expect("admin connects")
}

async fn get_status(running: &Running) -> GetStatusResponse {
    admin(running).await.get_status(GetStatusRequest {}).await.expect("GetStatus").into_inner()
}

async fn issuer_status(running: &Running) -> IssuerStatus {
    get_status(running).await.issuers.remove(0)
}

/// RefreshKeys for `idp`, as an operator would; the answer is its status afterwards.
async fn refresh_now(running: &Running) -> IssuerStatus {
    let request = RefreshKeysRequest { issuer: "idp".into() };
    admin(running).await.refresh_keys(request).await.expect("RefreshKeys").into_inner().issuers.remove(0)
}

/// What `portcullis admin status` prints for `running`.
async fn admin_status_cli(running: &Running) -> String {
    let addr = running.admin_addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["admin", "status", "--addr", &addr])
            .env_remove("PORTCULLIS_ADMIN_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}");
    stdout
}

async fn health(running: &Running) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.authz_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest { service: "envoy.service.auth.v3.Authorization".into() };
    ServingStatus::try_from(client.check(request).await.unwrap().into_inner().status).unwrap()
}

async fn readyz(running: &Running) -> u16 {
    http_get(&format!("http://{}/readyz", running.http_addr)).await.0
}

/// `portcullis_jwks_fetches_total{issuer="idp",result=RESULT}` from /metrics.
async fn fetches(running: &Running, result: &str) -> u64 {
    let (_, text) = http_get(&format!("http://{}/metrics", running.http_addr)).await;
    let wanted = format!("result=\"{result}\"");
    text.lines()
        .filter(|line| line.starts_with("portcullis_jwks_fetches_total{"))
        .filter(|line| line.contains("issuer=\"idp\"") && line.contains(&wanted))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

// 1. Down at startup.

#[tokio::test]
async fn down_at_startup_is_not_serving_and_503_then_recovers_by_itself() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    issuer.set_up(false);
    let running = start_with_clock(&config(&issuer, "{}"), clock_now()).await;
    let token = token(&key, &issuer, "u");

    assert_eq!(health(&running).await, ServingStatus::NotServing);
    assert_eq!(readyz(&running).await, 503);
    let response = check_now(&running, &token).await;
    assert_unavailable(&response, "keys of issuer idp are not available yet");
    assert_eq!(status_code(&response), 14, "UNAVAILABLE");
    // The refresher retries on its own (backoff from about a second; the schedule is
    // unit-tested in src/keys/store.rs), each failure visible in status and metrics.
    let running = &running;
    wait_until_async("two failed retries after the first fetch", || async move {
        fetches(running, "http_error").await >= 3
    })
    .await;
    let status = get_status(running).await;
    assert!(!status.ready);
    let idp = &status.issuers[0];
    assert!(!idp.has_keys && idp.key_ids.is_empty());
    assert!(idp.last_error.contains("answered HTTP 503"), "{}", idp.last_error);

    // No Check, no operator: the next retry finds the IdP back.
    issuer.set_up(true);
    wait_until("keys after the IdP came back", || running.readiness.is_ready()).await;
    assert_eq!(health(running).await, ServingStatus::Serving);
    assert_eq!(readyz(running).await, 200);
    assert_allowed(&check_now(running, &token).await);
    let idp = issuer_status(running).await;
    assert!(idp.has_keys && idp.last_error.is_empty(), "{idp:?}");
}

#[tokio::test]
async fn an_unreachable_idp_is_503_never_an_error_or_a_hang() {
    // Nothing listens on this port once the probe listener is dropped.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "{LISTEN_ANY}issuers:\n  idp:\n    issuer: http://127.0.0.1:{port}\n    jwks_uri: http://127.0.0.1:{port}/jwks\nroutes:\n  - match: {{ prefix: / }}\n"
    );
    let running = start(&config).await;
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let claims = serde_json::json!({"iss": format!("http://127.0.0.1:{port}"), "exp": Clock::system().now() + 60});
    assert_unavailable(&check_now(&running, &key.sign(&claims)).await, "not available yet");
    assert!(!running.readiness.is_ready());
    let running = &running;
    wait_until_async("a connection error in status", || async move {
        issuer_status(running).await.last_error.contains("(connection failed)")
    })
    .await;
    assert!(fetches(running, "connection_error").await >= 1);
}

/// [`wait_until`] for conditions that need a request.
async fn wait_until_async<F: Future<Output = bool>>(what: &str, condition: impl Fn() -> F) {
    for _ in 0..750 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

// 2. Down later: stale keys.

#[tokio::test]
async fn down_later_keys_serve_until_max_stale_seconds_then_503_and_not_serving_until_a_fetch() {
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let clock = clock_now();
    let running = start_with_clock(&config(&issuer, "{ max_stale_seconds: 86400 }"), clock.clone()).await;
    wait_until("ready", || running.readiness.is_ready()).await;
    let cached = token(&key, &issuer, "cached");
    assert_allowed(&check_now(&running, &cached).await);

    issuer.set_up(false);
    // A day without a successful fetch: the keys still serve, cached and new tokens alike.
    clock.advance(86_400);
    assert_allowed(&check_now(&running, &cached).await);
    assert_allowed(&check_now(&running, &token(&key, &issuer, "new")).await);
    assert!(running.readiness.is_ready());

    // One second more: every token of the issuer is a 503, the cached one included.
    clock.advance(1);
    assert_unavailable(&check_now(&running, &cached).await, "keys of issuer idp are stale (last fetched 86401 s ago)");
    assert_unavailable(&check_now(&running, &token(&key, &issuer, "new")).await, "are stale");
    wait_until("not ready once stale", || !running.readiness.is_ready()).await;
    assert_eq!(health(&running).await, ServingStatus::NotServing);
    assert_eq!(readyz(&running).await, 503);
    let running = &running;
    // The stale Check asked for a fetch (it did not wait for it); the IdP is still down.
    wait_until_async(
        "the failed fetch in status",
        || async move { !issuer_status(running).await.last_error.is_empty() },
    )
    .await;
    let status = get_status(running).await;
    let idp = &status.issuers[0];
    assert!(!status.ready && idp.stale && idp.has_keys, "{status:?}");
    assert_eq!(idp.key_ids, ["k1"], "kept, but not trusted");
    assert!(idp.last_error.contains("HTTP 503"), "{}", idp.last_error);
    let stdout = admin_status_cli(running).await;
    assert!(stdout.contains("\n  stale: yes (past refresh.max_stale_seconds; "), "{stdout}");

    // Back up: the next fetch (here a Check's, past the refetch interval; else the
    // refresher's next retry) makes the keys fresh again.
    issuer.set_up(true);
    clock.advance(30);
    assert_unavailable(&check_now(running, &cached).await, "are stale");
    let cached = &cached;
    wait_until_async("allowed after a successful fetch", || async move {
        status_code(&check_now(running, cached).await) == 0
    })
    .await;
    wait_until("ready after a successful fetch", || running.readiness.is_ready()).await;
    let idp = issuer_status(running).await;
    assert!(!idp.stale && idp.last_error.is_empty(), "{idp:?}");
}

// 3. Slow: an IdP that never answers never holds a Check.

#[tokio::test]
async fn an_idp_that_never_answers_never_holds_a_check() {
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let clock = clock_now();
    // Fetches may take ten minutes: a Check that returns did not wait for one.
    let refresh = "{ fetch_timeout_ms: 600000, max_stale_seconds: 86400 }";
    let running = start_with_clock(&config(&issuer, refresh), clock.clone()).await;
    wait_until("ready", || running.readiness.is_ready()).await;
    let cached = token(&key, &issuer, "cached");
    assert_allowed(&check_now(&running, &cached).await);
    issuer.set_fault(Some(Fault::Hang));

    // An unknown kid: the refetch reaches the IdP and hangs; the Check answers
    // after unknown_kid_wait_ms without it.
    clock.advance(31);
    let before = issuer.jwks_requests();
    let rotated = SigningKey::generate(Algorithm::ES256, "k2");
    assert_invalid_token(&check_now(&running, &token(&rotated, &issuer, "u")).await, "no key with kid \"k2\"");
    wait_until("the refetch reached the IdP", || issuer.jwks_requests() > before).await;
    // Meanwhile every other Check goes on (joining or skipping the hung fetch).
    assert_allowed(&check_now(&running, &cached).await);
    assert_invalid_token(&check_now(&running, &token(&rotated, &issuer, "v")).await, "no key with kid");

    // Stale keys while the IdP hangs: 503 at once.
    clock.advance(86_400);
    assert_unavailable(&check_now(&running, &cached).await, "are stale");

    // No keys yet while the IdP hangs (the no-keys path): 503 at once, not ready.
    let fresh = start_with_clock(&config(&issuer, refresh), clock_now()).await;
    wait_until("the first fetch reached the IdP", || issuer.jwks_requests() > before + 1).await;
    assert_unavailable(&check_now(&fresh, &cached).await, "not available yet");
    assert!(!fresh.readiness.is_ready());
}

#[tokio::test]
async fn a_slow_idp_times_out_with_a_clear_error_and_the_old_keys_stay() {
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = start_with_clock(&config(&issuer, "{ fetch_timeout_ms: 200 }"), clock_now()).await;
    wait_until("ready", || running.readiness.is_ready()).await;
    issuer.set_fault(Some(Fault::Hang));
    let idp = refresh_now(&running).await;
    assert!(idp.last_error.contains("(timed out): no complete answer within 200 ms"), "{}", idp.last_error);
    assert_eq!(idp.key_ids, ["k1"]);
    assert_eq!(fetches(&running, "timeout").await, 1);
    assert_allowed(&check_now(&running, &token(&key, &issuer, "u")).await);
    assert!(running.readiness.is_ready());
}

// 4. Garbage, a body over 1 MiB, a redirect loop: clear error, old keys kept, right label.

/// Starts with good keys, makes the JWKS endpoint misbehave, has an operator
/// refresh, and checks what the operator and the next Check see.
async fn a_bad_answer_keeps_the_old_keys(fault: Fault, error: &str, result: &str) {
    let key = SigningKey::generate(Algorithm::EdDSA, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = start_with_clock(&config(&issuer, "{}"), clock_now()).await;
    wait_until("ready", || running.readiness.is_ready()).await;
    issuer.set_fault(Some(fault));

    let refreshed = refresh_now(&running).await;
    assert!(refreshed.last_error.contains(error), "expected {error:?} in {:?}", refreshed.last_error);
    let status = get_status(&running).await;
    let idp = &status.issuers[0];
    assert_eq!(idp.last_error, refreshed.last_error);
    assert!(status.ready && idp.has_keys && !idp.stale);
    assert_eq!(idp.key_ids, ["k1"], "the last good keys stay");
    assert_eq!(fetches(&running, result).await, 1, "one {result} fetch");
    assert_eq!(fetches(&running, "ok").await, 1, "the first fetch only");
    assert_allowed(&check_now(&running, &token(&key, &issuer, "u")).await);
}

#[tokio::test]
async fn garbage_json_keeps_the_old_keys_and_says_why() {
    let garbage = Fault::Body("<html>502 Bad Gateway</html>".into());
    a_bad_answer_keeps_the_old_keys(garbage, "the JWKS is not JSON", "parse_error").await;
    let no_keys = Fault::Body(r#"{"keys": "none"}"#.into());
    a_bad_answer_keeps_the_old_keys(no_keys, "no \"keys\" array", "parse_error").await;
}

#[tokio::test]
async fn a_body_over_one_mib_is_refused_and_the_old_keys_stay() {
    let announced = Fault::Huge { chunked: false };
    a_bad_answer_keeps_the_old_keys(announced, "sent more than 1048576 bytes", "too_large").await;
    let streamed = Fault::Huge { chunked: true };
    a_bad_answer_keeps_the_old_keys(streamed, "sent more than 1048576 bytes", "too_large").await;
}

#[tokio::test]
async fn a_redirect_loop_is_cut_after_three_hops_and_the_old_keys_stay() {
    a_bad_answer_keeps_the_old_keys(Fault::RedirectLoop, "(more than 3 redirects)", "too_many_redirects").await;
}

#[tokio::test]
async fn a_redirect_to_plain_http_elsewhere_is_refused_and_the_old_keys_stay() {
    let elsewhere = Fault::RedirectTo("http://idp.example.com/jwks".into());
    let error = "(redirected to a URL that is neither https nor loopback)";
    a_bad_answer_keeps_the_old_keys(elsewhere, error, "insecure").await;
}

// 5. Cache-Control: no-cache.

#[tokio::test]
async fn no_cache_is_clamped_to_min_seconds_and_causes_no_fetch_storm() {
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    issuer.set_cache_control(Some("no-cache, no-store"));
    // What the fetcher makes of the header, over real HTTP: the floor, not zero.
    let refresh = portcullis::config::RefreshConfig { min_seconds: 45, ..Default::default() };
    let fetched =
        portcullis::keys::Fetcher::new().fetch_keys(issuer.issuer(), Some(&issuer.jwks_uri()), &refresh).await.unwrap();
    assert_eq!(fetched.ttl, Duration::from_secs(45));

    let clock = clock_now();
    let running = start_with_clock(&config(&issuer, "{ min_seconds: 45 }"), clock.clone()).await;
    wait_until("ready", || running.readiness.is_ready()).await;
    let before = issuer.jwks_requests();
    clock.advance(31); // one unknown-kid refetch is allowed
    let client = client(&running).await;
    let mut tasks = Vec::new();
    for n in 0..100 {
        let mut client = client.clone();
        let valid = token(&key, &issuer, &format!("user-{}", n % 10));
        let unknown = token(&SigningKey::generate(Algorithm::ES256, &format!("random-{n}")), &issuer, "x");
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                assert_allowed(&check_token(&mut client, "/", &valid).await);
            }
            assert_invalid_token(&check_token(&mut client, "/", &unknown).await, "no key with kid");
        }));
    }
    bounded("400 Checks", async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await;
    let during = issuer.jwks_requests() - before;
    assert!(during <= 1, "400 Checks under no-cache caused {during} JWKS fetches");
}

// 6. Unsupported keys beside good ones.

#[tokio::test]
async fn unsupported_keys_are_skipped_listed_in_status_and_the_good_ones_verify() {
    let rsa = SigningKey::generate(Algorithm::RS256, "rsa");
    let ec = SigningKey::generate(Algorithm::ES256, "ec");
    let issuer = DevIssuer::start(&[]).await.unwrap();
    let jwk = |key: &SigningKey| serde_json::to_value(&key.jwk).unwrap();
    let mut encryption = jwk(&SigningKey::generate(Algorithm::ES256, "enc"));
    encryption["use"] = "enc".into();
    let mut small_rsa = jwk(&rsa);
    small_rsa["kid"] = "small".into();
    small_rsa["n"] = serde_json::Value::from("xQ".repeat(86)); // 129 bytes, top bit set
    issuer.set_jwks_document(serde_json::json!({"keys": [
        jwk(&rsa),
        {"kty": "oct", "kid": "sym", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"},
        encryption,
        {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AQ", "y": "AQ"},
        small_rsa,
        {"kty": "PQ", "x": "?"},
        "not a key",
        jwk(&ec),
    ]}));
    let running = start_with_clock(&config(&issuer, "{}"), clock_now()).await;
    wait_until("ready", || running.readiness.is_ready()).await;

    for key in [&rsa, &ec] {
        assert_allowed(&check_now(&running, &token(key, &issuer, "u")).await);
    }
    // A token naming a skipped key is refused like any unknown kid.
    let hs = SigningKey::hmac(Algorithm::HS256, "sym", b"secret-secret-secret-secret");
    assert_denied(&check_now(&running, &token(&hs, &issuer, "u")).await, 401);

    let idp = issuer_status(&running).await;
    assert_eq!(idp.key_ids, ["rsa", "ec"]);
    let skipped: Vec<(&str, u32, &str)> =
        idp.skipped_keys.iter().map(|skip| (skip.kid.as_str(), skip.index, skip.reason.as_str())).collect();
    assert_eq!(
        skipped[..4],
        [
            ("sym", 1, "symmetric key in a JWKS"),
            ("enc", 2, "use=enc (an encryption key)"),
            ("p521", 3, "unsupported curve"),
            ("small", 4, "RSA modulus of 1032 bits (accepted: 2048 to 4096)"),
        ]
    );
    assert_eq!(skipped[4], ("", 5, "unsupported key type"));
    assert_eq!((skipped[5].0, skipped[5].1), ("", 6));
    assert!(skipped[5].2.starts_with("not a JWK this service understands ("), "{skipped:?}");

    // Operators see the same without grpcurl.
    let stdout = admin_status_cli(&running).await;
    assert!(stdout.contains("  keys: rsa, ec\n"), "{stdout}");
    assert!(stdout.contains("  skipped key sym: symmetric key in a JWKS\n"), "{stdout}");
    assert!(stdout.contains("  skipped key #5: unsupported key type\n"), "{stdout}");
    assert!(stdout.contains("  skipped key #6: not a JWK this service understands ("), "{stdout}");
}

// 7. A key removed from the JWKS.

#[tokio::test]
async fn a_removed_key_stops_verifying_after_the_refresh_cached_tokens_included() {
    let kept = SigningKey::generate(Algorithm::ES256, "kept");
    let removed = SigningKey::generate(Algorithm::ES256, "removed");
    let issuer = DevIssuer::start(&[&kept, &removed]).await.unwrap();
    // The background refresh comes every second.
    issuer.set_cache_control(Some("max-age=1"));
    let running = start_with_clock(&config(&issuer, "{ min_seconds: 1 }"), clock_now()).await;
    wait_until("ready", || running.readiness.is_ready()).await;
    let doomed = token(&removed, &issuer, "u");
    assert_allowed(&check_now(&running, &doomed).await);
    assert_allowed(&check_now(&running, &doomed).await);
    assert_eq!(get_status(&running).await.token_cache.unwrap().hits, 1, "served from the cache");

    issuer.set_keys(&[&kept]);
    let keys = std::sync::Arc::clone(&running.authorizer.policy().issuer("idp").unwrap().keys);
    wait_until("the background refresh without the key", || keys.status().key_ids == ["kept"]).await;
    assert_invalid_token(&check_now(&running, &doomed).await, "no key with kid \"removed\"");
    assert_allowed(&check_now(&running, &token(&kept, &issuer, "u")).await);
}

// 8. TLS: a certificate from a CA nobody trusts.

#[tokio::test]
async fn an_untrusted_idp_certificate_is_refused_with_a_clear_reason() {
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let issuer = DevIssuer::start_untrusted_tls(&[&key]).await.unwrap();
    assert!(issuer.jwks_uri().starts_with("https://127.0.0.1:"));
    let running = start_with_clock(&config(&issuer, "{}"), clock_now()).await;
    let running = &running;
    wait_until_async("the first fetch failed", || async move { !issuer_status(running).await.last_error.is_empty() })
        .await;
    let idp = issuer_status(running).await;
    assert!(idp.last_error.contains("(TLS handshake failed)"), "{}", idp.last_error);
    assert!(idp.last_error.contains("UnknownIssuer"), "{}", idp.last_error);
    assert!(!idp.has_keys);
    assert!(fetches(running, "tls_error").await >= 1);
    assert_unavailable(&check_now(running, &token(&key, &issuer, "u")).await, "not available yet");
    assert!(!running.readiness.is_ready());
    assert_eq!(issuer.jwks_requests(), 0, "no HTTP request ever reached the untrusted server");
}

#[tokio::test]
async fn a_redirect_to_an_untrusted_certificate_keeps_the_old_keys() {
    let untrusted = DevIssuer::start_untrusted_tls(&[&SigningKey::generate(Algorithm::ES256, "evil")]).await.unwrap();
    let redirect = Fault::RedirectTo(untrusted.jwks_uri());
    a_bad_answer_keeps_the_old_keys(redirect, "(TLS handshake failed)", "tls_error").await;
    assert_eq!(untrusted.jwks_requests(), 0, "no HTTP request ever reached the untrusted server");
}
