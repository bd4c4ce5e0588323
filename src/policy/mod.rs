//! Everything one version of the config decides, compiled once into an
//! immutable value: issuers with their key sources, backends with their
//! signers and claim paths, routes with their matchers and extractors, the
//! verified-token cache. [`Policy::compile`] is the one step that turns plain
//! config into it, collecting every problem with its YAML path; `check-config`,
//! `serve`, reloads and `token verify` all go through it, and nothing checks
//! the config again afterwards. A reload compiles a new policy and swaps it whole.
//! What is legal but probably not meant (an issuer without audiences) comes out
//! as a warning beside the policy: printed by `check-config` (an error with
//! `--strict`), logged by `serve` at start and on every reload.

pub mod faces;
pub mod summary;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use self::faces::{AuthHook, FaceSettings};
use crate::backend::Backend;
use crate::config::{
    self, Action, Config, ConfigError, DecisionLogConfig, LimitsConfig, Listen, Problem, Problems, Secrets,
    TelemetryConfig, Unresolved,
};
use crate::identity;
use crate::issuer::Issuer;
use crate::keys::KeyRuntime;
use crate::metrics;
use crate::revocation::{self, RevocationPolicy};
use crate::route::{self, Names, Route, Router};
use crate::state::{self, StateSettings};
use crate::tls::ReloadingTls;
use crate::token::RuleAdditions;
use crate::token_cache::{CacheBudget, TokenCache};
use crate::webhook::{self, Webhook};

pub use summary::summary;

const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// What outlives one policy: where keys come from, who hears that keys
/// changed, and the clock. Handed from each policy to the next.
pub type Runtime = KeyRuntime;

pub struct Policy {
    pub generation: u64,
    pub listen: Listen,
    pub admin_token: Option<String>,
    pub issuers: Vec<Arc<Issuer>>,
    pub backends: BTreeMap<String, Arc<Backend>>,
    pub router: Router,
    /// Every identity header any route or `defaults` declares: a client's copy
    /// is removed on every allowed request, whichever route matched (a route
    /// that does not set `x-email` must not pass a spoofed one to an upstream
    /// that trusts it from another route).
    pub identity_headers: Vec<String>,
    /// Problems that do not stop the policy, with their YAML paths.
    pub warnings: Vec<Problem>,
    pub cache: TokenCache,
    /// How much of each request is read (a larger one is a 431).
    pub limits: LimitsConfig,
    /// The HTTP faces' settings (`faces:`).
    pub faces: FaceSettings,
    /// Hasura auth webhooks (`auth_hooks:`), each with its own route.
    pub auth_hooks: Vec<AuthHook>,
    /// TLS for the authz and admin listeners, loaded (listeners use the first policy's).
    pub tls: Option<Arc<ReloadingTls>>,
    /// Where decisions are logged (opened at start; `sample` and `denies` apply live).
    pub decision_log: Option<DecisionLogConfig>,
    /// OpenTelemetry export (read at start).
    pub telemetry: Option<TelemetryConfig>,
    /// Values whose `${...}` was not read: empty in a policy that may serve.
    pub unresolved: Unresolved,
    /// Identity-provider webhooks, matched before the routes.
    pub webhooks: Vec<Webhook>,
    /// What events revoke, and how long a cutoff is kept.
    pub revocation: RevocationPolicy,
    /// Where first-seen ids and revocations are kept (connected once, at start).
    pub state: StateSettings,
    pub runtime: Runtime,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let issuers: Vec<&str> = self.issuers.iter().map(|issuer| &*issuer.name).collect();
        f.debug_struct("Policy")
            .field("generation", &self.generation)
            .field("issuers", &issuers)
            .field("backends", &self.backends.keys().collect::<Vec<_>>())
            .field("routes", &self.router.routes().len())
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Compiles `config`. Keys are not fetched until [`Policy::start`]; the live
    /// keys of `previous`'s issuers whose name and key source did not change are kept.
    pub fn compile(config: &Config, runtime: &Runtime, previous: Option<&Policy>) -> Result<Policy, Vec<Problem>> {
        let mut problems = Problems::default();
        check_admin(config, &mut problems);
        check_observability(config, &mut problems);
        let faces = FaceSettings::compile(&config.faces, &mut problems);
        // Without secrets, certificate files (secrets of their own) are not read either.
        let tls =
            config.listen.tls.as_ref().filter(|_| config.unresolved.reading).and_then(|files| {
                ReloadingTls::load(files).map_err(|message| problems.push("listen.tls", message)).ok()
            });
        let secrets = |path: &str| config.unresolved.section(path);
        let cache_budget = CacheBudget { entries: config.cache.tokens, bytes: config.cache.max_bytes };
        let issuers: Vec<Arc<Issuer>> = config
            .issuers
            .iter()
            .enumerate()
            .filter_map(|(id, (name, issuer))| {
                let old = previous.and_then(|policy| policy.issuer(name)).map(Arc::as_ref);
                let path = config::join_path("issuers", name);
                let compiled = Issuer::compile_with(id, name, issuer, runtime, old, &secrets(&path));
                problems.take(&path, compiled).map(Arc::new)
            })
            .collect();
        let backends: BTreeMap<String, Arc<Backend>> = config
            .backends
            .iter()
            .filter_map(|(name, backend)| {
                let path = config::join_path("backends", name);
                let compiled =
                    Backend::compile(name, backend, cache_budget, &runtime.clock, &runtime.metrics, &secrets(&path));
                Some((name.clone(), Arc::new(problems.take(&path, compiled)?)))
            })
            .collect();
        let names = Names {
            declared: &config.declared,
            defaults: &config.defaults,
            issuers: &issuers,
            backend_configs: &config.backends,
            backends: &backends,
        };
        let routes: Vec<Route> = config
            .routes
            .iter()
            .filter_map(|route| problems.take(&format!("routes[{}]", route.position), Route::compile(route, &names)))
            .collect();
        let webhooks = problems.take("webhooks", webhook::compile(&config.webhooks, &issuers)).unwrap_or_default();
        check_webhook_bodies(&webhooks, &config.limits, &mut problems);
        let webhook_names: Vec<&str> = config.webhooks.iter().map(|webhook| webhook.name.as_str()).collect();
        let leeway =
            |name: &str| issuers.iter().find(|issuer| &*issuer.name == name).map(|issuer| issuer.leeway_seconds);
        let revocation = problems.take("revocation", revocation::compile(&config.revocation, leeway, &webhook_names));
        // A Redis URL from a secret that was not read (`--no-secrets`) stands in as
        // memory: such a policy never serves, and its problem is listed as not checked.
        let state = problems.take("state", state::compile(&config.state)).unwrap_or(StateSettings::Memory);
        let auth_hooks = problems.take("", faces::compile_auth_hooks(&config.auth_hooks, &names)).unwrap_or_default();
        problems.extend_under("", route::duplicate_names(&config.routes));
        problems.extend_under("", route::unreachable(&routes));
        // A value that was not read was reported once (or is listed as not checked):
        // what it causes here is not a second problem.
        problems.retain(|problem| !config.unresolved.covers(&problem.path));
        let (Some(revocation), true) = (revocation, problems.is_empty()) else {
            return Err(problems.into_vec());
        };
        let warnings = warnings(config, &issuers);
        let rule_additions = rule_additions(&routes);
        Ok(Policy {
            generation: previous.map_or(1, |old| old.generation + 1),
            listen: config.listen.clone(),
            admin_token: config.admin.token.clone(),
            issuers,
            backends,
            identity_headers: identity_headers(config, &routes, &webhooks),
            warnings,
            router: Router::new(routes),
            cache: TokenCache::new(
                cache_budget,
                rule_additions,
                runtime.clock.clone(),
                runtime.metrics.cache_counters(),
            ),
            limits: config.limits.clone(),
            faces,
            auth_hooks,
            tls,
            decision_log: config.decision_log.clone(),
            telemetry: config.telemetry.clone(),
            unresolved: config.unresolved.clone(),
            webhooks,
            revocation,
            state,
            runtime: runtime.clone(),
        })
    }

    /// Whether every secret was read: only such a policy may serve.
    pub fn has_secrets(&self) -> bool {
        self.unresolved.reading && self.unresolved.values.is_empty()
    }

    /// Connects the shared state (once per process: the first policy's `state`).
    pub fn connect_state(&self) {
        self.runtime.shared.connect(&self.state, &self.runtime.clock, &self.runtime.metrics);
    }

    /// Starts the background key refreshers (the first fetch happens at once).
    pub fn start(&self) {
        for issuer in &self.issuers {
            issuer.keys.start_refresher();
        }
    }

    /// Issuers that some authenticating route relies on.
    pub fn issuers_in_use(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        let hooks = self.auth_hooks.iter().map(|hook| &hook.route);
        let routes: Vec<&Route> = self.router.routes().iter().chain(hooks).collect();
        self.issuers.iter().filter(move |issuer| {
            routes.iter().any(|route| route.action == Action::Authenticate && route.issuers.contains(&issuer.id))
        })
    }

    /// SERVING once every issuer in use has keys (SPEC section 8), and while
    /// none of them is stale (`refresh.max_stale_seconds`).
    /// With a shared state, also once its revocation set has been read, and
    /// while it is current (or `on_stale: allow`).
    pub fn is_ready(&self) -> bool {
        self.issuers_in_use().all(|issuer| issuer.keys.usable().is_ok())
            && self.runtime.shared.is_ready(self.runtime.clock.now())
    }

    pub fn issuer(&self, name: &str) -> Option<&Arc<Issuer>> {
        self.issuers.iter().find(|issuer| &*issuer.name == name)
    }

    /// What `/metrics` reports about this policy; `ready` is the service's readiness.
    pub fn metrics_state(&self, ready: bool) -> metrics::State {
        let issuers = self
            .issuers
            .iter()
            .map(|issuer| {
                let status = issuer.keys.status();
                metrics::IssuerState {
                    name: issuer.name.to_string(),
                    keys: status.key_ids.len(),
                    // Static keys are never refreshed: no age to watch.
                    last_refresh: status.last_refresh.filter(|_| status.jwks_uri.is_some()),
                }
            })
            .collect();
        let (cache_entries, cache_bytes) = (self.cache.entry_count(), self.cache.weighted_bytes());
        let revocations = &self.runtime.shared.revocations;
        metrics::State {
            ready,
            generation: self.generation,
            cache_entries,
            cache_bytes,
            issuers,
            revocations: revocations.len() as u64,
            revocation_staleness: revocations.staleness(self.runtime.clock.now()),
        }
    }

    /// Fetches keys, concurrently and each within a bound, for issuers that have
    /// none and are not carried over from `previous` (whose issuers keep their
    /// state, keys or not). Every failure is a problem with its YAML path.
    pub async fn fetch_missing_keys(&self, previous: Option<&Policy>) -> Vec<Problem> {
        const BOUND: Duration = Duration::from_secs(10);
        let carried = |issuer: &Issuer| {
            previous.is_some_and(|old| old.issuers.iter().any(|was| Arc::ptr_eq(&was.keys, &issuer.keys)))
        };
        let pending: Vec<_> =
            self.issuers.iter().filter(|issuer| !carried(issuer) && issuer.keys.current().is_none()).collect();
        let tasks: Vec<_> = pending
            .iter()
            .map(|issuer| {
                let keys = Arc::clone(&issuer.keys);
                tokio::spawn(async move {
                    match tokio::time::timeout(BOUND, keys.refresh()).await {
                        Ok(Ok(_)) => None,
                        Ok(Err(err)) => Some(err.to_string()),
                        Err(_) => Some(format!("no answer within {}s", BOUND.as_secs())),
                    }
                })
            })
            .collect();
        let mut problems = Vec::new();
        for (issuer, task) in pending.iter().zip(tasks) {
            if let Some(why) = task.await.unwrap_or_else(|join| Some(join.to_string())) {
                problems
                    .push(Problem::new(format!("issuers.{}", issuer.name), format!("first key fetch failed: {why}")));
            }
        }
        problems
    }
}

/// The identity headers of every route (defaults included where they apply),
/// and those `defaults` declares even where no route takes them, once each;
/// with a `forward` webhook, the `x-portcullis-webhook-*` headers it vouches for.
fn identity_headers(config: &Config, routes: &[Route], webhooks: &[Webhook]) -> Vec<String> {
    let from_routes = routes.iter().flat_map(|route| route.identity.headers().map(|(name, _)| name.to_string()));
    let from_defaults = config.defaults.headers.iter().flatten().filter_map(|(name, _)| identity::settable(name));
    let forwarding = webhooks.iter().any(|webhook| webhook.mode == crate::config::WebhookMode::Forward);
    let from_webhooks = webhook::FORWARD_HEADERS.iter().filter(|_| forwarding).map(|name| name.to_string());
    let mut names: Vec<String> = from_routes.chain(from_defaults).chain(from_webhooks).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Every issuer's warnings, under `issuers.<name>` (an issuer's id is its position in the file).
fn warnings(config: &Config, issuers: &[Arc<Issuer>]) -> Vec<Problem> {
    let mut found = Problems::default();
    for issuer in issuers {
        let (name, written) = &config.issuers[issuer.id];
        found.extend_under(&config::join_path("issuers", name), issuer.warnings(written));
    }
    found.into_vec()
}

/// An unauthenticated control plane is only acceptable where only this machine
/// can reach it. A client certificate does not replace the token: the listeners
/// share `listen.tls.client_ca`, so Envoy's own certificate would open the Admin API.
fn check_admin(config: &Config, problems: &mut Problems) {
    if config.admin.token.is_none() && !config.listen.admin.ip().is_loopback() {
        problems.push("admin.token", admin_token_required(config.listen.admin));
    }
    if config.admin.token.as_ref().is_some_and(|token| token.len() < MIN_ADMIN_TOKEN_CHARS) {
        problems.push("admin.token", format!("use at least {MIN_ADMIN_TOKEN_CHARS} characters"));
    }
}

/// Why a token-less admin port at `admin` is refused (at load and on reload).
pub fn admin_token_required(admin: std::net::SocketAddr) -> String {
    format!("required because listen.admin ({admin}) is not a loopback address (client certificates do not replace it)")
}

/// Fractions are fractions, the log has somewhere to go, the collector is a URL.
fn check_observability(config: &Config, problems: &mut Problems) {
    let fraction = |value: f64| (0.0..=1.0).contains(&value);
    if let Some(log) = &config.decision_log {
        if !fraction(log.sample) {
            problems.push("decision_log.sample", "must be between 0 and 1");
        }
        if log.to.trim().is_empty() {
            problems.push("decision_log.to", "must be `stdout` or a file path");
        }
    }
    let Some(telemetry) = &config.telemetry else { return };
    if telemetry.sample_ratio.is_some_and(|ratio| !fraction(ratio)) {
        problems.push("telemetry.sample_ratio", "must be between 0 and 1");
    }
    if let Some(endpoint) = &telemetry.otlp_endpoint {
        let scheme = url::Url::parse(endpoint).map(|url| url.scheme().to_string());
        if !matches!(scheme.as_deref(), Ok("http" | "https")) {
            problems.push("telemetry.otlp_endpoint", "must be an http:// or https:// URL (OTLP over gRPC)");
        }
    }
}

/// A webhook's body travels in the CheckRequest, whose size limit is twice
/// `limits.max_header_bytes` plus an envelope (see `intake`): a body up to
/// `max_header_bytes` always fits beside headers within their own limit.
fn check_webhook_bodies(webhooks: &[Webhook], limits: &LimitsConfig, problems: &mut Problems) {
    for (index, webhook) in webhooks.iter().enumerate() {
        if webhook.max_body_bytes > limits.max_header_bytes {
            problems.push(
                format!("webhooks[{index}].max_body_bytes"),
                format!(
                    "at most limits.max_header_bytes ({}): the body travels in the CheckRequest, whose size follows that limit",
                    limits.max_header_bytes
                ),
            );
        }
    }
}

/// What the routes' CEL rules may add to a cached token, for its cache weight.
fn rule_additions(routes: &[Route]) -> RuleAdditions {
    let rules = routes.iter().filter_map(|route| route.requirements.as_ref());
    let (mut any, mut memoizing) = (false, false);
    for requirements in rules {
        any |= requirements.when_source().is_some();
        memoizing |= requirements.memoizes();
    }
    match (any, memoizing) {
        (_, true) => RuleAdditions::CelViewAndMemo,
        (true, false) => RuleAdditions::CelView,
        (false, false) => RuleAdditions::None,
    }
}

/// Reads, parses and compiles a config file, with a fresh runtime.
pub fn load_file(path: &Path) -> Result<Policy, ConfigError> {
    load_file_with(path, &Runtime::default(), None)
}

/// Parses and compiles config text with a fresh runtime; `source_name` only labels errors.
pub fn parse_str(text: &str, source_name: &str) -> Result<Policy, ConfigError> {
    compile_text(text, source_name, &Runtime::default(), None)
}

/// Reads and compiles `path` as the successor of `previous` (a reload).
pub fn load_file_with(path: &Path, runtime: &Runtime, previous: Option<&Policy>) -> Result<Policy, ConfigError> {
    let source_name = path.display().to_string();
    compile_text(&config::read_file(path, &source_name)?, &source_name, runtime, previous)
}

/// Reads and compiles `path` taking `${...}` values from `secrets`
/// (`--no-secrets`, policy tests), with a fresh runtime.
pub fn load_file_without_secrets(path: &Path, secrets: &Secrets) -> Result<Policy, ConfigError> {
    let source_name = path.display().to_string();
    let text = config::read_file(path, &source_name)?;
    compile_text_with(&text, &source_name, secrets, &Runtime::default())
}

/// Parses and compiles in one run, so problems of both kinds are reported
/// together: what did not parse, and what parsed but does not make sense.
pub fn compile_text(
    text: &str,
    source_name: &str,
    runtime: &Runtime,
    previous: Option<&Policy>,
) -> Result<Policy, ConfigError> {
    compile(config::read_str(text), source_name, runtime, previous)
}

/// [`compile_text`] with `${...}` values from `secrets`, as a first generation.
pub fn compile_text_with(
    text: &str,
    source_name: &str,
    secrets: &Secrets,
    runtime: &Runtime,
) -> Result<Policy, ConfigError> {
    compile(config::read_str_with(text, secrets), source_name, runtime, None)
}

fn compile(
    (config, mut problems): (Option<Config>, Vec<Problem>),
    source_name: &str,
    runtime: &Runtime,
    previous: Option<&Policy>,
) -> Result<Policy, ConfigError> {
    if let Some(config) = config {
        match Policy::compile(&config, runtime, previous) {
            Ok(policy) if problems.is_empty() => return Ok(policy),
            Ok(_) => {}
            Err(more) => problems.extend(more),
        }
    }
    Err(ConfigError { source_name: source_name.to_string(), problems })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::HttpRequest;
    use crate::testing::{Answer, ScriptedFetcher, es256, runtime};

    const CONFIG: &str = "issuers:\n  idp: { issuer: 'https://idp.test', jwks_uri: 'https://idp.test/jwks' }\nroutes:\n  - match: { prefix: / }\n";

    #[test]
    fn the_cache_is_bounded_in_bytes_which_must_be_positive() {
        let fetcher = ScriptedFetcher::new([]);
        let err =
            compile_text("cache: { max_bytes: 0 }\nroutes: []\n", "t", &runtime(fetcher.clone()), None).unwrap_err();
        let problems: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems, ["cache.max_bytes: must be greater than 0 (`tokens: 0` turns the cache off)"]);
        let policy = compile_text("cache: { max_bytes: 1000 }\nroutes: []\n", "t", &runtime(fetcher), None).unwrap();
        let claims = serde_json::json!({"sub": "x".repeat(2000)}).as_object().cloned().unwrap();
        let token = Arc::new(crate::token::VerifiedToken::new(0, "k".into(), u64::MAX, claims));
        policy.cache.insert((crate::token::digest("t"), 0), token);
        assert_eq!(policy.cache.entry_count(), 0, "a token estimated above max_bytes is not kept");
    }

    #[test]
    fn one_run_reports_parse_and_compile_problems_by_path() {
        let text = "issuers:\n  idp: { issuer: 'http://idp.example.com', audiance: [x] }\n  hs: { issuer: i, secret: short }\nroutes:\n  - match: { prefix: nope }\n    issuers: [idp, hs]\n";
        let err = compile_text(text, "t", &runtime(ScriptedFetcher::new([])), None).unwrap_err();
        let problems: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "issuers.idp.audiance: unknown field `audiance`, expected one of `issuer`, `jwks_uri`, `audiences`, `algorithms`, `leeway_seconds`, `token_from`, `secret`, `refresh`, `hasura_jwt_secret`",
                "issuers.hs.secret: an HS* secret must be at least 32 bytes (RFC 7518 section 3.2)",
                "routes[0].match.prefix: must start with '/'",
            ]
        );
    }

    #[tokio::test]
    async fn without_secrets_a_decision_names_the_secrets_it_would_render() {
        let text = "issuers:\n  legacy: { issuer: 'https://legacy.test', secret: '${LEGACY}', algorithms: [HS512] }\nbackends:\n  supa: { type: supabase, signing_key: '${SUPA_KEY}', apikey: '${file:/run/apikey}', allow_anonymous: true }\nroutes:\n  - { match: { prefix: /rest/v1/ }, backend: supa }\n";
        let runtime = runtime(ScriptedFetcher::new([]));
        let policy = compile_text_with(text, "t", &Secrets::Placeholders, &runtime).unwrap();
        assert!(!policy.has_secrets(), "such a policy must not serve");
        let unread: Vec<String> = policy.unresolved.values.iter().map(ToString::to_string).collect();
        assert_eq!(
            unread,
            [
                "issuers.legacy.secret (${LEGACY})",
                "backends.supa.signing_key (${SUPA_KEY})",
                "backends.supa.apikey (${file:/run/apikey})"
            ]
        );
        let authorizer = crate::authz::Authorizer::new(policy);
        let request = HttpRequest::new("GET", "/rest/v1/todos", "localhost", std::iter::empty::<(&str, &str)>());
        let crate::decision::Decision::Allow(allowed) = authorizer.decide(&request).await else { panic!("anon allow") };
        let named: Vec<(&str, &str)> =
            allowed.unresolved.iter().map(|(header, secret)| (header.as_str(), secret.path.as_str())).collect();
        assert_eq!(named, [("authorization", "backends.supa.signing_key"), ("apikey", "backends.supa.apikey")]);
        assert!(allowed.set_headers.contains(&("authorization".into(), "Bearer ${SUPA_KEY}".into())));
        // With the secrets read, the same config needs them.
        let err = compile_text(text, "t", &runtime, None).unwrap_err();
        assert_eq!(err.problems.len(), 3, "one problem per unset value, no follow-on: {err}");
    }

    #[test]
    fn event_sections_are_checked_by_path_without_quoting_secrets() {
        let text = "webhooks:\n  - { name: h, match: { path: /h }, kind: svix, secrets: ['whsec_!!s3cret'], max_body_bytes: 200000 }\n  - { name: h, match: { path: h }, kind: kinde }\nrevocation:\n  on_event: [{ webhook: nope, type: user.deleted, revoke_subject: $.data.id, issuer: nope }]\nstate: { redis: 'http://user:s3cret@cache' }\nroutes: []\n";
        let err = compile_text(text, "t", &runtime(ScriptedFetcher::new([])), None).unwrap_err();
        let problems: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "webhooks[0].secrets[0]: the part after whsec_ is not base64",
                "webhooks[1].name: another webhook has this name",
                "webhooks[1].match.path: must start with '/' and have no query string",
                "webhooks[1].issuer: required for kind: kinde (the issuer whose JWKS signs the deliveries)",
                "revocation.on_event[0].webhook: no webhook of that name in `webhooks`",
                "revocation.on_event[0].issuer: no issuer of that name in `issuers`",
                "state.redis: must be a redis://host:port/db or rediss:// URL",
            ]
        );
        assert!(!problems.concat().contains("s3cret"));
        let large = "webhooks:\n  - { name: h, match: { path: /h }, kind: svix, secrets: ['whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD'], max_body_bytes: 200000 }\nroutes: []\n";
        let err = compile_text(large, "t", &runtime(ScriptedFetcher::new([])), None).unwrap_err();
        assert_eq!(
            err.problems[0].to_string(),
            "webhooks[0].max_body_bytes: at most limits.max_header_bytes (98304): the body travels in the CheckRequest, whose size follows that limit"
        );
    }

    #[tokio::test]
    async fn a_successor_keeps_the_keys_of_unchanged_issuers() {
        let runtime = runtime(ScriptedFetcher::new([Answer::keys(&[&es256("k")])]));
        let first = compile_text(CONFIG, "t", &runtime, None).unwrap();
        assert_eq!(first.generation, 1);
        first.issuers[0].keys.refresh().await.unwrap();
        let same = compile_text(&format!("{CONFIG}# a comment\n"), "t", &runtime, Some(&first)).unwrap();
        assert_eq!(same.generation, 2);
        assert!(Arc::ptr_eq(&first.issuers[0].keys, &same.issuers[0].keys));
        assert!(same.is_ready());
        let moved = CONFIG.replace("idp.test/jwks", "idp.test/keys");
        let changed = compile_text(&moved, "t", &runtime, Some(&same)).unwrap();
        assert!(!Arc::ptr_eq(&same.issuers[0].keys, &changed.issuers[0].keys));
        assert!(!changed.is_ready(), "a new key source starts without keys");
    }
}
