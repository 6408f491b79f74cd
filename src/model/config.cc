#include "model/config.h"

#include <cmath>

#include "nlohmann/json.hpp"

namespace kvasir {

using nlohmann::json;

int64_t ModelConfig::NumParameters() const {
  int64_t d = hidden_size, h = intermediate_size;
  int64_t per_layer = d * q_dim() * 2 + 2 * d * kv_dim() + 3 * d * h + 2 * d;
  int64_t emb = static_cast<int64_t>(vocab_size) * d;
  return per_layer * num_layers + emb * (tie_word_embeddings ? 1 : 2) + d;
}

absl::Status ModelConfig::Validate() const {
  auto bad = [](const std::string& m) { return absl::InvalidArgumentError("model config: " + m); };
  if (hidden_size <= 0 || intermediate_size <= 0 || num_layers <= 0 || num_heads <= 0 ||
      num_kv_heads <= 0 || vocab_size <= 0 || max_position_embeddings <= 0 || head_dim <= 0) {
    return bad(absl::StrCat("sizes must be positive (hidden ", hidden_size, ", intermediate ",
                            intermediate_size, ", layers ", num_layers, ", heads ", num_heads,
                            ", kv_heads ", num_kv_heads, ", head_dim ", head_dim, ", vocab ",
                            vocab_size, ", context ", max_position_embeddings, ")"));
  }
  if (hidden_size > (1 << 16) || intermediate_size > (1 << 18) || num_layers > 1024 ||
      num_heads > 1024 || vocab_size > (1 << 22) || head_dim > 1024) {
    return bad("sizes are implausibly large");
  }
  if (num_heads % num_kv_heads != 0) {
    return bad(absl::StrCat("num_attention_heads ", num_heads,
                            " is not a multiple of num_key_value_heads ", num_kv_heads));
  }
  if (head_dim % 2 != 0) return bad("head_dim must be even for RoPE");
  if (!(rms_norm_eps > 0) || !(rope_theta > 0)) return bad("rms_norm_eps and rope_theta must be > 0");
  if (!rope_scaling.type.empty() && rope_scaling.type != "llama3") {
    return bad("unsupported rope_scaling type '" + rope_scaling.type + "' (supported: llama3)");
  }
  if (bos_token_id >= vocab_size) return bad("bos_token_id out of vocabulary");
  for (int32_t e : eos_token_ids) {
    if (e < 0 || e >= vocab_size) return bad("eos_token_id out of vocabulary");
  }
  return absl::OkStatus();
}

namespace {

template <typename T>
absl::Status Get(const json& j, const char* key, T* out, bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return absl::InvalidArgumentError(absl::StrCat("config.json: missing '", key, "'"));
    return absl::OkStatus();
  }
  try {
    *out = it->get<T>();
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: bad '", key, "': ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseHfConfig(const std::string& json_text) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("config.json is not a valid JSON object");
  }
  ModelConfig c;
  std::string model_type = "llama";
  RETURN_IF_ERROR(Get(j, "model_type", &model_type, false));
  if (model_type != "llama") {
    return absl::InvalidArgumentError("unsupported model_type '" + model_type + "' (supported: llama)");
  }
  RETURN_IF_ERROR(Get(j, "hidden_size", &c.hidden_size, true));
  RETURN_IF_ERROR(Get(j, "intermediate_size", &c.intermediate_size, true));
  RETURN_IF_ERROR(Get(j, "num_hidden_layers", &c.num_layers, true));
  RETURN_IF_ERROR(Get(j, "num_attention_heads", &c.num_heads, true));
  c.num_kv_heads = c.num_heads;
  RETURN_IF_ERROR(Get(j, "num_key_value_heads", &c.num_kv_heads, false));
  RETURN_IF_ERROR(Get(j, "vocab_size", &c.vocab_size, true));
  c.max_position_embeddings = 2048;
  RETURN_IF_ERROR(Get(j, "max_position_embeddings", &c.max_position_embeddings, false));
  RETURN_IF_ERROR(Get(j, "rms_norm_eps", &c.rms_norm_eps, false));
  RETURN_IF_ERROR(Get(j, "rope_theta", &c.rope_theta, false));
  RETURN_IF_ERROR(Get(j, "tie_word_embeddings", &c.tie_word_embeddings, false));
  RETURN_IF_ERROR(Get(j, "bos_token_id", &c.bos_token_id, false));
  if (c.num_heads > 0) c.head_dim = c.hidden_size / c.num_heads;
  RETURN_IF_ERROR(Get(j, "head_dim", &c.head_dim, false));
  if (auto it = j.find("eos_token_id"); it != j.end() && !it->is_null()) {
    c.eos_token_ids.clear();
    if (it->is_number_integer()) {
      c.eos_token_ids.push_back(it->get<int32_t>());
    } else if (it->is_array()) {
      for (const auto& e : *it) {
        if (!e.is_number_integer()) return absl::InvalidArgumentError("config.json: bad eos_token_id");
        c.eos_token_ids.push_back(e.get<int32_t>());
      }
    } else {
      return absl::InvalidArgumentError("config.json: bad eos_token_id");
    }
  }
  if (auto it = j.find("rope_scaling"); it != j.end() && it->is_object()) {
    const json& rs = *it;
    std::string type;
    if (rs.contains("rope_type")) {
      RETURN_IF_ERROR(Get(rs, "rope_type", &type, false));
    } else {
      RETURN_IF_ERROR(Get(rs, "type", &type, false));
    }
    if (type != "default" && !type.empty()) {
      c.rope_scaling.type = type;
      RETURN_IF_ERROR(Get(rs, "factor", &c.rope_scaling.factor, true));
      RETURN_IF_ERROR(Get(rs, "low_freq_factor", &c.rope_scaling.low_freq_factor, false));
      RETURN_IF_ERROR(Get(rs, "high_freq_factor", &c.rope_scaling.high_freq_factor, false));
      RETURN_IF_ERROR(Get(rs, "original_max_position_embeddings",
                          &c.rope_scaling.original_max_position_embeddings, false));
    }
  }
  std::string dtype = "float32";
  RETURN_IF_ERROR(Get(j, "torch_dtype", &dtype, false));
  RETURN_IF_ERROR(Get(j, "dtype", &dtype, false));
  auto dt = ParseDType(dtype);
  c.dtype = dt.ok() ? *dt : DType::kF32;
  c.rope_style = RopeStyle::kHalf;
  c.name = "hf";
  RETURN_IF_ERROR(c.Validate());
  return c;
}

std::string ToHfConfigJson(const ModelConfig& c) {
  json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else {
    j["eos_token_id"] = c.eos_token_ids;
  }
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["mlp_bias"] = false;
  j["torch_dtype"] = c.dtype == DType::kF32 ? "float32" : c.dtype == DType::kF16 ? "float16" : "bfloat16";
  if (c.rope_scaling.type.empty()) {
    j["rope_scaling"] = nullptr;
  } else {
    j["rope_scaling"] = {{"rope_type", c.rope_scaling.type},
                         {"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings",
                          c.rope_scaling.original_max_position_embeddings}};
  }
  return j.dump(2) + "\n";
}

namespace {
ModelConfig Make(const char* name, int dim, int hidden, int layers, int heads, int kv, int vocab,
                 int ctx, double theta, double eps, bool tie) {
  ModelConfig c;
  c.name = name;
  c.hidden_size = dim;
  c.intermediate_size = hidden;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv;
  c.head_dim = dim / heads;
  c.vocab_size = vocab;
  c.max_position_embeddings = ctx;
  c.rope_theta = theta;
  c.rms_norm_eps = eps;
  c.tie_word_embeddings = tie;
  return c;
}
}  // namespace

std::vector<std::string> BuiltinConfigNames() {
  return {"stories260K", "stories15M", "tinyllama-1.1b", "llama-3.2-1b", "llama-3-8b"};
}

absl::StatusOr<ModelConfig> BuiltinConfig(const std::string& name) {
  ModelConfig c;
  if (name == "stories260K") {
    c = Make("stories260K", 64, 172, 5, 8, 4, 512, 512, 10000, 1e-5, true);
  } else if (name == "stories15M") {
    c = Make("stories15M", 288, 768, 6, 6, 6, 32000, 256, 10000, 1e-5, true);
  } else if (name == "tinyllama-1.1b") {
    c = Make("tinyllama-1.1b", 2048, 5632, 22, 32, 4, 32000, 2048, 10000, 1e-5, false);
  } else if (name == "llama-3.2-1b") {
    c = Make("llama-3.2-1b", 2048, 8192, 16, 32, 8, 128256, 131072, 500000, 1e-5, true);
    c.rope_scaling = {"llama3", 32.0, 1.0, 4.0, 8192};
    c.bos_token_id = 128000;
    c.eos_token_ids = {128001, 128008, 128009};
  } else if (name == "llama-3-8b") {
    c = Make("llama-3-8b", 4096, 14336, 32, 32, 8, 128256, 8192, 500000, 1e-5, false);
    c.bos_token_id = 128000;
    c.eos_token_ids = {128001, 128009};
  } else {
    return absl::NotFoundError(absl::StrCat("unknown built-in config '", name,
                                            "' (known: stories260K, stories15M, tinyllama-1.1b, "
                                            "llama-3.2-1b, llama-3-8b)"));
  }
  c.rope_style = RopeStyle::kHalf;
  RETURN_IF_ERROR(c.Validate());
  return c;
}

std::vector<double> RopeInvFrequencies(const ModelConfig& c) {
  int half = c.head_dim / 2;
  std::vector<double> inv(half);
  for (int i = 0; i < half; ++i) {
    inv[i] = 1.0 / std::pow(c.rope_theta, (2.0 * i) / c.head_dim);
  }
  if (c.rope_scaling.type == "llama3") {
    const auto& s = c.rope_scaling;
    double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
    double high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
    for (int i = 0; i < half; ++i) {
      double wavelen = 2.0 * M_PI / inv[i];
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        inv[i] = inv[i] / s.factor;
      } else {
        double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                        (s.high_freq_factor - s.low_freq_factor);
        inv[i] = (1.0 - smooth) * inv[i] / s.factor + smooth * inv[i];
      }
    }
  }
  return inv;
}

}  // namespace kvasir
