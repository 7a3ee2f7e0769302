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

/// `demo --keep` prints the console's address, serves it after the story, and stops with
/// exit 0 on Ctrl-C (SIGINT).
#[test]
fn demo_keep_serves_the_console_until_ctrl_c() {
    use std::io::{BufRead, Read, Write};
    let mut child = Command::new(env!("CARGO_BIN_EXE_jfconnect"))
        .args(["demo", "--keep"])
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run jfconnect demo --keep");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let url = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the demo never said the console stays open");
        if let Some(rest) = line.strip_prefix("The console stays open at ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let addr = url
        .strip_prefix("http://")
        .and_then(|r| r.strip_suffix("/ui/"))
        .unwrap_or_else(|| panic!("not a console address: {url}"));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "GET /ui/login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("Admin token"), "{answer}");

    // SAFETY: sending SIGINT to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not stop on Ctrl-C"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
