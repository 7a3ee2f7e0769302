//! `jfconnect demo` is the README's first command: it must run on a fresh machine with no
//! set-up and tell the whole story.

use std::process::Command;

#[test]
fn demo_runs_the_connected_flow_and_exits_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_jfconnect"))
        .arg("demo")
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .output()
        .expect("run jfconnect demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for expected in [
        "JES rejected the license (HTTP 400",
        "held back until the license changes",
        "registered the license; fetched 4 entitlements",
        "failed (HTTP 500)",
        "exponential backoff with full jitter",
        "entitlements unchanged (JES answered 304 Not Modified)",
        "- xray           scan",
        "uploaded 200 usage files",
        "JCS holds 200 distinct usage files",
        "archived 200 usage files into jfrog-usage-logs/",
        "checksum verified, originals deleted",
        "Artifactory verified 200 usage files inside 1 archive(s) by their index; the spool is empty",
    ] {
        assert!(
            stdout.contains(expected),
            "demo output lacks {expected:?}:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("JFL-DEMO-0000-1111-2222"),
        "the good license is never printed"
    );
}
