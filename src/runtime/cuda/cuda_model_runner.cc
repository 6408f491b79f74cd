#include "runtime/cuda/cuda_model_runner.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/activation/silu_mul.cuh"
#include "kernels/attention/paged_decode.cuh"
#include "kernels/embedding/embedding.cuh"
#include "kernels/kv_append/kv_append.cuh"
#include "kernels/norm/rms_norm.cuh"
#include "kernels/rope/rope.cuh"
#include "runtime/cuda/cast.cuh"

namespace kvasir {

namespace {

absl::Status CudaStatus(cudaError_t e, const char* what) {
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

absl::Status CublasStatus(cublasStatus_t s, const char* what) {
  return absl::InternalError(
      absl::StrCat(what, ": ", cublasLtGetStatusName(s), " (", cublasLtGetStatusString(s), ")"));
}

#define CUDA_RETURN_IF_ERROR(expr)                \
  do {                                            \
    const cudaError_t kvasir_cuda_err_ = (expr);  \
    if (kvasir_cuda_err_ != cudaSuccess) {        \
      (void)cudaGetLastError();                   \
      return CudaStatus(kvasir_cuda_err_, #expr); \
    }                                             \
  } while (0)

#define CUBLAS_RETURN_IF_ERROR(expr)                  \
  do {                                                \
    const cublasStatus_t kvasir_cublas_st_ = (expr);  \
    if (kvasir_cublas_st_ != CUBLAS_STATUS_SUCCESS) { \
      return CublasStatus(kvasir_cublas_st_, #expr);  \
    }                                                 \
  } while (0)

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

KvCacheConfig CacheConfigOf(const ModelConfig& c, const CudaModelRunnerOptions& o) {
  KvCacheConfig k;
  k.num_layers = c.num_layers;
  k.num_kv_heads = c.num_kv_heads;
  k.head_dim = c.head_dim;
  k.block_size = o.block_size;
  k.num_blocks = o.num_blocks;
  k.host_storage = false;
  return k;
}

}  // namespace

namespace cuda_internal {

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ != nullptr) (void)cudaFree(ptr_);
}

absl::Status DeviceBuffer::Grow(size_t bytes) {
  if (bytes <= bytes_) return absl::OkStatus();
  if (ptr_ != nullptr) {
    CUDA_RETURN_IF_ERROR(cudaFree(ptr_));
    ptr_ = nullptr;
    bytes_ = 0;
  }
  CUDA_RETURN_IF_ERROR(cudaMalloc(&ptr_, bytes));
  bytes_ = bytes;
  return absl::OkStatus();
}

void GemmPlan::Reset() {
  if (w_layout) cublasLtMatrixLayoutDestroy(w_layout);
  if (x_layout) cublasLtMatrixLayoutDestroy(x_layout);
  if (y_layout) cublasLtMatrixLayoutDestroy(y_layout);
  w_layout = x_layout = y_layout = nullptr;
  m = -1;
}

}  // namespace cuda_internal

CudaModelRunner::CudaModelRunner(const ModelWeights* weights, const CudaModelRunnerOptions& options)
    : weights_(weights), options_(options), cache_(CacheConfigOf(weights->config, options)) {}

CudaModelRunner::~CudaModelRunner() {
  for (cuda_internal::GemmPlan* p :
       {&gemm_qkv_, &gemm_o_, &gemm_gate_up_, &gemm_down_, &gemm_lm_head_}) {
    p->Reset();
  }
  if (matmul_desc_) cublasLtMatmulDescDestroy(matmul_desc_);
  if (lt_) cublasLtDestroy(lt_);
  if (stream_) {
    (void)cudaStreamSynchronize(stream_);
    (void)cudaStreamDestroy(stream_);
  }
}

absl::StatusOr<std::unique_ptr<CudaModelRunner>> CudaModelRunner::Create(
    const ModelWeights* weights, const CudaModelRunnerOptions& options) {
  const ModelConfig& c = weights->config;
  RETURN_IF_ERROR(c.Validate());
  if (weights->embed == nullptr || weights->lm_head == nullptr ||
      static_cast<int32_t>(weights->layers.size()) != c.num_layers) {
    return absl::InvalidArgumentError("CudaModelRunner needs loaded weights (not config-only)");
  }
  if (options.block_size < 1 || options.num_blocks < 1 || options.attention_split < 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad KV pool: ", options.num_blocks,
                                                   " blocks of ", options.block_size, " tokens"));
  }
  const int32_t hd = c.head_dim;
  if (hd != 8 && hd != 32 && hd != 64 && hd != 128 && hd != 256) {
    return absl::UnimplementedError(
        absl::StrCat("head_dim ", hd, " is not supported by the CUDA paged decode kernel"));
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count <= options.device) {
    (void)cudaGetLastError();
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device ", options.device, " (", count, " found)"));
  }
  std::unique_ptr<CudaModelRunner> r(new CudaModelRunner(weights, options));
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

  gemm_qkv_.n = qd + 2 * kvd;
  gemm_qkv_.k = d;
  gemm_o_.n = d;
  gemm_o_.k = qd;
  gemm_gate_up_.n = 2 * inter;
  gemm_gate_up_.k = d;
  gemm_down_.n = d;
  gemm_down_.k = inter;
  gemm_lm_head_.n = c.vocab_size;
  gemm_lm_head_.k = d;

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
  const size_t pool_bytes = static_cast<size_t>(options_.num_blocks) * options_.block_size *
                            c.head_dim * sizeof(__nv_bfloat16);
  RETURN_IF_ERROR(k_pool_.Grow(pool_bytes));
  RETURN_IF_ERROR(v_pool_.Grow(pool_bytes));
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
  int64_t blocks_needed = 0;
  for (const SequenceInput& s : batch) {
    if (s.start_pos != cache.Length(s.seq_id)) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, ": start_pos ",
                                                     s.start_pos, " but ", cache.Length(s.seq_id),
                                                     " tokens cached"));
    }
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
  const ModelConfig& c = weights_->config;
  const int64_t d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), hd = c.head_dim;
  const int64_t inter = c.intermediate_size, qkv_dim = qd + 2 * kvd;
  const int32_t KVH = c.num_kv_heads, G = c.group_size(), L = c.num_layers;
  const int32_t bs = options_.block_size;
  const float eps = static_cast<float>(c.rms_norm_eps);

  RETURN_IF_ERROR(ValidateBatch(c, cache_, batch));
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  int64_t T = 0;
  for (const SequenceInput& s : batch) T += static_cast<int64_t>(s.tokens.size());
  if (T == 0) {
    ForwardResult empty;
    empty.vocab_size = c.vocab_size;
    return empty;
  }
  for (const SequenceInput& s : batch) {
    RETURN_IF_ERROR(cache_.Reserve(s.seq_id, static_cast<int32_t>(s.tokens.size())));
  }

  // ---- Rows that get logits.
  ForwardResult out;
  const std::vector<int32_t> rows = SelectLogitRows(batch, c.vocab_size, &out);
  const int64_t R = static_cast<int64_t>(rows.size());

  // ---- Step metadata, built on the host and uploaded once. Items are (token, kv_head), item
  // i = t * KVH + h; every layer has its own page tables, so its own CSR offsets and slots.
  // meta (int32): ids [T] | positions [T] | begin [I] | end [I] | logit rows [R]
  //               | offsets [L, I + 1] | block ids [L * Σ_i blocks(i)]
  const int64_t I = T * KVH;
  std::vector<int32_t> ids(T), positions(T), end(I);
  std::vector<int64_t> seq_of_row(T);
  int32_t max_kv_len = 0;
  int64_t blocks_per_layer = 0;
  {
    int64_t r = 0;
    for (size_t b = 0; b < batch.size(); ++b) {
      for (size_t i = 0; i < batch[b].tokens.size(); ++i, ++r) {
        ids[r] = batch[b].tokens[i];
        positions[r] = batch[b].start_pos + static_cast<int32_t>(i);
        seq_of_row[r] = static_cast<int64_t>(b);
        for (int32_t h = 0; h < KVH; ++h) end[r * KVH + h] = positions[r] + 1;
        max_kv_len = std::max(max_kv_len, positions[r] + 1);
        blocks_per_layer += KVH * ((positions[r] + bs) / bs);
      }
    }
  }
  const int64_t off_ids = 0, off_pos = T, off_begin = 2 * T, off_end = 2 * T + I;
  const int64_t off_rows = 2 * T + 2 * I, off_offsets = off_rows + R;
  const int64_t off_blocks = off_offsets + L * (I + 1);
  const int64_t meta_len = off_blocks + L * blocks_per_layer;
  if (meta_len > INT32_MAX) return absl::InvalidArgumentError("step too large");
  meta_host_.resize(meta_len);
  slots_host_.resize(static_cast<size_t>(L) * I);
  std::copy(ids.begin(), ids.end(), meta_host_.begin() + off_ids);
  std::copy(positions.begin(), positions.end(), meta_host_.begin() + off_pos);
  std::fill(meta_host_.begin() + off_begin, meta_host_.begin() + off_end, 0);
  std::copy(end.begin(), end.end(), meta_host_.begin() + off_end);
  std::copy(rows.begin(), rows.end(), meta_host_.begin() + off_rows);
  {
    int64_t cursor = 0;  // within the block ids of all layers
    for (int32_t l = 0; l < L; ++l) {
      int32_t* offsets = meta_host_.data() + off_offsets + l * (I + 1);
      for (int64_t r = 0; r < T; ++r) {
        const int64_t seq_id = batch[seq_of_row[r]].seq_id;
        for (int32_t h = 0; h < KVH; ++h) {
          const int64_t item = r * KVH + h;
          const PageTable& t = cache_.table(seq_id, l, h);
          const int32_t pos = positions[r];
          offsets[item] = static_cast<int32_t>(cursor);
          const int32_t nb = (pos + bs) / bs;  // blocks covering [0, pos]
          std::copy(t.blocks.begin(), t.blocks.begin() + nb,
                    meta_host_.begin() + off_blocks + cursor);
          cursor += nb;
          slots_host_[l * I + item] = int64_t{t.blocks[pos / bs]} * bs + pos % bs;
        }
      }
      offsets[I] = static_cast<int32_t>(cursor);
    }
  }

  // ---- Scratch (grown before the layer loop; nothing is allocated inside it).
  cuda::PagedDecodePlan plan = cuda::PlanPagedDecode(
      static_cast<int32_t>(I), G, static_cast<int32_t>(hd), max_kv_len, num_sms_);
  if (options_.attention_split > 0) {
    plan.kv_chunk_size = options_.attention_split;
    plan.num_splits = (max_kv_len + plan.kv_chunk_size - 1) / plan.kv_chunk_size;
    plan.workspace_o_elems = I * plan.num_splits * G * hd;
    plan.workspace_lse_elems = I * plan.num_splits * G;
  }
  const int64_t xb_cols = std::max({d, qd, inter});
  RETURN_IF_ERROR(x_.Grow(T * d * sizeof(float)));
  RETURN_IF_ERROR(h_.Grow(T * d * sizeof(float)));
  RETURN_IF_ERROR(xb_.Grow(T * xb_cols * sizeof(__nv_bfloat16)));
  RETURN_IF_ERROR(qkv_.Grow(T * qkv_dim * sizeof(float)));
  RETURN_IF_ERROR(q_.Grow(T * qd * sizeof(float)));
  RETURN_IF_ERROR(attn_.Grow(T * qd * sizeof(float)));
  RETURN_IF_ERROR(lse_.Grow(I * G * sizeof(float)));
  RETURN_IF_ERROR(tmp_.Grow(T * d * sizeof(float)));
  RETURN_IF_ERROR(gate_up_.Grow(T * 2 * inter * sizeof(float)));
  RETURN_IF_ERROR(act_.Grow(T * inter * sizeof(float)));
  RETURN_IF_ERROR(sel_.Grow(std::max<int64_t>(R, 1) * d * sizeof(__nv_bfloat16)));
  RETURN_IF_ERROR(logits_.Grow(std::max<int64_t>(R, 1) * c.vocab_size * sizeof(float)));
  RETURN_IF_ERROR(ws_o_.Grow(std::max<int64_t>(plan.workspace_o_elems, 1) * sizeof(float)));
  RETURN_IF_ERROR(ws_lse_.Grow(std::max<int64_t>(plan.workspace_lse_elems, 1) * sizeof(float)));
  RETURN_IF_ERROR(meta_.Grow(meta_len * sizeof(int32_t)));
  RETURN_IF_ERROR(slots_.Grow(slots_host_.size() * sizeof(int64_t)));
  RETURN_IF_ERROR(PrepareGemm(&gemm_qkv_, T));
  RETURN_IF_ERROR(PrepareGemm(&gemm_o_, T));
  RETURN_IF_ERROR(PrepareGemm(&gemm_gate_up_, T));
  RETURN_IF_ERROR(PrepareGemm(&gemm_down_, T));
  if (R > 0) RETURN_IF_ERROR(PrepareGemm(&gemm_lm_head_, R));

  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(meta_.as<void>(), meta_host_.data(),
                                       meta_len * sizeof(int32_t), cudaMemcpyHostToDevice,
                                       stream_));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(slots_.as<void>(), slots_host_.data(),
                                       slots_host_.size() * sizeof(int64_t), cudaMemcpyHostToDevice,
                                       stream_));
  const int32_t* d_meta = meta_.as<int32_t>();
  float* x = x_.as<float>();
  float* h = h_.as<float>();
  __nv_bfloat16* xb = xb_.as<__nv_bfloat16>();
  float* qkv = qkv_.as<float>();
  float* tmp = tmp_.as<float>();
  const __nv_bfloat16* embed = embed_.as<__nv_bfloat16>();

  // Embedding: gather bf16 rows into xb, widen into the fp32 residual stream.
  {
    cuda::EmbeddingParams<__nv_bfloat16> p;
    p.ids = d_meta + off_ids;
    p.table = embed;
    p.out = xb;
    p.m = T;
    p.d = d;
    p.vocab_size = c.vocab_size;
    CUDA_RETURN_IF_ERROR(cuda::InvokeEmbedding(p, stream_));
    CUDA_RETURN_IF_ERROR(cuda::InvokeCastToFloat(xb, x, T * d, stream_));
  }

  for (int32_t l = 0; l < L; ++l) {
    const DeviceLayer& lw = layers_[l];
    if (l == 0) {
      cuda::RmsNormParams<float> p;
      p.x = x;
      p.weight = lw.attn_norm.as<float>();
      p.y = h;
      p.m = T;
      p.d = d;
      p.eps = eps;
      CUDA_RETURN_IF_ERROR(cuda::InvokeRmsNorm(p, stream_));
    }
    CUDA_RETURN_IF_ERROR(cuda::InvokeCastToBf16(h, xb, T * d, stream_));
    RETURN_IF_ERROR(Gemm(gemm_qkv_, xb, lw.wqkv.as<__nv_bfloat16>(), qkv));
    {
      cuda::RopeParams<float> p;
      p.x = qkv;
      p.m = T;
      p.row_stride = qkv_dim;
      p.num_heads = c.num_heads + c.num_kv_heads;
      p.head_dim = static_cast<int32_t>(hd);
      p.positions = d_meta + off_pos;
      p.inv_freq = inv_freq_.as<float>();
      p.layout = c.rope_style == RopeStyle::kInterleaved ? cuda::RopeLayout::kInterleaved
                                                         : cuda::RopeLayout::kHalf;
      CUDA_RETURN_IF_ERROR(cuda::InvokeRope(p, stream_));
    }
    {
      cuda::KvAppendParams<float, __nv_bfloat16> p;
      p.k = qkv + qd;
      p.v = qkv + qd + kvd;
      p.src_stride = qkv_dim;
      p.n = static_cast<int32_t>(T);
      p.num_heads = KVH;
      p.head_dim = static_cast<int32_t>(hd);
      p.slot_mapping = slots_.as<int64_t>() + l * I;
      p.k_pool = k_pool_.as<__nv_bfloat16>();
      p.v_pool = v_pool_.as<__nv_bfloat16>();
      CUDA_RETURN_IF_ERROR(cuda::InvokeKvAppend(p, stream_));
    }
    // Pack the q heads so that item (t, h) sits at q + (t * KVH + h) * G * hd.
    CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(q_.as<void>(), qd * sizeof(float), qkv,
                                           qkv_dim * sizeof(float), qd * sizeof(float), T,
                                           cudaMemcpyDeviceToDevice, stream_));
    {
      cuda::PagedDecodeParams<__nv_bfloat16> p;
      p.k_pool = k_pool_.as<__nv_bfloat16>();
      p.v_pool = v_pool_.as<__nv_bfloat16>();
      p.block_table_offsets = d_meta + off_offsets + l * (I + 1);
      p.block_ids = d_meta + off_blocks;
      p.begin = d_meta + off_begin;
      p.end = d_meta + off_end;
      p.q = q_.as<float>();
      p.o = attn_.as<float>();
      p.lse = lse_.as<float>();
      p.num_items = static_cast<int32_t>(I);
      p.block_size = bs;
      p.head_dim = static_cast<int32_t>(hd);
      p.group = G;
      p.scale = 1.0f / std::sqrt(static_cast<float>(hd));
      p.num_splits = plan.num_splits;
      p.kv_chunk_size = plan.kv_chunk_size;
      p.workspace_o = ws_o_.as<float>();
      p.workspace_lse = ws_lse_.as<float>();
      CUDA_RETURN_IF_ERROR(cuda::InvokePagedDecode(p, stream_));
    }
    CUDA_RETURN_IF_ERROR(cuda::InvokeCastToBf16(attn_.as<float>(), xb, T * qd, stream_));
    RETURN_IF_ERROR(Gemm(gemm_o_, xb, lw.wo.as<__nv_bfloat16>(), tmp));
    {
      cuda::AddRmsNormParams<float> p;
      p.residual = x;
      p.delta = tmp;
      p.weight = lw.ffn_norm.as<float>();
      p.y = h;
      p.m = T;
      p.d = d;
      p.eps = eps;
      CUDA_RETURN_IF_ERROR(cuda::InvokeAddRmsNorm(p, stream_));
    }
    CUDA_RETURN_IF_ERROR(cuda::InvokeCastToBf16(h, xb, T * d, stream_));
    RETURN_IF_ERROR(
        Gemm(gemm_gate_up_, xb, lw.w_gate_up.as<__nv_bfloat16>(), gate_up_.as<float>()));
    {
      cuda::SiluMulParams<float> p;
      p.gate_up = gate_up_.as<float>();
      p.out = act_.as<float>();
      p.m = T;
      p.h = inter;
      CUDA_RETURN_IF_ERROR(cuda::InvokeSiluMul(p, stream_));
    }
    CUDA_RETURN_IF_ERROR(cuda::InvokeCastToBf16(act_.as<float>(), xb, T * inter, stream_));
    RETURN_IF_ERROR(Gemm(gemm_down_, xb, lw.w_down.as<__nv_bfloat16>(), tmp));
    {
      cuda::AddRmsNormParams<float> p;
      p.residual = x;
      p.delta = tmp;
      p.weight = l + 1 < L ? layers_[l + 1].attn_norm.as<float>() : final_norm_.as<float>();
      p.y = h;
      p.m = T;
      p.d = d;
      p.eps = eps;
      CUDA_RETURN_IF_ERROR(cuda::InvokeAddRmsNorm(p, stream_));
    }
  }

  // ---- Logits for the rows asked for (h holds the final-normed hidden states).
  if (R > 0) {
    CUDA_RETURN_IF_ERROR(cuda::InvokeCastToBf16(h, xb, T * d, stream_));
    cuda::EmbeddingParams<__nv_bfloat16> gather;  // row gather: "ids" are row indices
    gather.ids = d_meta + off_rows;
    gather.table = xb;
    gather.out = sel_.as<__nv_bfloat16>();
    gather.m = R;
    gather.d = d;
    gather.vocab_size = T;
    CUDA_RETURN_IF_ERROR(cuda::InvokeEmbedding(gather, stream_));
    const __nv_bfloat16* lm_head = lm_head_tied_ ? embed : lm_head_.as<__nv_bfloat16>();
    RETURN_IF_ERROR(Gemm(gemm_lm_head_, sel_.as<__nv_bfloat16>(), lm_head, logits_.as<float>()));
    out.logits.resize(R * c.vocab_size);
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out.logits.data(), logits_.as<void>(),
                                         R * c.vocab_size * sizeof(float), cudaMemcpyDeviceToHost,
                                         stream_));
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  for (const SequenceInput& s : batch) {
    cache_.Advance(s.seq_id, static_cast<int32_t>(s.tokens.size()));
  }
  return out;
}

}  // namespace kvasir
