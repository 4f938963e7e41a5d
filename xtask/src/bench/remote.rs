//! The remote cache (`aurora run --remote`, `aurora pull`) against a real nginx with WebDAV
//! `PUT` started by the `remote_bench` example of aurora-remote, beside `curl` on the same
//! server: the cost of a cache hit per node (three small objects fetched, checked and
//! published), and the throughput of pulling a 1 GiB artifact (128 MiB under `--quick`), which
//! aurora streams, hashes as it arrives and re-hashes before publishing, where curl only writes.

use std::time::Duration;

use anyhow::Result;

use super::report::{Json, Row, Section};
use super::{Benchmark, Ctx};

pub const BENCH: Benchmark = Benchmark {
    name: "remote",
    about: "remote cache over nginx WebDAV: hit latency per node and a 1 GiB pull, vs curl on the same server",
    run,
};

const LIMIT: Duration = Duration::from_secs(900);

fn run(ctx: &mut Ctx) -> Result<Section> {
    let example = ctx.release_example("aurora-remote", "remote_bench")?;
    let mut cmd = std::process::Command::new(example);
    cmd.arg(&ctx.aurora_bin);
    if ctx.quick {
        cmd.arg("--quick");
    }
    let log = ctx.scratch().join("remote_bench.log");
    let (line, _) = super::timed_json(&mut cmd, &log, LIMIT)?;
    let field = |k: &str| super::json_field(&line, k);
    let (nodes, size_mib, rounds) = (field("nodes")?, field("size_mib")?, field("rounds")?);
    let mut s = Section::new("remote", "remote cache over a local nginx (WebDAV PUT), vs curl on the same objects");
    s.peer = Some("curl (one GET per object, no verification)".to_owned());
    s.row(Row::time(
        format!("hit, per node: fetch, verify, publish ({nodes:.0} nodes, a rerun's fixed cost taken off; curl: the node's 3 objects)"),
        Some(field("hit_ms_per_node")? / 1e3),
        Some(field("curl_ms_per_node")? / 1e3),
        rounds as usize,
    ));
    s.row(Row::rate(
        "MB/s",
        format!(
            "pull of one {size_mib:.0} MiB artifact into a fresh store, best of {rounds:.0} (curl: the file to disk)"
        ),
        Some(field("pull_mb_s")?),
        Some(field("curl_mb_s")?),
    ));
    s.note(
        "run_fixed_s",
        Json::Num(field("run_fixed_s")?),
        "a no-op rerun of the hit manifest (taken off the hit figure)",
    );
    Ok(s)
}
