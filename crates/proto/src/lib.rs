//! Runnel's gRPC messages and services, generated from the `.proto` files under
//! `proto/` at the repository root.
//!
//! - [`v1`]: the public API (`runnel.v1`): streams, records, consumer groups, cluster.
//!   Error codes and what a client does about each: `docs/errors.md`.
//! - [`internal::v1`]: the node-to-node Raft transport (`runnel.internal.v1`), used by
//!   `runnel-raft`. Every message names its Raft group.
//!
//! *API boundary*: this crate holds generated code and plain conversions only. The
//! mapping between these messages and openraft's types lives in `runnel-raft`
//! (`network/wire.rs`), next to the code that depends on openraft.

#[cfg(not(madsim))]
pub mod codec;

pub mod internal {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("runnel.internal.v1");
    }
}

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("runnel.v1");
}

/// The standard gRPC health checking protocol (`grpc.health.v1`).
pub mod health {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("grpc.health.v1");
}

/// Every message and service above as an encoded `FileDescriptorSet`, for gRPC server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/runnel_descriptor.bin"));
