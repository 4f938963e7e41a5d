//! `source.parquet` reader: one string column of Parquet files (Hugging Face datasets shards),
//! read one row group at a time in batches, without Arrow.
//!
//! Supported: a top-level, non-repeated `BYTE_ARRAY` column (string / UTF8 / untyped binary
//! holding UTF-8), uncompressed, snappy or zstd compressed. A null value or invalid UTF-8 is a
//! row error (`on_error = "skip"` skips and counts it).

use std::fs::File;
use std::path::Path;

use parquet::basic::Type as PhysicalType;
use parquet::column::reader::{ColumnReader, get_typed_column_reader};
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::read::{Emit, Place, ReadError, ReadState};

/// Rows decoded per call.
const ROWS: usize = 1024;

fn format_error(path: &Path, detail: impl Into<String>) -> ReadError {
    ReadError::Format { path: path.display().to_string(), detail: detail.into() }
}

/// Reads the `column` of every row of every row group, in order.
pub fn read(path: &Path, column: &str, state: &mut ReadState, emit: &mut Emit<'_>) -> Result<bool, ReadError> {
    let file = File::open(path).map_err(|source| ReadError::Io { path: path.display().to_string(), source })?;
    let reader = SerializedFileReader::new(file).map_err(|e| {
        format_error(path, format!("not a readable Parquet file: {e}; check that it is a complete .parquet file"))
    })?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let index = (0..schema.num_columns()).find(|&i| {
        let descr = schema.column(i);
        let parts = descr.path().parts();
        parts.len() == 1 && parts[0] == column
    });
    let Some(index) = index else {
        let mut names: Vec<String> =
            (0..schema.num_columns()).map(|i| format!("`{}`", schema.column(i).path().string())).collect();
        names.sort();
        return Err(format_error(
            path,
            format!(
                "no column `{column}`; its columns are: {}. Set `text_column` to the column holding the text",
                names.join(", ")
            ),
        ));
    };
    let descr = schema.column(index);
    if descr.physical_type() != PhysicalType::BYTE_ARRAY || descr.max_rep_level() > 0 {
        return Err(format_error(
            path,
            format!(
                "column `{column}` is {:?}{}, not a string column; set `text_column` to a string column",
                descr.physical_type(),
                if descr.max_rep_level() > 0 { " (repeated)" } else { "" }
            ),
        ));
    }
    let max_def = descr.max_def_level();
    let mut row = 0u64;
    let mut values: Vec<ByteArray> = Vec::with_capacity(ROWS);
    let mut defs: Vec<i16> = Vec::with_capacity(ROWS);
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g).map_err(|e| format_error(path, format!("row group {g}: {e}")))?;
        let column_reader =
            group.get_column_reader(index).map_err(|e| format_error(path, format!("row group {g}: {e}")))?;
        let mut typed = match column_reader {
            c @ ColumnReader::ByteArrayColumnReader(_) => get_typed_column_reader::<ByteArrayType>(c),
            _ => return Err(format_error(path, format!("column `{column}` is not a byte array column"))),
        };
        loop {
            values.clear();
            defs.clear();
            let (records, _, levels) = typed
                .read_records(ROWS, (max_def > 0).then_some(&mut defs), None, &mut values)
                .map_err(|e| format_error(path, format!("row group {g}: cannot decode column `{column}`: {e}")))?;
            if records == 0 {
                break;
            }
            let mut next_value = values.drain(..);
            for r in 0..records {
                let place = Place::Row(row);
                row += 1;
                let present = max_def == 0 || (r < levels && defs.get(r) == Some(&max_def));
                if !present {
                    state.problem(ReadError::NotString {
                        path: path.display().to_string(),
                        place,
                        field: column.to_string(),
                        found: "null",
                        setting: "text_column",
                    })?;
                    continue;
                }
                let value =
                    next_value.next().ok_or_else(|| format_error(path, "fewer values than rows (corrupt file)"))?;
                match String::from_utf8(value.data().to_vec()) {
                    Ok(text) => {
                        if !emit(text) {
                            return Ok(false);
                        }
                    }
                    Err(e) => state.problem(ReadError::Utf8 {
                        path: path.display().to_string(),
                        place,
                        byte: e.utf8_error().valid_up_to() + 1,
                        what: "value",
                    })?,
                }
            }
        }
    }
    Ok(true)
}
