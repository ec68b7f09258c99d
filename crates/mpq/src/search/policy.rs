//! The policy file (`mpq.policy`, `docs/file-formats.md`): what `mpq search` writes and
//! `eval`, `quantize`, `hw` and the report read. It is a [`QuantPlan`] plus what the method
//! found besides the plan: the solver's statistics (`ilp`, `limpq`), where the frontier went
//! (`pareto`), LIMPQ's cleaning record, and the agent's search record (`haq`, `cw-hawq`).

use serde::{Deserialize, Serialize};

use super::cw_hawq::CwEpisode;
use super::haq::{HaqEpisode, HaqSettings};
use crate::io::Versioned;
use crate::plan::QuantPlan;

/// A plan and its method's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// The plan.
    #[serde(flatten)]
    pub plan: QuantPlan,
    /// The exact solver's statistics (`ilp`, `limpq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solver: Option<SolverStats>,
    /// Where `pareto` wrote the whole frontier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontier: Option<FrontierRef>,
    /// HAQ's search record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub haq: Option<AgentSection<HaqEpisode>>,
    /// LIMPQ's cleaning record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limpq: Option<LimpqSection>,
    /// CW-HAWQ's search record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cw_hawq: Option<AgentSection<CwEpisode>>,
}

impl Policy {
    /// A policy with nothing beside the plan.
    pub fn new(plan: QuantPlan) -> Policy {
        Policy {
            plan,
            solver: None,
            frontier: None,
            haq: None,
            limpq: None,
            cw_hawq: None,
        }
    }
}

impl Versioned for Policy {
    const FORMAT: &'static str = "mpq.policy";
    const VERSION: u32 = 1;
    const WHAT: &'static str = "a policy";
}

/// One layer of a searched plan, as a front end shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerRow {
    /// Layer name.
    pub name: String,
    /// Weight elements.
    pub params: usize,
    /// Weight bits (a representative width with per-channel bits).
    pub w_bits: u32,
    /// Activation bits.
    pub a_bits: u32,
    /// Per-channel widths as `bits:count`, highest first (`8:3 4:10 2:7`).
    pub channels: Option<String>,
    /// Ω of the layer at its bits, when the search had a sensitivity table.
    pub omega: Option<f64>,
    /// LIMPQ's importance `I^a + α·I^w` at its bits.
    pub importance: Option<f64>,
    /// Simulated latency (ms), with a hardware model.
    pub latency_ms: Option<f64>,
    /// Simulated energy (mJ), with a hardware model that gives energy.
    pub energy_mj: Option<f64>,
}

/// The exact multiple-choice knapsack solver's statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SolverStats {
    /// The solver (`mckp-branch-and-bound`).
    pub name: String,
    /// Branch-and-bound nodes visited.
    pub nodes: u64,
    /// Whether optimality was proven (false: the node limit was reached).
    pub proven_optimal: bool,
}

impl From<&super::IlpStats> for SolverStats {
    fn from(s: &super::IlpStats) -> Self {
        SolverStats {
            name: "mckp-branch-and-bound".into(),
            nodes: s.nodes,
            proven_optimal: s.proven_optimal,
        }
    }
}

/// Where HAWQ-V2's frontier went and which point was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontierRef {
    /// Index of the chosen point.
    pub chosen: usize,
    /// File name of the frontier (`OUT.frontier.json`, next to the policy).
    pub json: String,
    /// Points on the frontier.
    pub points: usize,
    /// File name of its plot (`OUT.frontier.svg`).
    pub svg: String,
}

/// LIMPQ's record: the weight of the weight indicators, the cleaning's bans, and any banned
/// width the budget forced the plan to use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimpqSection {
    /// `α`.
    pub alpha: f64,
    /// `layer: WwAa` of the banned widths the plan uses anyway.
    pub banned_choices_used: Vec<String>,
    /// `layer: reason` of every ban.
    pub bans: Vec<String>,
    /// The plan's summed importance, the objective LIMPQ minimised (the plan's `omega` is
    /// the trace Ω, when the sensitivity file has traces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub importance: Option<f64>,
}

/// An agent search's record (HAQ's and CW-HAWQ's DDPG agents): the episodes and the best
/// (fields in alphabetical order, as earlier versions wrote them). `E` is the method's episode
/// record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSection<E> {
    /// The best episode's accuracy (%) on the reward split.
    pub best_accuracy: Option<f64>,
    /// The best episode.
    pub best_episode: Option<usize>,
    /// Its reward.
    pub best_reward: Option<f64>,
    /// File name of the learning curve (`OUT.curve.svg`).
    pub curve: String,
    /// Episodes run.
    pub episodes: usize,
    /// Seconds spent scoring plans (HAQ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluations_seconds: Option<f64>,
    /// Accuracy (%) of the full-precision model on the reward split.
    pub fp_accuracy: f64,
    /// Every episode, in order.
    pub history: Vec<E>,
    /// Episodes replayed from a saved state (HAQ's `--resume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_episodes: Option<usize>,
    /// The settings the search ran under (HAQ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<HaqSettings>,
    /// File name of the resumable search state (HAQ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Agent decisions per episode (HAQ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_per_episode: Option<usize>,
    /// Episodes of random actions before the agent learned (CW-HAWQ; HAQ's is in
    /// `settings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<usize>,
}

/// What the learning curve needs of an episode.
pub trait AgentEpisode {
    /// Accuracy (%) on the reward split.
    fn accuracy(&self) -> f64;
}

impl AgentEpisode for HaqEpisode {
    fn accuracy(&self) -> f64 {
        self.accuracy
    }
}

impl AgentEpisode for CwEpisode {
    fn accuracy(&self) -> f64 {
        self.accuracy
    }
}

impl<E: AgentEpisode> AgentSection<E> {
    /// Episodes of random actions before the agent learned.
    pub fn warmup_episodes(&self) -> usize {
        self.warmup
            .or_else(|| {
                let s = self.settings.as_ref()?;
                Some(s.config.ddpg.warmup_episodes)
            })
            .unwrap_or(0)
    }

    /// Accuracy (%) of every episode, in order.
    pub fn accuracies(&self) -> Vec<f64> {
        self.history.iter().map(AgentEpisode::accuracy).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::LayerInfo;

    #[test]
    fn policy_round_trips_with_its_sections() {
        let layers = vec![LayerInfo::linear(0, "fc1", 4, 8)];
        let mut p = Policy::new(QuantPlan::uniform(&layers, 4, 8));
        p.solver = Some(SolverStats {
            name: "mckp-branch-and-bound".into(),
            nodes: 12,
            proven_optimal: true,
        });
        p.limpq = Some(LimpqSection {
            alpha: 2.0,
            bans: vec!["fc1: w2".into()],
            banned_choices_used: vec![],
            importance: Some(1.5),
        });
        let bytes = p.to_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with("{\n  \"format\": \"mpq.policy\",\n  \"version\": 1,\n  \"method\"")
        );
        assert!(text.find("\"solver\"") < text.find("\"limpq\""));
        assert_eq!(Policy::parse(&bytes, "p.json").unwrap(), p);
    }

    #[test]
    fn a_plain_plan_file_is_a_policy() {
        let text = r#"{ "method": "pareto", "constraints": {"avg_bits": 4}, "seconds": 0.004,
          "layers": [ { "name": "fc1", "w_bits": 8, "a_bits": 8, "channel_w_bits": null } ] }"#;
        let p = Policy::parse(text.as_bytes(), "p.json").unwrap();
        assert_eq!(p.plan.method, "pareto");
        assert_eq!(p.plan.constraints.avg_bits, Some(4.0));
        assert!(p.solver.is_none() && p.haq.is_none());
        let err = Policy::parse(b"{ not json", "bad.json").unwrap_err();
        assert!(
            err.is_input_error() && err.to_string().contains("bad.json"),
            "{err}"
        );
    }
}
