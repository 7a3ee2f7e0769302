//! Docs that run. Every shell block of README.md and docs/operations.md is either run here or
//! marked as an illustration, so a reader who follows the docs literally gets what they say:
//!
//! - a block fenced as ```` ```sh ```` runs: all such blocks of one document, in order, as one
//!   `bash -euo pipefail` script in a fresh scratch folder (also `$HOME`), with the `jfconnect`
//!   under test first on `PATH`; a command that fails fails the test, naming the block's line;
//! - a block fenced as ```` ```sh illustration ```` is shown only (it installs a package, needs
//!   systemd or a real JPD, or runs this test suite itself);
//! - any other shell fence (`bash`, `shell`, `console`) is refused, so no block goes unclassified.
//!
//! The simulator stands in for the remotes: blocks start it with
//! `jfconnect sim serve --listen 127.0.0.1:8046` and point URLs at that address, and the test
//! moves the address to a free port. Background processes a block starts are stopped with the
//! script's process group when it ends.

mod process_support;
use process_support::free_port;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DOCS: &[&str] = &["README.md", "docs/operations.md"];
/// The simulator's address as the docs write it.
const SIM_ADDRESS: &str = "127.0.0.1:8046";
const RUN: &str = "sh";
const ILLUSTRATION: &str = "sh illustration";
const SHELLS: &[&str] = &["sh", "bash", "shell", "console", "zsh", "shell-session"];

struct Block {
    line: usize,
    info: String,
    body: String,
}

/// The fenced blocks of a Markdown text, with the line of their opening fence.
fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match (open.take(), line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    line: i + 1,
                    info: info.trim().to_string(),
                    body: String::new(),
                })
            }
            (Some(block), Some(rest)) if rest.trim().is_empty() => out.push(block),
            (Some(mut block), _) => {
                block.body.push_str(line);
                block.body.push('\n');
                open = Some(block);
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a code fence is never closed");
    out
}

fn read_doc(doc: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc))
        .unwrap_or_else(|e| panic!("cannot read {doc}: {e}"))
}

#[test]
fn every_shell_block_is_run_or_marked_as_an_illustration() {
    for doc in DOCS {
        for block in blocks(&read_doc(doc)) {
            let language = block.info.split_whitespace().next().unwrap_or_default();
            if SHELLS.contains(&language) {
                assert!(
                    block.info == RUN || block.info == ILLUSTRATION,
                    "{doc}:{}: a shell block is fenced ```{}; use ```{RUN} (run by tests/docs_run.rs) or ```{ILLUSTRATION}",
                    block.line,
                    block.info
                );
            }
        }
    }
}

#[test]
fn the_marker_parser_sees_both_kinds_of_block() {
    let text = "x\n```sh\necho 1\n```\n```sh illustration\nrm -rf /\n```\n```yaml\na: 1\n```\n";
    let found = blocks(text);
    let infos: Vec<&str> = found.iter().map(|b| b.info.as_str()).collect();
    assert_eq!(infos, ["sh", "sh illustration", "yaml"]);
    assert_eq!((found[0].line, found[0].body.as_str()), (2, "echo 1\n"));
}

/// Runs the `sh` blocks of `doc` in order; returns how many ran.
fn run_doc(doc: &str) -> usize {
    let runnable: Vec<Block> = blocks(&read_doc(doc))
        .into_iter()
        .filter(|b| b.info == RUN)
        .collect();
    let scratch = tempfile::tempdir().unwrap();
    let sim_address = format!("127.0.0.1:{}", free_port());
    // The ERR trap names the failing command's script line; `origin` maps it back to the doc.
    let mut script = String::from("set -euo pipefail\ntrap 'echo \"### line $LINENO\" >&2' ERR\n");
    let mut origin = vec![0; 3];
    for block in &runnable {
        for (i, line) in block
            .body
            .replace(SIM_ADDRESS, &sim_address)
            .lines()
            .enumerate()
        {
            script.push_str(line);
            script.push('\n');
            origin.push(block.line + 1 + i);
        }
    }
    let script_path = scratch.path().join("docs.sh");
    std::fs::write(&script_path, &script).unwrap();
    let stdout_path = scratch.path().join("stdout");
    let stderr_path = scratch.path().join("stderr");
    let work = scratch.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_jfconnect")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .arg(&script_path)
        .current_dir(&work)
        .env("PATH", path)
        .env("HOME", &work)
        .env("NO_COLOR", "1")
        .env_remove("JFCONNECT_LOG")
        .env_remove("JFCONNECT_CONFIG")
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("http_proxy")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let group = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever the blocks left running in the background (a simulator, a service) stops here.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let failing = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("### line "))
        .filter_map(|n| n.parse::<usize>().ok())
        .next()
        .and_then(|n| origin.get(n))
        .map(|line| format!("{doc}:{line}"))
        .unwrap_or_else(|| format!("{doc} (no line reported)"));
    match status {
        Some(s) if s.success() => runnable.len(),
        Some(s) => panic!(
            "the shell command at {failing} failed ({s}) when run as written\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        ),
        None => panic!(
            "the shell blocks of {doc} did not finish within 120 s\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        ),
    }
}

#[test]
fn readme_shell_blocks_run_as_written() {
    // The air-gapped walkthrough is among them.
    assert!(run_doc("README.md") >= 2);
}

#[test]
fn operations_shell_blocks_run_as_written() {
    assert!(run_doc("docs/operations.md") >= 1);
}
