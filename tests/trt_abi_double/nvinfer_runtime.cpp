// TensorRT ABI double, libnvinfer part 2: version entry points, runtime, plan reader, engine,
// execution context (runs the plan's ONNX with ONNX Runtime at the addresses the caller set).
#include "nvinfer_internal.h"

#include "ort_min.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <sstream>

using namespace nvinfer1;

namespace rtdbl {

PlanData read_plan(void const* blob, size_t size) {
    if (blob == nullptr || size < kPlanHeaderSize) {
        throw ReadError("the blob has " + std::to_string(size) + " bytes, less than a plan header");
    }
    Reader h(static_cast<uint8_t const*>(blob), kPlanHeaderSize);
    char magic[8];
    h.raw(magic, 8);
    if (std::memcmp(magic, kPlanMagic, 8) != 0) {
        throw ReadError("not a serialized engine (bad magic)");
    }
    uint32_t format = h.u32();
    PlanData p;
    p.major = h.i32();
    p.minor = h.i32();
    p.patch = h.i32();
    if (p.major != NV_TENSORRT_MAJOR || p.minor != NV_TENSORRT_MINOR || p.patch != NV_TENSORRT_PATCH) {
        throw ReadError("the engine plan was built by TensorRT " + std::to_string(p.major) + "." +
                        std::to_string(p.minor) + "." + std::to_string(p.patch) + ", this is TensorRT " +
                        std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "." +
                        std::to_string(NV_TENSORRT_PATCH) +
                        " (serialized engines only deserialize under the TensorRT version that built them)");
    }
    if (format != kPlanFormat) {
        throw ReadError("plan format " + std::to_string(format) + " is not " + std::to_string(kPlanFormat));
    }
    uint64_t len = h.u64();
    uint64_t hash = h.u64();
    if (len != size - kPlanHeaderSize) {
        throw ReadError("the plan says " + std::to_string(len) + " payload bytes but " +
                        std::to_string(size - kPlanHeaderSize) + " follow the header (truncated or padded)");
    }
    uint8_t const* pay = static_cast<uint8_t const*>(blob) + kPlanHeaderSize;
    if (fnv1a(pay, len) != hash) {
        throw ReadError("checksum mismatch (corrupt plan)");
    }
    Reader r(pay, len);
    p.builder_flags = r.u32();
    p.opt_level = r.i32();
    p.workspace = r.u64();
    p.network_flags = r.u32();
    uint32_t n = r.u32();
    for (uint32_t i = 0; i < n; ++i) p.model.inputs.push_back(read_tensor(r));
    n = r.u32();
    for (uint32_t i = 0; i < n; ++i) p.model.outputs.push_back(read_tensor(r));
    n = r.u32();
    for (uint32_t i = 0; i < n; ++i) {
        ProfileData prof;
        uint32_t m = r.u32();
        for (uint32_t j = 0; j < m; ++j) {
            std::string name = r.str();
            std::array<Dims, 3> ds{};
            for (Dims& d : ds) {
                d.nbDims = r.i32();
                if (d.nbDims < 0 || d.nbDims > Dims::MAX_DIMS) {
                    throw ReadError("bad profile rank");
                }
                for (int32_t k = 0; k < d.nbDims; ++k) d.d[k] = r.i64();
            }
            prof[name] = ds;
        }
        p.profiles.push_back(prof);
    }
    p.model.external_dir = r.str();
    p.model.onnx = r.bytes();
    if (!r.done()) {
        throw ReadError("trailing bytes in the plan payload");
    }
    return p;
}

namespace {

struct RuntimeState {
    std::atomic<int32_t> engines{0};
};

// Everything an engine knows; contexts share it so that a wrong destruction order is reported
// instead of crashing.
// RUSTTRT_TRT_DOUBLE_EP=cuda: execute with ONNX Runtime's CUDA execution provider on the device
// current at enqueueV3 and the stream given to it, reading/writing the device addresses set with
// setTensorAddress. UNTESTED: written for the GPU machine, never run there yet. Default: CPU
// (host addresses, as the fake libcuda hands out).
bool cuda_mode() {
    char const* v = std::getenv("RUSTTRT_TRT_DOUBLE_EP");
    return v != nullptr && std::strcmp(v, "cuda") == 0;
}

// The CUDA device current on this thread (driver API, dlopen'ed: the double links no CUDA).
bool current_device(int& dev, std::string& why) {
    static void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
        why = "libcuda.so.1 not found";
        return false;
    }
    void* p = dlsym(h, "cuCtxGetDevice");
    int (*get)(int*) = nullptr;
    std::memcpy(&get, &p, sizeof(p));
    int rc = get != nullptr ? get(&dev) : -1;
    if (rc != 0) {
        why = "cuCtxGetDevice failed (" + std::to_string(rc) + "): no current CUDA context";
        return false;
    }
    return true;
}

struct EngineState {
    PlanData plan;
    std::unique_ptr<ort::Session> session;  // CPU: execution (CPU mode) and output-shape inference
    bool cuda = false;
    std::vector<TensorDesc const*> io;  // inputs, then outputs
    std::atomic<int32_t> contexts{0};
    std::atomic<bool> alive{true};
    std::shared_ptr<RuntimeState> runtime;
    std::mutex shape_mutex;
    std::map<std::string, std::vector<std::vector<int64_t>>> shape_cache;  // input shapes -> output shapes

    TensorDesc const* find(char const* name) const {
        if (name == nullptr) {
            return nullptr;
        }
        for (TensorDesc const* t : io) {
            if (t->name == name) {
                return t;
            }
        }
        return nullptr;
    }
    bool is_input(TensorDesc const* t) const { return t >= plan.model.inputs.data() && t < plan.model.inputs.data() + plan.model.inputs.size(); }
};

size_t volume(std::vector<int64_t> const& s) {
    size_t n = 1;
    for (int64_t d : s) n *= static_cast<size_t>(d < 0 ? 0 : d);
    return n;
}

std::string vec_str(std::vector<int64_t> const& v) { return dims_str(to_dims(v)); }

class Engine;

class Context final : public IExecutionContext, public rtdbl_gen::StubVExecutionContext {
public:
    Context(std::shared_ptr<EngineState> st, ICudaEngine const* eng) : mSt(std::move(st)), mEngine(eng) {
        mImpl = this;
        mSt->contexts.fetch_add(1);
    }
    ~Context() noexcept override { mSt->contexts.fetch_sub(1); }

    IExecutionContext* getPImpl() noexcept override { return this; }
    ICudaEngine const& getEngine() const noexcept override { return *mEngine; }
    void setName(char const* n) noexcept override {
        RTDBL_GUARDED_VOID("IExecutionContext::setName", { mName = n != nullptr ? n : ""; });
    }
    char const* getName() const noexcept override { return mName.c_str(); }
    int32_t getOptimizationProfile() const noexcept override { return mProfile; }

    bool setOptimizationProfileAsync(int32_t index, cudaStream_t) noexcept override {
        return guard<bool>("IExecutionContext::setOptimizationProfileAsync", false, [&]() {
            int32_t n = static_cast<int32_t>(mSt->plan.profiles.size());
            if (!alive("IExecutionContext::setOptimizationProfileAsync")) {
                return false;
            }
            if (index < 0 || index >= n) {
                api_error("IExecutionContext::setOptimizationProfileAsync",
                          "profile index " + std::to_string(index) + " is outside 0.." + std::to_string(n - 1));
                return false;
            }
            if (!mShapes.empty() && index != mProfile) {
                log(Severity::kWARNING, "IExecutionContext::setOptimizationProfileAsync: switching from profile " +
                                            std::to_string(mProfile) + " to " + std::to_string(index) +
                                            " discards the input shapes set so far (setOptimizationProfileAsync must "
                                            "be called before setInputShape)");
            }
            if (index != mProfile) {
                mShapes.clear();
                mSwitched = true;
            }
            mProfile = index;
            return true;
        });
    }

    bool setInputShape(char const* name, Dims const& dims) noexcept override {
        return guard<bool>("IExecutionContext::setInputShape", false, [&]() {
            char const* api = "IExecutionContext::setInputShape";
            if (!alive(api)) {
                return false;
            }
            TensorDesc const* t = mSt->find(name);
            if (t == nullptr || !mSt->is_input(t)) {
                api_error(api, std::string("'") + (name ? name : "(null)") + "' is not an input tensor of the engine");
                return false;
            }
            if (dims.nbDims != static_cast<int32_t>(t->dims.size())) {
                api_error(api, "input '" + t->name + "': shape " + dims_str(dims) + " has rank " +
                                   std::to_string(dims.nbDims) + ", the engine expects " + vec_str(t->dims));
                return false;
            }
            auto const& range = mSt->plan.profiles[mProfile].at(t->name);
            for (int32_t i = 0; i < dims.nbDims; ++i) {
                if (dims.d[i] < range[0].d[i] || dims.d[i] > range[2].d[i]) {
                    api_error(api, "input '" + t->name + "': shape " + dims_str(dims) +
                                       " is outside optimization profile " + std::to_string(mProfile) + " (min " +
                                       dims_str(range[0]) + ", max " + dims_str(range[2]) + ") in dimension " +
                                       std::to_string(i));
                    return false;
                }
            }
            mShapes[t->name] = from_dims(dims);
            return true;
        });
    }

    bool allInputDimensionsSpecified() const noexcept override {
        return guard<bool>("IExecutionContext::allInputDimensionsSpecified", false,
                           [&]() { return alive("IExecutionContext::allInputDimensionsSpecified") && missing_shapes().empty(); });
    }
#if NV_TENSORRT_MAJOR < 11
    bool allInputShapesSpecified() const noexcept override { return true; }
#endif

    Dims getTensorShape(char const* name) const noexcept override {
        return guard<Dims>("IExecutionContext::getTensorShape", invalid_dims(), [&]() -> Dims {
            TensorDesc const* t = mSt->find(name);
            if (t == nullptr) {
                api_error("IExecutionContext::getTensorShape",
                          std::string("'") + (name ? name : "(null)") + "' is not an I/O tensor of the engine");
                return invalid_dims();
            }
            if (mSt->is_input(t)) {
                auto it = mShapes.find(t->name);
                return to_dims(it != mShapes.end() ? it->second : t->dims);
            }
            if (!missing_shapes().empty()) {
                return to_dims(t->dims);
            }
            std::vector<std::vector<int64_t>> outs;
            std::string why;
            if (!output_shapes(outs, why)) {
                internal_error("IExecutionContext::getTensorShape", "output '" + t->name + "': " + why);
                return to_dims(t->dims);
            }
            for (size_t i = 0; i < mSt->plan.model.outputs.size(); ++i) {
                if (&mSt->plan.model.outputs[i] == t) {
                    return to_dims(outs[i]);
                }
            }
            return to_dims(t->dims);
        });
    }

    bool setTensorAddress(char const* name, void* data) noexcept override {
        return guard<bool>("IExecutionContext::setTensorAddress", false, [&]() {
            char const* api = "IExecutionContext::setTensorAddress";
            TensorDesc const* t = mSt->find(name);
            if (t == nullptr) {
                api_error(api, std::string("'") + (name ? name : "(null)") + "' is not an I/O tensor of the engine");
                return false;
            }
            if (reinterpret_cast<uintptr_t>(data) % 256 != 0) {
                std::ostringstream s;
                s << "tensor '" << t->name << "': address " << data << " is not 256-byte aligned";
                api_error(api, s.str());
                return false;
            }
            mAddr[t->name] = data;
            return true;
        });
    }
    bool setInputTensorAddress(char const* name, void const* data) noexcept override {
        RTDBL_GUARDED("IExecutionContext::setInputTensorAddress", false, {
            TensorDesc const* t = mSt->find(name);
            if (t == nullptr || !mSt->is_input(t)) {
                api_error("IExecutionContext::setInputTensorAddress",
                          std::string("'") + (name ? name : "(null)") + "' is not an input tensor of the engine");
                return false;
            }
            return setTensorAddress(name, const_cast<void*>(data));
        });
    }
    bool setOutputTensorAddress(char const* name, void* data) noexcept override {
        RTDBL_GUARDED("IExecutionContext::setOutputTensorAddress", false, {
            TensorDesc const* t = mSt->find(name);
            if (t == nullptr || mSt->is_input(t)) {
                api_error("IExecutionContext::setOutputTensorAddress",
                          std::string("'") + (name ? name : "(null)") + "' is not an output tensor of the engine");
                return false;
            }
            return setTensorAddress(name, data);
        });
    }
    void const* getTensorAddress(char const* name) const noexcept override {
        RTDBL_GUARDED("IExecutionContext::getTensorAddress", static_cast<void const*>(nullptr), {
            auto it = mAddr.find(name != nullptr ? name : "");
            return it == mAddr.end() ? nullptr : it->second;
        });
    }
    void* getOutputTensorAddress(char const* name) const noexcept override {
        return const_cast<void*>(getTensorAddress(name));
    }

    bool enqueueV3(cudaStream_t stream) noexcept override {
        return guard<bool>("IExecutionContext::enqueueV3", false, [&]() { return enqueue(stream); });
    }

private:
    bool alive(char const* api) const {
        if (!mSt->alive.load()) {
            api_error(api, "the ICudaEngine of this execution context was destroyed (contexts must be destroyed "
                           "before their engine)");
            return false;
        }
        return true;
    }

    std::vector<std::string> missing_shapes() const {
        std::vector<std::string> m;
        for (TensorDesc const& t : mSt->plan.model.inputs) {
            if (mShapes.count(t.name) == 0 && is_dynamic(t.dims)) {
                m.push_back(t.name);
            }
        }
        return m;
    }

    std::vector<int64_t> input_shape(TensorDesc const& t) const {
        auto it = mShapes.find(t.name);
        return it != mShapes.end() ? it->second : t.dims;
    }

    // Output shapes for the current input shapes: symbolic dims resolved from the inputs' dim
    // names; otherwise ONNX Runtime runs once on zeros of those shapes (cached).
    bool output_shapes(std::vector<std::vector<int64_t>>& outs, std::string& why) const {
        std::map<std::string, int64_t> params;
        std::string key;
        for (TensorDesc const& t : mSt->plan.model.inputs) {
            std::vector<int64_t> s = input_shape(t);
            key += t.name + vec_str(s) + ";";
            for (size_t i = 0; i < s.size() && i < t.dim_params.size(); ++i) {
                if (!t.dim_params[i].empty()) params[t.dim_params[i]] = s[i];
            }
        }
        outs.clear();
        bool all = true;
        for (TensorDesc const& o : mSt->plan.model.outputs) {
            std::vector<int64_t> s = o.dims;
            for (size_t i = 0; i < s.size(); ++i) {
                if (s[i] < 0 && i < o.dim_params.size() && params.count(o.dim_params[i]) != 0) {
                    s[i] = params[o.dim_params[i]];
                }
                all = all && s[i] >= 0;
            }
            outs.push_back(s);
        }
        if (all) {
            return true;
        }
        std::lock_guard<std::mutex> g(mSt->shape_mutex);
        auto it = mSt->shape_cache.find(key);
        if (it != mSt->shape_cache.end()) {
            outs = it->second;
            return true;
        }
        std::vector<std::vector<uint8_t>> zeros;
        std::vector<ort::TensorRef> ins;
        for (TensorDesc const& t : mSt->plan.model.inputs) {
            std::vector<int64_t> s = input_shape(t);
            zeros.emplace_back(volume(s) * ort::elem_size(t.onnx_type) + 1, 0);
            ins.push_back({t.name, t.onnx_type, s, zeros.back().data()});
        }
        std::vector<std::string> names;
        for (TensorDesc const& o : mSt->plan.model.outputs) names.push_back(o.name);
        if (!mSt->session->run_alloc(ins, names, outs, nullptr, why)) {
            why = "cannot infer the output shapes: " + why;
            return false;
        }
        mSt->shape_cache[key] = outs;
        return true;
    }

    bool enqueue(cudaStream_t stream) {
        char const* api = "IExecutionContext::enqueueV3";
        if (!alive(api)) {
            return false;
        }
        bool expected = false;
        if (!mBusy.compare_exchange_strong(expected, true)) {
            api_error(api, "the execution context is already enqueueing on another thread (a context must not be "
                           "used by two threads at once)");
            return false;
        }
        struct Release {
            std::atomic<bool>& b;
            ~Release() { b = false; }
        } release{mBusy};
        std::vector<std::string> missing = missing_shapes();
        if (!missing.empty()) {
            std::string names;
            for (auto const& m : missing) names += (names.empty() ? "'" : ", '") + m + "'";
            api_error(api, "input shape(s) not set for " + names + " in optimization profile " +
                               std::to_string(mProfile) +
                               (mSwitched ? " (setOptimizationProfileAsync discards earlier shapes)" : "") +
                               ": call setInputShape for every dynamic input before enqueueV3");
            return false;
        }
        std::vector<std::vector<int64_t>> outs;
        std::string why;
        if (!output_shapes(outs, why)) {
            internal_error(api, why);
            return false;
        }
        std::vector<ort::TensorRef> ins, os;
        std::string no_addr;
        for (TensorDesc const& t : mSt->plan.model.inputs) {
            std::vector<int64_t> s = input_shape(t);
            void* a = addr(t.name);
            if (a == nullptr && volume(s) > 0) no_addr += (no_addr.empty() ? "'" : ", '") + t.name + "'";
            ins.push_back({t.name, t.onnx_type, s, a});
        }
        for (size_t i = 0; i < outs.size(); ++i) {
            TensorDesc const& t = mSt->plan.model.outputs[i];
            void* a = addr(t.name);
            if (a == nullptr && volume(outs[i]) > 0) no_addr += (no_addr.empty() ? "'" : ", '") + t.name + "'";
            os.push_back({t.name, t.onnx_type, outs[i], a});
        }
        if (!no_addr.empty()) {
            api_error(api, "no address set for tensor(s) " + no_addr +
                               ": every input and output needs a non-null address (setTensorAddress) before enqueueV3");
            return false;
        }
        if (mSt->cuda) {
            // UNTESTED path (see cuda_mode()).
            int device = 0;
            if (!current_device(device, why)) {
                internal_error(api, "CUDA execution: " + why);
                return false;
            }
            if (!mCudaSession || mCudaStream != stream || mCudaDevice != device) {
                ort::CudaOptions co;
                co.device = device;
                co.stream = stream;
                mCudaSession = ort::Session::create(mSt->plan.model.onnx.data(), mSt->plan.model.onnx.size(),
                                                    mSt->plan.model.external_dir, why, &co);
                if (!mCudaSession) {
                    internal_error(api, why);
                    return false;
                }
                mCudaStream = stream;
                mCudaDevice = device;
            }
            if (!mCudaSession->run(ins, os, why, device)) {
                internal_error(api, why);
                return false;
            }
            return true;
        }
        if (!mSt->session->run(ins, os, why)) {
            internal_error(api, why);
            return false;
        }
        return true;
    }

    void* addr(std::string const& name) const {
        auto it = mAddr.find(name);
        return it == mAddr.end() ? nullptr : it->second;
    }

    std::shared_ptr<EngineState> mSt;
    ICudaEngine const* mEngine;
    std::string mName;
    int32_t mProfile = 0;
    bool mSwitched = false;
    std::map<std::string, std::vector<int64_t>> mShapes;
    std::map<std::string, void*> mAddr;
    std::atomic<bool> mBusy{false};
    std::unique_ptr<ort::Session> mCudaSession;  // CUDA mode: one session per context and stream
    cudaStream_t mCudaStream = nullptr;
    int mCudaDevice = -1;
};

class Engine final : public ICudaEngine, public rtdbl_gen::StubVCudaEngine {
public:
    explicit Engine(std::shared_ptr<EngineState> st) : mSt(std::move(st)) {
        mImpl = this;
        mSt->runtime->engines.fetch_add(1);
    }
    ~Engine() noexcept override {
        RTDBL_GUARDED_VOID("ICudaEngine::~ICudaEngine", {
            mSt->alive = false;
            mSt->runtime->engines.fetch_sub(1);
            int32_t n = mSt->contexts.load();
            if (n > 0) {
                api_error("ICudaEngine::~ICudaEngine", "the engine was destroyed while " + std::to_string(n) +
                                                           " execution context(s) created from it are alive (destroy "
                                                           "the contexts first)");
            }
        });
    }
    ICudaEngine* getPImpl() noexcept override { return this; }
    int32_t getNbLayers() const noexcept override { return 0; }
    IExecutionContext* createExecutionContext(ExecutionContextAllocationStrategy s) noexcept override {
        return guard<IExecutionContext*>("ICudaEngine::createExecutionContext", nullptr, [&]() -> IExecutionContext* {
            if (static_cast<int32_t>(s) < 0 || static_cast<int32_t>(s) > 2) {
                api_error("ICudaEngine::createExecutionContext", "unknown allocation strategy");
                return nullptr;
            }
            return new Context(mSt, this);
        });
    }
    int32_t getNbIOTensors() const noexcept override { return static_cast<int32_t>(mSt->io.size()); }
    char const* getIOTensorName(int32_t i) const noexcept override {
        RTDBL_GUARDED("ICudaEngine::getIOTensorName", static_cast<char const*>(nullptr), {
            if (i < 0 || i >= getNbIOTensors()) {
                api_error("ICudaEngine::getIOTensorName", "index " + std::to_string(i) + " is outside 0.." +
                                                              std::to_string(getNbIOTensors() - 1));
                return nullptr;
            }
            return mSt->io[i]->name.c_str();
        });
    }
    TensorIOMode getTensorIOMode(char const* name) const noexcept override {
        TensorDesc const* t = mSt->find(name);
        if (t == nullptr) return TensorIOMode::kNONE;
        return mSt->is_input(t) ? TensorIOMode::kINPUT : TensorIOMode::kOUTPUT;
    }
    Dims getTensorShape(char const* name) const noexcept override {
        TensorDesc const* t = known(name, "ICudaEngine::getTensorShape");
        return t == nullptr ? invalid_dims() : to_dims(t->dims);
    }
    DataType getTensorDataType(char const* name) const noexcept override {
        TensorDesc const* t = known(name, "ICudaEngine::getTensorDataType");
        return t == nullptr ? DataType::kFLOAT : t->trt_type;
    }
    TensorLocation getTensorLocation(char const* name) const noexcept override {
        known(name, "ICudaEngine::getTensorLocation");
        return TensorLocation::kDEVICE;
    }
    bool isShapeInferenceIO(char const* name) const noexcept override {
        known(name, "ICudaEngine::isShapeInferenceIO");
        return false;
    }
    TensorFormat getTensorFormat(char const* name) const noexcept override {
        known(name, "ICudaEngine::getTensorFormat");
        return TensorFormat::kLINEAR;
    }
    TensorFormat getTensorFormatV2(char const* name, int32_t) const noexcept override { return getTensorFormat(name); }
    int32_t getNbOptimizationProfiles() const noexcept override { return static_cast<int32_t>(mSt->plan.profiles.size()); }
    Dims getProfileShape(char const* name, int32_t profile, OptProfileSelector sel) const noexcept override {
        RTDBL_GUARDED("ICudaEngine::getProfileShape", invalid_dims(), {
            char const* api = "ICudaEngine::getProfileShape";
            TensorDesc const* t = known(name, api);
            if (t == nullptr) return invalid_dims();
            if (!mSt->is_input(t)) {
                api_error(api, "'" + t->name + "' is an output; profiles only hold inputs");
                return invalid_dims();
            }
            if (profile < 0 || profile >= getNbOptimizationProfiles()) {
                api_error(api, "profile " + std::to_string(profile) + " is outside 0.." +
                                   std::to_string(getNbOptimizationProfiles() - 1));
                return invalid_dims();
            }
            int s = static_cast<int>(sel);
            if (s < 0 || s > 2) {
                api_error(api, "bad selector " + std::to_string(s));
                return invalid_dims();
            }
            return mSt->plan.profiles[profile].at(t->name)[s];
        });
    }
    char const* getName() const noexcept override { return "rusttrt-abi-double-engine"; }
#if NV_TENSORRT_MAJOR < 11
    bool hasImplicitBatchDimension() const noexcept override { return false; }
#endif
    EngineCapability getEngineCapability() const noexcept override { return EngineCapability::kSTANDARD; }
    HardwareCompatibilityLevel getHardwareCompatibilityLevel() const noexcept override {
        return HardwareCompatibilityLevel::kNONE;
    }

private:
    TensorDesc const* known(char const* name, char const* api) const noexcept {
        RTDBL_GUARDED("ICudaEngine", static_cast<TensorDesc const*>(nullptr), {
            TensorDesc const* t = mSt->find(name);
            if (t == nullptr) {
                api_error(api, std::string("'") + (name ? name : "(null)") + "' is not an I/O tensor of the engine");
            }
            return t;
        });
    }
    std::shared_ptr<EngineState> mSt;
};

class Runtime final : public IRuntime, public rtdbl_gen::StubVRuntime {
public:
    Runtime() : mSt(std::make_shared<RuntimeState>()) { mImpl = this; }
    ~Runtime() noexcept override {
        RTDBL_GUARDED_VOID("IRuntime::~IRuntime", {
            int32_t n = mSt->engines.load();
            if (n > 0) {
                api_error("IRuntime::~IRuntime", "the runtime was destroyed while " + std::to_string(n) +
                                                     " engine(s) it deserialized are alive (destroy the engines first)");
            }
        });
    }
    IRuntime* getPImpl() noexcept override { return this; }
    ILogger* getLogger() const noexcept override { return current_logger(); }
    bool setMaxThreads(int32_t n) noexcept override { return n > 0; }
    int32_t getMaxThreads() const noexcept override { return 1; }
    ICudaEngine* deserializeCudaEngine(void const* blob, std::size_t size) noexcept override {
        return guard<ICudaEngine*>("IRuntime::deserializeCudaEngine", nullptr, [&]() -> ICudaEngine* {
            char const* api = "IRuntime::deserializeCudaEngine";
            auto st = std::make_shared<EngineState>();
            try {
                st->plan = read_plan(blob, size);
            } catch (ReadError const& e) {
                log(Severity::kERROR, std::string(api) + ": Error Code 1: Serialization (" + e.what() + ")");
                return nullptr;
            }
            std::string err;
            st->session = ort::Session::create(st->plan.model.onnx.data(), st->plan.model.onnx.size(),
                                               st->plan.model.external_dir, err);
            if (!st->session) {
                internal_error(api, err);
                return nullptr;
            }
            for (auto const& t : st->plan.model.inputs) st->io.push_back(&t);
            for (auto const& t : st->plan.model.outputs) st->io.push_back(&t);
            st->runtime = mSt;
            st->cuda = cuda_mode();
            log(Severity::kINFO, "TensorRT ABI double: deserialized an engine of " + std::to_string(size) +
                                     " bytes (" + std::to_string(st->io.size()) + " I/O tensors, " +
                                     std::to_string(st->plan.profiles.size()) + " profile(s), ONNX Runtime " +
                                     ort::version() + (st->cuda ? ", CUDA execution provider (untested path)" : ", CPU") +
                                     ")");
            return new Engine(st);
        });
    }

private:
    std::shared_ptr<RuntimeState> mSt;
};

int32_t claimed_version() {
    char const* v = std::getenv("RUSTTRT_TRT_DOUBLE_CLAIM_VERSION");
    if (v != nullptr && *v != '\0') {
        return static_cast<int32_t>(std::atoi(v));
    }
    return NV_TENSORRT_VERSION;
}

} // namespace
} // namespace rtdbl

extern "C" TENSORRTAPI void* createInferRuntime_INTERNAL(void* logger, int32_t version) noexcept {
    return rtdbl::guard<void*>("createInferRuntime", nullptr, [&]() -> void* {
        if (!rtdbl::adopt_logger(static_cast<ILogger*>(logger), "createInferRuntime")) {
            return nullptr;
        }
        if (version / 10000 != NV_TENSORRT_MAJOR) {
            rtdbl::api_error("createInferRuntime", "the caller was compiled against TensorRT " + std::to_string(version) +
                                                       " headers, this library is TensorRT " +
                                                       std::to_string(NV_TENSORRT_VERSION));
            return nullptr;
        }
        return static_cast<IRuntime*>(new rtdbl::Runtime());
    });
}

extern "C" TENSORRTAPI int32_t getInferLibVersion() noexcept { return rtdbl::claimed_version(); }
extern "C" TENSORRTAPI int32_t getInferLibMajorVersion() noexcept { return rtdbl::claimed_version() / 10000; }
extern "C" TENSORRTAPI int32_t getInferLibMinorVersion() noexcept { return rtdbl::claimed_version() / 100 % 100; }
extern "C" TENSORRTAPI int32_t getInferLibPatchVersion() noexcept { return rtdbl::claimed_version() % 100; }
extern "C" TENSORRTAPI int32_t getInferLibBuildVersion() noexcept { return 0; }
