//! The public API of the system, generated at build time from the `.proto`
//! files beside this crate (see `build.rs`).
//!
//! - [`auth::v1`]: `auth.v1.AuthService`, accounts, sessions and signing keys.
//! - [`auth::internal::v1`]: `auth.internal.v1.SessionEventsService`, the
//!   session events other services act on; never routed by the gateway.
//! - [`tasks::v1`]: `tasks.v1.TaskService`, each user's tasks.
//! - [`FILE_DESCRIPTOR_SET`]: both files and their imports, encoded, for
//!   `grpc.reflection` so `grpcurl`/`buf curl` work without the `.proto` files.

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("auth.v1");
    }

    /// The auth-service's internal API, for the other services only.
    pub mod internal {
        pub mod v1 {
            tonic::include_proto!("auth.internal.v1");
        }
    }
}

pub mod tasks {
    pub mod v1 {
        tonic::include_proto!("tasks.v1");
    }
}

/// The encoded `google.protobuf.FileDescriptorSet` of both APIs.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor_set");
