//! Training smoke test: the tiny GPTBigCode memorises a fixed random token sequence with AdamW,
//! and two runs from the same seed end with bitwise-identical weights (CPU, deterministic mode).
//! Its own test binary (process), because `set_deterministic` is process-wide.

use aurora_gptbigcode::optim::{AdamWConfig, BuildAdamW, clip_grad_norm};
use aurora_gptbigcode::schedule::Schedule;
use aurora_gptbigcode::{GptBigCode, GptBigCodeConfig};
use aurora_torch::tch::{self, Device, Kind, Tensor, nn};

const STEPS: u64 = 50;

struct Run {
    losses: Vec<f64>,
    weights: Vec<(String, Tensor)>,
}

fn train(seed: i64) -> Run {
    let config = GptBigCodeConfig::tiny(2, 64, 4, 128, 32);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptBigCode::seeded(&vs.root(), &config, seed).unwrap();
    let data = {
        let _guard = aurora_gptbigcode::model::global_rng_lock();
        tch::manual_seed(seed + 1);
        Tensor::randint(config.vocab_size, [4, 32], (Kind::Int64, Device::Cpu))
    };
    let schedule = Schedule::Cosine { max_lr: 3e-3, min_lr: 3e-4, warmup_steps: 5, decay_steps: STEPS - 5 };
    let mut opt = AdamWConfig::default().build(&vs, schedule.lr(0)).unwrap();
    let mut losses = Vec::new();
    for step in 0..STEPS {
        opt.set_lr(schedule.lr(step));
        let loss = model.lm_loss(&data).unwrap();
        opt.zero_grad();
        loss.backward();
        clip_grad_norm(&vs, 1.0);
        opt.step();
        losses.push(loss.double_value(&[]));
    }
    let mut weights: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    Run { losses, weights }
}

#[test]
fn loss_falls_and_runs_are_bitwise_reproducible() {
    aurora_torch::set_deterministic(1);
    let a = train(1234);
    let ln_vocab = (128f64).ln();
    let (first, last) = (a.losses[0], *a.losses.last().unwrap());
    assert!((first - ln_vocab).abs() < 0.3, "initial loss {first} should be near ln(128) = {ln_vocab}");
    assert!(
        last < 0.5 * ln_vocab,
        "loss after {STEPS} steps is {last}, not well below ln(vocab) = {ln_vocab}: {:?}",
        a.losses
    );

    eprintln!("tiny GPTBigCode: loss {first:.4} -> {last:.4} in {STEPS} steps (ln vocab {ln_vocab:.4})");

    let b = train(1234);
    assert_eq!(a.losses, b.losses, "loss curves differ between two runs with the same seed");
    assert_eq!(a.weights.len(), b.weights.len());
    for ((na, ta), (nb, tb)) in a.weights.iter().zip(&b.weights) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs between two runs with the same seed");
    }

    let c = train(99);
    assert!(!a.weights[0].1.equal(&c.weights[0].1), "another seed should give other weights");
}
