//! A user-supplied latency/energy lookup table (HAQ's per-layer `T[l][b_w][b_a]` tables, spec
//! §4.8 and §7.5), as CSV: `layer,w_bits,a_bits,latency_ms[,energy_mj]`, one row per layer and
//! bit pair, an optional header row and `#` comments. A missing entry is an input error naming
//! the layer and bits. [`LookupTable::from_model`] and [`LookupTable::to_csv`] write a table
//! from any model, so a simulator's numbers can be edited by hand and read back unchanged.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::plan::BitWidth;
use crate::{Error, Result};

/// Latency (ms) and optional energy (mJ) per `(layer, w_bits, a_bits)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LookupTable {
    name: String,
    entries: BTreeMap<(String, BitWidth, BitWidth), (f64, Option<f64>)>,
}

const HEADER: &str = "layer,w_bits,a_bits,latency_ms,energy_mj";

impl LookupTable {
    /// An empty table called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        LookupTable {
            name: name.into(),
            entries: BTreeMap::new(),
        }
    }

    /// The table's name (its path when loaded from a file).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether every entry has an energy.
    pub fn has_energy(&self) -> bool {
        !self.entries.is_empty() && self.entries.values().all(|(_, e)| e.is_some())
    }

    /// Adds or replaces an entry.
    pub fn insert(
        &mut self,
        layer: &str,
        w_bits: BitWidth,
        a_bits: BitWidth,
        latency_ms: f64,
        energy_mj: Option<f64>,
    ) {
        self.entries
            .insert((layer.to_string(), w_bits, a_bits), (latency_ms, energy_mj));
    }

    /// `(latency_ms, energy_mj)` of `layer` at `w_bits × a_bits`.
    pub fn get(
        &self,
        layer: &str,
        w_bits: BitWidth,
        a_bits: BitWidth,
    ) -> Result<(f64, Option<f64>)> {
        self.entries
            .get(&(layer.to_string(), w_bits, a_bits))
            .copied()
            .ok_or_else(|| {
                Error::config(
                    "hardware",
                    format!(
                        "lookup table {} has no entry for layer {layer} at w_bits={w_bits}, \
                         a_bits={a_bits}",
                        self.name
                    ),
                )
            })
    }

    /// Parses CSV text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<LookupTable> {
        let mut t = LookupTable::new(source);
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f[0] == "layer" {
                continue;
            }
            let bad = |why: String| Error::corrupt(source, format!("line {}: {why}", i + 1));
            if !(4..=5).contains(&f.len()) {
                return Err(bad(format!(
                    "expected `layer,w_bits,a_bits,latency_ms[,energy_mj]`, got {} fields",
                    f.len()
                )));
            }
            let bits = |s: &str, what: &str| {
                s.parse::<BitWidth>()
                    .ok()
                    .filter(|&b| (1..=32).contains(&b))
                    .ok_or_else(|| bad(format!("{what} {s:?} is not a bit-width in 1..=32")))
            };
            let number = |s: &str, what: &str| {
                s.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| bad(format!("{what} {s:?} is not a non-negative number")))
            };
            let (w, a) = (bits(f[1], "w_bits")?, bits(f[2], "a_bits")?);
            let latency = number(f[3], "latency_ms")?;
            let energy = match f.get(4) {
                Some(s) if !s.is_empty() => Some(number(s, "energy_mj")?),
                _ => None,
            };
            if f[0].is_empty() {
                return Err(bad("empty layer name".into()));
            }
            if t.entries.contains_key(&(f[0].to_string(), w, a)) {
                return Err(bad(format!("duplicate entry for {} at {w}/{a}", f[0])));
            }
            t.insert(f[0], w, a, latency, energy);
        }
        if t.is_empty() {
            return Err(Error::corrupt(source, "the lookup table has no entries"));
        }
        Ok(t)
    }

    /// Reads a CSV file.
    pub fn load(path: impl AsRef<Path>) -> Result<LookupTable> {
        crate::io::parse_file(path.as_ref(), "a lookup table", LookupTable::parse)
    }

    /// The table as CSV with a header row (numbers in Rust's shortest round-trip form, so
    /// [`LookupTable::parse`] reads back exactly the same values).
    pub fn to_csv(&self) -> String {
        let mut s = String::from(HEADER);
        s.push('\n');
        for ((layer, w, a), (lat, en)) in &self.entries {
            let en = en.map(|e| e.to_string()).unwrap_or_default();
            let _ = writeln!(s, "{layer},{w},{a},{lat},{en}");
        }
        s
    }
}
