//! Quantizers (docs/algorithms.md §7.2): uniform symmetric/asymmetric quantization parameters, per tensor or
//! per output channel, activation-range calibration observers (min-max, percentile,
//! MSE-optimal clipping), and plan application through the executor hooks. The rounding rule
//! everywhere is round half to even, so simulation and export agree bit for bit.

mod apply;
mod error;
mod kmeans;
mod lsq;
mod observer;
mod params;

pub use apply::{CalibrationConfig, PlanHooks, fake_quant_tensor, prepare_graph, weight_params};
pub use error::{act_errors, channel_weight_errors, weight_error, weight_errors};
pub use kmeans::{
    Codebook, KMeans1d, MAX_CLUSTERS, cluster_means, kmeans_1d, kmeans_pp_init, layer_seed,
    lloyd_1d,
};
pub use lsq::{LsqQuantizer, MIN_STEP};
pub use observer::{Observer, RangeMethod};
pub use params::{CLIP_GRID, QuantParams, fake_quant_values, mse_symmetric_max, quant_range};
