//! Hardware specifications of the analytic accelerator simulators, loaded from TOML (HAQ, Wang
//! et al. CVPR 2019, docs/algorithms.md §4.8: BitFusion, Sharma et al. ISCA 2018; BISMO, Umuroglu et al.
//! FPL 2018). The built-in specs are the files of the repository's `hardware/` folder, compiled
//! in; `docs/cost-models.md` gives the formulas and where each default comes from.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The compute array of an accelerator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ArraySpec {
    /// BitFusion: `rows × cols` Fusion Units of `bricks_per_unit` 2-bit BitBricks that fuse
    /// spatially to match each layer's (padded) bit-widths.
    Bitfusion {
        /// Fusion Unit rows.
        rows: usize,
        /// Fusion Unit columns.
        cols: usize,
        /// 2-bit BitBricks per Fusion Unit (16 make one 8×8-bit multiplier).
        bricks_per_unit: usize,
    },
    /// BISMO: `dm × dn` dot-product units, each `dk` bits wide, computing a `w`-bit by
    /// `a`-bit product as `w·a` binary matrix products (bit-serial).
    Bismo {
        /// Rows of the dot-product array (output channels per tile).
        dm: usize,
        /// Columns of the dot-product array (output pixels per tile).
        dn: usize,
        /// Bits per dot product (reduction elements per cycle).
        dk: usize,
    },
}

/// An accelerator: its compute array, clock, memory roofline and energy constants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareSpec {
    /// Name shown in tables (`bitfusion`, `bismo`).
    pub name: String,
    /// Clock in MHz.
    pub clock_mhz: f64,
    /// Images per run: weights are moved once per batch, activations once per image.
    #[serde(default = "one")]
    pub batch: usize,
    /// Off-chip bandwidth in GB/s (10^9 bytes per second).
    pub bandwidth_gb_s: f64,
    /// Bits of each output activation written back to memory.
    #[serde(default = "eight")]
    pub output_bits: u32,
    /// Energy per bit-product of a multiply-accumulate, in pJ.
    pub pj_per_mac_bit: f64,
    /// Energy per byte moved off-chip, in pJ.
    pub pj_per_byte: f64,
    /// The compute array.
    pub array: ArraySpec,
}

fn one() -> usize {
    1
}

fn eight() -> u32 {
    8
}

/// The built-in spec names and their TOML text (the files of `hardware/`).
const BUILTIN: [(&str, &str); 3] = [
    (
        "bitfusion",
        include_str!("../../../../hardware/bitfusion.toml"),
    ),
    ("bismo", include_str!("../../../../hardware/bismo.toml")),
    (
        "bismo-cloud",
        include_str!("../../../../hardware/bismo-cloud.toml"),
    ),
];

impl HardwareSpec {
    /// Names of the built-in specs.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// A built-in spec (`bitfusion`, `bismo`, `bismo-cloud`), or `None`.
    pub fn builtin(name: &str) -> Option<HardwareSpec> {
        BUILTIN.iter().find(|(n, _)| *n == name).map(|(n, text)| {
            HardwareSpec::parse(text, n).expect("the bundled hardware specs should be valid")
        })
    }

    /// Parses TOML text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<HardwareSpec> {
        let spec: HardwareSpec = toml::from_str(text)
            .map_err(|e| Error::corrupt(source, format!("not a valid hardware spec: {e}")))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads a TOML spec file.
    pub fn load(path: impl AsRef<Path>) -> Result<HardwareSpec> {
        crate::io::parse_file(path.as_ref(), "a hardware spec", HardwareSpec::parse)
    }

    /// The spec as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a hardware spec should serialise to TOML")
    }

    /// Checks that every rate, size and energy is positive and finite.
    pub fn validate(&self) -> Result<()> {
        // Rates must be positive, energies may be 0.
        let fields = [
            ("clock_mhz", self.clock_mhz, true),
            ("bandwidth_gb_s", self.bandwidth_gb_s, true),
            ("pj_per_mac_bit", self.pj_per_mac_bit, false),
            ("pj_per_byte", self.pj_per_byte, false),
        ];
        for (field, v, positive) in fields {
            let ok = v.is_finite() && if positive { v > 0.0 } else { v >= 0.0 };
            if !ok {
                let what = if positive { "positive" } else { "non-negative" };
                return Err(Error::config(
                    format!("hardware.{field}"),
                    format!("must be a {what} number, got {v}"),
                ));
            }
        }
        let counts: Vec<(&str, usize)> = match &self.array {
            ArraySpec::Bitfusion {
                rows,
                cols,
                bricks_per_unit,
            } => vec![
                ("rows", *rows),
                ("cols", *cols),
                ("bricks_per_unit", *bricks_per_unit),
            ],
            ArraySpec::Bismo { dm, dn, dk } => vec![("dm", *dm), ("dn", *dn), ("dk", *dk)],
        };
        for (field, v) in counts.into_iter().chain([("batch", self.batch)]) {
            if v == 0 {
                return Err(Error::config(
                    format!("hardware.{field}"),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_round_trip() {
        assert_eq!(
            HardwareSpec::builtin_names(),
            ["bitfusion", "bismo", "bismo-cloud"]
        );
        for name in HardwareSpec::builtin_names() {
            let spec = HardwareSpec::builtin(name).unwrap();
            assert_eq!(spec.name, name);
            let back = HardwareSpec::parse(&spec.to_toml(), "rt").unwrap();
            assert_eq!(back, spec);
        }
        let bf = HardwareSpec::builtin("bitfusion").unwrap();
        assert_eq!(
            bf.array,
            ArraySpec::Bitfusion {
                rows: 16,
                cols: 32,
                bricks_per_unit: 16
            }
        );
        assert!(HardwareSpec::builtin("tpu").is_none());
    }

    #[test]
    fn bad_specs_are_input_errors() {
        let good = HardwareSpec::builtin("bismo").unwrap().to_toml();
        let typo = good.replace("clock_mhz", "clock_mz");
        let err = HardwareSpec::parse(&typo, "x.toml").unwrap_err();
        assert!(
            err.is_input_error() && err.to_string().contains("x.toml"),
            "{err}"
        );
        let zero = good.replace("dk = 256", "dk = 0");
        let err = HardwareSpec::parse(&zero, "x.toml").unwrap_err();
        assert!(err.to_string().contains("dk"), "{err}");
        let neg = good.replace("bandwidth_gb_s = 6.4", "bandwidth_gb_s = -1.0");
        assert!(HardwareSpec::parse(&neg, "x.toml").is_err());
        let kind = good.replace("kind = \"bismo\"", "kind = \"gpu\"");
        assert!(HardwareSpec::parse(&kind, "x.toml").is_err());
    }
}
