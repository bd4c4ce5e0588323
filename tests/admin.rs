//! The Admin API over real gRPC: authentication, port separation, status,
//! rotation with RefreshKeys, reloads (good, broken, SIGHUP, under load).

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use portcullis::proto::admin::v1::admin_client::AdminClient;
use portcullis::proto::admin::v1::{GetStatusRequest, RefreshKeysRequest, ReloadPolicyRequest};
use tonic::Request;
use tonic::transport::Channel;

const TOKEN: &str = "admin-token-for-tests-0123";

fn admin_block() -> String {
    format!("admin:\n  token: {TOKEN}\n")
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

fn authed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request
}

/// A config file on disk (reloads re-read it) and the server started from it.
struct FromFile {
    file: tempfile::NamedTempFile,
    running: portcullis::server::Running,
}

impl FromFile {
    async fn start(text: &str) -> FromFile {
        let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(file.path(), text).unwrap();
        let config = portcullis::policy::load_file(file.path()).unwrap();
        let options =
            portcullis::server::ServeOptions { config_path: Some(file.path().to_path_buf()), ..Default::default() };
        let running = portcullis::server::start(config, options, std::future::pending()).await.unwrap();
        wait_until("ready", || running.readiness.is_ready()).await;
        FromFile { file, running }
    }

    fn rewrite(&self, text: &str) {
        std::fs::write(self.file.path(), text).unwrap();
    }

    async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(channel(self.running.admin_addr).await)
    }
}

fn one_issuer(issuer: &DevIssuer, routes: &str) -> String {
    format!(
        "{LISTEN_ANY}{}issuers:\n  a:\n    issuer: {}\n    jwks_uri: {}\nroutes:\n{routes}",
        admin_block(),
        issuer.issuer(),
        issuer.jwks_uri()
    )
}

#[tokio::test]
async fn every_admin_call_needs_the_token_and_admin_is_not_on_the_authz_port() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let server = FromFile::start(&one_issuer(&issuer, "  - match: { prefix: / }\n")).await;
    let mut admin = server.admin().await;

    let missing = admin.get_status(GetStatusRequest {}).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    let mut wrong = Request::new(ReloadPolicyRequest {});
    wrong.metadata_mut().insert("authorization", "Bearer admin-token-for-tests-0124".parse().unwrap());
    assert_eq!(admin.reload_policy(wrong).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    let mut refresh = Request::new(RefreshKeysRequest { issuer: String::new() });
    refresh.metadata_mut().insert("authorization", "Bearer ".parse().unwrap());
    assert_eq!(admin.refresh_keys(refresh).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert!(admin.get_status(authed(GetStatusRequest {})).await.is_ok());

    // The authz port does not serve the Admin API at all.
    let mut on_authz = AdminClient::new(channel(server.running.authz_addr).await);
    let err = on_authz.get_status(authed(GetStatusRequest {})).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn status_lists_issuers_keys_and_cache_counters() {
    let k1 = SigningKey::generate(Algorithm::RS256, "k1");
    let k2 = SigningKey::generate(Algorithm::EdDSA, "k2");
    let issuer = DevIssuer::start(&[&k1, &k2]).await.unwrap();
    let server = FromFile::start(&one_issuer(&issuer, "  - match: { prefix: / }\n")).await;
    let mut client = client(&server.running).await;
    let token = k1.sign(&issuer.claims("u", "x", 60));
    assert_allowed(&check_token(&mut client, "/", &token).await);
    assert_allowed(&check_token(&mut client, "/", &token).await);

    let status = server.admin().await.get_status(authed(GetStatusRequest {})).await.unwrap().into_inner();
    assert_eq!(status.policy_generation, 1);
    assert!(status.ready);
    let a = &status.issuers[0];
    assert_eq!((a.name.as_str(), a.issuer.as_str()), ("a", issuer.issuer()));
    assert_eq!(a.key_ids, vec!["k1".to_string(), "k2".to_string()]);
    assert!(a.last_refresh.is_some() && a.last_error.is_empty() && a.has_keys);
    assert_eq!(a.jwks_uri, issuer.jwks_uri());
    let cache = status.token_cache.unwrap();
    assert_eq!((cache.entries, cache.hits, cache.misses), (1, 1, 1));
}

#[tokio::test]
async fn refresh_keys_applies_a_rotation_immediately() {
    let old = SigningKey::generate(Algorithm::RS256, "old");
    let new = SigningKey::generate(Algorithm::ES256, "new");
    let issuer = DevIssuer::start(&[&old]).await.unwrap();
    let server = FromFile::start(&one_issuer(&issuer, "  - match: { prefix: / }\n")).await;
    let mut client = client(&server.running).await;
    let old_token = old.sign(&issuer.claims("u", "x", 300));
    assert_allowed(&check_token(&mut client, "/", &old_token).await); // cached now

    issuer.set_keys(&[&new]);
    let mut admin = server.admin().await;
    let unknown = admin.refresh_keys(authed(RefreshKeysRequest { issuer: "nope".into() })).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let refreshed = admin.refresh_keys(authed(RefreshKeysRequest { issuer: "a".into() })).await.unwrap().into_inner();
    assert_eq!(refreshed.issuers[0].key_ids, vec!["new".to_string()]);

    // No waiting for rate limits or TTLs: new key valid, removed key (and its cached token) invalid.
    assert_allowed(&check_token(&mut client, "/", &new.sign(&issuer.claims("u", "x", 300))).await);
    assert_invalid_token(&check_token(&mut client, "/", &old_token).await, "no key with kid \"old\"");
    let status = admin.get_status(authed(GetStatusRequest {})).await.unwrap().into_inner();
    assert_eq!(status.token_cache.unwrap().entries, 1, "the old key's entry was purged");
}

#[tokio::test]
async fn reload_adds_an_issuer_and_a_route_and_rejects_broken_files() {
    let ka = SigningKey::generate(Algorithm::RS256, "ka");
    let kb = SigningKey::generate(Algorithm::ES256, "kb");
    let a = DevIssuer::start(&[&ka]).await.unwrap();
    let b = DevIssuer::start(&[&kb]).await.unwrap();
    let server = FromFile::start(&one_issuer(&a, "  - match: { prefix: /a/ }\n    issuers: [a]\n")).await;
    let mut client = client(&server.running).await;
    let token_b = kb.sign(&b.claims("u", "x", 300));
    assert_denied(&check_token(&mut client, "/b/x", &token_b).await, 403);

    let issuers_a_b = format!(
        "{LISTEN_ANY}{}issuers:\n  a: {{ issuer: \"{}\", jwks_uri: \"{}\" }}\n  b: {{ issuer: \"{}\", jwks_uri: \"{}\" }}\n",
        admin_block(),
        a.issuer(),
        a.jwks_uri(),
        b.issuer(),
        b.jwks_uri()
    );
    let with_b = format!(
        "{issuers_a_b}routes:\n  - match: {{ prefix: /a/ }}\n    issuers: [a]\n  - match: {{ prefix: /b/ }}\n    issuers: [b]\n"
    );
    server.rewrite(&with_b);
    let mut admin = server.admin().await;
    let reloaded = admin.reload_policy(authed(ReloadPolicyRequest {})).await.unwrap().into_inner();
    assert_eq!(reloaded.policy_generation, 2);
    // The new policy's warnings come back with the answer: neither issuer checks aud.
    let warned: Vec<&str> = reloaded.warnings.iter().filter_map(|warning| warning.split(": ").next()).collect();
    assert_eq!(warned, ["issuers.a.audiences", "issuers.b.audiences"], "{:?}", reloaded.warnings);
    assert_allowed(&check_token(&mut client, "/b/x", &token_b).await);
    assert_eq!(a.jwks_fetches(), 1, "the unchanged issuer kept its keys: no refetch");

    // A broken file: every problem reported with its path, old policy kept.
    server.rewrite(&format!(
        "{LISTEN_ANY}{}issuers:\n  a: {{ issuer: {}, jwks_uri: {}, audience: typo }}\nroutes:\n  - match: {{ prefix: nope }}\n",
        admin_block(),
        a.issuer(),
        a.jwks_uri()
    ));
    let err = admin.reload_policy(authed(ReloadPolicyRequest {})).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("issuers.a.audience: unknown field"), "{}", err.message());
    assert!(err.message().contains("routes[0].match.prefix: must start with '/'"), "{}", err.message());
    assert_allowed(&check_token(&mut client, "/b/x", &token_b).await);

    // A new issuer whose keys cannot be fetched is rejected too.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    server.rewrite(&format!(
        "{issuers_a_b}  c: {{ issuer: \"http://127.0.0.1:{dead}\", jwks_uri: \"http://127.0.0.1:{dead}/jwks\", refresh: {{ fetch_timeout_ms: 500 }} }}\nroutes:\n  - match: {{ prefix: / }}\n"
    ));
    let err = admin.reload_policy(authed(ReloadPolicyRequest {})).await.unwrap_err();
    assert!(err.message().contains("issuers.c: first key fetch failed"), "{}", err.message());
    let status = admin.get_status(authed(GetStatusRequest {})).await.unwrap().into_inner();
    assert_eq!(status.policy_generation, 2, "failed reloads change nothing");
    assert_allowed(&check_token(&mut client, "/b/x", &token_b).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_concurrent_checks_never_give_a_wrong_decision() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let base = one_issuer(&issuer, "  - match: { prefix: /open/ }\n    action: allow\n  - match: { prefix: / }\n");
    let server = FromFile::start(&base).await;
    let valid = key.sign(&issuer.claims("u", "x", 300));
    let expired = key.sign(&issuer.claims("u", "x", -300));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let decided = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let mut client = client(&server.running).await;
        let (valid, expired, stop, decided) = (valid.clone(), expired.clone(), stop.clone(), decided.clone());
        workers.push(tokio::spawn(async move {
            let mut checked = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (path, token, allowed) = match (checked + worker) % 3 {
                    0 => ("/api", Some(&valid), true),
                    1 => ("/api", Some(&expired), false),
                    _ => ("/open/x", None, true),
                };
                let response = match token {
                    Some(token) => check_token(&mut client, path, token).await,
                    None => check(&mut client, request("GET", path, &[])).await,
                };
                assert_eq!(status_code(&response) == 0, allowed, "{path} {response:?}");
                checked += 1;
                decided.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            checked
        }));
    }
    let mut admin = server.admin().await;
    for round in 0..20u64 {
        // A comment changes the bytes, not the meaning: every decision must stay the same.
        server.rewrite(&format!("{base}# round {round}\n"));
        let done = admin.reload_policy(authed(ReloadPolicyRequest {})).await.unwrap().into_inner();
        assert_eq!(done.policy_generation, round + 2);
        // Let the workers decide on this generation before the next swap.
        let seen = decided.load(std::sync::atomic::Ordering::Relaxed);
        wait_until("checks on the new policy", || decided.load(std::sync::atomic::Ordering::Relaxed) >= seen + 8).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for worker in workers {
        total += worker.await.expect("no worker saw a wrong decision");
    }
    assert!(total > 0);
    assert_eq!(issuer.jwks_fetches(), 1, "reloads of an unchanged issuer never refetch");
}

#[test]
fn an_unprotected_admin_port_must_be_loopback() {
    let text = "listen: { admin: 0.0.0.0:50052 }\nissuers: {}\nroutes: []\n";
    let err = portcullis::policy::parse_str(text, "t").unwrap_err().to_string();
    assert!(
        err.contains("admin.token: required because listen.admin (0.0.0.0:50052) is not a loopback address"),
        "{err}"
    );
    let short = "listen: { admin: 0.0.0.0:50052 }\nadmin: { token: short }\nissuers: {}\nroutes: []\n";
    let err = portcullis::policy::parse_str(short, "t").unwrap_err().to_string();
    assert!(err.contains("admin.token: use at least 16 characters"), "{err}");
}

#[tokio::test]
async fn grpcurl_uses_reflection_on_the_admin_port() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let server = FromFile::start(&one_issuer(&issuer, "  - match: { prefix: / }\n")).await;
    let grpcurl = tools::go_tool("grpcurl");
    let addr = server.running.admin_addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        let list = std::process::Command::new(&grpcurl).args(["-plaintext", &addr, "list"]).output().unwrap();
        let status = std::process::Command::new(&grpcurl)
            .args([
                "-plaintext",
                "-H",
                &format!("authorization: Bearer {TOKEN}"),
                &addr,
                "portcullis.admin.v1.Admin/GetStatus",
            ])
            .output()
            .unwrap();
        (String::from_utf8_lossy(&list.stdout).into_owned(), String::from_utf8_lossy(&status.stdout).into_owned())
    })
    .await
    .unwrap();
    assert!(
        output.0.contains("portcullis.admin.v1.Admin") && output.0.contains("grpc.health.v1.Health"),
        "{}",
        output.0
    );
    let status: serde_json::Value = serde_json::from_str(&output.1).unwrap();
    assert_eq!(status["policyGeneration"], "1");
}

#[tokio::test]
async fn a_reload_cannot_drop_the_token_of_a_non_loopback_admin_port() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let on_all_interfaces = |admin: &str| {
        format!(
            "listen: {{ authz: 127.0.0.1:0, admin: 0.0.0.0:0, http: 127.0.0.1:0 }}\n{admin}issuers:\n  a: {{ issuer: \"{}\", jwks_uri: \"{}\" }}\nroutes:\n  - match: {{ prefix: / }}\n",
            issuer.issuer(),
            issuer.jwks_uri()
        )
    };
    let server = FromFile::start(&on_all_interfaces(&admin_block())).await;
    // The file now says loopback and no token; the bound port is still 0.0.0.0.
    server.rewrite(&on_all_interfaces("").replace("admin: 0.0.0.0:0", "admin: 127.0.0.1:0"));
    let mut admin = AdminClient::new(channel(server.running.admin_addr).await);
    let err = admin.reload_policy(authed(ReloadPolicyRequest {})).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let required = "admin.token: required because listen.admin (0.0.0.0:0) is not a loopback address";
    assert!(err.message().contains(required), "{}", err.message());
    let missing = admin.get_status(GetStatusRequest {}).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated, "the token still applies");
}

#[tokio::test]
async fn reloads_work_while_an_existing_issuer_is_down() {
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let up = DevIssuer::start(&[&key]).await.unwrap();
    let down = DevIssuer::start(&[&key]).await.unwrap();
    down.set_up(false);
    let config = |routes: &str| {
        format!(
            "{LISTEN_ANY}{}issuers:\n  up: {{ issuer: \"{}\", jwks_uri: \"{}\" }}\n  down: {{ issuer: \"{}\", jwks_uri: \"{}\" }}\nroutes:\n{routes}",
            admin_block(),
            up.issuer(),
            up.jwks_uri(),
            down.issuer(),
            down.jwks_uri()
        )
    };
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), config("  - match: { prefix: /up/ }\n    issuers: [up]\n")).unwrap();
    let loaded = portcullis::policy::load_file(file.path()).unwrap();
    let options =
        portcullis::server::ServeOptions { config_path: Some(file.path().to_path_buf()), ..Default::default() };
    let running = portcullis::server::start(loaded, options, std::future::pending()).await.unwrap();
    wait_until("the up issuer's keys", || running.readiness.is_ready()).await;
    std::fs::write(
        file.path(),
        config("  - match: { prefix: /up/ }\n    issuers: [up]\n  - match: { prefix: /open/ }\n    action: allow\n"),
    )
    .unwrap();
    let mut admin = AdminClient::new(channel(running.admin_addr).await);
    let done = admin.reload_policy(authed(ReloadPolicyRequest {})).await.unwrap().into_inner();
    assert_eq!(done.policy_generation, 2, "an IdP outage does not block unrelated policy changes");
}
