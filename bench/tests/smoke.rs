//! The smoke run of the load harness: the three services started in this
//! process on port 0 over fresh SQLite files, a small fixture, and every
//! scenario run briefly by every way in (direct, and through the gateway
//! as gRPC, gRPC-Web over HTTP/1.1 and HTTP/2, Connect with protobuf and
//! with JSON). It asserts that no call failed, so a scenario that the
//! services stop answering correctly breaks the build, not the next
//! benchmark. It never asserts a time.
//!
//! The services are started directly with their `serve` functions and
//! the configuration of `bench/run.sh` (limits raised for a load
//! generator, tokens that outlive the run), not `test-harness`'s test
//! defaults.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use bench::{
    client::{Client, Targets, Via},
    fixture::{self, Fixture, Seed},
    load::{Load, Outcome},
    probes,
    procstat::Processes,
    scenario::{HEALTH_CHECK, Kind},
};
use serving::CancellationToken;
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
};

struct Stack {
    targets: Targets,
    shutdown: CancellationToken,
    _data: tempfile::TempDir,
}

async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let address = listener.local_addr().expect("a bound address");
    (listener, address)
}

fn sqlite(folder: &Path, name: &str) -> String {
    format!("sqlite://{}", folder.join(name).display())
}

async fn start() -> Stack {
    let data = tempfile::tempdir().expect("a temporary folder");
    let shutdown = CancellationToken::new();
    let (auth_listener, auth_address) = listener().await;
    let (tasks_listener, tasks_address) = listener().await;
    let (gateway_listener, gateway_address) = listener().await;

    let auth = auth_service::Config {
        database_url: sqlite(data.path(), "auth.db").into(),
        key_encryption_key_file: data.path().join("key-encryption-key"),
        mail_dir: data.path().join("mail"),
        access_token_ttl: Duration::from_secs(3600),
        address_rate_per_minute: 1_000_000,
        address_burst: 1_000_000,
        login_max_failures: 1_000_000,
        login_max_failures_per_account: 1_000_000,
        trusted_proxies: vec!["127.0.0.1/32".parse().expect("a CIDR")],
        ..auth_service::Config::default()
    };
    let tasks = task_service::Config {
        database_url: sqlite(data.path(), "tasks.db").into(),
        auth_url: format!("http://{auth_address}"),
        max_calls_in_flight: 100_000,
        max_calls_in_flight_per_user: 10_000,
        max_searches_in_flight_per_user: 10_000,
        max_writes_per_user_per_minute: 10_000_000,
        ..task_service::Config::default()
    };
    let gateway = gateway::Config {
        auth_url: format!("http://{auth_address}").parse().expect("a URI"),
        tasks_url: format!("http://{tasks_address}").parse().expect("a URI"),
        max_concurrent_requests_per_address: 1024,
        ..gateway::Config::default()
    };
    for served in [
        tokio::spawn(auth_service::serve(auth, auth_listener, shutdown.clone())),
        tokio::spawn(task_service::serve(tasks, tasks_listener, shutdown.clone())),
        tokio::spawn(gateway::serve(gateway, gateway_listener, shutdown.clone())),
    ] {
        tokio::spawn(async move {
            if let Ok(Err(error)) = served.await {
                panic!("a service failed: {error:#}");
            }
        });
    }
    let targets = Targets {
        auth: format!("http://{auth_address}").parse().expect("a URI"),
        tasks: format!("http://{tasks_address}").parse().expect("a URI"),
        gateway: format!("http://{gateway_address}").parse().expect("a URI"),
    };
    // The task-service serves once it has the auth-service's keys, the
    // gateway once it has seen both upstreams answer.
    for (via, what) in [(Via::Direct, "task-service"), (Via::Grpc, "gateway")] {
        let mut serving = false;
        for _ in 0..600 {
            if let Ok(client) = Client::connect(&targets, via, None).await {
                let answer: Result<HealthCheckResponse, _> = client
                    .unary(
                        HEALTH_CHECK,
                        HealthCheckRequest {
                            service: String::new(),
                        },
                        None,
                    )
                    .await;
                if answer.is_ok_and(|a| a.status == ServingStatus::Serving as i32) {
                    serving = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(serving, "the {what} never reported SERVING");
    }
    Stack {
        targets,
        shutdown,
        _data: data,
    }
}

fn brief(count: u64) -> Load {
    Load {
        in_flight: 4,
        duration: Duration::from_secs(60),
        count: Some(count),
        rate: None,
        warmup: Duration::ZERO,
        report_every: None,
        refusal_backoff: None,
    }
}

fn assert_clean(what: &str, outcome: &Outcome) {
    assert_eq!(
        outcome.error_count(),
        0,
        "{what}: calls failed: {:?}",
        outcome.errors
    );
    assert!(outcome.ok > 0, "{what}: no call was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_cleanly_by_every_way_in() {
    let stack = start().await;
    let direct = Client::connect(&stack.targets, Via::Direct, None)
        .await
        .expect("a connection");
    let fixture: Arc<Fixture> = Arc::new(
        fixture::seed(
            &direct,
            &Seed {
                users: 6,
                tasks_per_user: 3,
                list_user_tasks: 50,
                deep_user_tasks: 200,
            },
        )
        .await
        .expect("the fixture seeds"),
    );
    let me = Processes(vec![("harness".into(), std::process::id())]);

    for via in Via::ALL {
        for kind in Kind::MAIN {
            // Logins pay for the hash; mixed needs enough calls to reach
            // its writes (a create, then that task's delete).
            let count = if kind == Kind::Login { 8 } else { 24 };
            let outcome = bench::run_scenario(
                &stack.targets,
                fixture.clone(),
                kind,
                via,
                2,
                &brief(count),
                2,
                &me,
            )
            .await
            .unwrap_or_else(|error| panic!("{} by {}: {error:#}", kind.name(), via.name()));
            assert_clean(&format!("{} by {}", kind.name(), via.name()), &outcome);
        }
        let clients = bench::clients(&stack.targets, via, 2, None)
            .await
            .expect("connections");
        let watch = probes::watch_fanout(&clients, &fixture, 10, 2, 5)
            .await
            .unwrap_or_else(|error| panic!("watch by {}: {error:#}", via.name()));
        assert_clean(&format!("watch by {}", via.name()), &watch.fanout);
        assert_clean(
            &format!("GetTask beside watchers by {}", via.name()),
            &watch.unary_get,
        );
        assert_eq!(
            watch.leaked_events, 0,
            "a change reached another user's stream"
        );
    }

    // The attackers' scenarios run too (sign-in storms are refused by design).
    for (kind, expected) in [
        (Kind::Search, None),
        (Kind::LogoutFlood, None),
        (Kind::SignInStorm, Some("UNAUTHENTICATED")),
    ] {
        let outcome = bench::run_scenario(
            &stack.targets,
            fixture.clone(),
            kind,
            Via::Grpc,
            1,
            &brief(6),
            1,
            &me,
        )
        .await
        .expect("the attack scenario runs");
        match expected {
            None => assert_clean(kind.name(), &outcome),
            Some(code) => assert_eq!(
                outcome.errors.get(code).copied(),
                Some(outcome.calls),
                "{}",
                kind.name()
            ),
        }
    }

    let refusal = probes::logout_refusal(&direct, &direct, &fixture, 2)
        .await
        .expect("logout refusal runs");
    assert_clean("logout to refusal", &refusal.after_logout);

    let rate =
        probes::argon2_verify_rate(1, 1024, 1, Duration::from_millis(50)).expect("argon2 runs");
    assert!(rate.reused_memory_per_second > 0.0 && rate.verify_password_per_second > 0.0);

    stack.shutdown.cancel();
}

#[test]
fn the_report_is_written_from_any_results() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let results = folder.path().join("results.jsonl");
    std::fs::write(
        &results,
        concat!(
            r#"{"label":"get/direct","rep":1,"rps":100.0,"p50_us":10,"p90_us":20,"p99_us":30,"max_us":40,"errors":{},"cpu_us_per_call":{"task-service":50.0}}"#,
            "\n",
            r#"{"label":"health/direct","rep":1,"rps":200.0,"p50_us":5,"p90_us":6,"p99_us":7,"max_us":8,"errors":{},"cpu_us_per_call":{"task-service":20.0}}"#,
            "\n",
            r#"{"label":"pgbench/list-page","rep":1,"tps":1000.0,"latency_ms":0.5}"#,
            "\n"
        ),
    )
    .expect("results written");
    let out = folder.path().join("BENCHMARKS.md");
    bench::report::write(&bench::report::Args {
        results,
        machine: None,
        commands: None,
        analysis: None,
        cores: 2,
        hash_permits: 2,
        out: out.clone(),
    })
    .expect("the report is written");
    let text = std::fs::read_to_string(out).expect("the report exists");
    assert!(
        text.contains("| GetTask direct: task-service CPU per call / health floor's | 2.50x"),
        "{text}"
    );
}
