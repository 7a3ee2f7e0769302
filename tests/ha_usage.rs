//! The usage ledger shared by the nodes of a JPD, against a real PostgreSQL: bytes present in
//! two nodes' spools are uploaded once and archived once, a copy is deleted only once its
//! archive was read back, and a replaced process's claims and marks are refused by the
//! database (nothing marked, nothing deleted).

mod pg_support;
mod pipeline_support;
mod process_support;

use jfconnect::config::{DatabaseSettings, TlsMode};
use jfconnect::ha::db::{Db, DbError};
use jfconnect::ha::migrate;
use jfconnect::ha::nodes::{self, Member};
use jfconnect::ha::usage::{self, ArchiveRef};
use jfconnect::jpd::memory::MemoryJpd;
use jfconnect::pipeline::progress::NoProgress;
use jfconnect::pipeline::{
    archive_uploaded_with, upload_pending_with, PipelineError, RunOptions, SharedLedger,
};
use jfconnect::secret::Secret;
use jfconnect::transport::memory::MemoryTransport;
use pipeline_support::{archived_shas, opts, Env};
use std::collections::HashSet;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(15);

async fn database() -> Db {
    let server = pg_support::shared();
    let name = server.fresh_database();
    let settings = DatabaseSettings {
        host: "127.0.0.1".into(),
        port: server.port,
        database: name,
        username: pg_support::USER.into(),
        password: Some(Secret::new(pg_support::PASSWORD)),
        tls: TlsMode::Disable,
        plaintext_password_in_file: false,
    };
    let db = Db::new(&settings, None, "test").unwrap();
    migrate::migrate(&db).await.unwrap();
    db
}

async fn joined(db: &Db, node: &str) -> Member {
    let m = Member::new(node);
    nodes::join(db, &m, None, TTL).await.unwrap().unwrap();
    m
}

fn shared(db: &Db, m: &Member) -> RunOptions {
    opts().with_ledger(Some(std::sync::Arc::new(SharedLedger::new(
        db.clone(),
        m.clone(),
        TTL,
    ))))
}

async fn upload(env: &Env, t: &MemoryTransport, o: &RunOptions) -> Result<u64, PipelineError> {
    upload_pending_with(&env.config, t, "jpd-1", &Secret::new("tok"), &NoProgress, o)
        .await
        .map(|out| out.uploaded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_on_two_nodes_are_uploaded_once_archived_once_and_every_copy_deleted() {
    let db = database().await;
    let (ma, mb) = (joined(&db, "node-a").await, joined(&db, "node-b").await);
    let (a, b) = (Env::new(), Env::new());
    let mut distinct = HashSet::new();
    for i in 0..20 {
        distinct.insert(a.usage(&format!("a{i:02}.json"), "xray", 1, i));
    }
    // node-b holds copies of ten of node-a's files under other names, and ten of its own.
    for i in 0..10 {
        b.usage(&format!("copy{i:02}.json"), "xray", 1, i);
        distinct.insert(b.usage(&format!("b{i:02}.json"), "artifactory", 2, 100 + i));
    }
    let t = MemoryTransport::default();
    let (oa, ob) = (shared(&db, &ma), shared(&db, &mb));
    assert_eq!(upload(&a, &t, &oa).await.unwrap(), 20);
    assert_eq!(
        upload(&b, &t, &ob).await.unwrap(),
        10,
        "the copies are not sent"
    );
    let (received, again) = t.usage_received();
    assert_eq!(received, distinct);
    assert_eq!(again, 0, "no file was sent twice");

    let jpd = MemoryJpd::new();
    // node-b archives first: its copies are uploaded and unclaimed, so it takes them.
    let out_b = archive_uploaded_with(&b.config, &jpd, &NoProgress, &ob)
        .await
        .unwrap();
    assert_eq!(out_b.files(), 20);
    assert!(out_b.archives.iter().all(|x| x.name.starts_with("node-b/")));
    // node-a finds ten of its files archived by node-b: copies, deleted after its own
    // read-back; the other ten go in its archive.
    let out_a = archive_uploaded_with(&a.config, &jpd, &NoProgress, &oa)
        .await
        .unwrap();
    assert_eq!((out_a.files(), out_a.copies_deleted), (10, 10));
    assert!(out_a.archives.iter().all(|x| x.name.starts_with("node-a/")));
    let seen = archived_shas(&jpd);
    assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), distinct);
    assert!(seen.values().all(|n| *n == 1), "a file is in two archives");
    assert!(a.spool_names().is_empty(), "{:?}", a.spool_names());
    assert!(b.spool_names().is_empty(), "{:?}", b.spool_names());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_waits_while_another_node_holds_the_archival_claim() {
    let db = database().await;
    let (ma, mb) = (joined(&db, "node-a").await, joined(&db, "node-b").await);
    let (a, b) = (Env::new(), Env::new());
    let sha = a.usage("x.json", "xray", 1, 1);
    b.usage("x-copy.json", "xray", 1, 1);
    let t = MemoryTransport::default();
    upload(&a, &t, &shared(&db, &ma)).await.unwrap();
    // node-a's plan claims the file; it crashed before archiving it.
    let claims = usage::claim_archival(&db, &ma, std::slice::from_ref(&sha))
        .await
        .unwrap();
    assert_eq!(claims[&sha], usage::ArchiveClaim::Mine);
    let jpd = MemoryJpd::new();
    let out = archive_uploaded_with(&b.config, &jpd, &NoProgress, &shared(&db, &mb))
        .await
        .unwrap();
    assert_eq!((out.files(), out.held_elsewhere), (0, 1));
    assert!(
        out.summary()
            .ends_with("; 1 usage file left for the node that holds it"),
        "{}",
        out.summary()
    );
    assert_eq!(
        b.spool_names(),
        ["x-copy.json"],
        "kept while node-a holds it"
    );
    // node-b may not mark what node-a holds.
    let archive = ArchiveRef {
        repo: "r".into(),
        name: "node-b/x.zip".into(),
        sha256: "0".repeat(64),
        size: 1,
    };
    let refused = usage::mark_archived(&db, &mb, std::slice::from_ref(&sha), &archive).await;
    assert!(
        matches!(refused, Err(DbError::ClaimLost { files: 1, .. })),
        "{refused:?}"
    );
    // node-a resumes and archives it; then node-b's copy goes.
    archive_uploaded_with(&a.config, &jpd, &NoProgress, &shared(&db, &ma))
        .await
        .unwrap();
    let out = archive_uploaded_with(&b.config, &jpd, &NoProgress, &shared(&db, &mb))
        .await
        .unwrap();
    assert_eq!(out.copies_deleted, 1);
    assert!(
        out.summary().contains(
            "1 copy of files other nodes archived deleted after their archives were read back"
        ),
        "{}",
        out.summary()
    );
    assert!(a.spool_names().is_empty() && b.spool_names().is_empty());
    assert_eq!(archived_shas(&jpd).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_process_has_its_claims_and_marks_refused_and_deletes_nothing() {
    let db = database().await;
    let old = joined(&db, "node-a").await;
    let env = Env::new();
    for i in 0..5 {
        env.usage(&format!("u{i}.json"), "xray", 1, i);
    }
    let t = MemoryTransport::default();
    upload(&env, &t, &shared(&db, &old)).await.unwrap();
    // The process was paused long enough for another one to join as node-a.
    let new = Member::new("node-a");
    nodes::join(&db, &new, None, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let jpd = MemoryJpd::new();
    let err = archive_uploaded_with(&env.config, &jpd, &NoProgress, &shared(&db, &old))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("another jfconnect process has joined under this node id"),
        "{err}"
    );
    assert_eq!(env.spool_names().len(), 5, "nothing deleted");
    assert!(jpd.artifacts().is_empty());
    env.usage("late.json", "xray", 1, 9);
    let err = upload(&env, &t, &shared(&db, &old)).await.unwrap_err();
    assert!(
        matches!(err, PipelineError::Ledger(DbError::Superseded { .. })),
        "{err}"
    );
    // The new process takes over: everything reaches one archive.
    upload(&env, &t, &shared(&db, &new)).await.unwrap();
    let out = archive_uploaded_with(&env.config, &jpd, &NoProgress, &shared(&db, &new))
        .await
        .unwrap();
    assert_eq!(out.files(), 6);
    assert!(env.spool_names().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_has_not_joined_yet_claims_nothing_and_its_run_resumes_once_joined() {
    // serve started while the database was away: the ledger exists before the membership.
    let db = database().await;
    let env = Env::new();
    for i in 0..4 {
        env.usage(&format!("u{i}.json"), "xray", 1, i);
    }
    let membership: std::sync::Arc<std::sync::OnceLock<Member>> = Default::default();
    let source = membership.clone();
    let ledger = SharedLedger::joining(
        db.clone(),
        "node-a".into(),
        std::sync::Arc::new(move || source.get().cloned()),
        TTL,
    );
    let o = opts().with_ledger(Some(std::sync::Arc::new(ledger)));
    let t = MemoryTransport::default();
    let err = upload(&env, &t, &o).await.unwrap_err();
    assert!(
        matches!(&err, PipelineError::Ledger(e) if e.is_unavailable()),
        "{err}"
    );
    assert!(
        err.to_string().contains("has not joined the cluster yet"),
        "{err}"
    );
    assert!(
        t.usage_received().0.is_empty(),
        "nothing reached JCS before the join"
    );
    let jpd = MemoryJpd::new();
    assert!(archive_uploaded_with(&env.config, &jpd, &NoProgress, &o)
        .await
        .is_err());
    assert_eq!(env.spool_names().len(), 4, "nothing deleted");
    // The node joins: the same ledger now claims, and the run goes through.
    let _ = membership.set(joined(&db, "node-a").await);
    assert_eq!(upload(&env, &t, &o).await.unwrap(), 4);
    let out = archive_uploaded_with(&env.config, &jpd, &NoProgress, &o)
        .await
        .unwrap();
    assert_eq!(out.files(), 4);
    assert!(env.spool_names().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jpd_bundle_sequence_is_shared_and_never_goes_back() {
    use jfconnect::ha::sequences;
    let db = database().await;
    assert_eq!(sequences::next(&db, "node-a", "usage", 0).await.unwrap(), 1);
    assert_eq!(sequences::next(&db, "node-b", "usage", 0).await.unwrap(), 2);
    // A node that wrote 9 bundles alone before it joined continues above its own number.
    assert_eq!(
        sequences::next(&db, "node-c", "usage", 9).await.unwrap(),
        10
    );
    assert_eq!(
        sequences::next(&db, "node-a", "usage", 1).await.unwrap(),
        11
    );
    assert_eq!(
        sequences::next(&db, "node-a", "registration", 0)
            .await
            .unwrap(),
        1
    );
    // Taken concurrently by many writers: every number once.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            sequences::next(&db, &format!("n{i}"), "usage", 0)
                .await
                .unwrap()
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    got.sort();
    assert_eq!(got, (12..32).collect::<Vec<u64>>());
}

#[test]
fn one_off_job_commands_refuse_in_database_mode() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("system.yaml");
    std::fs::write(
        &config,
        format!(
            "jfconnect:\n  data_dir: {d}/data\n  airgap:\n    enabled: true\n    outbox_dir: {d}/outbox\nshared:\n  node:\n    id: node-a\n  database:\n    type: postgresql\n    url: jdbc:postgresql://127.0.0.1:1/db\n    username: u\n  security:\n    masterKeyFile: {d}/master.key\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    for args in [
        &["jobs", "run", "usage"][..],
        &["jobs", "run", "archival"][..],
        &["jobs", "run", "entitlements"][..],
        &["bundle", "export", "--out", "x.jfbundle"][..],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jfconnect"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .current_dir(dir.path())
            .env("JF_JFCONNECT_GRPC_ENABLED", "false")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("inside `jfconnect serve`") && err.contains("POST /api/v1/jobs/"),
            "{args:?}: {err}"
        );
    }
    assert!(!dir.path().join("x.jfbundle").exists());
}
