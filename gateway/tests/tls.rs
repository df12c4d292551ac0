//! HTTPS at the gateway, as clients and an operator meet it: gRPC and
//! gRPC-Web (HTTP/1.1 and HTTP/2 by ALPN) over TLS with a certificate of a
//! test CA, a client that does not trust that CA refused at the handshake,
//! and a renewed certificate written over the files served to new
//! connections without a restart.

use std::sync::Arc;

use test_harness::{
    Backend, GatewayStack, PATIENCE, eventually,
    tls::{TestCa, trusting_no_one},
};
use todo_proto::auth::v1::{GetJwksRequest, auth_service_client::AuthServiceClient};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::test]
async fn the_gateway_serves_https_and_a_renewed_certificate_without_a_restart() {
    let ca = TestCa::new("todo test CA");
    let first = ca.server("gateway, first");
    let (cert, key) = ca.write(&first, "gateway");
    let mut stack = GatewayStack::start_without_tasks(Backend::Sqlite, |config| {
        config.tls_cert = Some(cert.clone());
        config.tls_key = Some(key.clone());
    })
    .await;
    stack.start_tasks().await;
    let address = stack.gateway;

    // gRPC over TLS: the gateway becomes SERVING, and a call goes through.
    let channel = ca.channel(address, None).await.expect("a TLS connection");
    eventually(PATIENCE, "the gateway serves over TLS", || {
        let mut health = HealthClient::new(channel.clone());
        async move {
            health
                .check(HealthCheckRequest::default())
                .await
                .is_ok_and(|answer| answer.into_inner().status == ServingStatus::Serving as i32)
        }
    })
    .await;
    let keys = AuthServiceClient::new(channel.clone())
        .get_jwks(GetJwksRequest {})
        .await
        .expect("GetJwks over gRPC and TLS")
        .into_inner();
    assert!(keys.jwks_json.contains("Ed25519"), "{}", keys.jwks_json);

    // gRPC-Web over TLS, HTTP/1.1 and HTTP/2 each offered alone by ALPN.
    let origin: http::Uri = format!("https://{address}").parse().expect("a URI");
    for http2 in [false, true] {
        AuthServiceClient::with_origin(ca.grpc_web(http2), origin.clone())
            .get_jwks(GetJwksRequest {})
            .await
            .unwrap_or_else(|status| panic!("gRPC-Web over TLS (HTTP/2: {http2}): {status:?}"));
    }

    // A client that does not trust the CA is refused at the handshake.
    let connector = tokio_rustls::TlsConnector::from(Arc::new(trusting_no_one()));
    let tcp = tokio::net::TcpStream::connect(address).await.expect("TCP");
    let name = rustls::pki_types::ServerName::IpAddress(address.ip().into());
    assert!(
        connector.connect(name, tcp).await.is_err(),
        "an untrusted certificate is refused"
    );
    assert_eq!(
        ca.served_certificate(address).await.expect("a handshake"),
        first.der
    );

    // Renewed: new files over the old ones; new connections get them.
    let renewed = ca.server("gateway, renewed");
    ca.write(&renewed, "gateway");
    let (ca_ref, renewed_der) = (&ca, &renewed.der);
    eventually(
        PATIENCE,
        "the renewed certificate is served",
        || async move {
            ca_ref
                .served_certificate(address)
                .await
                .expect("a handshake")
                == *renewed_der
        },
    )
    .await;
    let channel = ca.channel(address, None).await.expect("a TLS connection");
    AuthServiceClient::new(channel)
        .get_jwks(GetJwksRequest {})
        .await
        .expect("a call on a connection with the renewed certificate");
    stack.stop();
}
