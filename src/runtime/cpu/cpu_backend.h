// CPU backend: OpenBLAS for matrix products, a thread pool for the element-wise ops.
#pragma once

#include <memory>

#include "common/thread_pool.h"
#include "runtime/backend.h"

namespace kvasir {

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(int num_threads);
  const char* name() const override { return "cpu"; }
  int num_threads() const override { return pool_.num_threads(); }
  ThreadPool& pool() { return pool_; }

  void Gemm(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k) override;
  void RmsNorm(const float* x, const float* weight, float* y, int64_t m, int64_t d,
               float eps) override;
  void AddRmsNorm(float* residual, const float* delta, const float* weight, float* y, int64_t m,
                  int64_t d, float eps) override;
  void Rope(float* x, int64_t m, int64_t row_stride, int32_t num_heads, int32_t head_dim,
            const int32_t* positions, const float* inv_freq, RopeStyle style) override;
  void SiluMul(const float* gate_up, float* out, int64_t m, int64_t h) override;
  void Embedding(const int32_t* ids, const float* table, float* out, int64_t m,
                 int64_t d) override;
  void PagedPartialAttention(const PagedAttentionParams* items, int64_t n) override;
  void MergeAttention(int64_t count, int32_t n_parts, const float* o_parts,
                      const float* lse_parts, int32_t rows, int32_t head_dim, float* out_base,
                      int64_t out_stride) override;

 private:
  ThreadPool pool_;
};

}  // namespace kvasir
