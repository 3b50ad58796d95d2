//! rsync-style delta transfer for big modified files (through `fast_rsync`): the receiving side
//! sends a signature of its current file, the sending side answers with a delta against it, and
//! the receiving side rebuilds the new content from its own file and the delta. The result is
//! always verified against the BLAKE3 digest the scan saw (fast_rsync's block hash is MD4), so a
//! bad delta can only cost a retry, never a wrong file.
//!
//! `fast_rsync` works on whole buffers: both files are held in memory while a delta is made or
//! applied, which is why only files up to [`DELTA_MAX`] take this path.

use std::io;

use fast_rsync::{Signature, SignatureOptions};
use ferry_core::RelPath;

/// Files smaller than this are sent whole (a delta saves too little to be worth a round trip).
pub const DELTA_MIN: u64 = 1 << 20;
/// Files larger than this are sent whole (both versions would be held in memory).
pub const DELTA_MAX: u64 = 512 << 20;
/// Signatures hold about this many blocks whatever the file's size: a 256 MiB file has 64 KiB
/// blocks and a 48 KiB signature, and a one-byte edit costs one block.
const BLOCKS: u64 = 4096;
const MIN_BLOCK: u64 = 4096;
/// Bytes of MD4 kept per block (collisions are caught by the BLAKE3 check of the result).
const HASH_BYTES: u32 = 8;

/// Reads a base file on the receiving side (confined to its root) for a delta.
pub type BaseOpener = std::sync::Arc<dyn Fn(&RelPath) -> io::Result<Vec<u8>> + Send + Sync>;

/// Whether a file of `size` bytes is sent as a delta when the receiver has an older version.
pub fn worth_it(size: u64) -> bool {
    (DELTA_MIN..=DELTA_MAX).contains(&size)
}

/// The signature of `base` (the receiver's current content).
pub fn signature(base: &[u8]) -> Vec<u8> {
    let block = (base.len() as u64 / BLOCKS)
        .next_power_of_two()
        .clamp(MIN_BLOCK, 1 << 24);
    Signature::calculate(
        base,
        SignatureOptions {
            block_size: block as u32,
            crypto_hash_size: HASH_BYTES,
        },
    )
    .into_serialized()
}

/// A delta turning the signed base into `data`, or `None` if the signature is unusable or the
/// delta would not be much smaller than `data` itself.
pub fn encode(signature: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    // The signature may come from a peer: only the shapes `signature` makes (a zero block
    // size would make fast_rsync loop forever).
    let be = |at: usize| {
        signature
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
    };
    let (block, hash) = (be(4)?, be(8)?);
    if !(MIN_BLOCK..=1 << 24).contains(&u64::from(block)) || !(1..=16).contains(&hash) {
        return None;
    }
    let sig = Signature::deserialize(signature.to_vec()).ok()?;
    let mut out = Vec::new();
    fast_rsync::diff(&sig.index(), data, &mut out).ok()?;
    (out.len() < data.len() / 2).then_some(out)
}

/// Rebuilds content of exactly `size` bytes from `base` and `delta`.
pub fn apply(base: &[u8], delta: &[u8], size: u64) -> io::Result<Vec<u8>> {
    if size > DELTA_MAX {
        return Err(io::Error::other(format!(
            "a delta for {size} bytes, over the {DELTA_MAX}-byte limit"
        )));
    }
    let limit = usize::try_from(size).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(limit);
    fast_rsync::apply_limited(base, delta, &mut out, limit)
        .map_err(|e| io::Error::other(format!("bad delta: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_edit_costs_one_block() {
        let base: Vec<u8> = (0..8u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut new = base.clone();
        new[5_000_000] ^= 0xff;
        let sig = signature(&base);
        assert!(sig.len() < 64 * 1024, "signature {} bytes", sig.len());
        let d = encode(&sig, &new).expect("a delta");
        assert!(d.len() < 16 * 1024, "delta {} bytes", d.len());
        assert_eq!(apply(&base, &d, new.len() as u64).expect("apply"), new);
        // A lying size is caught.
        assert!(apply(&base, &d, 100).is_err());
        // Garbage signatures and deltas are refused, not trusted.
        assert!(encode(b"junk", &new).is_none());
        let mut zero = sig.clone();
        zero[4..8].copy_from_slice(&0u32.to_be_bytes());
        assert!(
            encode(&zero, &new).is_none(),
            "a zero block size is refused"
        );
        assert!(apply(&base, b"junk", new.len() as u64).is_err());
    }
}
