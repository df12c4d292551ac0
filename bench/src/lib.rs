//! The load harness of the todo backend.
//!
//! It drives the real services over real sockets, the way clients do:
//! gRPC straight to a service, or through the gateway as gRPC, gRPC-Web
//! (HTTP/1.1 and HTTP/2) and Connect (protobuf and JSON). A load figure
//! with errors in it is worthless, so every answer's status is checked and
//! failures are reported by code next to the latency and throughput.
//!
//! Reading top-down:
//!
//! - [`client`]: one connection by one [`client::Via`], unary and
//!   server-streaming calls, statuses read from every protocol's framing;
//! - [`load`]: the engine (workers, closed or open loop, HDR histograms)
//!   and the [`load::Outcome`] of a measured window;
//! - [`procstat`]: the services' CPU time, RSS and open files from `/proc`;
//! - [`fixture`]: the accounts and tasks the scenarios use;
//! - [`scenario`]: what one call of each scenario is, and what its answer
//!   must hold;
//! - [`probes`]: WatchTasks fan-out, Logout-to-refusal, anonymous stream
//!   floods and the raw argon2id rate;
//! - [`report`]: `BENCHMARKS.md` from the results of a run.
//!
//! `bench/run.sh` runs the whole benchmark; `bench/tests/smoke.rs` runs
//! every scenario briefly against services started in process.

pub mod client;
pub mod fixture;
pub mod load;
pub mod probes;
pub mod procstat;
pub mod report;
pub mod scenario;

use std::sync::Arc;

use client::{Client, Targets, Via};
use fixture::Fixture;
use load::{Load, Outcome};
use procstat::Processes;
use scenario::{Kind, Standard};

/// `connections` clients by `via`, from `local` when given.
pub async fn clients(
    targets: &Targets,
    via: Via,
    connections: usize,
    local: Option<std::net::IpAddr>,
) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(connections.max(1));
    for _ in 0..connections.max(1) {
        clients.push(Client::connect(targets, via, local).await?);
    }
    Ok(clients)
}

/// Runs scenario `kind` by `via` under `load` and measures it.
#[allow(
    clippy::too_many_arguments,
    reason = "each is one of the command line's flags"
)]
pub async fn run_scenario(
    targets: &Targets,
    fixture: Arc<Fixture>,
    kind: Kind,
    via: Via,
    connections: usize,
    load: &Load,
    page: u32,
    processes: &Processes,
) -> anyhow::Result<Outcome> {
    let clients = clients(targets, via, connections, None).await?;
    let scenario = Arc::new(Standard::new(kind, fixture, page, &clients[0]).await?);
    load::drive(scenario, &clients, load, processes).await
}
