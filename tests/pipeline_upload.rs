//! The usage job: files become *uploaded* only after JCS acknowledged them and the ledger
//! recorded it; a failure leaves them pending; a crash in between re-sends, never loses.

mod pipeline_support;

use jfconnect::pipeline::progress::NoProgress;
use jfconnect::pipeline::{pipeline_counts, upload_pending_with, RunOptions};
use jfconnect::secret::Secret;
use jfconnect::transport::memory::{MemoryTransport, Operation};
use jfconnect::transport::{ErrorClass, TransportError};
#[cfg(feature = "failpoints")]
use pipeline_support::failing_at;
use pipeline_support::{opts, Env};

async fn upload(
    env: &Env,
    t: &MemoryTransport,
    o: &RunOptions,
) -> Result<jfconnect::pipeline::UsageOutcome, jfconnect::pipeline::PipelineError> {
    upload_pending_with(&env.config, t, "jpd-1", &Secret::new("tok"), &NoProgress, o).await
}

#[tokio::test]
async fn every_pending_file_is_uploaded_once_in_batches() {
    let env = Env::new();
    let shas: Vec<String> = (0..20)
        .map(|i| env.usage(&format!("u{i}.json"), "art", 1, i))
        .collect();
    let t = MemoryTransport::default();
    let out = upload(&env, &t, &opts()).await.unwrap();
    assert_eq!(out.uploaded, 20);
    assert_eq!(out.batches, 3, "batch size 7");
    let (received, dups) = t.usage_received();
    assert_eq!(dups, 0);
    assert!(shas.iter().all(|s| received.contains(s)));
    let again = upload(&env, &t, &opts()).await.unwrap();
    assert_eq!((again.uploaded, again.already_uploaded), (0, 20));
    let c = pipeline_counts(&env.config);
    assert_eq!((c.pending, c.uploaded), (0, 20));
    assert_eq!(env.spool_names().len(), 20, "uploading deletes nothing");
}

#[tokio::test]
async fn a_failed_upload_leaves_the_files_pending() {
    let env = Env::new();
    for i in 0..5 {
        env.usage(&format!("u{i}.json"), "art", 1, i);
    }
    let t = MemoryTransport::default();
    t.fail_next(
        Operation::Usage,
        TransportError::unavailable(Some(500), "JCS failed (HTTP 500)"),
    );
    let err = upload(&env, &t, &opts()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Unavailable);
    assert_eq!(pipeline_counts(&env.config).pending, 5);
    let out = upload(&env, &t, &opts()).await.unwrap();
    assert_eq!(out.uploaded, 5);
}

#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_crash_between_acknowledgement_and_ledger_resends_as_a_duplicate() {
    let env = Env::new();
    for i in 0..5 {
        env.usage(&format!("u{i}.json"), "art", 1, i);
    }
    let t = MemoryTransport::default();
    let err = upload(&env, &t, &failing_at("usage-after-upload"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("usage-after-upload"));
    let out = upload(&env, &t, &opts()).await.unwrap();
    assert_eq!(out.uploaded, 5);
    assert_eq!(out.duplicates, 5, "JCS recognises the retry by SHA-256");
    let (received, dups) = t.usage_received();
    assert_eq!((received.len(), dups), (5, 5));
}

#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_crash_after_the_ledger_does_not_resend() {
    let env = Env::new();
    for i in 0..3 {
        env.usage(&format!("u{i}.json"), "art", 1, i);
    }
    let t = MemoryTransport::default();
    upload(&env, &t, &failing_at("usage-after-ledger"))
        .await
        .unwrap_err();
    let out = upload(&env, &t, &opts()).await.unwrap();
    assert_eq!((out.uploaded, out.already_uploaded), (0, 3));
    assert_eq!(t.usage_received().1, 0);
}

/// A default build (no `failpoints` feature) ignores `JFCONNECT_FAILPOINT`: the run that would
/// abort right after the upload finishes and records the ledger.
#[cfg(not(feature = "failpoints"))]
#[tokio::test]
async fn without_the_failpoints_feature_the_variable_cannot_abort_a_run() {
    let env = Env::new();
    env.usage("u1.json", "art", 1, 1);
    std::env::set_var(
        jfconnect::pipeline::failpoint::FAILPOINT_ENV,
        "usage-after-upload",
    );
    let o = RunOptions::from_config(
        &env.config,
        std::sync::Arc::new(jfconnect::clock::SystemClock),
    );
    std::env::remove_var(jfconnect::pipeline::failpoint::FAILPOINT_ENV);
    assert_eq!(
        o.failpoint,
        jfconnect::pipeline::failpoint::Failpoints::off()
    );
    let t = MemoryTransport::default();
    let out = upload(&env, &t, &o).await.unwrap();
    assert_eq!(out.uploaded, 1);
}

#[tokio::test]
async fn no_batch_passes_max_batch_bytes_and_a_larger_file_goes_alone() {
    let mut env = Env::new();
    env.config.usage.batch_size = 100;
    env.config.usage.max_batch_bytes = 4096;
    let mut shas: Vec<String> = (0..40)
        .map(|i| env.usage(&format!("u{i:02}.json"), "art", 1, i))
        .collect();
    let big = format!(
        r#"{{"product":"art","timestamp":"2024-03-01T10:00:00Z","pad":"{}"}}"#,
        "x".repeat(10_000)
    );
    shas.push(env.raw("u20-big.json", big.as_bytes()));
    let t = MemoryTransport::default();
    let out = upload(&env, &t, &opts()).await.unwrap();
    assert_eq!(out.uploaded, 41);
    let (received, _) = t.usage_received();
    assert!(shas.iter().all(|s| received.contains(s)));
    let batches = t.usage_batches();
    assert_eq!(out.batches, batches.len() as u64);
    assert_eq!(batches.iter().map(|(n, _)| n).sum::<usize>(), 41);
    for (files, bytes) in &batches {
        assert!(
            *bytes <= 4096 || *files == 1,
            "a batch of {files} files is {bytes} bytes: {batches:?}"
        );
    }
    assert!(
        batches.iter().any(|&(n, b)| n == 1 && b > 13_000),
        "the 10 KiB file (13 KiB in base64) went alone: {batches:?}"
    );
    assert!(
        batches.len() >= 5,
        "40 files of ~150 bytes in 4 KiB: {batches:?}"
    );
}

/// A run killed in the middle of writing a batch's ledger records, before their fsync: the
/// log ends in a torn line. The next run cuts it off and re-sends the file it named (JCS
/// counts it as a duplicate); every file reaches JCS and is recorded, none is lost.
#[tokio::test]
async fn a_batch_torn_in_the_ledger_is_sent_again_and_nothing_is_lost() {
    let env = Env::new();
    let shas: Vec<String> = (0..10)
        .map(|i| env.usage(&format!("u{i}.json"), "art", 1, i))
        .collect();
    let t = MemoryTransport::default();
    assert_eq!(upload(&env, &t, &opts()).await.unwrap().uploaded, 10);
    // The last record loses its end, as an append cut by a kill before its fdatasync.
    let log = env.config.data_dir.join("usage/ledger/uploaded.log");
    let len = std::fs::metadata(&log).unwrap().len();
    assert_eq!(len, 10 * 66, "one `+<sha256>` line per file");
    let f = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(len - 30).unwrap();
    drop(f);
    let out = upload(&env, &t, &opts()).await.unwrap();
    assert_eq!((out.uploaded, out.already_uploaded), (1, 9));
    assert_eq!(out.duplicates, 1, "JCS recognises the re-sent file");
    let (received, dups) = t.usage_received();
    assert!(shas.iter().all(|s| received.contains(s)));
    assert_eq!((received.len(), dups), (10, 1));
    let again = upload(&env, &t, &opts()).await.unwrap();
    assert_eq!((again.uploaded, again.already_uploaded), (0, 10));
}

/// A data folder of the first format (one empty marker file per uploaded file in
/// `ledger/uploaded/`) keeps working: its markers are imported, nothing is sent again, and
/// the marker folder is gone.
#[tokio::test]
async fn a_data_folder_with_marker_files_is_imported() {
    let env = Env::new();
    let shas: Vec<String> = (0..6)
        .map(|i| env.usage(&format!("u{i}.json"), "art", 1, i))
        .collect();
    let markers = env.config.data_dir.join("usage/ledger/uploaded");
    std::fs::create_dir_all(&markers).unwrap();
    for s in &shas[..4] {
        std::fs::write(markers.join(s), b"").unwrap();
    }
    let t = MemoryTransport::default();
    let out = upload(&env, &t, &opts()).await.unwrap();
    assert_eq!((out.uploaded, out.already_uploaded), (2, 4));
    let (received, _) = t.usage_received();
    assert!(received.contains(&shas[4]) && received.contains(&shas[5]));
    assert_eq!(received.len(), 2, "the marked files are not sent again");
    assert!(!markers.exists());
}
