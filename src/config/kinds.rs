//! What each key's value must be, checked on the merged tree (file and environment alike)
//! before the typed pass, so that a wrong value is refused with a sentence about the key ("port
//! must be a number from 1 to 65535") instead of serde's words ("expected u16"). The kind of
//! each key comes from [`super::keys`]; nothing here is written per key but the ports' range.
//!
//! Unquoted YAML scalars given to a text key (`token_file: 1234`, `interval: 5`) are taken as
//! text, so the key's own parser judges them ("\"5\" has no unit").

use super::keys::{all_keys, Key, Kind, Section, README_KEYS};
use super::layers::{lookup, Sources};
use super::ConfigError;
use serde_yaml::Value;

/// The sentence for a port that is not one.
pub(crate) const PORT_RANGE: &str = "port must be a number from 1 to 65535";

/// Checks, and where harmless normalises, every value of `section` in `tree`.
pub(crate) fn check(
    section: Section,
    tree: &mut Value,
    sources: &Sources,
) -> Result<(), ConfigError> {
    for key in all_keys().filter(|k| k.section == section) {
        check_parents(key, tree, sources)?;
        let Some(value) = lookup_mut(tree, &key.path) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        if let Some(reason) = check_value(key, value) {
            return Err(sources.error(&key.full(), reason));
        }
    }
    Ok(())
}

/// A section (`jes:`) given a single value instead of its keys.
fn check_parents(key: &Key, tree: &Value, sources: &Sources) -> Result<(), ConfigError> {
    let parts: Vec<&str> = key.path.split('.').collect();
    for i in 1..parts.len() {
        let parent = parts[..i].join(".");
        match lookup(tree, &parent) {
            None | Some(Value::Null) | Some(Value::Mapping(_)) => {}
            Some(other) => {
                return Err(sources.error(
                    &format!("{}.{parent}", section_name(key)),
                    format!(
                        "is a section holding keys such as {}, not the value {}; {README_KEYS}",
                        key.full(),
                        shown(other)
                    ),
                ))
            }
        }
    }
    Ok(())
}

fn section_name(key: &Key) -> &'static str {
    key.section.name()
}

/// What is wrong with `value` for `key`, after normalising what can be read unambiguously.
fn check_value(key: &Key, value: &mut Value) -> Option<String> {
    match key.kind {
        Kind::Bool => {
            (!value.is_bool()).then(|| format!("must be true or false, not {}", shown(value)))
        }
        Kind::Number => {
            let n = whole_number(value);
            if key.path == "port" || key.path.ends_with(".port") {
                match n {
                    Some(p @ 1..=65535) => *value = Value::Number(p.into()),
                    _ => return Some(format!("{PORT_RANGE}, not {}", shown(value))),
                }
            } else {
                match n {
                    Some(n) => *value = Value::Number(n.into()),
                    None => {
                        return Some(format!(
                            "must be a whole number (0 or more), not {}",
                            shown(value)
                        ))
                    }
                }
            }
            None
        }
        Kind::List => match value {
            Value::Sequence(items) => items.iter_mut().find_map(|item| {
                as_text(item)
                    .err()
                    .map(|v| format!("must be a list of single values; one item is {v}"))
            }),
            other => Some(format!(
                "must be a list (`[a, b]`, or one `- item` per line), not {}",
                shown(other)
            )),
        },
        Kind::Text => as_text(value)
            .err()
            .map(|v| format!("must be one value, not {v}")),
    }
}

/// Makes a scalar text; answers how a list or section was shown when it cannot be.
fn as_text(value: &mut Value) -> Result<(), String> {
    let text = match value {
        Value::String(_) => return Ok(()),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => return Err(shown(other)),
    };
    *value = Value::String(text);
    Ok(())
}

/// A whole number of 0 or more, also when written as a quoted string.
fn whole_number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A value as a person would recognise it in the file.
fn shown(value: &Value) -> String {
    match value {
        Value::Null => "nothing".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a section of keys".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

fn lookup_mut<'a>(root: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    key.split('.')
        .try_fold(root, |node, part| node.get_mut(part))
}
