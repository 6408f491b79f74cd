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
// the device pool. The page tables are mirrored on the device, one row of tables per sequence
// slot (at most max_seqs sequences at once); each step uploads only the block ids added since
// the last one and computes the KV-append slots there, so a step's host work and PCIe traffic
// do not grow with the context. Sequences are created through cache() or kv()->Grow() and
// freed through kv()->Release() (a cache().Free() is noticed too: see KvCache::Generation).
//
// Sampling: entries with SequenceInput::sampling are sampled on the device
// (kernels/sampling/), and only token ids come back; other entries get fp32 logits.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "kvcache/kv_cache.h"
#include "model/local_attention.h"
#include "model/model_runner.h"
#include "model/weights.h"

namespace kvasir {

struct CudaModelRunnerOptions {
  int32_t device = 0;
  int32_t block_size = 16;
  // Blocks of the device KV pool; one block holds block_size tokens of one (layer, kv_head).
  // 0: as many as fit in memory_fraction of the device memory once the weights are loaded and
  // kScratchReserveBytes are set aside for activations.
  int32_t num_blocks = 0;
  double memory_fraction = 0.9;
  // Sequences that can hold KV at once (rows of the device page-table mirror).
  int32_t max_seqs = 256;
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

class CudaModelRunner : public StepRunner {
 public:
  // Device memory kept free for activations and cuBLASLt when the pool is sized automatically.
  static constexpr size_t kScratchReserveBytes = size_t{3} << 30;

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
  absl::StatusOr<ForwardResult> Forward(const std::vector<SequenceInput>& batch) override;

  // The checks Forward() makes before touching any state (no device needed).
  static absl::Status ValidateBatch(const ModelConfig& config, const KvCache& cache,
                                    const std::vector<SequenceInput>& batch);

  KvCache& cache() { return *cache_; }
  const ModelConfig& config() const override { return weights_->config; }
  KvCapacity* kv() override { return capacity_.get(); }
  bool samples_on_device() const override { return true; }

 private:
  struct DeviceLayer {
    cuda_internal::DeviceBuffer attn_norm;  // [hidden] fp32
    cuda_internal::DeviceBuffer wqkv;       // [q_dim + 2 * kv_dim, hidden] bf16
    cuda_internal::DeviceBuffer wo;         // [hidden, q_dim] bf16
    cuda_internal::DeviceBuffer ffn_norm;   // [hidden] fp32
    cuda_internal::DeviceBuffer w_gate_up;  // [2 * intermediate, hidden] bf16
    cuda_internal::DeviceBuffer w_down;     // [hidden, intermediate] bf16
  };

  // The cache's capacity; Release also frees the sequence's slot.
  class SlotCapacity : public CacheCapacity {
   public:
    SlotCapacity(KvCache* cache, CudaModelRunner* runner)
        : CacheCapacity(cache), runner_(runner) {}
    void Release(int64_t seq_id) override {
      CacheCapacity::Release(seq_id);
      runner_->DropSlot(seq_id);
    }

   private:
    CudaModelRunner* runner_;
  };
  struct SlotState {
    int32_t slot = 0;
    uint64_t generation = 0;      // KvCache::Generation when the slot was assigned
    int32_t uploaded_blocks = 0;  // block ids per table already in the device mirror
  };

  CudaModelRunner(const ModelWeights* weights, const CudaModelRunnerOptions& options);
  absl::Status Init();
  void DropSlot(int64_t seq_id);
  // Gives every sequence of the batch a slot and queues the block ids its tables gained since
  // the last upload into pairs_host_ (device index, block id). ResourceExhausted when more
  // than max_seqs sequences hold KV.
  absl::Status SyncTables(const std::vector<SequenceInput>& batch, std::vector<int32_t>* slots);
  absl::Status PrepareGemm(cuda_internal::GemmPlan* plan, int64_t m);
  absl::Status Gemm(const cuda_internal::GemmPlan& plan, const __nv_bfloat16* x,
                    const __nv_bfloat16* w, float* y);

  const ModelWeights* weights_;
  CudaModelRunnerOptions options_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<SlotCapacity> capacity_;
  int32_t max_blocks_ = 0;  // block ids per table in the device mirror
  std::unordered_map<int64_t, SlotState> slot_of_;  // by seq_id
  std::vector<int32_t> free_slots_;
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
  // [max_seqs, num_layers, num_kv_heads, max_blocks_] int32: device mirror of the page tables
  cuda_internal::DeviceBuffer tables_;

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
  cuda_internal::DeviceBuffer pairs_;          // int2 (mirror index, block id) updates
  cuda_internal::DeviceBuffer slots_;          // [num_layers, T, num_kv_heads] int64 pool rows
  cuda_internal::DeviceBuffer sample_params_;  // [R] cuda::SampleRowParams
  cuda_internal::DeviceBuffer sampled_;        // [R] int32 tokens | [R] fp32 logprobs
  std::vector<int32_t> meta_host_;
  std::vector<int32_t> pairs_host_;            // flattened int2
  std::vector<uint8_t> sample_host_;
};

}  // namespace kvasir
