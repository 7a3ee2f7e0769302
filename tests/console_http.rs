//! The console's HTTP contract without a browser: security headers, the session cookie's
//! flags, sign-in redirects with the page to return to, session expiry, the per-address login
//! throttle, CSRF and cross-site refusals.

use jfconnect::app::App;
use jfconnect::clock::{ManualClock, SharedClock};
use jfconnect::config::Config;
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "console-http-admin-token-0123";
const READ_TOKEN: &str = "console-http-read-token-4567";

struct Running {
    base: String,
    data: std::path::PathBuf,
    clock: ManualClock,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults(dir.path().join("data"));
    config.api.token = Some(jfconnect::secret::Secret::new(READ_TOKEN));
    config.api.admin_token = Some(jfconnect::secret::Secret::new(TOKEN));
    config.grpc.enabled = false;
    let data = dir.path().join("data");
    let clock = ManualClock::new(chrono::Utc::now());
    let shared: SharedClock = Arc::new(clock.clone());
    let app = Arc::new(App::build(config, shared, None, true).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(jfconnect::server::serve(app, listener, async move {
        let _ = rx.await;
    }));
    Running {
        base,
        data,
        clock,
        _dir: dir,
        stop: Some(tx),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// The sign-in form's own CSRF token: the pre-session cookie `GET /ui/login` sets, and the
/// value of the form's hidden `csrf` field.
async fn login_form(http: &reqwest::Client, base: &str) -> (String, String) {
    let page = http.get(format!("{base}/ui/login")).send().await.unwrap();
    let cookie = session_cookie(&page);
    assert!(cookie.starts_with("jfconnect_login="), "{cookie}");
    let field = hidden_csrf(&page.text().await.unwrap());
    (cookie, field)
}

fn hidden_csrf(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no csrf field in {html}"))
        .to_string()
}

async fn login(http: &reqwest::Client, base: &str, token: &str) -> reqwest::Response {
    let (cookie, csrf) = login_form(http, base).await;
    http.post(format!("{base}/ui/login"))
        .header("cookie", cookie)
        .form(&[("token", token), ("next", "/ui/usage"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap()
}

/// The page at `path`, with the session `cookie`.
async fn signed_in_page(http: &reqwest::Client, base: &str, path: &str, cookie: &str) -> String {
    let resp = http
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.text().await.unwrap()
}

/// True when `r` starts no session (it may set the sign-in form's own cookie).
fn no_session(r: &reqwest::Response) -> bool {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .all(|v| !v.to_str().unwrap().starts_with("jfconnect_console="))
}

/// Every file under `dir` with its bytes.
fn tree(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

#[tokio::test]
async fn a_single_node_has_no_cluster_in_its_navigation_and_its_cluster_page_says_so() {
    let r = start().await;
    let http = client();
    let cookie = session_cookie(&login(&http, &r.base, TOKEN).await);
    let get = |path: &str| {
        http.get(format!("{}{path}", r.base))
            .header("cookie", &cookie)
            .send()
    };
    let overview = get("/ui/").await.unwrap().text().await.unwrap();
    assert!(!overview.contains("href=\"/ui/cluster\""), "{overview}");
    let page = get("/ui/cluster").await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Single node: this jfconnect runs alone"),
        "{html}"
    );
}

#[tokio::test]
async fn a_login_post_without_the_sign_in_forms_token_is_refused() {
    let r = start().await;
    let http = client();
    let post = |cookie: Option<String>, csrf: Option<String>| {
        let mut form = vec![("token", TOKEN.to_string()), ("next", "/ui/".to_string())];
        if let Some(c) = csrf {
            form.push(("csrf", c));
        }
        let mut req = http.post(format!("{}/ui/login", r.base)).form(&form);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send()
    };
    let (cookie, csrf) = login_form(&http, &r.base).await;
    let (other_cookie, other_csrf) = login_form(&http, &r.base).await;
    assert_ne!(csrf, other_csrf, "each sign-in form has its own token");
    for (what, c, f) in [
        ("neither cookie nor field", None, None),
        ("the field without the cookie", None, Some(csrf.clone())),
        ("the cookie without the field", Some(cookie.clone()), None),
        (
            "another form's field",
            Some(cookie.clone()),
            Some(other_csrf.clone()),
        ),
        (
            "a forged field",
            Some(other_cookie.clone()),
            Some("forged".into()),
        ),
    ] {
        let resp = post(c, f).await.unwrap();
        assert_eq!(resp.status(), 403, "{what}");
        assert!(no_session(&resp), "{what}");
        let html = resp.text().await.unwrap();
        assert!(html.contains("reload the sign-in page"), "{what}: {html}");
    }
    // A refused form is not a failed guess: the right form still signs in at once.
    let ok = post(Some(cookie), Some(csrf)).await.unwrap();
    assert_eq!(ok.status(), 303);
    assert!(session_cookie(&ok).starts_with("jfconnect_console="));
}

#[tokio::test]
async fn an_upload_past_the_size_cap_is_refused_with_the_sentence_and_changes_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let r = start().await;
    let http = client();
    let cookie = session_cookie(&login(&http, &r.base, TOKEN).await);
    let before = tree(&r.data);
    assert!(
        before
            .keys()
            .any(|p| p.ends_with("state/entitlements.json") || p.ends_with("jpd_id")),
        "{before:?}"
    );
    // A body declared one byte past the cap (the bundle limit plus the form's framing) is
    // refused from its headers; the bytes are never read.
    let declared = jfconnect::bundle::Limits::default().max_file_bytes + 64 * 1024 + 1;
    let addr = r.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /ui/airgap/upload HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n--b\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    assert!(answer.contains("location: /ui/airgap"), "{answer}");
    let page = signed_in_page(&http, &r.base, "/ui/airgap", &cookie).await;
    assert!(
        page.contains(&format!(
            "The file is over the {}-byte bundle limit; nothing was changed.",
            jfconnect::bundle::Limits::default().max_file_bytes
        )),
        "{page}"
    );
    // The jobs `serve` runs on its own keep their locks, schedule and pipeline records; the
    // audit log records the refused post. Nothing else may change or appear (no upload temp).
    let churn = ["locks", "logs", "usage", "state/schedule.json"].map(|p| r.data.join(p));
    let after = tree(&r.data);
    let changed: Vec<_> = after
        .iter()
        .filter(|(p, b)| before.get(*p) != Some(*b) && !churn.iter().any(|c| p.starts_with(c)))
        .map(|(p, _)| p.clone())
        .collect();
    assert!(changed.is_empty(), "the refused upload changed {changed:?}");
    assert!(
        before.keys().all(|p| after.contains_key(p)),
        "nothing removed"
    );
}

fn session_cookie(r: &reqwest::Response) -> String {
    header(r, "set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn pages_carry_the_security_headers_and_the_session_cookie_its_flags() {
    let r = start().await;
    let http = client();
    let page = http
        .get(format!("{}/ui/login", r.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(
        header(&page, "content-security-policy"),
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'"
    );
    assert_eq!(header(&page, "cache-control"), "no-store");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert_eq!(header(&page, "referrer-policy"), "no-referrer");
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script"), "no script at all: {html}");
    assert!(!html.contains("style="), "no inline style: {html}");

    // The stylesheet is in the binary.
    let css = http
        .get(format!("{}/ui/assets/console.css", r.base))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), 200);
    assert!(header(&css, "content-type").starts_with("text/css"));

    // Anonymous: to the login page, with the page to come back to.
    let anon = http
        .get(format!("{}/ui/usage", r.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 303);
    assert_eq!(header(&anon, "location"), "/ui/login?next=%2Fui%2Fusage");

    let ok = login(&http, &r.base, TOKEN).await;
    assert_eq!(ok.status(), 303);
    assert_eq!(header(&ok, "location"), "/ui/usage");
    let set = header(&ok, "set-cookie").to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag: {set}");
    assert!(!set.contains(TOKEN));
    let cookie = session_cookie(&ok);
    let usage = http
        .get(format!("{}/ui/usage", r.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(usage.status(), 200);
    let html = usage.text().await.unwrap();
    assert!(!html.contains(TOKEN), "the token is never on a page");

    // Idle past the limit: back to the login page, with the page to come back to.
    r.clock
        .advance(jfconnect::console::session::IDLE + Duration::from_secs(1));
    let expired = http
        .get(format!("{}/ui/usage", r.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 303);
    assert_eq!(header(&expired, "location"), "/ui/login?next=%2Fui%2Fusage");
}

#[tokio::test]
async fn the_read_token_is_refused_with_what_to_do_and_is_not_a_failed_guess() {
    let r = start().await;
    let http = client();
    for _ in 0..jfconnect::console::session::MAX_FAILURES + 1 {
        let read = login(&http, &r.base, READ_TOKEN).await;
        assert_eq!(read.status(), 403);
        assert!(no_session(&read));
        let page = read.text().await.unwrap();
        assert!(
            page.contains("That is the API token, which only reads")
                && page.contains("jfconnect.api.admin_token_file"),
            "{page}"
        );
    }
    assert_eq!(login(&http, &r.base, TOKEN).await.status(), 303);
}

#[tokio::test]
async fn failed_logins_are_throttled_per_address() {
    let r = start().await;
    let http = client();
    for _ in 0..jfconnect::console::session::MAX_FAILURES {
        let wrong = login(&http, &r.base, "wrong").await;
        assert_eq!(wrong.status(), 401);
        assert!(wrong.text().await.unwrap().contains("not the admin token"));
    }
    // Over the limit, even the right token waits.
    let refused = login(&http, &r.base, TOKEN).await;
    assert_eq!(refused.status(), 429);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("Too many failed sign-ins from this address; try again in 15 minutes"));
    r.clock
        .advance(jfconnect::console::session::FAILURE_WINDOW + Duration::from_secs(1));
    assert_eq!(login(&http, &r.base, TOKEN).await.status(), 303);
}

#[tokio::test]
async fn state_changes_need_the_csrf_token_and_this_origin() {
    let r = start().await;
    let http = client();
    let cookie = session_cookie(&login(&http, &r.base, TOKEN).await);
    let csrf = hidden_csrf(&signed_in_page(&http, &r.base, "/ui/", &cookie).await);
    let run = |token: &str, site: Option<&str>| {
        let mut req = http
            .post(format!("{}/ui/jobs/entitlements/run", r.base))
            .header("cookie", &cookie)
            .form(&[("csrf", token.to_string())]);
        if let Some(site) = site {
            req = req.header("sec-fetch-site", site);
        }
        req.send()
    };
    assert_eq!(run("forged", None).await.unwrap().status(), 403);
    assert_eq!(run(&csrf, Some("cross-site")).await.unwrap().status(), 403);
    let foreign_origin = http
        .post(format!("{}/ui/jobs/entitlements/run", r.base))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(foreign_origin.status(), 403);
    let started = run(&csrf, Some("same-origin")).await.unwrap();
    assert_eq!(started.status(), 303);
    assert_eq!(header(&started, "location"), "/ui/");

    // Every post is in the audit log; the one that changed something says what.
    let audit = std::fs::read_to_string(r.data.join("logs").join("jfconnect-audit.log")).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let runs: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["path"] == "/ui/jobs/entitlements/run")
        .collect();
    assert_eq!(runs.len(), 4, "{audit}");
    assert_eq!(runs[0]["status"], 403);
    assert_eq!(runs[0]["change"], serde_json::Value::Null);
    assert_eq!(runs[3]["status"], 303);
    assert_eq!(runs[3]["scope"], "admin");
    assert_eq!(runs[3]["change"], "started the entitlements job");
    assert!(!audit.contains(TOKEN) && !audit.contains(&csrf));
}
