/*
 * rusttrt_trt.h - the plain C interface of rusttrt's TensorRT shim (src/engine/tensorrt/shim.cpp).
 *
 * The shim is compiled against one major release of TensorRT's C++ headers and loads the
 * matching libraries at run time (dlopen); it never links against libnvinfer. Everything that
 * crosses this interface is a C type: opaque handles, fixed-size dimension records, byte
 * buffers that the shim allocates and rt_bytes_free releases.
 *
 * Conventions
 *   - Every function that can fail returns an rt_status (RT_OK = 0) and writes a NUL-terminated
 *     message into the caller's buffer `err` of `errlen` bytes (truncated if needed; `err` may be
 *     NULL when errlen is 0). Objects are handed out through out-parameters.
 *   - No C++ exception leaves the shim: each entry point catches everything.
 *   - The shim does not choose the CUDA device: the caller makes the right device current on the
 *     calling thread before rt_network_build, rt_engine_load, rt_context_new and rt_context_enqueue.
 *   - Thread safety: an rt_lib and an rt_engine may be used from several threads at once;
 *     an rt_network and an rt_context must be used by one thread at a time.
 *   - Destroy order: contexts, then their engine; networks and engines before their library.
 */
#ifndef RUSTTRT_TRT_H
#define RUSTTRT_TRT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes ---------------------------------------------------------------------- */

typedef int32_t rt_status;

#define RT_OK 0
/* A caller argument is wrong (null pointer, unknown tensor name, shape out of range, ...). */
#define RT_ERR_INVALID_ARG 1
/* A library or symbol was not found (TensorRT not installed, wrong path). */
#define RT_ERR_NOT_FOUND 2
/* The loaded TensorRT does not match what the shim was compiled for, or a feature is absent. */
#define RT_ERR_UNSUPPORTED 3
/* The ONNX model could not be parsed into a TensorRT network. */
#define RT_ERR_PARSE 4
/* The engine build failed (see the message and the log). */
#define RT_ERR_BUILD 5
/* A plan could not be deserialized (other TensorRT version / GPU, corrupt bytes). */
#define RT_ERR_DESERIALIZE 6
/* Anything else (allocation failure, unexpected exception, TensorRT call returned false). */
#define RT_ERR_INTERNAL 7

/* ---- plain data ------------------------------------------------------------------------ */

/* Same limit as TensorRT's Dims64::MAX_DIMS. */
#define RT_MAX_DIMS 8

typedef struct rt_dims {
    int32_t nb_dims;          /* rank; -1 = unknown */
    int64_t d[RT_MAX_DIMS];   /* extents; -1 = dynamic */
} rt_dims;

/* Bytes allocated by the shim; release with rt_bytes_free. */
typedef struct rt_bytes {
    void* data;
    size_t len;
} rt_bytes;

void rt_bytes_free(rt_bytes* bytes);

/* TensorRT's ILogger severities (same numbers). */
#define RT_LOG_INTERNAL_ERROR 0
#define RT_LOG_ERROR 1
#define RT_LOG_WARNING 2
#define RT_LOG_INFO 3
#define RT_LOG_VERBOSE 4

/* Receives TensorRT's log messages; may be called from any thread, concurrently. */
typedef void (*rt_logger_fn)(void* user, int32_t severity, const char* msg);

/* Element types: TensorRT's DataType numbers (kFLOAT = 0, kHALF = 1, kINT8 = 2, kINT32 = 3,
 * kBOOL = 4, kUINT8 = 5, kFP8 = 6, kBF16 = 7, kINT64 = 8, kINT4 = 9, kFP4 = 10, kE8M0 = 11). */
#define RT_DTYPE_FLOAT 0
#define RT_DTYPE_HALF 1
#define RT_DTYPE_INT8 2
#define RT_DTYPE_INT32 3
#define RT_DTYPE_BOOL 4
#define RT_DTYPE_UINT8 5
#define RT_DTYPE_FP8 6
#define RT_DTYPE_BF16 7
#define RT_DTYPE_INT64 8
#define RT_DTYPE_INT4 9
#define RT_DTYPE_FP4 10
#define RT_DTYPE_E8M0 11

/* ---- library ---------------------------------------------------------------------------- */

typedef struct rt_lib rt_lib;

/* Version of this C interface. The shim is its own shared library
 * (libtriton_rusttrt_tensorrt.so, one per TensorRT major version) that the backend dlopens; the
 * backend refuses a library whose rt_abi_version() differs from the RT_ABI_VERSION it was
 * compiled with. Bump it on any change of a signature, struct or meaning in this file. */
#define RT_ABI_VERSION 1
int32_t rt_abi_version(void);

/* NV_TENSORRT_VERSION of the headers the shim was compiled with (MAJOR*10000+MINOR*100+PATCH). */
int32_t rt_header_version(void);

/* Sets the process-wide log callback and the most verbose severity forwarded (RT_LOG_*).
 * TensorRT keeps one logger per process, so there is one callback; a later call replaces it.
 * `log_cb` may be NULL (messages are then dropped). */
void rt_set_logger(rt_logger_fn log_cb, void* log_user, int32_t max_severity);

/* Opens libnvinfer and libnvonnxparser (NULL path = the soname of the compiled-for major,
 * "libnvinfer.so.<MAJOR>" / "libnvonnxparser.so.<MAJOR>"), resolves the factory entry points and
 * refuses a library whose major version differs from the headers'. `log_cb` (may be NULL) is
 * installed as by rt_set_logger with max severity RT_LOG_INFO. The libraries stay loaded for the
 * life of the process (TensorRT keeps threads and static state). */
rt_status rt_library_open(const char* nvinfer_path, const char* parser_path, rt_logger_fn log_cb,
                          void* log_user, rt_lib** out, char* err, size_t errlen);

/* getInferLibVersion() of the loaded library (MAJOR*10000+MINOR*100+PATCH) and its build number
 * (getInferLibBuildVersion(), 0 if the symbol is absent), and getNvOnnxParserVersion(). */
void rt_library_version(const rt_lib* lib, int32_t* version, int32_t* build, int32_t* parser_version);

void rt_library_destroy(rt_lib* lib);

/* ---- building: parse, inspect the inputs, build ---------------------------------------- */

typedef struct rt_network rt_network;

/* Parses an ONNX model from memory into a new network. `model_path` is the absolute path of the
 * .onnx file (external weight files are resolved beside it); may be NULL for self-contained
 * models. `strongly_typed`: build exactly the ONNX types (always so with TensorRT 11). */
rt_status rt_network_parse(rt_lib* lib, const void* onnx, size_t len, const char* model_path,
                           int32_t strongly_typed, rt_network** out, char* err, size_t errlen);

int32_t rt_network_input_count(const rt_network* net);

/* Name (borrowed from the network, valid until it is destroyed), dims as parsed (-1 = dynamic),
 * dtype (RT_DTYPE_*) and whether the input is a shape tensor. */
rt_status rt_network_input_info(const rt_network* net, int32_t index, const char** name,
                                rt_dims* dims, int32_t* dtype, int32_t* is_shape_tensor, char* err,
                                size_t errlen);

/* One input's range in one optimization profile. */
typedef struct rt_profile_input {
    const char* name;
    rt_dims min;
    rt_dims opt;
    rt_dims max;
} rt_profile_input;

typedef struct rt_profile {
    const rt_profile_input* inputs;
    size_t n_inputs;
} rt_profile;

typedef struct rt_build_options {
    /* Allow FP16 kernels (TensorRT 10, weakly typed networks: BuilderFlag::kFP16). With TensorRT 11
     * there is no such flag: FP16 means the ONNX is already FP16 and the flag is ignored. */
    int32_t fp16;
    /* Workspace memory pool limit in bytes; 0 = TensorRT's default. */
    uint64_t workspace_bytes;
    /* Builder optimization level 0..5; negative = TensorRT's default (3). */
    int32_t builder_optimization_level;
    /* Optimization profiles; n_profiles = 0 only for networks without dynamic inputs. */
    const rt_profile* profiles;
    size_t n_profiles;
    /* Timing cache: use_timing_cache != 0 attaches a cache made from (timing_cache,
     * timing_cache_len) (empty when len is 0; a blob that does not fit this device/version is
     * replaced by an empty cache with a warning in the log); after the build its serialized form
     * goes to *timing_cache_out (may be NULL to discard). */
    int32_t use_timing_cache;
    const void* timing_cache;
    size_t timing_cache_len;
    rt_bytes* timing_cache_out;
} rt_build_options;

/* Builds a serialized engine ("plan") into *out_plan (free with rt_bytes_free). The network may be
 * built once; destroy it afterwards. */
rt_status rt_network_build(rt_network* net, const rt_build_options* opts, rt_bytes* out_plan,
                           char* err, size_t errlen);

void rt_network_destroy(rt_network* net);

/* ---- engines ------------------------------------------------------------------------------ */

typedef struct rt_engine rt_engine;

/* Deserializes a plan on the current CUDA device. The plan bytes may be freed afterwards. */
rt_status rt_engine_load(rt_lib* lib, const void* plan, size_t len, rt_engine** out, char* err,
                         size_t errlen);

int32_t rt_engine_io_count(const rt_engine* engine);

/* Name (borrowed from the engine), whether it is an input, dtype (RT_DTYPE_*), engine dims
 * (-1 = dynamic), whether its memory format is linear (row-major) and it lives on the device. */
rt_status rt_engine_io_info(const rt_engine* engine, int32_t index, const char** name,
                            int32_t* is_input, int32_t* dtype, rt_dims* dims, int32_t* plain_device,
                            char* err, size_t errlen);

int32_t rt_engine_profile_count(const rt_engine* engine);

/* selector: 0 = min, 1 = opt, 2 = max (TensorRT's OptProfileSelector). Inputs only. */
rt_status rt_engine_profile_shape(const rt_engine* engine, const char* input, int32_t profile,
                                  int32_t selector, rt_dims* dims, char* err, size_t errlen);

void rt_engine_destroy(rt_engine* engine);

/* ---- execution contexts --------------------------------------------------------------------- */

typedef struct rt_context rt_context;

/* A new execution context (own activation memory, profile 0) on the current device. */
rt_status rt_context_new(rt_engine* engine, rt_context** out, char* err, size_t errlen);

/* Switches to another optimization profile; `stream` is a cudaStream_t. */
rt_status rt_context_set_profile(rt_context* ctx, int32_t profile, void* stream, char* err,
                                 size_t errlen);

rt_status rt_context_set_input_shape(rt_context* ctx, const char* name, const rt_dims* dims,
                                     char* err, size_t errlen);

/* Device address of an input or output; must stay valid until the enqueued work has finished. */
rt_status rt_context_set_tensor_address(rt_context* ctx, const char* name, void* ptr, char* err,
                                        size_t errlen);

/* Shape of a tensor given the input shapes set so far (outputs: -1 where data-dependent). */
rt_status rt_context_tensor_shape(const rt_context* ctx, const char* name, rt_dims* dims,
                                  char* err, size_t errlen);

/* Enqueues inference on `stream` (a cudaStream_t); asynchronous. */
rt_status rt_context_enqueue(rt_context* ctx, void* stream, char* err, size_t errlen);

void rt_context_destroy(rt_context* ctx);

#ifdef __cplusplus
}
#endif

#endif /* RUSTTRT_TRT_H */
