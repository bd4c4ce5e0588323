//! Denies in PostgREST's words and shape (v13+ codes and messages,
//! `{"code","details","hint","message"}`), so supabase-js and PostgREST clients
//! see the errors they already handle.

use crate::decision::{DenyReason, RenderedDeny};
use crate::extract::ExtractError;
use crate::verify::TokenError;

/// The deny a PostgREST client gets.
pub fn render(reason: &DenyReason) -> RenderedDeny {
    let error = postgrest_error(reason);
    let body = serde_json::json!({"code": error.code, "details": null, "hint": null, "message": error.message});
    RenderedDeny {
        http_status: error.http_status,
        content_type: "application/json; charset=utf-8",
        challenge: error.challenge,
        body: body.to_string(),
    }
}

/// A PostgREST-style error: HTTP status, code, message, and the challenge for 401s.
struct PostgrestError {
    http_status: u16,
    code: &'static str,
    message: String,
    challenge: Option<String>,
}

fn postgrest_error(reason: &DenyReason) -> PostgrestError {
    let invalid = |code: &'static str, message: String| PostgrestError {
        http_status: 401,
        challenge: Some(format!("Bearer error=\"invalid_token\", error_description=\"{}\"", message.replace('"', "'"))),
        code,
        message,
    };
    match reason {
        DenyReason::MissingToken => PostgrestError {
            http_status: 401,
            code: "PGRST302",
            message: "Anonymous access is disabled".into(),
            challenge: Some("Bearer".into()),
        },
        DenyReason::Unreadable(ExtractError::Empty) => {
            invalid("PGRST301", "Empty JWT is sent in Authorization header".into())
        }
        DenyReason::Unreadable(ExtractError::TooLarge) => {
            invalid("PGRST301", "JWT cryptographic operation failed".into())
        }
        DenyReason::Unreadable(err @ (ExtractError::Repeated | ExtractError::Conflicting)) => PostgrestError {
            http_status: 400,
            code: "PGRST301",
            message: err.to_string(),
            challenge: reason.challenge(),
        },
        DenyReason::InvalidToken(err) => {
            let (code, message) = token_error(err);
            invalid(code, message)
        }
        DenyReason::TokenRevoked(_) => invalid("PGRST301", reason.description()),
        // Answered before routing, in the plain shape; kept here for completeness.
        DenyReason::Overloaded
        | DenyReason::RevocationsStale
        | DenyReason::WebhookAnswered(_)
        | DenyReason::WebhookRefused(_) => PostgrestError {
            http_status: reason.http_status(),
            code: "PGRST003",
            message: reason.description(),
            challenge: None,
        },
        DenyReason::KeysUnavailable(_) => PostgrestError {
            http_status: 503,
            code: "PGRST300",
            message: "JWT keys are not available yet".into(),
            challenge: None,
        },
        DenyReason::Refused(refusal) => {
            PostgrestError { http_status: 403, code: refusal.code, message: refusal.message.clone(), challenge: None }
        }
        DenyReason::RequirementUnmet(_) => PostgrestError {
            http_status: 403,
            code: "42501",
            message: reason.description(),
            challenge: reason.challenge(),
        },
        DenyReason::NoRoute | DenyReason::RouteDenies | DenyReason::InvalidRequest(_) => PostgrestError {
            http_status: reason.http_status(),
            code: "42501",
            message: reason.description(),
            challenge: None,
        },
    }
}

fn token_error(err: &TokenError) -> (&'static str, String) {
    match err {
        TokenError::WrongPartCount(count) => ("PGRST301", format!("Expected 3 parts in JWT; got {count}")),
        TokenError::Malformed(part) if part.in_payload() => ("PGRST303", "Parsing claims failed".into()),
        TokenError::Malformed(_) | TokenError::CriticalHeader => {
            ("PGRST301", "JWT cryptographic operation failed".into())
        }
        TokenError::AlgNone | TokenError::DisallowedAlgorithm(_) => {
            ("PGRST301", "Wrong or unsupported encoding algorithm".into())
        }
        TokenError::UnknownKid(_)
        | TokenError::KeyAlgorithmMismatch { .. }
        | TokenError::NoKeyForAlgorithm(_)
        | TokenError::BadSignature => ("PGRST301", "No suitable key or wrong key type".into()),
        TokenError::Expired => ("PGRST303", "JWT expired".into()),
        TokenError::NotYetValid => ("PGRST303", "JWT not yet valid".into()),
        TokenError::IssuedInFuture => ("PGRST303", "JWT issued at future".into()),
        TokenError::WrongAudience => ("PGRST303", "JWT not in audience".into()),
        // PostgREST has no issuer check; this is portcullis' own, in PostgREST's shape.
        TokenError::WrongIssuer | TokenError::UntrustedIssuer(_) | TokenError::MissingIssuer => {
            ("PGRST303", "JWT issuer not allowed".into())
        }
        TokenError::MissingClaim(claim) => ("PGRST303", format!("The JWT '{claim}' claim is required")),
        TokenError::InvalidClaim(claim) => ("PGRST303", format!("The JWT '{claim}' claim must be a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Malformed;

    fn code_and_message(reason: DenyReason) -> (u16, String, String) {
        let rendered = render(&reason);
        assert_eq!(rendered.content_type, "application/json; charset=utf-8");
        let body: serde_json::Value = serde_json::from_str(&rendered.body).unwrap();
        (rendered.http_status, body["code"].as_str().unwrap().into(), body["message"].as_str().unwrap().into())
    }

    #[test]
    fn denies_read_as_postgrest_writes_them() {
        assert_eq!(
            code_and_message(DenyReason::InvalidToken(TokenError::Expired)),
            (401, "PGRST303".into(), "JWT expired".into())
        );
        assert_eq!(
            code_and_message(DenyReason::MissingToken),
            (401, "PGRST302".into(), "Anonymous access is disabled".into())
        );
        let claims = DenyReason::InvalidToken(TokenError::Malformed(Malformed::PayloadNotJson));
        assert_eq!(code_and_message(claims), (401, "PGRST303".into(), "Parsing claims failed".into()));
        let header = DenyReason::InvalidToken(TokenError::Malformed(Malformed::HeaderNotJson));
        assert_eq!(code_and_message(header).1, "PGRST301");
        assert_eq!(
            code_and_message(DenyReason::KeysUnavailable(crate::keys::KeysUnavailable::NotLoaded("idp".into()))).0,
            503
        );
        let challenge = render(&DenyReason::InvalidToken(TokenError::Expired)).challenge.unwrap();
        assert_eq!(challenge, "Bearer error=\"invalid_token\", error_description=\"JWT expired\"");
    }
}
