//! The config's JSON Schema (schema/portcullis.schema.json, printed by
//! `portcullis schema`), checked the way its users read it: Python's
//! `jsonschema` with PyYAML (pinned in tests/tools.txt), which portcullis does
//! not use, validating the YAML files as written.
//!
//! - The committed file is exactly what the binary prints.
//! - Every config portcullis ships is valid: examples/*/portcullis.yaml, every
//!   portcullis config under deploy/ (a file, or inside a ConfigMap), and the
//!   config `portcullis dev` runs.
//! - Typo'd copies are refused, and the loader (`check-config`) refuses the same
//!   copies at the same path: the schema is as strict as portcullis, no stricter
//!   on these and no looser.

#[allow(unused_imports)] // common re-exports what other test files use
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::tools;
use portcullis::cli::DevArgs;
use portcullis::dev::{DevIssuer, SigningKey, dev_config};
use serde_json::Value;

const SCHEMA: &str = "schema/portcullis.schema.json";
/// The first line of every example: editors find the schema from it.
const MODELINE: &str = "# yaml-language-server: $schema=";
const REGENERATE: &str = "cargo run -- schema > schema/portcullis.schema.json";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|err| panic!("read {rel}: {err}"))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `text` with `needle` replaced once, insisting the needle is there (a mutation
/// that silently does nothing would prove nothing).
fn replaced(text: &str, needle: &str, with: &str) -> String {
    assert!(text.contains(needle), "`{needle}` not found: the file changed, update the test");
    text.replacen(needle, with, 1)
}

/// `portcullis ARGS`: (success, stdout, stderr).
fn portcullis(args: &[&str], file: Option<&Path>, env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command.args(args);
    if let Some(file) = file {
        command.arg(file);
    }
    command.envs(env.iter().copied());
    let output = command.output().expect("run portcullis");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

/// One refused value: where (dotted, list indexes as numbers) and why.
#[derive(Debug)]
struct SchemaError {
    path: String,
    message: String,
}

/// Validates `files` against the committed schema with Python's jsonschema;
/// the errors of each file, in order.
fn schema_errors(files: &[PathBuf]) -> Vec<Vec<SchemaError>> {
    let python = tools::Python::with("import jsonschema, yaml", "jsonschema");
    let output = python
        .command()
        .arg(repo().join("tests/schema/validate.py"))
        .arg(repo().join(SCHEMA))
        .args(files)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "validate.py failed:\n{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let results: Vec<Value> = stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(results.len(), files.len(), "one result per file:\n{stdout}");
    results
        .iter()
        .map(|result| {
            result["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|error| SchemaError {
                    path: error["path"].as_str().unwrap().to_string(),
                    message: error["message"].as_str().unwrap().to_string(),
                })
                .collect()
        })
        .collect()
}

#[test]
fn committed_schema_is_what_the_binary_prints() {
    let (ok, printed, stderr) = portcullis(&["schema"], None, &[]);
    assert!(ok, "portcullis schema failed: {stderr}");
    assert!(printed.ends_with("}\n"), "pretty JSON with a trailing newline");
    let committed = std::fs::read_to_string(repo().join(SCHEMA)).unwrap_or_default();
    assert!(committed == printed, "{SCHEMA} is out of date with the config types; regenerate it with:\n  {REGENERATE}");
}

/// What users read in their editor: descriptions for users, no internal references.
#[test]
fn schema_speaks_to_users() {
    let text = read(SCHEMA);
    for internal in ["SPEC", "[`", "TokenFromFields"] {
        assert!(!text.contains(internal), "{SCHEMA} mentions `{internal}` (a doc comment meant for developers)");
    }
    let schema: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    // The same everywhere: nothing machine-dependent (cores) in a default.
    let limits = &schema["definitions"]["LimitsConfig"]["properties"];
    assert!(limits["concurrent_checks"].get("default").is_none());
    assert_eq!(limits["max_headers"]["default"], 200);
}

/// Every YAML file under deploy/ that is a portcullis config, and every config
/// inside a ConfigMap (`data."portcullis.yaml"`), as files to validate.
fn deploy_configs(out: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![repo().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // A Helm chart's templates are YAML only once rendered (tests/deploy.rs renders them).
            if path.is_dir() && !(path.ends_with("templates") && dir.join("Chart.yaml").exists()) {
                dirs.push(path);
                continue;
            }
            if path.is_dir() || path.extension().and_then(|ext| ext.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let docs: Vec<Value> =
                serde_saphyr::from_multiple(&text).unwrap_or_else(|err| panic!("{}: not YAML: {err}", path.display()));
            for doc in &docs {
                if doc.get("routes").is_some() && doc.get("apiVersion").is_none() {
                    found.push(path.clone());
                } else if doc["kind"] == "ConfigMap"
                    && let Some(config) = doc["data"]["portcullis.yaml"].as_str()
                {
                    let name = format!("configmap-{}.yaml", found.len());
                    found.push(write(out, &name, config));
                }
            }
        }
    }
    found.sort();
    found
}

/// The config `portcullis dev` writes for its embedded issuer.
async fn dev_config_file(out: &Path) -> PathBuf {
    let key = SigningKey::generate(jsonwebtoken::Algorithm::RS256, "schema-test");
    let issuer = DevIssuer::start(&[&key]).await.expect("dev issuer starts");
    let args = DevArgs {
        authz: "127.0.0.1:50051".parse().unwrap(),
        http: "127.0.0.1:9090".parse().unwrap(),
        admin: "127.0.0.1:50052".parse().unwrap(),
        http_authz: "127.0.0.1:9191".parse().unwrap(),
        envoy: None,
        envoy_port: 10000,
        write_config: None,
        command: None,
    };
    write(out, "dev.yaml", &dev_config(&issuer, &args))
}

#[tokio::test]
async fn every_shipped_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path().join("portcullis.yaml"))
        .filter(|path| path.exists())
        .collect();
    files.sort();
    assert!(files.len() >= 6, "the examples are found: {files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let schema =
            first.strip_prefix(MODELINE).unwrap_or_else(|| panic!("{}: first line `{MODELINE}...`", file.display()));
        let points_at = file.parent().unwrap().join(schema).canonicalize().ok();
        assert_eq!(
            points_at,
            repo().join(SCHEMA).canonicalize().ok(),
            "{}: `{first}` names another file",
            file.display()
        );
    }
    let deploy = deploy_configs(dir.path());
    let names: Vec<String> =
        deploy.iter().map(|path| path.strip_prefix(repo()).unwrap_or(path).display().to_string()).collect();
    assert!(
        names.contains(&"deploy/kubernetes/base/portcullis.yaml".to_string())
            && names.contains(&"deploy/kubernetes/overlays/tls/portcullis.yaml".to_string()),
        "the Kubernetes policies are found: {names:?}"
    );
    files.extend(deploy);
    files.push(dev_config_file(dir.path()).await);
    for (file, errors) in files.iter().zip(schema_errors(&files)) {
        assert!(errors.is_empty(), "{}: refused by the schema: {errors:#?}", file.display());
    }
}

/// A typo'd copy of a shipped config: `needle` replaced by `with`; the schema must
/// refuse it at `path` with a message containing `says`, and `check-config` must
/// refuse it naming `loader_path`.
struct Typo {
    file: &'static str,
    needle: &'static str,
    with: &'static str,
    path: &'static str,
    says: &'static str,
    loader_path: &'static str,
}

const TYPOS: [Typo; 9] = [
    Typo {
        file: "examples/basic/portcullis.yaml",
        needle: "\ncache:",
        with: "\ncahce:",
        path: "",
        says: "'cahce' was unexpected",
        loader_path: "cahce: unknown key",
    },
    Typo {
        file: "examples/basic/portcullis.yaml",
        needle: "audiences: [api]",
        with: "audience: [api]",
        path: "issuers.kinde",
        says: "'audience' was unexpected",
        loader_path: "issuers.kinde.audience",
    },
    Typo {
        file: "examples/basic/portcullis.yaml",
        needle: "match: { prefix: /admin/",
        with: "match: { prefx: /admin/",
        path: "routes.2.match",
        says: "'prefx' was unexpected",
        loader_path: "routes[2].match.prefx",
    },
    // A placeholder is expanded inside a string and stays a string: never a number.
    Typo {
        file: "examples/basic/portcullis.yaml",
        needle: "tokens: 100000",
        with: "tokens: \"${PORTCULLIS_SCHEMA_TEST_TOKENS}\"",
        path: "cache.tokens",
        says: "is not of type 'integer'",
        loader_path: "cache.tokens: expected u64, found a string",
    },
    Typo {
        file: "examples/basic/portcullis.yaml",
        needle: "audiences: [api]",
        with: "audiences: api",
        path: "issuers.kinde.audiences",
        says: "is not of type 'array'",
        loader_path: "issuers.kinde.audiences",
    },
    Typo {
        file: "examples/basic/portcullis.yaml",
        needle: "action: deny",
        with: "action: refuse",
        path: "routes.1.action",
        says: "'refuse'",
        loader_path: "routes[1].action",
    },
    Typo {
        file: "deploy/kubernetes/base/portcullis.yaml",
        needle: "type: hasura",
        with: "type: hasuro",
        path: "backends.hasura.type",
        says: "'hasuro' is not one of ['hasura', 'supabase']",
        loader_path: "backends.hasura.type",
    },
    Typo {
        file: "deploy/kubernetes/base/portcullis.yaml",
        needle: "unauthorized_role: anonymous",
        with: "unauthorised_role: anonymous",
        path: "backends.hasura",
        says: "'unauthorised_role' was unexpected",
        loader_path: "backends.hasura.unauthorised_role",
    },
    Typo {
        file: "deploy/kubernetes/base/portcullis.yaml",
        needle: "algorithms: [RS256]",
        with: "token_from: { header: x-token, cookie: session }",
        path: "issuers.kinde.token_from",
        says: "",
        loader_path: "issuers.kinde.token_from",
    },
];

#[test]
fn typos_are_refused_by_the_schema_and_the_loader() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = TYPOS
        .iter()
        .enumerate()
        .map(|(index, typo)| {
            write(dir.path(), &format!("typo-{index}.yaml"), &replaced(&read(typo.file), typo.needle, typo.with))
        })
        .collect();
    for ((typo, file), errors) in TYPOS.iter().zip(&files).zip(schema_errors(&files)) {
        assert!(
            errors.iter().any(|error| error.path == typo.path && error.message.contains(typo.says)),
            "{} with `{}`: the schema should refuse {:?} ({}), it said: {errors:#?}",
            typo.file,
            typo.with,
            typo.path,
            typo.says,
        );
        // Set, so the loader's complaint is the type, not a missing variable.
        let (ok, _, stderr) = portcullis(
            &["check-config", "--config"],
            Some(file),
            &[("PORTCULLIS_SCHEMA_TEST_TOKENS", "100"), ("PORTCULLIS_ADMIN_TOKEN", "t")],
        );
        assert!(
            !ok && stderr.contains(typo.loader_path),
            "{} with `{}`: check-config should refuse it at {}:\n{stderr}",
            typo.file,
            typo.with,
            typo.loader_path,
        );
    }
}

/// The top level is the one part of the schema written by hand from the loader's
/// list of sections: the two lists must be the same (a new section needs its
/// schema too).
#[test]
fn top_level_keys_agree_with_the_loader() {
    let schema: Value = serde_json::from_str(&read(SCHEMA)).unwrap();
    let in_schema: Vec<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    let (_, problems) = portcullis::config::read_str("not_a_section: 1\nroutes: []\n");
    let unknown = problems.iter().find(|problem| problem.path == "not_a_section").expect("an unknown top-level key");
    let listed = unknown.message.split_once("expected one of: ").expect("the loader lists its sections").1;
    let in_loader: Vec<&str> = listed.trim_end_matches(')').split(", ").collect();
    assert_eq!(in_schema, in_loader);
}
