//! The gateway binary: flags, logging, signals; everything else is the
//! library's [`gateway::serve`].

/// mimalloc, not the system allocator: a call allocates a few dozen small,
/// short-lived buffers, and glibc's malloc and free were 18% of a GetTask's
/// instructions (see BENCHMARKS.md). The auth-service keeps the system
/// allocator: its memory formula (argon2id blocks, SECURITY.md I6) is
/// held and tested with it, and mimalloc overshot it by 4.5 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

    /// Export spans over OTLP/gRPC to this collector (such as
    /// `http://otel-collector:4317`); off without it.
    #[arg(long, env = "GATEWAY_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _tracing = cli.logs.init("gateway", cli.otlp_endpoint.as_deref());
    let listener = serving::transport::bind(cli.config.listen).await?;
    let shutdown = serving::shutdown::on_signal();
    gateway::serve(cli.config, listener, shutdown).await
}
