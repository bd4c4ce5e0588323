//! Reads a config file into a validated [`Config`].
//!
//! Each section (every issuer, every route) is deserialized on its own so that one
//! run reports every problem in the file, each with its YAML path, instead of
//! stopping at the first typo.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::interpolate::interpolate;
use super::{
    Action, AdminConfig, BackendConfig, CacheConfig, Config, ConfigError, IssuerConfig, LimitsConfig, Listen, Problems,
    RouteConfig, join_path,
};
use crate::backend::hasura::{ClaimsSettings, HasuraBackendConfig};
use crate::backend::supabase::SupabaseBackendConfig;
use crate::keys::{algorithms_for, is_loopback_url};

const TOP_LEVEL_KEYS: [&str; 7] = ["listen", "admin", "cache", "limits", "issuers", "backends", "routes"];
const BACKEND_TYPES: [&str; 2] = ["hasura", "supabase"];
const MIN_HMAC_SECRET_BYTES: usize = 32;
const MAX_LEEWAY_SECONDS: u64 = 86_400;
const MAX_UNKNOWN_KID_WAIT_MS: u64 = 1_000;

/// Loads and validates the config at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let source_name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
        source_name: source_name.clone(),
        problems: vec![super::Problem { path: String::new(), message: format!("cannot read file: {err}") }],
    })?;
    parse_str(&text, &source_name)
}

/// Parses and validates config text; `source_name` only labels errors.
pub fn parse_str(text: &str, source_name: &str) -> Result<Config, ConfigError> {
    let mut problems = Problems::default();
    let config = parse_document(text, &mut problems);
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ConfigError { source_name: source_name.to_string(), problems: problems.into_vec() }),
    }
}

fn parse_document(text: &str, problems: &mut Problems) -> Option<Config> {
    // Without the source snippet: the offending line may hold a secret.
    let mut doc: Value = match serde_saphyr::from_str_with_options(text, serde_saphyr::options! { with_snippet: false })
    {
        Ok(doc) => doc,
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
    interpolate(&mut doc, "", problems);
    let top = doc.as_object().expect("checked above");

    let listen = section::<Listen>(top.get("listen"), "listen", problems).unwrap_or_default();
    let admin = section::<AdminConfig>(top.get("admin"), "admin", problems).unwrap_or_default();
    let cache = section::<CacheConfig>(top.get("cache"), "cache", problems).unwrap_or_default();
    let limits = section::<LimitsConfig>(top.get("limits"), "limits", problems).unwrap_or_default();
    for (key, value) in [("max_headers", limits.max_headers), ("max_header_bytes", limits.max_header_bytes)] {
        if value == 0 {
            problems.push(join_path("limits", key), "must be greater than 0");
        }
    }
    let issuers = parse_issuers(top.get("issuers"), problems);
    let backends = parse_backends(top.get("backends"), problems);
    // References are checked against every declared name, parsed or not, so one
    // broken issuer does not also make every route that names it an error.
    let declared = Declared {
        issuers: keys_of(top.get("issuers")),
        backends: keys_of(top.get("backends")),
        hasura_backends: backends
            .iter()
            .filter(|(_, backend)| matches!(backend, BackendConfig::Hasura { .. }))
            .map(|(name, _)| name.clone())
            .collect(),
    };
    let routes = parse_routes(top.get("routes"), &declared, problems);
    // An unauthenticated control plane is only acceptable where only this machine can reach it.
    if admin.token.is_none() && !listen.admin.ip().is_loopback() {
        problems
            .push("admin.token", format!("required because listen.admin ({}) is not a loopback address", listen.admin));
    }
    if admin.token.as_ref().is_some_and(|token| token.len() < 16) {
        problems.push("admin.token", "use at least 16 characters");
    }
    Some(Config { listen, admin, cache, limits, issuers, backends, routes })
}

struct Declared {
    issuers: Vec<String>,
    backends: Vec<String>,
    hasura_backends: Vec<String>,
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

fn parse_at<T: DeserializeOwned>(value: &Value, path: &str, problems: &mut Problems) -> Option<T> {
    match super::value_de::from_value::<T>(value) {
        Ok(parsed) => Some(parsed),
        Err(err) => {
            let inner = err.path().to_string();
            let at = if inner == "." { path.to_string() } else { join_inner(path, &inner) };
            problems.push(at, err.into_inner().to_string());
            None
        }
    }
}

fn join_inner(path: &str, inner: &str) -> String {
    if inner.starts_with('[') { format!("{path}{inner}") } else { join_path(path, inner) }
}

fn parse_issuers(value: Option<&Value>, problems: &mut Problems) -> Vec<(String, IssuerConfig)> {
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return Vec::new();
    };
    let Some(map) = value.as_object() else {
        problems.push("issuers", "expected a mapping of issuer name to issuer");
        return Vec::new();
    };
    let mut issuers = Vec::new();
    for (name, raw) in map {
        let path = join_path("issuers", name);
        if let Some(mut issuer) = parse_at::<IssuerConfig>(raw, &path, problems) {
            if issuer.hasura_jwt_secret.is_some() {
                import_hasura_secret(&mut issuer, &path, problems);
            } else if issuer.issuer.is_none() {
                problems.push(join_path(&path, "issuer"), "required: the exact iss claim of this IdP's tokens");
            }
            check_issuer(&issuer, &path, problems);
            issuers.push((name.clone(), issuer));
        }
    }
    issuers
}

/// Turns `hasura_jwt_secret` into this issuer's fields. The other key fields
/// must stay unset: one source of truth per issuer.
fn import_hasura_secret(issuer: &mut IssuerConfig, path: &str, problems: &mut Problems) {
    let secret_path = join_path(path, "hasura_jwt_secret");
    let conflicting = [
        ("issuer", issuer.issuer.is_some()),
        ("jwks_uri", issuer.jwks_uri.is_some()),
        ("secret", issuer.secret.is_some()),
        ("audiences", issuer.audiences.is_some()),
        ("algorithms", issuer.algorithms.is_some()),
        ("leeway_seconds", issuer.leeway_seconds.is_some()),
        ("token_from", issuer.token_from.is_some()),
    ];
    for (key, set) in conflicting {
        if set {
            problems.push(
                join_path(path, key),
                "comes from hasura_jwt_secret here; set it there or drop hasura_jwt_secret",
            );
        }
    }
    let raw = issuer.hasura_jwt_secret.as_ref().expect("checked by the caller");
    let imported = match crate::backend::hasura::secret::parse(raw) {
        Ok(imported) => imported,
        Err(found) => {
            for (key, message) in found {
                let at = if key.is_empty() { secret_path.clone() } else { join_path(&secret_path, &key) };
                problems.push(at, message);
            }
            return;
        }
    };
    use crate::backend::hasura::secret::ImportedKeys;
    match imported.keys {
        ImportedKeys::Jwks(url) => issuer.jwks_uri = Some(url),
        ImportedKeys::Secret(secret) => issuer.secret = Some(secret),
        ImportedKeys::PublicKey { kind, pem } => issuer.public_key = Some((kind, pem)),
    }
    issuer.issuer = imported.issuer;
    issuer.audiences = imported.audiences;
    issuer.leeway_seconds = Some(imported.leeway_seconds);
    issuer.token_from = Some(imported.token_from);
    issuer.hasura_claims = Some(imported.claims);
}

fn check_issuer(issuer: &IssuerConfig, path: &str, problems: &mut Problems) {
    if issuer.issuer.as_ref().is_some_and(String::is_empty) {
        problems.push(join_path(path, "issuer"), "must not be empty");
    }
    match (&issuer.jwks_uri, &issuer.secret) {
        (Some(_), Some(_)) => {
            problems.push(join_path(path, "secret"), "use either jwks_uri (public keys) or secret (HS*), not both")
        }
        (Some(uri), None) => check_key_url(uri, &join_path(path, "jwks_uri"), problems),
        (None, None) if issuer.public_key.is_some() => {}
        (None, None) => {
            if let Some(url) = &issuer.issuer {
                check_key_url(url, &join_path(path, "issuer"), problems);
            }
        }
        (None, Some(secret)) if secret.len() < MIN_HMAC_SECRET_BYTES => problems.push(
            join_path(path, "secret"),
            format!("an HS* secret must be at least {MIN_HMAC_SECRET_BYTES} bytes (RFC 7518 section 3.2)"),
        ),
        (None, Some(_)) => {}
    }
    if let Some(names) = &issuer.algorithms {
        let algs_path = join_path(path, "algorithms");
        if names.is_empty() {
            problems.push(&algs_path, "must list at least one algorithm");
        }
        if let Err(message) = algorithms_for(Some(names), issuer.secret.as_ref().map(String::len)) {
            problems.push(algs_path, message);
        }
    }
    if issuer.audiences.as_ref().is_some_and(|audiences| audiences.is_empty()) {
        problems.push(join_path(path, "audiences"), "must list at least one audience (omit it to skip the aud check)");
    }
    // jsonwebtoken subtracts the leeway from the clock; a day is more than any real skew.
    if issuer.leeway() > MAX_LEEWAY_SECONDS {
        let key = if issuer.hasura_jwt_secret.is_some() { "hasura_jwt_secret.allowed_skew" } else { "leeway_seconds" };
        problems.push(join_path(path, key), format!("at most {MAX_LEEWAY_SECONDS} seconds (one day)"));
    }
    let refresh = &issuer.refresh;
    let refresh_path = join_path(path, "refresh");
    if refresh.min_seconds == 0 || refresh.min_seconds > refresh.max_seconds {
        problems.push(&refresh_path, "need 0 < min_seconds <= max_seconds");
    }
    if refresh.fetch_timeout_ms == 0 {
        problems.push(join_path(&refresh_path, "fetch_timeout_ms"), "must be greater than 0");
    }
    // A Check waits at most this long on the network: it must stay well below Envoy's timeout.
    if refresh.unknown_kid_wait_ms > MAX_UNKNOWN_KID_WAIT_MS {
        problems.push(
            join_path(&refresh_path, "unknown_kid_wait_ms"),
            format!("at most {MAX_UNKNOWN_KID_WAIT_MS} (a Check must answer within Envoy's ext_authz timeout)"),
        );
    }
}

/// Key material must come over TLS: anyone on the path could otherwise mint tokens.
fn check_key_url(url: &str, path: &str, problems: &mut Problems) {
    // The URL itself is not repeated: it may carry credentials.
    match url::Url::parse(url) {
        Err(err) => problems.push(path, format!("not a valid URL ({err})")),
        Ok(parsed) if parsed.scheme() == "https" => {}
        Ok(parsed) if parsed.scheme() == "http" && is_loopback_url(&parsed) => {}
        Ok(_) => problems.push(path, "keys must be fetched over https (http only for loopback)"),
    }
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
        match raw.get("type").and_then(Value::as_str) {
            Some("hasura") => {
                if let Some(backend) = parse_hasura_backend(raw, &path, problems) {
                    backends.insert(name.clone(), backend);
                }
            }
            Some("supabase") => {
                if let Some(config) = parse_at::<SupabaseBackendConfig>(raw, &path, problems) {
                    for (key, message) in crate::backend::supabase::validate(&config) {
                        problems.push(join_path(&path, key), message);
                    }
                    backends.insert(name.clone(), BackendConfig::Supabase(config));
                }
            }
            _ => problems.push(join_path(&path, "type"), format!("expected one of: {}", BACKEND_TYPES.join(", "))),
        }
    }
    backends
}

fn parse_hasura_backend(raw: &Value, path: &str, problems: &mut Problems) -> Option<BackendConfig> {
    let config = parse_at::<HasuraBackendConfig>(raw, path, problems)?;
    if config.admin_secret.is_empty() {
        problems.push(join_path(path, "admin_secret"), "must not be empty");
    }
    if !crate::backend::is_header_value(&config.admin_secret) {
        problems.push(join_path(path, "admin_secret"), "contains control characters (a stray newline?)");
    }
    if config.unauthorized_role.as_ref().is_some_and(String::is_empty) {
        problems.push(join_path(path, "unauthorized_role"), "must not be empty (omit it to deny token-less requests)");
    }
    if config.unauthorized_role.as_ref().is_some_and(|role| !crate::backend::is_header_value(role)) {
        problems.push(join_path(path, "unauthorized_role"), "contains control characters");
    }
    let claims = ClaimsSettings::from_parts(
        config.claims_namespace.as_deref(),
        config.claims_namespace_path.as_deref(),
        config.claims_format,
        config.claims_map.as_ref(),
    );
    match claims {
        Ok(claims) => Some(BackendConfig::Hasura { config, claims }),
        Err(found) => {
            for (key, message) in found {
                problems.push(join_path(path, key), message);
            }
            None
        }
    }
}

fn parse_routes(value: Option<&Value>, declared: &Declared, problems: &mut Problems) -> Vec<RouteConfig> {
    let Some(items) = value.and_then(Value::as_array) else {
        problems.push("routes", "expected a list of routes (with no route every request is denied)");
        return Vec::new();
    };
    let mut routes = Vec::new();
    for (index, raw) in items.iter().enumerate() {
        let path = format!("routes[{index}]");
        if let Some(route) = parse_at::<RouteConfig>(raw, &path, problems) {
            check_route(&route, &path, problems);
            check_references(&route, &path, declared, problems);
            routes.push(route);
        }
    }
    routes
}

fn check_route(route: &RouteConfig, path: &str, problems: &mut Problems) {
    let matcher = &route.matcher;
    let match_path = join_path(path, "match");
    if matcher.prefix.is_some() && matcher.path.is_some() {
        problems.push(&match_path, "use either prefix or path, not both");
    }
    for (key, value) in [("prefix", &matcher.prefix), ("path", &matcher.path)] {
        let Some(value) = value else { continue };
        if !value.starts_with('/') {
            problems.push(join_path(&match_path, key), "must start with '/'");
        }
        // Requests are matched in canonical form; a pattern that has none could never match.
        match crate::request::canonical_path(value) {
            Err(_) => problems.push(
                join_path(&match_path, key),
                "has dot-segments, repeated slashes, encoded slashes or broken escapes: requests like it are refused",
            ),
            Ok(canonical) if canonical.had_parameters => problems.push(
                join_path(&match_path, key),
                "';' path parameters are removed before matching: write the path without them",
            ),
            Ok(_) => {}
        }
    }
    if let Some(methods) = &matcher.methods {
        for (index, method) in methods.iter().enumerate() {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                problems.push(format!("{match_path}.methods[{index}]"), "not an HTTP method");
            }
        }
    }
    if route.action != Action::Authenticate && route.issuers.is_some() {
        problems.push(join_path(path, "issuers"), "only meaningful with action: authenticate");
    }
    // An allow route would skip the backend's header hygiene (client x-hasura-*
    // or apikey would pass untouched): use unauthorized_role / allow_anonymous.
    if route.action != Action::Authenticate && route.backend.is_some() {
        problems.push(
            join_path(path, "backend"),
            "only used with action: authenticate (for token-less access use the backend's unauthorized_role or allow_anonymous)",
        );
    }
}

/// Names used by a route must exist; a dangling name would otherwise deny or allow by accident.
fn check_references(route: &RouteConfig, path: &str, declared: &Declared, problems: &mut Problems) {
    for (position, name) in route.issuers.iter().flatten().enumerate() {
        if !declared.issuers.contains(name) {
            problems.push(
                format!("{path}.issuers[{position}]"),
                format!("unknown issuer {name:?} (declared: {})", declared.issuers.join(", ")),
            );
        }
    }
    if route.issuers.as_ref().is_some_and(|names| names.is_empty()) {
        problems.push(join_path(path, "issuers"), "an empty list accepts no token; omit it to accept every issuer");
    }
    if let Some(backend) = &route.backend
        && !declared.backends.contains(backend)
    {
        problems.push(join_path(path, "backend"), format!("unknown backend {backend:?}"));
    }
    if route.error_status.is_some()
        && !route.backend.as_ref().is_some_and(|name| declared.hasura_backends.contains(name))
    {
        problems.push(join_path(path, "error_status"), "only applies to routes with a hasura backend");
    }
    if route.action == Action::Authenticate && route.issuers.is_none() && declared.issuers.is_empty() {
        problems.push(path, "authenticates tokens but no issuer is declared");
    }
}
