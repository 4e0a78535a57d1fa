//! Tensor data types and their names in Triton's C API, in config.pbtxt and in ONNX.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// A tensor element type. `Bytes` is Triton's STRING (BYTES on the wire): variable-size elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    F32,
    F64,
    Bytes,
    BF16,
}

const ALL: [DataType; 14] = [
    DataType::Bool,
    DataType::U8,
    DataType::U16,
    DataType::U32,
    DataType::U64,
    DataType::I8,
    DataType::I16,
    DataType::I32,
    DataType::I64,
    DataType::F16,
    DataType::F32,
    DataType::F64,
    DataType::Bytes,
    DataType::BF16,
];

impl DataType {
    pub fn all() -> &'static [DataType] {
        &ALL
    }
    /// `TRITONSERVER_DataType` value (equal to the config proto's `DataType` value).
    pub fn to_triton(self) -> u32 {
        ALL.iter().position(|d| *d == self).unwrap_or(0) as u32 + 1
    }
    pub fn from_triton(v: u32) -> Option<Self> {
        (1..=14).contains(&v).then(|| ALL[v as usize - 1])
    }
    /// Protocol name: "FP32".
    pub fn protocol_name(self) -> &'static str {
        triton_abi::datatype_name(self.to_triton())
    }
    /// Config name: "TYPE_FP32" ("TYPE_STRING" for BYTES).
    pub fn config_name(self) -> String {
        match self {
            DataType::Bytes => "TYPE_STRING".into(),
            d => format!("TYPE_{}", d.protocol_name()),
        }
    }
    pub fn from_config_name(s: &str) -> Result<Self> {
        let bare = s.strip_prefix("TYPE_").ok_or_else(|| {
            Error::invalid_arg(format!(
                "unknown data_type '{s}' (expected TYPE_FP32, TYPE_INT64, ...)"
            ))
        })?;
        if bare == "STRING" {
            return Ok(DataType::Bytes);
        }
        Self::from_triton(triton_abi::datatype_from_name(bare))
            .ok_or_else(|| Error::invalid_arg(format!("unknown data_type '{s}'")))
    }
    /// Bytes per element; 0 for BYTES.
    pub fn byte_size(self) -> usize {
        triton_abi::datatype_byte_size(self.to_triton()) as usize
    }
    /// ONNX `TensorProto.DataType` value.
    pub fn to_onnx(self) -> i32 {
        match self {
            DataType::F32 => 1,
            DataType::U8 => 2,
            DataType::I8 => 3,
            DataType::U16 => 4,
            DataType::I16 => 5,
            DataType::I32 => 6,
            DataType::I64 => 7,
            DataType::Bytes => 8,
            DataType::Bool => 9,
            DataType::F16 => 10,
            DataType::F64 => 11,
            DataType::U32 => 12,
            DataType::U64 => 13,
            DataType::BF16 => 16,
        }
    }
    pub fn from_onnx(v: i32) -> Option<Self> {
        ALL.iter().copied().find(|d| d.to_onnx() == v)
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.protocol_name())
    }
}

/// Number of elements of a fully known shape (`None` if any dim is negative or the count
/// overflows `usize`; a zero dim anywhere makes it 0, whatever the other dims).
pub fn element_count(shape: &[i64]) -> Option<usize> {
    if shape.iter().any(|&d| d < 0) {
        return None;
    }
    if shape.contains(&0) {
        return Some(0);
    }
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
}

/// Byte size of a fully known tensor of `shape` and `dtype` (`None` if any dim is negative, or
/// the element count or the byte size overflows `usize`). 0 for BYTES (variable size).
pub fn byte_count(shape: &[i64], dtype: DataType) -> Option<usize> {
    element_count(shape)?.checked_mul(dtype.byte_size())
}

/// Triton's BYTES wire format: each element is a 4-byte little-endian length followed by that
/// many bytes; a tensor's bytes are its elements back to back.
///
/// Counts the elements of a BYTES tensor held in `chunks` (in order; a length prefix or an
/// element may be split across chunks). An error says what is wrong: a length prefix cut short,
/// or an element running past the end of the data.
pub fn bytes_element_count<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> std::result::Result<usize, String> {
    let mut count = 0usize;
    let mut prefix = [0u8; 4];
    let mut have = 0usize; // bytes of the current prefix seen so far
    let mut remaining = 0usize; // bytes of the current element still to come
    let mut offset = 0usize;
    for chunk in chunks {
        let mut buf = chunk;
        while !buf.is_empty() {
            if remaining > 0 {
                let take = remaining.min(buf.len());
                remaining -= take;
                buf = &buf[take..];
                offset = offset.saturating_add(take);
                continue;
            }
            let take = (4 - have).min(buf.len());
            prefix[have..have + take].copy_from_slice(&buf[..take]);
            have += take;
            buf = &buf[take..];
            offset = offset.saturating_add(take);
            if have == 4 {
                remaining = u32::from_le_bytes(prefix) as usize;
                have = 0;
                count = count
                    .checked_add(1)
                    .ok_or_else(|| "too many elements".to_string())?;
            }
        }
    }
    if have > 0 {
        return Err(format!(
            "element {count} has a length prefix of {have} bytes (4 expected) at byte {}",
            offset - have
        ));
    }
    if remaining > 0 {
        return Err(format!(
            "element {} runs past the end of the data ({remaining} more bytes expected after byte {offset})",
            count - 1
        ));
    }
    Ok(count)
}

/// The elements of a BYTES tensor in one buffer (`None` when the data is malformed: see
/// [`bytes_element_count`]).
pub fn bytes_elements(mut buf: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (len, rest) = buf.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return None;
        }
        let (elem, rest) = rest.split_at(len);
        out.push(elem);
        buf = rest;
    }
    Some(out)
}

/// Appends one element to a BYTES tensor (`None` when it is longer than a 4-byte length can say).
pub fn push_bytes_element(out: &mut Vec<u8>, elem: &[u8]) -> Option<()> {
    let len = u32::try_from(elem.len()).ok()?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(elem);
    Some(())
}

/// Byte offset where element `index` of a BYTES tensor starts (`data.len()` when `index` is the
/// element count; `None` when the data has fewer elements or is malformed).
pub fn bytes_offset(data: &[u8], index: usize) -> Option<usize> {
    let mut at = 0usize;
    for _ in 0..index {
        let prefix = data.get(at..at.checked_add(4)?)?;
        let len = u32::from_le_bytes(prefix.try_into().ok()?) as usize;
        at = at.checked_add(4)?.checked_add(len)?;
        if at > data.len() {
            return None;
        }
    }
    Some(at)
}

/// Shape as text: `[2,3,224,224]`.
pub fn shape_str(shape: &[i64]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(","))
}

/// One tensor of a model's or an engine's I/O signature; `dims` is the full shape with `-1` for dynamic dims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DataType,
    pub dims: Vec<i64>,
}

/// The I/O signature of a model or engine, in graph order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_agree() {
        for &d in DataType::all() {
            assert_eq!(DataType::from_triton(d.to_triton()), Some(d));
            assert_eq!(DataType::from_config_name(&d.config_name()).unwrap(), d);
            assert_eq!(DataType::from_onnx(d.to_onnx()), Some(d));
        }
        assert_eq!(
            DataType::F32.to_triton(),
            triton_abi::TRITONSERVER_TYPE_FP32
        );
        assert_eq!(
            DataType::BF16.to_triton(),
            triton_abi::TRITONSERVER_TYPE_BF16
        );
        assert_eq!(DataType::Bytes.config_name(), "TYPE_STRING");
        assert!(DataType::from_config_name("FP32").is_err());
    }

    #[test]
    fn element_counts() {
        assert_eq!(element_count(&[2, 3, 4]), Some(24));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[-1, 3]), None);
        assert_eq!(element_count(&[1 << 32, 1 << 32]), None);
        assert_eq!(element_count(&[i64::MAX, 3]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX, 0]), Some(0));
        assert_eq!(element_count(&[0, i64::MAX, i64::MAX]), Some(0));
        assert_eq!(byte_count(&[2, 3], DataType::F32), Some(24));
        assert_eq!(byte_count(&[1 << 62], DataType::F32), None);
        assert_eq!(byte_count(&[1 << 62], DataType::U8), Some(1 << 62));
    }

    #[test]
    fn bytes_tensors() {
        let mut t = Vec::new();
        for e in [&b"ab"[..], b"", b"\0x\xff"] {
            push_bytes_element(&mut t, e).unwrap();
        }
        assert_eq!(
            bytes_elements(&t).unwrap(),
            vec![&b"ab"[..], b"", b"\0x\xff"]
        );
        assert_eq!(bytes_element_count([&t[..]]), Ok(3));
        // Split anywhere, prefixes included, the count is the same.
        for cut in 0..=t.len() {
            for cut2 in cut..=t.len() {
                let parts = [&t[..cut], &t[cut..cut2], &t[cut2..]];
                assert_eq!(bytes_element_count(parts), Ok(3), "{cut} {cut2}");
            }
        }
        assert_eq!(bytes_element_count([&t[..0]]), Ok(0));
        assert!(bytes_element_count([&t[..2]])
            .unwrap_err()
            .contains("length prefix"));
        assert!(bytes_element_count([&t[..5]])
            .unwrap_err()
            .contains("past the end"));
        assert!(bytes_elements(&t[..5]).is_none());
        assert!(bytes_elements(&t[..t.len() - 1]).is_none());
        // A length near u32::MAX never overflows.
        let huge = [0xff, 0xff, 0xff, 0xff, 1];
        assert!(bytes_element_count([&huge[..]]).is_err());
        assert!(bytes_elements(&huge).is_none());
        assert_eq!(bytes_offset(&t, 0), Some(0));
        assert_eq!(bytes_offset(&t, 1), Some(6));
        assert_eq!(bytes_offset(&t, 2), Some(10));
        assert_eq!(bytes_offset(&t, 3), Some(t.len()));
        assert_eq!(bytes_offset(&t, 4), None);
        assert_eq!(bytes_offset(&huge, 1), None);
    }

    proptest::proptest! {
        /// Any bytes, cut into any chunks: the streaming count agrees with the one-buffer split
        /// (both fail on the same data), and the offsets walk to the end.
        #[test]
        fn bytes_count_over_chunks_agrees_with_the_split(
            data in proptest::collection::vec(
                proptest::prop_oneof![0u8..4, proptest::prelude::any::<u8>()], 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&data[at..c]);
                at = c;
            }
            chunks.push(&data[at..]);
            let split = bytes_elements(&data);
            let counted = bytes_element_count(chunks.iter().copied());
            proptest::prop_assert_eq!(split.as_ref().map(Vec::len), counted.as_ref().ok().copied());
            if let Some(e) = split {
                proptest::prop_assert_eq!(bytes_offset(&data, e.len()), Some(data.len()));
                proptest::prop_assert_eq!(bytes_offset(&data, e.len() + 1), None);
            }
        }
    }
}
