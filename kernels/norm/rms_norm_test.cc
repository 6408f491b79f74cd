// Checks the CUDA RMSNorm and fused add + RMSNorm against CpuBackend on fresh random inputs.
#include "kernels/norm/rms_norm.cuh"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/cuda_test_util.h"
#include "runtime/cpu/cpu_backend.h"

namespace kvasir::cuda {
namespace {

using ::kvasir::testing::CountNonFinite;
using ::kvasir::testing::DeviceBuffer;
using ::kvasir::testing::FromFloatVec;
using ::kvasir::testing::RelError;
using ::kvasir::testing::ToFloatVec;

template <typename T>
std::vector<T> Random(size_t n, std::mt19937& rng, float mean = 0.0f) {
  std::normal_distribution<float> nd(mean, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return FromFloatVec<T>(v);
}

template <typename T>
void CheckRmsNorm(int64_t m, int64_t d, double bound, std::mt19937& rng) {
  SCOPED_TRACE("m=" + std::to_string(m) + " d=" + std::to_string(d) +
               (sizeof(T) == 4 ? " fp32" : " bf16"));
  const float eps = 1e-5f;
  const std::vector<T> x = Random<T>(m * d, rng), w = Random<T>(d, rng, 1.0f);
  CpuBackend cpu(1);
  const std::vector<float> xf = ToFloatVec(x), wf = ToFloatVec(w);
  std::vector<float> ref(m * d);
  cpu.RmsNorm(xf.data(), wf.data(), ref.data(), m, d, eps);

  DeviceBuffer<T> dx(x), dw(w), dy(m * d);
  ASSERT_TRUE(dx.ok() && dw.ok() && dy.ok());
  CUDA_ASSERT_OK(dy.Poison());
  RmsNormParams<T> p;
  p.x = dx.get();
  p.weight = dw.get();
  p.y = dy.get();
  p.m = m;
  p.d = d;
  p.eps = eps;
  CUDA_ASSERT_LAUNCH(InvokeRmsNorm(p, nullptr));
  const std::vector<float> y = ToFloatVec(dy.Download());
  EXPECT_EQ(CountNonFinite(y), 0);
  const double err = RelError(y, ref);
  EXPECT_LT(err, bound);
  std::printf("[rms_norm] %s m=%ld d=%ld rel err %.3g\n", sizeof(T) == 4 ? "fp32" : "bf16",
              static_cast<long>(m), static_cast<long>(d), err);
}

template <typename T>
void CheckAddRmsNorm(int64_t m, int64_t d, double bound, std::mt19937& rng) {
  SCOPED_TRACE("m=" + std::to_string(m) + " d=" + std::to_string(d) +
               (sizeof(T) == 4 ? " fp32" : " bf16"));
  const float eps = 1e-6f;
  const std::vector<T> res = Random<T>(m * d, rng), delta = Random<T>(m * d, rng),
                       w = Random<T>(d, rng, 1.0f);
  CpuBackend cpu(1);
  std::vector<float> ref_res = ToFloatVec(res);
  const std::vector<float> deltaf = ToFloatVec(delta), wf = ToFloatVec(w);
  std::vector<float> ref_y(m * d);
  cpu.AddRmsNorm(ref_res.data(), deltaf.data(), wf.data(), ref_y.data(), m, d, eps);

  DeviceBuffer<T> dres(res), ddelta(delta), dw(w), dy(m * d);
  ASSERT_TRUE(dres.ok() && ddelta.ok() && dw.ok() && dy.ok());
  CUDA_ASSERT_OK(dy.Poison());
  AddRmsNormParams<T> p;
  p.residual = dres.get();
  p.delta = ddelta.get();
  p.weight = dw.get();
  p.y = dy.get();
  p.m = m;
  p.d = d;
  p.eps = eps;
  CUDA_ASSERT_LAUNCH(InvokeAddRmsNorm(p, nullptr));
  const std::vector<float> y = ToFloatVec(dy.Download()), r = ToFloatVec(dres.Download());
  EXPECT_EQ(CountNonFinite(y), 0);
  const double err_y = RelError(y, ref_y), err_r = RelError(r, ref_res);
  EXPECT_LT(err_y, bound);
  EXPECT_LT(err_r, bound);
  std::printf("[add_rms_norm] %s m=%ld d=%ld rel err y %.3g residual %.3g\n",
              sizeof(T) == 4 ? "fp32" : "bf16", static_cast<long>(m), static_cast<long>(d), err_y,
              err_r);
}

TEST(RmsNorm, MatchesCpuBackend) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937 rng(std::random_device{}());
  for (int64_t m : {1, 7, 33}) {
    for (int64_t d : {64, 1001, 4096, 8193}) {
      CheckRmsNorm<float>(m, d, 1e-5, rng);
      CheckRmsNorm<__nv_bfloat16>(m, d, 1e-2, rng);
    }
  }
}

TEST(AddRmsNorm, MatchesCpuBackend) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937 rng(std::random_device{}());
  for (int64_t m : {1, 7, 33}) {
    for (int64_t d : {64, 1001, 4096, 8193}) {
      CheckAddRmsNorm<float>(m, d, 1e-5, rng);
      CheckAddRmsNorm<__nv_bfloat16>(m, d, 1e-2, rng);
    }
  }
}

}  // namespace
}  // namespace kvasir::cuda
