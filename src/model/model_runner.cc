#include "model/model_runner.h"

#include <algorithm>
#include <cmath>

#include "common/logging.h"

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
                               bool host_storage) {
  KvCacheConfig k;
  k.num_layers = c.num_layers;
  k.num_kv_heads = c.num_kv_heads;
  k.head_dim = c.head_dim;
  k.block_size = block_size;
  k.num_blocks = num_blocks;
  k.host_storage = host_storage;
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

absl::StatusOr<ForwardResult> ModelRunner::Forward(const std::vector<SequenceInput>& batch) {
  const ModelConfig& c = weights_->config;
  const int64_t d = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), hd = c.head_dim;
  const int64_t inter = c.intermediate_size, qkv_dim = qd + 2 * kvd;
  const float eps = static_cast<float>(c.rms_norm_eps);

  // ---- Validate everything before changing any state.
  RETURN_IF_ERROR(ValidateSequenceInputs(
      c, batch, [&](int64_t id) { return attention_->Contains(id); }));
  int64_t T = 0;
  for (const SequenceInput& s : batch) T += static_cast<int64_t>(s.tokens.size());
  std::vector<AttentionStepSeq> step(batch.size());
  for (size_t b = 0; b < batch.size(); ++b) {
    step[b] = {batch[b].seq_id, batch[b].start_pos, static_cast<int32_t>(batch[b].tokens.size())};
  }
  RETURN_IF_ERROR(attention_->BeginStep(step));

  // ---- Flatten the batch.
  std::vector<int32_t> ids(T), positions(T);
  std::vector<int32_t> row_seq(T);  // batch index of each token row
  {
    int64_t r = 0;
    for (size_t b = 0; b < batch.size(); ++b) {
      for (size_t i = 0; i < batch[b].tokens.size(); ++i, ++r) {
        ids[r] = batch[b].tokens[i];
        positions[r] = batch[b].start_pos + static_cast<int32_t>(i);
        row_seq[r] = static_cast<int32_t>(b);
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

  backend_->Embedding(ids.data(), weights_->embed, x_.data(), T, d);

  for (int32_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = weights_->layers[l];
    if (l == 0) {
      backend_->RmsNorm(x_.data(), lw.attn_norm, h_.data(), T, d, eps);
    }
    backend_->Gemm(h_.data(), lw.wqkv, qkv_.data(), T, qkv_dim, d);
    backend_->Rope(qkv_.data(), T, qkv_dim, c.num_heads + c.num_kv_heads, hd, positions.data(),
                   inv_freq_.data(), c.rope_style);

    RETURN_IF_ERROR(attention_->Attend(l, qkv_.data(), qkv_dim, attn_.data()));

    backend_->Gemm(attn_.data(), lw.wo, tmp_.data(), T, d, qd);
    backend_->AddRmsNorm(x_.data(), tmp_.data(), lw.ffn_norm, h_.data(), T, d, eps);
    backend_->Gemm(h_.data(), lw.w_gate_up, gate_up_.data(), T, 2 * inter, d);
    backend_->SiluMul(gate_up_.data(), act_.data(), T, inter);
    backend_->Gemm(act_.data(), lw.w_down, tmp_.data(), T, d, inter);
    const float* next_norm = l + 1 < c.num_layers ? weights_->layers[l + 1].attn_norm
                                                  : weights_->final_norm;
    backend_->AddRmsNorm(x_.data(), tmp_.data(), next_norm, h_.data(), T, d, eps);
  }

  // ---- Logits for the rows asked for (h_ holds the final-normed hidden states).
  ForwardResult out;
  const std::vector<int32_t> rows = SelectLogitRows(batch, c.vocab_size, &out);
  const int64_t R = static_cast<int64_t>(rows.size());
  std::vector<float> sel(R * d);  // [R, hidden]
  for (int64_t i = 0; i < R; ++i) {
    std::copy(h_.begin() + int64_t{rows[i]} * d, h_.begin() + (int64_t{rows[i]} + 1) * d,
              sel.begin() + i * d);
  }
  out.logits.resize(R * c.vocab_size);
  backend_->Gemm(sel.data(), weights_->lm_head, out.logits.data(), R, c.vocab_size, d);
  return out;
}

}  // namespace kvasir
