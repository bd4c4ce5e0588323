//! The HTTP faces on `listen.http_authz`, asked by the proxies that use them:
//! - Envoy's HTTP ext_authz: the shipped examples/envoy-http/envoy.yaml, run by
//!   the pinned real Envoy (HTTP/1.1 and h2c to portcullis) in front of a
//!   recording upstream;
//! - nginx `auth_request`: the shipped examples/nginx/nginx.conf, run by
//!   Debian's nginx (templated only for ports and paths);
//! - Traefik `forwardAuth` and Caddy `forward_auth`: requests as their
//!   documentation says they send them (and the real Caddy when one is built);
//! - the listener itself: HTTP/1.1, h2c and TLS (ALPN h2 and http/1.1) with
//!   curl, and peers outside `trusted_proxies` refused.
//!
//! Each test asserts what the client got and exactly what the upstream received.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::envoy::*;
use common::*;
use jsonwebtoken::Algorithm;
use portcullis::server::Running;
use serde_json::{Value, json};

const ADMIN_SECRET: &str = "hasura-admin-secret-for-proxy-tests";
const HASURA_NS: &str = "https://hasura.io/jwt/claims";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// A shipped portcullis.yaml with the test issuer, the admin secret and ephemeral loopback ports.
fn example_config(dir: &str, issuer: &DevIssuer) -> String {
    let text = read(&format!("examples/{dir}/portcullis.yaml"))
        .replace("https://acme.kinde.com/.well-known/jwks", &issuer.jwks_uri())
        .replace("https://acme.kinde.com", issuer.issuer())
        .replace("${HASURA_GRAPHQL_ADMIN_SECRET}", ADMIN_SECRET)
        .replace("listen:\n", "listen:\n  admin: 127.0.0.1:0\n");
    let mut text = text;
    for addr in ["127.0.0.1:50051", "0.0.0.0:9090", "0.0.0.0:9191", "127.0.0.1:9191"] {
        text = text.replace(addr, "127.0.0.1:0");
    }
    text
}

fn claims(issuer: &DevIssuer, sub: &str, lifetime: i64) -> Value {
    let now = Clock::system().now() as i64;
    json!({"iss": issuer.issuer(), "aud": "api", "sub": sub, "email": format!("{sub}@example.com"), "iat": now, "exp": now + lifetime})
}

fn hasura_claims(issuer: &DevIssuer, sub: &str) -> Value {
    let mut claims = claims(issuer, sub, 300);
    claims[HASURA_NS] =
        json!({"x-hasura-default-role": "user", "x-hasura-allowed-roles": ["user"], "x-hasura-user-id": sub});
    claims
}

/// The example's issuer, its tokens, portcullis on the example config, a recording upstream.
struct Setup {
    key: SigningKey,
    issuer: DevIssuer,
    portcullis: Running,
    upstream: Upstream,
}

impl Setup {
    async fn start(dir: &str) -> Setup {
        let key = SigningKey::generate(Algorithm::RS256, "kinde-1");
        let issuer = DevIssuer::start(&[&key]).await.unwrap();
        let portcullis = start_ready(&example_config(dir, &issuer)).await;
        Setup { key, issuer, portcullis, upstream: Upstream::start().await }
    }

    fn http_authz(&self) -> SocketAddr {
        self.portcullis.http_authz_addr.expect("the example turns listen.http_authz on")
    }

    fn token(&self, sub: &str) -> String {
        bearer(&self.key.sign(&claims(&self.issuer, sub, 300)))
    }

    fn hasura_token(&self, sub: &str) -> String {
        bearer(&self.key.sign(&hasura_claims(&self.issuer, sub)))
    }

    fn expired_token(&self) -> String {
        bearer(&self.key.sign(&claims(&self.issuer, "kp_alice", -300)))
    }

    #[track_caller]
    fn upstream_untouched(&self) {
        assert_eq!(self.upstream.count(), 0, "the upstream must receive nothing: {:?}", self.upstream.requests());
    }
}

/// Headers a client sends to pass for someone else; none may reach the upstream.
/// (A client may ask for a Hasura role: x-hasura-role is a request, not a claim, and is not here.)
const SPOOFED: [(&str, &str); 5] = [
    ("x-user-id", "someone-else"),
    ("x-user-email", "evil@example.com"),
    ("x-hasura-user-id", "someone-else"),
    ("x-hasura-org-id", "evil"),
    ("apikey", "guessed"),
];

fn with_spoofed<'a>(headers: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    headers.iter().copied().chain(SPOOFED).collect()
}

// ---------------------------------------------------------------------------
// Envoy's HTTP ext_authz through the shipped envoy.yaml.

/// The shipped envoy.yaml on loopback: listener and admin on port 0, the clusters
/// at portcullis' http_authz and the upstream, HTTP/1.1 or h2c to portcullis.
fn envoy_http_bootstrap(authz: SocketAddr, upstream: SocketAddr, h2c: bool) -> String {
    let shipped = read("examples/envoy-http/envoy.yaml");
    let loopback = |name: &str, port: u16, addr: SocketAddr| {
        (format!("address: {name}, port_value: {port}"), format!("address: {}, port_value: {}", addr.ip(), addr.port()))
    };
    let mut text =
        format!("admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\n{shipped}");
    for (from, to) in [
        ("address: 0.0.0.0, port_value: 10000".to_string(), "address: 127.0.0.1, port_value: 0".to_string()),
        loopback("portcullis", 9191, authz),
        loopback("api", 8000, upstream),
        loopback("hasura", 8080, upstream),
    ] {
        assert!(text.contains(&from), "{from} in the shipped envoy.yaml");
        text = text.replace(&from, &to);
    }
    if h2c {
        let cluster = "    - name: portcullis\n      type: STRICT_DNS\n      connect_timeout: 1s\n";
        assert!(text.contains(cluster));
        let h2 = format!(
            "{cluster}      typed_extension_protocol_options:\n        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n          \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n          explicit_http_config: {{ http2_protocol_options: {{}} }}\n"
        );
        text = text.replace(cluster, &h2);
    }
    text
}

#[tokio::test]
async fn the_shipped_envoy_http_example_validates() {
    let output = Command::new(common::tools::envoy())
        .args(["--mode", "validate", "-c"])
        .arg(repo().join("examples/envoy-http/envoy.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && text.contains("OK") && !text.contains("][warning]"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_http_service_through_the_shipped_example() {
    let setup = Setup::start("envoy-http").await;
    for h2c in [false, true] {
        let envoy = Envoy::start_with(&envoy_http_bootstrap(setup.http_authz(), setup.upstream.addr, h2c)).await;
        envoy_flows(&setup, &envoy).await;
    }
    let counted = metric(
        &setup.portcullis,
        "portcullis_checks_total",
        "{route=\"api\",decision=\"allow\",reason=\"ok\",face=\"ext_authz_http\"}",
    );
    assert_eq!(counted, 2.0, "one API allow per Envoy, counted under the HTTP face");
}

async fn envoy_flows(setup: &Setup, envoy: &Envoy) {
    let upstream = &setup.upstream;
    upstream.clear();
    // Token in -> identity headers out; the client's copies replaced or removed.
    let token = setup.token("kp_alice");
    let reply = envoy.get("/api/orders?limit=5", &with_spoofed(&[("authorization", &token)])).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, UPSTREAM_BODY), "{}", envoy.log());
    let got = upstream.last();
    assert_eq!(got.path, "/api/orders?limit=5", "the original path, without the prefix");
    assert_eq!(got.all("x-user-id"), ["kp_alice"]);
    assert_eq!(got.all("x-user-email"), ["kp_alice@example.com"]);
    // As with the gRPC face: the policy's identity headers are replaced; x-hasura-* is
    // the Hasura backend's business (removed on its routes, below).

    // Hasura: the session and the admin secret; the spoofed ones gone.
    upstream.clear();
    let token = setup.hasura_token("kp_bob");
    let headers = with_spoofed(&[("authorization", &token), ("content-type", "application/json")]);
    let reply = envoy.send("POST", "/v1/graphql", &headers, Some(r#"{"query":"{ a }"}"#)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let got = upstream.last();
    assert_eq!(got.all("x-hasura-admin-secret"), [ADMIN_SECRET]);
    assert_eq!(got.all("x-hasura-role"), ["user"]);
    assert_eq!(got.all("x-hasura-user-id"), ["kp_bob"]);
    assert!(got.header("x-hasura-org-id").is_none(), "removed (x-envoy-auth-headers-to-remove): {got:?}");
    assert!(got.header("authorization").is_none(), "Hasura gets the session, not the token: {got:?}");
    assert!(got.header("x-user-id").is_none(), "every identity header of the policy removed: {got:?}");

    // Denies: the status, challenge and body the gRPC face sends; nothing upstream.
    upstream.clear();
    let reply = envoy.get("/api/orders", &[]).await;
    assert_eq!(reply.status, 401);
    assert!(reply.header("www-authenticate").is_some_and(|value| value.starts_with("Bearer")), "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json()["error"], "unauthorized", "{reply:?}");
    let reply = envoy.get("/api/orders", &[("authorization", &setup.expired_token())]).await;
    assert_eq!((reply.status, reply.json()["error"].as_str()), (401, Some("invalid_token")), "{reply:?}");
    let reply = envoy.get("/elsewhere", &[("authorization", &token)]).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.json()["error"], "forbidden");
    setup.upstream_untouched();
}

// ---------------------------------------------------------------------------
// nginx auth_request through the shipped nginx.conf.

/// Debian's nginx; CI installs it (.ci/run), so only a developer machine may lack it.
fn nginx_binary() -> Option<PathBuf> {
    let found = common::tools::find("nginx").or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.exists()));
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "nginx is required under CI (.ci/run installs it)");
        eprintln!("nginx not installed: skipping (apt-get install nginx)");
    }
    found
}

/// A free loopback port (nginx cannot listen on port 0 and say which it got).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A proxy process running a shipped config (killed on drop).
struct Proxy {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// `shipped` with each `(from, to)` replaced once (each must be there).
fn templated(shipped: &str, replacements: &[(String, String)]) -> String {
    let mut text = shipped.to_string();
    for (from, to) in replacements {
        assert!(text.contains(from.as_str()), "{from:?} in the shipped config");
        text = text.replacen(from.as_str(), to, 1);
    }
    text
}

impl Proxy {
    /// nginx on the shipped nginx.conf: ports and temp paths changed, nothing else.
    async fn nginx(binary: &Path, portcullis: SocketAddr, upstream: SocketAddr) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let temp = |name: &str| dir.path().join(name).display().to_string();
        let paths = format!(
            "http {{\n    client_body_temp_path {};\n    proxy_temp_path {};\n    fastcgi_temp_path {};\n    uwsgi_temp_path {};\n    scgi_temp_path {};\n    access_log off;\n",
            temp("body"),
            temp("proxy"),
            temp("fastcgi"),
            temp("uwsgi"),
            temp("scgi")
        );
        let text = templated(
            &read("examples/nginx/nginx.conf"),
            &[
                ("http {\n".to_string(), paths),
                ("server 127.0.0.1:9191;".to_string(), format!("server {portcullis};")),
                ("server 127.0.0.1:8000;".to_string(), format!("server {upstream};")),
                ("listen 8080;".to_string(), format!("listen 127.0.0.1:{port};")),
            ],
        );
        let config = dir.path().join("nginx.conf");
        std::fs::write(&config, text).unwrap();
        let log = dir.path().join("error.log");
        let globals =
            format!("daemon off; master_process off; pid {}; error_log {} warn;", temp("nginx.pid"), log.display());
        let mut command = Command::new(binary);
        command.arg("-p").arg(dir.path()).arg("-c").arg(&config).args(["-g", &globals]);
        Proxy::start(command, port, log, dir).await
    }

    /// Caddy on the shipped Caddyfile: ports changed, nothing else.
    async fn caddy(portcullis: SocketAddr, upstream: SocketAddr) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let text = templated(
            &read("examples/caddy/Caddyfile"),
            &[
                (":8080 {".to_string(), format!(":{port} {{")),
                ("forward_auth 127.0.0.1:9191".to_string(), format!("forward_auth {portcullis}")),
                ("reverse_proxy 127.0.0.1:8000".to_string(), format!("reverse_proxy {upstream}")),
            ],
        );
        let config = dir.path().join("Caddyfile");
        std::fs::write(&config, text).unwrap();
        let log = dir.path().join("caddy.log");
        let mut command = Command::new(common::tools::go_tool("caddy"));
        command
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&config)
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .env("HOME", dir.path());
        Proxy::start(command, port, log, dir).await
    }

    async fn start(mut command: Command, port: u16, log: PathBuf, dir: tempfile::TempDir) -> Proxy {
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).spawn().expect("spawn the proxy");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut proxy = Proxy { child, addr, log, _dir: dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("the proxy exited ({status}):\n{}", proxy.log());
            }
            assert!(std::time::Instant::now() < deadline, "the proxy did not listen:\n{}", proxy.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        proxy
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Reply {
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
        let mut request = client
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.unwrap_or_else(|err| panic!("via the proxy: {err}\n{}", self.log()));
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        let body = response.text().await.unwrap_or_else(|err| panic!("via the proxy: {err}\n{}", self.log()));
        Reply { status, headers, body }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_through_the_shipped_example() {
    let Some(binary) = nginx_binary() else { return };
    let setup = Setup::start("nginx").await;
    let nginx = Proxy::nginx(&binary, setup.http_authz(), setup.upstream.addr).await;
    let upstream = &setup.upstream;

    // Token in -> identity headers out; every client copy stripped.
    let token = setup.token("kp_alice");
    let headers = with_spoofed(&[("authorization", &token), ("x-hasura-role", "admin")]);
    let reply = nginx.send("GET", "/api/orders?limit=5", &headers, None).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, UPSTREAM_BODY), "{reply:?}\n{}", nginx.log());
    let got = upstream.last();
    assert_eq!((got.method.as_str(), got.path.as_str()), ("GET", "/api/orders?limit=5"));
    assert_eq!(got.all("x-user-id"), ["kp_alice"]);
    assert_eq!(got.all("x-user-email"), ["kp_alice@example.com"]);
    for name in ["x-hasura-role", "x-hasura-org-id", "apikey", "authorization", "x-hasura-admin-secret"] {
        assert!(got.header(name).is_none(), "{name} stripped: {got:?}");
    }

    // Hasura: the session and the admin secret; the body goes as it came.
    upstream.clear();
    let token = setup.hasura_token("kp_bob");
    let query = r#"{"query":"{ notes { id } }"}"#;
    let headers = with_spoofed(&[("authorization", &token), ("content-type", "application/json")]);
    let reply = nginx.send("POST", "/v1/graphql", &headers, Some(query)).await;
    assert_eq!(reply.status, 200, "{reply:?}\n{}", nginx.log());
    let got = upstream.last();
    assert_eq!((got.method.as_str(), got.body.as_slice()), ("POST", query.as_bytes()));
    assert_eq!(got.all("x-hasura-admin-secret"), [ADMIN_SECRET]);
    assert_eq!(got.all("x-hasura-role"), ["user"]);
    assert_eq!(got.all("x-hasura-user-id"), ["kp_bob"]);
    assert_eq!(got.header("content-type"), Some("application/json"));
    for name in ["x-hasura-org-id", "apikey", "authorization", "x-user-id", "x-user-email"] {
        assert!(got.header(name).is_none(), "{name} stripped: {got:?}");
    }

    // Denies: status, challenge and portcullis' body to the client; nothing upstream.
    upstream.clear();
    let reply = nginx.send("GET", "/api/orders", &[], None).await;
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.json()["error"], "unauthorized", "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.header("www-authenticate").is_some_and(|value| value.starts_with("Bearer")), "{reply:?}");
    let reply = nginx.send("GET", "/api/orders", &[("authorization", &setup.expired_token())], None).await;
    assert_eq!((reply.status, reply.json()["error"].as_str()), (401, Some("invalid_token")), "{reply:?}");
    let reply = nginx.send("GET", "/elsewhere", &[("authorization", &token)], None).await;
    assert_eq!((reply.status, reply.json()["error"].as_str()), (403, Some("forbidden")), "{reply:?}");
    // An ambiguous path is a 400 to portcullis, which nginx cannot pass: 403, the body says why.
    let reply = nginx.send("GET", "/api//orders", &[("authorization", &token)], None).await;
    assert_eq!((reply.status, reply.json()["error"].as_str()), (403, Some("invalid_request")), "{reply:?}");
    setup.upstream_untouched();

    // portcullis gone: 503 (retry later), never the upstream.
    setup.portcullis.stop().await.unwrap();
    let reply = nginx.send("GET", "/api/orders", &[("authorization", &token)], None).await;
    assert_eq!((reply.status, reply.json()["error"].as_str()), (503, Some("unavailable")), "{reply:?}");
    assert_eq!(setup.upstream.count(), 0);
}

// ---------------------------------------------------------------------------
// Traefik forwardAuth and Caddy forward_auth, as their documentation says they ask.

async fn ask(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = client.get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    Reply { status, headers, body: response.text().await.unwrap() }
}

#[tokio::test]
async fn forward_auth_as_traefik_and_caddy_ask() {
    let setup = Setup::start("traefik").await;
    let addr = setup.http_authz();
    let token = setup.hasura_token("kp_bob");
    // Traefik: GET with the client's headers and X-Forwarded-Method/-Proto/-Host/-Uri/-For.
    let traefik = |method: &'static str, uri: &'static str| {
        vec![
            ("x-forwarded-method", method),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com"),
            ("x-forwarded-uri", uri),
            ("x-forwarded-for", "203.0.113.7"),
        ]
    };
    let mut headers = traefik("POST", "/v1/graphql");
    headers.push(("authorization", &token));
    headers.extend(SPOOFED);
    let reply = ask(addr, "/forward-auth", &headers).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("x-hasura-role"), Some("user"), "for authResponseHeaders / copy_headers");
    assert_eq!(reply.header("x-hasura-user-id"), Some("kp_bob"));
    assert_eq!(reply.header("x-hasura-admin-secret"), Some(ADMIN_SECRET));

    // A deny: the gRPC face's status and body; Traefik and Caddy pass any non-2xx to the client.
    let reply = ask(addr, "/forward-auth", &traefik("GET", "/api/orders")).await;
    assert_eq!((reply.status, reply.json()["error"].as_str()), (401, Some("unauthorized")), "{reply:?}");
    assert!(reply.header("www-authenticate").is_some());
    let mut headers = traefik("GET", "/api/..%2fadmin");
    headers.push(("authorization", &token));
    let reply = ask(addr, "/forward-auth", &headers).await;
    assert_eq!(reply.status, 400, "an ambiguous original path keeps its 400 here: {reply:?}");

    // The original request must be described, once: never guessed from the auth request itself.
    for missing in ["x-forwarded-method", "x-forwarded-uri", "x-forwarded-host"] {
        let headers: Vec<_> = traefik("GET", "/api/orders").into_iter().filter(|(name, _)| *name != missing).collect();
        let reply = ask(addr, "/forward-auth", &headers).await;
        assert_eq!((reply.status, reply.json()["error"].as_str()), (400, Some("invalid_request")), "{missing}");
    }
    let mut twice = traefik("GET", "/api/orders");
    twice.push(("x-forwarded-uri", "/public"));
    assert_eq!(ask(addr, "/forward-auth", &twice).await.status, 400, "a repeated X-Forwarded-Uri is ambiguous");
    let counted = metric(
        &setup.portcullis,
        "portcullis_checks_total",
        "{route=\"-\",decision=\"deny\",reason=\"original_missing\",face=\"forward_auth\"}",
    );
    assert_eq!(counted, 4.0);
}

#[tokio::test]
async fn forwarded_headers_from_untrusted_peers_are_refused() {
    let key = SigningKey::generate(Algorithm::RS256, "kinde-1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let config = example_config("traefik", &issuer).replace("[127.0.0.1/32, \"::1/128\"]", "[10.0.0.0/8]");
    assert!(config.contains("[10.0.0.0/8]"), "{config}");
    let portcullis = start_ready(&config).await;
    let addr = portcullis.http_authz_addr.unwrap();
    let token = bearer(&key.sign(&claims(&issuer, "kp_alice", 300)));
    let forwarded = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", "app.example.com"),
        ("x-forwarded-uri", "/api/orders"),
        ("authorization", token.as_str()),
    ];
    let reply = ask(addr, "/forward-auth", &forwarded).await;
    assert_eq!((reply.status, reply.json()["error"].as_str()), (400, Some("invalid_request")), "{reply:?}");
    assert!(reply.json()["error_description"].as_str().unwrap().contains("trusted_proxies"));
    let original = [
        ("x-original-method", "GET"),
        ("x-original-uri", "/api/orders"),
        ("host", "app.example.com"),
        ("authorization", token.as_str()),
    ];
    assert_eq!(ask(addr, "/forward-auth/nginx", &original).await.status, 403, "nginx's 400 is a 403");
    let counted = metric(
        &portcullis,
        "portcullis_checks_total",
        "{route=\"-\",decision=\"deny\",reason=\"untrusted_proxy\",face=\"forward_auth\"}",
    );
    assert_eq!(counted, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_through_the_shipped_example() {
    let setup = Setup::start("caddy").await;
    let caddy = Proxy::caddy(setup.http_authz(), setup.upstream.addr).await;
    let upstream = &setup.upstream;
    let token = setup.token("kp_alice");
    let headers =
        with_spoofed(&[("authorization", &token), ("x-hasura-role", "admin"), ("portcullis-hasura-role", "admin")]);
    let reply = caddy.send("GET", "/api/orders?limit=5", &headers, None).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, UPSTREAM_BODY), "{reply:?}\n{}", caddy.log());
    let got = upstream.last();
    assert_eq!(got.path, "/api/orders?limit=5");
    assert_eq!(got.all("x-user-id"), ["kp_alice"]);
    assert_eq!(got.all("x-user-email"), ["kp_alice@example.com"]);
    for name in ["x-hasura-role", "x-hasura-org-id", "apikey", "authorization", "portcullis-hasura-role"] {
        assert!(got.header(name).is_none(), "{name} stripped: {got:?}");
    }

    upstream.clear();
    let token = setup.hasura_token("kp_bob");
    let query = r#"{"query":"{ notes { id } }"}"#;
    let headers = with_spoofed(&[("authorization", &token), ("content-type", "application/json")]);
    let reply = caddy.send("POST", "/v1/graphql", &headers, Some(query)).await;
    assert_eq!(reply.status, 200, "{reply:?}\n{}", caddy.log());
    let got = upstream.last();
    assert_eq!((got.method.as_str(), got.body.as_slice()), ("POST", query.as_bytes()));
    assert_eq!(got.all("x-hasura-admin-secret"), [ADMIN_SECRET]);
    assert_eq!(got.all("x-hasura-role"), ["user"]);
    assert_eq!(got.all("x-hasura-user-id"), ["kp_bob"]);
    for name in ["x-hasura-org-id", "apikey", "authorization", "x-user-id", "x-user-email"] {
        assert!(got.header(name).is_none(), "{name} stripped: {got:?}");
    }

    upstream.clear();
    let reply = caddy.send("GET", "/api/orders", &[], None).await;
    assert_eq!((reply.status, reply.json()["error"].as_str()), (401, Some("unauthorized")), "{reply:?}");
    assert!(reply.header("www-authenticate").is_some_and(|value| value.starts_with("Bearer")), "{reply:?}");
    let reply = caddy.send("GET", "/elsewhere", &[("authorization", &token)], None).await;
    assert_eq!((reply.status, reply.json()["error"].as_str()), (403, Some("forbidden")), "{reply:?}");
    setup.upstream_untouched();
}

/// Traefik is not run here: its dynamic config is checked for the shape its
/// documentation gives (and the request-level test above asks as it asks).
#[test]
fn the_shipped_traefik_config_strips_what_it_copies() {
    let config: Value = serde_saphyr::from_str(&read("examples/traefik/dynamic.yaml")).unwrap();
    let auth = &config["http"]["middlewares"]["portcullis"]["forwardAuth"];
    assert!(auth["address"].as_str().unwrap().ends_with("/forward-auth"), "{auth}");
    assert_eq!(auth["trustForwardHeader"], false);
    let regex = auth["authResponseHeadersRegex"].as_str().unwrap();
    for part in ["(?i)", "x-hasura-.*", "x-user-.*", "apikey", "authorization", "^", "$"] {
        assert!(regex.contains(part), "{part} in {regex}");
    }
    for router in config["http"]["routers"].as_object().unwrap().values() {
        assert_eq!(router["middlewares"], json!(["portcullis"]), "every router asks portcullis: {router}");
    }
}

// ---------------------------------------------------------------------------
// The listener: HTTP/1.1, h2c and TLS, with curl (a client nobody here wrote).

fn curl(args: &[&str]) -> (String, String) {
    let output = Command::new("curl")
        .args(["-s", "-S", "-o", "-", "-w", "\n%{http_code} %{http_version}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or_default();
    (status.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_speaks_http1_h2c_and_tls_on_one_port() {
    let setup = Setup::start("envoy-http").await;
    let base = format!("http://{}", setup.http_authz());
    let token = format!("authorization: {}", setup.token("kp_alice"));
    let url = format!("{base}/envoy/api/orders");
    let answers = tokio::task::spawn_blocking(move || {
        [curl(&["-H", &token, &url]), curl(&["--http2-prior-knowledge", "-H", &token, &url]), curl(&[&url])]
    })
    .await
    .unwrap();
    assert_eq!(answers[0].0, "200 1.1");
    assert_eq!(answers[1].0, "200 2");
    assert_eq!(answers[2].0, "401 1.1");
    // Outside the prefix: not a question.
    let (status, _) = tokio::task::spawn_blocking(move || curl(&[&format!("{base}/api/orders")])).await.unwrap();
    assert_eq!(status, "404 1.1");

    // TLS from listen.tls: ALPN offers h2 and http/1.1.
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let config = example_config("envoy-http", &setup.issuer)
        .replace("listen:\n", &format!("listen:\n  tls: {{ cert: {}, key: {} }}\n", cert.display(), key.display()));
    let tls = start_ready(&config).await;
    let port = tls.http_authz_addr.unwrap().port();
    let token = format!("authorization: {}", setup.token("kp_alice"));
    let answers = tokio::task::spawn_blocking(move || {
        let url = format!("https://localhost:{port}/envoy/api/orders");
        let resolve = format!("localhost:{port}:127.0.0.1");
        let ca = cert.display().to_string();
        [
            curl(&["--cacert", &ca, "--resolve", &resolve, "-H", &token, &url]),
            curl(&["--http1.1", "--cacert", &ca, "--resolve", &resolve, "-H", &token, &url]),
        ]
    })
    .await
    .unwrap();
    assert_eq!(answers[0].0, "200 2", "curl negotiates h2");
    assert_eq!(answers[1].0, "200 1.1", "and http/1.1 when it asks for it");
}

#[tokio::test]
async fn oversized_requests_are_refused_by_the_view_not_guessed() {
    let setup = Setup::start("envoy-http").await;
    let addr = setup.http_authz();
    let big = "v".repeat(100 * 1024);
    let reply = ask(addr, "/envoy/api/orders", &[("x-big", &big)]).await;
    assert_eq!(
        (reply.status, reply.json()["error"].as_str()),
        (431, Some("request_header_fields_too_large")),
        "{reply:?}"
    );
}

/// docs/proxies.md shows each shipped proxy config whole, as shipped.
#[test]
fn the_proxy_docs_show_the_shipped_configs() {
    let doc = read("docs/proxies.md");
    for file in ["envoy-http/envoy.yaml", "nginx/nginx.conf", "traefik/dynamic.yaml", "caddy/Caddyfile"] {
        let shipped = read(&format!("examples/{file}"));
        assert!(doc.contains(shipped.trim_end()), "docs/proxies.md shows examples/{file} as shipped");
    }
}

/// The Envoy bootstraps scripts/envoy_faces.py measures with are valid to the pinned Envoy
/// (the script runs no test of its own; a broken mode would only show in a manual run).
#[test]
fn the_envoy_faces_script_bootstraps_validate() {
    let dir = tempfile::tempdir().unwrap();
    for mode in ["none", "grpc", "http1", "h2c"] {
        let program = format!(
            "import sys; sys.path.insert(0, 'scripts'); import envoy_faces; print(envoy_faces.bootstrap('{mode}', 10000, 10001, 50051, 9191))"
        );
        let output = Command::new("python3").args(["-c", &program]).current_dir(repo()).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let file = dir.path().join(format!("{mode}.yaml"));
        std::fs::write(&file, &output.stdout).unwrap();
        let validated =
            Command::new(common::tools::envoy()).args(["--mode", "validate", "-c"]).arg(&file).output().unwrap();
        let text =
            String::from_utf8_lossy(&validated.stdout).into_owned() + &String::from_utf8_lossy(&validated.stderr);
        assert!(validated.status.success() && text.contains("OK"), "{mode}: {text}");
    }
}
