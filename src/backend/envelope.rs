//! The cache envelope: what the engine cache keeps for a key is a small JSON header saying what
//! precision the artifact serves (FP32 when the FP16 build failed the guard) and the guard's
//! verdict, followed by the engine artifact. An empty artifact means "load the original model
//! file" (an ONNX Runtime FP32 fallback needs no copy of the model).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

const ENVELOPE_MAGIC: &[u8; 8] = b"RTENGV1\n";

/// What a cached artifact serves, stored in front of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvelopeMeta {
    /// "FP16" or "FP32".
    pub served_precision: String,
    /// The accuracy guard's verdict at build time, if it ran.
    pub guard: Option<GuardResult>,
    /// What the FP16 converter did, for the log.
    pub fp16_report: Option<String>,
}

/// Accuracy of the FP16 engine against FP32 on seeded random inputs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GuardResult {
    pub min_cosine: f64,
    pub rel_l2: f64,
    pub passed: bool,
    pub detail: String,
}

pub fn wrap(meta: &EnvelopeMeta, payload: &[u8]) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(meta)?;
    let mut out = Vec::with_capacity(ENVELOPE_MAGIC.len() + 4 + json.len() + payload.len());
    out.extend_from_slice(ENVELOPE_MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(payload);
    Ok(out)
}

pub fn unwrap(bytes: &[u8]) -> Result<(EnvelopeMeta, &[u8])> {
    let bad = || Error::internal("cached artifact has no rusttrt envelope");
    let rest = bytes
        .strip_prefix(ENVELOPE_MAGIC.as_slice())
        .ok_or_else(bad)?;
    if rest.len() < 4 {
        return Err(bad());
    }
    let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let rest = &rest[4..];
    if rest.len() < n {
        return Err(bad());
    }
    let meta: EnvelopeMeta = serde_json::from_slice(&rest[..n])
        .map_err(|e| Error::internal(format!("envelope: {e}")))?;
    Ok((meta, &rest[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip_and_rejects_foreign_bytes() {
        let meta = EnvelopeMeta {
            served_precision: "FP16".into(),
            guard: None,
            fp16_report: None,
        };
        let w = wrap(&meta, b"engine").unwrap();
        let (m, p) = unwrap(&w).unwrap();
        assert_eq!(m, meta);
        assert_eq!(p, b"engine");
        assert!(unwrap(b"garbage").is_err());
        assert!(unwrap(&w[..10]).is_err());
    }
}
