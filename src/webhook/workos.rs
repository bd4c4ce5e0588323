//! WorkOS: `WorkOS-Signature: t=<Unix milliseconds>, v1=<hex HMAC-SHA256>` over
//! `{t}.{body}`, keyed with the endpoint's secret as written. The event's own
//! `id` (in the signed body) identifies replays; its type is `event`.

use serde_json::Value;

use super::hmac::Secrets;
use super::{DeliveryError, Verified, Window, event_type};
use crate::request::HttpRequest;

const HEADER: &str = "workos-signature";

pub fn verify(secrets: &Secrets, request: &HttpRequest, window: Window) -> Result<Verified, DeliveryError> {
    let header = request.header(HEADER).ok_or(DeliveryError::MissingHeader(HEADER))?;
    let (timestamp, signatures) = parse(header).ok_or(DeliveryError::MissingHeader(HEADER))?;
    let millis: i64 = timestamp.parse().map_err(|_| DeliveryError::MissingHeader(HEADER))?;
    let body = request.body();
    let signed: [&[u8]; 3] = [timestamp.as_bytes(), b".", body];
    if !signatures.iter().any(|signature| secrets.verify(&signed, signature)) {
        return Err(DeliveryError::BadSignature);
    }
    let signed_at = window.check(millis.div_euclid(1_000))?;
    let payload: Value = serde_json::from_slice(body).map_err(|_| DeliveryError::Malformed("the body is not JSON"))?;
    let id = payload.get("id").and_then(Value::as_str).filter(|id| !id.is_empty());
    let id = id.ok_or(DeliveryError::Malformed("no event id"))?.to_string();
    Ok(Verified { id, event_type: event_type(&payload, "event"), payload, signed_at })
}

/// `t=...` and every `v1=...` (decoded), in any order, comma-separated.
fn parse(header: &str) -> Option<(&str, Vec<Vec<u8>>)> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',').map(str::trim) {
        match part.split_once('=')? {
            ("t", value) => timestamp = Some(value),
            ("v1", value) => signatures.extend(decode_hex(value)),
            _ => {}
        }
    }
    Some((timestamp?, signatures))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::hmac::SecretForm;

    const SECRET: &str = "whsec_workos_test_0123456789";
    const BODY: &str = r#"{"id":"event_01HXYZ","event":"user.deleted","data":{"id":"user_01"}}"#;

    fn sign(millis: &str, body: &str) -> String {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, format!("{millis}.{body}").as_bytes());
        tag.as_ref().iter().map(|byte| format!("{byte:02x}")).collect()
    }

    fn check(header: &str, body: &str, now: u64) -> Result<Verified, DeliveryError> {
        let secrets = Secrets::parse(&[SECRET.into()], SecretForm::Plain).unwrap();
        let request = HttpRequest::new("POST", "/workos", "edge", [("WorkOS-Signature", header)]).with_body(body);
        verify(&secrets, &request, Window { max_age: 180, now })
    }

    #[test]
    fn millisecond_timestamps_and_the_window() {
        let millis = "1700000000123";
        let header = format!("t={millis}, v1={}", sign(millis, BODY));
        let verified = check(&header, BODY, 1_700_000_000).unwrap();
        assert_eq!((verified.id.as_str(), verified.event_type.as_str()), ("event_01HXYZ", "user.deleted"));
        assert_eq!(verified.signed_at, 1_700_000_000);
        assert!(check(&header, BODY, 1_700_000_180).is_ok());
        assert_eq!(check(&header, BODY, 1_700_000_181), Err(DeliveryError::Stale));
        assert_eq!(check(&header, BODY, 1_699_999_819), Err(DeliveryError::Future));
        let reordered = format!("v1={}, t={millis}", sign(millis, BODY));
        assert!(check(&reordered, BODY, 1_700_000_000).is_ok());
    }

    #[test]
    fn a_changed_body_or_time_fails() {
        let millis = "1700000000123";
        let header = format!("t={millis}, v1={}", sign(millis, BODY));
        assert_eq!(check(&header, &BODY.replace("01\"}}", "02\"}}"), 1_700_000_000), Err(DeliveryError::BadSignature));
        let moved = header.replace("t=1700000000123", "t=1700000000124");
        assert_eq!(check(&moved, BODY, 1_700_000_000), Err(DeliveryError::BadSignature));
        assert_eq!(check("v1=zz", BODY, 1_700_000_000), Err(DeliveryError::MissingHeader("workos-signature")));
    }
}
