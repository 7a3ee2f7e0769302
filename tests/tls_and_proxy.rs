//! Real TLS and a real authenticating proxy, both on loopback: the HTTPS simulator (a CA made
//! on start) and tinyproxy with BasicAuth, started by the test. `.ci/run` installs tinyproxy.

use jfconnect::config::Config;
use jfconnect::protocol::RegisterRequest;
use jfconnect::secret::Secret;
use jfconnect::sim::{self, SimHandle, SimOptions};
use jfconnect::transport::online::OnlineTransport;
use jfconnect::transport::{ErrorClass, Transport, TransportError};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PASSWORD: &str = "pr0xy-s3cret-pw";

fn request() -> RegisterRequest {
    RegisterRequest {
        jpd_id: "jpd-tls-test".into(),
        license_key: Secret::new("JFL-TLS-PROXY-TEST-0001"),
        jfconnect_version: "test".into(),
    }
}

async fn sim(dir: &Path, tls: bool) -> SimHandle {
    let mut o = SimOptions::new(dir.join("sim"));
    o.tls = tls;
    sim::spawn(o).await.unwrap()
}

fn config(dir: &Path) -> Config {
    let mut c = Config::defaults(dir.join("data"));
    c.http.connect_timeout = Duration::from_secs(5);
    c.http.request_timeout = Duration::from_secs(10);
    c
}

async fn register(c: &Config, base: &str) -> Result<(), TransportError> {
    let outbound = jfconnect::http::build(c).unwrap();
    let base: url::Url = base.parse().unwrap();
    OnlineTransport::new(outbound, base.clone(), base)
        .register(&request())
        .await
        .map(drop)
}

#[tokio::test]
async fn https_simulator_is_trusted_with_its_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim(dir.path(), true).await;
    assert!(s.base_url().starts_with("https://localhost:"));
    let mut c = config(dir.path());
    c.tls.ca_file = Some(s.ca_file().unwrap().to_path_buf());
    register(&c, &s.base_url()).await.unwrap();
}

#[tokio::test]
async fn https_simulator_is_refused_without_the_ca_with_the_tls_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim(dir.path(), true).await;
    let e = register(&config(dir.path()), &s.base_url())
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Unavailable);
    assert_eq!(
        e.message,
        "the TLS certificate of localhost is not trusted (unknown issuer); add your CA to jfconnect.tls.ca_file"
    );
}

#[tokio::test]
async fn certificate_for_another_name_is_refused_as_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim(dir.path(), true).await;
    let mut c = config(dir.path());
    c.tls.ca_file = Some(s.ca_file().unwrap().to_path_buf());
    let e = register(&c, &format!("https://127.0.0.1:{}", s.addr().port()))
        .await
        .unwrap_err();
    assert!(e.message.contains("(name mismatch)"), "{}", e.message);
}

/// tinyproxy with BasicAuth on a free loopback port, stopped on drop.
struct Tinyproxy {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    fn start() -> Tinyproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("tinyproxy.log");
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Info\nMaxClients 20\nBasicAuth alice {PASSWORD}\n",
                log.display()
            ),
        )
        .unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy must be installed (.ci/run installs it)");
        // Owned by the guard at once, so it is killed and waited for on every path.
        let proxy = Tinyproxy {
            child,
            port,
            log,
            _dir: dir,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return proxy;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tinyproxy did not start on port {port}");
    }

    fn url(&self) -> url::Url {
        format!("http://127.0.0.1:{}", self.port).parse().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn via_proxy(dir: &Path, proxy: &Tinyproxy, password: &str) -> Config {
    let mut c = config(dir);
    c.proxy.url = Some(proxy.url());
    c.proxy.username = Some("alice".into());
    c.proxy.password = Some(Secret::new(password));
    c
}

#[tokio::test]
async fn right_proxy_credentials_pass_and_the_proxy_sees_the_calls() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start();
    let s = sim(dir.path(), false).await;
    register(&via_proxy(dir.path(), &proxy, PASSWORD), &s.base_url())
        .await
        .unwrap();
    let log = proxy.log();
    assert!(
        log.contains("/jes/api/v1/register"),
        "tinyproxy log shows the call:\n{log}"
    );
}

#[tokio::test]
async fn wrong_proxy_credentials_give_the_proxy_sentence_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start();
    let s = sim(dir.path(), false).await;
    let e = register(
        &via_proxy(dir.path(), &proxy, "wrong-password-xyz"),
        &s.base_url(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.class, ErrorClass::Rejected);
    assert_eq!(
        e.message,
        format!(
            "the proxy at http://127.0.0.1:{}/ refused the credentials for user alice (HTTP 401); check jfconnect.proxy.username and proxy.password_file",
            proxy.port
        )
    );
    assert!(!format!("{e:?}").contains("wrong-password-xyz"));
    assert_eq!(s.stats().register_calls, 0, "nothing reached the origin");
}

#[tokio::test]
async fn no_proxy_bypasses_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start();
    let s = sim(dir.path(), false).await;
    let mut c = via_proxy(dir.path(), &proxy, "wrong-password-xyz");
    c.proxy.no_proxy = Some("127.0.0.1".into());
    register(&c, &s.base_url()).await.unwrap();
    assert!(!proxy.log().contains("/jes/api/v1/register"));
}

#[tokio::test]
async fn https_goes_through_the_proxy_with_connect() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start();
    let s = sim(dir.path(), true).await;
    let mut c = via_proxy(dir.path(), &proxy, PASSWORD);
    c.tls.ca_file = Some(s.ca_file().unwrap().to_path_buf());
    register(&c, &s.base_url()).await.unwrap();
    let log = proxy.log();
    assert!(
        log.contains("CONNECT"),
        "tinyproxy tunnelled the request:\n{log}"
    );
    let mut bad = via_proxy(dir.path(), &proxy, "wrong-password-xyz");
    bad.tls.ca_file = c.tls.ca_file.clone();
    let e = register(&bad, &s.base_url()).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Rejected);
    assert!(
        e.message.contains("refused to open a tunnel (CONNECT)"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("wrong-password-xyz"));
}

#[tokio::test]
async fn unreachable_proxy_has_its_own_sentence() {
    let dir = tempfile::tempdir().unwrap();
    // A port bound but never listened on refuses every connection, and stays ours for the
    // whole test: a port freed at once could be handed to the simulator (or another test)
    // bound next, which then answered as the "proxy".
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = refusing.local_addr().unwrap().port();
    let s = sim(dir.path(), false).await;
    let mut c = config(dir.path());
    c.proxy.url = Some(format!("http://127.0.0.1:{port}").parse().unwrap());
    let e = register(&c, &s.base_url()).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Unavailable);
    assert!(
        e.message.starts_with(&format!(
            "the proxy at http://127.0.0.1:{port}/ cannot be reached"
        )),
        "{}",
        e.message
    );
    drop(refusing);
}

/// `NO_PROXY=*` bypasses the proxy for every host, addresses included. reqwest's own matcher
/// read `*` as a name, so a request to 127.0.0.1 went through the proxy while jfconnect's rule
/// said it did not, and a proxy's refusal was blamed on the origin. Now one rule decides both.
#[tokio::test]
async fn a_star_no_proxy_is_routed_and_blamed_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start();
    let s = sim(dir.path(), false).await;
    let mut c = via_proxy(dir.path(), &proxy, "wrong-password-xyz");
    c.proxy.no_proxy = Some("*".into());
    let outbound = jfconnect::http::build(&c).unwrap();
    let base: url::Url = s.base_url().parse().unwrap();
    assert!(
        outbound.proxy_for(&base).is_none(),
        "the rule says 127.0.0.1 bypasses the proxy"
    );
    register(&c, &s.base_url()).await.unwrap();
    assert!(
        !proxy.log().contains("/jes/api/v1/register"),
        "routed around the proxy, as blamed:\n{}",
        proxy.log()
    );

    // And a host the rule does not name goes through the proxy, which is then blamed.
    c.proxy.no_proxy = Some("jpd.example.com".into());
    let outbound = jfconnect::http::build(&c).unwrap();
    assert!(outbound.proxy_for(&base).is_some());
    let e = register(&c, &s.base_url()).await.unwrap_err();
    assert!(
        e.message.starts_with("the proxy at "),
        "the proxy refused, and is named: {}",
        e.message
    );
}

/// The store proxy's own client (`http::build_store_client`) behind `c`, forwarding to `store`;
/// returns where it listens.
async fn store_proxy_via(c: &Config, store: &str) -> std::net::SocketAddr {
    use jfconnect::store_proxy::{self, StoreProxy};
    let proxy = std::sync::Arc::new(StoreProxy::new(
        jfconnect::http::build_store_client(c).unwrap(),
        store.parse().unwrap(),
        Duration::from_secs(10),
        std::sync::Arc::new(jfconnect::clock::SystemClock),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = store_proxy::router::<()>(proxy);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A GET of `/api/v1/store<rest>` at `addr`: status and body.
async fn through_store_proxy(addr: std::net::SocketAddr, rest: &str) -> (u16, String) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
        .get(format!("http://{addr}/api/v1/store{rest}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn the_store_proxy_goes_through_the_proxy_with_its_credentials_unless_no_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start();
    let s = sim(dir.path(), false).await;
    let addr = store_proxy_via(&via_proxy(dir.path(), &proxy, PASSWORD), &s.base_url()).await;
    let (status, body) = through_store_proxy(addr, "/_sim/stats?via=proxy").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("register_calls"),
        "the simulator answered: {body}"
    );
    let log = proxy.log();
    assert!(
        log.contains("/_sim/stats?via=proxy"),
        "tinyproxy relayed the call:\n{log}"
    );

    // Wrong credentials: the proxy's refusal reaches the caller as the proxy sent it.
    let addr = store_proxy_via(
        &via_proxy(dir.path(), &proxy, "wrong-password-xyz"),
        &s.base_url(),
    )
    .await;
    let (status, body) = through_store_proxy(addr, "/_sim/stats?via=bad").await;
    assert!(status == 401 || status == 407, "{status}: {body}");
    assert!(!body.contains("wrong-password-xyz"));

    // no_proxy: straight to the store, the (wrong) proxy credentials never matter.
    let mut c = via_proxy(dir.path(), &proxy, "wrong-password-xyz");
    c.proxy.no_proxy = Some("127.0.0.1".into());
    let addr = store_proxy_via(&c, &s.base_url()).await;
    let (status, _) = through_store_proxy(addr, "/_sim/stats?via=none").await;
    assert_eq!(status, 200);
    assert!(!proxy.log().contains("via=none"), "{}", proxy.log());
}

#[tokio::test]
async fn the_store_proxy_reaches_an_https_store_through_a_connect_tunnel_with_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Tinyproxy::start();
    let s = sim(dir.path(), true).await;
    let mut c = via_proxy(dir.path(), &proxy, PASSWORD);
    c.tls.ca_file = Some(s.ca_file().unwrap().to_path_buf());
    let addr = store_proxy_via(&c, &s.base_url()).await;
    let (status, body) = through_store_proxy(addr, "/_sim/stats").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("register_calls"), "{body}");
    assert!(proxy.log().contains("CONNECT"), "{}", proxy.log());

    // Without the CA (and without the proxy): the TLS sentence, as a 502.
    let addr = store_proxy_via(&config(dir.path()), &s.base_url()).await;
    let (status, body) = through_store_proxy(addr, "/_sim/stats").await;
    assert_eq!(status, 502, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "store_unreachable");
    assert_eq!(
        json["error"]["message"],
        "the TLS certificate of localhost is not trusted (unknown issuer); add your CA to jfconnect.tls.ca_file"
    );
}
