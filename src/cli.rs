//! The command line and its exit codes: 0 ok, 1 invalid config or input (a
//! denied token for `token verify`), 2 runtime failure (the IdP or a running
//! instance could not be reached), 64 usage error (an unknown flag, a missing
//! argument). Usage errors have their own code so a script that reads 2 as "the
//! IdP is down" (`admin refresh`) never mistakes a typo for an outage.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

pub const EXIT_OK: u8 = 0;
pub const EXIT_INVALID: u8 = 1;
pub const EXIT_RUNTIME: u8 = 2;
/// sysexits.h `EX_USAGE`.
pub const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Envoy ext_authz v3 service: JWT verification and backend headers at the edge"
)]
pub struct Cli {
    /// Log line format (stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service.
    Serve(ServeArgs),
    /// Validate a config, print a summary and any warnings; on error list every problem with its YAML path.
    CheckConfig(CheckConfigArgs),
    /// Zero-setup demo: an embedded issuer, the service wired to it, sample tokens and commands.
    Dev(DevArgs),
    /// Token tools.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Talk to a running instance's Admin API.
    Admin(AdminArgs),
    /// Ask a running instance whether it is ready (grpc.health.v1 SERVING) or, with --live, alive (exit 0, else 1).
    Health(HealthArgs),
    /// Print the JSON Schema of the config file (for editor completion and CI checks).
    Schema,
    /// Run policy tests (YAML test files) against their config, with no IdP and no secrets.
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Test files (see docs/testing-policies.md).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Also write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Liveness instead of readiness: GET /healthz on the HTTP port (--http), 200 when the
    /// process answers, whatever the IdPs do. What a container HEALTHCHECK should ask: a
    /// restart cannot bring an IdP's keys back.
    #[arg(long, conflicts_with_all = ["service", "ca", "cert", "key", "server_name"])]
    pub live: bool,
    /// The HTTP port (listen.http) that --live asks.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090", requires = "live")]
    pub http: String,
    /// The authz (or admin) port to ask.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// The health service name ("" is the whole process; envoy.service.auth.v3.Authorization the authz service).
    #[arg(long, default_value = "")]
    pub service: String,
    /// Connect over TLS, trusting this CA (PEM).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --key.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; needs --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// The name the server certificate must carry (default: the host of --addr).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Reload the policy when the config file changes (polled, debounced).
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Admin API address (listen.admin).
    #[arg(
        long,
        env = "PORTCULLIS_ADMIN_ADDR",
        hide_env_values = true,
        default_value = "127.0.0.1:50052",
        global = true
    )]
    pub addr: String,
    /// admin.token of that instance.
    #[arg(long, env = "PORTCULLIS_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Policy generation, readiness, token cache and per-issuer key state.
    Status {
        /// `text` for people, `json` for scripts (the GetStatus response's fields).
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Fetch keys now (one issuer, or all), bypassing rate limits.
    Refresh {
        /// Issuer name from the config; omit for all.
        issuer: Option<String>,
    },
    /// Re-read and validate the config file, then swap it in.
    Reload,
    /// Revoke an issuer's tokens for a subject issued up to now (or --issued-before), on every replica.
    RevokeSubject {
        /// Issuer name from the config.
        issuer: String,
        /// The `sub` of the tokens to revoke.
        subject: String,
        /// Unix seconds; tokens with `iat` at or before it are revoked (default: now).
        #[arg(long)]
        issued_before: Option<i64>,
    },
    /// Revoke one token by its `jti`, until its `exp`.
    RevokeToken {
        /// Issuer name from the config.
        issuer: String,
        jti: String,
        /// The token's `exp` in Unix seconds (default: now + revocation.max_token_lifetime_seconds).
        #[arg(long)]
        expires: Option<i64>,
    },
    /// List the revocations in force (optionally one issuer's).
    Revocations { issuer: Option<String> },
    /// Remove a subject's revocation (or a token's, with --jti).
    Unrevoke {
        issuer: String,
        /// The subject whose cutoff is removed.
        #[arg(required_unless_present = "jti", conflicts_with = "jti")]
        subject: Option<String>,
        /// The jti to take off the denylist.
        #[arg(long)]
        jti: Option<String>,
    },
}

impl AdminCommand {
    pub fn name(&self) -> &'static str {
        match self {
            AdminCommand::Status { .. } => "status",
            AdminCommand::Refresh { .. } => "refresh",
            AdminCommand::Reload => "reload",
            AdminCommand::RevokeSubject { .. } => "revoke-subject",
            AdminCommand::RevokeToken { .. } => "revoke-token",
            AdminCommand::Revocations { .. } => "revocations",
            AdminCommand::Unrevoke { .. } => "unrevoke",
        }
    }
}

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Treat warnings as errors (exit 1), e.g. in CI.
    #[arg(long)]
    pub strict: bool,
    /// Read no `${NAME}` or `${file:...}` value (and no TLS file): list them as
    /// not checked and validate everything else (CI, a laptop).
    #[arg(long)]
    pub no_secrets: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Config file.
    #[arg(long, short, env = "PORTCULLIS_CONFIG", hide_env_values = true, default_value = "portcullis.yaml")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address of the ext_authz gRPC port.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub authz: std::net::SocketAddr,
    /// Address of the HTTP port (/healthz, /readyz).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub http: std::net::SocketAddr,
    /// Address of the Admin API (loopback, no token in dev).
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub admin: std::net::SocketAddr,
    /// Address of the HTTP authorization port (Envoy HTTP ext_authz, nginx / Traefik / Caddy forward auth).
    #[arg(long, default_value = "127.0.0.1:9191")]
    pub http_authz: std::net::SocketAddr,
    /// Run a real Envoy in front (this binary, or `envoy` on PATH when no path is
    /// given); without this flag Envoy is used when it is on PATH.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "")]
    pub envoy: Option<PathBuf>,
    /// Loopback port of that Envoy (0: any free port).
    #[arg(long, default_value_t = 10000)]
    pub envoy_port: u16,
    /// Also save the demo's policy (portcullis.yaml) and Envoy bootstrap (envoy.yaml)
    /// in DIR, as a starting point for your own.
    #[arg(long, value_name = "DIR")]
    pub write_config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<DevCommand>,
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Mint a token the running `portcullis dev` accepts, with your claims (to try `require:` rules).
    Token(DevTokenArgs),
}

#[derive(Debug, Args)]
pub struct DevTokenArgs {
    /// The ext_authz address of the running `portcullis dev` (finds its key in its
    /// instance directory).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub authz: String,
    /// A claim as `name=value`; the value is JSON when it parses (`n=3`,
    /// `roles=["admin"]`), a string otherwise. Repeatable; overrides the defaults.
    #[arg(long = "claim", value_name = "K=V")]
    pub claims: Vec<String>,
    /// A scope for the `scope` claim (space-separated there). Repeatable.
    #[arg(long = "scope", value_name = "S")]
    pub scopes: Vec<String>,
    /// Lifetime in seconds (negative: already expired).
    #[arg(long, default_value_t = 3600, allow_negative_numbers = true)]
    pub ttl: i64,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Explain offline what portcullis would decide for TOKEN on a request.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Request path (with or without query).
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Request host (:authority).
    #[arg(long, default_value = "localhost")]
    pub host: String,
    /// Request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Extra request header as `name:value`; repeatable.
    #[arg(long = "header", value_name = "K:V")]
    pub headers: Vec<String>,
    /// Read no `${NAME}` or `${file:...}` value: explain the decision as far as it
    /// goes without them, naming each secret it needs.
    #[arg(long)]
    pub no_secrets: bool,
    /// The JWT (placed where the matched route's issuer reads tokens). An argument
    /// lands in the shell history: prefer --token-file.
    #[arg(required_unless_present = "token_file", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Read the JWT from this file, or from standard input with `-`
    /// (surrounding whitespace ignored).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}
