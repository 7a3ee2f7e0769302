//! A real PostgreSQL for the high-availability tests: `initdb` and `pg_ctl` from Debian's
//! `postgresql` package in a temp folder, on a free loopback port, with a password (so the
//! password path of jfconnect's client is exercised too).
//!
//! CI runs as root and PostgreSQL refuses to run as root, so as root the server runs as the
//! `postgres` system user (made by the Debian package) through `runuser`. Every wait is bounded.
//! A server is stopped and its folder removed when its handle drops; a watchdog shell also stops
//! it when the test process dies, so a per-binary server kept in a `static` does not outlive
//! the binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The superuser's password in every test server.
pub const PASSWORD: &str = "jfconnect-test-pw";
/// The superuser.
pub const USER: &str = "postgres";

/// A running test server.
pub struct PgServer {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
}

static SHARED: OnceLock<PgServer> = OnceLock::new();

/// The server shared by every test of one test binary (started on first use). Each test makes
/// its own database in it with [`PgServer::fresh_database`].
pub fn shared() -> &'static PgServer {
    SHARED.get_or_init(PgServer::start)
}

fn bin_dir() -> PathBuf {
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").is_file() && p.join("pg_ctl").is_file())
    }) {
        return found;
    }
    // Debian keeps the server programs out of PATH, one folder per major version.
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("initdb").is_file());
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().expect(
        "PostgreSQL is not installed: run scripts/install-test-tools (Debian package postgresql)",
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgServer {
    /// Starts a new server of its own (for tests that stop or restart it).
    pub fn start() -> PgServer {
        let bin = bin_dir();
        let run_as = is_root().then(|| USER.to_string());
        let dir = tempfile::Builder::new()
            .prefix("jfconnect-pg-")
            .tempdir()
            .expect("temp folder")
            .keep();
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("write password file");
        if let Some(user) = &run_as {
            let status = Command::new("chown")
                .args([
                    "-R",
                    &format!("{user}:"),
                    dir.to_str().expect("utf-8 temp path"),
                ])
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the test database folder failed");
        }
        let server = PgServer {
            port: 0,
            dir,
            bin,
            run_as,
        };
        let data = server.data_dir();
        server.run(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-U",
                USER,
                "--auth=scram-sha-256",
                "--pwfile",
                pwfile.to_str().expect("utf-8 path"),
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let mut server = server;
        // A free port can be taken between the probe and the bind: try a few.
        for attempt in 0..3 {
            server.port = crate::process_support::free_port();
            if server.try_start() {
                server.spawn_watchdog();
                return server;
            }
            eprintln!(
                "test PostgreSQL did not start on port {} (try {attempt})",
                server.port
            );
        }
        panic!(
            "test PostgreSQL did not start; see {}",
            server.dir.join("log").display()
        );
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // fsync=off loses nothing when only PostgreSQL stops (the kernel keeps the writes), which
    // is what the restart tests do; synchronous_commit stays on so a commit is in the WAL.
    fn try_start(&self) -> bool {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let data = self.data_dir();
        let log = self.dir.join("log");
        self.command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(&opts)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Stops the server the way a crash or a failover would (`pg_ctl stop -m immediate`).
    pub fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-t", "30", "-D"])
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Starts a stopped server again on the same port.
    pub fn restart(&self) {
        assert!(self.try_start(), "test PostgreSQL did not start again");
    }

    // Stops the server and removes its folder once this process is gone, however it ended.
    fn spawn_watchdog(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             pid=$(head -n1 '{dir}/data/postmaster.pid' 2>/dev/null); \
             [ -n \"$pid\" ] && kill -QUIT \"$pid\" 2>/dev/null; sleep 2; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// A `postgres://` URL for `database` with the superuser's name (no password in it).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://127.0.0.1:{}/{database}", self.port)
    }

    /// The same in JDBC form, as JFrog's `system.yaml` writes it.
    pub fn jdbc_url(&self, database: &str) -> String {
        format!("jdbc:postgresql://127.0.0.1:{}/{database}", self.port)
    }

    /// Makes an empty database with a unique name and returns the name.
    pub fn fresh_database(&self) -> String {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Runs one SQL command with `psql` as the superuser; panics with its output on failure.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let psql = if self.bin.join("psql").exists() {
            self.bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        let out = Command::new(psql)
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
            ])
            .arg(self.port.to_string())
            .args(["-U", USER, "-d", database, "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .expect("cannot run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Restarts the server with TLS on (`ssl = on`) under the PEM certificate chain and key
    /// given; plain connections are still accepted, so the client's sslmode decides.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        self.stop();
        let data = self.data_dir();
        std::fs::write(data.join("server.crt"), cert_pem).expect("write server.crt");
        std::fs::write(data.join("server.key"), key_pem).expect("write server.key");
        // PostgreSQL refuses a key others can read.
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod server.key");
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).expect("read conf");
        conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(data.join("postgresql.conf"), conf).expect("write conf");
        if let Some(user) = &self.run_as {
            for f in ["server.crt", "server.key", "postgresql.conf"] {
                let status = Command::new("chown")
                    .arg(format!("{user}:"))
                    .arg(data.join(f))
                    .status()
                    .expect("chown");
                assert!(status.success(), "chown {f} failed");
            }
        }
        self.restart();
    }

    /// The server's folder (its log is `log` in it).
    pub fn folder(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
