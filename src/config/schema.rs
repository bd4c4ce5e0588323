//! The typed shape of `portcullis.yaml`. Unknown keys are rejected everywhere:
//! a typo must never silently weaken security.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;
use serde_json::Value;

use crate::backend::hasura::{ClaimsSettings, HasuraBackendConfig};
use crate::backend::supabase::SupabaseBackendConfig;
use crate::keys::KeyKind;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub admin: AdminConfig,
    pub cache: CacheConfig,
    pub limits: LimitsConfig,
    /// Issuers in the order they were written, by name.
    pub issuers: Vec<(String, IssuerConfig)>,
    pub backends: BTreeMap<String, BackendConfig>,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    #[serde(default = "default_authz")]
    pub authz: SocketAddr,
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    #[serde(default = "default_http")]
    pub http: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Listen { authz: default_authz(), admin: default_admin(), http: default_http() }
    }
}

fn default_authz() -> SocketAddr {
    "0.0.0.0:50051".parse().expect("literal address")
}
fn default_admin() -> SocketAddr {
    "127.0.0.1:50052".parse().expect("literal address")
}
fn default_http() -> SocketAddr {
    "0.0.0.0:9090".parse().expect("literal address")
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    #[serde(default = "default_token_cache")]
    pub tokens: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { tokens: default_token_cache() }
    }
}

fn default_token_cache() -> u64 {
    100_000
}

/// How much of a request portcullis reads. Envoy's own defaults (100 headers,
/// 60 KiB) fit inside these, with room for the headers Envoy adds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// More request headers than this (pseudo-headers included) is a 431.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// More bytes of header names, values and path than this is a 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { max_headers: default_max_headers(), max_header_bytes: default_max_header_bytes() }
    }
}

fn default_max_headers() -> usize {
    200
}

fn default_max_header_bytes() -> usize {
    96 * 1024
}

/// A backend as configured (`backends.<name>`).
#[derive(Debug, Clone)]
pub enum BackendConfig {
    Hasura { config: HasuraBackendConfig, claims: ClaimsSettings },
    Supabase(SupabaseBackendConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Exact expected value of the `iss` claim. Required, except for issuers
    /// imported from a `hasura_jwt_secret` without `issuer` (no `iss` check, as in Hasura).
    pub issuer: Option<String>,
    /// Where the JWKS lives; absent means OIDC discovery at `{issuer}/.well-known/openid-configuration`.
    pub jwks_uri: Option<String>,
    /// Token `aud` must contain one of these; absent means `aud` is not checked.
    pub audiences: Option<Vec<String>>,
    pub algorithms: Option<Vec<String>>,
    /// Default 30; use [`IssuerConfig::leeway`].
    pub leeway_seconds: Option<u64>,
    /// Default `Authorization: Bearer`; use [`IssuerConfig::token_source`].
    pub token_from: Option<TokenFrom>,
    /// HS256/384/512 shared secret instead of a JWKS.
    pub secret: Option<String>,
    #[serde(default)]
    pub refresh: RefreshConfig,
    /// A `HASURA_GRAPHQL_JWT_SECRET` value, verbatim; resolved by the loader
    /// into the fields above plus `public_key` and `hasura_claims`.
    pub hasura_jwt_secret: Option<Value>,
    /// A single PEM public key (from `hasura_jwt_secret.key`).
    #[serde(skip)]
    pub public_key: Option<(KeyKind, String)>,
    /// Hasura claims settings that travel with this issuer's tokens.
    #[serde(skip)]
    pub hasura_claims: Option<ClaimsSettings>,
}

impl IssuerConfig {
    pub fn leeway(&self) -> u64 {
        self.leeway_seconds.unwrap_or(30)
    }

    pub fn token_source(&self) -> TokenFrom {
        self.token_from.clone().unwrap_or_default()
    }
}

/// Where the token is found in the request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "TokenFromFields")]
pub enum TokenFrom {
    /// `prefix` defaults to the `Bearer` scheme for `authorization`, nothing otherwise.
    Header {
        header: String,
        prefix: Option<String>,
    },
    Cookie {
        cookie: String,
    },
}

/// The written form of `token_from`, checked into a [`TokenFrom`] with a clear message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFromFields {
    header: Option<String>,
    prefix: Option<String>,
    cookie: Option<String>,
}

impl TryFrom<TokenFromFields> for TokenFrom {
    type Error = String;

    fn try_from(fields: TokenFromFields) -> Result<Self, String> {
        match fields {
            TokenFromFields { header: Some(header), prefix, cookie: None } if !header.is_empty() => {
                Ok(TokenFrom::Header { header: header.to_ascii_lowercase(), prefix })
            }
            TokenFromFields { header: None, prefix: None, cookie: Some(cookie) } if !cookie.is_empty() => {
                Ok(TokenFrom::Cookie { cookie })
            }
            _ => Err("expected { header: NAME } (optionally with prefix) or { cookie: NAME }".into()),
        }
    }
}

impl Default for TokenFrom {
    fn default() -> Self {
        TokenFrom::Header { header: "authorization".into(), prefix: None }
    }
}

/// JWKS refresh timing (SPEC section 4); the defaults suit every hosted IdP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshConfig {
    #[serde(default = "default_min_ttl")]
    pub min_seconds: u64,
    #[serde(default = "default_max_ttl")]
    pub max_seconds: u64,
    /// Used when the JWKS response has neither Cache-Control max-age nor Expires.
    #[serde(default = "default_ttl")]
    pub default_seconds: u64,
    /// At most one unknown-`kid` refetch per issuer per this many seconds.
    #[serde(default = "default_unknown_kid_interval")]
    pub unknown_kid_interval_seconds: u64,
    /// How long a Check waits for that refetch before answering 401; the
    /// fetch itself goes on in the background. Keeps every Check within Envoy's timeout.
    #[serde(default = "default_unknown_kid_wait")]
    pub unknown_kid_wait_ms: u64,
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_ms: u64,
    /// What an empty JWKS (`{"keys": []}`) means.
    #[serde(default)]
    pub empty_jwks: EmptyJwks,
}

/// An IdP that publishes no keys at all is either broken or revoking everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmptyJwks {
    /// A failed refresh: the last good keys stay.
    #[default]
    Keep,
    /// No key is valid any more: every token of the issuer is refused.
    Revoke,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        RefreshConfig {
            min_seconds: default_min_ttl(),
            max_seconds: default_max_ttl(),
            default_seconds: default_ttl(),
            unknown_kid_interval_seconds: default_unknown_kid_interval(),
            unknown_kid_wait_ms: default_unknown_kid_wait(),
            fetch_timeout_ms: default_fetch_timeout(),
            empty_jwks: EmptyJwks::default(),
        }
    }
}

fn default_min_ttl() -> u64 {
    60
}
fn default_max_ttl() -> u64 {
    24 * 3600
}
fn default_ttl() -> u64 {
    600
}
fn default_unknown_kid_interval() -> u64 {
    30
}
fn default_unknown_kid_wait() -> u64 {
    100
}
fn default_fetch_timeout() -> u64 {
    5000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Shown in logs and dynamic metadata; defaults to `routes[i]`.
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// Issuers whose tokens this route accepts; absent means every issuer.
    pub issuers: Option<Vec<String>>,
    pub backend: Option<String>,
    #[serde(default)]
    pub action: Action,
    /// Hasura routes: `graphql` answers denies with HTTP 200 as Hasura does,
    /// `http` with 401/403. Default: `graphql` for paths ending in `/graphql`.
    pub error_status: Option<ErrorStatus>,
    /// Accept `;` path parameters (`/app;jsessionid=1/x`) on this route. Off by
    /// default: servlet containers drop them, other servers do not, so the route
    /// a request matches could differ from what the upstream serves.
    #[serde(default)]
    pub allow_path_parameters: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorStatus {
    Graphql,
    Http,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    pub prefix: Option<String>,
    pub path: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
    #[default]
    Authenticate,
}
