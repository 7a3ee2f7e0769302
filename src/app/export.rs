//! `jfconnect bundle export --out FILE`: run the usage job once through the air-gapped
//! transport and hand the person the bundle it wrote.
//!
//! What it does, in order: (1) if the license was never registered, runs the entitlements job
//! once, which writes a registration bundle; (2) runs the usage job once: every pending,
//! settled usage file goes into a signed usage bundle in `airgap.outbox_dir`, and those files
//! become *uploaded* in the ledger only after the bundle is whole on disk (archival later
//! archives and deletes them, exactly as online); (3) copies the bundle to FILE (fsynced; the
//! outbox keeps its copy as the record). With no usage pending, it exports a fresh
//! registration bundle instead, which the vendor answers all the same. When the pending usage
//! needs more than one bundle (over 16 MiB of usage files), the further ones are copied next
//! to FILE as `NAME-2.jfbundle`, `NAME-3.jfbundle`, ...

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::bundle::Kind;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::jobs::entitlements::EntitlementsJob;
use crate::jobs::scheduler::Job;
use crate::jobs::usage::UsageTask;
use crate::transport::airgapped::AirGappedTransport;
use crate::transport::airgapped::AirgapError;
use crate::transport::outbox::{Outbox, WrittenBundle};
use crate::transport::Transport;

/// Usage files per bundle when exporting by hand: as many as fit the upload's byte cap.
const EXPORT_BATCH: usize = 100_000;

/// What an export did.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    /// Each exported bundle: where it was copied to, and what it is.
    pub files: Vec<(PathBuf, WrittenBundle)>,
    /// The usage job's summary.
    pub usage_summary: String,
    /// The JPD's public key file, to check the bundle with.
    pub jpd_public_key: PathBuf,
}

impl std::fmt::Display for ExportOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "usage job: {}", self.usage_summary)?;
        for (dest, b) in &self.files {
            let what = match b.kind {
                Kind::Usage => {
                    format!("{} usage files and the registration request", b.usage_files)
                }
                _ => "the registration request (no usage was pending)".to_string(),
            };
            writeln!(
                f,
                "exported {} ({} bundle, sequence {}): {what}",
                dest.display(),
                b.kind,
                b.sequence
            )?;
        }
        write!(
            f,
            "carry it to the vendor; anyone can check it by hand with the JPD's public key {}",
            self.jpd_public_key.display()
        )
    }
}

/// Runs the export described in the module doc.
pub async fn export_bundle(
    mut config: Config,
    clock: SharedClock,
    out: &Path,
) -> Result<ExportOutcome, AirgapError> {
    if !config.airgap.enabled {
        return Err(AirgapError::NotAirGapped("jfconnect bundle export"));
    }
    config.usage.batch_size = config.usage.batch_size.max(EXPORT_BATCH);
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| AirgapError::io("create", &config.data_dir, e))?;
    let jpd_id = super::jpd_id(&config.data_dir).map_err(|e| AirgapError::Job(e.to_string()))?;
    let store = crate::transport::inbox::open_store(&config)?;
    let transport = Arc::new(AirGappedTransport::new(
        Outbox::from_config(&config, &jpd_id),
        store.clone(),
        clock.clone(),
    ));
    let dyn_transport: Arc<dyn Transport> = transport.clone();
    if store.snapshot().registration.is_none() {
        let job = EntitlementsJob {
            transport: dyn_transport.clone(),
            store: store.clone(),
            license: super::license_source(&config),
            jpd_id: jpd_id.clone(),
            clock: clock.clone(),
        };
        // Without imported entitlements the job ends "unavailable" after registering; only a
        // missing registration matters here.
        if let Err(e) = job.run().await {
            if store.snapshot().registration.is_none() {
                return Err(AirgapError::Job(e.message));
            }
        }
    }
    let usage = UsageTask {
        config: Arc::new(config.clone()),
        transport: dyn_transport,
        store: store.clone(),
        jpd_id: jpd_id.clone(),
    };
    let report = usage.run().await.map_err(|e| {
        AirgapError::Job(format!("the usage job failed ({}): {}", e.class, e.message))
    })?;
    let written = transport.take_written();
    let mut bundles: Vec<WrittenBundle> = written
        .iter()
        .filter(|b| b.kind == Kind::Usage)
        .cloned()
        .collect();
    if bundles.is_empty() {
        let fresh = written.into_iter().find(|b| b.kind == Kind::Registration);
        let reg = match fresh {
            Some(b) => b,
            None => {
                let fp = store
                    .snapshot()
                    .registration
                    .map(|r| r.license_fingerprint)
                    .ok_or(AirgapError::NoLicense)?;
                transport.write_registration(&fp).await?
            }
        };
        bundles.push(reg);
    }
    let mut files = Vec::new();
    for (i, b) in bundles.into_iter().enumerate() {
        let dest = numbered(out, i + 1);
        copy_durably(&b.path, &dest)?;
        files.push((dest, b));
    }
    let mut jpd_public_key = transport.outbox().key_prefix.clone().into_os_string();
    jpd_public_key.push(".pub");
    Ok(ExportOutcome {
        files,
        usage_summary: report.summary,
        jpd_public_key: jpd_public_key.into(),
    })
}

/// `out` for the first bundle, `NAME-n.jfbundle` beside it for the n-th.
fn numbered(out: &Path, n: usize) -> PathBuf {
    if n == 1 {
        return out.to_path_buf();
    }
    let name = out
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let new = match name.strip_suffix(".jfbundle") {
        Some(stem) => format!("{stem}-{n}.jfbundle"),
        None => format!("{name}-{n}"),
    };
    out.with_file_name(new)
}

/// Copies `src` to `dest` through a temp file in `dest`'s folder, fsynced and renamed.
pub fn copy_durably(src: &Path, dest: &Path) -> Result<(), AirgapError> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-export-")
        .tempfile_in(dir)
        .map_err(|e| AirgapError::io("create a temp file in", dir, e))?;
    let mut from = std::fs::File::open(src).map_err(|e| AirgapError::io("read", src, e))?;
    std::io::copy(&mut from, &mut tmp).map_err(|e| AirgapError::io("copy", src, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| AirgapError::io("set permissions of", dest, e))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| AirgapError::io("fsync", dest, e))?;
    tmp.persist(dest)
        .map_err(|e| AirgapError::io("rename into place", dest, e.error))?;
    crate::state::sync_dir(dir).map_err(|e| AirgapError::io("fsync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn further_bundles_are_numbered_beside_the_first() {
        let out = Path::new("/x/usage.jfbundle");
        assert_eq!(numbered(out, 1), out);
        assert_eq!(numbered(out, 3), Path::new("/x/usage-3.jfbundle"));
        assert_eq!(numbered(Path::new("b"), 2), Path::new("b-2"));
    }
}
