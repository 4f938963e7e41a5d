//! Data parallelism through the local launcher (ranks as `aurora-worker` processes talking over
//! Gloo on 127.0.0.1, one thread each): dp = 2 trains on the same samples as one process with
//! gradient accumulation (losses and final weights within 1e-5), the same layout twice gives the
//! same bytes, ZeRO-1 equals replicated AdamW, and a stage may continue another stage's run
//! under another layout (the optimizer state is resharded).

use aurora_corpus as _;
use aurora_tokens as _;
use aurora_train_plugins as _;

mod common;

use std::path::Path;

use common::*;

/// Also lays CAT out with `settings`.
fn with_cat(manifest: &str, settings: &str) -> String {
    let cat = "continue_run = true\ndata = \"mixtures.cat\"";
    assert!(manifest.contains(cat));
    manifest.replacen(cat, &format!("continue_run = true\nsteps = 4\n{settings}\ndata = \"mixtures.cat\""), 1)
}

#[test]
fn data_parallel_equals_one_process_and_zero_equals_replicated_adamw() {
    if !worker_built() {
        return;
    }
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let one = train(dirs[0].path(), &with_cap(""), "stages/cap");
    let zero = train(dirs[1].path(), &with_cap("layout = { dp = 2 }"), "stages/cap");
    let again = train(dirs[2].path(), &with_cap("layout = { dp = 2 }"), "stages/cap");
    let replicated =
        train(dirs[3].path(), &with_cap("layout = { dp = 2 }\ndistributed_optimizer = false"), "stages/cap");
    let dir = |(store, reports): &(aurora_core::Store, Vec<_>)| artifact_dir(store, reports, "stages/cap");

    // The layout is keyed: the sharded run is another node than the one-process run.
    assert_ne!(report(&one.1, "stages/cap").key, report(&zero.1, "stages/cap").key);
    // Same samples in every global batch: the same losses and weights up to summation order.
    assert_close(&losses(&dir(&one)), &losses(&dir(&zero)), "dp=2 (ZeRO-1) vs one process");
    // Weights: the whole model within 1e-5 (relative Frobenius error). Single tensors can be
    // further apart: where a gradient is near zero, Adam's normalisation turns last-bit
    // differences of the sum into visible ones (a bias of the attention, here).
    let weights = |run| tensors(&dir(run).join("model.safetensors"));
    let (whole, worst, name) = relative_errors(&weights(&one), &weights(&zero));
    eprintln!("dp=2 vs one process: weights {whole:e} (worst tensor {name}: {worst:e})");
    assert!(whole < 1e-5, "final weights: relative error {whole:e}");
    assert!(worst < 1e-3, "final weights: relative error {worst:e} in {name}");
    // The consolidated optimizer state is the one-process state, up to the same tolerances.
    let optimizer = |run| tensors(&dir(run).join("optimizer.safetensors"));
    let (whole, worst, name) = relative_errors(&optimizer(&one), &optimizer(&zero));
    eprintln!("dp=2 vs one process: AdamW state {whole:e} (worst tensor {name}: {worst:e})");
    assert!(whole < 1e-5 && worst < 1e-3, "optimizer state: relative error {whole:e}, {worst:e} in {name}");
    assert!(dir(&zero).join("milestones/tokens-2048/model.safetensors").is_file());
    // The same layout twice: the same bytes.
    assert_eq!(report(&zero.1, "stages/cap").artifact, report(&again.1, "stages/cap").artifact);
    // ZeRO-1 against AdamW replicated on every rank: each element gets the same update, up to
    // the fused kernel's rounding (its vector body and scalar tail round differently, and a
    // shard's boundaries move elements from one to the other), which Adam's normalisation
    // magnifies where a gradient is near zero, as above.
    assert_close(&losses(&dir(&zero)), &losses(&dir(&replicated)), "ZeRO-1 vs replicated AdamW");
    let (whole, worst, name) = relative_errors(&weights(&zero), &weights(&replicated));
    eprintln!("ZeRO-1 vs replicated: weights {whole:e} (worst tensor {name}: {worst:e})");
    assert!(whole < 1e-5, "ZeRO-1 vs replicated: relative error {whole:e} (worst {worst:e} in {name})");
    assert!(worst < 1e-3, "ZeRO-1 vs replicated: relative error {worst:e} in {name}");
}

#[test]
fn a_stage_continues_another_layouts_run() {
    if !worker_built() {
        return;
    }
    let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // CAP on one process, CAT continuing it on one process / on dp = 2 with ZeRO-1 (the whole
    // AdamW state is sharded on load) / CAP on dp = 2 and CAT on one process (the shards are
    // consolidated into CAP's artifact, then loaded whole).
    let single = train(a.path(), &with_cat(&with_cap(""), ""), "stages/cat");
    let sharded_cat = train(b.path(), &with_cat(&with_cap(""), "layout = { dp = 2 }"), "stages/cat");
    let sharded_cap = train(c.path(), &with_cat(&with_cap("layout = { dp = 2 }"), ""), "stages/cat");
    let state = |(store, reports): &(aurora_core::Store, Vec<_>)| {
        json(&artifact_dir(store, reports, "stages/cat").join("trainer_state.json"))
    };
    for run in [&single, &sharded_cat, &sharded_cap] {
        // The run goes on: CAP's 8 updates, then CAT's 4.
        assert_eq!(state(run)["step"], 12);
    }
    let cat_losses =
        |(store, reports): &(aurora_core::Store, Vec<_>)| losses(&artifact_dir(store, reports, "stages/cat"));
    // A wrongly resharded Adam state (zeros, or another parameter's moments) changes the first
    // update by far more than this.
    assert_close(&cat_losses(&single), &cat_losses(&sharded_cat), "CAT on dp=2 after CAP on one process");
    assert_close(&cat_losses(&single), &cat_losses(&sharded_cap), "CAT on one process after CAP on dp=2");
}

/// A dp = 2 training job whose inputs do not exist: ranks compare their jobs before reading any.
fn job(dir: &Path, seed: u64) -> aurora_worker_api::Job {
    use aurora_train::schedule::{Schedule, StageSchedule};
    aurora_worker_api::Job::Train(aurora_worker_api::TrainJob {
        node: "stages/cap".into(),
        seed,
        device: "cpu".into(),
        precision: aurora_worker_api::Precision::Fp32,
        model: aurora_train::GptBigCodeConfig::tiny(2, 32, 2, 64, 32),
        init: aurora_worker_api::Init::Scratch,
        data: aurora_worker_api::TrainData::Mixture { dir: dir.join("no-mixture"), stores: Default::default() },
        tokenizer: dir.join("no-tokenizer"),
        schedule: StageSchedule { schedule: Schedule::Constant { lr: 1e-3, warmup_steps: 0 }, rewarm: false },
        optimizer: Default::default(),
        grad_clip: 1.0,
        seq_len: 32,
        micro_batch: 2,
        global_batch: 8,
        steps: Some(2),
        checkpoint_every_tokens: 0,
        milestones: vec![],
        threads: 1,
        layout: aurora_train::Layout { tp: 1, pp: 1, dp: 2 },
        distributed_optimizer: true,
        out_dir: dir.join("out"),
        work_dir: dir.join("work"),
    })
}

#[test]
fn ranks_of_different_jobs_refuse_to_train_together() {
    if !worker_built() {
        return;
    }
    let worker = aurora_worker_api::client::worker_path().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = aurora_launch::local::free_port().unwrap();
    let children: Vec<_> = [(0, 1), (1, 2)]
        .into_iter()
        .map(|(rank, seed)| {
            let path = dir.path().join(format!("job-{rank}.json"));
            std::fs::write(&path, serde_json::to_string(&job(dir.path(), seed)).unwrap()).unwrap();
            std::process::Command::new(&worker)
                .arg(&path)
                .envs(aurora_launch::local::local_rank_vars(rank, 2, port))
                .env("AURORA_COLLECTIVE_TIMEOUT_S", "60")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Both stop at once (well within the 60 s rendezvous timeout), each naming the difference.
    let (tx, rx) = std::sync::mpsc::channel();
    for (rank, child) in children.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || tx.send((rank, child.wait_with_output().unwrap())).unwrap());
    }
    for _ in 0..2 {
        let (rank, out) = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("a rank hung");
        assert!(!out.status.success(), "rank {rank} trained with another job");
        let text = String::from_utf8_lossy(&out.stderr);
        // Both print rank 0's verdict, which names what each side runs.
        assert!(
            text.contains("error: stages/cap: rank 0 runs job ")
                && text.contains(", but rank 1 runs job ")
                && text.contains("every rank must run the same job file"),
            "rank {rank}: {text}"
        );
    }
}
