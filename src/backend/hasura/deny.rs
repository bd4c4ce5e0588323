//! Denies in Hasura's words and shape. Many clients match on these exact
//! strings (`Could not verify JWT: JWTExpired`), so they are reproduced
//! verbatim, in Hasura's body `{"errors":[{"extensions":{"path":"$","code":C},"message":M}]}`.

use crate::decision::{DenyReason, RenderedDeny};
use crate::extract::ExtractError;
use crate::request::RequestProblem;
use crate::verify::TokenError;

/// The deny a Hasura client gets; `graphql_status` answers HTTP 200 as Hasura
/// does on `/v1/graphql` (except 503 and 431: retry later, or the request is
/// too large to be a GraphQL call).
pub fn render(reason: &DenyReason, graphql_status: bool) -> RenderedDeny {
    let (code, message) = hasura_error(reason);
    let body = serde_json::json!({"errors": [{"extensions": {"path": "$", "code": code}, "message": message}]});
    let keeps_status = matches!(reason.http_status(), 503 | 431);
    let (http_status, challenge) =
        if graphql_status && !keeps_status { (200, None) } else { (reason.http_status(), reason.challenge()) };
    RenderedDeny { http_status, content_type: "application/json", challenge, body: body.to_string() }
}

/// Hasura's error `code` and `message` for a deny.
fn hasura_error(reason: &DenyReason) -> (&'static str, String) {
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
        // Hasura's answer to a JWT it rejects.
        DenyReason::TokenRevoked(_) => ("invalid-jwt", "Could not verify JWT: token revoked".into()),
        // Answered before routing, in the plain shape; kept here for completeness.
        DenyReason::Overloaded
        | DenyReason::RevocationsStale
        | DenyReason::WebhookAnswered(_)
        | DenyReason::WebhookRefused(_) => ("unexpected", reason.description()),
        DenyReason::Refused(refusal) => (refusal.code, refusal.message.clone()),
        DenyReason::NoRoute | DenyReason::RouteDenies | DenyReason::RequirementUnmet(_) => {
            ("access-denied", reason.description())
        }
        DenyReason::InvalidRequest(
            RequestProblem::AmbiguousPath | RequestProblem::PathParameters | RequestProblem::AmbiguousQuery,
        ) => ("invalid-params", reason.description()),
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
        TokenError::Malformed(part) if part.is_encoding() => {
            "JWSError (JSONDecodeError \"Not valid base64url\")".into()
        }
        TokenError::Malformed(part) => format!("JWTClaimsSetDecodeError \"{part}\""),
        TokenError::MissingClaim(claim) => format!("JWTClaimsSetDecodeError \"missing required claim {claim}\""),
        TokenError::InvalidClaim(claim) => format!("JWTClaimsSetDecodeError \"invalid claim {claim}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Malformed;

    fn body(rendered: &RenderedDeny) -> serde_json::Value {
        serde_json::from_str(&rendered.body).unwrap()
    }

    #[test]
    fn denies_read_as_hasura_writes_them() {
        let expired = render(&DenyReason::InvalidToken(TokenError::Expired), true);
        assert_eq!((expired.http_status, expired.challenge.as_deref()), (200, None));
        assert_eq!(
            body(&expired),
            serde_json::json!({"errors": [{"extensions": {"path": "$", "code": "invalid-jwt"}, "message": "Could not verify JWT: JWTExpired"}]})
        );
        let http = render(&DenyReason::InvalidToken(TokenError::Expired), false);
        assert_eq!(http.http_status, 401);
        assert!(http.challenge.unwrap().starts_with("Bearer error=\"invalid_token\""));
        let unavailable =
            render(&DenyReason::KeysUnavailable(crate::keys::KeysUnavailable::NotLoaded("idp".into())), true);
        assert_eq!(unavailable.http_status, 503, "retry-later stays visible");
        let encoding = render(&DenyReason::InvalidToken(TokenError::Malformed(Malformed::PayloadNotBase64)), true);
        assert_eq!(
            body(&encoding)["errors"][0]["message"],
            "Could not verify JWT: JWSError (JSONDecodeError \"Not valid base64url\")"
        );
        let claims = render(&DenyReason::InvalidToken(TokenError::Malformed(Malformed::PayloadNotJson)), true);
        assert_eq!(
            body(&claims)["errors"][0]["message"],
            "Could not verify JWT: JWTClaimsSetDecodeError \"payload is not a JSON object\""
        );
        let missing = render(&DenyReason::MissingToken, true);
        assert_eq!(body(&missing)["errors"][0]["extensions"]["code"], "invalid-headers");
    }
}
