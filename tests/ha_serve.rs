//! Two `serve` nodes of one JPD against a real PostgreSQL and the simulator: one identity, one
//! registration, one fetcher, the same entitlements on both, 409 from the node without the
//! lease, the cluster view and metrics, and takeover when the leaseholder stops.

mod pg_support;
mod process_support;
mod sim_support;

use jfconnect::app::{cluster as ha_app, App, AppError};
use jfconnect::clock::{SharedClock, SystemClock};
use jfconnect::config::Config;
use process_support::eventually;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

const MASTER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

struct Node {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), AppError>>,
    token: String,
    admin: String,
}

fn node_config(root: &std::path::Path, node: &str, sim: &str, database: &str) -> Config {
    node_config_with(pg_support::shared(), root, node, sim, database, "")
}

/// A node's configuration; `extra` is more of the `jfconnect:` section (indented by two).
fn node_config_with(
    server: &pg_support::PgServer,
    root: &std::path::Path,
    node: &str,
    sim: &str,
    database: &str,
    extra: &str,
) -> Config {
    std::fs::write(root.join("license"), sim_support::LICENSE).unwrap();
    std::fs::write(root.join("master.key"), MASTER_KEY).unwrap();
    let yaml = format!(
        "jfconnect:\n{extra}  data_dir: {root}/{node}\n  ha:\n    lease_ttl: 3s\n    lease_renew: 1s\n  license:\n    file: {root}/license\n  jes:\n    url: {sim}\n  jcs:\n    url: {sim}\n  jpd:\n    url: {sim}\nshared:\n  node:\n    id: {node}\n  database:\n    type: postgresql\n    driver: org.postgresql.Driver\n    url: \"{url}?sslmode=disable\"\n    username: {user}\n    password: {pw}\n  security:\n    masterKeyFile: {root}/master.key\n",
        root = root.display(),
        url = server.jdbc_url(database),
        user = pg_support::USER,
        pw = pg_support::PASSWORD,
    );
    let path = root.join(format!("{node}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    Config::load_from(Some(&path), &Default::default()).unwrap()
}

async fn start(config: Config) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cluster = ha_app::join(&config, Some(addr.to_string())).await.unwrap();
    let data_dir = config.data_dir.clone();
    let clock: SharedClock = Arc::new(SystemClock);
    let app = Arc::new(App::build_in_cluster(config, clock, None, true, cluster).unwrap());
    let read = |f: &str| {
        std::fs::read_to_string(data_dir.join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    let (token, admin) = (read("api.token"), read("admin.token"));
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(jfconnect::server::serve(app, listener, async move {
        let _ = rx.await;
    }));
    Node {
        addr,
        stop: Some(tx),
        done,
        token,
        admin,
    }
}

impl Node {
    async fn get(&self, path: &str) -> reqwest::Response {
        sim_support::client()
            .get(format!("http://{}{path}", self.addr))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str) -> reqwest::Response {
        sim_support::client()
            .post(format!("http://{}{path}", self.addr))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), self.done)
            .await
            .expect("the node stops within its grace period")
            .unwrap()
            .unwrap();
    }

    /// The entitlements this node serves, without the fields that depend on when it is asked.
    async fn served(&self) -> Option<serde_json::Value> {
        let resp = self.get("/api/v1/entitlements").await;
        if resp.status() != 200 {
            return None;
        }
        let mut v: serde_json::Value = resp.json().await.unwrap();
        if let Some(m) = v.as_object_mut() {
            m.remove("age_seconds");
        }
        Some(v)
    }

    /// A console page, signed in with the admin token (the sign-in form's token first).
    async fn console_page(&self, path: &str) -> String {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap();
        let base = format!("http://{}", self.addr);
        let form = http.get(format!("{base}/ui/login")).send().await.unwrap();
        let cookie = |r: &reqwest::Response| {
            let v = r.headers().get("set-cookie").unwrap().to_str().unwrap();
            v.split(';').next().unwrap().to_string()
        };
        let login_cookie = cookie(&form);
        let html = form.text().await.unwrap();
        let csrf = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_string();
        let signed_in = http
            .post(format!("{base}/ui/login"))
            .header("cookie", login_cookie)
            .form(&[("token", self.admin.as_str()), ("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status(), 303);
        let session = cookie(&signed_in);
        let page = http
            .get(format!("{base}{path}"))
            .header("cookie", session)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        page.text().await.unwrap()
    }

    /// The entitlements row of `GET /api/v1/jobs`.
    async fn entitlements_job(&self) -> serde_json::Value {
        let v: serde_json::Value = self.get("/api/v1/jobs").await.json().await.unwrap();
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == "entitlements")
            .cloned()
            .unwrap()
    }

    async fn cluster(&self) -> serde_json::Value {
        let resp = self.get("/api/v1/cluster").await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }
}

/// What both nodes serve once they serve the same (bounded wait).
async fn served_by_both(a: &Node, b: &Node) -> serde_json::Value {
    eventually(Duration::from_secs(20), || async {
        let (x, y) = (a.served().await?, b.served().await?);
        (x == y).then_some(x)
    })
    .await
    .expect("both nodes serve the same entitlements")
}

/// The node holding the entitlements lease as `a` reports it (bounded wait), and the other
/// node's name.
async fn lease_holder(a: &Node) -> (String, &'static str) {
    let holder = eventually(Duration::from_secs(15), || async {
        a.cluster().await["leases"][0]["holder"]
            .as_str()
            .map(String::from)
    })
    .await
    .expect("one node holds the entitlements lease");
    let other = if holder == "node-a" {
        "node-b"
    } else {
        "node-a"
    };
    (holder, other)
}

/// The simulator, a fresh database in the shared server, and two nodes of one JPD on it.
async fn two_nodes() -> (sim_support::Sim, tempfile::TempDir, String, Node, Node) {
    let sim = sim_support::start().await;
    let database = pg_support::shared().fresh_database();
    let root = tempfile::tempdir().unwrap();
    let base = sim.handle.base_url();
    let a = start(node_config(root.path(), "node-a", &base, &database)).await;
    let b = start(node_config(root.path(), "node-b", &base, &database)).await;
    (sim, root, database, a, b)
}

/// For a test that stops PostgreSQL: a server of its own with a fresh database, the
/// simulator and a folder for the nodes.
async fn own_server() -> (
    pg_support::PgServer,
    String,
    sim_support::Sim,
    tempfile::TempDir,
) {
    let server = pg_support::PgServer::start();
    let database = server.fresh_database();
    (
        server,
        database,
        sim_support::start().await,
        tempfile::tempdir().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_are_one_jfconnect() {
    let (sim, root, _database, a, b) = two_nodes().await;

    // One identity: same JPD id and API token on both nodes.
    assert_eq!(
        a.token, b.token,
        "the API token is the JPD's, not the node's"
    );
    assert_eq!(a.admin, b.admin, "so is the admin token");
    assert_ne!(a.admin, a.token);
    let id_a = a.get("/api/v1/system/jpd_id").await.text().await.unwrap();
    let id_b = b.get("/api/v1/system/jpd_id").await.text().await.unwrap();
    assert_eq!(id_a, id_b);
    assert_eq!(
        std::fs::read(root.path().join("node-a/keys/jpd.pub")).unwrap(),
        std::fs::read(root.path().join("node-b/keys/jpd.pub")).unwrap(),
        "one signing key per JPD"
    );

    // Both serve the same entitlements, fetched once by the leaseholder.
    let served = served_by_both(&a, &b).await;
    assert!(served.get("entitlements").is_some(), "{served}");
    let stats = sim.stats().await;
    assert_eq!(stats.register_calls, 1, "one registration per JPD");

    // The cluster view: two nodes, one leaseholder; digests agree once heartbeats carry them.
    let view = eventually(Duration::from_secs(15), || async {
        let v = a.cluster().await;
        (v["entitlements_digest_consistent"] == true).then_some(v)
    })
    .await
    .expect("both nodes report the same served digest");
    assert_eq!(view["live_nodes"], 2, "{view}");
    let holder = view["leases"][0]["holder"].as_str().unwrap().to_string();
    // The console's Cluster page shows the same view, over HTTP.
    let page = a.console_page("/ui/cluster").await;
    assert!(
        page.contains("href=\"/ui/cluster\""),
        "listed in the navigation: {page}"
    );
    assert!(page.contains("2 of 2 nodes live"), "{page}");
    assert!(
        page.contains("entitlements the same on every live node"),
        "{page}"
    );
    assert!(page.contains("node-a (this node)"), "{page}");
    for n in view["nodes"].as_array().unwrap() {
        let id = n["node_id"].as_str().unwrap();
        let digest = n["entitlements_digest"].as_str().unwrap();
        assert!(page.contains(id), "{id}: {page}");
        assert!(page.contains(&digest[..16]), "{id}'s digest: {page}");
    }
    let epoch = view["leases"][0]["epoch"].as_i64().unwrap();
    assert!(
        page.contains(&format!(
            "<td>entitlements</td><td class=\"mono\">{holder}</td><td class=\"num\">{epoch}</td>"
        )),
        "{page}"
    );
    // jfconnect.ha.lease_ttl (3s here) is the lease's length in the database.
    let left = view["leases"][0]["expires_in_ms"].as_i64().unwrap();
    assert!(left > 0 && left <= 3000, "{view}");

    // `jfconnect status` shows the same cluster, read without joining it.
    let config = root.path().join("node-a.yaml");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_jfconnect"))
        .arg("status")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        text.contains("2 of 2 nodes live, entitlements the same on every live node"),
        "{text}"
    );
    for n in ["node-a", "node-b"] {
        assert!(
            text.contains(&format!("cluster node   {n}: heartbeat")),
            "{text}"
        );
    }
    assert!(
        text.contains(&format!(
            "lease          entitlements: node {holder}, epoch"
        )),
        "{text}"
    );
    let json = std::process::Command::new(env!("CARGO_BIN_EXE_jfconnect"))
        .args(["status", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["cluster"]["view"]["live_nodes"], 2, "{json}");
    assert_eq!(
        json["cluster"]["view"]["leases"][0]["holder"],
        holder.as_str()
    );
    // The leaseholder's run is the last run both nodes show, and `status` reads the same.
    let shown = eventually(Duration::from_secs(10), || async {
        let (x, y) = (a.entitlements_job().await, b.entitlements_job().await);
        (x["runs"].as_u64()? >= 1 && x == y).then_some(x)
    })
    .await
    .expect("both nodes show the leaseholder's entitlements run");
    let status_row = json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "entitlements")
        .unwrap();
    assert_eq!(status_row["last_run"], shown["last_run"], "{json}");
    let (holder_node, other) = if holder == "node-a" { (a, b) } else { (b, a) };

    // Asking the node without the lease to run the job names the one that has it.
    let resp = other.post("/api/v1/jobs/entitlements/run").await;
    assert_eq!(resp.status(), 409);
    let body = resp.text().await.unwrap();
    assert!(body.contains(&format!("node {holder}")), "{body}");
    assert_eq!(
        holder_node
            .post("/api/v1/jobs/entitlements/run")
            .await
            .status(),
        202
    );

    let metrics = other.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("jfconnect_cluster_nodes 2\n"), "{metrics}");
    assert!(
        metrics.contains("jfconnect_lease_held{job=\"entitlements\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("jfconnect_entitlements_digest_consistent 1\n"),
        "{metrics}"
    );
    let ready: serde_json::Value = other
        .get("/api/v1/system/readiness")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");

    // The leaseholder stops: the other takes the released lease at its next renewal. The job
    // ran moments ago (the JPD's schedule says so), so it neither fetches nor registers again.
    let before_stop = eventually(Duration::from_secs(10), || async {
        let r = holder_node.entitlements_job().await;
        (r["state"] != "running" && r["runs"].as_u64()? >= 2).then_some(r)
    })
    .await
    .expect("the run asked for ends");
    let fetches_before = sim.stats().await.entitlements_calls;
    holder_node.stop().await;
    let took = eventually(Duration::from_secs(20), || async {
        let v = other.cluster().await;
        let leases = v["leases"].as_array()?.clone();
        leases
            .iter()
            .any(|l| l["holder"] != holder.as_str() && l["expires_in_ms"].as_i64() > Some(0))
            .then_some(())
    })
    .await;
    assert!(took.is_some(), "the surviving node took the lease");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sim.stats().await.entitlements_calls,
        fetches_before,
        "the new leaseholder ran a job that ran within its interval"
    );
    let after = other.entitlements_job().await;
    assert_eq!(after["last_run"], before_stop["last_run"]);
    assert_eq!(after["runs"], before_stop["runs"]);
    assert_eq!(
        sim.stats().await.register_calls,
        1,
        "no second registration"
    );
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_keep_serving_and_say_degraded_while_postgresql_restarts() {
    let (server, database, sim, root) = own_server().await;
    let base = sim.handle.base_url();
    let a = start(node_config_with(
        &server,
        root.path(),
        "node-a",
        &base,
        &database,
        "",
    ))
    .await;
    let b = start(node_config_with(
        &server,
        root.path(),
        "node-b",
        &base,
        &database,
        "",
    ))
    .await;
    let served = served_by_both(&a, &b).await;

    server.stop();
    for n in [&a, &b] {
        let ready = eventually(Duration::from_secs(10), || async {
            let v: serde_json::Value = n.get("/api/v1/system/readiness").await.json().await.ok()?;
            (v["status"] == "degraded").then_some(v)
        })
        .await
        .expect("readiness says degraded while the database is away");
        assert!(
            ready["reason"]
                .as_str()
                .unwrap_or("")
                .contains("unreachable"),
            "{ready}"
        );
        assert_eq!(
            n.served().await,
            Some(served.clone()),
            "the last good copy is served"
        );
    }

    server.restart();
    for n in [&a, &b] {
        eventually(Duration::from_secs(20), || async {
            let v: serde_json::Value = n.get("/api/v1/system/readiness").await.json().await.ok()?;
            (v["status"] == "ready").then_some(())
        })
        .await
        .expect("ready again once the database is back");
    }
    // The leaseholder kept or retook its lease: a cluster view answers again.
    let view = eventually(Duration::from_secs(20), || async {
        let resp = a.get("/api/v1/cluster").await;
        let v: serde_json::Value = resp.json().await.ok()?;
        (v["live_nodes"] == 2).then_some(v)
    })
    .await
    .expect("both nodes heartbeat again");
    assert_eq!(view["leases"].as_array().map(|l| l.len()), Some(1));
    a.stop().await;
    b.stop().await;
}

/// Moving from one node to several: a single node's data folder, registered and serving,
/// meets an empty database once and brings its identity, registration and entitlements in;
/// a second node adopts them; JES sees no second registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_node_moves_to_a_database_without_registering_again() {
    let sim = sim_support::start().await;
    let database = pg_support::shared().fresh_database();
    let root = tempfile::tempdir().unwrap();
    let base = sim.handle.base_url();
    let clustered = node_config(root.path(), "node-a", &base, &database);
    // The same node before: no shared: section.
    let alone_yaml = std::fs::read_to_string(root.path().join("node-a.yaml")).unwrap();
    let alone_yaml = &alone_yaml[..alone_yaml.find("shared:").unwrap()];
    let alone_path = root.path().join("alone.yaml");
    std::fs::write(&alone_path, alone_yaml).unwrap();
    let alone = Config::load_from(Some(&alone_path), &Default::default()).unwrap();
    assert!(alone.shared.database.settings.is_none());

    let single = start(alone).await;
    let served = eventually(Duration::from_secs(20), || async { single.served().await })
        .await
        .expect("the single node serves entitlements");
    let jpd_id = single
        .get("/api/v1/system/jpd_id")
        .await
        .text()
        .await
        .unwrap();
    let (token, admin) = (single.token.clone(), single.admin.clone());
    single.stop().await;
    assert_eq!(sim.stats().await.register_calls, 1);

    let a = start(clustered).await;
    assert_eq!(a.token, token, "the generated API token is kept");
    assert_eq!(
        a.get("/api/v1/system/jpd_id").await.text().await.unwrap(),
        jpd_id,
        "the JPD keeps its id"
    );
    let b = start(node_config(root.path(), "node-b", &base, &database)).await;
    assert_eq!(
        b.get("/api/v1/system/jpd_id").await.text().await.unwrap(),
        jpd_id,
        "the second node adopts it"
    );
    assert_eq!(b.token, token);
    assert_eq!(b.admin, admin, "the admin token too");
    let on_b = eventually(Duration::from_secs(20), || async { b.served().await })
        .await
        .expect("the second node serves the shared entitlements");
    assert_eq!(
        on_b["entitlements"], served["entitlements"],
        "the same entitlements"
    );
    assert_eq!(
        sim.stats().await.register_calls,
        1,
        "moving to a database registers nothing again"
    );
    a.stop().await;
    b.stop().await;
}

/// An entitlements bundle of sequence `seq` for `jpd_id`, signed with the vendor key in `dir`,
/// granting `product`.
fn entitlements_bundle(
    dir: &std::path::Path,
    jpd_id: &str,
    seq: u64,
    product: &str,
) -> std::path::PathBuf {
    use jfconnect::bundle::{write_bundle, BundleSpec, Kind, PayloadEntry, PayloadSource};
    let sk = jfconnect::bundle::read_secret_key(&dir.join("vendor.key")).unwrap();
    let now = chrono::Utc::now();
    let e = jfconnect::protocol::Entitlements {
        subscription_id: "sub-offline".into(),
        subscription_type: "enterprise_plus".into(),
        jpd_id: jpd_id.into(),
        issued_at: jfconnect::bundle::format_time(now),
        entitlements: vec![jfconnect::protocol::Entitlement {
            product: product.into(),
            feature: "core".into(),
            valid_from: None,
            valid_until: None,
        }],
    };
    let out = dir.join(format!("ent{seq}.jfbundle"));
    let spec = BundleSpec {
        kind: Kind::Entitlements,
        bundle_id: jfconnect::bundle::new_bundle_id(),
        jpd_id: jpd_id.into(),
        created: now,
        expires: now + chrono::Duration::days(1),
        sequence: seq,
    };
    let payload = vec![PayloadEntry {
        path: jfconnect::transport::payload::ENTITLEMENTS_PATH.into(),
        source: PayloadSource::Bytes(serde_json::to_vec(&e).unwrap()),
    }];
    write_bundle(&out, &spec, payload, &sk).unwrap();
    out
}

impl Node {
    async fn import(&self, bundle: &std::path::Path) -> reqwest::Response {
        sim_support::client()
            .post(format!("http://{}/api/v1/offline/register", self.addr))
            .bearer_auth(&self.admin)
            .header("content-type", "application/octet-stream")
            .body(std::fs::read(bundle).unwrap())
            .send()
            .await
            .unwrap()
    }

    /// The ETag and the products this node serves.
    async fn etag_and_products(&self) -> Option<(String, Vec<String>)> {
        let resp = self.get("/api/v1/entitlements").await;
        if resp.status() != 200 {
            return None;
        }
        let etag = resp.headers().get("etag")?.to_str().ok()?.to_string();
        let v: serde_json::Value = resp.json().await.ok()?;
        let products = v["entitlements"]
            .as_array()?
            .iter()
            .filter_map(|e| e["product"].as_str().map(String::from))
            .collect();
        Some((etag, products))
    }
}

/// Both nodes serve `product`, with one ETag; answers the ETag.
async fn both_serve(a: &Node, b: &Node, product: &str) -> String {
    eventually(Duration::from_secs(5), || async {
        let (x, y) = (a.etag_and_products().await?, b.etag_and_products().await?);
        (x == y && x.1 == [product]).then_some(x.0)
    })
    .await
    .unwrap_or_else(|| panic!("both nodes serve {product} with the same ETag"))
}

/// The simulator, and two air-gapped nodes of one JPD on a fresh database; the vendor's key
/// pair is `vendor.key`/`vendor.pub` in the folder.
async fn two_airgapped_nodes() -> (sim_support::Sim, tempfile::TempDir, Node, Node) {
    let sim = sim_support::start().await;
    let server = pg_support::shared();
    let database = server.fresh_database();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    jfconnect::bundle::keys_generate(&dir.join("vendor")).unwrap();
    let airgap = format!(
        "  airgap:\n    enabled: true\n    vendor_public_keys: [{}]\n",
        dir.join("vendor.pub").display()
    );
    let base = sim.handle.base_url();
    let config = |node: &str| node_config_with(server, dir, node, &base, &database, &airgap);
    let a = start(config("node-a")).await;
    let b = start(config("node-b")).await;
    (sim, root, a, b)
}

/// Air-gapped imports in database mode: a bundle imported on the node without the lease, over
/// HTTP or with `jfconnect bundle import`, is applied by the leaseholder and served by both with
/// one ETag once the import answers; two imports N+1 and N+2 on two nodes at once never roll
/// the entitlements back; a refused import changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bundle_imported_on_any_node_is_served_by_every_node() {
    let (sim, root, a, b) = two_airgapped_nodes().await;
    let dir = root.path();
    let (holder, other_name) = lease_holder(&a).await;
    let (holder, other) = if holder == "node-a" {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let jpd_id = a.get("/api/v1/system/jpd_id").await.text().await.unwrap();

    // Over HTTP, on the node without the lease: answered once applied, then served by both.
    let first = entitlements_bundle(dir, &jpd_id, 1, "xray");
    let asked = std::time::Instant::now();
    let resp = other.import(&first).await;
    let status = resp.status();
    assert_eq!(status, 200, "{}", resp.text().await.unwrap());
    // Announced to the leaseholder at its commit (the fallback look is every 30 s).
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    let etag1 = both_serve(&a, &b, "xray").await;

    // With the CLI of the node without the lease (a process of its own).
    let second = entitlements_bundle(dir, &jpd_id, 2, "distribution");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jfconnect"))
        .args(["bundle", "import"])
        .arg(&second)
        .arg("--config")
        .arg(dir.join(format!("{other_name}.yaml")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("imported entitlements bundle"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let etag2 = both_serve(&a, &b, "distribution").await;
    assert_ne!(etag1, etag2);

    // N+1 and N+2 at once, one on each node: N+2 wins whatever the order; never a rollback.
    let (n1, n2) = (
        entitlements_bundle(dir, &jpd_id, 3, "pipelines"),
        entitlements_bundle(dir, &jpd_id, 4, "curation"),
    );
    let (r1, r2) = tokio::join!(holder.import(&n1), other.import(&n2));
    assert_eq!(r2.status(), 200, "{}", r2.text().await.unwrap());
    assert!(matches!(r1.status().as_u16(), 200 | 400), "{}", r1.status());
    let etag4 = both_serve(&a, &b, "curation").await;

    // A refused import (a replay of N+1) changes nothing, on either node.
    for n in [holder, other] {
        let resp = n.import(&n1).await;
        assert_eq!(resp.status(), 400);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(both_serve(&a, &b, "curation").await, etag4);
    assert_eq!(
        sim.stats().await.register_calls,
        0,
        "air-gapped: JES is never called"
    );
    a.stop().await;
    b.stop().await;
}

/// A license set through the API on the node without the lease is stored in the database,
/// sealed, as the JPD's: the leaseholder takes it into its `license.api` and registers with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_license_set_through_the_api_is_the_jpds_on_every_node() {
    let (sim, root, database, a, b) = two_nodes().await;
    let settings = node_config(root.path(), "node-a", &sim.handle.base_url(), &database)
        .shared
        .database
        .settings
        .unwrap();
    served_by_both(&a, &b).await;
    let (holder, _) = lease_holder(&a).await;
    let other = if holder == "node-a" { &b } else { &a };
    assert_eq!(sim.stats().await.register_calls, 1);

    let key = "JFL-API-SET-0000000042";
    let resp = sim_support::client()
        .put(format!("http://{}/api/v1/license", other.addr))
        .bearer_auth(&other.admin)
        .body(key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    // Announced at its commit (the fallback look is every 30 s); the leaseholder's license
    // watcher looks at its file every 5 s.
    eventually(Duration::from_secs(10), || async {
        (sim.stats().await.register_calls == 2).then_some(())
    })
    .await
    .expect("the leaseholder registers again with the license set on the other node");
    assert_eq!(
        std::fs::read_to_string(root.path().join(&holder).join("license.api")).unwrap(),
        key,
        "the leaseholder's license set through the API is the JPD's"
    );

    // In the database it is sealed: the identity row, as text, does not hold it.
    let db = jfconnect::ha::db::Db::new(&settings, None, "test-reader").unwrap();
    let row = db
        .client()
        .await
        .unwrap()
        .query_one(
            "SELECT i::text, license IS NOT NULL FROM jfconnect.identity i",
            &[],
        )
        .await
        .unwrap();
    let (text, stored): (String, bool) = (row.get(0), row.get(1));
    assert!(stored, "the license is stored for the JPD");
    assert!(
        !text.contains(key),
        "the license is sealed, never in plaintext"
    );
    let hex_key = key.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    assert!(!text.contains(&hex_key), "not even as bytea hex");
    a.stop().await;
    b.stop().await;
}

/// PostgreSQL down when `serve` starts: the node starts anyway, serves the last good
/// entitlements its data folder holds, says "degraded" with the reason, and joins the cluster
/// once the database answers, without registering again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_started_while_postgresql_is_down_serves_its_last_copy_and_joins_later() {
    let (server, database, sim, root) = own_server().await;
    let base = sim.handle.base_url();
    let config = || node_config_with(&server, root.path(), "node-a", &base, &database, "");
    let first = start(config()).await;
    let served = eventually(Duration::from_secs(20), || async { first.served().await })
        .await
        .expect("the node serves entitlements");
    first.stop().await;

    server.stop();
    let a = start(config()).await;
    let ready: serde_json::Value = a
        .get("/api/v1/system/readiness")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(
        ready["reason"]
            .as_str()
            .unwrap_or("")
            .contains("unreachable"),
        "{ready}"
    );
    // The last good copy (its confirmation time may be newer: the node ran once more).
    let same = |v: Option<serde_json::Value>| {
        v.is_some_and(|v| {
            v["version"] == served["version"] && v["entitlements"] == served["entitlements"]
        })
    };
    assert!(same(a.served().await), "the last good copy is served");
    assert_eq!(a.get("/api/v1/cluster").await.status(), 503);

    server.restart();
    let view = eventually(Duration::from_secs(30), || async {
        let resp = a.get("/api/v1/cluster").await;
        let v: serde_json::Value = resp.json().await.ok()?;
        (v["live_nodes"] == 1 && v["leases"][0]["holder"] == "node-a").then_some(v)
    })
    .await
    .expect("the node joins once the database is back and takes the lease");
    assert_eq!(view["node_id"], "node-a");
    eventually(Duration::from_secs(10), || async {
        let v: serde_json::Value = a.get("/api/v1/system/readiness").await.json().await.ok()?;
        (v["status"] == "ready").then_some(())
    })
    .await
    .expect("ready once joined");
    assert!(same(a.served().await));
    assert_eq!(
        sim.stats().await.register_calls,
        1,
        "no second registration"
    );
    a.stop().await;
}

/// Air-gapped usage in database mode: each node's usage job writes its own spool into its own
/// outbox; every bundle verifies with the JPD's one key, no two bundles share a sequence, and a
/// file whose bytes are on both nodes travels once. `status` shows each node's counts of its own
/// spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn air_gapped_nodes_export_each_usage_file_once_under_the_jpds_sequences() {
    let (sim, root, a, b) = two_airgapped_nodes().await;
    let dir = root.path();
    let jpd_id = a.get("/api/v1/system/jpd_id").await.text().await.unwrap();
    let resp = a
        .import(&entitlements_bundle(dir, &jpd_id, 1, "xray"))
        .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    both_serve(&a, &b, "xray").await;

    // Six files on each node; two of them byte for byte the same on both.
    let mut all = std::collections::BTreeSet::new();
    for (node, name) in [(&a, "node-a"), (&b, "node-b")] {
        let spool = dir.join(name).join("usage").join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        for n in 0..6 {
            let n = if n < 2 {
                n
            } else {
                n + 100 * (name == "node-b") as usize
            };
            let body = sim_support::usage_file(n);
            let p = spool.join(format!("usage-{n}.json"));
            std::fs::write(&p, &body).unwrap();
            let settled = std::time::SystemTime::now() - Duration::from_secs(10);
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(settled).unwrap();
            all.insert(jfconnect::protocol::sha256_hex(&body));
        }
        let resp = node.post("/api/v1/jobs/usage/run").await;
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    assert_eq!(all.len(), 10);

    // Both outboxes, each bundle checked with the JPD's key from either node's data folder.
    let key = dir.join("node-b").join("keys").join("jpd.pub");
    let bundles = |name: &str| -> Vec<(u64, Vec<String>)> {
        let Ok(rd) = std::fs::read_dir(dir.join(name).join("outbox")) else {
            return Vec::new();
        };
        rd.map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("usage-")
            })
            .map(|p| {
                let m = jfconnect::bundle::verify_file_with_pubkey(&p, &key)
                    .unwrap_or_else(|e| panic!("{} does not verify: {e}", p.display()));
                assert_eq!(m.jpd_id, jpd_id);
                let shas = m
                    .entries
                    .iter()
                    .filter_map(|x| jfconnect::transport::payload::usage_sha_of(&x.path))
                    .map(str::to_string)
                    .collect();
                (m.sequence, shas)
            })
            .collect()
    };
    let found = eventually(Duration::from_secs(20), || async {
        let (x, y) = (bundles("node-a"), bundles("node-b"));
        let shas: Vec<String> = x.iter().chain(&y).flat_map(|b| b.1.clone()).collect();
        (shas.len() >= all.len() && !x.is_empty() && !y.is_empty()).then_some((x, y, shas))
    })
    .await;
    let (x, y, mut shas) = found.expect("both nodes write their usage bundles");
    shas.sort();
    assert_eq!(
        shas,
        all.iter().cloned().collect::<Vec<_>>(),
        "every usage file in exactly one bundle"
    );
    let mut seqs: Vec<u64> = x.iter().chain(&y).map(|b| b.0).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        x.len() + y.len(),
        "two bundles share a sequence"
    );

    // `status` of either node lists both nodes with what they sent (bounded by the heartbeat).
    let status = eventually(Duration::from_secs(15), || async {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jfconnect"))
            .arg("status")
            .arg("--config")
            .arg(dir.join("node-a.yaml"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // Counts are of each node's own spool: a copy another node sent counts as uploaded.
        let sent = |node: &str| {
            text.lines().any(|l| {
                l.starts_with("cluster node")
                    && l.contains(node)
                    && l.contains("usage 0 pending, 6 uploaded, 0 archived, 0 quarantined")
            })
        };
        (sent("node-a:") && sent("node-b:")).then_some(text)
    })
    .await;
    if status.is_none() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jfconnect"))
            .arg("status")
            .arg("--config")
            .arg(dir.join("node-a.yaml"))
            .output()
            .unwrap();
        panic!(
            "status shows each node's usage counts: {x:?} {y:?}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        sim.stats().await.usage_calls,
        0,
        "air-gapped: JCS is never called"
    );
    a.stop().await;
    b.stop().await;
}

/// A license JES refuses is set aside on every node, not only on the leaseholder: the node that
/// takes over does not register it again; a license set anew clears the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_license_jes_refuses_is_set_aside_on_every_node_until_a_new_one_is_set() {
    let (sim, root, _database, a, b) = two_nodes().await;
    let (holder, other_name) = lease_holder(&a).await;
    let (holder_node, other) = if holder == "node-a" { (a, b) } else { (b, a) };
    eventually(Duration::from_secs(20), || async {
        (sim.stats().await.register_calls == 1).then_some(())
    })
    .await
    .expect("the leaseholder registers");
    let put = |key: &'static str| {
        sim_support::client()
            .put(format!("http://{}/api/v1/license", other.addr))
            .bearer_auth(&other.admin)
            .body(key)
            .send()
    };

    // The simulator refuses JFL- keys shorter than 12 characters.
    assert_eq!(put("JFL-REFUSED").await.unwrap().status(), 202);
    let (mine, theirs) = (root.path().join(&holder), root.path().join(other_name));
    eventually(Duration::from_secs(15), || async {
        (sim.stats().await.register_calls == 2 && mine.join("license.api.refused").exists())
            .then_some(())
    })
    .await
    .expect("the leaseholder tries the license and sets it aside");
    eventually(Duration::from_secs(5), || async {
        (!theirs.join("license.api").exists() && theirs.join("license.api.refused").exists())
            .then_some(())
    })
    .await
    .expect("the other node sets its copy aside too");

    // The other node takes over (its first run lifts the rejected block, as a restart does)
    // and runs the job. The refusal cleared the old leaseholder's registration: when that
    // reached the shared store before the stop, the new holder registers the file's license
    // again, as a single node would; when it did not, it fetches with the first registration
    // (of that same license, still valid). Either way it never tries the refused key, which
    // would be a refusal, a set-aside and one registration more.
    let stopped_at = chrono::Utc::now();
    holder_node.stop().await;
    eventually(Duration::from_secs(20), || async {
        let v = other.cluster().await;
        (v["leases"][0]["holder"] == other_name
            && v["leases"][0]["expires_in_ms"].as_i64() > Some(0))
        .then_some(())
    })
    .await
    .expect("the other node takes the lease");
    eventually(Duration::from_secs(10), || async {
        let job = other.entitlements_job().await;
        let at: chrono::DateTime<chrono::Utc> = job["last_success"].as_str()?.parse().ok()?;
        (at > stopped_at).then_some(())
    })
    .await
    .expect("the new leaseholder runs the entitlements job with the file's license");
    tokio::time::sleep(Duration::from_secs(7)).await;
    let registered = sim.stats().await.register_calls;
    assert!(
        matches!(registered, 2 | 3),
        "the refused license was registered again ({registered} registrations)"
    );
    let job = other.entitlements_job().await;
    assert_eq!(job["last_error"], serde_json::Value::Null, "{job}");
    assert_eq!(job["failures"]["rejected"], 1, "one refusal only: {job}");
    assert!(!theirs.join("license.api").exists());

    // A license set anew clears the refusal and is registered.
    assert_eq!(put("JFL-ACCEPTED-0000000007").await.unwrap().status(), 202);
    eventually(Duration::from_secs(15), || async {
        (sim.stats().await.register_calls == registered + 1).then_some(())
    })
    .await
    .expect("the new license is registered");
    other.stop().await;
}
