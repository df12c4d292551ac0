//! The whole system in one process: `cargo run` at the repository root.
//!
//! It starts the auth-service, the task-service and the gateway on their
//! default ports, on SQLite files in a data folder, so trying the system
//! needs no database server and no second terminal. It only composes the
//! three libraries' `serve(config, listener, shutdown)`, exactly as their
//! own binaries do; production runs those binaries separately, pointed at
//! PostgreSQL and at each other (see `deploy/`).
//!
//! All three listeners are bound before anything starts, so a taken port
//! fails fast and names itself, and port 0 works (tests use it). One
//! SIGTERM or SIGINT stops all three; if one of them fails, the others are
//! stopped too and the process exits non-zero.

use std::{io::Write, net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use serving::{CancellationToken, telemetry::LogArgs};

/// auth-service, task-service and gateway in one process, on SQLite.
#[derive(Debug, Parser)]
#[command(name = "todo-stack", version, about)]
struct Cli {
    /// Folder for the SQLite databases (`auth.db`, `tasks.db`); created if missing.
    #[arg(long, env = "TODO_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,

    /// Address of the auth-service (gRPC).
    #[arg(long, env = "TODO_AUTH_LISTEN", default_value = "127.0.0.1:50051")]
    auth_listen: SocketAddr,

    /// Address of the task-service (gRPC).
    #[arg(long, env = "TODO_TASKS_LISTEN", default_value = "127.0.0.1:50052")]
    tasks_listen: SocketAddr,

    /// Address of the gateway (gRPC-Web and gRPC).
    #[arg(long, env = "TODO_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    gateway_listen: SocketAddr,

    /// A browser origin allowed to call the gateway (repeatable). Without
    /// any, pages on `http://localhost:*` and `http://127.0.0.1:*` may.
    #[arg(
        long = "allowed-origin",
        env = "TODO_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,

    /// The web app served at the gateway's `/` (the built bundle in the
    /// repository's `web/dist` by default).
    #[arg(long, env = "TODO_WEB_ROOT", default_value = DEFAULT_WEB_ROOT)]
    web_root: PathBuf,

    /// Where verification and reset mails go (`smtp://...`); without it
    /// they are written as `.eml` files into `<data-dir>/mail`.
    #[arg(long, env = "TODO_SMTP_URL", hide_env_values = true, value_parser = serving::config::secret)]
    smtp_url: Option<serving::config::SecretString>,

    /// Serve Prometheus metrics of all three at `GET /metrics` on this
    /// address (off without it).
    #[arg(long, env = "TODO_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    logs: LogArgs,

    /// Export spans over OTLP/gRPC to this collector (such as
    /// `http://otel-collector:4317`); off without it.
    #[arg(long, env = "TODO_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

/// The web app as built in this source tree: `cargo run` serves it
/// whatever the working directory.
const DEFAULT_WEB_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/web/dist");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _tracing = cli.logs.init("todo-stack", cli.otlp_endpoint.as_deref());
    {
        use std::os::unix::fs::DirBuilderExt;
        // Readable by this user only, whatever the umask: it holds the
        // databases and the key-encryption key.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cli.data_dir)
            .with_context(|| format!("cannot create the data folder {}", cli.data_dir.display()))?;
    }

    let auth_listener = serving::transport::bind(cli.auth_listen).await?;
    let tasks_listener = serving::transport::bind(cli.tasks_listen).await?;
    let gateway_listener = serving::transport::bind(cli.gateway_listen).await?;
    let auth_addr = auth_listener.local_addr()?;
    let tasks_addr = tasks_listener.local_addr()?;
    let gateway_addr = gateway_listener.local_addr()?;

    // The address a newcomer types (and the README shows) for mail links:
    // a link to 127.0.0.1 would open another origin, without their session.
    let app_url = if gateway_addr.ip().is_loopback() {
        format!("http://localhost:{}", gateway_addr.port())
    } else {
        format!("http://{gateway_addr}")
    };
    let auth = auth_service::Config {
        listen: auth_addr,
        database_url: sqlite_url(&cli.data_dir, "auth.db").into(),
        // The gateway runs on loopback: its x-forwarded-for (the browser's
        // address) is what per-address throttling must see.
        trusted_proxies: vec!["127.0.0.1/32".parse()?, "::1/128".parse()?],
        mail_dir: cli.data_dir.join("mail"),
        key_encryption_key_file: cli.data_dir.join("key-encryption-key"),
        smtp_url: cli.smtp_url,
        // The address a newcomer types (and the README shows): a link to
        // 127.0.0.1 would open another origin, without their session.
        app_url: app_url.clone(),
        ..auth_service::Config::default()
    };
    let tasks = task_service::Config {
        listen: tasks_addr,
        database_url: sqlite_url(&cli.data_dir, "tasks.db").into(),
        auth_url: format!("http://{auth_addr}"),
        ..task_service::Config::default()
    };
    let gateway = gateway::Config {
        listen: gateway_addr,
        auth_url: format!("http://{auth_addr}").parse()?,
        tasks_url: format!("http://{tasks_addr}").parse()?,
        allowed_origins: cli.allowed_origins,
        web_root: Some(cli.web_root),
        ..gateway::Config::default()
    };

    let shutdown = serving::shutdown::on_signal();
    serving::metrics::serve_if(cli.metrics_listen, shutdown.clone()).await?;
    print_banner(&app_url, &cli.data_dir, auth_addr, tasks_addr, gateway_addr);

    let (auth, tasks, gateway) = tokio::join!(
        stop_all_on_error(
            "auth-service",
            auth_service::serve(auth, auth_listener, shutdown.clone()),
            &shutdown
        ),
        stop_all_on_error(
            "task-service",
            task_service::serve(tasks, tasks_listener, shutdown.clone()),
            &shutdown
        ),
        stop_all_on_error(
            "gateway",
            gateway::serve(gateway, gateway_listener, shutdown.clone()),
            &shutdown
        ),
    );
    auth.and(tasks).and(gateway)
}

/// Runs one service; if it fails, cancels `shutdown` so the others stop.
async fn stop_all_on_error(
    name: &str,
    serve: impl Future<Output = anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let result = serve.await.with_context(|| format!("{name} failed"));
    if let Err(error) = &result {
        tracing::error!("{error:#}; stopping the stack");
        shutdown.cancel();
    }
    result
}

fn sqlite_url(data_dir: &std::path::Path, file: &str) -> String {
    format!("sqlite://{}", data_dir.join(file).display())
}

/// Prints where each service listens. A closed stdout is no reason to
/// stop serving, so a failed write is ignored (`println!` would panic).
fn print_banner(
    app_url: &str,
    data_dir: &std::path::Path,
    auth: SocketAddr,
    tasks: SocketAddr,
    gateway: SocketAddr,
) {
    let _ = writeln!(
        std::io::stdout().lock(),
        "\
todo stack (SQLite in {data}/, mail in {data}/mail/)
  web app       {app_url}/
  auth-service  http://{auth}
  task-service  http://{tasks}
  gateway       http://{gateway}  (Connect and JSON, gRPC-Web, gRPC)

Try:
  curl -H 'content-type: application/json' -d '{{}}' http://{gateway}/auth.v1.AuthService/GetJwks
  grpcurl -plaintext {gateway} list
  grpcurl -plaintext -d '{{\"email\":\"ada@example.com\",\"password\":\"correct horse battery staple\"}}' \\
      {gateway} auth.v1.AuthService/Register
  buf curl --protocol grpc --http2-prior-knowledge --data '{{}}' \\
      http://{gateway}/auth.v1.AuthService/GetJwks
Stop with Ctrl-C.",
        data = data_dir.display()
    );
}
