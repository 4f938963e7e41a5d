//! The whole shipped study (`experiments/aurora-m.toml`, its default local profile) from an
//! empty store, twice, and a no-op rerun: cold wall time, where it goes (the slowest nodes),
//! the no-op wall time, and whether the two cold runs produced the same artifact for every
//! node (determinism, the guarantee a reviewer relies on). No peer runs beside it: no other
//! tool runs this study; the goal (cold under 120 s on 2 cores) is printed beside it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use super::report::{Json, Row, Section};
use super::stats::{self, Timed};
use super::{Benchmark, Ctx};

pub const BENCH: Benchmark = Benchmark {
    name: "study",
    about: "the shipped study cold from an empty store (twice: same artifacts?) and a no-op rerun",
    run,
};

const LIMIT: Duration = Duration::from_secs(3600);
const GOAL_COLD_S: f64 = 120.0;
/// Nodes listed in the `slowest` note, slowest first.
const SLOWEST: usize = 8;

/// One node of a `--json` run report.
#[derive(Debug, Clone, PartialEq)]
struct NodeLine {
    id: String,
    status: String,
    artifact: String,
    ms: Option<u64>,
}

/// The nodes of `aurora run --json` (pretty JSON, one field per line; xtask has no serde).
fn nodes(report: &str) -> Vec<NodeLine> {
    let mut out: Vec<NodeLine> = Vec::new();
    let mut current: Option<NodeLine> = None;
    let field = |line: &str, key: &str| {
        let rest = line.trim().strip_prefix(&format!("\"{key}\": "))?;
        Some(rest.trim_end_matches(',').trim_matches('"').to_string())
    };
    for line in report.lines() {
        let depth = line.len() - line.trim_start().len();
        if depth == 4 && line.trim() == "{" {
            current = Some(NodeLine { id: String::new(), status: String::new(), artifact: String::new(), ms: None });
        } else if depth == 4 && line.trim().starts_with('}') {
            out.extend(current.take());
        } else if depth == 6
            && let Some(node) = current.as_mut()
        {
            if let Some(v) = field(line, "id") {
                node.id = v;
            } else if let Some(v) = field(line, "status") {
                node.status = v;
            } else if let Some(v) = field(line, "artifact") {
                node.artifact = v;
            } else if let Some(v) = field(line, "ms") {
                node.ms = v.parse().ok();
            }
        }
    }
    out
}

fn run(ctx: &mut Ctx) -> Result<Section> {
    let root = crate::root();
    crate::external::ensure(root)?;
    // Training and evaluation run in the worker, found beside the release `aurora`.
    eprintln!("xtask: bench: building aurora-worker (release)");
    let mut build = crate::cargo();
    build.args(["build", "--release", "-p", "aurora-worker"]);
    ctx.lt.apply(&mut build)?;
    crate::exec_checked(&mut build).context("building aurora-worker")?;
    let manifest = root.join("experiments/aurora-m.toml");
    let cold = |ctx: &Ctx, store: &Path| -> Result<(Timed, Vec<NodeLine>)> {
        let log = ctx.scratch().join("study-run.log");
        let mut cmd = ctx.aurora();
        cmd.arg("run").arg(&manifest).arg("--json").env("AURORA_STORE", store).current_dir(root);
        let timed = stats::time_process_logged(&mut cmd, LIMIT, &log)?;
        let text = std::fs::read_to_string(&log).with_context(|| format!("cannot read {}", log.display()))?;
        Ok((timed, nodes(&text)))
    };
    let (a, b) = (ctx.scratch().join("study-a"), ctx.scratch().join("study-b"));
    eprintln!("xtask: bench: study: cold run 1 (empty store)");
    let (first, first_nodes) = cold(ctx, &a)?;
    ensure!(first_nodes.iter().all(|n| n.status == "executed"), "the first run did not execute every node");
    eprintln!("xtask: bench: study: no-op rerun");
    let (noop, noop_nodes) = cold(ctx, &a)?;
    ensure!(noop_nodes.iter().all(|n| n.status == "cached"), "the rerun is not a no-op");
    eprintln!("xtask: bench: study: cold run 2 (another empty store)");
    let (second, second_nodes) = cold(ctx, &b)?;
    let differing: Vec<&str> = first_nodes
        .iter()
        .zip(&second_nodes)
        .filter(|(x, y)| x.id != y.id || x.artifact != y.artifact)
        .map(|(x, _)| x.id.as_str())
        .collect();

    let mut s = Section::new(
        "study",
        format!(
            "the shipped study (experiments/aurora-m.toml, local profile, {} nodes), release build",
            first_nodes.len()
        ),
    );
    s.peer = Some("none (no other tool runs this study)".to_owned());
    let best = first.wall.min(second.wall).as_secs_f64();
    s.row(Row::time("cold, empty store: whole run wall, best of 2", Some(best), None, 2));
    s.row(Row::time("no-op rerun: whole run wall", Some(noop.wall.as_secs_f64()), None, 1));
    let peak = [first.peak_rss, second.peak_rss].into_iter().flatten().max();
    s.row(Row::mib(
        "cold: peak RSS of the largest process (aurora, a worker or a program), max of 2",
        peak.map(|b| b as f64 / f64::from(1 << 20)),
        None,
    ));
    if let Some(cpu) = first.cpu {
        s.row(Row::time(
            "cold: CPU time of aurora and everything it waited for (run 1)",
            Some(cpu.as_secs_f64()),
            None,
            1,
        ));
    }
    s.note(
        "goal",
        Json::Num(GOAL_COLD_S),
        format!(
            "goal: cold under {GOAL_COLD_S:.0} s on 2 cores: {}",
            if best < GOAL_COLD_S { "met" } else { "NOT met" }
        ),
    );
    s.note(
        "identical",
        Json::Bool(differing.is_empty()),
        if differing.is_empty() {
            format!("the two cold runs produced identical artifacts for all {} nodes", first_nodes.len())
        } else {
            format!("the two cold runs DIFFER at {}", differing.join(", "))
        },
    );
    // Where the time goes: every executed node's time (from when it got its cores), slowest
    // first, with both runs side by side.
    let mut timed: Vec<(&NodeLine, Option<u64>)> = first_nodes
        .iter()
        .filter(|n| n.ms.is_some_and(|ms| ms > 0))
        .map(|n| (n, second_nodes.iter().find(|m| m.id == n.id).and_then(|m| m.ms)))
        .collect();
    timed.sort_by_key(|(n, _)| std::cmp::Reverse(n.ms));
    let total_ms: u64 = timed.iter().filter_map(|(n, _)| n.ms).sum();
    for (n, other) in &timed {
        let secs = |ms: Option<u64>| ms.map(|ms| ms as f64 / 1e3);
        s.row(Row::time(format!("node {}: run 1 | run 2", n.id), secs(n.ms), secs(*other), 1));
    }
    s.note(
        "slowest",
        Json::Arr(timed.iter().take(SLOWEST).map(|(n, _)| Json::Str(n.id.clone())).collect()),
        format!(
            "node times of run 1 sum to {:.1} s (nodes run side by side where their cores fit); the \
             per-node rows put run 2 in the peer column, so their ratio shows the spread; {} nodes took \
             under a millisecond and have no row",
            total_ms as f64 / 1e3,
            first_nodes.len() - timed.len()
        ),
    );
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_read_from_a_pretty_report() {
        let report = "{\n  \"manifest_digest\": \"d\",\n  \"nodes\": [\n    {\n      \"artifact\": \"aa\",\n      \"id\": \"steps/a\",\n      \"metrics\": {\n        \"id\": \"not this\"\n      },\n      \"ms\": 12,\n      \"status\": \"executed\"\n    },\n    {\n      \"artifact\": \"bb\",\n      \"id\": \"steps/b\",\n      \"status\": \"cached\"\n    }\n  ]\n}\n";
        assert_eq!(
            nodes(report),
            vec![
                NodeLine { id: "steps/a".into(), status: "executed".into(), artifact: "aa".into(), ms: Some(12) },
                NodeLine { id: "steps/b".into(), status: "cached".into(), artifact: "bb".into(), ms: None },
            ]
        );
    }
}
