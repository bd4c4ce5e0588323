//! `portcullis dev token`: mint a token the running demo accepts, with any
//! claims, to try `require:` rules. The demo writes its signing key (a
//! throw-away key made at start, never used elsewhere) to its instance
//! directory; this reads it from there, found by the instance's ext_authz
//! address, so nothing needs pasting.

use std::path::{Path, PathBuf};

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};

use super::issuer::SigningKey;
use crate::cli::{DevTokenArgs, EXIT_INVALID, EXIT_OK};

/// No `.json` extension: the directory's `*.json` files are the sample CheckRequests.
const KEY_FILE: &str = "dev-signing-key";

/// What `dev token` needs from a running demo.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    pub issuer: String,
    pub audience: String,
    pub kid: String,
    pub private_key_pem: String,
}

/// Saves the demo's key where `dev token` finds it (owner-only permissions).
pub fn save(dir: &Path, instance: &Instance) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(KEY_FILE);
    let text = serde_json::to_string_pretty(instance).map_err(std::io::Error::other)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(&path)?, text.as_bytes())?;
    Ok(path)
}

pub fn run(args: DevTokenArgs) -> u8 {
    match mint(&args) {
        Ok(token) => {
            println!("{token}");
            EXIT_OK
        }
        Err(why) => {
            eprintln!("dev token: {why}");
            EXIT_INVALID
        }
    }
}

fn mint(args: &DevTokenArgs) -> Result<String, String> {
    let path = super::samples_dir(&args.authz).join(KEY_FILE);
    let text = std::fs::read_to_string(&path).map_err(|err| {
        format!("no running `portcullis dev` found for --authz {} ({}: {err})", args.authz, path.display())
    })?;
    let instance: Instance = serde_json::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
    let key = SigningKey::rsa_from_pem(Algorithm::RS256, &instance.kid, &instance.private_key_pem)?;
    Ok(key.sign(&Value::Object(claims(&instance, args)?)))
}

/// The demo's standard claims, then `--scope`s, then each `--claim` (last wins).
fn claims(instance: &Instance, args: &DevTokenArgs) -> Result<Map<String, Value>, String> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|err| err.to_string())?.as_secs()
            as i64;
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(instance.issuer));
    claims.insert("sub".into(), json!("dev-user"));
    claims.insert("aud".into(), json!(instance.audience));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + args.ttl));
    if !args.scopes.is_empty() {
        claims.insert("scope".into(), json!(args.scopes.join(" ")));
    }
    for claim in &args.claims {
        let (name, value) = claim.split_once('=').ok_or_else(|| format!("--claim {claim:?}: expected name=value"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        claims.insert(name.trim().to_string(), value);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_take_json_values_strings_otherwise_and_the_last_wins() {
        let instance = Instance {
            issuer: "http://i".into(),
            audience: "a".into(),
            kid: "k".into(),
            private_key_pem: String::new(),
        };
        let args = DevTokenArgs {
            authz: "127.0.0.1:50051".into(),
            claims: vec!["roles=[\"admin\"]".into(), "org=acme".into(), "n=3".into(), "sub=alice".into()],
            scopes: vec!["orders:read".into(), "orders:write".into()],
            ttl: 60,
        };
        let claims = claims(&instance, &args).unwrap();
        assert_eq!(claims["roles"], json!(["admin"]));
        assert_eq!((&claims["org"], &claims["n"], &claims["sub"]), (&json!("acme"), &json!(3), &json!("alice")));
        assert_eq!(claims["scope"], "orders:read orders:write");
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 60);
    }
}
