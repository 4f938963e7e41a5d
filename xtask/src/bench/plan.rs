//! Planning time for 1,000 and 10,000 nodes: does it grow linearly?
//!
//! Measured with `aurora digest`, which resolves the manifest, validates it and plans the DAG
//! (it prints the manifest digest of the plan) without opening the store: no stat of inputs, no
//! action-cache lookups, no output rendering, so it isolates planning better than
//! `aurora plan --json` (which adds per-node store status and a JSON report).

use std::time::Duration;

use anyhow::Result;

use super::fixtures::Dag;
use super::report::{Json, Row, Section, fmt_secs};
use super::stats;
use super::{Benchmark, Ctx, git, write};

pub const BENCH: Benchmark = Benchmark {
    name: "plan",
    about: "planning time (aurora digest) for 1,000 and 10,000 exec.command nodes",
    run,
};

const CHAIN_LEN: usize = 10;
const SIZES: [usize; 2] = [1_000, 10_000];
const LIMIT: Duration = Duration::from_secs(300);

fn run(ctx: &mut Ctx) -> Result<Section> {
    let startup = ctx.startup()?;
    let floor = startup.median();
    let mut s = Section::new(
        "plan",
        format!(
            "planning (`aurora digest`: resolve + validate + plan, no store), chains of {CHAIN_LEN}"
        ),
    );
    let mut per_node = Vec::new();
    let mut net = Vec::new();
    for &n in &SIZES {
        let dag = Dag {
            chains: n / CHAIN_LEN,
            len: CHAIN_LEN,
        };
        let dir = ctx.git_project(&format!("plan-{n}"))?;
        dag.write_data(&dir, 64)?;
        let manifest = dag.aurora_manifest(&format!("bench-plan-{n}"));
        write(&dir, "bench.toml", &manifest)?;
        git(&dir, &["add", "-A"])?;
        git(&dir, &["commit", "-q", "-m", "bench project"])?;
        let digest = || {
            let mut c = ctx.aurora();
            c.args(["digest", "bench.toml"]).current_dir(&dir);
            c
        };
        // One untimed run, which also sizes the repetitions to keep this bench short.
        let first = stats::time_process(&mut digest(), LIMIT)?.as_secs_f64();
        let wanted = if n >= 10_000 {
            ctx.reps(5, 2)
        } else {
            ctx.reps(9, 3)
        };
        let reps = if first > 20.0 { 1 } else { wanted };
        eprintln!(
            "xtask: bench: plan: {n} nodes ({} KiB manifest): {reps} runs of `aurora digest`",
            manifest.len() / 1024
        );
        let st = stats::sample(reps, 0, LIMIT, digest)?;
        let med = st.median();
        s.row(Row::time(
            format!("{n:>6} nodes: median (n={reps})"),
            Some(med),
            None,
            reps,
        ));
        s.row(Row::time(
            format!("{n:>6} nodes: per node (median / n)"),
            Some(med / n as f64),
            None,
            0,
        ));
        s.row(Row::time(
            format!("{n:>6} nodes: per node, net of process floor"),
            Some((med - floor).max(0.0) / n as f64),
            None,
            0,
        ));
        per_node.push(med / n as f64);
        net.push(med - floor);
    }
    let [m, _] = Row::median_p90("process floor `aurora --version`", &startup, None);
    s.row(m);
    let growth = net[1] / net[0];
    s.row(Row::factor(
        "time 10k / time 1k, net of floor (linear: 10x)",
        growth,
    ));
    s.row(Row::factor(
        "per-node 10k / per-node 1k, raw (linear: 1x)",
        per_node[1] / per_node[0],
    ));
    s.note(
        "growth_10k_over_1k_net",
        Json::Num(growth),
        format!(
            "10x the nodes took {growth:.1}x the time net of the {} process floor ({})",
            fmt_secs(floor),
            match growth {
                g if g < 7.0 => "less than linear: fixed costs beyond the process floor dominate at 1k",
                g if g <= 13.0 => "about linear",
                _ => "superlinear",
            }
        ),
    );
    Ok(s)
}
