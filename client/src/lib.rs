//! An auto-updating entitlements cache for products that ask jfconnect.
//!
//! A product builds one [`Client`] at start and asks it [`Client::is_entitled`] as often as it
//! likes: the answer comes from memory, never from the network. Behind it a task watches
//! jfconnect (a gRPC `WatchEntitlements` stream, or an HTTP long-poll of
//! `GET /api/v1/entitlements?wait=` where gRPC is blocked), reconnects with exponential backoff
//! and jitter when jfconnect restarts or is down, and keeps serving the last good entitlements
//! meanwhile, optionally persisted to a file so that a product restarting while jfconnect is
//! down still knows them.
//!
//! ```no_run
//! # async fn run() -> Result<(), jfconnect_client::ClientError> {
//! let client = jfconnect_client::Client::connect("http://127.0.0.1:8035", "token").await?;
//! if client.is_entitled("xray", "scan") {
//!     // scan
//! }
//! # Ok(()) }
//! ```

mod backoff;
mod cache;
mod client;
mod grpc;
mod inner;
mod long_poll;
mod watcher;

pub use backoff::Backoff;
pub use cache::{Entitlement, Snapshot, Source};
pub use client::{Client, ClientBuilder, ClientError};
pub use inner::Link;

/// The generated gRPC types of `proto/jfconnect/v1/entitlements.proto` (package
/// `jfconnect.v1`), client and server side; jfconnect serves with the same code.
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("jfconnect.v1");

    /// The encoded `FileDescriptorSet` of the proto, for a reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/jfconnect_v1_descriptor.bin"));
}
