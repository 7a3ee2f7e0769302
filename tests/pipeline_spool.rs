//! The spool hand-over: only finished usage files are picked up; anything that is not a usage
//! file is quarantined with a reason and never deleted or uploaded.

mod pipeline_support;

use jfconnect::pipeline::progress::NoProgress;
use jfconnect::pipeline::{pipeline_counts, upload_pending_with};
use jfconnect::secret::Secret;
use jfconnect::transport::memory::MemoryTransport;
use pipeline_support::{opts, Env};
use std::fs;

async fn upload(env: &Env, t: &MemoryTransport) -> jfconnect::pipeline::UsageOutcome {
    upload_pending_with(
        &env.config,
        t,
        "jpd-1",
        &Secret::new("tok"),
        &NoProgress,
        &opts(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn dotfiles_and_partial_names_are_never_picked_up() {
    let env = Env::new();
    let good = env.usage("u1.json", "xray", 1, 1);
    for name in [".hidden.json", "u2.json.tmp", "u3.json.part", "U4.TMP"] {
        env.raw(name, b"{\"half\":");
    }
    let t = MemoryTransport::default();
    let out = upload(&env, &t).await;
    assert_eq!(out.uploaded, 1);
    assert_eq!(out.quarantined, 0);
    assert_eq!(
        t.usage_received().0.into_iter().collect::<Vec<_>>(),
        vec![good]
    );
    assert_eq!(env.spool_names().len(), 5, "nothing was moved");
}

#[tokio::test]
async fn a_file_still_being_written_waits_for_the_settle_window() {
    let env = Env::new();
    fs::write(env.spool().join("fresh.json"), b"{\"product\":\"x\",").unwrap();
    let t = MemoryTransport::default();
    let out = upload(&env, &t).await;
    assert_eq!((out.uploaded, out.quarantined, out.not_settled), (0, 0, 1));
    assert!(env.spool().join("fresh.json").exists());
    // The writer finishes; once settled, the file is taken.
    let sha = env.usage("fresh.json", "x", 2, 3);
    let out = upload(&env, &t).await;
    assert_eq!(out.uploaded, 1);
    assert!(t.usage_received().0.contains(&sha));
}

/// A file renamed into place waits for the settle window like one written in place (the spool
/// cannot tell them apart: a rename keeps the mtime), as docs/usage-pipeline.md says.
#[tokio::test]
async fn a_renamed_file_waits_for_the_settle_window_too_as_the_docs_say() {
    let env = Env::new();
    let body = br#"{"product":"x","timestamp":"2024-03-01T10:00:00Z"}"#;
    fs::write(env.spool().join(".r1.json"), body).unwrap();
    fs::rename(env.spool().join(".r1.json"), env.spool().join("r1.json")).unwrap();
    let t = MemoryTransport::default();
    let out = upload(&env, &t).await;
    assert_eq!((out.uploaded, out.not_settled), (0, 1));
    pipeline_support::settle(&env.spool().join("r1.json"));
    assert_eq!(upload(&env, &t).await.uploaded, 1);
    let doc = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/usage-pipeline.md"
    ))
    .unwrap()
    .split_whitespace()
    .collect::<Vec<_>>()
    .join(" ");
    assert!(
        doc.contains("every file, renamed into place or written in place, is taken only once its mtime is at least 2 s old"),
        "docs/usage-pipeline.md states the settle wait for renamed files too"
    );
}

#[tokio::test]
async fn malformed_files_are_quarantined_with_a_reason_and_counted() {
    let env = Env::new();
    env.raw("notjson.json", b"hello");
    env.raw("noproduct.json", br#"{"timestamp":"2024-01-01T00:00:00Z"}"#);
    env.raw("badtime.json", br#"{"product":"a","timestamp":"soon"}"#);
    env.raw("array.json", b"[]");
    let t = MemoryTransport::default();
    let out = upload(&env, &t).await;
    assert_eq!((out.uploaded, out.quarantined), (0, 4));
    assert!(t.usage_received().0.is_empty());
    assert!(env.spool_names().is_empty());
    let q = env.quarantine();
    assert_eq!(fs::read(q.join("notjson.json")).unwrap(), b"hello");
    let reason = fs::read_to_string(q.join("noproduct.json.reason")).unwrap();
    assert!(reason.contains("no `product`"), "{reason}");
    let reason = fs::read_to_string(q.join("badtime.json.reason")).unwrap();
    assert!(reason.contains("RFC 3339"), "{reason}");
    assert_eq!(pipeline_counts(&env.config).quarantined, 4);
}

#[tokio::test]
async fn oversize_files_are_quarantined_not_read_whole() {
    let mut env = Env::new();
    env.config.usage.max_file_bytes = 100;
    let big = format!(
        r#"{{"product":"a","timestamp":"2024-01-01T00:00:00Z","x":"{}"}}"#,
        "y".repeat(200)
    );
    env.raw("big.json", big.as_bytes());
    let ok = env.usage("ok.json", "a", 1, 1);
    let t = MemoryTransport::default();
    let out = upload(&env, &t).await;
    assert_eq!((out.uploaded, out.quarantined), (1, 1));
    assert!(t.usage_received().0.contains(&ok));
    let reason = fs::read_to_string(env.quarantine().join("big.json.reason")).unwrap();
    assert!(reason.contains("max_file_bytes"), "{reason}");
    assert_eq!(
        fs::read(env.quarantine().join("big.json")).unwrap(),
        big.as_bytes()
    );
}

#[tokio::test]
async fn a_second_quarantined_file_of_the_same_name_keeps_the_first() {
    let env = Env::new();
    let t = MemoryTransport::default();
    env.raw("x.json", b"one");
    upload(&env, &t).await;
    env.raw("x.json", b"two");
    upload(&env, &t).await;
    assert_eq!(fs::read(env.quarantine().join("x.json")).unwrap(), b"one");
    assert_eq!(fs::read(env.quarantine().join("x.json.1")).unwrap(), b"two");
    assert_eq!(pipeline_counts(&env.config).quarantined, 2);
}
