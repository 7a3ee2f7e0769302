//! Shared by the tests that start the `jfconnect` binary as a process: a free loopback port
//! and a child that is killed when the test ends, pass or fail.

#![allow(dead_code)]

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A child process killed and reaped on drop.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Asks `GET path` of 127.0.0.1:`port` until it answers 200, for at most 20 s; answers the
/// whole answer (status line, headers, body). Panics naming the port when it never does.
pub fn wait_for_answer(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let _ = s.write_all(request.as_bytes());
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return answer;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("serve never answered {path} on port {port}");
}

/// Waits (bounded, 20 s) until `serve` on `port` answers its ping.
pub fn wait_for_ping(port: u16) {
    wait_for_answer(port, "/api/v1/system/ping");
}

/// Starts `command` (its output discarded) and SIGKILLs it after `delay` unless it ended
/// first; answers whether it was killed. The kill of the crash drills.
pub fn kill_after(command: &mut std::process::Command, delay: std::time::Duration) -> bool {
    run_or_kill(command, delay).is_none()
}

/// Starts `command` (its output discarded) and SIGKILLs it after `delay` unless it ended
/// first; answers how long it ran when it ended on its own, `None` when it was killed.
pub fn run_or_kill(
    command: &mut std::process::Command,
    delay: std::time::Duration,
) -> Option<std::time::Duration> {
    use std::process::Stdio;
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let start = std::time::Instant::now();
    while start.elapsed() < delay {
        if child
            .try_wait()
            .expect("the child can be waited for")
            .is_some()
        {
            return Some(start.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Sends SIGTERM and waits (bounded, 15 s; then kills it and panics) for the child to exit;
/// answers its exit code and how long it took.
pub fn sigterm_and_wait(child: &mut std::process::Child) -> (Option<i32>, std::time::Duration) {
    let t = std::time::Instant::now();
    let ok = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(ok.success());
    loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            return (status.code(), t.elapsed());
        }
        if t.elapsed() > std::time::Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not stop within 15 s of SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `jfconnect::server::serve` of an app in this process, on a free loopback port.
pub struct InProcess {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), jfconnect::app::AppError>>,
}

impl InProcess {
    /// Starts serving `app`; it answers as soon as this returns (the port is bound).
    pub async fn start(app: std::sync::Arc<jfconnect::app::App>) -> InProcess {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let base = format!("http://{}", listener.local_addr().expect("a bound address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(jfconnect::server::serve(app, listener, async move {
            let _ = stopped.await;
        }));
        InProcess { base, stop, task }
    }

    /// Stops it and waits (bounded, 15 s) for a clean end.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(std::time::Duration::from_secs(15), self.task)
            .await
            .expect("the server stopped within 15 s")
            .expect("the server task did not panic")
            .expect("the server ended without an error");
    }
}

/// Asks `POST /api/v1/jobs/{job}/run` of the service at `base` until a run starts (202): a 409
/// means a run (the first scheduled one) holds the job, and no answer means the service is
/// still starting. Bounded: 200 tries, 50 ms apart; panics if no run started.
pub async fn start_job_run(client: &reqwest::Client, base: &str, job: &str, token: &str) {
    let mut last = String::from("no answer");
    for _ in 0..200 {
        match client
            .post(format!("{base}/api/v1/jobs/{job}/run"))
            .bearer_auth(token)
            .send()
            .await
        {
            Ok(r) if r.status() == 202 => return,
            Ok(r) => {
                assert_eq!(r.status(), 409, "only a held job may refuse a run");
                last = "409".into();
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the {job} job never started (last answer: {last})");
}

/// Asks `probe` every 100 ms until it answers `Some`, for at most `limit`; `None` when it never
/// did.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    limit: std::time::Duration,
    mut probe: impl FnMut() -> F,
) -> Option<T> {
    tokio::time::timeout(limit, async {
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .ok()
}
