//! The `supabase` backend: PostgREST, Storage and Realtime-over-HTTP get a token
//! they accept, with the `role`, `sub` and claims row-level security reads
//! (SPEC section 6). `remint` signs a Supabase-shaped token from any IdP's token;
//! `passthrough` keeps an IdP token Supabase already trusts (third-party auth).
//! Either way the client's `apikey` is replaced, and `service_role` never comes
//! from a client.

pub mod errors;
pub mod mint;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Authenticated, Mutations, Refusal};
use crate::config::TokenFrom;
use crate::jsonpath::JsonPath;
use crate::request::HttpRequest;
use crate::verify::now_seconds;
use mint::{MintCache, Minted, Signer, UserClaims, anonymous_claims, session_id_from};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Remint,
    Passthrough,
}

/// `backends.<name>` with `type: supabase`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupabaseBackendConfig {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub mode: Mode,
    /// HS256 secret (>= 32 bytes) or PEM private key (ES256 P-256 / RS256); remint only.
    pub signing_key: Option<String>,
    /// `kid` of minted tokens; required for PEM keys.
    pub signing_kid: Option<String>,
    /// The project's publishable (or legacy anon) key, sent as `apikey`.
    pub apikey: String,
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u64,
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

fn default_ttl() -> u64 {
    300
}

fn default_minted_issuer() -> String {
    "portcullis".into()
}

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

/// Checks a config completely (the loader reports these with their YAML path).
pub fn validate(config: &SupabaseBackendConfig) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if config.apikey.is_empty() {
        problems.push(("apikey", "must not be empty".into()));
    }
    if !super::is_header_value(&config.apikey) {
        problems.push(("apikey", "contains control characters (a stray newline?)".into()));
    }
    if config.ttl_seconds == 0 {
        problems.push(("ttl_seconds", "must be greater than 0".into()));
    }
    match (config.mode, &config.signing_key) {
        (Mode::Remint, None) => problems.push(("signing_key", "required with mode: remint".into())),
        (Mode::Remint, Some(key)) => {
            if let Err(err) = Signer::new(key, config.signing_kid.as_deref()) {
                problems.push(("signing_key", err));
            }
        }
        (Mode::Passthrough, Some(_)) => problems.push(("signing_key", "only used with mode: remint".into())),
        (Mode::Passthrough, None) => {}
    }
    if config.mode == Mode::Remint && config.require_role_claim {
        problems.push(("require_role_claim", "only applies to mode: passthrough (remint always sets the role)".into()));
    }
    for (key, mapping) in [("app_metadata", &config.app_metadata), ("user_metadata", &config.user_metadata)] {
        for (name, path) in mapping.iter().flatten() {
            if let Err(err) = JsonPath::parse(path) {
                problems.push((key, format!("{name}: {err}")));
            }
        }
    }
    problems
}

pub struct SupabaseBackend {
    mode: Mode,
    signer: Option<Signer>,
    apikey: String,
    ttl_seconds: u64,
    allow_anonymous: bool,
    require_role_claim: bool,
    minted_issuer: String,
    app_metadata: ClaimMapping,
    user_metadata: ClaimMapping,
    minted: MintCache,
}

impl SupabaseBackend {
    /// Builds from a config [`validate`] accepted; `cache_capacity` bounds token reuse.
    pub fn new(config: &SupabaseBackendConfig, cache_capacity: u64) -> Self {
        let signer = config.signing_key.as_ref().filter(|_| config.mode == Mode::Remint).map(|key| {
            Signer::new(key, config.signing_kid.as_deref()).expect("signing key validated by the config loader")
        });
        // Replace a minted token a fifth of its lifetime (at most a minute) before it expires.
        let margin = (config.ttl_seconds / 5).min(60);
        SupabaseBackend {
            mode: config.mode,
            signer,
            apikey: config.apikey.clone(),
            ttl_seconds: config.ttl_seconds,
            allow_anonymous: config.allow_anonymous,
            require_role_claim: config.require_role_claim,
            minted_issuer: config.minted_issuer.clone(),
            app_metadata: mapping(config.app_metadata.as_ref(), &DEFAULT_APP_METADATA),
            user_metadata: mapping(config.user_metadata.as_ref(), &DEFAULT_USER_METADATA),
            minted: MintCache::new(cache_capacity, margin),
        }
    }

    pub fn authorize(&self, auth: &Authenticated<'_>) -> Result<Mutations, Refusal> {
        let mut mutations = Mutations::default();
        match self.mode {
            Mode::Passthrough => {
                self.check_passthrough_role(&auth.token.claims)?;
                mutations.set_headers.push(("authorization".into(), format!("Bearer {}", auth.raw_token)));
            }
            Mode::Remint => {
                let minted = self.mint_for_user(auth)?;
                mutations.set_headers.push(("authorization".into(), format!("Bearer {}", minted.token)));
            }
        }
        mutations.set_headers.push(("apikey".into(), self.apikey.clone()));
        // The IdP token never reaches Supabase from another header.
        if let TokenFrom::Header { header, .. } = auth.token_from
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
            Some(signer) => {
                let minted = self.minted.anonymous(|| {
                    let now = now_seconds();
                    let exp = now + self.ttl_seconds;
                    let token = signer.sign(&anonymous_claims(&self.minted_issuer, now, exp)).ok()?;
                    Some(Minted { token, exp })
                })?;
                mutations.set_headers.push(("authorization".into(), format!("Bearer {}", minted.token)));
            }
            // Whatever the client put in Authorization is not a token we verified.
            None => mutations.remove(["authorization".to_string()]),
        }
        mutations.set_headers.push(("apikey".into(), self.apikey.clone()));
        Some(mutations)
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
            let now = now_seconds();
            let user = UserClaims {
                issuer: &self.minted_issuer,
                sub,
                email: claims.get("email").and_then(Value::as_str).unwrap_or_default(),
                phone: claims.get("phone").and_then(Value::as_str).unwrap_or_default(),
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

fn mapping(configured: Option<&BTreeMap<String, String>>, defaults: &[(&str, &str)]) -> ClaimMapping {
    let pairs: Vec<(String, String)> = match configured {
        Some(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        None => defaults.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    pairs
        .into_iter()
        .map(|(name, path)| (name, JsonPath::parse(&path).expect("claim paths validated by the config loader")))
        .collect()
}

/// The mapped claims that are present in the token.
fn collect(mapping: &ClaimMapping, claims: &Map<String, Value>) -> Map<String, Value> {
    let root = Value::Object(claims.clone());
    mapping.iter().filter_map(|(name, path)| path.find(&root).map(|value| (name.clone(), value))).collect()
}
