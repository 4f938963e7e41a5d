//! `GptBigCodeConfig`: Hugging Face's `gpt_bigcode` `config.json`, field for field.
//!
//! Field names and defaults are those of `transformers.GPTBigCodeConfig` (plus the
//! `PretrainedConfig` keys a saved config carries: `architectures`, `model_type`,
//! `tie_word_embeddings`). Keys this struct does not know (`transformers_version`,
//! `torch_dtype`, ...) are kept in [`GptBigCodeConfig::extra`] so a loaded config is written back
//! unchanged.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `config.json` of a `GPTBigCodeForCausalLM`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct GptBigCodeConfig {
    pub architectures: Vec<String>,
    pub model_type: String,
    pub vocab_size: i64,
    /// Maximum sequence length (size of the learned position table `wpe`).
    pub n_positions: i64,
    pub n_embd: i64,
    pub n_layer: i64,
    pub n_head: i64,
    /// FFN width; `null` means `4 * n_embd` (as in transformers).
    pub n_inner: Option<i64>,
    pub activation_function: String,
    pub resid_pdrop: f64,
    pub embd_pdrop: f64,
    pub attn_pdrop: f64,
    pub layer_norm_epsilon: f64,
    pub initializer_range: f64,
    pub scale_attn_weights: bool,
    pub use_cache: bool,
    pub bos_token_id: i64,
    pub eos_token_id: i64,
    pub attention_softmax_in_fp32: bool,
    pub scale_attention_softmax_in_fp32: bool,
    pub multi_query: bool,
    /// `lm_head.weight` is `transformer.wte.weight` (transformers' default, and StarCoder's).
    pub tie_word_embeddings: bool,
    /// Keys not modelled above, kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// transformers' `GPTBigCodeConfig()` defaults.
impl Default for GptBigCodeConfig {
    fn default() -> Self {
        Self {
            architectures: vec!["GPTBigCodeForCausalLM".to_owned()],
            model_type: "gpt_bigcode".to_owned(),
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            activation_function: "gelu_pytorch_tanh".to_owned(),
            resid_pdrop: 0.1,
            embd_pdrop: 0.1,
            attn_pdrop: 0.1,
            layer_norm_epsilon: 1e-5,
            initializer_range: 0.02,
            scale_attn_weights: true,
            use_cache: true,
            bos_token_id: 50256,
            eos_token_id: 50256,
            attention_softmax_in_fp32: true,
            scale_attention_softmax_in_fp32: true,
            multi_query: true,
            tie_word_embeddings: true,
            extra: BTreeMap::new(),
        }
    }
}

/// A config the model cannot be built from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("gpt_bigcode config: `{field}` must be positive, got {value}")]
    NotPositive { field: &'static str, value: i64 },
    #[error("gpt_bigcode config: n_embd ({n_embd}) must be divisible by n_head ({n_head})")]
    HeadsDoNotDivide { n_embd: i64, n_head: i64 },
    #[error("gpt_bigcode config: model_type must be \"gpt_bigcode\", got {0:?}")]
    ModelType(String),
    #[error(
        "gpt_bigcode config: activation_function {0:?} is not supported \
         (use \"gelu_pytorch_tanh\", \"gelu_new\" or \"gelu\")"
    )]
    Activation(String),
    #[error(
        "gpt_bigcode config: multi_query = false (multi-head attention) is not supported yet; \
         StarCoder-family checkpoints use multi_query = true"
    )]
    MultiHead,
    #[error("gpt_bigcode config: `{field}` must be a finite number > 0, got {value}")]
    BadFloat { field: &'static str, value: f64 },
    #[error("gpt_bigcode config: `{field}` = {value} is outside the vocabulary (vocab_size {vocab_size})")]
    TokenOutsideVocab { field: &'static str, value: i64, vocab_size: i64 },
    #[error("gpt_bigcode config: {what} must be in [0, 1), got {value}")]
    Dropout { what: &'static str, value: f64 },
    #[error(
        "sequence length {seq_len} is above n_positions = {n_positions} (the learned position \
         table); use a shorter sequence or a model with more positions"
    )]
    SequenceTooLong { seq_len: i64, n_positions: i64 },
}

/// How the MLP activation is computed (from `activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_pytorch_tanh` / `gelu_new`: `gelu(x, approximate="tanh")`.
    GeluTanh,
    /// `gelu`: exact erf GELU.
    Gelu,
}

impl GptBigCodeConfig {
    /// StarCoderPlus (`bigcode/starcoderplus` config.json), the model Aurora-M continues from:
    /// 40 layers, hidden 6144, FFN 24576, 48 heads with multi-query attention, vocab 49,152,
    /// `n_positions` 8192 (its position table; the Aurora-M stages train at context 2048),
    /// bos = eos = 0 (`<|endoftext|>`).
    pub fn starcoderplus() -> Self {
        Self {
            vocab_size: 49152,
            n_positions: 8192,
            n_embd: 6144,
            n_layer: 40,
            n_head: 48,
            n_inner: Some(24576),
            bos_token_id: 0,
            eos_token_id: 0,
            ..Self::default()
        }
    }

    /// A small model for tests and CPU experiments, with the StarCoder family's conventions.
    pub fn tiny(n_layer: i64, n_embd: i64, n_head: i64, vocab_size: i64, n_positions: i64) -> Self {
        Self {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            n_inner: Some(4 * n_embd),
            bos_token_id: 0,
            eos_token_id: 0,
            ..Self::default()
        }
    }

    /// FFN width (`n_inner`, defaulting to `4 * n_embd`).
    pub fn ffn_dim(&self) -> i64 {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    pub fn head_dim(&self) -> i64 {
        self.n_embd / self.n_head
    }

    /// Output features of `attn.c_attn`: queries for every head, one shared key and value head
    /// (multi-query), i.e. `n_embd + 2 * head_dim`.
    pub fn c_attn_out(&self) -> i64 {
        self.n_embd + 2 * self.head_dim()
    }

    pub fn activation(&self) -> Result<Activation, ConfigError> {
        match self.activation_function.as_str() {
            "gelu_pytorch_tanh" | "gelu_new" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::Gelu),
            other => Err(ConfigError::Activation(other.to_owned())),
        }
    }

    /// Checks everything the model relies on; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.model_type != "gpt_bigcode" {
            return Err(ConfigError::ModelType(self.model_type.clone()));
        }
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.ffn_dim()),
        ] {
            if value <= 0 {
                return Err(ConfigError::NotPositive { field, value });
            }
        }
        if self.n_embd % self.n_head != 0 {
            return Err(ConfigError::HeadsDoNotDivide { n_embd: self.n_embd, n_head: self.n_head });
        }
        if !self.multi_query {
            return Err(ConfigError::MultiHead);
        }
        self.activation()?;
        for (field, value) in
            [("layer_norm_epsilon", self.layer_norm_epsilon), ("initializer_range", self.initializer_range)]
        {
            if !(value.is_finite() && value > 0.0) {
                return Err(ConfigError::BadFloat { field, value });
            }
        }
        for (what, value) in
            [("resid_pdrop", self.resid_pdrop), ("embd_pdrop", self.embd_pdrop), ("attn_pdrop", self.attn_pdrop)]
        {
            if !(0.0..1.0).contains(&value) {
                return Err(ConfigError::Dropout { what, value });
            }
        }
        for (field, value) in [("bos_token_id", self.bos_token_id), ("eos_token_id", self.eos_token_id)] {
            if value < 0 || value >= self.vocab_size {
                return Err(ConfigError::TokenOutsideVocab { field, value, vocab_size: self.vocab_size });
            }
        }
        Ok(())
    }

    /// Errors when `seq_len` exceeds the position table.
    pub fn check_seq_len(&self, seq_len: i64) -> Result<(), ConfigError> {
        if seq_len > self.n_positions {
            return Err(ConfigError::SequenceTooLong { seq_len, n_positions: self.n_positions });
        }
        Ok(())
    }

    /// Parameters of one transformer block.
    pub fn params_per_layer(&self) -> i64 {
        let (d, f, qkv) = (self.n_embd, self.ffn_dim(), self.c_attn_out());
        let ln = 2 * d;
        let c_attn = d * qkv + qkv;
        let attn_proj = d * d + d;
        let c_fc = d * f + f;
        let mlp_proj = f * d + d;
        2 * ln + c_attn + attn_proj + c_fc + mlp_proj
    }

    /// Number of distinct parameters (a tied `lm_head` counts once, as `transformers`'
    /// `num_parameters()` does).
    pub fn param_count(&self) -> i64 {
        let d = self.n_embd;
        let embeddings = self.vocab_size * d + self.n_positions * d;
        let lm_head = if self.tie_word_embeddings { 0 } else { self.vocab_size * d };
        embeddings + self.n_layer * self.params_per_layer() + 2 * d + lm_head
    }

    /// Weights that take part in matrix multiplies per token: every block's linear weights
    /// plus the `lm_head` projection (counted even when tied); embedding look-ups, biases and
    /// LayerNorms are not.
    pub fn matmul_params(&self) -> i64 {
        let (d, f, qkv) = (self.n_embd, self.ffn_dim(), self.c_attn_out());
        self.n_layer * (d * qkv + d * d + 2 * d * f) + self.vocab_size * d
    }

    /// Training FLOPs per token at context `seq_len` (forward + backward), PaLM appendix B
    /// style: `6 * matmul_params + 12 * n_layer * n_embd * seq_len` (the attention score and
    /// value products, not halved for causality). The basis of the MFU estimate.
    pub fn train_flops_per_token(&self, seq_len: i64) -> f64 {
        6.0 * self.matmul_params() as f64 + 12.0 * (self.n_layer * self.n_embd * seq_len) as f64
    }

    /// Forward-only FLOPs per token (a third of [`Self::train_flops_per_token`]).
    pub fn forward_flops_per_token(&self, seq_len: i64) -> f64 {
        self.train_flops_per_token(seq_len) / 3.0
    }

    /// `config.json` text as `save_pretrained` writes it (pretty, 2-space indent).
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The keys `transformers.GPTBigCodeConfig` documents (with StarCoderPlus's values),
    /// written by hand, plus `PretrainedConfig`'s `architectures`, `model_type`,
    /// `tie_word_embeddings`.
    #[test]
    fn starcoderplus_config_json_matches_transformers_keys() {
        let expected = json!({
            "architectures": ["GPTBigCodeForCausalLM"],
            "model_type": "gpt_bigcode",
            "vocab_size": 49152,
            "n_positions": 8192,
            "n_embd": 6144,
            "n_layer": 40,
            "n_head": 48,
            "n_inner": 24576,
            "activation_function": "gelu_pytorch_tanh",
            "resid_pdrop": 0.1,
            "embd_pdrop": 0.1,
            "attn_pdrop": 0.1,
            "layer_norm_epsilon": 1e-5,
            "initializer_range": 0.02,
            "scale_attn_weights": true,
            "use_cache": true,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "attention_softmax_in_fp32": true,
            "scale_attention_softmax_in_fp32": true,
            "multi_query": true,
            "tie_word_embeddings": true
        });
        let got = serde_json::to_value(GptBigCodeConfig::starcoderplus()).unwrap();
        assert_eq!(got, expected);
        GptBigCodeConfig::starcoderplus().validate().unwrap();
    }

    #[test]
    fn loads_a_hub_style_config_and_keeps_unknown_keys() {
        let text = r#"{
            "activation_function": "gelu_pytorch_tanh",
            "architectures": ["GPTBigCodeForCausalLM"],
            "bos_token_id": 0, "eos_token_id": 0,
            "model_type": "gpt_bigcode",
            "n_embd": 6144, "n_head": 48, "n_inner": 24576, "n_layer": 40, "n_positions": 8192,
            "torch_dtype": "float32", "transformers_version": "4.28.1",
            "vocab_size": 49152
        }"#;
        let cfg: GptBigCodeConfig = serde_json::from_str(text).unwrap();
        let mut expected = GptBigCodeConfig::starcoderplus();
        expected.extra.insert("torch_dtype".into(), json!("float32"));
        expected.extra.insert("transformers_version".into(), json!("4.28.1"));
        assert_eq!(cfg, expected);
        let back: GptBigCodeConfig = serde_json::from_str(&cfg.to_json_pretty()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn n_inner_null_means_four_times_hidden() {
        let cfg: GptBigCodeConfig = serde_json::from_str(r#"{"n_embd": 64, "n_inner": null}"#).unwrap();
        assert_eq!(cfg.ffn_dim(), 256);
    }

    /// StarCoder's published size is 15.5B parameters; StarCoderPlus has the same shape.
    #[test]
    fn starcoderplus_parameter_count() {
        let cfg = GptBigCodeConfig::starcoderplus();
        let (d, f, v, p, l, hd) = (6144i64, 24576i64, 49152i64, 8192i64, 40i64, 128i64);
        let layer = 4 * d + (d * (d + 2 * hd) + d + 2 * hd) + (d * d + d) + (d * f + f) + (f * d + d);
        assert_eq!(cfg.params_per_layer(), layer);
        assert_eq!(cfg.param_count(), v * d + p * d + l * layer + 2 * d);
        assert_eq!(cfg.param_count(), 15_517_456_384);
        let flops = cfg.train_flops_per_token(2048);
        // 6 * 15.3e9 matmul weights + attention ~ 9.5e10 FLOP/token.
        assert!((9.0e10..1.0e11).contains(&flops), "{flops}");
    }

    #[test]
    fn validation_messages() {
        let bad = GptBigCodeConfig { n_head: 5, ..GptBigCodeConfig::tiny(2, 64, 4, 128, 32) };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "gpt_bigcode config: n_embd (64) must be divisible by n_head (5)"
        );
        let bad = GptBigCodeConfig { n_layer: 0, ..GptBigCodeConfig::tiny(2, 64, 4, 128, 32) };
        assert!(bad.validate().unwrap_err().to_string().contains("`n_layer` must be positive, got 0"));
        let bad = GptBigCodeConfig { activation_function: "relu".into(), ..GptBigCodeConfig::tiny(2, 64, 4, 128, 32) };
        assert!(matches!(bad.validate(), Err(ConfigError::Activation(_))));
        let bad = GptBigCodeConfig { multi_query: false, ..GptBigCodeConfig::tiny(2, 64, 4, 128, 32) };
        assert_eq!(bad.validate(), Err(ConfigError::MultiHead));
        let bad = GptBigCodeConfig { model_type: "gpt2".into(), ..GptBigCodeConfig::tiny(2, 64, 4, 128, 32) };
        assert!(matches!(bad.validate(), Err(ConfigError::ModelType(_))));
        let bad = GptBigCodeConfig { eos_token_id: 128, ..GptBigCodeConfig::tiny(2, 64, 4, 128, 32) };
        assert!(bad.validate().unwrap_err().to_string().contains("eos_token_id` = 128 is outside the vocabulary"));
        let bad = GptBigCodeConfig { layer_norm_epsilon: 0.0, ..GptBigCodeConfig::tiny(2, 64, 4, 128, 32) };
        assert!(matches!(bad.validate(), Err(ConfigError::BadFloat { field: "layer_norm_epsilon", .. })));
        let cfg = GptBigCodeConfig::tiny(2, 64, 4, 128, 32);
        cfg.validate().unwrap();
        cfg.check_seq_len(32).unwrap();
        assert_eq!(
            cfg.check_seq_len(33).unwrap_err().to_string(),
            "sequence length 33 is above n_positions = 32 (the learned position table); use a \
             shorter sequence or a model with more positions"
        );
    }
}
