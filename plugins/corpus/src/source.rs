//! What every source plugin shares: planning (glob expansion, filter checks, the dedup node) and
//! the execution pipeline (read -> filter -> held-out split -> write the documents artifact).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use aurora_core::diagnostic::{Diagnostic, Diagnostics};
use aurora_core::manifest::FILE_PREFIX;
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, InputSource, InputSpec, NodeSpec, Offer, Output, PlanContext, PluginError,
    Progress, TEXT_SAMPLE_BYTES,
};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::{Common, Filter, Format, Keyed, LangId};
use crate::defaults::{FilterOrigin, resolve_filters};
use crate::filters::{CharStats, Compiled};
use crate::read::ReadState;
use crate::text::{HASH_LEN, doc_hash, is_heldout, normalize};

/// Artifact file names of a source node.
pub const DOCUMENTS: &str = "documents.jsonl";
pub const HELDOUT: &str = "heldout.jsonl";
pub const HASHES: &str = "hashes.bin";
/// Hashes of the held-out documents, so `dedup.exact` can keep their copies in other sources out
/// of training.
pub const HELDOUT_HASHES: &str = "heldout_hashes.bin";
pub const SOURCE_JSON: &str = "source.json";

/// Documents filtered and hashed together (in parallel, written in order).
const BATCH: usize = 2048;

/// Name of the node input for the `i`-th input file (zero-padded: input order = file order).
pub fn input_name(i: usize) -> String {
    format!("file-{i:06}")
}

/// Plans a source entry: its `SECTION/NAME` node, plus the shared `dedup/exact` node when
/// `dedup = true`. The filters in the node config are the ones that run: the entry's own, or the
/// language defaults when it has no `filters` key (see [`crate::defaults`]).
pub fn plan(
    entry: &Entry<'_>,
    ctx: &PlanContext<'_>,
    common: Common,
    reader: Format,
) -> Result<Vec<NodeSpec>, Diagnostics> {
    let manifest = ctx.manifest;
    let ptr = entry.pointer();
    let mut problems = Vec::new();

    if common.programming_language.is_some() && common.lang != "code" {
        let p = format!("{ptr}/programming_language");
        problems.push(
            Diagnostic::new(format!("`programming_language` is set but `lang` is `{}`", common.lang))
                .at(manifest.sources.value(&p))
                .pointer(p)
                .expected("`lang = \"code\"` with a programming language, or no `programming_language`")
                .help("set `lang = \"code\"` for source code, or remove `programming_language`"),
        );
    }
    let (requested, origin) = match resolve_filters(common.filters.as_deref(), &common.lang, ctx) {
        Ok(resolved) => resolved,
        Err(located) => {
            problems.extend(located);
            (Vec::new(), FilterOrigin::None)
        }
    };
    let mut filters = Vec::with_capacity(requested.len());
    for (i, filter) in requested.iter().enumerate() {
        match Compiled::new(filter, &common.lang) {
            Ok(_) => {}
            Err(e) => {
                // A default filter has no place in the manifest: point at `lang`, name the crate.
                let (p, whose, help) = match &origin {
                    FilterOrigin::Language(pack) => (
                        format!("{ptr}/lang"),
                        format!("default filter {i} (`{}`, from the language pack `{pack}`)", filter.name()),
                        format!(
                            "give this entry an explicit `filters` list without it, or fix the cleaning filters of \
                             the `{}` pack",
                            common.lang
                        ),
                    ),
                    _ => (format!("{ptr}/filters/{i}"), format!("filter {i} (`{}`)", filter.name()), e.help),
                };
                problems.push(
                    Diagnostic::new(format!("{whose} of `{}.{}`: {}", entry.section, entry.name, e.message))
                        .at(manifest.sources.value(&p))
                        .pointer(p)
                        .help(help),
                )
            }
        }
        // The key holds the resolved `langid` language, so it is explicit in the node config.
        filters.push(match filter {
            Filter::Langid(l) => Filter::Langid(LangId {
                lang: Some(l.lang.clone().unwrap_or_else(|| common.lang.clone())),
                min_confidence: l.min_confidence,
            }),
            other => other.clone(),
        });
    }
    if let Some(h) = &common.heldout
        && !(0.0..1.0).contains(&h.fraction)
    {
        let p = format!("{ptr}/heldout/fraction");
        problems.push(
            Diagnostic::new(format!("`heldout.fraction = {}` would hold out every document", h.fraction))
                .at(manifest.sources.value(&p))
                .pointer(p)
                .expected("a fraction in [0, 1), e.g. 0.02")
                .help("lower the fraction; a source must keep training documents"),
        );
    }

    let mut inputs = BTreeMap::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, pattern) in common.files.iter().enumerate() {
        let p = format!("{ptr}/files/{i}");
        match expand(&manifest.project_root, pattern) {
            Ok(files) => {
                for file in files {
                    if let Some(first) = seen.insert(file.clone(), i) {
                        problems.push(
                            Diagnostic::new(format!("`{file}` is matched by both `files[{first}]` and `files[{i}]`"))
                                .at(manifest.sources.value(&p))
                                .pointer(p.clone())
                                .help("each file may be listed once; narrow one of the patterns"),
                        );
                        continue;
                    }
                    inputs.insert(
                        input_name(inputs.len()),
                        InputSpec { source: InputSource::Path(file), pointer: p.clone() },
                    );
                }
            }
            Err((message, expected, help)) => problems
                .push(Diagnostic::new(message).at(manifest.sources.value(&p)).pointer(p).expected(expected).help(help)),
        }
    }
    if !problems.is_empty() {
        return Err(Diagnostics(problems));
    }

    let keyed = Keyed {
        reader,
        lang: common.lang,
        programming_language: common.programming_language,
        filters,
        heldout: common.heldout,
        on_error: common.on_error,
        max_documents: common.max_documents,
    };
    let config = serde_json::to_value(&keyed).expect("the keyed config serialises");
    let mut nodes = vec![NodeSpec::for_entry(entry, config, inputs)];
    if takes_part_in_dedup(entry) {
        nodes.push(crate::dedup::plan_node(entry, ctx)?);
    }
    Ok(nodes)
}

/// What a source entry offers: its documents (with an upper bound of their text bytes where the
/// files tell it, see [`crate::size`]), and the dedup node's drop list when it takes part in
/// cross-source dedup (`dedup`, default true: the one rule, used by [`plan`] too).
/// `parquet_column`: the text column, for Parquet sources.
pub fn offers(entry: &Entry<'_>, ctx: &PlanContext<'_>, format: Option<Format>) -> Vec<Offer> {
    let parquet_column = match &format {
        Some(Format::Parquet { text_column }) => Some(text_column.as_str()),
        _ => None,
    };
    let root = &ctx.manifest.project_root;
    let patterns = entry.config.get("files").and_then(serde_json::Value::as_array);
    let files: Option<Vec<PathBuf>> = patterns.map(|patterns| {
        patterns
            .iter()
            .filter_map(serde_json::Value::as_str)
            .filter_map(|p| expand(root, p).ok())
            .flatten()
            .map(|f| ctx.manifest.input_path(&f))
            .collect()
    });
    let text_bytes = files.as_ref().and_then(|files| crate::size::text_bytes(files, parquet_column));
    let sample = files.zip(format).and_then(|(files, format)| text_sample(&files, &format));
    let mut offers =
        vec![Offer::new(Output::DOCUMENTS, entry.node_id()).with_text_bytes(text_bytes).with_text_sample(sample)];
    if takes_part_in_dedup(entry) {
        offers.push(Offer::new(Output::DEDUP_DROPS, crate::dedup::NODE_ID));
    }
    offers
}

/// The first documents of the first readable file, up to [`TEXT_SAMPLE_BYTES`] (before
/// cleaning: what the files hold). `None` when nothing can be read.
fn text_sample(files: &[PathBuf], format: &Format) -> Option<String> {
    let mut sample = String::new();
    let mut state = crate::read::ReadState { on_error: crate::config::OnError::Skip, skipped: 0 };
    let path = files.iter().find(|f| f.is_file())?;
    crate::read_file(path, format, &mut state, &mut |text| {
        if !sample.is_empty() {
            sample.push('\n');
        }
        sample.push_str(&text);
        sample.len() < TEXT_SAMPLE_BYTES
    })
    .ok()?;
    (!sample.is_empty()).then_some(sample)
}

/// Whether a source entry takes part in cross-source exact dedup: its `dedup` setting, default
/// true (the schema's default).
pub fn takes_part_in_dedup(entry: &Entry<'_>) -> bool {
    entry.config.get("dedup").and_then(serde_json::Value::as_bool).unwrap_or(crate::config::DEDUP_DEFAULT)
}

/// Expands one `file:` pattern relative to the project root into sorted `file:REL` references;
/// a pattern that matches nothing stands for itself.
fn expand(root: &Path, pattern: &str) -> Result<Vec<String>, (String, String, String)> {
    let Some(rel) = pattern.strip_prefix(FILE_PREFIX) else {
        return Err((
            format!("`{pattern}` is not a file reference"),
            "\"file:PATH\" or a glob such as \"file:data/*.jsonl.gz\"".to_string(),
            format!("write \"file:{pattern}\""),
        ));
    };
    let absolute = Path::new(rel).is_absolute();
    let full =
        if absolute { rel.to_string() } else { format!("{}/{rel}", glob::Pattern::escape(&root.to_string_lossy())) };
    let paths = glob::glob(&full).map_err(|e| {
        (
            format!("`{pattern}` is not a valid glob: {e}"),
            "a glob with `*`, `?`, `**` or `[...]`, e.g. \"file:shards/*.jsonl.gz\"".to_string(),
            "escape a literal `[` as `[[]`".to_string(),
        )
    })?;
    let mut files: Vec<PathBuf> = Vec::new();
    let mut matched_any = false;
    for path in paths {
        matched_any = true;
        let path = path.map_err(|e| {
            (
                format!("`{pattern}`: cannot read {}: {}", e.path().display(), e.error()),
                "a readable path".to_string(),
                "check the permissions".to_string(),
            )
        })?;
        if path.is_file() {
            files.push(path);
        }
    }
    // Nothing there (yet): the pattern itself is the input, so `aurora plan` lists it as missing
    // (a cluster's corpora are not on a laptop) and `aurora run` refuses to start without it.
    if !matched_any {
        return Ok(vec![pattern.to_owned()]);
    }
    if files.is_empty() {
        return Err((
            format!("`{pattern}` matches only directories"),
            "files (a directory of shards is `file:DIR/*.EXT`)".to_string(),
            format!("write a glob of the files, e.g. \"{pattern}/*.jsonl.gz\""),
        ));
    }
    files.sort();
    Ok(files
        .into_iter()
        .map(|f| {
            let shown = if absolute { f } else { f.strip_prefix(root).map(Path::to_path_buf).unwrap_or(f) };
            format!("{FILE_PREFIX}{}", shown.to_string_lossy().replace('\\', "/"))
        })
        .collect())
}

/// `source.json` (field order is part of the contract).
#[derive(Debug, Serialize)]
struct SourceJson<'a> {
    lang: &'a str,
    programming_language: Option<&'a str>,
    documents: u64,
    bytes: u64,
    heldout_documents: u64,
    heldout_bytes: u64,
    filters: Vec<FilterCount>,
    skipped_lines: u64,
}

#[derive(Debug, Clone, Serialize)]
struct FilterCount {
    name: &'static str,
    removed: u64,
}

#[derive(Serialize)]
struct Doc<'a> {
    text: &'a str,
}

/// What happened to one document.
enum Fate {
    Removed(usize),
    Kept { hash: [u8; HASH_LEN], heldout: bool },
}

struct Pipeline<'a> {
    filters: Vec<Compiled>,
    removed: Vec<u64>,
    heldout: Option<(String, f64)>,
    cap: Option<u64>,
    read: u64,
    batch: Vec<String>,
    documents: Writer,
    heldout_docs: Writer,
    hashes: BufWriter<File>,
    heldout_hashes: BufWriter<File>,
    error: Option<PluginError>,
    out_dir: &'a Path,
    progress: &'a dyn Progress,
    node_id: &'a str,
    /// Files finished and files in all, for progress reports.
    files: (u64, u64),
}

struct Writer {
    file: BufWriter<File>,
    documents: u64,
    bytes: u64,
}

impl Writer {
    fn write(&mut self, text: &str) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.file, &Doc { text })?;
        self.file.write_all(b"\n")?;
        self.documents += 1;
        self.bytes += text.len() as u64;
        Ok(())
    }
}

fn create(dir: &Path, name: &str) -> Result<BufWriter<File>, PluginError> {
    let path = dir.join(name);
    File::create(&path)
        .map(|f| BufWriter::with_capacity(1 << 20, f))
        .map_err(|e| PluginError::new(format!("cannot create {}: {e}", path.display())))
}

impl Pipeline<'_> {
    /// Takes one read document; `false` stops reading (cap reached or an error).
    fn push(&mut self, text: String) -> bool {
        if self.error.is_some() || self.cap.is_some_and(|cap| self.read >= cap) {
            return false;
        }
        self.read += 1;
        self.batch.push(text);
        if self.batch.len() >= BATCH {
            self.flush();
        }
        self.error.is_none() && self.cap.is_none_or(|cap| self.read < cap)
    }

    fn report(&self) {
        let (done, total) = self.files;
        self.progress.update(self.node_id, done, total, &format!("{} documents read", self.read));
    }

    /// Filters, hashes and writes the pending batch, in order.
    fn flush(&mut self) {
        self.report();
        let batch = std::mem::take(&mut self.batch);
        let filters = &self.filters;
        let heldout = &self.heldout;
        let fates: Vec<Fate> = batch
            .par_iter()
            .map(|text| {
                let stats = CharStats::of(text);
                if let Some(i) = filters.iter().position(|f| !f.keeps(text, &stats)) {
                    return Fate::Removed(i);
                }
                let normalized = normalize(text);
                let heldout = heldout.as_ref().is_some_and(|(salt, fraction)| is_heldout(salt, *fraction, &normalized));
                Fate::Kept { hash: doc_hash(&normalized), heldout }
            })
            .collect();
        let io = |e: std::io::Error, out: &Path| {
            PluginError::new(format!("cannot write the artifact in {}: {e}", out.display()))
        };
        for (text, fate) in batch.iter().zip(fates) {
            let result = match fate {
                Fate::Removed(i) => {
                    self.removed[i] += 1;
                    Ok(())
                }
                Fate::Kept { hash, heldout: true } => {
                    self.heldout_docs.write(text).and_then(|()| self.heldout_hashes.write_all(&hash))
                }
                Fate::Kept { hash, heldout: false } => {
                    self.documents.write(text).and_then(|()| self.hashes.write_all(&hash))
                }
            };
            if let Err(e) = result {
                self.error = Some(io(e, self.out_dir));
                return;
            }
        }
    }
}

/// Runs a source node: reads every input file in the node's format, cleans, splits and writes
/// `documents.jsonl`, `heldout.jsonl`, `hashes.bin`, `heldout_hashes.bin` and `source.json`.
pub fn execute(ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
    let keyed: Keyed = ctx.parse()?;
    let filters = keyed
        .filters
        .iter()
        .map(|f| Compiled::new(f, &keyed.lang))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PluginError::new(format!("{}: {}; {}", ctx.node_id, e.message, e.help)))?;
    let mut pipeline = Pipeline {
        removed: vec![0; filters.len()],
        filters,
        heldout: keyed.heldout.as_ref().filter(|h| h.fraction > 0.0).map(|h| (h.salt.clone(), h.fraction)),
        cap: keyed.max_documents,
        read: 0,
        batch: Vec::with_capacity(BATCH),
        documents: Writer { file: create(ctx.out_dir, DOCUMENTS)?, documents: 0, bytes: 0 },
        heldout_docs: Writer { file: create(ctx.out_dir, HELDOUT)?, documents: 0, bytes: 0 },
        hashes: create(ctx.out_dir, HASHES)?,
        heldout_hashes: create(ctx.out_dir, HELDOUT_HASHES)?,
        error: None,
        out_dir: ctx.out_dir,
        progress: ctx.progress,
        node_id: ctx.node_id,
        files: (0, ctx.inputs.len() as u64),
    };
    let mut state = ReadState { on_error: keyed.on_error, skipped: 0 };
    let files: Vec<&PathBuf> = ctx.inputs.values().collect();
    for (i, path) in files.iter().enumerate() {
        pipeline.files.0 = i as u64;
        pipeline.report();
        let more = crate::read_file(path, &keyed.reader, &mut state, &mut |text| pipeline.push(text))
            .map_err(|e| PluginError::new(e.to_string()))?;
        if let Some(e) = pipeline.error.take() {
            return Err(e);
        }
        if !more {
            break;
        }
    }
    pipeline.flush();
    if let Some(e) = pipeline.error.take() {
        return Err(e);
    }
    ctx.progress.update(
        ctx.node_id,
        files.len() as u64,
        files.len() as u64,
        &format!("{} documents read", pipeline.read),
    );
    for w in [
        &mut pipeline.documents.file,
        &mut pipeline.heldout_docs.file,
        &mut pipeline.hashes,
        &mut pipeline.heldout_hashes,
    ] {
        w.flush()
            .map_err(|e| PluginError::new(format!("cannot write the artifact in {}: {e}", ctx.out_dir.display())))?;
    }

    let counts: Vec<FilterCount> = keyed
        .filters
        .iter()
        .zip(&pipeline.removed)
        .map(|(f, &removed)| FilterCount { name: f.name(), removed })
        .collect();
    let _ = writeln!(
        ctx.log,
        "read {} documents from {} files ({} lines skipped)",
        pipeline.read,
        files.len(),
        state.skipped
    );
    for c in &counts {
        let _ = writeln!(ctx.log, "filter {}: removed {}", c.name, c.removed);
    }
    let _ = writeln!(
        ctx.log,
        "kept {} documents ({} bytes), held out {} ({} bytes)",
        pipeline.documents.documents,
        pipeline.documents.bytes,
        pipeline.heldout_docs.documents,
        pipeline.heldout_docs.bytes
    );

    if pipeline.documents.documents == 0 {
        return Err(PluginError::new(empty_message(ctx.node_id, &pipeline, &counts, state.skipped, files.len())));
    }

    let summary = SourceJson {
        lang: &keyed.lang,
        programming_language: keyed.programming_language.as_deref(),
        documents: pipeline.documents.documents,
        bytes: pipeline.documents.bytes,
        heldout_documents: pipeline.heldout_docs.documents,
        heldout_bytes: pipeline.heldout_docs.bytes,
        filters: counts.clone(),
        skipped_lines: state.skipped,
    };
    let mut text = serde_json::to_string_pretty(&summary).expect("source.json serialises");
    text.push('\n');
    std::fs::write(ctx.out_dir.join(SOURCE_JSON), text)
        .map_err(|e| PluginError::new(format!("cannot write {}: {e}", ctx.out_dir.join(SOURCE_JSON).display())))?;

    let mut metrics = serde_json::Map::new();
    metrics.insert("read_documents".into(), json!(pipeline.read));
    metrics.insert("documents".into(), json!(summary.documents));
    metrics.insert("bytes".into(), json!(summary.bytes));
    metrics.insert("heldout_documents".into(), json!(summary.heldout_documents));
    metrics.insert("heldout_bytes".into(), json!(summary.heldout_bytes));
    metrics.insert("skipped_lines".into(), json!(summary.skipped_lines));
    metrics.insert("removed".into(), Value::from(pipeline.removed.iter().sum::<u64>()));
    Ok(ExecOutcome { metrics })
}

/// Why a source ended up with no training documents, and what to do.
fn empty_message(node: &str, p: &Pipeline<'_>, counts: &[FilterCount], skipped: u64, files: usize) -> String {
    if p.read == 0 {
        let skipped = if skipped > 0 { format!(" ({skipped} unreadable lines were skipped)") } else { String::new() };
        return format!(
            "{node}: no documents were read from its {files} input file(s){skipped}; check that the files are not empty \
             and that the format settings (`text_field`, `split`, ...) match the data"
        );
    }
    let mut remaining = p.read;
    for (i, c) in counts.iter().enumerate() {
        remaining -= c.removed;
        if remaining == 0 {
            let table =
                counts.iter().map(|c| format!("{} removed {}", c.name, c.removed)).collect::<Vec<_>>().join(", ");
            return format!(
                "{node}: the source is empty after cleaning: filter {i} `{}` removed the last {} documents \
                 ({} read; {table}); relax the filter or check the data",
                c.name, c.removed, p.read
            );
        }
    }
    format!(
        "{node}: every one of the {} documents left after cleaning was held out; lower `heldout.fraction` or add data",
        p.heldout_docs.documents
    )
}
