// Failure values returned by the generated stubs (gen_stubs.py) of the TensorRT ABI double.
#pragma once
#include <NvInfer.h>
#include <type_traits>

// Defined once per double library: logs "<Interface>::<method> is not implemented by the
// TensorRT ABI double" as an error through the library's logger and counts the call.
void rtdbl_stub_called(char const* what) noexcept;

namespace rtdbl {
template <class T>
T stub_value() {
    if constexpr (std::is_same_v<T, bool>) {
        return false;
    } else if constexpr (std::is_pointer_v<T>) {
        return nullptr;
    } else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) {
        return static_cast<T>(-1);
    } else if constexpr (std::is_same_v<T, nvinfer1::Dims64>) {
        nvinfer1::Dims64 d{};
        d.nbDims = -1;
        return d;
    } else {
        return T{};
    }
}
} // namespace rtdbl
