// Batched forward pass of a Llama-family model on one CUDA device, with the same contract as
// ModelRunner (model/model_runner.h): one Forward() advances many sequences by any number of
// tokens (prefill chunks and decode tokens mixed) and returns fp32 logits on the host. The
// layer loop is the one RunLlamaForward (model/llama_forward.h); this runner supplies its CUDA
// ops (CudaStep in the .cc) and, for attention, either its own device KV pool (below) or an
// external AttentionExecutor in host memory (the second Create).
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
//
// CUDA graphs (options.cuda_graphs): a pure-decode step (every entry one token with
// want_logits) is padded up to a bucket batch size (decode_graphs.h) and its device work, from
// the KV-append slots to the sampling, replays a graph captured the first time that (bucket,
// split-KV plan) came up. The graph's buffers are a scratch set of their own (graph_buf_), sized
// for the largest bucket before the first capture, so eager steps of any size never move them;
// the step's inputs are copied into them before cudaGraphLaunch. Padded rows read token 0 at
// position 0, append no K/V (slot -1) and attend over nothing; their logits and samples are
// computed and dropped. Everything else (prefill chunks, mixed steps, batches over
// kMaxGraphBatch, a fixed attention_split) runs eagerly; a failed capture falls back to eager.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <unordered_map>
#include <vector>

#include "attention/attention_executor.h"
#include "attention/hybrid_kv.h"
#include "common/status.h"
#include "kvcache/kv_cache.h"
#include "kvcache/kv_capacity.h"
#include "model/llama_forward.h"
#include "model/model_runner.h"
#include "model/weights.h"
#include "runtime/cuda/decode_graphs.h"
#include "runtime/cuda/device_buffer.h"

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
  // Replay pure-decode steps of up to kMaxGraphBatch sequences from CUDA graphs (off with a
  // fixed attention_split). Off: every step launches its kernels one by one.
  bool cuda_graphs = true;
  // Share the device KV of equal token prefixes between sequences (KvCache prefix caching).
  bool prefix_caching = false;
};

// What Forward() did so far (for tests and benchmarks).
struct CudaRunnerStats {
  int64_t eager_steps = 0;
  int64_t graph_steps = 0;  // pure-decode steps replayed from a graph
  int64_t graphs_captured = 0;
  int64_t capture_failures = 0;
  double capture_ms = 0.0;  // host time spent capturing and instantiating
  // Over the steps that replayed a graph captured before them: the GPU time of the replays
  // (events around cudaGraphLaunch) and the host time of their Forward() calls, end to end.
  double replay_gpu_ms = 0.0;
  double replay_forward_ms = 0.0;
  int64_t timed_replays = 0;
  // Hybrid executor: step rows whose attention also read a far (host) part (their K/V is
  // stored there too).
  int64_t hybrid_far_rows = 0;
};

namespace cuda_internal {

// One cuBLASLt matmul shape y[m, n] = x[m, k] · w[n, k]ᵀ with its chosen algorithm; the
// layouts are rebuilt only when m changes.
struct GemmPlan {
  int64_t m = -1, n = 0, k = 0;
  cublasLtMatrixLayout_t w_layout = nullptr, x_layout = nullptr, y_layout = nullptr;
  cublasLtMatmulAlgo_t algo{};
  void Reset();
};

// The GEMMs of one step: four per layer for the step's rows, the logits for its logits rows.
struct GemmSet {
  GemmPlan qkv, o, gate_up, down, lm_head;
  GemmSet() = default;
  GemmSet(const GemmSet&) = delete;
  GemmSet& operator=(const GemmSet&) = delete;
  ~GemmSet() {
    for (GemmPlan* p : {&qkv, &o, &gate_up, &down, &lm_head}) p->Reset();
  }
};

// Row counts and metadata layout of one step's device work (defined in the .cc).
struct StepShape;

// The device scratch of a step, grown as needed (T = rows of the step, R = logits rows,
// I = decode items).
struct StepBuffers {
  DeviceBuffer x;              // [T, hidden] fp32 residual stream
  DeviceBuffer h;              // [T, hidden] fp32 normed
  DeviceBuffer xb;             // [T, max(hidden, q_dim, intermediate)] bf16 GEMM input
  DeviceBuffer qkv;            // [T, q | k | v] fp32
  DeviceBuffer q;              // [T, q_dim] fp32, q heads packed for attention
  DeviceBuffer attn;           // [T, q_dim] fp32
  DeviceBuffer lse;            // [I, group] fp32
  DeviceBuffer tmp;            // [T, hidden] fp32
  DeviceBuffer gate_up;        // [T, 2 * intermediate] fp32
  DeviceBuffer act;            // [T, intermediate] fp32
  DeviceBuffer sel;            // [R, hidden] bf16 rows that get logits
  DeviceBuffer logits;         // [R, vocab] fp32
  DeviceBuffer ws_o, ws_lse;   // split-KV workspace (PlanPagedDecode)
  DeviceBuffer meta;           // int32 step metadata, layout in StepShape
  DeviceBuffer slots;          // [num_layers, T, num_kv_heads] int64 pool rows
  DeviceBuffer sample_params;  // [R] cuda::SampleRowParams
  DeviceBuffer sampled;        // [R] int32 tokens | [R] fp32 logprobs
  // Grows every buffer to `s`; true when any of them moved (a graph using them is stale).
  absl::StatusOr<bool> Reserve(const StepShape& s, const ModelConfig& c);
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
  // The dense layers on the device, attention wherever `attention` keeps the KV in host
  // memory (attention workers: DistributedAttention, or a LocalAttention over a host KvCache);
  // it must outlive the runner. Per layer the step's q | k | v rows go to the host, the
  // executor appends k, v and attends, and its output comes back (pinned buffers, one
  // synchronization per layer). No device KV pool is allocated and the KV-related options
  // (block_size, num_blocks, max_seqs, attention_split, cuda_graphs) are ignored: every step
  // runs eagerly. Sampling stays on the device.
  static absl::StatusOr<std::unique_ptr<CudaModelRunner>> Create(
      const ModelWeights* weights, const CudaModelRunnerOptions& options,
      AttentionExecutor* attention);
  // The hybrid executor (DistAttention across GPU and host memory, attention/hybrid_kv.h): the
  // device KV pool as above holds each sequence's first tokens while the placement lets it, and
  // `far` (attention workers in host memory; must outlive the runner) the rest of it. Per layer
  // the device attends over the near part (kernels capped at near_end) while the host attends
  // over the far part of the rows that have one; the two are merged by lse on the device. Steps
  // whose sequences are all near run as in the device-pool mode, CUDA graphs included; prefix
  // caching is off.
  static absl::StatusOr<std::unique_ptr<CudaModelRunner>> CreateHybrid(
      const ModelWeights* weights, const CudaModelRunnerOptions& options, AttentionExecutor* far,
      const HybridPlacementOptions& placement);
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

  // The device KV cache; only without an external AttentionExecutor.
  KvCache& cache() { return *cache_; }
  const ModelConfig& config() const override { return weights_->config; }
  KvCapacity* kv() override {
    if (hybrid_ != nullptr) return hybrid_.get();
    return external_ != nullptr ? static_cast<KvCapacity*>(external_) : capacity_.get();
  }
  // The hybrid executor's placement; null in the other modes.
  const HybridKv* hybrid() const { return hybrid_.get(); }
  HybridKv* mutable_hybrid() { return hybrid_.get(); }
  // Zeroes the device KV pool (benchmarks that record KV with cache().Advance instead of
  // computing it); a no-op without one.
  absl::Status ZeroKvPool();
  bool samples_on_device() const override { return true; }
  const CudaRunnerStats& stats() const { return stats_; }

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

  class CudaStep;  // the forward's ops (llama_forward.h) for one step's device work

  CudaModelRunner(const ModelWeights* weights, const CudaModelRunnerOptions& options,
                  AttentionExecutor* external, bool hybrid);
  // All attention through external_ (no device pool).
  bool external_only() const { return external_ != nullptr && !hybrid_mode_; }
  absl::Status Init();
  absl::Status InitKvPool();
  // Attention of layer `layer` through the external executor: qkv to the host, Attend, the
  // output back to the device (synchronizes the stream).
  absl::Status ExternalAttention(int32_t layer, const cuda_internal::StepShape& s,
                                 const float* qkv, float* out);
  // Hybrid: after QKV, queues the copy of the far rows' q | k | v to the host (before the
  // device attention, which it overlaps).
  absl::Status FarFetch(const cuda_internal::StepShape& s, const float* qkv);
  // Hybrid: the far part of the step's far rows on the host, merged into the device's near
  // result `attn` (lse: the near part's [T, heads]) on the device.
  absl::Status FarAttention(int32_t layer, const cuda_internal::StepShape& s,
                            cuda_internal::StepBuffers& buf, float* attn);
  // Hybrid: checks the batch, grows each sequence (near and far parts) and begins the far
  // executor's step over the far rows, in device row order.
  absl::Status BeginHybridStep(const std::vector<SequenceInput>& batch);
  void DropSlot(int64_t seq_id);
  // Gives every sequence of the batch a slot and queues the block ids its tables gained since
  // the last upload into pairs_host_ (device index, block id). ResourceExhausted when more
  // than max_seqs sequences hold KV.
  absl::Status SyncTables(const std::vector<SequenceInput>& batch, std::vector<int32_t>* slots);
  absl::Status PrepareGemm(cuda_internal::GemmPlan* plan, int64_t m);
  absl::Status PrepareGemms(cuda_internal::GemmSet* set, int64_t rows, int64_t logit_rows);
  absl::Status Gemm(const cuda_internal::GemmPlan& plan, const __nv_bfloat16* x,
                    const __nv_bfloat16* w, float* y);
  // Fills meta_host_ in the layout of `s` for the batch's rows (reordered prefill-first) and
  // the graph padding rows after them; returns the longest decode attention range.
  int32_t BuildMeta(const std::vector<SequenceInput>& batch, const std::vector<int32_t>& seq_slot,
                    const std::vector<int32_t>& logit_rows, const cuda_internal::StepShape& s);
  // Uploads meta_host_ and, when s.sample, the sampling parameters of the s.R logits rows
  // (greedy for rows that no entry samples) into `buf`.
  absl::Status UploadInputs(const std::vector<SequenceInput>& batch, const ForwardResult& out,
                            const cuda_internal::StepShape& s, cuda_internal::StepBuffers* buf);
  // The step's device work after its inputs are uploaded: KV-append slots, embedding, layers,
  // logits, sampling. Launches only (capturable): nothing is allocated or synchronized.
  absl::Status EnqueueStep(const cuda_internal::StepShape& s, const cuda_internal::GemmSet& gemm,
                           cuda_internal::StepBuffers& buf);
  struct GraphStep {
    bool ran = false;           // false: the step takes the eager path
    int64_t sample_stride = 0;  // rows of the sampled-token buffer (the bucket)
    int32_t timed_bucket = 0;   // > 0: a replay of an earlier capture, timed by the events
  };
  // A pure-decode step through its graph, captured first if need be (a failed capture runs the
  // padded work eagerly). Not run when the key's captures failed for good; errors are CUDA
  // failures.
  absl::StatusOr<GraphStep> ForwardGraph(const std::vector<SequenceInput>& batch,
                                         const std::vector<int32_t>& seq_slot,
                                         const ForwardResult& out);
  absl::Status ForwardEager(const std::vector<SequenceInput>& batch,
                            const std::vector<int32_t>& seq_slot, const std::vector<int32_t>& rows,
                            bool device_sampling, const ForwardResult& out);
  // Copies the R logits rows and sampled tokens (logprobs sample_stride entries after them) of
  // `buf` to the host as the batch needs them, waits for the step, fills `out`.
  absl::Status FinishStep(const std::vector<SequenceInput>& batch, int64_t R, int64_t sample_stride,
                          const cuda_internal::StepBuffers& buf, ForwardResult* out);

  const ModelWeights* weights_;
  CudaModelRunnerOptions options_;
  AttentionExecutor* external_ = nullptr;  // attention in host memory; null: the device pool
  // Hybrid: the device pool is the near part, external_ the far one, hybrid_ the placement.
  bool hybrid_mode_ = false;
  std::unique_ptr<HybridKv> hybrid_;
  HybridPlacementOptions placement_;
  std::vector<int32_t> near_end_;          // per batch entry of the step (kAllNear: no far part)
  std::vector<int32_t> far_rows_;          // device rows with a far part, ascending
  int64_t step_far_rows_ = 0;              // their number (BeginHybridStep; 0 in other modes)
  cuda_internal::PinnedBuffer far_in_;     // [F, qkv] the far rows' q | k | v on the host
  cuda_internal::PinnedBuffer far_res_;    // [F, q_dim] out | [F, heads] lse
  cuda_internal::DeviceBuffer far_dev_;    // the same on the device
  cudaEvent_t qkv_copied_ = nullptr;
  cuda_internal::PinnedBuffer host_qkv_, host_attn_;  // external attention's staging
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
  cuda_internal::GemmSet gemm_;  // eager steps'

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

  int32_t max_context_ = 0;  // longest attention range: min(max positions, mirror blocks)

  cuda_internal::StepBuffers eager_;   // eager steps' scratch
  cuda_internal::DeviceBuffer pairs_;  // int2 (mirror index, block id) updates

  // Decode graphs: their scratch (moved only by a larger split-KV workspace, which drops every
  // graph), the captured graphs, the bucket sizes.
  cuda_internal::StepBuffers graph_buf_;
  cuda_internal::DecodeGraphCache graphs_;
  std::vector<int32_t> buckets_;
  int64_t graph_ws_o_elems_ = 0, graph_ws_lse_elems_ = 0;  // workspace sized up front
  bool capture_failure_logged_ = false;
  CudaRunnerStats stats_;
  cudaEvent_t replay_start_ = nullptr, replay_end_ = nullptr;
  struct ReplayTiming {
    int64_t replays = 0;
    double gpu_ms = 0.0, forward_ms = 0.0;
  };
  std::map<int32_t, ReplayTiming> replay_timing_;  // by bucket, logged by the destructor

  std::vector<int32_t> meta_host_;
  std::vector<int32_t> pairs_host_;            // flattened int2
  std::vector<uint8_t> sample_host_;
};

}  // namespace kvasir
