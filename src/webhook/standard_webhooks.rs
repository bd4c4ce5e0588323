//! Standard Webhooks (standardwebhooks.com, used by Clerk through Svix and by
//! Supabase Auth hooks): `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature`, a list of `v1,<base64 HMAC-SHA256>` entries over
//! `{id}.{timestamp}.{body}`. The list is space-separated in the spec;
//! Supabase joins entries with ", ", so entries are split on whitespace and
//! trimmed of commas. Other versions (`v1a`, asymmetric) are ignored. The
//! `webhook-id` is signed, so replays are recognised by it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::hmac::Secrets;
use super::{DeliveryError, Verified, Window, event_type};
use crate::request::HttpRequest;

/// The three header names of one dialect (`webhook-*`, or Svix' `svix-*`).
#[derive(Debug, Clone, Copy)]
pub struct HeaderNames {
    pub id: &'static str,
    pub timestamp: &'static str,
    pub signature: &'static str,
}

pub const WEBHOOK_HEADERS: HeaderNames =
    HeaderNames { id: "webhook-id", timestamp: "webhook-timestamp", signature: "webhook-signature" };

/// Checks the signature first (a forged timestamp must not be reported as stale), then the window.
pub fn verify(
    names: HeaderNames,
    secrets: &Secrets,
    request: &HttpRequest,
    window: Window,
) -> Result<Verified, DeliveryError> {
    let id = request.header(names.id).filter(|id| !id.is_empty()).ok_or(DeliveryError::MissingHeader(names.id))?;
    let timestamp = request.header(names.timestamp).ok_or(DeliveryError::MissingHeader(names.timestamp))?;
    let at: i64 = timestamp.trim().parse().map_err(|_| DeliveryError::MissingHeader(names.timestamp))?;
    let signatures = request.header(names.signature).ok_or(DeliveryError::MissingHeader(names.signature))?;
    let body = request.body();
    let signed: [&[u8]; 5] = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
    if !signatures_of(signatures).any(|signature| secrets.verify(&signed, &signature)) {
        return Err(DeliveryError::BadSignature);
    }
    let signed_at = window.check(at)?;
    let payload: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    Ok(Verified { id: id.to_string(), event_type: event_type(&payload, "type"), payload, signed_at })
}

/// The decoded `v1` signatures of a header value.
pub fn signatures_of(header: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    header
        .split_whitespace()
        .map(|entry| entry.trim_matches(','))
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::hmac::SecretForm;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TIMESTAMP: u64 = 1_649_367_553;
    const BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;
    /// The reference library's known answer for the inputs above.
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn secrets(written: &[&str]) -> Secrets {
        Secrets::parse(&written.iter().map(|s| s.to_string()).collect::<Vec<_>>(), SecretForm::Whsec).unwrap()
    }

    fn request(signature: &str, timestamp: u64, body: &str) -> HttpRequest {
        let timestamp = timestamp.to_string();
        let headers = [("webhook-id", ID), ("webhook-timestamp", timestamp.as_str()), ("webhook-signature", signature)];
        HttpRequest::new("POST", "/hooks", "edge", headers).with_body(body)
    }

    fn check(signature: &str, body: &str, now: u64) -> Result<Verified, DeliveryError> {
        verify(WEBHOOK_HEADERS, &secrets(&[SECRET]), &request(signature, TIMESTAMP, body), Window { max_age: 300, now })
    }

    #[test]
    fn the_known_answer_vector_verifies() {
        let verified = check(SIGNATURE, BODY, TIMESTAMP).unwrap();
        assert_eq!(verified.id, ID);
        assert_eq!(verified.signed_at, TIMESTAMP);
        assert_eq!(verified.payload["username"], "test_user");
    }

    #[test]
    fn a_one_byte_change_anywhere_fails() {
        let changed = BODY.replace("test_user", "test_usef");
        assert_eq!(check(SIGNATURE, &changed, TIMESTAMP), Err(DeliveryError::BadSignature));
        let other_time = request(SIGNATURE, TIMESTAMP + 1, BODY);
        let window = Window { max_age: 300, now: TIMESTAMP };
        assert_eq!(verify(WEBHOOK_HEADERS, &secrets(&[SECRET]), &other_time, window), Err(DeliveryError::BadSignature));
        let wrong_secret = secrets(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
        let window = Window { max_age: 300, now: TIMESTAMP };
        let result = verify(WEBHOOK_HEADERS, &wrong_secret, &request(SIGNATURE, TIMESTAMP, BODY), window);
        assert_eq!(result, Err(DeliveryError::BadSignature));
    }

    #[test]
    fn signature_lists_in_every_separator_and_rotation() {
        let bogus = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
        for list in [
            format!("{bogus} {SIGNATURE}"),
            format!("{bogus}, {SIGNATURE}"),
            format!("v1a,aGVsbG8= {SIGNATURE}"),
            format!("v2,xyz {SIGNATURE},"),
        ] {
            assert!(check(&list, BODY, TIMESTAMP).is_ok(), "{list}");
        }
        assert_eq!(check(bogus, BODY, TIMESTAMP), Err(DeliveryError::BadSignature));
        assert_eq!(
            check("v1a,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=", BODY, TIMESTAMP),
            Err(DeliveryError::BadSignature)
        );
        // During a rotation either secret verifies.
        let rotating = secrets(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &format!("v1,{SECRET}")]);
        let window = Window { max_age: 300, now: TIMESTAMP };
        assert!(verify(WEBHOOK_HEADERS, &rotating, &request(SIGNATURE, TIMESTAMP, BODY), window).is_ok());
    }

    #[test]
    fn the_tolerance_is_five_minutes_each_way() {
        assert!(check(SIGNATURE, BODY, TIMESTAMP + 299).is_ok());
        assert!(check(SIGNATURE, BODY, TIMESTAMP + 300).is_ok());
        assert_eq!(check(SIGNATURE, BODY, TIMESTAMP + 301), Err(DeliveryError::Stale));
        assert!(check(SIGNATURE, BODY, TIMESTAMP - 299).is_ok());
        assert_eq!(check(SIGNATURE, BODY, TIMESTAMP - 301), Err(DeliveryError::Future));
    }

    #[test]
    fn missing_headers_are_named() {
        let request = HttpRequest::new("POST", "/hooks", "edge", [("webhook-id", ID)]).with_body(BODY);
        let window = Window { max_age: 300, now: TIMESTAMP };
        assert_eq!(
            verify(WEBHOOK_HEADERS, &secrets(&[SECRET]), &request, window),
            Err(DeliveryError::MissingHeader("webhook-timestamp"))
        );
    }
}
