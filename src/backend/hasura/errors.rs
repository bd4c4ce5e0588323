//! Deny reasons in Hasura's words. Many clients match on these exact strings
//! (`Could not verify JWT: JWTExpired`), so they are reproduced verbatim.

use crate::decision::DenyReason;
use crate::extract::ExtractError;
use crate::request::RequestProblem;
use crate::verify::TokenError;

/// Hasura's error `code` and `message` for a deny.
pub fn hasura_error(reason: &DenyReason) -> (&'static str, String) {
    match reason {
        DenyReason::MissingToken => {
            ("invalid-headers", "Missing 'Authorization' or 'Cookie' header in JWT authentication mode".into())
        }
        DenyReason::Unreadable(ExtractError::Empty) => ("invalid-headers", "Malformed Authorization header".into()),
        DenyReason::Unreadable(err @ (ExtractError::Repeated | ExtractError::Conflicting)) => {
            ("invalid-headers", err.to_string())
        }
        DenyReason::Unreadable(ExtractError::TooLarge) => {
            ("invalid-jwt", "Could not verify JWT: JWTClaimsSetDecodeError \"token too large\"".into())
        }
        DenyReason::InvalidToken(err) => ("invalid-jwt", format!("Could not verify JWT: {}", jose_error(err))),
        // What Hasura reports while its key set is empty.
        DenyReason::KeysUnavailable(_) => ("invalid-jwt", "Could not verify JWT: JWSError NoUsableKeys".into()),
        DenyReason::Refused(refusal) => (refusal.code, refusal.message.clone()),
        DenyReason::NoRoute | DenyReason::RouteDenies => ("access-denied", reason.description()),
        DenyReason::InvalidRequest(RequestProblem::AmbiguousPath | RequestProblem::PathParameters) => {
            ("invalid-params", reason.description())
        }
        DenyReason::InvalidRequest(_) => ("invalid-headers", reason.description()),
    }
}

/// The hs-jose error Hasura would show for the same failure.
fn jose_error(err: &TokenError) -> String {
    match err {
        TokenError::Expired => "JWTExpired".into(),
        TokenError::NotYetValid => "JWTNotYetValid".into(),
        TokenError::IssuedInFuture => "JWTIssuedAtFuture".into(),
        TokenError::WrongAudience => "JWTNotInAudience".into(),
        TokenError::WrongIssuer | TokenError::UntrustedIssuer(_) | TokenError::MissingIssuer => "JWTNotInIssuer".into(),
        TokenError::AlgNone => "JWSError JWSNoSignatures".into(),
        TokenError::CriticalHeader => "JWSError (JWSInvalidHeader \"crit\")".into(),
        TokenError::BadSignature
        | TokenError::UnknownKid(_)
        | TokenError::KeyAlgorithmMismatch { .. }
        | TokenError::NoKeyForAlgorithm(_)
        | TokenError::DisallowedAlgorithm(_) => "JWSError JWSInvalidSignature".into(),
        TokenError::WrongPartCount(count) => {
            format!("JWSError (CompactDecodeError Invalid number of parts: Expected 3 parts; got {count})")
        }
        TokenError::Malformed(why) if why.contains("base64url") => {
            "JWSError (JSONDecodeError \"Not valid base64url\")".into()
        }
        TokenError::Malformed(why) => format!("JWTClaimsSetDecodeError \"{why}\""),
        TokenError::MissingClaim(claim) => format!("JWTClaimsSetDecodeError \"missing required claim {claim}\""),
        TokenError::InvalidClaim(claim) => format!("JWTClaimsSetDecodeError \"invalid claim {claim}\""),
    }
}
