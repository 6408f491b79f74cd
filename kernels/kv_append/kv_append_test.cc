// Checks the CUDA KV append against KvAppendRef: whole pools compared exactly (the kernel only
// copies and rounds), with shuffled slots, skipped rows, strided sources, bf16 pools.
#include "kernels/kv_append/kv_append.cuh"

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/cuda_test_util.h"
#include "kernels/kv_append/kv_append_ref.h"

namespace kvasir::cuda {
namespace {

using ::kvasir::testing::DeviceBuffer;
using ::kvasir::testing::FromFloatVec;
using ::kvasir::testing::ToFloatVec;

template <typename SrcT, typename KvT>
void CheckKvAppend(int32_t n, int32_t num_heads, int32_t head_dim, int32_t block_size,
                   int64_t extra_cols, std::mt19937& rng) {
  SCOPED_TRACE("n=" + std::to_string(n) + " heads=" + std::to_string(num_heads) +
               " d=" + std::to_string(head_dim) + " bs=" + std::to_string(block_size) +
               " src=" + std::to_string(sizeof(SrcT)) + " kv=" + std::to_string(sizeof(KvT)));
  const int64_t src_stride = int64_t{num_heads} * head_dim + extra_cols;
  const int32_t rows = n * num_heads;
  const int32_t num_blocks = (rows + block_size - 1) / block_size + 3;
  const int64_t pool_rows = int64_t{num_blocks} * block_size;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> k(n * src_stride), v(n * src_stride);
  for (auto& x : k) x = nd(rng);
  for (auto& x : v) x = nd(rng);
  const std::vector<SrcT> k_src = FromFloatVec<SrcT>(k), v_src = FromFloatVec<SrcT>(v);
  k = ToFloatVec(k_src);
  v = ToFloatVec(v_src);
  // Distinct random pool rows; every fifth row skipped.
  std::vector<int64_t> perm(pool_rows);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int64_t> slots(perm.begin(), perm.begin() + rows);
  for (int32_t r = 0; r < rows; ++r) {
    if (rng() % 5 == 0) slots[r] = -1;
  }
  std::vector<float> pool_init(pool_rows * head_dim);
  for (auto& x : pool_init) x = nd(rng);
  const std::vector<KvT> pool_kv = FromFloatVec<KvT>(pool_init);
  std::vector<float> ref_k = ToFloatVec(pool_kv), ref_v = ref_k;
  KvAppendRef(k.data(), v.data(), src_stride, n, num_heads, head_dim, slots.data(), ref_k.data(),
              ref_v.data());
  // The pools hold KvT: round the reference like the kernel does.
  ref_k = ToFloatVec(FromFloatVec<KvT>(ref_k));
  ref_v = ToFloatVec(FromFloatVec<KvT>(ref_v));

  DeviceBuffer<SrcT> dk(k_src), dv(v_src);
  DeviceBuffer<int64_t> dslots(slots);
  DeviceBuffer<KvT> dkp(pool_kv), dvp(pool_kv);
  ASSERT_TRUE(dk.ok() && dv.ok() && dslots.ok() && dkp.ok() && dvp.ok());
  KvAppendParams<SrcT, KvT> p;
  p.k = dk.get();
  p.v = dv.get();
  p.src_stride = src_stride;
  p.n = n;
  p.num_heads = num_heads;
  p.head_dim = head_dim;
  p.slot_mapping = dslots.get();
  p.k_pool = dkp.get();
  p.v_pool = dvp.get();
  CUDA_ASSERT_LAUNCH(InvokeKvAppend(p, nullptr));
  const std::vector<float> got_k = ToFloatVec(dkp.Download()), got_v = ToFloatVec(dvp.Download());
  for (size_t i = 0; i < got_k.size(); ++i) {
    ASSERT_EQ(got_k[i], ref_k[i]) << "k element " << i;
    ASSERT_EQ(got_v[i], ref_v[i]) << "v element " << i;
  }
}

TEST(KvAppend, MatchesReference) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937 rng(std::random_device{}());
  for (int32_t bs : {1, 16}) {
    for (int32_t heads : {1, 4}) {
      for (int32_t n : {1, 37}) {
        CheckKvAppend<float, float>(n, heads, 128, bs, 0, rng);
        CheckKvAppend<float, __nv_bfloat16>(n, heads, 64, bs, 3 * 64, rng);
        CheckKvAppend<__nv_bfloat16, __nv_bfloat16>(n, heads, 128, bs, 128, rng);
      }
    }
  }
}

}  // namespace
}  // namespace kvasir::cuda
