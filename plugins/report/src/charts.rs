//! Inline SVG charts: the loss and data-mix charts drawn with `plotters`' SVG backend, the small
//! per-metric charts of forgetting and scaling written directly (reference lines, marked points
//! with hover titles). Text is written as `<text>` elements (no font files are read), so the
//! bytes depend only on the data.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::analysis::fmt_num;
use crate::data::{MixtureData, StageData};

const SIZE: (u32, u32) = (1000, 380);
const FONT: &str = "sans-serif";

/// A colour-blind-friendly palette (Okabe-Ito), then greys.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
    RGBColor(90, 90, 90),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Width of the legend column right of the plot.
const LEGEND_WIDTH: u32 = 210;

/// Legend entries (colour swatch and name) in the column right of the plot, so they never hide data.
fn legend<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, names: &[String]) -> Option<()> {
    for (i, name) in names.iter().enumerate() {
        let y = 40 + 24 * i as i32;
        area.draw(&Rectangle::new([(8, y - 6), (26, y + 6)], color(i).filled())).ok()?;
        area.draw(&Text::new(
            name.clone(),
            (34, y),
            TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .ok()?;
    }
    Some(())
}

/// One line of a line chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Padded axis range covering every value.
fn range(values: impl Iterator<Item = f64>) -> Option<std::ops::Range<f64>> {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return None;
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { lo.abs().max(1.0) * 0.05 };
    Some(lo - pad..hi + pad)
}

/// Tokens with a k/M/B suffix for axis labels.
pub fn fmt_tokens(x: f64) -> String {
    let a = x.abs();
    if a >= 1e9 {
        format!("{}B", fmt_num(x / 1e9))
    } else if a >= 1e6 {
        format!("{}M", fmt_num(x / 1e6))
    } else if a >= 1e3 {
        format!("{}k", fmt_num(x / 1e3))
    } else {
        fmt_num(x)
    }
}

/// A line chart with markers; `None` without any point.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Option<String> {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let x = range(points().map(|p| p.0))?;
    let y = range(points().map(|p| p.1))?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let (plot, side) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
        legend(&side, &series.iter().map(|s| s.name.clone()).collect::<Vec<_>>())?;
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(x, y)
            .ok()?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|v| fmt_tokens(*v))
            .y_label_formatter(&|v| fmt_num(*v))
            .label_style((FONT, 15))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .ok()?;
        for (i, s) in series.iter().enumerate() {
            let style = color(i).stroke_width(2);
            chart.draw_series(LineSeries::new(s.points.iter().copied(), style)).ok()?;
            if s.points.len() <= 50 {
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color(i).filled()))).ok()?;
            }
        }
        root.present().ok()?;
    }
    Some(svg)
}

/// Training loss of every stage against tokens seen over the whole run.
pub fn loss_chart(stages: &[StageData]) -> Option<String> {
    let series: Vec<Series> = stages
        .iter()
        .filter(|s| !s.steps.is_empty())
        .map(|s| {
            let before = s.tokens_before() as f64;
            Series {
                name: s.node.clone(),
                points: s.steps.iter().map(|m| (before + m.tokens as f64, m.loss)).collect(),
            }
        })
        .collect();
    line_chart("Training loss per stage", "tokens seen (whole run)", "loss", &series)
}

/// Stacked bars: tokens per language in each mixture (the paper's Figure 2).
pub fn language_chart(mixtures: &[MixtureData]) -> Option<String> {
    if mixtures.is_empty() {
        return None;
    }
    let languages: Vec<&str> = mixtures
        .iter()
        .flat_map(|m| m.languages.keys().map(String::as_str))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let top = mixtures.iter().map(|m| m.languages.values().sum::<u64>()).max()? as f64;
    if top <= 0.0 {
        return None;
    }
    let labels: BTreeMap<i64, String> = mixtures.iter().enumerate().map(|(i, m)| (i as i64, m.node.clone())).collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let (plot, side) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
        legend(&side, &languages.iter().map(|l| l.to_string()).collect::<Vec<_>>())?;
        let mut chart = ChartBuilder::on(&plot)
            .caption("Tokens per language per stage", (FONT, 22))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5f64..mixtures.len() as f64 - 0.5, 0f64..top * 1.05)
            .ok()?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(mixtures.len())
            .x_label_formatter(&|v| {
                let i = v.round() as i64;
                if (v - i as f64).abs() < 1e-9 { labels.get(&i).cloned().unwrap_or_default() } else { String::new() }
            })
            .y_label_formatter(&|v| fmt_tokens(*v))
            .y_desc("tokens")
            .label_style((FONT, 15))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .ok()?;
        for (li, lang) in languages.iter().enumerate() {
            let bars: Vec<Rectangle<(f64, f64)>> = mixtures
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    let below: u64 = languages[..li].iter().filter_map(|l| m.languages.get(*l)).sum();
                    let own = *m.languages.get(*lang)?;
                    let x = i as f64;
                    Some(Rectangle::new([(x - 0.3, below as f64), (x + 0.3, (below + own) as f64)], color(li).filled()))
                })
                .collect();
            chart.draw_series(bars).ok()?;
        }
        root.present().ok()?;
    }
    Some(svg)
}

/// One point of a [`MetricChart`]: a checkpoint's value of the metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub checkpoint: String,
    pub tokens: f64,
    pub value: f64,
    /// The change against the baseline, as the forgetting table writes it (`-16.7%`).
    pub change: Option<String>,
    /// Worse than the baseline by more than the threshold.
    pub regression: bool,
}

/// A small chart of one metric of one evaluator against training tokens seen, with the
/// baseline's value as a reference line and regressions marked.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricChart {
    pub evaluator: String,
    pub metric: String,
    /// ` ↑` or ` ↓` (or empty), after the metric's name.
    pub direction: &'static str,
    /// Sorted by tokens.
    pub points: Vec<MetricPoint>,
    /// The baseline checkpoint's label and value.
    pub reference: Option<(String, f64)>,
}

const SMALL: (f64, f64) = (320.0, 200.0);
/// Plot area: left, top, right, bottom edges.
const PLOT: (f64, f64, f64, f64) = (52.0, 30.0, 284.0, 162.0);
const BLUE: &str = "#0072b2";
const RED: &str = "#c62828";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Round ticks covering `lo..=hi` (about `n` of them), and the range they span.
fn ticks(lo: f64, hi: f64, n: usize) -> (Vec<f64>, f64, f64) {
    let span = hi - lo;
    let raw = span / n as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    let ticks: Vec<f64> = (first..=last).map(|i| i as f64 * step).collect();
    (ticks, first as f64 * step, last as f64 * step)
}

/// The data's range widened so that a single value or a flat line gets some room.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        (lo, hi)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    }
}

/// An inline SVG (no fonts read, fixed number formatting: the bytes depend only on the data);
/// `None` without a point. Points carry a `<title>` (checkpoint, value, change), so hovering
/// names them; regressions are red rings.
pub fn metric_chart(chart: &MetricChart) -> Option<String> {
    if chart.points.is_empty() {
        return None;
    }
    let (left, top, right, bottom) = PLOT;
    let xs = chart.points.iter().map(|p| p.tokens);
    let (x_lo, x_hi) = padded(xs.clone().fold(f64::INFINITY, f64::min), xs.fold(f64::NEG_INFINITY, f64::max));
    let ys = chart.points.iter().map(|p| p.value).chain(chart.reference.as_ref().map(|r| r.1));
    let (y_lo, y_hi) = padded(ys.clone().fold(f64::INFINITY, f64::min), ys.fold(f64::NEG_INFINITY, f64::max));
    if ![x_lo, x_hi, y_lo, y_hi].iter().all(|v| v.is_finite()) {
        return None;
    }
    let (x_ticks, x_lo, x_hi) = ticks(x_lo, x_hi, 4);
    let (y_ticks, y_lo, y_hi) = ticks(y_lo, y_hi, 4);
    let x = |v: f64| left + (v - x_lo) / (x_hi - x_lo) * (right - left);
    let y = |v: f64| bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"metric-chart\" viewBox=\"0 0 {} {}\" width=\"{}\" height=\"{}\" role=\"img\" font-family=\"{FONT}\">",
        SMALL.0, SMALL.1, SMALL.0, SMALL.1
    );
    let _ = write!(svg, "<title>{}: {} against tokens seen</title>", escape(&chart.evaluator), escape(&chart.metric));
    let _ = write!(
        svg,
        "<text x=\"{left:.1}\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}{}</text>",
        escape(&chart.metric),
        chart.direction
    );
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"16\" font-size=\"10\" fill=\"#666\" text-anchor=\"end\">{}</text>",
        SMALL.0 - 6.0,
        escape(&chart.evaluator)
    );
    for t in &y_ticks {
        let _ = write!(
            svg,
            "<line x1=\"{left:.1}\" y1=\"{0:.1}\" x2=\"{right:.1}\" y2=\"{0:.1}\" stroke=\"#e6e6e6\"/><text x=\"{1:.1}\" y=\"{0:.1}\" font-size=\"10\" text-anchor=\"end\" dominant-baseline=\"middle\">{2}</text>",
            y(*t),
            left - 4.0,
            fmt_num(*t)
        );
    }
    for t in &x_ticks {
        let _ = write!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{bottom:.1}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#999\"/><text x=\"{0:.1}\" y=\"{2:.1}\" font-size=\"10\" text-anchor=\"middle\">{3}</text>",
            x(*t),
            bottom + 4.0,
            bottom + 15.0,
            fmt_tokens(*t)
        );
    }
    let _ = write!(
        svg,
        "<rect x=\"{left:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#999\"/>",
        right - left,
        bottom - top
    );
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#666\" text-anchor=\"middle\">tokens seen</text>",
        (left + right) / 2.0,
        SMALL.1 - 8.0
    );
    if let Some((label, value)) = &chart.reference {
        // The margin right of the plot holds a short name; the title has the whole one.
        let short: String =
            if label.chars().count() > 6 { label.chars().take(5).chain(['…']).collect() } else { label.clone() };
        let _ = write!(
            svg,
            "<g class=\"reference\"><title>{0}: {1}</title><line x1=\"{left:.1}\" y1=\"{2:.1}\" x2=\"{right:.1}\" y2=\"{2:.1}\" stroke=\"#555\" stroke-width=\"1.2\" stroke-dasharray=\"5 3\"/><text x=\"{3:.1}\" y=\"{4:.1}\" font-size=\"10\" fill=\"#555\">{5}</text></g>",
            escape(label),
            fmt_num(*value),
            y(*value),
            right + 3.0,
            y(*value) + 3.5,
            escape(&short)
        );
    }
    let path: Vec<String> = chart.points.iter().map(|p| format!("{:.1},{:.1}", x(p.tokens), y(p.value))).collect();
    if path.len() > 1 {
        let _ = write!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{BLUE}\" stroke-width=\"1.8\"/>",
            path.join(" ")
        );
    }
    for p in &chart.points {
        let change = p.change.as_deref().map(|c| format!(" ({c} against the baseline)")).unwrap_or_default();
        let title = format!(
            "{}: {} at {} tokens{change}{}",
            p.checkpoint,
            fmt_num(p.value),
            fmt_tokens(p.tokens),
            if p.regression { ", REGRESSION" } else { "" }
        );
        let (cx, cy) = (x(p.tokens), y(p.value));
        if p.regression {
            let _ = write!(
                svg,
                "<g class=\"regression\"><title>{}</title><circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"6\" fill=\"none\" stroke=\"{RED}\" stroke-width=\"2\"/><circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"3\" fill=\"{RED}\"/></g>",
                escape(&title)
            );
        } else {
            let _ = write!(
                svg,
                "<g class=\"point\"><title>{}</title><circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"3.2\" fill=\"{BLUE}\"/></g>",
                escape(&title)
            );
        }
    }
    svg.push_str("</svg>");
    Some(svg)
}
