//! Verification keys per issuer: where they come from (`fetch`), what a JWKS
//! holds (`jwks`), and how they are kept fresh without ever blocking a Check
//! on a background refresh (`store`).

mod fetch;
mod jwks;
mod store;

use jsonwebtoken::Algorithm;

pub use fetch::{FetchError, Fetcher};
pub use jwks::{KeyKind, KeySet, VerificationKey};
pub use store::{IssuerKeys, KeySource, KeyStatus};

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

const HMAC_ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// The allow-list for an issuer. HS* only for shared-secret issuers and public-key
/// algorithms only for JWKS issuers, so HS-with-a-public-key cannot be configured.
pub fn algorithms_for(names: Option<&Vec<String>>, hmac: bool) -> Result<Vec<Algorithm>, String> {
    let Some(names) = names else {
        return Ok(if hmac { HMAC_ALGORITHMS.to_vec() } else { DEFAULT_ALGORITHMS.to_vec() });
    };
    names
        .iter()
        .map(|name| {
            let alg: Algorithm =
                name.parse().map_err(|_| format!("unknown algorithm {name:?} (none is never accepted)"))?;
            match (HMAC_ALGORITHMS.contains(&alg), hmac) {
                (true, false) => Err(format!("{name} needs a shared `secret`; this issuer uses public keys")),
                (false, true) => Err(format!("{name} needs public keys; this issuer has a shared `secret`")),
                _ => Ok(alg),
            }
        })
        .collect()
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
