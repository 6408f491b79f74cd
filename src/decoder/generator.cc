#include "decoder/generator.h"

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>

#include "decoder/engine.h"
#include "decoder/generated_text.h"

namespace kvasir {

Generator::Generator(StepRunner* runner, const Tokenizer* tokenizer,
                     GeneratorOptions options)
    : runner_(runner), tokenizer_(tokenizer), options_(options) {}

absl::StatusOr<std::vector<GenerationResult>> Generator::Generate(
    const std::vector<GenerationRequest>& requests, const StreamCallback& on_text) {
  const ModelConfig& c = runner_->config();
  for (const GenerationRequest& r : requests) {
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

  struct Inbox {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<EngineEvent> events;
  } inbox;
  struct State {
    std::unique_ptr<GeneratedText> text;  // null without a tokenizer
    bool done = false;  // finish reason decided (stop string); later tokens are ignored
  };
  std::vector<GenerationResult> results(requests.size());
  std::vector<State> state(requests.size());

  EngineConfig ec;
  ec.max_num_seqs = options_.max_sequences;
  ec.max_num_batched_tokens = options_.max_batch_tokens;
  ec.max_waiting = static_cast<int32_t>(requests.size()) + 1;
  Engine engine(runner_, ec);
  engine.Start();
  for (size_t i = 0; i < requests.size(); ++i) {
    results[i].prompt_tokens = static_cast<int32_t>(requests[i].prompt.size());
    if (tokenizer_) {
      state[i].text = std::make_unique<GeneratedText>(*tokenizer_, requests[i].params.stop,
                                                      requests[i].prompt);
    }
    EngineRequest er;
    er.id = i;
    er.prompt = requests[i].prompt;
    er.params = requests[i].params;
    er.kv_policy = requests[i].kv_policy;
    er.on_event = [&inbox](EngineEvent ev) {
      {
        std::lock_guard<std::mutex> lock(inbox.mu);
        inbox.events.push_back(std::move(ev));
      }
      inbox.cv.notify_one();
    };
    if (absl::Status s = engine.Submit(std::move(er)); !s.ok()) {
      engine.Stop();
      return s;
    }
  }

  auto emit = [&](size_t i, int32_t token, const std::string& text) {
    if (text.empty()) return;
    results[i].text += text;
    if (on_text) on_text(i, token, text);
  };
  size_t remaining = requests.size();
  absl::Status failure;
  while (remaining > 0) {
    EngineEvent ev;
    {
      std::unique_lock<std::mutex> lock(inbox.mu);
      inbox.cv.wait(lock, [&] { return !inbox.events.empty(); });
      ev = std::move(inbox.events.front());
      inbox.events.pop_front();
    }
    const size_t i = static_cast<size_t>(ev.id);
    State& st = state[i];
    GenerationResult& res = results[i];
    if (!st.done) {
      for (size_t k = 0; k < ev.tokens.size(); ++k) {
        res.tokens.push_back(ev.tokens[k]);
        if (k < ev.samples.size()) res.samples.push_back(ev.samples[k]);
        // A token that ends the request by EOS / stop id is generated but not shown.
        if (ev.finished && ev.finish_reason == "stop") continue;
        if (st.text) {
          auto r = st.text->Push(ev.tokens[k]);
          emit(i, ev.tokens[k], r.text);
          if (r.stopped) {
            st.done = true;
            res.finish_reason = "stop";
            if (!ev.finished) engine.Cancel(ev.id);
            break;
          }
        }
      }
    }
    if (!ev.finished) continue;
    --remaining;
    res.kv_tokens_kept = ev.kv_tokens_kept;
    if (ev.finish_reason == "error") {
      failure = ev.error;
      continue;
    }
    if (!st.done) {
      res.finish_reason = ev.finish_reason;
      if (st.text) emit(i, -1, st.text->Finish());
    }
  }
  engine.Stop();
  last_stats_ = engine.stats();
  if (!failure.ok()) return failure;
  return results;
}

}  // namespace kvasir
