#include "tools/bench_offline.h"

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "decoder/engine.h"
#include "tools/cli_args.h"
#include "tools/engine_setup.h"

namespace kvasir {
namespace {

using Clock = std::chrono::steady_clock;

struct RequestRecord {
  Clock::time_point first_token;
  int32_t tokens = 0;
  bool finished = false;
  std::string finish_reason;
  absl::Status error;
};

// Queues `prompts` at once and waits for all of them; records[i] gets request i's outcome.
absl::Status RunAll(Engine* engine, const std::vector<std::vector<int32_t>>& prompts,
                    const SamplingParams& params, std::vector<RequestRecord>* records) {
  std::mutex mu;
  std::condition_variable done_cv;
  size_t done = 0;
  records->assign(prompts.size(), RequestRecord{});
  for (size_t i = 0; i < prompts.size(); ++i) {
    EngineRequest r;
    r.id = i + 1;
    r.prompt = prompts[i];
    r.params = params;
    r.on_event = [&, i](EngineEvent ev) {
      std::lock_guard<std::mutex> lock(mu);
      RequestRecord& rec = (*records)[i];
      if (rec.tokens == 0 && !ev.tokens.empty()) rec.first_token = Clock::now();
      rec.tokens += static_cast<int32_t>(ev.tokens.size());
      if (ev.finished) {
        rec.finished = true;
        rec.finish_reason = ev.finish_reason;
        rec.error = ev.error;
        ++done;
        done_cv.notify_all();
      }
    };
    RETURN_IF_ERROR(engine->Submit(std::move(r)));
  }
  std::unique_lock<std::mutex> lock(mu);
  done_cv.wait(lock, [&] { return done == prompts.size(); });
  return absl::OkStatus();
}

}  // namespace

int BenchOfflineMain(int argc, char** argv) {
  auto specs = cli::With({
      {"num-prompts", true, "requests, all queued at the start (default 256)"},
      {"input-len", true, "prompt tokens per request, random ids (default 1000)"},
      {"output-len", true, "generated tokens per request, EOS ignored (default 1000)"},
      {"max-num-seqs", true, "sequences per step (default 256)"},
      {"max-num-batched-tokens", true, "tokens per step (default 8192)"},
      {"kv-blocks", true, "KV blocks of 16 tokens (default: cpu enough for every running "
                          "sequence; cuda from --gpu-memory-utilization)"},
      {"temperature", true, "0 (default) = greedy"},
      {"seed", true, "prompt and sampling seed (default 0)"},
      {"warmup", true, "warm-up requests of 16 tokens before the timed run (default 4)"},
  });
  auto a = cli::Args::Parse(argc, argv, 2, specs);
  if (!a.ok()) return cli::Fail(a.status());
  if (a->Has("help")) {
    std::fputs(cli::Usage("bench-offline", specs).c_str(), stdout);
    return 0;
  }
  InitLogging(a->Str("log-level", "warn"));
  auto eo = EngineOptionsFromArgs(*a);
  if (!eo.ok()) return cli::Fail(eo.status());
  auto num = a->Int("num-prompts", 256);
  auto in_len = a->Int("input-len", 1000);
  auto out_len = a->Int("output-len", 1000);
  auto max_seqs = a->Int("max-num-seqs", 256);
  auto max_tokens = a->Int("max-num-batched-tokens", 8192);
  auto kv_blocks = a->Int("kv-blocks", 0);
  auto temperature = a->Float("temperature", 0.0);
  auto seed = a->Int("seed", 0);
  auto warmup = a->Int("warmup", 4);
  for (const absl::Status& s : {num.status(), in_len.status(), out_len.status(),
                                max_seqs.status(), max_tokens.status(), kv_blocks.status(),
                                temperature.status(), seed.status(), warmup.status()}) {
    if (!s.ok()) return cli::Fail(s);
  }
  if (*num < 1 || *in_len < 1 || *out_len < 1 || *max_seqs < 1 || *max_tokens < 1 ||
      *kv_blocks < 0 || *warmup < 0 || *num > (1 << 20) || *max_seqs > (1 << 16) ||
      *max_tokens > (1 << 24)) {
    return cli::Fail(absl::InvalidArgumentError(
        "--num-prompts, --input-len, --output-len, --max-num-seqs, --max-num-batched-tokens "
        "must be positive (and sane); --kv-blocks, --warmup >= 0"));
  }
  eo->need_tokenizer = false;
  eo->max_num_seqs = static_cast<int32_t>(*max_seqs);
  eo->kv_blocks = *kv_blocks;
  if (eo->device == "cpu" && eo->kv_blocks == 0) {
    eo->kv_tokens = std::min(*num, *max_seqs) * (*in_len + *out_len);
  }
  auto model = CreateLocalModel(*eo);
  if (!model.ok()) return cli::Fail(model.status());
  LocalModel& m = **model;
  const ModelConfig& c = m.weights->config;
  if (*in_len + *out_len > c.max_position_embeddings) {
    return cli::Fail(absl::InvalidArgumentError(absl::StrCat(
        "input + output (", *in_len + *out_len, ") exceeds the context of ",
        c.max_position_embeddings)));
  }

  EngineConfig ec;
  ec.max_num_seqs = static_cast<int32_t>(*max_seqs);
  ec.max_num_batched_tokens = static_cast<int32_t>(*max_tokens);
  ec.max_waiting = static_cast<int32_t>(*num + *warmup + 1);
  Engine engine(m.runner.get(), ec);
  engine.Start();

  std::mt19937_64 rng(static_cast<uint64_t>(*seed));
  std::uniform_int_distribution<int32_t> token(0, c.vocab_size - 1);
  auto make_prompts = [&](int64_t n, int64_t len) {
    std::vector<std::vector<int32_t>> p(n, std::vector<int32_t>(len));
    for (auto& row : p) {
      for (int32_t& t : row) t = token(rng);
    }
    return p;
  };
  SamplingParams params;
  params.temperature = static_cast<float>(*temperature);
  params.ignore_eos = true;
  params.seed = static_cast<uint64_t>(*seed);
  std::vector<RequestRecord> records;
  if (*warmup > 0) {
    SamplingParams wp = params;
    wp.max_tokens = 16;
    if (absl::Status s = RunAll(&engine, make_prompts(*warmup, std::min<int64_t>(*in_len, 64)),
                                wp, &records);
        !s.ok()) {
      return cli::Fail(s);
    }
  }
  params.max_tokens = static_cast<int32_t>(*out_len);
  const auto prompts = make_prompts(*num, *in_len);
  const EngineStats before = engine.stats();
  const Clock::time_point t0 = Clock::now();
  if (absl::Status s = RunAll(&engine, prompts, params, &records); !s.ok()) return cli::Fail(s);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const EngineStats after = engine.stats();
  engine.Stop();

  int64_t out_tokens = 0, failed = 0;
  double ttft_sum = 0;
  for (const RequestRecord& r : records) {
    out_tokens += r.tokens;
    if (r.finish_reason != "length" || r.tokens != *out_len) {
      ++failed;
      if (failed == 1) {
        SPDLOG_ERROR("request ended with '{}' after {} tokens: {}", r.finish_reason, r.tokens,
                     r.error.ToString());
      }
    } else {
      ttft_sum += std::chrono::duration<double>(r.first_token - t0).count();
    }
  }
  const int64_t in_tokens = *num * *in_len;
  std::printf("| model | device | requests | in / out | elapsed s | req/s | output tok/s | "
              "total tok/s | mean TTFT s | steps | preemptions | failed | forward s | engine s |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::printf("| %s | %s | %lld | %lld / %lld | %.2f | %.2f | %.0f | %.0f | %.2f | %lld | %lld | "
              "%lld | %.2f | %.2f |\n",
              c.name.c_str(), eo->device.c_str(), static_cast<long long>(*num),
              static_cast<long long>(*in_len), static_cast<long long>(*out_len), secs,
              *num / secs, out_tokens / secs, (in_tokens + out_tokens) / secs,
              failed < *num ? ttft_sum / static_cast<double>(*num - failed) : 0.0,
              static_cast<long long>(after.steps - before.steps),
              static_cast<long long>(after.preemptions - before.preemptions),
              static_cast<long long>(failed), after.forward_seconds - before.forward_seconds,
              (after.step_seconds - before.step_seconds) -
                  (after.forward_seconds - before.forward_seconds));
  std::fflush(stdout);
  return failed == 0 ? 0 : 1;
}

}  // namespace kvasir
