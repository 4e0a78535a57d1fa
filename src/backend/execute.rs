//! Execute: the requests of one call become one batch — gather each input from all its buffers
//! into one contiguous tensor, run, scatter the outputs into each request's response.
//!
//! Every request ends with exactly one FINAL response (success or its own error) and one
//! release, with its statistics reported before the release. A bad request gets its own
//! INVALID_ARG response and the rest of the batch is served.

use super::gpu::{copy_gpu_to_host, copy_host_to_gpu, GpuIo};
use super::model::InstanceState;
use crate::engine::{MemLoc, TensorOut, TensorRef};
use crate::error::{Error, ErrorCode, Result};
use crate::log;
use crate::triton::{now_ns, InputBuffer, ModelInstance, Request, Response};
use crate::types::{
    byte_count, bytes_element_count, bytes_offset, element_count, shape_str, DataType,
};
use std::marker::PhantomData;
use triton_abi::{
    TRITONSERVER_MEMORY_CPU, TRITONSERVER_MEMORY_CPU_PINNED, TRITONSERVER_MEMORY_GPU,
};

/// One input of one request, validated.
struct ReqInput {
    /// Shape as the request gave it (batch dim first when batching).
    shape: Vec<i64>,
    buffers: Vec<InputBuffer>,
    /// A host copy the backend made of the input (BOOL values normalized to 0/1); when
    /// non-empty, `buffers` is one host buffer pointing into it. Its heap block does not move
    /// when the `ReqInput` does.
    _owned: Vec<u8>,
}

/// One request and what happens to it.
struct Slot {
    request: Request,
    response: Option<Response>,
    error: Option<Error>,
    batch: usize,
    /// Inputs in config order.
    inputs: Vec<ReqInput>,
    outputs: Vec<String>,
}

fn host_memory(mt: u32) -> bool {
    mt == TRITONSERVER_MEMORY_CPU || mt == TRITONSERVER_MEMORY_CPU_PINNED
}

/// Runs one Execute call. Never fails: every failure becomes an error response.
pub fn execute(inst: &mut InstanceState, instance: ModelInstance, requests: Vec<Request>) {
    let exec_start = now_ns();
    let model = inst.model.0.clone();
    // Triton does not set the CUDA device on the instance thread: do it every time.
    if let Some(gpu) = inst.gpu.as_ref() {
        if let Err(e) = gpu.device.bind_to_thread() {
            log!(
                Error,
                "model '{}': making device {} current: {e}",
                model.name,
                gpu.ordinal()
            );
        }
    }

    let mut slots: Vec<Slot> = requests
        .into_iter()
        .map(|request| {
            let (response, error) = match Response::new(&request) {
                Ok(r) => (Some(r), None),
                Err(e) => {
                    log!(
                        Error,
                        "model '{}': cannot create a response for request '{}': {e}",
                        model.name,
                        request.id()
                    );
                    (None, Some(e))
                }
            };
            Slot {
                request,
                response,
                error,
                batch: 0,
                inputs: Vec::new(),
                outputs: Vec::new(),
            }
        })
        .collect();

    // Parse, batch, run and scatter. A panic in here becomes an error for every request still
    // open, so that each one still gets its response and release below.
    let work = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_all(inst, &mut slots)));
    let ran = match work {
        Ok(r) => r,
        Err(p) => {
            let e = Error::from_panic("execute", p).context(format!("model '{}'", model.name));
            log!(Error, "{e}");
            for s in slots.iter_mut() {
                s.error.get_or_insert_with(|| e.clone());
            }
            None
        }
    };

    // Send every response: success, or the request's own error. An error response carries no
    // output (a Triton rule): a response that got outputs before the failure (scatter, the
    // final stream sync, a panic) is deleted and a fresh one carries the error.
    for s in slots.iter_mut() {
        if s.error.is_some() && s.response.is_some() {
            s.response = None;
            s.response = Response::new(&s.request).ok();
        }
        if let Some(r) = s.response.take() {
            if let Err(e) = s.request.respond(r, s.error.as_ref()) {
                log!(
                    Error,
                    "model '{}': sending the response of request '{}' failed: {e}",
                    model.name,
                    s.request.id()
                );
            }
        }
    }
    let exec_end = now_ns();
    let (cs, ce) = ran.map(|(a, b, _)| (a, b)).unwrap_or((exec_end, exec_end));
    for s in slots {
        let ok = s.error.is_none();
        if let Err(e) = instance.report_statistics(&s.request, ok, [exec_start, cs, ce, exec_end]) {
            log!(
                Error,
                "model '{}': reporting request statistics failed: {e}",
                model.name
            );
        }
        if let Err((_req, e)) = s.request.release() {
            log!(
                Error,
                "model '{}': releasing a request failed: {e}",
                model.name
            );
        }
    }
    if let Some((cs, ce, total)) = ran {
        if let Err(e) = instance.report_batch_statistics(total, [exec_start, cs, ce, exec_end]) {
            log!(
                Error,
                "model '{}': reporting batch statistics failed: {e}",
                model.name
            );
        }
    }
}

/// Validates every request, forms the batch(es) and runs them; returns the compute timestamps
/// and the batch size of what ran.
fn run_all(inst: &mut InstanceState, slots: &mut [Slot]) -> Option<(u64, u64, u64)> {
    for s in slots.iter_mut().filter(|s| s.error.is_none()) {
        if let Err(e) = parse_request(inst, s) {
            let id = s.request.id();
            let who = if id.is_empty() {
                String::new()
            } else {
                format!("request '{id}': ")
            };
            s.error = Some(
                Error::new(e.code(), format!("{who}{e}"))
                    .context(format!("model '{}'", inst.model.0.name)),
            );
        }
    }

    let mut ran = None;
    let max_batch_size = inst.model.0.config.max_batch_size;
    if max_batch_size == 0 {
        // No batch dimension: each request is a whole tensor and runs on its own.
        // Statistics then cover all of them as one execution of `count` requests.
        let mut count = 0u64;
        for i in 0..slots.len() {
            if slots[i].error.is_none() {
                let (cs, ce) = run_batch(inst, slots, &[i]);
                count += 1;
                let start = ran.map(|(s, _, _)| s).unwrap_or(cs);
                ran = Some((start, ce, count));
            }
        }
    } else {
        let batch: Vec<usize> = group_batch(inst, slots);
        if !batch.is_empty() {
            let total: usize = batch.iter().map(|&i| slots[i].batch).sum();
            let (cs, ce) = run_batch(inst, slots, &batch);
            ran = Some((cs, ce, total as u64));
        }
    }

    ran
}

/// Validates a request's inputs and outputs against the config.
fn parse_request(inst: &InstanceState, s: &mut Slot) -> Result<()> {
    let model = &inst.model.0;
    let cfg = &model.config;
    if s.request.is_cancelled()? {
        return Err(Error::new(
            ErrorCode::Cancelled,
            "the request was cancelled",
        ));
    }
    let names = s.request.input_names()?;
    for n in &names {
        if !cfg.inputs.iter().any(|c| &c.name == n) {
            let known: Vec<&str> = cfg.inputs.iter().map(|c| c.name.as_str()).collect();
            return Err(Error::invalid_arg(format!(
                "unexpected input '{n}' (the model's inputs: {})",
                known.join(", ")
            )));
        }
    }
    let mut batch: Option<usize> = None;
    for c in &cfg.inputs {
        let Some(input) = s.request.input(&c.name)? else {
            return Err(Error::invalid_arg(format!(
                "input '{}' is missing ({} {})",
                c.name,
                c.dtype.config_name(),
                shape_str(&cfg.engine_shape(c))
            )));
        };
        let what = |m: String| Error::invalid_arg(format!("input '{}': {m}", c.name));
        match input.dtype {
            Some(d) if d == c.dtype => {}
            Some(d) => {
                return Err(what(format!(
                    "data type {d} but the model expects {}",
                    c.dtype
                )))
            }
            None => {
                return Err(what(format!(
                    "invalid data type value {} (expected {})",
                    input.raw_dtype, c.dtype
                )))
            }
        }
        let shape = input.shape.clone();
        let (b, rest) = if cfg.max_batch_size > 0 {
            match shape.split_first() {
                Some((&b, rest)) if b >= 0 => (b as usize, rest.to_vec()),
                _ => {
                    return Err(what(format!(
                        "shape {} has no batch dimension",
                        shape_str(&shape)
                    )))
                }
            }
        } else {
            (1, shape.clone())
        };
        let matches = |dims: &[i64]| {
            dims.len() == rest.len()
                && dims
                    .iter()
                    .zip(&rest)
                    .all(|(&d, &r)| r >= 0 && (d == -1 || d == r))
        };
        if !matches(&c.dims) && !c.reshape.as_deref().is_some_and(matches) {
            let want = if cfg.max_batch_size > 0 {
                format!("[batch]+{}", shape_str(&c.dims))
            } else {
                shape_str(&c.dims)
            };
            return Err(what(format!(
                "shape {} does not match the model's {want}",
                shape_str(&shape)
            )));
        }
        if cfg.max_batch_size > 0 && b > cfg.max_batch_size {
            return Err(what(format!(
                "batch size {b} exceeds max_batch_size {}",
                cfg.max_batch_size
            )));
        }
        if let Some(prev) = batch {
            if prev != b {
                return Err(what(format!(
                    "batch size {b} differs from the other inputs' {prev}"
                )));
            }
        }
        batch = Some(b);
        let mut buffers = Vec::with_capacity(input.buffer_count.min(1024) as usize);
        let mut total = 0usize;
        for i in 0..input.buffer_count {
            let buf = input.buffer(i, (TRITONSERVER_MEMORY_CPU, 0))?;
            total = total.checked_add(buf.len).ok_or_else(|| {
                what(format!(
                    "the sizes of its {} buffers overflow",
                    input.buffer_count
                ))
            })?;
            buffers.push(buf);
        }
        let owned = if c.dtype == DataType::Bytes {
            check_bytes_input(&shape, &mut buffers, total, input.byte_size)
                .map_err(|e| e.context(format!("input '{}'", c.name)))?
        } else {
            let expected = byte_count(&shape, c.dtype).ok_or_else(|| {
                what(format!(
                    "shape {} of {} is too large: its byte size overflows",
                    shape_str(&shape),
                    c.dtype
                ))
            })?;
            if total != expected || usize::try_from(input.byte_size) != Ok(expected) {
                return Err(what(format!(
                    "{} bytes ({} in buffers) for shape {} of {} (expected {expected})",
                    input.byte_size,
                    total,
                    shape_str(&shape),
                    c.dtype
                )));
            }
            if c.dtype == DataType::Bool {
                normalize_bool(&mut buffers)
                    .map_err(|e| e.context(format!("input '{}'", c.name)))?
            } else {
                Vec::new()
            }
        };
        s.inputs.push(ReqInput {
            shape,
            buffers,
            _owned: owned,
        });
    }
    s.batch = batch.unwrap_or(1);
    let outs = s.request.output_names()?;
    for o in &outs {
        if !cfg.outputs.iter().any(|c| &c.name == o) {
            let known: Vec<&str> = cfg.outputs.iter().map(|c| c.name.as_str()).collect();
            return Err(Error::invalid_arg(format!(
                "unknown requested output '{o}' (the model's outputs: {})",
                known.join(", ")
            )));
        }
    }
    // Only what the request asks for, each once. Triton core fills the list with every output
    // when the client names none and keeps it as a set, so an empty list or a repeated name
    // never comes from Triton; answering with outputs that were not requested, or twice, would
    // break its rules on responses (both found by tests/fuzz.rs).
    if outs.is_empty() {
        return Err(Error::invalid_arg(format!(
            "the request asks for no output (the model's outputs: {})",
            cfg.outputs
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut seen = std::collections::HashSet::new();
    s.outputs = outs
        .into_iter()
        .filter(|o| seen.insert(o.clone()))
        .collect();
    Ok(())
}

/// BOOL inputs reach the engine as 0 or 1 only: ONNX Runtime and TensorRT read a bool byte
/// other than 0/1 as undefined (an `Identity` passes 2 through; a `Not` of 2 is 253). When a
/// buffer holds another value (or sits in GPU memory, where it cannot be looked at in place),
/// the input is copied to host memory with every non-zero byte made 1, and `buffers` becomes
/// one host buffer over the returned copy (which the caller keeps alive). Valid inputs stay
/// zero-copy (an empty vector is returned).
fn normalize_bool(buffers: &mut Vec<InputBuffer>) -> Result<Vec<u8>> {
    let needs_copy = buffers.iter().any(|b| {
        !host_memory(b.memory_type)
            // SAFETY: Triton guarantees `len` readable bytes at `ptr` in host memory until the
            // request is released (after the run).
            || (b.len > 0 && unsafe { std::slice::from_raw_parts(b.ptr, b.len) }.iter().any(|&v| v > 1))
    });
    if !needs_copy {
        return Ok(Vec::new());
    }
    let total: usize = buffers.iter().map(|b| b.len).sum();
    let mut owned = host_copy(buffers, total)?;
    for v in owned.iter_mut() {
        *v = u8::from(*v != 0);
    }
    *buffers = vec![host_buffer(&owned)];
    Ok(owned)
}

/// One host copy of all of an input's buffers, wherever they are (GPU buffers are copied
/// device-to-host), in order.
fn host_copy(buffers: &[InputBuffer], total: usize) -> Result<Vec<u8>> {
    let mut owned = Vec::new();
    owned
        .try_reserve_exact(total)
        .map_err(|e| Error::unavailable(format!("cannot allocate {total} bytes: {e}")))?;
    for b in buffers {
        if host_memory(b.memory_type) {
            if b.len > 0 {
                // SAFETY: Triton guarantees `len` readable bytes at `ptr` in host memory until
                // the request is released (after the run).
                owned.extend_from_slice(unsafe { std::slice::from_raw_parts(b.ptr, b.len) });
            }
        } else {
            copy_gpu_to_host(&mut owned, b.ptr, b.len, b.memory_type_id)?;
        }
    }
    Ok(owned)
}

/// A host-memory input buffer over `owned` (which the caller keeps alive while it is used).
fn host_buffer(owned: &[u8]) -> InputBuffer {
    InputBuffer {
        ptr: owned.as_ptr(),
        len: owned.len(),
        memory_type: TRITONSERVER_MEMORY_CPU,
        memory_type_id: 0,
    }
}

/// A BYTES input (Triton's STRING): its buffers must hold exactly as many length-prefixed
/// elements as its shape has, each complete, and as many bytes as the request says. Buffers in
/// GPU memory are copied to host memory first (ONNX Runtime keeps string tensors on the CPU):
/// `buffers` then becomes one host buffer over the returned copy, which the caller keeps alive.
/// Malformed data is INVALID_ARG naming what is wrong; the caller adds the input's name.
fn check_bytes_input(
    shape: &[i64],
    buffers: &mut Vec<InputBuffer>,
    total: usize,
    byte_size: u64,
) -> Result<Vec<u8>> {
    if usize::try_from(byte_size) != Ok(total) {
        return Err(Error::invalid_arg(format!(
            "{byte_size} bytes of BYTES data, but its buffers hold {total}"
        )));
    }
    let elements = element_count(shape).ok_or_else(|| {
        Error::invalid_arg(format!(
            "shape {} is too large: its element count overflows",
            shape_str(shape)
        ))
    })?;
    let owned = if buffers.iter().all(|b| host_memory(b.memory_type)) {
        Vec::new()
    } else {
        let owned = host_copy(buffers, total)?;
        *buffers = vec![host_buffer(&owned)];
        owned
    };
    let chunks = buffers.iter().map(|b| {
        if b.len == 0 {
            &[][..]
        } else {
            // SAFETY: every buffer is now in host memory with `len` readable bytes at `ptr`
            // (Triton's until the request is released, or the copy above, kept by the caller).
            unsafe { std::slice::from_raw_parts(b.ptr, b.len) }
        }
    });
    let found = bytes_element_count(chunks).map_err(|e| {
        Error::invalid_arg(format!(
            "malformed BYTES data for shape {} ({total} bytes): {e}",
            shape_str(shape)
        ))
    })?;
    if found != elements {
        return Err(Error::invalid_arg(format!(
            "{found} string elements for shape {} (expected {elements})",
            shape_str(shape)
        )));
    }
    Ok(owned)
}

/// Picks the requests that form one batch: all valid ones whose non-batch shapes equal the
/// first's and that fit under max_batch_size; the others get an error.
fn group_batch(inst: &InstanceState, slots: &mut [Slot]) -> Vec<usize> {
    let max = inst.model.0.config.max_batch_size;
    let mut chosen = Vec::new();
    let mut total = 0usize;
    let mut first_shapes: Option<Vec<Vec<i64>>> = None;
    for (i, s) in slots.iter_mut().enumerate() {
        if s.error.is_some() {
            continue;
        }
        let shapes: Vec<Vec<i64>> = s.inputs.iter().map(|x| x.shape[1..].to_vec()).collect();
        match &first_shapes {
            None => first_shapes = Some(shapes),
            Some(f) if *f != shapes => {
                s.error = Some(Error::invalid_arg(format!(
                    "request '{}': input shapes {:?} differ from the rest of the batch {:?}",
                    s.request.id(),
                    shapes,
                    f
                )));
                continue;
            }
            _ => {}
        }
        if total + s.batch > max {
            s.error = Some(Error::invalid_arg(format!(
                "request '{}': the batch would grow to {} > max_batch_size {max}",
                s.request.id(),
                total + s.batch
            )));
            continue;
        }
        total += s.batch;
        chosen.push(i);
    }
    chosen
}

/// Gathers the batch's chunks of one input into a host buffer; a single host chunk is used in
/// place.
fn gather_host<'a>(
    dst: &mut Vec<u8>,
    inputs: impl Iterator<Item = &'a ReqInput>,
    bytes: usize,
) -> Result<(*const u8, usize, MemLoc)> {
    let inputs: Vec<&ReqInput> = inputs.collect();
    if let [one] = inputs.as_slice() {
        if let [b] = one.buffers.as_slice() {
            if host_memory(b.memory_type) {
                return Ok((b.ptr, b.len, MemLoc::Host));
            }
        }
    }
    dst.clear();
    dst.reserve(bytes);
    for x in inputs {
        for b in &x.buffers {
            if host_memory(b.memory_type) {
                // SAFETY: Triton guarantees `len` readable bytes at `ptr` in host memory for as
                // long as the request is unreleased (it is released after the run).
                dst.extend_from_slice(unsafe { std::slice::from_raw_parts(b.ptr, b.len) });
            } else {
                copy_gpu_to_host(dst, b.ptr, b.len, b.memory_type_id)?;
            }
        }
    }
    Ok((dst.as_ptr(), dst.len(), MemLoc::Host))
}

/// Gathers, runs and scatters one batch; returns (compute_start, compute_end).
fn run_batch(inst: &mut InstanceState, slots: &mut [Slot], batch: &[usize]) -> (u64, u64) {
    let model = inst.model.0.clone();
    let cfg = &model.config;
    let total: usize = batch.iter().map(|&i| slots[i].batch).sum();
    let fail_all = |slots: &mut [Slot], e: &Error| {
        for &i in batch {
            slots[i].error.get_or_insert_with(|| e.clone());
        }
    };

    // Gather: one contiguous tensor per input, in device memory for GPU instances (zero copy
    // for a single chunk already where the engine wants it), in host memory otherwise and for
    // BYTES (the requests' elements back to back form the batch's BYTES tensor).
    let mut shapes: Vec<Vec<i64>> = Vec::with_capacity(cfg.inputs.len());
    let mut placed: Vec<(*const u8, usize, MemLoc)> = Vec::with_capacity(cfg.inputs.len());
    for (k, c) in cfg.inputs.iter().enumerate() {
        let first = &slots[batch[0]].inputs[k];
        let mut shape = if cfg.max_batch_size > 0 {
            let mut s = vec![total as i64];
            s.extend_from_slice(&first.shape[1..]);
            s
        } else {
            first.shape.clone()
        };
        if let Some(r) = &c.reshape {
            if r.iter().all(|&d| d >= 0) {
                shape = if cfg.max_batch_size > 0 {
                    std::iter::once(total as i64)
                        .chain(r.iter().copied())
                        .collect()
                } else {
                    r.clone()
                };
            }
        }
        shapes.push(shape);
        let bytes: usize = batch
            .iter()
            .map(|&i| {
                slots[i].inputs[k]
                    .buffers
                    .iter()
                    .map(|b| b.len)
                    .sum::<usize>()
            })
            .sum();
        // BYTES stay in host memory, GPU instance or not: ONNX Runtime keeps string tensors
        // on the CPU.
        let on_gpu = inst.gpu.as_mut().filter(|_| c.dtype != DataType::Bytes);
        let r = if let Some(gpu) = on_gpu {
            let chunks: Vec<InputBuffer> = batch
                .iter()
                .flat_map(|&i| slots[i].inputs[k].buffers.iter().copied())
                .collect();
            let ordinal = gpu.ordinal();
            gpu.gather(k, &chunks, bytes)
                .map(|p| (p as *const u8, bytes, MemLoc::Device(ordinal)))
        } else {
            gather_host(
                &mut inst.gather[k],
                batch.iter().map(|&i| &slots[i].inputs[k]),
                bytes,
            )
        };
        match r {
            Ok(p) => placed.push(p),
            Err(e) => {
                fail_all(slots, &e.context(format!("input '{}'", c.name)));
                let t = now_ns();
                return (t, t);
            }
        }
    }
    let inputs: Vec<TensorRef<'_>> = cfg
        .inputs
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let (ptr, bytes, loc) = placed[k];
            TensorRef {
                name: &c.name,
                dtype: c.dtype,
                shape: &shapes[k],
                ptr,
                bytes,
                loc,
                _lt: PhantomData,
            }
        })
        .collect();
    let mut wanted: Vec<&str> = Vec::new();
    for &i in batch {
        for o in &slots[i].outputs {
            if !wanted.contains(&o.as_str()) {
                wanted.push(o.as_str());
            }
        }
    }
    let wanted: Vec<String> = wanted.into_iter().map(str::to_string).collect();
    let wanted_refs: Vec<&str> = wanted.iter().map(String::as_str).collect();

    let compute_start = now_ns();
    let outputs = inst.runner.run(&inputs, &wanted_refs);
    let compute_end = now_ns();
    let outputs = match outputs {
        Ok(o) => o,
        Err(e) => {
            let e = e.context(format!("model '{}'", model.name));
            log!(Error, "{e}");
            fail_all(slots, &e);
            return (compute_start, compute_end);
        }
    };

    // Scatter: each request's slice of each output it asked for.
    if let Some(g) = inst.gpu.as_mut() {
        g.begin_batch();
    }
    let mut offset_batch = 0usize;
    for &i in batch {
        let s = &mut slots[i];
        if let Err(e) = scatter(cfg, s, &outputs, offset_batch, total, inst.gpu.as_mut()) {
            s.error = Some(e.context(format!("model '{}'", model.name)));
        }
        offset_batch += s.batch;
    }
    // Copies into GPU response buffers must be done before the responses are sent.
    if let Some(gpu) = inst.gpu.as_ref() {
        if let Err(e) = gpu.synchronize() {
            fail_all(slots, &e.context(format!("model '{}'", model.name)));
        }
    }
    (compute_start, compute_end)
}

/// Checks an engine output against the config before anything is sent: data type, rank and
/// every fixed dim (the batch dim against the batch's size).
fn check_output(
    cfg: &super::config::ModelConfig,
    c: &super::config::TensorConfig,
    out: &TensorOut<'_>,
    total: usize,
) -> Result<()> {
    let name = &c.name;
    if out.dtype != c.dtype {
        return Err(Error::internal(format!(
            "output '{name}': the engine produced {} but the model declares {}",
            out.dtype, c.dtype
        )));
    }
    let declared: Vec<i64> = if cfg.max_batch_size > 0 {
        std::iter::once(total as i64)
            .chain(c.dims.iter().copied())
            .collect()
    } else {
        c.dims.clone()
    };
    let fits = |shape: &[i64], want: &[i64]| {
        shape.len() == want.len()
            && shape
                .iter()
                .zip(want)
                .all(|(&s, &w)| s >= 0 && (w < 0 || s == w))
    };
    let ok = if c.reshape.is_some() {
        // The engine's shape is the reshape's; what is sent is the config's dims: the element
        // counts must agree (and the batch dim come first).
        let batch_ok = cfg.max_batch_size == 0 || out.shape.first() == Some(&(total as i64));
        let per = |v: &[i64]| {
            v.iter()
                .try_fold(1i64, |a, &d| if d < 0 { None } else { a.checked_mul(d) })
        };
        let rest = if cfg.max_batch_size > 0 {
            out.shape.get(1..).unwrap_or(&[])
        } else {
            &out.shape[..]
        };
        batch_ok
            && match (per(rest), per(&c.dims)) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    } else {
        fits(&out.shape, &declared)
    };
    // A BYTES output's size depends on its strings: the runner serialized it, and scatter
    // walks its length prefixes (and fails on a malformed one).
    let bytes_ok = out.dtype == DataType::Bytes
        || element_count(&out.shape)
            .and_then(|n| n.checked_mul(out.dtype.byte_size()))
            .is_some_and(|b| b == out.bytes);
    if !ok || !bytes_ok {
        let want = if cfg.max_batch_size > 0 {
            format!("[{total}]+{}", shape_str(&c.dims))
        } else {
            shape_str(&c.dims)
        };
        return Err(Error::internal(format!(
            "output '{name}': the engine produced shape {} ({} bytes of {}) but the model declares {want}",
            shape_str(&out.shape),
            out.bytes,
            out.dtype
        )));
    }
    Ok(())
}

/// The byte range of rows `first .. first + rows` of a batched BYTES output (rows of
/// prod(shape[1..]) elements), found by walking its length prefixes.
fn bytes_rows(out: &TensorOut<'_>, first: usize, rows: usize) -> Result<(usize, usize)> {
    let name = &out.name;
    let data = out
        .host_bytes()
        .ok_or_else(|| Error::internal(format!("BYTES output '{name}' is not in host memory")))?;
    let per = element_count(out.shape.get(1..).unwrap_or(&[])).ok_or_else(|| {
        Error::internal(format!(
            "BYTES output '{name}' has shape {}",
            shape_str(&out.shape)
        ))
    })?;
    let at = |row: usize| {
        row.checked_mul(per)
            .and_then(|i| bytes_offset(data, i))
            .ok_or_else(|| {
                Error::internal(format!(
                    "BYTES output '{name}' of shape {} ({} bytes) has no row {row}: its data is malformed or short",
                    shape_str(&out.shape),
                    data.len()
                ))
            })
    };
    let start = at(first)?;
    let end = at(first
        .checked_add(rows)
        .ok_or_else(|| Error::internal("row index overflows"))?)?;
    Ok((start, end - start))
}

fn scatter(
    cfg: &super::config::ModelConfig,
    s: &mut Slot,
    outputs: &[TensorOut<'_>],
    offset_batch: usize,
    total: usize,
    mut gpu: Option<&mut GpuIo>,
) -> Result<()> {
    let response = s
        .response
        .as_mut()
        .ok_or_else(|| Error::internal("no response"))?;
    for name in &s.outputs {
        let c = cfg
            .outputs
            .iter()
            .find(|c| &c.name == name)
            .ok_or_else(|| Error::internal(format!("output '{name}' not in config")))?;
        let out = outputs
            .iter()
            .find(|o| &o.name == name)
            .ok_or_else(|| Error::internal(format!("the engine produced no output '{name}'")))?;
        check_output(cfg, c, out, total)?;
        let (shape, start, len) = if cfg.max_batch_size > 0 {
            let rest: Vec<i64> = if c.reshape.is_some() {
                c.dims.clone()
            } else {
                out.shape[1..].to_vec()
            };
            let shape: Vec<i64> = std::iter::once(s.batch as i64).chain(rest).collect();
            let (start, len) = if out.dtype == DataType::Bytes {
                bytes_rows(out, offset_batch, s.batch)?
            } else {
                let per = element_count(&out.shape[1..]).unwrap_or(0) * out.dtype.byte_size();
                (offset_batch * per, s.batch * per)
            };
            (shape, start, len)
        } else {
            let shape = if c.reshape.is_some() {
                c.dims.clone()
            } else {
                out.shape.clone()
            };
            (shape, 0, out.bytes)
        };
        let mut o = response.output(name, c.dtype, &shape)?;
        let (dst, mt, mid) = o.buffer(len, (TRITONSERVER_MEMORY_CPU, 0))?;
        if len == 0 {
            continue;
        }
        match out.loc {
            MemLoc::Host => {
                let src = out
                    .host_bytes()
                    .ok_or_else(|| Error::internal("host output without bytes"))?;
                let src = &src[start..start + len];
                if host_memory(mt) {
                    // SAFETY: Triton gave `len` writable bytes at `dst` in host memory, owned by
                    // the response until it is sent; `src` is a distinct engine buffer.
                    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, len) };
                } else if mt == TRITONSERVER_MEMORY_GPU {
                    match gpu.as_deref_mut() {
                        Some(g) => g.to_device(dst, mid, src)?,
                        None => copy_host_to_gpu(dst, mid, src)?,
                    }
                } else {
                    return Err(Error::internal(format!(
                        "output '{name}': unknown memory type {mt}"
                    )));
                }
            }
            MemLoc::Device(d) => {
                let g = gpu.as_deref_mut().ok_or_else(|| {
                    Error::internal(format!(
                        "output '{name}' is in the memory of GPU {d}, but the instance has no GPU"
                    ))
                })?;
                let src = out.ptr as u64 + start as u64;
                match mt {
                    TRITONSERVER_MEMORY_GPU => g.device_to_device(dst, mid, src, len)?,
                    // SAFETY: Triton's pinned buffer of `len` bytes stays with the response,
                    // which is sent only after the stream is synchronized (end of run_batch);
                    // the runner keeps its output until its next run.
                    TRITONSERVER_MEMORY_CPU_PINNED => unsafe { g.device_to_pinned(dst, src, len)? },
                    TRITONSERVER_MEMORY_CPU => {
                        let whole = g.device_output_on_host(name, out.ptr as u64, out.bytes)?;
                        // SAFETY: Triton gave `len` writable host bytes at `dst`, owned by the
                        // response until it is sent; the staging copy is a distinct buffer.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                whole[start..start + len].as_ptr(),
                                dst,
                                len,
                            )
                        };
                    }
                    other => {
                        return Err(Error::internal(format!(
                            "output '{name}': unknown memory type {other}"
                        )))
                    }
                }
            }
        }
    }
    Ok(())
}
