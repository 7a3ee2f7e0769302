//! Logs in JFrog's formats: the service log line, the request log, trace ids carried into
//! outbound calls, no colour off a terminal, and no WARN for the expected first start.

mod process_support;
use process_support::{free_port, sigterm_and_wait, wait_for_answer, InProcess};

use jfconnect::app::App;
use jfconnect::clock::{SharedClock, SystemClock};
use jfconnect::config::Config;
use jfconnect::jobs::JobName;
use jfconnect::logging::{self, LogSettings};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "test-api-token-0123456789";

/// `serve` on `cfg` with the log level and colour left to their defaults, stderr captured.
fn serve(cfg: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_jfconnect"))
        // Parallel tests must not all bind the default gRPC port.
        .env("JF_JFCONNECT_GRPC_ENABLED", "false")
        .arg("--config")
        .arg(cfg)
        .arg("serve")
        .env_remove("JFCONNECT_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGTERM, wait, and everything it wrote to stderr.
fn stop(child: &mut Child) -> String {
    sigterm_and_wait(child);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

/// True when `line` has JFrog's service log shape:
/// `<time> [jfcon] [LEVEL] [<trace id>] [<module>:<line>] [<thread>] - <message>`.
fn is_service_line(line: &str) -> bool {
    let Some((head, _message)) = line.split_once(" - ") else {
        return false;
    };
    let parts: Vec<&str> = head.splitn(2, ' ').collect();
    let time_ok = chrono::DateTime::parse_from_rfc3339(parts[0]).is_ok()
        && parts[0].ends_with('Z')
        && parts[0].len() == "2026-12-01T10:00:00.000Z".len();
    let Some(rest) = parts.get(1) else {
        return false;
    };
    let brackets: Vec<&str> = rest
        .split("] [")
        .map(|s| s.trim_start_matches('[').trim_end_matches(']'))
        .collect();
    time_ok
        && brackets.len() == 5
        && brackets[0] == "jfcon"
        && ["ERROR", "WARN ", "INFO ", "DEBUG", "TRACE"].contains(&brackets[1])
        && brackets[2].bytes().all(|b| b.is_ascii_hexdigit())
        && brackets[3]
            .rsplit_once(':')
            .is_some_and(|(_, n)| n.parse::<u32>().is_ok())
        && !brackets[4].is_empty()
}

#[test]
fn first_start_logs_one_info_line_for_the_missing_license_no_warn_no_colour() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("system.yaml");
    std::fs::write(
        &cfg,
        format!(
            "jfconnect:\n  data_dir: {}\n  port: {port}\n  bind: 127.0.0.1\n  jes:\n    url: http://127.0.0.1:9\n  retry:\n    initial: 1s\n    max: 1s\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = serve(&cfg);
    // Long enough for several retries of the entitlements and usage jobs (1 s backoff).
    std::thread::sleep(Duration::from_secs(4));
    let err = stop(&mut child);
    assert!(
        !err.contains('\x1b'),
        "colour escapes off a terminal:\n{err}"
    );
    assert!(!err.is_empty());
    for line in err.lines() {
        assert!(is_service_line(line), "not JFrog's format: {line}");
        assert!(!line.contains("[WARN ]"), "WARN on a first start: {line}");
    }
    let hints: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("no license yet"))
        .collect();
    assert_eq!(hints.len(), 1, "{err}");
    assert!(hints[0].contains("[INFO ]"));
    assert!(hints[0].contains("jfconnect.license.file"), "{}", hints[0]);
}

/// A stand-in JES that records the trace header of every request and answers 500.
async fn recording_jes() -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(
                headers
                    .get(logging::TRACE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
            );
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_ids_reach_outbound_calls_and_the_request_log_keeps_secrets_out() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    logging::init(
        &LogSettings {
            dir: Some(logs.clone()),
            ..LogSettings::default()
        },
        "info",
    )
    .unwrap();
    let (jes, seen) = recording_jes().await;
    // The same stand-in as the store: the store proxy's requests are logged and carry the
    // trace id like the others.
    let (store, store_seen) = recording_jes().await;
    std::fs::write(dir.path().join("license"), "JFL-LOGGING-TEST-1").unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let cfg = dir.path().join("system.yaml");
    std::fs::write(
        &cfg,
        format!(
            "jfconnect:\n  data_dir: {}\n  license:\n    file: {}\n  api:\n    token_file: {}\n  jes:\n    url: {jes}\n  store:\n    url: {store}\n",
            dir.path().join("data").display(),
            dir.path().join("license").display(),
            dir.path().join("token").display(),
        ),
    )
    .unwrap();
    let config = Config::load(Some(&cfg)).unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let app = Arc::new(App::build(config, clock, None, false).unwrap());

    // A job run: its trace id goes out with the call to JES and into the service log.
    let scheduler = app.scheduler().unwrap().clone();
    assert!(scheduler.run_now(JobName::Entitlements).await.is_err());
    let sent = seen.lock().unwrap().clone();
    assert!(!sent.is_empty());
    let trace = sent[0].clone().expect("no trace header on the call to JES");
    assert!(trace.len() == 16 && logging::is_trace_id(&trace), "{trace}");
    let service = std::fs::read_to_string(logs.join(logging::SERVICE_LOG)).unwrap();
    let failed = service
        .lines()
        .find(|l| l.contains("job failed"))
        .unwrap_or_else(|| panic!("no 'job failed' line in:\n{service}"));
    assert!(is_service_line(failed), "{failed}");
    assert!(failed.contains(&format!("[{trace}]")), "{failed}");
    assert!(failed.contains("[WARN ]"), "{failed}");
    assert!(!service.contains('\x1b'));
    assert!(!service.contains("JFL-LOGGING-TEST-1"));

    // Requests: every answer carries its trace id; the request log has JFrog's 11 fields and
    // neither the token nor the query string.
    let server = InProcess::start(app).await;
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent("logging-test/1")
        .build()
        .unwrap();
    let r = client
        .get(format!("{base}/api/v1/jobs?api_key=QUERYSECRET"))
        .bearer_auth("WRONG-TOKEN-SECRET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get(logging::TRACE_HEADER).is_some());
    let r = client
        .get(format!("{base}/api/v1/jobs"))
        .bearer_auth(TOKEN)
        .header(logging::TRACE_HEADER, "00112233AABBCCDD")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get(logging::TRACE_HEADER).unwrap(),
        "00112233aabbccdd"
    );
    let r = client
        .get(format!("{base}/api/v1/store/x?api_key=QUERYSECRET"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the store proxy needs the token too");
    assert!(r.headers().get(logging::TRACE_HEADER).is_some());
    let r = client
        .get(format!("{base}/api/v1/store/x"))
        .bearer_auth(TOKEN)
        .header(logging::TRACE_HEADER, "44556677")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500, "the store's own answer passes through");
    assert_eq!(r.headers().get(logging::TRACE_HEADER).unwrap(), "44556677");
    assert_eq!(
        store_seen.lock().unwrap().clone(),
        [Some("44556677".to_string())],
        "only the request with the token reached the store, with its trace id"
    );
    server.stop().await;

    let requests = std::fs::read_to_string(logs.join(logging::REQUEST_LOG)).unwrap();
    for secret in ["QUERYSECRET", "WRONG-TOKEN-SECRET", TOKEN, "api_key"] {
        assert!(!requests.contains(secret), "{secret} in:\n{requests}");
    }
    let lines: Vec<Vec<&str>> = requests.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(lines.len(), 4, "{requests}");
    for f in &lines {
        assert_eq!(f.len(), 11, "{f:?}");
        assert!(chrono::DateTime::parse_from_rfc3339(f[0]).is_ok(), "{f:?}");
        assert!(f[2].starts_with("127.0.0.1:"), "{f:?}");
        assert_eq!(f[4], "GET");
        assert!(f[8].parse::<i64>().unwrap() > 0, "{f:?}");
        assert!(f[9].parse::<i64>().is_ok(), "{f:?}");
        assert_eq!(f[10], "logging-test/1");
    }
    assert_eq!(
        (lines[0][3], lines[0][5], lines[0][6]),
        ("anonymous", "/api/v1/jobs", "401")
    );
    assert_eq!(
        (lines[1][1], lines[1][3], lines[1][5], lines[1][6]),
        ("00112233aabbccdd", "api-token", "/api/v1/jobs", "200")
    );
    assert_eq!(
        (lines[2][3], lines[2][5], lines[2][6]),
        ("anonymous", "/api/v1/store/x", "401")
    );
    assert_eq!(
        (lines[3][1], lines[3][3], lines[3][5], lines[3][6]),
        ("44556677", "api-token", "/api/v1/store/x", "500")
    );
}

#[test]
fn log_keys_switch_serve_to_json_lines_in_the_log_folder() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let port = free_port();
    let cfg = dir.path().join("system.yaml");
    std::fs::write(
        &cfg,
        format!(
            "jfconnect:\n  data_dir: {}\n  port: {port}\n  bind: 127.0.0.1\n  jes:\n    url: http://127.0.0.1:9\n  log:\n    format: json\n    dir: {}\n",
            dir.path().join("data").display(),
            logs.display()
        ),
    )
    .unwrap();
    let mut child = serve(&cfg);
    let answered = wait_for_answer(port, "/api/v1/system/ping?secret=Q");
    assert!(answered.to_ascii_lowercase().contains("x-jfrog-trace-id:"));
    let err = stop(&mut child);
    let service = std::fs::read_to_string(logs.join(logging::SERVICE_LOG)).unwrap();
    for text in [&err, &service] {
        assert!(!text.is_empty());
        for line in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(v["service"], "jfcon");
            assert!(v["level"].is_string() && v["module"].is_string() && v["line"].is_u64());
        }
    }
    assert!(service.contains("jfconnect is serving"), "{service}");
    let requests = std::fs::read_to_string(logs.join(logging::REQUEST_LOG)).unwrap();
    let v: serde_json::Value = serde_json::from_str(requests.lines().next().unwrap()).unwrap();
    assert_eq!(v["path"], "/api/v1/system/ping");
    assert_eq!(v["status"], 200);
    assert_eq!(v["user"], "anonymous");
    assert!(!requests.contains("secret"));
}
