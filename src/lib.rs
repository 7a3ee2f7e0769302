//! jfconnect: the entitlements and usage service of a JFrog Platform Deployment.
//!
//! See `docs/architecture.md` for the code map. The binary (`main.rs`) is a thin shell around
//! [`cli::run`].

#![deny(missing_docs)]

#[doc(hidden)]
pub mod api;
pub mod app;
pub mod bundle;
pub mod cli;
pub mod clock;
pub mod config;
#[doc(hidden)]
pub mod console;
#[cfg(feature = "demo")]
#[doc(hidden)]
pub mod demo;
#[doc(hidden)]
pub mod doctor;
#[doc(hidden)]
pub mod entitlements;
#[doc(hidden)]
pub mod grpc;
#[doc(hidden)]
pub mod ha;
#[doc(hidden)]
pub mod http;
#[doc(hidden)]
pub mod jobs;
#[doc(hidden)]
pub mod jpd;
#[doc(hidden)]
pub mod logging;
#[doc(hidden)]
pub mod pipeline;
pub mod protocol;
#[doc(hidden)]
pub mod remote;
pub mod secret;
pub mod server;
#[doc(hidden)]
pub mod server_tls;
#[cfg(feature = "sim")]
#[doc(hidden)]
pub mod sim;
#[doc(hidden)]
pub mod state;
#[doc(hidden)]
pub mod status;
#[doc(hidden)]
pub mod store_proxy;
#[doc(hidden)]
pub mod transport;
#[doc(hidden)]
pub mod words;
