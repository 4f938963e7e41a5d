//! Resumable training checkpoints in a work directory, written atomically.
//!
//! A checkpoint is a directory `ckpt-<global step, 10 digits>` holding `model.safetensors`,
//! `optimizer.safetensors` ([`crate::adamw`]), `state.json` ([`ResumeState`]) and
//! `metrics.jsonl` (the lines of the steps done so far, so a resumed run writes the same file).
//! It is written as `ckpt-N.tmp`, every file fsynced, then renamed to `ckpt-N` and the work
//! directory fsynced: a crash leaves either the previous complete checkpoint or the new one.
//! Only after the rename are older checkpoints (and stale `.tmp` directories) removed, so the
//! last good checkpoint is never lost. With several data-parallel ranks, each writes its shard
//! of the optimizer state (`optimizer-shard-R-of-N.safetensors`) into the temporary directory
//! between [`begin`] and [`publish`], and rank 0 publishes after a barrier.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "state.json";
pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const METRICS_FILE: &str = "metrics.jsonl";
const PREFIX: &str = "ckpt-";
const TMP_SUFFIX: &str = ".tmp";

/// Where a run stands: enough to continue it exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeState {
    /// Optimizer steps over every stage continuing this run.
    pub global_step: u64,
    /// Optimizer steps of this stage.
    pub stage_step: u64,
    /// Tokens seen in this stage.
    pub tokens: u64,
    /// Tokens seen over every stage continuing this run.
    pub tokens_total: u64,
    /// The index of the next sequence (mixture sample or packed SFT sequence) to read.
    pub next_sample: u64,
    /// The global step of this stage's first update.
    pub stage_start: u64,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: invalid checkpoint state: {source}; delete the directory to start the stage over", path.display())]
    State { path: PathBuf, source: serde_json::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

fn fsync(path: &Path) -> Result<(), CheckpointError> {
    File::open(path).and_then(|f| f.sync_all()).map_err(io(path))
}

/// Writes a JSON value with a trailing newline (pretty, stable key order of the type).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), CheckpointError> {
    let mut text = serde_json::to_string_pretty(value).expect("serializes");
    text.push('\n');
    std::fs::write(path, text).map_err(io(path))
}

fn step_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?;
    (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

/// The complete checkpoints of `work_dir`, newest last.
fn complete(work_dir: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(work_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(io(work_dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(work_dir))?;
        if let Some(step) = entry.file_name().to_str().and_then(step_of) {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest complete checkpoint of `work_dir` and its state, if any.
pub fn latest(work_dir: &Path) -> Result<Option<(PathBuf, ResumeState)>, CheckpointError> {
    let Some((_, dir)) = complete(work_dir)?.pop() else { return Ok(None) };
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let state = serde_json::from_str(&text).map_err(|source| CheckpointError::State { path, source })?;
    Ok(Some((dir, state)))
}

/// Loads checkpoint `step` of `work_dir` (the one another rank chose as the newest).
pub fn at_step(work_dir: &Path, step: u64) -> Result<Option<(PathBuf, ResumeState)>, CheckpointError> {
    let Some((_, dir)) = complete(work_dir)?.into_iter().find(|(s, _)| *s == step) else { return Ok(None) };
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let state = serde_json::from_str(&text).map_err(|source| CheckpointError::State { path, source })?;
    Ok(Some((dir, state)))
}

/// Writes checkpoint `state.global_step` into `work_dir`: `fill(dir)` writes the tensor files
/// and metrics into the temporary directory; this adds `state.json`, makes it durable and
/// publishes it, then removes older checkpoints. Returns the published directory.
pub fn write<E: From<CheckpointError>>(
    work_dir: &Path,
    state: &ResumeState,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<PathBuf, E> {
    let tmp = begin(work_dir, state.global_step)?;
    fill(&tmp)?;
    Ok(publish(work_dir, &tmp, state)?)
}

/// The temporary directory checkpoint `step` is written into, created empty. Several ranks
/// fill it (each its own files) between this and [`publish`].
pub fn begin(work_dir: &Path, step: u64) -> Result<PathBuf, CheckpointError> {
    std::fs::create_dir_all(work_dir).map_err(io(work_dir))?;
    let tmp = tmp_dir(work_dir, step);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    Ok(tmp)
}

/// Where [`begin`] puts checkpoint `step`'s files.
pub fn tmp_dir(work_dir: &Path, step: u64) -> PathBuf {
    work_dir.join(format!("{PREFIX}{step:010}{TMP_SUFFIX}"))
}

/// Adds `state.json` to the filled temporary directory, makes every file durable, renames it
/// into place and removes older checkpoints. Returns the published directory.
pub fn publish(work_dir: &Path, tmp: &Path, state: &ResumeState) -> Result<PathBuf, CheckpointError> {
    let name = format!("{PREFIX}{:010}", state.global_step);
    write_json(&tmp.join(STATE_FILE), state)?;
    for entry in std::fs::read_dir(tmp).map_err(io(tmp))? {
        fsync(&entry.map_err(io(tmp))?.path())?;
    }
    fsync(tmp)?;
    let done = work_dir.join(&name);
    if done.exists() {
        std::fs::remove_dir_all(&done).map_err(io(&done))?;
    }
    std::fs::rename(tmp, &done).map_err(io(&done))?;
    fsync(work_dir)?;
    for entry in std::fs::read_dir(work_dir).map_err(io(work_dir))? {
        let entry = entry.map_err(io(work_dir))?;
        let file_name = entry.file_name();
        let Some(other) = file_name.to_str() else { continue };
        let stale = other.starts_with(PREFIX) && other != name;
        if stale && entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path()).map_err(io(&entry.path()))?;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> ResumeState {
        ResumeState {
            global_step: step,
            stage_step: step,
            tokens: step * 10,
            tokens_total: step * 10,
            next_sample: step * 2,
            stage_start: 0,
            seed: 7,
        }
    }

    #[test]
    fn newest_complete_wins_and_older_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(latest(dir.path()).unwrap().is_none());
        let fill = |d: &Path| std::fs::write(d.join(MODEL_FILE), b"x").map_err(io(d));
        write(dir.path(), &state(3), fill).unwrap();
        write(dir.path(), &state(12), fill).unwrap();
        // A crash in the middle of writing step 20 leaves a .tmp behind: it is not a checkpoint.
        std::fs::create_dir(dir.path().join("ckpt-0000000020.tmp")).unwrap();
        let (path, got) = latest(dir.path()).unwrap().unwrap();
        assert_eq!(got, state(12));
        assert!(path.ends_with("ckpt-0000000012"));
        assert!(!dir.path().join("ckpt-0000000003").exists());
        // The next write removes the stale temporary directory too.
        write(dir.path(), &state(21), fill).unwrap();
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, ["ckpt-0000000021"]);
    }

    #[test]
    fn a_failing_fill_keeps_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &state(1), |d: &Path| std::fs::write(d.join(MODEL_FILE), b"x").map_err(io(d))).unwrap();
        let err = write(dir.path(), &state(2), |d: &Path| {
            Err::<(), _>(CheckpointError::Io { path: d.to_path_buf(), source: std::io::Error::other("disk full") })
        });
        assert!(err.is_err());
        assert_eq!(latest(dir.path()).unwrap().unwrap().1, state(1));
    }
}
