//! Access to the contiguous `f32` data of CPU tensors and storages.

use candle::{CpuStorage, Layout, Result, Storage, Tensor, bail};

/// The contiguous `f32` slice behind `storage` viewed through `layout`.
pub(crate) fn slice_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("mpq-kernels: expected a contiguous layout, got {layout:?}"),
    }
}

/// Runs `f` on the contiguous `f32` data of the CPU tensor `t` (copied first if strided).
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(slice_f32(cpu, layout)?),
        _ => bail!("mpq-kernels: expected a CPU tensor"),
    }
}

/// Whether the fast CPU `f32` kernels apply to all `ts`.
pub(crate) fn fast_path(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle::DType::F32)
}
