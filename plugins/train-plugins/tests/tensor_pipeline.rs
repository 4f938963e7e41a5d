//! Tensor and pipeline parallelism through the local launcher (ranks as `aurora-worker`
//! processes over Gloo on 127.0.0.1): tp = 2, pp = 2, tp 2 x dp 2 and pp 2 x dp 2 train CAP on the
//! same samples as one process (every step's loss within 1e-5, the gradient norm of every step,
//! the final weights and AdamW state within 1e-5 relative Frobenius error), the consolidated
//! artifact is an ordinary Hugging Face directory, the same layout twice gives the same bytes, and
//! CAT continues a tp = 2 CAP run on dp = 2.

use aurora_corpus as _;
use aurora_tokens as _;
use aurora_train_plugins as _;

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn metric(stage: &Path, field: &str) -> Vec<f64> {
    std::fs::read_to_string(stage.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()[field].as_f64().unwrap())
        .collect()
}

#[test]
fn tensor_and_pipeline_parallel_equal_one_process() {
    if !worker_built() {
        return;
    }
    let layouts = [
        "",
        "layout = { tp = 2 }",
        "layout = { pp = 2 }",
        "layout = { tp = 2, dp = 2 }",
        "layout = { pp = 2, dp = 2 }",
    ];
    let dirs: Vec<_> = layouts.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let runs: Vec<Run> = layouts.iter().zip(&dirs).map(|(l, d)| train(d.path(), &with_cap(l), "stages/cap")).collect();
    let dir = |run: &Run| artifact_dir(&run.0, &run.1, "stages/cap");
    let one = &runs[0];
    for (layout, run) in layouts.iter().zip(&runs).skip(1) {
        assert_close(&metric(&dir(one), "loss"), &metric(&dir(run), "loss"), &format!("{layout}: loss"));
        assert_close(&metric(&dir(one), "grad_norm"), &metric(&dir(run), "grad_norm"), &format!("{layout}: grad norm"));
        for file in ["model.safetensors", "optimizer.safetensors", "milestones/tokens-2048/model.safetensors"] {
            let (whole, worst, name) = relative_errors(&tensors(&dir(one).join(file)), &tensors(&dir(run).join(file)));
            eprintln!("{layout}: {file} {whole:e} (worst tensor {name}: {worst:e})");
            assert!(whole < 1e-5, "{layout}: {file}: relative error {whole:e}");
            assert!(worst < 1e-3, "{layout}: {file}: relative error {worst:e} in {name}");
        }
        // The artifact is the Hugging Face directory one process writes: same files.
        let names = |d: &Path| {
            let mut v: Vec<String> =
                std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            v.sort();
            v
        };
        assert_eq!(names(&dir(one)), names(&dir(run)), "{layout}");
    }
    // The same layout twice: the same bytes.
    let again_dir = tempfile::tempdir().unwrap();
    let again = train(again_dir.path(), &with_cap(layouts[3]), "stages/cap");
    assert_eq!(report(&runs[3].1, "stages/cap").artifact, report(&again.1, "stages/cap").artifact);
}

/// CAP on tp = 2 and CAT continuing its run on dp = 2 (and CAP on pp = 2, CAT on one process):
/// the consolidated artifact carries the run, the AdamW state is resliced on load, and CAT's
/// losses are those of the all-one-process curriculum.
#[test]
fn a_stage_continues_a_tensor_or_pipeline_parallel_run_under_another_layout() {
    if !worker_built() {
        return;
    }
    let with_cat = |manifest: &str, settings: &str| {
        let cat = "continue_run = true\ndata = \"mixtures.cat\"";
        assert!(manifest.contains(cat));
        manifest.replacen(cat, &format!("continue_run = true\nsteps = 4\n{settings}\ndata = \"mixtures.cat\""), 1)
    };
    let cases = [("", ""), ("layout = { tp = 2 }", "layout = { dp = 2 }"), ("layout = { pp = 2 }", "")];
    let dirs: Vec<_> = cases.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let runs: Vec<Run> = cases
        .iter()
        .zip(&dirs)
        .map(|((cap, cat), d)| train(d.path(), &with_cat(&with_cap(cap), cat), "stages/cat"))
        .collect();
    let cat = |run: &Run| artifact_dir(&run.0, &run.1, "stages/cat");
    for (case, run) in cases.iter().zip(&runs) {
        assert_eq!(json(&cat(run).join("trainer_state.json"))["step"], 12, "{case:?}: the run goes on");
        assert_close(&metric(&cat(&runs[0]), "loss"), &metric(&cat(run), "loss"), &format!("{case:?}: CAT loss"));
    }
}
