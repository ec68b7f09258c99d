//! Named weights and buffers of a graph, stored under PyTorch `state_dict` names, with strict
//! safetensors loading (every missing, extra or mis-shaped tensor is an error naming it).

use std::collections::HashMap;
use std::path::Path;

use candle::{DType, Device, Tensor, Var};

use crate::{Error, Result};

/// Whether a parameter is trained by the optimizer or is a statistics buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A trainable weight or bias.
    Trainable,
    /// A buffer such as BatchNorm running statistics (updated in training, never by gradients).
    Buffer,
}

/// One named tensor of a model.
#[derive(Debug, Clone)]
pub struct Param {
    /// Full `state_dict` name, e.g. `layer1.0.bn1.running_mean`.
    pub name: String,
    /// The value; a `Var` so gradients can be taken and values set in place.
    pub var: Var,
    /// Trainable or buffer.
    pub kind: ParamKind,
}

/// An insertion-ordered store of named parameters (the order is the model's module order,
/// which makes iteration, and so every seeded estimate, reproducible).
#[derive(Debug, Clone)]
pub struct ParamStore {
    params: Vec<Param>,
    index: HashMap<String, usize>,
    device: Device,
}

/// Name suffix of the BatchNorm step counter, optional when loading.
const OPTIONAL_SUFFIX: &str = ".num_batches_tracked";

impl ParamStore {
    /// An empty store on `device`.
    pub fn new(device: &Device) -> Self {
        ParamStore {
            params: Vec::new(),
            index: HashMap::new(),
            device: device.clone(),
        }
    }

    /// The device of every parameter.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Adds a parameter; names must be unique.
    pub fn insert(&mut self, name: &str, value: Tensor, kind: ParamKind) -> Result<Var> {
        if self.index.contains_key(name) {
            return Err(Error::config(
                "graph",
                format!("duplicate parameter {name:?}"),
            ));
        }
        let var = Var::from_tensor(&value.to_device(&self.device)?)?;
        self.index.insert(name.to_string(), self.params.len());
        self.params.push(Param {
            name: name.to_string(),
            var: var.clone(),
            kind,
        });
        Ok(var)
    }

    /// The parameter named `name`.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.index.get(name).map(|&i| &self.params[i].var)
    }

    /// The parameter named `name`, or an error naming it.
    pub fn var(&self, name: &str) -> Result<&Var> {
        self.get(name)
            .ok_or_else(|| Error::config("parameter", format!("no parameter {name:?}")))
    }

    /// All parameters in module order.
    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.params.iter()
    }

    /// Number of parameters (tensors).
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The trainable variables in module order (what optimizers update).
    pub fn trainable(&self) -> Vec<Var> {
        self.trainable_outside(&[])
    }

    /// The trainable variables in module order, less those of the `frozen` layers (a
    /// layer `conv1` holds `conv1.weight` and `conv1.bias`).
    pub fn trainable_outside(&self, frozen: &[String]) -> Vec<Var> {
        let held = |name: &str| {
            (frozen.iter()).any(|l| {
                name.strip_prefix(l.as_str())
                    .is_some_and(|r| r.starts_with('.'))
            })
        };
        self.params
            .iter()
            .filter(|p| p.kind == ParamKind::Trainable && !held(&p.name))
            .map(|p| p.var.clone())
            .collect()
    }

    /// Number of trainable scalars (PyTorch's `sum(p.numel() for p in parameters())`).
    pub fn num_trainable(&self) -> usize {
        self.params
            .iter()
            .filter(|p| p.kind == ParamKind::Trainable)
            .map(|p| p.var.elem_count())
            .sum()
    }

    /// A deep copy of every value (for later [`ParamStore::restore`]).
    pub fn snapshot(&self) -> Result<Vec<Tensor>> {
        Ok(self
            .params
            .iter()
            .map(|p| p.var.as_tensor().copy())
            .collect::<candle::Result<_>>()?)
    }

    /// Sets every value back to a [`ParamStore::snapshot`], bit for bit.
    pub fn restore(&self, snapshot: &[Tensor]) -> Result<()> {
        for (p, t) in self.params.iter().zip(snapshot) {
            p.var.set(t)?;
        }
        Ok(())
    }

    /// Saves every tensor (f32, or i64 for counters) with string metadata, atomically.
    pub fn save(&self, path: &Path, metadata: HashMap<String, String>) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .params
            .iter()
            .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
            .collect();
        save_tensors(path, tensors, metadata)
    }

    /// Loads every parameter from a safetensors file, strictly: a tensor the model needs but the
    /// file lacks, a tensor the file has but the model does not, or a tensor of another shape is
    /// an error naming it. (`*.num_batches_tracked` may be absent.) Returns the file's metadata.
    pub fn load_strict(&mut self, path: &Path) -> Result<HashMap<String, String>> {
        let (tensors, metadata) = load_tensors(path, &self.device)?;
        self.assign_strict(path, tensors)?;
        Ok(metadata)
    }

    /// Assigns a map of tensors strictly (see [`ParamStore::load_strict`]).
    pub fn assign_strict(
        &mut self,
        path: &Path,
        mut tensors: HashMap<String, Tensor>,
    ) -> Result<()> {
        let mut extra: Vec<&String> = tensors
            .keys()
            .filter(|k| !self.index.contains_key(*k))
            .collect();
        extra.sort();
        if let Some(name) = extra.first() {
            return Err(Error::UnexpectedTensor {
                name: (*name).clone(),
                path: path.to_path_buf(),
            });
        }
        for p in &self.params {
            let Some(t) = tensors.remove(&p.name) else {
                if p.name.ends_with(OPTIONAL_SUFFIX) {
                    continue;
                }
                return Err(Error::MissingTensor {
                    name: p.name.clone(),
                    path: path.to_path_buf(),
                });
            };
            if t.dims() != p.var.dims() {
                return Err(Error::ShapeMismatch {
                    name: format!("tensor {:?} in {}", p.name, path.display()),
                    expected: format!("{:?}", p.var.dims()),
                    got: format!("{:?}", t.dims()),
                });
            }
            let t = t.to_dtype(p.var.dtype())?;
            p.var.set(&t)?;
        }
        Ok(())
    }
}

/// Reads every tensor and the metadata of a safetensors file; a file that is not valid
/// safetensors is a [`Error::CorruptFile`].
pub(crate) fn load_tensors(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = crate::io::read(path)?;
    load_tensors_from(&bytes, path, device)
}

/// [`load_tensors`] of the bytes of a safetensors file; `path` names it in errors. What the
/// tensors take once loaded is checked against the memory budget ([`crate::limits`]) first.
pub(crate) fn load_tensors_from(
    bytes: &[u8],
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    use candle::safetensors::Load;
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::corrupt(path, format!("not a valid safetensors file: {e}")))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::corrupt(path, format!("not a valid safetensors file: {e}")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    // Each tensor is copied out of the file, and half-precision ones widened to f32: at most
    // 8 bytes per value (the file's own bytes are already held).
    let loaded: u128 = st
        .tensors()
        .iter()
        .map(|(_, v)| crate::limits::elements(v.shape()).saturating_mul(8))
        .fold(0u128, u128::saturating_add);
    crate::limits::check_bytes_with(loaded, || {
        format!("the {} tensors of {}", st.len(), path.display())
    })?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let t = view
            .load(device)
            .map_err(|e| Error::corrupt(path, format!("tensor {name:?}: {e}")))?;
        let t = match t.dtype() {
            DType::F16 | DType::BF16 | DType::F64 => t.to_dtype(DType::F32)?,
            _ => t,
        };
        out.insert(name, t);
    }
    Ok((out, metadata))
}

/// Writes tensors and metadata as safetensors, atomically.
pub(crate) fn save_tensors(
    path: &Path,
    mut tensors: Vec<(String, Tensor)>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let cpu: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<candle::Result<_>>()?;
    let bytes =
        safetensors::tensor::serialize(cpu.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
            .map_err(|e| Error::config("output", format!("cannot serialise safetensors: {e}")))?;
    crate::io::write_atomic(path, &bytes)
}
