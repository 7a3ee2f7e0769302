//! The HA usage drill: three `jfconnect serve` nodes of one JPD on loopback, one real
//! PostgreSQL, the simulator; 3,000 usage files spread over the three spools (some with the
//! same bytes in two or three spools) arrive in waves while nodes are SIGKILLed and restarted
//! at seeded random instants and PostgreSQL itself is restarted at a few of them. At the end
//! every distinct file reached JCS, each distinct file is in exactly one verified archive,
//! every spool is empty, JES saw one registration and every node serves the same entitlements.
//!
//! `JFCONNECT_HA_DRILL_POINTS` sets the number of kill points (default 30; run 300 locally),
//! `JFCONNECT_HA_DRILL_SEED` the seed (printed, so a failure can be replayed),
//! `JFCONNECT_HA_DRILL_FILES` the number of usage files (default 3,000).

mod pg_support;
mod process_support;
mod sim_support;

use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const MASTER_KEY: &str = "00112233445566778899aabbccddeeff";
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// How long the nodes get to finish the work once the killing stopped.
const SETTLE_LIMIT: Duration = Duration::from_secs(240);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Node {
    name: &'static str,
    config: PathBuf,
    port: u16,
    data: PathBuf,
    spool: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Node {
    fn new(root: &Path, name: &'static str, sim: &str, database: &str) -> Node {
        let server = pg_support::shared();
        let port = process_support::free_port();
        let data = root.join(name);
        let spool = root.join(format!("{name}-spool"));
        fs::create_dir_all(&spool).unwrap();
        let yaml = format!(
            "jfconnect:\n  port: {port}\n  bind: 127.0.0.1\n  data_dir: {data}\n  license:\n    file: {root}/license\n  jes:\n    url: {sim}\n  jcs:\n    url: {sim}\n  jpd:\n    url: {sim}\n    token_file: {root}/jpd.token\n  usage:\n    spool_dir: {spool}\n    interval: 1s\n    batch_size: 40\n  archival:\n    interval: 1s\n    max_archive_bytes: 12288\n  retry:\n    initial: 1s\n    max: 2s\n  ha:\n    lease_ttl: 2s\n    lease_renew: 1s\nshared:\n  node:\n    id: {name}\n  database:\n    type: postgresql\n    url: \"{url}?sslmode=disable\"\n    username: {user}\n    password_file: {root}/db.password\n  security:\n    masterKeyFile: {root}/master.key\n",
            data = data.display(),
            spool = spool.display(),
            root = root.display(),
            url = server.jdbc_url(database),
            user = pg_support::USER,
        );
        let config = root.join(format!("{name}.yaml"));
        fs::write(&config, yaml).unwrap();
        Node {
            name,
            config,
            port,
            data,
            log: root.join(format!("{name}.log")),
            spool,
            child: None,
            starts: 0,
        }
    }

    fn start(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_jfconnect"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("JFCONNECT_LOG", "info")
            .env("JF_JFCONNECT_GRPC_ENABLED", "false")
            .env("JFCONNECT_SPOOL_SETTLE_MS", "0")
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.starts += 1;
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the node again when its process ended (a start refused while its killed
    /// predecessor's heartbeat was fresh exits 1).
    fn keep_running(&mut self) {
        let ended = match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_some(),
            None => true,
        };
        if ended {
            self.child = None;
            self.start();
        }
    }

    async fn get(&self, path: &str) -> Option<reqwest::Response> {
        sim_support::node_get(self.port, &self.data, path, Duration::from_secs(3)).await
    }

    fn spool_left(&self) -> usize {
        fs::read_dir(&self.spool).map_or(0, |d| d.count())
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes usage files into the spools: each file goes into one spool, and one in eight also
/// into a second (one in 40 into all three) under another name. Answers the SHA-256s written.
struct Files {
    next: usize,
    written: usize,
    distinct: HashSet<String>,
}

impl Files {
    fn put(spool: &Path, name: &str, body: &[u8]) {
        let tmp = spool.join(format!(".{name}.tmp"));
        fs::write(&tmp, body).unwrap();
        let f = fs::File::options().write(true).open(&tmp).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(10))
            .unwrap();
        drop(f);
        fs::rename(&tmp, spool.join(name)).unwrap();
    }

    fn wave(&mut self, nodes: &[Node], n: usize, rng: &mut impl Rng) {
        let goal = self.written + n;
        while self.written < goal {
            let i = self.next;
            self.next += 1;
            let body = format!(
                r#"{{"product":"{}","timestamp":"2026-11-{:02}T08:00:00Z","i":{i},"pad":"{}"}}"#,
                ["xray", "artifactory", "distribution"][i % 3],
                1 + i % 28,
                "x".repeat(i % 97)
            );
            self.distinct
                .insert(jfconnect::protocol::sha256_hex(body.as_bytes()));
            let first = rng.gen_range(0..nodes.len());
            let copies = match rng.gen_range(0..40) {
                0 => 3,
                1..=4 => 2,
                _ => 1,
            };
            for k in 0..copies {
                if self.written >= goal && k > 0 {
                    break;
                }
                let node = &nodes[(first + k) % nodes.len()];
                Files::put(&node.spool, &format!("u{i:05}-{k}.json"), body.as_bytes());
                self.written += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_and_repeat_nothing_through_kills_and_database_restarts() {
    let points = env_number("JFCONNECT_HA_DRILL_POINTS", 30) as usize;
    let total = env_number("JFCONNECT_HA_DRILL_FILES", 3000) as usize;
    let seed = env_number("JFCONNECT_HA_DRILL_SEED", 20261201);
    println!("HA usage drill: {points} kill points, {total} usage files, seed {seed}");
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let server = pg_support::shared();
    let database = server.fresh_database();
    let sim = sim_support::start().await;
    let base = sim.handle.base_url();
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join("license"), sim_support::LICENSE).unwrap();
    fs::write(root.path().join("master.key"), MASTER_KEY).unwrap();
    fs::write(root.path().join("db.password"), pg_support::PASSWORD).unwrap();
    fs::write(root.path().join("jpd.token"), "drill-token").unwrap();
    let mut nodes: Vec<Node> = NODES
        .iter()
        .map(|n| Node::new(root.path(), n, &base, &database))
        .collect();
    // The first node makes the JPD's identity; the others adopt it.
    nodes[0].start();
    process_support::eventually(Duration::from_secs(60), || async {
        nodes[0].get("/api/v1/entitlements").await.map(|_| ())
    })
    .await
    .unwrap_or_else(|| panic!("node-a did not start: {}", nodes[0].log_tail()));
    for n in &mut nodes[1..] {
        n.start();
    }
    let mut files = Files {
        next: 0,
        written: 0,
        distinct: HashSet::new(),
    };
    let per_point = total / points.max(1);
    let (mut kills, mut db_restarts) = (0u32, 0u32);
    for point in 0..points {
        let n = if point == 0 {
            total - per_point * (points.max(1) - 1)
        } else {
            per_point
        };
        files.wave(&nodes, n, &mut rng);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..1200))).await;
        if point % 10 == 7 {
            // PostgreSQL goes away under running nodes and comes back.
            tokio::task::block_in_place(|| {
                server.stop();
                std::thread::sleep(Duration::from_millis(rng.gen_range(100..1500)));
                server.restart();
            });
            db_restarts += 1;
        } else {
            let victim = rng.gen_range(0..nodes.len());
            nodes[victim].kill();
            kills += 1;
        }
        for n in &mut nodes {
            n.keep_running();
        }
    }
    let wrote = files.written;
    let distinct = files.distinct.len();
    println!(
        "{wrote} usage files written ({distinct} distinct), {kills} SIGKILLs, {db_restarts} PostgreSQL restarts, in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Every node runs until the spools are empty and JCS and the archives hold every file.
    let settle = Instant::now();
    let stats = loop {
        for n in &mut nodes {
            n.keep_running();
        }
        let stats = sim.stats().await;
        let left: usize = nodes.iter().map(Node::spool_left).sum();
        if left == 0
            && stats.usage_received_unique == distinct as u64
            && stats.archived_usage_files == distinct as u64
        {
            break stats;
        }
        if settle.elapsed() > SETTLE_LIMIT {
            let tails: Vec<String> = nodes
                .iter()
                .map(|n| format!("--- {} ---\n{}", n.name, n.log_tail()))
                .collect();
            panic!(
                "not done after {SETTLE_LIMIT:?}: {left} files left in the spools, JCS has {} of {distinct}, archives hold {}\n{}",
                stats.usage_received_unique,
                stats.archived_usage_files,
                tails.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let settled_in = settle.elapsed();

    let (seen, names) = sim_support::archived_usage(sim.dir.path());
    assert_eq!(stats.archives_invalid, 0);
    assert_eq!(
        seen.keys().cloned().collect::<HashSet<_>>(),
        files.distinct,
        "every distinct file is archived"
    );
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "files in more than one archive: {twice:?}"
    );
    assert!(
        names
            .iter()
            .all(|n| NODES.iter().any(|node| n.contains(&format!("/{node}/")))),
        "an archive name without its node id: {names:?}"
    );
    assert_eq!(stats.register_calls, 1, "JES saw one registration");
    for n in &nodes {
        let count = fs::read_dir(n.data.join("quarantine")).map_or(0, |d| d.count());
        assert_eq!(count, 0, "{} quarantined files", n.name);
    }
    // Every node serves the same entitlements (the same strong ETag).
    let mut etags = HashSet::new();
    for n in &nodes {
        let etag = process_support::eventually(Duration::from_secs(30), || async {
            let r = n.get("/api/v1/entitlements").await?;
            r.headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .await
        .unwrap_or_else(|| panic!("{} serves no entitlements: {}", n.name, n.log_tail()));
        etags.insert(etag);
    }
    assert_eq!(etags.len(), 1, "the nodes serve different entitlements");
    // The cluster view shows each node's usage counters; the archived ones add up.
    let view = process_support::eventually(Duration::from_secs(30), || async {
        let v: serde_json::Value = nodes[0].get("/api/v1/cluster").await?.json().await.ok()?;
        let counts: Vec<(u64, u64, u64, u64)> = v["nodes"]
            .as_array()?
            .iter()
            .map(|n| {
                let u = &n["usage"];
                Some((
                    u["pending"].as_u64()?,
                    u["uploaded"].as_u64()?,
                    u["archived"].as_u64()?,
                    u["quarantined"].as_u64()?,
                ))
            })
            .collect::<Option<_>>()?;
        let archived: u64 = counts.iter().map(|c| c.2).sum();
        let idle = counts.iter().all(|c| (c.0, c.1, c.3) == (0, 0, 0));
        (counts.len() == NODES.len() && idle && archived == distinct as u64).then_some(counts)
    })
    .await;
    assert!(
        view.is_some(),
        "the cluster view does not show every node's usage counters adding up to {distinct} archived"
    );
    let starts: u32 = nodes.iter().map(|n| n.starts).sum();
    println!(
        "HA usage drill passed: seed {seed}, {points} points, {kills} SIGKILLs, {db_restarts} PostgreSQL restarts, {starts} node starts; {wrote} files ({distinct} distinct) reached JCS ({} re-sends recognised as duplicates) and {} archives; settled {:.1} s after the last point; {:.1} s in all",
        stats.usage_received_duplicate,
        names.len(),
        settled_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
