//! Two runs of the same job give byte-identical artifacts (CPU); another seed gives other weights.

mod trainer_common;

use aurora_gptbigcode::trainer::train;
use trainer_common::*;

const FILES: [&str; 5] =
    ["model.safetensors", "optimizer.safetensors", "metrics.jsonl", "trainer_state.json", "config.json"];

#[test]
fn same_job_same_bytes() {
    let root = tempfile::tempdir().unwrap();
    let fx = fixture(root.path(), 20 * 8);
    let a = fx.job(root.path(), "a", 20);
    let b = fx.job(root.path(), "b", 20);
    train(&a, &mut |_| {}).unwrap();
    train(&b, &mut |_| {}).unwrap();
    for file in FILES {
        assert_eq!(read(&a.out_dir.join(file)), read(&b.out_dir.join(file)), "{file} differs between two runs");
    }
    let mut c = fx.job(root.path(), "c", 20);
    c.seed = 99;
    train(&c, &mut |_| {}).unwrap();
    assert_ne!(read(&a.out_dir.join("model.safetensors")), read(&c.out_dir.join("model.safetensors")));
}
