//! Hugging Face directories: save a `GPTBigCodeForCausalLM` that `from_pretrained` loads, and
//! load one (ours, or a hub checkpoint such as StarCoderPlus) into a [`GptBigCode`].
//!
//! Files written: `config.json` (the [`GptBigCodeConfig`], plus `torch_dtype` when absent),
//! `generation_config.json`, and the weights as `model.safetensors`, or, above
//! `max_shard_bytes`, as `model-0000i-of-0000n.safetensors` shards with a
//! `model.safetensors.index.json` (`{"metadata": {"total_size"}, "weight_map"}`), as
//! `save_pretrained` does. Every safetensors header carries `{"format": "pt"}`, which
//! transformers checks.
//!
//! Tied embeddings: like `save_pretrained`, a tied model's files hold `transformer.wte.weight`
//! and no `lm_head.weight` (transformers re-ties on load). When loading a tied model, an
//! `lm_head.weight` in the files is accepted if its shape is `[vocab_size, n_embd]` and
//! ignored (transformers does the same: the tie wins). Also ignored, as transformers does:
//! the non-persistent attention-mask buffers older checkpoints carry (`*.attn.bias`,
//! `*.attn.masked_bias`).
//!
//! Loading checks names and shapes before copying anything: every missing tensor, every
//! unexpected tensor and every shape mismatch is listed, each with the tensor's name and the
//! expected and found shapes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use aurora_torch::tch::{self, Device, Tensor, nn};
use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::config::{ConfigError, GptBigCodeConfig};
use crate::model::{GptBigCode, ModelError};

pub const CONFIG_FILE: &str = "config.json";
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";
/// `save_pretrained`'s default `max_shard_size` ("5GB").
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// One name/shape problem between a checkpoint and the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    Missing { name: String, expected: Vec<i64> },
    Shape { name: String, expected: Vec<i64>, found: Vec<i64> },
    Unexpected { name: String, found: Vec<i64> },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Missing { name, expected } => {
                write!(f, "missing tensor `{name}`: expected shape {expected:?}, found none")
            }
            Mismatch::Shape { name, expected, found } => {
                write!(f, "tensor `{name}`: expected shape {expected:?}, found {found:?}")
            }
            Mismatch::Unexpected { name, found } => {
                write!(f, "unexpected tensor `{name}` (shape {found:?}): the model has no such weight")
            }
        }
    }
}

fn list(mismatches: &[Mismatch]) -> String {
    mismatches.iter().map(|m| format!("\n  - {m}")).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{}: {source}", path.display())]
    Config { path: PathBuf, source: ConfigError },
    #[error("{}: not a readable safetensors file: {message}", path.display())]
    Safetensors { path: PathBuf, message: String },
    /// A tensor could not be read while its file was written (the file is removed).
    #[error("{}: not written: {problem}", path.display())]
    Source { path: PathBuf, problem: String },
    #[error("{}: neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX_FILE} found", dir.display())]
    NoWeights { dir: PathBuf },
    #[error("{}: the checkpoint does not match the model ({} problem(s)):{}", dir.display(), mismatches.len(), list(mismatches))]
    Mismatch { dir: PathBuf, mismatches: Vec<Mismatch> },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HfError + '_ {
    move |source| HfError::Io { path: path.to_path_buf(), source }
}

/// A tensor to write: its name, element kind and shape known up front, its data produced only
/// when the writer reaches it, so a file is written holding one tensor in memory at a time (a
/// consolidated 15.5B checkpoint never exists whole in rank 0's memory).
pub struct TensorToWrite<'a> {
    pub name: String,
    pub kind: tch::Kind,
    pub shape: Vec<i64>,
    read: Box<dyn Fn() -> Result<Tensor, String> + 'a>,
}

impl<'a> TensorToWrite<'a> {
    /// A tensor read by `read` when written; it must have `shape` (converted to `kind`).
    pub fn new(
        name: impl Into<String>,
        kind: tch::Kind,
        shape: Vec<i64>,
        read: impl Fn() -> Result<Tensor, String> + 'a,
    ) -> Self {
        TensorToWrite { name: name.into(), kind, shape, read: Box::new(read) }
    }

    /// A tensor already in memory (shared, not copied).
    pub fn of(name: impl Into<String>, t: &Tensor) -> Self {
        let t = t.shallow_clone();
        TensorToWrite {
            name: name.into(),
            kind: t.kind(),
            shape: t.size(),
            read: Box::new(move || Ok(t.shallow_clone())),
        }
    }
}

/// A [`TensorToWrite`] as safetensors serializes it: its bytes made when asked for. A failed read
/// is kept in `failure` (safetensors' `View` cannot fail) and its place filled with zeros; the
/// writer then removes the file and reports it.
struct Lazy<'t, 'a> {
    tensor: &'t TensorToWrite<'a>,
    dtype: Dtype,
    shape: Vec<usize>,
    len: usize,
    failure: &'t std::cell::RefCell<Option<String>>,
}

impl Lazy<'_, '_> {
    fn bytes(&self) -> Result<Vec<u8>, String> {
        let t = (self.tensor.read)()?;
        if t.size() != self.tensor.shape {
            return Err(format!("expected shape {:?}, found {:?}", self.tensor.shape, t.size()));
        }
        let t = t.f_to_device(Device::Cpu).and_then(|t| t.f_to_kind(self.tensor.kind)).and_then(|t| t.f_contiguous());
        let t = t.map_err(|e| e.to_string())?;
        let mut data = vec![0u8; self.len];
        t.f_copy_data_u8(&mut data, t.numel()).map_err(|e| e.to_string())?;
        Ok(data)
    }
}

impl View for Lazy<'_, '_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        // After a failure the file is removed anyway: read nothing more.
        if self.failure.borrow().is_some() {
            return vec![0u8; self.len].into();
        }
        match self.bytes() {
            Ok(data) => data.into(),
            Err(problem) => {
                self.failure.borrow_mut().get_or_insert_with(|| format!("tensor `{}`: {problem}", self.tensor.name));
                vec![0u8; self.len].into()
            }
        }
    }
    fn data_len(&self) -> usize {
        self.len
    }
}

/// Writes `tensors` to one safetensors file with transformers' `{"format": "pt"}` metadata.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), HfError> {
    let lazy: Vec<TensorToWrite> = tensors.iter().map(|(n, t)| TensorToWrite::of(n.clone(), t)).collect();
    write_safetensors_lazily(path, &lazy)
}

/// [`write_safetensors`] reading each tensor only when it is written.
pub fn write_safetensors_lazily(path: &Path, tensors: &[TensorToWrite<'_>]) -> Result<(), HfError> {
    let failure = std::cell::RefCell::new(None);
    let views = tensors
        .iter()
        .map(|t| {
            let elt = t.kind.elt_size_in_bytes();
            let numel: i64 = t.shape.iter().product();
            let view = Lazy {
                tensor: t,
                dtype: Dtype::try_from(t.kind)?,
                shape: t.shape.iter().map(|&d| d as usize).collect(),
                len: numel as usize * elt,
                failure: &failure,
            };
            Ok((t.name.as_str(), view))
        })
        .collect::<Result<Vec<_>, HfError>>()?;
    let metadata = Some(HashMap::from([("format".to_owned(), "pt".to_owned())]));
    safetensors::tensor::serialize_to_file(views, &metadata, path)
        .map_err(|e| HfError::Safetensors { path: path.to_path_buf(), message: format!("{e:?}") })?;
    if let Some(problem) = failure.into_inner() {
        std::fs::remove_file(path).map_err(io(path))?;
        return Err(HfError::Source { path: path.to_path_buf(), problem });
    }
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), HfError> {
    let mut text = serde_json::to_string_pretty(value).expect("JSON serializes");
    text.push('\n');
    std::fs::write(path, text).map_err(io(path))
}

fn torch_dtype_name(kind: tch::Kind) -> &'static str {
    match kind {
        tch::Kind::BFloat16 => "bfloat16",
        tch::Kind::Half => "float16",
        tch::Kind::Double => "float64",
        _ => "float32",
    }
}

/// Saves `vs` (holding a [`GptBigCode`] built from `config`) as a Hugging Face directory
/// (created if needed). Tensors are written in name order; shards are cut at
/// `max_shard_bytes` (a single tensor larger than that gets a shard of its own).
pub fn save_pretrained(
    dir: &Path,
    config: &GptBigCodeConfig,
    vs: &nn::VarStore,
    max_shard_bytes: u64,
) -> Result<(), HfError> {
    let tensors = vs.variables().into_iter().map(|(name, t)| TensorToWrite::of(name, &t)).collect();
    save_pretrained_lazily(dir, config, tensors, max_shard_bytes)
}

/// [`save_pretrained`] from tensors read only when written (see [`TensorToWrite`]): a whole
/// model written from another layout's parts, one tensor in memory at a time.
pub fn save_pretrained_lazily(
    dir: &Path,
    config: &GptBigCodeConfig,
    mut tensors: Vec<TensorToWrite<'_>>,
    max_shard_bytes: u64,
) -> Result<(), HfError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    tensors.sort_by(|a, b| a.name.cmp(&b.name));

    let mut config = config.clone();
    if let Some(wte) = tensors.iter().find(|t| t.name == "transformer.wte.weight") {
        config.extra.entry("torch_dtype".to_owned()).or_insert_with(|| torch_dtype_name(wte.kind).into());
    }
    let path = dir.join(CONFIG_FILE);
    write_json(&path, &serde_json::to_value(&config).expect("config serializes"))?;
    let path = dir.join(GENERATION_CONFIG_FILE);
    write_json(
        &path,
        &serde_json::json!({
            "_from_model_config": true,
            "bos_token_id": config.bos_token_id,
            "eos_token_id": config.eos_token_id,
        }),
    )?;

    let mut shards: Vec<Vec<TensorToWrite>> = vec![Vec::new()];
    let mut shard_bytes = 0u64;
    let mut total = 0u64;
    for t in tensors {
        let size = (t.shape.iter().product::<i64>() as usize * t.kind.elt_size_in_bytes()) as u64;
        let current = shards.last_mut().expect("one shard");
        if !current.is_empty() && shard_bytes + size > max_shard_bytes {
            shards.push(Vec::new());
            shard_bytes = 0;
        }
        shards.last_mut().expect("one shard").push(t);
        shard_bytes += size;
        total += size;
    }
    if shards.len() == 1 {
        return write_safetensors_lazily(&dir.join(WEIGHTS_FILE), &shards[0]);
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{n:05}.safetensors", i + 1);
        write_safetensors_lazily(&dir.join(&file), shard)?;
        for t in shard {
            weight_map.insert(t.name.clone(), file.clone().into());
        }
    }
    write_json(
        &dir.join(WEIGHTS_INDEX_FILE),
        &serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
    )
}

/// Reads and validates `DIR/config.json`.
pub fn load_config(dir: &Path) -> Result<GptBigCodeConfig, HfError> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let config: GptBigCodeConfig =
        serde_json::from_str(&text).map_err(|source| HfError::Json { path: path.clone(), source })?;
    config.validate().map_err(|source| HfError::Config { path, source })?;
    Ok(config)
}

/// The safetensors files holding the weights of `dir`, in order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, HfError> {
    let single = dir.join(WEIGHTS_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join(WEIGHTS_INDEX_FILE);
    if !index.is_file() {
        return Err(HfError::NoWeights { dir: dir.to_path_buf() });
    }
    let text = std::fs::read_to_string(&index).map_err(io(&index))?;
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let parsed: Index = serde_json::from_str(&text).map_err(|source| HfError::Json { path: index.clone(), source })?;
    let mut files: Vec<String> = parsed.weight_map.into_values().collect();
    files.sort();
    files.dedup();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

fn ignored_buffer(name: &str) -> bool {
    name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")
}

/// Copies the weights of `dir` into `vs` (a [`GptBigCode`] of `config`), after checking every
/// name and shape. Tensors are converted to each variable's dtype and device.
pub fn load_weights(dir: &Path, config: &GptBigCodeConfig, vs: &nn::VarStore) -> Result<(), HfError> {
    let files = weight_files(dir)?;
    let buffers =
        files.iter().map(|p| std::fs::read(p).map_err(io(p)).map(|b| (p.clone(), b))).collect::<Result<Vec<_>, _>>()?;
    let parsed = buffers
        .iter()
        .map(|(path, buffer)| {
            SafeTensors::deserialize(buffer)
                .map_err(|e| HfError::Safetensors { path: path.clone(), message: format!("{e:?}") })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut found: BTreeMap<String, (Vec<i64>, safetensors::tensor::TensorView<'_>)> = BTreeMap::new();
    for st in &parsed {
        for (name, view) in st.tensors() {
            let shape = view.shape().iter().map(|&d| d as i64).collect();
            found.insert(name, (shape, view));
        }
    }

    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let mut mismatches = Vec::new();
    for (name, var) in &vars {
        match found.get(name) {
            None => mismatches.push(Mismatch::Missing { name: name.clone(), expected: var.size() }),
            Some((shape, _)) if *shape != var.size() => {
                mismatches.push(Mismatch::Shape { name: name.clone(), expected: var.size(), found: shape.clone() })
            }
            Some(_) => {}
        }
    }
    for (name, (shape, _)) in &found {
        if vars.contains_key(name) || ignored_buffer(name) {
            continue;
        }
        if name == "lm_head.weight" && config.tie_word_embeddings {
            let expected = vec![config.vocab_size, config.n_embd];
            if *shape != expected {
                mismatches.push(Mismatch::Shape { name: name.clone(), expected, found: shape.clone() });
            }
            continue;
        }
        mismatches.push(Mismatch::Unexpected { name: name.clone(), found: shape.clone() });
    }
    if !mismatches.is_empty() {
        return Err(HfError::Mismatch { dir: dir.to_path_buf(), mismatches });
    }

    tch::no_grad(|| -> Result<(), HfError> {
        for (name, mut var) in vars {
            let (_, view) = found.remove(&name).expect("checked above");
            let t = Tensor::try_from(view)?;
            var.f_copy_(&t.f_to_kind(var.kind())?.f_to_device(var.device())?)?;
        }
        Ok(())
    })
}

/// A model loaded from a Hugging Face directory, with the `VarStore` owning its weights.
#[derive(Debug)]
pub struct Loaded {
    pub config: GptBigCodeConfig,
    pub vs: nn::VarStore,
    pub model: GptBigCode,
}

/// Loads `DIR` (`config.json` + `model.safetensors` or sharded `model.safetensors.index.json`)
/// onto `device`, in float32.
pub fn load_pretrained(dir: &Path, device: Device) -> Result<Loaded, HfError> {
    let config = load_config(dir)?;
    let vs = nn::VarStore::new(device);
    // Initial values are overwritten; zeros would do, but `new` keeps one construction path.
    let model = tch::no_grad(|| GptBigCode::new(&vs.root(), &config))?;
    load_weights(dir, &config, &vs)?;
    Ok(Loaded { config, vs, model })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn tiny() -> GptBigCodeConfig {
        GptBigCodeConfig::tiny(2, 64, 4, 128, 32)
    }

    fn model(config: &GptBigCodeConfig) -> (nn::VarStore, GptBigCode) {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = GptBigCode::seeded(&vs.root(), config, 7).unwrap();
        (vs, m)
    }

    fn ids() -> Tensor {
        Tensor::arange(2 * 32, (Kind::Int64, Device::Cpu)).remainder(127).view([2, 32])
    }

    fn roundtrip(config: &GptBigCodeConfig, max_shard_bytes: u64) -> tempfile::TempDir {
        let (vs, m) = model(config);
        let dir = tempfile::tempdir().unwrap();
        save_pretrained(dir.path(), config, &vs, max_shard_bytes).unwrap();
        let loaded = load_pretrained(dir.path(), Device::Cpu).unwrap();
        let (a, b) = (m.forward(&ids()).unwrap(), loaded.model.forward(&ids()).unwrap());
        assert!(a.equal(&b), "logits differ after save -> load");
        dir
    }

    /// Tensors read when written give the same bytes as tensors in memory; a read that fails
    /// leaves no file and names the file and the tensor.
    #[test]
    fn lazy_writes_are_the_same_bytes_and_fail_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tensor::arange(12, (Kind::Float, Device::Cpu)).view([3, 4]);
        let b = Tensor::from_slice(&[7i64]);
        let eager = dir.path().join("eager.safetensors");
        write_safetensors(&eager, &[("b".into(), b.shallow_clone()), ("a".into(), a.shallow_clone())]).unwrap();
        let lazy = dir.path().join("lazy.safetensors");
        let (a2, b2) = (a.shallow_clone(), b.shallow_clone());
        write_safetensors_lazily(
            &lazy,
            &[
                TensorToWrite::new("b", Kind::Int64, vec![1], move || Ok(b2.shallow_clone())),
                // Read in another kind: converted to the declared one.
                TensorToWrite::new("a", Kind::Float, vec![3, 4], move || Ok(a2.to_kind(Kind::Double))),
            ],
        )
        .unwrap();
        assert_eq!(std::fs::read(&eager).unwrap(), std::fs::read(&lazy).unwrap());

        let broken = dir.path().join("broken.safetensors");
        let err = write_safetensors_lazily(
            &broken,
            &[
                TensorToWrite::of("a", &a),
                TensorToWrite::new("c", Kind::Float, vec![2, 2], || Ok(Tensor::zeros([4], (Kind::Float, Device::Cpu)))),
                TensorToWrite::new("d", Kind::Float, vec![1], || Err("part file truncated".into())),
            ],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, format!("{}: not written: tensor `c`: expected shape [2, 2], found [4]", broken.display()));
        assert!(!broken.exists());
    }

    #[test]
    fn save_load_identical_logits() {
        let dir = roundtrip(&tiny(), DEFAULT_MAX_SHARD_BYTES);
        let mut files: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        files.sort();
        assert_eq!(files, ["config.json", "generation_config.json", "model.safetensors"]);
        let generation: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(GENERATION_CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(generation, serde_json::json!({"_from_model_config": true, "bos_token_id": 0, "eos_token_id": 0}));
    }

    #[test]
    fn exported_config_and_tensor_names() {
        let dir = roundtrip(&tiny(), DEFAULT_MAX_SHARD_BYTES);
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(cfg["model_type"], "gpt_bigcode");
        assert_eq!(cfg["architectures"], serde_json::json!(["GPTBigCodeForCausalLM"]));
        assert_eq!(cfg["torch_dtype"], "float32");
        assert_eq!(cfg["multi_query"], true);
        let bytes = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        assert_eq!(header["__metadata__"], serde_json::json!({"format": "pt"}));
        assert_eq!(header["transformer.h.1.attn.c_attn.weight"]["shape"], serde_json::json!([96, 64]));
        assert_eq!(header["transformer.h.1.attn.c_attn.weight"]["dtype"], "F32");
        assert!(header.get("lm_head.weight").is_none(), "tied lm_head is not written");
        assert_eq!(header.as_object().unwrap().len(), 1 + 4 + 2 * 12);
    }

    #[test]
    fn untied_roundtrip_writes_lm_head() {
        let cfg = GptBigCodeConfig { tie_word_embeddings: false, ..tiny() };
        let dir = roundtrip(&cfg, DEFAULT_MAX_SHARD_BYTES);
        let st = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
        assert!(SafeTensors::deserialize(&st).unwrap().names().iter().any(|n| *n == "lm_head.weight"));
    }

    #[test]
    fn sharded_roundtrip() {
        let dir = roundtrip(&tiny(), 40_000);
        assert!(!dir.path().join(WEIGHTS_FILE).exists());
        let index: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(WEIGHTS_INDEX_FILE)).unwrap()).unwrap();
        let files: std::collections::BTreeSet<&str> =
            index["weight_map"].as_object().unwrap().values().map(|v| v.as_str().unwrap()).collect();
        assert!(files.len() > 2, "{files:?}");
        let n = files.len();
        let expected: std::collections::BTreeSet<String> =
            (1..=n).map(|i| format!("model-{i:05}-of-{n:05}.safetensors")).collect();
        assert_eq!(files.into_iter().map(str::to_owned).collect::<std::collections::BTreeSet<_>>(), expected);
        assert_eq!(index["metadata"]["total_size"], tiny().param_count() * 4);
    }

    /// Saves the tiny model, then rewrites model.safetensors through `edit`.
    fn broken(edit: impl FnOnce(&mut BTreeMap<String, Tensor>)) -> HfError {
        let (vs, _) = model(&tiny());
        let dir = tempfile::tempdir().unwrap();
        save_pretrained(dir.path(), &tiny(), &vs, DEFAULT_MAX_SHARD_BYTES).unwrap();
        let mut tensors: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        edit(&mut tensors);
        let tensors: Vec<(String, Tensor)> = tensors.into_iter().collect();
        write_safetensors(&dir.path().join(WEIGHTS_FILE), &tensors).unwrap();
        load_pretrained(dir.path(), Device::Cpu).unwrap_err()
    }

    fn mismatches(err: HfError) -> Vec<Mismatch> {
        match err {
            HfError::Mismatch { mismatches, .. } => mismatches,
            other => panic!("expected a mismatch, got {other}"),
        }
    }

    #[test]
    fn missing_tensor_is_named() {
        let err = broken(|t| {
            t.remove("transformer.h.1.mlp.c_fc.bias");
        });
        assert!(
            err.to_string()
                .contains("missing tensor `transformer.h.1.mlp.c_fc.bias`: expected shape [256], found none")
        );
        assert_eq!(
            mismatches(err),
            [Mismatch::Missing { name: "transformer.h.1.mlp.c_fc.bias".into(), expected: vec![256] }]
        );
    }

    #[test]
    fn wrong_shape_is_named_with_both_shapes() {
        let err = broken(|t| {
            t.insert("transformer.h.0.attn.c_attn.weight".into(), Tensor::zeros([192, 64], (Kind::Float, Device::Cpu)));
        });
        let text = err.to_string();
        assert!(
            text.contains("tensor `transformer.h.0.attn.c_attn.weight`: expected shape [96, 64], found [192, 64]"),
            "{text}"
        );
        assert_eq!(mismatches(err).len(), 1);
    }

    #[test]
    fn unexpected_tensor_is_named() {
        let err = broken(|t| {
            t.insert("transformer.h.2.ln_1.weight".into(), Tensor::ones([64], (Kind::Float, Device::Cpu)));
        });
        assert_eq!(
            mismatches(err),
            [Mismatch::Unexpected { name: "transformer.h.2.ln_1.weight".into(), found: vec![64] }]
        );
    }

    #[test]
    fn tied_lm_head_and_mask_buffers_are_accepted() {
        let (vs, m) = model(&tiny());
        let dir = tempfile::tempdir().unwrap();
        save_pretrained(dir.path(), &tiny(), &vs, DEFAULT_MAX_SHARD_BYTES).unwrap();
        let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        tensors.push(("lm_head.weight".into(), vs.variables()["transformer.wte.weight"].copy()));
        tensors.push(("transformer.h.0.attn.masked_bias".into(), Tensor::from(-1e4f32)));
        write_safetensors(&dir.path().join(WEIGHTS_FILE), &tensors).unwrap();
        let loaded = load_pretrained(dir.path(), Device::Cpu).unwrap();
        assert!(loaded.model.forward(&ids()).unwrap().equal(&m.forward(&ids()).unwrap()));
    }

    /// A bf16 checkpoint (as many hub uploads are) loads into the float32 model, converted.
    #[test]
    fn bf16_checkpoint_is_converted() {
        let (vs, m) = model(&tiny());
        let dir = tempfile::tempdir().unwrap();
        save_pretrained(dir.path(), &tiny(), &vs, DEFAULT_MAX_SHARD_BYTES).unwrap();
        let tensors: Vec<(String, Tensor)> =
            vs.variables().into_iter().map(|(n, t)| (n, t.to_kind(Kind::BFloat16))).collect();
        write_safetensors(&dir.path().join(WEIGHTS_FILE), &tensors).unwrap();
        let loaded = load_pretrained(dir.path(), Device::Cpu).unwrap();
        let wte = &loaded.vs.variables()["transformer.wte.weight"];
        assert_eq!(wte.kind(), Kind::Float);
        assert!(wte.equal(&vs.variables()["transformer.wte.weight"].to_kind(Kind::BFloat16).to_kind(Kind::Float)));
        let (a, b) = (m.forward(&ids()).unwrap(), loaded.model.forward(&ids()).unwrap());
        assert!(a.allclose(&b, 0.05, 0.05, false));
    }

    #[test]
    fn several_problems_are_all_listed() {
        let err = broken(|t| {
            t.remove("transformer.ln_f.bias");
            t.insert("transformer.wpe.weight".into(), Tensor::zeros([64, 64], (Kind::Float, Device::Cpu)));
        });
        assert_eq!(mismatches(err).len(), 2);
    }

    #[test]
    fn missing_files_and_bad_config_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_pretrained(dir.path(), Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
        std::fs::write(dir.path().join(CONFIG_FILE), tiny().to_json_pretty()).unwrap();
        let err = load_pretrained(dir.path(), Device::Cpu).unwrap_err();
        assert!(matches!(err, HfError::NoWeights { .. }), "{err}");
        let bad = GptBigCodeConfig { n_head: 5, ..tiny() };
        std::fs::write(dir.path().join(CONFIG_FILE), bad.to_json_pretty()).unwrap();
        let err = load_pretrained(dir.path(), Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("n_embd (64) must be divisible by n_head (5)"), "{err}");
    }
}
