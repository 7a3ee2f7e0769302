//! The offline HTTP endpoints: a registration bundle to download, an entitlements bundle to
//! upload, both behind the admin token; refusals are 400 with the bundle's sentence.

use jfconnect::app::App;
use jfconnect::clock::{SharedClock, SystemClock};
use jfconnect::config::Config;
use jfconnect::sim::vendor::answer_bundle;
use std::sync::Arc;

const TOKEN: &str = "offline-api-token-0123456789";
const ADMIN: &str = "offline-admin-token-0123456789";

struct Running {
    base: String,
    service: Arc<App>,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    jfconnect::bundle::keys_generate(&dir.path().join("vendor")).unwrap();
    let mut config = Config::defaults(dir.path().join("data"));
    config.airgap.enabled = true;
    config.airgap.outbox_dir = dir.path().join("outbox");
    config.airgap.vendor_public_keys = vec![dir.path().join("vendor.pub")];
    let lic = dir.path().join("license");
    std::fs::write(&lic, "JFL-OFFLINE-HTTP-0001").unwrap();
    config.license.file = Some(lic);
    config.api.token = Some(jfconnect::secret::Secret::new(TOKEN));
    config.api.admin_token = Some(jfconnect::secret::Secret::new(ADMIN));
    let clock: SharedClock = Arc::new(SystemClock);
    let service = Arc::new(App::build(config, clock, None, true).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = jfconnect::api::router(service.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    Running {
        base,
        service,
        dir,
        stop: Some(tx),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap()
}

#[tokio::test]
async fn offline_registration_round_trip_over_http() {
    let mut r = start().await;
    let http = client();
    let start_url = format!("{}/api/v1/offline/start_register", r.base);
    let register_url = format!("{}/api/v1/offline/register", r.base);

    // Both routes need the admin token: none is 401, the API token (reads) 403.
    assert_eq!(http.get(&start_url).send().await.unwrap().status(), 401);
    let resp = http.post(&register_url).body("x").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .get(&start_url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = http
        .post(&register_url)
        .bearer_auth(TOKEN)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // A registration bundle, as a download, signed by the JPD's own key.
    let resp = http
        .get(&start_url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/octet-stream"
    );
    let disposition = resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"registration-"),
        "{disposition}"
    );
    let bytes = resp.bytes().await.unwrap();
    let reg = r.dir.path().join("downloaded.jfbundle");
    std::fs::write(&reg, &bytes).unwrap();
    let m =
        jfconnect::bundle::verify_file_with_pubkey(&reg, &r.dir.path().join("data/keys/jpd.pub"))
            .unwrap();
    assert_eq!(m.kind, jfconnect::bundle::Kind::Registration);
    assert_eq!(m.jpd_id, r.service.jpd_id());

    // The vendor's answer goes back up and is served at once.
    let answer = r.dir.path().join("answer.jfbundle");
    answer_bundle(
        &r.dir.path().join("vendor-state"),
        &r.dir.path().join("vendor.key"),
        &reg,
        &answer,
        Arc::new(SystemClock),
    )
    .unwrap();
    let body = std::fs::read(&answer).unwrap();
    let resp = http
        .post(&register_url)
        .bearer_auth(ADMIN)
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["imported"], true);
    assert_eq!(v["entitlements"], 4);
    let v: serde_json::Value = http
        .get(format!("{}/api/v1/entitlements", r.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["subscription_id"], "sub-airgap-0001", "{v}");

    // The same bundle again: refused, 400, with the sentence.
    let resp = http
        .post(&register_url)
        .bearer_auth(ADMIN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "bundle_refused");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already imported"),
        "{v}"
    );
    let _ = r.stop.take().map(|s| s.send(()));
}

#[tokio::test]
async fn a_bad_bundle_is_400_and_the_upload_is_not_held_to_the_1_mib_api_cap() {
    let mut r = start().await;
    let http = client();
    let register_url = format!("{}/api/v1/offline/register", r.base);
    let state_before = std::fs::read_dir(r.dir.path().join("data/state"))
        .unwrap()
        .count();
    // 2 MiB of garbage: over the API's 1 MiB cap, so reaching the bundle check proves the
    // route has its own limit.
    let resp = http
        .post(&register_url)
        .bearer_auth(ADMIN)
        .body(vec![b'x'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "bundle_refused");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a bundle"),
        "{v}"
    );
    // A hostile fixture: same, and nothing in the state folder changed.
    let fixture = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/bundles/bad/zip-slip.jfbundle"),
    )
    .unwrap();
    let resp = http
        .post(&register_url)
        .bearer_auth(ADMIN)
        .body(fixture)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        std::fs::read_dir(r.dir.path().join("data/state"))
            .unwrap()
            .count(),
        state_before
    );
    let leftovers = std::fs::read_dir(r.dir.path().join("data"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .count();
    assert_eq!(leftovers, 0, "the temp upload is removed");
    let _ = r.stop.take().map(|s| s.send(()));
}
