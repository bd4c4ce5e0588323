//! In-process cost of one authorization decision, without gRPC or the network.
//!
//! Every scenario runs `Authorizer::decide` against a real policy whose keys
//! were fetched over loopback from a real dev issuer:
//!
//! | id                    | what it measures                                                   |
//! |-----------------------|--------------------------------------------------------------------|
//! | `baseline_rs256`      | bare `jsonwebtoken::decode` of the RS256 token with a prebuilt key  |
//! | `rs256_cache_hit`     | `decide`, valid RS256 token, verified-token cache on (hit path)     |
//! | `rules_cache_hit`     | the same, on a route requiring a scope, a permission, a role and a CEL rule |
//! | `rs256_cache_off`     | `decide`, valid RS256 token, cache off: a signature check per call  |
//! | `es256_cache_off`     | `decide`, valid ES256 token, cache off                               |
//! | `eddsa_cache_off`     | `decide`, valid EdDSA (Ed25519) token, cache off                     |
//! | `garbage_token`       | `decide`, `Bearer` + a non-JWT: the cheapest deny                   |
//! | `wire_rs256_cache_hit`| CheckRequest -> request -> `decide` -> CheckResponse -> protobuf bytes |
//! | `check_rs256_cache_hit` | `Authorizer::check` (what the gRPC handler runs: decide, then metrics and logs) -> protobuf bytes, tracing off |
//! | `check_traced_rs256_cache_hit` | the same with tracing on, sample ratio 1.0, exporting to a collector that is not there |
//! | `check_allow_logged`, `check_deny_logged` | `Authorizer::check` of the cached allow and of a garbage-token deny under a production-like fmt subscriber (info, to a sink) |
//! | `crypto_*`            | the signature check alone: aws-lc-rs with a key parsed once          |
//!
//! jsonwebtoken parses the public key again on every verification; the
//! `crypto_*` rows show what a check costs without that, i.e. how much of
//! the baseline is key setup and JWT decoding rather than the math.
//!
//! `cargo bench --bench check` prints criterion's estimates and, at the end, a
//! table of each scenario's median time per call and its ratio to
//! `baseline_rs256` (the floor for one signature check). Under `cargo test
//! --all-targets` criterion runs each scenario once, as a smoke test.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self, ParsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, Throughput};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest as EnvoyHttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis::admission::Admitted;
use portcullis::authz::Authorizer;
use portcullis::decision::Decision;
use portcullis::dev::{DevIssuer, SigningKey};
use portcullis::face::ext_authz_grpc::{self, check_response};
use portcullis::observe::Observer;
use portcullis::request::HttpRequest;
use portcullis::telemetry::{LogFormat, TraceSettings};
use portcullis::trace::CheckTracing;
use prost::Message;
use serde_json::{Map, Value};
use tokio::runtime::Runtime;

const AUDIENCE: &str = "bench-api";
const HOST: &str = "api.example.com";
const PATH: &str = "/v1/items";
const BASELINE: &str = "baseline_rs256";

/// Per-sample (elapsed, iterations) of every scenario, for the ratio table.
type Samples = Arc<Mutex<BTreeMap<&'static str, Vec<(Duration, u64)>>>>;

struct Fixture {
    _issuer: DevIssuer,
    cached: Authorizer,
    /// Cache on, the route has `require:` (three requirements and one CEL expression).
    ruled: Authorizer,
    uncached: Authorizer,
    /// Cache on, a span per Check (exported when a tracing subscriber is in scope).
    traced: Authorizer,
    /// Where `traced` exports to: a port nothing listens on.
    dead_collector: String,
    rs256: String,
    es256: String,
    eddsa: String,
    rs256_jwk: Jwk,
    es256_jwk: Jwk,
    eddsa_jwk: Jwk,
    issuer_url: String,
}

fn config(issuer: &DevIssuer, cache_tokens: u64, route: &str) -> String {
    format!(
        "listen: {{ authz: 127.0.0.1:0, admin: 127.0.0.1:0, http: 127.0.0.1:0 }}\n\
         cache: {{ tokens: {cache_tokens} }}\n\
         issuers:\n  idp:\n    issuer: {}\n    jwks_uri: {}\n    audiences: [{AUDIENCE}]\n\
         routes:\n  - match: {{ prefix: / }}\n{route}",
        issuer.issuer(),
        issuer.jwks_uri()
    )
}

/// Three requirements and one CEL expression, as issue 10's performance goal names them.
const RULES: &str = "    require:\n      scopes: [items:read]\n      permissions: [items:list]\n      roles: [member]\n      when: 'claims.org_code == request.host.split(\".\")[0]'\n";

/// A policy with its keys loaded (one fetch from the loopback issuer, no refresher).
async fn authorizer(issuer: &DevIssuer, cache_tokens: u64, route: &str) -> Authorizer {
    let policy = portcullis::policy::parse_str(&config(issuer, cache_tokens, route), "bench config")
        .unwrap_or_else(|err| panic!("{err}"));
    for issuer in &policy.issuers {
        issuer.keys.refresh().await.expect("JWKS fetch from the dev issuer");
    }
    Authorizer::new(policy)
}

/// `authorizer` with a span per Check.
fn traced(authorizer: Authorizer) -> Authorizer {
    let policy = Arc::into_inner(authorizer.swap(portcullis::policy::parse_str("routes: []", "empty").unwrap()))
        .expect("the only reference");
    let observer = Observer::new(Arc::clone(authorizer.metrics()), None, Some(CheckTracing::default()));
    Authorizer::with_observer(policy, observer)
}

/// An OTLP endpoint where nothing answers.
fn dead_collector() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    format!("http://{}", closed.local_addr().expect("bound"))
}

impl Fixture {
    /// The service's subscriber with trace export on at sample ratio 1.0 (built inside the runtime).
    fn tracing_subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        let settings = TraceSettings {
            endpoint: self.dead_collector.clone(),
            service_name: None,
            sample_ratio: 1.0,
            subject: false,
        };
        portcullis::telemetry::subscriber(LogFormat::Text, Some((&settings, Default::default()))).0
    }
}

async fn fixture() -> Fixture {
    let rs = SigningKey::generate(Algorithm::RS256, "rs256");
    let es = SigningKey::generate(Algorithm::ES256, "es256");
    let ed = SigningKey::generate(Algorithm::EdDSA, "eddsa");
    let issuer = DevIssuer::start(&[&rs, &es, &ed]).await.expect("dev issuer starts");
    let mut claims = issuer.claims("user-123", AUDIENCE, 3600);
    claims["scope"] = "openid items:read".into();
    claims["permissions"] = serde_json::json!(["items:list", "items:write"]);
    claims["roles"] = serde_json::json!(["member"]);
    claims["org_code"] = "api".into();
    Fixture {
        cached: authorizer(&issuer, 100_000, "").await,
        ruled: authorizer(&issuer, 100_000, RULES).await,
        uncached: authorizer(&issuer, 0, "").await,
        traced: traced(authorizer(&issuer, 100_000, "").await),
        dead_collector: dead_collector(),
        rs256: rs.sign(&claims),
        es256: es.sign(&claims),
        eddsa: ed.sign(&claims),
        rs256_jwk: rs.jwk.clone(),
        es256_jwk: es.jwk.clone(),
        eddsa_jwk: ed.jwk.clone(),
        issuer_url: issuer.issuer().to_string(),
        _issuer: issuer,
    }
}

/// Headers shaped like what Envoy forwards.
fn envoy_headers(authorization: &str) -> Vec<(&'static str, String)> {
    vec![
        (":authority", HOST.into()),
        (":method", "GET".into()),
        (":path", format!("{PATH}?limit=10")),
        (":scheme", "https".into()),
        ("authorization", authorization.into()),
        ("user-agent", "curl/8.5.0".into()),
        ("accept", "*/*".into()),
        ("x-forwarded-proto", "https".into()),
        ("x-request-id", "2f9c0f2e-9b1e-4c1e-9d0e-8d2c3b1a0f11".into()),
    ]
}

fn request(authorization: &str) -> HttpRequest {
    let headers = envoy_headers(authorization);
    HttpRequest::new(
        "GET",
        &format!("{PATH}?limit=10"),
        HOST,
        headers.iter().map(|(name, value)| (*name, value.as_str())),
    )
}

fn check_request(authorization: &str) -> CheckRequest {
    let mut http = EnvoyHttpRequest {
        method: "GET".into(),
        path: format!("{PATH}?limit=10"),
        host: HOST.into(),
        scheme: "https".into(),
        protocol: "HTTP/2".into(),
        ..Default::default()
    };
    http.headers.extend(envoy_headers(authorization).into_iter().map(|(name, value)| (name.to_string(), value)));
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request { http: Some(http), ..Default::default() }),
            ..Default::default()
        }),
    }
}

fn is_allow(decision: &Decision) -> bool {
    matches!(decision, Decision::Allow(_))
}

/// Times `iters` sequential decisions inside one `block_on`, and records the sample.
fn time_decisions(runtime: &Runtime, authorizer: &Authorizer, request: &HttpRequest, iters: u64) -> Duration {
    runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(authorizer.decide(black_box(request)).await);
        }
        start.elapsed()
    })
}

fn record(samples: &Samples, id: &'static str, elapsed: Duration, iters: u64) -> Duration {
    samples.lock().expect("samples lock").entry(id).or_default().push((elapsed, iters));
    elapsed
}

fn benches(c: &mut Criterion, runtime: &Runtime, fixture: &Fixture, samples: &Samples) {
    // Sanity: every scenario decides what it claims to (functional, not timing).
    let valid_rs = request(&format!("Bearer {}", fixture.rs256));
    let valid_es = request(&format!("Bearer {}", fixture.es256));
    let valid_ed = request(&format!("Bearer {}", fixture.eddsa));
    let garbage = request("Bearer not-a-jwt");
    runtime.block_on(async {
        for (authorizer, request, allow) in [
            (&fixture.cached, &valid_rs, true),
            (&fixture.ruled, &valid_rs, true),
            (&fixture.uncached, &valid_rs, true),
            (&fixture.uncached, &valid_es, true),
            (&fixture.uncached, &valid_ed, true),
            (&fixture.uncached, &garbage, false),
        ] {
            let decision = authorizer.decide(request).await;
            assert_eq!(is_allow(&decision), allow, "{decision:?}");
        }
    });

    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(1));

    let key = DecodingKey::from_jwk(&fixture.rs256_jwk).expect("RS256 JWK");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[&fixture.issuer_url]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    jsonwebtoken::decode::<Map<String, Value>>(&fixture.rs256, &key, &validation).expect("baseline token verifies");
    group.bench_function(BASELINE, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(
                    jsonwebtoken::decode::<Map<String, Value>>(black_box(&fixture.rs256), &key, &validation).is_ok(),
                );
            }
            record(samples, BASELINE, start.elapsed(), iters)
        });
    });

    let scenarios: [(&'static str, &Authorizer, &HttpRequest); 6] = [
        ("rs256_cache_hit", &fixture.cached, &valid_rs),
        ("rules_cache_hit", &fixture.ruled, &valid_rs),
        ("rs256_cache_off", &fixture.uncached, &valid_rs),
        ("es256_cache_off", &fixture.uncached, &valid_es),
        ("eddsa_cache_off", &fixture.uncached, &valid_ed),
        ("garbage_token", &fixture.uncached, &garbage),
    ];
    for (id, authorizer, request) in scenarios {
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let elapsed = time_decisions(runtime, authorizer, request, iters);
                record(samples, id, elapsed, iters)
            });
        });
    }

    // What the gRPC handler does around the decision, minus HTTP/2 and tonic.
    let wire = check_request(&format!("Bearer {}", fixture.rs256));
    for (id, authorizer) in
        [("check_rs256_cache_hit", &fixture.cached), ("check_traced_rs256_cache_hit", &fixture.traced)]
    {
        let tracing = {
            let _exporter_needs_the_runtime = runtime.enter();
            tracing::Dispatch::new(fixture.tracing_subscriber())
        };
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let run = || {
                    runtime.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            black_box(
                                ext_authz_grpc::check(authorizer, black_box(&wire), Admitted(true))
                                    .await
                                    .encode_to_vec(),
                            );
                        }
                        start.elapsed()
                    })
                };
                // Only the traced scenario runs under the exporting subscriber.
                let elapsed =
                    if id.contains("traced") { tracing::dispatcher::with_default(&tracing, run) } else { run() };
                record(samples, id, elapsed, iters)
            });
        });
    }
    // The same two paths under a production-like fmt subscriber (info, trace
    // spans off, writing to a sink): an allow, and a deny, whose log line is
    // budgeted (10 a second) where it used to be written for every deny.
    let logged = tracing::Dispatch::new(
        tracing_subscriber::fmt().with_writer(std::io::sink).with_env_filter("info,portcullis::trace=off").finish(),
    );
    let garbage_wire = check_request("Bearer not-a-jwt");
    for (id, request) in [("check_allow_logged", &wire), ("check_deny_logged", &garbage_wire)] {
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let elapsed = tracing::dispatcher::with_default(&logged, || {
                    runtime.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            black_box(
                                ext_authz_grpc::check(&fixture.cached, black_box(request), Admitted(true))
                                    .await
                                    .encode_to_vec(),
                            );
                        }
                        start.elapsed()
                    })
                });
                record(samples, id, elapsed, iters)
            });
        });
    }
    group.bench_function("wire_rs256_cache_hit", |b| {
        b.iter_custom(|iters| {
            let elapsed = runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let decision = ext_authz_grpc::decide_check(&fixture.cached, black_box(&wire)).await;
                    black_box(check_response(&decision).encode_to_vec());
                }
                start.elapsed()
            });
            record(samples, "wire_rs256_cache_hit", elapsed, iters)
        });
    });
    for (id, token, alg, key) in [
        ("crypto_rs256", &fixture.rs256, &signature::RSA_PKCS1_2048_8192_SHA256 as _, &fixture.rs256_jwk),
        ("crypto_es256", &fixture.es256, &signature::ECDSA_P256_SHA256_FIXED as _, &fixture.es256_jwk),
        ("crypto_eddsa", &fixture.eddsa, &signature::ED25519 as _, &fixture.eddsa_jwk),
    ] {
        let key = ParsedPublicKey::new(alg, public_key_bytes(key)).expect("public key parses");
        let (signing_input, signature) = token.rsplit_once('.').expect("three parts");
        let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url signature");
        key.verify_sig(signing_input.as_bytes(), &signature).expect("signature verifies");
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(key.verify_sig(black_box(signing_input.as_bytes()), &signature).is_ok());
                }
                record(samples, id, start.elapsed(), iters)
            });
        });
    }
    group.finish();
}

/// The raw public key aws-lc-rs takes: PKCS#1 RSAPublicKey, SEC1 point, or the Ed25519 bytes.
fn public_key_bytes(jwk: &Jwk) -> Vec<u8> {
    let b64 = |text: &str| URL_SAFE_NO_PAD.decode(text).expect("base64url JWK member");
    match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => der_sequence(&[der_integer(&b64(&rsa.n)), der_integer(&b64(&rsa.e))]),
        AlgorithmParameters::EllipticCurve(ec) => [vec![4], b64(&ec.x), b64(&ec.y)].concat(),
        AlgorithmParameters::OctetKeyPair(okp) => b64(&okp.x),
        other => panic!("no raw public key for {other:?}"),
    }
}

fn der_length(len: usize) -> Vec<u8> {
    match len {
        0..0x80 => vec![len as u8],
        0x80..0x100 => vec![0x81, len as u8],
        _ => vec![0x82, (len >> 8) as u8, len as u8],
    }
}

fn der_integer(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude.iter().position(|&byte| byte != 0).unwrap_or(magnitude.len() - 1);
    let mut body = magnitude[start..].to_vec();
    if body[0] & 0x80 != 0 {
        body.insert(0, 0);
    }
    [vec![0x02], der_length(body.len()), body].concat()
}

fn der_sequence(items: &[Vec<u8>]) -> Vec<u8> {
    let body = items.concat();
    [vec![0x30], der_length(body.len()), body].concat()
}

/// Median nanoseconds per call across samples (robust to the warm-up batches).
fn median_ns(samples: &[(Duration, u64)]) -> f64 {
    let mut per_call: Vec<f64> = samples
        .iter()
        .filter(|(_, iters)| *iters > 0)
        .map(|(elapsed, iters)| elapsed.as_nanos() as f64 / *iters as f64)
        .collect();
    per_call.sort_by(f64::total_cmp);
    match per_call.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => per_call[n / 2],
        n => (per_call[n / 2 - 1] + per_call[n / 2]) / 2.0,
    }
}

fn human(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

fn print_ratios(samples: &Samples) {
    let samples = samples.lock().expect("samples lock");
    let baseline = samples.get(BASELINE).map(|s| median_ns(s));
    println!("\nportcullis decide: median per call, ratio vs {BASELINE} (jsonwebtoken::decode, prebuilt key)");
    println!("| scenario | median / call | calls/s (1 core) | x baseline |");
    println!("|---|---:|---:|---:|");
    let order = [
        BASELINE,
        "rs256_cache_hit",
        "rules_cache_hit",
        "rs256_cache_off",
        "es256_cache_off",
        "eddsa_cache_off",
        "garbage_token",
        "wire_rs256_cache_hit",
        "check_rs256_cache_hit",
        "check_traced_rs256_cache_hit",
        "check_allow_logged",
        "check_deny_logged",
        "crypto_rs256",
        "crypto_es256",
        "crypto_eddsa",
    ];
    for id in order {
        let Some(runs) = samples.get(id) else { continue };
        let ns = median_ns(runs);
        let ratio = baseline.map_or("-".to_string(), |base| format!("{:.3}", ns / base));
        println!("| {id} | {} | {:.0} | {ratio} |", human(ns), 1e9 / ns);
    }
    let median = |id: &str| samples.get(id).map(|runs| median_ns(runs));
    if let (Some(traced), Some(untraced)) = (median("check_traced_rs256_cache_hit"), median("check_rs256_cache_hit")) {
        println!(
            "\ncheck_traced_rs256_cache_hit / check_rs256_cache_hit = {:.2} (a cached allow with tracing on vs off)",
            traced / untraced
        );
    }
    if let (Some(rules), Some(plain)) = (median("rules_cache_hit"), median("rs256_cache_hit")) {
        println!(
            "\nrules_cache_hit / rs256_cache_hit = {:.2} (a cached allow with requirements vs without)",
            rules / plain
        );
    }
}

fn main() {
    // Bench mode only under `cargo bench` (criterion: `--bench` without `--test`).
    let args: Vec<String> = std::env::args().collect();
    let bench_mode = args.iter().any(|arg| arg == "--bench") && !args.iter().any(|arg| arg == "--test");

    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio runtime");
    let fixture = runtime.block_on(fixture());
    let samples = Samples::default();

    // About 5 s per scenario (1 s warm-up + 3 s of samples + analysis); 10 scenarios.
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .configure_from_args();
    benches(&mut criterion, &runtime, &fixture, &samples);
    criterion.final_summary();
    if bench_mode {
        print_ratios(&samples);
    }
}
