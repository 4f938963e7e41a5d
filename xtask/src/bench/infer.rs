//! Inference throughput on CPU: aurora's GPTBigCode inference (`infer_bench`, the release
//! example of aurora-gptbigcode, run as its own process) beside transformers'
//! `GPTBigCodeForCausalLM` in eager PyTorch (infer_peer.py: `model(...)` for scoring,
//! `model.generate` for greedy generation), the same model and work on both sides: 4 layers,
//! hidden 256, 8 heads (multi-query), byte-level vocabulary, scoring 8 windows of 511 tokens,
//! greedy generation of 256 new tokens (64 under --quick) with and without the KV cache at batch 1
//! and 8. Both pin the same thread count.
//!
//! The figure of interest (issue 5): the KV cache's speedup (cached / uncached tokens/s), ours
//! and the peer's, and aurora's tokens/s beside the peer's.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::report::{Json, Row, Section};
use super::stats;
use super::{Benchmark, Ctx, json_line, json_number};
use crate::libtorch::TORCH_VERSION;
use crate::{cargo, exec_checked, json_string_field, target_dir};

pub const BENCH: Benchmark = Benchmark {
    name: "infer",
    about: "inference tokens/s on CPU (scoring; greedy generation with/without KV cache, batch 1 and 8) vs transformers",
    run,
};

const NEW_TOKENS: u32 = 256;
const QUICK_NEW_TOKENS: u32 = 64;
const LIMIT: Duration = Duration::from_secs(3600);
const PEER_SCRIPT: &str = include_str!("infer_peer.py");
const BATCHES: [u32; 2] = [1, 8];

/// What one side printed: its JSON line.
struct Figures {
    line: String,
}

impl Figures {
    fn get(&self, key: &str) -> Result<f64> {
        json_number(&self.line, key).with_context(|| format!("no `{key}` in {}", self.line))
    }

    fn generate(&self, batch: u32, cached: bool) -> Result<f64> {
        self.get(&format!("generate_b{batch}_{}_tokens_per_s", if cached { "cached" } else { "uncached" }))
    }
}

fn run(ctx: &mut Ctx) -> Result<Section> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let new_tokens = if ctx.quick { QUICK_NEW_TOKENS } else { NEW_TOKENS };

    eprintln!("xtask: bench: building the infer_bench example of aurora-gptbigcode (release)");
    let mut build = cargo();
    build.args(["build", "--release", "-p", "aurora-gptbigcode", "--example", "infer_bench"]);
    ctx.lt.apply(&mut build)?;
    exec_checked(&mut build).context("building the infer_bench example")?;
    let example = target_dir()?.join("release").join("examples").join("infer_bench");
    ctx.venv()?;
    let script = ctx.scratch().join("infer_peer.py");
    std::fs::write(&script, PEER_SCRIPT).with_context(|| format!("cannot write {}", script.display()))?;

    let pin = |cmd: &mut Command| {
        for var in ["OMP_NUM_THREADS", "MKL_NUM_THREADS"] {
            cmd.env(var, threads.to_string());
        }
    };
    // One run each, one after the other (never at the same time: two libtorch processes on the
    // same cores slow each other down by far more than their share).
    let mut ours = Command::new(&example);
    ctx.lt.apply(&mut ours)?;
    ours.arg(new_tokens.to_string());
    pin(&mut ours);
    let load_before = super::loadavg();
    let ours = measure(&mut ours, &ctx.scratch().join("infer-ours.log"))?;
    let load_ours = format!("aurora {load_before} -> {}", super::loadavg());
    let mut theirs = ctx.venv()?.python();
    theirs.arg(&script).arg(new_tokens.to_string()).arg(threads.to_string());
    pin(&mut theirs);
    // No hub access (the model is built from a config); torch loads its own wheel's libtorch.
    theirs.env("HF_HUB_OFFLINE", "1").env("TRANSFORMERS_OFFLINE", "1").env_remove("LD_LIBRARY_PATH");
    let load_before = super::loadavg();
    let theirs = measure(&mut theirs, &ctx.scratch().join("infer-peer.log"))?;
    let load_peer = format!("pytorch {load_before} -> {}", super::loadavg());

    for key in ["vocab_size", "prompt_tokens", "new_tokens", "threads"] {
        let (a, b) = (ours.get(key)?, theirs.get(key)?);
        if a != b {
            bail!("`{key}` differs: aurora {a} vs pytorch {b}: not the same work");
        }
    }
    for (who, f) in [("aurora", &ours), ("pytorch", &theirs)] {
        for batch in BATCHES {
            let same = f.get(&format!("generate_b{batch}_rows_identical_with_and_without_cache"))?;
            if same != f64::from(batch) {
                bail!(
                    "{who}: at batch {batch} only {same} rows generated the same greedy tokens with and without \
                     the KV cache (a bug, not a benchmark figure)"
                );
            }
        }
    }
    let peer_torch = json_string_field(&theirs.line, "torch").unwrap_or_default();
    let transformers = json_string_field(&theirs.line, "transformers").unwrap_or_else(|| "?".into());
    if !peer_torch.starts_with(TORCH_VERSION) {
        bail!(
            "the peer ran torch {peer_torch:?}, not the libtorch {TORCH_VERSION} aurora links: rebuild the bench venv"
        );
    }

    let mut s = Section::new(
        "infer",
        format!(
            "inference on CPU: GPTBigCode 4 layers x 256 hidden, 8 heads (multi-query), byte vocab 258, fp32, \
             greedy {new_tokens} new tokens, {threads} threads"
        ),
    );
    s.peer = Some(format!("torch {peer_torch} + transformers {transformers} (py)"));
    s.row(Row::rate(
        "tok/s",
        "scoring 8 x 511 tokens, batch 8",
        Some(ours.get("scoring_tokens_per_s")?),
        Some(theirs.get("scoring_tokens_per_s")?),
    ));
    let mut speedups = Vec::new();
    let mut text = Vec::new();
    for batch in BATCHES {
        for cached in [true, false] {
            s.row(Row::rate(
                "tok/s",
                format!("generation, batch {batch}, {} KV cache", if cached { "with" } else { "without" }),
                Some(ours.generate(batch, cached)?),
                Some(theirs.generate(batch, cached)?),
            ));
        }
        let ours_speedup = ours.generate(batch, true)? / ours.generate(batch, false)?;
        let peer_speedup = theirs.generate(batch, true)? / theirs.generate(batch, false)?;
        s.row(Row::factor(format!("KV cache speedup, batch {batch} (aurora)"), ours_speedup));
        s.row(Row::factor(format!("KV cache speedup, batch {batch} (pytorch)"), peer_speedup));
        speedups.push((
            format!("b{batch}"),
            Json::Obj(vec![("aurora".into(), Json::Num(ours_speedup)), ("pytorch".into(), Json::Num(peer_speedup))]),
        ));
        text.push(format!("batch {batch}: aurora {ours_speedup:.1}x, pytorch {peer_speedup:.1}x"));
    }
    s.note(
        "kv_cache_speedup",
        Json::Obj(speedups),
        format!("KV cache speedup (cached / uncached tokens/s, {new_tokens} new tokens): {}", text.join("; ")),
    );
    s.note(
        "load_avg",
        Json::Arr(vec![Json::Str(load_ours.clone()), Json::Str(load_peer.clone())]),
        format!("load avg before -> after each run: {load_ours}; {load_peer}"),
    );
    if ctx.quick {
        s.note("quick", Json::Bool(true), format!("--quick: {QUICK_NEW_TOKENS} new tokens, not {NEW_TOKENS}"));
    }
    Ok(s)
}

/// Runs one side, timed as a whole, and keeps the JSON line it prints (its output goes to `log`).
fn measure(cmd: &mut Command, log: &Path) -> Result<Figures> {
    let shown = crate::display(cmd);
    stats::time_process_logged(cmd, LIMIT, log)?;
    let text = std::fs::read_to_string(log).with_context(|| format!("cannot read {}", log.display()))?;
    let line = json_line(&text).with_context(|| format!("`{shown}` printed:\n{text}"))?;
    Ok(Figures { line: line.to_owned() })
}
