//! From verified claims to a Hasura session, exactly as Hasura's JWT mode
//! derives it: where the claims live (namespace, namespace path or
//! `claims_map`), the role rules, and the string-only session variables.
//! Error codes and messages are Hasura's own, so clients keep working.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::{ClaimsFormat, Problem};
use crate::header::{is_header_name, is_header_value};
use crate::jsonpath::JsonPath;

pub const DEFAULT_NAMESPACE: &str = "https://hasura.io/jwt/claims";
pub const ALLOWED_ROLES: &str = "x-hasura-allowed-roles";
pub const DEFAULT_ROLE: &str = "x-hasura-default-role";
pub const ROLE: &str = "x-hasura-role";

/// Claims Hasura's JWT library treats as registered: namespace lookups never see them.
const REGISTERED: [&str; 7] = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

/// Names a token must never turn into headers: with the admin secret present,
/// Hasura would trust them (and backend-only permissions are never granted).
const NEVER_FROM_CLAIMS: [&str; 5] = [
    ROLE,
    "x-hasura-admin-secret",
    "x-hasura-access-key",
    "x-hasura-use-backend-only-permissions",
    "x-hasura-backend-only-permissions",
];

#[derive(Debug, Clone)]
enum Location {
    Namespace(String),
    Path(JsonPath),
}

#[derive(Debug, Clone)]
enum MapEntry {
    Literal(Value),
    Path { path: JsonPath, default: Option<Value> },
}

#[derive(Debug, Clone)]
enum Source {
    Located {
        location: Location,
        format: ClaimsFormat,
    },
    /// Session variable name (lower-case) -> where its value comes from.
    Map(Vec<(String, MapEntry)>),
}

/// Where a token's Hasura claims live and how they are read.
#[derive(Debug, Clone)]
pub struct ClaimsSettings {
    source: Source,
}

impl Default for ClaimsSettings {
    fn default() -> Self {
        ClaimsSettings {
            source: Source::Located {
                location: Location::Namespace(DEFAULT_NAMESPACE.into()),
                format: ClaimsFormat::Json,
            },
        }
    }
}

impl ClaimsSettings {
    /// Builds settings from Hasura's keys, with Hasura's precedence
    /// (`claims_map` > `claims_namespace_path` > `claims_namespace`) and config errors.
    pub fn from_parts(
        namespace: Option<&str>,
        namespace_path: Option<&str>,
        format: Option<ClaimsFormat>,
        map: Option<&Value>,
    ) -> Result<Self, Vec<Problem>> {
        if let Some(map) = map {
            return parse_map(map).map(|entries| ClaimsSettings { source: Source::Map(entries) });
        }
        let location = match (namespace, namespace_path) {
            (Some(_), Some(_)) => {
                return Err(vec![Problem::new(
                    "claims_namespace_path",
                    "claims_namespace and claims_namespace_path both cannot be set",
                )]);
            }
            (_, Some(path)) => Location::Path(JsonPath::parse(path).map_err(|err| {
                vec![Problem::new(
                    "claims_namespace_path",
                    err.replacen("invalid JSON path", "invalid JSON path claims_namespace_path error", 1),
                )]
            })?),
            (Some(namespace), None) => Location::Namespace(namespace.to_string()),
            (None, None) => Location::Namespace(DEFAULT_NAMESPACE.into()),
        };
        Ok(ClaimsSettings { source: Source::Located { location, format: format.unwrap_or_default() } })
    }
}

fn parse_map(map: &Value) -> Result<Vec<(String, MapEntry)>, Vec<Problem>> {
    let Some(object) = map.as_object() else {
        return Err(vec![Problem::new(
            "claims_map",
            "expected an object of session variable -> value or {path, default}",
        )]);
    };
    let mut problems = Vec::new();
    for required in [ALLOWED_ROLES, DEFAULT_ROLE] {
        if !object.contains_key(required) {
            problems.push(Problem::new("claims_map", format!("{required} is expected but not found")));
            return Err(problems);
        }
    }
    let mut entries = Vec::new();
    for (name, raw) in object {
        let entry = match raw.as_object() {
            Some(spec) if spec.contains_key("path") => {
                let unknown: Vec<&String> = spec.keys().filter(|key| *key != "path" && *key != "default").collect();
                if !unknown.is_empty() {
                    problems.push(Problem::new(
                        "claims_map",
                        format!("{name}: unknown key(s) {unknown:?}; expected path and default"),
                    ));
                }
                let path = spec["path"].as_str().map(JsonPath::parse);
                match path {
                    Some(Ok(path)) => MapEntry::Path { path, default: spec.get("default").cloned() },
                    Some(Err(err)) => {
                        problems.push(Problem::new("claims_map", format!("{name}: {err}")));
                        continue;
                    }
                    None => {
                        problems.push(Problem::new("claims_map", format!("{name}: path must be a string")));
                        continue;
                    }
                }
            }
            _ => MapEntry::Literal(raw.clone()),
        };
        let lowered = name.to_ascii_lowercase();
        // Each entry becomes a request header next to the admin secret: a name
        // outside x-hasura-* (authorization, content-length) would hand a claim
        // a header Hasura never reads as a session variable.
        if !lowered.starts_with("x-hasura-") {
            problems.push(Problem::new("claims_map", format!("{name}: session variables start with x-hasura-")));
            continue;
        }
        if let Some(problem) = literal_problem(&lowered, &entry) {
            problems.push(Problem::new("claims_map", format!("{name}: {problem}")));
        }
        entries.push((lowered, entry));
    }
    if problems.is_empty() { Ok(entries) } else { Err(problems) }
}

/// Literal values (and defaults) must already have the type the session needs.
fn literal_problem(name: &str, entry: &MapEntry) -> Option<String> {
    let literal = match entry {
        MapEntry::Literal(value) => value,
        MapEntry::Path { default: Some(value), .. } => value,
        MapEntry::Path { default: None, .. } => return None,
    };
    match name {
        ALLOWED_ROLES => parse_roles(literal).err(),
        DEFAULT_ROLE => parse_role(literal).err(),
        _ => literal.as_str().is_none().then(|| format!("must be a string, found {}", type_name(literal))),
    }
}

/// A Hasura session: the selected role and the other variables, names lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub role: String,
    pub variables: BTreeMap<String, String>,
}

/// Why a verified token gives no session; `code` is Hasura's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionError {
    pub code: &'static str,
    pub message: String,
}

fn invalid_claims(message: impl Into<String>) -> SessionError {
    SessionError { code: "jwt-invalid-claims", message: message.into() }
}

fn missing_role_claim(name: &str) -> SessionError {
    SessionError { code: "jwt-missing-role-claims", message: format!("JWT claim does not contain {name}") }
}

impl ClaimsSettings {
    /// Derives the session for verified `claims`; `requested_role` is the
    /// client's `x-hasura-role` header, if any.
    pub fn session(&self, claims: &Map<String, Value>, requested_role: Option<&str>) -> Result<Session, SessionError> {
        let (hasura_claims, role_wording) = match &self.source {
            Source::Located { location, format } => (located_claims(claims, location, *format)?, "a single role name"),
            Source::Map(entries) => (mapped_claims(claims, entries)?, "a role"),
        };
        let allowed = match hasura_claims.get(ALLOWED_ROLES) {
            None => return Err(missing_role_claim(ALLOWED_ROLES)),
            Some(value) => parse_roles(value)
                .map_err(|why| invalid_claims(format!("invalid {ALLOWED_ROLES}; should be a list of roles: {why}")))?,
        };
        let default = match hasura_claims.get(DEFAULT_ROLE) {
            None => return Err(missing_role_claim(DEFAULT_ROLE)),
            Some(value) => parse_role(value)
                .map_err(|why| invalid_claims(format!("invalid {DEFAULT_ROLE}; should be {role_wording}: {why}")))?,
        };
        let role = requested_role.filter(|role| !role.is_empty()).map(str::to_string).unwrap_or(default);
        if !allowed.contains(&role) {
            return Err(SessionError {
                code: "access-denied",
                message: "Your requested role is not in allowed roles".into(),
            });
        }
        let mut variables = BTreeMap::new();
        for (name, value) in hasura_claims {
            if name == ALLOWED_ROLES || name == DEFAULT_ROLE || NEVER_FROM_CLAIMS.contains(&name.as_str()) {
                continue;
            }
            let Some(text) = value.as_str() else {
                return Err(invalid_claims(format!(
                    "x-hasura-* claims: parsing Text failed, expected String, but encountered {}",
                    type_name(&value)
                )));
            };
            variables.insert(name, text.to_string());
        }
        // These become request headers next to the admin secret: a CR or LF in a
        // claim (names are user-editable at many IdPs) must never reach Envoy.
        let unsafe_header = variables.iter().find(|(name, value)| !is_header_name(name) || !is_header_value(value));
        if let Some((name, _)) = unsafe_header {
            return Err(invalid_claims(format!("x-hasura-* claims: {name:?} cannot be sent as an HTTP header")));
        }
        if !is_header_value(&role) {
            return Err(invalid_claims("x-hasura-role: the role cannot be sent as an HTTP header"));
        }
        Ok(Session { role, variables })
    }
}

/// Namespace or namespace-path lookup over the unregistered claims, then the
/// `x-hasura-` filter.
fn located_claims(
    claims: &Map<String, Value>,
    location: &Location,
    format: ClaimsFormat,
) -> Result<BTreeMap<String, Value>, SessionError> {
    let unregistered: Map<String, Value> = claims
        .iter()
        .filter(|(key, _)| !REGISTERED.contains(&key.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (found, described) = match location {
        Location::Namespace(key) => (
            unregistered.get(key).cloned().ok_or_else(|| invalid_claims(format!("claims key: '{key}' not found")))?,
            format!("claims_namespace {key}"),
        ),
        Location::Path(path) => (
            path.find(&Value::Object(unregistered)).ok_or_else(|| {
                invalid_claims(format!("claims not found at claims_namespace_path: '{}'", path.as_str()))
            })?,
            format!("claims_namespace_path {}", path.as_str()),
        ),
    };
    let object = match (format, found) {
        (ClaimsFormat::Json, Value::Object(object)) => object,
        (ClaimsFormat::Json, _) => return Err(invalid_claims("expecting a json object when claims_format is json")),
        (ClaimsFormat::StringifiedJson, Value::String(text)) => match serde_json::from_str(&text) {
            Ok(Value::Object(object)) => object,
            // Hasura quotes the text it found; a client's claim text never goes
            // into a message that is logged and sent back.
            _ => return Err(invalid_claims(format!("expecting stringified json at: '{described}'"))),
        },
        (ClaimsFormat::StringifiedJson, _) => {
            return Err(invalid_claims("expecting a string when claims_format is stringified_json"));
        }
    };
    Ok(object
        .into_iter()
        .filter_map(|(name, value)| {
            let lowered = name.to_lowercase();
            lowered.starts_with("x-hasura-").then_some((lowered, value))
        })
        .collect())
}

/// `claims_map` evaluation over the full claim set (registered claims included).
fn mapped_claims(
    claims: &Map<String, Value>,
    entries: &[(String, MapEntry)],
) -> Result<BTreeMap<String, Value>, SessionError> {
    let mut root = claims.clone();
    // Hasura's claim-set rendering shows a one-element aud as a plain string.
    if let Some(Value::Array(list)) = root.get("aud")
        && list.len() == 1
    {
        let single = list[0].clone();
        root.insert("aud".into(), single);
    }
    let root = Value::Object(root);
    let mut out = BTreeMap::new();
    // Roles first, then the rest, so the first error is the one Hasura reports.
    let ordered = entries
        .iter()
        .filter(|(name, _)| name == ALLOWED_ROLES)
        .chain(entries.iter().filter(|(name, _)| name == DEFAULT_ROLE))
        .chain(entries.iter().filter(|(name, _)| name != ALLOWED_ROLES && name != DEFAULT_ROLE));
    for (name, entry) in ordered {
        let value = match entry {
            MapEntry::Literal(value) => value.clone(),
            MapEntry::Path { path, default } => match (path.find(&root), default) {
                (Some(found), _) => found,
                (None, Some(default)) => default.clone(),
                (None, None) if name == ALLOWED_ROLES || name == DEFAULT_ROLE => return Err(missing_role_claim(name)),
                (None, None) => return Err(invalid_claims(format!("JWT claim from claims_map, {name} not found"))),
            },
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

fn parse_roles(value: &Value) -> Result<Vec<String>, String> {
    let Some(items) = value.as_array() else {
        return Err(format!("parsing [] failed, expected Array, but encountered {}", type_name(value)));
    };
    items.iter().map(parse_role).collect()
}

fn parse_role(value: &Value) -> Result<String, String> {
    match value.as_str() {
        Some("") => Err("empty string not allowed".into()),
        Some(role) => Ok(role.to_string()),
        None => Err(format!("parsing Text failed, expected String, but encountered {}", type_name(value))),
    }
}

/// aeson's names for JSON types, as they appear in Hasura's messages.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "Null",
        Value::Bool(_) => "Boolean",
        Value::Number(_) => "Number",
        Value::String(_) => "String",
        Value::Array(_) => "Array",
        Value::Object(_) => "Object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn standard(extra: Value) -> Map<String, Value> {
        let mut hasura = json!({"x-hasura-allowed-roles": ["user", "editor"], "x-hasura-default-role": "user", "X-Hasura-User-Id": "42"});
        for (key, value) in extra.as_object().unwrap() {
            hasura[key] = value.clone();
        }
        claims(json!({"sub": "u", "https://hasura.io/jwt/claims": hasura, "name": "ignored"}))
    }

    #[test]
    fn default_namespace_role_selection_and_lowercasing() {
        let settings = ClaimsSettings::default();
        let session = settings.session(&standard(json!({})), None).unwrap();
        assert_eq!(session.role, "user");
        assert_eq!(session.variables, BTreeMap::from([("x-hasura-user-id".to_string(), "42".to_string())]));
        assert_eq!(settings.session(&standard(json!({})), Some("editor")).unwrap().role, "editor");
        let denied = settings.session(&standard(json!({})), Some("Editor")).unwrap_err();
        assert_eq!(
            (denied.code, denied.message.as_str()),
            ("access-denied", "Your requested role is not in allowed roles")
        );
        let admin = settings.session(&standard(json!({})), Some("admin")).unwrap_err();
        assert_eq!(admin.code, "access-denied");
    }

    #[test]
    fn role_claim_errors_match_hasura() {
        let settings = ClaimsSettings::default();
        let err = |extra: Value| settings.session(&standard(extra), None).unwrap_err();
        let missing = settings
            .session(&claims(json!({"https://hasura.io/jwt/claims": {"x-hasura-default-role": "user"}})), None)
            .unwrap_err();
        assert_eq!(missing, missing_role_claim(ALLOWED_ROLES));
        let missing_default = settings
            .session(&claims(json!({"https://hasura.io/jwt/claims": {"x-hasura-allowed-roles": ["user"]}})), None)
            .unwrap_err();
        assert_eq!(missing_default.message, "JWT claim does not contain x-hasura-default-role");
        assert_eq!(
            err(json!({"x-hasura-allowed-roles": "user"})).message,
            "invalid x-hasura-allowed-roles; should be a list of roles: parsing [] failed, expected Array, but encountered String"
        );
        assert_eq!(err(json!({"x-hasura-default-role": 1})).code, "jwt-invalid-claims");
        assert_eq!(err(json!({"x-hasura-allowed-roles": []})).code, "access-denied");
        assert_eq!(
            err(json!({"x-hasura-org-ids": ["a", "b"]})).message,
            "x-hasura-* claims: parsing Text failed, expected String, but encountered Array"
        );
    }

    #[test]
    fn claim_values_cannot_inject_headers() {
        let settings = ClaimsSettings::default();
        for extra in [
            json!({"x-hasura-name": "x\r\nx-hasura-role: admin"}),
            json!({"x-hasura-na me": "x"}),
            json!({"x-hasura-allowed-roles": ["user\nx"], "x-hasura-default-role": "user\nx"}),
        ] {
            let err = settings.session(&standard(extra.clone()), None).unwrap_err();
            assert_eq!(err.code, "jwt-invalid-claims", "{extra}");
        }
        let tab = settings.session(&standard(json!({"x-hasura-name": "a\tb é"})), None).unwrap();
        assert_eq!(tab.variables["x-hasura-name"], "a\tb é");
    }

    #[test]
    fn claims_never_smuggle_privileged_headers() {
        let settings = ClaimsSettings::default();
        let session = settings
            .session(
                &standard(json!({"x-hasura-admin-secret": "x", "x-hasura-use-backend-only-permissions": "true", "x-hasura-role": "editor"})),
                None,
            )
            .unwrap();
        assert_eq!(session.role, "user", "a role claim is ignored");
        assert_eq!(session.variables.keys().collect::<Vec<_>>(), vec!["x-hasura-user-id"]);
    }

    #[test]
    fn namespace_path_and_stringified_json() {
        let path = ClaimsSettings::from_parts(None, Some("$.hasura.claims"), None, None).unwrap();
        let token =
            claims(json!({"hasura": {"claims": {"x-hasura-allowed-roles": ["u"], "x-hasura-default-role": "u"}}}));
        assert_eq!(path.session(&token, None).unwrap().role, "u");
        let missing = path.session(&claims(json!({"hasura": {}})), None).unwrap_err();
        assert_eq!(missing.message, "claims not found at claims_namespace_path: '$.hasura.claims'");

        let stringified = ClaimsSettings::from_parts(None, None, Some(ClaimsFormat::StringifiedJson), None).unwrap();
        let inner = json!({"x-hasura-allowed-roles": ["u"], "x-hasura-default-role": "u"}).to_string();
        let token = claims(json!({"https://hasura.io/jwt/claims": inner}));
        assert_eq!(stringified.session(&token, None).unwrap().role, "u");
        let forged = claims(json!({"https://hasura.io/jwt/claims": "x\n2026-01-01 INFO forged\u{1b}[2K"}));
        let not_json = stringified.session(&forged, None).unwrap_err();
        assert_eq!(
            not_json.message, "expecting stringified json at: 'claims_namespace https://hasura.io/jwt/claims'",
            "no claim text"
        );
        let not_string = stringified.session(&standard(json!({})), None).unwrap_err();
        assert_eq!(not_string.message, "expecting a string when claims_format is stringified_json");
        let json_format = ClaimsSettings::default();
        assert_eq!(
            json_format.session(&token, None).unwrap_err().message,
            "expecting a json object when claims_format is json"
        );
    }

    #[test]
    fn claims_map_with_defaults_and_literals() {
        let map = json!({
            "x-hasura-allowed-roles": {"path": "$.roles[*].key"},
            "x-hasura-default-role": {"path": "$.primary_role", "default": "user"},
            "x-hasura-user-id": {"path": "$.sub"},
            "x-hasura-org-id": {"path": "$.org_code", "default": ""},
            "X-Hasura-Tenant": "acme"
        });
        let settings = ClaimsSettings::from_parts(None, None, None, Some(&map)).unwrap();
        let token = claims(json!({"sub": "kp_1", "roles": [{"key": "user"}, {"key": "admin"}]}));
        let session = settings.session(&token, Some("admin")).unwrap();
        assert_eq!(session.role, "admin");
        assert_eq!(
            session.variables,
            BTreeMap::from([
                ("x-hasura-org-id".into(), "".into()),
                ("x-hasura-tenant".into(), "acme".into()),
                ("x-hasura-user-id".into(), "kp_1".into())
            ])
        );
        let no_sub = settings.session(&claims(json!({"roles": [{"key": "user"}]})), None).unwrap_err();
        assert_eq!(no_sub.message, "JWT claim from claims_map, x-hasura-user-id not found");
    }

    #[test]
    fn config_errors_match_hasura() {
        let both = ClaimsSettings::from_parts(Some("a"), Some("$.b"), None, None).unwrap_err();
        assert_eq!(both[0].message, "claims_namespace and claims_namespace_path both cannot be set");
        let no_roles =
            ClaimsSettings::from_parts(None, None, None, Some(&json!({"x-hasura-default-role": "u"}))).unwrap_err();
        assert_eq!(no_roles[0].message, "x-hasura-allowed-roles is expected but not found");
        let bad_path = ClaimsSettings::from_parts(None, Some("$..x"), None, None).unwrap_err();
        assert!(
            bad_path[0].message.starts_with("invalid JSON path claims_namespace_path error. Accept"),
            "{}",
            bad_path[0].message
        );
        assert!(!bad_path[0].message.contains("$..x"), "never the value");
        let bad_literal = ClaimsSettings::from_parts(
            None,
            None,
            None,
            Some(&json!({"x-hasura-allowed-roles": "user", "x-hasura-default-role": "user"})),
        )
        .unwrap_err();
        assert!(bad_literal[0].message.contains("expected Array"), "{bad_literal:?}");
    }

    #[test]
    fn claims_map_entries_are_session_variables() {
        let map = json!({
            "x-hasura-allowed-roles": ["user"], "x-hasura-default-role": "user",
            "Authorization": {"path": "$.sub"}, "x-hasura-user-id": {"path": "$.sub"}
        });
        let problems = ClaimsSettings::from_parts(None, None, None, Some(&map)).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            (problems[0].path.as_str(), problems[0].message.as_str()),
            ("claims_map", "Authorization: session variables start with x-hasura-")
        );
    }
}
