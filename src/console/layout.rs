//! The frame every console page shares (header, navigation, message, footer) and the small
//! formatting helpers the pages use.

use super::session::Flash;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

/// Which navigation entry is the current page.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    Usage,
    Airgap,
    Cluster,
}

/// What the frame shows around a page.
pub(crate) struct Frame<'a> {
    /// The page.
    pub nav: Nav,
    /// "connected" or "air-gapped".
    pub mode: &'a str,
    /// This node.
    pub node: &'a str,
    /// The session's CSRF token (for the sign-out form).
    pub csrf: &'a str,
    /// The one-shot message.
    pub flash: Option<&'a Flash>,
    /// Whether the node is part of a cluster (the Cluster page is listed then).
    pub clustered: bool,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · jfconnect" }
            link rel="stylesheet" href="/ui/assets/console.css";
            link rel="icon" href="/ui/assets/favicon.svg" type="image/svg+xml";
        }
    }
}

/// A page without navigation (sign-in, errors).
pub(crate) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare { main { (body) } }
        }
    }
}

/// A page of the console.
pub fn page(title: &str, frame: &Frame<'_>, body: Markup) -> Markup {
    let item = |nav: Nav, href: &str, label: &str| {
        html! {
            a href=(href) aria-current=[(frame.nav == nav).then_some("page")] { (label) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/ui/" { span.logo {} "jfconnect" }
                    nav {
                        (item(Nav::Overview, "/ui/", "Overview"))
                        (item(Nav::Usage, "/ui/usage", "Usage"))
                        (item(Nav::Airgap, "/ui/airgap", "Air-gapped"))
                        @if frame.clustered { (item(Nav::Cluster, "/ui/cluster", "Cluster")) }
                    }
                    span.mode { (frame.mode) }
                    form.logout method="post" action="/ui/logout" {
                        input type="hidden" name="csrf" value=(frame.csrf);
                        button.link type="submit" { "Sign out" }
                    }
                }
                main {
                    h1 { (title) }
                    @if let Some(f) = frame.flash {
                        p class=(format!("flash {}", f.tone)) role="status" id="flash" { (f.text) }
                    }
                    (body)
                }
                footer { "node " (frame.node) }
            }
        }
    }
}

/// A time as `2026-12-01 14:05 UTC (3h ago)`, or a dash.
pub fn when(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        None => "—".into(),
        Some(t) => {
            let secs = (t - now).num_seconds();
            let rel = if secs.abs() < 5 {
                "just now".to_string()
            } else if secs > 0 {
                format!("in {}", span(secs))
            } else {
                format!("{} ago", span(-secs))
            };
            format!("{} ({rel})", t.format("%Y-%m-%d %H:%M UTC"))
        }
    }
}

/// A duration in seconds as `45s`, `12m`, `5h` or `3d`.
pub fn span(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Bytes as `532 B`, `4.2 KiB`, `1.5 MiB`, ...
pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_spans_read_well() {
        assert_eq!(bytes(532), "532 B");
        assert_eq!(bytes(4300), "4.2 KiB");
        assert_eq!(span(45), "45s");
        assert_eq!(span(3 * 86400), "3d");
    }
}
