//! Bulk conversion between numeric slices and little-endian bytes, plus protobuf varints.
//!
//! On little-endian hosts the numeric arrays of the wire format are the in-memory layout, so a
//! slice is one `memcpy` (via `bytemuck`, which also copes with unaligned byte input). Big-endian
//! hosts take the portable per-element path. Callers check that byte lengths are multiples of the
//! element size before calling the readers.

/// Number types that travel as little-endian arrays.
pub(crate) trait LeScalar: bytemuck::Pod {
    /// Size in bytes.
    const SIZE: usize = std::mem::size_of::<Self>();
    /// Appends `self` as little-endian bytes (portable path).
    fn put_le(self, out: &mut Vec<u8>);
    /// Reads one value from exactly `SIZE` little-endian bytes (portable path).
    fn get_le(bytes: &[u8]) -> Self;
}

macro_rules! le_scalar {
    ($($t:ty),*) => {$(
        impl LeScalar for $t {
            #[inline]
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn get_le(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
        }
    )*};
}
le_scalar!(i32, i64, f32, u16);

/// Appends `values` as a little-endian array.
#[inline]
pub(crate) fn put_slice<T: LeScalar>(out: &mut Vec<u8>, values: &[T]) {
    if cfg!(target_endian = "little") {
        out.extend_from_slice(bytemuck::cast_slice(values));
    } else {
        for &v in values {
            v.put_le(out);
        }
    }
}

/// Reads a little-endian array; `bytes.len()` must be a multiple of `T::SIZE`.
///
/// On a little-endian host this is a `memcpy`: straight from the bytes when they happen to be
/// aligned for `T`, else into a zeroed vector viewed as bytes. (The element loop it replaced,
/// `chunks_exact(..).map(from_le_bytes).collect()`, was not vectorised and took a quarter of a
/// 4096 × 4096 ForwardBackwardOutput decode in a perf profile; zeroing a block the copy then
/// overwrites costs far less.) Big-endian hosts take the portable loop.
#[inline]
pub(crate) fn read_vec<T: LeScalar>(bytes: &[u8]) -> Vec<T> {
    debug_assert_eq!(bytes.len() % T::SIZE, 0);
    if cfg!(target_endian = "little") {
        if let Ok(aligned) = bytemuck::try_cast_slice::<u8, T>(bytes) {
            return aligned.to_vec();
        }
        let mut out = vec![T::zeroed(); bytes.len() / T::SIZE];
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(bytes);
        return out;
    }
    bytes.chunks_exact(T::SIZE).map(T::get_le).collect()
}

/// Reads a little-endian int32 array widened to int64.
pub(crate) fn read_i32_as_i64(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(4)
        .map(|c| i64::from(i32::get_le(c)))
        .collect()
}

/// Reads a little-endian bfloat16 array widened to float32 (bf16 is a float32's upper 16 bits).
pub(crate) fn read_bf16_as_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|c| f32::from_bits(u32::from(u16::get_le(c)) << 16))
        .collect()
}

/// Bytes a LEB128 varint of `v` takes (1..=10).
#[inline]
pub(crate) fn varint_len(v: u64) -> usize {
    // One byte per started group of 7 significant bits.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `v` as a LEB128 varint.
#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_leb128_and_their_length_is_predicted() {
        let table: [(u64, &[u8]); 5] = [
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (v, bytes) in table {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            assert_eq!(varint_len(v), bytes.len(), "{v}");
        }
        assert_eq!(varint_len(16_383), 2);
        assert_eq!(varint_len(16_384), 3);
    }

    #[test]
    fn arrays_round_trip_through_little_endian_bytes_even_unaligned() {
        let mut out = vec![0u8]; // force the payload off 4/8-byte alignment
        put_slice(&mut out, &[1.5f32, -2.0]);
        assert_eq!(&out[1..], &[0, 0, 0xc0, 0x3f, 0, 0, 0, 0xc0]);
        assert_eq!(read_vec::<f32>(&out[1..]), vec![1.5, -2.0]);
        assert_eq!(read_i32_as_i64(&[0xff, 0xff, 0xff, 0xff]), vec![-1]);
        // bf16 0x3fc0 is 1.5; 0xbf80 is -1.0.
        assert_eq!(read_bf16_as_f32(&[0xc0, 0x3f, 0x80, 0xbf]), vec![1.5, -1.0]);
    }
}
