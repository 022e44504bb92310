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
    /// The zero point of these codes read as u8: s8 codes shift by +128 (eq. 9), with their
    /// stored bytes XORed with [`Affine::flip_to_u8`].
    pub fn u8_zero_point(self) -> i32 {
        self.zero_point + if self.signed { 128 } else { 0 }
    }
    /// The byte XORed into stored codes to read them as u8 (0x80 for s8 codes, else 0).
    pub fn flip_to_u8(self) -> u8 {
        if self.signed {
            0x80
        } else {
            0
        }
    }
    /// The zero point of these codes read as s8: u8 codes shift by −128 (eq. 9), with their
    /// stored bytes XORed with [`Affine::flip_to_s8`].
    pub fn s8_zero_point(self) -> i32 {
        self.zero_point - if self.signed { 0 } else { 128 }
    }
    /// The byte XORed into stored codes to read them as s8 (0x80 for u8 codes, else 0).
    pub fn flip_to_s8(self) -> u8 {
        0x80 ^ self.flip_to_u8()
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
