//! What any upstream may trust about the caller, beyond the backends' own
//! headers: identity headers set from verified claims (`x-user-id: sub`),
//! claims exported as Envoy dynamic metadata, and whether the token itself
//! travels on. A client's copy of a configured identity header never reaches
//! the upstream: it is removed on every allowed request, whether or not the
//! token carries the claim.

use serde_json::{Map, Value};

use crate::backend::Mutations;
use crate::config::{BackendConfig, DefaultsConfig, Problem, RouteConfig};
use crate::header::{is_header_name, is_header_value};
use crate::jsonpath::ClaimRef;

/// Longest identity header value sent; a longer claim is left out.
pub const MAX_HEADER_VALUE_BYTES: usize = 4096;

/// Headers an identity header may not be: the request's own framing and
/// routing, credentials, and Envoy's internal headers.
const RESERVED: [&str; 10] = [
    "host",
    "authorization",
    "cookie",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "keep-alive",
];

/// Names in the dynamic metadata portcullis already fills.
const RESERVED_METADATA: [&str; 5] = ["route", "backend", "iss", "reason", "status"];

/// A route's identity settings, compiled.
#[derive(Debug, Default)]
pub struct Identity {
    headers: Vec<(String, ClaimRef)>,
    metadata: Vec<String>,
    /// Token headers removed before the request goes upstream (`forward_token: false`).
    drop: Vec<String>,
}

impl Identity {
    /// Compiles a route's `headers`, `metadata_claims` and `forward_token`, taking
    /// `defaults` for routes without a backend. `token_headers` are the headers the
    /// route's issuers read tokens from. Problems are relative to the route.
    pub fn compile(
        route: &RouteConfig,
        defaults: &DefaultsConfig,
        backend: Option<&BackendConfig>,
        token_headers: &[String],
    ) -> Result<Identity, Vec<Problem>> {
        let mut problems = Vec::new();
        let plain = backend.is_none();
        let headers = route.headers.as_ref().or(defaults.headers.as_ref().filter(|_| plain));
        let metadata = route.metadata_claims.as_ref().or(defaults.metadata_claims.as_ref().filter(|_| plain));
        let forward_token = route.forward_token.or(defaults.forward_token.filter(|_| plain));
        if route.forward_token.is_some() && !plain {
            problems.push(Problem::new(
                "forward_token",
                "only for routes without a backend (Hasura has its own forward_token; Supabase replaces the token)",
            ));
        }
        let mut compiled = Identity::default();
        for (name, claim) in headers.into_iter().flatten() {
            match header(name, claim, backend) {
                Ok(pair) if compiled.headers.iter().any(|(known, _)| *known == pair.0) => problems
                    .push(Problem::new(format!("headers.{name}"), "named twice (header names are case-insensitive)")),
                Ok(pair) => compiled.headers.push(pair),
                Err(message) => problems.push(Problem::new(format!("headers.{name}"), message)),
            }
        }
        for (index, claim) in metadata.into_iter().flatten().enumerate() {
            if claim.is_empty() || RESERVED_METADATA.contains(&claim.as_str()) {
                let message = format!("must be a claim name other than {}", RESERVED_METADATA.join(", "));
                problems.push(Problem::new(format!("metadata_claims[{index}]"), message));
            }
            compiled.metadata.push(claim.clone());
        }
        if forward_token == Some(false) {
            compiled.drop = token_headers.to_vec();
        }
        if problems.is_empty() { Ok(compiled) } else { Err(problems) }
    }

    /// The headers to set from `claims` (`None`: no token), and every
    /// configured one the client sent removed.
    pub fn mutations(&self, claims: Option<&Map<String, Value>>) -> Mutations {
        let mut mutations = Mutations::default();
        let mut absent = Vec::new();
        for (name, claim) in &self.headers {
            let value = claims.and_then(|claims| claim.find(claims)).and_then(|value| header_value(&value));
            match value {
                Some(value) => mutations.set_headers.push((name.clone(), value)),
                None => absent.push(name.clone()),
            }
        }
        mutations.remove(absent.into_iter().chain(self.drop.iter().cloned()));
        mutations
    }

    /// The exported claims the token has, for the dynamic metadata.
    pub fn metadata(&self, claims: &Map<String, Value>) -> Vec<(String, Value)> {
        self.metadata.iter().filter_map(|name| Some((name.clone(), claims.get(name)?.clone()))).collect()
    }

    /// The identity headers, for `token verify`.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &ClaimRef)> {
        self.headers.iter().map(|(name, claim)| (name.as_str(), claim))
    }
}

/// `name` lower-cased, when it is a header portcullis may set as an identity header.
pub fn settable(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    (is_header_name(&lower) && !RESERVED.contains(&lower.as_str()) && !lower.starts_with("x-envoy-")).then_some(lower)
}

fn header(name: &str, claim: &str, backend: Option<&BackendConfig>) -> Result<(String, ClaimRef), String> {
    let Some(lower) = settable(name) else {
        return Err(format!(
            "not a header portcullis may set (a token name other than {} and x-envoy-*)",
            RESERVED.join(", ")
        ));
    };
    let owned_by_backend = match backend {
        Some(BackendConfig::Hasura(_)) => lower.starts_with("x-hasura-"),
        Some(BackendConfig::Supabase(_)) => lower == "apikey",
        None => false,
    };
    if owned_by_backend {
        return Err("the route's backend sets this header".into());
    }
    Ok((lower, ClaimRef::parse(claim)?))
}

/// A claim as a header value: a string as it is, a list of strings joined with
/// `,`; anything else, a control character or an oversized value is left out.
fn header_value(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Array(items) => joined(items)?,
        _ => return None,
    };
    (text.len() <= MAX_HEADER_VALUE_BYTES && is_header_value(&text)).then_some(text)
}

/// A list joined with `,` only when the upstream can split it back into exactly
/// these elements: `["eng,admin"]` and `["eng", "admin"]` must not both read
/// `eng,admin`. So every element is a string, not empty, without a `,`, and
/// without leading or trailing whitespace (which a splitting upstream trims).
fn joined(items: &[Value]) -> Option<String> {
    let splits_back = |text: &&str| !text.is_empty() && !text.contains(',') && text.trim() == *text;
    let elements = items.iter().map(|item| item.as_str().filter(splits_back)).collect::<Option<Vec<_>>>()?;
    Some(elements.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(yaml: &str) -> RouteConfig {
        crate::config::value_de::from_value(&serde_saphyr::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn claims_become_headers_and_client_copies_always_go() {
        let config = route(
            "{ headers: { X-User-Id: sub, x-org: '$.org.code', x-groups: groups, x-email: email }, forward_token: false }",
        );
        let identity = Identity::compile(&config, &DefaultsConfig::default(), None, &["authorization".into()]).unwrap();
        let claims = json!({"sub": "u1", "org": {"code": "acme"}, "groups": ["a", "b"], "email": "bad\r\nx-admin: 1"});
        let mutations = identity.mutations(Some(claims.as_object().unwrap()));
        assert_eq!(
            mutations.set_headers,
            [
                ("x-user-id".to_string(), "u1".to_string()),
                ("x-groups".into(), "a,b".into()),
                ("x-org".into(), "acme".into())
            ]
        );
        assert_eq!(mutations.remove_headers, ["x-email", "authorization"]);
        let anonymous = identity.mutations(None);
        assert!(anonymous.set_headers.is_empty());
        assert_eq!(anonymous.remove_headers, ["x-user-id", "x-email", "x-groups", "x-org", "authorization"]);
    }

    #[test]
    fn lists_are_joined_only_when_they_split_back() {
        let identity =
            Identity::compile(&route("{ headers: { x-groups: groups } }"), &DefaultsConfig::default(), None, &[])
                .unwrap();
        let set = |groups: Value| {
            let claims = json!({ "groups": groups });
            identity.mutations(Some(claims.as_object().unwrap()))
        };
        assert_eq!(set(json!(["eng", "admin"])).set_headers, [("x-groups".to_string(), "eng,admin".to_string())]);
        assert_eq!(set(json!([])).set_headers, [("x-groups".to_string(), String::new())]);
        for ambiguous in
            [json!(["eng,admin"]), json!(["eng", ""]), json!([" admin"]), json!(["eng\t"]), json!(["a", 1])]
        {
            let mutations = set(ambiguous.clone());
            assert!(mutations.set_headers.is_empty(), "{ambiguous}");
            assert_eq!(mutations.remove_headers, ["x-groups"], "the client's copy still goes: {ambiguous}");
        }
    }

    #[test]
    fn only_safe_headers_and_names_are_accepted() {
        let problems = |yaml: &str| -> Vec<String> {
            let config = route(yaml);
            Identity::compile(&config, &DefaultsConfig::default(), None, &[])
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert!(problems("{ headers: { authorization: sub } }")[0].starts_with("headers.authorization: not a header"));
        assert!(problems("{ headers: { 'x user': sub } }")[0].starts_with("headers.x user: not a header"));
        assert!(problems("{ headers: { x-a: '$..b' } }")[0].starts_with("headers.x-a: invalid JSON path"));
        assert_eq!(
            problems("{ headers: { X-A: sub, x-a: email } }"),
            ["headers.x-a: named twice (header names are case-insensitive)"]
        );
        assert!(problems("{ metadata_claims: [route] }")[0].starts_with("metadata_claims[0]: must be a claim name"));
    }

    #[test]
    fn defaults_apply_to_routes_without_a_backend() {
        let defaults: DefaultsConfig =
            crate::config::value_de::from_value(&json!({"headers": {"x-user-id": "sub"}, "metadata_claims": ["org"]}))
                .unwrap();
        let identity = Identity::compile(&route("{}"), &defaults, None, &[]).unwrap();
        let claims = json!({"sub": "u1", "org": "acme"});
        let claims = claims.as_object().unwrap();
        assert_eq!(identity.mutations(Some(claims)).set_headers, [("x-user-id".to_string(), "u1".to_string())]);
        assert_eq!(identity.metadata(claims), [("org".to_string(), json!("acme"))]);
    }
}
