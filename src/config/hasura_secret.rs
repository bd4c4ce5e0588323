//! The mapping form of `hasura_jwt_secret` as plain data, with Hasura's own keys:
//! the Hasura backend (`backend/hasura/secret.rs`) reads a pasted
//! `HASURA_GRAPHQL_JWT_SECRET` into it and decides what it means, and the
//! config's JSON Schema describes it, so both follow one definition.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::ClaimsFormat;

/// A `HASURA_GRAPHQL_JWT_SECRET` written as a mapping, with Hasura's keys.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HasuraJwtSecret")]
pub struct HasuraSecretFields {
    /// The algorithm of `key`: HS256/384/512, RS256/384/512, ES256/384 or Ed25519.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// An HS secret, or a PEM public key or certificate; or use `jwk_url`.
    pub key: Option<String>,
    /// The JWKS URL; or use `key`.
    pub jwk_url: Option<String>,
    /// Top-level claim holding the Hasura claims (default `https://hasura.io/jwt/claims`).
    pub claims_namespace: Option<String>,
    /// JSONPath to the Hasura claims instead of `claims_namespace`.
    pub claims_namespace_path: Option<String>,
    /// `json` (default) or `stringified_json`.
    pub claims_format: Option<ClaimsFormat>,
    #[schemars(with = "Option<super::json_schema::ClaimsMap>")]
    pub claims_map: Option<Value>,
    /// The token's `aud` must contain this (or one of these).
    pub audience: Option<OneOrMany>,
    /// The exact expected `iss`; absent means `iss` is not checked, as in Hasura.
    pub issuer: Option<String>,
    /// Tolerance in seconds for `exp`, `nbf` and `iat` (default 0).
    pub allowed_skew: Option<f64>,
    /// Where the token is read (default: the Authorization header).
    pub header: Option<HasuraHeaderFields>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Where Hasura reads the token: `type` Authorization (the default), Cookie or
/// CustomHeader (case-insensitive); the last two need `name`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HasuraJwtHeader")]
pub struct HasuraHeaderFields {
    /// `Authorization`, `Cookie` or `CustomHeader` (case-insensitive).
    #[serde(rename = "type")]
    pub kind: String,
    /// The cookie or header name (Cookie, CustomHeader).
    pub name: Option<String>,
}
