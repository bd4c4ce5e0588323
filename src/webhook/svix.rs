//! Svix (Clerk's webhooks): Standard Webhooks with `svix-` header names; the
//! same signed content, secret form and tolerance.

use super::hmac::Secrets;
use super::standard_webhooks::{self, HeaderNames};
use super::{DeliveryError, Verified, Window};
use crate::request::HttpRequest;

pub const SVIX_HEADERS: HeaderNames =
    HeaderNames { id: "svix-id", timestamp: "svix-timestamp", signature: "svix-signature" };

pub fn verify(secrets: &Secrets, request: &HttpRequest, window: Window) -> Result<Verified, DeliveryError> {
    standard_webhooks::verify(SVIX_HEADERS, secrets, request, window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::hmac::SecretForm;

    #[test]
    fn svix_headers_carry_the_same_signature() {
        let secrets = Secrets::parse(&["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into()], SecretForm::Whsec).unwrap();
        let headers = [
            ("svix-id", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"),
            ("svix-timestamp", "1649367553"),
            ("svix-signature", "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="),
        ];
        let request = HttpRequest::new("POST", "/clerk", "edge", headers)
            .with_body(r#"{"email":"test@example.com","username":"test_user"}"#);
        let window = Window { max_age: 300, now: 1_649_367_553 };
        assert!(verify(&secrets, &request, window).is_ok());
        let webhook_named = HttpRequest::new("POST", "/clerk", "edge", [("webhook-id", "x")]).with_body("{}");
        assert_eq!(verify(&secrets, &webhook_named, window), Err(DeliveryError::MissingHeader("svix-id")));
    }
}
