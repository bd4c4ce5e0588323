//! How routes without a backend answer a deny: the RFC 6750 challenge and a
//! small JSON body, `{"error": ..., "error_description": ...}`.

use crate::decision::{DenyReason, RenderedDeny};

pub fn render(reason: &DenyReason) -> RenderedDeny {
    let body = serde_json::json!({ "error": reason.error_code(), "error_description": reason.description() });
    RenderedDeny {
        http_status: reason.http_status(),
        content_type: "application/json",
        challenge: reason.challenge(),
        body: body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::TokenError;

    #[test]
    fn a_plain_deny_is_rfc_6750_shaped() {
        let rendered = render(&DenyReason::InvalidToken(TokenError::Expired));
        assert_eq!(rendered.http_status, 401);
        assert_eq!(
            rendered.challenge.as_deref(),
            Some("Bearer error=\"invalid_token\", error_description=\"the token has expired\"")
        );
        assert_eq!(rendered.body, r#"{"error":"invalid_token","error_description":"the token has expired"}"#);
        let forbidden = render(&DenyReason::NoRoute);
        assert_eq!((forbidden.http_status, forbidden.challenge), (403, None));
    }
}
