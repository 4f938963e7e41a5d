//! Readers: input files -> document texts, in file order, with located errors.
//!
//! Compression is recognised by content (gzip `1f 8b`, zstd `28 b5 2f fd`), not by file name, so
//! `.jsonl`, `.jsonl.gz` and `.jsonl.zst` (and compressed text or instruction files) all work.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use serde_json::Value;

use crate::config::{OnError, RecordFields, Shape, Split};

/// Where in a file a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// 1-based line number.
    Line(u64),
    /// 0-based index of a record in a JSON array.
    Record(u64),
    /// 0-based row of a Parquet file.
    Row(u64),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Line(n) => write!(f, ":{n}"),
            Place::Record(n) => write!(f, ": record {n} (0-based)"),
            Place::Row(n) => write!(f, ": row {n} (0-based)"),
        }
    }
}

/// A file that cannot be read, or one record of it that cannot.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: cannot read: {source}; check that the file exists and is readable")]
    Io { path: String, source: io::Error },
    #[error(
        "{path}{place}: invalid UTF-8 (byte {byte} of the {what}); re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or set `on_error = \"skip\"` to skip such lines"
    )]
    Utf8 { path: String, place: Place, byte: usize, what: &'static str },
    #[error(
        "{path}{place}: malformed JSON: {detail}; every line must be one JSON object such as {{\"text\": \"...\"}} (fix the line, or set `on_error = \"skip\"` to skip malformed lines)"
    )]
    Json { path: String, place: Place, detail: String },
    #[error(
        "{path}{place}: expected a JSON object, found {found}; every record must be an object such as {{\"text\": \"...\"}} (or set `on_error = \"skip\"`)"
    )]
    NotObject { path: String, place: Place, found: &'static str },
    #[error(
        "{path}{place}: the record has no field `{field}`; its keys are: {keys}. Set `{setting}` to the key holding the text (or `on_error = \"skip\"` to skip such records)"
    )]
    MissingField { path: String, place: Place, field: String, keys: String, setting: &'static str },
    #[error(
        "{path}{place}: field `{field}` is {found}, not a string; point `{setting}` at a string field (or set `on_error = \"skip\"`)"
    )]
    NotString { path: String, place: Place, field: String, found: &'static str, setting: &'static str },
    #[error("{path}: {detail}")]
    Format { path: String, detail: String },
}

impl ReadError {
    /// Record-level problems can be skipped with `on_error = "skip"`; file-level ones cannot.
    pub fn skippable(&self) -> bool {
        !matches!(self, ReadError::Io { .. } | ReadError::Format { .. })
    }
}

/// Receives documents; returns `false` to stop reading (document cap reached).
pub type Emit<'a> = dyn FnMut(String) -> bool + 'a;

/// Counts what the readers skipped.
#[derive(Debug, Default)]
pub struct ReadState {
    pub on_error: OnError,
    pub skipped: u64,
}

impl ReadState {
    /// Skips a skippable problem when allowed, else returns it.
    pub fn problem(&mut self, e: ReadError) -> Result<(), ReadError> {
        if self.on_error == OnError::Skip && e.skippable() {
            self.skipped += 1;
            Ok(())
        } else {
            Err(e)
        }
    }
}

/// Whether reading should continue.
pub type Continue = bool;

/// Opens a file, transparently decompressing gzip or zstd.
pub fn open(path: &Path) -> Result<Box<dyn BufRead>, ReadError> {
    let io_err = |source| ReadError::Io { path: path.display().to_string(), source };
    let file = File::open(path).map_err(io_err)?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let head = reader.fill_buf().map_err(io_err)?;
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Box::new(BufReader::with_capacity(1 << 16, flate2::bufread::MultiGzDecoder::new(reader))));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = zstd::stream::read::Decoder::with_buffer(reader).map_err(io_err)?;
        return Ok(Box::new(BufReader::with_capacity(1 << 16, decoder)));
    }
    Ok(Box::new(reader))
}

/// Calls `f` with each line (without `\n` / `\r\n`) and its 1-based number.
fn for_each_line(
    path: &Path,
    mut f: impl FnMut(u64, &[u8]) -> Result<Continue, ReadError>,
) -> Result<Continue, ReadError> {
    let mut reader = open(path)?;
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| ReadError::Io { path: path.display().to_string(), source })?;
        if n == 0 {
            return Ok(true);
        }
        line_no += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        if !f(line_no, &buf)? {
            return Ok(false);
        }
    }
}

fn utf8<'b>(path: &Path, place: Place, bytes: &'b [u8], what: &'static str) -> Result<&'b str, ReadError> {
    std::str::from_utf8(bytes).map_err(|e| ReadError::Utf8 {
        path: path.display().to_string(),
        place,
        byte: e.valid_up_to() + 1,
        what,
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The string `field` of a JSON record.
fn text_of(path: &Path, place: Place, record: Value, field: &str, setting: &'static str) -> Result<String, ReadError> {
    let Value::Object(mut map) = record else {
        return Err(ReadError::NotObject { path: path.display().to_string(), place, found: json_type(&record) });
    };
    match map.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ReadError::NotString {
            path: path.display().to_string(),
            place,
            field: field.to_string(),
            found: json_type(&other),
            setting,
        }),
        None => {
            let mut keys: Vec<String> = map.keys().map(|k| format!("`{k}`")).collect();
            keys.sort();
            Err(ReadError::MissingField {
                path: path.display().to_string(),
                place,
                field: field.to_string(),
                keys: if keys.is_empty() { "(none)".to_string() } else { keys.join(", ") },
                setting,
            })
        }
    }
}

/// JSON Lines: one object per line; blank lines are allowed and ignored.
pub fn jsonl(path: &Path, text_field: &str, state: &mut ReadState, emit: &mut Emit<'_>) -> Result<Continue, ReadError> {
    json_lines(path, state, emit, |place, value| text_of(path, place, value, text_field, "text_field"))
}

/// Each non-blank line parsed as JSON and turned into a document by `document`; a bad line is an
/// error (or skipped, and counted, with `on_error = "skip"`).
fn json_lines(
    path: &Path,
    state: &mut ReadState,
    emit: &mut Emit<'_>,
    document: impl Fn(Place, Value) -> Result<String, ReadError>,
) -> Result<Continue, ReadError> {
    for_each_line(path, |line_no, bytes| {
        let place = Place::Line(line_no);
        let parsed = utf8(path, place, bytes, "line").and_then(|line| {
            if line.trim().is_empty() {
                return Ok(None);
            }
            let value: Value = serde_json::from_str(line).map_err(|e| ReadError::Json {
                path: path.display().to_string(),
                place,
                detail: e.to_string(),
            })?;
            document(place, value).map(Some)
        });
        match parsed {
            Ok(Some(text)) => Ok(emit(text)),
            Ok(None) => Ok(true),
            Err(e) => state.problem(e).map(|()| true),
        }
    })
}

/// Plain text cut into documents per file, line or paragraph. Blank lines never make documents;
/// a line that is not valid UTF-8 is an error (or skipped, and counted, with `on_error = "skip"`).
pub fn text(path: &Path, split: Split, state: &mut ReadState, emit: &mut Emit<'_>) -> Result<Continue, ReadError> {
    if split == Split::File {
        let mut bytes = Vec::new();
        open(path)?
            .read_to_end(&mut bytes)
            .map_err(|source| ReadError::Io { path: path.display().to_string(), source })?;
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let bytes = e.into_bytes();
                let mut kept = String::new();
                // Re-read line by line to locate (or skip) the bad lines.
                for (i, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
                    match utf8(path, Place::Line(i as u64 + 1), line, "line") {
                        Ok(s) => kept.push_str(s),
                        Err(e) => state.problem(e)?,
                    }
                }
                kept
            }
        };
        if text.trim().is_empty() {
            return Ok(true);
        }
        return Ok(emit(text));
    }
    let mut paragraph = String::new();
    let more = for_each_line(path, |line_no, bytes| {
        let line = match utf8(path, Place::Line(line_no), bytes, "line") {
            Ok(line) => line,
            Err(e) => return state.problem(e).map(|()| true),
        };
        let blank = line.trim().is_empty();
        match split {
            Split::Line if !blank => Ok(emit(line.to_string())),
            Split::Paragraph if blank && !paragraph.is_empty() => Ok(emit(std::mem::take(&mut paragraph))),
            Split::Paragraph if !blank => {
                if !paragraph.is_empty() {
                    paragraph.push('\n');
                }
                paragraph.push_str(line);
                Ok(true)
            }
            _ => Ok(true),
        }
    })?;
    if more && !paragraph.is_empty() {
        return Ok(emit(paragraph));
    }
    Ok(more)
}

/// One instruction record rendered with a template (see [`crate::config::InstructionsConfig`]).
pub fn render_instruction(template: &str, instruction: &str, input: &str, output: &str) -> String {
    let has_input = template.contains("{input}");
    let joined;
    let instruction = if !has_input && !input.is_empty() {
        joined = format!("{instruction}\n\n{input}");
        joined.as_str()
    } else {
        instruction
    };
    // One pass, so placeholders inside the substituted values are never expanded.
    aurora_core::template::fill(template, &[("{instruction}", instruction), ("{input}", input), ("{output}", output)])
}

/// How instruction records are read: the template, the records' shape and keys.
pub struct Exchange<'a> {
    pub template: &'a str,
    pub shape: Shape,
    pub fields: &'a RecordFields,
}

/// Roles that ask and roles that answer in `messages` records.
const ASKING_ROLES: [&str; 3] = ["user", "human", "prompter"];
const ANSWERING_ROLES: [&str; 4] = ["assistant", "gpt", "bot", "model"];

fn instruction_record(path: &Path, place: Place, record: Value, exchange: &Exchange<'_>) -> Result<String, ReadError> {
    let Value::Object(map) = &record else {
        return Err(ReadError::NotObject { path: path.display().to_string(), place, found: json_type(&record) });
    };
    let keys = |map: &serde_json::Map<String, Value>| {
        let mut keys: Vec<String> = map.keys().map(|k| format!("`{k}`")).collect();
        keys.sort();
        if keys.is_empty() { "(none)".to_string() } else { keys.join(", ") }
    };
    let missing = |map: &serde_json::Map<String, Value>, name: &str| ReadError::MissingField {
        path: path.display().to_string(),
        place,
        field: name.to_string(),
        keys: keys(map),
        setting: "fields",
    };
    let not_a = |name: &str, found: &Value, what: &'static str| ReadError::NotString {
        path: path.display().to_string(),
        place,
        field: name.to_string(),
        found: if what == "string" { json_type(found) } else { what },
        setting: "fields",
    };
    let string = |map: &serde_json::Map<String, Value>, name: &str, required: bool| -> Result<String, ReadError> {
        match map.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) if !required => Ok(String::new()),
            None => Err(missing(map, name)),
            Some(other) => Err(not_a(name, other, "string")),
        }
    };
    let fields = exchange.fields;
    let pairs: Vec<(String, String)> = match exchange.shape {
        Shape::Records => {
            let instruction = string(map, &fields.instruction, true)?;
            let input = string(map, &fields.input, false)?;
            let output = string(map, &fields.output, true)?;
            return Ok(render_instruction(exchange.template, &instruction, &input, &output));
        }
        Shape::Turns => {
            let turns = match map.get(&fields.turns) {
                Some(Value::Array(turns)) => turns,
                None => return Err(missing(map, &fields.turns)),
                Some(other) => return Err(not_a(&fields.turns, other, "not a list of strings")),
            };
            let texts: Vec<&str> = turns.iter().filter_map(Value::as_str).collect();
            if texts.len() != turns.len() {
                return Err(not_a(&fields.turns, &record, "a list with items that are not strings"));
            }
            texts.chunks(2).filter(|p| p.len() == 2).map(|p| (p[0].to_string(), p[1].to_string())).collect()
        }
        Shape::Messages => {
            let messages = match map.get(&fields.messages) {
                Some(Value::Array(messages)) => messages,
                None => return Err(missing(map, &fields.messages)),
                Some(other) => return Err(not_a(&fields.messages, other, "not a list of messages")),
            };
            let mut pairs = Vec::new();
            let mut question: Option<String> = None;
            for message in messages {
                let Value::Object(m) = message else {
                    return Err(not_a(&fields.messages, message, "a list with items that are not objects"));
                };
                let role = string(m, &fields.role, true)?;
                let content = string(m, &fields.content, true)?;
                if ASKING_ROLES.contains(&role.as_str()) {
                    question = Some(content);
                } else if ANSWERING_ROLES.contains(&role.as_str())
                    && let Some(q) = question.take()
                {
                    pairs.push((q, content));
                }
            }
            pairs
        }
    };
    let rendered: Vec<String> = pairs.iter().map(|(q, a)| render_instruction(exchange.template, q, "", a)).collect();
    Ok(rendered.join("\n\n"))
}

/// Instruction data: a JSON array of records, or JSON Lines (recognised by the first
/// non-whitespace byte being `[`).
pub fn instructions(
    path: &Path,
    exchange: &Exchange<'_>,
    state: &mut ReadState,
    emit: &mut Emit<'_>,
) -> Result<Continue, ReadError> {
    let mut reader = open(path)?;
    let io_err = |source| ReadError::Io { path: path.display().to_string(), source };
    let is_array = loop {
        let buf = reader.fill_buf().map_err(io_err)?;
        if buf.is_empty() {
            break false;
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => break buf[i] == b'[',
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    };
    if !is_array {
        drop(reader);
        return json_lines(path, state, emit, |place, value| instruction_record(path, place, value, exchange));
    }
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(io_err)?;
    let records: Vec<Value> = serde_json::from_slice(&bytes).map_err(|e| ReadError::Format {
        path: path.display().to_string(),
        detail: format!(
            "line {} column {}: not a valid JSON array of instruction records: {e}; fix the file (a JSON array \
             `[{{\"instruction\": ..., \"input\": ..., \"output\": ...}}, ...]`, or one such object per line)",
            e.line(),
            e.column()
        ),
    })?;
    for (i, record) in records.into_iter().enumerate() {
        match instruction_record(path, Place::Record(i as u64), record, exchange) {
            Ok(text) => {
                if !emit(text) {
                    return Ok(false);
                }
            }
            Err(e) => state.problem(e)?,
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_TEMPLATE;

    #[test]
    fn template_substitutes_in_one_pass() {
        assert_eq!(
            render_instruction(DEFAULT_TEMPLATE, "Say hi", "", "Hi"),
            "### Instruction:\nSay hi\n### Response:\nHi"
        );
        assert_eq!(
            render_instruction(DEFAULT_TEMPLATE, "Translate", "kissa", "cat"),
            "### Instruction:\nTranslate\n\nkissa\n### Response:\ncat"
        );
        assert_eq!(render_instruction("{instruction}|{input}|{output}", "a", "b", "c"), "a|b|c");
        // Values are not expanded again; stray braces stay.
        assert_eq!(render_instruction("{x} {instruction}: {output}", "{output}", "", "}{"), "{x} {output}: }{");
    }
}
