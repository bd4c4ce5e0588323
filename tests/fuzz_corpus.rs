//! Every committed fuzz input replayed on the stable toolchain through the same
//! harness the fuzz targets run (fuzz/harness), so the seeds and every crash
//! ever found (fuzz/regressions) stay fixed without nightly or libFuzzer. A
//! missing or empty corpus fails: a target nobody seeded is a target nobody fuzzes.
//!
//! `write_seeds` (ignored) regenerates the seed inputs from real shapes: tokens
//! signed by the fixture keys, CheckRequests like the integration tests send,
//! the example configs, real JWKS documents. See docs/reliability.md.

#[path = "../fuzz/harness/mod.rs"]
mod harness;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.map(|entry| entry.expect("a directory entry").path()).filter(|path| path.is_file()).collect();
    files.sort();
    files.into_iter().map(|path| (path.clone(), std::fs::read(&path).expect("a readable input"))).collect()
}

fn replay(target: &str, run: fn(&[u8])) {
    let corpus = inputs(&fuzz_dir().join("corpus").join(target));
    assert!(!corpus.is_empty(), "fuzz/corpus/{target} is missing or empty");
    let regressions = inputs(&fuzz_dir().join("regressions").join(target));
    let failed: Vec<String> = corpus
        .iter()
        .chain(&regressions)
        .filter(|(_, data)| catch_unwind(AssertUnwindSafe(|| run(data))).is_err())
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: inputs that break an invariant: {failed:#?}");
}

#[test]
fn token_corpus() {
    replay("token", harness::token::run);
}

#[test]
fn check_corpus() {
    replay("check", harness::check::run);
}

#[test]
fn config_corpus() {
    replay("config", harness::config::run);
}

#[test]
fn claim_paths_corpus() {
    replay("claim_paths", harness::claim_paths::run);
}

#[test]
fn jwks_corpus() {
    replay("jwks", harness::jwks::run);
}

/// The seed file `fuzz/corpus/<target>/seed-<name>`.
fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = fuzz_dir().join("corpus").join(target).join(format!("seed-{name}"));
    std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The token fixture still accepts what it should, so the target explores
/// accepted tokens too and not only refusals.
#[test]
fn token_seeds_meet_the_fixture() {
    let accepted =
        ["hs256", "hs256-hasura", "rs256", "ps256", "es256", "eddsa", "aud-list", "signed-valid", "signed-kid"];
    for name in accepted {
        assert!(harness::token::accepts(&seed("token", name)), "seed-{name} is refused");
    }
    for name in ["alg-none", "crit", "expired", "wrong-aud", "two-parts", "signed-no-exp", "signed-hs512"] {
        assert!(!harness::token::accepts(&seed("token", name)), "seed-{name} is accepted");
    }
}

/// The check fixture still allows a verified caller on every route, so the
/// target reaches each backend's header mutations.
#[test]
fn check_seeds_reach_every_route() {
    use harness::fixtures::Answer;

    let expected = [
        ("health", "health"),
        ("graphql-hs", "graphql"),
        ("graphql-kinde", "graphql"),
        ("graphql-anon", "graphql-anon"),
        ("rest-hs", "rest"),
        ("rest-cookie", "rest"),
        ("rest-anon", "rest"),
        ("pass-hs", "pass"),
        ("api", "api"),
        ("api-subdomain", "api"),
        ("admin", "admin"),
        ("servlet", "servlet"),
        ("raw-headers", "graphql"),
    ];
    for (name, route) in expected {
        let check = check_request(&seed("check", name));
        match harness::check::decide(&check) {
            Answer::Allowed(allowed) => assert_eq!(allowed.metadata["route"], route, "seed-{name}"),
            denied => panic!("seed-{name} is denied: {denied:?}"),
        }
    }
    for name in ["blocked", "no-route", "graphql-no-token", "graphql-bad-role", "admin-delete", "dot-segments"] {
        let check = check_request(&seed("check", name));
        assert!(matches!(harness::check::decide(&check), Answer::Denied { .. }), "seed-{name} is allowed");
    }
}

/// The crash input `fuzz/regressions/<target>/<name>`.
fn regression(target: &str, name: &str) -> Vec<u8> {
    let path = fuzz_dir().join("regressions").join(target).join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// A CheckRequest from the `check` target's inputs.
fn check_request(data: &[u8]) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    prost::Message::decode(data).expect("a CheckRequest")
}

// Crashes the campaigns found, each fixed in src/ and replayed here by name.

/// `check`: a client header `x-hasura-usa\0\0\0d` on an anonymous Hasura route
/// came back as a `headers_to_remove` entry Envoy cannot apply. A header name
/// that is not a token is now refused before routing.
#[test]
fn check_regression_header_name_with_nul() {
    let answer = harness::check::decide(&check_request(&regression("check", "header-name-with-nul")));
    assert!(matches!(answer, harness::fixtures::Answer::Denied { status: 400 }), "{answer:?}");
}

/// Seed inputs from real shapes (`cargo test --test fuzz_corpus -- --ignored`),
/// written as `fuzz/corpus/<target>/seed-<name>`; `cargo fuzz cmin` then keeps
/// those that add coverage.
#[test]
#[ignore = "writes seed inputs into fuzz/corpus; run by hand, then minimise"]
fn write_seeds() {
    for (target, seeds) in [
        ("token", seeds::tokens()),
        ("check", seeds::checks()),
        ("config", seeds::configs()),
        ("claim_paths", seeds::claim_paths()),
        ("jwks", seeds::jwks()),
    ] {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
        }
    }
}

mod seeds {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use prost::Message;
    use serde_json::{Value, json};

    use super::harness::check::{COOKIE_ISSUER, TOKEN_COOKIE};
    use super::harness::fixtures::{self, HS_SECRET, NOW};
    use super::harness::token::{AUDIENCE, EC_ISSUER, HS_ISSUER, RSA_ISSUER};

    type Seeds = Vec<(String, Vec<u8>)>;

    fn key(alg: Algorithm) -> EncodingKey {
        match alg {
            Algorithm::HS256 => Ok(EncodingKey::from_secret(HS_SECRET.as_bytes())),
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(fixtures::RSA_PRIVATE_PEM.as_bytes()),
            Algorithm::ES256 => EncodingKey::from_ec_pem(fixtures::EC_PRIVATE_PEM.as_bytes()),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(fixtures::ED_PRIVATE_PEM.as_bytes()),
            other => panic!("no fixture key for {other:?}"),
        }
        .unwrap()
    }

    fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &key(alg)).unwrap()
    }

    fn claims(iss: &str, aud: &str, extra: Value) -> Value {
        let mut claims = json!({"iss": iss, "sub": "user-1", "aud": aud, "iat": NOW, "exp": NOW + 600});
        for (name, value) in extra.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    }

    fn hasura_claims() -> Value {
        json!({"https://hasura.io/jwt/claims": {
            "x-hasura-allowed-roles": ["user", "editor"], "x-hasura-default-role": "user", "X-Hasura-User-Id": "42"
        }})
    }

    pub fn tokens() -> Seeds {
        let raw = |token: String| [&[0u8][..], token.as_bytes()].concat();
        let signed = |header: Value, payload: Value| format!("\u{1}{header}\n{payload}").into_bytes();
        let part = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
        let ok = claims(HS_ISSUER, AUDIENCE, json!({}));
        vec![
            ("hs256".into(), raw(sign(Algorithm::HS256, None, &ok))),
            (
                "hs256-hasura".into(),
                raw(sign(Algorithm::HS256, Some("k"), &claims(HS_ISSUER, AUDIENCE, hasura_claims()))),
            ),
            ("rs256".into(), raw(sign(Algorithm::RS256, Some("rsa"), &claims(RSA_ISSUER, "hasura", json!({}))))),
            ("ps256".into(), raw(sign(Algorithm::PS256, None, &claims(RSA_ISSUER, AUDIENCE, json!({}))))),
            ("es256".into(), raw(sign(Algorithm::ES256, None, &claims(EC_ISSUER, "any", json!({"nbf": NOW}))))),
            ("eddsa".into(), raw(sign(Algorithm::EdDSA, None, &claims("https://anyone.test", "x", json!({}))))),
            (
                "expired".into(),
                raw(sign(Algorithm::HS256, None, &claims(HS_ISSUER, AUDIENCE, json!({"exp": NOW - 31})))),
            ),
            ("wrong-aud".into(), raw(sign(Algorithm::HS256, None, &claims(HS_ISSUER, "other", json!({}))))),
            (
                "aud-list".into(),
                raw(sign(Algorithm::HS256, None, &claims(HS_ISSUER, AUDIENCE, json!({"aud": ["x", AUDIENCE]})))),
            ),
            ("alg-none".into(), raw(format!("{}.{}.", part(&json!({"alg": "none"})), part(&ok)))),
            ("crit".into(), raw(format!("{}.{}.c2ln", part(&json!({"alg": "HS256", "crit": ["b64"]})), part(&ok)))),
            ("two-parts".into(), raw("eyJhbGciOiJIUzI1NiJ9.e30".into())),
            ("signed-valid".into(), signed(json!({"alg": "HS256", "typ": "JWT"}), ok.clone())),
            (
                "signed-kid".into(),
                signed(
                    json!({"alg": "HS256", "kid": "k1"}),
                    claims(HS_ISSUER, AUDIENCE, json!({"nbf": NOW + 10, "iat": NOW as f64 + 0.5})),
                ),
            ),
            ("signed-no-exp".into(), signed(json!({"alg": "HS256"}), json!({"iss": HS_ISSUER, "aud": AUDIENCE}))),
            (
                "signed-iss-list".into(),
                signed(json!({"alg": "HS256"}), claims(HS_ISSUER, AUDIENCE, json!({"iss": [HS_ISSUER]}))),
            ),
            ("signed-hs512".into(), signed(json!({"alg": "HS512"}), ok.clone())),
        ]
    }

    /// A CheckRequest shaped like Envoy's (tests/common/mod.rs `request`).
    fn request(method: &str, path: &str, host: &str, headers: &[(&str, &str)]) -> CheckRequest {
        let mut http = HttpRequest {
            method: method.into(),
            path: path.into(),
            host: host.into(),
            scheme: "https".into(),
            protocol: "HTTP/2".into(),
            ..Default::default()
        };
        for (name, value) in [(":authority", host), (":method", method), (":path", path)].iter().chain(headers) {
            http.headers.insert((*name).into(), (*value).into());
        }
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request { http: Some(http), ..Default::default() }),
                ..Default::default()
            }),
        }
    }

    /// The same request in Envoy's raw header encoding (`encode_raw_headers`).
    fn raw_request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
        let list = [(":authority", "api.example.com"), (":method", method), (":path", path)]
            .iter()
            .chain(headers)
            .map(|(key, value)| HeaderValue {
                key: (*key).into(),
                raw_value: value.as_bytes().to_vec(),
                ..Default::default()
            })
            .collect();
        let http = HttpRequest { header_map: Some(HeaderMap { headers: list }), ..Default::default() };
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request { http: Some(http), ..Default::default() }),
                ..Default::default()
            }),
        }
    }

    pub fn checks() -> Seeds {
        let bearer = |token: &str| format!("Bearer {token}");
        let hs = bearer(&sign(Algorithm::HS256, None, &claims(HS_ISSUER, AUDIENCE, hasura_claims())));
        let kinde = bearer(&sign(
            Algorithm::RS256,
            Some("rsa"),
            &claims(RSA_ISSUER, "hasura", json!({"roles": [{"key": "user"}, {"key": "admin"}], "org_code": "org_1"})),
        ));
        let api = sign(
            Algorithm::HS256,
            None,
            &claims(
                HS_ISSUER,
                AUDIENCE,
                json!({"sub": "u1", "org": {"code": "acme"}, "groups": ["a", "b"], "roles": ["admin"], "scope": "admin:write read"}),
            ),
        );
        let cookie = format!("{TOKEN_COOKIE}={}", sign(Algorithm::HS256, None, &claims(COOKIE_ISSUER, "x", json!({}))));
        let host = "api.example.com";
        let requests = [
            ("health", request("GET", "/healthz?full=1", host, &[])),
            ("blocked", request("GET", "/internal/x", host, &[])),
            ("no-route", request("GET", "/nowhere", host, &[])),
            ("graphql-no-token", request("POST", "/v1/graphql", host, &[])),
            (
                "graphql-hs",
                request(
                    "POST",
                    "/v1/graphql",
                    host,
                    &[("authorization", &hs), ("x-hasura-role", "editor"), ("x-hasura-admin-secret", "guess")],
                ),
            ),
            (
                "graphql-kinde",
                request("POST", "/v1/graphql", host, &[("authorization", &kinde), ("x-hasura-role", "admin")]),
            ),
            (
                "graphql-bad-role",
                request("POST", "/v1/graphql", host, &[("authorization", &hs), ("x-hasura-role", "admin")]),
            ),
            (
                "graphql-websocket",
                request(
                    "GET",
                    "/v1/graphql",
                    host,
                    &[("authorization", &hs), ("upgrade", "websocket"), ("connection", "Upgrade")],
                ),
            ),
            ("graphql-anon", request("POST", "/public/graphql", host, &[("x-hasura-user-id", "1")])),
            ("graphql-anon-websocket", request("GET", "/public/graphql", host, &[("upgrade", "WebSocket")])),
            (
                "rest-hs",
                request("GET", "/rest/v1/notes?select=*", host, &[("authorization", &hs), ("apikey", "client")]),
            ),
            ("rest-cookie", request("GET", "/rest/v1/notes", host, &[("cookie", &cookie)])),
            ("rest-anon", request("GET", "/rest/v1/notes", host, &[("apikey", "client")])),
            ("pass-hs", request("GET", "/pass/v1/notes", host, &[("authorization", &hs)])),
            ("api", request("GET", "/api/orders", host, &[("authorization", &bearer(&api)), ("x-user-id", "spoofed")])),
            ("api-subdomain", request("POST", "/api/x", "a.apps.example.com:8443", &[("cookie", &cookie)])),
            (
                "api-two-tokens",
                request("GET", "/api/x", host, &[("authorization", &bearer(&api)), ("cookie", &cookie)]),
            ),
            ("admin", request("GET", "/admin/users", host, &[("authorization", &bearer(&api))])),
            ("admin-delete", request("DELETE", "/admin/users", host, &[("authorization", &bearer(&api))])),
            ("dry", request("GET", "/dry/x", host, &[])),
            ("servlet", request("GET", "/app;jsessionid=1/x", host, &[])),
            ("path-parameters", request("GET", "/api;x/orders", host, &[])),
            ("dot-segments", request("GET", "/public/../internal/x", host, &[])),
            ("encoded", request("GET", "/%61pi/orders%3Fx", host, &[])),
            ("bad-authority", request("GET", "/healthz", "api.example.com:abc", &[])),
            ("ipv6", request("GET", "/healthz", "[::1]:8080", &[])),
            (
                "raw-headers",
                raw_request("POST", "/v1/graphql", &[("authorization", &hs), ("cookie", "a=1"), ("cookie", &cookie)]),
            ),
            ("empty", CheckRequest::default()),
        ];
        requests.into_iter().map(|(name, request)| (name.to_string(), request.encode_to_vec())).collect()
    }

    pub fn configs() -> Seeds {
        let mut seeds: Seeds = Vec::new();
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        // The config examples are the directories (examples/floor.rs is a cargo example).
        let mut dirs: Vec<_> = std::fs::read_dir(&examples)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            let text = std::fs::read_to_string(dir.join("portcullis.yaml")).unwrap();
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            seeds.push((format!("example-{name}.yaml"), literal_placeholders(&text).into_bytes()));
        }
        let fixture = |config: Value| serde_json::to_string_pretty(&config).unwrap().into_bytes();
        seeds.push(("fixture-token.json".into(), fixture(super::harness::token::config())));
        seeds.push(("fixture-check.json".into(), fixture(super::harness::check::config())));
        seeds.push((
            "errors.yaml".into(),
            b"issuers:\n  idp: { issuer: 'http://idp.example.com', audiance: [x] }\n  hs: { issuer: i, secret: short }\nroutes:\n  - match: { prefix: nope }\n    issuers: [idp, hs]\n    require: { when: 'claims.x ==' }\n".to_vec(),
        ));
        seeds
    }

    /// `${NAME}` placeholders become literal values long enough for any secret.
    fn literal_placeholders(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').map_or(rest.len(), |end| start + end + 1);
            out.push_str("literal-value-of-more-than-sixty-four-bytes-for-any-hs512-secret-0123456789");
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }

    pub fn claim_paths() -> Seeds {
        let kinde_map = json!({
            "x-hasura-allowed-roles": {"path": "$.roles[*].key", "default": ["user"]},
            "x-hasura-default-role": {"path": "$.default_role", "default": "user"},
            "x-hasura-user-id": {"path": "$.sub"},
            "x-hasura-org-code": {"path": "$.org_code", "default": ""},
            "X-Hasura-Tenant": "acme"
        });
        let kinde = json!({"sub": "kp_1", "aud": ["hasura"], "roles": [{"key": "user"}, {"key": "admin"}], "org_code": "org_1"});
        let nested = json!({"hasura": {"claims": {"x-hasura-allowed-roles": ["user"], "x-hasura-default-role": "user", "x-hasura-org-id": "o"}}});
        let namespaced = json!({"https://myapp.com/jwt/claims": {"x-hasura-allowed-roles": ["user", "admin"], "x-hasura-default-role": "user", "x-hasura-admin-secret": "x", "x-hasura-role": "admin"}});
        let stringified = json!({"https://hasura.io/jwt/claims": json!({"x-hasura-allowed-roles": ["user"], "x-hasura-default-role": "user"}).to_string()});
        let line = |path: &str, map: &Value, claims: &Value| format!("{path}\n{map}\n{claims}").into_bytes();
        vec![
            ("kinde-claims-map".into(), line("$.roles[*].key", &kinde_map, &kinde)),
            ("namespace-path".into(), line("$.hasura.claims", &Value::Null, &nested)),
            ("bare-path".into(), line("hasura.claims", &Value::Null, &nested)),
            ("quoted-key".into(), line("$['https://myapp.com/jwt/claims']", &Value::Null, &namespaced)),
            (
                "double-quoted".into(),
                line("$[\"https://myapp.com/jwt/claims\"].x-hasura-default-role", &Value::Null, &namespaced),
            ),
            ("namespace".into(), line("https://hasura.io/jwt/claims", &Value::Null, &stringified)),
            ("index".into(), line("$.roles[1].key", &kinde_map, &kinde)),
            (
                "root".into(),
                line("$", &json!({"x-hasura-allowed-roles": ["user"], "x-hasura-default-role": "user"}), &kinde),
            ),
            (
                "hasura-default".into(),
                line(
                    "sub",
                    &Value::Null,
                    &json!({"sub": "u", "https://hasura.io/jwt/claims": hasura_claims()["https://hasura.io/jwt/claims"]}),
                ),
            ),
            ("invalid".into(), line("$..a", &json!({"x-hasura-default-role": "u"}), &json!({}))),
        ]
    }

    pub fn jwks() -> Seeds {
        let public = |alg: Algorithm, kid: &str| {
            let mut jwk = Jwk::from_encoding_key(&key(alg), alg).unwrap();
            jwk.common.key_id = Some(kid.into());
            serde_json::to_value(jwk).unwrap()
        };
        let rsa = public(Algorithm::RS256, "rsa");
        let ec = public(Algorithm::ES256, "ec");
        let ed = public(Algorithm::EdDSA, "ed");
        let mut auth0_like = rsa.clone();
        auth0_like["use"] = json!("sig");
        auth0_like["x5t"] = json!("bm90LWEtcmVhbC10aHVtYnByaW50");
        auth0_like["x5c"] = json!(["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]);
        let mut kidless = ec.clone();
        kidless.as_object_mut().unwrap().remove("kid");
        let mut encryption = ec.clone();
        encryption["use"] = json!("enc");
        let mut wrong_alg = rsa.clone();
        wrong_alg["alg"] = json!("ES256");
        let doc = |keys: Vec<Value>| json!({ "keys": keys }).to_string().into_bytes();
        vec![
            ("fixture-keys".into(), doc(vec![rsa.clone(), ec.clone(), ed.clone()])),
            ("auth0-like".into(), doc(vec![auth0_like])),
            ("kidless".into(), doc(vec![kidless])),
            (
                "skipped".into(),
                doc(vec![json!({"kty": "oct", "k": "c2VjcmV0", "kid": "sym"}), encryption, wrong_alg, ec]),
            ),
            ("p384".into(), doc(vec![json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AAAA", "y": "AAAA"})])),
            ("empty".into(), doc(Vec::new())),
            ("no-keys".into(), b"{\"keys\": null}".to_vec()),
        ]
    }
}
