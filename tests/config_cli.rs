//! The configuration at the binary's edge: a real JPD system.yaml, the lookup without
//! `--config`, `config check [--show]`, and `status` naming the config file and data folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn jfconnect(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jfconnect"));
    c.current_dir(dir)
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("JFCONNECT_CONFIG")
        .env_remove("JFROG_HOME");
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A JPD's system.yaml with jfconnect's section, other services' sections and shared keys.
fn system_yaml(dir: &Path) -> PathBuf {
    let p = dir.join("system.yaml");
    std::fs::write(
        &p,
        format!(
            "shared:\n  node:\n    id: node-a\n    ip: 10.0.0.1\n  database:\n    password: pw-in-file\n\
             artifactory:\n  port: 8081\nrouter:\n  entrypoints:\n    externalPort: 8082\n\
             jfconnect:\n  data_dir: {}\n  port: 9031\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn config_check_accepts_a_jpd_system_yaml_and_shows_each_source() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = system_yaml(dir.path());
    let out = jfconnect(dir.path())
        .arg("--config")
        .arg(&cfg)
        .args(["config", "check", "--show"])
        .env("JF_JFCONNECT_USAGE_INTERVAL", "2h")
        .env("JF_SHARED_EXTRAJAVAOPTS", "-Xmx1g")
        .env("JFCONNECT_LOG", "jfconnect=debug")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("ignoring other services' sections")
            && stderr.contains("artifactory, router"),
        "a debug line names the ignored sections: {stderr}"
    );
    assert!(
        stdout.contains(&format!("{} (from --config)", cfg.display())),
        "{stdout}"
    );
    let row = |key: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no row for {key}:\n{stdout}"))
            .to_string()
    };
    assert!(row("jfconnect.port").contains("9031"));
    assert!(
        row("jfconnect.port").ends_with(&format!("{}:14", cfg.display())),
        "{stdout}"
    );
    assert!(row("jfconnect.usage.interval").ends_with("variable JF_JFCONNECT_USAGE_INTERVAL"));
    assert!(row("jfconnect.retry.max").ends_with("default"));
    assert!(row("shared.node.id").contains("node-a"));
    assert!(row("shared.database.password").contains("***"));
    assert!(!stdout.contains("pw-in-file"), "{stdout}");
    assert!(
        !dir.path().join("data").exists(),
        "config check creates nothing"
    );
}

#[test]
fn config_check_refuses_a_bad_key_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("system.yaml");
    std::fs::write(&cfg, "artifactory:\n  port: 1\njfconnect:\n  prot: 1\n").unwrap();
    let out = jfconnect(dir.path())
        .arg("--config")
        .arg(&cfg)
        .args(["config", "check"])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("jfconnect.prot"), "{stderr}");
}

#[test]
fn without_config_the_file_comes_from_jfconnect_config_then_jfrog_home() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = system_yaml(dir.path());
    let out = jfconnect(dir.path())
        .env("JFCONNECT_CONFIG", &cfg)
        .args(["config", "check"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!("{} (from $JFCONNECT_CONFIG)", cfg.display())),
        "{stdout}"
    );

    let home = dir.path().join("jfrog");
    let etc = home.join("jfconnect/var/etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::copy(&cfg, etc.join("system.yaml")).unwrap();
    let out = jfconnect(dir.path())
        .env("JFROG_HOME", &home)
        .args(["config", "check"])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(&format!(
            "{} (from $JFROG_HOME)",
            etc.join("system.yaml").display()
        )),
        "{stdout}"
    );

    let out = jfconnect(dir.path())
        .args(["config", "check"])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert!(stdout.contains("config file none"), "{stdout}");
    assert!(stdout.contains("data folder jfconnect-data"), "{stdout}");
}

#[test]
fn status_names_the_config_file_and_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = system_yaml(dir.path());
    let out = jfconnect(dir.path())
        .env("JFCONNECT_CONFIG", &cfg)
        .arg("status")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "config file    {} (from $JFCONNECT_CONFIG)",
            cfg.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "data folder    {}",
            dir.path().join("data").display()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("node           node-a"), "{stdout}");
}

#[test]
fn admin_token_file_from_the_environment_must_differ_from_the_api_token() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = system_yaml(dir.path());
    std::fs::write(dir.path().join("read.token"), "same-token-in-both\n").unwrap();
    std::fs::write(dir.path().join("admin.token"), "same-token-in-both").unwrap();
    // Both token files named by the environment, as an operator's unit file would.
    let check = |args: &[&str]| {
        jfconnect(dir.path())
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .env("JF_JFCONNECT_API_TOKEN_FILE", dir.path().join("read.token"))
            .env(
                "JF_JFCONNECT_API_ADMIN_TOKEN_FILE",
                dir.path().join("admin.token"),
            )
            .output()
            .unwrap()
    };
    let out = check(&["config", "check"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("jfconnect.api.admin_token_file")
            && stderr.contains("JF_JFCONNECT_API_ADMIN_TOKEN_FILE")
            && stderr.contains("give the admin scope its own token"),
        "{stderr}"
    );
    assert!(!stderr.contains("same-token-in-both"), "{stderr}");
    std::fs::write(dir.path().join("admin.token"), "another-token").unwrap();
    let out = check(&["config", "check", "--show"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.lines().any(|l| l.contains("api.admin_token_file")
            && l.contains("variable JF_JFCONNECT_API_ADMIN_TOKEN_FILE")),
        "{stdout}"
    );
}

#[test]
fn deeply_nested_and_alias_bomb_configs_are_refused_at_once_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("deep.yaml");
    // 100,000 levels in 200 KB: the YAML parser alone took over a minute on it.
    std::fs::write(
        &deep,
        format!(
            "jfconnect:\n  x: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    )
    .unwrap();
    let mut bomb =
        String::from("jfconnect:\n  port: 8030\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let laughs = dir.path().join("laughs.yaml");
    std::fs::write(&laughs, bomb).unwrap();
    for (file, sentence) in [
        (&deep, "nests more than 64 levels deep"),
        (&laughs, "once its aliases (*name) are expanded"),
    ] {
        let started = std::time::Instant::now();
        let out = jfconnect(dir.path())
            .arg("--config")
            .arg(file)
            .args(["config", "check"])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
        assert!(stderr.contains(sentence), "{stderr}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
}
