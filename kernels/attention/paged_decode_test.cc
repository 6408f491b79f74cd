// Checks the CUDA paged decode and merge kernels against PagedPartialAttentionRef and
// MergeAttentionRef on fresh random inputs: page sizes 1, 16 and odd ones (3, 7, 48), GQA groups
// 1/2/3/4/6/8/12/16, head_dim 8/32/64/128/256, odd, empty and 33k-token ranges, shuffled block
// ids, padded q/o strides, page tables that are not a monotone CSR (only offsets[i] is read), with
// and without split-KV. Pool slots outside [begin, end) hold NaN, so reading them fails the check.
#include "kernels/attention/paged_decode.cuh"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention/merge_attention.cuh"
#include "kernels/attention/paged_attention_ref.h"
#include "kernels/common/cuda_test_util.h"

namespace kvasir::cuda {
namespace {

using ::kvasir::testing::DeviceBuffer;
using ::kvasir::testing::FromFloatVec;
using ::kvasir::testing::RelError;
using ::kvasir::testing::ToFloatVec;

enum class Split { kNone, kPlanned, kForced, kMany };

struct Case {
  int32_t head_dim = 128;
  int32_t group = 4;
  int32_t block_size = 16;
  std::vector<int32_t> begin, end;  // per item
  Split split = Split::kNone;
  int32_t q_pad = 0;            // extra floats between items of q (a multiple of 4)
  int32_t o_pad = 0;            // extra floats between items of o; the gaps must stay untouched
  bool reverse_tables = false;  // tables stored in reverse item order, offsets[n_items] poisoned
};

std::string Describe(const Case& c, const char* dtype) {
  int32_t max_len = 0;
  for (size_t i = 0; i < c.end.size(); ++i) max_len = std::max(max_len, c.end[i] - c.begin[i]);
  return std::string(dtype) + " d=" + std::to_string(c.head_dim) + " g=" + std::to_string(c.group) +
         " bs=" + std::to_string(c.block_size) + " items=" + std::to_string(c.end.size()) +
         " max_len=" + std::to_string(max_len) +
         " split=" + std::to_string(static_cast<int>(c.split)) +
         (c.q_pad || c.o_pad ? " padded" : "") + (c.reverse_tables ? " reversed-tables" : "");
}

int32_t NumSms() {
  int dev = 0, sms = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  return sms > 0 ? sms : 1;
}

template <typename KvT>
void RunCase(const Case& c, std::mt19937& rng, double* worst_o, double* worst_lse) {
  const char* dtype = sizeof(KvT) == 4 ? "fp32" : "bf16";
  SCOPED_TRACE(Describe(c, dtype));
  const int32_t n_items = static_cast<int32_t>(c.end.size());
  const int32_t d = c.head_dim, g = c.group, bs = c.block_size;
  std::normal_distribution<float> nd(0.0f, 1.0f);

  // Page tables over a shuffled pool with spare blocks: CSR, or stored in reverse item order
  // (offsets[i] is each table's start, offsets[n_items] a poison the kernel must not read).
  std::vector<int32_t> offsets(n_items + 1, 0);
  int32_t total_blocks = 0;
  for (int32_t i = 0; i < n_items; ++i) total_blocks += (c.end[i] + bs - 1) / bs;
  if (c.reverse_tables) {
    int32_t cursor = total_blocks;
    for (int32_t i = 0; i < n_items; ++i) {
      cursor -= (c.end[i] + bs - 1) / bs;
      offsets[i] = cursor;
    }
    offsets[n_items] = -1000000;
  } else {
    for (int32_t i = 0; i < n_items; ++i) offsets[i + 1] = offsets[i] + (c.end[i] + bs - 1) / bs;
  }
  const int32_t pool_blocks = total_blocks + 5;
  std::vector<int32_t> perm(pool_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> ids(perm.begin(), perm.begin() + total_blocks);
  if (ids.empty()) ids.push_back(0);  // keep a valid device pointer

  // Pools: NaN except the rows inside each item's range; values exactly representable in KvT.
  const size_t pool_elems = static_cast<size_t>(pool_blocks) * bs * d;
  std::vector<float> k_host(pool_elems, NAN), v_host(pool_elems, NAN);
  for (int32_t i = 0; i < n_items; ++i) {
    for (int32_t t = c.begin[i]; t < c.end[i]; ++t) {
      const size_t row = static_cast<size_t>(ids[offsets[i] + t / bs]) * bs + t % bs;
      for (int32_t e = 0; e < d; ++e) {
        k_host[row * d + e] = nd(rng);
        v_host[row * d + e] = nd(rng);
      }
    }
  }
  const std::vector<KvT> k_kv = FromFloatVec<KvT>(k_host), v_kv = FromFloatVec<KvT>(v_host);
  k_host = ToFloatVec(k_kv);
  v_host = ToFloatVec(v_kv);
  const int64_t q_stride = int64_t{g} * d + c.q_pad, o_stride = int64_t{g} * d + c.o_pad;
  std::vector<float> q(static_cast<size_t>(n_items) * q_stride);
  for (auto& x : q) x = 2.0f * nd(rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));

  // CPU reference.
  std::vector<float> ref_o(static_cast<size_t>(n_items) * g * d);
  std::vector<float> ref_lse(static_cast<size_t>(n_items) * g);
  for (int32_t i = 0; i < n_items; ++i) {
    PagedAttentionParams rp;
    rp.k_pool = k_host.data();
    rp.v_pool = v_host.data();
    rp.block_table = ids.data() + offsets[i];
    rp.block_size = bs;
    rp.head_dim = d;
    rp.begin = c.begin[i];
    rp.end = c.end[i];
    rp.q = q.data() + static_cast<size_t>(i) * q_stride;
    rp.group = g;
    rp.scale = scale;
    rp.o = ref_o.data() + static_cast<size_t>(i) * g * d;
    rp.lse = ref_lse.data() + static_cast<size_t>(i) * g;
    PagedPartialAttentionRef(rp);
  }

  DeviceBuffer<KvT> dk(k_kv), dv(v_kv);
  DeviceBuffer<int32_t> doff(offsets), dids(ids), dbegin(c.begin), dend(c.end);
  DeviceBuffer<float> dq(q), dout(static_cast<size_t>(n_items) * o_stride), dlse(ref_lse.size());
  ASSERT_TRUE(dk.ok() && dv.ok() && doff.ok() && dids.ok() && dq.ok() && dout.ok() && dlse.ok());

  PagedDecodeParams<KvT> p;
  p.k_pool = dk.get();
  p.v_pool = dv.get();
  p.block_table_offsets = doff.get();
  p.block_ids = dids.get();
  p.begin = dbegin.get();
  p.end = dend.get();
  p.q = dq.get();
  p.q_stride = c.q_pad ? q_stride : 0;
  p.o = dout.get();
  p.o_stride = c.o_pad ? o_stride : 0;
  p.lse = dlse.get();
  p.num_items = n_items;
  p.block_size = bs;
  p.head_dim = d;
  p.group = g;
  p.scale = scale;
  int32_t max_len = 0;
  for (int32_t i = 0; i < n_items; ++i) max_len = std::max(max_len, c.end[i] - c.begin[i]);
  if (c.split == Split::kPlanned) {
    const PagedDecodePlan plan = PlanPagedDecode(n_items, g, d, max_len, NumSms());
    p.num_splits = plan.num_splits;
    p.kv_chunk_size = plan.kv_chunk_size;
  } else if (c.split == Split::kForced) {
    // Small chunks, so the last split also takes the remainder beyond num_splits * chunk.
    p.num_splits = 2 + static_cast<int32_t>(rng() % 6);
    p.kv_chunk_size = std::max<int32_t>(1, max_len / (2 * p.num_splits) + 1);
  } else if (c.split == Split::kMany) {
    // More parts than the merge stages at once (256), most of them one or two tokens or empty.
    p.num_splits = 300 + static_cast<int32_t>(rng() % 40);
    p.kv_chunk_size = std::max<int32_t>(1, max_len / (2 * p.num_splits));
  }
  const int64_t ws_rows = static_cast<int64_t>(n_items) * p.num_splits * g;
  DeviceBuffer<float> ws_o(p.num_splits > 1 ? ws_rows * d : 0);
  DeviceBuffer<float> ws_lse(p.num_splits > 1 ? ws_rows : 0);
  ASSERT_TRUE(ws_o.ok() && ws_lse.ok());
  p.workspace_o = ws_o.get();
  p.workspace_lse = ws_lse.get();
  CUDA_ASSERT_OK(ws_o.Poison());
  CUDA_ASSERT_OK(ws_lse.Poison());

  CUDA_ASSERT_OK(dout.Poison());
  CUDA_ASSERT_OK(dlse.Poison());
  CUDA_ASSERT_LAUNCH(InvokePagedDecode(p, nullptr));
  const std::vector<float> out_padded = dout.Download(), lse = dlse.Download();
  CUDA_ASSERT_OK(cudaGetLastError());
  std::vector<float> out;  // [n_items, g, d] without the o gaps, which must still be NaN
  for (int32_t i = 0; i < n_items; ++i) {
    for (int64_t e = 0; e < o_stride; ++e) {
      const float x = out_padded[i * o_stride + e];
      if (e < int64_t{g} * d) {
        out.push_back(x);
      } else {
        ASSERT_TRUE(std::isnan(x)) << "wrote into the o gap of item " << i;
      }
    }
  }

  EXPECT_EQ(::kvasir::testing::CountNonFinite(out), 0) << "unwritten or NaN outputs";
  const double err = RelError(out, ref_o);
  // Identical (dequantized) inputs on both sides: only fp32 rounding differs, for bf16 KV too.
  // The reference itself sums V sequentially in fp32, which drifts ~eps·√n over long ranges.
  EXPECT_LT(err, max_len < 4096 ? 2e-5 : 1e-4);
  double lse_err = 0;
  for (size_t r = 0; r < lse.size(); ++r) {
    if (std::isinf(ref_lse[r])) {
      EXPECT_TRUE(std::isinf(lse[r]) && lse[r] < 0) << "row " << r << " lse " << lse[r];
      continue;
    }
    ASSERT_TRUE(std::isfinite(lse[r])) << "row " << r;
    lse_err = std::max(lse_err, std::abs(static_cast<double>(lse[r]) - ref_lse[r]) /
                                    std::max(1.0, std::abs(static_cast<double>(ref_lse[r]))));
  }
  EXPECT_LT(lse_err, 1e-5);
  *worst_o = std::max(*worst_o, err);
  *worst_lse = std::max(*worst_lse, lse_err);
}

// Random ranges: odd lengths, empty ranges, ranges that start mid-table (a DistAttention segment).
Case RandomCase(std::mt19937& rng, int32_t d, int32_t g, int32_t bs, Split split, int32_t n_items,
                int32_t max_len) {
  Case c;
  c.head_dim = d;
  c.group = g;
  c.block_size = bs;
  c.split = split;
  for (int32_t i = 0; i < n_items; ++i) {
    int32_t end = static_cast<int32_t>(rng() % (max_len + 1));
    if (i == 0) end = 0;            // empty history
    if (i == 1) end = 1;            // one token
    if (i == 2) end = max_len | 1;  // odd, longest
    int32_t begin = (rng() % 3 == 0) ? static_cast<int32_t>(rng() % (end + 1)) : 0;
    if (i == 3) begin = end;  // empty range inside a table
    c.begin.push_back(begin);
    c.end.push_back(end);
  }
  return c;
}

TEST(PagedDecode, MatchesReferenceGrid) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937 rng(std::random_device{}());
  double worst_f32 = 0, worst_bf16 = 0, worst_lse = 0;
  for (int32_t d : {8, 32, 64, 128}) {
    for (int32_t g : {1, 4, 6, 8, 16}) {
      for (int32_t bs : {1, 16}) {
        for (Split split : {Split::kNone, Split::kPlanned, Split::kForced}) {
          const Case c = RandomCase(rng, d, g, bs, split, 11, 700);
          RunCase<float>(c, rng, &worst_f32, &worst_lse);
          RunCase<__nv_bfloat16>(c, rng, &worst_bf16, &worst_lse);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
  for (Split split : {Split::kNone, Split::kForced}) {
    const Case c = RandomCase(rng, 256, 8, 16, split, 6, 300);
    RunCase<float>(c, rng, &worst_f32, &worst_lse);
    RunCase<__nv_bfloat16>(c, rng, &worst_bf16, &worst_lse);
  }
  std::printf("[paged_decode grid] worst rel err fp32 %.3g, bf16-KV %.3g, lse %.3g\n", worst_f32,
              worst_bf16, worst_lse);
}

TEST(PagedDecode, LongAndEmptyHistories) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937 rng(std::random_device{}());
  double worst_f32 = 0, worst_bf16 = 0, worst_lse = 0;
  for (int32_t g : {1, 4, 8}) {
    for (Split split : {Split::kNone, Split::kPlanned, Split::kForced}) {
      Case c;
      c.head_dim = 128;
      c.group = g;
      c.block_size = g == 1 ? 1 : 16;
      c.split = split;
      c.begin = {0, 0, 1000, 5};
      c.end = {33001, 0, 33000, 5};  // long, empty, long segment, empty range
      RunCase<float>(c, rng, &worst_f32, &worst_lse);
      RunCase<__nv_bfloat16>(c, rng, &worst_bf16, &worst_lse);
      if (HasFatalFailure()) return;
    }
  }
  std::printf("[paged_decode long] worst rel err fp32 %.3g, bf16-KV %.3g, lse %.3g\n", worst_f32,
              worst_bf16, worst_lse);
}

TEST(PagedDecode, OddPagesGroupsStridesAndTables) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937 rng(std::random_device{}());
  double worst_f32 = 0, worst_bf16 = 0, worst_lse = 0;
  int n = 0;
  for (int32_t d : {32, 64, 128}) {
    for (int32_t g : {2, 3, 5, 12}) {
      for (int32_t bs : {3, 7, 48}) {
        const Split split =
            n % 3 == 0 ? Split::kNone : (n % 3 == 1 ? Split::kForced : Split::kPlanned);
        Case c = RandomCase(rng, d, g, bs, split, 9, 500);
        c.q_pad = 4 * (n % 3);
        c.o_pad = 8 * ((n + 1) % 2);
        c.reverse_tables = n % 2 == 0;
        ++n;
        RunCase<float>(c, rng, &worst_f32, &worst_lse);
        RunCase<__nv_bfloat16>(c, rng, &worst_bf16, &worst_lse);
        if (HasFatalFailure()) return;
      }
    }
  }
  for (int32_t g : {1, 4}) {  // head_dim 256 in fp32 (two chunks per lane), odd pages
    Case c = RandomCase(rng, 256, g, 5, Split::kForced, 5, 200);
    c.o_pad = 4;
    c.reverse_tables = true;
    RunCase<float>(c, rng, &worst_f32, &worst_lse);
    RunCase<__nv_bfloat16>(c, rng, &worst_bf16, &worst_lse);
  }
  std::printf("[paged_decode odd] worst rel err fp32 %.3g, bf16-KV %.3g, lse %.3g\n", worst_f32,
              worst_bf16, worst_lse);
}

TEST(PagedDecode, ManySplitsMerge) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937 rng(std::random_device{}());
  double worst_f32 = 0, worst_bf16 = 0, worst_lse = 0;
  for (int32_t g : {1, 4, 8}) {
    const Case c = RandomCase(rng, 128, g, 16, Split::kMany, 6, 1500);
    RunCase<float>(c, rng, &worst_f32, &worst_lse);
    RunCase<__nv_bfloat16>(c, rng, &worst_bf16, &worst_lse);
    if (HasFatalFailure()) return;
  }
  std::printf("[paged_decode many splits] worst rel err fp32 %.3g, bf16-KV %.3g, lse %.3g\n",
              worst_f32, worst_bf16, worst_lse);
}

TEST(PagedDecode, PlanFillsTheChipAndCoversTheRange) {
  // Llama-3-8B decode on 132 SMs: B=16 (128 items) splits to about one wave, B=64 does not split.
  const PagedDecodePlan b16 = PlanPagedDecode(128, 4, 128, 8192, 132);
  EXPECT_EQ(b16.num_splits, 4);
  EXPECT_EQ(PlanPagedDecode(512, 4, 128, 8192, 132).num_splits, 1);
  EXPECT_GT(PlanPagedDecode(8, 4, 128, 131072, 132).num_splits, 32);
  for (int32_t items : {1, 3, 8, 50, 128, 300}) {
    for (int32_t g : {1, 4, 8, 16}) {
      for (int32_t len : {1, 129, 1000, 4097, 65536, 1 << 20}) {
        const PagedDecodePlan plan = PlanPagedDecode(items, g, 64, len, 132);
        ASSERT_GE(plan.num_splits, 1);
        ASSERT_LE(plan.num_splits, 256);
        if (plan.num_splits > 1) {
          EXPECT_GE(int64_t{plan.num_splits} * plan.kv_chunk_size, len);
          EXPECT_LT(int64_t{plan.num_splits - 1} * plan.kv_chunk_size, len);  // no empty split
          EXPECT_EQ(plan.workspace_o_elems, int64_t{items} * plan.num_splits * g * 64);
        }
      }
    }
  }
}

TEST(PagedDecode, PlanSplitsOnlyWhenTheGridIsSmall) {
  const PagedDecodePlan many = PlanPagedDecode(4096, 4, 128, 40000, 132);
  EXPECT_EQ(many.num_splits, 1);
  const PagedDecodePlan few = PlanPagedDecode(2, 8, 128, 33000, 132);
  EXPECT_GT(few.num_splits, 1);
  EXPECT_GE(int64_t{few.num_splits} * few.kv_chunk_size, 33000);
  EXPECT_EQ(few.workspace_o_elems, int64_t{2} * few.num_splits * 8 * 128);
  EXPECT_EQ(few.workspace_lse_elems, int64_t{2} * few.num_splits * 8);
  EXPECT_EQ(PlanPagedDecode(2, 8, 128, 100, 132).num_splits, 1);
}

TEST(PagedDecode, RejectsUnsupportedHeadDim) {
  KVASIR_SKIP_WITHOUT_GPU();
  DeviceBuffer<float> buf(1024);
  PagedDecodeParams<float> p;
  p.k_pool = p.v_pool = buf.get();
  p.q = buf.get();
  p.num_items = 1;
  p.head_dim = 96;
  EXPECT_EQ(InvokePagedDecode(p, nullptr), cudaErrorInvalidValue);
}

TEST(MergeAttention, MatchesReference) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int32_t n_parts : {1, 3, 5}) {
    for (int32_t d : {64, 128}) {
      SCOPED_TRACE("n_parts=" + std::to_string(n_parts) + " d=" + std::to_string(d));
      const int64_t count = 7;
      const int32_t rows = 4;
      const int64_t out_stride = rows * d + 16;  // padded: the gap must stay untouched
      std::vector<float> o(count * n_parts * rows * d), lse(count * n_parts * rows);
      for (auto& x : o) x = nd(rng);
      for (auto& x : lse) x = 20.0f * nd(rng);
      for (auto& x : lse) {
        if (rng() % 4 == 0) x = -INFINITY;  // empty parts
      }
      for (int32_t j = 0; j < n_parts; ++j) {
        for (int32_t r = 0; r < rows; ++r) lse[(2 * n_parts + j) * rows + r] = -INFINITY;
      }
      std::vector<float> ref(count * out_stride, 0.0f), ref_lse(count * rows);
      for (int64_t gi = 0; gi < count; ++gi) {
        MergeAttentionRef(n_parts, o.data() + gi * n_parts * rows * d,
                          lse.data() + gi * n_parts * rows, rows, d, ref.data() + gi * out_stride,
                          ref_lse.data() + gi * rows);
      }
      DeviceBuffer<float> d_o(o), d_lse(lse), d_out(ref.size()), d_out_lse(ref_lse.size());
      ASSERT_TRUE(d_o.ok() && d_lse.ok() && d_out.ok() && d_out_lse.ok());
      CUDA_ASSERT_OK(d_out.Poison());
      CUDA_ASSERT_OK(d_out_lse.Poison());
      MergeAttentionParams p;
      p.o_parts = d_o.get();
      p.lse_parts = d_lse.get();
      p.count = count;
      p.n_parts = n_parts;
      p.rows = rows;
      p.head_dim = d;
      p.out = d_out.get();
      p.out_stride = out_stride;
      p.out_lse = d_out_lse.get();
      CUDA_ASSERT_LAUNCH(InvokeMergeAttention(p, nullptr));
      std::vector<float> out = d_out.Download(), out_lse = d_out_lse.Download();
      // Gaps stay poisoned; compare the written part only.
      std::vector<float> got, want;
      for (int64_t gi = 0; gi < count; ++gi) {
        for (int64_t e = 0; e < out_stride; ++e) {
          const float x = out[gi * out_stride + e];
          if (e >= rows * d) {
            EXPECT_TRUE(std::isnan(x)) << "wrote into the gap";
            continue;
          }
          got.push_back(x);
          want.push_back(ref[gi * out_stride + e]);
        }
      }
      EXPECT_EQ(::kvasir::testing::CountNonFinite(got), 0);
      EXPECT_LT(RelError(got, want), 1e-6);
      for (size_t r = 0; r < ref_lse.size(); ++r) {
        if (std::isinf(ref_lse[r])) {
          EXPECT_TRUE(std::isinf(out_lse[r]) && out_lse[r] < 0);
        } else {
          EXPECT_NEAR(out_lse[r], ref_lse[r], 1e-5 * std::max(1.0f, std::abs(ref_lse[r])));
        }
      }
    }
  }
}

TEST(MergeAttention, ManyPartsOddHeadDimsProgrammatic) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int32_t n_parts : {2, 300, 1100}) {    // 1100: past the 1024 staged weights
    for (int32_t d : {8, 12, 256, 600, 9}) {  // 9: scalar path; 600: > 128 float4 per row
      for (bool programmatic : {false, true}) {
        SCOPED_TRACE("n_parts=" + std::to_string(n_parts) + " d=" + std::to_string(d) +
                     " programmatic=" + std::to_string(programmatic));
        const int64_t count = 3;
        const int32_t rows = 2;
        std::vector<float> o(count * n_parts * rows * d), lse(count * n_parts * rows);
        for (auto& x : o) x = nd(rng);
        for (auto& x : lse) x = (rng() % 5 == 0) ? -INFINITY : 30.0f * nd(rng);
        std::vector<float> ref(count * rows * d), ref_lse(count * rows);
        for (int64_t gi = 0; gi < count; ++gi) {
          MergeAttentionRef(n_parts, o.data() + gi * n_parts * rows * d,
                            lse.data() + gi * n_parts * rows, rows, d, ref.data() + gi * rows * d,
                            ref_lse.data() + gi * rows);
        }
        DeviceBuffer<float> d_o(o), d_lse(lse), d_out(ref.size()), d_out_lse(ref_lse.size());
        ASSERT_TRUE(d_o.ok() && d_lse.ok() && d_out.ok() && d_out_lse.ok());
        CUDA_ASSERT_OK(d_out.Poison());
        CUDA_ASSERT_OK(d_out_lse.Poison());
        MergeAttentionParams p;
        p.o_parts = d_o.get();
        p.lse_parts = d_lse.get();
        p.count = count;
        p.n_parts = n_parts;
        p.rows = rows;
        p.head_dim = d;
        p.out = d_out.get();
        p.out_lse = d_out_lse.get();
        p.programmatic_launch = programmatic;
        CUDA_ASSERT_LAUNCH(InvokeMergeAttention(p, nullptr));
        const std::vector<float> out = d_out.Download(), out_lse = d_out_lse.Download();
        EXPECT_EQ(::kvasir::testing::CountNonFinite(out), 0);
        EXPECT_LT(RelError(out, ref), 1e-6);
        for (size_t r = 0; r < ref_lse.size(); ++r) {
          if (std::isinf(ref_lse[r])) {
            EXPECT_TRUE(std::isinf(out_lse[r]) && out_lse[r] < 0);
          } else {
            EXPECT_NEAR(out_lse[r], ref_lse[r], 1e-5 * std::max(1.0f, std::abs(ref_lse[r])));
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvasir::cuda
