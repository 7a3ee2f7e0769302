//! The shared state against a real PostgreSQL: migrations, leases and fencing, the import
//! compare-and-set, sealed secrets, membership, and following entitlements changes.
//! One server serves the whole binary; each test has its own database in it.

mod pg_support;
mod process_support;
mod tls_support;

use chrono::{TimeZone, Utc};
use jfconnect::config::{DatabaseSettings, TlsMode};
use jfconnect::entitlements::{EntitlementsState, StoredEntitlements};
use jfconnect::ha::cluster::{Cluster, ClusterOptions};
use jfconnect::ha::db::{Db, DbError};
use jfconnect::ha::keeper;
use jfconnect::ha::lease::{self, LeaseTiming};
use jfconnect::ha::migrate;
use jfconnect::ha::nodes::{self, Member, MembershipError};
use jfconnect::ha::sealing::MasterKey;
use jfconnect::ha::store::{Identity, PgStore};
use jfconnect::ha::watch;
use jfconnect::protocol::Entitlements;
use jfconnect::secret::Secret;
use jfconnect::state::{ImportCommit, ImportConflict};
use pg_support::PgServer;
use std::sync::Arc;
use std::time::Duration;
use tls_support::TestPki;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const OTHER_KEY: &str = "ffeeddccbbaa99887766554433221100";

fn db_for(server: &PgServer, database: &str, node: &str) -> Db {
    let settings = DatabaseSettings {
        host: "127.0.0.1".into(),
        port: server.port,
        database: database.into(),
        username: pg_support::USER.into(),
        password: Some(Secret::new(pg_support::PASSWORD)),
        tls: TlsMode::Disable,
        plaintext_password_in_file: false,
    };
    Db::new(&settings, None, node).unwrap()
}

fn unreachable_or_wrong(port: u16, user: &str, password: &str) -> Db {
    let settings = DatabaseSettings {
        host: "127.0.0.1".into(),
        port,
        database: "postgres".into(),
        username: user.into(),
        password: Some(Secret::new(password)),
        tls: TlsMode::Disable,
        plaintext_password_in_file: false,
    };
    Db::new(&settings, None, "n").unwrap()
}

async fn migrated(node: &str) -> (String, Db) {
    let server = pg_support::shared();
    let name = server.fresh_database();
    let db = db_for(server, &name, node);
    migrate::migrate(&db).await.unwrap();
    (name, db)
}

fn store(db: &Db, key: &str, node: &str) -> PgStore {
    PgStore::new(
        db.clone(),
        Arc::new(MasterKey::from_hex(key).unwrap()),
        node,
    )
}

fn sample_state(subscription: &str, token: &str) -> EntitlementsState {
    let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    EntitlementsState {
        registration: Some(jfconnect::entitlements::Registration {
            token: Secret::new(token),
            subscription_id: subscription.into(),
            license_fingerprint: "abcd".into(),
            registered_at: at,
        }),
        current: Some(StoredEntitlements {
            etag: Some("\"e1\"".into()),
            fetched_at: at,
            confirmed_at: at,
            entitlements: Entitlements {
                subscription_id: subscription.into(),
                subscription_type: "enterprise_plus".into(),
                jpd_id: "jpd-1".into(),
                issued_at: "2026-01-02T03:04:05Z".into(),
                entitlements: vec![],
            },
        }),
        rejected: None,
    }
}

#[tokio::test]
async fn migrations_run_once_under_concurrency_and_read_only_check_never_migrates() {
    let server = pg_support::shared();
    let name = server.fresh_database();
    let db = db_for(server, &name, "n1");
    assert!(matches!(
        migrate::schema_version(&db).await,
        Err(DbError::NoSchema)
    ));
    assert_eq!(
        server.psql(
            &name,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'jfconnect'"
        ),
        "0",
        "a read-only check created the schema"
    );
    let other = db_for(server, &name, "n2");
    let (a, b) = tokio::join!(migrate::migrate(&db), migrate::migrate(&other));
    let mut found = [a.unwrap(), b.unwrap()];
    found.sort();
    assert_eq!(
        found,
        [0, migrate::latest()],
        "exactly one node applied the migrations"
    );
    assert_eq!(migrate::migrate(&db).await.unwrap(), migrate::latest());
    assert_eq!(
        migrate::schema_version(&db).await.unwrap(),
        migrate::latest()
    );
    assert_eq!(
        server.psql(&name, "SELECT count(*) FROM jfconnect.schema_versions"),
        migrate::latest().to_string()
    );
    // A schema from a newer jfconnect is refused, not downgraded.
    server.psql(
        &name,
        "INSERT INTO jfconnect.schema_versions (version, name) VALUES (999, 'future')",
    );
    let err = migrate::migrate(&db).await.unwrap_err();
    assert!(err.to_string().contains("upgrade jfconnect"), "{err}");
}

#[tokio::test]
async fn lease_moves_only_after_expiry_and_the_old_epoch_can_no_longer_write() {
    let (_name, db) = migrated("a").await;
    let ttl = Duration::from_millis(1500);
    let a = store(&db, KEY, "a");
    let b = store(&db, KEY, "b");
    let fa = lease::acquire_or_renew(&db, "entitlements", "a", None, ttl)
        .await
        .unwrap()
        .expect("a free lease is granted");
    assert_eq!(fa.epoch, 1);
    assert_eq!(
        lease::acquire_or_renew(&db, "entitlements", "b", None, ttl)
            .await
            .unwrap(),
        None,
        "a live lease is not taken"
    );
    let renewed = lease::acquire_or_renew(&db, "entitlements", "a", Some(1), ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.epoch, 1, "renewal keeps the epoch");
    a.save_entitlements(&fa, &sample_state("sub-a", "tok-a"))
        .await
        .unwrap();

    // a is paused past its TTL; b takes over with a higher epoch.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let fb = lease::acquire_or_renew(&db, "entitlements", "b", None, ttl)
        .await
        .unwrap()
        .expect("an expired lease is taken");
    assert_eq!(fb.epoch, 2);

    // a wakes up: its write with epoch 1 is refused by the database, and nothing changed.
    let err = a
        .save_entitlements(&fa, &sample_state("sub-stale", "tok-stale"))
        .await
        .unwrap_err();
    match &err {
        DbError::Fenced(f) => {
            assert_eq!(f.fence, fa);
            assert_eq!(f.current, Some(("b".to_string(), 2)));
        }
        other => panic!("expected a fenced refusal, got {other}"),
    }
    assert!(
        err.to_string().contains("node b holds it at epoch 2"),
        "{err}"
    );
    let stored = b.entitlements().await.unwrap().unwrap();
    assert_eq!(
        stored.state.registration.unwrap().subscription_id,
        "sub-a",
        "the stale write left no trace"
    );
    let stale_schedule = a
        .update_schedule(
            "entitlements",
            Some(&fa),
            Box::new(|_| serde_json::json!({"next_run": null})),
        )
        .await;
    assert!(matches!(stale_schedule, Err(DbError::Fenced(_))));
    assert!(b.schedules().await.unwrap().jpd.is_empty());
    // Its renewal fails too: it must step down.
    assert_eq!(
        lease::acquire_or_renew(&db, "entitlements", "a", Some(1), ttl)
            .await
            .unwrap(),
        None
    );
    b.save_entitlements(&fb, &sample_state("sub-b", "tok-b"))
        .await
        .unwrap();
    let views = lease::leases(&db).await.unwrap();
    assert_eq!(views.len(), 1);
    assert_eq!((views[0].holder.as_str(), views[0].epoch), ("b", 2));
    assert!(views[0].expires_in_ms > 0);

    // A released lease is free at once; the next holder raises the epoch.
    lease::release(&db, &fb).await.unwrap();
    let again = lease::acquire_or_renew(&db, "entitlements", "a", None, ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.epoch, 3);
    assert!(matches!(
        b.save_entitlements(&fb, &sample_state("x", "y")).await,
        Err(DbError::Fenced(_))
    ));
}

#[tokio::test]
async fn a_holder_whose_lease_lapsed_gets_a_new_epoch_even_if_nobody_took_it() {
    let (_name, db) = migrated("a").await;
    let ttl = Duration::from_millis(500);
    let first = lease::acquire_or_renew(&db, "usage", "a", None, ttl)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let second = lease::acquire_or_renew(&db, "usage", "a", Some(first.epoch), ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.epoch, first.epoch + 1);
    let a = store(&db, KEY, "a");
    assert!(matches!(
        a.update_schedule("usage", Some(&first), Box::new(|_| serde_json::json!({})))
            .await,
        Err(DbError::Fenced(_))
    ));
    a.update_schedule(
        "usage",
        Some(&second),
        Box::new(|_| serde_json::json!({"blocked": false})),
    )
    .await
    .unwrap();
    assert_eq!(
        a.schedules().await.unwrap().jpd.get("usage"),
        Some(&serde_json::json!({"blocked": false}))
    );
}

#[tokio::test]
async fn a_leased_jobs_schedule_is_the_jpds_and_every_other_jobs_is_the_nodes() {
    let (_name, db) = migrated("a").await;
    let ttl = Duration::from_secs(15);
    let (a, b) = (store(&db, KEY, "a"), store(&db, KEY, "b"));
    let fence = lease::acquire_or_renew(&db, "entitlements", "a", None, ttl)
        .await
        .unwrap()
        .unwrap();
    // The leaseholder's change is read by every node, and it sees what was stored before.
    for runs in 1..=2 {
        a.update_schedule(
            "entitlements",
            Some(&fence),
            Box::new(move |stored| {
                let before = stored.map_or(0, |s| s["runs"].as_u64().unwrap());
                assert_eq!(before, runs - 1);
                serde_json::json!({"runs": runs, "last_run": "2026-12-01T20:00:00Z"})
            }),
        )
        .await
        .unwrap();
    }
    let seen_by_b = b.schedules().await.unwrap();
    assert_eq!(seen_by_b.jpd["entitlements"]["runs"], 2);
    assert!(seen_by_b.node.is_empty());
    // Each node's own jobs stay its own, written without a lease.
    for (node, runs) in [(&a, 5), (&b, 7)] {
        node.update_schedule(
            "usage",
            None,
            Box::new(move |_| serde_json::json!({"runs": runs})),
        )
        .await
        .unwrap();
    }
    assert_eq!(a.schedules().await.unwrap().node["usage"]["runs"], 5);
    assert_eq!(b.schedules().await.unwrap().node["usage"]["runs"], 7);
    assert!(!b.schedules().await.unwrap().jpd.contains_key("usage"));
    // A lease writes only its own job's schedule.
    assert!(a
        .update_schedule("usage", Some(&fence), Box::new(|_| serde_json::json!({})))
        .await
        .is_err());
}

fn import<'a>(
    kind: &'a str,
    bundle_id: &'a str,
    sequence: u64,
    tag: &'a str,
    entry: &'a serde_json::Value,
) -> ImportCommit<'a> {
    ImportCommit {
        kind,
        bundle_id,
        sequence,
        created: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
        bundle_sha256: bundle_id,
        tag,
        entry,
    }
}

#[tokio::test]
async fn import_sequence_is_one_compare_and_set_across_nodes() {
    let (_name, db) = migrated("a").await;
    let created = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let stores: Vec<PgStore> = (0..6).map(|i| store(&db, KEY, &format!("n{i}"))).collect();
    let ids: Vec<String> = (0..6).map(|i| format!("bundle-{i}")).collect();
    let entries: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| serde_json::json!({ "from": id }))
        .collect();
    // Six nodes import six different bundles with the same sequence at once: one wins.
    let outcomes = futures_util::future::join_all(stores.iter().zip(&ids).zip(&entries).map(
        |((s, id), entry)| async move {
            s.commit_import(&import("entitlements", id, 7, id, entry))
                .await
                .unwrap()
        },
    ))
    .await;
    let winners: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.is_ok())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    for o in outcomes.iter().filter(|o| o.is_err()) {
        assert_eq!(o, &Err(ImportConflict::SameSequence(7)));
    }
    let winner = &ids[winners[0]];
    let history = stores[0].import_history("entitlements").await.unwrap();
    assert_eq!(history.last_sequence, Some(7));
    assert_eq!(history.newest_created, Some(created));
    assert_eq!(
        history.imported_ids.into_iter().collect::<Vec<_>>(),
        vec![winner.clone()],
        "refused imports left no trace"
    );
    assert_eq!(
        stores[1].latest_import("entitlements").await.unwrap(),
        Some(entries[winners[0]].clone()),
        "the winner's payload was put in the inbox in the same transaction"
    );
    let entry = serde_json::json!({});
    assert_eq!(
        stores[2]
            .commit_import(&import("entitlements", "older", 6, "t6", &entry))
            .await
            .unwrap(),
        Err(ImportConflict::OlderSequence {
            sequence: 6,
            last: 7
        })
    );
    assert_eq!(
        stores[2]
            .commit_import(&import("entitlements", winner, 9, "t9", &entry))
            .await
            .unwrap(),
        Err(ImportConflict::AlreadyImported(winner.clone()))
    );
    assert_eq!(
        stores[3]
            .commit_import(&import("entitlements", "newer", 8, "t8", &entry))
            .await
            .unwrap(),
        Ok(())
    );
    // Another kind has its own sequence.
    assert_eq!(
        stores[4]
            .commit_import(&import("usage", "u1", 1, "u1", &entry))
            .await
            .unwrap(),
        Ok(())
    );
}

#[tokio::test]
async fn identity_is_made_once_sealed_and_refused_with_another_master_key() {
    let server = pg_support::shared();
    let (name, db) = migrated("a").await;
    let fresh = |jpd: &str| Identity {
        jpd_id: jpd.into(),
        signing_public: format!("public key of {jpd}"),
        signing_secret: Secret::new(format!("SECRET-KEY-{jpd}")),
        api_token: Some(Secret::new(format!("API-TOKEN-{jpd}"))),
        admin_token: Some(Secret::new(format!("ADMIN-TOKEN-{jpd}"))),
        license: None,
        origin: "created".into(),
        created_by: String::new(),
    };
    let a = store(&db, KEY, "a");
    let b = store(&db, KEY, "b");
    let (fa, fb) = (fresh("jpd-a"), fresh("jpd-b"));
    let (ra, rb) = tokio::join!(a.ensure_identity(&fa), b.ensure_identity(&fb));
    let ((ia, made_a), (ib, made_b)) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ia, ib, "both nodes see one identity");
    assert!(made_a ^ made_b, "exactly one node created it");
    assert_eq!(
        ia.api_token.as_ref().unwrap().expose(),
        format!("API-TOKEN-{}", ia.jpd_id)
    );
    a.set_license(Some(&Secret::new("LICENSE-XYZ")))
        .await
        .unwrap();
    assert_eq!(
        b.identity()
            .await
            .unwrap()
            .unwrap()
            .license
            .unwrap()
            .expose(),
        "LICENSE-XYZ"
    );
    a.save_entitlements(
        &lease::acquire_or_renew(&db, "entitlements", "a", None, Duration::from_secs(15))
            .await
            .unwrap()
            .unwrap(),
        &sample_state("sub", "REGISTRATION-TOKEN"),
    )
    .await
    .unwrap();

    // Nothing secret is readable in the database itself.
    let dump = server.psql(
        &name,
        "SELECT encode(signing_secret, 'escape') || encode(api_token, 'escape') || encode(admin_token, 'escape') || encode(license, 'escape') || (SELECT encode(state, 'escape') FROM jfconnect.entitlements) FROM jfconnect.identity",
    );
    for plain in [
        "SECRET-KEY",
        "API-TOKEN",
        "ADMIN-TOKEN",
        "LICENSE-XYZ",
        "REGISTRATION-TOKEN",
    ] {
        assert!(!dump.contains(plain), "{plain} is stored in clear");
    }

    // A node with another master key refuses, naming the key file.
    let wrong = store(&db, OTHER_KEY, "c");
    let err = wrong.identity().await.unwrap_err();
    assert!(err.to_string().contains("masterKeyFile"), "{err}");
    let err = wrong.entitlements().await.unwrap_err();
    assert!(err.to_string().contains("another master key"), "{err}");
    let err = wrong.ensure_identity(&fresh("jpd-c")).await.unwrap_err();
    assert!(err.to_string().contains("masterKeyFile"), "{err}");
}

#[tokio::test]
async fn a_second_process_with_the_same_node_id_is_refused_until_the_first_goes_stale() {
    let (_name, db) = migrated("a").await;
    let stale_after = Duration::from_millis(800);
    let first = Member::new("node-1");
    let second = Member::new("node-1");
    nodes::join(&db, &first, Some("127.0.0.1:8030"), stale_after)
        .await
        .unwrap()
        .unwrap();
    let refused = nodes::join(&db, &second, None, stale_after)
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(refused, MembershipError::DuplicateNodeId { .. }));
    assert!(refused
        .to_string()
        .contains("give every node its own shared.node.id"));
    nodes::heartbeat(&db, &first, Some("d1"), None)
        .await
        .unwrap()
        .unwrap();
    let view = nodes::nodes(&db).await.unwrap();
    assert_eq!(view.len(), 1);
    assert_eq!(view[0].entitlements_digest.as_deref(), Some("d1"));
    assert!(view[0].heartbeat_age_ms < 1000);

    // The first stops heartbeating (crash): the id may be used again, and the old process,
    // should it wake up, learns it was taken over.
    tokio::time::sleep(stale_after + Duration::from_millis(300)).await;
    nodes::join(&db, &second, None, stale_after)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        nodes::heartbeat(&db, &first, None, None).await.unwrap(),
        Err(MembershipError::TakenOver {
            node_id: "node-1".into()
        })
    );
    nodes::leave(&db, &second).await.unwrap();
    assert!(nodes::nodes(&db).await.unwrap().is_empty());
}

#[tokio::test]
async fn every_node_sees_an_entitlements_change_within_a_second() {
    let server = pg_support::shared();
    let (name, db) = migrated("a").await;
    let writer = store(&db, KEY, "a");
    let reader_db = db_for(server, &name, "b");
    let reader = store(&reader_db, KEY, "b");
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    // Polling is slow here on purpose: only the notification can make it within a second.
    let mut followed = watch::follow(reader, Duration::from_secs(30), stop_rx);
    tokio::time::timeout(Duration::from_secs(10), followed.wait_for(|f| f.connected))
        .await
        .unwrap()
        .unwrap();
    let fence = lease::acquire_or_renew(&db, "entitlements", "a", None, Duration::from_secs(15))
        .await
        .unwrap()
        .unwrap();
    for round in 1..=3 {
        let version = writer
            .save_entitlements(&fence, &sample_state(&format!("sub-{round}"), "t"))
            .await
            .unwrap();
        let seen = tokio::time::timeout(
            Duration::from_secs(1),
            followed.wait_for(|f| f.current.as_ref().is_some_and(|c| c.version == version)),
        )
        .await;
        assert!(seen.is_ok(), "round {round}: change not seen within 1 s");
    }
    let current = followed.borrow().current.clone().unwrap();
    assert_eq!(
        current.state.registration.as_ref().unwrap().subscription_id,
        "sub-3"
    );
    assert_eq!(current.digest.len(), 64);

    // An import waiting in the inbox and a license set through the API are announced at their
    // commit too (the poll is 30 s here).
    let before = followed.borrow().clone();
    let entry = serde_json::json!({"sequence": 1});
    writer
        .commit_import(&import("entitlements", "b1", 1, "bundle-b1", &entry))
        .await
        .unwrap()
        .unwrap();
    let announced = tokio::time::timeout(
        Duration::from_secs(1),
        followed.wait_for(|f| f.imports > before.imports),
    )
    .await
    .is_ok();
    assert!(announced, "the import was not announced within 1 s");
    writer
        .ensure_identity(&Identity {
            jpd_id: "jpd-a".into(),
            signing_public: "public key".into(),
            signing_secret: Secret::new("SECRET-KEY"),
            api_token: None,
            admin_token: None,
            license: None,
            origin: "created".into(),
            created_by: String::new(),
        })
        .await
        .unwrap();
    writer
        .set_license(Some(&Secret::new("JFL-NEW")))
        .await
        .unwrap();
    let announced = tokio::time::timeout(
        Duration::from_secs(1),
        followed.wait_for(|f| f.license > before.license),
    )
    .await
    .is_ok();
    assert!(announced, "the license was not announced within 1 s");
    assert_eq!(followed.borrow().imports, before.imports + 1);

    // A change that sends no notification is still caught by the poll.
    let (_stop2, stop_rx2) = tokio::sync::watch::channel(false);
    let mut polled = watch::follow(
        store(&db_for(server, &name, "c"), KEY, "c"),
        Duration::from_millis(200),
        stop_rx2,
    );
    tokio::time::timeout(Duration::from_secs(10), polled.wait_for(|f| f.connected))
        .await
        .unwrap()
        .unwrap();
    server.psql(
        &name,
        "UPDATE jfconnect.entitlements SET version = version + 100",
    );
    tokio::time::timeout(
        Duration::from_secs(2),
        polled.wait_for(|f| f.current.as_ref().is_some_and(|c| c.version > 100)),
    )
    .await
    .expect("the poll picks up a change without notification")
    .unwrap();
}

#[tokio::test]
async fn followers_keep_the_last_good_copy_while_the_database_restarts() {
    let server = PgServer::start();
    let name = server.fresh_database();
    let db = db_for(&server, &name, "a");
    migrate::migrate(&db).await.unwrap();
    let writer = store(&db, KEY, "a");
    let fence = lease::acquire_or_renew(&db, "entitlements", "a", None, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    writer
        .save_entitlements(&fence, &sample_state("sub-1", "t"))
        .await
        .unwrap();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut followed = watch::follow(
        store(&db_for(&server, &name, "b"), KEY, "b"),
        Duration::from_millis(300),
        stop_rx,
    );
    tokio::time::timeout(
        Duration::from_secs(10),
        followed.wait_for(|f| f.connected && f.current.is_some()),
    )
    .await
    .unwrap()
    .unwrap();

    server.stop();
    tokio::time::timeout(Duration::from_secs(10), followed.wait_for(|f| !f.connected))
        .await
        .expect("the loss is noticed")
        .unwrap();
    {
        let f = followed.borrow();
        assert!(f.current.is_some(), "the last good copy is kept");
        assert!(
            f.last_error
                .as_deref()
                .unwrap_or("")
                .contains("unreachable"),
            "{:?}",
            f.last_error
        );
    }
    let err = writer.entitlements().await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");

    server.restart();
    if tokio::time::timeout(Duration::from_secs(15), followed.wait_for(|f| f.connected))
        .await
        .is_err()
    {
        panic!(
            "no reconnection after the restart: {:?}",
            followed.borrow().last_error
        );
    }
    // The writer's pool recovers too, and its lease (60 s) is still its own.
    let version = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match writer
                .save_entitlements(&fence, &sample_state("sub-2", "t"))
                .await
            {
                Ok(v) => return v,
                Err(e) if e.is_unavailable() => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(2),
        followed.wait_for(|f| f.current.as_ref().is_some_and(|c| c.version == version)),
    )
    .await
    .unwrap()
    .unwrap();
}

#[tokio::test]
async fn an_unreachable_database_or_a_wrong_password_is_one_clear_sentence() {
    let server = pg_support::shared();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let db = unreachable_or_wrong(port, "u", "p");
    let err = migrate::migrate(&db).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.to_string().contains("password"), "{err}");

    let db = unreachable_or_wrong(server.port, "postgres", "WRONG-PW");
    let err = migrate::migrate(&db).await.unwrap_err();
    assert!(matches!(err, DbError::Login { .. }), "{err}");
    assert!(
        err.to_string().contains("check shared.database.url"),
        "{err}"
    );
    assert!(!err.to_string().contains("WRONG-PW"), "{err}");
}

/// An import recorded on one node waits in the inbox, sealed, until the leaseholder stores
/// entitlements tagged with it: that write marks it (and every older import) applied, in its
/// own transaction, and a stale leaseholder's write marks nothing.
#[tokio::test]
async fn an_import_on_one_node_waits_in_the_inbox_until_the_leaseholder_applies_it() {
    let (_name, db) = migrated("a").await;
    let (a, b) = (store(&db, KEY, "a"), store(&db, KEY, "b"));
    let (e1, e2) = (
        serde_json::json!({"sequence": 1, "secret": "payload-one"}),
        serde_json::json!({"sequence": 2}),
    );
    a.commit_import(&import("entitlements", "b1", 1, "bundle-1-aa", &e1))
        .await
        .unwrap()
        .unwrap();
    b.commit_import(&import("entitlements", "b2", 2, "bundle-2-bb", &e2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        b.pending_import("entitlements").await.unwrap().as_deref(),
        Some("bundle-2-bb"),
        "the newest import is the one to apply"
    );
    assert_eq!(a.latest_import("entitlements").await.unwrap(), Some(e2));
    assert!(!a.import_applied("entitlements", "b1").await.unwrap());
    // Sealed: the payload is not in the database in plaintext.
    let client = db.client().await.unwrap();
    let raw: Vec<u8> = client
        .query_one(
            "SELECT entry FROM jfconnect.import_inbox WHERE bundle_id = 'b1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!String::from_utf8_lossy(&raw).contains("payload-one"));
    drop(client);

    let ttl = Duration::from_secs(30);
    let fence = lease::acquire_or_renew(&db, "entitlements", "b", None, ttl)
        .await
        .unwrap()
        .unwrap();
    let mut applied = sample_state("sub", "tok");
    applied.current.as_mut().unwrap().etag = Some("bundle-2-bb".into());
    // A node without the lease cannot mark anything applied.
    let stale = jfconnect::ha::lease::Fence {
        holder: "a".into(),
        ..fence.clone()
    };
    assert!(a.save_entitlements(&stale, &applied).await.is_err());
    assert!(!a.import_applied("entitlements", "b2").await.unwrap());
    b.save_entitlements(&fence, &applied).await.unwrap();
    for id in ["b1", "b2"] {
        assert!(a.import_applied("entitlements", id).await.unwrap(), "{id}");
    }
    assert_eq!(a.pending_import("entitlements").await.unwrap(), None);
}

fn fast() -> LeaseTiming {
    LeaseTiming {
        ttl: Duration::from_millis(1500),
        renew_every: Duration::from_millis(300),
    }
}

async fn holder_within(
    handles: &[&keeper::LeaseHandle],
    limit: Duration,
) -> Option<(usize, lease::Fence)> {
    tokio::time::timeout(limit, async {
        loop {
            let held: Vec<(usize, lease::Fence)> = handles
                .iter()
                .enumerate()
                .filter_map(|(i, h)| h.current().map(|f| (i, f)))
                .collect();
            assert!(held.len() <= 1, "two nodes hold one lease: {held:?}");
            if let Some(h) = held.into_iter().next() {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn a_killed_leaseholder_is_replaced_within_ttl_plus_one_renewal() {
    let (_name, db) = migrated("a").await;
    let t = fast();
    let a = keeper::keep(db.clone(), "entitlements", "a", t);
    let b = keeper::keep(db.clone(), "entitlements", "b", t);
    let (first, fence) = holder_within(&[&a, &b], Duration::from_secs(5))
        .await
        .expect("one node takes the free lease");
    let (dead, alive) = if first == 0 { (a, b) } else { (b, a) };
    let started = std::time::Instant::now();
    dead.abandon(); // as SIGKILL: no release
    let (_, next) = holder_within(&[&alive], t.ttl + t.renew_every + Duration::from_secs(1))
        .await
        .expect("the survivor takes over within TTL + one renewal");
    let took = started.elapsed();
    assert!(next.epoch > fence.epoch);
    assert!(
        took >= Duration::from_millis(900),
        "taken before the TTL ran out: {took:?}"
    );

    // A clean shutdown releases: the next node takes over at its next renewal.
    let c = keeper::keep(db.clone(), "entitlements", "c", t);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(c.current().is_none(), "a live lease is not taken");
    let started = std::time::Instant::now();
    alive.shutdown().await;
    holder_within(&[&c], t.renew_every + Duration::from_millis(700))
        .await
        .expect("a released lease is taken at the next renewal");
    assert!(started.elapsed() < t.ttl);
    c.shutdown().await;
}

#[tokio::test]
async fn a_keeper_whose_lease_was_taken_steps_down_and_its_fence_is_refused() {
    let server = pg_support::shared();
    let (name, db) = migrated("a").await;
    let t = fast();
    let a = keeper::keep(db.clone(), "entitlements", "a", t);
    let (_, fa) = holder_within(&[&a], Duration::from_secs(5)).await.unwrap();
    // As if a were frozen past its TTL: the lease expires and b takes it directly.
    server.psql(
        &name,
        "UPDATE jfconnect.leases SET expires_at = clock_timestamp() - interval '1 second'",
    );
    let fb = lease::acquire_or_renew(&db, "entitlements", "b", None, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fb.epoch, fa.epoch + 1);
    let mut sub = a.subscribe();
    tokio::time::timeout(Duration::from_secs(2), sub.wait_for(|f| f.is_none()))
        .await
        .expect("a steps down at its next renewal")
        .unwrap();
    let err = store(&db, KEY, "a")
        .save_entitlements(&fa, &sample_state("stale", "t"))
        .await
        .unwrap_err();
    assert!(matches!(err, DbError::Fenced(_)), "{err}");
    a.shutdown().await;
    assert_eq!(
        lease::leases(&db).await.unwrap()[0].holder,
        "b",
        "a's shutdown released nothing it did not hold"
    );
}

#[tokio::test]
async fn nodes_form_one_cluster_and_a_duplicate_node_id_is_refused() {
    let server = pg_support::shared();
    let name = server.fresh_database();
    let opts = ClusterOptions {
        address: None,
        timing: fast(),
        jobs: vec!["entitlements".into()],
        poll_every: Duration::from_millis(500),
    };
    let start = |node: &'static str| {
        let opts = opts.clone();
        let db = db_for(server, &name, node);
        async move { Cluster::start(store(&db, KEY, node), opts).await }
    };
    let (a, b) = tokio::join!(start("a"), start("b"));
    let (a, b) = (a.unwrap(), b.unwrap());
    let err = start("a").await.err().expect("a second node a is refused");
    assert!(
        err.to_string().contains("node id a is already used"),
        "{err}"
    );

    let (i, fence) = holder_within(
        &[
            a.lease("entitlements").unwrap(),
            b.lease("entitlements").unwrap(),
        ],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let (holder, other) = if i == 0 { (&a, &b) } else { (&b, &a) };
    assert_eq!(holder.fence("entitlements"), Some(fence.clone()));
    assert_eq!(other.fence("entitlements"), None);
    holder
        .store()
        .save_entitlements(&fence, &sample_state("sub", "t"))
        .await
        .unwrap();
    let mut followed = other.followed();
    let digest = tokio::time::timeout(
        Duration::from_secs(2),
        followed.wait_for(|f| f.current.is_some()),
    )
    .await
    .unwrap()
    .unwrap()
    .current
    .as_ref()
    .unwrap()
    .digest
    .clone();
    a.set_served_digest(Some(digest.clone()));
    b.set_served_digest(Some(digest));
    let view = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let v = other.view().await.unwrap();
            if v.entitlements_digest_consistent {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("both nodes report the same digest");
    assert_eq!(view.live_nodes, 2);
    assert_eq!(
        view.holder("entitlements")
            .map(|l| (l.holder.clone(), l.epoch)),
        Some((fence.holder.clone(), fence.epoch))
    );

    // The holder shuts down cleanly: the other takes over at its next renewal.
    let (holder, other) = if i == 0 { (a, b) } else { (b, a) };
    holder.shutdown().await;
    holder_within(
        &[other.lease("entitlements").unwrap()],
        Duration::from_secs(2),
    )
    .await
    .expect("the survivor takes the released lease");
    assert_eq!(
        other.view().await.unwrap().nodes.len(),
        1,
        "the stopped node left"
    );
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_is_verified_against_tls_ca_file() {
    let pki = TestPki::loopback();
    let server = PgServer::start();
    server.enable_tls(&pki.cert_pem, &pki.key_pem);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let settings = |tls| DatabaseSettings {
        host: "127.0.0.1".into(),
        port: server.port,
        database: "postgres".into(),
        username: pg_support::USER.into(),
        password: Some(Secret::new(pg_support::PASSWORD)),
        tls,
        plaintext_password_in_file: false,
    };
    let encrypted = |db: Db| async move {
        let client = db.client().await?;
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| db.fail("read pg_stat_ssl", e))?;
        Ok::<bool, DbError>(row.get(0))
    };

    // sslmode=require with the test CA in tls.ca_file: TLS, verified.
    let db = Db::new(&settings(TlsMode::Require), Some(&ca_file), "n").unwrap();
    assert!(encrypted(db).await.unwrap(), "the connection is encrypted");
    // prefer takes TLS when the server offers it.
    let db = Db::new(&settings(TlsMode::Prefer), Some(&ca_file), "n").unwrap();
    assert!(encrypted(db).await.unwrap());
    // Without the CA (system roots only) the certificate is refused: no connection, a sentence.
    let db = Db::new(&settings(TlsMode::Require), None, "n").unwrap();
    let err = encrypted(db).await.unwrap_err().to_string();
    assert!(err.contains("127.0.0.1"), "{err}");
    assert!(
        err.to_lowercase().contains("certificate"),
        "the refusal says why: {err}"
    );
    // disable stays plain even though the server offers TLS.
    let db = Db::new(&settings(TlsMode::Disable), None, "n").unwrap();
    assert!(!encrypted(db).await.unwrap());
}
