// Self-test of the TensorRT ABI double's contracts that the shim's C interface cannot reach
// (the shim always passes one logger, keeps the parser alive, destroys in order...). Compiled
// against the same TensorRT headers as the double; loads it by path like the shim does.
//
// usage: double_selftest NVINFER_LIB PARSER_LIB MODEL.onnx
#include <NvInfer.h>
#include <NvOnnxParser.h>

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace {

class Logger final : public ILogger {
public:
    void log(Severity s, AsciiChar const* msg) noexcept override {
        if (s <= Severity::kERROR) errors.emplace_back(msg);
    }
    bool saw(std::string const& needle) const {
        for (auto const& e : errors)
            if (e.find(needle) != std::string::npos) return true;
        return false;
    }
    std::string all() const {
        std::string r;
        for (auto const& e : errors) r += (r.empty() ? "" : " | ") + e;
        return r;
    }
    std::vector<std::string> errors;
};

int g_pass = 0, g_fail = 0;
void check(bool ok, std::string const& what, std::string const& detail = "") {
    (ok ? g_pass : g_fail)++;
    std::printf("%s self-test: %s%s%s\n", ok ? "PASS" : "FAIL", what.c_str(), detail.empty() ? "" : ": ", detail.c_str());
}

using CreateFn = void* (*)(void*, int32_t);
using ParserFn = void* (*)(void*, void*, int);
CreateFn g_builder, g_runtime;
ParserFn g_parser;
std::vector<char> g_onnx;
std::string g_path;

template <class F>
F sym(void* h, char const* n) {
    void* p = dlsym(h, n);
    F f;
    std::memcpy(&f, &p, sizeof(p));
    return f;
}

IBuilder* builder(Logger& l) { return static_cast<IBuilder*>(g_builder(&l, NV_TENSORRT_VERSION)); }

// A parsed network with a batch profile 1..4 in `cfg`.
struct Parsed {
    std::unique_ptr<IBuilder> b;
    std::unique_ptr<INetworkDefinition> net;
    std::unique_ptr<nvonnxparser::IParser> parser;
    std::unique_ptr<IBuilderConfig> cfg;
};

Parsed parse(Logger& l, uint32_t flags = 0) {
    Parsed p;
    p.b.reset(builder(l));
    p.net.reset(p.b->createNetworkV2(flags));
    p.parser.reset(static_cast<nvonnxparser::IParser*>(g_parser(p.net.get(), &l, NV_ONNX_PARSER_VERSION)));
    bool ok = p.parser->parse(g_onnx.data(), g_onnx.size(), g_path.c_str());
    p.cfg.reset(p.b->createBuilderConfig());
    IOptimizationProfile* prof = p.b->createOptimizationProfile();
    ITensor* in = p.net->getInput(0);
    Dims d = in->getDimensions();
    Dims mn = d, mx = d;
    mn.d[0] = 1;
    mx.d[0] = 4;
    prof->setDimensions(in->getName(), OptProfileSelector::kMIN, mn);
    prof->setDimensions(in->getName(), OptProfileSelector::kOPT, mx);
    prof->setDimensions(in->getName(), OptProfileSelector::kMAX, mx);
    p.cfg->addOptimizationProfile(prof);
    if (!ok) check(false, "parse", l.all());
    return p;
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s NVINFER_LIB PARSER_LIB MODEL.onnx\n", argv[0]);
        return 2;
    }
    void* inf = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    void* par = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
    if (inf == nullptr || par == nullptr) {
        std::fprintf(stderr, "cannot load the double: %s\n", dlerror());
        return 2;
    }
    g_builder = sym<CreateFn>(inf, "createInferBuilder_INTERNAL");
    g_runtime = sym<CreateFn>(inf, "createInferRuntime_INTERNAL");
    g_parser = sym<ParserFn>(par, "createNvOnnxParser_INTERNAL");
    g_path = argv[3];
    std::ifstream in(g_path, std::ios::binary);
    g_onnx.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());

    Logger a, b;
    {
        std::unique_ptr<IBuilder> ok(builder(a));
        check(ok != nullptr && a.errors.empty(), "the first logger is adopted", a.all());
        void* rt = g_runtime(&b, NV_TENSORRT_VERSION);
        check(rt == nullptr && a.saw("different ILogger"), "a second logger is refused (reported through the first)", a.all());
        a.errors.clear();
        void* old = g_builder(&a, (NV_TENSORRT_MAJOR + 1) * 10000);
        check(old == nullptr && a.saw("compiled against TensorRT"), "headers of another major version are refused", a.all());
        a.errors.clear();
        std::unique_ptr<IBuilderConfig> cfg(ok->createBuilderConfig());
        int32_t v = cfg->getDLACore();
        check(v == -1 && a.saw("IBuilderConfig::getDLACore") && a.saw("not implemented"),
              "a method the double does not model fails loudly", a.all());
        a.errors.clear();
    }
    {
        std::unique_ptr<IBuilder> bl(builder(a));
        std::unique_ptr<INetworkDefinition> net(bl->createNetworkV2(0));
        std::unique_ptr<nvonnxparser::IParser> p(
            static_cast<nvonnxparser::IParser*>(g_parser(net.get(), &b, NV_ONNX_PARSER_VERSION)));
        bool ok = p->parse(g_onnx.data(), g_onnx.size(), g_path.c_str());
        check(!ok && a.saw("parser's logger differs"), "a parser with another logger cannot populate the network", a.all());
        a.errors.clear();
    }
    {
        Parsed p = parse(a);
        p.parser.reset();
        std::unique_ptr<IHostMemory> plan(p.b->buildSerializedNetwork(*p.net, *p.cfg));
        check(plan == nullptr && a.saw("parser that populated this network was destroyed"),
              "the parser must outlive the build", a.all());
        a.errors.clear();
    }
    {
        Parsed p = parse(a);
        std::unique_ptr<ITimingCache> tc(p.cfg->createTimingCache(nullptr, 0));
        p.cfg->setTimingCache(*tc, false);
        tc.reset();
        std::unique_ptr<IHostMemory> plan(p.b->buildSerializedNetwork(*p.net, *p.cfg));
        check(plan == nullptr && a.saw("timing cache attached with setTimingCache was destroyed"),
              "the timing cache must outlive the build", a.all());
        a.errors.clear();
    }
    {
        Parsed p = parse(a);
        std::unique_ptr<nvonnxparser::IParser> second(
            static_cast<nvonnxparser::IParser*>(g_parser(p.net.get(), &a, NV_ONNX_PARSER_VERSION)));
        bool ok = second->parse(g_onnx.data(), g_onnx.size(), g_path.c_str());
        check(!ok && a.saw("already"), "a network is populated once", a.all());
        a.errors.clear();
    }
#if NV_TENSORRT_MAJOR < 11
    {
        Parsed p = parse(a, 1U << static_cast<uint32_t>(NetworkDefinitionCreationFlag::kSTRONGLY_TYPED));
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        p.cfg->setFlag(BuilderFlag::kFP16);
#pragma GCC diagnostic pop
        std::unique_ptr<IHostMemory> plan(p.b->buildSerializedNetwork(*p.net, *p.cfg));
        check(plan == nullptr && a.saw("not allowed with a strongly typed network"),
              "kFP16 on a strongly typed network is refused", a.all());
        a.errors.clear();
    }
#endif
    {
        Parsed p = parse(a);
        std::unique_ptr<IHostMemory> plan(p.b->buildSerializedNetwork(*p.net, *p.cfg));
        check(plan != nullptr && a.errors.empty(), "a clean build logs no error", a.all());
        // Builder destroyed first: reported.
        p.b.reset();
        check(a.saw("builder was destroyed while 1 network definition(s) and 1 builder config(s)"),
              "destroying the builder before its network and config is reported", a.all());
        a.errors.clear();
        if (plan) {
            std::unique_ptr<IRuntime> rt(static_cast<IRuntime*>(g_runtime(&a, NV_TENSORRT_VERSION)));
            ICudaEngine* eng = rt->deserializeCudaEngine(plan->data(), plan->size());
            rt.reset();
            check(eng != nullptr && a.saw("runtime was destroyed while 1 engine(s)"),
                  "destroying the runtime before its engine is reported", a.all());
            a.errors.clear();
            IExecutionContext* ctx = eng != nullptr ? eng->createExecutionContext() : nullptr;
            delete eng;
            if (ctx != nullptr) {
                Dims d{};
                d.nbDims = 4;
                d.d[0] = 1;
                d.d[1] = 3;
                d.d[2] = 32;
                d.d[3] = 32;
                bool set = ctx->setInputShape("input", d);
                bool ran = ctx->enqueueV3(nullptr);
                check(!set && !ran && a.saw("the ICudaEngine of this execution context was destroyed"),
                      "a context whose engine was destroyed refuses work", a.all());
                delete ctx;
            }
            a.errors.clear();
        }
    }
    std::printf("SELF-TEST: %d passed, %d failed\n", g_pass, g_fail);
    return g_fail == 0 ? 0 : 1;
}
