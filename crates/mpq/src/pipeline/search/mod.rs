//! `mpq search`: a policy within a budget, by any method, from a typed request. Every method
//! first runs the feasibility pre-flight (the smallest achievable value of each budget,
//! layers that pins and ties leave without a choice); an infeasible request is an input
//! error with that report, and nothing is written. The methods (`docs/algorithms.md`):
//! `uniform` and `random` baselines, HAWQ (`hawq-v1`), HAWQ-V2's exact frontier (`pareto`),
//! HAWQ-V3's integer program (`ilp`), LIMPQ (`limpq`), HAQ's agent (`haq`) and CW-HAWQ's
//! per-channel bits (`cw-hawq`, and its exact grid baseline `cw-ilp`).

mod agent;
mod inputs;
mod outcome;
mod table;

pub use outcome::{SearchOutcome, UniformReference};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ModelSource;
use crate::Named;
use crate::cost::HardwareModel;
use crate::plan::{BitWidth, WeightRange};
use crate::progress::Progress;
use crate::search::haq::FlagStyle;
use crate::search::{
    self, Budget, OmegaMetric, Pin, SearchOptions, SearchSpace, limpq::DEFAULT_ALPHA,
};
use crate::{Error, Result};

/// HAQ's weight quantizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightQuantizer {
    /// Symmetric uniform (the latency and energy experiments).
    #[default]
    Linear,
    /// A k-means codebook per layer, weights only (the model-size experiment).
    Kmeans,
}

/// The DDPG agent of HAQ and CW-HAWQ and how it scores plans (defaults: the HAQ reference
/// code's, `docs/algorithms.md` §4.6–§4.7).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentOptions {
    /// Data reference; plans are scored on a split held out of its training data.
    pub data: String,
    /// Search episodes.
    pub episodes: usize,
    /// Training samples held out to score plans.
    pub val_samples: usize,
    /// Training samples that calibrate activation ranges per plan.
    pub calib_samples: usize,
    /// SGD steps of fine-tuning under each plan before scoring it (0: post-training only).
    pub finetune_steps: usize,
    /// Samples per fine-tuning step.
    pub finetune_batch_size: usize,
    /// Fine-tuning learning rate (momentum 0.9, weight decay 4e-5).
    pub finetune_lr: f64,
    /// Episodes of uniformly random actions before the agent learns.
    pub warmup: usize,
    /// Width of the first hidden layer of actor and critic.
    pub hidden1: usize,
    /// Width of the second hidden layer.
    pub hidden2: usize,
    /// Adam learning rate of the actor.
    pub actor_lr: f64,
    /// Adam learning rate of the critic.
    pub critic_lr: f64,
    /// Soft-update rate of the target nets.
    pub tau: f64,
    /// Discount factor.
    pub discount: f64,
    /// Transitions per agent update.
    pub rl_batch_size: usize,
    /// Replay memory in transitions (`None`: 128 × searched layers).
    pub replay_size: Option<usize>,
    /// Exploration standard deviation after the warm-up.
    pub sigma: f64,
    /// Per-episode decay of the exploration standard deviation.
    pub sigma_decay: f64,
    /// Rate of the moving reward baseline.
    pub baseline_rate: f64,
    /// Agent updates per stored transition.
    pub updates_per_step: usize,
    /// `λ` of the reward `λ·(accuracy − FP accuracy)`, accuracies in %.
    pub reward_scale: f64,
}

impl AgentOptions {
    /// The reference defaults, scoring plans on `data`.
    pub fn new(data: impl Into<String>) -> AgentOptions {
        AgentOptions {
            data: data.into(),
            episodes: 600,
            val_samples: 2000,
            calib_samples: 512,
            finetune_steps: 0,
            finetune_batch_size: 128,
            finetune_lr: 0.001,
            warmup: 20,
            hidden1: 300,
            hidden2: 300,
            actor_lr: 1e-4,
            critic_lr: 1e-3,
            tau: 0.01,
            discount: 1.0,
            rl_batch_size: 64,
            replay_size: None,
            sigma: 0.5,
            sigma_decay: 0.99,
            baseline_rate: 0.5,
            updates_per_step: 1,
            reward_scale: 0.1,
        }
    }
}

/// HAQ's options.
#[derive(Debug, Clone, PartialEq)]
pub struct HaqOptions {
    /// The agent and its reward.
    pub agent: AgentOptions,
    /// The weight quantizer.
    pub weight_quantizer: WeightQuantizer,
    /// The weight/activation flag of the state: clean, or the reference code's.
    pub state_flags: FlagStyle,
}

/// The search methods, without their options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MethodKind {
    /// [`Method::Uniform`].
    Uniform,
    /// [`Method::Random`].
    Random,
    /// [`Method::HawqV1`].
    HawqV1,
    /// [`Method::Pareto`].
    Pareto,
    /// [`Method::Ilp`].
    Ilp,
    /// [`Method::Haq`].
    Haq,
    /// [`Method::Limpq`].
    Limpq,
    /// [`Method::CwHawq`].
    CwHawq,
    /// [`Method::CwIlp`].
    CwIlp,
}

/// A search method with its own options.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Method {
    /// The uniform plan within budget of least Ω (then the most balanced W/A).
    Uniform,
    /// Seeded random plans drawn near the budget (within 2% of the tightest one).
    Random {
        /// Draws that try to land within 2% of the tightest budget.
        max_tries: usize,
    },
    /// HAWQ: bits non-increasing in top eigenvalue per parameter, plus a fine-tuning order.
    HawqV1,
    /// HAWQ-V2: the exact (size, Ω) frontier and its best point within budget.
    Pareto,
    /// HAWQ-V3's integer program: least Ω under every budget (exact).
    Ilp,
    /// LIMPQ: least learned importance under every budget, the same exact program.
    Limpq {
        /// Weight of the weight indicators against the activation ones.
        alpha: f64,
    },
    /// HAQ: a DDPG agent proposes bits layer by layer, rewarded by held-out accuracy.
    Haq(HaqOptions),
    /// CW-HAWQ: a DDPG agent picks per-layer channel ratios; channels get bits in trace
    /// order.
    CwHawq(AgentOptions),
    /// CW-HAWQ's exact baseline: channel ratios on a grid.
    CwIlp {
        /// Parts of the ratio grid per layer (8: eighths).
        ratio_grid: usize,
    },
}

impl Method {
    /// LIMPQ with the paper's `α`.
    pub fn limpq() -> Method {
        Method::Limpq {
            alpha: DEFAULT_ALPHA,
        }
    }

    /// Which method this is.
    pub fn kind(&self) -> MethodKind {
        match self {
            Method::Uniform => MethodKind::Uniform,
            Method::Random { .. } => MethodKind::Random,
            Method::HawqV1 => MethodKind::HawqV1,
            Method::Pareto => MethodKind::Pareto,
            Method::Ilp => MethodKind::Ilp,
            Method::Limpq { .. } => MethodKind::Limpq,
            Method::Haq(_) => MethodKind::Haq,
            Method::CwHawq(_) => MethodKind::CwHawq,
            Method::CwIlp { .. } => MethodKind::CwIlp,
        }
    }

    /// The method's name in plans and messages.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The `mpq analyze --metric` whose file the method needs, if it needs one.
    pub fn sensitivity_metric(&self) -> Option<&'static str> {
        match self {
            Method::HawqV1 => Some("eigen"),
            Method::Pareto | Method::Ilp => Some("trace"),
            Method::Limpq { .. } => Some("limpq"),
            Method::CwHawq(_) | Method::CwIlp { .. } => Some("channel-trace"),
            _ => None,
        }
    }

    /// Whether the method searches per-channel weight bits.
    pub fn channel_wise(&self) -> bool {
        matches!(self, Method::CwHawq(_) | Method::CwIlp { .. })
    }

    /// Whether the method searches paired formats (`--formats`): every layer-wise method
    /// but the agents'.
    pub fn takes_formats(&self) -> bool {
        matches!(
            self.kind(),
            MethodKind::Uniform
                | MethodKind::Random
                | MethodKind::HawqV1
                | MethodKind::Pareto
                | MethodKind::Ilp
                | MethodKind::Limpq
        )
    }

    /// The agent's options (HAQ, CW-HAWQ).
    pub fn agent(&self) -> Option<&AgentOptions> {
        match self {
            Method::Haq(h) => Some(&h.agent),
            Method::CwHawq(a) => Some(a),
            _ => None,
        }
    }
}

/// Resource limits: the search's [`Budget`] (any combination; `None` is no limit), or a BitOps
/// limit given as a uniform plan's widths.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetSpec {
    /// The limits as the search takes them.
    #[serde(flatten)]
    pub limits: Budget,
    /// A BitOps budget equal to the uniform plan at these `(w, a)` bits, pinned layers at
    /// their pins (LIMPQ's "average wb × ab" target); excludes `limits.max_bops_g`.
    pub bops_as: Option<(BitWidth, BitWidth)>,
}

/// How Ω is formed from a sensitivity file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OmegaOptions {
    /// The weight curvature (`None`: eigenvalues for `hawq-v1`, traces otherwise).
    pub metric: Option<OmegaMetric>,
    /// Weight of the activation term (0 turns it off).
    pub act_weight: f64,
}

impl Default for OmegaOptions {
    fn default() -> Self {
        OmegaOptions {
            metric: None,
            act_weight: 1.0,
        }
    }
}

/// `mpq search`.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// The model (its layer table; its weights for Ω's quantization errors).
    pub model: ModelSource,
    /// The method.
    pub method: Method,
    /// The sensitivity file (`mpq analyze`; LIMPQ's indicators for `limpq`).
    pub sensitivity: Option<PathBuf>,
    /// The budget.
    pub budget: BudgetSpec,
    /// Candidate weight bits (`None`: the method's default).
    pub w_bits: Option<Vec<BitWidth>>,
    /// Candidate activation bits (`None`: the method's default).
    pub a_bits: Option<Vec<BitWidth>>,
    /// Paired `(w_bits, a_bits)` formats each searched layer chooses from (HAWQ-V3's W4A4 or
    /// W8A8), instead of the `w_bits × a_bits` grid; `None`: the grid.
    pub formats: Option<Vec<(BitWidth, BitWidth)>>,
    /// Hardware model of latency and energy budgets (`bitfusion`, `bismo`, a file).
    pub hardware: Option<String>,
    /// Layers at fixed bits.
    pub pins: Vec<Pin>,
    /// Groups of layers that share bits.
    pub ties: Vec<Vec<String>>,
    /// Range rule of the plan's symmetric weight quantizer (recorded in the plan, and used
    /// for Ω's weight errors).
    pub weight_range: WeightRange,
    /// How Ω is formed.
    pub omega: OmegaOptions,
    /// Seed of every random choice.
    pub seed: u64,
    /// The policy file to write (with its side files); `None` writes nothing.
    pub out: Option<PathBuf>,
    /// Continue the search saved next to the policy (`OUT.haq-state.json`,
    /// `OUT.cw-state.json`; HAQ and CW-HAWQ only).
    pub resume: bool,
    /// Search the problem table at this path (a CSV of Ω and costs per layer and choice)
    /// instead of a model: `model` is then not opened.
    pub table: Option<PathBuf>,
}

/// The suffixes of the files a search writes beside its policy `P.json` (`P.<suffix>`).
pub(super) mod side {
    /// HAWQ-V2's frontier (`mpq.frontier`).
    pub(crate) const FRONTIER_JSON: &str = "frontier.json";
    /// The frontier's picture.
    pub(crate) const FRONTIER_SVG: &str = "frontier.svg";
    /// An agent's learning curve.
    pub(crate) const CURVE_SVG: &str = "curve.svg";
    /// HAQ's search state.
    pub(crate) const HAQ_STATE: &str = "haq-state.json";
    /// CW-HAWQ's search state.
    pub(crate) const CW_STATE: &str = "cw-state.json";
    /// Every one of them (what an output must not land on).
    pub(crate) const ALL: [&str; 5] = [FRONTIER_JSON, FRONTIER_SVG, CURVE_SVG, HAQ_STATE, CW_STATE];
}

impl SearchRequest {
    /// A request with no budget, the method's default candidates and no output file.
    pub fn new(model: ModelSource, method: Method) -> SearchRequest {
        SearchRequest {
            model,
            method,
            sensitivity: None,
            budget: BudgetSpec::default(),
            w_bits: None,
            a_bits: None,
            formats: None,
            hardware: None,
            pins: Vec::new(),
            ties: Vec::new(),
            weight_range: WeightRange::MaxAbs,
            omega: OmegaOptions::default(),
            seed: 0,
            out: None,
            resume: false,
            table: None,
        }
    }

    /// Refuses a request whose policy or side files (`OUT.frontier.json`, `OUT.curve.svg`,
    /// the agent's state, …) would land on one of its inputs.
    pub fn refuse_overwrite(&self) -> Result<()> {
        let mut inputs: Vec<(&str, &std::path::Path)> = Vec::new();
        if self.table.is_none() {
            inputs.extend(crate::pipeline::model_file(&self.model).map(|m| ("model", m)));
        }
        inputs.extend(self.sensitivity.as_deref().map(|p| ("sensitivity file", p)));
        inputs.extend(self.table.as_deref().map(|p| ("problem table", p)));
        inputs.extend(
            self.hardware
                .as_deref()
                .map(|h| ("hardware file", std::path::Path::new(h))),
        );
        let Some(out) = &self.out else {
            return Ok(());
        };
        let sides: Vec<PathBuf> = side::ALL
            .iter()
            .map(|s| crate::pipeline::side_path(out, s))
            .collect();
        let outputs: Vec<&std::path::Path> = std::iter::once(out.as_path())
            .chain(sides.iter().map(PathBuf::as_path))
            .collect();
        crate::outputs::refuse_overwrite(&inputs, &outputs)
    }

    /// Option combinations that cannot work, found before any file is read.
    pub fn validate(&self) -> Result<()> {
        let m = &self.method;
        if let Some(a) = m.agent()
            && a.data.is_empty()
        {
            return Err(Error::Usage(format!(
                "--method {} needs --data (plans are scored on a split held out of its \
                     training data)",
                m.name()
            )));
        }
        if self.resume && !matches!(m, Method::Haq(_) | Method::CwHawq(_)) {
            return Err(Error::Usage(
                "--resume applies to --method haq and cw-hawq only".into(),
            ));
        }
        if let (Some(metric), None, None) = (m.sensitivity_metric(), &self.sensitivity, &self.table)
        {
            return Err(Error::Usage(format!(
                "--method {} needs --sensitivity S.json (write one with `mpq analyze --metric \
                 {metric} --out S.json`)",
                m.name()
            )));
        }
        let b = &self.budget;
        for (flag, v) in [
            ("max-latency-ms", b.limits.max_latency_ms),
            ("max-energy-mj", b.limits.max_energy_mj),
        ] {
            if v.is_some() && self.hardware.is_none() {
                return Err(Error::Usage(format!(
                    "--{flag} needs a hardware model: --hardware bitfusion|bismo|PATH.toml|PATH.csv"
                )));
            }
        }
        if b.bops_as.is_some() && b.limits.max_bops_g.is_some() {
            return Err(Error::Usage("--bops-as conflicts with --max-bops".into()));
        }
        if matches!(m, Method::Haq(_))
            && !inputs::counts_activations(b)
            && self.a_bits.as_ref().is_some_and(|a| a.len() > 1)
        {
            return Err(Error::Usage(
                "--method haq under size, average-bit or compression budgets searches weight \
                 bits only: give one --a-bits value (default 8), or add a BitOps, latency or \
                 energy budget"
                    .into(),
            ));
        }
        if self.formats.is_some() && !m.takes_formats() {
            return Err(Error::Usage(format!(
                "--formats applies to uniform, random, hawq-v1, pareto, ilp and limpq, not {}",
                m.name()
            )));
        }
        let ratio_needs_hw = [
            ("latency-ratio", b.limits.latency_ratio),
            ("energy-ratio", b.limits.energy_ratio),
        ];
        for (flag, v) in ratio_needs_hw {
            if v.is_some() && self.hardware.is_none() {
                return Err(Error::Usage(format!(
                    "--{flag} needs a hardware model: --hardware bitfusion|bismo|PATH.toml|PATH.csv"
                )));
            }
        }
        if self.table.is_some() {
            table::validate(self)?;
        }
        if let Method::CwIlp { ratio_grid: 0 } = m {
            return Err(Error::Usage("--ratio-grid must be at least 1".into()));
        }
        Ok(())
    }
}

/// Runs the search of `req`, and writes the policy (and its side files) when `req.out` is
/// set.
pub fn search(req: &SearchRequest, progress: &mut dyn Progress) -> Result<SearchOutcome> {
    req.validate()?;
    req.refuse_overwrite()?;
    if let Some(path) = &req.table {
        return table::search(req, path, progress);
    }
    let model = req.model.open()?;
    let layers = model.graph.layer_infos()?;
    let hw = req
        .hardware
        .as_deref()
        .map(HardwareModel::from_reference)
        .transpose()?;
    let sens = inputs::Sensitivity::load(req)?;
    let cands = inputs::candidates(req, sens.indicators());
    let mut opts = SearchOptions {
        pins: req.pins.clone(),
        ties: req.ties.clone(),
        quantizer: inputs::quantizer(&req.method),
        formats: req.formats.clone(),
    };
    // `--bops-as` is the same budget for every method: the uniform plan with the user's pins
    // only (a method's own pins, such as LIMPQ's 8-bit ends, count against it, not in it).
    let b = &req.budget;
    let mut budget = b.limits.clone();
    if let Some(wa) = b.bops_as {
        budget.max_bops_g = Some(inputs::uniform_bops(&layers, wa, &req.pins)? / 1e9);
    }
    if let Some(ind) = sens.indicators() {
        let given = opts.pins.clone();
        for p in ind.pins(&layers)? {
            let i = p.layer_index(&layers)?;
            if !given
                .iter()
                .any(|g| g.layer_index(&layers).is_ok_and(|j| j == i))
            {
                opts.pins.push(p);
            }
        }
    }
    let mut space = SearchSpace::new(&layers, &cands, &budget, hw.as_ref(), &opts)?;
    // Pre-flight before any expensive work (weight errors, the search itself).
    let feasibility = space.feasibility();
    feasibility.check_with_report(!opts.pins.is_empty() || !opts.ties.is_empty())?;
    if !feasibility.budgets.is_empty() {
        progress.note(&feasibility.to_string());
    }
    let tables = sens.tables(req, &model, &layers, &cands, &opts)?;
    if let Some(o) = &tables.omega {
        space.set_omega(o)?;
    }
    if let (Some(ind), Method::Limpq { alpha }) = (sens.indicators(), &req.method) {
        search::limpq::set_limpq_omega(&mut space, ind, *alpha)?;
    }
    let found = agent::run_method(req, &model, &space, &tables, &sens, progress)?;
    outcome::finish(req, &space, feasibility, &tables, &sens, found)
}
