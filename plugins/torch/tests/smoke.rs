//! Smoke tests: libtorch loads (rpath), autograd matches the analytic gradient, seeded runs
//! are bitwise reproducible, and `DeviceSpec` parses/prints/serializes as documented.

use std::sync::Mutex;

use aurora_torch::{DeviceSpec, TorchError};
use tch::{Device, Kind, Tensor};

/// libtorch's RNG, thread count and determinism flags are process-global; tests touching
/// them run one at a time.
static TORCH: Mutex<()> = Mutex::new(());

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).expect("f32 tensor")
}

#[test]
fn linear_forward_backward_matches_analytic_gradient() {
    let _guard = TORCH.lock().unwrap_or_else(|e| e.into_inner());
    aurora_torch::set_deterministic(1);

    // y = x W^T + b with W: 2x3, b: 2; x: 4x3 (batch of 4). loss = mean((y - t)^2).
    let x_data: [[f32; 3]; 4] = [[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0], [0.25, -2.0, 1.5], [2.0, 1.0, -1.0]];
    let w_data: [[f32; 3]; 2] = [[0.5, -0.25, 0.125], [-1.0, 0.75, 0.5]];
    let b_data: [f32; 2] = [0.1, -0.2];
    let t_data: [[f32; 2]; 4] = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5], [0.5, -0.5]];

    let flat = |rows: &[[f32; 3]]| rows.iter().flatten().copied().collect::<Vec<f32>>();
    let x = Tensor::from_slice(&flat(&x_data)).reshape([4, 3]);
    let w = Tensor::from_slice(&flat(&w_data)).reshape([2, 3]).set_requires_grad(true);
    let b = Tensor::from_slice(&b_data).set_requires_grad(true);
    let t = Tensor::from_slice(&t_data.iter().flatten().copied().collect::<Vec<f32>>()).reshape([4, 2]);

    let y = x.linear(&w, Some(&b));
    let loss = (&y - &t).square().mean(Kind::Float);
    loss.backward();

    // Analytic, in f64: dL/dy = 2 (y - t) / (N*2); dL/dW = dy^T x; dL/db = sum_rows dy.
    let n = (4 * 2) as f64;
    let mut gw = [[0f64; 3]; 2];
    let mut gb = [0f64; 2];
    let mut expected_loss = 0f64;
    for i in 0..4 {
        for j in 0..2 {
            let yij: f64 = (0..3).map(|k| x_data[i][k] as f64 * w_data[j][k] as f64).sum::<f64>() + b_data[j] as f64;
            let r = yij - t_data[i][j] as f64;
            expected_loss += r * r / n;
            let dy = 2.0 * r / n;
            gb[j] += dy;
            for k in 0..3 {
                gw[j][k] += dy * x_data[i][k] as f64;
            }
        }
    }

    let close = |got: f32, want: f64| (got as f64 - want).abs() <= 1e-6 * (1.0 + want.abs());
    assert!(close(loss.double_value(&[]) as f32, expected_loss));
    let got_w = to_vec(&w.grad());
    let got_b = to_vec(&b.grad());
    for (g, want) in got_w.iter().zip(gw.iter().flatten()) {
        assert!(close(*g, *want), "dL/dW: got {got_w:?}, want {gw:?}");
    }
    for (g, want) in got_b.iter().zip(gb.iter()) {
        assert!(close(*g, *want), "dL/db: got {got_b:?}, want {gb:?}");
    }
}

/// A seeded init + forward + backward, returned as raw bits.
fn seeded_run(seed: i64) -> Vec<u32> {
    tch::manual_seed(seed);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let layer = tch::nn::linear(vs.root(), 3, 2, Default::default());
    let x = Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
    let loss = x.apply(&layer).tanh().sum(Kind::Float);
    loss.backward();
    let mut bits = Vec::new();
    for (_, var) in vs.variables().into_iter().collect::<std::collections::BTreeMap<_, _>>() {
        bits.extend(to_vec(&var).iter().map(|v| v.to_bits()));
        bits.extend(to_vec(&var.grad()).iter().map(|v| v.to_bits()));
    }
    bits.extend(to_vec(&loss).iter().map(|v| v.to_bits()));
    bits
}

#[test]
fn same_seed_gives_identical_bits() {
    let _guard = TORCH.lock().unwrap_or_else(|e| e.into_inner());
    aurora_torch::set_deterministic(1);
    assert!(aurora_torch::deterministic_algorithms());
    assert_eq!(tch::get_num_threads(), 1);

    let a = seeded_run(1234);
    let b = seeded_run(1234);
    assert_eq!(a.len(), 2 * 3 + 2 + 2 * 3 + 2 + 1);
    assert_eq!(a, b, "two runs with the same seed differ");
    assert_ne!(a, seeded_run(4321), "the seed has no effect");
}

#[test]
fn libtorch_facts() {
    assert!(
        aurora_torch::libtorch_version().starts_with("2.13.0"),
        "libtorch version {:?}",
        aurora_torch::libtorch_version()
    );
    // CPU always resolves; auto agrees with cuda_available().
    assert_eq!(aurora_torch::resolve(DeviceSpec::Cpu).unwrap(), Device::Cpu);
    let auto = aurora_torch::resolve(DeviceSpec::Auto).unwrap();
    assert_eq!(auto.is_cuda(), aurora_torch::cuda_available());
    if !aurora_torch::cuda_available() {
        let err = aurora_torch::resolve(DeviceSpec::Cuda(0)).unwrap_err();
        assert!(matches!(err, TorchError::CudaUnavailable { .. }));
        let msg = err.to_string();
        assert!(msg.contains("`cuda:0`"), "{msg}");
        assert!(msg.contains("cargo xtask libtorch --cuda"), "{msg}");
    }
}

#[test]
fn device_spec_round_trips() {
    for (text, spec) in [
        ("auto", DeviceSpec::Auto),
        ("cpu", DeviceSpec::Cpu),
        ("cuda:0", DeviceSpec::Cuda(0)),
        ("cuda:7", DeviceSpec::Cuda(7)),
        ("cuda:12", DeviceSpec::Cuda(12)),
    ] {
        assert_eq!(text.parse::<DeviceSpec>().unwrap(), spec);
        assert_eq!(spec.to_string(), text);
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<DeviceSpec>(&json).unwrap(), spec);
    }
    assert_eq!(DeviceSpec::default(), DeviceSpec::Auto);
}

#[test]
fn device_spec_rejects_and_explains() {
    let err = "gpu".parse::<DeviceSpec>().unwrap_err();
    assert_eq!(err.to_string(), r#"invalid device "gpu": expected "auto", "cpu" or "cuda:N" (e.g. "cuda:0")"#);
    for bad in ["", "cuda", "cuda:", "cuda:-1", "cuda:01", "cuda: 1", "CPU", "cuda:0 ", "mps"] {
        assert!(bad.parse::<DeviceSpec>().is_err(), "{bad:?} should be rejected");
    }
    let err = serde_json::from_str::<DeviceSpec>("\"gpu\"").unwrap_err();
    assert!(err.to_string().contains(r#"invalid device "gpu""#), "{err}");
}

#[test]
fn device_spec_schema_is_a_string_pattern() {
    let schema = schemars::schema_for!(DeviceSpec);
    let value = serde_json::to_value(&schema).unwrap();
    assert_eq!(value["type"], "string");
    assert_eq!(value["pattern"], "^(auto|cpu|cuda:(0|[1-9][0-9]*))$");
}

#[test]
fn cuda_autocast_dtype_switches_to_bf16() {
    // The setting is process-global state of libtorch, available even without a GPU.
    assert!(!aurora_torch::cuda_autocast_is_bf16(), "libtorch's default CUDA autocast dtype is float16");
    aurora_torch::set_cuda_autocast_bf16();
    assert!(aurora_torch::cuda_autocast_is_bf16());
}
