//! Megatron-LM's indexed dataset (`MMIDIDX`, version 1): a writer and a validating reader.
//!
//! Layout of `PREFIX.idx` (all integers little-endian, no padding, so arrays are unaligned):
//!
//! | offset            | size   | field                                                      |
//! |-------------------|--------|------------------------------------------------------------|
//! | 0                 | 9      | magic `MMIDIDX\x00\x00`                                    |
//! | 9                 | 8      | u64 version = 1                                            |
//! | 17                | 1      | u8 dtype code: 8 = uint16 (vocab < 65,500), 4 = int32      |
//! | 18                | 8      | u64 N, the number of sequences                             |
//! | 26                | 8      | u64 M, the number of document-index entries (documents + 1)|
//! | 34                | 4N     | int32 sequence lengths, in tokens                          |
//! | 34 + 4N           | 8N     | int64 byte offsets of the sequences in `PREFIX.bin`        |
//! | 34 + 12N          | 8M     | int64 document index: document d is sequences `[D[d], D[d+1])`, `D[0] = 0`, `D[M-1] = N` |
//!
//! `PREFIX.bin` is the tokens of every sequence back to back, little-endian, in the dtype.
//! This is exactly what Megatron's `IndexedDatasetBuilder` writes (one sequence per document
//! when documents are not split into sentences), so files written here load in Megatron and
//! Megatron's files load here.
//!
//! Aurora adds a sidecar `PREFIX.bytes`: one u64 (little-endian) per document, the number of
//! UTF-8 bytes of the source text of that document (for bits-per-byte evaluation). No header;
//! its size is exactly `8 * (M - 1)` bytes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

#[cfg(target_endian = "big")]
compile_error!("aurora-tokens maps little-endian token files directly into memory; big-endian hosts are not supported");

/// The 9-byte magic of an `MMIDIDX` index.
pub const MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
/// The magic of Megatron's legacy (pre-mmap) `IndexedDataset` index.
pub const LEGACY_MAGIC: &[u8; 8] = b"TNTIDX\x00\x00";
/// The only version of the format.
pub const VERSION: u64 = 1;
/// Bytes before the lengths array.
pub const HEADER_LEN: u64 = 9 + 8 + 1 + 8 + 8;
/// Vocabularies smaller than this are stored as uint16 (Megatron's own threshold).
pub const UINT16_VOCAB_LIMIT: u64 = 65_500;

/// Token storage type of a `.bin` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// Megatron code 8.
    U16,
    /// Megatron code 4.
    I32,
}

impl DType {
    pub fn code(self) -> u8 {
        match self {
            DType::U16 => 8,
            DType::I32 => 4,
        }
    }
    /// Bytes per token.
    pub fn size(self) -> u64 {
        match self {
            DType::U16 => 2,
            DType::I32 => 4,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::U16 => "uint16",
            DType::I32 => "int32",
        }
    }
    /// The largest token id the dtype can hold.
    pub fn max_token(self) -> u32 {
        match self {
            DType::U16 => u16::MAX as u32,
            DType::I32 => i32::MAX as u32,
        }
    }
    /// Megatron's choice: uint16 when the vocabulary has fewer than 65,500 entries, else int32.
    pub fn for_vocab(vocab_size: u64) -> Result<DType, MegatronError> {
        if vocab_size < UINT16_VOCAB_LIMIT {
            Ok(DType::U16)
        } else if vocab_size <= i32::MAX as u64 + 1 {
            Ok(DType::I32)
        } else {
            Err(MegatronError::VocabTooLarge { vocab_size })
        }
    }
}

/// Names of Megatron's dtype codes (for error messages).
fn megatron_dtype_name(code: u8) -> Option<&'static str> {
    Some(match code {
        1 => "uint8",
        2 => "int8",
        3 => "int16",
        4 => "int32",
        5 => "int64",
        6 => "float64",
        7 => "float32",
        8 => "uint16",
        _ => return None,
    })
}

/// Everything that can be wrong with an indexed dataset. Every variant names the file, and where
/// it applies the byte offset, and says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum MegatronError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{}: byte 0: this is Megatron's legacy index format (magic `TNTIDX\\x00\\x00`, the pre-mmap `IndexedDataset`), \
         not `MMIDIDX`; convert it with Megatron's tools (load it with the legacy `IndexedDataset` and write it again \
         with `MMapIndexedDatasetBuilder`, or re-run `tools/preprocess_data.py` on the text), then point `prefix` at the result",
        path.display()
    )]
    LegacyFormat { path: PathBuf },
    #[error(
        "{}: byte 0: not a Megatron indexed dataset: magic {found}, expected `MMIDIDX\\x00\\x00` \
         (is `prefix` the path without `.idx`/`.bin`, and is this file an `.idx`?)",
        path.display()
    )]
    BadMagic { path: PathBuf, found: String },
    #[error("{}: byte 9: index version {version}, expected 1 (the only MMIDIDX version); re-create the index with a current Megatron", path.display())]
    UnsupportedVersion { path: PathBuf, version: u64 },
    #[error(
        "{}: byte 17: dtype code {code} ({name}) stores floating-point values, not token ids; \
         an indexed dataset of tokens must be uint16 (code 8) or int32 (code 4)",
        path.display()
    )]
    FloatDType { path: PathBuf, code: u8, name: &'static str },
    #[error(
        "{}: byte 17: dtype code {code} ({name}) is a Megatron integer type aurora does not read; \
         re-create the dataset with uint16 (code 8, vocabularies < 65,500) or int32 (code 4)",
        path.display()
    )]
    UnsupportedDType { path: PathBuf, code: u8, name: &'static str },
    #[error("{}: byte 17: unknown dtype code {code}; expected 8 (uint16) or 4 (int32)", path.display())]
    UnknownDType { path: PathBuf, code: u8 },
    #[error(
        "{}: the file is {actual} bytes but its header (N = {sequences} sequences, M = {doc_entries} document-index \
         entries) requires {expected} bytes: {what}",
        path.display()
    )]
    SizeMismatch { path: PathBuf, expected: u128, actual: u64, sequences: u64, doc_entries: u64, what: &'static str },
    #[error("{}: the file is {actual} bytes, shorter than the {HEADER_LEN}-byte header; the file is truncated", path.display())]
    TruncatedHeader { path: PathBuf, actual: u64 },
    #[error("{}: byte {offset}: length of sequence {index} is {length}, expected a non-negative token count", path.display())]
    NegativeLength { path: PathBuf, offset: u64, index: u64, length: i32 },
    #[error(
        "{}: byte {offset}: pointer of sequence {index} is {found}, expected {expected} (sequences are stored back to back \
         in the .bin, each pointer = previous pointer + previous length x {itemsize} bytes); the index does not \
         belong to this layout, re-create it",
        path.display()
    )]
    BadPointer { path: PathBuf, offset: u64, index: u64, found: i64, expected: u64, itemsize: u64 },
    #[error(
        "{}: the file is {actual} bytes but the index {} describes {expected} bytes of tokens; the .bin is truncated \
         or belongs to another index, re-create both files together",
        bin.display(),
        idx.display()
    )]
    BinSize { bin: PathBuf, idx: PathBuf, expected: u128, actual: u64 },
    #[error("{}: the file is {actual} bytes, not a multiple of the {itemsize}-byte dtype; the file is truncated", path.display())]
    BinAlignment { path: PathBuf, actual: u64, itemsize: u64 },
    #[error("{}: byte {offset}: document index entry {index} is {found}; {why}", path.display())]
    DocumentIndex { path: PathBuf, offset: u64, index: u64, found: i64, why: String },
    #[error(
        "token id {token} does not fit the {dtype} dtype (at most {max}); the tokenizer's vocabulary is too large \
         for this dtype, use int32 (vocabularies of 65,500 or more are stored as int32)",
        dtype = dtype.name(),
        max = dtype.max_token()
    )]
    TokenOutOfRange { token: u32, dtype: DType },
    #[error(
        "a sequence of {length} tokens does not fit the int32 length field (at most 2,147,483,647 tokens); split the document"
    )]
    SequenceTooLong { length: usize },
    #[error("a vocabulary of {vocab_size} entries does not fit int32 token ids; use a smaller vocabulary")]
    VocabTooLarge { vocab_size: u64 },
    #[error(
        "{}: the file is {actual} bytes, expected {expected} (one u64 per document for {documents} documents); \
         the sidecar does not belong to this index, re-create it",
        path.display()
    )]
    BytesSidecar { path: PathBuf, actual: u64, expected: u64, documents: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MegatronError + '_ {
    move |source| MegatronError::Io { path: path.to_path_buf(), source }
}

/// `PREFIX.idx`, `PREFIX.bin`, `PREFIX.bytes` for a prefix (which has no extension itself).
pub fn paths(prefix: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let with = |ext: &str| {
        let mut s = prefix.as_os_str().to_os_string();
        s.push(ext);
        PathBuf::from(s)
    };
    (with(".idx"), with(".bin"), with(".bytes"))
}

/// What a finished writer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSummary {
    pub sequences: u64,
    pub documents: u64,
    pub tokens: u64,
}

/// Streams an indexed dataset: tokens go straight to a buffered `.bin`, lengths and the document
/// index to temporary spill files; memory use is constant. The `.idx` is written by [`finish`].
///
/// [`finish`]: IndexedWriter::finish
pub struct IndexedWriter {
    idx_path: PathBuf,
    bin_path: PathBuf,
    bin: BufWriter<File>,
    dtype: DType,
    /// Spill files (anonymous temporary files beside the index) for the lengths and the document
    /// index, so memory stays bounded whatever the number of documents.
    lengths: BufWriter<File>,
    doc_idx: BufWriter<File>,
    sequences: u64,
    doc_entries: u64,
    tokens: u64,
    scratch: Vec<u8>,
}

impl IndexedWriter {
    /// Creates `PREFIX.bin` now; `PREFIX.idx` is written by [`IndexedWriter::finish`].
    pub fn create(prefix: &Path, dtype: DType) -> Result<IndexedWriter, MegatronError> {
        let (idx_path, bin_path, _) = paths(prefix);
        let bin = File::create(&bin_path).map_err(io_err(&bin_path))?;
        let dir = idx_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let spill =
            || tempfile::tempfile_in(dir).map(|f| BufWriter::with_capacity(1 << 16, f)).map_err(io_err(&idx_path));
        let (lengths, mut doc_idx) = (spill()?, spill()?);
        doc_idx.write_all(&0i64.to_le_bytes()).map_err(io_err(&idx_path))?;
        Ok(IndexedWriter {
            bin: BufWriter::with_capacity(1 << 20, bin),
            idx_path,
            bin_path,
            dtype,
            lengths,
            doc_idx,
            sequences: 0,
            doc_entries: 1,
            tokens: 0,
            scratch: Vec::new(),
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Appends one sequence to the current document.
    pub fn add_sequence(&mut self, tokens: &[u32]) -> Result<(), MegatronError> {
        let length =
            i32::try_from(tokens.len()).map_err(|_| MegatronError::SequenceTooLong { length: tokens.len() })?;
        let max = self.dtype.max_token();
        self.scratch.clear();
        for &t in tokens {
            if t > max {
                return Err(MegatronError::TokenOutOfRange { token: t, dtype: self.dtype });
            }
            match self.dtype {
                DType::U16 => self.scratch.extend_from_slice(&(t as u16).to_le_bytes()),
                DType::I32 => self.scratch.extend_from_slice(&(t as i32).to_le_bytes()),
            }
        }
        self.bin.write_all(&self.scratch).map_err(io_err(&self.bin_path))?;
        self.lengths.write_all(&length.to_le_bytes()).map_err(io_err(&self.idx_path))?;
        self.sequences += 1;
        self.tokens += tokens.len() as u64;
        Ok(())
    }

    /// Closes the current document (its sequences are those added since the last call).
    pub fn end_document(&mut self) -> Result<(), MegatronError> {
        self.doc_idx.write_all(&(self.sequences as i64).to_le_bytes()).map_err(io_err(&self.idx_path))?;
        self.doc_entries += 1;
        Ok(())
    }

    /// One document made of one sequence (what aurora's token store writes).
    pub fn add_document(&mut self, tokens: &[u32]) -> Result<(), MegatronError> {
        self.add_sequence(tokens)?;
        self.end_document()
    }

    /// Flushes the `.bin` and writes the `.idx`, streaming the spilled arrays.
    pub fn finish(self) -> Result<WriteSummary, MegatronError> {
        use std::io::{Read, Seek, SeekFrom};
        let IndexedWriter {
            idx_path, bin_path, mut bin, dtype, lengths, doc_idx, sequences, doc_entries, tokens, ..
        } = self;
        let e = |err| MegatronError::Io { path: idx_path.clone(), source: err };
        bin.flush().map_err(io_err(&bin_path))?;
        bin.get_ref().sync_all().map_err(io_err(&bin_path))?;
        let rewind = |w: BufWriter<File>| -> std::io::Result<std::io::BufReader<File>> {
            let mut f = w.into_inner().map_err(|e| e.into_error())?;
            f.seek(SeekFrom::Start(0))?;
            Ok(std::io::BufReader::with_capacity(1 << 16, f))
        };
        let mut lengths = rewind(lengths).map_err(e)?;
        let mut doc_idx = rewind(doc_idx).map_err(e)?;
        let file = File::create(&idx_path).map_err(e)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        w.write_all(MAGIC).map_err(e)?;
        w.write_all(&VERSION.to_le_bytes()).map_err(e)?;
        w.write_all(&[dtype.code()]).map_err(e)?;
        w.write_all(&sequences.to_le_bytes()).map_err(e)?;
        w.write_all(&doc_entries.to_le_bytes()).map_err(e)?;
        std::io::copy(&mut lengths, &mut w).map_err(e)?;
        lengths.seek(SeekFrom::Start(0)).map_err(e)?;
        let mut pointer: i64 = 0;
        let mut buf = [0u8; 4];
        for _ in 0..sequences {
            lengths.read_exact(&mut buf).map_err(e)?;
            w.write_all(&pointer.to_le_bytes()).map_err(e)?;
            pointer += i32::from_le_bytes(buf) as i64 * dtype.size() as i64;
        }
        std::io::copy(&mut doc_idx, &mut w).map_err(e)?;
        w.flush().map_err(e)?;
        w.get_ref().sync_all().map_err(e)?;
        Ok(WriteSummary { sequences, documents: doc_entries - 1, tokens })
    }
}

/// Writes the `.bytes` sidecar: one u64 LE per document.
pub fn write_bytes_sidecar(path: &Path, bytes_per_document: &[u64]) -> Result<(), MegatronError> {
    let file = File::create(path).map_err(io_err(path))?;
    let mut w = BufWriter::new(file);
    for b in bytes_per_document {
        w.write_all(&b.to_le_bytes()).map_err(io_err(path))?;
    }
    w.flush().map_err(io_err(path))?;
    w.get_ref().sync_all().map_err(io_err(path))
}

/// Reads and checks the `.bytes` sidecar of a dataset with `documents` documents.
pub fn read_bytes_sidecar(path: &Path, documents: u64) -> Result<Vec<u64>, MegatronError> {
    let data = std::fs::read(path).map_err(io_err(path))?;
    let expected = documents * 8;
    if data.len() as u64 != expected {
        return Err(MegatronError::BytesSidecar {
            path: path.to_path_buf(),
            actual: data.len() as u64,
            expected,
            documents,
        });
    }
    Ok(data.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
}

/// Borrowed tokens, straight from the memory-mapped `.bin`.
#[derive(Debug, Clone, Copy)]
pub enum Tokens<'a> {
    U16(&'a [u16]),
    I32(&'a [i32]),
}

impl<'a> Tokens<'a> {
    pub fn len(&self) -> usize {
        match self {
            Tokens::U16(t) => t.len(),
            Tokens::I32(t) => t.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Token `i` (int32 ids are non-negative in a valid dataset; a negative one reads as a huge id).
    pub fn get(&self, i: usize) -> u32 {
        match self {
            Tokens::U16(t) => t[i] as u32,
            Tokens::I32(t) => t[i] as u32,
        }
    }
    pub fn slice(&self, range: Range<usize>) -> Tokens<'a> {
        match self {
            Tokens::U16(t) => Tokens::U16(&t[range]),
            Tokens::I32(t) => Tokens::I32(&t[range]),
        }
    }
    pub fn extend_into(&self, out: &mut Vec<u32>) {
        match self {
            Tokens::U16(t) => out.extend(t.iter().map(|&x| x as u32)),
            Tokens::I32(t) => out.extend(t.iter().map(|&x| x as u32)),
        }
    }
    pub fn to_vec(&self) -> Vec<u32> {
        let mut v = Vec::with_capacity(self.len());
        self.extend_into(&mut v);
        v
    }
    /// The largest id (as u32; a negative int32 counts as larger than any valid id).
    pub fn max(&self) -> Option<u32> {
        match self {
            Tokens::U16(t) => t.iter().max().map(|&x| x as u32),
            Tokens::I32(t) => t.iter().map(|&x| x as u32).max(),
        }
    }
}

/// A validated, memory-mapped indexed dataset.
pub struct IndexedDataset {
    idx_path: PathBuf,
    bin_path: PathBuf,
    idx: Mmap,
    bin: Option<Mmap>,
    dtype: DType,
    sequences: u64,
    doc_entries: u64,
}

fn map(path: &Path) -> Result<Option<Mmap>, MegatronError> {
    let file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: the store's artifacts are immutable once published and inputs are read only; a file
    // truncated by someone else while mapped would fault, which is the documented mmap hazard.
    unsafe { memmap2::Mmap::map(&file) }.map(Some).map_err(io_err(path))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}
fn i64_at(b: &[u8], off: usize) -> i64 {
    i64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}
fn i32_at(b: &[u8], off: usize) -> i32 {
    i32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn show_magic(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(none: the file is empty)".to_string();
    }
    let shown: String = bytes.iter().flat_map(|&b| std::ascii::escape_default(b)).map(char::from).collect();
    format!("`{shown}`")
}

impl IndexedDataset {
    /// Opens `PREFIX.idx` and `PREFIX.bin`.
    pub fn open(prefix: &Path) -> Result<IndexedDataset, MegatronError> {
        let (idx, bin, _) = paths(prefix);
        Self::open_files(&idx, &bin)
    }

    /// Opens and validates an index and its token file: header, sizes, every length, pointer and
    /// document-index entry (O(N + M), no token is read).
    pub fn open_files(idx_path: &Path, bin_path: &Path) -> Result<IndexedDataset, MegatronError> {
        let idx = map(idx_path)?;
        let data: &[u8] = idx.as_deref().unwrap_or(&[]);
        let path = || idx_path.to_path_buf();
        if data.len() >= 8 && &data[..8] == LEGACY_MAGIC {
            return Err(MegatronError::LegacyFormat { path: path() });
        }
        if data.len() < 9 || &data[..9] != MAGIC {
            return Err(MegatronError::BadMagic { path: path(), found: show_magic(&data[..data.len().min(9)]) });
        }
        if (data.len() as u64) < HEADER_LEN {
            return Err(MegatronError::TruncatedHeader { path: path(), actual: data.len() as u64 });
        }
        let version = u64_at(data, 9);
        if version != VERSION {
            return Err(MegatronError::UnsupportedVersion { path: path(), version });
        }
        let code = data[17];
        let dtype = match code {
            8 => DType::U16,
            4 => DType::I32,
            6 | 7 => {
                return Err(MegatronError::FloatDType {
                    path: path(),
                    code,
                    name: megatron_dtype_name(code).expect("known"),
                });
            }
            _ => match megatron_dtype_name(code) {
                Some(name) => return Err(MegatronError::UnsupportedDType { path: path(), code, name }),
                None => return Err(MegatronError::UnknownDType { path: path(), code }),
            },
        };
        let n = u64_at(data, 18);
        let m = u64_at(data, 26);
        let expected = HEADER_LEN as u128 + 12 * n as u128 + 8 * m as u128;
        if expected != data.len() as u128 {
            let what = if expected > data.len() as u128 {
                "the arrays are cut short; the file is truncated, re-create it"
            } else {
                "there are bytes after the document index (multimodal indexes are not supported); re-create it with a \
                 text-only Megatron builder"
            };
            return Err(MegatronError::SizeMismatch {
                path: path(),
                expected,
                actual: data.len() as u64,
                sequences: n,
                doc_entries: m,
                what,
            });
        }
        let (n_us, m_us) = (n as usize, m as usize);
        let len_off = HEADER_LEN as usize;
        let ptr_off = len_off + 4 * n_us;
        let doc_off = ptr_off + 8 * n_us;
        let itemsize = dtype.size();
        let mut expected_ptr: u64 = 0;
        for i in 0..n_us {
            let length = i32_at(data, len_off + 4 * i);
            if length < 0 {
                return Err(MegatronError::NegativeLength {
                    path: path(),
                    offset: (len_off + 4 * i) as u64,
                    index: i as u64,
                    length,
                });
            }
            let pointer = i64_at(data, ptr_off + 8 * i);
            if pointer < 0 || pointer as u64 != expected_ptr {
                return Err(MegatronError::BadPointer {
                    path: path(),
                    offset: (ptr_off + 8 * i) as u64,
                    index: i as u64,
                    found: pointer,
                    expected: expected_ptr,
                    itemsize,
                });
            }
            expected_ptr += length as u64 * itemsize;
        }
        if m == 0 {
            return Err(MegatronError::DocumentIndex {
                path: path(),
                offset: doc_off as u64,
                index: 0,
                found: 0,
                why: "the document index is empty; it must hold at least the entry 0 (M = documents + 1)".into(),
            });
        }
        let mut previous: i64 = 0;
        for j in 0..m_us {
            let offset = (doc_off + 8 * j) as u64;
            let d = i64_at(data, doc_off + 8 * j);
            let why = if j == 0 && d != 0 {
                Some("the first entry must be 0".to_string())
            } else if d < previous {
                Some(format!("it is smaller than the previous entry {previous}; the document index must not decrease"))
            } else if d as u64 > n {
                Some(format!("it exceeds the number of sequences N = {n}"))
            } else if j == m_us - 1 && d as u64 != n {
                Some(format!("the last entry must be N = {n}, so that every sequence belongs to a document"))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(MegatronError::DocumentIndex { path: path(), offset, index: j as u64, found: d, why });
            }
            previous = d;
        }
        let bin = map(bin_path)?;
        let bin_len = bin.as_ref().map_or(0, |b| b.len() as u64);
        if !bin_len.is_multiple_of(itemsize) {
            return Err(MegatronError::BinAlignment { path: bin_path.to_path_buf(), actual: bin_len, itemsize });
        }
        if bin_len != expected_ptr {
            return Err(MegatronError::BinSize {
                bin: bin_path.to_path_buf(),
                idx: idx_path.to_path_buf(),
                expected: expected_ptr as u128,
                actual: bin_len,
            });
        }
        Ok(IndexedDataset {
            idx_path: idx_path.to_path_buf(),
            bin_path: bin_path.to_path_buf(),
            idx: idx.expect("a valid index is not empty"),
            bin,
            dtype,
            sequences: n,
            doc_entries: m,
        })
    }

    pub fn idx_path(&self) -> &Path {
        &self.idx_path
    }
    pub fn bin_path(&self) -> &Path {
        &self.bin_path
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// N.
    pub fn sequences(&self) -> u64 {
        self.sequences
    }
    /// M - 1.
    pub fn documents(&self) -> u64 {
        self.doc_entries - 1
    }
    /// Tokens in the `.bin`.
    pub fn total_tokens(&self) -> u64 {
        self.bin.as_ref().map_or(0, |b| b.len() as u64) / self.dtype.size()
    }

    fn len_off(&self) -> usize {
        HEADER_LEN as usize
    }
    fn ptr_off(&self) -> usize {
        HEADER_LEN as usize + 4 * self.sequences as usize
    }
    fn doc_off(&self) -> usize {
        self.ptr_off() + 8 * self.sequences as usize
    }

    pub fn sequence_length(&self, i: u64) -> u32 {
        assert!(i < self.sequences, "sequence {i} out of range (N = {})", self.sequences);
        i32_at(&self.idx, self.len_off() + 4 * i as usize) as u32
    }
    pub fn sequence_pointer(&self, i: u64) -> u64 {
        assert!(i < self.sequences, "sequence {i} out of range (N = {})", self.sequences);
        i64_at(&self.idx, self.ptr_off() + 8 * i as usize) as u64
    }
    /// Entry `j` of the document index (0 ..= documents).
    pub fn document_index(&self, j: u64) -> u64 {
        assert!(j < self.doc_entries, "document index entry {j} out of range (M = {})", self.doc_entries);
        i64_at(&self.idx, self.doc_off() + 8 * j as usize) as u64
    }

    /// Token positions (in tokens from the start of the `.bin`) of sequence `i`.
    pub fn sequence_range(&self, i: u64) -> Range<u64> {
        let start = self.sequence_pointer(i) / self.dtype.size();
        start..start + self.sequence_length(i) as u64
    }

    /// Token positions of document `d`: its sequences are contiguous in the `.bin`.
    pub fn document_range(&self, d: u64) -> Range<u64> {
        let first = self.document_index(d);
        let end = self.document_index(d + 1);
        if first == end {
            // An empty document: position it where the next sequence would start.
            let at = if first < self.sequences {
                self.sequence_pointer(first) / self.dtype.size()
            } else {
                self.total_tokens()
            };
            return at..at;
        }
        self.sequence_range(first).start..self.sequence_range(end - 1).end
    }

    /// Tokens at positions `range` of the `.bin`, zero-copy.
    pub fn tokens(&self, range: Range<u64>) -> Tokens<'_> {
        if range.is_empty() {
            return match self.dtype {
                DType::U16 => Tokens::U16(&[]),
                DType::I32 => Tokens::I32(&[]),
            };
        }
        let bin: &[u8] = self.bin.as_deref().unwrap_or(&[]);
        let size = self.dtype.size();
        let bytes = &bin[(range.start * size) as usize..(range.end * size) as usize];
        match self.dtype {
            DType::U16 => Tokens::U16(bytemuck::cast_slice(bytes)),
            DType::I32 => Tokens::I32(bytemuck::cast_slice(bytes)),
        }
    }

    pub fn sequence(&self, i: u64) -> Tokens<'_> {
        self.tokens(self.sequence_range(i))
    }
    pub fn document(&self, d: u64) -> Tokens<'_> {
        self.tokens(self.document_range(d))
    }
    /// Every token.
    pub fn all_tokens(&self) -> Tokens<'_> {
        self.tokens(0..self.total_tokens())
    }
}
