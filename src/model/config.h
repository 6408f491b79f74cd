// Model hyper-parameters of the Llama family, parsed from HF config.json, a llama2.c header,
// or a built-in name (for --load-format dummy).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"
#include "runtime/backend.h"

namespace kvasir {

struct RopeScaling {
  std::string type;  // "" (none) or "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string name;
  int32_t hidden_size = 0;        // dim
  int32_t intermediate_size = 0;  // MLP hidden
  int32_t num_layers = 0;
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t vocab_size = 0;
  int32_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  RopeStyle rope_style = RopeStyle::kHalf;
  bool tie_word_embeddings = false;
  int32_t bos_token_id = 1;
  std::vector<int32_t> eos_token_ids = {2};
  DType dtype = DType::kF32;  // storage dtype of the weights

  int32_t q_dim() const { return num_heads * head_dim; }
  int32_t kv_dim() const { return num_kv_heads * head_dim; }
  int32_t group_size() const { return num_heads / num_kv_heads; }
  // Number of parameters (for reports and memory planning).
  int64_t NumParameters() const;

  // Checks that sizes are positive and consistent (heads divide, GQA groups integral).
  absl::Status Validate() const;
};

// Parses an HF config.json (LlamaForCausalLM and compatible).
absl::StatusOr<ModelConfig> ParseHfConfig(const std::string& json_text);
// Serializes to HF config.json (rope style is always kHalf in HF files).
std::string ToHfConfigJson(const ModelConfig& config);
// Built-in shapes: stories260K, stories15M, tinyllama-1.1b, llama-3.2-1b, llama-3-8b.
absl::StatusOr<ModelConfig> BuiltinConfig(const std::string& name);
std::vector<std::string> BuiltinConfigNames();

// Per-pair inverse frequencies [head_dim / 2] including rope scaling.
std::vector<double> RopeInvFrequencies(const ModelConfig& config);

}  // namespace kvasir
