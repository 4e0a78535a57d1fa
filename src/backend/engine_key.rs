//! Where engines are cached and under which key: the cache locations of a model and the key
//! of an engine build — content of the model (+ external data), engine, the versions of
//! everything that shapes its artifacts, device, precision, batch profile, build options. Never
//! a path.

use super::model::ModelState;
use crate::cache::{CacheConfig, CacheKey};
use crate::engine::{BuildSpec, EngineFactory};
use crate::error::Result;
use std::path::PathBuf;

/// Cache locations in order: model parameter `cache_dir`, backend config `cache-dir`, beside the
/// model (`<model dir>/.rusttrt-cache`), the user's cache directory; memory as the last resort.
pub fn cache_config(state: &ModelState) -> Result<CacheConfig> {
    let mut locations: Vec<PathBuf> = Vec::new();
    if let Some(p) = state.config.parameter("cache_dir") {
        locations.push(p.into());
    }
    if let Some(p) = state.backend.get("cache-dir") {
        locations.push(p.into());
    }
    if let Some(model_dir) = state.model_path.parent().and_then(|v| v.parent()) {
        locations.push(model_dir.join(".rusttrt-cache"));
    }
    let user = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(u) = user {
        locations.push(u.join("rusttrt"));
    }
    let max = state
        .config
        .parameter("cache_max_size")
        .or(state.backend.get("cache-max-size"));
    Ok(CacheConfig {
        locations,
        max_bytes: max
            .map(|v| super::params::parse_size("cache size", v))
            .transpose()?,
        memory_fallback: true,
    })
}

/// Model parameters that do not change what gets built (they stay out of the cache key).
const NOT_BUILD_OPTIONS: &[&str] = &[
    "cache_dir",
    "cache_max_size",
    "onnxruntime_library",
    "intra_op_thread_count",
    // Run-time choices of the ONNX Runtime runner: the cached artifact (the converted model) and
    // the guard's verdict do not depend on them.
    "onnxruntime_share_weights",
    "cuda_graph_batch_sizes",
    // Where the timing cache lives (never a path in the key) and how long a build may take.
    "timing_cache_path",
    "build_timeout_s",
];

/// The versions of the backend's own parts that shape an artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersions {
    pub backend: String,
    pub fp16_converter: u32,
    pub fp16_guard: u32,
}

impl Default for KeyVersions {
    fn default() -> Self {
        KeyVersions {
            backend: env!("CARGO_PKG_VERSION").to_string(),
            fp16_converter: crate::onnx::fp16::CONVERTER_VERSION,
            fp16_guard: super::guard::GUARD_VERSION,
        }
    }
}

/// The cache key: content of the model (+ external data), engine, its library version and the
/// versions of everything else that shapes its artifacts (shim headers, ...), device identity,
/// precision, batch profile, every build option, the backend's, FP16 converter's and guard's
/// versions. Never a path.
pub fn cache_key(
    signature: &crate::engine::Signature,
    model_digest: &str,
    factory: &dyn EngineFactory,
    spec: &BuildSpec,
) -> Result<CacheKey> {
    cache_key_with(
        signature,
        model_digest,
        factory,
        spec,
        &KeyVersions::default(),
    )
}

fn cache_key_with(
    signature: &crate::engine::Signature,
    model_digest: &str,
    factory: &dyn EngineFactory,
    spec: &BuildSpec,
    versions: &KeyVersions,
) -> Result<CacheKey> {
    let profile = format!(
        "max={};opt={}",
        spec.max_batch_size,
        spec.opt_batch_sizes
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut b = CacheKey::builder()
        .field("model_digest", model_digest)
        .field("engine", factory.kind())
        .field("engine_version", factory.library_version())
        .field("device", factory.device_identity(spec.device)?)
        .field("precision", spec.precision.as_str())
        .field("profile", profile)
        .field("io", format!("{signature:?}"))
        .field("backend_version", &versions.backend)
        .field(
            "fp16_converter_version",
            versions.fp16_converter.to_string(),
        )
        .field("fp16_guard_version", versions.fp16_guard.to_string());
    for (k, v) in factory.artifact_versions() {
        b = b.field(format!("version.{k}"), v);
    }
    for (k, v) in &spec.options {
        if !NOT_BUILD_OPTIONS.contains(&k.as_str()) {
            b = b.field(format!("option.{k}"), v);
        }
    }
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Device, Engine, Precision};
    use crate::engine::{Signature, TensorSpec};
    use crate::error::Error;
    use crate::types::DataType;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// A factory whose version and device are set by the test.
    struct Fake(&'static str, &'static str, &'static str);
    impl EngineFactory for Fake {
        fn kind(&self) -> &'static str {
            "fake"
        }
        fn artifact_versions(&self) -> Vec<(&'static str, String)> {
            vec![("shim_headers", self.2.to_string())]
        }
        fn library_version(&self) -> String {
            self.0.into()
        }
        fn device_identity(&self, _: Device) -> Result<String> {
            Ok(self.1.into())
        }
        fn cacheable(&self, _: &BuildSpec) -> bool {
            true
        }
        fn build(&self, _: &BuildSpec, onnx: &[u8]) -> Result<Vec<u8>> {
            Ok(onnx.to_vec())
        }
        fn load(&self, _: &BuildSpec, _: Option<&[u8]>) -> Result<Arc<dyn Engine>> {
            Err(Error::unsupported("fake"))
        }
    }

    #[test]
    fn the_cache_key_covers_content_engine_device_precision_profile_options_never_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("a.onnx");
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models");
        std::fs::copy(data.join("dtype_fp32/1/model.onnx"), &model).unwrap();
        let sig = Signature {
            inputs: vec![TensorSpec {
                name: "x".into(),
                dtype: DataType::F32,
                dims: vec![-1, 4],
            }],
            outputs: vec![],
        };
        let spec = BuildSpec {
            model_name: "m".into(),
            model_path: model.clone(),
            precision: Precision::Fp16,
            device: Device::Gpu(0),
            max_batch_size: 8,
            opt_batch_sizes: vec![4, 8],
            options: BTreeMap::from([("max_workspace_size_bytes".to_string(), "1024".to_string())]),
        };
        let f = Fake("10.16.0", "H100 sm_90", "10.16.0");
        let da = crate::onnx::model_digest(&model).unwrap();
        let base = cache_key(&sig, &da, &f, &spec).unwrap();
        // Same content elsewhere, under another model name: same key.
        let other = dir.path().join("copy.onnx");
        std::fs::copy(&model, &other).unwrap();
        let moved = BuildSpec {
            model_path: other,
            model_name: "another".into(),
            ..spec.clone()
        };
        assert_eq!(
            cache_key(
                &sig,
                &crate::onnx::model_digest(&moved.model_path).unwrap(),
                &f,
                &moved
            )
            .unwrap()
            .digest,
            base.digest
        );
        // Options that do not change the build stay out of the key.
        let mut o = spec.clone();
        o.options.insert("cache_dir".into(), "/elsewhere".into());
        o.options
            .insert("cuda_graph_batch_sizes".into(), "1,8".into());
        assert_eq!(cache_key(&sig, &da, &f, &o).unwrap().digest, base.digest);
        let mut changed = Vec::new();
        std::fs::copy(
            data.join("dtype_int32/1/model.onnx"),
            dir.path().join("b.onnx"),
        )
        .unwrap();
        changed.push(
            cache_key(
                &sig,
                &crate::onnx::model_digest(dir.path().join("b.onnx")).unwrap(),
                &f,
                &BuildSpec {
                    model_path: dir.path().join("b.onnx"),
                    ..spec.clone()
                },
            )
            .unwrap(),
        );
        changed
            .push(cache_key(&sig, &da, &Fake("10.16.1", "H100 sm_90", "10.16.0"), &spec).unwrap());
        changed
            .push(cache_key(&sig, &da, &Fake("10.16.0", "H200 sm_90", "10.16.0"), &spec).unwrap());
        changed.push(
            cache_key(
                &sig,
                &da,
                &f,
                &BuildSpec {
                    precision: Precision::Fp32,
                    ..spec.clone()
                },
            )
            .unwrap(),
        );
        changed.push(
            cache_key(
                &sig,
                &da,
                &f,
                &BuildSpec {
                    max_batch_size: 16,
                    ..spec.clone()
                },
            )
            .unwrap(),
        );
        changed.push(
            cache_key(
                &sig,
                &da,
                &f,
                &BuildSpec {
                    opt_batch_sizes: vec![8],
                    ..spec.clone()
                },
            )
            .unwrap(),
        );
        let mut o = spec.clone();
        o.options
            .insert("max_workspace_size_bytes".into(), "2048".into());
        changed.push(cache_key(&sig, &da, &f, &o).unwrap());
        // The TensorRT headers the shim was compiled against (same library version).
        changed
            .push(cache_key(&sig, &da, &Fake("10.16.0", "H100 sm_90", "10.17.0"), &spec).unwrap());
        // The versions of the backend, the FP16 converter and the guard.
        let v = KeyVersions::default();
        for other in [
            KeyVersions {
                backend: "9.9.9".into(),
                ..v.clone()
            },
            KeyVersions {
                fp16_converter: v.fp16_converter + 1,
                ..v.clone()
            },
            KeyVersions {
                fp16_guard: v.fp16_guard + 1,
                ..v.clone()
            },
        ] {
            changed.push(cache_key_with(&sig, &da, &f, &spec, &other).unwrap());
        }
        assert_eq!(
            cache_key_with(&sig, &da, &f, &spec, &v).unwrap().digest,
            base.digest
        );
        for (i, k) in changed.iter().enumerate() {
            assert_ne!(k.digest, base.digest, "change {i} must miss");
        }
        assert!(base.fields.contains_key("version.shim_headers"));
        assert!(
            !base
                .fields
                .values()
                .any(|v| v.contains(dir.path().to_str().unwrap())),
            "a path leaked into the key"
        );
    }
}
