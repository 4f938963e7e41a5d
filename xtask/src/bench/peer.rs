//! Peer tools measured beside aurora, installed once per machine into a cached venv.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::{exec_checked, libtorch};

/// The DVC release the no-op benchmark compares against (checked to exist on PyPI with
/// `pip index versions dvc`; bump it deliberately, the venv is rebuilt when it changes).
pub const DVC_VERSION: &str = "3.67.1";

/// The Hugging Face `tokenizers` release the tokenize benchmark compares against: the same
/// version as the Rust crate aurora-tokens links (checked on PyPI with `pip index versions`), and
/// the numpy it writes its arrays with.
pub const TOKENIZERS_VERSION: &str = "0.22.2";
pub const NUMPY_VERSION: &str = "2.4.6";

/// The train benchmark's peer: PyTorch at the libtorch release tch links
/// ([`libtorch::TORCH_VERSION`]; the default PyPI wheel, with its CUDA dependencies, as
/// `import torch` needs them) and transformers' GPTBigCode, the newest release that accepts
/// `tokenizers` [`TOKENIZERS_VERSION`] (5.23 wants 0.23).
pub const TRANSFORMERS_VERSION: &str = "5.15.1";

/// Written last into the venv, holding the requirements it was built with: a venv without it
/// (an interrupted install) or with other contents is rebuilt.
const READY_MARKER: &str = ".aurora-bench-ready";

/// The bench venv: `${XDG_CACHE_HOME:-~/.cache}/aurora/bench-venv`.
pub struct Venv {
    pub dir: PathBuf,
    /// How long creating it took in this invocation (None: reused).
    pub installed_in: Option<Duration>,
}

impl Venv {
    /// A console script of the venv (e.g. `dvc`), run as a user would.
    pub fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new(self.dir.join("bin").join(script));
        // No telemetry, no update checks: they are not part of the work being compared.
        // No telemetry: it is not part of the work being compared. Bytecode caching on, as for
        // a user (this sandbox's environment turns it off).
        cmd.env("DVC_NO_ANALYTICS", "1").env_remove("PYTHONDONTWRITEBYTECODE");
        cmd
    }

    /// The venv's Python, for the peer scripts the benchmarks write.
    pub fn python(&self) -> Command {
        let mut cmd = Command::new(self.dir.join("bin").join("python"));
        cmd.env_remove("PYTHONDONTWRITEBYTECODE");
        cmd
    }

    pub fn dvc_version(&self) -> String {
        format!("dvc {DVC_VERSION}")
    }
}

fn requirements() -> Vec<String> {
    vec![
        format!("dvc=={DVC_VERSION}"),
        format!("tokenizers=={TOKENIZERS_VERSION}"),
        format!("numpy=={NUMPY_VERSION}"),
        format!("torch=={}", libtorch::TORCH_VERSION),
        format!("transformers=={TRANSFORMERS_VERSION}"),
    ]
}

/// The bench venv, created (python3 -m venv + pip install) when absent or stale.
pub fn ensure() -> Result<Venv> {
    let dir = libtorch::cache_root()?.join("bench-venv");
    let wanted = requirements().join("\n");
    let marker = dir.join(READY_MARKER);
    if std::fs::read_to_string(&marker).is_ok_and(|have| have.trim() == wanted) {
        return Ok(Venv { dir, installed_in: None });
    }
    if dir.exists() {
        eprintln!("xtask: bench: rebuilding the incomplete or outdated venv {}", dir.display());
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    eprintln!(
        "xtask: bench: creating the peer venv {} ({}; once per machine)",
        dir.display(),
        requirements().join(" ")
    );
    let started = Instant::now();
    create(&dir, &requirements()).with_context(|| {
        format!(
            "cannot create the bench venv {} (set AURORA_PYTHON to a Python 3 with venv and \
             pip; PyPI must be reachable)",
            dir.display()
        )
    })?;
    std::fs::write(&marker, &wanted).with_context(|| format!("cannot write {}", marker.display()))?;
    let took = started.elapsed();
    eprintln!("xtask: bench: peer venv installed in {}", crate::fmt_duration(took));
    Ok(Venv { dir, installed_in: Some(took) })
}

fn create(dir: &Path, reqs: &[String]) -> Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let python = std::env::var_os("AURORA_PYTHON").unwrap_or_else(|| "python3".into());
    exec_checked(Command::new(&python).args(["-m", "venv"]).arg(dir).stdout(Stdio::from(std::io::stderr())))?;
    exec_checked(
        Command::new(dir.join("bin").join("python"))
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
            .args(reqs)
            .env_remove("PYTHONDONTWRITEBYTECODE")
            // Progress to stderr: stdout is the report.
            .stdout(Stdio::from(std::io::stderr())),
    )
}
