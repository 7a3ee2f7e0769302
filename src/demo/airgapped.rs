//! `jfconnect demo --airgapped`: the air-gapped round trip once, printing each step.
//!
//! Everything runs in one kept temp folder (printed, so a person can look at the bundles and
//! paste the manual check at the end): a vendor key made on the fly, the JPD's data folder and
//! outbox, and the vendor portal's state. The JPD's Artifactory is the local simulator (inside
//! the gap the JPD is reachable); JES and JCS are never called. The real service runs the
//! jobs: the same scheduler, jobs, pipeline and archival code as online, with the air-gapped
//! transport the configuration selects.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::DemoError;
use crate::app::App;
use crate::bundle::Kind;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::jobs::{JobName, JobReport};
use crate::sim::vendor::answer_bundle;
use crate::sim::{self, SimOptions};

/// How many usage files the demo drops into the spool.
const USAGE_FILES: usize = 12;
/// The demo's license (shown because it is a demo).
const LICENSE: &str = "JFL-AIRGAP-DEMO-0001";

fn step(step: &'static str) -> impl Fn(String) -> DemoError {
    move |reason| DemoError::Step { step, reason }
}

/// Usage files in the documented shape, with their mtime past the spool's settle window.
fn write_usage_files(spool: &Path, n: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(spool)?;
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let old = std::time::SystemTime::from(now) - Duration::from_secs(60);
    for i in 0..n {
        let ts = now - chrono::Duration::hours(i as i64);
        let body = format!(
            "{{\"product\":\"artifactory\",\"timestamp\":\"{}\",\"metric\":\"requests\",\"value\":{}}}\n",
            ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            100 + i
        );
        let tmp = spool.join(format!(".airgap-usage-{i:03}.tmp"));
        std::fs::write(&tmp, body)?;
        std::fs::File::options()
            .write(true)
            .open(&tmp)?
            .set_modified(old)?;
        std::fs::rename(&tmp, spool.join(format!("airgap-usage-{i:03}.json")))?;
    }
    Ok(())
}

struct Run<'a, W: Write> {
    out: &'a mut W,
    dir: PathBuf,
    service: Arc<App>,
    clock: SharedClock,
}

/// Runs the air-gapped demo, writing each step to `out`; with `keep`, serves the console on
/// until Ctrl-C.
pub async fn run(out: &mut impl Write, keep: bool) -> Result<(), DemoError> {
    let dir = tempfile::Builder::new()
        .prefix("jfconnect-airgap-demo-")
        .tempdir()?
        .keep();
    let sim = sim::spawn(SimOptions::new(dir.join("sim")))
        .await
        .map_err(|e| step("start the simulator")(e.to_string()))?;
    writeln!(
        out,
        "jfconnect demo --airgapped: entitlements in and usage out as signed bundle files"
    )?;
    writeln!(
        out,
        "  folder     {} (kept, so you can check the bundles; remove it when done)",
        dir.display()
    )?;
    writeln!(
        out,
        "  JPD        {} (the simulator's Artifactory, reachable inside the gap)",
        sim.base_url()
    )?;
    writeln!(out, "  JES, JCS   not reachable: nothing is sent to them\n")?;

    let vendor_key = dir.join("vendor");
    let sk = crate::bundle::keys_generate(&vendor_key)
        .map_err(|e| step("make the vendor key")(e.to_string()))?;
    writeln!(out, "0. The vendor made its key pair {}.{{pub,key}} (key id {}); the JPD trusts vendor.pub (airgap.vendor_public_keys)\n", vendor_key.display(), sk.id)?;

    let clock: SharedClock = Arc::new(SystemClock);
    let mut config = Config::defaults(dir.join("data"));
    config.airgap.enabled = true;
    config.airgap.outbox_dir = dir.join("outbox");
    config.airgap.vendor_public_keys = vec![dir.join("vendor.pub")];
    config.jpd.url =
        url::Url::parse(&sim.base_url()).map_err(|e| step("configure")(e.to_string()))?;
    config.jpd.token = Some(crate::secret::Secret::new("demo-jpd-token"));
    let license = dir.join("license");
    crate::state::write_private(&license, LICENSE.as_bytes())?;
    config.license.file = Some(license);
    config.retry.initial = Duration::from_secs(30);
    let service = Arc::new(
        App::build(config, clock.clone(), None, true)
            .map_err(|e| step("build the service")(e.to_string()))?,
    );
    let console = super::Console::start(service.clone()).await?;
    console.announce(out, &service)?;
    let mut run = Run {
        out,
        dir,
        service,
        clock,
    };
    let mut result = run.steps(&sim).await;
    if result.is_ok() && keep {
        result = console.keep(run.out, &run.service).await;
    }
    console.stop().await;
    let _ = sim.stop().await;
    result
}

impl<W: Write> Run<'_, W> {
    async fn job(&self, job: JobName) -> Result<JobReport, crate::jobs::JobError> {
        match &self.service.scheduler() {
            Some(s) => s.run_now(job).await,
            None => Err(crate::jobs::JobError::local("jfconnect is disabled")),
        }
    }

    fn answer(&mut self, input: &Path, n: u32) -> Result<PathBuf, DemoError> {
        let out = self.dir.join(format!("answer-{n}.jfbundle"));
        let o = answer_bundle(
            &self.dir.join("vendor-state"),
            &self.dir.join("vendor.key"),
            input,
            &out,
            self.clock.clone(),
        )
        .map_err(|e| step("vendor answers")(e.to_string()))?;
        for line in o.to_string().lines() {
            writeln!(self.out, "   {line}")?;
        }
        Ok(out)
    }

    async fn import(&mut self, file: &Path) -> Result<(), DemoError> {
        let o = self
            .service
            .import_entitlements_bundle(file)
            .await
            .map_err(|e| step("import")(e.to_string()))?;
        writeln!(self.out, "   ✓ {}", o.summary())?;
        Ok(())
    }

    async fn steps(&mut self, sim: &sim::SimHandle) -> Result<(), DemoError> {
        writeln!(self.out, "1. The entitlements job registers the license {LICENSE:?}: with no JES, it writes a registration bundle")?;
        let e = self
            .job(JobName::Entitlements)
            .await
            .err()
            .ok_or_else(|| step("register")("entitlements arrived from nowhere".into()))?;
        writeln!(self.out, "   → {} [{}]", e.message, e.class)?;
        let registration = self.newest(Kind::Registration)?;
        writeln!(
            self.out,
            "   registration bundle: {}\n",
            registration.display()
        )?;

        writeln!(self.out, "2. A person carries it to the vendor portal (jfconnect sim answer), which pins the JPD's key on first contact")?;
        let answer1 = self.answer(&registration, 1)?;
        writeln!(self.out)?;

        writeln!(
            self.out,
            "3. Back inside the gap: jfconnect bundle import {}",
            answer1.display()
        )?;
        self.import(&answer1).await?;
        let r = self
            .job(JobName::Entitlements)
            .await
            .map_err(|e| step("entitlements after import")(e.message))?;
        writeln!(self.out, "   entitlements job: {}", r.summary)?;
        let again = self.service.import_entitlements_bundle(&answer1).await;
        match again {
            Err(e) => writeln!(self.out, "   importing it a second time is refused: {e}\n")?,
            Ok(_) => return Err(step("replay")("a replayed bundle was accepted".into())),
        }

        let spool = self.service.config().usage.spool_dir.clone();
        writeln!(
            self.out,
            "4. The Observability service leaves {USAGE_FILES} usage files in {}",
            spool.display()
        )?;
        write_usage_files(&spool, USAGE_FILES).map_err(|e| step("usage files")(e.to_string()))?;
        let r = self
            .job(JobName::Usage)
            .await
            .map_err(|e| step("usage")(e.message))?;
        let usage = self.newest(Kind::Usage)?;
        writeln!(
            self.out,
            "   usage job (same pipeline, bundle transport): {}",
            r.summary
        )?;
        writeln!(
            self.out,
            "   the bundle, written and fsynced, is the receipt: {}\n",
            usage.display()
        )?;

        writeln!(self.out, "5. The person carries the usage bundle out; the vendor records its usage files by SHA-256")?;
        let answer2 = self.answer(&usage, 2)?;
        writeln!(
            self.out,
            "   and the carried-back answer is imported: jfconnect bundle import {}",
            answer2.display()
        )?;
        self.import(&answer2).await?;
        writeln!(self.out)?;

        writeln!(self.out, "6. Archival runs unchanged: uploaded usage is archived into the JPD's Artifactory, then deleted")?;
        let r = self
            .job(JobName::Archival)
            .await
            .map_err(|e| step("archival")(e.message))?;
        let stats = sim.stats();
        writeln!(self.out, "   ✓ {}", r.summary)?;
        writeln!(
            self.out,
            "   Artifactory verified {} usage files inside {} archive(s)\n",
            stats.archived_usage_files, stats.archives_stored
        )?;
        if stats.archived_usage_files != USAGE_FILES as u64 {
            return Err(step("archival")("not every usage file was archived".into()));
        }

        let check = self.dir.join("check");
        std::fs::create_dir_all(&check)?;
        std::fs::copy(&usage, check.join("b.jfbundle"))?;
        std::fs::copy(
            self.service.config().data_dir.join("keys").join("jpd.pub"),
            check.join("jpd.pub"),
        )?;
        writeln!(
            self.out,
            "Check the usage bundle by hand, with no jfconnect (unzip, minisign, sha256sum):"
        )?;
        writeln!(
            self.out,
            "   cd {} && unzip b.jfbundle -d x && cd x && minisign -Vm SHA256SUMS -p ../jpd.pub && sha256sum -c SHA256SUMS",
            check.display()
        )?;
        Ok(())
    }

    fn newest(&self, kind: Kind) -> Result<PathBuf, DemoError> {
        crate::transport::outbox::Outbox::from_config(self.service.config(), self.service.jpd_id())
            .newest(kind)
            .ok_or_else(|| step("outbox")(format!("no {kind} bundle was written")))
    }
}
