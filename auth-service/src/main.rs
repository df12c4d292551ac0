//! `auth-service`: parses flags, starts logging, and serves until SIGTERM.

use clap::{Parser, Subcommand};
use serving::telemetry::LogArgs;

/// The identity service of the todo backend (gRPC: auth.v1.AuthService).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: auth_service::Config,

    #[command(flatten)]
    logs: LogArgs,

    /// Export spans over OTLP/gRPC to this collector (such as
    /// `http://otel-collector:4317`); off without it.
    #[arg(long, env = "AUTH_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Make a new signing key the active one. Tokens signed by the old key
    /// stay valid until they expire; running replicas switch within a minute.
    RotateKey,
    /// Seal every secret in the database again with
    /// `--key-encryption-key-file`, opening them with it or with
    /// `--previous-key-encryption-key-file`. Nobody is signed out.
    RotateKek,
}

#[allow(
    clippy::print_stdout,
    reason = "the rotate commands print their result"
)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _tracing = cli.logs.init("auth-service", cli.otlp_endpoint.as_deref());
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = serving::transport::bind(cli.config.listen).await?;
            auth_service::serve(cli.config, listener, serving::shutdown::on_signal()).await
        }
        Command::RotateKey => {
            let kid = auth_service::rotate_key(&cli.config).await?;
            println!("new signing key {kid} is active");
            Ok(())
        }
        Command::RotateKek => {
            let resealed = auth_service::rotate_kek(&cli.config).await?;
            println!("{resealed} secret(s) sealed with the new key-encryption key");
            Ok(())
        }
    }
}
