//! The 1F1B pipeline schedule (PipeDream-Flush, Megatron's non-interleaved schedule): stage `s`
//! of `pp` runs `pp - s - 1` warm-up forwards, then alternates one forward and one backward, then
//! drains the remaining backwards, so at most `pp - s` micro-batches' activations are alive on it.
//! Between two neighbours activations only go forward and gradients only back, so one tag serves
//! both; where a stage sends and receives at once (the steady state) both are posted before
//! either is waited ([`Group::send_recv`]), so neighbouring stages never wait on each other's
//! sends.

use std::collections::VecDeque;

use aurora_torch::dist::{DistError, Group};
use aurora_torch::tch::{self, Kind, Tensor};

use super::stage::{StageInput, StageModel};

/// A micro-batch: token ids (read by the first stage) and labels (read by the last).
pub struct MicroBatch {
    pub input: Tensor,
    pub labels: Tensor,
}

/// The stage's neighbours.
pub struct Pipeline<'a> {
    /// The pipeline group (`None` when `pp == 1`).
    pub pp: Option<&'a Group>,
    pub tp: Option<&'a Group>,
    /// `[micro_batch, seq_len, n_embd]`: what flows between stages.
    pub hidden: [i64; 3],
    /// Forward passes under bf16 autocast (CUDA).
    pub autocast: bool,
}

impl Pipeline<'_> {
    /// Sends `send` to stage `to` and receives a hidden-state-shaped tensor from stage `from`,
    /// either optional, both posted at once.
    fn exchange(
        &self,
        send: Option<(&Tensor, usize)>,
        from: Option<usize>,
        device: aurora_torch::tch::Device,
    ) -> Result<Option<Tensor>, DistError> {
        let Some(group) = self.pp else { return Ok(None) };
        if send.is_none() && from.is_none() {
            return Ok(None);
        }
        let mut out = send.map(|(t, to)| (t.detach().contiguous(), to));
        let mut received = from.map(|from| (Tensor::zeros(self.hidden, (Kind::Float, device)), from));
        group.send_recv(out.as_mut().map(|(t, to)| (t, *to)), received.as_mut().map(|(t, from)| (t, *from)), 0)?;
        Ok(received.map(|(t, _)| t))
    }

    /// Runs one optimizer step's forwards and backwards of `micro` on stage `model`, 1F1B; the
    /// last stage takes the backward of each
    /// micro-batch's summed loss divided by `targets`. Returns the summed loss on the last stage
    /// (0 elsewhere).
    pub fn run(&self, model: &StageModel, micro: &[MicroBatch], targets: f64) -> Result<f64, DistError> {
        let grid = model.grid();
        let last = grid.is_last_stage();
        let prev = (!grid.is_first_stage()).then(|| grid.stage - 1);
        let next = (!last).then(|| grid.stage + 1);
        let device = micro.first().map_or(aurora_torch::tch::Device::Cpu, |m| m.input.device());
        let mut loss_sum = 0.0;
        // The forward of micro-batch m from the received hidden states (None on the first
        // stage): the input (whose gradient goes back) and the output (the scaled loss last).
        let mut run_forward = |m: usize, received: Option<Tensor>| -> Result<(Option<Tensor>, Tensor), DistError> {
            let input = received.map(|h| h.set_requires_grad(true));
            let stage_input = match &input {
                Some(h) => StageInput::Hidden(h),
                None => StageInput::Ids(&micro[m].input),
            };
            let out = tch::autocast(self.autocast, || model.forward(stage_input, self.tp))?;
            if !last {
                return Ok((input, out));
            }
            let loss = model.loss_sum(&out, &micro[m].labels, self.tp)?;
            loss_sum += loss.double_value(&[]);
            Ok((input, loss / targets))
        };
        // The backward of the oldest micro-batch in flight; returns its input's gradient.
        let run_backward = |(input, out): (Option<Tensor>, Tensor), grad: Option<Tensor>| {
            match grad {
                // Seeds the backward with the next stage's gradient: d(sum(out * g))/d(out) = g.
                Some(g) => (out * g).sum(Kind::Float).backward(),
                None => out.backward(),
            }
            input.map(|i| i.grad())
        };
        let (count, pp) = (micro.len(), grid.pp);
        let warmup = (pp - grid.stage - 1).min(count);
        let mut in_flight = VecDeque::new();
        for m in 0..warmup {
            let received = self.exchange(None, prev, device)?;
            let (input, out) = run_forward(m, received)?;
            self.exchange(next.map(|n| (&out, n)), None, device)?;
            in_flight.push_back((input, out));
        }
        let steady = count - warmup;
        let mut received = if steady > 0 { self.exchange(None, prev, device)? } else { None };
        for i in 0..steady {
            let (input, out) = run_forward(warmup + i, received.take())?;
            let grad = self.exchange(next.map(|n| (&out, n)), next, device)?;
            in_flight.push_back((input, out));
            let dx = run_backward(in_flight.pop_front().expect("in flight"), grad);
            let wants_input = (i + 1 < steady).then_some(prev).flatten();
            received = self.exchange(dx.as_ref().zip(prev), wants_input, device)?;
        }
        for _ in 0..warmup {
            let grad = self.exchange(None, next, device)?;
            let dx = run_backward(in_flight.pop_front().expect("in flight"), grad);
            self.exchange(dx.as_ref().zip(prev), None, device)?;
        }
        Ok(loss_sum)
    }
}
