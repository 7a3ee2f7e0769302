//! Login, logout, the session every page needs, CSRF tokens and the same-origin check.

use super::layout;
use super::session::{Flash, Session};
use super::{Console, MOUNT};
use crate::api::auth::Scope;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::{header, request::Parts, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;

const COOKIE: &str = "jfconnect_console";

/// The sign-in form's own CSRF token, set by `GET /ui/login` before there is a session: the
/// form carries the same value in a hidden field, and a sign-in post without both, equal, is
/// refused (so another site cannot sign a browser in with a token of its choosing).
const LOGIN_COOKIE: &str = "jfconnect_login";

/// How long a sign-in form stays usable.
const LOGIN_FORM_AGE: u64 = 3600;

/// The key naming the file of the token the sign-in takes.
const TOKEN_KEY: &str = "jfconnect.api.admin_token_file";

/// The scope `presented` proves, checked as the API checks a bearer token.
fn scope_of(console: &Console, presented: &str) -> Option<Scope> {
    if presented.trim().is_empty() {
        return None;
    }
    crate::api::auth::scope_of(&console.app, presented.trim())
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    named_cookie(headers, COOKIE)
}

fn named_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Where to come back to after logging in: a console page, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with(MOUNT)
                && !n.contains("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_string()
        }
        _ => MOUNT.to_string(),
    }
}

/// The page to come back to when a form's session ended: the page the form was on.
fn page_of(path: &str) -> &'static str {
    if path.starts_with("/ui/airgap") {
        "/ui/airgap"
    } else if path.starts_with("/ui/usage") {
        "/ui/usage"
    } else {
        MOUNT
    }
}

fn to_login(next: &str) -> Response {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", next)
        .finish();
    Redirect::to(&format!("/ui/login?{q}")).into_response()
}

/// A logged-in admin: the session's cookie, CSRF token and one-shot message.
pub struct Admin {
    cookie: String,
    /// The CSRF token the page's forms carry.
    pub csrf: String,
    /// The message to show once (taken on pages, not on form posts).
    pub flash: Option<Flash>,
}

impl FromRequestParts<Arc<Console>> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Response> {
        let now = console.now();
        let page = parts.method == Method::GET;
        let found = cookie_value(&parts.headers).and_then(|id| {
            let mut sessions = console.sessions();
            let s = sessions.touch(&id, now)?;
            let flash = if page { s.flash.take() } else { None };
            Some(Admin {
                csrf: s.csrf.clone(),
                flash,
                cookie: id,
            })
        });
        found.ok_or_else(|| {
            let next = if page {
                parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or(MOUNT)
            } else {
                page_of(parts.uri.path())
            };
            to_login(next)
        })
    }
}

impl Admin {
    /// Runs `f` on this admin's session, if it is still alive.
    pub(crate) fn with_session<T>(
        &self,
        console: &Console,
        f: impl FnOnce(&mut Session) -> T,
    ) -> Option<T> {
        let now = console.now();
        console.sessions().touch(&self.cookie, now).map(f)
    }

    /// Leaves a message for the next page.
    pub fn flash(&self, console: &Console, flash: Flash) {
        self.with_session(console, |s| s.flash = Some(flash));
    }

    /// `Err` unless `presented` is this session's CSRF token.
    pub(crate) fn check_csrf(&self, presented: &str) -> Result<(), CsrfRefused> {
        let ok = crate::secret::Secret::new(self.csrf.clone()).ct_eq(presented);
        if ok {
            Ok(())
        } else {
            Err(CsrfRefused)
        }
    }
}

/// A form without this session's CSRF token: answered 403.
#[derive(Debug)]
pub(crate) struct CsrfRefused;

impl IntoResponse for CsrfRefused {
    fn into_response(self) -> Response {
        forbidden(
            "This form is out of date or did not come from this console; reload the page and try again.",
        )
    }
}

fn forbidden(text: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        layout::bare(
            "Refused",
            html! { p.flash.bad { (text) } p { a href=(MOUNT) { "Back to the overview" } } },
        ),
    )
        .into_response()
}

/// A form that carries only the CSRF token.
#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    /// The session's CSRF token.
    pub csrf: String,
}

/// A form that carries the session's CSRF token.
pub(crate) trait CarriesCsrf {
    /// The token the form carried.
    fn csrf(&self) -> &str;
}

impl CarriesCsrf for CsrfForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// A state-changing form posted by a signed-in admin, its CSRF token checked: a handler that
/// takes it cannot forget the check.
pub(crate) struct Posted<T> {
    /// Who posted it.
    pub admin: Admin,
    /// What it holds.
    pub form: T,
}

impl<T> FromRequest<Arc<Console>> for Posted<T>
where
    T: serde::de::DeserializeOwned + CarriesCsrf + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, console: &Arc<Console>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let admin = Admin::from_request_parts(&mut parts, console).await?;
        let Form(form) = Form::<T>::from_request(Request::from_parts(parts, body), &())
            .await
            .map_err(IntoResponse::into_response)?;
        admin
            .check_csrf(form.csrf())
            .map_err(IntoResponse::into_response)?;
        Ok(Posted { admin, form })
    }
}

/// Refuses a state-changing request sent from another site (`Origin` or `Sec-Fetch-Site`
/// naming another origin). The CSRF token is the check; this one stops such a request before
/// it reaches a handler.
pub(crate) async fn same_origin(request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let h = request.headers();
    let value = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    // Browsers say where a request comes from in Sec-Fetch-Site; with `Referrer-Policy:
    // no-referrer` a same-origin form posts `Origin: null`, so Origin is checked only when it
    // names a site and the browser sent no Sec-Fetch-Site.
    let foreign = match (value("sec-fetch-site"), value("origin"), value("host")) {
        (Some(site), _, _) => !matches!(site, "same-origin" | "none"),
        (None, Some(origin), Some(host)) if origin != "null" => !origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host)),
        _ => false,
    };
    if foreign {
        return forbidden("A form from another site may not change anything here.");
    }
    next.run(request).await
}

/// Writes every form post but the sign-in to the audit log, as the API's state changes are:
/// the scope (admin when a live session posted it), address, path, status and what changed.
pub async fn audit(State(console): State<Arc<Console>>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD)
        || request.uri().path() == "/ui/login"
    {
        return next.run(request).await;
    }
    let now = console.now();
    let signed_in = cookie_value(request.headers())
        .is_some_and(|id| console.sessions().touch(&id, now).is_some());
    let audited = crate::api::auth::Audited::of(&request);
    let response = next.run(request).await;
    let record = audited.answered(signed_in.then_some(Scope::Admin), &response);
    crate::api::auth::record_change(&console.app, &record).await;
    response
}

#[derive(Deserialize)]
pub(crate) struct NextQuery {
    next: Option<String>,
}

/// `GET /ui/login`.
pub(crate) async fn login_page(
    State(console): State<Arc<Console>>,
    Query(q): Query<NextQuery>,
) -> Response {
    login_form(
        &console,
        &safe_next(q.next.as_deref()),
        None,
        StatusCode::OK,
    )
}

/// The sign-in page, with a fresh form token in its cookie and its hidden field.
fn login_form(
    console: &Console,
    next: &str,
    problem: Option<&str>,
    status: StatusCode,
) -> Response {
    let token = super::session::random_token();
    let cookie = format!(
        "{LOGIN_COOKIE}={token}; Path=/ui/login; HttpOnly; SameSite=Strict; Max-Age={LOGIN_FORM_AGE}{}",
        if console.secure { "; Secure" } else { "" }
    );
    let body = html! {
        form.login method="post" action="/ui/login" {
            h1 { "jfconnect console" }
            p.muted { "Sign in with the admin token (the file named by " code { (TOKEN_KEY) } ")." }
            @if let Some(p) = problem { p.flash.bad role="alert" { (p) } }
            @if next != MOUNT { p.muted { "You will be taken back to " code { (next) } "." } }
            label for="token" { "Admin token" }
            input #token type="password" name="token" autocomplete="current-password" required autofocus;
            input type="hidden" name="next" value=(next);
            input type="hidden" name="csrf" value=(token);
            button.primary type="submit" { "Sign in" }
        }
    };
    (
        status,
        [(header::SET_COOKIE, cookie)],
        layout::bare("Sign in", body),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    next: Option<String>,
    /// The form's token; equal to the sign-in cookie's.
    csrf: Option<String>,
}

/// `POST /ui/login`: the admin token for a session cookie.
pub async fn login(State(console): State<Arc<Console>>, request: Request) -> Response {
    let addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let form_cookie = named_cookie(request.headers(), LOGIN_COOKIE);
    let Ok(Form(form)) = Form::<LoginForm>::from_request(request, &()).await else {
        return login_form(
            &console,
            MOUNT,
            Some("The sign-in form was incomplete."),
            StatusCode::BAD_REQUEST,
        );
    };
    let next = safe_next(form.next.as_deref());
    let form_ok = match (&form_cookie, &form.csrf) {
        (Some(c), Some(f)) if !c.is_empty() => crate::secret::Secret::new(c.clone()).ct_eq(f),
        _ => false,
    };
    if !form_ok {
        // Not a guess of the token: not throttled, and the token is not even looked at.
        tracing::warn!(address = %addr, "console login refused: the form's CSRF token is missing or wrong");
        return login_form(
            &console,
            &next,
            Some("This sign-in form is out of date or did not come from this console; reload the sign-in page and sign in again."),
            StatusCode::FORBIDDEN,
        );
    }
    let now = console.now();
    let throttle = |f: &mut dyn FnMut(&mut super::session::Throttle)| {
        f(&mut console.throttle.lock().unwrap_or_else(|p| p.into_inner()))
    };
    let mut waiting = None;
    throttle(&mut |t| waiting = t.check(addr, now).err());
    if let Some(wait) = waiting {
        tracing::warn!(address = %addr, "console login refused: too many failed attempts from this address");
        let minutes = wait.as_secs().div_ceil(60);
        return login_form(
            &console,
            &next,
            Some(&format!(
                "Too many failed sign-ins from this address; try again in {minutes} minute{}.",
                if minutes == 1 { "" } else { "s" }
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    match scope_of(&console, &form.token) {
        Some(Scope::Admin) => {}
        Some(Scope::Read) => {
            // The caller holds the read token: refused with what to do, not throttled.
            tracing::warn!(address = %addr, "console login with the API (read) token refused");
            return login_form(
                &console,
                &next,
                Some(&format!("That is the API token, which only reads. The console changes state: sign in with the admin token in {TOKEN_KEY}.")),
                StatusCode::FORBIDDEN,
            );
        }
        None => {
            throttle(&mut |t| t.failed(addr, now));
            tracing::warn!(address = %addr, "console login with a wrong token");
            return login_form(
                &console,
                &next,
                Some(&format!(
                    "That is not the admin token. Use the token in {TOKEN_KEY}."
                )),
                StatusCode::UNAUTHORIZED,
            );
        }
    }
    throttle(&mut |t| t.succeeded(addr));
    let id = console.sessions().start(now);
    tracing::info!(address = %addr, "console login");
    let cookie = set_cookie(&console, &id, super::session::MAX_AGE.as_secs());
    let used = format!("{LOGIN_COOKIE}=; Path=/ui/login; HttpOnly; SameSite=Strict; Max-Age=0");
    (
        axum::response::AppendHeaders([(header::SET_COOKIE, cookie), (header::SET_COOKIE, used)]),
        Redirect::to(&next),
    )
        .into_response()
}

/// `POST /ui/logout`.
pub async fn logout(
    State(console): State<Arc<Console>>,
    Posted { admin, .. }: Posted<CsrfForm>,
) -> Response {
    console.sessions().end(&admin.cookie);
    let cookie = set_cookie(&console, "", 0);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/login")).into_response()
}

/// The session cookie's header: `HttpOnly`, `SameSite=Strict`, only for `/ui`, `Secure` over
/// TLS.
fn set_cookie(console: &Console, value: &str, max_age: u64) -> String {
    format!(
        "{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if console.secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_pages_are_places_to_come_back_to() {
        assert_eq!(safe_next(Some("/ui/usage?x=1")), "/ui/usage?x=1");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/ui/\\evil",
            "/api/v1/jobs",
            "/ui/a b",
        ] {
            assert_eq!(safe_next(Some(bad)), MOUNT, "{bad}");
        }
        assert_eq!(safe_next(None), MOUNT);
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; jfconnect_console=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some("abc"));
        assert_eq!(page_of("/ui/airgap/apply"), "/ui/airgap");
        assert_eq!(page_of("/ui/jobs/usage/run"), MOUNT);
    }
}
