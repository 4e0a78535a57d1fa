//! TRITONBACKEND_Response*, TRITONBACKEND_Output* and the response factory.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use triton_abi::*;

use super::request::request;
use super::{cstr, exports, out, peek_error, read_opt, slice};
use crate::config;
use crate::error::{Error, Result};
use crate::handles::{self, Kind};
use crate::infer::OutputTensor;
use crate::memory::MemoryType;
use crate::objects::{BufAttr, BufAttrObj, FactoryObj, OutputObj, RequestObj, ResponseObj};
use crate::rules::{self, lock};

fn response(r: *mut TRITONBACKEND_Response, f: &str) -> Result<Arc<ResponseObj>> {
    handles::get(r as usize, Kind::Response, f)
}

fn output(o: *mut TRITONBACKEND_Output, f: &str) -> Result<Arc<OutputObj>> {
    handles::get(o as usize, Kind::Output, f)
}

fn fail(req: &RequestObj, msg: String) -> Error {
    rules::violation(None, Some(req), msg.clone());
    Error::invalid_arg(msg)
}

fn new_response(
    req: &Arc<RequestObj>,
    resp: *mut *mut TRITONBACKEND_Response,
    f: &str,
) -> Result<()> {
    let h = handles::register(
        Kind::Response,
        Arc::new(ResponseObj {
            request: req.clone(),
            outputs: Default::default(),
            params: Default::default(),
        }),
    );
    {
        let mut t = lock(&req.track);
        t.touched = true;
        t.live_responses.insert(h);
    }
    out(resp, h as *mut TRITONBACKEND_Response, f, "response")
}

/// Check an output against the model config and the request.
fn check_output(req: &RequestObj, f: &str, name: &str, dtype: u32, shape: &[i64]) -> Result<()> {
    let cfg = req.model.config();
    let Some(o) = cfg.output.iter().find(|o| o.name == name) else {
        return Err(fail(
            req,
            format!(
                "{f}: '{name}' is not an output of model '{}' (config outputs: {:?})",
                cfg.name,
                cfg.output
                    .iter()
                    .map(|o| o.name.clone())
                    .collect::<Vec<_>>()
            ),
        ));
    };
    let want = config::config_dtype(o.data_type);
    if dtype != want {
        return Err(fail(
            req,
            format!(
                "{f}: output '{name}' has data type {} but the config says {}",
                datatype_name(dtype),
                datatype_name(want)
            ),
        ));
    }
    if !req.outputs.iter().any(|r| r.to_bytes() == name.as_bytes()) {
        return Err(fail(
            req,
            format!(
                "{f}: output '{name}' was not requested by request '{}'",
                req.id_str()
            ),
        ));
    }
    let batched = cfg.max_batch_size > 0;
    let forms: Vec<&[i64]> = std::iter::once(o.dims.as_slice())
        .chain(o.reshape.as_ref().map(|r| r.shape.as_slice()))
        .collect();
    let fits = |dims: &[i64]| {
        let (b, rest) = if batched {
            match shape.split_first() {
                Some((b, rest)) => (Some(*b), rest),
                None => return false,
            }
        } else {
            (None, shape)
        };
        b.is_none_or(|b| b == req.batch_size as i64)
            && rest.len() == dims.len()
            && rest
                .iter()
                .zip(dims)
                .all(|(s, d)| *s >= 0 && (*d == -1 || s == d))
    };
    if !forms.iter().any(|d| fits(d)) {
        return Err(fail(req, format!(
            "{f}: output '{name}' shape {shape:?} does not match config dims {:?}{} for request '{}' (batch size {})",
            o.dims, if batched { " with the batch dimension prepended" } else { "" }, req.id_str(), req.batch_size)));
    }
    Ok(())
}

exports! {
    fn TRITONBACKEND_ResponseNew(resp: *mut *mut TRITONBACKEND_Response, r: *mut TRITONBACKEND_Request) {
        let f = "TRITONBACKEND_ResponseNew";
        let req = request(r, f)?;
        new_response(&req, resp, f)
    }

    fn TRITONBACKEND_ResponseNewFromFactory(resp: *mut *mut TRITONBACKEND_Response, factory: *mut TRITONBACKEND_ResponseFactory) {
        let f = "TRITONBACKEND_ResponseNewFromFactory";
        let fa: Arc<FactoryObj> = handles::get(factory as usize, Kind::ResponseFactory, f)?;
        new_response(&fa.request, resp, f)
    }

    fn TRITONBACKEND_ResponseDelete(r: *mut TRITONBACKEND_Response) {
        let f = "TRITONBACKEND_ResponseDelete";
        let resp = response(r, f)?;
        handles::kill(r as usize, "deleted", Some(&resp.request));
        for (h, _) in lock(&resp.outputs).iter() {
            handles::kill(*h, "deleted with its response", Some(&resp.request));
        }
        lock(&resp.request.track).live_responses.remove(&(r as usize));
        Ok(())
    }

    fn TRITONBACKEND_ResponseOutput(
        r: *mut TRITONBACKEND_Response,
        o: *mut *mut TRITONBACKEND_Output,
        name: *const c_char,
        datatype: u32,
        shape: *const i64,
        dims_count: u32
    ) {
        let f = "TRITONBACKEND_ResponseOutput";
        let resp = response(r, f)?;
        let name = cstr(name, f, "name")?;
        let shape = slice(shape, dims_count as usize, f, "shape")?.to_vec();
        let req = &resp.request;
        check_output(req, f, &name, datatype, &shape)?;
        // Triton core's InferenceResponse::AddOutput: an output with a `reshape` is given the
        // config's dims (the client sees `dims`, the model produced `reshape`).
        let shape = config::response_shape(&req.model.config(), &name, shape);
        let mut outs = lock(&resp.outputs);
        if outs.iter().any(|(_, x)| x.name == name) {
            drop(outs);
            return Err(fail(req, format!("{f}: output '{name}' added twice to one response")));
        }
        let obj = Arc::new(OutputObj { shared: req.model.shared.clone(), output_memory: req.output_memory, name, datatype, shape, buffer: Default::default(), attrs: Default::default() });
        let h = handles::register(Kind::Output, obj.clone());
        outs.push((h, obj));
        out(o, h as *mut TRITONBACKEND_Output, f, "output")
    }

    fn TRITONBACKEND_OutputBuffer(
        o: *mut TRITONBACKEND_Output,
        buffer: *mut *mut c_void,
        byte_size: u64,
        memory_type: *mut u32,
        memory_type_id: *mut i64
    ) {
        let f = "TRITONBACKEND_OutputBuffer";
        let outp = output(o, f)?;
        let pref = read_opt(memory_type).unwrap_or(TRITONSERVER_MEMORY_CPU);
        let pref_id = read_opt(memory_type_id as *const i64).unwrap_or(0);
        if MemoryType::from_raw(pref).is_none() {
            return Err(Error::invalid_arg(format!("{f}: unknown memory type {pref}")));
        }
        let ctx = rules::current();
        if outp.datatype != TRITONSERVER_TYPE_BYTES {
            let elems = config::element_count(&outp.shape).unwrap_or(0);
            let want = elems * datatype_byte_size(outp.datatype) as u64;
            if want != byte_size {
                let msg = format!(
                    "{f}: output '{}' with shape {:?} and type {} needs {want} bytes but {byte_size} were requested",
                    outp.name, outp.shape, datatype_name(outp.datatype));
                rules::violation(ctx.as_ref(), None, msg.clone());
                return Err(Error::invalid_arg(msg));
            }
        }
        let mut slot = lock(&outp.buffer);
        if slot.is_some() {
            let msg = format!("{f}: buffer of output '{}' requested twice", outp.name);
            drop(slot);
            rules::violation(ctx.as_ref(), None, msg.clone());
            return Err(Error::invalid_arg(msg));
        }
        let shared = outp.shared.clone();
        // The client's allocator decides; GPU falls back to CPU when the host has no GPU.
        let client = outp.output_memory;
        let (mt, id) = match client {
            MemoryType::Gpu if shared.pool.gpu_count() == 0 => (MemoryType::Cpu, 0),
            MemoryType::Gpu => (MemoryType::Gpu, if pref == TRITONSERVER_MEMORY_GPU { pref_id } else { 0 }),
            other => (other, 0),
        };
        let buf = shared.pool.alloc(mt, id, byte_size as usize)?;
        out(buffer, buf.ptr() as *mut c_void, f, "buffer")?;
        out(memory_type, buf.memory_type().raw(), f, "memory_type")?;
        out(memory_type_id, buf.memory_type_id(), f, "memory_type_id")?;
        *slot = Some(buf);
        Ok(())
    }

    fn TRITONBACKEND_OutputBufferAttributes(o: *mut TRITONBACKEND_Output, attrs: *mut *mut TRITONSERVER_BufferAttributes) {
        let f = "TRITONBACKEND_OutputBufferAttributes";
        let outp = output(o, f)?;
        let b = lock(&outp.buffer);
        let Some(buf) = b.as_ref() else {
            return Err(Error::invalid_arg(format!("{f}: call TRITONBACKEND_OutputBuffer for '{}' first", outp.name)));
        };
        let mut a = lock(&outp.attrs);
        let h = *a.get_or_insert_with(|| handles::register(Kind::BufferAttributes, Arc::new(BufAttrObj {
            attr: std::sync::Mutex::new(BufAttr {
                memory_type: buf.memory_type().raw(),
                memory_type_id: buf.memory_type_id(),
                byte_size: buf.len(),
                cuda_ipc_handle: 0,
            }),
            borrowed: true,
            owner: None,
        })));
        out(attrs, h as *mut TRITONSERVER_BufferAttributes, f, "buffer_attributes")
    }

    fn TRITONBACKEND_ResponseSetStringParameter(r: *mut TRITONBACKEND_Response, name: *const c_char, value: *const c_char) {
        let f = "TRITONBACKEND_ResponseSetStringParameter";
        let resp = response(r, f)?;
        let (n, v) = (cstr(name, f, "name")?, cstr(value, f, "value")?);
        lock(&resp.params).push((n, serde_json::Value::from(v)));
        Ok(())
    }

    fn TRITONBACKEND_ResponseSetIntParameter(r: *mut TRITONBACKEND_Response, name: *const c_char, value: i64) {
        let f = "TRITONBACKEND_ResponseSetIntParameter";
        let resp = response(r, f)?;
        lock(&resp.params).push((cstr(name, f, "name")?, serde_json::Value::from(value)));
        Ok(())
    }

    fn TRITONBACKEND_ResponseSetBoolParameter(r: *mut TRITONBACKEND_Response, name: *const c_char, value: bool) {
        let f = "TRITONBACKEND_ResponseSetBoolParameter";
        let resp = response(r, f)?;
        lock(&resp.params).push((cstr(name, f, "name")?, serde_json::Value::from(value)));
        Ok(())
    }

    fn TRITONBACKEND_ResponseSetDoubleParameter(r: *mut TRITONBACKEND_Response, name: *const c_char, value: f64) {
        let f = "TRITONBACKEND_ResponseSetDoubleParameter";
        let resp = response(r, f)?;
        lock(&resp.params).push((cstr(name, f, "name")?, serde_json::Value::from(value)));
        Ok(())
    }

    fn TRITONBACKEND_ResponseSend(r: *mut TRITONBACKEND_Response, send_flags: u32, error: *mut TRITONSERVER_Error) {
        let f = "TRITONBACKEND_ResponseSend";
        let resp = response(r, f).map_err(|e| e.context("a response may be sent only once"))?;
        let req = resp.request.clone();
        // The response is handed over even if the send fails.
        handles::kill(r as usize, "sent", Some(&req));
        let outs: Vec<_> = std::mem::take(&mut *lock(&resp.outputs));
        for (h, _) in &outs {
            handles::kill(*h, "sent with its response", Some(&req));
        }
        let err = peek_error(error, f)?;
        let count = {
            let mut t = lock(&req.track);
            t.live_responses.remove(&(r as usize));
            t.touched = true;
            t.responses_sent += 1;
            t.responses_sent
        };
        if count > 1 {
            return Err(fail(&req, format!(
                "{f}: request '{}' got {count} responses; a non-decoupled model sends exactly one", req.id_str())));
        }
        if send_flags != TRITONSERVER_RESPONSE_COMPLETE_FINAL {
            return Err(fail(&req, format!(
                "{f}: the response of a non-decoupled model must be sent with \
                 TRITONSERVER_RESPONSE_COMPLETE_FINAL (1), got flags {send_flags}")));
        }
        let result = match err {
            Some(e) => {
                if !outs.is_empty() {
                    return Err(fail(&req, format!("{f}: an error response must carry no outputs ({} given)", outs.len())));
                }
                Err((e.code, e.msg))
            }
            None => {
                let mut tensors = Vec::new();
                for (_, o) in &outs {
                    let b = lock(&o.buffer);
                    let Some(buf) = b.as_ref() else {
                        return Err(fail(&req, format!("{f}: output '{}' has no buffer (TRITONBACKEND_OutputBuffer not called)", o.name)));
                    };
                    tensors.push(OutputTensor {
                        name: o.name.clone(),
                        datatype: o.datatype,
                        shape: o.shape.clone(),
                        bytes: buf.to_vec()?,
                        memory: buf.memory_type(),
                    });
                }
                for want in &req.outputs {
                    let w = want.to_string_lossy();
                    if !tensors.iter().any(|t| t.name == w) {
                        return Err(fail(&req, format!("{f}: requested output '{w}' is missing from the response of request '{}'", req.id_str())));
                    }
                }
                Ok(tensors)
            }
        };
        let mut t = lock(&req.track);
        t.final_sent = true;
        t.result = Some(result);
        Ok(())
    }

    fn TRITONBACKEND_ResponseFactoryNew(factory: *mut *mut TRITONBACKEND_ResponseFactory, r: *mut TRITONBACKEND_Request) {
        let f = "TRITONBACKEND_ResponseFactoryNew";
        let req = request(r, f)?;
        req.model.shared.owned_add("TRITONBACKEND_ResponseFactory", 1);
        let h = handles::register(Kind::ResponseFactory, Arc::new(FactoryObj { request: req }));
        out(factory, h as *mut TRITONBACKEND_ResponseFactory, f, "factory")
    }

    fn TRITONBACKEND_ResponseFactoryDelete(factory: *mut TRITONBACKEND_ResponseFactory) {
        let f = "TRITONBACKEND_ResponseFactoryDelete";
        let fa: Arc<FactoryObj> = handles::get(factory as usize, Kind::ResponseFactory, f)?;
        handles::kill(factory as usize, "deleted", Some(&fa.request));
        fa.request.model.shared.owned_add("TRITONBACKEND_ResponseFactory", -1);
        Ok(())
    }

    fn TRITONBACKEND_ResponseFactorySendFlags(factory: *mut TRITONBACKEND_ResponseFactory, send_flags: u32) {
        let f = "TRITONBACKEND_ResponseFactorySendFlags";
        let fa: Arc<FactoryObj> = handles::get(factory as usize, Kind::ResponseFactory, f)?;
        Err(fail(&fa.request, format!(
            "{f}(flags {send_flags}): flags-only responses are for decoupled models; this model is not decoupled")))
    }

    fn TRITONBACKEND_ResponseFactoryIsCancelled(factory: *mut TRITONBACKEND_ResponseFactory, c: *mut bool) {
        let f = "TRITONBACKEND_ResponseFactoryIsCancelled";
        let _: Arc<FactoryObj> = handles::get(factory as usize, Kind::ResponseFactory, f)?;
        out(c, false, f, "is_cancelled")
    }
}
