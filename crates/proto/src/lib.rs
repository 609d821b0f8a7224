//! Generated gRPC types, clients and servers for Ferrobase's internal APIs.
//!
//! One module per `.proto` package under `proto/ferrobase`. The descriptor set
//! is exported for the gRPC reflection service every server runs.

/// Shared messages: the HTTP request/response envelopes the gateway forwards.
pub mod common {
    pub mod v1 {
        tonic::include_proto!("ferrobase.common.v1");
    }
}

/// The auth service.
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("ferrobase.auth.v1");
    }
}

/// The rest service.
pub mod rest {
    pub mod v1 {
        tonic::include_proto!("ferrobase.rest.v1");
    }
}

/// The storage service.
pub mod storage {
    pub mod v1 {
        tonic::include_proto!("ferrobase.storage.v1");
    }
}

/// The meta service.
pub mod meta {
    pub mod v1 {
        tonic::include_proto!("ferrobase.meta.v1");
    }
}

/// Encoded `FileDescriptorSet` of every Ferrobase package, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ferrobase_descriptor");

pub use common::v1::{Header, HttpRequest, HttpResponse};

impl HttpRequest {
    /// The first value of header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }
}

impl HttpResponse {
    /// The first value of header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }
}
