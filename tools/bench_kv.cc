#include "tools/bench_kv.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/logging.h"
#include "decoder/generator.h"
#include "nlohmann/json.hpp"
#include "tools/cli_args.h"
#include "tools/engine_setup.h"

namespace kvasir {
namespace {

struct EvalItem {
  std::vector<int32_t> prompt;
  std::string answer;
};

absl::StatusOr<std::vector<EvalItem>> LoadEval(const std::string& path, const Tokenizer& tok,
                                               int64_t bucket, int64_t limit) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::vector<EvalItem> items;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line) && static_cast<int64_t>(items.size()) < limit) {
    ++lineno;
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("prompt") || !j.contains("answer") ||
        !j["prompt"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", lineno, ": not an eval item"));
    }
    const int64_t tokens = j.value("tokens", int64_t{0});
    // Buckets of 1k / 2k / 4k: an item belongs to the bucket its length rounds up to.
    if (bucket > 0 && (tokens > bucket || tokens <= bucket / 2)) continue;
    EvalItem it;
    ASSIGN_OR_RETURN(it.prompt, tok.Encode(j["prompt"].get<std::string>(), true));
    it.answer = j["answer"].is_string() ? j["answer"].get<std::string>()
                                        : j["answer"].dump();
    items.push_back(std::move(it));
  }
  return items;
}

}  // namespace

int BenchKvMain(int argc, char** argv) {
  auto specs = cli::With({
      {"eval", true, "eval set, JSON lines with prompt/answer/tokens (default MODEL/eval.jsonl)"},
      {"context", true, "only prompts of this length bucket: 1024, 2048, 4096 (default 4096)"},
      {"num-prompts", true, "prompts per setting (default 20)"},
      {"policies", true, "comma-separated kv_policy list (default full,streaming,snapkv,adakv,taskkv)"},
      {"budgets", true, "comma-separated kv_budget fractions (default 0.1,0.2,0.4,0.6)"},
      {"max-tokens", true, "tokens generated per prompt (default 6)"},
      {"sink", true, "sink tokens (default 16)"},
      {"recent", true, "taskkv recent window (default 256)"},
      {"window", true, "observation window (default 32)"},
      {"pooling", true, "pooling kernel (default 7)"},
      {"beta", true, "taskkv heterogeneous head fraction (default 0.3)"},
      {"hetero-share", true, "taskkv heterogeneous head budget, times the average (default 1.25)"},
  });
  auto a = cli::Args::Parse(argc, argv, 2, specs);
  if (!a.ok()) return cli::Fail(a.status());
  if (a->Has("help")) {
    std::fputs(cli::Usage("bench-kv", specs).c_str(), stdout);
    return 0;
  }
  InitLogging(a->Str("log-level", "warn"));
  auto eo = EngineOptionsFromArgs(*a);
  if (!eo.ok()) return cli::Fail(eo.status());
  eo->kv_contexts = 8;
  auto model = CreateLocalModel(*eo);
  if (!model.ok()) return cli::Fail(model.status());
  LocalModel& m = **model;
  if (!m.tokenizer) return cli::Fail(absl::InvalidArgumentError("bench-kv needs a tokenizer"));
  auto ctx = a->Int("context", 4096);
  auto num = a->Int("num-prompts", 20);
  auto max_tokens = a->Int("max-tokens", 6);
  if (!ctx.ok() || !num.ok() || !max_tokens.ok()) {
    return cli::Fail(absl::InvalidArgumentError("--context, --num-prompts, --max-tokens: integers"));
  }
  KvPolicy base;
  for (auto [flag, field] : {std::pair{"sink", &base.sink}, std::pair{"recent", &base.recent},
                             std::pair{"window", &base.window}, std::pair{"pooling", &base.pooling}}) {
    auto v = a->Int(flag, *field);
    if (!v.ok()) return cli::Fail(v.status());
    *field = static_cast<int32_t>(*v);
  }
  auto beta = a->Float("beta", base.beta);
  if (!beta.ok()) return cli::Fail(beta.status());
  base.beta = *beta;
  auto share = a->Float("hetero-share", base.hetero_share);
  if (!share.ok()) return cli::Fail(share.status());
  base.hetero_share = *share;
  const std::string eval = a->Str("eval", m.model_dir + "/eval.jsonl");
  auto items = LoadEval(eval, *m.tokenizer, *ctx, *num);
  if (!items.ok()) return cli::Fail(items.status());
  if (items->empty()) return cli::Fail(absl::NotFoundError("no eval prompts of that length"));

  std::vector<KvPolicyKind> kinds;
  for (absl::string_view s :
       absl::StrSplit(a->Str("policies", "full,streaming,snapkv,adakv,taskkv"), ',')) {
    auto k = ParseKvPolicyKind(std::string(s));
    if (!k.ok()) return cli::Fail(k.status());
    kinds.push_back(*k);
  }
  std::vector<double> budgets;
  for (absl::string_view s : absl::StrSplit(a->Str("budgets", "0.1,0.2,0.4,0.6"), ',')) {
    double b;
    if (!absl::SimpleAtod(s, &b) || !(b > 0 && b <= 1)) {
      return cli::Fail(absl::InvalidArgumentError("--budgets: fractions in (0, 1]"));
    }
    budgets.push_back(b);
  }
  double mean_len = 0;
  for (const EvalItem& it : *items) mean_len += it.prompt.size();
  mean_len /= items->size();
  std::printf("bench-kv: %s, %zu prompts of mean %.0f tokens (%s), %d threads, greedy %lld tokens\n",
              m.weights->config.name.c_str(), items->size(), mean_len, eval.c_str(), eo->threads,
              static_cast<long long>(*max_tokens));
  std::printf("| policy | budget | accuracy | KV kept (tokens/head) | of full | blocks evicted/prompt | s/prompt |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  Generator gen(m.runner.get(), m.tokenizer.get(), GeneratorOptions{512, 64});
  for (KvPolicyKind kind : kinds) {
    for (double budget : budgets) {
      if (kind == KvPolicyKind::kFull && budget != budgets.front()) continue;
      KvPolicy p = base;
      p.kind = kind;
      p.budget_fraction = kind == KvPolicyKind::kFull ? 1.0 : budget;
      if (absl::Status v = ValidateKvPolicy(p); !v.ok()) return cli::Fail(v);
      std::vector<GenerationRequest> reqs;
      for (const EvalItem& it : *items) {
        GenerationRequest r;
        r.prompt = it.prompt;
        r.params.temperature = 0;
        r.params.max_tokens = static_cast<int32_t>(*max_tokens);
        r.kv_policy = p;
        reqs.push_back(std::move(r));
      }
      const int64_t evicted0 = m.runner->kv()->Usage().evicted_blocks_total;
      const auto t0 = std::chrono::steady_clock::now();
      auto out = gen.Generate(reqs);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!out.ok()) return cli::Fail(out.status());
      int correct = 0;
      double kept = 0, full = 0;
      for (size_t i = 0; i < out->size(); ++i) {
        std::string text((*out)[i].text);
        absl::StripLeadingAsciiWhitespace(&text);
        correct += text.rfind((*items)[i].answer, 0) == 0;
        kept += (*out)[i].kv_tokens_kept;
        full += (*items)[i].prompt.size() + (*out)[i].tokens.size() - 1;
      }
      const int64_t evicted = m.runner->kv()->Usage().evicted_blocks_total - evicted0;
      std::printf("| %s | %s | %.0f%% (%d/%zu) | %.0f | %.1f%% | %.0f | %.2f |\n",
                  std::string(KvPolicyName(kind)).c_str(),
                  kind == KvPolicyKind::kFull ? "-" : absl::StrFormat("%.0f%%", budget * 100).c_str(),
                  100.0 * correct / out->size(), correct, out->size(), kept / out->size(),
                  100.0 * kept / full, static_cast<double>(evicted) / out->size(),
                  secs / out->size());
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace kvasir
