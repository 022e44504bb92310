//! Byte-level mutations in the manner of AFL and libFuzzer: bit flips, interesting values,
//! arithmetic, block deletion, duplication and insertion, truncation, and splicing with another
//! corpus entry.

/// xorshift64*: fast, deterministic for a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const INTERESTING: [i64; 16] = [0, 1, -1, 2, 16, 64, 127, 128, 255, 256, 32767, 65535, i32::MAX as i64, i32::MIN as i64, i64::MAX, 1 << 40];

/// One to eight stacked mutations of `parent`, sometimes spliced with `other`.
pub fn mutate(parent: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = parent.to_vec();
    let rounds = 1 + rng.below(8);
    for _ in 0..rounds {
        if v.is_empty() {
            v.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(v.len());
        match rng.below(10) {
            0 => v[at] ^= 1 << rng.below(8),
            1 => v[at] = INTERESTING[rng.below(INTERESTING.len())] as u8,
            2 => v[at] = v[at].wrapping_add((rng.below(35) as u8).wrapping_sub(17)),
            3 => {
                let width = [2, 4, 8][rng.below(3)];
                let value = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                for (k, b) in value.iter().take(width).enumerate() {
                    if at + k < v.len() {
                        v[at + k] = *b;
                    }
                }
            }
            4 => {
                let len = 1 + rng.below((v.len() - at).min(64));
                v.drain(at..at + len);
            }
            5 => {
                let len = 1 + rng.below((v.len() - at).min(64));
                let block: Vec<u8> = v[at..at + len].to_vec();
                let to = rng.below(v.len() + 1);
                v.splice(to..to, block);
            }
            6 => {
                let len = 1 + rng.below(16);
                let to = rng.below(v.len() + 1);
                let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                v.splice(to..to, bytes);
            }
            7 => v.truncate(at),
            8 if !other.is_empty() => {
                let from = rng.below(other.len());
                let len = 1 + rng.below((other.len() - from).min(256));
                let end = (at + len).min(v.len());
                v.splice(at..end, other[from..from + len].iter().copied());
            }
            _ => {
                // A protobuf varint or length written as a large number.
                let value = [0x80u8, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
                let len = 1 + rng.below(value.len());
                let end = (at + len).min(v.len());
                v.splice(at..end, value[value.len() - len..].iter().copied());
            }
        }
    }
    v
}
