#include "model/generator.h"

#include <algorithm>
#include <memory>
#include <optional>

#include "model/sampling/stop_string_matcher.h"

namespace kvasir {

Generator::Generator(ModelRunner* runner, KvCache* cache, const Tokenizer* tokenizer,
                     GeneratorOptions options)
    : runner_(runner), cache_(cache), tokenizer_(tokenizer), options_(options) {}

namespace {

struct SeqState {
  int64_t seq_id = 0;
  const GenerationRequest* req = nullptr;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<IncrementalDecoder> decoder;
  std::unique_ptr<StopStringMatcher> stops;
  int32_t prefilled = 0;  // prompt tokens already in the KV cache
  int32_t pos = 0;        // next position
  int32_t pending = -1;   // sampled token not yet fed to the model
  bool done = false;
};

}  // namespace

absl::StatusOr<std::vector<GenerationResult>> Generator::Generate(
    const std::vector<GenerationRequest>& requests, const StreamCallback& on_text) {
  const ModelConfig& c = runner_->config();
  std::vector<GenerationResult> results(requests.size());
  std::vector<SeqState> seqs(requests.size());

  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationRequest& r = requests[i];
    if (r.prompt.empty()) return absl::InvalidArgumentError("empty prompt");
    if (static_cast<int64_t>(r.prompt.size()) >= c.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt of ", r.prompt.size(), " tokens does not fit the model's context of ",
          c.max_position_embeddings, " tokens (at least one position must remain to generate)"));
    }
    for (int32_t t : r.prompt) {
      if (t < 0 || t >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("prompt token id ", t, " outside vocabulary"));
      }
    }
    RETURN_IF_ERROR(ValidateSamplingParams(r.params, c.vocab_size));
    if (!r.params.stop.empty() && tokenizer_ == nullptr) {
      return absl::InvalidArgumentError("stop strings need a tokenizer");
    }
  }
  auto cleanup = [&]() {
    for (SeqState& s : seqs) {
      if (s.seq_id != 0) cache_->Free(s.seq_id);
    }
  };
  for (size_t i = 0; i < requests.size(); ++i) {
    SeqState& s = seqs[i];
    s.req = &requests[i];
    s.seq_id = next_seq_id_++;
    if (absl::Status st = cache_->Create(s.seq_id); !st.ok()) {
      s.seq_id = 0;
      cleanup();
      return st;
    }
    s.sampler = std::make_unique<Sampler>(s.req->params, s.req->prompt);
    if (tokenizer_) s.decoder = std::make_unique<IncrementalDecoder>(*tokenizer_);
    s.stops = std::make_unique<StopStringMatcher>(s.req->params.stop);
    results[i].prompt_tokens = static_cast<int32_t>(s.req->prompt.size());
  }

  auto emit = [&](size_t i, int32_t token, const std::string& text) {
    if (text.empty()) return;
    results[i].text += text;
    if (on_text) on_text(i, token, text);
  };
  auto finish = [&](size_t i, const char* reason) {
    SeqState& s = seqs[i];
    s.done = true;
    results[i].finish_reason = reason;
    if (s.decoder && !s.stops->stopped()) {
      auto r = s.stops->Push(s.decoder->Flush());
      emit(i, -1, r.emit);
      if (!r.stopped) emit(i, -1, s.stops->Flush());
    }
    cache_->Free(s.seq_id);
    s.seq_id = 0;
  };

  while (true) {
    // Build one step: decodes first (one token each), then prefill chunks in FCFS order.
    std::vector<SequenceInput> batch;
    std::vector<size_t> batch_seq;
    int32_t budget = options_.max_batch_tokens;
    for (size_t i = 0; i < seqs.size() && budget > 0; ++i) {
      SeqState& s = seqs[i];
      if (s.done || s.pending < 0 || batch.size() >= static_cast<size_t>(options_.max_sequences))
        continue;
      SequenceInput in;
      in.seq_id = s.seq_id;
      in.tokens = {s.pending};
      in.start_pos = s.pos;
      batch.push_back(std::move(in));
      batch_seq.push_back(i);
      --budget;
    }
    for (size_t i = 0; i < seqs.size() && budget > 0; ++i) {
      SeqState& s = seqs[i];
      const int32_t plen = static_cast<int32_t>(s.req->prompt.size());
      if (s.done || s.prefilled >= plen || batch.size() >= static_cast<size_t>(options_.max_sequences))
        continue;
      int32_t n = std::min(budget, plen - s.prefilled);
      SequenceInput in;
      in.seq_id = s.seq_id;
      in.tokens.assign(s.req->prompt.begin() + s.prefilled, s.req->prompt.begin() + s.prefilled + n);
      in.start_pos = s.pos;
      in.want_logits = s.prefilled + n == plen;
      batch.push_back(std::move(in));
      batch_seq.push_back(i);
      budget -= n;
    }
    if (batch.empty()) break;

    auto out = runner_->Forward(batch);
    if (!out.ok()) {
      cleanup();
      return out.status();
    }
    for (size_t b = 0; b < batch.size(); ++b) {
      const size_t i = batch_seq[b];
      SeqState& s = seqs[i];
      const int32_t n = static_cast<int32_t>(batch[b].tokens.size());
      s.pos += n;
      if (s.pending >= 0) {
        s.pending = -1;
      } else {
        s.prefilled += n;
      }
      if (!batch[b].want_logits) continue;
      const float* logits = out->row(out->first_row[b]);
      SampleResult r = s.sampler->Sample(std::span<const float>(logits, c.vocab_size));
      GenerationResult& res = results[i];
      res.tokens.push_back(r.token);
      res.samples.push_back(r);
      const SamplingParams& p = s.req->params;
      bool is_eos = !p.ignore_eos && std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(),
                                               r.token) != c.eos_token_ids.end();
      bool is_stop_id = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), r.token) !=
                        p.stop_token_ids.end();
      if (is_eos || is_stop_id) {
        finish(i, "stop");
        continue;
      }
      if (s.decoder) {
        auto sr = s.stops->Push(s.decoder->Push(r.token));
        emit(i, r.token, sr.emit);
        if (sr.stopped) {
          finish(i, "stop");
          continue;
        }
      }
      if (static_cast<int32_t>(res.tokens.size()) >= p.max_tokens ||
          s.pos >= c.max_position_embeddings) {
        finish(i, "length");
        continue;
      }
      s.pending = r.token;
    }
  }
  cleanup();
  return results;
}

}  // namespace kvasir
