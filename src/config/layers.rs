//! Layering: the file's `jfconnect:` tree, the `JF_JFCONNECT_*` variables laid over it, then one
//! typed deserialization whose errors name the key.

use super::keys::{by_env, Kind, Section};
use super::{ConfigError, ProcessEnv, ENV_PREFIX};
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where each key's value came from: the environment, a line of the file, or the default.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Full key (`jfconnect.usage.interval`) to the variable that set it.
    from_env: HashMap<String, String>,
    /// The file read, if any.
    file: Option<PathBuf>,
    /// Full key to the line of the file that sets it.
    lines: HashMap<String, usize>,
}

/// Where one key's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// A line of the config file.
    File(PathBuf, usize),
    /// An environment variable.
    Env(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path, line) => write!(f, "{}:{line}", path.display()),
            Source::Env(name) => write!(f, "variable {name}"),
        }
    }
}

impl Sources {
    /// Where the value of `full_key` (e.g. `jfconnect.usage.interval`) came from.
    pub fn source(&self, full_key: &str) -> Source {
        if let Some(var) = self.from_env.get(full_key) {
            return Source::Env(var.clone());
        }
        match (&self.file, self.lines.get(full_key)) {
            (Some(file), Some(line)) => Source::File(file.clone(), *line),
            _ => Source::Default,
        }
    }

    /// A refusal of `full_key`, naming the variable when the value came from the environment.
    pub(crate) fn error(&self, full_key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            key: full_key.to_string(),
            env: self.from_env.get(full_key).cloned(),
            reason: reason.into(),
        }
    }
}

/// The merged trees of the sections jfconnect reads, and where their values came from.
pub(crate) struct Layered {
    pub(crate) jfconnect: Value,
    pub(crate) shared: Value,
    pub(crate) sources: Sources,
    /// Other services' top-level sections, ignored.
    pub(crate) ignored: Vec<String>,
}

/// Reads the file (if any), keeps its `jfconnect:` and `shared:` trees, then lays the
/// environment over them.
pub(crate) fn layered_tree(file: Option<&Path>, env: &ProcessEnv) -> Result<Layered, ConfigError> {
    let mut layered = match file {
        Some(path) => file_trees(path)?,
        None => Layered {
            jfconnect: Value::Mapping(Mapping::new()),
            shared: Value::Mapping(Mapping::new()),
            sources: Sources::default(),
            ignored: Vec::new(),
        },
    };
    for (name, value) in env.overrides() {
        let Some(key) = by_env(name) else {
            if !name.starts_with(ENV_PREFIX) {
                // `JF_SHARED_*` variables jfconnect does not read belong to other services.
                continue;
            }
            let key = format!(
                "jfconnect.{}",
                name.trim_start_matches(ENV_PREFIX).to_lowercase()
            );
            // A variable name cannot tell `_` in a key from the dot between keys: the nearest
            // key is looked for with every `_` read as a dot too.
            let reason = match super::keys::nearest_key(&key)
                .or_else(|| super::keys::nearest_key(&key.replace('_', ".")))
            {
                Some(near) => format!(
                    "no such setting (did you mean {near}, {}?); {}",
                    super::env_name(near.trim_start_matches("jfconnect.")),
                    super::keys::README_KEYS
                ),
                None => format!("no such setting; {}", super::keys::README_KEYS),
            };
            return Err(ConfigError::Key {
                key,
                env: Some(name.clone()),
                reason,
            });
        };
        let v = env_value(value, key.kind);
        let tree = match key.section {
            Section::Jfconnect => &mut layered.jfconnect,
            Section::Shared => &mut layered.shared,
        };
        set_path(tree, &key.path, v);
        layered.sources.from_env.insert(key.full(), name.clone());
    }
    Ok(layered)
}

fn file_trees(path: &Path) -> Result<Layered, ConfigError> {
    let text =
        crate::secret::read_limited_text(path, crate::secret::MAX_TEXT_FILE).map_err(|e| {
            ConfigError::Unreadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
    let syntax = |reason: String| ConfigError::Syntax {
        path: path.to_path_buf(),
        reason,
    };
    super::shape::check(&text).map_err(syntax)?;
    let doc: Value = serde_yaml::from_str(&text).map_err(|e| syntax(e.to_string()))?;
    let mut top = match doc {
        Value::Null => Mapping::new(),
        Value::Mapping(m) => m,
        _ => {
            return Err(syntax(
                "the top level must be a mapping with `jfconnect:`".into(),
            ))
        }
    };
    let section = |top: &mut Mapping, name: &str| match top.shift_remove(name) {
        None | Some(Value::Null) => Ok(Value::Mapping(Mapping::new())),
        Some(v @ Value::Mapping(_)) => Ok(v),
        Some(_) => Err(syntax(format!("`{name}:` must hold a mapping of keys"))),
    };
    let jfconnect = section(&mut top, "jfconnect")?;
    let shared = section(&mut top, "shared")?;
    let ignored: Vec<String> = top.keys().map(yaml_key).collect();
    Ok(Layered {
        jfconnect,
        shared,
        sources: Sources {
            from_env: HashMap::new(),
            file: Some(path.to_path_buf()),
            lines: key_lines(&text),
        },
        ignored,
    })
}

/// The line (1-based) of every `key:` of a block-style YAML text, by full dotted path. Keys
/// written in flow style (`{a: 1}`) are not found; their source shows as the file without a
/// line only through the value itself.
fn key_lines(text: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let body = line.trim_start();
        if body.is_empty()
            || body.starts_with('#')
            || body.starts_with('-')
            || body.starts_with("---")
        {
            continue;
        }
        let indent = line.len() - body.len();
        let Some((key, _)) = body.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let mut path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        path.push(key);
        out.insert(path.join("."), n + 1);
        stack.push((indent, key.to_string()));
    }
    out
}

fn yaml_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

/// A variable's text as the YAML value of a key of `kind`; what it cannot read stays text, for
/// `kinds::check` to refuse with the key's sentence.
fn env_value(s: &str, kind: Kind) -> Value {
    let text = || Value::String(s.to_string());
    match kind {
        Kind::Text => text(),
        Kind::Bool => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::Bool(true),
            "false" | "0" | "no" => Value::Bool(false),
            _ => text(),
        },
        Kind::Number => s
            .trim()
            .parse::<u64>()
            .map(|n| Value::Number(n.into()))
            .unwrap_or_else(|_| text()),
        Kind::List => Value::Sequence(
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| Value::String(p.to_string()))
                .collect(),
        ),
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

/// The typed section `T` from its merged tree, before validation; errors name the full key.
pub(crate) fn deserialize<T: DeserializeOwned>(
    section: Section,
    tree: Value,
    sources: &Sources,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize::<_, T>(tree).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_yaml appends its own location, which points into a tree we built.
        let reason = inner
            .split(" at line ")
            .next()
            .unwrap_or(&inner)
            .to_string();
        let (key, unknown) = match unknown_field(&reason) {
            // serde_path_to_error points at the field itself for unknown fields.
            Some(field) if path == "." || path.is_empty() => (field.to_string(), Some(field)),
            Some(field) => (path, Some(field)),
            None => (path, None),
        };
        let full = format!("{}.{}", section.name(), key.trim_start_matches('.'));
        let reason = match (unknown, unknown_variant(&reason)) {
            (Some(field), _) => super::keys::unknown_key(&full, &format!("unknown key `{field}`")),
            (None, Some((given, choices))) => {
                format!("must be one of {choices}, not {given:?}")
            }
            (None, None) => reason,
        };
        sources.error(&full, reason)
    })
}

/// serde's "unknown variant `x`, expected `a` or `b`" (or "one of `a`, `b`, `c`") as the value
/// given and the choices, `a, b`.
fn unknown_variant(reason: &str) -> Option<(&str, String)> {
    let rest = reason.strip_prefix("unknown variant `")?;
    let (given, rest) = rest.split_once('`')?;
    let expected = rest.split_once("expected ")?.1;
    let choices: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    Some((given, choices.join(", ")))
}

fn unknown_field(reason: &str) -> Option<&str> {
    let rest = reason.strip_prefix("unknown field `")?;
    rest.split('`').next()
}
