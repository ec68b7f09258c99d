//! Training and evaluation: SGD with momentum (Nesterov option) and AdamW, cosine and step
//! learning-rate schedules, an explicit loop in the shape of candle's `mnist-training`
//! example, accuracy/loss evaluation under optional layer hooks (fake quantization), and the
//! learning-rate range test that picks QAT's default learning rate.

mod lr_range;
mod optim;
mod schedule;
mod trainer;

pub use lr_range::{LrLevel, LrRangeConfig, LrRangeResult, lr_range_test, range_rule};
pub use optim::{AdamW, Optimizer, OptimizerKind, Sgd};
pub use schedule::Schedule;
pub(crate) use trainer::validate_loss_and_momentum;
pub use trainer::{
    EpochStats, EvalStats, SampleResults, TrainConfig, TrainReport, cross_entropy, evaluate,
    evaluate_samples, train, train_with,
};
