// `kvasir` command-line entry point: generate, tokenize, convert, bench-engine, bench serve.
// Output meant for the user goes to stdout; logs go to stderr.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <numeric>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "api/http_server.h"
#include "common/logging.h"
#include "transport/completion_grpc.h"
#include "model/default_model.h"
#include "decoder/generator.h"
#include "model/weights.h"
#ifdef KVASIR_WITH_BENCH_SERVE
#include "tools/bench/bench_serve.h"
#endif
#include "tools/bench_offline.h"
#include "tools/bench_kv.h"
#include "tools/cli_args.h"
#include "tools/engine_setup.h"
#include "tools/cluster_launcher.h"
#include "tools/roles.h"
#ifdef KVASIR_WITH_CUDA_RUNNER
#include "model/cuda/cuda_model_runner.h"
#endif

namespace kvasir {
namespace {

using cli::Args;
using cli::FlagSpec;

using cli::Fail;
using cli::With;

// ---------------------------------------------------------------------------------------------
int Generate(int argc, char** argv) {
  auto specs = With({
      {"prompt", true, "prompt text (UTF-8)"},
      {"max-tokens", true, "tokens to generate (default 256)"},
      {"temperature", true, "sampling temperature; 0 = greedy (default 1.0)"},
      {"top-p", true, "nucleus sampling mass (default 1.0)"},
      {"top-k", true, "sample among the k most likely tokens (default off)"},
      {"min-p", true, "drop tokens below min_p * p_max (default 0)"},
      {"repetition-penalty", true, "HF repetition penalty (default 1.0)"},
      {"seed", true, "random seed (same seed, same tokens)"},
      {"stop", true, "stop string (repeatable)"},
      {"ignore-eos", false, "keep generating past end-of-sequence tokens"},
      {"no-bos", false, "do not prepend the BOS token"},
      {"kv-policy", true, "KV eviction after the prompt: full (default), taskkv, streaming, snapkv, adakv"},
      {"kv-budget", true, "KV kept per head: a fraction of the prompt in (0, 1] or a token count"},
  });
  auto a = Args::Parse(argc, argv, 2, specs);
  if (!a.ok()) return Fail(a.status());
  if (a->Has("help")) {
    std::fputs(cli::Usage("generate", specs).c_str(), stdout);
    return 0;
  }
  InitLogging(a->Str("log-level"));
  auto eo = EngineOptionsFromArgs(*a);
  if (!eo.ok()) return Fail(eo.status());
  if (!a->Has("prompt")) return Fail(absl::InvalidArgumentError("--prompt is required"));
  SamplingParams p;
  auto max_tokens = a->Int("max-tokens", 256);
  auto temperature = a->Float("temperature", 1.0);
  auto top_p = a->Float("top-p", 1.0);
  auto top_k = a->Int("top-k", 0);
  auto min_p = a->Float("min-p", 0.0);
  auto rep = a->Float("repetition-penalty", 1.0);
  auto seed = a->OptionalUint("seed");
  for (const absl::Status& s : {max_tokens.status(), temperature.status(), top_p.status(),
                                top_k.status(), min_p.status(), rep.status(), seed.status()}) {
    if (!s.ok()) return Fail(s);
  }
  if (*max_tokens < 1 || *max_tokens > (1 << 24)) {
    return Fail(absl::InvalidArgumentError("--max-tokens must be in [1, 16777216]"));
  }
  if (*top_k < -1 || *top_k > INT32_MAX) return Fail(absl::InvalidArgumentError("--top-k must be >= 0"));
  p.max_tokens = static_cast<int32_t>(*max_tokens);
  p.temperature = static_cast<float>(*temperature);
  p.top_p = static_cast<float>(*top_p);
  p.top_k = static_cast<int32_t>(*top_k);
  p.min_p = static_cast<float>(*min_p);
  p.repetition_penalty = static_cast<float>(*rep);
  p.seed = *seed;
  p.stop = a->All("stop");
  p.ignore_eos = a->Has("ignore-eos");

  eo->kv_tokens = 0;
  auto engine = CreateLocalModel(*eo);
  if (!engine.ok()) return Fail(engine.status());
  LocalModel& e = **engine;
  if (!e.tokenizer) return Fail(absl::FailedPreconditionError("the model has no tokenizer"));
  auto ids = e.tokenizer->Encode(a->Str("prompt"), !a->Has("no-bos"));
  if (!ids.ok()) return Fail(ids.status());
  if (ids->empty()) return Fail(absl::InvalidArgumentError("the prompt encodes to no tokens"));
  Generator gen(e.runner.get(), e.tokenizer.get());
  auto kv_policy = KvPolicyFromArgs(*a);
  if (!kv_policy.ok()) return Fail(kv_policy.status());
  GenerationRequest req{*ids, p, *kv_policy};
  auto t0 = std::chrono::steady_clock::now();
  auto res = gen.Generate({req}, [](size_t, int32_t, std::string_view text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  });
  if (!res.ok()) return Fail(res.status());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fputc('\n', stdout);
  SPDLOG_INFO("{} prompt tokens, {} generated ({}), {:.1f} tok/s", (*res)[0].prompt_tokens,
              (*res)[0].tokens.size(), (*res)[0].finish_reason, (*res)[0].tokens.size() / secs);
  return 0;
}

// ---------------------------------------------------------------------------------------------
int Tokenize(int argc, char** argv) {
  std::vector<FlagSpec> specs = {
      {"model", true, "model directory holding tokenizer.json or tokenizer.bin"},
      {"tokenizer", true, "tokenizer file (tokenizer.json or llama2.c tokenizer.bin)"},
      {"bos", false, "prepend the BOS token"},
      {"log-level", true, "log level"},
      {"help", false, "show this help"},
  };
  auto a = Args::Parse(argc, argv, 2, specs);
  if (!a.ok()) return Fail(a.status());
  if (a->Has("help")) {
    std::fputs(cli::Usage("tokenize", specs).c_str(), stdout);
    return 0;
  }
  InitLogging(a->Str("log-level"));
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok;
  if (a->Has("tokenizer")) {
    tok = LoadTokenizerFile(a->Str("tokenizer"));
  } else if (a->Has("model")) {
    tok = LoadTokenizer(a->Str("model"));
  } else {
    auto dir = FindOrFetchDefaultModel();
    if (!dir.ok()) return Fail(dir.status());
    tok = LoadTokenizer(*dir);
  }
  if (!tok.ok()) return Fail(tok.status());
  const bool bos = a->Has("bos");
  std::string line;
  int64_t lineno = 0;
  while (std::getline(std::cin, line)) {
    ++lineno;
    auto ids = (*tok)->Encode(line, bos);
    if (!ids.ok()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("line ", lineno, ": ", std::string(ids.status().message()))));
    }
    std::string out;
    for (size_t i = 0; i < ids->size(); ++i) absl::StrAppend(&out, i ? " " : "", (*ids)[i]);
    out.push_back('\n');
    std::fwrite(out.data(), 1, out.size(), stdout);
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
int Convert(int argc, char** argv) {
  std::vector<FlagSpec> specs = {
      {"from", true, "source model directory (llama2.c or HF layout)"},
      {"to", true, "destination directory (HF layout: model.safetensors, config.json, tokenizer)"},
      {"dtype", true, "stored dtype: f32 (default), f16, bf16"},
      {"log-level", true, "log level"},
      {"help", false, "show this help"},
  };
  auto a = Args::Parse(argc, argv, 2, specs);
  if (!a.ok()) return Fail(a.status());
  if (a->Has("help")) {
    std::fputs(cli::Usage("convert", specs).c_str(), stdout);
    return 0;
  }
  InitLogging(a->Str("log-level"));
  if (!a->Has("from") || !a->Has("to")) {
    return Fail(absl::InvalidArgumentError("--from and --to are required"));
  }
  auto dtype = ParseDType(a->Str("dtype", "f32"));
  if (!dtype.ok()) return Fail(dtype.status());
  LoadOptions lo;
  lo.num_threads = 2;
  auto w = LoadModelWeights(a->Str("from"), lo);
  if (!w.ok()) return Fail(w.status());
  auto tok = LoadTokenizer(a->Str("from"));
  if (!tok.ok()) return Fail(tok.status());
  namespace fs = std::filesystem;
  const std::string to = a->Str("to");
  if (absl::Status s = WriteHfModel(**w, to, *dtype); !s.ok()) return Fail(s);
  if ((*tok)->kind() == "llama2.c") {
    auto tj = ExportHfTokenizerJson(**tok);
    if (!tj.ok()) return Fail(tj.status());
    auto tc = ExportHfTokenizerConfigJson(**tok);
    if (!tc.ok()) return Fail(tc.status());
    absl::Status s = WriteStringToFile((fs::path(to) / "tokenizer.json").string(), *tj);
    if (s.ok()) s = WriteStringToFile((fs::path(to) / "tokenizer_config.json").string(), *tc);
    if (!s.ok()) return Fail(s);
  } else {
    std::error_code ec;
    for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                          "generation_config.json"}) {
      fs::path src = fs::path(a->Str("from")) / f;
      if (fs::exists(src)) {
        fs::copy_file(src, fs::path(to) / f, fs::copy_options::overwrite_existing, ec);
        if (ec) return Fail(absl::InternalError("cannot copy " + src.string() + ": " + ec.message()));
      }
    }
  }
  std::fprintf(stderr, "kvasir: wrote %s (%s)\n", to.c_str(), std::string(DTypeName(*dtype)).c_str());
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Engine benchmark: prefill and decode throughput on dummy weights, printed as a table.
// Times prefill and decode steps of `runner` (ModelRunner or CudaModelRunner: same Forward
// contract) over `cache` for one batch size; prints one table row.
constexpr int kWarmupSteps = 3;

// `check`, when set, gets the prefill batch and its result (host logits: no device sampling
// in that step) before the decode steps run.
using PrefillCheck =
    std::function<absl::Status(const std::vector<SequenceInput>&, const ForwardResult&)>;

template <typename Runner>
absl::Status BenchBatch(Runner& runner, KvCache& cache, const std::string& name, int threads,
                        int B, int prompt_len, int steps, double roofline_ms,
                        const PrefillCheck& check = nullptr) {
  using Clock = std::chrono::steady_clock;
  const ModelConfig& c = runner.config();
  std::vector<SequenceInput> batch(B);
  for (int b = 0; b < B; ++b) {
    RETURN_IF_ERROR(cache.Create(1000 + b));
    batch[b].seq_id = 1000 + b;
    // Greedy on the device where the runner samples there (only token ids come back).
    if (runner.samples_on_device() && !check) batch[b].sampling = RunnerSampling{};
    batch[b].tokens.resize(prompt_len);
    for (int i = 0; i < prompt_len; ++i) batch[b].tokens[i] = (7 + 31 * i + 17 * b) % c.vocab_size;
  }
  auto t0 = Clock::now();
  ASSIGN_OR_RETURN(ForwardResult out, runner.Forward(batch));
  const double prefill = std::chrono::duration<double>(Clock::now() - t0).count();
  if (check) {
    RETURN_IF_ERROR(check(batch, out));
    if (runner.samples_on_device()) {
      for (SequenceInput& in : batch) in.sampling = RunnerSampling{};
    }
  }
  std::vector<int32_t> next(B);
  auto argmax = [&](const ForwardResult& r) {
    for (int b = 0; b < B; ++b) {
      if (!r.sampled.empty() && r.sampled[b] >= 0) {
        next[b] = r.sampled[b];
        continue;
      }
      const float* row = r.row(r.first_row[b]);
      next[b] = static_cast<int32_t>(std::max_element(row, row + c.vocab_size) - row);
    }
  };
  argmax(out);
  // kWarmupSteps untimed decode steps first (GEMM plans, CUDA graph captures), then `steps`.
  auto t1 = Clock::now();
  for (int s = 0; s < kWarmupSteps + steps; ++s) {
    if (s == kWarmupSteps) t1 = Clock::now();
    for (int b = 0; b < B; ++b) {
      batch[b].start_pos = prompt_len + s;
      batch[b].tokens = {next[b]};
    }
    ASSIGN_OR_RETURN(ForwardResult o2, runner.Forward(batch));
    argmax(o2);
  }
  const double decode = std::chrono::duration<double>(Clock::now() - t1).count();
  for (int b = 0; b < B; ++b) cache.Free(1000 + b);
  const double step_ms = decode * 1e3 / steps;
  std::printf("| %s | %.1fM | %d | %d | %.0f | %.2f | %.1f | %s |\n", name.c_str(),
              c.NumParameters() / 1e6, threads, B, B * prompt_len / prefill, step_ms,
              B * steps / decode,
              roofline_ms > 0 ? absl::StrFormat("%.2f (%.2fx)", roofline_ms, step_ms / roofline_ms).c_str()
                              : "-");
  std::fflush(stdout);
  return absl::OkStatus();
}

// --check of bench-engine: the last prefill logits row of the first `n` sequences against the
// CPU fp32 ModelRunner on the same (host) weights, computed once per model and reused.
[[maybe_unused]] absl::Status CheckAgainstCpu(LocalModel& e, const std::vector<SequenceInput>& batch,
                             const ForwardResult& got, int n, const std::string& model, int B,
                             std::vector<std::vector<float>>* cpu_rows,
                             std::vector<std::string>* lines) {
  const ModelConfig& c = e.weights->config;
  if (static_cast<int>(cpu_rows->size()) < n) {
    cpu_rows->clear();
    KvCache cache(KvCacheConfigFor(
        c, 16,
        static_cast<int32_t>(int64_t{n} * c.num_layers * c.num_kv_heads *
                             ((batch[0].tokens.size() + 15) / 16 + 1))));
    ModelRunner cpu(e.weights.get(), e.backend.get(), &cache);
    std::vector<SequenceInput> ref(batch.begin(), batch.begin() + n);
    for (SequenceInput& in : ref) {
      in.seq_id += 100000;
      in.sampling.reset();
      RETURN_IF_ERROR(cache.Create(in.seq_id));
    }
    ASSIGN_OR_RETURN(ForwardResult want, cpu.Forward(ref));
    for (int b = 0; b < n; ++b) {
      const float* row = want.row(want.first_row[b]);
      cpu_rows->emplace_back(row, row + c.vocab_size);
    }
  }
  int agree = 0;
  double max_abs = 0.0, worst_rel = 0.0;
  bool finite = true;
  for (int b = 0; b < n; ++b) {
    const float* g = got.row(got.first_row[b]);
    const std::vector<float>& w = (*cpu_rows)[b];
    double num = 0.0, den = 0.0;
    for (int32_t v = 0; v < c.vocab_size; ++v) {
      finite = finite && std::isfinite(g[v]);
      const double d = static_cast<double>(g[v]) - w[v];
      num += d * d;
      den += static_cast<double>(w[v]) * w[v];
      max_abs = std::max(max_abs, std::fabs(d));
    }
    worst_rel = std::max(worst_rel, std::sqrt(num / std::max(den, 1e-30)));
    agree += std::max_element(g, g + c.vocab_size) - g ==
             std::max_element(w.begin(), w.end()) - w.begin();
  }
  const bool ok = finite && worst_rel <= 5e-2;
  lines->push_back(absl::StrFormat(
      "check %s batch %d: cuda bf16 vs cpu fp32 prefill logits of %d sequence(s): top-1 %d/%d, "
      "max abs diff %.4g, relative L2 %.3g (bound 5e-2): %s",
      model, B, n, agree, n, max_abs, worst_rel, ok ? "ok" : "FAILED"));
  if (!ok) {
    return absl::InternalError(absl::StrCat("--check failed: ", lines->back()));
  }
  return absl::OkStatus();
}

int BenchEngine(int argc, char** argv) {
  std::vector<FlagSpec> specs = {
      {"models", true, "comma-separated built-in configs (default stories15M,tinyllama-1.1b)"},
      {"batch", true, "comma-separated batch sizes (default 1,8,32)"},
      {"prompt-len", true, "prompt tokens per sequence (default 32)"},
      {"decode-steps", true, "decode steps timed per batch size (default 32)"},
      {"threads", true, "CPU threads (default 2)"},
      {"device", true, "cpu (default, fp32) or cuda (bf16 weights and KV, CudaModelRunner)"},
      {"copy-gbps", true,
       "device copy bandwidth for the roofline column, GB/s (default 4200, the H200's; cuda only)"},
      {"check", false,
       "cuda: compare the prefill logits of the first two sequences with the CPU fp32 runner on "
       "the same weights (fails above 5e-2 relative L2)"},
      {"log-level", true, "log level"},
      {"help", false, "show this help"},
  };
  auto a = Args::Parse(argc, argv, 2, specs);
  if (!a.ok()) return Fail(a.status());
  if (a->Has("help")) {
    std::fputs(cli::Usage("bench-engine", specs).c_str(), stdout);
    return 0;
  }
  InitLogging(a->Str("log-level"));
  auto prompt_len = a->Int("prompt-len", 32);
  auto steps = a->Int("decode-steps", 32);
  auto threads = a->Int("threads", 2);
  auto copy_gbps = a->Float("copy-gbps", 4200);
  if (!prompt_len.ok() || !steps.ok() || !threads.ok() || *prompt_len < 1 || *steps < 1 ||
      *threads < 1) {
    return Fail(absl::InvalidArgumentError("--prompt-len, --decode-steps, --threads must be >= 1"));
  }
  if (!copy_gbps.ok() || *copy_gbps <= 0) {
    return Fail(absl::InvalidArgumentError("--copy-gbps must be > 0"));
  }
  const std::string device = a->Str("device", "cpu");
  if (device != "cpu" && device != "cuda") {
    return Fail(absl::InvalidArgumentError("--device must be cpu or cuda"));
  }
#ifndef KVASIR_WITH_CUDA_RUNNER
  if (device == "cuda") {
    return Fail(absl::UnimplementedError("this build has no CUDA backend (built without nvcc)"));
  }
#endif
  std::vector<std::string> models = absl::StrSplit(a->Str("models", "stories15M,tinyllama-1.1b"), ',');
  std::vector<int> batches;
  for (const std::string& b : std::vector<std::string>(absl::StrSplit(a->Str("batch", "1,8,32"), ','))) {
    int v = std::atoi(b.c_str());
    if (v < 1) return Fail(absl::InvalidArgumentError("bad --batch entry '" + b + "'"));
    batches.push_back(v);
  }
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  const bool do_check = a->Has("check");
  if (do_check && device != "cuda") {
    return Fail(absl::InvalidArgumentError("--check compares CUDA with the CPU: needs --device cuda"));
  }
  std::vector<std::string> check_lines;
  std::printf("| model | params | threads | batch | prefill tok/s | decode step ms | decode tok/s | roofline ms (step / roofline) |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (const std::string& m : models) {
    EngineOptions o;
    o.dummy = true;
    o.dummy_config = m;
    o.threads = static_cast<int>(*threads);
    o.need_tokenizer = false;
    o.local_kv = device == "cpu";
    // Every sequence rounds each of its (layer, kv_head) tables up to whole blocks.
    auto shape = BuiltinConfig(m);
    if (!shape.ok()) return Fail(shape.status());
    o.kv_blocks = int64_t{max_batch} * shape->num_layers * shape->num_kv_heads *
                  ((*prompt_len + *steps + kWarmupSteps + 1 + 15) / 16);
    auto eng = CreateLocalModel(o);
    if (!eng.ok()) return Fail(eng.status());
    LocalModel& e = **eng;
    [[maybe_unused]] const ModelConfig& c = e.weights->config;
    std::vector<std::vector<float>> cpu_rows;  // --check: CPU logits of sequences 0 and 1
#ifdef KVASIR_WITH_CUDA_RUNNER
    std::unique_ptr<CudaModelRunner> cuda;  // this model's, freed before the next model loads
    if (device == "cuda") {
      CudaModelRunnerOptions co;
      co.num_blocks = static_cast<int32_t>(o.kv_blocks);
      auto r = CudaModelRunner::Create(e.weights.get(), co);
      if (!r.ok()) return Fail(r.status());
      cuda = std::move(*r);
    }
#endif
    for (int B : batches) {
      absl::Status st;
      if (device == "cpu") {
        st = BenchBatch(*e.runner, *e.cache, m, e.backend->num_threads(), B,
                        static_cast<int>(*prompt_len), static_cast<int>(*steps), 0);
      } else {
#ifdef KVASIR_WITH_CUDA_RUNNER
        // Roofline of a decode step: every bf16 weight once plus the batch's KV (bf16, mid-run
        // length), at the device's copy bandwidth.
        const double kv_bytes = 2.0 * B * c.num_layers * c.kv_dim() * 2 *
                                (*prompt_len + *steps / 2.0);
        const double roofline_ms = (2.0 * c.NumParameters() + kv_bytes) / (*copy_gbps * 1e9) * 1e3;
        PrefillCheck check;
        if (do_check) {
          check = [&, B](const std::vector<SequenceInput>& batch, const ForwardResult& got) {
            return CheckAgainstCpu(e, batch, got, std::min(B, 2), m, B, &cpu_rows, &check_lines);
          };
        }
        st = BenchBatch(*cuda, cuda->cache(), m + " (cuda bf16)", 0, B,
                        static_cast<int>(*prompt_len), static_cast<int>(*steps), roofline_ms,
                        check);
#endif
      }
      if (!st.ok()) return Fail(st);
    }
  }
  for (const std::string& l : check_lines) std::printf("%s\n", l.c_str());
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Prints the logits of every position of a prompt given as token ids, as JSON (for parity
// checks against other implementations).
int Logits(int argc, char** argv) {
  auto specs = With({{"ids", true, "comma-separated prompt token ids"}});
  auto a = Args::Parse(argc, argv, 2, specs);
  if (!a.ok()) return Fail(a.status());
  if (a->Has("help")) {
    std::fputs(cli::Usage("logits", specs).c_str(), stdout);
    return 0;
  }
  InitLogging(a->Str("log-level"));
  auto eo = EngineOptionsFromArgs(*a);
  if (!eo.ok()) return Fail(eo.status());
  eo->need_tokenizer = false;
  std::vector<int32_t> ids;
  for (const std::string& t : std::vector<std::string>(absl::StrSplit(a->Str("ids"), ','))) {
    int32_t v;
    if (!absl::SimpleAtoi(t, &v)) return Fail(absl::InvalidArgumentError("bad --ids entry '" + t + "'"));
    ids.push_back(v);
  }
  auto engine = CreateLocalModel(*eo);
  if (!engine.ok()) return Fail(engine.status());
  LocalModel& e = **engine;
  if (absl::Status s = e.kv_cache->Create(1); !s.ok()) return Fail(s);
  SequenceInput in;
  in.seq_id = 1;
  in.tokens = ids;
  in.all_logits = true;
  auto out = e.runner->Forward({in});
  if (!out.ok()) return Fail(out.status());
  std::string js = "{\"ids\": [";
  for (size_t i = 0; i < ids.size(); ++i) absl::StrAppend(&js, i ? ", " : "", ids[i]);
  js += "], \"logits\": [";
  for (int32_t r = 0; r < out->num_rows[0]; ++r) {
    js += r ? ", [" : "[";
    const float* row = out->row(r);
    for (int32_t v = 0; v < out->vocab_size; ++v) {
      absl::StrAppend(&js, v ? ", " : "", absl::StrFormat("%.8g", row[v]));
    }
    js += "]";
  }
  js += "]}\n";
  std::fwrite(js.data(), 1, js.size(), stdout);
  return 0;
}

void PrintUsage() {
  std::fputs(
      "usage: kvasir COMMAND [flags]\n"
      "commands:\n"
      "  serve         OpenAI-compatible HTTP server, all roles in one process\n"
      "  cluster       router + decoders + attention workers as processes on this host\n"
      "  router        cluster role: OpenAI HTTP + gRPC front end, KV directory\n"
      "  decoder       cluster role: weights, batching, dense layers, sampling\n"
      "  attention     cluster role: KV pool and partial attention\n"
      "  generate      generate a continuation of --prompt and print it\n"
      "  tokenize      print token ids of each stdin line\n"
      "  convert       write a model in the HF layout (safetensors + config.json + tokenizer)\n"
      "  bench-engine  engine throughput table on dummy weights\n"
      "  bench-offline offline throughput: N requests queued at once through the engine\n"
      "  bench-kv      KV eviction (kv_policy) quality vs memory on a retrieval eval set\n"
      "  bench-hybrid  CUDA decode TPOT with KV on the GPU, on the host, and split (hybrid)\n"
      "  logits        print the logits of every prompt position (--ids) as JSON\n"
      "  bench serve   load-test an OpenAI-compatible server (vLLM-compatible flags)\n"
      "run `kvasir COMMAND --help` for a command's flags\n",
      stderr);
}

}  // namespace
}  // namespace kvasir

int main(int argc, char** argv) {
  if (argc < 2) {
    kvasir::PrintUsage();
    return 2;
  }
  std::string cmd = argv[1];
  if (cmd == "generate") return kvasir::Generate(argc, argv);
  if (cmd == "tokenize") return kvasir::Tokenize(argc, argv);
  if (cmd == "convert") return kvasir::Convert(argc, argv);
  if (cmd == "bench-engine") return kvasir::BenchEngine(argc, argv);
  if (cmd == "bench-offline") return kvasir::BenchOfflineMain(argc, argv);
  if (cmd == "bench-kv") return kvasir::BenchKvMain(argc, argv);
#ifdef KVASIR_WITH_CUDA_RUNNER
  if (cmd == "bench-hybrid") return kvasir::BenchHybrid(argc, argv);
#endif
  if (cmd == "logits") return kvasir::Logits(argc, argv);
  if (cmd == "serve") return kvasir::ServeMain(argc, argv);
  if (cmd == "cluster") return kvasir::RunCluster(argc, argv);
  if (cmd == "router") return kvasir::RouterMain(argc, argv);
  if (cmd == "decoder") return kvasir::DecoderMain(argc, argv);
  if (cmd == "attention") return kvasir::AttentionMain(argc, argv);
  if (cmd == "bench") {
    if (argc < 3 || std::string(argv[2]) != "serve") {
      std::fputs("usage: kvasir bench serve [flags]\n", stderr);
      return 2;
    }
#ifdef KVASIR_WITH_BENCH_SERVE
    return kvasir::RunBenchServe(argc - 2, argv + 2);
#else
    std::fputs("kvasir: this build has no bench serve (tools/bench left out)\n", stderr);
    return 2;
#endif
  }
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    kvasir::PrintUsage();
    return 0;
  }
  std::fprintf(stderr, "kvasir: unknown command '%s'\n", cmd.c_str());
  kvasir::PrintUsage();
  return 2;
}
