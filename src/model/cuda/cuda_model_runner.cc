#include "model/cuda/cuda_model_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <utility>

#include "common/logging.h"
#include "kernels/activation/silu_mul.cuh"
#include "kernels/attention/paged_decode.cuh"
#include "kernels/attention/paged_prefill.cuh"
#include "kernels/embedding/embedding.cuh"
#include "kernels/kv_append/kv_append.cuh"
#include "kernels/norm/rms_norm.cuh"
#include "kernels/rope/rope.cuh"
#include "kernels/sampling/sampling.cuh"
#include "runtime/cuda/cast.cuh"
#include "runtime/cuda/cuda_status.h"
#include "runtime/cuda/step_kernels.cuh"

namespace kvasir {

namespace {

// fp32 -> bf16 bits, round to nearest even (NaN kept quiet), as __float2bfloat16_rn.
uint16_t ToBf16Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

absl::Status UploadBf16(const float* src, int64_t n, cuda_internal::DeviceBuffer* dst) {
  std::vector<uint16_t> bits(n);
  for (int64_t i = 0; i < n; ++i) bits[i] = ToBf16Bits(src[i]);
  RETURN_IF_ERROR(dst->Grow(n * sizeof(uint16_t)));
  CUDA_RETURN_IF_ERROR(
      cudaMemcpy(dst->as<void>(), bits.data(), n * sizeof(uint16_t), cudaMemcpyHostToDevice));
  return absl::OkStatus();
}

absl::Status UploadF32(const float* src, int64_t n, cuda_internal::DeviceBuffer* dst) {
  RETURN_IF_ERROR(dst->Grow(n * sizeof(float)));
  CUDA_RETURN_IF_ERROR(cudaMemcpy(dst->as<void>(), src, n * sizeof(float), cudaMemcpyHostToDevice));
  return absl::OkStatus();
}

constexpr size_t kLtWorkspaceBytes = size_t{32} << 20;

// The device pool's attention kernels (paged decode and prefill) support these head sizes.
absl::Status CheckDeviceHeadDim(int32_t hd) {
  if (hd != 8 && hd != 32 && hd != 64 && hd != 128 && hd != 256) {
    return absl::UnimplementedError(
        absl::StrCat("head_dim ", hd, " is not supported by the CUDA paged decode kernel"));
  }
  return absl::OkStatus();
}

// Every entry of the batch starts where its sequence's stored tokens end (length(seq_id)).
template <typename LengthFn>
absl::Status CheckStartPositions(const std::vector<SequenceInput>& batch, LengthFn length) {
  for (const SequenceInput& s : batch) {
    const int32_t cached = length(s.seq_id);
    if (s.start_pos != cached) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, ": start_pos ",
                                                     s.start_pos, " but ", cached,
                                                     " tokens cached"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

namespace cuda_internal {

// Row counts of one step and the layout of its int32 metadata, uploaded once per step:
//   ids [T] | positions [T] | row_slot [T] | begin [I] | end [I] | item_offset [I]
//   | logit rows [R] | chunk row_start [S + 1] | chunk pos0 [S] | chunk table offset [S, KVH]
//   | chunk kv limit [S] | far rows [F]
// The step's rows are reordered on the device: the rows of the S multi-token entries (prefill
// chunks, P rows, attended by the prefill kernel) first, in batch order, then one row per
// single-token entry (decode rows, attended by the decode kernel), then a graph's padding rows.
// Every other op is row-wise, so only the logit rows need mapping back. Decode items are
// (decode row, kv_head), item i = t * KVH + h over rows P + t. Table offsets point into the
// mirror's layer 0; layer l passes block_ids = tables_ + l * KVH * max_blocks_. The hybrid
// executor adds each chunk's near_end (the prefill kernel's kv_limit) and the F rows that also
// attend over a far part (decode items end at near_end already).
struct StepShape {
  StepShape(int64_t t, int64_t p, int64_t s, int64_t r, int32_t kvh, int64_t f = 0);
  int64_t T, P, S, I, R, F;
  int32_t max_chunk = 0;       // longest prefill chunk
  bool rows_identity = false;  // logits row k is step row k: the logits GEMM reads xb itself
  bool sample = false;         // sample every logits row on the device
  cuda::PagedDecodePlan plan;
  int64_t off_ids, off_pos, off_row_slot, off_begin, off_end, off_item, off_rows;
  int64_t off_chunk_start, off_chunk_pos, off_chunk_table, off_chunk_limit, off_far_rows;
  int64_t meta_len;
};

}  // namespace cuda_internal

namespace cuda_internal {

StepShape::StepShape(int64_t t, int64_t p, int64_t s, int64_t r, int32_t kvh, int64_t f)
    : T(t), P(p), S(s), I((t - p) * kvh), R(r), F(f) {
  off_ids = 0;
  off_pos = T;
  off_row_slot = 2 * T;
  off_begin = 3 * T;
  off_end = off_begin + I;
  off_item = off_end + I;
  off_rows = off_item + I;
  off_chunk_start = off_rows + R;
  off_chunk_pos = off_chunk_start + S + 1;
  off_chunk_table = off_chunk_pos + S;
  off_chunk_limit = off_chunk_table + S * kvh;
  off_far_rows = off_chunk_limit + S;
  meta_len = off_far_rows + F;
}

absl::StatusOr<bool> StepBuffers::Reserve(const StepShape& s, const ModelConfig& c) {
  const int64_t d = c.hidden_size, qd = c.q_dim(), inter = c.intermediate_size;
  const int64_t qkv_dim = qd + 2 * c.kv_dim(), xb_cols = std::max({d, qd, inter});
  const int64_t T = s.T, R = std::max<int64_t>(s.R, 1), f = sizeof(float);
  const int64_t bf = sizeof(__nv_bfloat16);
  const struct {
    DeviceBuffer* buf;
    int64_t bytes;
  } want[] = {
      {&x, T * d * f},
      {&h, T * d * f},
      {&xb, T * xb_cols * bf},
      {&qkv, T * qkv_dim * f},
      {&q, T * qd * f},
      {&attn, T * qd * f},
      {&lse, std::max<int64_t>(T, 1) * c.num_heads * f},
      {&tmp, T * d * f},
      {&gate_up, T * 2 * inter * f},
      {&act, T * inter * f},
      {&sel, R * d * bf},
      {&logits, R * c.vocab_size * f},
      {&ws_o, std::max<int64_t>(s.plan.workspace_o_elems, 1) * f},
      {&ws_lse, std::max<int64_t>(s.plan.workspace_lse_elems, 1) * f},
      {&meta, s.meta_len * int64_t{sizeof(int32_t)}},
      {&slots, int64_t{c.num_layers} * T * c.num_kv_heads * int64_t{sizeof(int64_t)}},
      {&sample_params, R * int64_t{sizeof(cuda::SampleRowParams)}},
      {&sampled, R * int64_t{sizeof(int32_t) + sizeof(float)}},
  };
  bool moved = false;
  for (const auto& w : want) {
    const void* before = w.buf->as<void>();
    RETURN_IF_ERROR(w.buf->Grow(static_cast<size_t>(w.bytes)));
    moved |= w.buf->as<void>() != before;
  }
  return moved;
}

void GemmPlan::Reset() {
  if (w_layout) cublasLtMatrixLayoutDestroy(w_layout);
  if (x_layout) cublasLtMatrixLayoutDestroy(x_layout);
  if (y_layout) cublasLtMatrixLayoutDestroy(y_layout);
  w_layout = x_layout = y_layout = nullptr;
  m = -1;
}

}  // namespace cuda_internal

CudaModelRunner::CudaModelRunner(const ModelWeights* weights, const CudaModelRunnerOptions& options,
                                 AttentionExecutor* external, bool hybrid)
    : weights_(weights), options_(options), external_(external), hybrid_mode_(hybrid) {}

CudaModelRunner::~CudaModelRunner() {
  for (const auto& [bucket, t] : replay_timing_) {
    spdlog::info(
        "CUDA graphs, {}-sequence decode steps: {} replays, {:.3f} ms on the GPU, {:.3f} ms per "
        "Forward()",
        bucket, t.replays, t.gpu_ms / t.replays, t.forward_ms / t.replays);
  }
  if (replay_start_) (void)cudaEventDestroy(replay_start_);
  if (replay_end_) (void)cudaEventDestroy(replay_end_);
  if (qkv_copied_) (void)cudaEventDestroy(qkv_copied_);
  if (matmul_desc_) cublasLtMatmulDescDestroy(matmul_desc_);
  if (lt_) cublasLtDestroy(lt_);
  if (stream_) {
    (void)cudaStreamSynchronize(stream_);
    (void)cudaStreamDestroy(stream_);
  }
}

absl::StatusOr<std::unique_ptr<CudaModelRunner>> CudaModelRunner::Create(
    const ModelWeights* weights, const CudaModelRunnerOptions& options) {
  return Create(weights, options, nullptr);
}

absl::StatusOr<std::unique_ptr<CudaModelRunner>> CudaModelRunner::CreateHybrid(
    const ModelWeights* weights, const CudaModelRunnerOptions& options, AttentionExecutor* far,
    const HybridPlacementOptions& placement) {
  if (far == nullptr) return absl::InvalidArgumentError("the hybrid executor needs a far part");
  if (placement.sink_tokens < 1 || placement.max_near_tokens < 0) {
    return absl::InvalidArgumentError("bad hybrid placement options");
  }
  RETURN_IF_ERROR(CheckDeviceHeadDim(weights->config.head_dim));
  CudaModelRunnerOptions o = options;
  o.prefix_caching = false;
  ASSIGN_OR_RETURN(std::unique_ptr<CudaModelRunner> r, Create(weights, o, far));
  // Create built the external-only runner's state: add the device pool and the placement.
  r->hybrid_mode_ = true;
  r->placement_ = placement;
  RETURN_IF_ERROR(r->InitKvPool());
  if (r->placement_.reserve_blocks < 0) {
    // Room for the first blocks of 8 more sequences, at most 1/16 of the pool.
    const ModelConfig& c = weights->config;
    r->placement_.reserve_blocks = std::min<int64_t>(
        r->cache_->pool().num_blocks() / 16, int64_t{8} * c.num_layers * c.num_kv_heads);
  }
  r->hybrid_ =
      std::make_unique<HybridKv>(r->cache_.get(), r->capacity_.get(), far, r->placement_);
  CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&r->qkv_copied_, cudaEventDisableTiming));
  return r;
}

absl::StatusOr<std::unique_ptr<CudaModelRunner>> CudaModelRunner::Create(
    const ModelWeights* weights, const CudaModelRunnerOptions& options,
    AttentionExecutor* attention) {
  const ModelConfig& c = weights->config;
  RETURN_IF_ERROR(c.Validate());
  if (weights->embed == nullptr || weights->lm_head == nullptr ||
      static_cast<int32_t>(weights->layers.size()) != c.num_layers) {
    return absl::InvalidArgumentError("CudaModelRunner needs loaded weights (not config-only)");
  }
  if (options.block_size < 1 || options.num_blocks < 0 || options.attention_split < 0 ||
      options.max_seqs < 1 || !(options.memory_fraction > 0.0 && options.memory_fraction <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad KV pool: ", options.num_blocks, " blocks of ", options.block_size, " tokens, ",
        options.max_seqs, " sequences, memory fraction ", options.memory_fraction));
  }
  if (attention == nullptr) RETURN_IF_ERROR(CheckDeviceHeadDim(c.head_dim));
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count <= options.device) {
    (void)cudaGetLastError();
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device ", options.device, " (", count, " found)"));
  }
  std::unique_ptr<CudaModelRunner> r(new CudaModelRunner(weights, options, attention, false));
  RETURN_IF_ERROR(r->Init());
  return r;
}

absl::Status CudaModelRunner::Init() {
  const ModelConfig& c = weights_->config;
  const int64_t d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t inter = c.intermediate_size;
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, options_.device));
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&lt_));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&matmul_desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans = CUBLAS_OP_T, no_trans = CUBLAS_OP_N;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(matmul_desc_, CUBLASLT_MATMUL_DESC_TRANSA,
                                                        &trans, sizeof(trans)));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(matmul_desc_, CUBLASLT_MATMUL_DESC_TRANSB,
                                                        &no_trans, sizeof(no_trans)));
  RETURN_IF_ERROR(lt_workspace_.Grow(kLtWorkspaceBytes));

  gemm_.qkv.n = qd + 2 * kvd;
  gemm_.qkv.k = d;
  gemm_.o.n = d;
  gemm_.o.k = qd;
  gemm_.gate_up.n = 2 * inter;
  gemm_.gate_up.k = d;
  gemm_.down.n = d;
  gemm_.down.k = inter;
  gemm_.lm_head.n = c.vocab_size;
  gemm_.lm_head.k = d;

  RETURN_IF_ERROR(UploadBf16(weights_->embed, int64_t{c.vocab_size} * d, &embed_));
  lm_head_tied_ = weights_->lm_head == weights_->embed;
  if (!lm_head_tied_) {
    RETURN_IF_ERROR(UploadBf16(weights_->lm_head, int64_t{c.vocab_size} * d, &lm_head_));
  }
  RETURN_IF_ERROR(UploadF32(weights_->final_norm, d, &final_norm_));
  const std::vector<double> inv = RopeInvFrequencies(c);
  const std::vector<float> inv_f(inv.begin(), inv.end());
  RETURN_IF_ERROR(UploadF32(inv_f.data(), static_cast<int64_t>(inv_f.size()), &inv_freq_));
  layers_ = std::vector<DeviceLayer>(c.num_layers);
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = weights_->layers[l];
    DeviceLayer& dl = layers_[l];
    RETURN_IF_ERROR(UploadF32(w.attn_norm, d, &dl.attn_norm));
    RETURN_IF_ERROR(UploadBf16(w.wqkv, (qd + 2 * kvd) * d, &dl.wqkv));
    RETURN_IF_ERROR(UploadBf16(w.wo, d * qd, &dl.wo));
    RETURN_IF_ERROR(UploadF32(w.ffn_norm, d, &dl.ffn_norm));
    RETURN_IF_ERROR(UploadBf16(w.w_gate_up, 2 * inter * d, &dl.w_gate_up));
    RETURN_IF_ERROR(UploadBf16(w.w_down, d * inter, &dl.w_down));
  }
  return external_ != nullptr ? absl::OkStatus() : InitKvPool();
}

absl::Status CudaModelRunner::InitKvPool() {
  const ModelConfig& c = weights_->config;
  // KV pool: K and V of one block, plus its share of the page-table mirror.
  const int64_t tables_per_seq = int64_t{c.num_layers} * c.num_kv_heads;
  const int64_t ctx_blocks =
      (int64_t{c.max_position_embeddings} + options_.block_size - 1) / options_.block_size;
  const int64_t block_bytes =
      int64_t{2} * options_.block_size * c.head_dim * int64_t{sizeof(__nv_bfloat16)};
  int64_t num_blocks = options_.num_blocks;
  if (num_blocks == 0) {
    size_t free_b = 0, total_b = 0;
    CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_b, &total_b));
    const double budget = options_.memory_fraction * static_cast<double>(total_b) -
                          static_cast<double>(total_b - free_b) - kScratchReserveBytes -
                          static_cast<double>(options_.max_seqs) * tables_per_seq * ctx_blocks *
                              sizeof(int32_t);
    num_blocks = std::min<int64_t>(static_cast<int64_t>(budget / block_bytes), INT32_MAX);
    if (num_blocks < tables_per_seq) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "no device memory left for the KV cache: ", free_b >> 20, " MiB free of ",
          total_b >> 20, " MiB after the weights, ", kScratchReserveBytes >> 20,
          " MiB kept for activations"));
    }
  }
  max_blocks_ = static_cast<int32_t>(std::min(ctx_blocks, num_blocks / tables_per_seq));
  const int64_t mirror = int64_t{options_.max_seqs} * tables_per_seq * std::max(max_blocks_, 1);
  if (mirror > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "page-table mirror of ", mirror, " entries does not fit int32 offsets: lower max_seqs"));
  }
  KvCacheConfig kc = KvCacheConfigFor(c, options_.block_size, static_cast<int32_t>(num_blocks),
                                      /*host_storage=*/false);
  kc.prefix_caching = options_.prefix_caching;
  cache_ = std::make_unique<KvCache>(kc);
  capacity_ = std::make_unique<SlotCapacity>(cache_.get(), this);
  for (int32_t i = options_.max_seqs - 1; i >= 0; --i) free_slots_.push_back(i);
  RETURN_IF_ERROR(tables_.Grow(std::max<int64_t>(mirror, 1) * sizeof(int32_t)));
  CUDA_RETURN_IF_ERROR(cudaMemset(tables_.as<void>(), 0, std::max<int64_t>(mirror, 1) * sizeof(int32_t)));
  const size_t pool_bytes = static_cast<size_t>(num_blocks) * block_bytes / 2;
  RETURN_IF_ERROR(k_pool_.Grow(pool_bytes));
  RETURN_IF_ERROR(v_pool_.Grow(pool_bytes));

  max_context_ = static_cast<int32_t>(
      std::min<int64_t>(c.max_position_embeddings, int64_t{max_blocks_} * options_.block_size));
  if (options_.cuda_graphs && options_.attention_split == 0 && max_blocks_ > 0) {
    CUDA_RETURN_IF_ERROR(cudaEventCreate(&replay_start_));
    CUDA_RETURN_IF_ERROR(cudaEventCreate(&replay_end_));
    buckets_ = cuda_internal::DecodeGraphBuckets(options_.max_seqs);
    // The graphs' split-KV workspace is sized up front for every bucket's longest-context plan,
    // the largest a bucket's plan gets, so that it is not moved (dropping every graph) later.
    for (int32_t b : buckets_) {
      const cuda::PagedDecodePlan plan = cuda::PlanPagedDecode(b * c.num_kv_heads, c.group_size(),
                                                               c.head_dim, max_context_, num_sms_);
      graph_ws_o_elems_ = std::max(graph_ws_o_elems_, plan.workspace_o_elems);
      graph_ws_lse_elems_ = std::max(graph_ws_lse_elems_, plan.workspace_lse_elems);
    }
  }
  return absl::OkStatus();
}

absl::Status CudaModelRunner::ZeroKvPool() {
  for (cuda_internal::DeviceBuffer* b : {&k_pool_, &v_pool_}) {
    if (b->bytes() > 0) CUDA_RETURN_IF_ERROR(cudaMemset(b->as<void>(), 0, b->bytes()));
  }
  return absl::OkStatus();
}

void CudaModelRunner::DropSlot(int64_t seq_id) {
  auto it = slot_of_.find(seq_id);
  if (it == slot_of_.end()) return;
  free_slots_.push_back(it->second.slot);
  slot_of_.erase(it);
}

absl::Status CudaModelRunner::SyncTables(const std::vector<SequenceInput>& batch,
                                         std::vector<int32_t>* slots) {
  const ModelConfig& c = weights_->config;
  const int32_t L = c.num_layers, KVH = c.num_kv_heads;
  pairs_host_.clear();
  slots->resize(batch.size());
  for (size_t b = 0; b < batch.size(); ++b) {
    const int64_t id = batch[b].seq_id;
    const uint64_t gen = cache_->Generation(id);
    auto it = slot_of_.find(id);
    if (it != slot_of_.end() && it->second.generation != gen) {
      it->second = SlotState{it->second.slot, gen, 0};  // freed and created again
    }
    if (it == slot_of_.end()) {
      if (free_slots_.empty()) {
        // Sequences freed through cache() directly still hold their slot: take those back.
        for (auto s = slot_of_.begin(); s != slot_of_.end();) {
          if (cache_->Generation(s->first) != s->second.generation) {
            free_slots_.push_back(s->second.slot);
            s = slot_of_.erase(s);
          } else {
            ++s;
          }
        }
      }
      if (free_slots_.empty()) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "the CUDA runner holds KV for at most ", options_.max_seqs, " sequences"));
      }
      it = slot_of_.emplace(id, SlotState{free_slots_.back(), gen, 0}).first;
      free_slots_.pop_back();
    }
    SlotState& st = it->second;
    (*slots)[b] = st.slot;
    const int32_t nb = static_cast<int32_t>(cache_->table(id, 0, 0).blocks.size());
    if (nb > max_blocks_) {
      return absl::InternalError(absl::StrCat("sequence ", id, " has ", nb,
                                              " blocks per table, the mirror holds ", max_blocks_));
    }
    // Most steps add no block (one in block_size decode steps does): then the L * KVH table
    // look-ups, a hash find each, are skipped (at 256 sequences they cost ~2 ms of host time).
    for (int32_t l = 0; l < L && nb > st.uploaded_blocks; ++l) {
      for (int32_t h = 0; h < KVH; ++h) {
        const std::vector<int32_t>& blocks = cache_->table(id, l, h).blocks;
        const int64_t base = ((int64_t{st.slot} * L + l) * KVH + h) * max_blocks_;
        for (int32_t i = st.uploaded_blocks; i < nb; ++i) {
          pairs_host_.push_back(static_cast<int32_t>(base + i));
          pairs_host_.push_back(blocks[i]);
        }
      }
    }
    st.uploaded_blocks = nb;
  }
  return absl::OkStatus();
}

absl::Status CudaModelRunner::PrepareGemm(cuda_internal::GemmPlan* p, int64_t m) {
  if (p->m == m) return absl::OkStatus();
  p->Reset();
  // Column-major view of the row-major product: yᵀ[n, m] = w[n, k] · xᵀ[k, m], where the
  // row-major w[n, k] is the column-major [k, n] matrix taken transposed (TRANSA = T).
  CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&p->w_layout, CUDA_R_16BF, p->k, p->n, p->k));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&p->x_layout, CUDA_R_16BF, p->k, m, p->k));
  CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&p->y_layout, CUDA_R_32F, p->n, m, p->n));
  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  const size_t ws = kLtWorkspaceBytes;
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulAlgoGetHeuristic(lt_, matmul_desc_, p->w_layout, p->x_layout, p->y_layout,
                                        p->y_layout, pref, 1, &result, &found);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  CUBLAS_RETURN_IF_ERROR(st);
  if (found == 0) {
    return absl::InternalError(
        absl::StrCat("cuBLASLt has no algorithm for a bf16 GEMM m=", m, " n=", p->n, " k=", p->k));
  }
  p->algo = result.algo;
  p->m = m;
  return absl::OkStatus();
}

absl::Status CudaModelRunner::PrepareGemms(cuda_internal::GemmSet* set, int64_t rows,
                                           int64_t logit_rows) {
  for (cuda_internal::GemmPlan* p : {&set->qkv, &set->o, &set->gate_up, &set->down}) {
    RETURN_IF_ERROR(PrepareGemm(p, rows));
  }
  if (logit_rows > 0) RETURN_IF_ERROR(PrepareGemm(&set->lm_head, logit_rows));
  return absl::OkStatus();
}

absl::Status CudaModelRunner::Gemm(const cuda_internal::GemmPlan& p, const __nv_bfloat16* x,
                                   const __nv_bfloat16* w, float* y) {
  const float alpha = 1.0f, beta = 0.0f;
  CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(lt_, matmul_desc_, &alpha, w, p.w_layout, x, p.x_layout,
                                        &beta, y, p.y_layout, y, p.y_layout, &p.algo,
                                        lt_workspace_.as<void>(), kLtWorkspaceBytes, stream_));
  return absl::OkStatus();
}

absl::Status CudaModelRunner::ValidateBatch(const ModelConfig& c, const KvCache& cache,
                                            const std::vector<SequenceInput>& batch) {
  RETURN_IF_ERROR(
      ValidateSequenceInputs(c, batch, [&](int64_t id) { return cache.Contains(id); }));
  RETURN_IF_ERROR(
      CheckStartPositions(batch, [&](int64_t id) { return cache.Length(id); }));
  int64_t blocks_needed = 0;
  for (const SequenceInput& s : batch) {
    blocks_needed += cache.BlocksNeeded(s.seq_id, static_cast<int32_t>(s.tokens.size()));
  }
  if (blocks_needed > cache.pool().num_free()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: the step needs ",
                                                     blocks_needed, " blocks, ",
                                                     cache.pool().num_free(), " free"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ForwardResult> CudaModelRunner::Forward(const std::vector<SequenceInput>& batch) {
  const auto start = std::chrono::steady_clock::now();
  const ModelConfig& c = weights_->config;
  if (hybrid_mode_) {
    RETURN_IF_ERROR(ValidateSequenceInputs(
        c, batch, [&](int64_t id) { return hybrid_->Contains(id); }));
  } else if (external_ != nullptr) {
    RETURN_IF_ERROR(ValidateSequenceInputs(
        c, batch, [&](int64_t id) { return external_->Contains(id); }));
  } else {
    RETURN_IF_ERROR(ValidateBatch(c, *cache_, batch));
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  int64_t T = 0;
  bool pure_decode = true;  // every entry one token with a logits row: a graph can run it
  for (const SequenceInput& s : batch) {
    T += static_cast<int64_t>(s.tokens.size());
    pure_decode &= s.tokens.size() == 1 && s.want_logits;
  }
  if (T == 0) {
    ForwardResult empty;
    empty.vocab_size = c.vocab_size;
    return empty;
  }
  step_far_rows_ = 0;
  if (hybrid_mode_) {
    RETURN_IF_ERROR(BeginHybridStep(batch));
  } else if (external_ != nullptr) {
    std::vector<AttentionStepSeq> step(batch.size());
    for (size_t b = 0; b < batch.size(); ++b) {
      step[b] = {batch[b].seq_id, batch[b].start_pos,
                 static_cast<int32_t>(batch[b].tokens.size()), batch[b].kv_policy,
                 batch[b].prompt_len};
    }
    RETURN_IF_ERROR(external_->BeginStep(step));
  } else {
    for (const SequenceInput& s : batch) {
      RETURN_IF_ERROR(cache_->Reserve(s.seq_id, static_cast<int32_t>(s.tokens.size())));
    }
  }

  // ---- Rows that get logits.
  ForwardResult out;
  const std::vector<int32_t> rows = SelectLogitRows(batch, c.vocab_size, &out);
  const int64_t R = static_cast<int64_t>(rows.size());
  bool device_sampling = false;
  for (const SequenceInput& s : batch) {
    device_sampling |= s.runner_samples();
  }

  std::vector<int32_t> seq_slot(batch.size(), 0);
  pairs_host_.clear();
  if (!external_only()) RETURN_IF_ERROR(SyncTables(batch, &seq_slot));
  // Mirror updates (never in a graph: their number changes from step to step).
  if (!pairs_host_.empty()) {
    RETURN_IF_ERROR(pairs_.Grow(pairs_host_.size() * sizeof(int32_t)));
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(pairs_.as<void>(), pairs_host_.data(),
                                         pairs_host_.size() * sizeof(int32_t),
                                         cudaMemcpyHostToDevice, stream_));
    CUDA_RETURN_IF_ERROR(cuda::InvokeScatterInt32(pairs_.as<int2>(),
                                                  static_cast<int64_t>(pairs_host_.size() / 2),
                                                  tables_.as<int32_t>(), stream_));
  }

  GraphStep graph;
  if (pure_decode && step_far_rows_ == 0 && !buckets_.empty() &&
      static_cast<int64_t>(batch.size()) <= buckets_.back()) {
    ASSIGN_OR_RETURN(graph, ForwardGraph(batch, seq_slot, out));
  }
  if (!graph.ran) {
    RETURN_IF_ERROR(ForwardEager(batch, seq_slot, rows, device_sampling, out));
    ++stats_.eager_steps;
  }
  // Sampled tokens, then their logprobs this many rows later.
  const int64_t sample_stride = graph.ran ? graph.sample_stride : R;
  RETURN_IF_ERROR(FinishStep(batch, R, sample_stride, graph.ran ? graph_buf_ : eager_, &out));
  if (hybrid_mode_) {
    for (size_t b = 0; b < batch.size(); ++b) {
      const int32_t n = static_cast<int32_t>(batch[b].tokens.size());
      const int32_t near = HybridKv::NearPart(near_end_[b], batch[b].start_pos, n);
      if (near > 0) cache_->Advance(batch[b].seq_id, near);
      hybrid_->Advance(batch[b].seq_id, n);
    }
  } else if (external_ == nullptr) {
    for (const SequenceInput& s : batch) {
      cache_->Advance(s.seq_id, static_cast<int32_t>(s.tokens.size()));
    }
  }
  if (graph.timed_bucket > 0) {
    float gpu_ms = 0.0f;
    CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&gpu_ms, replay_start_, replay_end_));
    const double forward_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    ReplayTiming& t = replay_timing_[graph.timed_bucket];
    ++t.replays;
    t.gpu_ms += gpu_ms;
    t.forward_ms += forward_ms;
    ++stats_.timed_replays;
    stats_.replay_gpu_ms += gpu_ms;
    stats_.replay_forward_ms += forward_ms;
  }
  return out;
}

absl::Status CudaModelRunner::BeginHybridStep(const std::vector<SequenceInput>& batch) {
  RETURN_IF_ERROR(
      CheckStartPositions(batch, [&](int64_t id) { return hybrid_->Length(id); }));
  // Room for the step (the scheduler grew every sequence already; Grow again is a no-op then).
  for (const SequenceInput& in : batch) {
    RETURN_IF_ERROR(hybrid_->Grow(in.seq_id, static_cast<int32_t>(in.tokens.size())));
  }
  near_end_.resize(batch.size());
  step_far_rows_ = 0;
  // The far executor's step, in device row order: the prefill chunks first, then decode rows.
  std::vector<AttentionStepSeq> far;
  for (const bool chunks : {true, false}) {
    for (size_t b = 0; b < batch.size(); ++b) {
      const SequenceInput& in = batch[b];
      const int32_t n = static_cast<int32_t>(in.tokens.size());
      if ((n > 1) != chunks) continue;
      const int32_t end = hybrid_->NearEnd(in.seq_id);
      const int32_t near = HybridKv::NearPart(end, in.start_pos, n);
      if (near == n) {  // every row before near_end: causal over the near part alone
        near_end_[b] = HybridKv::kAllNear;
        continue;
      }
      near_end_[b] = end;
      // Far rows: positions [start + near, start + n), at far positions from start + near - end.
      far.push_back({in.seq_id, in.start_pos + near - end, n - near, nullptr, 0});
      step_far_rows_ += n - near;
    }
  }
  if (far.empty()) return absl::OkStatus();
  return external_->BeginStep(far);
}

int32_t CudaModelRunner::BuildMeta(const std::vector<SequenceInput>& batch,
                                   const std::vector<int32_t>& seq_slot,
                                   const std::vector<int32_t>& logit_rows,
                                   const cuda_internal::StepShape& s) {
  const ModelConfig& c = weights_->config;
  const int32_t KVH = c.num_kv_heads;
  const int64_t layer_stride = int64_t{KVH} * max_blocks_;
  const int64_t seq_stride = int64_t{c.num_layers} * layer_stride;
  meta_host_.assign(s.meta_len, 0);
  far_rows_.clear();
  std::vector<int32_t> new_row;  // step row (batch order) -> device row
  new_row.reserve(s.T);
  int32_t max_kv_len = 0;
  int64_t chunk = 0, next_prefill = 0, next_decode = s.P;
  meta_host_[s.off_chunk_start] = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    const SequenceInput& in = batch[b];
    // With external attention the rows stay in batch order, as the executor expects them.
    const bool prefill = !external_only() && in.tokens.size() > 1;
    const int64_t seq_base = int64_t{seq_slot[b]} * seq_stride;
    // Hybrid: positions from near_end on are far (no device KV append; the device attends over
    // [0, near_end) of them and the host over the rest).
    const int32_t near_end = hybrid_mode_ ? near_end_[b] : HybridKv::kAllNear;
    if (prefill) {
      meta_host_[s.off_chunk_pos + chunk] = in.start_pos;
      meta_host_[s.off_chunk_limit + chunk] = near_end;
      for (int32_t h = 0; h < KVH; ++h) {
        meta_host_[s.off_chunk_table + chunk * KVH + h] =
            static_cast<int32_t>(seq_base + int64_t{h} * max_blocks_);
      }
    }
    for (size_t i = 0; i < in.tokens.size(); ++i) {
      const int32_t pos = in.start_pos + static_cast<int32_t>(i);
      const int64_t row = prefill ? next_prefill++ : next_decode++;
      new_row.push_back(static_cast<int32_t>(row));
      meta_host_[s.off_ids + row] = in.tokens[i];
      meta_host_[s.off_pos + row] = pos;
      meta_host_[s.off_row_slot + row] = pos < near_end ? seq_slot[b] : -1;
      if (pos >= near_end) far_rows_.push_back(static_cast<int32_t>(row));
      if (prefill) continue;
      const int32_t end = std::min(pos + 1, near_end);
      for (int32_t h = 0; h < KVH; ++h) {
        const int64_t item = (row - s.P) * KVH + h;
        meta_host_[s.off_begin + item] = 0;
        meta_host_[s.off_end + item] = end;
        meta_host_[s.off_item + item] = static_cast<int32_t>(seq_base + int64_t{h} * max_blocks_);
      }
      max_kv_len = std::max(max_kv_len, end);
    }
    if (prefill) {
      ++chunk;
      meta_host_[s.off_chunk_start + chunk] = static_cast<int32_t>(next_prefill);
    }
  }
  // Far rows in device row order, the far executor's step order (BeginHybridStep).
  std::sort(far_rows_.begin(), far_rows_.end());
  KVASIR_CHECK(static_cast<int64_t>(far_rows_.size()) == s.F);
  std::copy(far_rows_.begin(), far_rows_.end(), meta_host_.begin() + s.off_far_rows);
  // Graph padding rows: token 0 at position 0, no K/V append (slot -1), empty attention ranges
  // (begin = end = 0, zero from the fill), and their own logits rows.
  for (int64_t row = next_decode; row < s.T; ++row) meta_host_[s.off_row_slot + row] = -1;
  const int64_t real_rows = static_cast<int64_t>(logit_rows.size());
  for (int64_t k = 0; k < s.R; ++k) {
    meta_host_[s.off_rows + k] = k < real_rows ? new_row[logit_rows[k]] : static_cast<int32_t>(k);
  }
  return max_kv_len;
}

absl::Status CudaModelRunner::UploadInputs(const std::vector<SequenceInput>& batch,
                                           const ForwardResult& out,
                                           const cuda_internal::StepShape& s,
                                           cuda_internal::StepBuffers* buf) {
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(buf->meta.as<void>(), meta_host_.data(),
                                       s.meta_len * sizeof(int32_t), cudaMemcpyHostToDevice,
                                       stream_));
  if (!s.sample || s.R == 0) return absl::OkStatus();
  std::vector<cuda::SampleRowParams> params(s.R);  // greedy for rows nobody reads
  for (size_t b = 0; b < batch.size(); ++b) {
    const SequenceInput& in = batch[b];
    if (!in.runner_samples()) continue;
    cuda::SampleRowParams& sp = params[out.first_row[b] + out.num_rows[b] - 1];
    sp.temperature = in.sampling->temperature;
    sp.top_k = in.sampling->top_k > 0 ? in.sampling->top_k : -1;
    sp.top_p = in.sampling->top_p;
    sp.min_p = in.sampling->min_p;
    sp.seed = in.sampling->seed;
    sp.step = in.sampling->step;
  }
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(buf->sample_params.as<void>(), params.data(),
                                       s.R * sizeof(cuda::SampleRowParams), cudaMemcpyHostToDevice,
                                       stream_));
  return absl::OkStatus();
}

absl::StatusOr<CudaModelRunner::GraphStep> CudaModelRunner::ForwardGraph(
    const std::vector<SequenceInput>& batch, const std::vector<int32_t>& seq_slot,
    const ForwardResult& out) {
  const ModelConfig& c = weights_->config;
  const int32_t KVH = c.num_kv_heads;
  const int32_t bucket =
      *std::lower_bound(buckets_.begin(), buckets_.end(), static_cast<int32_t>(batch.size()));
  cuda_internal::StepShape s(bucket, 0, 0, bucket, KVH);
  s.rows_identity = true;
  s.sample = true;
  std::vector<int32_t> rows(batch.size());
  for (size_t b = 0; b < rows.size(); ++b) rows[b] = static_cast<int32_t>(b);
  const int32_t max_kv_len = BuildMeta(batch, seq_slot, rows, s);
  s.plan = cuda::PlanPagedDecode(static_cast<int32_t>(s.I), c.group_size(), c.head_dim,
                                 cuda_internal::GraphPlanKvLen(max_kv_len, max_context_), num_sms_);

  // The graphs' scratch holds the largest bucket from the first graph step on; only a split-KV
  // workspace larger than Init foresaw moves it, and then every graph is captured again.
  cuda_internal::StepShape cap(buckets_.back(), 0, 0, buckets_.back(), KVH);
  cap.plan.workspace_o_elems = std::max(graph_ws_o_elems_, s.plan.workspace_o_elems);
  cap.plan.workspace_lse_elems = std::max(graph_ws_lse_elems_, s.plan.workspace_lse_elems);
  ASSIGN_OR_RETURN(const bool moved, graph_buf_.Reserve(cap, c));
  if (moved) graphs_.Clear();
  graph_ws_o_elems_ = cap.plan.workspace_o_elems;
  graph_ws_lse_elems_ = cap.plan.workspace_lse_elems;

  const cuda_internal::DecodeGraphKey key{bucket, s.plan.num_splits, s.plan.kv_chunk_size};
  GraphStep step;
  step.ran = true;
  step.sample_stride = s.R;
  cudaGraphExec_t exec = graphs_.Find(key);
  if (exec != nullptr) {
    step.timed_bucket = bucket;
  } else {
    if (!graphs_.MayCapture(key)) return GraphStep{};
    // cuBLASLt picks its algorithms here: its heuristic must not run during the capture.
    cuda_internal::GemmSet gemm;
    for (auto [dst, src] :
         {std::pair{&gemm.qkv, &gemm_.qkv}, std::pair{&gemm.o, &gemm_.o},
          std::pair{&gemm.gate_up, &gemm_.gate_up}, std::pair{&gemm.down, &gemm_.down},
          std::pair{&gemm.lm_head, &gemm_.lm_head}}) {
      dst->n = src->n;
      dst->k = src->k;
    }
    RETURN_IF_ERROR(PrepareGemms(&gemm, bucket, bucket));
    const auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<cudaGraphExec_t> captured =
        graphs_.Capture(key, stream_, [&] { return EnqueueStep(s, gemm, graph_buf_); });
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    stats_.capture_ms += ms;
    if (!captured.ok()) {
      ++stats_.capture_failures;
      if (!capture_failure_logged_) {
        capture_failure_logged_ = true;
        spdlog::warn(
            "CUDA graph capture of a {}-sequence decode step failed, running it eagerly: {}",
            bucket, captured.status().ToString());
      }
      // The same padded work, launched one kernel at a time: this step's result, and the
      // one-time set-up (kernel attributes, library state) that a later capture may need.
      RETURN_IF_ERROR(UploadInputs(batch, out, s, &graph_buf_));
      RETURN_IF_ERROR(EnqueueStep(s, gemm, graph_buf_));
      ++stats_.eager_steps;
      return step;
    }
    exec = *captured;
    ++stats_.graphs_captured;
    spdlog::info("CUDA graph of a {}-sequence decode step (split-KV {} x {}) captured in {:.2f} ms",
                 bucket, s.plan.num_splits, s.plan.kv_chunk_size, ms);
  }
  RETURN_IF_ERROR(UploadInputs(batch, out, s, &graph_buf_));
  if (step.timed_bucket > 0) CUDA_RETURN_IF_ERROR(cudaEventRecord(replay_start_, stream_));
  CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec, stream_));
  if (step.timed_bucket > 0) CUDA_RETURN_IF_ERROR(cudaEventRecord(replay_end_, stream_));
  ++stats_.graph_steps;
  return step;
}

absl::Status CudaModelRunner::ForwardEager(const std::vector<SequenceInput>& batch,
                                           const std::vector<int32_t>& seq_slot,
                                           const std::vector<int32_t>& rows, bool device_sampling,
                                           const ForwardResult& out) {
  const ModelConfig& c = weights_->config;
  int64_t T = 0, S = 0, P = 0;
  int32_t max_chunk = 0;
  for (const SequenceInput& in : batch) {
    T += static_cast<int64_t>(in.tokens.size());
    if (in.tokens.size() > 1 && !external_only()) {
      ++S;
      P += static_cast<int64_t>(in.tokens.size());
      max_chunk = std::max(max_chunk, static_cast<int32_t>(in.tokens.size()));
    }
  }
  const int64_t R = static_cast<int64_t>(rows.size());
  cuda_internal::StepShape s(T, P, S, R, c.num_kv_heads, step_far_rows_);
  s.max_chunk = max_chunk;
  s.sample = device_sampling;
  const int32_t max_kv_len = BuildMeta(batch, seq_slot, rows, s);
  s.rows_identity = R == T;
  for (int64_t k = 0; k < R && s.rows_identity; ++k) {
    s.rows_identity = meta_host_[s.off_rows + k] == k;
  }
  if (!external_only()) {
    s.plan = cuda::PlanPagedDecode(static_cast<int32_t>(s.I), c.group_size(), c.head_dim,
                                   max_kv_len, num_sms_);
  }
  if (options_.attention_split > 0 && s.I > 0 && !external_only()) {
    s.plan.kv_chunk_size = options_.attention_split;
    s.plan.num_splits = (max_kv_len + s.plan.kv_chunk_size - 1) / s.plan.kv_chunk_size;
    s.plan.workspace_o_elems = s.I * s.plan.num_splits * c.group_size() * c.head_dim;
    s.plan.workspace_lse_elems = s.I * s.plan.num_splits * c.group_size();
  }
  RETURN_IF_ERROR(eager_.Reserve(s, c).status());
  RETURN_IF_ERROR(PrepareGemms(&gemm_, T, R));
  RETURN_IF_ERROR(UploadInputs(batch, out, s, &eager_));
  return EnqueueStep(s, gemm_, eager_);
}

// The CUDA backend's ops for one step's device work: the step's shape, GEMM plans and scratch;
// launches only (capturable when the attention is the device pool's).
class CudaModelRunner::CudaStep : public LlamaStepOps {
 public:
  CudaStep(CudaModelRunner* r, const cuda_internal::StepShape& s,
           const cuda_internal::GemmSet& gemm, cuda_internal::StepBuffers& buf)
      : r_(r), c_(r->weights_->config), s_(s), gemm_(gemm), buf_(buf),
        meta_(buf.meta.as<int32_t>()), stream_(r->stream_) {}

  absl::Status Embed(Act out) override {
    // Gather bf16 rows into xb, widen into fp32.
    cuda::EmbeddingParams<__nv_bfloat16> p;
    p.ids = meta_ + s_.off_ids;
    p.table = r_->embed_.as<__nv_bfloat16>();
    p.out = xb();
    p.m = s_.T;
    p.d = c_.hidden_size;
    p.vocab_size = c_.vocab_size;
    CUDA_RETURN_IF_ERROR(cuda::InvokeEmbedding(p, stream_));
    CUDA_RETURN_IF_ERROR(cuda::InvokeCastToFloat(xb(), buf(out), s_.T * c_.hidden_size, stream_));
    return absl::OkStatus();
  }
  absl::Status RmsNorm(Act x, NormWeight w, Act y) override {
    cuda::RmsNormParams<float> p;
    p.x = buf(x);
    p.weight = norm(w);
    p.y = buf(y);
    p.m = s_.T;
    p.d = c_.hidden_size;
    p.eps = eps();
    CUDA_RETURN_IF_ERROR(cuda::InvokeRmsNorm(p, stream_));
    return absl::OkStatus();
  }
  absl::Status AddRmsNorm(Act residual, Act delta, NormWeight w, Act y) override {
    cuda::AddRmsNormParams<float> p;
    p.residual = buf(residual);
    p.delta = buf(delta);
    p.weight = norm(w);
    p.y = buf(y);
    p.m = s_.T;
    p.d = c_.hidden_size;
    p.eps = eps();
    CUDA_RETURN_IF_ERROR(cuda::InvokeAddRmsNorm(p, stream_));
    return absl::OkStatus();
  }
  // bf16 operands (x cast into xb), fp32 accumulation and output.
  absl::Status Linear(int32_t layer, Matrix m, Act x, Act y) override {
    const DeviceLayer& lw = r_->layers_[layer];
    const cuda_internal::GemmPlan* plan = nullptr;
    const cuda_internal::DeviceBuffer* w = nullptr;
    switch (m) {
      case Matrix::kQkv:
        plan = &gemm_.qkv;
        w = &lw.wqkv;
        break;
      case Matrix::kO:
        plan = &gemm_.o;
        w = &lw.wo;
        break;
      case Matrix::kGateUp:
        plan = &gemm_.gate_up;
        w = &lw.w_gate_up;
        break;
      case Matrix::kDown:
        plan = &gemm_.down;
        w = &lw.w_down;
        break;
    }
    CUDA_RETURN_IF_ERROR(cuda::InvokeCastToBf16(buf(x), xb(), s_.T * plan->k, stream_));
    return r_->Gemm(*plan, xb(), w->as<__nv_bfloat16>(), buf(y));
  }
  absl::Status Rope(Act qkv) override {
    cuda::RopeParams<float> p;
    p.x = buf(qkv);
    p.m = s_.T;
    p.row_stride = qkv_dim();
    p.num_heads = c_.num_heads + c_.num_kv_heads;
    p.head_dim = c_.head_dim;
    p.positions = meta_ + s_.off_pos;
    p.inv_freq = r_->inv_freq_.as<float>();
    p.layout = c_.rope_style == RopeStyle::kInterleaved ? cuda::RopeLayout::kInterleaved
                                                        : cuda::RopeLayout::kHalf;
    CUDA_RETURN_IF_ERROR(cuda::InvokeRope(p, stream_));
    return absl::OkStatus();
  }
  absl::Status Attention(int32_t layer, Act qkv_act, Act out) override {
    const float* qkv = buf(qkv_act);
    if (r_->external_only()) return r_->ExternalAttention(layer, s_, qkv, buf(out));
    if (s_.F > 0) RETURN_IF_ERROR(r_->FarFetch(s_, qkv));
    RETURN_IF_ERROR(DeviceAttention(layer, qkv, buf(out)));
    if (s_.F > 0) RETURN_IF_ERROR(r_->FarAttention(layer, s_, buf_, buf(out)));
    return absl::OkStatus();
  }
  absl::Status SiluMul(Act gate_up, Act out) override {
    cuda::SiluMulParams<float> p;
    p.gate_up = buf(gate_up);
    p.out = buf(out);
    p.m = s_.T;
    p.h = c_.intermediate_size;
    CUDA_RETURN_IF_ERROR(cuda::InvokeSiluMul(p, stream_));
    return absl::OkStatus();
  }
  absl::Status Logits(Act normed) override {
    const int64_t T = s_.T, R = s_.R, d = c_.hidden_size;
    if (R == 0) return absl::OkStatus();
    CUDA_RETURN_IF_ERROR(cuda::InvokeCastToBf16(buf(normed), xb(), T * d, stream_));
    const __nv_bfloat16* lm_in = xb();
    if (!s_.rows_identity) {
      cuda::EmbeddingParams<__nv_bfloat16> gather;  // row gather: "ids" are row indices
      gather.ids = meta_ + s_.off_rows;
      gather.table = xb();
      gather.out = buf_.sel.as<__nv_bfloat16>();
      gather.m = R;
      gather.d = d;
      gather.vocab_size = static_cast<int32_t>(T);
      CUDA_RETURN_IF_ERROR(cuda::InvokeEmbedding(gather, stream_));
      lm_in = buf_.sel.as<__nv_bfloat16>();
    }
    const __nv_bfloat16* lm_head =
        (r_->lm_head_tied_ ? r_->embed_ : r_->lm_head_).as<__nv_bfloat16>();
    RETURN_IF_ERROR(r_->Gemm(gemm_.lm_head, lm_in, lm_head, buf_.logits.as<float>()));
    if (s_.sample) {
      cuda::SampleParams sp;
      sp.logits = buf_.logits.as<float>();
      sp.logits_stride = c_.vocab_size;
      sp.rows = static_cast<int32_t>(R);
      sp.vocab = c_.vocab_size;
      sp.params = buf_.sample_params.as<cuda::SampleRowParams>();
      sp.out_tokens = buf_.sampled.as<int32_t>();
      sp.out_logprobs = reinterpret_cast<float*>(buf_.sampled.as<int32_t>() + R);
      CUDA_RETURN_IF_ERROR(cuda::InvokeSample(sp, stream_));
    }
    return absl::OkStatus();
  }

 private:
  // The device pool's attention: append k, v at the step's slots, then the prefill kernel for
  // the chunk rows (first P rows) and the decode kernel for the single-token rows.
  absl::Status DeviceAttention(int32_t l, const float* qkv, float* attn) {
    const int64_t T = s_.T, P = s_.P, qd = c_.q_dim(), kvd = c_.kv_dim();
    const int32_t KVH = c_.num_kv_heads, G = c_.group_size(), hd = c_.head_dim;
    const int32_t bs = r_->options_.block_size;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    {
      cuda::KvAppendParams<float, __nv_bfloat16> p;
      p.k = qkv + qd;
      p.v = qkv + qd + kvd;
      p.src_stride = qkv_dim();
      p.n = static_cast<int32_t>(T);
      p.num_heads = KVH;
      p.head_dim = hd;
      p.slot_mapping = buf_.slots.as<int64_t>() + l * T * KVH;
      p.k_pool = r_->k_pool_.as<__nv_bfloat16>();
      p.v_pool = r_->v_pool_.as<__nv_bfloat16>();
      CUDA_RETURN_IF_ERROR(cuda::InvokeKvAppend(p, stream_));
    }
    // Pack the q heads so that item (t, h) sits at q + (t * KVH + h) * G * hd.
    CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(buf_.q.as<void>(), qd * sizeof(float), qkv,
                                           qkv_dim() * sizeof(float), qd * sizeof(float), T,
                                           cudaMemcpyDeviceToDevice, stream_));
    const int32_t* layer_tables =
        r_->tables_.as<int32_t>() + l * (int64_t{KVH} * r_->max_blocks_);
    if (s_.I > 0) {
      cuda::PagedDecodeParams<__nv_bfloat16> p;
      p.k_pool = r_->k_pool_.as<__nv_bfloat16>();
      p.v_pool = r_->v_pool_.as<__nv_bfloat16>();
      p.block_table_offsets = meta_ + s_.off_item;
      p.block_ids = layer_tables;
      p.begin = meta_ + s_.off_begin;
      p.end = meta_ + s_.off_end;
      p.q = buf_.q.as<float>() + P * qd;
      p.o = attn + P * qd;
      p.lse = buf_.lse.as<float>() + P * c_.num_heads;  // [T, heads]: decode rows after P
      p.num_items = static_cast<int32_t>(s_.I);
      p.block_size = bs;
      p.head_dim = hd;
      p.group = G;
      p.scale = scale;
      p.num_splits = s_.plan.num_splits;
      p.kv_chunk_size = s_.plan.kv_chunk_size;
      p.workspace_o = buf_.ws_o.as<float>();
      p.workspace_lse = buf_.ws_lse.as<float>();
      CUDA_RETURN_IF_ERROR(cuda::InvokePagedDecode(p, stream_));
    }
    if (s_.S > 0) {
      cuda::PagedPrefillParams<__nv_bfloat16> p;
      p.k_pool = r_->k_pool_.as<__nv_bfloat16>();
      p.v_pool = r_->v_pool_.as<__nv_bfloat16>();
      p.block_table_offsets = meta_ + s_.off_chunk_table;
      p.block_ids = layer_tables;
      p.row_start = meta_ + s_.off_chunk_start;
      p.pos0 = meta_ + s_.off_chunk_pos;
      if (s_.F > 0) {  // hybrid: the near part only, and its lse for the merge
        p.kv_limit = meta_ + s_.off_chunk_limit;
        p.lse = buf_.lse.as<float>();
      }
      p.q = buf_.q.as<float>();
      p.q_row_stride = qd;
      p.o = attn;
      p.o_row_stride = qd;
      p.num_seqs = static_cast<int32_t>(s_.S);
      p.num_kv_heads = KVH;
      p.group = G;
      p.head_dim = hd;
      p.block_size = bs;
      p.max_rows = s_.max_chunk;
      p.scale = scale;
      CUDA_RETURN_IF_ERROR(cuda::InvokePagedPrefill(p, stream_));
    }
    return absl::OkStatus();
  }

  int64_t qkv_dim() const { return c_.q_dim() + 2 * int64_t{c_.kv_dim()}; }
  float eps() const { return static_cast<float>(c_.rms_norm_eps); }
  __nv_bfloat16* xb() const { return buf_.xb.as<__nv_bfloat16>(); }
  const float* norm(NormWeight w) const {
    switch (w.kind) {
      case NormWeight::kAttn:
        return r_->layers_[w.layer].attn_norm.as<float>();
      case NormWeight::kFfn:
        return r_->layers_[w.layer].ffn_norm.as<float>();
      case NormWeight::kFinal:
        break;
    }
    return r_->final_norm_.as<float>();
  }
  float* buf(Act a) const {
    switch (a) {
      case Act::kResidual:
        return buf_.x.as<float>();
      case Act::kNormed:
        return buf_.h.as<float>();
      case Act::kQkv:
        return buf_.qkv.as<float>();
      case Act::kAttn:
        return buf_.attn.as<float>();
      case Act::kDelta:
        return buf_.tmp.as<float>();
      case Act::kGateUp:
        return buf_.gate_up.as<float>();
      case Act::kMlp:
        break;
    }
    return buf_.act.as<float>();
  }

  CudaModelRunner* r_;
  const ModelConfig& c_;
  const cuda_internal::StepShape& s_;
  const cuda_internal::GemmSet& gemm_;
  cuda_internal::StepBuffers& buf_;
  const int32_t* meta_;
  cudaStream_t stream_;
};

absl::Status CudaModelRunner::ExternalAttention(int32_t layer, const cuda_internal::StepShape& s,
                                                const float* qkv, float* out) {
  const ModelConfig& c = weights_->config;
  const int64_t qkv_dim = c.q_dim() + 2 * int64_t{c.kv_dim()}, qd = c.q_dim();
  const size_t in_bytes = s.T * qkv_dim * sizeof(float), out_bytes = s.T * qd * sizeof(float);
  RETURN_IF_ERROR(host_qkv_.Grow(in_bytes));
  RETURN_IF_ERROR(host_attn_.Grow(out_bytes));
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(host_qkv_.as<void>(), qkv, in_bytes, cudaMemcpyDeviceToHost, stream_));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  RETURN_IF_ERROR(
      external_->Attend(layer, host_qkv_.as<float>(), qkv_dim, host_attn_.as<float>(), nullptr));
  // The copy reads the pinned buffer asynchronously: the next layer's Attend, which rewrites
  // it, comes after this layer's synchronization above.
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(out, host_attn_.as<void>(), out_bytes, cudaMemcpyHostToDevice, stream_));
  return absl::OkStatus();
}

absl::Status CudaModelRunner::FarFetch(const cuda_internal::StepShape& s, const float* qkv) {
  const ModelConfig& c = weights_->config;
  const size_t row_bytes = (c.q_dim() + 2 * int64_t{c.kv_dim()}) * sizeof(float);
  RETURN_IF_ERROR(far_in_.Grow(s.F * row_bytes));
  // The far rows only, one copy per run of consecutive rows (an entry's far rows are one run).
  for (int64_t k = 0; k < s.F;) {
    int64_t e = k + 1;
    while (e < s.F && far_rows_[e] == far_rows_[e - 1] + 1) ++e;
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        far_in_.as<char>() + k * row_bytes,
        reinterpret_cast<const char*>(qkv) + int64_t{far_rows_[k]} * row_bytes,
        (e - k) * row_bytes, cudaMemcpyDeviceToHost, stream_));
    k = e;
  }
  CUDA_RETURN_IF_ERROR(cudaEventRecord(qkv_copied_, stream_));
  return absl::OkStatus();
}

absl::Status CudaModelRunner::FarAttention(int32_t layer, const cuda_internal::StepShape& s,
                                           cuda_internal::StepBuffers& buf, float* attn) {
  const ModelConfig& c = weights_->config;
  const int64_t qkv_dim = c.q_dim() + 2 * int64_t{c.kv_dim()}, qd = c.q_dim();
  const int64_t F = s.F, H = c.num_heads;
  const size_t res_bytes = F * (qd + H) * sizeof(float);
  RETURN_IF_ERROR(far_res_.Grow(res_bytes));
  RETURN_IF_ERROR(far_dev_.Grow(res_bytes));
  // The device attends over the near part meanwhile (queued after the copy).
  CUDA_RETURN_IF_ERROR(cudaEventSynchronize(qkv_copied_));
  float* out = far_res_.as<float>();
  RETURN_IF_ERROR(external_->Attend(layer, far_in_.as<float>(), qkv_dim, out, out + F * qd));
  // far_res_ is read asynchronously: the next layer rewrites it only after its own
  // cudaEventSynchronize, which comes after this copy in stream order.
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(far_dev_.as<void>(), out, res_bytes,
                                       cudaMemcpyHostToDevice, stream_));
  cuda::MergeFarRowsParams p;
  p.o = attn;
  p.o_row_stride = qd;
  p.lse = buf.lse.as<float>();
  p.far_o = far_dev_.as<float>();
  p.far_lse = far_dev_.as<float>() + F * qd;
  p.rows = buf.meta.as<int32_t>() + s.off_far_rows;
  p.F = static_cast<int32_t>(F);
  p.heads = static_cast<int32_t>(H);
  p.head_dim = c.head_dim;
  CUDA_RETURN_IF_ERROR(cuda::InvokeMergeFarRows(p, stream_));
  stats_.hybrid_far_rows += layer == 0 ? F : 0;
  return absl::OkStatus();
}

absl::Status CudaModelRunner::EnqueueStep(const cuda_internal::StepShape& s,
                                          const cuda_internal::GemmSet& gemm,
                                          cuda_internal::StepBuffers& buf) {
  const ModelConfig& c = weights_->config;
  if (!external_only()) {
    // KV-append slots of every layer from the mirror (-1 for padding and far rows).
    cuda::KvSlotsParams p;
    p.tables = tables_.as<int32_t>();
    p.row_slot = buf.meta.as<int32_t>() + s.off_row_slot;
    p.positions = buf.meta.as<int32_t>() + s.off_pos;
    p.T = static_cast<int32_t>(s.T);
    p.num_layers = c.num_layers;
    p.num_kv_heads = c.num_kv_heads;
    p.max_blocks = max_blocks_;
    p.block_size = options_.block_size;
    p.slots = buf.slots.as<int64_t>();
    CUDA_RETURN_IF_ERROR(cuda::InvokeKvSlots(p, stream_));
  }
  CudaStep ops(this, s, gemm, buf);
  return RunLlamaForward(c.num_layers, ops);
}

absl::Status CudaModelRunner::FinishStep(const std::vector<SequenceInput>& batch, int64_t R,
                                         int64_t sample_stride,
                                         const cuda_internal::StepBuffers& buf,
                                         ForwardResult* out) {
  const int32_t V = weights_->config.vocab_size;
  // Entries with `sampling` were sampled on the device (their last logits row); the logits
  // travel to the host only when some entry samples there.
  bool host_logits = false, device_sampling = false;
  for (const SequenceInput& s : batch) {
    device_sampling |= s.runner_samples();
    host_logits |= s.want_logits && !s.runner_samples();
  }
  if (R > 0 && device_sampling) {
    sample_host_.resize(sample_stride * (sizeof(int32_t) + sizeof(float)));
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(sample_host_.data(), buf.sampled.as<void>(),
                                         sample_host_.size(), cudaMemcpyDeviceToHost, stream_));
  }
  if (R > 0 && host_logits) {
    out->logits.resize(R * V);
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out->logits.data(), buf.logits.as<void>(),
                                         R * V * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  if (R == 0 || !device_sampling) return absl::OkStatus();
  out->sampled.assign(batch.size(), -1);
  out->sampled_logprob.assign(batch.size(), 0.0f);
  const int32_t* tokens = reinterpret_cast<const int32_t*>(sample_host_.data());
  const float* logprobs =
      reinterpret_cast<const float*>(sample_host_.data() + sample_stride * sizeof(int32_t));
  for (size_t b = 0; b < batch.size(); ++b) {
    const SequenceInput& s = batch[b];
    if (!s.runner_samples()) continue;
    const int32_t row = out->first_row[b] + out->num_rows[b] - 1;
    out->sampled[b] = tokens[row];
    out->sampled_logprob[b] = logprobs[row];
    if (!host_logits) {
      out->first_row[b] = -1;
      out->num_rows[b] = 0;
    }
  }
  return absl::OkStatus();
}

}  // namespace kvasir
