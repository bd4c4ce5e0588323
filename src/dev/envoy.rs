//! `portcullis dev` with a real Envoy in front: when an `envoy` binary is found,
//! dev runs it on a loopback port with portcullis as its ext_authz service and
//! a built-in echo upstream behind it, so a newcomer sees the whole path with
//! `curl`: a token in, the headers the upstream received out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, Method, Uri};
use axum::routing::any;
use tokio::net::TcpListener;

/// A running Envoy (killed when dropped) and the echo upstream behind it.
pub struct DevEnvoy {
    pub addr: SocketAddr,
    /// The generated bootstrap (shown in the banner: a starting point for your own).
    pub config: PathBuf,
    child: Child,
    dir: PathBuf,
    echo: tokio::task::JoinHandle<()>,
}

impl Drop for DevEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.echo.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `requested` if given, else `envoy` on `PATH`.
pub fn find(requested: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = requested.filter(|path| !path.as_os_str().is_empty()) {
        return Some(path.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("envoy")).find(|candidate| candidate.is_file())
}

/// Starts the echo upstream and Envoy on `port` (0: any free port) in front of `authz`.
pub async fn start(binary: &Path, authz: SocketAddr, port: u16) -> Result<DevEnvoy, String> {
    let echo_listener = TcpListener::bind("127.0.0.1:0").await.map_err(|err| err.to_string())?;
    let upstream = echo_listener.local_addr().map_err(|err| err.to_string())?;
    let echo = tokio::spawn(async move {
        let _ = axum::serve(echo_listener, Router::new().fallback(any(echo))).await;
    });
    let port = if port == 0 { free_port().await? } else { port };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let dir = std::env::temp_dir().join(format!("portcullis-dev-envoy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|err| err.to_string())?;
    let config = dir.join("envoy.yaml");
    std::fs::write(&config, bootstrap(addr, authz, upstream)).map_err(|err| err.to_string())?;
    let log = std::fs::File::create(dir.join("envoy.log")).map_err(|err| err.to_string())?;
    let child = Command::new(binary)
        .arg("-c")
        .arg(&config)
        .args(["--disable-hot-restart", "--concurrency", "1", "-l", "warning"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|err| format!("cannot run {}: {err}", binary.display()))?;
    let envoy = DevEnvoy { addr, config, child, dir, echo };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(envoy);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(envoy.dir.join("envoy.log")).unwrap_or_default();
    Err(format!("Envoy did not listen on {addr} within 10 s:\n{log}"))
}

async fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|err| err.to_string())?;
    Ok(listener.local_addr().map_err(|err| err.to_string())?.port())
}

/// The echo upstream: what it received, as JSON (secrets included: this is a demo).
async fn echo(method: Method, uri: Uri, headers: HeaderMap) -> axum::Json<serde_json::Value> {
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(name, value)| (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into()))
        .collect();
    axum::Json(
        serde_json::json!({"upstream received": {"method": method.as_str(), "path": uri.to_string(), "headers": headers}}),
    )
}

/// A minimal, complete Envoy bootstrap: every request checked by portcullis
/// (failing closed), then proxied to the echo upstream.
pub fn bootstrap(listen: SocketAddr, authz: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"static_resources:
  listeners:
    - name: dev
      address: {{ socket_address: {{ address: {listen_ip}, port_value: {listen_port} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: dev
                normalize_path: true
                merge_slashes: true
                upgrade_configs: [{{ upgrade_type: websocket }}]
                route_config:
                  virtual_hosts:
                    - {{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: echo }} }}] }}
                http_filters:
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      failure_mode_allow: false
                      grpc_service: {{ envoy_grpc: {{ cluster_name: portcullis }}, timeout: 0.25s }}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: portcullis
      type: STATIC
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{ http2_protocol_options: {{}} }}
      load_assignment:
        cluster_name: portcullis
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {authz_ip}, port_value: {authz_port} }} }} }} }}] }}]
    - name: echo
      type: STATIC
      load_assignment:
        cluster_name: echo
        endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {upstream_ip}, port_value: {upstream_port} }} }} }} }}] }}]
"#,
        listen_ip = listen.ip(),
        listen_port = listen.port(),
        authz_ip = authz.ip(),
        authz_port = authz.port(),
        upstream_ip = upstream.ip(),
        upstream_port = upstream.port(),
    )
}
