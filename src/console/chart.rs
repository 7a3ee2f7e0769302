//! The usage chart, drawn on the server as SVG: one stacked bar per day, one colour per
//! product, no script and no chart library.
//!
//! Architecture invariant: this module does no I/O; product names (from usage files, so
//! untrusted) reach the SVG only through the template's escaping.

use chrono::NaiveDate;
use maud::{html, Markup};
use std::collections::BTreeMap;

/// Products drawn with their own colour; the rest share one.
const COLOURS: usize = 8;
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 20.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;

/// One product's part of a day's bar.
struct Segment {
    class: String,
    y: f64,
    h: f64,
    title: String,
}

/// One day's bar: where it starts and its segments, bottom first.
struct Bar {
    x: f64,
    day: NaiveDate,
    segments: Vec<Segment>,
}

/// One day's counts by product.
pub(crate) type Day = (NaiveDate, BTreeMap<String, u64>);

/// The products in the legend, most files first, at most [`COLOURS`] - 1 (the last colour is
/// for all others), and whether there are others.
fn legend(days: &[Day]) -> (Vec<String>, bool) {
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, products) in days {
        for (p, n) in products {
            *totals.entry(p).or_default() += n;
        }
    }
    let mut ranked: Vec<(&str, u64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let others = ranked.len() > COLOURS - 1;
    (
        ranked
            .into_iter()
            .take(COLOURS - 1)
            .map(|(p, _)| p.to_string())
            .collect(),
        others,
    )
}

/// A round upper bound for the axis.
fn axis_max(max: u64) -> u64 {
    let mut step = 1;
    while step * 20 < max {
        step *= 10;
    }
    max.div_ceil(step).max(1) * step
}

/// The chart of `days` (oldest first), or a sentence when nothing was counted.
pub(crate) fn usage_chart(days: &[Day]) -> Markup {
    let total: u64 = days.iter().flat_map(|(_, p)| p.values()).sum();
    if total == 0 {
        return html! { p.empty { "No usage files were acknowledged in these days." } };
    }
    let (named, others) = legend(days);
    let colour = |product: &str| {
        named
            .iter()
            .position(|n| n == product)
            .unwrap_or(COLOURS - 1)
    };
    let max = days
        .iter()
        .map(|(_, p)| p.values().sum::<u64>())
        .max()
        .unwrap_or(0);
    let top = axis_max(max);
    let plot_h = HEIGHT - BOTTOM - TOP;
    let slot = (WIDTH - LEFT - RIGHT) / days.len().max(1) as f64;
    let bar = (slot * 0.7).max(1.0);
    let y_of = |v: u64| TOP + plot_h - plot_h * v as f64 / top as f64;
    // Per day: where the bar starts, and each product's segment.
    let bars: Vec<Bar> = days
        .iter()
        .enumerate()
        .map(|(i, (day, products))| {
            let mut base = 0u64;
            let segments = products
                .iter()
                .map(|(product, n)| {
                    let (y0, y1) = (y_of(base), y_of(base + n));
                    base += n;
                    Segment {
                        class: format!("bar c{}", colour(product)),
                        y: y1,
                        h: (y0 - y1).max(0.5),
                        title: format!("{day} {product}: {n}"),
                    }
                })
                .collect();
            Bar {
                x: LEFT + slot * i as f64 + (slot - bar) / 2.0,
                day: *day,
                segments,
            }
        })
        .collect();
    html! {
        figure.chart {
            svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {WIDTH} {HEIGHT}"))
                role="img" aria-label=(format!("usage files per day and product, {} days", days.len())) {
                @for tick in [0, top / 2, top] {
                    line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y_of(tick)) y2=(y_of(tick)) {}
                    text.axis x=(LEFT - 6.0) y=(y_of(tick) + 4.0) text-anchor="end" { (tick) }
                }
                @for (i, Bar { x, day, segments }) in bars.iter().enumerate() {
                    @for s in segments {
                        rect class=(s.class) x=(format!("{x:.1}")) y=(format!("{:.1}", s.y))
                            width=(format!("{bar:.1}")) height=(format!("{:.1}", s.h)) {
                            title { (s.title) }
                        }
                    }
                    @if i % 5 == 0 || i + 1 == days.len() {
                        text.axis x=(format!("{:.1}", x + bar / 2.0)) y=(HEIGHT - 8.0) text-anchor="middle" {
                            (day.format("%m-%d"))
                        }
                    }
                }
            }
            figcaption {
                ul.legend {
                    @for (i, product) in named.iter().enumerate() {
                        li { span class=(format!("swatch c{i}")) {} (product) }
                    }
                    @if others {
                        li { span class=(format!("swatch c{}", COLOURS - 1)) {} "other products" }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32, counts: &[(&str, u64)]) -> Day {
        (
            NaiveDate::from_ymd_opt(2026, 11, d).unwrap(),
            counts.iter().map(|(p, n)| (p.to_string(), *n)).collect(),
        )
    }

    #[test]
    fn bars_stack_per_product_and_names_are_escaped() {
        let days = vec![
            day(1, &[("xray", 3), ("<b>evil</b>", 1)]),
            day(2, &[]),
            day(3, &[("xray", 6)]),
        ];
        let svg = usage_chart(&days).into_string();
        assert_eq!(svg.matches("<rect").count(), 3, "{svg}");
        assert!(!svg.contains("<b>"), "{svg}");
        assert!(svg.contains("&lt;b&gt;evil&lt;/b&gt;"), "{svg}");
        assert!(svg.contains("2026-11-03 xray: 6"), "{svg}");
        // The axis tops out at a round number over the highest day.
        assert!(
            svg.contains(">6</text>") || svg.contains(">10</text>"),
            "{svg}"
        );
    }

    #[test]
    fn nothing_counted_is_a_sentence_not_an_empty_chart() {
        let out = usage_chart(&[day(1, &[])]).into_string();
        assert!(!out.contains("<svg"));
        assert!(out.contains("No usage files"));
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(axis_max(0), 1);
        assert_eq!(axis_max(7), 7);
        assert_eq!(axis_max(13), 13);
        assert_eq!(axis_max(47), 50);
        assert_eq!(axis_max(999), 1000);
        assert_eq!(axis_max(1001), 1100);
    }
}
