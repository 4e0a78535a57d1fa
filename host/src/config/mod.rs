//! Model configuration: `config.pbtxt` parsing, the JSON form, Triton's normalization before
//! the backend sees it, `TRITONBACKEND_ModelSetConfig` merging and final validation.

mod json;
pub mod pbtxt;

/// Rust types generated from `host/proto/model_config.proto`.
#[allow(clippy::all, missing_docs, unused, non_camel_case_types, non_snake_case, non_upper_case_globals)]
#[rustfmt::skip]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/model_config_proto/model_config_include.rs"));
}

use std::path::Path;

pub use json::{from_json, to_json};
use proto::model_config::Scheduling_choice;
use proto::model_instance_group::Kind as GroupKind;
use proto::model_version_policy::Policy_choice;
pub use proto::ModelConfig;
use proto::{DataType, ModelInstanceGroup};
use triton_abi::*;

use crate::error::{Error, Result};

/// A default instance group a backend asked for in `TRITONBACKEND_GetBackendAttribute`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreferredGroup {
    /// `TRITONSERVER_InstanceGroupKind` value.
    pub kind: u32,
    /// Instance count (0 = Triton default).
    pub count: u64,
    /// Device ids (empty = default).
    pub device_ids: Vec<u64>,
}

/// Read `<model_dir>/config.pbtxt`. A missing file is allowed only with auto-complete.
pub fn read(model_dir: &Path, auto_complete: bool) -> Result<ModelConfig> {
    let path = model_dir.join("config.pbtxt");
    match std::fs::read_to_string(&path) {
        Ok(text) => pbtxt::parse::<ModelConfig>(&text)
            .map_err(|e| Error::invalid_arg(format!("failed to parse {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && auto_complete => {
            Ok(ModelConfig::new())
        }
        Err(e) => Err(Error::invalid_arg(format!(
            "unable to read model configuration {}: {e}{}",
            path.display(),
            if auto_complete {
                ""
            } else {
                " (auto-complete-config is disabled, so the file is required)"
            }
        ))),
    }
}

/// Version directories of a model that the version policy selects (ascending).
pub fn select_versions(model_dir: &Path, cfg: &ModelConfig) -> Result<Vec<u64>> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(model_dir)
        .map_err(|e| Error::not_found(format!("cannot read {}: {e}", model_dir.display())))?
    {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.path().is_dir() || name.starts_with('0') {
            continue;
        }
        if let Ok(v) = name.parse::<u64>() {
            all.push(v);
        }
    }
    all.sort_unstable();
    let chosen: Vec<u64> = match &cfg.version_policy.policy_choice {
        None => all.iter().rev().take(1).copied().collect(),
        Some(Policy_choice::Latest(l)) => {
            let n = l.num_versions.max(1) as usize;
            all.iter().rev().take(n).copied().collect()
        }
        Some(Policy_choice::All(_)) => all.clone(),
        Some(Policy_choice::Specific(s)) => {
            for v in &s.versions {
                if *v < 0 || !all.contains(&(*v as u64)) {
                    return Err(Error::not_found(format!(
                        "version {v} of model '{}' named by the version policy has no directory in {}",
                        cfg.name,
                        model_dir.display()
                    )));
                }
            }
            s.versions.iter().map(|v| *v as u64).collect()
        }
    };
    let mut chosen = chosen;
    chosen.sort_unstable();
    chosen.dedup();
    if chosen.is_empty() {
        return Err(Error::not_found(format!(
            "at least one version must be available under the version policy of model '{}' \
             (no numeric version directory in {})",
            cfg.name,
            model_dir.display()
        )));
    }
    Ok(chosen)
}

/// Triton core's normalization before `TRITONBACKEND_ModelInitialize` (and again after
/// `TRITONBACKEND_ModelSetConfig`).
pub fn normalize(
    cfg: &mut ModelConfig,
    model_name: &str,
    backend_name: &str,
    gpu_count: usize,
    preferred: &[PreferredGroup],
) -> Result<()> {
    if cfg.name.is_empty() {
        cfg.name = model_name.to_string();
    } else if cfg.name != model_name {
        return Err(Error::invalid_arg(format!(
            "model name '{}' in config.pbtxt does not match the model directory '{model_name}'",
            cfg.name
        )));
    }
    if cfg.backend.is_empty() && cfg.platform.is_empty() {
        cfg.backend = backend_name.to_string();
    }
    if cfg.backend != backend_name {
        return Err(Error::invalid_arg(format!(
            "model '{model_name}' asks for backend '{}' (platform '{}') but the host serves \
             backend '{backend_name}'",
            cfg.backend, cfg.platform
        )));
    }
    if cfg.version_policy.policy_choice.is_none() {
        let mut l = proto::model_version_policy::Latest::new();
        l.num_versions = 1;
        cfg.version_policy.mut_or_insert_default().set_latest(l);
    }
    normalize_instance_groups(cfg, gpu_count, preferred);
    let opt = cfg.optimization.mut_or_insert_default();
    if opt.input_pinned_memory.is_none() {
        opt.input_pinned_memory.mut_or_insert_default().enable = true;
    }
    if opt.output_pinned_memory.is_none() {
        opt.output_pinned_memory.mut_or_insert_default().enable = true;
    }
    let mbs = cfg.max_batch_size;
    if let Some(Scheduling_choice::DynamicBatching(db)) = &mut cfg.scheduling_choice {
        if db.preferred_batch_size.is_empty() && mbs > 0 {
            db.preferred_batch_size.push(mbs);
        }
    }
    Ok(())
}

fn group_kind(k: u32) -> GroupKind {
    match k {
        TRITONSERVER_INSTANCEGROUPKIND_CPU => GroupKind::KIND_CPU,
        TRITONSERVER_INSTANCEGROUPKIND_GPU => GroupKind::KIND_GPU,
        TRITONSERVER_INSTANCEGROUPKIND_MODEL => GroupKind::KIND_MODEL,
        _ => GroupKind::KIND_AUTO,
    }
}

/// Triton's instance-group normalization: a missing group comes from the backend's first
/// usable preferred group (named after the model), then names, kinds, counts and GPUs are
/// filled in. A count below 1 (0 or negative) is not refused by Triton: it takes the count of
/// a preferred group of the same kind, else Triton's default (`SetDefaultInstanceCount`: 1,
/// 2 for KIND_CPU of the `tensorflow` and `onnxruntime` backends). Source:
/// triton-inference-server/core src/model_config_utils.cc `NormalizeInstanceGroup`,
/// `SetDefaultInstanceCount` (checked at commit 73aad7c, June 2026).
fn normalize_instance_groups(
    cfg: &mut ModelConfig,
    gpu_count: usize,
    preferred: &[PreferredGroup],
) {
    let supported: Vec<i32> = (0..gpu_count as i32).collect();
    if cfg.instance_group.is_empty() {
        let mut g = ModelInstanceGroup::new();
        g.name = cfg.name.clone();
        for pg in preferred {
            let kind = group_kind(pg.kind);
            match kind {
                GroupKind::KIND_GPU => {
                    if supported.is_empty() {
                        continue;
                    }
                    g.gpus = pg
                        .device_ids
                        .iter()
                        .map(|d| *d as i32)
                        .filter(|d| supported.contains(d))
                        .collect();
                }
                GroupKind::KIND_AUTO => g.gpus = pg.device_ids.iter().map(|d| *d as i32).collect(),
                _ => {}
            }
            g.kind = kind.into();
            g.count = pg.count as i32;
            break;
        }
        cfg.instance_group.push(g);
    }
    let model = cfg.name.clone();
    let cfg_backend = cfg.backend.clone();
    for (i, g) in cfg.instance_group.iter_mut().enumerate() {
        if g.name.is_empty() {
            g.name = format!("{model}_{i}");
        }
        if g.kind.enum_value_or_default() == GroupKind::KIND_AUTO {
            let cpu = supported.is_empty() || g.gpus.iter().any(|d| !supported.contains(d));
            g.kind = if cpu {
                GroupKind::KIND_CPU
            } else {
                GroupKind::KIND_GPU
            }
            .into();
        }
        let kind = g.kind.enum_value_or_default();
        for pg in preferred {
            if group_kind(pg.kind) != kind {
                continue;
            }
            if kind == GroupKind::KIND_GPU && g.gpus.is_empty() && !pg.device_ids.is_empty() {
                g.gpus = pg
                    .device_ids
                    .iter()
                    .map(|d| *d as i32)
                    .filter(|d| supported.contains(d))
                    .collect();
                if g.gpus.is_empty() {
                    continue;
                }
            }
            if g.count < 1 && pg.count > 0 {
                g.count = pg.count as i32;
            }
        }
        if g.count < 1 {
            g.count = if kind == GroupKind::KIND_CPU
                && matches!(cfg_backend.as_str(), "tensorflow" | "onnxruntime")
            {
                2
            } else {
                1
            };
        }
        if kind == GroupKind::KIND_GPU && g.gpus.is_empty() {
            g.gpus = supported.clone();
        }
    }
}

/// Take over from a config sent with `TRITONBACKEND_ModelSetConfig` what Triton takes over.
pub fn merge_set_config(current: &ModelConfig, new: ModelConfig) -> Result<ModelConfig> {
    let mut out = current.clone();
    out.input = new.input;
    out.output = new.output;
    out.max_batch_size = new.max_batch_size;
    if let Some(p) = new.model_transaction_policy.as_ref() {
        out.model_transaction_policy
            .mut_or_insert_default()
            .decoupled = p.decoupled;
    }
    let which = |s: &Option<Scheduling_choice>| match s {
        None => "none",
        Some(Scheduling_choice::DynamicBatching(_)) => "dynamic_batching",
        Some(Scheduling_choice::SequenceBatching(_)) => "sequence_batching",
        Some(Scheduling_choice::EnsembleScheduling(_)) => "ensemble_scheduling",
    };
    let (a, b) = (
        which(&current.scheduling_choice),
        which(&new.scheduling_choice),
    );
    if a != "none" && a != b {
        return Err(Error::internal(format!(
            "model '{}': TRITONBACKEND_ModelSetConfig may not change the scheduler: the \
             configuration had '{a}', the new one has '{b}' (send back the full config you read)",
            current.name
        )));
    }
    // A scheduler is taken only when none was configured; the same kind keeps the old settings.
    if a == "none" {
        out.scheduling_choice = new.scheduling_choice;
    }
    Ok(out)
}

fn check_dims(model: &str, what: &str, name: &str, dims: &[i64]) -> Result<()> {
    for d in dims {
        if *d < 1 && *d != -1 {
            return Err(Error::invalid_arg(format!(
                "model '{model}', {what} '{name}': dimension {d} must be >= 1, or -1 for a \
                 variable-size dimension"
            )));
        }
    }
    Ok(())
}

/// Triton's validation of the final config (after ModelInitialize); errors fail the load.
pub fn validate(cfg: &ModelConfig, gpu_count: usize) -> Result<()> {
    let m = cfg.name.as_str();
    if m.is_empty() {
        return Err(Error::invalid_arg(
            "model configuration must specify 'name'",
        ));
    }
    if cfg.max_batch_size < 0 {
        return Err(Error::invalid_arg(format!(
            "model '{m}': 'max_batch_size' must be non-negative, got {}",
            cfg.max_batch_size
        )));
    }
    let plan = cfg.platform == "tensorrt_plan";
    for i in &cfg.input {
        let io = Io {
            what: "input",
            name: &i.name,
            dtype: i.data_type.enum_value_or_default(),
            dims: &i.dims,
            reshape: i.reshape.as_ref().map(|r| r.shape.as_slice()),
            shape_tensor: i.is_shape_tensor,
            non_linear: i.is_non_linear_format_io,
        };
        validate_io(cfg, &io, plan)?;
        let fmt = i.format.enum_value_or_default();
        if fmt != proto::model_input::Format::FORMAT_NONE && i.dims.len() != 3 {
            return Err(Error::invalid_arg(format!(
                "model '{m}', input '{}': NHWC/NCHW format requires 3 dims",
                i.name
            )));
        }
    }
    // Triton core does not refuse a name listed twice (its input/output maps keep the first);
    // the backend judges such a config against its model.
    for o in &cfg.output {
        let io = Io {
            what: "output",
            name: &o.name,
            dtype: o.data_type.enum_value_or_default(),
            dims: &o.dims,
            reshape: o.reshape.as_ref().map(|r| r.shape.as_slice()),
            shape_tensor: o.is_shape_tensor,
            non_linear: o.is_non_linear_format_io,
        };
        validate_io(cfg, &io, plan)?;
    }
    match &cfg.scheduling_choice {
        Some(Scheduling_choice::DynamicBatching(db)) => {
            // Triton accepts dynamic batching with max_batch_size 0 (every batch is then one
            // request); only the preferred sizes below are checked against max_batch_size.
            let levels = db.priority_levels;
            if levels != 0 {
                if db.default_priority_level == 0 || db.default_priority_level > levels {
                    return Err(Error::invalid_arg(format!(
                        "model '{m}': default priority level must be in range [1, {levels}]")));
                }
                if db.priority_queue_policy.keys().any(|k| *k == 0 || *k > levels) {
                    return Err(Error::invalid_arg(format!(
                        "model '{m}': priority queue policy must have priority level in range [1, {levels}]")));
                }
            }
            if db.preserve_ordering {
                use proto::model_queue_policy::TimeoutAction;
                let delays = |p: &proto::ModelQueuePolicy| p.default_timeout_microseconds != 0
                    && p.timeout_action.enum_value_or_default() == TimeoutAction::DELAY;
                if levels > 1 || db.default_queue_policy.as_ref().is_some_and(delays)
                    || db.priority_queue_policy.values().any(delays) {
                    return Err(Error::invalid_arg(format!(
                        "model '{m}': 'preserve_ordering' allows one priority level and no DELAY timeout action")));
                }
            }
            for p in &db.preferred_batch_size {
                if *p < 1 || *p > cfg.max_batch_size {
                    return Err(Error::invalid_arg(format!(
                        "model '{m}': dynamic batching preferred size {p} must be positive and \
                         <= max batch size {}",
                        cfg.max_batch_size
                    )));
                }
            }
        }
        Some(Scheduling_choice::SequenceBatching(_)) | Some(Scheduling_choice::EnsembleScheduling(_)) => {
            return Err(Error::unsupported(format!(
                "model '{m}': sequence batching / ensemble scheduling are not implemented by the test host"
            )))
        }
        None => {}
    }
    if cfg.model_transaction_policy.decoupled {
        return Err(Error::unsupported(format!(
            "model '{m}': decoupled models are not supported by the test host"
        )));
    }
    if cfg.instance_group.is_empty() {
        return Err(Error::invalid_arg(format!(
            "must specify one or more 'instance group's for {m}"
        )));
    }
    for g in &cfg.instance_group {
        let kind = g.kind.enum_value_or_default();
        if !g.profile.is_empty() && !plan {
            return Err(Error::invalid_arg(format!(
                "instance group '{}' of model '{m}' specifies 'profile', which Triton supports only for \
                 platform tensorrt_plan", g.name)));
        }
        if g.count < 1 {
            return Err(Error::invalid_arg(format!(
                "instance group '{}' of model '{m}' must have count >= 1",
                g.name
            )));
        }
        match kind {
            GroupKind::KIND_GPU => {
                if gpu_count == 0 {
                    return Err(Error::invalid_arg(format!(
                        "instance group '{}' of model '{m}' has kind KIND_GPU but no GPUs are available",
                        g.name
                    )));
                }
                for d in &g.gpus {
                    if *d < 0 || *d as usize >= gpu_count {
                        return Err(Error::invalid_arg(format!(
                            "instance group '{}' of model '{m}' names GPU {d} but only {gpu_count} GPUs are available",
                            g.name
                        )));
                    }
                }
            }
            GroupKind::KIND_CPU | GroupKind::KIND_MODEL if !g.gpus.is_empty() => {
                return Err(Error::invalid_arg(format!(
                    "instance group '{}' of model '{m}' has kind {kind:?} but specifies GPUs",
                    g.name
                )));
            }
            GroupKind::KIND_AUTO => {
                return Err(Error::internal(format!(
                    "instance group '{}' of model '{m}' still has KIND_AUTO after normalization",
                    g.name
                )))
            }
            _ => {}
        }
    }
    for w in &cfg.model_warmup {
        if cfg.max_batch_size > 0 && w.batch_size as i32 > cfg.max_batch_size {
            return Err(Error::invalid_arg(format!(
                "model '{m}', warmup '{}': batch size {} exceeds max_batch_size {}",
                w.name, w.batch_size, cfg.max_batch_size
            )));
        }
        if cfg.max_batch_size == 0 && w.batch_size > 1 {
            return Err(Error::invalid_arg(format!(
                "model '{m}', warmup '{}': batch size must be 0 or 1 for a non-batching model",
                w.name
            )));
        }
        for k in w.inputs.keys() {
            if !cfg.input.iter().any(|i| &i.name == k) {
                return Err(Error::invalid_arg(format!(
                    "model '{m}', warmup '{}': unknown input '{k}'",
                    w.name
                )));
            }
        }
    }
    Ok(())
}

struct Io<'a> {
    what: &'static str,
    name: &'a str,
    dtype: DataType,
    dims: &'a [i64],
    reshape: Option<&'a [i64]>,
    shape_tensor: bool,
    non_linear: bool,
}

/// Products of the fixed dimensions between variable (-1) ones.
fn segments(dims: &[i64]) -> Vec<i64> {
    let mut out = vec![1i64];
    for d in dims {
        if *d == -1 {
            out.push(1);
        } else if let Some(l) = out.last_mut() {
            *l *= d;
        }
    }
    out
}

/// Triton's per-tensor checks (ValidateIOShape and friends).
fn validate_io(cfg: &ModelConfig, io: &Io, plan: bool) -> Result<()> {
    let (m, what, name) = (cfg.name.as_str(), io.what, io.name);
    if name.is_empty() {
        return Err(Error::invalid_arg(format!(
            "model '{m}': model {what} must specify 'name'"
        )));
    }
    if io.dtype == DataType::TYPE_INVALID {
        return Err(Error::invalid_arg(format!(
            "model '{m}', {what} '{name}': must specify 'data_type'"
        )));
    }
    if io.dims.is_empty() {
        return Err(Error::invalid_arg(format!(
            "model '{m}', {what} '{name}': must specify 'dims'"
        )));
    }
    check_dims(m, what, name, io.dims)?;
    if let Some(r) = io.reshape {
        if r.is_empty() && cfg.max_batch_size == 0 {
            return Err(Error::invalid_arg(format!(
                "model '{m}', {what} '{name}': cannot have an empty reshape for a non-batching model")));
        }
        check_dims(m, what, &format!("{name}' reshape '"), r)?;
        let count = |d: &[i64]| {
            if d.contains(&-1) {
                -1
            } else {
                d.iter().product::<i64>()
            }
        };
        let (a, b) = (count(io.dims), if r.is_empty() { 0 } else { count(r) });
        let empty_ok = b == 0 && a == 1;
        if a != b && !empty_ok {
            return Err(Error::invalid_arg(format!(
                "model '{m}', {what} '{name}': dims {:?} and reshape {r:?} have different sizes",
                io.dims
            )));
        }
        if a == -1 && segments(io.dims) != segments(r) {
            return Err(Error::invalid_arg(format!(
                "model '{m}', {what} '{name}': dims {:?} and reshape {r:?} differ around their variable-size dimensions",
                io.dims)));
        }
    }
    if io.shape_tensor && !plan {
        return Err(Error::invalid_arg(format!(
            "model '{m}', {what} '{name}': shape tensors are only supported for the TensorRT platform")));
    }
    if io.non_linear {
        if !plan {
            return Err(Error::invalid_arg(format!(
                "model '{m}', {what} '{name}': non-linear IO format is only supported for the TensorRT platform")));
        }
        if io.dims.len() != 3 {
            return Err(Error::invalid_arg(format!(
                "model '{m}', {what} '{name}': non-linear IO format requires 3 dims"
            )));
        }
    }
    Ok(())
}

/// The shape Triton core gives a response output (`InferenceResponse::Output::Reshape`): for an
/// output with a `reshape`, the batch dim (when the model batches) followed by the config's
/// `dims`, whose -1s take the values at the reshape's -1s, in order.
pub fn response_shape(cfg: &ModelConfig, name: &str, shape: Vec<i64>) -> Vec<i64> {
    let Some(o) = cfg.output.iter().find(|o| o.name == name) else {
        return shape;
    };
    let Some(r) = o.reshape.as_ref() else {
        return shape;
    };
    let batched = cfg.max_batch_size > 0;
    let offset = usize::from(batched);
    let mut vars = r
        .shape
        .iter()
        .enumerate()
        .filter(|(_, d)| **d == -1)
        .map(|(i, _)| shape.get(i + offset).copied().unwrap_or(-1))
        .collect::<std::collections::VecDeque<_>>();
    let mut out = Vec::with_capacity(o.dims.len() + 1);
    if batched {
        if let Some(b) = shape.first() {
            out.push(*b);
        }
    }
    for d in &o.dims {
        out.push(if *d == -1 {
            vars.pop_front().unwrap_or(-1)
        } else {
            *d
        });
    }
    out
}

/// Element count of a fully known shape.
pub fn element_count(shape: &[i64]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |a, d| (*d >= 0).then(|| a * *d as u64))
}

/// `TYPE_*` config enum value → `TRITONSERVER_DataType` (numerically equal).
pub fn config_dtype(dt: protobuf::EnumOrUnknown<DataType>) -> u32 {
    dt.value() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> ModelConfig {
        pbtxt::parse(text).unwrap()
    }

    /// Triton does not refuse an instance count <= 0: it replaces it with a preferred group's
    /// count or its default (see `normalize_instance_groups`), and so does the host.
    #[test]
    fn instance_counts_below_one_get_tritons_default() {
        for (backend, text, want) in [
            (
                "rusttrt",
                "instance_group [ { kind: KIND_CPU count: 0 } ]",
                1,
            ),
            (
                "rusttrt",
                "instance_group [ { kind: KIND_CPU count: -7 } ]",
                1,
            ),
            (
                "onnxruntime",
                "instance_group [ { kind: KIND_CPU count: -1 } ]",
                2,
            ),
            ("tensorflow", "instance_group [ { kind: KIND_CPU } ]", 2),
            (
                "onnxruntime",
                "instance_group [ { kind: KIND_CPU count: 5 } ]",
                5,
            ),
        ] {
            let mut c = cfg(text);
            normalize(&mut c, "m", backend, 0, &[]).unwrap();
            assert_eq!(c.instance_group[0].count, want, "{backend}: {text}");
        }
        // A preferred group of the same kind gives its count.
        let pref = [PreferredGroup {
            kind: TRITONSERVER_INSTANCEGROUPKIND_CPU,
            count: 4,
            device_ids: vec![],
        }];
        let mut c = cfg("instance_group [ { kind: KIND_CPU count: -2 } ]");
        normalize(&mut c, "m", "rusttrt", 0, &pref).unwrap();
        assert_eq!(c.instance_group[0].count, 4);
        // What reaches validation after normalization is never below 1; validation still
        // refuses one (a config changed behind normalization's back).
        c.instance_group[0].count = 0;
        let e = validate(&c, 0).unwrap_err();
        assert!(e.msg.contains("count >= 1"), "{}", e.msg);
    }

    #[test]
    fn normalize_fills_what_triton_fills() {
        let mut c = cfg(
            r#"max_batch_size: 8 dynamic_batching {} instance_group [ { count: 0 }, { kind: KIND_CPU count: 3 } ]"#,
        );
        normalize(&mut c, "m", "mock", 0, &[]).unwrap();
        assert_eq!(c.name, "m");
        assert_eq!(c.backend, "mock");
        assert_eq!(c.version_policy.latest().num_versions, 1);
        assert_eq!(c.instance_group[0].name, "m_0");
        assert_eq!(c.instance_group[0].count, 1);
        assert_eq!(
            c.instance_group[0].kind.enum_value_or_default(),
            GroupKind::KIND_CPU
        );
        assert_eq!(c.instance_group[1].name, "m_1");
        assert!(c.optimization.input_pinned_memory.enable);
        assert_eq!(c.dynamic_batching().preferred_batch_size, vec![8]);
        // No instance_group: the backend's first usable preferred group, named after the model.
        let pref = [
            PreferredGroup {
                kind: TRITONSERVER_INSTANCEGROUPKIND_GPU,
                count: 3,
                device_ids: vec![],
            },
            PreferredGroup {
                kind: TRITONSERVER_INSTANCEGROUPKIND_CPU,
                count: 2,
                device_ids: vec![],
            },
        ];
        let mut p = cfg("max_batch_size: 1");
        normalize(&mut p, "m", "mock", 0, &pref).unwrap();
        assert_eq!(p.instance_group.len(), 1);
        assert_eq!(p.instance_group[0].name, "m");
        assert_eq!(p.instance_group[0].count, 2);
        assert_eq!(
            p.instance_group[0].kind.enum_value_or_default(),
            GroupKind::KIND_CPU
        );
        let mut p = cfg("max_batch_size: 1");
        normalize(&mut p, "m", "mock", 2, &pref).unwrap();
        assert_eq!(p.instance_group[0].count, 3);
        assert_eq!(p.instance_group[0].gpus, vec![0, 1]);
        let mut ok_reshape = cfg(
            r#"name: "m" max_batch_size: 1 instance_group [ { kind: KIND_CPU } ]
            input [ { name: "I" data_type: TYPE_FP32 dims: [ 2, 4, -1, 6 ] reshape { shape: [ 8, -1, 1, 6 ] } } ]"#,
        );
        normalize(&mut ok_reshape, "m", "mock", 0, &[]).unwrap();
        validate(&ok_reshape, 0).unwrap();
        let mut bad = cfg(r#"name: "x""#);
        assert!(normalize(&mut bad, "m", "mock", 0, &[]).is_err());
        let mut other = cfg(r#"backend: "onnxruntime""#);
        assert!(normalize(&mut other, "m", "mock", 0, &[]).is_err());
    }

    #[test]
    fn set_config_rules() {
        let cur = cfg(
            r#"name: "m" dynamic_batching {} parameters { key: "a" value { string_value: "b" } }"#,
        );
        let mut new = cfg(
            r#"name: "zzz" max_batch_size: 4 dynamic_batching { max_queue_delay_microseconds: 5 } input [ { name: "I" data_type: TYPE_FP32 dims: [1] } ]"#,
        );
        let out = merge_set_config(&cur, new.clone()).unwrap();
        assert_eq!(out.name, "m");
        assert_eq!(out.max_batch_size, 4);
        assert_eq!(out.input.len(), 1);
        assert_eq!(out.parameters.len(), 1);
        // Same scheduler kind: Triton keeps the configured settings.
        assert_eq!(out.dynamic_batching().max_queue_delay_microseconds, 0);
        new.scheduling_choice = None;
        assert_eq!(
            merge_set_config(&cur, new).unwrap_err().code,
            TRITONSERVER_ERROR_INTERNAL
        );
        let none = cfg(r#"name: "m""#);
        let added = merge_set_config(&none, cfg("dynamic_batching {}")).unwrap();
        assert!(added.has_dynamic_batching());
    }

    #[test]
    fn triton_core_rules_for_scalars_zero_dims_and_batching() {
        let io = |mbs: i32, extra: &str, dims: &str| {
            cfg(&format!(
                r#"name: "m" max_batch_size: {mbs} {extra} instance_group [ {{ kind: KIND_CPU }} ]
                input [ {{ name: "I" data_type: TYPE_FP32 {dims} }} ]
                output [ {{ name: "O" data_type: TYPE_FP32 dims: [ 2 ] }} ]"#
            ))
        };
        let ok = |c: ModelConfig| {
            let mut c = c;
            normalize(&mut c, "m", "mock", 0, &[]).unwrap();
            validate(&c, 0)
        };
        // Accepted by Triton core: a [batch] tensor (dims [1], empty reshape) of a batching
        // model; a non-batching scalar written dims [1]; dynamic batching with max_batch_size 0;
        // no inputs at all.
        ok(io(4, "", "dims: [ 1 ] reshape { shape: [ ] }")).unwrap();
        ok(io(0, "", "dims: [ 1 ]")).unwrap();
        ok(io(0, "dynamic_batching { }", "dims: [ 1 ]")).unwrap();
        ok(cfg(r#"name: "m" instance_group [ { kind: KIND_CPU } ]
            output [ { name: "O" data_type: TYPE_INT64 dims: [ 2, 3 ] } ]"#))
        .unwrap();
        // A name listed twice is not Triton core's concern (the backend refuses it).
        ok(io(
            0,
            "",
            "dims: [ 1 ] } , { name: \"I\" data_type: TYPE_FP32 dims: [ 1 ]",
        ))
        .unwrap();
        // Refused by Triton core: an empty reshape of a non-batching model (scalars), an empty
        // reshape for dims that are not one element, a 0 in dims or reshape, no dims.
        for (mbs, dims) in [
            (0, "dims: [ 1 ] reshape { shape: [ ] }"),
            (4, "dims: [ -1 ] reshape { shape: [ ] }"),
            (4, "dims: [ 2 ] reshape { shape: [ ] }"),
            (0, "dims: [ 0 ]"),
            (0, "dims: [ 2, 0 ]"),
            (0, "dims: [ 1 ] reshape { shape: [ 0 ] }"),
            (0, ""),
        ] {
            assert!(ok(io(mbs, "", dims)).is_err(), "{mbs} {dims}");
        }
    }

    #[test]
    fn response_outputs_with_a_reshape_get_the_config_dims() {
        let c = cfg(r#"name: "m" max_batch_size: 4
            output [ { name: "S" data_type: TYPE_FP32 dims: [ 1 ] reshape { shape: [ ] } },
                     { name: "V" data_type: TYPE_FP32 dims: [ -1, 4 ] reshape { shape: [ -1, 2, 2 ] } },
                     { name: "P" data_type: TYPE_FP32 dims: [ 3 ] } ]"#);
        assert_eq!(response_shape(&c, "S", vec![3]), vec![3, 1]);
        assert_eq!(response_shape(&c, "S", vec![3, 1]), vec![3, 1]);
        assert_eq!(response_shape(&c, "V", vec![2, 5, 2, 2]), vec![2, 5, 4]);
        assert_eq!(response_shape(&c, "P", vec![2, 3]), vec![2, 3]);
        let n = cfg(r#"name: "m" output [ { name: "S" data_type: TYPE_FP32 dims: [ 1 ] } ]"#);
        assert_eq!(response_shape(&n, "S", vec![]), Vec::<i64>::new());
    }

    #[test]
    fn validate_rejects_bad_configs() {
        let ok = r#"name: "m" max_batch_size: 4 input [ { name: "I" data_type: TYPE_FP32 dims: [ -1 ] } ] output [ { name: "O" data_type: TYPE_FP32 dims: [ 2 ] } ] instance_group [ { name: "g" kind: KIND_CPU count: 1 } ]"#;
        validate(&cfg(ok), 0).unwrap();
        for bad in [
            ok.replace("TYPE_FP32 dims: [ -1 ]", "TYPE_INVALID dims: [ -1 ]"),
            ok.replace("dims: [ 2 ]", "dims: [ 0 ]"),
            ok.replace("dims: [ 2 ]", ""),
            ok.replace(
                "max_batch_size: 4",
                "max_batch_size: 4 dynamic_batching { preferred_batch_size: [ 8 ] }",
            ),
            ok.replace("KIND_CPU", "KIND_GPU"),
            ok.replace("dims: [ 2 ] }", "dims: [ 2 ] is_shape_tensor: true }"),
            ok.replace("dims: [ 2 ] }", "dims: [ 2 ] reshape { shape: [ 3 ] } }"),
            ok.replace(
                "dims: [ -1 ] }",
                "dims: [ -1, 4 ] reshape { shape: [ 2, -1, 2 ] } }",
            ),
            ok.replace("max_batch_size: 4", "max_batch_size: 0")
                .replace("dims: [ 2 ] }", "dims: [ 1 ] reshape { } }"),
            ok.replace("count: 1", "count: 1 profile: [ \"0\" ]"),
            ok.replace(
                "TYPE_FP32 dims: [ -1 ]",
                "TYPE_FP32 format: FORMAT_NCHW dims: [ -1 ]",
            ),
        ] {
            assert!(validate(&cfg(&bad), 0).is_err(), "{bad}");
        }
    }
}
