//! `cargo xtask bench`: measured figures, with a peer tool run beside ours in the same
//! invocation where there is one, printed as a table (or `--json`) on stdout; progress on stderr.
//!
//! Each benchmark is one module with a `pub const BENCH: Benchmark`; adding one is a new file,
//! its `mod` line and its entry in [`ALL`]. Shared pieces: [`Ctx`] (the release aurora binary,
//! temp git projects, the peer venv), [`stats`] (timing a whole process: wall and CPU time,
//! median/p90) and [`report`] (the table and JSON).
//!
//! The machine may be shared with other work: interleave the commands a benchmark compares
//! (one of each per round) so load hits them alike, and report CPU time beside wall time.

mod fixtures;
mod peer;
pub mod report;
pub mod stats;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use self::report::{Json, Section};
use crate::libtorch::{self, Libtorch};
use crate::{cargo, exec_checked, target_dir};

// The benchmarks. Their modules are declared plainly (not from a macro) so rustfmt and
// `cargo fmt --check` see them.
mod blend;
mod dist;
mod infer;
mod lock;
mod noop;
mod plan;
mod remote;
mod sandbox;
mod study;
mod tokenize;
mod train;

/// Every benchmark, in the order they run.
pub const ALL: &[Benchmark] = &[
    noop::BENCH,
    plan::BENCH,
    lock::BENCH,
    tokenize::BENCH,
    blend::BENCH,
    infer::BENCH,
    train::BENCH,
    dist::BENCH,
    remote::BENCH,
    sandbox::BENCH,
    study::BENCH,
];

/// One benchmark: `run` measures and returns its section of the report.
pub struct Benchmark {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&mut Ctx) -> Result<Section>,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Fewer repetitions (a smoke run: the figures are noisier).
    #[arg(long)]
    pub quick: bool,
    /// Run only this benchmark (repeatable); `--only list` prints their names.
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What benchmarks share.
pub struct Ctx {
    pub quick: bool,
    /// The release `aurora` binary.
    pub aurora_bin: PathBuf,
    lt: Libtorch,
    scratch: TempDir,
    venv: Option<peer::Venv>,
    /// The release `tokens_bench` example of aurora-tokens, once built.
    tokens_bench: Option<PathBuf>,
    /// Lines added to the report header (e.g. how long the peer venv took to install).
    header: Vec<(String, String)>,
}

impl Ctx {
    /// `aurora` with the environment `cargo xtask run` gives it, and no inherited store override.
    pub fn aurora(&self) -> Command {
        let mut cmd = Command::new(&self.aurora_bin);
        // Cannot fail: `apply` only fails on a ':' in the path, which `ensure` already ruled out.
        let _ = self.lt.apply(&mut cmd);
        cmd.env_remove("AURORA_STORE");
        cmd
    }

    /// `full` repetitions, or `quick` ones under `--quick`.
    pub fn reps(&self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }

    /// A fresh directory under this invocation's scratch dir, with `git init` run in it.
    pub fn git_project(&self, name: &str) -> Result<PathBuf> {
        let dir = self.scratch.path().join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        git(&dir, &["init", "-q"])?;
        Ok(dir)
    }

    /// The scratch directory of this invocation (removed at the end).
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// The release `tokens_bench` example of aurora-tokens (the data-pipeline measurements),
    /// built on first use in this invocation.
    pub fn tokens_bench(&mut self) -> Result<Command> {
        if self.tokens_bench.is_none() {
            self.tokens_bench = Some(self.release_example("aurora-tokens", "tokens_bench")?);
        }
        Ok(Command::new(self.tokens_bench.as_ref().expect("set above")))
    }

    /// The release example `name` of `package`, built now (cargo does nothing when it is up to
    /// date).
    pub fn release_example(&self, package: &str, name: &str) -> Result<PathBuf> {
        eprintln!("xtask: bench: building the {name} example of {package} (release)");
        let mut build = cargo();
        build.args(["build", "--release", "-p", package, "--example", name]);
        self.lt.apply(&mut build)?;
        exec_checked(&mut build).with_context(|| format!("building the {name} example"))?;
        Ok(target_dir()?.join("release").join("examples").join(name))
    }

    /// The peer venv, created on first use in this invocation.
    pub fn venv(&mut self) -> Result<&peer::Venv> {
        if self.venv.is_none() {
            let venv = peer::ensure()?;
            let how = match venv.installed_in {
                Some(t) => format!("installed by this run in {}", crate::fmt_duration(t)),
                None => "reused".into(),
            };
            self.header.push(("peer venv".into(), format!("{}: {}, {how}", venv.dir.display(), venv.dvc_version())));
            self.venv = Some(venv);
        }
        Ok(self.venv.as_ref().expect("set above"))
    }
}

/// `git ARGS` in `dir`, quietly, with a fixed identity (temp projects have none).
pub fn git(dir: &Path, args: &[&str]) -> Result<()> {
    stats::output_of(
        Command::new("git")
            .args(["-c", "user.name=aurora bench", "-c", "user.email=bench@invalid", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(dir),
    )
    .map(drop)
}

/// Writes `contents` to `root/rel`, creating parent directories.
pub fn write(root: &Path, rel: &str, contents: &str) -> Result<()> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))
}

/// The number at `"key":` in a one-line JSON object (the figures our examples and peer scripts
/// print; xtask stays free of serde).
pub fn json_number(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = line[at..].trim_start();
    let end = rest.find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c))).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The last line of `output` that starts with `{`: the JSON figures of a measuring process.
pub fn json_line(output: &str) -> Result<&str> {
    output.lines().rev().find(|l| l.trim_start().starts_with('{')).context("the process printed no JSON line")
}

/// Runs `cmd` timed as a whole (stdout and stderr to `log`, killed past `limit`) and returns the
/// JSON line it printed last (its figures), with the timing.
pub fn timed_json(cmd: &mut Command, log: &Path, limit: std::time::Duration) -> Result<(String, stats::Timed)> {
    let shown = crate::display(cmd);
    let process = stats::time_process_logged(cmd, limit, log)?;
    let text = std::fs::read_to_string(log).with_context(|| format!("cannot read {}", log.display()))?;
    let line = json_line(&text).with_context(|| format!("`{shown}` printed:\n{text}"))?;
    Ok((line.to_string(), process))
}

/// [`json_number`], or an error naming the key and the line.
pub fn json_field(line: &str, key: &str) -> Result<f64> {
    json_number(line, key).with_context(|| format!("no number `{key}` in {line}"))
}

/// A directory removed on drop (xtask has no tempfile dependency).
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Result<TempDir> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.only.iter().any(|n| n == "list") {
        for b in ALL {
            println!("{:<8} {}", b.name, b.about);
        }
        return Ok(());
    }
    for name in &args.only {
        if !ALL.iter().any(|b| b.name == name) {
            let names: Vec<_> = ALL.iter().map(|b| b.name).collect();
            bail!("no benchmark named `{name}` (there are: {})", names.join(", "));
        }
    }
    let total = Instant::now();
    let lt = libtorch::ensure(false)?;
    eprintln!("xtask: bench: building aurora (release)");
    let mut build = cargo();
    build.args(["build", "--release", "-p", "aurora"]);
    lt.apply(&mut build)?;
    exec_checked(&mut build).context("building the aurora CLI")?;
    let aurora_bin = target_dir()?.join("release").join("aurora");

    let scratch = TempDir::new("aurora-bench")?;
    let mut header = machine();
    header.push(("scratch".into(), format!("{} ({})", scratch.path().display(), fs_type(scratch.path()))));
    header.push(("aurora".into(), aurora_bin.display().to_string()));
    header.push(("load avg at start".into(), loadavg()));
    let mut ctx =
        Ctx { quick: args.quick, aurora_bin, lt, scratch, venv: None, tokens_bench: None, header: Vec::new() };

    let mut sections = Vec::new();
    for b in ALL.iter().filter(|b| args.only.is_empty() || args.only.iter().any(|n| n == b.name)) {
        eprintln!("xtask: bench: ==> {} ({})", b.name, b.about);
        let started = Instant::now();
        let mut section = (b.run)(&mut ctx).with_context(|| format!("benchmark `{}`", b.name))?;
        let took = started.elapsed();
        section.note(
            "bench_wall_s",
            Json::Num(took.as_secs_f64()),
            format!("benchmark took {} in all", crate::fmt_duration(took)),
        );
        eprintln!("xtask: bench: {} done in {}", b.name, crate::fmt_duration(took));
        sections.push(section);
    }
    header.append(&mut ctx.header);
    header.push(("load avg at end".into(), loadavg()));
    let total = total.elapsed();
    header.push(("total".into(), crate::fmt_duration(total)));
    if args.json {
        print!("{}", report::json(&header, &sections, total.as_secs_f64()));
    } else {
        print!("{}", report::table(&header, &sections));
    }
    Ok(())
}

/// nproc, CPU model, OS: the header's first lines.
fn machine() -> Vec<(String, String)> {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown".to_string(), |(_, m)| m.trim().to_string());
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let os = os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map_or("unknown".to_string(), |v| v.trim_matches('"').to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or("unknown".to_string(), |kb| format!("{:.1} GiB", kb / 1048576.0));
    vec![
        ("machine".into(), format!("{nproc} CPUs (nproc), {model}, {mem} RAM")),
        ("os".into(), format!("{os}, Linux {}", kernel.trim())),
    ]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.split_whitespace().take(3).collect();
            (f.len() == 3).then(|| f.join(" "))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The filesystem type of `dir` (`stat -f`), for the header: tmpfs and disk differ.
fn fs_type(dir: &Path) -> String {
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown fs".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benchmark_names_are_unique() {
        let mut names: Vec<_> = ALL.iter().map(|b| b.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(!names.contains(&"list"));
    }

    #[test]
    fn numbers_are_read_from_a_json_line() {
        let line = r#"{"bench":"tokenize","bytes":200000123,"seconds":12.5,"peak_rss_mb":1.5e2,"x": -3}"#;
        assert_eq!(json_number(line, "bytes"), Some(200000123.0));
        assert_eq!(json_number(line, "seconds"), Some(12.5));
        assert_eq!(json_number(line, "peak_rss_mb"), Some(150.0));
        assert_eq!(json_number(line, "x"), Some(-3.0));
        assert_eq!(json_number(line, "bench"), None);
        assert_eq!(json_number(line, "missing"), None);
        assert_eq!(json_line("noise\n{\"a\":1}\n").unwrap(), "{\"a\":1}");
    }
}
