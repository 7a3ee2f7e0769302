use super::*;
use crate::clock::ManualClock;
use crate::entitlements::{valid_at, EntitlementsStore, LicenseSource};
use crate::protocol::Entitlement;
use crate::protocol::Entitlements;
use crate::remote::TransportError;
use crate::transport::memory::{MemoryTransport, Operation};
use chrono::{DateTime, Utc};
use std::path::PathBuf;

const GOOD: &str = "JFL-GOOD-LICENSE-0001";

fn ents(sub: &str) -> Entitlements {
    Entitlements {
        subscription_id: sub.into(),
        subscription_type: "enterprise_plus".into(),
        jpd_id: "jpd-test".into(),
        issued_at: "2026-01-01T00:00:00Z".into(),
        entitlements: vec![Entitlement {
            product: "artifactory".into(),
            feature: "ha".into(),
            valid_from: None,
            valid_until: None,
        }],
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    license: PathBuf,
    transport: Arc<MemoryTransport>,
    job: EntitlementsJob,
}

fn fixture(license: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let lic = dir.path().join("license");
    std::fs::write(&lic, license).unwrap();
    let transport = Arc::new(MemoryTransport::new(GOOD, "\"v1\"", ents("sub-1")));
    let store = Arc::new(EntitlementsStore::open(&dir.path().join("state")).unwrap());
    let clock = ManualClock::new(Utc::now());
    let job = EntitlementsJob {
        transport: transport.clone(),
        store,
        license: LicenseSource {
            path: Some(lic.clone()),
            api_path: None,
        },
        jpd_id: "jpd-test".into(),
        clock: Arc::new(clock),
    };
    Fixture {
        _dir: dir,
        license: lic,
        transport,
        job,
    }
}

#[tokio::test]
async fn registers_then_fetches_then_gets_304_when_unchanged() {
    let f = fixture(GOOD);
    let r = f.job.run().await.unwrap();
    assert!(r.summary.contains("registered"), "{}", r.summary);
    assert!(
        r.summary.contains("fetched 1 entitlement of subscription"),
        "{}",
        r.summary
    );
    let r = f.job.run().await.unwrap();
    assert!(r.summary.contains("304"), "{}", r.summary);
    assert_eq!(
        f.transport.calls(),
        vec![
            Operation::Register,
            Operation::Entitlements,
            Operation::Entitlements
        ],
        "registration is reused, not repeated"
    );
}

#[tokio::test]
async fn refused_license_is_recorded_as_rejected_without_the_license() {
    let f = fixture("JFL-BAD-LICENSE");
    let e = f.job.run().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Rejected);
    assert!(e.message.contains("HTTP 400"), "{}", e.message);
    let s = f.job.store.snapshot();
    let rej = s.rejected.expect("rejection recorded");
    assert_eq!(
        rej.license_fingerprint,
        Secret::new("JFL-BAD-LICENSE").fingerprint()
    );
    let on_disk = std::fs::read_to_string(f.job.store.path()).unwrap();
    assert!(
        !on_disk.contains("JFL-BAD-LICENSE"),
        "the license never reaches the state file"
    );
}

#[tokio::test]
async fn fixed_license_registers_and_clears_the_rejection() {
    let f = fixture("JFL-BAD-LICENSE");
    assert!(f.job.run().await.is_err());
    std::fs::write(&f.license, GOOD).unwrap();
    f.job.run().await.unwrap();
    let s = f.job.store.snapshot();
    assert!(s.rejected.is_none());
    assert!(s.registration.is_some());
}

#[tokio::test]
async fn server_error_is_unavailable_and_keeps_last_good_entitlements() {
    let f = fixture(GOOD);
    f.job.run().await.unwrap();
    f.transport.fail_next(
        Operation::Entitlements,
        TransportError::unavailable(Some(500), "JES failed (HTTP 500)"),
    );
    let e = f.job.run().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Unavailable);
    assert_eq!(
        f.job.store.snapshot().current.unwrap().entitlements,
        ents("sub-1")
    );
}

#[tokio::test]
async fn changed_subscription_is_picked_up() {
    let f = fixture(GOOD);
    f.job.run().await.unwrap();
    f.transport.set_entitlements("\"v2\"", ents("sub-2"));
    f.job.run().await.unwrap();
    let cur = f.job.store.snapshot().current.unwrap();
    assert_eq!(cur.entitlements.subscription_id, "sub-2");
    assert_eq!(cur.etag.as_deref(), Some("\"v2\""));
}

#[tokio::test]
async fn revoked_token_forgets_registration_and_registers_again() {
    let f = fixture(GOOD);
    f.job.run().await.unwrap();
    f.transport.fail_next(
        Operation::Entitlements,
        TransportError::rejected(Some(401), "JES refused (HTTP 401)"),
    );
    let e = f.job.run().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Unavailable);
    assert!(f.job.store.snapshot().registration.is_none());
    f.job.run().await.unwrap();
    assert_eq!(
        f.transport
            .calls()
            .iter()
            .filter(|c| **c == Operation::Register)
            .count(),
        2
    );
}

#[tokio::test]
async fn missing_license_is_a_local_error_naming_the_key() {
    let f = fixture(GOOD);
    std::fs::remove_file(&f.license).unwrap();
    let e = f.job.run().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Local);
    assert!(e.message.contains("jfconnect.license.file"));
}

#[tokio::test]
async fn state_survives_a_restart() {
    let f = fixture(GOOD);
    f.job.run().await.unwrap();
    let reopened = EntitlementsStore::open(f.job.store.path().parent().unwrap()).unwrap();
    assert_eq!(reopened.snapshot(), f.job.store.snapshot());
}

#[test]
fn entitlement_windows_are_served_only_while_valid() {
    let now = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let mut e = ents("s");
    e.entitlements = vec![
        Entitlement {
            product: "a".into(),
            feature: "now".into(),
            valid_from: None,
            valid_until: None,
        },
        Entitlement {
            product: "a".into(),
            feature: "later".into(),
            valid_from: Some("2026-07-01T00:00:00Z".into()),
            valid_until: None,
        },
        Entitlement {
            product: "a".into(),
            feature: "over".into(),
            valid_from: None,
            valid_until: Some("2026-05-01T00:00:00Z".into()),
        },
    ];
    let served: Vec<String> = valid_at(&e, now)
        .entitlements
        .into_iter()
        .map(|x| x.feature)
        .collect();
    assert_eq!(served, vec!["now".to_string()]);
}
