//! Mixtures end to end: manifests planned and run by aurora-core, with test-only source, dedup and
//! trainer plugins standing in for the corpus and trainer crates (same artifact contract).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aurora_core::diagnostic::{Diagnostic, Diagnostics};
use aurora_core::execute::{NodeReport, NodeStatus, RunOptions, Silent};
use aurora_core::manifest::{ResolveOptions, resolve};
use aurora_core::plan::{Plan, plan};
use aurora_core::plugin::{
    Entry, ExecContext, ExecOutcome, InputSource, InputSpec, NoProgress, NodeSpec, Offer, Output, PlanContext, Plugin,
    PluginError,
};
use aurora_core::{Digest, Store};
use aurora_tokens::loader::MixtureReader;
use aurora_tokens::megatron::{DType, IndexedWriter};
use aurora_tokens::mixture::{MixtureInfo, blend};
use aurora_tokens::store::TokenStore;
use common::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

// ---- test-only plugins ----

/// A text source: one document per JSON line (`text`) of a `.jsonl`, or per line of any other file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TestDocsConfig {
    path: String,
    lang: String,
    #[serde(default = "yes")]
    dedup: bool,
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default)]
struct TestDocs;
aurora_core::register_plugin!(TestDocs);

impl Plugin for TestDocs {
    fn id(&self) -> &'static str {
        "source.testdocs"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "test source"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(TestDocsConfig)
    }
    fn offers(&self, entry: &Entry<'_>, _ctx: &PlanContext<'_>) -> Vec<Offer> {
        let mut offers = vec![Offer::new(Output::DOCUMENTS, entry.node_id())];
        if entry.config.get("dedup") != Some(&json!(false)) {
            offers.push(Offer::new(Output::DEDUP_DROPS, "dedup/exact"));
        }
        offers
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let c: TestDocsConfig = entry.parse(ctx.manifest)?;
        let mut nodes = vec![NodeSpec {
            id: entry.node_id(),
            plugin: None,
            config: json!({ "lang": c.lang }),
            inputs: BTreeMap::from([(
                "file".to_string(),
                InputSpec { source: InputSource::Path(c.path.clone()), pointer: entry.pointer() },
            )]),
            pointer: entry.pointer(),
        }];
        if c.dedup {
            // As aurora-corpus does: every deduplicated source plans the identical `dedup/exact`.
            let mut inputs = BTreeMap::new();
            for source in ctx.offering(Output::DEDUP_DROPS) {
                let documents = ctx.offer(&source, Output::DOCUMENTS).unwrap();
                inputs.insert(
                    source.name.to_string(),
                    InputSpec { source: InputSource::Node(documents), pointer: entry.pointer() },
                );
            }
            nodes.push(NodeSpec {
                id: "dedup/exact".into(),
                plugin: Some("dedup.exact"),
                config: json!({}),
                inputs,
                pointer: entry.pointer(),
            });
        }
        Ok(nodes)
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        let path = &ctx.inputs["file"];
        let text = std::fs::read_to_string(path).unwrap();
        let texts: Vec<String> = if path.extension().is_some_and(|e| e == "jsonl") {
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str::<Value>(l).unwrap()["text"].as_str().unwrap().to_string())
                .collect()
        } else {
            text.lines().map(str::to_string).collect()
        };
        write_documents(ctx.out_dir, ctx.config["lang"].as_str().unwrap(), &texts);
        Ok(ExecOutcome::default())
    }
}

/// Exact dedup by text equality, per the contract: first occurrence kept, sources in name order.
#[derive(Debug, Clone, Default)]
struct TestDedup;
aurora_core::register_plugin!(TestDedup);

impl Plugin for TestDedup {
    fn id(&self) -> &'static str {
        "dedup.exact"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "test dedup"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::json_schema!({ "type": "object" })
    }
    fn plan(&self, _: &Entry<'_>, _: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        Err(Diagnostic::new("not an entry").into())
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        let mut seen = BTreeSet::new();
        std::fs::create_dir_all(ctx.out_dir.join("drop")).unwrap();
        for (name, dir) in ctx.inputs {
            let mut drop = String::new();
            for (i, line) in std::fs::read_to_string(dir.join("documents.jsonl")).unwrap().lines().enumerate() {
                if !seen.insert(line.to_string()) {
                    drop.push_str(&format!("{i}\n"));
                }
            }
            std::fs::write(ctx.out_dir.join(format!("drop/{name}.txt")), drop).unwrap();
        }
        std::fs::write(ctx.out_dir.join("dedup.json"), "{}").unwrap();
        Ok(ExecOutcome::default())
    }
}

/// A trainer entry that only carries a parallel layout and consumes a mixture.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct LayoutConfig {
    data: String,
    dp: u64,
    tp: u64,
}

#[derive(Debug, Clone, Default)]
struct TestTrainer;
aurora_core::register_plugin!(TestTrainer);

impl Plugin for TestTrainer {
    fn id(&self) -> &'static str {
        "trainer.testlayout"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "test trainer"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(LayoutConfig)
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let c: LayoutConfig = entry.parse(ctx.manifest)?;
        Ok(vec![NodeSpec {
            id: entry.node_id(),
            plugin: None,
            config: json!({ "dp": c.dp, "tp": c.tp }),
            inputs: BTreeMap::from([(
                "data".to_string(),
                InputSpec { source: InputSource::Node(ctx.entry_ref(&c.data).unwrap()), pointer: entry.pointer() },
            )]),
            pointer: entry.pointer(),
        }])
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        std::fs::write(ctx.out_dir.join("layout.json"), ctx.config.to_string()).unwrap();
        Ok(ExecOutcome::default())
    }
}

// ---- helpers ----

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(manifest: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("aurora.toml"), manifest).unwrap();
        Project { dir }
    }
    fn path(&self) -> PathBuf {
        self.dir.path().join("aurora.toml")
    }
    fn plan(&self) -> Result<Plan, Diagnostics> {
        let m = resolve(&self.path(), &ResolveOptions::default())?;
        plan(m)
    }
    fn errors(&self) -> String {
        match self.plan() {
            Ok(_) => "planned".into(),
            Err(d) => d.to_string().replace(&self.dir.path().display().to_string(), "<project>"),
        }
    }
    /// Runs the whole plan in a fresh store; returns (store, reports by node id).
    fn run(&self, store_name: &str) -> (Store, BTreeMap<String, NodeReport>) {
        let plan = self.plan().unwrap_or_else(|d| panic!("{d}"));
        let store = Store::open(&self.dir.path().join(store_name)).unwrap();
        let options = RunOptions { jobs: 2, ..RunOptions::default() };
        let reports = aurora_core::execute::run(&plan, &store, &options, &Silent, &NoProgress).unwrap();
        (store, reports.into_iter().map(|r| (r.id.clone(), r)).collect())
    }
}

fn artifact(store: &Store, reports: &BTreeMap<String, NodeReport>, id: &str) -> PathBuf {
    let r = &reports[id];
    assert_eq!(r.status, NodeStatus::Executed, "{id}: {:?}", r.error);
    store.artifact_dir(&r.artifact.unwrap())
}

fn digest(reports: &BTreeMap<String, NodeReport>, id: &str) -> (Digest, Digest) {
    (reports[id].key.unwrap(), reports[id].artifact.unwrap())
}

const LANGS: [(&str, &str); 5] = [
    ("eng_web", "eng_Latn"),
    ("fin_web", "fin_Latn"),
    ("hin_web", "hin_Deva"),
    ("jpn_web", "jpn_Jpan"),
    ("vie_web", "vie_Latn"),
];

fn sample_sources() -> String {
    let mut m = String::from("[experiment]\nname = \"mix\"\nseed = 1234\n\n");
    for (name, lang) in LANGS {
        let path = sample_corpus().join(format!("{lang}.jsonl"));
        let path = path.canonicalize().unwrap();
        m.push_str(&format!(
            "[sources.{name}]\nplugin = \"source.testdocs\"\npath = \"file:{}\"\nlang = \"{lang}\"\n\n",
            path.display()
        ));
    }
    m.push_str(
        "[tokenizers.bpe]\nplugin = \"tokenizer.bpe\"\nvocab_size = 600\nsample = [\"sources.eng_web\", \"sources.fin_web\"]\n\n",
    );
    m
}

fn sample_manifest(dp: u64) -> String {
    let mut m = sample_sources();
    m.push_str(&format!(
        r#"[mixtures.cap]
plugin = "mixer.blend"
tokenizer = "tokenizers.bpe"
weights = {{ eng_web = 0.4, fin_web = 0.2, hin_web = 0.15, jpn_web = 0.15, vie_web = 0.1 }}
tokens = 40000
seq_len = 64

[mixtures.cat]
plugin = "mixer.blend"
tokenizer = "tokenizers.bpe"
weights = {{ eng_web = 1, fin_web = 1 }}
tokens = 8000
seq_len = 32
max_repetition = 2.0

[train.cap]
plugin = "trainer.testlayout"
data = "mixtures.cap"
dp = {dp}
tp = 1
"#
    ));
    m
}

fn stores_of(
    store: &Store,
    reports: &BTreeMap<String, NodeReport>,
    info: &MixtureInfo,
    tokenizer: &str,
) -> BTreeMap<String, PathBuf> {
    info.sources
        .iter()
        .map(|s| {
            let id = format!("tokens/{tokenizer}/{}", s.name);
            let id = if reports.contains_key(&id) { id } else { format!("sources/{}", s.name) };
            (s.name.clone(), artifact(store, reports, &id))
        })
        .collect()
}

fn read_info(dir: &Path) -> MixtureInfo {
    serde_json::from_str(&std::fs::read_to_string(dir.join("mixture.json")).unwrap()).unwrap()
}

// ---- tests ----

#[test]
fn mixtures_share_token_stores_and_follow_megatrons_blend() {
    let project = Project::new(&sample_manifest(2));
    let plan = project.plan().unwrap();
    let ids: Vec<&str> = plan.nodes.iter().map(|n| n.id.as_str()).collect();
    // One token store per source, shared by both mixtures; one dedup node.
    for (name, _) in LANGS {
        assert_eq!(ids.iter().filter(|i| **i == format!("tokens/bpe/{name}")).count(), 1, "{ids:?}");
    }
    assert!(ids.contains(&"dedup/exact"));
    let tokens_node = plan.node("tokens/bpe/eng_web").unwrap();
    assert_eq!(tokens_node.plugin.id(), "tokenizer.encode");
    assert!(tokens_node.inputs.contains_key("dedup"), "the source has dedup on by default");

    let (store, reports) = project.run("store");
    let cap = artifact(&store, &reports, "mixtures/cap");
    let info = read_info(&cap);
    assert_eq!(info.samples, 40000u64.div_ceil(64));
    assert_eq!(info.tokens, info.samples * 64);
    assert_eq!(info.sources.iter().map(|s| s.samples).sum::<u64>(), info.samples);
    assert_eq!(info.languages.values().map(|l| l.tokens).sum::<u64>(), info.tokens);
    assert_eq!(info.languages["fin_Latn"].tokens, info.sources[1].tokens_consumed);

    // The blend is Megatron's rule: recompute it independently and compare every sample.
    let total: f64 = info.sources.iter().map(|s| s.weight).sum();
    let shares: Vec<f64> = info.sources.iter().map(|s| s.weight / total).collect();
    let mut counts = vec![0u64; shares.len()];
    let mut expected = Vec::new();
    for i in 0..info.samples {
        let errs: Vec<f64> = shares.iter().zip(&counts).map(|(w, &c)| w * (i.max(1) as f64) - c as f64).collect();
        let best = (0..errs.len()).fold(0, |b, d| if errs[d] > errs[b] { d } else { b });
        expected.push((best, counts[best]));
        counts[best] += 1;
    }
    let reader = MixtureReader::open(&cap, &stores_of(&store, &reports, &info, "bpe")).unwrap();
    assert_eq!(reader.len(), info.samples);
    for k in 0..info.samples {
        assert_eq!(reader.locate(k), expected[k as usize], "sample {k}");
    }
    for (s, &c) in info.sources.iter().zip(&counts) {
        assert_eq!(s.samples, c);
        assert!(
            (c as f64 - s.share * info.samples as f64).abs() <= 1.0,
            "{}: {c} samples for share {}",
            s.name,
            s.share
        );
    }

    // Each sample is seq_len + 1 tokens of its source's stream (epochs of shuffled documents),
    // consecutive samples of a source overlapping by one token.
    for (d, s) in info.sources.iter().enumerate() {
        let tstore = TokenStore::open(&stores_of(&store, &reports, &info, "bpe")[&s.name]).unwrap();
        let docs: Vec<u32> = std::fs::read(cap.join(format!("sources/{}.docs", s.name)))
            .unwrap()
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let n = s.documents as usize;
        for (e, epoch) in docs.chunks(n).enumerate() {
            let distinct: BTreeSet<u32> = epoch.iter().copied().collect();
            assert_eq!(distinct.len(), epoch.len(), "epoch {e} of {} repeats a document", s.name);
            if epoch.len() == n {
                assert_ne!(epoch, (0..n as u32).collect::<Vec<_>>(), "epoch {e} of {} is not shuffled", s.name);
            }
        }
        let stream: Vec<u32> = docs.iter().flat_map(|&doc| tstore.dataset.document(doc as u64).to_vec()).collect();
        let ks: Vec<u64> = (0..info.samples).filter(|&k| reader.locate(k).0 == d).collect();
        for (j, &k) in ks.iter().enumerate() {
            let start = j * 64;
            assert_eq!(reader.sample(k), stream[start..start + 65].to_vec(), "{} sample {j}", s.name);
        }
        assert!(s.epochs as usize * n >= docs.len());
        assert!((s.repetition - s.tokens_read as f64 / s.tokens_available as f64).abs() < 1e-12);
    }

    // Random access equals sequential access.
    let fresh = MixtureReader::open(&cap, &stores_of(&store, &reports, &info, "bpe")).unwrap();
    let last = info.samples - 1;
    let direct = fresh.sample(last);
    for k in 0..last {
        let _ = reader.sample(k);
    }
    assert_eq!(reader.sample(last), direct);
    assert_eq!(fresh.sample(300), reader.sample(300));
}

#[test]
fn same_manifest_twice_gives_byte_identical_artifacts_and_the_layout_does_not_touch_the_mixture() {
    let a = Project::new(&sample_manifest(2));
    let (store_a, ra) = a.run("store");
    let (store_b, rb) = a.run("store-again");
    for id in ["tokens/bpe/eng_web", "tokens/bpe/jpn_web", "mixtures/cap", "mixtures/cat", "tokenizers/bpe"] {
        assert_eq!(digest(&ra, id), digest(&rb, id), "{id}");
        assert_eq!(dir_bytes(&artifact(&store_a, &ra, id)), dir_bytes(&artifact(&store_b, &rb, id)), "{id}");
    }
    // A different parallel layout: the trainer's key changes, the mixture's key and bytes do not.
    let c = Project::new(&sample_manifest(8));
    let (_, rc) = c.run("store");
    assert_ne!(ra["train/cap"].key, rc["train/cap"].key);
    assert_eq!(digest(&ra, "mixtures/cap"), digest(&rc, "mixtures/cap"));
}

#[test]
fn dedup_drops_documents_seen_in_an_earlier_source() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.txt");
    let b = dir.path().join("b.txt");
    std::fs::write(&a, "yksi\nkaksi\nkolme\n").unwrap();
    std::fs::write(&b, "kaksi\nneljä\nyksi\nviisi\n").unwrap();
    let mut m = String::from("[experiment]\nname = \"d\"\nseed = 1\n\n");
    for (name, path) in [("a_src", &a), ("b_src", &b)] {
        m.push_str(&format!(
            "[sources.{name}]\nplugin = \"source.testdocs\"\npath = \"file:{}\"\nlang = \"fin_Latn\"\n\n",
            path.display()
        ));
    }
    m.push_str(&format!(
        "[sources.c_src]\nplugin = \"source.testdocs\"\npath = \"file:{}\"\nlang = \"fin_Latn\"\ndedup = false\n\n",
        b.display()
    ));
    m.push_str("[tokenizers.bpe]\nplugin = \"tokenizer.bpe\"\nvocab_size = 300\nmin_frequency = 1\nsample = [\"sources.a_src\"]\n\n");
    m.push_str("[mixtures.m]\nplugin = \"mixer.blend\"\ntokenizer = \"tokenizers.bpe\"\nweights = { a_src = 1, b_src = 1, c_src = 1 }\ntokens = 30\nseq_len = 5\n");
    let project = Project::new(&m);
    let plan = project.plan().unwrap();
    assert!(!plan.node("tokens/bpe/c_src").unwrap().inputs.contains_key("dedup"));
    let (store, reports) = project.run("store");
    let b_store = TokenStore::open(&artifact(&store, &reports, "tokens/bpe/b_src")).unwrap();
    assert_eq!((b_store.info.documents, b_store.info.dropped_duplicates), (2, 2));
    let c_store = TokenStore::open(&artifact(&store, &reports, "tokens/bpe/c_src")).unwrap();
    assert_eq!((c_store.info.documents, c_store.info.dropped_duplicates), (4, 0));
}

#[test]
fn a_source_too_small_for_its_share_fails_with_the_numbers() {
    let mut m = sample_sources();
    m.push_str(
        "[mixtures.big]\nplugin = \"mixer.blend\"\ntokenizer = \"tokenizers.bpe\"\nweights = { eng_web = 0.9, fin_web = 0.1 }\ntokens = 1000000\nseq_len = 100\nmax_repetition = 4.0\n",
    );
    let project = Project::new(&m);
    let (store, reports) = project.run("store");
    let eng = TokenStore::open(&artifact(&store, &reports, "tokens/bpe/eng_web")).unwrap();
    let r = &reports["mixtures/big"];
    assert_eq!(r.status, NodeStatus::Failed);
    let msg = r.error.clone().unwrap();
    // The message carries the actual numbers: available tokens, tokens needed, factor, limit.
    let needed = 9000 * 100 + 1;
    assert!(msg.contains(&format!("`eng_web`: {} tokens available, {needed} needed", eng.info.tokens)), "{msg}");
    assert!(
        msg.contains(&format!("repetition {:.2} > max_repetition 4", needed as f64 / eng.info.tokens as f64)),
        "{msg}"
    );
    assert!(msg.contains("raise `max_repetition`"), "{msg}");
    insta::assert_snapshot!(msg);
}

#[test]
fn plan_errors_are_located() {
    let mut m = sample_sources();
    m.push_str(
        r#"[mixtures.cap]
plugin = "mixer.blend"
tokenizer = "tokenizers.bpe"
weights = { eng_wbe = 0.4, fin_web = 0, hin_web = -1.5 }
tokens = 1000
seq_len = 64
max_repetition = 0.5

[mixtures.empty]
plugin = "mixer.blend"
tokenizer = "tokenizers.bep"
weights = {}
tokens = 1000
seq_len = 64
"#,
    );
    insta::assert_snapshot!(Project::new(&m).errors());
}

#[test]
fn non_finite_weights_are_rejected_before_planning() {
    let mut m = sample_sources();
    m.push_str("[mixtures.cap]\nplugin = \"mixer.blend\"\ntokenizer = \"tokenizers.bpe\"\nweights = { eng_web = inf }\ntokens = 1000\nseq_len = 64\n");
    let errors = Project::new(&m).errors();
    assert!(errors.contains("weights.eng_web") || errors.contains("inf"), "{errors}");
    insta::assert_snapshot!(errors);
}

#[test]
fn tokens_encode_is_not_an_entry() {
    let mut m = sample_sources();
    m.push_str("[steps.tok]\nplugin = \"tokenizer.encode\"\nsource = \"eng_web\"\ndedup = false\n");
    insta::assert_snapshot!(Project::new(&m).errors());
}

#[test]
fn megatron_sources_mix_with_text_sources() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("code");
    let mut w = IndexedWriter::create(&prefix, DType::U16).unwrap();
    for d in 0..200u32 {
        let doc: Vec<u32> = (0..(5 + d % 17)).map(|i| (d * 31 + i * 7) % 599 + 1).chain([0]).collect();
        w.add_document(&doc).unwrap();
    }
    w.finish().unwrap();
    let mut m = sample_sources();
    m.push_str(&format!(
        "[sources.code]\nplugin = \"source.megatron\"\nprefix = \"file:{}\"\nlang = \"code\"\nprogramming_language = \"python\"\nvocab_size = 600\neod_id = 0\n\n",
        prefix.display()
    ));
    m.push_str("[mixtures.cap]\nplugin = \"mixer.blend\"\ntokenizer = \"tokenizers.bpe\"\nweights = { eng_web = 3, code = 1 }\ntokens = 6400\nseq_len = 16\n");
    let project = Project::new(&m);
    let plan = project.plan().unwrap();
    assert!(plan.node("tokens/bpe/code").is_none(), "an already tokenized source is not tokenized again");
    assert!(
        matches!(&plan.node("mixtures/cap").unwrap().inputs["store:code"].source, InputSource::Node(id) if id == "sources/code")
    );
    let (store, reports) = project.run("store");
    let cap = artifact(&store, &reports, "mixtures/cap");
    let info = read_info(&cap);
    assert_eq!(info.languages["code"].tokens, info.sources[0].tokens_consumed);
    assert_eq!(info.sources[0].name, "code");
    let reader = MixtureReader::open(&cap, &stores_of(&store, &reports, &info, "bpe")).unwrap();
    for k in 0..reader.len() {
        assert_eq!(reader.sample(k).len(), 17);
    }

    // A vocabulary that is not the tokenizer's fails with both sizes.
    let m2 = m.replace("vocab_size = 600\neod_id", "vocab_size = 700\neod_id");
    let (_, reports) = Project::new(&m2).run("store");
    let err = reports["mixtures/cap"].error.clone().unwrap();
    assert!(
        err.contains("source `code` was tokenized with a vocabulary of 700 but the mixture's tokenizer has 600"),
        "{err}"
    );
}

#[test]
fn the_reader_refuses_a_store_that_is_not_the_mixtures() {
    let project = Project::new(&sample_manifest(2));
    let (store, reports) = project.run("store");
    let cap = artifact(&store, &reports, "mixtures/cap");
    let info = read_info(&cap);
    let mut stores = stores_of(&store, &reports, &info, "bpe");
    let fin = stores["fin_web"].clone();
    stores.insert("eng_web".into(), fin);
    let err = MixtureReader::open(&cap, &stores).err().unwrap().to_string();
    assert!(err.contains("is not the one the mixture was built from"), "{err}");
    stores.remove("eng_web");
    let err = MixtureReader::open(&cap, &stores).err().unwrap().to_string();
    assert!(err.starts_with("no token store given for source `eng_web`"), "{err}");
}

#[test]
fn blend_counts_track_the_weights() {
    let shares = [0.5, 0.3, 0.2];
    let mut seen = Vec::new();
    let counts = blend(&shares, 1000, |d, j| seen.push((d, j)));
    assert_eq!(counts, vec![500, 300, 200]);
    // Megatron's first samples for these weights: 0 (ties at i = 0 and 1 go to the lowest index).
    assert_eq!(&seen[..5], &[(0, 0), (1, 0), (2, 0), (0, 1), (1, 1)]);
}

// ---- FLORES with GPT-2: the same manifest twice ----

#[test]
fn flores_with_gpt2_twice_is_byte_identical() {
    let Some(data) = shared_data() else { return };
    let mut m = String::from("[experiment]\nname = \"flores\"\nseed = 7\n\n");
    let mut weights = Vec::new();
    for (name, lang) in LANGS {
        let path = data.join(format!("flores200/{lang}.devtest")).canonicalize().unwrap();
        m.push_str(&format!(
            "[sources.{name}]\nplugin = \"source.testdocs\"\npath = \"file:{}\"\nlang = \"{lang}\"\n\n",
            path.display()
        ));
        weights.push(format!("{name} = 1"));
    }
    m.push_str(&format!(
        "[tokenizers.gpt2]\nplugin = \"tokenizer.file\"\npath = \"file:{}\"\n\n",
        data.join("tokenizer/gpt2_tokenizer.json").display()
    ));
    m.push_str(&format!(
        "[mixtures.cap]\nplugin = \"mixer.blend\"\ntokenizer = \"tokenizers.gpt2\"\nweights = {{ {} }}\ntokens = 200000\nseq_len = 128\n",
        weights.join(", ")
    ));
    let project = Project::new(&m);
    let (sa, ra) = project.run("a");
    let (sb, rb) = project.run("b");
    for id in ["tokens/gpt2/eng_web", "tokens/gpt2/hin_web", "tokens/gpt2/jpn_web", "mixtures/cap"] {
        assert_eq!(digest(&ra, id), digest(&rb, id), "{id}");
        assert_eq!(dir_bytes(&artifact(&sa, &ra, id)), dir_bytes(&artifact(&sb, &rb, id)), "{id}");
    }
    let cap = artifact(&sa, &ra, "mixtures/cap");
    let info = read_info(&cap);
    assert_eq!(info.vocab_size, 50257);
    assert_eq!(info.eod_id, 50256);
    let reader = MixtureReader::open(&cap, &stores_of(&sa, &ra, &info, "gpt2")).unwrap();
    let tok = tokenizers::Tokenizer::from_file(data.join("tokenizer/gpt2_tokenizer.json")).unwrap();
    // Decoded samples are text of the sources: every FLORES line inside a sample is a real line.
    let text = tok.decode(&reader.sample(0), false).unwrap();
    assert!(text.contains("<|endoftext|>"), "{text}");
    eprintln!("{}", serde_json::to_string_pretty(&info.languages).unwrap());
}

#[test]
fn tokenizer_and_megatron_source_plan_errors_are_located() {
    let m = r#"[experiment]
name = "e"
seed = 1

[sources.code]
plugin = "source.megatron"
prefix = "file:data/code.idx"
lang = "code"
vocab_size = 49152

[tokenizers.small]
plugin = "tokenizer.bpe"
vocab_size = 258
special_tokens = ["<|endoftext|>", "<|endoftext|>"]
sample = ["eng_web"]

[tokenizers.starcoder]
plugin = "tokenizer.file"
path = "data/tokenizer.json"
"#;
    insta::assert_snapshot!(Project::new(m).errors());
}

/// A zero weight leaves a source out exactly as if it were not listed (same node key), so an
/// ablation extending a manifest can drop a source; all-zero weights are an error.
#[test]
fn a_zero_weight_is_the_same_as_leaving_the_source_out() {
    let base = sample_manifest(1);
    let zeroed =
        base.replace("weights = { eng_web = 1, fin_web = 1 }", "weights = { eng_web = 1, fin_web = 1, hin_web = 0 }");
    assert_ne!(base, zeroed);
    let key_of = |text: &str| {
        let p = Project::new(text);
        let plan = p.plan().unwrap_or_else(|d| panic!("{d}"));
        let node = plan.nodes.iter().find(|n| n.id == "mixtures/cat").unwrap();
        (node.config.clone(), node.inputs.keys().cloned().collect::<Vec<_>>())
    };
    assert_eq!(key_of(&base), key_of(&zeroed));
    let all_zero = base.replace("weights = { eng_web = 1, fin_web = 1 }", "weights = { eng_web = 0, fin_web = 0 }");
    let errors = Project::new(&all_zero).errors();
    assert!(errors.contains("every weight of mixture `cat` is 0"), "{errors}");
}
