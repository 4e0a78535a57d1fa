// Byte layout of the TensorRT ABI double's serialized "plan" (IHostMemory of
// buildSerializedNetwork, input of IRuntime::deserializeCudaEngine). Shared by the double and by
// the driver, which forges foreign-version and corrupt plans from a good one.
//
//   offset  size  field
//   0       8     magic "RTDBLPLN"
//   8       4     format version (kPlanFormat), little endian
//   12      4     TensorRT major version the building library claims (NV_TENSORRT_MAJOR)
//   16      4     minor
//   20      4     patch
//   24      8     payload length in bytes
//   32      8     FNV-1a 64 of the payload
//   40      ...   payload (see plan_io in rtdbl_common.h)
#pragma once
#include <cstddef>
#include <cstdint>

namespace rtdbl {
constexpr char kPlanMagic[8] = {'R', 'T', 'D', 'B', 'L', 'P', 'L', 'N'};
constexpr uint32_t kPlanFormat = 1;
constexpr size_t kPlanMajorOffset = 12;
constexpr size_t kPlanHeaderSize = 40;

inline uint64_t fnv1a(void const* data, size_t len) {
    auto const* p = static_cast<unsigned char const*>(data);
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; ++i) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}
} // namespace rtdbl
