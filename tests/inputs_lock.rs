//! The inputs lock end to end, on a small fake "external" tree the test writes (parquet shards
//! and `.jsonl.zst` shards, the formats the paper's corpora ship in): before the data exists
//! `plan` lists it as missing and `run` refuses; `aurora lock` records every shard; the lock enters
//! the manifest digest; a changed shard is a located error naming it (for `plan` and `run`),
//! restoring it plans again; an extra shard, a deleted shard and a lock from another manifest are
//! errors too; `plan --inputs` lists origins, licences, sizes and states.

mod common;

use std::sync::Arc;

use common::{Project, assert_code, stderr, stdout};
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde_json::Value;

const MANIFEST: &str = r#"
[experiment]
name = "lock-test"
seed = 1

[sources.web]
plugin = "source.parquet"
files = ["file:external/web/*.parquet"]
lang = "eng_Latn"
about = { origin = "example/web-corpus (Hugging Face)", revision = "r1", license = "ODC-By 1.0", note = "shares chosen here" }

[sources.code]
plugin = "source.jsonl"
files = ["file:external/code/*.jsonl.zst"]
lang = "code"
"#;

fn write_parquet(p: &Project, rel: &str, rows: &[&str]) {
    let path = p.path(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let schema = Arc::new(parse_message_type("message doc { REQUIRED BYTE_ARRAY text (UTF8); }").unwrap());
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, Arc::new(WriterProperties::builder().build())).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut column = group.next_column().unwrap().unwrap();
    let values: Vec<ByteArray> = rows.iter().map(|r| ByteArray::from(*r)).collect();
    column.typed::<ByteArrayType>().write_batch(&values, None, None).unwrap();
    column.close().unwrap();
    group.close().unwrap();
    writer.close().unwrap();
}

fn write_zst(p: &Project, rel: &str, lines: &[&str]) {
    let path = p.path(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text: String = lines.iter().map(|l| format!("{{\"text\": \"{l}\"}}\n")).collect();
    std::fs::write(&path, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
}

fn write_shards(p: &Project) {
    write_parquet(p, "external/web/part-000.parquet", &["the first web document, long enough", "a second one"]);
    write_parquet(p, "external/web/part-001.parquet", &["the third web document of the corpus"]);
    write_zst(p, "external/code/a.jsonl.zst", &["def f(x):\\n    return x + 1"]);
    write_zst(p, "external/code/b.jsonl.zst", &["print('hello, world')"]);
}

fn blake3_of(p: &Project, rel: &str) -> String {
    blake3::hash(&std::fs::read(p.path(rel)).unwrap()).to_hex().to_string()
}

#[test]
fn a_locked_corpus_is_checked_before_anything_runs() {
    let p = Project::new();
    p.write("aurora.toml", MANIFEST);

    // No data yet: the plan lists it, the run refuses, nothing can be locked.
    let plan = p.run(&["plan", "aurora.toml"]);
    assert_code(&plan, 0, "plan without the data");
    assert!(stdout(&plan).contains("input `external/web/*.parquet` is missing (needed before `aurora run`)"));
    let run = p.run(&["run", "aurora.toml"]);
    assert_code(&run, 2, "run without the data");
    assert!(stderr(&run).contains("external/web/*.parquet` matches no file"), "{}", stderr(&run));
    let lock = p.run(&["lock", "aurora.toml"]);
    assert_code(&lock, 2, "lock without the data");
    insta::assert_snapshot!("lock_without_data", p.redact(&stderr(&lock)));

    write_shards(&p);
    let unlocked_digest = p.digest(&["aurora.toml"]);
    let lock = p.run(&["lock", "aurora.toml"]);
    assert_code(&lock, 0, "lock");
    assert!(stderr(&lock).contains("locked 4 file(s)"), "{}", stderr(&lock));
    let written: toml::Value = toml::from_str(&p.read("aurora.inputs.lock")).unwrap();
    assert_eq!(written["manifest"].as_str(), Some("aurora.toml"));
    let inputs = written["input"].as_array().unwrap();
    let references: Vec<&str> = inputs.iter().map(|i| i["reference"].as_str().unwrap()).collect();
    assert_eq!(references, ["file:external/code/*.jsonl.zst", "file:external/web/*.parquet"]);
    let web = inputs[1]["files"].as_array().unwrap();
    assert_eq!(web.len(), 2);
    assert_eq!(web[0]["path"].as_str(), Some("external/web/part-000.parquet"));
    assert_eq!(web[0]["blake3"].as_str(), Some(blake3_of(&p, "external/web/part-000.parquet").as_str()));
    let size = std::fs::metadata(p.path("external/web/part-000.parquet")).unwrap().len();
    assert_eq!(web[0]["size"].as_integer(), Some(size as i64));

    // The lock is part of the manifest digest: a run record names the bytes, not just paths.
    let locked_digest = p.digest(&["aurora.toml"]);
    assert_ne!(unlocked_digest, locked_digest);
    assert_code(&p.run(&["plan", "aurora.toml"]), 0, "plan of the locked data");

    // One shard rewritten: plan and run both name it, at the glob that reads it.
    let original = std::fs::read(p.path("external/web/part-001.parquet")).unwrap();
    write_parquet(&p, "external/web/part-001.parquet", &["the third web document, edited"]);
    let plan = p.run(&["plan", "aurora.toml"]);
    assert_code(&plan, 2, "plan of a changed shard");
    insta::assert_snapshot!("changed_shard", p.redact(&stderr(&plan)));
    let run = p.run(&["run", "aurora.toml"]);
    assert_code(&run, 2, "run of a changed shard");
    assert!(stderr(&run).contains("`external/web/part-001.parquet` changed since aurora.inputs.lock was written"));
    assert!(!p.store().join("artifacts").exists() || p.artifact_node_keys().is_empty(), "nothing ran");
    std::fs::write(p.path("external/web/part-001.parquet"), &original).unwrap();
    assert_code(&p.run(&["plan", "aurora.toml"]), 0, "plan after restoring the shard");
    assert_eq!(p.digest(&["aurora.toml"]), locked_digest);

    // An extra shard under the glob, then a locked shard gone.
    write_zst(&p, "external/code/c.jsonl.zst", &["x = 1"]);
    let plan = p.run(&["plan", "aurora.toml"]);
    assert_code(&plan, 2, "plan with an extra shard");
    assert!(
        stderr(&plan).contains(
            "`external/code/c.jsonl.zst` matches `file:external/code/*.jsonl.zst` but is not in \
                                aurora.inputs.lock"
        ),
        "{}",
        stderr(&plan)
    );
    std::fs::remove_file(p.path("external/code/c.jsonl.zst")).unwrap();
    std::fs::remove_file(p.path("external/code/b.jsonl.zst")).unwrap();
    let plan = p.run(&["plan", "aurora.toml"]);
    assert_code(&plan, 0, "plan with a locked shard missing (listed, not refused)");
    assert!(stderr(&plan).contains("note: `external/code/b.jsonl.zst` is locked in aurora.inputs.lock"));
    let run = p.run(&["run", "aurora.toml"]);
    assert_code(&run, 2, "run with a locked shard missing");
    assert!(stderr(&run).contains("`external/code/b.jsonl.zst` is locked in aurora.inputs.lock"));
    write_zst(&p, "external/code/b.jsonl.zst", &["print('hello, world')"]);

    // What to fetch, for people and for scripts.
    let inputs = p.run_ok(&["plan", "aurora.toml", "--inputs"]);
    insta::assert_snapshot!("inputs_table", p.redact(&inputs));
    let rows: Value = serde_json::from_str(&p.run_ok(&["plan", "aurora.toml", "--inputs", "--json"])).unwrap();
    let web = &rows.as_array().unwrap()[1];
    assert_eq!(web["path"], "external/web/*.parquet");
    assert_eq!(web["format"], "parquet");
    assert_eq!(
        (web["present"].as_bool(), web["locked"].as_bool(), web["files"].as_u64()),
        (Some(true), Some(true), Some(2))
    );
    assert_eq!(
        (web["origin"].as_str(), web["license"].as_str()),
        (Some("example/web-corpus (Hugging Face)"), Some("ODC-By 1.0"))
    );

    // A lock that does not parse stops plan, and `aurora lock` rewrites it.
    p.write("aurora.inputs.lock", "version = 1\nthis is not a lock\n");
    let broken = p.run(&["plan", "aurora.toml"]);
    assert_code(&broken, 2, "a broken lock");
    assert!(stderr(&broken).contains("not a valid inputs lock"), "{}", stderr(&broken));
    let relock = p.run(&["lock", "aurora.toml"]);
    assert_code(&relock, 0, "relocking over a broken lock");
    assert!(stderr(&relock).contains("writing a new one"), "{}", stderr(&relock));
    assert_eq!(p.digest(&["aurora.toml"]), locked_digest);

    // A lock copied beside another manifest is refused, naming both.
    p.write("other.toml", MANIFEST);
    std::fs::copy(p.path("aurora.inputs.lock"), p.path("other.inputs.lock")).unwrap();
    let other = p.run(&["plan", "other.toml"]);
    assert_code(&other, 2, "a lock of another manifest");
    assert!(
        stderr(&other).contains("this inputs lock was written for `aurora.toml`, not `other.toml`"),
        "{}",
        stderr(&other)
    );
}

/// `about` documents an entry; a field it does not know (a British `licence`) or a value that
/// is not a string is a located error, and it never changes a key or the digest.
#[test]
fn about_is_documentation_checked_for_its_fields() {
    let p = Project::new();
    let with = MANIFEST.replace("ODC-By 1.0", "CC0");
    p.write("a.toml", &with);
    p.write("b.toml", &MANIFEST.replace(r#"about = { origin = "example/web-corpus (Hugging Face)", revision = "r1", license = "ODC-By 1.0", note = "shares chosen here" }"#, ""));
    assert_eq!(p.digest(&["a.toml"]), p.digest(&["b.toml"]), "about is not in the digest");
    p.write(
        "bad.toml",
        &MANIFEST.replace("license = \"ODC-By 1.0\"", "licence = \"ODC-By 1.0\", revision_date = 2024"),
    );
    let out = p.run(&["plan", "bad.toml"]);
    assert_code(&out, 2, "an about table with unknown fields");
    insta::assert_snapshot!("about_unknown_fields", p.redact(&stderr(&out)));
}

/// A directory input (here reached through a link, as a checkpoint directory on another disk
/// often is) is locked file by file; a changed file inside is named.
#[test]
fn a_directory_input_is_locked_file_by_file() {
    let p = Project::new();
    p.write("elsewhere/ckpt/config.json", "{}\n");
    p.write("elsewhere/ckpt/shards/model-1.safetensors", "weights one\n");
    std::os::unix::fs::symlink(p.path("elsewhere/ckpt"), p.path("ckpt")).unwrap();
    p.write(
        "aurora.toml",
        "[experiment]\nname = \"dir\"\nseed = 1\n\n[steps.read]\nplugin = \"exec.command\"\nargv = [\"true\"]\ninputs \
         = { ckpt = \"file:ckpt\" }\n",
    );
    assert_code(&p.run(&["lock", "aurora.toml"]), 0, "lock a directory");
    let written: toml::Value = toml::from_str(&p.read("aurora.inputs.lock")).unwrap();
    let paths: Vec<&str> =
        written["input"][0]["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["ckpt/config.json", "ckpt/shards/model-1.safetensors"]);
    p.write("elsewhere/ckpt/shards/model-1.safetensors", "weights two\n");
    let plan = p.run(&["plan", "aurora.toml"]);
    assert_code(&plan, 2, "a changed file inside a locked directory");
    assert!(
        stderr(&plan).contains("`ckpt/shards/model-1.safetensors` changed since aurora.inputs.lock"),
        "{}",
        stderr(&plan)
    );
}
