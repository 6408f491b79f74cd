// Test helpers for the CUDA kernels: skip without a device, checked CUDA calls, device buffers,
// bf16 rounding on the host and the relative error METHOD.md asks for. Test-only, header-only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

// Skips the test when no CUDA device is present (development and CI machines).
#define KVASIR_SKIP_WITHOUT_GPU()                                                              \
  do {                                                                                         \
    int kvasir_device_count = 0;                                                               \
    if (cudaGetDeviceCount(&kvasir_device_count) != cudaSuccess || kvasir_device_count == 0) { \
      (void)cudaGetLastError();                                                                \
      GTEST_SKIP() << "no CUDA device";                                                        \
    }                                                                                          \
  } while (0)

#define CUDA_ASSERT_OK(expr)                                                               \
  do {                                                                                     \
    const cudaError_t kvasir_err = (expr);                                                 \
    ASSERT_EQ(kvasir_err, cudaSuccess) << #expr << ": " << cudaGetErrorString(kvasir_err); \
  } while (0)

// Checks the launch and the kernel's completion.
#define CUDA_ASSERT_LAUNCH(expr)             \
  do {                                       \
    CUDA_ASSERT_OK(expr);                    \
    CUDA_ASSERT_OK(cudaGetLastError());      \
    CUDA_ASSERT_OK(cudaDeviceSynchronize()); \
  } while (0)

namespace kvasir::testing {

// A device allocation of n elements of T; poisoned (all bits set: NaN for floats) on request.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n > 0 && cudaMalloc(&ptr_, n * sizeof(T)) != cudaSuccess) ptr_ = nullptr;
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { Upload(host); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  T* get() const { return ptr_; }
  size_t size() const { return n_; }
  bool ok() const { return n_ == 0 || ptr_ != nullptr; }
  cudaError_t Upload(const std::vector<T>& host) {
    return cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  cudaError_t Poison() { return n_ ? cudaMemset(ptr_, 0xFF, n_ * sizeof(T)) : cudaSuccess; }
  std::vector<T> Download() const {
    std::vector<T> host(n_);
    if (n_) cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost);
    return host;
  }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

inline float Bf16ToFloat(__nv_bfloat16 x) {
  const __nv_bfloat16_raw raw = x;
  const uint32_t f = static_cast<uint32_t>(raw.x) << 16;
  float out;
  std::memcpy(&out, &f, sizeof(out));
  return out;
}

// Round to nearest even, like __float2bfloat16_rn.
inline __nv_bfloat16 FloatToBf16(float x) {
  __nv_bfloat16_raw raw;
  if (std::isnan(x)) {
    raw.x = 0x7FC0;
    return __nv_bfloat16(raw);
  }
  uint32_t f;
  std::memcpy(&f, &x, sizeof(f));
  f += 0x7FFFu + ((f >> 16) & 1u);
  raw.x = static_cast<uint16_t>(f >> 16);
  return __nv_bfloat16(raw);
}

inline float ToFloatHost(float x) { return x; }
inline float ToFloatHost(__nv_bfloat16 x) { return Bf16ToFloat(x); }

template <typename T>
T FromFloatHost(float x);
template <>
inline float FromFloatHost<float>(float x) {
  return x;
}
template <>
inline __nv_bfloat16 FromFloatHost<__nv_bfloat16>(float x) {
  return FloatToBf16(x);
}

template <typename T>
std::vector<float> ToFloatVec(const std::vector<T>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = ToFloatHost(v[i]);
  return out;
}

template <typename T>
std::vector<T> FromFloatVec(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = FromFloatHost<T>(v[i]);
  return out;
}

// ‖out − ref‖ / ‖ref‖ in double; NaN anywhere in out gives +inf (never passes a bound).
inline double RelError(const std::vector<float>& out, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    const double d = static_cast<double>(out[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

inline int64_t CountNonFinite(const std::vector<float>& v) {
  int64_t n = 0;
  for (float x : v) n += !std::isfinite(x);
  return n;
}

}  // namespace kvasir::testing
