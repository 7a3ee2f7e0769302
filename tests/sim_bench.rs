//! Rough throughput figures for the simulator (not run by default):
//! `TMPDIR=<a folder on the disk under test> cargo test --test sim_bench -- --ignored --nocapture`.

mod sim_support;

use sim_support::*;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run by hand"]
async fn simulator_throughput_figures() {
    let sim = start().await;
    let token = sim.register().await;

    let files: Vec<Vec<u8>> = (0..10_000).map(usage_file).collect();
    let started = Instant::now();
    for chunk in files.chunks(500) {
        let refs: Vec<&[u8]> = chunk.iter().map(|v| v.as_slice()).collect();
        assert_eq!(sim.upload_usage(&token, &refs).await.status(), 200);
    }
    eprintln!("10000 usage files in 20 batches: {:?}", started.elapsed());
    assert_eq!(sim.stats().await.usage_received_unique, 10_000);

    let started = Instant::now();
    for _ in 0..500 {
        assert_eq!(sim.entitlements(&token, None).await.status(), 200);
    }
    eprintln!("500 entitlements fetches: {:?}", started.elapsed());

    let bytes = vec![1u8; 128 * 1024 * 1024];
    let sha = jfconnect::protocol::sha256_hex(&bytes);
    let started = Instant::now();
    assert_eq!(sim.deploy("r/big.bin", bytes, &sha).await.status(), 201);
    eprintln!("128 MiB deploy: {:?}", started.elapsed());
}
