//! `aurora lock` on 1 GiB of shards (128 MiB under `--quick`): 16 files of pseudo-random bytes
//! named like parquet shards under one glob, the manifest a single `source.parquet` reading them.
//! Cold: a fresh store, so every byte is hashed (blake3, `-j` = the CPUs); warm: the same command
//! again, every digest answered by the stat memo. The peer is `b3sum` (Debian's, the BLAKE3
//! team's tool, multithreaded with memory maps) on the same files: the physical limit here is the
//! page cache and blake3 itself. The files are read once before timing, so both sides hash from
//! the page cache; runs alternate and the best of the rounds is kept.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::report::{Json, Row, Section};
use super::stats::{self, Timed};
use super::{Benchmark, Ctx};

pub const BENCH: Benchmark = Benchmark {
    name: "lock",
    about: "`aurora lock` on 1 GiB of shards, cold (hashing) and warm (stat memo), vs b3sum on the same files",
    run,
};

const SHARDS: usize = 16;
const LIMIT: Duration = Duration::from_secs(600);

/// `n` bytes from a xorshift stream (incompressible enough for a hash; no RNG dependency).
fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn run(ctx: &mut Ctx) -> Result<Section> {
    let shard_mib = if ctx.quick { 8 } else { 64 };
    let rounds = ctx.reps(3, 1);
    let root = ctx.git_project("lock")?;
    let shards = root.join("external/web");
    std::fs::create_dir_all(&shards).with_context(|| format!("cannot create {}", shards.display()))?;
    let mut files = Vec::new();
    for i in 0..SHARDS {
        let path = shards.join(format!("part-{i:05}.parquet"));
        std::fs::write(&path, pseudo_random(shard_mib << 20, i as u64 + 1))
            .with_context(|| format!("cannot write {}", path.display()))?;
        files.push(path);
    }
    let bytes = (SHARDS * (shard_mib << 20)) as f64;
    super::write(
        &root,
        "lock.toml",
        "[experiment]\nname = \"lock-bench\"\nseed = 1\n\n[sources.web]\nplugin = \"source.parquet\"\nfiles = \
         [\"file:external/web/*.parquet\"]\nlang = \"eng_Latn\"\n",
    )?;
    let b3sum = which("b3sum");
    let store = root.join(".aurora");
    let lock = |ctx: &Ctx| -> Result<Timed> {
        let mut cmd = ctx.aurora();
        cmd.arg("lock").arg(root.join("lock.toml")).env("AURORA_STORE", &store);
        stats::time_process(&mut cmd, LIMIT)
    };
    // Into the page cache first, for both sides.
    for f in &files {
        std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
    }
    let (mut cold, mut warm, mut peer) = (f64::INFINITY, f64::INFINITY, None::<f64>);
    for round in 1..=rounds {
        if store.exists() {
            std::fs::remove_dir_all(&store).with_context(|| format!("cannot remove {}", store.display()))?;
        }
        let c = lock(ctx)?.wall.as_secs_f64();
        let w = lock(ctx)?.wall.as_secs_f64();
        cold = cold.min(c);
        warm = warm.min(w);
        let mut line = format!("aurora lock cold {:.0} MB/s, warm {}", bytes / c / 1e6, super::report::fmt_secs(w));
        if let Some(b3) = &b3sum {
            let mut cmd = Command::new(b3);
            cmd.args(&files);
            let t = stats::time_process(&mut cmd, LIMIT)?.wall.as_secs_f64();
            peer = Some(peer.map_or(t, |p| p.min(t)));
            line.push_str(&format!("; b3sum {:.0} MB/s", bytes / t / 1e6));
        }
        eprintln!("xtask: bench: lock: round {round}/{rounds}: {line}");
    }
    let written = std::fs::read_to_string(root.join("lock.inputs.lock")).context("aurora lock wrote no lock")?;
    if written.matches("blake3 = ").count() != SHARDS {
        bail!("the lock does not list the {SHARDS} shards:\n{written}");
    }

    let mut s = Section::new(
        "lock",
        format!(
            "`aurora lock` on {SHARDS} shards x {shard_mib} MiB ({:.0} MiB), from the page cache",
            bytes / 1048576.0
        ),
    );
    s.peer = Some(match &b3sum {
        Some(_) => "b3sum (Debian)".to_owned(),
        None => "b3sum (not installed: apt-get install b3sum)".to_owned(),
    });
    s.row(Row::rate(
        "MB/s",
        format!("cold (fresh store): hashing throughput, best of {rounds}"),
        Some(bytes / cold / 1e6),
        peer.map(|t| bytes / t / 1e6),
    ));
    s.row(Row::time("cold: whole command wall", Some(cold), peer, rounds));
    s.row(Row::time("warm (every digest from the stat memo): whole command wall", Some(warm), None, rounds));
    s.note(
        "ratio",
        Json::Num(peer.map_or(f64::NAN, |p| p / cold)),
        match peer {
            Some(p) => format!(
                "aurora lock / b3sum throughput: {:.2}x (the whole command: planning, hashing, writing the lock)",
                p / cold
            ),
            None => "no peer: b3sum is not installed".to_owned(),
        },
    );
    Ok(s)
}

/// The path of `program` on PATH.
fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
