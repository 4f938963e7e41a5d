use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::TorchError;

/// Where tensors live, as written in a manifest: `"auto"`, `"cpu"` or `"cuda:N"`.
///
/// Serialized (serde, JSON Schema) as that string. `auto` picks `cuda:0` when CUDA is
/// available, else CPU (see [`crate::resolve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceSpec {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = TorchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || TorchError::InvalidDevice { input: s.to_owned() };
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            _ => {
                let index = s.strip_prefix("cuda:").ok_or_else(invalid)?;
                // Digits only: no sign, no whitespace, no leading zeros (one spelling per value).
                if index.is_empty()
                    || !index.bytes().all(|b| b.is_ascii_digit())
                    || (index.len() > 1 && index.starts_with('0'))
                {
                    return Err(invalid());
                }
                index.parse().map(Self::Cuda).map_err(|_| invalid())
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for DeviceSpec {
    fn schema_name() -> Cow<'static, str> {
        "DeviceSpec".into()
    }

    fn schema_id() -> Cow<'static, str> {
        "aurora_torch::DeviceSpec".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Device: \"auto\" (cuda:0 when CUDA is available, else cpu), \"cpu\", or \"cuda:N\".",
            "pattern": "^(auto|cpu|cuda:(0|[1-9][0-9]*))$",
            "default": "auto",
            "examples": ["auto", "cpu", "cuda:0"]
        })
    }
}
