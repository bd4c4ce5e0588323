//! One trusted identity provider: its rules compiled into a `Validation`, where
//! its token is found, and its live keys.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation};
use tokio::sync::watch;

use crate::backend::hasura::ClaimsSettings;
use crate::config::{IssuerConfig, TokenFrom};
use crate::keys::{Fetcher, IssuerKeys, KeySource, algorithms_for};

pub struct Issuer {
    /// Position in the policy's issuers (part of the token cache key).
    pub id: usize,
    pub name: Arc<str>,
    /// Exact `iss` value; `None` accepts any `iss` (Hasura imports without `issuer`).
    pub issuer: Option<String>,
    pub token_from: TokenFrom,
    pub leeway_seconds: u64,
    /// One `Validation` per allowed algorithm: jsonwebtoken insists every
    /// algorithm of a Validation belongs to the verifying key's family.
    validations: Vec<(Algorithm, Validation)>,
    pub keys: Arc<IssuerKeys>,
    /// Hasura claims settings imported with this issuer (`hasura_jwt_secret`).
    pub hasura_claims: Option<ClaimsSettings>,
}

impl Issuer {
    /// Compiles a validated issuer config (algorithm names were checked by the
    /// loader). Keys of `previous` are kept when they come from the same source.
    pub fn new(
        id: usize,
        name: &str,
        config: &IssuerConfig,
        fetcher: &Fetcher,
        changed: &watch::Sender<u64>,
        previous: Option<&Issuer>,
    ) -> Self {
        let secret_len = config.secret.as_ref().map(String::len);
        let algorithms =
            algorithms_for(config.algorithms.as_ref(), secret_len).expect("validated by the config loader");
        let source = match (&config.secret, &config.public_key) {
            (Some(secret), _) => KeySource::Secret(secret.as_bytes().to_vec()),
            (None, Some((kind, pem))) => KeySource::PublicKey { kind: *kind, pem: pem.clone() },
            (None, None) => KeySource::Jwks(config.jwks_uri.clone()),
        };
        let keys = match previous.filter(|old| old.keys.serves(config.issuer.as_deref(), &source, &config.refresh)) {
            Some(old) => Arc::clone(&old.keys),
            None => IssuerKeys::new(
                name,
                config.issuer.as_deref(),
                source,
                config.refresh.clone(),
                fetcher.clone(),
                changed.clone(),
            ),
        };
        Issuer {
            id,
            name: Arc::from(name),
            issuer: config.issuer.clone(),
            token_from: config.token_source(),
            validations: algorithms.iter().map(|alg| (*alg, validation(config, *alg))).collect(),
            leeway_seconds: config.leeway(),
            keys,
            hasura_claims: config.hasura_claims.clone(),
        }
    }
}

impl Issuer {
    /// The checks for a token signed with `alg`; `None` when `alg` is not allowed.
    pub fn validation(&self, alg: Algorithm) -> Option<&Validation> {
        self.validations.iter().find(|(allowed, _)| *allowed == alg).map(|(_, validation)| validation)
    }
}

fn validation(config: &IssuerConfig, alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = config.leeway();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = &config.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &config.audiences {
        Some(audiences) => {
            validation.set_audience(audiences);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}
