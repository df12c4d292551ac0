//! The gateway binary: flags, logging, signals; everything else is the
//! library's [`gateway::serve`].

use clap::Parser;
use serving::telemetry::LogArgs;

/// gRPC-Web and gRPC in front of auth-service and task-service.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
struct Cli {
    #[command(flatten)]
    config: gateway::Config,

    #[command(flatten)]
    logs: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.logs.init();
    let listener = serving::transport::bind(cli.config.listen).await?;
    let shutdown = serving::shutdown::on_signal();
    gateway::serve(cli.config, listener, shutdown).await
}
