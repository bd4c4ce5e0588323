use std::process::ExitCode;

use clap::Parser;

use portcullis::cli::{Cli, Command, EXIT_INVALID, EXIT_OK, EXIT_RUNTIME, TokenCommand};
use portcullis::{admin, config, dev, explain, server, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    ExitCode::from(runtime.block_on(run(cli.command)))
}

async fn run(command: Command) -> u8 {
    match command {
        Command::Serve(args) => serve(&args.config.config, args.watch).await,
        Command::CheckConfig(args) => check_config(&args.config),
        Command::Dev(args) => dev::run(args).await,
        Command::Token(TokenCommand::Verify(args)) => explain::run(args).await,
        Command::Admin(args) => admin::client::run(args).await,
    }
}

async fn serve(path: &std::path::Path, watch: bool) -> u8 {
    let config = match config::load_file(path) {
        Ok(config) => config,
        Err(err) => {
            eprint!("{err}");
            return EXIT_INVALID;
        }
    };
    let options = server::ServeOptions { config_path: Some(path.to_path_buf()), watch, ..Default::default() };
    let running = match server::start(config, options).await {
        Ok(running) => running,
        Err(err) => {
            tracing::error!("{err}");
            return EXIT_RUNTIME;
        }
    };
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

fn check_config(path: &std::path::Path) -> u8 {
    match config::load_file(path) {
        Ok(config) => {
            print!("{}", config::summary(&config));
            EXIT_OK
        }
        Err(err) => {
            eprint!("{err}");
            EXIT_INVALID
        }
    }
}
