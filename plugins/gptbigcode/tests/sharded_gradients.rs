//! The sharded step computes the whole model's gradient: for tp=2, pp=2, tp=2 x dp=2 and
//! pp=2 x dp=2 (ranks as threads on 127.0.0.1, Gloo), every rank's gradient of every variable
//! after one step's forwards and backwards (1F1B, the model-parallel reductions, the
//! data-parallel sum) equals its slice of the one-process gradient (relative Frobenius error
//! below 1e-5 in fp32), and the last stage's loss equals the one-process loss. The vocabulary
//! (37) needs padding at tp=2, so the padded rows' zero gradient is checked too.

use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use aurora_gptbigcode::model::global_rng_lock;
use aurora_gptbigcode::sharded::pieces::{WholeVarStore, local_tensors};
use aurora_gptbigcode::sharded::pipeline::{MicroBatch, Pipeline};
use aurora_gptbigcode::sharded::{Grid, StageModel};
use aurora_gptbigcode::trainer::parallel::Ranks;
use aurora_gptbigcode::trainer::{load_weights, masked_loss_sum, reduce_model_parallel_grads, sft};
use aurora_gptbigcode::zero::all_reduce_grads;
use aurora_gptbigcode::{GptBigCode, GptBigCodeConfig};
use aurora_torch::dist::{Backend, GlooDevice, Store};
use aurora_torch::tch::{self, Device, Kind, Tensor, nn};

const SEED: i64 = 11;
const SEQ: i64 = 8;
/// Sequences per step, one per micro-batch.
const BATCH: i64 = 4;

fn config() -> GptBigCodeConfig {
    GptBigCodeConfig::tiny(2, 32, 4, 37, SEQ)
}

/// The step's inputs and labels (the next token; none after the last position).
fn batch() -> (Tensor, Tensor) {
    let _guard = global_rng_lock();
    tch::manual_seed(SEED + 1);
    let ids = Tensor::randint(config().vocab_size, [BATCH, SEQ], (Kind::Int64, Device::Cpu));
    let labels =
        Tensor::cat(&[ids.narrow(1, 1, SEQ - 1), Tensor::full([BATCH, 1], sft::IGNORE, (Kind::Int64, Device::Cpu))], 1);
    (ids, labels)
}

fn targets() -> f64 {
    (BATCH * (SEQ - 1)) as f64
}

fn whole_model() -> (nn::VarStore, GptBigCode) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = GptBigCode::seeded(&vs.root(), &config(), SEED).unwrap();
    (vs, model)
}

/// The one-process loss and gradient: a whole model's variables holding the gradients.
fn reference() -> (f64, nn::VarStore) {
    let (vs, model) = whole_model();
    let (ids, labels) = batch();
    let mut loss = 0.0;
    for m in 0..BATCH {
        let l = masked_loss_sum(&model.forward(&ids.narrow(0, m, 1)).unwrap(), &labels.narrow(0, m, 1));
        (&l / targets()).backward();
        loss += l.double_value(&[]);
    }
    let (grads, _) = whole_model();
    let vars = vs.variables();
    tch::no_grad(|| {
        for (name, mut g) in grads.variables() {
            g.copy_(&vars[&name].grad());
        }
    });
    (loss, grads)
}

/// One rank's step; returns the last stage's loss (0 elsewhere) and, per variable, the relative
/// error of its gradient against `grads`'s slice.
fn rank_step(
    rank: usize,
    (tp, pp, dp): (usize, usize, usize),
    port: u16,
    grads: &nn::VarStore,
) -> (f64, Vec<(String, f64)>) {
    let timeout = Duration::from_secs(30);
    let store = Store::connect("127.0.0.1", port, rank, tp * pp * dp, timeout).unwrap();
    let grid = Grid::of(rank, tp, pp, dp);
    let device = GlooDevice::Host("127.0.0.1".into());
    let ranks = Ranks::create(store, grid, rank, Backend::Gloo, &device, timeout, true).unwrap();
    let (whole, _) = whole_model();
    let vs = nn::VarStore::new(Device::Cpu);
    let stage = StageModel::new(&vs.root(), &config(), grid).unwrap();
    load_weights(&vs, stage.params(), &WholeVarStore(&whole), Path::new("the seeded model")).unwrap();

    // This DP rank's share of the micro-batches, in the global order.
    let (ids, labels) = batch();
    let per_rank = BATCH / dp as i64;
    let micro: Vec<MicroBatch> = (0..per_rank)
        .map(|m| {
            let k = grid.dp_rank as i64 * per_rank + m;
            MicroBatch { input: ids.narrow(0, k, 1), labels: labels.narrow(0, k, 1) }
        })
        .collect();
    let pipeline =
        Pipeline { pp: ranks.pp.as_ref(), tp: ranks.tp.as_ref(), hidden: [1, SEQ, config().n_embd], autocast: false };
    let mut loss = pipeline.run(&stage, &micro, targets()).unwrap();
    reduce_model_parallel_grads(&vs, &stage, &ranks).unwrap();
    if dp > 1 {
        all_reduce_grads(&vs, &ranks.dp).unwrap();
        let mut t = Tensor::from_slice(&[loss]);
        ranks.dp.all_reduce(&mut t, aurora_torch::dist::ReduceOp::Sum).unwrap();
        loss = t.double_value(&[0]);
    }
    ranks.world().barrier().unwrap();

    let expected = local_tensors(stage.params(), &WholeVarStore(grads), "").unwrap();
    let vars = vs.variables();
    let errors = expected
        .into_iter()
        .map(|(name, want)| {
            let got = vars[&name].grad();
            let err = (&got - &want).norm().double_value(&[]) / want.norm().double_value(&[]).max(1e-30);
            (name, err)
        })
        .collect();
    (if grid.is_last_stage() { loss } else { 0.0 }, errors)
}

#[test]
fn every_layout_computes_the_one_process_gradient() {
    let (want_loss, grads) = reference();
    let grads = std::sync::Arc::new(std::sync::Mutex::new(grads));
    for layout @ (tp, pp, dp) in [(2, 1, 1), (1, 2, 1), (2, 1, 2), (1, 2, 2)] {
        let world = tp * pp * dp;
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        for rank in 0..world {
            let (tx, grads) = (tx.clone(), grads.clone());
            std::thread::spawn(move || {
                // Each rank reads its expected slices from its own copy (VarStores are not Sync).
                let mine = {
                    let g = grads.lock().unwrap();
                    let copy = nn::VarStore::new(Device::Cpu);
                    GptBigCode::seeded(&copy.root(), &config(), SEED).unwrap();
                    tch::no_grad(|| {
                        let from = g.variables();
                        for (name, mut v) in copy.variables() {
                            v.copy_(&from[&name]);
                        }
                    });
                    copy
                };
                let _ = tx.send((rank, rank_step(rank, layout, port, &mine)));
            });
        }
        drop(tx);
        let mut checked = 0;
        for _ in 0..world {
            let (rank, (loss, errors)) = rx
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("{layout:?}: a rank did not finish"));
            if loss != 0.0 {
                assert!(
                    (loss - want_loss).abs() / want_loss < 1e-5,
                    "{layout:?} rank {rank}: loss {loss} vs {want_loss}"
                );
            }
            for (name, err) in errors {
                assert!(err < 1e-5, "{layout:?} rank {rank}: `{name}` gradient relative error {err:e}");
                checked += 1;
            }
        }
        assert!(checked > 0, "{layout:?}: no gradient compared");
    }
}

/// A checkpoint whose tensors do not have the shapes the layout slices is refused naming the
/// directory, the tensor and both shapes; a model the layout cannot split is refused saying why.
#[test]
fn a_checkpoint_that_cannot_be_sharded_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, _) = whole_model();
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    for (name, t) in &mut tensors {
        if name == "transformer.h.1.attn.c_attn.weight" {
            // A multi-head (not multi-query) attention's rows: 3 x n_embd instead of n_embd + 2 head_dim.
            *t = Tensor::zeros([96, 32], (Kind::Float, Device::Cpu));
        }
    }
    let file = dir.path().join("model.safetensors");
    aurora_gptbigcode::hf::write_safetensors(&file, &tensors).unwrap();
    let files = aurora_gptbigcode::adamw::StateFiles::open(std::slice::from_ref(&file)).unwrap();
    let sharded = nn::VarStore::new(Device::Cpu);
    let stage = StageModel::new(&sharded.root(), &config(), Grid::of(1, 2, 1, 1)).unwrap();
    let text = load_weights(&sharded, stage.params(), &files, dir.path()).unwrap_err().to_string();
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    assert!(text.contains("tensor `transformer.h.1.attn.c_attn.weight`: expected shape [48, 32]"), "{text}");
    assert!(text.contains("found [96, 32]"), "{text}");

    let three_heads = GptBigCodeConfig::tiny(2, 48, 3, 37, SEQ);
    let err = StageModel::new(&nn::VarStore::new(Device::Cpu).root(), &three_heads, Grid::of(0, 2, 1, 1))
        .err()
        .expect("3 heads over 2 ranks");
    assert_eq!(
        err.to_string(),
        "cannot shard the model over tp = 2, pp = 1: tp must divide n_head = 3 (each rank holds whole attention heads)"
    );
    let err = StageModel::new(&nn::VarStore::new(Device::Cpu).root(), &config(), Grid::of(0, 1, 4, 1))
        .err()
        .expect("2 layers over 4 stages");
    assert!(err.to_string().contains("pp must divide n_layer = 2"), "{err}");
}
