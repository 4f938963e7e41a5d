//! Toolchains the tests run programs with that Debian does not package at the pinned version:
//! the TypeScript compiler `tsc` (npm's `typescript`), which `eval.code` runs MultiPL-E's
//! TypeScript problems with. Installed once with npm into `~/.cache/aurora/typescript-VERSION`
//! (never into the repository), where `aurora_eval::toolchain` looks for it. The Debian packages
//! (`g++`, `openjdk-17-jdk-headless`, `libjavatuples-java`, `php-cli`, `mono-mcs`, `nodejs`) are
//! `.ci/run`'s to install.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The `typescript` npm package (also `aurora_eval::toolchain::TYPESCRIPT_VERSION`; a test there
/// checks that both agree).
const TYPESCRIPT_VERSION: &str = "5.9.3";

/// Makes sure `tsc` of the pinned `typescript` is in the cache; returns its path. Without npm:
/// an error under `CI=true`, else a note (the TypeScript tests then skip with the reason).
pub fn ensure_typescript() -> Result<Option<PathBuf>> {
    let dir = crate::libtorch::cache_root()?.join(format!("typescript-{TYPESCRIPT_VERSION}"));
    let tsc = dir.join("node_modules/typescript/bin/tsc");
    if tsc.is_file() {
        return Ok(Some(tsc));
    }
    let npm_works = Command::new("npm").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !npm_works.is_ok_and(|s| s.success()) {
        let why = "npm is not installed (Debian's `nodejs` from NodeSource ships it, else `apt-get install npm`)";
        if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1") {
            bail!("cannot install typescript@{TYPESCRIPT_VERSION}: {why}");
        }
        eprintln!("xtask: not installing typescript@{TYPESCRIPT_VERSION}: {why}; the TypeScript tests will skip");
        return Ok(None);
    }
    eprintln!("xtask: installing typescript@{TYPESCRIPT_VERSION} (tsc, 23 MB) with npm into {}", dir.display());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--no-save", "--prefix"])
        .arg(&dir)
        .arg(format!("typescript@{TYPESCRIPT_VERSION}"))
        .stdin(Stdio::null())
        .status()
        .context("cannot run npm")?;
    if !status.success() || !tsc.is_file() {
        bail!("`npm install typescript@{TYPESCRIPT_VERSION}` failed ({status}); is the npm registry reachable?");
    }
    Ok(Some(tsc))
}
