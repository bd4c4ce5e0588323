//! `hasura_jwt_secret`: a `HASURA_GRAPHQL_JWT_SECRET` value pasted verbatim
//! (JSON string or YAML object) becomes an issuer plus its Hasura claims
//! settings. Hasura's config errors keep their meaning and wording.

use serde_json::Value;

use super::claims::ClaimsSettings;
use crate::config::{
    HasuraHeaderFields as HeaderFields, HasuraSecretFields as SecretFields, OneOrMany, Problem, TokenFrom,
};
use crate::keys::{KeyKind, KeySet, KeySource};

/// An issuer described by a `HASURA_GRAPHQL_JWT_SECRET`.
#[derive(Debug)]
pub struct ImportedSecret {
    /// `None`: Hasura checks no issuer, and neither does this issuer.
    pub issuer: Option<String>,
    pub source: KeySource,
    /// The key set of a PEM key, parsed here (once) to report Hasura's error.
    pub initial: Option<KeySet>,
    pub audiences: Option<Vec<String>>,
    pub leeway_seconds: u64,
    pub token_from: TokenFrom,
    pub claims: ClaimsSettings,
}

/// Reads a `HASURA_GRAPHQL_JWT_SECRET` value; problems have paths inside it.
pub fn import(value: &Value) -> Result<ImportedSecret, Vec<Problem>> {
    let parsed;
    let object = match value {
        Value::String(text) => {
            // serde_json's syntax errors give a position, never the text.
            parsed = serde_json::from_str::<Value>(text)
                .map_err(|err| vec![Problem::new("", format!("not a JSON object: {err}"))])?;
            &parsed
        }
        other => other,
    };
    let fields: SecretFields = crate::config::value_de::from_value_reporting_all(object)?;
    let mut problems = Vec::new();
    let keys = imported_keys(&fields).map_err(|problem| problems.push(problem)).ok();
    let token_from = token_from(fields.header.as_ref()).map_err(|problem| problems.push(problem)).ok();
    let claims = ClaimsSettings::from_parts(
        fields.claims_namespace.as_deref(),
        fields.claims_namespace_path.as_deref(),
        fields.claims_format,
        fields.claims_map.as_ref(),
    )
    .map_err(|found| problems.extend(found))
    .ok();
    let (Some((source, initial)), Some(token_from), Some(claims)) = (keys, token_from, claims) else {
        return Err(problems);
    };
    Ok(ImportedSecret {
        issuer: fields.issuer,
        source,
        initial,
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

/// Where the keys come from, with a PEM key's set already parsed.
type ImportedKeys = (KeySource, Option<KeySet>);

fn imported_keys(fields: &SecretFields) -> Result<ImportedKeys, Problem> {
    match (&fields.key, &fields.jwk_url) {
        (Some(_), Some(_)) => Err(Problem::new("jwk_url", "key, jwk_url both cannot be present")),
        (None, None) => Err(Problem::new("", "key and jwk_url both cannot be empty")),
        (None, Some(url)) => Ok((KeySource::Jwks(Some(url.clone())), None)),
        (Some(key), None) => {
            let kind = fields.kind.as_deref().ok_or_else(|| Problem::new("type", "type is required with key"))?;
            static_key(kind, key).map_err(|message| Problem::new("key", message))
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
        return Ok((KeySource::Secret(key.as_bytes().to_vec()), None));
    }
    let kind = match kind {
        "RS256" | "RS384" | "RS512" => KeyKind::Rsa,
        "ES256" => KeyKind::EcP256,
        "ES384" => KeyKind::EcP384,
        "Ed25519" => KeyKind::Ed25519,
        "ES512" => return Err("Invalid JWK: Key type: ES512 is not supported by portcullis".into()),
        // The value is not quoted back: the whole secret often comes from one variable.
        _ => {
            return Err("Invalid JWK: Key type is not supported \
                 (expected HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384 or Ed25519)"
                .into());
        }
    };
    let set = KeySet::from_public_pem(kind, key).map_err(|err| format!("Invalid JWK: Could not decode PEM: {err}"))?;
    Ok((KeySource::PublicKey { kind, pem: key.to_string() }, Some(set)))
}

fn token_from(header: Option<&HeaderFields>) -> Result<TokenFrom, Problem> {
    let Some(header) = header else {
        return Ok(TokenFrom::default());
    };
    let missing_name = || Problem::new("header.name", "name is required for header types Cookie and CustomHeader");
    match header.kind.to_ascii_lowercase().as_str() {
        "authorization" => Ok(TokenFrom::default()),
        "cookie" => Ok(TokenFrom::Cookie { cookie: header.name.clone().ok_or_else(missing_name)? }),
        "customheader" => Ok(TokenFrom::Header {
            header: header.name.as_ref().ok_or_else(missing_name)?.to_ascii_lowercase(),
            prefix: Some(String::new()),
        }),
        _ => Err(Problem::new("header.type", "expected 'type' is 'Authorization' or 'Cookie' or 'CustomHeader'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_kinde_seed_value_just_works() {
        let value = json!(r#"{"jwk_url":"https://acme.kinde.com/.well-known/jwks.json","audience":"hasura"}"#);
        let secret = import(&value).unwrap();
        assert!(matches!(secret.source, KeySource::Jwks(Some(ref url)) if url.ends_with("jwks.json")));
        assert_eq!(secret.audiences, Some(vec!["hasura".to_string()]));
        assert_eq!(secret.issuer, None);
        assert_eq!(secret.leeway_seconds, 0);
        assert_eq!(secret.token_from, TokenFrom::default());
    }

    #[test]
    fn hasura_config_errors() {
        let err = |value: Value| import(&value).unwrap_err();
        assert_eq!(
            err(json!({"key": "k", "jwk_url": "u", "type": "HS256"}))[0].message,
            "key, jwk_url both cannot be present"
        );
        assert_eq!(err(json!({"audience": "x"}))[0].message, "key and jwk_url both cannot be empty");
        assert_eq!(
            err(json!({"type": "HS256", "key": "short"}))[0].message,
            "Invalid JWK: Key size too small; should be atleast 32 characters"
        );
        let unsupported = &err(json!({"type": "XX1", "key": "k"}))[0];
        assert!(unsupported.message.starts_with("Invalid JWK: Key type is not supported"), "{unsupported}");
        assert!(!unsupported.message.contains("XX1"), "never the value: {unsupported}");
        assert!(
            err(json!({"type": "RS256", "key": "not pem"}))[0].message.starts_with("Invalid JWK: Could not decode PEM")
        );
        assert_eq!(
            err(json!({"jwk_url": "u", "header": {"type": "Query"}}))[0].message,
            "expected 'type' is 'Authorization' or 'Cookie' or 'CustomHeader'"
        );
        assert_eq!(err(json!({"jwk_url": "u", "header": {"type": "Cookie"}}))[0].path, "header.name");
        assert_eq!(err(json!("{not json"))[0].path, "");
        assert_eq!(err(json!({"jwk_url": "u", "claim_namespace": "typo"}))[0].path, "claim_namespace");
    }

    #[test]
    fn locations_and_skew() {
        let cookie =
            import(&json!({"jwk_url": "u", "header": {"type": "cookie", "name": "session"}, "allowed_skew": 2.5}))
                .unwrap();
        assert_eq!(cookie.token_from, TokenFrom::Cookie { cookie: "session".into() });
        assert_eq!(cookie.leeway_seconds, 3);
        let custom = import(&json!({"jwk_url": "u", "header": {"type": "CustomHeader", "name": "X-Token"}})).unwrap();
        assert_eq!(custom.token_from, TokenFrom::Header { header: "x-token".into(), prefix: Some(String::new()) });
        let hs = import(&json!({"type": "HS512", "key": "k".repeat(64), "issuer": "https://nhost"})).unwrap();
        assert!(matches!(hs.source, KeySource::Secret(_)));
        assert_eq!(hs.issuer.as_deref(), Some("https://nhost"));
    }
}
