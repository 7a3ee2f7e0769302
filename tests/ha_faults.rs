//! Fault drills of database mode with real processes: `jfconnect serve` nodes against a real
//! PostgreSQL and the simulator, at the default lease timing (TTL 15 s, renewed every 5 s).
//! The leaseholder is SIGKILLed (another node takes over within TTL + one renewal and runs the
//! job if it is overdue, and not if it ran within its interval)
//! or SIGSTOPped past its TTL and resumed (it finds the lease gone and steps down, saying why);
//! a second process with a node id already running is refused with a sentence.

mod pg_support;
mod process_support;
mod sim_support;

use process_support::eventually;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MASTER_KEY: &str = "00112233445566778899aabbccddeeff";
/// TTL + one renewal at the default timing, plus polling slack.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(21);
/// The entitlements job every 5 s, so it is overdue by the time a takeover happens.
const OVERDUE_SOON: &str = "  entitlements:\n    interval: 5s\n";
/// A short lease (TTL 3 s, renewed every second), for the drills that need no default timing.
const SHORT_LEASE: &str = "  ha:\n    lease_ttl: 3s\n    lease_renew: 1s\n";

struct Proc {
    child: Child,
    port: u16,
    log: PathBuf,
    data: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node's configuration file; `extra` is more of the `jfconnect:` section (indented by two).
fn write_config(
    root: &Path,
    node: &str,
    sim: &str,
    database: &str,
    extra: &str,
) -> (PathBuf, u16, PathBuf) {
    let server = pg_support::shared();
    let port = process_support::free_port();
    let data = root.join(node);
    std::fs::write(root.join("license"), sim_support::LICENSE).unwrap();
    std::fs::write(root.join("master.key"), MASTER_KEY).unwrap();
    let yaml = format!(
        "jfconnect:\n{extra}  port: {port}\n  bind: 127.0.0.1\n  data_dir: {data}\n  license:\n    file: {root}/license\n  jes:\n    url: {sim}\n  jcs:\n    url: {sim}\n  jpd:\n    url: {sim}\nshared:\n  node:\n    id: {node}\n  database:\n    type: postgresql\n    url: \"{url}?sslmode=disable\"\n    username: {user}\n    password_file: {root}/db.password\n  security:\n    masterKeyFile: {root}/master.key\n",
        data = data.display(),
        root = root.display(),
        url = server.jdbc_url(database),
        user = pg_support::USER,
    );
    std::fs::write(root.join("db.password"), pg_support::PASSWORD).unwrap();
    let path = root.join(format!("{node}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    (path, port, data)
}

fn spawn(root: &Path, node: &str, sim: &str, database: &str, extra: &str) -> Proc {
    let (config, port, data) = write_config(root, node, sim, database, extra);
    let log = root.join(format!("{node}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_jfconnect"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("JFCONNECT_LOG", "info")
        .env("JF_JFCONNECT_GRPC_ENABLED", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Proc {
        child,
        port,
        log,
        data,
    }
}

impl Proc {
    async fn get(&self, path: &str) -> Option<reqwest::Response> {
        sim_support::node_get(self.port, &self.data, path, Duration::from_secs(2)).await
    }

    async fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        self.get(path).await?.json().await.ok()
    }

    async fn get_text(&self, path: &str) -> Option<String> {
        self.get(path).await?.text().await.ok()
    }

    /// The live lease holder of `entitlements` as this node reports it.
    async fn holder(&self) -> Option<(String, i64)> {
        let v = self.get_json("/api/v1/cluster").await?;
        v["leases"].as_array()?.iter().find_map(|l| {
            (l["job"] == "entitlements" && l["expires_in_ms"].as_i64()? > 0).then(|| {
                (
                    l["holder"].as_str().unwrap_or("").to_string(),
                    l["epoch"].as_i64().unwrap_or(0),
                )
            })
        })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }
}

/// Starts two nodes and answers them as (holder, other) once one holds the lease and both
/// serve the entitlements.
async fn two_nodes(root: &Path, sim: &str, database: &str, extra: &str) -> (Proc, Proc, i64) {
    let a = spawn(root, "node-a", sim, database, extra);
    // The first node creates the identity; the second adopts it.
    eventually(Duration::from_secs(30), || async { a.holder().await })
        .await
        .unwrap_or_else(|| panic!("node-a did not start: {}", a.log_text()));
    let b = spawn(root, "node-b", sim, database, extra);
    eventually(Duration::from_secs(30), || async {
        let ready = b.get_json("/api/v1/system/readiness").await?;
        (ready["status"] == "ready").then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("node-b did not start: {}", b.log_text()));
    for n in [&a, &b] {
        eventually(Duration::from_secs(20), || async {
            n.get_json("/api/v1/entitlements").await.map(|_| ())
        })
        .await
        .unwrap_or_else(|| panic!("a node serves no entitlements: {}", n.log_text()));
    }
    let (holder, epoch) = a.holder().await.unwrap();
    if holder == "node-a" {
        (a, b, epoch)
    } else {
        (b, a, epoch)
    }
}

/// Waits (a little past the takeover limit) until `other` reports itself the holder.
async fn taken_over_by(other: &Proc) -> (String, i64) {
    taken_over_within(other, TAKEOVER_LIMIT + Duration::from_secs(5)).await
}

async fn taken_over_within(other: &Proc, limit: Duration) -> (String, i64) {
    eventually(limit, || async {
        other
            .holder()
            .await
            .filter(|(h, _)| other.data.ends_with(h))
    })
    .await
    .unwrap_or_else(|| panic!("no takeover: {}", other.log_text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_leaseholder_is_replaced_within_twenty_seconds_and_a_duplicate_node_id_is_refused(
) {
    let sim = sim_support::start().await;
    let database = pg_support::shared().fresh_database();
    let root = tempfile::tempdir().unwrap();
    let base = sim.handle.base_url();
    // Runs every 5 s: the job is overdue when the other node takes over.
    let (mut holder, other, epoch) = two_nodes(root.path(), &base, &database, OVERDUE_SOON).await;

    // A second process calling itself node-a or node-b is refused in one sentence.
    // (Its own data folder: one sharing node-b's is refused earlier, by the serve lock.)
    let (dup_config, _, dup_data) =
        write_config(root.path(), "node-b", &base, &database, OVERDUE_SOON);
    let text = std::fs::read_to_string(&dup_config).unwrap().replace(
        &format!("data_dir: {}\n", dup_data.display()),
        &format!("data_dir: {}-twin\n", dup_data.display()),
    );
    std::fs::write(&dup_config, text).unwrap();
    let dup = Command::new(env!("CARGO_BIN_EXE_jfconnect"))
        .args(["serve", "--config"])
        .arg(&dup_config)
        .env("JF_JFCONNECT_GRPC_ENABLED", "false")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&dup.stderr);
    assert_eq!(dup.status.code(), Some(1), "{err}");
    assert!(err.contains("node id node-b is already used"), "{err}");

    holder.child.kill().unwrap();
    let killed = Instant::now();
    let _ = holder.child.wait();
    let fetches = sim.stats().await.entitlements_calls;
    let (new_holder, new_epoch) = taken_over_by(&other).await;
    let took = killed.elapsed();
    println!("takeover after SIGKILL: {took:?}");
    assert!(took <= TAKEOVER_LIMIT, "takeover took {took:?}");
    assert!(other.data.ends_with(&new_holder));
    assert!(new_epoch > epoch);
    eventually(Duration::from_secs(5), || async {
        (sim.stats().await.entitlements_calls > fetches).then_some(())
    })
    .await
    .expect("the new leaseholder runs the overdue job at once");
    assert_eq!(
        sim.stats().await.register_calls,
        1,
        "no second registration"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaseholder_paused_past_its_ttl_steps_down_when_it_resumes() {
    let sim = sim_support::start().await;
    let database = pg_support::shared().fresh_database();
    let root = tempfile::tempdir().unwrap();
    let base = sim.handle.base_url();
    let (holder, other, epoch) = two_nodes(root.path(), &base, &database, "").await;

    holder.signal("STOP");
    let paused = Instant::now();
    let (_, new_epoch) = taken_over_by(&other).await;
    assert!(paused.elapsed() <= TAKEOVER_LIMIT, "{:?}", paused.elapsed());
    assert!(new_epoch > epoch);

    holder.signal("CONT");
    // On waking it finds the lease gone, steps down and says why; it never takes it back.
    eventually(Duration::from_secs(10), || async {
        let m = holder.get_text("/metrics").await?;
        m.contains("jfconnect_lease_held{job=\"entitlements\"} 0\n")
            .then_some(())
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the resumed node still claims the lease: {}",
            holder.log_text()
        )
    });
    let log = holder.log_text();
    assert!(log.contains("stepping down"), "{log}");
    let (h, e) = holder.holder().await.unwrap();
    assert!(
        other.data.ends_with(&h),
        "the lease stayed with the node that took it"
    );
    assert_eq!(e, new_epoch);
    assert_eq!(sim.stats().await.register_calls, 1);
}

/// The entitlements row of a node's `GET /api/v1/jobs`.
async fn entitlements_job(node: &Proc) -> Option<serde_json::Value> {
    let v = node.get_json("/api/v1/jobs").await?;
    v["jobs"]
        .as_array()?
        .iter()
        .find(|j| j["name"] == "entitlements")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jpds_schedule_is_shared_so_a_takeover_does_not_rerun_a_job_that_just_ran() {
    let sim = sim_support::start().await;
    let database = pg_support::shared().fresh_database();
    let root = tempfile::tempdir().unwrap();
    let base = sim.handle.base_url();
    // The default interval (1 h): the job ran moments ago when the other node takes over.
    let (mut holder, other, epoch) = two_nodes(root.path(), &base, &database, SHORT_LEASE).await;

    // The leaseholder's run is the last run both nodes show.
    let ran = eventually(Duration::from_secs(10), || async {
        let (h, o) = (
            entitlements_job(&holder).await?,
            entitlements_job(&other).await?,
        );
        (h["runs"].as_u64()? >= 1 && h == o).then_some(h)
    })
    .await;
    let ran = match ran {
        Some(ran) => ran,
        None => panic!(
            "the nodes show different entitlements runs: {:?} / {:?}",
            entitlements_job(&holder).await,
            entitlements_job(&other).await
        ),
    };
    assert_eq!(ran["last_error"], serde_json::Value::Null, "{ran}");

    holder.child.kill().unwrap();
    let _ = holder.child.wait();
    let fetches = sim.stats().await.entitlements_calls;
    let (_, new_epoch) = taken_over_within(&other, Duration::from_secs(15)).await;
    assert!(new_epoch > epoch);
    // Well past the takeover: still no run, and the schedule is the dead node's.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sim.stats().await.entitlements_calls,
        fetches,
        "the new leaseholder ran a job that ran within its interval: {}",
        other.log_text()
    );
    let now = entitlements_job(&other).await.unwrap();
    assert_eq!(now["last_run"], ran["last_run"]);
    assert_eq!(now["next_run"], ran["next_run"]);
    assert_eq!(now["runs"], ran["runs"]);
    assert_eq!(sim.stats().await.register_calls, 1);
}
