//! Helpers for the per-stage unit tests (compiled only for tests): a key
//! fetcher whose answers, timing and call count the test controls, and
//! issuers compiled from a line of YAML on a fixed clock.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::config::{EmptyJwks, IssuerConfig, RefreshConfig};
use crate::dev::SigningKey;
use crate::issuer::Issuer;
use crate::keys::{FetchError, Fetched, Jitter, KeyFetcher, KeyRuntime, KeySet};
use crate::token::Clock;

/// The time every test starts at.
pub const NOW: u64 = 1_800_000_000;

/// One scripted answer: a JWKS document (or an HTTP status), after a delay.
#[derive(Clone)]
pub struct Answer {
    pub document: Result<Value, u16>,
    pub delay: Duration,
}

impl Answer {
    pub fn keys(keys: &[&SigningKey]) -> Self {
        Answer { document: Ok(jwks(keys)), delay: Duration::ZERO }
    }

    pub fn status(status: u16) -> Self {
        Answer { document: Err(status), delay: Duration::ZERO }
    }

    pub fn after(self, delay: Duration) -> Self {
        Answer { delay, ..self }
    }
}

pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|key| &key.jwk).collect::<Vec<_>>() })
}

/// Answers fetches from a script (the last answer repeats), counting them and
/// noting when each started (tokio's clock).
#[derive(Default)]
pub struct ScriptedFetcher {
    script: Mutex<VecDeque<Answer>>,
    calls: AtomicU64,
    started: Mutex<Vec<tokio::time::Instant>>,
}

impl ScriptedFetcher {
    pub fn new(answers: impl IntoIterator<Item = Answer>) -> Arc<Self> {
        Arc::new(ScriptedFetcher {
            script: Mutex::new(answers.into_iter().collect()),
            calls: AtomicU64::new(0),
            started: Mutex::default(),
        })
    }

    /// Seconds between the starts of consecutive fetches.
    pub fn gaps(&self) -> Vec<f64> {
        let started = self.started.lock().unwrap();
        started.windows(2).map(|pair| (pair[1] - pair[0]).as_secs_f64()).collect()
    }

    /// Replaces what the next fetches answer.
    pub fn answer(&self, answers: impl IntoIterator<Item = Answer>) {
        *self.script.lock().unwrap() = answers.into_iter().collect();
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn next(&self) -> Answer {
        let mut script = self.script.lock().unwrap();
        if script.len() > 1 { script.pop_front().unwrap() } else { script.front().cloned().expect("a scripted answer") }
    }
}

impl KeyFetcher for ScriptedFetcher {
    fn fetch<'a>(
        &'a self,
        _: &'a str,
        jwks_uri: Option<&'a str>,
        refresh: &'a RefreshConfig,
    ) -> Pin<Box<dyn Future<Output = Result<Fetched, FetchError>> + Send + 'a>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.started.lock().unwrap().push(tokio::time::Instant::now());
        let answer = self.next();
        let url = jwks_uri.unwrap_or("https://idp.test/jwks").to_string();
        let empty = refresh.empty_jwks;
        let ttl = Duration::from_secs(refresh.default_seconds);
        Box::pin(async move {
            tokio::time::sleep(answer.delay).await;
            match answer.document {
                Ok(document) => Ok(Fetched { keys: parse(&document, empty, &url)?, ttl, jwks_uri: url }),
                Err(status) => Err(FetchError::Status { url, status }),
            }
        })
    }
}

fn parse(document: &Value, empty: EmptyJwks, url: &str) -> Result<KeySet, FetchError> {
    KeySet::parse(document.to_string().as_bytes(), empty).map_err(|reason| FetchError::Jwks { url: url.into(), reason })
}

/// A runtime on `fetcher` and a clock fixed at [`NOW`].
pub fn runtime(fetcher: Arc<ScriptedFetcher>) -> KeyRuntime {
    KeyRuntime {
        fetcher,
        changed: watch::channel(0).0,
        clock: Clock::fixed(NOW),
        jitter: Jitter::fixed(1.0),
        metrics: Default::default(),
        shared: Default::default(),
    }
}

/// Issuer `idp` (id 0) compiled from the YAML of its settings.
pub fn issuer(yaml: &str, runtime: &KeyRuntime) -> Arc<Issuer> {
    issuer_with_id(0, "idp", yaml, runtime)
}

pub fn issuer_with_id(id: usize, name: &str, yaml: &str, runtime: &KeyRuntime) -> Arc<Issuer> {
    let value: Value = serde_saphyr::from_str(yaml).expect("issuer YAML");
    let config: IssuerConfig = crate::config::value_de::from_value(&value).expect("issuer config");
    Arc::new(Issuer::compile(id, name, &config, runtime, None).unwrap_or_else(|problems| panic!("{problems:?}")))
}

/// A fresh ES256 key (fast to generate) with `kid`.
pub fn es256(kid: &str) -> SigningKey {
    SigningKey::generate(Algorithm::ES256, kid)
}

/// Claims of a token issued at [`NOW`] by `iss` for `aud`, valid `lifetime` seconds.
pub fn claims(iss: &str, aud: &str, lifetime: i64) -> Value {
    json!({"iss": iss, "sub": "user-1", "aud": aud, "iat": NOW, "exp": NOW as i64 + lifetime})
}
