//! Identity events end to end with real parts: a real loopback issuer whose keys
//! sign both access tokens and Kinde-style webhooks, portcullis replicas started
//! in-process over real gRPC, and a real Redis-compatible server (valkey-server,
//! pinned) shared by the replicas. Deliveries go through the Check API exactly
//! as Envoy sends them (`raw_body`). No sleeps stand in for conditions: waits
//! poll the condition itself, with a bound.

mod common;

use std::time::Duration;

use common::valkey::RedisServer;
use common::*;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use portcullis::proto::admin::v1::admin_client::AdminClient;
use portcullis::proto::admin::v1::{ListRevocationsRequest, RevokeSubjectRequest};
use portcullis::server::Running;
use serde_json::{Value, json};
use tonic::transport::Channel;

const WEBHOOK: &str = "/webhooks/kinde";

struct Edge {
    issuer: DevIssuer,
    key: SigningKey,
}

impl Edge {
    async fn new() -> Edge {
        let key = SigningKey::generate(jsonwebtoken::Algorithm::ES256, "kinde-1");
        let issuer = DevIssuer::start(&[&key]).await.expect("issuer starts");
        Edge { issuer, key }
    }

    /// A replica's config; `state` is the YAML of the `state` value.
    fn config(&self, state: &str) -> String {
        format!(
            "{LISTEN_ANY}issuers:
  kinde:
    issuer: {issuer}
    jwks_uri: {jwks}
    audiences: [api]
webhooks:
  - name: kinde
    match: {{ path: {WEBHOOK} }}
    kind: kinde
    issuer: kinde
    events: [user.created, user.updated, user.deleted]
revocation:
  on_event:
    - {{ webhook: kinde, type: user.deleted, revoke_subject: $.data.user.id, issuer: kinde }}
    - {{ webhook: kinde, type: user.updated, if_true: $.data.user.is_suspended, revoke_subject: $.data.user.id, issuer: kinde }}
state: {state}
routes:
  - match: {{ prefix: /api/ }}
",
            issuer = self.issuer.issuer(),
            jwks = self.issuer.jwks_uri(),
        )
    }

    /// An access token for `sub` issued `age` seconds before `now`.
    fn token(&self, sub: &str, now: u64, age: u64) -> String {
        let iat = now - age;
        self.key.sign(&json!({"iss": self.issuer.issuer(), "sub": sub, "aud": "api", "iat": iat, "exp": iat + 3600}))
    }

    /// A Kinde-style delivery: the JWT body, signed with the issuer's key, with no iss, aud or exp.
    fn event(&self, event_id: &str, event_type: &str, user: Value, at: u64) -> String {
        let timestamp = chrono::DateTime::from_timestamp(at as i64, 0).unwrap().to_rfc3339();
        self.key.sign(&json!({
            "type": event_type, "event_id": event_id, "source": "admin", "timestamp": timestamp,
            "data": { "user": user },
        }))
    }
}

/// The Check Envoy sends for a webhook POST, the body in `raw_body`.
fn delivery(body: &str) -> CheckRequest {
    let mut request = request("POST", WEBHOOK, &[("content-type", "application/jwt"), ("webhook-id", "wh_1")]);
    let http = request.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    http.raw_body = body.as_bytes().to_vec();
    request
}

fn redis_state(redis: &RedisServer, prefix: &str, extra: &str) -> String {
    format!("{{ redis: '{}', key_prefix: '{prefix}:', command_timeout_ms: 500{extra} }}", redis.url())
}

async fn replica(config: &str, clock: Clock) -> Running {
    let running = start_with_clock(config, clock).await;
    wait_until("replica ready (keys fetched, revocations read)", || running.readiness.is_ready()).await;
    running
}

async fn admin(running: &Running) -> AdminClient<Channel> {
    AdminClient::connect(format!("http://{}", running.admin_addr)).await.expect("admin client connects")
}

/// The HTTP status the client would see: 200 for an allow, else the denied response's.
async fn status_of(client: &mut AuthorizationClient<Channel>, request: CheckRequest) -> i32 {
    let response = check(client, request).await;
    match &response.http_response {
        Some(envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse::DeniedResponse(denied)) => {
            denied.status.as_ref().map_or(0, |status| status.code)
        }
        _ if status_code(&response) == 0 => 200,
        other => panic!("unexpected answer {other:?}"),
    }
}

async fn token_status(client: &mut AuthorizationClient<Channel>, token: &str) -> i32 {
    let value = bearer(token);
    status_of(client, request("GET", "/api/orders", &[("authorization", &value)])).await
}

/// Polls an async condition every 20 ms until it holds or `bound` passes.
async fn eventually<F, Fut>(what: &str, bound: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not within {bound:?}: {what}");
}

async fn revoke_subject(running: &Running, subject: &str) {
    let mut admin = admin(running).await;
    let request = RevokeSubjectRequest { issuer: "kinde".into(), subject: subject.into(), issued_before: None };
    // A connection Redis just dropped is re-established by the next call: retry a few times.
    for _ in 0..20 {
        match admin.revoke_subject(request.clone()).await {
            Ok(_) => return,
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("RevokeSubject: {status}"),
        }
    }
    panic!("RevokeSubject stayed unavailable");
}

#[tokio::test]
async fn a_replay_to_another_replica_is_acknowledged_and_applied_once() {
    // Each test its own server (valkey-server starts in milliseconds; a shared one
    // in a static would outlive the test binary).
    let redis = RedisServer::start();
    let edge = Edge::new().await;
    let config = edge.config(&redis_state(&redis, "replay", ""));
    let (a, b) = (replica(&config, Clock::system()).await, replica(&config, Clock::system()).await);
    let now = Clock::system().now();
    let body = edge.event("event_replay_1", "user.deleted", json!({"id": "kp_replayed"}), now);

    let first = check(&mut client(&a).await, delivery(&body)).await;
    let denied = assert_denied(&first, 204);
    assert_eq!(denied.body, "", "a consumed delivery is answered 204 with no body");
    let replay = check(&mut client(&b).await, delivery(&body)).await;
    let denied = assert_denied(&replay, 200);
    assert_eq!(denied.body, r#"{"status":"duplicate"}"#);
    // The same event under another (unsigned) webhook-id header is still the same event.
    let mut other_id = delivery(&body);
    let http = other_id.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    http.headers.insert("webhook-id".into(), "wh_other".into());
    assert_denied(&check(&mut client(&a).await, other_id).await, 200);

    for replica in [&a, &b] {
        let listed =
            admin(replica).await.list_revocations(ListRevocationsRequest::default()).await.unwrap().into_inner();
        let subjects: Vec<&str> = listed.revocations.iter().map(|entry| entry.subject.as_str()).collect();
        assert_eq!(subjects, ["kp_replayed"], "applied once, seen by both replicas");
        assert_eq!(listed.state, "redis");
    }
    assert_eq!(metric(&a, "portcullis_webhooks_total", "{webhook=\"kinde\",result=\"verified\"}"), 1.0);
    assert_eq!(metric(&b, "portcullis_webhooks_total", "{webhook=\"kinde\",result=\"duplicate\"}"), 1.0);
}

#[tokio::test]
async fn concurrent_deliveries_to_two_replicas_have_exactly_one_first_seen_per_event() {
    // Each test its own server (valkey-server starts in milliseconds; a shared one
    // in a static would outlive the test binary).
    let redis = RedisServer::start();
    let edge = Edge::new().await;
    let config = edge.config(&redis_state(&redis, "race", ""));
    let (a, b) = (replica(&config, Clock::system()).await, replica(&config, Clock::system()).await);
    let (client_a, client_b) = (client(&a).await, client(&b).await);
    let now = Clock::system().now();
    let bodies: Vec<String> = (0..100)
        .map(|n| edge.event(&format!("event_race_{n}"), "user.created", json!({"id": format!("kp_{n}")}), now))
        .collect();
    let calls = bodies.iter().flat_map(|body| {
        [client_a.clone(), client_b.clone()].map(|mut client| {
            let request = delivery(body);
            async move { status_of(&mut client, request).await }
        })
    });
    let statuses = futures_join_all(calls.collect()).await;
    for (n, pair) in statuses.chunks(2).enumerate() {
        let mut pair = pair.to_vec();
        pair.sort_unstable();
        assert_eq!(pair, [200, 204], "event {n}: one first-seen (204) and one duplicate (200)");
    }
}

#[tokio::test]
async fn a_user_deleted_on_one_replica_is_enforced_by_the_other_including_cached_tokens() {
    // Each test its own server (valkey-server starts in milliseconds; a shared one
    // in a static would outlive the test binary).
    let redis = RedisServer::start();
    let edge = Edge::new().await;
    let config = edge.config(&redis_state(&redis, "propagate", ""));
    let (a, b) = (replica(&config, Clock::system()).await, replica(&config, Clock::system()).await);
    let (mut on_a, mut on_b) = (client(&a).await, client(&b).await);
    let now = Clock::system().now();
    let before = edge.token("kp_gone", now, 120);
    let after = edge.token("kp_gone", now, 10);
    assert_eq!(token_status(&mut on_b, &before).await, 200, "allowed, and now cached on B");
    assert_eq!(token_status(&mut on_b, &before).await, 200);
    assert!(metric(&b, "portcullis_token_cache_hits_total", "") >= 1.0);

    let deleted = edge.event("event_deleted_1", "user.deleted", json!({"id": "kp_gone"}), now - 60);
    assert_denied(&check(&mut on_a, delivery(&deleted)).await, 204);
    eventually("B denies the deleted user's cached token", Duration::from_secs(1), || {
        let mut on_b = on_b.clone();
        let before = before.clone();
        async move { token_status(&mut on_b, &before).await == 401 }
    })
    .await;
    let value = bearer(&before);
    let response = check(&mut on_b, request("GET", "/api/orders", &[("authorization", &value)])).await;
    assert_invalid_token(&response, "revoked");
    assert_eq!(token_status(&mut on_b, &after).await, 200, "a token issued after the deletion passes");
    assert_eq!(token_status(&mut on_a, &before).await, 401);

    // A suspension arrives as user.updated with is_suspended: true; an update without it revokes nothing.
    let active = edge.event("event_upd_1", "user.updated", json!({"id": "kp_active", "is_suspended": false}), now - 60);
    assert_denied(&check(&mut on_a, delivery(&active)).await, 204);
    let suspended = edge.event("event_upd_2", "user.updated", json!({"id": "kp_susp", "is_suspended": true}), now - 60);
    assert_denied(&check(&mut on_a, delivery(&suspended)).await, 204);
    let suspended_token = edge.token("kp_susp", now, 120);
    eventually("B denies the suspended user", Duration::from_secs(1), || {
        let mut on_b = on_b.clone();
        let token = suspended_token.clone();
        async move { token_status(&mut on_b, &token).await == 401 }
    })
    .await;
    assert_eq!(token_status(&mut on_b, &edge.token("kp_active", now, 120)).await, 200);
}

#[tokio::test]
async fn a_replica_whose_connection_is_killed_catches_up_without_a_restart() {
    let redis = RedisServer::start();
    let edge = Edge::new().await;
    let config = edge.config(&redis_state(&redis, "kill", ""));
    let (a, b) = (replica(&config, Clock::system()).await, replica(&config, Clock::system()).await);
    let mut on_b = client(&b).await;
    let token = edge.token("kp_killed", Clock::system().now(), 60);
    assert_eq!(token_status(&mut on_b, &token).await, 200);

    let killed: i64 = redis.command(&["CLIENT", "KILL", "TYPE", "normal"]).await;
    assert!(killed >= 2, "the replicas' connections were killed ({killed})");
    revoke_subject(&a, "kp_killed").await;
    eventually("B, reconnected, denies the token revoked while it was cut off", Duration::from_secs(10), || {
        let mut on_b = on_b.clone();
        let token = token.clone();
        async move { token_status(&mut on_b, &token).await == 401 }
    })
    .await;
}

#[tokio::test]
async fn a_redis_restarted_empty_is_refilled_and_replicas_resynchronise() {
    let mut redis = RedisServer::start();
    let edge = Edge::new().await;
    let config = edge.config(&redis_state(&redis, "restart", ""));
    let (a, b) = (replica(&config, Clock::system()).await, replica(&config, Clock::system()).await);
    let (mut on_a, mut on_b) = (client(&a).await, client(&b).await);
    let now = Clock::system().now();
    let (first, second) = (edge.token("kp_first", now, 60), edge.token("kp_second", now, 60));
    revoke_subject(&a, "kp_first").await;
    eventually("B applies the first revocation", Duration::from_secs(5), || {
        let mut on_b = on_b.clone();
        let first = first.clone();
        async move { token_status(&mut on_b, &first).await == 401 }
    })
    .await;

    redis.down();
    redis.up();
    let snapshot_key = "restart:revocations";
    eventually("a replica writes back what it knows", Duration::from_secs(10), || async {
        let snapshot: std::collections::HashMap<String, String> = redis.command(&["HGETALL", snapshot_key]).await;
        snapshot.values().any(|change| change.contains("kp_first"))
    })
    .await;
    revoke_subject(&b, "kp_second").await;
    eventually("A applies a revocation made after the restart", Duration::from_secs(5), || {
        let mut on_a = on_a.clone();
        let second = second.clone();
        async move { token_status(&mut on_a, &second).await == 401 }
    })
    .await;
    assert_eq!(token_status(&mut on_a, &first).await, 401, "the revocation from before the restart holds");
    assert_eq!(token_status(&mut on_b, &first).await, 401);
}

#[tokio::test]
async fn with_redis_down_webhooks_answer_503_and_checks_follow_on_stale() {
    let mut redis = RedisServer::start();
    let edge = Edge::new().await;
    let clock = clock_now();
    let deny = edge.config(&redis_state(&redis, "down", ", max_stale_seconds: 2"));
    let allow = edge.config(&redis_state(&redis, "down", ", max_stale_seconds: 2, on_stale: allow"));
    let (a, b) = (replica(&deny, clock.clone()).await, replica(&allow, clock.clone()).await);
    let (mut on_a, mut on_b) = (client(&a).await, client(&b).await);
    let now = clock.now();
    let (revoked, fresh) = (edge.token("kp_revoked", now, 60), edge.token("kp_fresh", now, 60));
    revoke_subject(&a, "kp_revoked").await;
    eventually("B applies the revocation", Duration::from_secs(5), || {
        let mut on_b = on_b.clone();
        let revoked = revoked.clone();
        async move { token_status(&mut on_b, &revoked).await == 401 }
    })
    .await;

    redis.down();
    let event = edge.event("event_down_1", "user.deleted", json!({"id": "kp_other"}), now);
    let response = check(&mut on_a, delivery(&event)).await;
    let denied = assert_denied(&response, 503);
    assert!(denied.body.contains("state_error"), "{}", denied.body);
    // Within max_stale_seconds, the last-known set decides.
    assert_eq!(token_status(&mut on_a, &revoked).await, 401);
    assert_eq!(token_status(&mut on_a, &fresh).await, 200);
    clock.advance(3);
    eventually("A (on_stale: deny) answers 503 once the set is stale", Duration::from_secs(5), || {
        let mut on_a = on_a.clone();
        let fresh = fresh.clone();
        async move { token_status(&mut on_a, &fresh).await == 503 }
    })
    .await;
    wait_until("A not ready while stale", || !a.readiness.is_ready()).await;
    assert_eq!(token_status(&mut on_b, &fresh).await, 200, "B (on_stale: allow) keeps deciding");
    assert_eq!(token_status(&mut on_b, &revoked).await, 401, "on the last-known set");

    // A replica that boots while Redis is down is not ready.
    let booted = start_with_clock(&deny, clock.clone()).await;
    assert!(!booted.authorizer.policy().is_ready(), "never read its revocations: not ready");

    redis.up();
    wait_until("A ready again once Redis answers", || a.readiness.is_ready()).await;
    wait_until("the late replica becomes ready", || booted.readiness.is_ready()).await;
    eventually("A decides again", Duration::from_secs(5), || {
        let mut on_a = on_a.clone();
        let fresh = fresh.clone();
        async move { token_status(&mut on_a, &fresh).await == 200 }
    })
    .await;
    assert_eq!(token_status(&mut on_a, &revoked).await, 401, "written back after the empty restart");
}

#[tokio::test]
async fn state_memory_needs_nothing_else_running() {
    let edge = Edge::new().await;
    let running = replica(&edge.config("memory"), Clock::system()).await;
    let mut on = client(&running).await;
    let now = Clock::system().now();
    let token = edge.token("kp_local", now, 60);
    assert_eq!(token_status(&mut on, &token).await, 200);
    let body = edge.event("event_local_1", "user.deleted", json!({"id": "kp_local"}), now - 30);
    assert_denied(&check(&mut on, delivery(&body)).await, 204);
    assert_denied(&check(&mut on, delivery(&body)).await, 200);
    assert_eq!(token_status(&mut on, &token).await, 401, "cached allow refused after the revocation");
    // An access token posted as a webhook is refused, whoever signed it.
    let response = check(&mut on, delivery(&token)).await;
    let denied = assert_denied(&response, 401);
    assert!(denied.body.contains("access_token"), "{}", denied.body);
    // A partial body is refused.
    let mut partial = delivery(&body);
    let http = partial.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    http.headers.insert("x-envoy-auth-partial-body".into(), "true".into());
    assert_denied(&check(&mut on, partial).await, 413);
    let listed = admin(&running).await.list_revocations(ListRevocationsRequest::default()).await.unwrap().into_inner();
    assert_eq!((listed.state.as_str(), listed.current, listed.revocations.len()), ("memory", true, 1));
}

#[tokio::test]
async fn a_forwarded_webhook_carries_vouching_headers_and_never_a_client_copy() {
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let config = format!(
        "{LISTEN_ANY}webhooks:
  - name: clerk
    match: {{ path: /webhooks/clerk }}
    kind: svix
    secrets: ['{secret}']
    mode: forward
routes:
  - {{ match: {{ prefix: /public/ }}, action: allow }}
"
    );
    let running = replica(&config, Clock::system()).await;
    let mut on = client(&running).await;
    let now = Clock::system().now().to_string();
    let body = r#"{"type":"user.deleted","data":{"id":"user_29w83sxmDNGwOuEthce5gg56FcC"}}"#;
    let key = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &secret["whsec_".len()..]).unwrap();
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key),
        format!("msg_1.{now}.{body}").as_bytes(),
    );
    let signature = format!("v1,{}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, tag.as_ref()));
    let headers = [
        ("svix-id", "msg_1"),
        ("svix-timestamp", now.as_str()),
        ("svix-signature", signature.as_str()),
        ("x-portcullis-webhook-verified", "spoofed"),
    ];
    let mut forwarded = request("POST", "/webhooks/clerk", &headers);
    forwarded.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap().body = body.into();
    let response = check(&mut on, forwarded.clone()).await;
    let ok = assert_allowed(&response);
    let set: Vec<(String, String)> = ok
        .headers
        .iter()
        .filter_map(|option| option.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    assert_eq!(
        set,
        [
            ("x-portcullis-webhook-id".to_string(), "msg_1".to_string()),
            ("x-portcullis-webhook-type".to_string(), "user.deleted".to_string()),
            ("x-portcullis-webhook-verified".to_string(), "true".to_string()),
        ]
    );
    assert_denied(&check(&mut on, forwarded).await, 200);
    // On every other route the client's copies are removed.
    let spoof = request("GET", "/public/x", &[("x-portcullis-webhook-verified", "true")]);
    let response = check(&mut on, spoof).await;
    let ok = assert_allowed(&response);
    assert!(ok.headers_to_remove.contains(&"x-portcullis-webhook-verified".to_string()), "{ok:?}");
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join_all<T: Send + 'static>(
    futures: Vec<impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

/// The shipped webhook bootstrap (deploy/envoy/envoy-webhooks.yaml) on loopback:
/// ports picked by the OS, portcullis reached through a recording tap.
fn webhook_bootstrap(authz: std::net::SocketAddr, upstream: std::net::SocketAddr) -> String {
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/envoy/envoy-webhooks.yaml"))
        .expect("read deploy/envoy/envoy-webhooks.yaml");
    let replacements = [
        ("address: 127.0.0.1, port_value: 9901", "address: 127.0.0.1, port_value: 0".to_string()),
        ("address: 0.0.0.0, port_value: 8080", "address: 127.0.0.1, port_value: 0".to_string()),
        (
            "address: portcullis-headless.portcullis.svc.cluster.local, port_value: 50051",
            format!("address: {}, port_value: {}", authz.ip(), authz.port()),
        ),
        (
            "address: api.apps.svc.cluster.local, port_value: 8080",
            format!("address: {}, port_value: {}", upstream.ip(), upstream.port()),
        ),
    ];
    replacements.into_iter().fold(shipped, |text, (from, to)| {
        assert!(text.contains(from), "the shipped bootstrap no longer has {from:?}");
        text.replace(from, &to)
    })
}

#[tokio::test]
async fn through_envoy_a_webhook_body_reaches_portcullis_exactly_and_only_on_webhook_routes() {
    use common::envoy::{AuthzTap, Envoy, Upstream, raw_request};
    let edge = Edge::new().await;
    let running = replica(
        &edge.config("memory").replace(
            "routes:\n  - match: { prefix: /api/ }",
            "routes:\n  - match: { prefix: /api/ }\n    action: allow",
        ),
        Clock::system(),
    )
    .await;
    let tap = AuthzTap::forwarding_to(running.authz_addr).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start_with(&webhook_bootstrap(tap.addr, upstream.addr)).await;
    let now = Clock::system().now();
    let jwt = [("content-type", "application/jwt")];

    // A Kinde-style delivery: verified from raw_body (Envoy 1.40 leaves `body` empty with
    // pack_as_bytes at the filter), consumed with a 204 that never reaches the upstream.
    let body = edge.event("event_envoy_1", "user.created", json!({"id": "kp_envoy"}), now);
    let reply = envoy.send("POST", WEBHOOK, &jwt, Some(&body)).await;
    assert_eq!(reply.status, 204, "{reply:?}\n{}", envoy.log());
    let sent = tap.last();
    let http = sent.attributes.unwrap().request.unwrap().http.unwrap();
    assert_eq!(http.raw_body, body.as_bytes(), "the exact bytes in raw_body");
    assert!(http.body.is_empty(), "and nothing in body (envoy#35623)");
    // The replay is acknowledged with a 200 from the denied response.
    let replay = envoy.send("POST", WEBHOOK, &jwt, Some(&body)).await;
    assert_eq!((replay.status, replay.body.as_str()), (200, r#"{"status":"duplicate"}"#));
    assert_eq!(upstream.count(), 0, "consumed deliveries never reach the upstream");

    // Over max_request_bytes: Envoy answers 413 without asking portcullis.
    let checks = tap.count();
    let huge = "x".repeat(70 * 1024);
    let reply = envoy.send("POST", WEBHOOK, &jwt, Some(&huge)).await;
    assert_eq!(reply.status, 413);
    assert_eq!(tap.count(), checks, "no Check for a body over the limit");

    // A chunked upload (three chunks) is buffered whole and verifies.
    let chunked_body = edge.event("event_envoy_2", "user.created", json!({"id": "kp_chunked"}), now);
    let thirds = chunked_body.len() / 3;
    let parts = [&chunked_body[..thirds], &chunked_body[thirds..2 * thirds], &chunked_body[2 * thirds..]];
    let mut request = raw_request(
        "POST",
        WEBHOOK,
        &[("Host", "api.example.com"), ("Content-Type", "application/jwt"), ("Transfer-Encoding", "chunked")],
        "",
    );
    for part in parts {
        request.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let reply = envoy.raw(&request).await;
    assert_eq!(reply.status, 204, "{reply:?}\n{}", envoy.log());

    // Any other route: the body is neither buffered nor sent to portcullis.
    let reply = envoy.send("POST", "/api/orders", &[("content-type", "application/json")], Some("{\"x\":1}")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let http = tap.last().attributes.unwrap().request.unwrap().http.unwrap();
    assert_eq!(http.path, "/api/orders");
    assert!(http.raw_body.is_empty() && http.body.is_empty(), "no body on a non-webhook route");
    assert_eq!(upstream.last().body, b"{\"x\":1}", "the upstream still gets the body");
}

/// The CLI's revocation commands, through the real binary and the Admin API
/// (a multi-threaded runtime: the blocking CLI call must not stall the server it calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_cli_revokes_lists_and_unrevokes() {
    let edge = Edge::new().await;
    let running = replica(&edge.config("memory"), Clock::system()).await;
    let mut on = client(&running).await;
    let now = Clock::system().now();
    let token = edge.token("kp_cli", now, 60);
    assert_eq!(token_status(&mut on, &token).await, 200);
    let addr = running.admin_addr.to_string();
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["admin", "--addr", &addr])
            .args(args)
            .output()
            .expect("run portcullis admin");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(&["revoke-subject", "kinde", "kp_cli"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("revoked: kinde subject kp_cli issued-before "), "{out}");
    assert_eq!(token_status(&mut on, &token).await, 401, "cached allow refused");
    let (code, out, _) = cli(&["revoke-token", "kinde", "jti-1", "--expires", &(now + 60).to_string()]);
    assert_eq!(code, Some(0));
    assert_eq!(out, format!("revoked: kinde jti jti-1 expires {}\n", now + 60 + 30));
    let (code, out, _) = cli(&["revocations"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("state memory  current true  staleness 0s  entries 2\n"), "{out}");
    let (code, _, err) = cli(&["revoke-subject", "nobody", "kp_cli"]);
    assert_eq!(code, Some(1), "an unknown issuer is the caller's mistake: {err}");
    assert!(err.contains("no issuer named \"nobody\""), "{err}");
    let (code, out, err) = cli(&["unrevoke", "kinde", "kp_cli"]);
    assert_eq!((code, out.as_str()), (Some(0), "unrevoked\n"), "{err}");
    assert_eq!(token_status(&mut on, &token).await, 200, "allowed again");
    let (code, _, _) = cli(&["unrevoke", "kinde", "--jti", "jti-1"]);
    assert_eq!(code, Some(0));
    let (_, out, _) = cli(&["revocations", "kinde"]);
    assert!(out.contains("entries 0"), "{out}");
}

/// The revocation RPCs from a client nobody here wrote: grpcurl, through the admin port's reflection.
#[tokio::test]
async fn grpcurl_revokes_and_lists_through_reflection() {
    let edge = Edge::new().await;
    let running = replica(&edge.config("memory"), Clock::system()).await;
    let grpcurl = common::tools::go_tool("grpcurl");
    let addr = running.admin_addr.to_string();
    let call = move |method: &str, body: &str| {
        let output = std::process::Command::new(&grpcurl)
            .args(["-plaintext", "-d", body, &addr, &format!("portcullis.admin.v1.Admin/{method}")])
            .output()
            .expect("run grpcurl");
        assert!(output.status.success(), "{method}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<Value>(&output.stdout).expect("JSON from grpcurl")
    };
    let (revoked, listed) = tokio::task::spawn_blocking(move || {
        let revoked = call(
            "RevokeSubject",
            r#"{"issuer": "kinde", "subject": "kp_grpcurl", "issuedBefore": "2030-01-01T00:00:00Z"}"#,
        );
        (revoked, call("ListRevocations", "{}"))
    })
    .await
    .unwrap();
    assert_eq!(revoked["revocation"]["subject"], "kp_grpcurl");
    assert_eq!(revoked["revocation"]["issuedBefore"], "2030-01-01T00:00:00Z");
    assert_eq!(listed["state"], "memory");
    assert_eq!(listed["current"], true);
    assert_eq!(listed["revocations"][0]["issuer"], "kinde");
    let mut on = client(&running).await;
    let token = edge.token("kp_grpcurl", Clock::system().now(), 60);
    assert_eq!(token_status(&mut on, &token).await, 401);
}
