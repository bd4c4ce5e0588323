//! End to end with PostgreSQL: minted tokens' claims drive a row-level-security
//! policy exactly as PostgREST applies them (`SET LOCAL ROLE` from `role`,
//! `request.jwt.claims` from the claims), and each user sees only their rows.
//!
//! Uses Debian's PostgreSQL binaries with a private cluster on a Unix socket in
//! a temp dir. Without them the test says so and passes, except under CI=true
//! (set by CI, whose .ci/run installs PostgreSQL), where it fails.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::Value;

const SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters";

fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

/// A throwaway PostgreSQL cluster, stopped on drop.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    fn start(bin: PathBuf) -> Cluster {
        let dir = tempfile::Builder::new().prefix("pgrls").tempdir_in("/tmp").unwrap();
        // initdb refuses to run as root; Debian's package brings a postgres user.
        let as_postgres = unsafe_is_root();
        if as_postgres {
            let status = Command::new("chown").args(["postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cluster = Cluster { bin, dir, port, as_postgres };
        let data = cluster.dir.path().join("data");
        cluster.run_pg("initdb", &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync"]);
        let options = format!("-p {} -k {} -c listen_addresses=''", port, cluster.dir.path().display());
        cluster.run_pg("pg_ctl", &["-D", data.to_str().unwrap(), "-o", &options, "-w", "-l", "/dev/null", "start"]);
        cluster
    }

    fn run_pg(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let output = if self.as_postgres {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&program).args(args).output()
        } else {
            Command::new(&program).args(args).output()
        }
        .unwrap();
        assert!(output.status.success(), "{tool} failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// Runs SQL as the superuser; returns psql's unaligned, tuples-only output.
    fn sql(&self, script: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "postgres"])
            .args(["-h", self.dir.path().to_str().unwrap(), "-p", &self.port.to_string(), "-c", script])
            .output()
            .unwrap();
        assert!(output.status.success(), "psql: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let program = self.bin.join("pg_ctl");
        let args = ["-D", data.to_str().unwrap(), "-m", "immediate", "stop"];
        let _ = if self.as_postgres {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&program).args(args).output()
        } else {
            Command::new(&program).args(args).output()
        };
    }
}

fn unsafe_is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The claims inside a minted token (its signature is checked elsewhere).
fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// What PostgREST runs per request, then the query, in one transaction.
fn as_request(claims: &Value, query: &str) -> String {
    let role = claims["role"].as_str().unwrap();
    let json = claims.to_string().replace('\'', "''");
    format!(
        "begin; set local role {role}; do $$ begin perform set_config('request.jwt.claims', '{json}', true); end $$; {query}; commit;"
    )
}

#[tokio::test]
async fn row_level_security_sees_each_user_only_their_rows() {
    let Some(bin) = postgres_bin() else {
        assert!(std::env::var_os("CI").is_none(), "PostgreSQL is required under CI (.ci/run installs it)");
        let _ = writeln_stderr("SKIPPED RLS end-to-end: Debian's postgresql is not installed");
        return;
    };
    let key = SigningKey::generate(Algorithm::RS256, "k1");
    let issuer = DevIssuer::start(&[&key]).await.unwrap();
    let config = format!(
        "{LISTEN_ANY}issuers:\n  kinde: {{ issuer: \"{}\", jwks_uri: \"{}\" }}\nbackends:\n  supabase: {{ type: supabase, apikey: pk, mode: remint, signing_key: {SECRET}, allow_anonymous: true }}\nroutes:\n  - match: {{ prefix: /rest/v1/ }}\n    backend: supabase\n",
        issuer.issuer(),
        issuer.jwks_uri()
    );
    let running = start_ready(&config).await;
    let mut client = client(&running).await;

    let cluster = tokio::task::spawn_blocking(move || Cluster::start(bin)).await.unwrap();
    // Supabase's roles and auth.jwt(), and a table whose policy reads the subject
    // as text (auth.uid() would need UUID subjects; Kinde's are kp_...).
    cluster.sql(
        "create role anon nologin; create role authenticated nologin;
         create schema auth;
         create function auth.jwt() returns jsonb language sql stable as
           $$ select coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb $$;
         grant usage on schema auth to anon, authenticated;
         create table notes (id serial primary key, owner text not null, body text not null);
         alter table notes enable row level security;
         create policy own_notes on notes for select to authenticated using (owner = auth.jwt()->>'sub');
         grant select on notes to anon, authenticated;
         insert into notes (owner, body) values
           ('kp_alice', 'alice 1'), ('kp_bob', 'bob 1'), ('kp_alice', 'alice 2');",
    );

    let mut seen = Vec::new();
    for sub in ["kp_alice", "kp_bob"] {
        let token = key.sign(&issuer.claims(sub, "x", 300));
        let value = bearer(&token);
        let response = check(&mut client, request("GET", "/rest/v1/notes", &[("authorization", &value)])).await;
        let ok = assert_allowed(&response);
        let authorization =
            ok.headers.iter().filter_map(|h| h.header.as_ref()).find(|h| h.key == "authorization").unwrap();
        let claims = claims_of(authorization.value.strip_prefix("Bearer ").unwrap());
        assert_eq!(claims["role"], "authenticated");
        let rows = cluster.sql(&as_request(&claims, "select body from notes order by id"));
        seen.push((sub, rows.lines().map(str::to_string).collect::<Vec<_>>()));
    }
    assert_eq!(
        seen,
        vec![("kp_alice", vec!["alice 1".to_string(), "alice 2".to_string()]), ("kp_bob", vec!["bob 1".to_string()])]
    );

    // Anonymous: the minted anon token's role gets no rows from this policy.
    let response = check(&mut client, request("GET", "/rest/v1/notes", &[])).await;
    let ok = assert_allowed(&response);
    let authorization = ok.headers.iter().filter_map(|h| h.header.as_ref()).find(|h| h.key == "authorization").unwrap();
    let anon = claims_of(authorization.value.strip_prefix("Bearer ").unwrap());
    assert_eq!(anon["role"], "anon");
    assert_eq!(cluster.sql(&as_request(&anon, "select count(*) from notes")).trim(), "0");
}

fn writeln_stderr(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "{text}")
}
