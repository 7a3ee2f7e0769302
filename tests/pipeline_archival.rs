//! The archival job against the in-memory JPD: originals are deleted only after their archive
//! was deployed and its checksum read back; every remote fault and every crash point leaves
//! each usage file either in the spool or in exactly one verified archive.

mod pipeline_support;

use jfconnect::jpd::memory::{JpdOperation, MemoryJpd};
use jfconnect::pipeline::progress::NoProgress;
use jfconnect::pipeline::{
    archive_uploaded_with, pipeline_counts, upload_pending_with, ArchivalOutcome, PipelineError,
    RunOptions,
};
use jfconnect::secret::Secret;
use jfconnect::transport::memory::MemoryTransport;
use jfconnect::transport::{ErrorClass, TransportError};
#[cfg(feature = "failpoints")]
use pipeline_support::failing_at;
use pipeline_support::{archived_shas, opts, Env};
use std::collections::HashSet;

async fn upload_all(env: &Env) {
    let t = MemoryTransport::default();
    upload_pending_with(
        &env.config,
        &t,
        "jpd-1",
        &Secret::new("tok"),
        &NoProgress,
        &opts(),
    )
    .await
    .unwrap();
}

async fn archive(
    env: &Env,
    jpd: &MemoryJpd,
    o: &RunOptions,
) -> Result<ArchivalOutcome, PipelineError> {
    archive_uploaded_with(&env.config, jpd, &NoProgress, o).await
}

/// `n` usage files over two days and two products, uploaded; answers their SHA-256s.
async fn uploaded_files(env: &Env, n: usize) -> HashSet<String> {
    let shas = (0..n)
        .map(|i| {
            env.usage(
                &format!("u{i:03}.json"),
                ["xray", "artifactory"][i % 2],
                1 + (i % 2) as u32,
                i,
            )
        })
        .collect();
    upload_all(env).await;
    shas
}

fn assert_each_once(jpd: &MemoryJpd, shas: &HashSet<String>) {
    let seen = archived_shas(jpd);
    for s in shas {
        assert_eq!(seen.get(s), Some(&1), "{s} must be in exactly one archive");
    }
    assert_eq!(seen.len(), shas.len());
}

#[tokio::test]
async fn uploaded_files_are_archived_verified_and_then_deleted() {
    let env = Env::new();
    let shas = uploaded_files(&env, 12).await;
    let jpd = MemoryJpd::new();
    let out = archive(&env, &jpd, &opts()).await.unwrap();
    assert_eq!(out.files(), 12);
    assert_eq!(out.archives.len(), 1, "one archive per run");
    assert!(
        out.summary()
            .contains("archived 12 usage files into jfrog-usage-logs/"),
        "{}",
        out.summary()
    );
    assert_each_once(&jpd, &shas);
    assert!(env.spool_names().is_empty());
    let (_, path, bytes) = &jpd.artifacts()[0];
    assert!(
        path.contains("/usage-") && path.ends_with("-1.zip"),
        "{path}"
    );
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.clone())).unwrap();
    assert!(zip.by_name("2024-03-01/xray/u000.json").is_ok());
    assert!(zip.by_name("2024-03-02/artifactory/u001.json").is_ok());
    let c = pipeline_counts(&env.config);
    assert_eq!((c.pending, c.uploaded, c.archived), (0, 0, 12));
    assert_eq!(c.bytes_archived, bytes.len() as u64);
    let again = archive(&env, &jpd, &opts()).await.unwrap();
    assert!(again.archives.is_empty());
    assert_eq!(jpd.deploys(), 1);
}

#[tokio::test]
async fn files_not_yet_uploaded_are_never_archived() {
    let env = Env::new();
    let sha = env.usage("late.json", "xray", 1, 1);
    let jpd = MemoryJpd::new();
    let out = archive(&env, &jpd, &opts()).await.unwrap();
    assert!(out.archives.is_empty());
    assert_eq!(out.pending, 1);
    assert_eq!(env.spool_names(), vec!["late.json"]);
    assert!(jpd.artifacts().is_empty());
    let _ = sha;
}

async fn fault_leaves_everything_in_place(
    prepare: impl Fn(&MemoryJpd),
    class: ErrorClass,
    words: &str,
) {
    let env = Env::new();
    let shas = uploaded_files(&env, 9).await;
    let jpd = MemoryJpd::new();
    prepare(&jpd);
    let err = archive(&env, &jpd, &opts()).await.unwrap_err();
    assert_eq!(err.class(), class, "{err}");
    assert!(err.to_string().contains(words), "{err}");
    assert_eq!(env.spool_names().len(), 9, "nothing deleted after: {err}");
    jpd.refuse_token(false);
    jpd.corrupt_readback(false);
    archive(&env, &jpd, &opts()).await.unwrap();
    assert_each_once(&jpd, &shas);
    assert!(env.spool_names().is_empty());
}

#[tokio::test]
async fn deploy_500_leaves_every_file_in_place() {
    fault_leaves_everything_in_place(
        |j| {
            j.fail_next(
                JpdOperation::Deploy,
                TransportError::unavailable(Some(500), "Artifactory failed (HTTP 500)"),
            )
        },
        ErrorClass::Unavailable,
        "HTTP 500",
    )
    .await;
}

#[tokio::test]
async fn checksum_mismatch_on_read_back_leaves_every_file_in_place() {
    fault_leaves_everything_in_place(
        |j| j.corrupt_readback(true),
        ErrorClass::Unavailable,
        "SHA-256",
    )
    .await;
}

#[tokio::test]
async fn jpd_401_is_rejected_and_leaves_every_file_in_place() {
    fault_leaves_everything_in_place(
        |j| j.refuse_token(true),
        ErrorClass::Rejected,
        "jfconnect.jpd.token_file",
    )
    .await;
}

#[tokio::test]
async fn archives_split_before_max_archive_bytes() {
    let mut env = Env::new();
    env.config.archival.max_archive_bytes = 4096;
    let shas = uploaded_files(&env, 40).await;
    let jpd = MemoryJpd::new();
    let out = archive(&env, &jpd, &opts()).await.unwrap();
    assert!(out.archives.len() > 1);
    for (_, path, bytes) in jpd.artifacts() {
        assert!(bytes.len() <= 4096, "{path} is {} bytes", bytes.len());
    }
    assert_each_once(&jpd, &shas);
}

#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_full_disk_removes_the_temp_file_names_the_folder_and_deletes_nothing() {
    let env = Env::new();
    uploaded_files(&env, 5).await;
    let jpd = MemoryJpd::new();
    let err = archive(&env, &jpd, &failing_at("archive-enospc"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("full") && msg.contains("archival/tmp"),
        "{msg}"
    );
    assert!(msg.contains("nothing was deleted"), "{msg}");
    assert_eq!(env.spool_names().len(), 5);
    let tmp = env.config.data_dir.join("usage/archival/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temp files left: {left:?}");
}

#[tokio::test]
async fn quarantined_files_survive_archival() {
    let env = Env::new();
    env.raw("bad.json", b"not json");
    uploaded_files(&env, 3).await;
    archive(&env, &MemoryJpd::new(), &opts()).await.unwrap();
    assert!(env.quarantine().join("bad.json").exists());
    assert_eq!(pipeline_counts(&env.config).quarantined, 1);
}

#[cfg(feature = "failpoints")]
#[tokio::test]
async fn usage_file_survives_a_crash_at_every_durability_step() {
    for point in jfconnect::pipeline::failpoint::ALL.iter().filter(|p| {
        ["usage-", "quarantine", "ledger-"]
            .iter()
            .all(|x| !p.starts_with(x))
    }) {
        let mut env = Env::new();
        env.config.archival.max_archive_bytes = 8192;
        let shas = uploaded_files(&env, 30).await;
        let jpd = MemoryJpd::new();
        let err = archive(&env, &jpd, &failing_at(point)).await.unwrap_err();
        assert!(
            matches!(err, PipelineError::Failpoint(p) if p == *point),
            "{point}: {err}"
        );
        // Between the crash and the clean re-run every file is in the spool or an archive.
        let left: HashSet<String> = env
            .spool_names()
            .iter()
            .map(|n| jfconnect::protocol::sha256_hex(&std::fs::read(env.spool().join(n)).unwrap()))
            .collect();
        let stored: HashSet<String> = archived_shas(&jpd).into_keys().collect();
        assert!(
            shas.iter().all(|s| left.contains(s) || stored.contains(s)),
            "{point}: a file was lost"
        );
        let out = archive(&env, &jpd, &opts()).await.unwrap();
        assert!(
            out.resumed || *point == "after-plan" || out.files() > 0,
            "{point}"
        );
        assert_each_once(&jpd, &shas);
        assert!(env.spool_names().is_empty(), "{point}: spool not empty");
        assert_eq!(
            pipeline_counts(&env.config).archived,
            30,
            "{point}: counted once"
        );
    }
}

#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_crash_while_quarantining_keeps_the_file() {
    let env = Env::new();
    env.raw("bad.json", b"nope");
    let jpd = MemoryJpd::new();
    archive(&env, &jpd, &failing_at("quarantine-after-reason"))
        .await
        .unwrap_err();
    assert_eq!(env.spool_names(), vec!["bad.json"]);
    archive(&env, &jpd, &opts()).await.unwrap();
    assert!(env.quarantine().join("bad.json").exists());
    assert!(env.spool_names().is_empty());
}

#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_resumed_plan_rebuilds_the_identical_archive_and_skips_the_deploy() {
    let env = Env::new();
    let shas = uploaded_files(&env, 20).await;
    let jpd = MemoryJpd::new();
    archive(&env, &jpd, &failing_at("after-deploy"))
        .await
        .unwrap_err();
    assert_eq!(jpd.deploys(), 1);
    let out = archive(&env, &jpd, &opts()).await.unwrap();
    assert!(out.resumed);
    assert_eq!(
        jpd.deploys(),
        1,
        "same name, same checksum: not deployed again"
    );
    assert_each_once(&jpd, &shas);
}
