//! `jfconnect demo --airgapped` runs the whole round trip and ends with a manual check command
//! that really checks the usage bundle with unzip, minisign and sha256sum.

use std::process::Command;

#[test]
fn airgapped_demo_runs_and_its_manual_check_command_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jfconnect"))
        .args(["demo", "--airgapped"])
        .env("TMPDIR", tmp.path())
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("12 unique, 0 duplicate"), "{stdout}");
    // Nothing talks to JES in air-gapped mode, so no job report may say it did.
    for line in stdout.lines().filter(|l| l.contains("JES")) {
        assert!(
            line.contains("not reachable") || line.contains("with no JES"),
            "{line}"
        );
    }
    assert!(
        stdout.contains("Artifactory verified 12 usage files"),
        "{stdout}"
    );
    assert!(stdout.contains("already imported"), "{stdout}");
    let check = stdout
        .lines()
        .find(|l| l.contains("minisign -Vm SHA256SUMS"))
        .expect("the demo prints the manual check command")
        .trim();
    assert!(check.contains("unzip b.jfbundle -d x"), "{check}");
    assert!(check.contains("sha256sum -c SHA256SUMS"), "{check}");
    let o = Command::new("sh").arg("-c").arg(check).output().unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
