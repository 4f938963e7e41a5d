//! `cargo xtask`: the project's automation (see `.cargo/config.toml` for the alias).
//!
//! Deliberately depends on no workspace crate and not on tch: it must build in seconds on a
//! fresh machine, before libtorch exists.

mod bench;
mod external;
mod libtorch;
mod toolchains;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::libtorch::{Libtorch, shell_quote};

/// mdBook version installed into the cache (`cargo install --locked`).
const MDBOOK_VERSION: &str = "0.5.4";

#[derive(Parser)]
#[command(name = "cargo xtask", about = "aurora project automation", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Ensure libtorch (a user's LIBTORCH, else the cache, fetched with pip) and print its path.
    Libtorch {
        /// The full CUDA build (about 4.7 GB) instead of the CPU one (about 1.2 GB).
        #[arg(long)]
        cuda: bool,
    },
    /// Print `export LIBTORCH=... LD_LIBRARY_PATH=...` lines: `eval "$(cargo xtask env)"`.
    Env,
    /// Build the aurora CLI (release) and run `aurora run MANIFEST ARGS...`.
    Run {
        /// The experiment manifest.
        manifest: PathBuf,
        /// Passed through to `aurora run` (e.g. `--profile paper`, `--set a.b=v`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Regenerate the JSON Schemas under schemas/ (`--check`: fail on drift instead).
    Schema {
        #[arg(long)]
        check: bool,
    },
    /// Build the mdBook into book/build (`--check`: also validate its manifest snippets).
    Book {
        #[arg(long)]
        check: bool,
    },
    /// Everything CI checks: libtorch, fmt, clippy, schema drift, tests, book.
    Test,
    /// Build aurora (release) and benchmark it, beside a peer tool where there is one.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Libtorch { cuda } => {
            let lt = libtorch::ensure(cuda)?;
            println!("{}", lt.root.display());
        }
        Cmd::Env => {
            let lt = libtorch::ensure(false)?;
            let root = lt.root.to_str().context("the libtorch path is not UTF-8")?;
            let dirs = lt
                .lib_dirs()
                .iter()
                .map(|d| d.to_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .context("a libtorch lib path is not UTF-8")?
                .join(":");
            println!("export LIBTORCH={}", shell_quote(root));
            println!("export LD_LIBRARY_PATH={}\"${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\"", shell_quote(&dirs));
        }
        Cmd::Run { manifest, args } => return run_manifest(&manifest, &args),
        Cmd::Schema { check } => schema(&libtorch::ensure(false)?, check)?,
        Cmd::Book { check } => book(check, || libtorch::ensure(false))?,
        Cmd::Test => test()?,
        Cmd::Bench(args) => bench::run(args)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The workspace root (xtask lives in `<root>/xtask`).
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the workspace")
}

/// `cargo`, the same one that runs us when available.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command with inherited stdio; an error if it cannot start or exits non-zero.
fn exec_checked(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    let status = cmd.stdin(Stdio::null()).status().with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

fn run_manifest(manifest: &Path, args: &[OsString]) -> Result<ExitCode> {
    let lt = libtorch::ensure(false)?;
    external::ensure(root())?;
    let mut build = cargo();
    // aurora runs tch work in aurora-worker, which it finds next to itself.
    build.args(["build", "--release", "-p", "aurora", "-p", "aurora-worker"]);
    lt.apply(&mut build)?;
    exec_checked(&mut build).context("building the aurora CLI")?;

    let bin = target_dir()?.join("release").join("aurora");
    let mut cmd = Command::new(&bin);
    cmd.arg("run").arg(manifest).args(args);
    lt.apply(&mut cmd)?;
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Replaces this process: the exit code (and signals) are aurora's own.
        let err = cmd.exec();
        Err(err).with_context(|| format!("cannot exec {}", bin.display()))
    }
    #[cfg(not(unix))]
    {
        let status = cmd.status().with_context(|| format!("cannot run {}", bin.display()))?;
        Ok(ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8))
    }
}

/// Cargo's target directory, as `cargo metadata` reports it (honours CARGO_TARGET_DIR and
/// `build.target-dir`).
fn target_dir() -> Result<PathBuf> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run `cargo metadata`")?;
    if !out.status.success() {
        bail!("`cargo metadata` failed ({})", out.status);
    }
    let json = String::from_utf8(out.stdout).context("`cargo metadata` printed non-UTF-8")?;
    json_string_field(&json, "target_directory")
        .map(PathBuf::from)
        .context("`cargo metadata` output has no target_directory")
}

/// The value of the first `"key":"..."` string field (enough for cargo metadata's flat
/// top-level fields; keeps xtask free of serde).
fn json_string_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut out = String::new();
    let mut chars = json[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

fn schema(lt: &Libtorch, check: bool) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "-p", "aurora", "--", "schema", "--out", "schemas"]);
    if check {
        cmd.arg("--check");
    }
    lt.apply(&mut cmd)?;
    exec_checked(&mut cmd).with_context(|| {
        if check {
            "the JSON Schemas under schemas/ are out of date: run `cargo xtask schema` and \
             commit the result"
        } else {
            "generating the JSON Schemas"
        }
    })
}

fn book(check: bool, libtorch: impl FnOnce() -> Result<Libtorch>) -> Result<()> {
    let book_dir = root().join("book");
    if !book_dir.join("book.toml").exists() {
        println!("book/ not present yet, skipping");
        return Ok(());
    }
    let mdbook = ensure_mdbook()?;
    let mut build = Command::new(&mdbook);
    build.current_dir(root()).arg("build").arg(&book_dir).arg("--dest-dir").arg(book_dir.join("build"));
    exec_checked(&mut build).context("building the book")?;
    if check {
        let lt = libtorch()?;
        let mut cmd = cargo();
        cmd.args(["run", "--quiet", "-p", "aurora", "--", "book-check", "book"]);
        lt.apply(&mut cmd)?;
        exec_checked(&mut cmd).context("checking the book's manifest snippets")?;
    }
    Ok(())
}

/// The pinned mdbook, `cargo install`ed into the cache on first use.
fn ensure_mdbook() -> Result<PathBuf> {
    let install_root = libtorch::cache_root()?.join(format!("mdbook-{MDBOOK_VERSION}"));
    let bin = install_root.join("bin").join("mdbook");
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!("xtask: installing mdbook {MDBOOK_VERSION} into {} (once per machine)", install_root.display());
    let started = Instant::now();
    let mut cmd = cargo();
    cmd.args(["install", "mdbook", "--locked", "--version", MDBOOK_VERSION])
        .arg("--root")
        .arg(&install_root)
        // Not the workspace's target dir: keeps `cargo clean` and the build cache apart.
        .env("CARGO_TARGET_DIR", install_root.join("build"));
    exec_checked(&mut cmd).context("installing mdbook")?;
    let _ = std::fs::remove_dir_all(install_root.join("build"));
    eprintln!("xtask: mdbook installed in {}", fmt_duration(started.elapsed()));
    Ok(bin)
}

fn test() -> Result<()> {
    let total = Instant::now();
    let mut summary: Vec<(&str, Duration)> = Vec::new();
    let mut step = |name: &'static str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        eprintln!("xtask: ==> {name}");
        let started = Instant::now();
        let result = f();
        let took = started.elapsed();
        match result {
            Ok(()) => {
                eprintln!("xtask: step `{name}` ok in {}", fmt_duration(took));
                summary.push((name, took));
                Ok(())
            }
            Err(e) => {
                eprintln!("xtask: step `{name}` FAILED after {}", fmt_duration(took));
                Err(e.context(format!("step `{name}` failed")))
            }
        }
    };

    let mut lt = None;
    step("libtorch", &mut || {
        lt = Some(libtorch::ensure(false)?);
        Ok(())
    })?;
    let lt = lt.expect("set by the libtorch step");
    // The shipped experiment (run by the e2e tests) evaluates on HumanEval.
    step("data", &mut || external::ensure(root()).map(|_| ()))?;
    // eval.code's MultiPL-E TypeScript problems compile with the pinned tsc.
    step("toolchains", &mut || toolchains::ensure_typescript().map(|_| ()))?;
    step("fmt", &mut || {
        exec_checked(cargo().args(["fmt", "--all", "--check"])).context("run `cargo fmt --all` and commit the result")
    })?;
    step("clippy", &mut || {
        let mut cmd = cargo();
        cmd.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
        lt.apply(&mut cmd)?;
        exec_checked(&mut cmd)
    })?;
    step("schema", &mut || schema(&lt, true))?;
    step("test", &mut || {
        // Tests that run nodes start aurora-worker from the target directory (client::worker_path).
        let mut build = cargo();
        build.args(["build", "-p", "aurora-worker"]);
        lt.apply(&mut build)?;
        exec_checked(&mut build)?;
        let mut cmd = cargo();
        cmd.args(["test", "--workspace"]);
        lt.apply(&mut cmd)?;
        exec_checked(&mut cmd)
    })?;
    step("book", &mut || book(true, || Ok(lt.clone())))?;

    eprintln!("xtask: all checks passed in {}:", fmt_duration(total.elapsed()));
    for (name, took) in &summary {
        eprintln!("xtask:   {name:<9} {}", fmt_duration(*took));
    }
    Ok(())
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 { format!("{secs:.1}s") } else { format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_string_field_unescapes() {
        let json = r#"{"packages":[],"target_directory":"/a \"b\"\\c\u00e9","version":1}"#;
        assert_eq!(json_string_field(json, "target_directory").as_deref(), Some("/a \"b\"\\c\u{e9}"));
        assert_eq!(json_string_field(json, "missing"), None);
    }

    #[test]
    fn shell_quote_escapes_single_quotes() {
        assert_eq!(shell_quote("/x/it's"), r"'/x/it'\''s'");
    }

    #[test]
    fn cli_passes_run_args_through() {
        let cli = Cli::try_parse_from(["xtask", "run", "m.toml", "--profile", "paper", "--set", "a.b=1"]).unwrap();
        let Cmd::Run { manifest, args } = cli.command else { panic!("not run") };
        assert_eq!(manifest, PathBuf::from("m.toml"));
        assert_eq!(args, ["--profile", "paper", "--set", "a.b=1"].map(OsString::from));
    }
}
