// Checks the CUDA RoPE (both layouts) against CpuBackend::Rope on fresh random inputs, with
// positions past 32k and rows wider than the rotated heads (the rest must stay untouched).
#include "kernels/rope/rope.cuh"

#include <cmath>
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
void CheckRope(int64_t m, int32_t num_heads, int32_t head_dim, int64_t extra_cols,
               RopeLayout layout, float theta, double bound, std::mt19937& rng) {
  SCOPED_TRACE("m=" + std::to_string(m) + " heads=" + std::to_string(num_heads) + " d=" +
               std::to_string(head_dim) + (layout == RopeLayout::kHalf ? " half" : " interleaved") +
               (sizeof(T) == 4 ? " fp32" : " bf16"));
  const int64_t row_stride = int64_t{num_heads} * head_dim + extra_cols;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> xf(m * row_stride);
  for (auto& x : xf) x = nd(rng);
  const std::vector<T> x = FromFloatVec<T>(xf);
  xf = ToFloatVec(x);
  std::vector<int32_t> pos(m);
  for (auto& p : pos) p = static_cast<int32_t>(rng() % 40000);
  pos[0] = 0;
  std::vector<float> inv_freq(head_dim / 2);
  for (int32_t i = 0; i < head_dim / 2; ++i) {
    inv_freq[i] = 1.0f / std::pow(theta, 2.0f * i / head_dim);
  }
  CpuBackend cpu(1);
  std::vector<float> ref = xf;
  cpu.Rope(ref.data(), m, row_stride, num_heads, head_dim, pos.data(), inv_freq.data(),
           layout == RopeLayout::kHalf ? RopeStyle::kHalf : RopeStyle::kInterleaved);

  DeviceBuffer<T> dx(x);
  DeviceBuffer<int32_t> dpos(pos);
  DeviceBuffer<float> dfreq(inv_freq);
  ASSERT_TRUE(dx.ok() && dpos.ok() && dfreq.ok());
  RopeParams<T> p;
  p.x = dx.get();
  p.m = m;
  p.row_stride = row_stride;
  p.num_heads = num_heads;
  p.head_dim = head_dim;
  p.positions = dpos.get();
  p.inv_freq = dfreq.get();
  p.layout = layout;
  CUDA_ASSERT_LAUNCH(InvokeRope(p, nullptr));
  const std::vector<float> out = ToFloatVec(dx.Download());
  EXPECT_EQ(CountNonFinite(out), 0);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t e = int64_t{num_heads} * head_dim; e < row_stride; ++e) {
      ASSERT_EQ(out[r * row_stride + e], xf[r * row_stride + e]) << "touched column " << e;
    }
  }
  const double err = RelError(out, ref);
  EXPECT_LT(err, bound);
  std::printf("[rope] %s %s m=%ld heads=%d d=%d rel err %.3g\n", sizeof(T) == 4 ? "fp32" : "bf16",
              layout == RopeLayout::kHalf ? "half" : "interleaved", static_cast<long>(m), num_heads,
              head_dim, err);
}

TEST(Rope, MatchesCpuBackend) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937 rng(std::random_device{}());
  for (RopeLayout layout : {RopeLayout::kHalf, RopeLayout::kInterleaved}) {
    for (int32_t d : {8, 64, 128}) {
      CheckRope<float>(37, 8, d, 2 * 4 * d, layout, 10000.0f, 1e-5, rng);
      CheckRope<float>(5, 3, d, 0, layout, 500000.0f, 1e-5, rng);
      CheckRope<__nv_bfloat16>(37, 8, d, 2 * 4 * d, layout, 10000.0f, 1e-2, rng);
    }
  }
}

}  // namespace
}  // namespace kvasir::cuda
