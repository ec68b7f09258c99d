//! Per-choice cost tables as CSV (HAQ's per-layer `T[l][b_w][b_a]` tables, docs/algorithms.md
//! §4.8 and §7.5; HAWQ-V3's hardware tables, §2.7): one row per layer and bit pair, `#`
//! comments, and either the positional form `layer,w_bits,a_bits,latency_ms[,energy_mj]` or a
//! header row naming the columns, of which any of `latency_ms`, `energy_mj`, `size_bits` and
//! `bops` may be given (every cell of a named column must hold a number). Only the choices a
//! search allows need rows; a missing entry or column is an input error naming the layer and
//! bits. [`LookupTable::from_model`] and [`LookupTable::to_csv`] write a table from any model,
//! so a simulator's numbers can be edited by hand and read back unchanged. [`read_rows`] is the
//! one CSV reader, shared with the problem tables of `mpq search --table`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::plan::BitWidth;
use crate::{Error, Result};

/// The priced costs of one `(layer, w_bits, a_bits)`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LookupEntry {
    /// Latency in ms.
    pub latency_ms: Option<f64>,
    /// Energy in mJ.
    pub energy_mj: Option<f64>,
    /// Weight storage in bits (scales included), replacing `n·w` plus scales.
    pub size_bits: Option<f64>,
    /// Bit operations per sample, replacing `MAC·w·a`.
    pub bops: Option<f64>,
}

/// Costs per `(layer, w_bits, a_bits)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LookupTable {
    name: String,
    entries: BTreeMap<(String, BitWidth, BitWidth), LookupEntry>,
}

/// Reads one cost of an entry.
type Getter = fn(&LookupEntry) -> Option<f64>;

/// The cost columns of a lookup table, in file order.
pub const COST_COLUMNS: [&str; 4] = ["latency_ms", "energy_mj", "size_bits", "bops"];

/// One data row of a choice CSV: the layer, the bits and the named columns' values (`None`
/// only for the optional energy of the positional form).
#[derive(Debug, Clone, PartialEq)]
pub struct CsvRow {
    /// 1-based line number.
    pub line: usize,
    /// Layer name.
    pub layer: String,
    /// Weight bits.
    pub w_bits: BitWidth,
    /// Activation bits.
    pub a_bits: BitWidth,
    /// One value per column of [`CsvRows::columns`].
    pub values: Vec<Option<f64>>,
}

/// The rows of a choice CSV and the columns they carry.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvRows {
    /// Column names after `layer,w_bits,a_bits`.
    pub columns: Vec<String>,
    /// Data rows in file order.
    pub rows: Vec<CsvRow>,
}

impl CsvRows {
    /// The position of `name` among the columns.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// Reads a choice CSV: `layer,w_bits,a_bits` then the columns of the header row, each one of
/// `allowed` (without a header: the positional `latency_ms[,energy_mj]`). Every value must be a
/// finite non-negative number (`signed` columns may be negative); a duplicate
/// `(layer, w_bits, a_bits)` row, an empty cell, NaN, an unknown column or no rows is an input
/// error naming `source` and the line.
pub fn read_rows(text: &str, source: &str, allowed: &[&str], signed: &[&str]) -> Result<CsvRows> {
    let mut header: Option<Vec<String>> = None;
    let mut rows: Vec<CsvRow> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: String| Error::corrupt(source, format!("line {}: {why}", i + 1));
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f[0] == "layer" {
            if header.is_some() || !rows.is_empty() {
                return Err(bad("a second header row".into()));
            }
            if f.get(1..3) != Some(&["w_bits", "a_bits"][..]) {
                return Err(bad(
                    "the header must start with `layer,w_bits,a_bits`".into()
                ));
            }
            let cols: Vec<String> = f[3..].iter().map(|s| s.to_string()).collect();
            for c in &cols {
                if !allowed.contains(&c.as_str()) {
                    return Err(bad(format!(
                        "unknown column {c:?} (expected any of {})",
                        allowed.join(", ")
                    )));
                }
                if cols.iter().filter(|d| *d == c).count() > 1 {
                    return Err(bad(format!("column {c} appears twice")));
                }
            }
            header = Some(cols);
            continue;
        }
        let (cols, optional_last) = match &header {
            Some(h) => (h.clone(), false),
            None => {
                if !(4..=5).contains(&f.len()) {
                    return Err(bad(format!(
                        "expected `layer,w_bits,a_bits,latency_ms[,energy_mj]` (or a header row \
                         naming the columns), got {} fields",
                        f.len()
                    )));
                }
                (
                    vec!["latency_ms".to_string(), "energy_mj".to_string()],
                    true,
                )
            }
        };
        if header.is_some() && f.len() != 3 + cols.len() {
            return Err(bad(format!(
                "expected {} fields as the header names, got {}",
                3 + cols.len(),
                f.len()
            )));
        }
        if f[0].is_empty() {
            return Err(bad("empty layer name".into()));
        }
        let bits = |s: &str, what: &str| {
            s.parse::<BitWidth>()
                .ok()
                .filter(|&b| (1..=32).contains(&b))
                .ok_or_else(|| bad(format!("{what} {s:?} is not a bit-width in 1..=32")))
        };
        let (w, a) = (bits(f[1], "w_bits")?, bits(f[2], "a_bits")?);
        let mut values = Vec::with_capacity(cols.len());
        for (k, c) in cols.iter().enumerate() {
            let cell = f.get(3 + k).copied().unwrap_or("");
            if cell.is_empty() {
                if optional_last && k == 1 {
                    values.push(None);
                    continue;
                }
                return Err(bad(format!("{c} is missing for {} at {w}/{a}", f[0])));
            }
            let ok = |v: &f64| v.is_finite() && (*v >= 0.0 || signed.contains(&c.as_str()));
            let v = cell.parse::<f64>().ok().filter(ok).ok_or_else(|| {
                let kind = if signed.contains(&c.as_str()) {
                    "a finite number"
                } else {
                    "a non-negative number"
                };
                bad(format!("{c} {cell:?} is not {kind}"))
            })?;
            values.push(Some(v));
        }
        if !seen.insert((f[0].to_string(), w, a)) {
            return Err(bad(format!("duplicate entry for {} at {w}/{a}", f[0])));
        }
        rows.push(CsvRow {
            line: i + 1,
            layer: f[0].to_string(),
            w_bits: w,
            a_bits: a,
            values,
        });
    }
    if rows.is_empty() {
        return Err(Error::corrupt(source, "the table has no entries"));
    }
    let columns = header.unwrap_or_else(|| vec!["latency_ms".into(), "energy_mj".into()]);
    Ok(CsvRows { columns, rows })
}

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
        !self.entries.is_empty() && self.entries.values().all(|e| e.energy_mj.is_some())
    }

    /// Whether every entry has a latency.
    pub fn has_latency(&self) -> bool {
        !self.entries.is_empty() && self.entries.values().all(|e| e.latency_ms.is_some())
    }

    /// Whether every entry prices the size.
    pub fn prices_size(&self) -> bool {
        !self.entries.is_empty() && self.entries.values().all(|e| e.size_bits.is_some())
    }

    /// Whether every entry prices the BitOps.
    pub fn prices_bops(&self) -> bool {
        !self.entries.is_empty() && self.entries.values().all(|e| e.bops.is_some())
    }

    /// Adds or replaces an entry with a latency and an optional energy.
    pub fn insert(
        &mut self,
        layer: &str,
        w_bits: BitWidth,
        a_bits: BitWidth,
        latency_ms: f64,
        energy_mj: Option<f64>,
    ) {
        let e = LookupEntry {
            latency_ms: Some(latency_ms),
            energy_mj,
            ..LookupEntry::default()
        };
        self.insert_entry(layer, w_bits, a_bits, e);
    }

    /// Adds or replaces an entry.
    pub fn insert_entry(
        &mut self,
        layer: &str,
        w_bits: BitWidth,
        a_bits: BitWidth,
        e: LookupEntry,
    ) {
        self.entries.insert((layer.to_string(), w_bits, a_bits), e);
    }

    /// Every cost of `layer` at `w_bits × a_bits`; a missing row is an input error naming it.
    pub fn entry(&self, layer: &str, w_bits: BitWidth, a_bits: BitWidth) -> Result<LookupEntry> {
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

    /// `(latency_ms, energy_mj)` of `layer` at `w_bits × a_bits`; a missing row or latency is
    /// an input error naming it.
    pub fn get(
        &self,
        layer: &str,
        w_bits: BitWidth,
        a_bits: BitWidth,
    ) -> Result<(f64, Option<f64>)> {
        let e = self.entry(layer, w_bits, a_bits)?;
        let latency = e.latency_ms.ok_or_else(|| {
            Error::config(
                "hardware",
                format!(
                    "lookup table {} has no latency_ms column (layer {layer} at \
                     w_bits={w_bits}, a_bits={a_bits})",
                    self.name
                ),
            )
        })?;
        Ok((latency, e.energy_mj))
    }

    /// The table of rows read by [`read_rows`] with [`COST_COLUMNS`].
    pub fn from_rows(rows: &CsvRows, name: &str) -> LookupTable {
        let mut t = LookupTable::new(name);
        let col = |r: &CsvRow, c: &str| rows.column(c).and_then(|k| r.values[k]);
        for r in &rows.rows {
            let e = LookupEntry {
                latency_ms: col(r, "latency_ms"),
                energy_mj: col(r, "energy_mj"),
                size_bits: col(r, "size_bits"),
                bops: col(r, "bops"),
            };
            t.insert_entry(&r.layer, r.w_bits, r.a_bits, e);
        }
        t
    }

    /// Parses CSV text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<LookupTable> {
        Ok(LookupTable::from_rows(
            &read_rows(text, source, &COST_COLUMNS, &[])?,
            source,
        ))
    }

    /// Reads a CSV file.
    pub fn load(path: impl AsRef<Path>) -> Result<LookupTable> {
        crate::io::parse_file(path.as_ref(), "a lookup table", LookupTable::parse)
    }

    /// The table as CSV with a header row naming the columns every entry has (numbers in
    /// Rust's shortest round-trip form, so [`LookupTable::parse`] reads back exactly the same
    /// values).
    pub fn to_csv(&self) -> String {
        let all = |f: Getter| self.entries.values().all(|e| f(e).is_some());
        let getters: [(&str, Getter); 4] = [
            ("latency_ms", |e| e.latency_ms),
            ("energy_mj", |e| e.energy_mj),
            ("size_bits", |e| e.size_bits),
            ("bops", |e| e.bops),
        ];
        let cols: Vec<_> = getters.iter().filter(|(_, f)| all(*f)).collect();
        let mut s = String::from("layer,w_bits,a_bits");
        for (n, _) in &cols {
            s.push(',');
            s.push_str(n);
        }
        s.push('\n');
        for ((layer, w, a), e) in &self.entries {
            let _ = write!(s, "{layer},{w},{a}");
            for (_, f) in &cols {
                let _ = write!(s, ",{}", f(e).unwrap_or_default());
            }
            s.push('\n');
        }
        s
    }
}
