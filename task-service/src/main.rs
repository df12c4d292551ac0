//! The `task-service` binary: flags, logging, then [`task_service::serve`]
//! until SIGTERM/SIGINT, exiting 0 once in-flight calls have drained.

/// mimalloc, not the system allocator: a call allocates a few dozen small,
/// short-lived buffers, and glibc's malloc and free were 18% of a GetTask's
/// instructions (see BENCHMARKS.md). The auth-service keeps the system
/// allocator: its memory formula (argon2id blocks, SECURITY.md I6) is
/// held and tested with it, and mimalloc overshot it by 4.5 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

    /// Export spans over OTLP/gRPC to this collector (such as
    /// `http://otel-collector:4317`); off without it.
    #[arg(long, env = "TASK_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _tracing = cli.logs.init("task-service", cli.otlp_endpoint.as_deref());
    let listener = serving::transport::bind(cli.config.listen).await?;
    task_service::serve(cli.config, listener, serving::shutdown::on_signal()).await
}
