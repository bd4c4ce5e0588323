//! Target `claim_paths`: Hasura's JSONPath subset (`jsonpath.rs`) and the
//! Hasura session derivation it feeds (`claims_namespace_path`, `claims_map`).
//!
//! Input: `path \n claims_map JSON \n claims JSON` (missing or unparsable parts
//! are left out). Invariants: a parsed path keeps its text; the borrowing
//! evaluator (`find_in`, used for claim references) and the owning one
//! (`find`, used by Hasura settings) agree; a claim reference is a path
//! exactly when it starts with `$`; and every session derived from any
//! settings and claims is sendable next to the admin secret
//! ([`fixtures::check_hasura_session`]).

use std::borrow::Cow;

use portcullis::backend::hasura::ClaimsSettings;
use portcullis::config::ClaimsFormat;
use portcullis::jsonpath::{ClaimRef, JsonPath};
use serde_json::{Map, Value};

use super::fixtures;

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let path = parts.next().unwrap_or_default();
    let claims_map = parts.next().and_then(|part| serde_json::from_str::<Value>(part).ok());
    let claims = match parts.next().and_then(|part| serde_json::from_str::<Value>(part).ok()) {
        Some(Value::Object(claims)) => claims,
        _ => Map::new(),
    };
    paths(path, &claims);
    sessions(path, claims_map.as_ref(), &claims);
}

fn paths(text: &str, claims: &Map<String, Value>) {
    let parsed = JsonPath::parse(text);
    if let Ok(path) = &parsed {
        assert_eq!(path.as_str(), text);
        let root = Value::Object(claims.clone());
        assert_eq!(path.find(&root), path.find_in(claims).map(Cow::into_owned), "{text}");
    }
    match ClaimRef::parse(text) {
        Ok(ClaimRef::Path(path)) => assert_eq!(Ok(&path), parsed.as_ref()),
        Ok(ClaimRef::Name(name)) => {
            assert!(!name.is_empty() && !name.starts_with('$'));
            let reference = ClaimRef::Name(name.clone());
            assert_eq!(reference.find(claims).map(Cow::into_owned), claims.get(&name).cloned());
        }
        Err(_) => assert!(text.is_empty() || (text.starts_with('$') && parsed.is_err())),
    }
}

fn sessions(path: &str, claims_map: Option<&Value>, claims: &Map<String, Value>) {
    let candidates = [
        ClaimsSettings::from_parts(None, Some(path), None, None),
        ClaimsSettings::from_parts(None, Some(path), Some(ClaimsFormat::StringifiedJson), None),
        ClaimsSettings::from_parts(Some(path), None, None, None),
        ClaimsSettings::from_parts(None, None, None, claims_map),
    ];
    for settings in candidates.iter().filter_map(|settings| settings.as_ref().ok()) {
        for requested in [None, Some("user"), Some("admin"), Some("")] {
            if let Ok(session) = settings.session(claims, requested) {
                fixtures::check_hasura_session(&session);
            }
        }
    }
}
