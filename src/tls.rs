//! TLS and mutual TLS on the authz and admin listeners (`listen.tls`), with
//! certificates re-read when their files change. cert-manager and Kubernetes
//! secret volumes rotate certificates in place: a volume update swaps the
//! `..data` symlink rather than writing the files, so the files' *content* is
//! what is watched (polled each second), not their names or times. A rotation
//! affects new handshakes only; open connections keep working. A rotation that
//! does not load (a half-written file, a key that does not match) keeps the
//! certificate in use.
//!
//! tonic's own TLS builds its configuration once, so connections are accepted
//! here: each handshake runs in its own task with a bound, and finished TLS
//! streams are handed to tonic.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::TlsConfig;
use crate::token::{TokenDigest, digest_bytes};

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are compared with what is loaded.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// A server TLS configuration that follows its files.
pub struct ReloadingTls {
    files: TlsConfig,
    current: RwLock<Configs>,
    loaded: RwLock<Vec<Option<TokenDigest>>>,
}

impl ReloadingTls {
    /// Loads the files once; an error names the file and what is wrong with it.
    pub fn load(files: &TlsConfig) -> Result<Arc<Self>, String> {
        let config = server_config(files)?;
        let tls = ReloadingTls {
            files: files.clone(),
            current: RwLock::new(Configs::new(config)),
            loaded: RwLock::new(fingerprints(files)),
        };
        Ok(Arc::new(tls))
    }

    fn config(&self, alpn: Alpn) -> Arc<ServerConfig> {
        let configs = self.current.read().expect("tls lock poisoned");
        Arc::clone(match alpn {
            Alpn::Grpc => &configs.grpc,
            Alpn::Http => &configs.http,
        })
    }

    /// Reloads if a file changed; `Ok(true)` when a new certificate is in use.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = fingerprints(&self.files);
        if *self.loaded.read().expect("tls lock poisoned") == now {
            return Ok(false);
        }
        let config = server_config(&self.files);
        // Remembered even when it fails: a broken file is reported once, not every second.
        *self.loaded.write().expect("tls lock poisoned") = now;
        *self.current.write().expect("tls lock poisoned") = Configs::new(config?);
        Ok(true)
    }

    /// Re-reads the files whenever they change, while `self` is in use.
    pub fn watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WATCH_INTERVAL).await;
                let Some(tls) = weak.upgrade() else { return };
                match tls.reload_if_changed() {
                    Ok(true) => tracing::info!(cert = %tls.files.cert.display(), "TLS certificate reloaded"),
                    Ok(false) => {}
                    Err(err) => tracing::error!("TLS files changed but do not load, the old certificate stays: {err}"),
                }
            }
        });
    }

    /// TLS connections accepted on `listener`, for tonic's `serve_with_incoming` (ALPN h2).
    pub fn incoming(
        self: &Arc<Self>,
        listener: TcpListener,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        self.incoming_with(listener, Alpn::Grpc)
    }

    /// TLS connections accepted on `listener`, offering `alpn`.
    pub fn incoming_with(
        self: &Arc<Self>,
        listener: TcpListener,
        alpn: Alpn,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let tls = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = sender.closed() => return,
                };
                let Ok((tcp, _)) = accepted else {
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config(alpn));
                let sender = sender.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        let _ = sender.send(Ok(stream)).await;
                    }
                });
            }
        });
        ReceiverStream::new(receiver)
    }

    /// Whether clients must present a certificate signed by `client_ca`.
    pub fn requires_client_certs(&self) -> bool {
        self.files.client_ca.is_some()
    }
}

/// The protocols a listener offers in the TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// The gRPC ports: HTTP/2 only.
    Grpc,
    /// The HTTP authorization port: HTTP/2, then HTTP/1.1 (nginx and Envoy's HTTP client speak 1.1).
    Http,
}

/// One certificate, offered with each listener's protocols.
struct Configs {
    grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
}

impl Configs {
    fn new(grpc: ServerConfig) -> Self {
        let mut http = grpc.clone();
        http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Configs { grpc: Arc::new(grpc), http: Arc::new(http) }
    }
}

fn fingerprints(files: &TlsConfig) -> Vec<Option<TokenDigest>> {
    [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|path| std::fs::read(path).ok().map(|bytes| digest_bytes(&bytes)))
        .collect()
}

/// The rustls configuration for the files: HTTP/2 (gRPC) only, client
/// certificates required and verified against `client_ca` when it is set.
pub fn server_config(files: &TlsConfig) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = certificates(&files.cert, "cert")?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key, "key")?)
        .map_err(|err| format!("key: no private key in PEM ({err})"))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(ca, "client_ca")? {
                roots.add(certificate).map_err(|err| format!("client_ca: {err}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|err| format!("client_ca: {err}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|err| format!("cert and key do not make a usable certificate: {err}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The certificates in the PEM file at `path`. Problems name the setting
/// (`field`), never the path: it may have come from a `${...}` placeholder.
fn certificates(path: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates: Vec<_> = CertificateDer::pem_slice_iter(&read(path, field)?)
        .collect::<Result<_, _>>()
        .map_err(|err| format!("{field}: not PEM certificates ({err})"))?;
    if certificates.is_empty() {
        return Err(format!("{field}: no certificate in PEM"));
    }
    Ok(certificates)
}

fn read(path: &Path, field: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|err| format!("{field}: cannot read the file ({err})"))
}
