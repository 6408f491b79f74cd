// Checks the CUDA SiLU-and-multiply against CpuBackend::SiluMul on fresh random inputs.
#include "kernels/activation/silu_mul.cuh"

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
void CheckSiluMul(int64_t m, int64_t h, double bound, std::mt19937& rng) {
  SCOPED_TRACE("m=" + std::to_string(m) + " h=" + std::to_string(h) +
               (sizeof(T) == 4 ? " fp32" : " bf16"));
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> gu(m * 2 * h);
  for (auto& x : gu) x = nd(rng);
  const std::vector<T> gu_t = FromFloatVec<T>(gu);
  gu = ToFloatVec(gu_t);
  CpuBackend cpu(1);
  std::vector<float> ref(m * h);
  cpu.SiluMul(gu.data(), ref.data(), m, h);

  DeviceBuffer<T> dgu(gu_t), dout(m * h);
  ASSERT_TRUE(dgu.ok() && dout.ok());
  CUDA_ASSERT_OK(dout.Poison());
  SiluMulParams<T> p;
  p.gate_up = dgu.get();
  p.out = dout.get();
  p.m = m;
  p.h = h;
  CUDA_ASSERT_LAUNCH(InvokeSiluMul(p, nullptr));
  const std::vector<float> out = ToFloatVec(dout.Download());
  EXPECT_EQ(CountNonFinite(out), 0);
  const double err = RelError(out, ref);
  EXPECT_LT(err, bound);
  std::printf("[silu_mul] %s m=%ld h=%ld rel err %.3g\n", sizeof(T) == 4 ? "fp32" : "bf16",
              static_cast<long>(m), static_cast<long>(h), err);
}

TEST(SiluMul, MatchesCpuBackend) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937 rng(std::random_device{}());
  for (int64_t m : {1, 5, 33}) {
    for (int64_t h : {1, 127, 5632, 14336}) {
      CheckSiluMul<float>(m, h, 1e-5, rng);
      CheckSiluMul<__nv_bfloat16>(m, h, 1e-2, rng);
    }
  }
}

}  // namespace
}  // namespace kvasir::cuda
