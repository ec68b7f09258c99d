//! Quantizers (spec §7.2): uniform symmetric/asymmetric quantization parameters, per tensor or
//! per output channel, and activation-range calibration observers (min-max, percentile,
//! MSE-optimal clipping). The rounding rule everywhere is round half to even, so simulation
//! and export agree bit for bit.

mod observer;
mod params;

pub use observer::{Observer, RangeMethod};
pub use params::{QuantParams, fake_quant_values, quant_range};
