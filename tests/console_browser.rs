//! The admin console in a real browser: headless Chromium (Debian `chromium` and
//! `chromium-driver`, installed by scripts/install-test-tools) driven through WebDriver by
//! fantoccini, against `jfconnect serve` and `jfconnect sim serve` started here.
//!
//! One browser session runs every scenario in order (starting Chromium is the slow part):
//! connected — sign in, the simulator's entitlements, usage counts moving after "Run now", a
//! quarantined file named with HTML shown as text; air-gapped — a registration bundle
//! downloaded through the browser, answered by `jfconnect sim answer`, a tampered answer
//! refused with nothing changed, the real one previewed and applied, and a vendor bundle whose
//! feature is `<script>alert(1)</script>` shown as text with nothing executed. Each step saves
//! a screenshot under `target/ui-screenshots/`.

mod process_support;

use fantoccini::{Client, ClientBuilder, Locator};
use process_support::{free_port, Killed};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "console-admin-token-0123456789";
const WAIT: Duration = Duration::from_secs(30);

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jfconnect"));
    c.env("JF_JFCONNECT_GRPC_ENABLED", "false")
        .env("JFCONNECT_SPOOL_SETTLE_MS", "0")
        // Only the button runs a job again: no retry or schedule fires during the test.
        .env("JF_JFCONNECT_RETRY_INITIAL", "1h")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Waits (bounded) until something answers on `port`.
fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not open port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Headless Chromium through a chromedriver on a free loopback port, downloading into
/// `downloads`.
async fn browser(downloads: &Path) -> (Killed, Client) {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is missing: run scripts/install-test-tools (Debian chromium-driver)");
    let driver = Killed(driver);
    wait_for_port(port, "chromedriver");
    let mut options = json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", "--no-first-run", "--no-proxy-server"],
        "prefs": {
            "download.default_directory": downloads.to_str().unwrap(),
            "download.prompt_for_download": false,
        },
    });
    if Path::new("/usr/bin/chromium").exists() {
        options["binary"] = json!("/usr/bin/chromium");
    }
    let caps = json!({ "goog:chromeOptions": options });
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = tokio::time::timeout(
        WAIT,
        ClientBuilder::new(connector)
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{port}")),
    )
    .await
    .expect("Chromium did not start within 30 s")
    .expect("cannot start a Chromium session");
    (driver, client)
}

/// A running `jfconnect serve` on a free port with `extra` config lines.
struct Serve {
    _child: Killed,
    base: String,
    data: PathBuf,
}

fn serve(dir: &Path, name: &str, extra: &str) -> Serve {
    let port = free_port();
    let data = dir.join(format!("{name}-data"));
    std::fs::write(dir.join("admin.token"), ADMIN_TOKEN).unwrap();
    std::fs::write(dir.join("read.token"), "console-read-token-0123456789").unwrap();
    let cfg = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &cfg,
        format!(
            "jfconnect:\n  port: {port}\n  data_dir: {}\n  license:\n    file: {}\n  api:\n    token_file: {}\n    admin_token_file: {}\n  usage:\n    spool_dir: {}\n{extra}",
            data.display(),
            dir.join("license").display(),
            dir.join("read.token").display(),
            dir.join("admin.token").display(),
            dir.join(format!("{name}-spool")).display(),
        ),
    )
    .unwrap();
    let child = Killed(
        bin()
            .arg("--config")
            .arg(&cfg)
            .arg("serve")
            .spawn()
            .unwrap(),
    );
    wait_for_port(port, "jfconnect serve");
    Serve {
        _child: child,
        base: format!("http://127.0.0.1:{port}"),
        data,
    }
}

async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap(),
        Err(_) => {
            let page = c
                .find(Locator::Css("body"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            panic!("no {css} on {}: {page}", c.current_url().await.unwrap())
        }
    }
}

/// Reloads `url` until the element `css` reads `want` (bounded).
async fn wait_text(c: &Client, url: &str, css: &str, want: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        c.goto(url).await.unwrap();
        let got = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{css} on {url} reads {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Clicks `css` (a form's button) and waits, bounded, for the page the form leads to.
async fn click(c: &Client, css: &str) {
    c.execute("window.__before_click = true;", vec![])
        .await
        .unwrap();
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let fresh = c
            .execute(
                "return !window.__before_click && document.readyState === 'complete';",
                vec![],
            )
            .await;
        if fresh.is_ok_and(|v| v == json!(true)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "clicking {css} led to no new page"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Signs in with `token` from the login page the console sends an anonymous visitor to.
async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/ui/usage")).await.unwrap();
    let url = c.current_url().await.unwrap();
    assert_eq!(
        url.path(),
        "/ui/login",
        "an anonymous visitor is sent to sign in"
    );
    assert_eq!(url.query(), Some("next=%2Fui%2Fusage"));
    let field = c.find(Locator::Id("token")).await.unwrap();
    field.send_keys(token).await.unwrap();
    click(c, "form.login button").await;
}

/// Nothing the page holds ran: no dialog opened, no script or image element exists, no
/// element carries an event handler attribute; and `needle` is on the page as text.
async fn nothing_executed(c: &Client, needle: &str) {
    assert!(
        c.get_alert_text().await.is_err(),
        "an alert opened on {}",
        c.current_url().await.unwrap()
    );
    let found = c
        .execute(
            r#"const all = [...document.querySelectorAll('*')];
               return {
                 scripts: document.scripts.length,
                 images: document.images.length,
                 handlers: all.filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
                 text: document.body.innerText,
               };"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(found["scripts"], 0, "{found}");
    assert_eq!(found["images"], 0, "{found}");
    assert_eq!(found["handlers"], 0, "{found}");
    assert!(
        found["text"].as_str().unwrap().contains(needle),
        "{needle} is not shown as text: {found}"
    );
}

fn usage_file(spool: &Path, name: &str, product: &str) {
    let now = chrono::Utc::now().to_rfc3339();
    std::fs::write(
        spool.join(name),
        format!(r#"{{"product":"{product}","timestamp":"{now}","count":1}}"#),
    )
    .unwrap();
}

/// Waits for one finished download in `dir` and answers its path.
async fn downloaded(dir: &Path) -> PathBuf {
    let deadline = Instant::now() + WAIT;
    loop {
        let done: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jfbundle"))
            .collect();
        if let [one] = done.as_slice() {
            return one.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no download arrived in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn upload(c: &Client, base: &str, file: &Path) {
    c.goto(&format!("{base}/ui/airgap")).await.unwrap();
    let input = c.find(Locator::Id("bundle")).await.unwrap();
    input.send_keys(file.to_str().unwrap()).await.unwrap();
    click(c, "#upload button").await;
}

fn state_bytes(data: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = data.join("state");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .filter(|(n, _)| !n.starts_with("schedules") && !n.ends_with(".lock"))
        .collect();
    out.sort();
    out
}

/// The XSS bundle: the demo's entitlements with one feature named like a script, one
/// validity changed and one removed, signed by the vendor key for this JPD.
fn vendor_bundle(dir: &Path, data: &Path, sequence: u64) -> PathBuf {
    use jfconnect::bundle::{
        new_bundle_id, write_bundle, BundleSpec, Kind, PayloadEntry, PayloadSource,
    };
    let jpd_id = std::fs::read_to_string(data.join("jpd_id"))
        .unwrap()
        .trim()
        .to_string();
    let now = chrono::Utc::now();
    let mut e = jfconnect::sim::vendor::demo_entitlements(&jpd_id, now);
    e.entitlements.retain(|l| l.product != "distribution");
    for l in &mut e.entitlements {
        if l.product == "xray" {
            l.valid_until = Some("2027-12-31T00:00:00Z".into());
        }
    }
    e.entitlements.push(jfconnect::protocol::Entitlement {
        product: "artifactory".into(),
        feature: "<script>alert(1)</script>".into(),
        valid_from: None,
        valid_until: None,
    });
    let out = dir.join(format!("vendor-{sequence}.jfbundle"));
    let spec = BundleSpec {
        kind: Kind::Entitlements,
        bundle_id: new_bundle_id(),
        jpd_id,
        created: now,
        expires: now + chrono::Duration::days(1),
        sequence,
    };
    let payload = vec![PayloadEntry {
        path: "payload/entitlements.json".into(),
        source: PayloadSource::Bytes(serde_json::to_vec(&e).unwrap()),
    }];
    let key = jfconnect::bundle::read_secret_key(&dir.join("vendor.key")).unwrap();
    write_bundle(&out, &spec, payload, &key).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("license"), "JFL-CONSOLE-BROWSER-0001").unwrap();
    let downloads = dir.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let (_driver, c) = browser(&downloads).await;

    connected(&c, dir).await;
    airgapped(&c, dir, &downloads).await;

    c.close().await.unwrap();
}

async fn connected(c: &Client, dir: &Path) {
    let sim_port = free_port();
    let _sim = Killed(
        bin()
            .args([
                "sim",
                "serve",
                "--listen",
                &format!("127.0.0.1:{sim_port}"),
                "--data",
            ])
            .arg(dir.join("sim"))
            .spawn()
            .unwrap(),
    );
    wait_for_port(sim_port, "jfconnect sim serve");
    let sim = format!("http://127.0.0.1:{sim_port}");
    std::fs::write(dir.join("jpd.token"), "jpd-token").unwrap();
    let s = serve(
        dir,
        "connected",
        &format!(
            "  jes:\n    url: {sim}\n  jcs:\n    url: {sim}\n  jpd:\n    url: {sim}\n    token_file: {}\n",
            dir.join("jpd.token").display()
        ),
    );
    let base = &s.base;

    // A wrong token: a clear sentence, no session.
    sign_in(c, base, "not-the-token").await;
    let problem = text(c, ".flash.bad").await;
    assert!(problem.contains("not the admin token"), "{problem}");
    shot(c, "01-login-refused").await;

    // The admin token: back to the page asked for.
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(ADMIN_TOKEN)
        .await
        .unwrap();
    click(c, "form.login button").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/ui/usage");

    // The simulator's four entitlements.
    wait_text(c, &format!("{base}/ui/"), "#entitlement-count", "4").await;
    let table = text(c, "#entitlements").await;
    for feature in ["federation", "ha", "scan", "edge"] {
        assert!(table.contains(feature), "{table}");
    }
    shot(c, "02-overview").await;

    // Usage files appear, one of them not a usage file and named with HTML.
    let spool = dir.join("connected-spool");
    std::fs::create_dir_all(&spool).unwrap();
    for (i, product) in ["artifactory", "xray", "artifactory"].iter().enumerate() {
        usage_file(&spool, &format!("u{i}.json"), product);
    }
    let hostile = "<img src=x onerror=alert(1)>.json";
    std::fs::write(spool.join(hostile), "not json").unwrap();
    c.goto(&format!("{base}/ui/usage")).await.unwrap();
    let before = text(c, "#count-uploaded").await;

    // "Run now" on the usage job, from the overview; the counts move.
    c.goto(&format!("{base}/ui/")).await.unwrap();
    click(c, "#job-usage button").await;
    let said = text(c, "#flash").await;
    assert!(said.contains("usage job started"), "{said}");
    wait_text(c, &format!("{base}/ui/usage"), "#count-uploaded", "3").await;
    assert_ne!(before, "3");
    assert_eq!(text(c, "#count-quarantined").await, "1");

    // Archival too: the archive is listed with its checksum.
    c.goto(&format!("{base}/ui/")).await.unwrap();
    click(c, "#job-archival button").await;
    wait_text(c, &format!("{base}/ui/usage"), "#count-archived", "3").await;
    let archives = text(c, "#archives").await;
    assert!(archives.contains("jfrog-usage-logs/"), "{archives}");
    let bars = c
        .find_all(Locator::Css("figure.chart svg rect"))
        .await
        .unwrap();
    assert_eq!(bars.len(), 2, "one bar segment per product of today");
    nothing_executed(c, "<img src=x onerror=alert(1)>.json").await;
    shot(c, "03-usage").await;

    // A form without the session's CSRF token changes nothing.
    let status = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               fetch('/ui/jobs/usage/run', {method: 'POST', redirect: 'manual',
                 headers: {'content-type': 'application/x-www-form-urlencoded'}, body: 'csrf=forged'})
                 .then(r => done(r.status), e => done(String(e)));"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, 403);

    // Signing out ends the session.
    click(c, "form.logout button").await;
    c.goto(&format!("{base}/ui/")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/ui/login");
}

async fn airgapped(c: &Client, dir: &Path, downloads: &Path) {
    let keys = bin()
        .args(["keys", "generate", "--out"])
        .arg(dir.join("vendor"))
        .status()
        .unwrap();
    assert!(keys.success());
    let s = serve(
        dir,
        "airgapped",
        &format!(
            "  airgap:\n    enabled: true\n    outbox_dir: {}\n    vendor_public_keys: [{}]\n",
            dir.join("outbox").display(),
            dir.join("vendor.pub").display()
        ),
    );
    let base = &s.base;
    sign_in(c, base, ADMIN_TOKEN).await;
    c.goto(&format!("{base}/ui/airgap")).await.unwrap();
    assert_eq!(text(c, "header .mode").await.to_lowercase(), "air-gapped");

    // 1. A registration bundle, downloaded through the browser (the page stays).
    c.find(Locator::Css("#download-registration"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let registration = downloaded(downloads).await;
    assert!(
        registration
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("registration-"),
        "{}",
        registration.display()
    );
    c.goto(&format!("{base}/ui/airgap")).await.unwrap();
    shot(c, "04-airgapped").await;

    // 2. The vendor answers it.
    let answer = dir.join("answer.jfbundle");
    let answered = bin()
        .args(["sim", "answer", "--in"])
        .arg(&registration)
        .arg("--key")
        .arg(dir.join("vendor.key"))
        .arg("--out")
        .arg(&answer)
        .arg("--state")
        .arg(dir.join("vendor-state"))
        .status()
        .unwrap();
    assert!(answered.success());

    // 3. A tampered copy is refused, with the reason, and nothing changes.
    let mut bytes = std::fs::read(&answer).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    let tampered = dir.join("tampered.jfbundle");
    std::fs::write(&tampered, bytes).unwrap();
    let state_before = state_bytes(&s.data);
    upload(c, base, &tampered).await;
    let refusal = text(c, "#flash").await;
    assert!(refusal.starts_with("The bundle was refused: "), "{refusal}");
    assert!(refusal.ends_with("Nothing was changed."), "{refusal}");
    assert_eq!(
        state_bytes(&s.data),
        state_before,
        "a refused bundle changed the state"
    );
    shot(c, "05-refused").await;

    // 4. The real answer: the preview shows what it adds and who signed it; Apply imports it.
    upload(c, base, &answer).await;
    assert_eq!(c.current_url().await.unwrap().path(), "/ui/airgap/preview");
    let summary = text(c, "#diff-summary").await;
    assert_eq!(
        summary,
        "Adds 4 features, removes 0, changes the validity of 0."
    );
    let key = text(c, "#signing-key").await;
    assert!(key.contains("vendor.pub"), "{key}");
    assert_eq!(
        state_bytes(&s.data),
        state_before,
        "the preview changed the state"
    );
    shot(c, "06-preview").await;
    click(c, "#apply").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/ui/");
    let said = text(c, "#flash").await;
    assert!(said.starts_with("Imported entitlements bundle"), "{said}");
    assert_eq!(text(c, "#entitlement-count").await, "4");
    shot(c, "07-imported").await;

    // 5. A vendor bundle whose feature is a script: shown as text, nothing runs; Cancel
    // changes nothing; Apply imports it and the overview shows it as text too.
    let hostile = vendor_bundle(dir, &s.data, 2);
    upload(c, base, &hostile).await;
    let summary = text(c, "#diff-summary").await;
    assert_eq!(
        summary,
        "Adds 1 feature, removes 1, changes the validity of 1."
    );
    nothing_executed(c, "<script>alert(1)</script>").await;
    shot(c, "08-preview-hostile").await;
    let state_before = state_bytes(&s.data);
    click(c, "#cancel").await;
    let said = text(c, "#flash").await;
    assert!(said.starts_with("Cancelled"), "{said}");
    assert_eq!(
        state_bytes(&s.data),
        state_before,
        "Cancel changed the state"
    );
    upload(c, base, &hostile).await;
    click(c, "#apply").await;
    assert_eq!(text(c, "#entitlement-count").await, "4");
    nothing_executed(c, "<script>alert(1)</script>").await;
    shot(c, "09-overview-hostile").await;
}
