//! Tensor-free cost accounting over a model's [`LayerInfo`] table and a [`QuantPlan`]
//! (docs/algorithms.md §0.4 "Cost conventions shared by all methods", §7.5 "Cost models").
//!
//! Conventions, shared by every method:
//! - sizes count weight elements only; biases and BatchNorm parameters are excluded (§0.4);
//! - every quantizable layer is counted at its planned widths, the first conv and the last
//!   FC included; a layer absent from the plan is full precision (32-bit weights and
//!   activations);
//! - `Size = Σ n·b_w` bits ([`size`]); quantizer metadata (32-bit scales, plus 32-bit zero
//!   points for asymmetric quantizers; one per output channel or one per tensor) is reported
//!   apart as overhead, and [`CostTable::size_bytes`] includes it while
//!   [`CostTable::size_bytes_weights_only`] is the plain §0.4 number;
//! - `BOPs = Σ MAC·b_w·b_a` per sample ([`bitops`]); FP32 counts as 32×32.
//!
//! The [`CostModel`] trait gives search methods one scalar per layer and bit pair, so
//! hardware simulators sit next to [`ModelSize`] and [`BitOps`]: [`HardwareModel`] gives per-layer
//! latency and energy from the analytic BitFusion / BISMO models ([`HardwareSpec`], TOML) or a
//! CSV [`LookupTable`] (formulas in `docs/cost-models.md`).

mod bismo;
mod bitfusion;
pub mod bitops;
mod hardware;
mod lookup;
mod simulator;
pub mod size;

pub use bismo::matrix_dims;
pub use bitfusion::{bricks_per_mac, padded_bits};
pub use bitops::{BitOps, layer_bops};
pub use hardware::{ArraySpec, HardwareSpec};
pub use lookup::{COST_COLUMNS, CsvRow, CsvRows, LookupEntry, LookupTable, read_rows};
pub use simulator::{Bound, Energy, HardwareModel, HwTable, Latency, LayerHw, hw_bits, simulate};
pub use size::{ModelSize, SCALE_BITS, overhead_bits, weight_bits};

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::graph::LayerInfo;
use crate::plan::{FULL_PRECISION, QuantPlan};

/// A per-layer cost as a function of the layer's (mean) weight and activation bit-widths.
pub trait CostModel {
    /// Short name of the quantity (`size_bits`, `bops`, …).
    fn name(&self) -> &str;

    /// Cost of `layer` at `w_bits` weight bits (the mean over channels for channel-wise
    /// plans) and `a_bits` activation bits.
    fn layer_cost(&self, layer: &LayerInfo, w_bits: f64, a_bits: f64) -> f64;

    /// Total cost of `layers` under `plan`; layers absent from the plan count at 32×32.
    fn plan_cost(&self, layers: &[LayerInfo], plan: &QuantPlan) -> f64 {
        layers
            .iter()
            .map(|l| match plan.precision(&l.name) {
                Some(p) => self.layer_cost(l, p.mean_w_bits(), f64::from(p.a_bits)),
                None => self.layer_cost(l, f64::from(FULL_PRECISION), f64::from(FULL_PRECISION)),
            })
            .sum()
    }

    /// Total cost with every layer at `w_bits`/`a_bits` (reference budgets such as HAQ's
    /// `ratio × cost(all at reference bits)`, docs/algorithms.md §7.5).
    fn uniform_cost(&self, layers: &[LayerInfo], w_bits: f64, a_bits: f64) -> f64 {
        layers
            .iter()
            .map(|l| self.layer_cost(l, w_bits, a_bits))
            .sum()
    }
}

/// The cost of one layer under a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerCost {
    /// Layer name.
    pub name: String,
    /// Weight bit-width (the mean over channels for channel-wise plans).
    pub w_bits: f64,
    /// Activation bit-width.
    pub a_bits: f64,
    /// Weight elements (biases excluded).
    pub params: u64,
    /// Weight storage in bits: `n·b`, or `Σ_c (n / C_out)·b_c`.
    pub weight_bits: u64,
    /// Quantizer metadata in bits (scales and zero points; 0 for full precision).
    pub overhead_bits: u64,
    /// Multiply-accumulates per sample.
    pub macs: u64,
    /// Bit operations per sample: `MAC·b_w·b_a`, or `Σ_c MAC / C_out·b_c·b_a`.
    pub bops: f64,
}

/// Per-layer costs of a plan and their totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostTable {
    /// One row per model layer, in model order.
    pub layers: Vec<LayerCost>,
    /// Total weight elements `Σ n`.
    pub params: u64,
    /// Total weight storage in bits, `Σ n·b`.
    pub weight_bits: u64,
    /// Total quantizer metadata in bits.
    pub overhead_bits: u64,
    /// Model size in bytes including metadata: `ceil((weight_bits + overhead_bits) / 8)`.
    pub size_bytes: u64,
    /// Model size in bytes of the weights alone, `ceil(Σ n·b / 8)` (docs/algorithms.md §0.4 convention).
    pub size_bytes_weights_only: u64,
    /// Parameter-weighted mean weight bit-width `Σ n·b / Σ n` (0 for a model without weights).
    pub avg_w_bits: f64,
    /// Compression ratio against FP32 weights, `32·Σ n / Σ n·b` (1 without weights).
    pub compression: f64,
    /// Total multiply-accumulates per sample.
    pub macs: u64,
    /// Total bit operations per sample.
    pub bops: f64,
    /// FP32 reference weight size in bytes, `4·Σ n`.
    pub fp32_size_bytes: u64,
    /// FP32 reference bit operations, `32·32·Σ MAC`.
    pub fp32_bops: f64,
    /// Bytes of this plan's packed export ([`crate::export`]) without the safetensors header:
    /// per layer its codes rounded up to whole bytes (or `4·n` in FP32), its scales and zero
    /// points, its FP32 biases, and 8 bytes (scale and zero point) per quantized input
    /// activation. Unlike `size_bytes` (docs/algorithms.md §0.4, biases excluded) this is what the file
    /// holds; unfolded BatchNorm parameters are not layer rows and are not counted.
    pub stored_bytes: u64,
}

impl CostTable {
    /// Costs of `plan` over `layers`, after [`QuantPlan::validate`].
    pub fn new(layers: &[LayerInfo], plan: &QuantPlan) -> Result<CostTable> {
        plan.validate(layers)?;
        let rows: Vec<LayerCost> = layers
            .iter()
            .map(|l| {
                let p = plan.precision(&l.name);
                let (w_bits, a_bits) = match p {
                    Some(p) => (p.mean_w_bits(), f64::from(p.a_bits)),
                    None => (f64::from(FULL_PRECISION), f64::from(FULL_PRECISION)),
                };
                LayerCost {
                    name: l.name.clone(),
                    w_bits,
                    a_bits,
                    params: l.params as u64,
                    weight_bits: weight_bits(l, p),
                    overhead_bits: overhead_bits(l, p),
                    macs: l.macs,
                    bops: layer_bops(l, p),
                }
            })
            .collect();
        let params: u64 = rows.iter().map(|r| r.params).sum();
        let wbits: u64 = rows.iter().map(|r| r.weight_bits).sum();
        let obits: u64 = rows.iter().map(|r| r.overhead_bits).sum();
        let macs: u64 = rows.iter().map(|r| r.macs).sum();
        let bops: f64 = rows.iter().map(|r| r.bops).sum();
        let fp = u64::from(FULL_PRECISION);
        let stored_bytes = layers
            .iter()
            .zip(&rows)
            .map(|(l, r)| {
                let acts = if r.a_bits < f64::from(FULL_PRECISION) {
                    8
                } else {
                    0
                };
                r.weight_bits.div_ceil(8) + r.overhead_bits / 8 + 4 * l.bias_params as u64 + acts
            })
            .sum();
        Ok(CostTable {
            layers: rows,
            params,
            weight_bits: wbits,
            overhead_bits: obits,
            size_bytes: (wbits + obits).div_ceil(8),
            size_bytes_weights_only: wbits.div_ceil(8),
            avg_w_bits: if params == 0 {
                0.0
            } else {
                wbits as f64 / params as f64
            },
            compression: if wbits == 0 {
                1.0
            } else {
                (fp * params) as f64 / wbits as f64
            },
            macs,
            bops,
            fp32_size_bytes: fp * params / 8,
            fp32_bops: (fp * fp * macs) as f64,
            stored_bytes,
        })
    }

    /// Writes `size_bytes` (with metadata), `avg_w_bits` and `bops` into `plan`.
    pub fn fill_plan(&self, plan: &mut QuantPlan) {
        plan.size_bytes = Some(self.size_bytes);
        plan.avg_w_bits = Some(self.avg_w_bits);
        plan.bops = Some(self.bops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::LayerOp;
    use crate::plan::{Granularity, LayerPrecision, QuantizerKind};

    fn conv(index: usize, name: &str, ws: [usize; 4], out_hw: usize) -> LayerInfo {
        let params = ws.iter().product::<usize>();
        LayerInfo {
            index,
            name: name.into(),
            op: LayerOp::Conv,
            weight_shape: ws.to_vec(),
            params,
            bias_params: ws[0],
            input_shape: vec![],
            output_shape: vec![ws[0], out_hw, out_hw],
            input_elems: 0,
            macs: (params * out_hw * out_hw) as u64,
            out_channels: ws[0],
        }
    }

    fn linear(index: usize, name: &str, out: usize, inp: usize) -> LayerInfo {
        LayerInfo::linear(index, name, out, inp)
    }

    /// LeNet-5: conv1 6x1x5x5 (24x24 out), conv2 16x6x5x5 (8x8 out), fc 256-120-84-10.
    fn lenet() -> Vec<LayerInfo> {
        vec![
            conv(0, "conv1", [6, 1, 5, 5], 24),
            conv(1, "conv2", [16, 6, 5, 5], 8),
            linear(2, "fc1", 120, 256),
            linear(3, "fc2", 84, 120),
            linear(4, "fc3", 10, 84),
        ]
    }

    fn plan(entries: Vec<LayerPrecision>) -> QuantPlan {
        let mut p = QuantPlan::uniform(&[], 8, 8);
        p.method = "test".into();
        p.layers = entries;
        p
    }

    /// Per-layer `(weight bits, overhead bits)` of a cost table.
    fn layer_bits(t: &CostTable) -> (Vec<u64>, Vec<u64>) {
        t.layers
            .iter()
            .map(|r| (r.weight_bits, r.overhead_bits))
            .unzip()
    }

    fn lp(name: &str, w: u32, a: u32) -> LayerPrecision {
        LayerPrecision::new(name, w, a)
    }

    #[test]
    fn lenet_table_facts() {
        let l = lenet();
        let params: Vec<usize> = l.iter().map(|x| x.params).collect();
        let macs: Vec<u64> = l.iter().map(|x| x.macs).collect();
        assert_eq!(params, [150, 2_400, 30_720, 10_080, 840]);
        assert_eq!(macs, [86_400, 153_600, 30_720, 10_080, 840]);
    }

    #[test]
    fn lenet_mixed_plan_hand_numbers() {
        // conv1 W8A8, conv2 W4A8, fc1 W2A4, fc2 W4A4, fc3 W8A8; per-channel symmetric.
        let p = plan(vec![
            lp("conv1", 8, 8),
            lp("conv2", 4, 8),
            lp("fc1", 2, 4),
            lp("fc2", 4, 4),
            lp("fc3", 8, 8),
        ]);
        let t = CostTable::new(&lenet(), &p).unwrap();
        assert_eq!(
            layer_bits(&t),
            (
                vec![1_200, 9_600, 61_440, 40_320, 6_720],
                vec![192, 512, 3_840, 2_688, 320]
            )
        );
        let bops: Vec<f64> = t.layers.iter().map(|r| r.bops).collect();
        assert_eq!(
            bops,
            [5_529_600.0, 4_915_200.0, 245_760.0, 161_280.0, 53_760.0]
        );
        assert_eq!(t.params, 44_190);
        assert_eq!(t.weight_bits, 119_280);
        assert_eq!(t.overhead_bits, 7_552);
        assert_eq!(t.size_bytes, 15_854); // 126_832 / 8
        assert_eq!(t.size_bytes_weights_only, 14_910); // 119_280 / 8
        // Stored: 14_910 code bytes + 944 scale bytes + 4·(6+16+120+84+10) bias bytes + 5·8
        // activation bytes.
        assert_eq!(t.stored_bytes, 14_910 + 944 + 944 + 40);
        assert!((t.avg_w_bits - 2.699_253_224_711_473).abs() < 1e-12);
        assert!((t.compression - 11.855_130_784_708_25).abs() < 1e-12);
        assert_eq!(t.macs, 281_640);
        assert_eq!(t.bops, 10_905_600.0);
        assert_eq!(t.fp32_size_bytes, 176_760);
        assert_eq!(t.fp32_bops, 288_399_360.0);

        let mut q = p.clone();
        t.fill_plan(&mut q);
        assert_eq!(q.size_bytes, Some(15_854));
        assert_eq!(q.bops, Some(10_905_600.0));
        assert_eq!(ModelSize.plan_cost(&lenet(), &p), 119_280.0);
        assert_eq!(BitOps.plan_cost(&lenet(), &p), 10_905_600.0);
    }

    #[test]
    fn lenet_overheads_fp32_and_missing_layers() {
        let mut conv1 = lp("conv1", 5, 8);
        conv1.granularity = Granularity::PerTensor;
        let mut conv2 = lp("conv2", 4, 8);
        conv2.quantizer = QuantizerKind::Asymmetric;
        let mut fc1 = lp("fc1", 2, 4);
        fc1.quantizer = QuantizerKind::Lsq;
        // fc2 explicitly FP32, fc3 absent from the plan (FP32 too).
        let p = plan(vec![conv1, conv2, fc1, lp("fc2", 32, 32)]);
        let t = CostTable::new(&lenet(), &p).unwrap();
        assert_eq!(
            layer_bits(&t),
            (
                vec![750, 9_600, 61_440, 322_560, 26_880],
                vec![32, 1_024, 3_840, 0, 0]
            )
        );
        assert_eq!(t.layers[4].w_bits, 32.0);
        assert_eq!(t.layers[4].a_bits, 32.0);
        assert_eq!(t.weight_bits, 421_230);
        assert_eq!(t.overhead_bits, 4_896);
        assert_eq!(t.size_bytes, 53_266); // 426_126 / 8 = 53_265.75
        assert_eq!(t.size_bytes_weights_only, 52_654); // 421_230 / 8 = 52_653.75
        assert!((t.avg_w_bits - 9.532_247_114_731_84).abs() < 1e-12);
        assert!((t.compression - 3.357_025_852_859_482_7).abs() < 1e-12);
        // 3_456_000 + 4_915_200 + 245_760 + 10_321_920 + 860_160
        assert_eq!(t.bops, 19_799_040.0);
        assert_eq!(BitOps.plan_cost(&lenet(), &p), 19_799_040.0);
    }

    #[test]
    fn lenet_per_channel_plan() {
        let mut conv1 = lp("conv1", 4, 8);
        conv1.channel_w_bits = Some(vec![2, 4, 8, 8, 4, 2]); // Σ 28, 25 weights each
        let mut conv2 = lp("conv2", 4, 8);
        conv2.channel_w_bits = Some(vec![2, 3, 4, 5, 6, 7, 8, 2, 3, 4, 5, 6, 7, 8, 4, 4]); // Σ 78
        let mut fc2 = lp("fc2", 4, 4);
        fc2.quantizer = QuantizerKind::Asymmetric;
        let p = plan(vec![conv1, conv2, lp("fc1", 4, 4), fc2, lp("fc3", 4, 4)]);
        let t = CostTable::new(&lenet(), &p).unwrap();
        assert!((t.layers[0].w_bits - 28.0 / 6.0).abs() < 1e-12);
        assert_eq!(t.layers[1].w_bits, 78.0 / 16.0);
        // Per-channel scales (32 bits each); fc2 also has 84 zero points.
        assert_eq!(
            layer_bits(&t),
            (
                vec![700, 11_700, 122_880, 40_320, 3_360],
                vec![192, 512, 3_840, 5_376, 320]
            )
        );
        // conv1: 14_400 MACs/channel · 28 · 8; conv2: 9_600 · 78 · 8.
        assert_eq!(t.layers[0].bops, 3_225_600.0);
        assert_eq!(t.layers[1].bops, 5_990_400.0);
        assert_eq!(t.weight_bits, 178_960);
        assert_eq!(t.overhead_bits, 10_240);
        assert_eq!(t.size_bytes, 23_650);
        assert_eq!(t.size_bytes_weights_only, 22_370);
        assert!((t.avg_w_bits - 4.049_785_019_235_121).abs() < 1e-12);
        assert!((t.compression - 7.901_654_000_894_054).abs() < 1e-12);
        assert_eq!(t.bops, 9_882_240.0);
        // The mean-bits closed form of the trait agrees with the channel sums.
        assert!((ModelSize.plan_cost(&lenet(), &p) - 178_960.0).abs() < 1e-6);
        assert!((BitOps.plan_cost(&lenet(), &p) - 9_882_240.0).abs() < 1e-6);
    }

    #[test]
    fn kmeans_layers_count_their_codebook() {
        // HAQ's k-means: n·b weight bits (docs/algorithms.md §4.9) plus a codebook of 2^b f32 centroids.
        let mut fc1 = lp("fc1", 3, 32);
        fc1.quantizer = QuantizerKind::KMeans;
        fc1.granularity = Granularity::PerTensor;
        let mut conv2 = lp("conv2", 8, 8);
        conv2.quantizer = QuantizerKind::KMeans;
        let p = plan(vec![conv2, fc1]);
        let t = CostTable::new(&lenet(), &p).unwrap();
        assert_eq!(t.layers[1].weight_bits, 2_400 * 8);
        assert_eq!(t.layers[1].overhead_bits, 256 * 32);
        assert_eq!(t.layers[2].weight_bits, 30_720 * 3);
        assert_eq!(t.layers[2].overhead_bits, 8 * 32);
        assert_eq!(t.overhead_bits, 256 * 32 + 8 * 32);
        let wb = 150 * 32 + 2_400 * 8 + 30_720 * 3 + (10_080 + 840) * 32;
        assert_eq!(t.weight_bits, wb);
        assert_eq!(t.size_bytes, (wb + 264 * 32).div_ceil(8));
        assert_eq!(t.size_bytes_weights_only, wb.div_ceil(8));
        // Stored: codes, codebooks, FP32 weights, biases (6+16+120+84+10), conv2's input.
        let codes = (2_400u64 * 8).div_ceil(8) + (30_720u64 * 3).div_ceil(8);
        let fp = 4 * (150 + 10_080 + 840);
        assert_eq!(t.stored_bytes, codes + 264 * 4 + fp + 4 * 236 + 8);
    }

    #[test]
    fn invalid_plan_is_rejected() {
        let p = plan(vec![lp("conv9", 4, 4)]);
        assert!(CostTable::new(&lenet(), &p).is_err());
    }

    #[test]
    fn uniform_cost_and_names() {
        let l = lenet();
        assert_eq!(ModelSize.name(), "size_bits");
        assert_eq!(BitOps.name(), "bops");
        assert_eq!(ModelSize.uniform_cost(&l, 32.0, 32.0), 44_190.0 * 32.0);
        assert_eq!(BitOps.uniform_cost(&l, 8.0, 8.0), 281_640.0 * 64.0);
        let t = CostTable::new(&l, &QuantPlan::uniform(&l, 32, 32)).unwrap();
        assert_eq!(t.size_bytes, 176_760);
        assert_eq!(t.overhead_bits, 0);
        assert_eq!(t.compression, 1.0);
        assert_eq!(t.bops, t.fp32_bops);
    }

    #[test]
    fn resnet20_mixed_plan_hand_numbers() {
        let cfg = crate::zoo::ZooConfig::new([3, 32, 32], 10);
        let layers = crate::zoo::layer_infos("resnet20", &cfg).unwrap();
        assert_eq!(layers.len(), 22); // 19 convs + 2 downsample 1x1 convs + fc
        // conv1 W8A8; layer1 W4A8; layer2 W4A4; layer3 W2A4; downsample convs W8A4;
        // fc absent (FP32).
        let entries = layers
            .iter()
            .filter(|l| l.name != "fc")
            .map(|l| {
                let n = l.name.as_str();
                let (w, a) = if n == "conv1" {
                    (8, 8)
                } else if n.starts_with("layer1") {
                    (4, 8)
                } else if n.contains("downsample") {
                    (8, 4)
                } else if n.starts_with("layer2") {
                    (4, 4)
                } else {
                    (2, 4)
                };
                lp(n, w, a)
            })
            .collect();
        let t = CostTable::new(&layers, &plan(entries)).unwrap();
        // Σ n = 432 + 6·2_304 + (4_608 + 5·9_216 + 512) + (18_432 + 5·36_864 + 2_048) + 640
        assert_eq!(t.params, 270_896);
        // 3_456 + 55_296 + 202_752 + 4_096 + 405_504 + 16_384 + 20_480
        assert_eq!(t.weight_bits, 707_968);
        // 32 · (16 + 6·16 + 7·32 + 7·64); fc is FP32 (no scales)
        assert_eq!(t.overhead_bits, 25_088);
        assert_eq!(t.size_bytes, 91_632);
        assert_eq!(t.size_bytes_weights_only, 88_496);
        assert!((t.avg_w_bits - 2.613_430_984_584_49).abs() < 1e-12);
        assert!((t.compression - 12.244_440_426_685_951).abs() < 1e-12);
        assert_eq!(t.macs, 40_813_184);
        assert_eq!(t.bops, 801_767_424.0);
        assert_eq!(t.fp32_size_bytes, 1_083_584);
        assert_eq!(t.fp32_bops, 41_792_700_416.0);
    }
}
