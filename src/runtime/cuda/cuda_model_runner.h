// Batched forward pass of a Llama-family model on one CUDA device, with the same contract as
// ModelRunner (model/model_runner.h): one Forward() advances many sequences by any number of
// tokens (prefill chunks and decode tokens mixed) and returns fp32 logits on the host.
//
// On the device: GEMM weights and the embedding table in bf16 (converted once from the host
// fp32 ModelWeights, fused wqkv / w_gate_up layouts as in weights.h), norm weights in fp32,
// the residual stream and every activation in fp32 (cast to bf16 only as a GEMM input), the KV
// cache in a bf16 paged pool with head-granular page tables. GEMMs run on cuBLASLt (bf16
// operands, fp32 accumulation and output); norms, RoPE, SiLU·mul, embedding, KV append and
// attention use kernels/. Attention is InvokePagedDecode with one item per (token, kv_head):
// a prefill row at position p attends over [0, p + 1) of its table (causal), split-KV and the
// merge as PlanPagedDecode chooses.
//
// KV bookkeeping (page tables, free blocks) is a KvCache without host rows; the block ids index
// the device pool. Sequences are created and freed through cache().
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "kvcache/kv_cache.h"
#include "model/model_runner.h"
#include "model/weights.h"

namespace kvasir {

struct CudaModelRunnerOptions {
  int32_t device = 0;
  int32_t block_size = 16;
  // Blocks of the device KV pool; one block holds block_size tokens of one (layer, kv_head).
  int32_t num_blocks = 0;
  // Tokens per split-KV chunk of the attention (0: PlanPagedDecode decides); a fixed split
  // checks that the split + merge path is exact, as ModelRunner::set_attention_split does.
  int32_t attention_split = 0;
};

namespace cuda_internal {

// A growable device allocation; Grow keeps nothing of the old contents.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();
  absl::Status Grow(size_t bytes);
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// One cuBLASLt matmul shape y[m, n] = x[m, k] · w[n, k]ᵀ with its chosen algorithm; the
// layouts are rebuilt only when m changes.
struct GemmPlan {
  int64_t m = -1, n = 0, k = 0;
  cublasLtMatrixLayout_t w_layout = nullptr, x_layout = nullptr, y_layout = nullptr;
  cublasLtMatmulAlgo_t algo{};
  void Reset();
};

}  // namespace cuda_internal

class CudaModelRunner {
 public:
  // Uploads the weights (Llama family; head_dim must be one InvokePagedDecode supports) and
  // allocates the KV pool. FailedPrecondition without a device, InternalError on CUDA errors.
  static absl::StatusOr<std::unique_ptr<CudaModelRunner>> Create(
      const ModelWeights* weights, const CudaModelRunnerOptions& options);
  ~CudaModelRunner();
  CudaModelRunner(const CudaModelRunner&) = delete;
  CudaModelRunner& operator=(const CudaModelRunner&) = delete;

  // Validates the whole batch before touching the cache, as ModelRunner does (unknown or
  // repeated sequences, empty inputs, token ids outside the vocabulary, positions past the
  // context are InvalidArgument; a full pool is ResourceExhausted). In addition start_pos must
  // equal the sequence's cached length. CUDA and cuBLAS failures are InternalError.
  absl::StatusOr<ForwardResult> Forward(const std::vector<SequenceInput>& batch);

  // The checks Forward() makes before touching any state (no device needed).
  static absl::Status ValidateBatch(const ModelConfig& config, const KvCache& cache,
                                    const std::vector<SequenceInput>& batch);

  KvCache& cache() { return cache_; }
  const ModelConfig& config() const { return weights_->config; }

 private:
  struct DeviceLayer {
    cuda_internal::DeviceBuffer attn_norm;  // [hidden] fp32
    cuda_internal::DeviceBuffer wqkv;       // [q_dim + 2 * kv_dim, hidden] bf16
    cuda_internal::DeviceBuffer wo;         // [hidden, q_dim] bf16
    cuda_internal::DeviceBuffer ffn_norm;   // [hidden] fp32
    cuda_internal::DeviceBuffer w_gate_up;  // [2 * intermediate, hidden] bf16
    cuda_internal::DeviceBuffer w_down;     // [hidden, intermediate] bf16
  };

  CudaModelRunner(const ModelWeights* weights, const CudaModelRunnerOptions& options);
  absl::Status Init();
  absl::Status PrepareGemm(cuda_internal::GemmPlan* plan, int64_t m);
  absl::Status Gemm(const cuda_internal::GemmPlan& plan, const __nv_bfloat16* x,
                    const __nv_bfloat16* w, float* y);

  const ModelWeights* weights_;
  CudaModelRunnerOptions options_;
  KvCache cache_;
  int32_t num_sms_ = 1;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  cublasLtMatmulDesc_t matmul_desc_ = nullptr;
  cuda_internal::DeviceBuffer lt_workspace_;
  cuda_internal::GemmPlan gemm_qkv_, gemm_o_, gemm_gate_up_, gemm_down_, gemm_lm_head_;

  // Weights.
  cuda_internal::DeviceBuffer embed_;    // [vocab, hidden] bf16
  cuda_internal::DeviceBuffer lm_head_;  // [vocab, hidden] bf16 (unused when tied to embed)
  bool lm_head_tied_ = false;
  cuda_internal::DeviceBuffer final_norm_;  // [hidden] fp32
  cuda_internal::DeviceBuffer inv_freq_;    // [head_dim / 2] fp32
  std::vector<DeviceLayer> layers_;
  cuda_internal::DeviceBuffer k_pool_, v_pool_;  // [num_blocks, block_size, head_dim] bf16

  // Per-step scratch, grown as needed (T = tokens of the step, R = logits rows, I = items).
  cuda_internal::DeviceBuffer x_;        // [T, hidden] fp32 residual stream
  cuda_internal::DeviceBuffer h_;        // [T, hidden] fp32 normed
  cuda_internal::DeviceBuffer xb_;       // [T, max(hidden, q_dim, intermediate)] bf16 GEMM input
  cuda_internal::DeviceBuffer qkv_;      // [T, q | k | v] fp32
  cuda_internal::DeviceBuffer q_;        // [T, q_dim] fp32, q heads packed for attention
  cuda_internal::DeviceBuffer attn_;     // [T, q_dim] fp32
  cuda_internal::DeviceBuffer lse_;      // [T * num_kv_heads, group] fp32
  cuda_internal::DeviceBuffer tmp_;      // [T, hidden] fp32
  cuda_internal::DeviceBuffer gate_up_;  // [T, 2 * intermediate] fp32
  cuda_internal::DeviceBuffer act_;      // [T, intermediate] fp32
  cuda_internal::DeviceBuffer sel_;      // [R, hidden] bf16 rows that get logits
  cuda_internal::DeviceBuffer logits_;   // [R, vocab] fp32
  cuda_internal::DeviceBuffer ws_o_, ws_lse_;  // split-KV workspace (PlanPagedDecode)
  cuda_internal::DeviceBuffer meta_;           // int32 step metadata, layout in Forward()
  cuda_internal::DeviceBuffer slots_;          // [num_layers, T, num_kv_heads] int64 pool rows
  std::vector<int32_t> meta_host_;
  std::vector<int64_t> slots_host_;
};

}  // namespace kvasir
