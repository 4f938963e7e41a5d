//! c10d through the shim: Gloo collectives between ranks on 127.0.0.1 (one thread per rank,
//! each with its own store client and process group, as separate processes would have), their
//! results checked against what each collective must compute; a timeout names the rank that
//! never arrived; rendezvous errors say what to set.

use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use aurora_torch::dist::{Backend, DistError, GlooDevice, Group, Missing, ReduceOp, Store};
use tch::{Kind, Tensor};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

/// Runs `body(rank, group)` on `world` threads joined in one Gloo group; returns each rank's
/// result in rank order. Bounded: a rank that does not finish in 60 s fails the test.
fn with_ranks<T: Send + 'static>(
    world: usize,
    timeout: Duration,
    body: impl Fn(usize, &Group) -> T + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let port = free_port();
    let (tx, rx) = mpsc::channel();
    for rank in 0..world {
        let (tx, body) = (tx.clone(), body.clone());
        std::thread::spawn(move || {
            let store = Store::connect("127.0.0.1", port, rank, world, Duration::from_secs(30)).unwrap();
            let device = GlooDevice::Host("127.0.0.1".into());
            let group =
                Group::new(&store, "world", Backend::Gloo, (0..world).collect(), rank, &device, timeout).unwrap();
            let out = body(rank, &group);
            // No collective after the body (a rank left out of one must not pair with a later
            // one): the store says when everyone is done, and rank 0 (its server) leaves last.
            let wait = Duration::from_secs(60);
            store.set(&format!("done/{rank}"), b"1").unwrap();
            if rank == 0 {
                for r in 1..world {
                    store.get(&format!("bye/{r}"), wait).unwrap();
                }
            } else {
                store.get("done/0", wait).unwrap();
                store.set(&format!("bye/{rank}"), b"1").unwrap();
            }
            let _ = tx.send((rank, out));
            drop(group);
        });
    }
    drop(tx);
    let mut results: Vec<(usize, T)> =
        (0..world).map(|_| rx.recv_timeout(Duration::from_secs(60)).expect("a rank did not finish")).collect();
    results.sort_by_key(|(r, _)| *r);
    results.into_iter().map(|(_, t)| t).collect()
}

#[test]
fn collectives_compute_what_they_must() {
    let results = with_ranks(3, Duration::from_secs(30), |rank, group| {
        let r = rank as f32;
        let mut sum = Tensor::from_slice(&[r, 10.0 * r]);
        group.all_reduce(&mut sum, ReduceOp::Sum).unwrap();
        let mut max = Tensor::from_slice(&[r, -r]);
        group.all_reduce(&mut max, ReduceOp::Max).unwrap();
        // Rank r contributes [r*6 + i for i in 0..6]; slice k of the sum goes to rank k.
        let mut input = Tensor::arange(6, (Kind::Float, tch::Device::Cpu)) + 6.0 * rank as f64;
        let mut shard = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu));
        group.reduce_scatter(&mut shard, &mut input).unwrap();
        let mut mine = Tensor::from_slice(&[r, r + 0.5]);
        let mut gathered = Tensor::zeros([6], (Kind::Float, tch::Device::Cpu));
        group.all_gather(&mut gathered, &mut mine).unwrap();
        let mut bcast = if rank == 2 {
            Tensor::from_slice(&[7f32, 8.0])
        } else {
            Tensor::zeros([2], (Kind::Float, tch::Device::Cpu))
        };
        group.broadcast(&mut bcast, 2).unwrap();
        // A ring of point-to-point messages: rank r sends r to r+1 and receives from r-1.
        let (next, prev) = ((rank + 1) % 3, (rank + 2) % 3);
        let mut received = Tensor::zeros([1], (Kind::Float, tch::Device::Cpu));
        if rank % 2 == 0 {
            group.send(&mut Tensor::from_slice(&[r]), next, 0).unwrap();
            group.recv(&mut received, prev, 0).unwrap();
        } else {
            group.recv(&mut received, prev, 0).unwrap();
            group.send(&mut Tensor::from_slice(&[r]), next, 0).unwrap();
        }
        (values(&sum), values(&max), values(&shard), values(&gathered), values(&bcast), values(&received))
    });
    for (rank, (sum, max, shard, gathered, bcast, received)) in results.into_iter().enumerate() {
        assert_eq!(sum, [3.0, 30.0]);
        assert_eq!(max, [2.0, 0.0]);
        // Element j of the sum is sum_r (6r + j) = 18 + 3j.
        let k = rank as f32;
        assert_eq!(shard, [18.0 + 3.0 * (2.0 * k), 18.0 + 3.0 * (2.0 * k + 1.0)]);
        assert_eq!(gathered, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        assert_eq!(bcast, [7.0, 8.0]);
        assert_eq!(received, [((rank + 2) % 3) as f32]);
    }
}

#[test]
fn a_timeout_names_the_rank_that_never_arrived() {
    let results = with_ranks(2, Duration::from_secs(5), |rank, group| {
        // Both ranks do one all_reduce; then only rank 0 enters a second one.
        group.all_reduce(&mut Tensor::from_slice(&[1f32]), ReduceOp::Sum).unwrap();
        if rank == 0 {
            let err = group.all_reduce(&mut Tensor::from_slice(&[1f32]), ReduceOp::Sum).unwrap_err();
            Some(err)
        } else {
            // Rank 1 stays connected (in with_ranks) until rank 0 has its verdict.
            None
        }
    });
    let err = results.into_iter().next().unwrap().expect("rank 0 timed out");
    match &err {
        DistError::Timeout { op, seq, group, rank, missing, .. } => {
            assert_eq!((*op, *seq, group.as_str(), *rank), ("all_reduce", 2, "world", 0));
            assert_eq!(missing, &Missing::Ranks(vec![1]));
        }
        other => panic!("expected a timeout, got {other}"),
    }
    let text = err.to_string();
    assert!(text.starts_with("all_reduce #2 on group `world` timed out after"), "{text}");
    assert!(text.contains("rank(s) 1 never entered it"), "{text}");
}

#[test]
fn rendezvous_errors_say_what_to_set() {
    // The port is held by a listener: rank 0 cannot serve the store there.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let err = Store::connect("127.0.0.1", port, 0, 2, Duration::from_secs(2)).err().expect("port taken");
    let text = err.to_string();
    assert!(text.starts_with(&format!("rendezvous at 127.0.0.1:{port} failed (rank 0)")), "{text}");
    assert!(text.contains("set MASTER_PORT to a free port"), "{text}");

    // Nobody serves this port: rank 1 gives up after its timeout and says what to check.
    let port = free_port();
    let err = Store::connect("127.0.0.1", port, 1, 2, Duration::from_millis(500)).err().expect("no server");
    let text = err.to_string();
    assert!(text.contains("check that MASTER_ADDR=127.0.0.1 is rank 0's host"), "{text}");
}

#[test]
fn nccl_on_a_cpu_build_is_refused_clearly() {
    if aurora_torch::dist::nccl_compiled() {
        eprintln!("skipping nccl_on_a_cpu_build_is_refused_clearly: this build has NCCL");
        return;
    }
    let port = free_port();
    let store = Store::connect("127.0.0.1", port, 0, 1, Duration::from_secs(5)).unwrap();
    let err = Group::new(&store, "world", Backend::Nccl, vec![0], 0, &GlooDevice::Default, Duration::from_secs(5))
        .err()
        .expect("no NCCL here");
    assert!(matches!(err, DistError::NcclUnavailable));
    assert!(err.to_string().contains("built against a CPU libtorch"));
}

/// Megatron's mappings: `copy_to` is the identity forward and sums gradients over the group
/// backward; `reduce_from` sums forward and passes gradients through. Checked on a
/// column-parallel then row-parallel product against the gradient computed by hand.
#[test]
fn tensor_parallel_mappings_sum_where_megatron_sums() {
    let results = with_ranks(2, Duration::from_secs(30), |rank, group| {
        let r = rank as f64;
        // x is the same on both ranks; rank r holds weight w_r = r + 1 (its column shard).
        let x = Tensor::from_slice(&[1f32, 2.0]).set_requires_grad(true);
        let w = Tensor::from_slice(&[r as f32 + 1.0]).set_requires_grad(true);
        let xin = group.copy_to(&x).unwrap();
        let partial = (&xin * &w).sum(Kind::Float); // sum(x) * w_r
        let total = group.reduce_from(&partial).unwrap(); // sum(x) * (w_0 + w_1)
        (&total * (r + 1.0)).backward(); // rank r's upstream gradient is r + 1 (distinct on purpose)
        (values(&total), values(&x.grad()), values(&w.grad()))
    });
    for (rank, (total, x_grad, w_grad)) in results.iter().enumerate() {
        // Forward: sum(x) = 3, w_0 + w_1 = 3.
        assert_eq!(total, &[9.0]);
        // reduce_from passes rank r's upstream (r + 1) to its partial; copy_to then sums the
        // two ranks' input gradients: (1 * w_0) + (2 * w_1) = 1 + 4 = 5 per element of x.
        assert_eq!(x_grad, &[5.0, 5.0], "rank {rank}");
        // w_r's gradient stays local: upstream (r + 1) * sum(x) = 3 (r + 1).
        assert_eq!(w_grad, &[3.0 * (rank as f32 + 1.0)], "rank {rank}");
    }
}

/// Two ranks that both send and receive at once (pipeline stages exchanging activations and
/// gradients) complete with `send_recv`, and each gets the other's tensor.
#[test]
fn paired_exchange_does_not_deadlock() {
    let results = with_ranks(2, Duration::from_secs(10), |rank, group| {
        let other = 1 - rank;
        // 4 MiB: larger than a socket buffer, so blocking sends in both directions would hang.
        let mut out = Tensor::full([1 << 20], rank as f64 + 1.0, (Kind::Float, tch::Device::Cpu));
        let mut inp = Tensor::zeros([1 << 20], (Kind::Float, tch::Device::Cpu));
        group.send_recv(Some((&mut out, other)), Some((&mut inp, other)), 3).unwrap();
        let (min, max) = (inp.min().double_value(&[]), inp.max().double_value(&[]));
        (min, max)
    });
    assert_eq!(results, vec![(2.0, 2.0), (1.0, 1.0)]);
}

/// The time in communication grows with every wait (a per-process total: the other tests of
/// this binary wait beside this one, so only growth is checked).
#[test]
fn time_in_communication_counts_the_waits() {
    let before = aurora_torch::dist::time_in_communication();
    let results = with_ranks(2, Duration::from_secs(10), |rank, group| {
        let mut t = Tensor::full([1 << 20], rank as f64, (Kind::Float, tch::Device::Cpu));
        let at_start = aurora_torch::dist::time_in_communication();
        group.all_reduce(&mut t, ReduceOp::Sum).unwrap();
        let after = aurora_torch::dist::time_in_communication();
        (after > at_start, t.max().double_value(&[]))
    });
    let spent = aurora_torch::dist::time_in_communication() - before;
    assert_eq!(results, vec![(true, 1.0), (true, 1.0)]);
    assert!(spent > Duration::ZERO);
}
