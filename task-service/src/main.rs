//! The `task-service` binary: flags, logging, then [`task_service::serve`]
//! until SIGTERM/SIGINT, exiting 0 once in-flight calls have drained.

use clap::Parser;
use serving::telemetry::{self, LogFormat};

/// Each user's tasks, behind tokens issued by the auth-service.
#[derive(Debug, Parser)]
#[command(name = "task-service", version, about)]
struct Cli {
    #[command(flatten)]
    config: task_service::Config,

    /// Log as human-readable lines or as JSON objects.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let listener = serving::transport::bind(cli.config.listen).await?;
    task_service::serve(cli.config, listener, serving::shutdown::on_signal()).await
}
