// What an attention worker's CPU kernel reads per second: one decode step of B sequences over a
// context of N tokens for a llama-3-8b layer (8 KV heads, GQA group 4, head_dim 128), items
// (sequence, KV head) spread over T threads, for each instruction set and KV dtype, against the
// host's copy bandwidth measured in the same run (memcpy over as many threads, STREAM-style:
// bytes read + written per second). Prints a markdown table.
//   build/bin/kvasir-attention-cpu-bench [--batch 16] [--ctx 4096] [--threads 1,2] [--reps 5]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/attention/paged_attention_cpu.h"

namespace kvasir {
namespace {

constexpr int32_t kKvHeads = 8, kGroup = 4, kHeadDim = 128, kBlock = 16;

std::vector<int> ParseList(const char* s) {
  std::vector<int> v;
  for (const char* p = s; *p;) {
    v.push_back(std::max(1, std::atoi(p)));
    while (*p && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  return v;
}

double Seconds(const std::chrono::steady_clock::time_point& t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int Main(int argc, char** argv) {
  int batch = 16, ctx = 4096, reps = 5;
  std::vector<int> threads = {1, static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i];
    if (f == "--batch") batch = std::max(1, std::atoi(argv[i + 1]));
    if (f == "--ctx") ctx = std::max(1, std::atoi(argv[i + 1]));
    if (f == "--reps") reps = std::max(1, std::atoi(argv[i + 1]));
    if (f == "--threads") threads = ParseList(argv[i + 1]);
  }
  const int64_t tables = int64_t{batch} * kKvHeads;
  const int64_t blocks_per_table = (ctx + kBlock - 1) / kBlock;
  const int64_t elems = tables * blocks_per_table * kBlock * kHeadDim;  // per pool
  std::printf("Attention worker CPU kernel: one decode step, %d sequences x %d tokens, llama-3-8b "
              "layer (%d KV heads, group %d, head_dim %d); KV %.0f MiB fp32 / %.0f MiB bf16; best "
              "ISA here: %s; %u hardware threads\n\n",
              batch, ctx, kKvHeads, kGroup, kHeadDim, 2.0 * elems * 4 / (1 << 20),
              2.0 * elems * 2 / (1 << 20), CpuIsaName(DetectCpuIsa()),
              std::thread::hardware_concurrency());
  std::vector<float> k(elems), v(elems);
  std::vector<uint16_t> kh(elems), vh(elems);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t i = 0; i < elems; ++i) {
    k[i] = nd(rng);
    v[i] = nd(rng);
    uint32_t u;
    std::memcpy(&u, &k[i], 4);
    kh[i] = static_cast<uint16_t>(u >> 16);
    std::memcpy(&u, &v[i], 4);
    vh[i] = static_cast<uint16_t>(u >> 16);
  }
  std::vector<int32_t> table(tables * blocks_per_table);
  for (int64_t i = 0; i < static_cast<int64_t>(table.size()); ++i) table[i] = static_cast<int32_t>(i);
  std::vector<float> q(tables * kGroup * kHeadDim), o(q.size()), lse(tables * kGroup);
  for (float& x : q) x = nd(rng);
  std::vector<float> copy_src(elems * 2), copy_dst(elems * 2);  // as many bytes as the fp32 KV
  std::fill(copy_src.begin(), copy_src.end(), 1.0f);

  std::printf("| ISA | KV dtype | threads | KV read GB/s | copy GB/s (read + write) | of copy | "
              "step ms |\n|---|---|---|---|---|---|---|\n");
  std::vector<CpuIsa> isas = {CpuIsa::kScalar};
  if (DetectCpuIsa() >= CpuIsa::kAvx2) isas.push_back(CpuIsa::kAvx2);
  if (DetectCpuIsa() >= CpuIsa::kAvx512) isas.push_back(CpuIsa::kAvx512);
  for (int t : threads) {
    ThreadPool pool(t);
    // Copy bandwidth over t threads, best of reps.
    double copy_best = 1e30;
    const int64_t n = static_cast<int64_t>(copy_src.size());
    for (int r = 0; r < reps + 1; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      pool.ParallelFor(t, [&](int64_t b, int64_t e) {
        for (int64_t c = b; c < e; ++c) {
          const int64_t lo = n * c / t, hi = n * (c + 1) / t;
          std::memcpy(copy_dst.data() + lo, copy_src.data() + lo, (hi - lo) * sizeof(float));
        }
      });
      if (r > 0) copy_best = std::min(copy_best, Seconds(t0));
    }
    const double copy_gbs = 2.0 * n * sizeof(float) / copy_best / 1e9;
    for (CpuIsa isa : isas) {
      for (const bool bf16 : {false, true}) {
        double best = 1e30;
        for (int r = 0; r < reps + 1; ++r) {
          const auto t0 = std::chrono::steady_clock::now();
          pool.ParallelFor(tables, [&](int64_t b, int64_t e) {
            for (int64_t it = b; it < e; ++it) {
              PagedAttentionParams p;
              p.k_pool = k.data();
              p.v_pool = v.data();
              if (bf16) {
                p.k_pool_bf16 = kh.data();
                p.v_pool_bf16 = vh.data();
              }
              p.block_table = table.data() + it * blocks_per_table;
              p.block_size = kBlock;
              p.head_dim = kHeadDim;
              p.begin = 0;
              p.end = ctx;
              p.q = q.data() + it * kGroup * kHeadDim;
              p.group = kGroup;
              p.scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
              p.o = o.data() + it * kGroup * kHeadDim;
              p.lse = lse.data() + it * kGroup;
              PagedPartialAttentionCpu(p, isa);
            }
          });
          if (r > 0) best = std::min(best, Seconds(t0));
        }
        const double bytes = 2.0 * tables * ctx * kHeadDim * (bf16 ? 2 : 4);
        const double gbs = bytes / best / 1e9;
        std::printf("| %s | %s | %d | %.2f | %.2f | %.0f%% | %.2f |\n", CpuIsaName(isa),
                    bf16 ? "bf16" : "fp32", t, gbs, copy_gbs, 100.0 * gbs / copy_gbs, best * 1e3);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace kvasir

int main(int argc, char** argv) { return kvasir::Main(argc, argv); }
