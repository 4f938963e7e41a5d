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
use super::stats::{self, Stats, Timed};
use super::{Benchmark, Ctx, git, write};

pub const BENCH: Benchmark =
    Benchmark { name: "plan", about: "planning time (aurora digest) for 1,000 and 10,000 exec.command nodes", run };

const CHAIN_LEN: usize = 10;
const SIZES: [usize; 2] = [1_000, 10_000];
const LIMIT: Duration = Duration::from_secs(300);

fn run(ctx: &mut Ctx) -> Result<Section> {
    let mut dirs = Vec::new();
    for &n in &SIZES {
        let dag = Dag { chains: n / CHAIN_LEN, len: CHAIN_LEN };
        let dir = ctx.git_project(&format!("plan-{n}"))?;
        dag.write_data(&dir, 64)?;
        let manifest = dag.aurora_manifest(&format!("bench-plan-{n}"));
        write(&dir, "bench.toml", &manifest)?;
        git(&dir, &["add", "-A"])?;
        git(&dir, &["commit", "-q", "-m", "bench project"])?;
        eprintln!("xtask: bench: plan: {n} nodes: {} KiB manifest", manifest.len() / 1024);
        dirs.push(dir);
    }
    // Index 0: the process floor; then one per size.
    let command = |ctx: &Ctx, i: usize| {
        let mut c = ctx.aurora();
        match i {
            0 => c.arg("--version"),
            _ => c.args(["digest", "bench.toml"]).current_dir(&dirs[i - 1]),
        };
        c
    };
    // One untimed run of each, which also sizes the repetitions to keep this bench short.
    let mut slowest = 0.0f64;
    for i in 0..=SIZES.len() {
        slowest = slowest.max(stats::time_process(&mut command(ctx, i), LIMIT)?.wall.as_secs_f64());
    }
    let rounds = if slowest > 20.0 { 1 } else { ctx.reps(7, 2) };
    eprintln!("xtask: bench: plan: {rounds} rounds of: aurora --version, digest (1k), digest (10k)");
    let mut times: Vec<Vec<Timed>> = vec![Vec::new(); SIZES.len() + 1];
    for _ in 0..rounds {
        for (i, t) in times.iter_mut().enumerate() {
            t.push(stats::time_process(&mut command(ctx, i), LIMIT)?);
        }
    }
    let stats: Vec<Stats> = times.iter().map(|t| Stats::new(t)).collect();
    let floor = &stats[0];

    let mut s = Section::new(
        "plan",
        format!("planning (`aurora digest`: resolve + validate + plan, no store), chains of {CHAIN_LEN}"),
    );
    let [m, _] = Row::median_p90("process floor `aurora --version`: wall", floor, None);
    s.row(m);
    s.row(Row::time("process floor: CPU mean", floor.cpu_mean(), None, floor.n()));
    // Per size: (wall net of floor, CPU net of floor).
    let mut net = Vec::new();
    for (&n, st) in SIZES.iter().zip(&stats[1..]) {
        let per = |v: f64| v / n as f64;
        let net_wall = st.median() - floor.median();
        let net_cpu = st.cpu_mean().zip(floor.cpu_mean()).map(|(a, b)| a - b);
        let [m, _] = Row::median_p90(&format!("{n} nodes: wall"), st, None);
        s.row(m);
        s.row(Row::time(format!("{n} nodes: CPU mean"), st.cpu_mean(), None, st.n()));
        s.row(Row::time(format!("{n} nodes: wall per node, net of floor"), Some(per(net_wall)), None, 0));
        s.row(Row::time(format!("{n} nodes: CPU per node, net of floor"), net_cpu.map(per), None, 0));
        net.push((net_wall, net_cpu));
    }
    let growth_wall = net[1].0 / net[0].0;
    let growth_cpu = net[1].1.zip(net[0].1).map(|(b, a)| b / a);
    s.row(Row::factor("10k / 1k, wall net of floor (linear: 10x)", growth_wall));
    if let Some(g) = growth_cpu {
        s.row(Row::factor("10k / 1k, CPU net of floor (linear: 10x)", g));
    }
    // CPU time is what the load from other work on the machine does not inflate: judge on it.
    let growth = growth_cpu.unwrap_or(growth_wall);
    s.note(
        "growth_10k_over_1k_net",
        Json::Obj(vec![("wall".into(), Json::Num(growth_wall)), ("cpu".into(), Json::num(growth_cpu))]),
        format!(
            "10x the nodes took {growth:.1}x the {} net of the process floor ({} wall, {} CPU): {}",
            if growth_cpu.is_some() { "CPU time" } else { "wall time" },
            fmt_secs(floor.median()),
            floor.cpu_mean().map_or("n/a".into(), fmt_secs),
            match growth {
                g if g < 7.0 => "less than linear: fixed costs beyond the process floor weigh at 1k",
                g if g <= 13.0 => "about linear",
                _ => "superlinear",
            }
        ),
    );
    Ok(s)
}
