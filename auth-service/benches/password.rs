//! What a sign-in costs on this machine: one argon2id hash at the default
//! parameters, and one whole `Login` RPC over a real socket to the real
//! service on SQLite (hash verify + attempt window + session insert +
//! token signing).
//!
//! Run: `cargo bench -p auth-service --bench password`

use auth_service::{Config, domain::Password, password::Hasher};
use criterion::{Criterion, criterion_group, criterion_main};
use serving::CancellationToken;
use todo_proto::auth::v1::{LoginRequest, RegisterRequest, auth_service_client::AuthServiceClient};

const PASSWORD: &str = "correct horse battery staple";

fn password_hash(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let hasher = runtime.block_on(Hasher::start(19_456, 2, 1)).unwrap();
    let password = Password::new_password("password", PASSWORD).unwrap();
    let mut group = c.benchmark_group("argon2id m=19456 t=2 p=1");
    group.sample_size(20);
    group.bench_function("hash", |b| {
        b.to_async(&runtime).iter(|| hasher.hash(&password));
    });
    group.finish();
}

fn login(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let client = runtime.block_on(async {
        let config = Config {
            database_url: format!("sqlite://{}", folder.path().join("bench.db").display()).into(),
            address_rate_per_minute: u32::MAX,
            address_burst: u32::MAX,
            login_max_failures: u32::MAX,
            ..Config::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(auth_service::serve(config, listener, shutdown.clone()));
        let mut client = AuthServiceClient::connect(url).await.unwrap();
        client
            .register(RegisterRequest {
                email: "bench@example.com".into(),
                password: PASSWORD.into(),
                display_name: String::new(),
            })
            .await
            .unwrap();
        client
    });
    let mut group = c.benchmark_group("rpc");
    group.sample_size(20);
    group.bench_function("Login (SQLite)", |b| {
        b.to_async(&runtime).iter(|| {
            let mut client = client.clone();
            async move {
                client
                    .login(LoginRequest {
                        email: "bench@example.com".into(),
                        password: PASSWORD.into(),
                    })
                    .await
                    .unwrap()
            }
        });
    });
    group.finish();
    shutdown.cancel();
}

criterion_group!(benches, password_hash, login);
criterion_main!(benches);
