//! No-op rerun latency of a 50-node manifest, whole process, beside `dvc repro` on the same DAG.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use super::fixtures::Dag;
use super::report::{Json, Row, Section};
use super::stats::{self, Stats, Timed, time_process};
use super::{Benchmark, Ctx, git, write};

pub const BENCH: Benchmark =
    Benchmark { name: "noop", about: "no-op rerun of a 50-node exec.command DAG (aurora run vs dvc repro)", run };

/// The target for a no-op rerun of 50 nodes (reported, not asserted).
const GOAL: Duration = Duration::from_millis(50);
const DAG: Dag = Dag { chains: 10, len: 5 };
/// Size of each step's data file.
const DATA_BYTES: usize = 64 * 1024;
const LIMIT: Duration = Duration::from_secs(300);

fn run(ctx: &mut Ctx) -> Result<Section> {
    let nodes = DAG.nodes();
    let dvc_label = ctx.venv()?.dvc_version();

    // aurora's project: manifest + data committed, the store ignored.
    let ours = ctx.git_project("noop-aurora")?;
    DAG.write_data(&ours, DATA_BYTES)?;
    write(&ours, "bench.toml", &DAG.aurora_manifest("bench-noop"))?;
    write(&ours, ".gitignore", ".aurora/\n")?;
    git(&ours, &["add", "-A"])?;
    git(&ours, &["commit", "-q", "-m", "bench project"])?;

    // DVC's: the same data and DAG, `dvc init`, committed.
    let theirs = ctx.git_project("noop-dvc")?;
    DAG.write_data(&theirs, DATA_BYTES)?;
    std::fs::create_dir_all(theirs.join("out")).context("cannot create out/")?;
    write(&theirs, "dvc.yaml", &DAG.dvc_yaml())?;
    dvc(ctx, &theirs, &["init", "-q"])?;
    dvc(ctx, &theirs, &["config", "core.analytics", "false"])?;
    git(&theirs, &["add", "-A"])?;
    git(&theirs, &["commit", "-q", "-m", "bench project"])?;

    let aurora_run = |ctx: &Ctx| {
        let mut c = ctx.aurora();
        c.args(["run", "bench.toml"]).current_dir(&ours);
        c
    };
    let dvc_repro = |ctx: &Ctx| {
        let mut c = ctx.venv.as_ref().expect("created above").command("dvc");
        c.arg("repro").current_dir(&theirs);
        c
    };

    eprintln!("xtask: bench: noop: cold runs ({nodes} nodes each)");
    let cold_ours = time_process(&mut aurora_run(ctx), LIMIT).context("aurora's cold run")?;
    let cold_theirs = time_process(&mut dvc_repro(ctx), LIMIT).context("dvc's cold repro")?;
    // DVC wrote dvc.lock and .gitignore files: commit them, as a user would.
    git(&theirs, &["add", "-A"])?;
    git(&theirs, &["commit", "-q", "-m", "repro"])?;

    // Both reruns must really be no-ops before they are timed.
    let report = stats::output_of(aurora_run(ctx).arg("--json"))?;
    let cached = count_status(&report, "cached");
    ensure!(cached == nodes, "aurora's rerun is not a no-op ({cached} of {nodes} nodes cached):\n{report}");
    let said = stats::output_of(&mut dvc_repro(ctx))?;
    ensure!(!said.contains("Running stage"), "dvc's rerun is not a no-op:\n{said}");

    // Where aurora's time goes, by subtraction between commands doing less and less:
    // `--version` (process floor), `digest` (+ resolve and plan), `plan` (+ store status), `run`.
    let aurora_cmd = |ctx: &Ctx, args: &[&str]| {
        let mut c = ctx.aurora();
        c.args(args).current_dir(&ours);
        c
    };
    let ladder: [&[&str]; 3] = [&["--version"], &["digest", "bench.toml"], &["plan", "bench.toml"]];
    for args in ladder {
        time_process(&mut aurora_cmd(ctx, args), LIMIT)?; // warm-up
    }

    // All interleaved, one of each per round, so load from elsewhere on the machine (shared,
    // 2 cores) hits every figure alike.
    let mut reps = ctx.reps(30, 5);
    let budget = if ctx.quick { 30.0 } else { 120.0 };
    eprintln!("xtask: bench: noop: {reps} rounds of: aurora --version, digest, plan, run (no-op); dvc repro (no-op)");
    let mut times: [Vec<Timed>; 5] = Default::default();
    let started = Instant::now();
    let mut i = 0;
    while i < reps {
        for (k, args) in ladder.iter().enumerate() {
            times[k].push(time_process(&mut aurora_cmd(ctx, args), LIMIT)?);
        }
        times[3].push(time_process(&mut aurora_run(ctx), LIMIT)?);
        times[4].push(time_process(&mut dvc_repro(ctx), LIMIT)?);
        i += 1;
        if i == 2 {
            // Keep the whole bench within minutes if the peer is slow here.
            let per = started.elapsed().as_secs_f64() / 2.0;
            let fit = ((budget / per) as usize).max(5);
            if fit < reps {
                eprintln!("xtask: bench: noop: {per:.2} s per round: {fit} rounds instead of {reps}");
                reps = fit;
            }
        }
    }
    let [startup, digest, plan, s_ours, s_theirs] = times.map(|t| Stats::new(&t));

    let mut s = Section::new(
        "noop",
        format!(
            "no-op rerun of a {nodes}-node manifest ({} chains of {}, {} KiB data file per step), whole process",
            DAG.chains,
            DAG.len,
            DATA_BYTES / 1024
        ),
    );
    s.peer = Some(dvc_label);
    let cpu = |t: &Timed| t.cpu.map(|c| c.as_secs_f64());
    s.row(Row::time(
        "cold run, all nodes execute: wall (1x)",
        Some(cold_ours.wall.as_secs_f64()),
        Some(cold_theirs.wall.as_secs_f64()),
        1,
    ));
    s.row(Row::time("cold run: CPU user+sys (1x)", cpu(&cold_ours), cpu(&cold_theirs), 1));
    let [median, p90] = Row::median_p90("no-op rerun: wall", &s_ours, Some(&s_theirs));
    s.row(median).row(p90);
    s.row(Row::time(
        format!("no-op rerun: CPU user+sys mean (n={})", s_ours.n()),
        s_ours.cpu_mean(),
        s_theirs.cpu_mean(),
        s_ours.n(),
    ));
    for (what, st) in [
        ("`aurora --version` (floor)", &startup),
        ("`aurora digest` (+resolve, plan)", &digest),
        ("`aurora plan` (+store status)", &plan),
    ] {
        let [m, _] = Row::median_p90(&format!("  {what}: wall"), st, None);
        s.row(m);
        s.row(Row::time(format!("  {what}: CPU mean"), st.cpu_mean(), None, st.n()));
    }

    let fmt = super::report::fmt_secs;
    let fmt_opt = |v: Option<f64>| v.map_or("n/a".to_string(), fmt);
    let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
    let med = s_ours.median();
    let met = med < GOAL.as_secs_f64();
    s.note(
        "goal_noop_50_nodes_under_50ms_met",
        Json::Bool(met),
        format!(
            "goal (issue): no-op of {nodes} nodes under {} ms: {} (wall median {})",
            GOAL.as_millis(),
            if met { "MET" } else { "NOT MET" },
            fmt(med)
        ),
    );
    let net_wall = med - startup.median();
    let net_cpu = diff(s_ours.cpu_mean(), startup.cpu_mean());
    s.note(
        "noop_net_of_process_floor_s",
        Json::Obj(vec![("wall_median".into(), Json::Num(net_wall)), ("cpu_mean".into(), Json::num(net_cpu))]),
        format!(
            "`aurora --version` alone takes {} wall / {} CPU; net of that floor the no-op rerun takes {} wall \
             (difference of medians) / {} CPU (difference of means)",
            fmt(startup.median()),
            fmt_opt(startup.cpu_mean()),
            fmt(net_wall),
            fmt_opt(net_cpu)
        ),
    );
    let steps = [
        ("process_floor", startup.cpu_mean()),
        ("resolve_and_plan", diff(digest.cpu_mean(), startup.cpu_mean())),
        ("store_status", diff(plan.cpu_mean(), digest.cpu_mean())),
        ("run_rest", diff(s_ours.cpu_mean(), plan.cpu_mean())),
    ];
    s.note(
        "breakdown_cpu_mean_s",
        Json::Obj(steps.iter().map(|(k, v)| (k.to_string(), Json::num(*v))).collect()),
        format!(
            "aurora CPU breakdown by subtraction of means: process floor {}, resolve+plan {}, store status {}, \
             rest of `run` (executor, run record, git state) {}",
            fmt_opt(steps[0].1),
            fmt_opt(steps[1].1),
            fmt_opt(steps[2].1),
            fmt_opt(steps[3].1),
        ),
    );
    s.note(
        "parallelism",
        Json::Str(format!(
            "aurora run -j{} (default: nproc); dvc repro is sequential",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        )),
        "cold runs: aurora runs steps in parallel (-j nproc, its default), dvc repro one at a time",
    );
    Ok(s)
}

/// `dvc ARGS` in `dir`, checked.
fn dvc(ctx: &mut Ctx, dir: &Path, args: &[&str]) -> Result<()> {
    let venv = ctx.venv()?;
    stats::output_of(venv.command("dvc").args(args).current_dir(dir)).map(drop)
}

/// How many nodes of an `aurora run --json` report have this status.
fn count_status(json: &str, status: &str) -> usize {
    let compact: String = json.chars().filter(|c| !c.is_whitespace()).collect();
    compact.matches(&format!("\"status\":\"{status}\"")).count()
}
