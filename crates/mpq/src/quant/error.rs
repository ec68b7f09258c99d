//! Weight quantization error `‖Q_b(W_i) − W_i‖²` per layer and bit-width: the second factor of
//! HAWQ-V2's `Ω_i = Tr(H_i)/n_i · ‖Q(W_i) − W_i‖²` (Dong et al. NeurIPS 2020, docs/algorithms.md §2.4) and of
//! HAWQ's fine-tuning order (docs/algorithms.md §1.5). Computed with the plan's own weight quantizer on the
//! unfolded weights, whose Hessian `mpq analyze` measures: the default symmetric per-channel
//! quantizer commutes with BatchNorm folding (folding scales each output channel, and so its
//! max-abs scale, by one factor), so this is the folded quantizer's error mapped back. The table goes into the sensitivity JSON's `weight_error` and search stays
//! tensor-free. The activation counterpart `E_x ‖Q_b(a_i(x)) − a_i(x)‖²` (docs/algorithms.md §2.6) uses each
//! bit-width's calibrated activation range, measured on full-precision activations.

use std::collections::BTreeMap;

use candle::{DType, Tensor};

use super::apply::{
    CalibrationConfig, PlanHooks, calibration_pass, fake_quant_tensor, prepare_graph,
    require_symmetric_per_channel, weight_params,
};
use super::kmeans::{kmeans_1d, layer_seed};
use super::lsq::LsqQuantizer;
use crate::data::{Dataset, Normalization};
use crate::graph::{Graph, Hooks};
use crate::plan::{
    BitWidth, FULL_PRECISION, Granularity, LayerPrecision, QuantPlan, QuantizerKind,
};
use crate::{Error, Result};

/// `‖Q(w) − w‖²` of one weight tensor under `p` (0 at full precision). LSQ layers use the
/// step LSQ starts from (`2·mean|w|/√Qp`), since learned steps do not exist yet; k-means
/// layers the clustering calibration would find (`2^b` clusters, the plan's iterations, the
/// layer name's seed), which does not commute with BatchNorm folding.
pub fn weight_error(w: &Tensor, p: &LayerPrecision) -> Result<f64> {
    if p.w_bits >= FULL_PRECISION && p.channel_w_bits.is_none() {
        return Ok(0.0);
    }
    let w = &w.to_dtype(DType::F32)?;
    if p.quantizer == QuantizerKind::KMeans {
        return kmeans_error(w, p);
    }
    let q = match p.quantizer {
        QuantizerKind::Lsq => {
            LsqQuantizer::for_weight(w, p.w_bits, p.granularity == Granularity::PerChannel)?
                .params()?
        }
        _ => weight_params(w, p)?,
    };
    let d = (fake_quant_tensor(w, &q)? - w)?.to_dtype(DType::F64)?;
    let e = d.sqr()?.sum_all()?.to_scalar::<f64>()?;
    if !e.is_finite() {
        return Err(Error::config(
            "model",
            format!("layer {}: non-finite weights", p.name),
        ));
    }
    Ok(e)
}

/// `‖Q(W_c) − W_c‖²` per output channel `c` of one weight tensor under `p` at its `w_bits`
/// (CW-HAWQ's channel errors, docs/algorithms.md §3.3): the symmetric per-channel quantizer restricted to
/// each channel, so the errors sum to [`weight_error`]. Other quantizers are refused, since
/// per-channel bit-widths need the symmetric per-channel one.
pub fn channel_weight_errors(w: &Tensor, p: &LayerPrecision) -> Result<Vec<f64>> {
    let w = &w.to_dtype(DType::F32)?;
    let channels = w.dim(0)?;
    if p.w_bits >= FULL_PRECISION {
        return Ok(vec![0.0; channels]);
    }
    require_symmetric_per_channel(p, "quantizer", "channel errors need")?;
    let p = LayerPrecision {
        channel_w_bits: None,
        ..p.clone()
    };
    let q = weight_params(w, &p)?;
    let d = (fake_quant_tensor(w, &q)? - w)?.to_dtype(DType::F64)?;
    let e: Vec<f64> = d.sqr()?.flatten_from(1)?.sum(1)?.to_vec1()?;
    if e.iter().any(|v| !v.is_finite()) {
        return Err(Error::config(
            "model",
            format!("layer {}: non-finite weights", p.name),
        ));
    }
    Ok(e)
}

fn kmeans_error(w: &Tensor, p: &LayerPrecision) -> Result<f64> {
    let v: Vec<f32> = w.flatten_all()?.to_vec1()?;
    let fit = kmeans_1d(
        &v,
        1usize << p.w_bits.min(16),
        p.kmeans_max_iter(),
        layer_seed(&p.name),
    )
    .map_err(|e| match e {
        Error::NonFinite(_) => {
            Error::config("model", format!("layer {}: non-finite weights", p.name))
        }
        e => e,
    })?;
    Ok(v.iter()
        .zip(fit.codes.iter())
        .map(|(&x, &c)| (f64::from(x) - f64::from(fit.centroids[usize::from(c)])).powi(2))
        .sum())
}

/// `‖Q_b(W_i) − W_i‖²` for every layer of `plan` and every `b` in `bits`, with each layer's
/// quantizer settings taken from the plan (its `w_bits` and `channel_w_bits` are replaced by
/// `b`), on the graph's own (unfolded) weights.
pub fn weight_errors(
    graph: &Graph,
    plan: &QuantPlan,
    bits: &[BitWidth],
) -> Result<BTreeMap<String, BTreeMap<BitWidth, f64>>> {
    plan.validate(&graph.layer_infos()?)?;
    let mut out = BTreeMap::new();
    for l in &plan.layers {
        let name = format!("{}.weight", l.name);
        let w = graph.params().var(&name)?.as_tensor().clone();
        let mut row = BTreeMap::new();
        for &b in bits {
            let p = LayerPrecision {
                w_bits: b,
                channel_w_bits: None,
                ..l.clone()
            };
            row.insert(b, weight_error(&w, &p)?);
        }
        out.insert(l.name.clone(), row);
    }
    Ok(out)
}

/// Sums `‖Q(a) − a‖²` per layer input, passing activations through unchanged.
struct ErrorProbe<'a> {
    hooks: &'a PlanHooks,
    sums: BTreeMap<String, f64>,
}

impl Hooks for ErrorProbe<'_> {
    fn activation(&mut self, layer: &str, x: &Tensor) -> Result<Tensor> {
        if let Some(q) = self.hooks.activation_params(layer)? {
            let d = (fake_quant_tensor(x, &q)? - x)?;
            let e = d
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
            *self.sums.entry(layer.to_string()).or_default() += e;
        }
        Ok(x.clone())
    }
}

/// `E_x ‖Q_b(a_i(x)) − a_i(x)‖²` (per sample) of every layer's input activation in `plan` and
/// every `b` in `bits`: each width is calibrated as `quantize` calibrates it (`cfg`, on the
/// first samples of `calib`) and its error measured on the same samples, with full-precision
/// weights and activations everywhere else.
pub fn act_errors(
    graph: &Graph,
    plan: &QuantPlan,
    calib: &Dataset,
    norm: &Normalization,
    cfg: &CalibrationConfig,
    bits: &[BitWidth],
) -> Result<BTreeMap<String, BTreeMap<BitWidth, f64>>> {
    plan.validate(&graph.layer_infos()?)?;
    let g = prepare_graph(graph, plan)?;
    let mut out: BTreeMap<String, BTreeMap<BitWidth, f64>> = BTreeMap::new();
    for &b in bits {
        let mut pb = plan.clone();
        for l in &mut pb.layers {
            l.w_bits = FULL_PRECISION;
            l.channel_w_bits = None;
            l.a_bits = b;
        }
        let hooks = PlanHooks::calibrate(&g, &pb, calib, norm, cfg)?;
        let mut probe = ErrorProbe {
            hooks: &hooks,
            sums: BTreeMap::new(),
        };
        let samples = calibration_pass(&g, calib, norm, cfg, &mut probe)?;
        for l in &plan.layers {
            let e = if b >= FULL_PRECISION {
                0.0
            } else {
                probe.sums.get(&l.name).copied().unwrap_or(0.0) / samples as f64
            };
            if !e.is_finite() {
                return Err(Error::config(
                    "data",
                    format!("layer {}: non-finite activations", l.name),
                ));
            }
            out.entry(l.name.clone()).or_default().insert(b, e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    #[test]
    fn symmetric_error_by_hand_and_monotone_in_bits() {
        // One channel [−1, 0.3, 0.5, 1]: 2-bit symmetric narrow range has levels {−1, 0, 1}.
        let w = Tensor::new(&[[-1.0f32, 0.3, 0.5, 1.0]], &Device::Cpu).unwrap();
        let p = LayerPrecision::new("fc", 2, 8);
        let e = weight_error(&w, &p).unwrap();
        // 0.3 → 0, 0.5 → 0 (half to even) — errors 0.09 + 0.25.
        assert!((e - 0.34).abs() < 1e-6, "{e}");
        let mut last = f64::INFINITY;
        for b in [2, 3, 4, 5, 6, 8] {
            let e = weight_error(&w, &LayerPrecision::new("fc", b, 8)).unwrap();
            assert!(e <= last + 1e-12, "{b} bits: {e} > {last}");
            last = e;
        }
        assert_eq!(
            weight_error(&w, &LayerPrecision::new("fc", 32, 8)).unwrap(),
            0.0
        );
    }

    #[test]
    fn kmeans_error_by_hand() {
        // 2 bits = 4 clusters on {0, 0.1, 1, 2, 3, 3.1}: the two close pairs merge, each
        // value 0.05 from its centroid; 3 bits = 8 clusters keep all six values exactly.
        let w = Tensor::new(&[[0.0f32, 0.1, 1.0], [2.0, 3.0, 3.1]], &Device::Cpu).unwrap();
        let mut p = LayerPrecision::new("fc", 2, 8);
        p.quantizer = QuantizerKind::KMeans;
        let e = weight_error(&w, &p).unwrap();
        assert!((e - 0.01).abs() < 1e-6, "{e}");
        p.w_bits = 3;
        assert_eq!(weight_error(&w, &p).unwrap(), 0.0);
    }

    #[test]
    fn channel_errors_by_hand_and_sum_to_the_layer_error() {
        // Channel 0 is the hand case above (0.34 at 2 bits); channel 1 [−2, 0, 1, 2] has its
        // own scale 2, levels {−2, 0, 2}: 1/2 = 0.5 rounds half to even to 0, error 1.
        let w = Tensor::new(
            &[[-1.0f32, 0.3, 0.5, 1.0], [-2.0, 0.0, 1.0, 2.0]],
            &Device::Cpu,
        )
        .unwrap();
        let p = LayerPrecision::new("fc", 2, 8);
        let e = channel_weight_errors(&w, &p).unwrap();
        assert!((e[0] - 0.34).abs() < 1e-6, "{e:?}");
        assert!((e[1] - 1.0).abs() < 1e-6, "{e:?}");
        let w = Tensor::randn(0f32, 1.0, (7, 3, 3, 3), &Device::Cpu).unwrap();
        for b in [2, 3, 4, 8] {
            let p = LayerPrecision::new("conv", b, 8);
            let per = channel_weight_errors(&w, &p).unwrap();
            let whole = weight_error(&w, &p).unwrap();
            assert_eq!(per.len(), 7);
            let s: f64 = per.iter().sum();
            assert!(
                (s - whole).abs() <= 1e-9 * whole.max(1.0),
                "{b}: {s} vs {whole}"
            );
        }
        let mut k = LayerPrecision::new("conv", 4, 8);
        k.quantizer = QuantizerKind::KMeans;
        assert!(channel_weight_errors(&w, &k).is_err());
    }
}
