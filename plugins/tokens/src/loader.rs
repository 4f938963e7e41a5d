//! The data loader: sample `k` of a mixture, computed directly from memory-mapped files.
//!
//! `sample(k)` reads `blend.idx` at `k` (source `d`, index `j` within it), the two boundary
//! entries `j` and `j + 1` of `sources/<d>.samples`, and copies the tokens between them out of
//! the source's mapped `tokens.bin`. Nothing is replayed: a resumed run asks for sample `k` and
//! gets it. The order depends only on the mixture artifact (weights, budget, sequence length and
//! seed); no data-parallel, tensor-parallel or pipeline setting exists in this API. A trainer with
//! `dp` ranks reads global samples `k = step * global_batch + ...` however it splits them.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::megatron::Tokens;
use crate::mixture::{BLEND_HEADER_LEN, BLEND_MAGIC, BLEND_VERSION, MixtureInfo};
use crate::store::{TokenStore, TokenStoreError};

/// Why a mixture cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum MixtureError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error(
        "no token store given for source `{name}` of the mixture {}; pass the artifact of its `tokens/...` (or \
         `sources/{name}` for source.megatron) node under the name `{name}`",
        mixture.display()
    )]
    MissingStore { name: String, mixture: PathBuf },
    #[error(
        "the token store {} given for `{name}` is not the one the mixture was built from ({what}); pass the artifact \
         of the same node key",
        dir.display()
    )]
    WrongStore { name: String, dir: PathBuf, what: String },
    #[error("token store of `{name}`: {source}")]
    Store { name: String, source: TokenStoreError },
}

fn map(path: &Path) -> Result<Option<Mmap>, MixtureError> {
    let file = File::open(path).map_err(|source| MixtureError::Io { path: path.to_path_buf(), source })?;
    let len = file.metadata().map_err(|source| MixtureError::Io { path: path.to_path_buf(), source })?.len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: artifacts are immutable once published.
    unsafe { Mmap::map(&file) }.map(Some).map_err(|source| MixtureError::Io { path: path.to_path_buf(), source })
}

struct SourceView {
    store: TokenStore,
    docs: Option<Mmap>,
    bounds: Option<Mmap>,
}

impl SourceView {
    fn doc_at(&self, position: u64) -> u64 {
        let b = self.docs.as_deref().expect("a source with samples has documents");
        let p = position as usize * 4;
        u32::from_le_bytes(b[p..p + 4].try_into().expect("4 bytes")) as u64
    }
    fn bound(&self, j: u64) -> (u64, u64) {
        let b = self.bounds.as_deref().expect("a source with samples has bounds");
        let p = j as usize * 16;
        (
            u64::from_le_bytes(b[p..p + 8].try_into().expect("8 bytes")),
            u64::from_le_bytes(b[p + 8..p + 16].try_into().expect("8 bytes")),
        )
    }
}

/// A mixture, open for reading samples.
pub struct MixtureReader {
    info: MixtureInfo,
    blend: Mmap,
    samples: u64,
    sources: Vec<SourceView>,
}

impl MixtureReader {
    /// Opens `artifact_dir` (a `mixtures/NAME` artifact) with the token store of every source
    /// (`source name -> store artifact directory`), and validates that they belong together:
    /// sizes of every index file, the stores' identities, and every entry of the blend index.
    pub fn open(artifact_dir: &Path, token_stores: &BTreeMap<String, PathBuf>) -> Result<MixtureReader, MixtureError> {
        let info_path = artifact_dir.join("mixture.json");
        let invalid = |path: &Path, message: String| MixtureError::Invalid { path: path.to_path_buf(), message };
        let text = std::fs::read_to_string(&info_path)
            .map_err(|source| MixtureError::Io { path: info_path.clone(), source })?;
        let info: MixtureInfo =
            serde_json::from_str(&text).map_err(|e| invalid(&info_path, format!("does not parse: {e}")))?;

        let blend_path = artifact_dir.join("blend.idx");
        let blend = map(&blend_path)?.ok_or_else(|| invalid(&blend_path, "the file is empty".into()))?;
        let expected = BLEND_HEADER_LEN as u128 + 10 * info.samples as u128;
        if blend.len() < BLEND_HEADER_LEN as usize || &blend[..8] != BLEND_MAGIC {
            return Err(invalid(&blend_path, "byte 0: not a blend index (magic `AURBLEND` expected)".into()));
        }
        let header = |i: usize| u64::from_le_bytes(blend[8 * i..8 * i + 8].try_into().expect("8 bytes"));
        if header(1) != BLEND_VERSION {
            return Err(invalid(&blend_path, format!("byte 8: version {}, expected {BLEND_VERSION}", header(1))));
        }
        if header(2) != info.samples || header(3) != info.sources.len() as u64 || blend.len() as u128 != expected {
            return Err(invalid(
                &blend_path,
                format!(
                    "{} bytes for {} samples of {} sources, but mixture.json says {} samples of {} sources ({expected} \
                     bytes); the artifact is damaged",
                    blend.len(),
                    header(2),
                    header(3),
                    info.samples,
                    info.sources.len()
                ),
            ));
        }

        let mut sources = Vec::new();
        for s in &info.sources {
            let dir = token_stores.get(&s.name).ok_or_else(|| MixtureError::MissingStore {
                name: s.name.clone(),
                mixture: artifact_dir.to_path_buf(),
            })?;
            let store = TokenStore::open(dir).map_err(|source| MixtureError::Store { name: s.name.clone(), source })?;
            let idx_path = store.dataset.idx_path().to_path_buf();
            let digest = blake3::hash(
                &std::fs::read(&idx_path).map_err(|source| MixtureError::Io { path: idx_path.clone(), source })?,
            )
            .to_hex()
            .to_string();
            if store.info.tokens != s.store_tokens || digest != s.store_idx_blake3 {
                return Err(MixtureError::WrongStore {
                    name: s.name.clone(),
                    dir: dir.clone(),
                    what: format!(
                        "{} tokens, index blake3 {digest}; expected {} tokens, {}",
                        store.info.tokens, s.store_tokens, s.store_idx_blake3
                    ),
                });
            }
            let docs_path = artifact_dir.join("sources").join(format!("{}.docs", s.name));
            let bounds_path = artifact_dir.join("sources").join(format!("{}.samples", s.name));
            let docs = map(&docs_path)?;
            let bounds = map(&bounds_path)?;
            let bounds_len = bounds.as_ref().map_or(0, |b| b.len() as u64);
            let expected_bounds = if s.samples == 0 { 0 } else { (s.samples + 1) * 16 };
            if bounds_len != expected_bounds {
                return Err(invalid(
                    &bounds_path,
                    format!("{bounds_len} bytes, expected {expected_bounds} for {} samples", s.samples),
                ));
            }
            let view = SourceView { store, docs, bounds };
            let docs_len = view.docs.as_ref().map_or(0, |b| b.len() as u64);
            if !docs_len.is_multiple_of(4) {
                return Err(invalid(&docs_path, format!("{docs_len} bytes, not a multiple of 4")));
            }
            // Every boundary must point into the stream, and every document id into the store.
            for j in 0..if s.samples == 0 { 0 } else { s.samples + 1 } {
                let (position, offset) = view.bound(j);
                if position >= docs_len / 4 {
                    return Err(invalid(
                        &bounds_path,
                        format!(
                            "byte {}: position {position} beyond the {} documents of the stream",
                            j * 16,
                            docs_len / 4
                        ),
                    ));
                }
                let doc = view.doc_at(position);
                let len = if doc < view.store.dataset.documents() {
                    let r = view.store.dataset.document_range(doc);
                    r.end - r.start
                } else {
                    0
                };
                if offset >= len {
                    return Err(invalid(
                        &bounds_path,
                        format!("byte {}: offset {offset} outside document {doc} ({len} tokens)", j * 16 + 8),
                    ));
                }
            }
            sources.push(view);
        }

        // Every sample's source and index within it: the blend must count up per source.
        let samples = info.samples;
        let mut counts = vec![0u64; sources.len()];
        let within_at = BLEND_HEADER_LEN as usize;
        let which_at = within_at + 8 * samples as usize;
        for k in 0..samples as usize {
            let d =
                u16::from_le_bytes(blend[which_at + 2 * k..which_at + 2 * k + 2].try_into().expect("2 bytes")) as usize;
            let j = u64::from_le_bytes(blend[within_at + 8 * k..within_at + 8 * k + 8].try_into().expect("8 bytes"));
            if d >= counts.len() || counts[d] != j {
                return Err(invalid(
                    &blend_path,
                    format!("sample {k}: source {d}, index {j} is not the next sample of a source"),
                ));
            }
            counts[d] += 1;
        }
        for (s, &c) in info.sources.iter().zip(&counts) {
            if c != s.samples {
                return Err(invalid(
                    &blend_path,
                    format!("source `{}` has {c} samples, mixture.json says {}", s.name, s.samples),
                ));
            }
        }
        Ok(MixtureReader { info, blend, samples, sources })
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.samples
    }
    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }
    /// Tokens per sample minus one.
    pub fn seq_len(&self) -> u64 {
        self.info.seq_len
    }
    pub fn info(&self) -> &MixtureInfo {
        &self.info
    }

    /// Source index and index within that source of sample `k`.
    pub fn locate(&self, k: u64) -> (usize, u64) {
        assert!(k < self.samples, "sample {k} out of range: the mixture has {} samples", self.samples);
        let within_at = BLEND_HEADER_LEN as usize + 8 * k as usize;
        let which_at = BLEND_HEADER_LEN as usize + 8 * self.samples as usize + 2 * k as usize;
        let d = u16::from_le_bytes(self.blend[which_at..which_at + 2].try_into().expect("2 bytes")) as usize;
        let j = u64::from_le_bytes(self.blend[within_at..within_at + 8].try_into().expect("8 bytes"));
        (d, j)
    }

    /// The zero-copy pieces of sample `k` (slices of the mapped token files), in order.
    pub fn sample_parts(&self, k: u64) -> Vec<Tokens<'_>> {
        let (d, j) = self.locate(k);
        let view = &self.sources[d];
        let ds = &view.store.dataset;
        let (p0, o0) = view.bound(j);
        let (p1, o1) = view.bound(j + 1);
        let mut parts = Vec::new();
        for p in p0..=p1 {
            let doc = ds.document(view.doc_at(p));
            let from = if p == p0 { o0 as usize } else { 0 };
            let to = if p == p1 { o1 as usize + 1 } else { doc.len() };
            if from < to {
                parts.push(doc.slice(from..to));
            }
        }
        parts
    }

    /// Sample `k`: `seq_len + 1` token ids. Panics if `k >= len()`.
    pub fn sample(&self, k: u64) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.info.seq_len as usize + 1);
        self.sample_into(k, &mut out);
        out
    }

    /// Sample `k` appended to `out` (reuse one buffer across calls).
    pub fn sample_into(&self, k: u64, out: &mut Vec<u32>) {
        for part in self.sample_parts(k) {
            part.extend_into(out);
        }
    }
}
