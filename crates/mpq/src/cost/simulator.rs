//! Per-layer latency and energy of a plan on an accelerator (HAQ, Wang et al. CVPR 2019;
//! docs/algorithms.md §4.8, §7.5): the analytic BitFusion and BISMO models with a roofline memory term, or
//! a user's lookup table. Analytic layers take `latency = max(compute, memory)`, where memory
//! moves the weights (`n·w/8` bytes, once per batch) and every image's input and output
//! activations (`m·a/8` and `out·output_bits/8` bytes) at the spec's bandwidth; energy is
//! `batch·MAC·mac_bits(w, a)·pj_per_mac_bit + bytes·pj_per_byte`. See `docs/cost-models.md`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::hardware::{ArraySpec, HardwareSpec};
use super::lookup::LookupTable;
use super::{CostModel, bismo, bitfusion};
use crate::graph::LayerInfo;
use crate::plan::{BitWidth, FULL_PRECISION, LayerPrecision, QuantPlan};
use crate::{Error, Result};

/// What limits a layer's latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The compute array.
    Compute,
    /// Off-chip bandwidth.
    Memory,
    /// Unknown: the latency comes from a lookup table.
    Table,
}

impl Bound {
    /// `compute`, `memory` or `table`.
    pub fn as_str(self) -> &'static str {
        match self {
            Bound::Compute => "compute",
            Bound::Memory => "memory",
            Bound::Table => "table",
        }
    }
}

/// One layer's simulated cost (one batch of the spec's batch size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerHw {
    /// Layer name.
    pub name: String,
    /// Weight bits simulated (the widest channel for channel-wise plans).
    pub w_bits: BitWidth,
    /// Activation bits simulated.
    pub a_bits: BitWidth,
    /// Multiply-accumulates per image.
    pub macs: u64,
    /// Compute time in ms (`None` for lookup tables).
    pub compute_ms: Option<f64>,
    /// Memory time in ms (`None` for lookup tables).
    pub memory_ms: Option<f64>,
    /// Bytes moved off-chip (`None` for lookup tables).
    pub bytes: Option<f64>,
    /// What limits the layer.
    pub bound: Bound,
    /// Latency in ms.
    pub latency_ms: f64,
    /// Energy in mJ (`None` when a lookup table has no energy column).
    pub energy_mj: Option<f64>,
}

/// A plan's per-layer latency and energy with totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HwTable {
    /// The hardware model.
    pub hardware: String,
    /// Images per run the numbers are for.
    pub batch: usize,
    /// One row per model layer.
    pub layers: Vec<LayerHw>,
    /// Sum of the layers' latencies in ms (layers run one after another).
    pub latency_ms: f64,
    /// Sum of the layers' energies in mJ, when every layer has one.
    pub energy_mj: Option<f64>,
}

impl HwTable {
    /// Writes `latency_ms` and `energy_mj` into `plan`.
    pub fn fill_plan(&self, plan: &mut QuantPlan) {
        plan.latency_ms = Some(self.latency_ms);
        plan.energy_mj = self.energy_mj;
    }
}

/// A latency/energy model: an analytic accelerator or a lookup table.
#[derive(Debug, Clone, PartialEq)]
pub enum HardwareModel {
    /// BitFusion or BISMO with a roofline memory term.
    Analytic(HardwareSpec),
    /// Measured or simulated numbers per layer and bit pair.
    Lookup(LookupTable),
}

/// Tables written from a model (here rather than in `lookup`, which the simulator reads, so
/// that the two modules do not import each other).
impl LookupTable {
    /// Every `layers × w_bits × a_bits` entry of `model`.
    pub fn from_model(
        model: &HardwareModel,
        layers: &[LayerInfo],
        w_bits: &[BitWidth],
        a_bits: &[BitWidth],
    ) -> Result<LookupTable> {
        let mut t = LookupTable::new(model.name());
        for l in layers {
            for &w in w_bits {
                for &a in a_bits {
                    let r = model.layer(l, w, a)?;
                    t.insert(&l.name, w, a, r.latency_ms, r.energy_mj);
                }
            }
        }
        Ok(t)
    }
}

/// The bits a hardware model sees for one layer under a plan: the widest weight channel, and
/// 32/32 for a layer absent from the plan.
pub fn hw_bits(p: Option<&LayerPrecision>) -> (BitWidth, BitWidth) {
    match p {
        None => (FULL_PRECISION, FULL_PRECISION),
        Some(p) => {
            let w = match &p.channel_w_bits {
                Some(c) if !c.is_empty() => c.iter().copied().max().unwrap_or(p.w_bits),
                _ => p.w_bits,
            };
            (w, p.a_bits)
        }
    }
}

impl HardwareModel {
    /// `bitfusion`, `bismo`, `bismo-cloud`, `PATH.toml` (a spec) or `PATH.csv` (a table).
    pub fn from_reference(reference: &str) -> Result<HardwareModel> {
        if let Some(spec) = HardwareSpec::builtin(reference) {
            return Ok(HardwareModel::Analytic(spec));
        }
        let path = Path::new(reference);
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("toml") => {
                Ok(HardwareModel::Analytic(HardwareSpec::load(path)?))
            }
            Some(e) if e.eq_ignore_ascii_case("csv") => {
                Ok(HardwareModel::Lookup(LookupTable::load(path)?))
            }
            _ => Err(Error::config(
                "hardware",
                format!(
                    "{reference:?} is neither a built-in spec ({}) nor a .toml spec or .csv table",
                    HardwareSpec::builtin_names().join(", ")
                ),
            )),
        }
    }

    /// The model's name (spec name or table path).
    pub fn name(&self) -> &str {
        match self {
            HardwareModel::Analytic(s) => &s.name,
            HardwareModel::Lookup(t) => t.name(),
        }
    }

    /// Images per run (1 for lookup tables, whose numbers are taken as they are).
    pub fn batch(&self) -> usize {
        match self {
            HardwareModel::Analytic(s) => s.batch,
            HardwareModel::Lookup(_) => 1,
        }
    }

    /// Whether the model gives energies.
    pub fn has_energy(&self) -> bool {
        match self {
            HardwareModel::Analytic(_) => true,
            HardwareModel::Lookup(t) => t.has_energy(),
        }
    }

    /// Whether the model gives latencies (a lookup table may price only sizes or BitOps).
    pub fn has_latency(&self) -> bool {
        match self {
            HardwareModel::Analytic(_) => true,
            HardwareModel::Lookup(t) => t.has_latency(),
        }
    }

    /// The size (bits, scales included) and BitOps a lookup table prices for `layer` at
    /// `w_bits × a_bits`, replacing the formulas of [`crate::cost`]; `(None, None)` for the
    /// analytic models and for tables without those columns.
    pub fn priced(
        &self,
        layer: &str,
        w_bits: BitWidth,
        a_bits: BitWidth,
    ) -> Result<(Option<f64>, Option<f64>)> {
        match self {
            HardwareModel::Lookup(t) if t.prices_size() || t.prices_bops() => {
                let e = t.entry(layer, w_bits, a_bits)?;
                Ok((e.size_bits, e.bops))
            }
            _ => Ok((None, None)),
        }
    }

    /// Whether every entry prices the size and the BitOps, as `(size, bops)`.
    pub fn prices(&self) -> (bool, bool) {
        match self {
            HardwareModel::Lookup(t) => (t.prices_size(), t.prices_bops()),
            HardwareModel::Analytic(_) => (false, false),
        }
    }

    /// `layer`'s cost at `w_bits × a_bits`. A lookup table without that entry is an input
    /// error naming the layer and the bits.
    pub fn layer(&self, layer: &LayerInfo, w_bits: BitWidth, a_bits: BitWidth) -> Result<LayerHw> {
        match self {
            HardwareModel::Analytic(spec) => Ok(simulate(spec, layer, w_bits, a_bits)),
            HardwareModel::Lookup(t) => {
                let (latency_ms, energy_mj) = t.get(&layer.name, w_bits, a_bits)?;
                Ok(LayerHw {
                    name: layer.name.clone(),
                    w_bits,
                    a_bits,
                    macs: layer.macs,
                    compute_ms: None,
                    memory_ms: None,
                    bytes: None,
                    bound: Bound::Table,
                    latency_ms,
                    energy_mj,
                })
            }
        }
    }

    /// Every layer of `layers` under `plan` (absent layers at 32/32).
    pub fn table(&self, layers: &[LayerInfo], plan: &QuantPlan) -> Result<HwTable> {
        let rows = layers
            .iter()
            .map(|l| {
                let (w, a) = hw_bits(plan.precision(&l.name));
                self.layer(l, w, a)
            })
            .collect::<Result<Vec<_>>>()?;
        let latency_ms = rows.iter().map(|r| r.latency_ms).sum();
        let energy_mj = rows.iter().map(|r| r.energy_mj).sum();
        Ok(HwTable {
            hardware: self.name().to_string(),
            batch: self.batch(),
            layers: rows,
            latency_ms,
            energy_mj,
        })
    }
}

/// The analytic roofline model of one layer.
pub fn simulate(
    spec: &HardwareSpec,
    layer: &LayerInfo,
    w_bits: BitWidth,
    a_bits: BitWidth,
) -> LayerHw {
    let batch = spec.batch;
    let (cycles, mac_bits) = match &spec.array {
        ArraySpec::Bitfusion {
            rows,
            cols,
            bricks_per_unit,
        } => (
            bitfusion::compute_cycles(layer, batch, rows * cols, *bricks_per_unit, w_bits, a_bits),
            bitfusion::mac_bits(w_bits, a_bits),
        ),
        ArraySpec::Bismo { dm, dn, dk } => (
            bismo::compute_cycles(layer, batch, (*dm, *dn, *dk), w_bits, a_bits),
            bismo::mac_bits(w_bits, a_bits),
        ),
    };
    let out_elems: usize = layer.output_shape.iter().product();
    let bytes = (layer.params as f64 * f64::from(w_bits)
        + batch as f64
            * (layer.input_elems as f64 * f64::from(a_bits)
                + out_elems as f64 * f64::from(spec.output_bits)))
        / 8.0;
    let compute_ms = cycles / (spec.clock_mhz * 1e3);
    let memory_ms = bytes / (spec.bandwidth_gb_s * 1e6);
    let (latency_ms, bound) = if compute_ms >= memory_ms {
        (compute_ms, Bound::Compute)
    } else {
        (memory_ms, Bound::Memory)
    };
    let pj = batch as f64 * layer.macs as f64 * mac_bits * spec.pj_per_mac_bit
        + bytes * spec.pj_per_byte;
    LayerHw {
        name: layer.name.clone(),
        w_bits,
        a_bits,
        macs: layer.macs,
        compute_ms: Some(compute_ms),
        memory_ms: Some(memory_ms),
        bytes: Some(bytes),
        bound,
        latency_ms,
        energy_mj: Some(pj * 1e-9),
    }
}

/// Latency in ms of an analytic spec as a [`CostModel`] (bits rounded up to integers).
#[derive(Debug, Clone, PartialEq)]
pub struct Latency(pub HardwareSpec);

/// Energy in mJ of an analytic spec as a [`CostModel`] (bits rounded up to integers).
#[derive(Debug, Clone, PartialEq)]
pub struct Energy(pub HardwareSpec);

fn int_bits(b: f64) -> BitWidth {
    b.ceil().clamp(1.0, f64::from(FULL_PRECISION)) as BitWidth
}

impl CostModel for Latency {
    fn name(&self) -> &str {
        "latency_ms"
    }

    fn layer_cost(&self, layer: &LayerInfo, w_bits: f64, a_bits: f64) -> f64 {
        simulate(&self.0, layer, int_bits(w_bits), int_bits(a_bits)).latency_ms
    }
}

impl CostModel for Energy {
    fn name(&self) -> &str {
        "energy_mj"
    }

    fn layer_cost(&self, layer: &LayerInfo, w_bits: f64, a_bits: f64) -> f64 {
        simulate(&self.0, layer, int_bits(w_bits), int_bits(a_bits))
            .energy_mj
            .unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::LayerOp;
    use crate::zoo::{self, ZooConfig};

    fn conv(name: &str, cout: usize, cin: usize, k: usize, hw: usize) -> LayerInfo {
        let params = cout * cin * k * k;
        LayerInfo {
            index: 0,
            name: name.into(),
            op: LayerOp::Conv,
            weight_shape: vec![cout, cin, k, k],
            params,
            bias_params: 0,
            input_shape: vec![cin, hw, hw],
            output_shape: vec![cout, hw, hw],
            input_elems: cin * hw * hw,
            macs: (params * hw * hw) as u64,
            out_channels: cout,
        }
    }

    fn models() -> Vec<HardwareModel> {
        HardwareSpec::builtin_names()
            .into_iter()
            .map(|n| HardwareModel::from_reference(n).unwrap())
            .collect()
    }

    fn zoo_layers(arch: &str, input: [usize; 3]) -> Vec<LayerInfo> {
        zoo::layer_infos(arch, &ZooConfig::new(input, 10)).unwrap()
    }

    #[test]
    fn latency_and_energy_never_decrease_with_bits() {
        let mut layers = zoo_layers("resnet20", [3, 32, 32]);
        layers.extend(zoo_layers("mobilenetv2", [3, 32, 32]));
        layers.push(conv("big", 512, 512, 3, 14));
        for m in models() {
            for l in &layers {
                for w in 2..=8 {
                    for a in 2..=8 {
                        let base = m.layer(l, w, a).unwrap();
                        for (w2, a2) in [(w + 1, a), (w, a + 1)] {
                            let up = m.layer(l, w2, a2).unwrap();
                            assert!(up.latency_ms >= base.latency_ms, "{} {}", m.name(), l.name);
                            assert!(up.energy_mj.unwrap() >= base.energy_mj.unwrap());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bitfusion_fused_throughput_is_4x_and_16x() {
        let m = HardwareModel::from_reference("bitfusion").unwrap();
        let l = conv("big", 512, 512, 3, 14);
        let r8 = m.layer(&l, 8, 8).unwrap();
        let r4 = m.layer(&l, 4, 4).unwrap();
        let r2 = m.layer(&l, 2, 2).unwrap();
        for r in [&r8, &r4, &r2] {
            assert_eq!(r.bound, Bound::Compute, "{r:?}");
        }
        assert!((r8.latency_ms / r4.latency_ms - 4.0).abs() < 1e-12);
        assert!((r8.latency_ms / r2.latency_ms - 16.0).abs() < 1e-12);
        // 3 bits pad to 4 and 5 pad to 8: no gain over the padded width.
        assert_eq!(m.layer(&l, 3, 3).unwrap().compute_ms, r4.compute_ms);
        assert_eq!(m.layer(&l, 5, 8).unwrap().compute_ms, r8.compute_ms);
        // 8/8: 462,422,016 MACs / 512 units at 500 MHz.
        let expected = 462_422_016.0 / 512.0 / 500e3;
        assert!((r8.compute_ms.unwrap() - expected).abs() < 1e-12);
    }

    #[test]
    fn bismo_cycles_scale_with_w_times_a() {
        let m = HardwareModel::from_reference("bismo").unwrap();
        let l = conv("big", 512, 512, 3, 14);
        let c = |w, a| m.layer(&l, w, a).unwrap().compute_ms.unwrap();
        assert!((c(8, 8) / c(4, 4) - 4.0).abs() < 1e-12);
        assert!((c(8, 8) / c(2, 4) - 8.0).abs() < 1e-12);
        assert!((c(3, 5) / c(5, 3) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn memory_bound_layers_are_identified() {
        // At batch 1 a large FC layer moves a byte of weight per MAC: memory-bound.
        for m in models().into_iter().filter(|m| m.batch() == 1) {
            let fc = LayerInfo::linear(0, "fc", 4096, 4096);
            let r = m.layer(&fc, 8, 8).unwrap();
            assert_eq!(r.bound, Bound::Memory, "{} {r:?}", m.name());
            assert_eq!(r.latency_ms, r.memory_ms.unwrap());
            // 16.8 MB of 8-bit weights over the spec's bandwidth.
            let HardwareModel::Analytic(spec) = &m else {
                unreachable!()
            };
            let bytes = 4096.0 * 4096.0 + spec.batch as f64 * (4096.0 + 4096.0);
            assert!((r.bytes.unwrap() - bytes).abs() < 1e-6);
        }
        let bf = HardwareModel::from_reference("bitfusion").unwrap();
        let big = conv("big", 512, 512, 3, 14);
        assert_eq!(bf.layer(&big, 8, 8).unwrap().bound, Bound::Compute);
    }

    #[test]
    fn csv_lookup_round_trips() {
        let layers = zoo_layers("lenet5", [1, 28, 28]);
        let bits: Vec<u32> = (2..=8).chain([32]).collect();
        for m in models() {
            let t = LookupTable::from_model(&m, &layers, &bits, &bits).unwrap();
            assert_eq!(t.len(), layers.len() * bits.len() * bits.len());
            let back = LookupTable::parse(&t.to_csv(), m.name()).unwrap();
            assert_eq!(back, t);
            let table = HardwareModel::Lookup(back);
            let mut plan = QuantPlan::uniform(&layers, 4, 8);
            plan.layers[0].w_bits = 2;
            plan.layers.pop(); // last layer FP32
            let direct = m.table(&layers, &plan).unwrap();
            let looked = table.table(&layers, &plan).unwrap();
            assert_eq!(direct.latency_ms, looked.latency_ms);
            assert_eq!(direct.energy_mj, looked.energy_mj);
            assert!(looked.layers.iter().all(|r| r.bound == Bound::Table));
        }
    }

    #[test]
    fn csv_missing_entries_and_bad_rows_are_input_errors() {
        let text = "layer,w_bits,a_bits,latency_ms\n# comment\nconv1,4,8,0.5\nfc,4,8,0.25\n";
        let t = LookupTable::parse(text, "t.csv").unwrap();
        assert!(!t.has_energy());
        assert_eq!(t.get("fc", 4, 8).unwrap(), (0.25, None));
        let err = t.get("fc", 2, 8).unwrap_err();
        let msg = err.to_string();
        assert!(err.is_input_error());
        assert!(
            msg.contains("fc") && msg.contains("w_bits=2") && msg.contains("a_bits=8"),
            "{msg}"
        );
        for bad in [
            "conv1,4,8\n",
            "conv1,x,8,1\n",
            "conv1,4,8,-1\n",
            "conv1,4,8,1\nconv1,4,8,2\n",
            "# nothing\n",
        ] {
            let err = LookupTable::parse(bad, "bad.csv").unwrap_err();
            assert!(
                err.is_input_error() && err.to_string().contains("bad.csv"),
                "{err}"
            );
        }
        let model = HardwareModel::Lookup(t);
        let layers = vec![LayerInfo::linear(0, "fc", 2, 2)];
        let plan = QuantPlan::uniform(&layers, 3, 8);
        let msg = model.table(&layers, &plan).unwrap_err().to_string();
        assert!(
            msg.contains("layer fc") && msg.contains("w_bits=3"),
            "{msg}"
        );
    }

    #[test]
    fn references_resolve() {
        assert!(matches!(
            HardwareModel::from_reference("bismo").unwrap(),
            HardwareModel::Analytic(_)
        ));
        let err = HardwareModel::from_reference("tpu-v9").unwrap_err();
        assert!(err.is_input_error() && err.to_string().contains("bitfusion"));
        let err = HardwareModel::from_reference("/nonexistent/x.csv").unwrap_err();
        assert!(err.is_input_error());
    }
}
