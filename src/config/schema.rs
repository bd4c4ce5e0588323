//! The typed shape of `portcullis.yaml`. Unknown keys are rejected everywhere:
//! a typo must never silently weaken security.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub admin: AdminConfig,
    pub cache: CacheConfig,
    pub limits: LimitsConfig,
    pub defaults: DefaultsConfig,
    /// One JSON line per decision, when set.
    pub decision_log: Option<DecisionLogConfig>,
    /// OpenTelemetry traces, when set (the `OTEL_*` environment can also turn them on).
    pub telemetry: Option<TelemetryConfig>,
    /// Settings of the HTTP faces (`listen.http_authz`).
    pub faces: FacesConfig,
    /// Issuers in the order they were written, by name.
    pub issuers: Vec<(String, IssuerConfig)>,
    pub backends: BTreeMap<String, BackendConfig>,
    pub routes: Vec<RouteConfig>,
    /// Identity-provider webhooks verified at the edge.
    pub webhooks: Vec<super::WebhookConfig>,
    /// Revocations fed by webhook events and the Admin API.
    pub revocation: super::RevocationConfig,
    /// Where first-seen event ids and revocations are kept.
    pub state: super::StateConfig,
    /// Hasura auth webhooks served on `listen.http_authz`.
    pub auth_hooks: Vec<AuthHookConfig>,
    /// Every issuer and backend name written, including those that did not
    /// parse: a route naming a broken issuer is not a second problem.
    pub declared: Declared,
    /// Values whose `${...}` was not read, by YAML path.
    pub unresolved: super::secrets::Unresolved,
}

#[derive(Debug, Clone, Default)]
pub struct Declared {
    pub issuers: Vec<String>,
    pub backends: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Envoy's ext_authz calls and grpc.health.v1 (HTTP/2). Port 0 picks a free port.
    #[serde(default = "default_authz")]
    pub authz: SocketAddr,
    /// The Admin API, grpc.health.v1 and reflection.
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    /// `/healthz`, `/readyz` and `/metrics` (plaintext HTTP).
    #[serde(default = "default_http")]
    pub http: SocketAddr,
    /// The HTTP authorization listener: Envoy's HTTP ext_authz, nginx / Traefik / Caddy
    /// forward auth (HTTP/1.1 and h2c on one port; TLS with `listen.tls`). Off unless set,
    /// e.g. `127.0.0.1:9191`.
    pub http_authz: Option<SocketAddr>,
    /// TLS (and with `client_ca`, mutual TLS) on the authz, admin and http_authz listeners.
    pub tls: Option<TlsConfig>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen { authz: default_authz(), admin: default_admin(), http: default_http(), http_authz: None, tls: None }
    }
}

/// One Hasura auth webhook (`HASURA_GRAPHQL_AUTH_HOOK`), served on `listen.http_authz`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthHookConfig {
    /// Where Hasura calls the hook: `/hasura/` followed by plain path segments (e.g. `/hasura/webhook`).
    pub path: String,
    /// Name of a `backends` entry of `type: hasura`: its claims settings and
    /// `unauthorized_role` derive the session (its admin secret is never sent).
    pub backend: String,
    /// Issuers whose tokens the hook accepts; absent means every issuer.
    pub issuers: Option<Vec<String>>,
}

/// Settings of the faces served on `listen.http_authz`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FacesConfig {
    /// Envoy's HTTP ext_authz (`http_service`).
    #[serde(default)]
    pub ext_authz_http: ExtAuthzHttpConfig,
    /// nginx `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth`.
    #[serde(default)]
    pub forward_auth: ForwardAuthConfig,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthzHttpConfig {
    /// The `path_prefix` of Envoy's `http_service`: Envoy asks `<path_prefix><original path>`.
    /// A path of plain segments (`/envoy`, `/authz/envoy`), without a trailing `/`.
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
}

impl Default for ExtAuthzHttpConfig {
    fn default() -> Self {
        ExtAuthzHttpConfig { path_prefix: default_path_prefix() }
    }
}

fn default_path_prefix() -> String {
    "/envoy".to_string()
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthConfig {
    /// Peers (CIDR blocks, or single addresses) whose `X-Forwarded-*` / `X-Original-*`
    /// headers describe the original request. From any other peer a forward-auth
    /// request is refused (400). Default: loopback only.
    #[serde(default = "default_trusted_proxies")]
    pub trusted_proxies: Vec<String>,
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        ForwardAuthConfig { trusted_proxies: default_trusted_proxies() }
    }
}

fn default_trusted_proxies() -> Vec<String> {
    vec!["127.0.0.0/8".to_string(), "::1/128".to_string()]
}

/// PEM files, re-read when they change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key of `cert`.
    pub key: std::path::PathBuf,
    /// Clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<std::path::PathBuf>,
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

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token every Admin RPC must present (at least 16 characters); required
    /// unless `listen.admin` is loopback or `listen.tls.client_ca` is set.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// How many verified tokens are kept (until their `exp`); 0 turns the cache off.
    #[serde(default = "default_token_cache")]
    pub tokens: u64,
    /// About how many bytes the cached tokens may take (estimated per token).
    #[serde(default = "default_cache_bytes")]
    pub max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { tokens: default_token_cache(), max_bytes: default_cache_bytes() }
    }
}

fn default_token_cache() -> u64 {
    100_000
}

/// 256 MiB: room for tens of thousands of typical tokens, well inside the
/// deployment's 512 MiB memory limit.
fn default_cache_bytes() -> u64 {
    256 * 1024 * 1024
}

/// How much of a request portcullis reads. Envoy's own defaults (100 headers,
/// 60 KiB) fit inside these, with room for the headers Envoy adds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// More request headers than this (pseudo-headers included) is a 431.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// More bytes of header names, values and path than this is a 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// More Checks in progress than this (queued ones included) get an immediate 503.
    /// Default: 1024 per CPU core.
    #[serde(default = "default_concurrent_checks")]
    #[schemars(transform = super::json_schema::without_default)]
    pub concurrent_checks: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_headers: default_max_headers(),
            max_header_bytes: default_max_header_bytes(),
            concurrent_checks: default_concurrent_checks(),
        }
    }
}

/// Generous for real traffic (a cached Check takes microseconds, so even a
/// busy service has few in progress; each core could hold 1024 Checks all
/// waiting out a key refetch), and small enough that a queue beyond it could
/// not be answered within Envoy's timeout anyway.
fn default_concurrent_checks() -> usize {
    1024 * std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

fn default_max_headers() -> usize {
    200
}

fn default_max_header_bytes() -> usize {
    96 * 1024
}

/// `decision_log`: one JSON line per decision.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionLogConfig {
    /// `stdout`, or a file appended to.
    pub to: String,
    /// The fraction of allows logged (and of denies, with `denies: sampled`).
    #[serde(default = "one")]
    pub sample: f64,
    /// `all` (every deny, whatever `sample` says) or `sampled`.
    #[serde(default)]
    pub denies: DeniesLogged,
}

/// Which denies the decision log writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeniesLogged {
    /// Every deny, whatever `sample` says.
    #[default]
    All,
    /// Denies are sampled like allows.
    Sampled,
}

/// `telemetry`: OpenTelemetry traces over OTLP/gRPC.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector, e.g. `http://otel-collector:4317`; else `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource; else `OTEL_SERVICE_NAME`, else `portcullis`.
    pub service_name: Option<String>,
    /// The fraction of new traces sampled (a parent's decision is followed); else 1.0.
    pub sample_ratio: Option<f64>,
    /// Put the token's `sub` on the Check span (`enduser.id`).
    #[serde(default)]
    pub subject: bool,
}

fn one() -> f64 {
    1.0
}

/// A backend as configured (`backends.<name>`), told apart by its `type`.
#[derive(Debug, Clone)]
pub enum BackendConfig {
    Hasura(HasuraBackendConfig),
    Supabase(SupabaseBackendConfig),
}

/// How Hasura's JWT mode reads its claims (`claims_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClaimsFormat {
    #[default]
    Json,
    StringifiedJson,
}

/// What a websocket upgrade gets on a Hasura route. The admin secret is never
/// sent on an upgrade: Hasura builds websocket sessions from the
/// `connection_init` payload, which ext_authz never sees, so a client could add
/// any role or variable to an admin-secret connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebsocketMode {
    /// Upgrades are authenticated like any request (a valid token in a header or
    /// cookie, or `unauthorized_role`), then forwarded without the admin secret
    /// or client `x-hasura-*` headers; Hasura's own JWT mode builds the session.
    #[default]
    Verify,
    /// Like `verify`, but token-less upgrades pass too (clients that send the
    /// token only in `connection_init`); Hasura must then authenticate them.
    Passthrough,
    /// Refused with 403.
    Deny,
}

/// `backends.<name>` with `type: hasura`, as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HasuraBackendConfig {
    #[serde(rename = "type")]
    #[schemars(extend("const" = "hasura"))]
    pub kind: String,
    /// Sent upstream as `x-hasura-admin-secret` on allowed (non-websocket) requests.
    pub admin_secret: String,
    /// Role for requests without a token (no other session variable is sent); absent: denied.
    pub unauthorized_role: Option<String>,
    /// Top-level claim holding the Hasura claims (default `https://hasura.io/jwt/claims`).
    pub claims_namespace: Option<String>,
    /// JSONPath to the Hasura claims instead of `claims_namespace`.
    pub claims_namespace_path: Option<String>,
    /// `json` (default) or `stringified_json`.
    pub claims_format: Option<ClaimsFormat>,
    #[schemars(with = "Option<super::json_schema::ClaimsMap>")]
    pub claims_map: Option<Value>,
    /// Keep the client's token header for the upstream (default: removed).
    #[serde(default)]
    pub forward_token: bool,
    /// What a websocket upgrade gets: `verify`, `passthrough` or `deny`.
    #[serde(default)]
    pub websocket: WebsocketMode,
}

/// How the Supabase backend hands the upstream a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SupabaseMode {
    #[default]
    Remint,
    Passthrough,
}

/// `backends.<name>` with `type: supabase`, as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SupabaseBackendConfig {
    #[serde(rename = "type")]
    #[schemars(extend("const" = "supabase"))]
    pub kind: String,
    /// `remint`: mint a Supabase token; `passthrough`: keep the IdP token.
    #[serde(default)]
    pub mode: SupabaseMode,
    /// HS256 secret (>= 32 bytes) or PEM private key (ES256 P-256 / RS256); remint only.
    pub signing_key: Option<String>,
    /// `kid` of minted tokens; required for PEM keys.
    pub signing_kid: Option<String>,
    /// The project's publishable (or legacy anon) key, sent as `apikey`.
    pub apikey: String,
    /// Minted token lifetime (never beyond the IdP token's `exp`).
    #[serde(default = "default_minted_ttl")]
    pub ttl_seconds: u64,
    /// Token-less requests get `apikey` (and a minted `anon` token in remint mode).
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Passthrough: deny tokens whose `role` is not `authenticated`.
    #[serde(default)]
    pub require_role_claim: bool,
    /// `iss` of minted tokens.
    #[serde(default = "default_minted_issuer")]
    pub minted_issuer: String,
    /// Claims copied under `app_metadata` (name -> claim path); default: the
    /// organisation, role(s) and permissions of Kinde, WorkOS and similar IdPs.
    pub app_metadata: Option<BTreeMap<String, String>>,
    /// Claims copied under `user_metadata`; default: name, given_name, family_name, picture.
    pub user_metadata: Option<BTreeMap<String, String>>,
}

fn default_minted_ttl() -> u64 {
    300
}

fn default_minted_issuer() -> String {
    "portcullis".into()
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Exact expected value of the `iss` claim. Required, except for issuers
    /// imported from a `hasura_jwt_secret` without `issuer` (no `iss` check, as in Hasura).
    pub issuer: Option<String>,
    /// Where the JWKS lives; absent means OIDC discovery at `{issuer}/.well-known/openid-configuration`.
    pub jwks_uri: Option<String>,
    /// Token `aud` must contain one of these; `any` (or absent, with a warning) means `aud` is not checked.
    #[schemars(with = "Option<super::json_schema::Audiences>")]
    pub audiences: Option<Audiences>,
    /// Allow-list of `alg` values. Default: RS256 RS384 RS512 PS256 PS384 PS512 ES256
    /// ES384 EdDSA with a JWKS, HS256 HS384 HS512 with a `secret`.
    pub algorithms: Option<Vec<String>>,
    /// Default 30.
    #[schemars(extend("default" = 30))]
    pub leeway_seconds: Option<u64>,
    /// Default `Authorization: Bearer`.
    pub token_from: Option<TokenFrom>,
    /// HS256/384/512 shared secret instead of a JWKS.
    pub secret: Option<String>,
    /// JWKS refresh timing.
    #[serde(default)]
    pub refresh: RefreshConfig,
    /// A `HASURA_GRAPHQL_JWT_SECRET` value, verbatim (a JSON string or a
    /// mapping); it stands for the key fields above and brings Hasura claims settings.
    #[schemars(with = "Option<super::json_schema::HasuraJwtSecret>")]
    pub hasura_jwt_secret: Option<Value>,
}

/// `audiences`: a list, or the word `any` to accept tokens for every audience
/// on purpose (leaving it out does the same, with a warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audiences {
    Any,
    Only(Vec<String>),
}

impl Audiences {
    /// The accepted audiences; `None` when every audience is.
    pub fn accepted(&self) -> Option<&Vec<String>> {
        match self {
            Audiences::Any => None,
            Audiences::Only(list) => Some(list),
        }
    }
}

impl<'de> Deserialize<'de> for Audiences {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AudiencesVisitor;

        impl<'de> serde::de::Visitor<'de> for AudiencesVisitor {
            type Value = Audiences;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of audiences, or the word any")
            }

            fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<Audiences, E> {
                match word {
                    "any" => Ok(Audiences::Any),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(word), &self)),
                }
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Audiences, A::Error> {
                let list = Vec::<String>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Audiences::Only(list))
            }
        }

        deserializer.deserialize_any(AudiencesVisitor)
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

/// JWKS refresh timing; the defaults suit every hosted IdP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshConfig {
    /// Lower clamp of the refresh interval taken from the JWKS response's caching headers.
    #[serde(default = "default_min_ttl")]
    pub min_seconds: u64,
    /// Upper clamp of that interval.
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
    /// Total time for one discovery or JWKS request.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_ms: u64,
    /// What an empty JWKS (`{"keys": []}`) means.
    #[serde(default)]
    pub empty_jwks: EmptyJwks,
    /// How long fetched keys stay usable without a successful fetch; past it
    /// the issuer's tokens get 503. Default: a day, or `max_seconds` if that is longer.
    #[serde(default)]
    pub max_stale_seconds: Option<u64>,
}

impl RefreshConfig {
    /// Default staleness budget: a day, as long as the longest refresh interval allowed by default.
    pub const DEFAULT_MAX_STALE_SECONDS: u64 = 24 * 3600;

    /// Seconds since the last successful fetch after which keys are stale:
    /// `max_stale_seconds`, else a day or `max_seconds` if that is longer (keys
    /// the IdP may ask us to keep that long must not go stale before their refresh).
    pub fn max_stale(&self) -> u64 {
        self.max_stale_seconds.unwrap_or(Self::DEFAULT_MAX_STALE_SECONDS.max(self.max_seconds))
    }
}

/// An IdP that publishes no keys at all is either broken or revoking everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
            max_stale_seconds: None,
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

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Where the route was written (`routes[position]`), whether or not the
    /// routes before it could be read.
    #[serde(skip)]
    pub position: usize,
    /// Shown in logs and dynamic metadata; defaults to `routes[i]`.
    pub name: Option<String>,
    /// Which requests the route applies to; absent matches every request.
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// Issuers whose tokens this route accepts; absent means every issuer.
    pub issuers: Option<Vec<String>>,
    /// Name of a `backends` entry (Hasura or Supabase header changes).
    pub backend: Option<String>,
    /// `authenticate` (a valid token is required), `allow` (no token needed) or `deny` (always 403).
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
    /// Who may call the route, decided from the verified claims.
    pub require: Option<RequireConfig>,
    /// `dry_run` evaluates `require` and logs and counts a would-be deny, but allows.
    #[serde(default)]
    pub mode: RouteMode,
    /// Identity headers for the upstream: header name -> claim (a name, or a JSONPath
    /// starting with `$`). Client copies are always removed.
    pub headers: Option<BTreeMap<String, String>>,
    /// Claims exported in the CheckResponse's dynamic metadata.
    pub metadata_claims: Option<Vec<String>>,
    /// Routes without a backend: keep the token's header for the upstream (default true).
    pub forward_token: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteMode {
    #[default]
    Enforce,
    DryRun,
}

/// `require:` on a route; every listed requirement must hold.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequireConfig {
    /// All present in `scope` (space-separated) or `scp` (a list or a space-separated string).
    pub scopes: Option<Vec<String>>,
    /// All present in the `permissions` list.
    pub permissions: Option<Vec<String>>,
    /// All present at `roles_claim`.
    pub roles: Option<Vec<String>>,
    /// Where roles are read: a claim name or a JSONPath (default `roles`).
    pub roles_claim: Option<String>,
    /// Claim path -> exact value, or a list of accepted values.
    pub claims: Option<BTreeMap<String, Value>>,
    /// A CEL predicate over `claims`, `request`, `route` and `now`.
    pub when: Option<String>,
    /// At least one of the listed items, of any kind, is present.
    pub any_of: Option<AnyOfConfig>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnyOfConfig {
    /// Scopes, any one of which suffices.
    pub scopes: Option<Vec<String>>,
    /// Permissions, any one of which suffices.
    pub permissions: Option<Vec<String>>,
    /// Roles (read at `roles_claim`), any one of which suffices.
    pub roles: Option<Vec<String>>,
}

/// Defaults for authenticating routes without a backend that do not set their own.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultsConfig {
    /// Identity headers: header name -> claim (a name, or a JSONPath starting with `$`).
    pub headers: Option<BTreeMap<String, String>>,
    /// Claims exported in the CheckResponse's dynamic metadata.
    pub metadata_claims: Option<Vec<String>>,
    /// Keep the token's header for the upstream (default true).
    pub forward_token: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErrorStatus {
    Graphql,
    Http,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Path prefix, matched without the query string on the path decoded once.
    pub prefix: Option<String>,
    /// Exact path, matched like `prefix`.
    pub path: Option<String>,
    /// `:authority` without port, case-insensitive; `*.example.com` matches subdomains.
    pub hosts: Option<Vec<String>>,
    /// e.g. `[GET, POST]`; absent matches any method.
    pub methods: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
    #[default]
    Authenticate,
}
