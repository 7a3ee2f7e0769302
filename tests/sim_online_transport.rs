//! Both sides of the protocol together: the online transport against the simulator. If these
//! disagree, docs/protocol.md is wrong on one side.

mod sim_support;

use jfconnect::http::Outbound;
use jfconnect::protocol::{sha256_hex, RegisterRequest};
use jfconnect::secret::Secret;
use jfconnect::sim::parse_fault;
use jfconnect::transport::online::OnlineTransport;
use jfconnect::transport::{EntitlementsFetch, ErrorClass, Transport, UsageUpload};
use sim_support::*;

fn transport(sim: &Sim) -> OnlineTransport {
    let outbound = Outbound {
        client: client(),
        proxies: Vec::new(),
    };
    let base: url::Url = sim.handle.base_url().parse().unwrap();
    OnlineTransport::new(outbound, base.clone(), base)
}

fn request(license: &str) -> RegisterRequest {
    RegisterRequest {
        jpd_id: JPD.into(),
        license_key: Secret::new(license),
        jfconnect_version: "test".into(),
    }
}

fn upload(n: usize) -> UsageUpload {
    let content = usage_file(n);
    UsageUpload {
        sha256: sha256_hex(&content),
        name: format!("u{n}.json"),
        content: content.into(),
    }
}

#[tokio::test]
async fn online_transport_registers_fetches_with_etag_and_uploads_against_the_sim() {
    let sim = start().await;
    let t = transport(&sim);
    let reg = t.register(&request(LICENSE)).await.unwrap();
    let token = reg.registration_token;

    let EntitlementsFetch::Updated { etag, entitlements } =
        t.fetch_entitlements(JPD, &token, None).await.unwrap()
    else {
        panic!("first fetch must carry entitlements");
    };
    assert_eq!(entitlements.jpd_id, JPD);
    let again = t
        .fetch_entitlements(JPD, &token, etag.as_deref())
        .await
        .unwrap();
    assert_eq!(again, EntitlementsFetch::NotModified);

    let receipt = t
        .upload_usage(JPD, &token, &[upload(1), upload(2)])
        .await
        .unwrap();
    assert_eq!((receipt.acknowledged.len(), receipt.duplicates), (2, 0));
    let receipt = t.upload_usage(JPD, &token, &[upload(2)]).await.unwrap();
    assert_eq!(receipt.duplicates, 1);
    let stats = sim.stats().await;
    assert_eq!(
        (stats.usage_received_unique, stats.usage_received_duplicate),
        (2, 1)
    );
}

#[tokio::test]
async fn sim_refusals_and_faults_classify_as_the_design_says() {
    let sim = start().await;
    let t = transport(&sim);
    let refused = t.register(&request("not-a-license")).await.unwrap_err();
    assert_eq!(refused.class, ErrorClass::Rejected);
    assert!(!refused.message.contains("not-a-license"));

    let token = t
        .register(&request(LICENSE))
        .await
        .unwrap()
        .registration_token;
    let unknown = t
        .fetch_entitlements(JPD, &Secret::new("jes-forgotten"), None)
        .await
        .unwrap_err();
    assert_eq!(
        (unknown.class, unknown.status),
        (ErrorClass::Rejected, Some(401))
    );

    for (spec, status) in [("usage=500x1", Some(500)), ("usage=resetx1", None)] {
        sim.handle.set_faults(vec![parse_fault(spec).unwrap()]);
        let err = t.upload_usage(JPD, &token, &[upload(1)]).await.unwrap_err();
        assert_eq!(
            (err.class, err.status),
            (ErrorClass::Unavailable, status),
            "{spec}: {err}"
        );
    }
    assert!(t.upload_usage(JPD, &token, &[upload(1)]).await.is_ok());
}
