//! The adversarial review's findings that involve Envoy, proven through a real
//! Envoy 1.40: client -> Envoy -> portcullis -> a recording upstream. Each
//! request below used to reach the upstream; now it is refused and the
//! upstream receives nothing.

mod common;

use std::time::Duration;

use common::envoy::{Envoy, EnvoyOptions, Upstream, raw_request};
use common::*;
use jsonwebtoken::Algorithm;
use portcullis::server::Running;

struct Stack {
    _portcullis: Running,
    upstream: Upstream,
    envoy: Envoy,
}

impl Stack {
    async fn start(config: &str, options: &EnvoyOptions) -> Stack {
        let portcullis = start_ready(config).await;
        let upstream = Upstream::start().await;
        let envoy = Envoy::start(portcullis.authz_addr, &upstream, options).await;
        Stack { _portcullis: portcullis, upstream, envoy }
    }

    #[track_caller]
    fn upstream_untouched(&self) {
        assert_eq!(self.upstream.count(), 0, "the upstream must receive nothing: {:?}", self.upstream.requests());
    }
}

/// Deny rules for `admin.example.com`, `/internal/` and `/odata/$batch`; the rest allowed.
async fn deny_rules_stack(options: &EnvoyOptions) -> Stack {
    let config = format!(
        "{LISTEN_ANY}routes:\n  - {{ match: {{ prefix: /internal/ }}, action: deny }}\n  - {{ match: {{ path: /odata/$batch }}, action: deny }}\n  - {{ match: {{ prefix: /, hosts: [admin.example.com] }}, action: deny }}\n  - {{ match: {{ prefix: / }}, action: allow }}\n"
    );
    Stack::start(&config, options).await
}

// Finding 3: Envoy forwards these Host values verbatim; a backend that cuts the
// authority at the first ':' or ',' or drops userinfo would serve admin.example.com.
#[tokio::test]
async fn malformed_authorities_cannot_dodge_a_host_rule() {
    let stack = deny_rules_stack(&EnvoyOptions::default()).await;
    let hosts: [&[(&str, &str)]; 5] = [
        &[("Host", "admin.example.com:abc")],
        &[("Host", "admin.example.com:443:443")],
        &[("Host", "user@admin.example.com")],
        &[("Host", "admin.example.com:")],
        &[("Host", "admin.example.com"), ("Host", "api.example.com")],
    ];
    for headers in hosts {
        let reply = stack.envoy.raw(&raw_request("GET", "/", headers, "")).await;
        assert_eq!(reply.status, 400, "{headers:?}: {reply:?}");
        assert_eq!(reply.json()["error"], "invalid_request", "{headers:?}");
    }
    let reply = stack.envoy.raw(&raw_request("GET", "/", &[("Host", "admin.example.com:8443")], "")).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    stack.upstream_untouched();
}

// Finding 7: Tomcat, Jetty and Spring serve /internal;x/y as /internal/y.
#[tokio::test]
async fn path_parameters_cannot_dodge_a_prefix_rule() {
    let stack = deny_rules_stack(&EnvoyOptions::default()).await;
    for path in ["/internal;x/y", "/internal;jsessionid=1/y", "/public;x/y"] {
        let reply = stack.envoy.raw(&raw_request("GET", path, &[("Host", "api.example.com")], "")).await;
        assert_eq!(reply.status, 400, "{path}: {reply:?}");
    }
    stack.upstream_untouched();
}

// Finding 6: backends that percent-decode before routing serve /odata/$batch.
#[tokio::test]
async fn escaped_reserved_characters_cannot_dodge_a_path_rule() {
    // Envoy's normalize_path leaves %24 escaped, so with it on or off portcullis decides.
    for normalize_path in [false, true] {
        let stack = deny_rules_stack(&EnvoyOptions { normalize_path, ..Default::default() }).await;
        for path in ["/odata/%24batch", "/odata/%24batch?$top=1", "/%69nternal/x"] {
            let reply = stack.envoy.raw(&raw_request("POST", path, &[("Host", "api.example.com")], "")).await;
            assert_eq!(reply.status, 403, "{path}: {reply:?}");
        }
        stack.upstream_untouched();
    }
}

// Issue 16, finding 5: the decision log's queue was bounded in entries, not
// bytes: behind a stalled reader, denied requests with long paths piled up
// 8192 entries of ~45 KiB each. Fields are now cut at 1 KiB and the queue holds
// at most 4 MiB; the rest is dropped and counted. The reader here is a FIFO the
// test holds open and never reads.
#[tokio::test]
async fn a_stalled_decision_log_reader_holds_a_bounded_queue() {
    const MAX_QUEUED_BYTES: f64 = 4.0 * 1024.0 * 1024.0;
    const REQUESTS: usize = 3600;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("decisions.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    // Read and write: opening never blocks, and the pipe stays open with no one reading it.
    let mut stalled = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let config = format!(
        "{LISTEN_ANY}decision_log: {{ to: {} }}\nroutes:\n  - {{ match: {{ prefix: / }}, action: deny }}\n",
        fifo.display()
    );
    let portcullis = start_ready(&config).await;
    let upstream = Upstream::start().await;
    let envoy = std::sync::Arc::new(Envoy::start(portcullis.authz_addr, &upstream, &EnvoyOptions::default()).await);
    let path = format!("/{}", "a".repeat(4 * 1024));
    let mut sent = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (envoy, path) = (std::sync::Arc::clone(&envoy), path.clone());
        sent.spawn(async move {
            for _ in 0..REQUESTS / 16 {
                assert_eq!(envoy.get(&path, &[]).await.status, 403);
            }
        });
    }
    while let Some(done) = sent.join_next().await {
        done.unwrap();
    }
    assert_eq!(upstream.count(), 0);
    let (status, metrics) = http_get(&format!("http://{}/metrics", portcullis.http_addr)).await;
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        let line = metrics.lines().find(|line| line.starts_with(&format!("{name} ")));
        line.and_then(|line| line.rsplit(' ').next()?.parse().ok()).unwrap_or_else(|| panic!("no {name}"))
    };
    let queued = value("portcullis_decision_log_queued_bytes");
    assert!(queued <= MAX_QUEUED_BYTES, "{queued} bytes queued");
    let dropped = value("portcullis_decision_log_dropped_total");
    assert!(dropped > 0.0, "fewer than 8192 entries, but past the byte bound: some were dropped");
    // What reached the pipe before it filled: valid JSON lines, each path cut and marked.
    let mut written = vec![0; 64 * 1024];
    let read = std::io::Read::read(&mut stalled, &mut written).unwrap();
    let text = String::from_utf8_lossy(&written[..read]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 2, "{text}");
    for line in &lines[..lines.len() - 1] {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(entry["path"].as_str().map(str::len), Some(1024), "{entry}");
        assert_eq!(entry["truncated"], serde_json::json!(["path"]), "{entry}");
    }
    // No reader left: the writer's blocked write fails and the server can stop.
    drop(stalled);
}

// Finding 4: two Cookie lines reach portcullis joined with ',' (or as two raw
// entries); the upstream gets both, and RFC 6265 parsers read the last one.
#[tokio::test]
async fn a_token_cookie_sent_twice_never_reaches_the_upstream() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let config = format!(
        "{LISTEN_ANY}issuers:\n  idp: {{ issuer: \"{}\", jwks_uri: \"{}\", token_from: {{ cookie: session }} }}\nroutes:\n  - match: {{ prefix: / }}\n",
        issuer.issuer(),
        issuer.jwks_uri()
    );
    let valid = key.sign(&issuer.claims("user", "api", 300));
    let forged = SigningKey::generate(Algorithm::RS256, "k").sign(&issuer.claims("admin", "api", 300));
    for encode_raw_headers in [false, true] {
        let stack = Stack::start(&config, &EnvoyOptions { encode_raw_headers, ..Default::default() }).await;
        let one_line = format!("session={valid}; session={forged}");
        let (first, second) = (format!("session={valid}"), format!("session={forged}"));
        let requests: [Vec<(&str, &str)>; 2] = [
            vec![("Host", "api.example.com"), ("Cookie", &one_line)],
            vec![("Host", "api.example.com"), ("Cookie", &first), ("Cookie", &second)],
        ];
        for headers in requests {
            let reply = stack.envoy.raw(&raw_request("GET", "/", &headers, "")).await;
            assert_eq!(reply.status, 400, "raw={encode_raw_headers} {reply:?}");
            let challenge = reply.header("www-authenticate").unwrap_or_default();
            assert!(challenge.starts_with("Bearer error=\"invalid_request\""), "{challenge}");
        }
        stack.upstream_untouched();
        let reply =
            stack.envoy.raw(&raw_request("GET", "/", &[("Host", "api.example.com"), ("Cookie", &first)], "")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
}

// Finding 1: a token with an unknown kid while the IdP is slow. With
// failure_mode_allow: true, a Check that outlived Envoy's timeout let the
// forged request through; now portcullis answers 401 within
// refresh.unknown_kid_wait_ms, long before Envoy gives up.
#[tokio::test]
async fn a_slow_idp_cannot_turn_an_unknown_kid_into_a_fail_open() {
    let key = SigningKey::generate(Algorithm::RS256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let config = format!(
        "{LISTEN_ANY}issuers:\n  idp: {{ issuer: \"{}\", jwks_uri: \"{}\", refresh: {{ unknown_kid_interval_seconds: 0 }} }}\nroutes:\n  - match: {{ prefix: / }}\n",
        issuer.issuer(),
        issuer.jwks_uri()
    );
    let options = EnvoyOptions { failure_mode_allow: true, timeout: Duration::from_secs(2), ..Default::default() };
    let stack = Stack::start(&config, &options).await;
    issuer.set_jwks_delay(Duration::from_secs(30));
    let forged = SigningKey::generate(Algorithm::RS256, "attacker").sign(&issuer.claims("admin", "api", 300));
    let reply = stack.envoy.get("/admin", &[("authorization", &bearer(&forged))]).await;
    assert_eq!(reply.status, 401, "{reply:?}");
    assert!(reply.json()["error_description"].as_str().unwrap().contains("no key with kid"), "{reply:?}");
    stack.upstream_untouched();
}
