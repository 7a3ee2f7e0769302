//! The local simulator of everything jfconnect talks to: JES (register, entitlements), JCS
//! (usage upload) and the JPD's Access and Artifactory endpoints, all on one address.
//!
//! The demo, the integration tests and the benchmarks need a remote side that is real enough to
//! prove the promises of docs/architecture.md: it deduplicates usage by SHA-256, it stores deployed
//! archives and checks them against their index, it persists what it received across restarts,
//! and it fails on demand (faults). `docs/protocol.md` is the contract it implements; the wire
//! types come from [`crate::protocol`].
//!
//! Like mini-redis, [`run`] takes an already-bound listener and a shutdown future, so tests bind
//! `127.0.0.1:0` and read the port back; [`spawn`] does exactly that for them.
//!
//! Code map: [`fault`] (fault grammar, pure), `paths` (request classification and artifact
//! paths, pure), `archive` (archive index check, pure), `server` (accept loop, connection
//! reset), `routes` (routing, fault middleware, `/_sim/*`), `reply` (what every handler shares),
//! `jes`, `jcs`, `jpd` (the three remotes' handlers), `jes_book`, `usage_store`, `artifacts`,
//! `archive_book` (what they keep on disk), `state` (shared state and data folder layout),
//! `sync` (the poison-tolerant mutex lock). The stores never import the handlers or the
//! shared state, so no files here import each other in a loop.

mod archive;
mod archive_book;
mod artifacts;
pub mod fault;
mod jcs;
mod jes;
mod jes_book;
mod jpd;
mod paths;
mod reply;
mod routes;
mod server;
mod state;
mod sync;
pub mod tls;
mod usage_store;
pub mod vendor;

pub use fault::FaultAction;
pub use fault::{parse_fault, Endpoint, Fault};
pub use state::SimStats;

use crate::secret::Secret;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Errors starting or running the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A `--fault` spec could not be read.
    #[error("bad fault {spec:?}: {reason}")]
    BadFault {
        /// The spec as given (cut to 100 characters).
        spec: String,
        /// What is wrong and how to write it.
        reason: String,
    },
    /// The data folder could not be read or written.
    #[error("simulator cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file in the data folder is damaged.
    #[error(
        "simulator data file {path} is damaged ({reason}); remove it or use a fresh --data folder"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The TLS certificate or configuration could not be made.
    #[error("simulator cannot set up TLS: {0}")]
    Tls(String),
    /// The listening socket could not be set up.
    #[error("simulator cannot listen: {0}")]
    Listen(#[source] std::io::Error),
    /// The simulator's background task ended abnormally.
    #[error("simulator task failed: {0}")]
    Task(String),
}

impl SimError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        SimError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Where received usage, artifacts and registrations are kept (created if missing).
    pub data_dir: PathBuf,
    /// Faults active from the start.
    pub faults: Vec<Fault>,
    /// License keys JES accepts; `None` accepts any key starting `JFL-` of 12 characters or more.
    pub accepted_licenses: Option<Vec<String>>,
    /// When set, Access and Artifactory accept only this bearer token; otherwise any non-empty one.
    pub jpd_token: Option<Secret>,
    /// Largest usage batch body accepted, in bytes (default 64 MiB).
    pub usage_body_limit: usize,
    /// Largest artifact accepted, in bytes (default 8 GiB).
    pub max_artifact_bytes: u64,
    /// Serve HTTPS with a CA and certificate made on start (CA written to `<data>/tls/ca.pem`).
    pub tls: bool,
    /// Where the simulator reads "now" (the system clock by default).
    pub clock: crate::clock::SharedClock,
}

impl SimOptions {
    /// Default options keeping data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        SimOptions {
            data_dir: data_dir.into(),
            faults: Vec::new(),
            accepted_licenses: None,
            jpd_token: None,
            usage_body_limit: 64 * 1024 * 1024,
            max_artifact_bytes: 8 * 1024 * 1024 * 1024,
            tls: false,
            clock: std::sync::Arc::new(crate::clock::SystemClock),
        }
    }
}

/// Serves the simulator on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    opts: SimOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SimError> {
    let tls = make_tls(&opts)?;
    let state = Arc::new(state_open(opts).await?);
    server::serve(
        listener,
        routes::router(state),
        tls.map(|t| t.acceptor),
        shutdown,
    )
    .await
}

fn make_tls(opts: &SimOptions) -> Result<Option<tls::SimTls>, SimError> {
    if opts.tls {
        tls::make(&opts.data_dir).map(Some)
    } else {
        Ok(None)
    }
}

async fn state_open(opts: SimOptions) -> Result<state::SimState, SimError> {
    tokio::task::spawn_blocking(move || state::SimState::open(opts))
        .await
        .map_err(|e| SimError::Task(e.to_string()))?
}

/// A simulator running in the background on `127.0.0.1`, stopped when dropped.
pub struct SimHandle {
    addr: SocketAddr,
    ca_file: Option<PathBuf>,
    state: Arc<state::SimState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), SimError>>>,
}

impl SimHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (or `https://localhost:<port>` with TLS), to use as
    /// `jes.url`, `jcs.url` and `jpd.url`.
    pub fn base_url(&self) -> String {
        match self.ca_file {
            Some(_) => format!("https://{}:{}", tls::TLS_HOST, self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    /// With TLS, the CA certificate to trust (`jfconnect.tls.ca_file`).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The current figures (what `GET /_sim/stats` answers).
    pub fn stats(&self) -> SimStats {
        self.state.stats()
    }

    /// Replaces the active faults.
    pub fn set_faults(&self, faults: Vec<Fault>) {
        *sync::lock(&self.state.faults) = fault::FaultSet::new(faults);
    }

    /// Stops it and waits until it has stopped.
    pub async fn stop(mut self) -> Result<(), SimError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|e| SimError::Task(e.to_string()))?,
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a simulator on `127.0.0.1` with a free port, in the background (tests, demo).
pub async fn spawn(opts: SimOptions) -> Result<SimHandle, SimError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(SimError::Listen)?;
    let addr = listener.local_addr().map_err(SimError::Listen)?;
    let tls = make_tls(&opts)?;
    let ca_file = tls.as_ref().map(|t| t.ca_file.clone());
    let state = Arc::new(state_open(opts).await?);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let router = routes::router(state.clone());
    let task = tokio::spawn(server::serve(
        listener,
        router,
        tls.map(|t| t.acceptor),
        async move {
            let _ = stop_rx.await;
        },
    ));
    Ok(SimHandle {
        addr,
        ca_file,
        state,
        stop: Some(stop_tx),
        task: Some(task),
    })
}

/// Same as [`spawn`]; the name tests reach for.
pub async fn spawn_for_test(opts: SimOptions) -> Result<SimHandle, SimError> {
    spawn(opts).await
}
