// rusttrt TensorRT shim: implements include/rusttrt_trt.h on top of TensorRT's C++ API.
//
// Compiled against one major release of the TensorRT headers (10.x or 11.x). The TensorRT
// libraries are opened at run time; the only symbols taken from them are the extern "C" factory
// and version functions, fetched with dlsym. Every other TensorRT call is an inline header method
// that dispatches through the object's implementation table, so this file links against no
// TensorRT symbol at all (scripts/check-trt-shim.sh verifies that on the object file).
//
// Never call the header's inline helpers createInferBuilder / createInferRuntime /
// nvonnxparser::createParser here: they reference the *_INTERNAL symbols directly.

#include "rusttrt_trt.h"

#include <NvInfer.h>
#include <NvInferRuntime.h>
#include <NvInferVersion.h>
#include <NvOnnxParser.h>

#include <dlfcn.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#if !defined(NV_TENSORRT_MAJOR) || NV_TENSORRT_MAJOR < 10
#error "rusttrt's TensorRT shim needs TensorRT 10 or newer headers"
#endif

// The Rust side (src/engine/tensorrt/ffi.rs) mirrors these layouts; its tests assert the same
// numbers for x86-64 / aarch64 Linux.
static_assert(sizeof(rt_dims) == 72 && offsetof(rt_dims, d) == 8, "rt_dims layout");
static_assert(sizeof(rt_dims) == sizeof(nvinfer1::Dims64), "rt_dims is not Dims64-sized");
static_assert(sizeof(rt_profile_input) == 224 && offsetof(rt_profile_input, max) == 152, "rt_profile_input layout");
static_assert(sizeof(rt_build_options) == 72 && offsetof(rt_build_options, profiles) == 24 &&
                  offsetof(rt_build_options, timing_cache_out) == 64,
              "rt_build_options layout");
static_assert(RT_MAX_DIMS == nvinfer1::Dims64::MAX_DIMS, "RT_MAX_DIMS differs from TensorRT's MAX_DIMS");

namespace {

using nvinfer1::Dims;
using nvinfer1::ILogger;
using Severity = nvinfer1::ILogger::Severity;

#define RT_STR2(x) #x
#define RT_STR(x) RT_STR2(x)

// ---------------------------------------------------------------------------------------------
// Errors

struct ShimError {
    rt_status code;
    std::string msg;
};

[[noreturn]] void raise(rt_status code, std::string msg) { throw ShimError{code, std::move(msg)}; }

void write_err(char* err, size_t errlen, std::string const& msg) noexcept {
    if (err == nullptr || errlen == 0) {
        return;
    }
    size_t n = msg.size() < errlen - 1 ? msg.size() : errlen - 1;
    std::memcpy(err, msg.data(), n);
    err[n] = '\0';
}

// Runs `body` and turns every exception into a status + message.
template <class F>
rt_status guarded(char* err, size_t errlen, F&& body) noexcept {
    try {
        write_err(err, errlen, std::string());
        return body();
    } catch (ShimError const& e) {
        write_err(err, errlen, e.msg);
        return e.code;
    } catch (std::bad_alloc const&) {
        write_err(err, errlen, "rusttrt TensorRT shim: out of host memory");
        return RT_ERR_INTERNAL;
    } catch (std::exception const& e) {
        write_err(err, errlen, std::string("rusttrt TensorRT shim: unexpected C++ exception: ") + e.what());
        return RT_ERR_INTERNAL;
    } catch (...) {
        write_err(err, errlen, "rusttrt TensorRT shim: unexpected non-standard C++ exception");
        return RT_ERR_INTERNAL;
    }
}

void require(bool cond, char const* what) {
    if (!cond) {
        raise(RT_ERR_INVALID_ARG, std::string("rusttrt TensorRT shim: null argument: ") + what);
    }
}

// ---------------------------------------------------------------------------------------------
// Logger: one process-wide ILogger (TensorRT keeps a single logger pointer) forwarding to the C
// callback. It also remembers the latest error messages so failures can quote them.

struct LogSink {
    rt_logger_fn fn = nullptr;
    void* user = nullptr;
    int32_t max_severity = RT_LOG_WARNING;
};

// Error messages logged by TensorRT on this thread since the last clear_errors().
thread_local std::string t_errors;

class ForwardingLogger final : public ILogger {
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override {
        try {
            auto sev = static_cast<int32_t>(severity);
            char const* text = msg != nullptr ? msg : "";
            if (sev <= static_cast<int32_t>(Severity::kERROR)) {
                if (t_errors.size() < 4096) {
                    if (!t_errors.empty()) {
                        t_errors += "; ";
                    }
                    t_errors += text;
                }
                std::lock_guard<std::mutex> g(mMutex);
                mLastError = text;
                ++mErrorSeq;
            }
            LogSink sink;
            {
                std::lock_guard<std::mutex> g(mMutex);
                sink = mSink;
            }
            if (sink.fn != nullptr && sev <= sink.max_severity) {
                sink.fn(sink.user, sev, text);
            }
        } catch (...) {
            // Logging must never throw into TensorRT.
        }
    }

    void set_sink(LogSink sink) {
        std::lock_guard<std::mutex> g(mMutex);
        mSink = sink;
    }

    // The latest error logged on any thread after error number `since` ("" if none).
    std::string last_error_since(uint64_t since) {
        std::lock_guard<std::mutex> g(mMutex);
        return mErrorSeq > since ? mLastError : std::string();
    }

    uint64_t error_seq() {
        std::lock_guard<std::mutex> g(mMutex);
        return mErrorSeq;
    }

private:
    std::mutex mMutex;
    LogSink mSink;
    std::string mLastError;
    uint64_t mErrorSeq = 0;
};

ForwardingLogger& logger() {
    // Leaked on purpose: TensorRT objects (and their worker threads) may log until process exit,
    // after static destructors have run.
    static ForwardingLogger* instance = new ForwardingLogger();
    return *instance;
}

// Number of errors logged process-wide when this thread's current shim call began.
thread_local uint64_t t_error_seq = 0;

void clear_errors() {
    t_errors.clear();
    t_error_seq = logger().error_seq();
}

// "<what>: <TensorRT's error messages>" (or a pointer to the log when nothing was captured).
std::string with_log(std::string what) {
    if (!t_errors.empty()) {
        return what + ": " + t_errors;
    }
    // An error TensorRT logged on another (worker) thread during this call; never one of an
    // earlier, unrelated call.
    std::string last = logger().last_error_since(t_error_seq);
    if (!last.empty()) {
        return what + " (TensorRT error logged meanwhile on another thread: " + last + ")";
    }
    return what + " (TensorRT logged no error; see the server log at verbose level)";
}

void log_warning(std::string const& msg) { logger().log(Severity::kWARNING, msg.c_str()); }

// ---------------------------------------------------------------------------------------------
// Dims helpers

Dims to_trt(rt_dims const& d, char const* tensor) {
    if (d.nb_dims < 0 || d.nb_dims > RT_MAX_DIMS || d.nb_dims > Dims::MAX_DIMS) {
        raise(RT_ERR_INVALID_ARG, std::string("tensor '") + tensor + "': rank " + std::to_string(d.nb_dims) +
                                      " is outside 0.." + std::to_string(RT_MAX_DIMS));
    }
    Dims out{};
    out.nbDims = d.nb_dims;
    for (int32_t i = 0; i < d.nb_dims; ++i) {
        out.d[i] = d.d[i];
    }
    return out;
}

rt_dims from_trt(Dims const& d) {
    rt_dims out{};
    out.nb_dims = d.nbDims;
    int32_t n = d.nbDims < 0 ? 0 : (d.nbDims > RT_MAX_DIMS ? RT_MAX_DIMS : d.nbDims);
    for (int32_t i = 0; i < n; ++i) {
        out.d[i] = d.d[i];
    }
    return out;
}

std::string dims_str(Dims const& d) {
    if (d.nbDims < 0) {
        return "[unknown rank]";
    }
    std::ostringstream s;
    s << '[';
    for (int32_t i = 0; i < d.nbDims; ++i) {
        s << (i ? "," : "") << d.d[i];
    }
    s << ']';
    return s.str();
}

bool has_dynamic_dim(Dims const& d) {
    for (int32_t i = 0; i < d.nbDims; ++i) {
        if (d.d[i] < 0) {
            return true;
        }
    }
    return false;
}

// ---------------------------------------------------------------------------------------------
// dlsym helpers

template <class Fn>
Fn sym(void* handle, char const* name) {
    void* p = dlsym(handle, name);
    Fn fn = nullptr;
    static_assert(sizeof(fn) == sizeof(p), "function and object pointers differ in size");
    std::memcpy(&fn, &p, sizeof(fn));
    return fn;
}

std::string dl_error() {
    char const* e = dlerror();
    return e != nullptr ? e : "unknown dlopen error";
}

rt_status copy_out(void const* data, size_t len, rt_bytes* out) {
    out->data = nullptr;
    out->len = 0;
    if (len == 0) {
        return RT_OK;
    }
    void* buf = std::malloc(len);
    if (buf == nullptr) {
        raise(RT_ERR_INTERNAL, "rusttrt TensorRT shim: cannot allocate " + std::to_string(len) + " bytes");
    }
    std::memcpy(buf, data, len);
    out->data = buf;
    out->len = len;
    return RT_OK;
}

} // namespace

// ---------------------------------------------------------------------------------------------
// Handles

struct rt_lib {
    using CreateFn = void* (*)(void* logger, int32_t version);
    using CreateParserFn = void* (*)(void* network, void* logger, int version);
    using VersionFn = int32_t (*)();
    using ParserVersionFn = int (*)();

    void* nvinfer = nullptr;
    void* parser = nullptr;
    CreateFn create_builder = nullptr;
    CreateFn create_runtime = nullptr;
    CreateParserFn create_parser = nullptr;
    int32_t version = 0;
    int32_t build = 0;
    int32_t parser_version = 0;
};

struct rt_network {
    rt_lib* lib = nullptr;
    bool strongly_typed = false;
    bool built = false;
    // Declaration order = reverse destruction order: the parser (it owns weight memory the
    // network refers to) goes first, the builder last.
    std::unique_ptr<nvinfer1::IBuilder> builder;
    std::unique_ptr<nvinfer1::INetworkDefinition> network;
    std::unique_ptr<nvonnxparser::IParser> parser;
};

struct rt_engine {
    rt_lib* lib = nullptr;
    // The runtime must outlive the engine: destroyed after it.
    std::unique_ptr<nvinfer1::IRuntime> runtime;
    std::unique_ptr<nvinfer1::ICudaEngine> engine;
};

struct rt_context {
    rt_engine* engine = nullptr;
    std::unique_ptr<nvinfer1::IExecutionContext> ctx;
};

// ---------------------------------------------------------------------------------------------
// Library

extern "C" void rt_bytes_free(rt_bytes* bytes) {
    if (bytes != nullptr) {
        std::free(bytes->data);
        bytes->data = nullptr;
        bytes->len = 0;
    }
}

extern "C" int32_t rt_abi_version(void) { return RT_ABI_VERSION; }

extern "C" int32_t rt_header_version(void) { return static_cast<int32_t>(NV_TENSORRT_VERSION); }

extern "C" void rt_set_logger(rt_logger_fn log_cb, void* log_user, int32_t max_severity) {
    try {
        LogSink sink;
        sink.fn = log_cb;
        sink.user = log_user;
        sink.max_severity = max_severity;
        logger().set_sink(sink);
    } catch (...) {
        // Nothing sensible to report; the previous sink stays.
    }
}

extern "C" rt_status rt_library_open(char const* nvinfer_path, char const* parser_path, rt_logger_fn log_cb,
                                     void* log_user, rt_lib** out, char* err, size_t errlen) {
    return guarded(err, errlen, [&]() -> rt_status {
        require(out != nullptr, "out");
        *out = nullptr;
        if (log_cb != nullptr) {
            rt_set_logger(log_cb, log_user, RT_LOG_INFO);
        }
        std::string inf = nvinfer_path != nullptr ? nvinfer_path : "libnvinfer.so." RT_STR(NV_TENSORRT_MAJOR);
        std::string onnx =
            parser_path != nullptr ? parser_path : "libnvonnxparser.so." RT_STR(NV_TENSORRT_MAJOR);
        auto lib = std::make_unique<rt_lib>();
        // Closes what was opened if we fail below.
        struct Closer {
            rt_lib* l;
            ~Closer() {
                if (l != nullptr) {
                    if (l->parser != nullptr) {
                        dlclose(l->parser);
                    }
                    if (l->nvinfer != nullptr) {
                        dlclose(l->nvinfer);
                    }
                }
            }
        } closer{lib.get()};

        lib->nvinfer = dlopen(inf.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (lib->nvinfer == nullptr) {
            raise(RT_ERR_NOT_FOUND, "cannot load TensorRT library '" + inf + "': " + dl_error() +
                                        " (rusttrt was compiled for TensorRT " RT_STR(NV_TENSORRT_MAJOR) ".x)");
        }
        auto lib_version = sym<rt_lib::VersionFn>(lib->nvinfer, "getInferLibVersion");
        auto lib_major = sym<rt_lib::VersionFn>(lib->nvinfer, "getInferLibMajorVersion");
        auto lib_build = sym<rt_lib::VersionFn>(lib->nvinfer, "getInferLibBuildVersion");
        lib->create_builder = sym<rt_lib::CreateFn>(lib->nvinfer, "createInferBuilder_INTERNAL");
        lib->create_runtime = sym<rt_lib::CreateFn>(lib->nvinfer, "createInferRuntime_INTERNAL");
        if (lib_version == nullptr || lib->create_builder == nullptr || lib->create_runtime == nullptr) {
            raise(RT_ERR_NOT_FOUND, "'" + inf +
                                        "' lacks getInferLibVersion / createInferBuilder_INTERNAL / "
                                        "createInferRuntime_INTERNAL: not a TensorRT core library");
        }
        lib->version = lib_version();
        lib->build = lib_build != nullptr ? lib_build() : 0;
        int32_t major = lib_major != nullptr ? lib_major() : lib->version / 10000;
        if (major != NV_TENSORRT_MAJOR) {
            std::string found = std::to_string(major) + "." + std::to_string(lib->version / 100 % 100) + "." +
                                std::to_string(lib->version % 100);
            raise(RT_ERR_UNSUPPORTED, "'" + inf + "' is TensorRT " + found +
                                          ", but rusttrt's TensorRT engine was compiled against TensorRT " +
                                          RT_STR(NV_TENSORRT_MAJOR) "." RT_STR(NV_TENSORRT_MINOR) "." RT_STR(
                                              NV_TENSORRT_PATCH) " headers; the major versions must match "
                                                                 "(rebuild rusttrt against this TensorRT)");
        }

        lib->parser = dlopen(onnx.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (lib->parser == nullptr) {
            raise(RT_ERR_NOT_FOUND, "cannot load the TensorRT ONNX parser '" + onnx + "': " + dl_error());
        }
        lib->create_parser = sym<rt_lib::CreateParserFn>(lib->parser, "createNvOnnxParser_INTERNAL");
        auto parser_version = sym<rt_lib::ParserVersionFn>(lib->parser, "getNvOnnxParserVersion");
        if (lib->create_parser == nullptr) {
            raise(RT_ERR_NOT_FOUND, "'" + onnx + "' lacks createNvOnnxParser_INTERNAL: not the TensorRT ONNX parser");
        }
        lib->parser_version = parser_version != nullptr ? parser_version() : 0;

        closer.l = nullptr;
        *out = lib.release();
        return RT_OK;
    });
}

extern "C" void rt_library_version(rt_lib const* lib, int32_t* version, int32_t* build, int32_t* parser_version) {
    if (version != nullptr) {
        *version = lib != nullptr ? lib->version : 0;
    }
    if (build != nullptr) {
        *build = lib != nullptr ? lib->build : 0;
    }
    if (parser_version != nullptr) {
        *parser_version = lib != nullptr ? lib->parser_version : 0;
    }
}

extern "C" void rt_library_destroy(rt_lib* lib) {
    // The shared objects stay loaded: TensorRT may keep worker threads and static state that
    // refer to its code until the process exits.
    delete lib;
}

// ---------------------------------------------------------------------------------------------
// Networks

extern "C" rt_status rt_network_parse(rt_lib* lib, void const* onnx, size_t len, char const* model_path,
                                      int32_t strongly_typed, rt_network** out, char* err, size_t errlen) {
    return guarded(err, errlen, [&]() -> rt_status {
        require(lib != nullptr, "lib");
        require(onnx != nullptr || len == 0, "onnx");
        require(out != nullptr, "out");
        *out = nullptr;
        clear_errors();
        auto net = std::make_unique<rt_network>();
        net->lib = lib;
#if NV_TENSORRT_MAJOR >= 11
        // TensorRT 11 networks are always strongly typed; the creation flag is deprecated.
        net->strongly_typed = true;
        nvinfer1::NetworkDefinitionCreationFlags flags = 0;
        (void) strongly_typed;
#else
        net->strongly_typed = strongly_typed != 0;
        nvinfer1::NetworkDefinitionCreationFlags flags = 0;
        if (net->strongly_typed) {
            flags |= 1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kSTRONGLY_TYPED);
        }
#endif
        net->builder.reset(
            static_cast<nvinfer1::IBuilder*>(lib->create_builder(&logger(), static_cast<int32_t>(NV_TENSORRT_VERSION))));
        if (!net->builder) {
            raise(RT_ERR_INTERNAL, with_log("TensorRT could not create a builder (is a CUDA device available?)"));
        }
        net->network.reset(net->builder->createNetworkV2(flags));
        if (!net->network) {
            raise(RT_ERR_INTERNAL, with_log("TensorRT could not create a network definition"));
        }
        net->parser.reset(static_cast<nvonnxparser::IParser*>(
            lib->create_parser(net->network.get(), &logger(), NV_ONNX_PARSER_VERSION)));
        if (!net->parser) {
            raise(RT_ERR_INTERNAL, with_log("TensorRT could not create an ONNX parser"));
        }
        if (!net->parser->parse(onnx, len, model_path)) {
            std::ostringstream s;
            s << "TensorRT's ONNX parser rejected the model";
            if (model_path != nullptr) {
                s << " '" << model_path << "'";
            }
            int n = net->parser->getNbErrors();
            for (int i = 0; i < n && i < 8; ++i) {
                nvonnxparser::IParserError const* e = net->parser->getError(i);
                if (e == nullptr) {
                    continue;
                }
                s << (i ? "; " : ": ");
                if (e->node() >= 0) {
                    s << "node " << e->node();
                    char const* nn = e->nodeName();
                    char const* op = e->nodeOperator();
                    if (nn != nullptr && *nn != '\0') {
                        s << " '" << nn << "'";
                    }
                    if (op != nullptr && *op != '\0') {
                        s << " (" << op << ")";
                    }
                    s << ": ";
                }
                s << (e->desc() != nullptr ? e->desc() : "no description");
            }
            if (n > 8) {
                s << "; ... " << (n - 8) << " more";
            }
            if (n == 0) {
                raise(RT_ERR_PARSE, with_log(s.str()));
            }
            raise(RT_ERR_PARSE, s.str());
        }
        *out = net.release();
        return RT_OK;
    });
}

extern "C" int32_t rt_network_input_count(rt_network const* net) {
    return net != nullptr && net->network ? net->network->getNbInputs() : 0;
}

extern "C" rt_status rt_network_input_info(rt_network const* net, int32_t index, char const** name, rt_dims* dims,
                                           int32_t* dtype, int32_t* is_shape_tensor, char* err, size_t errlen) {
    return guarded(err, errlen, [&]() -> rt_status {
        require(net != nullptr && net->network, "net");
        int32_t n = net->network->getNbInputs();
        if (index < 0 || index >= n) {
            raise(RT_ERR_INVALID_ARG, "network input index " + std::to_string(index) + " is outside 0.." +
                                          std::to_string(n - 1));
        }
        nvinfer1::ITensor* t = net->network->getInput(index);
        if (t == nullptr) {
            raise(RT_ERR_INTERNAL, "TensorRT returned no tensor for network input " + std::to_string(index));
        }
        if (name != nullptr) {
            *name = t->getName();
        }
        if (dims != nullptr) {
            *dims = from_trt(t->getDimensions());
        }
        if (dtype != nullptr) {
            *dtype = static_cast<int32_t>(t->getType());
        }
        if (is_shape_tensor != nullptr) {
            *is_shape_tensor = t->isShapeTensor() ? 1 : 0;
        }
        return RT_OK;
    });
}

namespace {

void add_profiles(rt_network& net, nvinfer1::IBuilderConfig& config, rt_build_options const& opts) {
    using nvinfer1::OptProfileSelector;
    require(opts.profiles != nullptr || opts.n_profiles == 0, "opts.profiles");
    for (size_t p = 0; p < opts.n_profiles; ++p) {
        rt_profile const& prof = opts.profiles[p];
        require(prof.inputs != nullptr || prof.n_inputs == 0, "profile inputs");
        nvinfer1::IOptimizationProfile* tp = net.builder->createOptimizationProfile();
        if (tp == nullptr) {
            raise(RT_ERR_INTERNAL, with_log("TensorRT could not create an optimization profile"));
        }
        for (size_t i = 0; i < prof.n_inputs; ++i) {
            rt_profile_input const& in = prof.inputs[i];
            require(in.name != nullptr, "profile input name");
            Dims mn = to_trt(in.min, in.name);
            Dims op = to_trt(in.opt, in.name);
            Dims mx = to_trt(in.max, in.name);
            // Checked here so the message names the input: TensorRT's isValid() below says only
            // "false", and the log may then hold an unrelated earlier error.
            bool ordered = mn.nbDims == op.nbDims && op.nbDims == mx.nbDims;
            for (int32_t k = 0; ordered && k < mn.nbDims; ++k) {
                ordered = mn.d[k] <= op.d[k] && op.d[k] <= mx.d[k];
            }
            if (!ordered) {
                raise(RT_ERR_INVALID_ARG, "optimization profile " + std::to_string(p) + ": input '" + in.name +
                                              "' needs min <= opt <= max of one rank, got min " + dims_str(mn) +
                                              " opt " + dims_str(op) + " max " + dims_str(mx));
            }
            if (!tp->setDimensions(in.name, OptProfileSelector::kMIN, mn) ||
                !tp->setDimensions(in.name, OptProfileSelector::kOPT, op) ||
                !tp->setDimensions(in.name, OptProfileSelector::kMAX, mx)) {
                raise(RT_ERR_INVALID_ARG, with_log("optimization profile " + std::to_string(p) + ": input '" +
                                                   in.name + "' rejected min " + dims_str(mn) + " opt " +
                                                   dims_str(op) + " max " + dims_str(mx)));
            }
        }
        // Every dynamic input needs a range in every profile; say which one is missing.
        for (int32_t k = 0; k < net.network->getNbInputs(); ++k) {
            nvinfer1::ITensor* t = net.network->getInput(k);
            if (t == nullptr || !has_dynamic_dim(t->getDimensions())) {
                continue;
            }
            bool found = false;
            for (size_t i = 0; i < prof.n_inputs && !found; ++i) {
                found = std::strcmp(prof.inputs[i].name, t->getName()) == 0;
            }
            if (!found) {
                raise(RT_ERR_INVALID_ARG, std::string("optimization profile ") + std::to_string(p) + ": input '" +
                                              t->getName() + "' has dynamic dims " + dims_str(t->getDimensions()) +
                                              " but the profile gives no min/opt/max for it");
            }
        }
        if (!tp->isValid()) {
            raise(RT_ERR_INVALID_ARG,
                  with_log("optimization profile " + std::to_string(p) + " is not valid (need min <= opt <= max)"));
        }
        if (config.addOptimizationProfile(tp) < 0) {
            raise(RT_ERR_INVALID_ARG, with_log("TensorRT refused optimization profile " + std::to_string(p)));
        }
    }
}

} // namespace

extern "C" rt_status rt_network_build(rt_network* net, rt_build_options const* opts, rt_bytes* out_plan, char* err,
                                      size_t errlen) {
    return guarded(err, errlen, [&]() -> rt_status {
        require(net != nullptr && net->network, "net");
        require(opts != nullptr, "opts");
        require(out_plan != nullptr, "out_plan");
        out_plan->data = nullptr;
        out_plan->len = 0;
        if (opts->timing_cache_out != nullptr) {
            opts->timing_cache_out->data = nullptr;
            opts->timing_cache_out->len = 0;
        }
        if (net->built) {
            raise(RT_ERR_INVALID_ARG, "this network was already built once; parse the model again");
        }
        net->built = true;
        clear_errors();

        std::unique_ptr<nvinfer1::IBuilderConfig> config(net->builder->createBuilderConfig());
        if (!config) {
            raise(RT_ERR_INTERNAL, with_log("TensorRT could not create a builder config"));
        }
#if NV_TENSORRT_MAJOR < 11
        if (opts->fp16 != 0 && !net->strongly_typed) {
            // kFP16 is deprecated since 10.12 (strong typing is the way forward) but is the only
            // way to get FP16 kernels from an FP32 ONNX on TensorRT 10; it is gone in 11.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
            config->setFlag(nvinfer1::BuilderFlag::kFP16);
#pragma GCC diagnostic pop
        }
#endif
        if (opts->workspace_bytes > 0) {
            config->setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE, static_cast<size_t>(opts->workspace_bytes));
        }
        if (opts->builder_optimization_level >= 0) {
            if (opts->builder_optimization_level > 5) {
                raise(RT_ERR_INVALID_ARG, "builder optimization level " +
                                              std::to_string(opts->builder_optimization_level) +
                                              " is outside 0..5");
            }
            config->setBuilderOptimizationLevel(opts->builder_optimization_level);
        }
        add_profiles(*net, *config, *opts);

        std::unique_ptr<nvinfer1::ITimingCache> cache;
        if (opts->use_timing_cache != 0) {
            require(opts->timing_cache != nullptr || opts->timing_cache_len == 0, "opts.timing_cache");
            if (opts->timing_cache_len > 0) {
                cache.reset(config->createTimingCache(opts->timing_cache, opts->timing_cache_len));
                if (!cache || !config->setTimingCache(*cache, false)) {
                    log_warning("rusttrt: the stored TensorRT timing cache (" + std::to_string(opts->timing_cache_len) +
                                " bytes) does not fit this TensorRT version / device; starting an empty one");
                    cache.reset();
                }
            }
            if (!cache) {
                cache.reset(config->createTimingCache(nullptr, 0));
                if (!cache || !config->setTimingCache(*cache, false)) {
                    raise(RT_ERR_INTERNAL, with_log("TensorRT could not create an empty timing cache"));
                }
                // Errors about the refused blob are not the build's errors.
                clear_errors();
            }
        }

        std::unique_ptr<nvinfer1::IHostMemory> plan(net->builder->buildSerializedNetwork(*net->network, *config));
        if (!plan || plan->size() == 0) {
            raise(RT_ERR_BUILD, with_log("TensorRT engine build failed"));
        }
        if (opts->use_timing_cache != 0 && opts->timing_cache_out != nullptr) {
            nvinfer1::ITimingCache const* used = config->getTimingCache();
            if (used != nullptr) {
                std::unique_ptr<nvinfer1::IHostMemory> blob(used->serialize());
                if (blob) {
                    copy_out(blob->data(), blob->size(), opts->timing_cache_out);
                }
            }
        }
        rt_status st = copy_out(plan->data(), plan->size(), out_plan);
        if (st != RT_OK) {
            rt_bytes_free(opts->timing_cache_out);
        }
        return st;
    });
}

extern "C" void rt_network_destroy(rt_network* net) { delete net; }

// ---------------------------------------------------------------------------------------------
// Engines

extern "C" rt_status rt_engine_load(rt_lib* lib, void const* plan, size_t len, rt_engine** out, char* err,
                                    size_t errlen) {
    return guarded(err, errlen, [&]() -> rt_status {
        require(lib != nullptr, "lib");
        require(plan != nullptr && len > 0, "plan");
        require(out != nullptr, "out");
        *out = nullptr;
        clear_errors();
        auto eng = std::make_unique<rt_engine>();
        eng->lib = lib;
        eng->runtime.reset(
            static_cast<nvinfer1::IRuntime*>(lib->create_runtime(&logger(), static_cast<int32_t>(NV_TENSORRT_VERSION))));
        if (!eng->runtime) {
            raise(RT_ERR_INTERNAL, with_log("TensorRT could not create a runtime (is a CUDA device available?)"));
        }
        eng->engine.reset(eng->runtime->deserializeCudaEngine(plan, len));
        if (!eng->engine) {
            raise(RT_ERR_DESERIALIZE,
                  with_log("TensorRT could not deserialize the engine plan (" + std::to_string(len) +
                           " bytes; built by another TensorRT version or for another GPU, or corrupt)"));
        }
        *out = eng.release();
        return RT_OK;
    });
}

extern "C" int32_t rt_engine_io_count(rt_engine const* engine) {
    return engine != nullptr && engine->engine ? engine->engine->getNbIOTensors() : 0;
}

extern "C" rt_status rt_engine_io_info(rt_engine const* engine, int32_t index, char const** name, int32_t* is_input,
                                       int32_t* dtype, rt_dims* dims, int32_t* plain_device, char* err,
                                       size_t errlen) {
    return guarded(err, errlen, [&]() -> rt_status {
        require(engine != nullptr && engine->engine, "engine");
        nvinfer1::ICudaEngine const& e = *engine->engine;
        int32_t n = e.getNbIOTensors();
        if (index < 0 || index >= n) {
            raise(RT_ERR_INVALID_ARG,
                  "engine I/O index " + std::to_string(index) + " is outside 0.." + std::to_string(n - 1));
        }
        char const* nm = e.getIOTensorName(index);
        if (nm == nullptr) {
            raise(RT_ERR_INTERNAL, "TensorRT returned no name for engine I/O tensor " + std::to_string(index));
        }
        if (name != nullptr) {
            *name = nm;
        }
        if (is_input != nullptr) {
            *is_input = e.getTensorIOMode(nm) == nvinfer1::TensorIOMode::kINPUT ? 1 : 0;
        }
        if (dtype != nullptr) {
            *dtype = static_cast<int32_t>(e.getTensorDataType(nm));
        }
        if (dims != nullptr) {
            *dims = from_trt(e.getTensorShape(nm));
        }
        if (plain_device != nullptr) {
            *plain_device = e.getTensorFormat(nm) == nvinfer1::TensorFormat::kLINEAR &&
                                    e.getTensorLocation(nm) == nvinfer1::TensorLocation::kDEVICE &&
                                    !e.isShapeInferenceIO(nm)
                                ? 1
                                : 0;
        }
        return RT_OK;
    });
}

extern "C" int32_t rt_engine_profile_count(rt_engine const* engine) {
    return engine != nullptr && engine->engine ? engine->engine->getNbOptimizationProfiles() : 0;
}

extern "C" rt_status rt_engine_profile_shape(rt_engine const* engine, char const* input, int32_t profile,
                                             int32_t selector, rt_dims* dims, char* err, size_t errlen) {
    return guarded(err, errlen, [&]() -> rt_status {
        require(engine != nullptr && engine->engine, "engine");
        require(input != nullptr, "input");
        require(dims != nullptr, "dims");
        nvinfer1::ICudaEngine const& e = *engine->engine;
        if (e.getTensorIOMode(input) != nvinfer1::TensorIOMode::kINPUT) {
            raise(RT_ERR_INVALID_ARG, std::string("'") + input + "' is not an input of this engine");
        }
        if (profile < 0 || profile >= e.getNbOptimizationProfiles()) {
            raise(RT_ERR_INVALID_ARG, "optimization profile " + std::to_string(profile) + " does not exist (engine has " +
                                          std::to_string(e.getNbOptimizationProfiles()) + ")");
        }
        if (selector < 0 || selector > 2) {
            raise(RT_ERR_INVALID_ARG, "profile selector " + std::to_string(selector) + " is not 0 (min), 1 (opt) or 2 (max)");
        }
        *dims = from_trt(e.getProfileShape(input, profile, static_cast<nvinfer1::OptProfileSelector>(selector)));
        return RT_OK;
    });
}

extern "C" void rt_engine_destroy(rt_engine* engine) { delete engine; }

// ---------------------------------------------------------------------------------------------
// Execution contexts

extern "C" rt_status rt_context_new(rt_engine* engine, rt_context** out, char* err, size_t errlen) {
    return guarded(err, errlen, [&]() -> rt_status {
        require(engine != nullptr && engine->engine, "engine");
        require(out != nullptr, "out");
        *out = nullptr;
        clear_errors();
        auto c = std::make_unique<rt_context>();
        c->engine = engine;
        c->ctx.reset(engine->engine->createExecutionContext());
        if (!c->ctx) {
            raise(RT_ERR_INTERNAL, with_log("TensorRT could not create an execution context (device memory?)"));
        }
        *out = c.release();
        return RT_OK;
    });
}

extern "C" rt_status rt_context_set_profile(rt_context* ctx, int32_t profile, void* stream, char* err, size_t errlen) {
    return guarded(err, errlen, [&]() -> rt_status {
        require(ctx != nullptr && ctx->ctx, "ctx");
        clear_errors();
        if (!ctx->ctx->setOptimizationProfileAsync(profile, static_cast<cudaStream_t>(stream))) {
            raise(RT_ERR_INVALID_ARG, with_log("TensorRT refused to switch to optimization profile " +
                                               std::to_string(profile)));
        }
        return RT_OK;
    });
}

extern "C" rt_status rt_context_set_input_shape(rt_context* ctx, char const* name, rt_dims const* dims, char* err,
                                                size_t errlen) {
    return guarded(err, errlen, [&]() -> rt_status {
        require(ctx != nullptr && ctx->ctx, "ctx");
        require(name != nullptr, "name");
        require(dims != nullptr, "dims");
        clear_errors();
        Dims d = to_trt(*dims, name);
        if (!ctx->ctx->setInputShape(name, d)) {
            nvinfer1::ICudaEngine const& e = *ctx->engine->engine;
            std::string msg = std::string("input '") + name + "': shape " + dims_str(d) + " was refused";
            if (e.getTensorIOMode(name) != nvinfer1::TensorIOMode::kINPUT) {
                msg += " (the engine has no such input)";
            } else {
                int32_t p = ctx->ctx->getOptimizationProfile();
                if (p >= 0) {
                    msg += " (optimization profile " + std::to_string(p) + " allows " +
                           dims_str(e.getProfileShape(name, p, nvinfer1::OptProfileSelector::kMIN)) + " .. " +
                           dims_str(e.getProfileShape(name, p, nvinfer1::OptProfileSelector::kMAX)) + ")";
                }
            }
            raise(RT_ERR_INVALID_ARG, with_log(msg));
        }
        return RT_OK;
    });
}

extern "C" rt_status rt_context_set_tensor_address(rt_context* ctx, char const* name, void* ptr, char* err,
                                                   size_t errlen) {
    return guarded(err, errlen, [&]() -> rt_status {
        require(ctx != nullptr && ctx->ctx, "ctx");
        require(name != nullptr, "name");
        clear_errors();
        if (!ctx->ctx->setTensorAddress(name, ptr)) {
            raise(RT_ERR_INVALID_ARG, with_log(std::string("tensor '") + name + "': TensorRT refused its address"));
        }
        return RT_OK;
    });
}

extern "C" rt_status rt_context_tensor_shape(rt_context const* ctx, char const* name, rt_dims* dims, char* err,
                                             size_t errlen) {
    return guarded(err, errlen, [&]() -> rt_status {
        require(ctx != nullptr && ctx->ctx, "ctx");
        require(name != nullptr, "name");
        require(dims != nullptr, "dims");
        if (ctx->engine->engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kNONE) {
            raise(RT_ERR_INVALID_ARG, std::string("the engine has no I/O tensor '") + name + "'");
        }
        *dims = from_trt(ctx->ctx->getTensorShape(name));
        return RT_OK;
    });
}

extern "C" rt_status rt_context_enqueue(rt_context* ctx, void* stream, char* err, size_t errlen) {
    return guarded(err, errlen, [&]() -> rt_status {
        require(ctx != nullptr && ctx->ctx, "ctx");
        clear_errors();
        if (!ctx->ctx->allInputDimensionsSpecified()) {
            // Name the inputs still without a shape (after a profile switch, all dynamic ones).
            std::string missing;
            nvinfer1::ICudaEngine const& e = *ctx->engine->engine;
            for (int32_t i = 0; i < e.getNbIOTensors(); ++i) {
                char const* n = e.getIOTensorName(i);
                if (n != nullptr && e.getTensorIOMode(n) == nvinfer1::TensorIOMode::kINPUT &&
                    has_dynamic_dim(ctx->ctx->getTensorShape(n))) {
                    missing += (missing.empty() ? "'" : ", '") + std::string(n) + "'";
                }
            }
            raise(RT_ERR_INVALID_ARG, "not every input shape was set before enqueue" +
                                          (missing.empty() ? std::string() : " (no shape for " + missing + ")"));
        }
        if (!ctx->ctx->enqueueV3(static_cast<cudaStream_t>(stream))) {
            raise(RT_ERR_INTERNAL, with_log("TensorRT enqueueV3 failed"));
        }
        return RT_OK;
    });
}

extern "C" void rt_context_destroy(rt_context* ctx) { delete ctx; }
