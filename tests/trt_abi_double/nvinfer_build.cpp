// TensorRT ABI double, libnvinfer part 1: logger, version entry points, builder, network,
// tensors, builder config, optimization profiles, timing cache, host memory, plan writer.
#include "nvinfer_internal.h"

#include "ort_min.h"

#include <cstdio>
#include <cstdlib>
#include <set>

using namespace nvinfer1;

namespace rtdbl {

// ---------------------------------------------------------------------------------------------
// Logging

namespace {
std::mutex g_log_mutex;
ILogger* g_logger = nullptr;
std::atomic<int64_t> g_stub_calls{0};
} // namespace

ILogger* current_logger() {
    std::lock_guard<std::mutex> g(g_log_mutex);
    return g_logger;
}

void log(Severity s, std::string const& msg) noexcept {
    try {
        ILogger* l = current_logger();
        std::string text = msg;
        if (l != nullptr) {
            l->log(s, text.c_str());
        } else if (s <= Severity::kWARNING) {
            std::fprintf(stderr, "[TensorRT ABI double, no logger] %s\n", text.c_str());
        }
    } catch (...) {
    }
}

void api_error(char const* api, std::string const& msg) noexcept {
    try {
        log(Severity::kERROR, std::string(api) + ": Error Code 3: API Usage Error (" + msg + ")");
    } catch (...) {
    }
}

void internal_error(char const* api, std::string const& msg) noexcept {
    try {
        log(Severity::kERROR, std::string(api) + ": Error Code 2: Internal Error (" + msg + ")");
    } catch (...) {
    }
}

bool adopt_logger(ILogger* l, char const* entry) {
    std::unique_lock<std::mutex> g(g_log_mutex);
    if (l == nullptr) {
        g.unlock();
        log(Severity::kERROR, std::string(entry) + ": Error Code 3: API Usage Error (logger is null)");
        return false;
    }
    if (g_logger == nullptr) {
        g_logger = l;
        return true;
    }
    if (g_logger != l) {
        g.unlock();
        api_error(entry, "a different ILogger was passed than the one given to the first createInfer*/createParser "
                         "call; TensorRT keeps one logger per process and all objects must share it");
        return false;
    }
    return true;
}

bool is_dynamic(std::vector<int64_t> const& dims) {
    for (int64_t d : dims) {
        if (d < 0) {
            return true;
        }
    }
    return false;
}

// ---------------------------------------------------------------------------------------------
// Plan writer

std::vector<uint8_t> write_plan(PlanData const& p) {
    Writer pay;
    pay.u32(p.builder_flags);
    pay.i32(p.opt_level);
    pay.u64(p.workspace);
    pay.u32(p.network_flags);
    pay.u32(static_cast<uint32_t>(p.model.inputs.size()));
    for (auto const& t : p.model.inputs) write_tensor(pay, t);
    pay.u32(static_cast<uint32_t>(p.model.outputs.size()));
    for (auto const& t : p.model.outputs) write_tensor(pay, t);
    pay.u32(static_cast<uint32_t>(p.profiles.size()));
    for (auto const& prof : p.profiles) {
        pay.u32(static_cast<uint32_t>(prof.size()));
        for (auto const& kv : prof) {
            pay.str(kv.first);
            for (Dims const& d : kv.second) {
                pay.i32(d.nbDims);
                for (int32_t i = 0; i < d.nbDims; ++i) pay.i64(d.d[i]);
            }
        }
    }
    pay.str(p.model.external_dir);
    pay.bytes(p.model.onnx);

    Writer w;
    w.raw(kPlanMagic, sizeof(kPlanMagic));
    w.u32(kPlanFormat);
    w.i32(p.major);
    w.i32(p.minor);
    w.i32(p.patch);
    w.u64(pay.buf.size());
    w.u64(fnv1a(pay.buf.data(), pay.buf.size()));
    w.raw(pay.buf.data(), pay.buf.size());
    return w.buf;
}

} // namespace rtdbl

// ---------------------------------------------------------------------------------------------
// Stubs report through the logger

void rtdbl_stub_called(char const* what) noexcept {
    rtdbl::g_stub_calls.fetch_add(1);
    try {
        rtdbl::log(rtdbl::Severity::kERROR, std::string(what) +
                                                ": Error Code 9: not implemented by the TensorRT ABI double (rusttrt's "
                                                "test library); the caller used a TensorRT method the double does not "
                                                "model");
    } catch (...) {
    }
}

namespace rtdbl {
namespace {

// ---------------------------------------------------------------------------------------------
// Host memory

class HostMemory final : public IHostMemory, public rtdbl_gen::StubVHostMemory {
public:
    explicit HostMemory(std::vector<uint8_t> b) : mBuf(std::move(b)) { mImpl = this; }
    void* data() const noexcept override { return const_cast<uint8_t*>(mBuf.data()); }
    std::size_t size() const noexcept override { return mBuf.size(); }
    DataType type() const noexcept override { return DataType::kUINT8; }

private:
    std::vector<uint8_t> mBuf;
};

// ---------------------------------------------------------------------------------------------
// Builder-wide state shared with the objects it creates (they may be destroyed in any order;
// a wrong order is reported, never crashes).

struct BuilderState {
    std::atomic<int32_t> networks{0};
    std::atomic<int32_t> configs{0};
    std::atomic<bool> alive{true};
    IBuilder* pub = nullptr;
};

std::mutex g_reg_mutex;
std::set<void const*> g_networks;  // live Network objects (INetworkDefinition*)

// ---------------------------------------------------------------------------------------------
// Tensors and network

class Network;

class Tensor final : public ITensor, public rtdbl_gen::StubVTensor {
public:
    Tensor(Network* net, std::string name, DataType type, Dims dims, bool input)
        : mNet(net), mName(std::move(name)), mType(type), mDims(dims), mInput(input) {
        mImpl = this;
    }
    ~Tensor() noexcept override = default;
    void setName(char const* name) noexcept override {
        RTDBL_GUARDED_VOID("ITensor::setName", {
            if (name == nullptr) {
                api_error("ITensor::setName", "name is null");
                return;
            }
            mName = name;
        });
    }
    char const* getName() const noexcept override { return mName.c_str(); }
    void setDimensions(Dims const& d) noexcept override { mDims = d; }
    Dims getDimensions() const noexcept override { return mDims; }
#if NV_TENSORRT_MAJOR < 11
    void setType(DataType t) noexcept override { mType = t; }
#endif
    DataType getType() const noexcept override { return mType; }
    bool isNetworkInput() const noexcept override { return mInput; }
    bool isNetworkOutput() const noexcept override { return mOutput; }
    TensorLocation getLocation() const noexcept override { return TensorLocation::kDEVICE; }
    bool isShapeTensor() const noexcept override { return false; }
    bool isExecutionTensor() const noexcept override { return true; }
    void setDimensionName(int32_t index, char const* name) noexcept override {
        RTDBL_GUARDED_VOID("ITensor::setDimensionName", {
            if (index < 0 || index >= mDims.nbDims) {
                api_error("ITensor::setDimensionName", "index " + std::to_string(index) + " out of range");
                return;
            }
            mDimNames[index] = name != nullptr ? name : "";
        });
    }
    char const* getDimensionName(int32_t index) const noexcept override {
        auto it = mDimNames.find(index);
        return it == mDimNames.end() || it->second.empty() ? nullptr : it->second.c_str();
    }

    Network* mNet;
    std::string mName;
    DataType mType;
    Dims mDims;
    bool mInput;
    bool mOutput = false;
    std::map<int32_t, std::string> mDimNames;
};

class Network final : public INetworkDefinition, public rtdbl_gen::StubVNetworkDefinition {
public:
    Network(std::shared_ptr<BuilderState> b, NetworkDefinitionCreationFlags flags) : mBuilder(std::move(b)), mFlags(flags) {
        mImpl = this;
        mBuilder->networks.fetch_add(1);
        std::lock_guard<std::mutex> g(g_reg_mutex);
        g_networks.insert(static_cast<INetworkDefinition*>(this));
    }
    ~Network() noexcept override {
        RTDBL_GUARDED_VOID("INetworkDefinition::~INetworkDefinition", {
            {
                std::lock_guard<std::mutex> g(g_reg_mutex);
                g_networks.erase(static_cast<INetworkDefinition*>(this));
            }
            mBuilder->networks.fetch_sub(1);
            if (!mBuilder->alive.load()) {
                // Already reported when the builder went; nothing else to do.
            }
        });
    }

    ITensor* addInput(char const* name, DataType type, Dims const& dims) noexcept override {
        return guard<ITensor*>("INetworkDefinition::addInput", nullptr, [&]() -> ITensor* {
            if (name == nullptr || *name == '\0') {
                api_error("INetworkDefinition::addInput", "input name is null or empty");
                return nullptr;
            }
            if (dims.nbDims < 0 || dims.nbDims > Dims::MAX_DIMS) {
                api_error("INetworkDefinition::addInput", std::string("input '") + name + "': rank " +
                                                              std::to_string(dims.nbDims) + " is outside 0..8");
                return nullptr;
            }
            for (int32_t i = 0; i < dims.nbDims; ++i) {
                if (dims.d[i] < -1) {
                    api_error("INetworkDefinition::addInput",
                              std::string("input '") + name + "': dims " + dims_str(dims) + " (only -1 may be negative)");
                    return nullptr;
                }
            }
            if (find(name) != nullptr) {
                api_error("INetworkDefinition::addInput", std::string("a tensor named '") + name + "' already exists");
                return nullptr;
            }
            mTensors.push_back(std::make_unique<Tensor>(this, name, type, dims, true));
            mInputs.push_back(mTensors.back().get());
            return mTensors.back().get();
        });
    }
    void markOutput(ITensor& t) noexcept override {
        guard<int>("INetworkDefinition::markOutput", 0, [&]() {
            Tensor* mine = owned(&t);
            if (mine == nullptr) {
                api_error("INetworkDefinition::markOutput", "the tensor does not belong to this network");
                return 0;
            }
            if (!mine->mOutput) {
                mine->mOutput = true;
                mOutputs.push_back(mine);
            }
            return 0;
        });
    }
    int32_t getNbLayers() const noexcept override { return 0; }
    ILayer* getLayer(int32_t index) const noexcept override {
        RTDBL_GUARDED("INetworkDefinition::getLayer", static_cast<ILayer*>(nullptr), {
            api_error("INetworkDefinition::getLayer",
                      "layer " + std::to_string(index) + " does not exist (the ABI double's networks have no layers)");
            return nullptr;
        });
    }
    int32_t getNbInputs() const noexcept override { return static_cast<int32_t>(mInputs.size()); }
    ITensor* getInput(int32_t i) const noexcept override {
        RTDBL_GUARDED("INetworkDefinition::getInput", static_cast<ITensor*>(nullptr), {
            if (i < 0 || i >= getNbInputs()) {
                api_error("INetworkDefinition::getInput", "index " + std::to_string(i) + " is outside 0.." +
                                                              std::to_string(getNbInputs() - 1));
                return nullptr;
            }
            return mInputs[i];
        });
    }
    int32_t getNbOutputs() const noexcept override { return static_cast<int32_t>(mOutputs.size()); }
    ITensor* getOutput(int32_t i) const noexcept override {
        RTDBL_GUARDED("INetworkDefinition::getOutput", static_cast<ITensor*>(nullptr), {
            if (i < 0 || i >= getNbOutputs()) {
                api_error("INetworkDefinition::getOutput", "index " + std::to_string(i) + " is outside 0.." +
                                                               std::to_string(getNbOutputs() - 1));
                return nullptr;
            }
            return mOutputs[i];
        });
    }
    void setName(char const* name) noexcept override {
        RTDBL_GUARDED_VOID("INetworkDefinition::setName", { mName = name != nullptr ? name : ""; });
    }
    char const* getName() const noexcept override { return mName.c_str(); }
    bool hasImplicitBatchDimension() const noexcept override { return false; }
    IBuilder& getBuilder() const noexcept override { return *mBuilder->pub; }
    NetworkDefinitionCreationFlags getFlags() const noexcept override { return mFlags; }
    bool getFlag(NetworkDefinitionCreationFlag f) const noexcept override {
        return (mFlags & (1U << static_cast<uint32_t>(f))) != 0;
    }

    Tensor* find(std::string const& name) const {
        for (auto const& t : mTensors) {
            if (t->mName == name) {
                return t.get();
            }
        }
        return nullptr;
    }
    Tensor* owned(ITensor const* t) const {
        for (auto const& x : mTensors) {
            if (static_cast<ITensor const*>(x.get()) == t) {
                return x.get();
            }
        }
        return nullptr;
    }

    std::shared_ptr<BuilderState> mBuilder;
    NetworkDefinitionCreationFlags mFlags;
    std::string mName;
    std::vector<std::unique_ptr<Tensor>> mTensors;
    std::vector<Tensor*> mInputs;
    std::vector<Tensor*> mOutputs;
    bool mHasModel = false;
    bool mParserAlive = false;
    ModelDesc mModel;
};

// ---------------------------------------------------------------------------------------------
// Optimization profiles

class Profile final : public IOptimizationProfile, public rtdbl_gen::StubVOptimizationProfile {
public:
    Profile() { mImpl = this; }
    bool setDimensions(char const* name, OptProfileSelector sel, Dims const& dims) noexcept override {
        return guard<bool>("IOptimizationProfile::setDimensions", false, [&]() {
            char const* api = "IOptimizationProfile::setDimensions";
            int s = static_cast<int>(sel);
            if (name == nullptr) {
                api_error(api, "input name is null");
                return false;
            }
            if (s < 0 || s > 2) {
                api_error(api, std::string("input '") + name + "': selector " + std::to_string(s) + " is not kMIN/kOPT/kMAX");
                return false;
            }
            if (dims.nbDims < 0 || dims.nbDims > Dims::MAX_DIMS) {
                api_error(api, std::string("input '") + name + "': rank " + std::to_string(dims.nbDims) + " is outside 0..8");
                return false;
            }
            for (int32_t i = 0; i < dims.nbDims; ++i) {
                if (dims.d[i] < 0) {
                    api_error(api, std::string("input '") + name + "': " + kSel[s] + " dims " + dims_str(dims) +
                                       " have a negative extent (profile dims must be concrete)");
                    return false;
                }
            }
            auto& e = mData[name];
            for (int k = 0; k < 3; ++k) {
                if (mSet[name][k] && k != s && e[k].nbDims != dims.nbDims) {
                    api_error(api, std::string("input '") + name + "': " + kSel[s] + " dims " + dims_str(dims) +
                                       " have another rank than " + kSel[k] + " dims " + dims_str(e[k]));
                    return false;
                }
            }
            e[s] = dims;
            mSet[name][s] = true;
            return true;
        });
    }
    Dims getDimensions(char const* name, OptProfileSelector sel) const noexcept override {
        RTDBL_GUARDED("IOptimizationProfile::getDimensions", invalid_dims(), {
            int s = static_cast<int>(sel);
            auto it = mData.find(name != nullptr ? name : "");
            auto st = mSet.find(name != nullptr ? name : "");
            if (it == mData.end() || s < 0 || s > 2 || !st->second[s]) {
                return invalid_dims();
            }
            return it->second[s];
        });
    }
    bool isValid() const noexcept override {
        return guard<bool>("IOptimizationProfile::isValid", false, [&]() {
            std::string why;
            if (!validate(why)) {
                api_error("IOptimizationProfile::isValid", "the profile is not valid: " + why);
                return false;
            }
            return true;
        });
    }
    bool validate(std::string& why) const {
        if (mData.empty()) {
            why = "the profile sets no input";
            return false;
        }
        for (auto const& kv : mData) {
            auto const& set = mSet.at(kv.first);
            for (int k = 0; k < 3; ++k) {
                if (!set[k]) {
                    why = "input '" + kv.first + "' has no " + kSel[k] + " dims";
                    return false;
                }
            }
            Dims const& mn = kv.second[0];
            Dims const& op = kv.second[1];
            Dims const& mx = kv.second[2];
            for (int32_t i = 0; i < mn.nbDims; ++i) {
                if (!(mn.d[i] <= op.d[i] && op.d[i] <= mx.d[i])) {
                    why = "input '" + kv.first + "': need min <= opt <= max in every dimension, got min " +
                          dims_str(mn) + " opt " + dims_str(op) + " max " + dims_str(mx);
                    return false;
                }
            }
        }
        return true;
    }
    ProfileData data() const { return ProfileData(mData.begin(), mData.end()); }

    static constexpr char const* kSel[3] = {"kMIN", "kOPT", "kMAX"};

private:
    std::map<std::string, std::array<Dims, 3>> mData;
    std::map<std::string, std::array<bool, 3>> mSet;
};

// ---------------------------------------------------------------------------------------------
// Timing cache: a set of keys (one per network built with it), serialized as
// "RTDBLTCH" u32 major u32 n u64 keys...

constexpr char kCacheMagic[8] = {'R', 'T', 'D', 'B', 'L', 'T', 'C', 'H'};

class TimingCache final : public ITimingCache, public rtdbl_gen::StubVTimingCache {
public:
    TimingCache() : mAlive(std::make_shared<int>(0)) { mImpl = this; }
    IHostMemory* serialize() const noexcept override {
        return guard<IHostMemory*>("ITimingCache::serialize", nullptr, [&]() -> IHostMemory* {
            Writer w;
            w.raw(kCacheMagic, 8);
            w.u32(NV_TENSORRT_MAJOR);
            w.u32(static_cast<uint32_t>(mKeys.size()));
            for (uint64_t k : mKeys) w.u64(k);
            return new HostMemory(std::move(w.buf));
        });
    }
    bool combine(ITimingCache const& other, bool) noexcept override {
        RTDBL_GUARDED("ITimingCache::combine", false, {
            auto const* o = dynamic_cast<TimingCache const*>(&other);
            if (o == nullptr) {
                api_error("ITimingCache::combine", "the other cache was not created by this library");
                return false;
            }
            mKeys.insert(o->mKeys.begin(), o->mKeys.end());
            return true;
        });
    }
    bool reset() noexcept override {
        mKeys.clear();
        return true;
    }
    bool load(void const* blob, size_t size, std::string& why) {
        try {
            Reader r(static_cast<uint8_t const*>(blob), size);
            char magic[8];
            r.raw(magic, 8);
            if (std::memcmp(magic, kCacheMagic, 8) != 0) {
                why = "not a timing cache of the TensorRT ABI double (bad magic)";
                return false;
            }
            uint32_t major = r.u32();
            if (major != NV_TENSORRT_MAJOR) {
                why = "timing cache of TensorRT " + std::to_string(major) + ".x, this is " +
                      std::to_string(NV_TENSORRT_MAJOR) + ".x";
                return false;
            }
            uint32_t n = r.u32();
            for (uint32_t i = 0; i < n; ++i) mKeys.insert(r.u64());
            if (!r.done()) {
                why = "trailing bytes after the timing cache";
                return false;
            }
            return true;
        } catch (ReadError const& e) {
            why = std::string("corrupt timing cache: ") + e.what();
            return false;
        }
    }

    std::set<uint64_t> mKeys;
    std::shared_ptr<int> mAlive;  // configs hold a weak_ptr: "destroyed before the build" check
};

// ---------------------------------------------------------------------------------------------
// Builder config

class Config final : public IBuilderConfig, public rtdbl_gen::StubVBuilderConfig {
public:
    explicit Config(std::shared_ptr<BuilderState> b) : mBuilder(std::move(b)) {
        mImpl = this;
        mBuilder->configs.fetch_add(1);
        mFlags = 1U << static_cast<uint32_t>(BuilderFlag::kTF32);
    }
    ~Config() noexcept override { mBuilder->configs.fetch_sub(1); }

    void setFlags(BuilderFlags f) noexcept override { mFlags = f; }
    BuilderFlags getFlags() const noexcept override { return mFlags; }
    void clearFlag(BuilderFlag f) noexcept override { mFlags &= ~(1U << static_cast<uint32_t>(f)); }
    void setFlag(BuilderFlag f) noexcept override { mFlags |= 1U << static_cast<uint32_t>(f); }
    bool getFlag(BuilderFlag f) const noexcept override { return (mFlags & (1U << static_cast<uint32_t>(f))) != 0; }
    void setProfileStream(const cudaStream_t s) noexcept override { mStream = s; }
    cudaStream_t getProfileStream() const noexcept override { return mStream; }
    void setMemoryPoolLimit(MemoryPoolType pool, std::size_t size) noexcept override {
        RTDBL_GUARDED_VOID("IBuilderConfig::setMemoryPoolLimit", {
            int p = static_cast<int>(pool);
            if (p < 0 || p > 5) {
                api_error("IBuilderConfig::setMemoryPoolLimit", "unknown memory pool " + std::to_string(p));
                return;
            }
            mPools[p] = size;
        });
    }
    std::size_t getMemoryPoolLimit(MemoryPoolType pool) const noexcept override {
        auto it = mPools.find(static_cast<int>(pool));
        return it == mPools.end() ? (static_cast<std::size_t>(80) << 30) : it->second;  // "device memory"
    }
    void setBuilderOptimizationLevel(int32_t level) noexcept override {
        RTDBL_GUARDED_VOID("IBuilderConfig::setBuilderOptimizationLevel", {
            if (level < 0 || level > 5) {
                api_error("IBuilderConfig::setBuilderOptimizationLevel",
                          "level " + std::to_string(level) + " is outside 0..5; keeping " + std::to_string(mOptLevel));
                return;
            }
            mOptLevel = level;
        });
    }
    int32_t getBuilderOptimizationLevel() const noexcept override { return mOptLevel; }
    int32_t addOptimizationProfile(IOptimizationProfile const* profile) noexcept override {
        return guard<int32_t>("IBuilderConfig::addOptimizationProfile", -1, [&]() -> int32_t {
            auto const* p = dynamic_cast<Profile const*>(profile);
            if (p == nullptr) {
                api_error("IBuilderConfig::addOptimizationProfile",
                          profile == nullptr ? "profile is null" : "profile was not created by this library");
                return -1;
            }
            std::string why;
            if (!p->validate(why)) {
                api_error("IBuilderConfig::addOptimizationProfile",
                          "optimization profile " + std::to_string(mProfiles.size()) + " is invalid: " + why);
                return -1;
            }
            mProfiles.push_back(p->data());
            return static_cast<int32_t>(mProfiles.size() - 1);
        });
    }
    int32_t getNbOptimizationProfiles() const noexcept override { return static_cast<int32_t>(mProfiles.size()); }
    ITimingCache* createTimingCache(void const* blob, std::size_t size) const noexcept override {
        return guard<ITimingCache*>("IBuilderConfig::createTimingCache", nullptr, [&]() -> ITimingCache* {
            auto c = std::make_unique<TimingCache>();
            if (size > 0) {
                std::string why;
                if (blob == nullptr || !c->load(blob, size, why)) {
                    api_error("IBuilderConfig::createTimingCache",
                              "cannot use the serialized timing cache (" + std::to_string(size) + " bytes): " +
                                  (blob == nullptr ? std::string("blob is null") : why));
                    return nullptr;
                }
            }
            return c.release();
        });
    }
    bool setTimingCache(ITimingCache const& cache, bool) noexcept override {
        RTDBL_GUARDED("IBuilderConfig::setTimingCache", false, {
            auto const* c = dynamic_cast<TimingCache const*>(&cache);
            if (c == nullptr) {
                api_error("IBuilderConfig::setTimingCache", "the timing cache was not created by this library");
                return false;
            }
            mCache = const_cast<TimingCache*>(c);
            mCacheAlive = c->mAlive;
            return true;
        });
    }
    ITimingCache const* getTimingCache() const noexcept override {
        RTDBL_GUARDED("IBuilderConfig::getTimingCache", static_cast<ITimingCache const*>(nullptr), {
            if (mCache != nullptr && mCacheAlive.expired()) {
                api_error("IBuilderConfig::getTimingCache", "the timing cache given to setTimingCache was destroyed");
                return nullptr;
            }
            return mCache;
        });
    }

    std::shared_ptr<BuilderState> mBuilder;
    BuilderFlags mFlags;
    cudaStream_t mStream = nullptr;
    std::map<int, std::size_t> mPools;
    int32_t mOptLevel = 3;
    std::vector<ProfileData> mProfiles;
    TimingCache* mCache = nullptr;
    std::weak_ptr<int> mCacheAlive;
};

// ---------------------------------------------------------------------------------------------
// Builder

class Builder final : public IBuilder, public rtdbl_gen::StubVBuilder {
public:
    Builder() : mState(std::make_shared<BuilderState>()) {
        mImpl = this;
        mState->pub = this;
    }
    ~Builder() noexcept override {
        RTDBL_GUARDED_VOID("IBuilder::~IBuilder", {
            mState->alive = false;
            int32_t n = mState->networks.load();
            int32_t c = mState->configs.load();
            if (n > 0 || c > 0) {
                api_error("IBuilder::~IBuilder", "the builder was destroyed while " + std::to_string(n) +
                                                     " network definition(s) and " + std::to_string(c) +
                                                     " builder config(s) created by it are alive (destroy them first)");
            }
        });
    }
    INetworkDefinition* createNetworkV2(NetworkDefinitionCreationFlags flags) noexcept override {
        return guard<INetworkDefinition*>("IBuilder::createNetworkV2", nullptr, [&]() -> INetworkDefinition* {
            uint32_t known = 0xFU;  // kEXPLICIT_BATCH, kSTRONGLY_TYPED, k*_PYTHON_PLUGINS
            if ((flags & ~known) != 0) {
                api_error("IBuilder::createNetworkV2", "unknown NetworkDefinitionCreationFlags " + std::to_string(flags));
                return nullptr;
            }
            return new Network(mState, flags);
        });
    }
    IBuilderConfig* createBuilderConfig() noexcept override {
        return guard<IBuilderConfig*>("IBuilder::createBuilderConfig", nullptr, [&]() -> IBuilderConfig* {
            return new Config(mState);
        });
    }
    IOptimizationProfile* createOptimizationProfile() noexcept override {
        return guard<IOptimizationProfile*>("IBuilder::createOptimizationProfile", nullptr, [&]() -> IOptimizationProfile* {
            mProfiles.push_back(std::make_unique<Profile>());
            return mProfiles.back().get();
        });
    }
    ILogger* getLogger() const noexcept override { return current_logger(); }
#if NV_TENSORRT_MAJOR < 11
    bool platformHasTf32() const noexcept override { return true; }
#endif
    bool setMaxThreads(int32_t n) noexcept override {
        mThreads = n;
        return n > 0;
    }
    int32_t getMaxThreads() const noexcept override { return mThreads; }
    IHostMemory* buildSerializedNetwork(INetworkDefinition& network, IBuilderConfig& config) noexcept override {
        return guard<IHostMemory*>("IBuilder::buildSerializedNetwork", nullptr,
                                   [&]() -> IHostMemory* { return build(network, config); });
    }

private:
    IHostMemory* build(INetworkDefinition& network, IBuilderConfig& config) {
        char const* api = "IBuilder::buildSerializedNetwork";
        auto* net = dynamic_cast<Network*>(&network);
        auto* cfg = dynamic_cast<Config*>(&config);
        if (net == nullptr || cfg == nullptr) {
            api_error(api, "the network or the config was not created by this library");
            return nullptr;
        }
        if (net->mBuilder != mState || cfg->mBuilder != mState) {
            api_error(api, "the network and the config must be created by the builder that builds them");
            return nullptr;
        }
        if (!net->mHasModel) {
            api_error(api, "the network has no layers: the TensorRT ABI double only builds networks populated by "
                           "its ONNX parser");
            return nullptr;
        }
        if (!net->mParserAlive) {
            api_error(api, "the ONNX parser that populated this network was destroyed before the build; TensorRT's "
                           "parser owns the weights the network refers to and must outlive buildSerializedNetwork");
            return nullptr;
        }
        if (net->mOutputs.empty()) {
            api_error(api, "Network must have at least one output");
            return nullptr;
        }
#if NV_TENSORRT_MAJOR < 11
        bool strongly = net->getFlag(NetworkDefinitionCreationFlag::kSTRONGLY_TYPED);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        uint32_t precision = (1U << static_cast<uint32_t>(BuilderFlag::kFP16)) |
                             (1U << static_cast<uint32_t>(BuilderFlag::kINT8)) |
                             (1U << static_cast<uint32_t>(BuilderFlag::kBF16));
#pragma GCC diagnostic pop
        if (strongly && (cfg->mFlags & precision) != 0) {
            api_error(api, "precision flags (kFP16/kINT8/kBF16) are not allowed with a strongly typed network");
            return nullptr;
        }
#endif
        if (cfg->mCache != nullptr && cfg->mCacheAlive.expired()) {
            api_error(api, "the timing cache attached with setTimingCache was destroyed before the build (it must "
                           "not be destroyed until after the engine is built)");
            return nullptr;
        }
        // Profiles: every dynamic input covered by every profile; names, ranks, fixed dims.
        std::vector<ProfileData> profiles = cfg->mProfiles;
        bool dynamic = false;
        for (Tensor* in : net->mInputs) {
            dynamic = dynamic || is_dynamic(from_dims(in->mDims));
        }
        if (profiles.empty()) {
            if (dynamic) {
                api_error(api, "Network has dynamic or shape inputs, but no optimization profile has been defined");
                return nullptr;
            }
            ProfileData p;
            for (Tensor* in : net->mInputs) p[in->mName] = {in->mDims, in->mDims, in->mDims};
            profiles.push_back(p);
        }
        for (size_t pi = 0; pi < profiles.size(); ++pi) {
            std::string pn = "optimization profile " + std::to_string(pi);
            for (auto const& kv : profiles[pi]) {
                Tensor* t = net->find(kv.first);
                if (t == nullptr || !t->mInput) {
                    api_error(api, pn + " sets dimensions for '" + kv.first + "', which is not a network input");
                    return nullptr;
                }
            }
            for (Tensor* in : net->mInputs) {
                auto it = profiles[pi].find(in->mName);
                if (it == profiles[pi].end()) {
                    if (is_dynamic(from_dims(in->mDims))) {
                        api_error(api, pn + ": dynamic input '" + in->mName + "' " + dims_str(in->mDims) +
                                           " is missing dimensions in the profile");
                        return nullptr;
                    }
                    profiles[pi][in->mName] = {in->mDims, in->mDims, in->mDims};
                    continue;
                }
                for (int k = 0; k < 3; ++k) {
                    Dims const& d = it->second[k];
                    if (d.nbDims != in->mDims.nbDims) {
                        api_error(api, pn + ": input '" + in->mName + "' " + Profile::kSel[k] + " dims " + dims_str(d) +
                                           " have rank " + std::to_string(d.nbDims) + ", the network input " +
                                           dims_str(in->mDims) + " has rank " + std::to_string(in->mDims.nbDims));
                        return nullptr;
                    }
                    for (int32_t i = 0; i < d.nbDims; ++i) {
                        if (in->mDims.d[i] >= 0 && d.d[i] != in->mDims.d[i]) {
                            api_error(api, pn + ": input '" + in->mName + "' " + Profile::kSel[k] + " dims " +
                                               dims_str(d) + " differ from the network's fixed dims " +
                                               dims_str(in->mDims) + " in dimension " + std::to_string(i));
                            return nullptr;
                        }
                    }
                }
            }
        }
        // "Compile": the ONNX must load in ONNX Runtime, or the build fails like a TensorRT build.
        std::string err;
        auto session = ort::Session::create(net->mModel.onnx.data(), net->mModel.onnx.size(),
                                            net->mModel.external_dir, err);
        if (!session) {
            internal_error(api, "engine build failed: " + err);
            return nullptr;
        }
        PlanData plan;
        plan.major = NV_TENSORRT_MAJOR;
        plan.minor = NV_TENSORRT_MINOR;
        plan.patch = NV_TENSORRT_PATCH;
        plan.builder_flags = cfg->mFlags;
        plan.opt_level = cfg->mOptLevel;
        auto ws = cfg->mPools.find(static_cast<int>(MemoryPoolType::kWORKSPACE));
        plan.workspace = ws == cfg->mPools.end() ? 0 : ws->second;
        plan.network_flags = net->mFlags;
        plan.model = net->mModel;
        plan.profiles = profiles;
        std::vector<uint8_t> bytes = write_plan(plan);
        if (cfg->mCache != nullptr) {
            uint64_t key = fnv1a(net->mModel.onnx.data(), net->mModel.onnx.size());
            bool hit = cfg->mCache->mKeys.count(key) != 0;
            cfg->mCache->mKeys.insert(key);
            log(Severity::kINFO, std::string("TensorRT ABI double: timing cache ") + (hit ? "hit" : "miss") +
                                     " for this network (" + std::to_string(cfg->mCache->mKeys.size()) + " entries)");
        }
        log(Severity::kINFO, "TensorRT ABI double: built a plan of " + std::to_string(bytes.size()) + " bytes, " +
                                 std::to_string(profiles.size()) + " optimization profile(s), builder flags 0x" +
                                 [&] { std::ostringstream s; s << std::hex << cfg->mFlags; return s.str(); }() +
                                 ", optimization level " + std::to_string(cfg->mOptLevel));
        return new HostMemory(std::move(bytes));
    }

    std::shared_ptr<BuilderState> mState;
    std::vector<std::unique_ptr<Profile>> mProfiles;
    int32_t mThreads = 1;
};

} // namespace

// Used by the parser double (rtdbl_common.h).
bool attach_model(INetworkDefinition* network, ModelDesc const* model, ILogger* parser_logger) {
    char const* api = "nvonnxparser::IParser::parse";
    bool live;
    {
        std::lock_guard<std::mutex> g(g_reg_mutex);
        live = g_networks.count(network) != 0;
    }
    if (!live) {
        api_error(api, "the INetworkDefinition given to createNvOnnxParser is not a live network of this libnvinfer");
        return false;
    }
    if (parser_logger != current_logger()) {
        api_error(api, "the parser's logger differs from the logger given to createInferBuilder; TensorRT keeps one "
                       "logger per process");
        return false;
    }
    auto* net = static_cast<Network*>(network);
    if (net->mHasModel) {
        api_error(api, "the network was already populated by a parser");
        return false;
    }
    for (TensorDesc const& in : model->inputs) {
        Tensor* t = net->find(in.name);
        if (t == nullptr || !t->mInput) {
            internal_error(api, "input '" + in.name + "' was not added with addInput");
            return false;
        }
    }
    for (TensorDesc const& out : model->outputs) {
        if (net->find(out.name) != nullptr) {
            api_error(api, "output '" + out.name + "' has the name of another tensor");
            return false;
        }
        net->mTensors.push_back(std::make_unique<Tensor>(net, out.name, out.trt_type, to_dims(out.dims), false));
        net->markOutput(*net->mTensors.back());
    }
    net->mModel = *model;
    net->mHasModel = true;
    net->mParserAlive = true;
    return true;
}

void parser_gone(INetworkDefinition* network) {
    std::lock_guard<std::mutex> g(g_reg_mutex);
    if (g_networks.count(network) != 0) {
        static_cast<Network*>(network)->mParserAlive = false;
    }
}

IBuilder* create_builder() { return new Builder(); }

} // namespace rtdbl

extern "C" bool rtdbl_network_attach_model(INetworkDefinition* network, rtdbl::ModelDesc const* model,
                                           ILogger* parser_logger) noexcept {
    return rtdbl::guard<bool>("nvonnxparser::IParser::parse", false,
                              [&]() { return rtdbl::attach_model(network, model, parser_logger); });
}

extern "C" void rtdbl_network_parser_gone(INetworkDefinition* network) noexcept {
    rtdbl::guard<int>("nvonnxparser::IParser::~IParser", 0, [&]() {
        rtdbl::parser_gone(network);
        return 0;
    });
}

extern "C" int64_t rtdbl_stub_call_count() noexcept { return rtdbl::g_stub_calls.load(); }

extern "C" TENSORRTAPI void* createInferBuilder_INTERNAL(void* logger, int32_t version) noexcept {
    return rtdbl::guard<void*>("createInferBuilder", nullptr, [&]() -> void* {
        if (!rtdbl::adopt_logger(static_cast<ILogger*>(logger), "createInferBuilder")) {
            return nullptr;
        }
        if (version / 10000 != NV_TENSORRT_MAJOR) {
            rtdbl::api_error("createInferBuilder",
                             "the caller was compiled against TensorRT " + std::to_string(version) +
                                 " headers, this library is TensorRT " + std::to_string(NV_TENSORRT_VERSION));
            return nullptr;
        }
        return static_cast<IBuilder*>(rtdbl::create_builder());
    });
}
