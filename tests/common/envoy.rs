//! A real Envoy in front of portcullis: client -> Envoy -> ext_authz (gRPC) ->
//! a recording upstream, so tests assert what the client got *and* exactly what
//! the upstream received. Also a recording ext_authz server ([`AuthzTap`]) to
//! see the CheckRequests Envoy builds.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{Authorization, AuthorizationServer};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse, OkHttpResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Bound on every network wait; far above anything a healthy run needs.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// HTTP/1.1 on raw sockets: the upstream and the raw client share it, so both
// see bytes exactly as they travelled (duplicates and order kept).

/// A request or response head: the start line and every header line in order.
#[derive(Clone, Debug)]
pub struct Head {
    pub start: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    fn parse(bytes: &[u8]) -> Head {
        let text = String::from_utf8_lossy(bytes);
        let mut lines = text.split("\r\n");
        let start = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.to_string(), value.trim().to_string()))
            .collect();
        Head { start, headers }
    }

    fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
}

/// A buffered TCP connection read in HTTP/1.1 units.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn { stream, buf: Vec::new() }
    }

    /// Reads more bytes; false at EOF.
    async fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 8192];
        let read = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..read]);
        Ok(read > 0)
    }

    /// The bytes before `delim` (consumed with it); `None` on EOF before any byte.
    async fn until(&mut self, delim: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(at) = self.buf.windows(delim.len()).position(|window| window == delim) {
                let taken: Vec<u8> = self.buf.drain(..at + delim.len()).collect();
                return Ok(Some(taken[..at].to_vec()));
            }
            if !self.fill().await? {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(std::io::ErrorKind::UnexpectedEof.into()),
                };
            }
        }
    }

    async fn exact(&mut self, len: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < len {
            if !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.drain(..len).collect())
    }

    async fn read_to_eof(&mut self) -> std::io::Result<Vec<u8>> {
        while self.fill().await? {}
        Ok(std::mem::take(&mut self.buf))
    }

    pub async fn head(&mut self) -> std::io::Result<Option<Head>> {
        Ok(self.until(b"\r\n\r\n").await?.map(|bytes| Head::parse(&bytes)))
    }

    /// The message body framed by `head`; unframed bodies run to EOF when `eof_framed`
    /// (responses) and are empty otherwise (requests).
    async fn body(&mut self, head: &Head, eof_framed: bool) -> std::io::Result<Vec<u8>> {
        if head.header("transfer-encoding").is_some_and(|value| value.eq_ignore_ascii_case("chunked")) {
            return self.chunked().await;
        }
        match head.header("content-length") {
            Some(length) => self.exact(length.parse().map_err(std::io::Error::other)?).await,
            None if eof_framed => self.read_to_eof().await,
            None => Ok(Vec::new()),
        }
    }

    async fn chunked(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.until(b"\r\n").await?.ok_or(std::io::ErrorKind::UnexpectedEof)?;
            let size = String::from_utf8_lossy(&line);
            let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)
                .map_err(std::io::Error::other)?;
            if size == 0 {
                // Trailers (ignored) up to the empty line.
                while !self.until(b"\r\n").await?.ok_or(std::io::ErrorKind::UnexpectedEof)?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.exact(size).await?);
            self.exact(2).await?;
        }
    }

    /// Writes `bytes` and reads what comes back until `expected` bytes arrived.
    pub async fn echo(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.stream.write_all(bytes).await.expect("write through the tunnel");
        tokio::time::timeout(PATIENCE, self.exact(bytes.len()))
            .await
            .expect("echo within the time bound")
            .expect("read through the tunnel")
    }
}

// ---------------------------------------------------------------------------
// The recording upstream.

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Every header line in wire order, names as Envoy wrote them.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    fn from_head(head: Head, body: Vec<u8>) -> Recorded {
        let mut parts = head.start.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        Recorded { method, path, headers: head.headers, body }
    }

    /// The first value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str()).collect()
    }

    /// Lower-cased header names.
    pub fn names(&self) -> BTreeSet<String> {
        self.headers.iter().map(|(name, _)| name.to_ascii_lowercase()).collect()
    }
}

pub const UPSTREAM_BODY: &str = "upstream says hello";

/// An HTTP/1.1 server on 127.0.0.1 that records every request, answers 200 with
/// [`UPSTREAM_BODY`], and accepts websocket upgrades (101, then echoes bytes).
pub struct Upstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the upstream");
        let addr = listener.local_addr().expect("upstream address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                // Errors only mean the peer went away; nothing to record then.
                tokio::spawn(async move { serve_upstream(Conn::new(stream), log).await.ok() });
            }
        });
        Upstream { addr, requests, task }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("upstream log").clone()
    }

    #[track_caller]
    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("the upstream received a request")
    }

    pub fn count(&self) -> usize {
        self.requests.lock().expect("upstream log").len()
    }

    pub fn clear(&self) {
        self.requests.lock().expect("upstream log").clear();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_upstream(mut conn: Conn, log: Arc<Mutex<Vec<Recorded>>>) -> std::io::Result<()> {
    // Envoy keeps upstream connections alive: serve requests until it closes.
    while let Some(head) = conn.head().await? {
        let body = conn.body(&head, false).await?;
        let recorded = Recorded::from_head(head, body);
        let websocket_key = match recorded.header("upgrade") {
            Some(upgrade) if upgrade.eq_ignore_ascii_case("websocket") => recorded.header("sec-websocket-key"),
            _ => None,
        }
        .map(str::to_string);
        log.lock().expect("upstream log").push(recorded);
        if let Some(key) = websocket_key {
            let accept = websocket_accept(&key);
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
            );
            conn.stream.write_all(response.as_bytes()).await?;
            // Envoy does not parse frames: echoing raw bytes proves the tunnel.
            let (mut reader, mut writer) = conn.stream.split();
            writer.write_all(&conn.buf).await?;
            tokio::io::copy(&mut reader, &mut writer).await?;
            return Ok(());
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-upstream: yes\r\ncontent-length: {}\r\n\r\n{UPSTREAM_BODY}",
            UPSTREAM_BODY.len()
        );
        conn.stream.write_all(response.as_bytes()).await?;
    }
    Ok(())
}

/// RFC 6455 section 4.2.2: base64(SHA-1(key + GUID)).
pub fn websocket_accept(key: &str) -> String {
    let input = format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, input.as_bytes());
    STANDARD.encode(digest.as_ref())
}

// ---------------------------------------------------------------------------
// A recording ext_authz server.

/// An ext_authz server that records every CheckRequest Envoy sends, then
/// forwards it to portcullis (or allows, when it has nowhere to forward).
pub struct AuthzTap {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<CheckRequest>>>,
    task: JoinHandle<()>,
}

struct TapService {
    seen: Arc<Mutex<Vec<CheckRequest>>>,
    forward: Option<AuthorizationClient<Channel>>,
}

#[tonic::async_trait]
impl Authorization for TapService {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let request = request.into_inner();
        self.seen.lock().expect("tap log").push(request.clone());
        match &self.forward {
            Some(client) => client.clone().check(request).await,
            None => Ok(tonic::Response::new(CheckResponse {
                status: Some(RpcStatus { code: 0, ..Default::default() }),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
                ..Default::default()
            })),
        }
    }
}

impl AuthzTap {
    /// Records and allows everything.
    pub async fn allow_all() -> AuthzTap {
        Self::start(None).await
    }

    /// Records, then asks portcullis at `authz`.
    pub async fn forwarding_to(authz: SocketAddr) -> AuthzTap {
        Self::start(Some(super::client_at(authz).await)).await
    }

    async fn start(forward: Option<AuthorizationClient<Channel>>) -> AuthzTap {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the tap");
        let addr = listener.local_addr().expect("tap address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let service = TapService { seen: Arc::clone(&seen), forward };
        let task = tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(AuthorizationServer::new(service))
                .serve_with_incoming(incoming)
                .await;
        });
        AuthzTap { addr, seen, task }
    }

    #[track_caller]
    pub fn last(&self) -> CheckRequest {
        self.seen.lock().expect("tap log").last().cloned().expect("Envoy sent a CheckRequest")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("tap log").len()
    }
}

impl Drop for AuthzTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------
// The Envoy bootstrap.

/// What a test may vary; [`Default`] is the deployment the docs recommend.
#[derive(Clone, Debug)]
pub struct EnvoyOptions {
    /// `failure_mode_allow` (default false: portcullis unreachable = deny).
    pub failure_mode_allow: bool,
    /// The ext_authz `grpc_service.timeout` (default 2 s, generous for a loaded CI machine).
    pub timeout: Duration,
    /// `status_on_error` (default 403).
    pub status_on_error: u16,
    /// `encode_raw_headers`: `header_map` with raw values instead of the merged `headers` map.
    pub encode_raw_headers: bool,
    /// Off by default: portcullis must refuse ambiguous paths on its own.
    pub normalize_path: bool,
    pub merge_slashes: bool,
    /// Active gRPC health checks of the portcullis cluster (service
    /// `envoy.service.auth.v3.Authorization`), every 100 ms.
    pub health_check: bool,
    /// `common_lb_config.healthy_panic_threshold` in percent; `None` keeps Envoy's 50%.
    pub healthy_panic_threshold: Option<u32>,
    /// TLS to portcullis: verify its certificate with this CA, for this SNI name,
    /// and present a client certificate (mutual TLS).
    pub tls: Option<UpstreamTls>,
}

/// Envoy's side of TLS to portcullis (PEM file paths).
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub server_name: String,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        EnvoyOptions {
            failure_mode_allow: false,
            timeout: Duration::from_secs(2),
            status_on_error: 403,
            encode_raw_headers: false,
            normalize_path: false,
            merge_slashes: false,
            health_check: false,
            healthy_panic_threshold: None,
            tls: None,
        }
    }
}

/// The portcullis cluster's transport socket: TLS 1.2+, h2 by ALPN, the server
/// certificate checked against `ca` and `server_name`, a client certificate.
fn upstream_tls(tls: &UpstreamTls) -> String {
    format!(
        r#"
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: {sni}
          common_tls_context:
            alpn_protocols: [h2]
            tls_certificates: [{{ certificate_chain: {{ filename: {cert} }}, private_key: {{ filename: {key} }} }}]
            validation_context:
              trusted_ca: {{ filename: {ca} }}
              match_typed_subject_alt_names: [{{ san_type: DNS, matcher: {{ exact: {sni} }} }}]"#,
        sni = tls.server_name,
        cert = tls.cert.display(),
        key = tls.key.display(),
        ca = tls.ca.display(),
    )
}

/// A complete static bootstrap: listener and admin on 127.0.0.1 port 0 (Envoy picks;
/// [`Envoy::start`] asks the admin API which), every request checked by the
/// `portcullis` cluster at `authz` (HTTP/2), then routed to `upstream`.
pub fn bootstrap(options: &EnvoyOptions, authz: SocketAddr, upstream: SocketAddr) -> String {
    let EnvoyOptions {
        failure_mode_allow,
        timeout,
        status_on_error,
        encode_raw_headers,
        normalize_path,
        merge_slashes,
        health_check,
        healthy_panic_threshold,
        tls,
    } = options;
    let timeout = timeout.as_secs_f64();
    // no_traffic_interval too: its 60 s default applies until the cluster has carried traffic.
    let health_checks = match health_check {
        true => {
            "\n      health_checks:\n        - { timeout: 1s, interval: 0.1s, no_traffic_interval: 0.1s, unhealthy_threshold: 1, healthy_threshold: 1, grpc_health_check: { service_name: envoy.service.auth.v3.Authorization } }"
        }
        false => "",
    };
    let panic_threshold = healthy_panic_threshold
        .map(|percent| format!("\n      common_lb_config: {{ healthy_panic_threshold: {{ value: {percent} }} }}"))
        .unwrap_or_default();
    let transport_socket = tls.as_ref().map(upstream_tls).unwrap_or_default();
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
    - name: ingress
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
                normalize_path: {normalize_path}
                merge_slashes: {merge_slashes}
                upgrade_configs: [{{ upgrade_type: websocket }}]
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: upstream }} }}]
                http_filters:
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      failure_mode_allow: {failure_mode_allow}
                      status_on_error: {{ code: {status_on_error} }}
                      encode_raw_headers: {encode_raw_headers}
                      validate_mutations: true
                      grpc_service:
                        envoy_grpc: {{ cluster_name: portcullis }}
                        timeout: {timeout}s
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: portcullis
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{ http2_protocol_options: {{}} }}
      load_assignment:
        cluster_name: portcullis
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {authz_ip}, port_value: {authz_port} }} }} }} }}] }}]{health_checks}{panic_threshold}{transport_socket}
    - name: upstream
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: upstream
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {upstream_ip}, port_value: {upstream_port} }} }} }} }}] }}]
"#,
        authz_ip = authz.ip(),
        authz_port = authz.port(),
        upstream_ip = upstream.ip(),
        upstream_port = upstream.port(),
    )
}

// ---------------------------------------------------------------------------
// The Envoy process.

/// A running Envoy (killed on drop) with a client for its listener.
pub struct Envoy {
    child: Child,
    /// The HTTP listener.
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    log: PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// What the client got back.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("{err}: body {:?}", self.body))
    }
}

impl Envoy {
    /// Starts Envoy with `options`, asking `authz` and routing to `upstream`,
    /// and waits (bounded) until it is LIVE and its listener accepts.
    pub async fn start(authz: SocketAddr, upstream: &Upstream, options: &EnvoyOptions) -> Envoy {
        Self::start_with(&bootstrap(options, authz, upstream.addr)).await
    }

    /// Starts Envoy with a hand-written bootstrap (listener and admin on port 0).
    pub async fn start_with(bootstrap: &str) -> Envoy {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("envoy.yaml");
        let log = dir.path().join("envoy.log");
        let admin_file = dir.path().join("admin-address");
        std::fs::write(&config, bootstrap).expect("write the bootstrap");
        let child = Command::new(super::tools::envoy())
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_file)
            // No shared memory: parallel instances need no distinct --base-id.
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the Envoy log"))
            .spawn()
            .expect("spawn envoy");
        let http = reqwest::Client::builder().no_proxy().timeout(PATIENCE).build().expect("HTTP client");
        let mut envoy =
            Envoy { child, addr: ([0, 0, 0, 0], 0).into(), admin: ([0, 0, 0, 0], 0).into(), log, http, _dir: dir };
        envoy.admin = envoy.poll("the admin address file", || read_admin_address(&admin_file)).await;
        envoy.wait_live().await;
        envoy.addr = envoy.listener_address().await;
        let addr = envoy.addr;
        envoy.poll("the listener to accept", || std::net::TcpStream::connect(addr).ok().map(drop)).await;
        envoy
    }

    /// Envoy's log so far (stderr at `warning`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `probe` every 20 ms until it gives a value, within [`PATIENCE`].
    async fn poll<T>(&mut self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(value) = probe() {
                return value;
            }
            self.still_starting(what, deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_live(&mut self) {
        let url = format!("http://{}/ready", self.admin);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(response) = self.http.get(&url).send().await
                && response.text().await.is_ok_and(|text| text.trim() == "LIVE")
            {
                return;
            }
            self.still_starting("admin /ready to say LIVE", deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Panics with Envoy's log if it exited or `deadline` passed.
    fn still_starting(&mut self, what: &str, deadline: tokio::time::Instant) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("Envoy exited ({status}) while waiting for {what}:\n{}", self.log());
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}:\n{}", self.log());
    }

    /// The port Envoy bound for the `ingress` listener.
    async fn listener_address(&self) -> SocketAddr {
        let url = format!("http://{}/listeners?format=json", self.admin);
        let body = self.admin_json(&url).await;
        let socket = &body["listener_statuses"][0]["local_address"]["socket_address"];
        let ip = socket["address"].as_str().expect("listener address");
        let port = socket["port_value"].as_u64().expect("listener port");
        format!("{ip}:{port}").parse().expect("listener socket address")
    }

    /// A counter or gauge from the admin `/stats` (0 when absent), e.g.
    /// `http.ingress.ext_authz.error`.
    pub async fn stat(&self, name: &str) -> u64 {
        let body = self.admin_json(&format!("http://{}/stats?format=json", self.admin)).await;
        let stats = body["stats"].as_array().cloned().unwrap_or_default();
        stats.iter().find(|stat| stat["name"] == name).and_then(|stat| stat["value"].as_u64()).unwrap_or(0)
    }

    async fn admin_json(&self, url: &str) -> serde_json::Value {
        let text = self.http.get(url).send().await.expect("admin API").text().await.expect("admin API body");
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("{url}: {err}: {text}"))
    }

    /// The `health_flags` Envoy reports for the portcullis host (`healthy`, or
    /// e.g. `/failed_active_hc`).
    pub async fn portcullis_health(&self) -> String {
        let url = format!("http://{}/clusters", self.admin);
        let text = self.http.get(url).send().await.expect("admin /clusters").text().await.expect("clusters body");
        text.lines()
            .find(|line| line.starts_with("portcullis::") && line.contains("::health_flags::"))
            .and_then(|line| line.rsplit("::").next())
            .unwrap_or_default()
            .to_string()
    }

    /// Polls (bounded) until the portcullis host's health flags are `flags`.
    pub async fn wait_for_portcullis_health(&self, flags: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let now = self.portcullis_health().await;
            if now == flags {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "portcullis health stayed {now:?}, not {flags:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request through Envoy with reqwest; `headers` are appended in order
    /// (repeat a name to send it twice).
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.unwrap_or_else(|err| panic!("request via Envoy: {err}\n{}", self.log()));
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        Reply { status, headers, body: response.text().await.expect("response body") }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", path, headers, None).await
    }

    /// Writes `request` (a complete HTTP/1.1 request, see [`raw_request`]) on a
    /// fresh connection and reads the reply until Envoy closes it.
    pub async fn raw(&self, request: &[u8]) -> Reply {
        let exchange = async {
            let mut conn = Conn::new(TcpStream::connect(self.addr).await?);
            conn.stream.write_all(request).await?;
            let head = conn.head().await?.ok_or(std::io::ErrorKind::UnexpectedEof)?;
            let body = conn.body(&head, true).await?;
            std::io::Result::Ok(reply(head, body))
        };
        match tokio::time::timeout(PATIENCE, exchange).await {
            Ok(Ok(reply)) => reply,
            other => panic!("raw request via Envoy: {other:?}\n{}", self.log()),
        }
    }

    /// Sends a websocket upgrade for `path` with `headers` (plus the handshake
    /// headers) and returns the response head and, on 101, the open tunnel.
    pub async fn websocket(&self, path: &str, headers: &[(&str, &str)]) -> (Reply, Conn) {
        let key = STANDARD.encode(b"portcullis-tests");
        let mut all: Vec<(&str, &str)> = vec![
            ("Host", "graphql.example.com"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", &key),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Protocol", "graphql-transport-ws"),
        ];
        all.extend_from_slice(headers);
        let exchange = async {
            let mut conn = Conn::new(TcpStream::connect(self.addr).await?);
            conn.stream.write_all(&raw_request("GET", path, &all, "")).await?;
            let head = conn.head().await?.ok_or(std::io::ErrorKind::UnexpectedEof)?;
            // A refused upgrade is an ordinary response with a body.
            let body = match head.start.contains(" 101 ") {
                true => Vec::new(),
                false => conn.body(&head, true).await?,
            };
            std::io::Result::Ok((reply(head, body), conn))
        };
        let (reply, conn) = match tokio::time::timeout(PATIENCE, exchange).await {
            Ok(Ok(done)) => done,
            other => {
                panic!("websocket via Envoy: {:?}\n{}", other.map(|result| result.map(|(reply, _)| reply)), self.log())
            }
        };
        if reply.status == 101 {
            assert_eq!(reply.header("sec-websocket-accept"), Some(websocket_accept(&key).as_str()), "{reply:?}");
        }
        (reply, conn)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // A failed assertion in a test: Envoy's side of the story, before the temp dir goes.
        if std::thread::panicking() {
            eprintln!("--- Envoy log ({}) ---\n{}", self.addr, self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_admin_address(file: &std::path::Path) -> Option<SocketAddr> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn reply(head: Head, body: Vec<u8>) -> Reply {
    let status = head.start.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    Reply { status, headers: head.headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// An HTTP/1.1 request exactly as given: no header is added, none merged, so
/// tests can send what reqwest refuses (odd Host values, repeated lines). A
/// non-empty `body` gets a Content-Length; `Connection: close` ends every request.
pub fn raw_request(method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut text = format!("{method} {target} HTTP/1.1\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("connection")) {
        text.push_str("Connection: close\r\n");
    }
    text.push_str("\r\n");
    text.push_str(body);
    text.into_bytes()
}
