//! Verification keys per issuer: where they come from (`fetch`), what a JWKS
//! holds (`jwks`), and how they are kept fresh without ever blocking a Check
//! on a background refresh (`store`).

mod backoff;
mod fetch;
mod jwks;
mod store;

use jsonwebtoken::Algorithm;

pub use backoff::{Backoff, Jitter};
pub use fetch::{FetchError, Fetched, Fetcher, RequestFailure};
pub use jwks::{JwksError, KeyKind, KeySet, SkipReason, SkippedKey, VerificationKey};
pub use store::{IssuerKeys, KeyRuntime, KeyStatus, KeysUnavailable};

use std::future::Future;
use std::pin::Pin;

use crate::config::{Placeholder, RefreshConfig};

/// Where an issuer's keys come from: the one description, whether written as
/// `jwks_uri`/`secret` or imported from a `hasura_jwt_secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS URL, or `None` for OIDC discovery from the issuer URL.
    Jwks(Option<String>),
    /// An HS* shared secret.
    Secret(Vec<u8>),
    /// One public key given as PEM (SPKI, PKCS#1 or an X.509 certificate).
    PublicKey { kind: KeyKind, pem: String },
    /// An HS* shared secret that was not read (`--no-secrets`): no key, and
    /// every token of the issuer is undecided rather than refused.
    Unresolved(Placeholder),
}

impl KeySource {
    /// The key set of a static source, parsed once when the policy is compiled;
    /// `None` for a JWKS, which is fetched.
    pub fn static_keys(&self) -> Result<Option<KeySet>, String> {
        match self {
            KeySource::Jwks(_) | KeySource::Unresolved(_) => Ok(None),
            KeySource::Secret(secret) => Ok(Some(KeySet::from_secret(secret))),
            KeySource::PublicKey { kind, pem } => KeySet::from_public_pem(*kind, pem).map(Some),
        }
    }
}

/// A download of an issuer's keys: [`Fetcher`] over HTTPS in the service, a
/// scripted one in the key store's tests.
pub trait KeyFetcher: Send + Sync {
    fn fetch<'a>(
        &'a self,
        issuer: &'a str,
        jwks_uri: Option<&'a str>,
        refresh: &'a RefreshConfig,
    ) -> Pin<Box<dyn Future<Output = Result<Fetched, FetchError>> + Send + 'a>>;
}

/// Public-key algorithms accepted when an issuer lists none.
pub const DEFAULT_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

pub const HMAC_ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// The shortest secret an HS algorithm may use: as long as its hash (RFC 7518
/// section 3.2); a shorter key gives HS512 no more strength than its length.
pub fn hmac_min_secret_bytes(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

/// The HS algorithms a secret of `len` bytes is long enough for.
pub fn hmac_algorithms_for(len: usize) -> Vec<Algorithm> {
    HMAC_ALGORITHMS.into_iter().filter(|alg| len >= hmac_min_secret_bytes(*alg)).collect()
}

/// The allow-list for an issuer with a shared secret of `secret_len` bytes, or
/// public keys (`None`). HS* only for shared-secret issuers, and only those the
/// secret is long enough for; public-key algorithms only for JWKS/PEM issuers,
/// so HS-with-a-public-key cannot be configured.
pub fn algorithms_for(names: Option<&Vec<String>>, secret_len: Option<usize>) -> Result<Vec<Algorithm>, String> {
    let Some(names) = names else {
        return Ok(match secret_len {
            Some(len) => hmac_algorithms_for(len),
            None => DEFAULT_ALGORITHMS.to_vec(),
        });
    };
    names
        .iter()
        .map(|name| {
            let alg: Algorithm =
                name.parse().map_err(|_| format!("unknown algorithm {name:?} (none is never accepted)"))?;
            match (HMAC_ALGORITHMS.contains(&alg), secret_len) {
                (true, None) => Err(format!("{name} needs a shared `secret`; this issuer uses public keys")),
                (false, Some(_)) => Err(format!("{name} needs public keys; this issuer has a shared `secret`")),
                (true, Some(len)) if len < hmac_min_secret_bytes(alg) => Err(format!(
                    "{name} needs a secret of at least {} bytes (RFC 7518 section 3.2); this one has {len}",
                    hmac_min_secret_bytes(alg)
                )),
                _ => Ok(alg),
            }
        })
        .collect()
}

/// A URL fit to show: userinfo and query string replaced, since key URLs may
/// carry credentials (`https://user:pass@...`, `?token=...`).
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "(not a valid URL)".into();
    };
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_username("redacted");
        let _ = url.set_password(None);
    }
    if url.query().is_some() {
        url.set_query(Some("redacted"));
    }
    url.set_fragment(None);
    url.to_string()
}

/// True for http URLs that cannot leave the machine (dev issuers, sidecars).
pub fn is_loopback_url(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}
