//! Shared set-up for the simulator's integration tests: a simulator on 127.0.0.1:0 with its own
//! temp data folder, a client with timeouts, and small request helpers.

#![allow(dead_code)]

use jfconnect::protocol::{self, sha256_hex, RegisterResponse, UsageBatch, UsageFileWire};
use jfconnect::sim::{self, SimHandle, SimOptions, SimStats};
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

pub const LICENSE: &str = "JFL-0123456789";
pub const JPD: &str = "jpd-test-1";

pub struct Sim {
    pub handle: SimHandle,
    pub dir: TempDir,
    pub http: reqwest::Client,
}

/// A client of the simulator. Like jfconnect's own, it drops idle connections before the
/// simulator closes them (30 s): one reused at that instant loses its request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(jfconnect::http::POOL_IDLE_TIMEOUT)
        .timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

pub async fn start() -> Sim {
    start_with(|_| {}).await
}

pub async fn start_with(tune: impl FnOnce(&mut SimOptions)) -> Sim {
    let dir = tempfile::tempdir().unwrap();
    start_in(dir, tune).await
}

/// Starts a simulator on an existing data folder (restart tests).
pub async fn start_in(dir: TempDir, tune: impl FnOnce(&mut SimOptions)) -> Sim {
    let mut opts = SimOptions::new(dir.path());
    tune(&mut opts);
    let handle = sim::spawn_for_test(opts).await.unwrap();
    Sim {
        handle,
        dir,
        http: client(),
    }
}

impl Sim {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.handle.base_url(), path)
    }

    /// Stops the simulator and hands back its data folder.
    pub async fn stop(self) -> TempDir {
        self.handle.stop().await.unwrap();
        self.dir
    }

    pub async fn stats(&self) -> SimStats {
        let resp = self.http.get(self.url("/_sim/stats")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    pub async fn register_raw(&self, license: &str, jpd: &str) -> reqwest::Response {
        self.http
            .post(self.url(protocol::JES_REGISTER))
            .json(&serde_json::json!({
                "jpd_id": jpd,
                "license_key": license,
                "jfconnect_version": "test",
            }))
            .send()
            .await
            .unwrap()
    }

    /// Registers `JPD` with a good license; answers the registration token.
    pub async fn register(&self) -> String {
        let resp = self.register_raw(LICENSE, JPD).await;
        assert_eq!(resp.status(), 200);
        let body: RegisterResponse = resp.json().await.unwrap();
        body.registration_token.expose().to_string()
    }

    pub async fn entitlements(&self, token: &str, etag: Option<&str>) -> reqwest::Response {
        let mut req = self
            .http
            .get(self.url(protocol::JES_ENTITLEMENTS))
            .bearer_auth(token)
            .header(protocol::HEADER_JPD_ID, JPD);
        if let Some(e) = etag {
            req = req.header("If-None-Match", e);
        }
        req.send().await.unwrap()
    }

    pub async fn upload_usage(&self, token: &str, files: &[&[u8]]) -> reqwest::Response {
        let batch = usage_batch(files);
        self.http
            .post(self.url(protocol::JCS_USAGE))
            .bearer_auth(token)
            .header(protocol::HEADER_JPD_ID, JPD)
            .json(&batch)
            .send()
            .await
            .unwrap()
    }

    pub async fn deploy(&self, repo_path: &str, bytes: Vec<u8>, sha: &str) -> reqwest::Response {
        self.http
            .put(self.url(&format!("/artifactory/{repo_path}")))
            .bearer_auth("jpd-token")
            .header(protocol::HEADER_CHECKSUM_SHA256, sha)
            .body(bytes)
            .send()
            .await
            .unwrap()
    }

    /// Serves `features` of product `xray` from now on (`POST /_sim/entitlements`).
    pub async fn set_xray_features(&self, features: &[&str]) {
        let entitlements: Vec<_> = features
            .iter()
            .map(|f| serde_json::json!({"product": "xray", "feature": f}))
            .collect();
        let r = self
            .http
            .post(self.url("/_sim/entitlements"))
            .json(&serde_json::json!({ "entitlements": entitlements }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    pub async fn set_faults(&self, specs: &[&str]) -> reqwest::Response {
        self.http
            .post(self.url("/_sim/faults"))
            .json(&serde_json::json!({ "faults": specs }))
            .send()
            .await
            .unwrap()
    }
}

pub fn usage_batch(files: &[&[u8]]) -> UsageBatch {
    use base64::Engine;
    UsageBatch {
        jpd_id: JPD.into(),
        files: files
            .iter()
            .enumerate()
            .map(|(i, b)| UsageFileWire {
                sha256: sha256_hex(b),
                name: format!("usage-{i}.json"),
                content_base64: base64::engine::general_purpose::STANDARD.encode(b),
            })
            .collect(),
    }
}

/// GET `path` from a `serve` process on 127.0.0.1:`port`, with the API token its data folder
/// holds: `None` until the token file exists, or when no success answer comes within `timeout`.
pub async fn node_get(
    port: u16,
    data_dir: &Path,
    path: &str,
    timeout: Duration,
) -> Option<reqwest::Response> {
    let token = fs::read_to_string(data_dir.join("api.token")).ok()?;
    let resp = client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(token.trim())
        .timeout(timeout)
        .send()
        .await
        .ok()?;
    resp.status().is_success().then_some(resp)
}

/// A usage file's bytes.
pub fn usage_file(n: usize) -> Vec<u8> {
    format!(r#"{{"product":"artifactory","timestamp":"2024-05-01T00:00:00Z","n":{n}}}"#)
        .into_bytes()
}

/// A zip archive holding `entries` and an index.json listing `listed` (path, bytes).
pub fn archive(entries: &[(&str, &[u8])], listed: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default();
    for (name, bytes) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    let index = serde_json::json!({
        "format": 1,
        "entries": listed.iter().map(|(p, b)| serde_json::json!({
            "path": p, "size": b.len(), "sha256": sha256_hex(b),
        })).collect::<Vec<_>>(),
    });
    w.start_file("index.json", opts).unwrap();
    w.write_all(index.to_string().as_bytes()).unwrap();
    w.finish().unwrap().into_inner()
}

/// Sends raw bytes on a fresh connection and reads the answer until the server closes or
/// two seconds pass.
pub async fn raw_request(sim: &Sim, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(sim.handle.addr())
        .await
        .unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// How many times each usage file (by SHA-256) appears across the archives a simulator stored
/// under `sim_dir`, each archive checked entry by entry against its index; and the archives'
/// paths.
pub fn archived_usage(sim_dir: &Path) -> (HashMap<String, usize>, Vec<String>) {
    let mut seen = HashMap::new();
    let mut names = Vec::new();
    let mut stack = vec![sim_dir.join("artifactory")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.map(Result::unwrap) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "zip") {
                names.push(p.display().to_string());
                let mut z = zip::ZipArchive::new(fs::File::open(&p).unwrap()).unwrap();
                let mut idx = String::new();
                z.by_name("index.json")
                    .unwrap()
                    .read_to_string(&mut idx)
                    .unwrap();
                let idx: serde_json::Value = serde_json::from_str(&idx).unwrap();
                for entry in idx["entries"].as_array().unwrap() {
                    let mut body = Vec::new();
                    z.by_name(entry["path"].as_str().unwrap())
                        .unwrap()
                        .read_to_end(&mut body)
                        .unwrap();
                    let sha = jfconnect::protocol::sha256_hex(&body);
                    assert_eq!(sha, entry["sha256"].as_str().unwrap());
                    *seen.entry(sha).or_insert(0) += 1;
                }
            }
        }
    }
    (seen, names)
}
