//! The service as a whole: a refused license waits for a change of the license file, and what
//! it learned survives a restart.

use jfconnect::app::App;
use jfconnect::clock::SystemClock;
use jfconnect::config::Config;
use jfconnect::protocol::{Entitlement, Entitlements};
use jfconnect::transport::memory::{MemoryTransport, Operation};
use std::sync::Arc;
use std::time::Duration;

const GOOD: &str = "JFL-SERVICE-GOOD-0001";

fn ents() -> Entitlements {
    Entitlements {
        subscription_id: "sub-svc".into(),
        subscription_type: "pro".into(),
        jpd_id: "x".into(),
        issued_at: "2026-01-01T00:00:00Z".into(),
        entitlements: vec![Entitlement {
            product: "artifactory".into(),
            feature: "ha".into(),
            valid_from: None,
            valid_until: None,
        }],
    }
}

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::defaults(dir.join("data"));
    c.license.file = Some(dir.join("license"));
    c
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..400 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_license_is_retried_only_after_the_license_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("license"), "JFL-REFUSED-LICENSE").unwrap();
    let transport = Arc::new(MemoryTransport::new(GOOD, "\"e\"", ents()));
    let svc = Arc::new(
        App::build(
            config(dir.path()),
            Arc::new(SystemClock),
            Some(transport.clone()),
            true,
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(jfconnect::server::serve(
        svc.clone(),
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    until("the rejection", || {
        svc.entitlements().snapshot().rejected.is_some()
    })
    .await;
    // Held back: no second register while the license stays the same (longer than the poll).
    tokio::time::sleep(jfconnect::server::LICENSE_POLL + Duration::from_secs(1)).await;
    let registers = transport
        .calls()
        .iter()
        .filter(|c| **c == Operation::Register)
        .count();
    assert_eq!(
        registers, 1,
        "a 400 is not retried while the license is unchanged"
    );
    std::fs::write(dir.path().join("license"), GOOD).unwrap();
    until("registration after the license changed", || {
        svc.entitlements().snapshot().registration.is_some()
    })
    .await;
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(12), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn entitlements_and_registration_survive_a_restart_and_are_served_while_jes_is_down() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("license"), GOOD).unwrap();
    let transport = Arc::new(MemoryTransport::new(GOOD, "\"e\"", ents()));
    {
        let svc = App::build(
            config(dir.path()),
            Arc::new(SystemClock),
            Some(transport.clone()),
            true,
        )
        .unwrap();
        svc.scheduler()
            .as_ref()
            .unwrap()
            .run_now(jfconnect::jobs::JobName::Entitlements)
            .await
            .unwrap();
    }
    // Restart with JES unreachable.
    let down = Arc::new(MemoryTransport::default());
    down.fail_next(
        Operation::Entitlements,
        jfconnect::transport::TransportError::unavailable(None, "down"),
    );
    let svc = App::build(
        config(dir.path()),
        Arc::new(SystemClock),
        Some(down.clone()),
        true,
    )
    .unwrap();
    let state = svc.entitlements().snapshot();
    assert_eq!(state.current.as_ref().unwrap().entitlements, ents());
    assert!(
        state.registration.is_some(),
        "no need to register again after a restart"
    );
    let e = svc
        .scheduler()
        .unwrap()
        .run_now(jfconnect::jobs::JobName::Entitlements)
        .await
        .unwrap_err();
    assert_eq!(e.class, jfconnect::transport::ErrorClass::Unavailable);
    assert_eq!(
        svc.entitlements().snapshot().current.unwrap().entitlements,
        ents(),
        "last good copy kept"
    );
    assert!(!down.calls().contains(&Operation::Register));
}
