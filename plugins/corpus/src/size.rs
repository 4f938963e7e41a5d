//! How much text a source's files hold at most, found without reading them: what a mixture
//! needs at plan time to warn that a share cannot be met before hours of tokenization.
//!
//! Per file, an upper bound of its text bytes:
//! - plain files: their size (JSON syntax and other fields included, so an overestimate);
//! - `.gz`: the larger of the trailer's uncompressed size (modulo 2^32, of the last member) and
//!   the compressed size;
//! - `.zst`: the content size the first frame declares, when it declares one;
//! - Parquet: the uncompressed size of the text column's pages in every row group.
//!
//! A file whose bound cannot be found this way (a `.zst` frame without a declared size, an
//! unreadable file, a missing one) makes the whole source unknown: `None`, no warning.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The upper bound of the text bytes of `files` (absolute paths), `None` if any file's is unknown.
pub fn text_bytes(files: &[std::path::PathBuf], parquet_column: Option<&str>) -> Option<u64> {
    files.iter().map(|f| file_text_bytes(f, parquet_column)).sum()
}

fn file_text_bytes(path: &Path, parquet_column: Option<&str>) -> Option<u64> {
    let size = std::fs::metadata(path).ok()?.len();
    let name = path.file_name()?.to_string_lossy();
    if name.ends_with(".gz") {
        let mut file = File::open(path).ok()?;
        file.seek(SeekFrom::End(-4)).ok()?;
        let mut isize = [0u8; 4];
        file.read_exact(&mut isize).ok()?;
        return Some(u64::from(u32::from_le_bytes(isize)).max(size));
    }
    if name.ends_with(".zst") {
        let mut header = [0u8; 18];
        let n = File::open(path).ok()?.read(&mut header).ok()?;
        return zstd::zstd_safe::get_frame_content_size(&header[..n]).ok().flatten();
    }
    if let Some(column) = parquet_column {
        return parquet_column_bytes(path, column);
    }
    Some(size)
}

#[cfg(feature = "parquet")]
fn parquet_column_bytes(path: &Path, column: &str) -> Option<u64> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(File::open(path).ok()?).ok()?;
    let metadata = reader.metadata();
    let mut total = 0;
    for group in metadata.row_groups() {
        let chunk = group.columns().iter().find(|c| c.column_path().string() == column)?;
        total += u64::try_from(chunk.uncompressed_size()).ok()?;
    }
    Some(total)
}

#[cfg(not(feature = "parquet"))]
fn parquet_column_bytes(_: &Path, _: &str) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn bounds_come_from_sizes_trailers_and_frame_headers() {
        let dir = tempfile::tempdir().unwrap();
        let text = "{\"text\": \"hello\"}\n".repeat(1000);
        let plain = dir.path().join("a.jsonl");
        std::fs::write(&plain, &text).unwrap();
        let gz = dir.path().join("a.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::default());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        let zst = dir.path().join("a.jsonl.zst");
        // As the `zstd` command writes a file: the frame declares its content size.
        std::fs::write(&zst, zstd::bulk::compress(text.as_bytes(), 3).unwrap()).unwrap();
        let n = text.len() as u64;
        assert_eq!(text_bytes(std::slice::from_ref(&plain), None), Some(n));
        assert_eq!(text_bytes(std::slice::from_ref(&gz), None), Some(n));
        assert_eq!(text_bytes(std::slice::from_ref(&zst), None), Some(n));
        assert_eq!(text_bytes(&[plain, gz, zst], None), Some(3 * n));
        // A frame without a declared size, or a missing file: unknown.
        let mut streamed = Vec::new();
        let mut encoder = zstd::stream::write::Encoder::new(&mut streamed, 3).unwrap();
        encoder.include_contentsize(false).unwrap();
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap();
        let unknown = dir.path().join("b.jsonl.zst");
        std::fs::write(&unknown, streamed).unwrap();
        assert_eq!(text_bytes(&[unknown], None), None);
        assert_eq!(text_bytes(&[dir.path().join("absent.jsonl")], None), None);
    }
}
