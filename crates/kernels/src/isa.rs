//! Instruction-set tiers for the int8 kernels, detected at run time; `OCTET_ISA` forces a
//! lower tier so that every tier can be tested on a machine that has the top one.

use std::sync::OnceLock;

/// An int8 kernel tier, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust: the reference every other tier must equal bit for bit.
    Scalar,
    /// AVX2: u8 and s8 widened to i16, `vpmaddwd` into i32 (no i16 saturation).
    Avx2,
    /// AVX-512 with VNNI: `vpdpbusd`, 4 u8×s8 products into each i32 lane.
    Avx512Vnni,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }

    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == s)
    }

    /// Does this CPU run the tier?
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The best tier this CPU runs.
    pub fn best() -> Isa {
        Isa::ALL.into_iter().rev().find(|i| i.available()).unwrap_or(Isa::Scalar)
    }

    /// The tier in use: `OCTET_ISA` when set (an error if this CPU lacks it), else the best.
    pub fn selected() -> Result<Isa, String> {
        static SELECTED: OnceLock<Result<Isa, String>> = OnceLock::new();
        SELECTED
            .get_or_init(|| match std::env::var("OCTET_ISA") {
                Err(_) => Ok(Isa::best()),
                Ok(name) => {
                    let names: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
                    let isa = Isa::from_name(&name).ok_or_else(|| {
                        let amx = if name == "amx" { " (AMX kernels are not built: no machine to test them on)" } else { "" };
                        format!("OCTET_ISA={name} is not a tier octet has{amx}; choose one of {}", names.join(", "))
                    })?;
                    if !isa.available() {
                        return Err(format!("OCTET_ISA={name}: this CPU does not support it (best available: {})", Isa::best().name()));
                    }
                    Ok(isa)
                }
            })
            .clone()
    }
}

/// A remark on the tier this CPU gets, when it is not the obvious one.
pub fn tier_note() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    if Isa::best() == Isa::Avx2 && std::is_x86_feature_detected!("avx512f") {
        return Some("this CPU has AVX-512 without VNNI: int8 products run on the AVX2 tier (vpmaddwd, or vpmaddubsw for 7-bit weights)");
    }
    None
}

/// The widest vectors the auto-vectorised kernels (`simd_dispatch!`) may use: the CPU's, capped
/// by `OCTET_ISA` (`scalar` → baseline, `avx2` → AVX2 + FMA), so that a forced tier runs every
/// int8 and elementwise kernel as a CPU of that tier would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum VectorLevel {
    Baseline,
    Avx2,
    Avx512,
}

pub(crate) fn vector_level() -> VectorLevel {
    static LEVEL: OnceLock<VectorLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        let cpu = if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
            VectorLevel::Avx512
        } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            VectorLevel::Avx2
        } else {
            VectorLevel::Baseline
        };
        #[cfg(not(target_arch = "x86_64"))]
        let cpu = VectorLevel::Baseline;
        let cap = match Isa::selected() {
            Ok(Isa::Scalar) => VectorLevel::Baseline,
            Ok(Isa::Avx2) => VectorLevel::Avx2,
            _ => VectorLevel::Avx512,
        };
        cpu.min(cap)
    })
}
