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
    assert_eq!(c.usage_interval, Duration::from_secs(86400));
    assert_eq!(c.archival_repo, "jfrog-usage-logs");
    assert_eq!(
        c.usage_spool_dir,
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
    assert_eq!(c.usage_interval, Duration::from_secs(900));
    let c = Config::load_from(
        Some(&f),
        &env(&[
            ("JF_JFCONNECT_USAGE_SPOOL_DIR", "/from/env"),
            ("JF_JFCONNECT_PORT", "9100"),
        ]),
    )
    .unwrap();
    assert_eq!(c.usage_spool_dir, PathBuf::from("/from/env"));
    assert_eq!(c.port, 9100);
    assert_eq!(c.usage_interval, Duration::from_secs(900));
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
    assert_eq!(c.jpd_token.as_ref().unwrap().expose(), "s3cr3t-token");
    assert!(!format!("{c:?}").contains("s3cr3t"));
}

#[test]
fn top_level_must_be_jfconnect() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(&dir, "shared:\n  x: 1\n");
    assert!(matches!(
        Config::load_from(Some(&f), &env(&[])),
        Err(ConfigError::Syntax { .. })
    ));
    let f = file(&dir, "jfconnect: [1, 2\n");
    assert!(matches!(
        Config::load_from(Some(&f), &env(&[])),
        Err(ConfigError::Syntax { .. })
    ));
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
    assert_eq!(c.airgap_vendor_public_keys, vec![a, b]);
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
