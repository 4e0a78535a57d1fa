//! Build options of the TensorRT engine and the optimization profiles derived from them. Pure
//! Rust: compiled and tested with or without TensorRT.
//!
//! Option keys (from `BuildSpec::options`; other keys belong to other layers and are ignored):
//!
//! | key | value | default |
//! |---|---|---|
//! | `max_workspace_size_bytes` | bytes for the workspace memory pool | TensorRT's default |
//! | `builder_optimization_level` | 0..=5 | TensorRT's default (3) |
//! | `trt_profile_min_shapes` / `_opt_` / `_max_` | ONNX Runtime's format `in1:1x3x224x224,in2:1x128`; an input named again starts another profile | derived from `max_batch_size` |
//! | `timing_cache` | bool: reuse and update a timing cache between builds | false |
//! | `strongly_typed` | bool: build exactly the ONNX types (TensorRT 10; always so on 11) | false |
//!
//! Profiles: one profile per entry of the explicit shape options; without them one profile
//! where every input whose only dynamic dim is the first gets batch min 1, opt = the largest
//! preferred batch size (or `max_batch_size`), max = `max_batch_size`. One profile, not one per
//! preferred size: each profile multiplies the build time and the runner would have to switch
//! profiles between batches of different sizes; TensorRT tunes for the opt point but any batch
//! in range runs.

use crate::error::{Error, Result};
use crate::types::shape_str;
use std::collections::BTreeMap;

pub const KEY_WORKSPACE: &str = "max_workspace_size_bytes";
pub const KEY_OPT_LEVEL: &str = "builder_optimization_level";
pub const KEY_PROFILE_MIN: &str = "trt_profile_min_shapes";
pub const KEY_PROFILE_OPT: &str = "trt_profile_opt_shapes";
pub const KEY_PROFILE_MAX: &str = "trt_profile_max_shapes";
pub const KEY_TIMING_CACHE: &str = "timing_cache";
pub const KEY_STRONGLY_TYPED: &str = "strongly_typed";

/// Min / opt / max shape of one input in one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeRange {
    pub min: Vec<i64>,
    pub opt: Vec<i64>,
    pub max: Vec<i64>,
}

/// One optimization profile: a range for every input that needs one, in network input order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    pub inputs: Vec<(String, ShapeRange)>,
}

impl Profile {
    pub fn get(&self, name: &str) -> Option<&ShapeRange> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }
}

/// The TensorRT-specific build options of a `BuildSpec`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrtOptions {
    pub workspace_bytes: Option<u64>,
    pub builder_optimization_level: Option<i32>,
    /// Explicit profiles from the `trt_profile_*_shapes` options (empty = derive).
    pub explicit_profiles: Vec<BTreeMap<String, ShapeRange>>,
    pub timing_cache: bool,
    pub strongly_typed: bool,
}

impl TrtOptions {
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<Self> {
        let get = |k: &str| options.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let workspace_bytes = get(KEY_WORKSPACE)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    Error::invalid_arg(format!(
                        "option '{KEY_WORKSPACE}': expected a number of bytes, got '{v}'"
                    ))
                })
            })
            .transpose()?;
        let builder_optimization_level = get(KEY_OPT_LEVEL)
            .map(|v| match v.parse::<i32>() {
                Ok(n) if (0..=5).contains(&n) => Ok(n),
                _ => Err(Error::invalid_arg(format!(
                    "option '{KEY_OPT_LEVEL}': expected 0..5, got '{v}'"
                ))),
            })
            .transpose()?;
        let explicit_profiles = explicit_profiles(
            get(KEY_PROFILE_MIN),
            get(KEY_PROFILE_OPT),
            get(KEY_PROFILE_MAX),
        )?;
        let timing_cache = get(KEY_TIMING_CACHE)
            .map(|v| parse_bool(KEY_TIMING_CACHE, v))
            .transpose()?;
        let strongly_typed = get(KEY_STRONGLY_TYPED)
            .map(|v| parse_bool(KEY_STRONGLY_TYPED, v))
            .transpose()?;
        Ok(TrtOptions {
            workspace_bytes,
            builder_optimization_level,
            explicit_profiles,
            timing_cache: timing_cache.unwrap_or(false),
            strongly_typed: strongly_typed.unwrap_or(false),
        })
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::invalid_arg(format!(
            "option '{key}': expected true or false, got '{v}'"
        ))),
    }
}

/// Parses ONNX Runtime's shape list format: `in1:1x3x224x224,in2:1x128`. Names may contain ':'
/// (the last ':' separates the dims); a scalar is written `name:` with no dims.
pub fn parse_shape_list(s: &str) -> Result<Vec<(String, Vec<i64>)>> {
    let mut out = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, dims) = entry.rsplit_once(':').ok_or_else(|| {
            Error::invalid_arg(format!(
                "shape '{entry}': expected 'name:d0xd1x...' (e.g. 'input:1x3x224x224')"
            ))
        })?;
        let name = name.trim();
        if name.is_empty() {
            return Err(Error::invalid_arg(format!(
                "shape '{entry}': the input name is empty"
            )));
        }
        let dims = dims.trim();
        let dims = if dims.is_empty() {
            Vec::new()
        } else {
            dims.split('x')
                .map(|d| match d.trim().parse::<i64>() {
                    Ok(n) if n >= 0 => Ok(n),
                    _ => Err(Error::invalid_arg(format!(
                        "shape '{entry}': dim '{d}' is not a non-negative integer"
                    ))),
                })
                .collect::<Result<Vec<_>>>()?
        };
        out.push((name.to_string(), dims));
    }
    Ok(out)
}

/// Groups a shape list into profiles: the k-th mention of an input goes into profile k.
fn group(key: &str, s: &str) -> Result<Vec<BTreeMap<String, Vec<i64>>>> {
    let mut profiles: Vec<BTreeMap<String, Vec<i64>>> = Vec::new();
    for (name, dims) in parse_shape_list(s).map_err(|e| e.context(format!("option '{key}'")))? {
        match profiles.iter_mut().find(|p| !p.contains_key(&name)) {
            Some(p) => {
                p.insert(name, dims);
            }
            None => profiles.push(BTreeMap::from([(name, dims)])),
        }
    }
    Ok(profiles)
}

fn explicit_profiles(
    min: Option<&str>,
    opt: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<BTreeMap<String, ShapeRange>>> {
    let (min, opt, max) = match (min, opt, max) {
        (None, None, None) => return Ok(Vec::new()),
        (Some(a), Some(b), Some(c)) => (
            group(KEY_PROFILE_MIN, a)?,
            group(KEY_PROFILE_OPT, b)?,
            group(KEY_PROFILE_MAX, c)?,
        ),
        _ => {
            return Err(Error::invalid_arg(format!(
                "options '{KEY_PROFILE_MIN}', '{KEY_PROFILE_OPT}' and '{KEY_PROFILE_MAX}' must be given together"
            )))
        }
    };
    if min.len() != opt.len() || min.len() != max.len() {
        return Err(Error::invalid_arg(format!(
            "the explicit shape options describe {} / {} / {} profiles (min / opt / max); they must agree",
            min.len(),
            opt.len(),
            max.len()
        )));
    }
    let mut out = Vec::new();
    for (k, ((mn, op), mx)) in min.into_iter().zip(opt).zip(max).enumerate() {
        let names_of = |m: &BTreeMap<String, Vec<i64>>| m.keys().cloned().collect::<Vec<_>>();
        if names_of(&mn) != names_of(&op) || names_of(&mn) != names_of(&mx) {
            return Err(Error::invalid_arg(format!(
                "profile {k}: the min / opt / max shape options name different inputs ({:?} / {:?} / {:?})",
                names_of(&mn),
                names_of(&op),
                names_of(&mx)
            )));
        }
        let mut prof = BTreeMap::new();
        for (name, mn) in mn {
            let range = ShapeRange {
                opt: op[&name].clone(),
                max: mx[&name].clone(),
                min: mn,
            };
            check_range(&name, k, &range)?;
            prof.insert(name, range);
        }
        out.push(prof);
    }
    Ok(out)
}

fn check_range(name: &str, profile: usize, r: &ShapeRange) -> Result<()> {
    let bad = || {
        Error::invalid_arg(format!(
            "profile {profile}, input '{name}': need min <= opt <= max with equal ranks, got min {} opt {} max {}",
            shape_str(&r.min),
            shape_str(&r.opt),
            shape_str(&r.max)
        ))
    };
    if r.min.len() != r.opt.len() || r.min.len() != r.max.len() {
        return Err(bad());
    }
    for i in 0..r.min.len() {
        if !(r.min[i] <= r.opt[i] && r.opt[i] <= r.max[i]) {
            return Err(bad());
        }
    }
    Ok(())
}

/// A network input as the TensorRT parser sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetInput {
    pub name: String,
    /// -1 = dynamic.
    pub dims: Vec<i64>,
    pub is_shape_tensor: bool,
}

/// The batch size to tune for: the largest preferred size within `1..=max_batch`, else
/// `max_batch`.
pub fn opt_batch(max_batch: usize, preferred: &[usize]) -> usize {
    preferred
        .iter()
        .copied()
        .filter(|&b| b >= 1 && b <= max_batch)
        .max()
        .unwrap_or(max_batch)
}

/// The optimization profiles of a build (see the module docs). Empty when no input is dynamic
/// and no explicit profile was given.
pub fn derive_profiles(
    inputs: &[NetInput],
    max_batch: usize,
    preferred: &[usize],
    explicit: &[BTreeMap<String, ShapeRange>],
) -> Result<Vec<Profile>> {
    for (k, p) in explicit.iter().enumerate() {
        if let Some(unknown) = p.keys().find(|n| !inputs.iter().any(|i| &i.name == *n)) {
            let known: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(Error::invalid_arg(format!(
                "profile {k}: the shape options name input '{unknown}', which the model does not have (inputs: {})",
                known.join(", ")
            )));
        }
    }
    let batch = i64::try_from(max_batch)
        .map_err(|_| Error::invalid_arg(format!("max_batch_size {max_batch} is too large")))?;
    let opt = opt_batch(max_batch, preferred) as i64;
    let n_profiles = explicit.len().max(1);
    let mut profiles = vec![Profile::default(); n_profiles];
    for input in inputs {
        let dynamic = input.dims.iter().any(|&d| d < 0);
        if input.is_shape_tensor {
            return Err(Error::unsupported(format!(
                "input '{}' is a shape tensor (its values decide shapes); the tensorrt engine does not support shape-tensor inputs",
                input.name
            )));
        }
        if batch > 0 && input.dims.first().is_some_and(|&d| d >= 0) {
            return Err(Error::invalid_arg(format!(
                "input '{}' has a fixed first dim ({}), so the engine cannot take batches of 1..{max_batch}; \
                 export the ONNX with a dynamic batch dim or set max_batch_size to 0",
                input.name,
                shape_str(&input.dims)
            )));
        }
        for (k, profile) in profiles.iter_mut().enumerate() {
            let range = match explicit.get(k).and_then(|p| p.get(&input.name)) {
                Some(r) => {
                    check_explicit(input, k, r, batch)?;
                    r.clone()
                }
                None if !dynamic => continue,
                None if batch > 0 && input.dims[1..].iter().all(|&d| d >= 0) => {
                    let with_batch = |b: i64| {
                        let mut v = input.dims.clone();
                        v[0] = b;
                        v
                    };
                    ShapeRange { min: with_batch(1), opt: with_batch(opt), max: with_batch(batch) }
                }
                None => {
                    return Err(Error::invalid_arg(format!(
                        "input '{}' has dims {} with dynamic dims {}; give their ranges with the options \
                         '{KEY_PROFILE_MIN}', '{KEY_PROFILE_OPT}' and '{KEY_PROFILE_MAX}' (e.g. '{}:{}')",
                        input.name,
                        shape_str(&input.dims),
                        if batch > 0 { "besides the batch dim" } else { "and max_batch_size is 0" },
                        input.name,
                        input.dims.iter().map(|d| if *d < 0 { "N".to_string() } else { d.to_string() })
                            .collect::<Vec<_>>()
                            .join("x")
                    )))
                }
            };
            profile.inputs.push((input.name.clone(), range));
        }
    }
    if explicit.is_empty() && profiles[0].inputs.is_empty() {
        return Ok(Vec::new());
    }
    Ok(profiles)
}

fn check_explicit(input: &NetInput, k: usize, r: &ShapeRange, batch: i64) -> Result<()> {
    let name = &input.name;
    if r.min.len() != input.dims.len() {
        return Err(Error::invalid_arg(format!(
            "profile {k}, input '{name}': the shape options give rank {} but the model's input has dims {}",
            r.min.len(),
            shape_str(&input.dims)
        )));
    }
    for (i, &d) in input.dims.iter().enumerate() {
        if d >= 0 && (r.min[i] != d || r.max[i] != d || r.opt[i] != d) {
            return Err(Error::invalid_arg(format!(
                "profile {k}, input '{name}': dim {i} is fixed to {d} in the model, but the shape options give min {} opt {} max {}",
                shape_str(&r.min),
                shape_str(&r.opt),
                shape_str(&r.max)
            )));
        }
    }
    if batch > 0 && (r.min[0] > 1 || r.max[0] < batch) {
        return Err(Error::invalid_arg(format!(
            "profile {k}, input '{name}': the batch range {}..{} of the shape options does not cover 1..{batch} (max_batch_size)",
            r.min[0], r.max[0]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn input(name: &str, dims: &[i64]) -> NetInput {
        NetInput {
            name: name.into(),
            dims: dims.to_vec(),
            is_shape_tensor: false,
        }
    }

    #[test]
    fn shape_list_parses_ort_format() {
        let v = parse_shape_list("in1:1x3x224x224, in2:1x128,scalar:").unwrap();
        assert_eq!(
            v,
            vec![
                ("in1".to_string(), vec![1, 3, 224, 224]),
                ("in2".to_string(), vec![1, 128]),
                ("scalar".to_string(), vec![]),
            ]
        );
        // The last ':' splits, so names may hold ':'.
        assert_eq!(
            parse_shape_list("a:b:2x3").unwrap(),
            vec![("a:b".to_string(), vec![2, 3])]
        );
        assert!(parse_shape_list("").unwrap().is_empty());
    }

    #[test]
    fn shape_list_rejects_bad_entries() {
        for bad in ["in1", ":1x2", "in1:1xx2", "in1:1x-1", "in1:axb"] {
            let e = parse_shape_list(bad).unwrap_err();
            assert_eq!(e.code(), crate::error::ErrorCode::InvalidArg, "{bad}");
            assert!(e.to_string().contains("shape '"), "{bad}: {e}");
        }
    }

    #[test]
    fn options_are_parsed() {
        let o = TrtOptions::from_options(&opts(&[
            (KEY_WORKSPACE, "1073741824"),
            (KEY_OPT_LEVEL, "5"),
            (KEY_TIMING_CACHE, "TRUE"),
            (KEY_STRONGLY_TYPED, "0"),
            ("unrelated_key", "whatever"),
        ]))
        .unwrap();
        assert_eq!(o.workspace_bytes, Some(1 << 30));
        assert_eq!(o.builder_optimization_level, Some(5));
        assert!(o.timing_cache);
        assert!(!o.strongly_typed);
        assert!(o.explicit_profiles.is_empty());
        assert_eq!(
            TrtOptions::from_options(&BTreeMap::new()).unwrap(),
            TrtOptions::default()
        );
    }

    #[test]
    fn bad_option_values_name_the_key() {
        for (k, v) in [
            (KEY_WORKSPACE, "1G"),
            (KEY_OPT_LEVEL, "6"),
            (KEY_OPT_LEVEL, "-1"),
            (KEY_TIMING_CACHE, "maybe"),
        ] {
            let e = TrtOptions::from_options(&opts(&[(k, v)])).unwrap_err();
            assert!(
                e.to_string().contains(k) && e.to_string().contains(v),
                "{e}"
            );
        }
    }

    #[test]
    fn explicit_profiles_group_repeated_names() {
        let o = TrtOptions::from_options(&opts(&[
            (KEY_PROFILE_MIN, "x:1x3,y:1,x:8x3"),
            (KEY_PROFILE_OPT, "x:4x3,y:2,x:16x3"),
            (KEY_PROFILE_MAX, "x:8x3,y:4,x:32x3"),
        ]))
        .unwrap();
        assert_eq!(o.explicit_profiles.len(), 2);
        assert_eq!(
            o.explicit_profiles[0]["x"],
            ShapeRange {
                min: vec![1, 3],
                opt: vec![4, 3],
                max: vec![8, 3]
            }
        );
        assert_eq!(o.explicit_profiles[0]["y"].max, vec![4]);
        assert_eq!(o.explicit_profiles[1]["x"].opt, vec![16, 3]);
        assert!(!o.explicit_profiles[1].contains_key("y"));
    }

    #[test]
    fn explicit_profiles_must_be_consistent() {
        let cases: [(&str, &str, &str, &str); 4] = [
            ("x:1x3", "x:4x3", "", "together"),
            ("x:1x3", "x:4x3", "x:2x3", "min <= opt <= max"),
            ("x:1x3", "x:1x3", "x:1x3x1", "ranks"),
            ("x:1", "y:1", "x:1", "different inputs"),
        ];
        for (mn, op, mx, want) in cases {
            let mut kv = vec![(KEY_PROFILE_MIN, mn), (KEY_PROFILE_OPT, op)];
            if !mx.is_empty() {
                kv.push((KEY_PROFILE_MAX, mx));
            }
            let e = TrtOptions::from_options(&opts(&kv)).unwrap_err();
            assert!(e.to_string().contains(want), "{mn} {op} {mx}: {e}");
        }
    }

    #[test]
    fn opt_batch_is_largest_preferred_in_range() {
        assert_eq!(opt_batch(16, &[4, 8]), 8);
        assert_eq!(opt_batch(16, &[]), 16);
        assert_eq!(opt_batch(8, &[4, 32]), 4);
        assert_eq!(opt_batch(8, &[0]), 8);
    }

    #[test]
    fn batch_profile_is_derived() {
        let inputs = [input("img", &[-1, 3, 224, 224]), input("scale", &[-1, 1])];
        let p = derive_profiles(&inputs, 32, &[4, 16], &[]).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].get("img").unwrap(),
            &ShapeRange {
                min: vec![1, 3, 224, 224],
                opt: vec![16, 3, 224, 224],
                max: vec![32, 3, 224, 224]
            }
        );
        assert_eq!(p[0].get("scale").unwrap().max, vec![32, 1]);
        assert_eq!(p[0].inputs[0].0, "img");
    }

    #[test]
    fn static_model_needs_no_profile() {
        let p = derive_profiles(&[input("x", &[1, 4])], 0, &[], &[]).unwrap();
        assert!(p.is_empty());
    }

    #[test]
    fn fixed_batch_dim_is_refused_when_batching() {
        let e = derive_profiles(&[input("x", &[1, 4])], 8, &[], &[]).unwrap_err();
        assert!(
            e.to_string().contains("'x'") && e.to_string().contains("fixed first dim"),
            "{e}"
        );
    }

    #[test]
    fn other_dynamic_dims_need_explicit_shapes() {
        let inputs = [input("ids", &[-1, -1])];
        let e = derive_profiles(&inputs, 8, &[], &[]).unwrap_err();
        assert!(
            e.to_string().contains("'ids'") && e.to_string().contains(KEY_PROFILE_MIN),
            "{e}"
        );
        assert!(e.to_string().contains("ids:NxN"), "{e}");

        let o = TrtOptions::from_options(&opts(&[
            (KEY_PROFILE_MIN, "ids:1x1"),
            (KEY_PROFILE_OPT, "ids:4x64"),
            (KEY_PROFILE_MAX, "ids:8x512"),
        ]))
        .unwrap();
        let p = derive_profiles(&inputs, 8, &[], &o.explicit_profiles).unwrap();
        assert_eq!(p[0].get("ids").unwrap().max, vec![8, 512]);
    }

    #[test]
    fn explicit_shapes_are_checked_against_the_model() {
        let inputs = [input("x", &[-1, 3]), input("y", &[-1, 2])];
        let exp = |mn: Vec<i64>, op: Vec<i64>, mx: Vec<i64>| {
            vec![BTreeMap::from([(
                "x".to_string(),
                ShapeRange {
                    min: mn,
                    opt: op,
                    max: mx,
                },
            )])]
        };
        // Wrong fixed dim.
        let e =
            derive_profiles(&inputs, 8, &[], &exp(vec![1, 4], vec![2, 4], vec![8, 4])).unwrap_err();
        assert!(e.to_string().contains("fixed to 3"), "{e}");
        // Rank mismatch.
        let e = derive_profiles(&inputs, 8, &[], &exp(vec![1], vec![2], vec![8])).unwrap_err();
        assert!(e.to_string().contains("rank 1"), "{e}");
        // Max below max_batch_size.
        let e =
            derive_profiles(&inputs, 8, &[], &exp(vec![1, 3], vec![2, 3], vec![4, 3])).unwrap_err();
        assert!(e.to_string().contains("does not cover 1..8"), "{e}");
        // Unknown input.
        let bad = vec![BTreeMap::from([(
            "z".to_string(),
            ShapeRange {
                min: vec![1],
                opt: vec![1],
                max: vec![1],
            },
        )])];
        let e = derive_profiles(&inputs, 8, &[], &bad).unwrap_err();
        assert!(
            e.to_string().contains("'z'") && e.to_string().contains("x, y"),
            "{e}"
        );
        // Good: x explicit, y derived from the batch.
        let p =
            derive_profiles(&inputs, 8, &[2], &exp(vec![1, 3], vec![4, 3], vec![8, 3])).unwrap();
        assert_eq!(p[0].get("x").unwrap().opt, vec![4, 3]);
        assert_eq!(p[0].get("y").unwrap().opt, vec![2, 2]);
    }

    #[test]
    fn shape_tensors_are_refused() {
        let mut i = input("shape", &[2]);
        i.is_shape_tensor = true;
        let e = derive_profiles(&[i], 0, &[], &[]).unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorCode::Unsupported);
    }
}
