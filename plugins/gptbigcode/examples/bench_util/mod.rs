//! What the training benchmark examples (`train_bench`, `dist_bench`) share: the model and fixed
//! batch they train, and the process figures they report. (A directory without `main.rs`, so
//! cargo does not take it for an example of its own.)

use aurora_gptbigcode::model::global_rng_lock;
use aurora_gptbigcode::{GptBigCode, GptBigCodeConfig};
use aurora_torch::tch::{self, Device, Kind, Tensor, nn};

/// The model's shape: layers, hidden size, heads, vocabulary, sequence length.
pub struct Shape {
    pub layers: i64,
    pub hidden: i64,
    pub heads: i64,
    pub vocab: i64,
    pub seq: i64,
}

/// The benchmarks' GPTBigCode (`GptBigCodeConfig::tiny`, weights from `seed`) and one fixed
/// `[batch, seq]` batch of random ids (from `seed + 1`): the model memorises it, so the loss
/// must fall.
pub fn model_and_batch(shape: &Shape, batch: i64, seed: i64) -> (nn::VarStore, GptBigCode, Tensor) {
    let config = GptBigCodeConfig::tiny(shape.layers, shape.hidden, shape.heads, shape.vocab, shape.seq);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptBigCode::seeded(&vs.root(), &config, seed).expect("a valid config");
    let ids = {
        let _guard = global_rng_lock();
        tch::manual_seed(seed + 1);
        Tensor::randint(shape.vocab, [batch, shape.seq], (Kind::Int64, Device::Cpu))
    };
    (vs, model, ids)
}

/// The number of trainable parameters.
pub fn params(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}

/// Peak resident memory of this process (VmHWM), in MiB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:")?.split_whitespace().next()?.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU seconds (user + system, all threads) of this process so far, as Python's
/// `time.process_time()` measures the peer.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // utime and stime are fields 14 and 15 of /proc/PID/stat (11 and 12 after the command name).
    (ticks(11) + ticks(12)) / 100.0
}
