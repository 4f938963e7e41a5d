//! Reading evaluation data files: JSON Lines, JSON (an array, or an object holding an array under
//! the configured field), and CSV (RFC 4180: quoted fields with commas, doubled quotes and line
//! breaks). `.gz` files are decompressed. Every error names the file and line. Row filters
//! ([`filter_records`]) keep the records whose fields hold given values.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// A data file that cannot be used, with its location.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    At { path: PathBuf, line: usize, message: String },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// A field the configuration names (a filter's, a language field) does not fit the file.
    #[error("{path}: {message}")]
    Field { path: PathBuf, field: String, message: String },
}

impl DataError {
    pub fn at(path: &Path, line: usize, message: impl Into<String>) -> DataError {
        DataError::At { path: path.to_path_buf(), line, message: message.into() }
    }

    /// The message with the file called `name` (e.g. as the manifest refers to it) instead of
    /// its path.
    pub fn with_name(&self, name: &str) -> String {
        match self {
            DataError::Io { source, .. } => format!("cannot read {name}: {source}"),
            DataError::At { line, message, .. } => format!("{name}:{line}: {message}"),
            DataError::File { message, .. } | DataError::Field { message, .. } => format!("{name}: {message}"),
        }
    }
}

/// The text of a file (UTF-8; gunzipped when the name ends in `.gz`).
pub fn read_text(path: &Path) -> Result<String, DataError> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let bytes = std::fs::read(path).map_err(io)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice()).read_to_end(&mut out).map_err(io)?;
        out
    } else {
        bytes
    };
    String::from_utf8(bytes)
        .map_err(|e| DataError::File { path: path.to_path_buf(), message: format!("not UTF-8: {e}") })
}

/// A record and the line it starts on (1-based).
pub type Record = (usize, Map<String, Value>);

/// JSON Lines: one object per non-blank line.
pub fn read_jsonl(path: &Path) -> Result<Vec<Record>, DataError> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(map)) => out.push((i + 1, map)),
            Ok(other) => {
                return Err(DataError::at(path, i + 1, format!("expected a JSON object, found {}", kind(&other))));
            }
            Err(e) => return Err(DataError::at(path, i + 1, format!("not JSON: {e}"))),
        }
    }
    Ok(out)
}

/// The JSON type of a value, for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// CSV with a header row: one record per row, keyed by the header names (all values strings).
pub fn read_csv(path: &Path) -> Result<Vec<Record>, DataError> {
    let text = read_text(path)?;
    let rows = parse_csv(&text).map_err(|(line, message)| DataError::at(path, line, message))?;
    let mut rows = rows.into_iter();
    let Some((_, header)) = rows.next() else {
        return Err(DataError::File { path: path.to_path_buf(), message: "empty; expected a header row".into() });
    };
    let mut out = Vec::new();
    for (line, row) in rows {
        if row.len() == 1 && row[0].is_empty() {
            continue;
        }
        if row.len() != header.len() {
            return Err(DataError::at(
                path,
                line,
                format!("{} fields, but the header has {} ({})", row.len(), header.len(), header.join(",")),
            ));
        }
        out.push((line, header.iter().cloned().zip(row.into_iter().map(Value::String)).collect()));
    }
    Ok(out)
}

/// A CSV row and the line it starts on (1-based).
pub type Row = (usize, Vec<String>);

/// RFC 4180 rows; `Err((line, message))` on an unterminated quote.
pub fn parse_csv(text: &str) -> Result<Vec<Row>, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    let (mut row, mut field) = (Vec::new(), String::new());
    let (mut line, mut row_line) = (1, 1);
    let (mut quoted, mut quote_line) = (false, 0);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => {
                    line += usize::from(c == '\n');
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => (quoted, quote_line) = (true, line),
            ',' => row.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push((row_line, std::mem::take(&mut row)));
                line += 1;
                row_line = line;
            }
            c => field.push(c),
        }
    }
    if quoted {
        return Err((quote_line, "a quoted field is never closed".to_string()));
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push((row_line, row));
    }
    Ok(rows)
}

/// Records of a CSV, JSON or JSON Lines file, chosen by extension (`.csv`, `.json`, `.jsonl`;
/// each optionally `.gz`). A JSON file is an array of objects or strings, or an object whose
/// `field` member is such an array (then the strings are the records' `field`).
pub fn read_records(path: &Path, field: &str) -> Result<Vec<Record>, DataError> {
    let name = path.file_name().map(|n| n.to_string_lossy().trim_end_matches(".gz").to_string()).unwrap_or_default();
    if name.ends_with(".csv") {
        read_csv(path)
    } else if name.ends_with(".jsonl") {
        read_jsonl(path)
    } else if name.ends_with(".json") {
        read_json_records(path, field)
    } else {
        Err(DataError::File {
            path: path.to_path_buf(),
            message: "unknown format; expected a name ending in .csv, .json or .jsonl (optionally .gz)".into(),
        })
    }
}

fn read_json_records(path: &Path, field: &str) -> Result<Vec<Record>, DataError> {
    let text = read_text(path)?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| DataError::at(path, e.line(), format!("not JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove(field) {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(DataError::File {
                    path: path.to_path_buf(),
                    message: format!(
                        "a JSON object without an array `{field}`; expected an array of records or an object whose `{field}` is an array (keys: {})",
                        map.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        },
        other => {
            return Err(DataError::File {
                path: path.to_path_buf(),
                message: format!("expected a JSON array or object, found {}", kind(&other)),
            });
        }
    };
    // A JSON document has no line per record; the element number (1-based) stands in for it.
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(map) => Ok((i + 1, map)),
            Value::String(s) => Ok((i + 1, Map::from_iter([(field.to_string(), Value::String(s))]))),
            other => Err(DataError::at(
                path,
                i + 1,
                format!("element {} is {}, expected an object or string", i + 1, kind(&other)),
            )),
        })
        .collect()
}

/// A string field of a record, or an error naming the file, line and the fields present.
pub fn string_field<'a>(path: &Path, (line, record): &'a Record, field: &str) -> Result<&'a str, DataError> {
    match record.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(DataError::at(path, *line, format!("`{field}` is {}, expected a string", kind(other)))),
        None => Err(DataError::at(
            path,
            *line,
            format!("no field `{field}` (fields: {})", record.keys().cloned().collect::<Vec<_>>().join(", ")),
        )),
    }
}

/// Which records of a file to use: every `field = value` must hold (`where = { label = "safe" }`).
pub type RowFilter = BTreeMap<String, String>;

/// The fields of the records, in the order they first appear.
pub fn fields_of(records: &[Record]) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    for (_, record) in records {
        for key in record.keys() {
            if !fields.contains(key) {
                fields.push(key.clone());
            }
        }
    }
    fields
}

/// A field's value as the text a filter compares with: a string as it is, a number or boolean
/// as its JSON text (`1`, `true`); null, arrays and objects have none.
pub fn field_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(value.to_string()),
        _ => None,
    }
}

/// How many distinct values of a field a "matches no row" error lists.
const LISTED_VALUES: usize = 12;

/// The records for which every `field = value` of `filter` holds (values compared exactly, see
/// [`field_text`]); all records for an empty filter. A filter field that no record has, and a
/// filter that keeps no record, are [`DataError::Field`] errors naming the file, the field and
/// the fields (or the field's values) the file has.
pub fn filter_records(path: &Path, records: Vec<Record>, filter: &RowFilter) -> Result<Vec<Record>, DataError> {
    if filter.is_empty() {
        return Ok(records);
    }
    let fields = fields_of(&records);
    if let Some(field) = filter.keys().find(|f| !fields.contains(f)) {
        return Err(DataError::Field {
            path: path.to_path_buf(),
            field: field.clone(),
            message: format!("no field `{field}` to filter on (fields: {})", fields.join(", ")),
        });
    }
    let holds = |record: &Map<String, Value>, field: &str, want: &str| {
        record.get(field).and_then(field_text).is_some_and(|v| v == want)
    };
    let keep: Vec<bool> = records.iter().map(|(_, r)| filter.iter().all(|(f, want)| holds(r, f, want))).collect();
    if keep.contains(&true) {
        return Ok(records.into_iter().zip(keep).filter_map(|(r, k)| k.then_some(r)).collect());
    }
    // Name the field whose value matches no record on its own, if there is one; else the filter
    // as a whole.
    let alone = filter.iter().find(|(f, want)| !records.iter().any(|(_, r)| holds(r, f, want)));
    let values = |field: &str| {
        let mut values: Vec<String> = records.iter().filter_map(|(_, r)| r.get(field).and_then(field_text)).collect();
        values.sort();
        values.dedup();
        let more = values.len().saturating_sub(LISTED_VALUES);
        let mut list: Vec<String> = values.into_iter().take(LISTED_VALUES).map(|v| format!("{v:?}")).collect();
        if more > 0 {
            list.push(format!("and {more} more"));
        }
        list.join(", ")
    };
    let (field, message) = match alone {
        Some((field, want)) => {
            (field.clone(), format!("no record has {field} = {want:?} (values of `{field}`: {})", values(field)))
        }
        None => {
            let all: Vec<String> = filter.iter().map(|(f, want)| format!("{f} = {want:?}")).collect();
            let first = filter.keys().next().expect("the filter is not empty").clone();
            (first, format!("no record has {} together", all.join(" and ")))
        }
    };
    Err(DataError::Field { path: path.to_path_buf(), field, message })
}
