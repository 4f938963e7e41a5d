//! Manifest settings of the source plugins (validated against their JSON Schemas) and the keyed
//! node config that execution reads back.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// FLORES-200 style language code (`eng_Latn`, `fin_Latn`, ...) or `code`.
pub const LANG_PATTERN: &str = r"^([a-z]{3}_[A-Z][a-z]{3}|code)$";

/// What to do with a line that cannot be read (invalid UTF-8, malformed JSON, missing field).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop with an error naming the file and line (the default).
    #[default]
    Fail,
    /// Skip the line and count it in `source.json` `skipped_lines`.
    Skip,
}

/// Held-out evaluation split, decided per document by hash (never by position).
///
/// A document is held out iff `u64::from_le_bytes(blake3(salt || normalized_text)[0..8]) / 2^64 <
/// fraction`, so the decision depends only on the salt and the document's own normalized text:
/// never on order, sharding or the other documents. Identical (normalized) texts always land on
/// the same side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Heldout {
    /// Expected share of documents held out, in [0, 1).
    #[schemars(range(min = 0.0), extend("exclusiveMaximum" = 1.0))]
    pub fraction: f64,
    /// Salt of the held-out hash; change it to draw a different held-out set.
    pub salt: String,
}

/// `langid` filter settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LangId {
    /// FLORES code the document must be identified as (e.g. `fin_Latn`); defaults to the source's
    /// `lang`. Only languages `whatlang` knows are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{3}_[A-Z][a-z]{3}$"))]
    pub lang: Option<String>,
    /// Minimum `whatlang` confidence (0..1) of the identification; 0 keeps every document
    /// identified as `lang` whatever the confidence.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_confidence: f64,
}

/// One filter, a table with exactly one key: `{ min_chars = N }`, `{ max_chars = N }`, `{ max_symbol_ratio = R }`, `{ max_digit_ratio = R }` or `{ langid = { lang = "fin_Latn", min_confidence = 0.5 } }`.
//
// Lengths and ratios count Unicode scalar values (`char`s) of the document text as read (not
// normalized).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Filter {
    /// Remove documents with fewer than N characters (Unicode scalar values of the text as read).
    MinChars(u64),
    /// Remove documents with more than N characters (Unicode scalar values of the text as read).
    MaxChars(u64),
    /// Remove documents whose symbol ratio is above this value. Symbol ratio = number of
    /// characters that are neither alphanumeric (`char::is_alphanumeric`), nor whitespace
    /// (`char::is_whitespace`), nor a combining mark (Unicode general category M, e.g. Devanagari
    /// vowel signs and virama, which belong to the letter before them) / number of characters.
    /// Punctuation, markup and emoji are symbols. Empty documents have ratio 0.
    MaxSymbolRatio(#[schemars(range(min = 0.0, max = 1.0))] f64),
    /// Remove documents whose digit ratio is above this value. Digit ratio = number of numeric
    /// characters (`char::is_numeric`: any script's digits, including full-width and Devanagari
    /// digits) / number of characters. Empty documents have ratio 0.
    MaxDigitRatio(#[schemars(range(min = 0.0, max = 1.0))] f64),
    /// Keep only documents that `whatlang` identifies as `lang` with at least `min_confidence`.
    /// Not allowed on `lang = "code"` sources.
    Langid(LangId),
}

impl Filter {
    /// The filter's name as written in the manifest and in `source.json` "filters".
    pub fn name(&self) -> &'static str {
        match self {
            Filter::MinChars(_) => "min_chars",
            Filter::MaxChars(_) => "max_chars",
            Filter::MaxSymbolRatio(_) => "max_symbol_ratio",
            Filter::MaxDigitRatio(_) => "max_digit_ratio",
            Filter::Langid(_) => "langid",
        }
    }
}

/// How `source.text` cuts files into documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// One document per file (the whole file, byte for byte).
    #[default]
    File,
    /// One document per non-blank line (without its line ending).
    Line,
    /// One document per paragraph: runs of non-blank lines separated by blank lines, joined
    /// with `\n`.
    Paragraph,
}

/// The Aurora-M instruction template.
pub const DEFAULT_TEMPLATE: &str = "### Instruction:\n{instruction}\n### Response:\n{output}";

/// Declares a source config struct with the settings every source shares plus its own.
macro_rules! source_config {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Input files as `file:PATH` (relative to the manifest), globs allowed
            /// (`file:shards/*.jsonl.gz`). Globs are expanded when planning, relative to the
            /// project root; matches are sorted and every file enters the cache key by content.
            /// Documents keep the order of this list, then of the sorted matches.
            #[schemars(length(min = 1), inner(regex(pattern = r"^file:")))]
            pub files: Vec<String>,
            /// Language: a FLORES-200 code (`eng_Latn`, `fin_Latn`, `hin_Deva`, `jpn_Jpan`,
            /// `vie_Latn`, ...) or `code`.
            #[schemars(regex(pattern = r"^([a-z]{3}_[A-Z][a-z]{3}|code)$"))]
            pub lang: String,
            /// For `lang = "code"`: the programming language (`python`, `sql`, ...).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub programming_language: Option<String>,
            /// Cleaning filters, applied in order; each records how many documents it removed.
            /// Without this key, the cleaning defaults of the language pack the manifest loads
            /// for `lang` apply (none without a pack); `filters = []` means no filters.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(with = "Vec<Filter>")]
            pub filters: Option<Vec<Filter>>,
            /// Held-out evaluation split (by document hash); absent: nothing is held out.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(with = "Heldout")]
            pub heldout: Option<Heldout>,
            /// Take part in exact deduplication across all sources (node `dedup/exact`).
            #[serde(default = "yes")]
            pub dedup: bool,
            /// Unreadable lines (invalid UTF-8, malformed JSON, missing field): `fail` (default)
            /// or `skip` (counted in `source.json` `skipped_lines`).
            #[serde(default)]
            pub on_error: OnError,
            /// Read at most this many documents (the first N, before cleaning): for quick runs.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(range(min = 1))]
            pub max_documents: Option<u64>,
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $name {
            pub fn common(&self) -> Common {
                Common {
                    files: self.files.clone(),
                    lang: self.lang.clone(),
                    programming_language: self.programming_language.clone(),
                    filters: self.filters.clone(),
                    heldout: self.heldout.clone(),
                    dedup: self.dedup,
                    on_error: self.on_error,
                    max_documents: self.max_documents,
                }
            }
        }
    };
}

/// A source takes part in cross-source dedup unless it says `dedup = false`.
pub const DEDUP_DEFAULT: bool = true;

fn yes() -> bool {
    DEDUP_DEFAULT
}

fn default_text_field() -> String {
    "text".to_string()
}

fn default_template() -> String {
    DEFAULT_TEMPLATE.to_string()
}

/// The settings every source shares.
#[derive(Debug, Clone)]
pub struct Common {
    pub files: Vec<String>,
    pub lang: String,
    pub programming_language: Option<String>,
    /// `None`: the entry has no `filters` key (see [`crate::defaults`]).
    pub filters: Option<Vec<Filter>>,
    pub heldout: Option<Heldout>,
    pub dedup: bool,
    pub on_error: OnError,
    pub max_documents: Option<u64>,
}

source_config! {
    /// `plugin = "source.jsonl"`: JSON Lines files (`.jsonl`, `.jsonl.gz`, `.jsonl.zst`;
    /// compression is recognised by content), one document per line.
    JsonlConfig {
        /// The string field holding the document text.
        #[serde(default = "default_text_field")]
        pub text_field: String,
    }
}

source_config! {
    /// `plugin = "source.text"`: plain UTF-8 text files (optionally gzip/zstd compressed).
    TextConfig {
        /// One document per `file` (default), per non-blank `line`, or per blank-line separated
        /// `paragraph`.
        #[serde(default)]
        pub split: Split,
    }
}

source_config! {
    /// `plugin = "source.instructions"`: a JSON array or JSON Lines of
    /// `{"instruction", "input", "output"}` records, each rendered into one document.
    InstructionsConfig {
        /// Rendering template with the placeholders `{instruction}`, `{output}` and optionally
        /// `{input}`. Default: the Aurora-M template
        /// `"### Instruction:\n{instruction}\n### Response:\n{output}"`. When the template has no
        /// `{input}` and a record's `input` is non-empty, the input is appended to the
        /// instruction after a blank line (`instruction + "\n\n" + input`).
        #[serde(default = "default_template")]
        pub template: String,
        /// How a record holds its exchange: `records` (default: one instruction and response
        /// per record), `turns` (UltraChat: a list of strings alternating user and assistant) or
        /// `messages` (ShareGPT, OpenAI chat: a list of `{role, content}` objects).
        #[serde(default)]
        pub shape: Shape,
        /// The keys that hold each part, where the records name them otherwise (defaults:
        /// `instruction`, `input`, `output`; `turns` = `data`; `messages`, `role`, `content`).
        #[serde(default)]
        pub fields: RecordFields,
    }
}

/// How an instruction record holds its exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// One instruction (plus optional input) and one response per record.
    #[default]
    Records,
    /// A list of strings alternating user and assistant (UltraChat's `data`); each pair is
    /// rendered with the template, the pairs joined by a blank line into one document.
    Turns,
    /// A list of objects with a role and a content (ShareGPT's `conversations` with `from` and
    /// `value`, OpenAI's `messages` with `role` and `content`); roles `user`, `human` and
    /// `prompter` ask, `assistant`, `gpt`, `bot` and `model` answer, others (`system`) are left
    /// out; each question and the answer after it are rendered like `turns`.
    Messages,
}

/// The keys of an instruction record (only those its shape uses are read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RecordFields {
    pub instruction: String,
    pub input: String,
    pub output: String,
    pub turns: String,
    pub messages: String,
    pub role: String,
    pub content: String,
}

impl Default for RecordFields {
    fn default() -> Self {
        RecordFields {
            instruction: "instruction".into(),
            input: "input".into(),
            output: "output".into(),
            turns: "data".into(),
            messages: "messages".into(),
            role: "role".into(),
            content: "content".into(),
        }
    }
}

impl Shape {
    fn is_records(&self) -> bool {
        *self == Shape::Records
    }
}

impl RecordFields {
    /// Whether these are the default keys (then left out of keyed configs, which predate them).
    pub fn is_default(&self) -> bool {
        *self == RecordFields::default()
    }
}

source_config! {
    /// `plugin = "source.parquet"`: Parquet files (Hugging Face datasets shards), read one row
    /// group at a time; one document per row.
    ParquetConfig {
        /// The string column holding the document text.
        #[serde(default = "default_text_field")]
        pub text_column: String,
    }
}

/// Format-specific part of the keyed node config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "lowercase", deny_unknown_fields)]
pub enum Format {
    Jsonl {
        text_field: String,
    },
    Text {
        split: Split,
    },
    Instructions {
        template: String,
        // Keyed only when not the defaults, so sources written before these settings keep their keys.
        #[serde(default, skip_serializing_if = "Shape::is_records")]
        shape: Shape,
        #[serde(default, skip_serializing_if = "RecordFields::is_default")]
        fields: RecordFields,
    },
    Parquet {
        text_column: String,
    },
}

/// The node config of a source node: only what changes its output bytes (no paths, no `dedup`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyed {
    pub reader: Format,
    pub lang: String,
    pub programming_language: Option<String>,
    pub filters: Vec<Filter>,
    pub heldout: Option<Heldout>,
    pub on_error: OnError,
    pub max_documents: Option<u64>,
}
