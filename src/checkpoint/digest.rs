//! The tensor digest of a checkpoint: SHA-256 over every tensor of the weights file, in name order, each
//! as (name length, name, dtype, rank, dims, little-endian f32 bytes). The store writes it into the
//! state file under [`DIGEST_KEY`] (`sha256:<64 hex digits>`) when it saves, and every load compares it
//! with the tensors it read: a truncated file already fails to parse, a flipped bit or a weights file
//! from another checkpoint fails here. The state file is written after the weights, so a state with a
//! digest always describes a weights file that was complete when it was written.
//!
//! Checkpoints written before digests existed have no key: they load with [`DigestCheck::Absent`] and
//! the caller says so (one notice), so existing runs keep working.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::safetensors_io::TensorRecord;
use crate::error::{Error, Result};

/// The state-file key holding the digest.
pub const DIGEST_KEY: &str = "tensors_sha256";

/// What a load found out about a checkpoint's tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestCheck {
    /// The state's digest matches the tensors.
    Verified,
    /// The state has no digest (an older checkpoint): loaded unverified.
    Absent,
}

/// `sha256:<hex>` of `tensors` (order-independent: hashed in name order).
pub fn tensor_digest(tensors: &[TensorRecord]) -> String {
    let mut sorted: Vec<&TensorRecord> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = Sha256::new();
    for t in sorted {
        h.update((t.name.len() as u64).to_le_bytes());
        h.update(t.name.as_bytes());
        h.update(b"F32");
        h.update((t.shape.len() as u64).to_le_bytes());
        for &d in &t.shape {
            h.update((d as u64).to_le_bytes());
        }
        if cfg!(target_endian = "little") {
            h.update(bytemuck::cast_slice::<f32, u8>(&t.data));
        } else {
            for v in &t.data {
                h.update(v.to_le_bytes());
            }
        }
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Compares the digest in `state` (if any) with `tensors` read from `weights`. A mismatch is an input
/// error naming the weights file and both digests.
pub fn check(weights: &Path, tensors: &[TensorRecord], state: &serde_json::Value) -> Result<DigestCheck> {
    let Some(stored) = state.get(DIGEST_KEY) else { return Ok(DigestCheck::Absent) };
    let stored = stored.as_str().ok_or_else(|| {
        Error::input(weights, 0, format!("its state file's `{DIGEST_KEY}` is not a string: the state file is damaged"))
    })?;
    let actual = tensor_digest(tensors);
    if stored != actual {
        return Err(Error::input(
            weights,
            0,
            format!(
                "damaged checkpoint: its tensors hash to {actual} but its state file records {stored} (a flipped \
                 bit, a partial copy, or weights and state from different checkpoints)"
            ),
        ));
    }
    Ok(DigestCheck::Verified)
}

/// The one-line notice for a checkpoint without a digest.
pub fn absent_notice(weights: &Path) -> String {
    format!(
        "note: {}: no tensor digest in its state file (written by an older attnas); loaded without verification",
        weights.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tensors() -> Vec<TensorRecord> {
        vec![
            TensorRecord::new("a.weight", vec![2, 3], (0..6).map(|i| i as f32 * 0.5).collect()),
            TensorRecord::new("b.bias", vec![3], vec![1.0, -2.0, 3.5]),
        ]
    }

    #[test]
    fn the_digest_covers_names_shapes_and_every_bit() {
        let base = tensor_digest(&tensors());
        assert!(base.starts_with("sha256:") && base.len() == 7 + 64, "{base}");
        let mut reversed = tensors();
        reversed.reverse();
        assert_eq!(tensor_digest(&reversed), base, "order-independent");
        let mut renamed = tensors();
        renamed[1].name = "b.bias2".into();
        assert_ne!(tensor_digest(&renamed), base);
        let mut reshaped = tensors();
        reshaped[0].shape = vec![3, 2];
        assert_ne!(tensor_digest(&reshaped), base);
        let mut flipped = tensors();
        flipped[0].data[5] = f32::from_bits(flipped[0].data[5].to_bits() ^ 1); // lowest mantissa bit
        assert_ne!(tensor_digest(&flipped), base);
        // Name bytes cannot slide into the data: the name length is hashed.
        let a = [TensorRecord::new("x", vec![0], vec![])];
        let b = [TensorRecord::new("x\u{0}", vec![0], vec![])];
        assert_ne!(tensor_digest(&a), tensor_digest(&b));
    }

    #[test]
    fn check_verifies_refuses_and_tolerates_absence() {
        let p = Path::new("run/ckpt-000000004.safetensors");
        let state = json!({ "step": 4, DIGEST_KEY: tensor_digest(&tensors()) });
        assert_eq!(check(p, &tensors(), &state).unwrap(), DigestCheck::Verified);
        assert_eq!(check(p, &tensors(), &json!({"step": 4})).unwrap(), DigestCheck::Absent);
        let mut flipped = tensors();
        flipped[1].data[0] = -1.0;
        let e = check(p, &flipped, &state).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(msg.contains("ckpt-000000004.safetensors") && msg.contains("damaged"), "{msg}");
        assert!(check(p, &tensors(), &json!({ DIGEST_KEY: 7 })).is_err());
    }
}
