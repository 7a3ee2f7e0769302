//! Damaged state files: a `jpd_id` that was edited, truncated, extended or replaced by a FIFO,
//! and state files that are special files. Each is refused quickly with a sentence naming the
//! file; none is silently used as a new id or read without end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn run_bounded(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jfconnect"))
        .current_dir(dir)
        .args(args)
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("jfconnect {args:?} hung for 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A data folder that a command opened for writing (so `jpd_id` and its checksum exist), and
/// its config.
fn initialised() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("system.yaml");
    std::fs::write(
        &cfg,
        format!(
            "jfconnect:\n  data_dir: {}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    // A job run opens the data folder for writing (status only reads): the id is made. The
    // job itself fails (no license), which does not matter here.
    let _ = run_bounded(
        dir.path(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "jobs",
            "run",
            "entitlements",
        ],
    );
    let id = std::fs::read_to_string(dir.path().join("data/jpd_id")).unwrap();
    (dir, cfg, id.trim().to_string())
}

fn status(dir: &Path, cfg: &Path) -> Output {
    run_bounded(dir, &["--config", cfg.to_str().unwrap(), "status"])
}

fn assert_refused_naming(out: &Output, file: &str, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: accepted\n{err}");
    assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
    assert!(err.contains(file), "{what}: {file} not named: {err}");
}

/// How a test damages the id file, given the good id.
type Damage = Box<dyn Fn(&str) -> Vec<u8>>;

#[test]
fn damaged_jpd_id_is_refused_naming_the_file_never_replaced() {
    let cases: Vec<(&str, Damage)> = vec![
        (
            "another valid id",
            Box::new(|_| b"jpd-0000000000000000\n".to_vec()),
        ),
        (
            "one character changed",
            Box::new(|id| {
                let mut b = format!("{id}\n").into_bytes();
                b[5] = if b[5] == b'0' { b'1' } else { b'0' };
                b
            }),
        ),
        ("truncated", Box::new(|id| id.as_bytes()[..6].to_vec())),
        ("empty", Box::new(|_| Vec::new())),
        (
            "two lines",
            Box::new(|id| format!("{id}\n{id}\n").into_bytes()),
        ),
        ("crlf", Box::new(|id| format!("{id}\r\n").into_bytes())),
        ("nul byte", Box::new(|id| format!("{id}\0\n").into_bytes())),
        ("not utf-8", Box::new(|_| b"jpd-\xff\xfe\n".to_vec())),
        ("spaces", Box::new(|id| format!("  {id}  \n").into_bytes())),
    ];
    for (what, damage) in cases {
        let (dir, cfg, id) = initialised();
        let path = dir.path().join("data/jpd_id");
        std::fs::write(&path, damage(&id)).unwrap();
        let before = std::fs::read(&path).unwrap();
        let out = status(dir.path(), &cfg);
        assert_refused_naming(&out, "jpd_id", what);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "{what}: file changed"
        );
    }
}

#[test]
fn missing_jpd_id_beside_its_checksum_is_refused_not_made_anew() {
    let (dir, cfg, _) = initialised();
    std::fs::remove_file(dir.path().join("data/jpd_id")).unwrap();
    let out = status(dir.path(), &cfg);
    assert_refused_naming(&out, "jpd_id", "missing");
    assert!(!dir.path().join("data/jpd_id").exists());
}

#[test]
fn checksum_is_sha256sum_checkable_and_an_old_id_without_one_is_still_read() {
    let (dir, cfg, id) = initialised();
    let data = dir.path().join("data");
    let check = Command::new("sha256sum")
        .current_dir(&data)
        .args(["-c", "jpd_id.sha256"])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    // A data folder from before checksums: the id alone, no newline.
    std::fs::remove_file(data.join("jpd_id.sha256")).unwrap();
    std::fs::write(data.join("jpd_id"), &id).unwrap();
    let out = status(dir.path(), &cfg);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    // A one-off command changes nothing; the service adds the checksum (state.rs unit test).
    assert_eq!(std::fs::read_to_string(data.join("jpd_id")).unwrap(), id);
    assert!(!data.join("jpd_id.sha256").exists());
}

#[test]
fn special_files_as_state_files_are_refused_quickly_naming_the_file() {
    for name in ["jpd_id", "state/entitlements.json"] {
        let (dir, cfg, _) = initialised();
        let path = dir.path().join("data").join(name);
        let _ = std::fs::remove_file(&path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let st = Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(st.success());
        let out = status(dir.path(), &cfg);
        let err = String::from_utf8_lossy(&out.stderr);
        let all = format!("{err}{}", String::from_utf8_lossy(&out.stdout));
        assert!(all.contains(name), "{name} as FIFO not named: {all}");
        assert!(all.contains("not a regular file"), "{name}: {all}");
    }
}
