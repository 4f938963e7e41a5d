//! `model.gptbigcode`: a GPTBigCode architecture (`[models.NAME]`).

use std::collections::BTreeMap;

use aurora_core::diagnostic::{Diagnostic, Diagnostics};
use aurora_core::manifest::ResolvedManifest;
use aurora_core::plugin::{Entry, ExecContext, ExecOutcome, NodeSpec, PlanContext, Plugin, PluginError};
use aurora_train::{ConfigError, GptBigCodeConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub const PLUGIN_ID: &str = "model.gptbigcode";

/// A published architecture to start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// `bigcode/starcoderplus` (Aurora-M's base): 40 layers, n_embd 6144, n_inner 24576, 48 heads
    /// with multi-query attention, vocab 49,152, n_positions 8192, `gelu_pytorch_tanh`.
    Starcoderplus,
}

/// `[models.NAME]` with `plugin = "model.gptbigcode"`. Without `preset`, `vocab_size`,
/// `n_positions`, `n_embd`, `n_layer` and `n_head` are required; with it, the fields given
/// override the preset.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Start from a published architecture's `config.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// Vocabulary size (rows of `transformer.wte` and `lm_head`); at least the tokenizer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub vocab_size: Option<i64>,
    /// Rows of the learned position table: the longest context the model can see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub n_positions: Option<i64>,
    /// Hidden size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub n_embd: Option<i64>,
    /// Transformer blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub n_layer: Option<i64>,
    /// Attention (query) heads; must divide `n_embd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub n_head: Option<i64>,
    /// MLP width (default `4 * n_embd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub n_inner: Option<i64>,
    /// One shared key/value head (multi-query attention, the StarCoder family's choice; default
    /// true; `false` is not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_query: Option<bool>,
    /// MLP activation (`activation_function` in `config.json`): `"gelu_pytorch_tanh"` (default),
    /// `"gelu_new"` or `"gelu"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<String>,
    /// LayerNorm epsilon (default 1e-5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_norm_epsilon: Option<f64>,
    /// Dropout on embeddings, attention and residuals (default 0; in [0, 1)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// Standard deviation of the initial weights of `init = "scratch"` (default 0.02).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initializer_range: Option<f64>,
    /// Token id of beginning/end of text (`<|endoftext|>`; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<i64>,
}

/// The fields a model must have without a preset.
const REQUIRED: [&str; 5] = ["vocab_size", "n_positions", "n_embd", "n_layer", "n_head"];

impl ModelConfig {
    /// The Hugging Face config, or the names of the required fields that are missing.
    pub fn to_gpt_bigcode(&self) -> Result<GptBigCodeConfig, Vec<&'static str>> {
        let mut c = match self.preset {
            Some(Preset::Starcoderplus) => GptBigCodeConfig::starcoderplus(),
            None => match (self.vocab_size, self.n_positions, self.n_embd, self.n_layer, self.n_head) {
                (Some(vocab), Some(positions), Some(embd), Some(layer), Some(head)) => {
                    GptBigCodeConfig::tiny(layer, embd, head, vocab, positions)
                }
                given => {
                    let given = [given.0, given.1, given.2, given.3, given.4].map(|v| v.is_some());
                    return Err(REQUIRED.iter().zip(given).filter(|(_, g)| !g).map(|(f, _)| *f).collect());
                }
            },
        };
        let set = |target: &mut i64, v: Option<i64>| {
            if let Some(v) = v {
                *target = v;
            }
        };
        set(&mut c.vocab_size, self.vocab_size);
        set(&mut c.n_positions, self.n_positions);
        set(&mut c.n_embd, self.n_embd);
        set(&mut c.n_layer, self.n_layer);
        set(&mut c.n_head, self.n_head);
        if self.n_inner.is_some() {
            c.n_inner = self.n_inner;
        }
        if let Some(eos) = self.eos_token_id {
            c.eos_token_id = eos;
            c.bos_token_id = eos;
        }
        if let Some(m) = self.multi_query {
            c.multi_query = m;
        }
        if let Some(a) = &self.activation {
            c.activation_function = a.clone();
        }
        if let Some(e) = self.layer_norm_epsilon {
            c.layer_norm_epsilon = e;
        }
        if let Some(d) = self.dropout {
            (c.resid_pdrop, c.embd_pdrop, c.attn_pdrop) = (d, d, d);
        }
        if let Some(r) = self.initializer_range {
            c.initializer_range = r;
        }
        Ok(c)
    }
}

/// The manifest field a config problem is about.
fn field_of(e: &ConfigError) -> &'static str {
    match e {
        ConfigError::NotPositive { field, .. } | ConfigError::BadFloat { field, .. } => field,
        ConfigError::TokenOutsideVocab { .. } => "eos_token_id",
        ConfigError::HeadsDoNotDivide { .. } => "n_head",
        ConfigError::ModelType(_) => "preset",
        ConfigError::Activation(_) => "activation",
        ConfigError::MultiHead => "multi_query",
        ConfigError::Dropout { .. } => "dropout",
        ConfigError::SequenceTooLong { .. } => "n_positions",
    }
}

/// The validated architecture of the model entry at `pointer` (`/models/NAME`).
pub fn model_of(manifest: &ResolvedManifest, pointer: &str, config: &Value) -> Result<GptBigCodeConfig, Diagnostics> {
    let model: ModelConfig = serde_json::from_value(config.clone()).map_err(|e| {
        Diagnostic::new(format!("invalid model: {e}")).at(manifest.sources.value(pointer)).pointer(pointer)
    })?;
    let gpt = model.to_gpt_bigcode().map_err(|missing| {
        Diagnostic::new(format!("the model has no {}", missing.join(", ")))
            .at(manifest.sources.key(pointer))
            .pointer(pointer)
            .expected(
                "every dimension (vocab_size, n_positions, n_embd, n_layer, n_head), or `preset = \"starcoderplus\"`",
            )
    })?;
    gpt.validate().map_err(|e| {
        let field = field_of(&e);
        let at = format!("{pointer}/{field}");
        let origin = manifest.sources.value(&at).or_else(|| manifest.sources.key(pointer));
        Diagnostic::new(e.to_string()).at(origin).pointer(at)
    })?;
    Ok(gpt)
}

#[derive(Debug, Clone, Default)]
pub struct ModelGptBigCode;
aurora_core::register_plugin!(ModelGptBigCode);

impl Plugin for ModelGptBigCode {
    fn id(&self) -> &'static str {
        PLUGIN_ID
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn description(&self) -> &'static str {
        "GPTBigCode architecture (multi-query attention, learned positions): Hugging Face config.json, parameter and FLOP counts"
    }
    fn config_schema(&self) -> schemars::Schema {
        schemars::schema_for!(ModelConfig)
    }
    fn plan(&self, entry: &Entry<'_>, ctx: &PlanContext<'_>) -> Result<Vec<NodeSpec>, Diagnostics> {
        let gpt = model_of(ctx.manifest, &entry.pointer(), entry.config)?;
        let keyed = serde_json::to_value(&gpt).expect("config serialises");
        Ok(vec![NodeSpec::for_entry(entry, keyed, BTreeMap::new())])
    }
    fn estimate(&self, config: &Value) -> Option<String> {
        let gpt: GptBigCodeConfig = serde_json::from_value(config.clone()).ok()?;
        Some(format!(
            "{} parameters, {}FLOP per training token at context {}",
            si(gpt.param_count() as f64),
            si(gpt.train_flops_per_token(gpt.n_positions)),
            gpt.n_positions
        ))
    }
    fn execute(&self, ctx: &mut ExecContext<'_>) -> Result<ExecOutcome, PluginError> {
        let gpt: GptBigCodeConfig = ctx.parse()?;
        let path = ctx.out_dir.join("config.json");
        std::fs::write(&path, gpt.to_json_pretty())
            .map_err(|e| PluginError::new(format!("cannot write {}: {e}", path.display())))?;
        let mut metrics = Map::new();
        metrics.insert("param_count".into(), gpt.param_count().into());
        metrics.insert("matmul_params".into(), gpt.matmul_params().into());
        // At the full context; a stage's own figure uses its seq_len.
        metrics.insert("train_flops_per_token".into(), json!(gpt.train_flops_per_token(gpt.n_positions)));
        let _ = writeln!(
            ctx.log,
            "{}: {:.3}M parameters, {:.3} GFLOP per training token at context {}",
            ctx.node_id,
            gpt.param_count() as f64 / 1e6,
            gpt.train_flops_per_token(gpt.n_positions) / 1e9,
            gpt.n_positions
        );
        Ok(ExecOutcome { metrics })
    }
}

pub use aurora_core::units::si;
