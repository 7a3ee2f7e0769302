//! The simulated JES: registration, entitlements with ETag, dynamic subscription changes.

mod sim_support;

use jfconnect::protocol::{Entitlements, ErrorBody, HEADER_JPD_ID, JES_ENTITLEMENTS};
use sim_support::*;

#[tokio::test]
async fn good_license_registers_and_gets_a_token() {
    let sim = start().await;
    let token = sim.register().await;
    assert!(token.len() > 20);
    assert_eq!(sim.stats().await.register_calls, 1);
}

#[tokio::test]
async fn bad_license_is_refused_with_invalid_license() {
    let sim = start().await;
    for bad in ["JFL-short", "XYZ-0123456789", ""] {
        let resp = sim.register_raw(bad, JPD).await;
        assert_eq!(resp.status(), 400, "{bad}");
        let body: ErrorBody = resp.json().await.unwrap();
        assert_eq!(body.error.code, "invalid_license");
        assert!(!body.error.message.contains(bad) || bad.is_empty());
    }
}

#[tokio::test]
async fn accepted_license_list_replaces_the_default_rule() {
    let sim = start_with(|o| o.accepted_licenses = Some(vec!["ONLY-THIS".into()])).await;
    assert_eq!(sim.register_raw("ONLY-THIS", JPD).await.status(), 200);
    assert_eq!(sim.register_raw(LICENSE, JPD).await.status(), 400);
}

#[tokio::test]
async fn malformed_register_body_is_400_without_echoing_the_license() {
    let sim = start().await;
    let resp = sim
        .http
        .post(sim.url("/jes/api/v1/register"))
        .body(r#"{"jpd_id":"a","license_key":12345678901234,"jfconnect_version":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.unwrap();
    assert!(text.contains("bad_json"), "{text}");
    assert!(!text.contains("12345678901234"), "{text}");
}

#[tokio::test]
async fn unchanged_entitlements_answer_304_to_the_same_etag() {
    let sim = start().await;
    let token = sim.register().await;
    let resp = sim.entitlements(&token, None).await;
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 66);
    let ents: Entitlements = resp.json().await.unwrap();
    assert_eq!(ents.jpd_id, JPD);
    assert!(!ents.entitlements.is_empty());

    let again = sim.entitlements(&token, Some(&etag)).await;
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    assert!(again.bytes().await.unwrap().is_empty());

    let other = sim.entitlements(&token, Some("\"stale\"")).await;
    assert_eq!(other.status(), 200);
    let stats = sim.stats().await;
    assert_eq!(stats.entitlements_calls, 3);
    assert_eq!(stats.entitlements_not_modified, 1);
}

#[tokio::test]
async fn changed_subscription_is_served_with_a_new_etag() {
    let sim = start().await;
    let token = sim.register().await;
    let first = sim.entitlements(&token, None).await;
    let etag = first.headers()["etag"].to_str().unwrap().to_string();

    let resp = sim
        .http
        .post(sim.url("/_sim/entitlements"))
        .json(&serde_json::json!({"entitlements": [{"product": "xray", "feature": "contextual-analysis"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let changed = sim.entitlements(&token, Some(&etag)).await;
    assert_eq!(changed.status(), 200);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
    let ents: Entitlements = changed.json().await.unwrap();
    assert_eq!(ents.entitlements.len(), 1);
    assert_eq!(ents.entitlements[0].feature, "contextual-analysis");
}

#[tokio::test]
async fn unknown_or_missing_token_is_401_and_foreign_jpd_is_403() {
    let sim = start().await;
    let token = sim.register().await;
    assert_eq!(sim.entitlements("jes-nope", None).await.status(), 401);
    let no_auth = sim
        .http
        .get(sim.url(JES_ENTITLEMENTS))
        .header(HEADER_JPD_ID, JPD)
        .send()
        .await
        .unwrap();
    assert_eq!(no_auth.status(), 401);
    let foreign = sim
        .http
        .get(sim.url(JES_ENTITLEMENTS))
        .bearer_auth(&token)
        .header(HEADER_JPD_ID, "someone-else")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let no_header = sim
        .http
        .get(sim.url(JES_ENTITLEMENTS))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(no_header.status(), 400);
}

#[tokio::test]
async fn registration_and_subscription_survive_a_restart() {
    let sim = start().await;
    let token = sim.register().await;
    sim.http
        .post(sim.url("/_sim/entitlements"))
        .json(&serde_json::json!({"subscription_type": "pro", "entitlements": []}))
        .send()
        .await
        .unwrap();
    let dir = sim.stop().await;
    // The data folder holds no usable token.
    let saved = std::fs::read_to_string(dir.path().join("jes/state.json")).unwrap();
    assert!(!saved.contains(&token));

    let sim = start_in(dir, |_| {}).await;
    let resp = sim.entitlements(&token, None).await;
    assert_eq!(resp.status(), 200);
    let ents: Entitlements = resp.json().await.unwrap();
    assert_eq!(ents.subscription_type, "pro");
}
