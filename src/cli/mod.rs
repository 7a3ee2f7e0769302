//! The command line: parses arguments, calls the library, maps outcomes to exit codes.
//!
//! Exit codes: 0 ok, 1 failure, 2 bad usage or bad input. Errors go to stderr as
//! one clear line.

pub mod airgap;
mod config;
#[cfg(feature = "sim")]
mod sim;
use crate::app::{self, App};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::jobs::JobName;
use crate::remote::ErrorClass;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

mod generate;
pub use generate::Shell;

/// jfconnect: the entitlements and usage service of a JFrog Platform Deployment.
#[derive(Debug, Parser)]
#[command(name = "jfconnect", version = generate::VERSION, about, long_about = None)]
pub struct Cli {
    /// The configuration file, a JFrog system.yaml (its `jfconnect:` and `shared:` sections);
    /// default $JFCONNECT_CONFIG, else $JFROG_HOME/jfconnect/var/etc/system.yaml when it
    /// exists, else none. Every key can also be set by a JF_JFCONNECT_<KEY> variable.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: the HTTP API on port 8030 and the jobs on their schedules.
    Serve,
    /// Run the whole connected flow once against a local simulator, printing each step.
    #[cfg(feature = "demo")]
    Demo {
        /// Run the air-gapped round trip instead: bundles carried across by hand.
        #[arg(long)]
        airgapped: bool,
        /// Keep serving the admin console (and the API) afterwards, until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
    /// Run one job now and exit (0 on success).
    Jobs {
        /// What to do with jobs.
        #[command(subcommand)]
        action: JobsAction,
    },
    /// Print registration state, entitlements and each job's last and next run.
    Status {
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check the configuration: `config check [--show]`.
    Config {
        /// What to do.
        #[command(subcommand)]
        action: config::ConfigAction,
    },
    /// Check, in order, what jfconnect needs (config, data folder, license, network to JES and
    /// JCS, the JPD and its token, the clock, air-gapped keys and outbox), one line each with a
    /// fix for each failure; exit 0 when all pass, 1 otherwise. Creates no state.
    Doctor {
        /// Print JSON for scripts instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Key pairs for signing bundles (minisign-compatible files).
    Keys {
        /// What to do.
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Air-gapped mode: signed bundles carried across the gap by a person.
    Bundle {
        /// What to do.
        #[command(subcommand)]
        action: BundleAction,
    },
    /// The local simulator of JES, JCS and the JPD (for the demo, tests and benchmarks).
    #[cfg(feature = "sim")]
    Sim {
        /// What to do.
        #[command(subcommand)]
        action: sim::SimAction,
    },
    /// Print the shell completion script for bash, zsh or fish.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page, jfconnect(1), in roff (`jfconnect man | man -l -`).
    Man,
}

/// `keys` sub-commands.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Write a fresh key pair to PREFIX.pub and PREFIX.key (mode 0600, unencrypted, as
    /// `minisign -G -W`); refuses to overwrite.
    Generate {
        /// Path prefix of the two files.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
}

/// `bundle` sub-commands.
#[derive(Debug, Subcommand)]
pub enum BundleAction {
    /// Run the usage job once into a signed usage bundle (or, with no usage pending, write a
    /// registration bundle) and copy it to FILE.
    Export {
        /// Where to put the bundle; an existing file is kept (exit 2) unless --force.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE (and FILE-n.jfbundle beside it) if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Verify an entitlements bundle from the vendor and store its entitlements.
    Import {
        /// The bundle.
        file: PathBuf,
    },
    /// Verify any bundle with one public key (no configuration needed).
    Verify {
        /// The bundle.
        file: PathBuf,
        /// The signer's minisign public key file.
        #[arg(long, value_name = "KEY")]
        pubkey: PathBuf,
    },
    /// Show what a bundle claims, WITHOUT verifying it.
    Inspect {
        /// The bundle.
        file: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `jobs` sub-commands.
#[derive(Debug, Subcommand)]
pub enum JobsAction {
    /// Run a job now: entitlements, usage or archival.
    Run {
        /// The job.
        #[arg(value_enum)]
        job: JobName,
    },
}

/// The job names as clap's possible values, so `jobs run --help` lists them.
impl clap::ValueEnum for JobName {
    fn value_variants<'a>() -> &'a [Self] {
        &JobName::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

/// A failure at the edge: an exit code and one line for the user.
#[derive(Debug)]
pub struct Failure {
    /// 1 failure, 2 bad usage or input.
    pub code: u8,
    /// One line.
    pub message: String,
}

impl Failure {
    /// Exit code 1.
    pub fn failed(message: impl std::fmt::Display) -> Self {
        Failure {
            code: 1,
            message: message.to_string(),
        }
    }
    /// Exit code 2.
    pub(crate) fn bad_input(message: impl std::fmt::Display) -> Self {
        Failure {
            code: 2,
            message: message.to_string(),
        }
    }
}

impl From<app::AppError> for Failure {
    fn from(e: app::AppError) -> Self {
        match e {
            app::AppError::Client(_) | app::AppError::SameTokens(_) => Failure::bad_input(e),
            _ => Failure::failed(e),
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, Failure> {
    Config::load(cli.config.as_deref()).map_err(Failure::bad_input)
}

/// Where and how this command logs. Only `serve` writes log files (one writer per folder keeps
/// rotation safe); one-off commands log to stderr.
pub fn log_settings(cli: &Cli) -> crate::logging::LogSettings {
    let mut settings = crate::logging::LogSettings {
        no_color: crate::config::ProcessEnv::capture().no_color(),
        ..Default::default()
    };
    if let (Command::Serve, Ok(config)) = (&cli.command, load_config(cli)) {
        settings.format = config.log.format;
        settings.dir = config.log.dir.clone();
        settings.max_bytes = config.log.max_bytes;
        settings.max_files = config.log.max_files;
    }
    settings
}

fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Serve => serve(&cli).await,
        #[cfg(feature = "demo")]
        Command::Demo {
            airgapped: false,
            keep,
        } => crate::demo::run(&mut std::io::stdout(), *keep)
            .await
            .map_err(Failure::failed),
        #[cfg(feature = "demo")]
        Command::Demo {
            airgapped: true,
            keep,
        } => crate::demo::run_airgapped(&mut std::io::stdout(), *keep)
            .await
            .map_err(Failure::failed),
        Command::Keys {
            action: KeysAction::Generate { out },
        } => airgap::keys_generate(out),
        Command::Bundle { action } => bundle(&cli, action).await,
        Command::Jobs {
            action: JobsAction::Run { job },
        } => run_job(&cli, *job).await,
        Command::Status { json } => status(&cli, *json).await,
        Command::Config { action } => config::run(&cli, action),
        Command::Doctor { json } => doctor(&cli, *json).await,
        #[cfg(feature = "sim")]
        Command::Sim { action } => sim::run(action, clock()).await,
        Command::Completions { shell } => generate::completions(*shell, &mut std::io::stdout()),
        Command::Man => generate::man(&mut std::io::stdout()),
    }
}

async fn serve(cli: &Cli) -> Result<(), Failure> {
    let config = match load_config(cli) {
        Ok(c) => c,
        // A disabled service must start whatever else is wrong (JFrog users could not disable
        // JFConnect cleanly); it runs nothing that needs the rest.
        Err(f) => match Config::disabled_fallback(cli.config.as_deref()) {
            Some(c) => {
                tracing::warn!(error = %f.message, "configuration has errors, but jfconnect is disabled; starting for health checks only");
                c
            }
            None => return Err(f),
        },
    };
    tracing::info!(
        config_file = %config.file_description(),
        data_dir = %config.data_dir.display(),
        node = %config.shared.node.id,
        "jfconnect starting"
    );
    let _serving = app::ServeLock::acquire(&config.data_dir).map_err(Failure::failed)?;
    let addr = format!("{}:{}", config.bind, config.port);
    // A bad certificate or key is bad input: refused before anything starts.
    let tls = crate::server_tls::acceptor(&config).map_err(Failure::bad_input)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let cluster = crate::app::cluster::join(&config, Some(addr.clone())).await?;
    let service = Arc::new(App::build_in_cluster(config, clock(), None, true, cluster)?);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| Failure::failed(format!("cannot listen on {addr}: {e}")))?;
    let grpc = if service.config().grpc.enabled {
        let grpc_addr = format!("{}:{}", service.config().bind, service.config().grpc.port);
        let grpc = tokio::net::TcpListener::bind(&grpc_addr).await.map_err(|e| {
            Failure::bad_input(format!(
                "cannot listen on {grpc_addr} for gRPC (jfconnect.grpc.port, {}): {e}; choose another port or set jfconnect.grpc.enabled to false",
                crate::config::env_name("grpc.port"),
            ))
        })?;
        tracing::info!(address = %grpc_addr, "gRPC (jfconnect.v1.Entitlements) is serving");
        Some(grpc)
    } else {
        None
    };
    tracing::info!(address = %format!("{scheme}://{addr}"), jpd_id = %service.jpd_id(), "jfconnect is serving");
    // Under systemd (Type=notify) the unit is started only once the port is bound; elsewhere
    // (no NOTIFY_SOCKET) this does nothing.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot tell systemd that jfconnect is ready");
    }
    let listeners = crate::server::Listeners {
        http: listener,
        grpc,
    };
    crate::server::serve_tls(service, listeners, tls, shutdown_signal())
        .await
        .map_err(Failure::failed)
}

/// Completes on SIGTERM or SIGINT. The handlers are installed when this is called, not when
/// the future is first polled: a signal that arrives while the server starts (it may already
/// answer on another thread) stops it cleanly instead of killing it.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! { _ = wait(term) => {}, _ = wait(int) => {} }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run_job(cli: &Cli, job: JobName) -> Result<(), Failure> {
    let config = load_config(cli)?;
    if !config.enabled {
        return Err(Failure::failed(
            "jfconnect is disabled (jfconnect.enabled: false); no job runs",
        ));
    }
    if config.shared.database.settings.is_some() {
        // Outside `serve` this process is no member of the cluster: it holds no lease (only
        // the entitlements leaseholder calls JES and writes the JPD's schedule), and it could
        // not claim files in the shared usage ledger; running on the data folder's ledger
        // instead could upload or archive a file another node handles.
        return Err(Failure::failed(match job {
            JobName::Entitlements => "with shared.database set, the entitlements job runs inside `jfconnect serve` on the node holding its lease (`jfconnect status` names it); start it there with POST /api/v1/jobs/entitlements/run".to_string(),
            _ => format!("with shared.database set, the {job} job runs inside `jfconnect serve` on each node; start it there with POST /api/v1/jobs/{job}/run"),
        }));
    }
    let service = App::build(config, clock(), None, false)?;
    let scheduler = service
        .scheduler()
        .ok_or_else(|| Failure::failed("no job runs in this mode"))?;
    match scheduler.run_now(job).await {
        Ok(report) => {
            println!("{job}: {}", report.summary);
            Ok(())
        }
        // Air-gapped, nothing can come in before a person carries the registration bundle out:
        // that is the expected outcome of the first run, not a failure.
        Err(e) if job == JobName::Entitlements && e.class == ErrorClass::Unavailable => {
            match service.registration_to_carry() {
                Some(bundle) => {
                    println!(
                        "{job}: no entitlements bundle imported yet; carry this registration bundle to the vendor:\n{}\nthen import the entitlements bundle they answer with `jfconnect bundle import FILE`",
                        bundle.display()
                    );
                    Ok(())
                }
                None => Err(job_failed(job, &e)),
            }
        }
        Err(e) => Err(job_failed(job, &e)),
    }
}

fn job_failed(job: JobName, e: &crate::jobs::JobError) -> Failure {
    Failure::failed(format!("{job} job failed ({}): {}", e.class, e.message))
}

async fn doctor(cli: &Cli, json: bool) -> Result<(), Failure> {
    let report = crate::doctor::run(cli.config.as_deref(), clock()).await;
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(Failure::failed)?;
        println!("{text}");
    } else {
        print!("{}", report.render());
    }
    if report.ok {
        Ok(())
    } else {
        Err(Failure::failed(format!(
            "doctor: {} of {} checks failed",
            report
                .checks
                .iter()
                .filter(|c| c.outcome == crate::doctor::Outcome::Fail)
                .count(),
            report.checks.len()
        )))
    }
}

async fn status(cli: &Cli, json: bool) -> Result<(), Failure> {
    let config = load_config(cli)?;
    let service = App::open_read_only(config, clock())?;
    let report = crate::status::with_cluster(crate::status::report(&service).await, &service).await;
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(Failure::failed)?;
        println!("{text}");
    } else {
        print!(
            "{}",
            crate::status::render_table(&report, service.clock().now())
        );
    }
    Ok(())
}

async fn bundle(cli: &Cli, action: &BundleAction) -> Result<(), Failure> {
    use airgap as commands;
    match action {
        BundleAction::Verify { file, pubkey } => commands::verify(file, pubkey),
        BundleAction::Inspect { file, json } => commands::inspect(file, *json),
        BundleAction::Import { file } => commands::import(load_config(cli)?, clock(), file).await,
        BundleAction::Export { out, force } => {
            commands::export(load_config(cli)?, clock(), out, *force).await
        }
    }
}

#[cfg(all(test, unix))]
mod signal_tests {
    /// A SIGTERM that arrives after `shutdown_signal()` is called but before its future is
    /// polled completes it. Failed (the test process died of the signal) while the handler was
    /// installed on the first poll: `serve` could answer health checks on another thread before
    /// that poll, and a SIGTERM then killed it with no exit code.
    #[tokio::test]
    async fn a_sigterm_before_the_first_poll_stops_cleanly() {
        let stop = super::shutdown_signal();
        let sent = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(std::process::id().to_string())
            .status()
            .map(|s| s.success());
        assert!(matches!(sent, Ok(true)), "kill ran");
        tokio::time::timeout(std::time::Duration::from_secs(10), stop)
            .await
            .expect("the signal completes the shutdown future");
    }
}
