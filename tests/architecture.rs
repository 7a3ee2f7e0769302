//! The "Architecture invariant:" lines of docs/architecture.md, checked.
//!
//! Reads the crate's sources as text (no compiler needed): every `crate::<module>` a file names
//! is an import of that module, and the layer table below is the documented order. A module may
//! use only modules on lower layers; anything else fails with the file and line. The mechanical
//! rules (who may read the environment, the clock, reqwest or hyper-util's client, a zip reader,
//! delete a spool file) are greps over non-test code. Each checker is a plain function over (path, text) pairs, and
//! the `*_catches_*` tests feed it a deliberately broken tree to show it fails when it should.

use std::collections::BTreeMap;
use std::path::Path;

/// The layers, bottom first. A module imports only from layers below its own.
const LAYERS: &[&[&str]] = &[
    &["clock", "secret", "remote", "words"],
    &["logging"],
    &["protocol", "config", "state"],
    &["entitlements", "bundle", "http", "server_tls"],
    &["jpd", "transport", "store_proxy", "ha"],
    &["pipeline"],
    &["jobs"],
    &["app"],
    &["status", "doctor"],
    &["api", "grpc"],
    &["console"],
    &["server"],
    &["sim"],
    &["demo"],
    &["cli"],
];

/// Rules with the files allowed to break them, each with the reason.
struct Rule {
    name: &'static str,
    needles: &'static [&'static str],
    allowed: &'static [&'static str],
}

const RULES: &[Rule] = &[
    Rule {
        name: "the environment is read only in config (and the failpoint module)",
        needles: &["std::env::var", "env::var(", "env::vars("],
        allowed: &["src/config", "src/pipeline/failpoint.rs"],
    },
    Rule {
        name: "time is read only through clock",
        needles: &["SystemTime::now", "Utc::now", "Instant::now"],
        allowed: &["src/clock.rs"],
    },
    Rule {
        name: "reqwest is named only in http/",
        needles: &["reqwest::"],
        allowed: &["src/http/"],
    },
    Rule {
        name: "hyper-util's client and hyper-rustls are named only in http/",
        needles: &["hyper_util::client", "hyper_rustls::"],
        allowed: &["src/http/"],
    },
    Rule {
        name: "a zip reader is used only in the simulator's archive check",
        needles: &["ZipArchive", "zip::read"],
        allowed: &["src/sim/archive.rs"],
    },
];

/// Known breaches still to be folded away, each naming its file and the needle. The test
/// fails when one of them no longer occurs, so the list only shrinks. Empty: keep it so.
const KNOWN: &[(&str, &str)] = &[];

/// The only functions in `src/pipeline/` that may call `remove_file`, and what they remove.
const REMOVERS: &[(&str, &str)] = &[
    ("src/pipeline/archival.rs", "delete_unchanged"), // spool files, after the archive's check
    ("src/pipeline/archival.rs", "execute"),          // a built archive's temp file
    ("src/pipeline/assemble.rs", "assemble"),         // a half-written archive
    ("src/pipeline/spool.rs", "copy_then_remove"),    // a file moved to quarantine across devices
    ("src/pipeline/uploaded_set.rs", "retire_markers"), // the first format's ledger markers
];

fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                out.push((p.to_string_lossy().replace('\\', "/"), text));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    walk(&root.join("src"), &mut out);
    let prefix = format!("{}/", root.to_string_lossy().replace('\\', "/"));
    out.iter_mut()
        .for_each(|(p, _)| *p = p.replacen(&prefix, "", 1));
    out.sort();
    out
}

/// The sources of every crate of the workspace (this one's `src/` and `client/src/`), for the
/// file-level checks.
fn workspace_sources() -> Vec<(String, String)> {
    let mut out = sources();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let client = root.join("client").join("src");
    for e in std::fs::read_dir(&client).into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            out.push((format!("client/src/{name}"), text));
        }
    }
    out
}

/// The code of a file without its unit tests: test files, and everything from a
/// `#[cfg(test)]` item on (the crate keeps unit tests at the end of a file).
fn production(path: &str, text: &str) -> Option<String> {
    if path.ends_with("/tests.rs") || path.contains("/tests/") {
        return None;
    }
    let cut = text.find("#[cfg(test)]").unwrap_or(text.len());
    Some(text[..cut].to_string())
}

fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

fn module_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("src/")?;
    let top = rest.split('/').next()?;
    let top = top.strip_suffix(".rs").unwrap_or(top);
    (top != "lib" && top != "main").then_some(top)
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every `crate::a`, `crate::{a, b::c}` a line names.
fn named_modules(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
        rest = after;
    }
    out
}

/// Imports against the layer order, and modules missing from the table.
fn layer_breaches(files: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, text) in files {
        let Some(from) = module_of(path) else {
            continue;
        };
        let Some(from_layer) = layer_of(from) else {
            out.push(format!("{path}: module `{from}` is not in the layer table"));
            continue;
        };
        for (n, line) in code_lines(text) {
            for to in named_modules(line) {
                if to == from || to == "self" {
                    continue;
                }
                match layer_of(&to) {
                    Some(l) if l < from_layer => {}
                    Some(_) => out.push(format!(
                        "{path}:{n}: `{from}` imports `{to}`, which is not on a lower layer"
                    )),
                    None => out.push(format!("{path}:{n}: `{to}` is not in the layer table")),
                }
            }
        }
    }
    out
}

fn rule_breaches(files: &[(String, String)]) -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    for (path, text) in files {
        let Some(code) = production(path, text) else {
            continue;
        };
        for rule in RULES {
            if rule.allowed.iter().any(|a| path.starts_with(a)) {
                continue;
            }
            for (n, line) in code_lines(&code) {
                if let Some(needle) = rule.needles.iter().find(|x| line.contains(*x)) {
                    out.push((path.clone(), *needle, format!("{path}:{n}: {}", rule.name)));
                }
            }
        }
    }
    out
}

/// `remove_file` calls in `src/pipeline/` outside the allowed functions.
fn remover_breaches(files: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, text) in files {
        if !path.starts_with("src/pipeline/") {
            continue;
        }
        let Some(code) = production(path, text) else {
            continue;
        };
        let mut current_fn = String::new();
        for (n, line) in code_lines(&code) {
            let t = line.trim_start();
            let t = t.strip_prefix("pub ").unwrap_or(t);
            let t = t.strip_prefix("pub(crate) ").unwrap_or(t);
            let t = t.strip_prefix("async ").unwrap_or(t);
            if let Some(sig) = t.strip_prefix("fn ") {
                current_fn = sig
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
            }
            let removes = line.contains("remove_file") || line.contains("unlinkat");
            if removes && !REMOVERS.contains(&(path.as_str(), &current_fn)) {
                out.push(format!(
                    "{path}:{n}: remove_file in `{current_fn}`; a usage file is deleted only by archival::delete_unchanged"
                ));
            }
        }
    }
    out
}

#[test]
fn every_import_points_down_the_documented_layers() {
    let breaches = layer_breaches(&sources());
    assert!(breaches.is_empty(), "{}", breaches.join("\n"));
}

#[test]
fn mechanical_rules_hold_outside_the_known_breaches() {
    let found = rule_breaches(&sources());
    let new: Vec<&String> = found
        .iter()
        .filter(|(p, needle, _)| !KNOWN.contains(&(p.as_str(), needle)))
        .map(|(_, _, msg)| msg)
        .collect();
    assert!(
        new.is_empty(),
        "{}",
        new.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let stale: Vec<String> = KNOWN
        .iter()
        .filter(|(p, needle)| {
            !found
                .iter()
                .any(|(fp, fneedle, _)| fp == p && fneedle == needle)
        })
        .map(|(p, needle)| format!("{p} no longer names {needle}: remove it from KNOWN"))
        .collect();
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}

#[test]
fn spool_files_are_deleted_only_by_delete_unchanged() {
    let breaches = remover_breaches(&sources());
    assert!(breaches.is_empty(), "{}", breaches.join("\n"));
}

#[test]
fn the_module_graph_has_no_cycle_between_folders() {
    // Implied by the strict layer order; kept explicit because it is what the docs promise.
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, text) in sources() {
        let Some(from) = module_of(&path) else {
            continue;
        };
        for (_, line) in code_lines(&text) {
            for to in named_modules(line) {
                if to != from && to != "self" {
                    edges.entry(from.to_string()).or_default().push(to);
                }
            }
        }
    }
    fn visit(
        n: &str,
        edges: &BTreeMap<String, Vec<String>>,
        stack: &mut Vec<String>,
    ) -> Option<String> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            return Some(stack[i..].join(" -> ") + " -> " + n);
        }
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, stack) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    for n in edges.keys() {
        assert_eq!(
            visit(n, &edges, &mut Vec::new()),
            None,
            "a cycle between modules"
        );
    }
}

fn tree(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect()
}

#[test]
fn the_layer_check_catches_an_import_that_points_up() {
    let broken = tree(&[
        ("src/pipeline/upload.rs", "use crate::jobs::JobError;\n"),
        ("src/state.rs", "use crate::{clock::Clock, api::router};\n"),
        ("src/jobs/mod.rs", "use crate::pipeline::PipelineError;\n"),
        ("src/newthing.rs", "use crate::clock::Clock;\n"),
    ]);
    let b = layer_breaches(&broken);
    assert!(
        b.iter().any(|m| m.contains("src/pipeline/upload.rs:1")),
        "{b:?}"
    );
    assert!(
        b.iter().any(|m| m.contains("`state` imports `api`")),
        "{b:?}"
    );
    assert!(
        b.iter()
            .any(|m| m.contains("`newthing` is not in the layer table")),
        "{b:?}"
    );
    assert!(
        !b.iter().any(|m| m.contains("src/jobs/mod.rs")),
        "jobs may use the pipeline: {b:?}"
    );
}

#[test]
fn the_rule_checks_catch_what_they_forbid() {
    let broken = tree(&[
        ("src/api/handlers.rs", "let x = std::env::var(\"A\");\nlet now = Utc::now();\n"),
        ("src/jobs/mod.rs", "// Utc::now in a comment is fine\n#[cfg(test)]\nmod tests { fn t() { Utc::now(); } }\n"),
        ("src/pipeline/spool.rs", "fn sweep() {\n    fs::remove_file(p);\n}\n"),
    ]);
    let r = rule_breaches(&broken);
    assert!(
        r.iter()
            .any(|(p, n, _)| p == "src/api/handlers.rs" && *n == "std::env::var"),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|(p, n, _)| p == "src/api/handlers.rs" && *n == "Utc::now"),
        "{r:?}"
    );
    assert!(!r.iter().any(|(p, _, _)| p == "src/jobs/mod.rs"), "{r:?}");
    let d = remover_breaches(&broken);
    assert!(d.iter().any(|m| m.contains("`sweep`")), "{d:?}");
}

#[test]
fn docs_and_code_cite_only_files_of_this_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut texts = sources();
    for dir in ["docs", "tests"] {
        for e in std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().is_file() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                texts.push((e.path().display().to_string(), text));
            }
        }
    }
    texts.push((
        "README.md".into(),
        std::fs::read_to_string(root.join("README.md")).unwrap_or_default(),
    ));
    // Spelled in two halves so this file does not cite it either.
    let outside = [concat!("DESIGN", ".md"), concat!("../", "shared/")];
    let cited: Vec<String> = texts
        .iter()
        .filter(|(_, t)| outside.iter().any(|o| t.contains(o)))
        .map(|(p, _)| p.clone())
        .collect();
    assert!(
        cited.is_empty(),
        "files outside the repository cited in: {cited:?}"
    );
}

/// Every place of README.md or docs/ that the code points a person to exists: the files named
/// `docs/<name>.md`, the anchors `<file>.md#<anchor>`, and the sections named "the <Title>
/// section of <file>.md" (a heading with that title).
#[test]
fn every_readme_or_docs_place_the_code_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let headings = |file: &str| -> Vec<String> {
        std::fs::read_to_string(root.join(file))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches('#').trim().to_string())
            .collect()
    };
    // GitHub's anchor of a heading: lower case, spaces to '-', other punctuation dropped.
    let anchor = |title: &str| -> String {
        title
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect()
    };
    let name_char = |c: char| c.is_ascii_alphanumeric() || "-_./#".contains(c);
    let mut missing = Vec::new();
    let mut named = 0;
    for (path, text) in sources() {
        // `README.md#x`, `docs/a.md`, `docs/a.md#x`.
        for (i, _) in text.match_indices(".md") {
            let start = text[..i]
                .rfind(|c: char| !name_char(c))
                .map_or(0, |p| p + 1);
            let end = i + 3 + text[i + 3..].find(|c: char| !name_char(c)).unwrap_or(0);
            let cited = text[start..end].trim_end_matches('.');
            let (file, frag) = cited.split_once('#').unwrap_or((cited, ""));
            if file != "README.md" && !file.starts_with("docs/") {
                continue;
            }
            named += 1;
            if !root.join(file).is_file() {
                missing.push(format!("{path}: {cited}: no such file"));
            } else if !frag.is_empty() && !headings(file).iter().any(|h| anchor(h) == frag) {
                missing.push(format!("{path}: {cited}: no such heading"));
            }
        }
        // "the <Title> section of <file>.md".
        for (i, _) in text.match_indices(" section of ") {
            let Some(title_start) = text[..i].rfind("the ") else {
                continue;
            };
            let title = &text[title_start + 4..i];
            let rest = &text[i + " section of ".len()..];
            let file = &rest[..rest.find(|c: char| !name_char(c)).unwrap_or(rest.len())];
            let file = file.trim_end_matches('.');
            if !file.ends_with(".md") || title.contains('\n') {
                continue;
            }
            named += 1;
            if !headings(file).iter().any(|h| h == title) {
                missing.push(format!(
                    "{path}: the {title} section of {file}: no such heading"
                ));
            }
        }
    }
    assert!(named > 10, "the scan found only {named} references");
    assert!(missing.is_empty(), "{missing:#?}");
}

/// Loops of imports between files of one folder that are known and still to be broken, each
/// named by its files in order; the test fails when one is gone (so the list only shrinks) or
/// a new one appears.
const KNOWN_FILE_LOOPS: &[&[&str]] = &[];

/// The crate root a source file belongs to (`src/` or `client/src/`).
fn crate_root(path: &str) -> Option<&str> {
    ["client/src/", "src/"]
        .into_iter()
        .find(|r| path.starts_with(r))
}

/// The names after `prefix` in `text`: `prefix a::b` gives `a`, `prefix {a, b::c}` gives `a`
/// and `b` (a group may span lines).
fn first_segments(text: &str, prefix: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        let after = &rest[i + prefix.len()..];
        rest = after;
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = 0usize;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push(ident(&group[start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(&group[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident(after));
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

/// Imports between sibling files of one folder (`super::x` and `crate::folder::x` naming the
/// file `x.rs` or the folder `x/`), `mod.rs` and `lib.rs` left out: a folder's `mod.rs`
/// declares its files, so their ties to it are structure, not a loop.
fn sibling_edges(files: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let known: std::collections::BTreeSet<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, text) in files {
        let (Some(root), Some((dir, file))) = (crate_root(path), path.rsplit_once('/')) else {
            continue;
        };
        if file == "mod.rs" || file == "lib.rs" || file == "main.rs" {
            continue;
        }
        let Some(code) = production(path, text) else {
            continue;
        };
        let code: String = code_lines(&code).map(|(_, l)| format!("{l}\n")).collect();
        let folder = dir.strip_prefix(root.trim_end_matches('/')).unwrap_or(dir);
        let folder = folder.trim_start_matches('/');
        let mut names = first_segments(&code, "super::");
        if folder.is_empty() {
            names.extend(first_segments(&code, "crate::"));
        } else {
            let prefix = format!("crate::{}::", folder.replace('/', "::"));
            names.extend(first_segments(&code, &prefix));
        }
        for name in names {
            let me = file.trim_end_matches(".rs");
            if name == me || name == "self" {
                continue;
            }
            let targets = [format!("{dir}/{name}.rs"), format!("{dir}/{name}/mod.rs")];
            if let Some(t) = targets.iter().find(|t| known.contains(t.as_str())) {
                let list = edges.entry(path.clone()).or_default();
                if !list.contains(t) {
                    list.push(t.clone());
                }
            }
        }
    }
    edges
}

/// The loops (strongly connected groups of two files or more) among sibling files, each
/// sorted.
fn file_loops(files: &[(String, String)]) -> Vec<Vec<String>> {
    let edges = sibling_edges(files);
    let nodes: Vec<&String> = edges.keys().chain(edges.values().flatten()).collect();
    let reach = |from: &String| {
        let mut seen = std::collections::BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for m in edges.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, _> = nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut loops: Vec<Vec<String>> = Vec::new();
    for n in &nodes {
        if !reaches[n].contains(*n) || loops.iter().any(|l| l.contains(*n)) {
            continue;
        }
        let mut group: Vec<String> = reaches[n]
            .iter()
            .filter(|m| reaches.get(m).is_some_and(|r| r.contains(*n)))
            .cloned()
            .collect();
        group.sort();
        group.dedup();
        loops.push(group);
    }
    loops.sort();
    loops
}

#[test]
fn files_of_one_folder_do_not_import_each_other_in_a_loop() {
    let found = file_loops(&workspace_sources());
    let known: Vec<Vec<String>> = KNOWN_FILE_LOOPS
        .iter()
        .map(|l| l.iter().map(|s| s.to_string()).collect())
        .collect();
    let new: Vec<String> = found
        .iter()
        .filter(|l| !known.contains(l))
        .map(|l| l.join(" <-> "))
        .collect();
    assert!(
        new.is_empty(),
        "files importing each other in a loop:\n{}",
        new.join("\n")
    );
    let stale: Vec<String> = known
        .iter()
        .filter(|l| !found.contains(l))
        .map(|l| {
            format!(
                "{} is no longer a loop: remove it from KNOWN_FILE_LOOPS",
                l.join(" <-> ")
            )
        })
        .collect();
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}

#[test]
fn the_file_loop_check_catches_two_files_that_import_each_other() {
    let broken = tree(&[
        ("src/bundle/error.rs", "use super::manifest::Kind;\n"),
        (
            "src/bundle/manifest.rs",
            "use super::{\n    error::BundleError,\n    kind::Kind,\n};\n",
        ),
        ("src/bundle/kind.rs", "use serde::Serialize;\n"),
        (
            "src/bundle/mod.rs",
            "mod error;\npub use error::BundleError;\n",
        ),
        ("client/src/grpc.rs", "use crate::client::Inner;\n"),
        (
            "client/src/client.rs",
            "async fn run() { crate::grpc::watch().await }\n",
        ),
        ("src/sim/jes.rs", "use super::SimError;\n"),
    ]);
    let loops = file_loops(&broken);
    assert_eq!(
        loops,
        vec![
            vec![
                "client/src/client.rs".to_string(),
                "client/src/grpc.rs".to_string()
            ],
            vec![
                "src/bundle/error.rs".to_string(),
                "src/bundle/manifest.rs".to_string()
            ],
        ]
    );
}
