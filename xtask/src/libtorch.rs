//! Finding, fetching and exposing libtorch.
//!
//! Resolution order: a user's `LIBTORCH` (validated, never modified) > the CUDA cache when it
//! exists or is asked for > the CPU cache (fetched with pip when absent). Caches live outside
//! the clone (`${XDG_CACHE_HOME:-~/.cache}/aurora/libtorch-<version>-<flavor>`) so every clone
//! on a machine shares them. Each cache dir is a `pip install --target` layout: `torch/` (the
//! `LIBTORCH` dir: `lib/`, `include/`, `version.py`) beside `nvidia/*/lib`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

/// The libtorch version tch 0.26 expects (torch-sys checks it against `build-version` when
/// present; the pip layout has none, so this pin is what keeps them in step).
pub const TORCH_VERSION: &str = "2.13.0";

/// pip requirements of the CPU flavor: the torch wheel without its ~3.5 GB of CUDA deps, plus
/// the only two CUDA libraries `libtorch_cpu.so` needs to load.
const CPU_REQUIREMENTS: &[&str] = &["torch==2.13.0", "nvidia-cuda-runtime==13.0.96", "nvidia-cuda-cupti==13.0.85"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Cpu,
    Cuda,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::Cpu => "cpu",
            Flavor::Cuda => "cuda",
        }
    }
}

/// A usable libtorch.
#[derive(Debug, Clone)]
pub struct Libtorch {
    /// What `LIBTORCH` must be set to (contains `lib/libtorch_cpu.so`).
    pub root: PathBuf,
}

impl Libtorch {
    /// Directories for `LD_LIBRARY_PATH`: `<root>/lib`, then `<root>/../nvidia/*/lib` (pip layout).
    pub fn lib_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.root.join("lib")];
        if let Some(site) = self.root.parent()
            && let Ok(entries) = std::fs::read_dir(site.join("nvidia"))
        {
            let mut found: Vec<PathBuf> =
                entries.filter_map(Result::ok).map(|e| e.path().join("lib")).filter(|p| p.is_dir()).collect();
            found.sort();
            dirs.extend(found);
        }
        dirs
    }

    /// `LD_LIBRARY_PATH` value: our dirs, then whatever was already there.
    pub fn ld_library_path(&self) -> Result<OsString> {
        let mut paths = self.lib_dirs();
        if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
            paths.extend(std::env::split_paths(&old).filter(|p| !p.as_os_str().is_empty()));
        }
        std::env::join_paths(paths).context("a libtorch path contains ':'; move the cache")
    }

    /// Sets `LIBTORCH` and `LD_LIBRARY_PATH` on a command.
    pub fn apply(&self, cmd: &mut Command) -> Result<()> {
        cmd.env("LIBTORCH", &self.root);
        cmd.env("LD_LIBRARY_PATH", self.ld_library_path()?);
        Ok(())
    }
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/aurora`.
pub fn cache_root() -> Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("aurora"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("neither XDG_CACHE_HOME nor HOME is set: cannot locate the aurora cache")?;
    Ok(PathBuf::from(home).join(".cache").join("aurora"))
}

fn cache_dir(flavor: Flavor) -> Result<PathBuf> {
    Ok(cache_root()?.join(format!("libtorch-{TORCH_VERSION}-{}", flavor.name())))
}

fn validate(root: &Path) -> Result<()> {
    let so = root.join("lib").join("libtorch_cpu.so");
    ensure!(
        so.is_file(),
        "{} does not exist: not a libtorch directory (expected the directory holding \
         lib/ and include/, e.g. <site-packages>/torch or an unzipped libtorch)",
        so.display()
    );
    Ok(())
}

/// The libtorch to build with: `LIBTORCH` if the user set it, else a cache (fetching it if
/// needed). `want_cuda` asks for the CUDA cache; without it an existing CUDA cache is still
/// preferred (a GPU machine that ran `cargo xtask libtorch --cuda` once keeps using it).
pub fn ensure(want_cuda: bool) -> Result<Libtorch> {
    if let Some(user) = std::env::var_os("LIBTORCH").filter(|v| !v.is_empty()) {
        let root = PathBuf::from(user);
        validate(&root).with_context(|| {
            format!(
                "LIBTORCH is set to {} but it is not a usable libtorch; fix it, or unset it \
                 to let `cargo xtask libtorch` fetch libtorch {TORCH_VERSION} into {}",
                root.display(),
                cache_root().map(|p| p.display().to_string()).unwrap_or_default()
            )
        })?;
        if want_cuda {
            let lib = root.join("lib");
            if !lib.join("libtorch_cuda.so").exists() && !lib.join("libtorch_hip.so").exists() {
                eprintln!(
                    "xtask: warning: --cuda ignored: using LIBTORCH={} as set, which has no \
                     libtorch_cuda.so or libtorch_hip.so",
                    root.display()
                );
            }
        }
        return Ok(Libtorch { root });
    }
    let cuda_dir = cache_dir(Flavor::Cuda)?;
    let flavor = if want_cuda || cuda_dir.join("torch").exists() { Flavor::Cuda } else { Flavor::Cpu };
    let dir = cache_dir(flavor)?;
    if !dir.exists() {
        fetch(flavor, &dir)?;
    }
    let root = dir.join("torch");
    validate(&root).with_context(|| {
        format!("the libtorch cache {} is broken; delete it and rerun `cargo xtask libtorch`", dir.display())
    })?;
    Ok(Libtorch { root })
}

/// `pip install --target <tmp>` then an atomic rename to `dest`, so `dest` exists only complete.
fn fetch(flavor: Flavor, dest: &Path) -> Result<()> {
    let parent = dest.parent().context("cache dir has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create the cache dir {}", parent.display()))?;
    let name = dest.file_name().context("cache dir has no name")?.to_string_lossy();
    let tmp = parent.join(format!("{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove the stale {}", tmp.display()))?;
    }

    let python = std::env::var_os("AURORA_PYTHON").unwrap_or_else(|| "python3".into());
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input"]).arg("--target").arg(&tmp);
    let size = match flavor {
        Flavor::Cpu => {
            cmd.arg("--no-deps").args(CPU_REQUIREMENTS);
            "about 1.2 GB"
        }
        Flavor::Cuda => {
            cmd.arg(format!("torch=={TORCH_VERSION}"));
            "about 4.7 GB"
        }
    };
    // Progress to stderr: stdout is reserved for the LIBTORCH path / export lines.
    cmd.stdin(Stdio::null()).stdout(Stdio::from(std::io::stderr())).stderr(Stdio::inherit());
    eprintln!("xtask: fetching libtorch {TORCH_VERSION} ({}, {size}) with pip into {}", flavor.name(), dest.display());
    let started = Instant::now();
    let status = cmd.status().with_context(|| {
        format!("cannot run `{} -m pip` (set AURORA_PYTHON to a Python 3 with pip)", python.to_string_lossy())
    })?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        bail!(
            "pip failed ({status}) fetching torch=={TORCH_VERSION}; see its output above \
             (PyPI must be reachable)"
        );
    }
    validate(&tmp.join("torch")).context("pip succeeded but installed no libtorch")?;
    match std::fs::rename(&tmp, dest) {
        Ok(()) => {}
        // Another xtask won the race: keep its copy.
        Err(_) if dest.join("torch").join("lib").join("libtorch_cpu.so").exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot rename {} to {}", tmp.display(), dest.display()));
        }
    }
    eprintln!("xtask: libtorch ready in {} ({})", dest.display(), crate::fmt_duration(started.elapsed()));
    Ok(())
}

/// POSIX-shell single-quoting.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
