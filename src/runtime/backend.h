// The op interface the model runner is written against. The CPU backend (cpu/) is the
// reference; the CUDA backend implements the same ops on device pointers.
// All matrices are row-major; shapes are written next to each argument.
#pragma once

#include <cstdint>

#include "kernels/attention/paged_attention_ref.h"

namespace kvasir {

// How RoPE pairs the dimensions of a head: llama2.c rotates adjacent pairs (2i, 2i+1);
// HF Llama rotates halves (i, i + d/2).
enum class RopeStyle { kInterleaved, kHalf };

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual int num_threads() const = 0;

  // y[m, n] = x[m, k] · w[n, k]ᵀ  (weights stored [out, in], as in HF and llama2.c)
  virtual void Gemm(const float* x, const float* w, float* y, int64_t m, int64_t n,
                    int64_t k) = 0;
  // y[m, d] = x / rms(x) * weight   (rms over each row, eps inside the sqrt)
  virtual void RmsNorm(const float* x, const float* weight, float* y, int64_t m, int64_t d,
                       float eps) = 0;
  // residual[m, d] += delta[m, d]; y[m, d] = RmsNorm(residual)
  virtual void AddRmsNorm(float* residual, const float* delta, const float* weight, float* y,
                          int64_t m, int64_t d, float eps) = 0;
  // Rotates heads in place: x[m, row_stride], heads at x + h * head_dim for h < num_heads;
  // token i at positions[i]; inv_freq[head_dim / 2].
  virtual void Rope(float* x, int64_t m, int64_t row_stride, int32_t num_heads,
                    int32_t head_dim, const int32_t* positions, const float* inv_freq,
                    RopeStyle style) = 0;
  // out[m, h] = silu(gate_up[m, 0:h]) * gate_up[m, h:2h]
  virtual void SiluMul(const float* gate_up, float* out, int64_t m, int64_t h) = 0;
  // out[m, d] = table[ids[i], :]
  virtual void Embedding(const int32_t* ids, const float* table, float* out, int64_t m,
                         int64_t d) = 0;
  // Runs n independent partial attentions (each writes its own o, lse).
  virtual void PagedPartialAttention(const PagedAttentionParams* items, int64_t n) = 0;
  // For each of `count` merge groups g: merges n_parts partials at o_parts + g * n_parts * rows
  // * head_dim ([n_parts, rows, head_dim]) and lse_parts + g * n_parts * rows into
  // out[g] = out_base + g * out_stride ([rows, head_dim]).
  virtual void MergeAttention(int64_t count, int32_t n_parts, const float* o_parts,
                              const float* lse_parts, int32_t rows, int32_t head_dim,
                              float* out_base, int64_t out_stride) = 0;
};

}  // namespace kvasir
