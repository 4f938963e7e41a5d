//! The report node planned and executed by the engine: its inputs are other nodes' artifacts
//! (here `exec.command` steps writing the agreed artifact files), found through the manifest.

use aurora_core::execute::{NodeStatus, RunOptions, Silent, run};
use aurora_core::manifest::{ResolveOptions, resolve};
use aurora_core::plugin::NoProgress;
use aurora_core::{Store, plan::plan};
use aurora_exec as _;
use aurora_report as _;
use serde_json::Value;

const MANIFEST: &str = r#"
[experiment]
name = "report"
seed = 1

[stages.cap]
plugin = "exec.command"
argv = ["sh", "-c", """
echo '{"step": 2, "stage_steps": 2, "tokens": 200, "tokens_total": 300, "seed": 1, "device": "cpu"}' > "$AURORA_OUT/trainer_state.json"
printf '{"step":1,"tokens":100,"loss":3.0}\n{"step":2,"tokens":200,"loss":2.5}\n' > "$AURORA_OUT/metrics.jsonl"
"""]

[mixtures.cap]
plugin = "exec.command"
argv = ["sh", "-c", """echo '{"tokens": 200, "languages": {"code": {"tokens": 80}, "fin_Latn": {"tokens": 120}}}' > "$AURORA_OUT/mixture.json" """]

[steps.code_base]
plugin = "exec.command"
argv = ["sh", "-c", """echo '{"evaluator": "evals/code", "plugin": "eval.code", "checkpoint": "base", "model_node": "stages/base", "tokens_total": 100, "metrics": {"pass@1.humaneval": 0.4}, "higher_is_better": {"pass@1.humaneval": true}, "details": {}}' > "$AURORA_OUT/results.json" """]

[steps.code_cap]
plugin = "exec.command"
argv = ["sh", "-c", """echo '{"evaluator": "evals/code", "plugin": "eval.code", "checkpoint": "cap", "model_node": "stages/cap", "tokens_total": 300, "metrics": {"pass@1.humaneval": 0.2}, "higher_is_better": {"pass@1.humaneval": true}, "details": {}}' > "$AURORA_OUT/results.json" """]

[reports.main]
plugin = "report.html"
title = "Engine test"
stages = ["stages.cap"]
mixtures = ["mixtures.cap"]
results = ["steps/code_base", "steps/code_cap"]
baseline = "base"
regression_threshold = { absolute = 0.1 }
"#;

#[test]
fn the_report_node_reads_its_inputs_artifacts_and_records_their_digests() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.toml"), MANIFEST).unwrap();
    let plan = plan(resolve(&dir.path().join("m.toml"), &ResolveOptions::default()).unwrap()).unwrap();
    let store = Store::open(&dir.path().join(".aurora")).unwrap();
    let reports = run(&plan, &store, &RunOptions { jobs: 1, ..Default::default() }, &Silent, &NoProgress).unwrap();
    for r in &reports {
        assert_eq!(r.status, NodeStatus::Executed, "{}: {:?}", r.id, r.error);
    }
    let report = reports.iter().find(|r| r.id == "reports/main").unwrap();
    assert_eq!(report.metrics["regressions"], 1);
    let out = store.artifact_dir(&report.artifact.unwrap());
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    // Every input's digest is the artifact the engine recorded for that node.
    for r in reports.iter().filter(|r| r.id != "reports/main") {
        assert_eq!(json["reproducibility"]["inputs"][&r.id], r.artifact.unwrap().to_string(), "{}", r.id);
    }
    assert_eq!(json["forgetting"][0]["regression"], true);
    assert_eq!(json["mixtures"][0]["languages"]["fin_Latn"], 120);
    assert_eq!(json["stages"][0]["steps"].as_array().unwrap().len(), 2);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("REGRESSION") && html.contains("<svg"), "the page flags the regression and has charts");
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().starts_with("# Engine test\n"));
}

#[test]
fn an_evals_reference_to_a_missing_entry_is_a_located_plan_error() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        "[experiment]\nname = \"r\"\nseed = 1\n\n[reports.main]\nplugin = \"report.html\"\nevals = [\"evals.bpb\"]\n";
    std::fs::write(dir.path().join("m.toml"), text).unwrap();
    let err = plan(resolve(&dir.path().join("m.toml"), &ResolveOptions::default()).unwrap()).err().unwrap().to_string();
    assert!(err.contains("`evals` of `reports/main`: `evals.bpb` is not an entry reference"), "{err}");
    assert!(err.contains("m.toml:7"), "located at the element: {err}");
}
