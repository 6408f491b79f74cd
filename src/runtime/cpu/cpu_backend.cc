#include "runtime/cpu/cpu_backend.h"

#include <algorithm>

#include <cblas.h>

#include <cmath>
#include <cstring>

#include "kernels/attention/paged_attention_cpu.h"


extern "C" void openblas_set_num_threads(int num_threads);

namespace kvasir {

CpuBackend::CpuBackend(int num_threads) : pool_(num_threads) {
  openblas_set_num_threads(pool_.num_threads());
}

void CpuBackend::Gemm(const float* x, const float* w, float* y, int64_t m, int64_t n,
                      int64_t k) {
  if (m == 0 || n == 0) return;
  if (m == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w, k, x, 1, 0.0f, y, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, k, w, k, 0.0f, y, n);
}

namespace {
inline void NormRow(const float* x, const float* w, float* y, int64_t d, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / d + eps));
  for (int64_t i = 0; i < d; ++i) y[i] = x[i] * inv * w[i];
}
// Small element-wise loops are not worth waking the pool for.
constexpr int64_t kParallelMinElements = 1 << 14;
}  // namespace

void CpuBackend::RmsNorm(const float* x, const float* weight, float* y, int64_t m, int64_t d,
                         float eps) {
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) NormRow(x + r * d, weight, y + r * d, d, eps);
  };
  if (m * d < kParallelMinElements) return body(0, m);
  pool_.ParallelFor(m, body);
}

void CpuBackend::AddRmsNorm(float* residual, const float* delta, const float* weight, float* y,
                            int64_t m, int64_t d, float eps) {
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      float* res = residual + r * d;
      const float* del = delta + r * d;
      for (int64_t i = 0; i < d; ++i) res[i] += del[i];
      NormRow(res, weight, y + r * d, d, eps);
    }
  };
  if (m * d < kParallelMinElements) return body(0, m);
  pool_.ParallelFor(m, body);
}

void CpuBackend::Rope(float* x, int64_t m, int64_t row_stride, int32_t num_heads,
                      int32_t head_dim, const int32_t* positions, const float* inv_freq,
                      RopeStyle style) {
  const int32_t half = head_dim / 2;
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      float* row = x + r * row_stride;
      const float pos = static_cast<float>(positions[r]);
      for (int32_t i = 0; i < half; ++i) {
        // Angle in fp32 as the HF reference computes it (position * inv_freq).
        const float angle = pos * inv_freq[i];
        const float c = std::cos(angle), s = std::sin(angle);
        for (int32_t h = 0; h < num_heads; ++h) {
          float* hp = row + static_cast<int64_t>(h) * head_dim;
          const int32_t a = style == RopeStyle::kInterleaved ? 2 * i : i;
          const int32_t bi = style == RopeStyle::kInterleaved ? 2 * i + 1 : i + half;
          const float x0 = hp[a], x1 = hp[bi];
          hp[a] = x0 * c - x1 * s;
          hp[bi] = x0 * s + x1 * c;
        }
      }
    }
  };
  if (m * num_heads * head_dim < kParallelMinElements) return body(0, m);
  pool_.ParallelFor(m, body);
}

void CpuBackend::SiluMul(const float* gate_up, float* out, int64_t m, int64_t h) {
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* g = gate_up + r * 2 * h;
      const float* u = g + h;
      float* o = out + r * h;
      for (int64_t i = 0; i < h; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
  };
  if (m * h < kParallelMinElements) return body(0, m);
  pool_.ParallelFor(m, body);
}

void CpuBackend::Embedding(const int32_t* ids, const float* table, float* out, int64_t m,
                           int64_t d) {
  for (int64_t r = 0; r < m; ++r) {
    std::memcpy(out + r * d, table + static_cast<int64_t>(ids[r]) * d, d * sizeof(float));
  }
}

namespace {
// Below this many multiply-adds a step's attention runs on the calling thread: waking the pool
// costs more than the work (a small model's decode step, an attention worker's small batch).
constexpr int64_t kInlineAttentionMacs = int64_t{1} << 16;
}  // namespace

void CpuBackend::PagedPartialAttention(const PagedAttentionParams* items, int64_t n) {
  int64_t macs = 0;
  for (int64_t i = 0; i < n && macs < kInlineAttentionMacs; ++i) {
    macs += int64_t{2} * std::max(items[i].end - items[i].begin, 0) * items[i].head_dim *
            items[i].group;
  }
  if (macs < kInlineAttentionMacs) {
    for (int64_t i = 0; i < n; ++i) PagedPartialAttentionCpu(items[i]);
    return;
  }
  pool_.ParallelFor(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) PagedPartialAttentionCpu(items[i]);
  });
}

void CpuBackend::MergeAttention(int64_t count, int32_t n_parts, const float* o_parts,
                                const float* lse_parts, int32_t rows, int32_t head_dim,
                                float* out_base, int64_t out_stride) {
  const int64_t o_step = static_cast<int64_t>(n_parts) * rows * head_dim;
  const int64_t l_step = static_cast<int64_t>(n_parts) * rows;
  if (count * o_step < kInlineAttentionMacs) {
    for (int64_t g = 0; g < count; ++g) {
      MergeAttentionRef(n_parts, o_parts + g * o_step, lse_parts + g * l_step, rows, head_dim,
                        out_base + g * out_stride, nullptr);
    }
    return;
  }
  pool_.ParallelFor(count, [&](int64_t b, int64_t e) {
    for (int64_t g = b; g < e; ++g) {
      MergeAttentionRef(n_parts, o_parts + g * o_step, lse_parts + g * l_step, rows, head_dim,
                        out_base + g * out_stride, nullptr);
    }
  });
}

}  // namespace kvasir
