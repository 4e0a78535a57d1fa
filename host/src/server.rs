//! The server: options, backend loading, model lifecycle and inference entry points.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::{json, Value};
use triton_abi::*;

use crate::backend_lib::BackendLib;
use crate::config::proto::model_instance_group::Kind as GroupKind;
use crate::config::proto::model_warmup::input::Input_data_type;
use crate::config::{self, ModelConfig, PreferredGroup};
use crate::error::{Error, Result};
use crate::handles::{self, Kind};
use crate::infer::{self, InferRequest, InferResponse, InputTensor};
use crate::memory::{MemoryPool, MemoryType};
use crate::objects::{cstring, AttributeObj, BackendObj, InstanceObj, MemoryManagerObj, ModelObj};
use crate::rules::{self, lock, LogLine, Shared};
use crate::scheduler::{self, Instance, Pending, Queue};
use crate::stats::{now_ns, ModelStats};

/// A request whose inputs already sit in their memory (see [`Server::prepare`]).
pub struct PreparedRequest(infer::Prepared);

/// How to start a [`Server`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The backend `.so` (`libtriton_<name>.so`; the backend name comes from the file name).
    pub backend_library: PathBuf,
    /// Model repository directory.
    pub model_repository: PathBuf,
    /// `--backend-config=<backend>,<key>=<value>` pairs.
    pub backend_config: Vec<(String, String)>,
    /// `auto-complete-config` (default true; false = `--disable-auto-complete-config`).
    pub auto_complete_config: bool,
    /// `default-max-batch-size` (default 4).
    pub default_max_batch_size: u32,
    /// Print the backend's log lines to stderr (also with env `RUSTTRT_HOST_LOG=1`).
    pub log_to_stderr: bool,
    /// Number of GPUs the host offers (0: no GPU; GPU memory is then UNSUPPORTED). They are real
    /// CUDA devices: `Server::new` fails when the driver has fewer.
    pub gpu_count: usize,
    /// Test-only: offer `gpu_count` GPUs to the configuration (instance groups, device ids)
    /// even though no CUDA driver is usable, as on a machine whose driver libraries are missing;
    /// GPU memory is then UNSUPPORTED. For testing how a backend fails there.
    pub gpus_without_driver: bool,
    /// `min-compute-capability` in the backend config (Triton's default 6.0).
    pub min_compute_capability: f64,
    /// `--model-load-thread-count`: how many models [`Server::load_models`] and
    /// [`Server::load_repository`] load at once (Triton's default 4).
    pub model_load_thread_count: usize,
}

impl ServerOptions {
    /// Options with Triton's defaults.
    pub fn new(backend_library: impl Into<PathBuf>, model_repository: impl Into<PathBuf>) -> Self {
        ServerOptions {
            backend_library: backend_library.into(),
            model_repository: model_repository.into(),
            backend_config: Vec::new(),
            auto_complete_config: true,
            default_max_batch_size: 4,
            log_to_stderr: false,
            gpu_count: 0,
            gpus_without_driver: false,
            min_compute_capability: 6.0,
            model_load_thread_count: 4,
        }
    }
}

struct LoadedBackend {
    lib: Arc<BackendLib>,
    handle: usize,
    obj: Arc<BackendObj>,
    attr_handle_preferred: Vec<PreferredGroup>,
    parallel_instance_loading: bool,
}

/// One loaded version of a model.
struct ModelRuntime {
    model: Arc<ModelObj>,
    handle: usize,
    instances: Vec<Instance>,
    host_policy_msgs: Vec<usize>,
    queue: Arc<Queue>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    lib: Arc<BackendLib>,
}

/// A request in flight; [`ResponseHandle::wait`] blocks for its response.
pub struct ResponseHandle {
    rx: Receiver<Result<InferResponse>>,
}

impl ResponseHandle {
    /// Wait for the response. `Err` = the request failed in the host (or a rule violation).
    pub fn wait(self) -> Result<InferResponse> {
        self.rx.recv().unwrap_or_else(|_| {
            Err(Error::internal(
                "the request was dropped without a response",
            ))
        })
    }
}

/// A stand-in for Triton core that loads one backend library.
pub struct Server {
    shared: Arc<Shared>,
    opts: ServerOptions,
    backend_name: String,
    backend: Mutex<Option<LoadedBackend>>,
    models: Mutex<HashMap<String, Vec<Arc<ModelRuntime>>>>,
    /// One lock per model name: loads and unloads of one model are serialized, different
    /// models load at the same time (as Triton's model-load thread pool does).
    load_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Model loads running now, and the most seen at once (for tests of parallel loading).
    loads_running: AtomicUsize,
    loads_peak: AtomicUsize,
}

static KEEP: AtomicUsize = AtomicUsize::new(0);

impl Server {
    /// Create a server. The backend is loaded lazily on the first model load, as in Triton.
    pub fn new(opts: ServerOptions) -> Result<Server> {
        // Reference every export so the linker keeps them all in the executable.
        let syms = std::hint::black_box(crate::abi::exported_symbols());
        KEEP.fetch_add(syms.len(), Ordering::Relaxed);
        let file = opts
            .backend_library
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let backend_name = file
            .strip_prefix("libtriton_")
            .and_then(|s| s.strip_suffix(".so"))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Error::invalid_arg(format!(
                    "backend library must be named libtriton_<backend>.so, got {}",
                    opts.backend_library.display()
                ))
            })?
            .to_string();
        if !opts.model_repository.is_dir() {
            return Err(Error::invalid_arg(format!(
                "model repository {} is not a directory",
                opts.model_repository.display()
            )));
        }
        // GPUs are real CUDA devices (through the backend crate's cuda layer); without a driver
        // a host asked for GPUs fails here, as a Triton without GPUs would not offer them.
        let device: Option<Arc<dyn crate::memory::DeviceMemory>> =
            if opts.gpu_count > 0 && !opts.gpus_without_driver {
                Some(Arc::new(crate::cuda_memory::CudaMemory::new(
                    opts.gpu_count,
                )?))
            } else {
                None
            };
        let shared = Shared::new(opts.log_to_stderr, MemoryPool::new(device));
        Ok(Server {
            shared,
            opts,
            backend_name,
            backend: Mutex::new(None),
            models: Mutex::new(HashMap::new()),
            load_locks: Mutex::new(HashMap::new()),
            loads_running: AtomicUsize::new(0),
            loads_peak: AtomicUsize::new(0),
        })
    }

    /// The backend name (from the library file name).
    pub fn backend_name(&self) -> &str {
        &self.backend_name
    }

    /// The backend config JSON given to `TRITONBACKEND_BackendConfig`.
    pub fn backend_config_json(&self) -> Value {
        let o = &self.opts;
        let mut cmd = serde_json::Map::new();
        cmd.insert(
            "auto-complete-config".into(),
            o.auto_complete_config.to_string().into(),
        );
        let dir = o
            .backend_library
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        let backends_dir = dir.parent().map(Path::to_path_buf).unwrap_or(dir);
        cmd.insert(
            "backend-directory".into(),
            backends_dir.to_string_lossy().into_owned().into(),
        );
        cmd.insert(
            "min-compute-capability".into(),
            format!("{:.6}", o.min_compute_capability).into(),
        );
        cmd.insert(
            "default-max-batch-size".into(),
            o.default_max_batch_size.to_string().into(),
        );
        for (k, v) in &o.backend_config {
            cmd.insert(k.clone(), v.clone().into());
        }
        json!({ "cmdline": cmd })
    }

    fn ensure_backend(&self) -> Result<(Arc<BackendLib>, usize, Vec<PreferredGroup>, bool)> {
        let mut b = lock(&self.backend);
        if let Some(lb) = b.as_ref() {
            return Ok((
                lb.lib.clone(),
                lb.handle,
                lb.attr_handle_preferred.clone(),
                lb.parallel_instance_loading,
            ));
        }
        let lib = Arc::new(BackendLib::open(&self.opts.backend_library)?);
        let config_msg =
            crate::abi::message_new(self.backend_config_json().to_string(), true, None);
        let mm = handles::register(
            Kind::MemoryManager,
            Arc::new(MemoryManagerObj {
                shared: self.shared.clone(),
            }),
        );
        let dir = self
            .opts
            .backend_library
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let obj = Arc::new(BackendObj {
            name: cstring(&self.backend_name),
            dir: cstring(&dir),
            config_msg,
            memory_manager: mm,
            state: AtomicUsize::new(0),
            policy: AtomicU32::new(TRITONBACKEND_EXECUTION_BLOCKING),
            in_initialize: AtomicBool::new(true),
        });
        let handle = handles::register(Kind::Backend, obj.clone());
        let r = {
            let _ctx = rules::enter(&self.shared, "TRITONBACKEND_Initialize", vec![]);
            lib.call1(lib.initialize, "TRITONBACKEND_Initialize", handle)
        };
        obj.in_initialize.store(false, Ordering::SeqCst);
        if let Err(e) = r {
            handles::kill(
                handle,
                "destroyed after a failed TRITONBACKEND_Initialize",
                None,
            );
            handles::kill(config_msg, "destroyed with its backend", None);
            handles::kill(mm, "destroyed with its backend", None);
            return Err(e.context(format!(
                "failed to initialize backend '{}'",
                self.backend_name
            )));
        }
        let attrs = Arc::new(AttributeObj::default());
        let ah = handles::register(Kind::BackendAttribute, attrs.clone());
        let r = {
            let _ctx = rules::enter(&self.shared, "TRITONBACKEND_GetBackendAttribute", vec![]);
            lib.call2(
                lib.get_attribute,
                "TRITONBACKEND_GetBackendAttribute",
                handle,
                ah,
            )
        };
        handles::kill(
            ah,
            "only valid during TRITONBACKEND_GetBackendAttribute",
            None,
        );
        let (preferred, parallel) = match r {
            Ok(()) => (
                lock(&attrs.groups).clone(),
                attrs.parallel.load(Ordering::SeqCst),
            ),
            Err(e) => {
                self.host_log(
                    "WARN",
                    format!("TRITONBACKEND_GetBackendAttribute failed, attributes ignored: {e}"),
                );
                (Vec::new(), false)
            }
        };
        self.host_log(
            "INFO",
            format!(
                "loaded backend '{}' from {}",
                self.backend_name,
                lib.path.display()
            ),
        );
        *b = Some(LoadedBackend {
            lib: lib.clone(),
            handle,
            obj,
            attr_handle_preferred: preferred.clone(),
            parallel_instance_loading: parallel,
        });
        Ok((lib, handle, preferred, parallel))
    }

    fn host_log(&self, level: &'static str, msg: String) {
        self.shared.log(LogLine {
            level,
            file: "rusttrt-host".into(),
            line: 0,
            msg,
        });
    }

    fn model_lock(&self, name: &str) -> Arc<Mutex<()>> {
        lock(&self.load_locks)
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Loads several models at once on `model_load_thread_count` threads, as Triton loads a
    /// repository; returns each model's result, in the order given.
    pub fn load_models(&self, names: &[String]) -> Vec<(String, Result<()>)> {
        let threads = self
            .opts
            .model_load_thread_count
            .max(1)
            .min(names.len().max(1));
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<()>>>> =
            Mutex::new((0..names.len()).map(|_| None).collect());
        std::thread::scope(|s| {
            for t in 0..threads {
                let (next, results) = (&next, &results);
                std::thread::Builder::new()
                    .name(format!("model-load-{t}"))
                    .spawn_scoped(s, move || loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(name) = names.get(i) else { break };
                        let r = self.load_model(name);
                        lock(results)[i] = Some(r);
                    })
                    .expect("model load thread starts");
            }
        });
        let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        names
            .iter()
            .cloned()
            .zip(results.into_iter().map(|r| {
                r.unwrap_or_else(|| Err(Error::internal("the model load thread panicked")))
            }))
            .collect()
    }

    /// Loads every model of the repository (each directory), in parallel as Triton does at
    /// start-up; returns each model's result, sorted by name.
    pub fn load_repository(&self) -> Result<Vec<(String, Result<()>)>> {
        let dir = &self.opts.model_repository;
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)
            .map_err(|e| Error::not_found(format!("cannot read {}: {e}", dir.display())))?
        {
            let e = e?;
            if e.path().is_dir() {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(self.load_models(&names))
    }

    /// Load (or reload) a model: every version its version policy selects. A reload loads the
    /// new model first and unloads the old one only when that succeeded.
    pub fn load_model(&self, name: &str) -> Result<()> {
        let l = self.model_lock(name);
        let _l = lock(&l);
        self.load_model_locked(name)
    }

    /// The most model loads whose backend part (ModelInitialize, instance initialization) ran
    /// at the same time since the server started.
    pub fn peak_parallel_loads(&self) -> usize {
        self.loads_peak.load(Ordering::SeqCst)
    }

    fn load_model_locked(&self, name: &str) -> Result<()> {
        let dir = self.opts.model_repository.join(name);
        if !dir.is_dir() {
            return Err(Error::not_found(format!(
                "model '{name}' not found in repository {}",
                self.opts.model_repository.display()
            )));
        }
        let mut cfg = config::read(&dir, self.opts.auto_complete_config)?;
        let (lib, bh, preferred, parallel) = self.ensure_backend()?;
        config::normalize(
            &mut cfg,
            name,
            &self.backend_name,
            self.opts.gpu_count,
            &preferred,
        )
        .map_err(|e| e.context(format!("failed to load model '{name}'")))?;
        let versions = config::select_versions(&dir, &cfg)?;
        let mut loaded: Vec<Arc<ModelRuntime>> = Vec::new();
        for v in versions {
            // Counted around the backend's part of the load (ModelInitialize, instances).
            let now = self.loads_running.fetch_add(1, Ordering::SeqCst) + 1;
            self.loads_peak.fetch_max(now, Ordering::SeqCst);
            let r = self.load_version(&lib, bh, &dir, name, v, cfg.clone(), &preferred, parallel);
            self.loads_running.fetch_sub(1, Ordering::SeqCst);
            match r {
                Ok(rt) => loaded.push(Arc::new(rt)),
                Err(e) => {
                    for rt in loaded {
                        self.unload_runtime(&rt);
                    }
                    return Err(e.context(format!("failed to load model '{name}' version {v}")));
                }
            }
        }
        let old = lock(&self.models).insert(name.to_string(), loaded);
        for rt in old.into_iter().flatten() {
            self.unload_runtime(&rt);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn load_version(
        &self,
        lib: &Arc<BackendLib>,
        backend_handle: usize,
        dir: &Path,
        name: &str,
        version: u64,
        cfg: ModelConfig,
        preferred: &[PreferredGroup],
        parallel: bool,
    ) -> Result<ModelRuntime> {
        let model = Arc::new(ModelObj {
            shared: self.shared.clone(),
            name: cstring(name),
            version,
            repo_dir: cstring(&dir.to_string_lossy()),
            backend_handle,
            backend_name: self.backend_name.clone(),
            auto_complete: self.opts.auto_complete_config,
            gpu_count: self.opts.gpu_count,
            preferred: preferred.to_vec(),
            config: Mutex::new(cfg),
            in_initialize: AtomicBool::new(true),
            state: AtomicUsize::new(0),
            stats: Arc::new(ModelStats::default()),
        });
        let mh = handles::register(Kind::Model, model.clone());
        let finalize_model = |why: &str| {
            let _ctx = rules::enter(&self.shared, "TRITONBACKEND_ModelFinalize", vec![]);
            if let Err(e) = lib.call1(lib.model_finalize, "TRITONBACKEND_ModelFinalize", mh) {
                self.host_log(
                    "ERROR",
                    format!("TRITONBACKEND_ModelFinalize of '{name}' failed: {e}"),
                );
            }
            handles::kill(mh, why, None);
        };
        let r = {
            let _ctx = rules::enter(&self.shared, "TRITONBACKEND_ModelInitialize", vec![]);
            lib.call1(lib.model_initialize, "TRITONBACKEND_ModelInitialize", mh)
        };
        model.in_initialize.store(false, Ordering::SeqCst);
        let r = r.and_then(|()| config::validate(&model.config(), self.opts.gpu_count));
        if let Err(e) = r {
            finalize_model("finalized after a failed load");
            return Err(e);
        }
        let cfg = model.config();
        // Instances.
        let mut specs = Vec::new();
        for g in &cfg.instance_group {
            let kind = g.kind.enum_value_or_default();
            let (tkind, devices): (u32, Vec<i32>) = match kind {
                GroupKind::KIND_GPU => (TRITONSERVER_INSTANCEGROUPKIND_GPU, g.gpus.clone()),
                GroupKind::KIND_MODEL => (TRITONSERVER_INSTANCEGROUPKIND_MODEL, vec![0]),
                _ => (TRITONSERVER_INSTANCEGROUPKIND_CPU, vec![0]),
            };
            for c in 0..g.count {
                for d in &devices {
                    // Triton core (recent releases) always appends the index in the group.
                    let iname = format!("{}_{c}", g.name);
                    let policy = if !g.host_policy.is_empty() {
                        g.host_policy.clone()
                    } else {
                        match tkind {
                            TRITONSERVER_INSTANCEGROUPKIND_GPU => format!("gpu_{d}"),
                            TRITONSERVER_INSTANCEGROUPKIND_MODEL => "model".into(),
                            _ => "cpu".into(),
                        }
                    };
                    specs.push((
                        iname,
                        tkind,
                        *d,
                        g.passive,
                        g.profile.clone(),
                        g.secondary_devices
                            .iter()
                            .map(|s| {
                                (
                                    cstring(&format!("{:?}", s.kind.enum_value_or_default())),
                                    s.device_id,
                                )
                            })
                            .collect::<Vec<_>>(),
                        policy,
                    ));
                }
            }
        }
        let mut instances: Vec<Instance> = Vec::new();
        let mut msgs = Vec::new();
        let mut failure = None;
        let mut created = Vec::new();
        for (iname, kind, dev, passive, profiles, secondary, policy) in specs {
            let hp = crate::abi::message_new(json!({ policy: {} }).to_string(), true, None);
            msgs.push(hp);
            let obj = Arc::new(InstanceObj {
                model: model.clone(),
                model_handle: mh,
                name: cstring(&iname),
                kind,
                device_id: dev,
                passive,
                profiles: profiles.iter().map(|p| cstring(p)).collect(),
                secondary,
                host_policy_msg: hp,
                state: AtomicUsize::new(0),
            });
            let h = handles::register(Kind::Instance, obj.clone());
            created.push(Instance { handle: h, obj });
        }
        // Parallel instance loading only when the backend opted in.
        let results: Vec<Result<()>> = if parallel && created.len() > 1 {
            std::thread::scope(|s| {
                let hs: Vec<_> = created
                    .iter()
                    .map(|i| {
                        let shared = self.shared.clone();
                        let lib = lib.clone();
                        s.spawn(move || {
                            let _ctx = rules::enter(
                                &shared,
                                "TRITONBACKEND_ModelInstanceInitialize",
                                vec![],
                            );
                            lib.call1(
                                lib.instance_initialize,
                                "TRITONBACKEND_ModelInstanceInitialize",
                                i.handle,
                            )
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(Error::internal("instance init thread panicked"))
                        })
                    })
                    .collect()
            })
        } else {
            let mut v = Vec::new();
            for i in &created {
                let _ctx = rules::enter(
                    &self.shared,
                    "TRITONBACKEND_ModelInstanceInitialize",
                    vec![],
                );
                let r = lib.call1(
                    lib.instance_initialize,
                    "TRITONBACKEND_ModelInstanceInitialize",
                    i.handle,
                );
                let failed = r.is_err();
                v.push(r);
                if failed {
                    break;
                }
            }
            v
        };
        // Instances whose init ran (including a failed one) get finalized on failure.
        let ran = results.len();
        for (i, r) in created.iter().zip(&results) {
            if let Err(e) = r {
                failure.get_or_insert_with(|| {
                    e.clone()
                        .context(format!("instance '{}'", i.obj.name.to_string_lossy()))
                });
            }
        }
        instances.extend(created.iter().take(ran).cloned());
        let rt = ModelRuntime {
            model: model.clone(),
            handle: mh,
            instances,
            host_policy_msgs: msgs,
            queue: Arc::new(Queue::default()),
            threads: Mutex::new(Vec::new()),
            lib: lib.clone(),
        };
        for i in created.iter().skip(ran) {
            handles::kill(i.handle, "never initialized", None);
        }
        if let Some(e) = failure {
            self.unload_runtime(&rt);
            return Err(e);
        }
        if let Err(e) = self.warmup(&rt, &cfg, dir) {
            self.unload_runtime(&rt);
            return Err(e.context("model warmup failed"));
        }
        let policy = infer::batch_policy(&cfg);
        for i in rt.instances.iter().filter(|i| !i.obj.passive) {
            let (lib, i2, q, p) = (lib.clone(), i.clone(), rt.queue.clone(), policy.clone());
            let t = std::thread::Builder::new()
                .name(format!("backend-{}", i.obj.name.to_string_lossy()))
                .spawn(move || scheduler::run_instance(lib, i2, q, p))
                .map_err(|e| Error::internal(format!("cannot start instance thread: {e}")))?;
            lock(&rt.threads).push(t);
        }
        Ok(rt)
    }

    fn warmup(&self, rt: &ModelRuntime, cfg: &ModelConfig, dir: &Path) -> Result<()> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        for w in &cfg.model_warmup {
            if w.batch_size == 0 {
                continue;
            }
            for inst in rt.instances.iter().filter(|i| !i.obj.passive) {
                for iteration in 0..w.count.max(1) {
                    // Triton core logs the same line (verbose) before each warmup sample.
                    self.host_log(
                        "VERBOSE",
                        format!(
                            "model '{}' instance {} is running warmup sample '{}' for iteration {}",
                            cfg.name,
                            inst.obj.name.to_string_lossy(),
                            w.name,
                            iteration + 1
                        ),
                    );
                    let mut batch = Vec::new();
                    let mut rxs = Vec::new();
                    for n in 0..w.batch_size {
                        let mut inputs = Vec::new();
                        for (iname, wi) in &w.inputs {
                            let dt = config::config_dtype(wi.data_type);
                            let elems = config::element_count(&wi.dims).unwrap_or(0) as usize;
                            let bytes = match &wi.input_data_type {
                                Some(Input_data_type::InputDataFile(f)) => {
                                    let data =
                                        std::fs::read(dir.join("warmup").join(f)).map_err(|e| {
                                            Error::invalid_arg(format!(
                                                "warmup '{}': cannot read {f}: {e}",
                                                w.name
                                            ))
                                        })?;
                                    let need = elems * datatype_byte_size(dt) as usize;
                                    if dt == TRITONSERVER_TYPE_BYTES {
                                        data
                                    } else if data.len() < need {
                                        return Err(Error::invalid_arg(format!(
                                            "warmup '{}' expects {need} bytes but {f} has only {}",
                                            w.name,
                                            data.len()
                                        )));
                                    } else {
                                        data[..need].to_vec()
                                    }
                                }
                                _ if dt == TRITONSERVER_TYPE_BYTES => {
                                    (0..elems).flat_map(|_| 0u32.to_le_bytes()).collect()
                                }
                                // Like Triton: arbitrary random bytes (may be NaN/Inf for floats).
                                Some(Input_data_type::RandomData(true)) => {
                                    let mut v = vec![0u8; elems * datatype_byte_size(dt) as usize];
                                    rng.fill(&mut v[..]);
                                    v
                                }
                                _ => vec![0u8; elems * datatype_byte_size(dt) as usize],
                            };
                            let mut shape = wi.dims.clone();
                            if cfg.max_batch_size > 0 {
                                shape.insert(0, 1);
                            }
                            inputs.push(InputTensor::new(iname, dt, &shape, bytes));
                        }
                        let req = InferRequest::new(&format!("warmup_{}_{n}", w.name), inputs);
                        let prepared = infer::prepare(cfg, req, &self.shared.pool, true)
                            .map_err(|e| e.context(format!("warmup '{}'", w.name)))?;
                        let (tx, rx) = mpsc::channel();
                        let now = now_ns();
                        batch.push(Pending {
                            req: prepared,
                            tx,
                            arrival_ns: now,
                            queue_start_ns: now,
                        });
                        rxs.push(rx);
                    }
                    scheduler::execute(&rt.lib, inst, batch, false);
                    for rx in rxs {
                        let r = rx
                            .recv()
                            .map_err(|_| Error::internal("warmup request lost"))??;
                        if let Some((c, m)) = r.error {
                            return Err(Error::new(
                                c,
                                format!(
                                    "warmup '{}' on instance '{}': {m}",
                                    w.name,
                                    inst.obj.name.to_string_lossy()
                                ),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn unload_runtime(&self, rt: &ModelRuntime) {
        rt.queue.shutdown();
        for t in lock(&rt.threads).drain(..) {
            let _ = t.join();
        }
        let name = rt.model.name_str();
        for i in &rt.instances {
            let _ctx = rules::enter(&self.shared, "TRITONBACKEND_ModelInstanceFinalize", vec![]);
            if let Err(e) = rt.lib.call1(
                rt.lib.instance_finalize,
                "TRITONBACKEND_ModelInstanceFinalize",
                i.handle,
            ) {
                self.host_log(
                    "ERROR",
                    format!(
                        "TRITONBACKEND_ModelInstanceFinalize of '{}' failed: {e}",
                        i.obj.name.to_string_lossy()
                    ),
                );
            }
            handles::kill(i.handle, "finalized", None);
        }
        for m in &rt.host_policy_msgs {
            handles::kill(*m, "destroyed with its instance", None);
        }
        {
            let _ctx = rules::enter(&self.shared, "TRITONBACKEND_ModelFinalize", vec![]);
            if let Err(e) = rt.lib.call1(
                rt.lib.model_finalize,
                "TRITONBACKEND_ModelFinalize",
                rt.handle,
            ) {
                self.host_log(
                    "ERROR",
                    format!("TRITONBACKEND_ModelFinalize of '{name}' failed: {e}"),
                );
            }
        }
        handles::kill(rt.handle, "finalized", None);
    }

    /// Unload every version of a model (waits for queued requests to finish).
    pub fn unload_model(&self, name: &str) -> Result<()> {
        let l = self.model_lock(name);
        let _l = lock(&l);
        let rts = lock(&self.models)
            .remove(name)
            .ok_or_else(|| Error::not_found(format!("model '{name}' is not loaded")))?;
        for rt in rts {
            self.unload_runtime(&rt);
        }
        Ok(())
    }

    /// Names of the loaded models.
    pub fn loaded_models(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.models).keys().cloned().collect();
        v.sort();
        v
    }

    fn latest(&self, name: &str) -> Result<Arc<ModelRuntime>> {
        lock(&self.models)
            .get(name)
            .and_then(|v| v.last().cloned())
            .ok_or_else(|| Error::not_found(format!("model '{name}' is not loaded")))
    }

    /// The final config of the latest loaded version (as `GET /v2/models/<m>/config`).
    pub fn model_config(&self, name: &str) -> Result<Value> {
        config::to_json(&self.latest(name)?.model.config())
    }

    /// Loaded versions of a model.
    pub fn model_versions(&self, name: &str) -> Result<Vec<u64>> {
        Ok(lock(&self.models)
            .get(name)
            .ok_or_else(|| Error::not_found(format!("model '{name}' is not loaded")))?
            .iter()
            .map(|r| r.model.version)
            .collect())
    }

    /// Statistics, shaped as `GET /v2/models/<m>/stats`.
    pub fn model_stats(&self, name: &str) -> Result<Value> {
        let models = lock(&self.models);
        let rts = models
            .get(name)
            .ok_or_else(|| Error::not_found(format!("model '{name}' is not loaded")))?;
        let v: Vec<Value> = rts
            .iter()
            .map(|r| r.model.stats.to_json(name, r.model.version))
            .collect();
        Ok(json!({ "model_stats": v }))
    }

    /// Readiness: calls `TRITONBACKEND_ModelInstanceReady` (if exported) on every instance.
    pub fn model_ready(&self, name: &str) -> Result<()> {
        let rt = self.latest(name)?;
        for i in &rt.instances {
            let _ctx = rules::enter(&self.shared, "TRITONBACKEND_ModelInstanceReady", vec![]);
            rt.lib.call1(
                rt.lib.instance_ready,
                "TRITONBACKEND_ModelInstanceReady",
                i.handle,
            )?;
        }
        Ok(())
    }

    /// Names and kinds of a model's instances (name, TRITONSERVER kind, device id, passive).
    pub fn model_instances(&self, name: &str) -> Result<Vec<(String, u32, i32, bool)>> {
        Ok(self
            .latest(name)?
            .instances
            .iter()
            .map(|i| {
                (
                    i.obj.name.to_string_lossy().into_owned(),
                    i.obj.kind,
                    i.obj.device_id,
                    i.obj.passive,
                )
            })
            .collect())
    }

    fn submit_inner(
        &self,
        model: &str,
        req: InferRequest,
        checked: bool,
    ) -> Result<ResponseHandle> {
        let arrival = now_ns();
        let rt = self.latest(model)?;
        let cfg = rt.model.config();
        let prepared = infer::prepare(&cfg, req, &self.shared.pool, checked)?;
        let (tx, rx) = mpsc::channel();
        rt.queue.push(Pending {
            req: prepared,
            tx,
            arrival_ns: arrival,
            queue_start_ns: now_ns(),
        })?;
        Ok(ResponseHandle { rx })
    }

    /// Normalizes a request and places its inputs in their memory (a client's shared-memory
    /// region in a real Triton), without queueing it: benchmarks time from [`Server::submit_prepared`].
    pub fn prepare(&self, model: &str, req: InferRequest) -> Result<PreparedRequest> {
        let rt = self.latest(model)?;
        let cfg = rt.model.config();
        Ok(PreparedRequest(infer::prepare(
            &cfg,
            req,
            &self.shared.pool,
            true,
        )?))
    }

    /// Queues a request made by [`Server::prepare`]; its arrival time is now.
    pub fn submit_prepared(&self, model: &str, req: PreparedRequest) -> Result<ResponseHandle> {
        let arrival = now_ns();
        let rt = self.latest(model)?;
        let (tx, rx) = mpsc::channel();
        rt.queue.push(Pending {
            req: req.0,
            tx,
            arrival_ns: arrival,
            queue_start_ns: now_ns(),
        })?;
        Ok(ResponseHandle { rx })
    }

    /// Queue a request (normalized as Triton does; invalid requests fail here with
    /// INVALID_ARG and never reach the backend).
    pub fn submit(&self, model: &str, req: InferRequest) -> Result<ResponseHandle> {
        self.submit_inner(model, req, true)
    }

    /// TEST-ONLY: queue a request WITHOUT Triton's normalization, to test the backend's own
    /// defences against malformed requests. Real Triton never delivers such requests, so a
    /// backend never needs to be stricter than the normalized path.
    pub fn submit_unchecked(&self, model: &str, req: InferRequest) -> Result<ResponseHandle> {
        self.submit_inner(model, req, false)
    }

    /// Run one request and wait for its response.
    pub fn infer(&self, model: &str, req: InferRequest) -> Result<InferResponse> {
        self.submit(model, req)?.wait()
    }

    /// Every rule violation recorded so far (tests assert this is empty).
    pub fn violations(&self) -> Vec<String> {
        lock(&self.shared.violations).clone()
    }

    /// Number of `TRITONSERVER_Error` objects created during this server's backend calls and
    /// not deleted yet (0 when the backend does not leak errors).
    pub fn live_errors(&self) -> i64 {
        self.shared.live_errors.load(Ordering::SeqCst)
    }

    /// Backend-owned objects not deleted yet, by C type (only non-zero counts):
    /// `TRITONSERVER_Error`, `TRITONSERVER_Message` (from ModelConfig /
    /// MessageNewFromSerializedJson), `TRITONSERVER_BufferAttributes`,
    /// `TRITONBACKEND_ResponseFactory`. Objects created on threads the host does not know
    /// (the backend's own threads) are not attributed to a server and not counted.
    pub fn live_backend_objects(&self) -> std::collections::BTreeMap<String, i64> {
        let mut m: std::collections::BTreeMap<String, i64> = lock(&self.shared.owned)
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let e = self.live_errors();
        if e != 0 {
            m.insert("TRITONSERVER_Error".into(), e);
        }
        m
    }

    /// Buffers from `TRITONBACKEND_MemoryManagerAllocate` not freed yet.
    pub fn outstanding_allocations(&self) -> usize {
        lock(&self.shared.mm_allocs).len()
    }

    /// The text Triton's `/metrics` endpoint would serve (Prometheus text format): Triton's own
    /// per-model counters `nv_inference_request_success`, `nv_inference_request_failure`,
    /// `nv_inference_count` and `nv_inference_exec_count` (labels `model`, `version`), then every
    /// custom metric family the backend registered through `TRITONSERVER_MetricFamilyNew`.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        let mut rows: Vec<(String, u64, Value)> = Vec::new();
        for (name, rts) in lock(&self.models).iter() {
            for r in rts {
                rows.push((
                    name.clone(),
                    r.model.version,
                    r.model.stats.to_json(name, r.model.version),
                ));
            }
        }
        for (metric, help, path) in [
            (
                "nv_inference_request_success",
                "Number of successful inference requests, all batch sizes",
                "/inference_stats/success/count",
            ),
            (
                "nv_inference_request_failure",
                "Number of failed inference requests, all batch sizes",
                "/inference_stats/fail/count",
            ),
            (
                "nv_inference_count",
                "Number of inferences performed (does not include cached requests)",
                "/inference_count",
            ),
            (
                "nv_inference_exec_count",
                "Number of model executions performed (does not include cached requests)",
                "/execution_count",
            ),
        ] {
            if rows.is_empty() {
                break;
            }
            out.push_str(&format!(
                "# HELP {metric} {help}\n# TYPE {metric} counter\n"
            ));
            for (name, version, stats) in &rows {
                let v = stats.pointer(path).and_then(Value::as_u64).unwrap_or(0);
                out.push_str(&format!(
                    "{metric}{{model=\"{name}\",version=\"{version}\"}} {v}\n"
                ));
            }
        }
        out.push_str(&crate::abi::render_metrics(&self.shared));
        out
    }

    /// Captured `TRITONSERVER_LogMessage` lines.
    /// Handles the host has given out and that are still live, and dead ones it remembers in
    /// detail (for use-after-release messages), over the whole process. Both stay bounded
    /// however many requests pass (tests check it).
    pub fn handle_registry_counts() -> (usize, usize) {
        crate::handles::counts()
    }

    /// Captured `TRITONSERVER_LogMessage` lines (the last few thousand).
    pub fn log_lines(&self) -> Vec<LogLine> {
        lock(&self.shared.logs).clone()
    }

    /// Forgets the captured log lines.
    pub fn clear_log(&self) {
        lock(&self.shared.logs).clear();
    }

    /// Preferred instance groups the backend reported (None before the backend is loaded).
    pub fn preferred_instance_groups(&self) -> Option<Vec<PreferredGroup>> {
        lock(&self.backend)
            .as_ref()
            .map(|b| b.attr_handle_preferred.clone())
    }

    /// Execution policy the backend chose (None before the backend is loaded).
    pub fn execution_policy(&self) -> Option<u32> {
        lock(&self.backend)
            .as_ref()
            .map(|b| b.obj.policy.load(Ordering::SeqCst))
    }

    /// Output memory type to use for a client that prefers `m` on this host.
    pub fn effective_output_memory(&self, m: MemoryType) -> MemoryType {
        if m == MemoryType::Gpu && self.shared.pool.gpu_count() == 0 {
            MemoryType::Cpu
        } else {
            m
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let names: Vec<String> = lock(&self.models).keys().cloned().collect();
        for n in names {
            let _ = self.unload_model(&n);
        }
        if let Some(b) = lock(&self.backend).take() {
            {
                let _ctx = rules::enter(&self.shared, "TRITONBACKEND_Finalize", vec![]);
                if let Err(e) = b
                    .lib
                    .call1(b.lib.finalize, "TRITONBACKEND_Finalize", b.handle)
                {
                    self.host_log("ERROR", format!("TRITONBACKEND_Finalize failed: {e}"));
                }
            }
            handles::kill(b.handle, "finalized", None);
            handles::kill(b.obj.config_msg, "destroyed with its backend", None);
            handles::kill(b.obj.memory_manager, "destroyed with its backend", None);
        }
    }
}
