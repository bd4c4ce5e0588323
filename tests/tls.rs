//! TLS and mutual TLS on the authz and admin listeners: a real Envoy connects
//! to portcullis over mTLS with a test CA; `portcullis health` speaks TLS; a
//! certificate rotated mid-test (also as a Kubernetes secret volume does it, by
//! swapping the `..data` symlink) is presented to new handshakes while open
//! connections keep working.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::envoy::{Envoy, EnvoyOptions, Upstream, UpstreamTls};
use common::*;
use jsonwebtoken::Algorithm;
use portcullis::proto::admin::v1::admin_client::AdminClient;
use portcullis::proto::admin::v1::{GetStatusRequest, ReloadPolicyRequest};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};

const SERVER_NAME: &str = "portcullis.test";

/// A test CA that signs server and client certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { issuer: Issuer::new(params, key), pem }
    }

    /// (certificate PEM, key PEM) for `names`, signed by this CA.
    fn sign(&self, names: &[&str], common_name: &str) -> (String, String) {
        let mut params = CertificateParams::new(names.iter().map(|name| name.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

fn issuer_config(issuer: &DevIssuer, tls: &str) -> String {
    format!(
        "listen: {{ authz: 127.0.0.1:0, admin: 127.0.0.1:0, http: 127.0.0.1:0, tls: {tls} }}\nissuers:\n  idp: {{ issuer: \"{}\", jwks_uri: \"{}\" }}\nroutes:\n  - match: {{ prefix: / }}\n",
        issuer.issuer(),
        issuer.jwks_uri()
    )
}

/// The certificate the server at `addr` presents to a new handshake.
async fn presented_certificate(addr: std::net::SocketAddr, ca: &str, client: (&str, &str)) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap()).unwrap();
    let chain = vec![CertificateDer::from_pem_slice(client.0.as_bytes()).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(client.1.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = connector.connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

fn der(pem: &str) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn health(addr: &str, args: &[String]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["health", "--addr", addr, "--server-name", SERVER_NAME])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_checks_over_mutual_tls_and_a_rotated_certificate_takes_over() {
    let key = SigningKey::generate(Algorithm::ES256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let ca = Ca::new("portcullis test CA");
    let files = Files { dir: tempfile::tempdir().unwrap() };
    let (server_cert, server_key) = ca.sign(&[SERVER_NAME], "portcullis");
    let (envoy_cert, envoy_key) = ca.sign(&["envoy.test"], "envoy");
    files.write("ca.crt", &ca.pem);
    let tls = format!(
        "{{ cert: {}, key: {}, client_ca: {} }}",
        files.write("tls.crt", &server_cert).display(),
        files.write("tls.key", &server_key).display(),
        files.path("ca.crt").display()
    );
    let running = start_ready(&issuer_config(&issuer, &tls)).await;

    // A real Envoy connects over mTLS and checks every request.
    let upstream = Upstream::start().await;
    let options = EnvoyOptions {
        tls: Some(UpstreamTls {
            ca: files.path("ca.crt"),
            cert: files.write("envoy.crt", &envoy_cert),
            key: files.write("envoy.key", &envoy_key),
            server_name: SERVER_NAME.into(),
        }),
        ..Default::default()
    };
    let envoy = Envoy::start(running.authz_addr, &upstream, &options).await;
    let token = key.sign(&issuer.claims("u", "x", 300));
    assert_eq!(envoy.get("/x", &[("authorization", &bearer(&token))]).await.status, 200);
    assert_eq!(envoy.get("/x", &[]).await.status, 401, "portcullis answered over TLS");
    assert_eq!(upstream.count(), 1);

    // The health client: TLS with a client certificate; without one the handshake fails.
    let addr = running.authz_addr.to_string();
    let arg = |name: &str, file: &str| [name.to_string(), files.path(file).display().to_string()];
    let with_cert = [arg("--ca", "ca.crt"), arg("--cert", "envoy.crt"), arg("--key", "envoy.key")].concat();
    let health_addr = addr.clone();
    let (code, output) = tokio::task::spawn_blocking(move || health(&health_addr, &with_cert)).await.unwrap();
    assert_eq!(code, 0, "{output}");
    let ca_only = arg("--ca", "ca.crt").to_vec();
    let health_addr = addr.clone();
    let (code, output) = tokio::task::spawn_blocking(move || health(&health_addr, &ca_only)).await.unwrap();
    assert_eq!(code, 1, "no client certificate, no answer: {output}");

    // Rotation: new files; new handshakes get the new certificate within seconds,
    // the connection Envoy already has keeps working.
    assert_eq!(presented_certificate(running.authz_addr, &ca.pem, (&envoy_cert, &envoy_key)).await, der(&server_cert));
    let (rotated_cert, rotated_key) = ca.sign(&[SERVER_NAME], "portcullis rotated");
    files.write("tls.key.new", &rotated_key);
    files.write("tls.crt.new", &rotated_cert);
    std::fs::rename(files.path("tls.key.new"), files.path("tls.key")).unwrap();
    std::fs::rename(files.path("tls.crt.new"), files.path("tls.crt")).unwrap();
    wait_for_certificate(running.authz_addr, &ca.pem, (&envoy_cert, &envoy_key), &rotated_cert).await;
    assert_eq!(envoy.get("/x", &[("authorization", &bearer(&token))]).await.status, 200);
    assert_eq!(upstream.count(), 2);
}

async fn wait_for_certificate(addr: std::net::SocketAddr, ca: &str, client: (&str, &str), expected: &str) {
    for _ in 0..250 {
        if presented_certificate(addr, ca, client).await == der(expected) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the rotated certificate was never presented");
}

/// A Kubernetes secret volume: `tls.crt -> ..data/tls.crt`, `..data -> ..<timestamp>`;
/// an update writes a new timestamped directory and swaps `..data` atomically.
fn secret_volume(root: &Path, generation: u32, files: &[(&str, &str)]) {
    let timestamped = root.join(format!("..2026_11_26_{generation}"));
    std::fs::create_dir(&timestamped).unwrap();
    for (name, content) in files {
        std::fs::write(timestamped.join(name), content).unwrap();
        let link = root.join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
        }
    }
    let staging = root.join("..data_tmp");
    std::os::unix::fs::symlink(timestamped.file_name().unwrap(), &staging).unwrap();
    std::fs::rename(&staging, root.join("..data")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_volume_symlink_swap_is_noticed_and_a_broken_one_keeps_the_old_certificate() {
    let key = SigningKey::generate(Algorithm::ES256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let ca = Ca::new("volume CA");
    let volume = tempfile::tempdir().unwrap();
    let (first_cert, first_key) = ca.sign(&[SERVER_NAME], "first");
    secret_volume(volume.path(), 1, &[("tls.crt", &first_cert), ("tls.key", &first_key), ("ca.crt", &ca.pem)]);
    let tls = format!(
        "{{ cert: {root}/tls.crt, key: {root}/tls.key, client_ca: {root}/ca.crt }}",
        root = volume.path().display()
    );
    let running = start_ready(&issuer_config(&issuer, &tls)).await;
    let client = ca.sign(&["client.test"], "client");
    let client = (client.0.as_str(), client.1.as_str());
    assert_eq!(presented_certificate(running.authz_addr, &ca.pem, client).await, der(&first_cert));

    let (second_cert, second_key) = ca.sign(&[SERVER_NAME], "second");
    secret_volume(volume.path(), 2, &[("tls.crt", &second_cert), ("tls.key", &second_key), ("ca.crt", &ca.pem)]);
    wait_for_certificate(running.authz_addr, &ca.pem, client, &second_cert).await;

    // A certificate whose key does not match is refused; the second stays in use.
    let (third_cert, _) = ca.sign(&[SERVER_NAME], "third");
    secret_volume(volume.path(), 3, &[("tls.crt", &third_cert), ("tls.key", &second_key), ("ca.crt", &ca.pem)]);
    let tls = running.authorizer.policy().tls.clone().unwrap();
    let reloaded = tls.reload_if_changed();
    assert!(reloaded.is_err() || reloaded == Ok(false), "{reloaded:?}");
    assert_eq!(presented_certificate(running.authz_addr, &ca.pem, client).await, der(&second_cert));
}

#[test]
fn tls_files_and_the_admin_token_are_checked_with_the_config() {
    let ca = Ca::new("config CA");
    let files = Files { dir: tempfile::tempdir().unwrap() };
    let (cert, key) = ca.sign(&[SERVER_NAME], "portcullis");
    let (cert, key) = (files.write("tls.crt", &cert), files.write("tls.key", &key));
    let config = |tls: String| format!("listen: {{ admin: 0.0.0.0:50052, tls: {tls} }}\nissuers: {{}}\nroutes: []\n");
    let server_only = format!("{{ cert: {}, key: {} }}", cert.display(), key.display());
    let err = portcullis::policy::parse_str(&config(server_only), "t").unwrap_err().to_string();
    assert!(err.contains("admin.token: required"), "{err}");
    let missing = format!("{{ cert: {}/nope.crt, key: {} }}", files.dir.path().display(), key.display());
    let err = portcullis::policy::parse_str(&config(missing), "t").unwrap_err().to_string();
    // The setting is named, never the path: it may have come from a `${...}` placeholder.
    assert!(err.contains("listen.tls: cert: cannot read the file") && !err.contains("nope.crt"), "{err}");
}

/// The Admin API is never opened by a certificate Envoy also holds: without
/// `admin.token`, the admin port must be loopback, client certificates or not,
/// at load and on reload.
#[tokio::test]
async fn a_client_certificate_never_replaces_the_admin_token() {
    let key = SigningKey::generate(Algorithm::ES256, "k");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let ca = Ca::new("admin CA");
    let files = Files { dir: tempfile::tempdir().unwrap() };
    let (server_cert, server_key) = ca.sign(&[SERVER_NAME], "portcullis");
    let (envoy_cert, envoy_key) = ca.sign(&["envoy.test"], "envoy");
    let tls = format!(
        "{{ cert: {}, key: {}, client_ca: {} }}",
        files.write("tls.crt", &server_cert).display(),
        files.write("tls.key", &server_key).display(),
        files.write("ca.crt", &ca.pem).display()
    );
    let config = |admin: &str| {
        format!(
            "listen: {{ authz: 127.0.0.1:0, admin: 0.0.0.0:0, http: 127.0.0.1:0, tls: {tls} }}\n{admin}issuers:\n  idp: {{ issuer: \"{}\", jwks_uri: \"{}\" }}\nroutes:\n  - match: {{ prefix: / }}\n",
            issuer.issuer(),
            issuer.jwks_uri()
        )
    };
    let required = "admin.token: required because listen.admin (0.0.0.0:0) is not a loopback address";
    let err = portcullis::policy::parse_str(&config(""), "t").unwrap_err().to_string();
    assert!(err.contains(required), "mutual TLS alone is refused at load: {err}");

    // Started with a token; the file then drops it.
    let token = "admin-token-for-tls-tests-0123";
    let file = files.write("portcullis.yaml", &config(&format!("admin: {{ token: {token} }}\n")));
    let options = portcullis::server::ServeOptions { config_path: Some(file.clone()), ..Default::default() };
    let policy = portcullis::policy::load_file(&file).unwrap();
    let running = portcullis::server::start(policy, options, std::future::pending()).await.unwrap();
    files.write("portcullis.yaml", &config(""));
    let client_tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca.pem))
        .identity(tonic::transport::Identity::from_pem(&envoy_cert, &envoy_key))
        .domain_name(SERVER_NAME);
    let channel = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{}", running.admin_addr.port()))
        .unwrap()
        .tls_config(client_tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = AdminClient::new(channel);
    let envoy_alone = admin.get_status(GetStatusRequest {}).await.unwrap_err();
    assert_eq!(envoy_alone.code(), tonic::Code::Unauthenticated, "Envoy's certificate alone opens nothing");
    let err = admin.reload_policy(with_token(ReloadPolicyRequest {}, token)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains(required), "{}", err.message());
    let still = admin.get_status(GetStatusRequest {}).await.unwrap_err();
    assert_eq!(still.code(), tonic::Code::Unauthenticated, "the token still applies");
    assert!(admin.get_status(with_token(GetStatusRequest {}, token)).await.is_ok());
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}
