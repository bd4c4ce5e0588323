//! One case: its token signed by the issuer's stand-in key and put where the
//! issuer reads tokens, the request decided by the real pipeline, and the
//! decision compared with what the case expects, every difference listed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};

use super::stand_in::StandIns;
use super::suite::{Case, Expect, TokenSpec, Verdict};
use crate::config::TokenFrom;
use crate::decision::Decision;
use crate::issuer::Issuer;
use crate::policy::Policy;
use crate::request::HttpRequest;

/// How long a case's token is valid by default.
const TOKEN_LIFETIME: i64 = 300;

/// The request of `case`, its token in place.
pub fn request(case: &Case, policy: &Policy, stand_ins: &StandIns, now: u64) -> Result<HttpRequest, String> {
    let spec = &case.request;
    let mut headers: Vec<(String, String)> =
        spec.headers.iter().map(|(name, value)| (name.to_ascii_lowercase(), value.clone())).collect();
    if let Some(token) = &case.token {
        let issuer = issuer_of(token, policy)?;
        let text = match &token.raw {
            Some(raw) => raw.clone(),
            None => sign(token, issuer, stand_ins, now)?,
        };
        let placed = place(&issuer.token_from, &text, &mut headers);
        headers.push(placed);
    }
    let pairs = headers.iter().map(|(name, value)| (name.as_str(), value.as_str()));
    Ok(HttpRequest::new(&spec.method, &spec.path, &spec.host, pairs))
}

/// The case's issuer: named, or the config's only one.
pub fn issuer_name<'a>(token: &'a TokenSpec, names: &'a [String]) -> Result<&'a str, String> {
    match (&token.issuer, names) {
        (Some(name), _) if names.contains(name) => Ok(name),
        (Some(name), _) => Err(format!("token.issuer: no issuer {name:?} in the config")),
        (None, [only]) => Ok(only),
        (None, _) => Err("token.issuer: required when the config has more than one issuer".into()),
    }
}

fn issuer_of<'a>(token: &TokenSpec, policy: &'a Policy) -> Result<&'a Issuer, String> {
    let names: Vec<String> = policy.issuers.iter().map(|issuer| issuer.name.to_string()).collect();
    let name = issuer_name(token, &names)?;
    policy.issuer(name).map(|issuer| &**issuer).ok_or_else(|| format!("token.issuer: {name} did not compile"))
}

/// The token signed with the stand-in key: the default claims, then the case's.
fn sign(token: &TokenSpec, issuer: &Issuer, stand_ins: &StandIns, now: u64) -> Result<String, String> {
    let alg = algorithm(token, issuer, stand_ins)?;
    let key = stand_ins.key(&issuer.name, alg).ok_or_else(|| format!("token.alg: no stand-in key for {alg:?}"))?;
    let now = now as i64;
    let mut claims = Map::new();
    if let Some(iss) = &issuer.issuer {
        claims.insert("iss".into(), json!(iss));
    }
    if let Some(aud) = issuer.audiences.as_ref().and_then(|list| list.first()) {
        claims.insert("aud".into(), json!(aud));
    }
    claims.insert("sub".into(), json!("test-user"));
    let (iat, exp) = if token.expired { (now - 7200, now - 3600) } else { (now, now + TOKEN_LIFETIME) };
    claims.insert("iat".into(), json!(iat));
    claims.insert("exp".into(), json!(exp));
    merge(&mut claims, &token.claims);
    let mut header = Map::new();
    header.insert("alg".into(), json!(alg));
    header.insert("typ".into(), json!("JWT"));
    header.insert("kid".into(), json!(token.kid.as_deref().unwrap_or(&key.kid)));
    merge(&mut header, &token.header);
    let encode = |part: &Map<String, Value>| URL_SAFE_NO_PAD.encode(Value::Object(part.clone()).to_string());
    let message = format!("{}.{}", encode(&header), encode(&claims));
    let signature = key.sign_raw(message.as_bytes());
    Ok(format!("{message}.{signature}"))
}

fn algorithm(token: &TokenSpec, issuer: &Issuer, stand_ins: &StandIns) -> Result<Algorithm, String> {
    match &token.alg {
        Some(name) => name.parse().map_err(|_| format!("token.alg: {name:?} is not a JWS algorithm")),
        None => {
            stand_ins.default_algorithm(&issuer.name).ok_or_else(|| "token.alg: the issuer has no stand-in key".into())
        }
    }
}

/// `overrides` over `base`; a `null` removes the entry.
fn merge(base: &mut Map<String, Value>, overrides: &Map<String, Value>) {
    for (name, value) in overrides {
        match value {
            Value::Null => base.remove(name),
            other => base.insert(name.clone(), other.clone()),
        };
    }
}

/// The header carrying the token where `from` says the issuer reads it (a
/// cookie joins the request's other cookies).
fn place(from: &TokenFrom, token: &str, headers: &mut Vec<(String, String)>) -> (String, String) {
    match from {
        TokenFrom::Header { header, prefix: Some(prefix) } => (header.clone(), format!("{prefix}{token}")),
        TokenFrom::Header { header, prefix: None } if header == "authorization" => {
            (header.clone(), format!("Bearer {token}"))
        }
        TokenFrom::Header { header, prefix: None } => (header.clone(), token.to_string()),
        TokenFrom::Cookie { cookie } => {
            let mut value = format!("{cookie}={token}");
            if let Some(position) = headers.iter().position(|(name, _)| name == "cookie") {
                let (_, others) = headers.remove(position);
                value = format!("{others}; {value}");
            }
            ("cookie".into(), value)
        }
    }
}

/// Every way `decision` differs from `expect`; empty when the case passes.
pub fn differences(expect: &Expect, decision: &Decision) -> Vec<String> {
    let mut found = Vec::new();
    let mut compare = |what: &str, expected: String, actual: String| {
        if expected != actual {
            found.push(format!("{what}: expected {expected}, got {actual}"));
        }
    };
    let (verdict, route) = match decision {
        Decision::Allow(allowed) => (Verdict::Allow, Some(allowed.route.to_string())),
        Decision::Deny(denied) => (Verdict::Deny, denied.route.as_ref().map(ToString::to_string)),
    };
    compare("decision", format!("{:?}", expect.decision).to_lowercase(), format!("{verdict:?}").to_lowercase());
    if let Some(status) = expect.status {
        compare("status", status.to_string(), decision.http_status().to_string());
    }
    if let Some(name) = &expect.route {
        compare("route", name.clone(), route.unwrap_or_else(|| "(none)".into()));
    }
    match decision {
        Decision::Deny(denied) => {
            if let Some(reason) = &expect.reason {
                compare("reason", reason.clone(), denied.reason.kind().to_string());
            }
            let description = denied.reason.description();
            if let Some(words) = expect.message.as_ref().filter(|words| !description.contains(words.as_str())) {
                found.push(format!("message: expected it to contain {words:?}, got {description:?}"));
            }
        }
        Decision::Allow(allowed) => {
            found.extend(allow_differences(expect, &allowed.set_headers, &allowed.remove_headers))
        }
    }
    if verdict == Verdict::Deny && expect.decision == Verdict::Deny {
        let asked = !expect.headers.set.is_empty() || expect.hasura.is_some() || expect.supabase.is_some();
        if asked {
            found.push("headers: a deny sets no upstream header".into());
        }
    }
    found
}

fn allow_differences(expect: &Expect, set: &[(String, String)], removed: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let value_of = |name: &str| set.iter().find(|(set, _)| set == name).map(|(_, value)| value.as_str());
    for (name, expected) in &expect.headers.set {
        match value_of(&name.to_ascii_lowercase()) {
            Some(actual) if actual == expected => {}
            Some(actual) => found.push(format!("headers.set.{name}: expected {expected:?}, got {actual:?}")),
            None => found.push(format!("headers.set.{name}: expected {expected:?}, not set")),
        }
    }
    for name in &expect.headers.removed {
        if !removed.contains(&name.to_ascii_lowercase()) {
            found.push(format!("headers.removed: expected {name} to be removed, it is not"));
        }
    }
    for name in &expect.headers.not_set {
        if value_of(&name.to_ascii_lowercase()).is_some() {
            found.push(format!("headers.not_set: {name} is set"));
        }
    }
    if let Some(hasura) = &expect.hasura {
        if let Some(role) = &hasura.role {
            let actual = value_of("x-hasura-role").map_or("(not set)".to_string(), str::to_string);
            if *role != actual {
                found.push(format!("hasura.role: expected {role}, got {actual}"));
            }
        }
        if let Some(variables) = &hasura.variables {
            let actual: std::collections::BTreeMap<String, String> = set
                .iter()
                .filter(|(name, _)| {
                    name.starts_with("x-hasura-") && name != "x-hasura-role" && name != "x-hasura-admin-secret"
                })
                .cloned()
                .collect();
            if *variables != actual {
                found.push(format!("hasura.variables: expected {variables:?}, got {actual:?}"));
            }
        }
    }
    if let Some(supabase) = &expect.supabase {
        match value_of("authorization").and_then(minted_claims) {
            Some(claims) => {
                for (name, expected) in &supabase.claims {
                    let actual = claims.get(name).cloned().unwrap_or(Value::Null);
                    if actual != *expected {
                        found.push(format!("supabase.claims.{name}: expected {expected}, got {actual}"));
                    }
                }
            }
            None => found.push("supabase: no minted token in authorization".into()),
        }
    }
    found
}

/// The claims of the token in `Bearer <token>` (the runner signed it, with its stand-in key).
fn minted_claims(authorization: &str) -> Option<Map<String, Value>> {
    let token = authorization.strip_prefix("Bearer ")?;
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}
