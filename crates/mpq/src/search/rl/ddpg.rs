//! HAQ (Wang et al., CVPR 2019): the DDPG agent that proposes one bit-width action per step
//! (docs/algorithms.md §4.7); the episode loop that trains it is [`super::train`].
//!
//! - Actor `Linear(S,h1)–ReLU–Linear(h1,h2)–ReLU–Linear(h2,1)–Sigmoid`; critic
//!   `ReLU(Ls(S,h1)(s) + La(1,h1)(a))–Linear(h1,h2)–ReLU–Linear(h2,1)`; PyTorch's default
//!   Linear initialisation `U(−1/√fan_in, 1/√fan_in)` drawn from the seeded generator.
//! - Adam for both; target nets hard-copied at start and soft-updated
//!   `θ' ← (1−τ)θ' + τθ` after every update.
//! - Moving reward baseline `B ← B + α(mean(r_batch) − B)` (first batch sets `B`), critic
//!   target `y = (r − B) + γ·mask·Q'(s', μ'(s'))`, MSE critic loss, actor loss
//!   `−mean Q(s, μ(s))`.
//! - Warm-up episodes act uniformly at random; afterwards actions are
//!   `TruncNormal(μ(s), σ_e)` on `[0, 1]` with `σ_e = σ0·decay^(episode − warmup)`.
//!
//! The networks are the one place `search` touches tensors; they are small and run on the CPU.

use candle::backprop::GradStore;
use candle::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::noise::{TruncNormal, exploration_sigma};
use super::replay::{ReplayBuffer, Transition};
use crate::{Error, Result};

/// Every hyper-parameter of the agent and its training loop; the defaults are the reference
/// code's (docs/algorithms.md §4.7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DdpgConfig {
    /// Width of the first hidden layer of actor and critic (`--hidden1 300`).
    pub hidden1: usize,
    /// Width of the second hidden layer (`--hidden2 300`).
    pub hidden2: usize,
    /// Adam learning rate of the actor.
    pub actor_lr: f64,
    /// Adam learning rate of the critic.
    pub critic_lr: f64,
    /// Soft-update rate of the target nets.
    pub tau: f64,
    /// Discount factor.
    pub gamma: f64,
    /// Mini-batch size of an update.
    pub batch_size: usize,
    /// Replay capacity in transitions (the reference uses 128 × the steps per episode; the
    /// paper quotes about 2000).
    pub replay_capacity: usize,
    /// Episodes of uniform random actions before learning starts (the reference's
    /// `episode <= warmup` makes its 20 into 21; set 21 to replicate).
    pub warmup_episodes: usize,
    /// Exploration standard deviation at the first episode after warm-up.
    pub sigma0: f64,
    /// Per-episode decay factor of the exploration standard deviation.
    pub sigma_decay: f64,
    /// Rate `α` of the moving reward baseline.
    pub baseline_rate: f64,
    /// Updates per stored transition after warm-up (`n_update`).
    pub updates_per_step: usize,
    /// Longest episode accepted before [`super::train`] gives up (guards against an environment
    /// that never ends).
    pub max_episode_steps: usize,
    /// Seed of every random choice (initialisation, exploration, sampling).
    pub seed: u64,
}

impl Default for DdpgConfig {
    fn default() -> Self {
        DdpgConfig {
            hidden1: 300,
            hidden2: 300,
            actor_lr: 1e-4,
            critic_lr: 1e-3,
            tau: 0.01,
            gamma: 1.0,
            batch_size: 64,
            replay_capacity: 2000,
            warmup_episodes: 20,
            sigma0: 0.5,
            sigma_decay: 0.99,
            baseline_rate: 0.5,
            updates_per_step: 1,
            max_episode_steps: 100_000,
            seed: 234,
        }
    }
}

impl DdpgConfig {
    /// Checks ranges: positive sizes and rates, `τ, α ∈ (0, 1]`, `γ ∈ [0, 1]`.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden1", self.hidden1),
            ("hidden2", self.hidden2),
            ("batch-size", self.batch_size),
            ("replay-capacity", self.replay_capacity),
            ("max-episode-steps", self.max_episode_steps),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::config(name, "must be at least 1"));
            }
        }
        let ranges = [
            ("actor-lr", self.actor_lr, 0.0, f64::INFINITY, false),
            ("critic-lr", self.critic_lr, 0.0, f64::INFINITY, false),
            ("tau", self.tau, 0.0, 1.0, false),
            ("baseline-rate", self.baseline_rate, 0.0, 1.0, false),
            ("gamma", self.gamma, 0.0, 1.0, true),
            ("sigma0", self.sigma0, 0.0, f64::INFINITY, true),
            ("sigma-decay", self.sigma_decay, 0.0, 1.0, true),
        ];
        for (name, v, lo, hi, lo_ok) in ranges {
            let above = if lo_ok { v >= lo } else { v > lo };
            if !(v.is_finite() && above && v <= hi) {
                let open = if lo_ok { "[" } else { "(" };
                return Err(Error::config(
                    name,
                    format!("{v} is outside {open}{lo}, {hi}]"),
                ));
            }
        }
        Ok(())
    }
}

/// A linear layer `y = x Wᵀ + b` over trainable variables.
#[derive(Debug)]
struct Dense {
    w: Var,
    b: Var,
}

impl Dense {
    /// PyTorch's default init: weights and biases `U(−1/√fan_in, 1/√fan_in)`.
    fn new(rng: &mut ChaCha8Rng, fan_in: usize, fan_out: usize, dev: &Device) -> Result<Self> {
        let bound = 1.0 / (fan_in as f32).sqrt();
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..=bound)).collect() };
        let w = Tensor::from_vec(draw(fan_in * fan_out), (fan_out, fan_in), dev)?;
        let b = Tensor::from_vec(draw(fan_out), fan_out, dev)?;
        Ok(Dense {
            w: Var::from_tensor(&w)?,
            b: Var::from_tensor(&b)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.w.as_tensor().t()?)?
            .broadcast_add(self.b.as_tensor())?)
    }

    fn vars(&self) -> [&Var; 2] {
        [&self.w, &self.b]
    }
}

/// An independent copy of `vars` (fresh storage).
fn copy_vars(vars: &[&Var]) -> Result<Vec<Var>> {
    vars.iter()
        .map(|v| Ok(Var::from_tensor(&v.as_tensor().copy()?)?))
        .collect()
}

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// `θ' ← (1−τ)θ' + τθ` for each pair. Plain loops: candle runs element-wise ops of 64k
/// elements or more on its thread pool, whose hand-offs cost more than this work.
fn soft_update(target: &[&Var], online: &[&Var], tau: f64) -> Result<()> {
    let tau = tau as f32;
    for (t, o) in target.iter().zip(online) {
        let mut next = flat(t.as_tensor())?;
        for (x, y) in next.iter_mut().zip(flat(o.as_tensor())?) {
            *x = (1.0 - tau) * *x + tau * y;
        }
        t.set(&Tensor::from_vec(next, t.dims(), t.device())?)?;
    }
    Ok(())
}

/// Adam (Kingma & Ba), PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8, no weight decay), in
/// plain loops for the same reason as [`soft_update`].
struct Adam {
    vars: Vec<Var>,
    lr: f64,
    step: i32,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Adam {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    fn new(vars: Vec<Var>, lr: f64) -> Self {
        let zeros = |v: &Var| vec![0.0f32; v.elem_count()];
        Adam {
            m: vars.iter().map(zeros).collect(),
            v: vars.iter().map(zeros).collect(),
            vars,
            lr,
            step: 0,
        }
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let c1 = 1.0 - Self::BETA1.powi(self.step);
        let c2 = 1.0 - Self::BETA2.powi(self.step);
        let step_size = (self.lr / c1) as f32;
        let (b1, b2, eps, c2) = (
            Self::BETA1 as f32,
            Self::BETA2 as f32,
            Self::EPS as f32,
            c2.sqrt() as f32,
        );
        for ((var, m), v) in self.vars.iter().zip(&mut self.m).zip(&mut self.v) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = flat(g)?;
            let mut theta = flat(var.as_tensor())?;
            for (((t, g), m), v) in theta.iter_mut().zip(&g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *t -= step_size * *m / (v.sqrt() / c2 + eps);
            }
            var.set(&Tensor::from_vec(theta, var.dims(), var.device())?)?;
        }
        Ok(())
    }
}

/// Actor or critic: a stack of dense layers. The critic's first two layers are `Ls` and
/// `La`, applied to the state and the action and summed.
#[derive(Debug)]
struct Net {
    layers: Vec<Dense>,
    critic: bool,
}

impl Net {
    fn actor(rng: &mut ChaCha8Rng, s: usize, cfg: &DdpgConfig, dev: &Device) -> Result<Self> {
        Ok(Net {
            layers: vec![
                Dense::new(rng, s, cfg.hidden1, dev)?,
                Dense::new(rng, cfg.hidden1, cfg.hidden2, dev)?,
                Dense::new(rng, cfg.hidden2, 1, dev)?,
            ],
            critic: false,
        })
    }

    fn critic(rng: &mut ChaCha8Rng, s: usize, cfg: &DdpgConfig, dev: &Device) -> Result<Self> {
        Ok(Net {
            layers: vec![
                Dense::new(rng, s, cfg.hidden1, dev)?,
                Dense::new(rng, 1, cfg.hidden1, dev)?,
                Dense::new(rng, cfg.hidden1, cfg.hidden2, dev)?,
                Dense::new(rng, cfg.hidden2, 1, dev)?,
            ],
            critic: true,
        })
    }

    fn vars(&self) -> Vec<&Var> {
        self.layers.iter().flat_map(Dense::vars).collect()
    }

    fn owned_vars(&self) -> Vec<Var> {
        self.vars().into_iter().cloned().collect()
    }

    /// A copy with its own storage (the hard copy that starts a target net).
    fn duplicate(&self) -> Result<Self> {
        let vars = copy_vars(&self.vars())?;
        let layers = vars
            .chunks(2)
            .map(|p| Dense {
                w: p[0].clone(),
                b: p[1].clone(),
            })
            .collect();
        Ok(Net {
            layers,
            critic: self.critic,
        })
    }

    /// Actor: `μ(s) ∈ (0, 1)`, shape `[B, 1]`.
    fn act(&self, s: &Tensor) -> Result<Tensor> {
        let h = self.layers[0].forward(s)?.relu()?;
        let h = self.layers[1].forward(&h)?.relu()?;
        let z = self.layers[2].forward(&h)?;
        Ok((z.neg()?.exp()? + 1.0)?.recip()?)
    }

    /// Critic: `Q(s, a)`, shape `[B, 1]`.
    fn q(&self, s: &Tensor, a: &Tensor) -> Result<Tensor> {
        let h = (self.layers[0].forward(s)? + self.layers[1].forward(a)?)?.relu()?;
        let h = self.layers[2].forward(&h)?.relu()?;
        self.layers[3].forward(&h)
    }
}

/// Losses and baseline of one update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpdateStats {
    /// MSE of the critic against its target.
    pub critic_loss: f64,
    /// `−mean Q(s, μ(s))`.
    pub actor_loss: f64,
    /// The reward baseline after this update.
    pub baseline: f64,
}

/// The DDPG agent: online and target actor/critic, their optimisers, the replay memory, the
/// reward baseline and the seeded generator.
pub struct DdpgAgent {
    pub(super) cfg: DdpgConfig,
    pub(super) state_dim: usize,
    device: Device,
    actor: Net,
    actor_target: Net,
    critic: Net,
    critic_target: Net,
    actor_opt: Adam,
    critic_opt: Adam,
    memory: ReplayBuffer,
    rng: ChaCha8Rng,
    pub(super) baseline: Option<f64>,
    pub(super) episodes: usize,
}

impl std::fmt::Debug for DdpgAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DdpgAgent")
            .field("cfg", &self.cfg)
            .field("state_dim", &self.state_dim)
            .field("memory", &self.memory.len())
            .field("baseline", &self.baseline)
            .field("episodes", &self.episodes)
            .finish_non_exhaustive()
    }
}

impl DdpgAgent {
    /// A fresh agent for observations of `state_dim` values, initialised from `cfg.seed`.
    pub fn new(state_dim: usize, cfg: DdpgConfig) -> Result<Self> {
        cfg.validate()?;
        if state_dim == 0 {
            return Err(Error::config("state dimension", "must be at least 1"));
        }
        let device = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let actor = Net::actor(&mut rng, state_dim, &cfg, &device)?;
        let critic = Net::critic(&mut rng, state_dim, &cfg, &device)?;
        let actor_target = actor.duplicate()?;
        let critic_target = critic.duplicate()?;
        let actor_opt = Adam::new(actor.owned_vars(), cfg.actor_lr);
        let critic_opt = Adam::new(critic.owned_vars(), cfg.critic_lr);
        Ok(DdpgAgent {
            memory: ReplayBuffer::new(cfg.replay_capacity),
            cfg,
            state_dim,
            device,
            actor,
            actor_target,
            critic,
            critic_target,
            actor_opt,
            critic_opt,
            rng,
            baseline: None,
            episodes: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DdpgConfig {
        &self.cfg
    }

    /// The observation length.
    pub fn state_dim(&self) -> usize {
        self.state_dim
    }

    /// The replay memory.
    pub fn memory(&self) -> &ReplayBuffer {
        &self.memory
    }

    /// The moving reward baseline (`None` before the first update).
    pub fn baseline(&self) -> Option<f64> {
        self.baseline
    }

    fn check_state(&self, s: &[f32]) -> Result<()> {
        if s.len() != self.state_dim {
            return Err(Error::ShapeMismatch {
                name: "DDPG state".into(),
                expected: format!("{} values", self.state_dim),
                got: format!("{} values", s.len()),
            });
        }
        if s.iter().any(|x| !x.is_finite()) {
            return Err(Error::NonFinite("DDPG state".into()));
        }
        Ok(())
    }

    fn batch(&self, rows: &[&[f32]], cols: usize) -> Result<Tensor> {
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Ok(Tensor::from_vec(flat, (rows.len(), cols), &self.device)?)
    }

    /// The actor's deterministic action `μ(s)` (no exploration).
    pub fn act(&self, state: &[f32]) -> Result<f32> {
        self.check_state(state)?;
        let s = self.batch(&[state], self.state_dim)?;
        let a = self.actor.act(&s)?.flatten_all()?.to_vec1::<f32>()?;
        a.first()
            .copied()
            .ok_or_else(|| Error::NonFinite("empty actor output".into()))
    }

    /// The exploring action of `episode`: uniform in `[0, 1)` during warm-up, otherwise
    /// `TruncNormal(μ(s), σ_e)` on `[0, 1]`.
    pub fn select_action(&mut self, state: &[f32], episode: usize) -> Result<f32> {
        if episode < self.cfg.warmup_episodes {
            self.check_state(state)?;
            return Ok(self.rng.random_range(0.0..1.0));
        }
        let mu = self.act(state)?;
        let sigma = exploration_sigma(
            self.cfg.sigma0,
            self.cfg.sigma_decay,
            episode,
            self.cfg.warmup_episodes,
        );
        Ok(TruncNormal::unit(f64::from(mu), sigma).sample(&mut self.rng) as f32)
    }

    /// Stores a transition in the replay memory.
    pub fn observe(&mut self, t: Transition) -> Result<()> {
        self.check_state(&t.state)?;
        self.check_state(&t.next_state)?;
        if !(t.action.is_finite() && t.reward.is_finite()) {
            return Err(Error::NonFinite("DDPG action or reward".into()));
        }
        self.memory.push(t);
        Ok(())
    }

    /// One critic and one actor step on a sampled mini-batch, then the soft target update.
    /// `None` when the memory is empty.
    pub fn update(&mut self) -> Result<Option<UpdateStats>> {
        let batch = self.memory.sample(&mut self.rng, self.cfg.batch_size);
        if batch.is_empty() {
            return Ok(None);
        }
        let n = batch.len();
        let mean_r = batch.iter().map(|t| t.reward).sum::<f64>() / n as f64;
        let b = match self.baseline {
            None => mean_r,
            Some(b) => b + self.cfg.baseline_rate * (mean_r - b),
        };
        self.baseline = Some(b);
        let sd = self.state_dim;
        let s = self.batch(
            &batch.iter().map(|t| t.state.as_slice()).collect::<Vec<_>>(),
            sd,
        )?;
        let s2 = self.batch(
            &batch
                .iter()
                .map(|t| t.next_state.as_slice())
                .collect::<Vec<_>>(),
            sd,
        )?;
        let col = |f: &dyn Fn(&Transition) -> f32| -> Result<Tensor> {
            let v: Vec<f32> = batch.iter().map(|t| f(t)).collect();
            Ok(Tensor::from_vec(v, (n, 1), &self.device)?)
        };
        let a = col(&|t| t.action)?;
        let r = col(&|t| (t.reward - b) as f32)?;
        let mask = col(&|t| if t.done { 0.0 } else { 1.0 })?;

        let q_next = self
            .critic_target
            .q(&s2, &self.actor_target.act(&s2)?)?
            .detach();
        let y = (r + ((mask * q_next)? * self.cfg.gamma)?)?.detach();
        let critic_loss = (self.critic.q(&s, &a)? - y)?.sqr()?.mean_all()?;
        self.critic_opt.step(&critic_loss.backward()?)?;

        let actor_loss = self.critic.q(&s, &self.actor.act(&s)?)?.mean_all()?.neg()?;
        self.actor_opt.step(&actor_loss.backward()?)?;

        soft_update(&self.actor_target.vars(), &self.actor.vars(), self.cfg.tau)?;
        soft_update(
            &self.critic_target.vars(),
            &self.critic.vars(),
            self.cfg.tau,
        )?;

        let stats = UpdateStats {
            critic_loss: f64::from(critic_loss.to_dtype(DType::F32)?.to_scalar::<f32>()?),
            actor_loss: f64::from(actor_loss.to_dtype(DType::F32)?.to_scalar::<f32>()?),
            baseline: b,
        };
        if !(stats.critic_loss.is_finite() && stats.actor_loss.is_finite()) {
            return Err(Error::NonFinite(format!("DDPG losses {stats:?}")));
        }
        Ok(Some(stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(vars: &[&Var]) -> Vec<Vec<f32>> {
        vars.iter()
            .map(|v| {
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn soft_update_with_tau_one_copies_exactly() {
        let mut agent = DdpgAgent::new(3, DdpgConfig::default()).unwrap();
        // Make online and target differ: a few updates with τ = 0 leave the targets alone.
        for i in 0..10 {
            agent
                .observe(Transition {
                    state: vec![0.1 * i as f32, 0.2, 0.3],
                    action: 0.05 * i as f32,
                    reward: f64::from(i),
                    next_state: vec![0.0, 0.1, 0.2],
                    done: i % 3 == 0,
                })
                .unwrap();
        }
        agent.cfg.tau = 0.0;
        // τ = 0 is not a valid configuration, but soft_update itself accepts it.
        let before = values(&agent.critic_target.vars());
        agent.update().unwrap();
        assert_eq!(values(&agent.critic_target.vars()), before);
        assert_ne!(values(&agent.critic.vars()), before);
        assert_ne!(
            values(&agent.actor.vars()),
            values(&agent.actor_target.vars())
        );

        soft_update(&agent.actor_target.vars(), &agent.actor.vars(), 1.0).unwrap();
        soft_update(&agent.critic_target.vars(), &agent.critic.vars(), 1.0).unwrap();
        assert_eq!(
            values(&agent.actor_target.vars()),
            values(&agent.actor.vars())
        );
        assert_eq!(
            values(&agent.critic_target.vars()),
            values(&agent.critic.vars())
        );
        // The copies are independent storage: a further online step leaves the targets.
        let copied = values(&agent.actor_target.vars());
        agent.update().unwrap();
        assert_eq!(values(&agent.actor_target.vars()), copied);
    }

    #[test]
    fn adam_matches_the_update_rule_computed_in_f64() {
        let x = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let mut opt = Adam::new(vec![x.clone()], 0.1);
        let (mut theta, mut m, mut v) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
        for t in 1..=3 {
            // loss = Σ θ³ → gradient 3θ².
            let loss = x.as_tensor().powf(3.0).unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            for i in 0..2 {
                let g = 3.0 * theta[i] * theta[i];
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let (mh, vh) = (
                    m[i] / (1.0 - 0.9f64.powi(t)),
                    v[i] / (1.0 - 0.999f64.powi(t)),
                );
                theta[i] -= 0.1 * mh / (vh.sqrt() + 1e-8);
            }
        }
        let got = values(&[&x]).concat();
        for (g, w) in got.iter().zip(theta) {
            assert!((f64::from(*g) - w).abs() < 1e-5, "{got:?} vs {theta:?}");
        }
    }

    #[test]
    fn initialisation_is_seeded_and_follows_pytorch_bounds() {
        let a = DdpgAgent::new(4, DdpgConfig::default()).unwrap();
        let b = DdpgAgent::new(4, DdpgConfig::default()).unwrap();
        let c = DdpgAgent::new(
            4,
            DdpgConfig {
                seed: 1,
                ..DdpgConfig::default()
            },
        )
        .unwrap();
        assert_eq!(values(&a.actor.vars()), values(&b.actor.vars()));
        assert_eq!(values(&a.critic.vars()), values(&b.critic.vars()));
        assert_ne!(values(&a.actor.vars()), values(&c.actor.vars()));
        assert_eq!(
            values(&a.actor.vars()),
            values(&a.actor_target.vars()),
            "hard copy"
        );
        for d in &a.critic.layers {
            let fan_in = d.w.as_tensor().dims()[1];
            let bound = 1.0 / (fan_in as f32).sqrt();
            for v in values(&d.vars()).concat() {
                assert!(v.abs() <= bound);
            }
        }
        assert!(
            DdpgAgent::new(
                4,
                DdpgConfig {
                    tau: 0.0,
                    ..DdpgConfig::default()
                }
            )
            .is_err()
        );
        assert!(DdpgAgent::new(0, DdpgConfig::default()).is_err());
    }
}
