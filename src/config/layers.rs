//! Layering: the file's `jfconnect:` tree, the `JF_JFCONNECT_*` variables laid over it, then one
//! typed deserialization whose errors name the key.

use super::keys::{by_env, env_name, Kind};
use super::{Config, ConfigError, ProcessEnv, ENV_PREFIX};
use serde_yaml::{Mapping, Value};
use std::collections::HashSet;
use std::path::Path;

/// Where each key's value came from, for error messages.
#[derive(Debug, Default)]
pub(crate) struct Origins {
    /// Keys (paths under `jfconnect.`) whose value came from the environment.
    from_env: HashSet<String>,
}

impl Origins {
    /// A refusal of `key` (a path under `jfconnect.`), naming the variable when the value came
    /// from the environment.
    pub(crate) fn error(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            key: format!("jfconnect.{key}"),
            env: self.from_env.contains(key).then(|| env_name(key)),
            reason: reason.into(),
        }
    }
}

/// The merged tree under `jfconnect` and where its values came from.
pub(crate) struct Layered {
    pub(crate) tree: Value,
    pub(crate) origins: Origins,
}

/// Reads the file (if any) into a YAML tree under `jfconnect`, then lays the environment over it.
pub(crate) fn layered_tree(file: Option<&Path>, env: &ProcessEnv) -> Result<Layered, ConfigError> {
    let mut root = match file {
        Some(path) => file_tree(path)?,
        None => Value::Mapping(Mapping::new()),
    };
    let mut origins = Origins::default();
    for (name, value) in env.overrides() {
        let Some(key) = by_env(name) else {
            return Err(ConfigError::Key {
                key: name.trim_start_matches(ENV_PREFIX).to_lowercase(),
                env: Some(name.clone()),
                reason: "no such setting; see docs/configuration in README.md".into(),
            });
        };
        let v = env_value(value, key.kind).map_err(|reason| ConfigError::Key {
            key: format!("jfconnect.{}", key.path),
            env: Some(name.clone()),
            reason,
        })?;
        set_path(&mut root, &key.path, v);
        origins.from_env.insert(key.path.clone());
    }
    Ok(Layered {
        tree: root,
        origins,
    })
}

fn file_tree(path: &Path) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let syntax = |reason: String| ConfigError::Syntax {
        path: path.to_path_buf(),
        reason,
    };
    let doc: Value = serde_yaml::from_str(&text).map_err(|e| syntax(e.to_string()))?;
    match doc {
        Value::Null => Ok(Value::Mapping(Mapping::new())),
        Value::Mapping(mut m) => {
            let inner = m
                .remove("jfconnect")
                .ok_or_else(|| syntax("the top-level key must be `jfconnect:`".into()))?;
            if let Some((k, _)) = m.into_iter().next() {
                return Err(syntax(format!(
                    "unknown top-level key {}; only `jfconnect:` is read",
                    yaml_key(&k)
                )));
            }
            match inner {
                Value::Null => Ok(Value::Mapping(Mapping::new())),
                v @ Value::Mapping(_) => Ok(v),
                _ => Err(syntax("`jfconnect:` must hold a mapping of keys".into())),
            }
        }
        _ => Err(syntax(
            "the top level must be a mapping with `jfconnect:`".into(),
        )),
    }
}

fn yaml_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

fn env_value(s: &str, kind: Kind) -> Result<Value, String> {
    match kind {
        Kind::Text => Ok(Value::String(s.to_string())),
        Kind::Bool => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Value::Bool(true)),
            "false" | "0" | "no" => Ok(Value::Bool(false)),
            _ => Err(format!("{s:?} is not true or false")),
        },
        Kind::Number => s
            .trim()
            .parse::<u64>()
            .map(|n| Value::Number(n.into()))
            .map_err(|_| format!("{s:?} is not a whole number")),
        Kind::List => Ok(Value::Sequence(
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| Value::String(p.to_string()))
                .collect(),
        )),
    }
}

fn set_path(root: &mut Value, key: &str, value: Value) {
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !matches!(node, Value::Mapping(_)) {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else { return };
        let k = Value::String((*part).to_string());
        if i + 1 == parts.len() {
            map.insert(k, value);
            return;
        }
        node = map.entry(k).or_insert(Value::Mapping(Mapping::new()));
    }
}

/// The value at the dotted `key`, if the tree holds one.
pub(crate) fn lookup<'a>(root: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(root, |node, part| node.get(part))
}

/// The typed configuration from the merged tree, before validation.
pub(crate) fn deserialize(tree: Value, origins: &Origins) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize::<_, Config>(tree).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_yaml appends its own location, which points into a tree we built.
        let reason = inner
            .split(" at line ")
            .next()
            .unwrap_or(&inner)
            .to_string();
        let (key, reason) = match unknown_field(&reason) {
            // serde_path_to_error points at the field itself for unknown fields.
            Some(field) if path == "." || path.is_empty() => {
                (field.to_string(), format!("unknown key `{field}`"))
            }
            Some(field) => (path, format!("unknown key `{field}`")),
            None => (path, reason),
        };
        origins.error(key.trim_start_matches('.'), reason)
    })
}

fn unknown_field(reason: &str) -> Option<&str> {
    let rest = reason.strip_prefix("unknown field `")?;
    rest.split('`').next()
}
