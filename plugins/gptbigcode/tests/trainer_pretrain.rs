//! Pretraining from scratch on a real mixture (two sources of the sample corpus, tokenized with a
//! BPE trained on them): the loss falls well below the unigram entropy of the data, the artifact
//! has every agreed file, and the exported directory loads back with identical logits.

mod trainer_common;

use aurora_gptbigcode::hf;
use aurora_gptbigcode::trainer::{StageState, train};
use aurora_torch::tch::{Device, Tensor};
use aurora_worker_api::Event;
use trainer_common::*;

#[test]
fn loss_falls_below_unigram_entropy_and_export_loads_back() {
    let started = std::time::Instant::now();
    let root = tempfile::tempdir().unwrap();
    let steps = 800;
    let fx = fixture(root.path(), steps * 8);
    let mut job = fx.job(root.path(), "pretrain", steps);
    job.milestones = vec![8 * 32 * 10, 8 * 32 * 1000];
    let mut progress = Vec::new();
    let metrics = train(&job, &mut |e| progress.push(e)).unwrap();

    let losses = metrics_losses(&job.out_dir);
    assert_eq!(losses.len(), steps as usize);
    let entropy = fx.unigram_entropy();
    let (first, last) = (losses[0], *losses.last().unwrap());
    let tail = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
    eprintln!(
        "loss {first:.4} -> {last:.4} (mean of last 5: {tail:.4}); unigram entropy {entropy:.4} nats, ln vocab {:.4}; \
         {:.1}s",
        (VOCAB as f64).ln(),
        started.elapsed().as_secs_f64()
    );
    assert!((first - (VOCAB as f64).ln()).abs() < 0.3, "initial loss {first} should be near ln(vocab)");
    assert!(tail < entropy - 0.5, "loss {tail} is not well below the unigram entropy {entropy}: {losses:?}");

    // Progress: one event per step, tokens counted up to the total.
    assert_eq!(progress.len(), steps as usize);
    match progress.last().unwrap() {
        Event::Progress { done, total, message } => {
            assert_eq!((*done, *total), (steps * 8 * 32, steps * 8 * 32));
            assert!(message.starts_with(&format!("step {steps}/{steps} loss ")), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(metrics["steps"], steps);
    assert_eq!(metrics["tokens"], steps * 8 * 32);
    assert_eq!(metrics["param_count"], job.model.param_count());
    assert!(metrics["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(metrics["mfu"].is_null(), "no MFU on CPU");

    // The artifact.
    let out = &job.out_dir;
    for file in [
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "optimizer.safetensors",
        "trainer_state.json",
        "metrics.jsonl",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let state: StageState = serde_json::from_slice(&read(&out.join("trainer_state.json"))).unwrap();
    assert_eq!(
        state,
        StageState { step: steps, stage_steps: steps, tokens: steps * 256, tokens_total: steps * 256, seed: 1234 }
    );
    let first_line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().next().unwrap())
            .unwrap();
    let keys: Vec<&String> = first_line.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["grad_norm", "loss", "lr", "step", "tokens"]);
    // The first milestone was reached and kept; the second is beyond the stage.
    let milestone = out.join("milestones/tokens-2560");
    let ms: StageState = serde_json::from_slice(&read(&milestone.join("trainer_state.json"))).unwrap();
    assert_eq!((ms.stage_steps, ms.tokens), (10, 2560));
    hf::load_pretrained(&milestone, Device::Cpu).unwrap();
    assert_eq!(read(&milestone.join("tokenizer.json")), read(&out.join("tokenizer.json")), "a milestone is evaluable");
    assert!(!out.join("milestones/tokens-256000").exists());

    // The export loads back, with the trained weights (low loss on the data), not the initial ones.
    let loaded = hf::load_pretrained(out, Device::Cpu).unwrap();
    let mixture = aurora_tokens::loader::MixtureReader::open(&fx.mixture, &fx.stores).unwrap();
    let sample: Vec<i64> = mixture.sample(0)[..32].iter().map(|&t| t as i64).collect();
    let loss = loaded.model.lm_loss(&Tensor::from_slice(&sample).view([1, 32])).unwrap().double_value(&[]);
    assert!(loss < entropy, "exported model's loss on sample 0 is {loss}, above the unigram entropy {entropy}");
    eprintln!("total test time {:.1}s", started.elapsed().as_secs_f64());
}
