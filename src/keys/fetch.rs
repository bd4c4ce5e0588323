//! HTTP side of key management: OIDC discovery and JWKS download with the
//! limits an edge service needs (TLS unless loopback, time and size bounds)
//! and the freshness the IdP asked for (Cache-Control / Expires, clamped).

use std::time::{Duration, SystemTime};

use reqwest::header::{CACHE_CONTROL, EXPIRES, HeaderMap};
use serde_json::Value;

use super::is_loopback_url;
use super::jwks::JwksError;
use super::{KeyFetcher, KeySet, redact_url};
use crate::config::RefreshConfig;
use crate::escape::escape;

/// Redirects followed per request; every hop must be https (or loopback http).
const MAX_REDIRECTS: usize = 3;

/// A JWKS larger than this is not a key set; refusing it bounds memory.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Every `url` below is redacted (no userinfo, no query string): key URLs may
/// carry credentials, and these errors reach logs and the Admin API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("request to {url} failed ({failure}): {reason}")]
    Request { url: String, failure: RequestFailure, reason: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} sent more than {MAX_BODY_BYTES} bytes")]
    TooLarge { url: String },
    #[error("refusing {url}: keys must come over https (http only for loopback)")]
    Insecure { url: String },
    #[error("OIDC discovery at {url}: {reason}")]
    Discovery { url: String, reason: String },
    #[error("JWKS at {url}: {reason}")]
    Jwks { url: String, reason: JwksError },
}

/// What went wrong with a request that got no usable HTTP answer, told from
/// the error's type (never from its text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestFailure {
    #[error("timed out")]
    Timeout,
    /// The server's certificate was refused (unknown CA, wrong name, expired)
    /// or the TLS handshake failed.
    #[error("TLS handshake failed")]
    Tls,
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("redirected to a URL that is neither https nor loopback")]
    InsecureRedirect,
    /// Connection refused or reset, DNS, a broken HTTP exchange.
    #[error("connection failed")]
    Connection,
}

impl FetchError {
    /// A short label for metrics (`result` of `portcullis_jwks_fetches_total`).
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Request { failure: RequestFailure::Timeout, .. } => "timeout",
            FetchError::Request { failure: RequestFailure::Tls, .. } => "tls_error",
            FetchError::Request { failure: RequestFailure::TooManyRedirects, .. } => "too_many_redirects",
            FetchError::Request { failure: RequestFailure::InsecureRedirect, .. } => "insecure",
            FetchError::Request { failure: RequestFailure::Connection, .. } => "connection_error",
            FetchError::Status { .. } => "http_error",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::Insecure { .. } => "insecure",
            FetchError::Discovery { .. } => "discovery_error",
            FetchError::Jwks { .. } => "parse_error",
        }
    }
}

/// A successful download: the keys and how long they may be trusted.
pub struct Fetched {
    pub keys: KeySet,
    pub ttl: Duration,
    pub jwks_uri: String,
}

/// One HTTP client shared by every issuer (connection reuse, one TLS config).
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
}

impl Default for Fetcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Fetcher {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error(RedirectRefused(RequestFailure::TooManyRedirects))
                } else if ensure_secure(attempt.url().as_str()).is_err() {
                    // A man in the middle on one plain-http hop could serve any keys.
                    attempt.error(RedirectRefused(RequestFailure::InsecureRedirect))
                } else {
                    attempt.follow()
                }
            }))
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("static HTTP client configuration");
        Fetcher { client }
    }

    /// Fetches the JWKS (after discovery when `jwks_uri` is absent).
    pub async fn fetch_keys(
        &self,
        issuer: &str,
        jwks_uri: Option<&str>,
        refresh: &RefreshConfig,
    ) -> Result<Fetched, FetchError> {
        let timeout = Duration::from_millis(refresh.fetch_timeout_ms);
        let jwks_uri = match jwks_uri {
            Some(uri) => uri.to_string(),
            None => self.discover(issuer, timeout).await?,
        };
        let (headers, body) = self.get(&jwks_uri, timeout).await?;
        let keys = KeySet::parse(&body, refresh.empty_jwks)
            .map_err(|reason| FetchError::Jwks { url: redact_url(&jwks_uri), reason })?;
        let ttl = cache_ttl(&headers, refresh);
        Ok(Fetched { keys, ttl, jwks_uri })
    }

    async fn discover(&self, issuer: &str, timeout: Duration) -> Result<String, FetchError> {
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let (_, body) = self.get(&url, timeout).await?;
        let discovery_error = |reason: String| FetchError::Discovery { url: redact_url(&url), reason };
        let doc: Value = serde_json::from_slice(&body).map_err(|_| discovery_error("not JSON".into()))?;
        let advertised = doc.get("issuer").and_then(Value::as_str).unwrap_or_default();
        if advertised != issuer {
            // OIDC Discovery 1.0 section 4.3: a mismatch means this is not the issuer we trust.
            return Err(discovery_error(format!("advertises issuer \"{}\", expected {issuer:?}", escape(advertised))));
        }
        let jwks_uri =
            doc.get("jwks_uri").and_then(Value::as_str).ok_or_else(|| discovery_error("no jwks_uri".into()))?;
        Ok(jwks_uri.to_string())
    }

    async fn get(&self, url: &str, timeout: Duration) -> Result<(HeaderMap, Vec<u8>), FetchError> {
        ensure_secure(url)?;
        let shown = redact_url(url);
        let request_error = |err: reqwest::Error| {
            let failure = classify(&err);
            let reason = match failure {
                RequestFailure::Timeout => format!("no complete answer within {} ms", timeout.as_millis()),
                _ => describe(err),
            };
            FetchError::Request { url: shown.clone(), failure, reason }
        };
        let mut response = self.client.get(url).timeout(timeout).send().await.map_err(request_error)?;
        ensure_secure(response.url().as_str())?;
        if !response.status().is_success() {
            return Err(FetchError::Status { url: shown, status: response.status().as_u16() });
        }
        if response.content_length().is_some_and(|len| len > MAX_BODY_BYTES as u64) {
            return Err(FetchError::TooLarge { url: shown });
        }
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(FetchError::TooLarge { url: shown });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((headers, body))
    }
}

impl KeyFetcher for Fetcher {
    fn fetch<'a>(
        &'a self,
        issuer: &'a str,
        jwks_uri: Option<&'a str>,
        refresh: &'a RefreshConfig,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Fetched, FetchError>> + Send + 'a>> {
        Box::pin(self.fetch_keys(issuer, jwks_uri, refresh))
    }
}

fn ensure_secure(url: &str) -> Result<(), FetchError> {
    let insecure = || FetchError::Insecure { url: redact_url(url) };
    let parsed = url::Url::parse(url).map_err(|_| insecure())?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_url(&parsed) => Ok(()),
        _ => Err(insecure()),
    }
}

/// Why the redirect policy stopped following: carried as the error's source,
/// so [`classify`] finds it by type.
#[derive(Debug)]
struct RedirectRefused(RequestFailure);

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for RedirectRefused {}

/// The kind of a failed request, from the types in its chain of causes: our
/// redirect refusal, or rustls' error (which reaches us inside `io::Error`s,
/// whose `source` skips what they wrap, hence `get_ref`).
fn classify(err: &reqwest::Error) -> RequestFailure {
    if err.is_timeout() {
        return RequestFailure::Timeout;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = cause {
        if let Some(RedirectRefused(failure)) = current.downcast_ref::<RedirectRefused>() {
            return *failure;
        }
        if current.is::<rustls::Error>() {
            return RequestFailure::Tls;
        }
        cause = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    RequestFailure::Connection
}

/// reqwest's Display hides the cause (connection refused, timeout); show it,
/// without the URL (it is shown redacted beside this).
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How long the IdP said the keys stay fresh, clamped to the issuer's bounds.
pub fn cache_ttl(headers: &HeaderMap, refresh: &RefreshConfig) -> Duration {
    let seconds = max_age(headers).or_else(|| expires_in(headers)).unwrap_or(refresh.default_seconds);
    Duration::from_secs(seconds.clamp(refresh.min_seconds, refresh.max_seconds))
}

fn max_age(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(CACHE_CONTROL)?.to_str().ok()?;
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(0);
        }
        if let Some(seconds) = lower.strip_prefix("max-age=") {
            max_age = seconds.trim_matches('"').parse().ok();
        }
    }
    max_age
}

fn expires_in(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(EXPIRES)?.to_str().ok()?;
    // An unparseable Expires ("0", "-1") means already expired (RFC 9111 section 5.3).
    let Ok(when) = httpdate::parse_http_date(value) else {
        return Some(0);
    };
    Some(when.duration_since(SystemTime::now()).map(|left| left.as_secs()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(reqwest::header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn ttl_follows_cache_control_and_is_clamped() {
        let refresh = RefreshConfig::default();
        let ttl = |pairs: &[(reqwest::header::HeaderName, &str)]| cache_ttl(&headers(pairs), &refresh).as_secs();
        assert_eq!(ttl(&[(CACHE_CONTROL, "public, max-age=3600")]), 3600);
        assert_eq!(ttl(&[(CACHE_CONTROL, "max-age=5")]), 60);
        assert_eq!(ttl(&[(CACHE_CONTROL, "max-age=999999")]), 86400);
        assert_eq!(ttl(&[(CACHE_CONTROL, "no-store")]), 60);
        assert_eq!(ttl(&[]), 600);
        assert_eq!(ttl(&[(EXPIRES, "0")]), 60);
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(7200));
        let from_expires = ttl(&[(EXPIRES, &later)]);
        assert!((7100..=7200).contains(&from_expires), "{from_expires}");
    }

    #[test]
    fn only_https_or_loopback() {
        assert!(ensure_secure("https://idp.example.com/jwks").is_ok());
        assert!(ensure_secure("http://127.0.0.1:8080/jwks").is_ok());
        assert!(ensure_secure("http://localhost/jwks").is_ok());
        assert!(ensure_secure("http://idp.example.com/jwks").is_err());
        assert!(ensure_secure("file:///etc/passwd").is_err());
    }
}
