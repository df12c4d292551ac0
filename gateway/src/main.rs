//! The gateway binary: flags, logging, signals; everything else is the
//! library's [`gateway::serve`].

use clap::Parser;
use serving::telemetry::{self, LogFormat};

/// gRPC-Web and gRPC in front of auth-service and task-service.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
struct Cli {
    #[command(flatten)]
    config: gateway::Config,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let listener = serving::transport::bind(cli.config.listen).await?;
    let shutdown = serving::shutdown::on_signal();
    gateway::serve(cli.config, listener, shutdown).await
}
