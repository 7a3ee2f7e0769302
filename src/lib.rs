//! jfconnect: the entitlements and usage service of a JFrog Platform Deployment.
//!
//! See `docs/architecture.md` for the code map. The binary (`main.rs`) is a thin shell around
//! [`cli::run`].

pub mod api;
pub mod app;
pub mod bundle;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
#[cfg(feature = "demo")]
pub mod demo;
pub mod doctor;
pub mod entitlements;
pub mod grpc;
pub mod ha;
pub mod http;
pub mod jobs;
pub mod jpd;
pub mod logging;
pub mod pipeline;
pub mod protocol;
pub mod remote;
pub mod secret;
pub mod server;
pub mod server_tls;
#[cfg(feature = "sim")]
pub mod sim;
pub mod state;
pub mod status;
pub mod store_proxy;
pub mod transport;
pub mod words;
