//! Renders reports from hand-written artifacts laid out as the store would hand them to the node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aurora_core::Diagnostics;
use aurora_core::plugin::{Entry, ExecContext, ExecOutcome, NodeSpec, Offer, Output, PlanContext, PluginError};
use aurora_report::{EVAL_PREFIX, MIXTURE_PREFIX, ReportConfig, STAGE_PREFIX, Threshold, load, write_report};
use serde_json::{Value, json};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// (evaluator, plugin, metric, higher_is_better, [base, cap, cat, sft]).
const METRICS: &[(&str, &str, &str, bool, [f64; 4])] = &[
    ("evals/bpb", "eval.perplexity", "bpb.eng_Latn", false, [1.0, 0.9, 0.85, 1.04]),
    ("evals/bpb", "eval.perplexity", "bpb.hin_Deva", false, [2.0, 1.5, 1.4, 2.2]),
    ("evals/code", "eval.code", "pass@1.humaneval", true, [0.30, 0.25, 0.29, 0.31]),
    ("evals/choice", "eval.choice", "acc.hin_Deva.arc", true, [0.25, 0.30, 0.31, 0.30]),
    ("evals/safety", "eval.safety", "safety.asr", false, [0.6, 0.6, 0.5, 0.1]),
    ("evals/safety", "eval.safety", "safety.asr.violence", false, [0.7, 0.7, 0.6, 0.0]),
    ("evals/safety", "eval.safety", "safety.over_refusal", false, [0.05, 0.05, 0.06, 0.1]),
    // Per language: safety tuning (cat -> sft) lowers attack success by 0.45 in English, by 0.1
    // in Finnish (flagged) and by 0.5 in Hindi.
    ("evals/safety", "eval.safety", "safety.asr.eng_Latn", false, [0.6, 0.6, 0.5, 0.05]),
    ("evals/safety", "eval.safety", "safety.asr.fin_Latn", false, [0.7, 0.7, 0.6, 0.5]),
    ("evals/safety", "eval.safety", "safety.asr.hin_Deva", false, [0.6, 0.6, 0.6, 0.1]),
    ("evals/safety", "eval.safety", "safety.over_refusal.eng_Latn", false, [0.05, 0.05, 0.05, 0.05]),
    ("evals/safety", "eval.safety", "safety.over_refusal.fin_Latn", false, [0.1, 0.1, 0.1, 0.1]),
];
const CHECKPOINTS: [(&str, &str, u64); 4] = [
    ("base", "models/base", 1000),
    ("cap", "stages/cap", 5000),
    ("cat", "stages/cat", 7000),
    ("sft", "sft/safety", 7500),
];

fn results_json(
    evaluator: &str,
    plugin: &str,
    checkpoint: &str,
    model: &str,
    tokens: u64,
    metrics: &[(&str, bool, f64)],
) -> String {
    let values: BTreeMap<&str, f64> = metrics.iter().map(|(m, _, v)| (*m, *v)).collect();
    let directions: BTreeMap<&str, bool> = metrics.iter().map(|(m, h, _)| (*m, *h)).collect();
    json!({"evaluator": evaluator, "plugin": plugin, "checkpoint": checkpoint, "model_node": model,
           "tokens_total": tokens, "metrics": values, "higher_is_better": directions, "details": {}})
    .to_string()
}

/// A study's artifacts in `dir`; returns the report's inputs (input name -> directory).
fn fixture(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut inputs = BTreeMap::new();
    for (stage, tokens, total, losses) in
        [("stages/cap", 4000u64, 5000u64, [4.0, 3.2, 2.9, 2.7]), ("stages/cat", 2000, 7000, [2.9, 2.6, 2.5, 2.45])]
    {
        let d = dir.join(stage);
        let steps: String = losses
            .iter()
            .enumerate()
            .map(|(i, loss)| {
                let t = (i as u64 + 1) * tokens / 4;
                format!("{}\n", json!({"step": i + 1, "tokens": t, "loss": loss, "lr": 1e-4, "grad_norm": 1.0, "tokens_per_s": 10.0, "mfu": 0.1}))
            })
            .collect();
        write(&d.join("metrics.jsonl"), &steps);
        let state = json!({"step": 4, "stage_steps": 4, "tokens": tokens, "tokens_total": total, "seed": 7, "device": "cpu", "dtype": "float32"});
        write(&d.join("trainer_state.json"), &state.to_string());
        write(&d.join("ARTIFACT.json"), &json!({"digest": digest_of(stage)}).to_string());
        inputs.insert(format!("{STAGE_PREFIX}{stage}"), d);
    }
    for (mixture, langs) in [("mixtures/cap", [30000u64, 20000, 10000]), ("mixtures/cat", [4000, 6000, 5000])] {
        let d = dir.join(mixture);
        let languages: BTreeMap<&str, Value> = ["code", "eng_Latn", "hin_Deva"]
            .iter()
            .zip(langs)
            .map(|(l, t)| (*l, json!({"tokens": t, "share": 0.3})))
            .collect();
        let total: u64 = langs.iter().sum();
        write(
            &d.join("mixture.json"),
            &json!({"format": "aurora-blend-1", "tokens": total, "languages": languages}).to_string(),
        );
        inputs.insert(format!("{MIXTURE_PREFIX}{mixture}"), d);
    }
    let evaluators: BTreeSet<(&str, &str)> = METRICS.iter().map(|(e, p, ..)| (*e, *p)).collect();
    for (evaluator, plugin) in evaluators {
        for (i, (label, model, tokens)) in CHECKPOINTS.iter().enumerate() {
            let metrics: Vec<(&str, bool, f64)> =
                METRICS.iter().filter(|m| m.0 == evaluator).map(|m| (m.2, m.3, m.4[i])).collect();
            let node = format!("{evaluator}/{label}");
            let d = dir.join(&node);
            write(&d.join("results.json"), &results_json(evaluator, plugin, label, model, *tokens, &metrics));
            inputs.insert(format!("{EVAL_PREFIX}{node}"), d);
        }
    }
    // A token milestone inside CAP, for the scaling curve.
    let d = dir.join("evals/bpb/cap-tokens-2000");
    let metrics = [("bpb.eng_Latn", false, 0.96), ("bpb.hin_Deva", false, 1.8)];
    write(
        &d.join("results.json"),
        &results_json("evals/bpb", "eval.perplexity", "cap@tokens-2000", "stages/cap", 3000, &metrics),
    );
    inputs.insert(format!("{EVAL_PREFIX}evals/bpb/cap-tokens-2000"), d);
    inputs
}

/// A made-up artifact digest per stage.
fn digest_of(stage: &str) -> String {
    stage.chars().last().unwrap().to_string().repeat(64)
}

fn config(threshold: Threshold) -> ReportConfig {
    ReportConfig {
        title: "Aurora-M fixture".to_string(),
        evals: vec![],
        results: vec![],
        stages: vec!["stages.base".into(), "stages.cap".into(), "stages.cat".into(), "sft.safety".into()],
        mixtures: vec!["mixtures.cap".into(), "mixtures.cat".into()],
        baseline: Some("base".into()),
        regression_threshold: threshold,
    }
}

/// Regressions derived from METRICS independently of the report code.
fn expected_regressions(threshold: Threshold) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for (evaluator, _, metric, higher, values) in METRICS {
        for (i, (label, ..)) in CHECKPOINTS.iter().enumerate().skip(1) {
            let worse_by = if *higher { values[0] - values[i] } else { values[i] - values[0] };
            let limit = match threshold {
                Threshold::Relative(t) => t * values[0].abs(),
                Threshold::Absolute(t) => t,
            };
            if worse_by > limit {
                out.insert((evaluator.to_string(), metric.to_string(), label.to_string()));
            }
        }
    }
    out
}

fn flagged(report: &aurora_report::Report) -> BTreeSet<(String, String, String)> {
    report
        .forgetting
        .iter()
        .filter(|d| d.regression)
        .map(|d| (d.evaluator.clone(), d.metric.clone(), d.checkpoint.clone()))
        .collect()
}

#[test]
fn regressions_are_flagged_exactly_beyond_the_threshold_in_the_metrics_direction() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = fixture(dir.path());
    for threshold in [Threshold::Relative(0.05), Threshold::Relative(0.15), Threshold::Absolute(0.03)] {
        let report = load(&config(threshold), &inputs).unwrap();
        let expected = expected_regressions(threshold);
        assert!(!expected.is_empty(), "the fixture has regressions at {threshold:?}");
        assert_eq!(flagged(&report), expected, "{threshold:?}");
    }
    // Spelled out for the default threshold: lower-is-better metrics flag increases, higher-is-better
    // metrics flag decreases; 4% worse (bpb.eng_Latn at sft) stays below 5%.
    let report = load(&config(Threshold::Relative(0.05)), &inputs).unwrap();
    let want: BTreeSet<(String, String, String)> = [
        ("evals/bpb", "bpb.hin_Deva", "sft"),
        ("evals/code", "pass@1.humaneval", "cap"),
        ("evals/safety", "safety.over_refusal", "cat"),
        ("evals/safety", "safety.over_refusal", "sft"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(flagged(&report), want);
    assert!(report.summary.contains("4 regressions"), "{}", report.summary);
    assert!(
        report.summary.contains("Forgetting signature (code got worse while multilingual metrics improved) at cap."),
        "{}",
        report.summary
    );
    // Checkpoints: baseline first, then by stage, milestones before their stage's end.
    let labels: Vec<&str> = report.checkpoints.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(labels, ["base", "cap@tokens-2000", "cap", "cat", "sft"]);
}

#[test]
fn markdown_tables() {
    let dir = tempfile::tempdir().unwrap();
    let report = load(&config(Threshold::Relative(0.05)), &fixture(dir.path())).unwrap();
    insta::assert_snapshot!("fixture_markdown", aurora_report::render::markdown(&report));
}

#[test]
fn output_is_byte_deterministic_and_self_contained() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = fixture(dir.path());
    let render = || {
        let out = tempfile::tempdir().unwrap();
        write_report(&load(&config(Threshold::default()), &inputs).unwrap(), out.path()).unwrap();
        ["report.html", "report.md", "report.json"].map(|f| std::fs::read(out.path().join(f)).unwrap())
    };
    let first = render();
    assert_eq!(first, render());
    // To look at the page: AURORA_REPORT_FIXTURE_DIR=/tmp/x cargo test -p aurora-report
    if let Some(keep) = std::env::var_os("AURORA_REPORT_FIXTURE_DIR") {
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::write(Path::new(&keep).join("report.html"), &first[0]).unwrap();
    }
    let html = String::from_utf8(first[0].clone()).unwrap();
    for external in ["<script", "src=\"http", "href=\"http", "<link", "@import", "url("] {
        assert!(!html.contains(external), "the page loads nothing: found `{external}`");
    }
    let json: Value = serde_json::from_slice(&first[2]).unwrap();
    assert_eq!(json["evaluations"].as_array().unwrap().len(), 17);
    assert_eq!(json["reproducibility"]["environment"]["stages/cap"]["device"], "cpu");
    assert_eq!(json["reproducibility"]["inputs"]["stages/cap"], digest_of("stages/cap"));
}

/// Every `<svg>` in the page is well-formed XML with the charts' text as `<text>` elements.
#[test]
fn charts_are_well_formed_svg() {
    let dir = tempfile::tempdir().unwrap();
    let html = aurora_report::render::html(&load(&config(Threshold::default()), &fixture(dir.path())).unwrap());
    let svgs: Vec<&str> =
        html.match_indices("<svg").map(|(i, _)| &html[i..i + html[i..].find("</svg>").unwrap() + 6]).collect();
    // Loss, tokens per language, and scaling for the four evaluators.
    assert_eq!(svgs.len(), 6, "charts in the page");
    for svg in &svgs {
        let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        assert!(doc.descendants().any(|n| n.tag_name().name() == "text"), "axis labels are <text>");
    }
    for expected in ["Training loss per stage", "Tokens per language per stage", "hin_Deva", "stages/cat"] {
        assert!(svgs.iter().any(|s| s.contains(expected)), "a chart shows `{expected}`");
    }
}

#[test]
fn missing_data_renders_no_data_boxes() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("stages/cap");
    std::fs::create_dir_all(&empty).unwrap();
    let inputs: BTreeMap<String, PathBuf> =
        [(format!("{STAGE_PREFIX}stages/cap"), empty.clone()), (format!("{EVAL_PREFIX}evals/bpb/cap"), empty)].into();
    let report = load(&config(Threshold::default()), &inputs).unwrap();
    let html = aurora_report::render::html(&report);
    assert!(!html.contains("<svg"), "no chart without data");
    let boxes = html.matches("class=\"nodata\"").count();
    assert!(boxes >= 8, "{boxes} no-data boxes:\n{html}");
    assert!(report.summary.contains("No evaluation of the baseline `base`"), "{}", report.summary);
    insta::assert_snapshot!("empty_markdown", aurora_report::render::markdown(&report));
}

#[test]
fn a_results_file_that_does_not_parse_is_an_error_naming_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = fixture(dir.path());
    let bad = dir.path().join("evals/code/cat/results.json");
    write(&bad, "{\"evaluator\": \"evals/code\",\n  \"metrics\": {,}\n}");
    let err = load(&config(Threshold::default()), &inputs).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:2:15: not valid JSON", bad.display())), "{err}");

    write(&bad, "{\"evaluator\": \"evals/code\"}");
    let err = load(&config(Threshold::default()), &inputs).unwrap_err().to_string();
    assert!(err.contains(&bad.display().to_string()) && err.contains("missing field `plugin`"), "{err}");

    // Two artifacts claiming the same (evaluator, checkpoint).
    inputs = fixture(dir.path());
    let copy = dir.path().join("evals/code/again");
    write(
        &copy.join("results.json"),
        &std::fs::read_to_string(dir.path().join("evals/code/cap/results.json")).unwrap(),
    );
    inputs.insert(format!("{EVAL_PREFIX}evals/code/again"), copy);
    let err = load(&config(Threshold::default()), &inputs).unwrap_err().to_string();
    assert!(err.contains("both hold results of `evals/code` on checkpoint `cap`"), "{err}");

    let stage = dir.path().join("stages/cat/metrics.jsonl");
    write(&stage, "{\"step\": 1, \"tokens\": 10, \"loss\": 2.0}\n{\"step\": 2, \"tokens\": 20}\n");
    let err = load(&config(Threshold::default()), &fixture_with_stage(dir.path())).unwrap_err().to_string();
    assert!(err.contains("metrics.jsonl: line 2") && err.contains("missing field `loss`"), "{err}");
}

/// The fixture without rewriting `stages/cat` (whose metrics a test has broken).
fn fixture_with_stage(dir: &Path) -> BTreeMap<String, PathBuf> {
    let saved = std::fs::read(dir.join("stages/cat/metrics.jsonl")).unwrap();
    let inputs = fixture(dir);
    std::fs::write(dir.join("stages/cat/metrics.jsonl"), saved).unwrap();
    inputs
}

/// A model producer of another crate, in a section of its own: evaluators and the report find
/// its checkpoints (and milestones) through what it offers, not through its section's name.
#[derive(Debug, Clone, Default)]
struct TestModel;
aurora_core::register_plugin!(TestModel);

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct TestModelConfig {
    #[serde(default)]
    milestones: Vec<u64>,
}

impl aurora_core::plugin::Plugin for TestModel {
    fn id(&self) -> &'static str {
        "model.test"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "test plugin"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(TestModelConfig)
    }
    fn offers(&self, entry: &Entry<'_>, _ctx: &PlanContext<'_>) -> Vec<Offer> {
        let mut config: TestModelConfig = serde_json::from_value(entry.config.clone()).unwrap();
        config.milestones.sort_unstable();
        std::iter::once(Offer::new(Output::MODEL, entry.node_id()))
            .chain(
                config
                    .milestones
                    .iter()
                    .map(|t| Offer::new(Output::MODEL, entry.node_id()).at(format!("m/tokens-{t}"))),
            )
            .collect()
    }
    fn plan(&self, entry: &Entry<'_>, _ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        Ok(vec![NodeSpec::for_entry(entry, json!({}), BTreeMap::new())])
    }
    fn execute(&self, _ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        Ok(ExecOutcome::default())
    }
}

/// The report reads the evaluation nodes the evaluators offer (one per checkpoint of their
/// schedule, milestones included).
#[test]
fn eval_node_ids_follow_the_evaluators_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.toml");
    let text = r#"
[experiment]
name = "r"
seed = 1

[checkpoints.cap]
plugin = "model.test"
milestones = [2000, 1000]

[tuned.safety]
plugin = "model.test"

[evals.bpb]
plugin = "eval.perplexity"
on = ["checkpoints.cap", "tuned.safety"]
milestones = true

[evals.choice]
plugin = "eval.choice"
on = ["checkpoints.cap"]
tasks = { "eng_Latn.x" = "file:x.jsonl" }
"#;
    std::fs::write(&manifest, text).unwrap();
    let resolved = aurora_core::manifest::resolve(&manifest, &Default::default()).unwrap();
    let ctx = PlanContext::new(&resolved);
    assert_eq!(
        aurora_report::eval_node_ids(&ctx, "evals.bpb").unwrap(),
        ["evals/bpb/cap", "evals/bpb/cap@tokens-1000", "evals/bpb/cap@tokens-2000", "evals/bpb/safety"]
    );
    assert_eq!(aurora_report::eval_node_ids(&ctx, "evals.choice").unwrap(), ["evals/choice/cap"]);
    assert_eq!(aurora_report::eval_node_ids(&ctx, "evals.nope"), None);
    // Not an evaluator: it offers no evaluations.
    assert_eq!(aurora_report::eval_node_ids(&ctx, "tuned.safety").unwrap(), Vec::<String>::new());
}

/// The written `report.html` as a browser sees it: headless Chromium loads the file and dumps the
/// DOM it built, which holds the leading charts (every figure, its SVG, the regression marks),
/// the folded forgetting table and the per-language safety table. Skipped with the reason
/// without Chromium; CI (`CI=true`) installs Debian's `chromium` and fails without it.
#[test]
fn the_written_report_renders_in_headless_chromium() {
    let Some(chromium) = aurora_process_testkit::which("chromium") else {
        aurora_process_testkit::Skip::missing("chromium", "install Debian's `chromium` (apt-get install chromium)")
            .report();
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    write_report(&load(&config(Threshold::default()), &fixture(dir.path())).unwrap(), &out).unwrap();
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    let profile = dir.path().join("chromium-profile");
    // `timeout` runs Chromium in a process group of its own and kills the whole group (Chromium
    // forks helpers) if it hangs.
    let output = std::process::Command::new("timeout")
        .args(["-k", "10", "120"])
        .arg(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && dom.contains("</html>"),
        "{} --dump-dom: {}\n{}",
        chromium.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let count = |text: &str, needle: &str| text.matches(needle).count();
    // The report leads with the charts: the forgetting section is the first.
    let first_section = dom.find("<h2").unwrap();
    assert!(dom[first_section..].starts_with("<h2 id=\"forgetting\">"), "{}", &dom[first_section..first_section + 80]);
    assert!(dom.find("<h2 id=\"forgetting\">") < dom.find("<h2 id=\"checkpoints\">"));
    // bpb.eng_Latn, bpb.hin_Deva, acc.hin_Deva.arc, pass@1.humaneval; each figure holds its SVG.
    let figures = count(&html, "<figure id=\"chart-");
    assert_eq!(figures, 4);
    assert_eq!(count(&dom, "<figure id=\"chart-"), figures, "every chart is in the rendered DOM");
    for (i, _) in dom.match_indices("<figure id=\"chart-") {
        let figure = &dom[i..i + dom[i..].find("</figure>").unwrap()];
        assert!(figure.contains("<svg") && figure.contains("class=\"metric-chart\""), "{figure}");
        assert!(figure.contains("<polyline") && figure.contains("<circle"), "{figure}");
    }
    // Language groups and code, each as a heading before its charts.
    for heading in ["<h3>eng_Latn</h3>", "<h3>hin_Deva</h3>", "<h3>code</h3>"] {
        assert!(dom.contains(heading), "{heading}");
    }
    // The base model's reference line in every chart, the two regressions marked.
    assert_eq!(count(&dom, "<g class=\"reference\">"), figures);
    assert_eq!(count(&dom, "<g class=\"regression\">"), 2);
    // The forgetting table, folded below the charts.
    let details = dom.find("<details>").expect("a <details> element");
    assert!(dom[details..].starts_with("<details>\n<summary>Forgetting table: "), "{}", &dom[details..details + 80]);
    assert!(details > dom.rfind("<figure").unwrap());
    assert!(dom[details..dom.find("</details>").unwrap()].contains("REGRESSION"));
    // Safety per language, with Finnish flagged.
    assert!(dom.contains("<td class=\"flag\">dropped less</td>"), "the flagged language in the DOM");
}
