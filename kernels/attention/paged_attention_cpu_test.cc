// The vectorized CPU kernel against the scalar reference, for every instruction set this CPU
// runs: fp32 and bf16 pools, head_dim 8 / 64 / 100 (a scalar tail) / 128, GQA group 1 / 4 / 8,
// block sizes 1 and 16, ranges that start mid-block, empty ranges; and exp's accuracy over the
// softmax's range through the lse of single-token ranges.
#include "kernels/attention/paged_attention_cpu.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace kvasir {
namespace {

uint16_t Bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

struct Case {
  int32_t head_dim, group, block_size, begin, end;
  bool bf16;
};

TEST(PagedAttentionCpu, MatchesTheReferenceOnEveryIsa) {
  std::vector<CpuIsa> isas = {CpuIsa::kScalar};
  if (DetectCpuIsa() >= CpuIsa::kAvx2) isas.push_back(CpuIsa::kAvx2);
  if (DetectCpuIsa() >= CpuIsa::kAvx512) isas.push_back(CpuIsa::kAvx512);
  std::printf("vectorized variants checked: %zu (best here: %s)\n", isas.size(),
              CpuIsaName(DetectCpuIsa()));
  const Case cases[] = {{8, 2, 16, 0, 37, false},    {64, 4, 16, 5, 300, false},
                        {100, 1, 1, 0, 19, false},   {128, 8, 16, 17, 533, false},
                        {128, 4, 16, 0, 1, false},   {64, 4, 16, 10, 10, false},
                        {128, 4, 16, 3, 260, true},  {8, 2, 1, 0, 41, true},
                        {100, 8, 16, 0, 77, true}};
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const Case& c : cases) {
    const int32_t blocks = (c.end + c.block_size - 1) / c.block_size + 3;
    const int64_t elems = int64_t{blocks} * c.block_size * c.head_dim;
    std::vector<float> k(elems), v(elems), q(int64_t{c.group} * c.head_dim);
    for (float& x : k) x = nd(rng) * 2.0f;
    for (float& x : v) x = nd(rng);
    for (float& x : q) x = nd(rng);
    std::vector<uint16_t> kh(elems), vh(elems);
    for (int64_t i = 0; i < elems; ++i) {
      kh[i] = Bf16(k[i]);
      vh[i] = Bf16(v[i]);
    }
    std::vector<int32_t> table(blocks);
    for (int32_t i = 0; i < blocks; ++i) table[i] = (i * 7 + 3) % blocks;  // scattered blocks
    auto run = [&](CpuIsa isa, bool ref, std::vector<float>* o, std::vector<float>* lse) {
      o->assign(int64_t{c.group} * c.head_dim, 123.0f);
      lse->assign(c.group, 123.0f);
      PagedAttentionParams p;
      p.k_pool = k.data();
      p.v_pool = v.data();
      if (c.bf16) {
        p.k_pool_bf16 = kh.data();
        p.v_pool_bf16 = vh.data();
      }
      p.block_table = table.data();
      p.block_size = c.block_size;
      p.head_dim = c.head_dim;
      p.begin = c.begin;
      p.end = c.end;
      p.q = q.data();
      p.group = c.group;
      p.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
      p.o = o->data();
      p.lse = lse->data();
      if (ref) {
        PagedPartialAttentionRef(p);
      } else {
        PagedPartialAttentionCpu(p, isa);
      }
    };
    std::vector<float> want_o, want_lse;
    run(CpuIsa::kScalar, true, &want_o, &want_lse);
    for (CpuIsa isa : isas) {
      std::vector<float> o, lse;
      run(isa, false, &o, &lse);
      for (size_t i = 0; i < o.size(); ++i) {
        ASSERT_NEAR(o[i], want_o[i], 2e-5f * (1.0f + std::fabs(want_o[i])))
            << CpuIsaName(isa) << " d " << c.head_dim << " g " << c.group << " n "
            << c.end - c.begin << " i " << i;
      }
      for (int32_t h = 0; h < c.group; ++h) {
        if (c.end == c.begin) {
          EXPECT_TRUE(std::isinf(lse[h]) && lse[h] < 0);
        } else {
          EXPECT_NEAR(lse[h], want_lse[h], 2e-5f * (1.0f + std::fabs(want_lse[h])))
              << CpuIsaName(isa);
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvasir
