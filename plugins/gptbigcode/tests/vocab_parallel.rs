//! Megatron's vocab-parallel cross-entropy over a real Gloo group (two ranks as threads on
//! 127.0.0.1) equals the plain cross-entropy, in value and in gradient, for a vocabulary that
//! needs padding (11 ids over 2 ranks: 6 real columns on rank 0, 5 on rank 1).

use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use aurora_gptbigcode::model::global_rng_lock;
use aurora_gptbigcode::sharded::pieces::padded_vocab;
use aurora_gptbigcode::sharded::stage::vocab_parallel_loss_sum;
use aurora_gptbigcode::trainer::{masked_loss_sum, sft};
use aurora_torch::dist::{Backend, GlooDevice, Group, Store};
use aurora_torch::tch::{self, Device, Kind, Tensor};

const VOCAB: i64 = 11;

fn inputs() -> (Tensor, Tensor) {
    let _guard = global_rng_lock();
    tch::manual_seed(5);
    let logits = Tensor::randn([7, VOCAB], (Kind::Float, Device::Cpu)) * 3.0;
    let labels = Tensor::randint(VOCAB, [7], (Kind::Int64, Device::Cpu));
    let _ = labels.narrow(0, 2, 1).fill_(sft::IGNORE);
    let _ = labels.narrow(0, 4, 1).fill_(VOCAB - 1); // the last real id, on the padded rank
    (logits, labels)
}

#[test]
fn vocab_parallel_cross_entropy_equals_the_plain_one() {
    let (logits, labels) = inputs();
    let full = logits.copy().set_requires_grad(true);
    let expected = masked_loss_sum(&full.unsqueeze(0), &labels.unsqueeze(0));
    expected.backward();
    let expected_grad = full.grad();

    let tp = 2;
    let rows = padded_vocab(VOCAB, tp) / tp as i64;
    assert_eq!(rows, 6);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    for rank in 0..tp {
        let (tx, logits, labels) = (tx.clone(), logits.copy(), labels.copy());
        std::thread::spawn(move || {
            let timeout = Duration::from_secs(30);
            let store = Store::connect("127.0.0.1", port, rank, tp, timeout).unwrap();
            let device = GlooDevice::Host("127.0.0.1".into());
            let group = Group::new(&store, "tp", Backend::Gloo, vec![0, 1], rank, &device, timeout).unwrap();
            let start = rank as i64 * rows;
            let real = (start + rows).min(VOCAB) - start;
            let local = logits.narrow(1, start, real).copy().set_requires_grad(true);
            let loss = vocab_parallel_loss_sum(&local, &labels, start, &group).unwrap();
            loss.backward();
            group.barrier().unwrap();
            tx.send((rank, loss.double_value(&[]), local.grad(), start, real)).unwrap();
            drop(group);
        });
    }
    drop(tx);
    for _ in 0..tp {
        let (rank, loss, grad, start, real) = rx.recv_timeout(Duration::from_secs(60)).expect("a rank did not finish");
        let want = expected.double_value(&[]);
        assert!((loss - want).abs() / want < 1e-6, "rank {rank}: loss {loss} vs {want}");
        let want_grad = expected_grad.narrow(1, start, real);
        let err = (&grad - &want_grad).norm().double_value(&[]) / want_grad.norm().double_value(&[]);
        assert!(err < 1e-6, "rank {rank}: gradient relative error {err:e}");
        // The ignored position gets no gradient.
        assert_eq!(grad.get(2).abs().sum(Kind::Float).double_value(&[]), 0.0);
    }
}
