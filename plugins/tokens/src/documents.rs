//! Reading the documents artifacts of text sources (`sources/NAME`, written by aurora-corpus) and
//! the drop lists of `dedup/exact`.
//!
//! The contract: `documents.jsonl` (one `{"text": "..."}` per line, in source order, held-out
//! documents already removed), `source.json` (`lang`, `documents`, `bytes`, ...), and from
//! `dedup/exact`: `drop/<source-name>.txt`, ascending 0-based indices into `documents.jsonl`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Problems with a documents artifact or a drop list.
#[derive(Debug, thiserror::Error)]
pub enum DocumentsError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{}:{line}: not a document line: {message}; expected `{{\"text\": \"...\"}}` (the documents artifact of a \
         source node); re-run the source node",
        path.display()
    )]
    BadLine { path: PathBuf, line: u64, message: String },
    #[error("{}: does not parse: {message}; expected the `source.json` of a source node", path.display())]
    BadSourceJson { path: PathBuf, message: String },
    #[error(
        "{}:{line}: `{text}` is not a document index in ascending order (previous {previous:?}, documents {documents}); \
         the drop list does not belong to this source's documents, re-run `dedup/exact`",
        path.display()
    )]
    BadDropList { path: PathBuf, line: u64, text: String, previous: Option<u64>, documents: u64 },
}

/// The parts of `source.json` that tokenization needs (other fields are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct SourceInfo {
    pub lang: String,
    #[serde(default)]
    pub programming_language: Option<String>,
    pub documents: u64,
    #[serde(default)]
    pub bytes: u64,
}

impl SourceInfo {
    pub fn read(dir: &Path) -> Result<SourceInfo, DocumentsError> {
        let path = dir.join("source.json");
        let text =
            std::fs::read_to_string(&path).map_err(|source| DocumentsError::Io { path: path.clone(), source })?;
        serde_json::from_str(&text).map_err(|e| DocumentsError::BadSourceJson { path, message: e.to_string() })
    }
}

/// Streams the texts of `documents.jsonl`, one line at a time.
pub struct DocumentReader {
    path: PathBuf,
    lines: std::io::Lines<BufReader<File>>,
    line: u64,
}

#[derive(Deserialize)]
struct Line {
    text: String,
}

impl DocumentReader {
    /// Opens `DIR/documents.jsonl`.
    pub fn open(dir: &Path) -> Result<DocumentReader, DocumentsError> {
        Self::open_file(&dir.join("documents.jsonl"))
    }

    pub fn open_file(path: &Path) -> Result<DocumentReader, DocumentsError> {
        let file = File::open(path).map_err(|source| DocumentsError::Io { path: path.to_path_buf(), source })?;
        Ok(DocumentReader { path: path.to_path_buf(), lines: BufReader::with_capacity(1 << 20, file).lines(), line: 0 })
    }
}

impl Iterator for DocumentReader {
    type Item = Result<String, DocumentsError>;

    fn next(&mut self) -> Option<Self::Item> {
        let line = self.lines.next()?;
        self.line += 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                return Some(Err(DocumentsError::BadLine {
                    path: self.path.clone(),
                    line: self.line,
                    message: e.to_string(),
                }));
            }
        };
        Some(serde_json::from_str::<Line>(&line).map(|l| l.text).map_err(|e| DocumentsError::BadLine {
            path: self.path.clone(),
            line: self.line,
            message: e.to_string(),
        }))
    }
}

/// `DEDUP_DIR/drop/<source>.txt` as a sorted list (an absent file means nothing to drop).
pub fn read_drop_list(dedup_dir: &Path, source: &str, documents: u64) -> Result<Vec<u64>, DocumentsError> {
    let path = dedup_dir.join("drop").join(format!("{source}.txt"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(DocumentsError::Io { path, source }),
    };
    let mut out = Vec::new();
    let mut previous: Option<u64> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        let bad = || DocumentsError::BadDropList {
            path: path.clone(),
            line: i as u64 + 1,
            text: trimmed.to_string(),
            previous,
            documents,
        };
        let n: u64 = trimmed.parse().map_err(|_| bad())?;
        if n >= documents || previous.is_some_and(|p| n <= p) {
            return Err(bad());
        }
        previous = Some(n);
        out.push(n);
    }
    Ok(out)
}
