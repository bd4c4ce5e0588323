//! One trusted identity provider, compiled once from its config: the `iss` and
//! audiences it requires, its algorithms (one `Validation` each), where its
//! token is found, its live keys, and the Hasura claims settings an imported
//! `hasura_jwt_secret` brings along. Every problem is reported with its path
//! relative to `issuers.<name>`.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation};

use crate::backend::hasura::claims::ClaimsSettings;
use crate::backend::hasura::secret;
use crate::config::{Audiences, IssuerConfig, Problem, RefreshConfig, Section, TokenFrom};
use crate::keys::{IssuerKeys, KeyRuntime, KeySet, KeySource, algorithms_for, is_loopback_url};

pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;
const MAX_LEEWAY_SECONDS: u64 = 86_400;
const MIN_HMAC_SECRET_BYTES: usize = 32;
const MAX_UNKNOWN_KID_WAIT_MS: u64 = 1_000;

pub struct Issuer {
    /// Position in the policy's issuers (part of the token cache key).
    pub id: usize,
    pub name: Arc<str>,
    /// Exact `iss` value; `None` accepts any `iss` (Hasura imports without `issuer`).
    pub issuer: Option<String>,
    /// The token's `aud` must contain one of these; `None` checks no `aud`.
    pub audiences: Option<Vec<String>>,
    pub token_from: TokenFrom,
    pub leeway_seconds: u64,
    pub algorithms: Vec<Algorithm>,
    /// One `Validation` per allowed algorithm: jsonwebtoken insists every
    /// algorithm of a Validation belongs to the verifying key's family.
    validations: Vec<(Algorithm, Validation)>,
    pub source: KeySource,
    pub keys: Arc<IssuerKeys>,
    /// Hasura claims settings imported with this issuer (`hasura_jwt_secret`).
    pub hasura_claims: Option<ClaimsSettings>,
    /// Whether the settings above came from a `hasura_jwt_secret`.
    pub imported: bool,
}

/// The issuer's settings once `hasura_jwt_secret` (if any) is resolved.
struct Resolved {
    issuer: Option<String>,
    audiences: Option<Vec<String>>,
    leeway_seconds: u64,
    token_from: TokenFrom,
    source: KeySource,
    /// A static source's key set, already parsed.
    initial: Option<KeySet>,
    hasura_claims: Option<ClaimsSettings>,
}

impl Issuer {
    /// Compiles `issuers.<name>`. Keys of `previous` are kept when they come from
    /// the same source with the same timings (a reload neither refetches nor flaps).
    pub fn compile(
        id: usize,
        name: &str,
        config: &IssuerConfig,
        runtime: &KeyRuntime,
        previous: Option<&Issuer>,
    ) -> Result<Issuer, Vec<Problem>> {
        Issuer::compile_with(id, name, config, runtime, previous, &Section::default())
    }

    /// [`Issuer::compile`] where some of the section's values were not read
    /// (`secrets`): an unread `secret` becomes [`KeySource::Unresolved`].
    pub fn compile_with(
        id: usize,
        name: &str,
        config: &IssuerConfig,
        runtime: &KeyRuntime,
        previous: Option<&Issuer>,
        secrets: &Section<'_>,
    ) -> Result<Issuer, Vec<Problem>> {
        let mut problems = Vec::new();
        let resolved = match &config.hasura_jwt_secret {
            Some(raw) => import(config, raw, &mut problems),
            None => native(config, secrets, &mut problems),
        };
        let secret_len = match &resolved.as_ref().map(|r| &r.source) {
            Some(KeySource::Secret(secret)) => Some(secret.len()),
            // Its length is not known: the checks that depend on it are skipped (the
            // listed algorithms must still be HS*).
            Some(KeySource::Unresolved(_)) => Some(usize::MAX),
            _ => None,
        };
        let algorithms = check_algorithms(config, secret_len, &mut problems);
        check_refresh(&config.refresh, &mut problems);
        // A day is more than any real clock skew.
        if resolved.as_ref().is_some_and(|resolved| resolved.leeway_seconds > MAX_LEEWAY_SECONDS) {
            let key =
                if config.hasura_jwt_secret.is_some() { "hasura_jwt_secret.allowed_skew" } else { "leeway_seconds" };
            problems.push(Problem::new(key, format!("at most {MAX_LEEWAY_SECONDS} seconds (one day)")));
        }
        let (Some(resolved), Some(algorithms), true) = (resolved, algorithms, problems.is_empty()) else {
            return Err(problems);
        };
        let keys = match previous
            .filter(|old| old.keys.serves(resolved.issuer.as_deref(), &resolved.source, &config.refresh))
        {
            Some(old) => Arc::clone(&old.keys),
            None => IssuerKeys::new(
                name,
                resolved.issuer.as_deref(),
                resolved.source.clone(),
                config.refresh.clone(),
                runtime.clone(),
                resolved.initial,
            ),
        };
        Ok(Issuer {
            id,
            name: Arc::from(name),
            validations: algorithms.iter().map(|alg| (*alg, signature_only(*alg))).collect(),
            algorithms,
            issuer: resolved.issuer,
            audiences: resolved.audiences,
            token_from: resolved.token_from,
            leeway_seconds: resolved.leeway_seconds,
            source: resolved.source,
            keys,
            hasura_claims: resolved.hasura_claims,
            imported: config.hasura_jwt_secret.is_some(),
        })
    }

    /// What is legal but probably not meant, relative to `issuers.<name>`: no
    /// audience unless `audiences: any` says so. An IdP tenant signs tokens for
    /// every API it serves; without an audience check a token issued for one
    /// of them is accepted by all.
    pub fn warnings(&self, config: &IssuerConfig) -> Vec<Problem> {
        if self.audiences.is_some() || config.audiences == Some(Audiences::Any) {
            return Vec::new();
        }
        let (path, set_it) = if self.imported {
            ("hasura_jwt_secret.audience", "set `audience` in hasura_jwt_secret")
        } else {
            ("audiences", "list the audience this API's tokens carry")
        };
        vec![Problem::new(
            path,
            format!(
                "not set: any token of this issuer is accepted, whichever API it was issued for; {set_it}, or write `audiences: any` to accept every audience on purpose"
            ),
        )]
    }

    /// The signature check for a token signed with `alg`; `None` when `alg` is not allowed.
    pub fn validation(&self, alg: Algorithm) -> Option<&Validation> {
        self.validations.iter().find(|(allowed, _)| *allowed == alg).map(|(_, validation)| validation)
    }
}

/// jsonwebtoken checks the signature and that `alg` is the expected one; the
/// claims are checked by `verify` against the injected clock.
fn signature_only(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation
}

/// `issuer`, `jwks_uri` or `secret`, `audiences`, `leeway_seconds`, `token_from`, as written.
fn native(config: &IssuerConfig, secrets: &Section<'_>, problems: &mut Vec<Problem>) -> Option<Resolved> {
    match &config.issuer {
        None => problems.push(Problem::new("issuer", "required: the exact iss claim of this IdP's tokens")),
        Some(issuer) if issuer.is_empty() => problems.push(Problem::new("issuer", "must not be empty")),
        Some(_) => {}
    }
    if config.audiences.as_ref().and_then(Audiences::accepted).is_some_and(Vec::is_empty) {
        problems
            .push(Problem::new("audiences", "must list at least one audience (`audiences: any` skips the aud check)"));
    }
    let source = match (&config.jwks_uri, &config.secret.as_ref().map(|secret| (secret, secrets.at("secret")))) {
        (Some(_), Some(_)) => {
            problems.push(Problem::new("secret", "use either jwks_uri (public keys) or secret (HS*), not both"));
            return None;
        }
        (Some(uri), None) => {
            check_key_url(uri, "jwks_uri", problems);
            KeySource::Jwks(Some(uri.clone()))
        }
        (None, None) => {
            if let Some(url) = config.issuer.as_deref().filter(|url| !url.is_empty()) {
                check_key_url(url, "issuer", problems);
            }
            KeySource::Jwks(None)
        }
        (None, Some((_, Some(unread)))) => KeySource::Unresolved((*unread).clone()),
        (None, Some((secret, None))) if secret.len() < MIN_HMAC_SECRET_BYTES => {
            problems.push(Problem::new(
                "secret",
                format!("an HS* secret must be at least {MIN_HMAC_SECRET_BYTES} bytes (RFC 7518 section 3.2)"),
            ));
            return None;
        }
        (None, Some((secret, None))) => KeySource::Secret(secret.as_bytes().to_vec()),
    };
    let initial = source.static_keys().map_err(|err| problems.push(Problem::new("", err))).ok()?;
    Some(Resolved {
        issuer: config.issuer.clone(),
        audiences: config.audiences.as_ref().and_then(Audiences::accepted).cloned(),
        leeway_seconds: config.leeway_seconds.unwrap_or(DEFAULT_LEEWAY_SECONDS),
        token_from: config.token_from.clone().unwrap_or_default(),
        source,
        initial,
        hasura_claims: None,
    })
}

/// A `hasura_jwt_secret` stands for the key fields; setting both is ambiguous.
fn import(config: &IssuerConfig, raw: &serde_json::Value, problems: &mut Vec<Problem>) -> Option<Resolved> {
    let conflicting = [
        ("issuer", config.issuer.is_some()),
        ("jwks_uri", config.jwks_uri.is_some()),
        ("secret", config.secret.is_some()),
        // `audiences: any` may confirm a secret without `audience`.
        ("audiences", config.audiences.as_ref().is_some_and(|audiences| audiences.accepted().is_some())),
        ("algorithms", config.algorithms.is_some()),
        ("leeway_seconds", config.leeway_seconds.is_some()),
        ("token_from", config.token_from.is_some()),
    ];
    for (key, _) in conflicting.iter().filter(|(_, set)| *set) {
        problems.push(Problem::new(*key, "comes from hasura_jwt_secret here; set it there or drop hasura_jwt_secret"));
    }
    let imported = match secret::import(raw) {
        Ok(imported) => imported,
        Err(found) => {
            problems.extend(found.into_iter().map(|problem| problem.under("hasura_jwt_secret")));
            return None;
        }
    };
    if config.audiences == Some(Audiences::Any) && imported.audiences.is_some() {
        problems.push(Problem::new("audiences", "hasura_jwt_secret sets an audience: drop `audiences: any`"));
    }
    if let KeySource::Jwks(Some(uri)) = &imported.source {
        check_key_url(uri, "hasura_jwt_secret.jwk_url", problems);
    }
    let initial = match imported.initial {
        Some(set) => Some(set),
        None => {
            imported.source.static_keys().map_err(|err| problems.push(Problem::new("hasura_jwt_secret", err))).ok()?
        }
    };
    Some(Resolved {
        issuer: imported.issuer,
        audiences: imported.audiences,
        leeway_seconds: imported.leeway_seconds,
        token_from: imported.token_from,
        source: imported.source,
        initial,
        hasura_claims: Some(imported.claims),
    })
}

fn check_algorithms(
    config: &IssuerConfig,
    secret_len: Option<usize>,
    problems: &mut Vec<Problem>,
) -> Option<Vec<Algorithm>> {
    if config.algorithms.as_ref().is_some_and(Vec::is_empty) {
        problems.push(Problem::new("algorithms", "must list at least one algorithm"));
    }
    algorithms_for(config.algorithms.as_ref(), secret_len)
        .map_err(|message| problems.push(Problem::new("algorithms", message)))
        .ok()
}

fn check_refresh(refresh: &RefreshConfig, problems: &mut Vec<Problem>) {
    if refresh.min_seconds == 0 || refresh.min_seconds > refresh.max_seconds {
        problems.push(Problem::new("refresh", "need 0 < min_seconds <= max_seconds"));
    }
    // Keys refreshed as late as the IdP may ask (max_seconds) must not go stale first.
    if let Some(max_stale) = refresh.max_stale_seconds
        && max_stale < refresh.max_seconds
    {
        problems.push(Problem::new(
            "refresh.max_stale_seconds",
            format!("must be at least refresh.max_seconds ({})", refresh.max_seconds),
        ));
    }
    if refresh.fetch_timeout_ms == 0 {
        problems.push(Problem::new("refresh.fetch_timeout_ms", "must be greater than 0"));
    }
    // A Check waits at most this long on the network: it must stay well below Envoy's timeout.
    if refresh.unknown_kid_wait_ms > MAX_UNKNOWN_KID_WAIT_MS {
        problems.push(Problem::new(
            "refresh.unknown_kid_wait_ms",
            format!("at most {MAX_UNKNOWN_KID_WAIT_MS} (a Check must answer within Envoy's ext_authz timeout)"),
        ));
    }
}

/// Key material must come over TLS: anyone on the path could otherwise mint
/// tokens. The URL itself is not repeated: it may carry credentials.
fn check_key_url(url: &str, key: &str, problems: &mut Vec<Problem>) {
    match url::Url::parse(url) {
        Err(err) => problems.push(Problem::new(key, format!("not a valid URL ({err})"))),
        Ok(parsed) if parsed.scheme() == "https" => {}
        Ok(parsed) if parsed.scheme() == "http" && is_loopback_url(&parsed) => {}
        Ok(_) => problems.push(Problem::new(key, "keys must be fetched over https (http only for loopback)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IssuerConfig;
    use crate::testing::{ScriptedFetcher, runtime};

    fn problems(yaml: &str) -> Vec<String> {
        let value: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
        let config: IssuerConfig = crate::config::value_de::from_value(&value).unwrap();
        let runtime = runtime(ScriptedFetcher::new([]));
        match Issuer::compile(0, "idp", &config, &runtime, None) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn max_stale_seconds_covers_at_least_the_longest_refresh_interval() {
        let base = "{ issuer: 'https://idp.test', jwks_uri: 'https://idp.test/jwks', refresh: ";
        assert_eq!(problems(&format!("{base}{{ max_stale_seconds: 86400 }} }}")), Vec::<String>::new());
        assert_eq!(
            problems(&format!("{base}{{ max_stale_seconds: 3600, max_seconds: 3600 }} }}")),
            Vec::<String>::new()
        );
        assert_eq!(
            problems(&format!("{base}{{ max_stale_seconds: 3599, max_seconds: 3600 }} }}")),
            ["refresh.max_stale_seconds: must be at least refresh.max_seconds (3600)"]
        );
        // Unset, it follows a raised max_seconds instead of refusing the config.
        let refresh = RefreshConfig { max_seconds: 7 * 86_400, ..RefreshConfig::default() };
        assert_eq!(refresh.max_stale(), 7 * 86_400);
        assert_eq!(RefreshConfig::default().max_stale(), 86_400);
    }
}
