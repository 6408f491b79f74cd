// Shared set-up of the CPU engine for the CLI subcommands: locate and load a model, size a KV
// cache, build the runner.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "common/status.h"
#include "kvcache/kv_cache.h"
#include "model/model_runner.h"
#include "model/tokenizer/tokenizer.h"
#include "model/weights.h"
#include "runtime/cpu/cpu_backend.h"
#include "tools/cli_args.h"

namespace kvasir {

struct EngineOptions {
  std::string model_dir;      // empty: the embedded default model
  bool dummy = false;
  std::string dummy_config;   // built-in name or config.json path
  uint64_t seed = 0;
  int threads = 2;
  int64_t kv_blocks = 0;      // 0: enough for kv_tokens tokens
  int64_t kv_tokens = 0;      // 0: kv_contexts full contexts
  int64_t kv_contexts = 4;    // full contexts when neither kv_blocks nor kv_tokens is set
  int64_t kv_max_bytes = int64_t{64} << 30;  // cap on the default pool's K+V bytes
  int32_t block_size = 16;
  bool need_tokenizer = true;
  bool config_only = false;  // no weights, no KV cache, no runner (router, attention worker)
  bool local_kv = true;      // false: no KV cache and no runner (the decoder builds its own)
  std::string device = "cpu";  // cpu (fp32, CPU backend) or cuda (CudaModelRunner, bf16)
  // cuda: fraction of the device memory weights + KV may take (the KV pool gets the rest);
  // kv_blocks > 0 sizes the pool explicitly instead.
  double gpu_memory_utilization = 0.9;
  int32_t max_num_seqs = 256;  // cuda: sequences that can hold KV at once
  // --kv-cache-dtype: how host KV rows are stored (KV caches, attention shards and workers).
  // Unset: fp32 on the CPU device, bf16 with cuda (the GPU pool's own dtype, so host and GPU
  // attention see the same rounded K/V).
  std::optional<KvDType> kv_dtype;
  // Share the KV of equal token prefixes between requests (KvCache, prefix caching): where
  // the KV is in this process (the CPU cache, the GPU pool); --no-enable-prefix-caching.
  bool prefix_caching = true;
  // cuda with the KV on attention workers: the hybrid executor keeps each sequence's first
  // tokens in a GPU pool of decoder_kv_memory_mb MiB (0: sized by gpu_memory_utilization) and
  // the rest on the workers (--decoder-kv-memory, serve --attention-workers host:N).
  bool hybrid_kv = false;
  double decoder_kv_memory_mb = 0.0;
  KvDType kv_dtype_or_default() const {
    return kv_dtype.value_or(device == "cuda" ? KvDType::kBF16 : KvDType::kF32);
  }
};

struct LocalModel {
  std::string model_dir;
  std::unique_ptr<ModelWeights> weights;
  std::unique_ptr<Tokenizer> tokenizer;  // null for dummy weights without a tokenizer
  std::unique_ptr<CpuBackend> backend;
  std::unique_ptr<KvCache> cache;     // cpu: the KV cache the runner attends over
  std::unique_ptr<StepRunner> runner;  // ModelRunner (cpu) or CudaModelRunner (cuda)
  KvCache* kv_cache = nullptr;         // the runner's KV bookkeeping, either device
};

absl::StatusOr<std::unique_ptr<LocalModel>> CreateLocalModel(const EngineOptions& options);

// A runner over the model's weights whose attention goes through `attention` (in-process
// attention shards, or attention workers): the CPU ModelRunner, or with options.device cuda
// the CudaModelRunner with its dense layers on the GPU and the KV wherever `attention` keeps it.
absl::StatusOr<std::unique_ptr<StepRunner>> CreateRunnerOver(const LocalModel& model,
                                                             const EngineOptions& options,
                                                             AttentionExecutor* attention);

// KV blocks of options.block_size tokens (per layer and KV head) the options ask for: kv_blocks,
// else kv_tokens, else kv_contexts full contexts capped at kv_max_bytes.
// The model flags (cli::With) into options, --device and --gpu-memory-utilization included.
absl::StatusOr<EngineOptions> EngineOptionsFromArgs(const cli::Args& a);

absl::StatusOr<int64_t> KvPoolBlocks(const ModelConfig& c, const EngineOptions& options);
// --kv-policy / --kv-budget (validated); nullopt when neither is given.
absl::StatusOr<std::optional<KvPolicy>> KvPolicyFromArgs(const cli::Args& a);

// K + V bytes of one block in options' KV dtype.
int64_t KvBytesPerBlock(const ModelConfig& c, const EngineOptions& options);

}  // namespace kvasir
