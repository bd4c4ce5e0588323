//! Stand-ins for what a policy test cannot have: the IdPs' private keys and
//! the secrets the config reads at start. Each issuer gets fresh keys that
//! take the place of its key source (a JWKS served by [`StandInFetcher`], a
//! PEM public key or an HS* secret written into the config), so every token
//! of a case is really signed and really verified. A Supabase remint key that
//! was not given is a fresh HS256 secret. Nothing here is ever used to serve.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::config::{BackendConfig, Config, IssuerConfig, RefreshConfig, SupabaseMode, join_path};
use crate::dev::SigningKey;
use crate::keys::{FetchError, Fetched, KeyFetcher, KeySet, KeySource};
use crate::policy::Policy;

/// The signing keys of every issuer, by issuer name and algorithm.
#[derive(Default)]
pub struct StandIns {
    keys: HashMap<(String, Algorithm), SigningKey>,
    /// HS* secrets by issuer name: the one written in the config, one given in
    /// the test file, or a fresh one.
    secrets: HashMap<String, Vec<u8>>,
    /// The algorithm a case signs with when it names none, by issuer name.
    defaults: HashMap<String, Algorithm>,
}

impl StandIns {
    /// Prepares `config` for a test run: HS secrets, PEM keys and remint keys
    /// that were not given become fresh ones, and `needed` (issuer name ->
    /// algorithms the cases sign with) gets a key each.
    pub fn prepare(config: &mut Config, needed: &BTreeMap<String, Vec<Algorithm>>) -> Result<StandIns, String> {
        let mut stand_ins = StandIns::default();
        let issuers = std::mem::take(&mut config.issuers);
        for (name, mut issuer) in issuers {
            let path = join_path("issuers", &name);
            let algorithms = needed.get(&name).cloned().unwrap_or_default();
            if let Some(first) = algorithms.first() {
                stand_ins.defaults.insert(name.clone(), *first);
            }
            stand_ins.issuer(config, &path, &name, &mut issuer, &algorithms)?;
            config.issuers.push((name, issuer));
        }
        for (name, backend) in config.backends.iter_mut() {
            if let BackendConfig::Supabase(supabase) = backend {
                let path = join_path(&join_path("backends", name), "signing_key");
                if supabase.mode == SupabaseMode::Remint && config.unresolved.at(&path).is_some() {
                    supabase.signing_key = Some(random_secret());
                    config.unresolved.values.retain(|value| value.path != path);
                }
            }
        }
        Ok(stand_ins)
    }

    fn issuer(
        &mut self,
        config: &mut Config,
        path: &str,
        name: &str,
        issuer: &mut IssuerConfig,
        algorithms: &[Algorithm],
    ) -> Result<(), String> {
        if let Some(raw) = issuer.hasura_jwt_secret.take() {
            let secret_path = join_path(path, "hasura_jwt_secret");
            if config.unresolved.covers(&secret_path) && config.unresolved.at(&join_path(&secret_path, "key")).is_none()
            {
                return Err(format!("{secret_path} is not read: give its value under `secrets:` in the test file"));
            }
            issuer.hasura_jwt_secret = Some(self.hasura(config, &secret_path, name, raw, algorithms)?);
            return Ok(());
        }
        if issuer.secret.is_some() {
            let secret_path = join_path(path, "secret");
            let secret = match config.unresolved.at(&secret_path) {
                Some(_) => random_secret(),
                None => issuer.secret.clone().unwrap_or_default(),
            };
            config.unresolved.values.retain(|value| value.path != secret_path);
            issuer.secret = Some(secret.clone());
            self.secrets.insert(name.to_string(), secret.into_bytes());
        }
        for alg in algorithms {
            self.generate(name, *alg);
        }
        Ok(())
    }

    /// A `hasura_jwt_secret`: a JWKS URL stays (served by the fetcher); a PEM
    /// key becomes the stand-in's public key; an HS key that was not given becomes fresh.
    fn hasura(
        &mut self,
        config: &mut Config,
        path: &str,
        name: &str,
        raw: Value,
        algorithms: &[Algorithm],
    ) -> Result<Value, String> {
        let mut fields = match raw {
            Value::String(text) => serde_json::from_str::<Value>(&text).map_err(|err| format!("{path}: {err}"))?,
            other => other,
        };
        let Some(object) = fields.as_object_mut() else { return Err(format!("{path}: not a mapping")) };
        let key_path = join_path(path, "key");
        let kind = object.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
        if object.contains_key("key") {
            match hasura_algorithm(&kind) {
                Some(alg) if is_hmac(alg) => {
                    let secret = match config.unresolved.at(&key_path) {
                        Some(_) => random_secret(),
                        None => object.get("key").and_then(Value::as_str).unwrap_or_default().to_string(),
                    };
                    object.insert("key".into(), Value::String(secret.clone()));
                    self.secrets.insert(name.to_string(), secret.into_bytes());
                }
                Some(alg) => {
                    let key = self.generate(name, alg);
                    let pem = key.public_pem.clone().unwrap_or_default();
                    object.insert("key".into(), Value::String(pem));
                }
                None => return Err(format!("{path}.type: not a key type a test can stand in for")),
            }
            config.unresolved.values.retain(|value| value.path != key_path);
        }
        for alg in algorithms {
            self.generate(name, *alg);
        }
        Ok(fields)
    }

    fn generate(&mut self, issuer: &str, alg: Algorithm) -> &SigningKey {
        let kid = format!("test-{issuer}-{alg:?}").to_ascii_lowercase();
        let secret = self.secrets.get(issuer).cloned();
        self.keys.entry((issuer.to_string(), alg)).or_insert_with(|| match (is_hmac(alg), secret) {
            (true, Some(secret)) => SigningKey::hmac(alg, &kid, &secret),
            (true, None) => SigningKey::hmac(alg, &kid, random_secret().as_bytes()),
            (false, _) => SigningKey::generate(alg, &kid),
        })
    }

    /// The algorithm `issuer`'s tokens are signed with when a case names none.
    pub fn default_algorithm(&self, issuer: &str) -> Option<Algorithm> {
        self.defaults.get(issuer).copied()
    }

    /// The key that signs `issuer`'s tokens with `alg`.
    pub fn key(&self, issuer: &str, alg: Algorithm) -> Option<&SigningKey> {
        self.keys.get(&(issuer.to_string(), alg))
    }

    /// Serves each JWKS issuer of `policy` its stand-in public keys.
    pub fn publish(&self, policy: &Policy, fetcher: &StandInFetcher) {
        for issuer in &policy.issuers {
            let KeySource::Jwks(uri) = &issuer.source else { continue };
            let Some(at) = uri.clone().or_else(|| issuer.issuer.clone()) else { continue };
            let keys: Vec<&SigningKey> = self
                .keys
                .iter()
                .filter(|((name, alg), _)| **name == *issuer.name && !is_hmac(*alg))
                .map(|(_, key)| key)
                .collect();
            let document = json!({ "keys": keys.iter().map(|key| &key.jwk).collect::<Vec<_>>() });
            fetcher.documents.lock().expect("stand-in lock").insert(at, document);
        }
    }
}

/// The default algorithm of an issuer's tokens in a test: what it is written to accept.
pub fn default_algorithm(issuer: &IssuerConfig) -> Algorithm {
    if let Some(kind) = issuer.hasura_jwt_secret.as_ref().and_then(hasura_kind) {
        return hasura_algorithm(&kind).unwrap_or(Algorithm::RS256);
    }
    let listed = issuer.algorithms.as_ref().and_then(|names| names.first()).and_then(|name| name.parse().ok());
    match (listed, issuer.secret.is_some()) {
        (Some(alg), _) => alg,
        (None, true) => Algorithm::HS256,
        (None, false) => Algorithm::RS256,
    }
}

fn hasura_kind(raw: &Value) -> Option<String> {
    let parsed;
    let object = match raw {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).ok()?;
            &parsed
        }
        other => other,
    };
    object.get("type").and_then(Value::as_str).map(str::to_string)
}

fn hasura_algorithm(kind: &str) -> Option<Algorithm> {
    match kind {
        "Ed25519" => Some(Algorithm::EdDSA),
        "ES512" => None,
        other => other.parse().ok(),
    }
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// 64 random characters: long enough for HS512.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).expect("the system random source");
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Answers key fetches with the stand-in JWKS of the issuer asked for, by
/// JWKS URL (or issuer URL, for discovery). Never touches the network.
#[derive(Default)]
pub struct StandInFetcher {
    documents: Mutex<HashMap<String, Value>>,
}

impl KeyFetcher for StandInFetcher {
    fn fetch<'a>(
        &'a self,
        issuer: &'a str,
        jwks_uri: Option<&'a str>,
        refresh: &'a RefreshConfig,
    ) -> Pin<Box<dyn Future<Output = Result<Fetched, FetchError>> + Send + 'a>> {
        let at = jwks_uri.unwrap_or(issuer).to_string();
        let document = self.documents.lock().expect("stand-in lock").get(&at).cloned();
        let empty = refresh.empty_jwks;
        Box::pin(async move {
            let document = document.unwrap_or_else(|| json!({ "keys": [] }));
            let keys = KeySet::parse(document.to_string().as_bytes(), empty)
                .map_err(|reason| FetchError::Jwks { url: at.clone(), reason })?;
            Ok(Fetched { keys, ttl: Duration::from_secs(3600), jwks_uri: at })
        })
    }
}

/// The shared handle the runtime holds.
pub fn fetcher() -> Arc<StandInFetcher> {
    Arc::new(StandInFetcher::default())
}
