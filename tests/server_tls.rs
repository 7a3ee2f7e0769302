//! `tls.server.cert_file` and `tls.server.key_file` make `serve` answer over HTTPS; a bad
//! certificate or key is refused at start with exit 2 and one sentence naming the file.

mod tls_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tls_support::{stray_key_pem, TestPki};

struct Pki {
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
    other_key: PathBuf,
}

/// A CA, a server certificate for localhost and 127.0.0.1 signed by it, its key, and a key
/// that belongs to nothing.
fn pki(dir: &Path) -> Pki {
    let made = TestPki::loopback();
    let (cert, key) = made.write_server_files(dir);
    let other_key = dir.join("other.key");
    std::fs::write(&other_key, stray_key_pem()).unwrap();
    Pki {
        ca_pem: made.ca_pem,
        cert,
        key,
        other_key,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(dir: &Path, port: u16, cert: &Path, key: &Path) -> PathBuf {
    let cfg = dir.join("system.yaml");
    std::fs::write(
        &cfg,
        format!(
            "jfconnect:\n  data_dir: {}\n  port: {port}\n  bind: 127.0.0.1\n  jes:\n    url: http://127.0.0.1:9\n  tls:\n    server:\n      cert_file: {}\n      key_file: {}\n",
            dir.join("data").display(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    cfg
}

fn jfconnect(cfg: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jfconnect"));
    // Parallel tests must not all bind the default gRPC port.
    c.env("JF_JFCONNECT_GRPC_ENABLED", "false");
    c.arg("--config").arg(cfg).arg("serve");
    c.env_remove("HTTPS_PROXY").env_remove("HTTP_PROXY");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_over_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let port = free_port();
    let cfg = config(dir.path(), port, &p.cert, &p.key);
    let mut child = jfconnect(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(p.ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let url = format!("https://localhost:{port}/api/v1/system/ping");
    let answer = loop {
        match trusting.get(&url).send().await {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "no HTTPS answer: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "OK");
    // By IP too (the certificate names 127.0.0.1), and an API route with its token.
    let token = std::fs::read_to_string(dir.path().join("data").join("api.token")).unwrap();
    let r = trusting
        .get(format!("https://127.0.0.1:{port}/api/v1/jobs"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Plain HTTP gets no HTTP answer, and a client without the CA refuses the certificate.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(plain
        .get(format!("http://127.0.0.1:{port}/api/v1/system/ping"))
        .send()
        .await
        .is_err());
    let e = plain.get(&url).send().await.unwrap_err();
    assert!(
        format!("{e:?}").to_lowercase().contains("certificate"),
        "{e:?}"
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `serve` with this cert and key exits 2 at once with one line holding `expected`.
fn refused(dir: &Path, cert: &Path, key: &Path, expected: &str) {
    let cfg = config(dir, free_port(), cert, key);
    let mut child = jfconnect(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve started with a bad certificate or key ({expected})");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("jfconnect: "), "{err}");
    assert!(last.contains(expected), "{err}");
}

#[test]
fn a_bad_certificate_or_key_exits_2_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    refused(
        dir.path(),
        &garbage,
        &p.key,
        "jfconnect.tls.server.cert_file",
    );
    refused(
        dir.path(),
        &p.cert,
        &garbage,
        "jfconnect.tls.server.key_file",
    );
    refused(
        dir.path(),
        &p.cert,
        &p.other_key,
        "the key does not belong to the certificate",
    );
    refused(
        dir.path(),
        &dir.path().join("missing.pem"),
        &p.key,
        "tls.server.cert_file",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_silent_and_stalled_handshakes_are_cut_at_the_header_timeout_and_the_cap_holds()
{
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let port = free_port();
    let cfg = config(dir.path(), port, &p.cert, &p.key);
    let text = std::fs::read_to_string(&cfg).unwrap()
        + "  api:\n    header_read_timeout: 2s\n    max_connections: 30\n";
    std::fs::write(&cfg, text).unwrap();
    let child = jfconnect(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(p.ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("https://localhost:{port}/api/v1/system/ping");
    let deadline = Instant::now() + Duration::from_secs(20);
    while trusting.get(&url).send().await.is_err() {
        assert!(Instant::now() < deadline, "no HTTPS answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 100 silent connections and 100 that stop inside the TLS record header, over a cap of 30.
    let mut peers: Vec<std::net::TcpStream> = (0..200)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            if i % 2 == 1 {
                let _ = s.write_all(&[0x16, 0x03]);
            }
            s
        })
        .collect();
    // A real HTTPS request still gets through.
    let r = trusting.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Every peer that never finished a handshake is closed within the header timeout (or
    // earlier, at the cap).
    let started = Instant::now();
    for s in &mut peers {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let closed = matches!(s.read(&mut buf), Ok(0) | Err(_))
            && started.elapsed() < Duration::from_secs(5);
        assert!(closed, "a stalled TLS peer stayed open");
    }
}
