//! `hasura_jwt_secret`: a `HASURA_GRAPHQL_JWT_SECRET` value pasted verbatim
//! (JSON string or YAML object) becomes an issuer plus its Hasura claims
//! settings. Hasura's config errors keep their meaning and wording.

use serde::Deserialize;
use serde_json::Value;

use super::claims::{ClaimsFormat, ClaimsSettings};
use crate::config::TokenFrom;
use crate::keys::KeyKind;

/// Where an imported issuer's keys come from.
#[derive(Debug, Clone)]
pub enum ImportedKeys {
    Jwks(String),
    Secret(String),
    PublicKey { kind: KeyKind, pem: String },
}

#[derive(Debug, Clone)]
pub struct ImportedSecret {
    /// `None`: Hasura checks no issuer, and neither does this issuer.
    pub issuer: Option<String>,
    pub keys: ImportedKeys,
    pub audiences: Option<Vec<String>>,
    pub leeway_seconds: u64,
    pub token_from: TokenFrom,
    pub claims: ClaimsSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretFields {
    #[serde(rename = "type")]
    kind: Option<String>,
    key: Option<String>,
    jwk_url: Option<String>,
    claims_namespace: Option<String>,
    claims_namespace_path: Option<String>,
    claims_format: Option<ClaimsFormat>,
    claims_map: Option<Value>,
    audience: Option<OneOrMany>,
    issuer: Option<String>,
    allowed_skew: Option<f64>,
    header: Option<HeaderFields>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderFields {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
}

/// A problem: the key inside the secret it concerns ("" for the whole value) and the message.
pub type SecretProblem = (String, String);

pub fn parse(value: &Value) -> Result<ImportedSecret, Vec<SecretProblem>> {
    let parsed;
    let object = match value {
        Value::String(text) => {
            // serde_json's syntax errors give a position, never the text.
            parsed = serde_json::from_str::<Value>(text)
                .map_err(|err| vec![(String::new(), format!("not a JSON object: {err}"))])?;
            &parsed
        }
        other => other,
    };
    let fields: SecretFields = crate::config::value_de::from_value(object).map_err(|err| {
        let path = err.path().to_string();
        vec![(if path == "." { String::new() } else { path }, err.into_inner().to_string())]
    })?;
    let mut problems = Vec::new();
    let keys = imported_keys(&fields).map_err(|problem| problems.push(problem)).ok();
    let token_from = token_from(fields.header.as_ref()).map_err(|problem| problems.push(problem)).ok();
    let claims = ClaimsSettings::from_parts(
        fields.claims_namespace.as_deref(),
        fields.claims_namespace_path.as_deref(),
        fields.claims_format,
        fields.claims_map.as_ref(),
    )
    .map_err(|found| problems.extend(found.into_iter().map(|(key, message)| (key.to_string(), message))))
    .ok();
    let (Some(keys), Some(token_from), Some(claims)) = (keys, token_from, claims) else {
        return Err(problems);
    };
    Ok(ImportedSecret {
        issuer: fields.issuer,
        keys,
        audiences: fields.audience.map(|audience| match audience {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }),
        // `as` saturates: 1e30 becomes u64::MAX, which the loader then refuses.
        leeway_seconds: fields.allowed_skew.map_or(0, |skew| skew.abs().ceil() as u64),
        token_from,
        claims,
    })
}

fn imported_keys(fields: &SecretFields) -> Result<ImportedKeys, SecretProblem> {
    let problem = |key: &str, message: String| (key.to_string(), message);
    match (&fields.key, &fields.jwk_url) {
        (Some(_), Some(_)) => Err(problem("jwk_url", "key, jwk_url both cannot be present".into())),
        (None, None) => Err(problem("", "key and jwk_url both cannot be empty".into())),
        (None, Some(url)) => Ok(ImportedKeys::Jwks(url.clone())),
        (Some(key), None) => {
            let kind = fields.kind.as_deref().ok_or_else(|| problem("type", "type is required with key".into()))?;
            static_key(kind, key).map_err(|message| problem("key", message))
        }
    }
}

fn static_key(kind: &str, key: &str) -> Result<ImportedKeys, String> {
    let minimum = match kind {
        "HS256" => 32,
        "HS384" => 48,
        "HS512" => 64,
        _ => 0,
    };
    if minimum > 0 {
        if key.len() < minimum {
            return Err(format!("Invalid JWK: Key size too small; should be atleast {minimum} characters"));
        }
        // Hasura uses the raw UTF-8 bytes of the string, not a base64 decoding.
        return Ok(ImportedKeys::Secret(key.to_string()));
    }
    let kind = match kind {
        "RS256" | "RS384" | "RS512" => KeyKind::Rsa,
        "ES256" => KeyKind::EcP256,
        "ES384" => KeyKind::EcP384,
        "Ed25519" => KeyKind::Ed25519,
        "ES512" => return Err("Invalid JWK: Key type: ES512 is not supported by portcullis".into()),
        other => return Err(format!("Invalid JWK: Key type: {other} is not supported")),
    };
    crate::keys::KeySet::from_public_pem(kind, key)
        .map_err(|err| format!("Invalid JWK: Could not decode PEM: {err}"))?;
    Ok(ImportedKeys::PublicKey { kind, pem: key.to_string() })
}

fn token_from(header: Option<&HeaderFields>) -> Result<TokenFrom, SecretProblem> {
    let Some(header) = header else {
        return Ok(TokenFrom::default());
    };
    let missing_name = || ("header.name".to_string(), format!("name is required for header type {}", header.kind));
    match header.kind.to_ascii_lowercase().as_str() {
        "authorization" => Ok(TokenFrom::default()),
        "cookie" => Ok(TokenFrom::Cookie { cookie: header.name.clone().ok_or_else(missing_name)? }),
        "customheader" => Ok(TokenFrom::Header {
            header: header.name.as_ref().ok_or_else(missing_name)?.to_ascii_lowercase(),
            prefix: Some(String::new()),
        }),
        _ => Err(("header.type".into(), "expected 'type' is 'Authorization' or 'Cookie' or 'CustomHeader'".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_kinde_seed_value_just_works() {
        let value = json!(r#"{"jwk_url":"https://acme.kinde.com/.well-known/jwks.json","audience":"hasura"}"#);
        let secret = parse(&value).unwrap();
        assert!(matches!(secret.keys, ImportedKeys::Jwks(ref url) if url.ends_with("jwks.json")));
        assert_eq!(secret.audiences, Some(vec!["hasura".to_string()]));
        assert_eq!(secret.issuer, None);
        assert_eq!(secret.leeway_seconds, 0);
        assert_eq!(secret.token_from, TokenFrom::default());
    }

    #[test]
    fn hasura_config_errors() {
        let err = |value: Value| parse(&value).unwrap_err();
        assert_eq!(
            err(json!({"key": "k", "jwk_url": "u", "type": "HS256"}))[0].1,
            "key, jwk_url both cannot be present"
        );
        assert_eq!(err(json!({"audience": "x"}))[0].1, "key and jwk_url both cannot be empty");
        assert_eq!(
            err(json!({"type": "HS256", "key": "short"}))[0].1,
            "Invalid JWK: Key size too small; should be atleast 32 characters"
        );
        assert_eq!(err(json!({"type": "XX1", "key": "k"}))[0].1, "Invalid JWK: Key type: XX1 is not supported");
        assert!(err(json!({"type": "RS256", "key": "not pem"}))[0].1.starts_with("Invalid JWK: Could not decode PEM"));
        assert_eq!(
            err(json!({"jwk_url": "u", "header": {"type": "Query"}}))[0].1,
            "expected 'type' is 'Authorization' or 'Cookie' or 'CustomHeader'"
        );
        assert_eq!(err(json!({"jwk_url": "u", "header": {"type": "Cookie"}}))[0].0, "header.name");
        assert_eq!(err(json!("{not json"))[0].0, "");
        assert_eq!(err(json!({"jwk_url": "u", "claim_namespace": "typo"}))[0].0, "claim_namespace");
    }

    #[test]
    fn locations_and_skew() {
        let cookie =
            parse(&json!({"jwk_url": "u", "header": {"type": "cookie", "name": "session"}, "allowed_skew": 2.5}))
                .unwrap();
        assert_eq!(cookie.token_from, TokenFrom::Cookie { cookie: "session".into() });
        assert_eq!(cookie.leeway_seconds, 3);
        let custom = parse(&json!({"jwk_url": "u", "header": {"type": "CustomHeader", "name": "X-Token"}})).unwrap();
        assert_eq!(custom.token_from, TokenFrom::Header { header: "x-token".into(), prefix: Some(String::new()) });
        let hs = parse(&json!({"type": "HS512", "key": "k".repeat(64), "issuer": "https://nhost"})).unwrap();
        assert!(matches!(hs.keys, ImportedKeys::Secret(_)));
        assert_eq!(hs.issuer.as_deref(), Some("https://nhost"));
    }
}
