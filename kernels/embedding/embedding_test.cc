// Checks the CUDA embedding gather against CpuBackend::Embedding (exact: it is a copy).
#include "kernels/embedding/embedding.cuh"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/cuda_test_util.h"
#include "runtime/cpu/cpu_backend.h"

namespace kvasir::cuda {
namespace {

using ::kvasir::testing::DeviceBuffer;
using ::kvasir::testing::FromFloatVec;
using ::kvasir::testing::ToFloatVec;

template <typename T>
void CheckEmbedding(int64_t m, int64_t d, int64_t vocab, std::mt19937& rng) {
  SCOPED_TRACE("m=" + std::to_string(m) + " d=" + std::to_string(d) +
               (sizeof(T) == 4 ? " fp32" : " bf16"));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> table_f(vocab * d);
  for (auto& x : table_f) x = nd(rng);
  const std::vector<T> table = FromFloatVec<T>(table_f);
  table_f = ToFloatVec(table);
  std::vector<int32_t> ids(m);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % vocab);
  ids[0] = static_cast<int32_t>(vocab - 1);
  if (m > 1) ids[1] = ids[0];  // repeated id
  CpuBackend cpu(1);
  std::vector<float> ref(m * d);
  cpu.Embedding(ids.data(), table_f.data(), ref.data(), m, d);

  DeviceBuffer<T> dtable(table), dout(m * d);
  DeviceBuffer<int32_t> dids(ids);
  ASSERT_TRUE(dtable.ok() && dout.ok() && dids.ok());
  CUDA_ASSERT_OK(dout.Poison());
  EmbeddingParams<T> p;
  p.ids = dids.get();
  p.table = dtable.get();
  p.out = dout.get();
  p.m = m;
  p.d = d;
  p.vocab_size = vocab;
  CUDA_ASSERT_LAUNCH(InvokeEmbedding(p, nullptr));
  const std::vector<float> out = ToFloatVec(dout.Download());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], ref[i]) << "element " << i;
}

TEST(Embedding, MatchesCpuBackend) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937 rng(std::random_device{}());
  for (int64_t m : {1, 17}) {
    for (int64_t d : {64, 2049}) {
      CheckEmbedding<float>(m, d, 1000, rng);
      CheckEmbedding<__nv_bfloat16>(m, d, 1000, rng);
    }
  }
}

TEST(Embedding, OutOfRangeIdsGiveZeros) {
  KVASIR_SKIP_WITHOUT_GPU();
  const int64_t d = 64, vocab = 10;
  std::vector<float> table(vocab * d, 1.0f);
  std::vector<int32_t> ids = {-1, 10, 3};
  DeviceBuffer<float> dtable(table), dout(3 * d);
  DeviceBuffer<int32_t> dids(ids);
  ASSERT_TRUE(dtable.ok() && dout.ok() && dids.ok());
  CUDA_ASSERT_OK(dout.Poison());
  EmbeddingParams<float> p;
  p.ids = dids.get();
  p.table = dtable.get();
  p.out = dout.get();
  p.m = 3;
  p.d = d;
  p.vocab_size = vocab;
  CUDA_ASSERT_LAUNCH(InvokeEmbedding(p, nullptr));
  const std::vector<float> out = dout.Download();
  for (int64_t i = 0; i < 2 * d; ++i) ASSERT_EQ(out[i], 0.0f);
  for (int64_t i = 2 * d; i < 3 * d; ++i) ASSERT_EQ(out[i], 1.0f);
}

}  // namespace
}  // namespace kvasir::cuda
