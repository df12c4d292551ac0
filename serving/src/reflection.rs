//! `grpc.reflection` v1 and v1alpha over both APIs and health, so `grpcurl`
//! and `buf curl` work with no `.proto` files at hand. Production setups
//! that do not want to publish their schema switch it off with a flag.

use tonic_reflection::server::{
    v1::{ServerReflection as V1, ServerReflectionServer as V1Server},
    v1alpha::{ServerReflection as V1Alpha, ServerReflectionServer as V1AlphaServer},
};

/// The public APIs: what the gateway fronts. The auth-service's internal
/// API is not among them.
pub const PUBLIC_SERVICES: [&str; 2] = ["auth.v1.AuthService", "tasks.v1.TaskService"];

/// Both reflection services, listing both public APIs (what the gateway
/// fronts).
pub fn services() -> (V1Server<impl V1>, V1AlphaServer<impl V1Alpha>) {
    services_for(&PUBLIC_SERVICES)
}

/// Both reflection services, listing only `names` (and health and
/// reflection themselves). A process lists what it serves, so `grpcurl
/// list` never shows a service that would answer UNIMPLEMENTED.
pub fn services_for(names: &[&str]) -> (V1Server<impl V1>, V1AlphaServer<impl V1Alpha>) {
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(todo_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for name in names {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    let v1 = builder()
        .build_v1()
        .expect("the compiled-in descriptor sets are valid");
    let v1alpha = builder()
        .build_v1alpha()
        .expect("the compiled-in descriptor sets are valid");
    (v1, v1alpha)
}
