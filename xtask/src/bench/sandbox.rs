//! Sandboxed executions per second (`sandbox_bench`, the release example of aurora-eval, run as
//! its own process): the 164 HumanEval canonical programs through aurora's sandbox (namespaces,
//! pids cgroup, rlimits, supervisor) beside the same programs as plain `python3 program.py`, on
//! as many threads as CPUs, interleaved round by round. The ratio is the sandbox's cost.

use std::time::Duration;

use anyhow::{Context, Result};

use super::report::{Json, Row, Section};
use super::stats;
use super::{Benchmark, Ctx, json_line, json_number};
use crate::{cargo, exec_checked, target_dir};

pub const BENCH: Benchmark = Benchmark {
    name: "sandbox",
    about: "sandboxed python3 executions/s (164 HumanEval canonical programs) vs plain python3",
    run,
};

const LIMIT: Duration = Duration::from_secs(900);

fn run(ctx: &mut Ctx) -> Result<Section> {
    let humaneval = crate::root().join("..").join("shared").join("data").join("code").join("HumanEval.jsonl.gz");
    let mut s = Section::new("sandbox", "sandboxed executions: 164 HumanEval canonical programs");
    if !humaneval.is_file() {
        let why = format!("missing {}", humaneval.display());
        eprintln!("xtask: bench: sandbox: skipped, {why}");
        s.note("skipped", Json::Str(why.clone()), format!("skipped: {why}"));
        return Ok(s);
    }
    eprintln!("xtask: bench: building the sandbox_bench example of aurora-eval (release)");
    let mut build = cargo();
    build.args(["build", "--release", "-p", "aurora-eval", "--example", "sandbox_bench"]);
    exec_checked(&mut build).context("building the sandbox_bench example")?;
    let rounds = ctx.reps(5, 1);
    let log = ctx.scratch().join("sandbox.log");
    let mut cmd = std::process::Command::new(target_dir()?.join("release").join("examples").join("sandbox_bench"));
    cmd.arg(&humaneval).arg(rounds.to_string());
    stats::time_process_logged(&mut cmd, LIMIT, &log)?;
    let text = std::fs::read_to_string(&log).with_context(|| format!("cannot read {}", log.display()))?;
    let line = json_line(&text)?;
    let get = |k: &str| json_number(line, k).with_context(|| format!("no `{k}` in {line}"));
    let (ours, plain) = (get("sandboxed_per_s")?, get("plain_per_s")?);
    let failed = get("sandboxed_failed")? + get("plain_failed")?;
    s.peer = Some("plain python3 (no sandbox)".into());
    s.row(Row::rate(
        "programs/s",
        format!("executions per second, median of {rounds} rounds"),
        Some(ours),
        Some(plain),
    ));
    let isolation = text.lines().find_map(|l| l.strip_prefix("isolation: ")).unwrap_or("unknown").to_string();
    s.note("isolation", Json::Str(isolation.clone()), format!("isolation: {isolation}"));
    s.note(
        "sandboxed_over_plain",
        Json::Num(ours / plain),
        format!("sandboxed / plain throughput: {:.2} (the sandbox's cost per execution)", ours / plain),
    );
    s.note("workers", Json::Num(get("workers")?), format!("{} worker threads", get("workers")?));
    s.note("failed", Json::Num(failed), format!("{failed} canonical programs failed (expected 0)"));
    Ok(s)
}
