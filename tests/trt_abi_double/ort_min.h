// Minimal run-time binding of ONNX Runtime's C API for the TensorRT ABI double and its driver.
// ONNX Runtime is dlopen'ed (path: $RUSTTRT_TRT_DOUBLE_ORT, else $ORT_DYLIB_PATH, else
// "libonnxruntime.so"); OrtApi is used as a table of function pointers whose slot numbers are
// those of the public onnxruntime_c_api.h (OrtApi is append-only, so they hold for every
// release since API version 13). No ONNX Runtime header is needed to build.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace rtdbl {
namespace ort {

// ONNX TensorProto element types (= ONNXTensorElementDataType).
enum : int32_t {
    kFloat = 1, kUint8 = 2, kInt8 = 3, kUint16 = 4, kInt16 = 5, kInt32 = 6, kInt64 = 7, kString = 8,
    kBool = 9, kFloat16 = 10, kDouble = 11, kUint32 = 12, kUint64 = 13, kBfloat16 = 16
};
size_t elem_size(int32_t onnx_type);  // 0 for types without a fixed size

// Loads ONNX Runtime once per process. Returns false and sets err on failure.
bool load(std::string& err);
std::string version();

struct TensorRef {
    std::string name;
    int32_t onnx_type = 0;
    std::vector<int64_t> shape;
    void* data = nullptr;  // host memory
};

// CUDA execution provider settings (UNTESTED: no GPU machine has run this path yet).
struct CudaOptions {
    int device = 0;
    void* stream = nullptr;  // cudaStream_t the provider computes on (user_compute_stream)
};

class Session {
public:
    // `external_dir`: folder of external weight files ("" for none). `cuda`: run with ONNX
    // Runtime's CUDA execution provider (needs an onnxruntime-gpu library), else on the CPU.
    static std::unique_ptr<Session> create(void const* onnx, size_t len, std::string const& external_dir,
                                           std::string& err, CudaOptions const* cuda = nullptr);
    ~Session();
    Session(Session const&) = delete;
    Session& operator=(Session const&) = delete;
    // Runs with inputs and outputs bound to caller memory (outputs' shapes must be exact): host
    // memory, or CUDA device memory of `device` when device >= 0.
    bool run(std::vector<TensorRef> const& inputs, std::vector<TensorRef> const& outputs, std::string& err,
             int device = -1);
    // Runs with ORT-allocated outputs and returns their shapes and bytes.
    bool run_alloc(std::vector<TensorRef> const& inputs, std::vector<std::string> const& output_names,
                   std::vector<std::vector<int64_t>>& shapes, std::vector<std::vector<uint8_t>>* data,
                   std::string& err);

private:
    Session() = default;
    void* mSession = nullptr;
};

} // namespace ort
} // namespace rtdbl
