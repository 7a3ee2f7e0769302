//! The one outbound HTTP client: timeouts, TLS trust and proxy set once for every remote (JES,
//! JCS, the JPD, the store), and the one place where a failed request becomes a classified
//! [`TransportError`] with a sentence a person can act on.
//!
//! Architecture invariant: every outbound request is sent by a client built here.

use crate::config::Config;
use crate::remote::{class_of_status, ErrorClass, Service, TransportError};
use url::Url;

mod cause;
pub mod no_proxy;
mod store;

pub use store::build_store_client;
pub use store::{StoreBody, StoreClient, StoreResponse, StoreSendError};

/// Errors building the client (bad CA file, bad proxy).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA file could not be read or holds no certificate.
    #[error("cannot use jfconnect.tls.ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The proxy setting could not be used.
    #[error("cannot use the proxy {url}: {reason}")]
    Proxy {
        /// The proxy URL (no credentials).
        url: String,
        /// Why.
        reason: String,
    },
    /// reqwest refused the settings.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// How long an outbound connection may sit idle in the pool before it is dropped. Servers close
/// idle keep-alive connections on their own schedule (the simulator after 30 s, load balancers
/// and Tomcat commonly after 60 s); a request written on a connection at the moment the server
/// closes it is lost with "connection closed before message completed" (hyper's
/// `IncompleteMessage`), which reqwest cannot retry. Dropping idle connections before any
/// common server limit keeps jfconnect out of that race; reqwest's default is 90 s.
pub const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The `User-Agent` of every outbound request that does not carry one already.
const USER_AGENT: &str = concat!("jfconnect/", env!("CARGO_PKG_VERSION"));

/// The HTTP client type every outbound caller holds; built only here.
pub use reqwest::Client;

/// The request and answer types the clients above hold (answers, streamed bodies, headers,
/// statuses, a failed send), named here so that `http/` is the one module that names reqwest.
pub use reqwest::{header, Body, Error, Response, StatusCode};

/// A client for a loopback peer jfconnect runs itself (the demo calling its own API): no
/// proxy, the system's roots, a whole-request timeout.
#[cfg(feature = "sim")] // only the simulator uses it
pub(crate) fn loopback_client(timeout: std::time::Duration) -> Result<Client, ClientError> {
    Client::builder()
        .no_proxy()
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .timeout(timeout)
        .build()
        .map_err(|e| ClientError::Build(e.to_string()))
}

/// A proxy jfconnect uses, as shown in `status` and in error sentences (no password).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProxyInfo {
    /// Which requests use it: `all`, `https` or `http`.
    pub scope: &'static str,
    /// Its URL without credentials.
    pub url: String,
    /// The user name sent to it, if any.
    pub username: Option<String>,
    /// True when a password is sent (never the password itself).
    pub password_set: bool,
    /// Where the setting came from: `jfconnect.proxy.url` or `environment variable HTTPS_PROXY`.
    pub source: String,
    /// Hosts that bypass it, and where that list came from.
    pub no_proxy: Option<String>,
}

/// The proxies in effect for `config`: the configured one, or else the standard
/// `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` variables (upper or lower case) of the environment
/// captured with the configuration.
pub(crate) fn proxies_in_effect(
    config: &Config,
) -> Result<Vec<(ProxyInfo, Option<crate::secret::Secret>, Url)>, ClientError> {
    let p = &config.proxy;
    if let Some(url) = &p.url {
        let info = ProxyInfo {
            scope: "all",
            url: redact_url(url),
            username: p.username.clone(),
            password_set: p.password.is_some(),
            source: "jfconnect.proxy.url".into(),
            no_proxy: p.no_proxy.clone(),
        };
        return Ok(vec![(info, p.password.clone(), url.clone())]);
    }
    let env = &config.env;
    let read = |upper: &str| {
        env.var(upper)
            .map(|v| (v, upper.to_string()))
            .or_else(|| {
                env.var(&upper.to_lowercase())
                    .map(|v| (v, upper.to_lowercase()))
            })
            .filter(|(v, _)| !v.trim().is_empty())
    };
    let no_proxy = p
        .no_proxy
        .clone()
        .or_else(|| read("NO_PROXY").map(|(v, _)| v));
    let mut out = Vec::new();
    for (var, scope) in [("HTTPS_PROXY", "https"), ("HTTP_PROXY", "http")] {
        let Some((value, name)) = read(var) else {
            continue;
        };
        let with_scheme = if value.contains("://") {
            value.clone()
        } else {
            format!("http://{value}")
        };
        let url = Url::parse(&with_scheme).map_err(|e| ClientError::Proxy {
            url: format!("environment variable {name}"),
            reason: format!("not a URL ({e})"),
        })?;
        let username = (!url.username().is_empty()).then(|| decode(url.username()));
        let password = url
            .password()
            .map(|p| crate::secret::Secret::new(decode(p)));
        let info = ProxyInfo {
            scope,
            url: redact_url(&url),
            username,
            password_set: password.is_some(),
            source: format!("environment variable {name}"),
            no_proxy: no_proxy.clone(),
        };
        out.push((info, password, url));
    }
    Ok(out)
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// The outbound client with what it needs to explain its failures.
#[derive(Clone)]
pub struct Outbound {
    /// The client.
    pub client: reqwest::Client,
    /// The proxies it uses.
    pub proxies: Vec<ProxyInfo>,
}

/// Builds the outbound client from the configuration (and the proxy variables captured with it).
pub fn build(config: &Config) -> Result<Outbound, ClientError> {
    // reqwest's own reading of the environment is turned off: the proxies used are exactly the
    // ones `proxies_in_effect` reports, so `status` never lies about them.
    let mut builder = reqwest::Client::builder()
        .connect_timeout(config.http.connect_timeout)
        .timeout(config.http.request_timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .user_agent(USER_AGENT)
        .use_rustls_tls()
        .no_proxy();
    if let Some((_, certs)) = ca_certs(config)? {
        for cert in certs {
            let cert = reqwest::Certificate::from_der(&cert)
                .map_err(|e| ClientError::Build(e.to_string()))?;
            builder = builder.add_root_certificate(cert);
        }
    }
    let proxies = proxies_in_effect(config)?;
    for (info, password, url) in &proxies {
        let mut bare = url.clone();
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        // reqwest routes with this very decision (not its own NO_PROXY reading), so the
        // proxy a request went through is the one `proxy_for` blames.
        reqwest::Proxy::all(bare.as_str()).map_err(|e| ClientError::Proxy {
            url: info.url.clone(),
            reason: e.to_string(),
        })?;
        let scope = info.scope;
        let rule = info.no_proxy.as_deref().map(no_proxy::NoProxyRule::parse);
        let mut p = reqwest::Proxy::custom(move |target: &Url| {
            routes_via(
                scope,
                rule.as_ref(),
                target.scheme(),
                target.host_str().unwrap_or(""),
            )
            .then(|| bare.clone())
        });
        if let Some(user) = &info.username {
            p = p.basic_auth(user, password.as_ref().map(|s| s.expose()).unwrap_or(""));
        }
        builder = builder.proxy(p);
    }
    let client = builder
        .build()
        .map_err(|e| ClientError::Build(e.to_string()))?;
    Ok(Outbound {
        client,
        proxies: proxies.into_iter().map(|(i, _, _)| i).collect(),
    })
}

/// The certificates of `tls.ca_file`, with the file's name, when one is set: read within the
/// text-file cap, PEM, at least one certificate. Both clients trust them.
fn ca_certs(
    config: &Config,
) -> Result<Option<(String, Vec<rustls_pki_types::CertificateDer<'static>>)>, ClientError> {
    use rustls_pki_types::pem::PemObject;
    let Some(path) = &config.tls.ca_file else {
        return Ok(None);
    };
    let ca_err = |reason: String| ClientError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = crate::secret::read_limited(path, crate::secret::MAX_TEXT_FILE)
        .map_err(|e| ca_err(e.to_string()))?;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ca_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(ca_err("it holds no PEM certificate".into()));
    }
    Ok(Some((path.display().to_string(), certs)))
}

/// Whether a request to `scheme://host` goes through a proxy of `scope` (`all`, `https`,
/// `http`) with the `no_proxy` rule: the one decision both clients route with and
/// [`Outbound::proxy_for`] blames with.
fn routes_via(
    scope: &str,
    no_proxy: Option<&no_proxy::NoProxyRule>,
    scheme: &str,
    host: &str,
) -> bool {
    (scope == "all" || scope == scheme) && !no_proxy.is_some_and(|r| r.bypasses(host))
}

/// Builds the outbound client (without the proxy details; see [`build`]).
pub fn build_client(config: &Config) -> Result<reqwest::Client, ClientError> {
    build(config).map(|o| o.client)
}

/// Adds the current trace id (a job run's or an API request's) to an outbound request, so
/// JES, JCS, the JPD and the store can be correlated with our logs.
pub(crate) fn traced(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match crate::logging::current_trace_id() {
        Some(id) => request.header(crate::logging::TRACE_HEADER, id),
        None => request,
    }
}

impl Outbound {
    /// A GET to `url`, carrying the trace id.
    pub fn get(&self, url: &Url) -> reqwest::RequestBuilder {
        traced(self.client.get(url.clone()))
    }

    /// A POST to `url`, carrying the trace id.
    pub fn post(&self, url: &Url) -> reqwest::RequestBuilder {
        traced(self.client.post(url.clone()))
    }

    /// A PUT to `url`, carrying the trace id.
    pub fn put(&self, url: &Url) -> reqwest::RequestBuilder {
        traced(self.client.put(url.clone()))
    }

    /// The proxy a request to `url` goes through, if any: the same decision the client routes
    /// with (see [`routes_via`]).
    pub fn proxy_for(&self, url: &Url) -> Option<&ProxyInfo> {
        self.proxies.iter().find(|p| {
            let rule = p.no_proxy.as_deref().map(no_proxy::NoProxyRule::parse);
            routes_via(
                p.scope,
                rule.as_ref(),
                url.scheme(),
                url.host_str().unwrap_or(""),
            )
        })
    }

    /// Classifies a failed send, blaming the proxy when it was the proxy that failed: a CONNECT
    /// the proxy refused or could not open, or a refused connection while a proxy was in effect
    /// (the connection was then to the proxy, not to the origin).
    pub(crate) fn send_error(
        &self,
        err: &reqwest::Error,
        service: Service,
        url: &Url,
    ) -> TransportError {
        let cause = cause::of(err);
        if let Some(p) = self.proxy_for(url) {
            let host = url.host_str().unwrap_or("?");
            let blamed = match cause.tunnel {
                Some(cause::Tunnel::AuthRequired) => Some(proxy_credentials(p, 407)),
                Some(cause::Tunnel::Refused) => Some(TransportError::rejected(None, format!(
                    "the proxy at {} refused to open a tunnel (CONNECT) to {host}:{}; check jfconnect.proxy.username and proxy.password_file, and that the proxy allows CONNECT to that port",
                    p.url, url.port_or_known_default().unwrap_or(443)
                ))),
                Some(cause::Tunnel::NotOpened) => Some(proxy_unreachable(p, &cause)),
                None if cause.refused && !cause.timeout => Some(proxy_unreachable(p, &cause)),
                None => None,
            };
            if let Some(e) = blamed {
                return e.with_chain(cause.chain);
            }
        }
        classify_cause(cause, service, url)
    }

    /// Classifies an HTTP answer that is not a success, recognising a proxy's refusal: a 407,
    /// or the 401 that some proxies (tinyproxy) send instead, told apart from the origin's own
    /// 401 by the proxy's `Server` header with no `Via` (a relayed answer carries `Via`) or a
    /// `Proxy-Authenticate` header.
    pub(crate) fn status_error(
        &self,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        service: Service,
        url: &Url,
        detail: &str,
    ) -> TransportError {
        if let Some(p) = self.proxy_for(url) {
            let from_proxy = status == 407
                || (status == 401
                    && (headers.contains_key(reqwest::header::PROXY_AUTHENTICATE)
                        || (!headers.contains_key(reqwest::header::VIA)
                            && headers
                                .get(reqwest::header::SERVER)
                                .and_then(|v| v.to_str().ok())
                                .is_some_and(|s| {
                                    s.to_ascii_lowercase().starts_with("tinyproxy")
                                }))));
            if from_proxy {
                return proxy_credentials(p, status);
            }
        }
        classify_status(status, service, url, detail)
    }
}

fn proxy_credentials(p: &ProxyInfo, status: u16) -> TransportError {
    let user = p
        .username
        .as_deref()
        .map(|u| format!("the credentials for user {u}"))
        .unwrap_or_else(|| "the request (no credentials were sent)".into());
    TransportError::rejected(
        Some(status),
        format!(
            "the proxy at {} refused {user} (HTTP {status}); check jfconnect.proxy.username and proxy.password_file",
            p.url
        ),
    )
}

/// A URL with any user name and password removed, for messages.
pub(crate) fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

fn proxy_unreachable(p: &ProxyInfo, cause: &cause::Cause) -> TransportError {
    TransportError::unavailable(
        None,
        format!(
            "the proxy at {} cannot be reached ({}); check {} and that the proxy runs",
            p.url,
            if cause.refused {
                "connection refused"
            } else {
                "no tunnel"
            },
            p.source
        ),
    )
}

/// Turns a failed send (no HTTP answer) into a classified error naming `service` ("JES"), the
/// URL it was called at (with its port) and the key that holds that URL, with what to do next.
/// The error's source chain is kept in [`TransportError::chain`] for logs. `err` is either
/// client's: a `reqwest::Error` or a [`StoreSendError`].
pub fn classify_send_error(
    err: &(dyn std::error::Error + 'static),
    service: Service,
    url: &Url,
) -> TransportError {
    classify_cause(cause::of(err), service, url)
}

/// Whether a failed send (either client's) ran out of time, connecting or waiting.
pub(crate) fn send_timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    cause::of(err).timeout
}

/// `scheme://host:port` of `url`, the port always written, for sentences.
fn origin(url: &Url) -> String {
    format!("{}://{}", url.scheme(), host_port(url))
}

/// `host:port` of `url`, the port always written.
fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

fn classify_cause(cause: cause::Cause, service: Service, url: &Url) -> TransportError {
    let host = url.host_str().unwrap_or("?").to_string();
    let (at, key, hp) = (origin(url), service.url_key(), host_port(url));
    tracing::debug!(service = %service, host = %host, chain = %cause.chain, "request failed");
    let message = if cause.timeout {
        format!("{service} at {at} did not answer in time (timeout); it will be retried")
    } else if let Some(why) = cause.tls {
        tls_sentence(why, &hp, &host, key)
    } else if cause.dns {
        format!("cannot resolve the {service} host {host} (DNS) of {key}; check the URL and the network, and that {host} is allowlisted in your firewall")
    } else if cause.refused {
        format!("{service} at {at} refused the connection; check that it runs there, that {key} is right, and that {hp} is allowlisted in your firewall")
    } else if cause.cut {
        format!("the connection to {service} at {at} was cut before an answer; it will be retried")
    } else {
        format!("cannot reach {service} at {at} ({key}): {}; check the network and that {hp} is allowlisted", first_line(&cause.chain))
    };
    TransportError::unavailable(None, message).with_chain(cause.chain)
}

/// What a failed handshake means for the admin. Every sentence starts "the TLS certificate".
fn tls_sentence(why: cause::TlsWhy, host_port: &str, host: &str, key: &str) -> String {
    match why {
        cause::TlsWhy::UnknownIssuer => format!(
            "the TLS certificate of {host} is not trusted (unknown issuer); add your CA to jfconnect.tls.ca_file"
        ),
        cause::TlsWhy::NameMismatch => format!(
            "the TLS certificate presented at {host_port} is not issued for the host name {host} in {key} (name mismatch); put a host name the certificate names in {key}, or have the certificate reissued for {host}"
        ),
        cause::TlsWhy::Expired => format!(
            "the TLS certificate presented at {host_port} has expired (or this machine's clock is wrong); renew the certificate or correct the clock"
        ),
        cause::TlsWhy::Handshake => format!(
            "the TLS certificate of {host_port} could not be checked (handshake failed); check that {key} names an HTTPS port"
        ),
    }
}

/// Classifies an HTTP answer that is not a success.
pub(crate) fn classify_status(
    status: u16,
    service: Service,
    url: &Url,
    detail: &str,
) -> TransportError {
    let host = url.host_str().unwrap_or("?");
    let class = class_of_status(status);
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(": {}", first_line(detail))
    };
    let message = match class {
        ErrorClass::Rejected => {
            format!("{service} at {host} refused the request (HTTP {status}){detail}")
        }
        _ => format!("{service} at {host} failed (HTTP {status}){detail}; it will be retried"),
    };
    TransportError {
        class,
        status: Some(status),
        message,
        chain: None,
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    line.chars().take(200).collect()
}

/// Pulls the `message` of a `{"error": {...}}` body, or a short prefix of the text.
pub(crate) fn error_detail(body: &[u8]) -> String {
    if let Ok(e) = serde_json::from_slice::<crate::protocol::ErrorBody>(body) {
        return e.error.message;
    }
    first_line(&String::from_utf8_lossy(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProcessEnv;

    fn env(pairs: &[(&str, &str)]) -> ProcessEnv {
        ProcessEnv::from_vars(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn proxy(c: &mut Config, url: &str, username: Option<&str>, password: Option<&str>) {
        c.proxy.url = Some(Url::parse(url).unwrap());
        c.proxy.username = username.map(String::from);
        c.proxy.password = password.map(crate::secret::Secret::new);
    }

    fn config() -> Config {
        Config::defaults(std::path::PathBuf::from("/tmp/x"))
    }

    #[test]
    fn configured_proxy_wins_over_environment() {
        let mut c = config();
        proxy(&mut c, "http://proxy.corp:3128", Some("alice"), Some("pw"));
        c.env = env(&[("HTTPS_PROXY", "http://other:1")]);
        let p = proxies_in_effect(&c).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0.source, "jfconnect.proxy.url");
        assert_eq!(p[0].0.scope, "all");
        assert!(p[0].0.password_set);
    }

    #[test]
    fn environment_proxies_are_used_when_none_is_configured() {
        let mut c = config();
        c.env = env(&[
            ("https_proxy", "http://bob:p%40ss@proxy:3128"),
            ("HTTP_PROXY", "proxy2:8080"),
            ("NO_PROXY", ".local"),
        ]);
        let p = proxies_in_effect(&c).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0.source, "environment variable https_proxy");
        assert_eq!(p[0].0.username.as_deref(), Some("bob"));
        assert_eq!(p[0].1.as_ref().unwrap().expose(), "p@ss");
        assert!(
            !p[0].0.url.contains("p%40ss") && !p[0].0.url.contains("bob"),
            "{}",
            p[0].0.url
        );
        assert_eq!(p[1].0.url, "http://proxy2:8080/");
        assert_eq!(p[1].0.no_proxy.as_deref(), Some(".local"));
    }

    #[test]
    fn no_proxy_decides_which_requests_blame_the_proxy() {
        let mut c = config();
        proxy(&mut c, "http://proxy:3128", None, None);
        c.proxy.no_proxy = Some("jpd.local,10.0.0.0/8".into());
        let o = build(&c).unwrap();
        assert!(o
            .proxy_for(&Url::parse("https://jes.jfrog.io/x").unwrap())
            .is_some());
        assert!(
            o.proxy_for(&Url::parse("http://127.0.0.1:8082/").unwrap())
                .is_some(),
            "loopback too, unless named"
        );
        assert!(o
            .proxy_for(&Url::parse("http://jpd.local:8082/").unwrap())
            .is_none());
        assert!(o
            .proxy_for(&Url::parse("http://10.1.2.3/").unwrap())
            .is_none());
    }

    #[test]
    fn tinyproxy_401_is_told_apart_from_the_origins_401() {
        let mut c = config();
        proxy(&mut c, "http://proxy:3128", Some("alice"), None);
        let o = build(&c).unwrap();
        let url = Url::parse("http://jes.example.com/x").unwrap();
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::SERVER, "tinyproxy/1.11.1".parse().unwrap());
        let e = o.status_error(401, &h, Service::Jes, &url, "");
        assert!(
            e.message.starts_with(
                "the proxy at http://proxy:3128/ refused the credentials for user alice (HTTP 401)"
            ),
            "{}",
            e.message
        );
        h.insert(
            reqwest::header::VIA,
            "1.1 vm (tinyproxy/1.11.1)".parse().unwrap(),
        );
        let e = o.status_error(401, &h, Service::Jes, &url, "");
        assert!(
            e.message.starts_with("JES at jes.example.com refused"),
            "relayed origin 401: {}",
            e.message
        );
        let e = o.status_error(
            407,
            &reqwest::header::HeaderMap::new(),
            Service::Jes,
            &url,
            "",
        );
        assert!(e.message.contains("HTTP 407"), "{}", e.message);
    }
}
