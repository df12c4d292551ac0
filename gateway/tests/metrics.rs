//! Each binary's `/metrics` (`--metrics-listen`), scraped as Prometheus
//! would and read with a strict OpenMetrics parser, after calls through the
//! gateway. The three run as separate processes (the metrics registry is
//! global to a process), so each count below is that binary's own:
//!
//! - `grpc_server_handled_total` moves by exactly the calls made, per
//!   method and code, in the gateway and in the service that answered
//!   them, and nowhere else; `grpc_server_started_total` and the
//!   `grpc_server_handling_seconds` histogram agree with it;
//! - methods and codes come from a fixed set: calls to made-up methods and
//!   odd paths are counted as `unknown`, never as a new label value;
//! - the operational metrics are there and follow what happens: calls in
//!   flight, open `WatchTasks` streams, limit refusals by reason, upstream
//!   health per address, the database pools, the password-hash queue,
//!   JWKS refreshes and key generation.
//!
//! On SQLite and PostgreSQL. `main` is test_harness's: the services are
//! this test binary started again (see `test_harness::service_process`).

use std::{collections::BTreeSet, process::ExitCode};

use http::uri::PathAndQuery;
use test_harness::{
    Backend, Bearer, PASSWORD, PATIENCE, ProcessOptions, ProcessStack, Scrape, code, connect,
    eventually, metrics::OpenMetricsType, on_each_backend, registration, scrape, service_process,
    unique_email,
};
use todo_proto::{
    auth::v1::{LoginRequest, auth_service_client::AuthServiceClient},
    tasks::v1::{GetTaskRequest, WatchTasksRequest, task_service_client::TaskServiceClient},
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn main() -> ExitCode {
    service_process::main(vec![
        service_process::test(
            "each_binary_counts_the_calls_it_handled_by_method_and_code",
            || on_each_backend(counts_by_method_and_code),
        ),
        service_process::test(
            "calls_to_made_up_methods_add_no_label_value_and_are_counted_as_unknown",
            || on_each_backend(made_up_methods),
        ),
        service_process::test(
            "the_operational_metrics_follow_streams_refusals_upstreams_and_the_stores",
            || on_each_backend(operational_metrics),
        ),
    ])
}

fn gateway_binary() -> &'static str {
    env!("CARGO_BIN_EXE_gateway")
}

async fn start(backend: Backend, gateway_args: &[&str]) -> ProcessStack {
    let options = ProcessOptions {
        gateway_args: gateway_args.iter().map(|arg| (*arg).to_owned()).collect(),
        ..ProcessOptions::default()
    };
    ProcessStack::start(backend, gateway_binary(), options).await
}

/// Registers a fresh user through the gateway; returns their access token.
async fn register(auth: &mut AuthServiceClient<Channel>, email: &str) -> String {
    auth.register(registration(email))
        .await
        .expect("Register")
        .into_inner()
        .tokens
        .expect("tokens")
        .access_token
}

fn tasks_client(
    channel: Channel,
    token: &str,
) -> TaskServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>> {
    TaskServiceClient::with_interceptor(channel, Bearer::new(token))
}

const AUTH: &str = "auth.v1.AuthService";
const TASKS: &str = "tasks.v1.TaskService";

/// How many calls of `method` of `service` `component` handled with
/// `code`.
fn handled(scrape: &Scrape, component: &str, service: &str, method: &str, code: &str) -> f64 {
    scrape.counter(
        "grpc_server_handled",
        &[
            ("component", component),
            ("grpc_service", service),
            ("grpc_method", method),
            ("grpc_code", code),
        ],
    )
}

/// Checks every count of `expected` (service, method, code, calls) in
/// `scrape` of `component`, and that nothing else was counted for those
/// methods: no other code, as many started, as many timed.
fn assert_counts(scrape: &Scrape, component: &str, expected: &[(&str, &str, &str, f64)]) {
    for (service, method, code, calls) in expected {
        assert_eq!(
            handled(scrape, component, service, method, code),
            *calls,
            "{component}: {service}/{method} {code}\n{}",
            scrape.text
        );
    }
    let methods: BTreeSet<(&str, &str)> = expected.iter().map(|(s, m, _, _)| (*s, *m)).collect();
    for (service, method) in methods {
        let total: f64 = expected
            .iter()
            .filter(|(s, m, _, _)| (*s, *m) == (service, method))
            .map(|(_, _, _, calls)| calls)
            .sum();
        let labels = [
            ("component", component),
            ("grpc_service", service),
            ("grpc_method", method),
        ];
        assert_eq!(scrape.counter("grpc_server_handled", &labels), total);
        assert_eq!(scrape.counter("grpc_server_started", &labels), total);
        assert_eq!(
            scrape.histogram_count("grpc_server_handling_seconds", &labels) as f64,
            total,
            "{component}: {service}/{method} handling time observations"
        );
    }
}

async fn counts_by_method_and_code(backend: Backend) {
    let stack = start(backend, &[]).await;
    let channel = connect(&stack.url()).await;
    let mut auth = AuthServiceClient::new(channel.clone());
    let email = unique_email();
    let token = register(&mut auth, &email).await;
    for _ in 0..3 {
        auth.login(LoginRequest {
            email: email.clone(),
            password: PASSWORD.into(),
        })
        .await
        .expect("Login");
    }
    let wrong = auth
        .login(LoginRequest {
            email: email.clone(),
            password: "not the password at all".into(),
        })
        .await;
    assert_eq!(code(wrong), Code::Unauthenticated);

    let mut tasks = tasks_client(channel, &token);
    let task = test_harness::create(&mut tasks, test_harness::titled("counted"))
        .await
        .id;
    tasks
        .get_task(GetTaskRequest { id: task })
        .await
        .expect("GetTask");
    for _ in 0..2 {
        let missing = tasks
            .get_task(GetTaskRequest {
                id: uuid::Uuid::new_v4().to_string(),
            })
            .await;
        assert_eq!(code(missing), Code::NotFound);
    }

    let auth_calls = [
        (AUTH, "Register", "OK", 1.0),
        (AUTH, "Login", "OK", 3.0),
        (AUTH, "Login", "Unauthenticated", 1.0),
    ];
    let task_calls = [
        (TASKS, "CreateTask", "OK", 1.0),
        (TASKS, "GetTask", "OK", 1.0),
        (TASKS, "GetTask", "NotFound", 2.0),
    ];
    let gateway = scrape(stack.gateway_metrics).await;
    assert_counts(&gateway, "gateway", &auth_calls);
    assert_counts(&gateway, "gateway", &task_calls);

    let auth_service = scrape(stack.auth_metrics).await;
    assert_counts(&auth_service, "auth-service", &auth_calls);
    let task_service = scrape(stack.tasks_metrics).await;
    assert_counts(&task_service, "task-service", &task_calls);

    // Each binary reports itself alone, and only the calls it answered.
    for (scrape, component, foreign) in [
        (&gateway, "gateway", None),
        (&auth_service, "auth-service", Some(TASKS)),
        (&task_service, "task-service", Some(AUTH)),
    ] {
        assert_eq!(
            scrape.label_values("grpc_server_handled", "component"),
            BTreeSet::from([component.to_owned()])
        );
        if let Some(foreign) = foreign {
            assert!(
                !scrape
                    .label_values("grpc_server_handled", "grpc_service")
                    .contains(foreign),
                "{component} counted calls of {foreign}"
            );
        }
    }
}

/// Paths a client may send that name no method, and where the gateway
/// sends each: (path, reaches the auth-service, reaches the task-service).
const MADE_UP: [(&str, bool, bool); 7] = [
    ("/made.up.Service/MadeUpCall", false, false),
    ("/grpc.health.v1.Health/Nope", false, false),
    ("/evil-label-value/evil-method", false, false),
    ("/tasks.v1.TaskService/NoSuchMethod", false, true),
    ("/tasks.v1.TaskService/GetTask/extra", false, true),
    ("/auth.v1.AuthService/LOGIN", true, false),
    ("/auth.v1.AuthService/Login%0Ainjected", true, false),
];

/// Every service and method the descriptor sets of the system name.
fn known_names() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut services = BTreeSet::from(["unknown".to_owned()]);
    let mut methods = services.clone();
    for set in [
        todo_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ] {
        let pool = prost_reflect::DescriptorPool::decode(set).expect("a descriptor set");
        for service in pool.services() {
            services.insert(service.full_name().to_owned());
            methods.extend(service.methods().map(|method| method.name().to_owned()));
        }
    }
    (services, methods)
}

async fn made_up_methods(backend: Backend) {
    let stack = start(backend, &[]).await;
    let channel = connect(&stack.url()).await;
    for (path, _, _) in MADE_UP {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.expect("the channel is ready");
        let answer: Result<tonic::Response<()>, tonic::Status> = grpc
            .unary(
                tonic::Request::new(()),
                PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::<(), ()>::default(),
            )
            .await;
        assert_eq!(code(answer), Code::Unimplemented, "{path}");
    }

    let (services, methods) = known_names();
    let unknown = |scrape: &Scrape, component: &str| {
        handled(scrape, component, "unknown", "unknown", "Unimplemented")
    };
    let count = |reaches: fn(&(&str, bool, bool)) -> bool| {
        MADE_UP.iter().filter(|call| reaches(call)).count() as f64
    };
    for (address, component, calls) in [
        (stack.gateway_metrics, "gateway", MADE_UP.len() as f64),
        (stack.auth_metrics, "auth-service", count(|call| call.1)),
        (stack.tasks_metrics, "task-service", count(|call| call.2)),
    ] {
        let scrape = scrape(address).await;
        assert_eq!(
            unknown(&scrape, component),
            calls,
            "{component}\n{}",
            scrape.text
        );
        for family in [
            "grpc_server_started",
            "grpc_server_handled",
            "grpc_server_handling_seconds",
        ] {
            let seen = scrape.label_values(family, "grpc_service");
            assert!(seen.is_subset(&services), "{component} {family}: {seen:?}");
            let seen = scrape.label_values(family, "grpc_method");
            assert!(seen.is_subset(&methods), "{component} {family}: {seen:?}");
        }
        for (path, _, _) in MADE_UP {
            let segments = path.trim_start_matches('/').split('/');
            for segment in segments.filter(|segment| !services.contains(*segment)) {
                assert!(
                    !scrape.text.contains(segment),
                    "{component} exposes {segment:?} from {path}"
                );
            }
        }
    }
}

async fn operational_metrics(backend: Backend) {
    let mut stack = start(backend, &["--max-anonymous-streams-per-address", "1"]).await;
    let (gateway_metrics, tasks_metrics) = (stack.gateway_metrics, stack.tasks_metrics);
    let (auth_address, tasks_address) = (stack.auth_address, stack.tasks_address);
    let channel = connect(&stack.url()).await;
    let mut auth = AuthServiceClient::new(channel.clone());
    let token = register(&mut auth, &unique_email()).await;

    // A health Watch (an anonymous stream) and a WatchTasks stay open; a
    // second Watch is over the per-address budget of one.
    let mut health = HealthClient::new(channel.clone());
    let watching = health
        .watch(HealthCheckRequest::default())
        .await
        .expect("the first Watch opens");
    let refused = health.watch(HealthCheckRequest::default()).await;
    assert_eq!(code(refused), Code::ResourceExhausted);
    let mut tasks = tasks_client(channel, &token);
    let stream = tasks
        .watch_tasks(WatchTasksRequest {})
        .await
        .expect("WatchTasks opens");

    let gateway_gauge = move |name: &'static str, labels: Vec<(&'static str, String)>| async move {
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        scrape(gateway_metrics).await.gauge(name, &labels)
    };
    let watch_streams = || async { scrape(tasks_metrics).await.gauge("watch_streams_open", &[]) };
    let in_flight = || {
        gateway_gauge(
            "grpc_server_in_flight",
            vec![("component", "gateway".into())],
        )
    };
    eventually(PATIENCE, "the open WatchTasks is counted", || async {
        watch_streams().await == 1.0
    })
    .await;
    assert_eq!(in_flight().await, 2.0, "the two open streams are in flight");
    let gateway = scrape(gateway_metrics).await;
    let refusals = |reason| {
        gateway.counter(
            "limit_refusals",
            &[("component", "gateway"), ("reason", reason)],
        )
    };
    assert_eq!(refusals("anonymous_streams_per_address"), 1.0);
    assert_eq!(refusals("calls_per_address"), 0.0);

    drop((watching, stream));
    eventually(PATIENCE, "closed streams leave the gauges", || async {
        watch_streams().await == 0.0 && in_flight().await == 0.0
    })
    .await;

    let auth_service = scrape(stack.auth_metrics).await;
    assert_eq!(auth_service.counter("signing_keys_generated", &[]), 1.0);
    assert_eq!(auth_service.gauge("password_hash_waiting", &[]), 0.0);
    assert_eq!(
        auth_service.histogram_count("password_hash_wait_seconds", &[]),
        2,
        "the start-up dummy hash and the one registration each waited for a hashing thread once"
    );
    let task_service = scrape(stack.tasks_metrics).await;
    assert!(
        task_service.counter(
            "jwks_refreshes",
            &[("component", "task-service"), ("outcome", "ok")]
        ) >= 1.0
    );
    for (scrape, component) in [
        (&auth_service, "auth-service"),
        (&task_service, "task-service"),
    ] {
        let pool = |state| {
            scrape.gauge(
                "db_pool_connections",
                &[("component", component), ("state", state)],
            )
        };
        assert!(pool("in_use") >= 0.0 && pool("idle") >= 0.0);
        assert!(
            pool("in_use") + pool("idle") >= 1.0,
            "{component}: an open pool"
        );
        for (family, kind) in [
            ("grpc_server_in_flight", OpenMetricsType::Gauge),
            ("limit_refusals", OpenMetricsType::Counter),
        ] {
            assert!(scrape.has(family, kind), "{component}: {family}");
        }
    }
    assert!(
        auth_service.has("mail", OpenMetricsType::Counter),
        "the auth-service counts mails from the start"
    );

    // Upstream health, per address the gateway found; a task-service that
    // is gone is seen as down.
    let upstream_up = move |upstream: &'static str, address: std::net::SocketAddr| {
        gateway_gauge(
            "gateway_upstream_up",
            vec![
                ("upstream", upstream.into()),
                ("address", address.to_string()),
            ],
        )
    };
    assert_eq!(upstream_up("auth-service", auth_address).await, 1.0);
    assert_eq!(upstream_up("task-service", tasks_address).await, 1.0);
    stack.tasks.kill();
    eventually(
        PATIENCE,
        "the gateway sees the task-service down",
        || async { upstream_up("task-service", tasks_address).await == 0.0 },
    )
    .await;
    assert_eq!(upstream_up("auth-service", auth_address).await, 1.0);
}
