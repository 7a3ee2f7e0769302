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

async fn login(http: &reqwest::Client, base: &str, token: &str) -> reqwest::Response {
    http.post(format!("{base}/ui/login"))
        .form(&[("token", token), ("next", "/ui/usage")])
        .send()
        .await
        .unwrap()
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
        assert!(read.headers().get("set-cookie").is_none());
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
    let page = http
        .get(format!("{}/ui/", r.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
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
