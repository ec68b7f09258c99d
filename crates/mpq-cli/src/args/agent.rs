//! Flags of the DDPG agent of `mpq search --method haq | cw-hawq` (defaults: the HAQ
//! reference code's, `docs/algorithms.md` §4.7).

use clap::Args;
use mpq::pipeline::WeightQuantizer;
use mpq::search::haq::FlagStyle;

use super::named;

#[derive(Debug, Args)]
#[command(next_help_heading = "HAQ and CW-HAWQ agent (--method haq, cw-hawq)")]
pub(crate) struct AgentArgs {
    /// Data reference; plans are scored on a split held out of its training data.
    #[arg(long)]
    pub(crate) data: Option<String>,
    /// Search episodes.
    #[arg(long, default_value_t = 600)]
    pub(crate) episodes: usize,
    /// Continue the search saved in OUT.haq-state.json (same settings; more --episodes extend it).
    #[arg(long)]
    pub(crate) resume: bool,
    /// Weight quantizer: linear (weights and activations) or kmeans (codebooks, weights only).
    #[arg(long, value_parser = named::<WeightQuantizer>(), default_value = "linear")]
    pub(crate) weight_quantizer: WeightQuantizer,
    /// Training samples held out to score plans.
    #[arg(long, default_value_t = 2000)]
    pub(crate) val_samples: usize,
    /// Training samples that calibrate activation ranges per plan.
    #[arg(long, default_value_t = 512)]
    pub(crate) calib_samples: usize,
    /// SGD steps of fine-tuning under each plan before scoring it (0: post-training only).
    #[arg(long, default_value_t = 0)]
    pub(crate) finetune_steps: usize,
    /// Samples per fine-tuning step.
    #[arg(long, default_value_t = 128)]
    pub(crate) finetune_batch_size: usize,
    /// Fine-tuning learning rate (momentum 0.9, weight decay 4e-5).
    #[arg(long, default_value_t = 0.001)]
    pub(crate) finetune_lr: f64,
    /// Episodes of uniformly random actions before the agent learns.
    #[arg(long, default_value_t = 20)]
    pub(crate) warmup: usize,
    /// Width of the first hidden layer of actor and critic.
    #[arg(long, default_value_t = 300)]
    pub(crate) hidden1: usize,
    /// Width of the second hidden layer.
    #[arg(long, default_value_t = 300)]
    pub(crate) hidden2: usize,
    /// Adam learning rate of the actor.
    #[arg(long, default_value_t = 1e-4)]
    pub(crate) actor_lr: f64,
    /// Adam learning rate of the critic.
    #[arg(long, default_value_t = 1e-3)]
    pub(crate) critic_lr: f64,
    /// Soft-update rate of the target nets.
    #[arg(long, default_value_t = 0.01)]
    pub(crate) tau: f64,
    /// Discount factor.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) discount: f64,
    /// Transitions per agent update.
    #[arg(long, default_value_t = 64)]
    pub(crate) rl_batch_size: usize,
    /// Replay memory in transitions [default: 128 × searched layers].
    #[arg(long)]
    pub(crate) replay_size: Option<usize>,
    /// Exploration standard deviation after the warm-up.
    #[arg(long, default_value_t = 0.5)]
    pub(crate) sigma: f64,
    /// Per-episode decay of the exploration standard deviation.
    #[arg(long, default_value_t = 0.99)]
    pub(crate) sigma_decay: f64,
    /// Rate of the moving reward baseline.
    #[arg(long, default_value_t = 0.5)]
    pub(crate) baseline_rate: f64,
    /// Agent updates per stored transition.
    #[arg(long, default_value_t = 1)]
    pub(crate) updates_per_step: usize,
    /// λ of the reward λ·(accuracy − FP accuracy), accuracies in %.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) reward_scale: f64,
    /// The weight/activation flag of the state: clean, or the reference code's writes.
    #[arg(long, value_parser = named::<FlagStyle>(), default_value = "clean")]
    pub(crate) state_flags: FlagStyle,
}
