//! Seeing every decision: the decision log (one JSON line per decision), the
//! deny-line budget, and OpenTelemetry traces received by an in-test OTLP
//! collector (the real OTLP trace service from the opentelemetry-proto
//! definitions) from the real binary, continuing the request's `traceparent`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;
use jsonwebtoken::Algorithm;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use portcullis::policy::Runtime;
use portcullis::token::{digest, fingerprint};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_SPAN}-01")
}

fn routes(issuer: &DevIssuer) -> String {
    format!(
        "issuers:\n  idp: {{ issuer: \"{}\", jwks_uri: \"{}\" }}\n\
         backends:\n  db: {{ type: supabase, apikey: anon-key, mode: remint, signing_key: {SECRET} }}\n\
         routes:\n  - name: api\n    match: {{ prefix: /api/ }}\n  - name: rest\n    match: {{ prefix: /rest/v1/ }}\n    backend: db\n",
        issuer.issuer(),
        issuer.jwks_uri()
    )
}

// ---------------------------------------------------------------- decision log

#[tokio::test]
async fn the_decision_log_has_one_parseable_line_per_decision_saying_why() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("decisions.jsonl");
    let config = format!("{LISTEN_ANY}decision_log: {{ to: \"{}\" }}\n{}", log_path.display(), routes(&issuer));
    let running = start_ready(&config).await;
    let mut client = client(&running).await;
    let valid = key.sign(&issuer.claims("alice", "x", 600));
    let expired = key.sign(&issuer.claims("bob", "x", -3600));
    let traced = [("authorization", bearer(&valid)), ("traceparent", traceparent()), ("x-request-id", "req-7".into())];
    let traced: Vec<(&str, &str)> = traced.iter().map(|(name, value)| (*name, value.as_str())).collect();
    assert_allowed(&check(&mut client, request("GET", "/api/items", &traced)).await);
    assert_allowed(&check_token(&mut client, "/api/items?access_token=secret-in-query", &valid).await);
    assert_denied(&check_token(&mut client, "/api/items", &expired).await, 401);
    assert_denied(&check(&mut client, request("GET", "/api/items", &[])).await, 401);
    assert_denied(&check(&mut client, request("GET", "/nowhere", &[])).await, 403);
    running.authorizer.observer.decision_log().expect("configured").flush().await;

    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> =
        text.lines().map(|line| serde_json::from_str(line).expect("one JSON object per line")).collect();
    assert_eq!(lines.len(), 5, "{text}");
    for line in &lines {
        for field in [
            "time",
            "face",
            "route",
            "issuer",
            "sub",
            "decision",
            "reason",
            "status",
            "latency_us",
            "cache_hit",
            "token_fp",
            "trace_id",
        ] {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
        assert!(line["latency_us"].as_f64().unwrap() >= 0.0);
    }
    let (first, second, expired_line, missing, no_route) = (&lines[0], &lines[1], &lines[2], &lines[3], &lines[4]);
    assert_eq!(first["face"], "ext_authz_grpc");
    assert_eq!(first["route"], "api");
    assert_eq!(first["issuer"], "idp");
    assert_eq!(first["sub"], "alice");
    assert_eq!(
        (first["decision"].as_str(), first["reason"].as_str(), first["status"].as_u64()),
        (Some("allow"), Some("ok"), Some(200))
    );
    assert_eq!(first["cache_hit"], false);
    assert_eq!(first["token_fp"], fingerprint(&digest(&valid)));
    assert_eq!(first["trace_id"], TRACE_ID);
    assert_eq!(first["request_id"], "req-7");
    assert_eq!(second["cache_hit"], true, "the same token again comes from the cache");
    assert_eq!(second["trace_id"], Value::Null, "no traceparent, no trace id");
    assert_eq!(second["path"], "/api/items", "the query string is never logged");
    assert_eq!((expired_line["decision"].as_str(), expired_line["reason"].as_str()), (Some("deny"), Some("expired")));
    assert_eq!(expired_line["status"], 401);
    assert!(expired_line["detail"].as_str().unwrap().contains("expired"), "why, in words: {expired_line}");
    assert_eq!(expired_line["token_fp"], fingerprint(&digest(&expired)));
    assert_eq!(missing["reason"], "missing_token");
    assert_eq!(missing["token_fp"], Value::Null);
    assert_eq!((no_route["route"].clone(), no_route["reason"].as_str()), (Value::Null, Some("no_route")));
    for secret in [valid.as_str(), expired.as_str(), "secret-in-query", SECRET] {
        assert!(!text.contains(secret), "never a token or secret in the decision log");
    }
}

#[tokio::test]
async fn sampling_keeps_every_deny_and_the_configured_share_of_allows() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("decisions.jsonl");
    let config = format!(
        "{LISTEN_ANY}decision_log: {{ to: \"{}\", sample: 0.25, denies: all }}\n{}",
        log_path.display(),
        routes(&issuer)
    );
    let running = start_ready(&config).await;
    let mut client = client(&running).await;
    let valid = key.sign(&issuer.claims("alice", "x", 600));
    for _ in 0..20 {
        assert_allowed(&check_token(&mut client, "/api/x", &valid).await);
        assert_denied(&check(&mut client, request("GET", "/api/x", &[])).await, 401);
    }
    running.authorizer.observer.decision_log().unwrap().flush().await;
    let text = std::fs::read_to_string(&log_path).unwrap();
    let decisions: Vec<String> = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["decision"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(decisions.iter().filter(|decision| *decision == "deny").count(), 20);
    assert_eq!(decisions.iter().filter(|decision| *decision == "allow").count(), 5, "a quarter of 20 allows");
}

#[tokio::test]
async fn deny_lines_stay_within_their_budget_and_the_rest_are_counted() {
    let clock = clock_now();
    let config = format!(
        "{LISTEN_ANY}issuers:\n  local: {{ issuer: https://local.test, secret: {SECRET} }}\nroutes:\n  - name: api\n    match: {{ prefix: / }}\n"
    );
    let running = start_with_clock(&config, clock.clone()).await;
    let mut client = client(&running).await;
    let suppressed = || running.authorizer.metrics().deny_log_suppressed.get();
    for _ in 0..25 {
        assert_denied(&check(&mut client, request("GET", "/", &[])).await, 401);
    }
    let budget = u64::from(portcullis::observe::DENY_LINES_PER_SECOND);
    assert_eq!(suppressed(), 25 - budget, "one clock second: {budget} lines, the rest counted");
    clock.advance(1);
    assert_denied(&check(&mut client, request("GET", "/", &[])).await, 401);
    assert_eq!(suppressed(), 25 - budget, "a new second has room again");
    let checks = running.authorizer.metrics().render(None, Default::default()).1;
    assert!(checks.contains(
        "portcullis_checks_total{route=\"api\",decision=\"deny\",reason=\"missing_token\",face=\"ext_authz_grpc\"} 26"
    ));
}

// ---------------------------------------------------------------- traces

/// A span as received, with its resource's attributes.
type Received = (Span, Vec<(String, String)>);

/// An OTLP/gRPC trace collector: keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans.resource.map(|resource| attributes(&resource.attributes)).unwrap_or_default();
            for scope in resource_spans.scope_spans {
                let mut spans = self.spans.lock().unwrap();
                spans.extend(scope.spans.into_iter().map(|span| (span, resource.clone())));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    async fn start() -> (Collector, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (collector, format!("http://{addr}"))
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

fn attributes(list: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> Vec<(String, String)> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|value| value.value.clone()) {
                Some(AnyValue::StringValue(text)) => text,
                Some(AnyValue::BoolValue(flag)) => flag.to_string(),
                Some(AnyValue::IntValue(number)) => number.to_string(),
                Some(AnyValue::DoubleValue(number)) => number.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The real binary, serving `config` with `env`; its stderr lines are kept.
struct Served {
    child: Child,
    authz: String,
    http: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Served {
    fn start(config: &str, env: &[(&str, &str)]) -> (Served, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.yaml");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new(BIN);
        command.args(["--log-format", "json", "serve", "--config", path.to_str().unwrap()]);
        for name in ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_SAMPLER_ARG"] {
            command.env_remove(name);
        }
        let mut child = command.envs(env.iter().copied()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (addrs_tx, addrs_rx) = std::sync::mpsc::channel();
        let kept = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && event["message"] == "portcullis listening"
                {
                    let addrs =
                        (event["authz"].as_str().unwrap().to_string(), event["http"].as_str().unwrap().to_string());
                    let _ = addrs_tx.send(addrs);
                }
                kept.lock().unwrap().push(line);
            }
        });
        let (authz, http) = addrs_rx.recv_timeout(std::time::Duration::from_secs(30)).expect("listening log line");
        (Served { child, authz, http, lines }, dir)
    }

    async fn ready(&self) {
        for _ in 0..750 {
            if http_get(&format!("http://{}/readyz", self.http)).await.0 == 200 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("never ready: {:?}", self.lines.lock().unwrap());
    }

    /// SIGTERM, which flushes queued spans; the exit code must be 0.
    async fn stop(mut self) -> Vec<String> {
        let killed = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(killed.success());
        let status = tokio::task::spawn_blocking(move || self.child.wait()).await.unwrap().unwrap();
        assert_eq!(status.code(), Some(0));
        self.lines.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_check_span_continues_the_requests_trace_with_its_decision_and_no_token() {
    let (collector, endpoint) = Collector::start().await;
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let config = format!("{LISTEN_ANY}telemetry: {{ service_name: edge-authz }}\n{}", routes(&issuer));
    let (served, _dir) = Served::start(&config, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    served.ready().await;
    let mut client = client_at(&served.authz).await;
    let valid = key.sign(&issuer.claims("alice", "x", 600));
    let expired = key.sign(&issuer.claims("bob", "x", -3600));
    let with_trace = |token: &str| {
        let headers =
            [("authorization", bearer(token)), ("traceparent", traceparent()), ("tracestate", "vendor=x".into())];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
        request("GET", "/rest/v1/items", &headers)
    };
    assert_allowed(&check(&mut client, with_trace(&valid)).await);
    assert_denied(&check(&mut client, with_trace(&expired)).await, 401);
    let lines = served.stop().await;

    let spans = collector.spans();
    let checks: Vec<_> = spans.iter().filter(|(span, _)| span.name == "ext_authz check").collect();
    assert_eq!(
        checks.len(),
        2,
        "one span per Check: {:?}",
        spans.iter().map(|(span, _)| &span.name).collect::<Vec<_>>()
    );
    for (span, resource) in &checks {
        assert_eq!(hex(&span.trace_id), TRACE_ID, "continues the request's trace");
        assert_eq!(hex(&span.parent_span_id), PARENT_SPAN, "as a child of Envoy's span");
        assert!(resource.contains(&("service.name".into(), "edge-authz".into())), "{resource:?}");
    }
    let attrs = |span: &Span| attributes(&span.attributes).into_iter().collect::<BTreeMap<_, _>>();
    let allow = attrs(&checks[0].0);
    assert_eq!(allow.get("portcullis.face").map(String::as_str), Some("ext_authz_grpc"));
    assert_eq!(allow.get("portcullis.route").map(String::as_str), Some("rest"));
    assert_eq!(allow.get("portcullis.decision").map(String::as_str), Some("allow"));
    assert_eq!(allow.get("portcullis.issuer").map(String::as_str), Some("idp"));
    assert_eq!(allow.get("portcullis.backend").map(String::as_str), Some("db"));
    assert_eq!(allow.get("portcullis.cache_hit").map(String::as_str), Some("false"));
    assert_eq!(allow.get("http.response.status_code").map(String::as_str), Some("200"));
    assert!(!allow.contains_key("enduser.id"), "sub only when telemetry.subject is on");
    let deny = attrs(&checks[1].0);
    assert_eq!(deny.get("portcullis.decision").map(String::as_str), Some("deny"));
    assert_eq!(deny.get("portcullis.deny_reason").map(String::as_str), Some("expired"));
    assert_eq!(deny.get("http.response.status_code").map(String::as_str), Some("401"));

    let allow_span = &checks[0].0;
    let mint = spans.iter().find(|(span, _)| span.name == "supabase mint").expect("a span for the mint");
    assert_eq!(mint.0.parent_span_id, allow_span.span_id, "the mint is a child of its Check");
    assert!(spans.iter().any(|(span, _)| span.name == "jwks fetch"), "key fetches are traced");
    let everything = format!("{spans:?}");
    for secret in [valid.as_str(), expired.as_str(), SECRET, "anon-key"] {
        assert!(!everything.contains(secret), "never a token or secret in a span");
    }
    assert!(lines.iter().any(|line| line.contains("exporting traces")), "{lines:?}");
}

#[tokio::test]
async fn telemetry_subject_puts_sub_on_the_span_and_an_unsampled_parent_is_followed() {
    let (collector, endpoint) = Collector::start().await;
    let config = format!(
        "{LISTEN_ANY}telemetry: {{ otlp_endpoint: \"{endpoint}\", subject: true }}\nissuers:\n  local: {{ issuer: https://local.test, secret: {SECRET} }}\nroutes:\n  - name: api\n    match: {{ prefix: / }}\n"
    );
    let (served, _dir) = Served::start(&config, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")]);
    served.ready().await;
    let mut client = client_at(&served.authz).await;
    let claims = serde_json::json!({ "iss": "https://local.test", "sub": "carol", "exp": 4_000_000_000u64 });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let unsampled = format!("00-{TRACE_ID}-{PARENT_SPAN}-00");
    let bearer_token = bearer(&token);
    assert_allowed(&check(&mut client, request("GET", "/", &[("authorization", &bearer_token)])).await);
    assert_allowed(
        &check(&mut client, request("GET", "/", &[("authorization", &bearer_token), ("traceparent", &unsampled)]))
            .await,
    );
    served.stop().await;
    let checks: Vec<_> = collector.spans().into_iter().filter(|(span, _)| span.name == "ext_authz check").collect();
    assert_eq!(checks.len(), 1, "the config's endpoint wins, and the unsampled trace stays unsampled");
    let attrs: BTreeMap<_, _> = attributes(&checks[0].0.attributes).into_iter().collect();
    assert_eq!(attrs.get("enduser.id").map(String::as_str), Some("carol"));
    assert_ne!(hex(&checks[0].0.trace_id), TRACE_ID, "no traceparent: a new trace");
    assert!(checks[0].0.parent_span_id.is_empty());
}

#[tokio::test]
async fn an_unreachable_collector_changes_no_decision_and_drops_spans_with_a_count() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let config = format!(
        "{LISTEN_ANY}issuers:\n  local: {{ issuer: https://local.test, secret: {SECRET} }}\nroutes:\n  - name: api\n    match: {{ prefix: / }}\n"
    );
    let (served, _dir) = Served::start(&config, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    served.ready().await;
    let mut client = client_at(&served.authz).await;
    let claims = serde_json::json!({ "iss": "https://local.test", "sub": "dave", "exp": 4_000_000_000u64 });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    for _ in 0..50 {
        assert_allowed(&check_token(&mut client, "/", &token).await);
        assert_denied(&check(&mut client, request("GET", "/", &[])).await, 401);
    }
    let metrics_url = format!("http://{}/metrics", served.http);
    let dropped = || async {
        let body = http_get(&metrics_url).await.1;
        body.lines()
            .find_map(|line| line.strip_prefix("portcullis_tracing_spans_dropped_total "))
            .map(|value| value.parse::<f64>().unwrap())
            .unwrap_or(0.0)
    };
    let mut counted = 0.0;
    for _ in 0..500 {
        counted = dropped().await;
        if counted > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(counted > 0.0, "failed exports are counted as dropped spans");
    served.stop().await;
}

#[tokio::test]
async fn bad_observability_config_names_its_path() {
    let config = format!(
        "{LISTEN_ANY}decision_log: {{ to: \"\", sample: 1.5, denies: some }}\ntelemetry: {{ otlp_endpoint: \"collector:4317\", sample_ratio: -1 }}\nroutes: []\n"
    );
    let err = portcullis::policy::compile_text(&config, "t", &Runtime::default(), None).unwrap_err().to_string();
    assert!(err.contains("decision_log.denies"), "{err}");
    let config = format!(
        "{LISTEN_ANY}decision_log: {{ to: \"\", sample: 1.5 }}\ntelemetry: {{ otlp_endpoint: \"collector:4317\", sample_ratio: -1 }}\nroutes: []\n"
    );
    let err = portcullis::policy::compile_text(&config, "t", &Runtime::default(), None).unwrap_err().to_string();
    for expected in [
        "decision_log.sample: must be between 0 and 1",
        "decision_log.to: must be `stdout` or a file path",
        "telemetry.sample_ratio: must be between 0 and 1",
        "telemetry.otlp_endpoint: must be an http:// or https:// URL",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in {err}");
    }
}
