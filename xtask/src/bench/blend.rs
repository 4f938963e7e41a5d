//! Blend-index construction for 10^8 samples (`tokens_bench blend`, the release example of
//! aurora-tokens, run as its own process): five sources with the CAP-like weights
//! 0.4/0.2/0.15/0.15/0.1, `blend.idx` written (10 bytes per sample) and reopened through the
//! reader's validation. Goal (issue 3): seconds, not minutes. No peer: Megatron's
//! `build_blending_indices` is a C++ helper of a library that needs torch, not a tool one runs.

use std::time::Duration;

use anyhow::{Context, Result};

use super::report::{Json, Row, Section};
use super::stats;
use super::{Benchmark, Ctx, json_line, json_number};

pub const BENCH: Benchmark =
    Benchmark { name: "blend", about: "blend-index construction for 10^8 samples (5 sources): time and peak RSS", run };

const SAMPLES: u64 = 100_000_000;
const QUICK_SAMPLES: u64 = 10_000_000;
/// "Seconds, not minutes".
const GOAL_SECS: f64 = 60.0;
const LIMIT: Duration = Duration::from_secs(900);

fn run(ctx: &mut Ctx) -> Result<Section> {
    let samples = if ctx.quick { QUICK_SAMPLES } else { SAMPLES };
    let rounds = ctx.reps(3, 1);
    let log = ctx.scratch().join("blend.log");
    let mut runs = Vec::new();
    for round in 0..rounds {
        let mut cmd = ctx.tokens_bench()?;
        // The example writes into a temp dir: keep it on the scratch filesystem.
        cmd.arg("blend").arg(samples.to_string()).env("TMPDIR", ctx.scratch());
        let process = stats::time_process_logged(&mut cmd, LIMIT, &log)?;
        let text = std::fs::read_to_string(&log).with_context(|| format!("cannot read {}", log.display()))?;
        let line = json_line(&text)?;
        let get = |k: &str| json_number(line, k).with_context(|| format!("no `{k}` in {line}"));
        let (secs, rss, bytes) = (get("seconds")?, get("peak_rss_mb")?, get("bytes")?);
        eprintln!("xtask: bench: blend: round {}/{rounds}: {secs:.2} s, peak RSS {rss:.0} MiB", round + 1);
        runs.push((secs, rss, bytes, process));
    }
    let mut secs: Vec<f64> = runs.iter().map(|r| r.0).collect();
    secs.sort_by(f64::total_cmp);
    let median = secs[secs.len() / 2];
    let rss = runs.iter().map(|r| r.1).fold(0.0, f64::max);
    let bytes = runs[0].2;
    let wall: Vec<f64> = runs.iter().map(|r| r.3.wall.as_secs_f64()).collect();
    let cpu: Option<Vec<f64>> = runs.iter().map(|r| r.3.cpu.map(|d| d.as_secs_f64())).collect();

    let mut s = Section::new("blend", format!("blend index for {samples} samples, 5 sources (0.4/0.2/0.15/0.15/0.1)"));
    s.row(Row::time(format!("build + write + validate: median (n={})", runs.len()), Some(median), None, runs.len()));
    s.row(Row::time("build: fastest", secs.first().copied(), None, runs.len()));
    s.row(Row::time("whole process: wall, mean", Some(wall.iter().sum::<f64>() / wall.len() as f64), None, runs.len()));
    s.row(Row::time("whole process: CPU, mean", cpu.map(|c| c.iter().sum::<f64>() / c.len() as f64), None, runs.len()));
    s.row(Row::rate("samples/s", "samples per second (median)", Some(samples as f64 / median), None));
    s.row(Row::mib("peak RSS (VmHWM), max over runs", Some(rss), None));
    s.note(
        "index_bytes",
        Json::Num(bytes),
        format!("blend.idx: {:.0} MB ({:.1} bytes per sample)", bytes / 1e6, bytes / samples as f64),
    );
    s.note(
        "goal_met",
        Json::Obj(vec![
            ("goal_s".into(), Json::Num(GOAL_SECS)),
            ("median_s".into(), Json::Num(median)),
            ("met".into(), Json::Bool(median < GOAL_SECS)),
        ]),
        format!(
            "{samples} samples in {median:.2} s (median): goal \"seconds, not minutes\" (< {GOAL_SECS:.0} s): {}",
            if median < GOAL_SECS { "met" } else { "NOT met" }
        ),
    );
    Ok(s)
}
