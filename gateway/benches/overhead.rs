//! What the gateway costs per call: sequential unary `GetJwks` latency
//! straight to the auth-service, and through the gateway as plain gRPC and
//! as gRPC-Web over HTTP/1.1 and HTTP/2. A measurement, not a check, so it
//! is a benchmark binary rather than a test:
//!
//! ```sh
//! cargo bench -p gateway --bench overhead
//! ```

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::time::{Duration, Instant};

use test_harness::{Backend, GatewayStack, origin};
use todo_proto::auth::v1::{GetJwksRequest, auth_service_client::AuthServiceClient};
use tonic::client::GrpcService;

const WARM_UP: usize = 100;
const CALLS: usize = 1000;

/// p50 and p99 of `CALLS` sequential calls after a warm-up.
async fn measure<T>(client: &mut AuthServiceClient<T>) -> (Duration, Duration)
where
    T: GrpcService<tonic::body::Body>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    for _ in 0..WARM_UP {
        client.get_jwks(GetJwksRequest {}).await.expect("GetJwks");
    }
    let mut latencies = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        client.get_jwks(GetJwksRequest {}).await.expect("GetJwks");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    (latencies[CALLS / 2], latencies[CALLS * 99 / 100])
}

#[tokio::main]
async fn main() {
    let stack = GatewayStack::start(Backend::Sqlite).await;
    let direct = tonic::transport::Endpoint::from(origin(stack.auth))
        .connect()
        .await
        .expect("connects");
    let via_gateway = tonic::transport::Endpoint::from(stack.uri())
        .connect()
        .await
        .expect("connects");

    let (p50, p99) = measure(&mut AuthServiceClient::new(direct)).await;
    println!("direct gRPC:                  p50 {p50:?}  p99 {p99:?}");
    let (p50, p99) = measure(&mut AuthServiceClient::new(via_gateway)).await;
    println!("gRPC through the gateway:     p50 {p50:?}  p99 {p99:?}");
    let (p50, p99) = measure(&mut stack.auth_web(false)).await;
    println!("gRPC-Web/HTTP/1.1 (gateway):  p50 {p50:?}  p99 {p99:?}");
    let (p50, p99) = measure(&mut stack.auth_web(true)).await;
    println!("gRPC-Web/HTTP/2 (gateway):    p50 {p50:?}  p99 {p99:?}");
}
