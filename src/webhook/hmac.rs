//! HMAC-SHA256 signing secrets and their constant-time check (aws-lc-rs'
//! `hmac::verify`), shared by the HMAC kinds. Several secrets may be
//! configured while one is rotated out: a signature made with any of them is accepted.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// How a configured secret is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretForm {
    /// Standard Webhooks / Svix: `whsec_<base64>`, as Supabase shows it `v1,whsec_<base64>`;
    /// the key is the decoded base64.
    Whsec,
    /// WorkOS: the secret's bytes are the key.
    Plain,
}

/// The keys of one webhook.
pub struct Secrets {
    keys: Vec<hmac::Key>,
}

impl Secrets {
    /// Parses every secret; the error names the index and never the value.
    pub fn parse(written: &[String], form: SecretForm) -> Result<Secrets, (usize, &'static str)> {
        let keys = written
            .iter()
            .enumerate()
            .map(|(index, secret)| key_bytes(secret, form).map_err(|message| (index, message)))
            .map(|bytes| bytes.map(|bytes| hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Secrets { keys })
    }

    /// Whether `signature` is the HMAC of `message` under any secret, compared in constant time.
    pub fn verify(&self, message: &[&[u8]], signature: &[u8]) -> bool {
        self.keys.iter().any(|key| {
            let mut context = hmac::Context::with_key(key);
            for part in message {
                context.update(part);
            }
            let tag = context.sign();
            // Constant time: the time taken tells nothing about how much of the tag matched.
            aws_lc_rs::constant_time::verify_slices_are_equal(tag.as_ref(), signature).is_ok()
        })
    }
}

fn key_bytes(secret: &str, form: SecretForm) -> Result<Vec<u8>, &'static str> {
    let secret = secret.trim();
    match form {
        SecretForm::Plain if secret.len() < 16 => Err("too short for a signing secret (at least 16 characters)"),
        SecretForm::Plain => Ok(secret.as_bytes().to_vec()),
        SecretForm::Whsec => {
            let encoded = secret.strip_prefix("v1,").unwrap_or(secret);
            let encoded = encoded.strip_prefix("whsec_").ok_or("expected whsec_<base64> (or v1,whsec_<base64>)")?;
            let bytes = STANDARD.decode(encoded).map_err(|_| "the part after whsec_ is not base64")?;
            if bytes.len() < 16 {
                return Err("too short for a signing secret (at least 16 bytes once decoded)");
            }
            Ok(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_forms() {
        let base = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        assert!(Secrets::parse(&[base.into(), format!("v1,{base}")], SecretForm::Whsec).is_ok());
        assert_eq!(Secrets::parse(&[base.into(), "C2FVsBQIhrscChlQ".into()], SecretForm::Whsec).err().unwrap().0, 1);
        assert!(Secrets::parse(&["whsec_!!!".into()], SecretForm::Whsec).is_err());
        assert!(Secrets::parse(&["whsec_YWJj".into()], SecretForm::Whsec).is_err(), "3 bytes");
        assert!(Secrets::parse(&["sk_test_0123456789abcdef".into()], SecretForm::Plain).is_ok());
        assert!(Secrets::parse(&["short".into()], SecretForm::Plain).is_err());
    }
}
