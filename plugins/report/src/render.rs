//! `report.md` and `report.html` from one list of sections, so both show the same tables.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::analysis::{Report, fmt_num, fmt_relative};
use crate::charts::{self, Series, fmt_tokens};

/// A table cell; `flag` marks a regression (red in HTML, bold REGRESSION in Markdown).
struct Cell {
    text: String,
    flag: bool,
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell { text, flag: false }
    }
}

struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<Cell>>,
    /// Leading columns holding names (left-aligned); the rest hold numbers.
    name_columns: usize,
}

impl Table {
    fn new(headers: Vec<String>, rows: Vec<Vec<Cell>>) -> Table {
        Table { headers, rows, name_columns: 1 }
    }
}

enum Block {
    Text(String),
    Table(Table),
    /// An SVG chart (HTML only).
    Chart(Option<String>),
    NoData(String),
}

struct Section {
    title: String,
    blocks: Vec<Block>,
}

fn section(title: impl Into<String>, blocks: Vec<Block>) -> Section {
    Section { title: title.into(), blocks }
}

fn table_or(table: Table, what: &str) -> Block {
    if table.rows.is_empty() { Block::NoData(format!("no data: {what}")) } else { Block::Table(table) }
}

fn direction(report: &Report, evaluator: &str, metric: &str) -> &'static str {
    match report.results_of(evaluator).find_map(|r| r.higher_is_better.get(metric)) {
        Some(true) => " ↑",
        Some(false) => " ↓",
        None => "",
    }
}

/// Rows: metrics (filtered), columns: the checkpoints the evaluator ran on, in report order.
fn metric_table(report: &Report, evaluator: &str, keep: impl Fn(&str) -> bool) -> Table {
    let results: Vec<_> = report.results_of(evaluator).collect();
    let metrics: BTreeSet<&str> =
        results.iter().flat_map(|r| r.metrics.keys().map(String::as_str)).filter(|m| keep(m)).collect();
    let mut headers = vec!["metric".to_string()];
    headers.extend(results.iter().map(|r| r.checkpoint.clone()));
    let rows = metrics
        .into_iter()
        .map(|m| {
            let mut row = vec![Cell::from(format!("{m}{}", direction(report, evaluator, m)))];
            for r in &results {
                let regression = report
                    .forgetting
                    .iter()
                    .any(|d| d.regression && d.evaluator == evaluator && d.metric == m && d.checkpoint == r.checkpoint);
                let text = r.metrics.get(m).map_or_else(|| "–".to_string(), |v| fmt_num(*v));
                row.push(Cell { text, flag: regression });
            }
            row
        })
        .collect();
    Table::new(headers, rows)
}

fn sections(report: &Report, charts: bool) -> Vec<Section> {
    let mut out = Vec::new();
    let chart = |svg: Option<String>, what: &str| match svg {
        Some(svg) if charts => Block::Chart(Some(svg)),
        None if charts => Block::NoData(format!("no data: {what}")),
        _ => Block::Chart(None),
    };

    // Checkpoints
    let rows: Vec<Vec<Cell>> = report
        .checkpoints
        .iter()
        .map(|c| {
            vec![
                Cell::from(c.label.clone()),
                Cell::from(c.model_node.clone()),
                Cell::from(c.tokens_total.map_or_else(|| "–".to_string(), |t| fmt_tokens(t as f64))),
            ]
        })
        .collect();
    let headers = vec!["checkpoint".into(), "model".into(), "tokens seen".into()];
    let table = Table { name_columns: 2, ..Table::new(headers, rows) };
    out.push(section("Checkpoints", vec![table_or(table, "no evaluation results")]));

    // Training
    let rows: Vec<Vec<Cell>> = report
        .stages
        .iter()
        .map(|s| {
            let state = |k: &str| {
                s.trainer_state.get(k).and_then(|v| v.as_u64()).map_or_else(|| "–".to_string(), |v| v.to_string())
            };
            vec![
                Cell::from(s.node.clone()),
                Cell::from(state("stage_steps")),
                Cell::from(state("tokens")),
                Cell::from(state("tokens_total")),
                Cell::from(s.steps.last().map_or_else(|| "–".to_string(), |m| fmt_num(m.loss))),
            ]
        })
        .collect();
    let headers = ["stage", "steps", "tokens", "tokens (whole run)", "final loss"].map(String::from).to_vec();
    out.push(section(
        "Training",
        vec![
            chart(charts::loss_chart(&report.stages), "no training metrics"),
            table_or(Table::new(headers, rows), "no stages"),
        ],
    ));

    // Data mix
    let languages: BTreeSet<&str> =
        report.mixtures.iter().flat_map(|m| m.languages.keys().map(String::as_str)).collect();
    let mut headers = vec!["language".to_string()];
    headers.extend(report.mixtures.iter().map(|m| m.node.clone()));
    let rows = languages
        .iter()
        .map(|l| {
            let mut row = vec![Cell::from(l.to_string())];
            row.extend(
                report
                    .mixtures
                    .iter()
                    .map(|m| Cell::from(m.languages.get(*l).map_or_else(|| "–".to_string(), u64::to_string))),
            );
            row
        })
        .collect();
    out.push(section(
        "Tokens per language per stage",
        vec![
            chart(charts::language_chart(&report.mixtures), "no mixtures"),
            table_or(Table::new(headers, rows), "no mixtures"),
        ],
    ));

    // Evaluations, one table per evaluator
    let mut blocks = Vec::new();
    for evaluator in report.evaluators() {
        let table = metric_table(report, evaluator, |m| !m.starts_with("safety."));
        if !table.rows.is_empty() {
            blocks.push(Block::Text(format!("**{evaluator}**")));
            blocks.push(Block::Table(table));
        }
    }
    if blocks.is_empty() {
        blocks.push(Block::NoData("no data: no evaluation results".to_string()));
    }
    out.push(section("Evaluations", blocks));

    // Forgetting
    let title = match &report.baseline {
        Some(b) => format!("Forgetting against `{b}` ({})", report.threshold.describe()),
        None => "Forgetting".to_string(),
    };
    let rows = report
        .forgetting
        .iter()
        .map(|d| {
            let flag = if d.regression {
                "REGRESSION"
            } else if d.improvement {
                "improved"
            } else {
                ""
            };
            vec![
                Cell::from(d.evaluator.clone()),
                Cell::from(format!("{}{}", d.metric, direction(report, &d.evaluator, &d.metric))),
                Cell::from(d.checkpoint.clone()),
                Cell::from(fmt_num(d.baseline)),
                Cell::from(fmt_num(d.value)),
                Cell { text: fmt_relative(d.relative), flag: d.regression },
                Cell { text: flag.to_string(), flag: d.regression },
            ]
        })
        .collect();
    let headers = ["evaluator", "metric", "checkpoint", "baseline", "value", "change", ""].map(String::from).to_vec();
    let table = Table { name_columns: 3, ..Table::new(headers, rows) };
    out.push(section(title, vec![table_or(table, "no checkpoint to compare with the baseline")]));

    // Scaling
    let mut blocks = Vec::new();
    for evaluator in report.evaluators() {
        let mut by_metric: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
        for r in report.results_of(evaluator) {
            let Some(t) = r.tokens_total else { continue };
            for (m, v) in &r.metrics {
                by_metric.entry(m).or_default().push((t as f64, *v));
            }
        }
        let series: Vec<Series> = by_metric
            .into_iter()
            .filter(|(_, p)| p.len() >= 2)
            .map(|(m, mut points)| {
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series { name: m.to_string(), points }
            })
            .collect();
        if !series.is_empty() {
            blocks.push(chart(
                charts::line_chart(&format!("{evaluator}: metric vs tokens seen"), "tokens seen", "value", &series),
                "",
            ));
        }
    }
    if blocks.is_empty() {
        blocks.push(Block::NoData("no data: no metric was measured at two or more token counts".to_string()));
    } else if !charts {
        blocks = vec![Block::Text("Charts in report.html; the values are in the evaluation tables.".to_string())];
    }
    out.push(section("Scaling", blocks));

    // Safety
    let mut blocks = Vec::new();
    for evaluator in report.evaluators() {
        let table = metric_table(report, evaluator, |m| m.starts_with("safety."));
        if !table.rows.is_empty() {
            blocks.push(Block::Text(format!("**{evaluator}** (attack success rate: share of harmful prompts complied with; over-refusal: share of benign prompts refused)")));
            blocks.push(Block::Table(table));
        }
    }
    if blocks.is_empty() {
        blocks.push(Block::NoData("no data: no safety evaluation".to_string()));
    }
    out.push(section("Safety", blocks));

    // Reproducibility
    let mut blocks = Vec::new();
    let rows: Vec<Vec<Cell>> = report
        .reproducibility
        .inputs
        .iter()
        .map(|(node, digest)| vec![Cell::from(node.clone()), Cell::from(format!("`{digest}`"))])
        .collect();
    blocks.push(table_or(
        Table { name_columns: 2, ..Table::new(vec!["input".into(), "artifact digest".into()], rows) },
        "no input artifact digests",
    ));
    let rows: Vec<Vec<Cell>> = report
        .reproducibility
        .environment
        .iter()
        .flat_map(|(stage, fields)| {
            fields
                .iter()
                .map(move |(k, v)| vec![Cell::from(stage.clone()), Cell::from(k.clone()), Cell::from(v.clone())])
        })
        .collect();
    blocks.push(table_or(
        Table { name_columns: 3, ..Table::new(vec!["stage".into(), "field".into(), "value".into()], rows) },
        "no environment recorded in the stages' trainer_state.json",
    ));
    blocks.push(Block::Text(
        "The manifest digest, every node key, the git commit and the tool versions of the run that produced this report are in its run record: `aurora runs show RUN_ID`.".to_string(),
    ));
    out.push(section("Reproducibility", blocks));
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

pub fn markdown(report: &Report) -> String {
    let mut out = format!("# {}\n\n> {}\n", report.title, report.summary);
    for s in sections(report, false) {
        let _ = write!(out, "\n## {}\n", s.title);
        for block in s.blocks {
            match block {
                Block::Text(t) => {
                    let _ = write!(out, "\n{t}\n");
                }
                Block::NoData(t) => {
                    let _ = write!(out, "\n_{t}_\n");
                }
                Block::Chart(_) => {}
                Block::Table(t) => {
                    let _ = write!(
                        out,
                        "\n| {} |\n",
                        t.headers.iter().map(|h| md_escape(h)).collect::<Vec<_>>().join(" | ")
                    );
                    let align: Vec<&str> =
                        (0..t.headers.len()).map(|i| if i < t.name_columns { "---" } else { "---:" }).collect();
                    let _ = writeln!(out, "|{}|", align.join("|"));
                    for row in t.rows {
                        let cells: Vec<String> = row
                            .iter()
                            .map(|c| if c.flag { format!("**{}**", md_escape(&c.text)) } else { md_escape(&c.text) })
                            .collect();
                        let _ = writeln!(out, "| {} |", cells.join(" | "));
                    }
                }
            }
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `code` spans and `**bold**` of the shared texts, after escaping.
fn inline_markup(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in html_escape(s).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            for (j, p) in part.split("**").enumerate() {
                if j % 2 == 1 {
                    let _ = write!(out, "<strong>{p}</strong>");
                } else {
                    out.push_str(p);
                }
            }
        }
    }
    out
}

const CSS: &str = "body{font-family:sans-serif;margin:24px auto;max-width:1200px;color:#222;line-height:1.4}\
h1{font-size:26px}h2{font-size:20px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}\
.summary{background:#f4f6f8;border-left:4px solid #0072b2;padding:10px 14px}\
.summary.bad{border-left-color:#c62828;background:#fdecea}\
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ddd;padding:4px 10px;font-size:14px}\
th{background:#f4f6f8;text-align:left}td{text-align:right;font-variant-numeric:tabular-nums}td:first-child{text-align:left}\
td.name{text-align:left}td.flag{color:#c62828;font-weight:bold;background:#fdecea}\
.nodata{border:1px dashed #bbb;color:#777;padding:18px;text-align:center;margin:8px 0;background:#fafafa}\
.chart svg{max-width:100%;height:auto}code{font-size:12px;word-break:break-all}";

pub fn html(report: &Report) -> String {
    let mut out = String::new();
    let bad = report.forgetting.iter().any(|d| d.regression);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{}</h1>\n<p class=\"summary{}\">{}</p>\n",
        html_escape(&report.title),
        html_escape(&report.title),
        if bad { " bad" } else { "" },
        inline_markup(&report.summary)
    );
    for s in sections(report, true) {
        let anchor = s.title.split(' ').next().unwrap_or_default().to_lowercase();
        let _ = writeln!(out, "<h2 id=\"{anchor}\">{}</h2>", inline_markup(&s.title));
        for block in s.blocks {
            match block {
                Block::Text(t) => {
                    let _ = writeln!(out, "<p>{}</p>", inline_markup(&t));
                }
                Block::NoData(t) => {
                    let _ = writeln!(out, "<div class=\"nodata\">{}</div>", html_escape(&t));
                }
                Block::Chart(svg) => {
                    if let Some(svg) = svg {
                        let _ = writeln!(out, "<div class=\"chart\">{svg}</div>");
                    }
                }
                Block::Table(t) => {
                    out.push_str("<table>\n<tr>");
                    for h in &t.headers {
                        let _ = write!(out, "<th>{}</th>", inline_markup(h));
                    }
                    out.push_str("</tr>\n");
                    for row in t.rows {
                        out.push_str("<tr>");
                        for (i, c) in row.into_iter().enumerate() {
                            let class = match (c.flag, i < t.name_columns) {
                                (true, _) => " class=\"flag\"",
                                (false, true) => " class=\"name\"",
                                (false, false) => "",
                            };
                            let _ = write!(out, "<td{class}>{}</td>", inline_markup(&c.text));
                        }
                        out.push_str("</tr>\n");
                    }
                    out.push_str("</table>\n");
                }
            }
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}
