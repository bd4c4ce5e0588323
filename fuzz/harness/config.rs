//! Target `config`: YAML text parsed and compiled into a policy, the one path
//! `check-config`, `serve`, reloads and `token verify` share
//! (`policy::compile_text`, with a runtime built once: a stopped clock and a
//! key fetcher that never reaches the network; compiling fetches nothing anyway).
//!
//! Inputs that would read files are skipped: `${file:...}` placeholders and
//! `listen.tls` name paths the fuzzer could point at `/dev/zero`, which tells
//! nothing about portcullis. Invariants: a refused config reports at least one
//! problem, each with a message; a compiled one has its summary, and at most
//! as many issuers and routes as the text declares.

use std::sync::LazyLock;

use portcullis::policy::{Runtime, compile_text, summary};
use serde_json::Value;

use super::fixtures;

static RUNTIME: LazyLock<Runtime> = LazyLock::new(fixtures::runtime);

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let document: Option<Value> =
        serde_saphyr::from_str_with_options(text, serde_saphyr::options! { with_snippet: false }).ok();
    if document.as_ref().is_some_and(reads_files) {
        return;
    }
    match compile_text(text, "fuzz.yaml", &RUNTIME, None) {
        Ok(policy) => {
            let document = document.expect("a compiled config was YAML");
            let declared = |key: &str| document.get(key).and_then(Value::as_object).map_or(0, |map| map.len());
            assert!(policy.issuers.len() <= declared("issuers"));
            let routes = document.get("routes").and_then(Value::as_array).map_or(0, Vec::len);
            assert!(policy.router.routes().len() <= routes);
            assert!(summary(&policy).starts_with("config OK"));
        }
        Err(err) => {
            assert!(!err.problems.is_empty(), "a refused config names its problems");
            for problem in &err.problems {
                assert!(!problem.message.is_empty(), "a problem without a message at {:?}", problem.path);
            }
            let _ = err.to_string();
        }
    }
}

/// `${file:...}` anywhere, or `listen.tls`: compiling would read files.
fn reads_files(document: &Value) -> bool {
    fn placeholder(value: &Value) -> bool {
        match value {
            Value::String(text) => text.contains("${file:"),
            Value::Array(items) => items.iter().any(placeholder),
            Value::Object(map) => map.iter().any(|(key, item)| key.contains("${file:") || placeholder(item)),
            _ => false,
        }
    }
    placeholder(document)
        || document.get("listen").and_then(|listen| listen.get("tls")).is_some_and(|tls| !tls.is_null())
}
