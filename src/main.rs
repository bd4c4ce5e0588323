use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use portcullis::cli::{Cli, Command, EXIT_INVALID, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, TokenCommand};
use portcullis::config::Secrets;
use portcullis::keys::redact_url;
use portcullis::reload::Reloader;
use portcullis::telemetry::{LogFormat, TraceSettings};
use portcullis::{admin, dev, explain, policy, policy_test, probe, server, telemetry};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are not errors; everything else clap refuses is a usage error.
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    ExitCode::from(runtime.block_on(run(cli.command, cli.log_format)))
}

async fn run(command: Command, format: LogFormat) -> u8 {
    // Policy tests print their own report; key-loading lines would only clutter it.
    if !matches!(command, Command::Serve(_) | Command::Test(_)) {
        telemetry::init(format, None);
    }
    match command {
        Command::Serve(args) => serve(&args.config.config, args.watch, format).await,
        Command::CheckConfig(args) => check_config(&args.config.config, args.strict, args.no_secrets),
        Command::Dev(args) => dev::run(args, terminated()).await,
        Command::Token(TokenCommand::Verify(args)) => explain::run(args).await,
        Command::Admin(args) => admin::client::run(args).await,
        Command::Health(args) => probe::run(args).await,
        Command::Schema => {
            print!("{}", portcullis::config::json_schema::json_schema_text());
            EXIT_OK
        }
        Command::Test(args) => policy_test::run(&args.files, args.junit.as_deref()).await,
    }
}

/// Loads the policy first: its `telemetry` section decides what the
/// subscriber exports. Config problems are printed as a report for a person,
/// or, with `--log-format json`, logged as one JSON line like everything else,
/// so a collector never sees a line it cannot parse.
async fn serve(path: &std::path::Path, watch: bool, format: LogFormat) -> u8 {
    let policy = match policy::load_file(path) {
        Ok(policy) => policy,
        Err(err) => {
            match format {
                LogFormat::Json => {
                    telemetry::init(format, None);
                    tracing::error!(problems = err.problems.len(), "not starting: {}", err.one_line());
                }
                LogFormat::Text => eprint!("{err}"),
            }
            return EXIT_INVALID;
        }
    };
    let traces = TraceSettings::resolve(policy.telemetry.as_ref(), |name| std::env::var(name).ok());
    let dropped = policy.runtime.metrics.spans_dropped.clone();
    let telemetry = telemetry::init(format, traces.as_ref().map(|settings| (settings, dropped)));
    if let Some(settings) = &traces {
        tracing::info!(endpoint = %redact_url(&settings.endpoint), sample_ratio = settings.sample_ratio, "exporting traces");
    }
    for warning in &policy.warnings {
        tracing::warn!("config warning: {warning}");
    }
    let options = server::ServeOptions {
        config_path: Some(path.to_path_buf()),
        watch,
        tracing: telemetry.tracing.clone(),
        ..Default::default()
    };
    let code = match server::start(policy, options, terminated()).await {
        Ok(running) => {
            reload_on_hangup(Arc::clone(&running.reloader));
            match running.wait().await {
                Ok(()) => {
                    tracing::info!("stopped");
                    EXIT_OK
                }
                Err(err) => {
                    tracing::error!("{err}");
                    EXIT_RUNTIME
                }
            }
        }
        Err(err) => {
            tracing::error!("{err}");
            EXIT_RUNTIME
        }
    };
    telemetry.shutdown().await;
    code
}

/// Warnings go to stderr after the summary; `--strict` makes them the problems of an invalid config.
fn check_config(path: &std::path::Path, strict: bool, no_secrets: bool) -> u8 {
    let loaded = match no_secrets {
        true => policy::load_file_without_secrets(path, &Secrets::Placeholders),
        false => policy::load_file(path),
    };
    match loaded {
        Ok(policy) if strict && !policy.warnings.is_empty() => {
            let source_name = path.display().to_string();
            eprint!("{}", portcullis::config::ConfigError { source_name, problems: policy.warnings });
            EXIT_INVALID
        }
        Ok(policy) => {
            print!("{}", policy::summary(&policy));
            for warning in &policy.warnings {
                eprintln!("warning: {warning}");
            }
            EXIT_OK
        }
        Err(err) => {
            eprint!("{err}");
            EXIT_INVALID
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT: stop accepting, drain, exit 0.
async fn terminated() {
    let name = wait_for_termination().await;
    tracing::info!(signal = name, "shutting down: draining in-flight checks");
}

#[cfg(unix)]
async fn wait_for_termination() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install SIGTERM/SIGINT handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait_for_termination() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "ctrl-c"
}

/// SIGHUP reloads the policy, exactly like the admin `ReloadPolicy`.
fn reload_on_hangup(reloader: Arc<Reloader>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else { return };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                // A refusal is logged by reload() itself, as on every path.
                if let Ok(done) = reloader.reload().await {
                    tracing::info!(generation = done.generation, "reloaded on SIGHUP");
                }
            }
        });
    }
}
