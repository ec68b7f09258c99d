//! The DDPG agent of HAQ (Wang, Liu, Lin, Lin, Han, "HAQ: Hardware-Aware Automated
//! Quantization with Mixed Precision", CVPR 2019), as plain building blocks.
//!
//! - [`DdpgAgent`] / [`DdpgConfig`] ([`ddpg`]): actor, critic, their target nets, Adam, soft
//!   updates, the moving reward baseline and truncated-normal exploration (docs/algorithms.md §4.7);
//! - [`ReplayBuffer`] ([`replay`]): the ring replay memory;
//! - [`TruncNormal`] ([`noise`]): exploration noise on `[0, 1]` and its decay schedule;
//! - [`action_to_bits`], [`repair_linear`], [`repair_weights`] ([`bits`]): the action → bit
//!   mapping (§4.4) and the "sequentially decrease bit-widths" budget repair (§4.5);
//! - [`Environment`], [`train`] and [`train_agent`] (this file): the episode loop of §4.2 over
//!   any plain-data environment, recorded as a [`History`] of [`EpisodeRecord`]s.
//!
//! Everything outside the agent's networks is tensor-free: states are `f32` slices, actions
//! `f32` in `[0, 1]`, rewards `f64`. Every random choice (network initialisation included)
//! comes from a `ChaCha8Rng` seeded by [`DdpgConfig::seed`].

pub mod bits;
pub mod ddpg;
pub mod noise;
pub mod replay;

pub use bits::{RepairOptions, action_to_bits, repair_linear, repair_weights};
pub use ddpg::{DdpgAgent, DdpgConfig, UpdateStats};
pub use noise::{TruncNormal, exploration_sigma};
pub use replay::{ReplayBuffer, Transition};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One environment step's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The next observation (`state_dim` values; ignored by the learner when `done`).
    pub state: Vec<f32>,
    /// The step's reward (HAQ rewards only the last step; [`train`] gives every step of an
    /// episode the final reward).
    pub reward: f64,
    /// Whether the episode ended with this step.
    pub done: bool,
}

/// An episodic environment with a one-dimensional continuous action in `[0, 1]`.
pub trait Environment {
    /// The length of every observation.
    fn state_dim(&self) -> usize;
    /// Starts a new episode and returns its first observation.
    fn reset(&mut self) -> Result<Vec<f32>>;
    /// Applies `action` (in `[0, 1]`) and returns the next observation, reward and end flag.
    fn step(&mut self, action: f32) -> Result<Step>;
}

/// What one training episode did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRecord {
    /// Episode index (counting from 0 over the agent's life).
    pub episode: usize,
    /// The episode's final reward.
    pub reward: f64,
    /// The actions taken, in order.
    pub actions: Vec<f32>,
    /// Exploration σ (`None` during warm-up).
    pub sigma: Option<f64>,
    /// Mean critic loss over the episode's updates (`None` without updates).
    pub critic_loss: Option<f64>,
    /// Mean actor loss over the episode's updates.
    pub actor_loss: Option<f64>,
    /// The reward baseline after the episode.
    pub baseline: Option<f64>,
}

/// The record of a training run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Every episode, in order.
    pub episodes: Vec<EpisodeRecord>,
    /// The best final reward seen (`-inf` before any episode).
    pub best_reward: f64,
    /// The episode that first reached it.
    pub best_episode: Option<usize>,
    /// Its actions.
    pub best_actions: Vec<f32>,
}

/// Trains a fresh agent (from `cfg`) on `env` for `episodes` episodes; see [`train_agent`].
pub fn train<E: Environment>(
    env: &mut E,
    cfg: &DdpgConfig,
    episodes: usize,
    on_episode: impl FnMut(&E, &EpisodeRecord) -> Result<()>,
) -> Result<History> {
    let mut agent = DdpgAgent::new(env.state_dim(), cfg.clone())?;
    train_agent(&mut agent, env, episodes, on_episode)
}

/// Runs `episodes` more episodes of HAQ's loop (docs/algorithms.md §4.2): act until `done`, give every
/// transition the final reward, store them, and after the warm-up run `updates_per_step`
/// updates per transition at the episode's end. Tracks the best reward and its actions and
/// calls `on_episode` with the environment after each episode (an error from it stops the
/// run).
pub fn train_agent<E: Environment>(
    agent: &mut DdpgAgent,
    env: &mut E,
    episodes: usize,
    mut on_episode: impl FnMut(&E, &EpisodeRecord) -> Result<()>,
) -> Result<History> {
    if env.state_dim() != agent.state_dim {
        return Err(Error::ShapeMismatch {
            name: "environment state".into(),
            expected: format!("{} values", agent.state_dim),
            got: format!("{} values", env.state_dim()),
        });
    }
    let mut hist = History {
        best_reward: f64::NEG_INFINITY,
        ..History::default()
    };
    for _ in 0..episodes {
        let episode = agent.episodes;
        agent.episodes += 1;
        let mut s = env.reset()?;
        let mut steps: Vec<(Vec<f32>, f32, Vec<f32>, bool)> = Vec::new();
        let reward = loop {
            if steps.len() >= agent.cfg.max_episode_steps {
                return Err(Error::config(
                    "max-episode-steps",
                    format!("episode {episode} did not end within {} steps", steps.len()),
                ));
            }
            let a = agent.select_action(&s, episode)?;
            let step = env.step(a)?;
            if !step.reward.is_finite() {
                return Err(Error::NonFinite(format!(
                    "reward {} in episode {episode}",
                    step.reward
                )));
            }
            steps.push((s, a, step.state.clone(), step.done));
            s = step.state;
            if step.done {
                break step.reward;
            }
        };
        let learning = episode >= agent.cfg.warmup_episodes;
        let actions: Vec<f32> = steps.iter().map(|t| t.1).collect();
        let (mut closs, mut aloss, mut nup) = (0.0, 0.0, 0usize);
        for (state, action, next_state, done) in steps {
            agent.observe(Transition {
                state,
                action,
                reward,
                next_state,
                done,
            })?;
            if learning {
                for _ in 0..agent.cfg.updates_per_step {
                    if let Some(u) = agent.update()? {
                        closs += u.critic_loss;
                        aloss += u.actor_loss;
                        nup += 1;
                    }
                }
            }
        }
        let rec = EpisodeRecord {
            episode,
            reward,
            sigma: learning.then(|| {
                exploration_sigma(
                    agent.cfg.sigma0,
                    agent.cfg.sigma_decay,
                    episode,
                    agent.cfg.warmup_episodes,
                )
            }),
            critic_loss: (nup > 0).then(|| closs / nup as f64),
            actor_loss: (nup > 0).then(|| aloss / nup as f64),
            baseline: agent.baseline,
            actions,
        };
        if reward > hist.best_reward {
            hist.best_reward = reward;
            hist.best_episode = Some(episode);
            hist.best_actions = rec.actions.clone();
        }
        on_episode(env, &rec)?;
        hist.episodes.push(rec);
    }
    Ok(hist)
}

/// Checks the run settings an agent search shares: at least one episode, and a positive,
/// finite reward scale `λ` (the reward is `λ·(acc − acc_FP)`).
pub fn check_run(episodes: usize, reward_scale: f64) -> Result<()> {
    if episodes == 0 {
        return Err(Error::config("episodes", "must be at least 1"));
    }
    if !(reward_scale.is_finite() && reward_scale > 0.0) {
        return Err(Error::config("reward-scale", "must be a positive number"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step per episode, reward `−(a − 0.7)²`.
    struct Toy;

    impl Environment for Toy {
        fn state_dim(&self) -> usize {
            2
        }
        fn reset(&mut self) -> Result<Vec<f32>> {
            Ok(vec![1.0, 0.5])
        }
        fn step(&mut self, action: f32) -> Result<Step> {
            Ok(Step {
                state: vec![0.0, 0.0],
                reward: -(f64::from(action) - 0.7).powi(2),
                done: true,
            })
        }
    }

    /// The toy's configuration: the defaults except
    /// - `warmup_episodes: 10`: a one-step toy fills the memory fast; 10 random episodes
    ///   already cover [0, 1];
    /// - `actor_lr: 1e-3`: with one step per episode there is one update per episode, so the
    ///   default 1e-4 would need thousands of episodes to move the actor to 0.7.
    fn toy_config(seed: u64) -> DdpgConfig {
        DdpgConfig {
            warmup_episodes: 10,
            actor_lr: 1e-3,
            seed,
            ..DdpgConfig::default()
        }
    }

    #[test]
    fn toy_actor_converges_to_the_best_action() {
        let start = std::time::Instant::now();
        let mut agent = DdpgAgent::new(2, toy_config(234)).unwrap();
        let hist = train_agent(&mut agent, &mut Toy, 300, |_, _| Ok(())).unwrap();
        let mu = agent.act(&Toy.reset().unwrap()).unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert!(
            (mu - 0.7).abs() <= 0.05,
            "actor output {mu} after 300 episodes ({secs:.1} s)"
        );
        assert_eq!(hist.episodes.len(), 300);
        assert!(
            hist.episodes[..10]
                .iter()
                .all(|e| e.sigma.is_none() && e.critic_loss.is_none())
        );
        assert!(hist.episodes[10..].iter().all(|e| e.critic_loss.is_some()));
        let best = hist.best_episode.unwrap();
        assert_eq!(hist.best_reward, hist.episodes[best].reward);
        assert!(hist.episodes.iter().all(|e| e.reward <= hist.best_reward));
        assert_eq!(hist.best_actions, hist.episodes[best].actions);
    }

    #[test]
    fn same_seed_gives_the_same_history() {
        let run = |seed| {
            let mut seen = 0;
            let h = train(&mut Toy, &toy_config(seed), 30, |_, _| {
                seen += 1;
                Ok(())
            })
            .unwrap();
            assert_eq!(seen, 30);
            h
        };
        let (a, b) = (run(5), run(5));
        assert_eq!(a, b);
        assert_ne!(a.episodes, run(6).episodes);
    }
}
