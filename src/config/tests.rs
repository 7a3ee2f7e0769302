use super::keys::shared_keys;
use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(dir: &tempfile::TempDir, yaml: &str) -> PathBuf {
    let p = dir.path().join("system.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

fn key_error(r: Result<Config, ConfigError>) -> (String, Option<String>, String) {
    match r {
        Err(ConfigError::Key { key, env, reason }) => (key, env, reason),
        other => panic!("expected a key error, got {other:?}"),
    }
}

#[test]
fn defaults_apply_without_file_or_environment() {
    let c = Config::load_from(None, &env(&[])).unwrap();
    assert!(c.enabled);
    assert_eq!(c.port, 8030);
    assert_eq!(c.usage.interval, Duration::from_secs(86400));
    assert_eq!(c.archival.repo, "jfrog-usage-logs");
    assert_eq!(
        c.usage.spool_dir,
        PathBuf::from("jfconnect-data/usage/spool")
    );
}

#[test]
fn file_overrides_defaults_and_environment_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(
        &dir,
        "jfconnect:\n  port: 9000\n  usage:\n    interval: 15m\n    spool_dir: /from/file\n",
    );
    let c = Config::load_from(Some(&f), &env(&[])).unwrap();
    assert_eq!(c.port, 9000);
    assert_eq!(c.usage.interval, Duration::from_secs(900));
    let c = Config::load_from(
        Some(&f),
        &env(&[
            ("JF_JFCONNECT_USAGE_SPOOL_DIR", "/from/env"),
            ("JF_JFCONNECT_PORT", "9100"),
        ]),
    )
    .unwrap();
    assert_eq!(c.usage.spool_dir, PathBuf::from("/from/env"));
    assert_eq!(c.port, 9100);
    assert_eq!(c.usage.interval, Duration::from_secs(900));
}

#[test]
fn env_names_join_the_path_in_upper_case() {
    assert_eq!(env_name("usage.spool_dir"), "JF_JFCONNECT_USAGE_SPOOL_DIR");
    assert_eq!(env_name("jes.url"), "JF_JFCONNECT_JES_URL");
}

#[test]
fn unknown_key_in_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(&dir, "jfconnect:\n  usage:\n    spool_dri: /x\n");
    let (key, env, reason) = key_error(Config::load_from(Some(&f), &env(&[])));
    assert_eq!(key, "jfconnect.usage.spool_dri");
    assert_eq!(env, None);
    assert!(reason.contains("unknown key"), "{reason}");
}

#[test]
fn unknown_environment_variable_is_refused_by_name() {
    let (_, env, _) = key_error(Config::load_from(None, &env(&[("JF_JFCONNECT_NOPE", "1")])));
    assert_eq!(env.as_deref(), Some("JF_JFCONNECT_NOPE"));
}

#[test]
fn wrong_type_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(&dir, "jfconnect:\n  port: eighty\n");
    let (key, _, _) = key_error(Config::load_from(Some(&f), &env(&[])));
    assert_eq!(key, "jfconnect.port");
}

#[test]
fn bad_interval_from_environment_names_the_variable() {
    let err = Config::load_from(None, &env(&[("JF_JFCONNECT_USAGE_INTERVAL", "5x")])).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("jfconnect.usage.interval"), "{text}");
    assert!(text.contains("JF_JFCONNECT_USAGE_INTERVAL"), "{text}");
    assert!(text.contains("30s, 15m, 24h"), "{text}");
}

#[test]
fn bad_boolean_from_environment_is_refused() {
    let (key, env, _) = key_error(Config::load_from(
        None,
        &env(&[("JF_JFCONNECT_ENABLED", "maybe")]),
    ));
    assert_eq!(key, "jfconnect.enabled");
    assert_eq!(env.as_deref(), Some("JF_JFCONNECT_ENABLED"));
}

#[test]
fn bad_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(&dir, "jfconnect:\n  jes:\n    url: not a url\n");
    let (key, _, _) = key_error(Config::load_from(Some(&f), &env(&[])));
    assert_eq!(key, "jfconnect.jes.url");
    let (key, _, reason) = key_error(Config::load_from(
        None,
        &env(&[("JF_JFCONNECT_JCS_URL", "ftp://x")]),
    ));
    assert_eq!(key, "jfconnect.jcs.url");
    assert!(reason.contains("http"), "{reason}");
}

#[test]
fn unreadable_secret_file_is_refused() {
    let (key, _, reason) = key_error(Config::load_from(
        None,
        &env(&[("JF_JFCONNECT_API_TOKEN_FILE", "/no/such/token")]),
    ));
    assert_eq!(key, "jfconnect.api.token_file");
    assert!(reason.contains("/no/such/token"), "{reason}");
    let (key, _, _) = key_error(Config::load_from(
        None,
        &env(&[("JF_JFCONNECT_LICENSE_FILE", "/no/such/license")]),
    ));
    assert_eq!(key, "jfconnect.license.file");
}

#[test]
fn secrets_are_read_from_files_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    std::fs::write(&tok, "s3cr3t-token\n").unwrap();
    let c = Config::load_from(
        None,
        &env(&[("JF_JFCONNECT_JPD_TOKEN_FILE", tok.to_str().unwrap())]),
    )
    .unwrap();
    assert_eq!(c.jpd.token.as_ref().unwrap().expose(), "s3cr3t-token");
    assert!(!format!("{c:?}").contains("s3cr3t"));
}

#[test]
fn top_level_must_be_a_mapping_of_sections() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(&dir, "- jfconnect\n");
    assert!(matches!(
        Config::load_from(Some(&f), &env(&[])),
        Err(ConfigError::Syntax { .. })
    ));
    let f = file(&dir, "jfconnect: [1, 2\n");
    assert!(matches!(
        Config::load_from(Some(&f), &env(&[])),
        Err(ConfigError::Syntax { .. })
    ));
    let f = file(&dir, "jfconnect: 5\n");
    assert!(matches!(
        Config::load_from(Some(&f), &env(&[])),
        Err(ConfigError::Syntax { .. })
    ));
}

/// The shape of a real JPD's system.yaml: other services' sections and shared keys jfconnect
/// does not read.
const JPD_SYSTEM_YAML: &str = "\
configVersion: 1
shared:
  node:
    id: art-node-1
    ip: 10.0.0.5
    haEnabled: false
  database:
    type: postgresql
    driver: org.postgresql.Driver
    url: jdbc:postgresql://db:5432/artifactory
    username: artifactory
    password: db-s3cret
  extraJavaOpts: -Xmx4g
  security:
    masterKeyFile: /opt/jfrog/var/etc/security/master.key
    joinKeyFile: /opt/jfrog/var/etc/security/join.key
artifactory:
  port: 8081
access:
  database:
    maxOpenConnections: 80
router:
  entrypoints:
    externalPort: 8082
jfconnect:
  port: 9030
  usage:
    interval: 1h
";

#[test]
fn a_jpd_system_yaml_is_read_with_other_sections_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(&dir, JPD_SYSTEM_YAML);
    let c = Config::load_from(Some(&f), &env(&[])).unwrap();
    assert_eq!(c.port, 9030);
    assert_eq!(c.usage.interval, Duration::from_secs(3600));
    assert_eq!(c.shared.node.id, "art-node-1");
    assert_eq!(c.shared.database.kind.as_deref(), Some("postgresql"));
    assert_eq!(
        c.shared.database.password.as_ref().map(|p| p.expose()),
        Some("db-s3cret")
    );
    assert_eq!(
        c.shared.security.master_key_file,
        Some(PathBuf::from("/opt/jfrog/var/etc/security/master.key"))
    );
    assert!(!format!("{c:?}").contains("db-s3cret"));
}

#[test]
fn unknown_keys_inside_jfconnect_stay_errors_beside_other_sections() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(&dir, &format!("{JPD_SYSTEM_YAML}  prot: 1\n"));
    let (key, _, reason) = key_error(Config::load_from(Some(&f), &env(&[])));
    assert_eq!(key, "jfconnect.prot");
    assert!(reason.contains("unknown key"), "{reason}");
}

#[test]
fn a_wrong_type_under_a_shared_key_jfconnect_reads_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(&dir, "shared:\n  node:\n    id: [1, 2]\n");
    let (key, _, _) = key_error(Config::load_from(Some(&f), &env(&[])));
    assert_eq!(key, "shared.node.id");
}

#[test]
fn node_id_comes_from_shared_then_its_variable_else_the_host_name() {
    let c = Config::load_from(None, &env(&[("HOSTNAME", "box-7")])).unwrap();
    assert_eq!(c.shared.node.id, "box-7");
    let c = Config::load_from(None, &env(&[])).unwrap();
    assert!(!c.shared.node.id.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let f = file(&dir, JPD_SYSTEM_YAML);
    let c = Config::load_from(
        Some(&f),
        &env(&[
            ("JF_SHARED_NODE_ID", "from-env"),
            ("JF_SHARED_NODE_IP", "1.2.3.4"),
        ]),
    )
    .unwrap();
    assert_eq!(c.shared.node.id, "from-env");
    assert_eq!(
        c.sources.source("shared.node.id"),
        Source::Env("JF_SHARED_NODE_ID".into())
    );
}

#[test]
fn unknown_shared_variables_are_ignored_but_unknown_jfconnect_ones_are_not() {
    assert!(Config::load_from(None, &env(&[("JF_SHARED_EXTRAJAVAOPTS", "-Xmx1g")])).is_ok());
    assert!(Config::load_from(None, &env(&[("JF_JFCONNECT_EXTRA", "1")])).is_err());
}

#[test]
fn sources_name_the_file_line_the_variable_or_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(&dir, JPD_SYSTEM_YAML);
    let c = Config::load_from(Some(&f), &env(&[("JF_JFCONNECT_BIND", "127.0.0.1")])).unwrap();
    assert_eq!(
        c.sources.source("jfconnect.port"),
        Source::File(f.clone(), 26)
    );
    assert_eq!(
        c.sources.source("jfconnect.usage.interval"),
        Source::File(f.clone(), 28)
    );
    assert_eq!(
        c.sources.source("shared.node.id"),
        Source::File(f.clone(), 4)
    );
    assert_eq!(
        c.sources.source("jfconnect.bind"),
        Source::Env("JF_JFCONNECT_BIND".into())
    );
    assert_eq!(c.sources.source("jfconnect.jes.url"), Source::Default);
    let shown = c.show();
    let line = |key: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("{key} missing from:\n{shown}"))
            .to_string()
    };
    assert!(line("jfconnect.port").contains("9030"), "{shown}");
    assert!(
        line("jfconnect.port").ends_with(&format!("{}:26", f.display())),
        "{shown}"
    );
    assert!(
        line("jfconnect.bind").ends_with("variable JF_JFCONNECT_BIND"),
        "{shown}"
    );
    assert!(line("jfconnect.jes.url").ends_with("default"), "{shown}");
    assert!(line("shared.database.password").contains("***"), "{shown}");
    assert!(!shown.contains("db-s3cret"), "{shown}");
}

#[test]
fn config_file_is_looked_up_when_not_given() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(&dir, "jfconnect:\n");
    let pe = |pairs: &[(&str, &str)]| ProcessEnv::from_vars(env(pairs));
    let given = ConfigFile::locate(Some(&f), &pe(&[("JFCONNECT_CONFIG", "/x")])).unwrap();
    assert_eq!(given.map(|g| g.found_by), Some("--config"));
    let by_env = ConfigFile::locate(None, &pe(&[("JFCONNECT_CONFIG", "/x/s.yaml")])).unwrap();
    assert_eq!(
        by_env,
        Some(ConfigFile {
            path: PathBuf::from("/x/s.yaml"),
            found_by: "$JFCONNECT_CONFIG"
        })
    );
    let home = dir.path().join("home");
    let etc = home.join("jfconnect/var/etc");
    let home_str = home.display().to_string();
    assert_eq!(
        ConfigFile::locate(None, &pe(&[("JFROG_HOME", &home_str)])).unwrap(),
        None,
        "no file under JFROG_HOME: defaults"
    );
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("system.yaml"), "jfconnect:\n").unwrap();
    let by_home = ConfigFile::locate(None, &pe(&[("JFROG_HOME", &home_str)])).unwrap();
    assert_eq!(by_home.map(|f| f.path), Some(etc.join("system.yaml")));
    assert_eq!(ConfigFile::locate(None, &pe(&[])).unwrap(), None);
}

#[test]
fn vendor_keys_list_comes_from_comma_separated_environment() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.pub");
    let b = dir.path().join("b.pub");
    std::fs::write(&a, "k").unwrap();
    std::fs::write(&b, "k").unwrap();
    let v = format!("{}, {}", a.display(), b.display());
    let c = Config::load_from(
        None,
        &env(&[("JF_JFCONNECT_AIRGAP_VENDOR_PUBLIC_KEYS", &v)]),
    )
    .unwrap();
    assert_eq!(c.airgap.vendor_public_keys, vec![a, b]);
}

#[test]
fn intervals_parse_units_and_refuse_nonsense() {
    assert_eq!(parse_interval("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_interval("15m").unwrap(), Duration::from_secs(900));
    assert_eq!(parse_interval("24h").unwrap(), Duration::from_secs(86400));
    assert_eq!(parse_interval("2d").unwrap(), Duration::from_secs(172800));
    for bad in [
        "",
        "0s",
        "h",
        "10",
        "1.5h",
        "-1h",
        "10w",
        "99999999999999999999h",
    ] {
        assert!(parse_interval(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn proxy_credentials_without_url_are_refused() {
    let (key, _, _) = key_error(Config::load_from(
        None,
        &env(&[("JF_JFCONNECT_PROXY_USERNAME", "bob")]),
    ));
    assert_eq!(key, "jfconnect.proxy.url");
}

#[test]
fn disabled_is_detected_even_when_other_keys_are_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(&dir, "jfconnect:\n  enabled: false\n  port: nonsense\n");
    let fallback = Config::disabled_fallback(Some(&f)).expect("disabled is detected");
    assert!(!fallback.enabled);
    assert!(Config::load_from(Some(&f), &env(&[])).is_err());
    let enabled = file(&dir, "jfconnect:\n  port: nonsense\n");
    assert!(Config::disabled_fallback(Some(&enabled)).is_none());
}

#[test]
fn every_field_is_a_key_with_its_environment_name() {
    let keys = keys();
    let find = |path: &str| keys.iter().find(|k| k.path == path);
    let spool = find("usage.spool_dir").expect("usage.spool_dir is a key");
    assert_eq!(spool.env, "JF_JFCONNECT_USAGE_SPOOL_DIR");
    assert_eq!(spool.kind, Kind::Text);
    assert_eq!(find("port").map(|k| k.kind), Some(Kind::Number));
    assert_eq!(find("airgap.enabled").map(|k| k.kind), Some(Kind::Bool));
    assert_eq!(
        find("airgap.vendor_public_keys").map(|k| k.kind),
        Some(Kind::List)
    );
    // Secrets read by validation are not keys; the files naming them are.
    assert!(find("api.token").is_none());
    assert!(find("api.token_file").is_some());
    for k in keys {
        assert_eq!(k.env, env_name(&k.path));
    }
}

/// The keys in README.md's configuration table (first column, `a`, `b` for shared rows).
fn readme_keys() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README.md has a Configuration section");
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| {
            let first = l.split('|').nth(1).unwrap_or_default().to_string();
            first
                .split(',')
                .map(|k| k.trim().trim_matches('`').to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn readme_key_table_lists_exactly_the_keys_of_the_typed_config() {
    let documented = readme_keys();
    let known: Vec<String> = keys()
        .iter()
        .map(|k| k.path.clone())
        .chain(shared_keys().iter().map(|k| k.full()))
        .collect();
    for k in &documented {
        assert!(
            known.contains(k),
            "README.md documents `{k}`, which is not a config key"
        );
    }
    for k in &known {
        assert!(
            documented.contains(k),
            "config key `{k}` is missing from README.md's table"
        );
    }
}

#[test]
fn every_documented_key_is_read_from_its_environment_variable() {
    // A key added to the table is settable through the variable derived from its path.
    let dir = tempfile::tempdir().unwrap();
    let readable = dir.path().join("f");
    std::fs::write(&readable, "x").unwrap();
    let defaults = serde_yaml::to_value(Config::default()).unwrap();
    for k in keys() {
        // The default, written as a variable, is a valid value; unset keys get one by kind.
        let value = match super::layers::lookup(&defaults, &k.path) {
            Some(serde_yaml::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(serde_yaml::Value::Number(n)) => n.to_string(),
            Some(serde_yaml::Value::Bool(b)) => b.to_string(),
            _ if k.path.ends_with("url") => "http://example.com/".into(),
            _ if k.path.starts_with("proxy.") => continue,
            // Set in pairs; tests/server_tls.rs sets both.
            _ if k.path.starts_with("tls.server.") => continue,
            _ => readable.display().to_string(),
        };
        let loaded = Config::load_from(None, &env(&[(k.env.as_str(), value.as_str())]));
        assert!(loaded.is_ok(), "{} ({}): {loaded:?}", k.path, k.env);
    }
}

#[test]
fn process_environment_for_other_parts_is_captured_at_load() {
    let c = Config::load_from(
        None,
        &env(&[
            ("HTTPS_PROXY", "http://user:pw@proxy:3128"),
            ("JFCONNECT_SPOOL_SETTLE_MS", "0"),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.env.var("HTTPS_PROXY").as_deref(),
        Some("http://user:pw@proxy:3128")
    );
    assert_eq!(c.env.spool_settle(), Some(Duration::ZERO));
    assert!(
        !format!("{c:?}").contains("pw@"),
        "the proxy password stays out of Debug"
    );
}

#[test]
fn lease_timing_defaults_and_a_renewal_not_shorter_than_the_ttl_is_refused() {
    let c = Config::load_from(None, &env(&[])).unwrap();
    assert_eq!(
        (c.ha.lease_ttl, c.ha.lease_renew),
        (Duration::from_secs(15), Duration::from_secs(5))
    );
    let c = Config::load_from(
        None,
        &env(&[
            ("JF_JFCONNECT_HA_LEASE_TTL", "4s"),
            ("JF_JFCONNECT_HA_LEASE_RENEW", "1s"),
        ]),
    )
    .unwrap();
    assert_eq!(c.ha.lease_ttl, Duration::from_secs(4));
    let (key, _, reason) = key_error(Config::load_from(
        None,
        &env(&[("JF_JFCONNECT_HA_LEASE_RENEW", "15s")]),
    ));
    assert_eq!(key, "jfconnect.ha.lease_renew");
    assert!(
        reason.contains("shorter than ha.lease_ttl (15s)"),
        "{reason}"
    );
}
