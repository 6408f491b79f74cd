// Checks the CUDA chunked-prefill kernel against PagedPartialAttentionRef, called per row and per
// kv head over the row's causal range [0, pos0 + j + 1), on fresh random inputs: several
// sequences per launch with chunks of 0, 1, 7, 33, 65 and 200 rows, pos0 from 0 to 30000, page
// sizes 1 and 16, GQA groups 1/4/6/8/16/40, head_dim 8/32/64/128/256, fp32 and bf16 KV,
// shuffled block ids and page tables stored out of order, padded q/o rows. Pool slots beyond each
// sequence's last appended token and spare blocks hold NaN, so reading them fails the check;
// o and lse are poisoned before every launch, and the padding of o must stay untouched.
#include "kernels/attention/paged_prefill.cuh"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention/paged_attention_ref.h"
#include "kernels/common/cuda_test_util.h"

namespace kvasir::cuda {
namespace {

using ::kvasir::testing::DeviceBuffer;
using ::kvasir::testing::FromFloatVec;
using ::kvasir::testing::RelError;
using ::kvasir::testing::ToFloatVec;

struct Chunk {
  int32_t rows = 1;
  int32_t pos0 = 0;
};

struct Case {
  int32_t head_dim = 128;
  int32_t group = 4;
  int32_t num_kv_heads = 2;
  int32_t block_size = 16;
  std::vector<Chunk> chunks;  // one per sequence
  bool padded = false;        // q and o rows padded beyond num_heads * head_dim
  bool with_lse = true;
  std::vector<int32_t> kv_limit;  // per sequence (PagedPrefillParams::kv_limit); empty: none
};

std::string Describe(const Case& c, const char* dtype) {
  std::string s = std::string(dtype) + " d=" + std::to_string(c.head_dim) +
                  " g=" + std::to_string(c.group) + " kvh=" + std::to_string(c.num_kv_heads) +
                  " bs=" + std::to_string(c.block_size) + " padded=" + std::to_string(c.padded) +
                  " chunks(rows@pos0)=";
  for (const Chunk& ch : c.chunks) {
    s += std::to_string(ch.rows) + "@" + std::to_string(ch.pos0) + " ";
  }
  return s;
}

struct Worst {
  double o = 0;
  double lse = 0;
};

uint32_t FreshSeed() {
  const uint32_t seed = std::random_device{}();
  std::printf("[paged_prefill] seed %u\n", seed);
  return seed;
}

template <typename KvT>
void RunCase(const Case& c, std::mt19937& rng, Worst* worst) {
  const char* dtype = sizeof(KvT) == 4 ? "fp32" : "bf16";
  SCOPED_TRACE(Describe(c, dtype));
  const int32_t n_seqs = static_cast<int32_t>(c.chunks.size());
  const int32_t d = c.head_dim, g = c.group, kvh = c.num_kv_heads, bs = c.block_size;
  const int32_t heads = kvh * g;
  std::normal_distribution<float> nd(0.0f, 1.0f);

  std::vector<int32_t> row_start(n_seqs + 1, 0), pos0(n_seqs);
  int32_t max_rows = 0;
  for (int32_t s = 0; s < n_seqs; ++s) {
    row_start[s + 1] = row_start[s] + c.chunks[s].rows;
    pos0[s] = c.chunks[s].pos0;
    max_rows = std::max(max_rows, c.chunks[s].rows);
  }
  const int32_t total_rows = row_start[n_seqs];

  // Page tables of the (sequence, kv head) pairs, laid out in block_ids in shuffled order, over
  // a shuffled pool with spare blocks.
  const int32_t n_tables = n_seqs * kvh;
  std::vector<int32_t> table_blocks(n_tables);
  int32_t used_blocks = 0;
  for (int32_t s = 0; s < n_seqs; ++s) {
    const int32_t tokens = c.chunks[s].pos0 + c.chunks[s].rows;
    for (int32_t h = 0; h < kvh; ++h) {
      table_blocks[s * kvh + h] = (tokens + bs - 1) / bs;
      used_blocks += table_blocks[s * kvh + h];
    }
  }
  const int32_t pool_blocks = used_blocks + 7;
  std::vector<int32_t> perm(pool_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> order(n_tables);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<int32_t> offsets(n_tables), ids;
  for (int32_t ti : order) {
    offsets[ti] = static_cast<int32_t>(ids.size());
    for (int32_t b = 0; b < table_blocks[ti]; ++b) ids.push_back(perm[ids.size()]);
  }
  ids.push_back(perm[used_blocks]);  // a spare block: block_ids is never empty

  // Pools: NaN except the tokens [0, pos0 + rows) of each table; values exact in KvT.
  const size_t pool_elems = static_cast<size_t>(pool_blocks) * bs * d;
  std::vector<float> k_host(pool_elems, NAN), v_host(pool_elems, NAN);
  for (int32_t s = 0; s < n_seqs; ++s) {
    const int32_t tokens = c.chunks[s].pos0 + c.chunks[s].rows;
    for (int32_t h = 0; h < kvh; ++h) {
      const int32_t* table = ids.data() + offsets[s * kvh + h];
      for (int32_t t = 0; t < tokens; ++t) {
        const size_t row = static_cast<size_t>(table[t / bs]) * bs + t % bs;
        for (int32_t e = 0; e < d; ++e) {
          k_host[row * d + e] = nd(rng);
          v_host[row * d + e] = nd(rng);
        }
      }
    }
  }
  const std::vector<KvT> k_kv = FromFloatVec<KvT>(k_host), v_kv = FromFloatVec<KvT>(v_host);
  k_host = ToFloatVec(k_kv);
  v_host = ToFloatVec(v_kv);

  // q rows; padding holds NaN (never read), o padding must stay poisoned.
  const int64_t dense = int64_t{heads} * d;
  const int64_t q_stride = c.padded ? dense + 12 : dense;
  const int64_t o_stride = c.padded ? dense + 4 : dense;
  std::vector<float> q(std::max<int64_t>(1, total_rows * q_stride), NAN);
  for (int32_t r = 0; r < total_rows; ++r) {
    for (int64_t e = 0; e < dense; ++e) q[r * q_stride + e] = 2.0f * nd(rng);
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));

  // CPU reference: one call per (row, kv head).
  std::vector<float> ref_o(static_cast<size_t>(total_rows) * dense);
  std::vector<float> ref_lse(static_cast<size_t>(total_rows) * heads);
  for (int32_t s = 0; s < n_seqs; ++s) {
    for (int32_t j = 0; j < c.chunks[s].rows; ++j) {
      const int32_t r = row_start[s] + j;
      for (int32_t h = 0; h < kvh; ++h) {
        PagedAttentionParams rp;
        rp.k_pool = k_host.data();
        rp.v_pool = v_host.data();
        rp.block_table = ids.data() + offsets[s * kvh + h];
        rp.block_size = bs;
        rp.head_dim = d;
        rp.begin = 0;
        rp.end = c.chunks[s].pos0 + j + 1;
        if (!c.kv_limit.empty()) rp.end = std::min(rp.end, c.kv_limit[s]);
        rp.q = q.data() + r * q_stride + int64_t{h} * g * d;
        rp.group = g;
        rp.scale = scale;
        rp.o = ref_o.data() + r * dense + int64_t{h} * g * d;
        rp.lse = ref_lse.data() + static_cast<size_t>(r) * heads + h * g;
        PagedPartialAttentionRef(rp);
      }
    }
  }

  DeviceBuffer<KvT> dk(k_kv), dv(v_kv);
  DeviceBuffer<int32_t> doff(offsets), dids(ids), drow(row_start), dpos(pos0);
  DeviceBuffer<int32_t> dlimit(c.kv_limit.empty() ? std::vector<int32_t>{1} : c.kv_limit);
  DeviceBuffer<float> dq(q), dout(std::max<int64_t>(1, total_rows * o_stride));
  DeviceBuffer<float> dlse(std::max<size_t>(1, ref_lse.size()));
  ASSERT_TRUE(dk.ok() && dv.ok() && doff.ok() && dids.ok() && drow.ok() && dpos.ok() && dq.ok() &&
              dout.ok() && dlse.ok());

  PagedPrefillParams<KvT> p;
  p.k_pool = dk.get();
  p.v_pool = dv.get();
  p.block_table_offsets = doff.get();
  p.block_ids = dids.get();
  p.row_start = drow.get();
  p.pos0 = dpos.get();
  p.kv_limit = c.kv_limit.empty() ? nullptr : dlimit.get();
  p.q = dq.get();
  p.q_row_stride = c.padded ? q_stride : 0;
  p.o = dout.get();
  p.o_row_stride = c.padded ? o_stride : 0;
  p.lse = c.with_lse ? dlse.get() : nullptr;
  p.num_seqs = n_seqs;
  p.num_kv_heads = kvh;
  p.group = g;
  p.head_dim = d;
  p.block_size = bs;
  p.max_rows = max_rows;
  p.scale = scale;

  CUDA_ASSERT_OK(dout.Poison());
  CUDA_ASSERT_OK(dlse.Poison());
  CUDA_ASSERT_LAUNCH(InvokePagedPrefill(p, nullptr));
  const std::vector<float> out = dout.Download(), lse = dlse.Download();
  CUDA_ASSERT_OK(cudaGetLastError());

  // Per sequence: its own bound (the reference sums V sequentially in fp32, which drifts
  // ~eps·√n over long ranges; identical dequantized inputs on both sides, bf16 KV too).
  for (int32_t s = 0; s < n_seqs; ++s) {
    SCOPED_TRACE("sequence " + std::to_string(s));
    std::vector<float> got, want;
    for (int32_t r = row_start[s]; r < row_start[s + 1]; ++r) {
      for (int64_t e = 0; e < o_stride; ++e) {
        const float x = out[r * o_stride + e];
        if (e >= dense) {
          EXPECT_TRUE(std::isnan(x)) << "wrote into the padding of row " << r;
          continue;
        }
        got.push_back(x);
        want.push_back(ref_o[r * dense + e]);
      }
    }
    EXPECT_EQ(::kvasir::testing::CountNonFinite(got), 0) << "unwritten or NaN outputs";
    const double err = RelError(got, want);
    const int32_t tokens = c.chunks[s].pos0 + c.chunks[s].rows;
    EXPECT_LT(err, tokens <= 4096 ? 2e-5 : 1e-4);
    worst->o = std::max(worst->o, err);
  }
  if (c.with_lse) {
    double lse_err = 0;
    for (size_t i = 0; i < ref_lse.size(); ++i) {
      ASSERT_TRUE(std::isfinite(lse[i])) << "lse " << i << " = " << lse[i];
      lse_err = std::max(lse_err, std::abs(static_cast<double>(lse[i]) - ref_lse[i]) /
                                      std::max(1.0, std::abs(static_cast<double>(ref_lse[i]))));
    }
    EXPECT_LT(lse_err, 1e-5);
    worst->lse = std::max(worst->lse, lse_err);
  } else {
    for (float x : lse) EXPECT_TRUE(std::isnan(x)) << "lse written although null";
  }
}

void Report(const char* name, const Worst& f32, const Worst& bf16) {
  std::printf("[paged_prefill %s] worst rel err fp32 %.3g, bf16-KV %.3g, lse %.3g\n", name, f32.o,
              bf16.o, std::max(f32.lse, bf16.lse));
}

// The hybrid executor's near part: rows see at most kv_limit tokens of their table, whether the
// limit lies before the chunk (every row capped), inside it, or past it (plain causal).
TEST(PagedPrefill, KvLimitCapsEveryRow) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937 rng(FreshSeed());
  Worst f32, bf16;
  for (int32_t d : {8, 64, 128}) {
    Case c;
    c.head_dim = d;
    c.group = d == 8 ? 2 : 4;
    c.chunks = {{37, 100}, {64, 0}, {5, 300}, {1, 40}, {90, 17}};
    c.kv_limit = {48, 20, 1000, 16, 17};
    RunCase<float>(c, rng, &f32);
    RunCase<__nv_bfloat16>(c, rng, &bf16);
  }
  Report("kv_limit", f32, bf16);
}

TEST(PagedPrefill, MatchesReferenceGrid) {
  KVASIR_SKIP_WITHOUT_GPU();
  const uint32_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  Worst f32, bf16;
  bool padded = false;
  for (int32_t d : {8, 64, 128}) {
    for (int32_t g : {1, 4, 8}) {
      for (int32_t bs : {1, 16}) {
        Case c;
        c.head_dim = d;
        c.group = g;
        c.num_kv_heads = 2;
        c.block_size = bs;
        c.padded = padded;
        padded = !padded;
        // Odd chunks, an empty chunk, a decode row after a long history.
        c.chunks = {{1, 0}, {7, 17}, {33, 1000}, {0, 5}, {200, 17}, {1, 5000}, {33, 0}};
        std::shuffle(c.chunks.begin(), c.chunks.end(), rng);
        RunCase<float>(c, rng, &f32);
        RunCase<__nv_bfloat16>(c, rng, &bf16);
        if (HasFatalFailure()) return;
      }
    }
  }
  Report("grid", f32, bf16);
}

// Only 1-row chunks: the 32-slot CTA shape (rows × group <= 32) and the decode use of the kernel.
TEST(PagedPrefill, DecodeRows) {
  KVASIR_SKIP_WITHOUT_GPU();
  const uint32_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  Worst f32, bf16;
  for (int32_t d : {64, 128}) {
    for (int32_t g : {1, 4, 8}) {
      Case c;
      c.head_dim = d;
      c.group = g;
      c.num_kv_heads = 3;
      c.block_size = g == 4 ? 1 : 16;
      c.chunks = {{1, 0}, {1, 1}};
      for (int i = 0; i < 7; ++i) c.chunks.push_back({1, static_cast<int32_t>(rng() % 2000)});
      RunCase<float>(c, rng, &f32);
      RunCase<__nv_bfloat16>(c, rng, &bf16);
      if (HasFatalFailure()) return;
    }
  }
  Report("decode rows", f32, bf16);
}

// head_dim 32 and 256, groups that are not powers of two and groups split over several CTAs
// (40 > 32 slots for head_dim 256).
TEST(PagedPrefill, OtherHeadDimsAndGroups) {
  KVASIR_SKIP_WITHOUT_GPU();
  const uint32_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  Worst f32, bf16;
  for (int32_t d : {32, 256}) {
    for (int32_t g : {6, 16, 40}) {
      Case c;
      c.head_dim = d;
      c.group = g;
      c.num_kv_heads = g == 40 ? 1 : 2;
      c.block_size = g == 6 ? 1 : 16;
      c.padded = g == 16;
      c.chunks = {{7, 3}, {33, 100}, {65, 0}, {1, 300}};
      RunCase<float>(c, rng, &f32);
      RunCase<__nv_bfloat16>(c, rng, &bf16);
      if (HasFatalFailure()) return;
    }
  }
  Report("other shapes", f32, bf16);
}

TEST(PagedPrefill, LongHistories) {
  KVASIR_SKIP_WITHOUT_GPU();
  const uint32_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  Worst f32, bf16;
  for (int32_t g : {1, 8}) {
    Case c;
    c.head_dim = 128;
    c.group = g;
    c.num_kv_heads = 1;
    c.block_size = g == 1 ? 1 : 16;
    c.chunks = {{7, 30000}, {33, 5000}, {1, 20000}};
    RunCase<float>(c, rng, &f32);
    RunCase<__nv_bfloat16>(c, rng, &bf16);
    if (HasFatalFailure()) return;
  }
  Report("long", f32, bf16);
}

TEST(PagedPrefill, WithoutLse) {
  KVASIR_SKIP_WITHOUT_GPU();
  const uint32_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  Worst f32, bf16;
  Case c;
  c.head_dim = 64;
  c.group = 4;
  c.with_lse = false;
  c.chunks = {{7, 17}, {33, 0}};
  RunCase<float>(c, rng, &f32);
  RunCase<__nv_bfloat16>(c, rng, &bf16);
}

TEST(PagedPrefill, RejectsBadParams) {
  KVASIR_SKIP_WITHOUT_GPU();
  DeviceBuffer<float> buf(4096);
  DeviceBuffer<int32_t> ints(64);
  ASSERT_TRUE(buf.ok() && ints.ok());
  CUDA_ASSERT_OK(cudaMemset(ints.get(), 0, 64 * sizeof(int32_t)));
  auto valid = [&] {
    PagedPrefillParams<float> p;
    p.k_pool = p.v_pool = buf.get();
    p.block_table_offsets = p.block_ids = p.row_start = p.pos0 = ints.get();
    p.q = buf.get();
    p.o = buf.get() + 2048;
    p.num_seqs = 1;
    p.num_kv_heads = 1;
    p.group = 1;
    p.head_dim = 8;
    p.block_size = 16;
    p.max_rows = 1;
    return p;
  };
  // The valid baseline launches (row_start all zero: nothing to compute).
  CUDA_ASSERT_LAUNCH(InvokePagedPrefill(valid(), nullptr));

  std::vector<PagedPrefillParams<float>> bad;
  auto add = [&](auto mutate) {
    PagedPrefillParams<float> p = valid();
    mutate(p);
    bad.push_back(p);
  };
  add([](auto& p) { p.head_dim = 96; });
  add([](auto& p) { p.head_dim = 0; });
  add([](auto& p) { p.group = 0; });
  add([](auto& p) { p.num_kv_heads = 0; });
  add([](auto& p) { p.block_size = 0; });
  add([](auto& p) { p.num_seqs = -1; });
  add([](auto& p) { p.max_rows = -1; });
  add([](auto& p) { p.num_seqs = 70000; });
  add([&](auto& p) { p.q = buf.get() + 1; });
  add([&](auto& p) { p.o = buf.get() + 2; });
  add([&](auto& p) { p.k_pool = buf.get() + 3; });
  add([&](auto& p) { p.v_pool = buf.get() + 1; });
  add([](auto& p) { p.q_row_stride = 6; });
  add([](auto& p) { p.o_row_stride = 10; });
  add([](auto& p) { p.q_row_stride = -8; });
  add([](auto& p) { p.q = nullptr; });
  add([](auto& p) { p.o = nullptr; });
  add([](auto& p) { p.k_pool = nullptr; });
  add([](auto& p) { p.block_ids = nullptr; });
  add([](auto& p) { p.block_table_offsets = nullptr; });
  add([](auto& p) { p.row_start = nullptr; });
  add([](auto& p) { p.pos0 = nullptr; });
  for (size_t i = 0; i < bad.size(); ++i) {
    EXPECT_EQ(InvokePagedPrefill(bad[i], nullptr), cudaErrorInvalidValue) << "bad case " << i;
  }
  CUDA_ASSERT_OK(cudaGetLastError());

  // Nothing to do is not an error.
  PagedPrefillParams<float> empty = valid();
  empty.num_seqs = 0;
  EXPECT_EQ(InvokePagedPrefill(empty, nullptr), cudaSuccess);
  empty = valid();
  empty.max_rows = 0;
  EXPECT_EQ(InvokePagedPrefill(empty, nullptr), cudaSuccess);
}

}  // namespace
}  // namespace kvasir::cuda
