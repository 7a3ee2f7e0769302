//! Adversarial tests of the usage pipeline: spool names that clean up to one archive entry,
//! special files (FIFOs, sockets, character devices, symlinks) swapped in between planning and
//! archiving, a file rewritten in place with its mtime restored, and a plan whose entries list
//! was cut or edited after it was made. Each must end with every usage file either in the
//! spool or in exactly one archive under a name of its own, and never with a hung run.

mod pipeline_support;

use jfconnect::bundle::name_key;
use jfconnect::jpd::memory::MemoryJpd;
use jfconnect::pipeline::plan::entry_file_name;
use jfconnect::pipeline::progress::NoProgress;
use jfconnect::pipeline::{
    archive_uploaded_with, upload_pending_with, ArchivalOutcome, PipelineError, RunOptions,
};
use jfconnect::secret::Secret;
use jfconnect::transport::memory::MemoryTransport;
#[cfg(feature = "failpoints")]
use pipeline_support::failing_at;
use pipeline_support::{opts, Env};
use std::collections::{HashMap, HashSet};
#[cfg(feature = "failpoints")]
use std::fs;
use std::io::Read;
#[cfg(feature = "failpoints")]
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Longest a run may take before it counts as hung.
const HANG: Duration = Duration::from_secs(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn upload_all(env: &Env) {
    let t = MemoryTransport::default();
    runtime()
        .block_on(upload_pending_with(
            &env.config,
            &t,
            "jpd-1",
            &Secret::new("tok"),
            &NoProgress,
            &opts(),
        ))
        .unwrap();
}

/// Runs the archival job on its own thread; `Err(())` when it did not end within [`HANG`]
/// (the thread is left behind, blocked). `unblock` is called after a hang so the stuck thread
/// can finish.
fn archive_bounded(
    env: &Env,
    jpd: &Arc<MemoryJpd>,
    o: &RunOptions,
    unblock: impl FnOnce(),
) -> Result<Result<ArchivalOutcome, PipelineError>, ()> {
    let (tx, rx) = mpsc::channel();
    let (config, jpd, o) = (env.config.clone(), jpd.clone(), o.clone());
    std::thread::spawn(move || {
        let r = runtime().block_on(archive_uploaded_with(&config, &*jpd, &NoProgress, &o));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(HANG) {
        Ok(r) => Ok(r),
        Err(_) => {
            unblock();
            Err(())
        }
    }
}

fn archive(
    env: &Env,
    jpd: &Arc<MemoryJpd>,
    o: &RunOptions,
) -> Result<ArchivalOutcome, PipelineError> {
    archive_bounded(env, jpd, o, || {}).expect("the archival run hung")
}

/// Every archive's entries: (archive path, entry names in the zip, index paths).
fn archive_entries(jpd: &MemoryJpd) -> Vec<(String, Vec<String>, Vec<String>)> {
    jpd.artifacts()
        .into_iter()
        .map(|(_repo, path, bytes)| {
            let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
            let names: Vec<String> = zip.file_names().map(str::to_string).collect();
            let mut index = String::new();
            zip.by_name("index.json")
                .unwrap()
                .read_to_string(&mut index)
                .unwrap();
            let index: serde_json::Value = serde_json::from_str(&index).unwrap();
            let paths = index["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["path"].as_str().unwrap().to_string())
                .collect();
            (path, names, paths)
        })
        .collect()
}

/// Entry bodies of every archive by entry path, read by walking the zip's entries one by one
/// (as an extraction would): a name written twice keeps the last body, as on disk.
fn extracted(jpd: &MemoryJpd) -> Vec<HashMap<String, Vec<u8>>> {
    jpd.artifacts()
        .into_iter()
        .map(|(_, _, bytes)| {
            let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
            let mut out = HashMap::new();
            for i in 0..zip.len() {
                let mut e = zip.by_index(i).unwrap();
                let mut body = Vec::new();
                e.read_to_end(&mut body).unwrap();
                // A case-insensitive disk (macOS, Windows) folds names on extraction.
                out.insert(e.name().to_lowercase(), body);
            }
            out
        })
        .collect()
}

/// Asserts that no usage file was lost: each one is still in the spool or can be extracted
/// from exactly one archive, and no archive holds a name twice (even after case folding).
fn assert_nothing_lost(env: &Env, jpd: &MemoryJpd, files: &[(String, Vec<u8>)]) {
    for (archive, names, paths) in archive_entries(jpd) {
        let folded: HashSet<String> = names.iter().map(|n| n.to_lowercase()).collect();
        assert_eq!(
            folded.len(),
            names.len(),
            "{archive} holds a name twice: {names:?}"
        );
        let listed: HashSet<&String> = paths.iter().collect();
        assert_eq!(
            listed.len(),
            paths.len(),
            "{archive}'s index lists a path twice"
        );
    }
    let archives = extracted(jpd);
    let in_spool: HashSet<String> = env.spool_names().into_iter().collect();
    let mut wanted: HashMap<&[u8], usize> = HashMap::new();
    for (name, bytes) in files {
        if !in_spool.contains(name) {
            *wanted.entry(bytes.as_slice()).or_default() += 1;
        }
    }
    for (bytes, n) in wanted {
        let found: usize = archives
            .iter()
            .map(|a| a.values().filter(|b| b.as_slice() == bytes).count())
            .sum();
        assert!(
            found >= n,
            "{n} deleted file(s) with body {:?} but only {found} extractable copies",
            String::from_utf8_lossy(bytes)
        );
    }
}

fn body(product: &str, tag: &str) -> Vec<u8> {
    format!(r#"{{"product":"{product}","timestamp":"2024-03-01T10:00:00Z","tag":"{tag}"}}"#)
        .into_bytes()
}

/// Writes `names` to the spool (with `same` bodies when asked), uploads, archives, and checks
/// that nothing was lost.
fn archive_names(names: &[String], same_bytes: bool) {
    let env = Env::new();
    let mut files = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let b = body("xray", if same_bytes { "same" } else { &names[i] });
        env.raw(n, &b);
        files.push((n.clone(), b));
    }
    upload_all(&env);
    let jpd = Arc::new(MemoryJpd::new());
    let out = archive(&env, &jpd, &opts()).unwrap();
    assert_eq!(out.files(), names.len() as u64, "{names:?}");
    assert_nothing_lost(&env, &jpd, &files);
    let (_, entries, _) = &archive_entries(&jpd)[0];
    assert_eq!(entries.len(), names.len() + 1, "{entries:?}");
}

#[test]
fn names_that_clean_up_alike_get_entries_of_their_own() {
    let sha8 = |b: &[u8]| jfconnect::protocol::sha256_hex(b)[..8].to_string();
    let same = body("xray", "same");
    let long = "l".repeat(230);
    let pairs: Vec<(Vec<String>, bool)> = vec![
        (vec!["c d.json".into(), "c+d.json".into()], true),
        (
            vec!["x?.json".into(), "x*.json".into(), "x:.json".into()],
            true,
        ),
        (
            vec!["a b.json".into(), format!("a_b.json-{}", sha8(&same))],
            true,
        ),
        (
            vec![format!("{long}-one.json"), format!("{long}-two.json")],
            true,
        ),
        (vec!["caf\u{e9}.json".into(), "caf\u{e8}.json".into()], true),
        (
            vec!["caf\u{e9}.json".into(), "cafe\u{301}.json".into()],
            true,
        ),
        (vec!["Usage.json".into(), "usage.json".into()], false),
        (vec!["\u{212a}.json".into(), "k.json".into()], false),
    ];
    let failed: Vec<String> = pairs
        .iter()
        .filter(|(names, same)| std::panic::catch_unwind(|| archive_names(names, *same)).is_err())
        .map(|(names, _)| format!("{names:?}"))
        .collect();
    assert!(failed.is_empty(), "entries lost or doubled for {failed:?}");
}

#[cfg(feature = "failpoints")]
/// Plans `n` uploaded files and stops right after the plan (as a crash would); answers the
/// files and the names that were planned.
fn planned(env: &Env, n: usize) -> Vec<(String, Vec<u8>)> {
    let files: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let name = format!("u{i:02}.json");
            let b = body("xray", &name);
            env.raw(&name, &b);
            (name, b)
        })
        .collect();
    upload_all(env);
    let jpd = Arc::new(MemoryJpd::new());
    let err = archive(env, &jpd, &failing_at("after-plan")).unwrap_err();
    assert!(
        matches!(err, PipelineError::Failpoint("after-plan")),
        "{err}"
    );
    files
}

#[cfg(all(unix, feature = "failpoints"))]
fn mkfifo(p: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap();
    assert!(status.success());
}

#[cfg(all(unix, feature = "failpoints"))]
fn release_fifo(p: PathBuf) -> impl FnOnce() {
    move || {
        use std::os::unix::fs::OpenOptionsExt;
        // A writer that opens and closes lets a reader blocked in open() go on.
        let _ = fs::OpenOptions::new()
            .write(true)
            .custom_flags(0o4000) // O_NONBLOCK
            .open(&p);
    }
}

/// What is swapped in for a planned spool file.
#[cfg(all(unix, feature = "failpoints"))]
#[derive(Debug, Clone, Copy)]
enum Special {
    Fifo,
    SymlinkToFifo,
    Socket,
    CharDevice,
}

#[cfg(all(unix, feature = "failpoints"))]
fn swap_in(kind: Special, path: &Path, aside: &Path) -> Option<Box<dyn FnOnce()>> {
    fs::remove_file(path).unwrap();
    match kind {
        Special::Fifo => {
            mkfifo(path);
            Some(Box::new(release_fifo(path.to_path_buf())))
        }
        Special::SymlinkToFifo => {
            mkfifo(aside);
            std::os::unix::fs::symlink(aside, path).unwrap();
            Some(Box::new(release_fifo(aside.to_path_buf())))
        }
        Special::Socket => {
            let l = std::os::unix::net::UnixListener::bind(path).unwrap();
            std::mem::forget(l);
            Some(Box::new(|| {}))
        }
        Special::CharDevice => {
            // /dev/zero's numbers: endless bytes; needs CAP_MKNOD.
            let status = std::process::Command::new("mknod")
                .arg(path)
                .args(["c", "1", "5"])
                .status()
                .unwrap();
            if !status.success() {
                eprintln!("mknod is not permitted here; character device variant not run");
                return None;
            }
            Some(Box::new(|| {}))
        }
    }
}

#[cfg(all(unix, feature = "failpoints"))]
#[test]
fn special_files_swapped_in_after_planning_are_left_out_without_hanging() {
    let kinds = [
        Special::Fifo,
        Special::SymlinkToFifo,
        Special::Socket,
        Special::CharDevice,
    ];
    let failed: Vec<Special> = kinds
        .into_iter()
        .filter(|k| std::panic::catch_unwind(|| special_file_swapped_in(*k)).is_err())
        .collect();
    assert!(failed.is_empty(), "failed for {failed:?}");
}

#[cfg(all(unix, feature = "failpoints"))]
fn special_file_swapped_in(kind: Special) {
    {
        let env = Env::new();
        let files = planned(&env, 6);
        let victim = env.spool().join(&files[2].0);
        let aside = env.dir.path().join("aside.fifo");
        let Some(unblock) = swap_in(kind, &victim, &aside) else {
            return;
        };
        let jpd = Arc::new(MemoryJpd::new());
        let out = archive_bounded(&env, &jpd, &opts(), unblock)
            .unwrap_or_else(|()| panic!("{kind:?}: the archival run hung"))
            .unwrap_or_else(|e| panic!("{kind:?}: the archival run failed: {e}"));
        assert_eq!(out.files(), 5, "{kind:?}: the other files are archived");
        let left = env.spool_names();
        assert!(
            left.contains(&files[2].0),
            "{kind:?}: the special file stays"
        );
        assert_eq!(left.len(), 1, "{kind:?}: {left:?}");
        assert_nothing_lost(&env, &jpd, &files);
    }
}

#[cfg(all(unix, feature = "failpoints"))]
#[test]
fn a_file_rewritten_in_place_with_its_mtime_restored_is_not_deleted() {
    for variant in ["same size", "same size, mtime and atime restored"] {
        let env = Env::new();
        let files: Vec<(String, Vec<u8>)> = (0..4)
            .map(|i| {
                let name = format!("r{i}.json");
                let b = body("xray", &format!("{i}-original"));
                env.raw(&name, &b);
                (name, b)
            })
            .collect();
        upload_all(&env);
        let jpd = Arc::new(MemoryJpd::new());
        let err = archive(&env, &jpd, &failing_at("after-verify")).unwrap_err();
        assert!(matches!(err, PipelineError::Failpoint(_)), "{err}");
        let victim = env.spool().join(&files[1].0);
        let meta = fs::metadata(&victim).unwrap();
        let rewritten = body("xray", "1-REWRITTE");
        assert_eq!(rewritten.len(), files[1].1.len());
        std::thread::sleep(Duration::from_millis(20));
        let f = fs::OpenOptions::new().write(true).open(&victim).unwrap();
        use std::io::Write;
        (&f).write_all(&rewritten).unwrap();
        f.set_modified(meta.modified().unwrap()).unwrap();
        if variant.contains("atime") {
            f.set_times(
                fs::FileTimes::new()
                    .set_accessed(meta.accessed().unwrap())
                    .set_modified(meta.modified().unwrap()),
            )
            .unwrap();
        }
        drop(f);
        archive(&env, &jpd, &opts()).unwrap();
        assert_eq!(
            fs::read(&victim).ok(),
            Some(rewritten),
            "{variant}: bytes never uploaded must not be deleted"
        );
    }
}

#[cfg(feature = "failpoints")]
fn entries_files(env: &Env) -> Vec<PathBuf> {
    let dir = env.config.data_dir.join("usage/archival/plan");
    let mut v: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("entries-"))
        .collect();
    v.sort();
    v
}

#[cfg(feature = "failpoints")]
#[test]
fn a_plan_whose_entries_list_changed_stops_the_run_and_deletes_nothing() {
    type Edit = fn(&str) -> String;
    let edits: Vec<(&str, &str, Edit)> = vec![
        ("after-verify", "emptied", |_| String::new()),
        ("after-verify", "cut in half", |t| {
            let lines: Vec<&str> = t.lines().collect();
            lines[..lines.len() / 2].join("\n") + "\n"
        }),
        ("after-verify", "one line doubled, one dropped", |t| {
            let lines: Vec<&str> = t.lines().collect();
            let mut v = lines[..lines.len() - 1].to_vec();
            v.push(lines[0]);
            v.join("\n") + "\n"
        }),
        ("after-plan", "cut before assembly", |t| {
            t.lines().take(1).collect::<Vec<_>>().join("\n") + "\n"
        }),
    ];
    for (point, what, edit) in edits {
        let env = Env::new();
        let files: Vec<(String, Vec<u8>)> = (0..6)
            .map(|i| {
                let name = format!("p{i}.json");
                let b = body("xray", &name);
                env.raw(&name, &b);
                (name, b)
            })
            .collect();
        upload_all(&env);
        let jpd = Arc::new(MemoryJpd::new());
        let err = archive(&env, &jpd, &failing_at(point)).unwrap_err();
        assert!(matches!(err, PipelineError::Failpoint(_)), "{err}");
        for f in entries_files(&env) {
            let text = fs::read_to_string(&f).unwrap();
            fs::write(&f, edit(&text)).unwrap();
        }
        let before = env.spool_names();
        let err = archive(&env, &jpd, &opts())
            .err()
            .unwrap_or_else(|| panic!("{what}: the run must stop"));
        let msg = err.to_string();
        assert!(
            msg.contains("entries list was changed") && msg.contains("no usage file was deleted"),
            "{what}: {msg}"
        );
        assert_eq!(env.spool_names(), before, "{what}: nothing deleted");
        // Still stopped on the next try: the plan is kept for a person to look at.
        assert!(archive(&env, &jpd, &opts()).is_err(), "{what}");
        assert_eq!(env.spool_names(), before, "{what}");
        let _ = files;
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..Default::default()
    })]

    /// No two distinct spool names give one entry name, even after Unicode normalisation and
    /// case folding (`bundle::name_key`, the rule bundles follow too).
    #[test]
    fn entry_names_are_injective(a in "\\PC{1,40}", b in "\\PC{1,40}") {
        proptest::prop_assume!(a != b);
        let (ea, eb) = (entry_file_name(&a), entry_file_name(&b));
        proptest::prop_assert_ne!(name_key(&ea), name_key(&eb), "{:?} {:?}", a, b);
    }

    /// The same for names built from a small alphabet, where collisions are likelier: case
    /// pairs, NFC and NFD `é`, `ß` and `ss`, `ﬁ` and `fi`, the Kelvin and Ångström signs.
    #[test]
    fn entry_names_are_injective_on_a_small_alphabet(
        a in "[aAfiKkSs_ +.%~\u{e9}\u{301}\u{df}\u{fb01}\u{212a}\u{212b}\u{c5}]{1,6}",
        b in "[aAfiKkSs_ +.%~\u{e9}\u{301}\u{df}\u{fb01}\u{212a}\u{212b}\u{c5}]{1,6}"
    ) {
        proptest::prop_assume!(a != b);
        let (ea, eb) = (entry_file_name(&a), entry_file_name(&b));
        proptest::prop_assert_ne!(name_key(&ea), name_key(&eb), "{:?} {:?}", a, b);
    }
}
