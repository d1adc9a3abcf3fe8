//! zstd compression of request bodies (`Content-Encoding: zstd`, protocol.md 1.3).
//!
//! A zstd compression context holds about a megabyte of match tables, which `ZSTD_compress`
//! allocates and zeroes for every frame. Calls here instead reuse one context kept for the
//! process: the frames are byte-for-byte the same (same level, same parameters, one frame with
//! the content size), only the per-frame setup is gone. The context is taken with `try_lock`:
//! when another thread is compressing at that moment, this call uses a fresh context of its own
//! rather than wait, so concurrent calls never queue behind each other and at most one context
//! stays cached. Nothing here spawns a thread.

use std::sync::Mutex;

use crate::error::{Error, Result};

/// The zstd level the official SDK compresses request bodies with (python-zstandard's default).
pub const ZSTD_LEVEL: i32 = 3;

/// The cached context, created on first use.
static CONTEXT: Mutex<Option<zstd::bulk::Compressor<'static>>> = Mutex::new(None);

/// Compresses a request body as one zstd frame with the content size in its header, as the
/// official SDK does (`Content-Encoding: zstd`, level [`ZSTD_LEVEL`]).
///
/// This is CPU work on the calling thread (the core spawns nothing). The chunks of one call are
/// independent bodies, so an adapter may compress several on parallel workers.
///
/// ```
/// use tinker_core::proto::{compress_body, ZSTD_LEVEL};
/// let body = vec![7u8; 10_000];
/// let frame = compress_body(&body, ZSTD_LEVEL).unwrap();
/// assert!(frame.len() < 100);
/// assert_eq!(zstd::decode_all(frame.as_slice()).unwrap(), body);
/// ```
pub fn compress_body(body: &[u8], level: i32) -> Result<Vec<u8>> {
    let failed =
        |e: std::io::Error| Error::invalid("request body", format!("zstd compression failed: {e}"));
    match CONTEXT.try_lock() {
        Ok(mut cached) => {
            let context = match cached.as_mut() {
                Some(context) => {
                    context.set_compression_level(level).map_err(failed)?;
                    context
                }
                None => cached.insert(zstd::bulk::Compressor::new(level).map_err(failed)?),
            };
            context.compress(body).map_err(failed)
        }
        // Busy on another thread, or poisoned by a panic there: a context of our own.
        Err(_) => zstd::bulk::compress(body, level).map_err(failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames from the cached context are the frames a fresh context writes, whatever was
    /// compressed before and at whatever level.
    #[test]
    fn the_reused_context_writes_the_same_frames_as_a_fresh_one() {
        let bodies: Vec<Vec<u8>> = (0..4u32)
            .map(|i| {
                (0..(50_000 * (i + 1)))
                    .map(|j| (j.wrapping_mul(2_654_435_761) >> (i + 20)) as u8)
                    .collect()
            })
            .collect();
        for level in [ZSTD_LEVEL, 1, ZSTD_LEVEL] {
            for body in &bodies {
                let frame = compress_body(body, level).unwrap();
                assert_eq!(
                    frame,
                    zstd::bulk::compress(body, level).unwrap(),
                    "level {level}"
                );
                assert_eq!(zstd::decode_all(frame.as_slice()).unwrap(), *body);
            }
        }
    }
}
