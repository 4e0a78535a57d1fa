// See ort_min.h. Slot numbers: index of the member in OrtApi of onnxruntime_c_api.h.
#include "ort_min.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

namespace rtdbl {
namespace ort {
namespace {

struct OrtStatus;
struct OrtEnv;
struct OrtSession;
struct OrtSessionOptions;
struct OrtValue;
struct OrtMemoryInfo;
struct OrtShapeInfo;

enum Slot : int {
    kCreateStatus = 0,
    kGetErrorMessage = 2,
    kCreateEnv = 3,
    kCreateSessionFromArray = 8,
    kRun = 9,
    kCreateSessionOptions = 10,
    kSetSessionGraphOptimizationLevel = 23,
    kSetIntraOpNumThreads = 24,
    kSetInterOpNumThreads = 25,
    kCreateTensorWithDataAsOrtValue = 49,
    kGetTensorMutableData = 51,
    kGetTensorElementType = 60,
    kGetDimensionsCount = 61,
    kGetDimensions = 62,
    kGetTensorTypeAndShape = 65,
    kCreateMemoryInfo = 68,
    kCreateCpuMemoryInfo = 69,
    kReleaseEnv = 92,
    kReleaseStatus = 93,
    kReleaseMemoryInfo = 94,
    kReleaseSession = 95,
    kReleaseValue = 96,
    kReleaseTensorTypeAndShapeInfo = 99,
    kReleaseSessionOptions = 100,
    kAddSessionConfigEntry = 130,
    kSessionOptionsAppendExecutionProvider_CUDA_V2 = 204,
    kCreateCUDAProviderOptions = 205,
    kUpdateCUDAProviderOptions = 206,
    kReleaseCUDAProviderOptions = 208,
    kUpdateCUDAProviderOptionsWithValue = 263,
};

struct ApiBase {
    void* const* (*GetApi)(uint32_t version);
    char const* (*GetVersionString)();
};

void* const* g_api = nullptr;
ApiBase const* g_base = nullptr;
std::mutex g_mem_mutex;
std::vector<std::pair<int, OrtMemoryInfo*>> g_cuda_mem;  // device -> "Cuda" memory info
OrtEnv* g_env = nullptr;
OrtMemoryInfo* g_cpu = nullptr;
std::string g_version;
std::string g_load_error;
std::once_flag g_once;

template <class Fn>
Fn fn(Slot s) {
    Fn f;
    void* p = g_api[s];
    std::memcpy(&f, &p, sizeof(f));
    return f;
}

// Turns an OrtStatus* into "" (success) or its message (and releases it).
std::string check(OrtStatus* st) {
    if (st == nullptr) {
        return std::string();
    }
    std::string msg = fn<char const* (*)(OrtStatus const*)>(kGetErrorMessage)(st);
    fn<void (*)(OrtStatus*)>(kReleaseStatus)(st);
    return msg.empty() ? std::string("ONNX Runtime error without message") : msg;
}

void do_load() {
    char const* path = std::getenv("RUSTTRT_TRT_DOUBLE_ORT");
    if (path == nullptr || *path == '\0') {
        path = std::getenv("ORT_DYLIB_PATH");
    }
    if (path == nullptr || *path == '\0') {
        path = "libonnxruntime.so";
    }
    void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
        char const* e = dlerror();
        g_load_error = std::string("cannot load ONNX Runtime '") + path + "': " + (e ? e : "?") +
                       " (set ORT_DYLIB_PATH)";
        return;
    }
    void* sym = dlsym(h, "OrtGetApiBase");
    if (sym == nullptr) {
        g_load_error = std::string("'") + path + "' has no OrtGetApiBase";
        return;
    }
    ApiBase const* (*get_base)();
    std::memcpy(&get_base, &sym, sizeof(get_base));
    ApiBase const* base = get_base();
    g_base = base;
    g_api = base->GetApi(13);
    if (g_api == nullptr) {
        g_load_error = std::string("ONNX Runtime '") + path + "' does not offer C API version 13";
        return;
    }
    g_version = base->GetVersionString();
    // Sanity check of the slot table: a status made by CreateStatus must read back.
    OrtStatus* probe = fn<OrtStatus* (*)(int, char const*)>(kCreateStatus)(1, "rtdbl-probe");
    if (check(probe) != "rtdbl-probe") {
        g_load_error = "ONNX Runtime C API slot table does not match (CreateStatus/GetErrorMessage)";
        g_api = nullptr;
        return;
    }
    std::string e = check(fn<OrtStatus* (*)(int, char const*, OrtEnv**)>(kCreateEnv)(3 /*ERROR*/, "rtdbl", &g_env));
    if (e.empty()) {
        e = check(fn<OrtStatus* (*)(int, int, OrtMemoryInfo**)>(kCreateCpuMemoryInfo)(0, 0, &g_cpu));
    }
    if (!e.empty()) {
        g_load_error = "ONNX Runtime initialisation failed: " + e;
        g_api = nullptr;
    }
}

struct ValueGuard {
    std::vector<OrtValue*> v;
    ~ValueGuard() {
        for (OrtValue* x : v) {
            if (x != nullptr) {
                fn<void (*)(OrtValue*)>(kReleaseValue)(x);
            }
        }
    }
};

size_t volume(std::vector<int64_t> const& s) {
    size_t n = 1;
    for (int64_t d : s) {
        n *= static_cast<size_t>(d < 0 ? 0 : d);
    }
    return n;
}

std::string cuda_mem(int device, OrtMemoryInfo** out) {
    std::lock_guard<std::mutex> g(g_mem_mutex);
    for (auto const& m : g_cuda_mem) {
        if (m.first == device) {
            *out = m.second;
            return std::string();
        }
    }
    std::string e = check(fn<OrtStatus* (*)(char const*, int, int, int, OrtMemoryInfo**)>(kCreateMemoryInfo)(
        "Cuda", 0 /*OrtDeviceAllocator*/, device, 0 /*OrtMemTypeDefault*/, out));
    if (e.empty()) {
        g_cuda_mem.emplace_back(device, *out);
    }
    return e;
}

std::string make_values(std::vector<TensorRef> const& ts, ValueGuard& g, int device = -1) {
    OrtMemoryInfo* mem = g_cpu;
    if (device >= 0) {
        std::string e = cuda_mem(device, &mem);
        if (!e.empty()) {
            return "CUDA memory info for device " + std::to_string(device) + ": " + e;
        }
    }
    for (TensorRef const& t : ts) {
        OrtValue* v = nullptr;
        size_t bytes = volume(t.shape) * elem_size(t.onnx_type);
        static char dummy[16];
        void* data = t.data != nullptr ? t.data : (bytes == 0 ? dummy : nullptr);
        std::string e = check(fn<OrtStatus* (*)(OrtMemoryInfo const*, void*, size_t, int64_t const*, size_t, int,
                                                OrtValue**)>(kCreateTensorWithDataAsOrtValue)(
            mem, data, bytes, t.shape.data(), t.shape.size(), t.onnx_type, &v));
        if (!e.empty()) {
            return "tensor '" + t.name + "': " + e;
        }
        g.v.push_back(v);
    }
    return std::string();
}

} // namespace

size_t elem_size(int32_t t) {
    switch (t) {
    case kFloat: case kInt32: case kUint32: return 4;
    case kUint8: case kInt8: case kBool: return 1;
    case kUint16: case kInt16: case kFloat16: case kBfloat16: return 2;
    case kInt64: case kUint64: case kDouble: return 8;
    default: return 0;
    }
}

bool load(std::string& err) {
    std::call_once(g_once, do_load);
    if (g_api == nullptr) {
        err = g_load_error;
        return false;
    }
    return true;
}

std::string version() { return g_version; }

std::unique_ptr<Session> Session::create(void const* onnx, size_t len, std::string const& external_dir,
                                         std::string& err, CudaOptions const* cuda) {
    if (!load(err)) {
        return nullptr;
    }
    OrtSessionOptions* so = nullptr;
    std::string e = check(fn<OrtStatus* (*)(OrtSessionOptions**)>(kCreateSessionOptions)(&so));
    if (e.empty()) {
        e = check(fn<OrtStatus* (*)(OrtSessionOptions*, int)>(kSetIntraOpNumThreads)(so, 1));
    }
    if (e.empty()) {
        e = check(fn<OrtStatus* (*)(OrtSessionOptions*, int)>(kSetInterOpNumThreads)(so, 1));
    }
    if (e.empty() && !external_dir.empty()) {
        e = check(fn<OrtStatus* (*)(OrtSessionOptions*, char const*, char const*)>(kAddSessionConfigEntry)(
            so, "session.model_external_initializers_file_folder_path", external_dir.c_str()));
    }
    if (e.empty() && cuda != nullptr) {
        // UNTESTED (no GPU run yet): CUDA execution provider on the caller's device and stream.
        if (g_base->GetApi(16) == nullptr) {
            e = "the CUDA execution provider path needs ONNX Runtime C API 16 or newer";
        } else {
            struct CudaProviderOptions;
            CudaProviderOptions* co = nullptr;
            e = check(fn<OrtStatus* (*)(CudaProviderOptions**)>(kCreateCUDAProviderOptions)(&co));
            if (e.empty()) {
                std::string dev = std::to_string(cuda->device);
                char const* keys[] = {"device_id", "do_copy_in_default_stream"};
                char const* vals[] = {dev.c_str(), "1"};
                e = check(fn<OrtStatus* (*)(CudaProviderOptions*, char const* const*, char const* const*, size_t)>(
                    kUpdateCUDAProviderOptions)(co, keys, vals, 2));
            }
            if (e.empty() && cuda->stream != nullptr) {
                e = check(fn<OrtStatus* (*)(CudaProviderOptions*, char const*, void*)>(
                    kUpdateCUDAProviderOptionsWithValue)(co, "user_compute_stream", cuda->stream));
            }
            if (e.empty()) {
                e = check(fn<OrtStatus* (*)(OrtSessionOptions*, CudaProviderOptions const*)>(
                    kSessionOptionsAppendExecutionProvider_CUDA_V2)(so, co));
            }
            if (co != nullptr) {
                fn<void (*)(CudaProviderOptions*)>(kReleaseCUDAProviderOptions)(co);
            }
            if (!e.empty()) {
                e = "CUDA execution provider: " + e;
            }
        }
    }
    std::unique_ptr<Session> s(new Session());
    if (e.empty()) {
        OrtSession* raw = nullptr;
        e = check(fn<OrtStatus* (*)(OrtEnv const*, void const*, size_t, OrtSessionOptions const*, OrtSession**)>(
            kCreateSessionFromArray)(g_env, onnx, len, so, &raw));
        s->mSession = raw;
    }
    if (so != nullptr) {
        fn<void (*)(OrtSessionOptions*)>(kReleaseSessionOptions)(so);
    }
    if (!e.empty()) {
        err = "ONNX Runtime could not create a session: " + e;
        return nullptr;
    }
    return s;
}

Session::~Session() {
    if (mSession != nullptr) {
        fn<void (*)(OrtSession*)>(kReleaseSession)(static_cast<OrtSession*>(mSession));
    }
}

using RunFn = OrtStatus* (*)(OrtSession*, void const*, char const* const*, OrtValue const* const*, size_t,
                             char const* const*, size_t, OrtValue**);

bool Session::run(std::vector<TensorRef> const& inputs, std::vector<TensorRef> const& outputs, std::string& err,
                  int device) {
    ValueGuard in, out;
    std::string e = make_values(inputs, in, device);
    if (e.empty()) {
        e = make_values(outputs, out, device);
    }
    if (!e.empty()) {
        err = e;
        return false;
    }
    std::vector<char const*> in_names, out_names;
    for (auto const& t : inputs) in_names.push_back(t.name.c_str());
    for (auto const& t : outputs) out_names.push_back(t.name.c_str());
    e = check(fn<RunFn>(kRun)(static_cast<OrtSession*>(mSession), nullptr, in_names.data(), in.v.data(),
                              in.v.size(), out_names.data(), out_names.size(), out.v.data()));
    if (!e.empty()) {
        err = "ONNX Runtime run failed: " + e;
        return false;
    }
    return true;
}

bool Session::run_alloc(std::vector<TensorRef> const& inputs, std::vector<std::string> const& output_names,
                        std::vector<std::vector<int64_t>>& shapes, std::vector<std::vector<uint8_t>>* data,
                        std::string& err) {
    ValueGuard in, out;
    std::string e = make_values(inputs, in);
    if (!e.empty()) {
        err = e;
        return false;
    }
    std::vector<char const*> in_names, out_names;
    for (auto const& t : inputs) in_names.push_back(t.name.c_str());
    for (auto const& n : output_names) out_names.push_back(n.c_str());
    out.v.assign(output_names.size(), nullptr);
    e = check(fn<RunFn>(kRun)(static_cast<OrtSession*>(mSession), nullptr, in_names.data(), in.v.data(),
                              in.v.size(), out_names.data(), out_names.size(), out.v.data()));
    if (!e.empty()) {
        err = "ONNX Runtime run failed: " + e;
        return false;
    }
    shapes.clear();
    if (data != nullptr) {
        data->clear();
    }
    for (size_t i = 0; i < out.v.size(); ++i) {
        OrtShapeInfo* info = nullptr;
        e = check(fn<OrtStatus* (*)(OrtValue const*, OrtShapeInfo**)>(kGetTensorTypeAndShape)(out.v[i], &info));
        size_t rank = 0;
        int elem = 0;
        std::vector<int64_t> dims;
        if (e.empty()) {
            e = check(fn<OrtStatus* (*)(OrtShapeInfo const*, size_t*)>(kGetDimensionsCount)(info, &rank));
        }
        if (e.empty()) {
            dims.resize(rank);
            e = check(fn<OrtStatus* (*)(OrtShapeInfo const*, int64_t*, size_t)>(kGetDimensions)(info, dims.data(), rank));
        }
        if (e.empty()) {
            e = check(fn<OrtStatus* (*)(OrtShapeInfo const*, int*)>(kGetTensorElementType)(info, &elem));
        }
        if (info != nullptr) {
            fn<void (*)(OrtShapeInfo*)>(kReleaseTensorTypeAndShapeInfo)(info);
        }
        if (!e.empty()) {
            err = "output '" + output_names[i] + "': " + e;
            return false;
        }
        shapes.push_back(dims);
        if (data != nullptr) {
            void* p = nullptr;
            e = check(fn<OrtStatus* (*)(OrtValue*, void**)>(kGetTensorMutableData)(out.v[i], &p));
            if (!e.empty()) {
                err = "output '" + output_names[i] + "': " + e;
                return false;
            }
            size_t bytes = volume(dims) * elem_size(elem);
            auto const* b = static_cast<uint8_t const*>(p);
            data->emplace_back(b, b + bytes);
        }
    }
    return true;
}

} // namespace ort
} // namespace rtdbl
