//! The fuzz checks: one module per target, each `check(data)` panicking on a finding. Used by
//! the libFuzzer targets (fuzz/fuzz_targets/) and replayed on every saved finding by
//! core/tests/fuzz_regressions.rs.
#![allow(dead_code)]

pub mod call_machines;
pub mod json_responses;
pub mod proto_decode;
pub mod response_classification;
pub mod sse_decode;
pub mod tinker_path;

/// The fuzz input read front to back; once it is used up every read gives zeros (or nothing).
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    /// The next byte, `None` once the input is used up.
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    /// The next byte, 0 once the input is used up.
    pub fn b(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }
    /// A probability in `0..=max` from the next byte.
    pub fn probability(&mut self, max: f64) -> f64 {
        f64::from(self.b()) / 255.0 * max
    }
    /// The next eight bytes, big-endian.
    pub fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| (acc << 8) | u64::from(self.b()))
    }
    /// The next `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}
