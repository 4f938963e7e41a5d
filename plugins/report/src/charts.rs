//! Inline SVG charts drawn with `plotters`' SVG backend. Text is written as `<text>` elements
//! (no font files are read), so the bytes depend only on the data.

use std::collections::{BTreeMap, BTreeSet};

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
