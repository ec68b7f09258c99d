//! The cells of a comparison on disk (docs/compare.md, "Resuming"): one file per plan
//! (`DIR/cells/<budget>/<name>.json` with its policy beside it) and one per fine-tuning
//! (`<name>.ft<k>.json`), each written atomically when it is measured and kept while its
//! key (a digest of everything that determined it) matches the rerun's.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::measure::Bench;
use super::{CompareRequest, SearchRequest};
use crate::compare::{Axis, FinetuneCell, MeasuredPlan, PlanCell, Scores};
use crate::io::Versioned;
use crate::progress::Progress;
use crate::search::{Pin, Policy};
use crate::{Error, Result};

/// FNV-1a, 64 bits: a stable digest (no dependence on the build or the platform).
fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

fn file_digest(path: &Path) -> Result<u64> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(fnv(&bytes, FNV_START))
}

/// What every cell's key starts from: the model's bytes, the data, the Hessian sensitivity
/// file's bytes (every plan's Ω), the calibration and the seed. A search's key adds the bytes
/// of the file it reads (LIMPQ's indicators).
pub(super) struct Digest {
    base: String,
}

impl Digest {
    pub(super) fn new(req: &CompareRequest, sensitivity: Option<&PathBuf>) -> Result<Digest> {
        let model = Path::new(&req.template.model.reference);
        let model = if model.is_file() {
            format!("{:016x}", file_digest(model)?)
        } else {
            req.template.model.reference.clone()
        };
        let mut base = format!(
            "{model}|{:?}|{}|{:?}|{}",
            req.template.model.hint, req.data, req.calibration, req.seed
        );
        if let Some(f) = sensitivity {
            base.push_str(&format!("|{:016x}", file_digest(f)?));
        }
        Ok(Digest { base })
    }

    fn key(&self, what: &str) -> String {
        format!(
            "{:016x}",
            fnv(what.as_bytes(), fnv(self.base.as_bytes(), FNV_START))
        )
    }

    /// The key of searching `s` for cell `what`: `s` (its output aside) and the bytes of the
    /// file it reads.
    fn search_key(&self, what: &str, s: &SearchRequest) -> Result<String> {
        let file = match &s.sensitivity {
            Some(p) => format!("{:016x}", file_digest(p)?),
            None => String::new(),
        };
        Ok(self.key(&format!("{what}|{s:?}|{file}")))
    }
}

/// Whether a search error is a property of the cell (an infeasible budget, a method that
/// cannot take it), kept as the cell's result, rather than a failure of the run.
fn is_cell_result(e: &Error) -> bool {
    match e {
        Error::Infeasible { .. } | Error::Usage(_) | Error::InvalidConfig { .. } => true,
        Error::Context { source, .. } => is_cell_result(source),
        _ => false,
    }
}

/// The cells of one comparison folder.
pub(super) struct Store<'a> {
    dir: PathBuf,
    bench: &'a Bench<'a>,
    digest: Digest,
    seeds: usize,
    seed: u64,
    pins: Vec<Pin>,
    /// Cells measured by this run.
    pub(super) run: usize,
    /// Cells kept from an earlier run.
    pub(super) reused: usize,
}

impl<'a> Store<'a> {
    pub(super) fn new(
        out: &Path,
        bench: &'a Bench<'a>,
        digest: Digest,
        seeds: usize,
        seed: u64,
        pins: Vec<Pin>,
    ) -> Store<'a> {
        Store {
            dir: out.join("cells"),
            bench,
            digest,
            seeds,
            seed,
            pins,
            run: 0,
            reused: 0,
        }
    }

    fn paths(&self, budget: &str, name: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.join(budget);
        (
            d.join(format!("{name}.json")),
            d.join(format!("{name}.plan.json")),
        )
    }

    /// The kept cell at `path` when its key is `key` (and its plan is there).
    fn kept(&mut self, path: &Path, plan: &Path, key: &str) -> Option<PlanCell> {
        let c = PlanCell::load(path).ok()?;
        (c.key == key && (c.error.is_some() || plan.is_file())).then(|| {
            self.reused += 1;
            c
        })
    }

    /// Measures a plan into its cell (post-training numbers).
    fn measure(
        &mut self,
        budget: &str,
        name: &str,
        key: String,
        plan: Result<(Policy, f64)>,
        progress: &mut dyn Progress,
    ) -> Result<PlanCell> {
        let (path, plan_path) = self.paths(budget, name);
        let mut cell = PlanCell {
            key,
            budget: budget.to_string(),
            name: name.to_string(),
            seconds: 0.0,
            costs: None,
            omega: None,
            uniform_bits: None,
            ptq: None,
            error: None,
        };
        match plan {
            Ok((policy, seconds)) => {
                let p = &policy.plan;
                cell.seconds = seconds;
                cell.costs = Some(self.bench.costs(p)?);
                cell.omega = self.bench.omega(p);
                cell.uniform_bits = super::uniform_bits(p, &self.pins, &self.bench.layers);
                let r = self.bench.ptq(p)?;
                cell.ptq = Some(Scores::new(&r));
                policy.save(&plan_path)?;
                progress.note(&format!(
                    "{budget} {name}: {:.3} average weight bits, {:.2}% after post-training quantization",
                    cell.costs.map_or(0.0, |c| c.avg_w_bits),
                    100.0 * cell.ptq.as_ref().map_or(0.0, |s| s.accuracy)
                ));
            }
            Err(e) if is_cell_result(&e) => {
                progress.note(&format!("{budget} {name}: no plan ({e})"));
                cell.error = Some(e.to_string());
            }
            Err(e) => return Err(e),
        }
        cell.save(&path)?;
        self.run += 1;
        Ok(cell)
    }

    /// The cell of searching `s` (kept or measured), fine-tuned with the seeds of `seeds`.
    pub(super) fn searched(
        &mut self,
        budget: &str,
        name: &str,
        s: &SearchRequest,
        seeds: Range<usize>,
        progress: &mut dyn Progress,
    ) -> Result<MeasuredPlan> {
        let (path, plan_path) = self.paths(budget, name);
        let mut s = s.clone();
        s.out = None;
        let key = self
            .digest
            .search_key(&format!("plan|{budget}|{name}"), &s)?;
        let cell = match self.kept(&path, &plan_path, &key) {
            Some(c) => c,
            None => {
                let t0 = std::time::Instant::now();
                let found = super::super::search(&s, progress)
                    .map(|o| (o.policy, t0.elapsed().as_secs_f64()));
                self.measure(budget, name, key, found, progress)?
            }
        };
        let mut m = MeasuredPlan {
            cell,
            finetuned: Vec::new(),
        };
        self.finetune(&mut m, seeds, progress)?;
        Ok(m)
    }

    /// Random plan `i` of a budget: the first draw (seeds `s.seed + i + j·1,000,003`) whose
    /// bits differ from every earlier plan of `seen`, fine-tuned with the seeds of `seeds`.
    /// The random method draws some plans far more often than others; repeats would weigh
    /// them twice in the distribution and tie Ω's ranks.
    pub(super) fn random(
        &mut self,
        budget: &str,
        i: usize,
        s: &SearchRequest,
        seen: &mut Vec<Signature>,
        seeds: Range<usize>,
        progress: &mut dyn Progress,
    ) -> Result<MeasuredPlan> {
        let name = format!("random-{i}");
        let (path, plan_path) = self.paths(budget, &name);
        let mut s = s.clone();
        s.out = None;
        let key = self
            .digest
            .search_key(&format!("random|{budget}|{i}"), &s)?;
        let cell = match self.kept(&path, &plan_path, &key) {
            Some(c) => {
                if c.error.is_none() {
                    seen.push(signature(&Policy::load(&plan_path)?.plan));
                }
                c
            }
            None => {
                let t0 = std::time::Instant::now();
                let base = s.seed;
                let mut found = Err(Error::Usage(format!(
                    "no random plan differs from the {} before it in {DRAWS} draws",
                    seen.len()
                )));
                for j in 0..DRAWS {
                    s.seed = base.wrapping_add(i as u64).wrapping_add(j * 1_000_003);
                    match super::super::search(&s, progress) {
                        Ok(o) => {
                            let sig = signature(&o.policy.plan);
                            if !seen.contains(&sig) {
                                seen.push(sig);
                                found = Ok((o.policy, t0.elapsed().as_secs_f64()));
                                break;
                            }
                        }
                        Err(e) => {
                            found = Err(e);
                            break;
                        }
                    }
                }
                self.measure(budget, &name, key, found, progress)?
            }
        };
        let mut m = MeasuredPlan {
            cell,
            finetuned: Vec::new(),
        };
        self.finetune(&mut m, seeds, progress)?;
        Ok(m)
    }

    /// The user's plan at `path` in a budget: measured when it fits, else a cell that says by
    /// how much it does not.
    pub(super) fn given(
        &mut self,
        budget: &str,
        name: &str,
        path: &Path,
        (axis, limit): (Axis, f64),
        progress: &mut dyn Progress,
    ) -> Result<MeasuredPlan> {
        let (cell_path, plan_path) = self.paths(budget, name);
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let key = self.digest.key(&format!(
            "given|{budget}|{name}|{:016x}",
            fnv(&bytes, FNV_START)
        ));
        let cell = match self.kept(&cell_path, &plan_path, &key) {
            Some(c) => c,
            None => {
                let mut policy = Policy::parse(&bytes, &path.display().to_string())?;
                policy.plan = policy.plan.for_model(&self.bench.layers)?;
                let cost = self.bench.costs(&policy.plan)?.on(axis);
                let fits = cost <= limit + 1e-9 * limit.abs().max(1e-12);
                let found = if fits {
                    Ok((policy, 0.0))
                } else {
                    Err(Error::Usage(format!(
                        "{} costs {cost:.4} ({}), over the budget's {limit}",
                        path.display(),
                        axis.label()
                    )))
                };
                self.measure(budget, name, key, found, progress)?
            }
        };
        Ok(MeasuredPlan {
            cell,
            finetuned: Vec::new(),
        })
    }

    /// Fine-tunes a measured plan with every seed of the comparison.
    pub(super) fn finetune_all(
        &mut self,
        m: &mut MeasuredPlan,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        self.finetune(m, 0..self.seeds, progress)
    }

    /// Fine-tunes `m`'s plan with seeds `seed + k`, `k` in `ks` (kept cells are reused).
    fn finetune(
        &mut self,
        m: &mut MeasuredPlan,
        ks: Range<usize>,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        if m.cell.error.is_some() || self.bench.finetune.epochs == 0 {
            return Ok(());
        }
        let (budget, name) = (m.cell.budget.clone(), m.cell.name.clone());
        let (_, plan_path) = self.paths(&budget, &name);
        let mut plan = None;
        for k in ks {
            let path = self.dir.join(&budget).join(format!("{name}.ft{k}.json"));
            let f = &self.bench.finetune;
            let key = self.digest.key(&format!(
                "ft|{}|{k}|{}|{:?}|{}|{}",
                m.cell.key, f.epochs, f.lr, f.batch_size, f.weight_decay
            ));
            if let Ok(c) = FinetuneCell::load(&path)
                && c.key == key
            {
                self.reused += 1;
                m.finetuned.push(c);
                continue;
            }
            if plan.is_none() {
                plan = Some(Policy::load(&plan_path)?.plan);
            }
            let Some(p) = &plan else { continue };
            let seed = self.seed.wrapping_add(k as u64);
            let c = self
                .bench
                .finetune(p, seed, (&budget, &name, &key), progress)?;
            progress.note(&format!(
                "{budget} {name}: {:.2}% fine-tuned (seed {seed}, lr {:.2e}, {:.1} s)",
                100.0 * c.scores.accuracy,
                c.lr,
                c.seconds
            ));
            c.save(&path)?;
            self.run += 1;
            m.finetuned.push(c);
        }
        Ok(())
    }
}

/// Draws of [`Store::random`] before it gives up on a new plan.
const DRAWS: u64 = 200;

/// A plan's bits, layer by layer (channel bits included).
pub(super) type Signature = Vec<(String, u32, u32, Option<Vec<u32>>)>;

fn signature(plan: &crate::QuantPlan) -> Signature {
    (plan.layers.iter())
        .map(|l| (l.name.clone(), l.w_bits, l.a_bits, l.channel_w_bits.clone()))
        .collect()
}
