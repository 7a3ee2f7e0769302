//! `scripts/bench` cannot rot: its listing names the benchmarks docs/benchmarks.md documents,
//! a bad name is refused with exit 2, and smoke runs (with the debug binary this test run
//! built) of one small benchmark write a valid `results.json` and markdown table, and of the
//! database load start its own PostgreSQL (as root, too) and measure three nodes. The
//! benchmarks themselves never run under `cargo test`.

use std::path::Path;
use std::process::Command;

const NAMES: [&str; 11] = [
    "api_entitlements",
    "store_proxy_small",
    "store_proxy_1gib",
    "archive_100k",
    "archive_1m",
    "delete_1m",
    "export_100k",
    "upload_100k",
    "verify_1gib",
    "watch_1000",
    "ha_db_load",
];

fn bench() -> Command {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench"))
}

#[test]
fn the_listing_names_every_documented_benchmark_and_bad_names_are_refused() {
    let out = bench().arg("--dry-run").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = plan["benchmarks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, NAMES);
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md"))
            .unwrap();
    for name in NAMES {
        assert!(
            docs.contains(&format!("`{name}`")),
            "docs/benchmarks.md does not describe {name}"
        );
    }

    let out = bench().args(["--dry-run", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown benchmark nope"));
}

/// `scripts/bench --quick NAME` with the debug binary this test run built: its out folder and
/// `results.json` (it must succeed; its output and helpers' log are shown when not).
fn quick_run(name: &str) -> (tempfile::TempDir, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_jfconnect")).parent().unwrap();
    let out = bench()
        .args(["--quick", "--no-build", "--bin-dir"])
        .arg(bin_dir)
        .arg("--out")
        .arg(dir.path())
        .arg(name)
        .env_remove("JFCONNECT_CONFIG")
        .output()
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("bench.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{}\n{}\n{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let results =
        serde_json::from_slice(&std::fs::read(dir.path().join("results.json")).unwrap()).unwrap();
    (dir, results)
}

#[test]
fn a_quick_run_writes_results_json_and_a_table() {
    let (dir, results) = quick_run("export_100k");
    let rows = results["benchmarks"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["name"], "export_100k");
    assert_eq!(row["unit"], "s");
    for key in ["ours", "reference", "ratio", "rss_kib", "cpu_s"] {
        assert!(
            row[key].as_f64().is_some_and(|v| v > 0.0),
            "{key} is {}",
            row[key]
        );
    }
    for key in ["load_before", "load_after"] {
        assert!(row[key].as_f64().is_some_and(|v| v >= 0.0), "{key}");
    }
    let ratio = row["ours"].as_f64().unwrap() / row["reference"].as_f64().unwrap();
    assert!((row["ratio"].as_f64().unwrap() - ratio).abs() < 1e-9);
    let table = std::fs::read_to_string(dir.path().join("results.md")).unwrap();
    assert!(table.starts_with("| benchmark |"));
    assert!(table.contains("| export_100k | s |"));
}

/// The database-load helper starts its own PostgreSQL under the work folder `scripts/bench`
/// makes; as root, PostgreSQL runs as the `postgres` user, which must be able to reach it.
#[test]
fn a_quick_database_load_run_starts_its_postgresql_and_measures() {
    let (_dir, results) = quick_run("ha_db_load");
    let row = &results["benchmarks"][0];
    assert_eq!(row["name"], "ha_db_load");
    let cluster = &row["rounds"][0]["clusters"][0];
    assert_eq!(cluster["nodes"], 3, "{row}");
    assert!(row["ours"].as_f64().is_some_and(|v| v > 0.0), "{row}");
    let per_node = cluster["run_qps_per_node"].as_array().unwrap();
    assert_eq!(per_node.len(), 3, "{row}");
}
