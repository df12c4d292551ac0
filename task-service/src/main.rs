//! The `task-service` binary: flags, logging, then [`task_service::serve`]
//! until SIGTERM/SIGINT, exiting 0 once in-flight calls have drained.

use clap::Parser;
use serving::telemetry::LogArgs;

/// Each user's tasks, behind tokens issued by the auth-service.
#[derive(Debug, Parser)]
#[command(name = "task-service", version, about)]
struct Cli {
    #[command(flatten)]
    config: task_service::Config,

    #[command(flatten)]
    logs: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.logs.init();
    let listener = serving::transport::bind(cli.config.listen).await?;
    task_service::serve(cli.config, listener, serving::shutdown::on_signal()).await
}
