//! The air-gapped subcommands of the CLI: `keys generate`, `bundle export|import|verify|
//! inspect` and `sim answer`. `cli.rs` parses; these print and map errors to exit codes
//! (2 for a refused bundle or other bad input, 1 for a failure of this machine).

use std::path::Path;

use super::Failure;
use crate::app::App;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::transport::airgapped::AirgapError;

pub(super) fn failure(e: AirgapError) -> Failure {
    if e.is_bad_input() {
        Failure::bad_input(e)
    } else {
        Failure::failed(e)
    }
}

/// `jfconnect keys generate --out PREFIX`.
pub fn keys_generate(prefix: &Path) -> Result<(), Failure> {
    let sk = crate::bundle::keys_generate(prefix).map_err(|e| failure(AirgapError::Bundle(e)))?;
    println!(
        "wrote {0}.pub (public, key id {1}) and {0}.key (secret, mode 0600; keep it private)",
        prefix.display(),
        sk.id
    );
    Ok(())
}

/// `jfconnect bundle verify FILE --pubkey KEY` (no configuration needed).
pub fn verify(file: &Path, pubkey: &Path) -> Result<(), Failure> {
    let m = crate::bundle::verify_file_with_pubkey(file, pubkey)
        .map_err(|e| failure(AirgapError::Bundle(e)))?;
    println!(
        "VERIFIED: {} bundle {} of JPD {}, sequence {}, created {}, expires {}, {}, signed by key {}",
        m.kind,
        m.bundle_id,
        m.jpd_id,
        m.sequence,
        m.created,
        m.expires,
        crate::words::count(m.entries.len() as u64, "payload entry", "payload entries"),
        m.signing_key_id
    );
    Ok(())
}

/// `jfconnect bundle inspect FILE [--json]`: claims only, marked NOT VERIFIED.
pub fn inspect(file: &Path, json: bool) -> Result<(), Failure> {
    let s = crate::bundle::inspect_bundle(file).map_err(|e| failure(AirgapError::Bundle(e)))?;
    if json {
        let text = serde_json::to_string_pretty(&s).map_err(Failure::failed)?;
        println!("{text}");
    } else {
        print!("{s}");
    }
    Ok(())
}

/// `jfconnect bundle import FILE`: verified, then applied by the entitlements job.
pub async fn import(config: Config, clock: SharedClock, file: &Path) -> Result<(), Failure> {
    let app = App::build(config, clock, None, false)?;
    let out = app
        .import_entitlements_bundle(file)
        .await
        .map_err(failure)?;
    println!("{}", out.summary());
    println!("a running jfconnect serves them after its next entitlements run (POST /api/v1/jobs/entitlements/run to run it now)");
    Ok(())
}

/// `jfconnect bundle export --out FILE [--force]`.
pub async fn export(
    config: Config,
    clock: SharedClock,
    out: &Path,
    force: bool,
) -> Result<(), Failure> {
    if config.shared.database.settings.is_some() {
        // A one-off process is no member of the cluster: it could not claim usage files in the
        // shared ledger, nor is it where the node's usage job writes.
        return Err(Failure::failed(
            "with shared.database set, each node's usage job inside `jfconnect serve` writes its usage bundles (that node's files, numbered from the JPD's shared sequence) into its airgap.outbox_dir; run it with POST /api/v1/jobs/usage/run on the node and carry the new bundle from there",
        ));
    }
    let app = App::build(config, clock, None, false)?;
    let outcome = app.export_usage_bundle(out, force).await.map_err(failure)?;
    println!("{outcome}");
    Ok(())
}
