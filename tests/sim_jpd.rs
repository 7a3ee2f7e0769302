//! The simulated JPD: Access token check, Artifactory deploy (streamed, checksum-checked),
//! storage info, download, archive verification and path safety.

mod sim_support;

use jfconnect::protocol::{sha256_hex, ErrorBody, StorageInfo, ACCESS_TOKEN_CHECK};
use jfconnect::secret::Secret;
use sim_support::*;

const A: (&str, &[u8]) = (
    "2024-05-01/artifactory/a.json",
    b"{\"product\":\"artifactory\"}",
);
const B: (&str, &[u8]) = ("2024-05-01/xray/b.json", b"{\"product\":\"xray\"}");
const C: (&str, &[u8]) = ("2024-05-02/xray/c.json", b"{\"product\":\"xray\",\"n\":3}");

#[tokio::test]
async fn token_check_accepts_any_token_unless_one_is_required() {
    let sim = start().await;
    let ok = sim
        .http
        .get(sim.url(ACCESS_TOKEN_CHECK))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let none = sim
        .http
        .get(sim.url(ACCESS_TOKEN_CHECK))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);

    let strict = start_with(|o| o.jpd_token = Some(Secret::new("right"))).await;
    let get = |t: &'static str| {
        strict
            .http
            .get(strict.url(ACCESS_TOKEN_CHECK))
            .bearer_auth(t)
            .send()
    };
    assert_eq!(get("right").await.unwrap().status(), 200);
    assert_eq!(get("wrong").await.unwrap().status(), 401);
}

#[tokio::test]
async fn deployed_artifact_is_described_by_storage_info_and_downloadable() {
    let sim = start().await;
    let bytes: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let sha = sha256_hex(&bytes);
    let resp = sim
        .deploy("generic-local/dir/blob.bin", bytes.clone(), &sha)
        .await;
    assert_eq!(resp.status(), 201);
    let info: StorageInfo = resp.json().await.unwrap();
    assert_eq!(info.size, bytes.len().to_string());
    assert_eq!(info.checksums.sha256, sha);

    let resp = sim
        .http
        .get(sim.url("/artifactory/api/storage/generic-local/dir/blob.bin"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let info: StorageInfo = resp.json().await.unwrap();
    assert_eq!(
        (info.repo.as_str(), info.path.as_str()),
        ("generic-local", "dir/blob.bin")
    );
    assert_eq!(info.size, bytes.len().to_string());
    assert_eq!(info.checksums.sha256, sha);

    let got = sim
        .http
        .get(sim.url("/artifactory/generic-local/dir/blob.bin"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), bytes.as_slice());

    let missing = sim
        .http
        .get(sim.url("/artifactory/api/storage/generic-local/nothing.bin"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn deploy_with_wrong_checksum_is_409_and_stores_nothing() {
    let sim = start().await;
    let resp = sim
        .deploy(
            "generic-local/x.bin",
            b"hello".to_vec(),
            &sha256_hex(b"bye"),
        )
        .await;
    assert_eq!(resp.status(), 409);
    let body: ErrorBody = resp.json().await.unwrap();
    assert_eq!(body.error.code, "checksum_mismatch");
    assert!(!sim
        .dir
        .path()
        .join("artifactory/generic-local/x.bin")
        .exists());
    let tmp_left = std::fs::read_dir(sim.dir.path().join("tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp_left, 0, "the rejected upload stayed in tmp");
}

#[tokio::test]
async fn large_deploy_is_streamed_to_disk_and_checked() {
    let sim = start().await;
    let bytes = vec![0xA5u8; 24 * 1024 * 1024];
    let sha = sha256_hex(&bytes);
    let started = std::time::Instant::now();
    let resp = sim.deploy("generic-local/big.bin", bytes, &sha).await;
    assert_eq!(resp.status(), 201);
    eprintln!("24 MiB deploy took {:?}", started.elapsed());
    let on_disk =
        std::fs::metadata(sim.dir.path().join("artifactory/generic-local/big.bin")).unwrap();
    assert_eq!(on_disk.len(), 24 * 1024 * 1024);
}

#[tokio::test]
async fn archives_are_checked_against_their_index_and_counted() {
    let sim = start().await;
    let good = archive(&[A, B], &[A, B]);
    let resp = sim
        .deploy(
            "jfconnect-usage/2024/a1.zip",
            good.clone(),
            &sha256_hex(&good),
        )
        .await;
    assert_eq!(resp.status(), 201);
    // Same usage file in a second archive counts once.
    let second = archive(&[B, C], &[B, C]);
    sim.deploy(
        "jfconnect-usage/2024/a2.zip",
        second.clone(),
        &sha256_hex(&second),
    )
    .await;
    // Unlisted entry: stored, but invalid and not counted.
    let bad = archive(&[A, B, C], &[A, B]);
    let resp = sim
        .deploy(
            "jfconnect-usage/2024/bad.zip",
            bad.clone(),
            &sha256_hex(&bad),
        )
        .await;
    assert_eq!(resp.status(), 201);

    let stats = sim.stats().await;
    assert_eq!(stats.archived_usage_files, 3);
    assert_eq!(stats.archives_stored, 3);
    assert_eq!(stats.archives_invalid, 1);
    assert_eq!(stats.deploy_calls, 3);
}

#[tokio::test]
async fn archive_counts_survive_a_restart_and_follow_overwrites() {
    let sim = start().await;
    let good = archive(&[A, B], &[A, B]);
    sim.deploy("jfconnect-usage/a.zip", good.clone(), &sha256_hex(&good))
        .await;
    let dir = sim.stop().await;

    let sim = start_in(dir, |_| {}).await;
    let stats = sim.stats().await;
    assert_eq!((stats.archived_usage_files, stats.archives_stored), (2, 1));
    // Overwriting the archive with a lying one takes its files out of the count.
    let lying = archive(&[A, B], &[A, C]);
    sim.deploy("jfconnect-usage/a.zip", lying.clone(), &sha256_hex(&lying))
        .await;
    let stats = sim.stats().await;
    assert_eq!(stats.archived_usage_files, 0);
    assert_eq!((stats.archives_stored, stats.archives_invalid), (1, 1));
}

#[tokio::test]
async fn path_traversal_is_refused_with_400() {
    let sim = start().await;
    for path in [
        "/artifactory/repo/../../../etc/passwd",
        "/artifactory/repo/%2e%2e/%2e%2e/x",
        "/artifactory/repo//etc/passwd",
        "/artifactory/..%2f..%2fx/y",
        "/artifactory/repo/a%2f..%2f..%2fb",
    ] {
        let req = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        );
        let answer = raw_request(&sim, &req).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("bad_path"), "{path}: {answer}");
    }
    let escaped: Vec<_> = std::fs::read_dir(sim.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        escaped.iter().all(|n| n != "etc" && n != "x" && n != "b"),
        "{escaped:?}"
    );
}

#[tokio::test]
async fn deploy_over_a_folder_or_under_a_file_is_409() {
    let sim = start().await;
    sim.deploy("r/a/b.bin", b"1".to_vec(), &sha256_hex(b"1"))
        .await;
    assert_eq!(
        sim.deploy("r/a", b"2".to_vec(), &sha256_hex(b"2"))
            .await
            .status(),
        409
    );
    assert_eq!(
        sim.deploy("r/a/b.bin/c", b"3".to_vec(), &sha256_hex(b"3"))
            .await
            .status(),
        409
    );
}
