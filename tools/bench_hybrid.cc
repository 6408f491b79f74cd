// `kvasir bench-hybrid`: decode TPOT of a CUDA decoder whose KV is (a) all in its GPU pool,
// (b) all in host memory (an in-process host attention worker: LocalAttention over a bf16 host
// KvCache, multi-threaded), (c) split by the hybrid executor (each sequence's first tokens on
// the GPU while the pool has room, the rest on the host), on dummy weights in real shapes, for
// contexts x batch sizes. The KV of the context is recorded, not computed (zeros; the timing of
// attention does not depend on the values), so long contexts cost no prefill. Prints the
// floor of (b) and (c) (host KV bytes per step at the host copy bandwidth measured in this run,
// plus the GPU's step at a short context, or the GPU part if slower), the longest context each
// configuration holds, and a correctness check: the hybrid's logits with half of a 1,024-token
// prompt forced onto the host against the GPU-only runner's (relative L2).
#ifdef KVASIR_WITH_CUDA_RUNNER
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "attention/local_attention.h"
#include "common/logging.h"
#include "model/cuda/cuda_model_runner.h"
#include "tools/cli_args.h"
#include "tools/bench_kv.h"
#include "tools/engine_setup.h"

namespace kvasir {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Host copy bandwidth (read + write bytes per second) over `threads` threads, best of 3.
double HostCopyGBs(int threads) {
  const size_t n = size_t{1} << 29;  // 2 GiB of floats each way
  std::vector<float> src(n, 1.0f), dst(n, 0.0f);
  double best = 1e30;
  for (int rep = 0; rep < 4; ++rep) {
    const auto t0 = Clock::now();
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        const size_t lo = n * t / threads, hi = n * (t + 1) / threads;
        std::memcpy(dst.data() + lo, src.data() + lo, (hi - lo) * sizeof(float));
      });
    }
    for (auto& t : ts) t.join();
    if (rep > 0) best = std::min(best, Seconds(t0));
  }
  return 2.0 * n * sizeof(float) / best / 1e9;
}

enum class Kind { kGpu, kHost, kHybrid };
const char* KindName(Kind k) {
  return k == Kind::kGpu ? "(a) GPU KV" : k == Kind::kHost ? "(b) host KV" : "(c) hybrid";
}

struct Row {
  Kind kind;
  int batch = 0;
  int64_t context = 0;
  int64_t gpu_tokens = 0, host_tokens = 0;  // per step, over the batch
  double tpot_ms = -1.0;                    // < 0: does not fit
};

// Decode steps of B sequences whose first `context` tokens are recorded (not computed), one
// token each per step with greedy sampling on the device; returns the mean step time.
absl::StatusOr<double> TimeDecode(CudaModelRunner& r, KvCache* host, int B, int64_t context,
                                  int steps, int64_t* gpu_tokens, int64_t* host_tokens) {
  std::vector<SequenceInput> batch(B);
  *gpu_tokens = *host_tokens = 0;
  for (int b = 0; b < B; ++b) {
    const int64_t id = 1 + b;
    RETURN_IF_ERROR(r.kv()->Grow(id, static_cast<int32_t>(context)));
    int32_t near = static_cast<int32_t>(context);
    if (HybridKv* h = r.mutable_hybrid()) {
      near = HybridKv::NearPart(h->NearEnd(id), 0, static_cast<int32_t>(context));
      h->Advance(id, static_cast<int32_t>(context));
    } else if (host != nullptr) {
      near = 0;
    }
    if (near > 0) r.cache().Advance(id, near);
    if (near < context) host->Advance(id, static_cast<int32_t>(context - near));
    *gpu_tokens += near;
    *host_tokens += context - near;
    batch[b].seq_id = id;
    batch[b].tokens = {1 + b};
    batch[b].start_pos = static_cast<int32_t>(context);
    batch[b].sampling = RunnerSampling{};
  }
  double total = 0.0;
  for (int i = 0; i < steps + 2; ++i) {
    for (SequenceInput& in : batch) RETURN_IF_ERROR(r.kv()->Grow(in.seq_id, 1));
    const auto t0 = Clock::now();
    ASSIGN_OR_RETURN(ForwardResult out, r.Forward(batch));
    if (i >= 2) total += Seconds(t0);
    for (int b = 0; b < B; ++b) {
      batch[b].tokens = {std::max(out.sampled[b], 0)};
      ++batch[b].start_pos;
    }
  }
  for (int b = 0; b < B; ++b) r.kv()->Release(1 + b);
  return total * 1e3 / steps;
}

// The check prompt's last-row logits, prefilled in chunks of 256.
absl::StatusOr<std::vector<float>> PrefillLogits(CudaModelRunner& r,
                                                 const std::vector<int32_t>& prompt) {
  const int64_t id = 999;
  RETURN_IF_ERROR(r.kv()->Grow(id, 0));
  std::vector<float> last;
  for (size_t p = 0; p < prompt.size(); p += 256) {
    const size_t n = std::min<size_t>(256, prompt.size() - p);
    RETURN_IF_ERROR(r.kv()->Grow(id, static_cast<int32_t>(n)));
    SequenceInput in;
    in.seq_id = id;
    in.tokens.assign(prompt.begin() + p, prompt.begin() + p + n);
    in.start_pos = static_cast<int32_t>(p);
    in.want_logits = p + n == prompt.size();
    ASSIGN_OR_RETURN(ForwardResult out, r.Forward({in}));
    if (in.want_logits) {
      const float* row = out.row(out.first_row[0]);
      last.assign(row, row + out.vocab_size);
    }
  }
  r.kv()->Release(id);
  return last;
}

}  // namespace

int BenchHybrid(int argc, char** argv) {
  std::vector<cli::FlagSpec> specs = {
      {"model", true, "built-in config with dummy weights (default llama-3-8b)"},
      {"contexts", true, "comma-separated context lengths (default 8192,32768,131072)"},
      {"batch", true, "comma-separated batch sizes (default 1,16)"},
      {"steps", true, "decode steps timed per row (default 8)"},
      {"gpu-kv-gib", true, "GPU KV pool of (a) and (c), GiB (default: 0.9 of the device)"},
      {"host-kv-gib", true, "host KV pool of (b) and (c), GiB (default 48)"},
      {"threads", true, "host attention threads (default: all cores)"},
      {"split", true, "host attention: tokens per parallel segment (default 2048)"},
      {"log-level", true, "log level"},
      {"help", false, "show this help"},
  };
  auto a = cli::Args::Parse(argc, argv, 2, specs);
  if (!a.ok()) return cli::Fail(a.status());
  if (a->Has("help")) {
    std::fputs(cli::Usage("bench-hybrid", specs).c_str(), stdout);
    return 0;
  }
  InitLogging(a->Str("log-level", "warn"));
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  auto steps = a->Int("steps", 8);
  auto threads = a->Int("threads", hw);
  auto split = a->Int("split", 2048);
  auto gpu_gib = a->Float("gpu-kv-gib", 0.0);
  auto host_gib = a->Float("host-kv-gib", 48.0);
  if (!steps.ok() || !threads.ok() || !split.ok() || !gpu_gib.ok() || !host_gib.ok() ||
      *steps < 1 || *threads < 1 || *split < 0 || *gpu_gib < 0 || *host_gib <= 0) {
    return cli::Fail(absl::InvalidArgumentError("bad --steps/--threads/--split/--*-kv-gib"));
  }
  std::vector<int64_t> contexts;
  std::vector<int> batches;
  for (const std::string& s :
       std::vector<std::string>(absl::StrSplit(a->Str("contexts", "8192,32768,131072"), ','))) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(s, &v) || v < 16) {
      return cli::Fail(absl::InvalidArgumentError("bad --contexts entry '" + s + "'"));
    }
    contexts.push_back(v);
  }
  for (const std::string& s :
       std::vector<std::string>(absl::StrSplit(a->Str("batch", "1,16"), ','))) {
    int v = 0;
    if (!absl::SimpleAtoi(s, &v) || v < 1) {
      return cli::Fail(absl::InvalidArgumentError("bad --batch entry '" + s + "'"));
    }
    batches.push_back(v);
  }
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  const int64_t max_ctx = *std::max_element(contexts.begin(), contexts.end());

  EngineOptions o;
  o.dummy = true;
  o.dummy_config = a->Str("model", "llama-3-8b");
  o.threads = static_cast<int>(*threads);
  o.need_tokenizer = false;
  o.local_kv = false;
  const auto t_load = Clock::now();
  auto m = CreateLocalModel(o);
  if (!m.ok()) return cli::Fail(m.status());
  ModelWeights* w = (*m)->weights.get();
  ModelConfig& c = w->config;
  // Dummy weights: any context the pools hold (RoPE needs no trained range).
  c.max_position_embeddings = static_cast<int32_t>(
      std::max<int64_t>(c.max_position_embeddings, max_ctx + *steps + 64));
  const int64_t tables = int64_t{c.num_layers} * c.num_kv_heads;
  const int64_t block_bytes = int64_t{2} * 16 * c.head_dim * 2;  // bf16 K + V, 16 tokens
  const double gbs = HostCopyGBs(static_cast<int>(*threads));
  std::printf("model %s (dummy weights, loaded in %.0f s), %d host threads, host copy %.1f GB/s "
              "(read + write)\n",
              c.name.c_str(), Seconds(t_load), static_cast<int>(*threads), gbs);

  const int32_t host_blocks = static_cast<int32_t>(
      std::min<double>(*host_gib * double(1 << 30) / block_bytes, INT32_MAX));
  CpuBackend backend(static_cast<int>(*threads));
  const AttentionShape shape{c.num_heads, c.num_kv_heads, c.head_dim, c.num_layers};
  CudaModelRunnerOptions co;
  co.max_seqs = std::max(max_batch + 1, 2);
  if (*gpu_gib > 0) {
    co.num_blocks =
        static_cast<int32_t>(std::min<double>(*gpu_gib * double(1 << 30) / block_bytes, INT32_MAX));
  }

  // Check prompt: 1,024 random tokens.
  std::mt19937 rng(11);
  std::vector<int32_t> check_prompt(1024);
  for (int32_t& t : check_prompt) t = static_cast<int32_t>(rng() % c.vocab_size);
  std::vector<float> check_ref;
  std::string check_line = "check: not run";

  std::vector<Row> rows;
  int64_t gpu_pool_tokens = 0, host_pool_tokens = 0;
  std::vector<double> short_ms(batches.size(), 0.0);
  for (Kind kind : {Kind::kGpu, Kind::kHost, Kind::kHybrid}) {
    std::unique_ptr<KvCache> host;
    std::unique_ptr<LocalAttention> far;
    absl::StatusOr<std::unique_ptr<CudaModelRunner>> r;
    if (kind != Kind::kGpu) {
      host = std::make_unique<KvCache>(KvCacheConfigFor(c, 16, host_blocks, true, KvDType::kBF16));
      far = std::make_unique<LocalAttention>(host.get(), &backend, shape);
      far->set_split(static_cast<int32_t>(*split));
      host_pool_tokens = int64_t{host_blocks} / tables * 16;
    }
    const auto t0 = Clock::now();
    if (kind == Kind::kGpu) {
      r = CudaModelRunner::Create(w, co);
    } else if (kind == Kind::kHost) {
      r = CudaModelRunner::Create(w, co, far.get());
    } else {
      HybridPlacementOptions hp;
      hp.reserve_blocks = -1;
      r = CudaModelRunner::CreateHybrid(w, co, far.get(), hp);
    }
    if (!r.ok()) return cli::Fail(r.status());
    CudaModelRunner& runner = **r;
    if (kind != Kind::kHost) {
      if (absl::Status s = runner.ZeroKvPool(); !s.ok()) return cli::Fail(s);
      gpu_pool_tokens = int64_t{runner.cache().pool().num_blocks()} / tables * 16;
    }
    std::fprintf(stderr, "%s: runner ready in %.0f s\n", KindName(kind), Seconds(t0));
    // The check: (a) computes the reference, (c) compares with half the prompt on the host.
    if (kind == Kind::kGpu) {
      auto ref = PrefillLogits(runner, check_prompt);
      if (!ref.ok()) return cli::Fail(ref.status());
      check_ref = std::move(*ref);
    } else if (kind == Kind::kHybrid) {
      HybridPlacementOptions forced = runner.hybrid()->placement().options();
      const HybridPlacementOptions natural = forced;
      forced.max_near_tokens = 512;
      runner.mutable_hybrid()->set_placement(forced);
      auto got = PrefillLogits(runner, check_prompt);
      runner.mutable_hybrid()->set_placement(natural);
      if (!got.ok()) return cli::Fail(got.status());
      double num = 0, den = 0;
      for (size_t v = 0; v < check_ref.size(); ++v) {
        const double d = double((*got)[v]) - check_ref[v];
        num += d * d;
        den += double(check_ref[v]) * check_ref[v];
      }
      const double rel = std::sqrt(num / std::max(den, 1e-30));
      const bool ok = std::isfinite(rel) && rel <= 2e-2;
      check_line = absl::StrFormat(
          "check: hybrid (512 of 1024 prompt tokens on the host) vs GPU-only last-row logits: "
          "relative L2 %.3g (bound 2e-2): %s",
          rel, ok ? "ok" : "FAILED");
      if (!ok) {
        std::printf("%s\n", check_line.c_str());
        return 1;
      }
    }
    for (size_t bi = 0; bi < batches.size(); ++bi) {
      const int B = batches[bi];
      if (kind == Kind::kGpu) {
        int64_t g = 0, h = 0;
        auto ms = TimeDecode(runner, nullptr, B, 1024, static_cast<int>(*steps), &g, &h);
        if (!ms.ok()) return cli::Fail(ms.status());
        short_ms[bi] = *ms;
      }
      for (int64_t ctx : contexts) {
        Row row{kind, B, ctx};
        const int64_t need = int64_t{B} * (ctx + *steps + 2 + 16);
        const int64_t cap = kind == Kind::kGpu    ? gpu_pool_tokens
                            : kind == Kind::kHost ? host_pool_tokens
                                                  : gpu_pool_tokens + host_pool_tokens;
        if (need <= cap) {
          auto ms = TimeDecode(runner, host.get(), B, ctx, static_cast<int>(*steps),
                               &row.gpu_tokens, &row.host_tokens);
          if (!ms.ok()) return cli::Fail(ms.status());
          row.tpot_ms = *ms;
        }
        rows.push_back(row);
      }
    }
  }

  // Table.
  const double kv_token_bytes = double(c.num_layers) * c.kv_dim() * 2 * 2;  // bf16 K + V
  std::printf("\n| KV placement | batch | context | GPU / host KV tokens | TPOT ms | floor ms | "
              "TPOT / floor |\n|---|---|---|---|---|---|---|\n");
  for (const Row& row : rows) {
    if (row.tpot_ms < 0) {
      std::printf("| %s | %d | %lld | does not fit | - | - | - |\n", KindName(row.kind), row.batch,
                  static_cast<long long>(row.context));
      continue;
    }
    size_t bi = std::find(batches.begin(), batches.end(), row.batch) - batches.begin();
    const double host_ms = row.host_tokens * kv_token_bytes / (gbs * 1e9) * 1e3;
    // (b), (c): the GPU step at a short context plus the host part's KV bytes at the host copy
    // bandwidth ((c)'s GPU part is read while the host reads its part). (a) has no host part.
    const double floor = row.kind == Kind::kGpu ? 0.0 : short_ms[bi] + host_ms;
    std::printf("| %s | %d | %lld | %lld / %lld | %.2f | %s | %s |\n", KindName(row.kind),
                row.batch, static_cast<long long>(row.context),
                static_cast<long long>(row.gpu_tokens), static_cast<long long>(row.host_tokens),
                row.tpot_ms, floor > 0 ? absl::StrFormat("%.2f", floor).c_str() : "-",
                floor > 0 ? absl::StrFormat("%.2fx", row.tpot_ms / floor).c_str() : "-");
  }
  std::printf("\nshort-context (1,024) GPU step:");
  for (size_t bi = 0; bi < batches.size(); ++bi) {
    std::printf(" batch %d %.2f ms;", batches[bi], short_ms[bi]);
  }
  std::printf("\nlongest context at batch 1: (a) %lld tokens, (b) %lld, (c) %lld (%.2fx (a))\n",
              static_cast<long long>(gpu_pool_tokens), static_cast<long long>(host_pool_tokens),
              static_cast<long long>(gpu_pool_tokens + host_pool_tokens),
              double(gpu_pool_tokens + host_pool_tokens) / std::max<int64_t>(gpu_pool_tokens, 1));
  const double d = c.hidden_size, G = c.group_size();
  std::printf("data plane per far row per layer: %.0f bytes (fp32 q|k|v out, o + lse back) vs "
              "Lamina's (2 + 2/G)*e*d = %.0f bytes at bf16\n",
              (c.q_dim() + 2.0 * c.kv_dim() + c.q_dim() + c.num_heads) * 4.0,
              (2.0 + 2.0 / G) * 2.0 * d);
  std::printf("%s\n", check_line.c_str());
  return 0;
}

}  // namespace kvasir
#endif  // KVASIR_WITH_CUDA_RUNNER
