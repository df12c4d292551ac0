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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.logs.init();
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
    }
}
