//! jfconnect: the entitlements and usage service of a JFrog Platform Deployment.
//!
//! See `docs/architecture.md` for the code map. The binary (`main.rs`) is a thin shell around
//! [`cli::run`].

pub mod bundle;
pub mod clock;
pub mod config;
pub mod http;
pub mod jobs;
pub mod protocol;
pub mod secret;
pub mod state;
pub mod transport;
