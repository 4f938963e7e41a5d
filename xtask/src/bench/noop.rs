//! No-op rerun latency of a 50-node manifest, whole process, beside `dvc repro` on the same DAG.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use super::fixtures::Dag;
use super::report::{Json, Row, Section};
use super::stats::{self, Stats, time_process};
use super::{Benchmark, Ctx, git, write};

pub const BENCH: Benchmark = Benchmark {
    name: "noop",
    about: "no-op rerun of a 50-node exec.command DAG (aurora run vs dvc repro)",
    run,
};

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
    ensure!(
        cached == nodes,
        "aurora's rerun is not a no-op ({cached} of {nodes} nodes cached):\n{report}"
    );
    let said = stats::output_of(&mut dvc_repro(ctx))?;
    ensure!(
        !said.contains("Running stage"),
        "dvc's rerun is not a no-op:\n{said}"
    );

    // Interleaved (ours, theirs, ours, ...) so load from elsewhere on the machine hits both.
    let mut reps = ctx.reps(30, 5);
    let budget = if ctx.quick { 30.0 } else { 120.0 };
    eprintln!("xtask: bench: noop: {reps} no-op reruns each, interleaved");
    let (mut t_ours, mut t_theirs) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let mut i = 0;
    while i < reps {
        t_ours.push(time_process(&mut aurora_run(ctx), LIMIT)?);
        t_theirs.push(time_process(&mut dvc_repro(ctx), LIMIT)?);
        i += 1;
        if i == 2 {
            // Keep the whole bench within minutes if the peer is slow here.
            let per = started.elapsed().as_secs_f64() / 2.0;
            let fit = ((budget / per) as usize).max(5);
            if fit < reps {
                eprintln!(
                    "xtask: bench: noop: {:.2} s per pair: {fit} repetitions instead of {reps}",
                    per
                );
                reps = fit;
            }
        }
    }
    let (s_ours, s_theirs) = (Stats::new(&t_ours), Stats::new(&t_theirs));

    // Where aurora's time goes, by subtraction between commands doing less and less.
    eprintln!("xtask: bench: noop: breakdown (--version, digest, plan), {reps} runs each");
    let startup = ctx.startup()?;
    let digest = stats::sample(reps, 1, LIMIT, || {
        let mut c = ctx.aurora();
        c.args(["digest", "bench.toml"]).current_dir(&ours);
        c
    })?;
    let plan = stats::sample(reps, 1, LIMIT, || {
        let mut c = ctx.aurora();
        c.args(["plan", "bench.toml"]).current_dir(&ours);
        c
    })?;

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
    s.row(Row::time(
        "cold run, all nodes execute (1x)",
        Some(cold_ours.as_secs_f64()),
        Some(cold_theirs.as_secs_f64()),
        1,
    ));
    let [median, p90] = Row::median_p90("no-op rerun", &s_ours, Some(&s_theirs));
    s.row(median).row(p90);
    let [m, p] = Row::median_p90("  `aurora --version` (floor)", &startup, None);
    s.row(m).row(p);
    let [m, _] = Row::median_p90("  `aurora digest` (resolve+plan)", &digest, None);
    s.row(m);
    let [m, _] = Row::median_p90("  `aurora plan` (+ store status)", &plan, None);
    s.row(m);

    let med = s_ours.median();
    let met = med < GOAL.as_secs_f64();
    s.note(
        "goal_noop_50_nodes_under_50ms_met",
        Json::Bool(met),
        format!(
            "goal (issue): no-op of {nodes} nodes under {} ms: {} (median {})",
            GOAL.as_millis(),
            if met { "MET" } else { "NOT MET" },
            super::report::fmt_secs(med)
        ),
    );
    let net = med - startup.median();
    s.note(
        "noop_net_of_process_floor_s",
        Json::Num(net),
        format!(
            "net of the process floor (`aurora --version`, {}), the no-op rerun takes {} (difference \
             of medians)",
            super::report::fmt_secs(startup.median()),
            super::report::fmt_secs(net)
        ),
    );
    s.note(
        "breakdown_median_s",
        Json::Obj(vec![
            ("process_floor".into(), Json::Num(startup.median())),
            (
                "resolve_and_plan".into(),
                Json::Num(digest.median() - startup.median()),
            ),
            (
                "store_status".into(),
                Json::Num(plan.median() - digest.median()),
            ),
            ("run_rest".into(), Json::Num(med - plan.median())),
        ]),
        format!(
            "aurora breakdown by subtraction of medians (each difference carries the noise of two \
             medians): process floor {}, resolve+plan {}, \
             store status {}, rest of `run` (executor, run record, git state) {}",
            super::report::fmt_secs(startup.median()),
            super::report::fmt_secs(digest.median() - startup.median()),
            super::report::fmt_secs(plan.median() - digest.median()),
            super::report::fmt_secs(med - plan.median()),
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
