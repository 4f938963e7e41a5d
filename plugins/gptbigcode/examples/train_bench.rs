//! Training throughput of aurora's GPTBigCode on CPU (`cargo xtask bench --only train` drives this
//! binary beside transformers' `GPTBigCodeForCausalLM` in eager PyTorch, xtask/src/bench/train_peer.py):
//!
//! ```text
//! cargo run --release -p aurora-gptbigcode --example train_bench -- \
//!     LAYERS HIDDEN HEADS SEQ VOCAB BATCH WARMUP STEPS THREADS SEED LR
//! ```
//!
//! One step: forward + LM loss (position t predicts id t + 1) + backward + global grad-norm clip
//! to 1.0 + AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices and embeddings only;
//! the trainer's [`aurora_gptbigcode::adamw::AdamW`]), fp32, no dropout, on one fixed batch of
//! random ids (the model memorises it, so the loss must fall). WARMUP untimed steps, then STEPS
//! timed ones. Prints one JSON line: tokens/s, wall and CPU seconds, first and last loss.

use std::time::Instant;

use aurora_gptbigcode::adamw::{AdamW, AdamWConfig};
use aurora_gptbigcode::optim::clip_grad_norm;
use aurora_torch::tch;

use bench_util::{Shape, cpu_seconds, model_and_batch, peak_rss_mb};

mod bench_util;

const USAGE: &str = "usage: train_bench LAYERS HIDDEN HEADS SEQ VOCAB BATCH WARMUP STEPS THREADS SEED LR";

fn main() {
    // As the worker that trains (plugins/worker/src/main.rs).
    aurora_torch::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 11 {
        eprintln!("{USAGE}");
        std::process::exit(2);
    }
    let int = |i: usize| -> i64 {
        args[i].parse().unwrap_or_else(|_| panic!("argument {} must be an integer, got {:?}; {USAGE}", i + 1, args[i]))
    };
    let (layers, hidden, heads, seq, vocab, batch) = (int(0), int(1), int(2), int(3), int(4), int(5));
    let (warmup, steps, threads, seed) = (int(6), int(7), int(8), int(9));
    let lr: f64 = args[10].parse().unwrap_or_else(|_| panic!("LR must be a number, got {:?}; {USAGE}", args[10]));
    assert!(steps >= 1 && warmup >= 0, "STEPS must be >= 1 and WARMUP >= 0, got {steps} and {warmup}; {USAGE}");
    tch::set_num_threads(threads as i32);

    let (vs, model, ids) = model_and_batch(&Shape { layers, hidden, heads, vocab, seq }, batch, seed);
    let mut opt = AdamW::new(&vs, &AdamWConfig::default());
    let mut step = || {
        let loss = model.lm_loss(&ids).expect("ids inside the vocabulary and n_positions");
        opt.zero_grad();
        loss.backward();
        clip_grad_norm(&vs, 1.0);
        opt.step(lr);
        loss.double_value(&[])
    };

    let mut losses: Vec<f64> = (0..warmup).map(|_| step()).collect();
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    for _ in 0..steps {
        losses.push(step());
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    let tokens = steps * batch * seq;
    let params = bench_util::params(&vs);
    println!(
        "{}",
        serde_json::json!({
            "bench": "train", "side": "aurora", "libtorch": aurora_torch::libtorch_version(),
            "optimizer": "aurora_gptbigcode::adamw::AdamW", "attn": "sdpa",
            "threads": tch::get_num_threads(), "params": params, "tokens": tokens, "seconds": secs,
            "cpu_seconds": cpu, "tokens_per_s": tokens as f64 / secs, "loss_first": losses[0],
            "loss_last": losses[losses.len() - 1], "ln_vocab": (vocab as f64).ln(), "peak_rss_mb": peak_rss_mb(),
        })
    );
}
