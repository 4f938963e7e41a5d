//! Resume: a run interrupted after step 6 (the progress callback panics) keeps its step-4
//! checkpoint in the work directory; train() on the same job resumes there and ends with
//! byte-identical weights, optimizer state, metrics, state and milestones to an uninterrupted run.

mod trainer_common;

use aurora_gptbigcode::trainer::train;
use aurora_worker_api::Event;
use trainer_common::*;

const STEPS: u64 = 12;

#[test]
fn interrupted_run_resumes_to_identical_bytes() {
    let root = tempfile::tempdir().unwrap();
    let fx = fixture(root.path(), STEPS * 8);
    let job = |name: &str| {
        let mut j = fx.job(root.path(), name, STEPS);
        j.checkpoint_every_tokens = 4 * 8 * SEQ_LEN;
        j.milestones = vec![2 * 8 * SEQ_LEN, 10 * 8 * SEQ_LEN];
        j
    };
    let a = job("a");
    train(&a, &mut |_| {}).unwrap();

    let b = job("b");
    let mut seen = 0;
    let interrupted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train(&b, &mut |_| {
            seen += 1;
            if seen == 6 {
                panic!("interrupted after step 6");
            }
        })
    }));
    assert!(interrupted.is_err());
    assert!(!b.out_dir.join("model.safetensors").exists());
    let checkpoint = aurora_gptbigcode::checkpoint::latest(&b.work_dir).unwrap().expect("a checkpoint is kept");
    assert_eq!(checkpoint.1.global_step, 4);
    assert_eq!(checkpoint.1.next_sample, 4 * 8);

    let mut steps_after_resume = Vec::new();
    train(&b, &mut |e| {
        if let Event::Progress { message, .. } = e {
            steps_after_resume.push(message.split_whitespace().nth(1).unwrap().to_owned());
        }
    })
    .unwrap();
    assert_eq!(steps_after_resume.first().map(String::as_str), Some("5/12"), "resumed at step 5");
    assert_eq!(steps_after_resume.len(), 8);

    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "metrics.jsonl",
        "trainer_state.json",
        "milestones/tokens-512/model.safetensors",
        "milestones/tokens-512/trainer_state.json",
        "milestones/tokens-2560/model.safetensors",
    ] {
        assert_eq!(read(&a.out_dir.join(file)), read(&b.out_dir.join(file)), "{file} differs after resuming");
    }
}
