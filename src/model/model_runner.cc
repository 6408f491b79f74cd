#include "model/model_runner.h"

#include <algorithm>
#include <cmath>

#include "common/logging.h"
#include "model/llama_forward.h"

namespace kvasir {

namespace {

AttentionShape ShapeOf(const ModelConfig& c) {
  return {c.num_heads, c.num_kv_heads, c.head_dim, c.num_layers};
}

}  // namespace

ModelRunner::ModelRunner(const ModelWeights* weights, Backend* backend, KvCache* cache)
    : weights_(weights),
      backend_(backend),
      local_(std::make_unique<LocalAttention>(cache, backend, ShapeOf(weights->config))),
      attention_(local_.get()) {
  std::vector<double> inv = RopeInvFrequencies(weights->config);
  inv_freq_.assign(inv.begin(), inv.end());
}

ModelRunner::ModelRunner(const ModelWeights* weights, Backend* backend,
                         AttentionExecutor* attention)
    : weights_(weights), backend_(backend), attention_(attention) {
  std::vector<double> inv = RopeInvFrequencies(weights->config);
  inv_freq_.assign(inv.begin(), inv.end());
}

KvCacheConfig KvCacheConfigFor(const ModelConfig& c, int32_t block_size, int32_t num_blocks,
                               bool host_storage, KvDType dtype) {
  KvCacheConfig k;
  k.num_layers = c.num_layers;
  k.num_kv_heads = c.num_kv_heads;
  k.head_dim = c.head_dim;
  k.block_size = block_size;
  k.num_blocks = num_blocks;
  k.host_storage = host_storage;
  k.dtype = dtype;
  return k;
}

absl::Status ValidateSequenceInputs(const ModelConfig& c, const std::vector<SequenceInput>& batch,
                                    const std::function<bool(int64_t seq_id)>& known) {
  for (size_t b = 0; b < batch.size(); ++b) {
    const SequenceInput& s = batch[b];
    if (!known(s.seq_id)) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, " has no KV cache"));
    }
    if (s.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, ": no tokens"));
    }
    for (int32_t t : s.tokens) {
      if (t < 0 || t >= c.vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", t, " is outside the vocabulary [0, ", c.vocab_size, ")"));
      }
    }
    if (s.start_pos < 0 ||
        static_cast<int64_t>(s.start_pos) + s.tokens.size() > c.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence ", s.seq_id, ": positions ", s.start_pos, "..",
          s.start_pos + s.tokens.size(), " exceed the model's context of ",
          c.max_position_embeddings, " tokens"));
    }
    for (size_t o = 0; o < b; ++o) {
      if (batch[o].seq_id == s.seq_id) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq_id, " appears twice"));
      }
    }
  }
  return absl::OkStatus();
}

std::vector<int32_t> SelectLogitRows(const std::vector<SequenceInput>& batch, int32_t vocab_size,
                                     ForwardResult* out) {
  out->vocab_size = vocab_size;
  out->first_row.assign(batch.size(), -1);
  out->num_rows.assign(batch.size(), 0);
  std::vector<int32_t> rows;
  int32_t r = 0;
  for (size_t b = 0; b < batch.size(); ++b) {
    const int32_t n = static_cast<int32_t>(batch[b].tokens.size());
    if (batch[b].want_logits) {
      out->first_row[b] = static_cast<int32_t>(rows.size());
      for (int32_t i = batch[b].all_logits ? 0 : n - 1; i < n; ++i) rows.push_back(r + i);
      out->num_rows[b] = static_cast<int32_t>(rows.size()) - out->first_row[b];
    }
    r += n;
  }
  return rows;
}

// The CPU backend's ops for one step of ModelRunner::Forward.
class ModelRunner::CpuStep : public LlamaStepOps {
 public:
  CpuStep(ModelRunner* r, int64_t T, const std::vector<int32_t>& ids,
          const std::vector<int32_t>& positions, const std::vector<int32_t>& logit_rows,
          ForwardResult* out)
      : r_(r), c_(r->weights_->config), T_(T), ids_(ids), positions_(positions),
        logit_rows_(logit_rows), out_(out) {}

  absl::Status Embed(Act out) override {
    r_->backend_->Embedding(ids_.data(), r_->weights_->embed, buf(out), T_, c_.hidden_size);
    return absl::OkStatus();
  }
  absl::Status RmsNorm(Act x, NormWeight w, Act y) override {
    r_->backend_->RmsNorm(buf(x), norm(w), buf(y), T_, c_.hidden_size, eps());
    return absl::OkStatus();
  }
  absl::Status AddRmsNorm(Act residual, Act delta, NormWeight w, Act y) override {
    r_->backend_->AddRmsNorm(buf(residual), buf(delta), norm(w), buf(y), T_, c_.hidden_size,
                             eps());
    return absl::OkStatus();
  }
  absl::Status Linear(int32_t layer, Matrix m, Act x, Act y) override {
    const LayerWeights& lw = r_->weights_->layers[layer];
    const int64_t d = c_.hidden_size, qd = c_.q_dim(), inter = c_.intermediate_size;
    switch (m) {
      case Matrix::kQkv:
        r_->backend_->Gemm(buf(x), lw.wqkv, buf(y), T_, qd + 2 * c_.kv_dim(), d);
        break;
      case Matrix::kO:
        r_->backend_->Gemm(buf(x), lw.wo, buf(y), T_, d, qd);
        break;
      case Matrix::kGateUp:
        r_->backend_->Gemm(buf(x), lw.w_gate_up, buf(y), T_, 2 * inter, d);
        break;
      case Matrix::kDown:
        r_->backend_->Gemm(buf(x), lw.w_down, buf(y), T_, d, inter);
        break;
    }
    return absl::OkStatus();
  }
  absl::Status Rope(Act qkv) override {
    r_->backend_->Rope(buf(qkv), T_, c_.q_dim() + 2 * c_.kv_dim(), c_.num_heads + c_.num_kv_heads,
                       c_.head_dim, positions_.data(), r_->inv_freq_.data(), c_.rope_style);
    return absl::OkStatus();
  }
  absl::Status Attention(int32_t layer, Act qkv, Act out) override {
    return r_->attention_->Attend(layer, buf(qkv), c_.q_dim() + 2 * c_.kv_dim(), buf(out),
                                     nullptr);
  }
  absl::Status SiluMul(Act gate_up, Act out) override {
    r_->backend_->SiluMul(buf(gate_up), buf(out), T_, c_.intermediate_size);
    return absl::OkStatus();
  }
  absl::Status Logits(Act normed) override {
    const int64_t d = c_.hidden_size, R = static_cast<int64_t>(logit_rows_.size());
    const float* h = buf(normed);
    std::vector<float> sel(R * d);  // [R, hidden]
    for (int64_t i = 0; i < R; ++i) {
      std::copy(h + int64_t{logit_rows_[i]} * d, h + (int64_t{logit_rows_[i]} + 1) * d,
                sel.begin() + i * d);
    }
    out_->logits.resize(R * c_.vocab_size);
    r_->backend_->Gemm(sel.data(), r_->weights_->lm_head, out_->logits.data(), R, c_.vocab_size,
                       d);
    return absl::OkStatus();
  }

 private:
  float eps() const { return static_cast<float>(c_.rms_norm_eps); }
  const float* norm(NormWeight w) const {
    switch (w.kind) {
      case NormWeight::kAttn:
        return r_->weights_->layers[w.layer].attn_norm;
      case NormWeight::kFfn:
        return r_->weights_->layers[w.layer].ffn_norm;
      case NormWeight::kFinal:
        break;
    }
    return r_->weights_->final_norm;
  }
  float* buf(Act a) const {
    switch (a) {
      case Act::kResidual:
        return r_->x_.data();
      case Act::kNormed:
        return r_->h_.data();
      case Act::kQkv:
        return r_->qkv_.data();
      case Act::kAttn:
        return r_->attn_.data();
      case Act::kDelta:
        return r_->tmp_.data();
      case Act::kGateUp:
        return r_->gate_up_.data();
      case Act::kMlp:
        break;
    }
    return r_->act_.data();
  }

  ModelRunner* r_;
  const ModelConfig& c_;
  const int64_t T_;
  const std::vector<int32_t>& ids_;
  const std::vector<int32_t>& positions_;
  const std::vector<int32_t>& logit_rows_;
  ForwardResult* out_;
};

absl::StatusOr<ForwardResult> ModelRunner::Forward(const std::vector<SequenceInput>& batch) {
  const ModelConfig& c = weights_->config;
  const int64_t d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t inter = c.intermediate_size, qkv_dim = qd + 2 * kvd;

  // ---- Validate everything before changing any state.
  RETURN_IF_ERROR(ValidateSequenceInputs(
      c, batch, [&](int64_t id) { return attention_->Contains(id); }));
  int64_t T = 0;
  for (const SequenceInput& s : batch) T += static_cast<int64_t>(s.tokens.size());
  std::vector<AttentionStepSeq> step(batch.size());
  for (size_t b = 0; b < batch.size(); ++b) {
    step[b] = {batch[b].seq_id, batch[b].start_pos, static_cast<int32_t>(batch[b].tokens.size()),
               batch[b].kv_policy, batch[b].prompt_len};
  }
  RETURN_IF_ERROR(attention_->BeginStep(step));

  // ---- Flatten the batch.
  std::vector<int32_t> ids(T), positions(T);
  {
    int64_t r = 0;
    for (size_t b = 0; b < batch.size(); ++b) {
      for (size_t i = 0; i < batch[b].tokens.size(); ++i, ++r) {
        ids[r] = batch[b].tokens[i];
        positions[r] = batch[b].start_pos + static_cast<int32_t>(i);
      }
    }
  }
  x_.resize(T * d);      // [T, hidden] residual stream
  h_.resize(T * d);      // [T, hidden] normed
  qkv_.resize(T * qkv_dim);   // [T, q | k | v]
  attn_.resize(T * qd);  // [T, q_dim]
  tmp_.resize(T * d);    // [T, hidden]
  gate_up_.resize(T * 2 * inter);  // [T, 2 * intermediate]
  act_.resize(T * inter);          // [T, intermediate]

  ForwardResult out;
  const std::vector<int32_t> rows = SelectLogitRows(batch, c.vocab_size, &out);
  CpuStep step_ops(this, T, ids, positions, rows, &out);
  RETURN_IF_ERROR(RunLlamaForward(c.num_layers, step_ops));
  return out;
}

}  // namespace kvasir
