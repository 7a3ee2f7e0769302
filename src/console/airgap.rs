//! The air-gapped page: carry out a registration bundle or the usage bundles of the outbox;
//! bring in an entitlements bundle, see what it would change, then Apply or Cancel.
//!
//! An upload is verified at once ([`App::preview_entitlements_bundle`]: every check of an
//! import, nothing written) and kept in a temp file of the data folder for this session only;
//! the preview compares its entitlements with those held. "Apply" runs the real import, which
//! verifies again; "Cancel", a new upload, sign-out or the session's end removes the file. A
//! refused bundle shows the refusal's sentence and changes nothing.
//!
//! [`App::preview_entitlements_bundle`]: crate::app::App::preview_entitlements_bundle

use super::auth::{Admin, CarriesCsrf, CsrfForm, Posted};
use super::layout::{self, Frame, Nav};
use super::session::{random_token, Flash, PendingBundle};
use super::Console;
use crate::bundle::Kind;
use crate::entitlements::diff::{self, FeatureChange, Window};
use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use std::io::Write;
use std::sync::Arc;

const PAGE: &str = "/ui/airgap";
/// Bundles of each kind listed from the outbox.
const OUTBOX_LISTED: u64 = 10;
/// Slack for the multipart framing around the bundle.
const FORM_OVERHEAD: u64 = 64 * 1024;

fn max_bundle_bytes() -> u64 {
    crate::bundle::Limits::default().max_file_bytes
}

fn frame<'a>(console: &'a Console, admin: &'a Admin, node: &'a str) -> Frame<'a> {
    Frame {
        nav: Nav::Airgap,
        mode: super::overview::mode(console),
        node,
        csrf: &admin.csrf,
        flash: admin.flash.as_ref(),
        clustered: console.app.cluster().is_some(),
    }
}

fn back(console: &Console, admin: &Admin, flash: Flash) -> Response {
    admin.flash(console, flash);
    Redirect::to(PAGE).into_response()
}

fn outbox_table(console: &Console, kind: Kind, id: &str) -> Markup {
    match console.app.outbox_bundles(kind, OUTBOX_LISTED) {
        Ok(list) if list.is_empty() => html! { p.empty { "None in the outbox." } },
        Ok(list) => html! {
            table id=(id) {
                thead { tr { th { "Sequence" } th { "File" } @if kind == Kind::Usage { th { "Usage files" } } } }
                tbody {
                    @for b in &list {
                        @let name = b.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                        tr {
                            td.num { (b.sequence) }
                            td { a href=(format!("/ui/airgap/outbox/{name}")) download { (name) } }
                            @if kind == Kind::Usage { td.num { (b.usage_files) } }
                        }
                    }
                }
            }
        },
        Err(e) => html! { p.flash.bad { "The outbox could not be read: " (e.to_string()) } },
    }
}

/// `GET /ui/airgap`.
pub async fn page(State(console): State<Arc<Console>>, admin: Admin) -> Response {
    let node = console.app.config().shared.node.id.clone();
    if !console.app.config().airgap.enabled {
        let body = html! {
            p { "This node runs connected (" code { "jfconnect.airgap.enabled" } " is false): it registers with JES and sends usage to JCS itself, so there is nothing to carry." }
        };
        return layout::page("Air-gapped", &frame(&console, &admin, &node), body).into_response();
    }
    let pending = admin
        .with_session(&console, |s| s.pending.as_ref().map(|p| p.name.clone()))
        .flatten();
    let c = console.clone();
    let tables = tokio::task::spawn_blocking(move || {
        (
            outbox_table(&c, Kind::Registration, "registration-bundles"),
            outbox_table(&c, Kind::Usage, "usage-bundles"),
        )
    })
    .await;
    let (registrations, usage) = tables.unwrap_or_default();
    let body = html! {
        section {
            h2 { "1. Carry out" }
            p { "Take a registration bundle, and the usage bundles the usage job wrote, to the vendor's portal." }
            form method="post" action="/ui/airgap/registration" {
                input type="hidden" name="csrf" value=(admin.csrf);
                button.primary #download-registration type="submit" { "Download a new registration bundle" }
            }
            h3 { "Registration bundles in the outbox" }
            (registrations)
            h3 { "Usage bundles in the outbox" }
            (usage)
        }
        section {
            h2 { "2. Bring in" }
            p { "Upload the entitlements bundle the vendor answered. It is checked first and you see what it would change before anything changes." }
            @if let Some(name) = &pending {
                p.flash.warn { "The bundle " code { (name) } " is waiting for your decision: " a href="/ui/airgap/preview" { "review it" } "." }
            }
            form #upload method="post" action="/ui/airgap/upload" enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(admin.csrf);
                label for="bundle" { "Entitlements bundle (" code { ".jfbundle" } ", at most " (layout::bytes(max_bundle_bytes())) ")" }
                input #bundle type="file" name="bundle" accept=".jfbundle" required;
                button.primary type="submit" { "Check the bundle" }
            }
        }
    };
    layout::page("Air-gapped", &frame(&console, &admin, &node), body).into_response()
}

/// `POST /ui/airgap/registration`: a fresh registration bundle, as a download.
pub async fn registration(
    State(console): State<Arc<Console>>,
    Posted { admin, .. }: Posted<CsrfForm>,
) -> Response {
    match console.app.registration_bundle().await {
        Ok(written) => super::noted(
            download(&written.path).await,
            format!(
                "wrote registration bundle {} (sequence {})",
                written.bundle_id, written.sequence
            ),
        ),
        Err(e) => back(
            &console,
            &admin,
            Flash::bad(format!("No registration bundle was written: {e}.")),
        ),
    }
}

/// `GET /ui/airgap/outbox/{name}`: a bundle of the outbox, as a download.
pub(crate) async fn outbox_file(
    State(console): State<Arc<Console>>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Response {
    match console.app.outbox_file(&name) {
        Some(path) => download(&path).await,
        None => (StatusCode::NOT_FOUND, "no such bundle in the outbox").into_response(),
    }
}

/// Streams `path` as an attachment (bundles can be large: never read whole).
async fn download(path: &std::path::Path) -> Response {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle.jfbundle".into());
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read {name}: {e}"),
            )
                .into_response()
        }
    };
    let len = file.metadata().await.map(|m| m.len()).ok();
    let stream = futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    // The name is one this JPD wrote (letters, digits, '-' and '.'), so it needs no quoting.
    if let Ok(v) = format!("attachment; filename=\"{name}\"").parse() {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    }
    response
}

/// Why an upload could not be taken.
enum UploadError {
    TooLarge,
    BadForm(String),
    Csrf(super::auth::CsrfRefused),
    Local(String),
}

/// Reads the multipart form: the CSRF token first (checked before a byte of the file is
/// written), then the bundle into a temp file of the data folder, capped.
async fn receive(
    console: &Console,
    admin: &Admin,
    mut form: Multipart,
) -> Result<(tempfile::NamedTempFile, String), UploadError> {
    let mut csrf_ok = false;
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| UploadError::BadForm(e.body_text()))?
    {
        match field.name() {
            Some("csrf") => {
                let mut token = Vec::new();
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| UploadError::BadForm(e.body_text()))?
                {
                    token.extend_from_slice(&chunk);
                    if token.len() > 256 {
                        return Err(UploadError::BadForm("the form's token is too long".into()));
                    }
                }
                admin
                    .check_csrf(&String::from_utf8_lossy(&token))
                    .map_err(UploadError::Csrf)?;
                csrf_ok = true;
            }
            Some("bundle") if csrf_ok => {
                let name = field.file_name().unwrap_or("bundle.jfbundle").to_string();
                let dir = console.app.config().data_dir.clone();
                let mut tmp = tempfile::Builder::new()
                    .prefix(".tmp-console-upload-")
                    .tempfile_in(&dir)
                    .map_err(|e| {
                        UploadError::Local(format!(
                            "cannot create a temp file in {}: {e}",
                            dir.display()
                        ))
                    })?;
                let mut total = 0u64;
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| UploadError::BadForm(e.body_text()))?
                {
                    total += chunk.len() as u64;
                    if total > max_bundle_bytes() {
                        return Err(UploadError::TooLarge);
                    }
                    tmp.write_all(&chunk).map_err(|e| {
                        UploadError::Local(format!("cannot write the temp file: {e}"))
                    })?;
                }
                if total == 0 {
                    return Err(UploadError::BadForm("no file was chosen".into()));
                }
                return Ok((tmp, name));
            }
            // The file before the token: refused before a byte of it is written.
            Some("bundle") => return Err(UploadError::Csrf(super::auth::CsrfRefused)),
            _ => {}
        }
    }
    Err(UploadError::BadForm("the form held no bundle".into()))
}

/// `POST /ui/airgap/upload`: checks the bundle and keeps it for the preview.
pub async fn upload(
    State(console): State<Arc<Console>>,
    admin: Admin,
    headers: HeaderMap,
    form: Multipart,
) -> Response {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        Flash::bad(format!(
            "The file is over the {}-byte bundle limit; nothing was changed.",
            max_bundle_bytes()
        ))
    };
    if declared.is_some_and(|n| n > max_bundle_bytes() + FORM_OVERHEAD) {
        return back(&console, &admin, too_large());
    }
    let (tmp, name) = match receive(&console, &admin, form).await {
        Ok(got) => got,
        Err(UploadError::Csrf(r)) => return r.into_response(),
        Err(UploadError::TooLarge) => return back(&console, &admin, too_large()),
        Err(UploadError::BadForm(why)) => {
            return back(
                &console,
                &admin,
                Flash::bad(format!("The upload could not be read: {why}.")),
            )
        }
        Err(UploadError::Local(why)) => return back(&console, &admin, Flash::bad(why)),
    };
    match console.app.preview_entitlements_bundle(tmp.path()).await {
        Ok(_) => {
            let pending = PendingBundle {
                file: tmp.into_temp_path(),
                name,
                id: random_token(),
            };
            admin.with_session(&console, |s| s.pending = Some(pending));
            Redirect::to("/ui/airgap/preview").into_response()
        }
        Err(e) => back(&console, &admin, refused(&e)),
    }
}

fn refused(e: &crate::transport::airgapped::AirgapError) -> Flash {
    if e.is_bad_input() {
        Flash::bad(format!("The bundle was refused: {e}. Nothing was changed."))
    } else {
        Flash::bad(format!(
            "The bundle could not be checked: {e}. Nothing was changed."
        ))
    }
}

fn windows(ws: &[Window]) -> Markup {
    html! {
        @for (i, w) in ws.iter().enumerate() {
            @if i > 0 { br; }
            (w.valid_from.as_deref().unwrap_or("now")) " → " (w.valid_until.as_deref().unwrap_or("no end"))
        }
    }
}

/// `GET /ui/airgap/preview`: what the waiting bundle would change, with Apply and Cancel.
pub async fn preview(State(console): State<Arc<Console>>, admin: Admin) -> Response {
    let pending = admin
        .with_session(&console, |s| {
            s.pending
                .as_ref()
                .map(|p| (p.file.to_path_buf(), p.name.clone(), p.id.clone()))
        })
        .flatten();
    let Some((path, name, id)) = pending else {
        return back(
            &console,
            &admin,
            Flash::warn("No bundle is waiting; upload one first."),
        );
    };
    let preview = match console.app.preview_entitlements_bundle(&path).await {
        Ok(p) => p,
        Err(e) => {
            admin.with_session(&console, |s| s.pending = None);
            return back(&console, &admin, refused(&e));
        }
    };
    let m = preview.verified.manifest();
    let after = &preview.verified.entry().entitlements;
    let held = console.app.entitlements().snapshot().current;
    let d = diff::diff(held.as_ref().map(|c| &c.entitlements), after);
    let (added, removed, changed) = d.totals();
    let node = console.app.config().shared.node.id.clone();
    let body = html! {
        section.facts {
            h2 { "The bundle" }
            dl #bundle-facts {
                dt { "File" } dd.mono { (name) }
                dt { "Bundle id" } dd.mono { (m.bundle_id) }
                dt { "Sequence" } dd { (m.sequence) }
                dt { "Created" } dd { (m.created) }
                dt { "Expires" } dd { (m.expires) }
                dt { "For JPD" } dd.mono { (m.jpd_id) }
                dt { "Signed by vendor key" } dd.mono #signing-key {
                    (m.signing_key_id)
                    @if let Some(f) = &preview.key_file { " (" (f.display().to_string()) ")" }
                }
                dt { "Subscription" } dd {
                    @match &d.subscription_before {
                        Some((id, tier)) => { (id) " (" (tier) ")" }
                        None => { "none held" }
                    }
                    " → " (d.subscription_after.0) " (" (d.subscription_after.1) ")"
                }
            }
            p.flash.ok { "Every check passed: signature by a trusted vendor key, every entry's size and SHA-256, this JPD, not expired, newer than the last bundle imported." }
        }
        section {
            h2 { "What it would change" }
            @if d.is_empty() {
                p #diff-summary { "Nothing the products see: the same entitlements as now." }
            } @else {
                p #diff-summary { "Adds " (added) " feature" @if added != 1 { "s" } ", removes " (removed)
                    ", changes the validity of " (changed) "." }
            }
            table #diff {
                thead { tr { th { "Product" } th { "Change" } th { "Feature" } th { "Before" } th { "After" } } }
                tbody {
                    @for p in &d.products {
                        @for c in &p.changes {
                            @match c {
                                FeatureChange::Added { feature, after } => {
                                    tr.added { td { (p.product) } td { span.pill.ok { "added" } } td.feature { (feature) } td { "—" } td { (windows(after)) } }
                                }
                                FeatureChange::Removed { feature, before } => {
                                    tr.removed { td { (p.product) } td { span.pill.bad { "removed" } } td.feature { (feature) } td { (windows(before)) } td { "—" } }
                                }
                                FeatureChange::Validity { feature, before, after } => {
                                    tr.changed { td { (p.product) } td { span.pill.warn { "validity" } } td.feature { (feature) } td { (windows(before)) } td { (windows(after)) } }
                                }
                            }
                        }
                        @if p.unchanged > 0 {
                            tr.same { td { (p.product) } td { span.pill.muted { "unchanged" } } td { (p.unchanged) " feature" @if p.unchanged != 1 { "s" } } td {} td {} }
                        }
                    }
                }
            }
        }
        section.decide {
            form method="post" action="/ui/airgap/apply" {
                input type="hidden" name="csrf" value=(admin.csrf);
                input type="hidden" name="id" value=(id);
                button.primary #apply type="submit" { "Apply" }
            }
            form method="post" action="/ui/airgap/cancel" {
                input type="hidden" name="csrf" value=(admin.csrf);
                input type="hidden" name="id" value=(id);
                button #cancel type="submit" { "Cancel" }
            }
        }
    };
    layout::page(
        "Review the entitlements bundle",
        &frame(&console, &admin, &node),
        body,
    )
    .into_response()
}

/// The Apply and Cancel forms.
#[derive(Deserialize)]
pub(crate) struct DecisionForm {
    csrf: String,
    id: String,
}

impl CarriesCsrf for DecisionForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn take_pending(console: &Console, admin: &Admin, id: &str) -> Option<PendingBundle> {
    admin
        .with_session(console, |s| {
            if s.pending.as_ref().is_some_and(|p| p.id == id) {
                s.pending.take()
            } else {
                None
            }
        })
        .flatten()
}

/// `POST /ui/airgap/apply`: imports the waiting bundle (verified again by the import).
pub async fn apply(
    State(console): State<Arc<Console>>,
    Posted { admin, form }: Posted<DecisionForm>,
) -> Response {
    let Some(pending) = take_pending(&console, &admin, &form.id) else {
        return back(
            &console,
            &admin,
            Flash::warn("That bundle is no longer waiting (applied, cancelled or replaced); nothing was changed."),
        );
    };
    match console.app.import_entitlements_bundle(&pending.file).await {
        Ok(outcome) => {
            tracing::info!(bundle = %outcome.manifest.bundle_id, "entitlements bundle imported through the console");
            admin.flash(
                &console,
                Flash::ok(format!("{}.", capitalised(&outcome.summary()))),
            );
            super::noted(Redirect::to("/ui/").into_response(), outcome.summary())
        }
        Err(e) => back(&console, &admin, refused(&e)),
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `POST /ui/airgap/cancel`: forgets the waiting bundle.
pub async fn cancel(
    State(console): State<Arc<Console>>,
    Posted { admin, form }: Posted<DecisionForm>,
) -> Response {
    let flash = match take_pending(&console, &admin, &form.id) {
        Some(p) => Flash::ok(format!(
            "Cancelled: {} was not imported; nothing was changed.",
            p.name
        )),
        None => Flash::warn("No bundle was waiting; nothing was changed."),
    };
    back(&console, &admin, flash)
}
