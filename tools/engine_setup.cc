#include "tools/engine_setup.h"

#include <algorithm>
#include <filesystem>

#include "common/logging.h"
#include "model/default_model.h"
#ifdef KVASIR_WITH_CUDA_RUNNER
#include "model/cuda/cuda_model_runner.h"
#endif

namespace kvasir {

absl::StatusOr<std::unique_ptr<StepRunner>> CreateRunnerOver(const LocalModel& m,
                                                             const EngineOptions& o,
                                                             AttentionExecutor* attention) {
  if (o.device == "cuda") {
    if (o.kv_dtype_or_default() != KvDType::kBF16) {
      return absl::InvalidArgumentError(
          "the GPU KV pool stores bf16: --kv-cache-dtype fp32 with --device cuda needs the KV "
          "on the host (--attention-shards or attention workers)");
    }
#ifdef KVASIR_WITH_CUDA_RUNNER
    CudaModelRunnerOptions co;
    co.memory_fraction = o.gpu_memory_utilization;
    const ModelConfig& c = m.weights->config;
    if (o.hybrid_kv) {
      co.block_size = o.block_size;
      co.max_seqs = o.max_num_seqs;
      const int64_t block_bytes = KvBytesPerBlock(c, o);  // bf16 on the GPU (checked above)
      if (o.decoder_kv_memory_mb > 0) {
        co.num_blocks = static_cast<int32_t>(std::min<double>(
            o.decoder_kv_memory_mb * double(1 << 20) / block_bytes, INT32_MAX));
        if (co.num_blocks < int64_t{c.num_layers} * c.num_kv_heads) {
          return absl::InvalidArgumentError(
              "--decoder-kv-memory is too small for one block per layer and KV head");
        }
      }
      HybridPlacementOptions hp;
      hp.sink_tokens = o.block_size;
      hp.reserve_blocks = -1;
      ASSIGN_OR_RETURN(std::unique_ptr<CudaModelRunner> r,
                       CudaModelRunner::CreateHybrid(m.weights.get(), co, attention, hp));
      SPDLOG_INFO(
          "model {} on CUDA (bf16 dense layers), hybrid KV: {} blocks of {} tokens on the GPU "
          "({} MiB) for each sequence's first tokens, the rest on the host attention workers",
          c.name, r->cache().pool().num_blocks(), o.block_size,
          (int64_t{r->cache().pool().num_blocks()} * block_bytes) >> 20);
      return std::unique_ptr<StepRunner>(std::move(r));
    }
    ASSIGN_OR_RETURN(std::unique_ptr<CudaModelRunner> r,
                     CudaModelRunner::Create(m.weights.get(), co, attention));
    SPDLOG_INFO("model {} on CUDA (bf16 dense layers), attention over host KV: {} layers, dim {}, "
                "{} heads / {} kv heads, vocab {}",
                c.name, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.vocab_size);
    return std::unique_ptr<StepRunner>(std::move(r));
#else
    return absl::UnimplementedError("this build has no CUDA backend (built without nvcc)");
#endif
  }
  return std::unique_ptr<StepRunner>(
      std::make_unique<ModelRunner>(m.weights.get(), m.backend.get(), attention));
}

absl::StatusOr<std::unique_ptr<LocalModel>> CreateLocalModel(const EngineOptions& o) {
  auto e = std::make_unique<LocalModel>();
  e->model_dir = o.model_dir;
  if (e->model_dir.empty() && !o.dummy) {
    ASSIGN_OR_RETURN(e->model_dir, FindOrFetchDefaultModel());
  }
  LoadOptions lo;
  lo.dummy = o.dummy;
  lo.dummy_config = o.dummy_config;
  lo.seed = o.seed;
  lo.num_threads = o.threads;
  lo.config_only = o.config_only;
  ASSIGN_OR_RETURN(e->weights, LoadModelWeights(e->model_dir, lo));
  const ModelConfig& c = e->weights->config;
  if (!e->model_dir.empty() && o.need_tokenizer) {
    auto tok = LoadTokenizer(e->model_dir);
    if (!tok.ok()) {
      if (!o.dummy) return tok.status();
    } else {
      e->tokenizer = std::move(*tok);
    }
  }
  if (e->tokenizer && e->tokenizer->vocab_size() > c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer has ", e->tokenizer->vocab_size(), " tokens but the model only ",
        c.vocab_size, ": the files do not belong together"));
  }
  e->backend = std::make_unique<CpuBackend>(o.threads);
  if (o.config_only || !o.local_kv) return e;
  if (o.device == "cuda") {
#ifdef KVASIR_WITH_CUDA_RUNNER
    CudaModelRunnerOptions co;
    co.block_size = o.block_size;
    co.max_seqs = o.max_num_seqs;
    co.memory_fraction = o.gpu_memory_utilization;
    co.prefix_caching = o.prefix_caching;
    if (o.kv_blocks > 0 || o.kv_tokens > 0) {
      ASSIGN_OR_RETURN(const int64_t blocks, KvPoolBlocks(c, o));
      co.num_blocks = static_cast<int32_t>(blocks);
    }
    ASSIGN_OR_RETURN(std::unique_ptr<CudaModelRunner> r, CudaModelRunner::Create(e->weights.get(), co));
    e->kv_cache = &r->cache();
    SPDLOG_INFO("model {} on CUDA (bf16): {} layers, dim {}, {} heads / {} kv heads, vocab {}; KV "
                "pool {} blocks of {} tokens ({} MiB bf16)",
                c.name, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.vocab_size,
                e->kv_cache->config().num_blocks, o.block_size,
                (int64_t{e->kv_cache->config().num_blocks} * o.block_size * c.head_dim * 4) >> 20);
    e->runner = std::move(r);
    return e;
#else
    return absl::UnimplementedError("this build has no CUDA backend (built without nvcc)");
#endif
  }
  ASSIGN_OR_RETURN(const int64_t blocks, KvPoolBlocks(c, o));
  KvCacheConfig kc = KvCacheConfigFor(c, o.block_size, static_cast<int32_t>(blocks),
                                      /*host_storage=*/true, o.kv_dtype_or_default());
  kc.prefix_caching = o.prefix_caching;
  SPDLOG_INFO("model {}: {} layers, dim {}, {} heads / {} kv heads, vocab {}, context {}; KV "
              "cache {} blocks of {} tokens ({} MiB {})",
              c.name, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.vocab_size,
              c.max_position_embeddings, kc.num_blocks, kc.block_size,
              (blocks * KvBytesPerBlock(c, o)) >> 20, KvDTypeName(kc.dtype));
  e->cache = std::make_unique<KvCache>(kc);
  e->kv_cache = e->cache.get();
  e->runner = std::make_unique<ModelRunner>(e->weights.get(), e->backend.get(), e->cache.get());
  return e;
}

absl::StatusOr<std::optional<KvPolicy>> KvPolicyFromArgs(const cli::Args& a) {
  std::optional<KvPolicyKind> kind;
  std::optional<double> budget;
  if (a.Has("kv-policy")) {
    ASSIGN_OR_RETURN(kind, ParseKvPolicyKind(a.Str("kv-policy")));
  }
  if (a.Has("kv-budget")) {
    ASSIGN_OR_RETURN(budget, a.Float("kv-budget", 1.0));
  }
  return ResolveKvPolicy(std::nullopt, kind, budget);
}

int64_t KvBytesPerBlock(const ModelConfig& c, const EngineOptions& o) {
  return int64_t{o.block_size} * c.head_dim * 2 * KvDTypeSize(o.kv_dtype_or_default());
}

absl::StatusOr<int64_t> KvPoolBlocks(const ModelConfig& c, const EngineOptions& o) {
  const int64_t tables = static_cast<int64_t>(c.num_layers) * c.num_kv_heads;
  const int64_t bytes_per_block = KvBytesPerBlock(c, o);
  int64_t blocks = o.kv_blocks;
  if (blocks <= 0 && o.kv_tokens > 0) {
    blocks = tables * ((o.kv_tokens + o.block_size - 1) / o.block_size + 1);
  } else if (blocks <= 0) {
    const int64_t per_ctx = tables * ((c.max_position_embeddings + o.block_size - 1) / o.block_size);
    blocks = std::min(per_ctx * o.kv_contexts, o.kv_max_bytes / bytes_per_block);
  }
  const int64_t bytes = blocks * bytes_per_block;
  if (blocks > INT32_MAX || bytes > (int64_t{64} << 30)) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache of ", blocks, " blocks (",
                                                     bytes >> 20, " MiB) is too large"));
  }
  return blocks;
}

absl::StatusOr<EngineOptions> EngineOptionsFromArgs(const cli::Args& a) {
  EngineOptions o;
  o.model_dir = a.Str("model");
  std::string fmt = a.Str("load-format", "auto");
  if (fmt != "auto" && fmt != "dummy") {
    return absl::InvalidArgumentError("--load-format must be auto or dummy");
  }
  o.dummy = fmt == "dummy";
  o.dummy_config = a.Str("dummy-config");
  if (o.dummy && o.dummy_config.empty() && o.model_dir.empty()) {
    return absl::InvalidArgumentError("--load-format dummy needs --dummy-config NAME or --model DIR");
  }
  ASSIGN_OR_RETURN(int64_t threads, a.Int("threads", 2));
  if (threads < 1 || threads > 256) return absl::InvalidArgumentError("--threads must be in [1, 256]");
  o.threads = static_cast<int>(threads);
  o.device = a.Str("device", "cpu");
  if (o.device != "cpu" && o.device != "cuda") {
    return absl::InvalidArgumentError("--device must be cpu or cuda");
  }
  if (a.Has("kv-cache-dtype")) {
    ASSIGN_OR_RETURN(o.kv_dtype, ParseKvDType(a.Str("kv-cache-dtype")));
  }
  if (a.Has("no-enable-prefix-caching") && a.Has("enable-prefix-caching")) {
    return absl::InvalidArgumentError(
        "--enable-prefix-caching and --no-enable-prefix-caching contradict each other");
  }
  o.prefix_caching = !a.Has("no-enable-prefix-caching");
  ASSIGN_OR_RETURN(o.gpu_memory_utilization, a.Float("gpu-memory-utilization", 0.9));
  if (!(o.gpu_memory_utilization > 0.0 && o.gpu_memory_utilization <= 1.0)) {
    return absl::InvalidArgumentError("--gpu-memory-utilization must be in (0, 1]");
  }
  return o;
}

}  // namespace kvasir
