//! Learning-rate schedules: pure functions step -> lr.
//!
//! Steps count optimizer updates from 0; `lr(s)` is the rate used by update `s`. Warmup is
//! linear and reaches the peak on its last step: `lr(s) = max_lr * (s + 1) / warmup_steps` for
//! `s < warmup_steps` (so the first update already moves, unlike a warmup starting at 0).
//!
//! - `constant`: optional warmup, then `lr`.
//! - `cosine`: warmup, then `min_lr + (max_lr - min_lr) * (1 + cos(pi * p)) / 2` with
//!   `p = (s - warmup_steps) / decay_steps` clamped to 1, then `min_lr` for ever (the floor).
//! - `wsd` (warmup-stable-decay): warmup, `max_lr` for `stable_steps`, then a `linear` (default)
//!   or `cosine` decay to `min_lr` over `decay_steps`, then `min_lr`.
//!
//! A curriculum stage references a schedule through [`StageSchedule`]: with `rewarm = false`
//! the schedule continues on the global step counter (Aurora-M's CAT stage continued the CAP
//! run at step 90k); with `rewarm = true` it restarts at the stage boundary (warmup again from
//! the stage's first step, "re-warming" for continual pre-training).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Shape of the decay phase of a `wsd` schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecayShape {
    #[default]
    Linear,
    Cosine,
}

/// A learning-rate schedule (a `scheduler` node's config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    Constant {
        lr: f64,
        #[serde(default)]
        warmup_steps: u64,
    },
    Cosine {
        max_lr: f64,
        min_lr: f64,
        warmup_steps: u64,
        decay_steps: u64,
    },
    Wsd {
        max_lr: f64,
        min_lr: f64,
        warmup_steps: u64,
        stable_steps: u64,
        decay_steps: u64,
        #[serde(default)]
        decay: DecayShape,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule: `{field}` must be a finite number >= 0, got {value}")]
    BadRate { field: &'static str, value: f64 },
    #[error("schedule: min_lr ({min_lr}) must not exceed max_lr ({max_lr})")]
    FloorAbovePeak { min_lr: f64, max_lr: f64 },
}

fn warmup(peak: f64, warmup_steps: u64, step: u64) -> f64 {
    peak * (step + 1) as f64 / warmup_steps as f64
}

/// Fraction of a phase of `len` steps done at `step` steps into it, clamped to [0, 1].
fn progress(step: u64, len: u64) -> f64 {
    if len == 0 { 1.0 } else { (step as f64 / len as f64).min(1.0) }
}

fn cosine(max_lr: f64, min_lr: f64, p: f64) -> f64 {
    min_lr + (max_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

impl Schedule {
    pub fn validate(&self) -> Result<(), ScheduleError> {
        let check = |field: &'static str, value: f64| {
            if value.is_finite() && value >= 0.0 { Ok(()) } else { Err(ScheduleError::BadRate { field, value }) }
        };
        match *self {
            Schedule::Constant { lr, .. } => check("lr", lr),
            Schedule::Cosine { max_lr, min_lr, .. } | Schedule::Wsd { max_lr, min_lr, .. } => {
                check("max_lr", max_lr)?;
                check("min_lr", min_lr)?;
                if min_lr > max_lr {
                    return Err(ScheduleError::FloorAbovePeak { min_lr, max_lr });
                }
                Ok(())
            }
        }
    }

    /// The learning rate of update `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        match *self {
            Schedule::Constant { lr, warmup_steps } => {
                if step < warmup_steps {
                    warmup(lr, warmup_steps, step)
                } else {
                    lr
                }
            }
            Schedule::Cosine { max_lr, min_lr, warmup_steps, decay_steps } => {
                if step < warmup_steps {
                    warmup(max_lr, warmup_steps, step)
                } else {
                    cosine(max_lr, min_lr, progress(step - warmup_steps, decay_steps))
                }
            }
            Schedule::Wsd { max_lr, min_lr, warmup_steps, stable_steps, decay_steps, decay } => {
                if step < warmup_steps {
                    warmup(max_lr, warmup_steps, step)
                } else if step < warmup_steps + stable_steps {
                    max_lr
                } else {
                    let p = progress(step - warmup_steps - stable_steps, decay_steps);
                    match decay {
                        DecayShape::Linear => max_lr - (max_lr - min_lr) * p,
                        DecayShape::Cosine => cosine(max_lr, min_lr, p),
                    }
                }
            }
        }
    }

    /// Steps after which the rate stays constant (warmup + stable + decay; warmup for
    /// `constant`).
    pub fn total_steps(&self) -> u64 {
        match *self {
            Schedule::Constant { warmup_steps, .. } => warmup_steps,
            Schedule::Cosine { warmup_steps, decay_steps, .. } => warmup_steps + decay_steps,
            Schedule::Wsd { warmup_steps, stable_steps, decay_steps, .. } => warmup_steps + stable_steps + decay_steps,
        }
    }
}

/// How a curriculum stage uses a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageSchedule {
    pub schedule: Schedule,
    /// Restart the schedule (warmup included) at the stage's first step instead of continuing
    /// it on the global step counter.
    #[serde(default)]
    pub rewarm: bool,
}

impl StageSchedule {
    /// The rate of global update `global_step` in a stage whose first update is
    /// `stage_start` (a global step).
    pub fn lr(&self, global_step: u64, stage_start: u64) -> f64 {
        let step = if self.rewarm { global_step.saturating_sub(stage_start) } else { global_step };
        self.schedule.lr(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-15, "{a} != {b}");
    }

    #[test]
    fn constant_with_warmup() {
        let s = Schedule::Constant { lr: 1e-3, warmup_steps: 4 };
        let got: Vec<f64> = (0..6).map(|i| s.lr(i)).collect();
        for (g, e) in got.iter().zip([0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3, 1e-3]) {
            close(*g, e);
        }
        assert_eq!(Schedule::Constant { lr: 3e-4, warmup_steps: 0 }.lr(0), 3e-4);
    }

    /// Hand-computed: warmup 2 to 1.0, cosine over 4 steps to 0.1.
    /// step 2: p=0 -> 1.0; 3: p=1/4 -> 0.1 + 0.9 * (1 + cos(pi/4))/2 = 0.1 + 0.9 * 0.853553...;
    /// 4: p=1/2 -> 0.55; 5: p=3/4 -> 0.1 + 0.9 * 0.146446...; 6 and later: 0.1.
    #[test]
    fn cosine_hand_computed() {
        let s = Schedule::Cosine { max_lr: 1.0, min_lr: 0.1, warmup_steps: 2, decay_steps: 4 };
        close(s.lr(0), 0.5);
        close(s.lr(1), 1.0);
        close(s.lr(2), 1.0);
        close(s.lr(3), 0.1 + 0.9 * 0.853_553_390_593_273_8);
        close(s.lr(4), 0.55);
        close(s.lr(5), 0.1 + 0.9 * 0.146_446_609_406_726_24);
        close(s.lr(6), 0.1);
        close(s.lr(1_000_000), 0.1);
    }

    #[test]
    fn wsd_hand_computed() {
        let s = Schedule::Wsd {
            max_lr: 2.0,
            min_lr: 0.0,
            warmup_steps: 2,
            stable_steps: 3,
            decay_steps: 4,
            decay: DecayShape::Linear,
        };
        let expected = [1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.5, 1.0, 0.5, 0.0, 0.0];
        for (i, e) in expected.into_iter().enumerate() {
            close(s.lr(i as u64), e);
        }
        let c = Schedule::Wsd {
            max_lr: 2.0,
            min_lr: 0.0,
            warmup_steps: 2,
            stable_steps: 3,
            decay_steps: 4,
            decay: DecayShape::Cosine,
        };
        close(c.lr(7), 1.0);
        close(c.lr(9), 0.0);
        assert_eq!(s.total_steps(), 9);
    }

    #[test]
    fn rewarming_restarts_at_the_stage_boundary() {
        let schedule = Schedule::Cosine { max_lr: 1.0, min_lr: 0.1, warmup_steps: 2, decay_steps: 4 };
        let cont = StageSchedule { schedule: schedule.clone(), rewarm: false };
        let rewarm = StageSchedule { schedule, rewarm: true };
        // Stage 2 starts at global step 100: continuing stays on the floor, re-warming warms up.
        close(cont.lr(100, 100), 0.1);
        close(rewarm.lr(100, 100), 0.5);
        close(rewarm.lr(101, 100), 1.0);
        close(rewarm.lr(104, 100), 0.55);
        close(rewarm.lr(50, 100), 0.5); // before the stage: saturates to its first step
    }

    #[test]
    fn serde_and_schema() {
        let text = r#"{"schedule": {"kind": "wsd", "max_lr": 3e-4, "min_lr": 3e-5,
            "warmup_steps": 2000, "stable_steps": 80000, "decay_steps": 8000}, "rewarm": true}"#;
        let s: StageSchedule = serde_json::from_str(text).unwrap();
        assert_eq!(
            s.schedule,
            Schedule::Wsd {
                max_lr: 3e-4,
                min_lr: 3e-5,
                warmup_steps: 2000,
                stable_steps: 80000,
                decay_steps: 8000,
                decay: DecayShape::Linear
            }
        );
        let back: StageSchedule = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let err = serde_json::from_str::<Schedule>(r#"{"kind": "constant", "lr": 1.0, "max_lr": 2.0}"#).unwrap_err();
        assert!(err.to_string().contains("max_lr"), "{err}");
        let err = serde_json::from_str::<Schedule>(r#"{"kind": "linear", "lr": 1.0}"#).unwrap_err();
        assert!(err.to_string().contains("linear"), "{err}");
        let schema = serde_json::to_value(schemars::schema_for!(StageSchedule)).unwrap();
        let text = schema.to_string();
        for kind in ["constant", "cosine", "wsd", "rewarm", "decay_steps"] {
            assert!(text.contains(kind), "schema lacks {kind}: {text}");
        }
    }

    #[test]
    fn validation() {
        let s = Schedule::Cosine { max_lr: 1e-4, min_lr: 1e-3, warmup_steps: 0, decay_steps: 10 };
        assert_eq!(s.validate().unwrap_err().to_string(), "schedule: min_lr (0.001) must not exceed max_lr (0.0001)");
        let s = Schedule::Constant { lr: f64::NAN, warmup_steps: 0 };
        assert!(matches!(s.validate(), Err(ScheduleError::BadRate { field: "lr", .. })));
        let s = Schedule::Wsd {
            max_lr: -1.0,
            min_lr: 0.0,
            warmup_steps: 0,
            stable_steps: 0,
            decay_steps: 0,
            decay: DecayShape::Linear,
        };
        assert!(matches!(s.validate(), Err(ScheduleError::BadRate { field: "max_lr", .. })));
    }

    /// A table of (step, lr) for each kind, reviewed by hand once and pinned.
    #[test]
    fn snapshot_table() {
        let schedules = [
            ("constant", Schedule::Constant { lr: 1e-3, warmup_steps: 2 }),
            ("cosine", Schedule::Cosine { max_lr: 1e-3, min_lr: 1e-4, warmup_steps: 2, decay_steps: 8 }),
            (
                "wsd",
                Schedule::Wsd {
                    max_lr: 1e-3,
                    min_lr: 1e-4,
                    warmup_steps: 2,
                    stable_steps: 4,
                    decay_steps: 4,
                    decay: DecayShape::Linear,
                },
            ),
        ];
        let mut table = String::from("step  constant   cosine     wsd\n");
        for step in 0..12u64 {
            table.push_str(&format!("{step:>4}"));
            for (_, s) in &schedules {
                table.push_str(&format!("  {:.6e}", s.lr(step)));
            }
            table.push('\n');
        }
        insta::assert_snapshot!(table);
    }

    proptest! {
        #[test]
        fn lr_stays_within_bounds_and_decays_monotonically(
            max_lr in 1e-6f64..1.0, floor in 0.0f64..1.0, warmup_steps in 0u64..50,
            stable_steps in 0u64..50, decay_steps in 0u64..200, step in 0u64..400,
        ) {
            let min_lr = max_lr * floor;
            for s in [
                Schedule::Cosine { max_lr, min_lr, warmup_steps, decay_steps },
                Schedule::Wsd { max_lr, min_lr, warmup_steps, stable_steps, decay_steps, decay: DecayShape::Linear },
                Schedule::Wsd { max_lr, min_lr, warmup_steps, stable_steps, decay_steps, decay: DecayShape::Cosine },
            ] {
                let lr = s.lr(step);
                prop_assert!(lr > 0.0 && lr <= max_lr * (1.0 + 1e-12), "{s:?} {step} {lr}");
                if step >= warmup_steps {
                    prop_assert!(lr >= min_lr * (1.0 - 1e-12));
                    prop_assert!(s.lr(step + 1) <= lr * (1.0 + 1e-12), "not monotone after warmup");
                }
            }
        }
    }
}
