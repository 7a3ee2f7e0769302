//! `PUT /api/v1/license` never destroys the admin's key: the new key goes to
//! `<data_dir>/license.api`, the configured `license.file` stays as it was, status names the key
//! in effect, and a key JES refuses is set aside so the admin's key is in effect again.

mod process_support;
use process_support::InProcess;

use jfconnect::app::App;
use jfconnect::clock::{ManualClock, SharedClock};
use jfconnect::config::Config;
use jfconnect::jobs::JobName;
use jfconnect::protocol::{Entitlement, Entitlements};
use jfconnect::transport::memory::MemoryTransport;
use std::sync::Arc;
use std::time::Duration;

const GOOD: &str = "JFL-ADMIN-GOOD-KEY";
const TOKEN: &str = "license-test-token-0123456789";
const ADMIN: &str = "license-test-admin-token-0123456789";

#[tokio::test]
async fn a_refused_api_key_leaves_the_admins_file_untouched_and_in_effect() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut config = Config::defaults(data.clone());
    let admin_file = dir.path().join("admin.license");
    std::fs::write(&admin_file, GOOD).unwrap();
    config.license.file = Some(admin_file.clone());
    config.api.token = Some(jfconnect::secret::Secret::new(TOKEN));
    config.api.admin_token = Some(jfconnect::secret::Secret::new(ADMIN));
    let ents = Entitlements {
        subscription_id: "sub-lic".into(),
        subscription_type: "enterprise".into(),
        jpd_id: "x".into(),
        issued_at: "2026-01-01T00:00:00Z".into(),
        entitlements: vec![Entitlement {
            product: "artifactory".into(),
            feature: "core".into(),
            valid_from: None,
            valid_until: None,
        }],
    };
    let transport = Arc::new(MemoryTransport::new(GOOD, "\"e1\"", ents));
    let clock: SharedClock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let app = Arc::new(App::build(config, clock, Some(transport), false).unwrap());
    let scheduler = app.scheduler().unwrap().clone();
    scheduler.run_now(JobName::Entitlements).await.unwrap();
    assert!(jfconnect::status::report(&app)
        .await
        .license
        .starts_with(&format!("file {}", admin_file.display())));

    let server = InProcess::start(app.clone()).await;
    let base = server.base.clone();
    let r = reqwest::Client::new()
        .put(format!("{base}/api/v1/license"))
        .bearer_auth(ADMIN)
        .body("JFL-MISTYPED-KEY")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        std::fs::read_to_string(&admin_file).unwrap(),
        GOOD,
        "admin's file untouched"
    );
    let api_key = data.join("license.api");
    let refused = data.join("license.api.refused");
    server.stop().await;
    // The service registers again at once; the refused key is then already set aside.
    let stored = std::fs::read_to_string(&api_key)
        .or_else(|_| std::fs::read_to_string(&refused))
        .unwrap();
    assert_eq!(stored, "JFL-MISTYPED-KEY");
    if api_key.exists() {
        assert_eq!(
            jfconnect::status::report(&app).await.license,
            format!("set through the API ({})", api_key.display())
        );
    }

    // The background run may already have met the refusal; either way, once refused, the key
    // is set aside and the admin's key registers again.
    if !refused.exists() {
        let e = scheduler.run_now(JobName::Entitlements).await.unwrap_err();
        assert!(
            e.message.contains("license file is in effect again"),
            "{}",
            e.message
        );
    }
    assert!(refused.exists() && !api_key.exists());
    assert_eq!(std::fs::read_to_string(&admin_file).unwrap(), GOOD);
    assert!(
        app.entitlements().snapshot().current.is_some(),
        "still served"
    );
    scheduler.run_now(JobName::Entitlements).await.unwrap();
    assert!(app.entitlements().snapshot().registration.is_some());
    assert!(jfconnect::status::report(&app)
        .await
        .license
        .starts_with(&format!("file {}", admin_file.display())));
}
