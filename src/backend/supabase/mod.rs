//! The `supabase` backend: PostgREST, Storage and Realtime-over-HTTP get a token
//! they accept, with the `role`, `sub` and claims row-level security reads
//! (SPEC section 6). `remint` signs a Supabase-shaped token from any IdP's token;
//! `passthrough` keeps an IdP token Supabase already trusts (third-party auth).
//! Either way the client's `apikey` is replaced, and `service_role` never comes
//! from a client.

pub mod deny;
pub mod mint;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Authenticated, Mutations};
use crate::config::{Placeholder, Problem, Secret, Section, SupabaseBackendConfig, SupabaseMode as Mode, TokenFrom};
use crate::decision::Refusal;
use crate::header::is_header_value;
use crate::jsonpath::JsonPath;
use crate::metrics::MintCounters;
use crate::request::HttpRequest;
use crate::token::Clock;
use crate::token_cache::CacheBudget;
use mint::{MintCache, Minted, Signer, UserClaims, anonymous_claims, session_id_from};

const DEFAULT_APP_METADATA: [(&str, &str); 6] = [
    ("org_code", "$.org_code"),
    ("org_id", "$.org_id"),
    ("org_name", "$.org_name"),
    ("role", "$.role"),
    ("roles", "$.roles"),
    ("permissions", "$.permissions"),
];
const DEFAULT_USER_METADATA: [(&str, &str); 4] =
    [("name", "$.name"), ("given_name", "$.given_name"), ("family_name", "$.family_name"), ("picture", "$.picture")];

type ClaimMapping = Vec<(String, JsonPath)>;

pub struct SupabaseBackend {
    mode: Mode,
    signer: Option<Signer>,
    /// A remint signing key that was not read (a policy compiled without secrets).
    unread_signing_key: Option<Box<Placeholder>>,
    apikey: Secret,
    ttl_seconds: u64,
    allow_anonymous: bool,
    require_role_claim: bool,
    minted_issuer: String,
    app_metadata: ClaimMapping,
    user_metadata: ClaimMapping,
    pub(super) minted: MintCache,
    clock: Clock,
}

impl SupabaseBackend {
    /// Compiles `backends.<name>` with `type: supabase` (the signing key is
    /// parsed and probe-signed once); problems are relative to it.
    /// `cache_capacity` bounds minted-token reuse.
    pub fn compile(
        config: &SupabaseBackendConfig,
        cache_budget: CacheBudget,
        clock: &Clock,
        counters: MintCounters,
        secrets: &Section<'_>,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let unread_signing_key =
            secrets.at("signing_key").filter(|_| config.mode == Mode::Remint).map(|key| Box::new(key.clone()));
        if config.apikey.is_empty() {
            problems.push(Problem::new("apikey", "must not be empty"));
        }
        if !is_header_value(&config.apikey) {
            problems.push(Problem::new("apikey", "contains control characters (a stray newline?)"));
        }
        if config.ttl_seconds == 0 {
            problems.push(Problem::new("ttl_seconds", "must be greater than 0"));
        }
        let signer = match (config.mode, &config.signing_key) {
            (Mode::Remint, None) => {
                problems.push(Problem::new("signing_key", "required with mode: remint"));
                None
            }
            // Not read: nothing to parse; a decision that would mint says which key it needs.
            (Mode::Remint, Some(_)) if unread_signing_key.is_some() => None,
            (Mode::Remint, Some(key)) => Signer::new(key, config.signing_kid.as_deref())
                .map_err(|err| problems.push(Problem::new("signing_key", err)))
                .ok(),
            (Mode::Passthrough, Some(_)) => {
                problems.push(Problem::new("signing_key", "only used with mode: remint"));
                None
            }
            (Mode::Passthrough, None) => None,
        };
        if config.mode == Mode::Remint && config.require_role_claim {
            problems.push(Problem::new(
                "require_role_claim",
                "only applies to mode: passthrough (remint always sets the role)",
            ));
        }
        let app_metadata = mapping("app_metadata", config.app_metadata.as_ref(), &DEFAULT_APP_METADATA, &mut problems);
        let user_metadata =
            mapping("user_metadata", config.user_metadata.as_ref(), &DEFAULT_USER_METADATA, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        // Replace a minted token a fifth of its lifetime (at most a minute) before it expires.
        let margin = (config.ttl_seconds / 5).min(60);
        Ok(SupabaseBackend {
            mode: config.mode,
            signer,
            unread_signing_key,
            apikey: secrets.secret("apikey", &config.apikey),
            ttl_seconds: config.ttl_seconds,
            allow_anonymous: config.allow_anonymous,
            require_role_claim: config.require_role_claim,
            minted_issuer: config.minted_issuer.clone(),
            app_metadata,
            user_metadata,
            minted: MintCache::new(cache_budget, margin, clock.clone(), counters),
            clock: clock.clone(),
        })
    }

    pub fn authorize(&self, auth: &Authenticated<'_>) -> Result<Mutations, Refusal> {
        let mut mutations = Mutations::default();
        match self.mode {
            Mode::Passthrough => {
                self.check_passthrough_role(&auth.token.claims)?;
                mutations.set_headers.push(("authorization".into(), format!("Bearer {}", auth.raw_token)));
            }
            Mode::Remint if self.unread_signing_key.is_some() => self.unread_mint(&mut mutations),
            Mode::Remint => {
                let minted = self.mint_for_user(auth)?;
                mutations.set_headers.push(("authorization".into(), format!("Bearer {}", minted.token)));
            }
        }
        mutations.set_secret("apikey", &self.apikey);
        // The IdP token never reaches Supabase from another header.
        if let TokenFrom::Header { header, .. } = auth.token_from()
            && header != "authorization"
        {
            mutations.remove([header.clone()]);
        }
        Ok(mutations)
    }

    /// No token: `apikey` (and in remint mode an `anon` token) when allowed.
    pub fn anonymous(&self, _request: &HttpRequest) -> Option<Mutations> {
        if !self.allow_anonymous {
            return None;
        }
        let mut mutations = Mutations::default();
        match &self.signer {
            None if self.unread_signing_key.is_some() => self.unread_mint(&mut mutations),
            Some(signer) => {
                let minted = self.minted.anonymous(|| {
                    let now = self.clock.now();
                    let exp = now + self.ttl_seconds;
                    let token = signer.sign(&anonymous_claims(&self.minted_issuer, now, exp)).ok()?;
                    Some(Minted { token, exp })
                })?;
                mutations.set_headers.push(("authorization".into(), format!("Bearer {}", minted.token)));
            }
            // Whatever the client put in Authorization is not a token we verified.
            None => mutations.remove(["authorization".to_string()]),
        }
        mutations.set_secret("apikey", &self.apikey);
        Some(mutations)
    }

    /// The minted token's place, when its signing key was not read: a stand-in
    /// naming the key, never a token signed with an invented one.
    fn unread_mint(&self, mutations: &mut Mutations) {
        if let Some(key) = &self.unread_signing_key {
            let stand_in = Secret::Unresolved((**key).clone());
            mutations.set_headers.push(("authorization".into(), format!("Bearer {}", stand_in.rendered())));
            mutations.unresolved.push(("authorization".into(), (**key).clone()));
        }
    }

    /// Supabase trusts a passed-through token's `role` blindly: `service_role`
    /// bypasses row-level security, so it never passes.
    fn check_passthrough_role(&self, claims: &Map<String, Value>) -> Result<(), Refusal> {
        let refuse = |message: String| Err(Refusal { code: "42501", message });
        match claims.get("role") {
            Some(Value::String(role)) if role == "service_role" => {
                refuse("a client token may not carry role service_role".into())
            }
            Some(Value::String(role)) if role == "authenticated" => Ok(()),
            // PostgREST would SET ROLE to anything else the IdP put there (WorkOS'
            // org role "admin", ...): only anon passes, and only when not required.
            Some(Value::String(role)) if role == "anon" && !self.require_role_claim => Ok(()),
            None if !self.require_role_claim => Ok(()),
            Some(Value::String(role)) => refuse(format!("the token's role must be \"authenticated\", not {role:?}")),
            None => refuse("the token has no role claim; Supabase would run it as anon".into()),
            Some(_) => refuse("the token's role claim must be a string".into()),
        }
    }

    fn mint_for_user(&self, auth: &Authenticated<'_>) -> Result<std::sync::Arc<Minted>, Refusal> {
        let claims = &auth.token.claims;
        let sub = claims.get("sub").and_then(Value::as_str).ok_or_else(|| Refusal {
            code: "42501",
            message: "the token has no sub claim; Supabase row-level security needs a subject".into(),
        })?;
        let signer = self.signer.as_ref().expect("remint mode has a signer");
        let minted = self.minted.for_token((*auth.digest, auth.issuer.id), || {
            let now = self.clock.now();
            let user = UserClaims {
                issuer: &self.minted_issuer,
                sub,
                email: confirmed(claims, "email", "email_verified"),
                phone: confirmed(claims, "phone", "phone_verified"),
                session_id: ["sid", "jti"]
                    .iter()
                    .find_map(|name| claims.get(*name).and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| session_id_from(auth.digest)),
                app_metadata: self.app_metadata(auth),
                user_metadata: collect(&self.user_metadata, claims),
                iat: now,
                // Never outlive the IdP token.
                exp: (now + self.ttl_seconds).min(auth.token.exp),
            };
            let token = signer.sign(&user.to_json()).ok()?;
            Some(Minted { token, exp: user.exp })
        });
        minted.ok_or_else(|| Refusal { code: "PGRST300", message: "could not sign the Supabase token".into() })
    }

    fn app_metadata(&self, auth: &Authenticated<'_>) -> Map<String, Value> {
        let mut metadata = Map::new();
        let provider = Value::String(auth.issuer.name.to_string());
        metadata.insert("provider".into(), provider.clone());
        metadata.insert("providers".into(), Value::Array(vec![provider]));
        metadata.extend(collect(&self.app_metadata, &auth.token.claims));
        metadata
    }
}

/// `claim` when the IdP says it is confirmed (`verified` is the boolean `true`),
/// else empty. GoTrue only puts confirmed addresses in its tokens, so row-level
/// security policies trust `auth.jwt()->>'email'`: an address anyone can sign up
/// with at the IdP must not reach them. A string `"true"` is not a boolean and
/// does not count (Kinde, Auth0, WorkOS and Clerk send booleans).
fn confirmed<'c>(claims: &'c Map<String, Value>, claim: &str, verified: &str) -> &'c str {
    match claims.get(verified) {
        Some(Value::Bool(true)) => claims.get(claim).and_then(Value::as_str).unwrap_or_default(),
        _ => "",
    }
}

/// Claim paths by metadata name, parsed once; problems under `key`.
fn mapping(
    key: &str,
    configured: Option<&BTreeMap<String, String>>,
    defaults: &[(&str, &str)],
    problems: &mut Vec<Problem>,
) -> ClaimMapping {
    let pairs: Vec<(String, String)> = match configured {
        Some(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        None => defaults.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    pairs
        .into_iter()
        .filter_map(|(name, path)| match JsonPath::parse(&path) {
            Ok(parsed) => Some((name, parsed)),
            Err(err) => {
                problems.push(Problem::new(key, format!("{name}: {err}")));
                None
            }
        })
        .collect()
}

/// The mapped claims that are present in the token.
fn collect(mapping: &ClaimMapping, claims: &Map<String, Value>) -> Map<String, Value> {
    let root = Value::Object(claims.clone());
    mapping.iter().filter_map(|(name, path)| path.find(&root).map(|value| (name.clone(), value))).collect()
}
