//! The simulated JCS: usage batches checked by SHA-256, kept once, duplicates recognised, even
//! across a restart.

mod sim_support;

use jfconnect::protocol::{ErrorBody, UsageBatchReceipt, HEADER_JPD_ID, JCS_USAGE};
use sim_support::*;

#[tokio::test]
async fn usage_files_are_kept_once_and_repeats_are_marked_duplicate() {
    let sim = start().await;
    let token = sim.register().await;
    let (a, b, c) = (usage_file(1), usage_file(2), usage_file(3));

    let resp = sim.upload_usage(&token, &[&a, &b]).await;
    assert_eq!(resp.status(), 200);
    let receipt: UsageBatchReceipt = resp.json().await.unwrap();
    assert_eq!(receipt.received.len(), 2);
    assert!(receipt.received.iter().all(|r| !r.duplicate));

    let resp = sim.upload_usage(&token, &[&b, &c, &c]).await;
    let receipt: UsageBatchReceipt = resp.json().await.unwrap();
    let dup: Vec<bool> = receipt.received.iter().map(|r| r.duplicate).collect();
    assert_eq!(dup, vec![true, false, true]);

    let stats = sim.stats().await;
    assert_eq!(stats.usage_received_unique, 3);
    assert_eq!(stats.usage_received_duplicate, 2);
    assert_eq!(stats.usage_calls, 2);
}

#[tokio::test]
async fn a_file_not_matching_its_sha256_fails_the_batch_with_400() {
    let sim = start().await;
    let token = sim.register().await;
    let mut batch = usage_batch(&[&usage_file(1), &usage_file(2)]);
    batch.files[1].sha256 = jfconnect::protocol::sha256_hex(b"something else");
    let resp = sim
        .http
        .post(sim.url(JCS_USAGE))
        .bearer_auth(&token)
        .header(HEADER_JPD_ID, JPD)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: ErrorBody = resp.json().await.unwrap();
    assert_eq!(body.error.code, "sha256_mismatch");
    assert_eq!(sim.stats().await.usage_received_unique, 0);
}

#[tokio::test]
async fn malformed_batches_are_400_and_unknown_tokens_401() {
    let sim = start().await;
    let token = sim.register().await;
    assert_eq!(sim.upload_usage("jes-unknown", &[b"x"]).await.status(), 401);
    for body in [
        "not json",
        "{}",
        r#"{"jpd_id":"jpd-test-1","files":[{"sha256":"../../etc","name":"a","content_base64":""}]}"#,
        r#"{"jpd_id":"jpd-test-1","files":[{"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","name":"a","content_base64":"!!!"}]}"#,
    ] {
        let resp = sim
            .http
            .post(sim.url(JCS_USAGE))
            .bearer_auth(&token)
            .header(HEADER_JPD_ID, JPD)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let err: ErrorBody = resp.json().await.unwrap();
        assert!(!err.error.message.is_empty());
    }
}

#[tokio::test]
async fn a_batch_over_the_body_cap_is_413() {
    let sim = start_with(|o| o.usage_body_limit = 1024).await;
    let token = sim.register().await;
    let big = vec![b'x'; 4096];
    assert_eq!(sim.upload_usage(&token, &[&big]).await.status(), 413);
}

#[tokio::test]
async fn a_restarted_sim_still_recognises_files_it_received() {
    let sim = start().await;
    let token = sim.register().await;
    let a = usage_file(7);
    sim.upload_usage(&token, &[&a]).await;
    sim.upload_usage(&token, &[&a]).await;
    let dir = sim.stop().await;

    let sim = start_in(dir, |_| {}).await;
    let stats = sim.stats().await;
    assert_eq!(stats.usage_received_unique, 1);
    assert_eq!(stats.usage_received_duplicate, 1);
    let receipt: UsageBatchReceipt = sim.upload_usage(&token, &[&a]).await.json().await.unwrap();
    assert!(receipt.received[0].duplicate);
    assert_eq!(sim.stats().await.usage_received_duplicate, 2);
}

#[tokio::test]
async fn concurrent_uploads_of_one_file_keep_it_once() {
    let sim = start().await;
    let token = sim.register().await;
    let file = usage_file(42);
    let batch: [&[u8]; 1] = [&file];
    let uploads = (0..8).map(|_| sim.upload_usage(&token, &batch));
    let mut fresh = 0;
    for resp in futures_util::future::join_all(uploads).await {
        let receipt: UsageBatchReceipt = resp.json().await.unwrap();
        fresh += receipt.received.iter().filter(|r| !r.duplicate).count();
    }
    assert_eq!(fresh, 1);
    let stats = sim.stats().await;
    assert_eq!(
        (stats.usage_received_unique, stats.usage_received_duplicate),
        (1, 7)
    );
}
