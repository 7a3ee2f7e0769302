//! `jfconnect demo`: the whole connected flow once, against the simulator started in-process,
//! with a temporary data folder and license, printing each step in plain words.
//!
//! The demo drives the real service: the same `App`, scheduler, jobs, transport and HTTP
//! API as `serve`; only the remote side is the simulator, and jobs are run one by one instead
//! of on their 24 h schedules.

pub mod airgapped;
use crate::app::App;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::jobs::{JobError, JobName, JobReport};
use crate::sim::{self, SimHandle, SimOptions};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A step did not do what the demo expects.
    #[error("demo step \"{step}\" went wrong: {reason}")]
    Step {
        /// The step.
        step: &'static str,
        /// What happened.
        reason: String,
    },
    /// The output could not be written.
    #[error("cannot write the demo's output: {0}")]
    Output(#[from] std::io::Error),
}

fn step(step: &'static str) -> impl Fn(String) -> DemoError {
    move |reason| DemoError::Step { step, reason }
}

/// The license the demo starts with: the simulator refuses it, as JES would an expired one.
const BAD_LICENSE: &str = "TRIAL-EXPIRED";
/// How many usage files the demo drops into the spool.
const USAGE_FILES: usize = 200;

/// Writes `n` usage files the way a writer should (temp name, then rename), dated over the last
/// few days, with their mtime set back past the spool's settle window (as files left there
/// earlier by the Observability service would be).
fn write_usage_files(spool: &std::path::Path, n: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(spool)?;
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let products = ["artifactory", "xray", "distribution", "curation"];
    let old = std::time::SystemTime::from(now) - Duration::from_secs(60);
    for i in 0..n {
        let ts = now - chrono::Duration::hours((i % 72) as i64);
        let body = format!(
            "{{\"product\":\"{}\",\"timestamp\":\"{}\",\"metric\":\"storage_bytes\",\"value\":{}}}\n",
            products[i % products.len()],
            ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            1_000_000 + i * 7919
        );
        let tmp = spool.join(format!(".usage-{i:04}.json.tmp"));
        std::fs::write(&tmp, body)?;
        std::fs::File::options()
            .write(true)
            .open(&tmp)?
            .set_modified(old)?;
        std::fs::rename(&tmp, spool.join(format!("usage-{i:04}.json")))?;
    }
    Ok(())
}

/// The license the demo fixes it with.
const GOOD_LICENSE: &str = "JFL-DEMO-0000-1111-2222";

struct Demo<'a, W: Write> {
    out: &'a mut W,
    service: Arc<App>,
    sim: SimHandle,
    api: String,
    http: crate::http::Client,
}

/// Runs the demo, writing each step to `out`; with `keep`, serves the console on until Ctrl-C.
pub async fn run(out: &mut impl Write, keep: bool) -> Result<(), DemoError> {
    let dir = tempfile::tempdir()?;
    let sim = sim::spawn(SimOptions::new(dir.path().join("sim")))
        .await
        .map_err(|e| step("start the simulator")(e.to_string()))?;
    writeln!(out, "jfconnect demo: the connected flow once, against a local simulator of JES, JCS and the JPD")?;
    writeln!(out, "  simulator  {}", sim.base_url())?;
    writeln!(out, "  data       {}", dir.path().join("data").display())?;

    let mut config = Config::defaults(dir.path().join("data"));
    let base = url::Url::parse(&sim.base_url()).map_err(|e| step("configure")(e.to_string()))?;
    config.jes.url = base.clone();
    config.jcs.url = base.clone();
    config.jpd.url = base;
    config.jpd.token = Some(crate::secret::Secret::new("demo-jpd-token"));
    let license = dir.path().join("license");
    crate::state::write_private(&license, BAD_LICENSE.as_bytes())?;
    config.license.file = Some(license);
    config.retry.initial = Duration::from_secs(30);
    let service = Arc::new(
        App::build(config, Arc::new(SystemClock), None, true)
            .map_err(|e| step("build the service")(e.to_string()))?,
    );

    // The HTTP API and the console (no background scheduler): the demo runs the jobs itself,
    // in order.
    let console = Console::start(service.clone()).await?;
    let api = console.base.clone();
    writeln!(out, "  HTTP API   {api} (JPD id {})", service.jpd_id())?;
    console.announce(out, &service)?;

    let http = crate::http::loopback_client(Duration::from_secs(30))
        .map_err(|e| step("HTTP client")(e.to_string()))?;
    let mut demo = Demo {
        out,
        service,
        sim,
        api,
        http,
    };
    let mut result = demo.steps().await;
    if result.is_ok() && keep {
        result = console.keep(demo.out, &demo.service).await;
    }
    console.stop().await;
    let _ = demo.sim.stop().await;
    result
}

/// The API and the console of a demo's service, on a loopback port.
pub(crate) struct Console {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Console {
    /// Serves `service`'s API and console on `127.0.0.1` (a free port).
    pub(crate) async fn start(service: Arc<App>) -> Result<Console, DemoError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = crate::api::router(service.clone()).merge(crate::console::router(service));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
        });
        Ok(Console { base, stop, server })
    }

    /// Prints the console's address and where its admin token is (never the token).
    pub(crate) fn announce(&self, out: &mut impl Write, service: &App) -> Result<(), DemoError> {
        writeln!(
            out,
            "  console    {}/ui/ (sign in with the admin token in {}; --keep keeps it open)\n",
            self.base,
            admin_token_file(service).display()
        )?;
        Ok(())
    }

    /// With `--keep`: serves on until Ctrl-C.
    pub(crate) async fn keep(&self, out: &mut impl Write, service: &App) -> Result<(), DemoError> {
        // The handler is in place before the line that invites Ctrl-C is printed.
        #[cfg(unix)]
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        writeln!(
            out,
            "\nThe console stays open at {}/ui/ (admin token in {}); press Ctrl-C to stop.",
            self.base,
            admin_token_file(service).display()
        )?;
        out.flush()?;
        #[cfg(unix)]
        interrupt.recv().await;
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await?;
        writeln!(out, "stopped")?;
        Ok(())
    }

    /// Stops serving.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

/// The file holding the token the console's sign-in takes.
fn admin_token_file(service: &App) -> std::path::PathBuf {
    let config = service.config();
    config
        .api
        .admin_token_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("admin.token"))
}

impl<W: Write> Demo<'_, W> {
    async fn run_job(&self, job: JobName) -> Result<JobReport, JobError> {
        match &self.service.scheduler() {
            Some(s) => s.run_now(job).await,
            None => Err(JobError::local("jfconnect is disabled")),
        }
    }

    async fn next_retry(&self, job: JobName) -> String {
        let next = crate::status::schedules(&self.service)
            .await
            .jobs
            .get(&job)
            .cloned();
        match next {
            Some(s) if s.blocked => {
                "held back until the license changes or jfconnect restarts".into()
            }
            Some(s) => match s.next_run {
                Some(t) => format!(
                    "next try in {}s (exponential backoff with full jitter, attempt {})",
                    (t - crate::clock::Clock::now(&crate::clock::SystemClock))
                        .num_seconds()
                        .max(0),
                    s.attempt
                ),
                None => "due now".into(),
            },
            None => "not scheduled".into(),
        }
    }

    async fn steps(&mut self) -> Result<(), DemoError> {
        writeln!(self.out, "1. Register the license {BAD_LICENSE:?}… (the value is shown here only because it is a demo)")?;
        let e = self
            .run_job(JobName::Entitlements)
            .await
            .err()
            .ok_or_else(|| step("register a bad license")("JES accepted it".into()))?;
        writeln!(self.out, "   ✗ {} [{}]", e.message, e.class)?;
        writeln!(
            self.out,
            "   → {}\n",
            self.next_retry(JobName::Entitlements).await
        )?;

        writeln!(
            self.out,
            "2. Fix the license through the API (PUT /api/v1/license, admin token)…"
        )?;
        let resp = self
            .http
            .put(format!("{}/api/v1/license", self.api))
            .bearer_auth(
                self.service
                    .admin_token()
                    .map(|t| t.expose())
                    .unwrap_or_default(),
            )
            .body(GOOD_LICENSE)
            .send()
            .await
            .map_err(|e| step("PUT the license")(e.to_string()))?;
        writeln!(
            self.out,
            "   API answered {}; the rejected block is lifted",
            resp.status()
        )?;
        let r = self
            .run_job(JobName::Entitlements)
            .await
            .map_err(|e| step("register the fixed license")(e.message))?;
        writeln!(self.out, "   ✓ {}\n", r.summary)?;

        writeln!(
            self.out,
            "3. JES fails once with HTTP 500 (simulator fault entitlements=500x1)…"
        )?;
        let fault =
            sim::parse_fault("entitlements=500x1").map_err(|e| step("fault")(e.to_string()))?;
        self.sim.set_faults(vec![fault]);
        let e = self
            .run_job(JobName::Entitlements)
            .await
            .err()
            .ok_or_else(|| step("JES 500")("the refresh did not fail".into()))?;
        writeln!(self.out, "   ✗ {} [{}]", e.message, e.class)?;
        writeln!(
            self.out,
            "   → {}; retrying now instead of waiting",
            self.next_retry(JobName::Entitlements).await
        )?;
        let r = self
            .run_job(JobName::Entitlements)
            .await
            .map_err(|e| step("retry after 500")(e.message))?;
        writeln!(self.out, "   ✓ {}\n", r.summary)?;

        self.usage().await?;
        self.show_entitlements().await
    }

    async fn usage(&mut self) -> Result<(), DemoError> {
        let spool = self.service.config().usage.spool_dir.clone();
        writeln!(
            self.out,
            "4. The Observability service leaves {USAGE_FILES} usage files in {}…",
            spool.display()
        )?;
        write_usage_files(&spool, USAGE_FILES)
            .map_err(|e| step("write usage files")(e.to_string()))?;
        let r = self
            .run_job(JobName::Usage)
            .await
            .map_err(|e| step("upload usage")(e.message))?;
        let stats = self.sim.stats();
        writeln!(self.out, "   ✓ {}", r.summary)?;
        writeln!(
            self.out,
            "   JCS holds {} distinct usage files, each identified by the SHA-256 of its bytes\n",
            stats.usage_received_unique
        )?;

        writeln!(
            self.out,
            "5. Archive the uploaded files into the JPD's Artifactory…"
        )?;
        let r = self
            .run_job(JobName::Archival)
            .await
            .map_err(|e| step("archive usage")(e.message))?;
        writeln!(self.out, "   ✓ {}", r.summary)?;
        let left = std::fs::read_dir(&spool)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0);
        let stats = self.sim.stats();
        writeln!(
            self.out,
            "   Artifactory verified {} usage files inside {} archive(s) by their index; the spool {}\n",
            stats.archived_usage_files,
            stats.archives_stored,
            if left == 0 { "is empty".to_string() } else { format!("still holds {left} files") }
        )?;
        if left != 0 || stats.archived_usage_files != USAGE_FILES as u64 {
            return Err(step("archive usage")(
                "not every usage file was archived".into(),
            ));
        }
        Ok(())
    }

    async fn show_entitlements(&mut self) -> Result<(), DemoError> {
        writeln!(
            self.out,
            "Entitlements now served at GET {}/api/v1/entitlements:",
            self.api
        )?;
        let v: serde_json::Value = self
            .http
            .get(format!("{}/api/v1/entitlements", self.api))
            .bearer_auth(
                self.service
                    .api_token()
                    .map(|t| t.expose())
                    .unwrap_or_default(),
            )
            .send()
            .await
            .map_err(|e| step("GET entitlements")(e.to_string()))?
            .json()
            .await
            .map_err(|e| step("GET entitlements")(e.to_string()))?;
        writeln!(
            self.out,
            "   subscription {} ({})",
            v["subscription_id"].as_str().unwrap_or("?"),
            v["subscription_type"].as_str().unwrap_or("?")
        )?;
        for e in v["entitlements"].as_array().into_iter().flatten() {
            writeln!(
                self.out,
                "   - {:<14} {}",
                e["product"].as_str().unwrap_or("?"),
                e["feature"].as_str().unwrap_or("?")
            )?;
        }
        Ok(())
    }
}

/// `jfconnect demo --airgapped`: the air-gapped round trip once (see [`crate::airgap::demo`]).
pub(crate) async fn run_airgapped(out: &mut impl Write, keep: bool) -> Result<(), DemoError> {
    airgapped::run(out, keep).await
}
