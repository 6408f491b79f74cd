// Model weights as fp32 views for the CPU backend, loaded from a model directory:
//   HF layout       config.json + model.safetensors | model.safetensors.index.json (+ shards)
//   llama2.c layout model.bin (+ tokenizer.bin)
//   dummy           seeded random values in the HF layout's shapes (--load-format dummy)
// f32 tensors are used in place from the memory map; f16/bf16 are converted once into owned
// buffers. Q/K/V and gate/up projections are fused into one matrix each (one GEMM per group).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/mapped_file.h"
#include "common/status.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace kvasir {

struct LayerWeights {
  const float* attn_norm = nullptr;  // [hidden]
  const float* wqkv = nullptr;       // [q_dim + 2 * kv_dim, hidden]  rows: q | k | v
  const float* wo = nullptr;         // [hidden, q_dim]
  const float* ffn_norm = nullptr;   // [hidden]
  const float* w_gate_up = nullptr;  // [2 * intermediate, hidden]  rows: gate | up
  const float* w_down = nullptr;     // [hidden, intermediate]
};

enum class ModelFormat { kHf, kLlama2c, kDummy };

struct ModelWeights {
  ModelConfig config;
  ModelFormat format = ModelFormat::kHf;
  const float* embed = nullptr;       // [vocab, hidden]
  std::vector<LayerWeights> layers;   // [num_layers]
  const float* final_norm = nullptr;  // [hidden]
  const float* lm_head = nullptr;     // [vocab, hidden] (== embed when tied)

  // Owners of the memory the views point into.
  std::vector<std::unique_ptr<MappedFile>> mapped;
  std::vector<std::unique_ptr<SafetensorsFile>> safetensors;
  std::vector<std::unique_ptr<float[]>> owned;
  int64_t owned_floats = 0;

  float* Allocate(int64_t n);  // uninitialized fp32 buffer owned by the weights
};

struct LoadOptions {
  bool dummy = false;         // --load-format dummy
  std::string dummy_config;   // built-in name or path of a config.json (used when dummy)
  uint64_t seed = 0;          // dummy weights seed
  int num_threads = 1;        // for conversion and random fill
  // Only the config (and no tensors): for processes that need the shapes, not the weights
  // (router, attention workers).
  bool config_only = false;
};

// Detects the format from the directory's files (config.json + safetensors, or model.bin).
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadModelWeights(const std::string& model_dir,
                                                               const LoadOptions& options);
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadLlama2cWeights(const std::string& path);
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadHfWeights(const std::string& model_dir,
                                                            int num_threads);
absl::StatusOr<std::unique_ptr<ModelWeights>> MakeDummyWeights(const ModelConfig& config,
                                                               uint64_t seed, int num_threads);

// Writes `weights` in the HF layout (model.safetensors + config.json) into `dir` (created).
// Interleaved-RoPE models (llama2.c) get the rows of wq and wk permuted to rotate-half order.
absl::Status WriteHfModel(const ModelWeights& weights, const std::string& dir, DType dtype);

}  // namespace kvasir
