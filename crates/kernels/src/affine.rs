//! The one per-tensor quantization parameter type: `real = scale · (code − zero_point)`
//! (doc/quantization.md, eq. 1). The quantizer's per-channel `QParams` (octet-graph) and every
//! int8 op and kernel use it for a tensor's one scale and zero point.

use crate::i8::elementwise::round_half_even;
use crate::i8::OutType;

/// Per-tensor affine parameters of 8-bit codes (`signed`: s8 codes stored two's complement,
/// else u8), or of 16-bit unsigned codes where an op says so.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    pub scale: f32,
    pub zero_point: i32,
    pub signed: bool,
}

impl Affine {
    /// The code a stored byte holds. Branch-free: s8 is `(b ^ 0x80) − 128`.
    #[inline(always)]
    pub fn code(self, b: u8) -> i32 {
        let flip = (self.signed as u8) << 7;
        (b ^ flip) as i32 - flip as i32
    }
    #[inline(always)]
    pub fn dequantize(self, b: u8) -> f32 {
        (self.code(b) - self.zero_point) as f32 * self.scale
    }
    /// Eq. 5, returning the stored byte.
    #[inline(always)]
    pub fn quantize(self, x: f32) -> u8 {
        let lo = -((self.signed as i32) << 7);
        (round_half_even(x / self.scale) + self.zero_point).clamp(lo, lo + 255) as u8
    }
    /// The output type a GEMM epilogue writes for these parameters.
    pub fn out_type(self) -> OutType {
        if self.signed {
            OutType::S8 { zero_point: self.zero_point }
        } else {
            OutType::U8 { zero_point: self.zero_point }
        }
    }
}
