//! The remote cache's speed, measured through the `aurora` CLI against a real nginx (WebDAV
//! `PUT`, Bazel's HTTP cache protocol), with `curl` on the same server as the peer:
//!
//! - **hit latency per node**: a fresh store runs a manifest of `NODES` tiny nodes that are all
//!   in the remote (`aurora run --remote`): the wall time per node, with the run's own fixed cost
//!   (a no-op rerun of the same manifest) taken off; beside it, `curl` fetching the same three
//!   objects per node (action record, artifact manifest, file) one after the other.
//! - **pull throughput**: `aurora pull` of one node whose artifact is one file of `SIZE` bytes,
//!   into a fresh store (streamed, hashed as it arrives, re-hashed by the store, published),
//!   beside `curl -o` of the same object to a file (no verification).
//!
//! Usage: `remote_bench AURORA_BINARY [--quick]`; prints one JSON line of figures.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NODES: usize = 20;

fn run(cmd: &mut Command) -> Duration {
    let started = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().expect("the command starts");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn project(root: &Path, manifest: &str) {
    std::fs::create_dir_all(root).unwrap();
    run(Command::new("git").args(["init", "-q"]).current_dir(root));
    std::fs::write(root.join("m.toml"), manifest).unwrap();
}

fn aurora(bin: &str, root: &Path, args: &[&str], remote: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args).current_dir(root).env("AURORA_REMOTE", remote).env_remove("AURORA_STORE").env("NO_COLOR", "1");
    cmd
}

fn best<F: FnMut() -> Duration>(rounds: usize, mut f: F) -> f64 {
    (0..rounds).map(|_| f().as_secs_f64()).fold(f64::INFINITY, f64::min)
}

/// The file object of the only artifact of a one-node manifest: `v1/cas/<digest>`.
fn blob_urls(store: &Path, url: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(store.join("actions")).unwrap().flatten() {
        for action in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let record: serde_json::Value = serde_json::from_slice(&std::fs::read(action.path()).unwrap()).unwrap();
            let key = record["key"].as_str().unwrap();
            let artifact = record["artifact"].as_str().unwrap();
            let manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(store.join("cas").join(artifact).join("ARTIFACT.json")).unwrap())
                    .unwrap();
            let file = manifest["files"][0]["blake3"].as_str().unwrap();
            out.push((
                format!("{url}v1/ac/{key}.json"),
                format!("{url}v1/artifacts/{artifact}.json"),
                format!("{url}v1/cas/{file}"),
            ));
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args.get(1).expect("usage: remote_bench AURORA_BINARY [--quick]").clone();
    let quick = args.iter().any(|a| a == "--quick");
    let size_mib: usize = if quick { 128 } else { 1024 };
    let rounds = if quick { 1 } else { 3 };
    let nginx = aurora_servers_testkit::Nginx::start().unwrap_or_else(|e| panic!("{e}"));
    let url = nginx.url("cache");
    let scratch = tempfile::tempdir().unwrap();

    // Tiny nodes: hit latency.
    let mut tiny = String::from("[experiment]\nname = \"hits\"\nseed = 1\n");
    for i in 0..NODES {
        tiny.push_str(&format!(
            "\n[steps.n{i}]\nplugin = \"exec.command\"\nargv = [\"sh\", \"-c\", \"echo {i} > $AURORA_OUT/x\"]\n"
        ));
    }
    let author = scratch.path().join("author-tiny");
    project(&author, &tiny);
    run(&mut aurora(&bin, &author, &["run", "m.toml", "--remote-upload"], &url));
    let urls = blob_urls(&author.join(".aurora"), &url);
    let mut hit = f64::INFINITY;
    let mut fixed = f64::INFINITY;
    for round in 0..rounds.max(3) {
        let reader = scratch.path().join(format!("reader-tiny-{round}"));
        project(&reader, &tiny);
        let cold = run(&mut aurora(&bin, &reader, &["run", "m.toml", "-j", "1"], &url)).as_secs_f64();
        let noop = run(&mut aurora(&bin, &reader, &["run", "m.toml", "-j", "1"], &url)).as_secs_f64();
        hit = hit.min(cold - noop);
        fixed = fixed.min(noop);
    }
    let curl_hit = best(rounds.max(3), || {
        let started = Instant::now();
        for (ac, artifact, file) in &urls {
            for u in [ac, artifact, file] {
                run(Command::new("curl").args(["-sSf", "-o", "/dev/null", u]));
            }
        }
        started.elapsed()
    });

    // One large artifact: pull throughput.
    let big = format!(
        "[experiment]\nname = \"pull\"\nseed = 1\n\n[steps.big]\nplugin = \"exec.command\"\nargv = [\"sh\", \"-c\", \"head -c {} /dev/urandom > $AURORA_OUT/weights.bin\"]\n",
        size_mib << 20
    );
    let author = scratch.path().join("author-big");
    project(&author, &big);
    run(&mut aurora(&bin, &author, &["run", "m.toml", "--remote-upload"], &url));
    let (_, _, file_url) = blob_urls(&author.join(".aurora"), &url).remove(0);
    let bytes = (size_mib << 20) as f64;
    let mut pull = f64::INFINITY;
    let mut curl = f64::INFINITY;
    for round in 0..rounds {
        let reader = scratch.path().join(format!("reader-big-{round}"));
        project(&reader, &big);
        pull = pull.min(run(&mut aurora(&bin, &reader, &["pull", "m.toml"], &url)).as_secs_f64());
        let target = scratch.path().join("curl.bin");
        curl = curl.min(run(Command::new("curl").args(["-sSf", "-o"]).arg(&target).arg(&file_url)).as_secs_f64());
        assert_eq!(std::fs::metadata(&target).unwrap().len(), size_mib as u64 * 1048576);
        std::fs::remove_file(&target).unwrap();
        std::fs::remove_dir_all(&reader).unwrap();
    }
    println!(
        "{{\"nodes\": {NODES}, \"hit_ms_per_node\": {:.3}, \"curl_ms_per_node\": {:.3}, \"run_fixed_s\": {fixed:.4}, \"pull_mb_s\": {:.1}, \"curl_mb_s\": {:.1}, \"size_mib\": {size_mib}, \"rounds\": {rounds}}}",
        hit / NODES as f64 * 1e3,
        curl_hit / NODES as f64 * 1e3,
        bytes / pull / 1e6,
        bytes / curl / 1e6
    );
}
