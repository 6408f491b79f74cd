#include "model/weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include "common/logging.h"
#include "common/thread_pool.h"
#include "nlohmann/json.hpp"

namespace kvasir {

namespace fs = std::filesystem;
using nlohmann::json;

float* ModelWeights::Allocate(int64_t n) {
  owned.emplace_back(new float[std::max<int64_t>(n, 1)]);
  owned_floats += n;
  return owned.back().get();
}

namespace {

// ---------------------------------------------------------------------------------------------
// llama2.c: 7 x int32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
// seq_len; vocab_size < 0 means an unshared classifier), then fp32 arrays:
// token_embedding [vocab, dim], rms_att [L, dim], wq [L, dim, dim], wk [L, kv_dim, dim],
// wv [L, kv_dim, dim], wo [L, dim, dim], rms_ffn [L, dim], w1 [L, hidden, dim],
// w2 [L, dim, hidden], w3 [L, hidden, dim], rms_final [dim], freq_cis_real/imag
// [seq_len, head_size / 2] each (unused), wcls [vocab, dim] when unshared.
// ---------------------------------------------------------------------------------------------
void FuseRows(float* dst, std::initializer_list<std::pair<const float*, int64_t>> parts) {
  for (const auto& [src, n] : parts) {
    std::memcpy(dst, src, n * sizeof(float));
    dst += n;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadLlama2cWeights(const std::string& path) {
  auto w = std::make_unique<ModelWeights>();
  ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  const size_t size = file->size();
  if (size < 28) {
    return absl::DataLossError(absl::StrCat("corrupt llama2.c model ", path, ": ", size,
                                            " bytes is shorter than the 28-byte header"));
  }
  int32_t h[7];
  std::memcpy(h, file->data(), sizeof(h));
  ModelConfig& c = w->config;
  c.name = fs::path(path).parent_path().filename().string();
  c.hidden_size = h[0];
  c.intermediate_size = h[1];
  c.num_layers = h[2];
  c.num_heads = h[3];
  c.num_kv_heads = h[4];
  bool shared = h[5] > 0;
  c.vocab_size = h[5] > 0 ? h[5] : (h[5] == INT32_MIN ? 0 : -h[5]);
  c.max_position_embeddings = h[6];
  c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-5;
  c.rope_style = RopeStyle::kInterleaved;
  c.tie_word_embeddings = shared;
  c.bos_token_id = 1;
  c.eos_token_ids = {1};  // llama2.c models end a story with BOS
  c.dtype = DType::kF32;
  if (absl::Status s = c.Validate(); !s.ok()) {
    return absl::DataLossError(absl::StrCat("corrupt llama2.c model ", path, ": ", s.message()));
  }
  if (c.hidden_size % c.num_heads != 0) {
    return absl::DataLossError(absl::StrCat("corrupt llama2.c model ", path,
                                            ": dim not divisible by n_heads"));
  }
  const int64_t d = c.hidden_size, hd = c.intermediate_size, L = c.num_layers;
  const int64_t kvd = c.kv_dim(), V = c.vocab_size;
  const int64_t rope_tables = static_cast<int64_t>(c.max_position_embeddings) * c.head_dim;
  int64_t need = V * d + L * d + L * d * d + 2 * L * kvd * d + L * d * d + L * d + 3 * L * hd * d +
                 d + rope_tables + (shared ? 0 : V * d);
  int64_t have = static_cast<int64_t>((size - 28) / 4);
  if (have < need) {
    return absl::DataLossError(absl::StrCat("truncated llama2.c model ", path, ": header needs ",
                                            need * 4 + 28, " bytes, file has ", size));
  }
  if (have > need) {
    SPDLOG_WARN("llama2.c model {} has {} trailing bytes", path, (have - need) * 4);
  }
  const float* p = reinterpret_cast<const float*>(file->data() + 28);
  auto take = [&p](int64_t n) {
    const float* r = p;
    p += n;
    return r;
  };
  w->embed = take(V * d);
  const float* rms_att = take(L * d);
  const float* wq = take(L * d * d);
  const float* wk = take(L * kvd * d);
  const float* wv = take(L * kvd * d);
  const float* wo = take(L * d * d);
  const float* rms_ffn = take(L * d);
  const float* w1 = take(L * hd * d);
  const float* w2 = take(L * d * hd);
  const float* w3 = take(L * hd * d);
  w->final_norm = take(d);
  take(rope_tables);
  w->lm_head = shared ? w->embed : take(V * d);
  for (int64_t l = 0; l < L; ++l) {
    LayerWeights lw;
    lw.attn_norm = rms_att + l * d;
    float* qkv = w->Allocate((d + 2 * kvd) * d);
    FuseRows(qkv, {{wq + l * d * d, d * d}, {wk + l * kvd * d, kvd * d}, {wv + l * kvd * d, kvd * d}});
    lw.wqkv = qkv;
    lw.wo = wo + l * d * d;
    lw.ffn_norm = rms_ffn + l * d;
    float* gu = w->Allocate(2 * hd * d);
    FuseRows(gu, {{w1 + l * hd * d, hd * d}, {w3 + l * hd * d, hd * d}});
    lw.w_gate_up = gu;
    lw.w_down = w2 + l * d * hd;
    w->layers.push_back(lw);
  }
  w->format = ModelFormat::kLlama2c;
  w->mapped.push_back(std::move(file));
  return w;
}

namespace {

// Collects the safetensors files of an HF model directory (single file or sharded index).
absl::StatusOr<std::vector<std::string>> SafetensorsShards(const std::string& dir) {
  fs::path single = fs::path(dir) / "model.safetensors";
  fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(index)) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(index.string()));
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") ||
        !j["weight_map"].is_object()) {
      return absl::DataLossError("corrupt " + index.string() + ": no weight_map object");
    }
    std::set<std::string> files;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) return absl::DataLossError("corrupt " + index.string());
      std::string f = it.value().get<std::string>();
      if (f.find('/') != std::string::npos || f.find("..") != std::string::npos) {
        return absl::InvalidArgumentError("weight_map names a file outside the model dir: " + f);
      }
      files.insert((fs::path(dir) / f).string());
    }
    if (files.empty()) return absl::DataLossError("empty weight_map in " + index.string());
    return std::vector<std::string>(files.begin(), files.end());
  }
  if (fs::exists(single)) return std::vector<std::string>{single.string()};
  return absl::NotFoundError("no model.safetensors or model.safetensors.index.json in " + dir);
}

// Finds a tensor across shards, checks its shape, and returns fp32 data (in place for f32).
class TensorSource {
 public:
  TensorSource(ModelWeights* w, ThreadPool* pool) : w_(w), pool_(pool) {}

  absl::StatusOr<const TensorView*> Find(const std::string& name, std::vector<int64_t> shape) {
    for (const auto& f : w_->safetensors) {
      if (const TensorView* t = f->Find(name)) {
        if (t->shape != shape) {
          return absl::InvalidArgumentError(absl::StrCat(
              "tensor ", name, " in ", f->path(), " has shape ", ShapeStr(t->shape),
              " but config.json implies ", ShapeStr(shape)));
        }
        return t;
      }
    }
    return absl::NotFoundError("tensor " + name + " is missing from the model's safetensors");
  }

  absl::StatusOr<const float*> Get(const std::string& name, std::vector<int64_t> shape) {
    ASSIGN_OR_RETURN(const TensorView* t, Find(name, shape));
    if (t->dtype == DType::kF32 && reinterpret_cast<uintptr_t>(t->data) % 4 == 0) {
      return reinterpret_cast<const float*>(t->data);
    }
    float* dst = w_->Allocate(t->numel());
    Convert(*t, dst);
    return dst;
  }

  // Concatenates several [rows_i, cols] tensors into one owned [sum rows, cols] buffer.
  absl::StatusOr<const float*> Fused(const std::vector<std::pair<std::string, int64_t>>& parts,
                                     int64_t cols) {
    int64_t rows = 0;
    std::vector<const TensorView*> views;
    for (const auto& [name, r] : parts) {
      ASSIGN_OR_RETURN(const TensorView* t, Find(name, {r, cols}));
      views.push_back(t);
      rows += r;
    }
    float* dst = w_->Allocate(rows * cols);
    float* out = dst;
    for (const TensorView* t : views) {
      Convert(*t, out);
      out += t->numel();
    }
    return dst;
  }

 private:
  static std::string ShapeStr(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) absl::StrAppend(&r, i ? ", " : "", s[i]);
    return r + "]";
  }
  void Convert(const TensorView& t, float* dst) {
    const int64_t n = t.numel();
    const size_t es = DTypeSize(t.dtype);
    pool_->ParallelFor((n + 65535) / 65536, [&](int64_t b, int64_t e) {
      int64_t lo = b * 65536, hi = std::min(n, e * 65536);
      ConvertToF32(t.dtype, t.data + lo * es, dst + lo, hi - lo);
    });
  }

  ModelWeights* w_;
  ThreadPool* pool_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadHfWeights(const std::string& dir,
                                                            int num_threads) {
  auto w = std::make_unique<ModelWeights>();
  ASSIGN_OR_RETURN(std::string cfg_text, ReadFileToString((fs::path(dir) / "config.json").string()));
  ASSIGN_OR_RETURN(w->config, ParseHfConfig(cfg_text));
  w->config.name = fs::path(dir).filename().string();
  ASSIGN_OR_RETURN(std::vector<std::string> shards, SafetensorsShards(dir));
  for (const auto& s : shards) {
    ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(s));
    w->safetensors.push_back(std::move(f));
  }
  ThreadPool pool(num_threads);
  TensorSource src(w.get(), &pool);
  const ModelConfig& c = w->config;
  const int64_t d = c.hidden_size, hd = c.intermediate_size, V = c.vocab_size;
  ASSIGN_OR_RETURN(w->embed, src.Get("model.embed_tokens.weight", {V, d}));
  ASSIGN_OR_RETURN(w->final_norm, src.Get("model.norm.weight", {d}));
  if (c.tie_word_embeddings) {
    w->lm_head = w->embed;
  } else {
    ASSIGN_OR_RETURN(w->lm_head, src.Get("lm_head.weight", {V, d}));
  }
  for (int l = 0; l < c.num_layers; ++l) {
    std::string p = absl::StrCat("model.layers.", l, ".");
    LayerWeights lw;
    ASSIGN_OR_RETURN(lw.attn_norm, src.Get(p + "input_layernorm.weight", {d}));
    ASSIGN_OR_RETURN(lw.wqkv, src.Fused({{p + "self_attn.q_proj.weight", c.q_dim()},
                                         {p + "self_attn.k_proj.weight", c.kv_dim()},
                                         {p + "self_attn.v_proj.weight", c.kv_dim()}},
                                        d));
    ASSIGN_OR_RETURN(lw.wo, src.Get(p + "self_attn.o_proj.weight", {d, c.q_dim()}));
    ASSIGN_OR_RETURN(lw.ffn_norm, src.Get(p + "post_attention_layernorm.weight", {d}));
    ASSIGN_OR_RETURN(lw.w_gate_up, src.Fused({{p + "mlp.gate_proj.weight", hd},
                                              {p + "mlp.up_proj.weight", hd}},
                                             d));
    ASSIGN_OR_RETURN(lw.w_down, src.Get(p + "mlp.down_proj.weight", {d, hd}));
    w->layers.push_back(lw);
  }
  w->format = ModelFormat::kHf;
  return w;
}

namespace {

uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Fills dst[n] with uniform values in [-scale, scale], deterministic for (seed, stream)
// whatever the thread count: each 64k-element chunk has its own generator state.
void FillUniform(ThreadPool& pool, float* dst, int64_t n, float scale, uint64_t seed,
                 uint64_t stream) {
  constexpr int64_t kChunk = 65536;
  pool.ParallelFor((n + kChunk - 1) / kChunk, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      uint64_t state = seed * 0x100000001b3ull ^ (stream << 32) ^ static_cast<uint64_t>(c);
      SplitMix64(state);
      int64_t hi = std::min(n, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < hi; ++i) {
        uint64_t r = SplitMix64(state);
        float u = static_cast<float>(r >> 40) * (1.0f / 16777216.0f);  // [0, 1)
        dst[i] = (2.0f * u - 1.0f) * scale;
      }
    }
  });
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelWeights>> MakeDummyWeights(const ModelConfig& config,
                                                               uint64_t seed, int num_threads) {
  RETURN_IF_ERROR(config.Validate());
  auto w = std::make_unique<ModelWeights>();
  w->config = config;
  w->format = ModelFormat::kDummy;
  const ModelConfig& c = w->config;
  const int64_t d = c.hidden_size, hd = c.intermediate_size, V = c.vocab_size;
  ThreadPool pool(num_threads);
  uint64_t stream = 0;
  // Scales keep activations O(1) through the layers: uniform(-a, a) has variance a^2 / 3.
  auto rand = [&](int64_t n, float scale) {
    float* p = w->Allocate(n);
    FillUniform(pool, p, n, scale, seed, stream++);
    return p;
  };
  auto ones = [&](int64_t n) {
    float* p = w->Allocate(n);
    std::fill(p, p + n, 1.0f);
    ++stream;
    return p;
  };
  const float in_d = std::sqrt(3.0f / d), in_q = std::sqrt(3.0f / c.q_dim());
  const float in_h = std::sqrt(3.0f / hd);
  w->embed = rand(V * d, 1.0f);
  for (int l = 0; l < c.num_layers; ++l) {
    LayerWeights lw;
    lw.attn_norm = ones(d);
    lw.wqkv = rand((c.q_dim() + 2 * c.kv_dim()) * d, in_d);
    lw.wo = rand(d * c.q_dim(), in_q * 0.5f);
    lw.ffn_norm = ones(d);
    lw.w_gate_up = rand(2 * hd * d, in_d);
    lw.w_down = rand(d * hd, in_h * 0.5f);
    w->layers.push_back(lw);
  }
  w->final_norm = ones(d);
  w->lm_head = c.tie_word_embeddings ? w->embed : rand(V * d, in_d);
  return w;
}

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadModelWeights(const std::string& model_dir,
                                                               const LoadOptions& options) {
  if (options.dummy) {
    ModelConfig config;
    std::string spec = options.dummy_config;
    if (spec.empty() && !model_dir.empty()) spec = (fs::path(model_dir) / "config.json").string();
    if (spec.empty()) return absl::InvalidArgumentError("--load-format dummy needs a config");
    if (fs::exists(spec) && fs::is_regular_file(spec)) {
      ASSIGN_OR_RETURN(std::string text, ReadFileToString(spec));
      ASSIGN_OR_RETURN(config, ParseHfConfig(text));
      config.name = fs::path(spec).parent_path().filename().string();
    } else {
      ASSIGN_OR_RETURN(config, BuiltinConfig(spec));
    }
    if (options.config_only) {
      auto w = std::make_unique<ModelWeights>();
      w->config = config;
      return w;
    }
    return MakeDummyWeights(config, options.seed, options.num_threads);
  }
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) {
    return absl::NotFoundError("model directory not found: " + model_dir);
  }
  fs::path dir(model_dir);
  if (fs::exists(dir / "config.json")) {
    if (options.config_only) {
      auto w = std::make_unique<ModelWeights>();
      ASSIGN_OR_RETURN(std::string text, ReadFileToString((dir / "config.json").string()));
      ASSIGN_OR_RETURN(w->config, ParseHfConfig(text));
      w->config.name = dir.filename().string();
      return w;
    }
    return LoadHfWeights(model_dir, options.num_threads);
  }
  if (fs::exists(dir / "model.bin")) return LoadLlama2cWeights((dir / "model.bin").string());
  return absl::NotFoundError("no model in " + model_dir +
                             " (expected config.json + model.safetensors, or llama2.c model.bin)");
}

absl::Status WriteHfModel(const ModelWeights& w, const std::string& dir, DType dtype) {
  const ModelConfig& c = w.config;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError("cannot create " + dir + ": " + ec.message());
  const int64_t d = c.hidden_size, hd = c.intermediate_size, V = c.vocab_size;
  const int64_t qd = c.q_dim(), kvd = c.kv_dim(), hdim = c.head_dim;
  std::vector<std::vector<float>> keep;  // permuted copies
  // Interleaved -> rotate-half: within each head, output row r < hdim/2 takes input row 2r,
  // row hdim/2 + r takes 2r + 1.
  auto permute = [&](const float* src, int64_t heads) -> const float* {
    if (c.rope_style == RopeStyle::kHalf) return src;
    keep.emplace_back(heads * hdim * d);
    float* dst = keep.back().data();
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t r = 0; r < hdim; ++r) {
        int64_t from = r < hdim / 2 ? 2 * r : 2 * (r - hdim / 2) + 1;
        std::memcpy(dst + (h * hdim + r) * d, src + (h * hdim + from) * d, d * sizeof(float));
      }
    }
    return dst;
  };
  std::vector<TensorToWrite> t;
  t.push_back({"model.embed_tokens.weight", {V, d}, w.embed});
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    std::string p = absl::StrCat("model.layers.", l, ".");
    t.push_back({p + "input_layernorm.weight", {d}, lw.attn_norm});
    t.push_back({p + "self_attn.q_proj.weight", {qd, d}, permute(lw.wqkv, c.num_heads)});
    t.push_back({p + "self_attn.k_proj.weight", {kvd, d}, permute(lw.wqkv + qd * d, c.num_kv_heads)});
    t.push_back({p + "self_attn.v_proj.weight", {kvd, d}, lw.wqkv + (qd + kvd) * d});
    t.push_back({p + "self_attn.o_proj.weight", {d, qd}, lw.wo});
    t.push_back({p + "post_attention_layernorm.weight", {d}, lw.ffn_norm});
    t.push_back({p + "mlp.gate_proj.weight", {hd, d}, lw.w_gate_up});
    t.push_back({p + "mlp.up_proj.weight", {hd, d}, lw.w_gate_up + hd * d});
    t.push_back({p + "mlp.down_proj.weight", {d, hd}, lw.w_down});
  }
  t.push_back({"model.norm.weight", {d}, w.final_norm});
  if (!c.tie_word_embeddings) t.push_back({"lm_head.weight", {V, d}, w.lm_head});
  RETURN_IF_ERROR(WriteSafetensors((fs::path(dir) / "model.safetensors").string(), t, dtype));
  ModelConfig out = c;
  out.rope_style = RopeStyle::kHalf;
  out.dtype = dtype;
  return WriteStringToFile((fs::path(dir) / "config.json").string(), ToHfConfigJson(out));
}

}  // namespace kvasir
