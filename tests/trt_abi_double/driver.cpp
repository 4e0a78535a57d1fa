// Driver of the TensorRT ABI double: runs rusttrt's real C++ shim (libtriton_rusttrt_tensorrt.so,
// dlopen'ed, used only through include/rusttrt_trt.h) over the double's libnvinfer /
// libnvonnxparser, on the repository's test models, and checks
//   * outputs against the models' expected cases (onnx.reference, tests/data/**/cases.json)
//     and against ONNX Runtime run directly on the same inputs (max |diff| printed);
//   * that each TensorRT contract the shim could break is reported (status + message);
//   * that clean runs log no TensorRT error and the double's stubs were never called.
//
// usage: trt-abi-driver SHIM_LIB NVINFER_LIB PARSER_LIB CASES_MANIFEST REPO_ROOT
// Set RTDBL_VERBOSE=1 to print every log line.
#include "rusttrt_trt.h"

#include "ort_min.h"
#include "plan_format.h"

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>
#include <string>
#include <vector>

namespace {

// ---- the shim, resolved with dlsym ------------------------------------------------------------

#define RT_FNS(X)                                                                                      \
    X(rt_abi_version) X(rt_header_version) X(rt_library_open) X(rt_library_version) X(rt_library_destroy) \
    X(rt_network_parse) X(rt_network_input_count) X(rt_network_input_info) X(rt_network_build)          \
    X(rt_network_destroy) X(rt_engine_load) X(rt_engine_io_count) X(rt_engine_io_info)                  \
    X(rt_engine_profile_count) X(rt_engine_profile_shape) X(rt_engine_destroy) X(rt_context_new)        \
    X(rt_context_set_profile) X(rt_context_set_input_shape) X(rt_context_set_tensor_address)           \
    X(rt_context_tensor_shape) X(rt_context_enqueue) X(rt_context_destroy) X(rt_bytes_free)

struct Shim {
#define DECL(n) decltype(&::n) n = nullptr;
    RT_FNS(DECL)
#undef DECL
};
Shim S;

// ---- log capture ---------------------------------------------------------------------------

struct LogLine {
    int32_t sev;
    std::string msg;
};
std::mutex g_log_mutex;
std::vector<LogLine> g_logs;
bool g_verbose = false;

void log_cb(void*, int32_t sev, char const* msg) {
    std::lock_guard<std::mutex> g(g_log_mutex);
    g_logs.push_back({sev, msg != nullptr ? msg : ""});
    if (g_verbose) {
        std::printf("    [log %d] %s\n", sev, msg != nullptr ? msg : "");
    }
}

size_t mark() {
    std::lock_guard<std::mutex> g(g_log_mutex);
    return g_logs.size();
}

std::vector<std::string> since(size_t m, int32_t max_sev) {
    std::lock_guard<std::mutex> g(g_log_mutex);
    std::vector<std::string> r;
    for (size_t i = m; i < g_logs.size(); ++i) {
        if (g_logs[i].sev <= max_sev) r.push_back(g_logs[i].msg);
    }
    return r;
}

bool logged(size_t m, std::string const& needle, int32_t max_sev = RT_LOG_VERBOSE) {
    for (auto const& s : since(m, max_sev)) {
        if (s.find(needle) != std::string::npos) return true;
    }
    return false;
}

std::string join(std::vector<std::string> const& v) {
    std::string r;
    for (auto const& s : v) r += (r.empty() ? "" : " | ") + s;
    return r;
}

// ---- results -------------------------------------------------------------------------------

int g_pass = 0;
int g_fail = 0;
std::vector<std::string> g_failures;

std::mutex g_check_mutex;

void check(bool ok, std::string const& what, std::string const& detail = "") {
    std::lock_guard<std::mutex> g(g_check_mutex);
    if (ok) {
        ++g_pass;
        std::printf("PASS %s%s%s\n", what.c_str(), detail.empty() ? "" : ": ", detail.c_str());
    } else {
        ++g_fail;
        g_failures.push_back(what);
        std::printf("FAIL %s%s%s\n", what.c_str(), detail.empty() ? "" : ": ", detail.c_str());
    }
}

void check_clean(size_t m, std::string const& what) {
    auto errs = since(m, RT_LOG_ERROR);
    check(errs.empty(), what + ": no TensorRT error logged", join(errs));
}

// A status and message from one shim call.
struct Res {
    rt_status st = RT_OK;
    std::string msg;
    bool ok() const { return st == RT_OK; }
    bool has(std::string const& s) const { return msg.find(s) != std::string::npos; }
};
#define CALL(fn, ...)                                          \
    [&]() {                                                    \
        Res r_;                                                \
        char e_[4096];                                         \
        r_.st = S.fn(__VA_ARGS__, e_, sizeof(e_));             \
        r_.msg = e_;                                           \
        return r_;                                             \
    }()

void expect_err(Res const& r, rt_status st, std::string const& needle, std::string const& what) {
    check(r.st == st && r.has(needle), what,
          "status " + std::to_string(r.st) + " (want " + std::to_string(st) + "), message: " + r.msg);
}

// ---- buffers and data ------------------------------------------------------------------------

struct Buf {
    void* p = nullptr;
    size_t n = 0;
    explicit Buf(size_t bytes) : n(bytes) {
        size_t cap = ((bytes + 255) / 256) * 256;
        p = std::aligned_alloc(256, cap == 0 ? 256 : cap);
        std::memset(p, 0xCD, cap == 0 ? 256 : cap);
    }
    ~Buf() { std::free(p); }
    Buf(Buf const&) = delete;
    Buf& operator=(Buf const&) = delete;
};

std::vector<uint8_t> read_file(std::string const& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

size_t volume(std::vector<int64_t> const& s) {
    size_t n = 1;
    for (int64_t d : s) n *= static_cast<size_t>(d);
    return n;
}

rt_dims dims(std::vector<int64_t> const& v) {
    rt_dims d{};
    d.nb_dims = static_cast<int32_t>(v.size());
    for (size_t i = 0; i < v.size(); ++i) d.d[i] = v[i];
    return d;
}

std::vector<int64_t> vec(rt_dims const& d) { return std::vector<int64_t>(d.d, d.d + std::max(0, d.nb_dims)); }

std::string str(std::vector<int64_t> const& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
    return s + "]";
}

// RT_DTYPE_* -> ONNX element type
int32_t onnx_of(int32_t rt) {
    switch (rt) {
    case RT_DTYPE_FLOAT: return rtdbl::ort::kFloat;
    case RT_DTYPE_HALF: return rtdbl::ort::kFloat16;
    case RT_DTYPE_INT8: return rtdbl::ort::kInt8;
    case RT_DTYPE_INT32: return rtdbl::ort::kInt32;
    case RT_DTYPE_BOOL: return rtdbl::ort::kBool;
    case RT_DTYPE_UINT8: return rtdbl::ort::kUint8;
    case RT_DTYPE_BF16: return rtdbl::ort::kBfloat16;
    case RT_DTYPE_INT64: return rtdbl::ort::kInt64;
    default: return 0;
    }
}

float half_to_float(uint16_t h) {
    uint32_t s = (h >> 15) & 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    float v;
    if (e == 0) v = std::ldexp(static_cast<float>(m), -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = std::ldexp(static_cast<float>(m | 0x400), static_cast<int>(e) - 25);
    return s ? -v : v;
}

// Element i of a tensor as double (for comparisons).
double elem(int32_t onnx, uint8_t const* p, size_t i) {
    using namespace rtdbl::ort;
    switch (onnx) {
    case kFloat: { float v; std::memcpy(&v, p + 4 * i, 4); return v; }
    case kFloat16: { uint16_t v; std::memcpy(&v, p + 2 * i, 2); return half_to_float(v); }
    case kBfloat16: { uint16_t v; std::memcpy(&v, p + 2 * i, 2); uint32_t u = static_cast<uint32_t>(v) << 16; float f; std::memcpy(&f, &u, 4); return f; }
    case kInt8: return static_cast<int8_t>(p[i]);
    case kUint8: case kBool: return p[i];
    case kInt32: { int32_t v; std::memcpy(&v, p + 4 * i, 4); return v; }
    case kInt64: { int64_t v; std::memcpy(&v, p + 8 * i, 8); return static_cast<double>(v); }
    default: return NAN;
    }
}

// Deterministic test data for a tensor of `onnx` type.
std::vector<uint8_t> make_data(int32_t onnx, size_t n, uint32_t seed) {
    using namespace rtdbl::ort;
    std::vector<uint8_t> b(n * elem_size(onnx));
    uint32_t x = seed * 2654435761U + 1;
    for (size_t i = 0; i < n; ++i) {
        x = x * 1664525U + 1013904223U;
        float f = static_cast<float>(static_cast<int32_t>(x >> 8) % 2000) / 500.0f - 2.0f;  // [-2, 2)
        switch (onnx) {
        case kFloat: std::memcpy(&b[4 * i], &f, 4); break;
        case kFloat16: {  // exact small halves: k/256 with |k| < 512 -> normal or zero
            int k = static_cast<int>(x >> 20) % 512 - 256;
            float hv = k / 64.0f;
            uint32_t u; std::memcpy(&u, &hv, 4);
            uint16_t h = 0;
            if (k != 0) {
                uint32_t e = ((u >> 23) & 0xff) - 127 + 15, m = (u >> 13) & 0x3ff;
                h = static_cast<uint16_t>(((u >> 31) << 15) | (e << 10) | m);
            }
            std::memcpy(&b[2 * i], &h, 2);
            break;
        }
        case kBfloat16: { uint32_t u; std::memcpy(&u, &f, 4); uint16_t h = static_cast<uint16_t>(u >> 16); std::memcpy(&b[2 * i], &h, 2); break; }
        case kInt8: b[i] = static_cast<uint8_t>(static_cast<int8_t>((x >> 16) % 200 - 100)); break;
        case kUint8: b[i] = static_cast<uint8_t>(x >> 24); break;
        case kBool: b[i] = (x >> 28) & 1; break;
        case kInt32: { int32_t v = static_cast<int32_t>(x >> 4) % 100000 - 50000; std::memcpy(&b[4 * i], &v, 4); break; }
        case kInt64: { int64_t v = static_cast<int64_t>(x >> 4) % 100000 - 50000; std::memcpy(&b[8 * i], &v, 8); break; }
        default: break;
        }
    }
    return b;
}

// ---- model runs --------------------------------------------------------------------------

struct Tensor {
    std::string name;
    int32_t onnx = 0;
    std::vector<int64_t> shape;
    std::vector<uint8_t> data;
};

struct Case {
    std::string name;
    std::vector<Tensor> in, out;
};

struct Model {
    std::string name, path;
    double atol = 0, rtol = 0;
    std::vector<Case> cases;
};

std::vector<Model> read_manifest(std::string const& path) {
    std::vector<Model> ms;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream s(line);
        std::string kind;
        s >> kind;
        if (kind == "model") {
            ms.emplace_back();
            s >> ms.back().name >> ms.back().path >> ms.back().atol >> ms.back().rtol;
        } else if (kind == "case") {
            ms.back().cases.emplace_back();
            s >> ms.back().cases.back().name;
        } else if (kind == "in" || kind == "out") {
            Tensor t;
            size_t rank;
            s >> t.name >> t.onnx >> rank;
            t.shape.resize(rank);
            for (auto& d : t.shape) s >> d;
            std::string file;
            s >> file;
            t.data = read_file(file);
            (kind == "in" ? ms.back().cases.back().in : ms.back().cases.back().out).push_back(t);
        }
    }
    return ms;
}

struct Net {
    rt_network* p = nullptr;
    ~Net() { if (p) S.rt_network_destroy(p); }
};
struct Eng {
    rt_engine* p = nullptr;
    ~Eng() { if (p) S.rt_engine_destroy(p); }
};
struct Ctx {
    rt_context* p = nullptr;
    ~Ctx() { if (p) S.rt_context_destroy(p); }
};

struct InputInfo {
    std::string name;
    std::vector<int64_t> dims;
    int32_t dtype;
};

std::vector<InputInfo> inputs_of(rt_network* net) {
    std::vector<InputInfo> r;
    int32_t n = S.rt_network_input_count(net);
    for (int32_t i = 0; i < n; ++i) {
        char const* name = nullptr;
        rt_dims d{};
        int32_t dt = -1, shape_t = 0;
        Res res = CALL(rt_network_input_info, net, i, &name, &d, &dt, &shape_t);
        if (!res.ok()) {
            check(false, "rt_network_input_info", res.msg);
            continue;
        }
        r.push_back({name, vec(d), dt});
    }
    return r;
}

// Batch profiles [lo..hi] (opt = hi) for every input whose first dim is dynamic; other dynamic
// dims get 1..256.
struct ProfileSet {
    std::list<std::string> names;  // the rt_profile_input names point into these
    std::vector<std::vector<rt_profile_input>> inputs;
    std::vector<rt_profile> profiles;
    void add(std::vector<InputInfo> const& ins, int64_t lo, int64_t hi) {
        inputs.emplace_back();
        for (auto const& in : ins) {
            if (in.dims.empty() || in.dims[0] != -1) continue;
            std::vector<int64_t> mn = in.dims, op = in.dims, mx = in.dims;
            mn[0] = lo; op[0] = hi; mx[0] = hi;
            // Other dynamic dims (a text encoder's sequence length): 1..256, tuned for 64, as an
            // explicit trt_profile_*_shapes range would give them.
            for (size_t i = 1; i < in.dims.size(); ++i) {
                if (in.dims[i] == -1) { mn[i] = 1; op[i] = 64; mx[i] = 256; }
            }
            names.push_back(in.name);
            inputs.back().push_back({names.back().c_str(), dims(mn), dims(op), dims(mx)});
        }
        if (inputs.back().empty()) {
            inputs.pop_back();
            return;
        }
        profiles.clear();
        for (auto& v : inputs) profiles.push_back({v.data(), v.size()});
    }
};

rt_build_options base_opts(ProfileSet const& ps) {
    rt_build_options o{};
    o.fp16 = 0;
    o.workspace_bytes = 1ULL << 28;
    o.builder_optimization_level = 2;
    o.profiles = ps.profiles.empty() ? nullptr : ps.profiles.data();
    o.n_profiles = ps.profiles.size();
    return o;
}

rt_lib* g_lib = nullptr;
std::string g_repo;

// Parses and builds `path`; returns the plan bytes (empty on failure, after a FAIL line).
std::vector<uint8_t> build_plan(std::string const& path, std::string const& label, int64_t max_batch = 8,
                                rt_status* st_out = nullptr, std::string* msg_out = nullptr) {
    std::vector<uint8_t> onnx = read_file(path);
    Net net;
    Res r = CALL(rt_network_parse, g_lib, onnx.data(), onnx.size(), path.c_str(), 0, &net.p);
    if (st_out) *st_out = r.st;
    if (msg_out) *msg_out = r.msg;
    if (!r.ok()) {
        return {};
    }
    ProfileSet ps;
    ps.add(inputs_of(net.p), 1, max_batch);
    rt_build_options o = base_opts(ps);
    rt_bytes plan{};
    r = CALL(rt_network_build, net.p, &o, &plan);
    if (st_out) *st_out = r.st;
    if (msg_out) *msg_out = r.msg;
    if (!r.ok()) {
        check(false, label + ": rt_network_build", r.msg);
        return {};
    }
    std::vector<uint8_t> bytes(static_cast<uint8_t*>(plan.data), static_cast<uint8_t*>(plan.data) + plan.len);
    S.rt_bytes_free(&plan);
    return bytes;
}

// Runs one set of inputs through the engine (context `ctx`), returns outputs by name.
bool run(rt_context* ctx, rt_engine* eng, std::vector<Tensor> const& ins, std::vector<Tensor>& outs,
         std::string const& label) {
    std::vector<std::unique_ptr<Buf>> bufs;
    for (auto const& t : ins) {
        rt_dims shape = dims(t.shape);
        Res r = CALL(rt_context_set_input_shape, ctx, t.name.c_str(), &shape);
        if (!r.ok()) {
            check(false, label + ": set shape of '" + t.name + "'", r.msg);
            return false;
        }
        bufs.push_back(std::make_unique<Buf>(t.data.size()));
        std::memcpy(bufs.back()->p, t.data.data(), t.data.size());
        r = CALL(rt_context_set_tensor_address, ctx, t.name.c_str(), bufs.back()->p);
        if (!r.ok()) {
            check(false, label + ": set address of '" + t.name + "'", r.msg);
            return false;
        }
    }
    outs.clear();
    std::vector<Buf*> out_bufs;
    for (int32_t i = 0; i < S.rt_engine_io_count(eng); ++i) {
        char const* name;
        int32_t is_in, dt, plain;
        rt_dims d;
        Res r = CALL(rt_engine_io_info, eng, i, &name, &is_in, &dt, &d, &plain);
        if (!r.ok() || is_in) continue;
        rt_dims s{};
        r = CALL(rt_context_tensor_shape, ctx, name, &s);
        std::vector<int64_t> shape = vec(s);
        if (!r.ok() || std::any_of(shape.begin(), shape.end(), [](int64_t x) { return x < 0; })) {
            check(false, label + ": output shape of '" + std::string(name) + "'", r.msg + " " + str(shape));
            return false;
        }
        Tensor t{name, onnx_of(dt), shape, {}};
        bufs.push_back(std::make_unique<Buf>(volume(shape) * rtdbl::ort::elem_size(t.onnx)));
        out_bufs.push_back(bufs.back().get());
        r = CALL(rt_context_set_tensor_address, ctx, name, bufs.back()->p);
        if (!r.ok()) {
            check(false, label + ": set address of '" + std::string(name) + "'", r.msg);
            return false;
        }
        outs.push_back(t);
    }
    Res r = CALL(rt_context_enqueue, ctx, reinterpret_cast<void*>(0x5170));
    if (!r.ok()) {
        check(false, label + ": rt_context_enqueue", r.msg);
        return false;
    }
    for (size_t i = 0; i < outs.size(); ++i) {
        auto const* p = static_cast<uint8_t const*>(out_bufs[i]->p);
        outs[i].data.assign(p, p + out_bufs[i]->n);
    }
    return true;
}

// ONNX Runtime directly on the same model and inputs.
bool reference(std::string const& path, std::vector<Tensor> const& ins, std::vector<Tensor>& outs,
               std::string& err) {
    std::vector<uint8_t> onnx = read_file(path);
    std::string dir = path.substr(0, path.rfind('/'));
    auto s = rtdbl::ort::Session::create(onnx.data(), onnx.size(), dir, err);
    if (!s) return false;
    std::vector<rtdbl::ort::TensorRef> refs;
    for (auto const& t : ins) refs.push_back({t.name, t.onnx, t.shape, const_cast<uint8_t*>(t.data.data())});
    std::vector<std::string> names;
    for (auto const& t : outs) names.push_back(t.name);
    std::vector<std::vector<int64_t>> shapes;
    std::vector<std::vector<uint8_t>> data;
    if (!s->run_alloc(refs, names, shapes, &data, err)) return false;
    for (size_t i = 0; i < outs.size(); ++i) {
        outs[i].shape = shapes[i];
        outs[i].data = data[i];
    }
    return true;
}

// max |a-b| over all outputs; `within` false if some element exceeds atol + rtol*|b|.
double compare(std::vector<Tensor> const& got, std::vector<Tensor> const& want, double atol, double rtol,
               bool& within, std::string& why) {
    double maxd = 0;
    within = true;
    for (auto const& w : want) {
        auto it = std::find_if(got.begin(), got.end(), [&](Tensor const& g) { return g.name == w.name; });
        if (it == got.end()) {
            within = false;
            why += "missing output '" + w.name + "'; ";
            continue;
        }
        if (it->shape != w.shape || it->data.size() != w.data.size()) {
            within = false;
            why += "'" + w.name + "' shape " + str(it->shape) + " vs " + str(w.shape) + "; ";
            continue;
        }
        size_t n = volume(w.shape);
        for (size_t i = 0; i < n; ++i) {
            double a = elem(it->onnx, it->data.data(), i), b = elem(w.onnx, w.data.data(), i);
            double d = std::fabs(a - b);
            if (std::isnan(a) != std::isnan(b)) d = INFINITY;
            if (std::isnan(a) && std::isnan(b)) d = 0;
            maxd = std::max(maxd, d);
            if (d > atol + rtol * std::fabs(b)) {
                if (within) why += "'" + w.name + "'[" + std::to_string(i) + "] " + std::to_string(a) + " vs " + std::to_string(b) + "; ";
                within = false;
            }
        }
    }
    return maxd;
}

std::string fmt(double d) {
    char b[32];
    std::snprintf(b, sizeof(b), "%.3g", d);
    return b;
}

double g_worst_ref = 0, g_worst_ort = 0;

void test_model_cases(Model const& m) {
    std::printf("-- model %s (%s)\n", m.name.c_str(), m.path.c_str());
    size_t lm = mark();
    std::vector<uint8_t> plan = build_plan(m.path, m.name);
    if (plan.empty()) {
        check(false, m.name + ": build");
        return;
    }
    check(logged(lm, "optimization level 2"), m.name + ": the builder config reached the double (optimization level 2)");
    Eng eng;
    Res r = CALL(rt_engine_load, g_lib, plan.data(), plan.size(), &eng.p);
    if (!r.ok()) {
        check(false, m.name + ": rt_engine_load", r.msg);
        return;
    }
    // I/O info against the cases' tensors.
    bool io_ok = true;
    std::string io_why;
    for (auto const& t : m.cases[0].in) {
        bool found = false;
        for (int32_t i = 0; i < S.rt_engine_io_count(eng.p); ++i) {
            char const* name; int32_t is_in, dt, plain; rt_dims d;
            CALL(rt_engine_io_info, eng.p, i, &name, &is_in, &dt, &d, &plain);
            if (t.name == name) {
                found = is_in == 1 && onnx_of(dt) == t.onnx && plain == 1 && d.nb_dims == static_cast<int32_t>(t.shape.size());
            }
        }
        if (!found) { io_ok = false; io_ok = false; io_why += "input '" + t.name + "' "; }
    }
    check(io_ok, m.name + ": engine I/O info (names, types, ranks, linear device tensors)", io_why);
    Ctx ctx;
    r = CALL(rt_context_new, eng.p, &ctx.p);
    if (!r.ok()) {
        check(false, m.name + ": rt_context_new", r.msg);
        return;
    }
    for (auto const& c : m.cases) {
        std::string label = m.name + "/" + c.name;
        std::vector<Tensor> got;
        if (!run(ctx.p, eng.p, c.in, got, label)) continue;
        bool within = false;
        std::string why;
        double dref = compare(got, c.out, m.atol, m.rtol, within, why);
        check(within, label + ": outputs vs expected cases (atol " + fmt(m.atol) + ", rtol " + fmt(m.rtol) + ")",
              "max |diff| " + fmt(dref) + (why.empty() ? "" : "; " + why));
        std::vector<Tensor> ort = got;
        std::string err;
        if (!reference(m.path, c.in, ort, err)) {
            check(false, label + ": ONNX Runtime reference", err);
            continue;
        }
        double dort = compare(got, ort, 0, 0, within, why);
        check(dort == 0 && within, label + ": outputs vs ONNX Runtime run directly", "max |diff| " + fmt(dort));
        g_worst_ref = std::max(g_worst_ref, dref);
        g_worst_ort = std::max(g_worst_ort, dort);
    }
    check_clean(lm, m.name);
}

void test_dtypes() {
    std::printf("-- dtype models\n");
    struct D { char const* model; bool supported; char const* onnx_name; };
    D ds[] = {{"dtype_fp32", true, ""}, {"dtype_fp16", true, ""}, {"dtype_bf16", true, ""},
              {"dtype_int8", true, ""}, {"dtype_uint8", true, ""}, {"dtype_int32", true, ""},
              {"dtype_int64", true, ""}, {"dtype_bool", true, ""}, {"dtype_fp64", false, "DOUBLE"},
              {"dtype_int16", false, "INT16"}, {"dtype_uint16", false, "UINT16"},
              {"dtype_uint32", false, "UINT32"}, {"dtype_uint64", false, "UINT64"},
              {"string_input", false, "STRING"}};
    for (D const& d : ds) {
        std::string path = g_repo + "/tests/data/models/" + d.model + "/1/model.onnx";
        size_t lm = mark();
        rt_status st = RT_OK;
        std::string msg;
        std::vector<uint8_t> plan = build_plan(path, d.model, 8, &st, &msg);
        if (!d.supported) {
            check(plan.empty() && st == RT_ERR_PARSE && msg.find(d.onnx_name) != std::string::npos,
                  std::string(d.model) + ": the parser rejects ONNX type " + d.onnx_name + " (RT_ERR_PARSE)", msg);
            continue;
        }
        if (plan.empty()) {
            check(false, std::string(d.model) + ": build", msg);
            continue;
        }
        Eng eng;
        Ctx ctx;
        Res r = CALL(rt_engine_load, g_lib, plan.data(), plan.size(), &eng.p);
        if (r.ok()) r = CALL(rt_context_new, eng.p, &ctx.p);
        if (!r.ok()) {
            check(false, std::string(d.model) + ": load", r.msg);
            continue;
        }
        char const* name; int32_t is_in, dt, plain; rt_dims dd;
        CALL(rt_engine_io_info, eng.p, 0, &name, &is_in, &dt, &dd, &plain);
        Tensor in{name, onnx_of(dt), {3, 4}, make_data(onnx_of(dt), 12, 7)};
        std::vector<Tensor> got;
        if (!run(ctx.p, eng.p, {in}, got, d.model)) continue;
        std::vector<Tensor> ort = got;
        std::string err;
        bool within = false;
        std::string why;
        if (!reference(path, {in}, ort, err)) {
            check(false, std::string(d.model) + ": ONNX Runtime reference", err);
            continue;
        }
        double diff = compare(got, ort, 0, 0, within, why);
        check(within && got[0].data == ort[0].data, std::string(d.model) + ": outputs vs ONNX Runtime (bit-exact)",
              "max |diff| " + fmt(diff) + " " + why);
        check_clean(lm, d.model);
    }
    rt_status st;
    std::string msg;
    build_plan(g_repo + "/tests/data/models/corrupt/1/model.onnx", "corrupt", 8, &st, &msg);
    check(st == RT_ERR_PARSE && msg.find("protobuf") != std::string::npos, "corrupt model: RT_ERR_PARSE", msg);
}

// ---- contract checks ------------------------------------------------------------------------

void test_contracts(std::string const& clip) {
    std::printf("-- TensorRT contracts (tiny_clip)\n");
    std::vector<uint8_t> onnx = read_file(clip);
    auto parse = [&](Net& net, int32_t strongly = 0) {
        return CALL(rt_network_parse, g_lib, onnx.data(), onnx.size(), clip.c_str(), strongly, &net.p);
    };
    auto input = [&](int64_t batch, uint32_t seed) {
        return Tensor{"input", rtdbl::ort::kFloat, {batch, 3, 32, 32}, make_data(rtdbl::ort::kFloat, batch * 3 * 32 * 32, seed)};
    };

    // Two profiles: batch 1..4 and 5..8.
    std::vector<uint8_t> plan2;
    {
        Net net;
        parse(net);
        auto ins = inputs_of(net.p);
        ProfileSet ps;
        ps.add(ins, 1, 4);
        ps.add(ins, 5, 8);
        rt_build_options o = base_opts(ps);
        rt_bytes plan{};
        size_t lm = mark();
        Res r = CALL(rt_network_build, net.p, &o, &plan);
        check(r.ok(), "two-profile build", r.msg);
        if (!r.ok()) return;
        check(logged(lm, "2 optimization profile(s)"), "both profiles reached the plan");
        plan2.assign(static_cast<uint8_t*>(plan.data), static_cast<uint8_t*>(plan.data) + plan.len);
        S.rt_bytes_free(&plan);
        Res again = CALL(rt_network_build, net.p, &o, &plan);
        expect_err(again, RT_ERR_INVALID_ARG, "already built", "a network is built once");
    }
    Eng eng;
    Res r = CALL(rt_engine_load, g_lib, plan2.data(), plan2.size(), &eng.p);
    check(r.ok() && S.rt_engine_profile_count(eng.p) == 2, "engine has 2 profiles", r.msg);
    if (!r.ok()) return;
    rt_dims mx{};
    r = CALL(rt_engine_profile_shape, eng.p, "input", 1, 2, &mx);
    check(r.ok() && vec(mx) == std::vector<int64_t>{8, 3, 32, 32}, "profile 1 max shape", str(vec(mx)));
    r = CALL(rt_engine_profile_shape, eng.p, "embedding", 0, 0, &mx);
    expect_err(r, RT_ERR_INVALID_ARG, "not an input", "profile shape of an output is refused");

    {
        Ctx ctx;
        CALL(rt_context_new, eng.p, &ctx.p);
        size_t lm = mark();
        rt_dims d6 = dims({6, 3, 32, 32});
        r = CALL(rt_context_set_input_shape, ctx.p, "input", &d6);
        expect_err(r, RT_ERR_INVALID_ARG, "outside optimization profile 0", "shape outside the active profile is refused");
        check(logged(lm, "outside optimization profile 0 (min [1,3,32,32], max [4,3,32,32])", RT_LOG_ERROR),
              "the double logged the profile range it enforced");
        rt_dims bad_rank = dims({6, 3, 32});
        r = CALL(rt_context_set_input_shape, ctx.p, "input", &bad_rank);
        expect_err(r, RT_ERR_INVALID_ARG, "has rank 3", "shape of the wrong rank is refused");
        rt_dims bad_ch = dims({2, 4, 32, 32});
        r = CALL(rt_context_set_input_shape, ctx.p, "input", &bad_ch);
        expect_err(r, RT_ERR_INVALID_ARG, "in dimension 1", "shape differing in a fixed dim is refused");

        // Profile 1 then batch 6 runs, and matches ONNX Runtime.
        lm = mark();
        r = CALL(rt_context_set_profile, ctx.p, 1, nullptr);
        check(r.ok(), "setOptimizationProfileAsync(1)", r.msg);
        std::vector<Tensor> got, ort;
        Tensor in6 = input(6, 66);
        if (run(ctx.p, eng.p, {in6}, got, "profile 1 batch 6")) {
            ort = got;
            std::string err;
            bool within;
            std::string why;
            reference(clip, {in6}, ort, err);
            double d = compare(got, ort, 0, 0, within, why);
            check(within, "profile 1, batch 6: outputs vs ONNX Runtime", "max |diff| " + fmt(d));
        }
        check_clean(lm, "profile switch and run");
        // Switching profiles after setting shapes discards them; enqueue then fails.
        lm = mark();
        r = CALL(rt_context_set_profile, ctx.p, 0, nullptr);
        check(r.ok() && logged(lm, "discards the input shapes", RT_LOG_WARNING),
              "setOptimizationProfileAsync after setInputShape: shapes discarded, warning logged", join(since(lm, 2)));
        r = CALL(rt_context_enqueue, ctx.p, nullptr);
        expect_err(r, RT_ERR_INVALID_ARG, "(no shape for 'input')", "enqueue after the profile switch without new shapes fails");
        r = CALL(rt_context_set_profile, ctx.p, 2, nullptr);
        expect_err(r, RT_ERR_INVALID_ARG, "profile index 2 is outside 0..1", "switching to a profile that does not exist");
    }
    {
        // Enqueue with a missing output address.
        Ctx ctx;
        CALL(rt_context_new, eng.p, &ctx.p);
        Tensor in2 = input(2, 2);
        Buf b(in2.data.size());
        std::memcpy(b.p, in2.data.data(), in2.data.size());
        rt_dims d2 = dims(in2.shape);
        CALL(rt_context_set_input_shape, ctx.p, "input", &d2);
        CALL(rt_context_set_tensor_address, ctx.p, "input", b.p);
        r = CALL(rt_context_enqueue, ctx.p, nullptr);
        expect_err(r, RT_ERR_INTERNAL, "no address set for tensor(s) 'embedding'", "enqueue without an output address");
        r = CALL(rt_context_set_tensor_address, ctx.p, "input", static_cast<char*>(b.p) + 4);
        expect_err(r, RT_ERR_INVALID_ARG, "256-byte aligned", "a misaligned tensor address is refused");
        r = CALL(rt_context_set_tensor_address, ctx.p, "nope", b.p);
        expect_err(r, RT_ERR_INVALID_ARG, "'nope' is not an I/O tensor", "an address for an unknown tensor is refused");
        rt_dims s{};
        r = CALL(rt_context_tensor_shape, ctx.p, "embedding", &s);
        check(r.ok() && vec(s) == std::vector<int64_t>{2, 32}, "output shape follows the input shape", str(vec(s)));
        Ctx fresh;
        CALL(rt_context_new, eng.p, &fresh.p);
        r = CALL(rt_context_enqueue, fresh.p, nullptr);
        expect_err(r, RT_ERR_INVALID_ARG, "not every input shape was set before enqueue (no shape for 'input')",
                   "enqueue before any input shape");
    }

    // One engine, a context per thread, enqueues in parallel (the engine is shared, contexts are not).
    {
        size_t lm = mark();
        constexpr int kThreads = 3, kIters = 8;
        std::vector<Tensor> ins;
        std::vector<std::vector<Tensor>> refs(kThreads);
        for (int t = 0; t < kThreads; ++t) {
            ins.push_back(input(3, 100 + t));
            refs[t] = {Tensor{"embedding", rtdbl::ort::kFloat, {}, {}}};
            std::string err;
            if (!reference(clip, {ins[t]}, refs[t], err)) check(false, "reference for the threaded run", err);
        }
        std::vector<int> bad(kThreads, 0);
        std::vector<std::thread> th;
        for (int t = 0; t < kThreads; ++t) {
            th.emplace_back([&, t]() {
                Ctx ctx;
                char e[1024];
                if (S.rt_context_new(eng.p, &ctx.p, e, sizeof(e)) != RT_OK) {
                    bad[t] = kIters;
                    return;
                }
                for (int i = 0; i < kIters; ++i) {
                    std::vector<Tensor> got;
                    bool within = false;
                    std::string why;
                    if (!run(ctx.p, eng.p, {ins[t]}, got, "thread " + std::to_string(t)) ||
                        compare(got, refs[t], 0, 0, within, why) != 0 || !within) {
                        ++bad[t];
                    }
                }
            });
        }
        for (auto& x : th) x.join();
        int total = 0;
        for (int b : bad) total += b;
        check(total == 0, std::to_string(kThreads) + " threads x " + std::to_string(kIters) +
                               " enqueues on their own contexts of one engine match ONNX Runtime",
              std::to_string(total) + " mismatching run(s)");
        check_clean(lm, "threaded runs");
    }

    // Serialized plans: foreign version, corrupt, truncated, not a plan.
    {
        std::vector<uint8_t> foreign = plan2;
        int32_t major;
        std::memcpy(&major, &foreign[rtdbl::kPlanMajorOffset], 4);
        int32_t other = major + 1;
        std::memcpy(&foreign[rtdbl::kPlanMajorOffset], &other, 4);
        Eng e;
        r = CALL(rt_engine_load, g_lib, foreign.data(), foreign.size(), &e.p);
        expect_err(r, RT_ERR_DESERIALIZE, "built by TensorRT " + std::to_string(other) + ".",
                   "a plan of another TensorRT major version does not deserialize");
        check(e.p == nullptr, "no engine handed out for the foreign plan");
        std::vector<uint8_t> corrupt = plan2;
        corrupt[corrupt.size() / 2] ^= 0x5a;
        r = CALL(rt_engine_load, g_lib, corrupt.data(), corrupt.size(), &e.p);
        expect_err(r, RT_ERR_DESERIALIZE, "checksum mismatch", "a corrupt plan does not deserialize");
        r = CALL(rt_engine_load, g_lib, plan2.data(), plan2.size() - 10, &e.p);
        expect_err(r, RT_ERR_DESERIALIZE, "truncated", "a truncated plan does not deserialize");
        std::vector<uint8_t> junk(4096, 0x42);
        r = CALL(rt_engine_load, g_lib, junk.data(), junk.size(), &e.p);
        expect_err(r, RT_ERR_DESERIALIZE, "bad magic", "bytes that are not a plan do not deserialize");
    }

    // Destroying the engine while a context lives is reported; the context then refuses work.
    {
        rt_engine* e = nullptr;
        rt_context* c = nullptr;
        CALL(rt_engine_load, g_lib, plan2.data(), plan2.size(), &e);
        CALL(rt_context_new, e, &c);
        size_t lm = mark();
        S.rt_engine_destroy(e);
        check(logged(lm, "destroyed while 1 execution context(s)", RT_LOG_ERROR),
              "engine destroyed before its context: error logged", join(since(lm, RT_LOG_ERROR)));
        // (Using the context now would be undefined behaviour in the shim, which reads its engine
        // handle; the double's refusal is checked by double_selftest.)
        S.rt_context_destroy(c);
    }

    // Build-time profile contracts.
    auto build_with = [&](std::vector<rt_profile_input> const& pin, size_t n_profiles) {
        Net net;
        parse(net);
        rt_profile p{pin.data(), pin.size()};
        rt_build_options o{};
        o.builder_optimization_level = -1;
        o.profiles = n_profiles ? &p : nullptr;
        o.n_profiles = n_profiles;
        rt_bytes plan{};
        Res res = CALL(rt_network_build, net.p, &o, &plan);
        S.rt_bytes_free(&plan);
        return res;
    };
    {
        r = build_with({}, 0);
        expect_err(r, RT_ERR_BUILD, "no optimization profile has been defined", "dynamic input without profiles");
        r = build_with({{"input", dims({1, 3, 32, 32}), dims({4, 3, 32, 32}), dims({2, 3, 32, 32})}}, 1);
        expect_err(r, RT_ERR_INVALID_ARG, "input 'input' needs min <= opt <= max", "profile with opt > max");
        r = build_with({{"input", dims({1, 3, 32}), dims({4, 3, 32}), dims({8, 3, 32})}}, 1);
        expect_err(r, RT_ERR_BUILD, "has rank 4", "profile of the wrong rank");
        r = build_with({{"input", dims({1, 4, 32, 32}), dims({4, 4, 32, 32}), dims({8, 4, 32, 32})}}, 1);
        expect_err(r, RT_ERR_BUILD, "differ from the network's fixed dims", "profile contradicting a fixed dim");
        r = build_with({{"input", dims({1, 3, 32, 32}), dims({4, 3, 32, 32}), dims({8, 3, 32, 32})},
                        {"ghost", dims({1}), dims({1}), dims({1})}}, 1);
        expect_err(r, RT_ERR_BUILD, "'ghost', which is not a network input", "profile naming an unknown input");
    }

    // Timing cache: miss, hit, and a foreign blob replaced by an empty cache.
    {
        auto build_tc = [&](std::vector<uint8_t> const& blob, std::vector<uint8_t>* out) {
            Net net;
            parse(net);
            ProfileSet ps;
            ps.add(inputs_of(net.p), 1, 8);
            rt_build_options o = base_opts(ps);
            o.use_timing_cache = 1;
            o.timing_cache = blob.empty() ? nullptr : blob.data();
            o.timing_cache_len = blob.size();
            rt_bytes cache_out{}, plan{};
            o.timing_cache_out = &cache_out;
            Res res = CALL(rt_network_build, net.p, &o, &plan);
            if (out) out->assign(static_cast<uint8_t*>(cache_out.data), static_cast<uint8_t*>(cache_out.data) + cache_out.len);
            S.rt_bytes_free(&plan);
            S.rt_bytes_free(&cache_out);
            return res;
        };
        std::vector<uint8_t> cache;
        size_t lm = mark();
        r = build_tc({}, &cache);
        check(r.ok() && !cache.empty() && logged(lm, "timing cache miss"), "timing cache: first build misses, cache returned",
              r.msg + " (" + std::to_string(cache.size()) + " bytes)");
        check_clean(lm, "timing cache (new)");
        lm = mark();
        r = build_tc(cache, nullptr);
        check(r.ok() && logged(lm, "timing cache hit"), "timing cache: second build with the stored cache hits", r.msg);
        check_clean(lm, "timing cache (stored)");
        lm = mark();
        r = build_tc(std::vector<uint8_t>(64, 7), nullptr);
        check(r.ok() && logged(lm, "does not fit", RT_LOG_WARNING), "timing cache: a foreign blob is replaced (warning)", r.msg);
    }

    // FP16 flag: set on weakly typed networks only (TensorRT 10 refuses it with strong typing).
    {
        for (int strongly = 0; strongly < 2; ++strongly) {
            Net net;
            parse(net, strongly);
            ProfileSet ps;
            ps.add(inputs_of(net.p), 1, 8);
            rt_build_options o = base_opts(ps);
            o.fp16 = 1;
            rt_bytes plan{};
            size_t lm = mark();
            r = CALL(rt_network_build, net.p, &o, &plan);
            S.rt_bytes_free(&plan);
            int hdr = S.rt_header_version() / 10000;
            std::string want = hdr < 11 && !strongly ? "builder flags 0x41" : "builder flags 0x40";
            check(r.ok() && logged(lm, want), std::string("fp16 on a ") + (strongly ? "strongly" : "weakly") +
                                                  " typed network: " + want, r.msg);
            check_clean(lm, "fp16 build");
        }
    }
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 6) {
        std::fprintf(stderr, "usage: %s SHIM_LIB NVINFER_LIB PARSER_LIB CASES_MANIFEST REPO_ROOT\n", argv[0]);
        return 2;
    }
    g_verbose = std::getenv("RTDBL_VERBOSE") != nullptr;
    std::string shim = argv[1], nvinfer = argv[2], parser = argv[3];
    g_repo = argv[5];
    void* h = dlopen(shim.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
        std::fprintf(stderr, "cannot load the shim %s: %s\n", shim.c_str(), dlerror());
        return 2;
    }
#define LOAD(n)                                                                       \
    {                                                                                 \
        void* p = dlsym(h, #n);                                                       \
        if (p == nullptr) {                                                           \
            std::fprintf(stderr, "the shim lacks %s\n", #n);                          \
            return 2;                                                                 \
        }                                                                             \
        std::memcpy(&S.n, &p, sizeof(p));                                             \
    }
    RT_FNS(LOAD)
#undef LOAD
    std::string err;
    if (!rtdbl::ort::load(err)) {
        std::fprintf(stderr, "%s\n", err.c_str());
        return 2;
    }
    std::printf("shim %s (rt_abi_version %d, TensorRT headers %d), ONNX Runtime %s\n", shim.c_str(),
                S.rt_abi_version(), S.rt_header_version(), rtdbl::ort::version().c_str());
    check(S.rt_abi_version() == RT_ABI_VERSION, "rt_abi_version matches include/rusttrt_trt.h");

    // Opening: a library that claims another major version is refused; a missing one is NOT_FOUND.
    {
        int32_t hv = S.rt_header_version();
        std::string claim = std::to_string((hv / 10000 + 1) * 10000 + 100);
        setenv("RUSTTRT_TRT_DOUBLE_CLAIM_VERSION", claim.c_str(), 1);
        rt_lib* l = nullptr;
        Res r = CALL(rt_library_open, nvinfer.c_str(), parser.c_str(), log_cb, nullptr, &l);
        unsetenv("RUSTTRT_TRT_DOUBLE_CLAIM_VERSION");
        expect_err(r, RT_ERR_UNSUPPORTED, "the major versions must match", "a libnvinfer of another major version is refused");
        r = CALL(rt_library_open, (nvinfer + ".missing").c_str(), parser.c_str(), log_cb, nullptr, &l);
        expect_err(r, RT_ERR_NOT_FOUND, ".missing", "a missing libnvinfer gives RT_ERR_NOT_FOUND");
    }
    Res r = CALL(rt_library_open, nvinfer.c_str(), parser.c_str(), log_cb, nullptr, &g_lib);
    check(r.ok(), "rt_library_open on the double", r.msg);
    if (!r.ok()) return 1;
    int32_t ver = 0, build = 0, pver = 0;
    S.rt_library_version(g_lib, &ver, &build, &pver);
    check(ver == S.rt_header_version() && pver > 0, "rt_library_version: " + std::to_string(ver) + ", parser " + std::to_string(pver));

    std::vector<Model> models = read_manifest(argv[4]);
    check(!models.empty(), "cases manifest read (" + std::to_string(models.size()) + " models)");
    std::string clip;
    for (auto const& m : models) {
        if (m.name == "tiny_clip") clip = m.path;
        test_model_cases(m);
    }
    test_dtypes();
    if (!clip.empty()) test_contracts(clip);

    S.rt_library_destroy(g_lib);
    void* inf = dlopen(nvinfer.c_str(), RTLD_NOW | RTLD_NOLOAD);
    void* cnt = inf != nullptr ? dlsym(inf, "rtdbl_stub_call_count") : nullptr;
    int64_t (*count)() = nullptr;
    std::memcpy(&count, &cnt, sizeof(cnt));
    check(count != nullptr && count() == 0, "the shim never called a TensorRT method the double does not model",
          count ? std::to_string(count()) + " stub call(s)" : "counter not found");

    std::printf("\nmax |diff| vs expected cases: %s; vs ONNX Runtime run directly: %s\n", fmt(g_worst_ref).c_str(),
                fmt(g_worst_ort).c_str());
    std::printf("SUMMARY: %d passed, %d failed\n", g_pass, g_fail);
    for (auto const& f : g_failures) std::printf("  failed: %s\n", f.c_str());
    return g_fail == 0 ? 0 : 1;
}
