//! gRPC wire types of the calls backend, generated at build time from `proto/calls/**.proto`.
//!
//! - [`mediatoken::v1`]: the media-token service (Agora RTC token issuance).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC server reflection.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod mediatoken {
    pub mod v1 {
        tonic::include_proto!("calls.mediatoken.v1");
    }
}

/// Encoded `FileDescriptorSet` of every service, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("calls_descriptor");
