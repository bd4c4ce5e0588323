//! Requests that never finish arriving, through the real authz port with a raw
//! HTTP/2 client (no gRPC client leaves a message half-sent): they hold no
//! admission slot, are cut after the arrival bound, a connection holds at
//! most its budget of unfinished bytes, and a CheckRequest is read up to the
//! size its header limits need, no further.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use common::*;
use h2::RecvStream;
use h2::client::{ResponseFuture, SendRequest};
use jsonwebtoken::Algorithm;
use portcullis::config::LimitsConfig;
use portcullis::intake::{check_message_limit, connection_budget};
use portcullis::server::{Running, ServeOptions};
use prost::Message;
use tonic::codegen::{Bytes, http};

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Long enough for any answer here; only a server that never answers exceeds it.
const PATIENCE: Duration = Duration::from_secs(20);

fn config(issuer: &DevIssuer, concurrent_checks: usize) -> String {
    format!(
        "{LISTEN_ANY}limits: {{ concurrent_checks: {concurrent_checks} }}\nissuers:\n  idp:\n    issuer: \"{}\"\n    jwks_uri: \"{}\"\nroutes:\n  - match: {{ prefix: / }}\n",
        issuer.issuer(),
        issuer.jwks_uri()
    )
}

async fn start_bounded(issuer: &DevIssuer, concurrent_checks: usize, arrival: Duration) -> Running {
    let options = ServeOptions { arrival_timeout: Some(arrival), ..Default::default() };
    let running = start_with_options(&config(issuer, concurrent_checks), options).await;
    wait_until("server ready", || running.readiness.is_ready()).await;
    running
}

/// A raw HTTP/2 connection to `addr`, driven in the background.
async fn raw_connection(addr: std::net::SocketAddr) -> SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// Opens a Check stream and sends `body` on it without ending it. The send
/// half is returned so the stream stays open.
async fn open(client: &SendRequest<Bytes>, body: Bytes) -> (ResponseFuture, h2::SendStream<Bytes>) {
    let mut client = client.clone().ready().await.unwrap();
    let request = http::Request::post(format!("http://portcullis{CHECK}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    if !body.is_empty() {
        stream.send_data(body, false).unwrap();
    }
    (response, stream)
}

/// A gRPC frame announcing `announced` message bytes, with `sent` of them.
fn partial_message(announced: usize, sent: usize) -> Bytes {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(announced).unwrap().to_be_bytes());
    frame.resize(5 + sent, b'x');
    Bytes::from(frame)
}

/// The grpc-status a stream the server ended was answered with (a
/// trailers-only answer), waiting at most [`PATIENCE`].
async fn ended_with(response: ResponseFuture) -> Option<String> {
    let answer = tokio::time::timeout(PATIENCE, response).await.expect("the server ends the stream");
    let response: http::Response<RecvStream> = answer.ok()?;
    response.headers().get("grpc-status").map(|status| status.to_str().unwrap().to_string())
}

#[tokio::test]
async fn unfinished_checks_hold_no_admission_slot_and_are_cut_after_the_arrival_bound() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = start_bounded(&issuer, 4, Duration::from_secs(1)).await;
    let raw = raw_connection(running.authz_addr).await;
    // Sixteen times the admission limit: half only headers, half part of a message.
    let mut stalled = Vec::new();
    for index in 0..64 {
        let body = if index % 2 == 0 { Bytes::new() } else { partial_message(100, 10) };
        stalled.push(open(&raw, body).await);
    }
    // Wait until the server has them (counted as Checks by a server that admits
    // at stream open, as unfinished bytes by one that does not).
    wait_until("the stalled streams reached the server", || {
        metric(&running, "portcullis_checks_in_flight", "") >= 64.0
            || metric(&running, "portcullis_unfinished_request_bytes", "") >= 32.0 * 105.0
            || metric(&running, "portcullis_unfinished_requests_cut_total", "{reason=\"arrival_timeout\"}") > 0.0
    })
    .await;

    let mut client = client(&running).await;
    let valid = key.sign(&issuer.claims("alice", "x", 600));
    for _ in 0..10 {
        assert_allowed(&check_token(&mut client, "/api", &valid).await);
    }

    for (response, _send) in stalled {
        assert_eq!(ended_with(response).await.as_deref(), Some("4"), "DEADLINE_EXCEEDED");
    }
    let cut = metric(&running, "portcullis_unfinished_requests_cut_total", "{reason=\"arrival_timeout\"}");
    assert_eq!(cut, 64.0);
    assert_eq!(metric(&running, "portcullis_unfinished_request_bytes", ""), 0.0, "their bytes were released");
    assert_eq!(running.authorizer.gate.in_flight(), 0);
    assert_allowed(&check_token(&mut client, "/api", &valid).await);
}

#[tokio::test]
async fn one_connection_holds_at_most_its_budget_of_unfinished_messages() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    // An arrival bound far away: only the budget is under test.
    let running = start_bounded(&issuer, 4, Duration::from_secs(600)).await;
    let limit = check_message_limit(&LimitsConfig::default());
    let budget = connection_budget(limit);
    assert_eq!((limit, budget), (256 * 1024, 1024 * 1024), "the documented defaults");

    // Sample what the server holds while one connection pushes 16 messages
    // of just under the limit, each short of its last byte (4 MiB in all).
    let highest = Arc::new(AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let gauge = running.authorizer.metrics().intake.unfinished_bytes.clone();
    let sampler = {
        let (highest, done) = (Arc::clone(&highest), Arc::clone(&done));
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                highest.fetch_max(gauge.get(), Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let message = limit - 5;
    let raw = raw_connection(running.authz_addr).await;
    let answers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut open_streams = Vec::new();
    for _ in 0..16 {
        let (response, send) = open(&raw, partial_message(message, message - 1)).await;
        let answers = Arc::clone(&answers);
        let answered = tokio::spawn(async move {
            let status = ended_with(response).await;
            answers.lock().unwrap().push(status);
        });
        open_streams.push((answered, send));
    }
    // Each announces a whole message: four fill the budget, the twelve others are cut.
    let cut = || metric(&running, "portcullis_unfinished_requests_cut_total", "{reason=\"connection_budget\"}");
    wait_until("streams over the budget are cut", || cut() >= 12.0).await;
    wait_until("their answers arrive", || answers.lock().unwrap().len() >= 12).await;
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert_eq!(cut(), 12.0);
    let answers = answers.lock().unwrap().clone();
    assert!(answers.iter().all(|status| status.as_deref() == Some("8")), "RESOURCE_EXHAUSTED: {answers:?}");
    let budget = i64::try_from(budget).unwrap();
    let held = running.authorizer.metrics().intake.unfinished_bytes.get();
    assert_eq!(held, budget, "four announced messages of {limit} bytes");
    let highest = highest.load(Ordering::Relaxed);
    assert!(highest <= budget, "at most {highest} bytes held at once, budget {budget}");
    for (answered, send) in open_streams {
        answered.abort();
        drop(send);
    }
    drop(raw);
    wait_until("an abandoned connection's bytes are released", || {
        running.authorizer.metrics().intake.unfinished_bytes.get() == 0
    })
    .await;

    // The connection budget is per connection: another one is served as usual.
    let mut client = client(&running).await;
    assert_allowed(&check_token(&mut client, "/api", &key.sign(&issuer.claims("alice", "x", 600))).await);
}

#[tokio::test]
async fn a_check_is_read_up_to_what_its_header_limits_need_and_no_further() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let running = start_bounded(&issuer, 64, Duration::from_secs(600)).await;
    let limit = check_message_limit(&LimitsConfig::default());

    // Announcing one byte more than the limit is refused at once, before any of it is read.
    let raw = raw_connection(running.authz_addr).await;
    let (response, _send) = open(&raw, partial_message(limit + 1, 0)).await;
    assert_eq!(ended_with(response).await.as_deref(), Some("11"), "OUT_OF_RANGE");

    // Headers up to limits.max_header_bytes fit, with Envoy's repeated fields.
    let mut client = client(&running).await;
    let token = key.sign(&issuer.claims("alice", "x", 600));
    let authorization = bearer(&token);
    let budget = LimitsConfig::default().max_header_bytes - authorization.len() - 1024;
    let filler: Vec<(String, String)> =
        (0..40).map(|index| (format!("x-filler-{index:02}"), "f".repeat(budget / 40 - 12))).collect();
    let mut headers: Vec<(&str, &str)> = filler.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    headers.push(("authorization", &authorization));
    let near_limit = request("GET", "/api", &headers);
    assert!(near_limit.encoded_len() > 90 * 1024, "{}", near_limit.encoded_len());
    assert_allowed(&check(&mut client, near_limit).await);
    // More than the header limits is a 431 decision, not a gRPC error.
    let over: Vec<(String, String)> = (0..40).map(|index| (format!("x-over-{index:02}"), "o".repeat(2600))).collect();
    headers.extend(over.iter().map(|(name, value)| (name.as_str(), value.as_str())));
    assert_denied(&check(&mut client, request("GET", "/api", &headers)).await, 431);
}
