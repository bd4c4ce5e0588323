//! Reads a config file into a [`Config`]: YAML, interpolation, and the typed
//! shape. Each section (every issuer, every backend, every route) is read on
//! its own so that one run reports every problem in the file, each with its
//! YAML path, instead of stopping at the first typo. Whether the config makes
//! sense is decided when it is compiled (`policy`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::document;
use super::interpolate::interpolate;
use super::secrets::Secrets;
use super::value_de::from_value_reporting_all;
use super::{
    AdminConfig, AuthHookConfig, BackendConfig, CacheConfig, Config, ConfigError, DecisionLogConfig, Declared,
    DefaultsConfig, FacesConfig, HasuraBackendConfig, IssuerConfig, LimitsConfig, Listen, Problem, Problems,
    RevocationConfig, RouteConfig, StateConfig, SupabaseBackendConfig, TelemetryConfig, WebhookConfig, join_path,
};

const TOP_LEVEL_KEYS: [&str; 15] = [
    "listen",
    "admin",
    "cache",
    "limits",
    "defaults",
    "decision_log",
    "telemetry",
    "faces",
    "issuers",
    "backends",
    "routes",
    "webhooks",
    "revocation",
    "state",
    "auth_hooks",
];
const BACKEND_TYPES: [&str; 2] = ["hasura", "supabase"];

/// Loads the config at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let source_name = path.display().to_string();
    parse_str(&read_file(path, &source_name)?, &source_name)
}

/// The text of `path`, or why it cannot be read.
pub fn read_file(path: &Path, source_name: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|err| ConfigError {
        source_name: source_name.to_string(),
        problems: vec![Problem::new("", format!("cannot read file: {err}"))],
    })
}

/// Parses config text; `source_name` only labels errors.
pub fn parse_str(text: &str, source_name: &str) -> Result<Config, ConfigError> {
    match read_str(text) {
        (Some(config), problems) if problems.is_empty() => Ok(config),
        (_, problems) => Err(ConfigError { source_name: source_name.to_string(), problems }),
    }
}

/// Everything readable in `text`, and every problem found reading it. The
/// sections that did read are returned even when others did not, so that
/// compiling them can report their problems in the same run; the config is
/// `None` only when the text is not a YAML mapping at all.
pub fn read_str(text: &str) -> (Option<Config>, Vec<Problem>) {
    read_str_with(text, &Secrets::Resolve)
}

/// [`read_str`], taking `${...}` values from `secrets`.
pub fn read_str_with(text: &str, secrets: &Secrets) -> (Option<Config>, Vec<Problem>) {
    let mut problems = Problems::default();
    let config = parse_document(text, secrets, &mut problems);
    (config, problems.into_vec())
}

fn parse_document(text: &str, secrets: &Secrets, found: &mut Problems) -> Option<Config> {
    let problems = found;
    let mut doc: Value = match document::parse(text) {
        Ok((doc, repeated)) => {
            problems.extend_under("", repeated);
            doc
        }
        Err(err) => {
            problems.push("", format!("not valid YAML: {err}"));
            return None;
        }
    };
    let Some(top) = doc.as_object_mut() else {
        problems.push("", "expected a mapping with listen, issuers, routes, ...");
        return None;
    };
    for key in top.keys().filter(|key| !TOP_LEVEL_KEYS.contains(&key.as_str())) {
        problems.push(key.as_str(), format!("unknown key (expected one of: {})", TOP_LEVEL_KEYS.join(", ")));
    }
    let unresolved = interpolate(&mut doc, "", secrets, problems);
    // What a value that was not read causes further on is not reported: it was, once.
    let outer = problems;
    let problems = &mut Problems::default();
    let top = doc.as_object().expect("checked above");
    let listen = section::<Listen>(top.get("listen"), "listen", problems).unwrap_or_default();
    let admin = section::<AdminConfig>(top.get("admin"), "admin", problems).unwrap_or_default();
    let cache = section::<CacheConfig>(top.get("cache"), "cache", problems).unwrap_or_default();
    if cache.max_bytes == 0 {
        problems.push("cache.max_bytes", "must be greater than 0 (`tokens: 0` turns the cache off)");
    }
    let limits = section::<LimitsConfig>(top.get("limits"), "limits", problems).unwrap_or_default();
    for (key, value) in [
        ("max_headers", limits.max_headers),
        ("max_header_bytes", limits.max_header_bytes),
        ("concurrent_checks", limits.concurrent_checks),
    ] {
        if value == 0 {
            problems.push(join_path("limits", key), "must be greater than 0");
        }
    }
    let declared = Declared { issuers: keys_of(top.get("issuers")), backends: keys_of(top.get("backends")) };
    let defaults = section::<DefaultsConfig>(top.get("defaults"), "defaults", problems).unwrap_or_default();
    let decision_log = section::<DecisionLogConfig>(top.get("decision_log"), "decision_log", problems);
    let telemetry = section::<TelemetryConfig>(top.get("telemetry"), "telemetry", problems);
    let faces = section::<FacesConfig>(top.get("faces"), "faces", problems).unwrap_or_default();
    let issuers = parse_issuers(top.get("issuers"), problems);
    let backends = parse_backends(top.get("backends"), problems);
    let routes = parse_routes(top.get("routes"), problems);
    let webhooks = section::<Vec<WebhookConfig>>(top.get("webhooks"), "webhooks", problems).unwrap_or_default();
    let revocation = section::<RevocationConfig>(top.get("revocation"), "revocation", problems).unwrap_or_default();
    let state = section::<StateConfig>(top.get("state"), "state", problems).unwrap_or_default();
    let auth_hooks = parse_auth_hooks(top.get("auth_hooks"), problems);
    outer.extend_under("", std::mem::take(problems).into_vec().into_iter().filter(|p| !unresolved.covers(&p.path)));
    Some(Config {
        listen,
        admin,
        cache,
        limits,
        defaults,
        decision_log,
        telemetry,
        faces,
        issuers,
        backends,
        routes,
        webhooks,
        revocation,
        state,
        auth_hooks,
        declared,
        unresolved,
    })
}

fn keys_of(value: Option<&Value>) -> Vec<String> {
    value.and_then(Value::as_object).map(|map| map.keys().cloned().collect()).unwrap_or_default()
}

/// Deserializes an optional section, recording the exact path of any error.
fn section<T: DeserializeOwned>(value: Option<&Value>, path: &str, problems: &mut Problems) -> Option<T> {
    match value {
        None | Some(Value::Null) => None,
        Some(value) => parse_at(value, path, problems),
    }
}

/// Every unknown key of the section is reported, not only the first.
fn parse_at<T: DeserializeOwned>(value: &Value, path: &str, problems: &mut Problems) -> Option<T> {
    problems.take(path, from_value_reporting_all::<T>(value))
}

/// Issuers in the order written. One that does not parse is left out; routes
/// naming it are not reported again (the compile step knows every declared name).
fn parse_issuers(value: Option<&Value>, problems: &mut Problems) -> Vec<(String, IssuerConfig)> {
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return Vec::new();
    };
    let Some(map) = value.as_object() else {
        problems.push("issuers", "expected a mapping of issuer name to issuer");
        return Vec::new();
    };
    map.iter()
        .filter_map(|(name, raw)| {
            Some((name.clone(), parse_at::<IssuerConfig>(raw, &join_path("issuers", name), problems)?))
        })
        .collect()
}

fn parse_backends(value: Option<&Value>, problems: &mut Problems) -> BTreeMap<String, BackendConfig> {
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return BTreeMap::new();
    };
    let Some(map) = value.as_object() else {
        problems.push("backends", "expected a mapping of backend name to backend");
        return BTreeMap::new();
    };
    let mut backends = BTreeMap::new();
    for (name, raw) in map {
        let path = join_path("backends", name);
        let backend = match raw.get("type").and_then(Value::as_str) {
            Some("hasura") => parse_at::<HasuraBackendConfig>(raw, &path, problems).map(BackendConfig::Hasura),
            Some("supabase") => parse_at::<SupabaseBackendConfig>(raw, &path, problems).map(BackendConfig::Supabase),
            _ => {
                problems.push(join_path(&path, "type"), format!("expected one of: {}", BACKEND_TYPES.join(", ")));
                None
            }
        };
        if let Some(backend) = backend {
            backends.insert(name.clone(), backend);
        }
    }
    backends
}

/// `auth_hooks`: absent is none; each hook is read on its own.
fn parse_auth_hooks(value: Option<&Value>, problems: &mut Problems) -> Vec<AuthHookConfig> {
    let items = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            problems.push("auth_hooks", "expected a list of hooks ({ path, backend, issuers })");
            return Vec::new();
        }
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(index, raw)| parse_at::<AuthHookConfig>(raw, &format!("auth_hooks[{index}]"), problems))
        .collect()
}

fn parse_routes(value: Option<&Value>, problems: &mut Problems) -> Vec<RouteConfig> {
    let Some(items) = value.and_then(Value::as_array) else {
        problems.push("routes", "expected a list of routes (with no route every request is denied)");
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(index, raw)| {
            let route = parse_at::<RouteConfig>(raw, &format!("routes[{index}]"), problems)?;
            Some(RouteConfig { position: index, ..route })
        })
        .collect()
}
