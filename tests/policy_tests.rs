//! The real binary without secrets and without an IdP: `check-config
//! --no-secrets` on every shipped config, `token verify --no-secrets` naming the
//! secrets a decision needs, the missing-variable rule, and `portcullis test`
//! on every shipped test file and on a failing suite (its JUnit XML parsed by
//! Python's xml.etree).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use jsonwebtoken::Algorithm;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary in `dir` with an empty environment (PATH only): no secret can leak in.
fn run_bare(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every portcullis config shipped under examples/ and deploy/ (repo-relative).
fn shipped_configs() -> Vec<String> {
    // Each directory of examples/ is a config example; its files (examples/floor.rs, the
    // load tool's floor server) are cargo examples, not configs.
    let mut configs: Vec<String> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(Result::unwrap)
        .filter(|entry| entry.file_type().unwrap().is_dir())
        .map(|entry| format!("examples/{}/portcullis.yaml", entry.file_name().to_string_lossy()))
        .collect();
    configs.extend([
        "deploy/kubernetes/base/portcullis.yaml".into(),
        "deploy/kubernetes/overlays/tls/portcullis.yaml".into(),
        "deploy/kubernetes/overlays/redis/portcullis.yaml".into(),
    ]);
    configs.sort();
    for config in &configs {
        assert!(repo().join(config).is_file(), "{config}");
    }
    // Nothing else under deploy/ is a portcullis config (the ConfigMap is generated from the files above).
    let grep = Command::new("grep").args(["-rl", "^issuers:", "deploy"]).current_dir(repo()).output().unwrap();
    let found: Vec<String> = String::from_utf8_lossy(&grep.stdout).lines().map(str::to_string).collect();
    for file in found {
        assert!(configs.contains(&file), "a portcullis config the tests do not know: {file}");
    }
    configs
}

#[test]
fn every_shipped_config_validates_without_its_secrets() {
    for config in shipped_configs() {
        // --strict as well: a shipped config has no warnings either.
        let args = ["check-config", "--strict", "--no-secrets", "--config", &config];
        let (code, stdout, stderr) = run_bare(&repo(), &args);
        assert_eq!(code, 0, "{config}:\n{stdout}{stderr}");
        assert!(stdout.starts_with("config OK"), "{config}: {stdout}");
        let text = std::fs::read_to_string(repo().join(&config)).unwrap();
        for line in text.lines().filter(|line| line.trim_start().starts_with(|c: char| c.is_alphanumeric())) {
            let Some(start) = line.find("${") else { continue };
            let placeholder = &line[start..=start + line[start..].find('}').unwrap()];
            assert!(stdout.contains(&format!(": {placeholder}\n")), "{config}: {placeholder} not listed:\n{stdout}");
        }
        // Without --no-secrets the same file needs them (except configs that have none).
        if text.lines().any(|line| !line.trim_start().starts_with('#') && line.contains("${")) {
            let (code, _, stderr) = run_bare(&repo(), &["check-config", "--config", &config]);
            assert_eq!(code, 1, "{config}: {stderr}");
        }
    }
    let (_, stdout, _) = run_bare(
        &repo(),
        &["check-config", "--no-secrets", "--config", "deploy/kubernetes/overlays/tls/portcullis.yaml"],
    );
    assert!(stdout.contains("  listen.tls: certificate and key files\n"), "{stdout}");
}

#[test]
fn every_shipped_config_has_policy_tests_that_pass() {
    let mut files = Vec::new();
    for config in shipped_configs() {
        let tests = config.replace("portcullis.yaml", "portcullis.test.yaml");
        assert!(repo().join(&tests).is_file(), "{config} has no policy tests ({tests})");
        files.push(tests);
    }
    let junit = tempfile::NamedTempFile::new().unwrap();
    let mut args = vec!["test", "--junit", junit.path().to_str().unwrap()];
    args.extend(files.iter().map(String::as_str));
    let (code, stdout, stderr) = run_bare(&repo(), &args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let cases = stdout.lines().filter(|line| line.starts_with("ok ")).count();
    assert!(cases >= 5 * files.len(), "meaningful suites: {cases} cases in {} files", files.len());
    assert!(stdout.ends_with(&format!("{cases} passed, 0 failed\n")), "{stdout}");
    let parsed = junit_counts(junit.path());
    assert_eq!(parsed, (files.len(), cases, 0, 0), "suites, tests, failures, errors");
}

const FAILING_CONFIG: &str = r#"
issuers:
  idp:
    issuer: https://idp.example.com
    audiences: [api]
  legacy:
    issuer: https://legacy.example.com
    secret: ${LEGACY_JWT_SECRET}
backends:
  hasura:
    type: hasura
    admin_secret: ${HASURA_GRAPHQL_ADMIN_SECRET}
routes:
  - name: api
    match: { prefix: /api/ }
    issuers: [idp, legacy]
    headers: { x-user-id: sub }
  - name: graphql
    match: { prefix: /v1/graphql }
    issuers: [idp]
    backend: hasura
"#;

const FAILING_SUITE: &str = r#"
config: portcullis.yaml
now: 1800000000
cases:
  - name: passes
    request: { path: /api/x, headers: { x-user-id: spoofed } }
    token: { issuer: legacy, claims: { sub: u1 } }
    expect: { decision: allow, status: 200, route: api, headers: { set: { x-user-id: u1 } } }
  - name: "wrong <status> & reason"
    request: { path: /api/x }
    expect: { decision: deny, status: 403, reason: no_route }
  - name: wrong header
    request: { path: /v1/graphql }
    token:
      issuer: idp
      claims: { https://hasura.io/jwt/claims: { x-hasura-default-role: user, x-hasura-allowed-roles: [user] } }
    expect:
      decision: allow
      headers: { set: { x-hasura-admin-secret: guessed } }
      hasura: { role: admin }
  - name: admin secret stand-in
    request: { path: /v1/graphql }
    token:
      issuer: idp
      claims: { https://hasura.io/jwt/claims: { x-hasura-default-role: user, x-hasura-allowed-roles: [user] } }
    expect: { decision: allow, headers: { set: { x-hasura-admin-secret: "${HASURA_GRAPHQL_ADMIN_SECRET}" } } }
"#;

#[test]
fn a_failing_suite_says_what_differs_exits_1_and_writes_valid_junit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("portcullis.yaml"), FAILING_CONFIG).unwrap();
    std::fs::write(dir.path().join("suite.test.yaml"), FAILING_SUITE).unwrap();
    std::fs::write(
        dir.path().join("broken.test.yaml"),
        "config: portcullis.yaml\ncases:\n  - name: x\n    expect: { decison: allow }\n",
    )
    .unwrap();
    let (code, stdout, stderr) =
        run_bare(dir.path(), &["test", "--junit", "report.xml", "suite.test.yaml", "broken.test.yaml"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let expected = [
        "ok   suite.test.yaml: passes",
        "FAIL suite.test.yaml: wrong <status> & reason",
        "       status: expected 403, got 401",
        "       reason: expected no_route, got missing_token",
        "FAIL suite.test.yaml: wrong header",
        "       headers.set.x-hasura-admin-secret: expected \"guessed\", got \"${HASURA_GRAPHQL_ADMIN_SECRET}\"",
        "       hasura.role: expected admin, got user",
        "ok   suite.test.yaml: admin secret stand-in",
    ];
    for line in expected {
        assert!(stdout.contains(&format!("{line}\n")), "missing {line:?} in:\n{stdout}");
    }
    assert!(stdout.contains("FAIL broken.test.yaml: cases[0].expect.decison: unknown field `decison`"), "{stdout}");
    assert!(stdout.ends_with("2 passed, 3 failed\n"), "{stdout}");
    assert_eq!(junit_counts(&dir.path().join("report.xml")), (2, 5, 2, 1), "suites, tests, failures, errors");
}

/// (suites, test cases, failures, errors) of a JUnit XML file, as Python's
/// xml.etree reads it; the totals on `testsuites` must agree with the cases.
fn junit_counts(path: &Path) -> (usize, usize, usize, usize) {
    let script = r#"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "testsuites", root.tag
suites = root.findall("testsuite")
cases = root.findall("testsuite/testcase")
failures = root.findall("testsuite/testcase/failure")
errors = root.findall("testsuite/testcase/error")
assert int(root.get("tests")) == len(cases)
assert int(root.get("failures")) == len(failures)
assert int(root.get("errors")) == len(errors)
for suite in suites:
    assert int(suite.get("tests")) == len(suite.findall("testcase")), suite.get("name")
    assert suite.get("name")
for case in cases:
    assert case.get("name") and case.get("classname")
for failure in failures:
    assert failure.get("message") and failure.text
print(len(suites), len(cases), len(failures), len(errors))
"#;
    let output = Command::new("python3").args(["-c", script, path.to_str().unwrap()]).output().unwrap();
    assert!(output.status.success(), "not valid JUnit: {}", String::from_utf8_lossy(&output.stderr));
    let counts: Vec<usize> =
        String::from_utf8_lossy(&output.stdout).split_whitespace().map(|n| n.parse().unwrap()).collect();
    (counts[0], counts[1], counts[2], counts[3])
}

// Multi-threaded: the issuer answers while the test waits for the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_verify_without_secrets_names_the_secrets_a_decision_needs() {
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "listen: {{ admin: 0.0.0.0:50052, tls: {{ cert: /nonexistent/tls.crt, key: /nonexistent/tls.key }} }}\nadmin: {{ token: '${{PORTCULLIS_ADMIN_TOKEN}}' }}\nissuers:\n  idp: {{ issuer: {}, jwks_uri: {}, audiences: [api] }}\n  legacy: {{ issuer: https://legacy.example.com, secret: '${{file:/run/secrets/legacy}}' }}\nbackends:\n  hasura: {{ type: hasura, admin_secret: '${{HASURA_GRAPHQL_ADMIN_SECRET}}' }}\nroutes:\n  - {{ match: {{ prefix: /v1/graphql }}, issuers: [idp], backend: hasura }}\n  - {{ match: {{ prefix: /legacy/ }}, issuers: [legacy] }}\n",
        issuer.issuer(),
        issuer.jwks_uri()
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let mut claims = issuer.claims("alice", "api", 60);
    claims["https://hasura.io/jwt/claims"] =
        serde_json::json!({"x-hasura-default-role": "user", "x-hasura-allowed-roles": ["user"]});
    let token = key.sign(&claims);
    let verify = |path: &str, token: &str| {
        run_bare(dir.path(), &["token", "verify", "--no-secrets", "--config", "portcullis.yaml", "--path", path, token])
    };
    let (code, stdout, stderr) = verify("/v1/graphql", &token);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("decision: ALLOW"), "{stdout}");
    assert!(
        stdout.contains(
            "  x-hasura-admin-secret: (needs backends.hasura.admin_secret (${HASURA_GRAPHQL_ADMIN_SECRET}), not read)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("  x-hasura-role: user"), "{stdout}");
    for unread in ["admin.token: ${PORTCULLIS_ADMIN_TOKEN}", "listen.tls: certificate and key files"] {
        assert!(stdout.contains(unread), "{unread} listed as not checked:\n{stdout}");
    }
    // An HS256 token: verifying it needs the secret, which is named, not guessed.
    let hs = SigningKey::hmac(Algorithm::HS256, "h", b"0123456789abcdef0123456789abcdef");
    let legacy =
        hs.sign(&serde_json::json!({"iss": "https://legacy.example.com", "sub": "u", "exp": 4_000_000_000u64}));
    let (code, stdout, stderr) = verify("/legacy/x", &legacy);
    assert_eq!(code, 2, "undecided, not denied: {stdout}{stderr}");
    assert!(
        stdout.contains("the decision needs the secret of issuer legacy: issuers.legacy.secret (${file:/run/secrets/legacy}), not read without secrets"),
        "{stdout}"
    );
}

#[test]
fn an_unset_variable_is_one_problem_without_follow_ons() {
    let dir = tempfile::tempdir().unwrap();
    let config = "issuers:\n  a:\n    issuer: https://a.example.com\n    jwks_uri: ${PORTCULLIS_TEST_UNSET_URL}\n  b:\n    issuer: https://b.example.com\n    secret: ${PORTCULLIS_TEST_UNSET_SECRET}\n    algorithms: [HS512]\nbackends:\n  s:\n    type: supabase\n    signing_key: ${PORTCULLIS_TEST_UNSET_KEY}\n    apikey: k\nroutes:\n  - match: { prefix: / }\n";
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let (code, stdout, stderr) = run_bare(dir.path(), &["check-config", "--config", "portcullis.yaml"]);
    assert_eq!(code, 1, "{stdout}");
    let problems: Vec<&str> = stderr.lines().filter(|line| line.starts_with("  - ")).collect();
    assert_eq!(
        problems,
        [
            "  - issuers.a.jwks_uri: environment variable PORTCULLIS_TEST_UNSET_URL is not set (used as ${PORTCULLIS_TEST_UNSET_URL})",
            "  - issuers.b.secret: environment variable PORTCULLIS_TEST_UNSET_SECRET is not set (used as ${PORTCULLIS_TEST_UNSET_SECRET})",
            "  - backends.s.signing_key: environment variable PORTCULLIS_TEST_UNSET_KEY is not set (used as ${PORTCULLIS_TEST_UNSET_KEY})",
        ],
        "{stderr}"
    );
}
