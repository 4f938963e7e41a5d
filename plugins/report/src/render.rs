//! `report.md` and `report.html` from one list of sections, so both show the same tables. The
//! report leads with pictures: forgetting and scaling as small charts per language and for code
//! (the forgetting table folded below them), then safety per language, then the details.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::analysis::{Ability, Report, SafetyByLanguage, ability, fmt_num, fmt_relative, metric_language};
use crate::charts::{self, MetricChart, MetricPoint, fmt_tokens};

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
    /// A sub-heading.
    Heading(String),
    /// Small charts side by side (HTML only): (element id, SVG).
    Figures(Vec<(String, String)>),
    /// A block behind a summary line: folded in HTML (`<details>`), the line then the block in
    /// Markdown.
    Folded(String, Box<Block>),
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

/// Where a metric's chart goes: its language, code, or the rest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    Language(String),
    Code,
    Other,
}

impl Group {
    fn of(metric: &str) -> Group {
        match (metric_language(metric), ability(metric)) {
            (Some(lang), _) => Group::Language(lang.to_string()),
            (None, Ability::Code) => Group::Code,
            _ => Group::Other,
        }
    }

    fn title(&self) -> String {
        match self {
            Group::Language(lang) => lang.clone(),
            Group::Code => "code".to_string(),
            Group::Other => "other metrics".to_string(),
        }
    }
}

/// The small charts: every metric but the safety ones (their section has them), by group, each
/// against tokens seen from every checkpoint whose tokens are known, with the baseline's value.
fn metric_charts(report: &Report) -> BTreeMap<Group, Vec<MetricChart>> {
    let mut groups: BTreeMap<Group, Vec<MetricChart>> = BTreeMap::new();
    for evaluator in report.evaluators() {
        let results: Vec<_> = report.results_of(evaluator).collect();
        let metrics: BTreeSet<&str> = results
            .iter()
            .flat_map(|r| r.metrics.keys().map(String::as_str))
            .filter(|m| !m.starts_with("safety."))
            .collect();
        for metric in metrics {
            let reference = report.baseline.as_ref().and_then(|b| {
                let r = results.iter().find(|r| &r.checkpoint == b)?;
                Some((b.clone(), *r.metrics.get(metric)?))
            });
            let mut points: Vec<MetricPoint> = results
                .iter()
                .filter_map(|r| {
                    let value = *r.metrics.get(metric)?;
                    let delta = report
                        .forgetting
                        .iter()
                        .find(|d| d.evaluator == evaluator && d.metric == metric && d.checkpoint == r.checkpoint);
                    Some(MetricPoint {
                        checkpoint: r.checkpoint.clone(),
                        tokens: r.tokens_total? as f64,
                        value,
                        change: delta.map(|d| fmt_relative(d.relative)),
                        regression: delta.is_some_and(|d| d.regression),
                    })
                })
                .collect();
            // Stable: checkpoints at the same token count keep report order.
            points.sort_by(|a, b| a.tokens.total_cmp(&b.tokens));
            if points.len() >= 2 || (points.len() == 1 && reference.is_some()) {
                groups.entry(Group::of(metric)).or_default().push(MetricChart {
                    evaluator: evaluator.to_string(),
                    metric: metric.to_string(),
                    direction: direction(report, evaluator, metric),
                    points,
                    reference,
                });
            }
        }
    }
    groups
}

/// An element id from free text.
fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// The report's lead: forgetting and scaling as charts per language and for code, the full
/// forgetting table folded below them.
fn forgetting_section(report: &Report, charts: bool) -> Section {
    let title = match &report.baseline {
        Some(b) => format!("Forgetting and scaling against `{b}` ({})", report.threshold.describe()),
        None => "Forgetting and scaling".to_string(),
    };
    let groups = metric_charts(report);
    let mut blocks = Vec::new();
    if groups.is_empty() {
        blocks.push(Block::NoData("no data: no metric was measured at a known number of training tokens".to_string()));
    } else if charts {
        let reference = match &report.baseline {
            Some(b) => format!("the dashed line is the baseline `{b}`, red rings are regressions beyond it"),
            None => "no baseline is configured, so no reference line".to_string(),
        };
        blocks.push(Block::Text(format!(
            "Each metric against training tokens seen, one point per evaluated checkpoint (milestones give several per stage); {reference}. Hover a point for its checkpoint and value. Safety metrics are in the Safety section."
        )));
        let mut n = 0;
        for (group, list) in groups {
            blocks.push(Block::Heading(group.title()));
            let figures = list
                .iter()
                .filter_map(|c| {
                    n += 1;
                    let id = format!("chart-{n}-{}", slug(&format!("{}-{}", c.evaluator, c.metric)));
                    charts::metric_chart(c).map(|svg| (id, svg))
                })
                .collect();
            blocks.push(Block::Figures(figures));
        }
    } else {
        let names: Vec<String> = groups.keys().map(Group::title).collect();
        blocks.push(Block::Text(format!(
            "Charts in report.html ({}); the values are in the evaluation tables and the forgetting table.",
            names.join(", ")
        )));
    }
    let rows: Vec<Vec<Cell>> = report
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
    let regressions = report.forgetting.iter().filter(|d| d.regression).count();
    let headers = ["evaluator", "metric", "checkpoint", "baseline", "value", "change", ""].map(String::from).to_vec();
    let table = Table { name_columns: 3, ..Table::new(headers, rows) };
    let line = format!(
        "Forgetting table: {} comparison{} with the baseline, {regressions} regression{}",
        report.forgetting.len(),
        if report.forgetting.len() == 1 { "" } else { "s" },
        if regressions == 1 { "" } else { "s" }
    );
    blocks.push(match table_or(table, "no checkpoint to compare with the baseline") {
        table @ Block::Table(_) => Block::Folded(line, Box::new(table)),
        no_data => no_data,
    });
    section(title, blocks)
}

/// Attack success and over-refusal: each evaluator's `safety.*` metrics, then its per-language
/// table before and after safety tuning, flagging languages whose attack success dropped less
/// than English's.
fn safety_section(report: &Report) -> Section {
    let mut blocks = Vec::new();
    for evaluator in report.evaluators() {
        let by_language = report.safety.iter().find(|s| s.evaluator == evaluator);
        let per_language = |m: &str| {
            by_language.is_some_and(|s| {
                s.languages.iter().any(|l| m.strip_suffix(l.lang.as_str()).is_some_and(|p| p.ends_with('.')))
            })
        };
        let table = metric_table(report, evaluator, |m| m.starts_with("safety.") && !per_language(m));
        if table.rows.is_empty() && by_language.is_none() {
            continue;
        }
        blocks.push(Block::Text(format!("**{evaluator}** (attack success rate: share of harmful prompts complied with; over-refusal: share of benign prompts refused)")));
        if !table.rows.is_empty() {
            blocks.push(Block::Table(table));
        }
        if let Some(s) = by_language {
            blocks.extend(language_safety(s));
        }
    }
    if blocks.is_empty() {
        blocks.push(Block::NoData("no data: no safety evaluation".to_string()));
    }
    section("Safety", blocks)
}

fn language_safety(s: &SafetyByLanguage) -> Vec<Block> {
    let compared = match (&s.before, &s.after) {
        (Some(b), Some(a)) => format!(
            "from `{b}` (before safety tuning) to `{a}` (after); a language is flagged where attack success dropped less than in {}",
            s.reference
        ),
        _ => "one checkpoint only: no before and after".to_string(),
    };
    let text = format!("Per language, {compared}.");
    let mut headers = vec!["language".to_string()];
    headers.extend(s.checkpoints.iter().map(|c| format!("ASR {c}")));
    headers.extend(s.checkpoints.iter().map(|c| format!("over-refusal {c}")));
    headers.push("ASR change".to_string());
    headers.push(format!("vs {}", s.reference));
    let has_reference = s.languages.iter().any(|l| l.lang == s.reference && l.asr_change.is_some());
    let rows = s
        .languages
        .iter()
        .map(|l| {
            let value =
                |m: &BTreeMap<String, f64>, c: &String| m.get(c).map_or_else(|| "–".to_string(), |v| fmt_num(*v));
            let mut row = vec![Cell::from(l.lang.clone())];
            row.extend(s.checkpoints.iter().map(|c| Cell::from(value(&l.asr, c))));
            row.extend(s.checkpoints.iter().map(|c| Cell::from(value(&l.over_refusal, c))));
            let change = l
                .asr_change
                .map_or_else(|| "–".to_string(), |c| format!("{}{}", if c > 0.0 { "+" } else { "" }, fmt_num(c)));
            row.push(Cell { text: change, flag: l.behind_reference });
            let verdict = if l.lang == s.reference {
                "reference"
            } else if l.behind_reference {
                "dropped less"
            } else if has_reference && l.asr_change.is_some() {
                "as much or more"
            } else {
                "–"
            };
            row.push(Cell { text: verdict.to_string(), flag: l.behind_reference });
            row
        })
        .collect();
    vec![Block::Text(text), Block::Table(Table::new(headers, rows))]
}

/// pass@k of every code evaluator side by side, one row per (metric, evaluator): HumanEval,
/// MBPP and each MultiPL-E language (`pass@1.multiple-cpp`, ...), columns the checkpoints.
fn code_section(report: &Report) -> Section {
    let mut rows: BTreeMap<(String, String), BTreeMap<String, f64>> = BTreeMap::new();
    for r in &report.evaluations {
        for (metric, value) in r.metrics.iter().filter(|(m, _)| m.starts_with("pass@")) {
            rows.entry((metric.clone(), r.evaluator.clone())).or_default().insert(r.checkpoint.clone(), *value);
        }
    }
    let mut headers = vec!["metric".to_string(), "evaluator".to_string()];
    headers.extend(report.checkpoints.iter().map(|c| c.label.clone()));
    let rows = rows
        .into_iter()
        .map(|((metric, evaluator), values)| {
            let mut row = vec![Cell::from(metric), Cell::from(evaluator)];
            row.extend(
                report
                    .checkpoints
                    .iter()
                    .map(|c| Cell::from(values.get(&c.label).map_or_else(|| "–".to_string(), |v| fmt_num(*v)))),
            );
            row
        })
        .collect();
    let table = Table { name_columns: 2, ..Table::new(headers, rows) };
    section("Code, per language", vec![table_or(table, "no code evaluations")])
}

fn sections(report: &Report, charts: bool) -> Vec<Section> {
    let mut out = vec![forgetting_section(report, charts)];
    out.push(safety_section(report));
    out.push(code_section(report));
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
            markdown_block(&mut out, block);
        }
    }
    out
}

fn markdown_block(out: &mut String, block: Block) {
    match block {
        Block::Text(t) => {
            let _ = write!(out, "\n{t}\n");
        }
        Block::Heading(t) => {
            let _ = write!(out, "\n### {t}\n");
        }
        Block::NoData(t) => {
            let _ = write!(out, "\n_{t}_\n");
        }
        Block::Chart(_) | Block::Figures(_) => {}
        Block::Folded(line, inner) => {
            let _ = write!(out, "\n{line}:\n");
            markdown_block(out, *inner);
        }
        Block::Table(t) => {
            let _ = write!(out, "\n| {} |\n", t.headers.iter().map(|h| md_escape(h)).collect::<Vec<_>>().join(" | "));
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
.chart svg{max-width:100%;height:auto}code{font-size:12px;word-break:break-all}\
h3{font-size:16px;margin:18px 0 6px}.figures{display:flex;flex-wrap:wrap;gap:10px}\
.figures figure{margin:0;border:1px solid #eee;background:#fff}.figures svg{display:block;max-width:100%;height:auto}\
details{margin:12px 0}summary{cursor:pointer;color:#0072b2}";

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
            html_block(&mut out, block);
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn html_block(out: &mut String, block: Block) {
    match block {
        Block::Text(t) => {
            let _ = writeln!(out, "<p>{}</p>", inline_markup(&t));
        }
        Block::Heading(t) => {
            let _ = writeln!(out, "<h3>{}</h3>", inline_markup(&t));
        }
        Block::NoData(t) => {
            let _ = writeln!(out, "<div class=\"nodata\">{}</div>", html_escape(&t));
        }
        Block::Chart(svg) => {
            if let Some(svg) = svg {
                let _ = writeln!(out, "<div class=\"chart\">{svg}</div>");
            }
        }
        Block::Figures(figures) => {
            out.push_str("<div class=\"figures\">\n");
            for (id, svg) in figures {
                let _ = writeln!(out, "<figure id=\"{}\">{svg}</figure>", html_escape(&id));
            }
            out.push_str("</div>\n");
        }
        Block::Folded(line, inner) => {
            let _ = writeln!(out, "<details>\n<summary>{}</summary>", inline_markup(&line));
            html_block(out, *inner);
            out.push_str("</details>\n");
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
