//! Canonical JSON and length-prefixed key encoding: the two byte formats every digest is taken over.
//!
//! Canonical JSON is compact, has object keys sorted by their UTF-8 bytes, and prints floats in the
//! shortest form that round-trips (serde_json uses ryu). It does not depend on whether serde_json's
//! `preserve_order` feature is enabled somewhere in the dependency graph: keys are sorted here.

use aurora_store::Digest;
use serde_json::Value;

/// Canonical JSON bytes of a value.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(k.clone()), out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Serialising a scalar into a Vec cannot fail.
    serde_json::to_writer(&mut *out, value).expect("scalar JSON serialisation");
}

/// blake3 of the canonical JSON of a value.
pub fn digest_json(value: &Value) -> Digest {
    Digest::of_bytes(&canonical_json(value))
}

/// Builds an unambiguous byte string for hashing: every field is a u64 little-endian length followed
/// by its bytes, so no two different field sequences encode to the same bytes.
pub struct KeyEncoder {
    hasher: blake3::Hasher,
}

impl KeyEncoder {
    /// Starts an encoding salted with a schema version (bumping it invalidates every key).
    pub fn new(schema_version: &str) -> Self {
        let mut enc = KeyEncoder { hasher: blake3::Hasher::new() };
        enc.bytes(schema_version.as_bytes());
        enc
    }

    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    pub fn u64(&mut self, n: u64) -> &mut Self {
        self.bytes(&n.to_le_bytes())
    }

    pub fn digest(&mut self, d: &Digest) -> &mut Self {
        self.bytes(&d.0)
    }

    pub fn finish(&self) -> Digest {
        Digest(*self.hasher.finalize().as_bytes())
    }
}

/// A node's seed: derived from the experiment seed and the node's id, so renaming or reordering
/// other nodes never changes it.
pub fn derive_seed(experiment_seed: u64, node_id: &str) -> u64 {
    let mut enc = KeyEncoder::new("aurora-seed/1");
    enc.u64(experiment_seed).str(node_id);
    let d = enc.finish();
    u64::from_le_bytes(d.0[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_and_output_is_compact() {
        let v = json!({"b": 1, "a": [1.5, true, null, "x"], "A": {"z": 0, "y": 2.0}});
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"A":{"y":2.0,"z":0},"a":[1.5,true,null,"x"],"b":1}"#
        );
    }

    #[test]
    fn floats_are_shortest_round_trip() {
        let v = json!([0.1, 1e300, -0.0, 123456789.125]);
        assert_eq!(String::from_utf8(canonical_json(&v)).unwrap(), "[0.1,1e+300,-0.0,123456789.125]");
    }

    #[test]
    fn length_prefixing_separates_fields() {
        let a = KeyEncoder::new("v").str("ab").str("c").finish();
        let b = KeyEncoder::new("v").str("a").str("bc").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn seeds_depend_on_node_and_experiment_seed() {
        assert_eq!(derive_seed(1, "a/b"), derive_seed(1, "a/b"));
        assert_ne!(derive_seed(1, "a/b"), derive_seed(2, "a/b"));
        assert_ne!(derive_seed(1, "a/b"), derive_seed(1, "a/c"));
    }
}
