// Shared declarations of the TensorRT ABI double (libnvinfer.so.<major> + libnvonnxparser.so.<major>
// built from tests/trt_abi_double/*.cpp against NVIDIA's public headers).
#pragma once
#include <NvInfer.h>

#include <cstdint>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "plan_format.h"

namespace rtdbl {

// One network input or output as the ONNX model declares it.
struct TensorDesc {
    std::string name;
    int32_t onnx_type = 0;                 // ONNX TensorProto element type
    nvinfer1::DataType trt_type{};         // TensorRT data type
    std::vector<int64_t> dims;             // -1 = dynamic
    std::vector<std::string> dim_params;   // symbolic names ("" where none)
};

// What the ONNX parser hands to the network (private channel between the two double libraries).
struct ModelDesc {
    std::vector<TensorDesc> inputs;
    std::vector<TensorDesc> outputs;
    std::vector<uint8_t> onnx;
    std::string external_dir;  // folder of external weight files, "" if none
};

inline std::string dims_str(nvinfer1::Dims const& d) {
    if (d.nbDims < 0) {
        return "[invalid]";
    }
    std::ostringstream s;
    s << '[';
    for (int32_t i = 0; i < d.nbDims; ++i) {
        s << (i ? "," : "") << d.d[i];
    }
    s << ']';
    return s.str();
}

inline nvinfer1::Dims to_dims(std::vector<int64_t> const& v) {
    nvinfer1::Dims d{};
    d.nbDims = static_cast<int32_t>(v.size());
    for (size_t i = 0; i < v.size() && i < static_cast<size_t>(nvinfer1::Dims::MAX_DIMS); ++i) {
        d.d[i] = v[i];
    }
    return d;
}

inline std::vector<int64_t> from_dims(nvinfer1::Dims const& d) {
    return std::vector<int64_t>(d.d, d.d + (d.nbDims < 0 ? 0 : d.nbDims));
}

inline nvinfer1::Dims invalid_dims() {
    nvinfer1::Dims d{};
    d.nbDims = -1;
    return d;
}

// Little-endian byte writer / bounds-checked reader for the plan and timing-cache blobs.
class Writer {
public:
    std::vector<uint8_t> buf;
    void u32(uint32_t v) { raw(&v, 4); }
    void i32(int32_t v) { raw(&v, 4); }
    void u64(uint64_t v) { raw(&v, 8); }
    void i64(int64_t v) { raw(&v, 8); }
    void str(std::string const& s) {
        u64(s.size());
        raw(s.data(), s.size());
    }
    void bytes(std::vector<uint8_t> const& b) {
        u64(b.size());
        raw(b.data(), b.size());
    }
    void raw(void const* p, size_t n) {
        auto const* c = static_cast<uint8_t const*>(p);
        buf.insert(buf.end(), c, c + n);
    }
};

struct ReadError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class Reader {
public:
    Reader(uint8_t const* p, size_t n) : mP(p), mN(n) {}
    uint32_t u32() { uint32_t v; raw(&v, 4); return v; }
    int32_t i32() { int32_t v; raw(&v, 4); return v; }
    uint64_t u64() { uint64_t v; raw(&v, 8); return v; }
    int64_t i64() { int64_t v; raw(&v, 8); return v; }
    std::string str() {
        uint64_t n = len();
        std::string s(reinterpret_cast<char const*>(mP + mOff), n);
        mOff += n;
        return s;
    }
    std::vector<uint8_t> bytes() {
        uint64_t n = len();
        std::vector<uint8_t> b(mP + mOff, mP + mOff + n);
        mOff += n;
        return b;
    }
    void raw(void* out, size_t n) {
        if (n > mN - mOff) {
            throw ReadError("truncated at byte " + std::to_string(mOff));
        }
        std::memcpy(out, mP + mOff, n);
        mOff += n;
    }
    bool done() const { return mOff == mN; }

private:
    uint64_t len() {
        uint64_t n = u64();
        if (n > mN - mOff) {
            throw ReadError("length " + std::to_string(n) + " at byte " + std::to_string(mOff) + " runs past the end");
        }
        return n;
    }
    uint8_t const* mP;
    size_t mN;
    size_t mOff = 0;
};

inline void write_tensor(Writer& w, TensorDesc const& t) {
    w.str(t.name);
    w.i32(t.onnx_type);
    w.i32(static_cast<int32_t>(t.trt_type));
    w.u32(static_cast<uint32_t>(t.dims.size()));
    for (size_t i = 0; i < t.dims.size(); ++i) {
        w.i64(t.dims[i]);
        w.str(i < t.dim_params.size() ? t.dim_params[i] : std::string());
    }
}

inline TensorDesc read_tensor(Reader& r) {
    TensorDesc t;
    t.name = r.str();
    t.onnx_type = r.i32();
    t.trt_type = static_cast<nvinfer1::DataType>(r.i32());
    uint32_t n = r.u32();
    if (n > static_cast<uint32_t>(nvinfer1::Dims::MAX_DIMS)) {
        throw ReadError("tensor '" + t.name + "' has rank " + std::to_string(n));
    }
    for (uint32_t i = 0; i < n; ++i) {
        t.dims.push_back(r.i64());
        t.dim_params.push_back(r.str());
    }
    return t;
}

} // namespace rtdbl

// Private channel from libnvonnxparser (double) to libnvinfer (double). Returns false (after
// logging) when `network` is not a live network of this library.
extern "C" bool rtdbl_network_attach_model(nvinfer1::INetworkDefinition* network, rtdbl::ModelDesc const* model,
                                           nvinfer1::ILogger* parser_logger) noexcept;
// The parser that populated a network tells it when it is destroyed (TensorRT's parser owns the
// weights the network refers to, so it must outlive the build).
extern "C" void rtdbl_network_parser_gone(nvinfer1::INetworkDefinition* network) noexcept;
