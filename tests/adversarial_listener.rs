//! Hostile connections against `jfconnect serve`: ten thousand idle connections, the connection
//! cap, slowloris heads, silent and keep-alive-idle connections, header floods, an over-long
//! request line, and silent connections to the gRPC port. The service must keep answering,
//! stay within its memory budget, and cut slow peers at its timeouts.

mod process_support;

use process_support::{free_port, Killed};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "listener-test-token";

struct Server {
    child: Killed,
    port: u16,
    dir: tempfile::TempDir,
}

impl Server {
    /// `jfconnect serve` on a free loopback port with `api_extra` lines under `api:` and
    /// `extra` lines under `jfconnect:`.
    fn start(api_extra: &str, extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let token = dir.path().join("api.token");
        std::fs::write(&token, TOKEN).unwrap();
        let cfg = dir.path().join("system.yaml");
        std::fs::write(
            &cfg,
            format!(
                "jfconnect:\n  data_dir: {}\n  port: {port}\n  bind: 127.0.0.1\n  jes:\n    url: http://127.0.0.1:9\n{extra}  api:\n    token_file: {}\n{api_extra}",
                dir.path().join("data").display(),
                token.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let mut command = Command::new(serve_binary());
        command
            .current_dir(dir.path())
            .arg("--config")
            .arg(&cfg)
            .arg("serve")
            .env("JFCONNECT_LOG", "warn")
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .stdout(Stdio::null())
            .stderr(log);
        if !extra.contains("grpc:") {
            command.env("JF_JFCONNECT_GRPC_ENABLED", "false");
        }
        let s = Server {
            child: Killed(command.spawn().unwrap()),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if s.request("GET", "/api/v1/system/ping", None).as_deref() == Some("200") {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("serve never answered ping: {}", s.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// A line of `/proc/<serve>/status` in KiB (`VmRSS`, `RssAnon`).
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.0.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("serve's {field}"))
    }

    fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// The memory serve allocated itself: its RSS without the file-backed pages of the
    /// (debug, ~24 MiB) binary.
    fn anon_kib(&self) -> u64 {
        self.status_kib("RssAnon")
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.0.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn connect_to(&self, port: u16) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    fn connect(&self) -> TcpStream {
        self.connect_to(self.port)
    }

    /// Sends raw bytes on a fresh connection; the answer's status code, if one came.
    fn raw(&self, request: &[u8]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let _ = s.write_all(request);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        text.strip_prefix("HTTP/1.1 ")
            .map(|rest| rest.chars().take(3).collect())
    }

    fn request(&self, method: &str, path: &str, token: Option<&str>) -> Option<String> {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        self.raw(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
    }
}

/// Raises this process's open-file limit to its hard limit; the new soft limit.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(65_536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// Names a release build of `jfconnect` to run instead of the test's debug one (the 10,000
/// connection test then also holds serve's whole RSS to 32 MiB; docs/benchmarks.md).
const RELEASE_BIN_ENV: &str = "JFCONNECT_LISTENER_BIN";

fn serve_binary() -> std::ffi::OsString {
    std::env::var_os(RELEASE_BIN_ENV)
        .unwrap_or_else(|| std::ffi::OsString::from(env!("CARGO_BIN_EXE_jfconnect")))
}

/// True when the peer closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn ten_thousand_idle_connections_stay_within_32_mib_and_a_real_request_is_answered_throughout() {
    // This process holds one descriptor per connection; serve raises its own limit.
    let limit = raise_fd_limit();
    let n = 10_000usize.min(limit.saturating_sub(300) as usize);
    assert!(
        n >= 5_000,
        "the open-file limit ({limit}) is too low for this test"
    );
    // The default cap (4096); a long head timeout keeps every idle connection until the cap
    // closes it, however slowly a loaded machine accepts.
    let server = Server::start("    header_read_timeout: 10m\n", "");
    let started = Instant::now();
    let mut idle = Vec::with_capacity(n);
    let (base_rss, base_anon) = (server.rss_kib(), server.anon_kib());
    let (mut peak_rss, mut peak_anon) = (base_rss, base_anon);
    let mut answered = 0;
    for i in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", server.port))
            .unwrap_or_else(|e| panic!("connection {i} refused: {e}"));
        // Half say nothing; half start a request head and stop (two bytes).
        if i % 2 == 1 {
            let _ = s.write_all(b"GE");
        }
        idle.push(s);
        if i % 500 == 499 {
            assert_eq!(
                server
                    .request("GET", "/api/v1/jobs", Some(TOKEN))
                    .as_deref(),
                Some("200"),
                "no answer with {} idle connections opened",
                i + 1
            );
            answered += 1;
            peak_rss = peak_rss.max(server.rss_kib());
            peak_anon = peak_anon.max(server.anon_kib());
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    peak_rss = peak_rss.max(server.rss_kib());
    peak_anon = peak_anon.max(server.anon_kib());
    assert_eq!(
        server
            .request("GET", "/api/v1/jobs", Some(TOKEN))
            .as_deref(),
        Some("200")
    );
    let fds = server.open_fds();
    eprintln!(
        "{n} idle connections in {:?}: serve's RSS {base_rss} KiB idle, peak {peak_rss} KiB; its own (anonymous) memory {base_anon} KiB idle, peak {peak_anon} KiB; {fds} descriptors open; {answered} requests answered on the way",
        started.elapsed()
    );
    assert!(
        peak_anon <= 32 * 1024,
        "serve's own memory reached {peak_anon} KiB with {n} idle connections"
    );
    if std::env::var_os(RELEASE_BIN_ENV).is_some() {
        // A release binary's whole RSS (its file pages included) is held to the aim itself.
        assert!(
            peak_rss <= 32 * 1024,
            "serve's RSS reached {peak_rss} KiB with {n} idle connections"
        );
    }
    assert!(
        peak_rss - base_rss <= 16 * 1024,
        "serve's RSS grew by {} KiB with {n} idle connections",
        peak_rss - base_rss
    );
    assert!(
        fds <= 4096 + 64,
        "{fds} descriptors open: the cap did not hold"
    );
    assert!(
        server
            .log()
            .contains("jfconnect.api.max_connections (4096) reached"),
        "{}",
        server.log()
    );
    drop(idle);
}

#[test]
fn at_the_connection_cap_waiting_connections_make_room_and_it_is_logged() {
    let server = Server::start("    max_connections: 50\n", "");
    let mut idle: Vec<TcpStream> = (0..200).map(|_| server.connect()).collect();
    for s in &mut idle {
        let _ = s.write_all(b"G");
    }
    assert_eq!(
        server
            .request("GET", "/api/v1/jobs", Some(TOKEN))
            .as_deref(),
        Some("200")
    );
    assert!(server.open_fds() < 50 + 40, "{} fds", server.open_fds());
    let log = server.log();
    assert!(
        log.contains("jfconnect.api.max_connections (50) reached"),
        "{log}"
    );
}

#[test]
fn slowloris_silent_and_idle_keep_alive_connections_are_cut_at_their_timeouts() {
    let server = Server::start("    header_read_timeout: 2s\n    idle_timeout: 1s\n", "");
    let mut silent = server.connect();
    // Slowloris: a byte of the head every 200 ms, never silent for long.
    let mut slow = server.connect();
    let head = b"GET /api/v1/system/ping HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let start = Instant::now();
    let mut cut_after = None;
    for b in head.iter().take(60) {
        if slow.write_all(&[*b]).is_err() || closed_within(&mut slow, Duration::from_millis(200)) {
            cut_after = Some(start.elapsed());
            break;
        }
    }
    let cut = cut_after.expect("a slowloris head was never cut");
    assert!(
        cut >= Duration::from_millis(1500) && cut < Duration::from_secs(5),
        "slowloris cut after {cut:?}"
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)),
        "a silent connection stayed open"
    );
    // Keep-alive idle: one complete request, then silence.
    let mut kept = server.connect();
    kept.write_all(b"GET /api/v1/system/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    let n = kept.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let idle_from = Instant::now();
    assert!(
        closed_within(&mut kept, Duration::from_secs(4)),
        "an idle keep-alive connection stayed open"
    );
    assert!(idle_from.elapsed() >= Duration::from_millis(800));
}

#[test]
fn header_floods_and_long_request_lines_are_refused() {
    let server = Server::start("", "");
    let big_header = format!(
        "GET /api/v1/system/ping HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    assert_eq!(server.raw(big_header.as_bytes()).as_deref(), Some("431"));
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /api/v1/system/ping HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_eq!(server.raw(many.as_bytes()).as_deref(), Some("431"));
    let target = format!(
        "GET /api/v1/system/ping?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "q".repeat(10 * 1024)
    );
    assert_eq!(server.raw(target.as_bytes()).as_deref(), Some("414"));
    // A head of a megabyte is cut long before it ends; memory does not follow it.
    let before = server.rss_kib();
    let mut s = server.connect();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Flood: ");
    let mut sent = 0usize;
    let chunk = [b'a'; 16 * 1024];
    while sent < 1024 * 1024 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(server.rss_kib() < before + 4 * 1024);
    assert_eq!(
        server
            .request("GET", "/api/v1/system/ping", None)
            .as_deref(),
        Some("200")
    );
}

#[test]
fn the_grpc_port_closes_silent_connections_at_the_header_timeout_and_caps_connections() {
    let grpc = free_port();
    let server = Server::start(
        "    header_read_timeout: 1s\n    max_connections: 20\n",
        &format!("  grpc:\n    port: {grpc}\n"),
    );
    let mut silent = server.connect_to(grpc);
    let start = Instant::now();
    assert!(
        closed_within(&mut silent, Duration::from_secs(4)),
        "a silent gRPC connection stayed open"
    );
    assert!(start.elapsed() >= Duration::from_millis(800));
    let held: Vec<TcpStream> = (0..60).map(|_| server.connect_to(grpc)).collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.open_fds() < 20 + 40,
        "{} descriptors open",
        server.open_fds()
    );
    assert!(server.log().contains("connection cap"), "{}", server.log());
    drop(held);
}
