//! Shared pieces of the integration tests: a real loopback issuer, the real
//! server started in-process on ephemeral ports, and a real tonic client built
//! from envoy-types.
#![allow(dead_code)]

pub mod envoy;
pub mod idp;
pub mod tools;
pub mod valkey;

use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use portcullis::server::{Running, ServeOptions};
use tonic::transport::Channel;

pub use idp::DevIssuer;
pub use portcullis::dev::SigningKey;
use portcullis::policy::Runtime;
pub use portcullis::token::Clock;

/// `listen` block binding every port to an ephemeral loopback port.
pub const LISTEN_ANY: &str = "listen: { authz: 127.0.0.1:0, admin: 127.0.0.1:0, http: 127.0.0.1:0 }\n";

pub async fn start(config_yaml: &str) -> Running {
    start_with_clock(config_yaml, Clock::system()).await
}

/// Starts the server on `clock` (a fixed clock lets a test move time instead of waiting).
pub async fn start_with_clock(config_yaml: &str, clock: Clock) -> Running {
    let runtime = Runtime { clock, ..Runtime::default() };
    let policy = portcullis::policy::compile_text(config_yaml, "test config", &runtime, None)
        .unwrap_or_else(|err| panic!("{err}"));
    portcullis::server::start(policy, ServeOptions::default(), std::future::pending()).await.expect("server starts")
}

/// Starts the server with `options` (say, a short arrival bound) on the system clock.
pub async fn start_with_options(config_yaml: &str, options: ServeOptions) -> Running {
    let policy = portcullis::policy::compile_text(config_yaml, "test config", &Runtime::default(), None)
        .unwrap_or_else(|err| panic!("{err}"));
    portcullis::server::start(policy, options, std::future::pending()).await.expect("server starts")
}

/// One sample of `name` (a metric without labels, or with exactly `labels`) in
/// the server's Prometheus text; 0 when absent.
pub fn metric(running: &Running, name: &str, labels: &str) -> f64 {
    let text = running.authorizer.metrics().render(None, Default::default()).1;
    let series = format!("{name}{labels} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0.0, |value| value.trim().parse().expect("a sample value"))
}

/// A fixed clock set to the current time.
pub fn clock_now() -> Clock {
    Clock::fixed(Clock::system().now())
}

/// Starts the server and waits (bounded) until its issuers have keys.
pub async fn start_ready(config_yaml: &str) -> Running {
    let running = start(config_yaml).await;
    wait_until("server ready", || running.readiness.is_ready()).await;
    running
}

/// Polls `condition` every 20 ms for up to 15 s; panics with `what` if it never holds.
pub async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..750 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub async fn client(running: &Running) -> AuthorizationClient<Channel> {
    client_at(running.authz_addr).await
}

/// GET `url` over plain HTTP: (status, body).
pub async fn http_get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("HTTP GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("HTTP body"))
}

/// An ext_authz client for an address (e.g. one a child process logged).
pub async fn client_at(addr: impl std::fmt::Display) -> AuthorizationClient<Channel> {
    AuthorizationClient::connect(format!("http://{addr}")).await.expect("client connects")
}

/// A CheckRequest shaped like Envoy's: lower-case headers including pseudo-headers.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let mut http = HttpRequest {
        method: method.into(),
        path: path.into(),
        host: "api.example.com".into(),
        scheme: "https".into(),
        protocol: "HTTP/2".into(),
        ..Default::default()
    };
    http.headers.insert(":authority".into(), "api.example.com".into());
    http.headers.insert(":method".into(), method.into());
    http.headers.insert(":path".into(), path.into());
    for (name, value) in headers {
        http.headers.insert((*name).into(), (*value).into());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request { http: Some(http), ..Default::default() }),
            ..Default::default()
        }),
    }
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub async fn check(client: &mut AuthorizationClient<Channel>, request: CheckRequest) -> CheckResponse {
    client.check(request).await.expect("Check never fails at the gRPC level").into_inner()
}

/// GET `path` with `Authorization: Bearer token`.
pub async fn check_token(client: &mut AuthorizationClient<Channel>, path: &str, token: &str) -> CheckResponse {
    let value = bearer(token);
    check(client, request("GET", path, &[("authorization", &value)])).await
}

pub fn status_code(response: &CheckResponse) -> i32 {
    response.status.as_ref().expect("status is always set").code
}

#[track_caller]
pub fn assert_allowed(response: &CheckResponse) -> &OkHttpResponse {
    assert_eq!(status_code(response), 0, "expected allow, got {response:#?}");
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("allow without ok_response: {other:?}"),
    }
}

#[track_caller]
pub fn assert_denied(response: &CheckResponse, http_status: i32) -> &DeniedHttpResponse {
    assert_ne!(status_code(response), 0, "expected deny, got allow: {response:#?}");
    let denied = match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied,
        other => panic!("deny without denied_response: {other:?}"),
    };
    assert_eq!(denied.status.as_ref().map(|status| status.code), Some(http_status), "{response:#?}");
    denied
}

pub fn header<'a>(denied: &'a DeniedHttpResponse, name: &str) -> Option<&'a str> {
    denied
        .headers
        .iter()
        .filter_map(|option| option.header.as_ref())
        .find(|header| header.key == name)
        .map(|header| header.value.as_str())
}

/// Asserts a 401 `invalid_token` whose description contains `fragment`.
#[track_caller]
pub fn assert_invalid_token(response: &CheckResponse, fragment: &str) {
    let denied = assert_denied(response, 401);
    let challenge = header(denied, "www-authenticate").expect("401 carries WWW-Authenticate");
    assert!(challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""), "{challenge}");
    let body: serde_json::Value = serde_json::from_str(&denied.body).expect("JSON body");
    assert_eq!(body["error"], "invalid_token", "{body}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains(fragment), "expected {fragment:?} in {description:?}");
}

/// A one-issuer config: `name` at `issuer`, with extra issuer YAML lines and routes.
pub fn config_for(issuer: &DevIssuer, audience: &str) -> String {
    format!(
        "{LISTEN_ANY}issuers:\n  idp:\n    issuer: {}\n    jwks_uri: {}\n    audiences: [{audience}]\nroutes:\n  - match: {{ prefix: / }}\n",
        issuer.issuer(),
        issuer.jwks_uri()
    )
}

/// Verifies tokens with PyJWT (tests/supabase/verify_jwt.py), a library portcullis
/// does not use: one `{"token", "key", "alg", "audience"}` request per token,
/// answered by `{"header", "claims"}` or `{"error"}`.
pub fn pyjwt_verify(requests: &[serde_json::Value]) -> Vec<serde_json::Value> {
    use std::io::Write;
    use std::process::Stdio;
    let python = tools::Python::with("import jwt, cryptography", "pyjwt");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/supabase/verify_jwt.py");
    let mut child =
        python.command().arg(script).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("run verify_jwt.py");
    let mut stdin = child.stdin.take().expect("piped stdin");
    for request in requests {
        writeln!(stdin, "{request}").expect("write to verify_jwt.py");
    }
    drop(stdin);
    let output = child.wait_with_output().expect("verify_jwt.py output");
    assert!(output.status.success(), "verify_jwt.py failed");
    String::from_utf8(output.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

/// A Standard Webhooks signature header value (`v1,<base64>`) for a `whsec_` secret.
pub fn standard_webhook_signature(secret: &str, id: &str, timestamp: u64, body: &str) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let key = STANDARD.decode(secret.trim_start_matches("whsec_")).expect("a whsec_ secret");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
    let tag = aws_lc_rs::hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(tag.as_ref()))
}

/// The CheckRequest Envoy sends for a Standard Webhooks delivery (`webhook-*`
/// headers) of `body` to `path`, signed with `secret` at `timestamp`.
pub fn standard_webhook(path: &str, secret: &str, id: &str, timestamp: u64, body: &str) -> CheckRequest {
    let signature = standard_webhook_signature(secret, id, timestamp, body);
    let timestamp = timestamp.to_string();
    let headers =
        [("webhook-id", id), ("webhook-timestamp", timestamp.as_str()), ("webhook-signature", signature.as_str())];
    let mut check = request("POST", path, &headers);
    let http = check.attributes.as_mut().and_then(|a| a.request.as_mut()).and_then(|r| r.http.as_mut());
    http.expect("an HTTP request").raw_body = body.as_bytes().to_vec();
    check
}
