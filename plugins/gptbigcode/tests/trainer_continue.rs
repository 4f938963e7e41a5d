//! `Init::Stage { continue_run: true }`: a stage continued from another's artifact continues the
//! global step counter (so the schedule), the token total and the AdamW state; without
//! `continue_run` only the weights are taken.

mod trainer_common;

use aurora_gptbigcode::GptBigCode;
use aurora_gptbigcode::adamw::AdamW;
use aurora_gptbigcode::trainer::{StageState, train};
use aurora_torch::tch::{Device, nn};
use aurora_worker_api::Init;
use serde_json::Value;
use trainer_common::*;

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn continued_stage_continues_steps_schedule_and_optimizer() {
    let root = tempfile::tempdir().unwrap();
    let fx = fixture(root.path(), 10 * 8);
    let first = fx.job(root.path(), "cap", 10);
    train(&first, &mut |_| {}).unwrap();

    let mut cont = fx.job(root.path(), "cat", 5);
    cont.init = Init::Stage { dir: first.out_dir.clone(), continue_run: true };
    train(&cont, &mut |_| {}).unwrap();
    let state: StageState = serde_json::from_slice(&read(&cont.out_dir.join("trainer_state.json"))).unwrap();
    assert_eq!(state, StageState { step: 15, stage_steps: 5, tokens: 5 * 256, tokens_total: 15 * 256, seed: 1234 });
    let metrics = lines(&cont.out_dir.join("metrics.jsonl"));
    assert_eq!(metrics[0]["step"], 11);
    assert_eq!(metrics[0]["lr"].as_f64().unwrap(), cont.schedule.lr(10, 10), "the schedule continues at step 10");
    assert_ne!(cont.schedule.lr(10, 10), cont.schedule.lr(0, 0));

    // The optimizer state continued: 15 updates, and the moments started from the first stage's.
    let config = cont.model.clone();
    let opt_steps = |dir: &std::path::Path| {
        let vs = nn::VarStore::new(Device::Cpu);
        GptBigCode::new(&vs.root(), &config).unwrap();
        let mut opt = AdamW::new(&vs, &cont.optimizer);
        opt.load(&dir.join("optimizer.safetensors")).unwrap();
        opt.step_count()
    };
    assert_eq!(opt_steps(&first.out_dir), 10);
    assert_eq!(opt_steps(&cont.out_dir), 15);

    // Without continue_run: same data and weights, but the counter, schedule and moments restart,
    // so the result differs.
    let mut fresh = fx.job(root.path(), "cat-fresh", 5);
    fresh.init = Init::Stage { dir: first.out_dir.clone(), continue_run: false };
    train(&fresh, &mut |_| {}).unwrap();
    let state: StageState = serde_json::from_slice(&read(&fresh.out_dir.join("trainer_state.json"))).unwrap();
    // The step counter restarts; the tokens the weights have seen still count (10 + 5 steps).
    assert_eq!((state.step, state.tokens_total), (5, 15 * 256));
    assert_eq!(opt_steps(&fresh.out_dir), 5);
    assert_eq!(lines(&fresh.out_dir.join("metrics.jsonl"))[0]["lr"].as_f64().unwrap(), fresh.schedule.lr(0, 0));
    assert_ne!(read(&cont.out_dir.join("model.safetensors")), read(&fresh.out_dir.join("model.safetensors")));
    // Both started from the first stage's weights: the first loss is the same.
    assert_eq!(
        lines(&cont.out_dir.join("metrics.jsonl"))[0]["loss"],
        lines(&fresh.out_dir.join("metrics.jsonl"))[0]["loss"]
    );
}
