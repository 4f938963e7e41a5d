//! Helpers for the CLI end-to-end tests: an isolated temporary project (its own git repository,
//! store and data), a way to run the `aurora` binary in it, FIFOs to synchronise with commands,
//! bounded waits, and redaction of the parts of the output that vary between runs.

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The bound on every wait in these tests: a hang fails the test instead of blocking the suite.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A temporary project: `git init`, a `data/` directory, and the default store `.aurora/` inside.
pub struct Project {
    _dir: TempDir,
    /// Canonical path of the project root (what aurora prints).
    pub root: PathBuf,
}

impl Project {
    pub fn new() -> Project {
        let dir = tempfile::Builder::new().prefix("aurora-cli-").tempdir().expect("create a tempdir");
        let root = dir.path().canonicalize().expect("canonical tempdir");
        let status = Command::new("git")
            .args(["init", "-q"])
            .current_dir(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("git is installed");
        assert!(status.success(), "git init failed");
        fs::create_dir_all(root.join("data")).expect("create data/");
        Project { _dir: dir, root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The store (default location: `.aurora/` at the repository root).
    pub fn store(&self) -> PathBuf {
        self.root.join(".aurora")
    }

    /// Writes a file (creating parent directories).
    pub fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dirs");
        }
        fs::write(&path, contents).expect("write file");
        path
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// Creates a named pipe.
    pub fn mkfifo(&self, rel: &str) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dirs");
        }
        let status = Command::new("mkfifo").arg(&path).status().expect("mkfifo is installed");
        assert!(status.success(), "mkfifo {} failed", path.display());
        path
    }

    /// `aurora ARGS` in `dir` (relative to the project root), store at its default place.
    pub fn command_in(&self, dir: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aurora"));
        cmd.args(args).current_dir(self.path(dir)).env_remove("AURORA_STORE").env("NO_COLOR", "1").stdin(Stdio::null());
        cmd
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.command_in("", args)
    }

    /// Runs `aurora ARGS` to completion (bounded by [`TIMEOUT`]).
    pub fn run(&self, args: &[&str]) -> Output {
        output_within(self.command(args), TIMEOUT)
    }

    pub fn run_in(&self, dir: &str, args: &[&str]) -> Output {
        output_within(self.command_in(dir, args), TIMEOUT)
    }

    /// Runs `aurora ARGS`, asserts the exit code, returns stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_code(&out, 0, &format!("aurora {}", args.join(" ")));
        stdout(&out)
    }

    /// Runs `aurora ARGS` (which must include `--json`), asserts success and parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let text = self.run_ok(args);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("aurora {}: stdout is not JSON ({e}):\n{text}", args.join(" ")))
    }

    /// `aurora digest ARGS` (asserting success and the one-line shape).
    pub fn digest(&self, args: &[&str]) -> String {
        let mut all = vec!["digest"];
        all.extend_from_slice(args);
        let text = self.run_ok(&all);
        assert_one_digest_line(&text);
        text.trim_end().to_string()
    }

    /// The action record file for a node key.
    pub fn action_path(&self, key: &str) -> PathBuf {
        self.store().join("actions").join(&key[..2]).join(format!("{key}.json"))
    }

    pub fn artifact_dir(&self, digest: &str) -> PathBuf {
        self.store().join("cas").join(digest)
    }

    /// The node keys recorded in every `cas/*/ARTIFACT.json`.
    pub fn artifact_node_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for entry in fs::read_dir(self.store().join("cas")).into_iter().flatten().flatten() {
            let manifest = entry.path().join("ARTIFACT.json");
            if let Ok(text) = fs::read_to_string(&manifest) {
                let v: Value = serde_json::from_str(&text).expect("ARTIFACT.json is JSON");
                keys.push(v["node_key"].as_str().expect("node_key").to_string());
            }
        }
        keys
    }

    /// Every file below the store, relative, sorted (to check that nothing changed).
    pub fn store_files(&self) -> Vec<String> {
        files_below(&self.store())
    }

    /// Replaces what varies between runs with placeholders.
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.root)
    }
}

/// Every file below `dir`, relative, sorted.
pub fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(base, &path, out);
        } else {
            out.push(path.strip_prefix(base).expect("below base").to_string_lossy().into_owned());
        }
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit code {code}, got {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn assert_one_digest_line(text: &str) {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    assert_eq!(lines.len(), 1, "expected exactly one line, got {text:?}");
    assert!(lines[0].ends_with('\n'), "the line must end with a newline: {text:?}");
    assert!(is_hex64(lines[0].trim_end_matches('\n')), "not a 64-hex digest: {text:?}");
}

/// Spawns `cmd` with piped output and waits for it, failing the test after `limit`.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn aurora");
    wait_output_within(child, limit)
}

/// Waits for a spawned child (stdout/stderr piped or not) at most `limit`; SIGKILLs it and fails
/// the test when it takes longer.
pub fn wait_output_within(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for aurora"),
        Err(_) => {
            kill9(pid);
            panic!("aurora (pid {pid}) did not finish within {limit:?}");
        }
    }
}

/// SIGKILL a process this test started (by pid).
pub fn kill9(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).stderr(Stdio::null()).status();
}

/// Reads a FIFO to its end (the writer closing it) in a helper thread; fails after `limit`.
/// Opening a FIFO for reading blocks until a writer opens it: this is the test waiting for a
/// command to reach a known point, not for time to pass.
pub fn read_fifo_within(path: &Path, limit: Duration) -> String {
    let path = path.to_path_buf();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let r = fs::File::open(&path).and_then(|mut f| f.read_to_string(&mut text)).map(|_| text);
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r.expect("read the fifo"),
        Err(_) => panic!("nothing was written to the fifo within {limit:?}"),
    }
}

/// Writes a line to a FIFO (blocks until the command opens it for reading), bounded by `limit`.
pub fn write_fifo_within(path: &Path, text: &str, limit: Duration) {
    let path = path.to_path_buf();
    let text = text.to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(fs::write(&path, text));
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r.expect("write the fifo"),
        Err(_) => panic!("no reader opened the fifo within {limit:?}"),
    }
}

/// Reads lines from `reader` in a thread; returns a receiver of a signal sent once a line
/// containing `needle` is seen, and a handle yielding everything read (after EOF).
pub fn watch_lines<R: Read + Send + 'static>(
    reader: R,
    needle: String,
) -> (mpsc::Receiver<String>, std::thread::JoinHandle<String>) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if line.contains(&needle) {
                let _ = tx.send(line.clone());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    (rx, handle)
}

/// Whether a process is gone (or a zombie: dead, not yet reaped by whoever adopted it).
pub fn process_is_dead(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state is the first field after the parenthesised command name.
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X')))
        }
    }
}

/// Waits (bounded) for the kernel to finish killing a process. Death by SIGKILL is asynchronous:
/// there is no event to block on for a process that is not our child, so this polls.
pub fn wait_until_dead(pid: u32, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if process_is_dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    process_is_dead(pid)
}

/// 1-based line and column of the first occurrence of `needle` in `text`.
pub fn line_col_of(text: &str, needle: &str) -> (usize, usize) {
    let offset = text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in the manifest"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

// ---- redaction (insta's `filters` feature is not enabled in this workspace, so by hand) ----

/// Pattern language: `#` a digit, `@` a lowercase hex digit, `+` one or more digits, anything
/// else literal. Returns the match length at the start of `b`.
fn match_pattern(b: &[u8], pat: &str) -> Option<usize> {
    let mut i = 0;
    for p in pat.bytes() {
        match p {
            b'#' => {
                if !b.get(i)?.is_ascii_digit() {
                    return None;
                }
                i += 1;
            }
            b'@' => {
                let c = *b.get(i)?;
                if !(c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
                    return None;
                }
                i += 1;
            }
            b'+' => {
                let start = i;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                if i == start {
                    return None;
                }
            }
            lit => {
                if *b.get(i)? != lit {
                    return None;
                }
                i += 1;
            }
        }
    }
    Some(i)
}

/// Replaces every match of `pat` that starts and ends at a word boundary.
fn replace_pattern(text: &str, pat: &str, with: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        let boundary_before = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        if boundary_before
            && let Some(n) = match_pattern(&b[i..], pat)
            && b.get(i + n).is_none_or(|c| !c.is_ascii_alphanumeric())
        {
            out.push_str(&text[copied..i]);
            out.push_str(with);
            i += n;
            copied = i;
            continue;
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

pub fn redact(text: &str, root: &Path) -> String {
    let mut s = text.replace(&root.display().to_string(), "[PROJECT]");
    s = replace_pattern(&s, "########T######.###Z-+", "[RUN_ID]");
    s = replace_pattern(&s, "####-##-##T##:##:##.###Z", "[TIME]");
    s = replace_pattern(&s, &"@".repeat(64), "[DIGEST]");
    s = replace_pattern(&s, &"@".repeat(12), "[SHORT]");
    s = replace_pattern(&s, "+ ms", "[N] ms");
    s = replace_pattern(&s, "+.+ s", "[SECS] s");
    s = replace_pattern(&s, "pid +", "pid [PID]");
    // Trailing spaces (empty DETAIL column) are invisible in snapshot files.
    s.lines().map(str::trim_end).collect::<Vec<_>>().join("\n") + if s.ends_with('\n') { "\n" } else { "" }
}

#[test]
fn redaction_replaces_what_varies() {
    let root = Path::new("/tmp/aurora-cli-x");
    let text = "run 20261122T161614.941Z-27872 at 2026-11-22T16:16:14.941Z in /tmp/aurora-cli-x/m.toml \
                key 5db31e69f79b artifact 04f479795e06098ee8a0e021c3227b8e0f9b65693947fb6f7fefa270deec7777 \
                (4 ms) in 0.01 s by pid 42  \nnot-hex 5db31e69f79bz";
    assert_eq!(
        redact(text, root),
        "run [RUN_ID] at [TIME] in [PROJECT]/m.toml key [SHORT] artifact [DIGEST] ([N] ms) in [SECS] s by pid [PID]\n\
         not-hex 5db31e69f79bz"
    );
}
