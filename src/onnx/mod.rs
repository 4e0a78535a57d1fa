//! ONNX tools: read a model, its I/O [`Signature`], hash it (with its external data) for the
//! engine cache key, inline external data, and convert FP32 models to mixed FP16 ([`fp16`]).
//!
//! The protobuf code is generated at build time from `proto/onnx.proto` (this project's own
//! schema, wire compatible with ONNX) into [`proto`]. Fields the schema leaves out survive a
//! parse/serialize round trip as unknown fields.

pub mod fp16;
pub mod specialize;

/// Generated protobuf code (`proto::onnx::ModelProto`, ...); see `proto/onnx.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/protos/mod.rs"));
}

pub use proto::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, TypeProto, ValueInfoProto,
};

use crate::error::{Error, Result};
use crate::safe_file::{self, SafeFile, MAX_MODEL_BYTES};
use crate::types::{DataType, Signature, TensorSpec};
use protobuf::Message;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

/// `TensorProto.DataType` values used by this module and by [`fp16`].
pub mod elem {
    pub const UNDEFINED: i32 = 0;
    pub const FLOAT: i32 = 1;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const STRING: i32 = 8;
    pub const BOOL: i32 = 9;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
}

/// `TensorProto.DataLocation::EXTERNAL`.
const LOCATION_EXTERNAL: i32 = 1;

/// File name given to models made from bytes ([`OnnxModel::from_bytes`]): it only appears in
/// messages, external data is resolved against its directory.
const IN_MEMORY_NAME: &str = "<in-memory model>";

/// Name of an ONNX `TensorProto.DataType` value, for messages ("FLOAT16", "COMPLEX64").
pub fn onnx_type_name(t: i32) -> String {
    use proto::onnx::tensor_proto::DataType as D;
    use protobuf::Enum;
    match D::from_i32(t) {
        Some(d) => format!("{d:?}"),
        None => format!("unknown ONNX data type {t}"),
    }
}

/// A parsed ONNX model and where it came from.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    /// The parsed model.
    pub proto: ModelProto,
    /// Path of the model file. External data locations are resolved against its directory.
    /// For [`OnnxModel::from_bytes`] it is `<base_dir>/<in-memory model>`.
    pub path: PathBuf,
}

impl OnnxModel {
    /// Reads and parses an ONNX file (external data stays external; see
    /// [`load_with_external_data`]).
    ///
    /// Errors: NOT_FOUND naming the path if the file is missing; INVALID_ARG if it is not a
    /// regular file (a FIFO, a device: refused without blocking, see [`crate::safe_file`]), is
    /// over 2 GiB, or does not parse (`not an ONNX model: <path>: <protobuf error>`).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = safe_file::read_file(path, "ONNX model", MAX_MODEL_BYTES)?;
        Self::parse(&bytes, path.to_path_buf())
    }

    /// Parses a model from memory; external data is resolved against `base_dir`.
    pub fn from_bytes(bytes: &[u8], base_dir: impl AsRef<Path>) -> Result<Self> {
        Self::parse(bytes, base_dir.as_ref().join(IN_MEMORY_NAME))
    }

    fn parse(bytes: &[u8], path: PathBuf) -> Result<Self> {
        let proto = ModelProto::parse_from_bytes(bytes).map_err(|e| {
            Error::invalid_arg(format!("not an ONNX model: {}: {e}", path.display()))
        })?;
        if !proto.graph.is_some() {
            return Err(Error::invalid_arg(format!(
                "not an ONNX model: {}: the file parses but has no graph",
                path.display()
            )));
        }
        Ok(OnnxModel { proto, path })
    }

    /// Serializes the model (protobuf bytes, as written to a .onnx file).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.proto.write_to_bytes().map_err(|e| {
            Error::internal(format!(
                "cannot serialize ONNX model {}: {e}",
                self.path.display()
            ))
        })
    }

    /// Directory external data files are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new("."))
    }

    /// The main graph (an empty one if the model has none; [`OnnxModel::load`] refuses those).
    pub fn graph(&self) -> &GraphProto {
        self.proto.graph.get_or_default()
    }

    /// The served I/O signature: graph inputs that are not initializers, then graph outputs,
    /// in graph order. Dims: `dim_value`, or `-1` for a `dim_param` or an unset dim.
    ///
    /// Errors (UNSUPPORTED, naming the tensor): a non-tensor value (sequence, map, optional,
    /// sparse), an element type Triton cannot serve, a tensor without a shape (unknown rank).
    pub fn signature(&self) -> Result<Signature> {
        let g = self.graph();
        let inits: std::collections::HashSet<&str> =
            g.initializer.iter().map(|t| t.name()).collect();
        let mut sig = Signature::default();
        for vi in g.input.iter().filter(|vi| !inits.contains(vi.name())) {
            sig.inputs.push(self.tensor_spec(vi, "input")?);
        }
        for vi in &g.output {
            sig.outputs.push(self.tensor_spec(vi, "output")?);
        }
        Ok(sig)
    }

    fn tensor_spec(&self, vi: &ValueInfoProto, what: &str) -> Result<TensorSpec> {
        use proto::onnx::type_proto::Value;
        let name = vi.name();
        let model = self.path.display();
        let tt = match &vi.type_.value {
            Some(Value::TensorType(t)) => t,
            Some(other) => {
                let kind = match other {
                    Value::SequenceType(_) => "a sequence",
                    Value::MapType(_) => "a map",
                    Value::OptionalType(_) => "an optional",
                    Value::SparseTensorType(_) => "a sparse tensor",
                    _ => "an opaque value",
                };
                return Err(Error::unsupported(format!(
                    "model {model}: graph {what} '{name}' is {kind}; only dense tensors can be served"
                )));
            }
            None => {
                return Err(Error::unsupported(format!(
                    "model {model}: graph {what} '{name}' has no type"
                )))
            }
        };
        let dtype = DataType::from_onnx(tt.elem_type()).ok_or_else(|| {
            Error::unsupported(format!(
                "model {model}: graph {what} '{name}' has element type {}, which cannot be served",
                onnx_type_name(tt.elem_type())
            ))
        })?;
        let Some(shape) = tt.shape.as_ref() else {
            return Err(Error::unsupported(format!(
                "model {model}: graph {what} '{name}' has no shape (unknown rank); give it one in \
                 the model (e.g. with onnx shape inference)"
            )));
        };
        let dims = shape
            .dim
            .iter()
            .map(|d| if d.has_dim_value() { d.dim_value() } else { -1 })
            .collect();
        Ok(TensorSpec {
            name: name.to_string(),
            dtype,
            dims,
        })
    }

    /// The external data files the model refers to, resolved against [`OnnxModel::base_dir`],
    /// sorted and without duplicates. Tensors in subgraphs, `Constant` attributes, sparse
    /// initializers, functions and training graphs are included.
    ///
    /// Errors (INVALID_ARG): a location that is absolute, empty, or leaves the model's
    /// directory (`..`).
    pub fn external_data_files(&self) -> Result<Vec<PathBuf>> {
        let mut rel = Vec::new();
        for_each_tensor(&self.proto, &mut |t| {
            if let Some(loc) = external_location(t) {
                rel.push(loc.to_string());
            }
        });
        let mut out = Vec::new();
        for loc in rel {
            out.push(self.base_dir().join(checked_location(&loc, &self.path)?));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Opens every external data file the model refers to through [`open_external`] (no byte
    /// is read): each must be a regular file that stays inside the model's directory once
    /// symlinks are resolved. Run at load, before an engine library opens them by path.
    pub fn check_external_data(&self) -> Result<()> {
        let base = self.base_dir();
        for f in self.external_data_files()? {
            let rel = f.strip_prefix(base).unwrap_or(&f);
            open_external(base, rel, &self.path)?;
        }
        Ok(())
    }

    /// Reads every externally stored tensor into its `raw_data` and clears its external
    /// reference, so the model is self-contained. Files are opened by [`open_external`].
    ///
    /// Errors: a missing file (NOT_FOUND), an offset/length outside the file, a location
    /// leaving the model directory (also through a symlink), a file that is not regular, more
    /// than 2 GiB in all (protobuf's limit) (INVALID_ARG).
    pub fn inline_external_data(&mut self) -> Result<()> {
        let base = self.base_dir().to_path_buf();
        let model_path = self.path.clone();
        let mut files: HashMap<PathBuf, SafeFile> = HashMap::new();
        let mut budget = MAX_MODEL_BYTES;
        let mut err = None;
        for_each_tensor_mut(&mut self.proto, &mut |t| {
            if err.is_some() {
                return;
            }
            if let Err(e) = inline_one(t, &base, &model_path, &mut files, &mut budget) {
                err = Some(e);
            }
        });
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Loads a model and inlines its external data into `raw_data` (see
/// [`OnnxModel::inline_external_data`]); the result serializes to self-contained bytes.
/// Models over 2 GiB cannot be inlined (protobuf's message size limit).
pub fn load_with_external_data(path: impl AsRef<Path>) -> Result<OnnxModel> {
    let mut m = OnnxModel::load(path)?;
    m.inline_external_data()?;
    Ok(m)
}

/// SHA-256 (lower-case hex) of the model file's bytes and of every external data file it refers
/// to. Depends only on contents and on the external files' names relative to the model, never
/// on where the model lives. Each part is framed as `name length, name, byte length, bytes`
/// (lengths as u64 little-endian), external files in sorted order, so concatenations cannot
/// collide. External files are streamed, not read into memory.
pub fn model_digest(path: impl AsRef<Path>) -> Result<String> {
    OnnxModel::load_with_digest(path).map(|(_, d)| d)
}

impl OnnxModel {
    /// Reads and parses the model once and computes its content digest ([`model_digest`]) from
    /// the same bytes: what a model load needs (signature and cache key) from one read.
    pub fn load_with_digest(path: impl AsRef<Path>) -> Result<(OnnxModel, String)> {
        let path = path.as_ref();
        let bytes = safe_file::read_file(path, "ONNX model", MAX_MODEL_BYTES)?;
        let model = OnnxModel::parse(&bytes, path.to_path_buf())?;
        let mut h = Sha256::new();
        h.update(b"rusttrt-onnx-digest-v1\0");
        frame(&mut h, b"", bytes.len() as u64);
        h.update(&bytes);
        drop(bytes);
        let base = model.base_dir().to_path_buf();
        let mut entries: BTreeMap<String, PathBuf> = BTreeMap::new();
        for f in model.external_data_files()? {
            let rel = f
                .strip_prefix(&base)
                .unwrap_or(&f)
                .to_string_lossy()
                .into_owned();
            entries.insert(rel, f);
        }
        for (rel, file) in entries {
            let fh = open_external(&base, Path::new(&rel), path)?;
            let len = fh.len;
            frame(&mut h, rel.as_bytes(), len);
            let copied = std::io::copy(&mut std::io::Read::take(&fh.file, len), &mut h)?;
            if copied != len {
                return Err(Error::internal(format!(
                    "external data file {} of model {} shrank while it was hashed ({copied} of {len} bytes)",
                    file.display(),
                    path.display()
                )));
            }
        }
        Ok((model, hex::encode(h.finalize())))
    }
}

fn frame(h: &mut Sha256, name: &[u8], len: u64) {
    h.update((name.len() as u64).to_le_bytes());
    h.update(name);
    h.update(len.to_le_bytes());
}

/// Opens an external data file of `model` (`rel`: its location relative to `base`, the model's
/// directory) through [`safe_file::open_in_dir`]: a regular file that, symlinks followed, lies
/// inside the model's directory; never blocks. The one way the cache-key hashing
/// ([`model_digest`]), the FP16 converter and the accuracy guard ([`inline_external_data`](
/// OnnxModel::inline_external_data)) open external data. Errors name the model.
pub fn open_external(base: &Path, rel: &Path, model: &Path) -> Result<SafeFile> {
    safe_file::open_in_dir(base, rel, "external data file")
        .map_err(|e| e.context(format!("model {}", model.display())))
}

/// `location` of an externally stored tensor (`None` for inline tensors).
fn external_location(t: &TensorProto) -> Option<&str> {
    let external = t.data_location.map(|l| l.value()) == Some(LOCATION_EXTERNAL);
    if !external {
        return None;
    }
    Some(
        t.external_data
            .iter()
            .find(|kv| kv.key() == "location")
            .map(|kv| kv.value())
            .unwrap_or(""),
    )
}

/// Checks that an external data location stays inside the model directory.
fn checked_location(loc: &str, model: &Path) -> Result<PathBuf> {
    let p = Path::new(loc);
    let mut depth: i64 = 0;
    let mut clean = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => {
                depth += 1;
                clean.push(s);
            }
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                clean.pop();
            }
            Component::RootDir | Component::Prefix(_) => depth = i64::MIN / 2,
        }
        if depth < 0 {
            break;
        }
    }
    if loc.is_empty() || depth <= 0 || clean.as_os_str().is_empty() {
        return Err(Error::invalid_arg(format!(
            "model {}: external data location '{loc}' is not a file inside the model's directory",
            model.display()
        )));
    }
    Ok(clean)
}

fn inline_one(
    t: &mut TensorProto,
    base: &Path,
    model: &Path,
    files: &mut HashMap<PathBuf, SafeFile>,
    budget: &mut u64,
) -> Result<()> {
    let Some(loc) = external_location(t) else {
        return Ok(());
    };
    let rel = checked_location(loc, model)?;
    let file = base.join(&rel);
    let mut offset = 0u64;
    let mut length = None;
    for kv in &t.external_data {
        let parse = |v: &str| {
            v.parse::<u64>().map_err(|_| {
                Error::invalid_arg(format!(
                    "model {}: tensor '{}': external data {} '{v}' is not a number",
                    model.display(),
                    t.name(),
                    kv.key()
                ))
            })
        };
        match kv.key() {
            "offset" => offset = parse(kv.value())?,
            "length" => length = Some(parse(kv.value())?),
            _ => {}
        }
    }
    if !files.contains_key(&file) {
        let f = open_external(base, &rel, model)?;
        files.insert(file.clone(), f);
    }
    let f = files.get_mut(&file).expect("inserted above");
    let size = f.len;
    let length = length.unwrap_or(size.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(Error::invalid_arg(format!(
            "model {}: tensor '{}': external data at offset {offset}, length {length} lies \
             outside {} ({size} bytes)",
            model.display(),
            t.name(),
            file.display()
        )));
    }
    if length > *budget {
        return Err(Error::invalid_arg(format!(
            "model {}: tensor '{}': {length} bytes of external data in {} would take the \
             inlined model over {MAX_MODEL_BYTES} bytes (protobuf's 2 GiB limit)",
            model.display(),
            t.name(),
            file.display()
        )));
    }
    let what = format!("external data of tensor '{}'", t.name());
    let buf = safe_file::read_range(f, offset, length, *budget, &what)
        .map_err(|e| e.context(format!("model {}", model.display())))?;
    *budget -= length;
    t.raw_data = Some(buf);
    t.external_data.clear();
    t.data_location = None;
    Ok(())
}

/// Calls `f` on every tensor of the model: initializers, sparse initializers, tensor-valued
/// attributes, in the main graph, subgraphs, functions and training graphs.
pub(crate) fn for_each_tensor(m: &ModelProto, f: &mut dyn FnMut(&TensorProto)) {
    fn graph(g: &GraphProto, f: &mut dyn FnMut(&TensorProto)) {
        g.initializer.iter().for_each(&mut *f);
        for s in &g.sparse_initializer {
            sparse(s, f);
        }
        for n in &g.node {
            nodes(n, f);
        }
    }
    fn sparse(s: &proto::onnx::SparseTensorProto, f: &mut dyn FnMut(&TensorProto)) {
        if let Some(v) = s.values.as_ref() {
            f(v);
        }
        if let Some(i) = s.indices.as_ref() {
            f(i);
        }
    }
    fn nodes(n: &NodeProto, f: &mut dyn FnMut(&TensorProto)) {
        for a in &n.attribute {
            if let Some(t) = a.t.as_ref() {
                f(t);
            }
            a.tensors.iter().for_each(&mut *f);
            if let Some(s) = a.sparse_tensor.as_ref() {
                sparse(s, f);
            }
            for s in &a.sparse_tensors {
                sparse(s, f);
            }
            if let Some(g) = a.g.as_ref() {
                graph(g, f);
            }
            for g in &a.graphs {
                graph(g, f);
            }
        }
    }
    if let Some(g) = m.graph.as_ref() {
        graph(g, f);
    }
    for func in &m.functions {
        for n in &func.node {
            nodes(n, f);
        }
    }
    for ti in &m.training_info {
        for g in [ti.initialization.as_ref(), ti.algorithm.as_ref()]
            .into_iter()
            .flatten()
        {
            graph(g, f);
        }
    }
}

/// Mutable twin of [`for_each_tensor`].
pub(crate) fn for_each_tensor_mut(m: &mut ModelProto, f: &mut dyn FnMut(&mut TensorProto)) {
    fn graph(g: &mut GraphProto, f: &mut dyn FnMut(&mut TensorProto)) {
        g.initializer.iter_mut().for_each(&mut *f);
        for s in &mut g.sparse_initializer {
            sparse(s, f);
        }
        for n in &mut g.node {
            nodes(n, f);
        }
    }
    fn sparse(s: &mut proto::onnx::SparseTensorProto, f: &mut dyn FnMut(&mut TensorProto)) {
        if let Some(v) = s.values.as_mut() {
            f(v);
        }
        if let Some(i) = s.indices.as_mut() {
            f(i);
        }
    }
    fn nodes(n: &mut NodeProto, f: &mut dyn FnMut(&mut TensorProto)) {
        for a in &mut n.attribute {
            if let Some(t) = a.t.as_mut() {
                f(t);
            }
            a.tensors.iter_mut().for_each(&mut *f);
            if let Some(s) = a.sparse_tensor.as_mut() {
                sparse(s, f);
            }
            for s in &mut a.sparse_tensors {
                sparse(s, f);
            }
            if let Some(g) = a.g.as_mut() {
                graph(g, f);
            }
            for g in &mut a.graphs {
                graph(g, f);
            }
        }
    }
    if let Some(g) = m.graph.as_mut() {
        graph(g, f);
    }
    for func in &mut m.functions {
        for n in &mut func.node {
            nodes(n, f);
        }
    }
    for ti in &mut m.training_info {
        for g in [ti.initialization.as_mut(), ti.algorithm.as_mut()]
            .into_iter()
            .flatten()
        {
            graph(g, f);
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests;
