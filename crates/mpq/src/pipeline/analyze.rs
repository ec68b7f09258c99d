//! `mpq analyze`: the sensitivity file of a model: top eigenvalues (HAWQ), traces (HAWQ-V2,
//! Hutchinson as in PyHessian), activation and channel traces (HAWQ-V2, CW-HAWQ), spectral
//! densities (SLQ), or LIMPQ's learned indicators (one joint training run). Methods in
//! `docs/algorithms.md` §1–§3 and §5.

use std::path::{Path, PathBuf};

use super::{ModelSource, open_with_data};
use crate::Result;
use crate::data::{Dataset, Normalization};
use crate::graph::Graph;
use crate::io::Versioned;
use crate::plan::{BitWidth, QuantPlan};
use crate::progress::Progress;
use crate::quant::{self, CalibrationConfig};
use crate::sensitivity::learned::{self, LimpqConfig};
use crate::sensitivity::{self, AnalyzeConfig, Metric, SampleConfig, SensitivityTable};

/// Which split of the data the Hessian analysis samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Split {
    /// The training split.
    #[default]
    Train,
    /// The test split.
    Test,
}

/// What to compute.
#[derive(Debug, Clone, PartialEq)]
pub enum Analysis {
    /// Hessian metrics on `sample` batches of `split`; a density is also drawn to `svg`
    /// (default: the output with `.svg`).
    Hessian {
        /// Metrics, estimators and their settings.
        config: AnalyzeConfig,
        /// Which samples.
        sample: SampleConfig,
        /// Of which split.
        split: Split,
        /// Where the density plot goes.
        svg: Option<PathBuf>,
    },
    /// LIMPQ's indicator training on the training split; `label_smoothing` `None` takes the
    /// model's own (from its training record), else the paper's 0.1.
    Limpq {
        /// The training settings (its `label_smoothing` is replaced as above).
        config: LimpqConfig,
        /// An explicit label smoothing.
        label_smoothing: Option<f64>,
    },
}

impl Analysis {
    /// `metric` with its defaults on one batch of 128 training samples.
    pub fn hessian(metric: Metric) -> Analysis {
        Analysis::Hessian {
            config: AnalyzeConfig::new(metric),
            sample: SampleConfig::default(),
            split: Split::Train,
            svg: None,
        }
    }
}

impl AnalyzeRequest {
    /// Analyses `model` on `data` into the sensitivity file `out`, splits seeded with 0.
    pub fn new(
        model: ModelSource,
        data: impl Into<String>,
        analysis: Analysis,
        out: impl Into<PathBuf>,
    ) -> Self {
        AnalyzeRequest {
            model,
            data: data.into(),
            analysis,
            seed: 0,
            out: out.into(),
        }
    }
}

/// `mpq analyze`.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzeRequest {
    /// The model.
    pub model: ModelSource,
    /// Data reference.
    pub data: String,
    /// What to compute.
    pub analysis: Analysis,
    /// Seed of the data splits (the analysis configs carry their own).
    pub seed: u64,
    /// The sensitivity file to write.
    pub out: PathBuf,
}

/// What `mpq analyze` computed and wrote.
#[derive(Debug, Clone)]
pub struct AnalyzeOutcome {
    /// The sensitivity table (written to the request's `out`).
    pub table: SensitivityTable,
    /// The density plot, when one was drawn.
    pub density_svg: Option<PathBuf>,
}

/// Activation bit-widths whose quantization error `analyze` measures.
pub const ACT_ERROR_BITS: [BitWidth; 7] = [2, 3, 4, 5, 6, 7, 8];

/// Fills each row's `act_error` (the activation term of Ω, `docs/algorithms.md` §2.6):
/// `E_x ‖Q_b(a) − a‖²` per sample of the layer's input at every width of [`ACT_ERROR_BITS`],
/// with the plans' activation quantizer calibrated as `mpq quantize` calibrates it (min-max)
/// on the analysed samples `calib`, every other layer at full precision.
fn measure_act_errors(
    graph: &Graph,
    calib: &Dataset,
    norm: &Normalization,
    sample: &SampleConfig,
    table: &mut SensitivityTable,
) -> Result<()> {
    let template = QuantPlan::uniform(&graph.layer_infos()?, 8, 8);
    let cfg = CalibrationConfig {
        samples: calib.len(),
        batch_size: sample.batch_size,
        ..CalibrationConfig::default()
    };
    let errors = quant::act_errors(graph, &template, calib, norm, &cfg, &ACT_ERROR_BITS)?;
    for row in &mut table.layers {
        if row.act_trace.is_some() {
            row.act_error = errors.get(&row.name).cloned();
        }
    }
    Ok(())
}

/// Runs the analysis of `req` and writes its sensitivity file.
pub fn analyze(req: &AnalyzeRequest, progress: &mut dyn Progress) -> Result<AnalyzeOutcome> {
    let inputs: Vec<_> = super::model_file(&req.model)
        .map(|m| ("model", m))
        .into_iter()
        .collect();
    let svg_out = match &req.analysis {
        Analysis::Hessian { svg, .. } => {
            Some(svg.clone().unwrap_or_else(|| req.out.with_extension("svg")))
        }
        Analysis::Limpq { .. } => None,
    };
    let outputs: Vec<&Path> = std::iter::once(req.out.as_path())
        .chain(svg_out.as_deref())
        .collect();
    crate::outputs::refuse_overwrite(&inputs, &outputs)?;
    match &req.analysis {
        Analysis::Hessian {
            config,
            sample,
            split,
            svg,
        } => {
            config.validate()?;
            let (model, splits) = open_with_data(&req.model, &req.data, req.seed)?;
            let norm = model.normalization_or(&splits.normalization);
            let (ds, name) = match split {
                Split::Train => (&splits.train, "train"),
                Split::Test => (&splits.test, "test"),
            };
            let batches = sensitivity::analysis_batches(ds, &norm, sample, model.graph.device())?;
            let mut table = sensitivity::analyze(&model.graph, batches, config, progress)?;
            if table.layers.iter().any(|r| r.act_trace.is_some()) {
                let calib = ds.subset(&sensitivity::analysis_samples(ds, sample)?);
                measure_act_errors(&model.graph, &calib, &norm, sample, &mut table)?;
            }
            table.model = req.model.reference.clone();
            table.data = Some(req.data.clone());
            table.split = Some(name.into());
            // The picture first and the table last, each atomic: a table on disk always has
            // its picture beside it.
            let plot = crate::report::density_chart(&table);
            let density_svg = plot
                .as_ref()
                .map(|_| svg.clone().unwrap_or_else(|| req.out.with_extension("svg")));
            let mut files = Vec::new();
            if let (Some(plot), Some(path)) = (plot, &density_svg) {
                files.push((path.clone(), plot.into_bytes()));
            }
            files.push((req.out.clone(), table.to_bytes()?));
            crate::io::write_files_atomic(&files)?;
            Ok(AnalyzeOutcome { table, density_svg })
        }
        Analysis::Limpq {
            config,
            label_smoothing,
        } => {
            let (model, splits) = open_with_data(&req.model, &req.data, req.seed)?;
            // A smoothing the model was not trained with pushes every logit smaller; where
            // no BatchNorm follows a searched layer, its steps scale its output and absorb
            // that push (high-bit steps collapse to the clamp or jump tenfold) instead of
            // learning the quantization trade-off. So the default is the model's own loss.
            let cfg = LimpqConfig {
                label_smoothing: label_smoothing
                    .or_else(|| model.training_label_smoothing())
                    .unwrap_or(LimpqConfig::default().label_smoothing),
                ..config.clone()
            };
            cfg.validate()?;
            let norm = model.normalization_or(&splits.normalization);
            let mut table =
                learned::train_indicators(&model.graph, &splits.train, &norm, &cfg, progress)?;
            table.model = req.model.reference.clone();
            table.data = Some(req.data.clone());
            table.save(&req.out)?;
            Ok(AnalyzeOutcome {
                table,
                density_svg: None,
            })
        }
    }
}
