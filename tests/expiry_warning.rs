//! Entitlements ending within `entitlements.warn_before`: a WARN row in status, an expiry gauge
//! per entitlement on /metrics, and readiness that stays ready.

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

const LICENSE: &str = "JFL-EXPIRY-TEST";
const TOKEN: &str = "expiry-test-token-0123456789";

fn line(feature: &str, until: Option<&str>) -> Entitlement {
    Entitlement {
        product: "artifactory".into(),
        feature: feature.into(),
        valid_from: None,
        valid_until: until.map(String::from),
    }
}

#[tokio::test]
async fn entitlements_ending_soon_warn_in_status_and_metrics_and_stay_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults(dir.path().join("data"));
    let lic = dir.path().join("license");
    std::fs::write(&lic, LICENSE).unwrap();
    config.license.file = Some(lic);
    config.api.token = Some(jfconnect::secret::Secret::new(TOKEN));
    config.entitlements.warn_before = Duration::from_secs(30 * 86400);
    let ents = Entitlements {
        subscription_id: "sub-exp".into(),
        subscription_type: "enterprise".into(),
        jpd_id: "x".into(),
        issued_at: "2026-01-01T00:00:00Z".into(),
        entitlements: vec![
            line("ha", Some("2026-12-11T00:00:00Z")),
            line("federation", Some("2027-06-01T00:00:00Z")),
            line("core", None),
        ],
    };
    let transport = Arc::new(MemoryTransport::new(LICENSE, "\"e1\"", ents));
    let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let clock: SharedClock = Arc::new(ManualClock::new(now));
    let app = Arc::new(App::build(config, clock, Some(transport), true).unwrap());
    app.scheduler()
        .unwrap()
        .run_now(JobName::Entitlements)
        .await
        .unwrap();

    let report = jfconnect::status::report(&app).await;
    let soon: Vec<&str> = report
        .ending_soon
        .iter()
        .map(|e| e.feature.as_str())
        .collect();
    assert_eq!(soon, ["ha"]);
    let table = jfconnect::status::render_table(&report, now);
    let warn = table
        .lines()
        .find(|l| l.starts_with("WARN"))
        .unwrap_or_else(|| panic!("no WARN row:\n{table}"));
    assert!(
        warn.contains("artifactory/ha ends 2026-12-11 00:00 UTC (in 10d"),
        "{warn}"
    );
    assert_eq!(
        table.lines().filter(|l| l.starts_with("WARN")).count(),
        1,
        "{table}"
    );

    let server = InProcess::start(app.clone()).await;
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let metrics = client
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "jfconnect_entitlement_expiry_timestamp_seconds{product=\"artifactory\",feature=\"ha\"} 1796947200"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("feature=\"federation\"} 1811808000"),
        "{metrics}"
    );
    assert!(!metrics.contains("feature=\"core\""), "{metrics}");
    let ready = client
        .get(format!("{base}/api/v1/system/readiness"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.text().await.unwrap().contains("ready"));
    server.stop().await;
}
