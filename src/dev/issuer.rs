//! A real, minimal OIDC issuer on loopback: discovery, JWKS over HTTP, and
//! freshly generated signing keys, for `portcullis dev` (and benchmarks). The
//! tests use a controllable one of their own (tests/common/idp.rs).

use std::net::SocketAddr;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
};
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A private key that signs tokens, with its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    pub jwk: Jwk,
    /// SPKI PEM of the public key (`None` for HMAC keys).
    pub public_pem: Option<String>,
    /// PKCS#8 PEM of a generated RSA key, so `portcullis dev token` can sign with it.
    pub private_pem: Option<String>,
}

impl SigningKey {
    /// A fresh key for `alg` (RS*/PS*, ES256, ES384, EdDSA).
    pub fn generate(alg: Algorithm, kid: &str) -> Self {
        use aws_lc_rs::encoding::PublicKeyX509Der;
        use aws_lc_rs::signature::KeyPair;
        let mut private_pem = None;
        let (encoding, spki): (EncodingKey, PublicKeyX509Der<'static>) = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => {
                let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA keygen");
                let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).expect("RSA PKCS#8");
                let private = pem("PRIVATE KEY", der.as_ref());
                let encoding = EncodingKey::from_rsa_pem(private.as_bytes()).expect("RSA PEM");
                private_pem = Some(private);
                (encoding, pair.public_key().as_der().expect("RSA SPKI"))
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                let curve = if alg == Algorithm::ES256 {
                    &ECDSA_P256_SHA256_FIXED_SIGNING
                } else {
                    &ECDSA_P384_SHA384_FIXED_SIGNING
                };
                let doc = EcdsaKeyPair::generate_pkcs8(curve, &SystemRandom::new()).expect("EC keygen");
                let pair = EcdsaKeyPair::from_pkcs8(curve, doc.as_ref()).expect("EC PKCS#8");
                (EncodingKey::from_ec_der(doc.as_ref()), pair.public_key().as_der().expect("EC SPKI"))
            }
            Algorithm::EdDSA => {
                let doc = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).expect("Ed25519 keygen");
                let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("Ed25519 PKCS#8");
                (EncodingKey::from_ed_der(doc.as_ref()), pair.public_key().as_der().expect("Ed25519 SPKI"))
            }
            other => panic!("{other:?}: use SigningKey::hmac for HS*"),
        };
        let mut key = Self::with_encoding(alg, kid, encoding);
        key.public_pem = Some(pem("PUBLIC KEY", spki.as_ref()));
        key.private_pem = private_pem;
        key
    }

    /// An RS*/PS* key from its PKCS#8 PEM (what [`SigningKey::generate`] kept).
    pub fn rsa_from_pem(alg: Algorithm, kid: &str, private_pem: &str) -> Result<Self, String> {
        let encoding = EncodingKey::from_rsa_pem(private_pem.as_bytes()).map_err(|err| err.to_string())?;
        Ok(Self::with_encoding(alg, kid, encoding))
    }

    /// An HS* key from a shared secret (its JWK is an `oct` key; never publish it).
    pub fn hmac(alg: Algorithm, kid: &str, secret: &[u8]) -> Self {
        Self::with_encoding(alg, kid, EncodingKey::from_secret(secret))
    }

    fn with_encoding(alg: Algorithm, kid: &str, encoding: EncodingKey) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("public JWK");
        jwk.common.key_id = Some(kid.to_string());
        SigningKey { kid: kid.to_string(), alg, encoding, jwk, public_pem: None, private_pem: None }
    }

    /// Signs `claims` with `alg` and `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.sign_with_header(&header, claims)
    }

    pub fn sign_with_header(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).expect("signing a JSON object")
    }

    /// The base64url signature of `message` (a JWS signing input), for tokens
    /// whose header `Header` cannot express.
    pub fn sign_raw(&self, message: &[u8]) -> String {
        jsonwebtoken::crypto::sign(message, &self.encoding, self.alg).expect("signing bytes")
    }
}

/// DER wrapped as PEM with `label` (e.g. `PRIVATE KEY`), 64 columns.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> =
        body.as_bytes().chunks(64).map(|chunk| std::str::from_utf8(chunk).expect("base64 is ASCII")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

struct IssuerState {
    issuer: String,
    jwks: Value,
}

/// A running loopback issuer. Stops when dropped.
pub struct DevIssuer {
    pub addr: SocketAddr,
    state: Arc<IssuerState>,
    task: tokio::task::JoinHandle<()>,
}

impl DevIssuer {
    /// Serves discovery and a JWKS with `keys` on 127.0.0.1 (random port).
    pub async fn start(keys: &[&SigningKey]) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("literal"), keys).await
    }

    pub async fn start_on(addr: SocketAddr, keys: &[&SigningKey]) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(IssuerState { issuer: format!("http://{addr}"), jwks: jwks(keys) });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/jwks.json", get(serve_jwks))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(DevIssuer { addr, state, task })
    }

    /// The `iss` value (also the discovery base URL).
    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/.well-known/jwks.json", self.state.issuer)
    }

    /// Standard claims for a token of this issuer: `sub`, `aud`, and a lifetime
    /// in seconds relative to now (negative = already expired).
    pub fn claims(&self, sub: &str, aud: &str, lifetime: i64) -> Value {
        let now = crate::token::Clock::system().now() as i64;
        json!({ "iss": self.issuer(), "sub": sub, "aud": aud, "iat": now, "exp": now + lifetime })
    }
}

impl Drop for DevIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|key| &key.jwk).collect::<Vec<_>>() })
}

async fn discovery(State(state): State<Arc<IssuerState>>) -> Response {
    axum::Json(json!({
        "issuer": state.issuer,
        "jwks_uri": format!("{}/.well-known/jwks.json", state.issuer),
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
    }))
    .into_response()
}

async fn serve_jwks(State(state): State<Arc<IssuerState>>) -> Response {
    axum::Json(state.jwks.clone()).into_response()
}
