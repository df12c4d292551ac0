//! `bench`: the load generator's command line. Each measuring command
//! prints a one-line summary and, with `--results`, appends one JSON record
//! (label, repetition, figures) to a file that `bench report` turns into
//! `BENCHMARKS.md`. See `bench/run.sh` for the whole run.

use std::{
    collections::BTreeMap,
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use bench::{
    client::{Targets, Via},
    fixture::{self, Fixture, Seed},
    load::{self, Backoff, Load, Outcome, code_name},
    probes,
    procstat::Processes,
    report,
    scenario::{Kind, Standard},
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tonic::Code;

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Load generator and benchmark report of the todo backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    auth: http::Uri,
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    tasks: http::Uri,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: http::Uri,
    /// The fixture made by `bench seed`.
    #[arg(long, default_value = "fixture.json")]
    fixture: PathBuf,
    /// Processes to measure, `name=pid` (repeatable).
    #[arg(long = "pid")]
    pids: Vec<String>,
    /// The name of this measurement in the results.
    #[arg(long)]
    label: Option<String>,
    /// Which repetition this is.
    #[arg(long, default_value_t = 1)]
    rep: u32,
    /// Append the JSON record here.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Fail (exit 1) when any call failed, except with the codes given by
    /// `--allow` (documented refusals).
    #[arg(long)]
    expect_no_errors: bool,
    #[arg(long = "allow", value_parser = parse_code)]
    allowed: Vec<Code>,
}

impl Common {
    fn targets(&self) -> Targets {
        Targets {
            auth: self.auth.clone(),
            tasks: self.tasks.clone(),
            gateway: self.gateway.clone(),
        }
    }

    fn fixture(&self) -> anyhow::Result<Arc<Fixture>> {
        Ok(Arc::new(Fixture::load(&self.fixture).with_context(
            || format!("cannot read the fixture {}", self.fixture.display()),
        )?))
    }

    fn processes(&self) -> anyhow::Result<Processes> {
        Processes::parse(&self.pids)
    }
}

#[derive(Args, Clone)]
struct Shape {
    #[arg(long, value_enum, default_value = "direct")]
    via: Via,
    /// Client connections (HTTP/2) or pool (HTTP/1.1: one connection per
    /// call in flight, whatever this says).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Measured time, after the warm-up.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Measured calls instead of a duration.
    #[arg(long)]
    count: Option<u64>,
    /// Open loop: calls per second.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// After a `RESOURCE_EXHAUSTED`, a worker waits this long before its
    /// next call, as a client honouring the refusal's `RetryInfo` does
    /// (the services' in-flight refusals ask for 1s). Without it a refused
    /// worker calls again at once.
    #[arg(long, value_parser = humantime::parse_duration)]
    refusal_backoff: Option<Duration>,
    /// Each back-off is stretched by a random fraction of it up to this
    /// (gRPC's connection back-off uses 0.2), so that callers refused
    /// together come back spread out; 0: all come back together.
    #[arg(long, default_value_t = 0.2, value_parser = fraction)]
    refusal_jitter: f64,
}

/// A number from 0 to 1.
fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("{text:?} is not a number from 0 to 1")),
    }
}

impl Shape {
    fn load(&self, report_every: Option<Duration>) -> Load {
        Load {
            in_flight: self.in_flight,
            duration: self.duration,
            count: self.count,
            rate: self.rate,
            warmup: self.warmup,
            report_every,
            refusal_backoff: self.refusal_backoff.map(|delay| Backoff {
                delay,
                jitter: self.refusal_jitter,
            }),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Register the accounts and create the tasks the scenarios use.
    Seed {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 200)]
        users: usize,
        #[arg(long, default_value_t = 20)]
        tasks_per_user: usize,
        /// Tasks of the list user made through CreateTask (run.sh inserts
        /// the 10,000 straight into PostgreSQL instead).
        #[arg(long, default_value_t = 0)]
        list_user_tasks: usize,
        #[arg(long, default_value_t = 0)]
        deep_user_tasks: usize,
    },
    /// Run one scenario and measure it.
    Load {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        shape: Shape,
        #[arg(long, value_enum)]
        scenario: Kind,
        /// For list-deep: the page to read (of 100 tasks each).
        #[arg(long, default_value_t = 1)]
        page: u32,
        /// Soak: report (stderr, and in the record) every this long.
        #[arg(long, value_parser = humantime::parse_duration)]
        report_every: Option<Duration>,
        /// A second scenario run at the same time, closed loop (its
        /// figures are recorded under `<label>/background`).
        #[arg(long, value_enum)]
        background: Option<Kind>,
        #[arg(long, default_value_t = 16)]
        background_in_flight: usize,
        /// Call from this local address (a loopback address of its own).
        #[arg(long)]
        local_address: Option<IpAddr>,
    },
    /// WatchTasks: a change reaching its owner's streams while many
    /// streams of other users are open.
    Watch {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum, default_value = "direct")]
        via: Via,
        #[arg(long, default_value_t = 8)]
        connections: usize,
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        #[arg(long, default_value_t = 4)]
        owner_streams: usize,
        #[arg(long, default_value_t = 300)]
        changes: usize,
    },
    /// Time from Logout to the task-service refusing the session's token.
    LogoutRefusal {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum, default_value = "direct")]
        via: Via,
        #[arg(long, default_value_t = 30)]
        rounds: usize,
    },
    /// A victim's GetTask latency (open loop, through the gateway) while
    /// an attack runs, against the same without one.
    Attack {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum)]
        attack: Attack,
        #[arg(long, value_enum, default_value = "grpc")]
        via: Via,
        /// The victim's calls per second.
        #[arg(long, default_value_t = 100.0)]
        victim_rate: f64,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Attacking calls in flight.
        #[arg(long, default_value_t = 32)]
        attack_in_flight: usize,
    },
    /// The raw argon2id verify rate (the argon2 crate, the service's
    /// parameters) on `threads` threads.
    Argon2 {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, default_value_t = 19_456)]
        memory_kib: u32,
        #[arg(long, default_value_t = 2)]
        iterations: u32,
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Record the processes' memory, CPU and open files now.
    Sample {
        #[command(flatten)]
        common: Common,
    },
    /// Wait until the services report SERVING (health Check).
    Wait {
        #[command(flatten)]
        common: Common,
        /// Which: auth, tasks, gateway (repeatable; all three without).
        #[arg(long = "service")]
        services: Vec<String>,
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Write BENCHMARKS.md from a results file.
    Report(report::Args),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Attack {
    /// No attack: the victim's baseline.
    Idle,
    /// Costly searches (ListTasks with a query) by another user.
    Search,
    /// Logout with random tokens, all from one address.
    LogoutFlood,
    /// Wrong-password logins from 64 addresses.
    SignInStorm,
    /// Health Watch streams through the gateway from 32 addresses, 8 each.
    HealthWatch,
}

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::Idle => "idle",
            Attack::Search => "search",
            Attack::LogoutFlood => "logout-flood",
            Attack::SignInStorm => "sign-in-storm",
            Attack::HealthWatch => "health-watch",
        }
    }
}

fn parse_code(name: &str) -> Result<Code, String> {
    let wanted = name.to_ascii_uppercase();
    (0..=16)
        .map(Code::from)
        .find(|code| code_name(*code) == wanted)
        .ok_or_else(|| format!("unknown status code {name:?}"))
}

fn append(path: Option<&Path>, record: &Value) -> anyhow::Result<()> {
    if let Some(path) = path {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(file, "{}", serde_json::to_string(record)?)?;
    }
    Ok(())
}

fn summary(label: &str, outcome: &Outcome) -> String {
    let cpu: Vec<String> = outcome
        .cpu_us_per_call
        .iter()
        .map(|(name, us)| format!("{name} {us:.1}µs/call"))
        .collect();
    format!(
        "{label}: {:.0} calls/s, p50 {}µs p90 {}µs p99 {}µs max {}µs, {} calls, errors {:?}; {}",
        outcome.rps,
        outcome.p50_us,
        outcome.p90_us,
        outcome.p99_us,
        outcome.max_us,
        outcome.calls,
        outcome.errors,
        cpu.join(", ")
    )
}

/// Prints, records, and checks one outcome.
fn finish(common: &Common, label: &str, outcome: &Outcome, extra: Value) -> anyhow::Result<()> {
    eprintln!("{}", summary(label, outcome));
    let mut record = serde_json::to_value(outcome)?;
    record["label"] = json!(label);
    record["rep"] = json!(common.rep);
    record["extra"] = extra;
    append(common.results.as_deref(), &record)?;
    if common.expect_no_errors {
        let unexpected = outcome.errors_except(&common.allowed);
        anyhow::ensure!(
            unexpected == 0,
            "{label}: {unexpected} calls failed ({:?})",
            outcome.errors
        );
        anyhow::ensure!(outcome.ok > 0, "{label}: no call succeeded");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Seed {
            common,
            users,
            tasks_per_user,
            list_user_tasks,
            deep_user_tasks,
        } => {
            let client =
                bench::client::Client::connect(&common.targets(), Via::Direct, None).await?;
            let fixture = fixture::seed(
                &client,
                &Seed {
                    users,
                    tasks_per_user,
                    list_user_tasks,
                    deep_user_tasks,
                },
            )
            .await?;
            fixture.save(&common.fixture)?;
            eprintln!(
                "seeded {} users into {}",
                fixture.users.len(),
                common.fixture.display()
            );
            Ok(())
        }
        Command::Load {
            common,
            shape,
            scenario,
            page,
            report_every,
            background,
            background_in_flight,
            local_address,
        } => {
            let targets = common.targets();
            let fixture = common.fixture()?;
            let processes = common.processes()?;
            let label = common
                .label
                .clone()
                .unwrap_or_else(|| format!("{}/{}", scenario.name(), shape.via.name()));
            let clients =
                bench::clients(&targets, shape.via, shape.connections, local_address).await?;
            let standard =
                Arc::new(Standard::new(scenario, fixture.clone(), page, &clients[0]).await?);
            let load = shape.load(report_every);
            let background = match background {
                Some(kind) => {
                    let clients = bench::clients(&targets, shape.via, 2, None).await?;
                    let scenario =
                        Arc::new(Standard::new(kind, fixture.clone(), 1, &clients[0]).await?);
                    let load = Load {
                        in_flight: background_in_flight,
                        rate: None,
                        count: None,
                        duration: load.duration + load.warmup,
                        warmup: Duration::ZERO,
                        report_every: None,
                        refusal_backoff: None,
                    };
                    Some(tokio::spawn(async move {
                        load::drive(scenario, &clients, &load, &Processes::default()).await
                    }))
                }
                None => None,
            };
            let outcome = load::drive(standard, &clients, &load, &processes).await?;
            let shape_json = json!({
                "scenario": scenario.name(),
                "via": shape.via.name(),
                "connections": shape.connections,
                "in_flight": shape.in_flight,
                "rate": shape.rate,
                "page": page,
            });
            if let Some(background) = background {
                let behind = background.await??;
                eprintln!("{}", summary(&format!("{label}/background"), &behind));
                let mut record = serde_json::to_value(&behind)?;
                record["label"] = json!(format!("{label}/background"));
                record["rep"] = json!(common.rep);
                append(common.results.as_deref(), &record)?;
            }
            finish(&common, &label, &outcome, shape_json)
        }
        Command::Watch {
            common,
            via,
            connections,
            streams,
            owner_streams,
            changes,
        } => {
            let targets = common.targets();
            let fixture = common.fixture()?;
            let clients = bench::clients(&targets, via, connections, None).await?;
            let result =
                probes::watch_fanout(&clients, &fixture, streams, owner_streams, changes).await?;
            let label = common
                .label
                .clone()
                .unwrap_or_else(|| format!("watch/{}", via.name()));
            let extra = json!({
                "other_streams": result.other_streams,
                "owner_streams": result.owner_streams,
                "leaked_events": result.leaked_events,
                "end_to_end": result.end_to_end,
                "unary_get": result.unary_get,
                "via": via.name(),
            });
            eprintln!(
                "{}",
                summary(&format!("{label}/end-to-end"), &result.end_to_end)
            );
            eprintln!(
                "{}",
                summary(&format!("{label}/unary-get"), &result.unary_get)
            );
            anyhow::ensure!(
                result.leaked_events == 0,
                "a change reached another user's stream"
            );
            finish(&common, &label, &result.fanout, extra)
        }
        Command::LogoutRefusal {
            common,
            via,
            rounds,
        } => {
            let targets = common.targets();
            let fixture = common.fixture()?;
            let auth = bench::client::Client::connect(&targets, via, None).await?;
            let tasks = bench::client::Client::connect(&targets, via, None).await?;
            let result = probes::logout_refusal(&auth, &tasks, &fixture, rounds).await?;
            let label = common
                .label
                .clone()
                .unwrap_or_else(|| format!("logout-refusal/{}", via.name()));
            let extra = json!({ "calls_still_served_mean": result.calls_still_served_mean });
            finish(&common, &label, &result.after_logout, extra)
        }
        Command::Attack {
            common,
            attack,
            via,
            victim_rate,
            duration,
            attack_in_flight,
        } => run_attack(common, attack, via, victim_rate, duration, attack_in_flight).await,
        Command::Argon2 {
            common,
            threads,
            memory_kib,
            iterations,
            duration,
        } => {
            let rate = tokio::task::spawn_blocking(move || {
                probes::argon2_verify_rate(threads, memory_kib, iterations, duration)
            })
            .await??;
            let label = common
                .label
                .clone()
                .unwrap_or_else(|| format!("argon2/{threads}"));
            eprintln!(
                "{label}: {:.1} verifies/s reusing memory, {:.1} with verify_password ({threads} threads)",
                rate.reused_memory_per_second, rate.verify_password_per_second
            );
            let mut record = serde_json::to_value(&rate)?;
            record["label"] = json!(label);
            record["rep"] = json!(common.rep);
            append(common.results.as_deref(), &record)
        }
        Command::Sample { common } => {
            let samples = common.processes()?.sample();
            let label = common.label.clone().unwrap_or_else(|| "sample".into());
            eprintln!("{label}: {samples:?}");
            append(
                common.results.as_deref(),
                &json!({ "label": label, "rep": common.rep, "end": samples }),
            )
        }
        Command::Wait {
            common,
            services,
            timeout,
        } => wait(&common, &services, timeout).await,
        Command::Report(args) => report::write(&args),
    }
}

async fn run_attack(
    common: Common,
    attack: Attack,
    via: Via,
    victim_rate: f64,
    duration: Duration,
    attack_in_flight: usize,
) -> anyhow::Result<()> {
    let targets = common.targets();
    let fixture = common.fixture()?;
    let processes = common.processes()?;
    let label = common
        .label
        .clone()
        .unwrap_or_else(|| format!("attack/{}", attack.name()));
    // The victim: one honest user calling GetTask from an address of its own.
    let mut victim_fixture = (*fixture).clone();
    victim_fixture.users = vec![fixture.victim.clone()];
    let victim_address: IpAddr = "127.0.0.3".parse()?;
    let victim_clients = bench::clients(&targets, via, 2, Some(victim_address)).await?;
    let victim =
        Arc::new(Standard::new(Kind::Get, Arc::new(victim_fixture), 1, &victim_clients[0]).await?);
    let victim_load = Load {
        in_flight: 8,
        duration,
        count: None,
        rate: Some(victim_rate),
        warmup: Duration::from_secs(2),
        report_every: None,
        refusal_backoff: None,
    };

    let mut attacker_fixture = (*fixture).clone();
    let (kind, addresses): (Option<Kind>, Vec<IpAddr>) = match attack {
        Attack::Idle | Attack::HealthWatch => (None, vec![]),
        Attack::Search => {
            attacker_fixture.list_user = fixture.list_user.clone();
            (Some(Kind::Search), vec!["127.0.0.2".parse()?])
        }
        Attack::LogoutFlood => (Some(Kind::LogoutFlood), vec!["127.0.0.2".parse()?]),
        Attack::SignInStorm => (
            Some(Kind::SignInStorm),
            (10..74).map(|n| IpAddr::from([127, 0, 0, n])).collect(),
        ),
    };
    let mut extra = BTreeMap::new();
    let mut held = None;
    if attack == Attack::HealthWatch {
        let addresses: Vec<IpAddr> = (100..132).map(|n| IpAddr::from([127, 0, 0, n])).collect();
        let (holders, opened, refused) =
            probes::hold_health_watches(&targets, &addresses, 8).await?;
        eprintln!("{label}: {opened} anonymous streams open, refused {refused:?}");
        extra.insert("streams_open".to_owned(), json!(opened));
        extra.insert("streams_refused".to_owned(), json!(refused));
        held = Some(holders);
    }
    let attacker = match kind {
        Some(kind) => {
            let mut clients = Vec::new();
            for (n, address) in addresses.iter().enumerate() {
                // One connection per address; more for a single address.
                let per = if addresses.len() == 1 { 4 } else { 1 };
                let _ = n;
                clients.extend(bench::clients(&targets, via, per, Some(*address)).await?);
            }
            let scenario =
                Arc::new(Standard::new(kind, Arc::new(attacker_fixture), 1, &clients[0]).await?);
            let load = Load {
                in_flight: attack_in_flight.max(clients.len()),
                duration: duration + Duration::from_secs(2),
                count: None,
                rate: None,
                warmup: Duration::ZERO,
                report_every: None,
                refusal_backoff: None,
            };
            Some(tokio::spawn(async move {
                load::drive(scenario, &clients, &load, &Processes::default()).await
            }))
        }
        None => None,
    };
    let outcome = load::drive(victim, &victim_clients, &victim_load, &processes).await?;
    if let Some(attacker) = attacker {
        let attacked = attacker.await??;
        eprintln!("{}", summary(&format!("{label}/attacker"), &attacked));
        extra.insert("attacker".to_owned(), serde_json::to_value(&attacked)?);
    }
    drop(held);
    // The victim must never fail; the attacker's refusals are the point.
    finish(&common, &label, &outcome, json!(extra))
}

async fn wait(common: &Common, services: &[String], timeout: Duration) -> anyhow::Result<()> {
    use tonic_health::pb::{
        HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    };
    let all = ["auth".to_owned(), "tasks".to_owned(), "gateway".to_owned()];
    let services = if services.is_empty() {
        &all[..]
    } else {
        services
    };
    let deadline = tokio::time::Instant::now() + timeout;
    for service in services {
        let mut targets = common.targets();
        let via = match service.as_str() {
            "auth" => {
                targets.tasks = targets.auth.clone();
                Via::Direct
            }
            "tasks" => Via::Direct,
            "gateway" => Via::Grpc,
            other => anyhow::bail!("unknown service {other:?}: auth, tasks or gateway"),
        };
        loop {
            if let Ok(client) = bench::client::Client::connect(&targets, via, None).await {
                let answer: Result<HealthCheckResponse, Code> = client
                    .unary(
                        bench::scenario::HEALTH_CHECK,
                        HealthCheckRequest {
                            service: String::new(),
                        },
                        None,
                    )
                    .await;
                if answer.is_ok_and(|a| a.status == ServingStatus::Serving as i32) {
                    break;
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the {service} service is not SERVING after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
